/* Doorbell: how another thread wakes a loop (shards, docs/shards.md). A stream socketpair
 * whose read end has one receive pending on the loop; ringing writes one byte, and only when
 * the bell was not already rung since the loop last answered, so a burst of pushes to a ring
 * costs one write and one wake-up. The loop clears the bell before it calls |fn|, so a push
 * that races the drain always rings again. */
#include <errno.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <unistd.h>

#include "io/io.h"
#include "util/alloc.h"
#include "vsrbus/error.h"

struct vsri_doorbell {
  struct vsri_io *io;
  int fds[2]; /* [0] read: the loop's receive; [1] write: any thread */
  _Atomic int rung;
  void (*fn)(void *ctx);
  void *ctx;
  struct vsri_completion c;
  uint8_t buf[64];
  struct vsri_io_grave grave;
};

static void bell_recv(struct vsri_io *io, struct vsri_completion *c, int32_t res);

static void bell_arm(struct vsri_doorbell *d) {
  vsri_io_recv(d->io, &d->c, d->fds[0], d->buf, sizeof d->buf, bell_recv, d);
}

static void bell_recv(struct vsri_io *io, struct vsri_completion *c, int32_t res) {
  (void)io;
  struct vsri_doorbell *d = c->ctx;
  if (res == -ECANCELED) return;
  atomic_store(&d->rung, 0); /* before the drain: a later push rings again */
  bell_arm(d);
  d->fn(d->ctx);
}

int vsri_doorbell_new(struct vsri_doorbell **out, struct vsri_io *io, void (*fn)(void *ctx),
                      void *ctx) {
  struct vsri_doorbell *d = vsri_calloc(1, sizeof *d);
  if (!d) return VSR_ENOMEM;
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, d->fds) < 0) {
    vsri_free(d);
    return VSR_EIO;
  }
  d->io = io;
  d->fn = fn;
  d->ctx = ctx;
  atomic_init(&d->rung, 0);
  bell_arm(d);
  *out = d;
  return 0;
}

void vsri_doorbell_ring(struct vsri_doorbell *d) {
  if (atomic_exchange(&d->rung, 1) != 0) return;
  static const uint8_t one = 1;
  ssize_t r;
  do r = send(d->fds[1], &one, 1, MSG_DONTWAIT | MSG_NOSIGNAL);
  while (r < 0 && errno == EINTR);
  /* EAGAIN: the socket is full of earlier rings, so the loop is awake anyway. */
}

static void bell_free(void *arg) { vsri_free(arg); }

void vsri_doorbell_del(struct vsri_doorbell *d) {
  if (!d) return;
  struct vsri_io *io = d->io;
  int rfd = d->fds[0], wfd = d->fds[1];
  struct vsri_completion *cs[] = {&d->c};
  /* The receive may still be in the kernel (io_uring): |d| goes once it answered. */
  vsri_io_release(io, &d->grave, cs, 1, bell_free, d);
  vsri_io_close_now(io, rfd);
  close(wfd);
}
