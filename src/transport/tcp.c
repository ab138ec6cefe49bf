/* TCP transport: frames over a byte stream. The reader feeds a loop-owned receive buffer to the
 * streaming decoder (large bodies are read straight into their frame buffer); the writer drains
 * the owner's queue with one vectored write of up to max_batch frames, at the loop's
 * before-poll point. Every exit path ends in tcp_finish(), which fires on_closed once.
 *
 * A graceful close loses nothing that was written: the reader keeps reading and discarding (a
 * peer blocked in send() must not stop reading our replies), the writer empties the queue,
 * then shutdown(SHUT_WR) sends FIN after the last byte, and the fd is closed only once the peer
 * closed its side (or close_peer_timeout passed). Closing a socket with unread input makes the
 * kernel send RST, which destroys replies still in flight: this sequence never does that. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "frame/decode.h"
#include "transport/transport.h"
#include "util/alloc.h"
#include "util/list.h"
#include "util/log.h"
#include "vsrbus/error.h"

/* Bodies with at least this much still missing are read straight into the frame buffer. */
#define TCP_DIRECT_MIN (16u << 10)
/* Pause before accepting again when the process is out of descriptors and has no reserve to
 * shed with, or the kernel is out of memory: long enough not to spin, short enough to resume
 * service promptly once descriptors free up. */
#define TCP_ACCEPT_BACKOFF_NS (100u * 1000 * 1000)

enum tcp_state { TC_CONNECTING, TC_OPEN, TC_CLOSING, TC_CLOSED };

/* A connection: the transport-neutral base first (transport.h), then the TCP state. */
struct tcp_conn {
  struct vsri_conn base; /* first: the ops convert with tcp_conn_of */
  const struct vsri_transport_ctx *ctx;
  const struct vsri_conn_events *ev;
  void *owner;
  struct vsri_sendq *q;
  int fd;
  enum tcp_state state;
  bool reading;       /* a read-side op is pending */
  bool writing;       /* a sendv is pending */
  bool draining;      /* closing: write the queue out before closing */
  bool started;       /* start() called: reads may run */
  bool direct_read;   /* the pending recv writes straight into the decoder's frame */
  bool discard;       /* graceful close: bytes read are dropped, no more frames delivered */
  bool half_closed;   /* shutdown(SHUT_WR) done: FIN follows the last queued byte */
  bool peer_eof;      /* the peer's FIN (or a reset) was read: nothing more will come */
  int reason;         /* close reason, valid once state >= TC_CLOSING */
  uint64_t last_rx;   /* loop clock at the last byte read (or at the start) */
  uint64_t frame_start; /* loop clock at the first byte of the frame in progress */
  struct iovec *iov;  /* max_batch entries, allocated at the first write */
  struct vsri_completion rc; /* reads (and connect) */
  struct vsri_completion wc; /* writes */
  struct vsri_completion cc; /* final close(fd) */
  struct vsri_completion dc; /* drain deadline */
  struct vsri_deferred flush;
  struct vsri_decoder dec;
  uint32_t wr_frames;     /* frames the pending sendv covers (partly or whole) */
  struct vsr_msg **held;  /* aborted mid-write: those frames, kept until the kernel is done */
  uint32_t held_n;
  struct vsri_io_grave grave; /* tcp_abort: the block waits here for the kernel */
  char name[64];
};

struct tcp_listener {
  struct vsri_listener base; /* first: the ops convert with tcp_listener_of */
  const struct vsri_transport_ctx *ctx;
  int fd;
  bool closing;
  void (*on_accept)(void *owner, struct vsri_conn *conn);
  void *owner;
  struct vsri_completion ac;
  struct vsri_completion backoff;
  struct vsri_io_grave grave; /* closed: waits here for a canceled accept's answer */
  struct sockaddr_storage peer;
  socklen_t peer_len;
  char name[64];
  /* Out of descriptors: a /dev/null descriptor held from listen() on, given up for a moment
   * to accept a connection that cannot be served and close it at once (-1: none held). */
  int reserve_fd;
  int starved;          /* errno of the current accept-trouble episode (0: accepting fine) */
  uint64_t starved_shed; /* connections accepted and closed at once during the episode */
};

static inline struct tcp_conn *tcp_conn_of(struct vsri_conn *b) {
  return vsri_container_of(b, struct tcp_conn, base);
}
static inline const struct tcp_conn *tcp_conn_of_const(const struct vsri_conn *b) {
  return vsri_container_of(b, const struct tcp_conn, base);
}
static inline struct tcp_listener *tcp_listener_of(struct vsri_listener *b) {
  return vsri_container_of(b, struct tcp_listener, base);
}

static void tcp_read(struct tcp_conn *c);
static void tcp_flush(void *ctx);
static void tcp_teardown(struct tcp_conn *c);

static void tcp_close(struct tcp_conn *c, int reason, bool drain);
static void tcp_abort(struct tcp_conn *c, int reason);

/* The plane's budget evicted this connection's frame in flight (the largest when the budget
 * was full): close at once; the buffer is freed with the decoder once no read is pending. */
static void tcp_evicted(void *ctx) {
  struct tcp_conn *c = ctx;
  char what[200];
  vsri_decoder_describe(&c->dec, VSR_EMEMORY_BUDGET, what, sizeof what);
  VSRI_WARN("VSR-MEMORY", "%s tcp: %s (%s; %s); closing", c->name,
            vsr_strerror(VSR_EMEMORY_BUDGET), vsr_errname(VSR_EMEMORY_BUDGET), what);
  tcp_close(c, VSR_EMEMORY_BUDGET, false);
}

/* Keepalive probes find a dead peer on an idle connection; TCP_USER_TIMEOUT bounds how long
 * written data may stay unacknowledged. Failures are harmless (the socket works without). */
void vsri_tcp_liveness(struct vsri_io *io, int fd, uint64_t keepalive_ns,
                       uint64_t user_timeout_ns) {
  if (keepalive_ns) {
    int on = 1;
    int idle = (int)(keepalive_ns / 1000000000ull);
    if (idle < 1) idle = 1;
    int intvl = idle / 3 > 0 ? idle / 3 : 1, cnt = 3;
    vsri_io_setsockopt(io, fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
    vsri_io_setsockopt(io, fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    vsri_io_setsockopt(io, fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
    vsri_io_setsockopt(io, fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
  }
  if (user_timeout_ns) {
    unsigned ms = user_timeout_ns / 1000000u > 0xffffffffu ? 0xffffffffu
                                                           : (unsigned)(user_timeout_ns / 1000000u);
    if (ms == 0) ms = 1;
    vsri_io_setsockopt(io, fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ms, sizeof ms);
  }
}

static struct tcp_conn *tcp_conn_new(const struct vsri_transport_ctx *ctx, int fd) {
  struct tcp_conn *c = vsri_calloc(1, sizeof *c);
  if (!c) return NULL;
  c->base.ops = &vsri_transport_tcp;
  c->ctx = ctx;
  c->fd = fd;
  c->flush.fn = tcp_flush;
  c->flush.ctx = c;
  c->last_rx = vsri_io_now(ctx->io);
  vsri_conn_decoder_init(&c->dec, ctx);
  vsri_decoder_set_evict(&c->dec, tcp_evicted, c);
  int one = 1;
  vsri_io_setsockopt(ctx->io, fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (ctx->keepalive_s) {
    int idle = (int)ctx->keepalive_s, intvl = idle >= 3 ? idle / 3 : 1, cnt = 3;
    vsri_io_setsockopt(ctx->io, fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    vsri_io_setsockopt(ctx->io, fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    vsri_io_setsockopt(ctx->io, fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
    vsri_io_setsockopt(ctx->io, fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
  }
  vsri_tcp_liveness(ctx->io, fd, ctx->keepalive_s ? 0 : ctx->tcp_keepalive_ns,
                    ctx->tcp_user_timeout_ns);
  return c;
}

/* ---- closing --------------------------------------------------------------------------- */

static void tcp_closed_cb(struct vsri_io *io, struct vsri_completion *cc, int32_t res) {
  (void)io;
  (void)res;
  struct tcp_conn *c = cc->ctx;
  c->state = TC_CLOSED;
  vsri_decoder_free(&c->dec);
  if (c->ev && c->ev->on_closed) c->ev->on_closed(c->owner, &c->base, c->reason);
  vsri_free(c->iov);
  vsri_free(c);
}

/* Closes the fd once no read or write is pending; on_closed follows from its completion. */
static void tcp_finish(struct tcp_conn *c) {
  if (c->reading || c->writing || c->draining || c->cc.pending || c->state == TC_CLOSED) {
    return;
  }
  if (c->dc.pending) {
    vsri_io_cancel(c->ctx->io, &c->dc); /* its callback calls tcp_finish again */
    return;
  }
  vsri_io_undefer(c->ctx->io, &c->flush);
  vsri_io_close(c->ctx->io, &c->cc, c->fd, tcp_closed_cb, c);
}

/* Hard stop: cancel what is pending and close. Idempotent. */
static void tcp_teardown(struct tcp_conn *c) {
  c->draining = false;
  if (c->reading) vsri_io_cancel(c->ctx->io, &c->rc);
  if (c->writing) vsri_io_cancel(c->ctx->io, &c->wc);
  tcp_finish(c);
}

/* Records the first reason and starts tearing down. Later reasons are ignored. */
static void tcp_fail(struct tcp_conn *c, int reason) {
  if (c->state < TC_CLOSING) {
    c->state = TC_CLOSING;
    c->reason = reason;
  }
  tcp_teardown(c);
}

static void tcp_drain_expired(struct vsri_io *io, struct vsri_completion *dc, int32_t res) {
  (void)io;
  struct tcp_conn *c = dc->ctx;
  if (res == 0 && c->draining) {
    if (!c->half_closed) {
      VSRI_WARN("VSR-DRAIN", "%s tcp: %u frame(s) still queued at the drain deadline; closing",
                c->name, c->q ? vsri_sendq_len(c->q) : 0);
    } else {
      VSRI_DEBUG("VSR-DRAIN", "%s tcp: everything written, but the peer did not close within "
                 "%llu ms of our FIN; closing", c->name,
                 (unsigned long long)(c->ctx->drain_timeout_ns / 1000000));
    }
    tcp_teardown(c);
    return;
  }
  tcp_finish(c);
}

/* The queue is empty: send FIN after the last byte, then wait for the peer's own close. */
static void tcp_drained(struct tcp_conn *c) {
  if (!c->half_closed) {
    c->half_closed = true;
    vsri_io_shutdown(c->ctx->io, c->fd, SHUT_WR);
  }
  if (c->peer_eof) tcp_teardown(c);
}

static void tcp_close(struct tcp_conn *c, int reason, bool drain) {
  if (!c->started && !c->ev) {
    /* Accepted and refused before start(): nobody to tell, nothing to drain. Closed now, so
     * no loop turn is needed for it (the owner may delete the loop right after). */
    tcp_abort(c, reason);
    return;
  }
  if (c->state >= TC_CLOSING) {
    if (!drain && c->draining) tcp_teardown(c); /* escalate a drain to a hard close */
    return;
  }
  bool open = c->state == TC_OPEN;
  c->state = TC_CLOSING;
  c->reason = reason;
  if (drain && open && c->started) {
    c->draining = true;
    c->discard = true;
    uint64_t ns = c->ctx->drain_timeout_ns ? c->ctx->drain_timeout_ns : 2000000000ull;
    vsri_io_timeout(c->ctx->io, &c->dc, ns, tcp_drain_expired, c);
    tcp_read(c); /* keep reading (and dropping) so the peer never blocks on a full window */
    if (c->q && vsri_sendq_len(c->q) > 0) {
      if (!c->writing) vsri_io_defer(c->ctx->io, &c->flush);
    } else if (!c->writing) {
      tcp_drained(c);
    }
    return;
  }
  if (c->reading) vsri_io_cancel(c->ctx->io, &c->rc);
  tcp_teardown(c);
}

/* Frees an aborted connection once the kernel has answered its canceled operations. */
static void tcp_conn_free(void *arg) {
  struct tcp_conn *c = arg;
  vsri_decoder_free(&c->dec); /* a direct read may have been writing into its frame */
  for (uint32_t i = 0; i < c->held_n; i++) vsr_msg_unref(c->held[i]);
  vsri_free(c->held);
  vsri_free(c->iov);
  vsri_free(c);
}

/* The owner is going away: no upcall ever again, the fd closes now (io.h, "Letting go"). A
 * write in flight keeps its frames referenced, so the kernel never reads a reused buffer. */
static void tcp_abort(struct tcp_conn *c, int reason) {
  (void)reason;
  struct vsri_io *io = c->ctx->io;
  if (c->writing && c->q && c->wr_frames) {
    uint32_t len = vsri_sendq_len(c->q);
    uint32_t n = c->wr_frames < len ? c->wr_frames : len;
    c->held = n ? vsri_malloc(n * sizeof *c->held) : NULL;
    for (uint32_t i = 0; c->held && i < n; i++) {
      c->held[c->held_n++] = vsr_msg_ref(vsri_sendq_peek(c->q, i));
    }
  }
  c->ev = NULL;
  c->owner = NULL;
  c->q = NULL;
  c->state = TC_CLOSED;
  c->draining = false;
  vsri_io_undefer(io, &c->flush);
  vsri_io_timeout_drop(io, &c->dc);
  vsri_decoder_detach(&c->dec); /* the plane budget may be gone before the block */
  /* A final close already under way is waited for, not canceled (it closes the fd). */
  int fd = c->cc.pending ? -1 : c->fd;
  struct vsri_completion *cs[] = {&c->rc, &c->wc, &c->cc};
  vsri_io_release(io, &c->grave, cs, sizeof cs / sizeof cs[0], tcp_conn_free, c);
  vsri_io_close_now(io, fd);
}

/* ---- reading --------------------------------------------------------------------------- */

/* Hands completed frames to the owner. Returns false if the connection started closing. */
static bool tcp_deliver(struct tcp_conn *c, struct vsr_msg *m) {
  c->ev->on_frame(c->owner, &c->base, m);
  vsr_msg_unref(m);
  return c->state == TC_OPEN;
}

static void tcp_frame_error(struct tcp_conn *c, int err) {
  char what[200];
  vsri_decoder_describe(&c->dec, err, what, sizeof what);
  bool mem = err == VSR_EMEMORY_BUDGET || err == VSR_EMEMORY_MAX || err == VSR_EPOOL;
  VSRI_WARN(mem ? "VSR-MEMORY" : "VSR-FRAME", "%s tcp: %s (%s; %s); closing", c->name,
            vsr_strerror(err), vsr_errname(err), what);
  /* Replies to frames accepted before this one still go out; the refused frame's buffer (if
   * any) is already back in the pool. */
  tcp_close(c, err, true);
}

/* A read while closing gracefully: drop the bytes; the peer's FIN (or reset) ends the wait. */
static void tcp_discard_done(struct tcp_conn *c, int32_t res) {
  if (res == -ECANCELED || !c->draining) {
    tcp_finish(c);
    return;
  }
  if (res > 0) {
    tcp_read(c);
    return;
  }
  c->peer_eof = true;
  if (res < 0) { /* reset: whatever is still queued cannot arrive */
    VSRI_DEBUG("VSR-DRAIN", "%s tcp: recv while closing: %s; closing now", c->name,
               strerror(-res));
    tcp_teardown(c);
    return;
  }
  if (c->half_closed) tcp_teardown(c);
}

static void tcp_read_done(struct vsri_io *io, struct vsri_completion *rc, int32_t res) {
  struct tcp_conn *c = rc->ctx;
  c->reading = false;
  if (c->discard) {
    tcp_discard_done(c, res);
    return;
  }
  if (c->state != TC_OPEN) {
    tcp_finish(c);
    return;
  }
  if (res <= 0) {
    int reason = res == 0 ? vsri_decoder_eof_reason(&c->dec) : vsri_sock_reason(-res);
    if (res < 0 && reason == VSR_EIO) {
      VSRI_WARN("VSR-READ", "%s tcp: recv: %s; closing", c->name, strerror(-res));
    } else if (reason == VSR_EEOF_HEADER || reason == VSR_EEOF_BODY) {
      VSRI_WARN("VSR-EOF", "%s tcp: %s; closing", c->name, vsr_strerror(reason));
    }
    c->peer_eof = true;
    tcp_close(c, reason, res == 0); /* after a half-close, queued replies still go out */
    return;
  }
  uint64_t now = vsri_io_now(io);
  c->last_rx = now;
  struct vsr_msg *m = NULL;
  int r;
  if (c->direct_read) {
    r = vsri_decoder_wrote(&c->dec, (size_t)res, &m);
    if (r < 0) return tcp_frame_error(c, r);
    if (r == 1 && !tcp_deliver(c, m)) return;
  } else {
    const uint8_t *p = rc->u.recv.buf;
    size_t n = (size_t)res;
    while (n > 0) {
      size_t used = 0;
      if (vsri_decoder_idle(&c->dec)) c->frame_start = now; /* these bytes start a frame */
      r = vsri_decoder_feed(&c->dec, p, n, &used, &m);
      p += used;
      n -= used;
      if (r < 0) return tcp_frame_error(c, r);
      if (r == 0) break;
      if (!tcp_deliver(c, m)) return;
    }
  }
  tcp_read(c);
}

static void tcp_read(struct tcp_conn *c) {
  if (c->reading) return;
  if (c->discard) {
    if (!c->draining || c->peer_eof) return;
    c->reading = true;
    vsri_io_recv_pooled(c->ctx->io, &c->rc, c->fd, tcp_read_done, c);
    return;
  }
  if (c->state != TC_OPEN) return;
  int g = vsri_decoder_grow(&c->dec); /* a full buffer grows before the read, not after */
  if (g < 0) {
    tcp_frame_error(c, g);
    return;
  }
  c->reading = true;
  uint8_t *dst;
  size_t want = vsri_decoder_want(&c->dec, &dst);
  c->direct_read = want >= TCP_DIRECT_MIN;
  if (c->direct_read) vsri_io_recv(c->ctx->io, &c->rc, c->fd, dst, want, tcp_read_done, c);
  else vsri_io_recv_pooled(c->ctx->io, &c->rc, c->fd, tcp_read_done, c);
}

/* ---- writing --------------------------------------------------------------------------- */

static void tcp_write_done(struct vsri_io *io, struct vsri_completion *wc, int32_t res) {
  (void)io;
  struct tcp_conn *c = wc->ctx;
  c->writing = false;
  if (res < 0) {
    if (res != -ECANCELED) {
      int reason = vsri_sock_reason(-res);
      VSRI_WARN("VSR-WRITE", "%s tcp: write: %s; closing", c->name, strerror(-res));
      /* A FIN that a reset follows was a peer that went away, not one that half-closed. */
      if (c->state == TC_CLOSING && c->reason == VSR_ECLOSED && reason == VSR_ERESET) {
        c->reason = VSR_ERESET;
      }
      tcp_fail(c, reason == VSR_EIO ? VSR_EWRITE : reason);
    } else {
      tcp_finish(c);
    }
    return;
  }
  size_t left = (size_t)res;
  struct vsri_sendq *q = c->q;
  uint32_t frames = 0;
  uint64_t bytes = 0;
  while (left > 0 && vsri_sendq_len(q) > 0) {
    struct vsr_msg *m = vsri_sendq_peek(q, 0);
    size_t rest = m->size - q->off;
    if (left < rest) {
      q->off += (uint32_t)left;
      break;
    }
    left -= rest;
    bytes += vsri_sendq_pop(q);
    frames++;
  }
  /* One upcall per completed write: the kernel has the last byte of these frames. */
  if (frames && c->ev->on_sent) c->ev->on_sent(c->owner, &c->base, frames, bytes);
  if (c->state == TC_CLOSING && !c->draining) {
    tcp_finish(c);
    return;
  }
  if (vsri_sendq_len(q) > 0) {
    tcp_flush(c); /* more queued (or a partial write): keep the pipe full */
    return;
  }
  if (c->draining) {
    tcp_drained(c);
    return;
  }
  if (c->ev->on_drained) c->ev->on_drained(c->owner, &c->base);
}

#ifdef VSR_PLANT_BUG
/* A planted bug, compiled only into the simulator's proof test (tests/CMakeLists.txt builds
 * vsrbus_planted with -DVSR_PLANT_BUG; never a shipped build): one write in 1,000 silently
 * drops the frame at the head of the queue, counted as sent. `vsrbus sim` must catch it. */
static uint32_t tcp_planted_writes;
#endif

static void tcp_flush(void *ctx) {
  struct tcp_conn *c = ctx;
  if (c->writing || !c->q || vsri_sendq_len(c->q) == 0) return;
  if (c->state != TC_OPEN && !c->draining) return;
#ifdef VSR_PLANT_BUG
  if (c->q->off == 0 && vsri_sendq_len(c->q) > 1 && ++tcp_planted_writes % 1000 == 0) {
    uint64_t lost = vsri_sendq_pop(c->q);
    if (c->ev->on_sent) c->ev->on_sent(c->owner, &c->base, 1, lost);
  }
#endif
  uint32_t max = c->ctx->max_batch ? c->ctx->max_batch : 256;
  if (max > IOV_MAX) max = IOV_MAX;
  if (!c->iov) {
    c->iov = vsri_malloc(max * sizeof *c->iov);
    if (!c->iov) {
      VSRI_ERROR("VSR-NOMEM", "%s tcp: no memory for the write vector; closing", c->name);
      tcp_fail(c, VSR_ENOMEM);
      return;
    }
  }
  struct vsri_sendq *q = c->q;
  uint32_t n = vsri_sendq_len(q) < max ? vsri_sendq_len(q) : max;
  for (uint32_t i = 0; i < n; i++) {
    struct vsr_msg *m = vsri_sendq_peek(q, i);
    uint32_t off = i == 0 ? q->off : 0;
    c->iov[i].iov_base = m->data + off;
    c->iov[i].iov_len = m->size - off;
  }
  c->writing = true;
  c->wr_frames = n;
  vsri_io_sendv(c->ctx->io, &c->wc, c->fd, c->iov, (int)n, tcp_write_done, c);
}

static void tcp_kick(struct tcp_conn *c) {
  if (c->state == TC_OPEN && c->started && !c->writing) {
    vsri_io_defer(c->ctx->io, &c->flush);
  }
}

/* ---- connections ----------------------------------------------------------------------- */

static void tcp_start(struct tcp_conn *c, const struct vsri_conn_events *ev, void *owner,
                      struct vsri_sendq *q) {
  c->ev = ev;
  c->owner = owner;
  c->q = q;
  c->started = true;
  if (c->state == TC_CONNECTING) return; /* reads start once connected */
  tcp_read(c);
  tcp_kick(c);
}

static void tcp_connect_done(struct vsri_io *io, struct vsri_completion *rc, int32_t res) {
  (void)io;
  struct tcp_conn *c = rc->ctx;
  c->reading = false;
  if (c->state != TC_CONNECTING) {
    tcp_finish(c);
    return;
  }
  if (res < 0) {
    int reason = vsri_sock_reason(-res);
    VSRI_DEBUG("VSR-CONNECT", "%s tcp: connect: %s", c->name, strerror(-res));
    if (c->ev->on_connected) c->ev->on_connected(c->owner, &c->base, reason);
    tcp_fail(c, reason);
    return;
  }
  c->state = TC_OPEN;
  c->last_rx = vsri_io_now(io);
  if (c->ev->on_connected) c->ev->on_connected(c->owner, &c->base, 0);
  if (c->state != TC_OPEN) return;
  tcp_read(c);
  tcp_kick(c);
}

static int tcp_socket(struct vsri_io *io, int family) {
  return vsri_io_socket(io, family, SOCK_STREAM);
}

static int tcp_connect(struct vsri_conn **out, const struct vsri_transport_ctx *ctx,
                       const char *addr, const struct vsri_conn_events *ev, void *owner,
                       struct vsri_sendq *q) {
  struct sockaddr_storage sa;
  socklen_t len;
  if (vsri_parse_addr(addr, &sa, &len) < 0) return VSR_EADDR;
  int fd = tcp_socket(ctx->io, sa.ss_family);
  if (fd < 0) return fd == -EMFILE || fd == -ENFILE ? VSR_ELIMIT : VSR_EIO;
  struct tcp_conn *c = tcp_conn_new(ctx, fd);
  if (!c) {
    vsri_io_close_now(ctx->io, fd);
    return VSR_ENOMEM;
  }
  vsri_format_addr((struct sockaddr *)&sa, c->name, sizeof c->name);
  c->state = TC_CONNECTING;
  c->ev = ev;
  c->owner = owner;
  c->q = q;
  c->started = true;
  c->reading = true;
  vsri_io_connect(ctx->io, &c->rc, fd, (struct sockaddr *)&sa, len, tcp_connect_done, c);
  *out = &c->base;
  return 0;
}

static const char *tcp_peer_name(const struct vsri_conn *b) { return tcp_conn_of_const(b)->name; }

static void tcp_set_frame_limit(struct vsri_conn *b, uint32_t max_size, uint32_t allowance) {
  struct tcp_conn *c = tcp_conn_of(b);
  vsri_decoder_set_max(&c->dec, max_size, false);
  vsri_decoder_set_budget(&c->dec, c->dec.budget, allowance, c->dec.conn_max);
}

static void tcp_rx_clock(const struct vsri_conn *b, struct vsri_rx_clock *out) {
  const struct tcp_conn *c = tcp_conn_of_const(b);
  vsri_decoder_progress(&c->dec, &out->frame_have, &out->frame_size);
  out->last_rx_ns = c->last_rx;
  out->frame_start_ns = out->frame_have ? c->frame_start : 0;
}

/* ---- listener -------------------------------------------------------------------------- */

static void tcp_accept_next(struct tcp_listener *l);

static void tcp_backoff_done(struct vsri_io *io, struct vsri_completion *t, int32_t res) {
  (void)io;
  (void)res;
  tcp_accept_next(t->ctx);
}

/* Closes a connection that will not be served: what it already sent is read and dropped
 * first, so the close is a FIN (the client reads EOF) rather than a reset. */
static void tcp_close_unserved(int fd) {
  char buf[4096];
  for (int i = 0; i < 16 && recv(fd, buf, sizeof buf, MSG_DONTWAIT) > 0; i++) {
  }
  close(fd);
}

/* Out of descriptors (EMFILE, ENFILE): without a reserve the pending connection would hang in
 * the backlog until the client gives up. Free the reserve, accept the connection, close it at
 * once, take the reserve back. Returns false when that is impossible (no reserve, or the
 * descriptor was taken in between): the caller then pauses accepting. */
static bool tcp_accept_shed(struct tcp_listener *l) {
  if (l->reserve_fd < 0) l->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (l->reserve_fd < 0) return false;
  close(l->reserve_fd);
  int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
  int err = fd < 0 ? errno : 0;
  if (fd >= 0) {
    tcp_close_unserved(fd);
    l->starved_shed++;
  }
  l->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  return l->reserve_fd >= 0 && (fd >= 0 || err == EAGAIN || err == ECONNABORTED);
}

/* Accept failed for want of descriptors or memory. One line per episode (the episode ends at
 * the next connection accepted normally); the listener never spins on the error. */
static void tcp_accept_starved(struct vsri_io *io, struct tcp_listener *l, int err) {
  bool fds = err == EMFILE || err == ENFILE;
  if (!l->starved) {
    l->starved = err;
    l->starved_shed = 0;
    VSRI_WARN("VSR-ACCEPT", "%s tcp: accept: %s; %s until it clears", l->name, strerror(err),
              fds && l->reserve_fd >= 0 ? "closing new connections at once"
                                        : "pausing accepts");
  }
  if (fds && tcp_accept_shed(l)) {
    tcp_accept_next(l);
    return;
  }
  vsri_io_timeout(io, &l->backoff, TCP_ACCEPT_BACKOFF_NS, tcp_backoff_done, l);
}

static void tcp_accept_done(struct vsri_io *io, struct vsri_completion *ac, int32_t res) {
  struct tcp_listener *l = ac->ctx;
  if (res < 0) {
    int err = -res;
    if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
      tcp_accept_starved(io, l, err);
      return;
    }
    if (err != ECONNABORTED && err != EINTR) {
      VSRI_WARN("VSR-ACCEPT", "%s tcp: accept: %s", l->name, strerror(err));
    }
    tcp_accept_next(l);
    return;
  }
  if (l->starved) {
    VSRI_INFO("VSR-ACCEPT", "%s tcp: accepting again after %s; %llu connection(s) were closed "
              "at once meanwhile", l->name, strerror(l->starved),
              (unsigned long long)l->starved_shed);
    l->starved = 0;
    if (l->reserve_fd < 0) l->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  }
  struct tcp_conn *c = tcp_conn_new(l->ctx, res);
  if (!c) {
    VSRI_WARN("VSR-ACCEPT", "%s tcp: no memory for a connection; refused", l->name);
    vsri_io_close_now(io, res);
  } else {
    vsri_format_addr((struct sockaddr *)&l->peer, c->name, sizeof c->name);
    c->state = TC_OPEN;
    l->on_accept(l->owner, &c->base);
  }
  tcp_accept_next(l);
}

static void tcp_accept_next(struct tcp_listener *l) {
  l->peer_len = sizeof l->peer;
  vsri_io_accept(l->ctx->io, &l->ac, l->fd, &l->peer, &l->peer_len, tcp_accept_done, l);
}

static int tcp_listen(struct vsri_listener **out, const struct vsri_transport_ctx *ctx,
                      const char *addr, void (*on_accept)(void *owner, struct vsri_conn *conn),
                      void *owner) {
  struct sockaddr_storage sa;
  socklen_t len;
  if (vsri_parse_addr(addr, &sa, &len) < 0) {
    VSRI_ERROR("VSR-LISTEN", "tcp: cannot parse address '%s': %s", addr, vsri_parse_addr_why());
    return VSR_EADDR;
  }
  int fd = tcp_socket(ctx->io, sa.ss_family), one = 1;
  if (fd < 0) return VSR_EIO;
  vsri_io_setsockopt(ctx->io, fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (ctx->reuseport) vsri_io_setsockopt(ctx->io, fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  int err = vsri_io_bind(ctx->io, fd, (struct sockaddr *)&sa, len);
  if (err == 0) err = vsri_io_listen(ctx->io, fd, 4096);
  if (err < 0) {
    VSRI_ERROR("VSR-LISTEN", "tcp: cannot listen on %s: %s", addr, strerror(-err));
    vsri_io_close_now(ctx->io, fd);
    return vsri_bind_reason(-err);
  }
  struct tcp_listener *l = vsri_calloc(1, sizeof *l);
  if (!l) {
    vsri_io_close_now(ctx->io, fd);
    return VSR_ENOMEM;
  }
  l->base.ops = &vsri_transport_tcp;
  l->ctx = ctx;
  l->fd = fd;
  l->on_accept = on_accept;
  l->owner = owner;
  l->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC); /* -1: accepts pause instead */
  len = sizeof sa;
  vsri_io_getsockname(ctx->io, fd, (struct sockaddr *)&sa, &len);
  vsri_format_addr((struct sockaddr *)&sa, l->name, sizeof l->name);
  tcp_accept_next(l);
  *out = &l->base;
  return 0;
}

static void tcp_listener_addr(const struct vsri_listener *b, char *buf, size_t len) {
  snprintf(buf, len, "%s", vsri_container_of(b, const struct tcp_listener, base)->name);
}

static void tcp_listener_free(void *arg) { vsri_free(arg); }

/* Synchronous: the socket closes now; the memory goes once a canceled accept in the kernel
 * has answered (at once on epoll). */
static void tcp_listener_close(struct vsri_listener *b) {
  struct tcp_listener *l = tcp_listener_of(b);
  if (l->closing) return;
  l->closing = true;
  struct vsri_io *io = l->ctx->io;
  int fd = l->fd;
  vsri_io_timeout_drop(io, &l->backoff);
  if (l->reserve_fd >= 0) close(l->reserve_fd);
  l->reserve_fd = -1;
  struct vsri_completion *cs[] = {&l->ac};
  vsri_io_release(io, &l->grave, cs, 1, tcp_listener_free, l);
  vsri_io_close_now(io, fd);
}

/* The ops take the base; the functions above take struct tcp_conn. */
static void tcp_op_start(struct vsri_conn *b, const struct vsri_conn_events *ev, void *owner,
                         struct vsri_sendq *q) {
  tcp_start(tcp_conn_of(b), ev, owner, q);
}
static void tcp_op_kick(struct vsri_conn *b) { tcp_kick(tcp_conn_of(b)); }
static void tcp_op_close(struct vsri_conn *b, int reason, bool drain) {
  tcp_close(tcp_conn_of(b), reason, drain);
}
static void tcp_op_abort(struct vsri_conn *b, int reason) { tcp_abort(tcp_conn_of(b), reason); }

const struct vsri_transport_ops vsri_transport_tcp = {
    .name = "tcp",
    .listen = tcp_listen,
    .listener_addr = tcp_listener_addr,
    .listener_close = tcp_listener_close,
    .connect = tcp_connect,
    .start = tcp_op_start,
    .kick = tcp_op_kick,
    .close = tcp_op_close,
    .abort = tcp_op_abort,
    .peer_name = tcp_peer_name,
    .rx_clock = tcp_rx_clock,
    .set_frame_limit = tcp_set_frame_limit,
};
