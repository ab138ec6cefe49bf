/* QUIC transport: quic_listen.c.
 * Listener: handshake-flood admission (half-opens per source, oldest-first eviction, Retry and its
 * tokens), version negotiation, accepting server connections, and the listener's life. */
#include "transport/quic/quic_impl.h"

/* ---- half-opens per source ------------------------------------------------------------- */

/* The source a limit applies to: an IPv4 address (also when IPv4-mapped), an IPv6 /64 (one
 * host usually holds a whole /64). The port never counts: it is free to change. */
void q_src_key(const struct sockaddr *sa, uint8_t key[Q_SRCKEY]) {
  memset(key, 0, Q_SRCKEY);
  if (sa->sa_family == AF_INET) {
    key[0] = 4;
    memcpy(key + 1, &((const struct sockaddr_in *)sa)->sin_addr, 4);
  } else if (sa->sa_family == AF_INET6) {
    const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
    if (IN6_IS_ADDR_V4MAPPED(a)) {
      key[0] = 4;
      memcpy(key + 1, a->s6_addr + 12, 4);
    } else {
      key[0] = 6;
      memcpy(key + 1, a->s6_addr, 8);
    }
  }
}

static struct q_src *q_src_slot(const struct q_listener *l, const uint8_t key[Q_SRCKEY]) {
  uint32_t mask = l->srcs_cap - 1;
  for (uint32_t i = (uint32_t)XXH3_64bits_withSeed(key, Q_SRCKEY, l->cids.seed) & mask;;
       i = (i + 1) & mask) {
    struct q_src *e = &l->srcs[i];
    if (!e->n || memcmp(e->key, key, Q_SRCKEY) == 0) return e;
  }
}

uint32_t q_src_count(const struct q_listener *l, const uint8_t key[Q_SRCKEY]) {
  return l->srcs_cap ? q_src_slot(l, key)->n : 0;
}

/* Never full: at most max_handshakes sources hold half-opens, in 2x as many slots. */
static void q_src_add(struct q_listener *l, const uint8_t key[Q_SRCKEY]) {
  struct q_src *e = q_src_slot(l, key);
  if (!e->n) memcpy(e->key, key, Q_SRCKEY);
  e->n++;
}

/* Removes with backward shift, like the connection ID map. */
static void q_src_del(struct q_listener *l, const uint8_t key[Q_SRCKEY]) {
  struct q_src *e = q_src_slot(l, key);
  if (!e->n || --e->n > 0) return;
  uint32_t mask = l->srcs_cap - 1, i = (uint32_t)(e - l->srcs);
  for (uint32_t j = (i + 1) & mask; l->srcs[j].n; j = (j + 1) & mask) {
    uint32_t home = (uint32_t)XXH3_64bits_withSeed(l->srcs[j].key, Q_SRCKEY, l->cids.seed) & mask;
    bool stay = i <= j ? (home > i && home <= j) : (home > i || home <= j);
    if (stay) continue;
    l->srcs[i] = l->srcs[j];
    i = j;
  }
  l->srcs[i].n = 0;
}

/* A new server connection is half-open until reported (or closed). */
static void q_halfopen_enter(struct q_conn *c, const struct sockaddr *from) {
  struct q_listener *l = c->l;
  l->nhandshaking++;
  q_src_key(from, c->srckey);
  q_src_add(l, c->srckey);
  vsri_list_push_back(&l->halfopen, &c->ho_link);
  l->adm.admitted++;
  if (l->nhandshaking > l->adm.halfopen_peak) l->adm.halfopen_peak = l->nhandshaking;
}

void q_halfopen_leave(struct q_conn *c) {
  struct q_listener *l = c->l;
  c->counted = true;
  l->nhandshaking--;
  if (!vsri_list_linked(&c->ho_link)) return;
  vsri_list_remove(&c->ho_link);
  q_src_del(l, c->srckey);
}

/* The half-open to evict: the oldest one whose address was not validated (by a Retry token or
 * a finished handshake), else the oldest. */
static struct q_conn *q_halfopen_victim(const struct q_listener *l) {
  for (const struct vsri_list_node *n = vsri_list_front(&l->halfopen); n;
       n = vsri_list_next(&l->halfopen, n)) {
    struct q_conn *c = vsri_container_of(n, struct q_conn, ho_link);
    if (!c->validated && !q_hs_done(c)) return c;
  }
  struct vsri_list_node *oldest = vsri_list_front(&l->halfopen);
  return vsri_list_entry_or_null(oldest, struct q_conn, ho_link);
}

/* ---- server side ----------------------------------------------------------------------- */

static void q_send_version_negotiation(struct q_listener *l, const struct sockaddr *from,
                                       socklen_t fromlen, const ngtcp2_version_cid *vc,
                                       size_t len) {
  if (len < NGTCP2_MAX_UDP_PAYLOAD_SIZE) return; /* RFC 9000 §6: no reply to small datagrams */
  uint32_t sv[] = {NGTCP2_PROTO_VER_V1};
  uint8_t unused;
  q_rand(&unused, 1);
  ngtcp2_ssize n = ngtcp2_pkt_write_version_negotiation(q_txbuf, 1500, unused, vc->scid,
                                                        vc->scidlen, vc->dcid, vc->dcidlen, sv,
                                                        1);
  if (n > 0) q_ep_send(&l->ep, from, fromlen, q_txbuf, (size_t)n, (size_t)n);
}

/* Flood events are logged per event; the log's per-call-site token bucket (util/log.c) turns a
 * flood into a burst, then one line per interval and "N more like this suppressed". */
static const char *q_peer_text(const struct sockaddr *sa, char *buf, size_t len) {
  vsri_format_addr(sa, buf, len);
  return buf;
}

/* Answers an Initial with a Retry carrying a token that seals the client's address, its first
 * Destination Connection ID and the time; no state is kept. */
static void q_send_retry(struct q_listener *l, const struct sockaddr *from, socklen_t fromlen,
                         const ngtcp2_pkt_hd *hd, size_t rxlen, uint64_t now) {
  ngtcp2_cid scid;
  scid.datalen = Q_SCID_LEN;
  q_cid_fill(l, scid.data, scid.datalen); /* the client's next Initial comes back here */
  uint8_t token[NGTCP2_CRYPTO_MAX_RETRY_TOKENLEN];
  ngtcp2_ssize tlen = ngtcp2_crypto_generate_retry_token(
      token, l->token_secret, sizeof l->token_secret, hd->version, (const ngtcp2_sockaddr *)from,
      (ngtcp2_socklen)fromlen, &scid, &hd->dcid, now);
  if (tlen < 0) return;
  size_t cap = rxlen * 3 < 1500 ? rxlen * 3 : 1500; /* RFC 9000 §8: at most 3x what came in */
  ngtcp2_ssize n = ngtcp2_crypto_write_retry(q_txbuf, cap, hd->version, &hd->scid, &scid,
                                             &hd->dcid, token, (size_t)tlen);
  if (n > 0) q_ep_send(&l->ep, from, fromlen, q_txbuf, (size_t)n, (size_t)n);
}

/* Refuses an Initial whose Retry token does not verify, without keeping state. */
static void q_send_invalid_token(struct q_listener *l, const struct sockaddr *from,
                                 socklen_t fromlen, const ngtcp2_pkt_hd *hd) {
  ngtcp2_ssize n = ngtcp2_crypto_write_connection_close(
      q_txbuf, 1200, hd->version, &hd->scid, &hd->dcid, NGTCP2_INVALID_TOKEN, NULL, 0);
  if (n > 0) q_ep_send(&l->ep, from, fromlen, q_txbuf, (size_t)n, (size_t)n);
}

/* Makes room by closing a half-open: CONNECTION_REFUSED goes out (a real client gives up at
 * once instead of waiting for its handshake timeout), its memory goes at the end of the turn. */
static void q_evict(struct q_listener *l, struct q_conn *v) {
  if (!v) return;
  l->adm.evicted++;
  VSRI_INFO("VSR-QUIC-FLOOD", "%s quic: %u half-open (max_handshakes); evicted the oldest, from "
            "%s (%s)", l->name, l->nhandshaking, v->name,
            v->validated || q_hs_done(v) ? "address validated" : "address not validated");
  if (!v->ccerr_set) {
    ngtcp2_connection_close_error_set_transport_error(&v->ccerr, NGTCP2_CONNECTION_REFUSED, NULL,
                                                      0);
    v->ccerr_set = true;
  }
  q_send_close(v);
  q_conn_finish(v, VSR_ELIMIT, false);
}

/* A packet for no known connection: a client Initial starts one, if admitted. Address
 * validation (Retry) is asked of every Initial without a valid token once retry_threshold
 * half-opens exist, and of a source already holding max_handshakes_per_source; a forged or
 * expired token is refused; a full max_handshakes evicts the oldest half-open (unvalidated
 * first) rather than refusing the newcomer. A validated newcomer is not held to its source's
 * limit: it proved its address with a round trip, many real clients may share one address
 * (NAT, one host's benchmark), and a source that keeps validating can only push out the
 * oldest half-opens, never lock newcomers out. */
static struct q_conn *q_server_accept(struct q_listener *l, const struct sockaddr *from,
                                         socklen_t fromlen, const uint8_t *pkt, size_t len) {
  ngtcp2_pkt_hd hd;
  if (l->closing) return NULL;
  if (ngtcp2_accept(&hd, pkt, len) != 0) {
    l->adm.unknown_cid++; /* shards: a misrouted packet would be counted here */
    return NULL;
  }
  uint64_t now = vsri_io_now(l->ctx->io);
  const struct vsri_quic_config *cfg = &l->cfg;
  l->adm.initials++;
  uint8_t key[Q_SRCKEY];
  q_src_key(from, key);
  uint32_t per_source = cfg->max_handshakes_per_source;
  bool source_full = per_source && q_src_count(l, key) >= per_source;
  ngtcp2_cid odcid;
  bool validated = false;
  /* Only Retry tokens are ours (no NEW_TOKEN is ever sent): any other token is ignored. */
  if (hd.token.len > 0 && hd.token.base[0] == NGTCP2_CRYPTO_TOKEN_MAGIC_RETRY) {
    if (ngtcp2_crypto_verify_retry_token(
            &odcid, hd.token.base, hd.token.len, l->token_secret, sizeof l->token_secret,
            hd.version, (const ngtcp2_sockaddr *)from, (ngtcp2_socklen)fromlen, &hd.dcid,
            cfg->retry_token_lifetime_ns, now) != 0) {
      l->adm.tokens_invalid++;
      char peer[64];
      VSRI_WARN("VSR-QUIC-FLOOD", "%s quic: Initial from %s with a forged, expired or misdirected "
                "Retry token refused (INVALID_TOKEN)", l->name,
                q_peer_text(from, peer, sizeof peer));
      q_send_invalid_token(l, from, fromlen, &hd);
      return NULL;
    }
    validated = true;
  }
  if (!validated &&
      (cfg->retry_threshold == 0 || l->nhandshaking >= cfg->retry_threshold || source_full)) {
    l->adm.retries++;
    char peer[64];
    q_peer_text(from, peer, sizeof peer);
    if (source_full) {
      l->adm.retry_source++;
      VSRI_INFO("VSR-QUIC-FLOOD", "%s quic: %s holds %u half-open handshakes "
                "(max_handshakes_per_source); address validation (Retry) asked of it", l->name,
                peer, per_source);
    } else {
      VSRI_INFO("VSR-QUIC-FLOOD", "%s quic: %u half-open handshakes (retry_threshold %u); "
                "address validation (Retry) asked of %s", l->name, l->nhandshaking,
                cfg->retry_threshold, peer);
    }
    q_send_retry(l, from, fromlen, &hd, len, now);
    return NULL;
  }
  if (l->nhandshaking >= cfg->max_handshakes) q_evict(l, q_halfopen_victim(l));
  struct q_conn *c = q_conn_alloc(l->ctx, &l->cfg, &l->ep, true);
  if (!c) return NULL;
  c->l = l;
  c->validated = validated;
  if (validated) l->adm.validated++;
  memcpy(&c->remote, from, fromlen);
  c->remote_len = fromlen;
  q_name(c);
  c->grace_at = now + l->cfg.handshake_grace_ns;
  vsri_list_push_back(&l->conns, &c->l_link);
  l->nconns++;
  q_halfopen_enter(c, from);
  int err = q_server_init(c, &hd, validated ? &odcid : NULL, now);
  if (err) {
    q_conn_finish(c, err, false);
    return NULL;
  }
  return c;
}

void q_server_packet(struct q_ep *ep, const struct sockaddr *from, socklen_t fromlen,
                     const uint8_t *pkt, size_t len) {
  struct q_listener *l = ep->owner;
  if (len == 0) return; /* an empty datagram: ngtcp2 asserts on it */
  ngtcp2_version_cid vc;
  int rv = ngtcp2_pkt_decode_version_cid(&vc, pkt, len, Q_SCID_LEN);
  if (rv == NGTCP2_ERR_VERSION_NEGOTIATION) {
    q_send_version_negotiation(l, from, fromlen, &vc, len);
    return;
  }
  if (rv != 0) return;
  struct q_conn *c = q_cidmap_find(&l->cids, vc.dcid, vc.dcidlen);
  if (!c && !(c = q_server_accept(l, from, fromlen, pkt, len))) return;
  q_conn_input(c, from, fromlen, pkt, len);
}

/* ---- listener -------------------------------------------------------------------------- */

static void q_listener_ep_free(struct q_ep *ep) {
  struct q_listener *l = ep->owner;
  vsri_free(l->cids.slots);
  vsri_free(l->srcs);
  if (l->prio) gnutls_priority_deinit(l->prio);
  vsri_cert_free(l->own_cert);
  vsri_free(l);
  atomic_fetch_sub_explicit(&q_live, 1, memory_order_relaxed);
}

/* A closed listener goes once its last connection has. */
void q_listener_maybe_free(struct q_listener *l) {
  if (l->closing && !l->walking && l->nconns == 0 && !l->ep.dead) q_ep_kill(&l->ep);
}

static int q_listener_cert(struct q_listener *l) {
  if (l->cfg.cert) {
    l->cert = l->cfg.cert;
    return 0;
  }
  int err;
  if (l->cfg.cert_file || l->cfg.key_file) {
    err = vsri_cert_load(&l->own_cert, l->cfg.cert_file, l->cfg.key_file);
  } else {
    err = vsri_cert_generate(&l->own_cert, "localhost", 365);
  }
  if (err) return err;
  l->cert = l->own_cert;
  return 0;
}

int q_listen(struct vsri_listener **out, const struct vsri_transport_ctx *ctx,
             const char *addr, void (*on_accept)(void *owner, struct vsri_conn *conn),
             void *owner) {
  struct sockaddr_storage sa;
  socklen_t len;
  if (vsri_parse_addr(addr, &sa, &len) < 0) {
    VSRI_ERROR("VSR-ADDR", "quic: cannot parse listen address \"%s\": %s", addr,
               vsri_parse_addr_why());
    return VSR_EADDR;
  }
  int err = vsri_quic_config_check(q_cfg(ctx));
  if (err) return err;
  struct q_listener *l = vsri_calloc(1, sizeof *l);
  if (!l) return VSR_ENOMEM;
  atomic_fetch_add_explicit(&q_live, 1, memory_order_relaxed);
  l->base.ops = &vsri_transport_quic;
  l->ctx = ctx;
  vsri_list_init(&l->conns);
  vsri_list_init(&l->halfopen);
  l->cfg = *q_cfg(ctx);
  l->on_accept = on_accept;
  l->owner = owner;
  l->shard = ctx->shard;
  l->shards = ctx->shards;
  q_rand(l->reset_secret, sizeof l->reset_secret);
  q_rand(l->token_secret, sizeof l->token_secret);
  q_rand((uint8_t *)&l->cids.seed, sizeof l->cids.seed);
  l->srcs_cap = 64;
  while (l->srcs_cap < 2 * l->cfg.max_handshakes) l->srcs_cap *= 2;
  l->srcs = vsri_calloc(l->srcs_cap, sizeof *l->srcs);
  err = l->srcs ? q_listener_cert(l) : VSR_ENOMEM;
  if (!err && gnutls_priority_init(&l->prio, Q_PRIORITY, NULL) < 0) {
    VSRI_ERROR("VSR-QUIC", "quic: gnutls_priority_init failed");
    l->prio = NULL;
    err = VSR_ETLS;
  }
  if (!err) err = q_ep_open(&l->ep, ctx->io, (struct sockaddr *)&sa, len, true, &l->cfg, addr,
                          ctx);
  if (err) {
    if (l->prio) gnutls_priority_deinit(l->prio);
    vsri_free(l->srcs);
    vsri_cert_free(l->own_cert);
    vsri_free(l);
    atomic_fetch_sub_explicit(&q_live, 1, memory_order_relaxed);
    return err;
  }
  l->ep.owner = l;
  l->ep.on_packet = q_server_packet;
  l->ep.on_free = q_listener_ep_free;
  vsri_format_addr((struct sockaddr *)&l->ep.local, l->name, sizeof l->name);
  char fp[VSRI_FINGERPRINT_TEXT_LEN];
  vsri_fingerprint_format(l->cert->sha256, fp);
  VSRI_INFO("VSR-QUIC", "%s quic: listening (ALPN %s%s, GSO %s, GRO %s); %s certificate "
            "SHA-256 %s", l->name, VSRI_QUIC_ALPN, l->cfg.alpn_required ? " required" : " or none",
            l->ep.gso ? "on" : "off", l->ep.gro ? "on" : "off",
            l->cert->generated ? "self-signed localhost" : "server", fp);
  q_ep_rx_arm(&l->ep);
  *out = &l->base;
  return 0;
}

void q_listener_addr(const struct vsri_listener *lb, char *buf, size_t len) {
  const struct q_listener *l = q_listener_of_const(lb);
  vsri_format_addr((const struct sockaddr *)&l->ep.local, buf, len);
}

/* Stops accepting, with no loop turn: connections that have no owner to tell (not yet
 * reported, or already reported closed and lingering in their closing period) are closed and
 * freed now; reported ones stay with their owner (they share the socket, which closes when
 * the last of them is closed or aborted). */
void q_listener_close(struct vsri_listener *lb) {
  struct q_listener *l = q_listener_of(lb);
  if (l->closing) return;
  l->closing = true;
  l->walking = true;
  struct vsri_list_node *n, *tmp;
  vsri_list_for_each_safe(n, tmp, &l->conns) {
    struct q_conn *c = vsri_container_of(n, struct q_conn, l_link);
    if (c->started && !c->closed_notified) continue; /* its owner's */
    if (c->notifying) {
      /* Inside its own on_closed upcall (the owner closed us from there): not under it. A
       * connection in its closing period ends at the next reap; one being freed (REAPED) is
       * gone when the upcall returns. */
      if (c->state < Q_CLOSED) {
        c->state = Q_CLOSED;
        vsri_io_defer(c->ctx->io, &c->reap);
      }
      continue;
    }
    q_abort(c, VSR_ESHUTDOWN);
  }
  l->walking = false;
  q_listener_maybe_free(l);
}

void vsri_quic_listener_fingerprint(const struct vsri_listener *lb, uint8_t out[32]) {
  const struct q_listener *l = q_listener_of_const(lb);
  memcpy(out, l->cert->sha256, VSRI_SHA256_LEN);
}

void vsri_quic_listener_admission(const struct vsri_listener *lb,
                                  struct vsri_quic_admission *out) {
  const struct q_listener *l = q_listener_of_const(lb);
  *out = l->adm;
  out->halfopen = l->nhandshaking;
}

/* Connection aggregates for the metrics endpoint: every connection not yet closed. */
void vsri_quic_listener_conn_agg(const struct vsri_listener *lb,
                                 struct vsri_quic_conn_agg *out) {
  const struct q_listener *l = q_listener_of_const(lb);
  *out = (struct vsri_quic_conn_agg){0};
  for (const struct vsri_list_node *n = vsri_list_front(&l->conns); n;
       n = vsri_list_next(&l->conns, n)) {
    const struct q_conn *c = vsri_container_of(n, struct q_conn, l_link);
    if (c->state >= Q_CLOSED || !c->qc) continue;
    ngtcp2_conn_stat st;
    ngtcp2_conn_get_conn_stat(c->qc, &st);
    out->conns++;
    out->srtt_ns_sum += st.smoothed_rtt;
    if (st.smoothed_rtt > out->srtt_ns_max) out->srtt_ns_max = st.smoothed_rtt;
    out->cwnd_sum += st.cwnd;
    if (st.cwnd > out->cwnd_max) out->cwnd_max = st.cwnd;
    out->in_flight_sum += st.bytes_in_flight;
    out->pto_count_sum += st.pto_count;
  }
}
