#!/usr/bin/env bash
# The demo cluster (issue 15) survives the death of its primary and the restart of a backup:
#  1. `vsrbus demo --kill-primary-after 2`: replica 0 is killed (SIGKILL) under load; the backups
#     elect replica 1 (view 1), the clients follow it and commit again.
#  2. `--kill 2@1 --restart 2@3 --kill-primary-after 6`: replica 2 dies, comes back with an empty
#     memory and recovers (RequestStartView / StartView, then repair); then the primary is killed:
#     from then on every commit needs replica 2's acknowledgement, so commits after that prove it
#     caught up.
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
  TMPDIR=$TMP timeout 150 "$BIN" demo --clients 8 --depth 2 --size 64 --dump-commits "$@" \
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

# no_dups_no_gaps FILE: no (client, request) committed twice (Registers aside), ops contiguous
# (a "# state transfer: ops up to X" line: the replica continued from X + 1).
no_dups_no_gaps() {
  awk '$1 == "#" { prev = $7 + 0; jumped = 1; next }
       $4 != 1 { k = $2 " " $3; if (k in seen) { print "committed twice: " k; bad = 1 } seen[k] = 1 }
       (NR > 1 || jumped) && $1 != prev + 1 { print "gap after op " prev; bad = 1 }
       { prev = $1 } END { exit bad }' "$1" || fail "$1: duplicates or gaps"
}

# agree A B: ops committed by both carry the same (client, request, operation).
agree() {
  awk '$1 == "#" { next }
       FNR == NR { a[$1] = $2 " " $3 " " $4; next }
       ($1 in a) && a[$1] != $2 " " $3 " " $4 { print "op " $1 " differs"; bad = 1; exit }
       ($1 in a) { n++ } END { if (!bad && n == 0) { print "no op in common"; bad = 1 } exit bad }' \
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
run kill-primary --seconds 12 --kill-primary-after 2
grep -q '^  killed replica 0 (the primary' "$OUT" || LOG=$OUT fail "the primary was not killed"
sline=$(grep '^sessions:' "$OUT")
view=$(echo "$sline" | sed -n 's/.*(view \([0-9]*\), primary \([0-9]*\)).*/\1/p')
primary=$(echo "$sline" | sed -n 's/.*(view \([0-9]*\), primary \([0-9]*\)).*/\2/p')
[ -n "$view" ] && [ "$view" -ge 1 ] && [ "$primary" != 0 ] ||
  LOG=$OUT fail "no view change seen by the clients"
grep -q '^  first commit .* after the kill' "$OUT" || LOG=$OUT fail "no commit after the kill"
[ "$(sed -n 's/.*, \([0-9]*\) replies received.*/\1/p' <<<"$sline")" -gt 0 ] || fail "no replies"
grep -q 'VSR-VIEW replica '"$primary"': primary of view' "$DIR/node$primary.log" ||
  LOG=$DIR/node$primary.log fail "replica $primary never became primary"
for r in 1 2; do no_dups_no_gaps "$DIR/commits.$r.txt"; done
agree "$DIR/commits.1.txt" "$DIR/commits.2.txt"
all_acked "$DIR/commits.1.txt" "$DIR/commits.2.txt"
echo "kill-primary: $(wc -l <"$DIR/acks.txt") acknowledged requests, each committed once on" \
  "replicas 1 and 2 ($(wc -l <"$DIR/commits.1.txt") and $(wc -l <"$DIR/commits.2.txt") ops)"
rm -rf "$DIR"

# ---- 2. kill and restart a backup, then kill the primary ----
run restart-backup --seconds 14 --kill 2@1 --restart 2@3 --kill-primary-after 6
grep -q '^  restarted replica 2' "$OUT" || LOG=$OUT fail "replica 2 was not restarted"
grep -q 'VSR-VIEW replica 2: recovered: view' "$DIR/node2.log" ||
  LOG=$DIR/node2.log fail "the restarted replica did not recover"
grep -q '^  killed replica 0 (the primary' "$OUT" || LOG=$OUT fail "the primary was not killed"
sline=$(grep '^sessions:' "$OUT")
primary=$(echo "$sline" | sed -n 's/.*(view \([0-9]*\), primary \([0-9]*\)).*/\2/p')
[ "$primary" = 1 ] || LOG=$OUT fail "want replica 1 primary at the end, got '$primary'"
# Commits after the primary's death need replica 2 (the quorum is {1, 2}): it caught up.
after=$(awk '/killed replica 0 \(the primary/ { k = 1; next }
             k && /^\[ *[0-9]+s\]/ { for (i = 1; i < NF; i++) if ($(i + 1) == "committed") s += $i }
             END { print s + 0 }' "$OUT")
[ "$after" -gt 0 ] || LOG=$OUT fail "nothing committed after the primary died"
no_dups_no_gaps "$DIR/commits.1.txt"
no_dups_no_gaps "$DIR/commits.2.txt"
agree "$DIR/commits.1.txt" "$DIR/commits.2.txt"
all_acked "$DIR/commits.1.txt" "$DIR/commits.2.txt"
echo "restart-backup: $after requests committed after the primary died, with the restarted" \
  "replica 2 as the quorum's second member"
rm -rf "$DIR"
echo "PASS"
