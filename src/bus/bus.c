/* The bus: options, listeners, peers and their bounded send queues, the client registry,
 * events, stats and graceful shutdown. The replica plane plugs in through replica.c. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bus/bus_impl.h"
#include "frame/decode.h"
#include "transport/tls_ws.h"
#include "util/alloc.h"
#include "util/log.h"

#define BUS_SLOT_NONE UINT32_MAX
#define BUS_CLOSE_SLACK_NS 250000000ull /* shutdown: lets per-connection close deadlines fire */
#define BUS_DROP_LOG_EVERY_NS 1000000000ull /* at most one VSR-DROP line per second */

void vsr_bus_options_default(struct vsr_bus_options *o) {
  memset(o, 0, sizeof *o);
  vsr_loop_options_default(&o->loop_options);
  o->client_tcp_addr = "127.0.0.1:8090";
  o->max_clients = 100000;
  o->client_idle_timeout_ns = 60000000000ull;
  o->max_message_size = 64u << 20;
  o->max_batch = 256;
  o->peer_queue_capacity = 256;
  o->verify_body_checksum = true;
  o->close_peer_timeout_ns = 2000000000ull;
  o->frame_timeout_ns = 30000000000ull;
  o->slow_peer_timeout_ns = 10000000000ull;
  o->peer_queue_bytes_max = 64u << 20;
  o->reconnect_period_ns = 5000000000ull;
  o->handshake_grace_ns = 10000000000ull;
  o->max_inflight_handshakes = 256;
  o->replica_auth = VSR_REPLICA_AUTH_ON;
  o->metrics_max_conns = 4;
  o->metrics_timeout_ns = 5000000000ull;
  /* Each transport's own options (o->quic, ...): its row fills them. */
  for (int t = 0; t < VSRI_BUS_TRANSPORTS; t++) {
    if (vsri_bus_transports[t].options_default) vsri_bus_transports[t].options_default(o);
  }
  o->tcp_keepalive_ns = 15000000000ull;
  o->tcp_user_timeout_ns = 30000000000ull;
  o->reconnect_min_ns = 100000000ull;
  o->shards = 1;
}

/* ---- events ---------------------------------------------------------------------------- */

void vsri_bus_emit(struct vsr_bus *bus, enum vsr_peer_event_kind kind, struct bus_peer *p,
                   int reason) {
  if (kind == VSR_PEER_CONNECTED || kind == VSR_PEER_AUTHENTICATED) p->announced = true;
  if (!bus->cb.on_peer_event) return;
  struct vsr_peer_event ev = {
      .kind = kind,
      .plane = p->plane,
      .id = p->id,
      .reason = reason,
      .transport = p->tops->name,
      .addr = p->conn ? p->tops->peer_name(p->conn) : "?",
  };
  bus->in_cb++;
  bus->cb.on_peer_event(bus->user, bus, &ev);
  bus->in_cb--;
}

/* ---- peers ----------------------------------------------------------------------------- */

struct bus_peer *vsri_bus_peer_new(struct vsr_bus *bus, enum vsr_plane plane,
                                   const struct vsri_transport_ops *tops) {
  uint32_t cap = vsri_pow2_at_least(bus->opts.peer_queue_capacity);
  struct bus_peer *p = vsri_calloc(1, sizeof *p + cap * sizeof(struct vsr_msg *));
  if (!p) return NULL;
  p->bus = bus;
  p->plane = plane;
  p->tops = tops;
  p->tidx = vsri_bus_transport_index(tops);
  vsri_sendq_init(&p->q, (struct vsr_msg **)(p + 1), cap);
  bus->peers_open++;
  vsri_list_push_back(&bus->peers, &p->link);
  return p;
}

void vsri_bus_peer_attach(struct bus_peer *p, struct vsri_conn *conn, bool start) {
  p->conn = conn;
  if (start) p->tops->start(conn, &vsri_bus_conn_events, p, &p->q);
}


void vsri_bus_peer_close(struct bus_peer *p, int reason, bool drain) {
  vsri_bus_full_unlink(p); /* a closing peer is no longer a slow consumer to watch */
  if (!p->conn) return;
  if (p->state != BUS_PEER_CLOSING) p->state = BUS_PEER_CLOSING;
  p->tops->close(p->conn, reason, drain);
}

static void bus_client_unregister(struct vsr_bus *bus, struct bus_peer *p) {
  uint32_t slot = (uint32_t)p->id & VSRI_CLIENT_SLOT_MASK;
  if (slot < bus->client_slots_len && bus->client_slots[slot] == p) {
    bus->client_slots[slot] = NULL;
    bus->client_free_next[slot] = bus->client_free_head;
    bus->client_free_head = slot;
  }
  bus->stats.clients_active--;
  vsri_shards_client_give(bus);
}

/* ---- drops ----------------------------------------------------------------------------- */

static uint64_t bus_drops(const struct vsr_bus *bus) {
  return bus->stats.drops_backpressure + bus->stats.drops_not_connected +
         bus->stats.drops_on_close + bus->stats.drops_stream_reset;
}

/* Every dropped frame is counted (stats) and logged: the first at once, then at most one line a
 * second, each with the drops since the previous line and the totals, so a drop never passes
 * unseen and a flood of them costs one line a second. Call after counting. */
#define BUS_CMD_TAKEN 0x100 /* bus_log_drop: frames a transport had taken (command unknown) */

static void bus_log_drop(struct vsr_bus *bus, enum vsr_plane plane, uint64_t id,
                         const struct bus_peer *p, int command, int err, uint32_t n) {
  uint64_t now = vsri_io_now(bus->loop->io), total = bus_drops(bus);
  if (bus->drop_log_ns != 0 && now - bus->drop_log_ns < BUS_DROP_LOG_EVERY_NS) return;
  char who[48], why[96];
  if (plane == VSR_PLANE_REPLICA) snprintf(who, sizeof who, "replica %llu", (unsigned long long)id);
  else snprintf(who, sizeof who, "client %llx", (unsigned long long)id);
  if (err == VSR_EBACKPRESSURE) snprintf(why, sizeof why, "send queue full (%u frames, %s)", n,
                                         vsr_errname(err));
  else if (err == VSR_ECLOSED) snprintf(why, sizeof why, "connection closed with %u queued", n);
  else if (err == VSR_ESTREAM) snprintf(why, sizeof why, "%u on a QUIC stream the peer reset", n);
  else snprintf(why, sizeof why, "peer not connected (%s)", vsr_errname(err));
  VSRI_WARN("VSR-DROP", "%s %s %s: %s not sent: %s; %llu frame(s) dropped since the last line "
            "(totals: %llu queue full, %llu not connected, %llu at close, %llu stream reset)",
            p && p->conn ? p->tops->peer_name(p->conn) : "-", p ? p->tops->name : "-", who,
            command == BUS_CMD_TAKEN ? "frames in flight" : vsr_command_name((uint8_t)command),
            why, (unsigned long long)(total - bus->drops_logged),
            (unsigned long long)bus->stats.drops_backpressure,
            (unsigned long long)bus->stats.drops_not_connected,
            (unsigned long long)bus->stats.drops_on_close,
            (unsigned long long)bus->stats.drops_stream_reset);
  bus->drop_log_ns = now ? now : 1;
  bus->drops_logged = total;
}

/* Frames still queued on a peer whose connection is gone: dropped, counted and logged, not
 * reported as sent. */
static void bus_drop_queued(struct bus_peer *p) {
  uint32_t n = vsri_sendq_len(&p->q);
  if (n == 0) return;
  struct vsr_bus *bus = p->bus;
  bus->stats.drops_on_close += n;
  p->frames_dropped += n;
  bus_log_drop(bus, p->plane, p->id, p, vsri_sendq_peek(&p->q, 0)->data[60], VSR_ECLOSED, n);
  while (vsri_sendq_len(&p->q) > 0) vsri_sendq_pop(&p->q);
}

/* Frees a peer whose connection is gone (or never started: the replica plane frees refused
 * dials). */
void vsri_bus_peer_free(struct bus_peer *p) {
  struct vsr_bus *bus = p->bus;
  vsri_bus_full_unlink(p);
  bus_drop_queued(p);
  bus->peers_open--;
  vsri_list_remove(&p->link);
  vsri_free(p);
  /* Shutdown: the last peer is gone, so the drain deadline is moot. */
  if (bus->shutting_down && bus->peers_open == 0 && bus->shut_timer.pending) {
    vsri_io_cancel(bus->loop->io, &bus->shut_timer);
  }
}

/* The commands a client may send (docs/architecture.md, "Plane discipline"): Request, and the
 * PingClient / PongClient pair of the client heartbeat. Everything else is a replica-plane
 * command (Ping, the consensus, repair, state transfer and forwarding commands, the replica
 * handshake) or travels the other way (Reply, Eviction, Pong, Reserved). */
static bool bus_client_may_send(uint8_t cmd) {
  return cmd == VSR_CMD_REQUEST || cmd == VSR_CMD_PING_CLIENT || cmd == VSR_CMD_PONG_CLIENT;
}

static void bus_on_frame(void *owner, struct vsri_conn *conn, struct vsr_msg *msg) {
  (void)conn;
  struct bus_peer *p = owner;
  struct vsr_bus *bus = p->bus;
  if (p->state == BUS_PEER_PENDING) {
    if (p->plane == VSR_PLANE_REPLICA) vsri_replica_on_handshake_frame(p, msg);
    return;
  }
  if (p->state != BUS_PEER_ACTIVE) return;
  if (p->plane == VSR_PLANE_CLIENT && !bus_client_may_send(vsr_hdr_command(msg->data))) {
    uint8_t cmd = vsr_hdr_command(msg->data);
    VSRI_WARN("VSR-PLANE", "%s %s: client %llx sent %s (command %u), not a client command "
              "(a client may send Request, PingClient, PongClient; %s); closing",
              p->tops->peer_name(p->conn), p->tops->name, (unsigned long long)p->id,
              vsr_command_name(cmd), cmd, vsr_errname(VSR_EFRAME_PLANE));
    vsri_bus_peer_close(p, VSR_EFRAME_PLANE, true); /* earlier replies still go out */
    return;
  }
  p->frames_in++;
  p->bytes_in += msg->size;
  bus->stats.frames_in++;
  bus->stats.bytes_in += msg->size;
  bus->pt_frames_in[p->plane][vsri_bus_tidx(p)]++;
  bus->pt_bytes_in[p->plane][vsri_bus_tidx(p)] += msg->size;
  if (bus->cb.on_message) {
    bus->in_cb++;
    bus->cb.on_message(bus->user, bus, p->plane, p->id, msg);
    bus->in_cb--;
  }
}

/* The kernel took these frames: the only place frames_out moves. */
static void bus_on_sent(void *owner, struct vsri_conn *conn, uint32_t frames, uint64_t bytes) {
  (void)conn;
  struct bus_peer *p = owner;
  struct vsr_bus *bus = p->bus;
  p->frames_out += frames;
  p->bytes_out += bytes;
  bus->stats.frames_out += frames;
  bus->stats.bytes_out += bytes;
  bus->pt_frames_out[p->plane][p->tidx] += frames;
  bus->pt_bytes_out[p->plane][p->tidx] += bytes;
}

/* The transport gave up on frames it had taken from the queue: counted and logged by reason. */
static void bus_on_dropped(void *owner, struct vsri_conn *conn, uint32_t frames, uint64_t bytes,
                           int reason) {
  (void)conn;
  (void)bytes;
  struct bus_peer *p = owner;
  struct vsr_bus *bus = p->bus;
  p->frames_dropped += frames;
  if (reason == VSR_ESTREAM) bus->stats.drops_stream_reset += frames;
  else bus->stats.drops_on_close += frames;
  bus_log_drop(bus, p->plane, p->id, p, BUS_CMD_TAKEN,
               reason == VSR_ESTREAM ? VSR_ESTREAM : VSR_ECLOSED, frames);
}

static void bus_on_connected(void *owner, struct vsri_conn *conn, int status) {
  (void)conn;
  struct bus_peer *p = owner;
  if (p->plane == VSR_PLANE_REPLICA) vsri_replica_on_connected(p, status);
}

static void bus_on_closed(void *owner, struct vsri_conn *conn, int reason) {
  (void)conn;
  struct bus_peer *p = owner;
  struct vsr_bus *bus = p->bus;
  if (reason < 0 && -reason < VSR_ERR_SLOTS) bus->stats.errors[-reason]++;
  if (p->plane == VSR_PLANE_REPLICA) {
    vsri_replica_on_closed(p, reason);
    if (p->registered && bus->replicas[p->id] == p) {
      bus->replicas[p->id] = NULL;
      bus->stats.replicas_connected--;
    }
  } else if (p->registered) {
    VSRI_DEBUG("VSR-CLIENT", "%s %s: client %llx lost: %s (%s)", p->tops->peer_name(conn),
               p->tops->name, (unsigned long long)p->id, vsr_strerror(reason),
               vsr_errname(reason));
    bus_client_unregister(bus, p);
  }
  p->registered = false;
  if (p->announced) vsri_bus_emit(bus, VSR_PEER_LOST, p, reason);
  bus_drop_queued(p); /* while the peer's address can still be named */
  p->conn = NULL;
  vsri_bus_peer_free(p);
}

void vsri_bus_peer_abort(struct bus_peer *p, int reason) {
  struct vsr_bus *bus = p->bus;
  if (p->conn) p->tops->abort(p->conn, reason);
  p->conn = NULL;
  if (p->plane == VSR_PLANE_REPLICA) {
    vsri_replica_on_closed(p, reason); /* ends its handshake record */
    if (p->registered && bus->replicas[p->id] == p) {
      bus->replicas[p->id] = NULL;
      bus->stats.replicas_connected--;
    }
  } else if (p->registered) {
    bus_client_unregister(bus, p);
  }
  p->registered = false;
  vsri_bus_peer_free(p); /* counts what was still queued as dropped at close */
}

const struct vsri_conn_events vsri_bus_conn_events = {
    .on_frame = bus_on_frame,
    .on_connected = bus_on_connected,
    .on_drained = NULL,
    .on_sent = bus_on_sent,
    .on_dropped = bus_on_dropped,
    .on_closed = bus_on_closed,
};

/* ---- client registry ------------------------------------------------------------------- */

/* Reserves a slot and mints the client id. Returns 0, VSR_ELIMIT or VSR_ENOMEM. */
static int bus_client_register(struct vsr_bus *bus, struct bus_peer *p) {
  if (bus->forced_client_id) {
    uint64_t id = bus->forced_client_id;
    bus->forced_client_id = 0;
    uint32_t slot = (uint32_t)id & VSRI_CLIENT_SLOT_MASK;
    if (slot < bus->client_slots_len && bus->client_slots[slot] &&
        bus->client_slots[slot]->id == id) {
      return VSR_EDUPLICATE;
    }
  }
  if (bus->client_free_head == BUS_SLOT_NONE) {
    uint32_t len = bus->client_slots_len ? bus->client_slots_len * 2 : 64;
    if (len > bus->opts.max_clients) len = bus->opts.max_clients;
    if (len <= bus->client_slots_len) return VSR_ELIMIT;
    struct bus_peer **slots = vsri_realloc(bus->client_slots, len * sizeof *slots);
    if (!slots) return VSR_ENOMEM;
    bus->client_slots = slots;
    uint32_t *next = vsri_realloc(bus->client_free_next, len * sizeof *next);
    if (!next) return VSR_ENOMEM;
    bus->client_free_next = next;
    for (uint32_t i = len; i-- > bus->client_slots_len;) {
      slots[i] = NULL;
      next[i] = bus->client_free_head;
      bus->client_free_head = i;
    }
    bus->client_slots_len = len;
  }
  if (!vsri_shards_client_take(bus)) return VSR_ELIMIT; /* max_clients over every shard */
  uint32_t slot = bus->client_free_head;
  bus->client_free_head = bus->client_free_next[slot];
  bus->client_slots[slot] = p;
  p->id = (++bus->client_seq << 32) | bus->id_tag | slot;
  p->registered = true;
  bus->stats.clients_active++;
  return 0;
}

void vsri_bus_force_next_client_id(struct vsr_bus *bus, uint64_t id) {
  bus->forced_client_id = id;
}

void vsri_bus_set_send_tap(struct vsr_bus *bus,
                           void (*fn)(void *ctx, enum vsr_plane plane, uint64_t peer,
                                      const struct vsr_msg *msg),
                           void *ctx) {
  bus->send_tap = fn;
  bus->send_tap_ctx = ctx;
}

struct bus_peer *vsri_bus_client_find(const struct vsr_bus *bus, uint64_t id) {
  uint32_t slot = (uint32_t)id & VSRI_CLIENT_SLOT_MASK;
  if (slot >= bus->client_slots_len) return NULL;
  struct bus_peer *p = bus->client_slots[slot];
  return p && p->id == id ? p : NULL;
}

static void bus_client_accept(void *owner, struct vsri_conn *conn) {
  struct bus_listener *bl = owner;
  struct vsr_bus *bus = bl->bus;
  const char *name = bl->tops->peer_name(conn);
  if (bus->shutting_down) {
    bl->tops->close(conn, VSR_ESHUTDOWN, false);
    return;
  }
  struct bus_peer *p = vsri_bus_peer_new(bus, VSR_PLANE_CLIENT, bl->tops);
  int err = p ? bus_client_register(bus, p) : VSR_ENOMEM;
  if (err) {
    bus->stats.clients_refused++;
    VSRI_WARN("VSR-CLIENT", "%s %s: client refused: %s (%u active, max %u)", name,
              bl->tops->name, vsr_strerror(err), (unsigned)bus->stats.clients_active,
              bus->opts.max_clients);
    if (p) vsri_bus_peer_free(p);
    bl->tops->close(conn, err, false);
    return;
  }
  bus->stats.clients_accepted++;
  p->state = BUS_PEER_ACTIVE;
  vsri_bus_peer_attach(p, conn, true);
  VSRI_DEBUG("VSR-CLIENT", "%s %s: client %llx connected", name, bl->tops->name,
             (unsigned long long)p->id);
  vsri_bus_emit(bus, VSR_PEER_CONNECTED, p, 0);
}

int vsri_bus_replica_activate(struct bus_peer *p, uint8_t id) {
  struct vsr_bus *bus = p->bus;
  if (bus->replicas[id] && bus->replicas[id] != p) return VSR_EDUPLICATE;
  p->id = id;
  p->registered = true;
  p->state = BUS_PEER_ACTIVE;
  bus->replicas[id] = p;
  /* Authenticated: consensus frames of any size, each reserved whole at its first body byte
   * (a replica is trusted with one max-size frame in flight, as the reference preallocates). */
  if (p->tops->set_frame_limit) {
    p->tops->set_frame_limit(p->conn, bus->opts.max_message_size, bus->opts.max_message_size);
  }
  bus->stats.replicas_connected++;
  bus->stats.replica_handshakes_ok++;
  vsri_bus_emit(bus, VSR_PEER_AUTHENTICATED, p, 0);
  if (vsri_sendq_len(&p->q) > 0 && p->state == BUS_PEER_ACTIVE) p->tops->kick(p->conn);
  return 0;
}

/* ---- sending --------------------------------------------------------------------------- */

static int bus_enqueue(struct vsr_bus *bus, enum vsr_plane plane, uint64_t id,
                       struct bus_peer *p, struct vsr_msg *msg) {
  if (!p || p->state != BUS_PEER_ACTIVE) {
    int err = bus->shutting_down ? VSR_ESHUTDOWN : VSR_ENOTCONN;
    bus->stats.drops_not_connected++;
    bus_log_drop(bus, plane, id, p, msg->size >= VSR_HEADER_SIZE ? msg->data[60] : 0, err, 0);
    return err;
  }
  if (msg->size < VSR_HEADER_SIZE || msg->size > bus->opts.max_message_size) return VSR_EINVAL;
  if (!vsri_bus_queue_room(bus, p, msg) || !vsri_sendq_push(&p->q, msg)) {
    p->drops_backpressure++;
    bus->stats.drops_backpressure++;
    bus_log_drop(bus, plane, id, p, msg->data[60], VSR_EBACKPRESSURE, vsri_sendq_len(&p->q));
    vsri_bus_full_note(bus, p); /* may close |p| as a slow consumer */
    return VSR_EBACKPRESSURE;
  }
  if (p->full_since_ns && vsri_bus_queue_relieved(bus, p)) vsri_bus_full_unlink(p);
  vsr_msg_ref(msg);
  p->frames_queued++;
  bus->stats.frames_queued++;
  if (bus->send_tap) bus->send_tap(bus->send_tap_ctx, plane, id, msg);
  p->tops->kick(p->conn);
  return 0;
}

int vsr_bus_send_to_client(struct vsr_bus *bus, uint64_t client_id, struct vsr_msg *msg) {
  if (vsri_bus_remote_client(bus, client_id)) return vsri_shards_send(bus, client_id, msg);
  return bus_enqueue(bus, VSR_PLANE_CLIENT, client_id, vsri_bus_client_find(bus, client_id), msg);
}

int vsr_bus_send_to_replica(struct vsr_bus *bus, uint8_t replica, struct vsr_msg *msg) {
  return bus_enqueue(bus, VSR_PLANE_REPLICA, replica, bus->replicas[replica], msg);
}

int vsr_bus_close_client(struct vsr_bus *bus, uint64_t client_id) {
  if (vsri_bus_remote_client(bus, client_id)) return vsri_shards_send(bus, client_id, NULL);
  struct bus_peer *p = vsri_bus_client_find(bus, client_id);
  if (!p || p->state == BUS_PEER_CLOSING) return VSR_ENOTCONN;
  vsri_bus_peer_close(p, VSR_ECLOSED, false);
  return 0;
}

struct vsr_msg *vsr_bus_msg_new(struct vsr_bus *bus, uint32_t size) {
  return vsri_frame_new(bus->loop->pool, bus->opts.max_message_size, size);
}

/* ---- lifecycle ------------------------------------------------------------------------- */

/* Copies the strings |o| points at into one owned block. On failure every field holds either
 * NULL or an owned copy, so bus_free_strings() never frees a caller's string. */
static int bus_copy_strings(struct vsr_bus *bus) {
  struct vsr_bus_options *o = &bus->opts;
  const char **fields[] = {&o->client_tcp_addr, &o->cluster_name, &o->metrics_addr};
  const char *src[sizeof fields / sizeof fields[0]];
  for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
    src[i] = *fields[i];
    *fields[i] = NULL;
  }
  const char *const *src_addrs = o->replica_addrs;
  o->replica_addrs = NULL;
  for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
    if (!src[i]) continue;
    char *copy = vsri_strdup(src[i]);
    if (!copy) return VSR_ENOMEM;
    *fields[i] = copy;
  }
  if (src_addrs && o->replica_count) {
    char **addrs = vsri_calloc(o->replica_count, sizeof *addrs);
    if (!addrs) return VSR_ENOMEM;
    o->replica_addrs = (const char *const *)addrs;
    for (uint16_t i = 0; i < o->replica_count; i++) {
      addrs[i] = src_addrs[i] ? vsri_strdup(src_addrs[i]) : NULL;
      if (src_addrs[i] && !addrs[i]) return VSR_ENOMEM;
    }
  }
  return 0;
}

static void bus_free_strings(struct vsr_bus *bus) {
  struct vsr_bus_options *o = &bus->opts;
  vsri_free((void *)o->client_tcp_addr);
  vsri_free((void *)o->cluster_name);
  vsri_free((void *)o->metrics_addr);
  if (o->replica_addrs) {
    for (uint16_t i = 0; i < o->replica_count; i++) vsri_free((void *)o->replica_addrs[i]);
    vsri_free((void *)o->replica_addrs);
  }
}

static int bus_check_options(const struct vsr_bus_options *o) {
  if (o->max_message_size < VSR_HEADER_SIZE) {
    VSRI_ERROR("VSR-CONFIG", "max_message_size %u < %u", o->max_message_size, VSR_HEADER_SIZE);
    return VSR_ECONFIG;
  }
  if (o->memory_max && o->memory_max < (16u << 20)) {
    VSRI_ERROR("VSR-CONFIG", "memory_max %llu: at least 16 MiB",
               (unsigned long long)o->memory_max);
    return VSR_ECONFIG;
  }
  if (o->peer_queue_capacity == 0 || o->max_batch == 0 || o->max_clients == 0 ||
      o->max_clients > VSRI_CLIENT_SLOT_MASK + 1 || o->shards == 0 || o->shards > VSRI_SHARDS_MAX) {
    VSRI_ERROR("VSR-CONFIG", "peer_queue_capacity, max_batch must be > 0, max_clients 1..2^24, "
               "shards 1..%u", VSRI_SHARDS_MAX);
    return VSR_ECONFIG;
  }
  return 0;
}

static int bus_listen(struct vsr_bus *bus, struct bus_listener *bl,
                      const struct vsri_bus_transport *t, const struct vsri_transport_ctx *ctx,
                      const char *addr) {
  const struct vsri_transport_ops *tops = t->ops;
  bl->bus = bus;
  bl->tops = tops;
  bl->t = t;
  bl->plane = VSR_PLANE_CLIENT;
  int err = tops->listen(&bl->l, ctx, addr, bus_client_accept, bl);
  if (err) return err;
  tops->listener_addr(bl->l, bl->addr, sizeof bl->addr);
  VSRI_INFO("VSR-LISTEN", "client plane %s listening on %s", tops->name, bl->addr);
  return 0;
}

static void bus_listener_close(struct bus_listener *bl) {
  if (!bl->l) return;
  if (bl->t && bl->t->listener_stats) bl->t->listener_stats(bl->l, &bl->bus->stats); /* final */
  bl->tops->listener_close(bl->l);
  bl->l = NULL;
}

/* Closes every client-plane listener. */
static void bus_client_listeners_close(struct vsr_bus *bus) {
  for (int t = 0; t < VSRI_BUS_TRANSPORTS; t++) bus_listener_close(&bus->client_t[t].l);
}

/* Starts the client-plane transports that have a listen address: each one's settings from its
 * own options (its row's config_new), then its listener. */
static int bus_client_transports_start(struct vsr_bus *bus) {
  for (int i = 0; i < VSRI_BUS_TRANSPORTS; i++) {
    const struct vsri_bus_transport *t = &vsri_bus_transports[i];
    struct bus_client_transport *ct = &bus->client_t[i];
    const char *addr = t->listen_addr ? t->listen_addr(&bus->opts) : NULL;
    if (!addr) continue;
    ct->ctx = bus->tctx;
    if (t->config_new) {
      int err = bus->id_tag ? vsri_shards_config(bus, i, &ct->cfg) /* shard 0's, borrowed */
                            : t->config_new(&bus->opts, &ct->cfg);
      if (err) return err;
      ct->ctx.tls = ct->cfg;
    }
    int err = bus_listen(bus, &ct->l, t, &ct->ctx, addr);
    if (err) return err;
  }
  /* The transports copied what they keep: the caller's strings in their options are not ours
   * to hold (vsr_bus_new copies |o|, not what per-transport options point at). */
  for (int i = 0; i < VSRI_BUS_TRANSPORTS; i++) {
    const struct vsri_bus_transport *t = &vsri_bus_transports[i];
    if (t->opts_size) memset((char *)&bus->opts + t->opts_offset, 0, t->opts_size);
  }
  return 0;
}

/* vsr_bus_new (shard.c) is shard 0's; |index| > 0: a worker's bus, ids tagged with it. */
int vsri_bus_new_shard(struct vsr_bus **out, const struct vsr_bus_options *o,
                       const struct vsr_bus_callbacks *cb, void *user, uint32_t index) {
  struct vsr_bus_options def;
  if (!o) {
    vsr_bus_options_default(&def);
    o = &def;
  }
  int err = bus_check_options(o);
  if (err) return err;
  struct vsr_bus *bus = vsri_calloc(1, sizeof *bus);
  if (!bus) return VSR_ENOMEM;
  bus->opts = *o;
  bus->opts.loop = NULL;
  if (cb) bus->cb = *cb;
  bus->user = user;
  bus->client_free_head = BUS_SLOT_NONE;
  bus->id_tag = index << 24;
  vsri_list_init(&bus->peers);
  vsri_list_init(&bus->full);
  err = bus_copy_strings(bus);
  if (err) goto fail;
  if (o->loop) {
    bus->loop = o->loop;
  } else {
    struct vsr_loop_options lo = o->loop_options;
    if (lo.pool.max_message_size < o->max_message_size) {
      lo.pool.max_message_size = o->max_message_size;
    }
    lo.pool.bytes_max = o->memory_max ? o->memory_max : vsri_bus_memory_default();
    if (vsri_bus_pool_prealloc_bytes(&lo.pool) > lo.pool.bytes_max / 2) {
      VSRI_ERROR("VSR-CONFIG", "memory_max %llu: the pool preallocates %llu bytes; give at "
                 "least twice that", (unsigned long long)lo.pool.bytes_max,
                 (unsigned long long)vsri_bus_pool_prealloc_bytes(&lo.pool));
      err = VSR_ECONFIG;
      goto fail;
    }
    err = vsr_loop_new(&bus->loop, &lo);
    if (err) goto fail;
    bus->owns_loop = true;
  }
  bus->tctx = (struct vsri_transport_ctx){
      .io = bus->loop->io,
      .pool = bus->loop->pool,
      .max_message_size = o->max_message_size,
      .max_batch = o->max_batch,
      .decode_flags = o->verify_body_checksum ? VSRI_DECODE_VERIFY_BODY : 0,
      .drain_timeout_ns = o->close_peer_timeout_ns,
      .tcp_keepalive_ns = o->tcp_keepalive_ns,
      .tcp_user_timeout_ns = o->tcp_user_timeout_ns,
  };
  err = vsri_bus_setup_memory(bus);
  if (err) goto fail;
  bus->tctx.budget = &bus->budget[VSR_PLANE_CLIENT];
  bus->tctx.frame_allowance = bus->opts.frame_allowance;
  bus->tctx.conn_budget = bus->opts.conn_memory_budget;
  bus->tctx_replica = bus->tctx;
  bus->tctx_replica.budget = &bus->budget[VSR_PLANE_REPLICA];
  bus->tctx_replica.conn_budget = 0;
  bus->tctx_replica.preauth_max = VSR_HEADER_SIZE; /* handshake frames are header-only */
  bus->tctx.reuseport = index > 0 ? 2 : o->shards > 1 && (o->client_tcp_addr || o->quic.addr);
  bus->tctx.shard = (uint8_t)index; /* shards: QUIC's connection IDs name the shard */
  bus->tctx.shards = (uint8_t)o->shards;
  err = bus_client_transports_start(bus);
  if (err) goto fail;
  if (index == 0 && bus->tctx.reuseport && (err = vsri_shards_start(bus))) goto fail;
  if (bus->opts.cluster_name && bus->opts.replica_count > 1) {
    err = vsri_replica_init(bus);
    if (err) goto fail;
  }
  vsri_bus_timeout_start(bus);
  if (bus->opts.metrics_addr) {
    err = vsri_metrics_start(bus, bus->opts.metrics_addr);
    if (err) goto fail;
  }
  /* The secrets are the caller's and were needed only to derive the keys. */
  bus->opts.secret = bus->opts.previous_secret = NULL;
  bus->opts.secret_len = bus->opts.previous_secret_len = 0;
  *out = bus;
  return 0;
fail:
  vsr_bus_del(bus);
  return err;
}

static void bus_for_each_peer(struct vsr_bus *bus, int reason, bool drain) {
  for (uint32_t i = 0; i < bus->client_slots_len; i++) {
    if (bus->client_slots[i]) vsri_bus_peer_close(bus->client_slots[i], reason, drain);
  }
  for (int i = 0; i < VSR_MAX_REPLICAS; i++) {
    if (bus->replicas[i]) vsri_bus_peer_close(bus->replicas[i], reason, drain);
  }
}

/* The drain deadline of a shutdown: whatever is still open is closed now, without draining. */
static void bus_shut_timer_cb(struct vsri_io *io, struct vsri_completion *c, int32_t res) {
  struct vsr_bus *bus = c->ctx;
  if (res != 0 || bus->peers_open == 0) return;
  VSRI_WARN("VSR-SHUTDOWN", "%llu connection(s) still draining after %llu ms; closing them",
            (unsigned long long)bus->peers_open,
            (unsigned long long)((vsri_io_now(io) - bus->shut_start_ns) / 1000000));
  bus->shut_forced = true;
  bus_for_each_peer(bus, VSR_ESHUTDOWN, false);
}

static void bus_shut_settle_cb(struct vsri_io *io, struct vsri_completion *c, int32_t res) {
  struct vsr_bus *bus = c->ctx;
  if (res != 0) return;
  /* 1 ns: a timer armed for "now" would fire again in this same timers phase. */
  if (++bus->shut_turns < 2) vsri_io_timeout(io, &bus->shut_settle, 1, bus_shut_settle_cb, bus);
}

int vsr_bus_shutdown_start(struct vsr_bus *bus, uint64_t timeout_ns) {
  if (!bus) return VSR_EINVAL;
  if (bus->shutting_down) return 0;
  struct vsri_io *io = bus->loop->io;
  bus->shut_start_ns = vsri_io_now_fresh(io);
  /* Each connection bounds its own drain and close by close_peer_timeout; the slack lets those
   * deadlines fire before the bus steps in. */
  uint64_t drain_ns = bus->opts.close_peer_timeout_ns + BUS_CLOSE_SLACK_NS;
  if (drain_ns > timeout_ns) drain_ns = timeout_ns;
  bus->shut_drops0 = bus->stats.drops_on_close;
  bus->shutting_down = true;
  vsri_bus_timeout_stop(bus);
  if (bus->slow_sweep.pending) vsri_io_cancel(io, &bus->slow_sweep);
  bus_client_listeners_close(bus);
  vsri_metrics_stop(bus);
  if (bus->replica_plane) vsri_replica_shutdown(bus);
  /* Queued frames go out first (send() already refuses new ones), then each connection closes. */
  bus_for_each_peer(bus, VSR_ESHUTDOWN, true);
  if (bus->shard_set) vsri_shards_shutdown(bus, timeout_ns);
  if (bus->peers_open > 0) vsri_io_timeout(io, &bus->shut_timer, drain_ns, bus_shut_timer_cb, bus);
  vsri_io_timeout(io, &bus->shut_settle, 0, bus_shut_settle_cb, bus);
  return 0;
}

bool vsr_bus_shutdown_done(const struct vsr_bus *bus) {
  return bus->shutting_down && bus->shut_turns >= 2 && bus->peers_open == 0 &&
         !bus->shut_timer.pending && !bus->shut_settle.pending &&
         !bus->slow_sweep.pending && vsri_replica_idle(bus) &&
         (!bus->shard_set || vsri_shards_done(bus));
}

int vsr_bus_shutdown(struct vsr_bus *bus, uint64_t timeout_ns) {
  if (!bus) return VSR_EINVAL;
  if (!bus->owns_loop) {
    VSRI_ERROR("VSR-SHUTDOWN", "vsr_bus_shutdown needs a bus that owns its loop; on the "
               "caller's loop use vsr_bus_shutdown_start and vsr_bus_shutdown_done");
    return VSR_EINVAL;
  }
  struct vsri_io *io = bus->loop->io;
  int err = vsr_bus_shutdown_start(bus, timeout_ns);
  if (err) return err;
  /* The loop is ours: no user code shares it, so running it here is the caller's intent. The
   * drain deadline timer force-closes what is left; the extra second bounds the closes. */
  uint64_t deadline = bus->shut_start_ns + timeout_ns + 1000000000ull;
  while (!vsr_bus_shutdown_done(bus)) {
    uint64_t now = vsri_io_now_fresh(io);
    if (now >= deadline) break;
    uint64_t wait = deadline - now;
    if (wait > 10000000) wait = 10000000;
    vsri_io_run(io, (int64_t)wait);
  }
  bool clean = vsr_bus_shutdown_done(bus) && !bus->shut_forced;
  if (bus->stats.drops_on_close != bus->shut_drops0) {
    VSRI_WARN("VSR-SHUTDOWN", "%llu queued frame(s) could not be written before their "
              "connection closed", (unsigned long long)(bus->stats.drops_on_close - bus->shut_drops0));
    clean = false;
  }
  return clean ? 0 : VSR_ETIMEDOUT;
}

void vsr_bus_del(struct vsr_bus *bus) {
  if (!bus) return;
  if (bus->in_cb) {
    /* The callback's caller (a transport upcall) still uses the connection and the bus. */
    VSRI_ERROR("VSR-MISUSE", "vsr_bus_del called from inside one of this bus's callbacks: "
               "refused, nothing freed; delete the bus after the loop turn returns (or call "
               "vsr_bus_shutdown_start from the callback)");
    return;
  }
  /* From here on no callback of this bus reaches user code, and the loop never runs: every
   * connection is aborted (closed now, no upcall), every timer leaves the loop, memory the
   * kernel may still touch is handed to the io layer (io.h, "Letting go"). */
  bus->cb = (struct vsr_bus_callbacks){0};
  bus->shutting_down = true;
  vsri_shards_stop(bus); /* joins the workers: nothing runs on another thread from here */
  if (bus->loop) {
    struct vsri_io *io = bus->loop->io;
    vsri_bus_timeout_stop(bus);
    vsri_io_timeout_drop(io, &bus->slow_sweep);
    vsri_io_timeout_drop(io, &bus->shut_timer);
    vsri_io_timeout_drop(io, &bus->shut_settle);
    struct vsri_list_node *n;
    while ((n = vsri_list_front(&bus->peers))) {
      vsri_bus_peer_abort(vsri_container_of(n, struct bus_peer, link), VSR_ESHUTDOWN);
    }
  }
  bus_client_listeners_close(bus);
  vsri_metrics_stop(bus);
  if (bus->replica_plane) vsri_replica_fini(bus);
  vsr_log_flush(); /* the held-back counts of this bus's last moments */
  vsri_shards_free(bus); /* after every queue that may hold a worker's frame */
  if (bus->owns_loop) vsr_loop_del(bus->loop);
  for (int t = 0; t < VSRI_BUS_TRANSPORTS; t++) { /* after the connections that read them */
    if (bus->client_t[t].cfg && !bus->id_tag) { /* a worker's are shard 0's */
      vsri_bus_transports[t].config_free(bus->client_t[t].cfg);
    }
  }
  vsri_tlsws_config_free(bus->replica_tls_cfg);
  vsri_free(bus->client_slots);
  vsri_free(bus->client_free_next);
  bus_free_strings(bus);
  vsri_free(bus);
}

struct vsr_loop *vsr_bus_loop(struct vsr_bus *bus) { return bus->loop; }

int vsr_bus_run_once(struct vsr_bus *bus, int64_t timeout_ns) {
  return vsri_io_run(bus->loop->io, timeout_ns);
}

int vsr_bus_listen_addr(const struct vsr_bus *bus, const char *which, char *buf, size_t len) {
  const struct bus_listener *bl = NULL;
  const struct vsri_bus_transport *t = vsri_bus_transport_find(which);
  if (t) bl = &bus->client_t[t - vsri_bus_transports].l;
  else if (strcmp(which, "replica") == 0) bl = &bus->replica_tcp;
  else if (strcmp(which, "metrics") == 0 && vsri_metrics_addr(bus)) {
    snprintf(buf, len, "%s", vsri_metrics_addr(bus));
    return 0;
  }
  if (!bl || !bl->addr[0]) return VSR_ENOTCONN;
  snprintf(buf, len, "%s", bl->addr);
  return 0;
}
