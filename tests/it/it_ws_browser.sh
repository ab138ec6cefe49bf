#!/usr/bin/env bash
# The browser page (item 5 of issue 16): headless Chromium loads http://WS/?count=20&interval=0
# from `vsrbus node --ws`, and https://WSS/?count=20&interval=0 from --wss (self-signed
# certificate: --ignore-certificate-errors); the page's JavaScript opens a WebSocket to the same
# origin, sends PingClient frames built with DataView and counts the PongClients. The test
# reads the page's #pongs and #state through the DevTools protocol (python3-websockets) until
# they say 20 and "done", bounded by 60 s; the node must have served the page twice.
# Skipped (77) with a message only when Chromium is not installed.
source "$(dirname "$0")/lib.sh"
PY=/usr/bin/python3
CHROME=$(command -v chromium || command -v chromium-browser || true)
[ -n "$CHROME" ] || { echo "skip: chromium not installed (scripts/deps.sh installs it)"; exit 77; }
$PY -c 'import websockets' 2>/dev/null || { echo "skip: python3-websockets missing"; exit 77; }

LOG=$TMP/node.log
start_node "$LOG" --ws 127.0.0.1:0 --wss 127.0.0.1:0
for _ in $(seq 100); do
  WADDR=$(sed -n 's/.*client plane ws listening on \([0-9.:]*\).*/\1/p' "$LOG" | head -1)
  SADDR=$(sed -n 's/.*client plane wss listening on \([0-9.:]*\).*/\1/p' "$LOG" | head -1)
  [ -n "$WADDR" ] && [ -n "$SADDR" ] && break
  sleep 0.05
done
[ -n "$SADDR" ] || fail "ws / wss listeners not logged"

for url in "http://$WADDR/?count=20&interval=0" "https://$SADDR/?count=20&interval=0"; do
  : >"$TMP/chrome.err"
  "$CHROME" --headless=new --no-sandbox --disable-gpu --disable-dev-shm-usage \
    --no-first-run --user-data-dir="$TMP/profile" --ignore-certificate-errors \
    --remote-debugging-port=0 "$url" 2>"$TMP/chrome.err" &
  CPID=$!
  PIDS+=("$CPID")
  $PY - "$TMP/chrome.err" "$url" >"$TMP/cdp.out" 2>&1 <<'PY' || LOG=$LOG fail "$url: $(cat "$TMP/cdp.out")"
import asyncio, json, re, sys, time, urllib.request
import websockets

err_file, url = sys.argv[1], sys.argv[2]
deadline = time.monotonic() + 60
port = None
while port is None and time.monotonic() < deadline:
    m = re.search(r'DevTools listening on ws://127\.0\.0\.1:(\d+)/', open(err_file).read())
    if m:
        port = int(m.group(1))
    else:
        time.sleep(0.1)
assert port, 'chromium did not open its DevTools port'

def page_ws():
    while time.monotonic() < deadline:
        try:
            targets = json.load(urllib.request.urlopen('http://127.0.0.1:%d/json/list' % port))
        except OSError:
            targets = []
        for t in targets:
            if t.get('type') == 'page' and t.get('url', '').startswith(url.split('?')[0]):
                return t['webSocketDebuggerUrl']
        time.sleep(0.1)
    raise SystemExit('page target not found')

async def main():
    async with websockets.connect(page_ws(), max_size=None) as cdp:
        n = 0
        last = None
        while time.monotonic() < deadline:
            n += 1
            expr = ("[document.getElementById('pongs') && document.getElementById('pongs')"
                    ".textContent, document.getElementById('state') && "
                    "document.getElementById('state').textContent].join('|')")
            await cdp.send(json.dumps({'id': n, 'method': 'Runtime.evaluate',
                                       'params': {'expression': expr, 'returnByValue': True}}))
            while True:
                msg = json.loads(await cdp.recv())
                if msg.get('id') == n:
                    break
            last = msg.get('result', {}).get('result', {}).get('value')
            if last == '20|done':
                print(url, 'page: 20 pongs, state done')
                return
            await asyncio.sleep(0.1)
        raise SystemExit('page state after 60 s: %r' % last)

asyncio.run(main())
PY
  cat "$TMP/cdp.out"
  kill "$CPID" 2>/dev/null || true
  wait "$CPID" 2>/dev/null || true
done
[ "$(grep -c 'serving the page' "$LOG")" -ge 2 ] || LOG=$LOG fail "the page was not served twice"
kill -0 "$NODE_PID" || fail "node died"
echo "PASS"
