#!/usr/bin/env bash
# Replica-plane TLS (--replica-tls, item 4 of issue 16): two replicas link over TLS 1.3 with ALPN
# iggy-replica and authenticate with handshake MACs bound to the TLS exporter (both logs say
# so), first with self-signed certificates (any certificate accepted: the MAC authenticates),
# then with --cert/--key/--ca. A plaintext ReplicaHello on the TLS replica port, a TLS client
# offering no ALPN (Python ssl), and a dialer whose --ca does not trust the acceptor are each
# refused with the reason logged; the node keeps serving.
source "$(dirname "$0")/lib.sh"
PY=/usr/bin/python3
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$TMP/secret"
chmod 600 "$TMP/secret"
"$BIN" cert --out "$TMP/c" --name localhost >/dev/null || fail "vsrbus cert"
"$BIN" cert --out "$TMP/other" --name other >/dev/null || fail "vsrbus cert other"

free_ports() {
  $PY -c 'import socket
ss=[socket.socket() for _ in range(2)]
[s.bind(("127.0.0.1",0)) for s in ss]
print(",".join("127.0.0.1:%d" % s.getsockname()[1] for s in ss))'
}

# run_pair LABEL EXTRA0 EXTRA1: starts replicas 0 and 1 with --replica-tls and the extras.
run_pair() {
  local label=$1 extra0=$2 extra1=$3
  REPLICAS=$(free_ports)
  R1=${REPLICAS#*,}
  L0=$TMP/$label.0.log
  L1=$TMP/$label.1.log
  : >"$L0"
  : >"$L1"
  local common=(--tcp 127.0.0.1:0 --quic off --cluster rt --replicas "$REPLICAS" --secret-file
    "$TMP/secret" --replica-tls --reconnect-ms 200 --handshake-grace-ms 500)
  # shellcheck disable=SC2086
  "$BIN" node "${common[@]}" --replica 1 $extra1 >"$L1" 2>&1 &
  P1=$!
  PIDS+=("$P1")
  # shellcheck disable=SC2086
  "$BIN" node "${common[@]}" --replica 0 $extra0 >"$L0" 2>&1 &
  P0=$!
  PIDS+=("$P0")
}

wait_line() { # FILE PATTERN
  for _ in $(seq 200); do
    grep -q "$2" "$1" && return 0
    sleep 0.05
  done
  return 1
}

stop_pair() {
  kill "$P0" "$P1" 2>/dev/null || true
  wait "$P0" "$P1" 2>/dev/null || true
}

# 1. Self-signed on both ends.
run_pair self "" ""
wait_line "$L1" "replica plane tls listening" || LOG=$L1 fail "replica 1: no TLS replica listener"
wait_line "$L0" "replica 1 authenticated (dialed; TLS 1.3, MACs bound to the TLS exporter)" ||
  LOG=$L0 fail "replica 0 did not authenticate replica 1 over TLS"
wait_line "$L1" "replica 0 authenticated (accepted; TLS 1.3, MACs bound to the TLS exporter)" ||
  LOG=$L1 fail "replica 1 did not authenticate replica 0 over TLS"

# A plaintext ReplicaHello and a TLS client without ALPN on replica 1's port.
$PY - "$R1" >"$TMP/py.out" 2>&1 <<'PY' || LOG=$L1 fail "python: $(cat "$TMP/py.out")"
import socket, ssl, struct, sys
h, p = sys.argv[1].rsplit(':', 1)
hello = bytearray(256)
struct.pack_into('<I', hello, 48, 256)
hello[60] = 14
s = socket.create_connection((h, int(p)), timeout=10)
s.sendall(bytes(hello))
s.settimeout(5)
try:
    while s.recv(4096):
        pass
except ConnectionResetError:
    pass
print('plaintext hello: closed')
c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
c.check_hostname = False
c.verify_mode = ssl.CERT_NONE
try:
    c.wrap_socket(socket.create_connection((h, int(p)), timeout=10), server_hostname='localhost')
    raise SystemExit('a TLS client without ALPN reached the replica handshake')
except ssl.SSLError as e:
    print('no ALPN: refused:', e.reason)
PY
cat "$TMP/py.out"
wait_line "$L1" "tls: handshake failed: handshake: An unexpected TLS packet" ||
  LOG=$L1 fail "plaintext Hello on the TLS port not logged"
wait_line "$L1" "tls: handshake failed: client offered no ALPN; ALPN iggy-replica is required" ||
  LOG=$L1 fail "missing ALPN not logged"
kill -0 "$P1" || fail "replica 1 died"
stop_pair

# 2. A certificate from vsrbus cert, checked against --ca on the dialer.
CERTS="--cert $TMP/c/cert.pem --key $TMP/c/key.pem --ca $TMP/c/cert.pem"
run_pair ca "$CERTS" "$CERTS"
wait_line "$L0" "replica 1 authenticated (dialed; TLS 1.3" || LOG=$L0 fail "no link with --ca"
stop_pair

# 3. The dialer does not trust the acceptor's certificate: no link, the reason logged.
run_pair wrongca "--ca $TMP/other/cert.pem" "--cert $TMP/c/cert.pem --key $TMP/c/key.pem"
wait_line "$L0" "server certificate not trusted by $TMP/other/cert.pem" ||
  LOG=$L0 fail "untrusted acceptor not logged"
grep -q "replica 1 authenticated" "$L0" && LOG=$L0 fail "linked to an untrusted acceptor"
stop_pair
echo "PASS"
