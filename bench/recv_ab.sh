#!/usr/bin/env bash
# Receive-path A/B (issue 18): BASE ($1) against CUR ($2), two `vsrbus` binaries built beforehand (this script
# builds nothing). Every case runs PAIRS times in both orders (BASE,CUR then CUR,BASE, ...),
# under `perf stat` (both processes: CPU time and syscalls) when perf works.
# One CSV line per run on stdout:
#   which,backend,case,pair,msgs_per_s,mb_per_s,p50_us,p99_us,p999_us,frames,cpu_us_per_frame,syscalls_per_frame
# (lat rows: frames = round trips, from the stderr summary; tput rows: the receiver's rate x
# seconds.) Env: PAIRS (4), DUR (2), BACKENDS ("uring epoll"), CASES (see below), PERF=0 (no
# perf). Example on a quiet machine:
#   bench/recv_ab.sh /path/to/old/vsrbus build/vsrbus
set -uo pipefail
BASE=${1:?usage: recv_ab.sh BASE_VSRBUS CUR_VSRBUS}
CUR=${2:?usage: recv_ab.sh BASE_VSRBUS CUR_VSRBUS}
PAIRS=${PAIRS:-4}
DUR=${DUR:-2}
BACKENDS=${BACKENDS:-"uring epoll"}
# case = mode:size:conns[:pin]   (pin: both ends under taskset -c 0, the lat-1cpu row)
CASES=${CASES:-"tput:1024:64 tput:16384:64 tput:16384:1 lat:256:1:pin"}
PERF=${PERF:-1}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
if [ "$PERF" = 1 ] && ! perf stat -e task-clock,raw_syscalls:sys_enter -o /dev/null true 2>/dev/null; then
  PERF=0
fi

run1() { # which bin backend case pair
  local which=$1 bin=$2 be=$3 c=$4 pair=$5 mode size conns pin
  IFS=: read -r mode size conns pin <<<"$c"
  local cmd=("$bin" bench --transport tcp --mode "$mode" --size "$size" --conns "$conns"
             --seconds "$DUR")
  [ "$mode" = lat ] || cmd+=(--quiet) # lat: the round-trip count comes from the summary line
  [ -n "${pin:-}" ] && cmd=(taskset -c 0 "${cmd[@]}")
  if [ "$PERF" = 1 ]; then
    cmd=(perf stat -x, -o "$TMP/perf" -e task-clock,raw_syscalls:sys_enter -- "${cmd[@]}")
  fi
  VSRBUS_IO=$be timeout $((DUR + 60)) "${cmd[@]}" >"$TMP/out" 2>"$TMP/err" || {
    echo "$which,$be,$c,$pair,FAILED,,,,,,," ; return; }
  local row frames cpu sys
  row=$(grep -E '^vsrbus,' "$TMP/out" | tail -1)
  IFS=, read -r _ _ _ _ _ msgs mb p50 p99 p999 _ _ <<<"$row"
  if [ "$mode" = lat ]; then
    frames=$(sed -n 's/.*conns: \([0-9.]*\) frames\/s.*/\1/p' "$TMP/err" | tail -1)
    frames=$(awk -v f="${frames:-0}" -v d="$DUR" 'BEGIN { printf "%.0f", f * d }')
  else
    frames=$(awk -v f="${msgs:-0}" -v d="$DUR" 'BEGIN { printf "%.0f", f * d }')
  fi
  cpu="" sys=""
  if [ "$PERF" = 1 ] && [ "${frames:-0}" -gt 0 ]; then
    cpu=$(awk -F, -v f="$frames" '/task-clock/ { printf "%.3f", $1 * 1000 / f }' "$TMP/perf")
    sys=$(awk -F, -v f="$frames" '/raw_syscalls/ { printf "%.3f", $1 / f }' "$TMP/perf")
  fi
  echo "$which,$be,$c,$pair,$msgs,$mb,$p50,$p99,$p999,$frames,$cpu,$sys"
}

echo "which,backend,case,pair,msgs_per_s,mb_per_s,p50_us,p99_us,p999_us,frames,cpu_us_per_frame,syscalls_per_frame"
for be in $BACKENDS; do
  for c in $CASES; do
    for ((p = 1; p <= PAIRS; p++)); do
      if ((p % 2)); then run1 base "$BASE" "$be" "$c" "$p"; run1 cur "$CUR" "$be" "$c" "$p"
      else run1 cur "$CUR" "$be" "$c" "$p"; run1 base "$BASE" "$be" "$c" "$p"; fi
    done
  done
done
