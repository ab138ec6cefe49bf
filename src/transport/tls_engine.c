/* TLS record engine over memory buffers: see tls_engine.h. */
#include "transport/tls_engine.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gnutls/x509.h>

#include "crypto/cert.h"
#include "vsrbus/error.h"

#ifndef TCP_ULP
#define TCP_ULP 31
#endif

/* The smallest ciphertext buffer taken from the pool: one full record and its overhead. */
#define TLS_OUT_MIN (VSRI_TLS_RECORD + 512u)

/* Small frames are gathered here into one record before encryption. One per thread: it is
 * empty again whenever vsri_tls_send() returns. */
static _Thread_local uint8_t tls_stage[VSRI_TLS_RECORD];

static void tls_why(struct vsri_tls *t, const char *what, int rv) {
  const char *alert = "";
  char buf[64] = "";
  if (rv == GNUTLS_E_FATAL_ALERT_RECEIVED || rv == GNUTLS_E_WARNING_ALERT_RECEIVED) {
    const char *name = gnutls_alert_get_name(gnutls_alert_get(t->s));
    snprintf(buf, sizeof buf, " (alert %s)", name ? name : "?");
    alert = buf;
  }
  snprintf(t->why, sizeof t->why, "%s: %s%s", what, gnutls_strerror(rv), alert);
}

/* ---- memory transport ------------------------------------------------------------------ */

bool vsri_tls_out_reserve(struct vsri_tls *t, size_t more) {
  size_t have = t->out ? t->out->size : 0, need = have + more;
  if (t->out && need <= t->out->capacity) return true;
  if (!t->pool || need > UINT32_MAX) return false;
  size_t cap = need < TLS_OUT_MIN ? TLS_OUT_MIN : need + (need >> 1);
  struct vsr_msg *m = vsr_pool_get(t->pool, (uint32_t)cap);
  if (!m && cap > need) m = vsr_pool_get(t->pool, (uint32_t)need);
  if (!m) return false;
  if (have) memcpy(m->data, t->out->data, have);
  m->size = (uint32_t)have;
  vsr_msg_unref(t->out);
  t->out = m;
  return true;
}

static ssize_t tls_push(gnutls_transport_ptr_t ptr, const giovec_t *iov, int iovcnt) {
  struct vsri_tls *t = ptr;
  size_t total = 0;
  for (int i = 0; i < iovcnt; i++) total += iov[i].iov_len;
  if (!vsri_tls_out_reserve(t, total)) {
    t->out_failed = true;
    gnutls_transport_set_errno(t->s, ENOMEM);
    return -1;
  }
  for (int i = 0; i < iovcnt; i++) {
    memcpy(t->out->data + t->out->size, iov[i].iov_base, iov[i].iov_len);
    t->out->size += (uint32_t)iov[i].iov_len;
  }
  return (ssize_t)total;
}

static ssize_t tls_pull(gnutls_transport_ptr_t ptr, void *buf, size_t len) {
  struct vsri_tls *t = ptr;
  if (t->in_len == 0) {
    gnutls_transport_set_errno(t->s, EAGAIN);
    return -1;
  }
  size_t n = len < t->in_len ? len : t->in_len;
  memcpy(buf, t->in, n);
  t->in += n;
  t->in_len -= n;
  return (ssize_t)n;
}

static int tls_pull_timeout(gnutls_transport_ptr_t ptr, unsigned ms) {
  (void)ms;
  struct vsri_tls *t = ptr;
  return t->in_len > 0 ? 1 : 0;
}

/* ---- certificate checks ---------------------------------------------------------------- */

static int tls_verify_server(gnutls_session_t s) {
  struct vsri_tls *t = gnutls_session_get_ptr(s);
  const struct vsri_tls_client *cfg = t->client_cfg;
  unsigned n = 0;
  const gnutls_datum_t *certs = gnutls_certificate_get_peers(s, &n);
  if (!certs || n == 0) {
    snprintf(t->why, sizeof t->why, "server sent no certificate");
    return GNUTLS_E_CERTIFICATE_ERROR;
  }
  if (cfg->pinned) {
    uint8_t sha[VSRI_SHA256_LEN];
    if (vsri_fingerprint_der(&certs[0], sha) != 0 || memcmp(sha, cfg->pin, sizeof sha) != 0) {
      char got[VSRI_FINGERPRINT_TEXT_LEN], want[VSRI_FINGERPRINT_TEXT_LEN];
      vsri_fingerprint_format(sha, got);
      vsri_fingerprint_format(cfg->pin, want);
      snprintf(t->why, sizeof t->why, "server certificate SHA-256 %.40s... is not the pinned "
               "%.40s...", got, want);
      return GNUTLS_E_CERTIFICATE_ERROR;
    }
  }
  if (cfg->ca_file) {
    unsigned status = 0;
    const char *name = t->verify_name ? t->verify_name
                       : cfg->server_name ? cfg->server_name : "localhost";
    int rv = gnutls_certificate_verify_peers3(s, name, &status);
    if (rv < 0 || status != 0) {
      gnutls_datum_t txt = {NULL, 0};
      if (rv >= 0) gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &txt, 0);
      snprintf(t->why, sizeof t->why, "server certificate not trusted by %s: %s", cfg->ca_file,
               rv < 0 ? gnutls_strerror(rv) : (const char *)txt.data);
      gnutls_free(txt.data);
      return GNUTLS_E_CERTIFICATE_ERROR;
    }
  }
  return 0;
}

static int tls_verify_client(gnutls_session_t s) {
  struct vsri_tls *t = gnutls_session_get_ptr(s);
  unsigned status = 0, n = 0;
  if (!gnutls_certificate_get_peers(s, &n) || n == 0) {
    snprintf(t->why, sizeof t->why, "client sent no certificate (one is required)");
    return GNUTLS_E_CERTIFICATE_ERROR;
  }
  int rv = gnutls_certificate_verify_peers2(s, &status);
  if (rv < 0 || status != 0) {
    gnutls_datum_t txt = {NULL, 0};
    if (rv >= 0) gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &txt, 0);
    snprintf(t->why, sizeof t->why, "client certificate not trusted: %s",
             rv < 0 ? gnutls_strerror(rv) : (const char *)txt.data);
    gnutls_free(txt.data);
    return GNUTLS_E_CERTIFICATE_ERROR;
  }
  return 0;
}

/* ---- ALPN ------------------------------------------------------------------------------ */

struct tls_alpn_scan {
  const char *want;
  bool present, ours;
};

static int tls_alpn_ext(void *ctx, unsigned tls_id, const unsigned char *data, unsigned size) {
  struct tls_alpn_scan *s = ctx;
  if (tls_id != 16 || size < 2) return 0; /* application_layer_protocol_negotiation */
  s->present = true;
  size_t total = (size_t)data[0] << 8 | data[1], want = strlen(s->want);
  const uint8_t *p = data + 2, *end = p + (total < size - 2u ? total : size - 2u);
  while (p < end) {
    size_t n = *p++;
    if (n > (size_t)(end - p)) break;
    if (n == want && memcmp(p, s->want, n) == 0) s->ours = true;
    p += n;
  }
  return 0;
}

/* Server with a required ALPN: a ClientHello that does not offer it is refused with the
 * no_application_protocol alert (GnuTLS alone would admit a client offering no ALPN). */
static int tls_client_hello(gnutls_session_t s, unsigned htype, unsigned when, unsigned incoming,
                            const gnutls_datum_t *msg) {
  if (htype != GNUTLS_HANDSHAKE_CLIENT_HELLO || when != GNUTLS_HOOK_PRE || !incoming) return 0;
  struct vsri_tls *t = gnutls_session_get_ptr(s);
  struct tls_alpn_scan scan = {.want = t->alpn_required};
  if (gnutls_ext_raw_parse(&scan, tls_alpn_ext, msg, GNUTLS_EXT_RAW_FLAG_TLS_CLIENT_HELLO) < 0) {
    return 0; /* malformed: GnuTLS rejects it itself */
  }
  if (scan.ours) return 0;
  snprintf(t->why, sizeof t->why, "client offered %s; ALPN %s is required",
           scan.present ? "other ALPN protocols" : "no ALPN", t->alpn_required);
  return GNUTLS_E_NO_APPLICATION_PROTOCOL;
}

/* ---- sessions -------------------------------------------------------------------------- */

static void tls_common(struct vsri_tls *t) {
  gnutls_session_set_ptr(t->s, t);
  gnutls_transport_set_ptr(t->s, t);
  gnutls_transport_set_vec_push_function(t->s, tls_push);
  gnutls_transport_set_pull_function(t->s, tls_pull);
  gnutls_transport_set_pull_timeout_function(t->s, tls_pull_timeout);
}

/* A fresh session (|end|: GNUTLS_SERVER or GNUTLS_CLIENT; TLS 1.3 without tickets, non-blocking)
 * wired to our push/pull functions. */
static int tls_open(struct vsri_tls *t, struct vsr_pool *pool, const char *name,
                    unsigned end) {
  memset(t, 0, sizeof *t);
  t->pool = pool;
  t->server = end == GNUTLS_SERVER;
  t->name = name;
  t->rekey_after = VSRI_TLS_REKEY_AFTER;
  int rv = gnutls_init(&t->s, end | GNUTLS_NO_TICKETS | GNUTLS_NONBLOCK);
  if (rv < 0) {
    t->s = NULL;
    tls_why(t, "gnutls_init", rv);
    return VSR_ETLS;
  }
  tls_common(t);
  return 0;
}

int vsri_tls_server_init(struct vsri_tls *t, const struct vsri_tls_server *cfg,
                         struct vsr_pool *pool, const char *name) {
  int rv = tls_open(t, pool, name, GNUTLS_SERVER);
  if (rv) return rv;
  if ((rv = gnutls_priority_set(t->s, cfg->prio)) < 0 ||
      (rv = gnutls_credentials_set(t->s, GNUTLS_CRD_CERTIFICATE, cfg->cred)) < 0) {
    tls_why(t, "server session", rv);
    return VSR_ETLS;
  }
  if (cfg->alpn) {
    gnutls_datum_t d = {(unsigned char *)cfg->alpn, (unsigned)strlen(cfg->alpn)};
    gnutls_alpn_set_protocols(t->s, &d, 1, GNUTLS_ALPN_MANDATORY);
    t->alpn_required = cfg->alpn;
    gnutls_handshake_set_hook_function(t->s, GNUTLS_HANDSHAKE_CLIENT_HELLO, GNUTLS_HOOK_PRE,
                                       tls_client_hello);
  }
  if (cfg->verify_client) {
    gnutls_certificate_server_set_request(t->s, GNUTLS_CERT_REQUIRE);
    /* No CA names in the request: a client then sends whatever certificate it has, and an
     * untrusted one is refused with a precise reason instead of "certificate required". */
    gnutls_certificate_send_x509_rdn_sequence(t->s, 1);
    gnutls_session_set_verify_function(t->s, tls_verify_client);
  }
  return 0;
}

int vsri_tls_client_init(struct vsri_tls *t, const struct vsri_tls_client *cfg,
                         struct vsr_pool *pool, const char *name) {
  int rv = tls_open(t, pool, name, GNUTLS_CLIENT);
  if (rv) return rv;
  t->client_cfg = cfg;
  if ((rv = gnutls_priority_set_direct(t->s, VSRI_TLS_PRIORITY, NULL)) < 0 ||
      (rv = gnutls_credentials_set(t->s, GNUTLS_CRD_CERTIFICATE, cfg->cred)) < 0) {
    tls_why(t, "client session", rv);
    return VSR_ETLS;
  }
  const char *sni = cfg->server_name ? cfg->server_name : "localhost";
  gnutls_server_name_set(t->s, GNUTLS_NAME_DNS, sni, strlen(sni));
  if (cfg->alpn) {
    gnutls_datum_t d = {(unsigned char *)cfg->alpn, (unsigned)strlen(cfg->alpn)};
    gnutls_alpn_set_protocols(t->s, &d, 1, GNUTLS_ALPN_MANDATORY);
  }
  if (cfg->pinned || cfg->ca_file) gnutls_session_set_verify_function(t->s, tls_verify_server);
  return 0;
}

void vsri_tls_free(struct vsri_tls *t) {
  vsri_tls_records_free(t);
  if (t->s) gnutls_deinit(t->s);
  t->s = NULL;
  vsr_msg_unref(t->out);
  t->out = NULL;
}

void vsri_tls_feed(struct vsri_tls *t, const uint8_t *p, size_t n) {
  t->in = p;
  t->in_len = n;
}

int vsri_tls_handshake(struct vsri_tls *t) {
  if (t->done) return 0;
  for (;;) {
    int rv = gnutls_handshake(t->s);
    if (rv == GNUTLS_E_SUCCESS) {
      t->done = true;
      vsri_tls_records_arm(t);
      return 0;
    }
    if (rv == GNUTLS_E_AGAIN || rv == GNUTLS_E_INTERRUPTED) {
      if (t->out_failed) break;
      return VSR_EAGAIN;
    }
    if (!gnutls_error_is_fatal(rv)) continue;
    bool ours = rv == GNUTLS_E_CERTIFICATE_ERROR || rv == GNUTLS_E_NO_APPLICATION_PROTOCOL;
    if (!t->why[0] || !ours) {
      char keep[sizeof t->why];
      snprintf(keep, sizeof keep, "%s", t->why);
      tls_why(t, "handshake", rv);
      if (keep[0]) snprintf(t->why, sizeof t->why, "%s", keep);
    }
    return VSR_EHANDSHAKE;
  }
  snprintf(t->why, sizeof t->why, "handshake: no buffer for ciphertext");
  return VSR_EHANDSHAKE;
}

ssize_t vsri_tls_recv(struct vsri_tls *t, void *buf, size_t len) {
  return vsri_tls_records_open(t, buf, len);
}

ssize_t vsri_tls_recv_gnutls(struct vsri_tls *t, void *buf, size_t len) {
  for (;;) {
    ssize_t rv = gnutls_record_recv(t->s, buf, len);
    if (rv > 0) return rv;
    if (rv == 0) {
      t->peer_closed = true;
      return VSR_ECLOSED;
    }
    if (rv == GNUTLS_E_AGAIN || rv == GNUTLS_E_INTERRUPTED) return VSR_EAGAIN;
    if (!gnutls_error_is_fatal((int)rv)) continue;
    tls_why(t, "record", (int)rv);
    return VSR_ETLS;
  }
}

int vsri_tls_send_gnutls(struct vsri_tls *t, const uint8_t *p, size_t n) {
  while (n > 0) {
    ssize_t rv = gnutls_record_send(t->s, p, n);
    if (rv < 0) {
      if (t->out_failed) return VSR_EPOOL;
      tls_why(t, "record send", (int)rv);
      return VSR_ETLS;
    }
    p += rv;
    n -= (size_t)rv;
  }
  return 0;
}

ssize_t vsri_tls_send(struct vsri_tls *t, const struct iovec *iov, int iovcnt, size_t skip) {
  size_t taken = 0, staged = 0;
  int rv;
  for (int i = 0; i < iovcnt && taken + staged < VSRI_TLS_SEND_MAX; i++) {
    size_t off = i == 0 ? skip : 0;
    const uint8_t *p = (const uint8_t *)iov[i].iov_base + off;
    size_t n = iov[i].iov_len - off;
    if (n > VSRI_TLS_SEND_MAX - taken - staged) n = VSRI_TLS_SEND_MAX - taken - staged;
    while (n > 0) {
      if (staged == 0 && n >= VSRI_TLS_RECORD) { /* whole records straight from the frame */
        size_t k = n - n % VSRI_TLS_RECORD;
        if ((rv = vsri_tls_records_seal(t, p, k)) < 0) return rv;
        taken += k;
        p += k;
        n -= k;
        continue;
      }
      size_t k = VSRI_TLS_RECORD - staged < n ? VSRI_TLS_RECORD - staged : n;
      memcpy(tls_stage + staged, p, k);
      staged += k;
      p += k;
      n -= k;
      if (staged == VSRI_TLS_RECORD) {
        if ((rv = vsri_tls_records_seal(t, tls_stage, staged)) < 0) return rv;
        taken += staged;
        staged = 0;
      }
    }
  }
  if (staged) {
    if ((rv = vsri_tls_records_seal(t, tls_stage, staged)) < 0) return rv;
    taken += staged;
  }
  return (ssize_t)taken;
}

void vsri_tls_bye(struct vsri_tls *t) {
  if (!t->s || !t->done) return;
  vsri_tls_records_bye(t);
  gnutls_bye(t->s, GNUTLS_SHUT_WR);
}

struct vsr_msg *vsri_tls_take_out(struct vsri_tls *t) {
  struct vsr_msg *m = t->out;
  if (m && m->size == 0) return NULL;
  t->out = NULL;
  return m;
}

int vsri_tls_exporter(struct vsri_tls *t, const char *label, uint8_t *out, size_t n) {
  if (!t->done) return VSR_ETLS;
  int rv = gnutls_prf_rfc5705(t->s, strlen(label), label, 0, NULL, n, (char *)out);
  if (rv < 0) {
    tls_why(t, "exporter", rv);
    return VSR_ETLS;
  }
  return 0;
}

const char *vsri_tls_describe(struct vsri_tls *t, char *buf, size_t len) {
  const char *v = gnutls_protocol_get_name(gnutls_protocol_get_version(t->s));
  const char *c = gnutls_cipher_get_name(gnutls_cipher_get(t->s));
  snprintf(buf, len, "%s %s", v ? v : "?", c ? c : "?");
  return buf;
}

bool vsri_tls_kernel_available(char *why, size_t len) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    snprintf(why, len, "kernel TLS: not probed (socket: %s); TLS records in user space (vsrbus "
             "over GnuTLS AEAD)", strerror(errno));
    return false;
  }
  /* An unconnected socket: the kernel answers ENOTCONN when the tls ULP exists, ENOENT when
   * the module is missing. */
  int rv = setsockopt(fd, IPPROTO_TCP, TCP_ULP, "tls", sizeof "tls");
  int err = rv < 0 ? errno : 0;
  close(fd);
  if (rv == 0 || err == ENOTCONN) {
    snprintf(why, len, "kernel TLS: the kernel offers the tls ULP, but vsrbus keeps TLS records in "
             "user space (vsrbus over GnuTLS AEAD)");
    return true;
  }
  snprintf(why, len, "kernel TLS: unavailable (TCP_ULP \"tls\": %s); TLS records in user space "
           "(vsrbus over GnuTLS AEAD)", strerror(err));
  return false;
}
