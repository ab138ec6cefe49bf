/* Unit tests for the log rate limit (src/util/log.c) on a fake clock: a burst per call site,
 * one more line per interval, the "N more like this suppressed" line with the exact N when the
 * interval ends (at the site's next line, at a loop tick, or at a flush), independent sites,
 * DEBUG unlimited, burst 0 unlimited. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "util/log.h"

#define LINES_MAX 256
static char lines[LINES_MAX][256];
static int levels[LINES_MAX];
static int nlines;
static uint64_t fake_now;
#define IVL 1000000ull /* the interval: 1 ms of fake time */

static uint64_t fake_clock(void) { return fake_now; }

static void capture(void *user, enum vsr_log_level level, const char *line) {
  (void)user;
  if (nlines < LINES_MAX) {
    snprintf(lines[nlines], sizeof lines[0], "%s", line);
    levels[nlines] = (int)level;
  }
  nlines++;
}

static int count(const char *needle) {
  int n = 0;
  for (int i = 0; i < nlines && i < LINES_MAX; i++) n += strstr(lines[i], needle) != NULL;
  return n;
}

static int setup(void **state) {
  (void)state;
  nlines = 0;
  fake_now = 1000000;
  vsri_log_set_clock(fake_clock);
  vsr_log_set_handler(capture, NULL);
  vsr_log_set_level(VSR_LOG_DEBUG);
  vsr_log_set_rate(3, IVL);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  vsr_log_set_rate(VSR_LOG_BURST_DEFAULT, VSR_LOG_INTERVAL_NS_DEFAULT);
  vsri_log_set_clock(NULL);
  vsr_log_set_handler(NULL, NULL);
  vsr_log_set_level(VSR_LOG_INFO);
  return 0;
}

static void site_a(int i) { VSRI_WARN("VSR-TEST", "event a %d", i); }
static void site_b(int i) { VSRI_WARN("VSR-TEST", "event b %d", i); }
static void site_err(int i) { VSRI_ERROR("VSR-TEST", "event a %d", i); }

static void burst_then_one_summary_per_interval(void **state) {
  (void)state;
  for (int i = 0; i < 10; i++) site_a(i);
  assert_int_equal(nlines, 3); /* the burst */
  assert_int_equal(count("event a 2"), 1);
  assert_int_equal(count("event a 3"), 0);
  /* Half an interval later: nothing due yet; the tick says when it is. */
  fake_now += IVL / 2;
  assert_int_equal(vsri_log_tick(fake_now), 1000000 + IVL);
  assert_int_equal(nlines, 3);
  /* The interval ends: the loop's tick writes the count. */
  fake_now += IVL / 2;
  assert_int_equal(vsri_log_tick(fake_now), 0);
  assert_int_equal(nlines, 4);
  assert_string_equal(lines[3], "vsrbus WARN  VSR-TEST 7 more like this suppressed in 1 ms");
  /* One token came back with the interval: one line, then counting again. */
  site_a(10);
  assert_int_equal(nlines, 5);
  assert_int_equal(count("event a 10"), 1);
  for (int i = 11; i < 16; i++) site_a(i);
  fake_now += IVL / 2;
  site_a(16);
  assert_int_equal(nlines, 5);
  /* The site's own next line, an interval after the first held back, carries the count. */
  fake_now += IVL / 2;
  site_a(17);
  assert_int_equal(nlines, 7);
  assert_string_equal(lines[5], "vsrbus WARN  VSR-TEST 6 more like this suppressed in 1 ms");
  assert_int_equal(count("event a 17"), 1);
}

static void sites_are_independent(void **state) {
  (void)state;
  for (int i = 0; i < 10; i++) site_a(i);
  for (int i = 0; i < 10; i++) site_b(i);
  assert_int_equal(count("event a"), 3);
  assert_int_equal(count("event b"), 3);
  vsr_log_flush(); /* before the interval: every pending count, now */
  assert_int_equal(count("7 more like this suppressed"), 2);
  vsr_log_flush();
  assert_int_equal(count("more like this suppressed"), 2); /* nothing pending twice */
  assert_int_equal(vsri_log_tick(fake_now + 5 * IVL), 0);
}

static void summary_takes_the_most_severe_level(void **state) {
  (void)state;
  for (int i = 0; i < 3; i++) site_err(i);
  site_err(3);
  site_err(4);
  assert_int_equal(nlines, 3);
  vsr_log_flush();
  assert_int_equal(nlines, 4);
  assert_int_equal(levels[3], VSR_LOG_ERROR);
  assert_non_null(strstr(lines[3], "vsrbus ERROR VSR-TEST 2 more like this suppressed"));
}

static void debug_and_burst_zero_are_unlimited(void **state) {
  (void)state;
  for (int i = 0; i < 50; i++) VSRI_DEBUG("VSR-TEST", "debug %d", i);
  assert_int_equal(nlines, 50);
  vsr_log_set_rate(0, 0);
  for (int i = 0; i < 50; i++) site_a(i);
  assert_int_equal(nlines, 100);
  assert_int_equal(count("suppressed"), 0);
}

static void level_filter_comes_first(void **state) {
  (void)state;
  vsr_log_set_level(VSR_LOG_ERROR);
  for (int i = 0; i < 10; i++) site_a(i); /* filtered: not counted as suppressed either */
  vsr_log_flush();
  assert_int_equal(nlines, 0);
  vsr_log_set_level(VSR_LOG_DEBUG);
  site_a(0);
  assert_int_equal(nlines, 1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(burst_then_one_summary_per_interval, setup, teardown),
      cmocka_unit_test_setup_teardown(sites_are_independent, setup, teardown),
      cmocka_unit_test_setup_teardown(summary_takes_the_most_severe_level, setup, teardown),
      cmocka_unit_test_setup_teardown(debug_and_burst_zero_are_unlimited, setup, teardown),
      cmocka_unit_test_setup_teardown(level_filter_comes_first, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
