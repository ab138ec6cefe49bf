/* Directional connection (reference tests/directional_connection.rs): every replica listens and
 * dials at once, whatever the start order; each pair ends with exactly one connection, dialed by
 * the lower id and accepted by the higher one, and the reconnect sweeps add none. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "replica_harness.h"

#define N 3

/* Starts N replicas on pre-picked ports in |order|; retries with fresh ports if one was taken
 * in between (the probe and the bind are not atomic). */
static void start_all(struct r_node *n, const int *order) {
  for (int attempt = 0; attempt < 5; attempt++) {
    char addrs[N][64];
    for (int i = 0; i < N; i++) snprintf(addrs[i], sizeof addrs[i], "127.0.0.1:%d", r_free_port());
    for (int i = 0; i < N; i++) {
      r_options(&n[i], (uint8_t)i, N);
      n[i].opts.reconnect_period_ns = 20000000ull;
      for (int j = 0; j < N; j++) r_set_addr(&n[i], j, addrs[j]);
    }
    int k, err = 0;
    for (k = 0; k < N && !err; k++) err = r_start(&n[order[k]]);
    if (!err) return;
    for (int s = 0; s < k - 1; s++) r_stop(&n[order[s]], false);
    assert_int_equal(err, VSR_EADDRINUSE);
  }
  fail_msg("no free ports after 5 attempts");
}

static void check_one_link_per_pair(struct r_node *n) {
  for (int i = 0; i < N; i++) {
    for (int j = 0; j < N; j++) {
      if (j != i) assert_int_equal(r_wait(&n[i], VSR_PEER_AUTHENTICATED, j, 1, 10 * R_SEC), 1);
    }
  }
  /* Let the 20 ms sweeps run many times over: none may add or disturb a connection. */
  usleep(400000);
  for (int i = 0; i < N; i++) {
    struct r_stats_arg s = r_stats(&n[i]);
    assert_int_equal(s.st.replicas_connected, N - 1);
    for (int j = 0; j < N; j++) {
      if (j == i) continue;
      assert_true(s.linked[j]);
      assert_int_equal(s.dialed[j], i < j); /* the lower id dialed */
      assert_int_equal(r_count(&n[i], VSR_PEER_AUTHENTICATED, j), 1);
      /* Only our own dials ever report CONNECTED before authenticating: one per pair. */
      assert_int_equal(r_count(&n[i], VSR_PEER_CONNECTED, j), 1);
    }
    assert_int_equal(r_count(&n[i], VSR_PEER_LOST, -1), 0);
    assert_int_equal(s.st.errors[-VSR_EDUPLICATE], 0);
    assert_int_equal(s.st.errors[-VSR_EAUTH_DIRECTION], 0);
  }
  for (int i = 0; i < N; i++) r_stop(&n[i], true);
}

static void lowest_first(void **state) {
  (void)state;
  struct r_node n[N];
  const int order[N] = {0, 1, 2}; /* early dials fail; the sweep completes the mesh */
  start_all(n, order);
  check_one_link_per_pair(n);
}

static void highest_first(void **state) {
  (void)state;
  struct r_node n[N];
  const int order[N] = {2, 1, 0};
  start_all(n, order);
  check_one_link_per_pair(n);
}

static void middle_first(void **state) {
  (void)state;
  struct r_node n[N];
  const int order[N] = {1, 2, 0};
  start_all(n, order);
  check_one_link_per_pair(n);
}

int main(void) {
  vsrt_require_backend();
  r_log_capture();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(lowest_first),
      cmocka_unit_test(highest_first),
      cmocka_unit_test(middle_first),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
