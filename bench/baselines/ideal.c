/* The hand-rolled TCP baseline ("ideal"): blocking sockets with TCP_NODELAY, a sender that
 * hands batches of frames to one writev, a receiver with a 64 KiB buffered frame reader. It is
 * the ceiling vsrbus over TCP is held against. Fork: child = receiver / echo server, parent =
 * sender / client; throughput is measured by the receiver.
 *   tput  one connection: blocking writev / blocking buffered reads; N connections: one
 *         thread per side with one epoll set (non-blocking writev batches, the same reader)
 *   lat   one connection, ping-pong of one frame, blocking reads, RTT percentiles
 *   idle  N connections accepted into one epoll set; RSS growth per connection */
#include "common.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>

#define RD_BUF (64u << 10)
#define RD_DIRECT_MIN (16u << 10) /* frames this big go around the buffer */

static struct bl_opts opt;
static int listen_fd;
static struct sockaddr_in listen_addr;

/* --netns NAME: the listening socket is made inside that namespace (a socket stays in the
 * namespace it was made in), the process then returns to its own; accepted connections live
 * in NAME, the sender connects from wherever the process runs (bench/netns.sh). */
static void tcp_listen(int backlog) {
  socklen_t len = sizeof listen_addr;
  int home = -1;
  if (opt.netns) {
    char path[256];
    snprintf(path, sizeof path, "/run/netns/%s", opt.netns);
    int ns = open(path, O_RDONLY | O_CLOEXEC);
    home = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    if (ns < 0 || home < 0 || setns(ns, CLONE_NEWNET))
      BL_DIE("enter network namespace %s: %s", opt.netns, strerror(errno));
    close(ns);
  }
  listen_fd = socket(AF_INET, SOCK_STREAM, 0);
  listen_addr = (struct sockaddr_in){ .sin_family = AF_INET,
                                      .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
  if (opt.addr && inet_pton(AF_INET, opt.addr, &listen_addr.sin_addr) != 1)
    BL_DIE("--addr %s: not an IPv4 address", opt.addr);
  if (listen_fd < 0 || bind(listen_fd, (void *)&listen_addr, sizeof listen_addr) ||
      listen(listen_fd, backlog) || getsockname(listen_fd, (void *)&listen_addr, &len))
    BL_DIE("listen on %s: %s", opt.addr ? opt.addr : "127.0.0.1", strerror(errno));
  if (home >= 0) {
    if (setns(home, CLONE_NEWNET)) BL_DIE("leave network namespace: %s", strerror(errno));
    close(home);
  }
}

static void tcp_nodelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static int tcp_connect(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) BL_DIE("socket: %s", strerror(errno));
  tcp_nodelay(fd);
  while (connect(fd, (void *)&listen_addr, sizeof listen_addr))
    if (errno != EINTR) BL_DIE("connect: %s", strerror(errno));
  return fd;
}

static int tcp_accept(void) {
  int fd;
  while ((fd = accept(listen_fd, 0, 0)) < 0)
    if (errno != EINTR) BL_DIE("accept: %s", strerror(errno));
  tcp_nodelay(fd);
  return fd;
}

static void writev_all(int fd, struct iovec *iov, int n) {
  while (n > 0) {
    ssize_t w = writev(fd, iov, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      BL_DIE("writev: %s", strerror(errno));
    }
    for (; n > 0 && (size_t)w >= iov->iov_len; iov++, n--) w -= (ssize_t)iov->iov_len;
    if (n > 0) {
      iov->iov_base = (uint8_t *)iov->iov_base + w;
      iov->iov_len -= (size_t)w;
    }
  }
}

static void read_full(int fd, uint8_t *p, size_t n) {
  while (n > 0) {
    ssize_t r = read(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) BL_DIE("read inside a frame: %s", r ? strerror(errno) : "EOF");
    p += r;
    n -= (size_t)r;
  }
}

/* Buffered frame reader: small frames are parsed where they lie in |buf|; frames of
 * RD_DIRECT_MIN and more are assembled in |big| with the rest read straight into it. */
struct rd {
  int fd;
  uint8_t *buf, *big; /* RD_BUF bytes; opt.size bytes */
  size_t pos, end;    /* unread bytes are buf[pos, end) */
};

static void rd_init(struct rd *r, int fd) {
  *r = (struct rd){ .fd = fd, .buf = bl_alloc(RD_BUF) };
  if (opt.size >= RD_DIRECT_MIN) r->big = bl_alloc(opt.size);
}

/* Makes |need| bytes available at buf + pos; 0 on EOF at a frame boundary. */
static int rd_fill(struct rd *r, size_t need) {
  if (r->pos + need > RD_BUF) {
    memmove(r->buf, r->buf + r->pos, r->end - r->pos);
    r->end -= r->pos;
    r->pos = 0;
  }
  while (r->end - r->pos < need) {
    ssize_t n = recv(r->fd, r->buf + r->end, RD_BUF - r->end, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) BL_DIE("recv: %s", strerror(errno));
    if (n == 0 && r->end == r->pos) return 0;
    if (n == 0) BL_DIE("EOF inside a frame");
    r->end += (size_t)n;
  }
  return 1;
}

/* The next whole frame (valid until the next call) and its size; NULL on clean EOF. */
static const uint8_t *rd_frame(struct rd *r, size_t *size) {
  if (!rd_fill(r, BL_HDR)) return NULL;
  size_t n = bl_get32(r->buf + r->pos + BL_OFF_SIZE);
  if (n != opt.size) BL_DIE("frame of %zu bytes, expected %zu", n, opt.size);
  *size = n;
  if (n < RD_DIRECT_MIN) {
    if (!rd_fill(r, n)) BL_DIE("EOF inside a frame");
    r->pos += n;
    return r->buf + r->pos - n;
  }
  size_t have = r->end - r->pos < n ? r->end - r->pos : n;
  memcpy(r->big, r->buf + r->pos, have);
  r->pos += have;
  if (r->pos == r->end) r->pos = r->end = 0;
  read_full(r->fd, r->big + have, n - have);
  return r->big;
}

/* What the receiver counts: the clock starts at the first frame (of any connection), which is
 * not counted, and stops at the last EOF. */
struct rx_count {
  uint64_t msgs, bytes, first_ns, end_ns;
};

static void rx_frame(struct rx_count *c, const uint8_t *f, size_t n) {
  if (f[BL_OFF_COMMAND] != BL_CMD_REQUEST) BL_DIE("unexpected command %u", f[BL_OFF_COMMAND]);
  if (!c->first_ns) {
    c->first_ns = bl_now_ns();
    return;
  }
  c->msgs++;
  c->bytes += n;
}

/* Child, after the run: waits for the sender's counts, prints the row. */
static void rx_report(const struct rx_count *c, uint64_t allocs, int stats_fd) {
  struct bl_stats tx;
  bl_stats_recv(stats_fd, &tx);
  double secs = c->end_ns > c->first_ns ? (double)(c->end_ns - c->first_ns) / 1e9 : 1e-9;
  struct bl_row row = { "ideal", "tcp", opt.label, opt.size, opt.conns, BL_ROW_EMPTY };
  row.msgs_per_s = (double)c->msgs / secs;
  row.mb_per_s = (double)c->bytes / secs / 1e6;
  row.rss_kib = bl_status_kib("VmHWM");
  row.allocs_per_msg = bl_per(allocs, c->msgs) + bl_per(tx.allocs, tx.msgs);
  bl_row_print(&row);
}

/* A sender's frames and the writev batch over them (header and body as separate iovecs, as a
 * bus sends them); |at| is the first iovec not yet fully written. */
struct tx {
  int fd;
  uint8_t *frames;
  size_t nframes;
  struct iovec iov[2 * BL_POOL_FRAMES_MAX];
  int n, at;
  int started; /* some of this batch is written: it must go out whole */
  uint64_t seq, sent;
};

static void tx_init(struct tx *x, int fd) {
  x->fd = fd;
  x->nframes = bl_pool_frames(opt.size, opt.conns);
  x->frames = bl_frames(x->nframes, opt.size);
}

static void tx_fill(struct tx *x) {
  size_t body = opt.size - BL_HDR;
  x->n = x->at = x->started = 0;
  for (size_t i = 0; i < x->nframes; i++) {
    uint8_t *f = x->frames + i * opt.size;
    bl_put64(f + BL_OFF_REQUEST, x->seq++);
    x->iov[x->n++] = (struct iovec){ f, BL_HDR };
    if (body) x->iov[x->n++] = (struct iovec){ f + BL_HDR, body };
  }
}

/* Writes the rest of the batch; 1 when it is all out, 0 when the socket is full. */
static int tx_push(struct tx *x) {
  while (x->at < x->n) {
    ssize_t w = writev(x->fd, x->iov + x->at, x->n - x->at);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && errno == EAGAIN) return 0;
    if (w < 0) BL_DIE("writev: %s", strerror(errno));
    x->started = 1;
    for (; x->at < x->n && (size_t)w >= x->iov[x->at].iov_len; x->at++)
      w -= (ssize_t)x->iov[x->at].iov_len;
    if (x->at < x->n) {
      x->iov[x->at].iov_base = (uint8_t *)x->iov[x->at].iov_base + w;
      x->iov[x->at].iov_len -= (size_t)w;
    }
  }
  x->sent += x->nframes;
  return 1;
}

/* One connection: blocking reads through the buffered reader. */
static void tput_receiver_one(int stats_fd) {
  struct rd r;
  struct rx_count c = { 0 };
  rd_init(&r, tcp_accept());
  uint64_t a0 = bl_allocs();
  const uint8_t *f;
  size_t n;
  while ((f = rd_frame(&r, &n))) rx_frame(&c, f, n);
  c.end_ns = bl_now_ns();
  rx_report(&c, bl_allocs() - a0, stats_fd);
}

/* One connection: one blocking writev per batch. */
static void tput_sender_one(int stats_fd) {
  static struct tx x;
  tx_init(&x, tcp_connect());
  struct bl_stats st = { .allocs = bl_allocs() };
  uint64_t end = bl_now_ns() + (uint64_t)(opt.seconds * 1e9);
  while (bl_now_ns() < end) {
    tx_fill(&x);
    tx_push(&x);
  }
  close(x.fd);
  st.allocs = bl_allocs() - st.allocs;
  st.msgs = x.sent;
  bl_stats_send(stats_fd, &st);
}

/* Non-blocking form of the buffered reader, for the epoll receiver: a frame of RD_DIRECT_MIN
 * or more is assembled in |big| across readiness events (|big_len| != 0 meanwhile). */
struct nrd {
  struct rd r;
  size_t big_have, big_len;
};

/* Parses the whole frames buffered in |n->r|; starts a big frame if one begins there. */
static void nrd_parse(struct nrd *n, struct rx_count *c) {
  struct rd *r = &n->r;
  while (!n->big_len && r->end - r->pos >= BL_HDR) {
    size_t len = bl_get32(r->buf + r->pos + BL_OFF_SIZE);
    if (len != opt.size) BL_DIE("frame of %zu bytes, expected %zu", len, opt.size);
    if (len >= RD_DIRECT_MIN) {
      size_t have = r->end - r->pos < len ? r->end - r->pos : len;
      memcpy(r->big, r->buf + r->pos, have);
      r->pos += have;
      n->big_have = have;
      n->big_len = len;
      if (have == len) {
        rx_frame(c, r->big, len);
        n->big_len = 0;
      }
      continue;
    }
    if (r->end - r->pos < len) break;
    rx_frame(c, r->buf + r->pos, len);
    r->pos += len;
  }
  memmove(r->buf, r->buf + r->pos, r->end - r->pos); /* a partial frame at most */
  r->end -= r->pos;
  r->pos = 0;
}

/* Reads until the socket is empty; 1 at EOF on a frame boundary, 0 when it would block. */
static int nrd_drain(struct nrd *n, struct rx_count *c) {
  struct rd *r = &n->r;
  for (;;) {
    ssize_t got;
    if (n->big_len) got = recv(r->fd, r->big + n->big_have, n->big_len - n->big_have, 0);
    else got = recv(r->fd, r->buf + r->end, RD_BUF - r->end, 0);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0 && errno == EAGAIN) return 0;
    if (got < 0) BL_DIE("recv: %s", strerror(errno));
    if (got == 0 && !n->big_len && r->end == 0) return 1;
    if (got == 0) BL_DIE("EOF inside a frame");
    if (n->big_len) {
      n->big_have += (size_t)got;
      if (n->big_have < n->big_len) continue;
      rx_frame(c, r->big, n->big_len);
      n->big_len = 0;
    } else r->end += (size_t)got;
    nrd_parse(n, c);
  }
}

static void set_nonblock(int fd, int on) {
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK))
    BL_DIE("fcntl: %s", strerror(errno));
}

/* N connections: one thread, one epoll set, as a hand-written event-driven server would. */
static void tput_receiver_epoll(int stats_fd) {
  struct nrd *rs = calloc((size_t)opt.conns, sizeof *rs);
  struct rx_count c = { 0 };
  struct epoll_event evs[64];
  int ep = epoll_create1(0), open = opt.conns;
  for (int i = 0; i < opt.conns; i++) {
    rd_init(&rs[i].r, tcp_accept());
    set_nonblock(rs[i].r.fd, 1);
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &rs[i] };
    if (epoll_ctl(ep, EPOLL_CTL_ADD, rs[i].r.fd, &ev)) BL_DIE("epoll_ctl: %s", strerror(errno));
  }
  uint64_t a0 = bl_allocs();
  while (open > 0) {
    int k = epoll_wait(ep, evs, 64, -1);
    if (k < 0 && errno != EINTR) BL_DIE("epoll_wait: %s", strerror(errno));
    for (int i = 0; i < k; i++) {
      struct nrd *n = evs[i].data.ptr;
      if (!nrd_drain(n, &c)) continue;
      close(n->r.fd); /* also leaves the epoll set */
      open--;
    }
  }
  c.end_ns = bl_now_ns();
  rx_report(&c, bl_allocs() - a0, stats_fd);
}

/* N connections: one thread writes a batch to each socket that has room, until the deadline;
 * then each finishes its batch with blocking writes, so no frame is cut, and closes. */
static void tput_sender_epoll(int stats_fd) {
  struct tx *xs = calloc((size_t)opt.conns, sizeof *xs);
  struct epoll_event evs[64];
  int ep = epoll_create1(0);
  for (int i = 0; i < opt.conns; i++) {
    tx_init(&xs[i], tcp_connect());
    set_nonblock(xs[i].fd, 1);
    tx_fill(&xs[i]);
    struct epoll_event ev = { .events = EPOLLOUT, .data.ptr = &xs[i] };
    if (epoll_ctl(ep, EPOLL_CTL_ADD, xs[i].fd, &ev)) BL_DIE("epoll_ctl: %s", strerror(errno));
  }
  struct bl_stats st = { .allocs = bl_allocs() };
  uint64_t end = bl_now_ns() + (uint64_t)(opt.seconds * 1e9);
  while (bl_now_ns() < end) {
    int k = epoll_wait(ep, evs, 64, 100);
    if (k < 0 && errno != EINTR) BL_DIE("epoll_wait: %s", strerror(errno));
    for (int i = 0; i < k; i++) { /* one batch per readiness: every connection gets its turn */
      struct tx *x = evs[i].data.ptr;
      if (tx_push(x)) tx_fill(x);
    }
  }
  for (int i = 0; i < opt.conns; i++) {
    set_nonblock(xs[i].fd, 0);
    if (xs[i].started) tx_push(&xs[i]); /* a batch already started goes out whole */
    close(xs[i].fd);
  }
  st.allocs = bl_allocs() - st.allocs;
  for (int i = 0; i < opt.conns; i++) st.msgs += xs[i].sent;
  bl_stats_send(stats_fd, &st);
}

/* Child: echoes every frame; counts allocations after the warm-up. */
static void lat_server(int stats_fd) {
  struct rd r;
  rd_init(&r, tcp_accept());
  struct bl_stats st = { 0 };
  uint64_t n = 0, a0 = bl_allocs();
  const uint8_t *f;
  size_t len;
  while ((f = rd_frame(&r, &len))) {
    struct iovec v = { (void *)f, len };
    writev_all(r.fd, &v, 1);
    if (++n == BL_WARMUP) a0 = bl_allocs();
  }
  st.allocs = bl_allocs() - a0;
  st.msgs = n > BL_WARMUP ? n - BL_WARMUP : 0;
  st.hwm_kib = bl_status_kib("VmHWM");
  bl_stats_send(stats_fd, &st);
}

static struct hist lat_hist;

static void lat_client(int stats_fd) {
  int fd = tcp_connect();
  uint8_t *frame = bl_frames(1, opt.size);
  size_t body = opt.size - BL_HDR, len;
  struct rd r;
  rd_init(&r, fd);
  hist_init(&lat_hist);
  uint64_t a0 = 0;
  for (long i = -BL_WARMUP; i < opt.iters; i++) {
    struct iovec v[2] = { { frame, BL_HDR }, { frame + BL_HDR, body } };
    if (i == 0) a0 = bl_allocs();
    uint64_t t0 = bl_now_ns();
    writev_all(fd, v, body ? 2 : 1);
    if (!rd_frame(&r, &len)) BL_DIE("server closed during the run");
    if (i >= 0) hist_record(&lat_hist, bl_now_ns() - t0);
  }
  uint64_t allocs = bl_allocs() - a0;
  shutdown(fd, SHUT_WR); /* the server sees EOF and reports */
  bl_lat_row("ideal", &opt, &lat_hist, allocs, stats_fd);
}

/* Child: accepts every connection into one epoll set (what an event-driven server keeps per
 * idle connection: a descriptor and an epoll entry). RSS is read after the first connection
 * and after the last; their difference over the rest is the cost of one more connection. */
static void idle_server(int ready_fd) {
  int ep = epoll_create1(0);
  double rss0 = 0;
  for (int i = 0; i < opt.conns; i++) {
    int fd = accept(listen_fd, 0, 0);
    if (fd < 0) BL_DIE("accept #%d: %s", i, strerror(errno));
    struct epoll_event ev = { .events = EPOLLIN, .data.fd = fd };
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev)) BL_DIE("epoll_ctl: %s", strerror(errno));
    if (i == 0) {
      rss0 = bl_status_kib("VmRSS");
      bl_byte_send(ready_fd);
    }
  }
  struct bl_row row = { "ideal", "tcp", opt.label, 0, opt.conns, BL_ROW_EMPTY };
  row.rss_kib = (bl_status_kib("VmRSS") - rss0) / (opt.conns - 1);
  if (row.rss_kib < 0) row.rss_kib = 0;
  bl_row_print(&row);
}

static void idle_client(int ready_fd) {
  int *fds = calloc((size_t)opt.conns, sizeof *fds);
  fds[0] = tcp_connect();
  bl_byte_recv(ready_fd);
  for (int i = 1; i < opt.conns; i++) fds[i] = tcp_connect();
}

int main(int argc, char **argv) {
  bl_parse(argc, argv, &opt);
  int idle = !strcmp(opt.mode, "idle"), lat = !strcmp(opt.mode, "lat");
  if (idle) bl_idle_limit(&opt, 1);
  tcp_listen(idle ? 4096 : opt.conns);
  int up[2], down[2]; /* child -> parent, parent -> child */
  pid_t pid = bl_fork(&opt, up, down);
  if (pid == 0) {
    if (idle) idle_server(up[1]);
    else if (lat) lat_server(up[1]);
    else if (opt.conns == 1) tput_receiver_one(down[0]);
    else tput_receiver_epoll(down[0]);
    _exit(0);
  }
  close(listen_fd);
  if (idle) idle_client(up[0]);
  else if (lat) lat_client(up[0]);
  else if (opt.conns == 1) tput_sender_one(down[1]);
  else tput_sender_epoll(down[1]);
  return bl_wait_child(pid);
}
