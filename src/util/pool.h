/* Pool internals shared with the frame decoder (src/util/msg.c). */
#ifndef VSRI_UTIL_POOL_H
#define VSRI_UTIL_POOL_H

#include <stdint.h>

#include "vsrbus/msg.h"

/* The capacity a get of |size| bytes returns (its size class, or 4 KiB-rounded on demand). */
uint32_t vsri_pool_capacity(uint32_t size);

/* The pool's bytes_max (the node-wide cap when the bus owns the loop) and live bytes. */
uint64_t vsri_pool_bytes_max(const struct vsr_pool *pool);
uint64_t vsri_pool_bytes_live(const struct vsr_pool *pool);

/* vsr_pool_get that also keeps |headroom| bytes of bytes_max free of live buffers, and says why
 * it failed in *|err|: VSR_EINVAL (size > max_message_size), VSR_EMEMORY_MAX (bytes_max, or the
 * headroom, would be crossed) or VSR_EPOOL (the heap refused). */
struct vsr_msg *vsri_pool_get_ex(struct vsr_pool *pool, uint32_t size, uint64_t headroom,
                                 int *err);

#endif
