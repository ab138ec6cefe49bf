/* Every allocation vsrbus makes goes through here, so tests can count allocations across a
 * steady-state window (vsr_alloc_count) and make them fail (vsri_alloc_fail_after). */
#ifndef VSRI_ALLOC_H
#define VSRI_ALLOC_H

#include <stddef.h>
#include <stdint.h>

void *vsri_malloc(size_t n);
void *vsri_calloc(size_t count, size_t n);
void *vsri_realloc(void *p, size_t n);
/* |align| a power of two >= sizeof(void *); |n| is rounded up to a multiple of |align|. */
void *vsri_aligned_alloc(size_t align, size_t n);
char *vsri_strdup(const char *s);
void vsri_free(void *p);

/* Allocations made here and not yet given back to vsri_free (process-wide). */
int64_t vsri_alloc_live(void);

/* Tests only: the (n+1)-th allocation from now on fails; -1 disables. */
void vsri_alloc_fail_after(int64_t n);

#endif
