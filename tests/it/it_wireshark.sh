#!/usr/bin/env bash
# The Wireshark dissector (contrib/wireshark/vsrbus.lua) decodes what tshark captured of a real
# `vsrbus ping`: over TCP (including a header split over two segments, reassembled) and, with
# the TLS key log the ping wrote through SSLKEYLOGFILE, over QUIC.
source "$(dirname "$0")/lib.sh"
command -v tshark >/dev/null && command -v dumpcap >/dev/null ||
  { echo "skip: tshark not installed (scripts/deps.sh installs it)"; exit 77; }
[ "$(id -u)" -eq 0 ] || { echo "skip: capturing on lo needs root"; exit 77; }
LUA=${VSRBUS_SRC:?}/contrib/wireshark/vsrbus.lua

LOG=$TMP/node.log
start_node "$LOG" --quic 127.0.0.1:0
for _ in $(seq 100); do
  qaddr=$(sed -n 's/.*client plane quic listening on \([0-9.:]*\).*/\1/p' "$LOG" | head -1)
  [ -n "$qaddr" ] && break
  sleep 0.05
done
pin=$(sed -n 's/.*certificate SHA-256 \([0-9A-F:]*\).*/\1/p' "$LOG" | head -1)
[ -n "$qaddr" ] && [ -n "$pin" ] || fail "no QUIC listener logged"

CAP=$TMP/cap.pcapng
dumpcap -q -i lo -f "port ${NODE_ADDR##*:} or port ${qaddr##*:}" -w "$CAP" 2>"$TMP/dumpcap.err" &
DPID=$!
PIDS+=("$DPID")
# dumpcap creates the file once it captures; wait for it (bounded).
for _ in $(seq 100); do [ -s "$CAP" ] && break; sleep 0.05; done
[ -s "$CAP" ] || LOG=$TMP/dumpcap.err fail "dumpcap did not start"

"$BIN" ping "$NODE_ADDR" -c 3 -i 0 | grep -q '3 sent, 3 received' || LOG=$LOG fail "tcp ping"

# One PingClient header written in two parts: two segments the dissector must reassemble.
exec 3<>"/dev/tcp/${NODE_ADDR%:*}/${NODE_ADDR##*:}"
frame_header 3 256 >"$TMP/hdr"
head -c 100 "$TMP/hdr" >&3
sleep 0.2
tail -c 156 "$TMP/hdr" >&3
timeout 10 head -c 256 <&3 >"$TMP/pong" || fail "no answer to the split PingClient"
exec 3<&-

alpn=()
"$BIN" ping --help 2>&1 | grep -q -- '--quic-alpn' && alpn=(--quic-alpn iggy.consensus.v1)
SSLKEYLOGFILE=$TMP/keys.log "$BIN" ping --quic "$qaddr" --pin "$pin" "${alpn[@]}" -c 3 -i 0 |
  grep -q '3 sent, 3 received' || LOG=$LOG fail "quic ping"
[ -s "$TMP/keys.log" ] || fail "SSLKEYLOGFILE was not written"
sleep 0.3
kill -INT "$DPID"; wait "$DPID" 2>/dev/null || true

decode() {
  tshark -X lua_script:"$LUA" -o "tls.keylog_file:$TMP/keys.log" -r "$CAP" -Y "$1" \
    -T fields -e vsrbus.command -e vsrbus.size 2>/dev/null
}
tcp=$(decode "vsrbus && tcp")
quic=$(decode "vsrbus && quic")
echo "tcp: $(echo "$tcp" | tr '\n' ' ')"
echo "quic: $(echo "$quic" | tr '\n' ' ')"
# Over TCP: 4 PingClient (3 pings + the split one) and 4 PongClient, each 256 bytes.
[ "$(echo "$tcp" | grep -c '^3	256$')" -eq 4 ] || fail "tcp PingClient frames: $tcp"
[ "$(echo "$tcp" | grep -c '^4	256$')" -eq 4 ] || fail "tcp PongClient frames: $tcp"
# Over QUIC, decrypted with the key log: 3 and 3.
[ "$(echo "$quic" | grep -c '^3	256$')" -eq 3 ] || fail "quic PingClient frames: $quic"
[ "$(echo "$quic" | grep -c '^4	256$')" -eq 3 ] || fail "quic PongClient frames: $quic"
# Without the key log nothing of QUIC decodes (the frames really were encrypted).
n=$(tshark -X lua_script:"$LUA" -r "$CAP" -Y "vsrbus && quic" 2>/dev/null | wc -l)
[ "$n" -eq 0 ] || fail "QUIC frames decoded without keys: $n"
echo "ok"
