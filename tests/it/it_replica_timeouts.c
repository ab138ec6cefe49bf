/* Timeouts and loss reasons on the replica plane (issue 12, rows 1 and 8). A hand-made replica 0
 * authenticates to replica 1 with the real handshake, then: stays quiet for many
 * client_idle_timeouts (replica links are not idled out: VSR's heartbeats judge silence), drips
 * a frame (closed with VSR_EFRAME_TIMEOUT), or resets its socket (reported and logged as a reset,
 * not as a close at a frame boundary). */
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/random.h>

#include <cmocka.h>

#include "replica_harness.h"

#include "bus/auth.h"

static uint8_t key_a[32];
static vsr_u128 cluster_id;

/* Replica 1 of 2 (it never dials: only lower ids dial higher ones). */
static void start_replica1(struct r_node *n) {
  r_options(n, 1, 2);
  n->opts.frame_timeout_ns = 300000000ull;
  n->opts.client_idle_timeout_ns = 100000000ull; /* must not apply to replica links */
  assert_int_equal(r_start(n), 0);
}

/* Dials |addr| as replica 0 and completes the handshake. Returns the socket. */
static int fake_replica0(const char *addr) {
  int fd = vsrt_connect(addr);
  assert_true(fd >= 0);
  uint8_t nd[32], h[256], ch[256];
  assert_int_equal(getrandom(nd, 32, 0), 32);
  nd[0] |= 1;
  r_hello(h, cluster_id, 0, nd);
  assert_true(vsrt_write_all(fd, h, 256));
  assert_int_equal(r_read_header(fd, ch), 1);
  assert_int_equal(ch[60], VSR_CMD_REPLICA_CHALLENGE);
  assert_int_equal(ch[128 + VSRI_AUTH_STATUS_OFFSET], VSRI_AUTH_OK);
  struct vsri_auth_transcript t;
  memset(&t, 0, sizeof t);
  t.cluster = cluster_id;
  t.dialer_id = 0;
  t.acceptor_id = 1;
  memcpy(t.nonce_d, nd, 32);
  memcpy(t.nonce_a, ch + 128, 32);
  vsr_header_init(h, VSR_CMD_REPLICA_FINISH, 256);
  vsr_put_u128(h + 32, cluster_id);
  h[61] = 0;
  vsri_auth_mac(key_a, &t, 1, h + 128 + VSRI_AUTH_MAC_OFFSET);
  assert_true(vsrt_write_all(fd, h, 256));
  return fd;
}

static int lost_reason(struct r_node *n) {
  pthread_mutex_lock(&n->mu);
  int r = 1;
  for (int i = 0; i < n->nevents; i++) {
    if (n->events[i].kind == VSR_PEER_LOST) r = n->events[i].reason;
  }
  pthread_mutex_unlock(&n->mu);
  return r;
}

/* Quiet for ten client_idle_timeouts: the link stays. Then a header dripped byte by byte is
 * cut at frame_timeout with VSR_EFRAME_TIMEOUT. */
static void quiet_link_kept_dripped_frame_cut(void **state) {
  (void)state;
  struct r_node n;
  start_replica1(&n);
  int fd = fake_replica0(n.replica_addr);
  assert_int_equal(r_wait(&n, VSR_PEER_AUTHENTICATED, 0, 1, 10 * R_SEC), 1);
  usleep(1000000); /* 10 x client_idle_timeout, 3 x frame_timeout, nothing in progress */
  assert_int_equal(r_count(&n, VSR_PEER_LOST, -1), 0);
  uint8_t h[256];
  vsr_header_init(h, VSR_CMD_PREPARE, 256);
  bool closed = false;
  uint64_t end = vsrt_now() + 20 * R_SEC;
  for (int i = 0; i < 255 && !closed && vsrt_now() < end; i++) {
    if (send(fd, h + i, 1, MSG_NOSIGNAL) != 1) break;
    usleep(20000);
    closed = r_count(&n, VSR_PEER_LOST, 0) > 0;
  }
  assert_int_equal(r_wait(&n, VSR_PEER_LOST, 0, 1, 10 * R_SEC), 1);
  assert_int_equal(lost_reason(&n), VSR_EFRAME_TIMEOUT);
  assert_int_equal(r_stats(&n).st.errors[-VSR_EFRAME_TIMEOUT], 1);
  assert_true(r_wait_eof(fd, 10 * R_SEC));
  close(fd);
  r_stop(&n, true);
}

/* A replica whose socket is reset (SO_LINGER 0: what a killed process with unread input sends)
 * is lost with VSR_ERESET, and the log line says so. */
static void reset_link_reported_as_reset(void **state) {
  (void)state;
  struct r_node n;
  start_replica1(&n);
  int fd = fake_replica0(n.replica_addr);
  assert_int_equal(r_wait(&n, VSR_PEER_AUTHENTICATED, 0, 1, 10 * R_SEC), 1);
  int before = r_log_count("link to replica 0 lost", "connection reset by peer");
  struct linger lg = {1, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  close(fd);
  assert_int_equal(r_wait(&n, VSR_PEER_LOST, 0, 1, 10 * R_SEC), 1);
  assert_int_equal(lost_reason(&n), VSR_ERESET);
  assert_true(r_log_wait("link to replica 0 lost", "connection reset by peer", 5 * R_SEC));
  assert_true(r_log_count("link to replica 0 lost", "connection reset by peer") > before);
  r_stop(&n, true);
}

int main(void) {
  vsrt_require_backend();
  r_log_capture();
  vsri_auth_derive_key(r_secret_a, strlen(r_secret_a), key_a);
  cluster_id = vsri_auth_cluster_id(R_CLUSTER);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(quiet_link_kept_dripped_frame_cut),
      cmocka_unit_test(reset_link_reported_as_reset),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
