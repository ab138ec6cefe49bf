#!/usr/bin/env bash
# SSLKEYLOGFILE: a node started with it warns (VSR-KEYLOG, naming the file), and GnuTLS writes
# the secrets of each QUIC connection there (what Wireshark needs to decrypt a capture); a node
# started without it says nothing and writes nothing; a QUIC client (vsrbus ping) warns too.
source "$(dirname "$0")/lib.sh"

quic_addr() {
  local a
  for _ in $(seq 100); do
    a=$(sed -n 's/.*client plane quic listening on \([0-9.:]*\).*/\1/p' "$1" | head -1)
    [ -n "$a" ] && { echo "$a"; return 0; }
    sleep 0.05
  done
  LOG=$1 fail "no QUIC listener logged"
}
quic_ping() {
  "$BIN" ping "$1" --quic --insecure -c 1 >"$TMP/qping.out" 2>&1 || true
  grep -q '1 sent, 1 received' "$TMP/qping.out" || LOG=$TMP/qping.out fail "quic ping"
}

KEYS=$TMP/keys.log
LOG=$TMP/node.log
SSLKEYLOGFILE=$KEYS start_node "$LOG" --quic 127.0.0.1:0
QADDR=$(quic_addr "$LOG")
grep -q "WARN  VSR-KEYLOG SSLKEYLOGFILE is set.*$KEYS.*decrypt" "$LOG" ||
  LOG=$LOG fail "no VSR-KEYLOG warning"
[ "$(grep -c VSR-KEYLOG "$LOG")" -eq 1 ] || LOG=$LOG fail "the warning is not written once"
[ ! -s "$KEYS" ] || fail "secrets written before any connection"
quic_ping "$QADDR"
for label in CLIENT_HANDSHAKE_TRAFFIC_SECRET SERVER_HANDSHAKE_TRAFFIC_SECRET \
             CLIENT_TRAFFIC_SECRET_0 SERVER_TRAFFIC_SECRET_0; do
  [ "$(grep -c "^$label [0-9a-f]\{64\} [0-9a-f]\{64,\}$" "$KEYS")" -eq 1 ] ||
    fail "expected one $label line in $(cat "$KEYS")"
done
kill -TERM "$NODE_PID"
wait "$NODE_PID" || LOG=$LOG fail "node exit status"

LOG=$TMP/node2.log
env -u SSLKEYLOGFILE "$BIN" node --tcp 127.0.0.1:0 --quic 127.0.0.1:0 >"$LOG" 2>&1 &
NODE_PID=$!
PIDS+=("$NODE_PID")
QADDR=$(quic_addr "$LOG")
quic_ping "$QADDR"
kill -TERM "$NODE_PID"
wait "$NODE_PID" || LOG=$LOG fail "node exit status"
! grep -q VSR-KEYLOG "$LOG" || LOG=$LOG fail "warning without SSLKEYLOGFILE"
[ "$(grep -c '^SERVER_TRAFFIC_SECRET_0 ' "$KEYS")" -eq 1 ] || fail "second node wrote secrets"

# The client side (vsrbus ping, any vsr_client over QUIC) warns once too and writes its secrets.
LOG=$TMP/node3.log
start_node "$LOG" --quic 127.0.0.1:0
QADDR=$(quic_addr "$LOG")
SSLKEYLOGFILE=$TMP/ckeys.log "$BIN" ping "$QADDR" --quic --insecure -c 2 >"$TMP/cping.out" 2>&1 ||
  LOG=$TMP/cping.out fail "quic ping with SSLKEYLOGFILE"
[ "$(grep -c 'WARN  VSR-KEYLOG' "$TMP/cping.out")" -eq 1 ] ||
  LOG=$TMP/cping.out fail "the client did not warn once"
grep -q '^CLIENT_TRAFFIC_SECRET_0 ' "$TMP/ckeys.log" || fail "the client wrote no secrets"
echo ok
