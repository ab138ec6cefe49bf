/* The simulated io backend (src/io/sim.c): virtual time, virtual sockets between hosts, the
 * packet simulator's faults, and determinism (one seed, one trace). Backend-independent: the
 * simulator replaces epoll and io_uring, so these run once. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "io/io.h"
#include "io/sim.h"
#include "util/random.h"
#include "vsrbus/error.h"

#define MS 1000000ull

struct op {
  struct vsri_completion c;
  int32_t res;
  bool done;
};

static void op_cb(struct vsri_io *io, struct vsri_completion *c, int32_t res) {
  (void)io;
  struct op *o = vsri_container_of(c, struct op, c);
  o->res = res;
  o->done = true;
}

/* Runs the world until |o| completed, at most |ns| of virtual time. */
static void wait_op(struct vsri_sim *w, struct op *o, uint64_t ns) {
  uint64_t end = vsri_sim_now(w) + ns;
  while (!o->done && vsri_sim_now(w) < end) {
    assert_int_equal(vsri_sim_run_until(w, vsri_sim_now(w) + MS), 0);
  }
  assert_true(o->done);
}

static struct sockaddr_in sa(const char *ip, uint16_t port) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  inet_pton(AF_INET, ip, &a.sin_addr);
  return a;
}

struct pair {
  struct vsri_sim *w;
  struct vsri_sim_host *ha, *hb;
  struct vsri_io *a, *b;
  int lfd, cfd, sfd; /* listener on b, client on a, accepted on b */
};

static void pair_open(struct pair *p, uint64_t seed, const struct vsri_sim_net *net) {
  assert_int_equal(vsri_sim_new(&p->w, seed, net), 0);
  p->ha = vsri_sim_host_new(p->w, "10.0.0.1");
  p->hb = vsri_sim_host_new(p->w, "10.0.0.2");
  assert_non_null(p->ha);
  assert_non_null(p->hb);
  assert_int_equal(vsri_sim_io_new(&p->a, p->ha, NULL), 0);
  assert_int_equal(vsri_sim_io_new(&p->b, p->hb, NULL), 0);
  assert_string_equal(vsri_io_backend_name(p->a), "sim");
  p->lfd = vsri_io_socket(p->b, AF_INET, SOCK_STREAM);
  assert_true(p->lfd >= 0);
  struct sockaddr_in l = sa("10.0.0.2", 7000);
  assert_int_equal(vsri_io_bind(p->b, p->lfd, (struct sockaddr *)&l, sizeof l), 0);
  assert_int_equal(vsri_io_listen(p->b, p->lfd, 16), 0);
  /* A second listener on the same port is refused. */
  int dup = vsri_io_socket(p->b, AF_INET, SOCK_STREAM);
  assert_int_equal(vsri_io_bind(p->b, dup, (struct sockaddr *)&l, sizeof l), -EADDRINUSE);
  vsri_io_close_now(p->b, dup);
  struct op acc = {0}, con = {0};
  struct sockaddr_storage peer;
  socklen_t plen = sizeof peer;
  vsri_io_accept(p->b, &acc.c, p->lfd, &peer, &plen, op_cb, NULL);
  p->cfd = vsri_io_socket(p->a, AF_INET, SOCK_STREAM);
  vsri_io_connect(p->a, &con.c, p->cfd, (struct sockaddr *)&l, sizeof l, op_cb, NULL);
  assert_false(con.done); /* callbacks never run inside a submit */
  wait_op(p->w, &con, 2000 * MS);
  wait_op(p->w, &acc, 2000 * MS);
  assert_int_equal(con.res, 0);
  assert_true(acc.res >= 0);
  p->sfd = acc.res;
  const struct sockaddr_in *pa = (const struct sockaddr_in *)&peer;
  assert_int_equal(pa->sin_addr.s_addr, sa("10.0.0.1", 0).sin_addr.s_addr);
}

static void close_fd(struct vsri_sim *w, struct vsri_io *io, int fd) {
  struct op c = {0};
  vsri_io_close(io, &c.c, fd, op_cb, NULL);
  wait_op(w, &c, MS);
  assert_int_equal(c.res, 0);
}

static void pair_close(struct pair *p) {
  close_fd(p->w, p->a, p->cfd);
  close_fd(p->w, p->b, p->sfd);
  close_fd(p->w, p->b, p->lfd);
  vsri_io_del(p->a);
  vsri_io_del(p->b);
  vsri_sim_del(p->w);
}

/* Sends |len| bytes from a to b and reads them back; returns the writes and reads it took. */
static void transfer(struct pair *p, const uint8_t *src, size_t len, uint8_t *dst,
                     uint32_t *writes, uint32_t *reads) {
  size_t sent = 0, got = 0;
  struct op wr = {0}, rd = {0};
  bool wr_busy = false, rd_busy = false;
  struct iovec iov;
  *writes = *reads = 0;
  uint64_t end = vsri_sim_now(p->w) + 60000 * MS;
  while (got < len) {
    if (!wr_busy && sent < len) {
      iov.iov_base = (void *)(src + sent);
      iov.iov_len = len - sent;
      wr = (struct op){0};
      vsri_io_sendv(p->a, &wr.c, p->cfd, &iov, 1, op_cb, NULL);
      wr_busy = true;
    }
    if (!rd_busy) {
      rd = (struct op){0};
      vsri_io_recv(p->b, &rd.c, p->sfd, dst + got, len - got, op_cb, NULL);
      rd_busy = true;
    }
    assert_int_equal(vsri_sim_run_until(p->w, vsri_sim_now(p->w) + MS), 0);
    if (wr_busy && wr.done) {
      assert_true(wr.res > 0);
      sent += (size_t)wr.res;
      (*writes)++;
      wr_busy = false;
    }
    if (rd_busy && rd.done) {
      assert_true(rd.res > 0);
      got += (size_t)rd.res;
      (*reads)++;
      rd_busy = false;
    }
    assert_true(vsri_sim_now(p->w) < end);
  }
  assert_false(rd_busy);
  if (wr_busy) wait_op(p->w, &wr, MS);
}

/* Bytes arrive intact and in order through small windows, random segments, partial writes and
 * short reads: it takes many writes and reads, never one. */
static void t_stream_intact(void **state) {
  (void)state;
  struct vsri_sim_net net = {.window_min = 1024, .window_max = 4096, .segment_max = 700,
                             .partial_write_ppm = 300000, .short_read_ppm = 300000};
  struct pair p;
  pair_open(&p, 7, &net);
  size_t len = 256u << 10;
  uint8_t *src = malloc(len), *dst = malloc(len);
  for (size_t i = 0; i < len; i++) src[i] = (uint8_t)(i * 131 + (i >> 9));
  uint32_t writes, reads;
  transfer(&p, src, len, dst, &writes, &reads);
  assert_memory_equal(src, dst, len);
  assert_true(writes > len / 4096); /* the window bounds each write */
  assert_true(reads > 1);
  struct vsri_sim_stats st;
  vsri_sim_stats(p.w, &st);
  assert_true(st.would_block > 0 || st.partial_writes > 0);
  assert_true(st.short_reads > 0);
  assert_int_equal(st.bytes, len);
  free(src);
  free(dst);
  pair_close(&p);
}

/* A FIN after the last byte: the reader gets the bytes, then 0. */
static void t_shutdown_eof(void **state) {
  (void)state;
  struct pair p;
  pair_open(&p, 8, NULL);
  struct iovec iov = {.iov_base = "hello", .iov_len = 5};
  struct op wr = {0}, rd = {0};
  vsri_io_sendv(p.a, &wr.c, p.cfd, &iov, 1, op_cb, NULL);
  wait_op(p.w, &wr, MS);
  assert_int_equal(vsri_io_shutdown(p.a, p.cfd, SHUT_WR), 0);
  char buf[16];
  size_t got = 0;
  while (got < 5) {
    rd = (struct op){0};
    vsri_io_recv(p.b, &rd.c, p.sfd, buf + got, sizeof buf - got, op_cb, NULL);
    wait_op(p.w, &rd, 1000 * MS);
    assert_true(rd.res > 0);
    got += (size_t)rd.res;
  }
  assert_memory_equal(buf, "hello", 5);
  rd = (struct op){0};
  vsri_io_recv(p.b, &rd.c, p.sfd, buf, sizeof buf, op_cb, NULL);
  wait_op(p.w, &rd, 1000 * MS);
  assert_int_equal(rd.res, 0);
  /* Writing after shutdown(SHUT_WR) fails. */
  wr = (struct op){0};
  vsri_io_sendv(p.a, &wr.c, p.cfd, &iov, 1, op_cb, NULL);
  wait_op(p.w, &wr, MS);
  assert_int_equal(wr.res, -EPIPE);
  pair_close(&p);
}

/* Nobody listens: refused. A partition: the SYN times out. */
static void t_refused_and_timeout(void **state) {
  (void)state;
  struct pair p;
  pair_open(&p, 9, NULL);
  struct sockaddr_in none = sa("10.0.0.2", 7001);
  int fd = vsri_io_socket(p.a, AF_INET, SOCK_STREAM);
  struct op con = {0};
  vsri_io_connect(p.a, &con.c, fd, (struct sockaddr *)&none, sizeof none, op_cb, NULL);
  wait_op(p.w, &con, 2000 * MS);
  assert_int_equal(con.res, -ECONNREFUSED);
  close_fd(p.w, p.a, fd);
  vsri_sim_partition(p.ha, p.hb, true);
  struct sockaddr_in l = sa("10.0.0.2", 7000);
  fd = vsri_io_socket(p.a, AF_INET, SOCK_STREAM);
  con = (struct op){0};
  uint64_t t0 = vsri_sim_now(p.w);
  vsri_io_connect(p.a, &con.c, fd, (struct sockaddr *)&l, sizeof l, op_cb, NULL);
  wait_op(p.w, &con, 5000 * MS);
  assert_int_equal(con.res, -ETIMEDOUT);
  assert_true(vsri_sim_now(p.w) - t0 >= 1000 * MS); /* the default connect timeout */
  close_fd(p.w, p.a, fd);
  vsri_sim_heal(p.w);
  pair_close(&p);
}

/* A partition holds bytes (TCP retransmits), the heal lets them through; a one-way partition
 * blocks only its direction. */
static void t_partition_holds(void **state) {
  (void)state;
  struct pair p;
  pair_open(&p, 10, NULL);
  vsri_sim_partition(p.ha, p.hb, false); /* a -> b only */
  struct iovec iov = {.iov_base = "abc", .iov_len = 3};
  struct op wr = {0}, rd = {0}, back = {0}, rd2 = {0};
  vsri_io_sendv(p.a, &wr.c, p.cfd, &iov, 1, op_cb, NULL);
  wait_op(p.w, &wr, MS);
  assert_int_equal(wr.res, 3);
  char buf[8];
  vsri_io_recv(p.b, &rd.c, p.sfd, buf, sizeof buf, op_cb, NULL);
  /* b -> a still flows. */
  vsri_io_sendv(p.b, &back.c, p.sfd, &iov, 1, op_cb, NULL);
  char buf2[8];
  vsri_io_recv(p.a, &rd2.c, p.cfd, buf2, sizeof buf2, op_cb, NULL);
  wait_op(p.w, &rd2, 1000 * MS);
  assert_true(rd2.res > 0);
  assert_int_equal(vsri_sim_run_until(p.w, vsri_sim_now(p.w) + 3000 * MS), 0);
  assert_false(rd.done); /* held */
  struct vsri_sim_stats st;
  vsri_sim_stats(p.w, &st);
  assert_true(st.held > 0);
  vsri_sim_heal(p.w);
  wait_op(p.w, &rd, 2000 * MS);
  assert_true(rd.res > 0);
  assert_memory_equal(buf, "abc", (size_t)rd.res);
  pair_close(&p);
}

/* A crash resets every socket of the host and its peers' ends; the listener is gone. */
static void t_crash_resets(void **state) {
  (void)state;
  struct pair p;
  pair_open(&p, 11, NULL);
  char buf[8];
  struct op rd = {0}, rdb = {0};
  vsri_io_recv(p.a, &rd.c, p.cfd, buf, sizeof buf, op_cb, NULL);
  vsri_io_recv(p.b, &rdb.c, p.sfd, buf, sizeof buf, op_cb, NULL);
  assert_int_equal(vsri_sim_run_until(p.w, vsri_sim_now(p.w) + 10 * MS), 0);
  vsri_sim_crash(p.hb);
  wait_op(p.w, &rdb, MS);
  assert_int_equal(rdb.res, -ECONNRESET);
  wait_op(p.w, &rd, 1000 * MS);
  assert_int_equal(rd.res, -ECONNRESET);
  /* Nothing listens on the crashed host any more. */
  struct sockaddr_in l = sa("10.0.0.2", 7000);
  int fd = vsri_io_socket(p.a, AF_INET, SOCK_STREAM);
  struct op con = {0};
  vsri_io_connect(p.a, &con.c, fd, (struct sockaddr *)&l, sizeof l, op_cb, NULL);
  wait_op(p.w, &con, 2000 * MS);
  assert_int_equal(con.res, -ECONNREFUSED);
  close_fd(p.w, p.a, fd);
  pair_close(&p);
}

/* A peer crashes while its RST cannot reach us (a one-way partition); after the heal, an idle
 * reader learns of it only through keepalive: RST answers the first probe. Without keepalive it
 * waits forever (10 s here). With the path still blocked both ways, the probes go unanswered
 * and the connection times out after idle + count x interval. */
static void ka_case(bool keepalive, bool heal, int32_t *res, uint64_t *after_ns) {
  struct pair p;
  pair_open(&p, 12, NULL);
  if (keepalive) {
    int one = 1, idle = 2, intvl = 1, cnt = 3;
    struct vsri_io *b = p.b;
    assert_int_equal(vsri_io_setsockopt(b, p.sfd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one), 0);
    assert_int_equal(vsri_io_setsockopt(b, p.sfd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle),
                     0);
    assert_int_equal(
        vsri_io_setsockopt(b, p.sfd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl), 0);
    assert_int_equal(vsri_io_setsockopt(b, p.sfd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt), 0);
  }
  char buf[8];
  struct op rd = {0}, rda = {0};
  vsri_io_recv(p.b, &rd.c, p.sfd, buf, sizeof buf, op_cb, NULL);
  vsri_io_recv(p.a, &rda.c, p.cfd, buf, sizeof buf, op_cb, NULL);
  vsri_sim_partition(p.ha, p.hb, !heal); /* a -> b blocked (both ways when it never heals) */
  vsri_sim_crash(p.ha);
  wait_op(p.w, &rda, MS);
  assert_int_equal(rda.res, -ECONNRESET);
  assert_int_equal(vsri_sim_run_until(p.w, vsri_sim_now(p.w) + 500 * MS), 0);
  assert_false(rd.done); /* the RST was lost */
  if (heal) vsri_sim_heal(p.w);
  uint64_t t0 = vsri_sim_now(p.w), end = t0 + 10000 * MS;
  while (!rd.done && vsri_sim_now(p.w) < end) {
    assert_int_equal(vsri_sim_run_until(p.w, vsri_sim_now(p.w) + 10 * MS), 0);
  }
  *res = rd.done ? rd.res : 1;
  *after_ns = vsri_sim_now(p.w) - t0;
  if (!rd.done) { /* cancel the read so the loop can go */
    vsri_io_cancel(p.b, &rd.c);
    wait_op(p.w, &rd, MS);
  }
  vsri_sim_heal(p.w);
  pair_close(&p);
}

static void t_keepalive(void **state) {
  (void)state;
  int32_t res;
  uint64_t ns;
  ka_case(false, true, &res, &ns);
  assert_int_equal(res, 1); /* still waiting after 10 s */
  ka_case(true, true, &res, &ns);
  assert_int_equal(res, -ECONNRESET);
  assert_true(ns <= 2000 * MS + 100 * MS); /* idle (2 s) from the last byte, then one RTT */
  ka_case(true, false, &res, &ns);
  assert_int_equal(res, -ETIMEDOUT);
  assert_true(ns <= 2000 * MS + 3 * 1000 * MS + 100 * MS);
}

/* Datagrams: each arrives whole and from its sender's address, or not at all; with loss and
 * duplication set, some are lost, some arrive twice, and independent delays reorder them. */
static void t_datagrams(void **state) {
  (void)state;
  struct vsri_sim_net net = {.dgram_loss_ppm = 100000, .dgram_dup_ppm = 50000,
                             .delay_min_ns = 100000, .delay_mean_ns = 2000000,
                             .dgram_queue_max = 4096};
  struct vsri_sim *w;
  assert_int_equal(vsri_sim_new(&w, 5, &net), 0);
  struct vsri_sim_host *ha = vsri_sim_host_new(w, "10.0.0.1");
  struct vsri_sim_host *hb = vsri_sim_host_new(w, "10.0.0.2");
  struct vsri_io *a, *b;
  assert_int_equal(vsri_sim_io_new(&a, ha, NULL), 0);
  assert_int_equal(vsri_sim_io_new(&b, hb, NULL), 0);
  int fa = vsri_io_socket(a, AF_INET, SOCK_DGRAM), fb = vsri_io_socket(b, AF_INET, SOCK_DGRAM);
  assert_true(fa >= 0 && fb >= 0);
  struct sockaddr_in la = sa("10.0.0.1", 5000), lb = sa("10.0.0.2", 6000);
  assert_int_equal(vsri_io_bind(a, fa, (struct sockaddr *)&la, sizeof la), 0);
  assert_int_equal(vsri_io_bind(b, fb, (struct sockaddr *)&lb, sizeof lb), 0);
  int zero = 0;
  assert_int_equal(vsri_io_setsockopt(a, fa, IPPROTO_UDP, 103 /* UDP_SEGMENT */, &zero,
                                      sizeof zero), -ENOPROTOOPT); /* no GSO: QUIC falls back */
  enum { N = 1000 };
  for (uint32_t i = 0; i < N; i++) {
    uint8_t pkt[64];
    memset(pkt, (int)(i & 0xff), sizeof pkt);
    memcpy(pkt, &i, sizeof i);
    struct iovec iov = {.iov_base = pkt, .iov_len = 16 + i % 48};
    struct msghdr mh = {.msg_name = &lb, .msg_namelen = sizeof lb, .msg_iov = &iov,
                        .msg_iovlen = 1};
    struct op s = {0};
    vsri_io_sendmsg(a, &s.c, fa, &mh, 0, op_cb, NULL);
    wait_op(w, &s, MS);
    assert_int_equal(s.res, (int32_t)iov.iov_len);
  }
  uint32_t seen[N] = {0}, got = 0, dups = 0, reordered = 0, last = 0;
  for (;;) {
    uint8_t buf[128];
    struct sockaddr_in from;
    struct iovec iov = {.iov_base = buf, .iov_len = sizeof buf};
    struct msghdr mh = {.msg_name = &from, .msg_namelen = sizeof from, .msg_iov = &iov,
                        .msg_iovlen = 1};
    struct op r = {0};
    vsri_io_recvmsg(b, &r.c, fb, &mh, 0, op_cb, NULL);
    uint64_t end = vsri_sim_now(w) + 1000 * MS;
    while (!r.done && vsri_sim_now(w) < end) {
      assert_int_equal(vsri_sim_run_until(w, vsri_sim_now(w) + MS), 0);
    }
    if (!r.done) {
      vsri_io_cancel(b, &r.c);
      wait_op(w, &r, MS);
      break;
    }
    uint32_t i;
    memcpy(&i, buf, sizeof i);
    assert_true(i < N);
    assert_int_equal(r.res, (int32_t)(16 + i % 48));
    for (int32_t k = sizeof i; k < r.res; k++) assert_int_equal(buf[k], (uint8_t)(i & 0xff));
    assert_int_equal(from.sin_port, la.sin_port);
    assert_int_equal(from.sin_addr.s_addr, la.sin_addr.s_addr);
    if (seen[i]++) dups++;
    if (i < last) reordered++;
    last = i;
    got++;
  }
  uint32_t distinct = 0;
  for (uint32_t i = 0; i < N; i++) distinct += seen[i] ? 1 : 0;
  struct vsri_sim_stats st;
  vsri_sim_stats(w, &st);
  assert_int_equal(got, st.dgrams);
  assert_int_equal(N - distinct, st.dgrams_lost); /* every missing one was counted lost */
  assert_int_equal(dups, st.dgrams_duplicated);
  assert_true(distinct < N);      /* some lost */
  assert_true(distinct > N / 2);  /* most arrive */
  assert_true(dups > 0);          /* some twice */
  assert_true(reordered > 0);     /* some out of order */
  /* A partition drops them all. */
  vsri_sim_partition(ha, hb, false);
  uint64_t lost0 = st.dgrams_lost;
  struct iovec iov = {.iov_base = "x", .iov_len = 1};
  struct msghdr mh = {.msg_name = &lb, .msg_namelen = sizeof lb, .msg_iov = &iov, .msg_iovlen = 1};
  struct op s = {0};
  vsri_io_sendmsg(a, &s.c, fa, &mh, 0, op_cb, NULL);
  wait_op(w, &s, MS);
  vsri_sim_stats(w, &st);
  assert_int_equal(st.dgrams_lost, lost0 + 1);
  close_fd(w, a, fa);
  close_fd(w, b, fb);
  vsri_io_del(a);
  vsri_io_del(b);
  vsri_sim_del(w);
}

/* Timers fire in virtual time: a 10-minute timeout fires at exactly now + 10 min. */
static void t_virtual_time(void **state) {
  (void)state;
  struct vsri_sim *w;
  assert_int_equal(vsri_sim_new(&w, 1, NULL), 0);
  struct vsri_sim_host *h = vsri_sim_host_new(w, "10.0.0.9");
  struct vsri_io *io;
  assert_int_equal(vsri_sim_io_new(&io, h, NULL), 0);
  uint64_t t0 = vsri_io_now(io);
  assert_int_equal(t0, vsri_sim_now(w));
  struct op t = {0};
  vsri_io_timeout(io, &t.c, 600000 * MS, op_cb, NULL);
  assert_int_equal(vsri_sim_run_until(w, t0 + 600000 * MS - 1), 0);
  assert_false(t.done);
  assert_int_equal(vsri_sim_run_until(w, t0 + 600000 * MS), 0);
  assert_true(t.done);
  assert_int_equal(t.res, 0);
  assert_int_equal(vsri_io_now(io), t0 + 600000 * MS);
  vsri_io_del(io);
  vsri_sim_del(w);
}

/* One seed, one trace: the same transfer twice gives the same hash; another seed differs. The
 * randomness hook draws from the world. */
static uint64_t trace_of(uint64_t seed, uint8_t rnd[16]) {
  struct vsri_sim_net net = {.window_min = 2048, .window_max = 8192, .segment_max = 1000};
  struct pair p;
  pair_open(&p, seed, &net);
  vsri_random_set_hook(vsri_sim_random_bytes, p.w);
  assert_int_equal(vsri_random_bytes(rnd, 16), 0);
  vsri_random_set_hook(NULL, NULL);
  size_t len = 64u << 10;
  uint8_t *src = calloc(1, len), *dst = malloc(len);
  uint32_t writes, reads;
  transfer(&p, src, len, dst, &writes, &reads);
  uint64_t h = vsri_sim_trace_hash(p.w);
  free(src);
  free(dst);
  pair_close(&p);
  return h;
}

static void t_deterministic(void **state) {
  (void)state;
  uint8_t r1[16], r2[16], r3[16];
  uint64_t a = trace_of(42, r1), b = trace_of(42, r2), c = trace_of(43, r3);
  assert_int_equal(a, b);
  assert_memory_equal(r1, r2, 16);
  assert_int_not_equal(a, c);
  assert_memory_not_equal(r1, r3, 16);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(t_stream_intact),     cmocka_unit_test(t_shutdown_eof),
      cmocka_unit_test(t_refused_and_timeout), cmocka_unit_test(t_partition_holds),
      cmocka_unit_test(t_crash_resets),      cmocka_unit_test(t_keepalive),
      cmocka_unit_test(t_datagrams),
      cmocka_unit_test(t_virtual_time),
      cmocka_unit_test(t_deterministic),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
