/* epoll backend: try each operation's syscall at once; on EAGAIN park it on its fd and retry
 * when an edge-triggered readiness event arrives. One read-side and one write-side operation
 * may be parked per fd. Callbacks run from poll(), never from submit(). */
#include <errno.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "io/io_impl.h"
#include "util/alloc.h"
#include "util/log.h"
#include "vsrbus/error.h"

#define EP_EVENTS_MAX 256
/* Completions tried per pass before the kernel is polled again, so a callback that keeps
 * resubmitting cannot starve other fds. */
#define EP_TRIES_PER_PASS 4096
/* Fairness: reads one socket may complete with data between two epoll_pwait2 calls (or bytes,
 * whichever comes first). A socket that keeps filling its reads is read again after the next
 * poll, not until it runs dry, so sockets that became ready meanwhile are seen and served
 * first: one flooding peer costs the others at most this much per turn. */
#define EP_READS_PER_FD 16
#define EP_BYTES_PER_FD (1u << 20)

/* c->backend_tag bits while |c| belongs to this backend (loop.c zeroes it at submit). */
enum {
  EP_CONNECT_ISSUED = 1u << 0, /* connect() was called: later tries read SO_ERROR */
  EP_FRESH = 1u << 1,          /* on ep->fresh through c->link, not tried yet */
};

struct ep_fd {
  struct vsri_completion *rd; /* parked accept / recv / recvmsg */
  struct vsri_completion *wr; /* parked connect / sendv / sendmsg */
  bool registered;            /* added to the epoll set */
  uint32_t rd_epoch;          /* ep->epoch of the counts below */
  uint32_t rd_reads, rd_bytes; /* stream reads with data since that poll (EP_READS_PER_FD) */
};

struct ep {
  int epfd;
  struct ep_fd *fds; /* indexed by fd */
  uint32_t fds_len;
  struct vsri_list fresh; /* submitted, not tried yet, oldest first (EP_FRESH set) */
  struct vsri_list later; /* reads over their socket's budget: tried after the next poll */
  uint32_t epoch;         /* epoll_pwait2 calls so far */
  uint32_t busy;          /* sockets read with data since the last epoll_pwait2 */
  bool waited;            /* the last ep_poll called epoll_pwait2 */
  uint8_t *pooled; /* one RECV_POOLED buffer of the larger pooled size (a small read uses its
                     start): its callback runs before the next recv */
  struct epoll_event events[EP_EVENTS_MAX];
};

static int ep_init(struct vsri_io *io) {
  struct ep *ep = vsri_calloc(1, sizeof *ep);
  if (!ep) return VSR_ENOMEM;
  ep->epfd = epoll_create1(EPOLL_CLOEXEC);
  ep->pooled = vsri_aligned_alloc(4096, io->opts.pooled_big_size);
  if (ep->epfd < 0 || !ep->pooled) {
    int err = ep->epfd < 0 ? VSR_EIO : VSR_ENOMEM;
    if (ep->epfd >= 0) close(ep->epfd);
    vsri_free(ep->pooled);
    vsri_free(ep);
    return err;
  }
  vsri_list_init(&ep->fresh);
  vsri_list_init(&ep->later);
  io->backend_data = ep;
  return 0;
}

static void ep_fini(struct vsri_io *io) {
  struct ep *ep = io->backend_data;
  close(ep->epfd);
  vsri_free(ep->fds);
  vsri_free(ep->pooled);
  vsri_free(ep);
}

static struct ep_fd *ep_slot(struct ep *ep, int fd) {
  if ((uint32_t)fd >= ep->fds_len) {
    uint32_t len = ep->fds_len ? ep->fds_len : 64;
    while (len <= (uint32_t)fd) len *= 2;
    struct ep_fd *fds = vsri_realloc(ep->fds, len * sizeof *fds);
    if (!fds) return NULL;
    memset(fds + ep->fds_len, 0, (len - ep->fds_len) * sizeof *fds);
    ep->fds = fds;
    ep->fds_len = len;
  }
  return &ep->fds[fd];
}

static bool ep_is_read_side(uint8_t op) {
  return op == VSRI_OP_ACCEPT || op == VSRI_OP_RECV || op == VSRI_OP_RECV_POOLED ||
         op == VSRI_OP_RECVMSG;
}

static int32_t ep_connect_result(struct vsri_completion *c) {
  if (!(c->backend_tag & EP_CONNECT_ISSUED)) {
    c->backend_tag |= EP_CONNECT_ISSUED;
    int r = connect(c->fd, (struct sockaddr *)&c->u.connect.addr, c->u.connect.addrlen);
    if (r == 0) return 0;
    return errno == EINPROGRESS ? -EAGAIN : -errno;
  }
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) return -errno;
  if (err == 0) {
    /* Writable with no error may still be in progress on some kernels: confirm. */
    struct sockaddr_storage peer;
    socklen_t plen = sizeof peer;
    if (getpeername(c->fd, (struct sockaddr *)&peer, &plen) < 0) {
      return errno == ENOTCONN ? -EAGAIN : -errno;
    }
    return 0;
  }
  return -err;
}

/* Issues |c|'s syscall once. Returns the result, or -EAGAIN to park. */
static int32_t ep_try(struct ep *ep, struct vsri_completion *c) {
  ssize_t r;
  switch (c->op) {
  case VSRI_OP_ACCEPT:
    r = accept4(c->fd, (struct sockaddr *)c->u.accept.addr, c->u.accept.addrlen,
                SOCK_NONBLOCK | SOCK_CLOEXEC);
    break;
  case VSRI_OP_CONNECT:
    return ep_connect_result(c);
  case VSRI_OP_RECV:
    r = recv(c->fd, c->u.recv.buf, c->u.recv.len, 0);
    break;
  case VSRI_OP_RECV_POOLED:
    c->u.recv.buf = ep->pooled;
    r = recv(c->fd, ep->pooled, c->u.recv.len, 0);
    break;
  case VSRI_OP_SENDV: {
    struct msghdr mh = {.msg_iov = (struct iovec *)c->u.sendv.iov,
                        .msg_iovlen = (size_t)c->u.sendv.iovcnt};
    r = sendmsg(c->fd, &mh, MSG_NOSIGNAL);
    break;
  }
  case VSRI_OP_SENDMSG:
    r = sendmsg(c->fd, c->u.msg.msg, c->u.msg.flags | MSG_NOSIGNAL);
    break;
  case VSRI_OP_RECVMSG:
    r = recvmsg(c->fd, c->u.msg.msg, c->u.msg.flags);
    break;
  case VSRI_OP_CLOSE:
    r = close(c->fd);
    if (r < 0 && errno == EAGAIN) return -EIO; /* never park a close */
    break;
  default:
    return -EINVAL;
  }
  if (r < 0) return errno == EWOULDBLOCK ? -EAGAIN : -errno;
  return (int32_t)(r > INT32_MAX ? INT32_MAX : r);
}

/* Parks |c| until its fd becomes ready. Returns 0 or -errno (then |c| completes with it). */
static int32_t ep_park(struct ep *ep, struct vsri_completion *c) {
  struct ep_fd *s = ep_slot(ep, c->fd);
  if (!s) return -ENOMEM;
  if (!s->registered) {
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
                             .data.fd = c->fd};
    if (epoll_ctl(ep->epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0) return -errno;
    s->registered = true;
  }
  struct vsri_completion **slot = ep_is_read_side(c->op) ? &s->rd : &s->wr;
  if (*slot && *slot != c) return -EBUSY; /* API misuse: one op per side per fd */
  *slot = c;
  return 0;
}

static bool ep_is_stream_read(uint8_t op) {
  return op == VSRI_OP_RECV || op == VSRI_OP_RECV_POOLED;
}

/* True when |c|, a stream read, has used its socket's budget since the last poll. */
static bool ep_over_budget(struct ep *ep, const struct vsri_completion *c) {
  if ((uint32_t)c->fd >= ep->fds_len) return false;
  const struct ep_fd *s = &ep->fds[c->fd];
  return s->rd_epoch == ep->epoch && (s->rd_reads >= EP_READS_PER_FD ||
                                      s->rd_bytes >= EP_BYTES_PER_FD);
}

/* Counts a stream read that returned |res| bytes against its socket's budget, and the socket
 * as busy (io->ready_reads: the sockets of the last poll interval, or more as they come). */
static void ep_count_read(struct vsri_io *io, struct ep *ep, int fd, int32_t res) {
  struct ep_fd *s = ep_slot(ep, fd);
  if (!s) return;
  if (s->rd_epoch != ep->epoch || s->rd_reads == 0) {
    s->rd_epoch = ep->epoch;
    s->rd_reads = 0;
    s->rd_bytes = 0;
    if (++ep->busy > io->ready_reads) io->ready_reads = ep->busy;
  }
  s->rd_reads++;
  s->rd_bytes += (uint32_t)res;
}

/* Tries |c|; completes it or parks it. Returns 1 if a callback ran. */
static int ep_attempt(struct vsri_io *io, struct ep *ep, struct vsri_completion *c) {
  if (c->op == VSRI_OP_CLOSE && (uint32_t)c->fd < ep->fds_len) {
    struct ep_fd *s = &ep->fds[c->fd];
    if (s->registered) epoll_ctl(ep->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    memset(s, 0, sizeof *s);
  }
  int32_t res = ep_try(ep, c);
  if (res == -EAGAIN) {
    res = ep_park(ep, c);
    if (res == 0) return 0;
  }
  if (res > 0 && ep_is_stream_read(c->op)) ep_count_read(io, ep, c->fd, res);
  vsri_io_complete(io, c, res);
  return 1;
}

static void ep_submit(struct vsri_io *io, struct vsri_completion *c) {
  struct ep *ep = io->backend_data;
  c->backend_tag |= EP_FRESH;
  vsri_list_push_back(&ep->fresh, &c->link);
}

/* Takes the oldest fresh completion off the list, or returns NULL. */
static struct vsri_completion *ep_fresh_pop(struct ep *ep) {
  struct vsri_list_node *n = vsri_list_pop_front(&ep->fresh);
  struct vsri_completion *c = vsri_list_entry_or_null(n, struct vsri_completion, link);
  if (c) c->backend_tag &= ~(uint32_t)EP_FRESH;
  return c;
}

static void ep_cancel(struct vsri_io *io, struct vsri_completion *c) {
  struct ep *ep = io->backend_data;
  /* Not tried yet: unlink from the fresh list. */
  if (c->backend_tag & EP_FRESH) {
    c->backend_tag &= ~(uint32_t)EP_FRESH;
    vsri_list_remove(&c->link);
    vsri_io_post(io, c, -ECANCELED);
    return;
  }
  /* Parked on its fd. */
  if ((uint32_t)c->fd < ep->fds_len) {
    struct ep_fd *s = &ep->fds[c->fd];
    if (s->rd == c) s->rd = NULL;
    else if (s->wr == c) s->wr = NULL;
    else return; /* already completing */
    vsri_io_post(io, c, -ECANCELED);
  }
}

static int ep_drain_fresh(struct vsri_io *io, struct ep *ep) {
  int n = 0;
  struct vsri_completion *c;
  for (int tries = 0; tries < EP_TRIES_PER_PASS && (c = ep_fresh_pop(ep)); tries++) {
    if (ep_is_stream_read(c->op) && ep_over_budget(ep, c)) {
      c->backend_tag |= EP_FRESH; /* still untried: ep_cancel unlinks it from |later| */
      vsri_list_push_back(&ep->later, &c->link);
      continue;
    }
    n += ep_attempt(io, ep, c);
  }
  return n;
}

static int ep_poll(struct vsri_io *io, int64_t timeout_ns) {
  struct ep *ep = io->backend_data;
  int n = ep_drain_fresh(io, ep);
  if (n > 0 || !vsri_list_empty(&ep->fresh) || !vsri_list_empty(&ep->later) ||
      !vsri_list_empty(&io->ready)) {
    timeout_ns = 0;
  }
  /* Callbacks ran (typically a write that completed at once) and the previous pass did poll:
   * return without a zero-timeout epoll_pwait2; the caller's next pass polls (and may wait).
   * Every other pass at least polls, so a busy writer cannot starve the other sockets. */
  if (n > 0 && ep->waited) {
    ep->waited = false;
    return n;
  }
  ep->waited = true;
  struct timespec ts, *tsp = NULL;
  if (timeout_ns >= 0) {
    ts.tv_sec = timeout_ns / 1000000000;
    ts.tv_nsec = timeout_ns % 1000000000;
    tsp = &ts;
  }
  io->stats.enters++;
  int k = epoll_pwait2(ep->epfd, ep->events, EP_EVENTS_MAX, tsp, NULL);
  if (k < 0) {
    if (errno == EINTR) return n;
    VSRI_ERROR("VSR-IO", "epoll_pwait2: %s", strerror(errno));
    return VSR_EIO;
  }
  ep->epoch++; /* a new budget for every socket; the reads held back go after the newly ready */
  io->ready_reads = ep->busy; /* sockets read with data between the last two polls */
  ep->busy = 0;
  for (int i = 0; i < k; i++) {
    uint32_t evs = ep->events[i].events;
    int fd = ep->events[i].data.fd;
    if ((uint32_t)fd >= ep->fds_len) continue;
    struct ep_fd *s = &ep->fds[fd];
    if (s->rd && (evs & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))) {
      struct vsri_completion *c = s->rd;
      s->rd = NULL;
      n += ep_attempt(io, ep, c);
    }
    if ((uint32_t)fd < ep->fds_len) s = &ep->fds[fd]; /* a callback may have grown fds */
    if (s->wr && (evs & (EPOLLOUT | EPOLLHUP | EPOLLERR))) {
      struct vsri_completion *c = s->wr;
      s->wr = NULL;
      n += ep_attempt(io, ep, c);
    }
  }
  /* Submissions the callbacks just made (a next recv, a write continuing after a completed
   * one) are tried in this same turn, up to EP_TRIES_PER_PASS; the rest wait for the next
   * turn. Frames newly queued for sending go out later, from the before-poll queue
   * (vsri_io_defer) of the next vsri_io_run, which coalesces them into one write. */
  vsri_list_splice_back(&ep->fresh, &ep->later);
  n += ep_drain_fresh(io, ep);
  return n;
}

/* vsri_io_close_now: the fd leaves the interest set and its slot, so a reused number starts
 * clean. Operations parked on it were canceled (posted) by their owner already. */
static void ep_forget_fd(struct vsri_io *io, int fd) {
  struct ep *ep = io->backend_data;
  if ((uint32_t)fd >= ep->fds_len) return;
  struct ep_fd *s = &ep->fds[fd];
  if (s->registered) epoll_ctl(ep->epfd, EPOLL_CTL_DEL, fd, NULL);
  memset(s, 0, sizeof *s);
}

const struct vsri_io_backend vsri_io_backend_epoll = {
    .name = "epoll",
    .init = ep_init,
    .fini = ep_fini,
    .submit = ep_submit,
    .cancel = ep_cancel,
    .poll = ep_poll,
    .forget_fd = ep_forget_fd,
};
