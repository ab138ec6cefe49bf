/* QUIC transport: quic_dial.c.
 * Dialer: a client connection with its own UDP endpoint. */
#include "transport/quic/quic_impl.h"

/* ---- dialing --------------------------------------------------------------------------- */

static void q_client_packet(struct q_ep *ep, const struct sockaddr *from, socklen_t fromlen,
                            const uint8_t *pkt, size_t len) {
  q_conn_input(ep->owner, from, fromlen, pkt, len);
}

static void q_client_error(struct q_ep *ep, int err) {
  struct q_conn *c = ep->owner;
  if (err == ECONNREFUSED && !q_hs_done(c) && c->state < Q_CLOSING) {
    VSRI_DEBUG("VSR-QUIC", "%s quic: connection refused (no UDP listener)", c->name);
    q_conn_finish(c, VSR_ECONNREFUSED, false);
    return;
  }
  VSRI_DEBUG("VSR-QUIC", "%s quic: socket: %s", c->name, strerror(err));
}

static int q_client_init(struct q_conn *c, const struct vsri_quic_config *cfg) {
  ngtcp2_cid dcid, scid;
  dcid.datalen = 18;
  q_rand(dcid.data, dcid.datalen);
  scid.datalen = Q_SCID_LEN;
  q_rand(scid.data, scid.datalen);
  ngtcp2_settings s;
  q_settings(&s, cfg, vsri_io_now_fresh(c->ctx->io), (const struct sockaddr *)&c->remote);
  if (getenv("VSRBUS_QUIC_TRACE")) s.log_printf = q_trace;
  ngtcp2_transport_params p;
  q_params(&p, cfg, false);
  ngtcp2_path path = {
      .local = {(ngtcp2_sockaddr *)&c->ep->local, c->ep->local_len},
      .remote = {(ngtcp2_sockaddr *)&c->remote, c->remote_len},
  };
  int rv = ngtcp2_conn_client_new(&c->qc, &dcid, &scid, &path, NGTCP2_PROTO_VER_V1,
                                  &q_client_callbacks, &s, &p, &q_mem, c);
  if (rv != 0) {
    VSRI_ERROR("VSR-QUIC", "%s quic: ngtcp2_conn_client_new: %s", c->name, ngtcp2_strerror(rv));
    return rv == NGTCP2_ERR_NOMEM ? VSR_ENOMEM : VSR_EQUIC;
  }
  if (cfg->keep_alive_ns) ngtcp2_conn_set_keep_alive_timeout(c->qc, cfg->keep_alive_ns);
  c->keepalive_set = true;
  return q_client_tls(c);
}

int q_connect(struct vsri_conn **out, const struct vsri_transport_ctx *ctx,
              const char *addr, const struct vsri_conn_events *ev, void *owner,
              struct vsri_sendq *q) {
  const struct vsri_quic_config *cfg = q_cfg(ctx);
  struct sockaddr_storage sa;
  socklen_t len;
  if (vsri_parse_addr(addr, &sa, &len) < 0) return VSR_EADDR;
  int err = vsri_quic_config_check(cfg);
  if (err) return err;
  uint8_t pin[VSRI_SHA256_LEN];
  if (cfg->pin_sha256 && vsri_fingerprint_parse(cfg->pin_sha256, pin) != 0) {
    VSRI_ERROR("VSR-CONFIG", "quic: pinned SHA-256 \"%s\" is not 64 hex digits", cfg->pin_sha256);
    return VSR_ECONFIG;
  }
  if (!cfg->pin_sha256 && !cfg->ca_file && !cfg->insecure) {
    VSRI_ERROR("VSR-CONFIG", "quic: dialing %s needs a CA/certificate file, a pinned SHA-256, "
               "or insecure mode", addr);
    return VSR_ECONFIG;
  }
  struct q_ep *ep = vsri_calloc(1, sizeof *ep);
  if (!ep) return VSR_ENOMEM;
  struct q_conn *c = q_conn_alloc(ctx, cfg, ep, false);
  if (!c) {
    vsri_free(ep);
    return VSR_ENOMEM;
  }
  memcpy(&c->remote, &sa, len);
  c->remote_len = len;
  q_name(c);
  c->ev = ev;
  c->owner = owner;
  c->q = q;
  c->started = true;
  c->pinned = cfg->pin_sha256 != NULL;
  memcpy(c->pin, pin, sizeof pin);
  ep->owner = c;
  ep->on_packet = q_client_packet;
  ep->on_error = q_client_error;
  ep->on_free = q_client_ep_free;
  err = q_ep_open(ep, ctx->io, (struct sockaddr *)&sa, len, false, cfg, c->name, NULL);
  if (!err) err = q_client_init(c, cfg);
  if (err) {
    c->ev = NULL;
    q_conn_release(c);
    if (ep->fd >= 0) close(ep->fd);
    vsri_free(ep->rx_buf);
    vsri_free(ep);
    vsri_free(c);
    atomic_fetch_sub_explicit(&q_live, 1, memory_order_relaxed);
    return err;
  }
  q_ep_rx_arm(ep);
  q_conn_schedule(c);
  *out = &c->base;
  return 0;
}
