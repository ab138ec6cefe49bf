/* Latency histogram with log-linear buckets (the HdrHistogram layout): nanosecond values, all
 * storage inside the struct, so recording never allocates. Covers 0..60 s; every bucket is at
 * most 1/128 of its lower bound wide, so a reported value is within 0.4 % of a recorded one. */
#ifndef VSRI_HIST_H
#define VSRI_HIST_H

#include <stddef.h>
#include <stdint.h>

/* Each power of two is split into 2^VSRI_HIST_SUB_BITS linear buckets; values below
 * 2^(VSRI_HIST_SUB_BITS + 1) ns have one bucket each and are exact. */
#define VSRI_HIST_SUB_BITS 7
#define VSRI_HIST_SUB (1u << VSRI_HIST_SUB_BITS)
/* Largest value kept as is; larger values are recorded as this and counted in |clamped|. */
#define VSRI_HIST_MAX_NS UINT64_C(60000000000)
/* 60 s < 2^36 ns: exponents 7..35 give 29 bucket rows after the first (exact) row. */
#define VSRI_HIST_BUCKETS (30u * VSRI_HIST_SUB)

/* Not thread-safe: keep one per thread and merge them at the end. About 30 KiB. */
struct vsri_hist {
  uint64_t counts[VSRI_HIST_BUCKETS];
  uint64_t total;   /* values recorded, clamped ones included */
  uint64_t min_ns;  /* smallest value recorded; UINT64_MAX while empty */
  uint64_t max_ns;  /* largest value recorded (after clamping); 0 while empty */
  uint64_t clamped; /* values above VSRI_HIST_MAX_NS */
  double sum_ns;    /* for the mean; a double never overflows here */
};

/* Empties |h|. Cannot fail. */
void vsri_hist_init(struct vsri_hist *h);

/* Same as vsri_hist_init: forgets every value. Cannot fail. */
void vsri_hist_reset(struct vsri_hist *h);

/* Adds one value of |ns| nanoseconds; values above VSRI_HIST_MAX_NS are clamped to it.
 * Never allocates. Cannot fail. */
void vsri_hist_record(struct vsri_hist *h, uint64_t ns);

/* Nearest-rank percentile: the value of rank ceil(|pct| / 100 * total), |pct| clamped to
 * 0..100. The first and last rank give the exact min_ns and max_ns; any other rank gives the
 * middle of the bucket holding it, within 0.4 % of the true sample. Returns 0 when |h| is
 * empty. Cannot fail. */
uint64_t vsri_hist_percentile(const struct vsri_hist *h, double pct);

/* Mean of the recorded values in ns (clamped values count as VSRI_HIST_MAX_NS); 0 when empty.
 * Cannot fail. */
double vsri_hist_mean(const struct vsri_hist *h);

/* Adds every value of |src| to |dst| (|src| is unchanged). Cannot fail. */
void vsri_hist_merge(struct vsri_hist *dst, const struct vsri_hist *src);

/* Index of the bucket that holds |ns| (clamped like vsri_hist_record). Cannot fail. */
size_t vsri_hist_bucket(uint64_t ns);

/* Smallest and largest value that bucket |idx| (< VSRI_HIST_BUCKETS) holds. Cannot fail. */
uint64_t vsri_hist_bucket_low(size_t idx);
uint64_t vsri_hist_bucket_high(size_t idx);

#endif
