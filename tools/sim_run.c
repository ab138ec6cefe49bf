/* vsrbus sim: one seed end to end. Hosts and addresses, replicas (bus + demo state machine)
 * and clients (SDK) started and freed, the fault phase, the heal phase (links back within a
 * bound, then a new commit), shutdown with the counters balanced and the leak check. */
#include "sim_impl.h"

static const struct vsr_bus_callbacks replica_cb = {
    .on_message = sim_replica_on_message,
    .on_peer_event = sim_replica_on_event,
};

int sim_replica_start(struct run *run, struct replica *r) {
  struct vsri_io *io;
  int err = vsri_sim_io_new(&io, r->host, NULL);
  struct vsr_pool_options po;
  vsr_pool_options_default(&po);
  memset(po.prealloc, 0, sizeof po.prealloc);
  po.bytes_max = 256ull << 20;
  if (err == 0) err = vsri_loop_new_on(&r->loop, io, &po);
  if (err) return err;
  struct vsr_bus_options o;
  vsr_bus_options_default(&o);
  o.loop = r->loop;
  char caddr[32];
  snprintf(caddr, sizeof caddr, "10.0.0.%u:%d", r->idx + 1u, SIM_CLIENT_PORT);
  o.client_tcp_addr = caddr;
  char qaddr[32];
  if (run->quic) {
    snprintf(qaddr, sizeof qaddr, "10.0.0.%u:%d", r->idx + 1u, SIM_QUIC_PORT);
    o.quic.addr = qaddr;
  }
  o.max_message_size = 2u << 20;
  o.close_peer_timeout_ns = 500 * SIM_MS;
  o.frame_timeout_ns = 10 * SIM_S;
  o.memory_max = 256ull << 20;
  if (run->nr > 1) {
    o.cluster_name = "sim";
    o.replica_index = r->idx;
    o.replica_count = run->nr;
    o.replica_addrs = run->addrs;
    o.secret = run->secret;
    o.secret_len = sizeof run->secret;
    o.replica_auth = run->auth ? VSR_REPLICA_AUTH_ON : VSR_REPLICA_AUTH_OFF;
    o.reconnect_period_ns = run->reconnect_ns;
    o.handshake_grace_ns = run->grace_ns;
    o.tcp_keepalive_ns = (uint64_t)run->keepalive_s * SIM_S;
  }
  err = vsr_bus_new(&r->bus, &o, &replica_cb, r);
  if (err) {
    vsr_loop_del(r->loop);
    r->loop = NULL;
    return err;
  }
  vsri_bus_set_send_tap(r->bus, sim_replica_tap, r);
  err = vsr_sm_init(&r->sm, r->bus, r->idx, run->nr, run->cluster);
  if (err) return err;
  r->sm.batch_max = run->batch_max;
  r->sm.batch_delay_ns = SIM_BATCH_DELAY_NS;
  if (run->fixed) {
    /* --fixed-primary: the clients send raw Requests to replica 0 without a session, and the
     * checks assume a fixed primary: no view change, every replica normal from the start,
     * clients without a session served. */
    r->sm.status = VSR_SM_NORMAL;
    r->sm.primary_timeout_ns = 3600ull * 1000000000ull;
    r->sm.sessions_optional = true;
  } else {
    /* Failover: the real thing. A (re)started replica recovers (memory only), a backup that
     * hears nothing from the primary for primary_timeout_ns starts a view change, clients
     * register sessions; every commit goes through the checks of sim_acks.c. */
    r->sm.primary_timeout_ns = run->primary_timeout_ns;
    r->sm.on_commit = sim_on_commit;
    r->sm.on_commit_ctx = r;
  }
  r->committed = r->base = 0;
  r->vc_view = 0;
  r->up = true;
  r->tapped = 0;
  r->handshake_frames = 0;
  r->seen_commit = 0;
  memset(r->pstate, 0, sizeof r->pstate);
  if (r->held) memset(r->held, 0, r->held_cap * sizeof *r->held);
  if (r->client_slot) memset(r->client_slot, 0, r->client_slots * sizeof *r->client_slot);
  /* epoch[] keeps counting across incarnations: frames queued by an earlier one carry a
   * smaller epoch than anything the new connections carry. */
  sim_note(run, "replica %u: up", r->idx);
  return 0;
}

/* Frees a replica's bus, state machine and loop (a crash: nothing is drained). */
void sim_replica_free(struct replica *r) {
  vsr_sm_fini(&r->sm);
  vsr_bus_del(r->bus);
  r->bus = NULL;
  vsr_loop_del(r->loop);
  r->loop = NULL;
  r->up = false;
}

static void client_on_message(void *user, struct vsr_client *vc, struct vsr_msg *msg) {
  (void)vc;
  struct sclient *c = user;
  struct run *run = c->run;
  if (!run->fixed) { /* session mode: Replies, PongClients and Evictions go to the SDK */
    sim_fail(run, "client %u.%u: unexpected %s frame", c->idx, c->incarnation,
             vsr_command_name(msg->data[60]));
    return;
  }
  char who[64];
  snprintf(who, sizeof who, "link replica 0 -> client %u", c->idx);
  sim_link_deliver(run, &c->down, 0, msg, who);
  if (msg->data[60] == VSR_CMD_REPLY) {
    c->replies++;
    run->replies++;
    if (c->inflight > 0) c->inflight--;
  }
}

static void client_on_state(void *user, struct vsr_client *vc, int status) {
  (void)vc;
  struct sclient *c = user;
  struct run *run = c->run;
  sim_note(run, "client %u.%u: %s", c->idx, c->incarnation, status == 0 ? "connected"
                                                                     : vsr_errname(status));
  c->state = status == 0 ? 1 : status;
  if (status < 0 && !c->dead) {
    c->dead = true;
    c->restart_at = vsri_sim_now(run->w) + 50 * SIM_MS + vsri_sim_below(run->w, 500 * SIM_MS);
  }
}

static const struct vsr_client_callbacks client_cb = {
    .on_message = client_on_message,
    .on_state = client_on_state,
};

int sim_client_start(struct run *run, struct sclient *c) {
  if (!c->loop) {
    struct vsri_io *io;
    int err = vsri_sim_io_new(&io, c->host, NULL);
    struct vsr_pool_options po;
    vsr_pool_options_default(&po);
    memset(po.prealloc, 0, sizeof po.prealloc);
    po.bytes_max = 64ull << 20;
    if (err == 0) err = vsri_loop_new_on(&c->loop, io, &po);
    if (err) return err;
  }
  struct vsr_client_options o;
  vsr_client_options_default(&o);
  o.addr = run->client_addr;
  if (run->quic && c->idx % 2 == 1) { /* --quic: every other client */
    o.transport = "quic";
    o.addr = run->quic_addr;
    o.quic.insecure = true;
  }
  o.max_message_size = 2u << 20;
  o.queue_capacity = 64;
  c->incarnation++;
  if (!run->fixed) {
    /* The session SDK: every replica's address, Register, request numbers, resends to the
     * next replica, the view followed, heartbeat and liveness, on short virtual timeouts. */
    o.session = true;
    o.addrs = run->quic && c->idx % 2 == 1 ? run->qaddrs : run->caddrs;
    o.addr_count = run->nr;
    o.cluster = run->cluster;
    o.client_id = vsr_u128_from_u64((uint64_t)c->idx | (uint64_t)c->incarnation << 16);
    o.max_pending = SIM_SUB_MAX;
    o.request_timeout_ns = run->request_timeout_ns;
    o.request_deadline_ns = 30 * SIM_S;
    o.reconnect_min_ns = 20 * SIM_MS;
    o.reconnect_max_ns = 500 * SIM_MS;
    o.heartbeat_period_ns = 250 * SIM_MS;
    o.liveness_timeout_ns = 1500 * SIM_MS;
    c->sub_head = c->sub_len = 0;
  }
  c->dead = false;
  c->crashed = false;
  c->state = 0;
  c->inflight = 0;
  c->bus_id = 0;
  c->sent = 0;
  sim_link_clear(&c->up);
  sim_link_clear(&c->down);
  int err = vsr_client_new(&c->c, c->loop, &o, &client_cb, c);
  if (err) return err;
  c->next_send = vsri_sim_now(run->w);
  return 0;
}

void sim_client_free(struct sclient *c, bool loop_too) {
  if (c->c) {
    /* The SDK counts its sends like a bus peer: every accepted frame is sent, dropped or
     * still queued. */
    struct vsri_client_counts k;
    vsri_client_counts(c->c, &k);
    /* A session client also queues frames of its own (Register, PingClient, resends): only
     * the balance is checked there. */
    if ((c->run->fixed && k.frames_queued != c->sent) ||
        k.frames_queued != k.frames_out + k.frames_dropped + k.queue_depth) {
      sim_fail(c->run, "client %u.%u: %" PRIu64 " sends accepted, the SDK counted %" PRIu64
           " queued = %" PRIu64 " sent + %" PRIu64 " dropped + %u still queued", c->idx,
           c->incarnation, c->sent, k.frames_queued, k.frames_out, k.frames_dropped,
           k.queue_depth);
    }
    vsr_client_del(c->c); /* session mode: what is still submitted completes, canceled */
  }
  c->c = NULL;
  while (c->sub_len > 0) { /* nothing should be left; never leak it */
    vsr_msg_unref(c->sub[c->sub_head]);
    c->sub_head = (c->sub_head + 1) % SIM_SUB_MAX;
    c->sub_len--;
  }
  if (loop_too && c->loop) {
    vsr_loop_del(c->loop);
    c->loop = NULL;
  }
}

static void draw(struct run *run) {
  struct vsri_sim *w = run->w;
  static const uint16_t counts[] = {1, 3, 3, 5};
  run->nr = counts[vsri_sim_below(w, 4)];
  run->nc = 1 + (uint32_t)(vsri_sim_below(w, 4) == 0 ? vsri_sim_below(w, SIM_C_MAX)
                                                       : vsri_sim_below(w, 10));
  run->auth = vsri_sim_below(w, 4) != 0;
  if (run->force_nr) run->nr = run->force_nr;
  if (run->force_nc) run->nc = run->force_nc;
  run->size_min = 256;
  static const uint32_t maxes[] = {1024, 16384, 65536, 262144, 1048576};
  run->size_max = maxes[vsri_sim_below(w, 5)];
  if (run->force_max) run->size_max = run->force_max;
  run->max_inflight = 1 + (uint32_t)vsri_sim_below(w, 4);
  run->think_ns = 1 * SIM_MS + vsri_sim_below(w, 50 * SIM_MS);
  run->reconnect_ns = 100 * SIM_MS + vsri_sim_below(w, 400 * SIM_MS);
  run->grace_ns = 500 * SIM_MS + vsri_sim_below(w, 1000 * SIM_MS);

  run->fault_ns = 2 * SIM_S + vsri_sim_below(w, 4 * SIM_S);
  /* Fault rates per 5 ms tick, in ppm: from calm to stormy. */
  uint32_t storm = 1 + (uint32_t)vsri_sim_below(w, 4);
  run->p_partition = storm * (uint32_t)vsri_sim_below(w, 1500);
  run->p_clog = storm * (uint32_t)vsri_sim_below(w, 2000);
  run->p_reset = storm * (uint32_t)vsri_sim_below(w, 1000);
  run->p_crash = storm * (uint32_t)vsri_sim_below(w, 500);
  run->p_heal = 2000 + (uint32_t)vsri_sim_below(w, 20000);
  if (!run->fixed) { /* drawn last: the draws above stay what they were */
    run->primary_timeout_ns = 200 * SIM_MS + vsri_sim_below(w, 400 * SIM_MS);
    run->request_timeout_ns = 200 * SIM_MS + vsri_sim_below(w, 800 * SIM_MS);
    /* Faults aimed at the primary (a crash or an isolating partition), per tick, per million:
     * up to about two per second of the fault phase, so most seeds change views. */
    run->p_primary = storm * (uint32_t)vsri_sim_below(w, 2500);
  }
}

static int step(struct run *run, uint64_t until) {
  int err = vsri_sim_run_until(run->w, until);
  if (err) sim_fail(run, "the loops livelocked at one instant (a callback keeps re-arming work)");
  return err;
}

static uint32_t replica_links(const struct run *run, uint16_t i) {
  struct vsr_bus_stats st;
  vsr_bus_stats(run->r[i].bus, &st);
  return (uint32_t)st.replicas_connected;
}

/* Shuts every host down in order and checks the counters. */
static void shutdown_all(struct run *run) {
  for (uint32_t i = 0; i < run->nc; i++) sim_client_free(&run->c[i], false);
  for (uint16_t i = 0; i < run->nr; i++) {
    if (run->r[i].up) vsr_bus_shutdown_start(run->r[i].bus, 1 * SIM_S);
  }
  uint64_t deadline = vsri_sim_now(run->w) + 5 * SIM_S;
  for (;;) {
    bool done = true;
    for (uint16_t i = 0; i < run->nr; i++) {
      if (run->r[i].up && !vsr_bus_shutdown_done(run->r[i].bus)) done = false;
    }
    if (done) break;
    if (vsri_sim_now(run->w) >= deadline) {
      sim_fail(run, "shutdown did not finish within 5 s of virtual time");
      break;
    }
    if (step(run, vsri_sim_now(run->w) + 10 * SIM_MS)) break;
  }
  for (uint16_t i = 0; i < run->nr; i++) {
    struct replica *r = &run->r[i];
    if (!r->up) continue;
    struct vsr_bus_stats st;
    vsr_bus_stats(r->bus, &st);
    uint64_t dropped = st.drops_on_close + st.drops_stream_reset;
    if (!run->failed && st.frames_queued + r->handshake_frames != st.frames_out + dropped) {
      sim_fail(run, "replica %u: %" PRIu64 " frames queued + %" PRIu64 " handshake frames but %"
           PRIu64 " sent + %" PRIu64 " dropped at close", i, st.frames_queued,
           r->handshake_frames, st.frames_out, dropped);
    }
    if (!run->failed && st.frames_queued != r->tapped) {
      sim_fail(run, "replica %u: the bus counted %" PRIu64 " sends, the tap saw %" PRIu64, i,
           st.frames_queued, r->tapped);
    }
    vsr_sm_fini(&r->sm);
    vsr_bus_del(r->bus);
    r->bus = NULL;
    struct vsr_pool_stats ps;
    vsr_pool_stats(vsr_loop_pool(r->loop), &ps);
    if (!run->failed && ps.live != 0) {
      sim_fail(run, "replica %u: %" PRIu64 " message(s) still live in its pool after shutdown", i,
           ps.live);
    }
    vsr_loop_del(r->loop);
    r->loop = NULL;
    r->up = false;
  }
  for (uint32_t i = 0; i < run->nc; i++) {
    struct sclient *c = &run->c[i];
    if (!c->loop) continue;
    for (int k = 0; k < 4; k++) vsr_loop_run_once(c->loop, 0);
    struct vsr_pool_stats ps;
    vsr_pool_stats(vsr_loop_pool(c->loop), &ps);
    if (!run->failed && ps.live != 0) {
      sim_fail(run, "client %u: %" PRIu64 " message(s) still live in its pool", i, ps.live);
    }
    vsr_loop_del(c->loop);
    c->loop = NULL;
  }
}

static uint64_t sim_clock(void *world) { return vsri_sim_now(world); }

/* The network of |seed|, drawn from a generator of its own (the world's draws stay the
 * scenario's), and the keepalive setting. */
static void draw_net(struct run *run, uint64_t seed, struct vsri_sim_net *net) {
  struct vsri_sim *probe;
  vsri_sim_new(&probe, seed ^ 0x5eed, NULL);
  memset(net, 0, sizeof *net);
  net->delay_min_ns = 20000 + vsri_sim_below(probe, 200000);
  net->delay_mean_ns = net->delay_min_ns + vsri_sim_below(probe, 2 * SIM_MS);
  net->delay_tail_ns = vsri_sim_below(probe, 50 * SIM_MS) + 1;
  net->tail_ppm = 1 + (uint32_t)vsri_sim_below(probe, 20000);
  net->window_min = 1024 + (uint32_t)vsri_sim_below(probe, 16384);
  net->window_max = net->window_min + (uint32_t)vsri_sim_below(probe, 1u << 20);
  net->segment_max = 64 + (uint32_t)vsri_sim_below(probe, 65536);
  net->partial_write_ppm = 1 + (uint32_t)vsri_sim_below(probe, 300000);
  net->short_read_ppm = 1 + (uint32_t)vsri_sim_below(probe, 300000);
  net->connect_timeout_ns = 200 * SIM_MS + vsri_sim_below(probe, 800 * SIM_MS);
  net->rto_ns = 50 * SIM_MS + vsri_sim_below(probe, 300 * SIM_MS);
  /* Drawn here, not from the world: a seed's scenario stays what it was before keepalive. */
  run->keepalive_s = 1 + (uint32_t)vsri_sim_below(probe, 2);
  if (run->force_ka >= 0) run->keepalive_s = (uint32_t)run->force_ka;
  if (run->quic) { /* --quic: datagram faults, drawn last (the other draws stay the seed's) */
    net->dgram_loss_ppm = (uint32_t)vsri_sim_below(probe, 50001);
    net->dgram_dup_ppm = (uint32_t)vsri_sim_below(probe, 50001);
    net->dgram_queue_max = 4096;
  }
  vsri_sim_del(probe);
}

/* Hosts, addresses, then every replica and client started. */
static void setup(struct run *run) {
  run->cluster = vsr_cluster_id("sim");
  vsri_sim_random_bytes(run->w, run->secret, sizeof run->secret);
  for (uint16_t i = 0; i < run->nr; i++) {
    struct replica *r = &run->r[i];
    r->run = run;
    r->idx = (uint8_t)i;
    char ip[16];
    snprintf(ip, sizeof ip, "10.0.0.%u", i + 1u);
    r->host = vsri_sim_host_new(run->w, ip);
    snprintf(run->addr_buf[i], sizeof run->addr_buf[i], "10.0.0.%u:%d", i + 1u, SIM_REPLICA_PORT);
    run->addrs[i] = run->addr_buf[i];
    snprintf(run->caddr_buf[i], sizeof run->caddr_buf[i], "10.0.0.%u:%d", i + 1u, SIM_CLIENT_PORT);
    run->caddrs[i] = run->caddr_buf[i];
    snprintf(run->qaddr_buf[i], sizeof run->qaddr_buf[i], "10.0.0.%u:%d", i + 1u, SIM_QUIC_PORT);
    run->qaddrs[i] = run->qaddr_buf[i];
  }
  snprintf(run->client_addr, sizeof run->client_addr, "10.0.0.1:%d", SIM_CLIENT_PORT);
  snprintf(run->quic_addr, sizeof run->quic_addr, "10.0.0.1:%d", SIM_QUIC_PORT);
  for (uint32_t i = 0; i < run->nc; i++) {
    struct sclient *c = &run->c[i];
    c->run = run;
    c->idx = i;
    char ip[32];
    snprintf(ip, sizeof ip, "10.0.1.%u", i + 1);
    c->host = vsri_sim_host_new(run->w, ip);
  }
  sim_note(run, "seed %" PRIu64 ": %u replica(s), %u client(s), auth %s, frames %u..%u B, fault "
       "phase %.1f s", run->seed, run->nr, run->nc, run->auth ? "on" : "off", run->size_min,
       run->size_max, (double)run->fault_ns / 1e9);
  for (uint16_t i = 0; i < run->nr && !run->failed; i++) {
    int err = sim_replica_start(run, &run->r[i]);
    if (err) sim_fail(run, "replica %u: vsr_bus_new: %s", i, vsr_strerror(err));
  }
  for (uint32_t i = 0; i < run->nc && !run->failed; i++) {
    int err = sim_client_start(run, &run->c[i]);
    if (err) sim_fail(run, "client %u: vsr_client_new: %s", i, vsr_strerror(err));
  }
}

static void fail_links(struct run *run, uint64_t since, uint64_t bound) {
  char links[64] = "";
  for (uint16_t i = 0; i < run->nr; i++) {
    snprintf(links + strlen(links), sizeof links - strlen(links), " r%u:%u", i,
             replica_links(run, i));
  }
  sim_fail(run, "heal: replica links not all up %.3f s after the heal (bound %.3f s):%s "
       "(primary op %" PRIu64 " commit %" PRIu64 "; client 0 state %d, %u in flight)",
       (double)since / 1e9, (double)bound / 1e9, links, run->r[0].sm.op, run->r[0].sm.commit,
       run->c[0].state, run->c[0].inflight);
}

static void replica_line(const struct run *run, char *buf, size_t len) {
  buf[0] = 0;
  for (uint16_t i = 0; i < run->nr; i++) {
    const struct replica *r = &run->r[i];
    static const char *st[] = {"normal", "view-change", "recovering"};
    snprintf(buf + strlen(buf), len - strlen(buf), " r%u:%s/v%u/op%" PRIu64 "/commit%" PRIu64, i,
             r->up ? st[r->sm.status % 3] : "down", r->sm.view, r->sm.op, r->sm.commit);
  }
}

/* Failover mode, after the cluster committed again: the workload stops, and every replica
 * must come to the primary's view and commit within |bound|; then the acknowledged requests
 * are checked on all of them (sim_check_acked). */
static void converge(struct run *run, uint64_t bound) {
  uint64_t t0 = vsri_sim_now(run->w);
  run->stop_load = true;
  while (!run->failed) {
    if (step(run, vsri_sim_now(run->w) + SIM_TICK_NS)) return;
    sim_check_views(run);
    int p = run->failed ? -1 : sim_primary(run);
    bool all = p >= 0 && run->r[p].sm.commit == run->r[p].sm.op;
    for (uint16_t i = 0; i < run->nr && all; i++) {
      const struct replica *r = &run->r[i];
      if (!r->up || r->sm.status != VSR_SM_NORMAL || r->sm.view != run->r[p].sm.view ||
          r->sm.commit != run->r[p].sm.commit) {
        all = false;
      }
    }
    if (all) {
      sim_note(run, "heal: every replica in view %u at commit %" PRIu64 " after %.3f s",
               run->r[p].sm.view, run->r[p].sm.commit,
               (double)(vsri_sim_now(run->w) - t0) / 1e9);
      sim_check_acked(run);
      return;
    }
    if (vsri_sim_now(run->w) > t0 + bound) {
      char line[400];
      replica_line(run, line, sizeof line);
      sim_fail(run, "heal: the replicas did not reach one view and commit within %.1f s:%s",
               (double)bound / 1e9, line);
    }
  }
}

/* After the heal: every replica pair authenticated within |bound|, then a new Reply within
 * 5 s (fixed primary) or 10 s (failover: a view change, and the clients find the primary);
 * then, failover mode, the replicas converge and the acknowledged requests are checked. */
static void heal_phase(struct run *run, uint64_t heal_at, uint64_t bound) {
  sim_note(run, "heal");
  vsri_sim_heal(run->w);
  run->faults[5]++;
  sim_restart_due(run, true);
  uint64_t linked_at = 0, commits0 = 0;
  while (!run->failed) {
    if (step(run, vsri_sim_now(run->w) + SIM_TICK_NS)) break;
    sim_restart_due(run, false);
    if (!run->fixed) sim_check_views(run);
    sim_workload_tick(run);
    uint64_t now = vsri_sim_now(run->w);
    if (linked_at) {
      if (run->replies > commits0) { /* the cluster commits again */
        if (!run->fixed) converge(run, 10 * SIM_S);
        break;
      }
      uint64_t commit_bound = (run->fixed ? 5 : 10) * SIM_S;
      if (now > linked_at + commit_bound) {
        char line[400];
        replica_line(run, line, sizeof line);
        sim_fail(run, "heal: no Reply within %.0f s after every link was up:%s",
                 (double)commit_bound / 1e9, line);
      }
      continue;
    }
    bool all = true;
    for (uint16_t i = 0; i < run->nr; i++) {
      if (run->nr > 1 && replica_links(run, i) != (uint32_t)run->nr - 1u) all = false;
    }
    if (all) {
      linked_at = now;
      commits0 = run->replies;
      sim_note(run, "heal: every replica pair authenticated after %.3f s",
           (double)(now - heal_at) / 1e9);
    } else if (now > heal_at + bound) {
      fail_links(run, now - heal_at, bound);
    }
  }
}

/* Frees the run's own records and checks that the library gave back what it took. */
static void teardown(struct run *run, int64_t live0) {
  shutdown_all(run);
  for (uint16_t i = 0; i < run->nr; i++) free(run->r[i].held), free(run->r[i].client_slot);
  for (uint32_t i = 0; i < run->nc; i++) sim_link_clear(&run->c[i].up), sim_link_clear(&run->c[i].down);
  for (uint16_t i = 0; i < SIM_R_MAX; i++) {
    for (uint16_t j = 0; j < SIM_R_MAX; j++) sim_link_clear(&run->rl[i][j]);
  }
  free(run->prep);
  free(run->cm);
  free(run->acks);
  free(run->items);
  int64_t live1 = vsri_alloc_live();
  if (!run->failed && live1 != live0) {
    sim_fail(run, "after every host shut down, %" PRId64 " allocation(s) are not freed",
         live1 - live0);
  }
}

void sim_run_seed(uint64_t seed, const struct opts *opt, struct result *out) {
  uint64_t wall0 = vsr_tool_now();
  int64_t live0 = vsri_alloc_live();
  struct run *run = calloc(1, sizeof *run);
  if (!run) abort();
  run->seed = seed;
  run->verbose = opt->verbose;
  run->force_nr = opt->nr;
  run->force_nc = opt->nc;
  run->force_max = opt->max_frame;
  run->force_ka = opt->keepalive;
  run->quic = opt->quic;
  run->fixed = opt->fixed;
  run->batch_max = opt->batch_max ? opt->batch_max : VSR_SM_BATCH_MAX;
  sim_g_run = run;
  vsr_sm_set_say(sim_sm_say, NULL);
  struct vsri_sim_net net;
  draw_net(run, seed, &net);
  vsri_sim_new(&run->w, seed, &net);
  vsri_random_set_hook(vsri_sim_random_bytes, run->w);
  vsr_sm_set_clock(sim_clock, run->w);
  draw(run);
  setup(run);
  uint64_t heal_at = vsri_sim_now(run->w) + run->fault_ns;
  while (!run->failed && vsri_sim_now(run->w) < heal_at) { /* the fault phase */
    if (step(run, vsri_sim_now(run->w) + SIM_TICK_NS)) break;
    sim_fault_tick(run);
    if (sim_restart_due(run, false)) break;
    if (!run->fixed) sim_check_views(run);
    sim_workload_tick(run);
  }
  /* Bound: a reconnect period to redial, a connect timeout for a dial begun in the partition,
   * the handshake grace, keepalive (idle + 3 probes a third of it apart) for a link whose peer
   * died unseen, plus slack for delay tails and segments held by the partition. */
  uint64_t bound = 2 * run->reconnect_ns + run->grace_ns + net.connect_timeout_ns +
                   net.rto_ns + net.delay_tail_ns + 2 * SIM_S +
                   (uint64_t)run->keepalive_s * SIM_S * 2;
  if (!run->failed) heal_phase(run, heal_at, bound);
  uint64_t sim_end = vsri_sim_now(run->w);
  teardown(run, live0);
  *out = (struct result){.ok = !run->failed, .hash = vsri_sim_trace_hash(run->w),
                         .sim_s = (double)(sim_end - 1000000000ull) / 1e9,
                         .delivered = run->delivered, .replies = run->replies,
                         .nr = run->nr, .nc = run->nc, .quic = run->quic,
                         .quic_conns = run->quic_conns, .fixed = run->fixed,
                         .view_changes = run->view_changes, .acked = run->acks_len,
                         .batched = run->items_len};
  memcpy(out->faults, run->faults, sizeof out->faults);
  vsri_random_set_hook(NULL, NULL);
  vsr_sm_set_clock(NULL, NULL);
  vsr_sm_set_say(NULL, NULL);
  vsri_sim_del(run->w);
  sim_g_run = NULL;
  free(run);
  out->wall_s = (double)(vsr_tool_now() - wall0) / 1e9;
}
