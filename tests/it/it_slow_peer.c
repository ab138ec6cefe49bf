/* Slow consumers: clients that send 64 KiB Requests and never read are closed with
 * VSR_ESLOW_PEER once their queue has stayed full for slow_peer_timeout (on a refused send, or by
 * the sweep when nobody sends any more), counted in the stats, while every other client is
 * served; refused frames are counted per peer; the byte budget refuses like a full queue. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "harness.h"
#include "hostile.h"

#define REQ_SIZE (64u * 1024 + 256)

struct stats_arg {
  struct vsr_bus_stats st;
  struct vsr_peer_stats ps;
  uint64_t client;
  int ps_err;
};

static void stats_task(struct h_node *n, void *arg) {
  struct stats_arg *a = arg;
  vsr_bus_stats(n->bus, &a->st);
  a->ps_err = vsr_bus_peer_stats(n->bus, VSR_PLANE_CLIENT, a->client, &a->ps);
}

static struct stats_arg stats_of(struct h_node *n, uint64_t client) {
  struct stats_arg a = {.client = client};
  h_run(n, stats_task, &a);
  return a;
}

static int lost_with(struct h_node *n, int reason) {
  pthread_mutex_lock(&n->mu);
  int c = 0;
  for (int i = 0; i < n->nevents; i++) {
    c += n->events[i].kind == VSR_PEER_LOST && n->events[i].reason == reason;
  }
  pthread_mutex_unlock(&n->mu);
  return c;
}

/* One 64 KiB Request from a good client; asserts its Reply. */
static void good_request(struct vsr_client *c, uint32_t seq) {
  struct vsr_msg *m = h_frame(c, VSR_CMD_REQUEST, REQ_SIZE, seq), *r = NULL;
  assert_non_null(m);
  assert_int_equal(vsr_client_call(c, m, &r, 10 * H_SEC), 0);
  assert_int_equal(r->data[60], VSR_CMD_REPLY);
  assert_int_equal(r->size, REQ_SIZE);
  assert_int_equal(((struct vsr_reply_header *)r->data)->request, seq + 1); /* echoed */
  vsr_msg_unref(m);
  vsr_msg_unref(r);
}

/* The attack of the issue: 10 clients send 64 KiB Requests and never read. Each is closed as a
 * slow peer; a good client's Requests are all answered meanwhile. */
static void clients_that_never_read_are_closed_as_slow(void **state) {
  (void)state;
  struct h_node n;
  h_options(&n);
  n.mode = H_SM;
  n.opts.peer_queue_capacity = 8;
  n.opts.slow_peer_timeout_ns = 200000000ull;
  assert_int_equal(h_start(&n), 0);
  struct ho_slow slow;
  assert_int_equal(ho_slow_start(&slow, n.addr, 10, REQ_SIZE, 30 * H_SEC), 0);
  struct vsr_client *good = h_client(&n);
  assert_non_null(good);
  uint32_t served = 0;
  for (uint32_t i = 0; i < 40; i++, served++) good_request(good, i);
  assert_int_equal(served, 40); /* 100 %, during the attack */
  assert_int_equal(ho_slow_join(&slow), 10);
  assert_int_equal(h_wait_events(&n, VSR_PEER_LOST, 10, 10 * H_SEC), 10);
  assert_int_equal(lost_with(&n, VSR_ESLOW_PEER), 10);
  good_request(good, 99); /* still served after the attack */
  struct stats_arg s = stats_of(&n, 0);
  assert_int_equal(s.st.slow_peers_closed, 10);
  assert_int_equal(s.st.errors[-VSR_ESLOW_PEER], 10);
  assert_true(s.st.drops_backpressure >= 10); /* at least one refused Reply each */
  assert_int_equal(s.st.clients_active, 1);
  vsr_client_del(good);
  h_stop(&n, true);
}

/* A stuck client under a long timeout stays connected: its refused Replies are counted on the
 * peer (and add up to the bus total) and its queue reports how long it has been full. */
static void refused_frames_counted_per_peer(void **state) {
  (void)state;
  struct h_node n;
  h_options(&n);
  n.mode = H_SM;
  n.opts.peer_queue_capacity = 8;
  n.opts.slow_peer_timeout_ns = 600 * H_SEC;
  assert_int_equal(h_start(&n), 0);
  struct ho_slow slow;
  assert_int_equal(ho_slow_start(&slow, n.addr, 1, REQ_SIZE, 30 * H_SEC), 0);
  uint64_t id = h_first_client(&n);
  assert_true(id != 0);
  struct stats_arg s = {0};
  uint64_t end = vsrt_now() + 20 * H_SEC;
  while (vsrt_now() < end) {
    s = stats_of(&n, id);
    /* Until the client's receive window has closed for good its kernel still takes a little
     * now and then, and a write can empty the queue for a moment after refusals: wait for
     * the state where it stays full. */
    if (s.ps.drops_backpressure >= 5 && s.ps.queue_depth > s.ps.queue_capacity / 2) break;
    usleep(2000);
  }
  assert_int_equal(s.ps_err, 0);
  assert_true(s.ps.drops_backpressure >= 5);
  assert_int_equal(s.ps.drops_backpressure, s.st.drops_backpressure); /* the only peer */
  assert_true(s.ps.queue_full_ns > 0);
  assert_true(s.ps.queue_depth > s.ps.queue_capacity / 2);
  assert_true(s.ps.queue_bytes >= (uint64_t)s.ps.queue_depth * REQ_SIZE);
  assert_int_equal(s.st.slow_peers_closed, 0);
  atomic_store(&slow.stop, 1);
  ho_slow_join(&slow);
  h_stop(&n, false);
}

/* The buffer bytes a frame of |size| holds in a pool made with |o|. */
static uint64_t capacity_of(const struct vsr_pool_options *o, uint32_t size) {
  struct vsr_pool *pool;
  assert_int_equal(vsr_pool_new(&pool, o), 0);
  struct vsr_msg *m = vsr_pool_get(pool, size);
  assert_non_null(m);
  uint64_t cap = m->capacity;
  vsr_msg_unref(m);
  vsr_pool_del(pool);
  return cap;
}

/* peer_queue_bytes_max (buffer bytes held) refuses like a full queue; an empty queue still takes
 * one frame larger than the budget. */
static void byte_budget_refuses_like_a_full_queue(void **state) {
  (void)state;
  struct h_node n;
  h_options(&n);
  n.mode = H_SILENT;
  n.opts.peer_queue_capacity = 256;
  n.opts.peer_queue_bytes_max = 4 * capacity_of(&n.opts.loop_options.pool, REQ_SIZE);
  n.opts.slow_peer_timeout_ns = 600 * H_SEC;
  assert_int_equal(h_start(&n), 0);
  int fd = ho_connect_small(n.addr); /* never reads */
  assert_true(fd >= 0);
  struct h_flood_arg a = {.client = h_first_client(&n), .size = REQ_SIZE, .tries = 10};
  assert_true(a.client != 0);
  h_run(&n, h_flood_task, &a);
  assert_int_equal(a.ok, 4);
  assert_int_equal(a.backpressure, 6);
  assert_int_equal(a.other, 0);
  struct stats_arg s = stats_of(&n, a.client);
  assert_int_equal(s.ps.drops_backpressure, 6);
  close(fd);

  /* A second client: one frame over the budget goes into its empty queue, the next does not. */
  int fd2 = ho_connect_small(n.addr);
  assert_true(fd2 >= 0);
  assert_int_equal(h_wait_events(&n, VSR_PEER_CONNECTED, 2, 5 * H_SEC), 2);
  pthread_mutex_lock(&n.mu);
  uint64_t second = 0;
  for (int i = 0; i < n.nevents; i++) {
    if (n.events[i].kind == VSR_PEER_CONNECTED && n.events[i].id != a.client) {
      second = n.events[i].id;
    }
  }
  pthread_mutex_unlock(&n.mu);
  uint32_t big = (uint32_t)n.opts.peer_queue_bytes_max + 4096;
  assert_true(capacity_of(&n.opts.loop_options.pool, big) > n.opts.peer_queue_bytes_max);
  struct h_flood_arg b = {.client = second, .size = big, .tries = 2};
  h_run(&n, h_flood_task, &b);
  assert_int_equal(b.ok, 1);
  assert_int_equal(b.backpressure, 1);
  close(fd2);
  h_stop(&n, false);
}

/* A client whose queue filled while the application was sending, after which nothing more is
 * sent to it: only the sweep can notice, and it closes the client. */
static void stuck_peer_closed_by_the_sweep(void **state) {
  (void)state;
  struct h_node n;
  h_options(&n);
  n.mode = H_SILENT;
  n.opts.peer_queue_capacity = 8;
  n.opts.slow_peer_timeout_ns = 200000000ull;
  assert_int_equal(h_start(&n), 0);
  int fd = ho_connect_small(n.addr); /* never reads */
  assert_true(fd >= 0);
  struct h_flood_arg a = {.client = h_first_client(&n), .size = REQ_SIZE, .tries = 16};
  assert_true(a.client != 0);
  /* Until, a loop turn after the last send, the queue is still full and refusing: the kernel's
   * buffers are full and the queue stays full behind them. */
  struct stats_arg s = {0};
  for (int round = 0; round < 2000; round++) {
    h_run(&n, h_flood_task, &a);
    usleep(1000);
    s = stats_of(&n, a.client);
    if (s.ps.queue_depth == s.ps.queue_capacity && s.ps.queue_full_ns > 0) break;
  }
  assert_int_equal(s.ps.queue_depth, s.ps.queue_capacity);
  assert_int_equal(a.other, 0);
  /* No more sends from here on. */
  assert_int_equal(h_wait_events(&n, VSR_PEER_LOST, 1, 10 * H_SEC), 1);
  assert_int_equal(h_lost_reason(&n, 0), VSR_ESLOW_PEER);
  s = stats_of(&n, 0);
  assert_int_equal(s.st.slow_peers_closed, 1);
  assert_true(s.st.drops_on_close > 0); /* its queue was dropped, and counted */
  close(fd);
  h_stop(&n, true);
}

/* A client that reads again in time is not closed: the episode ends when its queue drains. */
static void peer_that_reads_again_stays(void **state) {
  (void)state;
  struct h_node n;
  h_options(&n);
  n.mode = H_SILENT;
  n.opts.peer_queue_capacity = 8;
  n.opts.slow_peer_timeout_ns = 600 * H_SEC; /* only the drain may end the episode */
  assert_int_equal(h_start(&n), 0);
  int fd = ho_connect_small(n.addr);
  assert_true(fd >= 0);
  struct h_flood_arg a = {.client = h_first_client(&n), .size = REQ_SIZE, .tries = 16};
  struct stats_arg s = {0};
  for (int round = 0; round < 2000; round++) {
    h_run(&n, h_flood_task, &a);
    usleep(1000);
    s = stats_of(&n, a.client);
    if (s.ps.queue_depth == s.ps.queue_capacity && s.ps.queue_full_ns > 0) break;
  }
  assert_true(a.backpressure > 0);
  assert_true(s.ps.queue_full_ns > 0);
  /* Read everything that was accepted: the queue drains, a send succeeds, the episode ends. */
  struct timeval tv = {10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  static uint8_t buf[REQ_SIZE];
  for (int i = 0; i < a.ok; i++) assert_int_equal(ho_read_frame(fd, buf, sizeof buf), REQ_SIZE);
  struct h_flood_arg b = {.client = a.client, .size = 256, .tries = 1};
  h_run(&n, h_flood_task, &b);
  assert_int_equal(b.ok, 1);
  s = stats_of(&n, a.client);
  assert_int_equal(s.ps_err, 0);
  assert_int_equal(s.ps.queue_full_ns, 0);
  assert_int_equal(h_count(&n, VSR_PEER_LOST), 0);
  close(fd);
  h_stop(&n, false);
}

int main(void) {
  vsrt_require_backend();
  signal(SIGPIPE, SIG_IGN);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(clients_that_never_read_are_closed_as_slow),
      cmocka_unit_test(refused_frames_counted_per_peer),
      cmocka_unit_test(byte_budget_refuses_like_a_full_queue),
      cmocka_unit_test(stuck_peer_closed_by_the_sweep),
      cmocka_unit_test(peer_that_reads_again_stays),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
