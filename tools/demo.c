/* `vsrbus demo`: a local 3-replica cluster (three `vsrbus node` processes on 127.0.0.1 sharing
 * a freshly generated secret) and N client connections driving the VSR normal case: Request ->
 * primary -> Prepare to both backups -> PrepareOk -> Reply after a quorum, Commit to the
 * backups. Prints committed requests/s and request latency p50/p99 once a second, then a
 * summary. With --connect ADDR it drives an already running primary instead. With --transport
 * quic the primary also listens for clients on QUIC (a certificate made in the temp dir) and the
 * clients use it. --csv prints one `vsrbus bench` row instead (`bench --mode pipeline`). */
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

struct demo;

struct demo_client {
  struct demo *d;
  struct vsr_client *c;
  struct vsr_timer *retry;
  vsr_u128 id;
  uint64_t next_request; /* request numbers start at 1 */
  uint64_t sent_at[DEMO_DEPTH_MAX];
  uint32_t inflight;
  bool replied; /* at least one Reply: the path through the cluster works */
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
  struct demo_client *cl;
  struct vsr_timer *tick;
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
          "Starts three `vsrbus node` replicas on 127.0.0.1 (replica 0 is the primary) and\n"
          "client connections sending Requests; prints committed requests/s and latency.\n"
          "\n"
          "  --seconds N      measured seconds, default 10\n"
          "  --clients N      client connections, default 32\n"
          "  --size BYTES     request body bytes, default 256\n"
          "  --depth N        requests in flight per client, default 1 (max %d;\n"
          "                   clients x depth at most %d)\n"
          "  --connect ADDR   drive an already running primary instead of starting a cluster\n"
          "  --cluster NAME   cluster name, default vsrbus-demo\n"
          "  --io epoll|uring|auto  I/O backend of the demo and its nodes\n"
          "  --transport tcp|quic   client transport (quic: the primary gets a QUIC listener\n"
          "                   and a fresh self-signed certificate the clients verify)\n"
          "  --csv            print one CSV row (the `vsrbus bench` format) on stdout;\n"
          "                   progress goes to stderr\n"
          "  --system NAME    first CSV column, default vsrbus\n"
          "  --quiet          no per-second lines\n"
          "  --keep           keep the nodes' logs and secret (printed path)\n",
          DEMO_DEPTH_MAX, DEMO_INFLIGHT_MAX);
}

/* ---- clients --------------------------------------------------------------------------- */

static void demo_client_start(struct demo_client *k);

static void demo_send(struct demo_client *k) {
  struct demo *d = k->d;
  struct vsr_msg *m = vsr_client_msg_new(k->c, VSR_HEADER_SIZE + d->size);
  if (!m) {
    d->errors++;
    return;
  }
  struct vsr_request_header *rq = (struct vsr_request_header *)m->data;
  rq->command = VSR_CMD_REQUEST;
  rq->cluster = d->cluster;
  rq->client = k->id;
  rq->request = k->next_request;
  rq->session = 1;
  rq->operation = VSR_OP_SEND_MESSAGES;
  for (uint32_t i = 0; i < d->size; i++) m->data[VSR_HEADER_SIZE + i] = (uint8_t)(i * 7 + 1);
  k->sent_at[k->next_request % DEMO_DEPTH_MAX] = vsr_tool_now();
  if (vsr_client_send(k->c, m) == 0) {
    k->next_request++;
    k->inflight++;
  } else {
    d->errors++;
  }
  vsr_msg_unref(m);
}

static void demo_on_message(void *user, struct vsr_client *c, struct vsr_msg *msg) {
  (void)c;
  struct demo_client *k = user;
  struct demo *d = k->d;
  const struct vsr_reply_header *rp = (const struct vsr_reply_header *)msg->data;
  if (rp->command != VSR_CMD_REPLY || rp->request == 0 || rp->request >= k->next_request) {
    d->errors++;
    return;
  }
  uint64_t lat = vsr_tool_now() - k->sent_at[rp->request % DEMO_DEPTH_MAX];
  k->inflight--;
  if (!k->replied) {
    k->replied = true;
    d->warm++;
  }
  if (d->measuring) {
    d->sec_committed++;
    vsri_hist_record(&d->sec, lat);
  }
  if (!d->done) demo_send(k);
}

static void demo_on_state(void *user, struct vsr_client *c, int status) {
  (void)c;
  struct demo_client *k = user;
  if (status == 0) {
    for (int i = 0; i < k->d->depth; i++) demo_send(k);
    return;
  }
  /* Closed (the primary is not up yet, or went away): start over shortly. */
  if (!k->d->done) vsr_timer_arm(k->retry, DEMO_RETRY_NS);
}

static void demo_retry(void *ctx) {
  struct demo_client *k = ctx;
  vsr_client_del(k->c);
  k->c = NULL;
  demo_client_start(k);
}

static void demo_client_start(struct demo_client *k) {
  struct vsr_client_options o;
  vsr_client_options_default(&o);
  o.addr = k->d->primary;
  o.transport = k->d->transport;
  if (k->d->cert[0]) o.quic.ca_file = k->d->cert;
  /* Pipelined requests, in order, on one stream (the per-request model would carry one request
   * per round trip: the node allows 1 stream per client by default). */
  o.quic.streams = VSR_QUIC_STREAMS_LONG;
  struct vsr_client_callbacks cb = {.on_message = demo_on_message, .on_state = demo_on_state};
  k->inflight = 0;
  if (vsr_client_new(&k->c, k->d->loop, &o, &cb, k) != 0) {
    k->c = NULL;
    vsr_timer_arm(k->retry, DEMO_RETRY_NS);
  }
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

static bool demo_log_has(const char *path, const char *needle) {
  FILE *f = fopen(path, "r");
  if (!f) return false;
  char line[512];
  bool found = false;
  while (!found && fgets(line, sizeof line, f)) found = strstr(line, needle) != NULL;
  fclose(f);
  return found;
}

static pid_t demo_spawn(struct demo *d, int i, const char *replicas, int client_port,
                        const char *secret, const char *log) {
  char idx[8], tcp[32], key[96];
  snprintf(idx, sizeof idx, "%d", i);
  snprintf(tcp, sizeof tcp, "127.0.0.1:%d", client_port);
  snprintf(key, sizeof key, "%s/key.pem", d->dir);
  const char *argv[32] = {"vsrbus", "node", "--cluster", d->cluster_name, "--replica", idx,
                          "--replicas", replicas, "--secret-file", secret, "--tcp", tcp,
                          "--reconnect-ms", "200", "--handshake-grace-ms", "2000"};
  int n = 16;
  if (d->io) {
    argv[n++] = "--io";
    argv[n++] = d->io;
  }
  if (i == 0 && d->cert[0]) { /* only the primary serves clients */
    const char *quic[] = {"--quic", d->primary, "--cert", d->cert, "--key", key};
    for (size_t q = 0; q < sizeof quic / sizeof quic[0]; q++) argv[n++] = quic[q];
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
  int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd >= 0) {
    dup2(fd, 1);
    dup2(fd, 2);
    close(fd);
  }
  execv("/proc/self/exe", (char *const *)argv);
  _exit(127);
}

/* Starts replicas 2, 1, 0 in that order, each once the previous one listens (lower ids dial
 * the higher ones, so the cluster forms without waiting for a reconnect sweep). */
static int demo_start_nodes(struct demo *d) {
  int ports[2 * DEMO_REPLICAS];
  char secret[96], replicas[96], log[96];
  if (demo_ports(ports, 2 * DEMO_REPLICAS) < 0 || demo_secret(d, secret, sizeof secret) < 0) {
    fprintf(stderr, "vsrbus demo: cannot prepare ports or the secret: %s\n", strerror(errno));
    return -1;
  }
  snprintf(replicas, sizeof replicas, "127.0.0.1:%d,127.0.0.1:%d,127.0.0.1:%d", ports[0],
           ports[1], ports[2]);
  snprintf(d->primary, sizeof d->primary, "127.0.0.1:%d", ports[DEMO_REPLICAS]);
  if (strcmp(d->transport, "quic") == 0) {
    int udp = demo_udp_port();
    if (udp < 0 || demo_cert(d) < 0) return -1;
    snprintf(d->primary, sizeof d->primary, "127.0.0.1:%d", udp);
  }
  for (int i = DEMO_REPLICAS - 1; i >= 0; i--) {
    snprintf(log, sizeof log, "%s/node%d.log", d->dir, i);
    d->pids[i] = demo_spawn(d, i, replicas, ports[DEMO_REPLICAS + i], secret, log);
    if (d->pids[i] < 0) return -1;
    for (int t = 0; t < 200 && !demo_log_has(log, "replica plane tcp listening"); t++) {
      if (waitpid(d->pids[i], NULL, WNOHANG) == d->pids[i]) {
        d->pids[i] = 0;
        fprintf(stderr, "vsrbus demo: replica %d exited at start; see %s\n", i, log);
        return -1;
      }
      usleep(25000);
    }
  }
  return 0;
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

/* A node that died during the run ends the demo. */
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
    vsr_timer_arm(d->tick, DEMO_SEC);
    return;
  }
  d->ticks++;
  char p50[32], p99[32];
  demo_ms(p50, sizeof p50, vsri_hist_percentile(&d->sec, 50), true);
  demo_ms(p99, sizeof p99, vsri_hist_percentile(&d->sec, 99), true);
  if (!d->quiet) {
    fprintf(d->out, "[%3ds] %9llu committed req/s   p50 %s   p99 %s\n", d->ticks,
            (unsigned long long)d->sec_committed, p50, p99);
    fflush(d->out);
  }
  d->total_committed += d->sec_committed;
  d->sec_committed = 0;
  vsri_hist_merge(&d->total, &d->sec);
  vsri_hist_reset(&d->sec);
  if (d->ticks >= d->seconds) {
    d->done = true;
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
  uint64_t full = 0, down = 0, closed = 0, pipeline = 0;
  for (int i = 0; i < DEMO_REPLICAS; i++) {
    char path[96], line[1024];
    snprintf(path, sizeof path, "%s/node%d.log", d->dir, i);
    FILE *f = fopen(path, "r");
    if (!f) continue;
    while (fgets(line, sizeof line, f)) {
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
  if (!d->cl || vsr_timer_new(&d->tick, d->loop, demo_tick, d) != 0) return -1;
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
  free(d->cl);
  if (d->loop) vsr_loop_del(d->loop);
}

static void demo_cleanup_dir(const struct demo *d) {
  char path[96];
  const char *names[] = {"secret", "node0.log", "node1.log", "node2.log", "cert.pem", "key.pem"};
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
  }
  if (!d->quiet) {
    fprintf(d->out, "vsrbus demo: %s, primary (replica 0) clients on %s %s; %d clients x %d "
            "in flight, %u-byte requests, io %s\n",
            d->connect ? "existing cluster" : "3 replicas on 127.0.0.1", d->transport, d->primary,
            d->clients, d->depth, d->size, vsr_loop_backend(d->loop));
    fflush(d->out);
  }
  d->start_ns = vsr_tool_now();
  for (int i = 0; i < d->clients; i++) demo_client_start(&d->cl[i]);
  vsr_timer_arm(d->tick, DEMO_SEC / 10);
  demo_signal_target = d;
  signal(SIGINT, demo_on_signal);
  signal(SIGTERM, demo_on_signal);
  signal(SIGPIPE, SIG_IGN);
  if (d->csv) alarm((unsigned)d->seconds + 60); /* a bound for `vsrbus bench` */
  signal(SIGALRM, demo_on_signal);
  vsr_loop_run(d->loop);
  alarm(0);
  d->done = true;
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
