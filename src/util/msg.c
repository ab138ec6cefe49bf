/* Message pool: size classes with bounded free lists. Buffers are VSR_MESSAGE_ALIGN-aligned;
 * the small classes are preallocated so steady-state traffic never reaches the heap.
 *
 * Classes: 4, 8, 12, 16 KiB, then four per doubling (20, 24, 28, 32, 40, 48, 56, 64, 80 KiB,
 * ...) up to 64 MiB: every capacity is a multiple of 4 KiB (aligned_alloc needs it) and wastes
 * at most a quarter of itself. Free lists are bounded per class (free_max, by tier) and in
 * total bytes (cache_bytes_max). Accounting: |bytes| = |bytes_live| + |bytes_cached|, and
 * |bytes| never exceeds bytes_max: a get that would cross it first gives cached buffers back
 * to the heap (largest first), then fails. */
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>

#include "util/alloc.h"
#include "util/pool.h"
#include "vsrbus/error.h"
#include "vsrbus/msg.h"

/* A message as the pool holds it: the public struct vsr_msg first, then the bookkeeping users
 * never see (msg.h: the public part is a prefix). */
struct pool_msg {
  struct vsr_msg pub;
  uint8_t size_class;    /* class index (POOL_ON_DEMAND: an on-demand buffer) */
  struct pool_msg *next; /* free-list link; undefined while live */
  struct vsr_pool *pool;
};

static struct pool_msg *pool_msg_of(struct vsr_msg *m) { return (struct pool_msg *)m; }

#define POOL_NCLASSES 52 /* 4 + 4 per doubling from 16 KiB to 64 MiB (12 doublings) */
#define POOL_ON_DEMAND 255

struct pool_class {
  struct pool_msg *free; /* singly linked through next */
  uint32_t size;
  uint32_t free_len;
  uint32_t free_max;
};

struct vsr_pool {
  struct pool_class cls[POOL_NCLASSES];
  struct vsr_pool_options opts;
  struct vsr_pool_stats stats;
  /* Shards (docs/shards.md): the thread that owns the pool (the address of its thread tag),
   * the messages other threads released (a lock-free stack the owner empties whole), and the
   * byte cap shared with other shards' pools (NULL: |opts.bytes_max| alone). */
  const void *owner;
  _Atomic(struct pool_msg *) remote;
  struct vsri_pool_share *share;
  bool del_when_idle; /* vsri_pool_del_when_idle: the last release deletes the pool */
};

static _Thread_local char pool_thread_tag; /* its address names the running thread */

void vsr_pool_options_default(struct vsr_pool_options *o) {
  memset(o, 0, sizeof *o);
  o->max_message_size = 64u << 20;
  o->prealloc[0] = 1024;
  o->prealloc[1] = 32;
  o->prealloc[2] = 0;
  o->free_max[0] = 4096;
  o->free_max[1] = 256;
  o->free_max[2] = 64;
  o->bytes_max = 2ull << 30;
  o->cache_bytes_max = 128u << 20;
}

/* The capacity of class |c|. */
static uint32_t pool_class_size(unsigned c) {
  if (c < 4) return (c + 1) * 4096u; /* 4, 8, 12, 16 KiB */
  unsigned k = (c - 4) / 4, q = (c - 4) % 4; /* 16 KiB << k, times (5 + q) / 4 */
  return (16384u << k) / 4 * (5 + q);
}

static unsigned pool_tier(uint32_t size) {
  return size <= 4096 ? 0 : size <= (64u << 10) ? 1 : 2;
}

/* The smallest class that holds |size|, or POOL_ON_DEMAND. */
static uint8_t pool_class_of(uint32_t size) {
  unsigned lo = 0, hi = POOL_NCLASSES;
  while (lo < hi) {
    unsigned mid = (lo + hi) / 2;
    if (pool_class_size(mid) < size) lo = mid + 1;
    else hi = mid;
  }
  return lo < POOL_NCLASSES ? (uint8_t)lo : POOL_ON_DEMAND;
}

static uint32_t pool_capacity_of(uint8_t cls, uint32_t size) {
  if (cls != POOL_ON_DEMAND) return pool_class_size(cls);
  return (size + VSR_MESSAGE_ALIGN - 1) & ~(VSR_MESSAGE_ALIGN - 1);
}

uint32_t vsri_pool_capacity(uint32_t size) { return pool_capacity_of(pool_class_of(size), size); }

uint64_t vsri_pool_bytes_max(const struct vsr_pool *pool) { return pool->opts.bytes_max; }

uint64_t vsri_pool_bytes_live(const struct vsr_pool *pool) { return pool->stats.bytes_live; }

static void pool_free_buffer(struct vsr_pool *pool, struct pool_msg *pm) {
  pool->stats.heap_frees++;
  pool->stats.bytes -= pm->pub.capacity;
  if (pool->share) atomic_fetch_sub_explicit(&pool->share->bytes, pm->pub.capacity,
                                             memory_order_relaxed);
  vsri_free(pm->pub.data);
  vsri_free(pm);
}

/* Pops a cached buffer of class |c| (the caller decides whether it becomes live). */
static struct pool_msg *pool_pop(struct vsr_pool *pool, unsigned c) {
  struct pool_msg *pm = pool->cls[c].free;
  pool->cls[c].free = pm->next;
  pool->cls[c].free_len--;
  pool->stats.bytes_cached -= pm->pub.capacity;
  return pm;
}

/* Gives cached buffers back to the heap, largest classes first, until |need| more bytes fit
 * under bytes_max. Returns whether they do. */
/* Live + cached bytes against the cap: this pool's, or every sharing pool's. */
static uint64_t pool_total(const struct vsr_pool *pool) {
  return pool->share ? atomic_load_explicit(&pool->share->bytes, memory_order_relaxed)
                     : pool->stats.bytes;
}

static bool pool_make_room(struct vsr_pool *pool, uint64_t need) {
  for (unsigned c = POOL_NCLASSES; c-- > 0 && pool_total(pool) + need > pool->opts.bytes_max;) {
    while (pool->cls[c].free && pool_total(pool) + need > pool->opts.bytes_max) {
      pool_free_buffer(pool, pool_pop(pool, c));
      pool->stats.trims++;
    }
  }
  if (!pool->share) return pool->stats.bytes + need <= pool->opts.bytes_max;
  /* Reserve in the shared count at once: two shards checking together cannot both pass. */
  uint64_t before = atomic_fetch_add_explicit(&pool->share->bytes, need, memory_order_relaxed);
  if (before + need <= pool->opts.bytes_max) return true;
  atomic_fetch_sub_explicit(&pool->share->bytes, need, memory_order_relaxed);
  return false;
}

/* Allocates a fresh buffer of class |cls| from the heap (counted, not yet live or cached). */
static struct pool_msg *pool_alloc(struct vsr_pool *pool, uint8_t cls, uint32_t capacity,
                                   int *err) {
  if (!pool_make_room(pool, capacity)) {
    *err = VSR_EMEMORY_MAX;
    return NULL;
  }
  struct pool_msg *pm = vsri_malloc(sizeof *pm);
  if (!pm) {
    if (pool->share) atomic_fetch_sub_explicit(&pool->share->bytes, capacity,
                                               memory_order_relaxed);
    *err = VSR_EPOOL;
    return NULL;
  }
  pm->pub.data = vsri_aligned_alloc(VSR_MESSAGE_ALIGN, capacity);
  if (!pm->pub.data) {
    vsri_free(pm);
    if (pool->share) atomic_fetch_sub_explicit(&pool->share->bytes, capacity,
                                               memory_order_relaxed);
    *err = VSR_EPOOL;
    return NULL;
  }
  pm->pub.capacity = capacity;
  pm->size_class = cls;
  pm->pool = pool;
  pm->pub.refs = 0;
  pm->pub.size = 0;
  pm->next = NULL;
  pool->stats.heap_allocs++;
  pool->stats.bytes += capacity;
  if (pool->stats.bytes > pool->stats.bytes_peak) pool->stats.bytes_peak = pool->stats.bytes;
  return pm;
}

/* Puts |pm| on its class's free list if the list and the cache have room. */
static bool pool_cache(struct vsr_pool *pool, struct pool_msg *pm) {
  uint8_t c = pm->size_class;
  if (c == POOL_ON_DEMAND || pool->cls[c].free_len >= pool->cls[c].free_max) return false;
  if (pool->stats.bytes_cached + pm->pub.capacity > pool->opts.cache_bytes_max) return false;
  pm->next = pool->cls[c].free;
  pool->cls[c].free = pm;
  pool->cls[c].free_len++;
  pool->stats.bytes_cached += pm->pub.capacity;
  return true;
}

int vsr_pool_new(struct vsr_pool **out, const struct vsr_pool_options *o) {
  struct vsr_pool_options def;
  if (!o) {
    vsr_pool_options_default(&def);
    o = &def;
  }
  if (o->max_message_size < 256) return VSR_EINVAL;
  struct vsr_pool *pool = vsri_calloc(1, sizeof *pool);
  if (!pool) return VSR_ENOMEM;
  pool->opts = *o;
  pool->owner = &pool_thread_tag;
  atomic_init(&pool->remote, NULL);
  if (!pool->opts.cache_bytes_max) pool->opts.cache_bytes_max = 128u << 20;
  for (unsigned c = 0; c < POOL_NCLASSES; c++) {
    pool->cls[c].size = pool_class_size(c);
    pool->cls[c].free_max = o->free_max[pool_tier(pool->cls[c].size)];
  }
  static const uint32_t prealloc_size[VSR_POOL_CLASSES - 1] = {4u << 10, 64u << 10, 1u << 20};
  for (unsigned t = 0; t < VSR_POOL_CLASSES - 1; t++) {
    uint8_t c = pool_class_of(prealloc_size[t]);
    for (uint32_t i = 0; i < o->prealloc[t]; i++) {
      int err = 0;
      struct pool_msg *pm = pool_alloc(pool, c, prealloc_size[t], &err);
      if (!pm || !pool_cache(pool, pm)) {
        if (pm) pool_free_buffer(pool, pm);
        vsr_pool_del(pool);
        return VSR_ENOMEM;
      }
    }
  }
  *out = pool;
  return 0;
}

void vsr_pool_del(struct vsr_pool *pool) {
  if (!pool) return;
  pool->del_when_idle = false;
  vsri_pool_collect(pool);
  for (unsigned c = 0; c < POOL_NCLASSES; c++) {
    while (pool->cls[c].free) pool_free_buffer(pool, pool_pop(pool, c));
  }
  vsri_free(pool);
}

struct vsr_msg *vsri_pool_get_ex(struct vsr_pool *pool, uint32_t size, uint64_t headroom,
                                 int *err) {
  if (size > pool->opts.max_message_size) {
    pool->stats.failures++;
    *err = VSR_EINVAL;
    return NULL;
  }
  if (atomic_load_explicit(&pool->remote, memory_order_relaxed)) vsri_pool_collect(pool);
  uint8_t cls = pool_class_of(size);
  uint32_t cap = pool_capacity_of(cls, size);
  /* Shared cap: every other pool's cached bytes count as live here (conservative). */
  uint64_t live = pool->share ? pool_total(pool) - pool->stats.bytes_cached
                              : pool->stats.bytes_live;
  if (headroom && live + cap + headroom > pool->opts.bytes_max) {
    pool->stats.failures++;
    *err = VSR_EMEMORY_MAX;
    return NULL;
  }
  struct pool_msg *pm = NULL;
  if (cls != POOL_ON_DEMAND && pool->cls[cls].free) {
    pm = pool_pop(pool, cls);
    pool->stats.reuses++;
  } else {
    pm = pool_alloc(pool, cls, cap, err);
    if (!pm) {
      pool->stats.failures++;
      return NULL;
    }
  }
  pm->pub.refs = 1;
  pm->pub.size = size;
  pm->next = NULL;
  pool->stats.gets++;
  pool->stats.live++;
  pool->stats.bytes_live += pm->pub.capacity;
  return &pm->pub;
}

struct vsr_msg *vsr_pool_get(struct vsr_pool *pool, uint32_t size) {
  int err = 0;
  return vsri_pool_get_ex(pool, size, 0, &err);
}

struct vsr_msg *vsr_pool_get_zeroed(struct vsr_pool *pool, uint32_t size) {
  struct vsr_msg *m = vsr_pool_get(pool, size);
  if (m) memset(m->data, 0, size);
  return m;
}

static void msg_release_local(struct vsr_pool *pool, struct pool_msg *pm) {
  pool->stats.live--;
  pool->stats.bytes_live -= pm->pub.capacity;
  if (!pool_cache(pool, pm)) pool_free_buffer(pool, pm);
  if (pool->del_when_idle && pool->stats.live == 0) vsr_pool_del(pool);
}

/* The last reference is gone. On the pool's own thread the buffer goes back at once; on any
 * other thread (a frame another shard received, a Reply another shard wrote) it goes on the
 * pool's return stack, without a lock, and the owner takes it back at its next get. */
static void msg_release(struct vsr_msg *m) {
  struct pool_msg *pm = pool_msg_of(m);
  struct vsr_pool *pool = pm->pool;
  m->refs = 0;
  if (!pool->share || pool->owner == &pool_thread_tag) { /* no shards: always the owner */
    msg_release_local(pool, pm);
    return;
  }
  struct pool_msg *head = atomic_load_explicit(&pool->remote, memory_order_relaxed);
  do {
    pm->next = head;
  } while (!atomic_compare_exchange_weak_explicit(&pool->remote, &head, pm,
                                                  memory_order_release, memory_order_relaxed));
}

void vsri_pool_collect(struct vsr_pool *pool) {
  struct pool_msg *pm = atomic_exchange_explicit(&pool->remote, NULL, memory_order_acquire);
  while (pm) {
    struct pool_msg *next = pm->next;
    msg_release_local(pool, pm);
    pm = next;
  }
}

void vsri_pool_del_when_idle(struct vsr_pool *pool) {
  vsri_pool_collect(pool);
  if (pool->stats.live == 0) {
    vsr_pool_del(pool);
    return;
  }
  pool->del_when_idle = true; /* a frame of it is still held (the caller's): wait for it */
}

void vsri_pool_set_owner(struct vsr_pool *pool) { pool->owner = &pool_thread_tag; }

void vsri_pool_set_share(struct vsr_pool *pool, struct vsri_pool_share *share) {
  if (pool->share) { /* leaving: its bytes no longer count there */
    atomic_fetch_sub_explicit(&pool->share->bytes, pool->stats.bytes, memory_order_relaxed);
  }
  pool->share = share;
  if (!share) return;
  atomic_fetch_add_explicit(&share->bytes, pool->stats.bytes, memory_order_relaxed);
  pool->opts.bytes_max = share->bytes_max;
}

void vsri_msg_share(struct vsr_msg *m) {
  __atomic_fetch_or(&m->refs, VSR_MSG_SHARED, __ATOMIC_RELAXED);
}

void vsr_msg_unref(struct vsr_msg *m) {
  if (!m) return;
  if (__atomic_load_n(&m->refs, __ATOMIC_RELAXED) & VSR_MSG_SHARED) {
    /* acq_rel: the thread dropping the last reference sees every other thread's writes. */
    if ((__atomic_sub_fetch(&m->refs, 1, __ATOMIC_ACQ_REL) & ~VSR_MSG_SHARED) == 0) {
      msg_release(m);
    }
    return;
  }
  if (--m->refs == 0) msg_release(m);
}

void vsr_pool_stats(const struct vsr_pool *pool, struct vsr_pool_stats *out) {
  *out = pool->stats;
}
