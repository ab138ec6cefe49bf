/* vsrbus_attack: the hostile clients of issue 12 and the legitimate clients measured while they
 * run. One program, one subcommand per role; bench/attack/run.sh starts the nodes and combines
 * them. Every loop is bounded in time (--seconds, plus alarm()) and in count (--conns, --max).
 * Loopback only: addresses are "127.x.y.z:port". Results are printed as key=value lines on
 * stdout; progress and errors go to stderr.
 *
 *   drip      N connections dripping a frame header 1 byte per --interval-ms, M silent ones
 *   claim     N connections sending one header claiming --size bytes (a Request); with
 *             --bodies, then the body too, all but its last byte (so the frame never completes);
 *             with --topup, a claim the node refuses is redialed at half the size (>= 1 MiB)
 *   noread    N connections sending --size Requests as fast as the kernel takes them, never
 *             reading a byte
 *   quic      real QUIC client Initials (ngtcp2 + GnuTLS ClientHello, our ALPN), never
 *             finished: --burst at once, then --rate per second, from --sources addresses
 *   logflood  --kind badframe: connect, one header with an undefined command, repeat;
 *             --kind stranger: connect to a replica port, one ReplicaHello with a wrong MAC;
 *             --kind hold: hold up to --conns connections (EMFILE on a node with a low
 *             descriptor limit), retrying new ones as old ones close
 *   legit     --conns clients (one process each, the client SDK): PingClient (--size 0) or
 *             Request (--size body bytes) round trips, or --connect (QUIC): connect + one ping;
 *             success rate and latency percentiles, a failed attempt times out at --timeout-ms
 *   drain     one client, --depth Requests of --size in flight, until the node closes the
 *             connection or --seconds (pausing --read-pause-us after each reply): requests sent,
 *             replies received, how it ended */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <gnutls/gnutls.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <ngtcp2/ngtcp2_crypto_gnutls.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "vsrbus/vsrbus.h"

#define AT_MS 1000000ull
#define AT_SEC 1000000000ull
#define AT_MAX_CONNS 20000
#define AT_LEGIT_MAX 64
#define AT_LAT_MAX 200000 /* latency samples kept per legit client */
#define AT_QUIC_SOURCES_MAX 250

struct at_cfg {
  const char *addr, *kind, *transport, *cluster;
  uint32_t conns, silent, size, depth, burst, rate, sources, max;
  uint32_t interval_ms, timeout_ms, read_pause_us;
  double seconds;
  bool bodies, connect_mode, topup;
};

static volatile sig_atomic_t at_stop;

static void at_on_signal(int sig) {
  (void)sig;
  at_stop = 1;
}

static uint64_t at_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * AT_SEC + (uint64_t)ts.tv_nsec;
}

static void at_sleep_ms(uint32_t ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static int at_parse_addr(const char *addr, struct sockaddr_in *out) {
  char host[64];
  snprintf(host, sizeof host, "%s", addr ? addr : "");
  char *colon = strrchr(host, ':');
  if (!colon) return -1;
  *colon = 0;
  memset(out, 0, sizeof *out);
  out->sin_family = AF_INET;
  out->sin_port = htons((uint16_t)atoi(colon + 1));
  if (inet_pton(AF_INET, host, &out->sin_addr) != 1) return -1;
  /* Loopback only. */
  return (ntohl(out->sin_addr.s_addr) >> 24) == 127 ? 0 : -1;
}

/* Raises the soft descriptor limit to the hard one (the script sets what it can). */
static void at_raise_nofile(void) {
  struct rlimit r;
  if (getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur < r.rlim_max) {
    r.rlim_cur = r.rlim_max;
    setrlimit(RLIMIT_NOFILE, &r);
  }
}

/* A non-blocking TCP connection to |sa|: the fd once connected within |timeout_ms|, or -1
 * (with |pending| set, the still-connecting fd is returned instead of closed). */
static int at_connect(const struct sockaddr_in *sa, uint32_t timeout_ms, bool keep_pending) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(fd, (const struct sockaddr *)sa, sizeof *sa) == 0) return fd;
  if (errno != EINPROGRESS) {
    close(fd);
    return -1;
  }
  struct pollfd p = {.fd = fd, .events = POLLOUT};
  int n = poll(&p, 1, (int)timeout_ms);
  if (n == 1) {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err == 0) return fd;
    close(fd);
    return -1;
  }
  if (keep_pending) return fd;
  close(fd);
  return -1;
}

/* The peer closed or reset the connection (FIN seen, even with unread data, or an error). */
static bool at_peer_gone(int fd) {
  struct pollfd p = {.fd = fd, .events = POLLRDHUP};
  if (poll(&p, 1, 0) == 1 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR))) return true;
  return false;
}

/* A valid Request header (client plane) claiming |size| bytes in all. */
static void at_request_header(uint8_t h[VSR_HEADER_SIZE], uint32_t size, uint64_t client,
                              uint64_t request) {
  struct vsr_request_header rq;
  memset(&rq, 0, sizeof rq);
  rq.size = size;
  rq.command = VSR_CMD_REQUEST;
  rq.client.lo = client ? client : 1;
  rq.client.hi = 0xa77acc;
  rq.request = request ? request : 1;
  rq.session = 1;
  rq.operation = VSR_OP_SEND_MESSAGES;
  memcpy(h, &rq, VSR_HEADER_SIZE);
}

static bool at_send_all(int fd, const uint8_t *p, size_t n, uint64_t deadline) {
  while (n > 0 && !at_stop) {
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w > 0) {
      p += w;
      n -= (size_t)w;
      continue;
    }
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (at_now() >= deadline) return false;
      struct pollfd pf = {.fd = fd, .events = POLLOUT};
      poll(&pf, 1, 50);
      continue;
    }
    return false;
  }
  return n == 0;
}

/* Opens |n| connections into |fds| (at most 1 s each); returns how many succeeded. */
static uint32_t at_open(const struct sockaddr_in *sa, int *fds, uint32_t n, uint64_t deadline) {
  uint32_t ok = 0;
  for (uint32_t i = 0; i < n; i++) {
    fds[i] = at_stop || at_now() >= deadline ? -1 : at_connect(sa, 1000, false);
    if (fds[i] >= 0) ok++;
  }
  return ok;
}

static uint32_t at_count_gone(const int *fds, uint32_t n, bool *gone) {
  uint32_t c = 0;
  for (uint32_t i = 0; i < n; i++) {
    if (fds[i] < 0) continue;
    if (!gone[i] && at_peer_gone(fds[i])) gone[i] = true;
    if (gone[i]) c++;
  }
  return c;
}

static void at_close_all(int *fds, uint32_t n) {
  for (uint32_t i = 0; i < n; i++) {
    if (fds[i] >= 0) close(fds[i]);
    fds[i] = -1;
  }
}

/* ---- drip ------------------------------------------------------------------------------- */

static int at_drip(const struct at_cfg *cfg, const struct sockaddr_in *sa) {
  uint32_t n = cfg->conns + cfg->silent;
  int *fds = calloc(n, sizeof *fds);
  bool *gone = calloc(n, sizeof *gone);
  uint32_t *sent = calloc(n, sizeof *sent);
  if (!fds || !gone || !sent) return 1;
  uint64_t start = at_now(), deadline = start + (uint64_t)(cfg->seconds * 1e9);
  uint32_t opened = at_open(sa, fds, n, deadline);
  fprintf(stderr, "drip: %u of %u connections open\n", opened, n);
  uint8_t hdr[VSR_HEADER_SIZE];
  at_request_header(hdr, VSR_HEADER_SIZE + 64, 7, 1);
  uint64_t bytes = 0, first_close_ns = 0;
  while (!at_stop && at_now() < deadline) {
    for (uint32_t i = 0; i < cfg->conns; i++) { /* drippers first; the rest stay silent */
      if (fds[i] < 0 || gone[i] || sent[i] >= VSR_HEADER_SIZE - 1) continue;
      ssize_t w = send(fds[i], hdr + sent[i], 1, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (w == 1) {
        sent[i]++;
        bytes++;
      } else if (w < 0 && errno != EAGAIN && errno != EINTR) {
        gone[i] = true;
      }
    }
    uint32_t g = at_count_gone(fds, n, gone);
    if (g > 0 && first_close_ns == 0) first_close_ns = at_now() - start;
    at_sleep_ms(cfg->interval_ms);
  }
  uint32_t g = at_count_gone(fds, n, gone), gd = 0;
  for (uint32_t i = 0; i < cfg->conns; i++) gd += gone[i] && fds[i] >= 0;
  printf("attack_conns=%u\nattack_closed=%u\ndrip_closed=%u\nsilent_closed=%u\n"
         "attack_bytes=%llu\nfirst_close_ms=%llu\n",
         opened, g, gd, g - gd, (unsigned long long)bytes,
         (unsigned long long)(first_close_ns / AT_MS));
  at_close_all(fds, n);
  free(fds);
  free(gone);
  free(sent);
  return 0;
}

/* ---- claim ------------------------------------------------------------------------------ */

static int at_claim(const struct at_cfg *cfg, const struct sockaddr_in *sa) {
  uint32_t n = cfg->conns;
  int *fds = calloc(n, sizeof *fds);
  bool *gone = calloc(n, sizeof *gone);
  uint64_t *body_sent = calloc(n, sizeof *body_sent);
  uint32_t *size = calloc(n, sizeof *size);
  if (!fds || !gone || !body_sent || !size) return 1;
  for (uint32_t i = 0; i < n; i++) size[i] = cfg->size;
  uint64_t redials = 0, closed_before = 0, limit = cfg->max ? cfg->max : 1000;
  uint64_t start = at_now(), deadline = start + (uint64_t)(cfg->seconds * 1e9);
  uint32_t opened = at_open(sa, fds, n, deadline), headers = 0;
  uint64_t bytes = 0;
  for (uint32_t i = 0; i < n; i++) {
    if (fds[i] < 0) continue;
    uint8_t hdr[VSR_HEADER_SIZE];
    at_request_header(hdr, cfg->size, 1000 + i, 1);
    if (at_send_all(fds[i], hdr, sizeof hdr, deadline)) {
      headers++;
      bytes += sizeof hdr;
    } else {
      gone[i] = true;
    }
  }
  fprintf(stderr, "claim: %u connections, %u headers claiming %u bytes each\n", opened, headers,
          cfg->size);
  /* Bodies: all but the last byte, round robin in 256 KiB slices, non-blocking. */
  static uint8_t chunk[256 * 1024];
  memset(chunk, 0x5a, sizeof chunk);
  while (!at_stop && at_now() < deadline) {
    bool progress = false;
    if (cfg->bodies) {
      for (uint32_t i = 0; i < n; i++) {
        uint64_t body_max = size[i] > VSR_HEADER_SIZE + 1 ? size[i] - VSR_HEADER_SIZE - 1 : 0;
        if (fds[i] < 0 || gone[i] || body_sent[i] >= body_max) continue;
        size_t want = sizeof chunk;
        if (want > body_max - body_sent[i]) want = (size_t)(body_max - body_sent[i]);
        ssize_t w = send(fds[i], chunk, want, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) {
          body_sent[i] += (uint64_t)w;
          bytes += (uint64_t)w;
          progress = true;
        } else if (w < 0 && errno != EAGAIN && errno != EINTR) {
          gone[i] = true;
        }
      }
    }
    at_count_gone(fds, n, gone);
    /* --topup: a claim the node refused is redialed at half the size (down to 1 MiB), so the
     * claims fill whatever the node has left. Bounded by --max redials. */
    for (uint32_t i = 0; cfg->topup && i < n && redials < limit && at_now() < deadline; i++) {
      if (fds[i] < 0 || !gone[i] || size[i] / 2 < (1u << 20)) continue;
      close(fds[i]);
      closed_before++;
      gone[i] = false;
      size[i] /= 2;
      body_sent[i] = 0;
      redials++;
      fds[i] = at_connect(sa, 1000, false);
      uint8_t hdr[VSR_HEADER_SIZE];
      at_request_header(hdr, size[i], 1000 + i, 1);
      if (fds[i] < 0 || !at_send_all(fds[i], hdr, sizeof hdr, deadline)) {
        gone[i] = fds[i] >= 0;
        continue;
      }
      bytes += sizeof hdr;
      progress = true;
    }
    if (!progress) at_sleep_ms(cfg->interval_ms);
  }
  uint32_t g = at_count_gone(fds, n, gone);
  uint64_t claimed = 0;
  for (uint32_t i = 0; i < n; i++) claimed += fds[i] >= 0 && !gone[i] ? size[i] : 0;
  printf("attack_conns=%llu\nattack_closed=%llu\nheaders=%u\nredials=%llu\nattack_bytes=%llu\n"
         "open_claims_mib=%llu\n",
         (unsigned long long)(opened + redials), (unsigned long long)(g + closed_before), headers,
         (unsigned long long)redials, (unsigned long long)bytes,
         (unsigned long long)(claimed >> 20));
  free(size);
  at_close_all(fds, n);
  free(fds);
  free(gone);
  free(body_sent);
  return 0;
}

/* ---- noread ----------------------------------------------------------------------------- */

static int at_noread(const struct at_cfg *cfg, const struct sockaddr_in *sa) {
  uint32_t n = cfg->conns;
  int *fds = calloc(n, sizeof *fds);
  bool *gone = calloc(n, sizeof *gone);
  uint32_t *off = calloc(n, sizeof *off);
  uint8_t *frame = calloc(1, cfg->size);
  if (!fds || !gone || !off || !frame || cfg->size < VSR_HEADER_SIZE) return 1;
  uint64_t start = at_now(), deadline = start + (uint64_t)(cfg->seconds * 1e9);
  uint32_t opened = at_open(sa, fds, n, deadline);
  at_request_header(frame, cfg->size, 5000, 1);
  memset(frame + VSR_HEADER_SIZE, 0x33, cfg->size - VSR_HEADER_SIZE);
  uint64_t frames = 0;
  struct pollfd *pf = calloc(n, sizeof *pf);
  if (!pf) return 1;
  while (!at_stop && at_now() < deadline) {
    for (uint32_t i = 0; i < n; i++) {
      if (fds[i] < 0 || gone[i]) continue;
      for (int k = 0; k < 64; k++) { /* bounded per round */
        ssize_t w = send(fds[i], frame + off[i], cfg->size - off[i], MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) {
          off[i] += (uint32_t)w;
          if (off[i] == cfg->size) {
            off[i] = 0;
            frames++;
          }
          continue;
        }
        if (w < 0 && errno != EAGAIN && errno != EINTR) gone[i] = true;
        break;
      }
    }
    at_count_gone(fds, n, gone);
    uint32_t np = 0;
    for (uint32_t i = 0; i < n; i++) {
      if (fds[i] >= 0 && !gone[i]) pf[np++] = (struct pollfd){.fd = fds[i], .events = POLLOUT};
    }
    if (np == 0) break;
    poll(pf, np, 20);
  }
  uint32_t g = at_count_gone(fds, n, gone);
  printf("attack_conns=%u\nattack_closed=%u\nattack_frames=%llu\n", opened, g,
         (unsigned long long)frames);
  at_close_all(fds, n);
  free(fds);
  free(gone);
  free(off);
  free(frame);
  free(pf);
  return 0;
}

/* ---- quic: Initials that never finish ---------------------------------------------------- */

struct at_qi {
  ngtcp2_crypto_conn_ref ref;
  ngtcp2_conn *qc;
};

static ngtcp2_conn *at_qi_get_conn(ngtcp2_crypto_conn_ref *ref) {
  return ((struct at_qi *)ref->user_data)->qc;
}

static void at_rand_bytes(uint8_t *p, size_t n) {
  while (n > 0) {
    ssize_t r = getrandom(p, n, 0);
    if (r <= 0) {
      for (size_t i = 0; i < n; i++) p[i] = (uint8_t)rand();
      return;
    }
    p += r;
    n -= (size_t)r;
  }
}

static void at_qi_rand(uint8_t *dest, size_t len, const ngtcp2_rand_ctx *ctx) {
  (void)ctx;
  at_rand_bytes(dest, len);
}

static int at_qi_new_cid(ngtcp2_conn *qc, ngtcp2_cid *cid, uint8_t *token, size_t cidlen,
                         void *ud) {
  (void)qc;
  (void)ud;
  at_rand_bytes(cid->data, cidlen);
  cid->datalen = cidlen;
  at_rand_bytes(token, NGTCP2_STATELESS_RESET_TOKENLEN);
  return 0;
}

static const ngtcp2_callbacks at_qi_callbacks = {
    .client_initial = ngtcp2_crypto_client_initial_cb,
    .recv_crypto_data = ngtcp2_crypto_recv_crypto_data_cb,
    .encrypt = ngtcp2_crypto_encrypt_cb,
    .decrypt = ngtcp2_crypto_decrypt_cb,
    .hp_mask = ngtcp2_crypto_hp_mask_cb,
    .recv_retry = ngtcp2_crypto_recv_retry_cb,
    .rand = at_qi_rand,
    .get_new_connection_id = at_qi_new_cid,
    .update_key = ngtcp2_crypto_update_key_cb,
    .delete_crypto_aead_ctx = ngtcp2_crypto_delete_crypto_aead_ctx_cb,
    .delete_crypto_cipher_ctx = ngtcp2_crypto_delete_crypto_cipher_ctx_cb,
    .get_path_challenge_data = ngtcp2_crypto_get_path_challenge_data_cb,
    .version_negotiation = ngtcp2_crypto_version_negotiation_cb,
};

#define AT_QI_PRIORITY                                                                       \
  "NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+AES-128-GCM:+AES-256-GCM:+CHACHA20-POLY1305:" \
  "+AES-128-CCM:%DISABLE_TLS13_COMPAT_MODE"

/* Writes the first datagram of a fresh client connection (an Initial carrying a real
 * ClientHello with our ALPN) into |buf|; returns its length or -1. */
static ssize_t at_qi_initial(gnutls_certificate_credentials_t cred, const struct sockaddr_in *local,
                             const struct sockaddr_in *remote, uint8_t *buf, size_t cap) {
  struct at_qi q = {.ref = {.get_conn = at_qi_get_conn}};
  q.ref.user_data = &q;
  ngtcp2_cid dcid = {.datalen = 18}, scid = {.datalen = 16};
  at_rand_bytes(dcid.data, dcid.datalen);
  at_rand_bytes(scid.data, scid.datalen);
  ngtcp2_settings s;
  ngtcp2_settings_default(&s);
  s.initial_ts = at_now();
  ngtcp2_transport_params p;
  ngtcp2_transport_params_default(&p);
  p.initial_max_stream_data_bidi_local = 1 << 20;
  p.initial_max_data = 1 << 20;
  p.max_idle_timeout = 30 * AT_SEC;
  ngtcp2_path path = {
      .local = {(ngtcp2_sockaddr *)local, sizeof *local},
      .remote = {(ngtcp2_sockaddr *)remote, sizeof *remote},
  };
  if (ngtcp2_conn_client_new(&q.qc, &dcid, &scid, &path, NGTCP2_PROTO_VER_V1, &at_qi_callbacks,
                             &s, &p, NULL, &q) != 0) {
    return -1;
  }
  gnutls_session_t tls = NULL;
  ssize_t n = -1;
  if (gnutls_init(&tls, GNUTLS_CLIENT | GNUTLS_NO_TICKETS) < 0) goto out;
  if (ngtcp2_crypto_gnutls_configure_client_session(tls) != 0) goto out;
  if (gnutls_priority_set_direct(tls, AT_QI_PRIORITY, NULL) < 0) goto out;
  if (gnutls_credentials_set(tls, GNUTLS_CRD_CERTIFICATE, cred) < 0) goto out;
  gnutls_datum_t alpn = {(unsigned char *)"iggy.consensus.v1", 17};
  gnutls_alpn_set_protocols(tls, &alpn, 1, GNUTLS_ALPN_MANDATORY);
  gnutls_server_name_set(tls, GNUTLS_NAME_DNS, "localhost", 9);
  gnutls_session_set_ptr(tls, &q.ref);
  ngtcp2_conn_set_tls_native_handle(q.qc, tls);
  ngtcp2_path_storage ps;
  ngtcp2_path_storage_zero(&ps);
  n = ngtcp2_conn_write_pkt(q.qc, &ps.path, NULL, buf, cap, at_now());
  if (n <= 0) n = -1;
out:
  ngtcp2_conn_del(q.qc);
  if (tls) gnutls_deinit(tls);
  return n;
}

static int at_quic(const struct at_cfg *cfg, const struct sockaddr_in *sa) {
  uint32_t ns = cfg->sources ? cfg->sources : 1;
  if (ns > AT_QUIC_SOURCES_MAX) ns = AT_QUIC_SOURCES_MAX;
  int fds[AT_QUIC_SOURCES_MAX];
  struct sockaddr_in local[AT_QUIC_SOURCES_MAX];
  uint32_t nopen = 0;
  for (uint32_t i = 0; i < ns; i++) {
    /* Sources 127.0.1.1, 127.0.1.2, ...: many client addresses, none of them the legit one. */
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(0x7f000100u + 1u + i)};
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
      if (fd >= 0) close(fd);
      continue;
    }
    int small = 4096; /* we never read: keep what the server sends back small */
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    fds[nopen] = fd;
    local[nopen++] = a;
  }
  if (nopen == 0) {
    fprintf(stderr, "quic: no UDP source socket\n");
    return 1;
  }
  gnutls_certificate_credentials_t cred;
  if (gnutls_certificate_allocate_credentials(&cred) < 0) return 1;
  uint64_t start = at_now(), deadline = start + (uint64_t)(cfg->seconds * 1e9);
  uint64_t sent = 0, failed = 0, burst_ns = 0;
  uint8_t buf[1500];
  uint64_t limit = cfg->max ? cfg->max : 1000000;
  /* The burst, as fast as we can build them. */
  for (uint32_t i = 0; i < cfg->burst && !at_stop && at_now() < deadline && sent < limit; i++) {
    uint32_t k = i % nopen;
    ssize_t n = at_qi_initial(cred, &local[k], sa, buf, sizeof buf);
    if (n > 0 && sendto(fds[k], buf, (size_t)n, 0, (const struct sockaddr *)sa, sizeof *sa) == n) {
      sent++;
    } else {
      failed++;
    }
  }
  burst_ns = at_now() - start;
  uint64_t burst_sent = sent;
  fprintf(stderr, "quic: burst of %llu Initials in %.2f s\n", (unsigned long long)burst_sent,
          (double)burst_ns / 1e9);
  /* Then --rate per second, paced in 10 ms slices. */
  uint64_t flood_start = at_now(), flood_sent = 0;
  while (cfg->rate > 0 && !at_stop && at_now() < deadline && sent < limit) {
    uint64_t el = at_now() - flood_start;
    uint64_t due = el * cfg->rate / AT_SEC;
    while (flood_sent < due && at_now() < deadline && sent < limit) {
      uint32_t k = (uint32_t)(sent % nopen);
      ssize_t n = at_qi_initial(cred, &local[k], sa, buf, sizeof buf);
      if (n > 0 && sendto(fds[k], buf, (size_t)n, 0, (const struct sockaddr *)sa, sizeof *sa) == n) {
        sent++;
      } else {
        failed++;
      }
      flood_sent++;
    }
    at_sleep_ms(10);
  }
  double fl_s = (double)(at_now() - flood_start) / 1e9;
  printf("attack_initials=%llu\nburst_initials=%llu\nburst_ms=%llu\nflood_initials=%llu\n"
         "flood_rate_per_s=%.0f\ninitials_failed=%llu\nsources=%u\n",
         (unsigned long long)sent, (unsigned long long)burst_sent,
         (unsigned long long)(burst_ns / AT_MS), (unsigned long long)flood_sent,
         fl_s > 0 ? (double)flood_sent / fl_s : 0.0, (unsigned long long)failed, nopen);
  for (uint32_t i = 0; i < nopen; i++) close(fds[i]);
  gnutls_certificate_free_credentials(cred);
  return 0;
}

/* ---- logflood ----------------------------------------------------------------------------- */

static int at_logflood(const struct at_cfg *cfg, const struct sockaddr_in *sa) {
  uint64_t start = at_now(), deadline = start + (uint64_t)(cfg->seconds * 1e9);
  uint64_t attempts = 0, connected = 0, closed = 0;
  uint64_t limit = cfg->max ? cfg->max : 1000000;
  if (strcmp(cfg->kind, "hold") == 0) {
    uint32_t n = cfg->conns;
    int *fds = calloc(n, sizeof *fds);
    bool *gone = calloc(n, sizeof *gone);
    if (!fds || !gone) return 1;
    for (uint32_t i = 0; i < n; i++) fds[i] = -1;
    while (!at_stop && at_now() < deadline && attempts < limit) {
      for (uint32_t i = 0; i < n && at_now() < deadline; i++) {
        if (fds[i] >= 0 && !gone[i] && !at_peer_gone(fds[i])) continue;
        if (fds[i] >= 0) {
          close(fds[i]);
          closed++;
        }
        gone[i] = false;
        fds[i] = at_connect(sa, 5, true); /* pending ones are kept: they sit in the backlog */
        attempts++;
        if (fds[i] >= 0) connected++;
      }
      at_sleep_ms(cfg->interval_ms);
    }
    uint32_t held = 0;
    for (uint32_t i = 0; i < n; i++) held += fds[i] >= 0;
    printf("attack_conns=%llu\nattack_closed=%llu\nheld=%u\n", (unsigned long long)attempts,
           (unsigned long long)closed, held);
    at_close_all(fds, n);
    free(fds);
    free(gone);
    return 0;
  }
  bool stranger = strcmp(cfg->kind, "stranger") == 0;
  if (!stranger && strcmp(cfg->kind, "badframe") != 0) return 2;
  uint8_t hdr[VSR_HEADER_SIZE];
  memset(hdr, 0, sizeof hdr);
  vsr_put_u32(hdr + VSR_SIZE_FIELD_OFFSET, VSR_HEADER_SIZE);
  if (stranger) {
    /* A ReplicaHello from "replica 1" of some cluster, with a MAC nobody can check. */
    hdr[60] = VSR_CMD_REPLICA_HELLO;
    hdr[61] = 1;
    at_rand_bytes(hdr + 128, 128);
  } else {
    hdr[60] = 0xee; /* no such command */
  }
  /* Up to --conns sockets in parallel, each: connect, one header, wait for the close. */
  uint32_t n = cfg->conns ? cfg->conns : 8;
  int *fds = calloc(n, sizeof *fds);
  uint64_t *since = calloc(n, sizeof *since);
  if (!fds || !since) return 1;
  for (uint32_t i = 0; i < n; i++) fds[i] = -1;
  while (!at_stop && at_now() < deadline) {
    for (uint32_t i = 0; i < n; i++) {
      if (fds[i] >= 0) {
        bool g = at_peer_gone(fds[i]);
        if (!g && at_now() - since[i] < 500 * AT_MS) continue;
        if (g) closed++;
        close(fds[i]);
        fds[i] = -1;
      }
      if (attempts >= limit || at_now() >= deadline) continue;
      attempts++;
      fds[i] = at_connect(sa, 200, false);
      if (fds[i] < 0) continue;
      connected++;
      since[i] = at_now();
      if (send(fds[i], hdr, sizeof hdr, MSG_NOSIGNAL | MSG_DONTWAIT) != (ssize_t)sizeof hdr) {
        close(fds[i]);
        fds[i] = -1;
      }
    }
    if (attempts >= limit) break;
    struct pollfd pf[64];
    uint32_t np = 0;
    for (uint32_t i = 0; i < n && np < 64; i++) {
      if (fds[i] >= 0) pf[np++] = (struct pollfd){.fd = fds[i], .events = POLLRDHUP};
    }
    poll(pf, np, 2);
  }
  at_close_all(fds, n);
  printf("attack_conns=%llu\nattack_connected=%llu\nattack_closed=%llu\n",
         (unsigned long long)attempts, (unsigned long long)connected, (unsigned long long)closed);
  free(fds);
  free(since);
  return 0;
}

/* ---- legit -------------------------------------------------------------------------------- */

struct at_slot {
  uint64_t attempts, ok, connect_fail, timeouts, other_fail;
  uint32_t nlat;
  uint32_t lat_us[AT_LAT_MAX];
};

static void at_client_opts(const struct at_cfg *cfg, struct vsr_client_options *o) {
  vsr_client_options_default(o);
  o->addr = cfg->addr;
  o->transport = cfg->transport;
  if (strcmp(cfg->transport, "quic") == 0) o->quic.insecure = true; /* loopback benchmark */
}

/* One request (or ping) on |c|; 0 = answered and matching. */
static int at_legit_call(const struct at_cfg *cfg, struct vsr_client *c, vsr_u128 id,
                         vsr_u128 cluster, uint64_t seq) {
  uint32_t size = VSR_HEADER_SIZE + cfg->size;
  struct vsr_msg *m = vsr_client_msg_new(c, size), *r = NULL;
  if (!m) return VSR_ENOMEM;
  if (cfg->size == 0) {
    struct vsr_header *h = (struct vsr_header *)m->data;
    h->command = VSR_CMD_PING_CLIENT;
    vsr_put_u64(h->reserved_command, seq);
  } else {
    struct vsr_request_header *rq = (struct vsr_request_header *)m->data;
    rq->command = VSR_CMD_REQUEST;
    rq->cluster = cluster;
    rq->client = id;
    rq->request = seq;
    rq->session = 1;
    rq->operation = VSR_OP_SEND_MESSAGES;
    memset(m->data + VSR_HEADER_SIZE, (int)(seq & 0xff), cfg->size);
  }
  int err = vsr_client_call(c, m, &r, (uint64_t)cfg->timeout_ms * AT_MS);
  vsr_msg_unref(m);
  if (err) return err;
  bool match;
  if (cfg->size == 0) {
    const struct vsr_header *rh = (const struct vsr_header *)r->data;
    match = rh->command == VSR_CMD_PONG_CLIENT && vsr_get_u64(rh->reserved_command) == seq;
  } else {
    const struct vsr_reply_header *rp = (const struct vsr_reply_header *)r->data;
    match = rp->command == VSR_CMD_REPLY && rp->request == seq;
  }
  vsr_msg_unref(r);
  return match ? 0 : VSR_EPROTO;
}

static void at_legit_child(const struct at_cfg *cfg, struct at_slot *s, uint32_t idx) {
  vsr_log_set_level(VSR_LOG_ERROR);
  struct vsr_client_options o;
  at_client_opts(cfg, &o);
  vsr_u128 id = {0, 0};
  at_rand_bytes((uint8_t *)&id, sizeof id);
  id.lo |= 1;
  vsr_u128 cluster = cfg->cluster ? vsr_cluster_id(cfg->cluster) : (vsr_u128){0, 0};
  uint64_t deadline = at_now() + (uint64_t)(cfg->seconds * 1e9), seq = 1;
  struct vsr_client *c = NULL;
  /* Spread the clients' first requests over one interval. */
  if (cfg->interval_ms) at_sleep_ms(cfg->interval_ms * idx / (cfg->conns ? cfg->conns : 1));
  while (!at_stop && at_now() < deadline) {
    uint64_t t0 = at_now();
    s->attempts++;
    int err = 0;
    if (!c) {
      err = vsr_client_connect(&c, &o, (uint64_t)cfg->timeout_ms * AT_MS);
      if (err) {
        c = NULL;
        s->connect_fail++;
      }
    }
    if (!err) err = at_legit_call(cfg, c, id, cluster, seq++);
    uint64_t dt = at_now() - t0;
    if (err == 0) {
      s->ok++;
      if (s->nlat < AT_LAT_MAX) s->lat_us[s->nlat++] = (uint32_t)(dt / 1000 ? dt / 1000 : 1);
    } else if (c) {
      if (err == VSR_ETIMEDOUT) s->timeouts++;
      else s->other_fail++;
    }
    /* --connect: every attempt is a fresh connection. Otherwise reconnect after a failure, so
     * a late reply can never be taken for the next one. */
    if (c && (cfg->connect_mode || err != 0)) {
      vsr_client_del(c);
      c = NULL;
    }
    if (cfg->interval_ms) {
      uint64_t used = (at_now() - t0) / AT_MS;
      if (used < cfg->interval_ms) at_sleep_ms(cfg->interval_ms - (uint32_t)used);
    }
  }
  if (c) vsr_client_del(c);
}

static int at_cmp_u32(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return (x > y) - (x < y);
}

static int at_legit(const struct at_cfg *cfg) {
  uint32_t n = cfg->conns ? cfg->conns : 1;
  if (n > AT_LEGIT_MAX) n = AT_LEGIT_MAX;
  size_t bytes = sizeof(struct at_slot) * n;
  struct at_slot *slots =
      mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (slots == MAP_FAILED) return 1;
  pid_t pids[AT_LEGIT_MAX];
  for (uint32_t i = 0; i < n; i++) {
    pids[i] = fork();
    if (pids[i] == 0) {
      signal(SIGTERM, at_on_signal);
      alarm((unsigned)cfg->seconds + (cfg->timeout_ms / 1000u) * 2u + 10u);
      at_legit_child(cfg, &slots[i], i);
      _exit(0);
    }
  }
  for (uint32_t i = 0; i < n; i++) {
    if (pids[i] > 0) waitpid(pids[i], NULL, 0);
  }
  uint64_t attempts = 0, ok = 0, cfail = 0, tmo = 0, other = 0, nl = 0;
  for (uint32_t i = 0; i < n; i++) {
    attempts += slots[i].attempts;
    ok += slots[i].ok;
    cfail += slots[i].connect_fail;
    tmo += slots[i].timeouts;
    other += slots[i].other_fail;
    nl += slots[i].nlat;
  }
  uint32_t *all = calloc(nl ? nl : 1, sizeof *all);
  uint64_t k = 0;
  for (uint32_t i = 0; all && i < n; i++) {
    memcpy(all + k, slots[i].lat_us, slots[i].nlat * sizeof *all);
    k += slots[i].nlat;
  }
  if (all && nl) qsort(all, nl, sizeof *all, at_cmp_u32);
  /* p99 over every attempt: a failed attempt counts as slower than any answer. */
  double p50 = -1, p99 = -1, p99_ok = -1, mx = -1;
  if (nl) {
    p50 = all[nl / 2] / 1000.0;
    p99_ok = all[(nl * 99) / 100 < nl ? (nl * 99) / 100 : nl - 1] / 1000.0;
    mx = all[nl - 1] / 1000.0;
  }
  uint64_t rank = attempts ? (attempts * 99 + 99) / 100 : 0; /* nearest rank, 1-based */
  bool p99_failed = rank > nl;
  if (!p99_failed && rank > 0) p99 = all[rank - 1] / 1000.0;
  printf("legit_attempts=%llu\nlegit_ok=%llu\nlegit_success_pct=%.1f\nlegit_connect_fail=%llu\n"
         "legit_timeouts=%llu\nlegit_other_fail=%llu\n",
         (unsigned long long)attempts, (unsigned long long)ok,
         attempts ? 100.0 * (double)ok / (double)attempts : 0.0, (unsigned long long)cfail,
         (unsigned long long)tmo, (unsigned long long)other);
  if (p99_failed) printf("legit_p99_ms=>%u\n", cfg->timeout_ms);
  else printf("legit_p99_ms=%.2f\n", p99);
  printf("legit_p50_ms=%.2f\nlegit_p99_ok_ms=%.2f\nlegit_max_ms=%.2f\n", p50, p99_ok, mx);
  free(all);
  munmap(slots, bytes);
  return 0;
}

/* ---- drain -------------------------------------------------------------------------------- */

static int at_drain(const struct at_cfg *cfg) {
  vsr_log_set_level(VSR_LOG_ERROR);
  struct vsr_client_options o;
  at_client_opts(cfg, &o);
  struct vsr_client *c;
  int err = vsr_client_connect(&c, &o, 5 * AT_SEC);
  if (err) {
    printf("drain_error=%s\n", vsr_strerror(err));
    return 0;
  }
  vsr_u128 id = {0x5157, 0xd1a1};
  uint64_t deadline = at_now() + (uint64_t)(cfg->seconds * 1e9);
  uint64_t sent = 0, replies = 0, next = 1, bad = 0;
  uint32_t depth = cfg->depth ? cfg->depth : 4;
  int end = 0;
  while (!at_stop && at_now() < deadline) {
    while (next - 1 - replies < depth) {
      struct vsr_msg *m = vsr_client_msg_new(c, VSR_HEADER_SIZE + cfg->size);
      if (!m) break;
      struct vsr_request_header *rq = (struct vsr_request_header *)m->data;
      rq->command = VSR_CMD_REQUEST;
      rq->client = id;
      rq->request = next;
      rq->session = 1;
      rq->operation = VSR_OP_SEND_MESSAGES;
      memset(m->data + VSR_HEADER_SIZE, 0x44, cfg->size);
      int e = vsr_client_send(c, m);
      vsr_msg_unref(m);
      if (e) break;
      next++;
      sent++;
    }
    struct vsr_msg *r = NULL;
    err = vsr_client_recv(c, &r, 200 * AT_MS);
    if (err == VSR_ETIMEDOUT) continue;
    if (err) {
      end = err;
      break;
    }
    const struct vsr_reply_header *rp = (const struct vsr_reply_header *)r->data;
    if (rp->command == VSR_CMD_REPLY) replies++;
    else bad++;
    vsr_msg_unref(r);
    if (cfg->read_pause_us) { /* a client busy with its own work between replies */
      struct timespec ts = {0, (long)cfg->read_pause_us * 1000L};
      nanosleep(&ts, NULL);
    }
  }
  printf("drain_sent=%llu\ndrain_replies=%llu\ndrain_unanswered=%llu\ndrain_other=%llu\n"
         "drain_end=%s\n",
         (unsigned long long)sent, (unsigned long long)replies,
         (unsigned long long)(sent - replies), (unsigned long long)bad,
         end ? vsr_strerror(end) : "deadline");
  vsr_client_del(c);
  return 0;
}

/* ---- main --------------------------------------------------------------------------------- */

static void at_usage(FILE *f) {
  fprintf(f,
          "usage: vsrbus_attack drip|claim|noread|quic|logflood|legit|drain --addr IP:PORT\n"
          "         [--seconds S] [--conns N] [--silent N] [--size BYTES] [--bodies]\n"
          "         [--topup] [--interval-ms MS] [--timeout-ms MS] [--depth N] [--burst N] [--rate N]\n"
          "         [--sources N] [--max N] [--kind badframe|stranger|hold]\n"
          "         [--transport tcp|quic] [--connect] [--cluster NAME] [--read-pause-us US]\n"
          "Loopback addresses only. Prints key=value lines.\n");
}

int main(int argc, char **argv) {
  if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
    at_usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const char *cmd = argv[1];
  struct at_cfg cfg = {.kind = "badframe", .transport = "tcp", .conns = 1, .size = 0,
                       .interval_ms = 200, .timeout_ms = 2000, .seconds = 10, .depth = 4,
                       .sources = 64};
  static const struct option longopts[] = {
      {"addr", required_argument, 0, 'a'},     {"seconds", required_argument, 0, 's'},
      {"conns", required_argument, 0, 'n'},    {"silent", required_argument, 0, 'S'},
      {"size", required_argument, 0, 'z'},     {"bodies", no_argument, 0, 'b'},
      {"interval-ms", required_argument, 0, 'i'}, {"timeout-ms", required_argument, 0, 't'},
      {"depth", required_argument, 0, 'd'},    {"burst", required_argument, 0, 'B'},
      {"rate", required_argument, 0, 'r'},     {"sources", required_argument, 0, 'o'},
      {"max", required_argument, 0, 'm'},      {"kind", required_argument, 0, 'k'},
      {"transport", required_argument, 0, 'T'}, {"connect", no_argument, 0, 'C'},
      {"cluster", required_argument, 0, 'c'},  {"help", no_argument, 0, 'h'},
      {"topup", no_argument, 0, 'U'},          {"read-pause-us", required_argument, 0, 'P'},
      {0, 0, 0, 0},
  };
  optind = 2;
  int ch;
  while ((ch = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
    switch (ch) {
    case 'a': cfg.addr = optarg; break;
    case 's': cfg.seconds = strtod(optarg, NULL); break;
    case 'n': cfg.conns = (uint32_t)strtoul(optarg, NULL, 10); break;
    case 'S': cfg.silent = (uint32_t)strtoul(optarg, NULL, 10); break;
    case 'z': cfg.size = (uint32_t)strtoul(optarg, NULL, 10); break;
    case 'b': cfg.bodies = true; break;
    case 'U': cfg.topup = true; break;
    case 'P': cfg.read_pause_us = (uint32_t)strtoul(optarg, NULL, 10) % 1000000u; break;
    case 'i': cfg.interval_ms = (uint32_t)strtoul(optarg, NULL, 10); break;
    case 't': cfg.timeout_ms = (uint32_t)strtoul(optarg, NULL, 10); break;
    case 'd': cfg.depth = (uint32_t)strtoul(optarg, NULL, 10); break;
    case 'B': cfg.burst = (uint32_t)strtoul(optarg, NULL, 10); break;
    case 'r': cfg.rate = (uint32_t)strtoul(optarg, NULL, 10); break;
    case 'o': cfg.sources = (uint32_t)strtoul(optarg, NULL, 10); break;
    case 'm': cfg.max = (uint32_t)strtoul(optarg, NULL, 10); break;
    case 'k': cfg.kind = optarg; break;
    case 'T': cfg.transport = optarg; break;
    case 'C': cfg.connect_mode = true; break;
    case 'c': cfg.cluster = optarg; break;
    case 'h': at_usage(stdout); return 0;
    default: at_usage(stderr); return 2;
    }
  }
  struct sockaddr_in sa;
  if (optind < argc || at_parse_addr(cfg.addr, &sa) != 0 || cfg.seconds <= 0 ||
      cfg.seconds > 600 || cfg.conns + cfg.silent > AT_MAX_CONNS || cfg.interval_ms > 60000) {
    fprintf(stderr, "vsrbus_attack: bad arguments (loopback --addr IP:PORT required)\n");
    at_usage(stderr);
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  signal(SIGTERM, at_on_signal);
  signal(SIGINT, at_on_signal);
  /* A hard bound whatever happens: the run, plus time to connect and report. */
  alarm((unsigned)cfg.seconds + 30u);
  at_raise_nofile();
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (strcmp(cmd, "drip") == 0) return at_drip(&cfg, &sa);
  if (strcmp(cmd, "claim") == 0) return at_claim(&cfg, &sa);
  if (strcmp(cmd, "noread") == 0) return at_noread(&cfg, &sa);
  if (strcmp(cmd, "quic") == 0) return at_quic(&cfg, &sa);
  if (strcmp(cmd, "logflood") == 0) return at_logflood(&cfg, &sa);
  if (strcmp(cmd, "legit") == 0) return at_legit(&cfg);
  if (strcmp(cmd, "drain") == 0) return at_drain(&cfg);
  at_usage(stderr);
  return 2;
}
