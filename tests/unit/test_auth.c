/* Replica handshake (src/bus/auth.c): the accept path between a dialer and an acceptor state
 * machine, every reject of spec/bus.md §5 with the status the reference would put on the
 * wire, replay / reflection / tampering, the rotation window, and known-answer vectors
 * computed with b3sum. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "bus/auth.h"
#include "vsrbus/bus.h"
#include "vsrbus/error.h"

#define RC 128 /* reserved_command */
#define OFF_NONCE (RC + VSRI_AUTH_NONCE_OFFSET)
#define OFF_MAC (RC + VSRI_AUTH_MAC_OFFSET)
#define OFF_STATUS (RC + VSRI_AUTH_STATUS_OFFSET)

static const char SECRET_A[] = "0123456789abcdef0123456789abcdef"; /* the reference's tests */
static const char SECRET_B[] = "fedcba9876543210fedcba9876543210";
static const char SECRET_X[] = "ffffffffffffffffffffffffffffffff";
static const char CLUSTER[] = "iggy-cluster";

/* One node: its config (keys) for a 3-replica cluster. */
static struct vsri_auth_cfg node(uint8_t id, const char *secret, const char *prev) {
  struct vsri_auth_cfg c;
  int rc = vsri_auth_cfg_init(&c, CLUSTER, id, 3, secret, secret ? strlen(secret) : 0, prev,
                              prev ? strlen(prev) : 0);
  assert_int_equal(rc, 0);
  return c;
}

static void fill(uint8_t *p, uint8_t v) { memset(p, v, VSRI_AUTH_NONCE_LEN); }

static int u8_at(const uint8_t *f, int off) { return f[off]; }

static void assert_zero(const uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (p[i]) fail_msg("byte %zu is 0x%02x, want 0", i, p[i]);
}

/* Checks the generic part of a handshake frame: size 256, checksum 0, our cluster and id. */
static void assert_frame(const uint8_t *f, uint8_t command, const struct vsri_auth_cfg *c) {
  assert_zero(f, 32); /* checksum, checksum_body: handshake frames are not sealed */
  vsr_u128 id = vsri_auth_cluster_id(CLUSTER);
  for (int i = 0; i < 8; i++) {
    assert_int_equal(f[32 + i], (uint8_t)(id.lo >> (8 * i)));
    assert_int_equal(f[40 + i], (uint8_t)(id.hi >> (8 * i)));
  }
  assert_int_equal(f[48], 0x00);
  assert_int_equal(f[49], 0x01);
  assert_zero(f + 50, 10); /* size high bytes, view, release */
  assert_int_equal(u8_at(f, 60), command);
  assert_int_equal(u8_at(f, 61), c->self_id);
  assert_zero(f + 62, 66); /* reserved_frame */
}

/* Runs Hello and Challenge between dialer |d| (towards |peer|) and acceptor |a|. */
struct pair {
  struct vsri_auth_hs dh, ah;
  uint8_t hello[VSR_HEADER_SIZE], challenge[VSR_HEADER_SIZE], finish[VSR_HEADER_SIZE];
  uint8_t rand_d[32], rand_a[32];
};

static void pair_start(struct pair *p, const struct vsri_auth_cfg *d, const struct vsri_auth_cfg *a,
                       uint8_t nd, uint8_t na) {
  memset(p, 0, sizeof *p);
  fill(p->rand_d, nd);
  fill(p->rand_a, na);
  vsri_auth_dialer_init(&p->dh, d, a->self_id, NULL);
  vsri_auth_acceptor_init(&p->ah, a, NULL);
  assert_int_equal(vsri_auth_dialer_hello(&p->dh, p->rand_d, p->hello), 0);
}

static void pair_challenge(struct pair *p) {
  bool send = false;
  assert_int_equal(vsri_auth_acceptor_on_hello(&p->ah, p->hello, p->rand_a, p->challenge, &send),
                   0);
  assert_true(send);
}

/* ---- accept paths -------------------------------------------------------------------- */

static void test_accept_path_both_sides_connect(void **state) {
  (void)state;
  struct vsri_auth_cfg c0 = node(0, SECRET_A, NULL), c2 = node(2, SECRET_A, NULL);
  struct pair p;
  pair_start(&p, &c0, &c2, 0x11, 0x22);
  assert_frame(p.hello, VSR_CMD_REPLICA_HELLO, &c0);
  for (int i = 0; i < 32; i++) assert_int_equal(p.hello[OFF_NONCE + i], 0x11);
  assert_zero(p.hello + OFF_MAC, 128 - 32);
  assert_false(vsri_auth_done(&p.dh));

  pair_challenge(&p);
  assert_frame(p.challenge, VSR_CMD_REPLICA_CHALLENGE, &c2);
  for (int i = 0; i < 32; i++) assert_int_equal(p.challenge[OFF_NONCE + i], 0x22);
  assert_int_equal(p.challenge[OFF_STATUS], VSRI_AUTH_OK);
  assert_zero(p.challenge + OFF_STATUS, 128 - 64);
  assert_int_equal(p.ah.peer_id, 0);

  assert_int_equal(vsri_auth_dialer_on_challenge(&p.dh, p.challenge, p.finish), 0);
  assert_true(vsri_auth_done(&p.dh));
  assert_frame(p.finish, VSR_CMD_REPLICA_FINISH, &c0);
  assert_zero(p.finish + RC, 32);
  assert_zero(p.finish + OFF_STATUS, 128 - 64);

  assert_int_equal(vsri_auth_acceptor_on_finish(&p.ah, p.finish), 0);
  assert_true(vsri_auth_done(&p.ah));
  /* Each side names the other: the dialer the id it dialed, the acceptor the announced id. */
  assert_int_equal(p.dh.peer_id, c2.self_id);
  assert_int_equal(p.ah.peer_id, c0.self_id);
  assert_int_equal(p.dh.status, VSRI_AUTH_OK);
  assert_int_equal(p.ah.status, VSRI_AUTH_OK);
}

static void test_accept_path_over_tls_binds_the_exporter(void **state) {
  (void)state;
  struct vsri_auth_cfg c1 = node(1, SECRET_A, NULL), c2 = node(2, SECRET_A, NULL);
  uint8_t ex1[32], ex2[32], rd[32], ra[32], hello[256], ch[256], fin[256];
  struct vsri_auth_hs d, a;
  bool send;
  memset(ex1, 0xaa, 32);
  memset(ex2, 0xbb, 32);
  fill(rd, 1);
  fill(ra, 2);
  /* Same session on both ends: connected. */
  vsri_auth_dialer_init(&d, &c1, 2, ex1);
  vsri_auth_acceptor_init(&a, &c2, ex1);
  assert_int_equal(vsri_auth_dialer_hello(&d, rd, hello), 0);
  assert_int_equal(vsri_auth_acceptor_on_hello(&a, hello, ra, ch, &send), 0);
  assert_int_equal(vsri_auth_dialer_on_challenge(&d, ch, fin), 0);
  assert_int_equal(vsri_auth_acceptor_on_finish(&a, fin), 0);
  /* A relay terminating two TLS sessions: the exporters differ and the dialer refuses. */
  vsri_auth_dialer_init(&d, &c1, 2, ex1);
  vsri_auth_acceptor_init(&a, &c2, ex2);
  assert_int_equal(vsri_auth_dialer_hello(&d, rd, hello), 0);
  assert_int_equal(vsri_auth_acceptor_on_hello(&a, hello, ra, ch, &send), 0);
  assert_int_equal(vsri_auth_dialer_on_challenge(&d, ch, fin), VSR_EAUTH);
  /* TLS with an all-zero exporter is still not plaintext: the mode byte separates them. */
  memset(ex2, 0, 32);
  vsri_auth_dialer_init(&d, &c1, 2, ex2);
  vsri_auth_acceptor_init(&a, &c2, NULL);
  assert_int_equal(vsri_auth_dialer_hello(&d, rd, hello), 0);
  assert_int_equal(vsri_auth_acceptor_on_hello(&a, hello, ra, ch, &send), 0);
  assert_int_equal(vsri_auth_dialer_on_challenge(&d, ch, fin), VSR_EAUTH);
}

static void test_legacy_mode_sends_only_the_hello(void **state) {
  (void)state;
  struct vsri_auth_cfg c0 = node(0, NULL, NULL), c1 = node(1, NULL, NULL);
  struct vsri_auth_hs d, a;
  uint8_t zero[32] = {0}, hello[256], out[256];
  bool send = true;
  vsri_auth_dialer_init(&d, &c0, 1, NULL);
  vsri_auth_acceptor_init(&a, &c1, NULL);
  assert_int_equal(vsri_auth_dialer_hello(&d, zero, hello), 0);
  assert_true(vsri_auth_done(&d));
  assert_frame(hello, VSR_CMD_REPLICA_HELLO, &c0);
  assert_zero(hello + RC, 128);
  assert_int_equal(vsri_auth_acceptor_on_hello(&a, hello, zero, out, &send), 0);
  assert_false(send);
  assert_true(vsri_auth_done(&a));
  assert_int_equal(a.peer_id, 0);
  /* Checks still run in legacy mode, but nothing is sent back. */
  vsri_auth_acceptor_init(&a, &c1, NULL);
  hello[61] = 1;
  assert_int_equal(vsri_auth_acceptor_on_hello(&a, hello, zero, out, &send), VSR_EAUTH_DIRECTION);
  assert_false(send);
}

/* ---- rejects before the Challenge (acceptor) ------------------------------------------- */

/* Feeds |hello| to a fresh acceptor |c| and checks the error, the reject frame and the
 * status the dialer reads from it. */
static void expect_nack(const struct vsri_auth_cfg *c, const uint8_t *hello, int err,
                        uint8_t status) {
  struct vsri_auth_hs a, d;
  uint8_t ra[32], out[256], fin[256];
  bool send = false;
  fill(ra, 0x22);
  vsri_auth_acceptor_init(&a, c, NULL);
  assert_int_equal(vsri_auth_acceptor_on_hello(&a, hello, ra, out, &send), err);
  assert_true(send);
  assert_int_equal(a.status, status);
  assert_false(vsri_auth_done(&a));
  assert_frame(out, VSR_CMD_REPLICA_CHALLENGE, c);
  assert_zero(out + RC, 64); /* no nonce, no MAC */
  assert_int_equal(out[OFF_STATUS], status);
  assert_zero(out + OFF_STATUS + 1, 128 - 65);
  /* The acceptor is done with this connection whatever comes next. */
  assert_int_equal(vsri_auth_acceptor_on_finish(&a, out), VSR_EINVAL);
  /* A waiting dialer learns the reason from the reject. */
  struct vsri_auth_cfg c0 = node(0, SECRET_A, NULL);
  uint8_t rd[32], h[256];
  fill(rd, 0x11);
  vsri_auth_dialer_init(&d, &c0, 1, NULL);
  assert_int_equal(vsri_auth_dialer_hello(&d, rd, h), 0);
  assert_int_equal(vsri_auth_dialer_on_challenge(&d, out, fin), VSR_EAUTH_STATUS);
  assert_int_equal(d.status, status);
  assert_false(vsri_auth_done(&d));
}

static void test_wrong_cluster_is_nacked(void **state) {
  (void)state;
  struct vsri_auth_cfg c0 = node(0, SECRET_A, NULL), c2 = node(2, SECRET_A, NULL);
  struct pair p;
  pair_start(&p, &c0, &c2, 0x11, 0x22);
  p.hello[32] ^= 1;
  expect_nack(&c2, p.hello, VSR_EAUTH_CLUSTER, VSRI_AUTH_CLUSTER_MISMATCH);
  p.hello[32] ^= 1;
  p.hello[47] ^= 0x80; /* high byte of the u128 */
  expect_nack(&c2, p.hello, VSR_EAUTH_CLUSTER, VSRI_AUTH_CLUSTER_MISMATCH);
  /* A node configured with another cluster name. */
  struct vsri_auth_cfg other;
  assert_int_equal(vsri_auth_cfg_init(&other, "other", 0, 3, SECRET_A, 32, NULL, 0), 0);
  struct pair q;
  pair_start(&q, &other, &c2, 0x11, 0x22);
  expect_nack(&c2, q.hello, VSR_EAUTH_CLUSTER, VSRI_AUTH_CLUSTER_MISMATCH);
}

static void test_id_not_lower_than_acceptor_is_nacked(void **state) {
  (void)state;
  struct vsri_auth_cfg c1 = node(1, SECRET_A, NULL), c2 = node(2, SECRET_A, NULL);
  struct pair p;
  pair_start(&p, &c1, &c2, 0x11, 0x22);
  p.hello[61] = 2; /* equal to the acceptor's id */
  expect_nack(&c2, p.hello, VSR_EAUTH_DIRECTION, VSRI_AUTH_DIRECTIONAL_RULE);
  /* Higher than the acceptor's id: replica 2 announcing itself to replica 1. */
  p.hello[61] = 2;
  expect_nack(&c1, p.hello, VSR_EAUTH_DIRECTION, VSRI_AUTH_DIRECTIONAL_RULE);
  /* Our own dialer refuses to break the rule in the first place. */
  struct vsri_auth_hs d;
  uint8_t rd[32], h[256];
  fill(rd, 0x11);
  vsri_auth_dialer_init(&d, &c2, 1, NULL);
  assert_int_equal(vsri_auth_dialer_hello(&d, rd, h), VSR_EINVAL);
  vsri_auth_dialer_init(&d, &c2, 2, NULL);
  assert_int_equal(vsri_auth_dialer_hello(&d, rd, h), VSR_EINVAL);
}

static void test_id_at_or_above_replica_count_is_nacked(void **state) {
  (void)state;
  struct vsri_auth_cfg c0 = node(0, SECRET_A, NULL), c2 = node(2, SECRET_A, NULL);
  struct pair p;
  pair_start(&p, &c0, &c2, 0x11, 0x22);
  p.hello[61] = 3;
  expect_nack(&c2, p.hello, VSR_EAUTH_DIRECTION, VSRI_AUTH_DIRECTIONAL_RULE);
  p.hello[61] = 255;
  expect_nack(&c2, p.hello, VSR_EAUTH_DIRECTION, VSRI_AUTH_DIRECTIONAL_RULE);
  /* With a valid config (self_id < replica_count) an id >= replica_count is also >= self_id;
   * the range check is a separate test only for an acceptor whose count is below its id
   * (the reference checks both): peer 1 < self 2 but 1 >= count 1. */
  struct vsri_auth_cfg odd = c2;
  odd.replica_count = 1;
  p.hello[61] = 1;
  expect_nack(&odd, p.hello, VSR_EAUTH_DIRECTION, VSRI_AUTH_DIRECTIONAL_RULE);
  p.hello[61] = 0;
  struct vsri_auth_hs a;
  uint8_t out[256];
  bool send;
  vsri_auth_acceptor_init(&a, &odd, NULL);
  assert_int_equal(vsri_auth_acceptor_on_hello(&a, p.hello, p.rand_a, out, &send), 0);
}

static void test_wrong_command_first_is_nacked_only_with_a_nonce(void **state) {
  (void)state;
  struct vsri_auth_cfg c0 = node(0, SECRET_A, NULL), c2 = node(2, SECRET_A, NULL);
  static const uint8_t cmds[] = {0, 1, 5, 6, VSR_CMD_REPLICA_CHALLENGE, VSR_CMD_REPLICA_FINISH,
                                 29, 30, 255};
  for (size_t i = 0; i < sizeof cmds; i++) {
    struct pair p;
    pair_start(&p, &c0, &c2, 0x11, 0x22);
    p.hello[60] = cmds[i];
    expect_nack(&c2, p.hello, VSR_EAUTH_COMMAND, VSRI_AUTH_UNKNOWN_COMMAND);
    /* Without a nonce the sender is not waiting for an answer: close silently. */
    memset(p.hello + RC, 0, 32);
    struct vsri_auth_hs a;
    uint8_t out[256];
    bool send = true;
    vsri_auth_acceptor_init(&a, &c2, NULL);
    assert_int_equal(vsri_auth_acceptor_on_hello(&a, p.hello, p.rand_a, out, &send),
                     VSR_EAUTH_COMMAND);
    assert_false(send);
  }
}

static void test_all_zero_nonce_means_auth_required(void **state) {
  (void)state;
  struct vsri_auth_cfg legacy0 = node(0, NULL, NULL), c2 = node(2, SECRET_A, NULL);
  struct vsri_auth_hs d, a;
  uint8_t zero[32] = {0}, ra[32], hello[256], out[256];
  bool send = true;
  fill(ra, 0x22);
  vsri_auth_dialer_init(&d, &legacy0, 2, NULL);
  assert_int_equal(vsri_auth_dialer_hello(&d, zero, hello), 0);
  vsri_auth_acceptor_init(&a, &c2, NULL);
  assert_int_equal(vsri_auth_acceptor_on_hello(&a, hello, ra, out, &send), VSR_EAUTH_REQUIRED);
  assert_false(send); /* a legacy dialer does not read: no reject frame */
  assert_int_equal(a.status, VSRI_AUTH_AUTH_REQUIRED);
  assert_int_equal(a.peer_id, 0);
  assert_false(vsri_auth_done(&a));
  /* Cluster and direction are checked first, as in the reference. */
  hello[61] = 2;
  vsri_auth_acceptor_init(&a, &c2, NULL);
  assert_int_equal(vsri_auth_acceptor_on_hello(&a, hello, ra, out, &send), VSR_EAUTH_DIRECTION);
  assert_false(send);
}

/* ---- rejects at the Challenge (dialer) and the Finish (acceptor) ------------------------- */

static void test_wrong_secret_fails_both_macs(void **state) {
  (void)state;
  struct vsri_auth_cfg c0 = node(0, SECRET_A, NULL), c2 = node(2, SECRET_B, NULL);
  struct pair p;
  pair_start(&p, &c0, &c2, 0x11, 0x22);
  pair_challenge(&p); /* the acceptor cannot tell yet: it answers Ok */
  assert_int_equal(p.challenge[OFF_STATUS], VSRI_AUTH_OK);
  assert_int_equal(vsri_auth_dialer_on_challenge(&p.dh, p.challenge, p.finish), VSR_EAUTH);
  assert_int_equal(p.dh.status, VSRI_AUTH_MAC_MISMATCH);
  assert_false(vsri_auth_done(&p.dh));
  /* A dialer that sends a Finish anyway, keyed with its (wrong) secret: refused, log-only. */
  struct vsri_auth_transcript t = p.ah.t;
  uint8_t key[32];
  assert_int_equal(vsri_auth_derive_key(SECRET_A, 32, key), 0);
  memset(p.finish, 0, sizeof p.finish);
  p.finish[60] = VSR_CMD_REPLICA_FINISH;
  vsri_auth_mac(key, &t, 1, p.finish + OFF_MAC);
  assert_int_equal(vsri_auth_acceptor_on_finish(&p.ah, p.finish), VSR_EAUTH);
  assert_int_equal(p.ah.status, VSRI_AUTH_MAC_MISMATCH);
  assert_false(vsri_auth_done(&p.ah));
  /* The same Finish under the right key would have passed: the key is what failed. */
  struct pair q;
  struct vsri_auth_cfg c2a = node(2, SECRET_A, NULL);
  pair_start(&q, &c0, &c2a, 0x11, 0x22);
  pair_challenge(&q);
  assert_int_equal(vsri_auth_acceptor_on_finish(&q.ah, p.finish), 0);
}

/* Replay protection in the reference is nonce freshness, nothing else: no nonce cache, no
 * timestamps. Each side mixes a fresh 32-byte nonce of its own into the transcript, so a
 * Finish recorded from an earlier session does not verify against a new nonce_a, and a
 * recorded Challenge does not verify against a new nonce_d. It therefore rests on the
 * caller drawing every nonce from the CSPRNG. */
static void test_replayed_frames_are_refused(void **state) {
  (void)state;
  struct vsri_auth_cfg c0 = node(0, SECRET_A, NULL), c2 = node(2, SECRET_A, NULL);
  struct pair old;
  pair_start(&old, &c0, &c2, 0x11, 0x22);
  pair_challenge(&old);
  assert_int_equal(vsri_auth_dialer_on_challenge(&old.dh, old.challenge, old.finish), 0);
  assert_int_equal(vsri_auth_acceptor_on_finish(&old.ah, old.finish), 0);

  /* An eavesdropper replays the old Hello, gets a fresh Challenge, replays the old Finish. */
  struct vsri_auth_hs a;
  uint8_t ra[32], ch[256];
  bool send;
  fill(ra, 0x23);
  vsri_auth_acceptor_init(&a, &c2, NULL);
  assert_int_equal(vsri_auth_acceptor_on_hello(&a, old.hello, ra, ch, &send), 0);
  assert_int_equal(vsri_auth_acceptor_on_finish(&a, old.finish), VSR_EAUTH);

  /* An impostor acceptor replays the old Challenge to a dialer with a fresh nonce_d. */
  struct pair fresh;
  pair_start(&fresh, &c0, &c2, 0x12, 0x22);
  assert_int_equal(vsri_auth_dialer_on_challenge(&fresh.dh, old.challenge, fresh.finish),
                   VSR_EAUTH);

  /* The converse shows what the protection rests on: were the acceptor's nonce to repeat,
   * the replayed Finish would pass. */
  vsri_auth_acceptor_init(&a, &c2, NULL);
  assert_int_equal(vsri_auth_acceptor_on_hello(&a, old.hello, old.rand_a, ch, &send), 0);
  assert_int_equal(vsri_auth_acceptor_on_finish(&a, old.finish), 0);
}

static void test_altered_nonce_is_refused(void **state) {
  (void)state;
  struct vsri_auth_cfg c0 = node(0, SECRET_A, NULL), c2 = node(2, SECRET_A, NULL);
  for (int at = 0; at < 32; at += 31) {
    /* nonce_a altered in transit: the dialer's check of mac_a fails. */
    struct pair p;
    pair_start(&p, &c0, &c2, 0x11, 0x22);
    pair_challenge(&p);
    p.challenge[OFF_NONCE + at] ^= 0x01;
    assert_int_equal(vsri_auth_dialer_on_challenge(&p.dh, p.challenge, p.finish), VSR_EAUTH);
    /* nonce_d altered in transit: the acceptor MACs the wrong transcript, the dialer sees it. */
    pair_start(&p, &c0, &c2, 0x11, 0x22);
    p.hello[OFF_NONCE + at] ^= 0x01;
    pair_challenge(&p);
    assert_int_equal(vsri_auth_dialer_on_challenge(&p.dh, p.challenge, p.finish), VSR_EAUTH);
    /* A MAC bit flipped: either direction. */
    pair_start(&p, &c0, &c2, 0x11, 0x22);
    pair_challenge(&p);
    assert_int_equal(vsri_auth_dialer_on_challenge(&p.dh, p.challenge, p.finish), 0);
    p.finish[OFF_MAC + at] ^= 0x80;
    assert_int_equal(vsri_auth_acceptor_on_finish(&p.ah, p.finish), VSR_EAUTH);
  }
}

static void test_reflected_mac_is_refused(void **state) {
  (void)state;
  struct vsri_auth_cfg c0 = node(0, SECRET_A, NULL), c2 = node(2, SECRET_A, NULL);
  struct pair p;
  pair_start(&p, &c0, &c2, 0x11, 0x22);
  pair_challenge(&p);
  /* mac_a sent back as mac_d: same transcript, other direction byte. */
  memset(p.finish, 0, sizeof p.finish);
  p.finish[60] = VSR_CMD_REPLICA_FINISH;
  memcpy(p.finish + OFF_MAC, p.challenge + OFF_MAC, 32);
  assert_int_equal(vsri_auth_acceptor_on_finish(&p.ah, p.finish), VSR_EAUTH);
  /* The Challenge itself bounced back: wrong command in the Finish position. */
  pair_start(&p, &c0, &c2, 0x11, 0x22);
  pair_challenge(&p);
  assert_int_equal(vsri_auth_acceptor_on_finish(&p.ah, p.challenge), VSR_EAUTH_COMMAND);
}

static void test_swapped_peer_pair_is_refused(void **state) {
  (void)state;
  struct vsri_auth_cfg c0 = node(0, SECRET_A, NULL), c2 = node(2, SECRET_A, NULL);
  uint8_t key[32], good[32], bad[32];
  assert_int_equal(vsri_auth_derive_key(SECRET_A, 32, key), 0);
  struct pair p;
  pair_start(&p, &c0, &c2, 0x11, 0x22);
  pair_challenge(&p);
  /* A key holder MACs the transcript with dialer and acceptor ids swapped. */
  struct vsri_auth_transcript t = p.ah.t;
  vsri_auth_mac(key, &t, 1, good);
  t.dialer_id = p.ah.t.acceptor_id;
  t.acceptor_id = p.ah.t.dialer_id;
  vsri_auth_mac(key, &t, 1, bad);
  assert_memory_not_equal(good, bad, 32);
  memset(p.finish, 0, sizeof p.finish);
  p.finish[60] = VSR_CMD_REPLICA_FINISH;
  memcpy(p.finish + OFF_MAC, bad, 32);
  assert_int_equal(vsri_auth_acceptor_on_finish(&p.ah, p.finish), VSR_EAUTH);
  /* Towards the dialer: a Challenge MACed for the pair (2 dials 0). */
  pair_start(&p, &c0, &c2, 0x11, 0x22);
  pair_challenge(&p);
  vsri_auth_mac(key, &t, 2, p.challenge + OFF_MAC);
  assert_int_equal(vsri_auth_dialer_on_challenge(&p.dh, p.challenge, p.finish), VSR_EAUTH);
  /* A dialer that dialed replica 1 but reached replica 2 (both key holders): refused. */
  struct vsri_auth_hs d;
  uint8_t rd[32], h[256], fin[256];
  fill(rd, 0x11);
  vsri_auth_dialer_init(&d, &c0, 1, NULL);
  assert_int_equal(vsri_auth_dialer_hello(&d, rd, h), 0);
  pair_start(&p, &c0, &c2, 0x11, 0x22);
  pair_challenge(&p);
  assert_int_equal(vsri_auth_dialer_on_challenge(&d, p.challenge, fin), VSR_EAUTH);
}

static void test_wrong_command_at_challenge_and_finish(void **state) {
  (void)state;
  struct vsri_auth_cfg c0 = node(0, SECRET_A, NULL), c2 = node(2, SECRET_A, NULL);
  static const uint8_t cmds[] = {0, 1, 6, VSR_CMD_REPLICA_HELLO, VSR_CMD_REPLICA_FINISH,
                                 VSR_CMD_REPLICA_CHALLENGE, 17, 255};
  for (size_t i = 0; i < sizeof cmds; i++) {
    struct pair p;
    pair_start(&p, &c0, &c2, 0x11, 0x22);
    pair_challenge(&p);
    uint8_t ch[256];
    memcpy(ch, p.challenge, sizeof ch);
    ch[60] = cmds[i];
    int want = cmds[i] == VSR_CMD_REPLICA_CHALLENGE ? 0 : VSR_EAUTH_COMMAND;
    assert_int_equal(vsri_auth_dialer_on_challenge(&p.dh, ch, p.finish), want);
    if (want) {
      assert_int_equal(p.dh.status, VSRI_AUTH_UNKNOWN_COMMAND);
      /* Finish position: a valid mac_d under another command is still refused. */
      struct pair q;
      pair_start(&q, &c0, &c2, 0x11, 0x22);
      pair_challenge(&q);
      assert_int_equal(vsri_auth_dialer_on_challenge(&q.dh, q.challenge, q.finish), 0);
      q.finish[60] = cmds[i] == VSR_CMD_REPLICA_FINISH ? VSR_CMD_REPLICA_HELLO : cmds[i];
      assert_int_equal(vsri_auth_acceptor_on_finish(&q.ah, q.finish), VSR_EAUTH_COMMAND);
      assert_int_equal(q.ah.status, VSRI_AUTH_UNKNOWN_COMMAND);
    }
  }
}

static void test_every_status_byte_maps_as_the_reference(void **state) {
  (void)state;
  struct vsri_auth_cfg c0 = node(0, SECRET_A, NULL), c2 = node(2, SECRET_A, NULL);
  for (int s = 0; s < 256; s++) {
    struct pair p;
    pair_start(&p, &c0, &c2, 0x11, 0x22);
    pair_challenge(&p);
    p.challenge[OFF_STATUS] = (uint8_t)s;
    int rc = vsri_auth_dialer_on_challenge(&p.dh, p.challenge, p.finish);
    if (s == 0) {
      assert_int_equal(rc, 0);
      continue;
    }
    assert_int_equal(rc, VSR_EAUTH_STATUS);
    assert_int_equal(p.dh.status, s <= 5 ? s : VSRI_AUTH_UNKNOWN_COMMAND);
  }
  assert_string_equal(vsri_auth_status_name(VSRI_AUTH_MAC_MISMATCH), "mac_mismatch");
  assert_string_equal(vsri_auth_status_name(200), "unknown");
}

/* ---- key rotation ----------------------------------------------------------------------- */

static int handshake(const struct vsri_auth_cfg *d, const struct vsri_auth_cfg *a) {
  struct pair p;
  pair_start(&p, d, a, 0x11, 0x22);
  pair_challenge(&p);
  int rc = vsri_auth_dialer_on_challenge(&p.dh, p.challenge, p.finish);
  if (rc) return rc;
  return vsri_auth_acceptor_on_finish(&p.ah, p.finish);
}

static void test_previous_secret_accepted_during_rotation(void **state) {
  (void)state;
  /* Roll 2 mid-way: node 0 already on {new, prev old}, node 2 still on {old, prev new}. Each
   * signs with its current key and verifies the other's through its previous key. */
  struct vsri_auth_cfg n0 = node(0, SECRET_B, SECRET_A), o2 = node(2, SECRET_A, SECRET_B);
  struct vsri_auth_cfg o0 = node(0, SECRET_A, SECRET_B), n2 = node(2, SECRET_B, SECRET_A);
  assert_int_equal(handshake(&n0, &o2), 0);
  assert_int_equal(handshake(&o0, &n2), 0);
  assert_int_equal(handshake(&n0, &n2), 0);
  /* Roll 1 (old, prev new) against a node not yet rolled (old): signs old, fine. */
  struct vsri_auth_cfg plain_old2 = node(2, SECRET_A, NULL);
  assert_int_equal(handshake(&o0, &plain_old2), 0);
}

static void test_previous_secret_refused_without_window(void **state) {
  (void)state;
  /* The dialer (old, prev new) accepts the acceptor's new-key mac_a, then signs with old:
   * an acceptor on the new key alone (window closed) refuses the Finish. */
  struct vsri_auth_cfg o0 = node(0, SECRET_A, SECRET_B), n2 = node(2, SECRET_B, NULL);
  struct pair p;
  pair_start(&p, &o0, &n2, 0x11, 0x22);
  pair_challenge(&p);
  assert_int_equal(vsri_auth_dialer_on_challenge(&p.dh, p.challenge, p.finish), 0);
  assert_int_equal(vsri_auth_acceptor_on_finish(&p.ah, p.finish), VSR_EAUTH);
  assert_int_equal(p.ah.status, VSRI_AUTH_MAC_MISMATCH);
  /* Plain old vs plain new: the dialer already refuses mac_a. */
  struct vsri_auth_cfg a0 = node(0, SECRET_A, NULL);
  assert_int_equal(handshake(&a0, &n2), VSR_EAUTH);
  /* The window is exactly {current, previous}: a third key fails. */
  struct vsri_auth_cfg x0 = node(0, SECRET_X, NULL), w2 = node(2, SECRET_B, SECRET_A);
  assert_int_equal(handshake(&x0, &w2), VSR_EAUTH);
}

/* ---- configuration, vectors, misuse ------------------------------------------------------ */

/* Known answers, computed with b3sum 1.2 (Debian) from the shell:
 *   printf '0123456789abcdef0123456789abcdef' > secret
 *   b3sum --derive-key 'apache-iggy replica-auth v1 psk->mac-key' --no-names secret
 *     -> 39ec5450...de6a54be (the MAC key); xxd -r -p of it > key.bin
 *   { printf 'apache-iggy replica-auth v1'; printf '\xef\xbe\xad\xde'; head -c 12 /dev/zero
 *     printf '\x03\x01'; head -c 32 /dev/zero | tr '\0' '\021'
 *     head -c 32 /dev/zero | tr '\0' '\042'; printf '\x00'; head -c 32 /dev/zero
 *     printf '\x01'; } > t1          # dir 1; t2 ends in \x02
 *   b3sum --keyed --no-names t1 < key.bin
 * i.e. cluster 0xDEADBEEF, dialer 3, acceptor 1, nonce_d 0x11.., nonce_a 0x22.., plaintext
 * (the transcript of the reference's own unit tests). And the cluster id:
 *   printf 'iggy-cluster' | b3sum --no-names   -> first 16 bytes, little-endian u128. */
static void hex32(const char *hex, uint8_t out[32]) {
  for (int i = 0; i < 32; i++) {
    unsigned v;
    assert_int_equal(sscanf(hex + 2 * i, "%2x", &v), 1);
    out[i] = (uint8_t)v;
  }
}

static void test_known_answer_vectors(void **state) {
  (void)state;
  uint8_t key[32], want[32], mac[32];
  assert_int_equal(vsri_auth_derive_key(SECRET_A, 32, key), 0);
  hex32("39ec545024b097198cbf082b239525e97c0da3a60f3a18fd29f7d169de6a54be", want);
  assert_memory_equal(key, want, 32);
  struct vsri_auth_transcript t;
  memset(&t, 0, sizeof t);
  t.cluster.lo = 0xDEADBEEF;
  t.dialer_id = 3;
  t.acceptor_id = 1;
  memset(t.nonce_d, 0x11, 32);
  memset(t.nonce_a, 0x22, 32);
  vsri_auth_mac(key, &t, 1, mac);
  hex32("58437a3a453354283bb2522096dc7a5e2091051961bf28a6d6022bc7b950b92f", want);
  assert_memory_equal(mac, want, 32);
  vsri_auth_mac(key, &t, 2, mac);
  hex32("d01fab02794764b228d1817948d0b60c24739807a19b3da9023a8082c3d5e0ee", want);
  assert_memory_equal(mac, want, 32);
  /* b3sum 'iggy-cluster' = 21bb05c88727bab8 8d0ec27be8a72d46 ... */
  vsr_u128 id = vsri_auth_cluster_id("iggy-cluster");
  assert_true(id.lo == 0xb8ba2787c805bb21ull);
  assert_true(id.hi == 0x462da7e87bc20e8dull);
  /* The public name gives the same id. */
  vsr_u128 pub = vsr_cluster_id("iggy-cluster");
  assert_true(pub.lo == id.lo && pub.hi == id.hi);
}

static void test_config_rules(void **state) {
  (void)state;
  struct vsri_auth_cfg c;
  uint8_t key[32];
  assert_int_equal(vsri_auth_derive_key(SECRET_A, 31, key), VSR_ECONFIG);
  assert_int_equal(vsri_auth_cfg_init(&c, CLUSTER, 0, 3, SECRET_A, 31, NULL, 0), VSR_ECONFIG);
  assert_int_equal(vsri_auth_cfg_init(&c, CLUSTER, 0, 3, SECRET_A, 32, SECRET_B, 31),
                   VSR_ECONFIG);
  assert_int_equal(vsri_auth_cfg_init(&c, CLUSTER, 0, 3, SECRET_A, 32, SECRET_A, 32),
                   VSR_ECONFIG);
  assert_int_equal(vsri_auth_cfg_init(&c, CLUSTER, 0, 3, NULL, 0, SECRET_B, 32), VSR_ECONFIG);
  assert_int_equal(vsri_auth_cfg_init(&c, CLUSTER, 3, 3, SECRET_A, 32, NULL, 0), VSR_ECONFIG);
  assert_int_equal(vsri_auth_cfg_init(&c, CLUSTER, 0, 0, SECRET_A, 32, NULL, 0), VSR_ECONFIG);
  assert_int_equal(vsri_auth_cfg_init(&c, "", 0, 3, SECRET_A, 32, NULL, 0), VSR_ECONFIG);
  assert_int_equal(vsri_auth_cfg_init(&c, CLUSTER, 0, 3, SECRET_A, 32, SECRET_B, 32), 0);
  assert_true(c.enabled);
  assert_true(c.has_prev);
  vsri_auth_cfg_wipe(&c);
  assert_false(c.enabled);
  assert_zero(c.key, 32);
  assert_zero(c.prev_key, 32);
}

static void test_calls_out_of_order_are_refused(void **state) {
  (void)state;
  struct vsri_auth_cfg c0 = node(0, SECRET_A, NULL), c2 = node(2, SECRET_A, NULL);
  uint8_t zero[32] = {0}, out[256];
  bool send;
  struct pair p;
  pair_start(&p, &c0, &c2, 0x11, 0x22);
  assert_int_equal(vsri_auth_dialer_hello(&p.dh, p.rand_d, out), VSR_EINVAL);
  assert_int_equal(vsri_auth_acceptor_on_finish(&p.ah, p.hello), VSR_EINVAL);
  assert_int_equal(vsri_auth_acceptor_on_hello(&p.ah, p.hello, zero, out, &send), VSR_EINVAL);
  assert_false(send);
  pair_challenge(&p);
  assert_int_equal(vsri_auth_acceptor_on_hello(&p.ah, p.hello, p.rand_a, out, &send),
                   VSR_EINVAL);
  /* Roles are not interchangeable. */
  assert_int_equal(vsri_auth_dialer_on_challenge(&p.ah, p.challenge, out), VSR_EINVAL);
  assert_int_equal(vsri_auth_acceptor_on_finish(&p.dh, p.challenge), VSR_EINVAL);
  /* An all-zero nonce with auth on would read as "no auth" on the wire. */
  struct vsri_auth_hs d;
  vsri_auth_dialer_init(&d, &c0, 2, NULL);
  assert_int_equal(vsri_auth_dialer_hello(&d, zero, out), VSR_EINVAL);
  /* After a failure nothing more is accepted. */
  pair_start(&p, &c0, &c2, 0x11, 0x22);
  pair_challenge(&p);
  p.challenge[OFF_MAC] ^= 1;
  assert_int_equal(vsri_auth_dialer_on_challenge(&p.dh, p.challenge, p.finish), VSR_EAUTH);
  p.challenge[OFF_MAC] ^= 1;
  assert_int_equal(vsri_auth_dialer_on_challenge(&p.dh, p.challenge, p.finish), VSR_EINVAL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_accept_path_both_sides_connect),
      cmocka_unit_test(test_accept_path_over_tls_binds_the_exporter),
      cmocka_unit_test(test_legacy_mode_sends_only_the_hello),
      cmocka_unit_test(test_wrong_cluster_is_nacked),
      cmocka_unit_test(test_id_not_lower_than_acceptor_is_nacked),
      cmocka_unit_test(test_id_at_or_above_replica_count_is_nacked),
      cmocka_unit_test(test_wrong_command_first_is_nacked_only_with_a_nonce),
      cmocka_unit_test(test_all_zero_nonce_means_auth_required),
      cmocka_unit_test(test_wrong_secret_fails_both_macs),
      cmocka_unit_test(test_replayed_frames_are_refused),
      cmocka_unit_test(test_altered_nonce_is_refused),
      cmocka_unit_test(test_reflected_mac_is_refused),
      cmocka_unit_test(test_swapped_peer_pair_is_refused),
      cmocka_unit_test(test_wrong_command_at_challenge_and_finish),
      cmocka_unit_test(test_every_status_byte_maps_as_the_reference),
      cmocka_unit_test(test_previous_secret_accepted_during_rotation),
      cmocka_unit_test(test_previous_secret_refused_without_window),
      cmocka_unit_test(test_known_answer_vectors),
      cmocka_unit_test(test_config_rules),
      cmocka_unit_test(test_calls_out_of_order_are_refused),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
