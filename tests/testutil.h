/* Helpers shared by tests: backend skip, bounded waits, loopback addresses. */
#ifndef VSR_TESTUTIL_H
#define VSR_TESTUTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/io.h"
#include "vsrbus/error.h"

#define VSRT_SKIP 77

/* Exits 77 (skip) when VSRBUS_IO forces a backend this machine cannot run. */
static inline void vsrt_require_backend(void) {
  const char *want = getenv("VSRBUS_IO");
  if (!want || strcmp(want, "uring") != 0) return;
  struct vsri_io *io = NULL;
  struct vsri_io_options o;
  vsri_io_options_default(&o);
  o.backend = VSRI_IO_URING;
  int err = vsri_io_new(&io, &o);
  if (err) {
    fprintf(stderr, "skip: io_uring unavailable here (%s)\n", vsr_strerror(err));
    exit(VSRT_SKIP);
  }
  vsri_io_del(io);
}

#endif
