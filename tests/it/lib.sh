# Shared helpers for shell integration tests: start a node on a kernel-chosen port, stop it by
# PID, fail with a message. Every wait is bounded.
set -euo pipefail
BIN=${VSRBUS_BIN:?VSRBUS_BIN must point at build/vsrbus}
TMP=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; [ -n "${LOG:-}" ] && [ -f "$LOG" ] && sed 's/^/  log: /' "$LOG" >&2; exit 1; }

# start_node LOGFILE ARGS...: starts `vsrbus node --tcp 127.0.0.1:0 --quic off ARGS`, sets NODE_PID and
# NODE_ADDR (read from the node's listen line). Exits 77 if the forced backend is missing.
start_node() {
  local log=$1; shift
  : >"$log" # exists before the background node opens it: the reads below never race it
  "$BIN" node --tcp 127.0.0.1:0 --quic off "$@" >"$log" 2>&1 &
  NODE_PID=$!
  PIDS+=("$NODE_PID")
  for _ in $(seq 100); do
    NODE_ADDR=$(sed -n 's/.*client plane tcp listening on \([0-9.:]*\).*/\1/p' "$log" | head -1)
    [ -n "$NODE_ADDR" ] && return 0
    if ! kill -0 "$NODE_PID" 2>/dev/null; then
      grep -q "io_uring forced but unavailable" "$log" && { echo "skip: no io_uring"; exit 77; }
      LOG=$log fail "node exited at start"
    fi
    sleep 0.05
  done
  LOG=$log fail "node did not start listening"
}

# A 256-byte header: command $1, size $2 (decimal) little-endian at offset 48.
frame_header() {
  local cmd=$1 size=$2
  head -c 48 /dev/zero
  printf "$(printf '\\x%02x\\x%02x\\x%02x\\x%02x' $((size & 255)) $((size >> 8 & 255)) \
    $((size >> 16 & 255)) $((size >> 24 & 255)))"
  head -c 8 /dev/zero
  printf "$(printf '\\x%02x' "$cmd")"
  head -c 195 /dev/zero
}
