/* BLAKE3 wrappers for replica authentication (see mac.h). The heavy lifting, SIMD dispatch
 * included, is the official C implementation; this file only fixes the output length, wipes
 * keyed state and provides the constant-time compare. */
#include "crypto/mac.h"

#include <string.h>

#include "blake3.h"

_Static_assert(VSRI_BLAKE3_LEN == BLAKE3_OUT_LEN, "BLAKE3 output length");
_Static_assert(VSRI_BLAKE3_LEN == BLAKE3_KEY_LEN, "BLAKE3 key length");

void vsri_wipe(void *p, size_t len) {
  /* glibc's explicit_bzero is documented never to be optimised away. */
  if (len) explicit_bzero(p, len);
}

void vsri_blake3_hash(const void *in, size_t len, uint8_t out[VSRI_BLAKE3_LEN]) {
  blake3_hasher h;
  blake3_hasher_init(&h);
  if (len) blake3_hasher_update(&h, in, len);
  blake3_hasher_finalize(&h, out, VSRI_BLAKE3_LEN);
}

void vsri_blake3_keyed(const uint8_t key[VSRI_BLAKE3_LEN], const void *in, size_t len,
                       uint8_t out[VSRI_BLAKE3_LEN]) {
  blake3_hasher h;
  blake3_hasher_init_keyed(&h, key);
  if (len) blake3_hasher_update(&h, in, len);
  blake3_hasher_finalize(&h, out, VSRI_BLAKE3_LEN);
  vsri_wipe(&h, sizeof h);
}

void vsri_blake3_derive_key(const char *context, const void *material, size_t len,
                            uint8_t out[VSRI_BLAKE3_LEN]) {
  blake3_hasher h;
  blake3_hasher_init_derive_key(&h, context);
  if (len) blake3_hasher_update(&h, material, len);
  blake3_hasher_finalize(&h, out, VSRI_BLAKE3_LEN);
  vsri_wipe(&h, sizeof h);
}

bool vsri_ct_equal(const void *a, const void *b, size_t len) {
  const uint8_t *x = a;
  const uint8_t *y = b;
  /* The volatile accumulator keeps the compiler from turning the loop into an early-exit
   * memcmp: every byte is read and folded in whatever the data. */
  volatile uint8_t diff = 0;
  for (size_t i = 0; i < len; i++) diff |= (uint8_t)(x[i] ^ y[i]);
  return diff == 0;
}
