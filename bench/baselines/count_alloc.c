/* Counts heap allocations in a baseline process, including those made inside libzmq, nng and
 * libstdc++: the executable's malloc/calloc/realloc come first in symbol lookup, count, and
 * hand over to glibc's own allocator (so glibc's free stays correct). glibc only. */
#include <malloc.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t n, size_t m);
extern void *__libc_realloc(void *p, size_t n);
extern void *__libc_memalign(size_t align, size_t n);

uint64_t bl_allocs(void);

static uint64_t ca_count;

uint64_t bl_allocs(void) { return __atomic_load_n(&ca_count, __ATOMIC_RELAXED); }

void *malloc(size_t n) {
  __atomic_fetch_add(&ca_count, 1, __ATOMIC_RELAXED);
  return __libc_malloc(n);
}

void *calloc(size_t n, size_t m) {
  __atomic_fetch_add(&ca_count, 1, __ATOMIC_RELAXED);
  return __libc_calloc(n, m);
}

void *realloc(void *p, size_t n) {
  __atomic_fetch_add(&ca_count, 1, __ATOMIC_RELAXED);
  return __libc_realloc(p, n);
}

void *memalign(size_t align, size_t n) {
  __atomic_fetch_add(&ca_count, 1, __ATOMIC_RELAXED);
  return __libc_memalign(align, n);
}
