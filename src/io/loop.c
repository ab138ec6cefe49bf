/* The loop: backend selection, timers (a binary min-heap), the before-poll queue, the clock,
 * and the ready list of completions posted outside poll. Backend-independent. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "io/io_impl.h"
#include "util/alloc.h"
#include "util/log.h"
#include "vsrbus/error.h"

static uint64_t loop_clock(struct vsri_io *io) {
  if (io->backend && io->backend->clock) return io->backend->clock(io);
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void vsri_io_options_default(struct vsri_io_options *o) {
  memset(o, 0, sizeof *o);
  o->backend = VSRI_IO_AUTO;
  o->entries = 1024;
  /* 64 KiB. 256 KiB won with 64 connections (1.04-1.7x) but one connection of 16 KiB
   * frames fell to 0.53x on a quiet machine (docs/performance.md, "Receive buffer size"). */
  o->pooled_buf_size = VSRI_IO_POOLED_BUF;
  /* Few buffers on purpose: the kernel writes into them and the decoder reads them at once,
   * so a small ring stays in cache. 64 x 64 KiB (4 MiB) cycling halved io_uring throughput
   * with 64 connections; 4 or 8 match epoll's single hot buffer. */
  o->pooled_buf_count = 8;
  /* A stream whose reads keep filling 64 KiB reads into these instead (fewer reads per byte
   * with many busy connections; docs/performance.md, "Receive path"). Loop-owned like the
   * small ones, so no connection holds one between reads. */
  o->pooled_big_size = VSRI_IO_POOLED_BIG;
  o->pooled_big_count = 4;
  /* One connection alone keeps 64 KiB reads: 256 KiB cost it CPU per frame (epoll) and half
   * its rate on a quiet machine; with several busy sockets the larger reads win. */
  o->pooled_big_min_ready = 2;
}

/* Resolves AUTO through VSRBUS_IO. Returns VSR_ECONFIG for an unknown value. */
static int loop_pick_backend(enum vsri_io_backend_kind *kind) {
  if (*kind != VSRI_IO_AUTO) return 0;
  const char *env = getenv("VSRBUS_IO");
  if (!env || !*env || strcmp(env, "auto") == 0) return 0;
  if (strcmp(env, "epoll") == 0) *kind = VSRI_IO_EPOLL;
  else if (strcmp(env, "uring") == 0 || strcmp(env, "io_uring") == 0) *kind = VSRI_IO_URING;
  else {
    VSRI_ERROR("VSR-IO", "VSRBUS_IO=%s: expected epoll, uring or auto", env);
    return VSR_ECONFIG;
  }
  return 0;
}

/* A loop with its options (zero fields take their defaults) and empty lists; no backend yet. */
static struct vsri_io *io_alloc(const struct vsri_io_options *o) {
  struct vsri_io *io = vsri_calloc(1, sizeof *io);
  if (!io) return NULL;
  if (o) io->opts = *o;
  else vsri_io_options_default(&io->opts);
  if (!io->opts.entries) io->opts.entries = 1024;
  if (!io->opts.pooled_buf_size) io->opts.pooled_buf_size = VSRI_IO_POOLED_BUF;
  if (!io->opts.pooled_buf_count) io->opts.pooled_buf_count = 8;
  if (io->opts.pooled_big_size < io->opts.pooled_buf_size) {
    io->opts.pooled_big_size = io->opts.pooled_buf_size; /* 0 (or smaller): no larger reads */
  }
  if (!io->opts.pooled_big_count) io->opts.pooled_big_count = 4;
  if (!io->opts.pooled_big_min_ready) io->opts.pooled_big_min_ready = 2;
  vsri_list_init(&io->ready);
  vsri_list_init(&io->deferred);
  vsri_list_init(&io->graves);
  return io;
}

int vsri_io_new(struct vsri_io **out, const struct vsri_io_options *o) {
  struct vsri_io *io = io_alloc(o);
  if (!io) return VSR_ENOMEM;
  enum vsri_io_backend_kind kind = io->opts.backend;
  int err = loop_pick_backend(&kind);
  if (err) goto fail;
  if (kind == VSRI_IO_URING || kind == VSRI_IO_AUTO) {
    io->backend = &vsri_io_backend_uring;
    err = io->backend->init(io);
    if (err == 0) goto done;
    const char *why = io->unavailable[0] ? io->unavailable : vsr_strerror(err);
    if (kind == VSRI_IO_URING) {
      VSRI_ERROR("VSR-IO", "io_uring forced but unavailable: %s", why);
      goto fail;
    }
    VSRI_INFO("VSR-IO", "io_uring unavailable (%s); using epoll", why);
  }
  io->backend = &vsri_io_backend_epoll;
  err = io->backend->init(io);
  if (err) goto fail;
done:
  io->now_ns = loop_clock(io);
  *out = io;
  return 0;
fail:
  vsri_free(io);
  return err;
}

int vsri_io_new_on(struct vsri_io **out, const struct vsri_io_options *o,
                   const struct vsri_io_backend *backend, void *backend_data) {
  struct vsri_io *io = io_alloc(o);
  if (!io) return VSR_ENOMEM;
  io->backend = backend;
  io->backend_data = backend_data;
  int err = backend->init(io);
  if (err) {
    vsri_free(io);
    return err;
  }
  io->now_ns = loop_clock(io);
  *out = io;
  return 0;
}

static int loop_run_ready(struct vsri_io *io);

/* Released blocks wait here for the kernel's answers to their canceled submissions. The
 * rule: keep polling while answers come; give up only after a full second with none (the
 * kernel never leaves a canceled network operation unanswered that long: it would be a kernel
 * bug, logged, and the blocks are leaked rather than freed under the kernel). */
static void loop_drain_graves(struct vsri_io *io) {
  int idle_waits = 0;
  while (io->ngraves > 0 && idle_waits < 10) {
    uint32_t before = io->ngraves;
    io->now_ns = loop_clock(io);
    loop_run_ready(io);
    if (io->ngraves == 0) break;
    if (io->backend->poll(io, 100 * 1000 * 1000) < 0) break;
    loop_run_ready(io);
    idle_waits = io->ngraves < before ? 0 : idle_waits + 1;
  }
  if (io->ngraves > 0) {
    VSRI_ERROR("VSR-IO", "%s: %u released block(s) still wait for the kernel after 1 s; "
               "leaking them rather than freeing memory the kernel may write", io->backend->name,
               io->ngraves);
  }
}

void vsri_io_del(struct vsri_io *io) {
  if (!io) return;
  loop_drain_graves(io);
  io->backend->fini(io);
  vsri_free(io->timers);
  vsri_free(io);
}

const char *vsri_io_backend_name(const struct vsri_io *io) { return io->backend->name; }

uint64_t vsri_io_now(const struct vsri_io *io) { return io->now_ns; }

uint64_t vsri_io_now_fresh(struct vsri_io *io) { return io->now_ns = loop_clock(io); }

void vsri_io_stats(const struct vsri_io *io, struct vsri_io_stats *out) { *out = io->stats; }

/* ---- completions ---------------------------------------------------------------------- */

/* A released completion came back: its block goes once the last one has. */
static void loop_grave_put(struct vsri_io *io, struct vsri_io_grave *g) {
  if (--g->pending > 0) return;
  vsri_list_remove(&g->link);
  io->ngraves--;
  if (g->free_fn) g->free_fn(g->arg);
}

void vsri_io_complete(struct vsri_io *io, struct vsri_completion *c, int32_t res) {
  uint8_t op = c->op;
  c->pending = false;
  c->op = VSRI_OP_NONE;
  io->stats.callbacks++;
  struct vsri_io_grave *g = c->grave;
  if (g) {
    /* Released: the owner is gone. An accept that won the race against its cancel returned
     * a descriptor nobody will take. |c| may be freed by the grave: not touched after. */
    c->grave = NULL;
    if (op == VSRI_OP_ACCEPT && res >= 0) close(res);
    loop_grave_put(io, g);
    return;
  }
  if ((op == VSRI_OP_RECV || op == VSRI_OP_RECV_POOLED) && res > 0) {
    io->stats.recvs++;
    io->stats.recv_bytes += (uint64_t)res;
    if ((size_t)res == c->u.recv.len) io->stats.recv_full++;
    if (op == VSRI_OP_RECV_POOLED && c->u.recv.len > io->opts.pooled_buf_size) {
      io->stats.recv_big++;
    }
  }
  c->cb(io, c, res);
}

void vsri_io_post(struct vsri_io *io, struct vsri_completion *c, int32_t res) {
  c->result = res;
  c->posted = true;
  vsri_list_push_back(&io->ready, &c->link);
}

static int loop_run_ready(struct vsri_io *io) {
  /* Detach the list first: callbacks may post more, which run on the next turn. */
  struct vsri_list batch;
  vsri_list_init(&batch);
  vsri_list_splice_back(&batch, &io->ready);
  int n = 0;
  struct vsri_list_node *node;
  while ((node = vsri_list_pop_front(&batch))) {
    struct vsri_completion *c = vsri_container_of(node, struct vsri_completion, link);
    c->posted = false;
    vsri_io_complete(io, c, c->result);
    n++;
  }
  return n;
}

static void loop_prepare(struct vsri_io *io, struct vsri_completion *c, enum vsri_op op, int fd,
                         vsri_io_cb cb, void *ctx) {
  c->op = (uint8_t)op;
  c->fd = fd;
  c->cb = cb;
  c->ctx = ctx;
  c->pending = true;
  c->canceled = false;
  c->link = (struct vsri_list_node){0};
  c->backend_tag = 0;
  c->posted = false;
  c->grave = NULL;
  io->stats.submissions++;
}

/* ---- timers: binary min-heap on deadline ----------------------------------------------- */

static void heap_set(struct vsri_io *io, uint32_t i, struct vsri_completion *c) {
  io->timers[i] = c;
  c->u.timeout.heap_index = i;
}

static void heap_up(struct vsri_io *io, uint32_t i) {
  struct vsri_completion *c = io->timers[i];
  while (i > 0) {
    uint32_t parent = (i - 1) / 2;
    if (io->timers[parent]->u.timeout.deadline_ns <= c->u.timeout.deadline_ns) break;
    heap_set(io, i, io->timers[parent]);
    i = parent;
  }
  heap_set(io, i, c);
}

static void heap_down(struct vsri_io *io, uint32_t i) {
  struct vsri_completion *c = io->timers[i];
  for (;;) {
    uint32_t l = 2 * i + 1, r = l + 1, m = i;
    uint64_t best = c->u.timeout.deadline_ns;
    if (l < io->timers_len && io->timers[l]->u.timeout.deadline_ns < best) {
      m = l;
      best = io->timers[l]->u.timeout.deadline_ns;
    }
    if (r < io->timers_len && io->timers[r]->u.timeout.deadline_ns < best) m = r;
    if (m == i) break;
    heap_set(io, i, io->timers[m]);
    i = m;
  }
  heap_set(io, i, c);
}

static void heap_remove(struct vsri_io *io, struct vsri_completion *c) {
  uint32_t i = c->u.timeout.heap_index;
  io->timers_len--;
  if (i == io->timers_len) return;
  heap_set(io, i, io->timers[io->timers_len]);
  heap_down(io, i);
  heap_up(io, io->timers[i]->u.timeout.heap_index);
}

void vsri_io_timeout(struct vsri_io *io, struct vsri_completion *c, uint64_t ns, vsri_io_cb cb,
                     void *ctx) {
  loop_prepare(io, c, VSRI_OP_TIMEOUT, -1, cb, ctx);
  c->u.timeout.deadline_ns = io->now_ns + ns;
  if (io->timers_len == io->timers_cap) {
    uint32_t cap = io->timers_cap ? io->timers_cap * 2 : 64;
    struct vsri_completion **t = vsri_realloc(io->timers, cap * sizeof *t);
    if (!t) {
      /* Cannot track it: complete at once rather than lose the callback. */
      vsri_io_post(io, c, -ENOMEM);
      return;
    }
    io->timers = t;
    io->timers_cap = cap;
  }
  heap_set(io, io->timers_len++, c);
  heap_up(io, io->timers_len - 1);
}

static int loop_run_timers(struct vsri_io *io) {
  int n = 0;
  while (io->timers_len > 0 && io->timers[0]->u.timeout.deadline_ns <= io->now_ns) {
    struct vsri_completion *c = io->timers[0];
    heap_remove(io, c);
    vsri_io_complete(io, c, 0);
    n++;
  }
  return n;
}

/* ---- before-poll queue ----------------------------------------------------------------- */

void vsri_io_defer(struct vsri_io *io, struct vsri_deferred *d) {
  if (vsri_list_linked(&d->link)) return;
  vsri_list_push_back(&io->deferred, &d->link);
}

void vsri_io_undefer(struct vsri_io *io, struct vsri_deferred *d) {
  (void)io;
  if (vsri_list_linked(&d->link)) vsri_list_remove(&d->link);
}

static void loop_run_deferred(struct vsri_io *io) {
  /* Bounded: work queued by a deferred function runs in the same pass, but a function that
   * keeps re-queuing itself cannot starve the poll. */
  struct vsri_list_node *node;
  for (int budget = 4096; budget > 0 && (node = vsri_list_pop_front(&io->deferred)); budget--) {
    struct vsri_deferred *d = vsri_container_of(node, struct vsri_deferred, link);
    d->fn(d->ctx);
  }
}

/* ---- submissions ----------------------------------------------------------------------- */

void vsri_io_accept(struct vsri_io *io, struct vsri_completion *c, int fd,
                    struct sockaddr_storage *addr, socklen_t *addrlen, vsri_io_cb cb, void *ctx) {
  loop_prepare(io, c, VSRI_OP_ACCEPT, fd, cb, ctx);
  c->u.accept.addr = addr;
  c->u.accept.addrlen = addrlen;
  io->backend->submit(io, c);
}

void vsri_io_connect(struct vsri_io *io, struct vsri_completion *c, int fd,
                     const struct sockaddr *addr, socklen_t addrlen, vsri_io_cb cb, void *ctx) {
  loop_prepare(io, c, VSRI_OP_CONNECT, fd, cb, ctx);
  memcpy(&c->u.connect.addr, addr, addrlen);
  c->u.connect.addrlen = addrlen;
  io->backend->submit(io, c);
}

void vsri_io_recv(struct vsri_io *io, struct vsri_completion *c, int fd, void *buf, size_t len,
                  vsri_io_cb cb, void *ctx) {
  loop_prepare(io, c, VSRI_OP_RECV, fd, cb, ctx);
  c->u.recv.buf = buf;
  c->u.recv.len = len;
  io->backend->submit(io, c);
}

void vsri_io_recv_pooled(struct vsri_io *io, struct vsri_completion *c, int fd, vsri_io_cb cb,
                         void *ctx) {
  loop_prepare(io, c, VSRI_OP_RECV_POOLED, fd, cb, ctx);
  c->u.recv.buf = NULL;
  c->u.recv.len = io->opts.pooled_buf_size;
  io->backend->submit(io, c);
}

void vsri_io_recv_pooled_big(struct vsri_io *io, struct vsri_completion *c, int fd,
                             vsri_io_cb cb, void *ctx) {
  loop_prepare(io, c, VSRI_OP_RECV_POOLED, fd, cb, ctx);
  c->u.recv.buf = NULL;
  /* The backends pick the buffer by this length. */
  c->u.recv.len = io->ready_reads >= io->opts.pooled_big_min_ready ? io->opts.pooled_big_size
                                                                  : io->opts.pooled_buf_size;
  io->backend->submit(io, c);
}

void vsri_io_sendv(struct vsri_io *io, struct vsri_completion *c, int fd,
                   const struct iovec *iov, int iovcnt, vsri_io_cb cb, void *ctx) {
  loop_prepare(io, c, VSRI_OP_SENDV, fd, cb, ctx);
  c->u.sendv.iov = iov;
  c->u.sendv.iovcnt = iovcnt;
  io->backend->submit(io, c);
}

void vsri_io_sendmsg(struct vsri_io *io, struct vsri_completion *c, int fd, struct msghdr *msg,
                     int flags, vsri_io_cb cb, void *ctx) {
  loop_prepare(io, c, VSRI_OP_SENDMSG, fd, cb, ctx);
  c->u.msg.msg = msg;
  c->u.msg.flags = flags;
  io->backend->submit(io, c);
}

void vsri_io_recvmsg(struct vsri_io *io, struct vsri_completion *c, int fd, struct msghdr *msg,
                     int flags, vsri_io_cb cb, void *ctx) {
  loop_prepare(io, c, VSRI_OP_RECVMSG, fd, cb, ctx);
  c->u.msg.msg = msg;
  c->u.msg.flags = flags;
  io->backend->submit(io, c);
}

ssize_t vsri_io_recvmsg_now(struct vsri_io *io, int fd, struct msghdr *msg, int flags) {
  if (io->backend->recvmsg_now) return io->backend->recvmsg_now(io, fd, msg, flags);
  ssize_t r = recvmsg(fd, msg, flags | MSG_DONTWAIT);
  return r < 0 ? -errno : r;
}

ssize_t vsri_io_sendmsg_now(struct vsri_io *io, int fd, const struct msghdr *msg, int flags) {
  if (io->backend->sendmsg_now) return io->backend->sendmsg_now(io, fd, msg, flags);
  ssize_t r = sendmsg(fd, msg, flags | MSG_DONTWAIT | MSG_NOSIGNAL);
  return r < 0 ? -errno : r;
}

void vsri_io_close(struct vsri_io *io, struct vsri_completion *c, int fd, vsri_io_cb cb,
                   void *ctx) {
  loop_prepare(io, c, VSRI_OP_CLOSE, fd, cb, ctx);
  io->backend->submit(io, c);
}

void vsri_io_cancel(struct vsri_io *io, struct vsri_completion *c) {
  if (!c->pending || c->canceled) return;
  c->canceled = true;
  if (c->op == VSRI_OP_TIMEOUT) {
    /* A timer still in the heap has not fired: take it out and complete it from the loop.
     * One that never entered the heap (no memory to grow it) is already posted with -ENOMEM. */
    uint32_t i = c->u.timeout.heap_index;
    if (i >= io->timers_len || io->timers[i] != c) return;
    heap_remove(io, c);
    vsri_io_post(io, c, -ECANCELED);
    return;
  }
  io->backend->cancel(io, c);
}

/* ---- letting go (io.h, "Letting go") ----------------------------------------------------- */

/* Takes a posted completion off the ready list unrun. */
static void loop_unpost(struct vsri_completion *c) {
  vsri_list_remove(&c->link);
  c->posted = false;
  c->pending = false;
  c->op = VSRI_OP_NONE;
}

void vsri_io_timeout_drop(struct vsri_io *io, struct vsri_completion *c) {
  if (!c->pending) return;
  if (c->posted) {
    loop_unpost(c);
    return;
  }
  if (c->op != VSRI_OP_TIMEOUT) return; /* not a timer: vsri_io_release is the way */
  uint32_t i = c->u.timeout.heap_index;
  if (i < io->timers_len && io->timers[i] == c) heap_remove(io, c);
  c->pending = false;
  c->op = VSRI_OP_NONE;
}

void vsri_io_close_now(struct vsri_io *io, int fd) {
  if (fd < 0) return;
  if (io->backend->sock && io->backend->sock->close_now) { /* the simulator's virtual fds */
    io->backend->sock->close_now(io, fd);
    return;
  }
  if (io->backend->forget_fd) io->backend->forget_fd(io, fd);
  close(fd);
}

void vsri_io_release(struct vsri_io *io, struct vsri_io_grave *g,
                     struct vsri_completion *const *cs, size_t n, void (*free_fn)(void *arg),
                     void *arg) {
  g->free_fn = free_fn;
  g->arg = arg;
  g->pending = 0;
  g->link = (struct vsri_list_node){0};
  for (size_t i = 0; i < n; i++) {
    struct vsri_completion *c = cs[i];
    if (!c || !c->pending) continue;
    if (c->op == VSRI_OP_TIMEOUT) {
      vsri_io_timeout_drop(io, c);
      continue;
    }
    /* A close is never canceled (that would leak the descriptor): it is waited for. */
    if (c->op != VSRI_OP_CLOSE) vsri_io_cancel(io, c);
    if (c->posted) { /* finished at once (epoll; io_uring work the kernel never saw) */
      loop_unpost(c);
      continue;
    }
    c->grave = g;
    g->pending++;
  }
  if (g->pending == 0) {
    if (free_fn) free_fn(arg);
    return;
  }
  vsri_list_push_back(&io->graves, &g->link);
  io->ngraves++;
}

uint32_t vsri_io_graves(const struct vsri_io *io) { return io->ngraves; }

void vsri_io_nowait(struct vsri_io *io) { io->nowait = true; }

/* ---- the turn -------------------------------------------------------------------------- */

int vsri_io_run(struct vsri_io *io, int64_t timeout_ns) {
  io->now_ns = loop_clock(io);
  int n = loop_run_ready(io);
  n += loop_run_timers(io);
  loop_run_deferred(io);
  int64_t wait = timeout_ns;
  if (n > 0 || io->nowait || !vsri_list_empty(&io->ready) || !vsri_list_empty(&io->deferred)) {
    wait = 0;
  }
  io->nowait = false;
  if (wait != 0 && io->timers_len > 0) {
    uint64_t deadline = io->timers[0]->u.timeout.deadline_ns;
    int64_t until = deadline > io->now_ns ? (int64_t)(deadline - io->now_ns) : 0;
    if (wait < 0 || until < wait) wait = until;
  }
  /* A held-back log count is reported once its interval ends, even on an idle loop. */
  uint64_t log_due = vsri_log_tick(io->now_ns);
  if (wait != 0 && log_due != 0) {
    int64_t until = log_due > io->now_ns ? (int64_t)(log_due - io->now_ns) : 0;
    if (wait < 0 || until < wait) wait = until;
  }
  if (wait != 0) io->stats.waits++;
  int r = io->backend->poll(io, wait);
  if (r < 0) return r;
  n += r;
  io->now_ns = loop_clock(io);
  n += loop_run_ready(io);
  n += loop_run_timers(io);
  return n;
}
