/* Streaming frame decoder (src/frame/decode.h): header → checks → body, reserved as it arrives.
 *
 * A chunk that holds a whole header is checked in place; when body bytes follow in the same
 * chunk, the header is copied once, straight into the frame buffer. Otherwise the header waits
 * in d->hdr (hdr_have == 256, d->size set, no buffer) until the first body byte.
 *
 * Reservation: the first buffer holds min(size, max(allowance, the bytes at hand)); when it is
 * full and more bytes are at hand, it grows to min(size, max(allowance, 4 × have, have + at
 * hand)) — a new pool buffer, the received bytes copied over. So a frame's buffer is at most
 * about four times what its peer actually sent (or one allowance), and growth copies less than
 * the frame's size in all. Every reservation is checked against the plane budget and, with the
 * plane's |protect|, keeps the other plane's unused budget free in the pool. When the plane
 * budget is full, the largest frame in flight elsewhere on the plane is evicted if it holds at
 * least as much as the grower would (a stalled claim loses to bytes that arrive); otherwise
 * the grower is refused. */
#include "frame/decode.h"

#include <stdio.h>

#include "util/pool.h"
#include "vsrbus/error.h"

_Static_assert(VSRI_DECODE_VERIFY_BODY == VSR_CHECK_BODY_VERIFY, "decode flag = check flag");

#define DEC_GROWTH 4u

void vsri_decoder_init(struct vsri_decoder *d, struct vsr_pool *pool, uint32_t max_size,
                       uint32_t flags) {
  memset(d, 0, offsetof(struct vsri_decoder, hdr));
  d->pool = pool;
  d->max_size = max_size;
  d->flags = flags;
  d->allowance = VSRI_DECODE_ALLOWANCE;
}

void vsri_decoder_set_budget(struct vsri_decoder *d, struct vsri_mem_budget *budget,
                             uint32_t allowance, uint32_t conn_max) {
  d->budget = budget;
  d->allowance = allowance ? allowance : VSRI_DECODE_ALLOWANCE;
  d->conn_max = conn_max;
}

void vsri_decoder_set_max(struct vsri_decoder *d, uint32_t max_size, bool preauth) {
  d->max_size = max_size;
  if (preauth) d->flags |= VSRI_DECODE_PREAUTH;
  else d->flags &= ~(uint32_t)VSRI_DECODE_PREAUTH;
}

void vsri_decoder_set_evict(struct vsri_decoder *d, void (*fn)(void *ctx), void *ctx) {
  d->on_evict = fn;
  d->evict_ctx = ctx;
}

/* Gives the frame buffer's charge back to the plane budget and leaves its list. */
static void dec_uncharge(struct vsri_decoder *d) {
  struct vsri_mem_budget *b = d->budget;
  if (!b || !d->msg) return;
  b->reserved -= d->msg->capacity;
  b->filled -= d->have;
  if (d->bprev) d->bprev->bnext = d->bnext;
  else if (b->head == d) b->head = d->bnext;
  if (d->bnext) d->bnext->bprev = d->bprev;
  d->bprev = d->bnext = NULL;
}

/* A fresh buffer (the decoder's first for this frame) joins the budget's list. */
static void dec_charge_first(struct vsri_decoder *d, struct vsri_mem_budget *b) {
  d->bprev = NULL;
  d->bnext = b->head;
  if (b->head) b->head->bprev = d;
  b->head = d;
}

void vsri_decoder_detach(struct vsri_decoder *d) {
  dec_uncharge(d);
  d->budget = NULL;
  d->on_evict = NULL;
  d->evict_ctx = NULL;
}

void vsri_decoder_free(struct vsri_decoder *d) {
  dec_uncharge(d);
  vsr_msg_unref(d->msg);
  d->msg = NULL;
  d->have = 0;
  d->hdr_have = 0;
  d->size = 0;
  d->err = 0;
  d->why = VSRI_WHY_NONE;
}

/* Poisons the stream with |err|; the header for the log line is left in d->hdr. */
static int dec_fail(struct vsri_decoder *d, const uint8_t *hdr, int err) {
  if (hdr != d->hdr) memcpy(d->hdr, hdr, VSR_HEADER_SIZE);
  dec_uncharge(d);
  vsr_msg_unref(d->msg);
  d->msg = NULL;
  d->have = 0;
  d->hdr_have = VSR_HEADER_SIZE;
  d->err = err;
  return err;
}

static int dec_refuse(struct vsri_decoder *d, const uint8_t *hdr, int err, uint8_t why,
                      uint64_t limit, uint64_t used) {
  d->why = why;
  d->why_limit = limit;
  d->why_used = used;
  return dec_fail(d, hdr, err);
}

/* Checks a complete header and the limits a frame of its size must fit in; reserves nothing. */
static int dec_accept(struct vsri_decoder *d, const uint8_t *hdr) {
  int rc = vsr_frame_check_header(hdr, d->max_size);
  if (rc == VSR_EFRAME_LARGE && (d->flags & VSRI_DECODE_PREAUTH)) rc = VSR_EFRAME_PREAUTH;
  if (rc != 0) return dec_fail(d, hdr, rc);
  uint32_t size = vsr_hdr_size(hdr);
  if (size > d->allowance) {
    /* Refuse at once what could never fit: no point in letting the peer send it. */
    uint64_t node = vsri_pool_bytes_max(d->pool);
    if (node && size > node) {
      return dec_refuse(d, hdr, VSR_EMEMORY_MAX, VSRI_WHY_NODE, node,
                        vsri_pool_bytes_live(d->pool));
    }
    if (d->conn_max && size > d->conn_max) {
      return dec_refuse(d, hdr, VSR_EMEMORY_BUDGET, VSRI_WHY_CONN, d->conn_max, 0);
    }
    if (d->budget && d->budget->max && !d->budget->reserve_only && size > d->budget->max) {
      return dec_refuse(d, hdr, VSR_EMEMORY_BUDGET, VSRI_WHY_PLANE, d->budget->max,
                        d->budget->reserved);
    }
  }
  d->size = size;
  return 0;
}

/* The evictable decoder holding the largest buffer on |b|, other than |self|. */
static struct vsri_decoder *dec_victim(struct vsri_mem_budget *b, const struct vsri_decoder *self) {
  struct vsri_decoder *v = NULL;
  for (struct vsri_decoder *x = b->head; x; x = x->bnext) {
    if (x != self && x->on_evict && (!v || x->msg->capacity > v->msg->capacity)) v = x;
  }
  return v;
}

/* Takes |v|'s frame off the budget and poisons its stream; its owner closes the connection.
 * The buffer stays with |v| (a read into it may be pending) until vsri_decoder_free. */
static void dec_evict(struct vsri_decoder *v) {
  struct vsri_mem_budget *b = v->budget;
  memcpy(v->hdr, v->msg->data, VSR_HEADER_SIZE);
  v->why = VSRI_WHY_EVICTED;
  v->why_limit = b->max;
  v->why_used = v->msg->capacity;
  dec_uncharge(v);
  v->budget = NULL;
  v->err = VSR_EMEMORY_BUDGET;
  b->evictions++;
  v->on_evict(v->evict_ctx);
}

/* Makes room for more of the frame: the first buffer, or a larger one. |hdr| is where the
 * header is while there is no buffer yet; |avail| is how many body bytes are at hand. */
static int dec_reserve(struct vsri_decoder *d, const uint8_t *hdr, size_t avail) {
  struct vsr_msg *old = d->msg;
  uint32_t have = old ? d->have : VSR_HEADER_SIZE;
  uint64_t target = d->size;
  if (target > d->allowance) {
    uint64_t t = d->allowance;
    if (old && (uint64_t)have * DEC_GROWTH > t) t = (uint64_t)have * DEC_GROWTH;
    if (have + (uint64_t)avail > t) t = have + (uint64_t)avail;
    if (t < target) target = t;
  }
  if (old && target <= old->capacity) { /* the buffer's class already has the room */
    old->size = (uint32_t)target;
    return 0;
  }
  uint32_t cap = vsri_pool_capacity((uint32_t)target);
  uint32_t old_cap = old ? old->capacity : 0;
  uint64_t headroom = 0;
  struct vsri_mem_budget *b = d->budget;
  if (b) {
    while (b->max && !b->reserve_only && b->reserved - old_cap + cap > b->max) {
      struct vsri_decoder *v = dec_victim(b, d);
      if (!v || v->msg->capacity < cap) { /* a tie goes to the frame whose bytes arrive */
        return dec_refuse(d, d->msg ? d->msg->data : hdr, VSR_EMEMORY_BUDGET, VSRI_WHY_PLANE,
                          b->max, b->reserved);
      }
      dec_evict(v);
    }
    if (b->protect && b->protect->max > b->protect->reserved) {
      headroom = b->protect->max - b->protect->reserved;
    }
  }
  int err = 0;
  struct vsr_msg *m = vsri_pool_get_ex(d->pool, (uint32_t)target, headroom, &err);
  if (!m) {
    const uint8_t *h = old ? old->data : hdr;
    if (err == VSR_EMEMORY_MAX) {
      return dec_refuse(d, h, err, headroom ? VSRI_WHY_RESERVE : VSRI_WHY_NODE,
                        vsri_pool_bytes_max(d->pool) - headroom, vsri_pool_bytes_live(d->pool));
    }
    return dec_fail(d, h, err == VSR_EINVAL ? VSR_EFRAME_LARGE : VSR_EPOOL);
  }
  if (old) {
    memcpy(m->data, old->data, have);
    if (b) { /* same place in the list, new charge */
      b->reserved -= old->capacity;
      b->filled -= have;
    }
    vsr_msg_unref(old);
  } else {
    memcpy(m->data, hdr, VSR_HEADER_SIZE);
    d->hdr_have = 0;
  }
  d->msg = m;
  d->have = have;
  if (b) {
    if (!old) dec_charge_first(d, b);
    b->reserved += m->capacity;
    b->filled += have;
    if (b->reserved > b->peak) b->peak = b->reserved;
  }
  return 0;
}

/* The body is complete: verify it if asked, hand the frame over. */
static int dec_finish(struct vsri_decoder *d, struct vsr_msg **out) {
  dec_uncharge(d);
  struct vsr_msg *m = d->msg;
  d->msg = NULL;
  d->have = 0;
  d->size = 0;
  int rc = vsr_frame_check_body(m->data, m->size, d->flags & VSRI_DECODE_VERIFY_BODY);
  if (rc != 0) {
    /* Like a header error, leave the header in d->hdr for the caller's log line. */
    dec_fail(d, m->data, rc);
    vsr_msg_unref(m);
    return rc;
  }
  *out = m;
  return 1;
}

/* Gathers header bytes; returns how many of |n| it took. */
static size_t dec_gather(struct vsri_decoder *d, const uint8_t *p, size_t n) {
  size_t take = VSR_HEADER_SIZE - d->hdr_have;
  if (take > n) take = n;
  if (take == 0) return 0; /* |p| may be NULL when n == 0 */
  memcpy(d->hdr + d->hdr_have, p, take);
  d->hdr_have += (uint32_t)take;
  return take;
}

int vsri_decoder_feed(struct vsri_decoder *d, const uint8_t *p, size_t n, size_t *used,
                      struct vsr_msg **out) {
  size_t u = 0;
  *used = 0;
  *out = NULL;
  if (d->err) return d->err;
  const uint8_t *hdr = d->hdr;
  if (d->size == 0) {
    if (d->hdr_have == 0 && n >= VSR_HEADER_SIZE) {
      hdr = p; /* whole header in this chunk: check it where it lies */
      u = VSR_HEADER_SIZE;
    } else {
      u = dec_gather(d, p, n);
      if (d->hdr_have < VSR_HEADER_SIZE) {
        *used = u;
        return 0;
      }
    }
    int rc = dec_accept(d, hdr);
    if (rc != 0) {
      *used = u;
      return rc;
    }
  }
  for (;;) {
    if (!d->msg || d->have == d->msg->size) {
      if (u == n && d->size > VSR_HEADER_SIZE) break; /* reserve only for bytes at hand */
      int rc = dec_reserve(d, hdr, n - u);
      if (rc != 0) {
        *used = u;
        return rc;
      }
    }
    struct vsr_msg *m = d->msg;
    size_t take = m->size - d->have;
    if (take > n - u) take = n - u;
    if (take > 0) {
      memcpy(m->data + d->have, p + u, take);
      d->have += (uint32_t)take;
      if (d->budget) d->budget->filled += take;
      u += take;
    }
    if (d->have == d->size) {
      *used = u;
      return dec_finish(d, out);
    }
    if (u == n) break;
  }
  if (!d->msg && hdr != d->hdr) { /* header accepted in place, no body yet: keep it */
    memcpy(d->hdr, hdr, VSR_HEADER_SIZE);
    d->hdr_have = VSR_HEADER_SIZE;
  }
  *used = u;
  return 0;
}

int vsri_decoder_grow(struct vsri_decoder *d) {
  if (!d->msg || d->err || d->have < d->msg->size || d->have == d->size) return 0;
  return dec_reserve(d, NULL, 0);
}

size_t vsri_decoder_want(const struct vsri_decoder *d, uint8_t **dst) {
  if (d->msg == NULL || d->err) return 0;
  *dst = d->msg->data + d->have;
  return d->msg->size - d->have;
}

int vsri_decoder_wrote(struct vsri_decoder *d, size_t n, struct vsr_msg **out) {
  *out = NULL;
  /* More than the last want is a caller bug; refuse it rather than overrun the buffer. */
  if (d->msg == NULL || d->err || n > d->msg->size - d->have) return VSR_EINVAL;
  d->have += (uint32_t)n;
  if (d->budget) d->budget->filled += n;
  return d->have == d->size ? dec_finish(d, out) : 0;
}

int vsri_decoder_eof_reason(const struct vsri_decoder *d) {
  if (d->msg != NULL) return VSR_EEOF_BODY;
  if (d->hdr_have == 0) return VSR_ECLOSED;
  if (d->hdr_have < VSR_HEADER_SIZE) return VSR_EEOF_HEADER;
  /* A whole header is parked (waiting for its body, or poisoned): its body, if any, never
   * came. */
  return vsr_hdr_size(d->hdr) > VSR_HEADER_SIZE ? VSR_EEOF_BODY : VSR_ECLOSED;
}

static void dec_mib(char *buf, size_t len, uint64_t v) {
  if (v >= (1u << 20)) snprintf(buf, len, "%.1f MiB", (double)v / (1u << 20));
  else snprintf(buf, len, "%llu bytes", (unsigned long long)v);
}

void vsri_decoder_describe(const struct vsri_decoder *d, int err, char *buf, size_t len) {
  const uint8_t *h = d->hdr;
  uint32_t size = (uint32_t)h[48] | (uint32_t)h[49] << 8 | (uint32_t)h[50] << 16 |
                  (uint32_t)h[51] << 24;
  char lim[32], use[32];
  dec_mib(lim, sizeof lim, d->why_limit);
  dec_mib(use, sizeof use, d->why_used);
  if (err == VSR_EFRAME_PREAUTH) {
    snprintf(buf, len, "size %u, command %u, max %u before the replica handshake", size, h[60],
             d->max_size);
  } else if (err == VSR_EMEMORY_BUDGET && d->why == VSRI_WHY_CONN) {
    snprintf(buf, len, "size %u, command %u, connection budget %s", size, h[60], lim);
  } else if (err == VSR_EMEMORY_BUDGET && d->why == VSRI_WHY_PLANE) {
    snprintf(buf, len, "size %u, command %u, %s budget %s, %s reserved by frames in flight",
             size, h[60], d->budget && d->budget->name ? d->budget->name : "plane", lim, use);
  } else if (err == VSR_EMEMORY_BUDGET && d->why == VSRI_WHY_EVICTED) {
    snprintf(buf, len, "size %u, command %u, evicted: its %s buffer was the largest in flight "
             "when the plane budget of %s was full", size, h[60], use, lim);
  } else if (err == VSR_EMEMORY_MAX && d->why == VSRI_WHY_RESERVE) {
    snprintf(buf, len, "size %u, command %u, memory_max less the %s's reserve: %s, %s in use",
             size, h[60], d->budget && d->budget->protect && d->budget->protect->name
                              ? d->budget->protect->name : "other plane", lim, use);
  } else if (err == VSR_EMEMORY_MAX) {
    snprintf(buf, len, "size %u, command %u, memory_max %s, %s in use", size, h[60], lim, use);
  } else {
    snprintf(buf, len, "size %u, command %u, max %u", size, h[60], d->max_size);
  }
}
