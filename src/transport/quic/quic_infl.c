/* QUIC transport: quic_infl.c.
 * In-flight frames: frames ngtcp2 took from the owner's queue, oldest first, on a util/ring.h
 * ring. Each keeps its reference while ngtcp2 may still need its bytes (it retransmits from our
 * buffers) and is released once acknowledged up to its end or when its stream closes.
 *
 * Each entry is also reported to the owner exactly once: sent (on_sent) once the kernel took
 * the datagram carrying its last stream byte (q_infl_kernel, called by the writer) or, failing
 * that, once the peer acknowledged it (an acknowledged byte went out); dropped (on_dropped)
 * when its stream is reset or the connection closes before either happened. Entries not yet
 * reported are always the newest |infl_unsent| ones: the kernel takes datagrams in the order
 * ngtcp2 wrote them, so reporting never skips an older entry. */
#include "transport/quic/quic_impl.h"

static struct q_infl *q_infl_at(struct q_conn *c, uint32_t i) {
  return &c->infl[vsri_ring_at(&c->infl_ring, i)];
}

/* Makes room for |n| more entries. Returns false when memory is short. */
bool q_infl_reserve(struct q_conn *c, uint32_t n) {
  struct vsri_ring *r = &c->infl_ring;
  uint32_t len = vsri_ring_len(r), cap = vsri_ring_cap(r);
  if (len + n <= cap) return true;
  uint32_t ncap = cap ? cap : 64;
  while (ncap < len + n) ncap *= 2;
  struct q_infl *v = vsri_malloc(ncap * sizeof *v);
  if (!v) return false;
  for (uint32_t i = 0; i < len; i++) v[i] = *q_infl_at(c, i);
  vsri_free(c->infl);
  c->infl = v;
  vsri_ring_rebase(r, ncap);
  return true;
}

void q_infl_push(struct q_conn *c, int64_t sid, struct vsr_msg *m, uint64_t end) {
  struct q_infl *e = &c->infl[vsri_ring_push(&c->infl_ring)];
  e->m = vsr_msg_ref(m);
  e->sid = sid;
  e->end = end;
  e->done = false;
  e->state = Q_INFL_TAKEN;
  c->infl_unsent++;
}

static void q_infl_pop_done(struct q_conn *c) {
  struct vsri_ring *r = &c->infl_ring;
  while (!vsri_ring_empty(r)) {
    struct q_infl *e = &c->infl[vsri_ring_peek(r)];
    if (!e->done || e->state == Q_INFL_TAKEN) break;
    if (c->infl_unsent == vsri_ring_len(r)) c->infl_unsent--; /* a dropped one of the newest */
    vsr_msg_unref(e->m);
    vsri_ring_pop(r);
  }
}

/* Reports every unreported entry older than position |upto| (exclusive) as sent. */
static void q_infl_sent_before(struct q_conn *c, uint32_t upto) {
  uint32_t len = vsri_ring_len(&c->infl_ring), first = len - c->infl_unsent, frames = 0;
  uint64_t bytes = 0;
  for (uint32_t i = first; i < upto; i++) {
    struct q_infl *e = q_infl_at(c, i);
    if (e->state != Q_INFL_TAKEN) continue;
    e->state = Q_INFL_SENT;
    frames++;
    bytes += e->m->size;
  }
  if (upto > first) c->infl_unsent = len - upto;
  if (frames && c->ev && c->ev->on_sent) c->ev->on_sent(c->owner, &c->base, frames, bytes);
}

void q_infl_kernel(struct q_conn *c) {
  if (c->infl_unsent == 0) return;
  q_infl_sent_before(c, vsri_ring_len(&c->infl_ring));
  q_infl_pop_done(c);
}

/* Marks frames of stream |sid| acknowledged up to stream offset |upto|, or, when |all|, the
 * stream closed and ngtcp2 no longer needs any of its bytes: those it never handed to the
 * kernel are dropped (VSR_ESTREAM). Frames of one stream are in offset order; frames of other
 * streams may sit between them. */
void q_infl_release(struct q_conn *c, int64_t sid, uint64_t upto, bool all) {
  uint32_t len = vsri_ring_len(&c->infl_ring), frames = 0;
  uint64_t bytes = 0;
  for (uint32_t i = 0; i < len; i++) {
    struct q_infl *e = q_infl_at(c, i);
    if (e->sid != sid) continue;
    if (!all && e->end > upto) break;
    e->done = true;
    if (e->state != Q_INFL_TAKEN) continue;
    if (!all) {
      q_infl_sent_before(c, i + 1); /* acknowledged, so it (and all before it) went out */
      continue;
    }
    e->state = Q_INFL_DROPPED;
    frames++;
    bytes += e->m->size;
  }
  if (frames && c->ev && c->ev->on_dropped) {
    c->ev->on_dropped(c->owner, &c->base, frames, bytes, VSR_ESTREAM);
  }
  q_infl_pop_done(c);
}

void q_infl_drop_stream(struct q_conn *c, int64_t sid) {
  uint32_t len = vsri_ring_len(&c->infl_ring), frames = 0;
  uint64_t bytes = 0;
  for (uint32_t i = len - c->infl_unsent; i < len; i++) {
    struct q_infl *e = q_infl_at(c, i);
    if (e->sid != sid || e->state != Q_INFL_TAKEN) continue;
    e->state = Q_INFL_DROPPED;
    frames++;
    bytes += e->m->size;
  }
  if (frames && c->ev && c->ev->on_dropped) {
    c->ev->on_dropped(c->owner, &c->base, frames, bytes, VSR_ESTREAM);
  }
}

void q_infl_abandon(struct q_conn *c, int reason) {
  uint32_t len = vsri_ring_len(&c->infl_ring), frames = 0;
  uint64_t bytes = 0;
  for (uint32_t i = len - c->infl_unsent; i < len; i++) {
    struct q_infl *e = q_infl_at(c, i);
    if (e->state != Q_INFL_TAKEN) continue;
    e->state = Q_INFL_DROPPED;
    frames++;
    bytes += e->m->size;
  }
  c->infl_unsent = 0;
  if (frames && c->ev && c->ev->on_dropped) {
    c->ev->on_dropped(c->owner, &c->base, frames, bytes, reason);
  }
}

void q_infl_clear(struct q_conn *c) {
  struct vsri_ring *r = &c->infl_ring;
  if (c->ev && c->started && !c->closed_notified) q_infl_abandon(c, c->reason);
  while (!vsri_ring_empty(r)) vsr_msg_unref(c->infl[vsri_ring_pop(r)].m);
  c->infl_unsent = 0;
  vsri_free(c->infl);
  c->infl = NULL;
  c->infl_ring = (struct vsri_ring){0};
}
