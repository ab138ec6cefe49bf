/* Certificates for QUIC (and later TCP-TLS): a PEM certificate + key loaded from files, or a
 * self-signed one generated in memory with GnuTLS, together with the SHA-256 fingerprint of the
 * certificate's DER encoding (what a client pins). */
#ifndef VSRI_CRYPTO_CERT_H
#define VSRI_CRYPTO_CERT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <gnutls/gnutls.h>

#define VSRI_SHA256_LEN 32
/* "AB:CD:..." : 32 pairs, 31 colons, NUL. */
#define VSRI_FINGERPRINT_TEXT_LEN 96

struct vsri_cert {
  gnutls_certificate_credentials_t cred; /* certificate + key, ready for a TLS server */
  uint8_t sha256[VSRI_SHA256_LEN];       /* of the leaf certificate's DER */
  gnutls_datum_t cert_pem;               /* leaf certificate, PEM */
  gnutls_datum_t key_pem;                /* private key, PEM (PKCS#8) */
  bool generated;                        /* made in memory rather than loaded */
};

/* Generates an ECDSA P-256 key and a self-signed certificate for |name| (also valid for
 * 127.0.0.1 and ::1), valid from one hour ago for |days| days. Returns 0, VSR_ENOMEM or
 * VSR_ETLS (the log line names the GnuTLS error). */
int vsri_cert_generate(struct vsri_cert **out, const char *name, unsigned days);

/* Loads a PEM certificate (chain) and its PEM private key. Returns 0, VSR_ENOMEM, VSR_ECONFIG
 * (file missing, unreadable or not a matching pair; logged with the path) or VSR_ETLS. */
int vsri_cert_load(struct vsri_cert **out, const char *cert_file, const char *key_file);

void vsri_cert_free(struct vsri_cert *c);

/* Writes DIR/cert.pem and DIR/key.pem (mode 0600; DIR is created if missing). Returns 0,
 * VSR_EINVAL (nothing to write) or VSR_EIO (logged with the path and errno text). */
int vsri_cert_write(const struct vsri_cert *c, const char *dir);

/* Formats a fingerprint as upper-case hex pairs joined by ':'. */
void vsri_fingerprint_format(const uint8_t sha[VSRI_SHA256_LEN],
                             char out[VSRI_FINGERPRINT_TEXT_LEN]);

/* Parses 64 hex digits, optionally separated by ':' (and an optional "sha256:" prefix).
 * Returns 0 or VSR_EINVAL. */
int vsri_fingerprint_parse(const char *text, uint8_t out[VSRI_SHA256_LEN]);

/* SHA-256 of the DER encoding of |der|. Returns 0 or VSR_ETLS. */
int vsri_fingerprint_der(const gnutls_datum_t *der, uint8_t out[VSRI_SHA256_LEN]);

/* Fingerprint of the first certificate in a PEM file. Returns 0, VSR_ECONFIG or VSR_ETLS. */
int vsri_fingerprint_pem_file(const char *path, uint8_t out[VSRI_SHA256_LEN]);

#endif
