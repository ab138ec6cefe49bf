#!/usr/bin/env bash
# The simulator can fail: vsrbus_planted is the command built with a planted bug in the TCP
# write path (one write in 1,000 drops the frame at the head of the queue and counts it as
# sent). Within 30 seeds the simulator must report it as a frame skipped on a link, with the
# replay command; the clean build passes the same seeds (it.sim). Backend-independent.
source "$(dirname "$0")/lib.sh"
[ "${VSRBUS_IO:-}" = uring ] && { echo "skip: backend-independent, runs once as .epoll"; exit 77; }
PLANTED=${VSRBUS_PLANTED:?VSRBUS_PLANTED must point at vsrbus_planted}

set +e
"$PLANTED" sim --seeds 30 --from 1 --replicas 3 --clients 10 >"$TMP/out" 2>"$TMP/err"
rc=$?
set -e
[ $rc -eq 1 ] || { cat "$TMP/out"; LOG=$TMP/err fail "the planted bug went unnoticed in 30 seeds (exit $rc)"; }
grep -q 'was skipped: .* lost or reordered' "$TMP/err" ||
  LOG=$TMP/err fail "the failure does not name the skipped frame"
grep -q 'replay: vsrbus sim --seed [0-9]*' "$TMP/err" || LOG=$TMP/err fail "no replay command"
seed=$(sed -n 's/^FAIL seed=\([0-9]*\) .*/\1/p' "$TMP/err" | head -1)
# The clean build passes the seed that caught the bug.
"$BIN" sim --seed "$seed" --replicas 3 --clients 10 >"$TMP/clean" 2>&1 ||
  LOG=$TMP/clean fail "the clean build fails seed $seed too"
echo "ok: planted bug caught by seed $seed ($(grep -c '^FAIL' "$TMP/err") of 30 seeds failed)"
