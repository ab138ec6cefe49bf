/* `vsrbus demo`, shared by its files: demo.c (options, setup, the run), demo_client.c (the
 * client sessions: the load generator that follows the primary), demo_nodes.c (the three
 * `vsrbus node` processes: ports, secret, spawn, kill, restart, stop, their logs) and
 * demo_report.c (the live lines once a second, the summary, the nodes' accounts, the CSV row).
 * What the demo does is described in demo.c and docs/demo.md. */
#ifndef VSR_TOOLS_DEMO_H
#define VSR_TOOLS_DEMO_H

#include <stdbool.h>
#include <stdint.h>
#include <signal.h>
#include <stdio.h>
#include <sys/types.h>

#include "sm.h"
#include "util/hist.h"
#include "vsrbus/vsrbus.h"

#define DEMO_REPLICAS 3
#define DEMO_DEPTH_MAX 64
/* Requests in flight (clients x depth) at most half the primary's pipeline: a client that
 * reconnects starts afresh while its old requests may still be uncommitted. */
#define DEMO_INFLIGHT_MAX (VSR_SM_PIPELINE / 2)
#define DEMO_WARMUP_NS (20ull * 1000000000ull)
#define DEMO_RETRY_NS (50ull * 1000000ull)
#define DEMO_SEC 1000000000ull
#define DEMO_MS 1000000ull
#define DEMO_EVENTS_MAX 8
#define DEMO_WATCH_NS (50ull * 1000000ull) /* how often the clients' timeouts are checked */
#define DEMO_NETNS (DEMO_REPLICAS + 2) /* --netns: a namespace per replica, the hub, the clients */
#define DEMO_NETNS_REPLICA_PORT 7000   /* --netns: on each replica's own address */
#define DEMO_NETNS_CLIENT_PORT 8000    /* TCP, and UDP for QUIC */

struct demo;

/* One client session. Until the SDK's cluster client (vsr_client_options.session) lands, the
 * few rules a client needs to follow the primary live here, behind demo_client_start():
 * connect to replica |target|, PingClient (the PongClient names the view, so the primary),
 * Register (session = the Reply's commit), then requests numbered 1, 2, ...; on a close or
 * request_timeout without a Reply, the next replica, resending every unanswered request with
 * its number (the cluster answers a duplicate from its client table). */
struct demo_client {
  struct demo *d;
  struct vsr_client *c;
  struct vsr_timer *retry;
  vsr_u128 id;
  int target;            /* replica index connected to */
  uint32_t view;         /* highest view heard */
  uint64_t session;      /* 0 until the Register's Reply */
  uint64_t next_request; /* request numbers start at 1 */
  uint64_t slot_req[DEMO_DEPTH_MAX]; /* request in flight in each slot (0: free) */
  uint64_t sent_at[DEMO_DEPTH_MAX];
  uint64_t register_ns;  /* when the Register went out (0: not sent) */
  uint64_t progress_ns;  /* last Reply, or when the requests in flight were (re)sent */
  uint64_t resend_ns;    /* when they were last sent again on the same connection */
  uint32_t inflight;
  bool replied; /* at least one Reply: the path through the cluster works */
};

struct demo_event {
  char kind;   /* 'k' kill, 'r' restart, 'p' kill the primary */
  int replica; /* -1 for 'p': whichever is primary then */
  int at_s;    /* seconds into the measurement */
  bool done;
};

struct demo {
  struct vsr_loop *loop;
  const char *connect, *io, *cluster_name, *transport, *system;
  int seconds, clients, depth;
  uint32_t size;
  bool keep, csv, quiet;
  FILE *out;          /* progress: stdout, or stderr when stdout carries the CSV row */
  char cert[96];      /* QUIC: the primary's certificate, which the clients trust */
  uint64_t primary_hwm_kib; /* the primary's peak RSS, read before it stops */
  vsr_u128 cluster;
  char primary[64];
  char dir[64];
  pid_t pids[DEMO_REPLICAS];
  bool killed[DEMO_REPLICAS]; /* killed on purpose: not a failure */
  int nodes;                  /* replicas the clients know: 3, or 1 with --connect */
  char addrs[DEMO_REPLICAS][64]; /* each replica's client address */
  char replicas[128], secret_path[96];
  int replica_ports[DEMO_REPLICAS], client_ports[DEMO_REPLICAS], quic_ports[DEMO_REPLICAS];
  int primary_timeout_ms;     /* the nodes' --primary-timeout-ms */
  int batch_max;              /* the nodes' --prepare-batch (0: theirs, VSR_SM_BATCH_MAX) */
  bool netns;                 /* --netns (demo_netns.c) */
  char ns[DEMO_NETNS][48];    /* replicas 0..2, the hub, the clients */
  bool ns_made[DEMO_NETNS];   /* created: deleted at the end */
  char ns_addr[DEMO_REPLICAS][16]; /* each replica's address in its namespace */
  int home_ns;                /* the demo's first network namespace while it is elsewhere, -1 */
  uint64_t request_timeout_ns; /* a client with no Reply this long tries the next replica */
  struct demo_event ev[DEMO_EVENTS_MAX];
  int nev;
  bool dump;                  /* --dump-commits: nodes log commits, the demo its acks */
  FILE *acks;
  struct demo_client *cl;
  struct vsr_timer *tick, *watch;
  /* Failover accounting. */
  uint32_t view;              /* highest view any client heard */
  uint64_t sent, resent, replied, late, evicted, failovers;
  uint64_t last_reply_ns, max_gap_ns, max_gap_at_ns;
  uint64_t kill_ns, recovered_ns; /* first kill; first Reply after it (in a later view when it
                                     was the primary's: not one already on its way) */
  uint32_t kill_view;
  struct vsri_hist before, after; /* latencies before and after the first kill */
  uint64_t before_n, after_n, end_ns;
  int warm;           /* clients with a Reply */
  int ticks;          /* seconds measured */
  bool measuring, done, failed;
  uint64_t start_ns, measure_ns;
  uint64_t sec_committed, total_committed, errors;
  struct vsri_hist sec, total;
};

/* demo_client.c */
void demo_client_start(struct demo_client *k); /* the one place that connects (struct above) */
void demo_retry(void *ctx);                   /* a client's retry timer: reconnect */
void demo_watch(void *ctx);                   /* the clients' timeout sweep timer */

/* demo_nodes.c */
int demo_start_nodes(struct demo *d);         /* ports, secret, (certificate), replicas 2, 1, 0 */
void demo_events(struct demo *d);             /* --kill / --restart / --kill-primary-after due */
void demo_stop_nodes(struct demo *d);         /* SIGTERM, bounded wait, then SIGKILL */
bool demo_nodes_alive(struct demo *d);        /* false (printed) once a node died unasked */
uint64_t demo_status_kib(pid_t pid, const char *key);
void demo_dump_logs(const struct demo *d);
void demo_cleanup_dir(const struct demo *d);

/* demo.c: set by SIGINT / SIGTERM (start-up waits give up, the run ends the normal way) */
extern volatile sig_atomic_t demo_stop_requested;
/* demo_netns.c (--netns; root) */
int demo_netns_check(void);                    /* root and ip: 0, else -1 and one line printed */
int demo_netns_setup(struct demo *d);          /* namespaces, bridge, links; one line on failure */
int demo_netns_enter_node(const struct demo *d, int i); /* in replica i's child, before exec */
int demo_netns_enter_clients(struct demo *d);  /* the demo itself, before its clients start */
void demo_netns_cleanup(struct demo *d);       /* back home, every namespace deleted; idempotent */
/* demo_report.c */
void demo_tick(void *ctx); /* the once-a-second timer: warm-up, live line, events, the end */
void demo_summary(const struct demo *d);
void demo_node_reports(const struct demo *d);
void demo_csv_row(const struct demo *d);

#endif
