/* io_uring backend: submit() only fills SQEs; poll() hands them to the kernel and waits in one
 * io_uring_enter per loop turn, then reaps every CQE in batches. RECV_POOLED reads into a
 * provided buffer ring. All memory is allocated at init; nothing is allocated per operation.
 *
 * Choices (see the comments at each site):
 * - accept is one-shot. Multishot accept would keep accepting while nobody asked (the API gives
 *   one callback per submission and leaves backpressure to the listen backlog), and its extra
 *   fds would need a stash; with batching a one-shot accept costs no extra syscall anyway.
 * - SENDV goes out as IORING_OP_SENDMSG with MSG_NOSIGNAL (as epoll.c does with sendmsg(2)):
 *   a dead peer gives -EPIPE, never SIGPIPE. Its msghdr lives in a per-SQ-slot array, which
 *   IORING_FEAT_SUBMIT_STABLE makes safe: the kernel has copied it once the SQE is consumed.
 * - cancel() queues an IORING_OP_ASYNC_CANCEL keyed by the completion; its own CQE carries
 *   user_data 0 and is dropped. The target's CQE gives the one callback (-ECANCELED or its
 *   real result if it had already finished).
 * - -ENOBUFS (buffer ring empty: more receives finished in one batch than there are buffers)
 *   is never surfaced: the receive is queued again after the batch returned its buffers.
 * - -EAGAIN (old kernels on non-blocking sockets) is never surfaced either: the operation
 *   waits for readiness with IORING_OP_POLL_ADD and is then issued again. */
#include <errno.h>
#include <liburing.h>
#include <poll.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "io/io_impl.h"
#include "util/alloc.h"
#include "util/log.h"
#include "vsrbus/error.h"

#define UR_BGID 0          /* RECV_POOLED buffer groups: the small buffers, the big ones */
#define UR_BGID_BIG 1
#define UR_CQE_BATCH 64    /* CQEs copied out of the ring per step */
#define UR_POOLED_MAX 32768 /* buffer ring entries are a power of two <= 32768 */

/* c->backend_tag bits while |c| belongs to this backend (loop.c zeroes it at submit). */
enum {
  UR_IN_KERNEL = 1u << 0,    /* an SQE with user_data == c is queued or in flight */
  UR_BACKLOG = 1u << 1,      /* no SQE was free: linked on ur->backlog through c->link */
  UR_CANCEL_SENT = 1u << 2,  /* an ASYNC_CANCEL SQE targets c */
  UR_CANCEL_WAIT = 1u << 3,  /* cancel wanted, no SQE free: on ur->cancels through c->link */
  UR_POLL_STAGE = 1u << 4,   /* in flight as POLL_ADD; the operation itself comes after */
};

struct ur {
  struct io_uring ring;
  /* The ring starts disabled when SINGLE_ISSUER is on: the thread that first submits (the
   * loop's thread, which may differ from the one that called vsri_io_new) enables it. */
  bool enabled;
  bool warned_eagain;
  bool test_poll_first; /* tests: every operation takes the -EAGAIN path (poll, then issue) */
  /* One msghdr per SQ slot for SENDV-as-SENDMSG; valid until the kernel consumes the SQE. */
  struct msghdr *slot_msgs;
  /* RECV_POOLED buffers, two groups: small (pooled_buf_size) and big (pooled_big_size, for
   * vsri_io_recv_pooled_big). With buffer rings (|br| != NULL) the kernel picks one per
   * receive; without, poll + recv(2) into |scratch| (of the big size). */
  struct ur_bufs {
    struct io_uring_buf_ring *br;
    uint8_t *bufs;
    uint32_t size;
    uint32_t count;
    uint32_t entries;
    uint32_t returned; /* buffers re-added since the last tail advance */
    uint16_t bgid;
  } pool[2];
  struct io_uring_buf_ring *br; /* pool[0].br: non-NULL when buffer rings are in use */
  uint8_t *scratch;
  uint32_t buf_size;      /* pool[0].size */
  uint32_t big_size;      /* pool[1].size (== buf_size: no big group) */
  /* A completion is on at most one of these (UR_BACKLOG: never in the kernel; UR_CANCEL_WAIT:
   * in the kernel), so both share c->link. */
  struct vsri_list backlog; /* waiting for an SQE, in submission order */
  struct vsri_list cancels; /* waiting for an SQE to carry their ASYNC_CANCEL, newest first */
  /* Counted for the debug line at fini (and for tests reading it). */
  uint64_t retries_nobufs;  /* pooled receives issued again after -ENOBUFS */
  uint64_t retries_poll;    /* operations that waited for readiness after -EAGAIN */
  uint64_t backlogged;      /* submissions that found the SQ full and the kernel busy */
};

/* ---- setup ----------------------------------------------------------------------------- */

static bool ur_env_set(const char *name) {
  const char *v = getenv(name);
  return v && *v && strcmp(v, "0") != 0;
}

/* Tries the richest setup first; older kernels reject unknown flags with EINVAL. */
static int ur_setup_ring(struct vsri_io *io, struct ur *ur) {
  static const unsigned sets[] = {
      IORING_SETUP_SUBMIT_ALL | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
          IORING_SETUP_TASKRUN_FLAG | IORING_SETUP_R_DISABLED, /* 6.1 */
      IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG, /* 5.19 */
      0,
  };
  int ret = -EINVAL;
  for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++) {
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    p.flags = sets[i] | IORING_SETUP_CQSIZE | IORING_SETUP_CLAMP;
    p.cq_entries = io->opts.entries * 4;
    ret = io_uring_queue_init_params(io->opts.entries, &ur->ring, &p);
    if (ret == 0) {
      ur->enabled = !(p.flags & IORING_SETUP_R_DISABLED);
      return 0;
    }
    if (ret != -EINVAL) break;
  }
  /* EPERM (seccomp, io_uring_disabled), ENOSYS (old kernel), ENOMEM (memlock): all mean
   * "not here"; AUTO then serves with epoll. */
  VSRI_DEBUG("VSR-IO", "io_uring_queue_init(%u): %s", io->opts.entries, strerror(-ret));
  snprintf(io->unavailable, sizeof io->unavailable, "io_uring_queue_init: %s", strerror(-ret));
  return VSR_EUNSUPPORTED;
}

/* Returns NULL when the ring has what we need, else the name of what is missing. */
static const char *ur_missing(struct ur *ur) {
  static const struct {
    uint32_t bit;
    const char *name;
  } feats[] = {
      {IORING_FEAT_NODROP, "FEAT_NODROP"},
      {IORING_FEAT_SUBMIT_STABLE, "FEAT_SUBMIT_STABLE"},
      {IORING_FEAT_FAST_POLL, "FEAT_FAST_POLL"},
      {IORING_FEAT_EXT_ARG, "FEAT_EXT_ARG"},
  };
  static const struct {
    int op;
    const char *name;
  } ops[] = {
      {IORING_OP_ACCEPT, "ACCEPT"},   {IORING_OP_CONNECT, "CONNECT"},
      {IORING_OP_RECV, "RECV"},       {IORING_OP_SENDMSG, "SENDMSG"},
      {IORING_OP_RECVMSG, "RECVMSG"}, {IORING_OP_CLOSE, "CLOSE"},
      {IORING_OP_ASYNC_CANCEL, "ASYNC_CANCEL"}, {IORING_OP_POLL_ADD, "POLL_ADD"},
  };
  for (size_t i = 0; i < sizeof feats / sizeof feats[0]; i++) {
    if (!(ur->ring.features & feats[i].bit)) return feats[i].name;
  }
  struct io_uring_probe *probe = io_uring_get_probe_ring(&ur->ring);
  if (!probe) return "IORING_REGISTER_PROBE";
  const char *missing = NULL;
  for (size_t i = 0; i < sizeof ops / sizeof ops[0] && !missing; i++) {
    if (!io_uring_opcode_supported(probe, ops[i].op)) missing = ops[i].name;
  }
  io_uring_free_probe(probe);
  return missing;
}

/* The whole pool sits in the ring. The kernel takes buffers FIFO, so all of them cycle through
 * the cache; a LIFO stack feeding a ring of 8 was tried and measured (bench/io_bench, 16 KiB
 * frames × 64 connections): same CPU per byte, so the simple full ring stays. */
/* Registers one RECV_POOLED buffer ring (|b|: size, count and bgid set). Returns 0,
 * VSR_ENOMEM, or VSR_EUNSUPPORTED when the kernel has no buffer rings (then the caller uses
 * the poll + recv path). */
static int ur_setup_buf_ring(struct ur *ur, struct ur_bufs *b) {
  uint32_t entries = 1;
  while (entries < b->count) entries <<= 1;
  b->br = vsri_aligned_alloc(4096, entries * sizeof(struct io_uring_buf));
  b->bufs = vsri_aligned_alloc(4096, (size_t)b->count * b->size);
  if (!b->br || !b->bufs) return VSR_ENOMEM;
  struct io_uring_buf_reg reg;
  memset(&reg, 0, sizeof reg);
  reg.ring_addr = (uint64_t)(uintptr_t)b->br;
  reg.ring_entries = entries;
  reg.bgid = b->bgid;
  int ret = io_uring_register_buf_ring(&ur->ring, &reg, 0);
  if (ret < 0) {
    VSRI_DEBUG("VSR-IO", "io_uring_register_buf_ring: %s; pooled receives poll", strerror(-ret));
    return VSR_EUNSUPPORTED;
  }
  b->entries = entries;
  io_uring_buf_ring_init(b->br);
  int mask = io_uring_buf_ring_mask(entries);
  for (uint32_t i = 0; i < b->count; i++) {
    io_uring_buf_ring_add(b->br, b->bufs + (size_t)i * b->size, b->size, (unsigned short)i,
                          mask, (int)i);
  }
  io_uring_buf_ring_advance(b->br, (int)b->count);
  return 0;
}

static void ur_free(struct ur *ur) {
  vsri_free(ur->slot_msgs);
  for (int i = 0; i < 2; i++) {
    vsri_free(ur->pool[i].br);
    vsri_free(ur->pool[i].bufs);
  }
  vsri_free(ur->scratch);
  vsri_free(ur);
}

static void ur_unregister_bufs(struct ur *ur) {
  for (int i = 0; i < 2; i++) {
    if (ur->pool[i].entries) io_uring_unregister_buf_ring(&ur->ring, ur->pool[i].bgid);
    ur->pool[i].entries = 0;
  }
}

static int ur_setup_buffers(struct vsri_io *io, struct ur *ur) {
  ur->slot_msgs = vsri_calloc(ur->ring.sq.ring_entries, sizeof *ur->slot_msgs);
  if (!ur->slot_msgs) return VSR_ENOMEM;
  ur->buf_size = io->opts.pooled_buf_size;
  ur->big_size = io->opts.pooled_big_size;
  uint32_t counts[2] = {io->opts.pooled_buf_count, io->opts.pooled_big_count};
  uint32_t sizes[2] = {ur->buf_size, ur->big_size};
  int err = 0;
  for (int i = 0; i < 2 && !err; i++) {
    struct ur_bufs *b = &ur->pool[i];
    b->size = sizes[i];
    b->count = counts[i] > UR_POOLED_MAX ? UR_POOLED_MAX : counts[i];
    b->bgid = i ? UR_BGID_BIG : UR_BGID;
    if (i == 1 && ur->big_size == ur->buf_size) break; /* no big group */
    /* Tests force the poll + recv path with VSRBUS_IO_TEST_URING_NO_BUFRING=1. */
    err = ur_env_set("VSRBUS_IO_TEST_URING_NO_BUFRING") ? VSR_EUNSUPPORTED
                                                        : ur_setup_buf_ring(ur, b);
  }
  if (!err) {
    ur->br = ur->pool[0].br;
    return 0;
  }
  if (err != VSR_EUNSUPPORTED) return err;
  ur_unregister_bufs(ur);
  for (int i = 0; i < 2; i++) {
    vsri_free(ur->pool[i].br);
    vsri_free(ur->pool[i].bufs);
    ur->pool[i].br = NULL;
    ur->pool[i].bufs = NULL;
  }
  ur->br = NULL;
  ur->scratch = vsri_aligned_alloc(4096, ur->big_size);
  return ur->scratch ? 0 : VSR_ENOMEM;
}

static int ur_init(struct vsri_io *io) {
  /* Tests prove the epoll fallback with this knob; production never sets it. */
  if (ur_env_set("VSRBUS_IO_TEST_FAIL_URING")) {
    snprintf(io->unavailable, sizeof io->unavailable, "VSRBUS_IO_TEST_FAIL_URING is set");
    return VSR_EUNSUPPORTED;
  }
  struct ur *ur = vsri_calloc(1, sizeof *ur);
  if (!ur) return VSR_ENOMEM;
  vsri_list_init(&ur->backlog);
  vsri_list_init(&ur->cancels);
  int err = ur_setup_ring(io, ur);
  if (err) {
    vsri_free(ur);
    return err;
  }
  const char *missing = ur_missing(ur);
  if (missing) {
    VSRI_DEBUG("VSR-IO", "io_uring lacks %s", missing);
  snprintf(io->unavailable, sizeof io->unavailable, "kernel lacks %s", missing);
    err = VSR_EUNSUPPORTED;
  } else {
    err = ur_setup_buffers(io, ur);
  }
  if (err) {
    ur_unregister_bufs(ur);
    io_uring_queue_exit(&ur->ring);
    ur_free(ur);
    return err;
  }
  /* Tests exercise the readiness path old kernels need with VSRBUS_IO_TEST_URING_POLL_FIRST=1. */
  ur->test_poll_first = ur_env_set("VSRBUS_IO_TEST_URING_POLL_FIRST");
  io->backend_data = ur;
  VSRI_DEBUG("VSR-IO", "io_uring: %u SQ, %u CQ entries, setup flags 0x%x, buffer ring %s",
             ur->ring.sq.ring_entries, ur->ring.cq.ring_entries, ur->ring.flags,
             ur->br ? "yes" : "no (poll + recv)");
  return 0;
}

static void ur_fini(struct vsri_io *io) {
  struct ur *ur = io->backend_data;
  VSRI_DEBUG("VSR-IO", "io_uring: %llu -ENOBUFS retries, %llu readiness waits, %llu backlogged",
             (unsigned long long)ur->retries_nobufs, (unsigned long long)ur->retries_poll,
             (unsigned long long)ur->backlogged);
  ur_unregister_bufs(ur);
  io_uring_queue_exit(&ur->ring);
  ur_free(ur);
  io->backend_data = NULL;
}

/* ---- entering the kernel --------------------------------------------------------------- */

/* Enables a R_DISABLED ring from the thread that runs the loop, which makes it the single
 * issuer, and registers the ring fd for that thread (saves an fd lookup per enter). */
static int ur_enable(struct ur *ur) {
  if (ur->enabled) return 0;
  /* io_uring_enable_rings() is declared by liburing 2.3 but missing from its symbol map. */
  int ret = io_uring_register((unsigned)ur->ring.ring_fd, IORING_REGISTER_ENABLE_RINGS, NULL, 0);
  if (ret < 0) {
    VSRI_ERROR("VSR-IO", "io_uring_enable_rings: %s", strerror(-ret));
    return VSR_EIO;
  }
  ur->enabled = true;
  (void)io_uring_register_ring_fd(&ur->ring); /* optional (5.18); plain fd otherwise */
  return 0;
}

/* Returns a free SQE, first pushing queued ones to the kernel if the SQ is full; NULL if the
 * kernel refuses to take them now (the caller then keeps the work for the next turn). */
static struct io_uring_sqe *ur_get_sqe(struct vsri_io *io, struct ur *ur) {
  struct io_uring_sqe *sqe = io_uring_get_sqe(&ur->ring);
  if (sqe) return sqe;
  if (ur_enable(ur)) return NULL;
  io->stats.enters++;
  int ret = io_uring_submit(&ur->ring);
  if (ret < 0 && ret != -EBUSY && ret != -EAGAIN && ret != -EINTR) {
    VSRI_WARN("VSR-IO", "io_uring_submit: %s", strerror(-ret));
  }
  return io_uring_get_sqe(&ur->ring);
}

/* One io_uring_enter: submits every queued SQE and waits up to |timeout_ns| for a completion
 * (-1: forever, 0: not at all). Returns 0 or VSR_EIO. */
static int ur_enter(struct vsri_io *io, struct ur *ur, int64_t timeout_ns) {
  int err = ur_enable(ur);
  if (err) return err;
  struct io_uring *ring = &ur->ring;
  int ret;
  if (timeout_ns == 0 || io_uring_cq_ready(ring) > 0) {
    /* Nothing to submit and nothing the kernel holds back: skip the syscall. With
     * DEFER_TASKRUN finished work waits for us to enter; TASKRUN_FLAG makes the kernel say so
     * in IORING_SQ_TASKRUN, which keeps a caller that polls with timeout 0 syscall-free. */
    unsigned kflags = IO_URING_READ_ONCE(*ring->sq.kflags);
    if (io_uring_sq_ready(ring) == 0 && !(kflags & (IORING_SQ_CQ_OVERFLOW | IORING_SQ_TASKRUN))) {
      return 0;
    }
    ret = io_uring_submit_and_get_events(ring);
  } else if (timeout_ns < 0) {
    ret = io_uring_submit_and_wait(ring, 1);
  } else {
    struct __kernel_timespec ts = {.tv_sec = timeout_ns / 1000000000,
                                   .tv_nsec = timeout_ns % 1000000000};
    struct io_uring_cqe *cqe;
    ret = io_uring_submit_and_wait_timeout(ring, &cqe, 1, &ts, NULL);
  }
  io->stats.enters++;
  if (ret >= 0 || ret == -ETIME || ret == -EINTR || ret == -EAGAIN || ret == -EBUSY) return 0;
  VSRI_ERROR("VSR-IO", "io_uring_enter: %s", strerror(-ret));
  return VSR_EIO;
}

/* ---- submissions ----------------------------------------------------------------------- */

/* The buffer group a pooled receive reads from: the big one when it asked for more than the
 * small size (vsri_io_recv_pooled_big) and there is one. */
static struct ur_bufs *ur_pooled(struct ur *ur, const struct vsri_completion *c) {
  return c->u.recv.len > ur->buf_size && ur->pool[1].entries ? &ur->pool[1] : &ur->pool[0];
}

static bool ur_is_read_side(uint8_t op) {
  return op == VSRI_OP_ACCEPT || op == VSRI_OP_RECV || op == VSRI_OP_RECV_POOLED ||
         op == VSRI_OP_RECVMSG;
}

/* Like epoll.c, SENDV is sendmsg(MSG_NOSIGNAL): sockets only (-ENOTSOCK otherwise). */
static void ur_prep_sendv(struct ur *ur, struct io_uring_sqe *sqe, struct vsri_completion *c) {
  struct msghdr *mh = &ur->slot_msgs[sqe - ur->ring.sq.sqes];
  memset(mh, 0, sizeof *mh);
  mh->msg_iov = (struct iovec *)c->u.sendv.iov;
  mh->msg_iovlen = (size_t)c->u.sendv.iovcnt;
  io_uring_prep_sendmsg(sqe, c->fd, mh, MSG_NOSIGNAL);
}

static void ur_prep(struct ur *ur, struct io_uring_sqe *sqe, struct vsri_completion *c) {
  if (c->backend_tag & UR_POLL_STAGE) {
    io_uring_prep_poll_add(sqe, c->fd, ur_is_read_side(c->op) ? POLLIN : POLLOUT);
    io_uring_sqe_set_data(sqe, c);
    return;
  }
  switch (c->op) {
  case VSRI_OP_ACCEPT:
    io_uring_prep_accept(sqe, c->fd, (struct sockaddr *)c->u.accept.addr, c->u.accept.addrlen,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);
    break;
  case VSRI_OP_CONNECT:
    io_uring_prep_connect(sqe, c->fd, (struct sockaddr *)&c->u.connect.addr,
                          c->u.connect.addrlen);
    break;
  case VSRI_OP_RECV:
    io_uring_prep_recv(sqe, c->fd, c->u.recv.buf, c->u.recv.len, 0);
    break;
  case VSRI_OP_RECV_POOLED:
    io_uring_prep_recv(sqe, c->fd, NULL, ur_pooled(ur, c)->size, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = ur_pooled(ur, c)->bgid;
    break;
  case VSRI_OP_SENDV:
    ur_prep_sendv(ur, sqe, c);
    break;
  case VSRI_OP_SENDMSG:
    io_uring_prep_sendmsg(sqe, c->fd, c->u.msg.msg, (unsigned)(c->u.msg.flags | MSG_NOSIGNAL));
    break;
  case VSRI_OP_RECVMSG:
    /* MSG_DONTWAIT would make io_uring return -EAGAIN instead of waiting for a datagram. */
    io_uring_prep_recvmsg(sqe, c->fd, c->u.msg.msg, (unsigned)(c->u.msg.flags & ~MSG_DONTWAIT));
    break;
  case VSRI_OP_CLOSE:
    io_uring_prep_close(sqe, c->fd);
    break;
  default: /* ur_submit refuses other ops */
    break;
  }
  io_uring_sqe_set_data(sqe, c);
}

static void ur_backlog_push(struct ur *ur, struct vsri_completion *c) {
  ur->backlogged++;
  c->backend_tag |= UR_BACKLOG;
  vsri_list_push_back(&ur->backlog, &c->link);
}

static void ur_place(struct ur *ur, struct io_uring_sqe *sqe, struct vsri_completion *c) {
  /* Without a buffer ring a pooled receive waits for readiness, then recv(2)s in poll. */
  if (c->op == VSRI_OP_RECV_POOLED && !ur->br) c->backend_tag |= UR_POLL_STAGE;
  ur_prep(ur, sqe, c);
  c->backend_tag |= UR_IN_KERNEL;
}

/* Puts |c| into an SQE, or on the backlog when none is free. */
static void ur_queue(struct vsri_io *io, struct ur *ur, struct vsri_completion *c) {
  struct io_uring_sqe *sqe = ur_get_sqe(io, ur);
  if (sqe) ur_place(ur, sqe, c);
  else ur_backlog_push(ur, c);
}

static void ur_submit(struct vsri_io *io, struct vsri_completion *c) {
  struct ur *ur = io->backend_data;
  if (c->op < VSRI_OP_ACCEPT || c->op > VSRI_OP_CLOSE) {
    vsri_io_post(io, c, -EINVAL); /* as epoll.c: not an fd operation */
    return;
  }
  if (ur->test_poll_first && c->op != VSRI_OP_CLOSE) c->backend_tag |= UR_POLL_STAGE;
  ur_queue(io, ur, c);
}

/* ---- cancel ---------------------------------------------------------------------------- */

/* Queues the ASYNC_CANCEL for |c|. Returns false if no SQE is free. */
static bool ur_send_cancel(struct vsri_io *io, struct ur *ur, struct vsri_completion *c) {
  struct io_uring_sqe *sqe = ur_get_sqe(io, ur);
  if (!sqe) return false;
  io_uring_prep_cancel64(sqe, (uint64_t)(uintptr_t)c, 0);
  io_uring_sqe_set_data64(sqe, 0); /* its own CQE is dropped */
  c->backend_tag |= UR_CANCEL_SENT;
  return true;
}

static void ur_cancel(struct vsri_io *io, struct vsri_completion *c) {
  struct ur *ur = io->backend_data;
  uint32_t tag = c->backend_tag;
  if (tag & UR_BACKLOG) {
    /* The kernel never saw it: finish it from the loop. */
    vsri_list_remove(&c->link);
    c->backend_tag = 0;
    vsri_io_post(io, c, -ECANCELED);
    return;
  }
  if (!(tag & UR_IN_KERNEL) || (tag & (UR_CANCEL_SENT | UR_CANCEL_WAIT))) return;
  if (ur_send_cancel(io, ur, c)) return;
  c->backend_tag |= UR_CANCEL_WAIT;
  vsri_list_push_front(&ur->cancels, &c->link);
}

/* Retries work that found no free SQE earlier. */
static void ur_flush_waiting(struct vsri_io *io, struct ur *ur) {
  struct vsri_list_node *n;
  while ((n = vsri_list_front(&ur->cancels))) {
    struct vsri_completion *c = vsri_container_of(n, struct vsri_completion, link);
    if (!ur_send_cancel(io, ur, c)) return;
    vsri_list_remove(n);
    c->backend_tag &= ~(uint32_t)UR_CANCEL_WAIT;
  }
  while (!vsri_list_empty(&ur->backlog)) {
    struct io_uring_sqe *sqe = ur_get_sqe(io, ur);
    if (!sqe) return; /* keep the order: retry next turn */
    struct vsri_completion *c =
        vsri_container_of(vsri_list_pop_front(&ur->backlog), struct vsri_completion, link);
    c->backend_tag &= ~(uint32_t)UR_BACKLOG;
    ur_place(ur, sqe, c);
  }
}

/* ---- completions ----------------------------------------------------------------------- */

/* Gives buffer |bid| back to its ring; the tail moves once per reaped batch. The buffer goes
 * in at the tail, so the ring hands buffers out in the order they came back (FIFO). */
static void ur_buf_return(struct ur_bufs *b, unsigned bid) {
  io_uring_buf_ring_add(b->br, b->bufs + (size_t)bid * b->size, b->size, (unsigned short)bid,
                        io_uring_buf_ring_mask(b->entries), (int)b->returned++);
}

static int ur_finish(struct vsri_io *io, struct vsri_completion *c, int32_t res) {
  c->backend_tag = 0;
  vsri_io_complete(io, c, res);
  return 1;
}

/* A POLL_ADD stage fired: issue the real operation (or, for a pooled receive without a
 * buffer ring, recv(2) into the scratch buffer). Returns callbacks run. */
static int ur_poll_fired(struct vsri_io *io, struct ur *ur, struct vsri_completion *c,
                         int32_t res) {
  c->backend_tag &= ~(uint32_t)UR_POLL_STAGE;
  if (res < 0) return ur_finish(io, c, res);
  if (c->canceled) return ur_finish(io, c, -ECANCELED);
  if (c->op != VSRI_OP_RECV_POOLED || ur->br) {
    ur_queue(io, ur, c);
    return 0;
  }
  ssize_t r = recv(c->fd, ur->scratch, c->u.recv.len, MSG_DONTWAIT);
  if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
    ur_queue(io, ur, c); /* spurious wake-up: poll again */
    return 0;
  }
  c->u.recv.buf = ur->scratch;
  return ur_finish(io, c, r < 0 ? -errno : (int32_t)r);
}

/* True when |res| is not the operation's answer but a reason to issue it again. */
static bool ur_want_retry(struct ur *ur, struct vsri_completion *c, int32_t res) {
  if (res == -ENOBUFS && c->op == VSRI_OP_RECV_POOLED) {
    ur->retries_nobufs++;
    return true;
  }
  bool again = res == -EAGAIN ||
               (c->op == VSRI_OP_CONNECT && (res == -EINPROGRESS || res == -EALREADY));
  if (!again || c->op == VSRI_OP_CLOSE) return false;
  if (!ur->warned_eagain) {
    ur->warned_eagain = true;
    VSRI_INFO("VSR-IO", "io_uring returned %s for op %u; waiting for readiness instead",
              strerror(-res), c->op);
  }
  ur->retries_poll++;
  c->backend_tag |= UR_POLL_STAGE;
  return true;
}

static int ur_cqe(struct vsri_io *io, struct ur *ur, struct vsri_completion *c, int32_t res,
                  uint32_t flags) {
  uint32_t tag = c->backend_tag;
  c->backend_tag &= ~(uint32_t)(UR_IN_KERNEL | UR_CANCEL_SENT);
  if (tag & UR_CANCEL_WAIT) {
    vsri_list_remove(&c->link);
    c->backend_tag &= ~(uint32_t)UR_CANCEL_WAIT;
  }
  if (tag & UR_POLL_STAGE) return ur_poll_fired(io, ur, c, res);
  int bid = (flags & IORING_CQE_F_BUFFER) ? (int)(flags >> IORING_CQE_BUFFER_SHIFT) : -1;
  if (bid < 0 && ur_want_retry(ur, c, res)) {
    if (c->canceled) return ur_finish(io, c, -ECANCELED);
    ur_queue(io, ur, c);
    return 0;
  }
  /* The group is read before the callback: it may resubmit |c| with another length (or a
   * released |c| may be freed by its grave). */
  struct ur_bufs *b = bid >= 0 ? ur_pooled(ur, c) : NULL;
  if (b) c->u.recv.buf = b->bufs + (size_t)bid * b->size;
  int n = ur_finish(io, c, res);
  /* The callback has returned: the buffer is free again. */
  if (b && ur->br) ur_buf_return(b, (unsigned)bid);
  return n;
}

/* Runs every CQE the ring holds (bounded by one CQ's worth per turn). */
static int ur_reap(struct vsri_io *io, struct ur *ur) {
  struct io_uring_cqe *cqes[UR_CQE_BATCH];
  struct {
    uint64_t user_data;
    int32_t res;
    uint32_t flags;
  } got[UR_CQE_BATCH];
  int n = 0;
  uint32_t reads = 0;
  unsigned budget = ur->ring.cq.ring_entries;
  while (budget > 0) {
    unsigned want = budget < UR_CQE_BATCH ? budget : UR_CQE_BATCH;
    unsigned k = io_uring_peek_batch_cqe(&ur->ring, cqes, want);
    if (k == 0) break;
    /* Copy out and release the slots before any callback runs. */
    for (unsigned i = 0; i < k; i++) {
      got[i].user_data = cqes[i]->user_data;
      got[i].res = cqes[i]->res;
      got[i].flags = cqes[i]->flags;
    }
    io_uring_cq_advance(&ur->ring, k);
    budget -= k;
    for (unsigned i = 0; i < k; i++) {
      if (got[i].user_data == 0) continue; /* an internal cancel */
      struct vsri_completion *c = (struct vsri_completion *)(uintptr_t)got[i].user_data;
      reads += c->op == VSRI_OP_RECV || c->op == VSRI_OP_RECV_POOLED;
      n += ur_cqe(io, ur, c, got[i].res, got[i].flags);
    }
    for (int i = 0; i < 2; i++) {
      struct ur_bufs *b = &ur->pool[i];
      if (b->returned) {
        io_uring_buf_ring_advance(b->br, (int)b->returned);
        b->returned = 0;
      }
    }
  }
  if (reads > 0) io->ready_reads = reads; /* busy sockets (vsri_io_recv_pooled_big) */
  return n;
}

static int ur_poll(struct vsri_io *io, int64_t timeout_ns) {
  struct ur *ur = io->backend_data;
  ur_flush_waiting(io, ur);
  if (!vsri_list_empty(&io->ready) || !vsri_list_empty(&ur->backlog)) timeout_ns = 0;
  int err = ur_enter(io, ur, timeout_ns);
  if (err) return err;
  return ur_reap(io, ur);
}

/* vsri_io_close_now: an SQE still in the ring names |fd| by number; once close(2) runs, the
 * number may be reused before the SQE is issued. Issue every queued SQE now (the owner's
 * cancels included): the kernel resolves the descriptor at issue and holds the file from
 * then on. */
static void ur_forget_fd(struct vsri_io *io, int fd) {
  (void)fd;
  struct ur *ur = io->backend_data;
  if (io_uring_sq_ready(&ur->ring) == 0 || ur_enable(ur)) return;
  io->stats.enters++;
  int ret = io_uring_submit(&ur->ring);
  if (ret < 0 && ret != -EBUSY && ret != -EAGAIN && ret != -EINTR) {
    VSRI_WARN("VSR-IO", "io_uring_submit: %s", strerror(-ret));
  }
}

const struct vsri_io_backend vsri_io_backend_uring = {
    .name = "io_uring",
    .init = ur_init,
    .fini = ur_fini,
    .submit = ur_submit,
    .cancel = ur_cancel,
    .poll = ur_poll,
    .forget_fd = ur_forget_fd,
};
