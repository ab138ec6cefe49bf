/* libFuzzer target for the TLS data records vsrbus opens itself (src/transport/tls_record.c):
 * a fresh in-memory TLS 1.3 session per input (GnuTLS handshake, a pinned self-signed
 * certificate made once), then the receiving end is fed, in chunks, genuine records sealed by
 * its peer followed by the input's bytes (a forged record, a header announcing anything, a
 * record split anywhere, an alert, a handshake message). Every byte opened from the genuine
 * records must come out intact and in order, no call may write past the buffer it was given,
 * the engine must end in "more input" or a named error, and every pool buffer must come back.
 * Input: chunk-size byte, flags byte (bit 0: the client end receives; bits 1-2: genuine
 * records before the input; bits 3-5: read buffer size class), then the bytes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/cert.h"
#include "transport/tls_engine.h"
#include "vsrbus/error.h"
#include "vsrbus/vsrbus.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct vsr_pool *fz_pool;
static struct vsri_cert *fz_cert;
static gnutls_priority_t fz_prio;
static gnutls_certificate_credentials_t fz_ccred;
static struct vsri_tls_server fz_scfg;
static struct vsri_tls_client fz_ccfg;

static void fz_init(void) {
  if (fz_pool) return;
  struct vsr_pool_options po;
  vsr_pool_options_default(&po);
  for (int i = 0; i < VSR_POOL_CLASSES - 1; i++) po.prealloc[i] = 0;
  if (vsr_pool_new(&fz_pool, &po) != 0 || vsri_cert_generate(&fz_cert, "localhost", 1) != 0 ||
      gnutls_priority_init(&fz_prio, VSRI_TLS_PRIORITY, NULL) < 0 ||
      gnutls_certificate_allocate_credentials(&fz_ccred) < 0) {
    abort();
  }
  fz_scfg.cred = fz_cert->cred;
  fz_scfg.prio = fz_prio;
  fz_ccfg.cred = fz_ccred;
  fz_ccfg.pinned = true;
  memcpy(fz_ccfg.pin, fz_cert->sha256, 32);
}

/* Moves |from|'s output into |to| and runs its handshake step. */
static int fz_step(struct vsri_tls *from, struct vsri_tls *to) {
  struct vsr_msg *m = vsri_tls_take_out(from);
  vsri_tls_feed(to, m ? m->data : NULL, m ? m->size : 0);
  int rv = vsri_tls_handshake(to);
  vsr_msg_unref(m);
  return rv;
}

static bool fz_pair(struct vsri_tls *s, struct vsri_tls *c) {
  if (vsri_tls_server_init(s, &fz_scfg, fz_pool, "fz-client") != 0 ||
      vsri_tls_client_init(c, &fz_ccfg, fz_pool, "fz-server") != 0) {
    return false;
  }
  int cr = vsri_tls_handshake(c), sr = VSR_EAGAIN;
  for (int i = 0; i < 10 && (cr == VSR_EAGAIN || sr == VSR_EAGAIN); i++) {
    if (sr == VSR_EAGAIN) sr = fz_step(c, s);
    if (cr == VSR_EAGAIN) cr = fz_step(s, c);
  }
  struct vsr_msg *m = vsri_tls_take_out(c); /* nothing may be left unsent */
  vsr_msg_unref(m);
  return cr == 0 && sr == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 2) return 0;
  fz_init();
  size_t chunk = (size_t)data[0] * 67 + 1;
  bool client_reads = data[1] & 1;
  unsigned genuine = (data[1] >> 1) & 3;
  static const size_t caps[8] = {1, 7, 100, 1000, 16383, 16384, 16400, 70000};
  size_t cap = caps[(data[1] >> 3) & 7];
  data += 2;
  size -= 2;
  struct vsri_tls s, c;
  if (!fz_pair(&s, &c)) abort();
  struct vsri_tls *to = client_reads ? &c : &s, *from = client_reads ? &s : &c;
  /* Genuine records first: 1, 5000 and 20000 bytes (one, one, two records). */
  static uint8_t plain[26001], got[26001 + 70000];
  static const size_t lens[3] = {1, 5000, 20000};
  size_t want = 0;
  for (unsigned i = 0; i < genuine; i++) {
    for (size_t k = 0; k < lens[i]; k++) plain[want + k] = (uint8_t)(want + k + i);
    struct iovec v = {plain + want, lens[i]};
    if (vsri_tls_send(from, &v, 1, 0) != (ssize_t)lens[i]) abort();
    want += lens[i];
  }
  struct vsr_msg *out = vsri_tls_take_out(from);
  size_t glen = out ? out->size : 0;
  uint8_t *stream = malloc(glen + size + 1);
  if (!stream) abort();
  if (glen) memcpy(stream, out->data, glen);
  if (size) memcpy(stream + glen, data, size);
  vsr_msg_unref(out);
  size_t have = 0, total = glen + size;
  bool over = false;
  for (size_t at = 0; at < total && !over;) {
    size_t k = chunk < total - at ? chunk : total - at;
    vsri_tls_feed(to, stream + at, k);
    at += k;
    for (;;) {
      if (have + cap > sizeof got) abort();
      ssize_t r = vsri_tls_recv(to, got + have, cap);
      if (r == VSR_EAGAIN) break;
      if (r == VSR_ECLOSED || r == VSR_ETLS) {
        if (r == VSR_ETLS && !to->why[0]) abort(); /* an error always says why */
        over = true;
        break;
      }
      if (r <= 0 || (size_t)r > cap) abort();
      have += (size_t)r;
    }
  }
  /* The genuine bytes, intact, and nothing else (more would need a forged tag). */
  if (have != want) abort();
  if (memcmp(got, plain, have < want ? have : want) != 0) abort();
  free(stream);
  vsri_tls_free(&s);
  vsri_tls_free(&c);
  struct vsr_pool_stats st;
  vsr_pool_stats(fz_pool, &st);
  if (st.live != 0) abort();
  return 0;
}
