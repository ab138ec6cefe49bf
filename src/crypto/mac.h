/* BLAKE3 for replica authentication: one-shot hash, keyed hash (the handshake MAC) and key
 * derivation over the official BLAKE3 C code (built from librust-blake3-dev by
 * cmake/blake3.cmake), plus a constant-time comparison for MAC checks. */
#ifndef VSRI_CRYPTO_MAC_H
#define VSRI_CRYPTO_MAC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VSRI_BLAKE3_LEN 32 /* output and key length, bytes */

/* |out| = BLAKE3(|in|[0..|len|]), 32 bytes. |in| may be NULL when |len| is 0. Cannot fail. */
void vsri_blake3_hash(const void *in, size_t len, uint8_t out[VSRI_BLAKE3_LEN]);

/* |out| = BLAKE3 keyed_hash(|key|, |in|), 32 bytes. The hasher state (which holds the key) is
 * wiped before returning. Cannot fail. */
void vsri_blake3_keyed(const uint8_t key[VSRI_BLAKE3_LEN], const void *in, size_t len,
                       uint8_t out[VSRI_BLAKE3_LEN]);

/* |out| = BLAKE3 derive_key(|context|, |material|), 32 bytes. |context| is a NUL-terminated
 * hard-coded string (BLAKE3 wants it globally unique and never secret); |material| is the
 * secret. The hasher state is wiped before returning. Cannot fail. */
void vsri_blake3_derive_key(const char *context, const void *material, size_t len,
                            uint8_t out[VSRI_BLAKE3_LEN]);

/* True when |a| and |b| hold the same |len| bytes. The time taken depends on |len| only,
 * never on where the first difference is, so a MAC check leaks nothing about the expected
 * value. Cannot fail. */
bool vsri_ct_equal(const void *a, const void *b, size_t len);

/* Overwrites |len| bytes at |p| with zeros in a way the compiler may not elide: for keys and
 * secrets that go out of scope. Cannot fail. */
void vsri_wipe(void *p, size_t len);

#endif
