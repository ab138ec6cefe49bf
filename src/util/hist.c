/* Log-linear latency histogram (see hist.h). Bucket i holds values in [low(i), high(i)];
 * rows of VSRI_HIST_SUB buckets double in width, so the relative width stays <= 1/128. */
#include "util/hist.h"

#include <string.h>

void vsri_hist_init(struct vsri_hist *h) {
  memset(h, 0, sizeof *h);
  h->min_ns = UINT64_MAX;
}

void vsri_hist_reset(struct vsri_hist *h) { vsri_hist_init(h); }

size_t vsri_hist_bucket(uint64_t ns) {
  if (ns > VSRI_HIST_MAX_NS) ns = VSRI_HIST_MAX_NS;
  if (ns < 2 * VSRI_HIST_SUB) return (size_t)ns; /* first two rows: one value per bucket */
  unsigned top = 63u - (unsigned)__builtin_clzll(ns); /* ns in [2^top, 2^(top+1)) */
  unsigned shift = top - VSRI_HIST_SUB_BITS;          /* >= 1 here */
  uint64_t mantissa = ns >> shift;                    /* in [SUB, 2 * SUB) */
  return (size_t)(shift + 1) * VSRI_HIST_SUB + (size_t)(mantissa - VSRI_HIST_SUB);
}

uint64_t vsri_hist_bucket_low(size_t idx) {
  if (idx < 2 * VSRI_HIST_SUB) return idx;
  unsigned shift = (unsigned)(idx / VSRI_HIST_SUB) - 1;
  return (uint64_t)(idx % VSRI_HIST_SUB + VSRI_HIST_SUB) << shift;
}

uint64_t vsri_hist_bucket_high(size_t idx) {
  if (idx < 2 * VSRI_HIST_SUB) return idx;
  unsigned shift = (unsigned)(idx / VSRI_HIST_SUB) - 1;
  return vsri_hist_bucket_low(idx) + (UINT64_C(1) << shift) - 1;
}

void vsri_hist_record(struct vsri_hist *h, uint64_t ns) {
  if (ns > VSRI_HIST_MAX_NS) {
    ns = VSRI_HIST_MAX_NS;
    h->clamped++;
  }
  h->counts[vsri_hist_bucket(ns)]++;
  h->total++;
  h->sum_ns += (double)ns;
  if (ns < h->min_ns) h->min_ns = ns;
  if (ns > h->max_ns) h->max_ns = ns;
}

uint64_t vsri_hist_percentile(const struct vsri_hist *h, double pct) {
  if (h->total == 0) return 0;
  if (!(pct > 0)) return h->min_ns; /* also catches NaN */
  if (pct > 100) pct = 100;
  /* Nearest rank; the small epsilon keeps 99 % of 20000 at rank 19800, not 19801. */
  double exact = pct / 100.0 * (double)h->total;
  uint64_t rank = (uint64_t)exact;
  if ((double)rank < exact - 1e-9) rank++;
  if (rank >= h->total) return h->max_ns; /* the extremes are known exactly */
  if (rank <= 1) return h->min_ns;
  uint64_t seen = 0;
  size_t i = 0;
  for (; i < VSRI_HIST_BUCKETS; i++) {
    seen += h->counts[i];
    if (seen >= rank) break;
  }
  if (i == VSRI_HIST_BUCKETS) return h->max_ns; /* unreachable while counts and total agree */
  uint64_t lo = vsri_hist_bucket_low(i), hi = vsri_hist_bucket_high(i);
  uint64_t mid = lo + (hi - lo) / 2;
  if (mid < h->min_ns) mid = h->min_ns;
  if (mid > h->max_ns) mid = h->max_ns;
  return mid;
}

double vsri_hist_mean(const struct vsri_hist *h) {
  return h->total ? h->sum_ns / (double)h->total : 0.0;
}

void vsri_hist_merge(struct vsri_hist *dst, const struct vsri_hist *src) {
  for (size_t i = 0; i < VSRI_HIST_BUCKETS; i++) dst->counts[i] += src->counts[i];
  dst->total += src->total;
  dst->clamped += src->clamped;
  dst->sum_ns += src->sum_ns;
  if (src->min_ns < dst->min_ns) dst->min_ns = src->min_ns;
  if (src->max_ns > dst->max_ns) dst->max_ns = src->max_ns;
}
