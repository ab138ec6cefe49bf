/* The message pool (src/util/msg.c): size classes (a 64 KiB + 256 B frame takes 80 KiB, not
 * 1 MiB), 4096-byte alignment, reuse from the free lists with no heap allocation, refcounts,
 * the bytes_max cap refusing (never growing past it), free lists giving back cached buffers
 * to make room (trims), the cache cap, and the stats that account for all of it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "util/pool.h"
#include "vsrbus/error.h"
#include "vsrbus/msg.h"

static struct vsr_pool *pool_with(uint64_t bytes_max, uint64_t cache_max) {
  struct vsr_pool_options o;
  vsr_pool_options_default(&o);
  memset(o.prealloc, 0, sizeof o.prealloc); /* count every allocation in the test */
  o.bytes_max = bytes_max;
  o.cache_bytes_max = cache_max;
  struct vsr_pool *p = NULL;
  assert_int_equal(vsr_pool_new(&p, &o), 0);
  return p;
}

static struct vsr_pool_stats stats(const struct vsr_pool *p) {
  struct vsr_pool_stats s;
  vsr_pool_stats(p, &s);
  return s;
}

static void size_classes(void **state) {
  (void)state;
  assert_int_equal(vsri_pool_capacity(256), 4096);
  assert_int_equal(vsri_pool_capacity(4096), 4096);
  assert_int_equal(vsri_pool_capacity(4097), 8192);
  assert_int_equal(vsri_pool_capacity(65536 + 256), 80 << 10); /* not 1 MiB */
  /* Above 16 KiB: four classes per doubling, so at most 25 % of a buffer is unused. */
  for (uint32_t size = 256; size <= (64u << 20); size = size * 3 / 2 + 1) {
    uint32_t cap = vsri_pool_capacity(size);
    assert_true(cap >= size);
    assert_true(cap % 4096 == 0);
    if (size > 16384) assert_true((uint64_t)cap * 4 <= (uint64_t)size * 5 + 4 * 4096);
  }
}

static void aligned_and_reused(void **state) {
  (void)state;
  struct vsr_pool *p = pool_with(1ull << 30, 64u << 20);
  struct vsr_msg *m = vsr_pool_get(p, 65792);
  assert_non_null(m);
  assert_int_equal(m->capacity, 80 << 10);
  assert_int_equal((uintptr_t)m->data % VSR_MESSAGE_ALIGN, 0);
  assert_int_equal(m->refs, 1);
  struct vsr_pool_stats s = stats(p);
  assert_int_equal(s.live, 1);
  assert_int_equal(s.bytes_live, 80 << 10);
  uint64_t allocs = s.heap_allocs;
  vsr_msg_unref(m);
  s = stats(p);
  assert_int_equal(s.live, 0);
  assert_int_equal(s.bytes_cached, 80 << 10);
  /* Steady state: the same class again and again costs no heap allocation. */
  for (int i = 0; i < 1000; i++) {
    m = vsr_pool_get(p, 70000);
    assert_non_null(m);
    vsr_msg_ref(m);
    vsr_msg_unref(m); /* one reference left: still live */
    assert_int_equal(stats(p).live, 1);
    vsr_msg_unref(m);
  }
  s = stats(p);
  assert_int_equal(s.heap_allocs, allocs);
  assert_true(s.reuses >= 1000);
  vsr_pool_del(p);
}

static void bytes_max_refuses(void **state) {
  (void)state;
  struct vsr_pool *p = pool_with(1u << 20, 1u << 20); /* 1 MiB in all */
  struct vsr_msg *held[300];
  size_t n = 0;
  while (n < 300 && (held[n] = vsr_pool_get(p, 4096)) != NULL) n++;
  assert_int_equal(n, 256); /* exactly 1 MiB of 4 KiB buffers, then refused */
  struct vsr_pool_stats s = stats(p);
  assert_true(s.bytes <= (1u << 20));
  assert_true(s.failures >= 1);
  int err = 0;
  assert_null(vsri_pool_get_ex(p, 4096, 0, &err));
  assert_int_equal(err, VSR_EMEMORY_MAX);
  assert_null(vsri_pool_get_ex(p, (64u << 20) + 1, 0, &err));
  assert_int_equal(err, VSR_EINVAL);
  /* Cached buffers of another class are given back to make room (a trim), not kept. */
  for (size_t i = 0; i < n; i++) vsr_msg_unref(held[i]);
  assert_int_equal(stats(p).bytes_cached, 1u << 20);
  struct vsr_msg *big = vsr_pool_get(p, 512 << 10);
  assert_non_null(big);
  s = stats(p);
  assert_true(s.trims > 0);
  assert_true(s.bytes <= (1u << 20));
  vsr_msg_unref(big);
  vsr_pool_del(p);
}

static void cache_cap_bounds_free_lists(void **state) {
  (void)state;
  struct vsr_pool *p = pool_with(1ull << 30, 256 << 10); /* cache at most 256 KiB */
  struct vsr_msg *held[64];
  for (int i = 0; i < 64; i++) assert_non_null(held[i] = vsr_pool_get(p, 16384));
  for (int i = 0; i < 64; i++) vsr_msg_unref(held[i]);
  struct vsr_pool_stats s = stats(p);
  assert_true(s.bytes_cached <= (256 << 10));
  assert_int_equal(s.live, 0);
  assert_int_equal(s.heap_allocs - s.heap_frees, s.bytes_cached / 16384);
  vsr_pool_del(p);
}

static void zeroed_get(void **state) {
  (void)state;
  struct vsr_pool *p = pool_with(1ull << 30, 1u << 20);
  struct vsr_msg *m = vsr_pool_get(p, 8192);
  memset(m->data, 0xAB, m->capacity);
  vsr_msg_unref(m);
  m = vsr_pool_get_zeroed(p, 8000); /* the same buffer back, zeroed */
  for (uint32_t i = 0; i < 8000; i++) assert_int_equal(m->data[i], 0);
  vsr_msg_unref(m);
  vsr_pool_del(p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(size_classes),
      cmocka_unit_test(aligned_and_reused),
      cmocka_unit_test(bytes_max_refuses),
      cmocka_unit_test(cache_cap_bounds_free_lists),
      cmocka_unit_test(zeroed_get),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
