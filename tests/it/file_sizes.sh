#!/usr/bin/env bash
# Boundaries before growth (issue 13): no library source file, src/*/*.c or src/*/*/*.c, is
# over 800 lines. A file that grew past it holds more than one concern: split it by concern
# (docs/architecture.md has the module map). Fails listing each offender and its length.
# Backend-independent: registered once, as it.file_sizes (tests/CMakeLists.txt), not through
# the it_*.sh glob that registers a script per io backend.
set -euo pipefail
SRC=${VSRBUS_SRC:?VSRBUS_SRC must point at the source tree}
MAX=800

shopt -s nullglob
files=("$SRC"/src/*/*.c "$SRC"/src/*/*/*.c)
# Sanity: the globs see the tree (an empty match must not pass as "nothing too long").
[ "${#files[@]}" -ge 10 ] || { echo "FAIL: only ${#files[@]} files under $SRC/src" >&2; exit 1; }
for f in bus/bus.c transport/tcp.c io/loop.c; do
  [ -f "$SRC/src/$f" ] || { echo "FAIL: src/$f not found: wrong VSRBUS_SRC?" >&2; exit 1; }
done

offenders=""
for f in "${files[@]}"; do
  n=$(wc -l <"$f")
  [ "$n" -le "$MAX" ] || offenders+="  ${f#"$SRC"/}: $n lines"$'\n'
done
if [ -n "$offenders" ]; then
  printf 'FAIL: source files over %d lines (split them by concern):\n%s' "$MAX" "$offenders" >&2
  exit 1
fi
echo "ok: file sizes: ${#files[@]} files under src/, none over $MAX lines"
