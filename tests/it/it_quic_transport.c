/* QUIC transport, driven directly (no bus): the reference's round trip of Ping, Prepare and
 * Request on both stream models, the oversize size field, mixed frames up to 1 MiB in order,
 * many concurrent clients, graceful close with 0x1003, delivery over a lossy path, and no heap
 * allocation per packet in steady state (ngtcp2's heap is the transport's free lists). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "quic_util.h"
#include "transport/quic/quic_impl.h"

#include "alloc_count.h"

static bool pred_frames(struct qt_env *env, void *arg) {
  (void)env;
  struct qt_peer *p = ((struct qt_peer **)arg)[0];
  uint32_t want = (uint32_t)(uintptr_t)((void **)arg)[1];
  return p->nframes >= want || p->closed;
}

static bool wait_frames(struct qt_env *env, struct qt_peer *p, uint32_t want, uint64_t ns) {
  void *arg[2] = {p, (void *)(uintptr_t)want};
  return qt_run_until(env, pred_frames, arg, ns);
}

static bool pred_accepted(struct qt_env *env, void *arg) {
  return env->naccepted >= (int)(intptr_t)arg;
}

/* Ping, Prepare, Request out; the server sees them in order and echoes them back. */
static void roundtrip_three(bool per_request) {
  struct qt_env env;
  qt_env_init(&env);
  env.ccfg.stream_per_request = per_request;
  assert_int_equal(qt_listen(&env), 0);
  assert_int_equal(qt_dial(&env, 0, NULL), 0);
  struct qt_peer *c = &env.client[0];
  assert_true(qt_run_until(&env, qt_pred_connected, (void *)0, 5 * QT_SEC));
  assert_true(c->connected);
  assert_int_equal(env.naccepted, 0); /* not reported before the first stream */
  qt_send(c, qt_frame(env.pool, VSR_CMD_PING, 256, 0));
  qt_send(c, qt_frame(env.pool, VSR_CMD_PREPARE, 256, 1));
  qt_send(c, qt_frame(env.pool, VSR_CMD_REQUEST, 256 + 100, 2));
  assert_true(wait_frames(&env, c, 3, 5 * QT_SEC));
  assert_int_equal(env.naccepted, 1);
  struct qt_peer *s = &env.server[0];
  assert_int_equal(s->nframes, 3);
  assert_int_equal(s->cmds[0], VSR_CMD_PING);
  assert_int_equal(s->cmds[1], VSR_CMD_PREPARE);
  assert_int_equal(s->cmds[2], VSR_CMD_REQUEST);
  assert_int_equal(c->nframes, 3);
  assert_int_equal(c->cmds[0], VSR_CMD_PING);
  assert_int_equal(c->cmds[1], VSR_CMD_PREPARE);
  assert_int_equal(c->cmds[2], VSR_CMD_REQUEST);
  assert_false(c->closed);
  assert_int_equal(qt_env_fini(&env), 0);
}

static void test_roundtrip_long_lived_stream(void **state) {
  (void)state;
  roundtrip_three(false);
}

static void test_roundtrip_stream_per_request(void **state) {
  (void)state;
  roundtrip_three(true);
}

/* The stream frame |cmd| with `request` |req| arrived on at |p| (-2: no such frame). */
static int64_t sid_of(const struct qt_peer *p, uint8_t cmd, uint64_t req) {
  for (uint32_t i = 0; i < p->nframes && i < 16; i++) {
    if (p->cmds[i] == cmd && p->reqs[i] == req) return p->sids[i];
  }
  return -2;
}

static bool pred_quiet(struct qt_env *env, void *arg) {
  (void)env;
  (void)arg;
  return false;
}

/* Per-request model with max_bidi_streams 4 on both ends: 4 Requests are in flight at once on
 * 4 streams (the server holds all four unanswered; a 5th waits for a stream), each Reply lands
 * on its own Request's stream whatever order the server answers in, a Reply that matches no
 * Request falls back to the oldest stream still owed an answer, a frame other than a Reply
 * goes to a stream that carried no Request, and finished streams give their credit back. */
static void test_per_request_four_streams_routed(void **state) {
  (void)state;
  struct qt_env env;
  qt_env_init(&env);
  env.server_echo = false;
  env.scfg.max_bidi_streams = 4;
  env.ccfg.stream_per_request = true;
  env.ccfg.max_bidi_streams = 4;
  assert_int_equal(qt_listen(&env), 0);
  assert_int_equal(qt_dial(&env, 0, NULL), 0);
  struct qt_peer *c = &env.client[0];
  assert_true(qt_run_until(&env, qt_pred_connected, (void *)0, 5 * QT_SEC));
  assert_true(c->connected);
  /* Warm-up: request 10 on the first stream, answered. */
  qt_send(c, qt_frame(env.pool, VSR_CMD_REQUEST, 256, 9));
  assert_true(qt_run_until(&env, pred_accepted, (void *)1, 5 * QT_SEC));
  struct qt_peer *s = &env.server[0];
  assert_true(wait_frames(&env, s, 1, 5 * QT_SEC));
  qt_send(s, qt_reply(env.pool, 10));
  assert_true(wait_frames(&env, c, 1, 5 * QT_SEC));
  assert_int_equal(c->reqs[0], 10);

  /* Requests 1..5: four reach the server, none is answered yet, the fifth waits. */
  for (uint32_t i = 0; i < 5; i++) qt_send(c, qt_frame(env.pool, VSR_CMD_REQUEST, 256 + 100, i));
  assert_true(wait_frames(&env, s, 5, 5 * QT_SEC));
  qt_run_until(&env, pred_quiet, NULL, 200 * QT_MS);
  assert_int_equal(s->nframes, 5);
  int64_t sid[5];
  for (uint64_t r = 1; r <= 4; r++) {
    sid[r] = sid_of(s, VSR_CMD_REQUEST, r);
    assert_true(sid[r] >= 0);
    for (uint64_t q = 1; q < r; q++) assert_int_not_equal(sid[q], sid[r]);
  }
  /* Answered out of order: each Reply on its Request's stream. */
  static const uint64_t order[4] = {3, 1, 4, 2};
  for (int k = 0; k < 4; k++) qt_send(s, qt_reply(env.pool, order[k]));
  assert_true(wait_frames(&env, c, 5, 5 * QT_SEC));
  for (uint64_t r = 1; r <= 4; r++) assert_int_equal(sid_of(c, VSR_CMD_REPLY, r), sid[r]);
  /* Their streams finished, the fifth request got one, and so does a sixth. */
  assert_true(wait_frames(&env, s, 6, 5 * QT_SEC));
  qt_send(c, qt_frame(env.pool, VSR_CMD_REQUEST, 256, 5));
  assert_true(wait_frames(&env, s, 7, 5 * QT_SEC));
  int64_t sid5 = sid_of(s, VSR_CMD_REQUEST, 5), sid6 = sid_of(s, VSR_CMD_REQUEST, 6);
  assert_true(sid5 >= 0 && sid6 >= 0 && sid5 != sid6);
  /* A Reply matching no Request: first come first served (the oldest owed stream, 5's). */
  qt_send(s, qt_reply(env.pool, 99));
  qt_send(s, qt_reply(env.pool, 6));
  assert_true(wait_frames(&env, c, 7, 5 * QT_SEC));
  assert_int_equal(sid_of(c, VSR_CMD_REPLY, 99), sid5);
  assert_int_equal(sid_of(c, VSR_CMD_REPLY, 6), sid6);
  /* A Ping and request 7 in flight; the server sends a Ping first, then the Reply: the Ping goes
   * to the Ping's stream, not to the older Request's. */
  qt_send(c, qt_frame(env.pool, VSR_CMD_REQUEST, 256, 6));
  assert_true(wait_frames(&env, s, 8, 5 * QT_SEC));
  qt_send(c, qt_frame(env.pool, VSR_CMD_PING, 256, 20));
  assert_true(wait_frames(&env, s, 9, 5 * QT_SEC));
  qt_send(s, qt_frame(env.pool, VSR_CMD_PING, 256, 21));
  qt_send(s, qt_reply(env.pool, 7));
  assert_true(wait_frames(&env, c, 9, 5 * QT_SEC));
  assert_int_equal(sid_of(c, VSR_CMD_PING, 0), sid_of(s, VSR_CMD_PING, 0));
  assert_int_equal(sid_of(c, VSR_CMD_REPLY, 7), sid_of(s, VSR_CMD_REQUEST, 7));
  assert_int_equal(c->nframes, 9);
  assert_int_equal(s->nframes, 9);
  assert_false(c->closed);
  assert_false(s->closed);
  assert_int_equal(qt_env_fini(&env), 0);
}

/* A server limited to 1 stream (the default) serves a per-request client one request at a
 * time: every frame is answered, in order. */
static void test_per_request_one_stream_server(void **state) {
  (void)state;
  struct qt_env env;
  qt_env_init(&env);
  env.ccfg.stream_per_request = true;
  env.ccfg.max_bidi_streams = 16;
  assert_int_equal(qt_listen(&env), 0);
  assert_int_equal(qt_dial(&env, 0, NULL), 0);
  struct qt_peer *c = &env.client[0];
  assert_true(qt_run_until(&env, qt_pred_connected, (void *)0, 5 * QT_SEC));
  env.server_check = true;
  c->check = true;
  for (uint32_t i = 0; i < 50; i++) qt_send(c, qt_frame(env.pool, VSR_CMD_PING, 260 + i, i));
  assert_true(wait_frames(&env, c, 50, 10 * QT_SEC));
  assert_int_equal(c->nframes, 50);
  assert_int_equal(c->bad, 0);
  assert_int_equal(env.server[0].bad, 0);
  assert_int_equal(qt_env_fini(&env), 0);
}

/* A size field beyond max_message_size at offset 48: the server's decoder rejects it with the
 * same error as TCP and closes the connection with 0x1004. */
static void test_oversize_size_field(void **state) {
  (void)state;
  struct qt_env env;
  qt_env_init(&env);
  qt_log_capture();
  assert_int_equal(qt_listen(&env), 0);
  assert_int_equal(qt_dial(&env, 0, NULL), 0);
  struct qt_peer *c = &env.client[0];
  assert_true(qt_run_until(&env, qt_pred_connected, (void *)0, 5 * QT_SEC));
  qt_send(c, qt_frame(env.pool, VSR_CMD_PING, 256, 0));
  assert_true(wait_frames(&env, c, 1, 5 * QT_SEC));
  struct vsr_msg *bad = qt_frame(env.pool, VSR_CMD_REQUEST, 256, 1);
  vsr_put_u32(bad->data + 48, env.sctx.max_message_size + 1);
  qt_send(c, bad);
  assert_true(qt_run_until(&env, qt_pred_closed, &env.server[0], 5 * QT_SEC));
  assert_int_equal(env.server[0].close_reason, VSR_EFRAME_LARGE);
  assert_int_equal(env.server[0].nframes, 1);
  assert_true(qt_run_until(&env, qt_pred_closed, c, 5 * QT_SEC));
  assert_int_equal(c->close_reason, VSR_EPROTO);
  assert_true(c->close_app && c->close_remote);
  assert_int_equal(c->close_code, VSRI_QUIC_PROTOCOL_VIOLATION);
  assert_true(qt_log_has("VSR-FRAME"));
  assert_true(qt_log_has("VSR_EFRAME_LARGE"));
  vsr_log_set_handler(NULL, NULL);
  assert_int_equal(qt_env_fini(&env), 0);
}

/* 1,000 frames of mixed sizes up to 1 MiB, in order and byte-exact, both ways. */
static void mixed_frames(struct qt_env *env, struct qt_peer *c, uint32_t n, uint64_t seed) {
  env->server_check = true;
  c->check = true;
  uint64_t x = seed;
  for (uint32_t i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    uint32_t size;
    if (x % 10 == 0) size = 260 + (uint32_t)(x >> 20) % ((1u << 20) - 260);
    else if (x % 10 < 4) size = 260 + (uint32_t)(x >> 20) % 16384;
    else size = 260 + (uint32_t)(x >> 20) % 1024;
    uint8_t cmd = i % 3 == 0 ? VSR_CMD_PING : i % 3 == 1 ? VSR_CMD_PREPARE : VSR_CMD_REQUEST;
    struct vsr_msg *m = qt_frame(env->pool, cmd, size, i);
    assert_non_null(m);
    qt_send(c, m);
  }
}

static void test_mixed_1000_frames(void **state) {
  (void)state;
  struct qt_env env;
  qt_env_init(&env);
  assert_int_equal(qt_listen(&env), 0);
  env.server_check = true;
  assert_int_equal(qt_dial(&env, 0, NULL), 0);
  struct qt_peer *c = &env.client[0];
  assert_true(qt_run_until(&env, qt_pred_connected, (void *)0, 5 * QT_SEC));
  mixed_frames(&env, c, 1000, 42);
  assert_true(wait_frames(&env, c, 1000, 120 * QT_SEC));
  assert_int_equal(c->nframes, 1000);
  assert_int_equal(c->bad, 0);
  assert_int_equal(env.server[0].nframes, 1000);
  assert_int_equal(env.server[0].bad, 0);
  assert_int_equal(env.server[0].bytes, c->bytes);
  assert_false(c->closed);
  assert_int_equal(qt_env_fini(&env), 0);
}


/* 2,000 frames of 16 KiB out and echoed back after a warm-up of as many: no heap allocation
 * per packet in the process (ngtcp2 takes a block or two per packet, from the transport's free
 * lists, which hold blocks afterwards). With libc's heap this counts about 1,000; with the
 * lists 0 on a quiet machine, and a few when a loaded one lets more packets be in flight at
 * once than during the warm-up (the lists grow to the new peak): at most one per 50 frames. */
static void test_steady_state_allocates_nothing(void **state) {
  (void)state;
  if (!VSRT_COUNT_ALLOCS) skip();
  struct qt_env env;
  qt_env_init(&env);
  assert_int_equal(qt_listen(&env), 0);
  assert_int_equal(qt_dial(&env, 0, NULL), 0);
  struct qt_peer *c = &env.client[0];
  assert_true(qt_run_until(&env, qt_pred_connected, (void *)0, 5 * QT_SEC));
  uint64_t before = 0;
  for (uint32_t round = 0; round < 2; round++) {
    before = vsrt_allocs();
    for (uint32_t i = 0; i < 2000; i++) {
      qt_send(c, qt_frame(env.pool, VSR_CMD_PING, 16384, round * 2000 + i));
      if (i % 100 == 99) assert_true(wait_frames(&env, c, round * 2000 + i + 1, 30 * QT_SEC));
    }
    assert_true(wait_frames(&env, c, (round + 1) * 2000, 30 * QT_SEC));
  }
  uint64_t allocs = vsrt_allocs() - before;
  uint32_t cached = 0;
  for (unsigned k = 0; k < 11; k++) cached += vsri_quic_mem_cached(k);
  print_message("heap allocations for 2,000 frames of 16 KiB echoed: %llu; blocks on the "
                "free lists: %u\n", (unsigned long long)allocs, cached);
  assert_int_equal(c->nframes, 4000);
  assert_true(allocs <= 2000 / 50);
  assert_true(cached > 0); /* ngtcp2's blocks came back to the lists */
  assert_int_equal(qt_env_fini(&env), 0);
}

/* 100 clients at once, each sends 20 frames and gets them back. */
static bool pred_all_echoed(struct qt_env *env, void *arg) {
  int n = (int)(intptr_t)arg;
  for (int i = 0; i < n; i++) {
    if (env->client[i].nframes < 20 && !env->client[i].closed) return false;
  }
  return true;
}

static void test_100_clients(void **state) {
  (void)state;
  struct qt_env env;
  qt_env_init(&env);
  assert_int_equal(qt_listen(&env), 0);
  env.server_check = true;
  for (int i = 0; i < 100; i++) assert_int_equal(qt_dial(&env, i, NULL), 0);
  for (int i = 0; i < 100; i++) {
    env.client[i].check = true;
    for (uint32_t k = 0; k < 20; k++) {
      qt_send(&env.client[i], qt_frame(env.pool, VSR_CMD_PING, 260 + k * 100, k));
    }
  }
  assert_true(qt_run_until(&env, pred_all_echoed, (void *)100, 60 * QT_SEC));
  assert_int_equal(env.naccepted, 100);
  for (int i = 0; i < 100; i++) {
    assert_false(env.client[i].closed);
    assert_int_equal(env.client[i].nframes, 20);
    assert_int_equal(env.client[i].bad, 0);
    assert_int_equal(env.server[i].bad, 0);
  }
  assert_int_equal(qt_env_fini(&env), 0);
}

/* Graceful close: queued frames reach the client first, then CONNECTION_CLOSE 0x1003. */
static void test_graceful_close_0x1003(void **state) {
  (void)state;
  struct qt_env env;
  qt_env_init(&env);
  env.server_echo = false;
  assert_int_equal(qt_listen(&env), 0);
  assert_int_equal(qt_dial(&env, 0, NULL), 0);
  struct qt_peer *c = &env.client[0];
  assert_true(qt_run_until(&env, qt_pred_connected, (void *)0, 5 * QT_SEC));
  qt_send(c, qt_frame(env.pool, VSR_CMD_PING, 256, 0));
  assert_true(qt_run_until(&env, pred_accepted, (void *)1, 5 * QT_SEC));
  assert_true(wait_frames(&env, &env.server[0], 1, 5 * QT_SEC));
  struct qt_peer *s = &env.server[0];
  c->check = true;
  for (uint32_t i = 0; i < 200; i++) qt_send(s, qt_frame(env.pool, VSR_CMD_PING, 4096, i));
  vsri_transport_quic.close(s->conn, VSR_ESHUTDOWN, true);
  assert_true(qt_run_until(&env, qt_pred_closed, c, 10 * QT_SEC));
  assert_int_equal(c->nframes, 200);
  assert_int_equal(c->bad, 0);
  assert_true(c->close_app && c->close_remote);
  assert_int_equal(c->close_code, VSRI_QUIC_SHUTDOWN);
  assert_int_equal(c->close_reason, VSR_ESHUTDOWN);
  assert_true(s->closed);
  assert_int_equal(s->close_reason, VSR_ESHUTDOWN);
  assert_int_equal(qt_env_fini(&env), 0);
}

/* 5% of datagrams dropped each way: every frame still arrives, in order and intact. */
static void test_loss_5_percent(void **state) {
  (void)state;
  struct qt_env env;
  qt_env_init(&env);
  assert_int_equal(qt_listen(&env), 0);
  struct qt_shim shim;
  assert_int_equal(qt_shim_start(&shim, env.addr, 50, -1, 7), 0);
  assert_int_equal(qt_dial(&env, 0, shim.addr), 0);
  struct qt_peer *c = &env.client[0];
  assert_true(qt_run_until(&env, qt_pred_connected, (void *)0, 10 * QT_SEC));
  assert_true(c->connected);
  mixed_frames(&env, c, 300, 99);
  assert_true(wait_frames(&env, c, 300, 120 * QT_SEC));
  fprintf(stderr, "loss: forwarded %lu, dropped %lu datagrams\n",
          (unsigned long)atomic_load(&shim.forwarded), (unsigned long)atomic_load(&shim.dropped));
  assert_int_equal(c->nframes, 300);
  assert_int_equal(c->bad, 0);
  assert_int_equal(env.server[0].bad, 0);
  assert_true(atomic_load(&shim.dropped) > 0);
  assert_int_equal(qt_env_fini(&env), 0);
  qt_shim_stop(&shim);
}

/* A client stuck in its handshake (a path that drops everything after its first datagram)
 * does not delay another client. */
static void test_stalled_handshake_does_not_block(void **state) {
  (void)state;
  struct qt_env env;
  qt_env_init(&env);
  assert_int_equal(qt_listen(&env), 0);
  struct qt_shim shim;
  assert_int_equal(qt_shim_start(&shim, env.addr, 0, 1, 1), 0);
  assert_int_equal(qt_dial(&env, 0, shim.addr), 0); /* stalls */
  assert_int_equal(qt_dial(&env, 1, NULL), 0);
  assert_true(qt_run_until(&env, qt_pred_connected, (void *)1, 5 * QT_SEC));
  struct qt_peer *ok = &env.client[1];
  assert_true(ok->connected);
  qt_send(ok, qt_frame(env.pool, VSR_CMD_PING, 256, 0));
  assert_true(wait_frames(&env, ok, 1, 5 * QT_SEC));
  assert_int_equal(env.naccepted, 1);
  assert_false(env.client[0].connected);
  assert_int_equal(qt_env_fini(&env), 0);
  qt_shim_stop(&shim);
}

/* Idle timeout and keep-alive as configured: with the server's keep-alive under its idle
 * timeout a quiet connection stays up; without keep-alive both ends idle it out. */
static bool pred_never(struct qt_env *env, void *arg) {
  (void)env;
  (void)arg;
  return false;
}

static void test_keep_alive_and_idle(void **state) {
  (void)state;
  for (int keep = 1; keep >= 0; keep--) {
    struct qt_env env;
    qt_env_init(&env);
    env.scfg.idle_timeout_ns = 1 * QT_SEC;
    env.scfg.keep_alive_ns = keep ? 200 * QT_MS : 0;
    env.ccfg.keep_alive_ns = 0;
    assert_int_equal(qt_listen(&env), 0);
    assert_int_equal(qt_dial(&env, 0, NULL), 0);
    struct qt_peer *c = &env.client[0];
    assert_true(qt_run_until(&env, qt_pred_connected, (void *)0, 5 * QT_SEC));
    qt_send(c, qt_frame(env.pool, VSR_CMD_PING, 256, 0));
    assert_true(wait_frames(&env, c, 1, 5 * QT_SEC));
    if (keep) {
      qt_run_until(&env, pred_never, NULL, 3 * QT_SEC); /* quiet for 3 idle timeouts */
      assert_false(c->closed);
      assert_false(env.server[0].closed);
      qt_send(c, qt_frame(env.pool, VSR_CMD_PING, 256, 1));
      assert_true(wait_frames(&env, c, 2, 5 * QT_SEC));
      assert_int_equal(c->nframes, 2);
    } else {
      assert_true(qt_run_until(&env, qt_pred_closed, &env.server[0], 10 * QT_SEC));
      assert_int_equal(env.server[0].close_reason, VSR_EIDLE);
      assert_true(qt_run_until(&env, qt_pred_closed, c, 10 * QT_SEC));
      assert_int_equal(c->close_reason, VSR_EIDLE);
    }
    assert_int_equal(qt_env_fini(&env), 0);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_roundtrip_long_lived_stream),
      cmocka_unit_test(test_roundtrip_stream_per_request),
      cmocka_unit_test(test_per_request_four_streams_routed),
      cmocka_unit_test(test_per_request_one_stream_server),
      cmocka_unit_test(test_oversize_size_field),
      cmocka_unit_test(test_mixed_1000_frames),
      cmocka_unit_test(test_steady_state_allocates_nothing),
      cmocka_unit_test(test_100_clients),
      cmocka_unit_test(test_graceful_close_0x1003),
      cmocka_unit_test(test_loss_5_percent),
      cmocka_unit_test(test_stalled_handshake_does_not_block),
      cmocka_unit_test(test_keep_alive_and_idle),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
