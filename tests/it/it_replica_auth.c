/* Replica authentication over real sockets (reference tests/replica_auth_handshake.rs and every
 * reject reason of spec/bus.md §5): a correct key registers the peer; a wrong key, a replayed,
 * altered or reflected handshake, a swapped peer pair, a wrong cluster, an id not lower than the
 * acceptor's, a wrong command in either handshake position, and consensus frames before the
 * handshake completes are each refused with the reference's status (a reject frame only to a
 * dialer that offered a nonce), one log line, and a closed connection - while real replicas
 * connecting at the same time keep their links. The dialer side refuses bad Challenges too. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/random.h>

#include <cmocka.h>

#include "replica_harness.h"

static uint8_t key_a[32], key_b[32];
static vsr_u128 cluster_id;

static void nonce(uint8_t out[32]) {
  assert_int_equal(getrandom(out, 32, 0), 32);
  out[0] |= 1; /* never all zero */
}

/* Waits for a new log line holding |a| and |b| (|before| lines held them earlier). */
static void expect_log(const char *a, const char *b, int before) {
  uint64_t end = vsrt_now() + 10 * R_SEC;
  while (r_log_count(a, b) <= before && vsrt_now() < end) usleep(2000);
  if (r_log_count(a, b) <= before) fail_msg("no log line with '%s' and '%s'", a, b ? b : "");
}

/* Reads a reject Challenge with |status|, then EOF. */
static void expect_reject(int fd, uint8_t status) {
  uint8_t h[256];
  assert_int_equal(r_read_header(fd, h), 1);
  assert_int_equal(h[60], VSR_CMD_REPLICA_CHALLENGE);
  assert_int_equal(h[128 + VSRI_AUTH_STATUS_OFFSET], status);
  static const uint8_t zero[64];
  assert_memory_equal(h + 128, zero, 64); /* no nonce, no MAC in a reject */
  assert_true(r_wait_eof(fd, 10 * R_SEC));
}

/* The connection closes without a single byte coming back. */
static void expect_bare_close(int fd) {
  uint8_t h[256];
  assert_int_equal(r_read_header(fd, h), 0);
}

/* Sends |frame| on |fd| and expects the answer: a reject with |status|, or (-1) a bare close.
 * Closes |fd|. */
static void send_expect(int fd, const uint8_t frame[256], int status) {
  assert_true(vsrt_write_all(fd, frame, 256));
  if (status < 0) expect_bare_close(fd);
  else expect_reject(fd, (uint8_t)status);
  close(fd);
}

/* Sends Hello(|id|, |nd|) and reads an Ok Challenge into |ch|. */
static int hello_and_challenge(const char *addr, uint8_t id, const uint8_t nd[32],
                               uint8_t ch[256]) {
  int fd = vsrt_connect(addr);
  assert_true(fd >= 0);
  uint8_t h[256];
  r_hello(h, cluster_id, id, nd);
  assert_true(vsrt_write_all(fd, h, 256));
  assert_int_equal(r_read_header(fd, ch), 1);
  assert_int_equal(ch[60], VSR_CMD_REPLICA_CHALLENGE);
  assert_int_equal(ch[128 + VSRI_AUTH_STATUS_OFFSET], VSRI_AUTH_OK);
  return fd;
}

/* A ReplicaFinish whose MAC binds the given transcript fields under |key|. */
static void finish_frame(uint8_t out[256], const uint8_t key[32], uint8_t dialer, uint8_t acceptor,
                         const uint8_t nd[32], const uint8_t na[32]) {
  struct vsri_auth_transcript t;
  memset(&t, 0, sizeof t);
  t.cluster = cluster_id;
  t.dialer_id = dialer;
  t.acceptor_id = acceptor;
  memcpy(t.nonce_d, nd, 32);
  memcpy(t.nonce_a, na, 32);
  vsr_header_init(out, VSR_CMD_REPLICA_FINISH, 256);
  vsr_put_u128(out + 32, cluster_id);
  out[61] = dialer;
  vsri_auth_mac(key, &t, 1, out + 128 + VSRI_AUTH_MAC_OFFSET);
}

/* ---- bus against bus ---------------------------------------------------------------------- */

static void correct_key_registers_wrong_key_never(void **state) {
  (void)state;
  /* Wrong key: the dialer refuses the acceptor's MAC; neither side installs anything. */
  struct r_node n[2];
  r_options(&n[0], 0, 2);
  r_options(&n[1], 1, 2);
  r_set_secret(&n[0], r_secret_b);
  int before = r_log_count("ReplicaChallenge MAC does not verify", "VSR_EAUTH");
  assert_int_equal(r_start_cluster(n, 2), 0);
  expect_log("ReplicaChallenge MAC does not verify", "VSR_EAUTH", before);
  /* The dialer may redial (jittered backoff from 0 ms) before we look: every attempt must end
   * the same way, connected then lost for VSR_EAUTH, and none ever authenticates. */
  assert_true(r_wait(&n[0], VSR_PEER_LOST, 1, 1, 10 * R_SEC) >= 1);
  pthread_mutex_lock(&n[0].mu);
  assert_int_equal(n[0].events[0].kind, VSR_PEER_CONNECTED);
  assert_int_equal(n[0].events[1].reason, VSR_EAUTH);
  for (int i = 0; i < n[0].nevents; i++) {
    if (n[0].events[i].kind == VSR_PEER_LOST) assert_int_equal(n[0].events[i].reason, VSR_EAUTH);
    assert_int_equal(n[0].events[i].kind, i % 2 ? VSR_PEER_LOST : VSR_PEER_CONNECTED);
  }
  pthread_mutex_unlock(&n[0].mu);
  assert_false(r_stats(&n[0]).linked[1]);
  assert_false(r_stats(&n[1]).linked[0]);
  assert_int_equal(r_count(&n[0], VSR_PEER_AUTHENTICATED, -1), 0);
  assert_int_equal(r_count(&n[1], VSR_PEER_AUTHENTICATED, -1), 0);
  assert_int_equal(r_count(&n[1], VSR_PEER_CONNECTED, -1), 0); /* unproven: no events */
  r_stop(&n[0], true);
  r_stop(&n[1], true);

  /* Key rotation mid-roll: each side signs with its own key and verifies the other's as the
   * previous one; the handshake completes both ways (reference rotation_window test). */
  r_options(&n[0], 0, 2);
  r_options(&n[1], 1, 2);
  r_set_secret(&n[1], r_secret_b);
  n[1].opts.previous_secret = (const uint8_t *)r_secret_a;
  n[1].opts.previous_secret_len = strlen(r_secret_a);
  n[0].opts.previous_secret = (const uint8_t *)r_secret_b;
  n[0].opts.previous_secret_len = strlen(r_secret_b);
  assert_int_equal(r_start_cluster(n, 2), 0);
  assert_int_equal(r_wait(&n[0], VSR_PEER_AUTHENTICATED, 1, 1, 10 * R_SEC), 1);
  assert_int_equal(r_wait(&n[1], VSR_PEER_AUTHENTICATED, 0, 1, 10 * R_SEC), 1);
  r_stop(&n[0], true);
  r_stop(&n[1], true);
}

static void short_secret_refused_at_start(void **state) {
  (void)state;
  struct r_node n;
  r_options(&n, 1, 2);
  r_set_secret(&n, "too-short");
  assert_int_equal(r_start(&n), VSR_ECONFIG);
  r_options(&n, 1, 2);
  n.opts.secret_len = 0;
  assert_int_equal(r_start(&n), VSR_ECONFIG);
}

/* ---- hand-made dialers against a live cluster ----------------------------------------------- */

static void *start_replica0(void *arg) {
  usleep(3000);
  r_start(arg);
  return NULL;
}

/* Rejects at the Hello: cluster, direction, command, missing nonce, frames before the
 * handshake. Each asserts the answer (reject frame or bare close) and the log line. */
static void attacks_on_hello(const char *addr) {
  uint8_t h[256], nd[32];
  int fd, before;

  /* Wrong cluster, nonce offered: reject status 2 then close. */
  before = r_log_count("not ours", "VSR_EAUTH_CLUSTER");
  fd = vsrt_connect(addr);
  nonce(nd);
  r_hello(h, vsr_u128_from_u64(0xDEAD), 0, nd);
  send_expect(fd, h, VSRI_AUTH_CLUSTER_MISMATCH);
  expect_log("not ours", "VSR_EAUTH_CLUSTER", before);

  /* Wrong cluster, no nonce: a legacy dialer does not read, so no frame, just a close. */
  fd = vsrt_connect(addr);
  r_hello(h, vsr_u128_from_u64(0xDEAD), 0, NULL);
  send_expect(fd, h, -1);

  /* Id not lower than the acceptor's (its own id, and out of range): status 3. */
  uint8_t ids[] = {2, 9, 255};
  for (size_t i = 0; i < sizeof ids; i++) {
    before = r_log_count("only lower ids", "VSR_EAUTH_DIRECTION");
    fd = vsrt_connect(addr);
    nonce(nd);
    r_hello(h, cluster_id, ids[i], nd);
    send_expect(fd, h, VSRI_AUTH_DIRECTIONAL_RULE);
    expect_log("only lower ids", "VSR_EAUTH_DIRECTION", before);
  }

  /* Wrong command where the Hello belongs (a Ping carrying a nonce): status 1. */
  before = r_log_count("where a ReplicaHello belongs", "VSR_EAUTH_COMMAND");
  fd = vsrt_connect(addr);
  nonce(nd);
  r_hello(h, cluster_id, 0, nd);
  h[60] = VSR_CMD_PING;
  send_expect(fd, h, VSRI_AUTH_UNKNOWN_COMMAND);
  expect_log("where a ReplicaHello belongs", "VSR_EAUTH_COMMAND", before);

  /* A consensus frame before any handshake (a valid, sealed Commit): refused, bare close. */
  before = r_log_count("Commit (command 9) where a ReplicaHello belongs", NULL);
  fd = vsrt_connect(addr);
  vsr_header_init(h, VSR_CMD_COMMIT, 256);
  vsr_put_u128(h + 32, cluster_id);
  vsr_frame_seal(h);
  send_expect(fd, h, -1);
  expect_log("Commit (command 9) where a ReplicaHello belongs", NULL, before);

  /* Hello without a nonce while auth is on: refused without a frame (AUTH_REQUIRED). */
  before = r_log_count("carries no nonce", "VSR_EAUTH_REQUIRED");
  fd = vsrt_connect(addr);
  r_hello(h, cluster_id, 0, NULL);
  send_expect(fd, h, -1);
  expect_log("carries no nonce", "VSR_EAUTH_REQUIRED", before);
}

/* Rejects at the Finish: wrong key, altered, reflected, swapped, replayed, wrong command. */
static void attacks_on_finish(const char *addr) {
  uint8_t h[256], ch[256], nd[32], fin[256];
  int fd, before;

  /* Wrong secret: the Finish MAC does not verify. */
  before = r_log_count("ReplicaFinish MAC from replica 0 does not verify", "VSR_EAUTH,");
  nonce(nd);
  fd = hello_and_challenge(addr, 0, nd, ch);
  finish_frame(fin, key_b, 0, 2, nd, ch + 128);
  send_expect(fd, fin, -1);
  expect_log("ReplicaFinish MAC from replica 0 does not verify", "VSR_EAUTH,", before);

  /* Altered nonces: a Finish over a nonce_a (or nonce_d) with one bit flipped. */
  for (int which = 0; which < 2; which++) {
    before = r_log_count("does not verify", "VSR_EAUTH,");
    nonce(nd);
    fd = hello_and_challenge(addr, 0, nd, ch);
    uint8_t na[32], nd2[32];
    memcpy(na, ch + 128, 32);
    memcpy(nd2, nd, 32);
    if (which == 0) na[7] ^= 0x10;
    else nd2[31] ^= 0x01;
    finish_frame(fin, key_a, 0, 2, nd2, na);
    send_expect(fd, fin, -1);
    expect_log("does not verify", "VSR_EAUTH,", before);
  }

  /* Reflected MAC: the acceptor's own mac_a sent back as mac_d (direction byte differs). */
  before = r_log_count("does not verify", "VSR_EAUTH,");
  nonce(nd);
  fd = hello_and_challenge(addr, 0, nd, ch);
  vsr_header_init(fin, VSR_CMD_REPLICA_FINISH, 256);
  vsr_put_u128(fin + 32, cluster_id);
  memcpy(fin + 128 + VSRI_AUTH_MAC_OFFSET, ch + 128 + VSRI_AUTH_MAC_OFFSET, 32);
  send_expect(fd, fin, -1);
  expect_log("does not verify", "VSR_EAUTH,", before);

  /* Swapped peer pair: the right key and nonces, dialer and acceptor ids exchanged. */
  before = r_log_count("does not verify", "VSR_EAUTH,");
  nonce(nd);
  fd = hello_and_challenge(addr, 0, nd, ch);
  finish_frame(fin, key_a, 2, 0, nd, ch + 128);
  send_expect(fd, fin, -1);
  expect_log("does not verify", "VSR_EAUTH,", before);

  /* Replay: a Finish valid for one session (replica 1 is linked, so that session is dropped as a
   * duplicate), replayed in a new session with the same nonce_d: the fresh nonce_a defeats it. */
  before = r_log_count("already connected", "VSR_EDUPLICATE");
  nonce(nd);
  fd = hello_and_challenge(addr, 1, nd, ch);
  finish_frame(fin, key_a, 1, 2, nd, ch + 128);
  send_expect(fd, fin, -1);
  expect_log("already connected", "VSR_EDUPLICATE", before);
  before = r_log_count("ReplicaFinish MAC from replica 1 does not verify", NULL);
  uint8_t ch2[256];
  fd = hello_and_challenge(addr, 1, nd, ch2);
  assert_memory_not_equal(ch + 128, ch2 + 128, 32);
  send_expect(fd, fin, -1);
  expect_log("ReplicaFinish MAC from replica 1 does not verify", NULL, before);

  /* Wrong command where the Finish belongs (a Prepare): refused on the command, bare close. */
  before = r_log_count("where a ReplicaFinish belongs", "VSR_EAUTH_COMMAND");
  nonce(nd);
  fd = hello_and_challenge(addr, 0, nd, ch);
  vsr_header_init(h, VSR_CMD_PREPARE, 256);
  vsr_put_u128(h + 32, cluster_id);
  send_expect(fd, h, -1);
  expect_log("where a ReplicaFinish belongs", "VSR_EAUTH_COMMAND", before);
}

static void every_reject_reason_spares_real_replicas(void **state) {
  (void)state;
  struct r_node n[3];
  for (int i = 0; i < 3; i++) {
    r_options(&n[i], (uint8_t)i, 3);
    n[i].answer_prepare = true;
  }
  assert_int_equal(r_start(&n[2]), 0);
  r_set_addr(&n[1], 2, n[2].replica_addr);
  assert_int_equal(r_start(&n[1]), 0);
  assert_int_equal(r_wait(&n[2], VSR_PEER_AUTHENTICATED, 1, 1, 10 * R_SEC), 1);
  r_set_addr(&n[0], 1, n[1].replica_addr);
  r_set_addr(&n[0], 2, n[2].replica_addr);

  /* Replica 0 starts and handshakes while the attacks run. */
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, start_replica0, &n[0]), 0);
  for (int round = 0; round < 2; round++) {
    attacks_on_hello(n[2].replica_addr);
    attacks_on_finish(n[2].replica_addr);
  }
  pthread_join(t, NULL);
  assert_int_equal(atomic_load(&n[0].ready), 1);

  assert_int_equal(r_wait(&n[2], VSR_PEER_AUTHENTICATED, 0, 1, 10 * R_SEC), 1);
  assert_int_equal(r_wait(&n[1], VSR_PEER_AUTHENTICATED, 0, 1, 10 * R_SEC), 1);
  /* The real links are the only ones, and none was disturbed. */
  for (int i = 0; i < 3; i++) {
    assert_int_equal(r_count(&n[i], VSR_PEER_LOST, -1), 0);
    assert_int_equal(r_count(&n[i], VSR_PEER_AUTHENTICATED, -1), 2);
    assert_int_equal(r_stats(&n[i]).st.replicas_connected, 2);
  }
  assert_int_equal(r_frames(&n[2], VSR_CMD_PREPARE), 0); /* nothing leaked from an attacker */
  assert_int_equal(r_send(&n[0], 2, VSR_CMD_PREPARE, 1), 0);
  assert_int_equal(r_send(&n[1], 2, VSR_CMD_PREPARE, 2), 0);
  assert_int_equal(r_wait_frames(&n[2], VSR_CMD_PREPARE, 2, 10 * R_SEC), 2);
  assert_int_equal(r_wait_frames(&n[0], VSR_CMD_PREPARE_OK, 1, 10 * R_SEC), 1);
  assert_int_equal(r_wait_frames(&n[1], VSR_CMD_PREPARE_OK, 1, 10 * R_SEC), 1);
  /* Every refusal was counted by reason. */
  assert_int_equal(r_wait_errors(&n[2], VSR_EAUTH, 12, 10 * R_SEC), 12);
  assert_int_equal(r_wait_errors(&n[2], VSR_EAUTH_CLUSTER, 4, 10 * R_SEC), 4);
  assert_int_equal(r_wait_errors(&n[2], VSR_EAUTH_DIRECTION, 6, 10 * R_SEC), 6);
  assert_int_equal(r_wait_errors(&n[2], VSR_EAUTH_COMMAND, 6, 10 * R_SEC), 6);
  assert_int_equal(r_wait_errors(&n[2], VSR_EAUTH_REQUIRED, 2, 10 * R_SEC), 2);
  assert_int_equal(r_wait_errors(&n[2], VSR_EDUPLICATE, 2, 10 * R_SEC), 2);
  for (int i = 0; i < 3; i++) r_stop(&n[i], true);
}

/* A silent inbound connection is closed at handshake_grace. */
static void silent_connection_closed_at_deadline(void **state) {
  (void)state;
  struct r_node n;
  r_options(&n, 1, 2);
  n.opts.handshake_grace_ns = 200000000ull;
  assert_int_equal(r_start(&n), 0);
  int before = r_log_count("handshake not finished", "VSR_EHANDSHAKE_TIMEOUT");
  int fd = vsrt_connect(n.replica_addr);
  assert_true(fd >= 0);
  assert_true(r_wait_eof(fd, 10 * R_SEC));
  close(fd);
  expect_log("handshake not finished", "VSR_EHANDSHAKE_TIMEOUT", before);
  /* Mid-handshake too: Hello answered, Finish never sent. */
  uint8_t nd[32], ch[256];
  nonce(nd);
  fd = hello_and_challenge(n.replica_addr, 0, nd, ch);
  assert_true(r_wait_eof(fd, 10 * R_SEC));
  close(fd);
  assert_int_equal(r_wait_errors(&n, VSR_EHANDSHAKE_TIMEOUT, 2, 10 * R_SEC), 2);
  assert_int_equal(r_stats(&n).st.handshakes_inflight, 0);
  r_stop(&n, true);
}

/* ---- a hand-made acceptor against a real dialer -------------------------------------------- */

static int raw_listen(char *addr, size_t len) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t alen = sizeof a;
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
  assert_int_equal(listen(fd, 16), 0);
  getsockname(fd, (struct sockaddr *)&a, &alen);
  snprintf(addr, len, "127.0.0.1:%u", ntohs(a.sin_port));
  return fd;
}

/* Accepts the dialer's next connection and reads its Hello. */
static int raw_accept_hello(int lfd, uint8_t hello[256]) {
  struct pollfd p = {lfd, POLLIN, 0};
  assert_true(poll(&p, 1, 10000) == 1);
  int fd = accept(lfd, NULL, NULL);
  assert_true(fd >= 0);
  struct timeval tv = {10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  assert_int_equal(r_read_header(fd, hello), 1);
  assert_int_equal(hello[60], VSR_CMD_REPLICA_HELLO);
  assert_int_equal(hello[61], 0);
  return fd;
}

/* A Challenge from "replica 1" with MAC over (nonce_d, |na|) under |key|; |send_na| goes on the
 * wire (differs from |na| to model an altered nonce). */
static void challenge_frame(uint8_t out[256], const uint8_t key[32], const uint8_t *nd,
                            const uint8_t *na, const uint8_t *send_na) {
  struct vsri_auth_transcript t;
  memset(&t, 0, sizeof t);
  t.cluster = cluster_id;
  t.dialer_id = 0;
  t.acceptor_id = 1;
  memcpy(t.nonce_d, nd, 32);
  memcpy(t.nonce_a, na, 32);
  vsr_header_init(out, VSR_CMD_REPLICA_CHALLENGE, 256);
  vsr_put_u128(out + 32, cluster_id);
  out[61] = 1;
  memcpy(out + 128, send_na, 32);
  vsri_auth_mac(key, &t, 2, out + 128 + VSRI_AUTH_MAC_OFFSET);
}

static void dialer_refuses_bad_challenges(void **state) {
  (void)state;
  char laddr[64];
  int lfd = raw_listen(laddr, sizeof laddr);
  struct r_node n;
  r_options(&n, 0, 2);
  r_set_addr(&n, 1, laddr);
  n.opts.reconnect_period_ns = 50000000ull;
  n.opts.handshake_grace_ns = 300000000ull;
  assert_int_equal(r_start(&n), 0);
  uint8_t hello[256], out[256], na[32];
  int fd, before;

  /* No answer at all: the dialer's deadline closes it (reference
   * dialer_times_out_when_acceptor_sends_no_challenge), then the sweep dials again. */
  before = r_log_count("handshake not finished", "VSR_EHANDSHAKE_TIMEOUT");
  fd = raw_accept_hello(lfd, hello);
  assert_true(r_wait_eof(fd, 10 * R_SEC));
  close(fd);
  expect_log("handshake not finished", "VSR_EHANDSHAKE_TIMEOUT", before);

  /* Reject statuses: the dialer logs the acceptor's reason; an unknown byte reads as 1. */
  uint8_t statuses[] = {VSRI_AUTH_CLUSTER_MISMATCH, VSRI_AUTH_DIRECTIONAL_RULE, 77};
  const char *names[] = {"status 2 cluster_mismatch", "status 3 directional_rule",
                         "status 1 unknown_command"};
  for (int i = 0; i < 3; i++) {
    before = r_log_count("refused our ReplicaHello", names[i]);
    fd = raw_accept_hello(lfd, hello);
    vsr_header_init(out, VSR_CMD_REPLICA_CHALLENGE, 256);
    vsr_put_u128(out + 32, cluster_id);
    out[128 + VSRI_AUTH_STATUS_OFFSET] = statuses[i];
    assert_true(vsrt_write_all(fd, out, 256));
    assert_true(r_wait_eof(fd, 10 * R_SEC));
    close(fd);
    expect_log("refused our ReplicaHello", names[i], before);
  }

  /* Altered nonce_a, wrong key, reflected Hello: the Challenge MAC does not verify. */
  for (int i = 0; i < 3; i++) {
    before = r_log_count("ReplicaChallenge MAC does not verify", NULL);
    fd = raw_accept_hello(lfd, hello);
    nonce(na);
    uint8_t na2[32];
    memcpy(na2, na, 32);
    if (i == 0) {
      na2[3] ^= 4;
      challenge_frame(out, key_a, hello + 128, na, na2);
    } else if (i == 1) {
      challenge_frame(out, key_b, hello + 128, na, na);
    } else {
      memcpy(out, hello, 256); /* the dialer's own Hello bytes, relabeled */
      out[60] = VSR_CMD_REPLICA_CHALLENGE;
    }
    assert_true(vsrt_write_all(fd, out, 256));
    uint8_t h[256];
    assert_int_equal(r_read_header(fd, h), 0); /* no Finish: closed */
    close(fd);
    expect_log("ReplicaChallenge MAC does not verify", NULL, before);
  }

  /* Wrong command where the Challenge belongs. */
  before = r_log_count("where a ReplicaChallenge belongs", "VSR_EAUTH_COMMAND");
  fd = raw_accept_hello(lfd, hello);
  vsr_header_init(out, VSR_CMD_PING, 256);
  assert_true(vsrt_write_all(fd, out, 256));
  assert_true(r_wait_eof(fd, 10 * R_SEC));
  close(fd);
  expect_log("where a ReplicaChallenge belongs", "VSR_EAUTH_COMMAND", before);
  assert_int_equal(r_count(&n, VSR_PEER_AUTHENTICATED, -1), 0);

  /* A correct Challenge: the dialer answers with a Finish whose MAC verifies, and is linked. */
  fd = raw_accept_hello(lfd, hello);
  nonce(na);
  challenge_frame(out, key_a, hello + 128, na, na);
  assert_true(vsrt_write_all(fd, out, 256));
  uint8_t fin[256], want[256];
  assert_int_equal(r_read_header(fd, fin), 1);
  finish_frame(want, key_a, 0, 1, hello + 128, na);
  assert_int_equal(fin[60], VSR_CMD_REPLICA_FINISH);
  assert_memory_equal(fin + 128 + VSRI_AUTH_MAC_OFFSET, want + 128 + VSRI_AUTH_MAC_OFFSET, 32);
  assert_int_equal(r_wait(&n, VSR_PEER_AUTHENTICATED, 1, 1, 10 * R_SEC), 1);
  /* Every failed attempt reported CONNECTED then LOST with its reason, exactly once. */
  assert_int_equal(r_count(&n, VSR_PEER_CONNECTED, 1), r_count(&n, VSR_PEER_LOST, 1) + 1);
  close(fd);
  assert_int_equal(r_wait(&n, VSR_PEER_LOST, 1, 9, 10 * R_SEC), 9);
  r_stop(&n, true);
  close(lfd);
}

int main(void) {
  vsrt_require_backend();
  r_log_capture();
  vsri_auth_derive_key(r_secret_a, strlen(r_secret_a), key_a);
  vsri_auth_derive_key(r_secret_b, strlen(r_secret_b), key_b);
  cluster_id = vsri_auth_cluster_id(R_CLUSTER);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(correct_key_registers_wrong_key_never),
      cmocka_unit_test(short_secret_refused_at_start),
      cmocka_unit_test(every_reject_reason_spares_real_replicas),
      cmocka_unit_test(silent_connection_closed_at_deadline),
      cmocka_unit_test(dialer_refuses_bad_challenges),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
