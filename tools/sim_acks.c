/* vsrbus sim, failover mode: the invariants of a cluster that changes views.
 *   (a) agreement: no two replicas commit different Prepares at one op (every commit, through
 *       the state machine's commit hook, against the first commit of that op anywhere), and a
 *       new primary's log covers every op committed anywhere, with the same Prepares (an op
 *       truncated by a view change was never committed);
 *   (b) every request the SDK acknowledged (a Reply returned) is, after the heal, committed
 *       exactly once, and on every live replica that caught up;
 *   (c) a Reply returned to a client is for the request it sent (client, request number,
 *       request checksum, operation and body);
 *   (d) (sim_run.c) the cluster commits again within a bound after the heal.
 * Failures print the seed, the virtual time, the replicas and the replay command (sim_fail). */
#include "sim_impl.h"

static struct committed *cm_at(struct run *run, uint64_t op) {
  if (op >= run->cm_cap) {
    size_t cap = run->cm_cap ? run->cm_cap : 1024;
    while (cap <= op) cap *= 2;
    run->cm = realloc(run->cm, cap * sizeof *run->cm);
    if (!run->cm) abort();
    memset(run->cm + run->cm_cap, 0, (cap - run->cm_cap) * sizeof *run->cm);
    run->cm_cap = cap;
  }
  return &run->cm[op];
}

void sim_sm_say(void *ctx, const char *line) {
  (void)ctx;
  if (sim_g_run) sim_note(sim_g_run, "sm %s", line);
}

void sim_on_commit(void *ctx, const struct vsr_msg *prepare) {
  struct replica *r = ctx;
  struct run *run = r->run;
  const struct vsr_prepare_header *p = (const struct vsr_prepare_header *)prepare->data;
  uint64_t op = p->op;
  if (r->committed == 0 || op != r->committed + 1) {
    if (r->committed) {
      sim_note(run, "replica %u: commits jump from op %" PRIu64 " to op %" PRIu64
               " (state transfer)", r->idx, r->committed, op);
    }
    r->base = op;
  }
  r->committed = op;
  struct committed *c = cm_at(run, op);
  if (op > run->cm_hi) run->cm_hi = op;
  if (vsr_u128_is_zero(c->checksum)) {
    *c = (struct committed){.checksum = p->checksum, .request_checksum = p->request_checksum,
                            .client = p->client.lo, .request = p->request,
                            .operation = p->operation, .replica = r->idx,
                            .view = r->sm.view};
    if (vsr_sm_is_batch(prepare)) { /* its requests, for the checks (b) and (c) */
      c->items_at = run->items_len;
      struct vsr_sm_item it;
      for (uint32_t pos = 0; vsr_sm_item_next(prepare, &pos, &it);) {
        if (run->items_len == run->items_cap) {
          run->items_cap = run->items_cap ? run->items_cap * 2 : 1024;
          run->items = realloc(run->items, run->items_cap * sizeof *run->items);
          if (!run->items) abort();
        }
        run->items[run->items_len++] = (struct item_rec){it.client.lo, it.request};
        c->items_n++;
      }
    }
    return;
  }
  if (r->sm.view < c->view) c->view = r->sm.view;
  if (!vsr_u128_eq(c->checksum, p->checksum)) {
    sim_fail(run, "agreement: replica %u committed op %" PRIu64 " as client %" PRIx64
             " request %" PRIu64 " (Prepare %016" PRIx64 "), replica %u committed it as client %"
             PRIx64 " request %" PRIu64 " (Prepare %016" PRIx64 ")", r->idx, op, p->client.lo,
             p->request, p->checksum.lo, c->replica, c->client, c->request, c->checksum.lo);
  }
}

int sim_primary(const struct run *run) {
  if (run->nr == 1) return run->r[0].up ? 0 : -1;
  int best = -1;
  uint32_t view = 0;
  for (uint16_t i = 0; i < run->nr; i++) {
    const struct replica *r = &run->r[i];
    if (!r->up || r->sm.status != VSR_SM_NORMAL) continue;
    if (best < 0 || r->sm.view > view) best = (int)(r->sm.view % run->nr), view = r->sm.view;
  }
  if (best >= 0 && !run->r[best].up) return -1;
  return best;
}

bool sim_recovering(const struct replica *r) {
  return r->up && r->sm.replica_count > 1 &&
         (r->sm.status == VSR_SM_RECOVERING || r->sm.op < r->sm.recover_op);
}

uint32_t sim_replicas_out(const struct run *run) {
  uint32_t n = 0;
  for (uint16_t i = 0; i < run->nr; i++) {
    if (!run->r[i].up || sim_recovering(&run->r[i])) n++;
  }
  return n;
}

/* (a) A replica that just became the primary of view v: its log ends at or above every op
 * committed in a view before v, and holds (or expects, by checksum) the same Prepare for each.
 * Ops committed in v or later are not its to hold: a replica may complete a view change to a
 * view the others already left (late DoViewChanges), and it can commit nothing there (found
 * as a false alarm with seed 13263 --replicas 3 --clients 50). Called every tick; a view is
 * checked once. */
void sim_check_views(struct run *run) {
  for (uint16_t i = 0; i < run->nr && run->nr > 1; i++) {
    struct replica *r = &run->r[i];
    struct vsr_sm *sm = &r->sm;
    if (!r->up || sm->status != VSR_SM_NORMAL || !vsr_sm_is_primary(sm)) continue;
    if (sm->view > run->view_max) run->view_max = sm->view;
    if (sm->view == 0 || sm->view <= r->vc_view) continue;
    r->vc_view = sm->view;
    run->view_changes++;
    sim_note(run, "replica %u: primary of view %u, op %" PRIu64 " commit %" PRIu64
             " (highest op committed anywhere: %" PRIu64 ")", r->idx, sm->view, sm->op,
             sm->commit, run->cm_hi);
    uint64_t hi = run->cm_hi; /* the highest op committed before this view */
    while (hi > 0 && (vsr_u128_is_zero(run->cm[hi].checksum) || run->cm[hi].view >= sm->view)) {
      hi--;
    }
    if (hi > sm->op) {
      const struct committed *c = &run->cm[hi];
      sim_fail(run, "agreement: replica %u became primary of view %u with its log ending at op %"
               PRIu64 ", below op %" PRIu64 " that replica %u committed (client %" PRIx64
               " request %" PRIu64 ", view %u): the view change truncated a committed op",
               r->idx, sm->view, sm->op, hi, c->replica, c->client, c->request, c->view);
      return;
    }
    uint64_t lo = sm->commit + 1;
    if (hi >= VSR_SM_LOG && lo < hi - VSR_SM_LOG + 1) lo = hi - VSR_SM_LOG + 1;
    for (uint64_t op = lo; op <= hi; op++) {
      const struct vsr_sm_entry *e = &sm->pipe[op % VSR_SM_LOG];
      const struct committed *c = &run->cm[op];
      if (e->op != op || vsr_u128_is_zero(e->checksum) || vsr_u128_is_zero(c->checksum) ||
          c->view >= sm->view) {
        continue;
      }
      if (!vsr_u128_eq(e->checksum, c->checksum)) {
        sim_fail(run, "agreement: replica %u became primary of view %u with Prepare %016" PRIx64
                 " at op %" PRIu64 ", which replica %u committed as Prepare %016" PRIx64
                 " (client %" PRIx64 " request %" PRIu64 ")", r->idx, sm->view, e->checksum.lo,
                 op, c->replica, c->checksum.lo, c->client, c->request);
        return;
      }
    }
  }
}

/* (c) The SDK completes a client's requests in submission order: this completion is for the
 * oldest one submitted. */
void sim_on_reply(void *arg, struct vsr_client *vc, int status, struct vsr_msg *reply) {
  (void)vc;
  struct sclient *c = arg;
  struct run *run = c->run;
  if (c->sub_len == 0) {
    sim_fail(run, "client %u.%u: a completion (%s) with no request submitted", c->idx,
             c->incarnation, status ? vsr_errname(status) : "Reply");
    return;
  }
  struct vsr_msg *m = c->sub[c->sub_head];
  c->sub_head = (c->sub_head + 1) % SIM_SUB_MAX;
  c->sub_len--;
  const struct vsr_request_header *rq = (const struct vsr_request_header *)m->data;
  if (status == 0) {
    const struct vsr_reply_header *rp = (const struct vsr_reply_header *)reply->data;
    bool same = rp->command == VSR_CMD_REPLY && vsr_u128_eq(rp->client, rq->client) &&
                rp->request == rq->request && rp->operation == rq->operation &&
                vsr_u128_eq(rp->request_checksum, rq->request_checksum) &&
                reply->size == m->size &&
                memcmp(reply->data + VSR_HEADER_SIZE, m->data + VSR_HEADER_SIZE,
                       m->size - VSR_HEADER_SIZE) == 0;
    if (!same) {
      sim_fail(run, "reply: client %u.%u sent request %" PRIu64 " (checksum %016" PRIx64
               ", %u B) and got back a Reply for client %" PRIx64 " request %" PRIu64
               " (checksum %016" PRIx64 ", %u B) from replica %u", c->idx, c->incarnation,
               rq->request, rq->request_checksum.lo, m->size, rp->client.lo, rp->request,
               rp->request_checksum.lo, reply->size, rp->replica);
    } else {
      const struct committed *k = rp->op < run->cm_cap ? &run->cm[rp->op] : NULL;
      bool in_op = k && !vsr_u128_is_zero(k->checksum) && k->items_n == 0 &&
                   k->client == rq->client.lo && k->request == rq->request;
      for (uint32_t i = 0; k && !in_op && i < k->items_n; i++) {
        const struct item_rec *x = &run->items[k->items_at + i];
        in_op = x->client == rq->client.lo && x->request == rq->request;
      }
      if (!in_op) {
        sim_fail(run, "reply: client %u.%u got the Reply to request %" PRIu64 " as op %" PRIu64
                 " from replica %u, but no replica committed that request at that op", c->idx,
                 c->incarnation, rq->request, rp->op, rp->replica);
      }
      if (run->acks_len == run->acks_cap) {
        run->acks_cap = run->acks_cap ? run->acks_cap * 2 : 1024;
        run->acks = realloc(run->acks, run->acks_cap * sizeof *run->acks);
        if (!run->acks) abort();
      }
      run->acks[run->acks_len++] = (struct acked){rq->client.lo, rq->request, rp->op};
      c->replies++;
      run->replies++;
      uint64_t rec[4] = {rq->client.lo, rq->request, rp->op, vsri_sim_now(run->w)};
      vsri_sim_trace(run->w, rec, sizeof rec);
      if (run->verbose) {
        sim_note(run, "client %u.%u: request %" PRIu64 " acknowledged as op %" PRIu64
                 " by replica %u", c->idx, c->incarnation, rq->request, rp->op, rp->replica);
      }
    }
  } else if (status == VSR_ETIMEDOUT) {
    run->timeouts++;
    sim_note(run, "client %u.%u: request %" PRIu64 " timed out", c->idx, c->incarnation,
             rq->request);
  } else if (status != VSR_ECANCELED) {
    sim_note(run, "client %u.%u: request %" PRIu64 ": %s", c->idx, c->incarnation, rq->request,
             vsr_errname(status));
  }
  vsr_msg_unref(m);
}

static int acked_cmp(const void *a, const void *b) {
  const uint64_t *x = a, *y = b;
  for (int i = 0; i < 3; i++) {
    if (x[i] != y[i]) return x[i] < y[i] ? -1 : 1;
  }
  return 0;
}

/* (b) After the heal, once the replicas converged: no request committed twice, and every
 * acknowledged one committed on every live replica (but below a replica's state transfer,
 * which it cannot show). */
void sim_check_acked(struct run *run) {
  size_t n = 0;
  uint64_t (*v)[3] = malloc((run->cm_hi + 1 + run->items_len) * sizeof *v);
  if (!v) abort();
  for (uint64_t op = 1; op <= run->cm_hi; op++) {
    const struct committed *c = &run->cm[op];
    if (vsr_u128_is_zero(c->checksum) || c->operation == VSR_OP_REGISTER) continue;
    for (uint32_t i = 0; i < c->items_n; i++) { /* a batch: each of its requests */
      v[n][0] = run->items[c->items_at + i].client;
      v[n][1] = run->items[c->items_at + i].request;
      v[n][2] = op;
      n++;
    }
    if (c->items_n > 0) continue;
    v[n][0] = c->client;
    v[n][1] = c->request;
    v[n][2] = op;
    n++;
  }
  qsort(v, n, sizeof *v, acked_cmp);
  for (size_t i = 1; i < n && !run->failed; i++) {
    if (v[i][0] == v[i - 1][0] && v[i][1] == v[i - 1][1]) {
      sim_fail(run, "exactly once: client %" PRIx64 " request %" PRIu64 " committed twice, at "
               "ops %" PRIu64 " and %" PRIu64, v[i][0], v[i][1], v[i - 1][2], v[i][2]);
    }
  }
  free(v);
  uint64_t skipped = 0;
  for (size_t k = 0; k < run->acks_len && !run->failed; k++) {
    const struct acked *a = &run->acks[k];
    for (uint16_t i = 0; i < run->nr; i++) {
      const struct replica *r = &run->r[i];
      if (!r->up) continue;
      if (a->op < r->base) {
        skipped++;
        continue;
      }
      if (a->op > r->committed) {
        sim_fail(run, "durability: client %" PRIx64 " request %" PRIu64 " was acknowledged as op %"
                 PRIu64 " but replica %u, caught up, committed only up to op %" PRIu64,
                 a->client, a->request, a->op, i, r->committed);
        break;
      }
    }
  }
  sim_note(run, "checked: %zu acknowledged requests on %u replicas (%" PRIu64 " below a state "
           "transfer), %zu committed requests unique", run->acks_len, run->nr, skipped, n);
}
