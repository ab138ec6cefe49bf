/* Client plane under bad input and failure: every malformed frame gets its exact error and
 * closes only its own connection; backpressure; exactly-once loss notification; duplicate
 * client ids; graceful shutdown; head-of-line isolation; cleanup after an internal failure. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "harness.h"

#include "bus/bus_impl.h"

/* A 256-byte header with |cmd| and |size|, everything else zero. */
static void raw_header(uint8_t *h, uint8_t cmd, uint32_t size) {
  memset(h, 0, 256);
  h[60] = cmd;
  vsr_put_u32(h + 48, size);
}

/* One good client pings the node; asserts the reply comes back. */
static void good_client_still_served(struct vsr_client *c, uint32_t seq) {
  struct vsr_msg *m = vsr_client_msg_new(c, 256), *r = NULL;
  m->data[60] = VSR_CMD_PING_CLIENT;
  vsr_put_u32(m->data + 128, seq);
  assert_int_equal(vsr_client_call(c, m, &r, 5 * H_SEC), 0);
  assert_int_equal(r->data[60], VSR_CMD_PONG_CLIENT);
  assert_int_equal(vsr_get_u32(r->data + 128), seq);
  vsr_msg_unref(m);
  vsr_msg_unref(r);
}

enum bad_kind { BAD_SMALL, BAD_LARGE, BAD_FFFF, BAD_CMD30, BAD_CMD255, BAD_SEAL, BAD_EOF_HDR,
                BAD_EOF_BODY, BAD_CLEAN_EOF, BAD_KINDS };

static int bad_expected[BAD_KINDS] = {
    VSR_EFRAME_SMALL,   VSR_EFRAME_LARGE,    VSR_EFRAME_LARGE, VSR_EFRAME_COMMAND,
    VSR_EFRAME_COMMAND, VSR_EFRAME_CHECKSUM, VSR_EEOF_HEADER,  VSR_EEOF_BODY,
    VSR_ECLOSED,
};

/* Sends one good PingClient, then the bad input of |kind|. */
static void send_bad(int fd, enum bad_kind kind) {
  uint8_t h[256];
  raw_header(h, VSR_CMD_PING_CLIENT, 256);
  assert_true(vsrt_write_all(fd, h, 256)); /* accepted before the bad frame: must be delivered */
  switch (kind) {
  case BAD_SMALL: raw_header(h, VSR_CMD_REQUEST, 100); break;
  case BAD_LARGE: raw_header(h, VSR_CMD_REQUEST, (1u << 20) + 1); break;
  case BAD_FFFF: raw_header(h, VSR_CMD_REQUEST, 0xFFFFFFFFu); break;
  case BAD_CMD30: raw_header(h, 30, 256); break;
  case BAD_CMD255: raw_header(h, 255, 256); break;
  case BAD_SEAL:
    raw_header(h, VSR_CMD_COMMIT, 256);
    vsr_frame_seal(h);
    h[3] ^= 0x40; /* corrupt the seal */
    break;
  case BAD_EOF_HDR:
    raw_header(h, VSR_CMD_PING_CLIENT, 256);
    assert_true(vsrt_write_all(fd, h, 100));
    shutdown(fd, SHUT_WR);
    return;
  case BAD_EOF_BODY:
    raw_header(h, VSR_CMD_PING_CLIENT, 256 + 1000);
    assert_true(vsrt_write_all(fd, h, 256));
    assert_true(vsrt_write_all(fd, h, 200));
    shutdown(fd, SHUT_WR);
    return;
  case BAD_CLEAN_EOF:
    shutdown(fd, SHUT_WR);
    return;
  default: break;
  }
  assert_true(vsrt_write_all(fd, h, 256));
}

static void every_bad_frame_closes_only_its_connection(void **state) {
  (void)state;
  struct h_node n;
  h_options(&n);
  n.mode = H_SM;
  n.opts.max_message_size = 1u << 20;
  assert_int_equal(h_start(&n), 0);
  struct vsr_client *good = h_client(&n);
  assert_non_null(good);
  good_client_still_served(good, 1);
  for (int k = 0; k < BAD_KINDS; k++) {
    uint64_t frames_before = n.frames;
    int fd = h_raw(&n);
    assert_true(fd >= 0);
    send_bad(fd, (enum bad_kind)k);
    /* The node closes the connection: the pong of the good frame, then EOF. */
    long got = h_read_to_eof(fd);
    assert_int_equal(got, 256);
    close(fd);
    assert_int_equal(h_wait_events(&n, VSR_PEER_LOST, k + 1, 5 * H_SEC), k + 1);
    assert_int_equal(h_lost_reason(&n, k), bad_expected[k]);
    assert_true(n.frames >= frames_before + 1); /* the frame before the bad one arrived */
    good_client_still_served(good, 100 + (uint32_t)k);
  }
  vsr_client_del(good);
  h_stop(&n, true);
}

/* backpressure: a tiny queue that nobody drains: send returns VSR_EBACKPRESSURE at once. */
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

static void backpressure_never_blocks(void **state) {
  (void)state;
  struct h_node n;
  h_options(&n);
  n.mode = H_SILENT;
  n.opts.peer_queue_capacity = 4;
  assert_int_equal(h_start(&n), 0);
  int fd = h_raw(&n); /* never reads */
  assert_true(fd >= 0);
  struct h_flood_arg a = {.client = h_first_client(&n), .size = 256, .tries = 100};
  assert_true(a.client != 0);
  h_run(&n, h_flood_task, &a); /* all 100 sends inside one loop turn */
  assert_int_equal(a.ok, 4);
  assert_int_equal(a.backpressure, 96);
  assert_int_equal(a.other, 0);
  struct stats_arg s = {.client = a.client};
  h_run(&n, stats_task, &s);
  assert_int_equal(s.st.drops_backpressure, 96);
  assert_int_equal(s.ps.drops_backpressure, 96);
  assert_int_equal(s.ps.queue_capacity, 4);
  close(fd);
  h_stop(&n, true);
}

/* head_of_line: a peer that stops reading fills its queue; another peer is still served. */
static void slow_peer_does_not_block_others(void **state) {
  (void)state;
  struct h_node n;
  h_options(&n);
  n.mode = H_SM;
  n.opts.peer_queue_capacity = 16;
  n.opts.slow_peer_timeout_ns = 600 * H_SEC; /* stays stuck here; it_slow_peer closes it */
  assert_int_equal(h_start(&n), 0);
  int slow = h_raw(&n);
  int rcv = 4096;
  setsockopt(slow, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
  struct h_flood_arg a = {.client = h_first_client(&n), .size = 64 * 1024, .tries = 32};
  struct stats_arg s = {.client = a.client};
  /* Flood until the kernel buffers are full and the queue is full behind them. */
  for (int round = 0; round < 2000; round++) {
    h_run(&n, h_flood_task, &a);
    h_run(&n, stats_task, &s);
    if (s.ps.queue_depth == s.ps.queue_capacity) break;
    usleep(1000);
  }
  assert_int_equal(s.ps.queue_depth, s.ps.queue_capacity);
  assert_true(a.backpressure > 0);
  struct vsr_client *fast = h_client(&n);
  assert_non_null(fast);
  for (uint32_t i = 0; i < 100; i++) good_client_still_served(fast, i);
  h_run(&n, stats_task, &s);
  assert_int_equal(s.ps_err, 0);
  assert_true(s.ps.queue_depth > 0); /* the slow peer is still stuck */
  vsr_client_del(fast);
  close(slow);
  h_stop(&n, false);
}

/* connection_lost_notify: reader and writer both see the reset: one LOST event. */
static void connection_lost_notified_once(void **state) {
  (void)state;
  struct h_node n;
  h_options(&n);
  n.mode = H_SILENT;
  n.opts.peer_queue_capacity = 1024;
  assert_int_equal(h_start(&n), 0);
  int fd = h_raw(&n);
  struct h_flood_arg a = {.client = h_first_client(&n), .size = 64 * 1024, .tries = 1024};
  h_run(&n, h_flood_task, &a); /* the writer is busy when the peer resets */
  struct linger lg = {1, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  close(fd); /* RST */
  assert_int_equal(h_wait_events(&n, VSR_PEER_LOST, 1, 5 * H_SEC), 1);
  int r = h_lost_reason(&n, 0);
  assert_true(r == VSR_ERESET || r == VSR_EWRITE || r == VSR_ECLOSED);
  /* Run the loop a while longer: no second notification may appear. */
  struct stats_arg s = {0};
  for (int i = 0; i < 50; i++) h_run(&n, stats_task, &s);
  assert_int_equal(h_count(&n, VSR_PEER_LOST), 1);
  assert_int_equal(s.st.clients_active, 0);
  h_stop(&n, true);
}

/* duplicate_client_id: the second connection with a taken id is dropped; the first lives. */
static void force_id_task(struct h_node *n, void *arg) {
  vsri_bus_force_next_client_id(n->bus, *(uint64_t *)arg);
}

static void duplicate_client_id_keeps_first(void **state) {
  (void)state;
  struct h_node n;
  h_options(&n);
  n.mode = H_SM;
  assert_int_equal(h_start(&n), 0);
  struct vsr_client *first = h_client(&n);
  assert_non_null(first);
  uint64_t id = h_first_client(&n);
  h_run(&n, force_id_task, &id);
  uint64_t frames_before = n.frames;
  int dup = h_raw(&n);
  uint8_t h[256];
  raw_header(h, VSR_CMD_PING_CLIENT, 256);
  assert_true(vsrt_write_all(dup, h, 256));
  assert_int_equal(h_read_to_eof(dup), 0); /* dropped, nothing delivered to it */
  close(dup);
  good_client_still_served(first, 7);
  assert_int_equal(n.frames, frames_before + 1); /* only the first client's ping */
  struct stats_arg s = {.client = id};
  h_run(&n, stats_task, &s);
  assert_int_equal(s.st.clients_refused, 1);
  assert_int_equal(s.ps_err, 0);
  vsr_client_del(first);
  h_stop(&n, true);
}

/* graceful_shutdown: frames queued before shutdown all reach their clients, then EOF. */
struct queue_arg {
  uint64_t ids[4];
  int per_client;
  int ok;
};

static void queue_then_stop_task(struct h_node *n, void *arg) {
  struct queue_arg *a = arg;
  for (int c = 0; c < 4; c++) {
    for (int i = 0; i < a->per_client; i++) {
      struct vsr_msg *m = vsr_bus_msg_new(n->bus, 256 + 4096);
      m->data[60] = VSR_CMD_PONG_CLIENT;
      vsr_put_u32(m->data + 128, (uint32_t)i);
      if (vsr_bus_send_to_client(n->bus, a->ids[c], m) == 0) a->ok++;
      vsr_msg_unref(m);
    }
  }
  atomic_store(&n->stop, 1); /* shut down right after, in the same turn */
}

static void shutdown_delivers_queued_frames(void **state) {
  (void)state;
  struct h_node n;
  h_options(&n);
  n.mode = H_SILENT;
  n.opts.peer_queue_capacity = 256;
  assert_int_equal(h_start(&n), 0);
  int fds[4];
  for (int c = 0; c < 4; c++) fds[c] = h_raw(&n);
  assert_int_equal(h_wait_events(&n, VSR_PEER_CONNECTED, 4, 5 * H_SEC), 4);
  struct queue_arg a = {.per_client = 200};
  for (int c = 0; c < 4; c++) a.ids[c] = n.events[c].id;
  pthread_mutex_lock(&n.mu);
  n.task = queue_then_stop_task;
  n.task_arg = &a;
  pthread_mutex_unlock(&n.mu);
  for (int c = 0; c < 4; c++) {
    long got = h_read_to_eof(fds[c]);
    assert_int_equal(got, 200L * (256 + 4096));
    close(fds[c]);
  }
  pthread_join(n.thread, NULL);
  assert_int_equal(a.ok, 800);
  assert_int_equal(n.shutdown_result, 0);
  assert_int_equal(h_count(&n, VSR_PEER_LOST), 4);
  for (int i = 0; i < 4; i++) assert_int_equal(h_lost_reason(&n, i), VSR_ESHUTDOWN);
}

/* installer_panic_cleanup: an internal failure (no buffer for a frame: it exceeds memory_max)
 * closes the connection, evicts its registry slot and reports the loss. */
static void internal_failure_cleans_up(void **state) {
  (void)state;
  struct h_node n;
  h_options(&n);
  n.mode = H_SM;
  n.opts.loop_options.pool.prealloc[0] = 16;
  n.opts.loop_options.pool.prealloc[1] = 0;
  n.opts.memory_max = 16u << 20; /* a 32 MiB frame cannot get a buffer */
  n.opts.client_memory_budget = 16u << 20;
  assert_int_equal(h_start(&n), 0);
  int fd = h_raw(&n);
  uint64_t id = h_first_client(&n);
  uint8_t h[256];
  raw_header(h, VSR_CMD_PING_CLIENT, 32u << 20);
  assert_true(vsrt_write_all(fd, h, 256));
  assert_int_equal(h_read_to_eof(fd), 0);
  close(fd);
  assert_int_equal(h_wait_events(&n, VSR_PEER_LOST, 1, 5 * H_SEC), 1);
  assert_int_equal(h_lost_reason(&n, 0), VSR_EMEMORY_MAX);
  struct stats_arg s = {.client = id};
  h_run(&n, stats_task, &s);
  assert_int_equal(s.ps_err, VSR_ENOTCONN); /* slot evicted */
  assert_int_equal(s.st.clients_active, 0);
  struct vsr_client *c = h_client(&n); /* the node still serves */
  assert_non_null(c);
  good_client_still_served(c, 3);
  vsr_client_del(c);
  h_stop(&n, true);
}

int main(void) {
  vsrt_require_backend();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(every_bad_frame_closes_only_its_connection),
      cmocka_unit_test(backpressure_never_blocks),
      cmocka_unit_test(slow_peer_does_not_block_others),
      cmocka_unit_test(connection_lost_notified_once),
      cmocka_unit_test(duplicate_client_id_keeps_first),
      cmocka_unit_test(shutdown_delivers_queued_frames),
      cmocka_unit_test(internal_failure_cleans_up),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
