/* QUIC transport: quic_conn.c.
 * Connection lifecycle: allocation, ngtcp2 settings, server init, the state machine from handshake
 * to close (closing period, peer close, read errors), packet input, freeing, and the transport ops
 * the bus calls (start, kick, close). */
#include "transport/quic/quic_impl.h"

/* ---- connection lifecycle -------------------------------------------------------------- */

static void q_conn_reap(void *arg);

struct q_conn *q_conn_alloc(const struct vsri_transport_ctx *ctx,
                               const struct vsri_quic_config *cfg, struct q_ep *ep,
                               bool server) {
  struct q_conn *c = vsri_calloc(1, sizeof *c);
  if (!c) return NULL;
  /* Stream slots: as many as may be open at once (allocated at the first stream). */
  c->st_want = server || cfg->stream_per_request ? cfg->max_bidi_streams : 1;
  atomic_fetch_add_explicit(&q_live, 1, memory_order_relaxed);
  c->base.ops = &vsri_transport_quic;
  c->server = server;
  c->ref.get_conn = q_get_conn;
  c->ref.user_data = c;
  c->ctx = ctx;
  c->cfg = cfg;
  c->ep = ep;
  c->head_sid = c->rx_sid = -1;
  c->extra_sid = -1;
  c->flush.fn = q_conn_flush;
  c->flush.ctx = c;
  c->reap.fn = q_conn_reap;
  c->reap.ctx = c;
  ngtcp2_connection_close_error_default(&c->ccerr);
  return c;
}

/* A peer on the loopback (127.0.0.0/8, ::1, ::ffff:127.0.0.0/104): the path is this host's lo
 * device (MTU 65,536), known without probing. */
static bool q_peer_loopback(const struct sockaddr *sa) {
  if (!sa) return false;
  if (sa->sa_family == AF_INET) {
    return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
  }
  if (sa->sa_family != AF_INET6) return false;
  const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
  return IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
}

/* UDP payload: ngtcp2's PMTUD (the socket sets DF, quic_ep.c) grows packets from 1200 to at
 * most max_udp_payload (1452; its probes stop there). Above 1472 (configured, or a loopback
 * peer with loopback_udp_payload) the size is used at once: no probe reaches it. */
void q_settings(ngtcp2_settings *s, const struct vsri_quic_config *cfg, uint64_t now,
                const struct sockaddr *peer) {
  static const ngtcp2_cc_algo algos[] = {NGTCP2_CC_ALGO_CUBIC, NGTCP2_CC_ALGO_RENO,
                                         NGTCP2_CC_ALGO_BBR2};
  ngtcp2_settings_default(s);
  s->initial_ts = now;
  s->cc_algo = algos[cfg->cc <= VSRI_QUIC_CC_BBR2 ? cfg->cc : 0];
  s->max_window = cfg->conn_window;
  s->max_stream_window = cfg->stream_window;
  s->handshake_timeout = cfg->handshake_grace_ns ? cfg->handshake_grace_ns : UINT64_MAX;
  uint32_t max = cfg->max_udp_payload;
  if (max <= 1472 && cfg->loopback_udp_payload > max && q_peer_loopback(peer)) {
    max = cfg->loopback_udp_payload;
  }
  s->max_tx_udp_payload_size = max;
  if (max > 1472) {
    /* Beyond every PMTUD probe: use the size at once (loopback / known paths only). */
    s->no_tx_udp_payload_size_shaping = 1;
    s->no_pmtud = 1;
  }
}

void q_trace(void *user, const char *fmt, ...) {
  struct q_conn *c = user;
  char line[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  VSRI_DEBUG("VSR-QUIC-TRACE", "%s %s", c->name, line);
}

void q_params(ngtcp2_transport_params *p, const struct vsri_quic_config *cfg,
              bool server) {
  ngtcp2_transport_params_default(p);
  p->initial_max_stream_data_bidi_local = cfg->stream_window;
  p->initial_max_stream_data_bidi_remote = cfg->stream_window;
  p->initial_max_stream_data_uni = 0;
  p->initial_max_data = cfg->conn_window;
  p->initial_max_streams_bidi = server ? cfg->max_bidi_streams : 0;
  p->initial_max_streams_uni = 0;
  p->max_idle_timeout = cfg->idle_timeout_ns;
  p->active_connection_id_limit = 4;
}

void q_name(struct q_conn *c) {
  vsri_format_addr((const struct sockaddr *)&c->remote, c->name, sizeof c->name);
}

/* Creates the server side of a connection for an acceptable client Initial. |odcid|: the
 * client's first Destination Connection ID, from a valid Retry token (NULL: no Retry). */
int q_server_init(struct q_conn *c, const ngtcp2_pkt_hd *hd, const ngtcp2_cid *odcid,
                  uint64_t now) {
  struct q_listener *l = c->l;
  ngtcp2_cid scid;
  scid.datalen = Q_SCID_LEN;
  q_cid_fill(l, scid.data, scid.datalen);
  ngtcp2_settings s;
  q_settings(&s, c->cfg, now, (const struct sockaddr *)&c->remote);
  if (getenv("VSRBUS_QUIC_TRACE")) s.log_printf = q_trace;
  ngtcp2_transport_params p;
  q_params(&p, c->cfg, true);
  p.original_dcid = hd->dcid;
  if (odcid) {
    /* Validated by Retry: the address is proven (no amplification limit), and the client
     * checks both connection IDs against what it saw. */
    p.original_dcid = *odcid;
    p.retry_scid = hd->dcid;
    p.retry_scid_present = 1;
    s.token = hd->token;
  }
  p.stateless_reset_token_present = 1;
  if (ngtcp2_crypto_generate_stateless_reset_token(p.stateless_reset_token, l->reset_secret, 32,
                                                   &scid) != 0) {
    return VSR_ETLS;
  }
  ngtcp2_path path = {
      .local = {(ngtcp2_sockaddr *)&l->ep.local, l->ep.local_len},
      .remote = {(ngtcp2_sockaddr *)&c->remote, c->remote_len},
  };
  int rv = ngtcp2_conn_server_new(&c->qc, &hd->scid, &scid, &path, hd->version,
                                  &q_server_callbacks, &s, &p, &q_mem, c);
  if (rv != 0) {
    VSRI_WARN("VSR-QUIC", "%s quic: ngtcp2_conn_server_new: %s", c->name, ngtcp2_strerror(rv));
    return VSR_EQUIC;
  }
  int err = q_server_tls(c);
  if (!err) err = q_conn_add_cid(c, &hd->dcid);
  if (!err) err = q_conn_add_cid(c, &scid);
  return err;
}

/* Frees everything but the struct; the caller decides when the memory goes. */
void q_conn_release(struct q_conn *c) {
  if (c->l) {
    while (c->ncids > 0) q_cidmap_del(&c->l->cids, &c->cids[--c->ncids]);
  }
  if (c->qc) ngtcp2_conn_del(c->qc);
  c->qc = NULL;
  if (c->tls) gnutls_deinit(c->tls);
  c->tls = NULL;
  if (c->cred) gnutls_certificate_free_credentials(c->cred);
  c->cred = NULL;
  q_infl_clear(c);
  q_pend_clear(c);
  for (uint32_t i = 0; i < c->nst; i++) vsri_decoder_free(&c->st[i].dec);
  vsri_free(c->st);
  c->st = NULL;
  c->nst = c->nopen = 0;
  vsri_free(c->close_pkt);
  c->close_pkt = NULL;
}

/* on_closed, once, if an owner is attached (a dialer reports a failed connect first). */
static void q_conn_notify_closed(struct q_conn *c) {
  if (c->ev && c->started && !c->closed_notified) {
    c->closed_notified = true;
    q_infl_abandon(c, c->reason); /* taken by ngtcp2, never handed to the kernel */
    if (!c->server && !c->connected_notified && c->ev->on_connected) {
      c->connected_notified = true;
      c->ev->on_connected(c->owner, &c->base, c->reason);
    }
    c->notifying = true;
    c->ev->on_closed(c->owner, &c->base, c->reason);
    c->notifying = false;
  }
  c->ev = NULL;
  c->owner = NULL;
  c->q = NULL;
}

/* Frees the memory once the reaper ran and no completion still points at |c| (its timer; a
 * dialed connection's own endpoint). */
void q_conn_try_free(struct q_conn *c) {
  if (c->state != Q_REAPED || c->timer.pending || (!c->l && c->ep)) return;
  q_conn_notify_closed(c);
  struct q_listener *l = c->l;
  if (l) {
    vsri_list_remove(&c->l_link);
    l->nconns--;
  }
  vsri_free(c);
  atomic_fetch_sub_explicit(&q_live, 1, memory_order_relaxed);
  if (l) q_listener_maybe_free(l);
}

/* A dialed connection's endpoint, once the io layer is done with it. */
void q_client_ep_free(struct q_ep *ep) { vsri_free(ep); }

/* Releases everything now: the timer leaves the loop, a dialed connection's endpoint closes
 * (its memory goes once the kernel answered: io.h, "Letting go"), so an owner may delete its
 * loop right after on_closed. */
static void q_conn_teardown(struct q_conn *c) {
  struct vsri_io *io = c->ctx->io;
  vsri_io_undefer(io, &c->flush);
  vsri_io_undefer(io, &c->reap);
  if (c->ep) q_ep_unwait(c->ep, c);
  if (c->l && !c->counted) q_halfopen_leave(c);
  q_conn_release(c);
  c->state = Q_REAPED;
  vsri_io_timeout_drop(io, &c->timer);
  if (!c->l && c->ep) {
    struct q_ep *ep = c->ep;
    c->ep = NULL;
    ep->owner = NULL;
    q_ep_kill(ep);
  }
}

/* Deferred (nothing of |c| is up the stack): tears down, tells the owner, frees. */
static void q_conn_reap(void *arg) {
  struct q_conn *c = arg;
  if (c->ev && c->started && !c->closed_notified) vsri_io_nowait(c->ctx->io); /* see below */
  q_conn_teardown(c);
  q_conn_try_free(c); /* tells the owner: a caller waiting on the loop must see it now */
}

void q_conn_destroy(struct q_conn *c) {
  c->ev = NULL; /* nobody is told */
  c->owner = NULL;
  c->q = NULL;
  c->started = false;
  q_conn_teardown(c);
  q_conn_try_free(c);
}

/* The owner is going away: CONNECTION_CLOSE with |reason|'s code goes out now (unless one
 * went already), then |c| is freed without an upcall. */
void q_abort(struct q_conn *c, int reason) {
  if (c->state < Q_CLOSING) {
    q_set_app_error(c, (uint64_t)q_app_code(reason));
    q_send_close(c);
  }
  q_conn_destroy(c);
}

/* Ends the connection: a server connection that sent CONNECTION_CLOSE lingers for a closing
 * period (answering a peer that keeps sending with the same packet; its owner is told now);
 * everything else goes to the reaper. */
void q_conn_finish(struct q_conn *c, int reason, bool closing_period) {
  if (c->state >= Q_CLOSING) return;
  c->state = Q_CLOSING;
  c->reason = reason;
  vsri_io_undefer(c->ctx->io, &c->flush);
  if (c->l && !c->counted) q_halfopen_leave(c);
  if (closing_period && c->close_pkt && c->l && !c->l->closing && c->qc) {
    q_conn_notify_closed(c);
    uint64_t pto = ngtcp2_conn_get_pto(c->qc);
    c->closing_until = q_now(c) + 3 * pto;
    q_infl_clear(c);
    q_pend_clear(c);
    q_timer_update(c);
    return;
  }
  c->state = Q_CLOSED;
  vsri_io_defer(c->ctx->io, &c->reap);
}

/* Sends CONNECTION_CLOSE with c->ccerr (once); the server keeps a copy for the closing
 * period. */
void q_send_close(struct q_conn *c) {
  if (!c->qc || ngtcp2_conn_is_in_closing_period(c->qc) ||
      ngtcp2_conn_is_in_draining_period(c->qc)) {
    return;
  }
  ngtcp2_path_storage ps;
  ngtcp2_path_storage_zero(&ps);
  ngtcp2_pkt_info pi;
  ngtcp2_ssize n = ngtcp2_conn_write_connection_close(c->qc, &ps.path, &pi, q_txbuf, 1500,
                                                      &c->ccerr, vsri_io_now_fresh(c->ctx->io));
  if (n <= 0) return;
  c->close_code = c->ccerr.error_code;
  c->close_app = c->ccerr.type == NGTCP2_CONNECTION_CLOSE_ERROR_CODE_TYPE_APPLICATION;
  c->close_remote = false;
  c->close_known = true;
  q_ep_send(c->ep, (const struct sockaddr *)ps.path.remote.addr, ps.path.remote.addrlen,
            q_txbuf, (size_t)n, (size_t)n);
  if (c->l && (c->close_pkt = vsri_malloc((size_t)n)) != NULL) {
    memcpy(c->close_pkt, q_txbuf, (size_t)n);
    c->close_len = (size_t)n;
  }
}

/* Closes now with |reason|: CONNECTION_CLOSE (application code from the reason unless an
 * error was already recorded), then on_closed. */
void q_conn_close_now(struct q_conn *c, int reason) {
  if (c->state >= Q_CLOSING) return;
  q_set_app_error(c, (uint64_t)q_app_code(reason));
  q_send_close(c);
  q_conn_finish(c, reason, true);
}

/* The peer closed (we are draining) or ngtcp2 says drop: no packet goes out. */
static void q_conn_peer_closed(struct q_conn *c) {
  ngtcp2_connection_close_error e;
  ngtcp2_conn_get_connection_close_error(c->qc, &e);
  c->close_code = e.error_code;
  c->close_app = e.type == NGTCP2_CONNECTION_CLOSE_ERROR_CODE_TYPE_APPLICATION;
  c->close_remote = true;
  c->close_known = true;
  int reason = q_peer_reason(e.error_code, c->close_app);
  if (c->state >= Q_ACTIVE || !c->server) {
    VSRI_INFO("VSR-QUIC", "%s quic: peer closed with %s 0x%llx%s%.*s (%s)", c->name,
              c->close_app ? "application code" : "transport code",
              (unsigned long long)e.error_code, e.reasonlen ? ": " : "", (int)e.reasonlen,
              e.reason ? (const char *)e.reason : "", vsr_errname(reason));
  }
  q_conn_finish(c, reason, false);
}

/* ngtcp2_conn_read_pkt failed: close with the recorded or inferred error. */
static void q_conn_read_error(struct q_conn *c, int rv) {
  int reason;
  switch (rv) {
  case NGTCP2_ERR_DRAINING:
    q_conn_peer_closed(c);
    return;
  case NGTCP2_ERR_DROP_CONN:
  case NGTCP2_ERR_RETRY:
    q_conn_finish(c, VSR_EQUIC, false);
    return;
  case NGTCP2_ERR_CRYPTO: {
    uint8_t alert = ngtcp2_conn_get_tls_alert(c->qc);
    ngtcp2_connection_close_error_set_transport_error_tls_alert(&c->ccerr, alert, NULL, 0);
    c->ccerr_set = true;
    reason = alert == 120 ? VSR_EALPN : VSR_EHANDSHAKE;
    if (!c->alpn_refused) {
      VSRI_INFO("VSR-QUIC", "%s quic: TLS handshake failed (alert %u, %s)", c->name, alert,
                vsr_errname(reason));
    }
    break;
  }
  case NGTCP2_ERR_CALLBACK_FAILURE:
    if (c->fail_reason) {
      reason = c->fail_reason; /* already logged where it was found */
      break;
    }
    /* fall through */
  default:
    reason = q_liberr_reason(rv);
    if (!c->ccerr_set) {
      ngtcp2_connection_close_error_set_transport_error_liberr(&c->ccerr, rv, NULL, 0);
      c->ccerr_set = true;
    }
    VSRI_WARN("VSR-QUIC", "%s quic: %s (%s); closing", c->name, ngtcp2_strerror(rv),
              vsr_errname(reason));
  }
  q_conn_close_now(c, reason);
}

/* After packets were read: report the connection once it is usable, schedule writes. */
static void q_conn_after_input(struct q_conn *c) {
  if (c->state >= Q_CLOSING) return;
  if (c->server && c->state == Q_ESTABLISHED && c->had_stream) {
    c->state = Q_ACTIVE;
    if (!c->counted) q_halfopen_leave(c);
    c->l->on_accept(c->l->owner, &c->base);
    if (c->state >= Q_CLOSING) return;
  }
  if (!c->server && q_hs_done(c) && !c->connected_notified) {
    c->connected_notified = true;
    if (c->state == Q_ESTABLISHED) c->state = Q_ACTIVE;
    if (c->ev->on_connected) c->ev->on_connected(c->owner, &c->base, 0);
    if (c->state >= Q_CLOSING) return;
  }
  q_conn_schedule(c);
}

void q_conn_input(struct q_conn *c, const struct sockaddr *from, socklen_t fromlen,
                  const uint8_t *pkt, size_t len) {
  if (c->state == Q_CLOSING && c->close_pkt) {
    q_ep_send(c->ep, from, fromlen, c->close_pkt, c->close_len, c->close_len);
    return;
  }
  if (c->state >= Q_CLOSING || !c->qc || len == 0) return;
  ngtcp2_path path = {
      .local = {(ngtcp2_sockaddr *)&c->ep->local, c->ep->local_len},
      .remote = {(ngtcp2_sockaddr *)from, fromlen},
  };
  ngtcp2_pkt_info pi = {0};
  int rv = ngtcp2_conn_read_pkt(c->qc, &path, &pi, pkt, len, vsri_io_now(c->ctx->io));
  if (rv != 0) {
    q_conn_read_error(c, rv);
    return;
  }
  q_conn_after_input(c);
}

/* ---- ops ------------------------------------------------------------------------------- */

static void q_start(struct vsri_conn *b, const struct vsri_conn_events *ev, void *owner,
                    struct vsri_sendq *q) {
  struct q_conn *c = q_conn_of(b);
  c->ev = ev;
  c->owner = owner;
  c->q = q;
  c->started = true;
  c->last_rx = q_now(c); /* the owner's idle clock starts now; earlier frames were held */
  q_conn_schedule(c);
}

static void q_kick(struct vsri_conn *b) {
  struct q_conn *c = q_conn_of(b);
  if (c->started && c->state < Q_CLOSING) q_conn_schedule(c);
}

static void q_close(struct vsri_conn *b, int reason, bool drain) {
  struct q_conn *c = q_conn_of(b);
  if (c->state >= Q_CLOSING) return;
  if (c->state == Q_DRAINING) {
    if (!drain) c->close_drain = false; /* escalate a drain to a hard close */
    q_conn_schedule(c);
    return;
  }
  c->close_drain = drain && c->started && q_hs_done(c);
  c->state = Q_DRAINING;
  c->reason = reason;
  uint64_t grace = c->ctx->drain_timeout_ns ? c->ctx->drain_timeout_ns : c->cfg->close_grace_ns;
  c->drain_at = vsri_io_now(c->ctx->io) + grace;
  q_conn_schedule(c);
}

static const char *q_peer_name(const struct vsri_conn *b) { return q_conn_of_const(b)->name; }

/* The oldest frame in progress on any open stream is the one the frame timeout judges. */
static void q_rx_clock(const struct vsri_conn *b, struct vsri_rx_clock *out) {
  const struct q_conn *c = q_conn_of_const(b);
  *out = (struct vsri_rx_clock){.last_rx_ns = c->last_rx};
  for (uint32_t i = 0; i < c->nst; i++) {
    const struct q_stream *s = &c->st[i];
    uint32_t have, size;
    if (s->sid < 0) continue;
    vsri_decoder_progress(&s->dec, &have, &size);
    if (!have || (out->frame_start_ns && out->frame_start_ns <= s->frame_start)) continue;
    out->frame_start_ns = s->frame_start;
    out->frame_have = have;
    out->frame_size = size;
  }
}

static void q_op_abort(struct vsri_conn *b, int reason) { q_abort(q_conn_of(b), reason); }

const struct vsri_transport_ops vsri_transport_quic = {
    .name = "quic",
    .listen = q_listen,
    .listener_addr = q_listener_addr,
    .listener_close = q_listener_close,
    .connect = q_connect,
    .start = q_start,
    .kick = q_kick,
    .close = q_close,
    .abort = q_op_abort,
    .peer_name = q_peer_name,
    .rx_clock = q_rx_clock,
};
