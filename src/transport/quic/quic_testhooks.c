/* QUIC transport: quic_testhooks.c.
 * Test-only hooks, compiled into the static library the tests link and never into the shared
 * library that is installed (CMakeLists.txt): a client that lies about the server's stream limits,
 * an extra raw stream, packet input and output without the socket (fuzzing, flood tests). The
 * library reaches them only through pointers that stay NULL without this file. */
#include "transport/quic/quic_impl.h"

static int q_lie_configure(gnutls_session_t s);

void vsri_quic_test_lie_streams(struct vsri_quic_config *cfg, uint32_t n) {
  cfg->test_lie_streams = n;
  q_test_client_tls = q_lie_configure;
}

/* Tests only: a client that lies to itself about the server's stream limits, so it opens
 * streams the server never allowed. Mirrors what ngtcp2_crypto_gnutls_configure_client_session
 * wires up, with the transport parameters edited on the way in. */
static int q_lie_secret(gnutls_session_t s, gnutls_record_encryption_level_t glevel,
                        const void *rx, const void *tx, size_t len) {
  ngtcp2_crypto_conn_ref *ref = gnutls_session_get_ptr(s);
  ngtcp2_conn *qc = ref->get_conn(ref);
  ngtcp2_crypto_level level = ngtcp2_crypto_gnutls_from_gnutls_record_encryption_level(glevel);
  if (rx && ngtcp2_crypto_derive_and_install_rx_key(qc, NULL, NULL, NULL, level, rx, len) != 0) {
    return -1;
  }
  if (tx && ngtcp2_crypto_derive_and_install_tx_key(qc, NULL, NULL, NULL, level, tx, len) != 0) {
    return -1;
  }
  return 0;
}

static int q_lie_read(gnutls_session_t s, gnutls_record_encryption_level_t glevel,
                      gnutls_handshake_description_t htype, const void *data, size_t len) {
  if (htype == GNUTLS_HANDSHAKE_CHANGE_CIPHER_SPEC) return 0;
  ngtcp2_crypto_conn_ref *ref = gnutls_session_get_ptr(s);
  ngtcp2_conn *qc = ref->get_conn(ref);
  ngtcp2_crypto_level level = ngtcp2_crypto_gnutls_from_gnutls_record_encryption_level(glevel);
  int rv = ngtcp2_conn_submit_crypto_data(qc, level, data, len);
  if (rv != 0) {
    ngtcp2_conn_set_tls_error(qc, rv);
    return -1;
  }
  return 0;
}

static int q_lie_alert(gnutls_session_t s, gnutls_record_encryption_level_t glevel,
                       gnutls_alert_level_t alevel, gnutls_alert_description_t desc) {
  (void)glevel;
  (void)alevel;
  ngtcp2_crypto_conn_ref *ref = gnutls_session_get_ptr(s);
  ngtcp2_conn_set_tls_alert(ref->get_conn(ref), (uint8_t)desc);
  return 0;
}

static int q_lie_tp_recv(gnutls_session_t s, const unsigned char *data, size_t len) {
  ngtcp2_crypto_conn_ref *ref = gnutls_session_get_ptr(s);
  struct q_conn *c = ref->user_data;
  ngtcp2_transport_params p;
  uint8_t buf[512];
  int rv = ngtcp2_decode_transport_params(&p, NGTCP2_TRANSPORT_PARAMS_TYPE_ENCRYPTED_EXTENSIONS,
                                          data, len);
  if (rv == 0) {
    p.initial_max_streams_bidi += c->cfg->test_lie_streams;
    p.initial_max_streams_uni += c->cfg->test_lie_streams;
    if (p.initial_max_stream_data_uni < 65536) p.initial_max_stream_data_uni = 65536;
    ngtcp2_ssize n = ngtcp2_encode_transport_params(
        buf, sizeof buf, NGTCP2_TRANSPORT_PARAMS_TYPE_ENCRYPTED_EXTENSIONS, &p);
    rv = n < 0 ? (int)n : ngtcp2_conn_decode_remote_transport_params(c->qc, buf, (size_t)n);
  }
  if (rv != 0) {
    ngtcp2_conn_set_tls_error(c->qc, rv);
    return -1;
  }
  return 0;
}

static int q_lie_tp_send(gnutls_session_t s, gnutls_buffer_t extdata) {
  ngtcp2_crypto_conn_ref *ref = gnutls_session_get_ptr(s);
  uint8_t buf[256];
  ngtcp2_ssize n = ngtcp2_conn_encode_local_transport_params(ref->get_conn(ref), buf, sizeof buf);
  if (n < 0) return -1;
  return gnutls_buffer_append_data(extdata, buf, (size_t)n) != 0 ? -1 : 0;
}

static int q_lie_configure(gnutls_session_t s) {
  gnutls_handshake_set_secret_function(s, q_lie_secret);
  gnutls_handshake_set_read_function(s, q_lie_read);
  gnutls_alert_set_read_function(s, q_lie_alert);
  return gnutls_session_ext_register(
      s, "QUIC Transport Parameters", NGTCP2_TLSEXT_QUIC_TRANSPORT_PARAMETERS_V1, GNUTLS_EXT_TLS,
      q_lie_tp_recv, q_lie_tp_send, NULL, NULL, NULL,
      GNUTLS_EXT_FLAG_TLS | GNUTLS_EXT_FLAG_CLIENT_HELLO | GNUTLS_EXT_FLAG_EE);
}

void vsri_quic_test_conn_set_tx(struct vsri_conn *b,
                                void (*tx)(void *user, const uint8_t *pkt, size_t len),
                                void *user) {
  struct q_conn *c = q_conn_of(b);
  c->ep->tx_hook = tx;
  c->ep->tx_hook_user = user;
}

void vsri_quic_test_conn_input(struct vsri_conn *b, const struct sockaddr *from,
                               socklen_t fromlen, const uint8_t *pkt, size_t len) {
  q_conn_input(q_conn_of(b), from, fromlen, pkt, len);
}

void vsri_quic_listener_input(struct vsri_listener *b, const struct sockaddr *from,
                              socklen_t fromlen, const uint8_t *pkt, size_t len) {
  q_server_packet(&q_listener_of(b)->ep, from, fromlen, pkt, len);
}

void vsri_quic_listener_set_tx(struct vsri_listener *b,
                               void (*tx)(void *user, const uint8_t *pkt, size_t len),
                               void *user) {
  struct q_listener *l = q_listener_of(b);
  l->ep.tx_hook = tx;
  l->ep.tx_hook_user = user;
}

int64_t vsri_quic_frame_stream(const struct vsri_conn *b) { return q_conn_of_const(b)->rx_sid; }

int vsri_quic_test_open_stream(struct vsri_conn *b, bool bidi, const uint8_t *data, size_t len) {
  struct q_conn *c = q_conn_of(b);
  if (!c->qc || c->state >= Q_CLOSING || c->extra_sid >= 0) return VSR_EINVAL;
  int64_t sid;
  int rv = bidi ? ngtcp2_conn_open_bidi_stream(c->qc, &sid, NULL)
                : ngtcp2_conn_open_uni_stream(c->qc, &sid, NULL);
  if (rv != 0) return VSR_ESTREAM;
  c->extra_sid = sid;
  c->extra_data = data;
  c->extra_len = len;
  c->extra_off = 0;
  q_conn_schedule(c);
  return 0;
}

int vsri_quic_test_reset_streams(struct vsri_conn *b, uint64_t code) {
  struct q_conn *c = q_conn_of(b);
  if (!c->qc || c->state >= Q_CLOSING) return VSR_EINVAL;
  int n = 0;
  for (uint32_t i = 0; i < c->nst; i++) {
    if (c->st[i].sid < 0) continue;
    if (ngtcp2_conn_shutdown_stream(c->qc, c->st[i].sid, code) == 0) n++;
  }
  q_conn_schedule(c);
  return n;
}

/* ---- observers (tests only) -------------------------------------------------------------- */

uint32_t vsri_quic_listener_conns(const struct vsri_listener *b) {
  return q_listener_of_const(b)->nconns;
}

uint32_t vsri_quic_listener_halfopen_from(const struct vsri_listener *b,
                                          const struct sockaddr *addr) {
  const struct q_listener *l = q_listener_of_const(b);
  uint8_t key[Q_SRCKEY];
  q_src_key(addr, key);
  return q_src_count(l, key);
}

uint32_t vsri_quic_live(void) { return atomic_load_explicit(&q_live, memory_order_relaxed); }

void vsri_quic_close_info(const struct vsri_conn *b, uint64_t *code, bool *app, bool *remote) {
  const struct q_conn *c = q_conn_of_const(b);
  *code = c->close_known ? c->close_code : 0;
  *app = c->close_app;
  *remote = c->close_remote;
}
