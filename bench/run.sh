#!/usr/bin/env bash
# `make bench`: builds the baselines (bench/baselines/) and vsrbus, runs every benchmark case of
# issue 7 on 127.0.0.1 with each case bounded by `timeout`, writes bench/results/<UTC date>.csv
# and latest.csv, then bench/report.sh turns them into latest.md and PNG plots.
# Env: DUR (s per throughput case, 2), ITERS (round trips per baseline latency case, 20000),
#      LAT_SECONDS (s per vsrbus latency case, 2), PIPE_SECONDS (pipeline case, 5),
#      IDLE_TCP (10000) / IDLE_QUIC (1000) idle connections, BUILD (cmake dir, build),
#      SKIP_VSRBUS_BUILD=1 (use BUILD as it is), SYSTEMS (default "ideal zmq nng ngtcp2 iperf3
#      vsrbus"),
#      IO_ROWS=0 (skip the epoll / io_uring rows and the syscall table).
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 1
DUR=${DUR:-2}
ITERS=${ITERS:-20000}
LAT_SECONDS=${LAT_SECONDS:-2}
PIPE_SECONDS=${PIPE_SECONDS:-5}
IDLE_TCP=${IDLE_TCP:-10000}
IDLE_QUIC=${IDLE_QUIC:-1000}
BUILD=${BUILD:-build}
SYSTEMS=${SYSTEMS:-ideal zmq nng ngtcp2 iperf3 vsrbus}
SIZES_TPUT=(256 1024 16384 1048576)
SIZES_LAT=(256 4096)
CONNS_TPUT=(1 64)
BB=bench/build   # baseline binaries
RES=bench/results
DATE=$(date -u +%F)
OUT=$RES/$DATE.csv
LOG=$RES/latest.log
HEADER=system,transport,mode,frame_bytes,conns,msgs_per_s,mb_per_s,p50_us,p99_us,p999_us,rss_kib,allocs_per_msg
mkdir -p "$BB" "$RES"
: > "$LOG"

say() { echo "$*" | tee -a "$LOG" >&2; }
want() { [[ " $SYSTEMS " == *" $1 "* ]]; }
# 10,000 idle clients need more descriptors than the usual soft limit (raising the hard limit
# works as root only; the programs cap their connection count to what they get).
ulimit -Hn 65536 2> /dev/null
ulimit -n "$(ulimit -Hn)" 2> /dev/null

{
  echo "meta: start $(date -u '+%F %T') UTC"
  echo "meta: host $(uname -srm), $(nproc) CPUs, $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)"
  echo "meta: load before run $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "meta: DUR=$DUR ITERS=$ITERS LAT_SECONDS=$LAT_SECONDS IDLE_TCP=$IDLE_TCP IDLE_QUIC=$IDLE_QUIC"
} >> "$LOG"

# --- build ---------------------------------------------------------------------------------
CFLAGS=(-std=gnu11 -O2 -Wall -Wextra)
B=bench/baselines
declare -A BUILT=()
build_baseline() { # name, extra link flags...
  local name=$1
  shift
  if cc "${CFLAGS[@]}" -o "$BB/$name" "$B/$name.c" "$B/count_alloc.c" "$@" -lpthread \
    2>> "$LOG"; then
    BUILT[$name]=1
  else say "skipped: $name baseline did not build (see $LOG)"; fi
}
want ideal && build_baseline ideal
# shellcheck disable=SC2046 # the flags are separate words
want zmq && build_baseline zmq $(pkg-config --cflags --libs libzmq 2> /dev/null || echo -lzmq)
want nng && build_baseline nng -lnng # libnng-dev ships no pkg-config file

VSRBUS=$BUILD/vsrbus
if want vsrbus && [ -z "${SKIP_VSRBUS_BUILD:-}" ]; then
  say "building vsrbus in $BUILD (Release) ..."
  if ! { [ -f "$BUILD/CMakeCache.txt" ] || cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release; } \
    > "$BB/vsrbus-build.log" 2>&1 || ! cmake --build "$BUILD" -j2 >> "$BB/vsrbus-build.log" 2>&1
  then
    say "vsrbus build failed (see $BB/vsrbus-build.log)"
  fi
fi
HAVE_VSRBUS=
if want vsrbus; then
  if timeout 10 "$VSRBUS" bench --help > /dev/null 2>&1; then HAVE_VSRBUS=1
  else say "skipped: vsrbus bench not built"; fi
fi

# --- cases ---------------------------------------------------------------------------------
# Each case: "<timeout s>|<mode column override or ->|<command...>". A case's stdout rows with
# the 12 columns go to the CSV (the override replaces column 3: pinned runs of a program that
# has no --label); its stderr goes to the log.
CASES=()
add() { CASES+=("$1|$2|$3"); }
TT=$(awk -v d="$DUR" 'BEGIN { printf "%d", d + 20 }')
PIN="taskset -c 0" # both ends on one CPU

for c in "${CONNS_TPUT[@]}"; do
  for s in "${SIZES_TPUT[@]}"; do
    for p in ideal zmq nng; do
      [ -n "${BUILT[$p]:-}" ] && add "$TT" - "$BB/$p --mode tput --size $s --conns $c --seconds $DUR"
    done
    if [ -n "$HAVE_VSRBUS" ]; then
      for t in tcp quic; do
        add "$TT" - "$VSRBUS bench --transport $t --mode tput --size $s --conns $c --seconds $DUR"
      done
    fi
  done
done
want ngtcp2 && add 120 - "$B/quic-ngtcp2.sh 3"
# the loopback's limit for large frames (issue 18): iperf3 -l 1M over one connection, one row
# (iperf3,tcp,tput,1048576,1); target in latest.md: vsrbus TCP 1 MiB x 1 >= 0.8x iperf3
want iperf3 && add "$TT" - "bench/iperf3.sh $DUR"

# Unpinned runs land on one CPU or on two as the scheduler likes (about 5 vs 65 us round trips
# on a 2-vCPU VM), so two pinned layouts are measured as well: both ends on CPU 0 (lat-1cpu),
# and, for the baselines, one end on each CPU (lat-2cpu, --pin-split).
for s in "${SIZES_LAT[@]}"; do
  for label in lat lat-1cpu lat-2cpu; do
    pin='' split=''
    [ $label = lat-1cpu ] && pin=$PIN
    [ $label = lat-2cpu ] && split=--pin-split
    for p in ideal zmq nng; do
      [ -n "${BUILT[$p]:-}" ] &&
        add 60 - "$pin $BB/$p --mode lat --size $s --iters $ITERS --label $label $split"
    done
    if [ -n "$HAVE_VSRBUS" ] && [ $label != lat-2cpu ]; then
      for t in tcp quic; do
        add 60 "$label" "$pin $VSRBUS bench --transport $t --mode lat --size $s --seconds $LAT_SECONDS"
      done
    fi
  done
done

for p in ideal zmq nng; do
  [ -n "${BUILT[$p]:-}" ] && add 60 - "$BB/$p --mode idle --conns $IDLE_TCP"
done
# TLS, WS and WSS (issue 16): throughput at 16 KiB and 1 MiB, round trips at 256 B, idle
# connections; targets in latest.md: TLS 1 MiB >= 0.7x TCP, WS 16 KiB >= 0.9x TCP.
if [ -n "$HAVE_VSRBUS" ]; then
  for t in tls ws wss; do
    for s in 16384 1048576; do
      add "$TT" - "$VSRBUS bench --transport $t --mode tput --size $s --conns 1 --seconds $DUR"
    done
    add 60 lat "$VSRBUS bench --transport $t --mode lat --size 256 --seconds $LAT_SECONDS"
    add 60 - "$VSRBUS bench --transport $t --mode idle --conns $IDLE_QUIC"
  done
fi
if [ -n "$HAVE_VSRBUS" ]; then
  add 60 - "$VSRBUS bench --transport tcp --mode idle --conns $IDLE_TCP"
  add 60 - "$VSRBUS bench --transport quic --mode idle --conns $IDLE_QUIC"
  # the 3-replica normal-case pipeline (Request -> Prepare -> PrepareOk -> Commit -> Reply):
  # `vsrbus demo` as one CSV row, 32 clients x 1 request in flight, 256-byte bodies
  for t in tcp quic; do
    add $((PIPE_SECONDS + 30)) - "$VSRBUS bench --transport $t --mode pipeline --seconds $PIPE_SECONDS"
  done
  # ... and pipelined (issue 18 target: >= 500 k committed req/s, p99 <= 2 ms): 32 clients x
  # 16 requests in flight, the primary batching them into Prepares (row mode pipeline-k16)
  add $((PIPE_SECONDS + 30)) - "$VSRBUS bench --transport tcp --mode pipeline --inflight 16 --seconds $PIPE_SECONDS"
fi
# TCP and QUIC over a veth pair with MTU 1500 between two network namespaces (issue 18,
# bench/netns.sh: rows tcp-veth1500 / quic-veth1500, ideal and vsrbus, 16 KiB and 1 MiB);
# target in latest.md: QUIC 1 MiB >= 0.8x vsrbus TCP over veth1500. Root only.
if [ -n "$HAVE_VSRBUS" ]; then
  if [ "$(id -u)" -eq 0 ] && command -v ip > /dev/null; then
    add $((6 * (${DUR%.*} + 20) + 30)) - "env DUR=$DUR BUILD=$BUILD bench/netns.sh"
  else
    say "skipped: bench/netns.sh (tcp-veth1500 / quic-veth1500 rows): ip netns needs root"
  fi
fi
# The two I/O backends, forced: TCP throughput and latency rows named vsrbus-epoll and
# vsrbus-uring (bench exits 77, "skipped", where io_uring is unavailable).
if [ -n "$HAVE_VSRBUS" ] && [ "${IO_ROWS:-1}" != 0 ]; then
  for io in epoll uring; do
    for s in 256 16384; do
      for c in 1 64; do
        add "$TT" - "env VSRBUS_IO=$io $VSRBUS bench --transport tcp --mode tput --size $s --conns $c --seconds $DUR --system vsrbus-$io"
      done
    done
    add 60 - "env VSRBUS_IO=$io $VSRBUS bench --transport tcp --mode lat --size 256 --seconds $LAT_SECONDS --system vsrbus-$io"
  done
fi

# One line per case on the terminal: what ran and its headline figure.
summary() {
  awk -F, '{
    if ($8 != "") printf "p50 %s us, p99 %s us, p99.9 %s us", $8, $9, $10
    if ($6 != "" && $6 != "0") printf "%s%s msgs/s, %s MB/s", $8 != "" ? ", " : "", $6, $7
    else if ($7 != "" && $8 == "") printf "%s MB/s", $7
    else if ($8 == "" && $11 != "") printf "%s KiB per idle connection", $11
    if ($12 != "") printf ", %s allocs/msg", $12
    printf "\n" }'
}

echo "$HEADER" > "$OUT"
n=${#CASES[@]}
i=0
failed=0
declare -A VFAIL=() # failed vsrbus cases per transport: after two, the rest of it is skipped
t_start=$(date +%s)
for c in "${CASES[@]}"; do
  i=$((i + 1))
  tmo=${c%%|*}
  rest=${c#*|}
  relabel=${rest%%|*}
  cmd=${rest#*|}
  vt=
  [[ $cmd == *"$VSRBUS bench --transport "* ]] && vt=${cmd##*--transport } && vt=${vt%% *}
  [[ -n $vt && $cmd == *VSRBUS_IO=* ]] && io=${cmd#*VSRBUS_IO=} && vt="$vt/${io%% *}"
  if [ -n "$vt" ] && [ "${VFAIL[$vt]:-0}" -ge 2 ]; then
    echo "skipped: $cmd (vsrbus $vt failed twice before)" >> "$LOG"
    continue
  fi
  printf '[%2d/%d] %s ... ' "$i" "$n" "$cmd" >&2
  echo "case: $cmd" >> "$LOG"
  # shellcheck disable=SC2086 # cmd is a word list built above
  rows=$(timeout -k 5 "$tmo" $cmd 2>> "$LOG")
  rc=$?
  rows=$(printf '%s\n' "$rows" | awk -F, -v OFS=, -v m="$relabel" 'NF == 12 && $1 != "system" {
    if (m != "-") $3 = m
    print }')
  if [ -n "$rows" ]; then
    printf '%s\n' "$rows" >> "$OUT"
    printf '%s\n' "$rows" | summary | head -1 >&2
  fi
  if [ $rc -eq 77 ] && [ -z "$rows" ]; then
    echo "skipped" >&2
    say "skipped (exit 77): $cmd"
  elif [ $rc -ne 0 ] || [ -z "$rows" ]; then
    failed=$((failed + 1))
    [ -n "$rows" ] || echo >&2
    say "FAILED (exit $rc${rows:+, row kept}): $cmd"
    if [ -n "$vt" ]; then
      VFAIL[$vt]=$((${VFAIL[$vt]:-0} + 1))
      [ "${VFAIL[$vt]}" -eq 2 ] && say "skipping the remaining vsrbus $vt cases"
    fi
  fi
done

# Syscalls per 1,000 frames at the io layer, epoll vs io_uring (bench/io_bench.sh; report.sh
# puts the table into latest.md).
rm -f "$RES/io_syscalls.txt"
if [ -n "$HAVE_VSRBUS" ] && [ "${IO_ROWS:-1}" != 0 ]; then
  printf 'syscall counts (bench/io_bench.sh) ... ' >&2
  echo "case: bench/io_bench.sh (syscall table)" >> "$LOG"
  if SYSCALLS_ONLY=1 BUILD=$BUILD timeout -k 5 300 bench/io_bench.sh > "$RES/io_syscalls.txt" \
    2>> "$LOG" && grep -q per_1000_frames "$RES/io_syscalls.txt"; then
    echo "done" >&2
  else
    echo >&2
    rm -f "$RES/io_syscalls.txt"
    say "FAILED: bench/io_bench.sh (no syscall table)"
  fi
fi
t_end=$(date +%s)

cp "$OUT" "$RES/latest.csv"
{
  echo "meta: summary $n cases, $failed failed, $((t_end - t_start)) s of cases"
  echo "meta: csv $(basename "$OUT")"
} >> "$LOG"
say "wrote $OUT and $RES/latest.csv ($n cases, $failed failed, $((t_end - t_start)) s)"
bench/report.sh "$RES/latest.csv" || say "report.sh failed"
[ $failed -eq 0 ]
