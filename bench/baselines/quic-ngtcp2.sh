#!/usr/bin/env bash
# QUIC reference: Debian's ngtcp2 example server and client (gtlsserver / gtlsclient, HTTP/3 over
# QUIC with GnuTLS) move one 256 MiB sparse file over 127.0.0.1. Prints one CSV row in the
# `vsrbus bench` columns: MB/s is 268,435,456 B over the wall time of the whole client process
# (start, handshake, GET, transfer, close), median of RUNS timed runs after one untimed run that
# saves the file to a temp dir and checks its size; rss_kib is the server's peak RSS.
# Usage: quic-ngtcp2.sh [RUNS (3)] [--no-pmtud]   Needs ngtcp2-server, ngtcp2-client, gnutls-bin.
set -uo pipefail

RUNS=${1:-3}
SRV_OPT=${2:-}
LABEL=h3-get
[ "$SRV_OPT" = --no-pmtud ] && LABEL=h3-get-nopmtud
BYTES=$((256 << 20))
say() { echo "quic-ngtcp2: $*" >&2; }

for tool in gtlsserver gtlsclient certtool; do
  command -v "$tool" > /dev/null || { say "skipped: $tool not installed"; exit 77; }
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/vsrbus-quic.XXXXXX") || exit 1
spid=
cleanup() {
  if [ -n "$spid" ]; then kill "$spid" 2> /dev/null; wait "$spid" 2> /dev/null; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# Self-signed ECDSA certificate for 127.0.0.1, made fresh for this run.
printf 'cn = "localhost"\nexpiration_days = 2\ntls_www_server\nsigning_key\nip_address = "127.0.0.1"\n' \
  > "$tmp/cert.tmpl"
if ! certtool --generate-privkey --key-type=ecdsa --outfile "$tmp/key.pem" 2> /dev/null ||
  ! certtool --generate-self-signed --load-privkey "$tmp/key.pem" --template "$tmp/cert.tmpl" \
    --outfile "$tmp/cert.pem" > /dev/null 2>&1; then
  say "certtool failed"
  exit 1
fi
mkdir -p "$tmp/htdocs" "$tmp/dl"
truncate -s "$BYTES" "$tmp/htdocs/f256m" # sparse: reads as zeros, costs no disk

# A UDP port nobody listens on (the example server cannot take port 0).
port=
for _ in $(seq 20); do
  p=$((20000 + RANDOM % 20000))
  if [ -z "$(ss -Hlun "sport = :$p" 2> /dev/null)" ]; then port=$p; break; fi
done
[ -n "$port" ] || { say "no free UDP port found"; exit 1; }

# shellcheck disable=SC2086 # SRV_OPT is empty or one flag
gtlsserver -q $SRV_OPT -d "$tmp/htdocs" 127.0.0.1 "$port" "$tmp/key.pem" "$tmp/cert.pem" \
  > /dev/null 2> "$tmp/server.log" &
spid=$!
for _ in $(seq 50); do # wait until it listens, at most 5 s
  [ -n "$(ss -Hlun "sport = :$port" 2> /dev/null)" ] && break
  sleep 0.1
done
URL=https://127.0.0.1:$port/f256m

# Untimed check: the whole file arrives.
timeout 60 gtlsclient -q --exit-on-all-streams-close --download="$tmp/dl" 127.0.0.1 "$port" "$URL" \
  > /dev/null 2> "$tmp/client.log"
got=$(stat -c %s "$tmp/dl/f256m" 2> /dev/null || echo 0)
rm -f "$tmp/dl/f256m"
if [ "$got" != "$BYTES" ]; then
  say "check run received $got of $BYTES bytes"
  tail -3 "$tmp/client.log" >&2
  exit 1
fi

rates=()
for i in $(seq "$RUNS"); do
  t0=$(date +%s%N)
  if ! timeout 60 gtlsclient -q --no-quic-dump --no-http-dump --exit-on-all-streams-close \
    127.0.0.1 "$port" "$URL" > /dev/null 2>> "$tmp/client.log"; then
    say "timed run $i failed"
    exit 1
  fi
  t1=$(date +%s%N)
  rates+=("$(awk -v b="$BYTES" -v ns=$((t1 - t0)) 'BEGIN { printf "%.1f", b / (ns / 1e3) }')")
done
say "$LABEL MB/s per run: ${rates[*]}"
med=$(printf '%s\n' "${rates[@]}" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
hwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$spid/status" 2> /dev/null)
echo "ngtcp2-gtls,quic,$LABEL,$BYTES,1,,$med,,,,$hwm,"
