/* `vsrbus node`: one replica. Flags and config-file keys share one setter (node_set), so the
 * two can never disagree; flags given on the command line override the file. */
#include <errno.h>
#include <getopt.h>
#include <ini.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cmds.h"
#include "node.h"
#include "sm.h"

static struct vsr_loop *node_loop; /* for the signal handler */

static void node_on_signal(int sig) {
  (void)sig;
  if (node_loop) vsr_loop_stop(node_loop);
}

void vsr_node_say(enum vsr_log_level level, const char *event, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (vsr_log_get_format() == VSR_LOG_JSON) vsr_log_event(level, event ? event : "VSR-NODE", "%s", msg);
  else fprintf(stderr, "vsrbus node: %s%s%s\n", event ? event : "", event ? " " : "", msg);
}

static void node_usage(FILE *f) {
  fprintf(f,
          "usage: vsrbus node [OPTIONS]\n"
          "\n"
          "Runs one replica with the built-in demo state machine. With no options: a single\n"
          "replica serving clients over TCP on 127.0.0.1:8090 and QUIC on 127.0.0.1:8080 (with a\n"
          "fresh self-signed certificate whose SHA-256 fingerprint is logged).\n"
          "\n"
          "  --config FILE           INI file; keys as the long options below (flags win)\n"
          "  --tcp ADDR              client plane TCP listener (default 127.0.0.1:8090, 'off')\n"
          "  --quic ADDR             client plane QUIC listener (default 127.0.0.1:8080, 'off')\n"
          "  --tls ADDR              client plane TLS 1.3 over TCP listener (default off)\n"
          "  --ws ADDR               client plane WebSocket listener (default off); GET / on\n"
          "                          it serves a page that pings the node from a browser\n"
          "  --wss ADDR              client plane WebSocket over TLS 1.3 (default off; page too)\n"
          "  --cert FILE --key FILE  QUIC, TLS, WSS and replica-TLS certificate and key (PEM);\n"
          "                          default: a self-signed one (SHA-256 logged; clients pin it)\n"
          "  --tls-client-ca FILE    TLS / WSS clients must present a certificate this CA\n"
          "                          signed (default: none asked, as Iggy mainline)\n"
          "  --quic-alpn-required    admit only QUIC clients offering ALPN iggy.consensus.v1\n"
          "                          (the seed's strict rule). Default: iggy.consensus.v1 or\n"
          "                          no ALPN, as Iggy mainline's SDKs offer none; any other\n"
          "                          ALPN is always refused (alert 0x178)\n"
          "  --quic-max-bidi-streams N  QUIC streams a client may hold open at once, default\n"
          "                          1 (as mainline); N lets a per-request client pipeline N\n"
          "                          requests, each Reply on its Request's stream\n"
          "  --quic-max-handshakes N QUIC handshakes in progress at once, default 1024; when\n"
          "                          full the oldest is evicted\n"
          "  --quic-retry-threshold N  from N handshakes in progress new QUIC clients must\n"
          "                          validate their address (Retry), default 256; 0: always\n"
          "  --quic-max-handshakes-per-source N  QUIC handshakes in progress per IPv4 address\n"
          "                          or IPv6 /64, default 32 (beyond: Retry); 0: no limit\n"
          "  --cluster NAME          cluster name (the cluster id derives from it)\n"
          "  --replica N             this replica's index (< the number of --replicas)\n"
          "  --replicas A,B,C        replica plane addresses, by index (needs --cluster)\n"
          "  --secret-file FILE      shared secret (32..65536 bytes; one trailing newline\n"
          "                          dropped)\n"
          "  --secret-hex HEX        shared secret as hex\n"
          "  --previous-secret-file FILE  previous secret, accepted while rotating\n"
          "  --replica-auth on|off   replica plane authentication, default on (needs a secret).\n"
          "                          off: legacy mode, UNAUTHENTICATED (the announced replica\n"
          "                          id is trusted), only to join stock Iggy mainline servers,\n"
          "                          whose default is auth off; warned about at start\n"
          "  --replica-tls           replica links over TLS 1.3 (ALPN iggy-replica), handshake\n"
          "                          MACs bound to the TLS exporter; default off (plain TCP);\n"
          "                          every replica of the cluster must agree\n"
          "  --ca FILE               replica TLS: check the accepting replica's certificate\n"
          "                          against this CA (default: any; the MAC authenticates)\n"
          "  --reconnect-ms N        replica redial backoff cap, default 5000\n"
          "  --reconnect-min-ms N    replica redial backoff base, default 100 (exponential,\n"
          "                          full jitter; 0: the cap)\n"
          "  --handshake-grace-ms N  bound on a replica or QUIC handshake, and on a TLS\n"
          "                          handshake + WebSocket upgrade, default 10000\n"
          "                          (a QUIC client may open its first stream later)\n"
          "  --max-inflight-handshakes N  inbound replica handshakes at once, default 256\n"
          "  --max-message-size N    default 67108864\n"
          "  --max-batch N           frames per vectored write, default 256\n"
          "  --peer-queue N          frames queued per peer, default 256\n"
          "  --max-clients N         default 100000\n"
          "  --shards N              loops on threads for TCP and QUIC clients (1..255), default 1\n"
          "                          (opt-in until measured on 4+ free cores); the replica plane,\n"
          "                          the state machine, TLS/WS and metrics run on shard 0\n"
          "                          (docs/shards.md)\n"
          "  --slow-peer-timeout-ms N  close a peer whose send queue stays full this long,\n"
          "                          default 10000 (0: never)\n"
          "  --peer-queue-bytes N    buffer bytes queued per peer, default 67108864 (0: no cap)\n"
          "  --log-burst N           log lines per call site at once, default 20 (0: no limit)\n"
          "  --log-interval-ms N     then one line (and one count of the rest) per N ms,\n"
          "                          default 1000\n"
          "  --memory-max SIZE       node-wide cap on message buffers, e.g. 512M, 2G; default\n"
          "                          auto = 1/4 of physical memory (or of the cgroup limit),\n"
          "                          at least 256M. Frames beyond it: VSR_EMEMORY_MAX\n"
          "  --client-memory-budget SIZE   client-plane frames in flight; default memory-max/2\n"
          "  --replica-memory-budget SIZE  share of memory-max kept for replica frames in\n"
          "                          flight; default min(memory-max/4, (replicas-1) x\n"
          "                          max-message-size)\n"
          "  --conn-memory-budget SIZE     largest frame one client may have in flight;\n"
          "                          default max-message-size\n"
          "  --frame-allowance SIZE  client frame bytes reserved before they arrive; default\n"
          "                          65792 (a 64 KiB body and its header)\n"
          "  --frame-timeout-ms N    a started frame must complete within N ms, default 30000\n"
          "                          (0: off)\n"
          "  --client-idle-timeout-ms N  close a client silent for N ms, default 60000 (0: off)\n"
          "  --tcp-keepalive-ms N    TCP keepalive idle time (probes every N/3, 3 of them), both\n"
          "                          planes, default 15000 (0: off)\n"
          "  --tcp-user-timeout-ms N TCP_USER_TIMEOUT: unacknowledged data this long closes the\n"
          "                          connection, default 30000 (0: the kernel's)\n"
          "  --close-peer-timeout-ms N   per-connection bound on the drain and close at\n"
          "                          shutdown, default 2000\n"
          "  --primary-timeout-ms N  a backup that hears neither Prepare nor Commit from the\n"
          "                          primary for N ms starts a view change, default 1000; the\n"
          "                          primary's Commit heartbeat goes out every N/5 ms\n"
          "  --dump-commits FILE     write a line per committed request to FILE (\"op client\n"
          "                          request operation index\"; for tests), default off\n"
          "  --prepare-batch N       cluster primary: Requests per Prepare (one op), 1..1024,\n"
          "                          default 64 (a client pipelines at most 64); the Requests\n"
          "                          of one loop turn go together; 1: a Prepare per Request\n"
          "  --io epoll|uring|auto   I/O backend (default auto; env VSRBUS_IO)\n"
          "  --log error|warn|info|debug\n"
          "  --log-format text|json  log lines as text (default) or one JSON object a line\n"
          "  --metrics ADDR          serve Prometheus metrics at http://ADDR/metrics\n"
          "                          (default off; e.g. 127.0.0.1:9100)\n"
          "  --metrics-max-conns N   scrapes served at once, default 4 (more are closed)\n"
          "  --metrics-timeout-ms N  a scrape taking longer is closed, default 5000\n"
          "\n"
          "Environment: SSLKEYLOGFILE=FILE makes GnuTLS write the QUIC TLS secrets to FILE\n"
          "(for Wireshark); warned about at start: anyone with FILE can decrypt the traffic.\n");
}

/* The buffer behind a secret option: allocated once, VSR_SECRET_MAX bytes. NULL: printed. */
static uint8_t *node_secret_buf(uint8_t **buf) {
  if (!*buf) *buf = malloc(VSR_SECRET_MAX);
  if (!*buf) fprintf(stderr, "vsrbus node: no memory for the secret\n");
  return *buf;
}

static void node_secret_free(uint8_t *buf) {
  if (!buf) return;
  volatile uint8_t *v = buf;
  for (size_t i = 0; i < VSR_SECRET_MAX; i++) v[i] = 0;
  free(buf);
}

static int node_read_secret(const char *path, uint8_t *out, size_t *len) {
  if (!out) return -1;
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "vsrbus node: %s: %s\n", path, strerror(errno));
    return -1;
  }
  size_t n = fread(out, 1, VSR_SECRET_MAX, f);
  bool more = fgetc(f) != EOF;
  fclose(f);
  if (more) {
    fprintf(stderr, "vsrbus node: %s: secret longer than %d bytes\n", path, VSR_SECRET_MAX);
    return -1;
  }
  if (n > 0 && out[n - 1] == '\n') n--;
  *len = n;
  return 0;
}

static int node_parse_hex(const char *hex, uint8_t *out, size_t *len) {
  if (!out) return -1;
  size_t n = strlen(hex);
  if (n % 2 || n / 2 > VSR_SECRET_MAX) return -1;
  for (size_t i = 0; i < n / 2; i++) {
    unsigned v;
    if (sscanf(hex + 2 * i, "%2x", &v) != 1) return -1;
    out[i] = (uint8_t)v;
  }
  *len = n / 2;
  return 0;
}

static int node_parse_u32(const char *key, const char *v, uint32_t *out) {
  char *end;
  errno = 0;
  unsigned long x = strtoul(v, &end, 0);
  if (errno || *end || !*v || x > UINT32_MAX) {
    fprintf(stderr, "vsrbus node: %s: '%s' is not a number\n", key, v);
    return -1;
  }
  *out = (uint32_t)x;
  return 0;
}

/* "65536", "64K", "512M", "2G", "1GiB", "auto" (0). Binary multiples. */
static int node_parse_size(const char *key, const char *v, uint64_t max, uint64_t *out) {
  if (strcmp(v, "auto") == 0) {
    *out = 0;
    return 0;
  }
  char *end;
  errno = 0;
  unsigned long long x = strtoull(v, &end, 10);
  unsigned shift = 0;
  switch (*end) {
  case 'k': case 'K': shift = 10; end++; break;
  case 'm': case 'M': shift = 20; end++; break;
  case 'g': case 'G': shift = 30; end++; break;
  case 't': case 'T': shift = 40; end++; break;
  default: break;
  }
  if (shift && (*end == 'i' || *end == 'I')) end++;
  if (*end == 'b' || *end == 'B') end++;
  if (errno || *end || !*v || *v == '-' || (shift && x > (max >> shift)) || (x << shift) > max) {
    fprintf(stderr, "vsrbus node: %s: '%s' is not a size (e.g. 65536, 64K, 512M, 2G)\n", key,
            v);
    return -1;
  }
  *out = (uint64_t)x << shift;
  return 0;
}

static int node_parse_size32(const char *key, const char *v, uint32_t *out) {
  uint64_t x;
  if (node_parse_size(key, v, UINT32_MAX, &x)) return -1;
  *out = (uint32_t)x;
  return 0;
}

static int node_parse_ms(const char *key, const char *v, uint64_t *out_ns) {
  uint32_t ms;
  if (node_parse_u32(key, v, &ms)) return -1;
  if (ms == 0) {
    fprintf(stderr, "vsrbus node: %s: must be > 0\n", key);
    return -1;
  }
  *out_ns = (uint64_t)ms * 1000000ull;
  return 0;
}

static int node_parse_u64(const char *key, const char *v, uint64_t *out) {
  char *end;
  errno = 0;
  unsigned long long x = strtoull(v, &end, 0);
  if (errno || *end || !*v || *v == '-') {
    fprintf(stderr, "vsrbus node: %s: '%s' is not a number\n", key, v);
    return -1;
  }
  *out = x;
  return 0;
}

/* Like node_parse_ms, but 0 is allowed: it turns the limit off. */
static int node_parse_ms_or_off(const char *key, const char *v, uint64_t *out_ns) {
  uint32_t ms;
  if (node_parse_u32(key, v, &ms)) return -1;
  *out_ns = (uint64_t)ms * 1000000ull;
  return 0;
}

static bool node_truthy(const char *v) {
  return !v || strcmp(v, "1") == 0 || strcmp(v, "true") == 0 || strcmp(v, "yes") == 0 ||
         strcmp(v, "on") == 0;
}

/* Splits "A,B,C" into cfg->addrs. */
static int node_set_replicas(struct node_cfg *cfg, const char *v) {
  free(cfg->replicas_text);
  cfg->replicas_text = strdup(v);
  if (!cfg->replicas_text) return -1;
  uint16_t n = 0;
  for (char *save, *tok = strtok_r(cfg->replicas_text, ",", &save); tok;
       tok = strtok_r(NULL, ",", &save)) {
    if (n == VSR_MAX_REPLICAS) {
      fprintf(stderr, "vsrbus node: --replicas: more than %d replicas\n", VSR_MAX_REPLICAS);
      return -1;
    }
    cfg->addrs[n++] = tok;
  }
  cfg->bus.replica_addrs = cfg->addrs;
  cfg->bus.replica_count = n;
  return 0;
}

static const char *node_keep(struct node_cfg *cfg, const char *v) {
  /* Strings from the INI parser are transient: keep copies for the life of the node. */
  if (cfg->strings_len == sizeof cfg->strings / sizeof cfg->strings[0]) return NULL;
  char *s = strdup(v);
  cfg->strings[cfg->strings_len++] = s;
  return s;
}

/* The numeric options: flag, config-file key, how the value is read, where it goes (an offset
 * into struct node_cfg). Errors name the key as given, as each parser prints them. */
enum node_num {
  NODE_U32,        /* a number (strtoul base 0) */
  NODE_U32_POS,    /* the same, > 0 */
  NODE_U64,        /* a 64-bit number */
  NODE_MS,         /* milliseconds > 0, stored in ns */
  NODE_MS_OR_OFF,  /* milliseconds, 0 allowed (off / never), stored in ns */
  NODE_SIZE,       /* a size (64K, 512M, 2G, auto), 64-bit */
  NODE_SIZE32,     /* a size that fits 32 bits */
};

/* A row; the member's type must be the one |kind| writes (checked when compiling). */
#define NODE_U32_T uint32_t
#define NODE_U32_POS_T uint32_t
#define NODE_U64_T uint64_t
#define NODE_MS_T uint64_t
#define NODE_MS_OR_OFF_T uint64_t
#define NODE_SIZE_T uint64_t
#define NODE_SIZE32_T uint32_t
#define NODE_OPT(flag, ini, kind, member)                                                      \
  {flag, ini, kind,                                                                            \
   offsetof(struct node_cfg, member) +                                                         \
       0 * sizeof(char[_Generic(((struct node_cfg *)0)->member, kind##_T: 1, default: -1)])}

static const struct node_num_opt {
  const char *flag, *ini;
  enum node_num kind;
  size_t off;
} node_num_opts[] = {
    NODE_OPT("quic-max-bidi-streams", "quic_max_bidi_streams", NODE_U32, bus.quic.max_bidi_streams),
    NODE_OPT("quic-max-handshakes", "quic_max_handshakes", NODE_U32_POS, bus.quic.max_handshakes),
    NODE_OPT("quic-retry-threshold", "quic_retry_threshold", NODE_U32, bus.quic.retry_threshold),
    NODE_OPT("quic-max-handshakes-per-source", "quic_max_handshakes_per_source", NODE_U32,
             bus.quic.max_handshakes_per_source),
    NODE_OPT("reconnect-ms", "reconnect_period_ms", NODE_MS, bus.reconnect_period_ns),
    NODE_OPT("reconnect-min-ms", "reconnect_min_ms", NODE_MS_OR_OFF, bus.reconnect_min_ns),
    NODE_OPT("tcp-keepalive-ms", "tcp_keepalive_ms", NODE_MS_OR_OFF, bus.tcp_keepalive_ns),
    NODE_OPT("tcp-user-timeout-ms", "tcp_user_timeout_ms", NODE_MS_OR_OFF, bus.tcp_user_timeout_ns),
    NODE_OPT("handshake-grace-ms", "handshake_grace_ms", NODE_MS, bus.handshake_grace_ns),
    NODE_OPT("max-inflight-handshakes", "max_inflight_handshakes", NODE_U32,
             bus.max_inflight_handshakes),
    NODE_OPT("max-message-size", "max_message_size", NODE_U32, bus.max_message_size),
    NODE_OPT("max-batch", "max_batch", NODE_U32, bus.max_batch),
    NODE_OPT("peer-queue", "peer_queue_capacity", NODE_U32, bus.peer_queue_capacity),
    NODE_OPT("max-clients", "max_clients", NODE_U32, bus.max_clients),
    NODE_OPT("shards", "shards", NODE_U32, bus.shards),
    /* 0 is allowed here: never close a slow peer */
    NODE_OPT("slow-peer-timeout-ms", "slow_peer_timeout_ms", NODE_MS_OR_OFF,
             bus.slow_peer_timeout_ns),
    NODE_OPT("peer-queue-bytes", "peer_queue_bytes_max", NODE_U64, bus.peer_queue_bytes_max),
    NODE_OPT("memory-max", "memory_max", NODE_SIZE, bus.memory_max),
    NODE_OPT("client-memory-budget", "client_memory_budget", NODE_SIZE, bus.client_memory_budget),
    NODE_OPT("replica-memory-budget", "replica_memory_budget", NODE_SIZE,
             bus.replica_memory_budget),
    NODE_OPT("conn-memory-budget", "conn_memory_budget", NODE_SIZE32, bus.conn_memory_budget),
    NODE_OPT("frame-allowance", "frame_allowance", NODE_SIZE32, bus.frame_allowance),
    NODE_OPT("frame-timeout-ms", "frame_timeout_ms", NODE_MS_OR_OFF, bus.frame_timeout_ns),
    NODE_OPT("client-idle-timeout-ms", "client_idle_timeout_ms", NODE_MS_OR_OFF,
             bus.client_idle_timeout_ns),
    NODE_OPT("close-peer-timeout-ms", "close_peer_timeout_ms", NODE_MS, bus.close_peer_timeout_ns),
    NODE_OPT("primary-timeout-ms", "primary_timeout_ms", NODE_MS, primary_timeout_ns),
    NODE_OPT("metrics-max-conns", "metrics_max_conns", NODE_U32, bus.metrics_max_conns),
    NODE_OPT("metrics-timeout-ms", "metrics_timeout_ms", NODE_MS, bus.metrics_timeout_ns),
};

/* Sets a numeric option; 1 when |key| is none of them. */
static int node_set_num(struct node_cfg *cfg, const char *key, const char *v) {
  for (size_t i = 0; i < sizeof node_num_opts / sizeof node_num_opts[0]; i++) {
    const struct node_num_opt *o = &node_num_opts[i];
    if (strcmp(key, o->flag) != 0 && strcmp(key, o->ini) != 0) continue;
    void *at = (char *)cfg + o->off;
    switch (o->kind) {
    case NODE_U32: return node_parse_u32(key, v, at);
    case NODE_U32_POS: {
      uint32_t x;
      if (node_parse_u32(key, v, &x)) return -1;
      if (x == 0) {
        fprintf(stderr, "vsrbus node: %s: must be > 0\n", key);
        return -1;
      }
      *(uint32_t *)at = x;
      return 0;
    }
    case NODE_U64: return node_parse_u64(key, v, at);
    case NODE_MS: return node_parse_ms(key, v, at);
    case NODE_MS_OR_OFF: return node_parse_ms_or_off(key, v, at);
    case NODE_SIZE: return node_parse_size(key, v, UINT64_MAX, at);
    case NODE_SIZE32: return node_parse_size32(key, v, at);
    }
  }
  return 1;
}

int vsr_node_set(struct node_cfg *cfg, const char *key, const char *v) {
  struct vsr_bus_options *b = &cfg->bus;
  int num = node_set_num(cfg, key, v);
  if (num != 1) return num;
  if (strcmp(key, "tcp") == 0) {
    b->client_tcp_addr = strcmp(v, "off") == 0 ? NULL : node_keep(cfg, v);
  } else if (strcmp(key, "quic") == 0) {
    b->quic.addr = strcmp(v, "off") == 0 ? NULL : node_keep(cfg, v);
  } else if (strcmp(key, "tls") == 0) {
    b->tls.addr = strcmp(v, "off") == 0 ? NULL : node_keep(cfg, v);
  } else if (strcmp(key, "ws") == 0) {
    b->ws.addr = strcmp(v, "off") == 0 ? NULL : node_keep(cfg, v);
  } else if (strcmp(key, "wss") == 0) {
    b->wss.addr = strcmp(v, "off") == 0 ? NULL : node_keep(cfg, v);
  } else if (strcmp(key, "tls-client-ca") == 0 || strcmp(key, "tls_client_ca") == 0) {
    b->tls.client_ca_file = node_keep(cfg, v);
  } else if (strcmp(key, "cert") == 0) {
    b->quic.cert_file = b->tls.cert_file = b->replica_tls_cert_file = node_keep(cfg, v);
  } else if (strcmp(key, "key") == 0) {
    b->quic.key_file = b->tls.key_file = b->replica_tls_key_file = node_keep(cfg, v);
  } else if (strcmp(key, "replica-tls") == 0 || strcmp(key, "replica_tls") == 0) {
    b->replica_tls = node_truthy(v);
  } else if (strcmp(key, "ca") == 0) {
    b->replica_tls_ca_file = node_keep(cfg, v);
  } else if (strcmp(key, "quic-alpn-required") == 0 || strcmp(key, "quic_alpn_required") == 0) {
    b->quic.alpn_required = node_truthy(v);
  } else if (strcmp(key, "quic-alpn-optional") == 0 || strcmp(key, "quic_alpn_optional") == 0) {
    b->quic.alpn_required = !node_truthy(v); /* older name: no ALPN admitted is now the default */
  } else if (strcmp(key, "cluster") == 0) {
    b->cluster_name = node_keep(cfg, v);
  } else if (strcmp(key, "replica") == 0) {
    uint32_t r;
    if (node_parse_u32(key, v, &r)) return -1;
    if (r >= VSR_MAX_REPLICAS - 1) {
      fprintf(stderr, "vsrbus node: --replica %u: at most %d replicas (ids are one byte)\n", r,
              VSR_MAX_REPLICAS - 1);
      return -1;
    }
    b->replica_index = (uint8_t)r;
    cfg->replica_set = true;
  } else if (strcmp(key, "replicas") == 0) {
    return node_set_replicas(cfg, v);
  } else if (strcmp(key, "secret-file") == 0 || strcmp(key, "secret_file") == 0) {
    b->secret = node_secret_buf(&cfg->secret);
    return node_read_secret(v, cfg->secret, &b->secret_len);
  } else if (strcmp(key, "secret-hex") == 0 || strcmp(key, "secret_hex") == 0) {
    b->secret = node_secret_buf(&cfg->secret);
    if (node_parse_hex(v, cfg->secret, &b->secret_len) == 0) return 0;
    if (cfg->secret) {
      fprintf(stderr, "vsrbus node: --secret-hex: not a hex string of at most %d bytes\n",
              VSR_SECRET_MAX);
    }
    return -1;
  } else if (strcmp(key, "previous-secret-file") == 0 ||
             strcmp(key, "previous_secret_file") == 0) {
    b->previous_secret = node_secret_buf(&cfg->prev_secret);
    return node_read_secret(v, cfg->prev_secret, &b->previous_secret_len);
  } else if (strcmp(key, "replica-auth") == 0 || strcmp(key, "replica_auth") == 0) {
    if (strcmp(v, "on") == 0) b->replica_auth = VSR_REPLICA_AUTH_ON;
    else if (strcmp(v, "off") == 0) b->replica_auth = VSR_REPLICA_AUTH_OFF;
    else {
      fprintf(stderr, "vsrbus node: --replica-auth: expected on or off\n");
      return -1;
    }
  } else if (strcmp(key, "log-burst") == 0 || strcmp(key, "log_burst") == 0) {
    if (node_parse_u32(key, v, &cfg->log_burst)) return -1;
    vsr_log_set_rate(cfg->log_burst, cfg->log_interval_ns);
  } else if (strcmp(key, "log-interval-ms") == 0 || strcmp(key, "log_interval_ms") == 0) {
    if (node_parse_ms(key, v, &cfg->log_interval_ns)) return -1;
    vsr_log_set_rate(cfg->log_burst, cfg->log_interval_ns);
  } else if (strcmp(key, "prepare-batch") == 0 || strcmp(key, "prepare_batch") == 0) {
    uint32_t x;
    if (node_parse_u32(key, v, &x)) return -1;
    if (x < 1 || x > VSR_SM_BATCH_CAP) {
      fprintf(stderr, "vsrbus node: %s: 1..%u\n", key, VSR_SM_BATCH_CAP);
      return -1;
    }
    cfg->batch_max = x;
  } else if (strcmp(key, "dump-commits") == 0 || strcmp(key, "dump_commits") == 0) {
    cfg->dump_commits = node_keep(cfg, v);
  } else if (strcmp(key, "io") == 0) {
    if (strcmp(v, "epoll") == 0) b->loop_options.backend = VSR_IO_EPOLL;
    else if (strcmp(v, "uring") == 0) b->loop_options.backend = VSR_IO_URING;
    else if (strcmp(v, "auto") == 0) b->loop_options.backend = VSR_IO_AUTO;
    else {
      fprintf(stderr, "vsrbus node: --io: expected epoll, uring or auto\n");
      return -1;
    }
  } else if (strcmp(key, "metrics") == 0) {
    b->metrics_addr = strcmp(v, "off") == 0 ? NULL : node_keep(cfg, v);
  } else if (strcmp(key, "log-format") == 0 || strcmp(key, "log_format") == 0) {
    if (strcmp(v, "text") == 0) vsr_log_set_format(VSR_LOG_TEXT);
    else if (strcmp(v, "json") == 0) vsr_log_set_format(VSR_LOG_JSON);
    else {
      fprintf(stderr, "vsrbus node: --log-format: expected text or json\n");
      return -1;
    }
  } else if (strcmp(key, "log") == 0) {
    const char *names[] = {"error", "warn", "info", "debug"};
    for (int i = 0; i < 4; i++) {
      if (strcmp(v, names[i]) == 0) {
        vsr_log_set_level((enum vsr_log_level)i);
        return 0;
      }
    }
    fprintf(stderr, "vsrbus node: --log: expected error, warn, info or debug\n");
    return -1;
  } else {
    fprintf(stderr, "vsrbus node: unknown option '%s'\n", key);
    return -1;
  }
  return 0;
}

static int node_ini_entry(void *user, const char *section, const char *name, const char *value) {
  (void)section; /* keys are unique across sections: [client], [cluster], [bus] are for humans */
  return vsr_node_set(user, name, value) == 0;
}

void vsr_node_cfg_init(struct node_cfg *cfg) {
  memset(cfg, 0, sizeof *cfg);
  vsr_bus_options_default(&cfg->bus);
  cfg->bus.quic.addr = "127.0.0.1:8080"; /* the node serves QUIC by default */
  /* shards stay the library's 1: on the 2-vCPU machines we measure on, 2 shards ran at
   * 0.75-0.93x of 1 with 64 connections (the load generator needs a CPU too); docs/shards.md */
  cfg->log_burst = VSR_LOG_BURST_DEFAULT;
  cfg->log_interval_ns = VSR_LOG_INTERVAL_NS_DEFAULT;
  cfg->primary_timeout_ns = VSR_SM_PRIMARY_TIMEOUT_NS;
  cfg->batch_max = VSR_SM_BATCH_MAX;
}

void vsr_node_cfg_free(struct node_cfg *cfg) {
  for (size_t i = 0; i < cfg->strings_len; i++) free(cfg->strings[i]);
  free(cfg->replicas_text);
  node_secret_free(cfg->secret);
  node_secret_free(cfg->prev_secret);
  cfg->secret = cfg->prev_secret = NULL;
  cfg->bus.secret = cfg->bus.previous_secret = NULL;
}

/* Settings that make no sense together: a usage error before anything starts. Returns 0, or
 * 2 (printed). */
static int node_check(const struct node_cfg *cfg) {
  const struct vsr_bus_options *b = &cfg->bus;
  if (cfg->replica_set && b->replica_count == 0) {
    fprintf(stderr, "vsrbus node: --replica %u needs --replicas (the replica plane addresses "
            "by index, this replica's among them)\n", b->replica_index);
    return 2;
  }
  if (b->replica_count > 0 && b->replica_index >= b->replica_count) {
    fprintf(stderr, "vsrbus node: --replica %u: --replicas lists %u address%s (indexes 0..%u)\n",
            b->replica_index, b->replica_count, b->replica_count == 1 ? "" : "es",
            b->replica_count - 1u);
    return 2;
  }
  if (b->replica_count > 1 && !b->cluster_name) {
    fprintf(stderr, "vsrbus node: --replicas needs --cluster (the cluster name)\n");
    return 2;
  }
  return 0;
}

/* Parses argv into |cfg|. Returns 0, 1 (--help printed) or 2 (usage error, printed). */
int vsr_node_parse(struct node_cfg *cfg, int argc, char **argv) {
  static const struct option longopts[] = {
      {"config", required_argument, 0, 'c'}, {"help", no_argument, 0, 'h'},
      {"tcp", required_argument, 0, 0},      {"quic", required_argument, 0, 0},
      {"cert", required_argument, 0, 0},     {"key", required_argument, 0, 0},
      {"tls", required_argument, 0, 0},      {"ws", required_argument, 0, 0},
      {"wss", required_argument, 0, 0},      {"tls-client-ca", required_argument, 0, 0},
      {"replica-tls", no_argument, 0, 0},    {"ca", required_argument, 0, 0},
      {"quic-alpn-required", no_argument, 0, 0},
      {"quic-alpn-optional", no_argument, 0, 0},
      {"quic-max-bidi-streams", required_argument, 0, 0},
      {"quic-max-handshakes", required_argument, 0, 0},
      {"quic-retry-threshold", required_argument, 0, 0},
      {"quic-max-handshakes-per-source", required_argument, 0, 0},
      {"cluster", required_argument, 0, 0},  {"replica", required_argument, 0, 0},
      {"replicas", required_argument, 0, 0}, {"secret-file", required_argument, 0, 0},
      {"secret-hex", required_argument, 0, 0},
      {"previous-secret-file", required_argument, 0, 0},
      {"replica-auth", required_argument, 0, 0},
      {"reconnect-ms", required_argument, 0, 0}, {"handshake-grace-ms", required_argument, 0, 0},
      {"max-inflight-handshakes", required_argument, 0, 0},
      {"max-message-size", required_argument, 0, 0},
      {"max-batch", required_argument, 0, 0}, {"peer-queue", required_argument, 0, 0},
      {"max-clients", required_argument, 0, 0}, {"shards", required_argument, 0, 0},
      {"slow-peer-timeout-ms", required_argument, 0, 0},
      {"peer-queue-bytes", required_argument, 0, 0},
      {"log-burst", required_argument, 0, 0}, {"log-interval-ms", required_argument, 0, 0},
      {"io", required_argument, 0, 0},
      {"memory-max", required_argument, 0, 0},
      {"client-memory-budget", required_argument, 0, 0},
      {"replica-memory-budget", required_argument, 0, 0},
      {"conn-memory-budget", required_argument, 0, 0},
      {"frame-allowance", required_argument, 0, 0},
      {"metrics", required_argument, 0, 0}, {"metrics-max-conns", required_argument, 0, 0},
      {"metrics-timeout-ms", required_argument, 0, 0},
      {"log-format", required_argument, 0, 0},
      {"frame-timeout-ms", required_argument, 0, 0},
      {"client-idle-timeout-ms", required_argument, 0, 0},
      {"reconnect-min-ms", required_argument, 0, 0},
      {"tcp-keepalive-ms", required_argument, 0, 0},
      {"tcp-user-timeout-ms", required_argument, 0, 0},
      {"close-peer-timeout-ms", required_argument, 0, 0},
      {"primary-timeout-ms", required_argument, 0, 0},
      {"dump-commits", required_argument, 0, 0},
      {"prepare-batch", required_argument, 0, 0},
      {"log", required_argument, 0, 0},      {0, 0, 0, 0},
  };
  /* First pass: the config file, so that flags override it. */
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--config") != 0) continue;
    if (i + 1 >= argc) {
      fprintf(stderr, "vsrbus node: --config needs a file\n");
      return 2;
    }
    int line = ini_parse(argv[i + 1], node_ini_entry, cfg);
    if (line != 0) {
      if (line < 0) fprintf(stderr, "vsrbus node: %s: cannot read\n", argv[i + 1]);
      else fprintf(stderr, "vsrbus node: %s:%d: invalid entry\n", argv[i + 1], line);
      return 2;
    }
  }
  optind = 1;
  int idx, ch;
  while ((ch = getopt_long(argc, argv, "c:h", longopts, &idx)) != -1) {
    if (ch == 'h') {
      node_usage(stdout);
      return 1;
    }
    if (ch == 'c') continue;
    if (ch != 0) {
      node_usage(stderr);
      return 2;
    }
    if (vsr_node_set(cfg, longopts[idx].name, optarg ? optarg : "true") != 0) return 2;
  }
  if (optind < argc) {
    fprintf(stderr, "vsrbus node: unexpected argument '%s'\n", argv[optind]);
    return 2;
  }
  return node_check(cfg);
}

static void node_on_message(void *user, struct vsr_bus *bus, enum vsr_plane plane, uint64_t peer,
                            struct vsr_msg *msg) {
  (void)bus;
  if (plane == VSR_PLANE_CLIENT) vsr_sm_on_client_message(user, peer, msg);
  else vsr_sm_on_replica_message(user, (uint8_t)peer, msg);
}

static void node_on_peer_event(void *user, struct vsr_bus *bus, const struct vsr_peer_event *ev) {
  (void)bus;
  if (ev->plane == VSR_PLANE_REPLICA && ev->kind == VSR_PEER_AUTHENTICATED) {
    vsr_sm_on_replica_up(user, (uint8_t)ev->id);
  }
  /* Replica links only: a client's loss is logged (rate-limited) by the bus where it happens,
   * and one line here per stranger's connection would unbound the log again. */
  if (ev->kind == VSR_PEER_LOST && ev->plane == VSR_PLANE_REPLICA &&
      ev->reason != VSR_ECLOSED && ev->reason != VSR_ESHUTDOWN) {
    vsr_node_say(VSR_LOG_WARN, NULL, "replica peer %llx (%s %s) lost: %s",
            (unsigned long long)ev->id, ev->transport, ev->addr, vsr_strerror(ev->reason));
  }
}

int vsr_cmd_node(int argc, char **argv) {
  struct node_cfg cfg;
  vsr_node_cfg_init(&cfg);
  int rc = vsr_node_parse(&cfg, argc, argv);
  if (rc) {
    vsr_node_cfg_free(&cfg);
    return rc == 1 ? 0 : 2;
  }
  struct vsr_sm sm;
  memset(&sm, 0, sizeof sm);
  uint64_t sm_bufs = VSR_SM_LOG + VSR_SM_PIPELINE;
  if (cfg.bus.cluster_name && cfg.bus.replica_count > 1 &&
      cfg.bus.loop_options.pool.prealloc[0] < sm_bufs &&
      (cfg.bus.memory_max == 0 || cfg.bus.memory_max >= 4 * sm_bufs * 4096)) {
    /* The state machine keeps its log (VSR_SM_LOG Prepares) and the Replies of its client
     * table: buffers taken from the heap one by one while the log fills would slow the first
     * seconds of a run down; they are allocated at start instead (4 KiB each; not when
     * --memory-max is too small to spare it). */
    cfg.bus.loop_options.pool.prealloc[0] = (uint32_t)sm_bufs;
    if (cfg.bus.loop_options.pool.free_max[0] < sm_bufs) {
      cfg.bus.loop_options.pool.free_max[0] = (uint32_t)sm_bufs;
    }
  }
  struct vsr_bus_callbacks cb = {.on_message = node_on_message,
                                 .on_peer_event = node_on_peer_event};
  struct vsr_bus *bus;
  int err = vsr_bus_new(&bus, &cfg.bus, &cb, &sm);
  if (err) {
    vsr_node_say(VSR_LOG_ERROR, NULL, "cannot start: %s", vsr_strerror(err));
    vsr_node_cfg_free(&cfg);
    return 1;
  }
  bool cluster = cfg.bus.cluster_name && cfg.bus.replica_count > 1;
  err = vsr_sm_init(&sm, bus, cfg.bus.replica_index, cluster ? cfg.bus.replica_count : 1,
                    cluster ? vsr_cluster_id(cfg.bus.cluster_name) : (vsr_u128){0, 0});
  if (err) {
    vsr_node_say(VSR_LOG_ERROR, NULL, "cannot start the state machine: %s", vsr_strerror(err));
    vsr_bus_del(bus);
    vsr_node_cfg_free(&cfg);
    return 1;
  }
  sm.primary_timeout_ns = cfg.primary_timeout_ns;
  sm.batch_max = cfg.batch_max;
  /* A batch Prepare (header + Request frames) must fit a frame the replicas accept. */
  if (sm.batch_bytes > cfg.bus.max_message_size - VSR_HEADER_SIZE) {
    sm.batch_bytes = cfg.bus.max_message_size - VSR_HEADER_SIZE;
  }
  FILE *dump = NULL;
  if (cfg.dump_commits) {
    dump = fopen(cfg.dump_commits, "w");
    if (!dump) {
      vsr_node_say(VSR_LOG_ERROR, NULL, "--dump-commits %s: %s", cfg.dump_commits,
                   strerror(errno));
      vsr_sm_fini(&sm);
      vsr_bus_del(bus);
      vsr_node_cfg_free(&cfg);
      return 1;
    }
    sm.dump = dump;
  }
  node_loop = vsr_bus_loop(bus);
  signal(SIGINT, node_on_signal);
  signal(SIGTERM, node_on_signal);
  signal(SIGPIPE, SIG_IGN);
  vsr_node_say(VSR_LOG_INFO, NULL, "replica %u%s running (io %s); Ctrl-C to stop",
          cfg.bus.replica_index,
          !cluster ? "" : " (in a cluster: recovering until the others answer)",
          vsr_loop_backend(node_loop));
  vsr_loop_run(node_loop);
  vsr_node_say(VSR_LOG_INFO, NULL, "shutting down");
  err = vsr_bus_shutdown(bus, 5000000000ull);
  struct vsr_bus_stats st;
  vsr_bus_stats(bus, &st);
  /* Replies and pongs count what the bus accepted; each of those was either written (out) or
   * not sent when its connection closed (dropped on close), or on a QUIC stream the client
   * reset (dropped, in the total). Every accepted Request is
   * answered and its Reply written before the connection closes: with nothing dropped,
   * requests accepted = replies (a cluster's uncommitted ops are the exception). */
  vsr_node_say(VSR_LOG_INFO, NULL,
          "stopped: %llu frames in, %llu out, %llu dropped, %llu replies, "
          "%llu pongs, %llu clients served; %llu replies refused, %llu frames refused (queue "
          "full), %llu frames dropped at close, %llu slow peers closed; %llu requests accepted",
          (unsigned long long)st.frames_in, (unsigned long long)st.frames_out,
          (unsigned long long)(st.drops_backpressure + st.drops_not_connected +
                               st.drops_on_close + st.drops_stream_reset),
          (unsigned long long)sm.replies, (unsigned long long)sm.pongs,
          (unsigned long long)st.clients_accepted, (unsigned long long)sm.replies_refused,
          (unsigned long long)st.drops_backpressure, (unsigned long long)st.drops_on_close,
          (unsigned long long)st.slow_peers_closed, (unsigned long long)sm.requests);
  if (st.quic_retries || st.quic_tokens_invalid || st.quic_evicted) {
    fprintf(stderr,
            "vsrbus node: QUIC handshake floods: %llu Retry sent, %llu invalid tokens refused, "
            "%llu half-opens evicted, peak %llu half-open\n",
            (unsigned long long)st.quic_retries, (unsigned long long)st.quic_tokens_invalid,
            (unsigned long long)st.quic_evicted, (unsigned long long)st.quic_halfopen_peak);
  }
  if (cluster) {
    vsr_node_say(VSR_LOG_INFO, NULL,
            "replica %u: %llu ops committed, %llu prepares received, %llu "
            "prepare_oks received, %llu commits received, %llu resent, %llu deferred, %llu "
            "skipped, %llu foreign, %llu dropped (pipeline full), %llu sends refused (queue "
            "full), %llu sends refused (not connected), %llu dropped at close",
            cfg.bus.replica_index, (unsigned long long)sm.commit,
            (unsigned long long)sm.prepares, (unsigned long long)sm.prepare_oks,
            (unsigned long long)sm.commits, (unsigned long long)sm.resent,
            (unsigned long long)sm.deferred, (unsigned long long)sm.skipped,
            (unsigned long long)sm.foreign,
            (unsigned long long)sm.pipeline_full, (unsigned long long)st.drops_backpressure,
            (unsigned long long)st.drops_not_connected, (unsigned long long)st.drops_on_close);
  }
  if (cluster) {
    vsr_node_say(VSR_LOG_INFO, NULL,
            "replica %u: view %u, %llu view changes, %llu recoveries, %llu sessions, %llu "
            "duplicates answered from the table, %llu duplicates dropped, %llu evictions, %llu "
            "requests not for this replica, %llu repairs sent, %llu repairs received, %llu "
            "batches prepared (%llu requests in them), %llu malformed batches refused",
            cfg.bus.replica_index, sm.view, (unsigned long long)sm.view_changes,
            (unsigned long long)sm.recoveries, (unsigned long long)sm.registers,
            (unsigned long long)sm.duplicates, (unsigned long long)sm.duplicates_dropped,
            (unsigned long long)(sm.evictions[VSR_EVICT_NO_SESSION] +
                                 sm.evictions[VSR_EVICT_SESSION_TOO_LOW]),
            (unsigned long long)sm.not_primary, (unsigned long long)sm.repairs_sent,
            (unsigned long long)sm.repairs_received, (unsigned long long)sm.batches,
            (unsigned long long)sm.batched, (unsigned long long)sm.malformed);
  }
  if (dump) fclose(dump);
  sm.dump = NULL;
  vsr_sm_fini(&sm); /* its messages belong to the bus's pool */
  node_loop = NULL; /* a signal arriving from here on must not touch the freed loop */
  vsr_bus_del(bus);
  vsr_node_cfg_free(&cfg);
  return err ? 1 : 0;
}
