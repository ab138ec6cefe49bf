/* QUIC in the simulator (issue 14 item 8): a client SDK over QUIC and a bus with a QUIC
 * listener on two hosts of one simulated world, the datagram model losing, duplicating and
 * reordering packets. Every Request reaches the bus exactly once, in order, byte-exact, and
 * every echoed Reply reaches the client the same way. ngtcp2 runs on the world's virtual time.
 * GnuTLS draws its own randomness (bookworm has no gnutls_crypto_rnd_register), so a QUIC run
 * is not bit-reproducible: this test asserts outcomes, never a trace hash. Backend-independent
 * (the simulator replaces epoll and io_uring), so it runs once. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "io/runtime.h"
#include "io/sim.h"
#include "util/random.h"
#include "vsrbus/vsrbus.h"

#define MS 1000000ull
#define S (1000 * MS)
#define N 120u          /* frames each way */
#define CLUSTER 7u

struct world {
  struct vsri_sim *w;
  struct vsr_loop *sloop, *cloop;
  struct vsr_bus *bus;
  struct vsr_client *c;
  uint32_t srv_got, cli_got; /* frames received, in order (request numbers 1..) */
  uint32_t bad;              /* out of order, duplicated or corrupt: must stay 0 */
  int state;                 /* client: 1 connected, < 0 closed */
  uint64_t client_id;
  int events_connected, events_lost;
};

/* Frame |i| (1..N): its size and a body that is a function of i alone. */
static uint32_t frame_size(uint32_t i) {
  static const uint32_t sizes[] = {256, 300, 1200, 1500, 4096, 20000, 65536, 150000};
  return sizes[(i * 7u) % (sizeof sizes / sizeof sizes[0])];
}

static uint8_t body_byte(uint32_t i, uint32_t off) {
  return (uint8_t)(i * 131u + off * 7u + (off >> 9));
}

static void fill_body(struct vsr_msg *m, uint32_t i) {
  for (uint32_t off = VSR_HEADER_SIZE; off < m->size; off++) m->data[off] = body_byte(i, off);
}

static bool body_ok(const struct vsr_msg *m, uint32_t i) {
  if (m->size != frame_size(i)) return false;
  for (uint32_t off = VSR_HEADER_SIZE; off < m->size; off++) {
    if (m->data[off] != body_byte(i, off)) return false;
  }
  return true;
}

static void srv_on_message(void *user, struct vsr_bus *bus, enum vsr_plane plane, uint64_t peer,
                           struct vsr_msg *msg) {
  struct world *x = user;
  if (plane != VSR_PLANE_CLIENT || msg->data[60] != VSR_CMD_REQUEST) {
    x->bad++;
    return;
  }
  const struct vsr_request_header *rq = (const struct vsr_request_header *)msg->data;
  uint32_t i = (uint32_t)rq->request;
  if (i != x->srv_got + 1 || !body_ok(msg, i)) {
    fprintf(stderr, "server: request %u (expected %u, %u B) out of order or corrupt\n", i,
            x->srv_got + 1, msg->size);
    x->bad++;
    return;
  }
  x->srv_got++;
  /* Echo: a Reply carrying the same body. */
  struct vsr_msg *r = vsr_bus_msg_new(bus, msg->size);
  assert_non_null(r);
  memcpy(r->data, msg->data, msg->size);
  vsr_header_init(r->data, VSR_CMD_REPLY, msg->size);
  struct vsr_reply_header *rp = (struct vsr_reply_header *)r->data;
  rp->cluster = vsr_u128_from_u64(CLUSTER);
  rp->client = rq->client;
  rp->request = rq->request;
  rp->op = i;
  rp->commit = i;
  assert_int_equal(vsr_bus_send_to_client(bus, peer, r), 0);
  vsr_msg_unref(r); /* the bus holds its own reference */
}

static void srv_on_event(void *user, struct vsr_bus *bus, const struct vsr_peer_event *ev) {
  (void)bus;
  struct world *x = user;
  if (ev->plane != VSR_PLANE_CLIENT) return;
  if (ev->kind == VSR_PEER_CONNECTED) {
    x->events_connected++;
    x->client_id = ev->id;
    assert_string_equal(ev->transport, "quic");
  } else if (ev->kind == VSR_PEER_LOST) {
    x->events_lost++;
  }
}

static const struct vsr_bus_callbacks srv_cb = {.on_message = srv_on_message,
                                                .on_peer_event = srv_on_event};

static void cli_on_message(void *user, struct vsr_client *c, struct vsr_msg *msg) {
  (void)c;
  struct world *x = user;
  const struct vsr_reply_header *rp = (const struct vsr_reply_header *)msg->data;
  uint32_t i = (uint32_t)rp->request;
  if (msg->data[60] != VSR_CMD_REPLY || i != x->cli_got + 1 || !body_ok(msg, i)) {
    fprintf(stderr, "client: reply %u (expected %u, %u B) out of order or corrupt\n", i,
            x->cli_got + 1, msg->size);
    x->bad++;
    return;
  }
  x->cli_got++;
}

static void cli_on_state(void *user, struct vsr_client *c, int status) {
  (void)c;
  struct world *x = user;
  x->state = status == 0 ? 1 : status;
}

static const struct vsr_client_callbacks cli_cb = {.on_message = cli_on_message,
                                                   .on_state = cli_on_state};

static struct vsr_loop *loop_on(struct vsri_sim_host *h) {
  struct vsri_io *io;
  assert_int_equal(vsri_sim_io_new(&io, h, NULL), 0);
  struct vsr_pool_options po;
  vsr_pool_options_default(&po);
  memset(po.prealloc, 0, sizeof po.prealloc);
  po.bytes_max = 128ull << 20;
  struct vsr_loop *l;
  assert_int_equal(vsri_loop_new_on(&l, io, &po), 0);
  return l;
}

static void send_frame(struct world *x, uint32_t i) {
  uint32_t size = frame_size(i);
  struct vsr_msg *m = vsr_client_msg_new(x->c, size);
  assert_non_null(m);
  vsr_header_init(m->data, VSR_CMD_REQUEST, size);
  struct vsr_request_header *rq = (struct vsr_request_header *)m->data;
  rq->cluster = vsr_u128_from_u64(CLUSTER);
  rq->client = vsr_u128_from_u64(0x51u);
  rq->operation = VSR_OP_SEND_MESSAGES;
  rq->session = 1;
  rq->request = i;
  fill_body(m, i);
  assert_int_equal(vsr_client_send(x->c, m), 0);
  vsr_msg_unref(m); /* the client holds its own reference */
}

static void run_quic(uint64_t seed, uint32_t loss_ppm, uint32_t dup_ppm,
                     struct vsri_sim_stats *st) {
  struct vsri_sim_net net = {.dgram_loss_ppm = loss_ppm,
                             .dgram_dup_ppm = dup_ppm,
                             /* Many tail draws: datagrams overtake each other often. */
                             .tail_ppm = 100000,
                             .delay_tail_ns = 5 * MS,
                             .dgram_queue_max = 4096};
  struct world x = {0};
  assert_int_equal(vsri_sim_new(&x.w, seed, &net), 0);
  vsri_random_set_hook(vsri_sim_random_bytes, x.w);
  struct vsri_sim_host *hs = vsri_sim_host_new(x.w, "10.0.0.1");
  struct vsri_sim_host *hc = vsri_sim_host_new(x.w, "10.0.0.2");
  assert_non_null(hs);
  assert_non_null(hc);
  x.sloop = loop_on(hs);
  x.cloop = loop_on(hc);

  struct vsr_bus_options o;
  vsr_bus_options_default(&o);
  o.loop = x.sloop;
  o.client_tcp_addr = NULL;
  o.quic.addr = "10.0.0.1:4433";
  o.quic.idle_timeout_ns = 60 * S;
  o.max_message_size = 1u << 20;
  assert_int_equal(vsr_bus_new(&x.bus, &o, &srv_cb, &x), 0);
  char la[64];
  assert_int_equal(vsr_bus_listen_addr(x.bus, "quic", la, sizeof la), 0);
  assert_string_equal(la, "10.0.0.1:4433");

  struct vsr_client_options co;
  vsr_client_options_default(&co);
  co.transport = "quic";
  co.addr = "10.0.0.1:4433";
  co.quic.insecure = true;
  co.max_message_size = 1u << 20;
  co.queue_capacity = N;
  assert_int_equal(vsr_client_new(&x.c, x.cloop, &co, &cli_cb, &x), 0);

  /* Connect, then all N frames at once; bounded in virtual time (60 s) and in steps. */
  uint64_t end = vsri_sim_now(x.w) + 60 * S;
  while (x.state == 0 && vsri_sim_now(x.w) < end) {
    assert_int_equal(vsri_sim_run_until(x.w, vsri_sim_now(x.w) + 10 * MS), 0);
  }
  assert_int_equal(x.state, 1);
  for (uint32_t i = 1; i <= N; i++) send_frame(&x, i);
  while (x.cli_got < N && x.bad == 0 && x.state == 1 && vsri_sim_now(x.w) < end) {
    assert_int_equal(vsri_sim_run_until(x.w, vsri_sim_now(x.w) + 10 * MS), 0);
  }
  /* A little longer: a late duplicate would show up as a frame too many. */
  assert_int_equal(vsri_sim_run_until(x.w, vsri_sim_now(x.w) + 2 * S), 0);
  assert_int_equal(x.bad, 0);
  assert_int_equal(x.state, 1);
  assert_int_equal(x.srv_got, N);
  assert_int_equal(x.cli_got, N);
  assert_int_equal(x.events_connected, 1);
  assert_int_equal(x.events_lost, 0);
  vsri_sim_stats(x.w, st);

  /* Teardown: the client goes, the bus sees it lost (at once from its CONNECTION_CLOSE, or
   * by the idle timeout when that datagram was lost), then everything is freed and the pools
   * hold nothing. */
  vsr_client_del(x.c);
  end = vsri_sim_now(x.w) + o.quic.idle_timeout_ns + 10 * S;
  while (x.events_lost == 0 && vsri_sim_now(x.w) < end) {
    assert_int_equal(vsri_sim_run_until(x.w, vsri_sim_now(x.w) + 100 * MS), 0);
  }
  assert_int_equal(x.events_lost, 1);
  vsr_bus_del(x.bus);
  for (int k = 0; k < 4; k++) vsr_loop_run_once(x.cloop, 0);
  for (int k = 0; k < 4; k++) vsr_loop_run_once(x.sloop, 0);
  struct vsr_pool_stats ps;
  vsr_pool_stats(vsr_loop_pool(x.sloop), &ps);
  assert_int_equal(ps.live, 0);
  vsr_pool_stats(vsr_loop_pool(x.cloop), &ps);
  assert_int_equal(ps.live, 0);
  vsr_loop_del(x.cloop);
  vsr_loop_del(x.sloop);
  vsri_random_set_hook(NULL, NULL);
  vsri_sim_del(x.w);
}

/* A clean network first: QUIC works on the simulated datagram sockets at all. */
static void t_quic_clean(void **state) {
  (void)state;
  struct vsri_sim_stats st;
  run_quic(1, 0, 0, &st);
  assert_true(st.dgrams > 0);
  assert_int_equal(st.dgrams_lost, 0);
}

/* 5 % loss, 5 % duplication, reordering from per-datagram delays: a few seeds. */
static void t_quic_lossy(void **state) {
  (void)state;
  for (uint64_t seed = 11; seed < 14; seed++) {
    struct vsri_sim_stats st;
    run_quic(seed, 50000, 50000, &st);
    assert_true(st.dgrams_lost > 0);
    assert_true(st.dgrams_duplicated > 0);
    print_message("seed %llu: %llu datagrams delivered, %llu lost, %llu duplicated\n",
                  (unsigned long long)seed, (unsigned long long)st.dgrams,
                  (unsigned long long)st.dgrams_lost, (unsigned long long)st.dgrams_duplicated);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(t_quic_clean),
      cmocka_unit_test(t_quic_lossy),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
