/* The built-in demo state machine of `vsrbus node`: answers PingClient -> PongClient,
 * Ping -> Pong (from clients and from replicas: the Pong goes back to the pinging replica,
 * echoing the Ping's reserved_command), and Request -> Reply (body echoed; client, request number, checksum and
 * operation copied from the Request). Everything else is counted and ignored.
 *
 * In a cluster (replica_count > 1) it runs Viewstamped Replication (VR Revisited, Liskov &
 * Cowling 2012, §4.1-4.3) in memory, with Iggy mainline's message layouts:
 *  - normal case (sm.c): the primary of view v is replica v mod n. A client Request becomes a
 *    Prepare sent to every backup; backups answer PrepareOk; once a majority holds an op the
 *    primary commits in op order, answers the client and sends Commit (also every
 *    heartbeat_ns when idle, as the primary's heartbeat).
 *  - client table (sm_table.c): Register commits a session (= its op); a duplicate Request is
 *    answered from the table; unknown sessions get an Eviction; bounded, evicting the oldest.
 *  - view change, repair, recovery (sm_vc.c): a backup that hears nothing from the primary for
 *    primary_timeout_ns starts StartViewChange -> DoViewChange -> StartView; lagging replicas
 *    repair with RequestPrepares / RepairPrepare; a restarted replica (memory only) recovers
 *    with RequestStartView / StartView. docs/demo.md explains the whole scheme. */
#ifndef VSR_TOOLS_SM_H
#define VSR_TOOLS_SM_H

#include <stdint.h>
#include <stdio.h>

#include "vsrbus/vsrbus.h"

#define VSR_SM_PIPELINE 4096 /* uncommitted ops the primary holds; more Requests are dropped */
#define VSR_SM_LOG 16384     /* ops every replica keeps (committed ones too), for repair */
#define VSR_SM_MAX_REPLICAS 64 /* acknowledgements are one bit per replica */
/* Default resend_ns: a Prepare a backup has not acknowledged this long after it was queued is
 * queued to it again (lost with a connection, or its PrepareOk refused by a full queue). */
#define VSR_SM_RESEND_NS (50ull * 1000000ull)
/* Default primary_timeout_ns: a backup that hears neither Prepare nor Commit from the primary
 * this long starts a view change. The primary's Commit heartbeat goes out every fifth of it. */
#define VSR_SM_PRIMARY_TIMEOUT_NS (1000ull * 1000000ull)
#define VSR_SM_CLIENTS_MAX 1024 /* client table entries (default clients_max) */
#define VSR_SM_REPLIES 64       /* cached Replies per client: duplicates of its last 64 */
#define VSR_SM_REPAIR_BATCH 256 /* RepairPrepares sent for one RequestPrepares at most */
/* ... and at most this many bytes of them: 256 copies of 1 MiB Prepares, asked again every
 * tick while the previous answer was still queued, took the node's whole memory_max; the log
 * then released the very ops being repaired, and a recovering backup never caught up (found by
 * vsrbus sim, seed 151). The asker asks for the next range as soon as RepairDone arrives. */
#define VSR_SM_REPAIR_BYTES (4u << 20)
/* Committed Prepares the log keeps, in bytes (about: the ops are counted at their average
 * size), but never fewer than VSR_SM_LOG_MIN ops. With a Prepare per 512-byte Request the
 * 16384 ops are 8 MiB and nothing changes; with batches of ~60 such Requests 16384 ops were
 * ~500 MiB per replica, filled with fresh memory for the first ~million requests (page faults
 * were most of the primary's time, measured in docs/demo.md). A backup further behind
 * repairs by state transfer (RangeEvicted), as before past VSR_SM_LOG ops. */
#define VSR_SM_LOG_BYTES (64u << 20)
#define VSR_SM_LOG_MIN 256
/* Prepare batching (sm_batch.c, docs/demo.md "Batches"): the primary puts the Requests queued in
 * one loop turn into one Prepare, up to batch_max of them and batch_bytes of body. Default 64:
 * a client pipelines at most 64 (VSR_SM_REPLIES), and at 32 clients x 8..16 in flight a loop
 * turn holds 10-60 Requests (measured in docs/demo.md); 1 = a Prepare per Request. */
#define VSR_SM_BATCH_MAX 64
#define VSR_SM_BATCH_CAP 1024            /* the largest batch_max (and count a backup accepts) */
#define VSR_SM_BATCH_BYTES (1u << 20)    /* default batch_bytes: a batch body's bytes at most */

enum vsr_sm_status {
  VSR_SM_NORMAL = 0,
  VSR_SM_VIEW_CHANGE = 1,
  VSR_SM_RECOVERING = 2,
};

struct vsr_sm_entry {
  uint64_t op;              /* 0: free */
  vsr_u128 checksum;        /* the Prepare's identity; known before the body when repairing */
  uint64_t acks;            /* primary: bit r: replica r holds the op */
  uint64_t sent_ns;         /* loop time the Prepare was last queued to a backup */
  uint64_t conn;            /* primary: bus client id the Request came on (0: unknown) */
  struct vsr_msg *prepare;  /* NULL: body missing (op 0: slot free) */
};

struct vsr_sm_client {
  vsr_u128 id;        /* 0: free slot */
  uint64_t session;   /* op of its Register commit (0: unknown, after a state jump) */
  uint64_t request;   /* newest request committed (the watermark) */
  uint64_t prepared;  /* primary: newest request taken into the pipeline */
  uint64_t last_op;   /* op of its newest commit: the oldest is evicted first */
  uint64_t conn;      /* bus client id it was last heard on (0: none here) */
  struct vsr_msg *replies[VSR_SM_REPLIES]; /* by request % VSR_SM_REPLIES */
};

struct vsr_sm {
  struct vsr_bus *bus;
  uint8_t replica;         /* this replica's index, written into replies */
  uint16_t replica_count;  /* <= 1: single replica, Requests answered at once */
  vsr_u128 cluster;        /* cluster id stamped on, and required of, replica frames */
  uint64_t op;             /* last op in the log, every op up to it present */
  uint64_t commit;         /* last op committed (applied) */
  vsr_u128 parent;         /* checksum of the last Prepare (primary) */
  struct vsr_sm_entry *pipe; /* VSR_SM_LOG entries, indexed by op % VSR_SM_LOG */
  uint64_t replies, pongs;   /* answers the bus accepted (queued for the client) */
  uint64_t replies_refused;  /* Replies built but not accepted (queue full, client gone, pool) */
  uint64_t ignored, send_errors;
  uint64_t requests;         /* client Requests accepted (delivered by the bus) */
  uint64_t prepares, prepare_oks, commits, resent, foreign, pipeline_full;
  /* Primary flow control. A backup whose queue is full (or link down) is not sent newer
   * Prepares past the first refused one: |behind[r]| is the first op not yet queued to it (0:
   * none), and the rest follow in order as its queue drains. Nothing is lost: an op stays in the
   * pipeline until committed, and |resend_timer| queues an unacknowledged Prepare again. */
  uint64_t resend_ns;                      /* default VSR_SM_RESEND_NS */
  struct vsr_timer *resend_timer;          /* every resend_ns while primary */
  uint64_t behind[VSR_SM_MAX_REPLICAS];
  uint64_t sent_hi[VSR_SM_MAX_REPLICAS];  /* the newest op ever queued to each backup */
  /* The newest op each backup acknowledged in this view. A PrepareOk is cumulative (VR: a
   * backup's log is a prefix of its primary's, and it acknowledges in order), so one that a
   * full queue refused is covered by the next. */
  uint64_t acked[VSR_SM_MAX_REPLICAS];
  uint64_t deferred;  /* Prepares a full queue or a down link refused; queued later, in order */
  uint64_t skipped;   /* Prepares never queued to a backup that was behind: it repairs them */
  uint64_t drop_log_ns, drops_logged; /* rate-limited log of this state machine's own drops */
  /* Memory: the log holds VSR_SM_LOG ops, but never pins more than half the node's message
   * memory (memory_max): past that the oldest committed Prepares leave it first (a backup
   * that still needs them is answered RangeEvicted and jumps ahead). */
  uint64_t mem_max;   /* the bus's memory_max, read at init */
  uint64_t trim_from; /* lowest op that may still hold a committed Prepare */
  uint64_t trimmed;   /* committed Prepares released early: mem_max / 2, VSR_SM_LOG_BYTES */
  uint64_t avg_bytes; /* running average of a committed Prepare's buffer (1/16 per op) */

  /* ---- client table (sm_table.c) ---- */
  struct vsr_sm_client *clients; /* clients_max entries */
  uint32_t *client_index;        /* open addressing: slot + 1, 0 empty; 2 x clients_max */
  uint32_t clients_max;          /* default VSR_SM_CLIENTS_MAX; set before the first Register */
  uint32_t clients_used;
  uint64_t registers;            /* sessions committed */
  uint64_t duplicates;           /* duplicate Requests answered from the table */
  uint64_t duplicates_dropped;   /* duplicates still in the pipeline, or too old to answer */
  uint64_t evictions[VSR_EVICT_MAX + 1]; /* Eviction frames built, by reason */
  uint64_t table_evicted;        /* entries evicted (the oldest) to make room */
  uint64_t not_primary;          /* Requests dropped: not the primary, or not caught up */

  /* ---- view change, repair, recovery (sm_vc.c) ---- */
  enum vsr_sm_status status;
  uint32_t view, log_view;       /* current view; the last view this replica was normal in */
  uint64_t primary_timeout_ns;   /* default VSR_SM_PRIMARY_TIMEOUT_NS */
  struct vsr_timer *tick_timer;  /* every primary_timeout_ns / 5 */
  uint64_t heard_ns;             /* last Prepare / Commit / StartView from the primary */
  uint64_t vc_start_ns;          /* when the current view change started */
  uint64_t rsv_ns;               /* when we last asked a replica for its view */
  uint64_t svc_bits, dvc_bits;   /* StartViewChange / DoViewChange heard for |view| */
  bool dvc_sent;
  uint8_t dvc_best;              /* new primary: replica whose DoViewChange log wins */
  uint32_t dvc_best_log_view;
  uint64_t dvc_best_op, dvc_commit_max;
  struct vsr_msg *dvc_best_msg;  /* its DoViewChange (NULL: our own log) */
  uint64_t commit_max;           /* highest op known committed (commit <= commit_max) */
  uint64_t view_start_op;        /* primary: Requests wait until commit reaches it */
  bool sv_pending;               /* new primary: StartView not sent yet, its log has holes */
  bool lv_pending;               /* backup: the StartView's log is not whole here yet */
  uint64_t lv_target;            /* ... until op reaches this (the StartView's op) */
  uint8_t repair_from;           /* replica asked for missing Prepares */
  uint64_t repair_target;        /* newest op known to exist (repair up to it) */
  uint64_t repair_hi;            /* end of the range last asked for */
  uint64_t repair_ns;            /* when it was asked */
  vsr_u128 incarnation;          /* recovering: nonce of our RequestStartView */
  uint64_t rsv_bits;             /* recovering: replicas that answered with a StartView */
  uint64_t fresh_bits;           /* recovering: replicas known empty (recovering too, or op 0) */
  uint32_t rsv_view;             /* highest view among the answers */
  struct vsr_msg *rsv_primary;   /* the StartView of that view's primary */
  bool jumped;                   /* state taken from a later op: the table may lack sessions */
  uint64_t recover_op;           /* after recovery: no view-change vote until op reaches it */
  uint64_t view_changes;         /* views this replica entered normal status in (after 0) */
  uint64_t repairs_sent, repairs_received, recoveries;
  uint64_t repair_queued[VSR_SM_MAX_REPLICAS]; /* newest op queued to each in a repair answer */
  FILE *dump;                    /* --dump-commits: a line per committed op (NULL: off) */
  /* Set after vsr_sm_init, before traffic (vsrbus sim): a client that never registered is
   * served without the table, as by a single replica. Default false: Eviction NoSession. */
  bool sessions_optional;
  struct vsr_msg *loose_reply;   /* the last Reply to such a client (held until the next) */
  /* Called for every op this replica commits, in op order, with its Prepare (borrowed), before
   * the client is answered (vsrbus sim checks every replica's commits; NULL: none). */
  void (*on_commit)(void *ctx, const struct vsr_msg *prepare);
  void *on_commit_ctx;

  /* ---- batching (sm_batch.c) ---- */
  uint32_t batch_max;            /* Requests per Prepare, 1..VSR_SM_BATCH_CAP; default 1 here,
                                  * the node's --prepare-batch (VSR_SM_BATCH_MAX) sets it */
  uint32_t batch_bytes;          /* a batch body's bytes at most, default VSR_SM_BATCH_BYTES */
  uint64_t batch_delay_ns;       /* how long the first queued Request waits; default 0: until
                                  * the end of the loop turn. vsrbus sim sets 1 ms of virtual
                                  * time: its frames arrive one a turn, never together */
  struct vsr_timer *batch_timer; /* fires at the end of the turn (after batch_delay_ns) */
  bool batch_armed;
  uint32_t pending_len, pending_bytes;
  struct vsr_msg *pending[VSR_SM_BATCH_CAP]; /* admitted Requests (a reference each) */
  uint64_t pending_conn[VSR_SM_BATCH_CAP];
  uint64_t batches, batched;     /* Prepares carrying a batch (>= 2 Requests), Requests in them */
  uint64_t malformed;            /* batch Prepares refused: body layout inconsistent */
  uint64_t malformed_log_ns, malformed_logged;
};

/* One client request of a committed op: the op's Prepare itself (a single Request), or one
 * Request frame of a batch Prepare's body. */
struct vsr_sm_item {
  vsr_u128 client, request_checksum;
  uint64_t request, session;
  uint8_t operation;
  uint32_t index;       /* position in the op (0 for a single Request) */
  const uint8_t *body;  /* the request's body, body_size bytes */
  uint32_t body_size;
};

/* Sets up |sm| for replica |replica| of |count| in cluster |cluster|, on |bus|'s loop (timers
 * are armed there). A cluster replica starts recovering (see sm_vc.c). Returns 0 or
 * VSR_ENOMEM (or VSR_ECONFIG: more than VSR_SM_MAX_REPLICAS). Fields a caller may change
 * before traffic: resend_ns, primary_timeout_ns, clients_max, dump. */
int vsr_sm_init(struct vsr_sm *sm, struct vsr_bus *bus, uint8_t replica, uint16_t count,
                vsr_u128 cluster);

/* Drops every held message, the log, the table and the timers (before the loop goes). */
void vsr_sm_fini(struct vsr_sm *sm);

/* Handles one client-plane frame. */
void vsr_sm_on_client_message(struct vsr_sm *sm, uint64_t client, const struct vsr_msg *msg);

/* Handles one replica-plane frame from replica |from|. */
void vsr_sm_on_replica_message(struct vsr_sm *sm, uint8_t from, struct vsr_msg *msg);

/* Replica |id| is authenticated: the primary sends it every op still uncommitted; a
 * recovering replica asks it for the current view. */
void vsr_sm_on_replica_up(struct vsr_sm *sm, uint8_t id);

/* Builds the Reply to |req| (a valid Request) with |op| in |view|. NULL if the pool is
 * exhausted. */
struct vsr_msg *vsr_sm_build_reply(struct vsr_bus *bus, const struct vsr_msg *req, uint8_t replica,
                                   uint64_t op);

/* Replaces the wall clock that stamps Replies and Commits (NULL: CLOCK_REALTIME): the
 * simulator stamps them with virtual time so a seed's frames are the same bytes every run. */
void vsr_sm_set_clock(uint64_t (*fn)(void *ctx), void *ctx);

/* Replaces where the state machine's own lines go (VSR-VIEW, VSR-DROP; NULL: stderr with the
 * "vsrbus node: " prefix): the simulator keeps them in its event ring. */
void vsr_sm_set_say(void (*fn)(void *ctx, const char *line), void *ctx);
/* One such line (printf format). */
void vsr_sm_say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- internal: shared by sm.c, sm_table.c and sm_vc.c ---------------------------------- */

static inline unsigned vsr_sm_quorum(const struct vsr_sm *sm) { return sm->replica_count / 2u + 1u; }
static inline uint8_t vsr_sm_primary_of(const struct vsr_sm *sm, uint32_t view) {
  return (uint8_t)(view % sm->replica_count);
}
static inline bool vsr_sm_is_primary(const struct vsr_sm *sm) {
  return sm->replica_count > 1 && vsr_sm_primary_of(sm, sm->view) == sm->replica;
}
static inline struct vsr_sm_entry *vsr_sm_entry(struct vsr_sm *sm, uint64_t op) {
  return &sm->pipe[op % VSR_SM_LOG];
}
/* The entry of |op| if the log holds its Prepare, else NULL. */
static inline struct vsr_sm_entry *vsr_sm_have(struct vsr_sm *sm, uint64_t op) {
  struct vsr_sm_entry *e = vsr_sm_entry(sm, op);
  return e->op == op && e->prepare ? e : NULL;
}
uint64_t vsr_sm_now(struct vsr_sm *sm);
void vsr_sm_entry_clear(struct vsr_sm_entry *e);
/* A header-only replica-plane frame from this replica: command, cluster, view, sender set.
 * NULL (counted, logged) when the pool is exhausted. */
struct vsr_msg *vsr_sm_control(struct vsr_sm *sm, uint8_t command);
/* Sends |m| (not consumed) to every other replica linked now. */
void vsr_sm_broadcast(struct vsr_sm *sm, struct vsr_msg *m);
void vsr_sm_send_replica(struct vsr_sm *sm, uint8_t to, struct vsr_msg *m);
/* Sends |out| (consumed) to |client|; true when the bus took it. */
bool vsr_sm_send_client(struct vsr_sm *sm, uint64_t client, struct vsr_msg *out);
/* Stores |prepare| (a reference is taken) as op p->op; false if its slot holds a newer op. */
bool vsr_sm_store(struct vsr_sm *sm, struct vsr_msg *prepare);
/* Moves |op| up over every Prepare present; a backup acknowledges the newest (cumulative). */
void vsr_sm_extend(struct vsr_sm *sm);
/* Applies committed ops up to |target| (bounded by op); the primary answers the clients. */
void vsr_sm_commit_to(struct vsr_sm *sm, uint64_t target);
/* Primary: commits what a quorum (or an earlier view) holds. */
void vsr_sm_advance(struct vsr_sm *sm);
void vsr_sm_send_prepare_ok(struct vsr_sm *sm, const struct vsr_sm_entry *e);
void vsr_sm_primary_catch_up(struct vsr_sm *sm, unsigned r);
void vsr_sm_log_drop(struct vsr_sm *sm, const char *what);

/* sm_batch.c */
/* A Prepare carrying a batch: operation Reserved (never a Request's), client 0, request = the
 * number of Requests, body = those Request frames (256-byte header + body each) back to back. */
static inline bool vsr_sm_is_batch(const struct vsr_msg *prepare) {
  const struct vsr_prepare_header *p = (const struct vsr_prepare_header *)prepare->data;
  return p->operation == VSR_OP_RESERVED;
}
/* Sets |it| to the request at |*pos| of |prepare| (a checked one) and moves |*pos| past it;
 * false when there is none left. |*pos| starts at 0. */
bool vsr_sm_item_next(const struct vsr_msg *prepare, uint32_t *pos, struct vsr_sm_item *it);
/* 0 if |prepare| is not a batch or its body is a well-formed batch; else -1 and the reason in
 * |why| (a backup refuses it: docs/demo.md). */
int vsr_sm_batch_check(const struct vsr_msg *prepare, char *why, size_t why_len);
int vsr_sm_batch_init(struct vsr_sm *sm);
void vsr_sm_batch_fini(struct vsr_sm *sm);
/* Primary: queues admitted Request |req| (a reference is taken) from |conn| for the next
 * Prepare; flushes when batch_max or batch_bytes is reached, else at the end of the turn. */
void vsr_sm_batch_add(struct vsr_sm *sm, uint64_t conn, const struct vsr_msg *req);
/* Prepares what is queued now (nothing if empty; dropped if no longer the primary). */
void vsr_sm_batch_flush(struct vsr_sm *sm);
/* A batch Prepare refused from replica |from|: counted, logged (at most once a second). */
void vsr_sm_batch_refuse(struct vsr_sm *sm, uint8_t from, const struct vsr_msg *prepare,
                         const char *why);
/* sm.c: the Prepare for |req| alone as the next op, and the next op |prep| (consumed) entered
 * into the log and sent to the backups. */
struct vsr_msg *vsr_sm_build_prepare(struct vsr_sm *sm, const struct vsr_msg *req, uint64_t op);
void vsr_sm_primary_append(struct vsr_sm *sm, struct vsr_msg *prep, uint64_t conn);
/* The Prepare header fields every Prepare of this primary carries (view, parent, op...). */
void vsr_sm_prepare_fill(struct vsr_sm *sm, struct vsr_prepare_header *p, uint64_t op);

/* sm_table.c */
int vsr_sm_table_init(struct vsr_sm *sm);
void vsr_sm_table_fini(struct vsr_sm *sm);
void vsr_sm_table_clear(struct vsr_sm *sm);
struct vsr_sm_client *vsr_sm_table_find(struct vsr_sm *sm, vsr_u128 id);
/* Applies request |it| of committed op |e| to the table (Register: a session; else the
 * client's watermark), keeps its Reply; returns the Reply (borrowed) or NULL. */
struct vsr_msg *vsr_sm_table_apply(struct vsr_sm *sm, const struct vsr_sm_entry *e,
                                   const struct vsr_sm_item *it);
/* A Request arrives at the primary: returns true when it is new (to be prepared); otherwise it
 * was answered (cached Reply, Eviction) or dropped here. */
bool vsr_sm_table_admit(struct vsr_sm *sm, uint64_t conn, const struct vsr_msg *req);
/* After a view change: nothing of the new primary's is in flight any more. */
void vsr_sm_table_reset_prepared(struct vsr_sm *sm);

/* sm_vc.c */
int vsr_sm_vc_init(struct vsr_sm *sm);
void vsr_sm_vc_fini(struct vsr_sm *sm);
/* Handles the view-change, repair and recovery commands; false if |msg| is not one. */
bool vsr_sm_vc_message(struct vsr_sm *sm, uint8_t from, struct vsr_msg *msg);
void vsr_sm_vc_replica_up(struct vsr_sm *sm, uint8_t id);
/* A Prepare or Commit of a view above ours arrived from |from|: ask it for the view. */
void vsr_sm_vc_behind(struct vsr_sm *sm, uint8_t from);
/* Asks |repair_from| for the ops between |op| and |repair_target| if not asked recently. */
void vsr_sm_vc_repair(struct vsr_sm *sm, bool now);

#endif
