/* Counting allocator: thin wrappers over libc that count calls and can inject failures. */
#include "util/alloc.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "vsrbus/vsrbus.h"

static atomic_uint_fast64_t alloc_count;
static atomic_int_fast64_t alloc_fail_budget = -1;
static atomic_int_fast64_t alloc_live; /* allocations not yet freed (the simulator's leak check) */

static int alloc_take(void) {
  atomic_fetch_add_explicit(&alloc_count, 1, memory_order_relaxed);
  int_fast64_t budget = atomic_load_explicit(&alloc_fail_budget, memory_order_relaxed);
  if (budget < 0) return 1;
  if (budget == 0) return 0;
  atomic_fetch_sub_explicit(&alloc_fail_budget, 1, memory_order_relaxed);
  return 1;
}

uint64_t vsr_alloc_count(void) {
  return atomic_load_explicit(&alloc_count, memory_order_relaxed);
}

void vsri_alloc_fail_after(int64_t n) {
  atomic_store_explicit(&alloc_fail_budget, n, memory_order_relaxed);
}

static void *alloc_live_add(void *p) {
  if (p) atomic_fetch_add_explicit(&alloc_live, 1, memory_order_relaxed);
  return p;
}

int64_t vsri_alloc_live(void) { return atomic_load_explicit(&alloc_live, memory_order_relaxed); }

void *vsri_malloc(size_t n) { return alloc_take() ? alloc_live_add(malloc(n)) : NULL; }

void *vsri_calloc(size_t count, size_t n) {
  return alloc_take() ? alloc_live_add(calloc(count, n)) : NULL;
}

void *vsri_realloc(void *p, size_t n) {
  if (!alloc_take()) return NULL;
  void *q = realloc(p, n);
  return p ? q : alloc_live_add(q);
}

void *vsri_aligned_alloc(size_t align, size_t n) {
  if (!alloc_take()) return NULL;
  return alloc_live_add(aligned_alloc(align, (n + align - 1) & ~(align - 1)));
}

char *vsri_strdup(const char *s) {
  size_t n = strlen(s) + 1;
  char *p = vsri_malloc(n);
  if (p) memcpy(p, s, n);
  return p;
}

void vsri_free(void *p) {
  if (p) atomic_fetch_sub_explicit(&alloc_live, 1, memory_order_relaxed);
  free(p);
}
