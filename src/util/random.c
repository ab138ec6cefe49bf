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
