/* vsrbus sim's internals, shared by tools/sim*.c: the run, its replicas and clients, the
 * per-link records, and the functions the files call across. The files: sim_run.c (world and
 * host setup, replicas and clients started and freed, the heal phase, shutdown and the leak
 * check, one seed end to end), sim_check.c (the invariants: per-link records, Prepares per op,
 * peer events, the failure report), sim_load.c (the workload and the faults), sim.c (the
 * command line). */
#ifndef VSR_TOOLS_SIM_IMPL_H
#define VSR_TOOLS_SIM_IMPL_H

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

#define LINK_CANDS 8
#define SIM_SUB_MAX 4 /* requests a session client keeps submitted at most */

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
  /* Failover mode: this incarnation's commits, as the state machine's commit hook saw them. */
  uint64_t committed;    /* the newest op committed (0: none yet) */
  uint64_t base;         /* the first op of its contiguous run of commits (a state transfer
                            starts a new run: ops below it are not this replica's to show) */
  uint32_t vc_view;      /* the last view this replica was checked as a new primary in */
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
  /* Failover mode (session SDK): the requests submitted and not completed, oldest first (the
   * SDK completes them in submission order); one reference each. */
  struct vsr_msg *sub[SIM_SUB_MAX];
  uint32_t sub_head, sub_len;
  uint64_t next_id; /* the request_checksum word stamped on the next request */
};

/* One committed op, as the first replica to commit it saw it (failover mode). */
struct committed {
  vsr_u128 checksum; /* the Prepare's identity (zero: no replica committed the op yet) */
  vsr_u128 request_checksum;
  uint64_t client; /* the client id's low word: index | incarnation << 16 */
  uint64_t request;
  uint8_t operation;
  uint8_t replica; /* who committed it first */
  uint32_t view;   /* the lowest view a replica was in when it committed the op (>= the view
                      the op was committed in) */
  uint32_t items_n;   /* a batch: its requests are items[items_at .. items_at + items_n) */
  size_t items_at;
};

/* The primary waits this long (virtual) for more Requests before it prepares a batch: the
 * simulated network delivers one frame a loop turn, so without it no batch ever formed. */
#define SIM_BATCH_DELAY_NS 1000000ull

struct item_rec { /* one request of a committed batch */
  uint64_t client, request;
};

/* A request whose Reply the SDK returned to its client (failover mode). */
struct acked {
  uint64_t client, request, op;
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
  bool fixed;         /* --fixed-primary: the issue-14 mode (replica 0 primary for good, raw
                         clients without sessions, the primary never crashed) */
  /* failover mode, drawn from the seed */
  uint64_t primary_timeout_ns; /* the state machine's: a few hundred virtual ms */
  uint64_t request_timeout_ns; /* the SDK's: then the request goes to the next replica */
  bool stop_load;              /* converging after the heal: no new requests */
  uint32_t p_primary;          /* a fault aimed at the primary, per tick, per million */
  /* state */
  struct replica r[SIM_R_MAX];
  struct sclient c[SIM_C_MAX];
  const char *addrs[SIM_R_MAX];
  char addr_buf[SIM_R_MAX][32];
  char client_addr[32];
  const char *caddrs[SIM_R_MAX]; /* failover mode: every replica's client address (SDK) */
  char caddr_buf[SIM_R_MAX][32];
  const char *qaddrs[SIM_R_MAX]; /* the same over QUIC (--quic) */
  char qaddr_buf[SIM_R_MAX][32];
  char quic_addr[32];
  uint8_t secret[32];
  vsr_u128 cluster;
  struct link rl[SIM_R_MAX][SIM_R_MAX];
  uint64_t *prep; /* op -> Prepare hash, as the primary sent it */
  size_t prep_cap;
  struct committed *cm; /* failover mode: op -> the committed Prepare */
  size_t cm_cap;
  uint64_t cm_hi;       /* the highest op any replica committed */
  struct item_rec *items; /* failover mode: the requests of committed batches */
  size_t items_len, items_cap;
  uint32_t batch_max;   /* the replicas' batch_max (--prepare-batch, default VSR_SM_BATCH_MAX) */
  struct acked *acks;   /* failover mode: every request acknowledged to a client */
  size_t acks_len, acks_cap;
  /* results */
  bool failed;
  char ring[SIM_RING][200];
  uint32_t ring_n;
  uint64_t faults[6]; /* partition, clog, reset, crash, restart, heal */
  uint64_t delivered;
  uint64_t replies;
  uint64_t quic_conns; /* client connections the replicas saw over QUIC (--quic) */
  uint64_t view_changes, evictions, timeouts; /* failover mode */
  uint32_t view_max;
  bool verbose;
};


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
  bool fixed;
  uint64_t view_changes, acked;
  uint64_t batched; /* failover mode: requests committed inside batch Prepares */
};

struct opts {
  bool verbose;
  bool list; /* --seeds: print every seed's line, not only the failing ones */
  uint16_t nr;
  uint32_t nc;
  uint32_t max_frame;
  int keepalive;
  bool quic;
  bool fixed; /* --fixed-primary */
  uint32_t batch_max; /* --prepare-batch (0: VSR_SM_BATCH_MAX, as the node) */
};

static inline double vsec(const struct run *run) { return (double)vsri_sim_now(run->w) / 1e9; }

extern struct run *sim_g_run; /* the log handler's target */

/* sim_check.c */
void sim_note(struct run *run, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sim_fail(struct run *run, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sim_log(void *user, enum vsr_log_level level, const char *line);
uint64_t sim_frame_hash(const struct vsr_msg *m);
void sim_link_push(struct link *l, struct rec r);
void sim_link_clear(struct link *l);
void sim_link_deliver(struct run *run, struct link *l, uint32_t recv_epoch,
                      const struct vsr_msg *m, const char *who);
void sim_replica_tap(void *ctx, enum vsr_plane plane, uint64_t peer, const struct vsr_msg *m);
void sim_replica_on_message(void *user, struct vsr_bus *bus, enum vsr_plane plane,
                            uint64_t peer, struct vsr_msg *msg);
void sim_replica_on_event(void *user, struct vsr_bus *bus, const struct vsr_peer_event *ev);

/* sim_run.c */
int sim_replica_start(struct run *run, struct replica *r);
void sim_replica_free(struct replica *r);
int sim_client_start(struct run *run, struct sclient *c);
void sim_client_free(struct sclient *c, bool loop_too);
void sim_run_seed(uint64_t seed, const struct opts *opt, struct result *out);

/* sim_acks.c: the failover mode's invariants */
void sim_on_commit(void *ctx, const struct vsr_msg *prepare);
void sim_check_prepare(struct run *run, const struct vsr_msg *m, const char *who);
void sim_on_reply(void *arg, struct vsr_client *vc, int status, struct vsr_msg *reply);
int sim_primary(const struct run *run);
bool sim_recovering(const struct replica *r);
uint32_t sim_replicas_out(const struct run *run);
void sim_check_acked(struct run *run);
void sim_check_views(struct run *run);
void sim_sm_say(void *ctx, const char *line);

/* sim_load.c */
void sim_fault_tick(struct run *run);
int sim_restart_due(struct run *run, bool all);
void sim_workload_tick(struct run *run);

#endif
