#!/usr/bin/env bash
# The layers hold, checked on every header each source file really includes (the compiler's
# dependency list, so an include reached through another header counts):
#   src/io         includes no bus or transport header (src/bus, src/transport, vsrbus/bus.h,
#                  vsrbus/client.h, the umbrella vsrbus/vsrbus.h);
#   src/transport  includes no bus header (src/bus, vsrbus/bus.h, vsrbus/client.h, vsrbus.h);
#   src/bus        names no io backend or TLS/QUIC library (liburing, sys/epoll.h, ngtcp2,
#                  gnutls).
# A failure lists each file and the forbidden headers it reaches.
source "$(dirname "$0")/lib.sh"
SRC=${VSRBUS_SRC:?}
[ "${VSRBUS_IO:-}" = uring ] && { echo "skip: backend-independent, runs once as .epoll"; exit 77; }
CC=${VSRBUS_CC:-cc}

# deps FILE: every header FILE includes, one path a line (-MG: a missing header is still named).
deps() {
  "$CC" -M -MG -D_GNU_SOURCE -I"$SRC/include" -I"$SRC/src" "$1" -o "$TMP/d" ||
    fail "cannot list the includes of $1"
  tr -d '\\' <"$TMP/d" | tr ' ' '\n' | sed -n 's/^\(.*\.h\)$/\1/p'
}

problems=""
checked=0
# check LAYER FORBIDDEN_REGEX: every .c under src/LAYER (any depth).
check() {
  local layer=$1 forbidden=$2 f bad
  while IFS= read -r f; do
    checked=$((checked + 1))
    bad=$(deps "$f" | grep -E "$forbidden" | sed "s|^$SRC/||" | sort -u | tr '\n' ' ' || true)
    [ -z "$bad" ] || problems+="  ${f#"$SRC"/} includes ${bad}"$'\n'
  done < <(find "$SRC/src/$layer" -name '*.c' | sort)
}
check io '/src/(bus|transport)/|/vsrbus/(bus|client|vsrbus)\.h$'
check transport '/src/bus/|/vsrbus/(bus|client|vsrbus)\.h$'
check bus '/liburing[./]|/sys/epoll\.h$|/ngtcp2/|/gnutls/'
[ "$checked" -ge 10 ] || fail "only $checked source files found under $SRC/src"

# The check itself must be able to fail: a file including the bus from io is caught.
mkdir -p "$TMP/src/io"
printf '#include "bus/bus_impl.h"\n' >"$TMP/src/io/probe.c"
deps "$TMP/src/io/probe.c" | grep -qE '/src/bus/' || fail "dependency listing misses src/bus"

[ -z "$problems" ] || fail "layering violated:"$'\n'"$problems"
echo "ok: layers: $checked source files"
