/* `vsrbus ping`: PingClient frames to a node, one at a time; prints each round trip and a
 * summary. Exit 0 when every ping got its PongClient, 1 otherwise. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cmds.h"
#include "vsrbus/vsrbus.h"

static void ping_usage(FILE *f) {
  fprintf(f, "usage: vsrbus ping [ADDR] [-c COUNT] [-i INTERVAL_MS]\n"
             "                   [--quic | --tls | --ws | --wss]\n"
             "                   [--pin SHA256 | --ca FILE | --insecure]\n"
             "                   [--client-cert FILE --client-key FILE]\n"
             "                   [--quic-alpn PROTO] [--quic-streams per-request|long]\n"
             "  ADDR defaults to 127.0.0.1:8090 (TCP), 127.0.0.1:8080 (--quic),\n"
             "  127.0.0.1:8443 (--tls), 127.0.0.1:8081 (--ws) or 127.0.0.1:8444 (--wss)\n"
             "  --pin / --ca / --insecure  how the server certificate is checked (QUIC, TLS,\n"
             "                     WSS); one is required for those\n"
             "  --client-cert FILE --client-key FILE  a client certificate (TLS, WSS), for a\n"
             "                     node run with --tls-client-ca\n"
             "  --quic-alpn PROTO  ALPN to offer; default none, as Iggy mainline's SDK (its\n"
             "                     server advertises none); iggy.consensus.v1 for a node run\n"
             "                     with --quic-alpn-required\n"
             "  --quic-streams M   per-request (default, Iggy mainline's model: one stream per\n"
             "                     ping, finished after it) or long (one stream for all; the\n"
             "                     seed's model, vsrbus servers only)\n");
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return (x > y) - (x < y);
}

int vsr_cmd_ping(int argc, char **argv) {
  static const struct option longopts[] = {
      {"count", required_argument, 0, 'c'}, {"interval", required_argument, 0, 'i'},
      {"quic", no_argument, 0, 'q'},        {"pin", required_argument, 0, 'p'},
      {"ca", required_argument, 0, 'a'},    {"insecure", no_argument, 0, 'k'},
      {"quic-alpn", required_argument, 0, 'A'}, {"quic-streams", required_argument, 0, 'S'},
      {"tls", no_argument, 0, 'T'},         {"ws", no_argument, 0, 'W'},
      {"wss", no_argument, 0, 'X'},         {"client-cert", required_argument, 0, 'C'},
      {"client-key", required_argument, 0, 'K'},
      {"help", no_argument, 0, 'h'},        {0, 0, 0, 0},
  };
  struct vsr_client_options o;
  vsr_client_options_default(&o);
  long count = 5, interval_ms = 200;
  int ch;
  optind = 1;
  while ((ch = getopt_long(argc, argv, "c:i:h", longopts, NULL)) != -1) {
    switch (ch) {
    case 'c': count = strtol(optarg, NULL, 10); break;
    case 'i': interval_ms = strtol(optarg, NULL, 10); break;
    case 'q': o.transport = "quic"; o.addr = "127.0.0.1:8080"; break;
    case 'T': o.transport = "tls"; o.addr = "127.0.0.1:8443"; break;
    case 'W': o.transport = "ws"; o.addr = "127.0.0.1:8081"; break;
    case 'X': o.transport = "wss"; o.addr = "127.0.0.1:8444"; break;
    case 'p': o.quic.pin_sha256 = o.tls.pin_sha256 = optarg; break;
    case 'a': o.quic.ca_file = o.tls.ca_file = optarg; break;
    case 'k': o.quic.insecure = o.tls.insecure = true; break;
    case 'C': o.tls.cert_file = optarg; break;
    case 'K': o.tls.key_file = optarg; break;
    case 'A': o.quic.alpn = optarg; break;
    case 'S':
      if (strcmp(optarg, "per-request") == 0) o.quic.streams = VSR_QUIC_STREAMS_PER_REQUEST;
      else if (strcmp(optarg, "long") == 0) o.quic.streams = VSR_QUIC_STREAMS_LONG;
      else {
        ping_usage(stderr);
        return 2;
      }
      break;
    case 'h': ping_usage(stdout); return 0;
    default: ping_usage(stderr); return 2;
    }
  }
  if (optind < argc) o.addr = argv[optind++];
  if (count < 1 || count > 1000000 || interval_ms < 0 || optind < argc) {
    ping_usage(stderr);
    return 2;
  }
  struct vsr_client *c;
  int err = vsr_client_connect(&c, &o, 5000000000ull);
  if (err) {
    fprintf(stderr, "vsrbus ping: %s (%s): %s\n", o.addr, o.transport, vsr_strerror(err));
    return 1;
  }
  uint64_t *rtt = calloc((size_t)count, sizeof *rtt);
  long got = 0;
  for (long seq = 1; seq <= count && rtt; seq++) {
    struct vsr_msg *m = vsr_client_msg_new(c, VSR_HEADER_SIZE), *r = NULL;
    if (!m) break;
    struct vsr_header *h = (struct vsr_header *)m->data;
    h->command = VSR_CMD_PING_CLIENT;
    uint64_t t0 = vsr_tool_now();
    vsr_put_u64(h->reserved_command, (uint64_t)seq);
    err = vsr_client_call(c, m, &r, 2000000000ull);
    vsr_msg_unref(m);
    uint64_t dt = vsr_tool_now() - t0;
    if (err) {
      printf("seq=%ld: %s\n", seq, vsr_strerror(err));
      if (err != VSR_ETIMEDOUT) break;
      continue;
    }
    const struct vsr_header *rh = (const struct vsr_header *)r->data;
    /* A PongClient, or the ping itself from an echo server, carrying our sequence number. */
    bool answer = rh->command == VSR_CMD_PONG_CLIENT || rh->command == VSR_CMD_PING_CLIENT;
    if (answer && vsr_get_u64(rh->reserved_command) == (uint64_t)seq) {
      rtt[got++] = dt;
      printf("%u bytes from %s: seq=%ld time=%.3f ms\n", r->size, o.addr, seq, (double)dt / 1e6);
    } else {
      printf("seq=%ld: unexpected %s\n", seq, vsr_command_name(rh->command));
    }
    vsr_msg_unref(r);
    fflush(stdout);
    if (seq < count && interval_ms > 0) {
      struct timespec ts = {interval_ms / 1000, (interval_ms % 1000) * 1000000};
      nanosleep(&ts, NULL);
    }
  }
  printf("--- %s %s ping: %ld sent, %ld received", o.addr, o.transport, count, got);
  if (got > 0) {
    qsort(rtt, (size_t)got, sizeof *rtt, cmp_u64);
    uint64_t sum = 0;
    for (long i = 0; i < got; i++) sum += rtt[i];
    printf(", rtt min/avg/p50/max = %.3f/%.3f/%.3f/%.3f ms", (double)rtt[0] / 1e6,
           (double)sum / (double)got / 1e6, (double)rtt[got / 2] / 1e6,
           (double)rtt[got - 1] / 1e6);
  }
  printf("\n");
  free(rtt);
  vsr_client_del(c);
  return got == count ? 0 : 1;
}
