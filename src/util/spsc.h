/* Single-producer single-consumer ring of fixed-size entries between two threads (shards,
 * docs/shards.md): one thread pushes, one pops, no lock. The producer publishes an entry with a
 * release store of |tail|; the consumer takes it with an acquire load and frees the slot with a
 * release store of |head|. Capacity: a power of two. Storage follows the struct (one
 * allocation when the ring is made, none after). */
#ifndef VSRI_UTIL_SPSC_H
#define VSRI_UTIL_SPSC_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

struct vsri_spsc {
  _Alignas(64) _Atomic uint32_t head; /* next entry to pop: written by the consumer */
  _Alignas(64) _Atomic uint32_t tail; /* next slot to fill: written by the producer */
  _Alignas(64) uint32_t mask;
  uint32_t esize;
  uint8_t *slots; /* (mask + 1) * esize bytes */
};

static inline void vsri_spsc_init(struct vsri_spsc *r, void *slots, uint32_t cap,
                                  uint32_t esize) {
  atomic_init(&r->head, 0);
  atomic_init(&r->tail, 0);
  r->mask = cap - 1;
  r->esize = esize;
  r->slots = slots;
}

/* Producer: copies |e| in; false when full. */
static inline bool vsri_spsc_push(struct vsri_spsc *r, const void *e) {
  uint32_t t = atomic_load_explicit(&r->tail, memory_order_relaxed);
  uint32_t h = atomic_load_explicit(&r->head, memory_order_acquire);
  if (t - h > r->mask) return false;
  memcpy(r->slots + (size_t)(t & r->mask) * r->esize, e, r->esize);
  atomic_store_explicit(&r->tail, t + 1, memory_order_release);
  return true;
}

/* Consumer: copies the oldest entry out; false when empty. */
static inline bool vsri_spsc_pop(struct vsri_spsc *r, void *e) {
  uint32_t h = atomic_load_explicit(&r->head, memory_order_relaxed);
  uint32_t t = atomic_load_explicit(&r->tail, memory_order_acquire);
  if (h == t) return false;
  memcpy(e, r->slots + (size_t)(h & r->mask) * r->esize, r->esize);
  atomic_store_explicit(&r->head, h + 1, memory_order_release);
  return true;
}

#endif
