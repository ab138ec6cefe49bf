/* QUIC transport tests: one loop in the test thread with a listener and dialed connections on
 * vsri_transport_quic, frames exchanged through send queues and on_frame, a log catcher, and a
 * lossy UDP forwarder (its own thread, seeded drops) for loss tests. Every wait is bounded. */
#ifndef VSR_IT_QUIC_UTIL_H
#define VSR_IT_QUIC_UTIL_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "crypto/cert.h"
#include "testutil.h"
#include "transport/quic.h"
#include "transport/transport.h"
#include "vsrbus/vsrbus.h"

#define QT_SEC 1000000000ull
#define QT_MS 1000000ull
#define QT_PEERS 128
#define QT_QCAP 2048

struct qt_env;

struct qt_peer {
  struct qt_env *env;
  struct vsri_conn *conn;
  struct vsri_sendq q;
  struct vsr_msg *slots[QT_QCAP];
  bool used, connected, closed, echo, check;
  int connect_status, close_reason;
  uint64_t close_code;
  bool close_app, close_remote;
  uint32_t nframes, bad, next_seq;
  uint64_t bytes;
  uint8_t cmds[16];
  int64_t sids[16];   /* the stream each of the first frames arrived on */
  uint64_t reqs[16];  /* their `request` number (Request, Reply), else 0 */
  uint32_t drained;
};

struct qt_env {
  struct vsri_io *io;
  struct vsr_pool *pool;
  struct vsri_quic_config scfg, ccfg;
  struct vsri_transport_ctx sctx, cctx;
  struct vsri_listener *l;
  char addr[64];
  char pin[VSRI_FINGERPRINT_TEXT_LEN];
  struct qt_peer server[QT_PEERS];
  struct qt_peer client[QT_PEERS];
  int naccepted;
  bool server_echo, server_check;
};

/* ---- log catcher ----------------------------------------------------------------------- */

static char qt_log_buf[1 << 16];
static size_t qt_log_len;

static inline void qt_log_fn(void *user, enum vsr_log_level level, const char *line) {
  (void)user;
  (void)level;
  fprintf(stderr, "%s\n", line);
  size_t n = strlen(line);
  if (qt_log_len + n + 2 < sizeof qt_log_buf) {
    memcpy(qt_log_buf + qt_log_len, line, n);
    qt_log_len += n;
    qt_log_buf[qt_log_len++] = '\n';
    qt_log_buf[qt_log_len] = '\0';
  }
}

static inline void qt_log_capture(void) {
  qt_log_len = 0;
  qt_log_buf[0] = '\0';
  vsr_log_set_handler(qt_log_fn, NULL);
}

static inline bool qt_log_has(const char *needle) { return strstr(qt_log_buf, needle) != NULL; }

/* ---- frames ---------------------------------------------------------------------------- */

/* A valid frame of |size| bytes: |cmd| (Ping, Prepare or Request), the sequence number in the
 * first body bytes (or the Ping's reserved area when header-only) and a body pattern from it. */
static inline struct vsr_msg *qt_frame(struct vsr_pool *pool, uint8_t cmd, uint32_t size,
                                       uint32_t seq) {
  struct vsr_msg *m = vsr_pool_get(pool, size);
  if (!m) return NULL;
  vsr_header_init(m->data, cmd, size);
  if (cmd == VSR_CMD_REQUEST) {
    struct vsr_request_header *rq = (struct vsr_request_header *)m->data;
    rq->client = vsr_u128_from_u64(0x1234);
    rq->request = seq + 1;
    rq->session = 1;
    rq->operation = VSR_OP_SEND_MESSAGES;
  } else if (cmd == VSR_CMD_PING) {
    vsr_put_u32(m->data + 128 + 64, seq);
  }
  if (size >= 260) vsr_put_u32(m->data + 256, seq);
  for (uint32_t i = 260; i < size; i++) m->data[i] = (uint8_t)(seq * 31 + i);
  vsr_frame_seal(m->data);
  return m;
}

/* A Reply answering Request number |request| (header only). */
static inline struct vsr_msg *qt_reply(struct vsr_pool *pool, uint64_t request) {
  struct vsr_msg *m = vsr_pool_get(pool, VSR_HEADER_SIZE);
  if (!m) return NULL;
  vsr_header_init(m->data, VSR_CMD_REPLY, VSR_HEADER_SIZE);
  struct vsr_reply_header *rp = (struct vsr_reply_header *)m->data;
  rp->client = vsr_u128_from_u64(0x1234);
  rp->request = request;
  rp->operation = VSR_OP_SEND_MESSAGES;
  vsr_frame_seal(m->data);
  return m;
}

/* The sequence number a qt_frame carries, or UINT32_MAX if its bytes are not intact. */
static inline uint32_t qt_frame_seq(const struct vsr_msg *m) {
  uint32_t seq;
  if (m->size >= 260) seq = vsr_get_u32(m->data + 256);
  else if (m->data[60] == VSR_CMD_PING) seq = vsr_get_u32(m->data + 128 + 64);
  else return 0;
  for (uint32_t i = 260; i < m->size; i++) {
    if (m->data[i] != (uint8_t)(seq * 31 + i)) return UINT32_MAX;
  }
  return seq;
}

/* ---- connection events ----------------------------------------------------------------- */

static inline void qt_on_frame(void *owner, struct vsri_conn *conn, struct vsr_msg *msg) {
  struct qt_peer *p = owner;
  if (p->nframes < sizeof p->cmds) p->cmds[p->nframes] = msg->data[60];
  if (p->nframes < sizeof p->sids / sizeof p->sids[0]) {
    uint8_t cmd = msg->data[60];
    p->sids[p->nframes] = vsri_quic_frame_stream(conn);
    p->reqs[p->nframes] =
        cmd == VSR_CMD_REQUEST ? ((const struct vsr_request_header *)msg->data)->request
        : cmd == VSR_CMD_REPLY ? ((const struct vsr_reply_header *)msg->data)->request
                               : 0;
  }
  p->nframes++;
  p->bytes += msg->size;
  if (p->check) {
    uint32_t seq = qt_frame_seq(msg);
    if (seq != p->next_seq) {
      if (p->bad++ < 5) fprintf(stderr, "frame %u: got seq %u\n", p->next_seq, seq);
    }
    p->next_seq++;
  }
  if (p->echo && vsri_sendq_push(&p->q, vsr_msg_ref(msg))) {
    vsri_transport_quic.kick(p->conn);
  } else if (p->echo) {
    vsr_msg_unref(msg);
    p->bad++;
  }
}

static inline void qt_on_connected(void *owner, struct vsri_conn *conn, int status) {
  (void)conn;
  struct qt_peer *p = owner;
  p->connected = status == 0;
  p->connect_status = status;
}

static inline void qt_on_drained(void *owner, struct vsri_conn *conn) {
  (void)conn;
  struct qt_peer *p = owner;
  p->drained++;
}

static inline void qt_on_closed(void *owner, struct vsri_conn *conn, int reason) {
  struct qt_peer *p = owner;
  p->closed = true;
  p->close_reason = reason;
  vsri_quic_close_info(conn, &p->close_code, &p->close_app, &p->close_remote);
  p->conn = NULL;
  while (vsri_sendq_len(&p->q) > 0) vsri_sendq_pop(&p->q);
}

static const struct vsri_conn_events qt_events = {
    .on_frame = qt_on_frame,
    .on_connected = qt_on_connected,
    .on_drained = qt_on_drained,
    .on_closed = qt_on_closed,
};

static inline void qt_peer_init(struct qt_peer *p, struct qt_env *env) {
  memset(p, 0, sizeof *p);
  p->env = env;
  p->used = true;
  vsri_sendq_init(&p->q, p->slots, QT_QCAP);
}

static inline void qt_on_accept(void *owner, struct vsri_conn *conn) {
  struct qt_env *env = owner;
  if (env->naccepted == QT_PEERS) {
    vsri_transport_quic.close(conn, VSR_ELIMIT, false);
    return;
  }
  struct qt_peer *p = &env->server[env->naccepted++];
  qt_peer_init(p, env);
  p->conn = conn;
  p->echo = env->server_echo;
  p->check = env->server_check;
  p->connected = true;
  vsri_transport_quic.start(conn, &qt_events, p, &p->q);
}

/* ---- environment ----------------------------------------------------------------------- */

/* Creates the loop, the pool and default configs (client pinned to the listener's cert once
 * qt_listen ran). */
static inline void qt_env_init(struct qt_env *env) {
  memset(env, 0, sizeof *env);
  vsrt_require_backend();
  struct vsri_io_options io;
  vsri_io_options_default(&io);
  if (vsri_io_new(&env->io, &io) != 0) {
    fprintf(stderr, "vsri_io_new failed\n");
    exit(1);
  }
  struct vsr_pool_options po;
  vsr_pool_options_default(&po);
  po.prealloc[0] = 256;
  po.prealloc[1] = 8;
  if (vsr_pool_new(&env->pool, &po) != 0) exit(1);
  vsri_quic_config_default(&env->scfg);
  vsri_quic_config_default(&env->ccfg);
  struct vsri_transport_ctx ctx = {.io = env->io, .pool = env->pool,
                                   .max_message_size = 64u << 20, .max_batch = 256};
  env->sctx = ctx;
  env->cctx = ctx;
  env->sctx.tls = &env->scfg;
  env->cctx.tls = &env->ccfg;
  env->server_echo = true;
}

static inline int qt_listen(struct qt_env *env) {
  int err = vsri_transport_quic.listen(&env->l, &env->sctx, "127.0.0.1:0", qt_on_accept, env);
  if (err) return err;
  vsri_transport_quic.listener_addr(env->l, env->addr, sizeof env->addr);
  uint8_t fp[32];
  vsri_quic_listener_fingerprint(env->l, fp);
  vsri_fingerprint_format(fp, env->pin);
  env->ccfg.pin_sha256 = env->pin;
  return 0;
}

/* Dials |addr| (the listener when NULL) as client |i|. */
static inline int qt_dial(struct qt_env *env, int i, const char *addr) {
  struct qt_peer *p = &env->client[i];
  qt_peer_init(p, env);
  return vsri_transport_quic.connect(&p->conn, &env->cctx, addr ? addr : env->addr, &qt_events,
                                     p, &p->q);
}

/* Runs the loop until |pred| holds or |timeout_ns| passes. Returns the final |pred|. */
static inline bool qt_run_until(struct qt_env *env, bool (*pred)(struct qt_env *, void *),
                                void *arg, uint64_t timeout_ns) {
  uint64_t end = vsrt_now() + timeout_ns;
  while (!pred(env, arg)) {
    if (vsrt_now() > end) return false;
    vsri_io_run(env->io, (int64_t)QT_MS);
  }
  return true;
}

static inline bool qt_pred_connected(struct qt_env *env, void *arg) {
  struct qt_peer *p = &env->client[(int)(intptr_t)arg];
  (void)env;
  return p->connected || p->closed;
}

static inline bool qt_pred_closed(struct qt_env *env, void *arg) {
  struct qt_peer *p = arg;
  (void)env;
  return p->closed;
}

static inline bool qt_pred_nothing_live(struct qt_env *env, void *arg) {
  (void)env;
  (void)arg;
  return vsri_quic_live() == 0;
}

static inline void qt_send(struct qt_peer *p, struct vsr_msg *m) {
  if (!vsri_sendq_push(&p->q, m)) {
    vsr_msg_unref(m);
    p->bad++;
    return;
  }
  vsri_transport_quic.kick(p->conn);
}

/* Closes everything, waits until every QUIC object is gone and checks no frame leaked. */
static inline int qt_env_fini(struct qt_env *env) {
  for (int i = 0; i < QT_PEERS; i++) {
    if (env->client[i].used && env->client[i].conn) {
      vsri_transport_quic.close(env->client[i].conn, VSR_ESHUTDOWN, false);
    }
    if (env->server[i].used && env->server[i].conn) {
      vsri_transport_quic.close(env->server[i].conn, VSR_ESHUTDOWN, false);
    }
  }
  if (env->l) vsri_transport_quic.listener_close(env->l);
  env->l = NULL;
  bool gone = qt_run_until(env, qt_pred_nothing_live, NULL, 10 * QT_SEC);
  for (int i = 0; i < 20; i++) vsri_io_run(env->io, 0); /* canceled completions report back */
  struct vsr_pool_stats st;
  vsr_pool_stats(env->pool, &st);
  if (!gone) fprintf(stderr, "qt_env_fini: %u QUIC objects still live\n", vsri_quic_live());
  if (st.live) fprintf(stderr, "qt_env_fini: %llu messages leaked\n",
                       (unsigned long long)st.live);
  int rc = gone && st.live == 0 ? 0 : -1;
  if (gone && st.live == 0) {
    vsr_pool_del(env->pool);
    vsri_io_del(env->io);
  }
  return rc;
}

/* ---- lossy UDP forwarder --------------------------------------------------------------- */

/* Forwards datagrams between one client and the server, dropping a seeded share of them
 * (both directions), or everything after the first |pass_first| client datagrams. */
struct qt_shim {
  int front; /* clients send here */
  int back;  /* connected to the server */
  struct sockaddr_storage client;
  socklen_t client_len;
  char addr[64];
  uint32_t drop_permille;
  int pass_first; /* >= 0: forward only this many client datagrams, then drop all */
  uint64_t rng;
  atomic_int stop;
  atomic_ulong forwarded, dropped;
  pthread_t thread;
};

static inline bool qt_shim_drop(struct qt_shim *s) {
  s->rng ^= s->rng << 13;
  s->rng ^= s->rng >> 7;
  s->rng ^= s->rng << 17;
  return (s->rng % 1000) < s->drop_permille;
}

static inline void *qt_shim_main(void *arg) {
  struct qt_shim *s = arg;
  static _Thread_local uint8_t buf[65536];
  int from_client = 0;
  while (!atomic_load(&s->stop)) {
    struct pollfd pf[2] = {{s->front, POLLIN, 0}, {s->back, POLLIN, 0}};
    if (poll(pf, 2, 20) <= 0) continue;
    if (pf[0].revents & POLLIN) {
      struct sockaddr_storage from;
      socklen_t fl = sizeof from;
      ssize_t n = recvfrom(s->front, buf, sizeof buf, MSG_DONTWAIT, (struct sockaddr *)&from, &fl);
      if (n > 0) {
        memcpy(&s->client, &from, fl);
        s->client_len = fl;
        bool drop = (s->pass_first >= 0 && from_client >= s->pass_first) || qt_shim_drop(s);
        from_client++;
        if (drop) atomic_fetch_add(&s->dropped, 1);
        else if (send(s->back, buf, (size_t)n, MSG_DONTWAIT) >= 0) {
          atomic_fetch_add(&s->forwarded, 1);
        }
      }
    }
    if (pf[1].revents & POLLIN) {
      ssize_t n = recv(s->back, buf, sizeof buf, MSG_DONTWAIT);
      if (n > 0 && s->client_len) {
        bool drop = s->pass_first >= 0 || qt_shim_drop(s);
        if (drop) atomic_fetch_add(&s->dropped, 1);
        else if (sendto(s->front, buf, (size_t)n, MSG_DONTWAIT, (struct sockaddr *)&s->client,
                        s->client_len) >= 0) {
          atomic_fetch_add(&s->forwarded, 1);
        }
      }
    }
  }
  return NULL;
}

/* Starts a forwarder to |server| ("127.0.0.1:port"). Returns 0 or -1. */
static inline int qt_shim_start(struct qt_shim *s, const char *server, uint32_t drop_permille,
                                int pass_first, uint64_t seed) {
  memset(s, 0, sizeof *s);
  s->drop_permille = drop_permille;
  s->pass_first = pass_first;
  s->rng = seed ? seed : 0x9E3779B97F4A7C15ull;
  struct sockaddr_storage sa;
  socklen_t len;
  if (vsri_parse_addr(server, &sa, &len) < 0) return -1;
  s->front = socket(AF_INET, SOCK_DGRAM, 0);
  s->back = socket(AF_INET, SOCK_DGRAM, 0);
  int big = 8 << 20;
  setsockopt(s->front, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big);
  setsockopt(s->back, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big);
  struct sockaddr_in lo = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  if (bind(s->front, (struct sockaddr *)&lo, sizeof lo) < 0) return -1;
  if (connect(s->back, (struct sockaddr *)&sa, len) < 0) return -1;
  struct sockaddr_storage me;
  socklen_t ml = sizeof me;
  getsockname(s->front, (struct sockaddr *)&me, &ml);
  vsri_format_addr((struct sockaddr *)&me, s->addr, sizeof s->addr);
  return pthread_create(&s->thread, NULL, qt_shim_main, s) == 0 ? 0 : -1;
}

static inline void qt_shim_stop(struct qt_shim *s) {
  atomic_store(&s->stop, 1);
  pthread_join(s->thread, NULL);
  close(s->front);
  close(s->back);
}

#endif
