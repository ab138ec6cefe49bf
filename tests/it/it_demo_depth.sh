#!/usr/bin/env bash
# `vsrbus demo --depth D` for D = 1, 2, 8, 32, 64 (32 clients x D requests in flight, up to 2048
# uncommitted ops against 256-frame peer queues): every live line shows committed requests, the
# summary too, with no client error. Drops must never go unseen: each replica's report line
# carries its drop counters, and a replica that counted a drop also logged it (and one that
# logged a drop counted it). Short runs (2 measured seconds each) keep the wall time small.
source "$(dirname "$0")/lib.sh"

# drop_total LINE: the sum of a report line's drop counters (refused, not connected, at close).
drop_total() {
  local line=$1 f v sum=0
  for f in 'sends refused (queue full)' 'sends refused (not connected)' 'dropped at close'; do
    v=$(printf '%s\n' "$line" | sed -n "s/.* \([0-9][0-9]*\) $f.*/\1/p")
    [ -n "$v" ] || return 1
    sum=$((sum + v))
  done
  echo "$sum"
}

run_depth() {
  local d=$1 out=$TMP/demo.$1.out rc dir lines bad n line total warned
  set +e
  # A long primary timeout: this test is about pipelining, and on a loaded machine a backup
  # that hears nothing for the demo's default 500 ms would start a view change (it.view_change).
  TMPDIR=$TMP timeout 120 "$BIN" demo --depth "$d" --seconds 2 --keep --primary-timeout-ms 5000 \
    >"$out" 2>&1
  rc=$?
  set -e
  grep -q "io_uring forced but unavailable" "$TMP"/vsrbus-demo.*/node*.log 2>/dev/null &&
    { echo "skip: no io_uring"; exit 77; }
  [ $rc -eq 0 ] || LOG=$out fail "depth $d: demo exited $rc"
  lines=$(grep -c '^\[ *[0-9]*s\]' "$out" || true)
  [ "$lines" -eq 2 ] || LOG=$out fail "depth $d: $lines live lines, want 2"
  bad=$(awk '/^\[ *[0-9]+s\]/ { v = 0; for (i = 1; i < NF; i++) if ($(i + 1) == "committed") v = $i
    if (!(v + 0 > 0)) print }' "$out")
  [ -z "$bad" ] || LOG=$out fail "depth $d: a second without commits: $bad"
  grep -Eq '^summary: [1-9][0-9]* requests committed.*; 0 errors' "$out" ||
    LOG=$out fail "depth $d: no committed summary, or client errors"
  grep -Eq '^drops: [0-9]+ ' "$out" || LOG=$out fail "depth $d: the summary shows no drop count"
  dir=$(sed -n 's/^logs and secret kept in \(.*\)$/\1/p' "$out")
  [ -d "$dir" ] || LOG=$out fail "depth $d: no log directory"
  for n in 0 1 2; do
    line=$(grep "replica $n: .* ops committed" "$dir/node$n.log") ||
      LOG=$dir/node$n.log fail "depth $d: replica $n has no report line"
    total=$(drop_total "$line") || LOG=$dir/node$n.log fail "depth $d: replica $n: no drop counters"
    warned=$(grep -c 'VSR-DROP' "$dir/node$n.log" || true)
    if [ "$total" -gt 0 ] && [ "$warned" -eq 0 ]; then
      LOG=$dir/node$n.log fail "depth $d: replica $n counted $total drops but logged none"
    fi
    if [ "$total" -eq 0 ] && [ "$warned" -gt 0 ]; then
      LOG=$dir/node$n.log fail "depth $d: replica $n logged drops but counted none"
    fi
  done
  echo "depth $d: $(grep '^summary' "$out" | cut -d';' -f1); $(grep '^drops' "$out")"
  rm -rf "$dir"
}

for d in 1 2 8 32 64; do run_depth "$d"; done
echo "PASS"
