/* The one source of randomness of the library: handshake nonces, backoff jitter, client ids.
 * Defaults to the kernel CSPRNG; the simulator installs a seeded generator so a run is
 * reproducible from its seed. Process-wide, like the log. */
#ifndef VSRI_RANDOM_H
#define VSRI_RANDOM_H

#include <stddef.h>
#include <stdint.h>

/* Fills |buf| with |len| random bytes. Returns 0 or VSR_EIO (the kernel refused). */
int vsri_random_bytes(void *buf, size_t len);

/* Replaces the source (NULL: back to getrandom). For the simulator and tests only: never set
 * it in a process that serves real traffic, the nonces would be predictable. */
typedef void (*vsri_random_fn)(void *ctx, void *buf, size_t len);
void vsri_random_set_hook(vsri_random_fn fn, void *ctx);

/* A uniformly random 64-bit value (through the hook when one is set; else a fast per-thread
 * generator seeded from getrandom: jitter and ids, not secrets). */
uint64_t vsri_random_u64(void);

/* Uniform in [0, n); 0 when n == 0. */
uint64_t vsri_random_below(uint64_t n);

/* Exponential backoff with full jitter: attempt 0 waits 0; attempt k >= 1 waits a uniformly
 * random delay in [0, min(max_ns, min_ns * 2^(k-1))]. */
static inline uint64_t vsri_backoff_ns(uint64_t min_ns, uint64_t max_ns, uint32_t attempt) {
  if (attempt == 0) return 0;
  uint64_t cap = min_ns;
  for (uint32_t i = 1; i < attempt && cap < max_ns; i++) {
    cap = cap > UINT64_MAX / 2 ? UINT64_MAX : cap * 2;
  }
  if (cap > max_ns) cap = max_ns;
  return cap == UINT64_MAX ? vsri_random_u64() : vsri_random_below(cap + 1);
}

#endif
