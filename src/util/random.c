/* vsri_random_*: splitmix64 per thread, seeded once from getrandom (see random.h). */
#include "util/random.h"

#include <stdbool.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

static _Thread_local uint64_t rnd_state;
static _Thread_local bool rnd_seeded;

static void rnd_seed(void) {
  uint64_t s = 0;
  if (getrandom(&s, sizeof s, GRND_NONBLOCK) != (ssize_t)sizeof s) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    s = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32) ^ ((uint64_t)getpid() << 16);
  }
  rnd_state = s;
  rnd_seeded = true;
}

uint64_t vsri_random_u64(void) {
  if (!rnd_seeded) rnd_seed();
  uint64_t z = (rnd_state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t vsri_random_below(uint64_t n) {
  if (n == 0) return 0;
  /* Rejection keeps it uniform: drop the top partial range. */
  uint64_t limit = UINT64_MAX - UINT64_MAX % n;
  uint64_t x;
  do x = vsri_random_u64();
  while (x >= limit);
  return x % n;
}
