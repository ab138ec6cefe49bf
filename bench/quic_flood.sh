#!/usr/bin/env bash
# QUIC handshake flood against `vsrbus node` (bench/quic_flood.c): HALFOPEN real client Initials
# that never finish, then RATE fresh ones per second for DUR seconds, while a real QUIC client
# connects every 500 ms and pings; prints its success rate and latency, and the node's own
# account of the flood (its last lines). Not a test: numbers depend on the machine and its load.
# Env: BUILD (cmake dir with libvsrbus.a, default build), NODE (the vsrbus binary to attack,
#      default $BUILD/vsrbus: point it at an older build to compare), PORT (28080), HALFOPEN
#      (1100), RATE (1500), DUR (10), SOURCES (4), INTERVAL (ms between probes, 500), TIMEOUT
#      (ms a probe waits to connect and to be served, 2000), NODE_FLAGS (extra node flags).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 1
BUILD=${BUILD:-build}
NODE=${NODE:-$BUILD/vsrbus}
PORT=${PORT:-28080}
BIN=bench/build/quic_flood
mkdir -p bench/build
[ -f "$BUILD/libvsrbus.a" ] || { echo "quic_flood: build $BUILD first" >&2; exit 1; }
# shellcheck disable=SC2046
cc -std=gnu11 -O2 -Wall -Wextra -Iinclude -Isrc bench/quic_flood.c "$BUILD/libvsrbus.a" \
  $(pkg-config --libs libngtcp2 libngtcp2_crypto_gnutls gnutls liburing libxxhash) -lm -lpthread \
  -o "$BIN" || exit 1

LOG=$(mktemp /tmp/vsrbus-quic-flood-XXXXXX.log)
# shellcheck disable=SC2086
"$NODE" node --tcp off --quic "127.0.0.1:$PORT" --log info ${NODE_FLAGS:-} 2> "$LOG" &
NODE_PID=$!
trap 'kill "$NODE_PID" 2>/dev/null; wait "$NODE_PID" 2>/dev/null; rm -f "$LOG"' EXIT
for _ in $(seq 100); do grep -q "listening" "$LOG" && break; sleep 0.05; done
"$BIN" --target "127.0.0.1:$PORT" --halfopen "${HALFOPEN:-1100}" --rate "${RATE:-1500}" \
  --duration "${DUR:-10}" --sources "${SOURCES:-4}" --interval "${INTERVAL:-500}" \
  --timeout "${TIMEOUT:-2000}"
RC=$?
RSS=$(awk '/VmHWM/ { print $2 " " $3 }' "/proc/$NODE_PID/status" 2>/dev/null)
kill -INT "$NODE_PID"
wait "$NODE_PID"
echo "node: peak RSS ${RSS:-?}; $(grep -c . "$LOG") log lines; VSR-QUIC-FLOOD lines: $(grep -c VSR-QUIC-FLOOD "$LOG")"
grep -E "QUIC handshake floods|stopped:" "$LOG" | sed 's/^/node: /'
exit $RC
