/* Pool internals shared with the frame decoder (src/util/msg.c). */
#ifndef VSRI_UTIL_POOL_H
#define VSRI_UTIL_POOL_H

#include <stdatomic.h>
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

/* Shards (docs/shards.md). A pool belongs to the thread that created it (or last called
 * set_owner); while it shares a byte count (set_share: every pool of a sharded bus), a message
 * whose last reference is dropped on another thread goes back to its pool's lock-free return
 * stack, which collect empties (every get does, when it is not empty). A pool that shares
 * nothing is one thread's, as before: every release is local.
 * set_share makes the pool count its heap bytes in |share| (one atomic add per buffer taken
 * from or given back to the heap, never per message) and cap them at share->bytes_max: the
 * node-wide memory_max across every shard's pool (NULL: leaves it). msg_share marks a message referenced from
 * two threads: its references count atomically until it returns to its pool. */
struct vsri_pool_share {
  _Atomic uint64_t bytes;
  uint64_t bytes_max;
};
void vsri_pool_collect(struct vsr_pool *pool);
void vsri_pool_set_owner(struct vsr_pool *pool);
/* Deletes the pool now if no message of it is live, else when the last one is released (on
 * the calling thread, the pool's owner from now on). */
void vsri_pool_del_when_idle(struct vsr_pool *pool);
void vsri_pool_set_share(struct vsr_pool *pool, struct vsri_pool_share *share);
void vsri_msg_share(struct vsr_msg *m);

#endif
