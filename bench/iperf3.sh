#!/usr/bin/env bash
# The loopback's limit for large frames (issue 18): Debian's iperf3 moving 1 MiB writes over one
# TCP connection on 127.0.0.1, as one CSV row in the columns of bench/run.sh:
#   iperf3,tcp,tput,1048576,1,<writes/s>,<MB/s>,,,,,
# The server runs on its own port (from $$, so parallel runs do not collide), is started and
# stopped by PID and bounded by `timeout` like the client. MB = 10^6 bytes, as measured by the
# receiver (`end.sum_received`).
# Usage: bench/iperf3.sh [SECONDS (2)]
set -uo pipefail

DUR=${1:-2}
command -v iperf3 > /dev/null || { echo "iperf3.sh: iperf3 not installed (scripts/deps.sh)" >&2; exit 77; }
command -v jq > /dev/null || { echo "iperf3.sh: jq not installed (scripts/deps.sh)" >&2; exit 77; }
PORT=$((30000 + $$ % 20000))
tmp=$(mktemp -d "${TMPDIR:-/tmp}/vsrbus-iperf3.XXXXXX") || exit 1
spid=
cleanup() {
  [ -n "$spid" ] && kill "$spid" 2> /dev/null && wait "$spid" 2> /dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT

TMO=$(awk -v d="$DUR" 'BEGIN { printf "%d", d + 15 }')
# -1: the server exits after one test; timeout bounds it if the client never comes
timeout -k 2 "$TMO" iperf3 -s -1 -B 127.0.0.1 -p "$PORT" > "$tmp/server.log" 2>&1 &
spid=$!
for _ in $(seq 50); do # wait until it listens (at most 5 s)
  ss -Hltn "sport = :$PORT" 2> /dev/null | grep -q . && break
  sleep 0.1
done
if ! timeout -k 2 "$TMO" iperf3 -c 127.0.0.1 -p "$PORT" -l 1M -t "$DUR" -J > "$tmp/client.json" \
  2> "$tmp/client.err"; then
  echo "iperf3.sh: client failed:" >&2
  cat "$tmp/client.err" "$tmp/server.log" >&2
  exit 1
fi
jq -r '.end.sum_received | [.bytes, .seconds] | @tsv' "$tmp/client.json" |
  awk '$2 > 0 { printf "iperf3,tcp,tput,1048576,1,%.0f,%.1f,,,,,\n", $1 / 1048576 / $2, $1 / 1e6 / $2 }'
echo "iperf3.sh: $(iperf3 --version 2> /dev/null | head -1), port $PORT, ${DUR} s" >&2
