#!/usr/bin/env bash
# make sim: SEEDS seeds of `vsrbus sim` (default 300) from FROM (default: the clock), split over
# JOBS processes (default 2), then one line: seeds, failures, seeds per minute, simulated
# seconds per wall second. Every failing seed is printed with its replay command; exit 1 then.
set -euo pipefail
BIN=${BIN:-build/vsrbus}
SEEDS=${SEEDS:-300}
JOBS=${JOBS:-2}
FROM=${FROM:-$(date +%s)}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
per=$(((SEEDS + JOBS - 1) / JOBS))
t0=$(date +%s.%N)
pids=()
for ((j = 0; j < JOBS; j++)); do
  n=$per
  [ $((j * per + n)) -gt "$SEEDS" ] && n=$((SEEDS - j * per))
  [ "$n" -gt 0 ] || continue
  "$BIN" sim --seeds "$n" --from $((FROM + j * per)) >"$TMP/out.$j" 2>"$TMP/err.$j" &
  pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
t1=$(date +%s.%N)
cat "$TMP"/out.* | grep -v '^sim: ' || true
grep -h -A3 '^FAIL' "$TMP"/err.* || true
awk -v wall="$(echo "$t1 - $t0" | bc)" -v from="$FROM" '
  /^sim: / { seeds += $2; failed += $6; for (i = 1; i <= NF; i++) if ($i == "simulated" && $(i+1) == "in") sim += substr($(i-2), 2) }
  END { printf "make sim: %d seeds from %s, %d failed, %.1f s wall: %.0f seeds/min, %.1f simulated s per wall s\n",
        seeds, from, failed, wall, seeds * 60 / wall, sim / wall }' "$TMP"/out.*
exit $rc
