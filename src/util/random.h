/* Randomness for the library's own decisions (backoff jitter, client ids): one helper, so a
 * simulator can later make it seedable. Not for cryptography (handshake nonces use
 * getrandom directly). Per thread; seeded from getrandom at first use. */
#ifndef VSRI_UTIL_RANDOM_H
#define VSRI_UTIL_RANDOM_H

#include <stdint.h>

/* A uniformly random 64-bit value. */
uint64_t vsri_random_u64(void);

/* Uniform in [0, n); 0 when n == 0. */
uint64_t vsri_random_below(uint64_t n);

/* Exponential backoff with full jitter: attempt 0 waits 0; attempt k >= 1 waits a uniformly
 * random delay in [0, min(max_ns, min_ns * 2^(k-1))]. */
static inline uint64_t vsri_backoff_ns(uint64_t min_ns, uint64_t max_ns, uint32_t attempt) {
  if (attempt == 0) return 0;
  uint64_t cap = min_ns;
  for (uint32_t i = 1; i < attempt && cap < max_ns; i++) cap = cap > UINT64_MAX / 2 ? UINT64_MAX : cap * 2;
  if (cap > max_ns) cap = max_ns;
  return cap == UINT64_MAX ? vsri_random_u64() : vsri_random_below(cap + 1);
}

#endif
