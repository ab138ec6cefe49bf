/* vsrbus sim: the invariants. Per link, frames arrive exactly once, in order, byte-exact (a
 * frame of a connection may only go missing if the sender's connection to that peer ended after
 * it was queued); no two replicas hold different Prepares for one op; CONNECTED /
 * AUTHENTICATED / LOST alternate per peer. A failure prints the seed, the virtual time, the
 * peers, the replay command and the last events. */
#include "sim_impl.h"

struct run *sim_g_run; /* the log handler's target */

void sim_note(struct run *run, const char *fmt, ...) {
  char *line = run->ring[run->ring_n++ % SIM_RING];
  int n = snprintf(line, 200, "%10.6f ", vsec(run));
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line + n, (size_t)(200 - n), fmt, ap);
  va_end(ap);
  if (run->verbose) fprintf(stderr, "%s\n", line);
}

void sim_fail(struct run *run, const char *fmt, ...) {
  if (run->failed) return;
  run->failed = true;
  char msg[400];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  fprintf(stderr, "FAIL seed=%" PRIu64 " t=%.6fs: %s\n", run->seed, vsec(run), msg);
  char forced[96] = ""; /* the shape the command line forced: part of the replay */
  if (run->force_nr) snprintf(forced + strlen(forced), 24, " --replicas %u", run->force_nr);
  if (run->force_nc) snprintf(forced + strlen(forced), 24, " --clients %u", run->force_nc);
  if (run->force_max) snprintf(forced + strlen(forced), 24, " --max-frame %u", run->force_max);
  if (run->force_ka >= 0) snprintf(forced + strlen(forced), 24, " --keepalive %d", run->force_ka);
  if (run->batch_max != VSR_SM_BATCH_MAX) {
    snprintf(forced + strlen(forced), 24, " --prepare-batch %u", run->batch_max);
  }
  fprintf(stderr, "  replay: vsrbus sim --seed %" PRIu64 "%s%s%s --verbose\n", run->seed, forced,
          run->quic ? " --quic" : "", run->fixed ? " --fixed-primary" : "");
  fprintf(stderr, "  last events:\n");
  uint32_t n = run->ring_n < SIM_RING ? run->ring_n : SIM_RING;
  for (uint32_t i = run->ring_n - n; i < run->ring_n; i++) {
    fprintf(stderr, "    %s\n", run->ring[i % SIM_RING]);
  }
}

void sim_log(void *user, enum vsr_log_level level, const char *line) {
  (void)user;
  (void)level;
  if (!sim_g_run) return;
  const char *p = strstr(line, "VSR-");
  sim_note(sim_g_run, "log %s", p ? p : line);
}

uint64_t sim_frame_hash(const struct vsr_msg *m) { return XXH3_64bits(m->data, m->size); }

static const struct rec *link_at(const struct link *l, size_t k) {
  return &l->v[(l->head + k) % l->cap];
}

void sim_link_push(struct link *l, struct rec r) {
  if (l->len == l->cap) {
    size_t cap = l->cap ? l->cap * 2 : 64;
    struct rec *v = malloc(cap * sizeof *v);
    if (!v) abort();
    for (size_t i = 0; i < l->len; i++) v[i] = l->v[(l->head + i) % l->cap];
    free(l->v);
    l->v = v;
    l->head = 0;
    l->cap = cap;
  }
  l->v[(l->head + l->len) % l->cap] = r;
  l->len++;
}

void sim_link_clear(struct link *l) {
  free(l->v);
  memset(l, 0, sizeof *l);
}

/* A frame arrived on link |l| over the receiver's connection |recv_epoch| (the receiver's count
 * of connections to that sender). On the connection already in use it must be the next frame
 * the sender queued on the matching connection; the first frame of a new receiver connection
 * must be the first frame the sender queued on one of its later connections (the frames of the
 * connections in between went down with them). Anything else was lost, reordered, duplicated,
 * altered or never sent. */
void sim_link_deliver(struct run *run, struct link *l, uint32_t recv_epoch,
                      const struct vsr_msg *m, const char *who) {
  uint64_t h = sim_frame_hash(m);
  bool fresh = !l->started || recv_epoch != l->recv_epoch;
  size_t pos[LINK_CANDS];
  uint32_t ep[LINK_CANDS], n = 0;
  if (fresh) {
    uint32_t after = 0; /* the connection in use so far, if any: only later ones may start */
    for (uint32_t c = 0; c < l->ncand; c++) {
      if (c == 0 || l->cand_epoch[c] < after) after = l->cand_epoch[c];
    }
    /* Every match counts; past LINK_CANDS the newest are kept (a restarted replica whose new
     * connections a peer refused as duplicates began each with the same RequestStartView:
     * the receiver's connection is the newest of them; found with seed 1209). */
    for (size_t k = 0; k < l->len; k++) {
      const struct rec *r = link_at(l, k);
      bool first = k == 0 || link_at(l, k - 1)->epoch < r->epoch;
      bool later = !l->started || r->epoch > after;
      if (first && later && r->hash == h && r->size == m->size) {
        if (n == LINK_CANDS) {
          memmove(pos, pos + 1, (LINK_CANDS - 1) * sizeof *pos);
          memmove(ep, ep + 1, (LINK_CANDS - 1) * sizeof *ep);
          n--;
        }
        pos[n] = k + 1;
        ep[n++] = r->epoch;
      }
    }
  } else {
    for (uint32_t c = 0; c < l->ncand; c++) {
      size_t k = l->cand_pos[c];
      if (k >= l->len) continue;
      const struct rec *r = link_at(l, k);
      if (r->epoch == l->cand_epoch[c] && r->hash == h && r->size == m->size) {
        pos[n] = k + 1;
        ep[n++] = r->epoch;
      }
    }
  }
  if (n == 0) {
    size_t any = SIZE_MAX;
    for (size_t k = 0; k < l->len && any == SIZE_MAX; k++) {
      if (link_at(l, k)->hash == h && link_at(l, k)->size == m->size) any = k;
    }
    if (any == SIZE_MAX) {
      sim_fail(run, "%s: %s frame of %u bytes delivered that was never sent on this link, or "
           "delivered twice (%zu queued)", who, vsr_command_name(m->data[60]), m->size, l->len);
      return;
    }
    size_t at = fresh || l->ncand == 0 ? 0 : l->cand_pos[0];
    const struct rec *r = link_at(l, at < l->len ? at : 0);
    sim_fail(run, "%s: %s frame of %u bytes (sender's connection %u) was skipped: %zu frame(s) "
         "lost or reordered before this %s (receiver's connection %u)", who,
         vsr_command_name(r->cmd), r->size, r->epoch, any > at ? any - at : 0,
         vsr_command_name(m->data[60]), recv_epoch);
    return;
  }
  /* Records before the earliest candidate are delivered or dead: drop them. */
  size_t drop = pos[0];
  for (uint32_t c = 1; c < n; c++) drop = pos[c] < drop ? pos[c] : drop;
  l->head = (l->head + drop) % l->cap;
  l->len -= drop;
  l->ncand = n;
  for (uint32_t c = 0; c < n; c++) {
    l->cand_pos[c] = pos[c] - drop;
    l->cand_epoch[c] = ep[c];
  }
  l->started = true;
  l->recv_epoch = recv_epoch;
  run->delivered++;
  uint64_t rec[3] = {h, m->size, vsri_sim_now(run->w)};
  vsri_sim_trace(run->w, rec, sizeof rec);
}

static struct sclient *client_by_bus_id(struct run *run, uint64_t id) {
  for (uint32_t i = 0; i < run->nc; i++) {
    if (run->c[i].bus_id == id && !run->c[i].dead) return &run->c[i];
  }
  return NULL;
}

static void prep_check(struct run *run, uint64_t op, uint64_t h, const char *who) {
  if (op >= run->prep_cap) {
    size_t cap = run->prep_cap ? run->prep_cap : 1024;
    while (cap <= op) cap *= 2;
    run->prep = realloc(run->prep, cap * sizeof *run->prep);
    if (!run->prep) abort();
    memset(run->prep + run->prep_cap, 0, (cap - run->prep_cap) * sizeof *run->prep);
    run->prep_cap = cap;
  }
  if (run->prep[op] == 0) run->prep[op] = h;
  else if (run->prep[op] != h) sim_fail(run, "%s: two different Prepares for op %" PRIu64, who, op);
}

void sim_replica_tap(void *ctx, enum vsr_plane plane, uint64_t peer, const struct vsr_msg *m) {
  struct replica *r = ctx;
  struct run *run = r->run;
  if (peer == UINT64_MAX) { /* a handshake frame: not a send, but handed to the kernel too */
    r->handshake_frames++;
    return;
  }
  r->tapped++;
  struct rec rec = {.hash = sim_frame_hash(m), .size = m->size, .cmd = m->data[60]};
  if (plane == VSR_PLANE_REPLICA) {
    if (peer >= run->nr) return sim_fail(run, "replica %u: send to replica %" PRIu64, r->idx, peer);
    rec.epoch = r->epoch[peer];
    sim_link_push(&run->rl[r->idx][peer], rec);
    if (run->verbose) {
      sim_note(run, "replica %u: sent %s %u B to replica %" PRIu64 " (connection %u, %016" PRIx64 ")",
           r->idx, vsr_command_name(rec.cmd), rec.size, peer, rec.epoch, rec.hash);
    }
    if (rec.cmd == VSR_CMD_PREPARE && run->fixed) { /* failover: commits are checked */
      const struct vsr_prepare_header *p = (const struct vsr_prepare_header *)m->data;
      prep_check(run, p->op, rec.hash, "primary");
    }
    return;
  }
  struct sclient *c = client_by_bus_id(run, peer);
  if (c) sim_link_push(&c->down, rec);
}

static void replica_hold(struct replica *r, uint64_t op, uint64_t h) {
  if (op >= r->held_cap) {
    size_t cap = r->held_cap ? r->held_cap : 1024;
    while (cap <= op) cap *= 2;
    r->held = realloc(r->held, cap * sizeof *r->held);
    if (!r->held) abort();
    memset(r->held + r->held_cap, 0, (cap - r->held_cap) * sizeof *r->held);
    r->held_cap = cap;
  }
  r->held[op] = h;
}

void sim_replica_on_message(void *user, struct vsr_bus *bus, enum vsr_plane plane,
                            uint64_t peer, struct vsr_msg *msg) {
  (void)bus;
  struct replica *r = user;
  struct run *run = r->run;
  char who[80];
  if (plane == VSR_PLANE_REPLICA) {
    snprintf(who, sizeof who, "link replica %" PRIu64 " -> replica %u", peer, r->idx);
    if (run->verbose) {
      sim_note(run, "%s: got %s %u B %016" PRIx64, who, vsr_command_name(msg->data[60]), msg->size,
           sim_frame_hash(msg));
    }
    if (peer < run->nr) sim_link_deliver(run, &run->rl[peer][r->idx], r->epoch[peer], msg, who);
    if (msg->data[60] == VSR_CMD_PREPARE && run->fixed) {
      const struct vsr_prepare_header *p = (const struct vsr_prepare_header *)msg->data;
      uint64_t h = sim_frame_hash(msg);
      snprintf(who, sizeof who, "replica %u", r->idx);
      prep_check(run, p->op, h, who);
      replica_hold(r, p->op, h);
    }
    vsr_sm_on_replica_message(&r->sm, (uint8_t)peer, msg);
    /* A backup's commit covers the Prepares it holds: they must be the primary's. */
    for (uint64_t op = r->seen_commit + 1; op <= r->sm.commit && op < r->held_cap; op++) {
      if (r->held[op] && op < run->prep_cap && run->prep[op] != r->held[op]) {
        sim_fail(run, "replica %u committed op %" PRIu64 " with a Prepare the primary did not send",
             r->idx, op);
      }
    }
    if (r->sm.commit > r->seen_commit) r->seen_commit = r->sm.commit;
    return;
  }
  if (msg->data[60] == VSR_CMD_REQUEST && run->fixed) {
    const struct vsr_request_header *rq = (const struct vsr_request_header *)msg->data;
    uint32_t ci = (uint32_t)(rq->client.lo & 0xffff), inc = (uint32_t)(rq->client.lo >> 16);
    if (ci < run->nc && run->c[ci].incarnation == inc && !run->c[ci].dead) {
      struct sclient *c = &run->c[ci];
      if (c->bus_id == 0) c->bus_id = peer;
      if (c->bus_id != peer) {
        sim_fail(run, "client %u: its frames arrive from two client ids (%" PRIx64 ", %" PRIx64 ")",
             ci, c->bus_id, peer);
      }
      snprintf(who, sizeof who, "link client %u -> replica %u", ci, r->idx);
      sim_link_deliver(run, &c->up, 0, msg, who);
    }
  }
  vsr_sm_on_client_message(&r->sm, peer, msg);
}

void sim_replica_on_event(void *user, struct vsr_bus *bus, const struct vsr_peer_event *ev) {
  (void)bus;
  struct replica *r = user;
  struct run *run = r->run;
  static const char *kinds[] = {"?", "CONNECTED", "AUTHENTICATED", "LOST"};
  sim_note(run, "replica %u: %s %s %" PRIx64 " (%s)", r->idx, kinds[ev->kind & 3],
       ev->plane == VSR_PLANE_REPLICA ? "replica" : "client", ev->id,
       ev->kind == VSR_PEER_LOST ? vsr_errname(ev->reason) : "ok");
  uint64_t rec[3] = {((uint64_t)r->idx << 8) | ev->kind, ev->id, vsri_sim_now(run->w)};
  vsri_sim_trace(run->w, rec, sizeof rec);
  if (ev->plane == VSR_PLANE_REPLICA) {
    if (ev->id >= run->nr || ev->id == r->idx) {
      return sim_fail(run, "replica %u: event for replica %" PRIu64, r->idx, ev->id);
    }
    uint8_t *st = &r->pstate[ev->id];
    switch (ev->kind) {
    case VSR_PEER_CONNECTED:
      if (*st != 0) sim_fail(run, "replica %u: CONNECTED twice for replica %" PRIu64, r->idx, ev->id);
      *st = 1;
      break;
    case VSR_PEER_AUTHENTICATED:
      if (*st != 1) {
        sim_fail(run, "replica %u: AUTHENTICATED for replica %" PRIu64 " without CONNECTED", r->idx,
             ev->id);
      }
      *st = 2;
      r->epoch[ev->id]++;
      vsr_sm_on_replica_up(&r->sm, (uint8_t)ev->id);
      break;
    case VSR_PEER_LOST:
      if (*st == 0) {
        sim_fail(run, "replica %u: LOST for replica %" PRIu64 " not connected", r->idx, ev->id);
      }
      /* Lower ids dial: a peer that dialed us is reported only once authenticated. */
      if (*st == 1 && ev->id < r->idx) {
        sim_fail(run, "replica %u: events for replica %" PRIu64 " (it dialed us) that never "
             "authenticated", r->idx, ev->id);
      }
      *st = 0;
      break;
    default: break;
    }
    return;
  }
  uint32_t slot = (uint32_t)ev->id;
  if (slot >= r->client_slots) {
    uint32_t n = r->client_slots ? r->client_slots : 64;
    while (n <= slot) n *= 2;
    r->client_slot = realloc(r->client_slot, n * sizeof *r->client_slot);
    if (!r->client_slot) abort();
    memset(r->client_slot + r->client_slots, 0, (n - r->client_slots) * sizeof *r->client_slot);
    r->client_slots = n;
  }
  if (ev->kind == VSR_PEER_CONNECTED) {
    if (ev->transport && strcmp(ev->transport, "quic") == 0) run->quic_conns++;
    if (r->client_slot[slot] != 0) {
      sim_fail(run, "replica %u: CONNECTED for client %" PRIx64 " while %" PRIx64 " holds its slot",
           r->idx, ev->id, r->client_slot[slot]);
    }
    r->client_slot[slot] = ev->id;
  } else if (ev->kind == VSR_PEER_LOST) {
    if (r->client_slot[slot] != ev->id) {
      sim_fail(run, "replica %u: LOST for client %" PRIx64 " that is not connected", r->idx, ev->id);
    }
    r->client_slot[slot] = 0;
  } else {
    sim_fail(run, "replica %u: AUTHENTICATED on the client plane", r->idx);
  }
}
