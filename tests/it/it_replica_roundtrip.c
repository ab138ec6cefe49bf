/* Replica round trip (reference tests/replica_roundtrip.rs): replica 0 dials replica 1, both
 * authenticate, a Prepare goes 0 -> 1 and the PrepareOk comes back; frames keep their order;
 * sends to a replica with no link fail at once with VSR_ENOTCONN and are counted. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "replica_harness.h"

static void roundtrip_prepare_and_ack(void **state) {
  (void)state;
  struct r_node n[2];
  r_options(&n[0], 0, 2);
  r_options(&n[1], 1, 2);
  n[1].answer_prepare = true;
  assert_int_equal(r_start_cluster(n, 2), 0);
  assert_int_equal(r_wait(&n[0], VSR_PEER_AUTHENTICATED, 1, 1, 10 * R_SEC), 1);
  assert_int_equal(r_wait(&n[1], VSR_PEER_AUTHENTICATED, 0, 1, 10 * R_SEC), 1);

  assert_int_equal(r_send(&n[0], 1, VSR_CMD_PREPARE, 1), 0);
  assert_int_equal(r_wait_frames(&n[1], VSR_CMD_PREPARE, 1, 10 * R_SEC), 1);
  assert_int_equal(r_wait_frames(&n[0], VSR_CMD_PREPARE_OK, 1, 10 * R_SEC), 1);
  pthread_mutex_lock(&n[1].mu);
  assert_int_equal(n[1].frames[0].peer, 0); /* origin is the replica index */
  pthread_mutex_unlock(&n[1].mu);
  pthread_mutex_lock(&n[0].mu);
  assert_int_equal(n[0].frames[0].peer, 1);
  assert_int_equal(n[0].frames[0].op, 1);
  pthread_mutex_unlock(&n[0].mu);

  /* Many frames: every one arrives, in order, each acknowledged. */
  for (uint64_t op = 2; op <= 200; op++) assert_int_equal(r_send(&n[0], 1, VSR_CMD_PREPARE, op), 0);
  assert_int_equal(r_wait_frames(&n[0], VSR_CMD_PREPARE_OK, 200, 10 * R_SEC), 200);
  pthread_mutex_lock(&n[1].mu);
  for (int i = 0; i < 200; i++) assert_int_equal(n[1].frames[i].op, (uint64_t)i + 1);
  pthread_mutex_unlock(&n[1].mu);

  /* Exactly one link each way, no loss so far. */
  struct r_stats_arg s0 = r_stats(&n[0]), s1 = r_stats(&n[1]);
  assert_int_equal(s0.st.replicas_connected, 1);
  assert_int_equal(s1.st.replicas_connected, 1);
  assert_int_equal(r_count(&n[0], VSR_PEER_LOST, -1), 0);
  assert_int_equal(r_count(&n[1], VSR_PEER_LOST, -1), 0);

  r_stop(&n[0], true);
  r_stop(&n[1], true);
}

static void send_to_unlinked_replica_fails_at_once(void **state) {
  (void)state;
  struct r_node n[3];
  r_options(&n[0], 0, 3);
  r_options(&n[1], 1, 3);
  r_options(&n[2], 2, 3);
  /* Replica 2's address points at a port nobody listens on: 0 and 1 never reach it. */
  int port = r_free_port();
  assert_true(port > 0);
  char dead[64];
  snprintf(dead, sizeof dead, "127.0.0.1:%d", port);
  assert_int_equal(r_start(&n[1]), 0);
  r_set_addr(&n[0], 1, n[1].replica_addr);
  r_set_addr(&n[0], 2, dead);
  assert_int_equal(r_start(&n[0]), 0);
  assert_int_equal(r_wait(&n[0], VSR_PEER_AUTHENTICATED, 1, 1, 10 * R_SEC), 1);

  assert_int_equal(r_send(&n[0], 2, VSR_CMD_PREPARE, 1), VSR_ENOTCONN);
  assert_int_equal(r_send(&n[0], 0, VSR_CMD_PREPARE, 1), VSR_ENOTCONN);   /* itself */
  assert_int_equal(r_send(&n[0], 200, VSR_CMD_PREPARE, 1), VSR_ENOTCONN); /* out of range */
  assert_int_equal(r_send(&n[0], 1, VSR_CMD_PREPARE, 1), 0);
  struct r_stats_arg s = r_stats(&n[0]);
  assert_int_equal(s.st.drops_not_connected, 3);
  assert_int_equal(s.st.replicas_connected, 1);
  r_stop(&n[0], true);
  r_stop(&n[1], true);
  (void)n[2];
}

/* After the handshake the bus hands frames over whatever cluster id they carry, as the reference
 * does (its consensus layer judges the cluster field); the handshake already proved the peer. */
static void foreign_cluster_after_handshake_is_delivered(void **state) {
  (void)state;
  struct r_node n[2];
  r_options(&n[0], 0, 2);
  r_options(&n[1], 1, 2);
  assert_int_equal(r_start_cluster(n, 2), 0);
  assert_int_equal(r_wait(&n[1], VSR_PEER_AUTHENTICATED, 0, 1, 10 * R_SEC), 1);
  assert_int_equal(r_wait(&n[0], VSR_PEER_AUTHENTICATED, 1, 1, 10 * R_SEC), 1);
  assert_int_equal(r_send_foreign(&n[0], 1, VSR_CMD_COMMIT), 0);
  assert_int_equal(r_wait_frames(&n[1], VSR_CMD_COMMIT, 1, 10 * R_SEC), 1);
  assert_int_equal(r_count(&n[1], VSR_PEER_LOST, -1), 0);
  r_stop(&n[0], true);
  r_stop(&n[1], true);
}

int main(void) {
  vsrt_require_backend();
  r_log_capture();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(roundtrip_prepare_and_ack),
      cmocka_unit_test(send_to_unlinked_replica_fails_at_once),
      cmocka_unit_test(foreign_cluster_after_handshake_is_delivered),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
