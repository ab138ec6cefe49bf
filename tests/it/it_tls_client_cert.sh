#!/usr/bin/env bash
# Certificates on the TLS / WSS listeners: `vsrbus node --cert/--key` (a certificate from
# `vsrbus cert`) and --tls-client-ca (clients must present a certificate it signed, a step
# beyond Iggy mainline). A client verifying the server with --ca (not a pin) and presenting the
# trusted client certificate is served over TLS (vsrbus ping) and WSS (python3-websockets with
# OpenSSL); a client without a certificate, one with an untrusted certificate (Python ssl), and
# a client verifying against the wrong CA are each refused, with the reason logged.
source "$(dirname "$0")/lib.sh"
PY=/usr/bin/python3
$PY -c 'import websockets' 2>/dev/null || { echo "skip: python3-websockets missing (scripts/deps.sh)"; exit 77; }
"$BIN" cert --out "$TMP/srv" --name localhost >/dev/null || fail "vsrbus cert srv"
for d in cli other; do
  "$BIN" cert --out "$TMP/$d" --name "$d" >/dev/null || fail "vsrbus cert $d"
done

LOG=$TMP/node.log
start_node "$LOG" --tls 127.0.0.1:0 --wss 127.0.0.1:0 --cert "$TMP/srv/cert.pem" \
  --key "$TMP/srv/key.pem" --tls-client-ca "$TMP/cli/cert.pem"
for _ in $(seq 100); do
  TADDR=$(sed -n 's/.*client plane tls listening on \([0-9.:]*\).*/\1/p' "$LOG" | head -1)
  SADDR=$(sed -n 's/.*client plane wss listening on \([0-9.:]*\).*/\1/p' "$LOG" | head -1)
  [ -n "$TADDR" ] && [ -n "$SADDR" ] && break
  sleep 0.05
done
[ -n "$SADDR" ] || fail "listeners not logged"
grep -q "clients must present a certificate signed by $TMP/cli/cert.pem" "$LOG" ||
  LOG=$LOG fail "the client-certificate rule is not logged"

"$BIN" ping --tls "$TADDR" --ca "$TMP/srv/cert.pem" --client-cert "$TMP/cli/cert.pem" \
  --client-key "$TMP/cli/key.pem" -c 3 -i 0 >"$TMP/p1" 2>&1 || LOG=$LOG fail "trusted client: $(cat "$TMP/p1")"
if "$BIN" ping --tls "$TADDR" --ca "$TMP/srv/cert.pem" -c 1 >"$TMP/p2" 2>&1; then
  fail "a client without a certificate was served"
fi
if "$BIN" ping --tls "$TADDR" --ca "$TMP/other/cert.pem" --client-cert "$TMP/cli/cert.pem" \
  --client-key "$TMP/cli/key.pem" -c 1 >"$TMP/p3" 2>&1; then
  fail "the server was trusted by the wrong CA"
fi

$PY - "$TADDR" "$SADDR" "$TMP" >"$TMP/py.out" 2>&1 <<'PY' || LOG=$LOG fail "python: $(cat "$TMP/py.out")"
import asyncio, socket, ssl, struct, sys
import websockets
taddr, saddr, tmp = sys.argv[1:4]

def ctx(cert=None):
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    c.load_verify_locations(tmp + '/srv/cert.pem')  # the server's own certificate as CA
    if cert:
        c.load_cert_chain(tmp + '/%s/cert.pem' % cert, tmp + '/%s/key.pem' % cert)
    return c

def ping(seq):
    b = bytearray(256)
    struct.pack_into('<I', b, 48, 256)
    b[60] = 3
    struct.pack_into('<Q', b, 128, seq)
    return bytes(b)

async def wss(cert):
    async with websockets.connect('wss://%s/' % saddr, ssl=ctx(cert),
                                  server_hostname='localhost') as ws:
        await ws.send(ping(7))
        r = await ws.recv()
        assert r[60] == 4 and struct.unpack_from('<Q', r, 128)[0] == 7
asyncio.run(wss('cli'))
print('wss with the trusted client certificate: served')

h, p = taddr.rsplit(':', 1)
s = ctx('other').wrap_socket(socket.create_connection((h, int(p)), timeout=10),
                             server_hostname='localhost')
try:
    s.sendall(ping(1))   # TLS 1.3: the server's verdict arrives after the client's Finished
    s.settimeout(5)
    d = s.recv(256)
    assert not d, 'an untrusted client certificate was served'
    print('untrusted client certificate refused: connection closed')
except (ssl.SSLError, ConnectionResetError) as e:
    print('untrusted client certificate refused:', type(e).__name__, e)
PY
cat "$TMP/py.out"
grep -q "tls: handshake failed: client certificate not trusted" "$LOG" ||
  LOG=$LOG fail "no 'client certificate not trusted' line"
grep -q "server certificate not trusted by $TMP/other/cert.pem" "$TMP/p3" ||
  LOG=$LOG fail "wrong-CA refusal not explained: $(cat "$TMP/p3")"
[ "$(grep -c 'tls: handshake failed' "$LOG")" -ge 2 ] || LOG=$LOG fail "refusals not logged"
echo "PASS"
