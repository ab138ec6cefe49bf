/* Unit tests for the log-linear latency histogram (src/util/hist.c): bucket bounds and their
 * precision over the whole 0..60 s range, nearest-rank percentiles against a sorted reference,
 * clamping, merge and reset. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "util/hist.h"

/* ~30 KiB each: static, not on the test's stack. */
static struct vsri_hist hist_a, hist_b, hist_c;

#define REF_MAX 20000
static uint64_t ref_values[REF_MAX];

static uint64_t lcg_state = 0x9e3779b97f4a7c15u;
static uint64_t lcg_next(void) {
  lcg_state = lcg_state * 6364136223846793005u + 1442695040888963407u;
  return lcg_state >> 11;
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return (x > y) - (x < y);
}

/* Nearest rank on a sorted array, the definition the histogram approximates. */
static uint64_t ref_rank(const uint64_t *sorted, size_t n, double pct) {
  double exact = pct / 100.0 * (double)n;
  size_t rank = (size_t)exact;
  if ((double)rank < exact - 1e-9) rank++;
  if (rank < 1) rank = 1;
  return sorted[rank - 1];
}

static void assert_close(uint64_t got, uint64_t want, double rel) {
  double diff = got > want ? (double)(got - want) : (double)(want - got);
  if (diff > rel * (double)want) fail_msg("got %llu, want %llu (+-%.2f%%)",
                                          (unsigned long long)got, (unsigned long long)want,
                                          rel * 100);
}

static void test_empty_histogram_reports_zero(void **state) {
  (void)state;
  vsri_hist_init(&hist_a);
  assert_int_equal(hist_a.total, 0);
  assert_int_equal(vsri_hist_percentile(&hist_a, 50), 0);
  assert_int_equal(vsri_hist_percentile(&hist_a, 100), 0);
  assert_true(vsri_hist_mean(&hist_a) == 0.0);
}

static void test_small_values_are_exact(void **state) {
  (void)state;
  vsri_hist_init(&hist_a);
  for (uint64_t v = 0; v < 2 * VSRI_HIST_SUB; v++) {
    assert_int_equal(vsri_hist_bucket(v), v);
    assert_int_equal(vsri_hist_bucket_low(v), v);
    assert_int_equal(vsri_hist_bucket_high(v), v);
    vsri_hist_record(&hist_a, v);
  }
  assert_int_equal(vsri_hist_percentile(&hist_a, 0), 0);
  assert_int_equal(vsri_hist_percentile(&hist_a, 50), 127);
  assert_int_equal(vsri_hist_percentile(&hist_a, 100), 255);
}

/* Buckets tile 0..max without gaps or overlap, each at most 1/128 of its lower bound wide. */
static void test_buckets_tile_the_range_with_bounded_width(void **state) {
  (void)state;
  for (size_t i = 1; i < VSRI_HIST_BUCKETS; i++) {
    assert_int_equal(vsri_hist_bucket_low(i), vsri_hist_bucket_high(i - 1) + 1);
    uint64_t width = vsri_hist_bucket_high(i) - vsri_hist_bucket_low(i) + 1;
    assert_true(width * VSRI_HIST_SUB <= vsri_hist_bucket_low(i) || width == 1);
  }
  assert_true(vsri_hist_bucket_high(VSRI_HIST_BUCKETS - 1) >= VSRI_HIST_MAX_NS);
  assert_int_equal(vsri_hist_bucket(VSRI_HIST_MAX_NS), vsri_hist_bucket(UINT64_MAX));
  assert_true(vsri_hist_bucket(VSRI_HIST_MAX_NS) < VSRI_HIST_BUCKETS);
}

/* Every value from 1 us to 60 s lands in a bucket whose bounds contain it. */
static void test_values_fall_inside_their_bucket(void **state) {
  (void)state;
  for (uint64_t v = 1000; v <= VSRI_HIST_MAX_NS; v = v + v / 97 + 1) {
    size_t i = vsri_hist_bucket(v);
    assert_true(vsri_hist_bucket_low(i) <= v);
    assert_true(v <= vsri_hist_bucket_high(i));
  }
  for (int k = 0; k < 100000; k++) {
    uint64_t v = 1000 + lcg_next() % VSRI_HIST_MAX_NS;
    size_t i = vsri_hist_bucket(v);
    assert_true(vsri_hist_bucket_low(i) <= v && v <= vsri_hist_bucket_high(i));
  }
}

/* Percentiles of a spread-out sample match the sorted nearest rank within 1 %. */
static void test_percentiles_match_nearest_rank(void **state) {
  (void)state;
  static const double pcts[] = { 0, 1, 10, 50, 90, 99, 99.9, 99.99, 100 };
  vsri_hist_init(&hist_a);
  for (size_t i = 0; i < REF_MAX; i++) {
    /* log-uniform-ish over 1 us .. ~1 s */
    uint64_t v = 1000u << (lcg_next() % 20);
    v += lcg_next() % v;
    ref_values[i] = v;
    vsri_hist_record(&hist_a, v);
  }
  qsort(ref_values, REF_MAX, sizeof ref_values[0], cmp_u64);
  for (size_t k = 0; k < sizeof pcts / sizeof pcts[0]; k++)
    assert_close(vsri_hist_percentile(&hist_a, pcts[k]), ref_rank(ref_values, REF_MAX, pcts[k]),
                 0.01);
  assert_int_equal(vsri_hist_percentile(&hist_a, 0), ref_values[0]);
  assert_int_equal(vsri_hist_percentile(&hist_a, 100), ref_values[REF_MAX - 1]);
}

/* 1..100 us: the rank rule, not interpolation (p50 is the 50th value, p99 the 99th). */
static void test_rank_rule_on_known_sequence(void **state) {
  (void)state;
  vsri_hist_init(&hist_a);
  for (uint64_t us = 100; us >= 1; us--) vsri_hist_record(&hist_a, us * 1000);
  assert_close(vsri_hist_percentile(&hist_a, 50), 50000, 0.005);
  assert_close(vsri_hist_percentile(&hist_a, 99), 99000, 0.005);
  assert_close(vsri_hist_percentile(&hist_a, 99.5), 100000, 0.005);
  assert_close(vsri_hist_percentile(&hist_a, 0.5), 1000, 0.005);
  assert_true(vsri_hist_mean(&hist_a) == 50500.0);
}

static void test_values_above_range_are_clamped_and_counted(void **state) {
  (void)state;
  vsri_hist_init(&hist_a);
  vsri_hist_record(&hist_a, 5000);
  vsri_hist_record(&hist_a, UINT64_C(100000000000)); /* 100 s */
  assert_int_equal(hist_a.total, 2);
  assert_int_equal(hist_a.clamped, 1);
  assert_int_equal(hist_a.max_ns, VSRI_HIST_MAX_NS);
  assert_int_equal(vsri_hist_percentile(&hist_a, 100), VSRI_HIST_MAX_NS);
  assert_int_equal(vsri_hist_percentile(&hist_a, 50), 5000);
}

static void test_merge_equals_recording_everything_in_one(void **state) {
  (void)state;
  vsri_hist_init(&hist_a);
  vsri_hist_init(&hist_b);
  vsri_hist_init(&hist_c);
  for (int i = 0; i < 5000; i++) {
    uint64_t v = lcg_next() % (UINT64_C(1) << 34);
    vsri_hist_record(i % 3 ? &hist_a : &hist_b, v);
    vsri_hist_record(&hist_c, v);
  }
  vsri_hist_merge(&hist_a, &hist_b);
  assert_memory_equal(hist_a.counts, hist_c.counts, sizeof hist_c.counts);
  assert_int_equal(hist_a.total, hist_c.total);
  assert_int_equal(hist_a.min_ns, hist_c.min_ns);
  assert_int_equal(hist_a.max_ns, hist_c.max_ns);
  assert_int_equal(vsri_hist_percentile(&hist_a, 99), vsri_hist_percentile(&hist_c, 99));
  /* merging an empty histogram changes nothing */
  vsri_hist_init(&hist_b);
  vsri_hist_merge(&hist_a, &hist_b);
  assert_int_equal(hist_a.min_ns, hist_c.min_ns);
  assert_int_equal(hist_a.total, hist_c.total);
}

static void test_reset_forgets_everything(void **state) {
  (void)state;
  vsri_hist_init(&hist_a);
  for (uint64_t v = 1; v < 1000000; v *= 3) vsri_hist_record(&hist_a, v);
  vsri_hist_reset(&hist_a);
  vsri_hist_init(&hist_b);
  assert_memory_equal(&hist_a, &hist_b, sizeof hist_a);
  vsri_hist_record(&hist_a, 42);
  assert_int_equal(vsri_hist_percentile(&hist_a, 50), 42);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_empty_histogram_reports_zero),
    cmocka_unit_test(test_small_values_are_exact),
    cmocka_unit_test(test_buckets_tile_the_range_with_bounded_width),
    cmocka_unit_test(test_values_fall_inside_their_bucket),
    cmocka_unit_test(test_percentiles_match_nearest_rank),
    cmocka_unit_test(test_rank_rule_on_known_sequence),
    cmocka_unit_test(test_values_above_range_are_clamped_and_counted),
    cmocka_unit_test(test_merge_equals_recording_everything_in_one),
    cmocka_unit_test(test_reset_forgets_everything),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
