#!/usr/bin/env bash
# `vsrbus demo --netns`: each replica in a network namespace of its own, the clients in another,
# veth links to a bridge in a hub namespace. A short run commits requests, and afterwards no
# namespace of that run is left (names vsrdemo-PID-*), nor a node process. A run stopped with
# SIGTERM during its start-up, and one during its measurement, clean up the same way; without
# CAP_NET_ADMIN (setpriv to nobody) or without ip on the PATH it fails with one line. Root
# only (CAP_NET_ADMIN and `ip netns`): skipped otherwise, with the reason.
source "$(dirname "$0")/lib.sh"

[ "$(id -u)" -eq 0 ] || { echo "skip: --netns needs root (CAP_NET_ADMIN)"; exit 77; }
command -v ip >/dev/null || { echo "skip: no ip command (iproute2)"; exit 77; }
probe=vsrbus-it-probe-$$
ip netns add "$probe" 2>/dev/null || { echo "skip: ip netns add failed (no network namespaces)"; exit 77; }
ip netns del "$probe"

# left PID: how many namespaces of run PID are still there
left() { ip netns list | grep -c "^vsrdemo-$1-" || true; }

# ---- 0. without CAP_NET_ADMIN (or without ip): one clear line, exit 1, nothing made ----
if command -v setpriv >/dev/null; then
  set +e
  (cd / && setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all \
    "$BIN" demo --netns --seconds 1) >"$TMP/noroot.out" 2>&1
  rc=$?
  set -e
  [ $rc -eq 1 ] || LOG=$TMP/noroot.out fail "unprivileged demo --netns exited $rc, not 1"
  [ "$(wc -l <"$TMP/noroot.out")" -eq 1 ] &&
    grep -q '^vsrbus demo: --netns needs root (CAP_NET_ADMIN)' "$TMP/noroot.out" ||
    LOG=$TMP/noroot.out fail "unprivileged: not the one line"
fi
set +e
PATH=/nonexistent "$BIN" demo --netns --seconds 1 >"$TMP/noip.out" 2>&1
rc=$?
set -e
[ $rc -eq 1 ] && [ "$(wc -l <"$TMP/noip.out")" -eq 1 ] && grep -q "needs iproute2's ip" "$TMP/noip.out" ||
  LOG=$TMP/noip.out fail "without ip: not the one line (exit $rc)"
echo "ok: without CAP_NET_ADMIN or ip: one line, exit 1"

# ---- 1. a short run commits, nothing is left ----
out=$TMP/run.out
set +e
TMPDIR=$TMP timeout 120 "$BIN" demo --netns --seconds 2 --clients 8 --depth 8 --primary-timeout-ms 5000 \
  >"$out" 2>&1 &
tpid=$!
PIDS+=("$tpid")
wait "$tpid"
rc=$?
set -e
grep -q "io_uring forced but unavailable" "$TMP"/vsrbus-demo.*/node*.log 2>/dev/null &&
  { echo "skip: no io_uring"; exit 77; }
[ $rc -eq 0 ] || LOG=$out fail "demo --netns exited $rc"
pid=$(sed -n 's/^vsrbus demo: network namespaces vsrdemo-\([0-9]*\)-r0,.*/\1/p' "$out")
[ -n "$pid" ] || LOG=$out fail "no namespace line"
grep -q "veth MTU 1500" "$out" || LOG=$out fail "the namespace line does not name the MTU"
committed=$(sed -n 's/^summary: \([0-9]*\) requests committed.*/\1/p' "$out")
[ -n "$committed" ] && [ "$committed" -gt 0 ] || LOG=$out fail "no commits ('$committed')"
# the replicas really were apart: each reported its own address
grep -q '3 replicas in their namespaces' "$out" || LOG=$out fail "not the namespace topology"
[ "$(left "$pid")" -eq 0 ] || LOG=$out fail "namespaces of run $pid left: $(ip netns list | grep "vsrdemo-$pid-")"
! pgrep -f "$TMP/vsrbus-demo" >/dev/null || fail "a node of run $pid still runs"
echo "ok: run $pid committed $committed requests across namespaces; none left"

# ---- 2. SIGTERM during the start-up and during the measurement: cleaned up all the same ----
for delay in 0.2 2.5; do
  out=$TMP/term.$delay.out
  TMPDIR=$TMP "$BIN" demo --netns --seconds 30 --clients 4 --quiet >"$out" 2>&1 &
  dpid=$!
  PIDS+=("$dpid")
  sleep "$delay"
  kill -TERM "$dpid"
  for _ in $(seq 200); do kill -0 "$dpid" 2>/dev/null || break; sleep 0.05; done
  ! kill -0 "$dpid" 2>/dev/null || fail "demo $dpid still runs 10 s after SIGTERM"
  wait "$dpid" || true
  [ "$(left "$dpid")" -eq 0 ] ||
    LOG=$out fail "SIGTERM after $delay s: namespaces left: $(ip netns list | grep "vsrdemo-$dpid-")"
  ! pgrep -f "$TMP/vsrbus-demo" >/dev/null || fail "SIGTERM after $delay s: a node still runs"
  echo "ok: SIGTERM after $delay s: demo $dpid stopped, no namespace left"
done
