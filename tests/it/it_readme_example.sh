#!/usr/bin/env bash
# The README's API example compiles as shown (warnings are errors) and works: ping it.
source "$(dirname "$0")/lib.sh"
SRC=${VSRBUS_SRC:?}
BUILD=${VSRBUS_BUILD:?}
sed -n '/<!-- example:begin -->/,/<!-- example:end -->/p' "$SRC/README.md" |
  sed '/^<!--/d; /^```/d' >"$TMP/example.c"
[ "$(wc -l <"$TMP/example.c")" -ge 15 ] || fail "example not found in README.md"
${VSRBUS_CC:-cc} -std=c11 -Wall -Wextra -Werror ${VSRBUS_CFLAGS:-} -I"$SRC/include" \
  "$TMP/example.c" -o "$TMP/example" \
  "$BUILD/libvsrbus.a" $(pkg-config --libs libxxhash liburing libngtcp2 libngtcp2_crypto_gnutls gnutls inih) \
  -lhttp_parser -lwslay -lm ||
  fail "README example does not compile"
"$TMP/example" "127.0.0.1:0" >"$TMP/ex.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do grep -q listening "$TMP/ex.log" && break; sleep 0.05; done
grep -q listening "$TMP/ex.log" || { grep -q "io_uring forced but unavailable" "$TMP/ex.log" && exit 77; LOG=$TMP/ex.log fail "example did not start"; }
addr=$(sed -n 's/.*listening on \([0-9.:]*\).*/\1/p' "$TMP/ex.log" | head -1)
"$BIN" ping "$addr" -c 3 -i 0 | grep -q '3 sent, 3 received' || fail "ping the example"
echo "ok: README example"
