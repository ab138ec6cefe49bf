/* TLS, WS and WSS transports, bytes out: control output (the 101, the page, an HTTP refusal,
 * Pong, Close), units (a WebSocket header, empty for plain TLS, then the frame) written
 * zero-copy, masked (a WS client) or encrypted into TLS records, and the closing sequence
 * (tls_ws_impl.h). The core (stream_rw.c) submits the writes and reports their errors. */
#include <limits.h>
#include <string.h>

#include "transport/tls_ws_impl.h"
#include "util/alloc.h"
#include "util/log.h"
#include "vsrbus/error.h"


static uint32_t tw_rand(struct tw_conn *c) {
  uint32_t x = c->rng ? c->rng : 0x9e3779b9u;
  x ^= x << 13;
  x ^= x >> 17;
  x ^= x << 5;
  return c->rng = x;
}

static void tw_new_mask(struct tw_conn *c, uint8_t m[4]) {
  uint32_t r = tw_rand(c);
  memcpy(m, &r, 4);
}

bool vsri_tw_ctl_add(struct tw_conn *c, const void *p, size_t n) {
  if (c->ctl_len + n > sizeof c->ctl) return false;
  memcpy(c->ctl + c->ctl_len, p, n);
  c->ctl_len += (uint32_t)n;
  return true;
}

/* Queues a control frame (masked on the client side). */
void vsri_tw_ctl_frame(struct tw_conn *c, uint8_t opcode, const uint8_t *p, size_t n) {
  uint8_t f[VSRI_WS_HDR_MAX + 125], mask[4];
  if (n > 125) n = 125;
  if (!c->s.server) tw_new_mask(c, mask);
  size_t h = vsri_ws_header(f, opcode, n, c->s.server ? NULL : mask);
  memcpy(f + h, p, n);
  if (!c->s.server) vsri_ws_mask(f + h, n, mask, 0);
  if (!vsri_tw_ctl_add(c, f, h + n)) {
    VSRI_DEBUG("VSR-WS", "%s %s: control output full; %s frame dropped", c->s.name, tw_name(c),
               opcode == WSLAY_PONG ? "Pong" : "control");
  }
  vsri_tw_want_write(c);
}

static void tw_ctl_close(struct tw_conn *c, uint16_t code, const char *why) {
  uint8_t f[127];
  size_t n = vsri_ws_close_frame(f, code, why);
  c->ws_close_sent = true;
  vsri_tw_ctl_frame(c, WSLAY_CONNECTION_CLOSE, f + 2, n - 2);
}


/* ---- writing --------------------------------------------------------------------------- */

static uint32_t tw_hlen(const struct tw_conn *c, uint32_t size) {
  if (!c->ws_on) return 0;
  return (size < 126 ? 2 : size < 65536 ? 4 : 10) + (c->s.server ? 0 : 4);
}

/* Consumes |k| bytes of units from the queue (written, encrypted or masked); *bytes gets the
 * sizes of the frames completed. Returns their count. */
static uint32_t tw_units_done(struct tw_conn *c, size_t k, uint64_t *bytes) {
  struct vsri_sendq *q = c->s.q;
  uint32_t frames = 0;
  *bytes = 0;
  while (k > 0 && vsri_sendq_len(q) > 0) {
    struct vsr_msg *m = vsri_sendq_peek(q, 0);
    size_t rest = tw_hlen(c, m->size) + m->size - c->head_off;
    if (k < rest) {
      c->head_off += (uint32_t)k;
      break;
    }
    k -= rest;
    c->head_off = 0;
    *bytes += vsri_sendq_pop(q);
    frames++;
  }
  return frames;
}

/* Builds iovecs for up to |budget| bytes of units. Returns the count; *bytes the total. */
static int tw_units_iov(struct tw_conn *c, size_t budget, size_t *bytes) {
  struct vsri_sendq *q = c->s.q;
  uint32_t n = vsri_sendq_len(q) < c->batch ? vsri_sendq_len(q) : c->batch;
  int k = 0;
  *bytes = 0;
  for (uint32_t i = 0; i < n && *bytes < budget; i++) {
    struct vsr_msg *m = vsri_sendq_peek(q, i);
    size_t skip = i == 0 ? c->head_off : 0, h = 0;
    if (c->ws_on) {
      uint8_t mask[4];
      if (!c->s.server) {
        if (i == 0 && c->head_off) memcpy(mask, c->head_mask, 4);
        else tw_new_mask(c, mask);
        if (i == 0) memcpy(c->head_mask, mask, 4);
      }
      h = vsri_ws_header(c->hdr[i], WSLAY_BINARY_FRAME, m->size, c->s.server ? NULL : mask);
      if (skip < h) {
        c->s.iov[k].iov_base = c->hdr[i] + skip;
        c->s.iov[k++].iov_len = h - skip;
        *bytes += h - skip;
        skip = 0;
      } else {
        skip -= h;
      }
    }
    c->s.iov[k].iov_base = m->data + skip;
    c->s.iov[k++].iov_len = m->size - skip;
    *bytes += m->size - skip;
  }
  return k;
}

/* Client WS: masks up to VSRI_TLS_SEND_MAX bytes of units into a pool buffer. */
static struct vsr_msg *tw_mask_units(struct tw_conn *c, size_t *taken) {
  size_t bytes;
  tw_units_iov(c, VSRI_TLS_SEND_MAX, &bytes); /* headers (with their mask keys) into c->hdr */
  if (bytes > VSRI_TLS_SEND_MAX) bytes = VSRI_TLS_SEND_MAX;
  struct vsr_msg *out = vsr_pool_get(c->s.ctx->pool, (uint32_t)bytes);
  if (!out) return NULL;
  size_t o = 0;
  /* Walk the units again to know each payload's mask and offset. */
  struct vsri_sendq *q = c->s.q;
  uint32_t head = c->head_off;
  for (uint32_t i = 0; o < bytes && i < vsri_sendq_len(q); i++) {
    struct vsr_msg *m = vsri_sendq_peek(q, i);
    size_t h = tw_hlen(c, m->size), start = i == 0 ? head : 0;
    const uint8_t *hdr = c->hdr[i];
    uint8_t mask[4];
    memcpy(mask, hdr + h - 4, 4);
    memcpy(c->head_mask, mask, 4); /* the last unit touched may stay partly produced */
    for (size_t pos = start; pos < h + m->size && o < bytes;) {
      if (pos < h) {
        size_t t = h - pos < bytes - o ? h - pos : bytes - o;
        memcpy(out->data + o, hdr + pos, t);
        o += t;
        pos += t;
        continue;
      }
      size_t t = h + m->size - pos < bytes - o ? h + m->size - pos : bytes - o;
      vsri_ws_mask_copy(out->data + o, m->data + (pos - h), t, mask, pos - h);
      o += t;
      pos += t;
    }
  }
  out->size = (uint32_t)o;
  *taken = o;
  return out;
}

static void tw_send_buf(struct tw_conn *c) {
  c->s.iov[0].iov_base = c->wbuf->data + c->woff;
  c->s.iov[0].iov_len = c->wbuf->size - c->woff;
  c->wkind = TWW_BUF;
  vsri_stream_sendv(&c->s, 1, 0);
}

static bool tw_alloc_vectors(struct tw_conn *c) {
  if (c->s.iov) return true;
  if (!vsri_stream_iov(&c->s, 2 * c->batch)) return false;
  if (!c->ws_on) return true;
  c->hdr = vsri_malloc(c->batch * sizeof *c->hdr);
  if (c->hdr) return true;
  VSRI_ERROR("VSR-NOMEM", "%s %s: no memory for the write vector; closing", c->s.name, tw_name(c));
  vsri_stream_fail(&c->s, VSR_ENOMEM);
  return false;
}

/* Control bytes then page bytes, as iovecs. */
static int tw_ctl_iov(struct tw_conn *c) {
  int k = 0;
  if (c->ctl_off < c->ctl_len) {
    c->s.iov[k].iov_base = c->ctl + c->ctl_off;
    c->s.iov[k++].iov_len = c->ctl_len - c->ctl_off;
  }
  if (c->page && c->page_len) {
    c->s.iov[k].iov_base = (void *)c->page;
    c->s.iov[k++].iov_len = c->page_len;
  }
  return k;
}

static void tw_ctl_done(struct tw_conn *c, size_t k) {
  size_t t = c->ctl_len - c->ctl_off < k ? c->ctl_len - c->ctl_off : k;
  c->ctl_off += (uint32_t)t;
  k -= t;
  if (c->ctl_off == c->ctl_len) c->ctl_off = c->ctl_len = 0;
  if (c->page) {
    c->page += k;
    c->page_len -= k;
    if (c->page_len == 0) c->page = NULL;
  }
}

/* Everything queued is out: the closing sequence (Close frame, close_notify, FIN). */
static void tw_flush_idle(struct tw_conn *c) {
  if (!c->s.draining) {
    if (c->s.reported && c->s.ev && c->s.ev->on_drained) c->s.ev->on_drained(c->s.owner, &c->s.base);
    return;
  }
  if (c->ws_on && c->phase == TWP_FRAMES && c->ws_close_due && !c->ws_close_sent) {
    tw_ctl_close(c, c->close_code ? c->close_code : VSRI_WS_NORMAL, c->close_why);
    return;
  }
  if (c->tls_on && c->tls.done && !c->tls_bye_sent) {
    c->tls_bye_sent = true;
    vsri_tls_bye(&c->tls);
    vsri_io_defer(c->s.ctx->io, &c->s.flush);
    return;
  }
  vsri_stream_drained(&c->s);
}

/* Units through a transform: TLS records, or masking for a WS client (then TLS for WSS). The
 * frames taken are counted in tk_* until their bytes are handed to the kernel. Returns 0 or -1
 * (no pool buffer, or a TLS error). */
static int tw_produce_units(struct tw_conn *c) {
  size_t taken = 0;
  if (c->ws_on && !c->s.server) {
    struct vsr_msg *mb = tw_mask_units(c, &taken);
    if (!mb) return -1;
    if (c->tls_on) {
      struct iovec v = {mb->data, mb->size};
      ssize_t t = vsri_tls_send(&c->tls, &v, 1, 0);
      vsr_msg_unref(mb);
      if (t < 0 || (size_t)t != taken) return -1;
    } else {
      c->wbuf = mb;
      c->woff = 0;
    }
  } else {
    size_t bytes;
    int k = tw_units_iov(c, VSRI_TLS_SEND_MAX, &bytes);
    ssize_t t = vsri_tls_send(&c->tls, c->s.iov, k, 0);
    if (t < 0) return -1;
    taken = (size_t)t;
  }
  uint64_t b;
  c->tk_frames += tw_units_done(c, taken, &b);
  c->tk_bytes += b;
  return 0;
}

/* The flush point (stream.h, produce_out). */
void vsri_tw_produce_out(struct vsri_stream *s) {
  struct tw_conn *c = tw_of(s);
  if (c->s.writing || c->s.state == VSRI_SS_CLOSED || c->s.state == VSRI_SS_CONNECTING) return;
  if (c->s.state == VSRI_SS_CLOSING && !c->s.draining) return;
  if (!tw_alloc_vectors(c)) return;
  if (c->wbuf) {
    tw_send_buf(c);
    return;
  }
  bool ctl = c->head_off == 0 && (c->ctl_len || c->page);
  bool units = !ctl && c->phase == TWP_FRAMES && c->s.q && vsri_sendq_len(c->s.q) > 0 &&
               (c->s.started || !c->s.server) && (c->s.state == VSRI_SS_OPEN || c->s.draining);
  if (ctl && !c->tls_on) {
    c->wkind = TWW_CTL;
    vsri_stream_sendv(&c->s, tw_ctl_iov(c), 0);
    return;
  }
  if (ctl) {
    int k = tw_ctl_iov(c);
    ssize_t t = vsri_tls_send(&c->tls, c->s.iov, k, 0);
    if (t < 0) goto out_failed;
    tw_ctl_done(c, (size_t)t);
  } else if (units && !c->tls_on && c->s.server) {
    size_t bytes;
    uint32_t len = vsri_sendq_len(c->s.q), units_n = len < c->batch ? len : c->batch;
    c->wkind = TWW_UNITS;
    vsri_stream_sendv(&c->s, tw_units_iov(c, SIZE_MAX, &bytes), units_n);
    return;
  } else if (units && tw_produce_units(c) < 0) {
    goto out_failed;
  }
  if (!c->wbuf && c->tls_on) {
    c->wbuf = vsri_tls_take_out(&c->tls);
    c->woff = 0;
  }
  if (c->wbuf) { /* the frames just produced travel in this buffer */
    c->wb_frames = c->tk_frames;
    c->wb_bytes = c->tk_bytes;
    c->tk_frames = 0;
    c->tk_bytes = 0;
    tw_send_buf(c);
    return;
  }
  if (c->ctl_len || c->page || (units && vsri_sendq_len(c->s.q))) {
    vsri_io_defer(c->s.ctx->io, &c->s.flush);
    return;
  }
  if (c->s.state == VSRI_SS_HANDSHAKE) return;
  tw_flush_idle(c);
  return;
out_failed:
  VSRI_ERROR("VSR-TLS", "%s %s: cannot produce output: %s; closing", c->s.name, tw_name(c),
             c->tls_on && c->tls.why[0] ? c->tls.why : "no pool buffer");
  vsri_stream_fail(&c->s, VSR_EPOOL);
}

/* A write completed (stream.h, on_written): the frames whose last byte it carried. */
uint32_t vsri_tw_written(struct vsri_stream *s, size_t n, uint64_t *bytes) {
  struct tw_conn *c = tw_of(s);
  uint32_t frames = 0;
  switch (c->wkind) {
  case TWW_BUF:
    c->woff += (uint32_t)n;
    if (c->woff == c->wbuf->size) {
      vsr_msg_unref(c->wbuf);
      c->wbuf = NULL;
      frames = c->wb_frames;
      *bytes = c->wb_bytes;
      c->wb_frames = 0;
      c->wb_bytes = 0;
    }
    break;
  case TWW_CTL: tw_ctl_done(c, n); break;
  case TWW_UNITS: frames = tw_units_done(c, n, bytes); break;
  default: break;
  }
  c->wkind = TWW_NONE;
  return frames;
}
