/* Non-blocking shutdown on a caller-owned loop, on each io backend: vsr_bus_shutdown_start
 * returns at once, the caller drives the loop until vsr_bus_shutdown_done, and the frames
 * queued before the start reach the peer byte for byte before the connection closes. The
 * blocking vsr_bus_shutdown refuses a loop it does not own, and deleting a done bus runs no
 * callback. Every wait is bounded. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "vsrbus/vsrbus.h"

#define S_SEC 1000000000ull
#define S_MS 1000000ull
#define S_FRAMES 8
#define S_SIZE 4096u

struct s_backend {
  const char *label;
  enum vsr_io_backend kind;
};

static struct s_backend s_epoll = {"epoll", VSR_IO_EPOLL};
static struct s_backend s_uring = {"io_uring", VSR_IO_URING};

struct s_env {
  struct vsr_loop *loop;
  struct vsr_bus *bus;
  char addr[64];
  uint64_t client_id;
  int connected, lost, lost_reason;
  bool in_del;     /* set around vsr_bus_del */
  int cb_in_del;   /* callbacks that ran while in_del */
};

static void s_on_peer_event(void *user, struct vsr_bus *bus, const struct vsr_peer_event *ev) {
  (void)bus;
  struct s_env *e = user;
  if (e->in_del) e->cb_in_del++;
  if (ev->kind == VSR_PEER_CONNECTED && ev->plane == VSR_PLANE_CLIENT) {
    e->connected++;
    e->client_id = ev->id;
  } else if (ev->kind == VSR_PEER_LOST) {
    e->lost++;
    e->lost_reason = ev->reason;
  }
}

static void s_on_message(void *user, struct vsr_bus *bus, enum vsr_plane plane, uint64_t peer,
                         struct vsr_msg *msg) {
  (void)bus;
  (void)plane;
  (void)peer;
  (void)msg;
  struct s_env *e = user;
  if (e->in_del) e->cb_in_del++;
}

/* A loop on backend |b| (the test is skipped where io_uring is missing) and a bus on it with a
 * TCP client listener on any port. */
static void s_start(struct s_env *e, const struct s_backend *b) {
  memset(e, 0, sizeof *e);
  struct vsr_loop_options lo;
  vsr_loop_options_default(&lo);
  lo.backend = b->kind;
  int err = vsr_loop_new(&e->loop, &lo);
  if (err == VSR_EUNSUPPORTED && b->kind == VSR_IO_URING) {
    print_message("skip %s: io_uring unavailable here\n", b->label);
    skip();
  }
  assert_int_equal(err, 0);
  struct vsr_bus_options o;
  vsr_bus_options_default(&o);
  o.loop = e->loop;
  o.client_tcp_addr = "127.0.0.1:0";
  struct vsr_bus_callbacks cb = {.on_message = s_on_message, .on_peer_event = s_on_peer_event};
  assert_int_equal(vsr_bus_new(&e->bus, &o, &cb, e), 0);
}

/* A TCP client connected to the bus, once the bus reported it (bounded wait). */
static int s_client(struct s_env *e) {
  int fd = vsrt_connect(e->addr);
  assert_true(fd >= 0);
  uint64_t end = vsrt_now() + 5 * S_SEC;
  while (e->connected == 0) {
    assert_true(vsrt_now() < end);
    vsr_bus_run_once(e->bus, (int64_t)(10 * S_MS));
  }
  return fd;
}

/* Deletes the bus; no callback may run from inside the delete. */
static void s_del(struct s_env *e) {
  e->in_del = true;
  vsr_bus_del(e->bus);
  e->in_del = false;
  assert_int_equal(e->cb_in_del, 0);
}

static void drained_at_peer_byte_exact(void **state) {
  const struct s_backend *b = *state;
  struct s_env e;
  s_start(&e, b);
  assert_int_equal(vsr_bus_listen_addr(e.bus, "tcp", e.addr, sizeof e.addr), 0);
  assert_false(vsr_bus_shutdown_done(e.bus));
  /* The loop is the caller's: the blocking helper refuses and starts nothing. */
  assert_int_equal(vsr_bus_shutdown(e.bus, S_SEC), VSR_EINVAL);
  assert_false(vsr_bus_shutdown_done(e.bus));

  int fd = s_client(&e);
  static uint8_t want[S_FRAMES * S_SIZE];
  for (uint32_t i = 0; i < S_FRAMES; i++) {
    struct vsr_msg *m = vsr_bus_msg_new(e.bus, S_SIZE);
    assert_non_null(m);
    m->data[60] = VSR_CMD_PING;
    for (uint32_t k = VSR_HEADER_SIZE; k < S_SIZE; k++) m->data[k] = (uint8_t)(i * 31u + k);
    vsr_frame_seal(m->data);
    memcpy(want + (size_t)i * S_SIZE, m->data, S_SIZE);
    assert_int_equal(vsr_bus_send_to_client(e.bus, e.client_id, m), 0);
    vsr_msg_unref(m);
  }
  /* Returns at once, with the frames still queued (no loop turn ran since they were sent). */
  assert_int_equal(vsr_bus_shutdown_start(e.bus, 2 * S_SEC), 0);
  assert_false(vsr_bus_shutdown_done(e.bus));
  assert_int_equal(vsr_bus_shutdown_start(e.bus, 2 * S_SEC), 0); /* again: no-op */
  uint64_t end = vsrt_now() + 5 * S_SEC;
  while (!vsr_bus_shutdown_done(e.bus)) {
    assert_true(vsrt_now() < end);
    vsr_bus_run_once(e.bus, (int64_t)(10 * S_MS));
  }
  assert_int_equal(e.lost, 1);
  assert_int_equal(e.lost_reason, VSR_ESHUTDOWN);
  struct vsr_bus_stats bs;
  vsr_bus_stats(e.bus, &bs);
  assert_int_equal(bs.frames_out, S_FRAMES);
  assert_int_equal(bs.bytes_out, (uint64_t)S_FRAMES * S_SIZE);

  /* The peer got every byte, in order, then the end of the stream. */
  static uint8_t got[S_FRAMES * S_SIZE + 1];
  size_t n = 0;
  for (;;) {
    ssize_t r = recv(fd, got + n, sizeof got - n, 0);
    assert_true(r >= 0);
    if (r == 0) break;
    n += (size_t)r;
    assert_true(n <= sizeof want);
  }
  assert_int_equal(n, sizeof want);
  assert_memory_equal(got, want, sizeof want);
  close(fd);

  /* A done bus is freed without a loop turn: no callback runs inside vsr_bus_del. */
  s_del(&e);
  struct vsr_pool_stats ps;
  vsr_pool_stats(vsr_loop_pool(e.loop), &ps);
  assert_int_equal(ps.live, 0);
  vsr_loop_del(e.loop);
}

/* vsr_bus_del of a bus that was not shut down, with a client connected and frames queued:
 * nothing reaches the callbacks from inside the delete, the queued frames go back to the pool,
 * the peer sees its connection end, and (ASan build) nothing leaks. */
static void del_not_done_calls_back_nothing(void **state) {
  const struct s_backend *b = *state;
  struct s_env e;
  s_start(&e, b);
  assert_int_equal(vsr_bus_listen_addr(e.bus, "tcp", e.addr, sizeof e.addr), 0);
  int fd = s_client(&e);
  for (uint32_t i = 0; i < S_FRAMES; i++) {
    struct vsr_msg *m = vsr_bus_msg_new(e.bus, S_SIZE);
    assert_non_null(m);
    m->data[60] = VSR_CMD_PING;
    vsr_frame_seal(m->data);
    assert_int_equal(vsr_bus_send_to_client(e.bus, e.client_id, m), 0);
    vsr_msg_unref(m);
  }
  assert_false(vsr_bus_shutdown_done(e.bus));
  s_del(&e);
  assert_int_equal(e.lost, 0); /* the LOST of a deleted bus is not reported */
  struct vsr_pool_stats ps;
  vsr_pool_stats(vsr_loop_pool(e.loop), &ps);
  assert_int_equal(ps.live, 0);
  /* The peer's stream ends (whatever part of the queue got out first). */
  uint8_t buf[4096];
  ssize_t r;
  while ((r = recv(fd, buf, sizeof buf, 0)) > 0) {
  }
  assert_true(r == 0 || (r < 0 && errno == ECONNRESET));
  close(fd);
  vsr_loop_del(e.loop);
}

/* An idle bus (no connection) on the caller's loop: start, drive until done, delete; the
 * listener's closing completions are over before done (ASan: no use after free, no leak). */
static void idle_start_done_del(void **state) {
  const struct s_backend *b = *state;
  struct s_env e;
  s_start(&e, b);
  assert_int_equal(vsr_bus_shutdown_start(e.bus, S_SEC), 0);
  int turns = 0;
  while (!vsr_bus_shutdown_done(e.bus)) {
    assert_true(turns++ < 100); /* bounded by a count, not a clock */
    vsr_bus_run_once(e.bus, (int64_t)(10 * S_MS));
  }
  s_del(&e);
  assert_int_equal(e.connected + e.lost, 0);
  vsr_loop_del(e.loop);
}

#define S_BOTH(fn) \
  cmocka_unit_test_prestate(fn, &s_epoll), cmocka_unit_test_prestate(fn, &s_uring)

int main(void) {
  const struct CMUnitTest tests[] = {
      S_BOTH(drained_at_peer_byte_exact),
      S_BOTH(del_not_done_calls_back_nothing),
      S_BOTH(idle_start_done_del),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
