#!/usr/bin/env bash
# The metrics endpoint of `vsrbus node --metrics`: promtool accepts what it serves; counters
# move by exactly the pings sent (TCP and QUIC); the QUIC gauges see a live connection; other
# paths get 404, other methods 405; a request of the size bound is answered 431 and closed; a
# request that never finishes is closed at the configured time bound; connections beyond
# --metrics-max-conns are closed at once. Each refusal is counted in the endpoint's own metric.
source "$(dirname "$0")/lib.sh"
command -v promtool >/dev/null || { echo "skip: promtool missing (scripts/deps.sh)"; exit 77; }
command -v curl >/dev/null || { echo "skip: curl missing"; exit 77; }

LOG=$TMP/node.log
start_node "$LOG" --quic 127.0.0.1:0 --metrics 127.0.0.1:0 --metrics-timeout-ms 1000 \
  --metrics-max-conns 2
for _ in $(seq 100); do
  MADDR=$(sed -n 's|.*metrics listening on http://\([0-9.:]*\)/metrics.*|\1|p' "$LOG" | head -1)
  QADDR=$(sed -n 's/.*client plane quic listening on \([0-9.:]*\).*/\1/p' "$LOG" | head -1)
  [ -n "$MADDR" ] && [ -n "$QADDR" ] && break
  sleep 0.05
done
[ -n "$MADDR" ] && [ -n "$QADDR" ] || fail "no metrics or QUIC listener logged"
URL=http://$MADDR/metrics

scrape() { curl -sS --max-time 10 "$URL" >"$TMP/m.txt" || LOG=$LOG fail "scrape failed"; }
# value NAME_WITH_LABELS: the sample's value in the last scrape (fails when absent).
value() {
  local v
  v=$(awk -v k="$1" '$1 == k { print $2 }' "$TMP/m.txt")
  [ -n "$v" ] || fail "metric $1 missing from: $(head -c 400 "$TMP/m.txt")"
  echo "$v"
}

scrape
promtool check metrics <"$TMP/m.txt" || fail "promtool rejects the metrics"
grep -q '^# TYPE vsrbus_frames_in_total counter$' "$TMP/m.txt" || fail "no TYPE line"
ctype=$(curl -sS --max-time 10 -o /dev/null -w '%{content_type}' "$URL")
[[ "$ctype" == "text/plain; version=0.0.4"* ]] || fail "content type '$ctype'"
tcp_in0=$(value 'vsrbus_frames_in_total{plane="client",transport="tcp"}')
tcp_out0=$(value 'vsrbus_frames_out_total{plane="client",transport="tcp"}')
tcp_bytes0=$(value 'vsrbus_in_bytes_total{plane="client",transport="tcp"}')
quic_in0=$(value 'vsrbus_frames_in_total{plane="client",transport="quic"}')
acc0=$(value 'vsrbus_clients_accepted_total')
qadm0=$(value 'vsrbus_quic_admitted_total')

# ping_ok N ARGS...: N pings answered (output kept for the failure message).
ping_ok() {
  local n=$1; shift
  "$BIN" ping "$@" -c "$n" -i 0 >"$TMP/ping.out" 2>&1 || true
  grep -q "$n sent, $n received" "$TMP/ping.out" || LOG=$TMP/ping.out fail "ping $*"
}
ping_ok 5 "$NODE_ADDR"
ping_ok 3 "$QADDR" --quic --insecure
scrape
promtool check metrics <"$TMP/m.txt" || fail "promtool rejects the metrics after pings"
[ "$(value 'vsrbus_frames_in_total{plane="client",transport="tcp"}')" -eq $((tcp_in0 + 5)) ] ||
  fail "tcp frames_in did not move by 5"
[ "$(value 'vsrbus_frames_out_total{plane="client",transport="tcp"}')" -eq $((tcp_out0 + 5)) ] ||
  fail "tcp frames_out did not move by 5"
[ "$(value 'vsrbus_in_bytes_total{plane="client",transport="tcp"}')" -eq $((tcp_bytes0 + 1280)) ] ||
  fail "tcp in_bytes did not move by 5 x 256"
[ "$(value 'vsrbus_frames_in_total{plane="client",transport="quic"}')" -eq $((quic_in0 + 3)) ] ||
  fail "quic frames_in did not move by 3"
[ "$(value 'vsrbus_clients_accepted_total')" -eq $((acc0 + 2)) ] || fail "clients_accepted"
[ "$(value 'vsrbus_quic_admitted_total')" -eq $((qadm0 + 1)) ] || fail "quic_admitted_total"
value 'vsrbus_io_backend_info{backend="'"$(sed -n 's/.*running (io \([a-z_]*\)).*/\1/p' "$LOG")"'"}' \
  >/dev/null

# A QUIC client that stays connected: the gauges aggregate its ngtcp2 connection statistics.
"$BIN" ping "$QADDR" --quic --insecure -c 15 -i 100 >"$TMP/qping.out" 2>&1 &
QPID=$!
PIDS+=("$QPID")
seen=0
for _ in $(seq 50); do
  scrape
  if [ "$(value vsrbus_quic_connections)" -ge 1 ] &&
     [ "$(value 'vsrbus_frames_in_total{plane="client",transport="quic"}')" -gt $((quic_in0 + 3)) ]
  then seen=1; break; fi
  sleep 0.1
done
[ "$seen" = 1 ] || fail "no live QUIC connection in the gauges"
[ "$(value 'vsrbus_quic_cwnd_bytes{agg="sum"}')" -gt 0 ] || fail "cwnd sum is 0"
awk '$1 == "vsrbus_quic_smoothed_rtt_seconds{agg=\"max\"}" { exit !($2 > 0) }' "$TMP/m.txt" ||
  fail "smoothed RTT max is 0 with a live connection"
promtool check metrics <"$TMP/m.txt" || fail "promtool rejects the metrics with QUIC live"
wait "$QPID" || LOG=$TMP/qping.out fail "long QUIC ping"

# Other paths and methods.
code=$(curl -sS --max-time 10 -o /dev/null -w '%{http_code}' "http://$MADDR/")
[ "$code" = 404 ] || fail "GET / answered $code"
code=$(curl -sS --max-time 10 -o /dev/null -w '%{http_code}' "http://$MADDR/metricsx")
[ "$code" = 404 ] || fail "GET /metricsx answered $code"
code=$(curl -sS --max-time 10 -o /dev/null -w '%{http_code}' "$URL?name=x")
[ "$code" = 200 ] || fail "GET /metrics?query answered $code"
code=$(curl -sS --max-time 10 -o /dev/null -w '%{http_code}' -X POST -d x "$URL")
[ "$code" = 405 ] || fail "POST answered $code"

# Oversize: 8192 bytes of one request that never ends its headers: 431, then closed.
python3 - "$MADDR" >"$TMP/big.out" <<'PY' || fail "oversize request: $(cat "$TMP/big.out")"
import socket, sys
host, port = sys.argv[1].rsplit(":", 1)
s = socket.create_connection((host, int(port)), timeout=10)
pre = b"GET /metrics HTTP/1.1\r\nX-Pad: "
req = pre + b"a" * (8192 - len(pre))
assert len(req) == 8192
s.sendall(req)
data = b""
while True:
    chunk = s.recv(4096)  # bounded by the 10 s socket timeout
    if not chunk:
        break
    data += chunk
print(data[:64])
sys.exit(0 if data.startswith(b"HTTP/1.1 431 ") else 1)
PY

# Slow: half a request line, then silence. Closed by the server at its 1 s bound (the 10 s
# client timeout only keeps the test bounded if it is not).
python3 - "$MADDR" >"$TMP/slow.out" <<'PY' || fail "slow request not closed: $(cat "$TMP/slow.out")"
import socket, sys
host, port = sys.argv[1].rsplit(":", 1)
s = socket.create_connection((host, int(port)), timeout=10)
s.sendall(b"GET /metr")
try:
    data = s.recv(4096)
except socket.timeout:
    print("still open after 10 s"); sys.exit(1)
print(repr(data))
sys.exit(0 if data == b"" else 1)
PY

# At most 2 scrapes at once: with two connections held open, a third is closed unanswered.
python3 - "$MADDR" >"$TMP/busy.out" <<'PY' || fail "third connection served: $(cat "$TMP/busy.out")"
import socket, sys
host, port = sys.argv[1].rsplit(":", 1)
held = [socket.create_connection((host, int(port)), timeout=10) for _ in range(2)]
s = socket.create_connection((host, int(port)), timeout=10)
try:
    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    data = s.recv(4096)
except (ConnectionResetError, BrokenPipeError):
    data = b""
print(repr(data[:64]))
sys.exit(0 if data == b"" else 1)
PY

scrape
promtool check metrics <"$TMP/m.txt" || fail "promtool rejects the final metrics"
[ "$(value 'vsrbus_metrics_refused_total{reason="not_found"}')" -eq 2 ] || fail "not_found count"
[ "$(value 'vsrbus_metrics_refused_total{reason="method"}')" -eq 1 ] || fail "method count"
[ "$(value 'vsrbus_metrics_refused_total{reason="oversize"}')" -eq 1 ] || fail "oversize count"
[ "$(value 'vsrbus_metrics_refused_total{reason="timeout"}')" -ge 1 ] || fail "timeout count"
[ "$(value 'vsrbus_metrics_refused_total{reason="busy"}')" -ge 1 ] || fail "busy count"
# The node still serves clients after all that.
ping_ok 1 "$NODE_ADDR"
kill -TERM "$NODE_PID"
wait "$NODE_PID" || LOG=$LOG fail "node exit status $?"
grep -q "stopped:" "$LOG" || LOG=$LOG fail "node did not stop cleanly"
echo "ok"
