#!/usr/bin/env bash
# `vsrbus sim`: one seed twice gives the same trace hash (the run is a function of its seed),
# a second seed gives another; a small batch of seeds passes every invariant; every seed that
# ever failed (tests/it/sim_regressions.txt) passes now. Backend-independent (the simulator
# replaces the kernel's io), so it runs once, as .epoll.
source "$(dirname "$0")/lib.sh"
[ "${VSRBUS_IO:-}" = uring ] && { echo "skip: backend-independent, runs once as .epoll"; exit 77; }

hash_of() { sed -n 's/.* hash=\([0-9a-f]*\)$/\1/p' "$1"; }

"$BIN" sim --seed 42 >"$TMP/a" 2>"$TMP/a.err" || LOG=$TMP/a.err fail "seed 42 failed"
"$BIN" sim --seed 42 >"$TMP/b" 2>"$TMP/b.err" || LOG=$TMP/b.err fail "seed 42 failed the 2nd time"
"$BIN" sim --seed 43 >"$TMP/c" 2>"$TMP/c.err" || LOG=$TMP/c.err fail "seed 43 failed"
a=$(hash_of "$TMP/a"); b=$(hash_of "$TMP/b"); c=$(hash_of "$TMP/c")
[ -n "$a" ] || LOG=$TMP/a fail "no trace hash in the summary line"
[ "$a" = "$b" ] || fail "seed 42 twice: trace hashes $a and $b differ"
[ "$a" != "$c" ] || fail "seeds 42 and 43 gave the same trace hash $a"
grep -q '^seed 42: ok replicas=[135] clients=[0-9]* faults: partition=' "$TMP/a" ||
  LOG=$TMP/a fail "summary line format"

# A seed inside a batch runs exactly as alone: nothing leaks from one seed into the next, so a
# replay command printed by a batch reproduces the failure.
"$BIN" sim --seeds 3 --from 41 --list >"$TMP/l" 2>"$TMP/l.err" || LOG=$TMP/l.err fail "seeds 41..43"
inbatch=$(sed -n 's/^seed 42: .* hash=\([0-9a-f]*\)$/\1/p' "$TMP/l")
[ "$inbatch" = "$a" ] || LOG=$TMP/l fail "seed 42 in a batch: hash $inbatch, alone: $a"

# The swarm: a few seeds of every shape.
"$BIN" sim --seeds 12 --from 1 >"$TMP/s" 2>"$TMP/s.err" || { cat "$TMP/s"; LOG=$TMP/s.err fail "a seed of 1..12 failed"; }
grep -q '^sim: 12 seed(s) from 1, 0 failed' "$TMP/s" || LOG=$TMP/s fail "batch summary"

# Regressions: every seed that ever failed, by name.
while read -r seed name; do
  case "$seed" in ''|'#'*) continue ;; esac
  "$BIN" sim --seed "$seed" >"$TMP/r" 2>"$TMP/r.err" ||
    { cat "$TMP/r"; LOG=$TMP/r.err fail "regression $name (seed $seed) fails again"; }
done <"$(dirname "$0")/sim_regressions.txt"

# Seed 127 is the bus bug the simulator found (replica links without keepalive stay half-open
# after a crash behind a partition): with keepalive off it must still fail, or the regression
# above no longer tests the fix.
set +e
"$BIN" sim --seed 127 --keepalive 0 >"$TMP/k" 2>"$TMP/k.err"; rc=$?
set -e
[ $rc -eq 1 ] || { cat "$TMP/k"; fail "seed 127 with keepalive off passes: it no longer exercises the fix"; }
grep -q 'heal: replica links not all up' "$TMP/k.err" || LOG=$TMP/k.err fail "seed 127 without keepalive fails otherwise"

# Usage errors exit 2.
set +e
"$BIN" sim --seed >/dev/null 2>&1; [ $? -eq 2 ] || fail "--seed without a value must exit 2"
"$BIN" sim --replicas 4 >/dev/null 2>&1; [ $? -eq 2 ] || fail "--replicas 4 must exit 2"
set -e
echo "ok: sim: seed 42 hash $a twice, 12 seeds, regressions pass"
