/* Shards (docs/shards.md): vsr_bus_options.shards = N runs the TCP and QUIC client plane on N
 * loops on N threads. Shard 0 is the caller's bus (its loop, its callbacks, the replica plane, TLS,
 * WS, metrics); shards 1..N-1 are worker threads, each running a bus of its own on a loop of
 * its own that listens on the same TCP and QUIC addresses (SO_REUSEPORT: the kernel spreads new
 * TCP connections; QUIC datagrams go where their connection ID says, quic_shard.c). Nothing is shared but frames, passed by reference through single-producer
 * rings:
 *   up   (worker k -> shard 0): frames received (the worker's only reference moves with them)
 *        and peer events, delivered to the application's callbacks on shard 0;
 *   down (shard 0 -> worker k): sends to, and closes of, clients of shard k (the message is
 *        marked VSR_MSG_SHARED: both threads may hold references).
 * Each direction wakes the other side's loop with a doorbell (io/doorbell.c). A message whose
 * last reference goes on a thread other than its pool's returns to that pool's lock-free
 * stack (util/msg.c). Client ids carry their shard in bits 24..31 (bus.c mints them). */
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "bus/bus_impl.h"
#include "transport/quic.h"
#include "util/alloc.h"
#include "util/log.h"
#include "util/pool.h"
#include "util/spsc.h"

#define SHARD_UP_CAP 1024    /* frames and events in flight from one worker to shard 0 */
#define SHARD_DOWN_CAP 4096  /* sends in flight from shard 0 to one worker */
#define SHARD_DRAIN_BUDGET 256 /* up entries taken from one worker per wake-up (fairness) */
#define SHARD_UP_BYTES (32u << 20) /* frame bytes one worker may have on their way to shard 0 */
#define SHARD_FREE_MIN 4096 /* free-list length per class a worker keeps (at least): the frames
                               in flight to shard 0 come back, and are reused, not reallocated */

enum { UP_FRAME = 1, UP_EVENT = 2 };
enum { CMD_RUN = 0, CMD_SHUTDOWN = 1, CMD_ABORT = 2 };
enum { ST_STARTING = 0, ST_RUNNING = 1, ST_FAILED = 2, ST_EXITED = 3 };

struct shard_up {
  uint8_t kind, ev;
  int32_t reason;
  uint64_t id;
  struct vsr_msg *msg;
  const char *transport; /* a transport's static name */
  char addr[48];
};

struct shard_down {
  uint64_t id;
  struct vsr_msg *msg; /* NULL: close the client */
};

struct shard_snap {
  struct vsr_bus_stats st;
  uint64_t pt[4][2][VSRI_BUS_TRANSPORTS]; /* frames in, bytes in, frames out, bytes out */
  struct vsri_quic_admission adm; /* its QUIC listener's (zero without one) */
};

struct shard {
  struct vsri_shards *set;
  uint32_t index;
  pthread_t thread;
  bool started;
  /* The worker's own (touched by its thread only while it runs). */
  struct vsr_loop *loop;
  struct vsr_bus *bus;
  struct vsri_doorbell *bell; /* rung by shard 0 */
  bool shutting;
  struct shard_up *outbox; /* up entries waiting for room in the ring */
  uint32_t out_len, out_cap;
  /* Shared. */
  struct vsri_spsc up, down;
  _Atomic int cmd, state;
  _Atomic int up_wait; /* the worker has an outbox backlog: shard 0 wakes it after a drain */
  uint64_t up_pushed;          /* the worker's: frame bytes it pushed on the up ring */
  _Atomic uint64_t up_popped;  /* shard 0's: frame bytes it took (stored once per drain) */
  uint64_t up_popped_local;
  pthread_mutex_t wait_mu; /* the worker waits on |wait_cv| while its up ring is full */
  pthread_cond_t wait_cv;
  int start_err;
  struct vsr_pool *pool; /* the worker's pool, kept past its loop (shard 0 may hold frames) */
  pthread_mutex_t snap_mu;
  struct shard_snap snap;
  /* Shard 0's: the live client ids of this shard, by slot (VSR_ENOTCONN for the others). */
  uint64_t *live;
  uint32_t live_len;
};

struct vsri_shards {
  struct vsr_bus *bus; /* shard 0 */
  uint32_t n;
  uint64_t shut_timeout_ns;
  struct vsri_doorbell *bell0;
  struct vsri_pool_share share;
  _Atomic uint64_t clients; /* clients registered on every shard: max_clients is global */
  sem_t started;
  struct shard w[]; /* w[i]: shard i + 1 */
};

static inline uint32_t shard_of(uint64_t id) { return (uint32_t)(id >> 24) & 0xff; }
static inline uint32_t slot_of(uint64_t id) { return (uint32_t)id & 0xffffff; }

/* ---- worker side ----------------------------------------------------------------------- */

static void w_push(struct shard *s, const struct shard_up *e) {
  if (s->out_len == s->out_cap) { /* grows to the peak backlog, then steady */
    uint32_t cap = s->out_cap ? s->out_cap * 2 : 256;
    struct shard_up *o = vsri_realloc(s->outbox, cap * sizeof *o);
    if (!o) { /* cannot happen quietly: the frame is dropped and said so */
      VSRI_ERROR("VSR-SHARD", "shard %u: out of memory for the backlog to shard 0; frame of "
                 "client %llx dropped", s->index, (unsigned long long)e->id);
      if (e->msg) vsr_msg_unref(e->msg);
      return;
    }
    s->outbox = o;
    s->out_cap = cap;
  }
  s->outbox[s->out_len++] = *e;
}

static void w_on_message(void *user, struct vsr_bus *bus, enum vsr_plane plane, uint64_t peer,
                         struct vsr_msg *msg) {
  (void)bus;
  (void)plane;
  struct shard_up e = {.kind = UP_FRAME, .id = peer, .msg = vsr_msg_ref(msg)};
  w_push(user, &e);
}

static void w_on_event(void *user, struct vsr_bus *bus, const struct vsr_peer_event *ev) {
  (void)bus;
  struct shard_up e = {.kind = UP_EVENT, .ev = (uint8_t)ev->kind, .reason = ev->reason,
                       .id = ev->id, .transport = ev->transport};
  snprintf(e.addr, sizeof e.addr, "%s", ev->addr ? ev->addr : "?");
  w_push(user, &e);
}

/* Moves the outbox into the ring, oldest first, once the turn's callbacks are over (the
 * decoder has dropped its reference by then: the frame usually crosses with its only one). */
static void w_flush(struct shard *s) {
  uint32_t i = 0;
  bool pushed = false;
  uint64_t popped = atomic_load_explicit(&s->up_popped, memory_order_relaxed);
  for (; i < s->out_len; i++) {
    struct shard_up *e = &s->outbox[i];
    uint32_t size = e->msg ? e->msg->capacity : 0;
    if (size && s->up_pushed - popped + size > SHARD_UP_BYTES && s->up_pushed != popped) break;
    if (e->msg && vsr_msg_refs(e->msg) > 1) vsri_msg_share(e->msg); /* still held here too */
    if (!vsri_spsc_push(&s->up, e)) break;
    s->up_pushed += size;
    pushed = true;
  }
  if (i > 0) memmove(s->outbox, s->outbox + i, (s->out_len - i) * sizeof *s->outbox);
  s->out_len -= i;
  atomic_store(&s->up_wait, s->out_len > 0);
  if (pushed) vsri_doorbell_ring(s->set->bell0);
}

/* Backpressure: while shard 0 has not taken what this shard received (the up ring is full),
 * the worker runs no loop turn, so it reads nothing more and its clients' TCP windows close;
 * shard 0 signals after each drain. The wait is bounded (10 ms) so a command (shutdown,
 * abort) is seen and timers fire late by at most that while shard 0 is behind. */
static void w_backlog_wait(struct shard *s) {
  while (s->out_len > 0 && atomic_load(&s->cmd) == CMD_RUN) {
    pthread_mutex_lock(&s->wait_mu);
    uint32_t used = atomic_load(&s->up.tail) - atomic_load(&s->up.head);
    uint64_t bytes = s->up_pushed - atomic_load(&s->up_popped);
    uint32_t next = s->outbox[0].msg ? s->outbox[0].msg->capacity : 0;
    if (used > s->up.mask || (bytes && bytes + next > SHARD_UP_BYTES)) {
      struct timespec ts;
      clock_gettime(CLOCK_REALTIME, &ts);
      ts.tv_nsec += 10000000;
      if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
      }
      pthread_cond_timedwait(&s->wait_cv, &s->wait_mu, &ts);
    }
    pthread_mutex_unlock(&s->wait_mu);
    w_flush(s);
  }
}

/* Shard 0 rang: sends and closes for this shard's clients. */
static void w_on_bell(void *ctx) {
  struct shard *s = ctx;
  struct shard_down d;
  while (vsri_spsc_pop(&s->down, &d)) {
    if (!d.msg) {
      vsr_bus_close_client(s->bus, d.id);
      continue;
    }
    vsr_bus_send_to_client(s->bus, d.id, d.msg); /* refusals are counted by this bus */
    vsr_msg_unref(d.msg);                        /* the ring's reference */
  }
}

static void w_publish(struct shard *s) {
  struct shard_snap snap;
  vsri_pool_collect(s->pool); /* buffers shard 0 gave back: the memory figures are current */
  vsr_bus_stats(s->bus, &snap.st);
  const struct vsri_listener *ql = vsri_bus_client_listener(s->bus, "quic");
  if (ql) vsri_quic_listener_admission(ql, &snap.adm); /* a copy: cheap per turn */
  else memset(&snap.adm, 0, sizeof snap.adm);
  memcpy(snap.pt[0], s->bus->pt_frames_in, sizeof snap.pt[0]);
  memcpy(snap.pt[1], s->bus->pt_bytes_in, sizeof snap.pt[1]);
  memcpy(snap.pt[2], s->bus->pt_frames_out, sizeof snap.pt[2]);
  memcpy(snap.pt[3], s->bus->pt_bytes_out, sizeof snap.pt[3]);
  pthread_mutex_lock(&s->snap_mu);
  s->snap = snap;
  pthread_mutex_unlock(&s->snap_mu);
}

static int w_setup(struct shard *s) {
  struct vsr_bus *b0 = s->set->bus;
  struct vsr_loop_options lo = b0->opts.loop_options;
  if (lo.pool.max_message_size < b0->opts.max_message_size) {
    lo.pool.max_message_size = b0->opts.max_message_size;
  }
  lo.pool.bytes_max = s->set->share.bytes_max;
  for (int t = 0; t < 2; t++) {
    if (lo.pool.free_max[t] < SHARD_FREE_MIN) lo.pool.free_max[t] = SHARD_FREE_MIN;
  }
  int err = vsr_loop_new(&s->loop, &lo);
  if (err) return err;
  s->pool = s->loop->pool;
  vsri_pool_set_share(s->pool, &s->set->share);
  err = vsri_doorbell_new(&s->bell, s->loop->io, w_on_bell, s);
  if (err) return err;
  /* The worker's bus: the TCP and QUIC client plane only, on the addresses shard 0 bound (its
   * QUIC listener borrows shard 0's settings and certificate: vsri_shards_config). */
  struct vsr_bus_options o = b0->opts;
  o.loop = s->loop;
  o.client_tcp_addr = vsri_bus_client_listener(b0, "tcp") ? b0->client_t[0].l.addr : NULL;
  int quic = (int)(vsri_bus_transport_find("quic") - vsri_bus_transports);
  o.quic.addr = vsri_bus_client_listener(b0, "quic") ? b0->client_t[quic].l.addr : NULL;
  o.cluster_name = NULL;
  o.replica_count = 0;
  o.replica_addrs = NULL;
  o.secret = o.previous_secret = NULL;
  o.secret_len = o.previous_secret_len = 0;
  o.replica_tls = false;
  o.metrics_addr = NULL;
  o.memory_max = 0;
  o.client_memory_budget = b0->budget[VSR_PLANE_CLIENT].max; /* shard 0's slice */
  o.replica_memory_budget = 0; /* o.shards stays: QUIC's connection IDs are routed modulo it */
  struct vsr_bus_callbacks cb = {.on_message = w_on_message, .on_peer_event = w_on_event};
  err = vsri_bus_new_shard(&s->bus, &o, &cb, s, s->index);
  if (err) return err;
  s->bus->clients_shared = &s->set->clients;
  /* The replica plane's reserve is global: client frames here must leave it free too. */
  s->bus->budget[VSR_PLANE_REPLICA].max = b0->budget[VSR_PLANE_REPLICA].max;
  s->bus->budget[VSR_PLANE_REPLICA].reserve_only = true;
  if (s->bus->budget[VSR_PLANE_REPLICA].max) {
    s->bus->budget[VSR_PLANE_CLIENT].protect = &s->bus->budget[VSR_PLANE_REPLICA];
  }
  return 0;
}

static void w_teardown(struct shard *s) {
  if (s->bus) {
    w_publish(s);
    vsr_bus_del(s->bus);
    s->bus = NULL;
  }
  pthread_mutex_lock(&s->wait_mu); /* shard 0 rings it under this lock (s0_wake) */
  struct vsri_doorbell *bell = s->bell;
  s->bell = NULL;
  pthread_mutex_unlock(&s->wait_mu);
  vsri_doorbell_del(bell);
  if (s->loop) { /* the pool outlives the loop: shard 0 may still hold its frames */
    s->loop->pool = NULL;
    vsr_loop_del(s->loop);
    s->loop = NULL;
  }
}

static void *w_main(void *arg) {
  struct shard *s = arg;
  s->start_err = w_setup(s);
  if (s->start_err) {
    w_teardown(s);
    atomic_store(&s->state, ST_FAILED);
    sem_post(&s->set->started);
    return NULL;
  }
  atomic_store(&s->state, ST_RUNNING);
  sem_post(&s->set->started);
  for (;;) {
    int cmd = atomic_load(&s->cmd);
    if (cmd == CMD_ABORT) break;
    if (cmd == CMD_SHUTDOWN && !s->shutting) {
      s->shutting = true;
      vsr_bus_shutdown_start(s->bus, s->set->shut_timeout_ns);
    }
    if (s->shutting && vsr_bus_shutdown_done(s->bus)) break;
    vsri_io_run(s->loop->io, -1);
    w_flush(s);
    w_publish(s);
    w_backlog_wait(s);
  }
  w_teardown(s); /* the outbox stays: shard 0 takes it once the state says EXITED */
  atomic_store(&s->state, ST_EXITED);
  vsri_doorbell_ring(s->set->bell0);
  return NULL;
}

/* ---- shard 0 side ---------------------------------------------------------------------- */

/* Wakes worker |s| for a command, whether it sleeps in its loop or in w_backlog_wait; the lock
 * keeps its doorbell alive while it is rung (the worker deletes it under the same lock). Sends
 * ring without it: the worker never exits while shard 0 may still send (only after a command,
 * which comes after shard 0 stopped sending). */
static void s0_wake(struct shard *s) {
  pthread_mutex_lock(&s->wait_mu);
  if (s->bell) vsri_doorbell_ring(s->bell);
  pthread_cond_signal(&s->wait_cv);
  pthread_mutex_unlock(&s->wait_mu);
}

static void s0_live_set(struct shard *s, uint64_t id, bool live) {
  uint32_t slot = slot_of(id);
  if (slot >= s->live_len) {
    if (!live) return;
    uint32_t len = s->live_len ? s->live_len : 64;
    while (len <= slot) len *= 2;
    uint64_t *l = vsri_realloc(s->live, len * sizeof *l);
    if (!l) return; /* then sends to it are not refused here, only counted by its shard */
    memset(l + s->live_len, 0, (len - s->live_len) * sizeof *l);
    s->live = l;
    s->live_len = len;
  }
  if (live) s->live[slot] = id;
  else if (s->live[slot] == id) s->live[slot] = 0;
}

static bool s0_is_live(const struct shard *s, uint64_t id) {
  uint32_t slot = slot_of(id);
  return slot < s->live_len && s->live[slot] == id;
}

static void s0_deliver(struct vsr_bus *bus, struct shard *s, struct shard_up *e) {
  if (e->kind == UP_FRAME) {
    if (!bus->shutting_down && bus->cb.on_message && s0_is_live(s, e->id)) {
      bus->in_cb++;
      bus->cb.on_message(bus->user, bus, VSR_PLANE_CLIENT, e->id, e->msg);
      bus->in_cb--;
    }
    vsr_msg_unref(e->msg);
    return;
  }
  s0_live_set(s, e->id, e->ev == VSR_PEER_CONNECTED);
  if (!bus->cb.on_peer_event) return;
  struct vsr_peer_event ev = {.kind = (enum vsr_peer_event_kind)e->ev,
                              .plane = VSR_PLANE_CLIENT,
                              .id = e->id,
                              .reason = e->reason,
                              .transport = e->transport,
                              .addr = e->addr};
  bus->in_cb++;
  bus->cb.on_peer_event(bus->user, bus, &ev);
  bus->in_cb--;
}

/* Shard 0's doorbell: a bounded number of entries from each worker in turn, so a flood on one
 * shard delays, never starves, the others; more left rings again (after this turn's I/O). */
static void s0_on_bell(void *ctx) {
  struct vsri_shards *set = ctx;
  struct vsr_bus *bus = set->bus;
  bool more = false;
  for (uint32_t i = 0; i + 1 < set->n; i++) {
    struct shard *s = &set->w[i];
    struct shard_up e;
    uint32_t n = 0;
    while (n < SHARD_DRAIN_BUDGET && vsri_spsc_pop(&s->up, &e)) {
      if (e.msg) s->up_popped_local += e.msg->capacity;
      s0_deliver(bus, s, &e);
      n++;
    }
    if (n) atomic_store(&s->up_popped, s->up_popped_local);
    if (n == SHARD_DRAIN_BUDGET) more = true;
    if (n && atomic_load(&s->up_wait)) { /* the worker waits for room (w_backlog_wait) */
      pthread_mutex_lock(&s->wait_mu);
      pthread_cond_signal(&s->wait_cv);
      pthread_mutex_unlock(&s->wait_mu);
    }
    if (atomic_load(&s->state) == ST_EXITED && s->out_len) { /* its last words */
      for (uint32_t k = 0; k < s->out_len; k++) s0_deliver(bus, s, &s->outbox[k]);
      s->out_len = 0;
    }
  }
  if (more) vsri_doorbell_ring(set->bell0);
}

int vsri_shards_start(struct vsr_bus *bus) {
  uint32_t n = bus->opts.shards;
  struct vsri_shards *set = vsri_calloc(1, sizeof *set + (n - 1) * sizeof(struct shard));
  if (!set) return VSR_ENOMEM;
  bus->shard_set = set;
  set->bus = bus;
  set->n = n;
  set->share.bytes_max = vsri_pool_bytes_max(bus->loop->pool);
  atomic_init(&set->share.bytes, 0);
  vsri_pool_set_share(bus->loop->pool, &set->share);
  /* Client budget: a slice per shard; memory_max and max_clients: shared counts. */
  bus->budget[VSR_PLANE_CLIENT].max /= n;
  atomic_init(&set->clients, bus->stats.clients_active);
  bus->clients_shared = &set->clients;
  sem_init(&set->started, 0, 0);
  int err = vsri_doorbell_new(&set->bell0, bus->loop->io, s0_on_bell, set);
  if (err) return err;
  for (uint32_t i = 0; i + 1 < n; i++) {
    struct shard *s = &set->w[i];
    s->set = set;
    s->index = i + 1;
    pthread_mutex_init(&s->snap_mu, NULL);
    pthread_mutex_init(&s->wait_mu, NULL);
    pthread_cond_init(&s->wait_cv, NULL);
    s->up.slots = NULL;
    struct shard_up *up = vsri_calloc(SHARD_UP_CAP, sizeof *up);
    struct shard_down *down = vsri_calloc(SHARD_DOWN_CAP, sizeof *down);
    if (!up || !down) {
      vsri_free(up);
      vsri_free(down);
      return VSR_ENOMEM;
    }
    vsri_spsc_init(&s->up, up, SHARD_UP_CAP, sizeof *up);
    vsri_spsc_init(&s->down, down, SHARD_DOWN_CAP, sizeof *down);
    atomic_init(&s->cmd, CMD_RUN);
    atomic_init(&s->state, ST_STARTING);
    atomic_init(&s->up_wait, 0);
  }
  /* Workers take no signal: a SIGINT meant for the application's loop must interrupt shard
   * 0's wait, not a worker's (the application's handler stops the loop it runs). */
  sigset_t all, old;
  sigfillset(&all);
  for (uint32_t i = 0; i + 1 < n; i++) {
    struct shard *s = &set->w[i];
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int rc = pthread_create(&s->thread, NULL, w_main, s);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
      VSRI_ERROR("VSR-SHARD", "cannot start the thread of shard %u", s->index);
      return VSR_ENOMEM;
    }
    s->started = true;
    sem_wait(&set->started); /* one at a time: the log reads in order */
    if (s->start_err) {
      VSRI_ERROR("VSR-SHARD", "shard %u did not start: %s", s->index,
                 vsr_strerror(s->start_err));
      return s->start_err;
    }
  }
  VSRI_INFO("VSR-SHARD", "%u shards: TCP clients spread by SO_REUSEPORT on %s, QUIC clients by "
            "connection ID on %s; replica plane, callbacks and the other transports on shard 0",
            n, bus->client_t[0].l.addr[0] ? bus->client_t[0].l.addr : "(no TCP listener)",
            vsri_bus_client_listener(bus, "quic") ? "its UDP address" : "(no QUIC listener)");
  return 0;
}

int vsri_shards_config(const struct vsr_bus *worker, int row, void **out) {
  const struct shard *s = worker->user;
  *out = s->set->bus->client_t[row].cfg;
  return 0;
}

/* A send to shard |k|'s client |id| refused before it reached the shard: counted in |counter|,
 * logged with the totals, |err| returned. |msg| is only named (NULL: a close). */
static int shard_refused(uint64_t *counter, uint64_t id, uint32_t k, const struct vsr_msg *msg,
                         const char *why, int err, const char *total) {
  (*counter)++;
  VSRI_WARN("VSR-DROP", "- client %llx (shard %u): %s not sent: %s (%s); totals: %llu %s",
            (unsigned long long)id, k, msg ? vsr_command_name(msg->data[60]) : "close", why,
            vsr_errname(err), (unsigned long long)*counter, total);
  return err;
}

int vsri_shards_send(struct vsr_bus *bus, uint64_t id, struct vsr_msg *msg) {
  struct vsri_shards *set = bus->shard_set;
  uint32_t k = shard_of(id);
  if (bus->shutting_down) return VSR_ESHUTDOWN;
  if (k >= set->n || !s0_is_live(&set->w[k - 1], id)) {
    return shard_refused(&bus->stats.drops_not_connected, id, k, msg, "peer not connected",
                         VSR_ENOTCONN, "not connected");
  }
  if (msg && (msg->size < VSR_HEADER_SIZE || msg->size > bus->opts.max_message_size)) {
    return VSR_EINVAL;
  }
  struct shard *s = &set->w[k - 1];
  if (msg) vsri_msg_share(msg); /* before it is published: both threads may hold it now */
  struct shard_down d = {.id = id, .msg = msg ? vsr_msg_ref(msg) : NULL};
  if (!vsri_spsc_push(&s->down, &d)) {
    if (msg) vsr_msg_unref(msg);
    return shard_refused(&bus->stats.drops_backpressure, id, k, msg, "the shard's ring is full",
                         VSR_EBACKPRESSURE, "queue full");
  }
  vsri_doorbell_ring(s->bell);
  return 0;
}

bool vsri_shards_client_take(struct vsr_bus *bus) {
  if (!bus->clients_shared) return true;
  if (atomic_fetch_add(bus->clients_shared, 1) < bus->opts.max_clients) return true;
  atomic_fetch_sub(bus->clients_shared, 1);
  return false;
}

void vsri_shards_client_give(struct vsr_bus *bus) {
  if (bus->clients_shared) atomic_fetch_sub(bus->clients_shared, 1);
}

void vsri_shards_shutdown(struct vsr_bus *bus, uint64_t timeout_ns) {
  struct vsri_shards *set = bus->shard_set;
  set->shut_timeout_ns = timeout_ns;
  for (uint32_t i = 0; i + 1 < set->n; i++) {
    struct shard *s = &set->w[i];
    atomic_store(&s->cmd, CMD_SHUTDOWN);
    s0_wake(s);
  }
}

bool vsri_shards_done(const struct vsr_bus *bus) {
  const struct vsri_shards *set = bus->shard_set;
  for (uint32_t i = 0; i + 1 < set->n; i++) {
    const struct shard *s = &set->w[i];
    int st = atomic_load(&s->state);
    if (st == ST_RUNNING || st == ST_STARTING) return false;
    if (st == ST_EXITED && s->out_len) return false;
    if (atomic_load(&s->up.head) != atomic_load(&s->up.tail)) return false;
  }
  return true;
}

void vsri_shards_stop(struct vsr_bus *bus) {
  struct vsri_shards *set = bus->shard_set;
  if (!set) return;
  for (uint32_t i = 0; i + 1 < set->n; i++) {
    struct shard *s = &set->w[i];
    if (!s->started) continue;
    atomic_store(&s->cmd, CMD_ABORT);
    s0_wake(s);
    pthread_join(s->thread, NULL); /* prompt: an abort never waits for a peer */
    s->started = false;
  }
  /* Nothing reaches the application any more (vsr_bus_del cleared the callbacks). */
  for (uint32_t i = 0; i + 1 < set->n; i++) {
    struct shard *s = &set->w[i];
    struct shard_up e;
    struct shard_down d;
    while (s->up.slots && vsri_spsc_pop(&s->up, &e)) vsr_msg_unref(e.msg);
    while (s->down.slots && vsri_spsc_pop(&s->down, &d)) vsr_msg_unref(d.msg);
    for (uint32_t k = 0; k < s->out_len; k++) vsr_msg_unref(s->outbox[k].msg);
    s->out_len = 0;
  }
  vsri_doorbell_del(set->bell0);
  set->bell0 = NULL;
}

void vsri_shards_free(struct vsr_bus *bus) {
  struct vsri_shards *set = bus->shard_set;
  if (!set) return;
  vsri_pool_set_share(bus->loop->pool, NULL);
  for (uint32_t i = 0; i + 1 < set->n; i++) {
    struct shard *s = &set->w[i];
    if (s->pool) {
      vsri_pool_set_owner(s->pool); /* this thread releases what is left of it */
      vsri_pool_set_share(s->pool, NULL);
      vsri_pool_del_when_idle(s->pool);
    }
    vsri_free(s->up.slots);
    vsri_free(s->down.slots);
    vsri_free(s->outbox);
    vsri_free(s->live);
    pthread_mutex_destroy(&s->snap_mu);
    pthread_mutex_destroy(&s->wait_mu);
    pthread_cond_destroy(&s->wait_cv);
  }
  sem_destroy(&set->started);
  vsri_free(set);
  bus->shard_set = NULL;
}

int vsr_bus_new(struct vsr_bus **out, const struct vsr_bus_options *o,
                const struct vsr_bus_callbacks *cb, void *user) {
  return vsri_bus_new_shard(out, o, cb, user, 0); /* bus.c; shard 0 starts the others */
}

/* ---- stats ----------------------------------------------------------------------------- */

uint32_t vsr_bus_shards(const struct vsr_bus *bus) {
  return bus->shard_set ? bus->shard_set->n : 1;
}

/* Worker |k|'s last published stats (and, when |pt| is not NULL, its traffic counters). */
static void shard_snap(const struct vsr_bus *bus, uint32_t k, struct shard_snap *out) {
  struct shard *s = &bus->shard_set->w[k - 1];
  pthread_mutex_lock(&s->snap_mu);
  *out = s->snap;
  pthread_mutex_unlock(&s->snap_mu);
}

int vsr_bus_shard_stats(const struct vsr_bus *bus, uint32_t k, struct vsr_bus_stats *out) {
  if (k == 0) {
    vsri_bus_stats_own(bus, out);
    return 0;
  }
  if (!bus->shard_set || k >= bus->shard_set->n) return VSR_EINVAL;
  struct shard_snap snap;
  shard_snap(bus, k, &snap);
  *out = snap.st;
  return 0;
}

/* Adds every worker's counters to shard 0's: sums, except the node-wide memory figures. */
void vsri_shards_add(const struct vsr_bus *bus, struct vsr_bus_stats *out,
                     uint64_t (*pt)[2][VSRI_BUS_TRANSPORTS]) {
  if (!bus->shard_set) return;
  for (uint32_t k = 1; k < bus->shard_set->n; k++) {
    struct shard_snap snap;
    shard_snap(bus, k, &snap);
    const uint64_t *src = (const uint64_t *)&snap.st;
    uint64_t *dst = (uint64_t *)out;
    uint64_t mmax = out->memory_max, mbytes = out->memory_bytes, mpeak = out->memory_peak;
    for (size_t i = 0; i < sizeof *out / sizeof(uint64_t); i++) dst[i] += src[i];
    out->memory_max = mmax;       /* one cap for every shard */
    out->memory_bytes = mbytes + snap.st.memory_bytes;
    out->memory_peak = mpeak > snap.st.memory_peak ? mpeak : snap.st.memory_peak;
    if (pt) {
      for (int a = 0; a < 4; a++) {
        for (int pl = 0; pl < 2; pl++) {
          for (int t = 0; t < VSRI_BUS_TRANSPORTS; t++) pt[a][pl][t] += snap.pt[a][pl][t];
        }
      }
    }
  }
}

/* Adds every worker's QUIC admission counters to |adm| (the metrics endpoint's QUIC series). */
void vsri_shards_quic_add(const struct vsr_bus *bus, struct vsri_quic_admission *adm) {
  if (!bus->shard_set) return;
  for (uint32_t k = 1; k < bus->shard_set->n; k++) {
    struct shard_snap snap;
    shard_snap(bus, k, &snap);
    adm->initials += snap.adm.initials;
    adm->admitted += snap.adm.admitted;
    adm->validated += snap.adm.validated;
    adm->retries += snap.adm.retries;
    adm->retry_source += snap.adm.retry_source;
    adm->tokens_invalid += snap.adm.tokens_invalid;
    adm->evicted += snap.adm.evicted;
    adm->halfopen += snap.adm.halfopen;
    adm->halfopen_peak += snap.adm.halfopen_peak; /* each shard's peak: an upper bound */
    adm->unknown_cid += snap.adm.unknown_cid;
  }
}
