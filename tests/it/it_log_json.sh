#!/usr/bin/env bash
# `vsrbus node --log-format json` (here the INI key log_format): every line the node writes during a run with several kinds
# of events (start, the SSLKEYLOGFILE warning, bad frames held back by the rate limit and their
# summary, TCP and QUIC pings, shutdown) is one JSON object that python's json and jq parse,
# with time, level, event, and peer and reason where the line has them.
source "$(dirname "$0")/lib.sh"
command -v jq >/dev/null || { echo "skip: jq missing (scripts/deps.sh)"; exit 77; }

LOG=$TMP/node.log
export SSLKEYLOGFILE=$TMP/keys.log
# The JSON format and the metrics endpoint come from the INI file (the keys of the flags).
printf '[bus]\nlog_format = json\nmetrics = 127.0.0.1:0\n' >"$TMP/node.ini"
start_node "$LOG" --quic 127.0.0.1:0 --config "$TMP/node.ini" --log-burst 2 \
  --log-interval-ms 60000
unset SSLKEYLOGFILE
for _ in $(seq 100); do
  QADDR=$(sed -n 's/.*client plane quic listening on \([0-9.:]*\).*/\1/p' "$LOG" | head -1)
  [ -n "$QADDR" ] && break
  sleep 0.05
done
[ -n "$QADDR" ] || LOG=$LOG fail "no QUIC listener logged"

# Five frames with an impossible size, each on its own connection: each is refused and closed;
# a burst of 2 lines, the other 3 counted in one summary line at shutdown (interval 60 s).
for _ in 1 2 3 4 5; do
  exec 3<>"/dev/tcp/${NODE_ADDR%:*}/${NODE_ADDR##*:}"
  frame_header 3 4294967295 >&3
  timeout 10 cat <&3 >/dev/null || fail "bad frame: connection not closed"
  exec 3<&-
done
"$BIN" ping "$NODE_ADDR" -c 2 -i 0 >"$TMP/ping.out" 2>&1 || true
grep -q '2 sent, 2 received' "$TMP/ping.out" || LOG=$TMP/ping.out fail "tcp ping"
"$BIN" ping "$QADDR" --quic --insecure -c 1 >"$TMP/qping.out" 2>&1 || true
grep -q '1 sent, 1 received' "$TMP/qping.out" || LOG=$TMP/qping.out fail "quic ping"
kill -TERM "$NODE_PID"
wait "$NODE_PID" || LOG=$LOG fail "node exit status"

python3 - "$LOG" <<'PY' || LOG=$LOG fail "JSON log check"
import json, re, sys
lines = open(sys.argv[1], encoding="utf-8").read().splitlines()
assert len(lines) >= 8, f"only {len(lines)} lines"
objs = []
for i, l in enumerate(lines):
    try:
        o = json.loads(l)
    except ValueError as e:
        sys.exit(f"line {i + 1} is not JSON ({e}): {l!r}")
    assert isinstance(o, dict), l
    for k in ("time", "level", "event", "msg"):
        assert k in o, f"no {k}: {l}"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", o["time"]), o["time"]
    assert o["level"] in ("error", "warn", "info", "debug"), l
    assert re.fullmatch(r"VSR-[A-Z0-9]+", o["event"]), l
    objs.append(o)
frames = [o for o in objs if o["event"] == "VSR-FRAME" and "suppressed" not in o]
held = sum(o["suppressed"] for o in objs if o["event"] == "VSR-FRAME" and "suppressed" in o)
assert frames, "no VSR-FRAME line"
assert len(frames) == 2 and held == 3, f"{len(frames)} lines + {held} suppressed, expected 2 + 3"
assert held >= 1, "the rate limit held nothing back (burst 2, five bad frames)"
for o in frames:
    assert o["level"] == "warn", o
    assert o["reason"] == "VSR_EFRAME_LARGE", o
    assert re.fullmatch(r"127\.0\.0\.1:\d+", o["peer"]), o
    assert o["msg"].startswith(o["peer"] + " "), o
keylog = [o for o in objs if o["event"] == "VSR-KEYLOG"]
assert len(keylog) == 1 and keylog[0]["level"] == "warn", keylog
node = [o["msg"] for o in objs if o["event"] == "VSR-NODE"]
assert any("running" in m for m in node) and "shutting down" in node, node
assert any(m.startswith("stopped:") for m in node), node
assert any(o["event"] == "VSR-LISTEN" and "metrics listening on http://127.0.0.1:" in o["msg"]
           for o in objs), "no metrics listener line"
print(f"{len(objs)} JSON lines; {len(frames)} VSR-FRAME + {held} suppressed")
PY
# A second parser agrees.
jq -e -s 'length > 0 and all(.[]; has("time") and has("event"))' "$LOG" >/dev/null ||
  fail "jq rejects the log"
# The QUIC connection's secrets were written where the warning said.
grep -q '^SERVER_TRAFFIC_SECRET_0 ' "$TMP/keys.log" || fail "no secrets in SSLKEYLOGFILE"
echo ok
