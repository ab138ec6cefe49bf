/* io: the completion-based event loop under every transport.
 *
 * The caller owns a struct vsri_completion, fills it through one of the submit functions below
 * and gets exactly one callback per submission: with the result (>= 0: bytes or fd) or a
 * negative errno (-ECANCELED after vsri_io_cancel). Callbacks never run inside a submit call;
 * they run from vsri_io_run(). A completion must not be reused or freed until its callback
 * has run. Backends (epoll.c, uring.c) sit behind struct vsri_io_backend (io_impl.h) and are
 * chosen at run time; nothing above this header knows which one runs.
 *
 * Buffers, iovecs and msghdrs passed in must stay valid until the callback. Timers and the
 * before-poll queue are backend-independent (loop.c). One io object belongs to one thread. */
#ifndef VSRI_IO_H
#define VSRI_IO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "util/list.h"

struct vsri_io;
struct vsri_completion;

typedef void (*vsri_io_cb)(struct vsri_io *io, struct vsri_completion *c, int32_t res);

enum vsri_op {
  VSRI_OP_NONE = 0,
  VSRI_OP_ACCEPT,
  VSRI_OP_CONNECT,
  VSRI_OP_RECV,        /* into the caller's buffer */
  VSRI_OP_RECV_POOLED, /* into a loop-owned buffer, valid only during the callback */
  VSRI_OP_SENDV,       /* iovecs on a stream socket: sendmsg(2), MSG_NOSIGNAL */
  VSRI_OP_SENDMSG,     /* the caller's msghdr (datagrams, control messages) */
  VSRI_OP_RECVMSG,
  VSRI_OP_CLOSE,
  VSRI_OP_TIMEOUT,
};

struct vsri_completion {
  vsri_io_cb cb;
  void *ctx;
  uint8_t op;      /* enum vsri_op; VSRI_OP_NONE when idle */
  bool pending;    /* true from submit until the callback starts */
  bool canceled;   /* vsri_io_cancel was called on this submission */
  int fd;
  union {
    struct {
      struct sockaddr_storage *addr; /* may be NULL */
      socklen_t *addrlen;
    } accept;
    struct {
      struct sockaddr_storage addr;
      socklen_t addrlen;
    } connect;
    struct {
      void *buf; /* RECV: caller's; RECV_POOLED: set by the loop for the callback */
      size_t len;
    } recv;
    struct {
      const struct iovec *iov;
      int iovcnt;
    } sendv;
    struct {
      struct msghdr *msg;
      int flags;
    } msg; /* SENDMSG, RECVMSG */
    struct {
      uint64_t deadline_ns; /* CLOCK_MONOTONIC */
      uint32_t heap_index;
    } timeout;
  } u;
  /* Loop- and backend-private from here on. */
  struct vsri_list_node link; /* on at most one list: the loop's ready list or a backend's */
  int32_t result;       /* result carried while queued on the loop's ready list */
  uint32_t backend_tag;
};

enum vsri_io_backend_kind { VSRI_IO_AUTO = 0, VSRI_IO_EPOLL, VSRI_IO_URING };

struct vsri_io_options {
  enum vsri_io_backend_kind backend; /* AUTO: VSRBUS_IO env, then io_uring, then epoll */
  uint32_t entries;                  /* io_uring queue depth; default 1024 */
  uint32_t pooled_buf_size;          /* RECV_POOLED buffer size; default 64 KiB */
  uint32_t pooled_buf_count;         /* RECV_POOLED buffers (io_uring ring); default 8 */
};

void vsri_io_options_default(struct vsri_io_options *o);

/* Creates a loop. Returns 0, VSR_EUNSUPPORTED (backend forced and unavailable), VSR_ENOMEM,
 * or VSR_EIO. AUTO logs one line when it falls back from io_uring to epoll. */
int vsri_io_new(struct vsri_io **out, const struct vsri_io_options *o);

/* Frees the loop. Every submission must have completed. */
void vsri_io_del(struct vsri_io *io);

/* "epoll" or "io_uring". */
const char *vsri_io_backend_name(const struct vsri_io *io);

/* Runs ready callbacks, then waits up to |timeout_ns| (-1: no limit, 0: do not wait) for more
 * and runs those. The before-poll queue is drained before any wait. Returns the number of
 * callbacks run, or VSR_EIO if waiting failed. */
int vsri_io_run(struct vsri_io *io, int64_t timeout_ns);

/* Monotonic time in ns, sampled once per loop turn (cheap). vsri_io_now_fresh re-reads. */
uint64_t vsri_io_now(const struct vsri_io *io);
uint64_t vsri_io_now_fresh(struct vsri_io *io);

/* Submissions. |fd| must be non-blocking. One read-side (accept/recv/recvmsg) and one
 * write-side (connect/sendv/sendmsg) operation may be pending per fd at a time. */
void vsri_io_accept(struct vsri_io *io, struct vsri_completion *c, int fd,
                    struct sockaddr_storage *addr, socklen_t *addrlen, vsri_io_cb cb, void *ctx);
void vsri_io_connect(struct vsri_io *io, struct vsri_completion *c, int fd,
                     const struct sockaddr *addr, socklen_t addrlen, vsri_io_cb cb, void *ctx);
void vsri_io_recv(struct vsri_io *io, struct vsri_completion *c, int fd, void *buf, size_t len,
                  vsri_io_cb cb, void *ctx);
/* Receives into a loop-owned buffer: in the callback c->u.recv.buf points at |res| bytes; the
 * buffer returns to the loop when the callback returns. */
void vsri_io_recv_pooled(struct vsri_io *io, struct vsri_completion *c, int fd, vsri_io_cb cb,
                         void *ctx);
/* Sends |iovcnt| iovecs on a connected stream socket: one sendmsg(2) with MSG_NOSIGNAL (a
 * dead peer gives -EPIPE, never SIGPIPE), so sockets only (-ENOTSOCK otherwise). Result: the
 * bytes the kernel took, possibly fewer than asked. */
void vsri_io_sendv(struct vsri_io *io, struct vsri_completion *c, int fd,
                   const struct iovec *iov, int iovcnt, vsri_io_cb cb, void *ctx);
/* sendmsg(2) / recvmsg(2) with the caller's msghdr (address, control messages): datagrams. */
void vsri_io_sendmsg(struct vsri_io *io, struct vsri_completion *c, int fd, struct msghdr *msg,
                     int flags, vsri_io_cb cb, void *ctx);
void vsri_io_recvmsg(struct vsri_io *io, struct vsri_completion *c, int fd, struct msghdr *msg,
                     int flags, vsri_io_cb cb, void *ctx);
/* Closes |fd|; no other operation on it may be pending. Result 0 or -errno. */
void vsri_io_close(struct vsri_io *io, struct vsri_completion *c, int fd, vsri_io_cb cb,
                   void *ctx);
/* Fires after |ns| nanoseconds with res 0 (or -ECANCELED). */
void vsri_io_timeout(struct vsri_io *io, struct vsri_completion *c, uint64_t ns, vsri_io_cb cb,
                     void *ctx);

/* Asks a pending submission to finish early. Its callback still runs exactly once, with
 * -ECANCELED or with its real result if it had already finished. No-op if not pending. */
void vsri_io_cancel(struct vsri_io *io, struct vsri_completion *c);

/* Work deferred to just before the loop waits: the batching point for coalesced writes.
 * Queuing an already queued item is a no-op. The function may queue more deferred work. */
struct vsri_deferred {
  void (*fn)(void *ctx);
  void *ctx;
  struct vsri_list_node link; /* linked exactly while queued; zero-initialised: not queued */
};
void vsri_io_defer(struct vsri_io *io, struct vsri_deferred *d);
/* Removes |d| from the queue if it is queued. */
void vsri_io_undefer(struct vsri_io *io, struct vsri_deferred *d);

/* Socket setup, synchronous (no completion): real syscalls on the epoll and io_uring backends
 * (one shared implementation, sock.c), virtual sockets in the simulator (sim.c). Every socket
 * is non-blocking and close-on-exec. Each returns the fd (vsri_io_socket) or 0, or -errno. */
int vsri_io_socket(struct vsri_io *io, int family, int type); /* SOCK_STREAM or SOCK_DGRAM */
int vsri_io_bind(struct vsri_io *io, int fd, const struct sockaddr *addr, socklen_t len);
int vsri_io_listen(struct vsri_io *io, int fd, int backlog);
int vsri_io_setsockopt(struct vsri_io *io, int fd, int level, int name, const void *val,
                       socklen_t len);
int vsri_io_getsockname(struct vsri_io *io, int fd, struct sockaddr *addr, socklen_t *len);
int vsri_io_shutdown(struct vsri_io *io, int fd, int how);
/* Closes |fd| at once, for a socket no operation was ever submitted on (a refused accept, a
 * socket whose setup failed). Others close through vsri_io_close. */
int vsri_io_close_now(struct vsri_io *io, int fd);

/* Syscall-free counters for tests and benchmarks. */
struct vsri_io_stats {
  uint64_t submissions;
  uint64_t callbacks;
  uint64_t waits;        /* times the loop blocked in the kernel */
  uint64_t enters;       /* io_uring_enter / epoll_wait calls */
};
void vsri_io_stats(const struct vsri_io *io, struct vsri_io_stats *out);

#endif
