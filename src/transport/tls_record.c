/* TLS 1.3 application-data records sealed and opened by vsrbus (tls_engine.h, "Records").
 *
 * GnuTLS runs the handshake. Once it is done, the engine takes the traffic keys and sequence
 * numbers (gnutls_record_get_state, the interface meant for record off-loading) and seals and
 * opens application_data records itself with GnuTLS's AEAD functions: plaintext is encrypted
 * from the frame buffers straight into the ciphertext buffer and decrypted from the received
 * bytes straight into the caller's buffer, one pass each way, and nothing is allocated per
 * record (GnuTLS's own record layer allocates a few buffers per record and copies twice).
 *
 * Any record that is not application data (an alert, close_notify, NewSessionTicket,
 * KeyUpdate, or anything malformed) goes back to GnuTLS: the sequence numbers are synced back
 * (gnutls_record_set_state), GnuTLS reads exactly that record and acts on it as it always does
 * (and answers it, a KeyUpdate say), and the engine takes the keys again afterwards. A sealed
 * record count reaching |rekey_after| makes GnuTLS send a KeyUpdate the same way. */
#include <stdio.h>
#include <string.h>

#include "transport/tls_engine.h"
#include "vsrbus/error.h"

#define REC_HDR 5u
#define REC_TAG 16u
#define REC_TYPE_DATA 23u
/* Largest ciphertext of a record (RFC 8446 §5.2): 2^14 + 256. */
#define REC_CIPHER_MAX (VSRI_TLS_RECORD + 256u)

/* Opened bytes of a record the caller had no room for land here first (rare: the transports
 * always offer at least VSRI_TLS_RECORD bytes). */
static _Thread_local uint8_t rec_stage[REC_CIPHER_MAX];

static uint64_t rec_be64(const uint8_t b[8]) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = v << 8 | b[i];
  return v;
}

static void rec_put_be64(uint8_t b[8], uint64_t v) {
  for (int i = 7; i >= 0; i--, v >>= 8) b[i] = (uint8_t)v;
}

/* The per-record nonce (RFC 8446 §5.3): the IV XOR the sequence number, right-aligned. */
static void rec_nonce(const struct vsri_tls_dir *d, uint8_t n[12]) {
  memcpy(n, d->iv, 12);
  for (int i = 0; i < 8; i++) n[4 + i] ^= (uint8_t)(d->seq >> (56 - 8 * i));
}

static void rec_dir_free(struct vsri_tls_dir *d) {
  if (d->aead) gnutls_aead_cipher_deinit(d->aead);
  d->aead = NULL;
}

/* GnuTLS's sequence numbers are ours again (before it reads or writes a record), and the
 * records are its own until vsri_tls_records_arm. */
static void rec_give_back(struct vsri_tls *t) {
  uint8_t seq[8];
  if (t->rd.aead) {
    rec_put_be64(seq, t->rd.seq);
    gnutls_record_set_state(t->s, 1, seq);
  }
  if (t->wr.aead) {
    rec_put_be64(seq, t->wr.seq);
    gnutls_record_set_state(t->s, 0, seq);
  }
  rec_dir_free(&t->rd);
  rec_dir_free(&t->wr);
}

static bool rec_dir_arm(struct vsri_tls *t, unsigned read, gnutls_cipher_algorithm_t cipher) {
  struct vsri_tls_dir *d = read ? &t->rd : &t->wr;
  gnutls_datum_t mac = {NULL, 0}, iv = {NULL, 0}, key = {NULL, 0};
  uint8_t seq[8];
  if (gnutls_record_get_state(t->s, read, &mac, &iv, &key, seq) < 0) return false;
  if (iv.size != 12 || !key.data) return false;
  memcpy(d->iv, iv.data, 12);
  d->seq = rec_be64(seq);
  return gnutls_aead_cipher_init(&d->aead, cipher, &key) == 0 || (d->aead = NULL, false);
}

void vsri_tls_records_arm(struct vsri_tls *t) {
  rec_give_back(t);
  if (t->gnutls_records || gnutls_protocol_get_version(t->s) != GNUTLS_TLS1_3) return;
  /* Nothing GnuTLS decrypted and still holds may be skipped. */
  if (gnutls_record_check_pending(t->s) > 0) return;
  gnutls_cipher_algorithm_t c = gnutls_cipher_get(t->s);
  if (c != GNUTLS_CIPHER_AES_128_GCM && c != GNUTLS_CIPHER_AES_256_GCM &&
      c != GNUTLS_CIPHER_CHACHA20_POLY1305) {
    return;
  }
  if (!rec_dir_arm(t, 1, c) || (!t->bye_sent && !rec_dir_arm(t, 0, c))) rec_give_back(t);
}

void vsri_tls_records_bye(struct vsri_tls *t) {
  /* close_notify is sealed by GnuTLS: the write direction is its own from here on. */
  if (t->wr.aead) {
    uint8_t seq[8];
    rec_put_be64(seq, t->wr.seq);
    gnutls_record_set_state(t->s, 0, seq);
    rec_dir_free(&t->wr);
  }
  t->bye_sent = true;
}

void vsri_tls_records_free(struct vsri_tls *t) {
  rec_dir_free(&t->rd);
  rec_dir_free(&t->wr);
  vsr_msg_unref(t->rec);
  t->rec = NULL;
  vsr_msg_unref(t->plain);
  t->plain = NULL;
}

/* ---- sealing ----------------------------------------------------------------------------- */

/* GnuTLS sends a KeyUpdate and changes the write key; the engine takes the new one. */
static int rec_rekey(struct vsri_tls *t) {
  rec_give_back(t);
  int rv = gnutls_session_key_update(t->s, 0);
  if (rv < 0) {
    snprintf(t->why, sizeof t->why, "key update: %s", gnutls_strerror(rv));
    return t->out_failed ? VSR_EPOOL : VSR_ETLS;
  }
  t->key_updates++;
  vsri_tls_records_arm(t); /* if it cannot, GnuTLS keeps the records: still correct */
  return 0;
}

int vsri_tls_records_seal(struct vsri_tls *t, const uint8_t *p, size_t n) {
  while (n > 0) {
    if (!t->wr.aead) return vsri_tls_send_gnutls(t, p, n);
    size_t k = n < VSRI_TLS_RECORD ? n : VSRI_TLS_RECORD, clen = k + 1 + REC_TAG;
    if (!vsri_tls_out_reserve(t, REC_HDR + clen)) {
      t->out_failed = true;
      return VSR_EPOOL;
    }
    uint8_t *h = t->out->data + t->out->size, nonce[12], type = REC_TYPE_DATA;
    h[0] = REC_TYPE_DATA;
    h[1] = h[2] = 3;
    h[3] = (uint8_t)(clen >> 8);
    h[4] = (uint8_t)clen;
    giovec_t aad = {h, REC_HDR}, in[2] = {{(void *)p, k}, {&type, 1}};
    rec_nonce(&t->wr, nonce);
    size_t out = clen;
    int rv = gnutls_aead_cipher_encryptv(t->wr.aead, nonce, sizeof nonce, &aad, 1, REC_TAG, in,
                                         2, h + REC_HDR, &out);
    if (rv < 0 || out != clen) {
      snprintf(t->why, sizeof t->why, "record seal: %s", rv < 0 ? gnutls_strerror(rv) : "size");
      return VSR_ETLS;
    }
    t->out->size += (uint32_t)(REC_HDR + clen);
    t->wr.seq++;
    p += k;
    n -= k;
    if (t->wr.seq >= t->rekey_after && (rv = rec_rekey(t)) < 0) return rv;
  }
  return 0;
}

/* ---- opening ----------------------------------------------------------------------------- */

/* Hands one whole record (|rec|, |len| bytes) to GnuTLS and lets it act on it. Returns what
 * vsri_tls_recv returns: plaintext bytes in |buf|, VSR_EAGAIN (a record with no data for the
 * caller: a ticket, a KeyUpdate), VSR_ECLOSED, VSR_ETLS. */
static ssize_t rec_to_gnutls(struct vsri_tls *t, const uint8_t *rec, size_t len, void *buf,
                             size_t cap) {
  const uint8_t *in = t->in;
  size_t in_len = t->in_len;
  rec_give_back(t);
  t->slow_records++;
  t->in = rec;
  t->in_len = len;
  ssize_t rv = vsri_tls_recv_gnutls(t, buf, cap);
  /* GnuTLS read exactly this record (it reads a record's header, then its body). */
  t->in = in;
  t->in_len = in_len;
  if (rv >= 0 || rv == VSR_EAGAIN) vsri_tls_records_arm(t);
  return rv;
}

/* Opens the whole record |rec| (header included, |len| bytes) into |buf|. */
static ssize_t rec_open(struct vsri_tls *t, const uint8_t *rec, size_t len, uint8_t *buf,
                        size_t cap) {
  size_t clen = len - REC_HDR;
  if (rec[0] != REC_TYPE_DATA || clen < 1 + REC_TAG) {
    return rec_to_gnutls(t, rec, len, buf, cap); /* GnuTLS names what is wrong */
  }
  uint8_t nonce[12], *dst = cap >= clen - REC_TAG ? buf : rec_stage;
  size_t plen = clen - REC_TAG;
  rec_nonce(&t->rd, nonce);
  int rv = gnutls_aead_cipher_decrypt(t->rd.aead, nonce, sizeof nonce, rec, REC_HDR, REC_TAG,
                                      rec + REC_HDR, clen, dst, &plen);
  if (rv < 0) {
    snprintf(t->why, sizeof t->why, "record: %s (a record that does not verify)",
             gnutls_strerror(rv));
    return VSR_ETLS;
  }
  while (plen > 0 && dst[plen - 1] == 0) plen--; /* padding */
  if (plen == 0 || dst[plen - 1] != REC_TYPE_DATA) {
    return rec_to_gnutls(t, rec, len, buf, cap); /* an alert or a handshake message */
  }
  t->rd.seq++;
  plen--;
  if (dst == buf) return (ssize_t)plen;
  size_t k = plen < cap ? plen : cap;
  memcpy(buf, dst, k);
  if (k < plen) { /* keep the rest for the next call */
    t->plain = vsr_pool_get(t->pool, (uint32_t)(plen - k));
    if (!t->plain) {
      snprintf(t->why, sizeof t->why, "no buffer for decrypted bytes");
      return VSR_ETLS;
    }
    memcpy(t->plain->data, dst + k, plen - k);
    t->plain->size = (uint32_t)(plen - k);
    t->plain_off = 0;
  }
  return (ssize_t)k;
}

/* Length of the record starting at |h| (at least REC_HDR bytes), header included. */
static size_t rec_len(const uint8_t *h) { return REC_HDR + ((size_t)h[3] << 8 | h[4]); }

static ssize_t rec_oversized(struct vsri_tls *t, size_t len) {
  snprintf(t->why, sizeof t->why, "record: a record of %zu bytes (TLS 1.3 allows %u)",
           len - REC_HDR, REC_CIPHER_MAX);
  return VSR_ETLS;
}

ssize_t vsri_tls_records_open(struct vsri_tls *t, void *buf, size_t cap) {
  if (t->plain) {
    size_t left = t->plain->size - t->plain_off, k = left < cap ? left : cap;
    memcpy(buf, t->plain->data + t->plain_off, k);
    t->plain_off += (uint32_t)k;
    if (k == left) {
      vsr_msg_unref(t->plain);
      t->plain = NULL;
    }
    return (ssize_t)k;
  }
  for (;;) {
    if (!t->rd.aead) return vsri_tls_recv_gnutls(t, buf, cap);
    if (t->rec) { /* a record split across feeds: gather it */
      struct vsr_msg *r = t->rec;
      bool head = r->size < REC_HDR; /* its header first, then the body it announces */
      size_t need = head ? REC_HDR : rec_len(r->data);
      if (need > REC_HDR + REC_CIPHER_MAX) return rec_oversized(t, need);
      size_t k = need - r->size < t->in_len ? need - r->size : t->in_len;
      memcpy(r->data + r->size, t->in, k);
      r->size += (uint32_t)k;
      t->in += k;
      t->in_len -= k;
      if (r->size < need) return VSR_EAGAIN; /* every fed byte is taken */
      if (head) continue;
      t->rec = NULL;
      ssize_t rv = rec_open(t, r->data, r->size, buf, cap);
      vsr_msg_unref(r);
      if (rv == VSR_EAGAIN) continue;
      return rv;
    }
    if (t->in_len == 0) return VSR_EAGAIN;
    if (t->in_len >= REC_HDR && rec_len(t->in) > REC_HDR + REC_CIPHER_MAX) {
      return rec_oversized(t, rec_len(t->in));
    }
    if (t->in_len >= REC_HDR && t->in_len >= rec_len(t->in)) {
      const uint8_t *r = t->in;
      size_t len = rec_len(r);
      t->in += len;
      t->in_len -= len;
      ssize_t rv = rec_open(t, r, len, buf, cap);
      if (rv == VSR_EAGAIN) continue;
      return rv;
    }
    /* A partial record: keep its bytes (the fed ones are the caller's only until EAGAIN). */
    t->rec = vsr_pool_get(t->pool, REC_HDR + REC_CIPHER_MAX);
    if (!t->rec) {
      snprintf(t->why, sizeof t->why, "no buffer for a partial record");
      return VSR_ETLS;
    }
    t->rec->size = 0;
  }
}
