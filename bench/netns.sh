#!/usr/bin/env bash
# TCP and QUIC on equal terms over the MTU users actually have (issue 18): two network
# namespaces joined by a veth pair with MTU 1500, the node in one, the load in the other.
# Rows (CSV columns of bench/run.sh) with the link in the transport column:
#   ideal,tcp-veth1500,tput,...   vsrbus,tcp-veth1500,tput,...   vsrbus,quic-veth1500,tput,...
# for 16 KiB and 1 MiB frames over one connection. Needs root (`ip netns`); otherwise exits 77
# with one line saying why. The namespaces and the veth pair are named after this run's PID
# and deleted on exit; their addresses (10.99.0.1/24, 10.99.0.2/24) exist only inside them.
# Env: DUR (s per case, 2), BUILD (cmake dir, build), SIZES ("16384 1048576"), MTU (1500).
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 1
DUR=${DUR:-2}
BUILD=${BUILD:-build}
SIZES=${SIZES:-16384 1048576}
MTU=${MTU:-1500}
VSRBUS=$BUILD/vsrbus
IDEAL=bench/build/ideal
LINK=veth$MTU
A=vsrbus-a-$$ # the node's namespace
B=vsrbus-b-$$ # the load's namespace
VA=vsra$$     # interface names: at most 15 characters
VB=vsrb$$
ADDR_A=10.99.0.1
ADDR_B=10.99.0.2

skip() { echo "netns.sh: skipped: $*" >&2; exit 77; }
[ "$(id -u)" -eq 0 ] || skip "needs root for ip netns (run make bench as root)"
command -v ip > /dev/null || skip "no ip command (iproute2)"

cleanup() {
  ip netns del "$A" 2> /dev/null # deleting a namespace deletes its end of the veth pair
  ip netns del "$B" 2> /dev/null
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ip netns add "$A" 2> /dev/null || skip "ip netns add failed (no network namespaces here?)"
ip netns add "$B" || skip "ip netns add failed"
if ! ip link add "$VA" netns "$A" mtu "$MTU" type veth peer name "$VB" netns "$B" mtu "$MTU" ||
  ! ip -n "$A" addr add "$ADDR_A/24" dev "$VA" || ! ip -n "$B" addr add "$ADDR_B/24" dev "$VB" ||
  ! ip -n "$A" link set "$VA" up || ! ip -n "$B" link set "$VB" up ||
  ! ip -n "$A" link set lo up || ! ip -n "$B" link set lo up; then
  skip "could not set up the veth pair"
fi
# the link is up when B reaches A (a few ms; at most 5 s)
for _ in $(seq 50); do
  ip netns exec "$B" ping -c1 -W1 "$ADDR_A" > /dev/null 2>&1 && break
  sleep 0.1
done
echo "netns.sh: $A ($ADDR_A) <-> $B ($ADDR_B), $LINK: $(ip -n "$A" -o link show "$VA" | grep -o 'mtu [0-9]*')" >&2

if [ ! -x "$IDEAL" ]; then
  mkdir -p bench/build
  cc -std=gnu11 -O2 -Wall -Wextra -o "$IDEAL" bench/baselines/ideal.c bench/baselines/count_alloc.c \
    -lpthread || echo "netns.sh: ideal baseline did not build" >&2
fi

TT=$(awk -v d="$DUR" 'BEGIN { printf "%d", d + 20 }')
failed=0
# runs one case in B; its rows get transport column $1
run() {
  local tr=$1
  shift
  local rows
  rows=$(ip netns exec "$B" timeout -k 5 "$TT" "$@")
  local rc=$?
  rows=$(printf '%s\n' "$rows" | awk -F, -v OFS=, -v t="$tr" 'NF == 12 && $1 != "system" { $2 = t; print }')
  if [ $rc -ne 0 ] || [ -z "$rows" ]; then
    echo "netns.sh: FAILED (exit $rc): $*" >&2
    failed=$((failed + 1))
  fi
  [ -n "$rows" ] && printf '%s\n' "$rows"
}
for s in $SIZES; do
  [ -x "$IDEAL" ] && run "tcp-$LINK" "$IDEAL" --mode tput --size "$s" --conns 1 --seconds "$DUR" \
    --netns "$A" --addr "$ADDR_A"
  for t in tcp quic; do
    run "$t-$LINK" "$VSRBUS" bench --transport "$t" --mode tput --size "$s" --conns 1 \
      --seconds "$DUR" --node-netns "$A" --node-addr "$ADDR_A" --quiet
  done
done
[ $failed -eq 0 ]
