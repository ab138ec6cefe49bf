#!/usr/bin/env bash
# `vsrbus bench` smoke test: one second of throughput per transport; the CSV row on stdout must
# have the 12 columns of bench/README.md, name system vsrbus and count frames (msgs_per_s > 0),
# with no allocation per frame in vsrbus (allocs_per_msg 0) on TCP, TLS, WS and WSS. Then the
# node's memory per idle connection (300 connections, the idle row's rss_kib): TCP <= 8 KiB,
# TLS / WS / WSS <= 40 KiB (issue 16's bound; a memory figure, not a timing one).
# VSRBUS_IO=uring on a machine without io_uring: bench exits 77 and so does this test.
source "$(dirname "$0")/lib.sh"

# run_row TRANSPORT: one bench run; sets ROW and RC.
run_row() {
  local t=$1 out
  set +e
  out=$(timeout 60 "$BIN" bench --transport "$t" --mode tput --seconds 2 --quiet 2>"$TMP/err.$t")
  RC=$?
  set -e
  ROW=$(printf '%s\n' "$out" | grep -v '^system,' | tail -1)
}

check_row() { # transport
  local t=$1 try
  # The format is checked on every run; "frames counted" needs the window to see traffic, which a
  # starved machine (sanitizers, a loaded CI) can miss: up to three runs, never a timing bound.
  for try in 1 2 3; do
    run_row "$t"
    [ $RC -eq 77 ] && { echo "skip: $(tail -1 "$TMP/err.$t")"; exit 77; }
    [ $RC -eq 0 ] || LOG=$TMP/err.$t fail "$t: bench exited $RC"
    [ -n "$ROW" ] || LOG=$TMP/err.$t fail "$t: no CSV row"
    awk -F, -v t="$t" 'NF != 12 { print "fields: " NF; exit 1 }
      $1 != "vsrbus" { print "system: " $1; exit 1 }
      $2 != t || $3 != "tput" { print "transport/mode: " $2 "/" $3; exit 1 }' <<<"$ROW" \
      >"$TMP/why" || fail "$t: bad row '$ROW': $(cat "$TMP/why")"
    if awk -F, '$6 + 0 > 0 && $7 + 0 > 0 { ok = 1 } END { exit !ok }' <<<"$ROW"; then
      echo "$t: $ROW"
      if [ "$t" != quic ]; then
        awk -F, '$12 + 0 == 0 { ok = 1 } END { exit !ok }' <<<"$ROW" ||
          fail "$t: allocations per frame in steady state: $ROW"
      fi
      return 0
    fi
    echo "$t: run $try counted no frames: $ROW"
  done
  fail "$t: no frames counted in three runs"
}

check_row_idle() { # transport max_kib
  local t=$1 max=$2 out row
  set +e
  out=$(timeout 120 "$BIN" bench --transport "$t" --mode idle --conns 300 --quiet 2>"$TMP/err.idle.$t")
  RC=$?
  set -e
  [ $RC -eq 0 ] || LOG=$TMP/err.idle.$t fail "$t idle: bench exited $RC"
  row=$(printf '%s\n' "$out" | grep -v '^system,' | tail -1)
  awk -F, -v t="$t" -v max="$max" '$2 == t && $3 == "idle" && $11 != "" && $11 + 0 <= max { ok = 1 }
    END { exit !ok }' <<<"$row" || fail "$t idle: more than $max KiB per connection: '$row'"
  echo "$t idle: $row"
}

check_row tcp
check_row quic
check_row tls
check_row ws
check_row wss
# A sanitizer's allocator (shadow memory, quarantine) makes RSS say nothing about vsrbus.
if [[ "${VSRBUS_CFLAGS:-}" == *sanitize* ]]; then
  echo "idle memory: not checked under a sanitizer ($VSRBUS_CFLAGS)"
else
  check_row_idle tcp 8
  check_row_idle tls 40
  check_row_idle ws 40
  check_row_idle wss 40
fi
