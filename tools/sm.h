/* The built-in demo state machine of `vsrbus node`: answers PingClient -> PongClient,
 * Ping -> Pong (from clients and from replicas: the Pong goes back to the pinging replica,
 * echoing the Ping's reserved_command), and Request -> Reply (body echoed; client, request number, checksum and
 * operation copied from the Request). Everything else is counted and ignored.
 *
 * In a cluster (replica_count > 1) it runs the VSR normal case with a fixed primary, replica 0:
 * a client Request becomes a Prepare sent to every backup (one buffer, one queue each); backups
 * answer PrepareOk (echoing the Prepare's checksum); once a majority holds an op (the primary
 * counts itself) the primary commits in op order, sends the Reply to the client and one Commit
 * to the backups. No view changes, no log: enough to carry the real traffic shape. */
#ifndef VSR_TOOLS_SM_H
#define VSR_TOOLS_SM_H

#include <stdint.h>

#include "vsrbus/vsrbus.h"

#define VSR_SM_PIPELINE 4096 /* uncommitted ops the primary holds; more Requests are dropped */
#define VSR_SM_MAX_REPLICAS 64 /* acknowledgements are one bit per replica */
/* Default resend_ns: a Prepare a backup has not acknowledged this long after it was queued is
 * queued to it again (lost with a connection, or its PrepareOk refused by a full queue). */
#define VSR_SM_RESEND_NS (50ull * 1000000ull)

struct vsr_sm_entry {
  uint64_t op;              /* 0: free */
  uint64_t client;          /* bus client id to answer */
  uint64_t acks;            /* bit r: replica r holds the op */
  uint64_t sent_ns;         /* loop time the Prepare was last queued to a backup */
  struct vsr_msg *request;  /* kept for the Reply */
  struct vsr_msg *prepare;  /* kept for resends to a backup that (re)connects */
};

struct vsr_sm {
  struct vsr_bus *bus;
  uint8_t replica;         /* this replica's index, written into replies */
  uint16_t replica_count;  /* <= 1: single replica, Requests answered at once */
  vsr_u128 cluster;        /* cluster id stamped on, and required of, replica frames */
  uint64_t op;             /* last op assigned (primary) or seen (backup) */
  uint64_t commit;         /* last op committed */
  vsr_u128 parent;         /* checksum of the last Prepare (primary) */
  struct vsr_sm_entry *pipe; /* VSR_SM_PIPELINE entries, indexed by op (primary only) */
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
  struct vsr_timer *resend_timer;          /* primary only: every resend_ns */
  uint64_t behind[VSR_SM_MAX_REPLICAS];
  uint64_t sent_hi[VSR_SM_MAX_REPLICAS];  /* the newest op ever queued to each backup */
  uint64_t deferred;  /* Prepares a full queue or a down link refused; queued later, in order */
  uint64_t skipped;   /* Prepares never queued to a backup that was behind: committed without it */
  uint64_t drop_log_ns, drops_logged; /* rate-limited log of this state machine's own drops */
};

/* Sets up |sm| for replica |replica| of |count| in cluster |cluster|, on |bus|'s loop (the
 * primary arms its resend timer there). Returns 0 or VSR_ENOMEM (or VSR_ECONFIG: more than
 * VSR_SM_MAX_REPLICAS). */
int vsr_sm_init(struct vsr_sm *sm, struct vsr_bus *bus, uint8_t replica, uint16_t count,
                vsr_u128 cluster);

/* Drops every held message, the pipeline and the timer (before the loop goes). Cannot fail. */
void vsr_sm_fini(struct vsr_sm *sm);

/* Handles one client-plane frame. */
void vsr_sm_on_client_message(struct vsr_sm *sm, uint64_t client, const struct vsr_msg *msg);

/* Handles one replica-plane frame from replica |from|. */
void vsr_sm_on_replica_message(struct vsr_sm *sm, uint8_t from, struct vsr_msg *msg);

/* Replica |id| is authenticated: the primary sends it every op still uncommitted. */
void vsr_sm_on_replica_up(struct vsr_sm *sm, uint8_t id);

/* Builds the Reply to |req| (a valid Request) with |op|. NULL if the pool is exhausted. */
struct vsr_msg *vsr_sm_build_reply(struct vsr_bus *bus, const struct vsr_msg *req, uint8_t replica,
                                   uint64_t op);

/* Replaces the wall clock that stamps Replies and Commits (NULL: CLOCK_REALTIME): the
 * simulator stamps them with virtual time so a seed's frames are the same bytes every run. */
void vsr_sm_set_clock(uint64_t (*fn)(void *ctx), void *ctx);

#endif
