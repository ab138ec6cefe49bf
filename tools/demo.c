/* `vsrbus demo`: a local 3-replica cluster (three `vsrbus node` processes on 127.0.0.1 sharing
 * a freshly generated secret) and N client sessions driving Viewstamped Replication: Register,
 * then Request -> primary -> Prepare to both backups -> PrepareOk -> Reply after a quorum,
 * Commit to the backups. Prints committed requests/s and request latency p50/p99 once a
 * second, then a summary. --kill / --restart / --kill-primary-after kill (SIGKILL, by PID) and
 * restart replicas mid-run: the backups elect a new primary (view change), the clients follow
 * it, a restarted replica recovers (docs/demo.md). With --connect ADDR it drives an already
 * running node instead. With --transport quic every replica also listens for clients on QUIC
 * (one certificate made in the temp dir) and the clients use it. --csv prints one `vsrbus
 * bench` row instead (`bench --mode pipeline`). */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cmds.h"
#include "crypto/cert.h"
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

static struct demo *demo_signal_target;

static void demo_on_signal(int sig) {
  if (!demo_signal_target) return;
  if (sig == SIGALRM) demo_signal_target->failed = true; /* the run outlived its bound */
  vsr_loop_stop(demo_signal_target->loop);
}

static void demo_usage(FILE *f) {
  fprintf(f,
          "usage: vsrbus demo [OPTIONS]\n"
          "\n"
          "Starts three `vsrbus node` replicas on 127.0.0.1 (the primary of view v is replica\n"
          "v mod 3) and client sessions sending Requests; prints committed requests/s and\n"
          "latency, and how the cluster rides out the replicas it is told to kill.\n"
          "\n"
          "  --seconds N      measured seconds, default 10\n"
          "  --clients N      client connections, default 32\n"
          "  --size BYTES     request body bytes, default 256\n"
          "  --depth N        requests in flight per client, default 1 (max %d;\n"
          "                   clients x depth at most %d)\n"
          "  --connect ADDR   drive an already running node instead of starting a cluster\n"
          "  --kill R@S       kill replica R (SIGKILL) S seconds into the measurement\n"
          "  --restart R@S    restart replica R (memory empty: it recovers) at S seconds\n"
          "  --kill-primary-after S  kill whichever replica is primary at S seconds\n"
          "  --primary-timeout-ms N  the nodes' view-change timeout, default 500\n"
          "  --dump-commits   nodes write commits.N.txt, the demo acks.txt (every Reply a\n"
          "                   client got) into the kept log directory, for checking\n"
          "  --cluster NAME   cluster name, default vsrbus-demo\n"
          "  --io epoll|uring|auto  I/O backend of the demo and its nodes\n"
          "  --transport tcp|quic   client transport (quic: the primary gets a QUIC listener\n"
          "                   and a fresh self-signed certificate the clients verify)\n"
          "  --csv            print one CSV row (the `vsrbus bench` format) on stdout;\n"
          "                   progress goes to stderr\n"
          "  --system NAME    first CSV column, default vsrbus\n"
          "  --quiet          no per-second lines\n"
          "  --keep           keep the nodes' logs and secret (printed path)\n"
          "  (--kill, --restart: up to %d in all)\n",
          DEMO_DEPTH_MAX, DEMO_INFLIGHT_MAX, DEMO_EVENTS_MAX);
}

/* ---- clients --------------------------------------------------------------------------- */

static void demo_client_start(struct demo_client *k);

static struct vsr_msg *demo_request_new(struct demo_client *k, uint64_t request, uint8_t op,
                                        uint32_t body) {
  struct vsr_msg *m = vsr_client_msg_new(k->c, VSR_HEADER_SIZE + body);
  if (!m) return NULL;
  struct vsr_request_header *rq = (struct vsr_request_header *)m->data;
  rq->command = VSR_CMD_REQUEST;
  rq->cluster = k->d->cluster;
  rq->view = k->view;
  rq->client = k->id;
  rq->request = request;
  rq->session = k->session;
  rq->operation = op;
  for (uint32_t i = 0; i < body; i++) m->data[VSR_HEADER_SIZE + i] = (uint8_t)(i * 7 + 1);
  return m;
}

static void demo_put(struct demo_client *k, struct vsr_msg *m) {
  if (!m || vsr_client_send(k->c, m) != 0) k->d->errors++;
  vsr_msg_unref(m);
}

/* Request |request| (new, or again after a failover: same number, same bytes). */
static void demo_send_request(struct demo_client *k, uint64_t request) {
  demo_put(k, demo_request_new(k, request, VSR_OP_SEND_MESSAGES, k->d->size));
}

static void demo_send(struct demo_client *k) {
  uint32_t slot = (uint32_t)(k->next_request % DEMO_DEPTH_MAX);
  if (k->slot_req[slot] != 0) return; /* the depth is full */
  k->slot_req[slot] = k->next_request;
  k->sent_at[slot] = vsr_tool_now();
  k->inflight++;
  k->d->sent++;
  demo_send_request(k, k->next_request++);
}

/* On a fresh connection: the PingClient that names the view, then the Register or every
 * request still unanswered, oldest first. */
static void demo_client_resume(struct demo_client *k) {
  struct demo *d = k->d;
  struct vsr_msg *ping = vsr_client_msg_new(k->c, VSR_HEADER_SIZE);
  if (ping) {
    struct vsr_header *h = (struct vsr_header *)ping->data;
    h->command = VSR_CMD_PING_CLIENT;
    h->cluster = d->cluster;
    h->view = k->view;
    vsr_put_u128(h->reserved_command, k->id);
  }
  demo_put(k, ping);
  k->progress_ns = vsr_tool_now();
  if (k->session == 0) {
    k->register_ns = k->progress_ns;
    demo_put(k, demo_request_new(k, 0, VSR_OP_REGISTER, 0));
    return;
  }
  for (uint64_t r = k->next_request - k->inflight; r < k->next_request; r++) {
    if (k->slot_req[r % DEMO_DEPTH_MAX] != r) continue;
    d->resent++;
    demo_send_request(k, r);
  }
  while (k->inflight < (uint32_t)d->depth && !d->done) demo_send(k);
}

/* Leaves the replica it is on for |target| (the next one, or the primary a header named). */
static void demo_failover(struct demo_client *k, int target) {
  k->target = target;
  k->d->failovers++;
  vsr_timer_arm(k->retry, 1); /* closes and connects from the loop, not inside a callback */
}

static void demo_learn_view(struct demo_client *k, uint32_t view) {
  struct demo *d = k->d;
  if (view > k->view) k->view = view;
  if (view > d->view) {
    d->view = view;
    if (!d->quiet) {
      fprintf(d->out, "  view %u: replica %u is primary; clients follow it\n", view,
              view % DEMO_REPLICAS);
      fflush(d->out);
    }
  }
}

static void demo_on_reply(struct demo_client *k, const struct vsr_reply_header *rp) {
  struct demo *d = k->d;
  uint64_t now = vsr_tool_now();
  if (rp->request == 0) { /* the Register's: the session */
    if (k->session != 0 || rp->operation != VSR_OP_REGISTER) {
      d->late++;
      return;
    }
    k->session = rp->commit;
    k->progress_ns = now;
    while (k->inflight < (uint32_t)d->depth && !d->done) demo_send(k);
    return;
  }
  uint32_t slot = (uint32_t)(rp->request % DEMO_DEPTH_MAX);
  if (k->slot_req[slot] != rp->request) {
    d->late++; /* answered already (a duplicate after a resend) */
    return;
  }
  uint64_t lat = now - k->sent_at[slot];
  k->slot_req[slot] = 0;
  k->inflight--;
  k->progress_ns = now;
  d->replied++;
  if (d->acks) {
    fprintf(d->acks, "%016llx%016llx %llu\n", (unsigned long long)k->id.hi,
            (unsigned long long)k->id.lo, (unsigned long long)rp->request);
  }
  if (!k->replied) {
    k->replied = true;
    d->warm++;
  }
  if (d->measuring) {
    if (d->last_reply_ns && now - d->last_reply_ns > d->max_gap_ns) {
      d->max_gap_ns = now - d->last_reply_ns;
      d->max_gap_at_ns = d->last_reply_ns;
    }
    if (d->kill_ns && !d->recovered_ns && rp->view >= d->kill_view) {
      d->recovered_ns = now;
      if (!d->quiet) {
        fprintf(d->out, "  first commit %.0f ms after the kill (view %u)\n",
                (double)(now - d->kill_ns) / 1e6, d->view);
        fflush(d->out);
      }
    }
    d->sec_committed++;
    vsri_hist_record(&d->sec, lat);
    vsri_hist_record(d->kill_ns ? &d->after : &d->before, lat);
    if (d->kill_ns) d->after_n++;
    else d->before_n++;
  }
  d->last_reply_ns = now;
  if (!d->done) demo_send(k);
}

static void demo_on_message(void *user, struct vsr_client *c, struct vsr_msg *msg) {
  (void)c;
  struct demo_client *k = user;
  struct demo *d = k->d;
  const struct vsr_header *h = (const struct vsr_header *)msg->data;
  switch (h->command) {
  case VSR_CMD_REPLY:
    demo_learn_view(k, h->view);
    demo_on_reply(k, (const struct vsr_reply_header *)msg->data);
    return;
  case VSR_CMD_PONG_CLIENT:
    demo_learn_view(k, h->view);
    if (d->nodes > 1 && (int)(k->view % (uint32_t)d->nodes) != k->target) {
      demo_failover(k, (int)(k->view % (uint32_t)d->nodes)); /* a backup: go to the primary */
    }
    return;
  case VSR_CMD_EVICTION: {
    /* The session is gone (the table evicted it): its requests in flight are lost (counted);
     * a new session numbers from 1 again. */
    d->evicted++;
    d->errors += k->inflight;
    memset(k->slot_req, 0, sizeof k->slot_req);
    k->inflight = 0;
    k->next_request = 1;
    k->session = 0;
    demo_client_resume(k);
    return;
  }
  default:
    d->errors++;
    return;
  }
}

static void demo_on_state(void *user, struct vsr_client *c, int status) {
  (void)c;
  struct demo_client *k = user;
  if (status == 0) {
    demo_client_resume(k);
    return;
  }
  /* Closed (the replica is not up yet, or went away): the next one, shortly. */
  if (!k->d->done) {
    k->target = (k->target + 1) % k->d->nodes;
    vsr_timer_arm(k->retry, DEMO_RETRY_NS);
  }
}

static void demo_retry(void *ctx) {
  struct demo_client *k = ctx;
  vsr_client_del(k->c);
  k->c = NULL;
  demo_client_start(k);
}

/* The one place that picks the replica and opens the connection (see struct demo_client). */
static void demo_client_start(struct demo_client *k) {
  struct vsr_client_options o;
  vsr_client_options_default(&o);
  o.addr = k->d->addrs[k->target];
  o.transport = k->d->transport;
  if (k->d->cert[0]) o.quic.ca_file = k->d->cert;
  /* Pipelined requests, in order, on one stream (the per-request model would carry one request
   * per round trip: the node allows 1 stream per client by default). */
  o.quic.streams = VSR_QUIC_STREAMS_LONG;
  struct vsr_client_callbacks cb = {.on_message = demo_on_message, .on_state = demo_on_state};
  if (vsr_client_new(&k->c, k->d->loop, &o, &cb, k) != 0) {
    k->c = NULL;
    k->target = (k->target + 1) % k->d->nodes;
    vsr_timer_arm(k->retry, DEMO_RETRY_NS);
  }
}

/* Every DEMO_WATCH_NS: a client whose requests (or Register) got no Reply for a primary
 * timeout sends them again where it is (a new primary drops Requests until it has committed
 * what it inherited); after request_timeout it tries the next replica. */
static void demo_watch(void *ctx) {
  struct demo *d = ctx;
  uint64_t now = vsr_tool_now(), resend_ns = (uint64_t)d->primary_timeout_ms * DEMO_MS;
  for (int i = 0; i < d->clients && d->nodes > 1; i++) {
    struct demo_client *k = &d->cl[i];
    bool waiting = k->inflight > 0 || (k->session == 0 && k->register_ns != 0);
    if (!k->c || !waiting || now - k->progress_ns <= resend_ns) continue;
    if (now - k->progress_ns > d->request_timeout_ns) {
      demo_failover(k, (k->target + 1) % d->nodes);
    } else if (now - k->resend_ns > resend_ns && vsr_client_state(k->c) == 1) {
      k->resend_ns = now;
      uint64_t progress = k->progress_ns;
      demo_client_resume(k);
      k->progress_ns = progress; /* a resend is not progress */
    }
  }
  vsr_timer_arm(d->watch, DEMO_WATCH_NS);
}

/* ---- the nodes ------------------------------------------------------------------------- */

/* Picks |n| distinct free loopback ports (all bound at once, then released). */
static int demo_ports(int *ports, int n) {
  int fds[2 * DEMO_REPLICAS];
  int rc = 0;
  for (int i = 0; i < n; i++) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    fds[i] = socket(AF_INET, SOCK_STREAM, 0);
    if (fds[i] < 0 || bind(fds[i], (struct sockaddr *)&a, sizeof a) < 0 ||
        getsockname(fds[i], (struct sockaddr *)&a, &len) < 0) {
      rc = -1;
    }
    ports[i] = ntohs(a.sin_port);
  }
  for (int i = 0; i < n; i++) {
    if (fds[i] >= 0) close(fds[i]);
  }
  return rc;
}

/* A free loopback UDP port for the primary's QUIC listener (bound, then released). */
static int demo_udp_port(void) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof a;
  int fd = socket(AF_INET, SOCK_DGRAM, 0), port = -1;
  if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
      getsockname(fd, (struct sockaddr *)&a, &len) == 0) {
    port = ntohs(a.sin_port);
  }
  if (fd >= 0) close(fd);
  return port;
}

/* QUIC: a self-signed certificate for 127.0.0.1 in |d->dir| (cert.pem, key.pem). */
static int demo_cert(struct demo *d) {
  struct vsri_cert *c = NULL;
  int err = vsri_cert_generate(&c, "localhost", 1);
  if (!err) err = vsri_cert_write(c, d->dir);
  vsri_cert_free(c);
  if (err) {
    fprintf(stderr, "vsrbus demo: cannot make a certificate: %s\n", vsr_strerror(err));
    return -1;
  }
  snprintf(d->cert, sizeof d->cert, "%s/cert.pem", d->dir);
  return 0;
}

/* A fresh 32-byte secret, written as 64 hex digits to a 0600 file in |d->dir|. */
static int demo_secret(struct demo *d, char *path, size_t len) {
  uint8_t key[32];
  if (getrandom(key, sizeof key, 0) != (ssize_t)sizeof key) return -1;
  snprintf(path, len, "%s/secret", d->dir);
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
  if (fd < 0) return -1;
  char hex[65];
  for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", key[i]);
  ssize_t w = write(fd, hex, 64);
  close(fd);
  memset(key, 0, sizeof key);
  return w == 64 ? 0 : -1;
}

/* A "Key:   N kB" line of /proc/PID/status, in KiB (0 if absent). */
static uint64_t demo_status_kib(pid_t pid, const char *key) {
  char path[64], line[256];
  unsigned long long kib = 0;
  snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
  FILE *f = fopen(path, "r");
  while (f && fgets(line, sizeof line, f)) {
    if (strncmp(line, key, strlen(key)) == 0) {
      kib = strtoull(line + strlen(key), NULL, 10);
      break;
    }
  }
  if (f) fclose(f);
  return kib;
}

static int demo_log_count(const char *path, const char *needle) {
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  char line[512];
  int n = 0;
  while (fgets(line, sizeof line, f)) n += strstr(line, needle) != NULL;
  fclose(f);
  return n;
}

static pid_t demo_spawn(struct demo *d, int i) {
  char idx[8], tcp[32], quic[32], key[96], timeout[16], dump[96], log[96];
  snprintf(idx, sizeof idx, "%d", i);
  snprintf(tcp, sizeof tcp, "127.0.0.1:%d", d->client_ports[i]);
  snprintf(quic, sizeof quic, "127.0.0.1:%d", d->quic_ports[i]);
  snprintf(key, sizeof key, "%s/key.pem", d->dir);
  snprintf(timeout, sizeof timeout, "%d", d->primary_timeout_ms);
  snprintf(dump, sizeof dump, "%s/commits.%d.txt", d->dir, i);
  snprintf(log, sizeof log, "%s/node%d.log", d->dir, i);
  const char *argv[40] = {"vsrbus", "node", "--cluster", d->cluster_name, "--replica", idx,
                          "--replicas", d->replicas, "--secret-file", d->secret_path, "--tcp", tcp,
                          "--reconnect-ms", "200", "--handshake-grace-ms", "2000",
                          "--primary-timeout-ms", timeout};
  int n = 18;
  if (d->io) {
    argv[n++] = "--io";
    argv[n++] = d->io;
  }
  if (d->dump) {
    argv[n++] = "--dump-commits";
    argv[n++] = dump;
  }
  if (d->cert[0]) { /* every replica serves clients: the primary moves */
    const char *q[] = {"--quic", quic, "--cert", d->cert, "--key", key};
    for (size_t j = 0; j < sizeof q / sizeof q[0]; j++) argv[n++] = q[j];
  } else {
    argv[n++] = "--quic"; /* the node's default QUIC port would collide between replicas */
    argv[n++] = "off";
  }
  argv[n] = NULL;
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid != 0) return pid;
  /* A demo killed outright must not leave its replicas running. */
  if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || getppid() != parent) _exit(127);
  int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600); /* a restart appends */
  if (fd >= 0) {
    dup2(fd, 1);
    dup2(fd, 2);
    close(fd);
  }
  execv("/proc/self/exe", (char *const *)argv);
  _exit(127);
}

/* Waits (bounded) for replica |i|'s |n|th "listening" line. */
static int demo_wait_listening(struct demo *d, int i, int n) {
  char log[96];
  snprintf(log, sizeof log, "%s/node%d.log", d->dir, i);
  for (int t = 0; t < 200; t++) {
    if (demo_log_count(log, "replica plane tcp listening") >= n) return 0;
    if (waitpid(d->pids[i], NULL, WNOHANG) == d->pids[i]) {
      d->pids[i] = 0;
      fprintf(stderr, "vsrbus demo: replica %d exited at start; see %s\n", i, log);
      return -1;
    }
    usleep(25000);
  }
  return 0;
}

/* Starts replicas 2, 1, 0 in that order, each once the previous one listens (lower ids dial
 * the higher ones, so the cluster forms without waiting for a reconnect sweep). */
static int demo_start_nodes(struct demo *d) {
  int ports[2 * DEMO_REPLICAS];
  if (demo_ports(ports, 2 * DEMO_REPLICAS) < 0 ||
      demo_secret(d, d->secret_path, sizeof d->secret_path) < 0) {
    fprintf(stderr, "vsrbus demo: cannot prepare ports or the secret: %s\n", strerror(errno));
    return -1;
  }
  snprintf(d->replicas, sizeof d->replicas, "127.0.0.1:%d,127.0.0.1:%d,127.0.0.1:%d", ports[0],
           ports[1], ports[2]);
  bool quic = strcmp(d->transport, "quic") == 0;
  if (quic && demo_cert(d) < 0) return -1;
  for (int i = 0; i < DEMO_REPLICAS; i++) {
    d->replica_ports[i] = ports[i];
    d->client_ports[i] = ports[DEMO_REPLICAS + i];
    d->quic_ports[i] = quic ? demo_udp_port() : 0;
    if (quic && d->quic_ports[i] < 0) return -1;
    snprintf(d->addrs[i], sizeof d->addrs[i], "127.0.0.1:%d",
             quic ? d->quic_ports[i] : d->client_ports[i]);
  }
  snprintf(d->primary, sizeof d->primary, "%s", d->addrs[0]);
  d->nodes = DEMO_REPLICAS;
  for (int i = DEMO_REPLICAS - 1; i >= 0; i--) {
    d->pids[i] = demo_spawn(d, i);
    if (d->pids[i] < 0 || demo_wait_listening(d, i, 1) < 0) return -1;
  }
  /* Clients once every replica is normal (a fresh cluster: view 0), so that none starts behind
   * and has to catch up from the others' logs (bounded: then clients start anyway). */
  for (int t = 0; t < 200; t++) {
    int ready = 0;
    for (int i = 0; i < DEMO_REPLICAS; i++) {
      char log[96];
      snprintf(log, sizeof log, "%s/node%d.log", d->dir, i);
      ready += demo_log_count(log, "VSR-VIEW") > 0;
    }
    if (ready == DEMO_REPLICAS) break;
    usleep(25000);
  }
  return 0;
}

/* --kill / --kill-primary-after: SIGKILL by PID, reaped at once. */
static void demo_kill(struct demo *d, int i, const char *why) {
  if (d->pids[i] <= 0) return;
  kill(d->pids[i], SIGKILL);
  waitpid(d->pids[i], NULL, 0);
  if (!d->quiet) {
    fprintf(d->out, "  killed replica %d (%s, pid %d) at %.2f s\n", i, why, (int)d->pids[i],
            (double)(vsr_tool_now() - d->measure_ns) / 1e9);
    fflush(d->out);
  }
  d->pids[i] = 0;
  d->killed[i] = true;
  if (!d->kill_ns) {
    d->kill_ns = vsr_tool_now();
    d->kill_view = (uint32_t)i == d->view % DEMO_REPLICAS ? d->view + 1 : d->view;
  }
}

/* --restart: the same replica on the same addresses, memory empty: it recovers. */
static void demo_restart(struct demo *d, int i) {
  if (d->pids[i] > 0) demo_kill(d, i, "to restart it");
  /* Not waited for: the clients' loop runs on (the others redial it, it answers when up). */
  d->pids[i] = demo_spawn(d, i);
  if (d->pids[i] < 0) {
    d->pids[i] = 0;
    return;
  }
  d->killed[i] = false;
  if (!d->quiet) {
    fprintf(d->out, "  restarted replica %d (pid %d) at %.2f s: it recovers from the others\n",
            i, (int)d->pids[i], (double)(vsr_tool_now() - d->measure_ns) / 1e9);
    fflush(d->out);
  }
}

static void demo_events(struct demo *d) {
  int at = d->ticks;
  for (int e = 0; e < d->nev; e++) {
    struct demo_event *ev = &d->ev[e];
    if (ev->done || ev->at_s > at) continue;
    ev->done = true;
    if (ev->kind == 'p') demo_kill(d, (int)(d->view % DEMO_REPLICAS), "the primary");
    else if (ev->kind == 'k') demo_kill(d, ev->replica, "as asked");
    else demo_restart(d, ev->replica);
  }
}

static void demo_stop_nodes(struct demo *d) {
  for (int i = 0; i < DEMO_REPLICAS; i++) {
    if (d->pids[i] > 0) kill(d->pids[i], SIGTERM);
  }
  for (int i = 0; i < DEMO_REPLICAS; i++) {
    if (d->pids[i] <= 0) continue;
    int st = 0;
    for (int t = 0; t < 100 && waitpid(d->pids[i], &st, WNOHANG) == 0; t++) usleep(50000);
    if (waitpid(d->pids[i], &st, WNOHANG) == 0) {
      kill(d->pids[i], SIGKILL);
      waitpid(d->pids[i], &st, 0);
    }
    d->pids[i] = 0;
  }
}

/* A node that died during the run (not killed on purpose) ends the demo. */
static bool demo_nodes_alive(struct demo *d) {
  for (int i = 0; i < DEMO_REPLICAS; i++) {
    if (d->pids[i] > 0 && waitpid(d->pids[i], NULL, WNOHANG) == d->pids[i]) {
      fprintf(stderr, "vsrbus demo: replica %d exited during the run; logs in %s\n", i, d->dir);
      d->pids[i] = 0;
      return false;
    }
  }
  return true;
}

/* ---- measuring ------------------------------------------------------------------------- */

static void demo_ms(char *buf, size_t len, uint64_t ns, bool pad) {
  snprintf(buf, len, pad ? "%7.3f ms" : "%.3f ms", (double)ns / 1e6);
}

static void demo_tick(void *ctx) {
  struct demo *d = ctx;
  uint64_t now = vsr_tool_now();
  if (d->connect == NULL && !demo_nodes_alive(d)) {
    d->failed = true;
    vsr_loop_stop(d->loop);
    return;
  }
  if (!d->measuring) {
    if (d->warm < d->clients) {
      if (now - d->start_ns > DEMO_WARMUP_NS) {
        fprintf(stderr, "vsrbus demo: only %d of %d clients got a Reply within %llu s; "
                "giving up (logs in %s)\n", d->warm, d->clients,
                (unsigned long long)(DEMO_WARMUP_NS / DEMO_SEC), d->connect ? "-" : d->dir);
        d->failed = true;
        vsr_loop_stop(d->loop);
        return;
      }
      vsr_timer_arm(d->tick, DEMO_SEC / 10);
      return;
    }
    if (!d->quiet) {
      fprintf(d->out, "cluster answering after %.2f s (every client got a committed Reply); "
              "measuring for %d s\n", (double)(now - d->start_ns) / 1e9, d->seconds);
    }
    d->measuring = true;
    d->measure_ns = now;
    d->last_reply_ns = 0;
    demo_events(d);
    vsr_timer_arm(d->tick, DEMO_SEC);
    return;
  }
  d->ticks++;
  char p50[32], p99[32];
  demo_ms(p50, sizeof p50, vsri_hist_percentile(&d->sec, 50), true);
  demo_ms(p99, sizeof p99, vsri_hist_percentile(&d->sec, 99), true);
  if (!d->quiet) {
    fprintf(d->out, "[%3ds] %9llu committed req/s   p50 %s   p99 %s   view %u\n", d->ticks,
            (unsigned long long)d->sec_committed, p50, p99, d->view);
    fflush(d->out);
  }
  if (d->ticks < d->seconds) demo_events(d);
  d->total_committed += d->sec_committed;
  d->sec_committed = 0;
  vsri_hist_merge(&d->total, &d->sec);
  vsri_hist_reset(&d->sec);
  if (d->ticks >= d->seconds) {
    d->done = true;
    d->end_ns = now;
    vsr_loop_stop(d->loop);
    return;
  }
  /* Next tick on the second boundary of the measurement, whatever this one cost. */
  uint64_t next = d->measure_ns + (uint64_t)(d->ticks + 1) * DEMO_SEC;
  vsr_timer_arm(d->tick, next > now ? next - now : 1);
}

static void demo_summary(const struct demo *d) {
  double secs = d->ticks ? (double)d->ticks : 1.0;
  char p50[32], p99[32], p999[32], mx[32];
  demo_ms(p50, sizeof p50, vsri_hist_percentile(&d->total, 50), false);
  demo_ms(p99, sizeof p99, vsri_hist_percentile(&d->total, 99), false);
  demo_ms(p999, sizeof p999, vsri_hist_percentile(&d->total, 99.9), false);
  demo_ms(mx, sizeof mx, d->total.max_ns, false);
  fprintf(d->out, "summary: %llu requests committed in %d s = %.0f req/s; latency p50 %s, p99 %s, "
         "p99.9 %s, max %s; %d clients x %d in flight, %u-byte bodies; %llu errors\n",
         (unsigned long long)d->total_committed, d->ticks, (double)d->total_committed / secs,
         p50, p99, p999, mx, d->clients, d->depth, d->size, (unsigned long long)d->errors);
  char gap[32];
  demo_ms(gap, sizeof gap, d->max_gap_ns, false);
  fprintf(d->out, "sessions: %llu requests sent (%llu sent again: timeout or failover), %llu "
          "replies received (%llu late or duplicate, dropped), %llu evictions, %llu failovers; "
          "view changes: %u (view %u, primary %u); longest gap without a commit %s\n",
          (unsigned long long)d->sent, (unsigned long long)d->resent,
          (unsigned long long)d->replied, (unsigned long long)d->late,
          (unsigned long long)d->evicted, (unsigned long long)d->failovers, d->view, d->view,
          d->nodes ? d->view % (uint32_t)d->nodes : 0, gap);
  if (d->kill_ns && d->kill_ns > d->measure_ns && d->end_ns > d->kill_ns) {
    char b99[32], a99[32];
    demo_ms(b99, sizeof b99, vsri_hist_percentile(&d->before, 99), false);
    demo_ms(a99, sizeof a99, vsri_hist_percentile(&d->after, 99), false);
    double bs = (double)(d->kill_ns - d->measure_ns) / 1e9;
    double as = (double)(d->end_ns - d->kill_ns) / 1e9;
    fprintf(d->out, "failover: before the kill %.0f req/s, p99 %s; after it %.0f req/s, p99 %s "
            "(gap included); first commit %.0f ms after the kill\n", (double)d->before_n / bs,
            b99, (double)d->after_n / as, a99,
            d->recovered_ns ? (double)(d->recovered_ns - d->kill_ns) / 1e6 : -1.0);
  }
}

/* The count written just before |label| in a node's report line (0 if absent). */
static uint64_t demo_count_before(const char *line, const char *label) {
  const char *at = strstr(line, label);
  if (!at) return 0;
  const char *p = at;
  while (p > line && p[-1] == ' ') p--;
  while (p > line && p[-1] >= '0' && p[-1] <= '9') p--;
  return strtoull(p, NULL, 10);
}

/* Prints each node's own account (its last lines) once it stopped, then the drops they
 * counted, summed: frames the replicas' buses refused or dropped and Requests the primary
 * refused. Each is also in the node's log (VSR-DROP lines). */
static void demo_node_reports(const struct demo *d) {
  uint64_t full = 0, down = 0, closed = 0, pipeline = 0, dups = 0;
  for (int i = 0; i < DEMO_REPLICAS; i++) {
    char path[96], line[1024];
    snprintf(path, sizeof path, "%s/node%d.log", d->dir, i);
    FILE *f = fopen(path, "r");
    if (!f) continue;
    while (fgets(line, sizeof line, f)) {
      if (strstr(line, "vsrbus node: replica") && strstr(line, "view changes")) {
        fprintf(d->out, "  %s", line + strlen("vsrbus node: "));
        dups += demo_count_before(line, " duplicates answered from the table");
      }
      if (strstr(line, "vsrbus node: replica") && strstr(line, "ops committed")) {
        fprintf(d->out, "  %s", line + strlen("vsrbus node: "));
        full += demo_count_before(line, " sends refused (queue full)");
        down += demo_count_before(line, " sends refused (not connected)");
        closed += demo_count_before(line, " dropped at close");
        pipeline += demo_count_before(line, " dropped (pipeline full)");
      }
    }
    fclose(f);
  }
  fprintf(d->out, "drops: %llu frames (%llu refused: queue full, %llu refused: not connected, "
          "%llu queued at close), %llu requests refused (pipeline full); %llu client errors\n",
          (unsigned long long)(full + down + closed), (unsigned long long)full,
          (unsigned long long)down, (unsigned long long)closed, (unsigned long long)pipeline,
          (unsigned long long)d->errors);
  fprintf(d->out, "client table: %llu duplicates answered from the table (summed over the "
          "replicas)\n", (unsigned long long)dups);
}

/* ---- command --------------------------------------------------------------------------- */

static int demo_parse(struct demo *d, int argc, char **argv) {
  static const struct option longopts[] = {
      {"seconds", required_argument, 0, 's'}, {"clients", required_argument, 0, 'c'},
      {"size", required_argument, 0, 'z'},    {"depth", required_argument, 0, 'd'},
      {"connect", required_argument, 0, 'a'}, {"cluster", required_argument, 0, 'n'},
      {"io", required_argument, 0, 'i'},      {"keep", no_argument, 0, 'k'},
      {"transport", required_argument, 0, 't'}, {"csv", no_argument, 0, 'C'},
      {"system", required_argument, 0, 'y'},  {"quiet", no_argument, 0, 'q'},
      {"kill", required_argument, 0, 'K'},   {"restart", required_argument, 0, 'R'},
      {"kill-primary-after", required_argument, 0, 'P'},
      {"primary-timeout-ms", required_argument, 0, 'T'},
      {"dump-commits", no_argument, 0, 'D'},
      {"help", no_argument, 0, 'h'},          {0, 0, 0, 0},
  };
  long v;
  int ch;
  optind = 1;
  while ((ch = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
    char *end = NULL;
    v = optarg ? strtol(optarg, &end, 10) : 0;
    bool num = optarg && *optarg && end && !*end;
    switch (ch) {
    case 's': if (!num || v < 1 || v > 86400) return 2; d->seconds = (int)v; break;
    case 'c': if (!num || v < 1 || v > 1000) return 2; d->clients = (int)v; break;
    case 'z': if (!num || v < 0 || v > (1 << 20)) return 2; d->size = (uint32_t)v; break;
    case 'd': if (!num || v < 1 || v > DEMO_DEPTH_MAX) return 2; d->depth = (int)v; break;
    case 'a': d->connect = optarg; break;
    case 'n': d->cluster_name = optarg; break;
    case 'i': d->io = optarg; break;
    case 'k': d->keep = true; break;
    case 't': d->transport = optarg; break;
    case 'C': d->csv = true; break;
    case 'y': d->system = optarg; break;
    case 'q': d->quiet = true; break;
    case 'K':
    case 'R': {
      int r = -1, at = -1;
      char tail = 0;
      if (d->nev >= DEMO_EVENTS_MAX || sscanf(optarg, "%d@%d%c", &r, &at, &tail) != 2 || r < 0 ||
          r >= DEMO_REPLICAS || at < 0) {
        return 2;
      }
      d->ev[d->nev++] =
          (struct demo_event){.kind = ch == 'K' ? 'k' : 'r', .replica = r, .at_s = at};
      break;
    }
    case 'P':
      if (!num || v < 0 || v > 86400 || d->nev >= DEMO_EVENTS_MAX) return 2;
      d->ev[d->nev++] = (struct demo_event){.kind = 'p', .replica = -1, .at_s = (int)v};
      break;
    case 'T': if (!num || v < 10 || v > 60000) return 2; d->primary_timeout_ms = (int)v; break;
    case 'D': d->dump = true; break;
    case 'h': demo_usage(stdout); return 1;
    default: return 2;
    }
  }
  if (optind < argc || d->clients * d->depth > DEMO_INFLIGHT_MAX) return 2;
  bool quic = strcmp(d->transport, "quic") == 0;
  if (!quic && strcmp(d->transport, "tcp") != 0) return 2;
  if (quic && d->connect) {
    fprintf(stderr, "vsrbus demo: --transport quic needs the demo's own cluster (no --connect)\n");
    return 2;
  }
  if (d->connect && (d->nev > 0 || d->dump)) {
    fprintf(stderr, "vsrbus demo: --kill, --restart, --kill-primary-after and --dump-commits "
            "need the demo's own cluster (no --connect)\n");
    return 2;
  }
  if (d->dump) d->keep = true;
  return 0;
}

static int demo_setup(struct demo *d) {
  struct vsr_loop_options lo;
  vsr_loop_options_default(&lo);
  if (d->io && strcmp(d->io, "epoll") == 0) lo.backend = VSR_IO_EPOLL;
  else if (d->io && strcmp(d->io, "uring") == 0) lo.backend = VSR_IO_URING;
  int err = vsr_loop_new(&d->loop, &lo);
  if (err) {
    fprintf(stderr, "vsrbus demo: cannot create the loop: %s\n", vsr_strerror(err));
    return -1;
  }
  d->cl = calloc((size_t)d->clients, sizeof *d->cl);
  if (!d->cl || vsr_timer_new(&d->tick, d->loop, demo_tick, d) != 0 ||
      vsr_timer_new(&d->watch, d->loop, demo_watch, d) != 0) {
    return -1;
  }
  /* Four primary timeouts: a view change fits in it, a slow second under load does not send
   * every client elsewhere (each failover resends its requests in flight). */
  d->request_timeout_ns = 4ull * (uint64_t)d->primary_timeout_ms * DEMO_MS;
  uint64_t salt = (uint64_t)getpid() << 20;
  for (int i = 0; i < d->clients; i++) {
    struct demo_client *k = &d->cl[i];
    k->d = d;
    k->id = (vsr_u128){salt + (uint64_t)i + 1, 0xde40};
    k->next_request = 1;
    if (vsr_timer_new(&k->retry, d->loop, demo_retry, k) != 0) return -1;
  }
  return 0;
}

static void demo_teardown(struct demo *d) {
  for (int i = 0; d->cl && i < d->clients; i++) {
    vsr_client_del(d->cl[i].c);
    if (d->cl[i].retry) vsr_timer_del(d->cl[i].retry);
  }
  /* Let the closes finish before the loop goes. */
  for (int i = 0; d->loop && i < 100 && vsr_loop_run_once(d->loop, 0) > 0; i++) {
  }
  if (d->tick) vsr_timer_del(d->tick);
  if (d->watch) vsr_timer_del(d->watch);
  free(d->cl);
  if (d->loop) vsr_loop_del(d->loop);
}

static void demo_cleanup_dir(const struct demo *d) {
  char path[96];
  const char *names[] = {"secret",        "node0.log",     "node1.log",     "node2.log",
                         "cert.pem",      "key.pem",       "commits.0.txt", "commits.1.txt",
                         "commits.2.txt", "acks.txt"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    snprintf(path, sizeof path, "%s/%s", d->dir, names[i]);
    unlink(path);
  }
  rmdir(d->dir);
}

static int demo_run(struct demo *d) {
  if (!d->connect) {
    const char *tmp = getenv("TMPDIR");
    snprintf(d->dir, sizeof d->dir, "%s/vsrbus-demo.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(d->dir)) {
      fprintf(stderr, "vsrbus demo: mkdtemp: %s\n", strerror(errno));
      return 1;
    }
    if (demo_start_nodes(d) < 0) return 1;
  } else {
    snprintf(d->primary, sizeof d->primary, "%s", d->connect);
    snprintf(d->addrs[0], sizeof d->addrs[0], "%s", d->connect);
    d->nodes = 1;
  }
  if (d->dump) {
    char path[96];
    snprintf(path, sizeof path, "%s/acks.txt", d->dir);
    d->acks = fopen(path, "w");
    if (!d->acks) {
      fprintf(stderr, "vsrbus demo: %s: %s\n", path, strerror(errno));
      return 1;
    }
  }
  if (!d->quiet) {
    fprintf(d->out, "vsrbus demo: %s, clients on %s %s%s; %d clients x %d in flight, "
            "%u-byte requests, io %s; primary timeout %d ms\n",
            d->connect ? "existing cluster" : "3 replicas on 127.0.0.1", d->transport, d->primary,
            d->connect ? "" : " (replica 0; every replica serves clients)", d->clients, d->depth,
            d->size, vsr_loop_backend(d->loop), d->primary_timeout_ms);
    fflush(d->out);
  }
  d->start_ns = vsr_tool_now();
  for (int i = 0; i < d->clients; i++) demo_client_start(&d->cl[i]);
  vsr_timer_arm(d->tick, DEMO_SEC / 10);
  vsr_timer_arm(d->watch, DEMO_WATCH_NS);
  demo_signal_target = d;
  signal(SIGINT, demo_on_signal);
  signal(SIGTERM, demo_on_signal);
  signal(SIGPIPE, SIG_IGN);
  if (d->csv) alarm((unsigned)d->seconds + 60); /* a bound for `vsrbus bench` */
  signal(SIGALRM, demo_on_signal);
  vsr_loop_run(d->loop);
  alarm(0);
  d->done = true;
  if (!d->end_ns) d->end_ns = vsr_tool_now();
  if (d->acks) {
    fclose(d->acks);
    d->acks = NULL;
  }
  d->primary_hwm_kib = d->pids[0] > 0 ? demo_status_kib(d->pids[0], "VmHWM:") : 0;
  if (d->ticks > 0 && !d->quiet) demo_summary(d);
  return d->failed || d->total_committed == 0 ? 1 : 0;
}

/* One row in the `vsrbus bench` format: msgs_per_s = committed requests per second, latency
 * = request round trips, rss_kib = the primary's peak RSS; allocations are not counted. */
static void demo_csv_row(const struct demo *d) {
  double secs = d->ticks ? (double)d->ticks : 1.0, rps = (double)d->total_committed / secs;
  uint32_t frame = VSR_HEADER_SIZE + d->size;
  printf("%s,%s,pipeline,%u,%d,%.0f,%.1f,%.1f,%.1f,%.1f,", d->system, d->transport, frame,
         d->clients, rps, rps * frame / 1e6,
         (double)vsri_hist_percentile(&d->total, 50) / 1e3,
         (double)vsri_hist_percentile(&d->total, 99) / 1e3,
         (double)vsri_hist_percentile(&d->total, 99.9) / 1e3);
  if (d->primary_hwm_kib) printf("%llu", (unsigned long long)d->primary_hwm_kib);
  printf(",\n");
  fflush(stdout);
}

/* After a failed --csv run the logs go to stderr (the temp dir is removed). */
static void demo_dump_logs(const struct demo *d) {
  for (int i = 0; i < DEMO_REPLICAS; i++) {
    char path[96], line[512];
    snprintf(path, sizeof path, "%s/node%d.log", d->dir, i);
    FILE *f = fopen(path, "r");
    for (int n = 0; f && n < 40 && fgets(line, sizeof line, f); n++) {
      fprintf(stderr, "  node%d: %s", i, line);
    }
    if (f) fclose(f);
  }
}

int vsr_cmd_demo(int argc, char **argv) {
  struct demo *d = calloc(1, sizeof *d); /* two histograms: keep them off the stack */
  if (!d) return 1;
  d->seconds = 10;
  d->clients = 32;
  d->depth = 1;
  d->size = 256;
  d->cluster_name = "vsrbus-demo";
  d->transport = "tcp";
  d->system = "vsrbus";
  d->primary_timeout_ms = 500;
  int rc = demo_parse(d, argc, argv);
  if (rc) {
    if (rc == 2) demo_usage(stderr);
    free(d);
    return rc == 1 ? 0 : 2;
  }
  d->out = d->csv ? stderr : stdout;
  d->cluster = vsr_cluster_id(d->cluster_name);
  vsri_hist_init(&d->sec);
  vsri_hist_init(&d->total);
  vsri_hist_init(&d->before);
  vsri_hist_init(&d->after);
  rc = demo_setup(d) < 0 ? 1 : demo_run(d);
  demo_teardown(d);
  if (!d->connect && d->dir[0]) {
    demo_stop_nodes(d);
    if (!d->quiet) demo_node_reports(d);
    if (rc && d->csv) demo_dump_logs(d);
    if (d->keep || (rc && !d->csv)) fprintf(d->out, "logs and secret kept in %s\n", d->dir);
    else demo_cleanup_dir(d);
  }
  if (rc == 0 && d->csv) demo_csv_row(d);
  free(d);
  return rc;
}
