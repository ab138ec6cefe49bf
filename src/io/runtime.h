/* The public loop object (vsrbus/loop.h): the io loop, the message pool every frame on it comes
 * from, and the stop flag of vsr_loop_run. runtime.c implements it with the application
 * timers; the bus and the client reach the io loop through |io|. */
#ifndef VSRI_IO_RUNTIME_H
#define VSRI_IO_RUNTIME_H

#include <stdbool.h>

#include "io/io.h"
#include "vsrbus/loop.h"

struct vsr_loop {
  struct vsri_io *io;
  struct vsr_pool *pool;
  volatile bool stop;
};

/* A public loop around |io| (which it then owns, and frees in vsr_loop_del) with a pool made
 * from |pool| (NULL: defaults): for a loop on the simulator (io/sim.h). Returns 0 or VSR_ENOMEM
 * (then |io| is freed too). */
int vsri_loop_new_on(struct vsr_loop **out, struct vsri_io *io,
                     const struct vsr_pool_options *pool);

#endif
