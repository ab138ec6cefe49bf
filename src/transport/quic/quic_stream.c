/* QUIC transport: quic_stream.c.
 * Delivery of decoded frames to the owner (held until start()), per-stream decoding, and the table
 * of streams frames travel on. */
#include "transport/quic/quic_impl.h"

/* ---- delivery -------------------------------------------------------------------------- */

static void q_deliver(struct q_conn *c, struct vsr_msg *m) {
  if (c->state >= Q_CLOSING || (c->state == Q_DRAINING && c->started)) {
    vsr_msg_unref(m); /* closing: reading has stopped */
    return;
  }
  if (c->started) {
    if (c->pend_len) q_deliver_pending(c); /* frames held before start() go first */
    c->ev->on_frame(c->owner, &c->base, m);
    vsr_msg_unref(m);
    return;
  }
  /* Arrived with the stream that made the connection reportable: hold until start(). */
  if (c->pend_len == c->pend_cap) {
    uint32_t cap = c->pend_cap ? c->pend_cap * 2 : 8;
    struct vsr_msg **p = vsri_realloc(c->pend, cap * sizeof *p);
    if (!p) {
      vsr_msg_unref(m);
      if (!c->fail_reason) c->fail_reason = VSR_ENOMEM;
      return;
    }
    c->pend = p;
    c->pend_cap = cap;
  }
  c->pend[c->pend_len++] = m;
}

void q_deliver_pending(struct q_conn *c) {
  uint32_t n = c->pend_len, i = 0;
  int64_t rx_sid = c->rx_sid;
  c->pend_len = 0;
  c->rx_sid = -1;
  for (; i < n && c->state < Q_DRAINING; i++) {
    c->ev->on_frame(c->owner, &c->base, c->pend[i]);
    vsr_msg_unref(c->pend[i]);
  }
  c->rx_sid = rx_sid;
  for (; i < n; i++) vsr_msg_unref(c->pend[i]);
}

void q_pend_clear(struct q_conn *c) {
  for (uint32_t i = 0; i < c->pend_len; i++) vsr_msg_unref(c->pend[i]);
  vsri_free(c->pend);
  c->pend = NULL;
  c->pend_len = c->pend_cap = 0;
}

/* A frame error poisons the stream: log like TCP does, close with 0x1004. */
static int q_frame_error(struct q_conn *c, const struct vsri_decoder *dec, int err) {
  if (err == VSR_EPOOL) {
    VSRI_WARN("VSR-POOL", "%s quic: message pool exhausted; closing", c->name);
    c->fail_reason = VSR_EPOOL;
    if (!c->ccerr_set) {
      ngtcp2_connection_close_error_set_transport_error(&c->ccerr, NGTCP2_INTERNAL_ERROR, NULL,
                                                        0);
      c->ccerr_set = true;
    }
    return NGTCP2_ERR_CALLBACK_FAILURE;
  }
  const uint8_t *h = dec->hdr;
  uint32_t size = (uint32_t)h[48] | (uint32_t)h[49] << 8 | (uint32_t)h[50] << 16 |
                  (uint32_t)h[51] << 24;
  VSRI_WARN("VSR-FRAME", "%s quic: %s (%s; size %u, command %u, max %u); closing with 0x%x",
            c->name, vsr_strerror(err), vsr_errname(err), size, h[60],
            c->ctx->max_message_size, VSRI_QUIC_PROTOCOL_VIOLATION);
  if (!c->fail_reason) c->fail_reason = err;
  q_set_app_error(c, VSRI_QUIC_PROTOCOL_VIOLATION);
  return NGTCP2_ERR_CALLBACK_FAILURE;
}

/* Feeds bytes of stream |s| to its decoder. Returns 0 or NGTCP2_ERR_CALLBACK_FAILURE. */
int q_feed(struct q_conn *c, struct q_stream *s, const uint8_t *p, size_t n) {
  uint64_t now = q_now(c);
  c->last_rx = now;
  while (n > 0) {
    size_t used = 0;
    struct vsr_msg *m = NULL;
    if (vsri_decoder_idle(&s->dec)) s->frame_start = now; /* these bytes start a frame */
    int r = vsri_decoder_feed(&s->dec, p, n, &used, &m);
    p += used;
    n -= used;
    if (r < 0) return q_frame_error(c, &s->dec, r);
    if (r == 0) break;
    s->frames_in++;
    /* A Request's Reply goes back on this stream: remember its number for the routing. */
    s->keyed = m->data[60] == VSR_CMD_REQUEST;
    if (s->keyed) s->want_request = ((const struct vsr_request_header *)m->data)->request;
    c->rx_sid = s->sid;
    q_deliver(c, m);
    if (c->fail_reason) return NGTCP2_ERR_CALLBACK_FAILURE;
  }
  return 0;
}

/* ---- streams --------------------------------------------------------------------------- */

struct q_stream *q_stream_find(struct q_conn *c, int64_t sid) {
  if (sid < 0) return NULL;
  for (uint32_t i = 0; i < c->nst; i++) {
    if (c->st[i].sid == sid) return &c->st[i];
  }
  return NULL;
}

/* Takes a free slot for stream |sid|; NULL when all max_bidi_streams are in use (or, at the
 * first stream, memory is short: c->st stays NULL). */
struct q_stream *q_stream_add(struct q_conn *c, int64_t sid) {
  if (!c->st) {
    /* Once per connection, never per request, and not before a stream exists (a flood of
     * handshakes costs no stream memory). */
    c->st = vsri_calloc(c->st_want, sizeof *c->st);
    if (!c->st) return NULL;
    c->nst = c->st_want;
    for (uint32_t i = 0; i < c->nst; i++) {
      c->st[i].sid = -1;
      vsri_conn_decoder_init(&c->st[i].dec, c->ctx);
    }
  }
  for (uint32_t i = 0; i < c->nst; i++) {
    struct q_stream *s = &c->st[i];
    if (s->sid >= 0) continue;
    s->sid = sid;
    s->seq = c->st_seq++;
    s->tx_off = s->want_request = 0;
    s->frames_in = s->frames_out = 0;
    s->peer_fin = s->fin_sent = s->keyed = false;
    c->nopen++;
    c->had_stream = true;
    return s;
  }
  return NULL;
}

/* The stream closed: its slot (and decoder) is ready for the next one. */
void q_stream_drop(struct q_conn *c, struct q_stream *s) {
  if (!vsri_decoder_idle(&s->dec)) {
    vsri_decoder_free(&s->dec);
    vsri_conn_decoder_init(&s->dec, c->ctx);
  }
  s->sid = -1;
  c->nopen--;
}
