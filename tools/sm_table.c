/* The demo state machine's client table (Iggy mainline's rules, docs/demo.md):
 *  - Register (operation 1, session 0, request 0) is committed as an op like any Request; its
 *    op becomes the client's session, returned as the Reply's commit.
 *  - Every replica applies committed ops to its own table in op order, so the tables agree;
 *    each keeps the Replies to a client's last VSR_SM_REPLIES requests.
 *  - At the primary a Request is new only if it is the next number after the newest one taken;
 *    a duplicate of a committed request is answered from the table (once per duplicate, never
 *    executed again); one still in the pipeline is dropped (its Reply goes out at commit).
 *  - No entry for the client: Eviction NoSession; an older session: Eviction SessionTooLow.
 *  - The table holds clients_max entries; a Register beyond it evicts the client whose newest
 *    commit is the oldest, which then gets NoSession on its next request. */
#include "sm.h"

#include <stdlib.h>
#include <string.h>

static uint32_t table_slots(const struct vsr_sm *sm) { return 2u * sm->clients_max; }

static uint32_t table_hash(const struct vsr_sm *sm, vsr_u128 id) {
  uint64_t h = (id.lo ^ (id.hi * 0x9e3779b97f4a7c15ull)) * 0xff51afd7ed558ccdull;
  return (uint32_t)((h >> 32) % table_slots(sm));
}

int vsr_sm_table_init(struct vsr_sm *sm) {
  if (sm->clients) return 0;
  if (sm->clients_max == 0) sm->clients_max = VSR_SM_CLIENTS_MAX;
  sm->clients = calloc(sm->clients_max, sizeof *sm->clients);
  sm->client_index = calloc(table_slots(sm), sizeof *sm->client_index);
  if (!sm->clients || !sm->client_index) {
    vsr_sm_table_fini(sm);
    return VSR_ENOMEM;
  }
  return 0;
}

static void table_entry_clear(struct vsr_sm_client *c) {
  for (unsigned i = 0; i < VSR_SM_REPLIES; i++) vsr_msg_unref(c->replies[i]);
  memset(c, 0, sizeof *c);
}

void vsr_sm_table_clear(struct vsr_sm *sm) {
  if (!sm->clients) return;
  for (uint32_t i = 0; i < sm->clients_max; i++) table_entry_clear(&sm->clients[i]);
  memset(sm->client_index, 0, table_slots(sm) * sizeof *sm->client_index);
  sm->clients_used = 0;
}

void vsr_sm_table_fini(struct vsr_sm *sm) {
  vsr_msg_unref(sm->loose_reply);
  sm->loose_reply = NULL;
  vsr_sm_table_clear(sm);
  free(sm->clients);
  free(sm->client_index);
  sm->clients = NULL;
  sm->client_index = NULL;
}

struct vsr_sm_client *vsr_sm_table_find(struct vsr_sm *sm, vsr_u128 id) {
  if (!sm->clients) return NULL;
  uint32_t slots = table_slots(sm);
  for (uint32_t i = table_hash(sm, id), n = 0; n < slots; n++, i = (i + 1) % slots) {
    uint32_t slot = sm->client_index[i];
    if (slot == 0) return NULL;
    if (vsr_u128_eq(sm->clients[slot - 1].id, id)) return &sm->clients[slot - 1];
  }
  return NULL;
}

static void table_index_add(struct vsr_sm *sm, uint32_t slot) {
  uint32_t i = table_hash(sm, sm->clients[slot].id);
  while (sm->client_index[i] != 0) i = (i + 1) % table_slots(sm);
  sm->client_index[i] = slot + 1;
}

/* Evicts the entry whose newest commit is the oldest; the index is rebuilt (rare: only a
 * Register into a full table). Returns the freed slot. */
static uint32_t table_evict_oldest(struct vsr_sm *sm) {
  uint32_t victim = 0;
  for (uint32_t i = 1; i < sm->clients_max; i++) {
    if (sm->clients[i].last_op < sm->clients[victim].last_op) victim = i;
  }
  table_entry_clear(&sm->clients[victim]);
  sm->table_evicted++;
  sm->clients_used--;
  memset(sm->client_index, 0, table_slots(sm) * sizeof *sm->client_index);
  for (uint32_t i = 0; i < sm->clients_max; i++) {
    if (!vsr_u128_is_zero(sm->clients[i].id)) table_index_add(sm, i);
  }
  return victim;
}

static struct vsr_sm_client *table_insert(struct vsr_sm *sm, vsr_u128 id) {
  if (vsr_sm_table_init(sm) != 0) return NULL;
  uint32_t slot = 0;
  if (sm->clients_used >= sm->clients_max) {
    slot = table_evict_oldest(sm);
  } else {
    while (!vsr_u128_is_zero(sm->clients[slot].id)) slot++;
  }
  sm->clients[slot].id = id;
  sm->clients_used++;
  table_index_add(sm, slot);
  return &sm->clients[slot];
}

/* The Reply to request |it| of committed op |prepare|: the Request's identity and body, our
 * view and index. */
static struct vsr_msg *table_build_reply(struct vsr_sm *sm, const struct vsr_msg *prepare,
                                         const struct vsr_sm_item *it) {
  const struct vsr_prepare_header *p = (const struct vsr_prepare_header *)prepare->data;
  struct vsr_msg *m = vsr_bus_msg_new(sm->bus, VSR_HEADER_SIZE + it->body_size);
  if (!m) return NULL;
  struct vsr_reply_header *rp = (struct vsr_reply_header *)m->data;
  rp->command = VSR_CMD_REPLY;
  rp->cluster = p->cluster;
  rp->view = sm->view;
  rp->replica = sm->replica;
  rp->request_checksum = it->request_checksum;
  rp->client = it->client;
  rp->op = p->op;
  rp->commit = p->op; /* for a Register: the session */
  rp->timestamp = p->timestamp;
  rp->request = it->request;
  rp->operation = it->operation;
  memcpy(m->data + VSR_HEADER_SIZE, it->body, it->body_size);
  return m;
}

struct vsr_msg *vsr_sm_table_apply(struct vsr_sm *sm, const struct vsr_sm_entry *e,
                                   const struct vsr_sm_item *it) {
  const struct vsr_prepare_header *p = (const struct vsr_prepare_header *)e->prepare->data;
  struct vsr_sm_client *c = vsr_sm_table_find(sm, it->client);
  if (it->operation == VSR_OP_REGISTER) { /* never in a batch: e->conn is its connection */
    if (!c) {
      c = table_insert(sm, it->client);
      if (!c) return NULL;
      c->conn = e->conn;
    } else {
      for (unsigned i = 0; i < VSR_SM_REPLIES; i++) {
        vsr_msg_unref(c->replies[i]);
        c->replies[i] = NULL;
      }
      if (e->conn) c->conn = e->conn;
    }
    c->session = p->op;
    c->request = c->prepared = 0;
    sm->registers++;
  } else if (!c && sm->sessions_optional) {
    vsr_msg_unref(sm->loose_reply); /* a client without a session: answered, not kept */
    sm->loose_reply = table_build_reply(sm, e->prepare, it);
    return sm->loose_reply;
  } else if (!c) {
    /* Evicted between its Prepare and this commit; or, after a state jump, a client whose
     * Register lies before the ops this replica holds: its session is learned from its next
     * Request. */
    if (!sm->jumped) return NULL;
    c = table_insert(sm, it->client);
    if (!c) return NULL;
  }
  if (it->operation != VSR_OP_REGISTER && it->request > c->request) c->request = it->request;
  if (c->prepared < c->request) c->prepared = c->request;
  c->last_op = p->op;
  struct vsr_msg *reply = table_build_reply(sm, e->prepare, it);
  if (!reply) {
    sm->send_errors++;
    vsr_sm_log_drop(sm, "Reply not built: message pool exhausted");
    return NULL;
  }
  struct vsr_msg **slot = &c->replies[it->request % VSR_SM_REPLIES];
  vsr_msg_unref(*slot);
  *slot = reply;
  return reply;
}

static void table_evict(struct vsr_sm *sm, uint64_t conn, const struct vsr_request_header *rq,
                        uint8_t reason) {
  struct vsr_msg *m = vsr_bus_msg_new(sm->bus, VSR_HEADER_SIZE);
  if (m) {
    struct vsr_eviction_header *ev = (struct vsr_eviction_header *)m->data;
    ev->command = VSR_CMD_EVICTION;
    ev->cluster = rq->cluster;
    ev->view = sm->view;
    ev->replica = sm->replica;
    ev->client = rq->client;
    ev->reason = reason;
  }
  sm->evictions[reason]++;
  vsr_sm_send_client(sm, conn, m);
}

/* A Register for |id| already in the pipeline (a resend): scanned, Registers are rare. */
static bool table_registering(struct vsr_sm *sm, vsr_u128 id) {
  for (uint64_t op = sm->commit + 1; sm->pipe && op <= sm->op; op++) {
    struct vsr_sm_entry *e = vsr_sm_have(sm, op);
    const struct vsr_prepare_header *p = e ? (const struct vsr_prepare_header *)e->prepare->data
                                           : NULL;
    if (p && p->operation == VSR_OP_REGISTER && vsr_u128_eq(p->client, id)) return true;
  }
  return false;
}

bool vsr_sm_table_admit(struct vsr_sm *sm, uint64_t conn, const struct vsr_msg *req) {
  const struct vsr_request_header *rq = (const struct vsr_request_header *)req->data;
  struct vsr_sm_client *c = vsr_sm_table_find(sm, rq->client);
  if (rq->operation == VSR_OP_REGISTER) {
    if (table_registering(sm, rq->client)) {
      sm->duplicates_dropped++;
      return false;
    }
    return true; /* a new session (or a new one again: the old is fenced) */
  }
  if (!c) {
    table_evict(sm, conn, rq, VSR_EVICT_NO_SESSION);
    return false;
  }
  c->conn = conn; /* its Replies go where it was last heard */
  if (c->session == 0) c->session = rq->session; /* learned after a state jump */
  if (rq->session < c->session) {
    table_evict(sm, conn, rq, VSR_EVICT_SESSION_TOO_LOW);
    return false;
  }
  if (rq->session > c->session) {
    sm->ignored++; /* a session this cluster never made: a client bug, not evicted */
    return false;
  }
  if (rq->request <= c->request) {
    struct vsr_msg *cached = c->replies[rq->request % VSR_SM_REPLIES];
    const struct vsr_reply_header *rp = cached ? (const struct vsr_reply_header *)cached->data
                                               : NULL;
    if (rp && rp->request == rq->request) {
      sm->duplicates++; /* answered again, never executed again (a refusal: the bus counts it) */
      struct vsr_msg *out = vsr_msg_ref(cached);
      if (rp->view != sm->view || rp->replica != sm->replica) {
        /* Built when the op was applied, perhaps in an earlier view: a copy names ours. */
        vsr_msg_unref(out);
        out = vsr_bus_msg_new(sm->bus, cached->size);
        if (out) {
          memcpy(out->data, cached->data, cached->size);
          ((struct vsr_reply_header *)out->data)->view = sm->view;
          ((struct vsr_reply_header *)out->data)->replica = sm->replica;
        }
      }
      vsr_sm_send_client(sm, conn, out);
    } else {
      sm->duplicates_dropped++; /* too old to answer: its Reply left the table */
    }
    return false;
  }
  if (rq->request <= c->prepared) {
    sm->duplicates_dropped++; /* in the pipeline: answered when it commits */
    return false;
  }
  if (rq->request != c->prepared + 1) {
    sm->ignored++; /* a gap: the client resends the missing one first */
    return false;
  }
  c->prepared = rq->request;
  return true;
}

void vsr_sm_table_reset_prepared(struct vsr_sm *sm) {
  for (uint32_t i = 0; sm->clients && i < sm->clients_max; i++) {
    sm->clients[i].prepared = sm->clients[i].request;
  }
}
