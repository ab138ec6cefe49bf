#!/usr/bin/env bash
# The attacks of issue 12, rerun and measured: for each row a fresh `vsrbus node` (or a 3-replica
# cluster) on 127.0.0.1 with kernel-chosen ports, the attack (build/vsrbus_attack) for
# ATTACK_SECONDS, legitimate clients measured during it, the node's peak RSS and its log rate.
# Writes results/latest.md and results/latest.csv (and prints the table). Always exits 0 once
# the table is written: an attack that "succeeds" is a result, not a failure.
#
# Environment: ATTACK_SECONDS (10), ATTACK_ROWS (all: "0 1 2 3 4 5 6 7"), NODE_ARGS (extra
# flags for every node), ATTACK_TUNE (1: pass short timeouts, if the node has those flags, so a
# 10 s attack can see them fire; 0: node defaults), ATTACK_IO (epoll|uring|auto, the node's and
# the clients' backend), BUILD (build dir, ./build), ATTACK_OUT (results dir), DRAIN_RUNS (3),
# ATTACK_KEEP=1 (keep the logs; their directory is printed), ATTACK_TRACE=1 (set -x).
set -uo pipefail
export LC_ALL=C
if [ "${ATTACK_TRACE:-0}" = 1 ]; then PS4='+ ${EPOCHREALTIME} '; set -x; fi

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${BUILD:-$ROOT/build}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
BIN=$BUILD/vsrbus
ATK=$BUILD/vsrbus_attack
SECS=${ATTACK_SECONDS:-10}
ROWS=${ATTACK_ROWS:-0 1 2 3 4 5 6 7}
OUT=${ATTACK_OUT:-$ROOT/bench/attack/results}
TUNE=${ATTACK_TUNE:-1}
DRAIN_RUNS=${DRAIN_RUNS:-3}
read -r -a EXTRA <<<"${NODE_ARGS:-}"
[ -n "${ATTACK_IO:-}" ] && export VSRBUS_IO=$ATTACK_IO

for b in "$BIN" "$ATK"; do
  [ -x "$b" ] || { echo "run.sh: $b missing: cmake --build $BUILD first (or make attack)" >&2; exit 1; }
done
case $SECS in '' | *[!0-9]*) echo "run.sh: ATTACK_SECONDS must be whole seconds" >&2; exit 1 ;; esac
[ "$SECS" -ge 4 ] || SECS=4

WORK=$(mktemp -d /tmp/vsrbus-attack.XXXXXX)
mkdir -p "$OUT"
# Kills and reaps this shell's background jobs that are still unreaped (a reaped PID is never
# signalled: it may belong to someone else by now).
reap_jobs() {
  local p
  for p in $(jobs -p); do kill -KILL "$p" 2>/dev/null || true; done
  for p in $(jobs -p); do wait "$p" 2>/dev/null || true; done
}
cleanup() {
  reap_jobs
  if [ "${ATTACK_KEEP:-0}" = 1 ]; then echo "logs kept in $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# The attacker holds up to ~1,000 sockets: as many descriptors as the hard limit allows.
hard=$(ulimit -Hn)
if [ "$hard" = unlimited ] || [ "$hard" -ge 65536 ]; then ulimit -n 65536; else ulimit -n "$hard"; fi

# ---- node flags: pass only those this build has -------------------------------------------
HELP=$("$BIN" node --help 2>&1 || true)
have_flag() { grep -q -- "--$1\b" <<<"$HELP"; }
TUNED=()
if [ "$TUNE" = 1 ]; then
  # Short bounds (if the node has them) so that a 10 s attack can observe them firing.
  for fv in "frame-timeout-ms 2000" "client-idle-timeout-ms 4000" "slow-peer-timeout-ms 2000" \
            "close-peer-timeout-ms 2000"; do
    set -- $fv
    have_flag "$1" && TUNED+=("--$1" "$2")
  done
fi
echo "node flags added: ${TUNED[*]:-(none)} ${EXTRA[*]:-}" >&2

# kv FILE KEY: the last KEY=value of FILE (bash only: process starts are slow on a busy box).
kv() {
  local k v r=
  [ -r "$1" ] || return 0
  while IFS='=' read -r k v; do [ "$k" = "$2" ] && r=$v; done <"$1"
  printf '%s' "$r"
}

# start_node NAME [--ulimit N] ARGS...: starts `vsrbus node ARGS TUNED NODE_ARGS`, log in
# $WORK/NAME.log; sets NODE_PID, TCP_ADDR, QUIC_ADDR, REPL_ADDR. Returns 1 if it did not come up.
start_node() {
  local name=$1 lim=; shift
  if [ "${1:-}" = --ulimit ]; then lim=$2; shift 2; fi
  local log=$WORK/$name.log
  if [ -n "$lim" ]; then
    bash -c 'ulimit -n "$1"; shift; exec "$@"' _ "$lim" "$BIN" node "$@" "${TUNED[@]}" \
      "${EXTRA[@]}" >"$log" 2>&1 &
  else
    "$BIN" node "$@" "${TUNED[@]}" "${EXTRA[@]}" >"$log" 2>&1 &
  fi
  NODE_PID=$!
  TCP_ADDR= QUIC_ADDR= REPL_ADDR=
  local want_quic=0 want_repl=0
  [[ " $* " == *" --quic 127."* ]] && want_quic=1
  [[ " $* " == *" --replicas "* ]] && want_repl=1
  local line re='(client plane tcp|client plane quic|replica plane tcp) listening on ([0-9.:]+)'
  for _ in $(seq 200); do
    while IFS= read -r line; do
      [[ $line =~ $re ]] || continue
      case ${BASH_REMATCH[1]} in
        "client plane tcp") TCP_ADDR=${TCP_ADDR:-${BASH_REMATCH[2]}} ;;
        "client plane quic") QUIC_ADDR=${QUIC_ADDR:-${BASH_REMATCH[2]}} ;;
        "replica plane tcp") REPL_ADDR=${REPL_ADDR:-${BASH_REMATCH[2]}} ;;
      esac
    done <"$log"
    if [ -n "$TCP_ADDR" ] && { [ $want_quic = 0 ] || [ -n "$QUIC_ADDR" ]; } &&
       { [ $want_repl = 0 ] || [ -n "$REPL_ADDR" ]; }; then
      return 0
    fi
    kill -0 "$NODE_PID" 2>/dev/null || break
    sleep 0.05
  done
  echo "run.sh: node $name did not start:" >&2
  sed 's/^/  /' "$log" | tail -5 >&2
  return 1
}

rss_kib() { # rss_kib PID VmRSS|VmHWM, in KiB
  local k v _
  while read -r k v _; do [ "$k" = "$2:" ] && { printf '%s' "$v"; return; }; done \
    2>/dev/null <"/proc/$1/status"
}

# rss_watch PID FILE: VmRSS every 100 ms; the maximum is kept in FILE (until the PID is gone).
rss_watch() {
  local pid=$1 f=$2 max=0 k v _
  while [ -r "/proc/$pid/status" ]; do
    v=
    while read -r k v _; do [ "$k" = VmRSS: ] && break; v=; done 2>/dev/null <"/proc/$pid/status"
    if [ -n "$v" ] && [ "$v" -gt "$max" ]; then max=$v; echo "$max" >"$f"; fi
    sleep 0.1
  done
}

# stop_node PID: SIGTERM, at most 10 s, then SIGKILL. Sets STOP_RC.
stop_node() {
  local pid=$1 t0; t0=$EPOCHREALTIME
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null && echo "run.sh: node $pid killed after 10 s" >&2
  wait "$pid" 2>/dev/null
  STOP_RC=$?
  echo "node $pid stopped in $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }') s, exit $STOP_RC" >&2
}

# Runs a program bounded in time (it has its own alarm() too).
bounded() { timeout -k 5 $((SECS + 60)) "$@"; }

# Measurement window over the nodes in NODES (PIDs) with logs in LOGS.
window_begin() {
  W_T0=$EPOCHREALTIME
  W_L0=0 W_B0=0 W_OFF=()
  for l in "${LOGS[@]}"; do
    local n; n=$(wc -l <"$l")
    W_OFF+=("$n")
    W_L0=$((W_L0 + n)); W_B0=$((W_B0 + $(wc -c <"$l")))
  done
  W_RSS0=0
  RSSF=()
  for p in "${NODES[@]}"; do
    local v; v=$(rss_kib "$p" VmRSS); [ -n "$v" ] && [ "$v" -gt "$W_RSS0" ] && W_RSS0=$v
    local f=$WORK/rss.$p; echo 0 >"$f"; RSSF+=("$f")
    rss_watch "$p" "$f" &
  done
}
window_end() {
  local t1 l1=0 b1=0 hwm=0 v
  t1=$EPOCHREALTIME
  for l in "${LOGS[@]}"; do l1=$((l1 + $(wc -l <"$l"))); b1=$((b1 + $(wc -c <"$l"))); done
  for p in "${NODES[@]}"; do
    v=$(rss_kib "$p" VmHWM); [ -n "$v" ] && [ "$v" -gt "$hwm" ] && hwm=$v
  done
  for f in "${RSSF[@]}"; do v=; read -r v <"$f"; [ -n "$v" ] && [ "$v" -gt "$hwm" ] && hwm=$v; done
  W_DUR=$(awk -v a="$W_T0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
  W_LINES=$((l1 - W_L0))
  W_LPS=$(awk -v n="$W_LINES" -v d="$W_DUR" 'BEGIN { printf "%.0f", (d > 0 ? n / d : 0) }')
  W_KIBPS=$(awk -v n="$((b1 - W_B0))" -v d="$W_DUR" 'BEGIN { printf "%.1f", (d > 0 ? n / d / 1024 : 0) }')
  W_RSS=$(awk -v k="$hwm" 'BEGIN { printf "%.0f", k / 1024 }')
  W_RSS0M=$(awk -v k="$W_RSS0" 'BEGIN { printf "%.0f", k / 1024 }')
  # The most frequent line shape of the window (times, numbers and addresses folded to N).
  local i=0
  W_TOP=$(for l in "${LOGS[@]}"; do tail -n +"$((W_OFF[i] + 1))" "$l"; i=$((i + 1)); done |
          awk '{ sub(/^[0-9:.]+ /, ""); gsub(/[0-9][0-9a-f.:]*/, "N"); gsub(/[|"]/, "");
                 if (++c[$0] > m) { m = c[$0]; t = $0 } }
               END { if (m) print m " x " substr(t, 1, 100) }')
}

# The node's last words: "N frames in, M out, R replies" (or "R replied" in later versions).
final_line() { grep -h 'vsrbus node: stopped:' "$@" 2>/dev/null | tail -1 | sed 's/.*stopped: //'; }
# replies_of LOG: the replies the node's final line counted (empty if there is none).
replies_of() {
  local line; line=$(final_line "$1")
  [[ $line =~ ([0-9]+)\ repli(es|ed) ]] && printf '%s' "${BASH_REMATCH[1]}"
}

CSV=$WORK/rows.csv
MD=$WORK/rows.md
: >"$CSV"
: >"$MD"
# emit ID ATTACK LEGIT_LOAD LEGIT_FILE ATTACK_CONNS ATTACK_CLOSED NOTES
emit() {
  local id=$1 attack=$2 load=$3 lf=$4 ac=$5 acl=$6 notes=$7
  local att ok pct p99 p99ok succ
  att=$(kv "$lf" legit_attempts); ok=$(kv "$lf" legit_ok); pct=$(kv "$lf" legit_success_pct)
  p99=$(kv "$lf" legit_p99_ms); p99ok=$(kv "$lf" legit_p99_ok_ms)
  if [ -z "$att" ]; then succ="n/a"; p99=${LEGIT_P99:-n/a}; pct=${LEGIT_PCT:-}; [ -n "$pct" ] && succ="$pct %"
  else succ="$pct % ($ok/$att)"; fi
  [ "$W_LINES" -gt 0 ] && [ -n "${W_TOP:-}" ] && notes="${notes:+$notes; }most frequent log line: $W_TOP"
  local p99s=$p99
  [ "$p99" != n/a ] && [ -n "$p99" ] && p99s="$p99 ms"
  [ -n "$p99ok" ] && [ "$p99ok" != "-1.00" ] && [ "${p99:0:1}" = ">" ] && p99s="$p99s (answered: $p99ok ms)"
  printf '%s,"%s","%s",%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,"%s"\n' "$id" "$attack" "$load" \
    "${att:-}" "${ok:-}" "${pct:-}" "${p99:-}" "${p99ok:-}" "$W_RSS" "$W_LINES" "$W_LPS" \
    "$W_KIBPS" "$ac" "$acl" "$notes" >>"$CSV"
  printf '| %s | %s | %s | %s | %s | %s MiB | %s (%s KiB/s) | %s | %s |\n' "$id" "$attack" "$load" \
    "$succ" "${p99s:-n/a}" "$W_RSS" "$W_LPS" "$W_KIBPS" "$acl / $ac" "$notes" >>"$MD"
  LEGIT_P99= LEGIT_PCT=
  echo "row $id done: legit $succ, p99 ${p99s:-n/a}, RSS $W_RSS MiB, $W_LPS log lines/s, closed $acl/$ac" >&2
}

# legit ARGS...: the measured clients, started after the attack has taken hold and stopped
# before it ends: they run SECS-2 seconds.
LSECS=$((SECS - 2))

single() { # single NAME [--ulimit N] ARGS: one node; sets NODES, LOGS
  start_node "$@" || return 1
  NODES=("$NODE_PID")
  LOGS=("$WORK/$1.log")
}

# ---- rows ------------------------------------------------------------------------------------

row0() {
  single r0 --tcp 127.0.0.1:0 --quic off || return
  window_begin
  bounded "$ATK" legit --addr "$TCP_ADDR" --conns 4 --interval-ms 5 --seconds 4 \
    >"$WORK/r0.legit" 2>>"$WORK/r0.err" &
  local l1=$!
  bounded "$ATK" legit --addr "$TCP_ADDR" --conns 1 --size $((1048576 - 256)) --interval-ms 20 \
    --seconds 4 >"$WORK/r0.legit1m" 2>>"$WORK/r0.err"
  wait $l1
  window_end
  stop_node "$NODE_PID"
  emit 0a "none (baseline)" "4 clients, 256 B PingClient every 5 ms" "$WORK/r0.legit" 0 0 ""
  emit 0b "none (baseline)" "1 client, 1 MiB Requests every 20 ms" "$WORK/r0.legit1m" 0 0 ""
}

row1() {
  single r1 --tcp 127.0.0.1:0 --quic off || return
  window_begin
  bounded "$ATK" drip --addr "$TCP_ADDR" --conns 500 --silent 500 --interval-ms 200 \
    --seconds "$SECS" >"$WORK/r1.atk" 2>>"$WORK/r1.err" &
  local a=$!
  sleep 1
  bounded "$ATK" legit --addr "$TCP_ADDR" --conns 4 --interval-ms 5 --seconds "$LSECS" \
    >"$WORK/r1.legit" 2>>"$WORK/r1.err"
  wait $a
  window_end
  stop_node "$NODE_PID"
  local fc; fc=$(kv "$WORK/r1.atk" first_close_ms)
  emit 1 "500 conns drip a header 1 B/200 ms + 500 silent, ${SECS} s" \
    "4 clients, 256 B PingClient every 5 ms" "$WORK/r1.legit" \
    "$(kv "$WORK/r1.atk" attack_conns)" "$(kv "$WORK/r1.atk" attack_closed)" \
    "dripping closed $(kv "$WORK/r1.atk" drip_closed), silent closed $(kv "$WORK/r1.atk" silent_closed)$([ "${fc:-0}" != 0 ] && echo ", first close after $fc ms")"
}

row2() { # $1: "" (2a/2b: header-only claims), --topup (2c/2d), --bodies (2e)
  local mode=$1 id=$2
  single "r$id" --tcp 127.0.0.1:0 --quic off || return
  window_begin
  bounded "$ATK" claim --addr "$TCP_ADDR" --conns 36 --size 67108864 $mode --interval-ms 20 \
    --seconds "$SECS" >"$WORK/r$id.atk" 2>>"$WORK/r$id.err" &
  local a=$!
  sleep 1
  local l4=
  if [ "$mode" != --bodies ]; then
    bounded "$ATK" legit --addr "$TCP_ADDR" --conns 1 --size $((4194304 - 256)) \
      --interval-ms 20 --seconds "$LSECS" >"$WORK/r$id.legit4m" 2>>"$WORK/r$id.err" &
    l4=$!
  fi
  bounded "$ATK" legit --addr "$TCP_ADDR" --conns 1 --size $((1048576 - 256)) --interval-ms 20 \
    --seconds "$LSECS" >"$WORK/r$id.legit1m" 2>>"$WORK/r$id.err"
  [ -n "$l4" ] && wait "$l4"
  wait $a
  window_end
  stop_node "$NODE_PID"
  local f=$WORK/r$id.atk ac acl hd mb pool
  ac=$(kv "$f" attack_conns); acl=$(kv "$f" attack_closed); hd=$(kv "$f" headers)
  mb=$(awk -v b="$(kv "$f" attack_bytes)" \
    'BEGIN { if (b < 1048576) printf "%.1f KiB", b / 1024; else printf "%.1f MiB", b / 1048576 }')
  pool=$(grep -c 'pool exhausted' "$WORK/r$id.log")
  local held="claims still open at the end: $(kv "$f" open_claims_mib) MiB"
  case $mode in
    "")
      emit "${id}" "36 conns send one header claiming 64 MiB, ${SECS} s" "1 client, 1 MiB Requests" \
        "$WORK/r$id.legit1m" "$ac" "$acl" "$mb sent in all; $held; 'pool exhausted' log lines: $pool"
      emit "${id}'" "(same run)" "1 client, 4 MiB Requests (at the same time)" "$WORK/r$id.legit4m" \
        "$ac" "$acl" "same attack" ;;
    --topup)
      emit "${id}" "as 2a, and each refused claim redials at half the size (down to 1 MiB), ${SECS} s" \
        "1 client, 1 MiB Requests" "$WORK/r$id.legit1m" "$ac" "$acl" \
        "$(kv "$f" redials) redials; $mb sent in all; $held; 'pool exhausted' log lines: $pool"
      emit "${id}'" "(same run)" "1 client, 4 MiB Requests (at the same time)" "$WORK/r$id.legit4m" \
        "$ac" "$acl" "same attack" ;;
    --bodies)
      emit "$id" "36 conns claim 64 MiB and send the bodies (all but the last byte), ${SECS} s" \
        "1 client, 1 MiB Requests" "$WORK/r$id.legit1m" "$ac" "$acl" \
        "$mb of bodies sent; RSS before the attack $W_RSS0M MiB; 'pool exhausted' log lines: $pool" ;;
  esac
}

row3() {
  local name=attack-cluster secret=$WORK/secret
  head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$secret"
  chmod 600 "$secret"
  local common=(--cluster "$name" --secret-file "$secret" --reconnect-ms 200 --quic off
                --tcp 127.0.0.1:0)
  local r2 r1 p2 p1 p0
  start_node r3n2 --replica 2 --replicas 127.0.0.1:1,127.0.0.1:1,127.0.0.1:0 "${common[@]}" || return
  p2=$NODE_PID r2=$REPL_ADDR
  start_node r3n1 --replica 1 --replicas "127.0.0.1:1,127.0.0.1:0,$r2" "${common[@]}" || return
  p1=$NODE_PID r1=$REPL_ADDR
  start_node r3n0 --replica 0 --replicas "127.0.0.1:0,$r1,$r2" "${common[@]}" || return
  p0=$NODE_PID
  local primary=$TCP_ADDR
  for _ in $(seq 100); do
    [ "$(grep -c 'authenticated' "$WORK/r3n0.log")" -ge 2 ] && break
    sleep 0.05
  done
  NODES=("$p0" "$p1" "$p2")
  LOGS=("$WORK/r3n0.log" "$WORK/r3n1.log" "$WORK/r3n2.log")
  # The cluster works before the attack: a short warm-up proves it (not measured).
  bounded "$ATK" legit --addr "$primary" --cluster "$name" --conns 1 --size 1024 \
    --interval-ms 10 --seconds 1 >"$WORK/r3.warm" 2>>"$WORK/r3.err"
  window_begin
  bounded "$ATK" claim --addr "$r1" --conns 36 --size 67108864 --topup --interval-ms 20 \
    --seconds "$SECS" >"$WORK/r3.atk1" 2>>"$WORK/r3.err" &
  local a1=$!
  bounded "$ATK" claim --addr "$r2" --conns 36 --size 67108864 --topup --interval-ms 20 \
    --seconds "$SECS" >"$WORK/r3.atk2" 2>>"$WORK/r3.err" &
  local a2=$!
  sleep 1
  bounded "$ATK" legit --addr "$primary" --cluster "$name" --conns 1 \
    --size $((2097152 - 256)) --interval-ms 20 --seconds "$LSECS" \
    >"$WORK/r3.legit" 2>>"$WORK/r3.err"
  wait $a1 $a2
  window_end
  local exh lost
  exh=$(cat "${LOGS[@]}" | grep -c 'pool exhausted')
  lost=$(grep -c 'link to replica .* lost' "$WORK/r3n0.log")
  stop_node "$p0"; stop_node "$p1"; stop_node "$p2"
  local ac=$(( $(kv "$WORK/r3.atk1" attack_conns) + $(kv "$WORK/r3.atk2" attack_conns) ))
  local acl=$(( $(kv "$WORK/r3.atk1" attack_closed) + $(kv "$WORK/r3.atk2" attack_closed) ))
  local warm; warm=$(kv "$WORK/r3.warm" legit_success_pct)
  local com; com=$(grep -h 'ops committed' "$WORK/r3n0.log" | sed 's/.*: \([0-9]*\) ops committed.*/\1/')
  emit 3 "36 conns per backup claim 64 MiB on its replica port (no handshake; refused claims redial at half size), ${SECS} s" \
    "1 client, 2 MiB Requests to the primary (2 MiB Prepares), committed" "$WORK/r3.legit" \
    "$ac" "$acl" "3 replicas; claims open at the end $(kv "$WORK/r3.atk1" open_claims_mib) + $(kv "$WORK/r3.atk2" open_claims_mib) MiB; warm-up before the attack ${warm:-?} %; 'pool exhausted' lines $exh; primary lost a link $lost times; primary committed ${com:-?} ops in all ($(kv "$WORK/r3.warm" legit_ok) of them in the warm-up); RSS and log = max / sum of the 3 nodes"
}

row4() {
  single r4 --tcp 127.0.0.1:0 --quic off || return
  window_begin
  bounded "$ATK" noread --addr "$TCP_ADDR" --conns 10 --size $((65536 + 256)) \
    --seconds "$SECS" >"$WORK/r4.atk" 2>>"$WORK/r4.err" &
  local a=$!
  sleep 1
  bounded "$ATK" legit --addr "$TCP_ADDR" --conns 4 --size 65536 --interval-ms 5 \
    --seconds "$LSECS" >"$WORK/r4.legit" 2>>"$WORK/r4.err"
  wait $a
  window_end
  stop_node "$NODE_PID"
  local fin; fin=$(final_line "$WORK/r4.log")
  emit 4 "10 conns send 64 KiB Requests and never read, ${SECS} s" \
    "4 clients, 64 KiB Requests every 5 ms" "$WORK/r4.legit" \
    "$(kv "$WORK/r4.atk" attack_conns)" "$(kv "$WORK/r4.atk" attack_closed)" \
    "attackers sent $(kv "$WORK/r4.atk" attack_frames) Requests; node's final line: ${fin:-none}"
}

row5() {
  single r5 --tcp 127.0.0.1:0 --quic 127.0.0.1:0 || return
  window_begin
  bounded "$ATK" quic --addr "$QUIC_ADDR" --burst 1100 --rate 1500 --sources 64 \
    --seconds "$SECS" >"$WORK/r5.atk" 2>>"$WORK/r5.err" &
  local a=$!
  sleep 1
  bounded "$ATK" legit --addr "$QUIC_ADDR" --transport quic --connect --conns 2 \
    --interval-ms 200 --timeout-ms 3000 --seconds "$LSECS" >"$WORK/r5.legit" 2>>"$WORK/r5.err"
  wait $a
  window_end
  stop_node "$NODE_PID"
  local hs retry
  hs=$(grep -c 'not done within' "$WORK/r5.log")
  retry=$(grep -ci 'retry' "$WORK/r5.log")
  emit 5 "1,100 real QUIC Initials never finished, then 1,500/s, ${SECS} s (64 source addresses)" \
    "2 clients: QUIC connect + 1 ping, every 200 ms (3 s timeout)" "$WORK/r5.legit" \
    "$(kv "$WORK/r5.atk" attack_initials)" "$hs" \
    "burst $(kv "$WORK/r5.atk" burst_initials) in $(kv "$WORK/r5.atk" burst_ms) ms, then $(kv "$WORK/r5.atk" flood_rate_per_s)/s; closed = half-opens the node timed out (log); log lines mentioning Retry: $retry"
}

row6() {
  local runs=() lost_total=0 sent_total=0 got_total=0 claimed_total=0 rcs=() ok=1
  NODES=() LOGS=()
  W_T0=$EPOCHREALTIME W_LINES=0 W_LPS=0 W_KIBPS=0 W_RSS=0
  local hwm=0 lines=0 t_total=0
  for i in $(seq "$DRAIN_RUNS"); do
    single "r6.$i" --tcp 127.0.0.1:0 --quic off || return
    window_begin
    bounded "$ATK" drain --addr "$TCP_ADDR" --size 262144 --depth 64 --read-pause-us 1000 --seconds "$SECS" \
      >"$WORK/r6.$i.cl" 2>>"$WORK/r6.err" &
    local c=$!
    sleep 1
    window_end
    stop_node "$NODE_PID"
    rcs+=("$STOP_RC")
    wait $c
    local claimed got sent
    claimed=$(replies_of "$WORK/r6.$i.log")
    got=$(kv "$WORK/r6.$i.cl" drain_replies); sent=$(kv "$WORK/r6.$i.cl" drain_sent)
    local lost=$(( ${claimed:-0} - ${got:-0} ))
    runs+=("$lost")
    lost_total=$((lost_total + lost)); sent_total=$((sent_total + ${sent:-0}))
    got_total=$((got_total + ${got:-0})); claimed_total=$((claimed_total + ${claimed:-0}))
    [ "$W_RSS" -gt "$hwm" ] && hwm=$W_RSS
    lines=$((lines + W_LINES))
    t_total=$(awk -v a="$t_total" -v b="$W_DUR" 'BEGIN { print a + b }')
    echo "drain run $i: sent $sent, node replied $claimed, client got $got, end $(kv "$WORK/r6.$i.cl" drain_end), exit $STOP_RC" >&2
  done
  W_RSS=$hwm W_LINES=$lines
  W_LPS=$(awk -v n="$lines" -v d="$t_total" 'BEGIN { printf "%.0f", (d > 0 ? n / d : 0) }')
  W_KIBPS="-"
  LEGIT_PCT=$(awk -v g="$got_total" -v c="$claimed_total" 'BEGIN { printf "%.1f", (c > 0 ? 100 * g / c : 0) }')
  LEGIT_P99=n/a
  emit 6 "SIGTERM while a client sends 256 KiB Requests (64 in flight; the client pauses 1 ms after each reply), $DRAIN_RUNS runs" \
    "the sending client: replies received / replies the node counted" /dev/null \
    "$DRAIN_RUNS" "$DRAIN_RUNS" \
    "replies lost (node counted - client got) per run: ${runs[*]}; node counted $claimed_total, client got $got_total, client sent $sent_total ($((sent_total - got_total)) never answered); node exit codes: ${rcs[*]}"
}

row7() { # 7a bad frames, 7b refused (max-clients), 7c replica-port strangers, 7d EMFILE
  local sub=$1 half=$(( SECS * 3 / 10 ))
  [ "$half" -ge 3 ] || half=3
  local lsecs=$((half - 1)) kind conns=8 addr
  case $sub in
    a) single r7a --tcp 127.0.0.1:0 --quic off || return; kind=badframe; addr=$TCP_ADDR ;;
    b) single r7b --tcp 127.0.0.1:0 --quic off --max-clients 16 || return
       kind=hold; conns=200; addr=$TCP_ADDR ;;
    c) local secret=$WORK/secret7
       head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$secret"
       chmod 600 "$secret"
       # Replica 1 of 2: it dials nobody (lower ids dial higher ones), strangers dial it.
       single r7c --tcp 127.0.0.1:0 --quic off --cluster attack7 --replica 1 \
         --replicas 127.0.0.1:1,127.0.0.1:0 --secret-file "$secret" || return
       kind=stranger; addr=$REPL_ADDR ;;
    d) single r7d --ulimit 64 --tcp 127.0.0.1:0 --quic off || return
       kind=hold; conns=200; addr=$TCP_ADDR ;;
  esac
  window_begin
  local l=
  if [ "$kind" = hold ]; then
    # The flood fills a cap (clients, descriptors): the measured clients connect first.
    bounded "$ATK" legit --addr "$TCP_ADDR" --conns 2 --interval-ms 10 --timeout-ms 1000 \
      --seconds "$lsecs" >"$WORK/r7$sub.legit" 2>>"$WORK/r7.err" &
    l=$!
    sleep 0.3
  fi
  bounded "$ATK" logflood --kind "$kind" --addr "$addr" --conns "$conns" --interval-ms 20 \
    --seconds "$half" >"$WORK/r7$sub.atk" 2>>"$WORK/r7.err" &
  local a=$!
  if [ -z "$l" ]; then
    sleep 0.5
    bounded "$ATK" legit --addr "$TCP_ADDR" --conns 2 --interval-ms 10 --timeout-ms 1000 \
      --seconds "$lsecs" >"$WORK/r7$sub.legit" 2>>"$WORK/r7.err"
  fi
  wait $a $l
  window_end
  stop_node "$NODE_PID"
  local what
  case $sub in
    a) what="bad frames: connect, one header with an undefined command, repeat (8 at a time)" ;;
    b) what="refused connections: node --max-clients 16, 200 conns held and redialed (measured clients connected first)" ;;
    c) what="strangers on the replica port: ReplicaHello with a wrong MAC, repeat (8 at a time)" ;;
    d) what="EMFILE: node under ulimit -n 64, 200 conns held and redialed (measured clients connected first)" ;;
  esac
  local ac; ac=$(kv "$WORK/r7$sub.atk" attack_conns)
  emit "7$sub" "$what, ${half} s" "2 clients, 256 B PingClient every 10 ms (1 s timeout)" \
    "$WORK/r7$sub.legit" "$ac" "$(kv "$WORK/r7$sub.atk" attack_closed)" \
    "$(awk -v l="$W_LINES" -v a="${ac:-0}" 'BEGIN { printf "%.2f", (a > 0 ? l / a : 0) }') log lines per attack connection"
}

# ---- run ---------------------------------------------------------------------------------------
T_START=$EPOCHREALTIME
for r in $ROWS; do
  t_row=$EPOCHREALTIME
  n_rows=$(wc -l <"$MD")
  case $r in
    0) row0 ;;
    1) row1 ;;
    2) row2 "" 2a; row2 --topup 2b; row2 --bodies 2c ;;
    3) row3 ;;
    4) row4 ;;
    5) row5 ;;
    6) row6 ;;
    7) row7 a; row7 b; row7 c; row7 d ;;
    *) echo "run.sh: no row $r (rows are 0 to 7)" >&2; continue ;;
  esac
  if [ "$(wc -l <"$MD")" = "$n_rows" ]; then
    # A node that would not start (or a script error): say so in the table.
    echo "| $r | (row failed: node did not start or the run broke; see the script's stderr) | | | | | | | |" >>"$MD"
    echo "$r,\"row failed\",,,,,,,,,,,,,\"see stderr\"" >>"$CSV"
  fi
  # Nothing of this row may outlive it: our own background jobs not yet reaped (nodes,
  # samplers, clients), by PID.
  reap_jobs
  echo "row $r: $(awk -v a="$t_row" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }') s" >&2
done
T_ALL=$(awk -v a="$T_START" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }')

COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
CODE=$(git -C "$ROOT" log -1 --format=%h -- src include tools 2>/dev/null || echo unknown)
BACKEND=$(grep -ho 'running (io [a-z_]*)' "$WORK"/*.log 2>/dev/null | head -1 | sed 's/running (io //; s/)//')
{
  echo "# Attack runs (issue 12)"
  echo
  echo "\`bench/attack/run.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'), commit $COMMIT (node code: last change to src/ include/ tools/ in $CODE), $(nproc) CPUs" \
       "(load average at the end $(cut -d' ' -f1-3 /proc/loadavg)), node io backend ${BACKEND:-?}," \
       "ATTACK_SECONDS=$SECS, whole run ${T_ALL} s."
  flags="${TUNED[*]:-} ${EXTRA[*]:-}"
  flags=$(echo $flags)
  if [ -n "$flags" ]; then echo "Node flags added to every node: \`$flags\`."
  else echo "Node flags added to every node: none (defaults)."; fi
  echo
  echo "Legit success = requests answered (or connects that completed and got a ping answered)"
  echo "within the timeout (2 s unless said) / attempts; p99 is over every attempt (a failed one"
  echo "counts as slower than any answer: \">2000 ms\" when more than 1 % failed). RSS peak = the"
  echo "node's VmHWM / largest VmRSS sample (every 100 ms). Log lines/s = node stderr lines"
  echo "written during the attack window / its length. Closed = attack connections the node"
  echo "closed or reset / attack connections opened."
  echo
  echo "| # | attack | legit load | legit success | legit p99 | RSS peak | log lines/s | attack conns closed | notes |"
  echo "|---|---|---|---|---|---|---|---|---|"
  cat "$MD"
} >"$WORK/latest.md"
{
  echo "row,attack,legit_load,legit_attempts,legit_ok,legit_success_pct,legit_p99_ms,legit_p99_answered_ms,rss_peak_mib,log_lines,log_lines_per_s,log_kib_per_s,attack_conns,attack_closed,notes"
  cat "$CSV"
} >"$WORK/latest.csv"
cp "$WORK/latest.md" "$OUT/latest.md"
cp "$WORK/latest.csv" "$OUT/latest.csv"
cat "$OUT/latest.md"
echo >&2
echo "wrote $OUT/latest.md and $OUT/latest.csv" >&2
exit 0
