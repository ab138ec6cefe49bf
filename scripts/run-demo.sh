#!/usr/bin/env bash
# `make run`: one vsrbus node pinged over TCP (then stopped by its PID), followed by the
# 3-replica cluster demo (`vsrbus demo`) for ~10 s with live figures; halfway through it kills
# the primary: the backups elect a new one and the clients follow it (docs/demo.md).
set -euo pipefail
BIN=${1:-build/vsrbus}
LOG=$(mktemp)
"$BIN" node --tcp 127.0.0.1:0 --quic off 2>"$LOG" &
node=$!
trap 'kill "$node" 2>/dev/null; wait "$node" 2>/dev/null || true; rm -f "$LOG"' EXIT
addr=
for _ in $(seq 100); do
  addr=$(sed -n 's/.*client plane tcp listening on \([0-9.:]*\).*/\1/p' "$LOG" | head -1)
  [ -n "$addr" ] && break
  sleep 0.05
done
[ -n "$addr" ] || { cat "$LOG" >&2; echo "run-demo: the node did not start" >&2; exit 1; }
echo "== vsrbus ping $addr (one node, TCP)"
"$BIN" ping "$addr" -c 5 -i 100
kill -INT "$node"
wait "$node" 2>/dev/null || true
echo
secs=${VSRBUS_DEMO_SECONDS:-10}
echo "== vsrbus demo (3 replicas + clients on 127.0.0.1; the primary is killed at $((secs / 2)) s)"
exec "$BIN" demo --seconds "$secs" --kill-primary-after "$((secs / 2))"
