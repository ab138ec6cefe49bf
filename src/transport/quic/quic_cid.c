/* QUIC transport: quic_cid.c.
 * Connection-ID map: connection ID -> connection, open addressing with a keyed hash (the IDs a
 * client chooses are input), and the IDs a server connection owns. */
#include "transport/quic/quic_impl.h"

/* ---- connection ID map ----------------------------------------------------------------- */

static uint32_t q_cid_hash(const struct q_cidmap *m, const uint8_t *id, size_t len) {
  return (uint32_t)XXH3_64bits_withSeed(id, len, m->seed);
}

static struct q_cident *q_cidmap_slot(const struct q_cidmap *m, const uint8_t *id, size_t len) {
  if (!m->cap) return NULL;
  for (uint32_t i = q_cid_hash(m, id, len) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
    struct q_cident *e = &m->slots[i];
    if (!e->conn || (e->len == len && memcmp(e->id, id, len) == 0)) return e;
  }
}

struct q_conn *q_cidmap_find(const struct q_cidmap *m, const uint8_t *id, size_t len) {
  if (len > NGTCP2_MAX_CIDLEN) return NULL;
  struct q_cident *e = q_cidmap_slot(m, id, len);
  return e ? e->conn : NULL;
}

static int q_cidmap_grow(struct q_cidmap *m) {
  uint32_t cap = m->cap ? m->cap * 2 : 256;
  struct q_cident *old = m->slots;
  uint32_t oldcap = m->cap;
  m->slots = vsri_calloc(cap, sizeof *m->slots);
  if (!m->slots) {
    m->slots = old;
    return VSR_ENOMEM;
  }
  m->cap = cap;
  for (uint32_t i = 0; i < oldcap; i++) {
    if (old[i].conn) *q_cidmap_slot(m, old[i].id, old[i].len) = old[i];
  }
  vsri_free(old);
  return 0;
}

static int q_cidmap_add(struct q_cidmap *m, const ngtcp2_cid *cid, struct q_conn *c) {
  if ((m->len + 1) * 2 > m->cap && q_cidmap_grow(m) != 0) return VSR_ENOMEM;
  struct q_cident *e = q_cidmap_slot(m, cid->data, cid->datalen);
  if (e->conn) return e->conn == c ? 0 : VSR_EDUPLICATE;
  e->conn = c;
  e->len = (uint8_t)cid->datalen;
  memcpy(e->id, cid->data, cid->datalen);
  m->len++;
  return 0;
}

/* Removes with backward shift, so lookups never need tombstones. */
void q_cidmap_del(struct q_cidmap *m, const ngtcp2_cid *cid) {
  struct q_cident *e = q_cidmap_slot(m, cid->data, cid->datalen);
  if (!e || !e->conn) return;
  uint32_t mask = m->cap - 1, i = (uint32_t)(e - m->slots);
  for (uint32_t j = (i + 1) & mask; m->slots[j].conn; j = (j + 1) & mask) {
    uint32_t home = q_cid_hash(m, m->slots[j].id, m->slots[j].len) & mask;
    /* Move j into the hole at i unless its home lies cyclically in (i, j]. */
    bool stay = i <= j ? (home > i && home <= j) : (home > i || home <= j);
    if (stay) continue;
    m->slots[i] = m->slots[j];
    i = j;
  }
  m->slots[i].conn = NULL;
  m->len--;
}

/* Server connections remember their IDs so they can leave the map when freed. */
int q_conn_add_cid(struct q_conn *c, const ngtcp2_cid *cid) {
  if (c->ncids == Q_CIDS) return VSR_ELIMIT;
  int err = q_cidmap_add(&c->l->cids, cid, c);
  if (err) return err;
  c->cids[c->ncids++] = *cid;
  return 0;
}

void q_conn_del_cid(struct q_conn *c, const ngtcp2_cid *cid) {
  for (uint32_t i = 0; i < c->ncids; i++) {
    if (ngtcp2_cid_eq(&c->cids[i], cid)) {
      q_cidmap_del(&c->l->cids, cid);
      c->cids[i] = c->cids[--c->ncids];
      return;
    }
  }
}
