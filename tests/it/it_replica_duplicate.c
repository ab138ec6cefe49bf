/* Duplicate replica connection (the replica-plane twin of reference
 * tests/duplicate_client_id.rs, and install_replica_conn's "already registered" rule): a second
 * connection that authenticates as a replica already linked is dropped; the first link survives
 * untouched, and nothing the second one sent is ever delivered. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/random.h>

#include <cmocka.h>

#include "replica_harness.h"

static void start_pair(struct r_node *n) {
  r_options(&n[0], 0, 2);
  r_options(&n[1], 1, 2);
  n[1].answer_prepare = true;
  assert_int_equal(r_start_cluster(n, 2), 0);
  assert_int_equal(r_wait(&n[1], VSR_PEER_AUTHENTICATED, 0, 1, 10 * R_SEC), 1);
  assert_int_equal(r_wait(&n[0], VSR_PEER_AUTHENTICATED, 1, 1, 10 * R_SEC), 1);
}

static void first_link_survives(struct r_node *n) {
  assert_int_equal(r_count(&n[1], VSR_PEER_AUTHENTICATED, -1), 1);
  assert_int_equal(r_count(&n[1], VSR_PEER_LOST, -1), 0);
  assert_int_equal(r_count(&n[0], VSR_PEER_LOST, -1), 0);
  assert_true(r_prepare_roundtrip(&n[0], 1, 7));
  assert_int_equal(r_stats(&n[1]).st.replicas_connected, 1);
}

/* A hand-made dialer holding the secret completes a handshake as replica 0 and pipelines a
 * Prepare right behind its Finish. */
static void raw_duplicate_dropped_before_delivery(void **state) {
  (void)state;
  struct r_node n[2];
  start_pair(n);
  struct vsri_auth_cfg cfg;
  assert_int_equal(vsri_auth_cfg_init(&cfg, R_CLUSTER, 0, 2, r_secret_a, strlen(r_secret_a),
                                      NULL, 0), 0);
  struct vsri_auth_hs hs;
  vsri_auth_dialer_init(&hs, &cfg, 1, NULL);
  uint8_t nd[32], out[512], ch[256];
  assert_int_equal(getrandom(nd, 32, 0), 32);
  nd[0] |= 1;
  assert_int_equal(vsri_auth_dialer_hello(&hs, nd, out), 0);
  int before = r_log_count("already connected", "VSR_EDUPLICATE");
  int fd = vsrt_connect(n[1].replica_addr);
  assert_true(fd >= 0);
  assert_true(vsrt_write_all(fd, out, 256));
  assert_int_equal(r_read_header(fd, ch), 1);
  assert_int_equal(vsri_auth_dialer_on_challenge(&hs, ch, out), 0); /* the acceptor is real */
  vsr_header_init(out + 256, VSR_CMD_PREPARE, 256);
  vsr_put_u128(out + 256 + 32, cfg.cluster);
  ((struct vsr_prepare_header *)(out + 256))->op = 999;
  vsr_frame_seal(out + 256);
  assert_true(vsrt_write_all(fd, out, 512)); /* Finish + Prepare in one write */
  assert_true(r_wait_eof(fd, 10 * R_SEC));
  close(fd);
  assert_true(r_log_wait("already connected", "VSR_EDUPLICATE", 10 * R_SEC));
  assert_true(r_log_count("already connected", "VSR_EDUPLICATE") > before);
  assert_int_equal(r_frames_op(&n[1], VSR_CMD_PREPARE, 999), 0);
  first_link_survives(n);
  assert_int_equal(r_frames_op(&n[1], VSR_CMD_PREPARE, 999), 0);
  r_stop(&n[0], true);
  r_stop(&n[1], true);
}

/* A second bus configured as replica 0 (a twin, or a restart racing the old process): each of
 * its links is dropped after the handshake, it redials every sweep, and the first replica 0
 * never notices. Frames the twin sends right after its side authenticated never arrive. */
static void twin_replica_never_installs(void **state) {
  (void)state;
  struct r_node n[2], twin;
  start_pair(n);
  r_options(&twin, 0, 2);
  r_set_addr(&twin, 1, n[1].replica_addr);
  twin.opts.reconnect_period_ns = 50000000ull;
  twin.send_on_auth = 1000;
  assert_int_equal(r_start(&twin), 0);
  /* The twin authenticates the acceptor (its side completes), then loses the link: at least
   * twice (its jittered redial may fit a third round before we look). */
  assert_true(r_wait(&twin, VSR_PEER_LOST, 1, 2, 10 * R_SEC) >= 2);
  assert_int_equal(r_wait_errors(&n[1], VSR_EDUPLICATE, 2, 10 * R_SEC) >= 2, 1);
  assert_int_equal(r_frames_op(&n[1], VSR_CMD_PREPARE, 1000), 0);
  first_link_survives(n);
  r_stop(&twin, true);
  r_stop(&n[0], true);
  r_stop(&n[1], true);
}

int main(void) {
  vsrt_require_backend();
  r_log_capture();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(raw_duplicate_dropped_before_delivery),
      cmocka_unit_test(twin_replica_never_installs),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
