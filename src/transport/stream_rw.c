/* Stream-socket core, reading and writing: see stream.h.
 *
 * Plain TCP (no layer): the reader feeds a loop-owned receive buffer to the streaming decoder
 * (large bodies are read straight into their frame buffer); the writer drains the owner's
 * queue with one vectored write of up to max_batch frames, at the loop's before-poll point.
 * With a layer, the bytes read go to layer->on_bytes_in and the layer produces each write. */
#include <errno.h>
#include <limits.h>
#include <string.h>

#include "transport/stream.h"
#include "util/alloc.h"
#include "util/log.h"
#include "vsrbus/error.h"

/* Bodies with at least this much still missing are read straight into the frame buffer. */
#define STREAM_DIRECT_MIN (16u << 10)

/* ---- reading --------------------------------------------------------------------------- */

/* The plain path's functions are static inline, so the TCP reader compiles to one loop as
 * before the core existed; the exported names are for the layers. */
/* Plain TCP reads only once started and while open (stream_read_done checks). */
static inline bool stream_deliver(struct vsri_stream *s, struct vsr_msg *m) {
  s->ev->on_frame(s->owner, &s->base, m);
  vsr_msg_unref(m);
  return s->state == VSRI_SS_OPEN;
}

/* A layer may complete frames during its handshake, before start(): those are dropped. */
bool vsri_stream_deliver(struct vsri_stream *s, struct vsr_msg *m) {
  if (s->started && s->state == VSRI_SS_OPEN) s->ev->on_frame(s->owner, &s->base, m);
  vsr_msg_unref(m);
  return s->state == VSRI_SS_OPEN;
}

void vsri_stream_frame_error(struct vsri_stream *s, int err) {
  char what[200];
  vsri_decoder_describe(&s->dec, err, what, sizeof what);
  bool mem = err == VSR_EMEMORY_BUDGET || err == VSR_EMEMORY_MAX || err == VSR_EPOOL;
  VSRI_WARN(mem ? "VSR-MEMORY" : "VSR-FRAME", "%s %s: %s (%s; %s); closing", s->name, s->proto,
            vsr_strerror(err), vsr_errname(err), what);
  /* Replies to frames accepted before this one still go out; the refused frame's buffer (if
   * any) is already back in the pool. */
  if (s->layer && s->layer->on_frame_error) s->layer->on_frame_error(s, err);
  else vsri_stream_close(s, err, true);
}

static inline bool stream_frame(struct vsri_stream *s, struct vsr_msg *m) {
  if (__builtin_expect(s->layer == NULL, 1)) return stream_deliver(s, m);
  return s->layer->on_frame ? s->layer->on_frame(s, m) : vsri_stream_deliver(s, m);
}

static inline bool stream_decode(struct vsri_stream *s, const uint8_t *p, size_t n) {
  uint64_t now = vsri_io_now(s->ctx->io);
  while (n > 0) {
    size_t used = 0;
    struct vsr_msg *m = NULL;
    if (vsri_decoder_idle(&s->dec)) s->frame_start = now; /* these bytes start a frame */
    int r = vsri_decoder_feed(&s->dec, p, n, &used, &m);
    p += used;
    n -= used;
    if (r < 0) {
      vsri_stream_frame_error(s, r);
      return false;
    }
    if (r == 0) break;
    if (!stream_frame(s, m)) return false;
  }
  return true;
}

bool vsri_stream_decode(struct vsri_stream *s, const uint8_t *p, size_t n) {
  return stream_decode(s, p, n);
}

bool vsri_stream_wrote(struct vsri_stream *s, size_t n) {
  struct vsr_msg *m = NULL;
  int r = vsri_decoder_wrote(&s->dec, n, &m);
  if (r < 0) {
    vsri_stream_frame_error(s, r);
    return false;
  }
  return r == 1 ? stream_frame(s, m) : true;
}

/* A read while closing gracefully: drop the bytes; the peer's FIN (or reset) ends the wait. */
static void stream_discard_done(struct vsri_stream *s, int32_t res) {
  if (res == -ECANCELED || !s->draining) {
    vsri_stream_finish(s);
    return;
  }
  if (res > 0) {
    vsri_stream_read(s);
    return;
  }
  s->peer_eof = true;
  if (res < 0) { /* reset: whatever is still queued cannot arrive */
    VSRI_DEBUG("VSR-DRAIN", "%s %s: recv while closing: %s; closing now", s->name, s->proto,
               strerror(-res));
    vsri_stream_teardown(s);
    return;
  }
  if (s->half_closed) vsri_stream_teardown(s);
}

/* The peer closed (res 0) or the socket failed (res < 0) while live. */
static void stream_read_end(struct vsri_stream *s, int32_t res) {
  int reason;
  if (!s->reported) {
    VSRI_WARN("VSR-HANDSHAKE", "%s %s: peer closed during the %s; closing", s->name, s->proto,
              s->layer && s->layer->stage ? s->layer->stage(s) : "handshake");
    reason = VSR_EHANDSHAKE;
  } else {
    reason = res == 0 ? vsri_decoder_eof_reason(&s->dec) : vsri_sock_reason(-res);
    if (res < 0 && reason == VSR_EIO) {
      VSRI_WARN("VSR-READ", "%s %s: recv: %s; closing", s->name, s->proto, strerror(-res));
    } else if (reason == VSR_EEOF_HEADER || reason == VSR_EEOF_BODY) {
      VSRI_WARN("VSR-EOF", "%s %s: %s; closing", s->name, s->proto, vsr_strerror(reason));
    }
  }
  s->peer_eof = true;
  if (!s->server && !s->reported && s->ev->on_connected) {
    s->ev->on_connected(s->owner, &s->base, reason);
  }
  /* After a half-close, queued replies still go out. */
  vsri_stream_close(s, reason, res == 0 && s->reported);
}

static void stream_read_done(struct vsri_io *io, struct vsri_completion *rc, int32_t res) {
  struct vsri_stream *s = rc->ctx;
  s->reading = false;
  if (s->discard) {
    stream_discard_done(s, res);
    return;
  }
  if (s->state != VSRI_SS_OPEN && s->state != VSRI_SS_HANDSHAKE) {
    vsri_stream_finish(s);
    return;
  }
  if (res <= 0) {
    stream_read_end(s, res);
    return;
  }
  s->last_rx = vsri_io_now(io);
  bool go;
  if (s->direct_read) {
    go = vsri_stream_wrote(s, (size_t)res); /* into the frame: says nothing of what is queued */
  } else {
    s->rbusy = (size_t)res == rc->u.recv.len; /* sizes the next loop-buffer read (rbusy) */
    go = s->layer ? s->layer->on_bytes_in(s, rc->u.recv.buf, (size_t)res)
                  : stream_decode(s, rc->u.recv.buf, (size_t)res);
  }
  if (go) vsri_stream_read(s);
}

void vsri_stream_read(struct vsri_stream *s) {
  if (s->reading) return;
  if (s->discard) {
    if (!s->draining || s->peer_eof) return;
    s->reading = true;
    vsri_io_recv_pooled(s->ctx->io, &s->rc, s->fd, stream_read_done, s);
    return;
  }
  if (s->state != VSRI_SS_OPEN && s->state != VSRI_SS_HANDSHAKE) return;
  if (s->state == VSRI_SS_OPEN && !s->started) return; /* reported, not started: start() reads */
  if (!s->layer) {
    int g = vsri_decoder_grow(&s->dec); /* a full buffer grows before the read, not after */
    if (g < 0) {
      vsri_stream_frame_error(s, g);
      return;
    }
    uint8_t *dst;
    size_t want = vsri_decoder_want(&s->dec, &dst);
    s->direct_read = want >= STREAM_DIRECT_MIN;
    if (s->direct_read) {
      s->reading = true;
      vsri_io_recv(s->ctx->io, &s->rc, s->fd, dst, want, stream_read_done, s);
      return;
    }
  }
  s->reading = true;
  if (s->rbusy) vsri_io_recv_pooled_big(s->ctx->io, &s->rc, s->fd, stream_read_done, s);
  else vsri_io_recv_pooled(s->ctx->io, &s->rc, s->fd, stream_read_done, s);
}

/* ---- writing --------------------------------------------------------------------------- */

/* Plain TCP: pops the frames the kernel took whole; the head may stay partly written. */
static uint32_t stream_popped(struct vsri_stream *s, size_t left, uint64_t *bytes) {
  struct vsri_sendq *q = s->q;
  uint32_t frames = 0;
  while (left > 0 && vsri_sendq_len(q) > 0) {
    struct vsr_msg *m = vsri_sendq_peek(q, 0);
    size_t rest = m->size - q->off;
    if (left < rest) {
      q->off += (uint32_t)left;
      break;
    }
    left -= rest;
    *bytes += vsri_sendq_pop(q);
    frames++;
  }
  return frames;
}

static void stream_write_done(struct vsri_io *io, struct vsri_completion *wc, int32_t res) {
  (void)io;
  struct vsri_stream *s = wc->ctx;
  s->writing = false;
  s->wr_frames = 0;
  if (res < 0) {
    if (res != -ECANCELED) {
      int reason = vsri_sock_reason(-res);
      VSRI_WARN("VSR-WRITE", "%s %s: write: %s; closing", s->name, s->proto, strerror(-res));
      /* A FIN that a reset follows was a peer that went away, not one that half-closed. */
      if (s->state == VSRI_SS_CLOSING && s->reason == VSR_ECLOSED && reason == VSR_ERESET) {
        s->reason = VSR_ERESET;
      }
      vsri_stream_fail(s, reason == VSR_EIO ? VSR_EWRITE : reason);
    } else {
      vsri_stream_finish(s);
    }
    return;
  }
  uint64_t bytes = 0;
  uint32_t frames = s->layer ? s->layer->on_written(s, (size_t)res, &bytes)
                             : stream_popped(s, (size_t)res, &bytes);
  /* One upcall per completed write: the kernel has the last byte of these frames. */
  if (frames && s->ev && s->ev->on_sent) s->ev->on_sent(s->owner, &s->base, frames, bytes);
  if (s->state == VSRI_SS_CLOSING && !s->draining) {
    vsri_stream_finish(s);
    return;
  }
  if (s->layer) {
    s->layer->produce_out(s);
    return;
  }
  if (vsri_sendq_len(s->q) > 0) {
    vsri_stream_flush(s); /* more queued (or a partial write): keep the pipe full */
    return;
  }
  if (s->draining) {
    vsri_stream_drained(s);
    return;
  }
  if (s->ev->on_drained) s->ev->on_drained(s->owner, &s->base);
}

bool vsri_stream_iov(struct vsri_stream *s, uint32_t n) {
  if (s->iov_cap >= n) return true;
  struct iovec *v = vsri_malloc(n * sizeof *v);
  if (!v) {
    VSRI_ERROR("VSR-NOMEM", "%s %s: no memory for the write vector; closing", s->name,
               s->proto);
    vsri_stream_fail(s, VSR_ENOMEM);
    return false;
  }
  vsri_free(s->iov);
  s->iov = v;
  s->iov_cap = n;
  return true;
}

void vsri_stream_sendv(struct vsri_stream *s, int n, uint32_t frames) {
  s->writing = true;
  s->wr_frames = frames;
  vsri_io_sendv(s->ctx->io, &s->wc, s->fd, s->iov, n, stream_write_done, s);
}

#ifdef VSR_PLANT_BUG
/* A planted bug, compiled only into the simulator's proof test (tests/CMakeLists.txt builds
 * vsrbus_planted with -DVSR_PLANT_BUG; never a shipped build): one write in 1,000 silently
 * drops the frame at the head of the queue, counted as sent. `vsrbus sim` must catch it. */
static uint32_t stream_planted_writes;
#endif

void vsri_stream_flush(void *arg) {
  struct vsri_stream *s = arg;
  if (s->layer) {
    if (s->writing || s->state == VSRI_SS_CLOSED || s->state == VSRI_SS_CONNECTING) return;
    if (s->state == VSRI_SS_CLOSING && !s->draining) return;
    s->layer->produce_out(s);
    return;
  }
  if (s->writing || !s->q || vsri_sendq_len(s->q) == 0) return;
  if (s->state != VSRI_SS_OPEN && !s->draining) return;
#ifdef VSR_PLANT_BUG
  if (s->q->off == 0 && vsri_sendq_len(s->q) > 1 && ++stream_planted_writes % 1000 == 0) {
    uint64_t lost = vsri_sendq_pop(s->q);
    if (s->ev->on_sent) s->ev->on_sent(s->owner, &s->base, 1, lost);
  }
#endif
  uint32_t max = s->ctx->max_batch ? s->ctx->max_batch : 256;
  if (max > IOV_MAX) max = IOV_MAX;
  if (!s->iov && !vsri_stream_iov(s, max)) return;
  struct vsri_sendq *q = s->q;
  uint32_t n = vsri_sendq_len(q) < max ? vsri_sendq_len(q) : max;
  for (uint32_t i = 0; i < n; i++) {
    struct vsr_msg *m = vsri_sendq_peek(q, i);
    uint32_t off = i == 0 ? q->off : 0;
    s->iov[i].iov_base = m->data + off;
    s->iov[i].iov_len = m->size - off;
  }
  vsri_stream_sendv(s, (int)n, n);
}

void vsri_stream_kick(struct vsri_stream *s) {
  if (s->state == VSRI_SS_OPEN && s->started && !s->writing) {
    vsri_io_defer(s->ctx->io, &s->flush);
  }
}
