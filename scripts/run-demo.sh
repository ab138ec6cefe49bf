#!/usr/bin/env bash
# `make run`: the 3-replica cluster demo for ~10 s (`vsrbus demo`). A build without the demo
# starts one node on loopback, pings it over TCP, and stops it by its PID.
set -euo pipefail
BIN=${1:-build/vsrbus}
PORT=${VSRBUS_DEMO_PORT:-18090}
if "$BIN" demo --help >/dev/null 2>&1; then
  exec "$BIN" demo --seconds "${VSRBUS_DEMO_SECONDS:-10}"
fi
"$BIN" node --tcp "127.0.0.1:$PORT" &
node=$!
trap 'kill "$node" 2>/dev/null; wait "$node" 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  "$BIN" ping "127.0.0.1:$PORT" -c 1 -i 0 >/dev/null 2>&1 && break
  sleep 0.1
done
"$BIN" ping "127.0.0.1:$PORT" -c 10 -i 100
