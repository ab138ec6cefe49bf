/* Address failures (src/transport/addr.c), each in its own words: a text that does not parse
 * says why, a bind errno maps to VSR_EADDRINUSE or VSR_EBIND, a connect errno to
 * VSR_ECONNREFUSED, VSR_EUNREACH, VSR_ETIMEDOUT, VSR_ERESET or VSR_EIO; and each of those codes
 * has its own name and text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "transport/transport.h"
#include "vsrbus/error.h"

static void parses_and_says_why_not(void **state) {
  (void)state;
  struct sockaddr_storage sa;
  socklen_t len;
  assert_int_equal(vsri_parse_addr("127.0.0.1:8090", &sa, &len), 0);
  assert_int_equal(sa.ss_family, AF_INET);
  assert_int_equal(vsri_parse_addr("[::1]:0", &sa, &len), 0);
  assert_int_equal(sa.ss_family, AF_INET6);
  struct {
    const char *text, *why;
  } bad[] = {
      {"127.0.0.1", "expected host:port"},
      {"127.0.0.1:99999", "the port is not a number in 0..65535"},
      {"127.0.0.1:", "the port is not a number in 0..65535"},
      {"127.0.0.1:80x", "the port is not a number in 0..65535"},
      {"[::1]8090", "expected [v6-address]:port"},
      {"999.1.1.1:80", NULL}, /* getaddrinfo's own words */
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    assert_int_equal(vsri_parse_addr(bad[i].text, &sa, &len), VSR_EADDR);
    const char *why = vsri_parse_addr_why();
    assert_non_null(why);
    if (bad[i].why) assert_string_equal(why, bad[i].why);
    else assert_true(strlen(why) > 0 && strcmp(why, "ok") != 0);
  }
  assert_int_equal(vsri_parse_addr(NULL, &sa, &len), VSR_EADDR);
  assert_string_equal(vsri_parse_addr_why(), "no address");
}

static void errno_maps(void **state) {
  (void)state;
  assert_int_equal(vsri_bind_reason(EADDRINUSE), VSR_EADDRINUSE);
  assert_int_equal(vsri_bind_reason(EADDRNOTAVAIL), VSR_EBIND);
  assert_int_equal(vsri_bind_reason(EACCES), VSR_EBIND);
  assert_int_equal(vsri_sock_reason(ECONNREFUSED), VSR_ECONNREFUSED);
  assert_int_equal(vsri_sock_reason(EHOSTUNREACH), VSR_EUNREACH);
  assert_int_equal(vsri_sock_reason(ENETUNREACH), VSR_EUNREACH);
  assert_int_equal(vsri_sock_reason(ETIMEDOUT), VSR_ETIMEDOUT);
  assert_int_equal(vsri_sock_reason(ECONNRESET), VSR_ERESET);
  assert_int_equal(vsri_sock_reason(EPIPE), VSR_ERESET);
  assert_int_equal(vsri_sock_reason(EBADF), VSR_EIO);
  /* Distinct codes, distinct words: none reads like another. */
  const int codes[] = {VSR_EADDR, VSR_EADDRINUSE, VSR_EBIND, VSR_ECONNREFUSED, VSR_EUNREACH};
  for (size_t i = 0; i < 5; i++)
    for (size_t j = i + 1; j < 5; j++)
      assert_string_not_equal(vsr_strerror(codes[i]), vsr_strerror(codes[j]));
  assert_string_equal(vsr_strerror(VSR_ECONNREFUSED), "connection refused");
  assert_string_equal(vsr_strerror(VSR_EADDRINUSE), "address already in use");
  assert_string_equal(vsr_errname(VSR_EUNREACH), "VSR_EUNREACH");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(parses_and_says_why_not),
      cmocka_unit_test(errno_maps),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
