/* Reconnect sweep skips (reference tests/reconnect_skip_connected.rs): the sweep never redials a
 * replica that is connected, nor one whose dial is still in flight (connecting or handshaking);
 * once that dial ends, the next sweep dials again. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "replica_harness.h"

#define PERIOD_NS 20000000ull

static void skips_connected_peer(void **state) {
  (void)state;
  struct r_node n[2];
  r_options(&n[0], 0, 2);
  r_options(&n[1], 1, 2);
  n[0].opts.reconnect_period_ns = PERIOD_NS;
  assert_int_equal(r_start_cluster(n, 2), 0);
  assert_int_equal(r_wait(&n[0], VSR_PEER_AUTHENTICATED, 1, 1, 10 * R_SEC), 1);
  assert_int_equal(r_wait(&n[1], VSR_PEER_AUTHENTICATED, 0, 1, 10 * R_SEC), 1);
  usleep(400000); /* ~20 sweeps */
  /* A redial would show as a second CONNECTED on the dialer and a duplicate on the acceptor. */
  assert_int_equal(r_count(&n[0], VSR_PEER_CONNECTED, 1), 1);
  assert_int_equal(r_count(&n[0], VSR_PEER_LOST, -1), 0);
  assert_int_equal(r_count(&n[1], VSR_PEER_AUTHENTICATED, -1), 1);
  assert_int_equal(r_stats(&n[1]).st.errors[-VSR_EDUPLICATE], 0);
  assert_true(r_stats(&n[0]).linked[1]);
  r_stop(&n[0], true);
  r_stop(&n[1], true);
}

/* Accepts every pending connection on |lfd| for |ns|; returns how many. */
static int accept_for(int lfd, uint64_t ns, int *fds, int max, int have) {
  uint64_t end = vsrt_now() + ns;
  while (vsrt_now() < end) {
    struct pollfd p = {lfd, POLLIN, 0};
    if (poll(&p, 1, 10) != 1) continue;
    int fd = accept(lfd, NULL, NULL);
    if (fd >= 0 && have < max) fds[have++] = fd;
    else if (fd >= 0) close(fd);
  }
  return have;
}

static void skips_dial_pending_peer(void **state) {
  (void)state;
  /* A listener that accepts and never answers: the dial stays pending (handshake_grace 60 s). */
  int lfd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t alen = sizeof a;
  assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof a), 0);
  assert_int_equal(listen(lfd, 16), 0);
  getsockname(lfd, (struct sockaddr *)&a, &alen);
  char addr[64];
  snprintf(addr, sizeof addr, "127.0.0.1:%u", ntohs(a.sin_port));
  struct r_node n;
  r_options(&n, 0, 2);
  r_set_addr(&n, 1, addr);
  n.opts.reconnect_period_ns = PERIOD_NS;
  n.opts.handshake_grace_ns = 60 * R_SEC;
  assert_int_equal(r_start(&n), 0);
  int fds[8];
  int got = 0;
  uint64_t end = vsrt_now() + 10 * R_SEC;
  while (got == 0 && vsrt_now() < end) got = accept_for(lfd, 50000000ull, fds, 8, got);
  assert_int_equal(got, 1);
  got = accept_for(lfd, 400000000ull, fds, 8, got); /* ~20 sweeps */
  assert_int_equal(got, 1);
  assert_int_equal(r_stats(&n).st.handshakes_inflight, 1);
  /* The pending dial ends (the peer hangs up): the next sweep dials again. */
  close(fds[0]);
  end = vsrt_now() + 10 * R_SEC;
  while (got < 2 && vsrt_now() < end) got = accept_for(lfd, 50000000ull, fds, 8, got);
  assert_int_equal(got, 2);
  assert_int_equal(r_count(&n, VSR_PEER_LOST, 1), 1);
  r_stop(&n, true);
  for (int i = 1; i < got; i++) close(fds[i]);
  close(lfd);
}

int main(void) {
  vsrt_require_backend();
  r_log_capture();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(skips_connected_peer),
      cmocka_unit_test(skips_dial_pending_peer),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
