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

#endif
