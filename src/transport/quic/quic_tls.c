/* QUIC transport: quic_tls.c.
 * GnuTLS glue: ALPN policy on the server (ClientHello scan), the server and client sessions, and
 * the client's certificate check (CA file or pinned SHA-256). */
#include "transport/quic/quic_impl.h"

/* Set by quic_testhooks.c (vsri_quic_test_lie_streams); NULL in the shipped library. */
int (*q_test_client_tls)(gnutls_session_t s);

/* ---- TLS ------------------------------------------------------------------------------- */

struct q_alpn_scan {
  bool present, ours;
  char text[96]; /* what the client offered, for the log line */
  size_t len;
};

static void q_alpn_note(struct q_alpn_scan *s, const uint8_t *p, size_t n) {
  if (s->len && s->len + 1 < sizeof s->text) s->text[s->len++] = ',';
  for (size_t i = 0; i < n && s->len + 1 < sizeof s->text; i++) {
    s->text[s->len++] = p[i] >= 0x20 && p[i] < 0x7f ? (char)p[i] : '?';
  }
  s->text[s->len] = '\0';
}

static int q_alpn_ext(void *ctx, unsigned tls_id, const unsigned char *data, unsigned size) {
  struct q_alpn_scan *s = ctx;
  if (tls_id != 16) return 0; /* application_layer_protocol_negotiation */
  s->present = true;
  if (size < 2) return 0;
  size_t total = (size_t)data[0] << 8 | data[1];
  const uint8_t *p = data + 2, *end = p + (total < size - 2 ? total : size - 2);
  while (p < end) {
    size_t n = *p++;
    if (n > (size_t)(end - p)) break;
    if (n == sizeof VSRI_QUIC_ALPN - 1 && memcmp(p, VSRI_QUIC_ALPN, n) == 0) s->ours = true;
    q_alpn_note(s, p, n);
    p += n;
  }
  return 0;
}

/* Server: looks at the ALPN the client offers before GnuTLS negotiates. Offering ours passes;
 * offering none passes unless alpn_required (Iggy mainline's SDKs offer none); offering only
 * others never does. */
static int q_client_hello_hook(gnutls_session_t s, unsigned htype, unsigned when,
                               unsigned incoming, const gnutls_datum_t *msg) {
  if (htype != GNUTLS_HANDSHAKE_CLIENT_HELLO || when != GNUTLS_HOOK_PRE || !incoming) return 0;
  ngtcp2_crypto_conn_ref *ref = gnutls_session_get_ptr(s);
  struct q_conn *c = ref->user_data;
  struct q_alpn_scan scan;
  memset(&scan, 0, sizeof scan);
  if (gnutls_ext_raw_parse(&scan, q_alpn_ext, msg, GNUTLS_EXT_RAW_FLAG_TLS_CLIENT_HELLO) < 0) {
    return 0; /* malformed: GnuTLS itself rejects it */
  }
  if (scan.ours) return 0;
  if (!scan.present && !c->cfg->alpn_required) {
    VSRI_DEBUG("VSR-QUIC-ALPN", "%s quic: client offered no ALPN; admitted", c->name);
    return 0;
  }
  VSRI_WARN("VSR-QUIC-ALPN",
            "%s quic: refused at the handshake: client offered %s%s%s; this server requires "
            "ALPN %s%s",
            c->name, scan.present ? "ALPN \"" : "no ALPN", scan.present ? scan.text : "",
            scan.present ? "\"" : "", VSRI_QUIC_ALPN,
            c->cfg->alpn_required ? "" : " (or none)");
  c->alpn_refused = true;
  return GNUTLS_E_NO_APPLICATION_PROTOCOL;
}

static int q_tls_err(struct q_conn *c, const char *what, int rv) {
  VSRI_ERROR("VSR-QUIC", "%s quic: %s: %s", c->name, what, gnutls_strerror(rv));
  return VSR_ETLS;
}

int q_server_tls(struct q_conn *c) {
  /* No GNUTLS_ENABLE_EARLY_DATA: 0-RTT is off; no tickets: no resumption to replay. */
  int rv = gnutls_init(&c->tls, GNUTLS_SERVER | GNUTLS_NO_TICKETS | GNUTLS_NO_END_OF_EARLY_DATA);
  if (rv < 0) return q_tls_err(c, "gnutls_init", rv);
  if (ngtcp2_crypto_gnutls_configure_server_session(c->tls) != 0) {
    return q_tls_err(c, "ngtcp2_crypto_gnutls_configure_server_session", GNUTLS_E_INTERNAL_ERROR);
  }
  if ((rv = gnutls_priority_set(c->tls, c->l->prio)) < 0) {
    return q_tls_err(c, "gnutls_priority_set", rv);
  }
  if ((rv = gnutls_credentials_set(c->tls, GNUTLS_CRD_CERTIFICATE, c->l->cert->cred)) < 0) {
    return q_tls_err(c, "gnutls_credentials_set", rv);
  }
  gnutls_datum_t alpn = {(unsigned char *)VSRI_QUIC_ALPN, sizeof VSRI_QUIC_ALPN - 1};
  unsigned flags = c->cfg->alpn_required ? GNUTLS_ALPN_MANDATORY : 0;
  if ((rv = gnutls_alpn_set_protocols(c->tls, &alpn, 1, flags)) < 0) {
    return q_tls_err(c, "gnutls_alpn_set_protocols", rv);
  }
  gnutls_handshake_set_hook_function(c->tls, GNUTLS_HANDSHAKE_CLIENT_HELLO, GNUTLS_HOOK_PRE,
                                     q_client_hello_hook);
  gnutls_session_set_ptr(c->tls, &c->ref);
  ngtcp2_conn_set_tls_native_handle(c->qc, c->tls);
  return 0;
}

/* Client: checks the server certificate against the pin and/or the CA file. */
static int q_verify_cb(gnutls_session_t s) {
  ngtcp2_crypto_conn_ref *ref = gnutls_session_get_ptr(s);
  struct q_conn *c = ref->user_data;
  unsigned n = 0;
  const gnutls_datum_t *certs = gnutls_certificate_get_peers(s, &n);
  if (!certs || n == 0) {
    VSRI_WARN("VSR-QUIC-CERT", "%s quic: server sent no certificate", c->name);
    return GNUTLS_E_CERTIFICATE_ERROR;
  }
  if (c->pinned) {
    uint8_t sha[VSRI_SHA256_LEN];
    if (vsri_fingerprint_der(&certs[0], sha) != 0 || memcmp(sha, c->pin, sizeof sha) != 0) {
      char got[VSRI_FINGERPRINT_TEXT_LEN], want[VSRI_FINGERPRINT_TEXT_LEN];
      vsri_fingerprint_format(sha, got);
      vsri_fingerprint_format(c->pin, want);
      VSRI_WARN("VSR-QUIC-CERT", "%s quic: server certificate SHA-256 %s is not the pinned %s",
                c->name, got, want);
      return GNUTLS_E_CERTIFICATE_ERROR;
    }
  }
  if (c->cfg->ca_file) {
    unsigned status = 0;
    int rv = gnutls_certificate_verify_peers3(s, c->cfg->server_name, &status);
    if (rv < 0 || status != 0) {
      gnutls_datum_t txt = {NULL, 0};
      if (rv >= 0) gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &txt, 0);
      VSRI_WARN("VSR-QUIC-CERT", "%s quic: server certificate not trusted by %s: %s", c->name,
                c->cfg->ca_file, rv < 0 ? gnutls_strerror(rv) : (const char *)txt.data);
      gnutls_free(txt.data);
      return GNUTLS_E_CERTIFICATE_ERROR;
    }
  }
  return 0;
}

int q_client_tls(struct q_conn *c) {
  const struct vsri_quic_config *cfg = c->cfg;
  int rv = gnutls_certificate_allocate_credentials(&c->cred);
  if (rv < 0) return q_tls_err(c, "gnutls_certificate_allocate_credentials", rv);
  if (cfg->ca_file) {
    rv = gnutls_certificate_set_x509_trust_file(c->cred, cfg->ca_file, GNUTLS_X509_FMT_PEM);
    if (rv <= 0) {
      VSRI_ERROR("VSR-QUIC-CERT", "%s quic: %s: no usable CA certificate (%s)", c->name,
                 cfg->ca_file, rv < 0 ? gnutls_strerror(rv) : "empty");
      return VSR_ECONFIG;
    }
  }
  if ((rv = gnutls_init(&c->tls, GNUTLS_CLIENT | GNUTLS_NO_TICKETS)) < 0) {
    return q_tls_err(c, "gnutls_init", rv);
  }
  if (cfg->test_lie_streams && !q_test_client_tls) {
    VSRI_ERROR("VSR-CONFIG", "%s quic: test_lie_streams needs the test hooks (static library)",
               c->name);
    return VSR_ECONFIG;
  }
  rv = cfg->test_lie_streams ? q_test_client_tls(c->tls)
                             : ngtcp2_crypto_gnutls_configure_client_session(c->tls);
  if (rv != 0) return q_tls_err(c, "configure client session", GNUTLS_E_INTERNAL_ERROR);
  if ((rv = gnutls_priority_set_direct(c->tls, Q_PRIORITY, NULL)) < 0) {
    return q_tls_err(c, "gnutls_priority_set_direct", rv);
  }
  if ((rv = gnutls_credentials_set(c->tls, GNUTLS_CRD_CERTIFICATE, c->cred)) < 0) {
    return q_tls_err(c, "gnutls_credentials_set", rv);
  }
  const char *alpn = cfg->alpn ? cfg->alpn : "";
  if (*alpn) {
    gnutls_datum_t d = {(unsigned char *)alpn, (unsigned)strlen(alpn)};
    gnutls_alpn_set_protocols(c->tls, &d, 1, GNUTLS_ALPN_MANDATORY);
  }
  const char *name = cfg->server_name ? cfg->server_name : "localhost";
  gnutls_server_name_set(c->tls, GNUTLS_NAME_DNS, name, strlen(name));
  if (!cfg->insecure || c->pinned || cfg->ca_file) {
    gnutls_session_set_verify_function(c->tls, q_verify_cb);
  }
  gnutls_session_set_ptr(c->tls, &c->ref);
  ngtcp2_conn_set_tls_native_handle(c->qc, c->tls);
  return 0;
}
