/* The public loop object: the io loop plus the message pool every frame on it comes from,
 * and one-shot application timers. */
#include <errno.h>
#include <string.h>

#include "io/runtime.h"
#include "util/alloc.h"
#include "vsrbus/error.h"

void vsr_loop_options_default(struct vsr_loop_options *o) {
  memset(o, 0, sizeof *o);
  o->backend = VSR_IO_AUTO;
  vsr_pool_options_default(&o->pool);
}

int vsr_loop_new(struct vsr_loop **out, const struct vsr_loop_options *o) {
  struct vsr_loop_options def;
  if (!o) {
    vsr_loop_options_default(&def);
    o = &def;
  }
  struct vsr_loop *loop = vsri_calloc(1, sizeof *loop);
  if (!loop) return VSR_ENOMEM;
  struct vsri_io_options io_opts;
  vsri_io_options_default(&io_opts);
  io_opts.backend = o->backend == VSR_IO_EPOLL   ? VSRI_IO_EPOLL
                    : o->backend == VSR_IO_URING ? VSRI_IO_URING
                                                 : VSRI_IO_AUTO;
  int err = vsri_io_new(&loop->io, &io_opts);
  if (err == 0) err = vsr_pool_new(&loop->pool, &o->pool);
  if (err) {
    vsri_io_del(loop->io);
    vsri_free(loop);
    return err;
  }
  *out = loop;
  return 0;
}

int vsri_loop_new_on(struct vsr_loop **out, struct vsri_io *io,
                     const struct vsr_pool_options *pool) {
  struct vsr_pool_options def;
  if (!pool) {
    vsr_pool_options_default(&def);
    pool = &def;
  }
  struct vsr_loop *loop = vsri_calloc(1, sizeof *loop);
  int err = loop ? vsr_pool_new(&loop->pool, pool) : VSR_ENOMEM;
  if (err) {
    vsri_free(loop);
    vsri_io_del(io);
    return err;
  }
  loop->io = io;
  *out = loop;
  return 0;
}

void vsr_loop_del(struct vsr_loop *loop) {
  if (!loop) return;
  /* No turn runs here. Everything that used the loop let go of its completions without it
   * (io.h, "Letting go"); vsri_io_del waits only for the kernel's answers to released
   * submissions, then the pool goes (released blocks may still hold frames of it). */
  vsri_io_del(loop->io);
  vsr_pool_del(loop->pool);
  vsri_free(loop);
}

int vsr_loop_run_once(struct vsr_loop *loop, int64_t timeout_ns) {
  return vsri_io_run(loop->io, timeout_ns);
}

int vsr_loop_run(struct vsr_loop *loop) {
  loop->stop = false;
  while (!loop->stop) {
    /* Wake at least every 100 ms so a stop requested from a signal handler is seen. */
    int r = vsri_io_run(loop->io, 100 * 1000 * 1000);
    if (r < 0) return r;
  }
  return 0;
}

void vsr_loop_stop(struct vsr_loop *loop) { loop->stop = true; }

const char *vsr_loop_backend(const struct vsr_loop *loop) {
  return vsri_io_backend_name(loop->io);
}

struct vsr_pool *vsr_loop_pool(struct vsr_loop *loop) { return loop->pool; }

uint64_t vsr_loop_now(const struct vsr_loop *loop) { return vsri_io_now(loop->io); }

/* ---- timers ---------------------------------------------------------------------------- */

struct vsr_timer {
  struct vsr_loop *loop;
  void (*fn)(void *ctx);
  void *ctx;
  struct vsri_completion c;
  uint64_t rearm_ns; /* armed again while the previous arm was being canceled */
  bool rearm;
};

int vsr_timer_new(struct vsr_timer **out, struct vsr_loop *loop, void (*fn)(void *ctx),
                  void *ctx) {
  struct vsr_timer *t = vsri_calloc(1, sizeof *t);
  if (!t) return VSR_ENOMEM;
  t->loop = loop;
  t->fn = fn;
  t->ctx = ctx;
  *out = t;
  return 0;
}

static void timer_fired(struct vsri_io *io, struct vsri_completion *c, int32_t res) {
  struct vsr_timer *t = c->ctx;
  if (t->rearm) {
    t->rearm = false;
    vsri_io_timeout(io, &t->c, t->rearm_ns, timer_fired, t);
    return;
  }
  if (res == 0) t->fn(t->ctx);
}

void vsr_timer_arm(struct vsr_timer *t, uint64_t ns) {
  if (t->c.pending) {
    /* Replace the pending arm: cancel it and arm again from its callback. */
    t->rearm = true;
    t->rearm_ns = ns;
    vsri_io_cancel(t->loop->io, &t->c);
    return;
  }
  vsri_io_timeout(t->loop->io, &t->c, ns, timer_fired, t);
}

void vsr_timer_disarm(struct vsr_timer *t) {
  t->rearm = false;
  if (t->c.pending) vsri_io_cancel(t->loop->io, &t->c);
}

void vsr_timer_del(struct vsr_timer *t) {
  if (!t) return;
  vsri_io_timeout_drop(t->loop->io, &t->c); /* a timer lives in the loop: gone at once */
  vsri_free(t);
}
