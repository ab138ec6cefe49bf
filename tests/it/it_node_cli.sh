#!/usr/bin/env bash
# `vsrbus node` and `vsrbus ping` as a user runs them: flags, exit codes (usage errors such as
# --replica without --replicas exit 2), one log line for a frame whose size field is 0xFFFFFFFF,
# other clients still served, and "connection refused" from a ping to a closed port.
source "$(dirname "$0")/lib.sh"

"$BIN" --version | grep -q '^vsrbus [0-9]' || fail "--version"
"$BIN" --help | grep -q 'node' || fail "--help"
# The help text is read once: `--help | grep -q` can fail under pipefail when grep stops
# reading early (SIGPIPE to the writer) now that the text is longer than a pipe buffer.
NODE_HELP=$("$BIN" node --help)
grep -q -- '--tcp ADDR' <<<"$NODE_HELP" || fail "node --help"
set +e
"$BIN" node --no-such-flag >/dev/null 2>&1; [ $? -eq 2 ] || fail "unknown flag must exit 2"
"$BIN" bogus >/dev/null 2>&1; [ $? -eq 2 ] || fail "unknown command must exit 2"
"$BIN" node --tcp 999.1.1.1:99999 >"$TMP/badaddr" 2>&1; [ $? -eq 1 ] || fail "bad address must exit 1"
grep -q "cannot parse address '999.1.1.1:99999': the port is not a number" "$TMP/badaddr" ||
  LOG=$TMP/badaddr fail "a bad address must say why"
# Replica settings that cannot work are usage errors (exit 2) before anything starts.
"$BIN" node --replica 5 >"$TMP/r5" 2>&1; rc=$?
[ $rc -eq 2 ] || LOG=$TMP/r5 fail "--replica without --replicas must exit 2 (got $rc)"
grep -q -- '--replica 5 needs --replicas' "$TMP/r5" || LOG=$TMP/r5 fail "no reason for --replica"
"$BIN" node --cluster c --replica 3 --replicas 127.0.0.1:1,127.0.0.1:2,127.0.0.1:3 >"$TMP/r3" 2>&1
rc=$?
[ $rc -eq 2 ] || LOG=$TMP/r3 fail "--replica >= the replica count must exit 2 (got $rc)"
grep -q -- '--replicas lists 3 addresses (indexes 0..2)' "$TMP/r3" || LOG=$TMP/r3 fail "no reason"
"$BIN" node --replicas 127.0.0.1:1,127.0.0.1:2 >"$TMP/nc" 2>&1; rc=$?
[ $rc -eq 2 ] || LOG=$TMP/nc fail "--replicas without --cluster must exit 2 (got $rc)"
"$BIN" node --replica-auth maybe >/dev/null 2>&1; [ $? -eq 2 ] || fail "--replica-auth maybe: exit 2"
"$BIN" node --tcp off --quic 127.0.0.1:0 --quic-max-bidi-streams 5000 >/dev/null 2>&1
[ $? -eq 1 ] || fail "--quic-max-bidi-streams beyond 1024 must exit 1"
"$BIN" node --memory-max 12Q >/dev/null 2>&1; [ $? -eq 2 ] || fail "a bad size must exit 2"
"$BIN" node --memory-max 8M --tcp 127.0.0.1:0 --quic off >/dev/null 2>&1
[ $? -eq 1 ] || fail "memory-max below 16M must exit 1"
set -e
grep -q -- '--memory-max SIZE' <<<"$NODE_HELP" || fail "node --help lists --memory-max"
grep -q -- '--replica-auth on|off   replica plane authentication, default on' <<<"$NODE_HELP" ||
  fail "node --help lacks --replica-auth and its default"

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

# Address failures each in their own words: in use (bind), does not parse.
set +e
"$BIN" node --tcp "$NODE_ADDR" --quic off >"$TMP/inuse" 2>&1; rc=$?
"$BIN" ping 127.0.0.1 -c 1 >"$TMP/noport" 2>&1; rc2=$?
set -e
[ $rc -eq 1 ] || LOG=$TMP/inuse fail "a second node on the same address must exit 1 (got $rc)"
grep -q 'cannot start: address already in use' "$TMP/inuse" ||
  LOG=$TMP/inuse fail "an address in use must be named as such"
[ $rc2 -eq 1 ] && grep -q 'address cannot be parsed' "$TMP/noport" ||
  LOG=$TMP/noport fail "ping to an address without a port must say it does not parse"

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
# ALPN policy and stream models from the command line: by default a client offering no ALPN
# (the default ping) or iggy.consensus.v1 is served, on either stream model; h3 is refused
# and the log line names it.
grep -q -- '--quic-alpn-required' <<<"$NODE_HELP" || fail "node --help lacks --quic-alpn-required"
grep -q -- '--quic-max-bidi-streams N' <<<"$NODE_HELP" || fail "node --help lacks --quic-max-bidi-streams"
grep -q -- '--tcp-keepalive-ms N .*default 15000\|planes, default 15000' <<<"$NODE_HELP" ||
  fail "node --help lacks --tcp-keepalive-ms and its default"
grep -q -- '--tcp-user-timeout-ms N' <<<"$NODE_HELP" || fail "node --help lacks --tcp-user-timeout-ms"
grep -q -- 'connection, default 30000' <<<"$NODE_HELP" || fail "node --help lacks the TCP_USER_TIMEOUT default"
grep -q -- '--reconnect-min-ms N' <<<"$NODE_HELP" || fail "node --help lacks --reconnect-min-ms"
"$BIN" ping --help | grep -q -- '--quic-streams' || fail "ping --help lacks --quic-streams"
"$BIN" ping --quic "$qaddr" --pin "$pin" -c 3 -i 0 --quic-streams long | grep -q '3 sent, 3 received' ||
  LOG=$QLOG fail "QUIC ping on one long-lived stream"
"$BIN" ping --quic "$qaddr" --pin "$pin" -c 2 -i 0 --quic-alpn iggy.consensus.v1 |
  grep -q '2 sent, 2 received' || LOG=$QLOG fail "QUIC ping offering iggy.consensus.v1"
set +e
"$BIN" ping --quic "$qaddr" --pin "$pin" -c 1 -i 0 --quic-alpn h3 >/dev/null 2>&1
[ $? -eq 1 ] || fail "ALPN h3 must be refused"
"$BIN" ping --quic "$qaddr" --pin "$pin" --quic-streams sideways >/dev/null 2>&1
[ $? -eq 2 ] || fail "a bad --quic-streams must exit 2"
set -e
grep -q 'client offered ALPN "h3"' "$QLOG" || LOG=$QLOG fail "no log line naming the offered ALPN"
kill -INT "$QPID"
wait "$QPID" || LOG=$QLOG fail "QUIC node did not exit cleanly"

# replica_auth = off from an INI file: the node warns at start that the plane is unauthenticated.
printf '[cluster]\ncluster = legacy-ini\nreplica = 1\nreplicas = 127.0.0.1:1,127.0.0.1:0\nreplica_auth = off\n' \
  >"$TMP/legacy.ini"
LLOG=$TMP/legacy.log
start_node "$LLOG" --config "$TMP/legacy.ini"
LPID=$NODE_PID
for _ in $(seq 100); do
  grep -q 'WARN .*VSR-AUTH replica plane on .* is UNAUTHENTICATED' "$LLOG" && break
  sleep 0.05
done
grep -q 'WARN .*VSR-AUTH replica plane on .* is UNAUTHENTICATED' "$LLOG" ||
  LOG=$LLOG fail "replica_auth = off must warn at start"
kill -INT "$LPID"
wait "$LPID" || LOG=$LLOG fail "legacy node did not exit cleanly"
# --quic-alpn-required: the seed's strict rule. No ALPN is refused; iggy.consensus.v1 is served.
RLOG=$TMP/quic-required.log
start_node "$RLOG" --quic 127.0.0.1:0 --quic-alpn-required
RPID=$NODE_PID
for _ in $(seq 100); do
  raddr=$(sed -n 's/.*client plane quic listening on \([0-9.:]*\).*/\1/p' "$RLOG" | head -1)
  [ -n "$raddr" ] && break
  sleep 0.05
done
rpin=$(sed -n 's/.*certificate SHA-256 \([0-9A-F:]*\).*/\1/p' "$RLOG" | head -1)
[ -n "$raddr" ] && [ -n "$rpin" ] || LOG=$RLOG fail "no QUIC listener or fingerprint logged"
set +e
"$BIN" ping --quic "$raddr" --pin "$rpin" -c 1 -i 0 >/dev/null 2>&1
[ $? -eq 1 ] || LOG=$RLOG fail "no ALPN must be refused with --quic-alpn-required"
set -e
grep -q 'client offered no ALPN' "$RLOG" || LOG=$RLOG fail "no log line for the refused client"
"$BIN" ping --quic "$raddr" --pin "$rpin" -c 2 -i 0 --quic-alpn iggy.consensus.v1 |
  grep -q '2 sent, 2 received' || LOG=$RLOG fail "iggy.consensus.v1 with --quic-alpn-required"
kill -INT "$RPID"
wait "$RPID" || LOG=$RLOG fail "strict QUIC node did not exit cleanly"
kill -INT "$TCP_PID"
wait "$TCP_PID" || LOG=$LOG fail "node did not exit cleanly on SIGINT"
grep -q 'stopped:' "$LOG" || LOG=$LOG fail "no shutdown summary"

# The node is gone: its port refuses connections, and ping says so in those words.
set +e
"$BIN" ping "$NODE_ADDR" -c 1 -i 0 >"$TMP/refused" 2>&1; rc=$?
set -e
[ $rc -eq 1 ] || LOG=$TMP/refused fail "ping to a closed port must exit 1 (got $rc)"
grep -q "vsrbus ping: $NODE_ADDR (tcp): connection refused" "$TMP/refused" ||
  LOG=$TMP/refused fail "ping to a closed port must say 'connection refused'"
echo "ok: node cli"
