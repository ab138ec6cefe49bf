#!/usr/bin/env bash
# `vsrbus bench` smoke test: one second of throughput per transport; the CSV row on stdout must
# have the 12 columns of bench/README.md, name system vsrbus and count frames (msgs_per_s > 0).
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
      return 0
    fi
    echo "$t: run $try counted no frames: $ROW"
  done
  fail "$t: no frames counted in three runs"
}

check_row tcp
check_row quic
