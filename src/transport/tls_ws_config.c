/* TLS, WS and WSS transports, settings: see tls_ws.h (the server's certificate, the client's
 * checks, the replica plane's ALPN). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "crypto/cert.h"
#include "transport/tls_ws_impl.h"
#include "util/alloc.h"
#include "util/log.h"
#include "vsrbus/error.h"


/* The process's self-signed certificate: the TLS and WSS listeners of a node share it (one
 * SHA-256 to pin), generated at the first use and freed with the last. */
static struct {
  pthread_mutex_t lock;
  struct vsri_cert *cert;
  unsigned refs;
} tw_shared = {PTHREAD_MUTEX_INITIALIZER, NULL, 0};

static int tw_shared_get(struct vsri_cert **out) {
  pthread_mutex_lock(&tw_shared.lock);
  int err = 0;
  if (!tw_shared.cert) err = vsri_cert_generate(&tw_shared.cert, "localhost", 365);
  if (!err) {
    tw_shared.refs++;
    *out = tw_shared.cert;
  }
  pthread_mutex_unlock(&tw_shared.lock);
  return err;
}

static void tw_shared_put(void) {
  pthread_mutex_lock(&tw_shared.lock);
  if (tw_shared.refs && --tw_shared.refs == 0) {
    vsri_cert_free(tw_shared.cert);
    tw_shared.cert = NULL;
  }
  pthread_mutex_unlock(&tw_shared.lock);
}

static void tw_copy(char *dst, size_t cap, const char *src) {
  snprintf(dst, cap, "%s", src ? src : "");
}

int vsri_tlsws_server_config(struct vsri_tlsws_config **out,
                             const struct vsri_tlsws_server_options *o) {
  struct vsri_tlsws_config *c = vsri_calloc(1, sizeof *c);
  if (!c) return VSR_ENOMEM;
  c->server = true;
  c->grace_ns = o->handshake_grace_ns ? o->handshake_grace_ns : TW_GRACE_NS;
  c->max_handshakes = o->max_handshakes ? o->max_handshakes : TW_MAX_HANDSHAKES;
  if (o->plain) {
    *out = c;
    return 0;
  }
  int err;
  if (o->cert_file || o->key_file) {
    err = vsri_cert_load(&c->cert, o->cert_file, o->key_file);
  } else if (o->client_ca) { /* its own: the client CA is set on the credentials */
    err = vsri_cert_generate(&c->cert, "localhost", 365);
  } else {
    err = tw_shared_get(&c->cert);
    c->shared_cert = err == 0;
  }
  if (err) goto fail;
  if (gnutls_priority_init(&c->srv.prio, VSRI_TLS_PRIORITY, NULL) < 0) {
    c->srv.prio = NULL;
    err = VSR_ETLS;
    goto fail;
  }
  c->srv.cred = c->cert->cred;
  if (o->client_ca) {
    tw_copy(c->client_ca, sizeof c->client_ca, o->client_ca);
    int n = gnutls_certificate_set_x509_trust_file(c->cert->cred, o->client_ca,
                                                   GNUTLS_X509_FMT_PEM);
    if (n <= 0) {
      VSRI_ERROR("VSR-TLS", "%s: no usable CA certificate for client verification (%s)",
                 o->client_ca, n < 0 ? gnutls_strerror(n) : "empty");
      err = VSR_ECONFIG;
      goto fail;
    }
    c->srv.verify_client = true;
    c->srv.client_ca = c->client_ca;
  }
  static atomic_flag said = ATOMIC_FLAG_INIT; /* which TLS path runs: one line per process */
  if (!atomic_flag_test_and_set(&said)) {
    char why[200];
    vsri_tls_kernel_available(why, sizeof why);
    VSRI_INFO("VSR-TLS", "%s", why);
  }
  *out = c;
  return 0;
fail:
  vsri_tlsws_config_free(c);
  return err;
}

int vsri_tlsws_client_config(struct vsri_tlsws_config **out,
                             const struct vsri_tlsws_client_options *o) {
  if (!o->ca_file && !o->pin_sha256 && !o->insecure) {
    VSRI_ERROR("VSR-CONFIG", "tls client: give a CA file or a pinned SHA-256 of the server "
               "certificate (or insecure, for tests)");
    return VSR_ECONFIG;
  }
  struct vsri_tlsws_config *c = vsri_calloc(1, sizeof *c);
  if (!c) return VSR_ENOMEM;
  c->grace_ns = o->handshake_grace_ns ? o->handshake_grace_ns : TW_GRACE_NS;
  int err = VSR_ETLS;
  if (gnutls_certificate_allocate_credentials(&c->client_cred) < 0) goto fail;
  c->cli.cred = c->client_cred;
  if (o->pin_sha256) {
    if (vsri_fingerprint_parse(o->pin_sha256, c->cli.pin) != 0) {
      VSRI_ERROR("VSR-CONFIG", "tls client: pin \"%s\" is not 64 hex digits", o->pin_sha256);
      err = VSR_ECONFIG;
      goto fail;
    }
    c->cli.pinned = true;
  }
  if (o->ca_file) {
    tw_copy(c->ca_file, sizeof c->ca_file, o->ca_file);
    int n = gnutls_certificate_set_x509_trust_file(c->client_cred, o->ca_file,
                                                   GNUTLS_X509_FMT_PEM);
    if (n <= 0) {
      VSRI_ERROR("VSR-TLS", "%s: no usable CA certificate (%s)", o->ca_file,
                 n < 0 ? gnutls_strerror(n) : "empty");
      err = VSR_ECONFIG;
      goto fail;
    }
    c->cli.ca_file = c->ca_file;
  }
  if (o->cert_file && o->key_file &&
      gnutls_certificate_set_x509_key_file(c->client_cred, o->cert_file, o->key_file,
                                           GNUTLS_X509_FMT_PEM) < 0) {
    VSRI_ERROR("VSR-TLS", "%s / %s: cannot load the client certificate and key", o->cert_file,
               o->key_file);
    err = VSR_ECONFIG;
    goto fail;
  }
  tw_copy(c->server_name, sizeof c->server_name, o->server_name ? o->server_name : "localhost");
  c->cli.server_name = c->server_name;
  c->can_dial = true;
  *out = c;
  return 0;
fail:
  vsri_tlsws_config_free(c);
  return err;
}

int vsri_tlsws_replica_config(struct vsri_tlsws_config **out, const char *cert_file,
                              const char *key_file, const char *ca_file, uint64_t grace_ns) {
  struct vsri_tlsws_server_options so = {.cert_file = cert_file, .key_file = key_file,
                                         .handshake_grace_ns = grace_ns};
  struct vsri_tlsws_config *c = NULL;
  int err = vsri_tlsws_server_config(&c, &so);
  if (err) return err;
  c->srv.alpn = VSRI_REPLICA_ALPN;
  err = VSR_ETLS;
  if (gnutls_certificate_allocate_credentials(&c->client_cred) < 0) goto fail;
  c->cli.cred = c->client_cred;
  c->cli.alpn = VSRI_REPLICA_ALPN;
  if (ca_file) {
    tw_copy(c->ca_file, sizeof c->ca_file, ca_file);
    int n = gnutls_certificate_set_x509_trust_file(c->client_cred, ca_file, GNUTLS_X509_FMT_PEM);
    if (n <= 0) {
      VSRI_ERROR("VSR-TLS", "%s: no usable CA certificate for the replica plane (%s)", ca_file,
                 n < 0 ? gnutls_strerror(n) : "empty");
      err = VSR_ECONFIG;
      goto fail;
    }
    c->cli.ca_file = c->ca_file;
    c->name_from_addr = true;
  }
  tw_copy(c->server_name, sizeof c->server_name, "localhost");
  c->cli.server_name = c->server_name;
  c->can_dial = true;
  *out = c;
  return 0;
fail:
  vsri_tlsws_config_free(c);
  return err;
}

void vsri_tlsws_config_free(struct vsri_tlsws_config *c) {
  if (!c) return;
  if (c->srv.prio) gnutls_priority_deinit(c->srv.prio);
  if (c->client_cred) gnutls_certificate_free_credentials(c->client_cred);
  if (c->shared_cert) tw_shared_put();
  else vsri_cert_free(c->cert);
  vsri_free(c);
}

void vsri_tlsws_fingerprint(const struct vsri_tlsws_config *c, uint8_t out[32]) {
  if (c->cert) memcpy(out, c->cert->sha256, 32);
  else memset(out, 0, 32);
}

