/* Redial / reconnect backoff (util/random.h) and the TCP liveness socket options
 * (transport/tcp.c): full jitter stays within its doubling cap, and the options land on the
 * socket as configured. */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "io/io.h"
#include "transport/transport.h"
#include "util/random.h"

static void backoff_within_doubling_cap(void **state) {
  (void)state;
  const uint64_t min = 100, max = 5000;
  assert_int_equal(vsri_backoff_ns(min, max, 0), 0);
  for (uint32_t k = 1; k <= 12; k++) {
    uint64_t cap = min << (k - 1);
    if (cap > max) cap = max;
    uint64_t hi = 0, lo = UINT64_MAX;
    for (int i = 0; i < 2000; i++) {
      uint64_t d = vsri_backoff_ns(min, max, k);
      assert_true(d <= cap);
      if (d > hi) hi = d;
      if (d < lo) lo = d;
    }
    /* Full jitter: 2000 draws over [0, cap] are not one value, and reach both halves. */
    assert_true(lo < cap / 2);
    assert_true(hi > cap / 2);
  }
  /* Huge attempt counts saturate at the cap instead of overflowing. */
  for (int i = 0; i < 100; i++) assert_true(vsri_backoff_ns(min, max, 1000000) <= max);
  assert_true(vsri_backoff_ns(UINT64_MAX / 2, UINT64_MAX, 70) <= UINT64_MAX);
}

static void random_below_bounds(void **state) {
  (void)state;
  assert_int_equal(vsri_random_below(0), 0);
  assert_int_equal(vsri_random_below(1), 0);
  int seen[7] = {0};
  for (int i = 0; i < 7000; i++) {
    uint64_t x = vsri_random_below(7);
    assert_true(x < 7);
    seen[x]++;
  }
  for (int i = 0; i < 7; i++) assert_true(seen[i] > 0);
}

static int opt(int fd, int level, int name) {
  int v = -1;
  socklen_t len = sizeof v;
  assert_int_equal(getsockopt(fd, level, name, &v, &len), 0);
  return v;
}

static void tcp_liveness_options_set(void **state) {
  (void)state;
  struct vsri_io *io = NULL;
  assert_int_equal(vsri_io_new(&io, NULL), 0);
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(fd >= 0);
  vsri_tcp_liveness(io, fd, 15000000000ull, 30000000000ull);
  assert_int_equal(opt(fd, SOL_SOCKET, SO_KEEPALIVE), 1);
  assert_int_equal(opt(fd, IPPROTO_TCP, TCP_KEEPIDLE), 15);
  assert_int_equal(opt(fd, IPPROTO_TCP, TCP_KEEPINTVL), 5);
  assert_int_equal(opt(fd, IPPROTO_TCP, TCP_KEEPCNT), 3);
  assert_int_equal(opt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT), 30000);
  close(fd);
  /* 0 leaves the kernel's settings alone. */
  fd = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(fd >= 0);
  vsri_tcp_liveness(io, fd, 0, 0);
  assert_int_equal(opt(fd, SOL_SOCKET, SO_KEEPALIVE), 0);
  assert_int_equal(opt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT), 0);
  close(fd);
  /* Sub-second settings round up to what the kernel can express. */
  fd = socket(AF_INET, SOCK_STREAM, 0);
  vsri_tcp_liveness(io, fd, 200000000ull, 500000ull);
  assert_int_equal(opt(fd, IPPROTO_TCP, TCP_KEEPIDLE), 1);
  assert_int_equal(opt(fd, IPPROTO_TCP, TCP_KEEPINTVL), 1);
  assert_int_equal(opt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT), 1);
  close(fd);
  vsri_io_del(io);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(backoff_within_doubling_cap),
      cmocka_unit_test(random_below_bounds),
      cmocka_unit_test(tcp_liveness_options_set),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
