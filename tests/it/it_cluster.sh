#!/usr/bin/env bash
# A three-process cluster: `vsrbus node` replicas 0 (primary), 1, 2 on loopback with a shared
# secret; clients (`vsrbus demo --connect`) commit requests. Kill a backup by PID: the remaining
# quorum keeps committing and the primary keeps redialing; restart it on its address: it is
# reconnected and receives Prepares again. Then the same for the other backup. The primary reads
# its settings from an INI file; a too-short secret is refused at start.
source "$(dirname "$0")/lib.sh"

set +e
"$BIN" node --tcp off --quic off --cluster c --replica 0 --replicas 127.0.0.1:0,127.0.0.1:1 \
  --secret-hex 0011 >"$TMP/short.log" 2>&1
rc=$?
set -e
[ "$rc" -eq 1 ] || LOG=$TMP/short.log fail "a 2-byte secret must refuse to start (exit $rc)"
grep -q 'shared secret of 32' "$TMP/short.log" || LOG=$TMP/short.log fail "no reason given"

head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$TMP/secret"
chmod 600 "$TMP/secret"
NAME=it-cluster
# The primary stays replica 0: this test kills backups only, and `demo --connect` knows replica 0's
# address alone; a view change on a loaded machine (a 1 s default) would strand the clients.
# View changes have their own tests (it.view_change, the simulator).
COMMON=(--cluster "$NAME" --secret-file "$TMP/secret" --reconnect-ms 200 --log info
  --primary-timeout-ms 600000)
declare -A PID LOGF RADDR
CADDR0=

# start_replica I REPLICAS: starts replica I; records its PID, log and bound replica address.
start_replica() {
  local i=$1 replicas=$2
  local log=$TMP/node$i.$RANDOM.log
  : >"$log" # exists before the background node opens it: the reads below never race it
  if [ "$i" = 0 ]; then
    # The primary reads its cluster settings from an INI file (keys as the long options).
    cat >"$TMP/node0.ini" <<INI
[cluster]
cluster = $NAME
replica = 0
replicas = $replicas
secret_file = $TMP/secret
reconnect_period_ms = 200
[client]
tcp = 127.0.0.1:0
quic = off
metrics = 127.0.0.1:0
INI
    "$BIN" node --config "$TMP/node0.ini" --log info >"$log" 2>&1 &
  else
    "$BIN" node --tcp 127.0.0.1:0 --quic off --replica "$i" --replicas "$replicas" "${COMMON[@]}" \
      >"$log" 2>&1 &
  fi
  PID[$i]=$!
  LOGF[$i]=$log
  PIDS+=("${PID[$i]}")
  for _ in $(seq 200); do
    RADDR[$i]=$(sed -n 's/.*replica plane tcp listening on \([0-9.:]*\).*/\1/p' "$log" | head -1)
    if [ -n "${RADDR[$i]}" ]; then
      [ "$i" = 0 ] && CADDR0=$(sed -n 's/.*client plane tcp listening on \([0-9.:]*\).*/\1/p' \
        "$log" | head -1)
      return 0
    fi
    if ! kill -0 "${PID[$i]}" 2>/dev/null; then
      grep -q "io_uring forced but unavailable" "$log" && { echo "skip: no io_uring"; exit 77; }
      LOG=$log fail "replica $i exited at start"
    fi
    sleep 0.05
  done
  LOG=$log fail "replica $i did not start listening"
}

# wait_log I PATTERN COUNT: waits (bounded) until replica I's log has COUNT lines matching.
wait_log() {
  local i=$1 pat=$2 want=$3 n=0
  for _ in $(seq 200); do
    n=$(grep -c -- "$pat" "${LOGF[$i]}" || true)
    [ "$n" -ge "$want" ] && return 0
    sleep 0.05
  done
  LOG=${LOGF[$i]} fail "replica $i: '$pat' seen $n times, want $want"
}

# commit ROUND: clients commit requests through the primary for 2 s.
commit() {
  local out=$TMP/demo.$1.out
  "$BIN" demo --connect "$CADDR0" --seconds 2 --clients 4 --size 128 >"$out" 2>&1 ||
    { cat "$out" >&2; LOG=${LOGF[0]} fail "round $1: clients could not commit"; }
  grep -q '^summary: [1-9][0-9]* requests committed' "$out" ||
    { cat "$out" >&2; fail "round $1: no summary"; }
  echo "round $1: $(grep '^summary' "$out")"
}

# Start 2, then 1, then 0: lower ids dial the higher ones, so they need their addresses.
start_replica 2 "127.0.0.1:1,127.0.0.1:1,127.0.0.1:0"
start_replica 1 "127.0.0.1:1,127.0.0.1:0,${RADDR[2]}"
start_replica 0 "127.0.0.1:0,${RADDR[1]},${RADDR[2]}"
ALL="${RADDR[0]},${RADDR[1]},${RADDR[2]}"
wait_log 0 "replica 1 authenticated" 1
wait_log 0 "replica 2 authenticated" 1
wait_log 1 "replica 2 authenticated" 1
commit 1

for victim in 2 1; do
  old_log=${LOGF[$victim]}
  kill -9 "${PID[$victim]}"
  wait "${PID[$victim]}" 2>/dev/null || true
  wait_log 0 "link to replica $victim lost" 1
  commit "without-$victim"                       # replica 0 + the other backup: a quorum
  wait_log 0 "replica $victim at ${RADDR[$victim]}: cannot connect" 1   # the sweep keeps trying
  before0=$(grep -c "replica $victim authenticated" "${LOGF[0]}")
  start_replica "$victim" "$ALL"
  [ "${RADDR[$victim]}" = "$(echo "$ALL" | cut -d, -f$((victim + 1)))" ] ||
    fail "replica $victim came back on ${RADDR[$victim]}"
  wait_log 0 "replica $victim authenticated" $((before0 + 1))
  if [ "$victim" = 2 ]; then wait_log 1 "replica 2 authenticated" 2; fi
  if [ "$victim" = 1 ]; then wait_log 1 "replica 2 authenticated" 1; fi
  commit "with-$victim-back"
  : "$old_log"
done

# The primary's metrics count its replica handshakes: 2 at start and one per restart.
MADDR=$(sed -n 's|.*metrics listening on http://\([0-9.:]*\)/metrics.*|\1|p' "${LOGF[0]}" | head -1)
[ -n "$MADDR" ] || LOG=${LOGF[0]} fail "no metrics listener logged"
curl -sS --max-time 10 "http://$MADDR/metrics" >"$TMP/metrics.txt" || fail "scrape failed"
if command -v promtool >/dev/null; then
  promtool check metrics <"$TMP/metrics.txt" || fail "promtool rejects the primary's metrics"
fi
ok=$(sed -n 's/^vsrbus_replica_handshakes_total{outcome="ok"} //p' "$TMP/metrics.txt")
[ "${ok:-0}" -ge 4 ] || fail "replica handshakes ok: '${ok}' (want >= 4)"
grep -q '^vsrbus_replicas_connected 2$' "$TMP/metrics.txt" || fail "replicas_connected != 2"
echo "metrics: $ok replica handshakes ok"

# Stop everything by PID; the restarted backups must have received and acknowledged Prepares.
for i in 0 1 2; do kill -TERM "${PID[$i]}"; done
for i in 0 1 2; do wait "${PID[$i]}" 2>/dev/null || true; done
for i in 1 2; do
  line=$(grep "replica $i: .* ops committed" "${LOGF[$i]}") || LOG=${LOGF[$i]} fail "no summary"
  echo "replica $i (restarted): $line"
  echo "$line" | grep -Eq ', [1-9][0-9]* prepares received' ||
    LOG=${LOGF[$i]} fail "restarted replica $i received no Prepare"
done
line=$(grep "replica 0: .* ops committed" "${LOGF[0]}")
echo "primary: $line"
echo "$line" | grep -Eq ' [1-9][0-9]* ops committed' || fail "primary committed nothing"
echo "PASS"
