/* Message pool: size classes with bounded free lists. Buffers are VSR_MESSAGE_ALIGN-aligned;
 * the small classes are preallocated so steady-state traffic never reaches the heap. */
#include <string.h>

#include "util/alloc.h"
#include "vsrbus/error.h"
#include "vsrbus/msg.h"

static const uint32_t pool_class_size[VSR_POOL_CLASSES - 1] = {4u << 10, 64u << 10, 1u << 20};

struct pool_class {
  struct vsr_msg *free; /* singly linked through msg->next */
  uint32_t free_len;
  uint32_t free_max;
};

struct vsr_pool {
  struct pool_class cls[VSR_POOL_CLASSES - 1];
  struct vsr_pool_options opts;
  struct vsr_pool_stats stats;
};

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
}

static uint8_t pool_class_of(uint32_t size) {
  for (uint8_t c = 0; c < VSR_POOL_CLASSES - 1; c++) {
    if (size <= pool_class_size[c]) return c;
  }
  return VSR_POOL_CLASSES - 1;
}

static uint32_t pool_capacity_of(uint8_t cls, uint32_t size) {
  if (cls < VSR_POOL_CLASSES - 1) return pool_class_size[cls];
  return (size + VSR_MESSAGE_ALIGN - 1) & ~(VSR_MESSAGE_ALIGN - 1);
}

/* Allocates a fresh buffer of class |cls| from the heap (counted). */
static struct vsr_msg *pool_alloc(struct vsr_pool *pool, uint8_t cls, uint32_t capacity) {
  if (pool->stats.bytes + capacity > pool->opts.bytes_max) return NULL;
  struct vsr_msg *m = vsri_malloc(sizeof *m);
  if (!m) return NULL;
  m->data = vsri_aligned_alloc(VSR_MESSAGE_ALIGN, capacity);
  if (!m->data) {
    vsri_free(m);
    return NULL;
  }
  m->capacity = capacity;
  m->size_class = cls;
  m->pool = pool;
  m->refs = 0;
  m->size = 0;
  m->next = NULL;
  pool->stats.heap_allocs++;
  pool->stats.bytes += capacity;
  return m;
}

static void pool_free_buffer(struct vsr_pool *pool, struct vsr_msg *m) {
  pool->stats.heap_frees++;
  pool->stats.bytes -= m->capacity;
  vsri_free(m->data);
  vsri_free(m);
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
  for (uint8_t c = 0; c < VSR_POOL_CLASSES - 1; c++) {
    pool->cls[c].free_max = o->free_max[c];
    for (uint32_t i = 0; i < o->prealloc[c]; i++) {
      struct vsr_msg *m = pool_alloc(pool, c, pool_class_size[c]);
      if (!m) {
        vsr_pool_del(pool);
        return VSR_ENOMEM;
      }
      m->next = pool->cls[c].free;
      pool->cls[c].free = m;
      pool->cls[c].free_len++;
    }
  }
  *out = pool;
  return 0;
}

void vsr_pool_del(struct vsr_pool *pool) {
  if (!pool) return;
  for (int c = 0; c < VSR_POOL_CLASSES - 1; c++) {
    while (pool->cls[c].free) {
      struct vsr_msg *m = pool->cls[c].free;
      pool->cls[c].free = m->next;
      pool_free_buffer(pool, m);
    }
  }
  vsri_free(pool);
}

struct vsr_msg *vsr_pool_get(struct vsr_pool *pool, uint32_t size) {
  if (size > pool->opts.max_message_size) {
    pool->stats.failures++;
    return NULL;
  }
  uint8_t cls = pool_class_of(size);
  struct vsr_msg *m = NULL;
  if (cls < VSR_POOL_CLASSES - 1 && pool->cls[cls].free) {
    m = pool->cls[cls].free;
    pool->cls[cls].free = m->next;
    pool->cls[cls].free_len--;
    pool->stats.reuses++;
  } else {
    m = pool_alloc(pool, cls, pool_capacity_of(cls, size));
    if (!m) {
      pool->stats.failures++;
      return NULL;
    }
  }
  m->refs = 1;
  m->size = size;
  m->next = NULL;
  pool->stats.gets++;
  pool->stats.live++;
  return m;
}

struct vsr_msg *vsr_pool_get_zeroed(struct vsr_pool *pool, uint32_t size) {
  struct vsr_msg *m = vsr_pool_get(pool, size);
  if (m) memset(m->data, 0, size);
  return m;
}

static void msg_release(struct vsr_msg *m) {
  struct vsr_pool *pool = m->pool;
  pool->stats.live--;
  uint8_t cls = m->size_class;
  if (cls < VSR_POOL_CLASSES - 1 && pool->cls[cls].free_len < pool->cls[cls].free_max) {
    m->next = pool->cls[cls].free;
    pool->cls[cls].free = m;
    pool->cls[cls].free_len++;
    return;
  }
  pool_free_buffer(pool, m);
}

void vsr_msg_unref(struct vsr_msg *m) {
  if (m && --m->refs == 0) msg_release(m);
}

void vsr_pool_stats(const struct vsr_pool *pool, struct vsr_pool_stats *out) {
  *out = pool->stats;
}
