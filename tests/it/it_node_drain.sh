#!/usr/bin/env bash
# SIGTERM while a client is still sending 256 KiB Requests (issue 12): the node answers every
# Request it accepted, the client reads every Reply and then a clean EOF (never "connection
# reset"), the final line shows accepted = replied with nothing dropped, and the exit code is 0.
# The INI keys and flags of the timeouts are accepted too.
source "$(dirname "$0")/lib.sh"

for flag in '--frame-timeout-ms N .*default 30000' '--client-idle-timeout-ms N .*default 60000' \
            '--close-peer-timeout-ms N'; do
  "$BIN" node --help | grep -q -- "$flag" || fail "node --help lacks $flag"
done

SIZE=262144
# A valid Request of SIZE bytes: client 1, request 1, session 1, operation SendMessages (160).
request_frame() {
  head -c 48 /dev/zero
  printf '\x00\x00\x04\x00'            # size 262144 at 48
  head -c 8 /dev/zero                  # 52..59
  printf '\x05'                        # command Request at 60
  head -c 67 /dev/zero                 # 61..127
  printf '\x01'; head -c 15 /dev/zero  # client at 128
  head -c 24 /dev/zero                 # request_checksum, timestamp: 144..167
  printf '\x01'; head -c 7 /dev/zero   # request at 168
  printf '\xa0'; head -c 7 /dev/zero   # operation at 176, pad
  printf '\x01'; head -c 7 /dev/zero   # session at 184
  head -c 64 /dev/zero                 # user_id, reserved: 192..255
  head -c $((SIZE - 256)) /dev/zero
}
request_frame >"$TMP/req.bin"
[ "$(stat -c %s "$TMP/req.bin")" -eq $SIZE ] || fail "request frame has the wrong size"
for _ in $(seq 10); do cat "$TMP/req.bin"; done >"$TMP/ten.bin" # 2.5 MiB per write burst

cat >"$TMP/node.ini" <<EOF
[bus]
frame_timeout_ms = 30000
client_idle_timeout_ms = 60000
close_peer_timeout_ms = 2000
EOF

LOG=$TMP/node.log
# A queue deeper than the most Requests the writer sends: no Reply meets backpressure (slow
# consumers are another test's business), so every loss here would be the close's.
start_node "$LOG" --config "$TMP/node.ini" --frame-timeout-ms 20000 --peer-queue 512 \
  --peer-queue-bytes 0
exec 3<>"/dev/tcp/${NODE_ADDR%:*}/${NODE_ADDR##*:}"
# Reader: every byte the node sends, until EOF; its exit status tells a reset from a FIN.
( cat <&3 >"$TMP/replies"; echo $? >"$TMP/reader_rc"; touch "$TMP/eof" ) &
PIDS+=($!)
# Writer: Requests back to back, faster than the node answers them (so the node always has
# unread input, which is what made a plain close() reset), until the reader saw EOF (at most
# 400 Requests = 100 MiB).
( for _ in $(seq 40); do [ -e "$TMP/eof" ] && break; cat "$TMP/ten.bin" || break; done >&3 ) &
writer=$!
PIDS+=("$writer")
exec 3<&- 3>&-

for _ in $(seq 200); do
  [ "$(stat -c %s "$TMP/replies")" -ge $((20 * SIZE)) ] && break
  sleep 0.05
done
[ "$(stat -c %s "$TMP/replies")" -ge $((20 * SIZE)) ] || LOG=$LOG fail "no replies before SIGTERM"
kill -TERM "$NODE_PID"
set +e
wait "$NODE_PID"
rc=$?
set -e
[ "$rc" -eq 0 ] || LOG=$LOG fail "node exit code $rc after SIGTERM"
for _ in $(seq 200); do [ -e "$TMP/reader_rc" ] && break; sleep 0.05; done
[ -e "$TMP/reader_rc" ] || fail "the client never saw the end of the stream"
[ "$(cat "$TMP/reader_rc")" -eq 0 ] || LOG=$LOG fail "the client's read failed (reset?)"
wait "$writer" 2>/dev/null || true

bytes=$(stat -c %s "$TMP/replies")
[ $((bytes % SIZE)) -eq 0 ] || LOG=$LOG fail "a torn Reply: $bytes bytes"
got=$((bytes / SIZE))
line=$(grep 'stopped:' "$LOG") || LOG=$LOG fail "no final line"
accepted=$(echo "$line" | sed -n 's/.* \([0-9]*\) requests accepted.*/\1/p')
replied=$(echo "$line" | sed -n 's/.* \([0-9]*\) replies, .*/\1/p')
dropped=$(echo "$line" | sed -n 's/.* \([0-9]*\) frames dropped at close.*/\1/p')
echo "client got $got replies; node: $line"
[ -n "$accepted" ] && [ "$accepted" -ge 20 ] || LOG=$LOG fail "final line: $line"
[ "$accepted" -eq "$replied" ] || LOG=$LOG fail "accepted $accepted != replied $replied"
[ "$dropped" -eq 0 ] || LOG=$LOG fail "$dropped frames dropped at close"
[ "$got" -eq "$accepted" ] || LOG=$LOG fail "client got $got replies, node accepted $accepted"
if grep -q 'reset' "$LOG"; then LOG=$LOG fail "the node logged a reset"; fi
echo "ok: SIGTERM mid-stream, $accepted accepted = $got replies received, clean EOF"
