/* Counts every heap allocation of a test process, libraries' included (GnuTLS, ngtcp2): the
 * executable's malloc / calloc / realloc come first in symbol lookup, count, and hand over to
 * glibc's own allocator. Include it in exactly one file of an executable. Under a sanitizer,
 * which brings its own allocator, nothing is interposed: VSRT_COUNT_ALLOCS is 0 and
 * vsrt_allocs() stays 0 (tests skip). */
#ifndef VSRT_ALLOC_COUNT_H
#define VSRT_ALLOC_COUNT_H

#include <stddef.h>
#include <stdint.h>

#if defined(__SANITIZE_ADDRESS__)
#define VSRT_COUNT_ALLOCS 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(memory_sanitizer)
#define VSRT_COUNT_ALLOCS 0
#endif
#endif

#ifndef VSRT_COUNT_ALLOCS
#define VSRT_COUNT_ALLOCS 1
extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t n, size_t m);
extern void *__libc_realloc(void *p, size_t n);
static uint64_t vsrt_alloc_calls;
void *malloc(size_t n) {
  __atomic_fetch_add(&vsrt_alloc_calls, 1, __ATOMIC_RELAXED);
  return __libc_malloc(n);
}
void *calloc(size_t n, size_t m) {
  __atomic_fetch_add(&vsrt_alloc_calls, 1, __ATOMIC_RELAXED);
  return __libc_calloc(n, m);
}
void *realloc(void *p, size_t n) {
  __atomic_fetch_add(&vsrt_alloc_calls, 1, __ATOMIC_RELAXED);
  return __libc_realloc(p, n);
}
static inline uint64_t vsrt_allocs(void) {
  return __atomic_load_n(&vsrt_alloc_calls, __ATOMIC_RELAXED);
}
#else
static inline uint64_t vsrt_allocs(void) { return 0; }
#endif

#endif
