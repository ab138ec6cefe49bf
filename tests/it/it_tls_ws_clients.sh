#!/usr/bin/env bash
# `vsrbus node --tls A --ws B --wss C` with independent clients: Python's ssl module (OpenSSL,
# another TLS stack) pinned to the logged SHA-256, TLS 1.3 only, 100 pings in one write;
# python3-websockets over WS and WSS (binary PingClient -> PongClient, a WebSocket Ping answered
# by a Pong, Close answered with the same code); `vsrbus ping` on all three; GET / serves the
# page. Then every bad input of the issue, each on its own connection, must close only that
# peer with its precise logged reason and its HTTP status or WebSocket close code, while a WS
# client connected at the start keeps working: malformed HTTP, headers over 8 KiB, a missing
# Sec-WebSocket-Key, a bad Sec-WebSocket-Version, POST /, GET /other, an unmasked frame (1002),
# a text frame (1003), a message with two frames (1009), a message over max_message_size (1009),
# 65 fragments (1009), TLS handshake garbage, a stalled TLS handshake and a stalled upgrade
# (closed at --handshake-grace-ms 500). At shutdown a connected WS client gets Close 1001.
source "$(dirname "$0")/lib.sh"
PY=/usr/bin/python3
$PY -c 'import websockets' 2>/dev/null || { echo "skip: python3-websockets missing (scripts/deps.sh)"; exit 77; }

LOG=$TMP/node.log
start_node "$LOG" --tls 127.0.0.1:0 --ws 127.0.0.1:0 --wss 127.0.0.1:0 \
  --handshake-grace-ms 500 --max-message-size 65536
for _ in $(seq 100); do
  TADDR=$(sed -n 's/.*client plane tls listening on \([0-9.:]*\).*/\1/p' "$LOG" | head -1)
  WADDR=$(sed -n 's/.*client plane ws listening on \([0-9.:]*\).*/\1/p' "$LOG" | head -1)
  SADDR=$(sed -n 's/.*client plane wss listening on \([0-9.:]*\).*/\1/p' "$LOG" | head -1)
  [ -n "$TADDR" ] && [ -n "$WADDR" ] && [ -n "$SADDR" ] && break
  sleep 0.05
done
[ -n "$SADDR" ] || fail "listeners not logged"
FP=$(sed -n 's/.*tls: listening.*SHA-256 \([0-9A-F:]*\).*/\1/p' "$LOG" | head -1)
FP2=$(sed -n 's/.*wss: listening.*SHA-256 \([0-9A-F:]*\).*/\1/p' "$LOG" | head -1)
[ -n "$FP" ] && [ "$FP" = "$FP2" ] || fail "TLS and WSS fingerprints differ or missing ($FP / $FP2)"
grep -q "VSR-TLS kernel TLS: " "$LOG" || fail "no line says which TLS path runs"

# vsrbus ping on each transport.
"$BIN" ping --tls "$TADDR" --pin "$FP" -c 3 -i 0 >"$TMP/p1" || fail "ping --tls: $(cat "$TMP/p1")"
"$BIN" ping --ws "$WADDR" -c 3 -i 0 >"$TMP/p2" || fail "ping --ws: $(cat "$TMP/p2")"
"$BIN" ping --wss "$SADDR" --pin "$FP" -c 3 -i 0 >"$TMP/p3" || fail "ping --wss: $(cat "$TMP/p3")"
bad=${FP:0:1}; [ "$bad" = A ] && bad=B || bad=A
if "$BIN" ping --tls "$TADDR" --pin "$bad${FP:1}" -c 1 >"$TMP/p4" 2>&1; then
  fail "ping --tls with a wrong pin succeeded"
fi

$PY - "$TADDR" "$WADDR" "$SADDR" "$FP" >"$TMP/py.out" 2>&1 <<'PY' || LOG=$LOG fail "python clients: $(cat "$TMP/py.out")"
import asyncio, hashlib, os, socket, ssl, struct, sys, time
import websockets

taddr, waddr, saddr, fp = sys.argv[1:5]
want_fp = bytes.fromhex(fp.replace(':', ''))

def hp(a):
    h, p = a.rsplit(':', 1)
    return h, int(p)

def ping_frame(seq, size=256):
    b = bytearray(size)
    struct.pack_into('<I', b, 48, size)
    b[60] = 3
    struct.pack_into('<Q', b, 128, seq)
    return bytes(b)

def check_pong(b, seq):
    assert len(b) == 256, len(b)
    assert b[60] == 4, b[60]
    assert struct.unpack_from('<Q', b, 128)[0] == seq

def recv_exact(s, n):
    out = b''
    while len(out) < n:
        d = s.recv(n - len(out))
        if not d:
            raise EOFError('closed after %d of %d bytes' % (len(out), n))
        out += d
    return out

def tls_ctx():
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE  # pinned below
    return c

# ---- TLS with OpenSSL ----
raw = socket.create_connection(hp(taddr), timeout=10)
s = tls_ctx().wrap_socket(raw, server_hostname='localhost')
assert s.version() == 'TLSv1.3', s.version()
assert hashlib.sha256(s.getpeercert(binary_form=True)).digest() == want_fp, 'pin mismatch'
s.sendall(b''.join(ping_frame(i) for i in range(1, 101)))  # 100 pings in one write
for i in range(1, 101):
    check_pong(recv_exact(s, 256), i)
print('tls: 100 pongs over OpenSSL', s.version(), s.cipher()[0])
# A client offering only TLS 1.2 is refused.
c12 = tls_ctx()
c12.maximum_version = ssl.TLSVersion.TLSv1_2
try:
    c12.wrap_socket(socket.create_connection(hp(taddr), timeout=10), server_hostname='localhost')
    raise SystemExit('TLS 1.2 accepted')
except ssl.SSLError as e:
    print('tls: TLS 1.2 refused:', e.reason)

# ---- WS / WSS with websockets ----
async def ws_session(url, **kw):
    async with websockets.connect(url, max_size=None, **kw) as ws:
        for i in range(1, 11):
            await ws.send(ping_frame(i))
            check_pong(await ws.recv(), i)
        pong = await ws.ping(b'hello')
        await asyncio.wait_for(pong, 5)
        await ws.close(code=4000, reason='bye')
        assert ws.close_code == 4000, ws.close_code
    print(url.split(':')[0], ': 10 pongs, Ping answered, Close answered with', ws.close_code)

sctx = tls_ctx()
asyncio.run(ws_session('ws://' + waddr + '/'))
asyncio.run(ws_session('wss://' + saddr + '/', ssl=sctx, server_hostname='localhost'))

# ---- the page ----
s = socket.create_connection(hp(waddr), timeout=10)
s.sendall(b'GET / HTTP/1.1\r\nHost: x\r\n\r\n')
page = b''
while True:
    d = s.recv(65536)
    if not d:
        break
    page += d
assert page.startswith(b'HTTP/1.1 200 OK'), page[:40]
assert b'new WebSocket(' in page and b'DataView' in page
print('page: %d bytes' % len(page))

# ---- bad input: one connection each; a good client stays connected throughout ----
good = socket.create_connection(hp(waddr), timeout=10)
key = 'dGhlIHNhbXBsZSBub25jZQ=='
good.sendall(('GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n'
              'Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n' % key).encode())
resp = b''
while b'\r\n\r\n' not in resp:
    resp += good.recv(1)
assert resp.startswith(b'HTTP/1.1 101'), resp

def frame(op, payload, fin=True, masked=True, mask=b'\x01\x02\x03\x04'):
    n = len(payload)
    b0 = (0x80 if fin else 0) | op
    m = 0x80 if masked else 0
    if n < 126:
        h = bytes([b0, m | n])
    elif n < 65536:
        h = bytes([b0, m | 126]) + n.to_bytes(2, 'big')
    else:
        h = bytes([b0, m | 127]) + n.to_bytes(8, 'big')
    if not masked:
        return h + payload
    return h + mask + bytes(c ^ mask[i % 4] for i, c in enumerate(payload))

def good_ping(seq):
    good.sendall(frame(2, ping_frame(seq)))
    hdr = recv_exact(good, 4)
    assert hdr[0] == 0x82 and hdr[1] == 126, hdr
    check_pong(recv_exact(good, 256), seq)

good_ping(1000)

def http_case(req, want_status):
    s = socket.create_connection(hp(waddr), timeout=10)
    s.sendall(req)
    data = b''
    while True:
        d = s.recv(65536)
        if not d:
            break
        data += d
    line = data.split(b'\r\n', 1)[0]
    assert line.startswith(b'HTTP/1.1 %d' % want_status), (req[:40], line)
    print('http %d:' % want_status, data.split(b'\r\n\r\n', 1)[1].strip().decode())

def upgrade(s):
    s.sendall(('GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n'
               'Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n' % key).encode())
    r = b''
    while b'\r\n\r\n' not in r:
        r += s.recv(1)
    assert r.startswith(b'HTTP/1.1 101'), r

def ws_case(payload_bytes, want_code):
    s = socket.create_connection(hp(waddr), timeout=10)
    upgrade(s)
    try:
        s.sendall(payload_bytes)
    except (BrokenPipeError, ConnectionResetError):
        pass
    data = b''
    while True:
        try:
            d = s.recv(65536)
        except ConnectionResetError:
            break
        if not d:
            break
        data += d
    # The Close frame: 0x88, length, code.
    i = data.find(b'\x88')
    assert i >= 0 and len(data) >= i + 4, data[:40]
    code = int.from_bytes(data[i + 2:i + 4], 'big')
    assert code == want_code, (code, want_code, data[i:i + 60])
    print('ws close %d: %s' % (code, data[i + 4:i + 2 + data[i + 1]].decode()))

http_case(b'BLAH / NONSENSE\r\n\r\n', 400)
http_case(b'GET / HTTP/1.1\r\nX-Pad: ' + b'a' * 9000 + b'\r\n\r\n', 431)
http_case(b'GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n'
          b'Sec-WebSocket-Version: 13\r\n\r\n', 400)
http_case(('GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n'
           'Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 8\r\n\r\n' % key).encode(), 426)
http_case(b'POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n', 405)
http_case(b'GET /other HTTP/1.1\r\n\r\n', 404)
ws_case(frame(2, ping_frame(1), masked=False), 1002)
ws_case(frame(1, b'hello'), 1003)
ws_case(frame(2, ping_frame(1) + ping_frame(2)), 1009)
ws_case(frame(2, ping_frame(1, 70000)), 1009)
ws_case(frame(2, b'x', fin=False) + b''.join(frame(0, b'x', fin=False) for _ in range(64)), 1009)

def closed_within(s, secs):
    s.settimeout(secs)
    try:
        while s.recv(4096):
            pass
        return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False

# TLS handshake garbage on the TLS listener.
s = socket.create_connection(hp(taddr), timeout=10)
s.sendall(b'GET / HTTP/1.1\r\nHost: x\r\n\r\n')
assert closed_within(s, 5), 'TLS garbage not closed'
# Stalls: a TLS handshake that never starts, an upgrade that never finishes.
t0 = time.monotonic()
s1 = socket.create_connection(hp(saddr), timeout=10)
s2 = socket.create_connection(hp(waddr), timeout=10)
s2.sendall(b'GET / HTTP/1.1\r\nHost: x\r\n')
assert closed_within(s1, 5) and closed_within(s2, 5), 'stalled handshake not closed'
print('stalls closed after %.2f s' % (time.monotonic() - t0))

good_ping(1001)  # the first client never noticed
print('good client still served')
PY
cat "$TMP/py.out"

# Each bad input was logged with its precise reason (and the peer), once.
for want in "malformed HTTP request" "request headers exceed 8192 bytes" \
  "missing Sec-WebSocket-Key" "Sec-WebSocket-Version \"8\" is not 13" "method POST is not GET" \
  "path \"/other\" is not \"/\"" "unmasked client frame" "text frame" \
  "more than one frame" "exceeds max_message_size 65536" "more than 64 fragments" \
  "handshake failed: handshake: An unexpected TLS packet" "TLS handshake not finished within handshake_grace (500 ms)" \
  "WebSocket upgrade not finished within handshake_grace (500 ms)" "serving the page"; do
  grep -q "127.0.0.1:[0-9]* [a-z]*: .*$want" "$LOG" || LOG=$LOG fail "no log line with '$want'"
done
kill -0 "$NODE_PID" || fail "node died"

# Shutdown: a connected WebSocket client gets Close 1001 (going away) before the FIN.
$PY - "$WADDR" "$TMP/ready" >"$TMP/bye.out" 2>&1 <<'PY' &
import asyncio, sys
import websockets
async def main():
    async with websockets.connect('ws://' + sys.argv[1] + '/') as ws:
        open(sys.argv[2], 'w').close()
        try:
            await asyncio.wait_for(ws.recv(), 20)
        except websockets.ConnectionClosed:
            pass
        print('close code', ws.close_code)
        assert ws.close_code == 1001, ws.close_code
asyncio.run(main())
PY
BYE=$!
for _ in $(seq 200); do [ -f "$TMP/ready" ] && break; sleep 0.05; done
kill -TERM "$NODE_PID"
wait "$BYE" || fail "shutdown close: $(cat "$TMP/bye.out")"
cat "$TMP/bye.out"
wait "$NODE_PID" || fail "node exit status $? after SIGTERM"
PIDS=() # the node is gone: cleanup must not signal a reused PID
echo "PASS"
