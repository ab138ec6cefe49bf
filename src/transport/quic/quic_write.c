/* QUIC transport: quic_write.c.
 * Writer: routes queued frames to streams, hands them to ngtcp2 in place and sends the packets as
 * GSO bursts, a bounded number per turn. */
#include "transport/quic/quic_impl.h"

/* ---- writing --------------------------------------------------------------------------- */

/* Frames stream |s| may still carry: all of them on a long-lived stream; on a stream the peer
 * finished, one answer per frame it carried; one frame per stream for a client in
 * stream_per_request mode. */
static uint32_t q_stream_allowance(const struct q_conn *c, const struct q_stream *s) {
  if (s->fin_sent) return 0;
  if (c->server) {
    if (!s->peer_fin) return UINT32_MAX;
    return s->frames_in > s->frames_out ? s->frames_in - s->frames_out : 0;
  }
  if (c->cfg->stream_per_request) return s->frames_out == 0 ? 1 : 0;
  return UINT32_MAX;
}

/* Whether we finish the stream once its allowance is used up. */
static bool q_stream_finite(const struct q_conn *c, const struct q_stream *s) {
  return c->server ? s->peer_fin : c->cfg->stream_per_request;
}

/* Client: opens a stream for the queue head (its long-lived stream, or the next request's). */
static struct q_stream *q_client_open_stream(struct q_conn *c) {
  if (!q_hs_done(c) || c->nopen == c->st_want) return NULL; /* a closing stream reschedules us */
  int64_t sid;
  /* NGTCP2_ERR_STREAM_ID_BLOCKED: the server's MAX_STREAMS credit is used up;
   * extend_max_local_streams_bidi reschedules us when it grows. */
  if (ngtcp2_conn_open_bidi_stream(c->qc, &sid, NULL) != 0) return NULL;
  struct q_stream *s = q_stream_add(c, sid);
  if (!s) { /* only memory can fail here: the slot count was checked */
    ngtcp2_conn_shutdown_stream(c->qc, sid, 0);
    VSRI_WARN("VSR-QUIC", "%s quic: no memory for stream state; closing", c->name);
    if (!c->fail_reason) c->fail_reason = VSR_ENOMEM;
    q_conn_schedule(c);
  }
  return s;
}

/* The stream the queue head |m| goes on, or NULL: it waits until a stream can take it.
 * A frame partly handed over continues on its stream. Server, several streams open: a Reply
 * goes to the oldest stream whose last Request carried the same `request` number (Iggy
 * mainline's matching); any other frame, and a Reply that matches none, goes first come first
 * served to the oldest stream that still owes an answer (a Reply preferring streams that carried
 * a Request, anything else preferring the others), else to the oldest long-lived stream.
 * Client: a stream that may still carry a frame, else a new one. */
static struct q_stream *q_route(struct q_conn *c, const struct vsr_msg *m) {
  if (c->q->off > 0) return q_stream_find(c, c->head_sid);
  if (!c->server) {
    for (uint32_t i = 0; i < c->nst; i++) {
      struct q_stream *s = &c->st[i];
      if (s->sid >= 0 && q_stream_allowance(c, s) > 0) return s;
    }
    return q_client_open_stream(c);
  }
  bool reply = m->data[60] == VSR_CMD_REPLY;
  uint64_t req = reply ? ((const struct vsr_reply_header *)m->data)->request : 0;
  /* Candidates: [0] matching Reply, [1] owes and carried a Request, [2] owes, carried
   * something else, [3] long-lived with nothing owed. Oldest of each. */
  struct q_stream *best[4] = {NULL, NULL, NULL, NULL};
  for (uint32_t i = 0; i < c->nst; i++) {
    struct q_stream *s = &c->st[i];
    if (s->sid < 0 || q_stream_allowance(c, s) == 0) continue;
    bool owes = s->frames_in > s->frames_out;
    int k = !owes ? 3 : !s->keyed ? 2 : reply && s->want_request == req ? 0 : 1;
    if (!best[k] || s->seq < best[k]->seq) best[k] = s;
  }
  if (best[0]) return best[0];
  if (reply) return best[1] ? best[1] : best[2] ? best[2] : best[3];
  return best[2] ? best[2] : best[1] ? best[1] : best[3];
}

/* Points |v| at the queued bytes the next write carries and sets *|out| to their stream.
 * Returns the vector count; sets *fin when the stream should be finished after them. A stream
 * with nothing more to carry is finished first (a bare FIN), whatever the queue holds. */
static size_t q_stream_vec(struct q_conn *c, ngtcp2_vec *v, bool *fin,
                           struct q_stream **out) {
  *fin = false;
  *out = NULL;
  for (uint32_t i = 0; i < c->nst; i++) {
    struct q_stream *s = &c->st[i];
    if (s->sid < 0 || s->fin_sent || !q_stream_finite(c, s) || q_stream_allowance(c, s) > 0) {
      continue;
    }
    if (c->server || s->frames_out > 0) {
      *fin = true;
      *out = s;
      return 0;
    }
  }
  uint32_t queued = c->q ? vsri_sendq_len(c->q) : 0;
  if (c->stream_blocked || queued == 0) return 0;
  struct q_stream *s = q_route(c, vsri_sendq_peek(c->q, 0));
  if (!s) return 0;
  uint32_t allow = q_stream_allowance(c, s);
  if (allow == 0) return 0;
  uint32_t n = queued < allow ? queued : allow;
  /* Several frames per call only where they can go nowhere else: one stream open. Frames for
   * other streams still share the packet (the write loop calls again with WRITE_MORE). */
  if (c->nopen > 1) n = 1;
  if (n > Q_VEC) n = Q_VEC;
  if (n > 1 && c->cfg->unbatched) n = 1;
  if (!q_infl_reserve(c, n)) return 0;
  for (uint32_t i = 0; i < n; i++) {
    struct vsr_msg *m = vsri_sendq_peek(c->q, i);
    uint32_t off = i == 0 ? c->q->off : 0;
    v[i].base = m->data + off;
    v[i].len = m->size - off;
  }
  *fin = q_stream_finite(c, s) && n == allow;
  *out = s;
  return n;
}

/* ngtcp2 took |n| bytes of stream |s|: frames wholly handed over move to the in-flight ring
 * (their reference lives there until acked; they count as sent once the kernel takes the
 * packet, quic_infl.c), the queue lets go of them. */
static void q_stream_took(struct q_conn *c, struct q_stream *s, size_t n, size_t offered,
                          bool fin) {
  struct vsri_sendq *q = c->q;
  if (fin && n == offered) s->fin_sent = true;
  while (n > 0) {
    struct vsr_msg *m = vsri_sendq_peek(q, 0);
    size_t rest = m->size - q->off;
    if (n < rest) {
      q->off += (uint32_t)n;
      s->tx_off += n;
      c->head_sid = s->sid;
      return;
    }
    n -= rest;
    s->tx_off += rest;
    q_infl_push(c, s->sid, m, s->tx_off);
    vsri_sendq_pop(q);
    s->frames_out++;
  }
}

/* Test stream: raw bytes on an extra stream. */
static size_t q_extra_vec(struct q_conn *c, ngtcp2_vec *v) {
  if (c->extra_sid < 0 || c->extra_off >= c->extra_len) return 0;
  v->base = (uint8_t *)c->extra_data + c->extra_off;
  v->len = c->extra_len - c->extra_off;
  return 1;
}

/* What the next ngtcp2 write call carries: the test stream's bytes, else queued frames. */
struct q_wv {
  ngtcp2_vec v[Q_VEC];
  size_t cnt, offered;
  int64_t sid;
  struct q_stream *st;
  bool fin, extra;
};

static void q_write_vec(struct q_conn *c, struct q_wv *w) {
  w->fin = w->extra = false;
  w->sid = -1;
  w->st = NULL;
  w->cnt = q_extra_vec(c, w->v);
  if (w->cnt) {
    w->extra = true;
    w->sid = c->extra_sid;
  } else {
    w->cnt = q_stream_vec(c, w->v, &w->fin, &w->st);
    if (w->st) w->sid = w->st->sid;
  }
  w->offered = 0;
  for (size_t i = 0; i < w->cnt; i++) w->offered += w->v[i].len;
}

/* Handles a write call's result for the stream side. Returns 1 to call again for the same
 * packet, 0 if a packet (or nothing) came out, -1 on a fatal error (the connection closed). */
static int q_write_result(struct q_conn *c, const struct q_wv *w, ngtcp2_ssize n,
                          ngtcp2_ssize nd) {
  if (nd >= 0 && w->sid >= 0) {
    if (w->extra) c->extra_off += (size_t)nd;
    else q_stream_took(c, w->st, (size_t)nd, w->offered, w->fin);
  }
  if (n == NGTCP2_ERR_WRITE_MORE) return 1;
  if (n == NGTCP2_ERR_STREAM_DATA_BLOCKED || n == NGTCP2_ERR_STREAM_SHUT_WR ||
      n == NGTCP2_ERR_STREAM_NOT_FOUND) {
    if (w->extra) c->extra_off = c->extra_len;
    else if (w->cnt == 0 && w->st) w->st->fin_sent = true; /* a FIN with nowhere to go */
    else c->stream_blocked = true; /* until the next write round */
    return 1;
  }
  if (n >= 0) return 0;
  if (!c->ccerr_set) {
    ngtcp2_connection_close_error_set_transport_error_liberr(&c->ccerr, (int)n, NULL, 0);
    c->ccerr_set = true;
  }
  VSRI_WARN("VSR-QUIC", "%s quic: write: %s; closing", c->name, ngtcp2_strerror((int)n));
  q_conn_close_now(c, q_liberr_reason((int)n));
  return -1;
}

/* Hands |len| bytes (datagrams of |seg|) to the endpoint. Returns true when the kernel took all
 * of them at once: the endpoint counts bytes in q_stats.bytes_out only for a sendmsg that
 * succeeded, so nothing the test hooks swallowed, nothing parked behind EAGAIN and nothing the
 * kernel refused counts here. */
static bool q_send_out(struct q_conn *c, const struct sockaddr *to, socklen_t tolen,
                       const uint8_t *data, size_t len, size_t seg) {
  uint64_t before = q_stats.bytes_out;
  q_ep_send(c->ep, to, tolen, data, len, seg);
  return q_stats.bytes_out - before == len;
}

static size_t q_burst_packets(struct q_conn *c, size_t mtu) {
  size_t max_pkts = ngtcp2_conn_get_send_quantum(c->qc) / mtu;
  if (max_pkts < 1) max_pkts = 1;
  if (max_pkts > Q_MAX_BURST) max_pkts = Q_MAX_BURST;
  if (max_pkts > Q_BURST_BYTES / mtu) max_pkts = Q_BURST_BYTES / mtu;
  if (c->cfg->unbatched) max_pkts = 1;
  return max_pkts;
}

/* Writes one GSO burst of up to send_quantum: equal-size packets back to back in q_txbuf, one
 * sendmsg. Returns 1 if more could be written right away, 0 if ngtcp2 has nothing more (or
 * pacing / congestion says wait), -1 if the connection failed. */
static int q_write_burst(struct q_conn *c, uint64_t ts) {
  size_t mtu = ngtcp2_conn_get_max_tx_udp_payload_size(c->qc);
  size_t path_mtu = ngtcp2_conn_get_path_max_tx_udp_payload_size(c->qc);
  /* A payload used at once (loopback, > 1472): not before the handshake is confirmed, or
   * ngtcp2 pads every datagram that carries an Initial packet to it — the client's first
   * flight, and its last one too (the ACK of the server's Initial goes out with its Finished,
   * after "completed"): a 65,000-byte datagram the server then kept a 64 KiB decrypt buffer
   * for, for the connection's life (119 KiB per idle connection instead of 55). */
  if (mtu > NGTCP2_MAX_UDP_PAYLOAD_SIZE && !c->hs_confirmed) {
    mtu = path_mtu = NGTCP2_MAX_UDP_PAYLOAD_SIZE;
  }
  size_t max_pkts = q_burst_packets(c, mtu);
  uint32_t flag_more = c->cfg->unbatched ? 0 : NGTCP2_WRITE_STREAM_FLAG_MORE;
  ngtcp2_path_storage ps;
  ngtcp2_path_storage_zero(&ps);
  const struct sockaddr *to = (const struct sockaddr *)ps.path.remote.addr;
  ngtcp2_pkt_info pi;
  size_t off = 0, npk = 0, seg = 0;
  int more = 1;
  bool out = true, any = false; /* every datagram of the burst taken by the kernel; any sent */
  for (;;) {
    struct q_wv w;
    q_write_vec(c, &w);
    uint32_t flags = flag_more | (w.fin ? NGTCP2_WRITE_STREAM_FLAG_FIN : 0);
    ngtcp2_ssize nd = -1;
    ngtcp2_ssize n = ngtcp2_conn_writev_stream(c->qc, &ps.path, &pi, q_txbuf + off, mtu, &nd,
                                               flags, w.sid, w.v, w.cnt, ts);
    int r = q_write_result(c, &w, n, nd);
    if (r < 0) return -1;
    if (r > 0) continue;
    if (n == 0) {
      more = 0;
      break;
    }
    if (npk == 0) seg = (size_t)n;
    if ((size_t)n > seg) {
      /* Larger than the burst's segments (a PMTUD probe): send the burst, then it alone. */
      if (off) out = q_send_out(c, to, ps.path.remote.addrlen, q_txbuf, off, seg) && out;
      out = q_send_out(c, to, ps.path.remote.addrlen, q_txbuf + off, (size_t)n, (size_t)n) && out;
      any = true;
      off = 0;
      break;
    }
    off += (size_t)n;
    if (++npk >= max_pkts || (size_t)n < seg || seg > path_mtu) break;
  }
  if (off) {
    out = q_send_out(c, to, ps.path.remote.addrlen, q_txbuf, off, seg) && out;
    any = true;
  }
  /* Frames whose last byte is in these packets are sent once the kernel took them: now, or
   * when the endpoint's parked send completes (q_conn_write); never if the packets were
   * swallowed (tests) or refused: then a later accepted burst or the peer's ACK reports them
   * (QUIC retransmits lost bytes), or the close drops them. */
  if (any && out) q_infl_kernel(c);
  else if (any && q_ep_blocked(c->ep)) c->tx_parked = true;
  /* Pacing starts once the handshake is done: ngtcp2 0.12 would pace the first flight with the
   * 333 ms initial RTT (one ~25 ms gap before the client's Finished) although an RTT sample
   * arrives a round trip later. The handshake flights are small and amplification-limited. */
  if (q_hs_done(c)) ngtcp2_conn_update_pkt_tx_time(c->qc, ts);
  return more;
}

void q_conn_write(struct q_conn *c) {
  if (c->state >= Q_CLOSING || !c->qc) return;
  if (ngtcp2_conn_is_in_closing_period(c->qc) || ngtcp2_conn_is_in_draining_period(c->qc)) {
    return;
  }
  if (q_ep_blocked(c->ep)) {
    q_ep_wait(c->ep, c);
    return;
  }
  if (c->tx_parked) { /* the endpoint sent the burst it parked: our frames in it are out */
    c->tx_parked = false;
    q_infl_kernel(c);
  }
  c->stream_blocked = false;
  for (int i = 0; i < Q_BURSTS_PER_WRITE; i++) {
    int r = q_write_burst(c, vsri_io_now_fresh(c->ctx->io));
    if (r < 0) return;
    if (r == 0) return;
    if (q_ep_blocked(c->ep)) {
      q_ep_wait(c->ep, c);
      return;
    }
  }
  c->write_soon = true; /* budget spent with more to send: continue next turn */
}
