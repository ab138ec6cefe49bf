/* vsrbus sim: the real bus, the demo state machine and the client SDK on a simulated network
 * (src/io/sim.h), one seed per run. Each seed draws its cluster (1, 3 or 5 replicas, 1-50
 * clients, frame sizes, auth on or off) and its fault rates, runs a fault phase, then a heal
 * phase, then shuts every host down, checking invariants all along:
 *   - per link, frames arrive exactly once, in order, byte-exact (a frame of a connection may
 *     only go missing if the sender's connection to that peer ended after it was queued);
 *   - every frame a send accepted is counted sent or dropped (frames_queued = frames_out +
 *     drops_on_close once a bus is done), and the send tap saw each one;
 *   - CONNECTED / AUTHENTICATED / LOST alternate per peer;
 *   - after the heal starts, every replica pair is authenticated within the reconnect and
 *     handshake bounds and the cluster commits a new request;
 *   - after every host shut down, every pool is empty and every allocation freed.
 * The default, failover mode, runs the demo state machine's view change and recovery, crashes
 * any replica (the primary too; at most f down or recovering at once: memory-only state),
 * isolates the primary, drives session clients through the SDK, and checks (sim_acks.c) that
 * no two replicas commit different Prepares at one op, that no view change truncates a
 * committed op, that every Reply is for the request sent, and that every acknowledged request
 * is committed exactly once on every replica after the heal. --fixed-primary keeps the mode
 * of issue 14 (replica 0 primary for good, raw clients; Prepares held compared per op).
 * A failure prints the seed, the virtual time, the peers, the replay command and the last
 * events. */
#include "sim_impl.h"

static const char *fault_names[] = {"partition", "clog", "reset", "crash", "restart", "heal"};

static void print_result(uint64_t seed, const struct result *r) {
  printf("seed %" PRIu64 ": %s replicas=%u clients=%u faults:", seed, r->ok ? "ok" : "FAIL",
         r->nr, r->nc);
  for (int i = 0; i < 6; i++) printf(" %s=%" PRIu64, fault_names[i], r->faults[i]);
  printf(" frames=%" PRIu64 " replies=%" PRIu64, r->delivered, r->replies);
  if (!r->fixed) {
    printf(" views=%" PRIu64 " acked=%" PRIu64 " batched=%" PRIu64, r->view_changes, r->acked,
           r->batched);
  }
  printf(" sim=%.2fs wall=%.2fs", r->sim_s, r->wall_s);
  /* With QUIC a run is not a function of its seed alone (GnuTLS draws its own randomness for
   * the TLS handshake): no trace hash to compare. */
  if (r->quic) printf(" quic=%" PRIu64 " hash=none\n", r->quic_conns);
  else printf(" hash=%016" PRIx64 "\n", r->hash);
}

static void sim_usage(FILE *f) {
  fprintf(f,
          "usage: vsrbus sim [--seed S | --seeds N [--from S]] [--replicas N] [--clients N]\n"
          "                  [--max-frame B] [--keepalive S] [--prepare-batch N] [--quic]\n"
          "                  [--fixed-primary]\n"
          "                  [--list] [--verbose]\n"
          "\n"
          "Runs the bus, the demo state machine and the client SDK on a simulated network,\n"
          "with faults drawn from the seed, and checks the bus's invariants.\n"
          "\n"
          "  --seed S     run one seed and print one summary line (default: 42)\n"
          "  --seeds N    run N seeds (from --from, default: random) and print the failing ones\n"
          "  --from S     first seed of --seeds (then S, S+1, ...)\n"
          "  --replicas N force the replica count (1, 3 or 5; default: drawn per seed)\n"
          "  --clients N  force the client count (1..50; default: drawn per seed)\n"
          "  --max-frame B  force the largest frame (256..1048576 bytes; default: drawn)\n"
          "  --keepalive S  tcp_keepalive_ns in s (0: off, to show what it is for; default: 1-2)\n"
          "  --prepare-batch N  the replicas' Requests per Prepare (1..1024; default 64, as the\n"
          "               node; 1: a Prepare per Request, as before batches)\n"
          "  --quic       odd clients use QUIC (replicas listen on QUIC too), datagrams lost and\n"
          "               duplicated at rates drawn per seed; not reproducible: no trace hash\n"
          "               (GnuTLS draws its own randomness; default: off, TCP only)\n"
          "  --fixed-primary  the issue-14 mode: replica 0 stays the primary, never crashed; raw\n"
          "               clients without sessions (default: failover mode, any replica crashed,\n"
          "               view changes, session clients, acknowledged requests checked)\n"
          "  --list       with --seeds: print every seed's line, not only the failing ones\n"
          "  --verbose    print every event as it happens\n"
          "\n"
          "exit status: 0 every seed passed, 1 a seed failed, 2 usage\n");
}

int vsr_cmd_sim(int argc, char **argv) {
  uint64_t seed = 42, count = 0, from = 0;
  bool have_from = false;
  struct opts opt = {.keepalive = -1};
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      sim_usage(stdout);
      return 0;
    }
    if (strcmp(a, "--verbose") == 0) {
      opt.verbose = true;
      continue;
    }
    if (strcmp(a, "--list") == 0) {
      opt.list = true;
      continue;
    }
    if (strcmp(a, "--fixed-primary") == 0) {
      opt.fixed = true;
      continue;
    }
    if (strcmp(a, "--quic") == 0) {
      opt.quic = true;
      continue;
    }
    if (i + 1 >= argc) {
      sim_usage(stderr);
      return 2;
    }
    char *end;
    errno = 0;
    unsigned long long v = strtoull(argv[i + 1], &end, 0);
    if (errno || *end) {
      fprintf(stderr, "vsrbus sim: %s: not a number: %s\n", a, argv[i + 1]);
      return 2;
    }
    if (strcmp(a, "--seed") == 0) seed = v;
    else if (strcmp(a, "--seeds") == 0) count = v;
    else if (strcmp(a, "--from") == 0) from = v, have_from = true;
    else if (strcmp(a, "--replicas") == 0 && (v == 1 || v == 3 || v == 5)) opt.nr = (uint16_t)v;
    else if (strcmp(a, "--clients") == 0 && v >= 1 && v <= SIM_C_MAX) opt.nc = (uint32_t)v;
    else if (strcmp(a, "--keepalive") == 0 && v <= 60) opt.keepalive = (int)v;
    else if (strcmp(a, "--prepare-batch") == 0 && v >= 1 && v <= VSR_SM_BATCH_CAP)
      opt.batch_max = (uint32_t)v;
    else if (strcmp(a, "--max-frame") == 0 && v >= 256 && v <= (1u << 20))
      opt.max_frame = (uint32_t)v;
    else {
      sim_usage(stderr);
      return 2;
    }
    i++;
  }
  /* Frames of up to 1 MiB come and go by the thousand: keep them off mmap/munmap. */
  mallopt(M_MMAP_THRESHOLD, 64 << 20);
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
  vsr_log_set_handler(sim_log, NULL);
  vsr_log_set_level(VSR_LOG_WARN);
  if (count == 0) {
    struct result r;
    sim_run_seed(seed, &opt, &r);
    print_result(seed, &r);
    return r.ok ? 0 : 1;
  }
  if (!have_from) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    from = ((uint64_t)ts.tv_sec * 1000003ull) ^ (uint64_t)ts.tv_nsec;
  }
  uint64_t failed = 0;
  double sim_s = 0, wall0 = (double)vsr_tool_now();
  for (uint64_t i = 0; i < count; i++) {
    struct result r;
    sim_run_seed(from + i, &opt, &r);
    sim_s += r.sim_s;
    if (!r.ok) failed++;
    if (!r.ok || opt.list) print_result(from + i, &r);
  }
  double wall = ((double)vsr_tool_now() - wall0) / 1e9;
  printf("sim: %" PRIu64 " seed(s) from %" PRIu64 ", %" PRIu64 " failed; %.1f seeds/min; "
         "%.1f simulated s per wall s (%.1f s simulated in %.1f s)\n",
         count, from, failed, (double)count * 60.0 / (wall > 0 ? wall : 1),
         sim_s / (wall > 0 ? wall : 1),
         sim_s, wall);
  return failed ? 1 : 0;
}
