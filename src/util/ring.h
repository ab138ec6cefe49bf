/* Bounded FIFO ring of slot indices over caller-owned storage: the ring keeps head and length
 * for a power-of-two capacity and says which slot to write or read; the caller keeps an array
 * of any element type (pointers, structs) with |cap| entries and indexes it with what the ring
 * returns. Nothing here allocates, so a ring can sit on static, embedded or pooled storage
 * (ngtcp2's ringbuf over a caller buffer; TigerBeetle's RingBuffer is generic over the type).
 *
 *   struct vsri_ring r; struct vsr_msg *slots[8];
 *   vsri_ring_init(&r, 8);
 *   if (!vsri_ring_full(&r)) slots[vsri_ring_push(&r)] = m;   // newest
 *   m = slots[vsri_ring_peek(&r)];                           // oldest
 *   m = slots[vsri_ring_pop(&r)];                            // oldest, released
 *
 * Growing is the caller's: copy the |len| live entries oldest first (slots[vsri_ring_at(r, i)])
 * into slots 0 .. len-1 of the new storage, then vsri_ring_rebase() to the new capacity. */
#ifndef VSRI_RING_H
#define VSRI_RING_H

#include <assert.h>
#include <stdbool.h>
#include <stdint.h>

struct vsri_ring {
  uint32_t cap;  /* a power of two >= 1; 0 only before init (then the ring is full and empty) */
  uint32_t head; /* slot of the oldest entry, < cap */
  uint32_t len;  /* live entries, <= cap */
};

/* Largest capacity: 2^31 slots (indices stay in uint32_t). */
#define VSRI_RING_CAP_MAX (UINT32_C(1) << 31)

static inline bool vsri_ring_cap_valid(uint32_t cap) {
  return cap != 0 && cap <= VSRI_RING_CAP_MAX && (cap & (cap - 1)) == 0;
}

/* Empties |r| for |cap| slots; |cap| must satisfy vsri_ring_cap_valid. */
static inline void vsri_ring_init(struct vsri_ring *r, uint32_t cap) {
  assert(vsri_ring_cap_valid(cap));
  r->cap = cap;
  r->head = 0;
  r->len = 0;
}

static inline uint32_t vsri_ring_len(const struct vsri_ring *r) { return r->len; }
static inline uint32_t vsri_ring_cap(const struct vsri_ring *r) { return r->cap; }
static inline bool vsri_ring_empty(const struct vsri_ring *r) { return r->len == 0; }
static inline bool vsri_ring_full(const struct vsri_ring *r) { return r->len == r->cap; }

/* Slot of the |i|-th oldest entry (0: the oldest); |i| < len. */
static inline uint32_t vsri_ring_at(const struct vsri_ring *r, uint32_t i) {
  assert(i < r->len);
  return (r->head + i) & (r->cap - 1);
}

/* Slot of the oldest entry; the ring must not be empty. */
static inline uint32_t vsri_ring_peek(const struct vsri_ring *r) { return vsri_ring_at(r, 0); }

/* Slot of the newest entry; the ring must not be empty. */
static inline uint32_t vsri_ring_peek_back(const struct vsri_ring *r) {
  return vsri_ring_at(r, r->len - 1);
}

/* Claims the slot after the newest entry and returns it for the caller to fill. The ring must
 * not be full (test vsri_ring_full first: a full ring is backpressure, never overwritten). */
static inline uint32_t vsri_ring_push(struct vsri_ring *r) {
  assert(r->len < r->cap);
  uint32_t slot = (r->head + r->len) & (r->cap - 1);
  r->len++;
  return slot;
}

/* Releases the oldest entry and returns its slot, whose content stays readable until the next
 * push. The ring must not be empty. */
static inline uint32_t vsri_ring_pop(struct vsri_ring *r) {
  assert(r->len > 0);
  uint32_t slot = r->head;
  r->head = (r->head + 1) & (r->cap - 1);
  r->len--;
  return slot;
}

/* After the caller moved the |len| live entries, oldest first, to slots 0 .. len-1 of storage
 * with |cap| slots: points the ring at that layout. |cap| must be valid and >= len. */
static inline void vsri_ring_rebase(struct vsri_ring *r, uint32_t cap) {
  assert(vsri_ring_cap_valid(cap) && cap >= r->len);
  r->cap = cap;
  r->head = 0;
}

#endif
