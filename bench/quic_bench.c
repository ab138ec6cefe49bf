/* QUIC vs TCP at the transport layer (vsri_transport_quic / vsri_transport_tcp, no bus): one
 * connection, the sender (parent) keeps its queue full of frames, the receiver (child) counts
 * them from its first frame to the end. QUIC variants: default (GSO bursts, GRO, frames packed
 * into full packets), --unbatched (the reference's way: every frame written and flushed alone,
 * one sendmsg per datagram, no GSO / GRO), --mtu N (UDP payload without PMTUD, loopback only).
 * Prints one CSV row (bench/README.md columns; mode = the variant label) and, on stderr, the
 * datagrams per send / receive call on each side. Not a test: numbers depend on the machine. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "io/io.h"
#include "transport/quic.h"
#include "transport/transport.h"
#include "vsrbus/vsrbus.h"

#define QB_QCAP 1024
#define QB_FRAMES 64

struct qb_cfg {
  const char *transport, *label, *backend;
  uint32_t size, mtu;
  double seconds;
  bool unbatched, no_gso, no_gro;
};

struct qb_result {
  uint64_t frames, bytes, first_ns, last_ns;
  struct vsri_quic_stats st;
};

struct qb_side {
  const struct vsri_transport_ops *ops;
  struct vsri_io *io;
  struct vsr_pool *pool;
  struct vsri_quic_config qcfg;
  struct vsri_transport_ctx ctx;
  struct vsri_conn *conn;
  struct vsri_sendq q;
  struct vsr_msg *slots[QB_QCAP];
  struct qb_result r;
  bool connected, closed;
};

static uint64_t qb_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void qb_on_frame(void *owner, struct vsri_conn *conn, struct vsr_msg *msg) {
  (void)conn;
  struct qb_side *s = owner;
  uint64_t now = vsri_io_now(s->io);
  if (s->r.frames == 0) s->r.first_ns = now;
  s->r.last_ns = now;
  s->r.frames++;
  s->r.bytes += msg->size;
}

static void qb_on_connected(void *owner, struct vsri_conn *conn, int status) {
  (void)conn;
  struct qb_side *s = owner;
  s->connected = status == 0;
}

static void qb_on_closed(void *owner, struct vsri_conn *conn, int reason) {
  (void)conn;
  (void)reason;
  struct qb_side *s = owner;
  s->closed = true;
  s->conn = NULL;
  while (vsri_sendq_len(&s->q) > 0) vsri_sendq_pop(&s->q);
}

static const struct vsri_conn_events qb_events = {
    .on_frame = qb_on_frame, .on_connected = qb_on_connected, .on_closed = qb_on_closed};

static void qb_on_accept(void *owner, struct vsri_conn *conn) {
  struct qb_side *s = owner;
  if (s->conn) {
    s->ops->close(conn, VSR_ELIMIT, false);
    return;
  }
  s->conn = conn;
  s->ops->start(conn, &qb_events, s, &s->q);
}

static int qb_side_init(struct qb_side *s, const struct qb_cfg *cfg) {
  memset(s, 0, sizeof *s);
  s->ops = strcmp(cfg->transport, "quic") == 0 ? &vsri_transport_quic : &vsri_transport_tcp;
  struct vsri_io_options io;
  vsri_io_options_default(&io);
  io.backend = strcmp(cfg->backend, "uring") == 0   ? VSRI_IO_URING
               : strcmp(cfg->backend, "epoll") == 0 ? VSRI_IO_EPOLL
                                                    : VSRI_IO_AUTO;
  struct vsr_pool_options po;
  vsr_pool_options_default(&po);
  if (vsri_io_new(&s->io, &io) || vsr_pool_new(&s->pool, &po)) return -1;
  vsri_quic_config_default(&s->qcfg);
  s->qcfg.insecure = true;
  s->qcfg.unbatched = cfg->unbatched;
  s->qcfg.no_gso = cfg->no_gso;
  s->qcfg.no_gro = cfg->no_gro;
  if (cfg->mtu) s->qcfg.max_udp_payload = cfg->mtu;
  s->ctx = (struct vsri_transport_ctx){.io = s->io, .pool = s->pool,
                                       .max_message_size = 64u << 20, .max_batch = 256,
                                       .tls = s->ops == &vsri_transport_quic ? &s->qcfg : NULL};
  vsri_sendq_init(&s->q, s->slots, QB_QCAP);
  return 0;
}

/* Child: listens, reports its address, counts what arrives until the sender hangs up. */
static int qb_receiver(const struct qb_cfg *cfg, int out) {
  struct qb_side s;
  struct vsri_listener *l = NULL;
  if (qb_side_init(&s, cfg) || s.ops->listen(&l, &s.ctx, "127.0.0.1:0", qb_on_accept, &s)) {
    return 1;
  }
  char addr[64] = {0};
  s.ops->listener_addr(l, addr, sizeof addr);
  if (write(out, addr, sizeof addr) != sizeof addr) return 1;
  uint64_t end = qb_now() + (uint64_t)((cfg->seconds + 10) * 1e9);
  while (!s.closed && qb_now() < end) vsri_io_run(s.io, 1000000);
  vsri_quic_stats(&s.r.st);
  if (write(out, &s.r, sizeof s.r) != sizeof s.r) return 1;
  return 0;
}

static void qb_print_stats(const char *who, const struct vsri_quic_stats *st) {
  fprintf(stderr,
          "  %s: %llu send calls, %.1f datagrams/call; %llu receive calls, %.1f datagrams/call;"
          " %llu blocked sends, %llu timer wake-ups\n",
          who, (unsigned long long)st->send_calls,
          st->send_calls ? (double)st->datagrams_out / (double)st->send_calls : 0,
          (unsigned long long)st->recv_calls,
          st->recv_calls ? (double)st->datagrams_in / (double)st->recv_calls : 0,
          (unsigned long long)st->send_blocked, (unsigned long long)st->timer_fires);
}

/* Parent: connects and keeps its queue full for |seconds|. */
static int qb_sender(const struct qb_cfg *cfg, const char *addr, struct vsri_quic_stats *st) {
  struct qb_side s;
  if (qb_side_init(&s, cfg)) return 1;
  if (s.ops->connect(&s.conn, &s.ctx, addr, &qb_events, &s, &s.q)) return 1;
  uint64_t end = qb_now() + 5000000000ull;
  while (!s.connected && !s.closed && qb_now() < end) vsri_io_run(s.io, 1000000);
  if (!s.connected) return 1;
  struct vsr_msg *fr[QB_FRAMES];
  for (int i = 0; i < QB_FRAMES; i++) {
    fr[i] = vsr_pool_get_zeroed(s.pool, cfg->size);
    if (!fr[i]) return 1;
    vsr_header_init(fr[i]->data, VSR_CMD_PING, cfg->size);
    memset(fr[i]->data + VSR_HEADER_SIZE, 0x5a ^ i, cfg->size - VSR_HEADER_SIZE);
  }
  end = qb_now() + (uint64_t)(cfg->seconds * 1e9);
  uint32_t k = 0;
  while (!s.closed && qb_now() < end) {
    bool added = false;
    while (vsri_sendq_len(&s.q) < QB_QCAP) {
      vsri_sendq_push(&s.q, vsr_msg_ref(fr[k++ % QB_FRAMES]));
      added = true;
    }
    if (added) s.ops->kick(s.conn);
    vsri_io_run(s.io, added ? 0 : 1000000);
  }
  vsri_quic_stats(st);
  if (s.conn) s.ops->close(s.conn, VSR_ESHUTDOWN, false);
  end = qb_now() + 2000000000ull;
  while (!s.closed && qb_now() < end) vsri_io_run(s.io, 1000000);
  for (int i = 0; i < 50; i++) vsri_io_run(s.io, 1000000);
  for (int i = 0; i < QB_FRAMES; i++) vsr_msg_unref(fr[i]);
  return 0;
}

static void qb_usage(void) {
  fprintf(stderr, "usage: quic_bench [--transport tcp|quic] [--size BYTES] [--seconds S]\n"
                  "                  [--unbatched] [--no-gso] [--no-gro] [--mtu N]\n"
                  "                  [--backend auto|epoll|uring] [--label L]\n");
}

int main(int argc, char **argv) {
  struct qb_cfg cfg = {.transport = "quic", .label = NULL, .backend = "auto", .size = 256,
                       .seconds = 2};
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--transport") && v) cfg.transport = argv[++i];
    else if (!strcmp(a, "--size") && v) cfg.size = (uint32_t)strtoul(argv[++i], NULL, 0);
    else if (!strcmp(a, "--seconds") && v) cfg.seconds = atof(argv[++i]);
    else if (!strcmp(a, "--mtu") && v) cfg.mtu = (uint32_t)strtoul(argv[++i], NULL, 0);
    else if (!strcmp(a, "--backend") && v) cfg.backend = argv[++i];
    else if (!strcmp(a, "--label") && v) cfg.label = argv[++i];
    else if (!strcmp(a, "--unbatched")) cfg.unbatched = true;
    else if (!strcmp(a, "--no-gso")) cfg.no_gso = true;
    else if (!strcmp(a, "--no-gro")) cfg.no_gro = true;
    else {
      qb_usage();
      return 2;
    }
  }
  if (cfg.size < VSR_HEADER_SIZE || cfg.seconds <= 0) {
    qb_usage();
    return 2;
  }
  vsr_log_set_level(VSR_LOG_WARN);
  alarm((unsigned)cfg.seconds + 60);
  int p[2];
  if (pipe(p)) return 1;
  pid_t pid = fork();
  if (pid == 0) {
    close(p[0]);
    _exit(qb_receiver(&cfg, p[1]));
  }
  close(p[1]);
  char addr[64];
  if (read(p[0], addr, sizeof addr) != sizeof addr) return 1;
  struct vsri_quic_stats sst;
  int rc = qb_sender(&cfg, addr, &sst);
  struct qb_result r;
  ssize_t got = read(p[0], &r, sizeof r);
  int status = 0;
  waitpid(pid, &status, 0);
  if (rc || got != sizeof r || r.last_ns <= r.first_ns) {
    fprintf(stderr, "quic_bench: run failed\n");
    return 1;
  }
  double secs = (double)(r.last_ns - r.first_ns) / 1e9;
  printf("vsrbus-transport,%s,%s,%u,1,%.0f,%.1f,,,,,\n", cfg.transport,
         cfg.label ? cfg.label : "tput", cfg.size, (double)r.frames / secs,
         (double)r.bytes / secs / 1e6);
  if (!strcmp(cfg.transport, "quic")) {
    qb_print_stats("sender", &sst);
    qb_print_stats("receiver", &r.st);
  }
  return 0;
}
