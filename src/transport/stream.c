/* Stream-socket core, lifecycle: see stream.h. Reading and writing are in stream_rw.c, the
 * listener in stream_listen.c.
 *
 * A graceful close loses nothing that was written: the reader keeps reading and discarding (a
 * peer blocked in send() must not stop reading our replies), the writer empties the queue
 * (and a layer its closing output), then shutdown(SHUT_WR) sends FIN after the last byte, and
 * the fd is closed only once the peer closed its side (or drain_timeout passed). Closing a
 * socket with unread input makes the kernel send RST, which destroys replies still in flight:
 * this sequence never does that. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>

#include "transport/stream.h"
#include "util/alloc.h"
#include "util/log.h"
#include "vsrbus/error.h"

/* The plane's budget evicted this connection's frame in flight (the largest when the budget
 * was full): close at once; the buffer is freed with the decoder once no read is pending. */
static void stream_evicted(void *arg) {
  struct vsri_stream *s = arg;
  char what[200];
  vsri_decoder_describe(&s->dec, VSR_EMEMORY_BUDGET, what, sizeof what);
  VSRI_WARN("VSR-MEMORY", "%s %s: %s (%s; %s); closing", s->name, s->proto,
            vsr_strerror(VSR_EMEMORY_BUDGET), vsr_errname(VSR_EMEMORY_BUDGET), what);
  vsri_stream_close(s, VSR_EMEMORY_BUDGET, false);
}

struct vsri_stream *vsri_stream_new(size_t size, const struct vsri_transport_ops *ops,
                                    const struct vsri_stream_layer *layer, const char *proto,
                                    const struct vsri_transport_ctx *ctx, int fd) {
  struct vsri_stream *s = vsri_calloc(1, size);
  if (!s) return NULL;
  s->base.ops = ops;
  s->layer = layer;
  s->proto = proto;
  s->ctx = ctx;
  s->fd = fd;
  s->flush.fn = vsri_stream_flush;
  s->flush.ctx = s;
  s->last_rx = vsri_io_now(ctx->io);
  vsri_conn_decoder_init(&s->dec, ctx);
  vsri_decoder_set_evict(&s->dec, stream_evicted, s);
  int one = 1;
  vsri_io_setsockopt(ctx->io, fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  vsri_tcp_liveness(ctx->io, fd, ctx->tcp_keepalive_ns, ctx->tcp_user_timeout_ns);
  return s;
}

/* ---- closing --------------------------------------------------------------------------- */

static void stream_free(struct vsri_stream *s) {
  vsri_decoder_free(&s->dec); /* a direct read may have been writing into its frame */
  if (s->layer) s->layer->on_free(s);
  for (uint32_t i = 0; i < s->held_n; i++) vsr_msg_unref(s->held[i]);
  vsri_free(s->held);
  vsri_free(s->iov);
  vsri_free(s);
}

static void stream_closed_cb(struct vsri_io *io, struct vsri_completion *cc, int32_t res) {
  (void)io;
  (void)res;
  struct vsri_stream *s = cc->ctx;
  s->state = VSRI_SS_CLOSED;
  vsri_decoder_free(&s->dec);
  bool tell = s->layer ? s->layer->on_closed(s, false) : true;
  if (tell && s->ev && s->ev->on_closed) s->ev->on_closed(s->owner, &s->base, s->reason);
  stream_free(s);
}

/* Closes the fd once no read or write is pending; on_closed follows from its completion. */
void vsri_stream_finish(struct vsri_stream *s) {
  if (s->state < VSRI_SS_CLOSING) return; /* a timer canceled on a live stream */
  if (s->reading || s->writing || s->draining || s->cc.pending || s->state == VSRI_SS_CLOSED) {
    return;
  }
  if (s->dc.pending) {
    vsri_io_cancel(s->ctx->io, &s->dc); /* its callback calls finish again */
    return;
  }
  if (s->hc.pending) {
    vsri_io_cancel(s->ctx->io, &s->hc);
    return;
  }
  vsri_io_undefer(s->ctx->io, &s->flush);
  vsri_io_close(s->ctx->io, &s->cc, s->fd, stream_closed_cb, s);
}

/* Hard stop: cancel what is pending and close. Idempotent. */
void vsri_stream_teardown(struct vsri_stream *s) {
  s->draining = false;
  if (s->reading) vsri_io_cancel(s->ctx->io, &s->rc);
  if (s->writing) vsri_io_cancel(s->ctx->io, &s->wc);
  vsri_stream_finish(s);
}

/* Records the first reason and starts tearing down. Later reasons are ignored. */
void vsri_stream_fail(struct vsri_stream *s, int reason) {
  if (s->state < VSRI_SS_CLOSING) {
    s->state = VSRI_SS_CLOSING;
    s->reason = reason;
  }
  vsri_stream_teardown(s);
}

static void stream_drain_expired(struct vsri_io *io, struct vsri_completion *dc, int32_t res) {
  (void)io;
  struct vsri_stream *s = dc->ctx;
  if (res == 0 && s->draining) {
    if (!s->half_closed) {
      VSRI_WARN("VSR-DRAIN", "%s %s: %u frame(s) still queued at the drain deadline; closing",
                s->name, s->proto, s->q ? vsri_sendq_len(s->q) : 0);
    } else {
      VSRI_DEBUG("VSR-DRAIN", "%s %s: everything written, but the peer did not close within "
                 "%llu ms of our FIN; closing", s->name, s->proto,
                 (unsigned long long)(s->ctx->drain_timeout_ns / 1000000));
    }
    vsri_stream_teardown(s);
    return;
  }
  vsri_stream_finish(s);
}

void vsri_stream_drained(struct vsri_stream *s) {
  if (!s->half_closed) {
    s->half_closed = true;
    vsri_io_shutdown(s->ctx->io, s->fd, SHUT_WR);
  }
  if (s->peer_eof) vsri_stream_teardown(s);
}

void vsri_stream_close(struct vsri_stream *s, int reason, bool drain) {
  if (s->reported && !s->started && !s->ev) {
    /* Accepted and refused before start(): nobody to tell, nothing to drain. Closed now, so
     * no loop turn is needed for it (the owner may delete the loop right after). */
    vsri_stream_abort(s, reason);
    return;
  }
  if (s->state >= VSRI_SS_CLOSING) {
    if (!drain && s->draining) vsri_stream_teardown(s); /* escalate a drain to a hard close */
    return;
  }
  bool live = s->state == VSRI_SS_OPEN || s->state == VSRI_SS_HANDSHAKE;
  s->state = VSRI_SS_CLOSING;
  s->reason = reason;
  if (s->layer && s->layer->on_close) s->layer->on_close(s, reason, drain, live);
  if (drain && live && (s->started || s->layer)) {
    s->draining = true;
    s->discard = true;
    uint64_t ns = s->ctx->drain_timeout_ns ? s->ctx->drain_timeout_ns : 2000000000ull;
    vsri_io_timeout(s->ctx->io, &s->dc, ns, stream_drain_expired, s);
    vsri_stream_read(s); /* keep reading (and dropping) so the peer never blocks */
    if (s->writing) return;
    if (s->layer || (s->q && vsri_sendq_len(s->q) > 0)) vsri_io_defer(s->ctx->io, &s->flush);
    else vsri_stream_drained(s);
    return;
  }
  vsri_stream_teardown(s);
}

/* Frees an aborted stream once the kernel has answered its canceled operations. */
static void stream_release_cb(void *arg) { stream_free(arg); }

/* The owner is going away: no upcall ever again, the fd closes now (io.h, "Letting go"). A
 * write in flight keeps the queued frames it reads referenced, so the kernel never reads a
 * reused buffer. */
void vsri_stream_abort(struct vsri_stream *s, int reason) {
  (void)reason;
  struct vsri_io *io = s->ctx->io;
  if (s->writing && s->q && s->wr_frames) {
    uint32_t len = vsri_sendq_len(s->q);
    uint32_t n = s->wr_frames < len ? s->wr_frames : len;
    s->held = n ? vsri_malloc(n * sizeof *s->held) : NULL;
    for (uint32_t i = 0; s->held && i < n; i++) {
      s->held[s->held_n++] = vsr_msg_ref(vsri_sendq_peek(s->q, i));
    }
  }
  if (s->layer) s->layer->on_closed(s, true);
  s->ev = NULL;
  s->owner = NULL;
  s->q = NULL;
  s->state = VSRI_SS_CLOSED;
  s->draining = false;
  vsri_io_undefer(io, &s->flush);
  vsri_io_timeout_drop(io, &s->dc);
  vsri_io_timeout_drop(io, &s->hc);
  vsri_decoder_detach(&s->dec); /* the plane budget may be gone before the block */
  /* A final close already under way is waited for, not canceled (it closes the fd). */
  int fd = s->cc.pending ? -1 : s->fd;
  struct vsri_completion *cs[] = {&s->rc, &s->wc, &s->cc};
  vsri_io_release(io, &s->grave, cs, sizeof cs / sizeof cs[0], stream_release_cb, s);
  vsri_io_close_now(io, fd);
}

/* ---- handshake deadline ---------------------------------------------------------------- */

static void stream_grace_expired(struct vsri_io *io, struct vsri_completion *hc, int32_t res) {
  (void)io;
  struct vsri_stream *s = hc->ctx;
  if (res == 0 && !s->reported && s->state < VSRI_SS_CLOSING) {
    VSRI_WARN("VSR-HANDSHAKE", "%s %s: %s not finished within handshake_grace (%llu ms); "
              "closing", s->name, s->proto,
              s->layer && s->layer->stage ? s->layer->stage(s) : "handshake",
              (unsigned long long)(s->grace_ns / 1000000));
    if (!s->server && s->ev && s->ev->on_connected) {
      s->ev->on_connected(s->owner, &s->base, VSR_EHANDSHAKE_TIMEOUT);
    }
    vsri_stream_fail(s, VSR_EHANDSHAKE_TIMEOUT);
    return;
  }
  vsri_stream_finish(s);
}

void vsri_stream_grace(struct vsri_stream *s, uint64_t ns) {
  s->grace_ns = ns;
  vsri_io_timeout(s->ctx->io, &s->hc, ns, stream_grace_expired, s);
}

void vsri_stream_reported(struct vsri_stream *s) {
  if (s->hc.pending) vsri_io_cancel(s->ctx->io, &s->hc);
  s->state = VSRI_SS_OPEN;
  s->reported = true;
}

/* ---- connecting ------------------------------------------------------------------------ */

static void stream_connect_done(struct vsri_io *io, struct vsri_completion *rc, int32_t res) {
  struct vsri_stream *s = rc->ctx;
  s->reading = false;
  if (s->state != VSRI_SS_CONNECTING) {
    vsri_stream_finish(s);
    return;
  }
  int err = res < 0 ? vsri_sock_reason(-res) : 0;
  s->last_rx = vsri_io_now(io);
  if (!err && s->layer) err = s->layer->on_connect(s);
  if (err) {
    VSRI_DEBUG("VSR-CONNECT", "%s %s: connect: %s", s->name, s->proto,
               res < 0 ? strerror(-res) : vsr_strerror(err));
    if (s->ev->on_connected) s->ev->on_connected(s->owner, &s->base, err);
    vsri_stream_fail(s, err);
    return;
  }
  if (!s->layer) {
    vsri_stream_reported(s);
    if (s->ev->on_connected) s->ev->on_connected(s->owner, &s->base, 0);
    if (s->state != VSRI_SS_OPEN) return;
    vsri_stream_read(s);
    vsri_stream_kick(s);
    return;
  }
  vsri_stream_read(s);
}

int vsri_stream_dial(struct vsri_stream **out, size_t size, const struct vsri_transport_ops *ops,
                     const struct vsri_stream_layer *layer, const char *proto,
                     const struct vsri_transport_ctx *ctx, const char *addr,
                     const struct vsri_conn_events *ev, void *owner, struct vsri_sendq *q) {
  struct sockaddr_storage sa;
  socklen_t len;
  if (vsri_parse_addr(addr, &sa, &len) < 0) return VSR_EADDR;
  int fd = vsri_io_socket(ctx->io, sa.ss_family, SOCK_STREAM);
  if (fd < 0) return fd == -EMFILE || fd == -ENFILE ? VSR_ELIMIT : VSR_EIO;
  struct vsri_stream *s = vsri_stream_new(size, ops, layer, proto, ctx, fd);
  if (!s) {
    vsri_io_close_now(ctx->io, fd);
    return VSR_ENOMEM;
  }
  vsri_format_addr((struct sockaddr *)&sa, s->name, sizeof s->name);
  s->state = VSRI_SS_CONNECTING;
  s->ev = ev;
  s->owner = owner;
  s->q = q;
  s->started = true;
  s->reading = true;
  vsri_io_connect(ctx->io, &s->rc, fd, (struct sockaddr *)&sa, len, stream_connect_done, s);
  *out = s;
  return 0;
}

/* ---- ops ------------------------------------------------------------------------------- */

void vsri_stream_op_start(struct vsri_conn *b, const struct vsri_conn_events *ev, void *owner,
                          struct vsri_sendq *q) {
  struct vsri_stream *s = vsri_stream_of(b);
  s->ev = ev;
  s->owner = owner;
  s->q = q;
  s->started = true;
  if (s->state != VSRI_SS_OPEN) return; /* reads start once connected */
  vsri_stream_read(s);
  vsri_stream_kick(s);
}

void vsri_stream_op_kick(struct vsri_conn *b) { vsri_stream_kick(vsri_stream_of(b)); }

void vsri_stream_op_close(struct vsri_conn *b, int reason, bool drain) {
  vsri_stream_close(vsri_stream_of(b), reason, drain);
}

void vsri_stream_op_abort(struct vsri_conn *b, int reason) {
  vsri_stream_abort(vsri_stream_of(b), reason);
}

const char *vsri_stream_op_peer_name(const struct vsri_conn *b) {
  return vsri_stream_of_const(b)->name;
}

void vsri_stream_op_set_frame_limit(struct vsri_conn *b, uint32_t max_size, uint32_t allowance) {
  struct vsri_stream *s = vsri_stream_of(b);
  vsri_decoder_set_max(&s->dec, max_size, false);
  vsri_decoder_set_budget(&s->dec, s->dec.budget, allowance, s->dec.conn_max);
}

void vsri_stream_op_rx_clock(const struct vsri_conn *b, struct vsri_rx_clock *out) {
  const struct vsri_stream *s = vsri_stream_of_const(b);
  vsri_decoder_progress(&s->dec, &out->frame_have, &out->frame_size);
  out->last_rx_ns = s->last_rx;
  out->frame_start_ns = out->frame_have ? s->frame_start : 0;
}
