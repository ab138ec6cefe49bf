/* vsrbus sim: the real bus, the demo state machine and the client SDK on a simulated network
 * (src/io/sim.h), one seed per run. Each seed draws its cluster (1, 3 or 5 replicas, 1-50
 * clients, frame sizes, auth on or off) and its fault rates, runs a fault phase, then a heal
 * phase, then shuts every host down, checking invariants all along:
 *   - per link, frames arrive exactly once, in order, byte-exact (a frame of a connection may
 *     only go missing if the sender's connection to that peer ended after it was queued);
 *   - every frame a send accepted is counted sent or dropped (frames_queued = frames_out +
 *     drops_on_close once a bus is done), and the send tap saw each one;
 *   - CONNECTED / AUTHENTICATED / LOST alternate per peer;
 *   - after the heal starts, every replica pair is authenticated within the reconnect and
 *     handshake bounds and the cluster commits a new request;
 *   - no two replicas hold different Prepares for one op;
 *   - after every host shut down, every pool is empty and every allocation freed.
 * A failure prints the seed, the virtual time, the peers, the replay command and the last
 * events. The primary (replica 0) is never crashed: the demo state machine keeps no log and has
 * no view change, so a restarted primary would reuse op numbers by design. */
#include <errno.h>
#include <inttypes.h>
#include <malloc.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "bus/bus_impl.h"
#include "cmds.h"
#include "io/runtime.h"
#include "io/sim.h"
#include "sm.h"
#include "util/alloc.h"
#include "util/random.h"
#include "vsrbus/vsrbus.h"

#define SIM_R_MAX 5
#define SIM_C_MAX 50
#define SIM_RING 48
#define SIM_TICK_NS (5ull * 1000000ull)
#define SIM_MS 1000000ull
#define SIM_S 1000000000ull
#define SIM_REPLICA_PORT 7000
#define SIM_CLIENT_PORT 8090
#define SIM_QUIC_PORT 8091

/* ---- per-link records -------------------------------------------------------------------- */

struct rec {
  uint64_t hash;
  uint32_t size;
  uint32_t epoch; /* the sender's connection to that peer when the send was accepted */
  uint8_t cmd;
};

#define LINK_CANDS 4

struct link {
  struct rec *v;
  size_t head, len, cap;
  bool started;        /* a frame was delivered */
  uint32_t recv_epoch; /* the receiver's connection the last frame came over */
  /* Which sender connection that receiver connection is: usually one candidate; several when
   * successive sender connections began with the same bytes (a resent Prepare) until a later
   * frame tells them apart. Each: the queue position of the next frame, and its epoch. */
  uint32_t ncand;
  size_t cand_pos[LINK_CANDS];
  uint32_t cand_epoch[LINK_CANDS];
};

static void link_push(struct link *l, struct rec r) {
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

static void link_clear(struct link *l) {
  free(l->v);
  memset(l, 0, sizeof *l);
}

/* ---- the run ----------------------------------------------------------------------------- */

struct run;

struct replica {
  struct run *run;
  uint8_t idx;
  struct vsri_sim_host *host;
  struct vsr_loop *loop;
  struct vsr_bus *bus;
  struct vsr_sm sm;
  bool up;
  uint64_t restart_at; /* crashed: restart at this time (0: not crashed) */
  uint8_t pstate[SIM_R_MAX]; /* 0 down, 1 connected, 2 authenticated */
  uint32_t epoch[SIM_R_MAX];
  uint64_t *client_slot; /* client-plane ids by slot: the connected one, 0: none */
  uint32_t client_slots;
  uint64_t tapped;       /* sends accepted this incarnation */
  uint64_t handshake_frames; /* replica handshake frames the bus queued itself */
  uint64_t seen_commit;  /* backups: commit number already checked */
  uint64_t *held;        /* backups: Prepare hash per op received this incarnation */
  size_t held_cap;
};

struct sclient {
  struct run *run;
  uint32_t idx;
  struct vsri_sim_host *host;
  struct vsr_loop *loop;
  struct vsr_client *c;
  uint32_t incarnation;
  int state;
  bool dead;           /* closed: recreate at restart_at */
  bool crashed;
  uint64_t restart_at;
  uint64_t next_send;
  uint32_t inflight;
  uint64_t request;
  uint64_t bus_id;     /* the primary's id for this incarnation (from its first Request) */
  struct link up, down;
  uint64_t replies;
  uint64_t sent; /* vsr_client_send calls accepted, this incarnation */
};

struct run {
  uint64_t seed;
  struct vsri_sim *w;
  /* drawn from the seed */
  uint16_t nr;
  uint32_t nc;
  bool auth;
  uint32_t size_min, size_max;
  uint32_t max_inflight;
  uint64_t think_ns;
  uint64_t reconnect_ns, grace_ns;
  uint32_t keepalive_s;
  uint64_t fault_ns;
  uint32_t p_partition, p_clog, p_reset, p_crash, p_heal; /* per tick, per million */
  uint16_t force_nr;  /* --replicas (0: drawn) */
  uint32_t force_nc;  /* --clients (0: drawn) */
  uint32_t force_max; /* --max-frame (0: drawn) */
  int force_ka;       /* --keepalive (-1: drawn) */
  bool quic;          /* --quic: odd clients over QUIC; no trace hash (GnuTLS randomness) */
  /* state */
  struct replica r[SIM_R_MAX];
  struct sclient c[SIM_C_MAX];
  const char *addrs[SIM_R_MAX];
  char addr_buf[SIM_R_MAX][32];
  char client_addr[32];
  char quic_addr[32];
  uint8_t secret[32];
  vsr_u128 cluster;
  struct link rl[SIM_R_MAX][SIM_R_MAX];
  uint64_t *prep; /* op -> Prepare hash, as the primary sent it */
  size_t prep_cap;
  /* results */
  bool failed;
  char ring[SIM_RING][200];
  uint32_t ring_n;
  uint64_t faults[6]; /* partition, clog, reset, crash, restart, heal */
  uint64_t delivered;
  uint64_t replies;
  uint64_t quic_conns; /* client connections the replicas saw over QUIC (--quic) */
  bool verbose;
};

static struct run *g_run; /* the log handler's target */

static const char *fault_names[] = {"partition", "clog", "reset", "crash", "restart", "heal"};

static double vsec(const struct run *run) { return (double)vsri_sim_now(run->w) / 1e9; }

static void note(struct run *run, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(struct run *run, const char *fmt, ...) {
  char *line = run->ring[run->ring_n++ % SIM_RING];
  int n = snprintf(line, 200, "%10.6f ", vsec(run));
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line + n, (size_t)(200 - n), fmt, ap);
  va_end(ap);
  if (run->verbose) fprintf(stderr, "%s\n", line);
}

static void fail(struct run *run, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(struct run *run, const char *fmt, ...) {
  if (run->failed) return;
  run->failed = true;
  char msg[400];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  fprintf(stderr, "FAIL seed=%" PRIu64 " t=%.6fs: %s\n", run->seed, vsec(run), msg);
  fprintf(stderr, "  replay: vsrbus sim --seed %" PRIu64 "%s --verbose\n", run->seed,
          run->quic ? " --quic" : "");
  fprintf(stderr, "  last events:\n");
  uint32_t n = run->ring_n < SIM_RING ? run->ring_n : SIM_RING;
  for (uint32_t i = run->ring_n - n; i < run->ring_n; i++) {
    fprintf(stderr, "    %s\n", run->ring[i % SIM_RING]);
  }
}

static void sim_log(void *user, enum vsr_log_level level, const char *line) {
  (void)user;
  (void)level;
  if (!g_run) return;
  const char *p = strstr(line, "VSR-");
  note(g_run, "log %s", p ? p : line);
}

static uint64_t frame_hash(const struct vsr_msg *m) { return XXH3_64bits(m->data, m->size); }

static const struct rec *link_at(const struct link *l, size_t k) {
  return &l->v[(l->head + k) % l->cap];
}

/* A frame arrived on link |l| over the receiver's connection |recv_epoch| (the receiver's count
 * of connections to that sender). On the connection already in use it must be the next frame
 * the sender queued on the matching connection; the first frame of a new receiver connection
 * must be the first frame the sender queued on one of its later connections (the frames of the
 * connections in between went down with them). Anything else was lost, reordered, duplicated,
 * altered or never sent. */
static void link_deliver(struct run *run, struct link *l, uint32_t recv_epoch,
                         const struct vsr_msg *m, const char *who) {
  uint64_t h = frame_hash(m);
  bool fresh = !l->started || recv_epoch != l->recv_epoch;
  size_t pos[LINK_CANDS];
  uint32_t ep[LINK_CANDS], n = 0;
  if (fresh) {
    uint32_t after = 0; /* the connection in use so far, if any: only later ones may start */
    for (uint32_t c = 0; c < l->ncand; c++) {
      if (c == 0 || l->cand_epoch[c] < after) after = l->cand_epoch[c];
    }
    for (size_t k = 0; k < l->len && n < LINK_CANDS; k++) {
      const struct rec *r = link_at(l, k);
      bool first = k == 0 || link_at(l, k - 1)->epoch < r->epoch;
      bool later = !l->started || r->epoch > after;
      if (first && later && r->hash == h && r->size == m->size) {
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
      fail(run, "%s: %s frame of %u bytes delivered that was never sent on this link, or "
           "delivered twice (%zu queued)", who, vsr_command_name(m->data[60]), m->size, l->len);
      return;
    }
    size_t at = fresh || l->ncand == 0 ? 0 : l->cand_pos[0];
    const struct rec *r = link_at(l, at < l->len ? at : 0);
    fail(run, "%s: %s frame of %u bytes (sender's connection %u) was skipped: %zu frame(s) "
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

/* ---- replicas ---------------------------------------------------------------------------- */

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
  else if (run->prep[op] != h) fail(run, "%s: two different Prepares for op %" PRIu64, who, op);
}

static void replica_tap(void *ctx, enum vsr_plane plane, uint64_t peer, const struct vsr_msg *m) {
  struct replica *r = ctx;
  struct run *run = r->run;
  if (peer == UINT64_MAX) { /* a handshake frame: not a send, but handed to the kernel too */
    r->handshake_frames++;
    return;
  }
  r->tapped++;
  struct rec rec = {.hash = frame_hash(m), .size = m->size, .cmd = m->data[60]};
  if (plane == VSR_PLANE_REPLICA) {
    if (peer >= run->nr) return fail(run, "replica %u: send to replica %" PRIu64, r->idx, peer);
    rec.epoch = r->epoch[peer];
    link_push(&run->rl[r->idx][peer], rec);
    if (run->verbose) {
      note(run, "replica %u: sent %s %u B to replica %" PRIu64 " (connection %u, %016" PRIx64 ")",
           r->idx, vsr_command_name(rec.cmd), rec.size, peer, rec.epoch, rec.hash);
    }
    if (rec.cmd == VSR_CMD_PREPARE) {
      const struct vsr_prepare_header *p = (const struct vsr_prepare_header *)m->data;
      prep_check(run, p->op, rec.hash, "primary");
    }
    return;
  }
  struct sclient *c = client_by_bus_id(run, peer);
  if (c) link_push(&c->down, rec);
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

static void replica_on_message(void *user, struct vsr_bus *bus, enum vsr_plane plane,
                               uint64_t peer, struct vsr_msg *msg) {
  (void)bus;
  struct replica *r = user;
  struct run *run = r->run;
  char who[80];
  if (plane == VSR_PLANE_REPLICA) {
    snprintf(who, sizeof who, "link replica %" PRIu64 " -> replica %u", peer, r->idx);
    if (run->verbose) {
      note(run, "%s: got %s %u B %016" PRIx64, who, vsr_command_name(msg->data[60]), msg->size,
           frame_hash(msg));
    }
    if (peer < run->nr) link_deliver(run, &run->rl[peer][r->idx], r->epoch[peer], msg, who);
    if (msg->data[60] == VSR_CMD_PREPARE) {
      const struct vsr_prepare_header *p = (const struct vsr_prepare_header *)msg->data;
      uint64_t h = frame_hash(msg);
      snprintf(who, sizeof who, "replica %u", r->idx);
      prep_check(run, p->op, h, who);
      replica_hold(r, p->op, h);
    }
    vsr_sm_on_replica_message(&r->sm, (uint8_t)peer, msg);
    /* A backup's commit covers the Prepares it holds: they must be the primary's. */
    for (uint64_t op = r->seen_commit + 1; op <= r->sm.commit && op < r->held_cap; op++) {
      if (r->held[op] && op < run->prep_cap && run->prep[op] != r->held[op]) {
        fail(run, "replica %u committed op %" PRIu64 " with a Prepare the primary did not send",
             r->idx, op);
      }
    }
    if (r->sm.commit > r->seen_commit) r->seen_commit = r->sm.commit;
    return;
  }
  if (msg->data[60] == VSR_CMD_REQUEST) {
    const struct vsr_request_header *rq = (const struct vsr_request_header *)msg->data;
    uint32_t ci = (uint32_t)(rq->client.lo & 0xffff), inc = (uint32_t)(rq->client.lo >> 16);
    if (ci < run->nc && run->c[ci].incarnation == inc && !run->c[ci].dead) {
      struct sclient *c = &run->c[ci];
      if (c->bus_id == 0) c->bus_id = peer;
      if (c->bus_id != peer) {
        fail(run, "client %u: its frames arrive from two client ids (%" PRIx64 ", %" PRIx64 ")",
             ci, c->bus_id, peer);
      }
      snprintf(who, sizeof who, "link client %u -> replica %u", ci, r->idx);
      link_deliver(run, &c->up, 0, msg, who);
    }
  }
  vsr_sm_on_client_message(&r->sm, peer, msg);
}

static void replica_on_event(void *user, struct vsr_bus *bus, const struct vsr_peer_event *ev) {
  (void)bus;
  struct replica *r = user;
  struct run *run = r->run;
  static const char *kinds[] = {"?", "CONNECTED", "AUTHENTICATED", "LOST"};
  note(run, "replica %u: %s %s %" PRIx64 " (%s)", r->idx, kinds[ev->kind & 3],
       ev->plane == VSR_PLANE_REPLICA ? "replica" : "client", ev->id,
       ev->kind == VSR_PEER_LOST ? vsr_errname(ev->reason) : "ok");
  uint64_t rec[3] = {((uint64_t)r->idx << 8) | ev->kind, ev->id, vsri_sim_now(run->w)};
  vsri_sim_trace(run->w, rec, sizeof rec);
  if (ev->plane == VSR_PLANE_REPLICA) {
    if (ev->id >= run->nr || ev->id == r->idx) {
      return fail(run, "replica %u: event for replica %" PRIu64, r->idx, ev->id);
    }
    uint8_t *st = &r->pstate[ev->id];
    switch (ev->kind) {
    case VSR_PEER_CONNECTED:
      if (*st != 0) fail(run, "replica %u: CONNECTED twice for replica %" PRIu64, r->idx, ev->id);
      *st = 1;
      break;
    case VSR_PEER_AUTHENTICATED:
      if (*st != 1) {
        fail(run, "replica %u: AUTHENTICATED for replica %" PRIu64 " without CONNECTED", r->idx,
             ev->id);
      }
      *st = 2;
      r->epoch[ev->id]++;
      vsr_sm_on_replica_up(&r->sm, (uint8_t)ev->id);
      break;
    case VSR_PEER_LOST:
      if (*st == 0) {
        fail(run, "replica %u: LOST for replica %" PRIu64 " not connected", r->idx, ev->id);
      }
      /* Lower ids dial: a peer that dialed us is reported only once authenticated. */
      if (*st == 1 && ev->id < r->idx) {
        fail(run, "replica %u: events for replica %" PRIu64 " (it dialed us) that never "
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
      fail(run, "replica %u: CONNECTED for client %" PRIx64 " while %" PRIx64 " holds its slot",
           r->idx, ev->id, r->client_slot[slot]);
    }
    r->client_slot[slot] = ev->id;
  } else if (ev->kind == VSR_PEER_LOST) {
    if (r->client_slot[slot] != ev->id) {
      fail(run, "replica %u: LOST for client %" PRIx64 " that is not connected", r->idx, ev->id);
    }
    r->client_slot[slot] = 0;
  } else {
    fail(run, "replica %u: AUTHENTICATED on the client plane", r->idx);
  }
}

static const struct vsr_bus_callbacks replica_cb = {
    .on_message = replica_on_message,
    .on_peer_event = replica_on_event,
};

static int replica_start(struct run *run, struct replica *r) {
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
  vsri_bus_set_send_tap(r->bus, replica_tap, r);
  err = vsr_sm_init(&r->sm, r->bus, r->idx, run->nr, run->cluster);
  if (err) return err;
  /* The simulated clients send raw Requests to replica 0 without a session, and the checks
   * assume a fixed primary: no view change, every replica normal from the start, clients
   * without a session served (vsrbus demo exercises sessions and view changes). */
  r->sm.status = VSR_SM_NORMAL;
  r->sm.primary_timeout_ns = 3600ull * 1000000000ull;
  r->sm.sessions_optional = true;
  r->up = true;
  r->tapped = 0;
  r->handshake_frames = 0;
  r->seen_commit = 0;
  memset(r->pstate, 0, sizeof r->pstate);
  if (r->held) memset(r->held, 0, r->held_cap * sizeof *r->held);
  if (r->client_slot) memset(r->client_slot, 0, r->client_slots * sizeof *r->client_slot);
  /* epoch[] keeps counting across incarnations: frames queued by an earlier one carry a
   * smaller epoch than anything the new connections carry. */
  note(run, "replica %u: up", r->idx);
  return 0;
}

/* Frees a replica's bus, state machine and loop (a crash: nothing is drained). */
static void replica_free(struct replica *r) {
  vsr_sm_fini(&r->sm);
  vsr_bus_del(r->bus);
  r->bus = NULL;
  vsr_loop_del(r->loop);
  r->loop = NULL;
  r->up = false;
}

/* ---- clients ----------------------------------------------------------------------------- */

static void client_on_message(void *user, struct vsr_client *vc, struct vsr_msg *msg) {
  (void)vc;
  struct sclient *c = user;
  struct run *run = c->run;
  char who[64];
  snprintf(who, sizeof who, "link replica 0 -> client %u", c->idx);
  link_deliver(run, &c->down, 0, msg, who);
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
  note(run, "client %u.%u: %s", c->idx, c->incarnation, status == 0 ? "connected"
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

static int client_start(struct run *run, struct sclient *c) {
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
  c->dead = false;
  c->crashed = false;
  c->state = 0;
  c->inflight = 0;
  c->bus_id = 0;
  c->sent = 0;
  link_clear(&c->up);
  link_clear(&c->down);
  int err = vsr_client_new(&c->c, c->loop, &o, &client_cb, c);
  if (err) return err;
  c->next_send = vsri_sim_now(run->w);
  return 0;
}

static void client_free(struct sclient *c, bool loop_too) {
  if (c->c) {
    /* The SDK counts its sends like a bus peer: every accepted frame is sent, dropped or
     * still queued. */
    struct vsri_client_counts k;
    vsri_client_counts(c->c, &k);
    if (k.frames_queued != c->sent ||
        k.frames_queued != k.frames_out + k.frames_dropped + k.queue_depth) {
      fail(c->run, "client %u.%u: %" PRIu64 " sends accepted, the SDK counted %" PRIu64
           " queued = %" PRIu64 " sent + %" PRIu64 " dropped + %u still queued", c->idx,
           c->incarnation, c->sent, k.frames_queued, k.frames_out, k.frames_dropped,
           k.queue_depth);
    }
    vsr_client_del(c->c);
  }
  c->c = NULL;
  if (loop_too && c->loop) {
    vsr_loop_del(c->loop);
    c->loop = NULL;
  }
}

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

static void client_send(struct run *run, struct sclient *c) {
  uint32_t size = draw_size(run);
  struct vsr_msg *m = vsr_client_msg_new(c->c, size);
  if (!m) {
    note(run, "client %u: no message of %u bytes from the pool", c->idx, size);
    return;
  }
  struct vsr_request_header *rq = (struct vsr_request_header *)m->data;
  vsr_header_init(m->data, VSR_CMD_REQUEST, size);
  rq->cluster = run->cluster;
  rq->client = vsr_u128_from_u64((uint64_t)c->idx | (uint64_t)c->incarnation << 16);
  rq->operation = VSR_OP_SEND_MESSAGES;
  rq->session = 1;
  rq->request = ++c->request;
  /* A body unique to this frame: a random byte throughout, a random word at each end. */
  uint64_t x = vsri_sim_rand(run->w);
  memset(m->data + VSR_HEADER_SIZE, (int)(x & 0xff), size - VSR_HEADER_SIZE);
  memcpy(m->data + VSR_HEADER_SIZE, &x, 8);
  memcpy(m->data + size - 8, &x, 8);
  int err = vsr_client_send(c->c, m);
  if (err == 0) {
    struct rec r = {.hash = frame_hash(m), .size = size, .cmd = VSR_CMD_REQUEST};
    link_push(&c->up, r);
    c->inflight++;
    c->sent++;
  } else {
    note(run, "client %u: send refused: %s", c->idx, vsr_errname(err));
  }
  vsr_msg_unref(m);
}

/* ---- scenario ---------------------------------------------------------------------------- */

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
}

static struct vsri_sim_host *random_host(struct run *run) {
  uint32_t n = run->nr + run->nc;
  uint32_t k = (uint32_t)vsri_sim_below(run->w, n);
  return k < run->nr ? run->r[k].host : run->c[k - run->nr].host;
}

static void crash_something(struct run *run) {
  struct vsri_sim *w = run->w;
  uint64_t now = vsri_sim_now(w);
  uint32_t n = (run->nr - 1) + run->nc; /* never the primary */
  uint32_t k = (uint32_t)vsri_sim_below(w, n);
  if (k < (uint32_t)run->nr - 1) {
    struct replica *r = &run->r[k + 1];
    if (!r->up) return;
    note(run, "fault: crash replica %u", r->idx);
    vsri_sim_crash(r->host);
    replica_free(r);
    r->restart_at = now + 100 * SIM_MS + vsri_sim_below(w, 1500 * SIM_MS);
  } else {
    struct sclient *c = &run->c[k - (run->nr - 1)];
    if (!c->c) return;
    note(run, "fault: crash client %u", c->idx);
    vsri_sim_crash(c->host);
    client_free(c, true);
    c->dead = true;
    c->crashed = true;
    c->restart_at = now + 100 * SIM_MS + vsri_sim_below(w, 1000 * SIM_MS);
  }
  run->faults[3]++;
}

static void fault_tick(struct run *run) {
  struct vsri_sim *w = run->w;
  uint64_t now = vsri_sim_now(w);
  if (vsri_sim_below(w, 1000000) < run->p_partition) {
    struct vsri_sim_host *a = random_host(run), *b = random_host(run);
    if (a != b) {
      bool both = vsri_sim_below(w, 2);
      note(run, "fault: partition %u %s %u", vsri_sim_host_index(a), both ? "<->" : "->",
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
      note(run, "fault: clog %u -> %u +%" PRIu64 " ms", vsri_sim_host_index(a),
           vsri_sim_host_index(b), (uint64_t)(extra / SIM_MS));
      run->faults[1]++;
    }
  }
  if (vsri_sim_below(w, 1000000) < run->p_reset && vsri_sim_reset_one(w)) {
    note(run, "fault: reset a connection");
    run->faults[2]++;
  }
  if (vsri_sim_below(w, 1000000) < run->p_crash) crash_something(run);
  if (vsri_sim_below(w, 1000000) < run->p_heal) {
    vsri_sim_heal(w);
    run->faults[5]++;
  }
}

static int restart_due(struct run *run, bool all) {
  uint64_t now = vsri_sim_now(run->w);
  for (uint16_t i = 0; i < run->nr; i++) {
    struct replica *r = &run->r[i];
    if (!r->up && r->restart_at && (all || r->restart_at <= now)) {
      int err = replica_start(run, r);
      if (err) {
        fail(run, "replica %u: restart failed: %s", i, vsr_strerror(err));
        return err;
      }
      r->restart_at = 0;
      run->faults[4]++;
    }
  }
  for (uint32_t i = 0; i < run->nc; i++) {
    struct sclient *c = &run->c[i];
    if (c->dead && (all || c->restart_at <= now)) {
      client_free(c, c->crashed);
      if (c->crashed) run->faults[4]++;
      int err = client_start(run, c);
      if (err) {
        fail(run, "client %u: restart failed: %s", i, vsr_strerror(err));
        return err;
      }
    }
  }
  return 0;
}

static void workload_tick(struct run *run) {
  uint64_t now = vsri_sim_now(run->w);
  for (uint32_t i = 0; i < run->nc; i++) {
    struct sclient *c = &run->c[i];
    if (!c->c || c->dead || c->state != 1) continue;
    if (c->inflight >= run->max_inflight || now < c->next_send) continue;
    client_send(run, c);
    c->next_send = now + run->think_ns;
  }
}

static int step(struct run *run, uint64_t until) {
  int err = vsri_sim_run_until(run->w, until);
  if (err) fail(run, "the loops livelocked at one instant (a callback keeps re-arming work)");
  return err;
}

static uint32_t replica_links(const struct run *run, uint16_t i) {
  struct vsr_bus_stats st;
  vsr_bus_stats(run->r[i].bus, &st);
  return (uint32_t)st.replicas_connected;
}

/* Shuts every host down in order and checks the counters. */
static void shutdown_all(struct run *run) {
  for (uint32_t i = 0; i < run->nc; i++) client_free(&run->c[i], false);
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
      fail(run, "shutdown did not finish within 5 s of virtual time");
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
      fail(run, "replica %u: %" PRIu64 " frames queued + %" PRIu64 " handshake frames but %"
           PRIu64 " sent + %" PRIu64 " dropped at close", i, st.frames_queued,
           r->handshake_frames, st.frames_out, dropped);
    }
    if (!run->failed && st.frames_queued != r->tapped) {
      fail(run, "replica %u: the bus counted %" PRIu64 " sends, the tap saw %" PRIu64, i,
           st.frames_queued, r->tapped);
    }
    vsr_sm_fini(&r->sm);
    vsr_bus_del(r->bus);
    r->bus = NULL;
    struct vsr_pool_stats ps;
    vsr_pool_stats(vsr_loop_pool(r->loop), &ps);
    if (!run->failed && ps.live != 0) {
      fail(run, "replica %u: %" PRIu64 " message(s) still live in its pool after shutdown", i,
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
      fail(run, "client %u: %" PRIu64 " message(s) still live in its pool", i, ps.live);
    }
    vsr_loop_del(c->loop);
    c->loop = NULL;
  }
}

struct result {
  bool ok;
  uint64_t hash;
  double sim_s, wall_s;
  uint64_t delivered, replies;
  uint64_t faults[6];
  uint16_t nr;
  uint32_t nc;
  bool quic; /* no trace hash: GnuTLS's randomness is not the seed's */
  uint64_t quic_conns;
};

static uint64_t sim_clock(void *world) { return vsri_sim_now(world); }

struct opts {
  bool verbose;
  bool list; /* --seeds: print every seed's line, not only the failing ones */
  uint16_t nr;
  uint32_t nc;
  uint32_t max_frame;
  int keepalive;
  bool quic;
};

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
  note(run, "seed %" PRIu64 ": %u replica(s), %u client(s), auth %s, frames %u..%u B, fault "
       "phase %.1f s", run->seed, run->nr, run->nc, run->auth ? "on" : "off", run->size_min,
       run->size_max, (double)run->fault_ns / 1e9);
  for (uint16_t i = 0; i < run->nr && !run->failed; i++) {
    int err = replica_start(run, &run->r[i]);
    if (err) fail(run, "replica %u: vsr_bus_new: %s", i, vsr_strerror(err));
  }
  for (uint32_t i = 0; i < run->nc && !run->failed; i++) {
    int err = client_start(run, &run->c[i]);
    if (err) fail(run, "client %u: vsr_client_new: %s", i, vsr_strerror(err));
  }
}

static void fail_links(struct run *run, uint64_t since, uint64_t bound) {
  char links[64] = "";
  for (uint16_t i = 0; i < run->nr; i++) {
    snprintf(links + strlen(links), sizeof links - strlen(links), " r%u:%u", i,
             replica_links(run, i));
  }
  fail(run, "heal: replica links not all up %.3f s after the heal (bound %.3f s):%s "
       "(primary op %" PRIu64 " commit %" PRIu64 "; client 0 state %d, %u in flight)",
       (double)since / 1e9, (double)bound / 1e9, links, run->r[0].sm.op, run->r[0].sm.commit,
       run->c[0].state, run->c[0].inflight);
}

/* After the heal: every replica pair authenticated within |bound|, then a new Reply within
 * 5 s. */
static void heal_phase(struct run *run, uint64_t heal_at, uint64_t bound) {
  note(run, "heal");
  vsri_sim_heal(run->w);
  run->faults[5]++;
  restart_due(run, true);
  uint64_t linked_at = 0, commits0 = 0;
  while (!run->failed) {
    if (step(run, vsri_sim_now(run->w) + SIM_TICK_NS)) break;
    restart_due(run, false);
    workload_tick(run);
    uint64_t now = vsri_sim_now(run->w);
    if (linked_at) {
      if (run->replies > commits0) break; /* the cluster commits again */
      if (now > linked_at + 5 * SIM_S) {
        fail(run, "heal: no Reply within 5 s after every link was up (primary op %" PRIu64
             ", commit %" PRIu64 ")", run->r[0].sm.op, run->r[0].sm.commit);
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
      note(run, "heal: every replica pair authenticated after %.3f s",
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
  for (uint32_t i = 0; i < run->nc; i++) link_clear(&run->c[i].up), link_clear(&run->c[i].down);
  for (uint16_t i = 0; i < SIM_R_MAX; i++) {
    for (uint16_t j = 0; j < SIM_R_MAX; j++) link_clear(&run->rl[i][j]);
  }
  free(run->prep);
  int64_t live1 = vsri_alloc_live();
  if (!run->failed && live1 != live0) {
    fail(run, "after every host shut down, %" PRId64 " allocation(s) are not freed",
         live1 - live0);
  }
}

static void run_seed(uint64_t seed, const struct opts *opt, struct result *out) {
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
  g_run = run;
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
    fault_tick(run);
    if (restart_due(run, false)) break;
    workload_tick(run);
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
                         .quic_conns = run->quic_conns};
  memcpy(out->faults, run->faults, sizeof out->faults);
  vsri_random_set_hook(NULL, NULL);
  vsr_sm_set_clock(NULL, NULL);
  vsri_sim_del(run->w);
  g_run = NULL;
  free(run);
  out->wall_s = (double)(vsr_tool_now() - wall0) / 1e9;
}

static void print_result(uint64_t seed, const struct result *r) {
  printf("seed %" PRIu64 ": %s replicas=%u clients=%u faults:", seed, r->ok ? "ok" : "FAIL",
         r->nr, r->nc);
  for (int i = 0; i < 6; i++) printf(" %s=%" PRIu64, fault_names[i], r->faults[i]);
  printf(" frames=%" PRIu64 " replies=%" PRIu64 " sim=%.2fs wall=%.2fs", r->delivered,
         r->replies, r->sim_s, r->wall_s);
  /* With QUIC a run is not a function of its seed alone (GnuTLS draws its own randomness for
   * the TLS handshake): no trace hash to compare. */
  if (r->quic) printf(" quic=%" PRIu64 " hash=none\n", r->quic_conns);
  else printf(" hash=%016" PRIx64 "\n", r->hash);
}

static void sim_usage(FILE *f) {
  fprintf(f,
          "usage: vsrbus sim [--seed S | --seeds N [--from S]] [--replicas N] [--clients N]\n"
          "                  [--max-frame B] [--keepalive S] [--quic] [--list] [--verbose]\n"
          "\n"
          "Runs the bus, the demo state machine and the client SDK on a simulated network,\n"
          "with faults drawn from the seed, and checks the bus's invariants.\n"
          "\n"
          "  --seed S     run one seed and print one summary line (default: 42)\n"
          "  --seeds N    run N seeds (from --from, default: random) and print the failing ones\n"
          "  --from S     first seed of --seeds (then S, S+1, ...)\n"
          "  --replicas N force the replica count (1, 3 or 5; default: drawn per seed)\n"
          "  --clients N  force the client count (1..50; default: drawn per seed)\n"
          "  --max-frame B  force the largest frame (256..1048576 bytes; default: drawn)\n"
          "  --keepalive S  tcp_keepalive_ns in s (0: off, to show what it is for; default: 1-2)\n"
          "  --quic       odd clients use QUIC (replicas listen on QUIC too), datagrams lost and\n"
          "               duplicated at rates drawn per seed; not reproducible: no trace hash\n"
          "               (GnuTLS draws its own randomness; default: off, TCP only)\n"
          "  --list       with --seeds: print every seed's line, not only the failing ones\n"
          "  --verbose    print every event as it happens\n"
          "\n"
          "exit status: 0 every seed passed, 1 a seed failed, 2 usage\n");
}

int vsr_cmd_sim(int argc, char **argv) {
  uint64_t seed = 42, count = 0, from = 0;
  bool have_from = false;
  struct opts opt = {.keepalive = -1};
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      sim_usage(stdout);
      return 0;
    }
    if (strcmp(a, "--verbose") == 0) {
      opt.verbose = true;
      continue;
    }
    if (strcmp(a, "--list") == 0) {
      opt.list = true;
      continue;
    }
    if (strcmp(a, "--quic") == 0) {
      opt.quic = true;
      continue;
    }
    if (i + 1 >= argc) {
      sim_usage(stderr);
      return 2;
    }
    char *end;
    errno = 0;
    unsigned long long v = strtoull(argv[i + 1], &end, 0);
    if (errno || *end) {
      fprintf(stderr, "vsrbus sim: %s: not a number: %s\n", a, argv[i + 1]);
      return 2;
    }
    if (strcmp(a, "--seed") == 0) seed = v;
    else if (strcmp(a, "--seeds") == 0) count = v;
    else if (strcmp(a, "--from") == 0) from = v, have_from = true;
    else if (strcmp(a, "--replicas") == 0 && (v == 1 || v == 3 || v == 5)) opt.nr = (uint16_t)v;
    else if (strcmp(a, "--clients") == 0 && v >= 1 && v <= SIM_C_MAX) opt.nc = (uint32_t)v;
    else if (strcmp(a, "--keepalive") == 0 && v <= 60) opt.keepalive = (int)v;
    else if (strcmp(a, "--max-frame") == 0 && v >= 256 && v <= (1u << 20))
      opt.max_frame = (uint32_t)v;
    else {
      sim_usage(stderr);
      return 2;
    }
    i++;
  }
  /* Frames of up to 1 MiB come and go by the thousand: keep them off mmap/munmap. */
  mallopt(M_MMAP_THRESHOLD, 64 << 20);
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
  vsr_log_set_handler(sim_log, NULL);
  vsr_log_set_level(VSR_LOG_WARN);
  if (count == 0) {
    struct result r;
    run_seed(seed, &opt, &r);
    print_result(seed, &r);
    return r.ok ? 0 : 1;
  }
  if (!have_from) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    from = ((uint64_t)ts.tv_sec * 1000003ull) ^ (uint64_t)ts.tv_nsec;
  }
  uint64_t failed = 0;
  double sim_s = 0, wall0 = (double)vsr_tool_now();
  for (uint64_t i = 0; i < count; i++) {
    struct result r;
    run_seed(from + i, &opt, &r);
    sim_s += r.sim_s;
    if (!r.ok) failed++;
    if (!r.ok || opt.list) print_result(from + i, &r);
  }
  double wall = ((double)vsr_tool_now() - wall0) / 1e9;
  printf("sim: %" PRIu64 " seed(s) from %" PRIu64 ", %" PRIu64 " failed; %.1f seeds/min; "
         "%.1f simulated s per wall s (%.1f s simulated in %.1f s)\n",
         count, from, failed, (double)count * 60.0 / (wall > 0 ? wall : 1),
         sim_s / (wall > 0 ? wall : 1),
         sim_s, wall);
  return failed ? 1 : 0;
}
