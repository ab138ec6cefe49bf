/* Certificates with GnuTLS: self-signed generation (ECDSA P-256, SHA-256 signature), PEM
 * loading, fingerprints, and writing a pair to disk for `vsrbus cert`. */
#include "crypto/cert.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <gnutls/crypto.h>
#include <gnutls/x509.h>

#include "util/alloc.h"
#include "util/log.h"
#include "vsrbus/error.h"

/* Logs a failed GnuTLS call and maps it to VSR_ETLS. */
static int cert_tls_err(const char *what, int rv) {
  VSRI_ERROR("VSR-CERT", "%s: %s", what, gnutls_strerror(rv));
  return VSR_ETLS;
}

int vsri_fingerprint_der(const gnutls_datum_t *der, uint8_t out[VSRI_SHA256_LEN]) {
  int rv = gnutls_hash_fast(GNUTLS_DIG_SHA256, der->data, der->size, out);
  return rv < 0 ? cert_tls_err("gnutls_hash_fast", rv) : 0;
}

static int cert_fingerprint_crt(gnutls_x509_crt_t crt, uint8_t out[VSRI_SHA256_LEN]) {
  gnutls_datum_t der = {NULL, 0};
  int rv = gnutls_x509_crt_export2(crt, GNUTLS_X509_FMT_DER, &der);
  if (rv < 0) return cert_tls_err("gnutls_x509_crt_export2", rv);
  int err = vsri_fingerprint_der(&der, out);
  gnutls_free(der.data);
  return err;
}

/* Fills the names, validity and extensions of a fresh certificate. */
static int cert_fill(gnutls_x509_crt_t crt, gnutls_x509_privkey_t key, const char *name,
                     unsigned days) {
  uint8_t serial[16];
  int rv = gnutls_rnd(GNUTLS_RND_NONCE, serial, sizeof serial);
  if (rv < 0) return rv;
  serial[0] &= 0x7f; /* positive INTEGER */
  serial[0] |= 0x01; /* and no leading zero byte */
  time_t now = time(NULL);
  struct in_addr v4;
  struct in6_addr v6;
  inet_pton(AF_INET, "127.0.0.1", &v4);
  inet_pton(AF_INET6, "::1", &v6);
  if ((rv = gnutls_x509_crt_set_version(crt, 3)) < 0 ||
      (rv = gnutls_x509_crt_set_serial(crt, serial, sizeof serial)) < 0 ||
      (rv = gnutls_x509_crt_set_activation_time(crt, now - 3600)) < 0 ||
      (rv = gnutls_x509_crt_set_expiration_time(crt, now + (time_t)days * 86400)) < 0 ||
      (rv = gnutls_x509_crt_set_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, name,
                                          (unsigned)strlen(name))) < 0 ||
      (rv = gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_DNSNAME, name,
                                                 (unsigned)strlen(name),
                                                 GNUTLS_FSAN_APPEND)) < 0 ||
      (rv = gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_IPADDRESS, &v4, sizeof v4,
                                                 GNUTLS_FSAN_APPEND)) < 0 ||
      (rv = gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_IPADDRESS, &v6, sizeof v6,
                                                 GNUTLS_FSAN_APPEND)) < 0 ||
      (rv = gnutls_x509_crt_set_key(crt, key)) < 0 ||
      (rv = gnutls_x509_crt_set_basic_constraints(crt, 0, -1)) < 0 ||
      (rv = gnutls_x509_crt_set_key_usage(crt, GNUTLS_KEY_DIGITAL_SIGNATURE)) < 0 ||
      (rv = gnutls_x509_crt_set_key_purpose_oid(crt, GNUTLS_KP_TLS_WWW_SERVER, 0)) < 0) {
    return rv;
  }
  return gnutls_x509_crt_sign2(crt, crt, key, GNUTLS_DIG_SHA256, 0);
}

int vsri_cert_generate(struct vsri_cert **out, const char *name, unsigned days) {
  struct vsri_cert *c = vsri_calloc(1, sizeof *c);
  if (!c) return VSR_ENOMEM;
  c->generated = true;
  gnutls_x509_privkey_t key = NULL;
  gnutls_x509_crt_t crt = NULL;
  const char *what = "gnutls_x509_privkey_generate";
  int rv = gnutls_x509_privkey_init(&key);
  if (rv == 0) {
    rv = gnutls_x509_privkey_generate(
        key, GNUTLS_PK_ECDSA, GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1), 0);
  }
  if (rv == 0) {
    what = "certificate fields";
    rv = gnutls_x509_crt_init(&crt);
  }
  if (rv == 0) rv = cert_fill(crt, key, name ? name : "localhost", days ? days : 365);
  if (rv == 0) {
    what = "PEM export";
    rv = gnutls_x509_crt_export2(crt, GNUTLS_X509_FMT_PEM, &c->cert_pem);
  }
  if (rv == 0) {
    rv = gnutls_x509_privkey_export2_pkcs8(key, GNUTLS_X509_FMT_PEM, NULL, GNUTLS_PKCS_PLAIN,
                                           &c->key_pem);
  }
  if (rv == 0) {
    what = "credentials";
    rv = gnutls_certificate_allocate_credentials(&c->cred);
  }
  if (rv == 0) rv = gnutls_certificate_set_x509_key(c->cred, &crt, 1, key);
  int err = rv < 0 ? cert_tls_err(what, rv) : cert_fingerprint_crt(crt, c->sha256);
  if (crt) gnutls_x509_crt_deinit(crt);
  if (key) gnutls_x509_privkey_deinit(key);
  if (err) {
    vsri_cert_free(c);
    return err;
  }
  *out = c;
  return 0;
}

/* Reads the first certificate of a PEM file and fingerprints it. */
static int cert_pem_fingerprint(const gnutls_datum_t *pem, const char *path,
                                uint8_t out[VSRI_SHA256_LEN]) {
  gnutls_x509_crt_t crt;
  int rv = gnutls_x509_crt_init(&crt);
  if (rv < 0) return cert_tls_err("gnutls_x509_crt_init", rv);
  rv = gnutls_x509_crt_import(crt, pem, GNUTLS_X509_FMT_PEM);
  int err = 0;
  if (rv < 0) {
    VSRI_ERROR("VSR-CERT", "%s: not a PEM certificate: %s", path, gnutls_strerror(rv));
    err = VSR_ECONFIG;
  } else {
    err = cert_fingerprint_crt(crt, out);
  }
  gnutls_x509_crt_deinit(crt);
  return err;
}

int vsri_fingerprint_pem_file(const char *path, uint8_t out[VSRI_SHA256_LEN]) {
  gnutls_datum_t pem = {NULL, 0};
  int rv = gnutls_load_file(path, &pem);
  if (rv < 0) {
    VSRI_ERROR("VSR-CERT", "%s: cannot read: %s", path, gnutls_strerror(rv));
    return VSR_ECONFIG;
  }
  int err = cert_pem_fingerprint(&pem, path, out);
  gnutls_free(pem.data);
  return err;
}

int vsri_cert_load(struct vsri_cert **out, const char *cert_file, const char *key_file) {
  if (!cert_file || !key_file) {
    VSRI_ERROR("VSR-CERT", "both a certificate and a key file are needed (got %s, %s)",
               cert_file ? cert_file : "no cert", key_file ? key_file : "no key");
    return VSR_ECONFIG;
  }
  struct vsri_cert *c = vsri_calloc(1, sizeof *c);
  if (!c) return VSR_ENOMEM;
  int err = 0;
  int rv = gnutls_load_file(cert_file, &c->cert_pem);
  if (rv < 0) {
    VSRI_ERROR("VSR-CERT", "%s: cannot read: %s", cert_file, gnutls_strerror(rv));
    err = VSR_ECONFIG;
    goto fail;
  }
  rv = gnutls_load_file(key_file, &c->key_pem);
  if (rv < 0) {
    VSRI_ERROR("VSR-CERT", "%s: cannot read: %s", key_file, gnutls_strerror(rv));
    err = VSR_ECONFIG;
    goto fail;
  }
  err = cert_pem_fingerprint(&c->cert_pem, cert_file, c->sha256);
  if (err) goto fail;
  rv = gnutls_certificate_allocate_credentials(&c->cred);
  if (rv < 0) {
    err = cert_tls_err("gnutls_certificate_allocate_credentials", rv);
    goto fail;
  }
  rv = gnutls_certificate_set_x509_key_mem(c->cred, &c->cert_pem, &c->key_pem,
                                           GNUTLS_X509_FMT_PEM);
  if (rv < 0) {
    VSRI_ERROR("VSR-CERT", "%s + %s: not a usable certificate/key pair: %s", cert_file,
               key_file, gnutls_strerror(rv));
    err = VSR_ECONFIG;
    goto fail;
  }
  *out = c;
  return 0;
fail:
  vsri_cert_free(c);
  return err;
}

void vsri_cert_free(struct vsri_cert *c) {
  if (!c) return;
  if (c->cred) gnutls_certificate_free_credentials(c->cred);
  if (c->key_pem.data) {
    gnutls_memset(c->key_pem.data, 0, c->key_pem.size);
    gnutls_free(c->key_pem.data);
  }
  gnutls_free(c->cert_pem.data);
  vsri_free(c);
}

/* Writes |d| to |dir|/|name| with |mode|, replacing any previous file. */
static int cert_write_file(const char *dir, const char *name, const gnutls_datum_t *d,
                           mode_t mode) {
  char path[4096];
  int n = snprintf(path, sizeof path, "%s/%s", dir, name);
  if (n < 0 || (size_t)n >= sizeof path) {
    VSRI_ERROR("VSR-CERT", "%s/%s: path too long", dir, name);
    return VSR_EIO;
  }
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) {
    VSRI_ERROR("VSR-CERT", "%s: cannot create: %s", path, strerror(errno));
    return VSR_EIO;
  }
  size_t off = 0;
  while (off < d->size) {
    ssize_t w = write(fd, d->data + off, d->size - off);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      VSRI_ERROR("VSR-CERT", "%s: write failed: %s", path, strerror(errno));
      close(fd);
      return VSR_EIO;
    }
    off += (size_t)w;
  }
  if (fchmod(fd, mode) < 0 || close(fd) < 0) {
    VSRI_ERROR("VSR-CERT", "%s: %s", path, strerror(errno));
    return VSR_EIO;
  }
  return 0;
}

int vsri_cert_write(const struct vsri_cert *c, const char *dir) {
  if (!c || !c->cert_pem.data || !c->key_pem.data) return VSR_EINVAL;
  if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
    VSRI_ERROR("VSR-CERT", "%s: cannot create directory: %s", dir, strerror(errno));
    return VSR_EIO;
  }
  int err = cert_write_file(dir, "cert.pem", &c->cert_pem, 0644);
  if (!err) err = cert_write_file(dir, "key.pem", &c->key_pem, 0600);
  return err;
}

void vsri_fingerprint_format(const uint8_t sha[VSRI_SHA256_LEN],
                             char out[VSRI_FINGERPRINT_TEXT_LEN]) {
  static const char hex[] = "0123456789ABCDEF";
  char *p = out;
  for (int i = 0; i < VSRI_SHA256_LEN; i++) {
    if (i) *p++ = ':';
    *p++ = hex[sha[i] >> 4];
    *p++ = hex[sha[i] & 15];
  }
  *p = '\0';
}

static int cert_hexval(char ch) {
  if (ch >= '0' && ch <= '9') return ch - '0';
  if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
  return -1;
}

int vsri_fingerprint_parse(const char *text, uint8_t out[VSRI_SHA256_LEN]) {
  if (!text) return VSR_EINVAL;
  if (strncasecmp(text, "sha256:", 7) == 0) text += 7;
  int n = 0, hi = -1;
  for (const char *p = text; *p; p++) {
    if (*p == ':' && hi < 0) continue;
    int v = cert_hexval(*p);
    if (v < 0 || n == VSRI_SHA256_LEN) return VSR_EINVAL;
    if (hi < 0) {
      hi = v;
    } else {
      out[n++] = (uint8_t)(hi << 4 | v);
      hi = -1;
    }
  }
  return n == VSRI_SHA256_LEN && hi < 0 ? 0 : VSR_EINVAL;
}
