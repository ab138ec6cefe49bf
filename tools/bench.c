/* `vsrbus bench`: frames through vsrbus, measured the way bench/baselines measure the
 * alternatives. fork(): the child runs a node (a bus; it counts frames for tput, echoes them for
 * lat / echo), the parent runs the load (N clients on one loop). Throughput is measured at
 * the receiver, latency at the client with an allocation-free histogram. --mode pipeline runs
 * the 3-replica cluster of `vsrbus demo` instead (committed requests/s). One CSV row:
 * system,transport,mode,frame_bytes,conns,msgs_per_s,mb_per_s,p50_us,p99_us,p999_us,rss_kib,
 * allocs_per_msg */
#include <fcntl.h>
#include <getopt.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cmds.h"
#include "io/io.h"
#include "io/runtime.h"
#include "sm.h"
#include "util/hist.h"
#include "vsrbus/vsrbus.h"

#define BENCH_POOL_BYTES (64u << 20) /* distinct frame memory the sender cycles through */
#define BENCH_POOL_FRAMES_MAX 256

struct bench_cfg {
  const char *transport, *mode, *system;
  uint32_t size, conns, inflight;
  uint32_t batch; /* client max_batch (0: the SDK default) */
  uint32_t shards; /* the node's vsr_bus_options.shards (default 1) */
  double seconds;
  bool header, quiet;
  bool io_stats; /* --io-stats: the io layer's counters of both ends on stderr */
  bool conns_set, size_set; /* pipeline: otherwise the demo's 32 clients, 256-byte bodies */
  const char *node_netns, *node_addr; /* bench/netns.sh: the node's namespace and IPv4 */
  const char *batch_max; /* pipeline: the nodes' --prepare-batch (NULL: their default, 64) */
};

/* What the node reports back through the pipe at the end. */
struct bench_result {
  uint64_t frames, bytes;
  uint64_t first_ns, last_ns;    /* receive times of the first and last counted frame */
  uint64_t allocs_window, frames_window; /* allocations during the steady window */
  uint64_t rss_kib, rss_idle_kib; /* at the end; after the listener came up */
  char addr[64];
  struct vsri_io_stats io; /* the node's io layer, whole run (--io-stats) */
};

static uint64_t bench_rss_kib(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  uint64_t kib = 0;
  while (f && fgets(line, sizeof line, f)) {
    if (sscanf(line, "VmRSS: %lu", &kib) == 1) break;
  }
  if (f) fclose(f);
  return kib;
}

/* ---- the node (child) ------------------------------------------------------------------- */

struct bench_node {
  struct bench_cfg *cfg;
  struct vsr_bus *bus;
  struct bench_result r;
  uint64_t clients_seen, clients_lost, warm_allocs, warm_frames;
  bool warm;
  bool echo; /* lat / echo: send each frame back */
};

static void node_on_message(void *user, struct vsr_bus *bus, enum vsr_plane plane, uint64_t peer,
                            struct vsr_msg *msg) {
  (void)plane;
  struct bench_node *n = user;
  uint64_t now = vsr_loop_now(vsr_bus_loop(bus));
  if (n->r.frames == 0) n->r.first_ns = now;
  n->r.last_ns = now;
  n->r.frames++;
  n->r.bytes += msg->size;
  /* The steady window starts after a quarter second of traffic. */
  if (!n->warm && now - n->r.first_ns > 250000000ull) {
    n->warm = true;
    n->warm_allocs = vsr_alloc_count();
    n->warm_frames = n->r.frames;
  }
  if (n->echo) vsr_bus_send_to_client(bus, peer, msg);
}

static void node_on_peer(void *user, struct vsr_bus *bus, const struct vsr_peer_event *ev) {
  struct bench_node *n = user;
  if (ev->kind == VSR_PEER_CONNECTED) n->clients_seen++;
  if (ev->kind == VSR_PEER_LOST && ++n->clients_lost == n->cfg->conns) {
    vsr_loop_stop(vsr_bus_loop(bus));
  }
}

/* --node-netns NAME: the node (this child) moves into the named network namespace before it
 * makes any socket; the load stays where the process was started. */
static int bench_enter_netns(const char *name) {
  char path[256];
  snprintf(path, sizeof path, "/run/netns/%s", name);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  int rc = fd >= 0 ? setns(fd, CLONE_NEWNET) : -1;
  if (rc != 0) fprintf(stderr, "vsrbus bench: node: network namespace %s: %m\n", name);
  if (fd >= 0) close(fd);
  return rc;
}

static int bench_node_main(struct bench_cfg *cfg, int out_fd, int stop_fd) {
  struct bench_node n = {.cfg = cfg,
                         .echo = !strcmp(cfg->mode, "lat") || !strcmp(cfg->mode, "echo")};
  struct vsr_bus_options o;
  vsr_bus_options_default(&o);
  if (cfg->node_netns && bench_enter_netns(cfg->node_netns) != 0) return 1;
  char any_buf[64];
  snprintf(any_buf, sizeof any_buf, "%s:0", cfg->node_addr ? cfg->node_addr : "127.0.0.1");
  const char *t = cfg->transport, *any = any_buf;
  o.client_tcp_addr = strcmp(t, "tcp") == 0 ? any : NULL;
  o.quic.addr = strcmp(t, "quic") == 0 ? any : NULL;
  o.tls.addr = strcmp(t, "tls") == 0 ? any : NULL;
  o.ws.addr = strcmp(t, "ws") == 0 ? any : NULL;
  o.wss.addr = strcmp(t, "wss") == 0 ? any : NULL;
  /* Echo modes queue up to inflight frames per client; idle and tput keep the default. */
  if (n.echo) {
    o.peer_queue_capacity = 4096;
    o.peer_queue_bytes_max = 0; /* up to 1000 frames of 1 MiB in flight by design */
  }
  /* Sized for the load like a deployment would be: every connection can hold one partly
   * received frame of each class; otherwise the 64 KiB class keeps growing slowly into the
   * measured window with 64 connections of 16 KiB frames (a few allocations per 10^5 frames). */
  o.loop_options.pool.prealloc[0] = 4096;
  if (strcmp(cfg->mode, "idle") != 0) {
    uint32_t want = 2 * cfg->conns + 32;
    o.loop_options.pool.prealloc[1] = want < 256 ? want : 256; /* 256: the class's free_max */
  }
  o.shards = cfg->shards;
  struct vsr_bus_callbacks cb = {.on_message = node_on_message, .on_peer_event = node_on_peer};
  int err = vsr_bus_new(&n.bus, &o, &cb, &n);
  if (err) {
    fprintf(stderr, "vsrbus bench: node: %s\n", vsr_strerror(err));
    return 1;
  }
  vsr_bus_listen_addr(n.bus, t, n.r.addr, sizeof n.r.addr);
  n.r.rss_idle_kib = bench_rss_kib();
  if (write(out_fd, &n.r, sizeof n.r) != sizeof n.r) return 1;
  struct vsr_loop *loop = vsr_bus_loop(n.bus);
  /* Runs until every client is gone, or the parent closes stop_fd (idle mode). */
  while (n.clients_lost < cfg->conns || n.clients_seen < cfg->conns) {
    vsr_loop_run_once(loop, 50000000);
    char c;
    if (!strcmp(cfg->mode, "idle") && read(stop_fd, &c, 1) == 0) break; /* parent closed it */
  }
  n.r.rss_kib = bench_rss_kib();
  vsri_io_stats(vsr_bus_loop(n.bus)->io, &n.r.io);
  if (n.warm) {
    n.r.allocs_window = vsr_alloc_count() - n.warm_allocs;
    n.r.frames_window = n.r.frames - n.warm_frames;
  }
  vsr_bus_shutdown(n.bus, 1000000000ull);
  vsr_bus_del(n.bus);
  return write(out_fd, &n.r, sizeof n.r) == sizeof n.r ? 0 : 1;
}

/* ---- the load (parent) ------------------------------------------------------------------ */

struct bench_conn {
  struct bench_load *load;
  struct vsr_client *c;
  uint32_t inflight;
};

struct bench_load {
  struct bench_cfg *cfg;
  struct vsr_loop *loop;
  struct vsr_msg **frames; /* distinct frames cycled through */
  uint32_t nframes, next;
  uint64_t sent, received, connected, t_end, t_warm;
  struct vsri_hist hist;
  struct bench_conn *conns;
};

static struct vsr_msg *bench_next_frame(struct bench_load *l) {
  struct vsr_msg *m = l->frames[l->next];
  l->next = (l->next + 1) % l->nframes;
  return m;
}

/* lat / echo: each frame carries its send time; the echo comes back with it. */
static void bench_send_timed(struct bench_load *l, struct bench_conn *bc) {
  struct vsr_msg *m = bench_next_frame(l);
  if (vsr_msg_refs(m) > 1) { /* still queued elsewhere: take a private copy rather than race it */
    m = vsr_client_msg_new(bc->c, l->cfg->size);
    memcpy(m->data, l->frames[0]->data, l->cfg->size);
  } else {
    vsr_msg_ref(m);
  }
  vsr_put_u64(m->data + 160, vsr_tool_now()); /* Request.timestamp */
  if (vsr_client_send(bc->c, m) == 0) {
    bc->inflight++;
    l->sent++;
  }
  vsr_msg_unref(m);
}

static void load_on_message(void *user, struct vsr_client *c, struct vsr_msg *msg) {
  (void)c;
  struct bench_conn *bc = user;
  struct bench_load *l = bc->load;
  uint64_t now = vsr_tool_now();
  l->received++;
  bc->inflight--;
  if (now >= l->t_warm) vsri_hist_record(&l->hist, now - vsr_get_u64(msg->data + 160));
  if (now < l->t_end) bench_send_timed(l, bc);
}

static void load_on_state(void *user, struct vsr_client *c, int status) {
  (void)c;
  struct bench_conn *bc = user;
  if (status == 0) bc->load->connected++;
  else if (vsr_tool_now() < bc->load->t_end) {
    fprintf(stderr, "vsrbus bench: connection lost: %s\n", vsr_strerror(status));
  }
}

static int bench_make_frames(struct bench_load *l) {
  uint32_t size = l->cfg->size;
  l->nframes = BENCH_POOL_BYTES / size;
  if (l->nframes > BENCH_POOL_FRAMES_MAX) l->nframes = BENCH_POOL_FRAMES_MAX;
  if (l->nframes < 2) l->nframes = 2;
  l->frames = calloc(l->nframes, sizeof *l->frames);
  for (uint32_t i = 0; l->frames && i < l->nframes; i++) {
    struct vsr_msg *m = vsr_pool_get_zeroed(vsr_loop_pool(l->loop), size);
    if (!m) return -1;
    struct vsr_request_header *rq = (struct vsr_request_header *)m->data;
    vsr_header_init(m->data, VSR_CMD_REQUEST, size);
    rq->client = vsr_u128_from_u64(0xbe7c4 + i);
    rq->operation = VSR_OP_SEND_MESSAGES;
    rq->session = 1;
    rq->request = i + 1;
    memset(m->data + VSR_HEADER_SIZE, (int)(0x5a ^ i), size - VSR_HEADER_SIZE);
    l->frames[i] = m;
  }
  return l->frames ? 0 : -1;
}

/* tput: keep every client's queue topped up with frames (by reference, no copies).
 * Returns the number of frames queued. */
static uint32_t bench_top_up(struct bench_load *l) {
  uint32_t added = 0;
  for (uint32_t i = 0; i < l->cfg->conns; i++) {
    struct vsr_client *c = l->conns[i].c;
    if (vsr_client_state(c) != 1) continue;
    while (vsr_client_queued(c) < 1024) {
      if (vsr_client_send(c, bench_next_frame(l)) != 0) break;
      l->sent++;
      added++;
    }
  }
  return added;
}

static void bench_progress(struct bench_load *l, uint64_t start, uint64_t *last_print) {
  uint64_t now = vsr_tool_now();
  /* The clock first: isatty() is a syscall (an ioctl), once per loop turn otherwise. */
  if (l->cfg->quiet || now - *last_print < 1000000000ull || !isatty(2)) return;
  *last_print = now;
  fprintf(stderr, "\r  %.0f s: %llu frames sent, %llu echoed   ", (double)(now - start) / 1e9,
          (unsigned long long)l->sent, (unsigned long long)l->received);
}

static int bench_load_main(struct bench_cfg *cfg, const char *addr, struct bench_load *l) {
  struct vsr_loop_options lo;
  vsr_loop_options_default(&lo);
  lo.pool.prealloc[0] = 256;
  if (vsr_loop_new(&l->loop, &lo) != 0 || bench_make_frames(l) != 0) return 1;
  struct vsr_client_options o;
  vsr_client_options_default(&o);
  o.transport = cfg->transport;
  o.addr = addr;
  o.quic.insecure = true;
  o.tls.insecure = true; /* tls / wss: loopback, the node's fresh self-signed certificate */
  /* Pipelined load on one stream, in order (the node allows 1 stream per client by default, so
   * the per-request model would carry one frame per round trip). */
  o.quic.streams = VSR_QUIC_STREAMS_LONG;
  o.queue_capacity = 4096;
  if (cfg->batch) o.max_batch = cfg->batch;
  bool tput = strcmp(cfg->mode, "tput") == 0;
  struct vsr_client_callbacks cb = {.on_message = tput ? NULL : load_on_message,
                                    .on_state = load_on_state};
  l->conns = calloc(cfg->conns, sizeof *l->conns);
  for (uint32_t i = 0; i < cfg->conns; i++) {
    l->conns[i].load = l;
    if (vsr_client_new(&l->conns[i].c, l->loop, &o, &cb, &l->conns[i]) != 0) return 1;
  }
  uint64_t start = vsr_tool_now(), deadline = start + 10000000000ull, last_print = start;
  l->t_end = UINT64_MAX;
  while (l->connected < cfg->conns && vsr_tool_now() < deadline) vsr_loop_run_once(l->loop, 1000000);
  if (l->connected < cfg->conns) {
    fprintf(stderr, "vsrbus bench: only %llu of %u connections came up\n",
            (unsigned long long)l->connected, cfg->conns);
    return 1;
  }
  start = vsr_tool_now();
  l->t_end = start + (uint64_t)(cfg->seconds * 1e9);
  l->t_warm = start + (uint64_t)(cfg->seconds * 1e9 * 0.1);
  if (!tput) {
    for (uint32_t i = 0; i < cfg->conns; i++) {
      for (uint32_t k = 0; k < cfg->inflight; k++) bench_send_timed(l, &l->conns[i]);
    }
  }
  while (vsr_tool_now() < l->t_end) {
    /* Queues full: wait for the kernel to take more (a blocking sender, not a spinning one). */
    uint32_t added = tput ? bench_top_up(l) : 0;
    vsr_loop_run_once(l->loop, added ? 0 : 1000000);
    bench_progress(l, start, &last_print);
  }
  if (!cfg->quiet && isatty(2)) fprintf(stderr, "\r%60s\r", "");
  /* Let queued frames go out (tput: they count at the receiver), then hang up. */
  for (uint32_t i = 0; i < cfg->conns; i++) vsr_client_flush(l->conns[i].c, 0);
  uint64_t drain_end = vsr_tool_now() + 2000000000ull;
  bool queued = true;
  while (queued && vsr_tool_now() < drain_end) {
    vsr_loop_run_once(l->loop, 1000000);
    queued = false;
    for (uint32_t i = 0; i < cfg->conns; i++) queued |= vsr_client_queued(l->conns[i].c) > 0;
  }
  for (uint32_t i = 0; i < cfg->conns; i++) vsr_client_del(l->conns[i].c);
  for (int i = 0; i < 100; i++) vsr_loop_run_once(l->loop, 1000000);
  return 0;
}

/* ---- driver ----------------------------------------------------------------------------- */

static void bench_usage(FILE *f) {
  fprintf(f,
          "usage: vsrbus bench [--transport tcp|quic|tls|ws|wss]\n"
          "                    [--mode tput|lat|echo|pipeline|idle]\n"
          "                    [--size BYTES] [--conns N] [--seconds S] [--inflight K]\n"
          "                    [--batch FRAMES] [--system NAME] [--header] [--quiet]\n"
          "                    [--node-netns NAME] [--node-addr IPV4] [--shards N]\n"
          "                    [--io-stats]\n"
          "  --shards N  the node's TCP and QUIC client shards (loops on threads), default 1\n"
          "  --io-stats  also print the io counters of the node and the load (stderr): reads\n"
          "              per frame, bytes per read, kernel entries per frame\n"
          "  tput      clients send as fast as they can; the node counts (receiver side)\n"
          "  lat       one frame in flight per connection, echoed: round-trip percentiles\n"
          "  echo      K (--inflight) frames in flight per connection, echoed\n"
          "  pipeline  the 3-replica normal case of `vsrbus demo` (--conns clients, default 32,\n"
          "            --inflight requests each, --size frame bytes, default 512): committed\n"
          "            requests/s and request round trips; --prepare-batch N: the nodes'\n"
          "            Requests per Prepare (default 64, 1: one each)\n"
          "  idle      N idle connections: node memory per connection (rss_kib column)\n"
          "  --node-netns NAME  the node runs in network namespace NAME (root; bench/netns.sh)\n"
          "  --node-addr IPV4   the node listens on IPV4 (default 127.0.0.1)\n"
          "Prints one CSV row: system,transport,mode,frame_bytes,conns,msgs_per_s,mb_per_s,\n"
          "p50_us,p99_us,p999_us,rss_kib,allocs_per_msg\n");
}

static int bench_parse(struct bench_cfg *cfg, int argc, char **argv) {
  static const struct option longopts[] = {
      {"transport", required_argument, 0, 't'}, {"mode", required_argument, 0, 'm'},
      {"size", required_argument, 0, 's'},      {"conns", required_argument, 0, 'c'},
      {"seconds", required_argument, 0, 'S'},   {"inflight", required_argument, 0, 'k'},
      {"system", required_argument, 0, 'y'},    {"header", no_argument, 0, 'H'},
      {"quiet", no_argument, 0, 'q'},           {"help", no_argument, 0, 'h'},
      {"batch", required_argument, 0, 'b'},     {"node-netns", required_argument, 0, 'N'},
      {"node-addr", required_argument, 0, 'A'}, {"shards", required_argument, 0, 'n'},
      {"io-stats", no_argument, 0, 'I'},        {"prepare-batch", required_argument, 0, 'M'},
      {0, 0, 0, 0},
  };
  *cfg = (struct bench_cfg){.transport = "tcp", .mode = "tput", .system = "vsrbus",
                            .size = 256, .conns = 1, .inflight = 1, .seconds = 2, .shards = 1};
  int ch;
  optind = 1;
  while ((ch = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
    switch (ch) {
    case 't': cfg->transport = optarg; break;
    case 'm': cfg->mode = optarg; break;
    case 's': cfg->size = (uint32_t)strtoul(optarg, NULL, 0); cfg->size_set = true; break;
    case 'c': cfg->conns = (uint32_t)strtoul(optarg, NULL, 0); cfg->conns_set = true; break;
    case 'S': cfg->seconds = atof(optarg); break;
    case 'k': cfg->inflight = (uint32_t)strtoul(optarg, NULL, 0); break;
    case 'y': cfg->system = optarg; break;
    case 'H': cfg->header = true; break;
    case 'q': cfg->quiet = true; break;
    case 'b': cfg->batch = (uint32_t)strtoul(optarg, NULL, 0); break;
    case 'N': cfg->node_netns = optarg; break;
    case 'A': cfg->node_addr = optarg; break;
    case 'n': cfg->shards = (uint32_t)strtoul(optarg, NULL, 0); break;
    case 'I': cfg->io_stats = true; break;
    case 'M': cfg->batch_max = optarg; break;
    case 'h': bench_usage(stdout); return 1;
    default: bench_usage(stderr); return 2;
    }
  }
  bool mode_ok = !strcmp(cfg->mode, "tput") || !strcmp(cfg->mode, "lat") ||
                 !strcmp(cfg->mode, "echo") || !strcmp(cfg->mode, "pipeline") ||
                 !strcmp(cfg->mode, "idle");
  bool tr_ok = !strcmp(cfg->transport, "tcp") || !strcmp(cfg->transport, "quic") ||
               !strcmp(cfg->transport, "tls") || !strcmp(cfg->transport, "ws") ||
               !strcmp(cfg->transport, "wss");
  if (!strcmp(cfg->mode, "pipeline") && tr_ok) {
    tr_ok = !strcmp(cfg->transport, "tcp") || !strcmp(cfg->transport, "quic"); /* demo's */
  }
  if (!mode_ok || !tr_ok || cfg->size < 256 || cfg->size > (64u << 20) || cfg->conns < 1 ||
      cfg->conns > 100000 || cfg->seconds <= 0 || cfg->seconds > 3600 || cfg->inflight < 1 ||
      optind < argc) {
    bench_usage(stderr);
    return 2;
  }
  if (!strcmp(cfg->mode, "lat")) cfg->inflight = 1;
  if (!strcmp(cfg->mode, "pipeline")) {
    if (!cfg->conns_set) cfg->conns = 32;
    if (!cfg->size_set) cfg->size = 512;
    if (cfg->conns * cfg->inflight > VSR_SM_PIPELINE / 2 ||
        cfg->size > VSR_HEADER_SIZE + (1u << 20)) {
      fprintf(stderr, "vsrbus bench: pipeline: conns x inflight <= %d, size <= 1 MiB + 256\n",
              VSR_SM_PIPELINE / 2);
      return 2;
    }
  }
  return 0;
}

static void bench_row(const struct bench_cfg *cfg, const struct bench_result *r,
                      const struct bench_load *l) {
  double secs = r->last_ns > r->first_ns ? (double)(r->last_ns - r->first_ns) / 1e9 : 0;
  double msgs = secs > 0 ? (double)(r->frames - 1) / secs : 0;
  double mbps = secs > 0 ? (double)r->bytes / secs / 1e6 : 0;
  double apm = r->frames_window ? (double)r->allocs_window / (double)r->frames_window : 0;
  bool idle = !strcmp(cfg->mode, "idle"), lat = !strcmp(cfg->mode, "lat");
  if (cfg->header) {
    printf("system,transport,mode,frame_bytes,conns,msgs_per_s,mb_per_s,p50_us,p99_us,"
           "p999_us,rss_kib,allocs_per_msg\n");
  }
  printf("%s,%s,%s,%u,%u,", cfg->system, cfg->transport, cfg->mode, cfg->size, cfg->conns);
  if (idle) {
    double per = (double)(r->rss_kib - r->rss_idle_kib) / cfg->conns;
    printf(",,,,,%.2f,\n", per);
  } else {
    if (lat) printf(",,"); /* one frame in flight: a rate would only restate the latency */
    else printf("%.0f,%.1f,", msgs, mbps);
    if (lat || !strcmp(cfg->mode, "echo")) {
      printf("%.1f,%.1f,%.1f,", (double)vsri_hist_percentile(&l->hist, 50) / 1e3,
             (double)vsri_hist_percentile(&l->hist, 99) / 1e3,
             (double)vsri_hist_percentile(&l->hist, 99.9) / 1e3);
    } else {
      printf(",,,");
    }
    printf("%lu,%.4f\n", (unsigned long)r->rss_kib, apm);
  }
  fflush(stdout);
  if (!cfg->quiet) {
    fprintf(stderr, "vsrbus bench: %s %s %s %u B x %u conns: %.0f frames/s, %.1f MB/s", cfg->system,
            cfg->transport, cfg->mode, cfg->size, cfg->conns, msgs, mbps);
    if (lat || !strcmp(cfg->mode, "echo")) {
      fprintf(stderr, ", rtt p50 %.1f us p99 %.1f us",
              (double)vsri_hist_percentile(&l->hist, 50) / 1e3,
              (double)vsri_hist_percentile(&l->hist, 99) / 1e3);
    }
    fprintf(stderr, ", node rss %lu KiB, %.4f allocs/frame\n", (unsigned long)r->rss_kib, apm);
  }
}

/* --io-stats: per frame the node received (lat: per round trip), both ends' io counters. */
static void bench_io_stats(const struct bench_result *r, const struct bench_load *l) {
  struct vsri_io_stats ls;
  vsri_io_stats(l->loop->io, &ls);
  const struct vsri_io_stats *ns = &r->io;
  double f = r->frames ? (double)r->frames : 1;
  fprintf(stderr,
          "vsrbus bench: io %s: node %.3f reads/frame, %.0f bytes/read, %.1f%% full, %.3f "
          "enters/frame, %.3f waits/frame; load %.3f enters/frame, %.3f waits/frame "
          "(%llu frames)\n",
          vsr_loop_backend(l->loop), (double)ns->recvs / f,
          ns->recvs ? (double)ns->recv_bytes / (double)ns->recvs : 0,
          ns->recvs ? 100.0 * (double)ns->recv_full / (double)ns->recvs : 0,
          (double)ns->enters / f, (double)ns->waits / f, (double)ls.enters / f,
          (double)ls.waits / f, (unsigned long long)r->frames);
}

/* idle: open the connections, let them settle, and have the node measure its memory. */
static int bench_idle(struct bench_cfg *cfg, const char *addr, struct bench_load *l) {
  struct vsr_loop_options lo;
  vsr_loop_options_default(&lo);
  lo.pool.prealloc[0] = 16;
  lo.pool.prealloc[1] = 0;
  if (vsr_loop_new(&l->loop, &lo) != 0) return 1;
  struct vsr_client_options o;
  vsr_client_options_default(&o);
  o.transport = cfg->transport;
  o.addr = addr;
  o.quic.insecure = true;
  o.tls.insecure = true; /* tls / wss: loopback, the node's fresh self-signed certificate */
  o.queue_capacity = 4;
  struct vsr_client_callbacks cb = {.on_state = load_on_state};
  l->conns = calloc(cfg->conns, sizeof *l->conns);
  l->t_end = UINT64_MAX;
  for (uint32_t i = 0; i < cfg->conns; i++) {
    l->conns[i].load = l;
    if (vsr_client_new(&l->conns[i].c, l->loop, &o, &cb, &l->conns[i]) != 0) return 1;
    if (i % 64 == 63) vsr_loop_run_once(l->loop, 0); /* pace the SYNs a little */
  }
  uint64_t deadline = vsr_tool_now() + 30000000000ull;
  while (l->connected < cfg->conns && vsr_tool_now() < deadline) vsr_loop_run_once(l->loop, 1000000);
  /* Settle: the node has accepted and registered everything. */
  uint64_t settle = vsr_tool_now() + 500000000ull;
  while (vsr_tool_now() < settle) vsr_loop_run_once(l->loop, 1000000);
  return l->connected == cfg->conns ? 0 : 1;
}

/* pipeline: `vsrbus demo --csv` with the bench's figures (it prints the row itself). */
static int bench_pipeline(const struct bench_cfg *cfg) {
  char secs[16], conns[16], body[16], depth[16];
  snprintf(secs, sizeof secs, "%d", (int)(cfg->seconds + 0.999)); /* whole seconds */
  snprintf(conns, sizeof conns, "%u", cfg->conns);
  snprintf(body, sizeof body, "%u", cfg->size - VSR_HEADER_SIZE);
  snprintf(depth, sizeof depth, "%u", cfg->inflight);
  char *argv[20] = {"demo", "--csv", "--system", (char *)cfg->system, "--transport",
                    (char *)cfg->transport, "--seconds", secs, "--clients", conns, "--size", body,
                    "--depth", depth};
  int argc = 14;
  if (cfg->quiet) argv[argc++] = "--quiet";
  if (cfg->batch_max) {
    argv[argc++] = "--prepare-batch";
    argv[argc++] = (char *)cfg->batch_max;
  }
  argv[argc] = NULL;
  if (cfg->header) {
    printf("system,transport,mode,frame_bytes,conns,msgs_per_s,mb_per_s,p50_us,p99_us,"
           "p999_us,rss_kib,allocs_per_msg\n");
    fflush(stdout);
  }
  return vsr_cmd_demo(argc, argv) == 0 ? 0 : 1;
}

/* VSRBUS_IO=uring on a machine without io_uring: exit 77 (skipped) rather than fail. */
static bool bench_backend_missing(void) {
  const char *io = getenv("VSRBUS_IO");
  if (!io || strcmp(io, "uring") != 0) return false;
  struct vsr_loop *loop = NULL;
  if (vsr_loop_new(&loop, NULL) != 0) return true;
  vsr_loop_del(loop);
  return false;
}

int vsr_cmd_bench(int argc, char **argv) {
  struct bench_cfg cfg;
  int rc = bench_parse(&cfg, argc, argv);
  if (rc) return rc == 1 ? 0 : 2;
  if (bench_backend_missing()) {
    fprintf(stderr, "vsrbus bench: VSRBUS_IO=uring but io_uring is unavailable: skipped\n");
    return 77;
  }
  if (!strcmp(cfg.mode, "pipeline")) return bench_pipeline(&cfg);
  signal(SIGPIPE, SIG_IGN);
  int out[2], stop[2];
  if (pipe(out) != 0 || pipe2(stop, O_NONBLOCK) != 0) return 1;
  pid_t pid = fork();
  if (pid < 0) return 1;
  if (pid == 0) {
    close(out[0]);
    close(stop[1]);
    alarm((unsigned)cfg.seconds + 60);
    _exit(bench_node_main(&cfg, out[1], stop[0]));
  }
  close(out[1]);
  close(stop[0]);
  struct bench_result r;
  if (read(out[0], &r, sizeof r) != sizeof r) {
    fprintf(stderr, "vsrbus bench: the node did not start\n");
    waitpid(pid, NULL, 0);
    return 1;
  }
  static struct bench_load l;
  l.cfg = &cfg;
  vsri_hist_init(&l.hist);
  bool idle = !strcmp(cfg.mode, "idle");
  rc = idle ? bench_idle(&cfg, r.addr, &l) : bench_load_main(&cfg, r.addr, &l);
  close(stop[1]); /* idle: the node measures now, with every connection still open */
  ssize_t got = read(out[0], &r, sizeof r);
  if (idle) {
    for (uint32_t i = 0; i < cfg.conns; i++) vsr_client_del(l.conns[i].c);
    for (int i = 0; i < 100; i++) vsr_loop_run_once(l.loop, 1000000);
  }
  int st = 0;
  waitpid(pid, &st, 0);
  if (rc != 0 || got != sizeof r || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
    fprintf(stderr, "vsrbus bench: run failed\n");
    return 1;
  }
  bench_row(&cfg, &r, &l);
  if (cfg.io_stats) bench_io_stats(&r, &l);
  for (uint32_t i = 0; l.frames && i < l.nframes; i++) vsr_msg_unref(l.frames[i]);
  return r.frames > 0 || idle ? 0 : 1;
}
