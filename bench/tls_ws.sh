#!/usr/bin/env bash
# The issue-16 rows alone (TLS, WS, WSS against vsrbus TCP) into bench/results/tls16/, with the
# same commands as bench/run.sh, for a shared, noisy machine: each throughput case runs ROUNDS
# times, alternating with the TCP case it is compared with, and the CSV keeps each case's
# median run (by MB/s); latency and idle rows run once. Then bench/report.sh writes latest.md.
# Env: BUILD (cmake dir, build), DUR (s per throughput run, 3), ROUNDS (3), LAT_SECONDS (2),
#      IDLE (1000 idle connections).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 1
BUILD=${BUILD:-build}
DUR=${DUR:-3}
ROUNDS=${ROUNDS:-3}
LAT_SECONDS=${LAT_SECONDS:-2}
IDLE=${IDLE:-1000}
V=$BUILD/vsrbus
RES=bench/results/tls16
HEADER=system,transport,mode,frame_bytes,conns,msgs_per_s,mb_per_s,p50_us,p99_us,p999_us,rss_kib,allocs_per_msg
mkdir -p "$RES"
raw=$(mktemp) || exit 1
trap 'rm -f "$raw"' EXIT
LOG=$RES/latest.log
{
  echo "meta: start $(date -u '+%F %T') UTC"
  echo "meta: host $(uname -srm), $(nproc) CPUs, $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)"
  echo "meta: load before run $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "meta: csv tls16/latest.csv (issue 16 rows only, bench/tls_ws.sh: the commands of bench/run.sh, DUR=$DUR, median of $ROUNDS runs alternating with TCP)"
} > "$LOG"
run() { echo "+ $*" >> "$LOG"; timeout 120 "$@" --quiet 2>> "$LOG" | grep '^vsrbus,' >> "$raw"; }
for r in $(seq "$ROUNDS"); do
  for s in 16384 1048576; do
    for t in tcp tls tcp ws tcp wss; do
      run "$V" bench --transport "$t" --mode tput --size "$s" --conns 1 --seconds "$DUR"
    done
  done
done
for t in tcp tls ws wss; do run "$V" bench --transport "$t" --mode lat --size 256 --seconds "$LAT_SECONDS"; done
for t in tls ws wss; do run "$V" bench --transport "$t" --mode idle --conns "$IDLE"; done
echo "meta: load after run $(cut -d' ' -f1-3 /proc/loadavg)" >> "$LOG"
# One row per case: the median throughput run; other modes as measured.
{
  echo "$HEADER"
  awk -F, '$3 == "tput" { k = $2 "," $4; n[k]++; row[k, n[k]] = $0; mb[k, n[k]] = $7; if (!(k in seen)) { seen[k] = 1; ord[++m] = k } }
    $3 != "tput" { other[++o] = $0 }
    END {
      for (i = 1; i <= m; i++) {
        k = ord[i]; c = n[k]
        for (a = 1; a <= c; a++) idx[a] = a
        for (a = 1; a <= c; a++) for (b = a + 1; b <= c; b++)
          if (mb[k, idx[b]] + 0 < mb[k, idx[a]] + 0) { t = idx[a]; idx[a] = idx[b]; idx[b] = t }
        print row[k, idx[int((c + 1) / 2)]]
      }
      for (i = 1; i <= o; i++) print other[i]
    }' "$raw"
} > "$RES/latest.csv"
{ echo "$HEADER"; cat "$raw"; } > "$RES/runs.csv"
bench/report.sh "$RES/latest.csv"
