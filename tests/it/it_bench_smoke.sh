#!/usr/bin/env bash
# `vsrbus bench` smoke test: one second of throughput per transport; the CSV row on stdout must
# have the 12 columns of bench/README.md, name system vsrbus and count frames (msgs_per_s > 0).
# VSRBUS_IO=uring on a machine without io_uring: bench exits 77 and so does this test.
source "$(dirname "$0")/lib.sh"

check_row() { # transport
  local t=$1 out rc row
  set +e
  out=$(timeout 60 "$BIN" bench --transport "$t" --mode tput --seconds 1 --quiet 2>"$TMP/err.$t")
  rc=$?
  set -e
  [ $rc -eq 77 ] && { echo "skip: $(tail -1 "$TMP/err.$t")"; exit 77; }
  [ $rc -eq 0 ] || LOG=$TMP/err.$t fail "$t: bench exited $rc"
  row=$(printf '%s\n' "$out" | grep -v '^system,' | tail -1)
  [ -n "$row" ] || LOG=$TMP/err.$t fail "$t: no CSV row"
  awk -F, -v t="$t" 'NF != 12 { print "fields: " NF; exit 1 }
    $1 != "vsrbus" { print "system: " $1; exit 1 }
    $2 != t || $3 != "tput" { print "transport/mode: " $2 "/" $3; exit 1 }
    !($6 + 0 > 0) || !($7 + 0 > 0) { print "no frames counted"; exit 1 }' <<<"$row" \
    >"$TMP/why" || fail "$t: bad row '$row': $(cat "$TMP/why")"
  echo "$t: $row"
}

check_row tcp
check_row quic
