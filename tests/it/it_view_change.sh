#!/usr/bin/env bash
# The demo cluster (issue 15) survives the death of its primary and the restart of a backup:
#  1. `vsrbus demo --kill-primary-after 2`: replica 0 is killed (SIGKILL) under load; the backups
#     elect replica 1 (view 1), the clients follow it and commit again.
#  2. `--kill 2@1 --restart 2@2`: replica 2 dies, comes back with an empty memory, recovers
#     (RequestStartView / StartView, then repair or state transfer) and commits the ops that
#     follow, in agreement with the others: it caught up.
# Every node writes its committed ops (--dump-commits) and the demo every Reply its clients got.
# Checked on the replicas alive at the end: every acknowledged request is committed exactly once
# (the final primary holds all of them; a backup may only lack the last ops, not yet told
# committed when the run stopped; a replica that took a state transfer lacks the ops before it),
# no request is committed twice, op numbers have no gaps, and the replicas agree on every op they
# both committed. Outcomes only: the runs give the cluster
# many seconds to recover and assert what happened, never how fast.
source "$(dirname "$0")/lib.sh"

# run NAME ARGS...: a demo run with the dumps; sets OUT and DIR.
run() {
  local name=$1 rc
  shift
  OUT=$TMP/$name.out
  set +e
  TMPDIR=$TMP timeout 150 "$BIN" demo --clients 4 --depth 2 --size 64 --dump-commits \
    --primary-timeout-ms 1000 "$@" \
    >"$OUT" 2>&1
  rc=$?
  set -e
  grep -q "io_uring forced but unavailable" "$TMP"/vsrbus-demo.*/node*.log 2>/dev/null &&
    { echo "skip: no io_uring"; exit 77; }
  [ $rc -eq 0 ] || LOG=$OUT fail "$name: demo exited $rc"
  DIR=$(sed -n 's/^logs and secret kept in \(.*\)$/\1/p' "$OUT")
  [ -d "$DIR" ] || LOG=$OUT fail "$name: no log directory"
  grep '^sessions:\|^failover:\|killed\|restarted\|view [0-9]*:' "$OUT" | sed "s/^/$name: /"
}

# Dump lines: "op client request operation index" (index: the request's place in its op's
# batch, 0 for the first or only one).
# no_dups_no_gaps FILE: no (client, request) committed twice (Registers aside), ops contiguous
# (a "# state transfer: ops up to X" line: the replica continued from X + 1), a batch's
# requests numbered 0, 1, 2, ... within their op.
no_dups_no_gaps() {
  awk '$1 == "#" { prev = $7 + 0; idx = -1; jumped = 1; next }
       $4 != 1 { k = $2 " " $3; if (k in seen) { print "committed twice: " k; bad = 1 } seen[k] = 1 }
       $5 > 0 && ($1 != prev || $5 != idx + 1) { print "batch order broken at op " $1; bad = 1 }
       $5 == 0 && (NR > 1 || jumped) && $1 != prev + 1 { print "gap after op " prev; bad = 1 }
       { prev = $1; idx = $5 } END { exit bad }' "$1" || fail "$1: duplicates or gaps"
}

# agree A B: requests committed by both at an op (and place in it) carry the same (client,
# request, operation).
agree() {
  awk '$1 == "#" { next }
       FNR == NR { a[$1 "." $5] = $2 " " $3 " " $4; next }
       (($1 "." $5) in a) && a[$1 "." $5] != $2 " " $3 " " $4 { print "op " $1 "." $5 " differs"; bad = 1; exit }
       (($1 "." $5) in a) { n++ } END { if (!bad && n == 0) { print "no op in common"; bad = 1 } exit bad }' \
    "$1" "$2" || fail "$1 and $2 disagree"
}

# all_acked FILES...: every acknowledged request is committed in some FILE, and in each FILE
# unless its op lies before a state transfer of that replica (taken as state, not replayed) or
# past its last op (the tail it was not yet told committed when the run stopped).
all_acked() {
  awk 'FILENAME == ARGV[1] { ack[$1 " " $2] = 1; next }
       FNR == 1 { nf++ }
       $1 == "#" { jump[nf] = $7 + 0; next }
       { op[$2 " " $3] = $1; have[nf, $2 " " $3] = 1; last[nf] = $1 }
       END { for (k in ack) {
               if (!(k in op)) { print "acknowledged, committed nowhere: " k; exit 1 }
               for (f = 1; f <= nf; f++)
                 if (!((f, k) in have) && op[k] > jump[f] && op[k] <= last[f]) {
                   print ARGV[f + 1] ": acknowledged but not committed: " k; exit 1 } } }' \
    "$DIR/acks.txt" "$@" || fail "an acknowledged request is missing"
}

# ---- 1. kill the primary under load ----
# (Whichever replica is primary at 2 s: on a loaded machine a slow second may have moved it.)
run kill-primary --seconds 9 --kill-primary-after 2
killed=$(sed -n 's/^  killed replica \([0-9]\) (the primary.*/\1/p' "$OUT")
[ -n "$killed" ] || LOG=$OUT fail "the primary was not killed"
live=$(for r in 0 1 2; do [ "$r" = "$killed" ] || printf '%s ' "$r"; done)
sline=$(grep '^sessions:' "$OUT")
primary=$(echo "$sline" | sed -n 's/.*(view \([0-9]*\), primary \([0-9]*\)).*/\2/p')
[ -n "$primary" ] && [ "$primary" != "$killed" ] ||
  LOG=$OUT fail "no view change seen by the clients (primary '$primary', killed $killed)"
grep -q '^  first commit .* after the kill' "$OUT" || LOG=$OUT fail "no commit after the kill"
grep -q 'VSR-VIEW replica '"$primary"': primary of view' "$DIR/node$primary.log" ||
  LOG=$DIR/node$primary.log fail "replica $primary never became primary"
set -- $live
for r in "$@"; do no_dups_no_gaps "$DIR/commits.$r.txt"; done
agree "$DIR/commits.$1.txt" "$DIR/commits.$2.txt"
all_acked "$DIR/commits.$1.txt" "$DIR/commits.$2.txt"
echo "kill-primary: $(wc -l <"$DIR/acks.txt") acknowledged requests, each committed once on" \
  "replicas $1 and $2 ($(wc -l <"$DIR/commits.$1.txt") and $(wc -l <"$DIR/commits.$2.txt") ops)"
rm -rf "$DIR"

# ---- 2. kill and restart a backup ----
run restart-backup --seconds 9 --kill 2@1 --restart 2@2
grep -q '^  restarted replica 2' "$OUT" || LOG=$OUT fail "replica 2 was not restarted"
grep -q 'VSR-VIEW replica 2: recovered: view' "$DIR/node2.log" ||
  LOG=$DIR/node2.log fail "the restarted replica did not recover"
for r in 0 1 2; do no_dups_no_gaps "$DIR/commits.$r.txt"; done
agree "$DIR/commits.0.txt" "$DIR/commits.2.txt"
agree "$DIR/commits.1.txt" "$DIR/commits.2.txt"
all_acked "$DIR/commits.0.txt" "$DIR/commits.1.txt" "$DIR/commits.2.txt"
# It caught up: after its restart it committed, in order and in agreement with the others,
# requests the clients saw acknowledged (beyond any state transfer).
mine=$(awk 'FILENAME == ARGV[1] { ack[$1 " " $2] = 1; next } $1 != "#" && (($2 " " $3) in ack) { n++ }
            END { print n + 0 }' "$DIR/acks.txt" "$DIR/commits.2.txt")
[ "$mine" -gt 0 ] || fail "the restarted replica committed no acknowledged request"
echo "restart-backup: the restarted replica 2 committed $mine acknowledged requests" \
  "($(grep -c '^#' "$DIR/commits.2.txt" || true) state transfer(s))"
rm -rf "$DIR"
echo "PASS"
