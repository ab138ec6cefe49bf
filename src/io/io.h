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
 * before-poll queue are backend-independent (loop.c). One io object belongs to one thread.
 *
 * Letting go (the release rule). Nothing above this layer ever runs the loop to free memory.
 * An owner that goes away while submissions are still pending:
 *   1. drops its timers with vsri_io_timeout_drop (timers live in the loop: gone at once);
 *   2. closes its fds with vsri_io_close_now (synchronous; the backend forgets the fd first);
 *   3. hands the block holding its pending fd completions, and every buffer the kernel may
 *      still read or write for them (an io_uring recv writes into the caller's buffer until
 *      its CQE arrives; a send reads its iovecs' data), to vsri_io_release with a free
 *      function. The io layer cancels each completion, never runs its callback again, and
 *      calls the free function once the last one has come back: at once when nothing is in
 *      the kernel (epoll always; io_uring for work not yet submitted), else from a later
 *      vsri_io_run (the CQE arrives) or from vsri_io_del, which waits for the kernel to answer
 *      every released submission (each was canceled, so the answer is prompt).
 * A released completion may have completed in the kernel after all: an accept that returns
 * a descriptor is closed by the io layer. The free function must not call back into the
 * owner (the owner is gone); it frees memory and drops references, nothing else. */
#ifndef VSRI_IO_H
#define VSRI_IO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
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
  bool posted;          /* on the loop's ready list (vsri_io_post) */
  struct vsri_io_grave *grave; /* released (vsri_io_release): the callback never runs */
};

/* Bookkeeping of one released block (see "Letting go" above): embedded in the block itself,
 * so releasing never allocates. Private to the loop once handed to vsri_io_release. */
struct vsri_io_grave {
  void (*free_fn)(void *arg);
  void *arg;
  uint32_t pending;          /* released completions the kernel still holds */
  struct vsri_list_node link; /* on the loop's list of graves while pending > 0 */
};

enum vsri_io_backend_kind { VSRI_IO_AUTO = 0, VSRI_IO_EPOLL, VSRI_IO_URING };

#define VSRI_IO_POOLED_BUF (64u << 10) /* RECV_POOLED buffer size (loop.c says why) */
#define VSRI_IO_POOLED_BIG (256u << 10) /* vsri_io_recv_pooled_big's buffer size */

struct vsri_io_options {
  enum vsri_io_backend_kind backend; /* AUTO: VSRBUS_IO env, then io_uring, then epoll */
  uint32_t entries;                  /* io_uring queue depth; default 1024 */
  uint32_t pooled_buf_size;          /* RECV_POOLED buffer size; default 64 KiB */
  uint32_t pooled_buf_count;         /* RECV_POOLED buffers (io_uring ring); default 8 */
  /* The larger loop-owned buffers of vsri_io_recv_pooled_big (a stream whose reads keep
   * filling the small ones): size default 256 KiB (0: no larger reads, the small size is
   * used), count default 4 (io_uring's second ring; epoll has one buffer of the larger size). */
  uint32_t pooled_big_size;
  uint32_t pooled_big_count;
  /* Big reads only while the last poll found at least this many sockets with data (default
   * 2: one busy connection alone reads 64 KiB at a time; 1: whenever a stream asks). */
  uint32_t pooled_big_min_ready;
};

void vsri_io_options_default(struct vsri_io_options *o);

/* Creates a loop. Returns 0, VSR_EUNSUPPORTED (backend forced and unavailable), VSR_ENOMEM,
 * or VSR_EIO. AUTO logs one line when it falls back from io_uring to epoll. */
int vsri_io_new(struct vsri_io **out, const struct vsri_io_options *o);

/* Frees the loop. Every submission must have completed or been released (vsri_io_release):
 * released blocks still waiting for the kernel are waited for here (io_uring: until their
 * CQEs arrive; each was canceled, so this is prompt), then freed. No callback of a live owner
 * runs here; a completion that is neither finished nor released is a bug (logged). */
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
 * buffer returns to the loop when the callback returns. c->u.recv.len is the buffer's size
 * (res == len: the read filled it). */
void vsri_io_recv_pooled(struct vsri_io *io, struct vsri_completion *c, int fd, vsri_io_cb cb,
                         void *ctx);
/* The same into a larger loop-owned buffer (pooled_big_size): for a stream whose input keeps
 * filling the small ones. Nothing is held between reads either way. While the last poll found
 * fewer than pooled_big_min_ready sockets with data, this is a small read (c->u.recv.len
 * says which it was). */
void vsri_io_recv_pooled_big(struct vsri_io *io, struct vsri_completion *c, int fd,
                             vsri_io_cb cb, void *ctx);
/* Sends |iovcnt| iovecs on a connected stream socket: one sendmsg(2) with MSG_NOSIGNAL (a
 * dead peer gives -EPIPE, never SIGPIPE), so sockets only (-ENOTSOCK otherwise). Result: the
 * bytes the kernel took, possibly fewer than asked. */
void vsri_io_sendv(struct vsri_io *io, struct vsri_completion *c, int fd,
                   const struct iovec *iov, int iovcnt, vsri_io_cb cb, void *ctx);
/* Datagrams. sendmsg(2) / recvmsg(2) with the caller's msghdr; the op contract (what a
 * simulated backend must honour too):
 *   - msg_name / msg_namelen: the peer (NULL on a connected socket); a receive fills it.
 *   - one iovec in practice; the result is the bytes sent or received, or -errno.
 *   - control messages, SOL_UDP only: a send may carry UDP_SEGMENT (uint16_t segment size: the
 *     payload leaves as datagrams of that size, the last one shorter: GSO); a receive may
 *     return UDP_GRO (int: the size of each coalesced datagram but the last) when the socket
 *     enabled it. No ECN, no other cmsg is read or written.
 *   - a receive sets MSG_TRUNC in msg_flags when the datagram did not fit.
 * The completion forms wait for readiness; the _now forms below never wait. */
void vsri_io_sendmsg(struct vsri_io *io, struct vsri_completion *c, int fd, struct msghdr *msg,
                     int flags, vsri_io_cb cb, void *ctx);
void vsri_io_recvmsg(struct vsri_io *io, struct vsri_completion *c, int fd, struct msghdr *msg,
                     int flags, vsri_io_cb cb, void *ctx);
/* One non-blocking attempt now, no completion: the drain after a receive completion and the
 * burst sends of a datagram endpoint (a syscall per batch, no loop turn). Same contract as
 * above; returns bytes or -errno (-EAGAIN: nothing queued / no room now). */
ssize_t vsri_io_recvmsg_now(struct vsri_io *io, int fd, struct msghdr *msg, int flags);
ssize_t vsri_io_sendmsg_now(struct vsri_io *io, int fd, const struct msghdr *msg, int flags);
/* Closes |fd|; no other operation on it may be pending. Result 0 or -errno. */
void vsri_io_close(struct vsri_io *io, struct vsri_completion *c, int fd, vsri_io_cb cb,
                   void *ctx);
/* Fires after |ns| nanoseconds with res 0 (or -ECANCELED). */
void vsri_io_timeout(struct vsri_io *io, struct vsri_completion *c, uint64_t ns, vsri_io_cb cb,
                     void *ctx);

/* Asks a pending submission to finish early. Its callback still runs exactly once, with
 * -ECANCELED or with its real result if it had already finished. No-op if not pending. */
void vsri_io_cancel(struct vsri_io *io, struct vsri_completion *c);

/* Letting go without running the loop (see "Letting go" at the top).
 *
 * vsri_io_timeout_drop: takes a pending timer out of the loop; its callback never runs. No-op
 * for an idle completion. The completion's memory may go at once.
 *
 * vsri_io_close_now: closes |fd| at once with close(2), after the backend forgot it (epoll:
 * off the interest set; io_uring: queued submissions are pushed to the kernel first, so none
 * names a reused descriptor number). Operations still pending on |fd| must have been
 * released (or canceled) by the caller first.
 *
 * vsri_io_release: cancels each pending completion of |cs| (idle ones and NULLs are skipped)
 * and detaches it: its callback never runs again (a pending close is not canceled, only
 * waited for). |free_fn|(|arg|) runs once every one has
 * come back: before this returns when none is left in the kernel, else later from the loop
 * (vsri_io_run or vsri_io_del). |g| lives in the released block. |free_fn| may be NULL (then
 * the caller frees nothing: used for completions in memory that outlives the loop). */
void vsri_io_timeout_drop(struct vsri_io *io, struct vsri_completion *c);
void vsri_io_close_now(struct vsri_io *io, int fd);
void vsri_io_release(struct vsri_io *io, struct vsri_io_grave *g,
                     struct vsri_completion *const *cs, size_t n, void (*free_fn)(void *arg),
                     void *arg);
/* Released blocks still waiting for the kernel (tests). */
uint32_t vsri_io_graves(const struct vsri_io *io);

/* Makes the current turn's wait (if not begun) or the next one not block: for deferred work
 * that changed what the loop's caller waits on (a connection reported closed from a deferred
 * function, not from a completion). */
void vsri_io_nowait(struct vsri_io *io);

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
/* A datagram socket's connect (SOCK_DGRAM only: it fixes the peer, sends nothing, never waits;
 * a stream socket connects with vsri_io_connect). */
int vsri_io_connect_dgram(struct vsri_io *io, int fd, const struct sockaddr *addr,
                          socklen_t len);

/* Syscall-free counters for tests and benchmarks. */
struct vsri_io_stats {
  uint64_t submissions;
  uint64_t callbacks;
  uint64_t waits;        /* times the loop blocked in the kernel */
  uint64_t enters;       /* io_uring_enter / epoll_wait calls */
  uint64_t recvs;        /* RECV / RECV_POOLED completions that carried bytes */
  uint64_t recv_bytes;   /* the bytes they carried */
  uint64_t recv_full;    /* of those, reads that filled the buffer they were given */
  uint64_t recv_big;     /* of those, reads into the big pooled buffers */
};
void vsri_io_stats(const struct vsri_io *io, struct vsri_io_stats *out);

/* Doorbell (doorbell.c): wakes this loop from another thread. |fn| runs on the loop after one
 * or more rings (at least once after every ring). new/del on the loop's thread (del never runs
 * the loop); ring from any thread, never blocks. Kernel backends only (not the simulator). */
struct vsri_doorbell;
int vsri_doorbell_new(struct vsri_doorbell **out, struct vsri_io *io, void (*fn)(void *ctx),
                      void *ctx);
void vsri_doorbell_ring(struct vsri_doorbell *d);
void vsri_doorbell_del(struct vsri_doorbell *d);

#endif
