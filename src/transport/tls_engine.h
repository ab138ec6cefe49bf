/* TLS record engine: TLS 1.3 over memory buffers (GnuTLS with custom push/pull functions).
 *
 * Sans-I/O: the owner feeds ciphertext it received (vsri_tls_feed), pulls plaintext out
 * (vsri_tls_recv), hands plaintext in (vsri_tls_send) and takes the ciphertext to write
 * (vsri_tls_take_out). The engine never touches a socket or a clock, so the TLS, WSS and
 * replica-TLS transports share it, and the unit tests run two engines against each other.
 *
 * Writes are batched: vsri_tls_send() packs the bytes of many frames into full records of up to
 * 16 KiB (small frames are gathered into one record; large frames are encrypted straight from
 * their buffer), never one record per frame. Ciphertext accumulates in a buffer borrowed from
 * the message pool.
 *
 * Records: GnuTLS runs the handshake; application-data records are then sealed and opened by
 * the engine itself with the session's traffic keys and GnuTLS's AEAD functions
 * (tls_record.c): one pass each way and nothing allocated per record. Every other record
 * (alerts, close_notify, tickets, KeyUpdate, anything malformed) goes back to GnuTLS. */
#ifndef VSRI_TLS_ENGINE_H
#define VSRI_TLS_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#include "vsrbus/msg.h"

/* TLS 1.3 only, AEAD ciphers only. */
#define VSRI_TLS_PRIORITY                                                                    \
  "NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+AES-128-GCM:+AES-256-GCM:+CHACHA20-POLY1305:" \
  "%DISABLE_TLS13_COMPAT_MODE"
#define VSRI_TLS_RECORD 16384u /* largest TLS plaintext record */
/* Plaintext encrypted per vsri_tls_send() call at most: bounds the ciphertext buffer. */
#define VSRI_TLS_SEND_MAX (64u * VSRI_TLS_RECORD)

/* Server settings, shared by every connection of a listener. */
struct vsri_tls_server {
  gnutls_certificate_credentials_t cred; /* certificate + key (struct vsri_cert) */
  gnutls_priority_t prio;                /* VSRI_TLS_PRIORITY, parsed once */
  bool verify_client;                    /* ask for a client certificate and check it against
                                            the trust set in |cred| (--tls-client-ca) */
  const char *client_ca;                 /* file name, for log lines */
  const char *alpn;                      /* required ALPN, or NULL: none negotiated */
};

/* Client settings. */
struct vsri_tls_client {
  gnutls_certificate_credentials_t cred; /* trust (ca_file), and a client certificate if any */
  const char *server_name;               /* SNI and name check; NULL: "localhost" */
  const char *ca_file;                   /* non-NULL: the chain must verify against it */
  bool pinned;                           /* the leaf's SHA-256 must equal |pin| */
  uint8_t pin[32];
  const char *alpn; /* offered ALPN, or NULL */
};

/* Records per write key before the engine has GnuTLS send a KeyUpdate: 2^24, under the
 * AES-GCM limit of RFC 8446 §5.5 (2^24.5 full records). */
#define VSRI_TLS_REKEY_AFTER (1ull << 24)

/* One direction of the records the engine seals or opens itself (tls_record.c). */
struct vsri_tls_dir {
  gnutls_aead_cipher_hd_t aead; /* NULL: GnuTLS handles this direction's records */
  uint8_t iv[12];
  uint64_t seq;                 /* the next record's sequence number */
};

struct vsri_tls {
  gnutls_session_t s;
  struct vsr_pool *pool;     /* ciphertext buffers; NULL: none (tests give one) */
  const uint8_t *in;         /* ciphertext fed and not yet pulled by GnuTLS (borrowed) */
  size_t in_len;
  struct vsr_msg *out;       /* ciphertext to write: out->size bytes; NULL when none */
  bool server;
  bool done;                 /* handshake finished */
  bool peer_closed;          /* close_notify received */
  bool out_failed;           /* no buffer for ciphertext: the session is unusable */
  const void *client_cfg;    /* struct vsri_tls_client * for the verify callback */
  const char *name;          /* peer name for log lines (the owner's buffer) */
  const char *verify_name;   /* client: name checked with ca_file instead of the settings' */
  const char *alpn_required; /* server: the ALPN a client must offer, or NULL */
  char why[200];             /* the last error, for the owner's log line */
  /* Records (tls_record.c). */
  struct vsri_tls_dir rd, wr;
  struct vsr_msg *rec;       /* a record split across feeds, being gathered (pool); or NULL */
  struct vsr_msg *plain;     /* opened bytes the caller had no room for yet (pool); or NULL */
  uint32_t plain_off;
  bool bye_sent;             /* close_notify queued: GnuTLS owns the write direction */
  bool gnutls_records;       /* tests: leave every record to GnuTLS */
  uint64_t rekey_after;      /* VSRI_TLS_REKEY_AFTER; tests lower it */
  uint64_t slow_records;     /* records handed to GnuTLS after the handshake */
  uint64_t key_updates;      /* KeyUpdates the engine had GnuTLS send */
};

/* Sets up |t| as a server or client session. |name| must outlive |t|. Returns 0 or VSR_ETLS
 * (why in t->why). vsri_tls_free() is safe after a failure. */
int vsri_tls_server_init(struct vsri_tls *t, const struct vsri_tls_server *cfg,
                         struct vsr_pool *pool, const char *name);
int vsri_tls_client_init(struct vsri_tls *t, const struct vsri_tls_client *cfg,
                         struct vsr_pool *pool, const char *name);
void vsri_tls_free(struct vsri_tls *t);

/* Makes |n| received ciphertext bytes available. They must stay valid until the next
 * vsri_tls_handshake() / vsri_tls_recv() returns VSR_EAGAIN: the engine consumes all of it. */
void vsri_tls_feed(struct vsri_tls *t, const uint8_t *p, size_t n);

/* Advances the handshake. Returns 0 when done, VSR_EAGAIN when it needs more input (and maybe
 * has output to write), VSR_EHANDSHAKE (why in t->why; an alert may be in the output). */
int vsri_tls_handshake(struct vsri_tls *t);

/* Decrypts into |buf|. Returns the bytes (> 0), VSR_EAGAIN (every fed byte is consumed),
 * VSR_ECLOSED (close_notify), VSR_ETLS (why in t->why). */
ssize_t vsri_tls_recv(struct vsri_tls *t, void *buf, size_t len);

/* Encrypts up to VSRI_TLS_SEND_MAX bytes from |iov| (skipping |skip| bytes of iov[0]) into
 * full records. Returns the plaintext bytes taken (>= 0) or VSR_ETLS / VSR_ENOMEM / VSR_EPOOL. */
ssize_t vsri_tls_send(struct vsri_tls *t, const struct iovec *iov, int iovcnt, size_t skip);

/* Queues close_notify. */
void vsri_tls_bye(struct vsri_tls *t);

/* Takes the ciphertext written so far (NULL when none): the caller writes out->data[0..size)
 * and unrefs it. The next output goes into a fresh buffer. */
struct vsr_msg *vsri_tls_take_out(struct vsri_tls *t);

/* The TLS exporter (RFC 8446 §7.5) of the session: |n| bytes for |label|, empty context.
 * Returns 0 or VSR_ETLS. */
int vsri_tls_exporter(struct vsri_tls *t, const char *label, uint8_t *out, size_t n);

/* ---- for tls_engine.c and tls_record.c only ---- */

/* Takes the keys from GnuTLS once the handshake is done (or again after GnuTLS handled a
 * record): from here application data is sealed and opened by the engine. A session it
 * cannot take (not TLS 1.3, another cipher) stays with GnuTLS. */
void vsri_tls_records_arm(struct vsri_tls *t);
/* Before close_notify: the write direction goes back to GnuTLS for good. */
void vsri_tls_records_bye(struct vsri_tls *t);
void vsri_tls_records_free(struct vsri_tls *t);
/* Seals |n| bytes into records in t->out. Returns 0 or VSR_ETLS / VSR_EPOOL. */
int vsri_tls_records_seal(struct vsri_tls *t, const uint8_t *p, size_t n);
/* vsri_tls_recv through the engine's records. */
ssize_t vsri_tls_records_open(struct vsri_tls *t, void *buf, size_t cap);
/* GnuTLS's own record layer, and the ciphertext buffer both write into. */
ssize_t vsri_tls_recv_gnutls(struct vsri_tls *t, void *buf, size_t len);
int vsri_tls_send_gnutls(struct vsri_tls *t, const uint8_t *p, size_t n);
bool vsri_tls_out_reserve(struct vsri_tls *t, size_t more);

/* "TLS1.3 AES-128-GCM" for log lines. */
const char *vsri_tls_describe(struct vsri_tls *t, char *buf, size_t len);

/* Whether the kernel offers kernel TLS (the "tls" TCP upper-layer protocol): probes a socket
 * once. Writes a one-line description of the path in use into |why|. */
bool vsri_tls_kernel_available(char *why, size_t len);

#endif
