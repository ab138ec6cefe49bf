/* Shared pieces of the vsrbus benchmark baselines (ideal.c, zmq.c, nng.c): the frame layout,
 * the command line, clocks, the CSV row that `vsrbus bench` also prints, memory figures, and
 * the pipes that carry counts between the forked ends. One header per program: every helper
 * is static. */
#ifndef BL_COMMON_H
#define BL_COMMON_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "hist.h"

/* Frame = 256-byte header + body, the vsrbus / Iggy wire layout (shared/spec/wire.md):
 * u32 LE total size @48, command @60 (5 = Request), request number u64 @168. Command 0
 * (Reserved, which a real client never sends) marks the end of a run in zmq / nng. */
#define BL_HDR 256
#define BL_OFF_SIZE 48
#define BL_OFF_COMMAND 60
#define BL_OFF_REQUEST 168
#define BL_CMD_REQUEST 5
#define BL_CMD_STOP 0
#define BL_FRAME_MAX (64u << 20)
/* Distinct frame memory the senders cycle through, shared out among connections: a 1 MiB
 * frame is not sent from a cache-hot buffer any more than it would be in a real bus. */
#define BL_POOL_BYTES (64u << 20)
#define BL_POOL_FRAMES_MAX 256 /* also the writev batch: 2 iovecs per frame, <= 512 */
#define BL_WARMUP 1000         /* untimed round trips before a latency run */

uint64_t bl_allocs(void); /* count_alloc.c */

#define BL_DIE(...)                                                                            \
  do {                                                                                         \
    fprintf(stderr, "%s: ", bl_prog);                                                          \
    fprintf(stderr, __VA_ARGS__);                                                              \
    fputc('\n', stderr);                                                                       \
    exit(1);                                                                                   \
  } while (0)

static const char *bl_prog = "baseline";

struct bl_opts {
  const char *mode;  /* tput | lat | idle */
  const char *label; /* mode column in the CSV (e.g. lat-1cpu); defaults to mode */
  size_t size;       /* frame bytes, header included */
  int conns;
  double seconds; /* tput: sending time */
  long iters;     /* lat: timed round trips */
  int pin_split;  /* server / receiver on CPU 1, client / sender on CPU 0 */
  const char *netns; /* ideal: the listener is made in this named network namespace (netns.sh) */
  const char *addr;  /* ideal: IPv4 address the listener binds (default 127.0.0.1) */
};

static inline void bl_usage(void) {
  fprintf(stderr,
          "usage: %s --mode tput|lat|idle [--size BYTES] [--conns N] [--seconds S]\n"
          "          [--iters ROUND_TRIPS] [--label MODE_COLUMN] [--pin-split]\n"
          "  tput: N connections stream frames for S seconds (defaults 256 B, 1, 2 s)\n"
          "  lat:  one connection, ping-pong, %d warm-up + ITERS timed round trips (20000)\n"
          "  idle: N connections (10000) opened and left idle; RSS growth per connection\n"
          "  --pin-split: receiver / server on CPU 1, sender / client on CPU 0\n"
          "  --netns NAME --addr IPV4 (ideal): listen in network namespace NAME on IPV4\n",
          bl_prog, BL_WARMUP);
}

static inline void bl_parse(int argc, char **argv, struct bl_opts *o) {
  static const struct option longs[] = {
    { "mode", required_argument, 0, 'm' },  { "size", required_argument, 0, 's' },
    { "conns", required_argument, 0, 'c' }, { "seconds", required_argument, 0, 't' },
    { "iters", required_argument, 0, 'i' }, { "label", required_argument, 0, 'l' },
    { "help", no_argument, 0, 'h' },        { "pin-split", no_argument, 0, 'p' },
    { "netns", required_argument, 0, 'n' }, { "addr", required_argument, 0, 'a' },
    { 0, 0, 0, 0 },
  };
  const char *p = strrchr(argv[0], '/');
  bl_prog = p ? p + 1 : argv[0];
  *o = (struct bl_opts){ .mode = "tput", .size = 256, .conns = 0, .seconds = 2, .iters = 20000 };
  for (int c; (c = getopt_long(argc, argv, "m:s:c:t:i:l:h", longs, 0)) != -1;) {
    switch (c) {
    case 'm': o->mode = optarg; break;
    case 's': o->size = strtoul(optarg, 0, 0); break;
    case 'c': o->conns = atoi(optarg); break;
    case 't': o->seconds = atof(optarg); break;
    case 'i': o->iters = atol(optarg); break;
    case 'l': o->label = optarg; break;
    case 'p': o->pin_split = 1; break;
    case 'n': o->netns = optarg; break;
    case 'a': o->addr = optarg; break;
    case 'h': bl_usage(); exit(0);
    default: bl_usage(); exit(2);
    }
  }
  if (strcmp(o->mode, "tput") && strcmp(o->mode, "lat") && strcmp(o->mode, "idle")) {
    bl_usage();
    exit(2);
  }
  if (o->conns <= 0) o->conns = strcmp(o->mode, "idle") ? 1 : 10000;
  if (o->size < BL_HDR || o->size > BL_FRAME_MAX) BL_DIE("--size must be %d..%u", BL_HDR,
                                                         BL_FRAME_MAX);
  if (!strcmp(o->mode, "lat") && o->conns != 1) BL_DIE("lat runs on one connection");
  if (o->seconds <= 0 || o->iters <= 0) BL_DIE("--seconds and --iters must be > 0");
  if (!o->label) o->label = o->mode;
}

static inline uint64_t bl_now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static inline void bl_put32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static inline void bl_put64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static inline uint32_t bl_get32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* A Request header as a client would send it: zero except size, command and request no. */
static inline void bl_header(uint8_t *h, size_t frame_bytes, uint8_t command) {
  memset(h, 0, BL_HDR);
  bl_put32(h + BL_OFF_SIZE, (uint32_t)frame_bytes);
  h[BL_OFF_COMMAND] = command;
}

static inline void *bl_alloc(size_t n) {
  void *p = aligned_alloc(4096, (n + 4095) / 4096 * 4096);
  if (!p) BL_DIE("out of memory (%zu bytes)", n);
  return p;
}

/* Frames one sender cycles through: its share of BL_POOL_BYTES, 1..BL_POOL_FRAMES_MAX. */
static inline size_t bl_pool_frames(size_t frame_bytes, int conns) {
  size_t n = BL_POOL_BYTES / (size_t)conns / frame_bytes;
  return n < 1 ? 1 : n > BL_POOL_FRAMES_MAX ? BL_POOL_FRAMES_MAX : n;
}

/* |n| contiguous whole frames (header + body), pages touched so they are resident. */
static inline uint8_t *bl_frames(size_t n, size_t frame_bytes) {
  uint8_t *p = bl_alloc(n * frame_bytes);
  for (size_t i = 0; i < n; i++) {
    uint8_t *f = p + i * frame_bytes;
    bl_header(f, frame_bytes, BL_CMD_REQUEST);
    memset(f + BL_HDR, (int)(0x5a ^ i), frame_bytes - BL_HDR);
  }
  return p;
}

/* A frame is one of ours: size matches the run, command is Request or the stop marker. */
static inline int bl_frame_ok(const uint8_t *f, size_t len, size_t want) {
  if (len < BL_HDR || bl_get32(f + BL_OFF_SIZE) != len) return 0;
  if (f[BL_OFF_COMMAND] == BL_CMD_STOP) return len == BL_HDR;
  return f[BL_OFF_COMMAND] == BL_CMD_REQUEST && len == want;
}

/* One line of /proc/self/status ("VmRSS", "VmHWM") in KiB; -1 if missing. */
static inline double bl_status_kib(const char *key) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  double v = -1;
  size_t kl = strlen(key);
  if (!f) return -1;
  while (fgets(line, sizeof line, f))
    if (!strncmp(line, key, kl) && line[kl] == ':') v = atof(line + kl + 1);
  fclose(f);
  return v;
}

/* Counts that one end hands to the other through a pipe at the end of a run. */
struct bl_stats {
  uint64_t allocs; /* heap allocations in the timed window */
  uint64_t msgs;   /* frames sent or received in that window */
  double hwm_kib;  /* peak RSS */
};

static inline void bl_stats_send(int fd, const struct bl_stats *s) {
  if (write(fd, s, sizeof *s) != (ssize_t)sizeof *s) BL_DIE("stats pipe write: %s",
                                                            strerror(errno));
}
static inline void bl_stats_recv(int fd, struct bl_stats *s) {
  ssize_t n;
  while ((n = read(fd, s, sizeof *s)) < 0 && errno == EINTR) {}
  if (n != (ssize_t)sizeof *s) BL_DIE("stats pipe read: %s", n < 0 ? strerror(errno) : "EOF");
}
static inline void bl_byte_send(int fd) {
  if (write(fd, "r", 1) != 1) BL_DIE("pipe write");
}
static inline void bl_byte_recv(int fd) {
  char c;
  ssize_t n;
  while ((n = read(fd, &c, 1)) < 0 && errno == EINTR) {}
  if (n != 1) BL_DIE("pipe read: peer gone");
}

/* The CSV row (the columns of `vsrbus bench`); a negative value prints as an empty field. */
struct bl_row {
  const char *system, *transport, *mode;
  size_t frame_bytes;
  int conns;
  double msgs_per_s, mb_per_s, p50_us, p99_us, p999_us, rss_kib, allocs_per_msg;
};
#define BL_ROW_EMPTY                                                                           \
  .msgs_per_s = -1, .mb_per_s = -1, .p50_us = -1, .p99_us = -1, .p999_us = -1, .rss_kib = -1, \
  .allocs_per_msg = -1

static inline void bl_field(double v, int decimals) {
  if (v >= 0) printf(",%.*f", decimals, v);
  else fputs(",", stdout);
}
static inline void bl_row_print(const struct bl_row *r) {
  printf("%s,%s,%s,%zu,%d", r->system, r->transport, r->mode, r->frame_bytes, r->conns);
  bl_field(r->msgs_per_s, 0);
  bl_field(r->mb_per_s, 1);
  bl_field(r->p50_us, 1);
  bl_field(r->p99_us, 1);
  bl_field(r->p999_us, 1);
  bl_field(r->rss_kib, r->rss_kib < 100 ? 2 : 0); /* idle: KiB per connection */
  bl_field(r->allocs_per_msg, 3);
  putchar('\n');
  fflush(stdout);
}

static inline void bl_row_hist(struct bl_row *r, const struct hist *h) {
  r->p50_us = (double)hist_pct(h, 50) / 1e3;
  r->p99_us = (double)hist_pct(h, 99) / 1e3;
  r->p999_us = (double)hist_pct(h, 99.9) / 1e3;
}

static inline double bl_per(uint64_t num, uint64_t den) {
  return den ? (double)num / (double)den : -1;
}

/* Lets this process hold |want| descriptors if it can (raising the hard limit needs root);
 * returns the limit in force. */
static inline long bl_nofile(long want) {
  struct rlimit r;
  if (getrlimit(RLIMIT_NOFILE, &r)) return 1024;
  if ((long)r.rlim_cur >= want) return (long)r.rlim_cur;
  struct rlimit n = { .rlim_cur = (rlim_t)want, .rlim_max = r.rlim_max };
  if (n.rlim_max < n.rlim_cur) n.rlim_max = n.rlim_cur;
  if (setrlimit(RLIMIT_NOFILE, &n)) {
    n.rlim_cur = n.rlim_max = r.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &n)) return (long)r.rlim_cur;
  }
  return (long)n.rlim_cur;
}

/* Idle mode can only open as many connections as descriptors allow (one per connection on
 * each side, plus a margin for the library's own). */
static inline void bl_idle_limit(struct bl_opts *o, int fds_per_conn) {
  long lim = bl_nofile((long)o->conns * fds_per_conn + 256);
  long fit = (lim - 256) / fds_per_conn;
  if (fit < o->conns) {
    fprintf(stderr, "%s: descriptor limit %ld: %d idle connections instead of %d\n", bl_prog,
            lim, (int)fit, o->conns);
    o->conns = (int)fit;
  }
  if (o->conns < 2) BL_DIE("idle needs at least 2 connections");
}

static inline int bl_wait_child(pid_t pid) {
  int st = 0;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Seconds either end may live: a hung peer ends in SIGALRM, never in a stuck benchmark. */
static inline unsigned bl_alarm_s(const struct bl_opts *o) {
  return (unsigned)o->seconds + 60;
}

/* With --pin-split, binds this process (and the threads it starts later) to one CPU: the
 * child (server / receiver) to CPU 1, the parent to CPU 0. A wake-up then always crosses CPUs,
 * which an unpinned run does only when the scheduler decides so. */
static inline void bl_pin(const struct bl_opts *o, int is_child) {
  if (!o->pin_split) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(is_child ? 1 : 0, &set);
  if (sched_setaffinity(0, sizeof set, &set)) BL_DIE("sched_setaffinity: %s", strerror(errno));
}

/* Sleeps |ms| milliseconds. */
static inline void bl_sleep_ms(long ms) {
  struct timespec t = { ms / 1000, (ms % 1000) * 1000000L };
  while (nanosleep(&t, &t) && errno == EINTR) {}
}

/* Forks the two ends after making the pipes between them (up: child -> parent, down: parent
 * -> child); both ends arm the alarm and take their CPU. Returns fork()'s value. */
static inline pid_t bl_fork(const struct bl_opts *o, int up[2], int down[2]) {
  if (pipe(up) || pipe(down)) BL_DIE("pipe");
  fflush(stdout);
  pid_t pid = fork();
  if (pid < 0) BL_DIE("fork");
  alarm(bl_alarm_s(o));
  bl_pin(o, pid == 0);
  return pid;
}

/* The end of a latency run on the client: the server's counts come through |stats_fd| (it
 * sends them once it saw the end), then the row. |allocs| are the client's in the timed loop;
 * a round trip moves two frames. */
static inline void bl_lat_row(const char *system, const struct bl_opts *o, const struct hist *h,
                              uint64_t allocs, int stats_fd) {
  struct bl_stats srv;
  bl_stats_recv(stats_fd, &srv);
  struct bl_row row = { system, "tcp", o->label, o->size, 1, BL_ROW_EMPTY };
  bl_row_hist(&row, h);
  row.rss_kib = srv.hwm_kib;
  row.allocs_per_msg = (double)(allocs + srv.allocs) / (2.0 * (double)o->iters);
  bl_row_print(&row);
}

/* Throughput senders of the library baselines (zmq.c, nng.c): one thread and socket per
 * connection sends its share of the frame pool round and round for o->seconds, counting the
 * request number up, then one STOP header. */
struct bl_tx {
  pthread_t thread;
  void *sock; /* the library's socket, set by bl_tx_lib.open */
  uint8_t *frames;
  size_t nframes;
  uint64_t sent;
  const struct bl_tx_lib *lib;
  const struct bl_opts *o;
  pthread_barrier_t *start; /* passed twice: all connected, then the timed window opens */
};
struct bl_tx_lib {
  void (*open)(struct bl_tx *x, const char *addr); /* a socket connected to addr */
  void (*send)(void *sock, const void *buf, size_t len); /* dies on error */
};

static inline void *bl_tx_main(void *arg) {
  struct bl_tx *x = arg;
  size_t size = x->o->size;
  uint64_t seq = 0;
  pthread_barrier_wait(x->start);
  pthread_barrier_wait(x->start);
  uint64_t end = bl_now_ns() + (uint64_t)(x->o->seconds * 1e9);
  while (bl_now_ns() < end) {
    for (size_t i = 0; i < x->nframes; i++) {
      uint8_t *f = x->frames + i * size;
      bl_put64(f + BL_OFF_REQUEST, seq++);
      x->lib->send(x->sock, f, size);
    }
    x->sent += x->nframes;
  }
  uint8_t stop[BL_HDR];
  bl_header(stop, BL_HDR, BL_CMD_STOP);
  x->lib->send(x->sock, stop, BL_HDR);
  return NULL;
}

/* Runs the senders to the end and sends the frame and allocation counts of the timed window
 * to the receiver through |stats_fd|. Returns the senders, sockets still open (the caller
 * closes them when closing cannot drop queued frames). */
static inline struct bl_tx *bl_tx_run(const struct bl_opts *o, const struct bl_tx_lib *lib,
                                      const char *addr, int stats_fd) {
  struct bl_tx *xs = calloc((size_t)o->conns, sizeof *xs);
  if (!xs) BL_DIE("out of memory");
  size_t nframes = bl_pool_frames(o->size, o->conns);
  static pthread_barrier_t start;
  pthread_barrier_init(&start, 0, (unsigned)o->conns + 1);
  for (int i = 0; i < o->conns; i++) {
    xs[i] = (struct bl_tx){ .lib = lib, .o = o, .start = &start };
    lib->open(&xs[i], addr);
    xs[i].frames = bl_frames(nframes, o->size);
    xs[i].nframes = nframes;
    if (pthread_create(&xs[i].thread, 0, bl_tx_main, &xs[i])) BL_DIE("pthread_create");
  }
  pthread_barrier_wait(&start);
  struct bl_stats st = { .allocs = bl_allocs() };
  pthread_barrier_wait(&start);
  for (int i = 0; i < o->conns; i++) {
    pthread_join(xs[i].thread, 0);
    st.msgs += xs[i].sent;
  }
  st.allocs = bl_allocs() - st.allocs;
  bl_stats_send(stats_fd, &st);
  return xs;
}

/* Receiver side of a library throughput run: counts frames from the first one (which starts
 * the clock and is not counted) and prints the row once every sender sent its STOP. */
struct bl_rx {
  uint64_t msgs, bytes, t0, a0, t1, a1;
};
static inline void bl_rx_frame(struct bl_rx *r, size_t len) {
  if (!r->t0) {
    r->t0 = bl_now_ns();
    r->a0 = bl_allocs();
    return;
  }
  r->msgs++;
  r->bytes += len;
}
static inline void bl_rx_end(struct bl_rx *r) {
  r->t1 = bl_now_ns();
  r->a1 = bl_allocs();
}
/* After bl_rx_end: the senders' counts come through |stats_fd|; prints the row. */
static inline void bl_rx_row(const char *system, const struct bl_opts *o, const struct bl_rx *r,
                             int stats_fd) {
  struct bl_stats tx;
  bl_stats_recv(stats_fd, &tx);
  double secs = r->t1 > r->t0 ? (double)(r->t1 - r->t0) / 1e9 : 1e-9;
  struct bl_row row = { system, "tcp", o->label, o->size, o->conns, BL_ROW_EMPTY };
  row.msgs_per_s = (double)r->msgs / secs;
  row.mb_per_s = (double)r->bytes / secs / 1e6;
  row.rss_kib = bl_status_kib("VmHWM");
  row.allocs_per_msg = bl_per(r->a1 - r->a0, r->msgs) + bl_per(tx.allocs, tx.msgs);
  bl_row_print(&row);
}

#endif
