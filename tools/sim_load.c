/* vsrbus sim: the workload (clients' Requests) and the faults (partitions, clogs, resets,
 * crashes, partial heals) of the fault phase, and the restarts. */
#include "sim_impl.h"

static uint32_t draw_size(struct run *run) {
  /* Log-uniform between size_min and size_max, and most frames (7 in 8) at most 4 KiB: large
   * frames run every partial-write path without the run being all memcpy. */
  uint32_t lo = run->size_min, hi = run->size_max;
  if (hi > 4096 && vsri_sim_below(run->w, 8) != 0) hi = 4096;
  int bits_lo = 31 - __builtin_clz(lo), bits_hi = 31 - __builtin_clz(hi);
  int b = bits_lo + (int)vsri_sim_below(run->w, (uint64_t)(bits_hi - bits_lo + 1));
  uint64_t base = 1ull << b;
  uint64_t s = base + vsri_sim_below(run->w, base);
  if (s < lo) s = lo;
  if (s > hi) s = hi;
  return (uint32_t)s;
}

/* A frame of a drawn size from the client's pool (NULL, noted, when the pool has none). */
static struct vsr_msg *client_msg(struct run *run, struct sclient *c, uint32_t *size) {
  *size = draw_size(run);
  struct vsr_msg *m = vsr_client_msg_new(c->c, *size);
  if (!m) sim_note(run, "client %u: no message of %u bytes from the pool", c->idx, *size);
  return m;
}

/* A body unique to this frame: a random byte throughout, a random word at each end. */
static void client_body(struct run *run, struct vsr_msg *m, uint32_t size) {
  uint64_t x = vsri_sim_rand(run->w);
  memset(m->data + VSR_HEADER_SIZE, (int)(x & 0xff), size - VSR_HEADER_SIZE);
  memcpy(m->data + VSR_HEADER_SIZE, &x, 8);
  memcpy(m->data + size - 8, &x, 8);
}

static void client_send(struct run *run, struct sclient *c) {
  uint32_t size;
  struct vsr_msg *m = client_msg(run, c, &size);
  if (!m) return;
  struct vsr_request_header *rq = (struct vsr_request_header *)m->data;
  vsr_header_init(m->data, VSR_CMD_REQUEST, size);
  rq->cluster = run->cluster;
  rq->client = vsr_u128_from_u64((uint64_t)c->idx | (uint64_t)c->incarnation << 16);
  rq->operation = VSR_OP_SEND_MESSAGES;
  rq->session = 1;
  rq->request = ++c->request;
  client_body(run, m, size);
  int err = vsr_client_send(c->c, m);
  if (err == 0) {
    struct rec r = {.hash = sim_frame_hash(m), .size = size, .cmd = VSR_CMD_REQUEST};
    sim_link_push(&c->up, r);
    c->inflight++;
    c->sent++;
  } else {
    sim_note(run, "client %u: send refused: %s", c->idx, vsr_errname(err));
  }
  vsr_msg_unref(m);
}

/* Failover mode: a request through the session SDK (it stamps client, session, request
 * number); request_checksum carries a number of our own and the body is unique, so the Reply
 * can be matched to it byte for byte (sim_on_reply). */
static void client_request(struct run *run, struct sclient *c) {
  uint32_t size;
  struct vsr_msg *m = client_msg(run, c, &size);
  if (!m) return;
  struct vsr_request_header *rq = (struct vsr_request_header *)m->data;
  rq->request_checksum = (vsr_u128){++c->next_id, (uint64_t)c->idx << 32 | c->incarnation};
  client_body(run, m, size);
  c->sub[(c->sub_head + c->sub_len) % SIM_SUB_MAX] = m; /* our reference, until completed */
  c->sub_len++;
  int err = vsr_client_request(c->c, m, VSR_OP_SEND_MESSAGES, sim_on_reply, c);
  if (err != 0) {
    c->sub_len--;
    vsr_msg_unref(m);
    sim_note(run, "client %u: request refused: %s", c->idx, vsr_errname(err));
  }
}

/* ---- scenario */

static struct vsri_sim_host *random_host(struct run *run) {
  uint32_t n = run->nr + run->nc;
  uint32_t k = (uint32_t)vsri_sim_below(run->w, n);
  return k < run->nr ? run->r[k].host : run->c[k - run->nr].host;
}

static void crash_replica(struct run *run, struct replica *r) {
  struct vsri_sim *w = run->w;
  sim_note(run, "fault: crash replica %u%s", r->idx,
           (int)r->idx == sim_primary(run) ? " (the primary)" : "");
  vsri_sim_crash(r->host);
  sim_replica_free(r);
  r->restart_at = vsri_sim_now(w) + 100 * SIM_MS + vsri_sim_below(w, 1500 * SIM_MS);
  run->faults[3]++;
}

static void crash_client(struct run *run, struct sclient *c) {
  struct vsri_sim *w = run->w;
  sim_note(run, "fault: crash client %u", c->idx);
  vsri_sim_crash(c->host);
  sim_client_free(c, true);
  c->dead = true;
  c->crashed = true;
  c->restart_at = vsri_sim_now(w) + 100 * SIM_MS + vsri_sim_below(w, 1000 * SIM_MS);
  run->faults[3]++;
}

/* Failover mode: any replica, the primary too, or a client. A replica's state is in memory
 * only, so at most f = (n - 1) / 2 replicas may be down or recovering at once (VR Revisited
 * §4.3: a recovering replica learns its state from f + 1 others; with more than f of them
 * gone at once, an op acknowledged by a quorum could be lost with them). A single replica is
 * never crashed for the same reason (f = 0). */
static void crash_any(struct run *run) {
  struct vsri_sim *w = run->w;
  if (run->nr > 1 && vsri_sim_below(w, 2) == 0) {
    struct replica *r = &run->r[vsri_sim_below(w, run->nr)];
    if (!r->up) return;
    uint32_t f = (run->nr - 1u) / 2u, out = sim_replicas_out(run);
    if (!sim_recovering(r) && out >= f) {
      sim_note(run, "fault: no crash of replica %u: %u replica(s) down or recovering, budget f=%u",
               r->idx, out, f);
      return;
    }
    crash_replica(run, r);
    return;
  }
  struct sclient *c = &run->c[vsri_sim_below(w, run->nc)];
  if (c->c) crash_client(run, c);
}

/* Cuts the primary off from every other replica, both ways (its clients still reach it): the
 * others must elect a new one. */
static void isolate_primary(struct run *run, int p) {
  sim_note(run, "fault: partition isolates the primary, replica %d", p);
  for (uint16_t i = 0; i < run->nr; i++) {
    if (i != p) vsri_sim_partition(run->r[p].host, run->r[i].host, true);
  }
  run->faults[0]++;
}

static void crash_something(struct run *run) {
  if (!run->fixed) {
    crash_any(run);
    return;
  }
  uint32_t n = (run->nr - 1) + run->nc; /* never the primary */
  uint32_t k = (uint32_t)vsri_sim_below(run->w, n);
  if (k < (uint32_t)run->nr - 1) {
    struct replica *r = &run->r[k + 1];
    if (r->up) crash_replica(run, r);
  } else {
    struct sclient *c = &run->c[k - (run->nr - 1)];
    if (c->c) crash_client(run, c);
  }
}

void sim_fault_tick(struct run *run) {
  struct vsri_sim *w = run->w;
  uint64_t now = vsri_sim_now(w);
  if (vsri_sim_below(w, 1000000) < run->p_partition) {
    struct vsri_sim_host *a = random_host(run), *b = random_host(run);
    int p = run->fixed || run->nr == 1 || vsri_sim_below(w, 3) != 0 ? -1 : sim_primary(run);
    if (p >= 0) { /* failover mode: one partition in three isolates the primary */
      isolate_primary(run, p);
      a = b; /* nothing else this tick */
    }
    if (a != b) {
      bool both = vsri_sim_below(w, 2);
      sim_note(run, "fault: partition %u %s %u", vsri_sim_host_index(a), both ? "<->" : "->",
           vsri_sim_host_index(b));
      vsri_sim_partition(a, b, both);
      run->faults[0]++;
    }
  }
  if (vsri_sim_below(w, 1000000) < run->p_clog) {
    struct vsri_sim_host *a = random_host(run), *b = random_host(run);
    if (a != b) {
      uint64_t extra = vsri_sim_below(w, 300 * SIM_MS);
      vsri_sim_clog(a, b, extra, now + vsri_sim_below(w, 2 * SIM_S));
      sim_note(run, "fault: clog %u -> %u +%" PRIu64 " ms", vsri_sim_host_index(a),
           vsri_sim_host_index(b), (uint64_t)(extra / SIM_MS));
      run->faults[1]++;
    }
  }
  if (vsri_sim_below(w, 1000000) < run->p_reset && vsri_sim_reset_one(w)) {
    sim_note(run, "fault: reset a connection");
    run->faults[2]++;
  }
  if (vsri_sim_below(w, 1000000) < run->p_crash) crash_something(run);
  if (!run->fixed && run->nr > 1 && vsri_sim_below(w, 1000000) < run->p_primary) {
    int p = sim_primary(run); /* failover mode: the primary crashes, or is cut off */
    if (p >= 0 && vsri_sim_below(w, 2) == 0) {
      struct replica *r = &run->r[p];
      uint32_t f = (run->nr - 1u) / 2u, out = sim_replicas_out(run);
      if (out < f) crash_replica(run, r);
      else sim_note(run, "fault: no crash of the primary: %u replica(s) down or recovering, "
                    "budget f=%u", out, f);
    } else if (p >= 0) {
      isolate_primary(run, p);
    }
  }
  if (vsri_sim_below(w, 1000000) < run->p_heal) {
    vsri_sim_heal(w);
    run->faults[5]++;
  }
}

int sim_restart_due(struct run *run, bool all) {
  uint64_t now = vsri_sim_now(run->w);
  for (uint16_t i = 0; i < run->nr; i++) {
    struct replica *r = &run->r[i];
    if (!r->up && r->restart_at && (all || r->restart_at <= now)) {
      int err = sim_replica_start(run, r);
      if (err) {
        sim_fail(run, "replica %u: restart failed: %s", i, vsr_strerror(err));
        return err;
      }
      r->restart_at = 0;
      run->faults[4]++;
    }
  }
  for (uint32_t i = 0; i < run->nc; i++) {
    struct sclient *c = &run->c[i];
    if (c->dead && (all || c->restart_at <= now)) {
      sim_client_free(c, c->crashed);
      if (c->crashed) run->faults[4]++;
      int err = sim_client_start(run, c);
      if (err) {
        sim_fail(run, "client %u: restart failed: %s", i, vsr_strerror(err));
        return err;
      }
    }
  }
  return 0;
}

void sim_workload_tick(struct run *run) {
  uint64_t now = vsri_sim_now(run->w);
  for (uint32_t i = 0; i < run->nc; i++) {
    struct sclient *c = &run->c[i];
    if (!c->c || c->dead || (run->fixed && c->state != 1)) continue;
    if (!run->fixed) {
      if (run->stop_load || c->sub_len >= run->max_inflight || now < c->next_send) continue;
      client_request(run, c);
      c->next_send = now + run->think_ns;
      continue;
    }
    if (c->inflight >= run->max_inflight || now < c->next_send) continue;
    client_send(run, c);
    c->next_send = now + run->think_ns;
  }
}
