/* Internal to the bus: peers, the registry, and the seams between the client plane (bus.c),
 * the replica plane (replica.c), the client SDK (client.c) and the transports. */
#ifndef VSRI_BUS_IMPL_H
#define VSRI_BUS_IMPL_H

#include "io/io.h"
#include "io/runtime.h"
#include "transport/transport.h"
#include "vsrbus/bus.h"
#include "vsrbus/client.h"
#include "vsrbus/loop.h"

/* The transports of the client plane, as the bus and the client SDK see them: one row per
 * transport (transports.c), iterated by bus.c and client.c, which name no transport. A new
 * transport is its own files under src/transport/, a glue file here (its options -> its
 * settings), a row in vsri_bus_transports, and its options struct in vsrbus/bus.h / client.h
 * (docs/architecture.md, "Adding a transport"). */
struct vsri_bus_transport {
  const char *name; /* "tcp", "quic": vsr_bus_listen_addr's and vsr_client_options.transport's */
  const struct vsri_transport_ops *ops;
  /* Where its options live in struct vsr_bus_options (size 0: none). They are read only inside
   * vsr_bus_new (config_new copies what it keeps), then cleared: the strings are the caller's. */
  size_t opts_offset, opts_size;
  /* Fills its part of vsr_bus_options / vsr_client_options with its defaults. May be NULL. */
  void (*options_default)(struct vsr_bus_options *o);
  void (*client_options_default)(struct vsr_client_options *o);
  /* The client-plane listen address in |o|; NULL: this transport does not listen. */
  const char *(*listen_addr)(const struct vsr_bus_options *o);
  /* Builds the settings its connections read (vsri_transport_ctx.tls) from the bus options,
   * as one owned allocation (strings copied): 0, VSR_ECONFIG or VSR_ENOMEM. NULL: none. */
  int (*config_new)(const struct vsr_bus_options *o, void **out);
  void (*config_free)(void *cfg);
  /* Copies the listener's own counters into |out| (QUIC: handshake-flood defences). May be
   * NULL. */
  void (*listener_stats)(const struct vsri_listener *l, struct vsr_bus_stats *out);
  /* The client SDK's settings from vsr_client_options, like config_new. NULL: none. */
  int (*client_config_new)(const struct vsr_client_options *o, void **out);
  void (*client_config_free)(void *cfg);
};

#define VSRI_BUS_TRANSPORTS 5 /* rows of vsri_bus_transports; index 0 is TCP */
extern const struct vsri_bus_transport *const vsri_bus_transports; /* VSRI_BUS_TRANSPORTS rows */
/* The row named |name|, or NULL. */
const struct vsri_bus_transport *vsri_bus_transport_find(const char *name);
/* The row index of |ops| (0 for an unknown one: TCP). */
int vsri_bus_transport_index(const struct vsri_transport_ops *ops);

enum bus_peer_state {
  BUS_PEER_PENDING = 0, /* transport up, not registered (replica handshake in progress) */
  BUS_PEER_ACTIVE,      /* registered: frames flow both ways */
  BUS_PEER_CLOSING,     /* close requested; waiting for the transport's on_closed */
};

struct bus_peer {
  struct vsr_bus *bus;
  enum vsr_plane plane;
  enum bus_peer_state state;
  bool announced;   /* CONNECTED was reported, so LOST must be reported exactly once */
  bool registered;  /* present in the client slots or replica table under |id| */
  bool dialed;      /* replica plane: we dialed this connection */
  uint64_t id;      /* client id or replica index; valid once registered */
  const struct vsri_transport_ops *tops;
  int tidx;         /* its row in vsri_bus_transports: the [plane][transport] counters */
  struct vsri_conn *conn;
  void *plane_data; /* replica plane: handshake state (replica.c) */
  uint64_t frames_in, bytes_in, drops_backpressure;
  /* Send counters, owned here and moved only by the bus: frames_queued counts accepted sends;
   * each of them later moves to frames_out (on_sent), frames_dropped (on_dropped) or, at the
   * close, the bus's drops_on_close. */
  uint64_t frames_queued, frames_out, bytes_out, frames_dropped;
  /* Slow-consumer tracking: non-zero from the first refused send until the queue is seen back
   * at half its capacity and half its byte budget; the peer is on the bus's |full| list exactly
   * while it is non-zero. */
  uint64_t full_since_ns;
  struct vsri_list_node full_link; /* on the bus's |full| list */
  struct vsri_list_node link; /* on the bus's |peers| from vsri_bus_peer_new to the free */
  struct vsri_sendq q; /* slots follow the struct */
};

struct bus_listener {
  struct vsr_bus *bus;
  const struct vsri_transport_ops *tops;
  const struct vsri_bus_transport *t; /* client plane: its row; NULL for the replica plane */
  struct vsri_listener *l;
  enum vsr_plane plane;
  char addr[64];
};

struct vsr_bus {
  struct vsr_loop *loop;
  bool owns_loop;
  bool shutting_down;
  struct vsr_bus_options opts;
  struct vsr_bus_callbacks cb;
  void *user;
  struct vsri_transport_ctx tctx;      /* client plane settings every transport shares */
  struct vsri_transport_ctx tctx_replica; /* replica plane TCP: its budget, 256-byte frames
                                             until the handshake completes */
  struct vsri_mem_budget budget[2];    /* frames in flight, by enum vsr_plane */
  /* Client-plane transports, by row of vsri_bus_transports: the context its connections read
   * (tctx, with |tls| = cfg), the settings its row built (owned), its listener. */
  struct bus_client_transport {
    struct vsri_transport_ctx ctx;
    void *cfg;
    struct bus_listener l;
  } client_t[VSRI_BUS_TRANSPORTS];
  struct bus_listener replica_tcp;
  /* Client registry: id = (sequence << 32) | slot. Slot arrays grow to max_clients. */
  struct bus_peer **client_slots;
  uint32_t client_slots_len;
  uint32_t client_free_head; /* free slot list threaded through client_free_next */
  uint32_t *client_free_next;
  uint64_t client_seq;
  uint64_t forced_client_id; /* tests: the next accepted client gets this id (0: none) */
  /* Simulator: told of every frame a send accepted (NULL: off; vsri_bus_set_send_tap). */
  void (*send_tap)(void *ctx, enum vsr_plane plane, uint64_t peer, const struct vsr_msg *msg);
  void *send_tap_ctx;
  uint64_t peers_open;       /* peers not yet freed, both planes */
  struct vsri_list peers;    /* those peers (bus_peer.link): vsr_bus_del aborts every one */
  uint32_t in_cb;            /* depth of user callbacks running (vsr_bus_del refuses inside) */
  struct bus_peer *replicas[VSR_MAX_REPLICAS]; /* authenticated replica links */
  void *replica_plane; /* replica.c state, NULL without a replica plane */
  void *replica_tls_cfg; /* replica-plane TLS settings (transport/tls_ws.h), or NULL */
  struct vsr_bus_stats stats;
  struct vsri_completion timeout_sweep; /* frame_timeout, client_idle_timeout: one per bus */
  uint64_t timeout_period_ns;           /* 0: no timeout configured */
  uint64_t drop_log_ns;  /* when the last VSR-DROP line was written */
  uint64_t drops_logged; /* drops (all kinds) counted when it was written */
  /* Peers whose queue is full (bus.c); the sweep timer is armed exactly while one is listed. */
  struct vsri_list full;
  struct vsri_completion slow_sweep;
  /* Metrics (metrics.c): frames and bytes by [plane][transport row], counted as they happen. */
  uint64_t pt_frames_in[2][VSRI_BUS_TRANSPORTS], pt_bytes_in[2][VSRI_BUS_TRANSPORTS];
  uint64_t pt_frames_out[2][VSRI_BUS_TRANSPORTS], pt_bytes_out[2][VSRI_BUS_TRANSPORTS];
  struct vsri_metrics_srv *metrics; /* metrics_http.c; NULL without metrics_addr */
  /* Non-blocking shutdown (vsr_bus_shutdown_start): the drain deadline timer, armed from the
   * start until every peer is gone or it fires (then the rest are force-closed). */
  struct vsri_completion shut_timer;
  uint64_t shut_start_ns;
  uint64_t shut_drops0; /* drops_on_close when the shutdown started */
  bool shut_forced; /* the drain deadline passed and peers were force-closed */
  /* Two loop turns after the start (each one a timers phase and a poll) before
   * vsr_bus_shutdown_done can be true. Listeners no longer need them (they close and release
   * at once); kept so done() is never true within the turn that started the shutdown. */
  struct vsri_completion shut_settle;
  uint8_t shut_turns;
  /* Shards (shard.c, docs/shards.md). Shard 0 holds the set (NULL with shards = 1); every
   * shard's bus mints client ids with its index in bits 24..31 (|id_tag|) and counts its
   * clients in the node-wide count (NULL: this bus's own stats alone). */
  struct vsri_shards *shard_set;
  uint32_t id_tag;
  _Atomic uint64_t *clients_shared;
};

/* The smallest power of two >= |v| (at least 1, at most 2^30): send-queue ring sizes. */
static inline uint32_t vsri_pow2_at_least(uint32_t v) {
  uint32_t p = 1;
  while (p < v && p < (1u << 30)) p <<= 1;
  return p;
}

/* A fresh frame of |size| bytes from |pool|: header zeroed, size field set. NULL when |size|
 * is outside 256..|max_size| or the pool is exhausted. Backs vsr_bus_msg_new and
 * vsr_client_msg_new. */
static inline struct vsr_msg *vsri_frame_new(struct vsr_pool *pool, uint32_t max_size,
                                             uint32_t size) {
  if (size < VSR_HEADER_SIZE || size > max_size) return NULL;
  struct vsr_msg *m = vsr_pool_get(pool, size);
  if (m) vsr_header_init(m->data, VSR_CMD_RESERVED, size);
  return m;
}

/* Index of a peer's transport in the pt_* counters. */
static inline int vsri_bus_tidx(const struct bus_peer *p) { return p->tidx; }

/* The client-plane listener of transport |name| ("tcp", "quic"), or NULL when not listening. */
const struct vsri_listener *vsri_bus_client_listener(const struct vsr_bus *bus, const char *name);

/* Metrics endpoint (metrics_http.c). start returns 0 or a VSR_E* code (logged); stop closes
 * the listener and every scrape; the server frees itself once its last operation finished. */
struct vsri_metrics_srv;
int vsri_metrics_start(struct vsr_bus *bus, const char *addr);
void vsri_metrics_stop(struct vsr_bus *bus);
const char *vsri_metrics_addr(const struct vsr_bus *bus);
/* The endpoint's own counters (zero without one). */
struct vsri_metrics_counts {
  uint64_t scrapes, not_found, bad_method, bad_request, oversize, timeout, busy;
};
void vsri_metrics_counts(const struct vsr_bus *bus, struct vsri_metrics_counts *out);

/* Limits (limits.c): slow consumers, timeouts, memory budgets. */
/* Takes |p| off the list of peers whose queue is full (no-op when not listed). */
void vsri_bus_full_unlink(struct bus_peer *p);
/* True when |p|'s queue can take |m| (frames and the byte budget). */
bool vsri_bus_queue_room(const struct vsr_bus *bus, const struct bus_peer *p,
                         const struct vsr_msg *m);
/* True when |p|'s queue is back at half its frames and half its byte budget. */
bool vsri_bus_queue_relieved(const struct vsr_bus *bus, const struct bus_peer *p);
/* A send to |p| was refused: start (or check) its full-queue episode. */
void vsri_bus_full_note(struct vsr_bus *bus, struct bus_peer *p);
/* The frame / idle timeout sweep: armed by vsr_bus_new, stopped at shutdown and delete. */
void vsri_bus_timeout_start(struct vsr_bus *bus);
void vsri_bus_timeout_stop(struct vsr_bus *bus);
/* Memory: the default memory_max, the bytes a pool preallocates, and the plane budgets. */
uint64_t vsri_bus_memory_default(void);
uint64_t vsri_bus_pool_prealloc_bytes(const struct vsr_pool_options *po);
int vsri_bus_setup_memory(struct vsr_bus *bus);

/* Peers (bus.c). */
struct bus_peer *vsri_bus_peer_new(struct vsr_bus *bus, enum vsr_plane plane,
                                   const struct vsri_transport_ops *tops);
void vsri_bus_peer_attach(struct bus_peer *p, struct vsri_conn *conn, bool start);
/* Frees a peer that has no connection (its transport never reported on_closed). */
void vsri_bus_peer_free(struct bus_peer *p);
extern const struct vsri_conn_events vsri_bus_conn_events;
/* Registers a replica link under |id| and reports VSR_PEER_AUTHENTICATED.
 * Returns 0 or VSR_EDUPLICATE (another link to that replica is active). */
int vsri_bus_replica_activate(struct bus_peer *p, uint8_t id);
/* Destroys a peer at once (vsr_bus_del): its connection is aborted (closed now, no upcall),
 * its registration, queue and plane state go, nothing reaches user code. */
void vsri_bus_peer_abort(struct bus_peer *p, int reason);
/* Closes a peer's connection with |reason| (logged by the caller). */
void vsri_bus_peer_close(struct bus_peer *p, int reason, bool drain);
/* The registered client |id|, or NULL. */
struct bus_peer *vsri_bus_client_find(const struct vsr_bus *bus, uint64_t id);
void vsri_bus_emit(struct vsr_bus *bus, enum vsr_peer_event_kind kind, struct bus_peer *p,
                   int reason);

/* Shards (shard.c). start: after the client listeners (workers bind the same TCP address);
 * send: a send (msg) or close (msg NULL) for a client of another shard; client_take/give: the
 * node-wide max_clients; shutdown/done: the workers' part of vsr_bus_shutdown_start/_done;
 * stop (joins the threads) then free, from vsr_bus_del. add: the workers' counters (and their
 * [frames in, bytes in, frames out, bytes out][plane][transport] when |pt| is not NULL). */
#define VSRI_SHARDS_MAX 255
#define VSRI_CLIENT_SLOT_MASK 0xffffffu /* client id bits 0..23: the slot; 24..31: the shard */
struct vsri_shards;
int vsri_bus_new_shard(struct vsr_bus **out, const struct vsr_bus_options *o,
                       const struct vsr_bus_callbacks *cb, void *user, uint32_t index);
int vsri_shards_start(struct vsr_bus *bus);
int vsri_shards_send(struct vsr_bus *bus, uint64_t id, struct vsr_msg *msg);
bool vsri_shards_client_take(struct vsr_bus *bus);
void vsri_shards_client_give(struct vsr_bus *bus);
void vsri_shards_shutdown(struct vsr_bus *bus, uint64_t timeout_ns);
bool vsri_shards_done(const struct vsr_bus *bus);
void vsri_shards_stop(struct vsr_bus *bus);
void vsri_shards_free(struct vsr_bus *bus);
/* A worker's bus (shards): the settings of transport row |row|, shard 0's (borrowed: the
 * worker's listener serves what shard 0's does; freed by shard 0 after the workers joined). */
int vsri_shards_config(const struct vsr_bus *worker, int row, void **out);
/* Adds every worker's QUIC listener admission counters (as last published) to |adm|. */
struct vsri_quic_admission;
void vsri_shards_quic_add(const struct vsr_bus *bus, struct vsri_quic_admission *adm);
/* This bus's own counters (metrics.c): vsr_bus_stats without the other shards. */
void vsri_bus_stats_own(const struct vsr_bus *bus, struct vsr_bus_stats *out);
void vsri_shards_add(const struct vsr_bus *bus, struct vsr_bus_stats *out,
                     uint64_t (*pt)[2][VSRI_BUS_TRANSPORTS]);
/* True when |id| names a client of another shard than this bus's (shard 0 routes it). */
static inline bool vsri_bus_remote_client(const struct vsr_bus *bus, uint64_t id) {
  return bus->shard_set && (((uint32_t)id >> 24) & 0xff) != 0;
}

/* Replica plane (replica.c). init is called by vsr_bus_new when a cluster is configured. */
int vsri_replica_init(struct vsr_bus *bus);
void vsri_replica_fini(struct vsr_bus *bus); /* aborts its peers; never runs the loop */
void vsri_replica_shutdown(struct vsr_bus *bus); /* stop dialing and accepting */
/* True when the replica plane (if any) has no connection, handshake or timer left. */
bool vsri_replica_idle(const struct vsr_bus *bus);
/* A frame on a replica connection that is not yet ACTIVE (the handshake). */
void vsri_replica_on_handshake_frame(struct bus_peer *p, struct vsr_msg *msg);
/* A replica-plane connection is gone (before the peer is freed). */
void vsri_replica_on_closed(struct bus_peer *p, int reason);
/* An outgoing replica connection finished connecting (status 0) or failed. */
void vsri_replica_on_connected(struct bus_peer *p, int status);

/* Tests only: the next accepted client claims |id| (0 clears). If a live client holds |id|,
 * the newcomer is refused as a duplicate (the reference's duplicate_client_id case);
 * otherwise the claim is dropped and the client gets a fresh id. */
void vsri_bus_force_next_client_id(struct vsr_bus *bus, uint64_t id);

/* The simulator's observer: |fn| sees every frame a vsr_bus_send_to_* call accepted (after it
 * was queued), to check that each is delivered once, in order, or counted dropped, and every
 * replica handshake frame the bus queues itself (peer UINT64_MAX). */
void vsri_bus_set_send_tap(struct vsr_bus *bus,
                           void (*fn)(void *ctx, enum vsr_plane plane, uint64_t peer,
                                      const struct vsr_msg *msg),
                           void *ctx);

/* The client SDK's send counters (client.c), kept like a bus peer's: frames_queued ==
 * frames_out + frames_dropped + frames still queued or held by the transport. Tests read them. */
struct vsri_client_counts {
  uint64_t frames_queued, frames_out, bytes_out, frames_dropped;
  uint32_t queue_depth;
};
void vsri_client_counts(const struct vsr_client *c, struct vsri_client_counts *out);

/* QUIC row of vsri_bus_transports (quic_glue.c): see struct vsri_bus_transport. */
void vsri_bus_quic_defaults(struct vsr_bus_options *o);
void vsri_client_quic_defaults(struct vsr_client_options *o);
const char *vsri_bus_quic_listen_addr(const struct vsr_bus_options *o);
int vsri_client_quic_config(const struct vsr_client_options *o, void **out);
int vsri_bus_quic_config(const struct vsr_bus_options *o, void **out);
void vsri_quic_glue_free(void *cfg);
void vsri_bus_quic_stats(const struct vsri_listener *l, struct vsr_bus_stats *out);
/* TLS, WS and WSS rows (tls_glue.c). */
const char *vsri_bus_tls_listen_addr(const struct vsr_bus_options *o);
const char *vsri_bus_ws_listen_addr(const struct vsr_bus_options *o);
const char *vsri_bus_wss_listen_addr(const struct vsr_bus_options *o);
int vsri_bus_tls_config(const struct vsr_bus_options *o, void **out);
int vsri_bus_ws_config(const struct vsr_bus_options *o, void **out);
int vsri_client_tls_config(const struct vsr_client_options *o, void **out);
void vsri_tls_glue_free(void *cfg);

#endif
