/* vsrbus: a message bus for Viewstamped-Replication clusters, wire-compatible with the
 * consensus message bus of Apache Iggy (mainline). Umbrella header and library-wide settings. */
#ifndef VSRBUS_VSRBUS_H
#define VSRBUS_VSRBUS_H

#include <stdbool.h>
#include <stdint.h>

#include "vsrbus/error.h"
#include "vsrbus/log.h"
#include "vsrbus/msg.h"
#include "vsrbus/wire.h"
#include "vsrbus/loop.h"
#include "vsrbus/bus.h"
#include "vsrbus/client.h"

#ifdef __cplusplus
extern "C" {
#endif

/* "0.1.0" */
const char *vsr_version(void);

/* Allocations made by vsrbus itself since start (buffers and bookkeeping): tests and
 * benchmarks use the difference across a steady-state window to prove it is zero. */
uint64_t vsr_alloc_count(void);

#ifdef __cplusplus
}
#endif
#endif
