/* io_bench: the vsrbus io layer alone over loopback TCP, epoll against io_uring. A forked
 * receiver and a sender each run one loop: "tput" streams --size byte frames over --conns
 * connections in sendv batches (as the bus coalesces them), "lat" ping-pongs one frame per
 * connection. Prints one CSV row in the bench/run.sh columns; bench/io_bench.sh builds it and
 * counts syscalls per 1,000 frames. Internal API on purpose: no transport, no framing. */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "io/io.h"
#include "util/hist.h"
#include "vsrbus/vsrbus.h"

#define IB_CONNS_MAX 1024
#define IB_BATCH_FRAMES_MAX 256       /* iovecs per sendv: one per frame */
#define IB_BATCH_BYTES_MAX (1u << 20) /* and at most 1 MiB per sendv */
#define IB_WARMUP 1000                /* latency: untimed round trips per run */

#define IB_DIE(...)                                                                            \
  do {                                                                                         \
    fprintf(stderr, "io_bench: " __VA_ARGS__);                                                 \
    fputc('\n', stderr);                                                                       \
    exit(1);                                                                                   \
  } while (0)

struct ib_opts {
  bool lat;
  enum vsri_io_backend_kind backend;
  size_t size;
  int conns;
  double seconds; /* stop after this long, unless |frames| is set */
  uint64_t frames;
  uint32_t pooled_bufs, pooled_buf_size; /* 0: the loop's defaults */
};

struct ib_conn {
  struct vsri_completion wc, rc, cc;
  int fd;
  struct iovec iov[IB_BATCH_FRAMES_MAX];
  int iov_first, iov_count; /* unsent part of the batch */
  uint64_t batch_frames;
  size_t got; /* bytes of the frame being received */
  uint64_t t_sent;
  bool writing, echo_due, done, eof;
};

/* The end of the run as the receiver saw it, sent back through a pipe. */
struct ib_report {
  uint64_t bytes, first_ns, last_ns, allocs, enters, callbacks;
};

static struct ib_opts ib;
static struct vsri_io *ib_io;
static struct ib_conn ib_c[IB_CONNS_MAX];
static uint8_t *ib_src; /* frames sent come from here (read-only, shared by connections) */
static int ib_live, ib_accepted, ib_closed, ib_eofs;
static uint64_t ib_frames_reserved, ib_frames_done, ib_deadline_ns;
static uint64_t ib_tx_allocs0, ib_lat_start_ns, ib_lat_end_ns;
static struct vsri_hist ib_hist;
static struct ib_report ib_rx;

static uint64_t ib_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void ib_nodelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* ---- sender (parent) --------------------------------------------------------------------- */

static bool ib_stop(void) {
  if (ib.frames) return ib_frames_reserved >= ib.frames;
  return vsri_io_now(ib_io) >= ib_deadline_ns;
}

static void ib_finish(struct ib_conn *c) {
  if (!ib_lat_end_ns) ib_lat_end_ns = vsri_io_now_fresh(ib_io);
  c->done = true;
  shutdown(c->fd, SHUT_WR);
  ib_live--;
}

static void ib_wrote(struct vsri_io *io, struct vsri_completion *wc, int32_t res);

static void ib_write_rest(struct ib_conn *c) {
  c->writing = true;
  vsri_io_sendv(ib_io, &c->wc, c->fd, c->iov + c->iov_first, c->iov_count, ib_wrote, c);
}

/* Queues the next batch of frames (tput) or one frame (lat). */
static void ib_send_batch(struct ib_conn *c) {
  if (ib_stop()) {
    ib_finish(c);
    return;
  }
  size_t per = IB_BATCH_BYTES_MAX / ib.size;
  uint64_t n = ib.lat ? 1 : (per < 1 ? 1 : per > IB_BATCH_FRAMES_MAX ? IB_BATCH_FRAMES_MAX : per);
  if (ib.frames && n > ib.frames - ib_frames_reserved) n = ib.frames - ib_frames_reserved;
  ib_frames_reserved += n;
  for (uint64_t i = 0; i < n; i++) c->iov[i] = (struct iovec){ib_src + i * ib.size, ib.size};
  c->iov_first = 0;
  c->iov_count = (int)n;
  c->batch_frames = n;
  c->t_sent = vsri_io_now_fresh(ib_io);
  ib_write_rest(c);
}

static void ib_wrote(struct vsri_io *io, struct vsri_completion *wc, int32_t res) {
  (void)io;
  struct ib_conn *c = wc->ctx;
  c->writing = false;
  if (res < 0) IB_DIE("sendv: %s", strerror(-res));
  size_t left = (size_t)res;
  while (left > 0 && left >= c->iov[c->iov_first].iov_len) {
    left -= c->iov[c->iov_first].iov_len;
    c->iov_first++;
    c->iov_count--;
  }
  if (left > 0) {
    c->iov[c->iov_first].iov_base = (uint8_t *)c->iov[c->iov_first].iov_base + left;
    c->iov[c->iov_first].iov_len -= left;
  }
  if (c->iov_count > 0) {
    ib_write_rest(c); /* partial write */
    return;
  }
  if (!ib.lat) {
    ib_frames_done += c->batch_frames;
    if (!ib_tx_allocs0 && ib_frames_done >= IB_WARMUP) ib_tx_allocs0 = vsr_alloc_count();
    ib_send_batch(c);
  } else if (c->echo_due) {
    c->echo_due = false;
    ib_send_batch(c);
  }
}

/* Latency: the echo of our frame came back. */
static void ib_echo_read(struct vsri_io *io, struct vsri_completion *rc, int32_t res) {
  struct ib_conn *c = rc->ctx;
  if (res <= 0) {
    if (res < 0) IB_DIE("recv: %s", strerror(-res));
    c->eof = true;
    ib_eofs++;
    return;
  }
  c->got += (size_t)res;
  if (c->got >= ib.size) {
    c->got -= ib.size;
    uint64_t now = vsri_io_now_fresh(io);
    if (++ib_frames_done > IB_WARMUP) vsri_hist_record(&ib_hist, now - c->t_sent);
    if (ib_frames_done == IB_WARMUP) {
      ib_lat_start_ns = now;
      ib_deadline_ns = now + (uint64_t)(ib.seconds * 1e9);
      ib_tx_allocs0 = vsr_alloc_count();
    }
    if (c->writing) c->echo_due = true;
    else ib_send_batch(c);
  }
  vsri_io_recv_pooled(io, rc, c->fd, ib_echo_read, c);
}

static void ib_connected(struct vsri_io *io, struct vsri_completion *cc, int32_t res) {
  struct ib_conn *c = cc->ctx;
  if (res < 0) IB_DIE("connect: %s", strerror(-res));
  ib_nodelay(c->fd);
  if (ib.lat) vsri_io_recv_pooled(io, &c->rc, c->fd, ib_echo_read, c);
  ib_send_batch(c);
}

/* ---- receiver (child) -------------------------------------------------------------------- */

static void ib_rx_closed(struct vsri_io *io, struct vsri_completion *cc, int32_t res) {
  (void)io;
  (void)cc;
  (void)res;
  ib_closed++;
}

static void ib_echoed(struct vsri_io *io, struct vsri_completion *wc, int32_t res) {
  (void)io;
  (void)wc;
  if (res != (int32_t)ib.size) IB_DIE("echo sendv: %d", res);
}

static void ib_rx_read(struct vsri_io *io, struct vsri_completion *rc, int32_t res) {
  struct ib_conn *c = rc->ctx;
  if (res <= 0) {
    if (res < 0) IB_DIE("recv: %s", strerror(-res));
    vsri_io_close(io, &c->cc, c->fd, ib_rx_closed, c);
    return;
  }
  uint64_t now = vsri_io_now(io);
  if (!ib_rx.first_ns) ib_rx.first_ns = now;
  ib_rx.last_ns = now;
  uint64_t warm = (uint64_t)IB_WARMUP * ib.size;
  if (ib_rx.bytes < warm && ib_rx.bytes + (uint64_t)res >= warm) ib_rx.allocs = vsr_alloc_count();
  ib_rx.bytes += (uint64_t)res;
  if (ib.lat) {
    c->got += (size_t)res;
    if (c->got >= ib.size) { /* the sender has one frame in flight: echo it */
      c->got -= ib.size;
      c->iov[0] = (struct iovec){ib_src, ib.size};
      vsri_io_sendv(io, &c->wc, c->fd, c->iov, 1, ib_echoed, c);
    }
  }
  vsri_io_recv_pooled(io, rc, c->fd, ib_rx_read, c);
}

static void ib_accepted_cb(struct vsri_io *io, struct vsri_completion *ac, int32_t res) {
  if (res < 0) IB_DIE("accept: %s", strerror(-res));
  struct ib_conn *c = &ib_c[ib_accepted++];
  c->fd = res;
  ib_nodelay(c->fd);
  vsri_io_recv_pooled(io, &c->rc, c->fd, ib_rx_read, c);
  if (ib_accepted < ib.conns) vsri_io_accept(io, ac, (int)(intptr_t)ac->ctx, NULL, NULL,
                                             ib_accepted_cb, ac->ctx);
}

static struct vsri_io *ib_loop(void) {
  struct vsri_io_options o;
  vsri_io_options_default(&o);
  o.backend = ib.backend;
  if (ib.pooled_bufs) o.pooled_buf_count = ib.pooled_bufs;
  if (ib.pooled_buf_size) o.pooled_buf_size = ib.pooled_buf_size;
  struct vsri_io *io;
  int err = vsri_io_new(&io, &o);
  if (err) IB_DIE("vsri_io_new(%s): %s", ib.backend == VSRI_IO_URING ? "uring" : "epoll",
                  vsr_strerror(err));
  return io;
}

static void ib_receiver(int lfd, int report_fd) {
  ib_io = ib_loop();
  struct vsri_completion ac;
  vsri_io_accept(ib_io, &ac, lfd, NULL, NULL, ib_accepted_cb, (void *)(intptr_t)lfd);
  while (ib_closed < ib.conns) {
    if (vsri_io_run(ib_io, -1) < 0) IB_DIE("run");
  }
  struct vsri_io_stats st;
  vsri_io_stats(ib_io, &st);
  ib_rx.allocs = ib_rx.allocs ? vsr_alloc_count() - ib_rx.allocs : 0;
  ib_rx.enters = st.enters;
  ib_rx.callbacks = st.callbacks;
  if (write(report_fd, &ib_rx, sizeof ib_rx) != sizeof ib_rx) IB_DIE("report: %s", strerror(errno));
  vsri_io_del(ib_io);
  _exit(0);
}

/* ---- main -------------------------------------------------------------------------------- */

static void ib_usage(void) {
  fprintf(stderr, "usage: io_bench --mode tput|lat --backend epoll|uring [--size BYTES]\n"
                  "                [--conns N] [--seconds S | --frames N]\n"
                  "                [--pooled-bufs N] [--pooled-buf-size BYTES]\n");
  exit(2);
}

static void ib_parse(int argc, char **argv) {
  static const struct option lo[] = {
      {"mode", 1, 0, 'm'},   {"backend", 1, 0, 'b'}, {"size", 1, 0, 's'},
      {"conns", 1, 0, 'c'},  {"seconds", 1, 0, 't'}, {"frames", 1, 0, 'f'},
      {"pooled-bufs", 1, 0, 'p'}, {"pooled-buf-size", 1, 0, 'z'}, {0, 0, 0, 0},
  };
  ib = (struct ib_opts){.size = 256, .conns = 1, .seconds = 2, .backend = VSRI_IO_EPOLL};
  for (int ch; (ch = getopt_long(argc, argv, "", lo, NULL)) != -1;) {
    if (ch == 'm') ib.lat = strcmp(optarg, "lat") == 0;
    else if (ch == 'b') ib.backend = strcmp(optarg, "uring") == 0 ? VSRI_IO_URING : VSRI_IO_EPOLL;
    else if (ch == 's') ib.size = strtoull(optarg, NULL, 10);
    else if (ch == 'c') ib.conns = atoi(optarg);
    else if (ch == 't') ib.seconds = atof(optarg);
    else if (ch == 'f') ib.frames = strtoull(optarg, NULL, 10);
    else if (ch == 'p') ib.pooled_bufs = (uint32_t)strtoul(optarg, NULL, 10);
    else if (ch == 'z') ib.pooled_buf_size = (uint32_t)strtoul(optarg, NULL, 10);
    else ib_usage();
  }
  if (ib.size < 1 || ib.size > IB_BATCH_BYTES_MAX || ib.conns < 1 || ib.conns > IB_CONNS_MAX)
    ib_usage();
}

static int ib_listen(struct sockaddr_in *addr) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  *addr = (struct sockaddr_in){.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof *addr;
  if (fd < 0 || bind(fd, (struct sockaddr *)addr, len) || listen(fd, IB_CONNS_MAX) ||
      getsockname(fd, (struct sockaddr *)addr, &len))
    IB_DIE("listen: %s", strerror(errno));
  return fd;
}

static void ib_print(const struct ib_report *rx, uint64_t tx_allocs) {
  const char *be = ib.backend == VSRI_IO_URING ? "uring" : "epoll";
  double frames = (double)rx->bytes / (double)ib.size;
  double secs = ib.lat ? (double)(ib_lat_end_ns - ib_lat_start_ns) / 1e9
                       : (double)(rx->last_ns - rx->first_ns) / 1e9;
  double msgs = 0, mbs = 0, p50 = 0, p99 = 0, p999 = 0;
  if (ib.lat) {
    msgs = secs > 0 ? (double)ib_hist.total / secs : 0;
    p50 = vsri_hist_percentile(&ib_hist, 50) / 1e3;
    p99 = vsri_hist_percentile(&ib_hist, 99) / 1e3;
    p999 = vsri_hist_percentile(&ib_hist, 99.9) / 1e3;
  } else if (secs > 0) {
    msgs = frames / secs;
    mbs = (double)rx->bytes / secs / 1e6;
  }
  struct rusage ru, rc;
  getrusage(RUSAGE_SELF, &ru);
  getrusage(RUSAGE_CHILDREN, &rc);
  struct vsri_io_stats st;
  vsri_io_stats(ib_io, &st);
  double allocs = frames > 0 ? (double)(rx->allocs + tx_allocs) / frames : 0;
  printf("io-%s,tcp,%s,%zu,%d,%.0f,%.1f,%.1f,%.1f,%.1f,%ld,%.4f\n", be, ib.lat ? "lat" : "tput",
         ib.size, ib.conns, msgs, mbs, p50, p99, p999, ru.ru_maxrss + rc.ru_maxrss, allocs);
  /* CPU per frame resists the noise of a shared machine better than frames per second. */
  double cpu = (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + rc.ru_utime.tv_sec +
                        rc.ru_stime.tv_sec) +
               (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec + rc.ru_utime.tv_usec +
                        rc.ru_stime.tv_usec) / 1e6;
  fprintf(stderr, "io_bench %s %s size=%zu conns=%d: %.0f frames in %.3f s, %.0f ns CPU/frame; "
          "sender %llu enters %llu callbacks, receiver %llu enters %llu callbacks\n", be,
          ib.lat ? "lat" : "tput", ib.size, ib.conns, frames, secs,
          frames > 0 ? cpu * 1e9 / frames : 0, (unsigned long long)st.enters,
          (unsigned long long)st.callbacks, (unsigned long long)rx->enters,
          (unsigned long long)rx->callbacks);
}

int main(int argc, char **argv) {
  ib_parse(argc, argv);
  ib_src = aligned_alloc(4096, IB_BATCH_BYTES_MAX * 2);
  memset(ib_src, 0xa5, IB_BATCH_BYTES_MAX * 2);
  vsri_hist_init(&ib_hist);
  struct sockaddr_in addr;
  int lfd = ib_listen(&addr);
  int pfd[2];
  if (pipe(pfd)) IB_DIE("pipe: %s", strerror(errno));
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0) IB_DIE("fork: %s", strerror(errno));
  if (pid == 0) {
    close(pfd[0]);
    ib_receiver(lfd, pfd[1]);
  }
  close(pfd[1]);
  close(lfd);
  ib_io = ib_loop();
  ib_deadline_ns = ib_now() + (uint64_t)(ib.seconds * 1e9) + (ib.lat ? 3600ull * 1000000000 : 0);
  ib_live = ib.conns;
  for (int i = 0; i < ib.conns; i++) {
    struct ib_conn *c = &ib_c[i];
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) IB_DIE("socket: %s", strerror(errno));
    vsri_io_connect(ib_io, &c->cc, c->fd, (struct sockaddr *)&addr, sizeof addr, ib_connected, c);
  }
  /* Latency runs also wait for the receiver's close, so no receive is left pending. */
  while (ib_live > 0 || (ib.lat && ib_eofs < ib.conns)) {
    if (vsri_io_run(ib_io, -1) < 0) IB_DIE("run");
  }
  uint64_t tx_allocs = ib_tx_allocs0 ? vsr_alloc_count() - ib_tx_allocs0 : 0;
  struct ib_report rx;
  if (read(pfd[0], &rx, sizeof rx) != sizeof rx) IB_DIE("no report from the receiver");
  int status;
  waitpid(pid, &status, 0);
  ib_print(&rx, tx_allocs);
  for (int i = 0; i < ib.conns; i++) close(ib_c[i].fd);
  vsri_io_del(ib_io);
  return 0;
}
