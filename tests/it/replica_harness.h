/* Replica-plane test harness: buses configured as cluster members, each on its own thread, an
 * event log and a frame log the test thread waits on (bounded), a way to run code on a bus
 * thread, captured log lines, and raw-socket helpers to speak the handshake by hand. */
#ifndef VSR_IT_REPLICA_HARNESS_H
#define VSR_IT_REPLICA_HARNESS_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "bus/auth.h"
#include "bus/bus_impl.h"
#include "testutil.h"
#include "vsrbus/vsrbus.h"

#define R_SEC 1000000000ull
#define R_EVENTS_MAX 4096
#define R_FRAMES_MAX 4096
#define R_CLUSTER "it-cluster"

static const char r_secret_a[] = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA-secret-a";
static const char r_secret_b[] = "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB-secret-b";

struct r_event {
  enum vsr_peer_event_kind kind;
  uint64_t id;
  int reason;
};

struct r_frame {
  uint64_t peer;
  uint8_t command;
  uint64_t op; /* Prepare/PrepareOk op field, for ordering checks */
};

struct r_node {
  struct vsr_bus_options opts;
  char addrs[VSR_MAX_REPLICAS][64];
  const char *addr_ptrs[VSR_MAX_REPLICAS];
  pthread_t thread;
  struct vsr_bus *bus;
  char replica_addr[64]; /* bound replica listener */
  atomic_int ready;      /* 1 running, -1 failed */
  atomic_int stop;       /* 1 graceful, 2 at once */
  int start_err;
  pthread_mutex_t mu;
  struct r_event events[R_EVENTS_MAX];
  int nevents;
  struct r_frame frames[R_FRAMES_MAX];
  int nframes;
  bool answer_prepare; /* answer each Prepare with a PrepareOk */
  uint64_t send_on_auth; /* non-zero: on AUTHENTICATED, send that replica a Prepare with this op */
  atomic_int pump_to;    /* >= 0: every loop turn, queue Prepares to that replica (bus thread) */
  uint64_t pumped;
  void (*task)(struct r_node *, void *);
  void *task_arg;
  bool task_done;
};

/* ---- captured log lines ------------------------------------------------------------------ */

#define R_LOG_MAX 512
static pthread_mutex_t r_log_mu = PTHREAD_MUTEX_INITIALIZER;
static char r_log_lines[R_LOG_MAX][256];
static int r_log_n;

static inline void r_log_handler(void *user, enum vsr_log_level level, const char *line) {
  (void)user;
  (void)level;
  fprintf(stderr, "%s\n", line);
  pthread_mutex_lock(&r_log_mu);
  if (r_log_n < R_LOG_MAX) snprintf(r_log_lines[r_log_n++], sizeof r_log_lines[0], "%s", line);
  pthread_mutex_unlock(&r_log_mu);
}

static inline void r_log_capture(void) {
  vsr_log_set_rate(0, 0); /* tests assert each refusal's own line: no rate limit here */
  vsr_log_set_handler(r_log_handler, NULL);
  pthread_mutex_lock(&r_log_mu);
  r_log_n = 0;
  pthread_mutex_unlock(&r_log_mu);
}

/* Lines holding every one of |a| and |b| (b may be NULL). */
static inline int r_log_count(const char *a, const char *b) {
  int n = 0;
  pthread_mutex_lock(&r_log_mu);
  for (int i = 0; i < r_log_n; i++) {
    if (strstr(r_log_lines[i], a) && (!b || strstr(r_log_lines[i], b))) n++;
  }
  pthread_mutex_unlock(&r_log_mu);
  return n;
}

/* Waits (bounded) until a line holding |a| and |b| appears. */
static inline bool r_log_wait(const char *a, const char *b, uint64_t timeout_ns) {
  uint64_t end = vsrt_now() + timeout_ns;
  while (vsrt_now() < end) {
    if (r_log_count(a, b) > 0) return true;
    usleep(2000);
  }
  return false;
}

/* ---- bus thread --------------------------------------------------------------------------- */

static inline struct vsr_msg *r_frame_new(struct vsr_bus *bus, uint8_t cmd, uint8_t replica,
                                          uint64_t op) {
  struct vsr_msg *m = vsr_bus_msg_new(bus, VSR_HEADER_SIZE);
  if (!m) return NULL;
  struct vsr_header *h = (struct vsr_header *)m->data;
  h->command = cmd;
  h->replica = replica;
  h->cluster = vsri_auth_cluster_id(R_CLUSTER);
  if (cmd == VSR_CMD_PREPARE) ((struct vsr_prepare_header *)m->data)->op = op;
  if (cmd == VSR_CMD_PREPARE_OK) ((struct vsr_prepare_ok_header *)m->data)->op = op;
  vsr_frame_seal(m->data);
  return m;
}

static inline void r_on_message(void *user, struct vsr_bus *bus, enum vsr_plane plane,
                                uint64_t peer, struct vsr_msg *msg) {
  struct r_node *n = user;
  uint8_t cmd = msg->data[60];
  uint64_t op = 0;
  if (cmd == VSR_CMD_PREPARE) op = ((struct vsr_prepare_header *)msg->data)->op;
  if (cmd == VSR_CMD_PREPARE_OK) op = ((struct vsr_prepare_ok_header *)msg->data)->op;
  pthread_mutex_lock(&n->mu);
  if (n->nframes < R_FRAMES_MAX) n->frames[n->nframes++] = (struct r_frame){peer, cmd, op};
  pthread_mutex_unlock(&n->mu);
  if (plane == VSR_PLANE_REPLICA && cmd == VSR_CMD_PREPARE && n->answer_prepare) {
    struct vsr_msg *ok = r_frame_new(bus, VSR_CMD_PREPARE_OK, n->opts.replica_index, op);
    if (ok) {
      vsr_bus_send_to_replica(bus, (uint8_t)peer, ok);
      vsr_msg_unref(ok);
    }
  }
}

static inline void r_on_peer_event(void *user, struct vsr_bus *bus,
                                   const struct vsr_peer_event *ev) {
  struct r_node *n = user;
  if (ev->plane != VSR_PLANE_REPLICA) return;
  if (ev->kind == VSR_PEER_AUTHENTICATED && n->send_on_auth) {
    struct vsr_msg *m = r_frame_new(bus, VSR_CMD_PREPARE, n->opts.replica_index, n->send_on_auth);
    if (m) {
      vsr_bus_send_to_replica(bus, (uint8_t)ev->id, m);
      vsr_msg_unref(m);
    }
  }
  pthread_mutex_lock(&n->mu);
  if (n->nevents < R_EVENTS_MAX) n->events[n->nevents++] = (struct r_event){ev->kind, ev->id,
                                                                            ev->reason};
  pthread_mutex_unlock(&n->mu);
}

static inline void *r_thread(void *arg) {
  struct r_node *n = arg;
  struct vsr_bus_callbacks cb = {.on_message = r_on_message, .on_peer_event = r_on_peer_event};
  n->start_err = vsr_bus_new(&n->bus, &n->opts, &cb, n);
  if (n->start_err) {
    atomic_store(&n->ready, -1);
    return NULL;
  }
  vsr_bus_listen_addr(n->bus, "replica", n->replica_addr, sizeof n->replica_addr);
  atomic_store(&n->ready, 1);
  while (!atomic_load(&n->stop)) {
    vsr_bus_run_once(n->bus, 1000000);
    int to = atomic_load(&n->pump_to);
    for (int i = 0; to >= 0 && i < 16; i++) {
      struct vsr_msg *m = r_frame_new(n->bus, VSR_CMD_PREPARE, n->opts.replica_index, 1);
      if (m && vsr_bus_send_to_replica(n->bus, (uint8_t)to, m) == 0) n->pumped++;
      vsr_msg_unref(m);
    }
    pthread_mutex_lock(&n->mu);
    if (n->task && !n->task_done) {
      n->task(n, n->task_arg);
      n->task_done = true;
    }
    pthread_mutex_unlock(&n->mu);
  }
  if (atomic_load(&n->stop) == 1) vsr_bus_shutdown(n->bus, 5 * R_SEC);
  vsr_bus_del(n->bus);
  return NULL;
}

/* Options of replica |index| of |count|; every address "127.0.0.1:0" until set. */
static inline void r_options(struct r_node *n, uint8_t index, uint16_t count) {
  memset(n, 0, sizeof *n);
  vsr_bus_options_default(&n->opts);
  n->opts.client_tcp_addr = NULL;
  n->opts.cluster_name = R_CLUSTER;
  n->opts.replica_index = index;
  n->opts.replica_count = count;
  for (int i = 0; i < count; i++) {
    snprintf(n->addrs[i], sizeof n->addrs[i], "127.0.0.1:0");
    n->addr_ptrs[i] = n->addrs[i];
  }
  n->opts.replica_addrs = n->addr_ptrs;
  n->opts.secret = (const uint8_t *)r_secret_a;
  n->opts.secret_len = sizeof r_secret_a - 1;
  n->opts.loop_options.pool.prealloc[0] = 64;
  atomic_store(&n->pump_to, -1);
  pthread_mutex_init(&n->mu, NULL);
}

/* |s| must outlive r_start() (the bus reads it only while starting). */
static inline void r_set_secret(struct r_node *n, const char *s) {
  n->opts.secret = (const uint8_t *)s;
  n->opts.secret_len = strlen(s);
}

static inline void r_set_addr(struct r_node *n, int i, const char *addr) {
  size_t l = strnlen(addr, sizeof n->addrs[i] - 1);
  memcpy(n->addrs[i], addr, l);
  n->addrs[i][l] = 0;
}

/* Starts the bus thread; returns 0 or the bus creation error. */
static inline int r_start(struct r_node *n) {
  if (pthread_create(&n->thread, NULL, r_thread, n) != 0) return VSR_ENOMEM;
  uint64_t end = vsrt_now() + 10 * R_SEC;
  while (atomic_load(&n->ready) == 0 && vsrt_now() < end) usleep(1000);
  if (atomic_load(&n->ready) != 1) {
    pthread_join(n->thread, NULL);
    return n->start_err ? n->start_err : VSR_ETIMEDOUT;
  }
  return 0;
}

static inline void r_stop(struct r_node *n, bool graceful) {
  atomic_store(&n->stop, graceful ? 1 : 2);
  pthread_join(n->thread, NULL);
}

/* Runs |fn| on the bus thread and waits for it. */
static inline void r_run(struct r_node *n, void (*fn)(struct r_node *, void *), void *arg) {
  pthread_mutex_lock(&n->mu);
  n->task = fn;
  n->task_arg = arg;
  n->task_done = false;
  while (!n->task_done) {
    pthread_mutex_unlock(&n->mu);
    usleep(200);
    pthread_mutex_lock(&n->mu);
  }
  n->task = NULL;
  pthread_mutex_unlock(&n->mu);
}

static inline int r_count(struct r_node *n, enum vsr_peer_event_kind kind, int64_t id) {
  int c = 0;
  pthread_mutex_lock(&n->mu);
  for (int i = 0; i < n->nevents; i++) {
    c += n->events[i].kind == kind && (id < 0 || n->events[i].id == (uint64_t)id);
  }
  pthread_mutex_unlock(&n->mu);
  return c;
}

/* Waits (bounded) until at least |want| events of |kind| for |id| (-1: any). */
static inline int r_wait(struct r_node *n, enum vsr_peer_event_kind kind, int64_t id, int want,
                         uint64_t timeout_ns) {
  uint64_t end = vsrt_now() + timeout_ns;
  int c;
  while ((c = r_count(n, kind, id)) < want && vsrt_now() < end) usleep(1000);
  return c;
}

/* Frames of |cmd| carrying op |op|. */
static inline int r_frames_op(struct r_node *n, uint8_t cmd, uint64_t op) {
  int c = 0;
  pthread_mutex_lock(&n->mu);
  for (int i = 0; i < n->nframes; i++) c += n->frames[i].command == cmd && n->frames[i].op == op;
  pthread_mutex_unlock(&n->mu);
  return c;
}

static inline int r_frames(struct r_node *n, uint8_t cmd) {
  int c = 0;
  pthread_mutex_lock(&n->mu);
  for (int i = 0; i < n->nframes; i++) c += n->frames[i].command == cmd;
  pthread_mutex_unlock(&n->mu);
  return c;
}

static inline int r_wait_frames(struct r_node *n, uint8_t cmd, int want, uint64_t timeout_ns) {
  uint64_t end = vsrt_now() + timeout_ns;
  int c;
  while ((c = r_frames(n, cmd)) < want && vsrt_now() < end) usleep(1000);
  return c;
}

/* Bus stats, read on the bus thread. */
struct r_stats_arg {
  struct vsr_bus_stats st;
  bool linked[VSR_MAX_REPLICAS];
  bool dialed[VSR_MAX_REPLICAS]; /* the link to that replica is one we dialed */
};
static inline void r_stats_task(struct r_node *n, void *arg) {
  struct r_stats_arg *a = arg;
  vsr_bus_stats(n->bus, &a->st);
  for (int i = 0; i < VSR_MAX_REPLICAS; i++) {
    a->linked[i] = n->bus->replicas[i] != NULL;
    a->dialed[i] = a->linked[i] && n->bus->replicas[i]->dialed;
  }
}
static inline struct r_stats_arg r_stats(struct r_node *n) {
  struct r_stats_arg a;
  memset(&a, 0, sizeof a);
  r_run(n, r_stats_task, &a);
  return a;
}

/* Waits (bounded) until errors[-|code|] reaches |want|; returns the last value. */
static inline uint64_t r_wait_errors(struct r_node *n, int code, uint64_t want,
                                     uint64_t timeout_ns) {
  uint64_t end = vsrt_now() + timeout_ns, v;
  while ((v = r_stats(n).st.errors[-code]) < want && vsrt_now() < end) usleep(2000);
  return v;
}

/* Sends a header-only |cmd| frame (op |op|) to replica |to| from the bus thread. */
struct r_send_arg {
  uint8_t to, cmd;
  uint64_t op;
  int rc;
  bool foreign; /* stamp a cluster id that is not ours */
};
static inline void r_send_task(struct r_node *n, void *arg) {
  struct r_send_arg *a = arg;
  struct vsr_msg *m = r_frame_new(n->bus, a->cmd, n->opts.replica_index, a->op);
  if (m && a->foreign) {
    ((struct vsr_header *)m->data)->cluster = vsr_u128_from_u64(0xDEAD);
    vsr_frame_seal(m->data);
  }
  a->rc = m ? vsr_bus_send_to_replica(n->bus, a->to, m) : VSR_EPOOL;
  vsr_msg_unref(m);
}
static inline int r_send(struct r_node *n, uint8_t to, uint8_t cmd, uint64_t op) {
  struct r_send_arg a = {to, cmd, op, 0, false};
  r_run(n, r_send_task, &a);
  return a.rc;
}
static inline int r_send_foreign(struct r_node *n, uint8_t to, uint8_t cmd) {
  struct r_send_arg a = {to, cmd, 0, 0, true};
  r_run(n, r_send_task, &a);
  return a.rc;
}

/* One Prepare |op| from |from| to replica |to| (a node with answer_prepare) and its PrepareOk
 * back: 1 when the send was accepted and exactly one more PrepareOk arrived within 10 s; 0 (and
 * what went wrong on stderr) otherwise. */
static inline int r_prepare_roundtrip(struct r_node *from, uint8_t to, uint64_t op) {
  int before = r_frames(from, VSR_CMD_PREPARE_OK);
  int err = r_send(from, to, VSR_CMD_PREPARE, op);
  if (err) {
    fprintf(stderr, "r_prepare_roundtrip: Prepare op %llu to replica %u refused: %s\n",
            (unsigned long long)op, to, vsr_errname(err));
    return 0;
  }
  int got = r_wait_frames(from, VSR_CMD_PREPARE_OK, before + 1, 10 * R_SEC);
  if (got != before + 1) {
    fprintf(stderr, "r_prepare_roundtrip: op %llu: %d PrepareOk, want %d\n",
            (unsigned long long)op, got, before + 1);
    return 0;
  }
  return 1;
}

/* Starts replicas count-1 .. 0 in order, each knowing the bound addresses of the higher ones
 * (only lower ids dial, so the lower ones need the higher addresses up front). */
static inline int r_start_cluster(struct r_node *nodes, uint16_t count) {
  for (int i = count - 1; i >= 0; i--) {
    for (int j = i + 1; j < count; j++) r_set_addr(&nodes[i], j, nodes[j].replica_addr);
    int err = r_start(&nodes[i]);
    if (err) return err;
  }
  return 0;
}

/* ---- free ports and raw sockets ----------------------------------------------------------- */

/* A loopback port free right now (bind port 0, read it, close). */
static inline int r_free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof a;
  if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0 ||
      getsockname(fd, (struct sockaddr *)&a, &len) < 0) {
    close(fd);
    return -1;
  }
  close(fd);
  return ntohs(a.sin_port);
}

/* A blocking socket connected to "host:port", 10 s receive timeout; -1 on failure. */
/* Reads one 256-byte header. Returns 1, 0 on EOF (or reset), -1 on timeout. */
static inline int r_read_header(int fd, uint8_t out[256]) {
  size_t got = 0;
  while (got < 256) {
    ssize_t r = read(fd, out + got, 256 - got);
    if (r == 0) return 0;
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      if (errno == ECONNRESET) return 0;
      fprintf(stderr, "r_read_header: %s after %zu bytes\n", strerror(errno), got);
      return -1;
    }
    got += (size_t)r;
  }
  return 1;
}

/* True once the peer closed |fd| (EOF or reset) within |timeout_ns|, discarding any bytes. */
static inline bool r_wait_eof(int fd, uint64_t timeout_ns) {
  uint64_t end = vsrt_now() + timeout_ns;
  uint8_t buf[512];
  while (vsrt_now() < end) {
    struct pollfd pfd = {fd, POLLIN, 0};
    if (poll(&pfd, 1, 50) <= 0) continue;
    ssize_t r = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (r == 0 || (r < 0 && errno == ECONNRESET)) return true;
  }
  return false;
}

/* A handshake frame as auth.c writes it, for hand-made dialers. */
static inline void r_hello(uint8_t out[256], vsr_u128 cluster, uint8_t replica,
                           const uint8_t *nonce) {
  vsr_header_init(out, VSR_CMD_REPLICA_HELLO, 256);
  vsr_put_u128(out + 32, cluster);
  out[61] = replica;
  if (nonce) memcpy(out + 128, nonce, VSRI_AUTH_NONCE_LEN);
}

#endif
