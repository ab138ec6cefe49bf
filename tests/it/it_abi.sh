#!/usr/bin/env bash
# The ABI of libvsrbus.so is exactly the functions declared in include/vsrbus/*.h:
#   declared  the vsr_* functions the public headers declare (static inlines and typedefs
#             excluded), read from the preprocessed headers, so comments and macros cannot fool it;
#   mapped    the global: names of src/vsrbus.map;
#   exported  what `nm -D --defined-only` lists in the built shared library, each in a VSRBUS_
#             version node.
# Any difference fails and names the symbols, with the fix (add to the map, declare, or hide).
source "$(dirname "$0")/lib.sh"
BUILD=${VSRBUS_BUILD:?}
SRC=${VSRBUS_SRC:?}
[ "${VSRBUS_IO:-}" = uring ] && { echo "skip: backend-independent, runs once as .epoll"; exit 77; }
LIB=$BUILD/libvsrbus.so
[ -e "$LIB" ] || fail "no $LIB"
MAP=$SRC/src/vsrbus.map
CC=${VSRBUS_CC:-cc}

# declared: every public header, preprocessed; brace blocks (struct, enum and inline bodies)
# collapse until only top-level declarations remain, split at ';'.
hdrs=$(cd "$SRC/include/vsrbus" && ls ./*.h)
[ -n "$hdrs" ] || fail "no public headers"
for h in $hdrs; do printf '#include "vsrbus/%s"\n' "${h#./}"; done >"$TMP/all.c"
"$CC" -E -P -D_GNU_SOURCE -I"$SRC/include" -x c "$TMP/all.c" -o "$TMP/all.i" ||
  fail "public headers do not preprocess"
perl -0777 -ne '1 while s/\{[^{}]*\}/;/g;
  for (split /;/) { next if /^\s*(typedef|static)\b/; print "$1\n" if /\b(vsr_\w+)\s*\(/ }' \
  "$TMP/all.i" | sort -u >"$TMP/declared"
# Sanity: the extraction sees the API (a broken parse must not pass as "nothing to export").
for f in vsr_bus_new vsr_client_new vsr_loop_new vsr_strerror vsr_version vsr_msg_unref; do
  grep -qx "$f" "$TMP/declared" || fail "extraction missed $f (see tests/it/it_abi.sh)"
done
grep -qx 'vsr_msg_ref' "$TMP/declared" && fail "extraction counted the static inline vsr_msg_ref"

# mapped: the global: names of every node (comments stripped).
perl -0777 -ne 's{/\*.*?\*/}{}gs; while (/global:(.*?)local:/gs) { my $g = $1;
  print "$1\n" while $g =~ /([A-Za-z_]\w*)\s*;/g }' "$MAP" | sort -u >"$TMP/mapped"
grep -q . "$TMP/mapped" || fail "no global: names in $MAP"

# exported: defined dynamic symbols other than the version nodes themselves (type A).
nm -D --defined-only "$LIB" | awk '$2 != "A" {print $3}' >"$TMP/exported_v"
sed 's/@.*//' "$TMP/exported_v" | sort -u >"$TMP/exported"
unversioned=$(grep -v '@@\?VSRBUS_' "$TMP/exported_v" || true)

problems=""
report() { # report TITLE FILE
  [ -s "$2" ] && problems+="$1:"$'\n'"$(sed 's/^/  /' "$2")"$'\n'
  return 0
}
comm -23 "$TMP/declared" "$TMP/mapped" >"$TMP/a"
report "declared in include/vsrbus/*.h but missing from src/vsrbus.map (add them)" "$TMP/a"
comm -13 "$TMP/declared" "$TMP/mapped" >"$TMP/b"
report "in src/vsrbus.map but declared in no public header (declare or remove them)" "$TMP/b"
comm -23 "$TMP/declared" "$TMP/exported" >"$TMP/c"
report "declared but not exported by $LIB (not defined, or hidden)" "$TMP/c"
comm -13 "$TMP/declared" "$TMP/exported" >"$TMP/d"
report "exported by $LIB but declared in no public header (make them static or vsri_)" "$TMP/d"
[ -z "$unversioned" ] || problems+="exported without a VSRBUS_ version:"$'\n'"  $unversioned"$'\n'
[ -z "$problems" ] || fail "ABI mismatch"$'\n'"$problems"
echo "ok: abi: $(wc -l <"$TMP/declared") functions declared, mapped and exported"
