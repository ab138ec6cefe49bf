/* Helpers for hostile-client tests: valid frames built by hand, clients that send and never
 * read, and `vsrbus node` run as a child process (optionally under a lowered RLIMIT_NOFILE)
 * whose log the test reads. Every wait is bounded; every child is stopped by its PID. */
#ifndef VSR_IT_HOSTILE_H
#define VSR_IT_HOSTILE_H

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include "testutil.h"
#include "vsrbus/vsrbus.h"

#define HO_SEC 1000000000ull

/* ---- frames ---------------------------------------------------------------------------- */

/* Writes a sealed Request of |size| bytes (body pattern from |seq|) into |buf|. */
static inline void ho_request(uint8_t *buf, uint32_t size, uint32_t seq) {
  memset(buf, 0, VSR_HEADER_SIZE);
  vsr_header_init(buf, VSR_CMD_REQUEST, size);
  struct vsr_request_header *rq = (struct vsr_request_header *)buf;
  rq->client = vsr_u128_from_u64(0x5107);
  rq->request = seq + 1;
  rq->session = 1;
  rq->operation = VSR_OP_SEND_MESSAGES;
  for (uint32_t i = VSR_HEADER_SIZE; i < size; i++) buf[i] = (uint8_t)(seq * 31 + i);
  vsr_frame_seal(buf);
}

/* Writes a sealed PingClient carrying |seq|. */
static inline void ho_ping(uint8_t *buf, uint32_t seq) {
  memset(buf, 0, VSR_HEADER_SIZE);
  vsr_header_init(buf, VSR_CMD_PING_CLIENT, VSR_HEADER_SIZE);
  vsr_put_u32(buf + 128, seq);
  vsr_frame_seal(buf);
}

/* Reads exactly |n| bytes (the socket's SO_RCVTIMEO bounds each read). Returns 1, 0 on EOF or
 * reset, -1 on timeout or another error. */
static inline int ho_read_exact(int fd, void *p, size_t n) {
  uint8_t *b = p;
  while (n > 0) {
    ssize_t r = read(fd, b, n);
    if (r == 0) return 0;
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return errno == ECONNRESET ? 0 : -1;
    b += r;
    n -= (size_t)r;
  }
  return 1;
}

/* Reads one whole frame into |buf| (|cap| bytes). Returns its size, 0 on EOF, -1 otherwise. */
static inline long ho_read_frame(int fd, uint8_t *buf, size_t cap) {
  int r = ho_read_exact(fd, buf, VSR_HEADER_SIZE);
  if (r <= 0) return r;
  uint32_t size = vsr_get_u32(buf + 48);
  if (size < VSR_HEADER_SIZE || size > cap) return -1;
  r = ho_read_exact(fd, buf + VSR_HEADER_SIZE, size - VSR_HEADER_SIZE);
  return r <= 0 ? r : (long)size;
}

/* A client socket with a small receive buffer (set before connect, so the window stays small),
 * or -1. */
static inline int ho_connect_small(const char *addr) {
  char host[64];
  snprintf(host, sizeof host, "%s", addr);
  char *colon = strrchr(host, ':');
  if (!colon) return -1;
  *colon = 0;
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
  inet_pton(AF_INET, host, &a.sin_addr);
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  int rcv = 4096;
  if (fd >= 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
  if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
    if (fd >= 0) close(fd);
    return -1;
  }
  return fd;
}

/* ---- clients that send Requests and never read ----------------------------------------- */

#define HO_SLOW_MAX 32

struct ho_slow {
  char addr[64];
  int n;            /* clients */
  uint32_t size;    /* Request size */
  uint64_t timeout_ns;
  int fds[HO_SLOW_MAX];
  uint64_t sent[HO_SLOW_MAX];   /* whole Requests written */
  atomic_int closed;            /* clients the node closed (EPIPE / reset) */
  atomic_int stop;
  pthread_t thread;
  uint8_t *frame;
};

/* Writes Requests on every socket, never reading, until the node closes each of them or the
 * timeout passes. */
static inline void *ho_slow_run(void *arg) {
  struct ho_slow *s = arg;
  size_t off[HO_SLOW_MAX] = {0};
  bool done[HO_SLOW_MAX] = {0};
  uint64_t end = vsrt_now() + s->timeout_ns;
  while (atomic_load(&s->closed) < s->n && !atomic_load(&s->stop) && vsrt_now() < end) {
    struct pollfd pf[HO_SLOW_MAX];
    for (int i = 0; i < s->n; i++) {
      pf[i] = (struct pollfd){.fd = done[i] ? -1 : s->fds[i], .events = POLLOUT};
    }
    if (poll(pf, (nfds_t)s->n, 50) <= 0) continue;
    for (int i = 0; i < s->n; i++) {
      if (done[i] || !(pf[i].revents & (POLLOUT | POLLERR | POLLHUP))) continue;
      ssize_t w = send(s->fds[i], s->frame + off[i], s->size - off[i],
                       MSG_NOSIGNAL | MSG_DONTWAIT);
      if (w < 0 && (errno == EAGAIN || errno == EINTR)) continue;
      if (w <= 0) { /* EPIPE / ECONNRESET: the node closed this client */
        done[i] = true;
        atomic_fetch_add(&s->closed, 1);
        continue;
      }
      off[i] += (size_t)w;
      if (off[i] == s->size) {
        off[i] = 0;
        s->sent[i]++;
      }
    }
  }
  return NULL;
}

/* Connects |n| non-reading clients to |addr| and starts writing |size|-byte Requests.
 * Returns 0 or -1. */
static inline int ho_slow_start(struct ho_slow *s, const char *addr, int n, uint32_t size,
                                uint64_t timeout_ns) {
  memset(s, 0, sizeof *s);
  snprintf(s->addr, sizeof s->addr, "%s", addr);
  s->n = n;
  s->size = size;
  s->timeout_ns = timeout_ns;
  s->frame = malloc(size);
  if (!s->frame || n > HO_SLOW_MAX) return -1;
  ho_request(s->frame, size, 7);
  for (int i = 0; i < n; i++) {
    s->fds[i] = ho_connect_small(addr);
    if (s->fds[i] < 0) return -1;
  }
  return pthread_create(&s->thread, NULL, ho_slow_run, s) == 0 ? 0 : -1;
}

/* Waits for the writer to finish (all closed, or its timeout). Returns the clients closed. */
static inline int ho_slow_join(struct ho_slow *s) {
  pthread_join(s->thread, NULL);
  for (int i = 0; i < s->n; i++) close(s->fds[i]);
  free(s->frame);
  return atomic_load(&s->closed);
}

/* ---- `vsrbus node` as a child process --------------------------------------------------- */

struct ho_node {
  pid_t pid;
  char log_path[64];
  char addr[64];
};

/* Children still running when the test exits (a failed assertion skips the test's own stop)
 * are killed by PID at exit. */
#define HO_CHILDREN_MAX 8
static pid_t ho_children[HO_CHILDREN_MAX];

static inline void ho_kill_children(void) {
  for (int i = 0; i < HO_CHILDREN_MAX; i++) {
    if (ho_children[i] <= 0) continue;
    kill(ho_children[i], SIGKILL);
    waitpid(ho_children[i], NULL, 0);
    ho_children[i] = 0;
  }
}

static inline void ho_child_track(pid_t pid, pid_t old) {
  static bool registered;
  if (!registered) {
    atexit(ho_kill_children);
    registered = true;
  }
  for (int i = 0; i < HO_CHILDREN_MAX; i++) {
    if (ho_children[i] == old) {
      ho_children[i] = pid;
      return;
    }
  }
}

/* The whole log so far (malloc'd, NUL-terminated; free it), or NULL. */
static inline char *ho_log(const struct ho_node *n) {
  FILE *f = fopen(n->log_path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long len = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *buf = malloc((size_t)len + 1);
  size_t got = buf ? fread(buf, 1, (size_t)len, f) : 0;
  fclose(f);
  if (buf) buf[got] = 0;
  return buf;
}

/* Lines of |log| holding |a| and (if not NULL) |b|. */
static inline int ho_count(const char *log, const char *a, const char *b) {
  int n = 0;
  for (const char *line = log; line && *line;) {
    const char *eol = strchr(line, '\n');
    size_t len = eol ? (size_t)(eol - line) : strlen(line);
    char buf[1024];
    snprintf(buf, sizeof buf, "%.*s", (int)len, line);
    if (strstr(buf, a) && (!b || strstr(buf, b))) n++;
    line = eol ? eol + 1 : NULL;
  }
  return n;
}

/* Starts `$VSRBUS_BIN node --tcp 127.0.0.1:0 --quic off ARGS...` (|args| NULL-terminated) with
 * RLIMIT_NOFILE |nofile| (0: inherited) and its output in a temporary file; waits (10 s) for
 * its listen line. Returns 0, VSRT_SKIP (forced backend missing) or -1. */
static inline int ho_node_start(struct ho_node *n, rlim_t nofile, const char *const *args) {
  memset(n, 0, sizeof *n);
  const char *bin = getenv("VSRBUS_BIN");
  if (!bin) return -1;
  snprintf(n->log_path, sizeof n->log_path, "/tmp/vsrbus-it-node-XXXXXX");
  int log = mkstemp(n->log_path);
  if (log < 0) return -1;
  const char *argv[48] = {bin, "node", "--tcp", "127.0.0.1:0", "--quic", "off"};
  int argc = 6;
  for (int i = 0; args && args[i] && argc < 47; i++) argv[argc++] = args[i];
  argv[argc] = NULL;
  n->pid = fork();
  if (n->pid < 0) return -1;
  if (n->pid == 0) {
    dup2(log, 1);
    dup2(log, 2);
    for (int fd = 3; fd < 1024; fd++) close(fd);
    if (nofile) {
      struct rlimit rl = {nofile, nofile};
      if (setrlimit(RLIMIT_NOFILE, &rl) != 0) _exit(126);
    }
    execv(bin, (char *const *)argv);
    _exit(127);
  }
  close(log);
  ho_child_track(n->pid, 0);
  uint64_t end = vsrt_now() + 10 * HO_SEC;
  while (vsrt_now() < end) {
    char *text = ho_log(n);
    const char *at = text ? strstr(text, "client plane tcp listening on ") : NULL;
    if (at) sscanf(at + strlen("client plane tcp listening on "), "%63[0-9.:]", n->addr);
    bool skip = text && strstr(text, "io_uring forced but unavailable");
    free(text);
    if (n->addr[0]) return 0;
    int st;
    if (waitpid(n->pid, &st, WNOHANG) == n->pid) {
      ho_child_track(0, n->pid);
      n->pid = 0;
      return skip ? VSRT_SKIP : -1;
    }
    usleep(10000);
  }
  return -1;
}

/* SIGINT, then waits (|timeout_ns|, then SIGKILL). Returns the exit status, or -1 if it had to
 * be killed or did not exit normally. */
static inline int ho_node_stop(struct ho_node *n, uint64_t timeout_ns) {
  if (n->pid <= 0) return -1;
  kill(n->pid, SIGINT);
  uint64_t end = vsrt_now() + timeout_ns;
  int st = 0;
  while (waitpid(n->pid, &st, WNOHANG) != n->pid) {
    if (vsrt_now() >= end) {
      kill(n->pid, SIGKILL);
      waitpid(n->pid, &st, 0);
      ho_child_track(0, n->pid);
      n->pid = 0;
      return -1;
    }
    usleep(10000);
  }
  ho_child_track(0, n->pid);
  n->pid = 0;
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static inline void ho_node_cleanup(struct ho_node *n) {
  if (n->pid > 0) ho_node_stop(n, 5 * HO_SEC);
  if (n->log_path[0]) unlink(n->log_path);
}

#endif
