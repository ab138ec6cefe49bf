/* Handshake flood: half-open connections that never speak hold at most max_inflight_handshakes
 * slots; beyond the cap the oldest pending handshake is closed (counted as VSR_ELIMIT, logged at
 * most once a second), so a real replica dialing during the flood still gets in and its link
 * carries frames. The deadline then clears whatever is left. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "replica_harness.h"

#define CAP 8
#define FLOOD 100
#define LATE 50

struct flood {
  const char *addr;
  int fds[LATE];
};

static void *flood_more(void *arg) {
  struct flood *f = arg;
  for (int i = 0; i < LATE; i++) {
    f->fds[i] = vsrt_connect(f->addr);
    usleep(500);
  }
  return NULL;
}

static void real_replica_gets_in(void **state) {
  (void)state;
  struct r_node n[2];
  r_options(&n[0], 0, 2);
  r_options(&n[1], 1, 2);
  n[1].opts.max_inflight_handshakes = CAP;
  n[1].opts.handshake_grace_ns = 60 * R_SEC; /* only the cap can free a slot */
  n[1].answer_prepare = true;
  assert_int_equal(r_start(&n[1]), 0);

  int fds[FLOOD];
  for (int i = 0; i < FLOOD; i++) {
    fds[i] = vsrt_connect(n[1].replica_addr);
    assert_true(fds[i] >= 0);
  }
  /* Everything but the newest CAP connections is closed at once. */
  for (int i = 0; i < FLOOD - CAP; i++) assert_true(r_wait_eof(fds[i], 10 * R_SEC));
  assert_int_equal(r_wait_errors(&n[1], VSR_ELIMIT, FLOOD - CAP, 10 * R_SEC), FLOOD - CAP);
  struct r_stats_arg s = r_stats(&n[1]);
  assert_int_equal(s.st.handshakes_inflight, CAP);
  int lines = r_log_count("inbound handshakes in flight", "VSR_ELIMIT");
  assert_true(lines >= 1 && lines < FLOOD - CAP); /* rate-limited, not one per connection */

  /* The real replica 0 dials while the flood goes on. */
  struct flood f = {.addr = n[1].replica_addr};
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, flood_more, &f), 0);
  r_set_addr(&n[0], 1, n[1].replica_addr);
  n[0].opts.reconnect_period_ns = 100000000ull;
  assert_int_equal(r_start(&n[0]), 0);
  pthread_join(t, NULL);
  assert_int_equal(r_wait(&n[1], VSR_PEER_AUTHENTICATED, 0, 1, 10 * R_SEC), 1);
  assert_int_equal(r_wait(&n[0], VSR_PEER_AUTHENTICATED, 1, 1, 10 * R_SEC), 1);
  assert_int_equal(r_send(&n[0], 1, VSR_CMD_PREPARE, 1), 0);
  assert_int_equal(r_wait_frames(&n[0], VSR_CMD_PREPARE_OK, 1, 10 * R_SEC), 1);
  s = r_stats(&n[1]);
  assert_true(s.st.handshakes_inflight <= CAP);
  assert_int_equal(r_count(&n[1], VSR_PEER_LOST, -1), 0);

  for (int i = 0; i < FLOOD; i++) close(fds[i]);
  for (int i = 0; i < LATE; i++) {
    if (f.fds[i] >= 0) close(f.fds[i]);
  }
  /* Hung-up floods release their slots. */
  uint64_t end = vsrt_now() + 10 * R_SEC;
  while (r_stats(&n[1]).st.handshakes_inflight > 0 && vsrt_now() < end) usleep(2000);
  assert_int_equal(r_stats(&n[1]).st.handshakes_inflight, 0);
  r_stop(&n[0], true);
  r_stop(&n[1], true);
}

int main(void) {
  vsrt_require_backend();
  r_log_capture();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(real_replica_gets_in),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
