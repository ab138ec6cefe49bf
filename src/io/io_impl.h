/* Internal to src/io: the loop object and the backend interface.
 * loop.c owns timers, the before-poll queue and the clock; a backend (epoll.c, uring.c) owns
 * every fd operation and the kernel wait. */
#ifndef VSRI_IO_IMPL_H
#define VSRI_IO_IMPL_H

#include "io.h"

/* Synchronous socket setup (io.h, vsri_io_socket ...): same contracts, -errno on failure. */
struct vsri_io_sockops {
  int (*socket)(struct vsri_io *io, int family, int type);
  int (*bind)(struct vsri_io *io, int fd, const struct sockaddr *addr, socklen_t len);
  int (*listen)(struct vsri_io *io, int fd, int backlog);
  int (*setsockopt)(struct vsri_io *io, int fd, int level, int name, const void *val,
                    socklen_t len);
  int (*getsockname)(struct vsri_io *io, int fd, struct sockaddr *addr, socklen_t *len);
  int (*shutdown)(struct vsri_io *io, int fd, int how);
  int (*connect_dgram)(struct vsri_io *io, int fd, const struct sockaddr *addr, socklen_t len);
  int (*close_now)(struct vsri_io *io, int fd); /* NULL: close(2) after forget_fd */
};

/* The kernel's sockets: epoll and io_uring share it (sock.c). */
extern const struct vsri_io_sockops vsri_io_sockops_posix;

struct vsri_io_backend {
  const char *name;
  /* Socket setup; NULL: vsri_io_sockops_posix. */
  const struct vsri_io_sockops *sock;
  /* The loop's clock in ns; NULL: CLOCK_MONOTONIC. The simulator's virtual time. */
  uint64_t (*clock)(struct vsri_io *io);
  /* Returns 0, VSR_EUNSUPPORTED (kernel or sandbox refuses it) or VSR_ENOMEM. */
  int (*init)(struct vsri_io *io);
  void (*fini)(struct vsri_io *io);
  /* Takes a fd operation (never VSRI_OP_TIMEOUT). Must not run the callback. */
  void (*submit)(struct vsri_io *io, struct vsri_completion *c);
  /* Best-effort early completion of a pending fd operation with -ECANCELED. */
  void (*cancel)(struct vsri_io *io, struct vsri_completion *c);
  /* Issues queued submissions, waits up to |timeout_ns| (-1 forever, 0 not at all) and runs
   * completions through vsri_io_complete(). Returns callbacks run, or VSR_EIO. */
  int (*poll)(struct vsri_io *io, int64_t timeout_ns);
  /* |fd| is about to be closed with close(2) by vsri_io_close_now: forget it (epoll: off the
   * interest set) and make sure no queued submission names it later (io_uring: push queued
   * SQEs to the kernel now). May be NULL when the backend keeps no per-fd state. */
  void (*forget_fd)(struct vsri_io *io, int fd);
  /* vsri_io_recvmsg_now / _sendmsg_now (io.h's datagram contract). NULL: the loop issues
   * recvmsg(2) / sendmsg(2) with MSG_DONTWAIT itself (epoll, io_uring); a simulated backend
   * supplies its own. */
  ssize_t (*recvmsg_now)(struct vsri_io *io, int fd, struct msghdr *msg, int flags);
  ssize_t (*sendmsg_now)(struct vsri_io *io, int fd, const struct msghdr *msg, int flags);
};

extern const struct vsri_io_backend vsri_io_backend_epoll;
extern const struct vsri_io_backend vsri_io_backend_uring;

/* Creates a loop on |backend| (never chosen by VSRBUS_IO: the simulator's). |backend_data| is
 * set before backend->init runs, which may replace it. */
int vsri_io_new_on(struct vsri_io **out, const struct vsri_io_options *o,
                   const struct vsri_io_backend *backend, void *backend_data);

struct vsri_io {
  const struct vsri_io_backend *backend;
  void *backend_data;
  struct vsri_io_options opts;
  uint64_t now_ns;
  /* Binary min-heap of pending timeouts by deadline; c->u.timeout.heap_index is the slot. */
  struct vsri_completion **timers;
  uint32_t timers_len;
  uint32_t timers_cap;
  /* Completions finished outside poll (cancels, posts), oldest first, through c->link:
   * callbacks run from vsri_io_run. */
  struct vsri_list ready;
  /* Before-poll work, oldest first, through d->link. */
  struct vsri_list deferred;
  /* Released blocks whose completions the kernel still holds (struct vsri_io_grave.link). */
  struct vsri_list graves;
  uint32_t ngraves;
  bool nowait; /* vsri_io_nowait: the next wait does not block */
  /* How many sockets are busy, for vsri_io_recv_pooled_big. Set by the backends: epoll, the
   * sockets read with data between the last two polls (raised as more are read since);
   * io_uring, the receive completions of the last batch that had any. */
  uint32_t ready_reads;
  struct vsri_io_stats stats;
  char unavailable[128]; /* why a backend's init refused, for the fallback log line */
};

/* Marks |c| idle and runs its callback with |res|. For backends, from poll() only. */
void vsri_io_complete(struct vsri_io *io, struct vsri_completion *c, int32_t res);

/* Queues |c| to complete with |res| from the loop (never from inside the caller). */
void vsri_io_post(struct vsri_io *io, struct vsri_completion *c, int32_t res);

#endif
