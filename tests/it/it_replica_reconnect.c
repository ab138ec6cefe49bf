/* Reconnect (reference tests/reconnect.rs): a dial that fails is retried by the sweep and
 * connects once the listener appears; a replica that restarts is reconnected and frames flow
 * again; while it is away, sends to it fail at once with VSR_ENOTCONN and are counted. Both
 * directions: the restarted replica may be the acceptor or the dialer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "replica_harness.h"

static void options(struct r_node *n, uint8_t index, const char *addr1) {
  r_options(n, index, 2);
  r_set_addr(n, 1, addr1);
  n->opts.reconnect_period_ns = 100000000ull;
  n->answer_prepare = true;
}

static void roundtrip(struct r_node *from, struct r_node *to, uint8_t to_id, uint64_t op) {
  assert_true(r_prepare_roundtrip(from, to_id, op));
  assert_true(r_frames_op(to, VSR_CMD_PREPARE, op) >= 1);
}

static void late_listener_then_restarts(void **state) {
  (void)state;
  int port = r_free_port();
  assert_true(port > 0);
  char addr1[64];
  snprintf(addr1, sizeof addr1, "127.0.0.1:%d", port);
  struct r_node r0, r1;
  options(&r0, 0, addr1);
  assert_int_equal(r_start(&r0), 0);
  /* Nothing listens yet: the first dial fails, the sweep keeps trying. */
  assert_true(r_log_wait("cannot connect", addr1, 10 * R_SEC));
  assert_false(r_stats(&r0).linked[1]);
  assert_int_equal(r_send(&r0, 1, VSR_CMD_PREPARE, 1), VSR_ENOTCONN);

  options(&r1, 1, addr1);
  assert_int_equal(r_start(&r1), 0);
  assert_int_equal(r_wait(&r0, VSR_PEER_AUTHENTICATED, 1, 1, 10 * R_SEC), 1);
  roundtrip(&r0, &r1, 1, 2);

  /* The acceptor dies abruptly and comes back on the same address. */
  r_stop(&r1, false);
  assert_int_equal(r_wait(&r0, VSR_PEER_LOST, 1, 1, 10 * R_SEC), 1);
  uint64_t refused = r_stats(&r0).st.drops_not_connected;
  assert_int_equal(r_send(&r0, 1, VSR_CMD_PREPARE, 3), VSR_ENOTCONN);
  assert_int_equal(r_stats(&r0).st.drops_not_connected, refused + 1);
  options(&r1, 1, addr1);
  assert_int_equal(r_start(&r1), 0);
  assert_int_equal(r_wait(&r0, VSR_PEER_AUTHENTICATED, 1, 2, 10 * R_SEC), 2);
  roundtrip(&r0, &r1, 1, 4);

  /* The dialer restarts: the acceptor sees the loss, then the new link. */
  r_stop(&r0, true);
  assert_int_equal(r_wait(&r1, VSR_PEER_LOST, 0, 1, 10 * R_SEC), 1);
  options(&r0, 0, addr1);
  assert_int_equal(r_start(&r0), 0);
  assert_int_equal(r_wait(&r1, VSR_PEER_AUTHENTICATED, 0, 2, 10 * R_SEC), 2);
  roundtrip(&r0, &r1, 1, 5);
  assert_int_equal(r_count(&r1, VSR_PEER_LOST, 0), 1);
  r_stop(&r0, true);
  r_stop(&r1, true);
}

int main(void) {
  vsrt_require_backend();
  r_log_capture();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(late_listener_then_restarts),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
