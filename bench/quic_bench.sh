#!/usr/bin/env bash
# QUIC throughput on 127.0.0.1 (bench/quic_bench.c, transport layer, one connection): vsrbus
# QUIC as shipped (GSO bursts, GRO, frames packed into full packets) against the reference's
# way of writing (--unbatched: each frame written and flushed alone, one sendmsg per datagram),
# against vsrbus TCP, with the offloads off one at a time, with a loopback-sized UDP payload,
# and against Debian's ngtcp2 example server/client moving 256 MiB (baselines/quic-ngtcp2.sh).
# 256 B and 1 MiB frames; median of RUNS runs of DUR seconds each.
# Env: BUILD (cmake dir with libvsrbus.a, default build), DUR (2), RUNS (3), BACKEND (epoll),
#      OUT (CSV, bench/results/quic_latest.csv). Not a test: the numbers depend on the machine
# and its load; the markdown table goes to stdout.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 1
BUILD=${BUILD:-build}
DUR=${DUR:-2}
RUNS=${RUNS:-3}
BACKEND=${BACKEND:-epoll}
OUT=${OUT:-bench/results/quic_latest.csv}
BIN=bench/build/quic_bench
mkdir -p bench/build "$(dirname "$OUT")"

[ -f "$BUILD/libvsrbus.a" ] || { echo "quic_bench: build $BUILD first" >&2; exit 1; }
# shellcheck disable=SC2046
cc -std=gnu11 -O2 -Wall -Wextra -Iinclude -Isrc bench/quic_bench.c "$BUILD/libvsrbus.a" \
  $(pkg-config --libs libngtcp2 libngtcp2_crypto_gnutls gnutls liburing libxxhash) -lm \
  -o "$BIN" || exit 1

# label|transport|extra flags
CASES=(
  "tcp|tcp|"
  "quic|quic|"
  "quic-unbatched|quic|--unbatched"
  "quic-no-gso|quic|--no-gso"
  "quic-no-gro|quic|--no-gro"
  "quic-mtu16k|quic|--mtu 16384"
  "quic-mtu32k|quic|--mtu 32000"
)
echo "system,transport,mode,frame_bytes,conns,msgs_per_s,mb_per_s,p50_us,p99_us,p999_us,rss_kib,allocs_per_msg" > "$OUT"
declare -A MB
for c in "${CASES[@]}"; do
  IFS='|' read -r label transport flags <<< "$c"
  for size in 256 1048576; do
    rows=()
    for _ in $(seq "$RUNS"); do
      # shellcheck disable=SC2086 # flags is a word list
      row=$(timeout 120 "$BIN" --transport "$transport" --size "$size" --seconds "$DUR" \
        --backend "$BACKEND" --label "$label" $flags 2> /dev/null) && rows+=("$row")
    done
    [ ${#rows[@]} -gt 0 ] || { echo "quic_bench: $label $size failed" >&2; continue; }
    med=$(printf '%s\n' "${rows[@]}" | sort -t, -k7 -g | awk -v n=${#rows[@]} 'NR == int((n + 1) / 2)')
    echo "$med" >> "$OUT"
    MB[$label,$size]=$(echo "$med" | cut -d, -f7)
    echo "quic_bench: $label $size B: $(echo "$med" | cut -d, -f6,7 | tr , ' ') (msgs/s MB/s)" >&2
  done
done

ng=$(bench/baselines/quic-ngtcp2.sh "$RUNS" 2> /dev/null | tail -1)
ngmb=$(echo "$ng" | cut -d, -f7)
[ -n "$ng" ] && echo "$ng" >> "$OUT"

ratio() { awk -v a="${1:-0}" -v b="${2:-0}" 'BEGIN { if (b > 0) printf "%.2f×", a / b; else print "–" }'; }
echo "| variant | 256 B MB/s | 1 MiB MB/s | 256 B vs TCP | 1 MiB vs TCP | 1 MiB vs ngtcp2 example |"
echo "|---|---:|---:|---:|---:|---:|"
for c in "${CASES[@]}"; do
  label=${c%%|*}
  a=${MB[$label,256]:-} b=${MB[$label,1048576]:-}
  echo "| $label | ${a:-–} | ${b:-–} | $(ratio "$a" "${MB[tcp,256]:-}") | $(ratio "$b" "${MB[tcp,1048576]:-}") | $(ratio "$b" "$ngmb") |"
done
echo "| ngtcp2 example (gtlsserver → gtlsclient, 256 MiB over HTTP/3) | | ${ngmb:-–} | | | 1.00× |"
echo
echo "backend $BACKEND, median of $RUNS runs of ${DUR}s; CSV: $OUT"
