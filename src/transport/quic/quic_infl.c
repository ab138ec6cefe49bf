/* QUIC transport: quic_infl.c.
 * In-flight frame ring: frames whose bytes ngtcp2 may still need (it retransmits from our
 * buffers), each released once acknowledged up to its end or when its stream closes. */
#include "transport/quic/quic_impl.h"

/* ---- in-flight frames ------------------------------------------------------------------ */

/* Makes room for |n| more entries. Returns false when memory is short. */
bool q_infl_reserve(struct vsri_conn *c, uint32_t n) {
  if (c->infl_len + n <= c->infl_cap) return true;
  uint32_t cap = c->infl_cap ? c->infl_cap : 64;
  while (cap < c->infl_len + n) cap *= 2;
  struct q_infl *v = vsri_malloc(cap * sizeof *v);
  if (!v) return false;
  for (uint32_t i = 0; i < c->infl_len; i++) {
    v[i] = c->infl[(c->infl_head + i) & (c->infl_cap - 1)];
  }
  vsri_free(c->infl);
  c->infl = v;
  c->infl_cap = cap;
  c->infl_head = 0;
  return true;
}

void q_infl_push(struct vsri_conn *c, int64_t sid, struct vsr_msg *m, uint64_t end) {
  struct q_infl *e = &c->infl[(c->infl_head + c->infl_len) & (c->infl_cap - 1)];
  e->m = vsr_msg_ref(m);
  e->sid = sid;
  e->end = end;
  e->done = false;
  c->infl_len++;
}

static void q_infl_pop_done(struct vsri_conn *c) {
  while (c->infl_len > 0) {
    struct q_infl *e = &c->infl[c->infl_head];
    if (!e->done) break;
    vsr_msg_unref(e->m);
    c->infl_head = (c->infl_head + 1) & (c->infl_cap - 1);
    c->infl_len--;
  }
}

/* Marks frames of stream |sid| acknowledged up to stream offset |upto| (all of them when
 * |all|: the stream closed and ngtcp2 no longer needs any of its bytes). Frames of one stream
 * are in offset order; frames of other streams may sit between them. */
void q_infl_release(struct vsri_conn *c, int64_t sid, uint64_t upto, bool all) {
  for (uint32_t i = 0; i < c->infl_len; i++) {
    struct q_infl *e = &c->infl[(c->infl_head + i) & (c->infl_cap - 1)];
    if (e->sid != sid) continue;
    if (!all && e->end > upto) break;
    e->done = true;
  }
  q_infl_pop_done(c);
}

void q_infl_clear(struct vsri_conn *c) {
  while (c->infl_len > 0) {
    vsr_msg_unref(c->infl[c->infl_head].m);
    c->infl_head = (c->infl_head + 1) & (c->infl_cap - 1);
    c->infl_len--;
  }
  vsri_free(c->infl);
  c->infl = NULL;
  c->infl_cap = 0;
}
