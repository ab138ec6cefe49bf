/* Header-only log-linear latency histogram for the baseline programs: the same bucket layout
 * as src/util/hist.c (128 linear buckets per power of two, ns values, 0..60 s, fixed array,
 * no allocation per sample), kept separate so the baselines build with a bare `cc`. */
#ifndef BL_HIST_H
#define BL_HIST_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define HIST_SUB_BITS 7
#define HIST_SUB (1u << HIST_SUB_BITS)
#define HIST_MAX_NS UINT64_C(60000000000)
#define HIST_BUCKETS (30u * HIST_SUB) /* 60 s < 2^36 ns */

struct hist {
  uint64_t counts[HIST_BUCKETS];
  uint64_t total, min_ns, max_ns; /* min_ns is UINT64_MAX while empty */
};

static inline void hist_init(struct hist *h) {
  memset(h, 0, sizeof *h);
  h->min_ns = UINT64_MAX;
}

static inline size_t hist_bucket(uint64_t ns) {
  if (ns > HIST_MAX_NS) ns = HIST_MAX_NS;
  if (ns < 2 * HIST_SUB) return (size_t)ns;
  unsigned shift = 63u - (unsigned)__builtin_clzll(ns) - HIST_SUB_BITS;
  return (size_t)(shift + 1) * HIST_SUB + (size_t)((ns >> shift) - HIST_SUB);
}

static inline uint64_t hist_low(size_t i) {
  if (i < 2 * HIST_SUB) return i;
  return (uint64_t)(i % HIST_SUB + HIST_SUB) << (i / HIST_SUB - 1);
}

static inline void hist_record(struct hist *h, uint64_t ns) {
  if (ns > HIST_MAX_NS) ns = HIST_MAX_NS;
  h->counts[hist_bucket(ns)]++;
  h->total++;
  if (ns < h->min_ns) h->min_ns = ns;
  if (ns > h->max_ns) h->max_ns = ns;
}

/* Nearest rank ceil(pct/100 * total); first/last rank exact, others the bucket middle. */
static inline uint64_t hist_pct(const struct hist *h, double pct) {
  if (h->total == 0) return 0;
  double exact = pct / 100.0 * (double)h->total;
  uint64_t rank = (uint64_t)exact, seen = 0;
  if ((double)rank < exact - 1e-9) rank++;
  if (rank <= 1) return h->min_ns;
  if (rank >= h->total) return h->max_ns;
  size_t i = 0;
  while (i < HIST_BUCKETS - 1 && (seen += h->counts[i]) < rank) i++;
  uint64_t lo = hist_low(i), width = i < 2 * HIST_SUB ? 1 : UINT64_C(1) << (i / HIST_SUB - 1);
  uint64_t mid = lo + (width - 1) / 2;
  return mid < h->min_ns ? h->min_ns : mid > h->max_ns ? h->max_ns : mid;
}

#endif
