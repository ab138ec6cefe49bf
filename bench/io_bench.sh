#!/usr/bin/env bash
# epoll vs io_uring at the io layer (bench/io_bench.c): TCP throughput (256 B and 16 KiB
# frames, 1 and 64 connections), ping-pong latency, and syscalls per 1,000 frames for each
# backend, counted over a fixed frame count with `perf stat -e raw_syscalls:sys_enter`
# (falls back to `strace -c -f`), sender and receiver processes together.
# Env: BUILD (cmake dir holding libvsrbus.a, default build), DUR (s per timed case, 2),
#      FRAMES (frames per syscall-count case, 200000), OUT (CSV, bench/results/io_latest.csv),
#      SYSCALLS_ONLY=1 (only the syscall table; bench/run.sh measures the timed cases with
#      `vsrbus bench` under VSRBUS_IO=epoll / uring).
# Not a test: prints what it measured; the numbers depend on the machine and its load.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 1
BUILD=${BUILD:-build}
DUR=${DUR:-2}
FRAMES=${FRAMES:-200000}
OUT=${OUT:-bench/results/io_latest.csv}
BIN=bench/build/io_bench
mkdir -p bench/build "$(dirname "$OUT")"

[ -f "$BUILD/libvsrbus.a" ] || { echo "io_bench: build $BUILD first (cmake --build $BUILD)" >&2; exit 1; }
# shellcheck disable=SC2046
cc -std=gnu11 -O2 -Wall -Wextra -Iinclude -Isrc bench/io_bench.c "$BUILD/libvsrbus.a" \
  $(pkg-config --libs liburing libxxhash) -lm -o "$BIN" || exit 1

BACKENDS=(epoll)
if "$BIN" --mode tput --backend uring --frames 1000 > /dev/null 2>&1; then BACKENDS+=(uring)
else echo "io_bench: io_uring unavailable here; epoll rows only" >&2; fi

[ -n "${SYSCALLS_ONLY:-}" ] && BACKENDS_TIMED=() || BACKENDS_TIMED=("${BACKENDS[@]}")
[ -n "${SYSCALLS_ONLY:-}" ] ||
  echo "system,transport,mode,frame_bytes,conns,msgs_per_s,mb_per_s,p50_us,p99_us,p999_us,rss_kib,allocs_per_msg" > "$OUT"
for be in "${BACKENDS_TIMED[@]}"; do
  for size in 256 16384; do
    for conns in 1 64; do
      timeout 120 "$BIN" --mode tput --backend "$be" --size "$size" --conns "$conns" \
        --seconds "$DUR" | tee -a "$OUT"
    done
  done
  for size in 256 4096; do
    timeout 120 "$BIN" --mode lat --backend "$be" --size "$size" --conns 1 --seconds "$DUR" |
      tee -a "$OUT"
  done
done

# Syscalls per 1,000 frames (both processes), over exactly FRAMES frames.
count_syscalls() { # args...: prints the number of syscalls the command made
  if perf stat -e raw_syscalls:sys_enter -x, -o /tmp/io_bench.perf.$$ -- "$@" > /dev/null 2>&1 &&
    grep -q raw_syscalls /tmp/io_bench.perf.$$; then
    awk -F, '/raw_syscalls/ { print $1 }' /tmp/io_bench.perf.$$
  else
    strace -c -f -o /tmp/io_bench.strace.$$ "$@" > /dev/null 2>&1
    awk '$NF == "total" { print $(NF-2) }' /tmp/io_bench.strace.$$
  fi
  rm -f /tmp/io_bench.perf.$$ /tmp/io_bench.strace.$$
}
echo
echo "syscalls per 1,000 frames (sender + receiver; setup included, $FRAMES frames per case)"
printf '%-6s %-5s %7s %6s %12s %16s\n' backend mode size conns syscalls per_1000_frames
for be in "${BACKENDS[@]}"; do
  for spec in "tput 256 1" "tput 256 64" "tput 16384 1" "tput 16384 64" "lat 256 1"; do
    read -r mode size conns <<< "$spec"
    n=$FRAMES
    [ "$mode" = lat ] && n=$((FRAMES / 10))
    calls=$(count_syscalls "$BIN" --mode "$mode" --backend "$be" --size "$size" \
      --conns "$conns" --frames "$n")
    printf '%-6s %-5s %7s %6s %12s %16s\n' "$be" "$mode" "$size" "$conns" "$calls" \
      "$(awk -v c="$calls" -v n="$n" 'BEGIN { printf "%.1f", c * 1000 / n }')"
  done
done
