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
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cmds.h"
#include "demo.h"
#include "sm.h"

static struct demo *demo_signal_target;
volatile sig_atomic_t demo_stop_requested;

/* SIGINT / SIGTERM from the start (the nodes' start-up too): the run ends through the normal
 * path, which stops the nodes by PID and deletes --netns namespaces. */
static void demo_on_signal(int sig) {
  demo_stop_requested = 1;
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
          "  --prepare-batch N  the nodes' Requests per Prepare, default the node's (64)\n"
          "  --netns          each replica in a network namespace of its own, the clients in\n"
          "                   another, veth links (MTU 1500) to a bridge in a hub namespace;\n"
          "                   addresses 10.98.0.0/24 inside them only; all deleted at the end\n"
          "                   (root: CAP_NET_ADMIN and iproute2's ip)\n"
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
      {"prepare-batch", required_argument, 0, 'B'}, {"netns", no_argument, 0, 'N'},
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
    case 'N': d->netns = true; break;
    case 'B': if (!num || v < 1 || v > VSR_SM_BATCH_CAP) return 2; d->batch_max = (int)v; break;
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
  if (d->connect && (d->nev > 0 || d->dump || d->netns)) {
    fprintf(stderr, "vsrbus demo: --kill, --restart, --kill-primary-after, --dump-commits and "
            "--netns need the demo's own cluster (no --connect)\n");
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

static int demo_run(struct demo *d) {
  if (!d->connect) {
    const char *tmp = getenv("TMPDIR");
    snprintf(d->dir, sizeof d->dir, "%s/vsrbus-demo.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(d->dir)) {
      fprintf(stderr, "vsrbus demo: mkdtemp: %s\n", strerror(errno));
      return 1;
    }
    if (d->netns && demo_netns_setup(d) < 0) return 1;
    if (demo_start_nodes(d) < 0 || demo_stop_requested) return 1;
    if (d->netns && demo_netns_enter_clients(d) < 0) return 1;
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
    if (d->netns) {
      fprintf(d->out, "vsrbus demo: network namespaces %s, %s, %s (replicas, %s, %s, %s), %s "
              "(clients, 10.98.0.100), bridged in %s; veth MTU 1500\n", d->ns[0], d->ns[1],
              d->ns[2], d->ns_addr[0], d->ns_addr[1], d->ns_addr[2], d->ns[DEMO_REPLICAS + 1],
              d->ns[DEMO_REPLICAS]);
    }
    fprintf(d->out, "vsrbus demo: %s, clients on %s %s%s; %d clients x %d in flight, "
            "%u-byte requests, io %s; primary timeout %d ms\n",
            d->connect ? "existing cluster" : d->netns ? "3 replicas in their namespaces"
                                                     : "3 replicas on 127.0.0.1",
            d->transport, d->primary,
            d->connect ? "" : " (replica 0; every replica serves clients)", d->clients, d->depth,
            d->size, vsr_loop_backend(d->loop), d->primary_timeout_ms);
    fflush(d->out);
  }
  d->start_ns = vsr_tool_now();
  for (int i = 0; i < d->clients; i++) demo_client_start(&d->cl[i]);
  vsr_timer_arm(d->tick, DEMO_SEC / 10);
  vsr_timer_arm(d->watch, DEMO_WATCH_NS);
  demo_signal_target = d;
  signal(SIGPIPE, SIG_IGN);
  if (d->csv) alarm((unsigned)d->seconds + 60); /* a bound for `vsrbus bench` */
  signal(SIGALRM, demo_on_signal);
  if (!demo_stop_requested) vsr_loop_run(d->loop);
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
  d->home_ns = -1;
  demo_stop_requested = 0;
  signal(SIGINT, demo_on_signal);
  signal(SIGTERM, demo_on_signal);
  int rc = demo_parse(d, argc, argv);
  if (rc) {
    if (rc == 2) demo_usage(stderr);
    free(d);
    return rc == 1 ? 0 : 2;
  }
  if (d->netns && demo_netns_check() != 0) { /* before anything is made: that line only */
    free(d);
    return 1;
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
    demo_netns_cleanup(d); /* after the nodes: every process of the run stopped by PID */
    if (!d->quiet) demo_node_reports(d);
    if (rc && d->csv) demo_dump_logs(d);
    if (d->keep || (rc && !d->csv)) fprintf(d->out, "logs and secret kept in %s\n", d->dir);
    else demo_cleanup_dir(d);
  }
  if (rc == 0 && d->csv) demo_csv_row(d);
  free(d);
  return rc;
}

