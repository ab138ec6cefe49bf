/* io loop tests: every case runs on each backend (epoll, io_uring, io_uring without a provided
 * buffer ring); io_uring cases are skipped where the kernel or sandbox refuses io_uring. Also
 * proves backend selection: VSRBUS_IO, and the epoll fallback when the io_uring probe fails. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "io/io.h"
#include "util/alloc.h"
#include "vsrbus/error.h"
#include "vsrbus/vsrbus.h"

/* ---- fixtures ---------------------------------------------------------------------------- */

struct t_backend {
  const char *label;
  enum vsri_io_backend_kind kind;
  bool no_bufring; /* io_uring with RECV_POOLED on poll + recv (kernels without buffer rings) */
  bool poll_first; /* io_uring taking the readiness path of old kernels for every operation */
};

static struct t_backend t_epoll = {"epoll", VSRI_IO_EPOLL, false, false};
static struct t_backend t_uring = {"io_uring", VSRI_IO_URING, false, false};
static struct t_backend t_uring_nbr = {"io_uring/no-bufring", VSRI_IO_URING, true, false};
static struct t_backend t_uring_pf = {"io_uring/poll-first", VSRI_IO_URING, false, true};

/* Hang guard for loops that wait on the kernel: a correct loop finishes far sooner. */
#define T_GUARD_NS (60ull * 1000000000ull)
#define T_TURN_NS (50 * 1000000)

static uint64_t t_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Creates a loop on the backend in |state|; skips the test when it cannot run here. */
static uint32_t t_big_min_ready; /* non-zero: vsri_io_options.pooled_big_min_ready */

static struct vsri_io *t_io_opts(void **state, uint32_t buf_count, uint32_t buf_size,
                                 uint32_t entries) {
  const struct t_backend *b = *state;
  struct vsri_io_options o;
  vsri_io_options_default(&o);
  o.backend = b->kind;
  if (buf_count) o.pooled_buf_count = buf_count;
  if (buf_size) o.pooled_buf_size = buf_size;
  if (entries) o.entries = entries;
  if (t_big_min_ready) o.pooled_big_min_ready = t_big_min_ready;
  if (b->no_bufring) setenv("VSRBUS_IO_TEST_URING_NO_BUFRING", "1", 1);
  if (b->poll_first) setenv("VSRBUS_IO_TEST_URING_POLL_FIRST", "1", 1);
  struct vsri_io *io = NULL;
  int err = vsri_io_new(&io, &o);
  unsetenv("VSRBUS_IO_TEST_URING_NO_BUFRING");
  unsetenv("VSRBUS_IO_TEST_URING_POLL_FIRST");
  if (err == VSR_EUNSUPPORTED && b->kind == VSRI_IO_URING) {
    print_message("skip %s: io_uring unavailable here\n", b->label);
    skip();
  }
  assert_int_equal(err, 0);
  assert_string_equal(vsri_io_backend_name(io), b->kind == VSRI_IO_URING ? "io_uring" : "epoll");
  return io;
}

static struct vsri_io *t_io(void **state) { return t_io_opts(state, 0, 0, 0); }

/* Runs turns until *|count| reaches |want| (bounded by the hang guard). */
static void t_run_atleast(struct vsri_io *io, const int *count, int want) {
  uint64_t end = t_now() + T_GUARD_NS;
  while (*count < want && t_now() < end) assert_true(vsri_io_run(io, T_TURN_NS) >= 0);
  assert_true(*count >= want);
}

/* Same, and no more than |want|: callback counts must be exact. */
static void t_run_until(struct vsri_io *io, const int *count, int want) {
  t_run_atleast(io, count, want);
  assert_int_equal(*count, want);
}

/* Runs |turns| short turns: lets anything that should not happen show up. */
static void t_run_idle(struct vsri_io *io, int turns) {
  for (int i = 0; i < turns; i++) assert_true(vsri_io_run(io, 1000000) >= 0);
}

static void t_nonblock(int fd) {
  int fl = fcntl(fd, F_GETFL);
  assert_true(fl >= 0);
  assert_int_equal(fcntl(fd, F_SETFL, fl | O_NONBLOCK), 0);
}

static int t_listener(struct sockaddr_in *addr) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  assert_true(fd >= 0);
  memset(addr, 0, sizeof *addr);
  addr->sin_family = AF_INET;
  addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(bind(fd, (struct sockaddr *)addr, sizeof *addr), 0);
  assert_int_equal(listen(fd, 64), 0);
  socklen_t len = sizeof *addr;
  assert_int_equal(getsockname(fd, (struct sockaddr *)addr, &len), 0);
  return fd;
}

/* A connected non-blocking TCP pair over 127.0.0.1, set up with plain syscalls. */
static void t_tcp_pair(int *a, int *b) {
  struct sockaddr_in addr;
  int l = t_listener(&addr);
  int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  assert_true(c >= 0);
  assert_int_equal(connect(c, (struct sockaddr *)&addr, sizeof addr), 0);
  int s = -1;
  for (int i = 0; i < 1000 && s < 0; i++) {
    s = accept4(l, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (s < 0) usleep(1000);
  }
  assert_true(s >= 0);
  close(l);
  t_nonblock(c);
  int one = 1;
  setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  *a = c;
  *b = s;
}

static uint8_t t_pattern(size_t i) { return (uint8_t)(i * 131u + (i >> 13)); }

/* A counting callback: |ctx| is a struct t_hits. */
struct t_hits {
  int count;
  int32_t last;
};

static void t_hit_cb(struct vsri_io *io, struct vsri_completion *c, int32_t res) {
  (void)io;
  struct t_hits *h = c->ctx;
  h->count++;
  h->last = res;
}

/* ---- timers and the deferred queue --------------------------------------------------------- */

static void test_timeout_fires_once(void **state) {
  struct vsri_io *io = t_io(state);
  struct vsri_completion c;
  struct t_hits h = {0, 99};
  vsri_io_timeout(io, &c, 1000000, t_hit_cb, &h);
  t_run_until(io, &h.count, 1);
  assert_int_equal(h.last, 0);
  t_run_idle(io, 5);
  assert_int_equal(h.count, 1);
  vsri_io_del(io);
}

static void test_cancel_pending_timeout_gives_one_ecanceled(void **state) {
  struct vsri_io *io = t_io(state);
  struct vsri_completion c;
  struct t_hits h = {0, 99};
  vsri_io_timeout(io, &c, 3600ull * 1000000000ull, t_hit_cb, &h);
  t_run_idle(io, 1);
  vsri_io_cancel(io, &c);
  vsri_io_cancel(io, &c); /* a second cancel is a no-op */
  assert_int_equal(h.count, 0); /* never from inside cancel */
  t_run_until(io, &h.count, 1);
  assert_int_equal(h.last, -ECANCELED);
  t_run_idle(io, 3);
  assert_int_equal(h.count, 1);
  vsri_io_del(io);
}

struct t_defer {
  struct vsri_io *io;
  int fd;
  uint64_t enters_at_run;
  int runs;
  struct vsri_deferred again;
  int again_runs;
};

static void t_defer_again(void *ctx) { ((struct t_defer *)ctx)->again_runs++; }

static void t_defer_write(void *ctx) {
  struct t_defer *d = ctx;
  struct vsri_io_stats st;
  vsri_io_stats(d->io, &st);
  d->enters_at_run = st.enters;
  d->runs++;
  assert_int_equal(write(d->fd, "x", 1), 1);
  vsri_io_defer(d->io, &d->again); /* queued from a deferred function: same pass */
}

/* The deferred queue runs before the loop waits: a deferred write wakes a pending recv within
 * the same vsri_io_run call, whose wait would otherwise last for the whole timeout. */
static void test_deferred_runs_before_wait(void **state) {
  struct vsri_io *io = t_io(state);
  int a, b;
  t_tcp_pair(&a, &b);
  char buf[8];
  struct vsri_completion rc;
  struct t_hits h = {0, 99};
  vsri_io_recv(io, &rc, b, buf, sizeof buf, t_hit_cb, &h);
  t_run_idle(io, 1);
  struct t_defer d = {.io = io, .fd = a};
  d.again.fn = t_defer_again;
  d.again.ctx = &d;
  struct vsri_deferred dw = {.fn = t_defer_write, .ctx = &d};
  vsri_io_defer(io, &dw);
  vsri_io_defer(io, &dw); /* queuing twice is a no-op */
  struct vsri_io_stats before;
  vsri_io_stats(io, &before);
  uint64_t end = t_now() + T_GUARD_NS;
  while (h.count == 0 && t_now() < end) assert_true(vsri_io_run(io, 10ll * 1000000000) >= 0);
  assert_int_equal(h.count, 1);
  assert_int_equal(h.last, 1);
  assert_int_equal(d.runs, 1);
  assert_int_equal(d.again_runs, 1);
  assert_true(d.enters_at_run == before.enters); /* before the turn entered the kernel */
  /* undefer removes a queued item. */
  vsri_io_defer(io, &dw);
  vsri_io_undefer(io, &dw);
  t_run_idle(io, 2);
  assert_int_equal(d.runs, 1);
  close(a);
  close(b);
  vsri_io_del(io);
}

struct t_order {
  struct vsri_deferred d[5];
  int ran[16];
  int nran;
};

/* |ctx| is &o->d[i]: records i. */
static struct t_order t_order_state;

static void t_order_run(void *ctx) {
  struct t_order *o = &t_order_state;
  int i = (int)((struct vsri_deferred *)ctx - o->d);
  assert_true(o->nran < 16);
  o->ran[o->nran++] = i;
}

/* Items leave the deferred queue from the head, the middle or the tail without disturbing the
 * order of the others, and a withdrawn item can be queued again (it then runs last). */
static void test_undefer_anywhere_keeps_order(void **state) {
  struct vsri_io *io = t_io(state);
  struct t_order *o = &t_order_state;
  memset(o, 0, sizeof *o);
  for (int i = 0; i < 5; i++) {
    o->d[i].fn = t_order_run;
    o->d[i].ctx = &o->d[i];
    vsri_io_defer(io, &o->d[i]);
  }
  vsri_io_undefer(io, &o->d[2]); /* middle */
  vsri_io_undefer(io, &o->d[4]); /* tail */
  vsri_io_undefer(io, &o->d[0]); /* head */
  vsri_io_undefer(io, &o->d[0]); /* not queued: a no-op */
  vsri_io_defer(io, &o->d[2]);
  t_run_idle(io, 2);
  assert_int_equal(o->nran, 3);
  assert_int_equal(o->ran[0], 1);
  assert_int_equal(o->ran[1], 3);
  assert_int_equal(o->ran[2], 2);
  vsri_io_del(io);
}

/* Cancelling the middle one of three submissions gives it one -ECANCELED; the other two are
 * untouched and complete with their data (epoll: the middle of its not-yet-tried list). */
static void t_cancel_middle(void **state, bool let_kernel_see_it) {
  struct vsri_io *io = t_io(state);
  int a[3], b[3];
  char buf[3][8];
  struct vsri_completion c[3];
  struct t_hits h[3] = {{0, 99}, {0, 99}, {0, 99}};
  for (int i = 0; i < 3; i++) t_tcp_pair(&a[i], &b[i]);
  for (int i = 0; i < 3; i++) vsri_io_recv(io, &c[i], b[i], buf[i], 8, t_hit_cb, &h[i]);
  if (let_kernel_see_it) t_run_idle(io, 2);
  vsri_io_cancel(io, &c[1]);
  t_run_until(io, &h[1].count, 1);
  assert_int_equal(h[1].last, -ECANCELED);
  assert_int_equal(h[0].count + h[2].count, 0);
  /* Data for all three: the two others take theirs, the cancelled one stays quiet. */
  for (int i = 0; i < 3; i++) assert_int_equal(write(a[i], "abc", 3), 3);
  t_run_until(io, &h[0].count, 1);
  t_run_until(io, &h[2].count, 1);
  assert_int_equal(h[0].last, 3);
  assert_int_equal(h[2].last, 3);
  t_run_idle(io, 2);
  for (int i = 0; i < 3; i++) assert_int_equal(h[i].count, 1);
  for (int i = 0; i < 3; i++) {
    close(a[i]);
    close(b[i]);
  }
  vsri_io_del(io);
}

static void test_cancel_middle_submission_before_first_turn(void **state) {
  t_cancel_middle(state, false);
}

static void test_cancel_middle_submission_pending(void **state) { t_cancel_middle(state, true); }


/* A caller that only ever polls with timeout 0 (a busy sender) still sees its completions. */
static void test_polling_with_zero_timeout_sees_completions(void **state) {
  struct vsri_io *io = t_io(state);
  int a, b;
  t_tcp_pair(&a, &b);
  char buf[8];
  struct vsri_completion c;
  struct t_hits h = {0, 99};
  for (int round = 0; round < 50; round++) {
    vsri_io_recv(io, &c, b, buf, sizeof buf, t_hit_cb, &h);
    for (int i = 0; i < 100; i++) assert_true(vsri_io_run(io, 0) >= 0); /* armed, no data */
    assert_int_equal(h.count, round);
    assert_int_equal(write(a, "ping", 4), 4);
    uint64_t end = t_now() + T_GUARD_NS;
    while (h.count == round && t_now() < end) assert_true(vsri_io_run(io, 0) >= 0);
    assert_int_equal(h.count, round + 1);
    assert_int_equal(h.last, 4);
  }
  close(a);
  close(b);
  vsri_io_del(io);
}

/* ---- cancel ---------------------------------------------------------------------------------- */

static void t_cancel_recv(void **state, bool pooled, bool let_kernel_see_it) {
  struct vsri_io *io = t_io(state);
  int a, b;
  t_tcp_pair(&a, &b);
  char buf[64];
  struct vsri_completion c;
  struct t_hits h = {0, 99};
  if (pooled) vsri_io_recv_pooled(io, &c, b, t_hit_cb, &h);
  else vsri_io_recv(io, &c, b, buf, sizeof buf, t_hit_cb, &h);
  if (let_kernel_see_it) t_run_idle(io, 2);
  assert_int_equal(h.count, 0);
  vsri_io_cancel(io, &c);
  assert_int_equal(h.count, 0);
  t_run_until(io, &h.count, 1);
  assert_int_equal(h.last, -ECANCELED);
  assert_false(c.pending);
  /* Nothing more arrives for it, even when data shows up now. */
  assert_int_equal(write(a, "hello", 5), 5);
  t_run_idle(io, 3);
  assert_int_equal(h.count, 1);
  /* The fd still works: the data is there for the next receive. */
  vsri_io_recv(io, &c, b, buf, sizeof buf, t_hit_cb, &h);
  t_run_until(io, &h.count, 2);
  assert_int_equal(h.last, 5);
  assert_memory_equal(buf, "hello", 5);
  close(a);
  close(b);
  vsri_io_del(io);
}

static void test_cancel_pending_recv_gives_one_ecanceled(void **state) {
  t_cancel_recv(state, false, true);
}

static void test_cancel_recv_before_first_turn(void **state) { t_cancel_recv(state, false, false); }

static void test_cancel_pending_pooled_recv(void **state) { t_cancel_recv(state, true, true); }

static void test_cancel_pending_accept(void **state) {
  struct vsri_io *io = t_io(state);
  struct sockaddr_in addr;
  int l = t_listener(&addr);
  struct vsri_completion c;
  struct t_hits h = {0, 99};
  vsri_io_accept(io, &c, l, NULL, NULL, t_hit_cb, &h);
  t_run_idle(io, 2);
  vsri_io_cancel(io, &c);
  t_run_until(io, &h.count, 1);
  assert_int_equal(h.last, -ECANCELED);
  close(l);
  vsri_io_del(io);
}

struct t_race {
  struct vsri_completion a, b;
  int a_count, b_count;
  int32_t b_res;
};

static void t_race_b(struct vsri_io *io, struct vsri_completion *c, int32_t res) {
  (void)io;
  struct t_race *r = c->ctx;
  r->b_count++;
  r->b_res = res;
}

static void t_race_a(struct vsri_io *io, struct vsri_completion *c, int32_t res) {
  struct t_race *r = c->ctx;
  assert_true(res > 0);
  r->a_count++;
  vsri_io_cancel(io, &r->b); /* b may already be finished: its real result then stands */
}

/* Cancel that races a finished operation still gives exactly one callback. */
static void test_cancel_racing_completion_gives_one_callback(void **state) {
  struct vsri_io *io = t_io(state);
  int a1, b1, a2, b2;
  t_tcp_pair(&a1, &b1);
  t_tcp_pair(&a2, &b2);
  assert_int_equal(write(a1, "1", 1), 1);
  assert_int_equal(write(a2, "22", 2), 2);
  usleep(1000);
  char buf1[4], buf2[4];
  struct t_race r = {0};
  vsri_io_recv(io, &r.a, b1, buf1, sizeof buf1, t_race_a, &r);
  vsri_io_recv(io, &r.b, b2, buf2, sizeof buf2, t_race_b, &r);
  t_run_until(io, &r.b_count, 1);
  assert_int_equal(r.a_count, 1);
  assert_true(r.b_res == 2 || r.b_res == -ECANCELED);
  t_run_idle(io, 3);
  assert_int_equal(r.b_count, 1);
  close(a1);
  close(b1);
  close(a2);
  close(b2);
  vsri_io_del(io);
}

/* ---- TCP: accept, connect, sendv, recv ------------------------------------------------------ */

#define T_BULK (10u << 20)

struct t_bulk {
  struct vsri_io *io;
  uint8_t *src;
  uint8_t rbuf[65536];
  struct iovec iov[3];
  struct vsri_completion wc, rc;
  int wfd, rfd;
  size_t sent, received;
  int partial_writes, writes, reads, done;
  bool bad;
};

static void t_bulk_write(struct t_bulk *t);

static void t_bulk_wrote(struct vsri_io *io, struct vsri_completion *c, int32_t res) {
  (void)io;
  struct t_bulk *t = c->ctx;
  assert_true(res > 0);
  size_t asked = t->iov[0].iov_len + t->iov[1].iov_len + t->iov[2].iov_len;
  if ((size_t)res < asked) t->partial_writes++;
  t->sent += (size_t)res;
  t->writes++;
  if (t->sent < T_BULK) t_bulk_write(t);
  else t->done++;
}

/* Writes what is left as three iovecs (odd sizes), resuming after partial writes. */
static void t_bulk_write(struct t_bulk *t) {
  size_t left = T_BULK - t->sent;
  size_t chunk = left < (1u << 20) ? left : (1u << 20);
  size_t p0 = chunk < 1000 ? chunk : 1000;
  size_t p1 = chunk - p0 < 70001 ? chunk - p0 : 70001;
  t->iov[0] = (struct iovec){t->src + t->sent, p0};
  t->iov[1] = (struct iovec){t->src + t->sent + p0, p1};
  t->iov[2] = (struct iovec){t->src + t->sent + p0 + p1, chunk - p0 - p1};
  vsri_io_sendv(t->io, &t->wc, t->wfd, t->iov, 3, t_bulk_wrote, t);
}

static void t_bulk_read(struct vsri_io *io, struct vsri_completion *c, int32_t res) {
  struct t_bulk *t = c->ctx;
  assert_true(res > 0);
  if (memcmp(t->rbuf, t->src + t->received, (size_t)res) != 0) t->bad = true;
  t->received += (size_t)res;
  t->reads++;
  if (t->received < T_BULK) vsri_io_recv(io, c, t->rfd, t->rbuf, sizeof t->rbuf, t_bulk_read, t);
  else t->done++;
}

static void test_tcp_accept_connect_sendv_recv_10mib(void **state) {
  struct vsri_io *io = t_io(state);
  struct sockaddr_in addr;
  int l = t_listener(&addr);
  int cfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  assert_true(cfd >= 0);
  struct sockaddr_storage peer;
  socklen_t peer_len = sizeof peer;
  struct vsri_completion ac, cc;
  struct t_hits ah = {0, 99}, ch = {0, 99};
  vsri_io_accept(io, &ac, l, &peer, &peer_len, t_hit_cb, &ah);
  vsri_io_connect(io, &cc, cfd, (struct sockaddr *)&addr, sizeof addr, t_hit_cb, &ch);
  t_run_until(io, &ah.count, 1);
  t_run_until(io, &ch.count, 1);
  assert_true(ah.last >= 0);
  assert_int_equal(ch.last, 0);
  int sfd = ah.last;
  assert_true(fcntl(sfd, F_GETFL) & O_NONBLOCK); /* accepted fds are non-blocking */
  assert_int_equal(peer.ss_family, AF_INET);
  struct sockaddr_in local;
  socklen_t local_len = sizeof local;
  assert_int_equal(getsockname(cfd, (struct sockaddr *)&local, &local_len), 0);
  assert_int_equal(((struct sockaddr_in *)&peer)->sin_port, local.sin_port);

  struct t_bulk *t = calloc(1, sizeof *t);
  t->io = io;
  t->src = malloc(T_BULK);
  for (size_t i = 0; i < T_BULK; i++) t->src[i] = t_pattern(i);
  t->wfd = cfd;
  t->rfd = sfd;
  t_bulk_write(t);
  vsri_io_recv(io, &t->rc, sfd, t->rbuf, sizeof t->rbuf, t_bulk_read, t);
  t_run_atleast(io, &t->done, 2);
  assert_false(t->bad);
  assert_int_equal(t->received, T_BULK);
  print_message("%s: 10 MiB in %d sendv (%d partial), %d recv\n",
                ((struct t_backend *)*state)->label, t->writes, t->partial_writes, t->reads);
  /* EOF: the reader sees 0 once the writer closes. */
  struct vsri_completion xc;
  struct t_hits xh = {0, 99};
  vsri_io_close(io, &xc, cfd, t_hit_cb, &xh);
  t_run_until(io, &xh.count, 1);
  assert_int_equal(xh.last, 0);
  vsri_io_recv(io, &t->rc, sfd, t->rbuf, sizeof t->rbuf, t_hit_cb, &xh);
  t_run_until(io, &xh.count, 2);
  assert_int_equal(xh.last, 0);
  free(t->src);
  free(t);
  close(sfd);
  close(l);
  vsri_io_del(io);
}

static void test_connect_refused_reports_econnrefused(void **state) {
  struct vsri_io *io = t_io(state);
  struct sockaddr_in addr;
  int l = t_listener(&addr);
  close(l); /* nobody listens on that port any more */
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  struct vsri_completion c;
  struct t_hits h = {0, 99};
  vsri_io_connect(io, &c, fd, (struct sockaddr *)&addr, sizeof addr, t_hit_cb, &h);
  t_run_until(io, &h.count, 1);
  assert_int_equal(h.last, -ECONNREFUSED);
  close(fd);
  vsri_io_del(io);
}

/* Writing to a reset connection fails with an error, and the process gets no SIGPIPE. */
static void test_sendv_to_closed_peer_fails_without_sigpipe(void **state) {
  struct vsri_io *io = t_io(state);
  int a, b;
  t_tcp_pair(&a, &b);
  struct linger lg = {1, 0};
  setsockopt(b, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  close(b); /* RST */
  usleep(2000);
  static uint8_t data[4096];
  struct iovec iov = {data, sizeof data};
  struct vsri_completion c;
  struct t_hits h = {0, 99};
  int32_t res = 0;
  for (int i = 0; i < 100 && res >= 0; i++) {
    vsri_io_sendv(io, &c, a, &iov, 1, t_hit_cb, &h);
    t_run_until(io, &h.count, i + 1);
    res = h.last;
  }
  assert_true(res == -EPIPE || res == -ECONNRESET);
  close(a);
  vsri_io_del(io);
}

/* SENDV is a socket operation on every backend (sendmsg with MSG_NOSIGNAL underneath). */
static void test_sendv_on_a_pipe_reports_enotsock(void **state) {
  struct vsri_io *io = t_io(state);
  int p[2];
  assert_int_equal(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
  struct iovec iov = {"x", 1};
  struct vsri_completion c;
  struct t_hits h = {0, 99};
  vsri_io_sendv(io, &c, p[1], &iov, 1, t_hit_cb, &h);
  t_run_until(io, &h.count, 1);
  assert_int_equal(h.last, -ENOTSOCK);
  close(p[0]);
  close(p[1]);
  vsri_io_del(io);
}

/* ---- pooled receives ------------------------------------------------------------------------ */

struct t_pool {
  struct vsri_io *io;
  struct vsri_completion rc;
  int fd;
  size_t expected, received;
  int callbacks;
  bool bad;
  bool resubmit;
  int done;
};

static void t_pool_read(struct vsri_io *io, struct vsri_completion *c, int32_t res) {
  struct t_pool *p = c->ctx;
  assert_true(res > 0);
  assert_non_null(c->u.recv.buf);
  const uint8_t *buf = c->u.recv.buf;
  for (int32_t i = 0; i < res; i++) {
    if (buf[i] != t_pattern(p->received + (size_t)i)) p->bad = true;
  }
  p->received += (size_t)res;
  p->callbacks++;
  if (p->received < p->expected) vsri_io_recv_pooled(io, c, p->fd, t_pool_read, p);
  else p->done = 1;
}

/* More pooled receives than buffers: each buffer must come back after its callback. */
static void test_recv_pooled_buffers_return(void **state) {
  enum { BUFS = 4, ROUNDS = 200, CHUNK = 1500 };
  struct vsri_io *io = t_io_opts(state, BUFS, 4096, 0);
  int a, b;
  t_tcp_pair(&a, &b);
  struct t_pool p = {.io = io, .fd = b, .expected = (size_t)ROUNDS * CHUNK};
  vsri_io_recv_pooled(io, &p.rc, b, t_pool_read, &p);
  uint8_t chunk[CHUNK];
  for (int r = 0; r < ROUNDS; r++) {
    for (size_t i = 0; i < CHUNK; i++) chunk[i] = t_pattern((size_t)r * CHUNK + i);
    assert_int_equal(write(a, chunk, CHUNK), CHUNK);
    /* Wait for this chunk so every round is at least one receive. */
    uint64_t end = t_now() + T_GUARD_NS;
    while (p.received < (size_t)(r + 1) * CHUNK && t_now() < end) {
      assert_true(vsri_io_run(io, T_TURN_NS) >= 0);
    }
  }
  t_run_atleast(io, &p.done, 1);
  assert_false(p.bad);
  assert_true(p.callbacks >= ROUNDS);
  assert_true(p.callbacks > 4 * BUFS);
  close(a);
  close(b);
  vsri_io_del(io);
}

/* Many connections finish pooled receives in one batch, more than there are buffers: the
 * io_uring kernel answers the extra ones -ENOBUFS, which must never reach the caller. */
static void test_recv_pooled_survives_buffer_exhaustion(void **state) {
  enum { BUFS = 2, CONNS = 16, ROUNDS = 20, CHUNK = 3000 };
  struct vsri_io *io = t_io_opts(state, BUFS, 4096, 0);
  int a[CONNS], b[CONNS];
  struct t_pool p[CONNS];
  for (int i = 0; i < CONNS; i++) {
    t_tcp_pair(&a[i], &b[i]);
    p[i] = (struct t_pool){.io = io, .fd = b[i], .expected = (size_t)ROUNDS * CHUNK};
    vsri_io_recv_pooled(io, &p[i].rc, b[i], t_pool_read, &p[i]);
  }
  t_run_idle(io, 2);
  uint8_t chunk[CHUNK];
  for (int r = 0; r < ROUNDS; r++) {
    for (size_t k = 0; k < CHUNK; k++) chunk[k] = t_pattern((size_t)r * CHUNK + k);
    for (int i = 0; i < CONNS; i++) assert_int_equal(write(a[i], chunk, CHUNK), CHUNK);
  }
  int done = 0;
  uint64_t end = t_now() + T_GUARD_NS;
  while (done < CONNS && t_now() < end) {
    assert_true(vsri_io_run(io, T_TURN_NS) >= 0);
    done = 0;
    for (int i = 0; i < CONNS; i++) done += p[i].done;
  }
  assert_int_equal(done, CONNS);
  for (int i = 0; i < CONNS; i++) {
    assert_false(p[i].bad);
    close(a[i]);
    close(b[i]);
  }
  vsri_io_del(io);
}

/* ---- UDP ------------------------------------------------------------------------------------ */

static int t_udp(struct sockaddr_in *addr) {
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  assert_true(fd >= 0);
  memset(addr, 0, sizeof *addr);
  addr->sin_family = AF_INET;
  addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(bind(fd, (struct sockaddr *)addr, sizeof *addr), 0);
  socklen_t len = sizeof *addr;
  assert_int_equal(getsockname(fd, (struct sockaddr *)addr, &len), 0);
  return fd;
}

static void test_udp_sendmsg_recvmsg_datagrams(void **state) {
  enum { N = 200, PAYLOAD = 1200 };
  struct vsri_io *io = t_io(state);
  struct sockaddr_in sa, ra;
  int s = t_udp(&sa);
  int r = t_udp(&ra);
  uint8_t out[PAYLOAD], in[PAYLOAD + 64];
  struct t_hits sh = {0, 99}, rh = {0, 99};
  for (int i = 0; i < N; i++) {
    uint32_t seq = (uint32_t)i;
    for (size_t k = 0; k < PAYLOAD; k++) out[k] = t_pattern(k + (size_t)i);
    struct iovec siov[2] = {{&seq, sizeof seq}, {out, PAYLOAD - (size_t)(i % 7)}};
    struct msghdr sm = {.msg_name = &ra, .msg_namelen = sizeof ra, .msg_iov = siov,
                        .msg_iovlen = 2};
    struct sockaddr_in from;
    struct iovec riov = {in, sizeof in};
    struct msghdr rm = {.msg_name = &from, .msg_namelen = sizeof from, .msg_iov = &riov,
                        .msg_iovlen = 1};
    struct vsri_completion sc, rc;
    vsri_io_recvmsg(io, &rc, r, &rm, 0, t_hit_cb, &rh); /* waits for the datagram */
    vsri_io_sendmsg(io, &sc, s, &sm, 0, t_hit_cb, &sh);
    t_run_until(io, &sh.count, i + 1);
    t_run_until(io, &rh.count, i + 1);
    int32_t len = (int32_t)(sizeof seq + PAYLOAD - (size_t)(i % 7));
    assert_int_equal(sh.last, len);
    assert_int_equal(rh.last, len);
    uint32_t got;
    memcpy(&got, in, sizeof got);
    assert_int_equal(got, (uint32_t)i);
    assert_memory_equal(in + sizeof seq, out, (size_t)len - sizeof seq);
    assert_int_equal(rm.msg_namelen, sizeof from);
    assert_int_equal(from.sin_port, sa.sin_port);
  }
  close(s);
  close(r);
  vsri_io_del(io);
}

/* ---- close ---------------------------------------------------------------------------------- */

static void test_close_closes_and_reports_ebadf(void **state) {
  struct vsri_io *io = t_io(state);
  int a, b;
  t_tcp_pair(&a, &b);
  struct vsri_completion c;
  struct t_hits h = {0, 99};
  vsri_io_close(io, &c, a, t_hit_cb, &h);
  t_run_until(io, &h.count, 1);
  assert_int_equal(h.last, 0);
  assert_int_equal(fcntl(a, F_GETFD), -1);
  assert_int_equal(errno, EBADF);
  /* The peer sees EOF. */
  char buf[4];
  vsri_io_recv(io, &c, b, buf, sizeof buf, t_hit_cb, &h);
  t_run_until(io, &h.count, 2);
  assert_int_equal(h.last, 0);
  /* Closing a descriptor that is not open reports -EBADF. */
  vsri_io_close(io, &c, a, t_hit_cb, &h);
  t_run_until(io, &h.count, 3);
  assert_int_equal(h.last, -EBADF);
  close(b);
  vsri_io_del(io);
}

/* A short read leaves the socket empty; data that arrives while no read is outstanding (its
 * readiness seen by a turn with nothing parked on the socket) must still reach the next read:
 * it may not wait for an edge that came already (what a backend that skips the retry after a
 * short read must keep: docs/performance.md). Bounded: t_run_until fails after its turns. */
static void test_short_read_then_data_while_no_read(void **state) {
  struct vsri_io *io = t_io(state);
  int a, b;
  t_tcp_pair(&a, &b);
  char buf[64];
  struct vsri_completion c;
  struct t_hits h = {0, 99};
  vsri_io_recv(io, &c, b, buf, sizeof buf, t_hit_cb, &h); /* nothing there: it waits */
  t_run_idle(io, 2);
  assert_int_equal(h.count, 0);
  assert_int_equal(write(a, "abc", 3), 3);
  t_run_until(io, &h.count, 1);
  assert_int_equal(h.last, 3); /* short: 3 of 64 */
  assert_int_equal(write(a, "defg", 4), 4);
  t_run_idle(io, 3); /* the readiness is reported with no read outstanding */
  vsri_io_recv(io, &c, b, buf, sizeof buf, t_hit_cb, &h);
  t_run_until(io, &h.count, 2);
  assert_int_equal(h.last, 4);
  assert_memory_equal(buf, "defg", 4);
  close(a);
  close(b);
  vsri_io_del(io);
}

/* Data and the peer's FIN that arrive together: the read returns the data (short), and the
 * next read must still see the EOF (its edge came with the data). Bounded like the above. */
static void test_short_read_then_eof_already_there(void **state) {
  struct vsri_io *io = t_io(state);
  int a, b;
  t_tcp_pair(&a, &b);
  char buf[64];
  struct vsri_completion c;
  struct t_hits h = {0, 99};
  vsri_io_recv(io, &c, b, buf, sizeof buf, t_hit_cb, &h); /* parked: b joins the poll set */
  t_run_idle(io, 2);
  assert_int_equal(h.count, 0);
  assert_int_equal(write(a, "abc", 3), 3);
  shutdown(a, SHUT_WR);
  usleep(2000); /* both arrived before the turn that reports them */
  t_run_until(io, &h.count, 1);
  assert_int_equal(h.last, 3);
  vsri_io_recv(io, &c, b, buf, sizeof buf, t_hit_cb, &h);
  t_run_until(io, &h.count, 2);
  assert_int_equal(h.last, 0); /* EOF */
  close(a);
  close(b);
  vsri_io_del(io);
}

/* ---- batching and allocation ---------------------------------------------------------------- */

/* Receives submitted during one turn go to the kernel together: one wait syscall per turn. */
static void test_submissions_batched_one_enter_per_turn(void **state) {
  enum { CONNS = 32 };
  if (((const struct t_backend *)*state)->poll_first) skip(); /* two steps by design */
  struct vsri_io *io = t_io(state);
  int a[CONNS], b[CONNS];
  char buf[CONNS][8];
  struct vsri_completion c[CONNS];
  struct t_hits h = {0, 99};
  for (int i = 0; i < CONNS; i++) {
    t_tcp_pair(&a[i], &b[i]);
    assert_int_equal(write(a[i], "abc", 3), 3);
  }
  usleep(2000);
  t_run_idle(io, 1);
  struct vsri_io_stats before, after;
  vsri_io_stats(io, &before);
  for (int i = 0; i < CONNS; i++) vsri_io_recv(io, &c[i], b[i], buf[i], 8, t_hit_cb, &h);
  int n = vsri_io_run(io, T_TURN_NS);
  vsri_io_stats(io, &after);
  assert_int_equal(n, CONNS);
  assert_int_equal(h.count, CONNS);
  /* At most one: epoll skips its zero-timeout poll when the receives completed at once and
   * the turn before polled (the next turn polls). */
  assert_true(after.enters - before.enters <= 1);
  assert_int_equal(after.submissions - before.submissions, CONNS);
  for (int i = 0; i < CONNS; i++) {
    close(a[i]);
    close(b[i]);
  }
  vsri_io_del(io);
}

/* More submissions and cancels in one turn than the io_uring SQ holds (4 entries): the SQ is
 * pushed to the kernel early to make room, and every operation still completes once. */
static void test_more_submissions_than_sq_entries(void **state) {
  enum { READY = 48, IDLE = 16 };
  struct vsri_io *io = t_io_opts(state, 0, 0, 4);
  int a[READY + IDLE], b[READY + IDLE];
  char buf[READY + IDLE][8];
  struct vsri_completion c[READY + IDLE];
  struct t_hits ready = {0, 99}, idle = {0, 99};
  for (int i = 0; i < READY + IDLE; i++) {
    t_tcp_pair(&a[i], &b[i]);
    if (i < READY) assert_int_equal(write(a[i], "abc", 3), 3);
  }
  for (int i = 0; i < READY + IDLE; i++) {
    vsri_io_recv(io, &c[i], b[i], buf[i], 8, t_hit_cb, i < READY ? &ready : &idle);
  }
  t_run_until(io, &ready.count, READY);
  assert_int_equal(ready.last, 3);
  for (int i = READY; i < READY + IDLE; i++) vsri_io_cancel(io, &c[i]);
  t_run_until(io, &idle.count, IDLE);
  assert_int_equal(idle.last, -ECANCELED);
  t_run_idle(io, 2);
  assert_int_equal(ready.count, READY);
  assert_int_equal(idle.count, IDLE);
  for (int i = 0; i < READY + IDLE; i++) {
    close(a[i]);
    close(b[i]);
  }
  vsri_io_del(io);
}

struct t_echo {
  struct vsri_io *io;
  struct vsri_completion wc, rc;
  struct iovec iov;
  uint8_t out[512];
  int wfd, rfd;
  int rounds;
  size_t got;
  bool stop;    /* no more writes or receives */
  bool writing; /* wc is pending */
  bool want_write; /* a round finished while wc was still pending */
};

static void t_echo_wrote(struct vsri_io *io, struct vsri_completion *c, int32_t res);

static void t_echo_write(struct t_echo *e) {
  e->writing = true;
  vsri_io_sendv(e->io, &e->wc, e->wfd, &e->iov, 1, t_echo_wrote, e);
}

static void t_echo_wrote(struct vsri_io *io, struct vsri_completion *c, int32_t res) {
  (void)io;
  struct t_echo *e = c->ctx;
  assert_int_equal(res, 512);
  e->writing = false;
  if (e->want_write && !e->stop) {
    e->want_write = false;
    t_echo_write(e);
  }
}

/* Each full 512-byte message received starts the next write. */
static void t_echo_read(struct vsri_io *io, struct vsri_completion *c, int32_t res) {
  struct t_echo *e = c->ctx;
  if (e->stop) return;
  assert_true(res > 0);
  e->got += (size_t)res;
  while (e->got >= 512) {
    e->got -= 512;
    e->rounds++;
    if (e->writing) e->want_write = true;
    else t_echo_write(e);
  }
  vsri_io_recv_pooled(io, c, e->rfd, t_echo_read, e);
}

/* Steady state allocates nothing: 2,000 sendv + pooled recv round trips. */
static void test_steady_state_allocates_nothing(void **state) {
  struct vsri_io *io = t_io(state);
  int a, b;
  t_tcp_pair(&a, &b);
  struct t_echo e = {.io = io, .wfd = a, .rfd = b};
  e.iov = (struct iovec){e.out, sizeof e.out};
  vsri_io_recv_pooled(io, &e.rc, b, t_echo_read, &e);
  t_echo_write(&e);
  t_run_atleast(io, &e.rounds, 100); /* warm-up: fd tables and heaps reach their size */
  uint64_t allocs = vsr_alloc_count();
  t_run_atleast(io, &e.rounds, 2100);
  assert_int_equal(vsr_alloc_count() - allocs, 0);
  /* Drain: stop, cancel the receive and let the last write finish before freeing the loop. */
  e.stop = true;
  vsri_io_cancel(io, &e.rc);
  uint64_t end = t_now() + T_GUARD_NS;
  while ((e.rc.pending || e.wc.pending) && t_now() < end) {
    assert_true(vsri_io_run(io, T_TURN_NS) >= 0);
  }
  assert_false(e.rc.pending || e.wc.pending);
  close(a);
  close(b);
  vsri_io_del(io);
}

/* ---- letting go without running the loop (io.h, "Letting go") ------------------------------ */

/* A block an owner hands to the io layer: a receive into its own buffer and a timer. */
struct t_block {
  struct vsri_completion rc, tc;
  struct vsri_io_grave grave;
  uint8_t buf[4096];
  int *freed;
  struct t_hits hits; /* callbacks: must stay 0 once released */
};

static void t_block_free(void *arg) {
  struct t_block *b = arg;
  (*b->freed)++;
  assert_int_equal(b->hits.count, 0);
  free(b);
}

static struct t_block *t_block_new(struct vsri_io *io, int fd, int *freed) {
  struct t_block *b = calloc(1, sizeof *b);
  assert_non_null(b);
  b->freed = freed;
  vsri_io_recv(io, &b->rc, fd, b->buf, sizeof b->buf, t_hit_cb, &b->hits);
  vsri_io_timeout(io, &b->tc, 10000000000ull, t_hit_cb, &b->hits);
  return b;
}

static void t_release(struct vsri_io *io, struct t_block *b, int fd) {
  struct vsri_completion *cs[] = {&b->rc, &b->tc};
  vsri_io_release(io, &b->grave, cs, 2, t_block_free, b);
  vsri_io_close_now(io, fd);
}

/* Released after the receive reached the kernel: no callback ever, freed once (epoll: at
 * once; io_uring: when the canceled receive's CQE arrives), nothing left in the graveyard. A
 * peer that writes afterwards changes nothing. */
static void test_release_frees_without_callbacks(void **state) {
  struct vsri_io *io = t_io(state);
  int a, b;
  t_tcp_pair(&a, &b);
  int freed = 0;
  struct t_block *blk = t_block_new(io, a, &freed);
  t_run_idle(io, 1); /* the receive is parked / in the kernel; the timer has not fired */
  assert_int_equal(blk->hits.count, 0);
  t_release(io, blk, a);
  if (strcmp(vsri_io_backend_name(io), "epoll") == 0) assert_int_equal(freed, 1);
  assert_int_equal(write(b, "x", 1), 1);
  uint64_t end = t_now() + T_GUARD_NS;
  while (freed == 0 && t_now() < end) assert_true(vsri_io_run(io, T_TURN_NS) >= 0);
  assert_int_equal(freed, 1);
  assert_int_equal(vsri_io_graves(io), 0);
  t_run_idle(io, 5);
  assert_int_equal(freed, 1);
  close(b);
  vsri_io_del(io);
}

/* Released before the first turn, then the loop is deleted at once: vsri_io_del waits for the
 * kernel's answers and frees the block (ASan: no leak). */
static void test_release_then_io_del_frees(void **state) {
  struct vsri_io *io = t_io(state);
  int a, b;
  t_tcp_pair(&a, &b);
  int freed = 0;
  struct t_block *blk = t_block_new(io, a, &freed);
  t_run_idle(io, 1);
  t_release(io, blk, a);
  vsri_io_del(io);
  assert_int_equal(freed, 1);
  close(b);
}

/* A dropped timer never fires; the others in the heap still do, in order. */
static void test_timeout_drop_leaves_others(void **state) {
  struct vsri_io *io = t_io(state);
  struct vsri_completion t[5];
  struct t_hits h[5];
  memset(h, 0, sizeof h);
  for (int i = 0; i < 5; i++) vsri_io_timeout(io, &t[i], (uint64_t)(i + 1) * 2000000, t_hit_cb, &h[i]);
  vsri_io_timeout_drop(io, &t[2]);
  vsri_io_timeout_drop(io, &t[0]);
  assert_false(t[2].pending);
  vsri_io_timeout_drop(io, &t[0]); /* idle: no-op */
  t_run_atleast(io, &h[4].count, 1);
  assert_int_equal(h[0].count, 0);
  assert_int_equal(h[2].count, 0);
  assert_int_equal(h[1].count, 1);
  assert_int_equal(h[3].count, 1);
  /* A canceled timer (its -ECANCELED posted, not yet run) is dropped unrun too. */
  struct vsri_completion c;
  struct t_hits ch = {0, 0};
  vsri_io_timeout(io, &c, 1000000000ull, t_hit_cb, &ch);
  vsri_io_cancel(io, &c);
  vsri_io_timeout_drop(io, &c);
  t_run_idle(io, 3);
  assert_int_equal(ch.count, 0);
  vsri_io_del(io);
}

/* The non-waiting datagram forms: -EAGAIN when nothing is queued, then one datagram each way
 * with its address, through the backend. */
static void test_datagram_now_forms(void **state) {
  struct vsri_io *io = t_io(state);
  struct sockaddr_in sa, ra;
  int s = t_udp(&sa);
  int r = t_udp(&ra);
  uint8_t in[256], out[100];
  for (size_t k = 0; k < sizeof out; k++) out[k] = t_pattern(k);
  struct sockaddr_in from;
  struct iovec riov = {in, sizeof in};
  struct msghdr rm = {.msg_name = &from, .msg_namelen = sizeof from, .msg_iov = &riov,
                      .msg_iovlen = 1};
  assert_int_equal(vsri_io_recvmsg_now(io, r, &rm, 0), -EAGAIN);
  struct iovec siov = {out, sizeof out};
  struct msghdr sm = {.msg_name = &ra, .msg_namelen = sizeof ra, .msg_iov = &siov,
                      .msg_iovlen = 1};
  assert_int_equal(vsri_io_sendmsg_now(io, s, &sm, 0), (ssize_t)sizeof out);
  ssize_t got = -EAGAIN;
  for (int i = 0; i < 1000 && got == -EAGAIN; i++) {
    rm.msg_namelen = sizeof from;
    got = vsri_io_recvmsg_now(io, r, &rm, 0);
    if (got == -EAGAIN) usleep(1000);
  }
  assert_int_equal(got, (ssize_t)sizeof out);
  assert_memory_equal(in, out, sizeof out);
  assert_int_equal(from.sin_port, sa.sin_port);
  close(s);
  close(r);
  vsri_io_del(io);
}

/* ---- backend selection ---------------------------------------------------------------------- */

static struct vsri_io *t_new_kind(enum vsri_io_backend_kind kind, int *err) {
  struct vsri_io_options o;
  vsri_io_options_default(&o);
  o.backend = kind;
  struct vsri_io *io = NULL;
  *err = vsri_io_new(&io, &o);
  return io;
}

static bool t_uring_available(void) {
  int err;
  struct vsri_io *io = t_new_kind(VSRI_IO_URING, &err);
  if (io) vsri_io_del(io);
  return err == 0;
}

/* The probe fails (test knob): AUTO serves with epoll, forcing io_uring is an error. */
static void test_fallback_to_epoll_when_uring_probe_fails(void **state) {
  (void)state;
  const char *saved = getenv("VSRBUS_IO");
  char *keep = saved ? strdup(saved) : NULL;
  unsetenv("VSRBUS_IO");
  setenv("VSRBUS_IO_TEST_FAIL_URING", "1", 1);
  int err;
  struct vsri_io *io = t_new_kind(VSRI_IO_AUTO, &err);
  assert_int_equal(err, 0);
  assert_string_equal(vsri_io_backend_name(io), "epoll");
  /* And epoll serves: a timer fires. */
  struct vsri_completion c;
  struct t_hits h = {0, 99};
  vsri_io_timeout(io, &c, 1000, t_hit_cb, &h);
  t_run_until(io, &h.count, 1);
  vsri_io_del(io);
  io = t_new_kind(VSRI_IO_URING, &err);
  assert_null(io);
  assert_int_equal(err, VSR_EUNSUPPORTED);
  setenv("VSRBUS_IO", "uring", 1); /* the env knob forces it the same way */
  io = t_new_kind(VSRI_IO_AUTO, &err);
  assert_null(io);
  assert_int_equal(err, VSR_EUNSUPPORTED);
  unsetenv("VSRBUS_IO_TEST_FAIL_URING");
  if (keep) setenv("VSRBUS_IO", keep, 1);
  else unsetenv("VSRBUS_IO");
  free(keep);
}

static void test_vsrbus_io_env_picks_backend(void **state) {
  (void)state;
  const char *saved = getenv("VSRBUS_IO");
  char *keep = saved ? strdup(saved) : NULL;
  int err;
  setenv("VSRBUS_IO", "epoll", 1);
  struct vsri_io *io = t_new_kind(VSRI_IO_AUTO, &err);
  assert_int_equal(err, 0);
  assert_string_equal(vsri_io_backend_name(io), "epoll");
  vsri_io_del(io);
  setenv("VSRBUS_IO", "bogus", 1);
  io = t_new_kind(VSRI_IO_AUTO, &err);
  assert_null(io);
  assert_int_equal(err, VSR_ECONFIG);
  /* An explicit option wins over the environment. */
  setenv("VSRBUS_IO", "uring", 1);
  io = t_new_kind(VSRI_IO_EPOLL, &err);
  assert_int_equal(err, 0);
  assert_string_equal(vsri_io_backend_name(io), "epoll");
  vsri_io_del(io);
  bool have_uring = t_uring_available();
  io = t_new_kind(VSRI_IO_AUTO, &err);
  if (have_uring) {
    assert_int_equal(err, 0);
    assert_string_equal(vsri_io_backend_name(io), "io_uring");
    vsri_io_del(io);
    unsetenv("VSRBUS_IO"); /* AUTO without the env prefers io_uring */
    io = t_new_kind(VSRI_IO_AUTO, &err);
    assert_string_equal(vsri_io_backend_name(io), "io_uring");
    vsri_io_del(io);
  } else {
    assert_int_equal(err, VSR_EUNSUPPORTED);
  }
  if (keep) setenv("VSRBUS_IO", keep, 1);
  else unsetenv("VSRBUS_IO");
  free(keep);
}

/* Makes io_uring_setup fail with |err| in this process, as container seccomp profiles do. */
static int t_forbid_io_uring(int err) {
  struct sock_filter f[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ((uint32_t)err & SECCOMP_RET_DATA)),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  struct sock_fprog prog = {.len = sizeof f / sizeof f[0], .filter = f};
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return -1;
  return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog);
}

/* In a child process: io_uring forbidden for real; exit 0 when AUTO serves with epoll and a
 * forced io_uring is refused, 1 otherwise, 77 when seccomp is not available. */
static int t_child_without_io_uring(int err) {
  if (t_forbid_io_uring(err) != 0) return 77;
  unsetenv("VSRBUS_IO");
  int e;
  struct vsri_io *io = t_new_kind(VSRI_IO_AUTO, &e);
  if (e != 0 || strcmp(vsri_io_backend_name(io), "epoll") != 0) return 1;
  struct vsri_completion c;
  struct t_hits h = {0, 99};
  vsri_io_timeout(io, &c, 1000, t_hit_cb, &h);
  for (int i = 0; i < 1000 && h.count == 0; i++) vsri_io_run(io, T_TURN_NS);
  vsri_io_del(io);
  if (h.count != 1 || h.last != 0) return 1;
  io = t_new_kind(VSRI_IO_URING, &e);
  return io == NULL && e == VSR_EUNSUPPORTED ? 0 : 1;
}

static void t_fallback_when_forbidden(int err) {
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) _exit(t_child_without_io_uring(err));
  int status = 0;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status));
  if (WEXITSTATUS(status) == 77) skip();
  assert_int_equal(WEXITSTATUS(status), 0);
}

/* Docker's default profile answers io_uring_setup with EPERM; old kernels with ENOSYS. */
static void test_fallback_to_epoll_when_seccomp_forbids_uring_eperm(void **state) {
  (void)state;
  t_fallback_when_forbidden(EPERM);
}

static void test_fallback_to_epoll_when_kernel_lacks_uring_enosys(void **state) {
  (void)state;
  t_fallback_when_forbidden(ENOSYS);
}

/* Every allocation failure during io_uring setup gives VSR_ENOMEM, never a crash or a leak. */
static void test_uring_init_survives_allocation_failures(void **state) {
  (void)state;
  if (!t_uring_available()) skip();
  for (int64_t n = 0; n < 16; n++) {
    vsri_alloc_fail_after(n);
    int err;
    struct vsri_io *io = t_new_kind(VSRI_IO_URING, &err);
    vsri_alloc_fail_after(-1);
    assert_true(err == 0 || err == VSR_ENOMEM);
    if (io) vsri_io_del(io);
  }
}

struct t_mixed {
  size_t off, max_small, max_big;
  int reads, small, big;
  bool pending, bad;
};

static void t_mixed_cb(struct vsri_io *io, struct vsri_completion *c, int32_t res) {
  (void)io;
  struct t_mixed *m = c->ctx;
  m->pending = false;
  assert_true(res > 0);
  bool big = c->u.recv.len > VSRI_IO_POOLED_BUF;
  size_t *max = big ? &m->max_big : &m->max_small;
  if ((size_t)res > *max) *max = (size_t)res;
  const uint8_t *p = c->u.recv.buf;
  for (int32_t i = 0; i < res; i++) m->bad |= p[i] != t_pattern(m->off + (size_t)i);
  m->off += (size_t)res;
  m->reads++;
  if (big) m->big++;
  else m->small++;
}

/* Small and big pooled receives alternate on one socket with 2 MiB queued: each reads into a
 * buffer of its own size (a big read takes more than 64 KiB at a time, a small one never),
 * the bytes arrive in order, and the buffers of both kinds go back to the loop (2 MiB passes
 * through 8 small and 4 big buffers many times over). */
static void test_recv_pooled_big_and_small_alternate(void **state) {
  t_big_min_ready = 1; /* one socket: big reads whenever asked */
  struct vsri_io *io = t_io(state);
  t_big_min_ready = 0;
  int a, b;
  t_tcp_pair(&a, &b);
  static uint8_t data[2u << 20];
  for (size_t i = 0; i < sizeof data; i++) data[i] = t_pattern(i);
  size_t sent = 0;
  struct t_mixed m = {0};
  struct vsri_completion rc;
  uint64_t end = t_now() + T_GUARD_NS;
  while (m.off < sizeof data && t_now() < end) {
    while (sent < sizeof data) {
      ssize_t w = write(a, data + sent, sizeof data - sent);
      if (w <= 0) break;
      sent += (size_t)w;
    }
    if (!m.pending) {
      m.pending = true;
      if (m.reads % 2) vsri_io_recv_pooled_big(io, &rc, b, t_mixed_cb, &m);
      else vsri_io_recv_pooled(io, &rc, b, t_mixed_cb, &m);
    }
    assert_true(vsri_io_run(io, T_TURN_NS) >= 0);
  }
  assert_int_equal(m.off, sizeof data);
  assert_false(m.bad);
  print_message("%d small reads (largest %zu), %d big (largest %zu)\n", m.small, m.max_small,
                m.big, m.max_big);
  assert_true(m.max_small <= VSRI_IO_POOLED_BUF);
  assert_true(m.max_big <= VSRI_IO_POOLED_BIG);
  assert_true(m.max_big > VSRI_IO_POOLED_BUF);
  assert_true(m.big >= 2);
  close(a);
  close(b);
  vsri_io_del(io);
}

struct t_busy {
  int fd;
  struct vsri_completion rc;
  size_t got, max_read;
  bool pending;
};

static void t_busy_cb(struct vsri_io *io, struct vsri_completion *c, int32_t res) {
  (void)io;
  struct t_busy *b = c->ctx;
  b->pending = false;
  assert_true(res > 0);
  b->got += (size_t)res;
  if ((size_t)res > b->max_read) b->max_read = (size_t)res;
}

/* Reads |n| sockets with 2 MiB queued each through vsri_io_recv_pooled_big until all is
 * read; returns the largest single read. */
static size_t t_busy_reads(struct vsri_io *io, int n) {
  static uint8_t chunk[64 << 10];
  struct t_busy b[2] = {{0}};
  int w[2];
  size_t want = 2u << 20;
  for (int i = 0; i < n; i++) {
    int a;
    t_tcp_pair(&a, &b[i].fd);
    w[i] = a;
  }
  size_t sent[2] = {0, 0};
  uint64_t end = t_now() + T_GUARD_NS;
  bool done = false;
  while (!done && t_now() < end) {
    done = true;
    for (int i = 0; i < n; i++) {
      while (sent[i] < want) {
        ssize_t k = write(w[i], chunk, sizeof chunk < want - sent[i] ? sizeof chunk
                                                                        : want - sent[i]);
        if (k <= 0) break;
        sent[i] += (size_t)k;
      }
      if (b[i].got < want && !b[i].pending) {
        b[i].pending = true;
        vsri_io_recv_pooled_big(io, &b[i].rc, b[i].fd, t_busy_cb, &b[i]);
      }
      done &= b[i].got == want;
    }
    assert_true(vsri_io_run(io, T_TURN_NS) >= 0);
  }
  size_t max = 0;
  for (int i = 0; i < n; i++) {
    assert_int_equal(b[i].got, want);
    if (b[i].max_read > max) max = b[i].max_read;
    close(w[i]);
    close(b[i].fd);
  }
  return max;
}

/* By default a big read needs company: one busy socket alone reads at most 64 KiB at a time
 * through vsri_io_recv_pooled_big, while two sockets busy at once read more than that. */
static void test_big_reads_need_two_busy_sockets(void **state) {
  struct vsri_io *io = t_io(state);
  size_t one = t_busy_reads(io, 1);
  size_t two = t_busy_reads(io, 2);
  print_message("largest read: %zu with one busy socket, %zu with two\n", one, two);
  assert_true(one <= VSRI_IO_POOLED_BUF);
  assert_true(two > VSRI_IO_POOLED_BUF);
  assert_true(two <= VSRI_IO_POOLED_BIG);
  vsri_io_del(io);
}

/* ---- fairness between sockets ------------------------------------------------------------- */

struct t_flood {
  struct vsri_io *io;
  int a_fd, b_writer;
  struct vsri_completion ac, bc;
  uint8_t abuf[4096], bbuf[16];
  int a_reads, a_reads_at_b, b_hits;
  bool a_pending, b_written;
};

static void t_flood_b(struct vsri_io *io, struct vsri_completion *c, int32_t res) {
  (void)io;
  struct t_flood *f = c->ctx;
  assert_int_equal(res, 1);
  f->b_hits++;
  f->a_reads_at_b = f->a_reads;
}

static void t_flood_a(struct vsri_io *io, struct vsri_completion *c, int32_t res) {
  struct t_flood *f = c->ctx;
  f->a_pending = false;
  if (res == -ECANCELED) return;
  assert_true(res > 0);
  f->a_reads++;
  if (!f->b_written) { /* the second socket becomes readable now, after this turn's poll */
    f->b_written = true;
    assert_int_equal(write(f->b_writer, "b", 1), 1);
  }
  if (f->b_hits == 0 && f->a_reads < 100000) {
    f->a_pending = true;
    vsri_io_recv(io, &f->ac, f->a_fd, f->abuf, sizeof f->abuf, t_flood_a, f);
  }
}

/* A socket with a lot queued (hundreds of 4 KiB reads' worth) does not keep a second socket
 * that becomes readable in the middle of its reads from being served: the second is read
 * after at most a budget's worth (epoll: 16 reads) of the first, not after the first ran dry.
 * Counted in reads, not time. */
static void test_flooding_socket_leaves_room_for_another(void **state) {
  struct vsri_io *io = t_io(state);
  int a_w, a_r, b_w, b_r;
  t_tcp_pair(&a_w, &a_r);
  t_tcp_pair(&b_w, &b_r);
  static uint8_t chunk[64 << 10];
  memset(chunk, 0x5a, sizeof chunk);
  size_t queued = 0;
  for (ssize_t w; queued < (4u << 20) && (w = write(a_w, chunk, sizeof chunk)) > 0;) {
    queued += (size_t)w;
  }
  print_message("queued %zu bytes on the flooding socket\n", queued);
  assert_true(queued >= (256u << 10)); /* at least 64 reads of 4 KiB */
  struct t_flood f = {.io = io, .a_fd = a_r, .b_writer = b_w};
  vsri_io_recv(io, &f.bc, b_r, f.bbuf, sizeof f.bbuf, t_flood_b, &f);
  f.a_pending = true;
  vsri_io_recv(io, &f.ac, a_r, f.abuf, sizeof f.abuf, t_flood_a, &f);
  t_run_until(io, &f.b_hits, 1);
  if (f.a_pending) vsri_io_cancel(io, &f.ac); /* the first may have run dry and parked */
  uint64_t end = t_now() + T_GUARD_NS;
  while (f.a_pending && t_now() < end) assert_true(vsri_io_run(io, T_TURN_NS) >= 0);
  assert_false(f.a_pending);
  print_message("the second socket was served after %d reads of the first\n", f.a_reads_at_b);
  assert_true(f.a_reads_at_b >= 1);
  assert_true(f.a_reads_at_b <= 20); /* a budget (16) and a turn's slack, far below 64 */
  close(a_w);
  close(a_r);
  close(b_w);
  close(b_r);
  vsri_io_del(io);
}

/* ---- main ----------------------------------------------------------------------------------- */

/* One entry per backend, named "<test> [<backend>]". */
#define T_ON_ALL(f)                                                                            \
  {#f " [epoll]", f, NULL, NULL, &t_epoll}, {#f " [io_uring]", f, NULL, NULL, &t_uring},        \
      {#f " [io_uring/no-bufring]", f, NULL, NULL, &t_uring_nbr},                             \
      {#f " [io_uring/poll-first]", f, NULL, NULL, &t_uring_pf}

int main(void) {
  const struct CMUnitTest tests[] = {
      T_ON_ALL(test_timeout_fires_once),
      T_ON_ALL(test_cancel_pending_timeout_gives_one_ecanceled),
      T_ON_ALL(test_deferred_runs_before_wait),
      T_ON_ALL(test_undefer_anywhere_keeps_order),
      T_ON_ALL(test_cancel_middle_submission_before_first_turn),
      T_ON_ALL(test_cancel_middle_submission_pending),
      T_ON_ALL(test_polling_with_zero_timeout_sees_completions),
      T_ON_ALL(test_cancel_pending_recv_gives_one_ecanceled),
      T_ON_ALL(test_cancel_recv_before_first_turn),
      T_ON_ALL(test_cancel_pending_pooled_recv),
      T_ON_ALL(test_cancel_pending_accept),
      T_ON_ALL(test_cancel_racing_completion_gives_one_callback),
      T_ON_ALL(test_tcp_accept_connect_sendv_recv_10mib),
      T_ON_ALL(test_connect_refused_reports_econnrefused),
      T_ON_ALL(test_sendv_to_closed_peer_fails_without_sigpipe),
      T_ON_ALL(test_sendv_on_a_pipe_reports_enotsock),
      T_ON_ALL(test_recv_pooled_buffers_return),
      T_ON_ALL(test_recv_pooled_survives_buffer_exhaustion),
      T_ON_ALL(test_udp_sendmsg_recvmsg_datagrams),
      T_ON_ALL(test_close_closes_and_reports_ebadf),
      T_ON_ALL(test_short_read_then_data_while_no_read),
      T_ON_ALL(test_short_read_then_eof_already_there),
      T_ON_ALL(test_submissions_batched_one_enter_per_turn),
      T_ON_ALL(test_more_submissions_than_sq_entries),
      T_ON_ALL(test_steady_state_allocates_nothing),
      T_ON_ALL(test_release_frees_without_callbacks),
      T_ON_ALL(test_release_then_io_del_frees),
      T_ON_ALL(test_timeout_drop_leaves_others),
      T_ON_ALL(test_datagram_now_forms),
      T_ON_ALL(test_flooding_socket_leaves_room_for_another),
      T_ON_ALL(test_recv_pooled_big_and_small_alternate),
      T_ON_ALL(test_big_reads_need_two_busy_sockets),
      cmocka_unit_test(test_fallback_to_epoll_when_uring_probe_fails),
      cmocka_unit_test(test_fallback_to_epoll_when_seccomp_forbids_uring_eperm),
      cmocka_unit_test(test_fallback_to_epoll_when_kernel_lacks_uring_enosys),
      cmocka_unit_test(test_vsrbus_io_env_picks_backend),
      cmocka_unit_test(test_uring_init_survives_allocation_failures),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
