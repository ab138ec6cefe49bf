/* The event loop a bus and its clients run on. One loop belongs to one thread; everything
 * attached to it (bus, clients, timers, messages of its pool) is used from that thread only. */
#ifndef VSRBUS_LOOP_H
#define VSRBUS_LOOP_H

#include <stdint.h>

#include "vsrbus/msg.h"

#ifdef __cplusplus
extern "C" {
#endif

struct vsr_loop;
struct vsr_timer;

enum vsr_io_backend { VSR_IO_AUTO = 0, VSR_IO_EPOLL = 1, VSR_IO_URING = 2 };

struct vsr_loop_options {
  enum vsr_io_backend backend; /* AUTO: VSRBUS_IO, else io_uring if the kernel allows, else epoll */
  struct vsr_pool_options pool;
};

void vsr_loop_options_default(struct vsr_loop_options *o);

/* Creates a loop and its message pool. Returns 0, VSR_EUNSUPPORTED (backend forced and not
 * available), VSR_ECONFIG, VSR_ENOMEM or VSR_EIO. */
int vsr_loop_new(struct vsr_loop **out, const struct vsr_loop_options *o);

/* Frees the loop. Buses, clients and timers on it must be freed first (their deletion never
 * runs the loop). Runs no callback; it waits only for the kernel to answer the canceled
 * operations of objects already freed (io_uring), which is prompt, then frees the pool. */
void vsr_loop_del(struct vsr_loop *loop);

/* Runs one turn: ready callbacks, then waits up to |timeout_ns| (-1: no limit) for more.
 * Returns the number of callbacks run or VSR_EIO. */
int vsr_loop_run_once(struct vsr_loop *loop, int64_t timeout_ns);

/* Runs turns until vsr_loop_stop() is called (from a callback or a signal handler). */
int vsr_loop_run(struct vsr_loop *loop);
void vsr_loop_stop(struct vsr_loop *loop);

/* "epoll" or "io_uring". */
const char *vsr_loop_backend(const struct vsr_loop *loop);

struct vsr_pool *vsr_loop_pool(struct vsr_loop *loop);

/* Monotonic nanoseconds, sampled once per loop turn. */
uint64_t vsr_loop_now(const struct vsr_loop *loop);

/* One-shot timers for application code (e.g. a state machine's ticks). A timer is created
 * once and armed any number of times; arming an armed timer re-arms it.
 * vsr_timer_new returns 0 or VSR_ENOMEM. */
int vsr_timer_new(struct vsr_timer **out, struct vsr_loop *loop, void (*fn)(void *ctx),
                  void *ctx);
void vsr_timer_arm(struct vsr_timer *t, uint64_t ns);
void vsr_timer_disarm(struct vsr_timer *t);
/* Frees the timer at once (armed or not; also from inside its own callback): it never fires
 * again. */
void vsr_timer_del(struct vsr_timer *t);

#ifdef __cplusplus
}
#endif
#endif
