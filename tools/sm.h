/* The built-in demo state machine of `vsrbus node`: answers PingClient -> PongClient,
 * Ping -> Pong, and Request -> Reply (body echoed; client, request number, checksum and
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

#define VSR_SM_PIPELINE 1024 /* uncommitted ops the primary holds; more Requests are dropped */
#define VSR_SM_MAX_REPLICAS 64 /* acknowledgements are one bit per replica */

struct vsr_sm_entry {
  uint64_t op;              /* 0: free */
  uint64_t client;          /* bus client id to answer */
  uint64_t acks;            /* bit r: replica r holds the op */
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
  uint64_t prepares, prepare_oks, commits, resent, foreign, pipeline_full;
};

/* Sets up |sm| for replica |replica| of |count| in cluster |cluster|. Returns 0 or VSR_ENOMEM
 * (or VSR_ECONFIG: more than VSR_SM_MAX_REPLICAS). */
int vsr_sm_init(struct vsr_sm *sm, struct vsr_bus *bus, uint8_t replica, uint16_t count,
                vsr_u128 cluster);

/* Drops every held message and the pipeline. Cannot fail. */
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

#endif
