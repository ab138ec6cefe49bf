/* TLS record engine (src/transport/tls_engine.c): two engines in memory, server and client.
 * Handshake with a pinned self-signed certificate; data both ways; many small frames packed
 * into few full records (never one record per frame); large frames split into 16 KiB records;
 * a wrong pin, a missing or untrusted client certificate, handshake garbage and close_notify
 * each end the way they must. The engine's own records (tls_record.c): taken over after the
 * handshake on both ends, read back by GnuTLS's record layer and the other way round, split at
 * any byte, read through small buffers, rekeyed by KeyUpdate, and a forged or oversized record
 * is refused with its reason. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "crypto/cert.h"
#include "transport/tls_engine.h"
#include "vsrbus/vsrbus.h"

#include "alloc_count.h"

struct t_env {
  struct vsr_pool *pool;
  struct vsri_cert *server_cert;
  struct vsri_cert *client_cert;
  gnutls_priority_t prio;
  gnutls_certificate_credentials_t client_cred;
  struct vsri_tls_server scfg;
  struct vsri_tls_client ccfg;
  struct vsri_tls s, c;
};

static int t_setup(void **state) {
  struct t_env *e = calloc(1, sizeof *e);
  struct vsr_pool_options po;
  vsr_pool_options_default(&po);
  for (int i = 0; i < VSR_POOL_CLASSES - 1; i++) po.prealloc[i] = 0;
  if (!e || vsr_pool_new(&e->pool, &po) != 0) return -1;
  if (vsri_cert_generate(&e->server_cert, "localhost", 1) != 0) return -1;
  if (vsri_cert_generate(&e->client_cert, "client", 1) != 0) return -1;
  if (gnutls_priority_init(&e->prio, VSRI_TLS_PRIORITY, NULL) < 0) return -1;
  if (gnutls_certificate_allocate_credentials(&e->client_cred) < 0) return -1;
  e->scfg.cred = e->server_cert->cred;
  e->scfg.prio = e->prio;
  e->ccfg.cred = e->client_cred;
  e->ccfg.pinned = true;
  memcpy(e->ccfg.pin, e->server_cert->sha256, 32);
  *state = e;
  return 0;
}

static int t_teardown(void **state) {
  struct t_env *e = *state;
  vsri_tls_free(&e->s);
  vsri_tls_free(&e->c);
  gnutls_certificate_free_credentials(e->client_cred);
  gnutls_priority_deinit(e->prio);
  vsri_cert_free(e->server_cert);
  vsri_cert_free(e->client_cert);
  struct vsr_pool_stats st;
  vsr_pool_stats(e->pool, &st);
  assert_int_equal(st.live, 0); /* every ciphertext buffer went back */
  vsr_pool_del(e->pool);
  free(e);
  return 0;
}

/* Moves |from|'s ciphertext into |to|. Returns the bytes moved. The buffer is kept in *held
 * until the next call (the engine reads fed bytes lazily). */
static size_t t_move(struct vsri_tls *from, struct vsri_tls *to, struct vsr_msg **held) {
  vsr_msg_unref(*held);
  *held = vsri_tls_take_out(from);
  if (!*held) {
    vsri_tls_feed(to, NULL, 0);
    return 0;
  }
  vsri_tls_feed(to, (*held)->data, (*held)->size);
  return (*held)->size;
}

/* Runs both handshakes to completion or failure. Returns the server's result; *crv gets the
 * client's. */
static int t_handshake(struct t_env *e, int *crv) {
  struct vsr_msg *h1 = NULL, *h2 = NULL;
  int src = VSR_EAGAIN, cr = VSR_EAGAIN;
  for (int i = 0; i < 20 && (src == VSR_EAGAIN || cr == VSR_EAGAIN); i++) {
    if (cr == VSR_EAGAIN) cr = vsri_tls_handshake(&e->c);
    t_move(&e->c, &e->s, &h1);
    if (src == VSR_EAGAIN) src = vsri_tls_handshake(&e->s);
    t_move(&e->s, &e->c, &h2);
    if (cr == VSR_EAGAIN) cr = vsri_tls_handshake(&e->c);
  }
  vsr_msg_unref(h1);
  vsr_msg_unref(h2);
  *crv = cr;
  return src;
}

static void t_init_pair(struct t_env *e) {
  assert_int_equal(vsri_tls_server_init(&e->s, &e->scfg, e->pool, "client-peer"), 0);
  assert_int_equal(vsri_tls_client_init(&e->c, &e->ccfg, e->pool, "server-peer"), 0);
}

/* A pair with both handshakes done. */
static void t_connected(struct t_env *e) {
  t_init_pair(e);
  int crv;
  assert_int_equal(t_handshake(e, &crv), 0);
  assert_int_equal(crv, 0);
}

/* Counts the TLS records in |m| and the largest record's length. */
static unsigned t_records(const struct vsr_msg *m, size_t *largest) {
  unsigned n = 0;
  *largest = 0;
  for (size_t off = 0; off + 5 <= m->size; n++) {
    size_t len = (size_t)m->data[off + 3] << 8 | m->data[off + 4];
    assert_int_equal(m->data[off], 23); /* application_data (TLS 1.3 outer type) */
    if (len > *largest) *largest = len;
    off += 5 + len;
    assert_true(off <= m->size);
  }
  return n;
}

/* Reads every plaintext byte the engine can produce from its fed input into |buf|. */
static size_t t_drain(struct vsri_tls *t, uint8_t *buf, size_t cap) {
  size_t got = 0;
  while (got < cap) {
    ssize_t n = vsri_tls_recv(t, buf + got, cap - got);
    if (n == VSR_EAGAIN) return got;
    if (n <= 0) fail_msg("recv %zd: %s", n, t->why);
    got += (size_t)n;
  }
  return got;
}

static void handshake_and_data(void **state) {
  struct t_env *e = *state;
  t_connected(e); /* both ends: 0 */
  char d[64];
  assert_non_null(strstr(vsri_tls_describe(&e->s, d, sizeof d), "TLS1.3"));
  uint8_t msg[300];
  for (size_t i = 0; i < sizeof msg; i++) msg[i] = (uint8_t)i;
  struct iovec iov = {msg, sizeof msg};
  assert_int_equal(vsri_tls_send(&e->c, &iov, 1, 0), (ssize_t)sizeof msg);
  struct vsr_msg *held = NULL;
  assert_true(t_move(&e->c, &e->s, &held) > sizeof msg);
  uint8_t got[1024];
  assert_int_equal(t_drain(&e->s, got, sizeof got), sizeof msg);
  assert_memory_equal(got, msg, sizeof msg);
  /* And back, skipping the first 100 bytes of the iovec (a partly written frame). */
  assert_int_equal(vsri_tls_send(&e->s, &iov, 1, 100), 200);
  assert_true(t_move(&e->s, &e->c, &held) > 200);
  assert_int_equal(t_drain(&e->c, got, sizeof got), 200);
  assert_memory_equal(got, msg + 100, 200);
  vsr_msg_unref(held);
}

/* 100 frames of 300 bytes: 30,000 bytes go out in 2 records, not 100. */
static void small_frames_share_records(void **state) {
  struct t_env *e = *state;
  t_connected(e);
  static uint8_t frames[100][300];
  struct iovec iov[100];
  for (int i = 0; i < 100; i++) {
    memset(frames[i], i, sizeof frames[i]);
    iov[i].iov_base = frames[i];
    iov[i].iov_len = sizeof frames[i];
  }
  assert_int_equal(vsri_tls_send(&e->s, iov, 100, 0), 30000);
  struct vsr_msg *out = vsri_tls_take_out(&e->s);
  assert_non_null(out);
  size_t largest;
  assert_int_equal(t_records(out, &largest), 2);
  assert_true(largest >= VSRI_TLS_RECORD && largest <= VSRI_TLS_RECORD + 256);
  vsri_tls_feed(&e->c, out->data, out->size);
  static uint8_t got[30000];
  assert_int_equal(t_drain(&e->c, got, sizeof got), 30000);
  for (int i = 0; i < 100; i++) assert_memory_equal(got + i * 300, frames[i], 300);
  vsr_msg_unref(out);
}

/* A 1 MiB frame: one call takes VSRI_TLS_SEND_MAX bytes as full records; the caller loops. */
static void large_frame_in_full_records(void **state) {
  struct t_env *e = *state;
  t_connected(e);
  size_t size = 1u << 20, off = 0, recvd = 0;
  uint8_t *big = malloc(size), *got = malloc(size);
  assert_non_null(big);
  assert_non_null(got);
  for (size_t i = 0; i < size; i++) big[i] = (uint8_t)(i * 7);
  unsigned calls = 0;
  while (off < size) {
    struct iovec iov = {big, size};
    ssize_t n = vsri_tls_send(&e->c, &iov, 1, off);
    assert_int_equal(n, VSRI_TLS_SEND_MAX);
    off += (size_t)n;
    calls++;
    struct vsr_msg *out = vsri_tls_take_out(&e->c);
    size_t largest;
    assert_int_equal(t_records(out, &largest), VSRI_TLS_SEND_MAX / VSRI_TLS_RECORD);
    vsri_tls_feed(&e->s, out->data, out->size);
    recvd += t_drain(&e->s, got + recvd, size - recvd);
    vsr_msg_unref(out);
  }
  assert_int_equal(calls, size / VSRI_TLS_SEND_MAX);
  assert_int_equal(recvd, size);
  assert_memory_equal(got, big, size);
  free(big);
  free(got);
}

static void wrong_pin_fails(void **state) {
  struct t_env *e = *state;
  e->ccfg.pin[0] ^= 1;
  t_init_pair(e);
  int crv;
  t_handshake(e, &crv);
  assert_int_equal(crv, VSR_EHANDSHAKE);
  assert_non_null(strstr(e->c.why, "is not the pinned"));
}

static void client_cert_required(void **state) {
  struct t_env *e = *state;
  e->scfg.verify_client = true;
  /* Trust the client's self-signed certificate on the server. */
  assert_true(gnutls_certificate_set_x509_trust_mem(e->server_cert->cred,
                                                    &e->client_cert->cert_pem,
                                                    GNUTLS_X509_FMT_PEM) > 0);
  /* No client certificate: refused. */
  t_init_pair(e);
  int crv;
  int srv = t_handshake(e, &crv);
  assert_int_equal(srv, VSR_EHANDSHAKE);
  assert_true(strlen(e->s.why) > 0);
  vsri_tls_free(&e->s);
  vsri_tls_free(&e->c);
  /* With the trusted certificate: admitted. */
  assert_int_equal(gnutls_certificate_set_x509_key_mem(e->client_cred, &e->client_cert->cert_pem,
                                                       &e->client_cert->key_pem,
                                                       GNUTLS_X509_FMT_PEM),
                   0);
  t_init_pair(e);
  assert_int_equal(t_handshake(e, &crv), 0);
  assert_int_equal(crv, 0);
}

static void untrusted_client_cert_refused(void **state) {
  struct t_env *e = *state;
  e->scfg.verify_client = true;
  struct vsri_cert *other;
  assert_int_equal(vsri_cert_generate(&other, "other", 1), 0);
  assert_true(gnutls_certificate_set_x509_trust_mem(e->server_cert->cred, &other->cert_pem,
                                                    GNUTLS_X509_FMT_PEM) > 0);
  assert_int_equal(gnutls_certificate_set_x509_key_mem(e->client_cred, &e->client_cert->cert_pem,
                                                       &e->client_cert->key_pem,
                                                       GNUTLS_X509_FMT_PEM),
                   0);
  t_init_pair(e);
  int crv;
  assert_int_equal(t_handshake(e, &crv), VSR_EHANDSHAKE);
  if (!strstr(e->s.why, "client certificate not trusted")) fail_msg("%s", e->s.why);
  vsri_cert_free(other);
}

/* ---- the engine's own records (tls_record.c) ------------------------------------------ */

/* |n| bytes of a pattern from |seed|. */
static void t_fill(uint8_t *p, size_t n, unsigned seed) {
  for (size_t i = 0; i < n; i++) p[i] = (uint8_t)(seed + i * 31 + (i >> 9));
}

/* Sends |n| bytes from |from| to |to| (fed in chunks of |chunk| bytes, 0: all at once) and
 * checks every byte arrives intact. */
static void t_flow(struct vsri_tls *from, struct vsri_tls *to, size_t n, size_t chunk,
                   size_t cap, unsigned seed) {
  uint8_t *msg = malloc(n), *got = malloc(n);
  assert_non_null(msg);
  assert_non_null(got);
  t_fill(msg, n, seed);
  size_t off = 0, recvd = 0;
  while (off < n) {
    struct iovec iov = {msg, n};
    ssize_t k = vsri_tls_send(from, &iov, 1, off);
    assert_true(k > 0);
    off += (size_t)k;
    struct vsr_msg *out = vsri_tls_take_out(from);
    assert_non_null(out);
    for (size_t at = 0; at < out->size;) {
      size_t len = chunk && chunk < out->size - at ? chunk : out->size - at;
      vsri_tls_feed(to, out->data + at, len);
      at += len;
      for (;;) {
        size_t room = n - recvd < cap ? n - recvd : cap;
        ssize_t r = room ? vsri_tls_recv(to, got + recvd, room) : VSR_EAGAIN;
        if (r == VSR_EAGAIN && room == 0) { /* every byte is in: the rest must be empty */
          uint8_t spare[16];
          r = vsri_tls_recv(to, spare, sizeof spare);
          assert_int_equal(r, VSR_EAGAIN);
        }
        if (r == VSR_EAGAIN) break;
        if (r <= 0) fail_msg("recv %zd: %s", r, to->why);
        recvd += (size_t)r;
      }
    }
    vsr_msg_unref(out);
  }
  assert_int_equal(recvd, n);
  assert_memory_equal(got, msg, n);
  free(msg);
  free(got);
}

static void records_are_the_engines_after_handshake(void **state) {
  struct t_env *e = *state;
  t_connected(e);
  assert_non_null(e->s.rd.aead);
  assert_non_null(e->s.wr.aead);
  assert_non_null(e->c.rd.aead);
  assert_non_null(e->c.wr.aead);
  t_flow(&e->c, &e->s, 300000, 0, 1u << 20, 1);
  t_flow(&e->s, &e->c, 300000, 0, 1u << 20, 2);
  assert_int_equal(e->s.slow_records, 0);
  assert_int_equal(e->c.slow_records, 0);
  /* The sequence numbers went back to GnuTLS for close_notify: it still verifies. */
  vsri_tls_bye(&e->c);
  struct vsr_msg *held = NULL;
  assert_true(t_move(&e->c, &e->s, &held) > 0);
  uint8_t buf[64];
  assert_int_equal(vsri_tls_recv(&e->s, buf, sizeof buf), VSR_ECLOSED);
  assert_int_equal(e->s.slow_records, 1);
  vsr_msg_unref(held);
}

/* GnuTLS's record layer on one end, the engine's on the other: the same records. */
static void records_interoperate_with_gnutls(void **state) {
  struct t_env *e = *state;
  t_init_pair(e);
  e->s.gnutls_records = true;
  int crv;
  assert_int_equal(t_handshake(e, &crv), 0);
  assert_null(e->s.rd.aead);
  assert_non_null(e->c.rd.aead);
  t_flow(&e->c, &e->s, 200000, 0, 1u << 20, 3);
  t_flow(&e->s, &e->c, 200000, 0, 1u << 20, 4);
  t_flow(&e->c, &e->s, 5000, 0, 1u << 20, 5);
  t_flow(&e->s, &e->c, 5000, 0, 1u << 20, 6);
}

/* Ciphertext fed 1, 7 and 4099 bytes at a time, read through 1000-byte buffers. */
static void records_split_anywhere_and_small_reads(void **state) {
  struct t_env *e = *state;
  t_connected(e);
  t_flow(&e->c, &e->s, 40000, 1, 1u << 20, 7);
  t_flow(&e->c, &e->s, 70000, 7, 1000, 8);
  t_flow(&e->s, &e->c, 100000, 4099, 1000, 9);
  t_flow(&e->s, &e->c, 100, 1, 10, 10);
  assert_int_equal(e->s.slow_records + e->c.slow_records, 0);
}

/* After |rekey_after| records the sender has GnuTLS send a KeyUpdate; the receiver's GnuTLS
 * takes it and the engine goes on with the new keys, both ways. */
static void records_rekey_with_key_update(void **state) {
  struct t_env *e = *state;
  t_connected(e);
  e->c.rekey_after = 3;
  t_flow(&e->c, &e->s, 10 * VSRI_TLS_RECORD, 0, 1u << 20, 11);
  assert_true(e->c.key_updates >= 2);
  assert_true(e->s.slow_records >= 2); /* each KeyUpdate went through GnuTLS */
  assert_non_null(e->s.rd.aead);       /* and the engine took the new keys */
  assert_non_null(e->c.wr.aead);
  t_flow(&e->s, &e->c, 5 * VSRI_TLS_RECORD, 0, 1u << 20, 12);
  t_flow(&e->c, &e->s, 1000, 0, 1u << 20, 13);
}

static void records_forged_or_oversized_refused(void **state) {
  struct t_env *e = *state;
  t_connected(e);
  uint8_t msg[2000], buf[4096];
  t_fill(msg, sizeof msg, 14);
  struct iovec iov = {msg, sizeof msg};
  assert_int_equal(vsri_tls_send(&e->c, &iov, 1, 0), (ssize_t)sizeof msg);
  struct vsr_msg *out = vsri_tls_take_out(&e->c);
  out->data[100] ^= 1; /* one bit of the ciphertext */
  vsri_tls_feed(&e->s, out->data, out->size);
  assert_int_equal(vsri_tls_recv(&e->s, buf, sizeof buf), VSR_ETLS);
  if (!strstr(e->s.why, "does not verify")) fail_msg("%s", e->s.why);
  vsr_msg_unref(out);
  /* A header announcing more than 2^14 + 256 bytes. */
  static const uint8_t big[5] = {23, 3, 3, 0x41, 0x01};
  vsri_tls_feed(&e->c, big, sizeof big);
  assert_int_equal(vsri_tls_recv(&e->c, buf, sizeof buf), VSR_ETLS);
  if (!strstr(e->c.why, "TLS 1.3 allows")) fail_msg("%s", e->c.why);
}

/* 64 full records each way: heap allocations in the whole process while they are sealed and
 * opened (GnuTLS included). */
static uint64_t t_allocs_per_records(struct t_env *e) {
  static uint8_t msg[64 * VSRI_TLS_RECORD], got[64 * VSRI_TLS_RECORD];
  uint64_t before = 0;
  for (int round = 0; round < 2; round++) { /* the first warms the pool */
    before = vsrt_allocs();
    for (int dir = 0; dir < 2; dir++) {
      struct vsri_tls *from = dir ? &e->s : &e->c, *to = dir ? &e->c : &e->s;
      size_t off = 0, recvd = 0;
      while (off < sizeof msg) {
        struct iovec iov = {msg, sizeof msg};
        ssize_t k = vsri_tls_send(from, &iov, 1, off);
        assert_true(k > 0);
        off += (size_t)k;
        struct vsr_msg *out = vsri_tls_take_out(from);
        vsri_tls_feed(to, out->data, out->size);
        ssize_t r = 0;
        while (recvd < sizeof got && (r = vsri_tls_recv(to, got + recvd, sizeof got - recvd)) > 0) {
          recvd += (size_t)r;
        }
        if (r < 0 && r != VSR_EAGAIN) fail_msg("recv %zd: %s", r, to->why);
        vsr_msg_unref(out);
      }
      assert_int_equal(recvd, sizeof msg);
    }
  }
  return vsrt_allocs() - before;
}

/* The engine's records allocate nothing per record; GnuTLS's record layer does (which is why
 * the engine has its own): the counter sees it, so the first figure means something. */
static void records_allocate_nothing(void **state) {
  if (!VSRT_COUNT_ALLOCS) skip(); /* a sanitizer's allocator: nothing to count with */
  struct t_env *e = *state;
  t_connected(e);
  uint64_t ours = t_allocs_per_records(e);
  vsri_tls_free(&e->s);
  vsri_tls_free(&e->c);
  t_init_pair(e);
  e->s.gnutls_records = e->c.gnutls_records = true;
  int crv;
  assert_int_equal(t_handshake(e, &crv), 0);
  uint64_t gnutls = t_allocs_per_records(e);
  print_message("heap allocations for 128 records of 16 KiB: engine %llu, GnuTLS %llu\n",
                (unsigned long long)ours, (unsigned long long)gnutls);
  assert_int_equal(ours, 0);
  assert_true(gnutls >= 128);
}

static void garbage_fails_handshake(void **state) {
  struct t_env *e = *state;
  t_init_pair(e);
  static const char junk[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  vsri_tls_feed(&e->s, (const uint8_t *)junk, sizeof junk - 1);
  assert_int_equal(vsri_tls_handshake(&e->s), VSR_EHANDSHAKE);
  assert_non_null(strstr(e->s.why, "handshake"));
}

static void close_notify_ends_reads(void **state) {
  struct t_env *e = *state;
  t_connected(e);
  vsri_tls_bye(&e->c);
  struct vsr_msg *held = NULL;
  assert_true(t_move(&e->c, &e->s, &held) > 0);
  uint8_t buf[64];
  assert_int_equal(vsri_tls_recv(&e->s, buf, sizeof buf), VSR_ECLOSED);
  vsr_msg_unref(held);
}

static void kernel_probe_says_which_path(void **state) {
  (void)state;
  char why[200];
  bool on = vsri_tls_kernel_available(why, sizeof why);
  assert_non_null(strstr(why, "kernel TLS"));
  assert_non_null(strstr(why, on ? "offers" : "unavailable"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(handshake_and_data, t_setup, t_teardown),
      cmocka_unit_test_setup_teardown(small_frames_share_records, t_setup, t_teardown),
      cmocka_unit_test_setup_teardown(large_frame_in_full_records, t_setup, t_teardown),
      cmocka_unit_test_setup_teardown(wrong_pin_fails, t_setup, t_teardown),
      cmocka_unit_test_setup_teardown(client_cert_required, t_setup, t_teardown),
      cmocka_unit_test_setup_teardown(untrusted_client_cert_refused, t_setup, t_teardown),
      cmocka_unit_test_setup_teardown(garbage_fails_handshake, t_setup, t_teardown),
      cmocka_unit_test_setup_teardown(close_notify_ends_reads, t_setup, t_teardown),
      cmocka_unit_test_setup_teardown(kernel_probe_says_which_path, t_setup, t_teardown),
      cmocka_unit_test_setup_teardown(records_are_the_engines_after_handshake, t_setup, t_teardown),
      cmocka_unit_test_setup_teardown(records_interoperate_with_gnutls, t_setup, t_teardown),
      cmocka_unit_test_setup_teardown(records_split_anywhere_and_small_reads, t_setup, t_teardown),
      cmocka_unit_test_setup_teardown(records_rekey_with_key_update, t_setup, t_teardown),
      cmocka_unit_test_setup_teardown(records_forged_or_oversized_refused, t_setup, t_teardown),
      cmocka_unit_test_setup_teardown(records_allocate_nothing, t_setup, t_teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
