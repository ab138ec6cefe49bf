#!/usr/bin/env bash
# `make install` layout: headers, libraries, the command and vsrbus.pc; a program builds
# against the installed copy with pkg-config alone, and runs against the shared library.
source "$(dirname "$0")/lib.sh"
BUILD=${VSRBUS_BUILD:?}
SRC=${VSRBUS_SRC:?}
[ "${VSRBUS_IO:-}" = uring ] && { echo "skip: backend-independent, runs once as .epoll"; exit 77; }
cmake --install "$BUILD" --prefix "$TMP/prefix" >/dev/null || fail "cmake --install"
P=$TMP/prefix
LIBDIR=$(ls -d "$P"/lib* | head -1)
for f in include/vsrbus/vsrbus.h include/vsrbus/bus.h include/vsrbus/client.h bin/vsrbus; do
  [ -e "$P/$f" ] || fail "missing $f"
done
[ -e "$LIBDIR/libvsrbus.a" ] && [ -e "$LIBDIR/libvsrbus.so" ] || fail "libraries missing"
export PKG_CONFIG_PATH=$(dirname "$(find "$P" -name vsrbus.pc | head -1)")
pkg-config --exists vsrbus || fail "vsrbus.pc not found by pkg-config"
# Only vsr_* symbols are exported from the shared library.
bad=$(nm -D --defined-only "$LIBDIR/libvsrbus.so" | awk '$2 ~ /[TDB]/ {print $3}' | grep -v '^vsr_' || true)
[ -z "$bad" ] || fail "non-public symbols exported: $(echo $bad | head -c 300)"
cat >"$TMP/p.c" <<'C'
#include <stdio.h>
#include <vsrbus/vsrbus.h>
int main(void) {
  printf("%s %s\n", vsr_version(), vsr_strerror(VSR_EBACKPRESSURE));
  return 0;
}
C
${VSRBUS_CC:-cc} ${VSRBUS_CFLAGS:-} "$TMP/p.c" -o "$TMP/p" $(pkg-config --cflags --libs vsrbus) ||
  fail "cannot build against the installed library"
LD_LIBRARY_PATH=$LIBDIR "$TMP/p" | grep -q 'queue full' || fail "installed library does not run"
echo "ok: install"
