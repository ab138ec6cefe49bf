/* Connection-lost notification (reference tests/connection_lost_notify.rs): whatever notices a
 * dead link first - the reader (EOF, reset) or the writer (broken pipe while frames stream) -
 * VSR_PEER_LOST fires exactly once, with the replica's id and a reason, the link is evicted, and
 * sends to it fail at once. Both ends: the dialer losing its acceptor and the reverse. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "replica_harness.h"

static void expect_single_loss(struct r_node *n, uint8_t id) {
  assert_int_equal(r_wait(n, VSR_PEER_LOST, id, 1, 10 * R_SEC), 1);
  usleep(200000); /* whichever half noticed second must stay silent */
  assert_int_equal(r_count(n, VSR_PEER_LOST, -1), 1);
  pthread_mutex_lock(&n->mu);
  for (int i = 0; i < n->nevents; i++) {
    if (n->events[i].kind != VSR_PEER_LOST) continue;
    assert_int_equal(n->events[i].id, id);
    assert_true(n->events[i].reason < 0);
  }
  pthread_mutex_unlock(&n->mu);
  assert_false(r_stats(n).linked[id]);
  assert_int_equal(r_stats(n).st.replicas_connected, 0);
  assert_int_equal(r_send(n, id, VSR_CMD_PREPARE, 1), VSR_ENOTCONN);
}

static void start_pair(struct r_node *n) {
  r_options(&n[0], 0, 2);
  r_options(&n[1], 1, 2);
  assert_int_equal(r_start_cluster(n, 2), 0);
  assert_int_equal(r_wait(&n[0], VSR_PEER_AUTHENTICATED, 1, 1, 10 * R_SEC), 1);
  assert_int_equal(r_wait(&n[1], VSR_PEER_AUTHENTICATED, 0, 1, 10 * R_SEC), 1);
}

static void acceptor_shuts_down(void **state) {
  (void)state;
  struct r_node n[2];
  start_pair(n);
  r_stop(&n[1], true);
  expect_single_loss(&n[0], 1);
  r_stop(&n[0], true);
}

/* The dialer keeps its queue busy while the acceptor vanishes without a goodbye: reader and
 * writer both fail. */
static void acceptor_dies_while_streaming(void **state) {
  (void)state;
  struct r_node n[2];
  start_pair(n);
  atomic_store(&n[0].pump_to, 1);
  assert_true(r_wait_frames(&n[1], VSR_CMD_PREPARE, 100, 10 * R_SEC) >= 100);
  r_stop(&n[1], false);
  expect_single_loss(&n[0], 1);
  atomic_store(&n[0].pump_to, -1);
  r_stop(&n[0], true);
}

static void dialer_dies_while_streaming(void **state) {
  (void)state;
  struct r_node n[2];
  start_pair(n);
  atomic_store(&n[1].pump_to, 0);
  assert_true(r_wait_frames(&n[0], VSR_CMD_PREPARE, 100, 10 * R_SEC) >= 100);
  r_stop(&n[0], false);
  expect_single_loss(&n[1], 0);
  atomic_store(&n[1].pump_to, -1);
  r_stop(&n[1], true);
}

int main(void) {
  vsrt_require_backend();
  r_log_capture();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(acceptor_shuts_down),
      cmocka_unit_test(acceptor_dies_while_streaming),
      cmocka_unit_test(dialer_dies_while_streaming),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
