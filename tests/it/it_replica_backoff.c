/* Replica redial with per-peer exponential backoff and full jitter (reconnect_min_ns ..
 * reconnect_period_ns): with the cap at 60 s, a fixed sweep would not dial again within the
 * test's bound; the backoff starts at 20 ms, so a late listener and a restarted acceptor are
 * both linked (outcomes, bounded waits far below the cap). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "replica_harness.h"

static void options(struct r_node *n, uint8_t index, const char *addr1) {
  r_options(n, index, 2);
  r_set_addr(n, 1, addr1);
  n->opts.reconnect_period_ns = 60 * R_SEC; /* the cap: never reached in this test */
  n->opts.reconnect_min_ns = 20000000ull;
  n->answer_prepare = true;
}

static void backoff_redials_before_the_cap(void **state) {
  (void)state;
  int port = r_free_port();
  assert_true(port > 0);
  char addr1[64];
  snprintf(addr1, sizeof addr1, "127.0.0.1:%d", port);
  struct r_node r0, r1;
  options(&r0, 0, addr1);
  assert_int_equal(r_start(&r0), 0);
  assert_true(r_log_wait("cannot connect", addr1, 10 * R_SEC));
  assert_false(r_stats(&r0).linked[1]);
  /* Comes up after the first dial failed: redialed by the backoff, not the 60 s cap. */
  options(&r1, 1, addr1);
  assert_int_equal(r_start(&r1), 0);
  assert_int_equal(r_wait(&r0, VSR_PEER_AUTHENTICATED, 1, 1, 20 * R_SEC), 1);
  /* Dies and comes back: the lost link is redialed the same way, and frames flow. */
  r_stop(&r1, false);
  assert_int_equal(r_wait(&r0, VSR_PEER_LOST, 1, 1, 10 * R_SEC), 1);
  options(&r1, 1, addr1);
  assert_int_equal(r_start(&r1), 0);
  assert_int_equal(r_wait(&r0, VSR_PEER_AUTHENTICATED, 1, 2, 20 * R_SEC), 2);
  assert_true(r_prepare_roundtrip(&r0, 1, 7));
  /* Linked: no further dials (skipping connected peers), so exactly two links were made. */
  assert_int_equal(r_count(&r0, VSR_PEER_AUTHENTICATED, 1), 2);
  r_stop(&r0, true);
  r_stop(&r1, true);
}

int main(void) {
  vsrt_require_backend();
  r_log_capture();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(backoff_redials_before_the_cap),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
