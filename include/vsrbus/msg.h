/* Messages: 4096-byte aligned, reference-counted frame buffers from a bounded pool.
 *
 * One frame (256-byte header + body) lives in one contiguous buffer. A Prepare fanned out to
 * several replicas is queued to each of them by reference, never copied: every queue holds a
 * reference and the completion of its last byte drops it. Buffers come from size classes with
 * bounded free lists, so steady-state traffic allocates nothing. A pool and its messages
 * belong to one loop thread: references are not atomic, except on a message the bus passed to
 * another shard's thread (vsr_bus_options.shards > 1), which carries VSR_MSG_SHARED in |refs|
 * from then on and is counted atomically; the last reference, dropped on any thread, returns
 * it to its own pool (docs/shards.md). */
#ifndef VSRBUS_MSG_H
#define VSRBUS_MSG_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define VSR_MESSAGE_ALIGN 4096u
/* The pool's buffers come in size classes 4 KiB-granular up to 16 KiB, then four per doubling
 * (20, 24, 28, 32, 40, ... KiB) up to 64 MiB, so a buffer wastes at most a quarter of its size
 * (a 65,792-byte frame takes an 80 KiB buffer). Larger frames get on-demand buffers. The
 * options group the classes in tiers: [0] the 4 KiB class, [1] 8..64 KiB, [2] above 64 KiB. */
#define VSR_POOL_CLASSES 4 /* tiers + 1 (historical: the options arrays hold 3 tiers) */

struct vsr_pool;

/* Fields are read-only for users except |size|, which the owner of a fresh message sets. A
 * message is always made by its pool (vsr_pool_get, vsr_bus_msg_new, vsr_client_msg_new): this
 * is the public prefix of a larger, private record (the pool's bookkeeping lives after it), so
 * never declare or copy a struct vsr_msg yourself. */
struct vsr_msg {
  uint8_t *data;     /* VSR_MESSAGE_ALIGN-aligned, |capacity| bytes */
  uint32_t size;     /* frame bytes in |data| (header + body) */
  uint32_t capacity; /* bytes available in |data| */
  uint32_t refs;     /* > 0 while the message is live; read it with vsr_msg_refs() (the
                        VSR_MSG_SHARED bit may be set) */
};

/* |refs| bit: the message is (or was) referenced from more than one thread; references to it
 * are counted with atomic operations until it returns to its pool. */
#define VSR_MSG_SHARED 0x80000000u

struct vsr_pool_options {
  uint32_t max_message_size; /* largest frame the pool must hold; default 64 MiB */
  /* Buffers allocated at creation: [0] 4 KiB, [1] 64 KiB, [2] 1 MiB. */
  uint32_t prealloc[VSR_POOL_CLASSES - 1];
  /* Free buffers kept per class of a tier (more are freed): [0] the 4 KiB class, [1] each
   * class of 8..64 KiB, [2] each class above 64 KiB. */
  uint32_t free_max[VSR_POOL_CLASSES - 1];
  /* Cap on live + cached buffer bytes: a get beyond it fails (free buffers are given back to
   * the heap first). The bus sets it from memory_max. */
  uint64_t bytes_max;
  /* Cap on cached (free) buffer bytes, default 128 MiB: the free lists never hold more. */
  uint64_t cache_bytes_max;
};

struct vsr_pool_stats {
  uint64_t gets;        /* successful vsr_pool_get calls */
  uint64_t reuses;      /* gets served from a free list (no allocation) */
  uint64_t heap_allocs; /* buffers allocated from the heap (prealloc included) */
  uint64_t heap_frees;  /* buffers returned to the heap */
  uint64_t failures;    /* gets refused: over bytes_max or out of memory */
  uint64_t live;        /* messages currently referenced */
  uint64_t bytes;       /* live + cached buffer bytes */
  uint64_t bytes_live;   /* capacity of buffers in use (referenced) */
  uint64_t bytes_cached; /* capacity of buffers on the free lists */
  uint64_t bytes_peak;   /* highest |bytes| seen */
  uint64_t trims;        /* free buffers given back to make room under bytes_max */
};

/* Fills |o| with defaults: prealloc 1024 × 4 KiB and 32 × 64 KiB, free lists of 4096 / 256 / 64
 * per class, bytes_max 2 GiB, cache_bytes_max 128 MiB, max_message_size 64 MiB. */
void vsr_pool_options_default(struct vsr_pool_options *o);

/* Creates a pool. Returns 0, VSR_EINVAL (bad options) or VSR_ENOMEM. */
int vsr_pool_new(struct vsr_pool **out, const struct vsr_pool_options *o);

/* Frees the pool and every cached buffer. Live messages must all have been released. */
void vsr_pool_del(struct vsr_pool *pool);

/* Returns a message with capacity >= |size| and msg->size = |size|, refs = 1, or NULL when
 * |size| > max_message_size, the pool is over bytes_max, or memory is exhausted. The buffer's
 * contents are undefined; vsr_pool_get_zeroed() clears the first |size| bytes. */
struct vsr_msg *vsr_pool_get(struct vsr_pool *pool, uint32_t size);
struct vsr_msg *vsr_pool_get_zeroed(struct vsr_pool *pool, uint32_t size);

void vsr_pool_stats(const struct vsr_pool *pool, struct vsr_pool_stats *out);

static inline struct vsr_msg *vsr_msg_ref(struct vsr_msg *msg) {
  if (__atomic_load_n(&msg->refs, __ATOMIC_RELAXED) & VSR_MSG_SHARED) {
    __atomic_fetch_add(&msg->refs, 1, __ATOMIC_RELAXED);
  } else {
    msg->refs++;
  }
  return msg;
}

/* The number of references (without the VSR_MSG_SHARED bit). */
static inline uint32_t vsr_msg_refs(const struct vsr_msg *msg) {
  return __atomic_load_n(&msg->refs, __ATOMIC_RELAXED) & ~VSR_MSG_SHARED;
}

/* Drops a reference (NULL is a no-op); the last one returns the message to its pool's free
 * list (or the heap). A function, not an inline, so the release path stays inside the
 * library and out of its ABI. */
void vsr_msg_unref(struct vsr_msg *msg);

#ifdef __cplusplus
}
#endif
#endif
