/* Randomness: getrandom(2), or the hook a simulator installed. */
#include "util/random.h"

#include <errno.h>
#include <sys/random.h>

#include "vsrbus/error.h"

static vsri_random_fn random_hook;
static void *random_hook_ctx;

void vsri_random_set_hook(vsri_random_fn fn, void *ctx) {
  random_hook = fn;
  random_hook_ctx = ctx;
}

int vsri_random_bytes(void *buf, size_t len) {
  if (random_hook) {
    random_hook(random_hook_ctx, buf, len);
    return 0;
  }
  unsigned char *p = buf;
  while (len > 0) {
    ssize_t n = getrandom(p, len, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return VSR_EIO;
    }
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

/* vsri_random_u64 without a hook: splitmix64 per thread, seeded once from getrandom. */
static _Thread_local uint64_t rnd_state;
static _Thread_local int rnd_seeded;

uint64_t vsri_random_u64(void) {
  uint64_t z;
  if (random_hook) { /* the simulator's seeded stream: a run stays reproducible */
    random_hook(random_hook_ctx, &z, sizeof z);
    return z;
  }
  if (!rnd_seeded) {
    if (vsri_random_bytes(&rnd_state, sizeof rnd_state) != 0) rnd_state = (uintptr_t)&z;
    rnd_seeded = 1;
  }
  z = (rnd_state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t vsri_random_below(uint64_t n) {
  if (n == 0) return 0;
  uint64_t limit = UINT64_MAX - UINT64_MAX % n; /* rejection keeps it uniform */
  uint64_t x;
  do x = vsri_random_u64();
  while (x >= limit);
  return x % n;
}
