/* Client plane over TCP, end to end: round trips, big mixed streams, many clients, zero
 * allocations in steady state, and the reference's client-plane scenarios (tcp_client_roundtrip,
 * vectored_batch). Each test runs its own bus on a thread and talks to it with SDK clients. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "harness.h"

/* Starts |n| (its options set) and connects one blocking client to it. */
static struct vsr_client *start_with_client(struct h_node *n) {
  assert_int_equal(h_start(n), 0);
  struct vsr_client *c = h_client(n);
  assert_non_null(c);
  return c;
}

static void roundtrip_three_commands(void **state) {
  (void)state;
  struct h_node n;
  h_options(&n);
  n.mode = H_ECHO;
  struct vsr_client *c = start_with_client(&n);
  /* The three commands a client may send (replica-plane commands: it_plane_discipline). */
  const uint8_t cmds[] = {VSR_CMD_PING_CLIENT, VSR_CMD_PONG_CLIENT, VSR_CMD_REQUEST};
  const uint32_t sizes[] = {256, 256 + 1000, 256 + 77};
  for (int i = 0; i < 3; i++) {
    struct vsr_msg *m = h_frame(c, cmds[i], sizes[i], (uint32_t)i), *r = NULL;
    assert_non_null(m);
    assert_int_equal(vsr_client_call(c, m, &r, 5 * H_SEC), 0);
    assert_int_equal(r->size, m->size);
    assert_memory_equal(r->data, m->data, m->size);
    vsr_msg_unref(m);
    vsr_msg_unref(r);
  }
  vsr_client_del(c);
  h_stop(&n, true);
}

/* tcp_client_roundtrip: Request -> Reply; a client-plane command the application does not
 * expect (PongClient) is ignored, the link stays. Replica-plane commands close the connection
 * (it_plane_discipline). */
static void request_reply_and_unexpected_ignored(void **state) {
  (void)state;
  struct h_node n;
  h_options(&n);
  n.mode = H_SM;
  struct vsr_client *c = start_with_client(&n);
  struct vsr_msg *odd = h_frame(c, VSR_CMD_PONG_CLIENT, 256, 0);
  assert_int_equal(vsr_client_send(c, odd), 0);
  vsr_msg_unref(odd);
  struct vsr_msg *m = h_frame(c, VSR_CMD_REQUEST, 300, 41), *r = NULL;
  assert_int_equal(vsr_client_call(c, m, &r, 5 * H_SEC), 0);
  const struct vsr_reply_header *rp = (const struct vsr_reply_header *)r->data;
  assert_int_equal(rp->command, VSR_CMD_REPLY);
  assert_int_equal(rp->request, 42);
  assert_int_equal(rp->client.lo, 0x1234);
  assert_int_equal(r->size, 300);
  assert_memory_equal(r->data + 256, m->data + 256, 44);
  vsr_msg_unref(m);
  vsr_msg_unref(r);
  assert_int_equal(vsr_client_state(c), 1);
  vsr_client_del(c);
  h_stop(&n, true);
  assert_int_equal(h_count(&n, VSR_PEER_LOST), 1);
}

/* 1,000 frames of mixed sizes up to 1 MiB, pipelined: all come back in order, byte-exact. */
static void thousand_mixed_frames_in_order(void **state) {
  (void)state;
  struct h_node n;
  h_options(&n);
  n.mode = H_ECHO;
  n.opts.peer_queue_capacity = 1024;
  struct vsr_client *c = start_with_client(&n);
  uint32_t seed = 12345;
  enum { N = 1000 };
  static uint32_t sizes[N];
  for (int i = 0; i < N; i++) {
    seed = seed * 1103515245u + 12345u;
    uint32_t r = seed >> 8;
    sizes[i] = i % 50 == 0 ? (1u << 20) : 256 + r % (i % 7 == 0 ? 200000 : 3000);
    if (sizes[i] > (1u << 20)) sizes[i] = 1u << 20;
  }
  int sent = 0, got = 0;
  while (got < N) {
    /* Keep up to 64 in flight so memory stays bounded. */
    while (sent < N && sent - got < 64) {
      struct vsr_msg *m = h_frame(c, VSR_CMD_REQUEST, sizes[sent], (uint32_t)sent);
      assert_non_null(m);
      assert_int_equal(vsr_client_send(c, m), 0);
      vsr_msg_unref(m);
      sent++;
    }
    struct vsr_msg *r = NULL;
    assert_int_equal(vsr_client_recv(c, &r, 20 * H_SEC), 0);
    assert_int_equal(r->size, sizes[got]);
    assert_int_equal(vsr_get_u64(r->data + 168), (uint64_t)got + 1); /* request field */
    for (uint32_t i = 256; i < r->size; i += 997) {
      assert_int_equal(r->data[i], (uint8_t)((uint32_t)got * 31 + i));
    }
    assert_int_equal(r->data[r->size - 1], (uint8_t)((uint32_t)got * 31 + r->size - 1));
    vsr_msg_unref(r);
    got++;
  }
  vsr_client_del(c);
  h_stop(&n, true);
}

/* 200 clients connected at once, each gets its own replies. */
static void two_hundred_clients(void **state) {
  (void)state;
  struct h_node n;
  h_options(&n);
  n.mode = H_SM;
  assert_int_equal(h_start(&n), 0);
  struct vsr_loop *loop;
  assert_int_equal(vsr_loop_new(&loop, NULL), 0);
  enum { N = 200 };
  struct vsr_client *cs[N];
  struct vsr_client_options o;
  vsr_client_options_default(&o);
  o.addr = n.addr;
  for (int i = 0; i < N; i++) assert_int_equal(vsr_client_new(&cs[i], loop, &o, NULL, NULL), 0);
  for (int i = 0; i < N; i++) {
    struct vsr_msg *m = vsr_client_msg_new(cs[i], 256);
    m->data[60] = VSR_CMD_PING_CLIENT;
    vsr_put_u32(m->data + 128, (uint32_t)i);
    assert_int_equal(vsr_client_send(cs[i], m), 0);
    vsr_msg_unref(m);
  }
  /* Drive the shared client loop until each client has its pong (bounded). */
  int done = 0;
  uint64_t end = vsrt_now() + 30 * H_SEC;
  bool have[N] = {0};
  while (done < N && vsrt_now() < end) {
    vsr_loop_run_once(loop, 1000000);
    for (int i = 0; i < N; i++) {
      struct vsr_msg *r;
      if (have[i] || vsr_client_recv(cs[i], &r, 0) != 0) continue;
      assert_int_equal(r->data[60], VSR_CMD_PONG_CLIENT);
      assert_int_equal(vsr_get_u32(r->data + 128), (uint32_t)i);
      vsr_msg_unref(r);
      have[i] = true;
      done++;
    }
  }
  assert_int_equal(done, N);
  assert_int_equal(h_wait_events(&n, VSR_PEER_CONNECTED, N, 5 * H_SEC), N);
  for (int i = 0; i < N; i++) vsr_client_del(cs[i]);
  for (int i = 0; i < 200; i++) vsr_loop_run_once(loop, 1000000);
  vsr_loop_del(loop);
  assert_int_equal(h_wait_events(&n, VSR_PEER_LOST, N, 10 * H_SEC), N);
  h_stop(&n, true);
}

/* No allocation at all (pool or heap, either side) across 10,000 echo round trips. */
static void zero_allocations_steady_state(void **state) {
  (void)state;
  struct h_node n;
  h_options(&n);
  n.mode = H_ECHO;
  struct vsr_client *c = start_with_client(&n);
  struct vsr_pool_stats ps0, ps1;
  uint64_t a0 = 0;
  for (int i = -1000; i < 10000; i++) {
    if (i == 0) {
      a0 = vsr_alloc_count();
      vsr_pool_stats(vsr_loop_pool(vsr_client_loop(c)), &ps0);
    }
    struct vsr_msg *m = vsr_client_msg_new(c, 256 + (uint32_t)(i & 255)), *r = NULL;
    assert_non_null(m);
    m->data[60] = VSR_CMD_PING_CLIENT;
    assert_int_equal(vsr_client_call(c, m, &r, 5 * H_SEC), 0);
    vsr_msg_unref(m);
    vsr_msg_unref(r);
  }
  uint64_t a1 = vsr_alloc_count();
  vsr_pool_stats(vsr_loop_pool(vsr_client_loop(c)), &ps1);
  assert_int_equal(a1 - a0, 0);
  assert_int_equal(ps1.heap_allocs - ps0.heap_allocs, 0);
  assert_int_equal(ps1.reuses - ps0.reuses, 20000); /* request + reply buffer per trip */
  vsr_client_del(c);
  h_stop(&n, true);
}

/* vectored_batch: frames sent back to back leave in order and are coalesced into writes
 * of many frames (fewer write syscalls than frames). */
struct batch_arg {
  uint64_t client;
  int n;
  int sent;
};

static void batch_send_task(struct h_node *n, void *arg) {
  struct batch_arg *a = arg;
  for (int i = 0; i < a->n; i++) {
    struct vsr_msg *m = vsr_bus_msg_new(n->bus, 256);
    m->data[60] = VSR_CMD_PONG_CLIENT;
    vsr_put_u32(m->data + 128, (uint32_t)i);
    if (vsr_bus_send_to_client(n->bus, a->client, m) == 0) a->sent++;
    vsr_msg_unref(m);
  }
}

static void vectored_batch_in_order(void **state) {
  (void)state;
  struct h_node n;
  h_options(&n);
  n.mode = H_SILENT;
  struct vsr_client *c = start_with_client(&n);
  struct vsr_msg *hello = h_frame(c, VSR_CMD_PING_CLIENT, 256, 0);
  vsr_client_send(c, hello);
  vsr_client_flush(c, 5 * H_SEC);
  vsr_msg_unref(hello);
  uint64_t end = vsrt_now() + 5 * H_SEC;
  while (n.frames == 0 && vsrt_now() < end) usleep(1000);
  struct batch_arg a = {.client = n.last_client, .n = 200};
  h_run(&n, batch_send_task, &a);
  assert_int_equal(a.sent, 200);
  for (int i = 0; i < 200; i++) {
    struct vsr_msg *r;
    assert_int_equal(vsr_client_recv(c, &r, 5 * H_SEC), 0);
    assert_int_equal(vsr_get_u32(r->data + 128), (uint32_t)i);
    vsr_msg_unref(r);
  }
  vsr_client_del(c);
  h_stop(&n, true);
}

int main(void) {
  vsrt_require_backend();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(roundtrip_three_commands),
      cmocka_unit_test(request_reply_and_unexpected_ignored),
      cmocka_unit_test(thousand_mixed_frames_in_order),
      cmocka_unit_test(two_hundred_clients),
      cmocka_unit_test(zero_allocations_steady_state),
      cmocka_unit_test(vectored_batch_in_order),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
