#!/usr/bin/env bash
# `vsrbus node` and `vsrbus ping` as a user runs them: flags, exit codes, one log line for a
# frame whose size field is 0xFFFFFFFF, and other clients still served.
source "$(dirname "$0")/lib.sh"

"$BIN" --version | grep -q '^vsrbus [0-9]' || fail "--version"
"$BIN" --help | grep -q 'node' || fail "--help"
"$BIN" node --help | grep -q -- '--tcp ADDR' || fail "node --help"
set +e
"$BIN" node --no-such-flag >/dev/null 2>&1; [ $? -eq 2 ] || fail "unknown flag must exit 2"
"$BIN" bogus >/dev/null 2>&1; [ $? -eq 2 ] || fail "unknown command must exit 2"
"$BIN" node --tcp 999.1.1.1:99999 >/dev/null 2>&1; [ $? -eq 1 ] || fail "bad address must exit 1"
"$BIN" node --memory-max 12Q >/dev/null 2>&1; [ $? -eq 2 ] || fail "a bad size must exit 2"
"$BIN" node --memory-max 8M --tcp 127.0.0.1:0 --quic off >/dev/null 2>&1
[ $? -eq 1 ] || fail "memory-max below 16M must exit 1"
set -e
"$BIN" node --help | grep -q -- '--memory-max SIZE' || fail "node --help lists --memory-max"

LOG=$TMP/node.log
start_node "$LOG"
TCP_PID=$NODE_PID
"$BIN" ping "$NODE_ADDR" -c 3 -i 0 >"$TMP/ping1" || LOG=$LOG fail "ping before"
grep -q '3 sent, 3 received' "$TMP/ping1" || fail "ping summary: $(cat "$TMP/ping1")"

# A second client stays connected across the bad frame (a long ping run in the background).
"$BIN" ping "$NODE_ADDR" -c 40 -i 25 >"$TMP/ping2" &
bg=$!
PIDS+=("$bg")
sleep 0.2

exec 3<>"/dev/tcp/${NODE_ADDR%:*}/${NODE_ADDR##*:}"
frame_header 5 4294967295 >&3
# The node closes the connection: reading returns EOF.
timeout 10 cat <&3 >/dev/null || fail "connection not closed"
exec 3<&-

wait "$bg" || LOG=$LOG fail "the other client was disturbed: $(cat "$TMP/ping2")"
grep -q '40 sent, 40 received' "$TMP/ping2" || fail "other client: $(cat "$TMP/ping2")"

n=$(grep -c 'VSR-FRAME' "$LOG" || true)
[ "$n" -eq 1 ] || LOG=$LOG fail "expected exactly one VSR-FRAME line, got $n"
line=$(grep 'VSR-FRAME' "$LOG")
echo "$line" | grep -q '127.0.0.1:[0-9]* tcp' || fail "log line names no peer: $line"
echo "$line" | grep -q 'size 4294967295' || fail "log line lacks the size: $line"
echo "$line" | grep -q 'VSR_EFRAME_LARGE' || fail "log line lacks the reason: $line"

"$BIN" ping "$NODE_ADDR" -c 2 -i 0 >/dev/null || LOG=$LOG fail "ping after"

# The same node binary serving QUIC too (the default listener is 127.0.0.1:8080; a kernel-chosen
# port here): a QUIC ping that pins the logged certificate fingerprint.
QLOG=$TMP/quic.log
start_node "$QLOG" --quic 127.0.0.1:0
QPID=$NODE_PID
for _ in $(seq 100); do
  qaddr=$(sed -n 's/.*client plane quic listening on \([0-9.:]*\).*/\1/p' "$QLOG" | head -1)
  [ -n "$qaddr" ] && break
  sleep 0.05
done
pin=$(sed -n 's/.*certificate SHA-256 \([0-9A-F:]*\).*/\1/p' "$QLOG" | head -1)
[ -n "$qaddr" ] && [ -n "$pin" ] || LOG=$QLOG fail "no QUIC listener or fingerprint logged"
"$BIN" ping --quic "$qaddr" --pin "$pin" -c 3 -i 0 | grep -q '3 sent, 3 received' ||
  LOG=$QLOG fail "QUIC ping with the pinned fingerprint"
set +e
"$BIN" ping --quic "$qaddr" --pin "$(echo "$pin" | tr '0-9A-F' 'A-F0-9')" -c 1 -i 0 >/dev/null 2>&1
[ $? -eq 1 ] || fail "a wrong pin must be refused"
set -e
kill -INT "$QPID"
wait "$QPID" || LOG=$QLOG fail "QUIC node did not exit cleanly"
kill -INT "$TCP_PID"
wait "$TCP_PID" || LOG=$LOG fail "node did not exit cleanly on SIGINT"
grep -q 'stopped:' "$LOG" || LOG=$LOG fail "no shutdown summary"
echo "ok: node cli"
