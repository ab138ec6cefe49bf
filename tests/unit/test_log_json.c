/* Unit tests for the JSON log format (src/util/log.c): one object a line with time, level,
 * event, peer (when the line starts with an address), reason (the VSR_E* code it names) and
 * msg; quotes, backslashes, control characters escaped and invalid UTF-8 replaced; summary
 * lines of the rate limit are objects too, with the count. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "util/log.h"

#define LINES_MAX 16
static char lines[LINES_MAX][2048];
static int nlines;
static uint64_t fake_now;

static uint64_t fake_clock(void) { return fake_now; }

static void capture(void *user, enum vsr_log_level level, const char *line) {
  (void)user;
  (void)level;
  if (nlines < LINES_MAX) snprintf(lines[nlines], sizeof lines[0], "%s", line);
  nlines++;
}

static int setup(void **state) {
  (void)state;
  nlines = 0;
  fake_now = 1000000;
  vsri_log_set_clock(fake_clock);
  vsr_log_set_handler(capture, NULL);
  vsr_log_set_level(VSR_LOG_DEBUG);
  vsr_log_set_rate(1, 1000000);
  vsr_log_set_format(VSR_LOG_JSON);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  vsr_log_set_format(VSR_LOG_TEXT);
  vsr_log_set_rate(VSR_LOG_BURST_DEFAULT, VSR_LOG_INTERVAL_NS_DEFAULT);
  vsri_log_set_clock(NULL);
  vsr_log_set_handler(NULL, NULL);
  vsr_log_set_level(VSR_LOG_INFO);
  return 0;
}

/* The line after its "time" field, which is checked for shape separately. */
static const char *after_time(const char *line) {
  assert_true(strncmp(line, "{\"time\":\"", 9) == 0);
  const char *t = line + 9;
  /* 2026-11-30T17:11:31.263Z */
  assert_int_equal(strlen(t) > 24, 1);
  for (int i = 0; i < 24; i++) {
    char c = t[i];
    if (i == 4 || i == 7) assert_int_equal(c, '-');
    else if (i == 10) assert_int_equal(c, 'T');
    else if (i == 13 || i == 16) assert_int_equal(c, ':');
    else if (i == 19) assert_int_equal(c, '.');
    else if (i == 23) assert_int_equal(c, 'Z');
    else assert_true(c >= '0' && c <= '9');
  }
  assert_int_equal(t[24], '"');
  return t + 25;
}

static void test_fields(void **state) {
  (void)state;
  VSRI_WARN("VSR-FRAME", "%s tcp: %s (%s; size %u); closing", "127.0.0.1:41234", "too large",
            "VSR_EFRAME_LARGE", 5u);
  assert_int_equal(nlines, 1);
  assert_string_equal(after_time(lines[0]),
                      ",\"level\":\"warn\",\"event\":\"VSR-FRAME\",\"peer\":\"127.0.0.1:41234\","
                      "\"reason\":\"VSR_EFRAME_LARGE\",\"msg\":\"127.0.0.1:41234 tcp: too large "
                      "(VSR_EFRAME_LARGE; size 5); closing\"}");
}

static void test_ipv6_peer_no_reason(void **state) {
  (void)state;
  VSRI_INFO("VSR-LISTEN", "%s quic: listening", "[::1]:8080");
  VSRI_ERROR("VSR-CONFIG", "max_message_size %u < %u", 1u, 256u);
  assert_int_equal(nlines, 2);
  assert_string_equal(after_time(lines[0]),
                      ",\"level\":\"info\",\"event\":\"VSR-LISTEN\",\"peer\":\"[::1]:8080\","
                      "\"msg\":\"[::1]:8080 quic: listening\"}");
  assert_string_equal(after_time(lines[1]), ",\"level\":\"error\",\"event\":\"VSR-CONFIG\","
                                            "\"msg\":\"max_message_size 1 < 256\"}");
}

static void test_escaping(void **state) {
  (void)state;
  VSRI_WARN("VSR-TEST", "q\"b\\n\nt\tc\x01 d\x7f u\xc3\xa9 bad\xff\xc3 end");
  assert_int_equal(nlines, 1);
  assert_string_equal(after_time(lines[0]),
                      ",\"level\":\"warn\",\"event\":\"VSR-TEST\",\"msg\":\"q\\\"b\\\\n\\nt\\tc"
                      "\\u0001 d\\u007f u\xc3\xa9 bad\\ufffd\\ufffd end\"}");
}

static void site(int i) { VSRI_WARN("VSR-FLOOD", "flood %d", i); }

static void test_summary_line(void **state) {
  (void)state;
  for (int i = 0; i < 4; i++) site(i); /* burst 1: three held back */
  assert_int_equal(nlines, 1);
  fake_now += 2000000;
  vsr_log_flush();
  assert_int_equal(nlines, 2);
  assert_string_equal(after_time(lines[1]),
                      ",\"level\":\"warn\",\"event\":\"VSR-FLOOD\",\"suppressed\":3,"
                      "\"span_ms\":2,\"msg\":\"3 more like this suppressed in 2 ms\"}");
}

static void test_app_event_and_text_back(void **state) {
  (void)state;
  vsr_log_event(VSR_LOG_INFO, "VSR-NODE", "replica %u running", 0u);
  assert_string_equal(after_time(lines[0]), ",\"level\":\"info\",\"event\":\"VSR-NODE\","
                                            "\"msg\":\"replica 0 running\"}");
  assert_int_equal(vsr_log_get_format(), VSR_LOG_JSON);
  vsr_log_set_format(VSR_LOG_TEXT);
  vsr_log_event(VSR_LOG_WARN, "VSR-NODE", "x");
  assert_string_equal(lines[1], "vsrbus WARN  VSR-NODE x");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_fields, setup, teardown),
      cmocka_unit_test_setup_teardown(test_ipv6_peer_no_reason, setup, teardown),
      cmocka_unit_test_setup_teardown(test_escaping, setup, teardown),
      cmocka_unit_test_setup_teardown(test_summary_line, setup, teardown),
      cmocka_unit_test_setup_teardown(test_app_event_and_text_back, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
