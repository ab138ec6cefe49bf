/* Teardown without a shutdown first (issue 13, item 3): everything runs on one loop the test
 * owns (buses, clients), on one thread, so the test sees exactly which callbacks ran and when.
 *
 * - vsr_bus_del on a bus with TCP and QUIC clients, frames in flight both ways, an
 *   authenticated replica link and a replica handshake in progress: no callback of that bus
 *   runs once the delete starts, every peer sees its connection closed, vsr_loop_del follows
 *   at once (ASan builds: nothing leaks).
 * - vsr_client_del with requests in flight: no client callback after, the bus sees each one
 *   go, the loop is deleted right after.
 * - Deleting a bus or a client from inside one of its own callbacks is refused (the
 *   documented rule): nothing is freed, the object keeps working, a later delete frees it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "harness.h"
#include "io/runtime.h"
#include "replica_harness.h"

#define T_TCP_CLIENTS 12
#define T_QUIC_CLIENTS 6
#define T_CLIENTS (T_TCP_CLIENTS + T_QUIC_CLIENTS)

struct t_bus {
  struct vsr_bus *bus;
  bool deleting;          /* vsr_bus_del has started on this bus */
  int events, messages;   /* callbacks before the delete */
  int late;               /* callbacks after the delete started: must stay 0 */
  int connected, authenticated, lost;
  bool echo;              /* send every client frame back */
  bool del_inside;        /* call vsr_bus_del from inside on_message, once */
  int del_inside_done;
};

struct t_client {
  struct vsr_client *c;
  bool deleting;
  int state;   /* last on_state status: 1 connected, < 0 closed */
  int frames;
  int late;    /* callbacks after vsr_client_del: must stay 0 */
  bool del_inside;
  int del_inside_done;
};

static void t_on_event(void *user, struct vsr_bus *bus, const struct vsr_peer_event *ev) {
  (void)bus;
  struct t_bus *t = user;
  if (t->deleting) {
    t->late++;
    return;
  }
  t->events++;
  if (ev->kind == VSR_PEER_CONNECTED) t->connected++;
  if (ev->kind == VSR_PEER_AUTHENTICATED) t->authenticated++;
  if (ev->kind == VSR_PEER_LOST) t->lost++;
}

static void t_on_message(void *user, struct vsr_bus *bus, enum vsr_plane plane, uint64_t peer,
                         struct vsr_msg *msg) {
  struct t_bus *t = user;
  if (t->deleting) {
    t->late++;
    return;
  }
  t->messages++;
  if (t->del_inside && !t->del_inside_done) {
    t->del_inside_done = 1;
    vsr_bus_del(bus); /* refused: we are inside this bus's callback */
  }
  if (t->echo && plane == VSR_PLANE_CLIENT) vsr_bus_send_to_client(bus, peer, msg);
}

static const struct vsr_bus_callbacks t_bus_cb = {.on_peer_event = t_on_event,
                                                  .on_message = t_on_message};

static void t_client_msg(void *user, struct vsr_client *c, struct vsr_msg *msg) {
  (void)msg;
  struct t_client *tc = user;
  if (tc->deleting) {
    tc->late++;
    return;
  }
  tc->frames++;
  if (tc->del_inside && !tc->del_inside_done) {
    tc->del_inside_done = 1;
    vsr_client_del(c); /* refused: inside this client's callback */
  }
}

static void t_client_state(void *user, struct vsr_client *c, int status) {
  (void)c;
  struct t_client *tc = user;
  if (tc->deleting) {
    tc->late++;
    return;
  }
  tc->state = status == 0 ? 1 : status;
}

static const struct vsr_client_callbacks t_client_cb = {.on_message = t_client_msg,
                                                        .on_state = t_client_state};

/* What the loop has run so far: a delete must not change it (no turn, no callback). */
static uint64_t t_loop_work(struct vsr_loop *loop) {
  struct vsri_io_stats st;
  vsri_io_stats(loop->io, &st);
  return st.callbacks + st.waits;
}

/* Runs |loop| until |done| holds, at most 20 s (a bound, not a threshold: the outcomes are
 * asserted after). */
static bool t_run_until(struct vsr_loop *loop, bool (*done)(void *), void *arg) {
  uint64_t end = vsrt_now() + 20 * H_SEC;
  while (!done(arg)) {
    if (vsrt_now() > end) return false;
    vsr_loop_run_once(loop, 5000000);
  }
  return true;
}

static struct vsr_msg *t_request(struct vsr_client *c, uint32_t size, uint32_t seq) {
  return h_frame(c, VSR_CMD_REQUEST, size, seq);
}

/* A Request of |size| bytes (number |seq|) sent by |c|: accepted. */
static void t_send(struct vsr_client *c, uint32_t size, uint32_t seq) {
  struct vsr_msg *m = t_request(c, size, seq);
  assert_non_null(m);
  assert_int_equal(vsr_client_send(c, m), 0);
  vsr_msg_unref(m);
}

static void t_bus_options(struct vsr_bus_options *o, struct vsr_loop *loop) {
  vsr_bus_options_default(o);
  o->loop = loop;
  o->client_tcp_addr = "127.0.0.1:0";
  o->quic.addr = "127.0.0.1:0";
  o->close_peer_timeout_ns = 2 * H_SEC;
  o->peer_queue_capacity = 1024;
}

static void t_client_options(struct vsr_client_options *o, bool quic, const char *addr) {
  vsr_client_options_default(o);
  o->transport = quic ? "quic" : "tcp";
  o->addr = addr;
  o->quic.insecure = true;
  o->quic.streams = VSR_QUIC_STREAMS_LONG; /* frames flow both ways on one stream */
}

/* T_CLIENTS clients on |loop|: T_TCP_CLIENTS on TCP to |tcp_addr|, the rest on QUIC. */
static void t_clients_new(struct vsr_loop *loop, struct t_client *cl, const char *tcp_addr,
                          const char *quic_addr) {
  for (int i = 0; i < T_CLIENTS; i++) {
    struct vsr_client_options co;
    bool quic = i >= T_TCP_CLIENTS;
    t_client_options(&co, quic, quic ? quic_addr : tcp_addr);
    assert_int_equal(vsr_client_new(&cl[i].c, loop, &co, &t_client_cb, &cl[i]), 0);
  }
}

/* Every client queues 64 Requests of 4 KiB bodies: traffic in flight. */
static void t_burst(struct t_client *cl) {
  for (int i = 0; i < T_CLIENTS; i++) {
    for (uint32_t k = 1; k <= 64; k++) t_send(cl[i].c, 256 + 4096, k);
  }
}

static struct vsr_loop *t_loop(void) {
  struct vsr_loop_options lo;
  vsr_loop_options_default(&lo);
  lo.pool.prealloc[0] = 64;
  lo.pool.prealloc[1] = 0;
  struct vsr_loop *loop = NULL;
  assert_int_equal(vsr_loop_new(&loop, &lo), 0);
  return loop;
}

/* ---- the whole bus at once ---------------------------------------------------------------- */

struct t_world {
  struct t_bus a, b; /* a: replica 1 with client listeners (deleted); b: replica 0 */
  struct t_client cl[T_CLIENTS];
  int raw; /* a TCP socket to a's replica port that never says Hello */
};

static bool t_all_connected(void *arg) {
  struct t_world *w = arg;
  for (int i = 0; i < T_CLIENTS; i++) {
    if (w->cl[i].state != 1) return false;
  }
  return w->a.authenticated == 1 && w->b.authenticated == 1;
}

static bool t_some_echoes(void *arg) {
  struct t_world *w = arg;
  for (int i = 0; i < T_CLIENTS; i++) {
    if (w->cl[i].frames < 1) return false;
  }
  return w->a.connected >= T_CLIENTS + 1; /* the clients and replica 0 */
}

static bool t_all_closed(void *arg) {
  struct t_world *w = arg;
  for (int i = 0; i < T_CLIENTS; i++) {
    if (w->cl[i].state >= 0) return false;
  }
  return w->b.lost >= 1;
}

/* The raw socket reads EOF or a reset: its half-done handshake was closed. */
static bool t_raw_closed(int fd) {
  char buf[512];
  for (;;) {
    ssize_t r = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (r == 0) return true;
    if (r < 0) return errno != EAGAIN && errno != EWOULDBLOCK;
  }
}

static void test_bus_del_mid_traffic(void **state) {
  (void)state;
  struct vsr_loop *loop = t_loop();
  struct t_world *w = calloc(1, sizeof *w);
  assert_non_null(w);
  w->a.echo = true;
  /* Bus a: replica 1 of 2 (accepts), clients on TCP and QUIC. */
  char a_addrs[2][64] = {"127.0.0.1:0", "127.0.0.1:0"};
  const char *a_ptrs[2] = {a_addrs[0], a_addrs[1]};
  struct vsr_bus_options o;
  t_bus_options(&o, loop);
  o.cluster_name = R_CLUSTER;
  o.replica_index = 1;
  o.replica_count = 2;
  o.replica_addrs = a_ptrs;
  o.secret = (const uint8_t *)r_secret_a;
  o.secret_len = sizeof r_secret_a - 1;
  assert_int_equal(vsr_bus_new(&w->a.bus, &o, &t_bus_cb, &w->a), 0);
  char tcp_addr[64], quic_addr[64], rep_addr[64];
  assert_int_equal(vsr_bus_listen_addr(w->a.bus, "tcp", tcp_addr, sizeof tcp_addr), 0);
  assert_int_equal(vsr_bus_listen_addr(w->a.bus, "quic", quic_addr, sizeof quic_addr), 0);
  assert_int_equal(vsr_bus_listen_addr(w->a.bus, "replica", rep_addr, sizeof rep_addr), 0);
  /* Bus b: replica 0 of 2, dials a. */
  const char *b_ptrs[2] = {"127.0.0.1:0", rep_addr};
  t_bus_options(&o, loop);
  o.client_tcp_addr = NULL;
  o.quic.addr = NULL;
  o.cluster_name = R_CLUSTER;
  o.replica_index = 0;
  o.replica_count = 2;
  o.replica_addrs = b_ptrs;
  o.secret = (const uint8_t *)r_secret_a;
  o.secret_len = sizeof r_secret_a - 1;
  assert_int_equal(vsr_bus_new(&w->b.bus, &o, &t_bus_cb, &w->b), 0);
  t_clients_new(loop, w->cl, tcp_addr, quic_addr);
  assert_true(t_run_until(loop, t_all_connected, w));
  struct vsr_bus_stats st0;
  /* A replica handshake in progress: connected, never says Hello (no event for it). */
  w->raw = vsrt_connect(rep_addr);
  assert_true(w->raw >= 0);
  for (int i = 0; i < 20; i++) vsr_loop_run_once(loop, 1000000);
  vsr_bus_stats(w->a.bus, &st0);
  assert_int_equal(st0.handshakes_inflight, 1);
  /* Frames both ways: a first round trip each, then bursts queued on both sides. */
  for (int i = 0; i < T_CLIENTS; i++) t_send(w->cl[i].c, 256 + 512, 0);
  assert_true(t_run_until(loop, t_some_echoes, w));
  t_burst(w->cl);
  vsr_loop_run_once(loop, 0); /* some of it moves: echoes are queued at the bus */
  vsr_loop_run_once(loop, 0);
  struct vsr_bus_stats st;
  vsr_bus_stats(w->a.bus, &st);
  assert_true(st.frames_in > T_CLIENTS); /* traffic was flowing when the bus went */
  /* The delete: no loop turn, no callback. */
  w->a.deleting = true;
  uint64_t work = t_loop_work(loop);
  vsr_bus_del(w->a.bus);
  w->a.bus = NULL;
  assert_int_equal(t_loop_work(loop), work); /* the delete ran no loop turn, no callback */
  assert_int_equal(w->a.late, 0);
  /* Every peer sees its connection closed: the clients (TCP: EOF or reset; QUIC:
   * CONNECTION_CLOSE), the replica on the other end of the link, the half-done handshake. */
  assert_true(t_run_until(loop, t_all_closed, w));
  for (int i = 0; i < T_CLIENTS; i++) {
    if (i >= T_TCP_CLIENTS) assert_int_equal(w->cl[i].state, VSR_ESHUTDOWN);
    else assert_true(w->cl[i].state < 0);
  }
  bool raw_closed = false;
  for (int i = 0; i < 400 && !raw_closed; i++) {
    raw_closed = t_raw_closed(w->raw);
    if (!raw_closed) vsr_loop_run_once(loop, 5000000);
  }
  assert_true(raw_closed);
  close(w->raw);
  assert_int_equal(w->a.late, 0);
  for (int i = 0; i < T_CLIENTS; i++) vsr_client_del(w->cl[i].c);
  w->b.deleting = true;
  vsr_bus_del(w->b.bus);
  assert_int_equal(w->b.late, 0);
  vsr_loop_del(loop); /* right after: nothing may still need it */
  free(w);
}

/* ---- clients deleted with requests in flight ---------------------------------------------- */

struct t_cworld {
  struct t_bus a;
  struct t_client cl[T_CLIENTS];
};

static bool t_c_connected(void *arg) {
  struct t_cworld *w = arg;
  for (int i = 0; i < T_CLIENTS; i++) {
    if (w->cl[i].state != 1) return false;
  }
  return true;
}

static bool t_c_echoed(void *arg) {
  struct t_cworld *w = arg;
  for (int i = 0; i < T_CLIENTS; i++) {
    if (w->cl[i].frames < 1) return false;
  }
  return w->a.connected == T_CLIENTS;
}

static bool t_c_lost(void *arg) {
  struct t_cworld *w = arg;
  return w->a.lost == T_CLIENTS;
}

static void test_client_del_in_flight(void **state) {
  (void)state;
  struct vsr_loop *loop = t_loop();
  struct t_cworld *w = calloc(1, sizeof *w);
  assert_non_null(w);
  w->a.echo = true;
  struct vsr_bus_options o;
  t_bus_options(&o, loop);
  assert_int_equal(vsr_bus_new(&w->a.bus, &o, &t_bus_cb, &w->a), 0);
  char tcp_addr[64], quic_addr[64];
  assert_int_equal(vsr_bus_listen_addr(w->a.bus, "tcp", tcp_addr, sizeof tcp_addr), 0);
  assert_int_equal(vsr_bus_listen_addr(w->a.bus, "quic", quic_addr, sizeof quic_addr), 0);
  t_clients_new(loop, w->cl, tcp_addr, quic_addr);
  assert_true(t_run_until(loop, t_c_connected, w));
  for (int i = 0; i < T_CLIENTS; i++) t_send(w->cl[i].c, 256, 0); /* QUIC: reports it */
  assert_true(t_run_until(loop, t_c_echoed, w));
  t_burst(w->cl);
  vsr_loop_run_once(loop, 0); /* writes start: requests in flight */
  vsr_loop_run_once(loop, 0);
  uint64_t work = t_loop_work(loop);
  for (int i = 0; i < T_CLIENTS; i++) {
    w->cl[i].deleting = true;
    vsr_client_del(w->cl[i].c);
  }
  assert_int_equal(t_loop_work(loop), work); /* no loop turn, no callback */
  /* The bus (on the same loop) sees every client go; no client callback runs again. */
  assert_true(t_run_until(loop, t_c_lost, w));
  for (int i = 0; i < T_CLIENTS; i++) assert_int_equal(w->cl[i].late, 0);
  struct vsr_bus_stats st;
  vsr_bus_stats(w->a.bus, &st);
  assert_int_equal(st.clients_active, 0);
  w->a.deleting = true;
  vsr_bus_del(w->a.bus);
  assert_int_equal(w->a.late, 0);
  vsr_loop_del(loop);
  free(w);
}

/* ---- deleting from inside a callback: refused ---------------------------------------------- */

static bool t_one_connected(void *arg) {
  struct t_client *tc = arg;
  return tc->state == 1;
}

static bool t_frames2(void *arg) {
  struct t_client *tc = arg;
  return tc->frames >= 2;
}

static void test_del_inside_callback_refused(void **state) {
  (void)state;
  for (int quic = 0; quic < 2; quic++) {
    struct vsr_loop *loop = t_loop();
    struct t_bus a = {.echo = true, .del_inside = true};
    struct vsr_bus_options o;
    t_bus_options(&o, loop);
    assert_int_equal(vsr_bus_new(&a.bus, &o, &t_bus_cb, &a), 0);
    char addr[64];
    assert_int_equal(vsr_bus_listen_addr(a.bus, quic ? "quic" : "tcp", addr, sizeof addr), 0);
    struct t_client tc = {.del_inside = true};
    struct vsr_client_options co;
    t_client_options(&co, quic, addr);
    assert_int_equal(vsr_client_new(&tc.c, loop, &co, &t_client_cb, &tc), 0);
    assert_true(t_run_until(loop, t_one_connected, &tc));
    for (uint32_t k = 0; k < 2; k++) t_send(tc.c, 256, k);
    /* Both deletes were tried from inside (the bus's on_message, the client's on_message) and
     * refused: both frames still made the round trip, the connection stayed up. */
    assert_true(t_run_until(loop, t_frames2, &tc));
    assert_int_equal(a.del_inside_done, 1);
    assert_int_equal(tc.del_inside_done, 1);
    assert_int_equal(a.messages, 2);
    assert_int_equal(tc.state, 1);
    assert_int_equal(vsr_client_state(tc.c), 1);
    /* Outside a callback the deletes work. */
    tc.deleting = true;
    vsr_client_del(tc.c);
    a.deleting = true;
    vsr_bus_del(a.bus);
    assert_int_equal(a.late, 0);
    assert_int_equal(tc.late, 0);
    vsr_loop_del(loop);
  }
}

/* ---- a shutdown started from inside a LOST event (QUIC) ---------------------------------- */

struct t_lost_shut {
  struct t_bus a;
  int started;
};

static void t_lost_shut_event(void *user, struct vsr_bus *bus, const struct vsr_peer_event *ev) {
  struct t_lost_shut *t = user;
  t_on_event(&t->a, bus, ev);
  /* Allowed from a callback: the listener closes while the lost connection is still inside
   * its own on_closed upcall. */
  if (ev->kind == VSR_PEER_LOST && !t->started) {
    t->started = 1;
    assert_int_equal(vsr_bus_shutdown_start(bus, 2 * H_SEC), 0);
  }
}

static const struct vsr_bus_callbacks t_lost_shut_cb = {.on_peer_event = t_lost_shut_event,
                                                        .on_message = NULL};

static bool t_lost_seen(void *arg) { return ((struct t_lost_shut *)arg)->a.lost >= 1; }
static bool t_bus_done(void *arg) { return vsr_bus_shutdown_done(((struct t_lost_shut *)arg)->a.bus); }

/* The client goes away (its CONNECTION_CLOSE: the server frees the connection and reports it
 * from the reaper), or the server closes it for a plane violation (the report comes as the
 * connection enters its closing period): either way the shutdown started from that LOST
 * event finishes, and the delete after it leaks nothing. */
static void test_shutdown_from_lost_event(void **state) {
  (void)state;
  for (int server_closes = 0; server_closes < 2; server_closes++) {
    struct vsr_loop *loop = t_loop();
    struct t_lost_shut t = {0};
    struct vsr_bus_options o;
    t_bus_options(&o, loop);
    o.client_tcp_addr = NULL;
    assert_int_equal(vsr_bus_new(&t.a.bus, &o, &t_lost_shut_cb, &t), 0);
    char addr[64];
    assert_int_equal(vsr_bus_listen_addr(t.a.bus, "quic", addr, sizeof addr), 0);
    struct t_client tc = {0};
    struct vsr_client_options co;
    t_client_options(&co, true, addr);
    assert_int_equal(vsr_client_new(&tc.c, loop, &co, &t_client_cb, &tc), 0);
    assert_true(t_run_until(loop, t_one_connected, &tc));
    struct vsr_msg *m = h_frame(tc.c, server_closes ? VSR_CMD_PREPARE : VSR_CMD_PING_CLIENT,
                                256, 1);
    assert_non_null(m);
    assert_int_equal(vsr_client_send(tc.c, m), 0);
    vsr_msg_unref(m);
    if (!server_closes) {
      for (int i = 0; i < 400 && t.a.connected == 0; i++) vsr_loop_run_once(loop, 5000000);
      assert_int_equal(t.a.connected, 1);
      tc.deleting = true;
      vsr_client_del(tc.c);
      tc.c = NULL;
    }
    assert_true(t_run_until(loop, t_lost_seen, &t));
    assert_int_equal(t.started, 1);
    assert_true(t_run_until(loop, t_bus_done, &t));
    if (tc.c) {
      tc.deleting = true;
      vsr_client_del(tc.c);
    }
    t.a.deleting = true;
    vsr_bus_del(t.a.bus);
    assert_int_equal(t.a.late, 0);
    vsr_loop_del(loop);
  }
}

int main(void) {
  vsrt_require_backend();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_bus_del_mid_traffic),
      cmocka_unit_test(test_client_del_in_flight),
      cmocka_unit_test(test_del_inside_callback_refused),
      cmocka_unit_test(test_shutdown_from_lost_event),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
