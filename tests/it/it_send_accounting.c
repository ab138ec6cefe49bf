/* Send accounting across the transport boundary (issue 13): the bus counts every frame it
 * queued exactly once, as sent (on_sent: the kernel took its last byte), dropped (on_dropped,
 * or still queued at the close) or still pending; the transports count nothing.
 *
 *   - TCP and QUIC traffic: per peer frames_queued == frames_out + frames_dropped +
 *     frames_pending after every loop turn; all out once the client has them all (and the
 *     client SDK counted its 20 Requests out the same way); after the close the bus totals
 *     balance.
 *   - TCP, a client that stops reading: at the close the frames still queued (and the one
 *     cut inside) are exactly what was not sent: frames_queued == frames_out + drops_on_close.
 *   - QUIC, datagrams swallowed (test hook on the listener's UDP send path): a reply ngtcp2
 *     took is NOT in frames_out (it was counted when ngtcp2 took it before), and is dropped
 *     (drops_on_close) when the connection dies.
 *   - QUIC, the client resets the stream the reply travels on before the kernel took the
 *     reply: dropped (drops_stream_reset), not sent (it was counted sent before); the same
 *     with a reply cut inside a frame by the client's flow control.
 *
 * One thread: the bus and the clients share one loop, so every step is ordered. Each wait is
 * bounded; nothing depends on timing except those bounds. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "bus/bus_impl.h"
#include "testutil.h"
#include "transport/quic.h"
#include "vsrbus/vsrbus.h"

#define T_SEC 1000000000ull
#define T_MS 1000000ull

struct t_env {
  struct vsr_loop *loop;
  struct vsr_bus *bus;
  uint64_t client;         /* the bus's id of the last client that sent */
  uint32_t requests;       /* Requests the bus delivered */
  uint32_t replies_per;    /* replies the bus sends per Request */
  uint32_t reply_size;
  bool swallow_on_request; /* set the listener's send path to swallow before replying */
  uint32_t swallowed;      /* datagrams the hook swallowed */
  uint32_t partial_datagrams; /* t_reply_taken: wait for this many swallowed (0: whole) */
  /* A raw QUIC client (transport ops, no SDK) on the same loop. */
  struct vsri_quic_config ccfg;
  struct vsri_transport_ctx cctx;
  struct vsri_conn *cc;
  struct vsri_sendq cq;
  struct vsr_msg *cslots[8];
  bool c_connected, c_closed;
  uint32_t c_frames;
  /* The SDK client of the traffic case. */
  struct vsr_client *sdk;
  uint32_t sdk_frames;
  int sdk_state;
};

static void t_swallow(void *user, const uint8_t *pkt, size_t len) {
  (void)pkt;
  (void)len;
  ((struct t_env *)user)->swallowed++;
}

static struct vsri_listener *t_quic_listener(struct t_env *e) {
  return (struct vsri_listener *)vsri_bus_client_listener(e->bus, "quic");
}

static struct vsr_msg *t_reply(struct vsr_pool *pool, uint32_t size, uint64_t request) {
  struct vsr_msg *m = vsr_pool_get(pool, size);
  assert_non_null(m);
  vsr_header_init(m->data, VSR_CMD_REPLY, size);
  struct vsr_reply_header *rp = (struct vsr_reply_header *)m->data;
  rp->client = vsr_u128_from_u64(0x77);
  rp->request = request;
  rp->operation = VSR_OP_SEND_MESSAGES;
  for (uint32_t i = VSR_HEADER_SIZE; i < size; i++) m->data[i] = (uint8_t)i;
  vsr_frame_seal(m->data);
  return m;
}

static struct vsr_msg *t_request(struct vsr_pool *pool, uint64_t request) {
  struct vsr_msg *m = vsr_pool_get(pool, VSR_HEADER_SIZE);
  assert_non_null(m);
  vsr_header_init(m->data, VSR_CMD_REQUEST, VSR_HEADER_SIZE);
  struct vsr_request_header *rq = (struct vsr_request_header *)m->data;
  rq->client = vsr_u128_from_u64(0x77);
  rq->request = request;
  rq->session = 1;
  rq->operation = VSR_OP_SEND_MESSAGES;
  vsr_frame_seal(m->data);
  return m;
}

static void t_on_message(void *user, struct vsr_bus *bus, enum vsr_plane plane, uint64_t peer,
                         struct vsr_msg *msg) {
  (void)plane;
  struct t_env *e = user;
  e->client = peer;
  e->requests++;
  if (e->swallow_on_request) vsri_quic_listener_set_tx(t_quic_listener(e), t_swallow, e);
  uint64_t request = ((const struct vsr_request_header *)msg->data)->request;
  for (uint32_t i = 0; i < e->replies_per; i++) {
    struct vsr_msg *r = t_reply(vsr_loop_pool(e->loop), e->reply_size, request);
    assert_int_equal(vsr_bus_send_to_client(bus, peer, r), 0);
    vsr_msg_unref(r);
  }
}

/* ---- the raw QUIC client's upcalls --------------------------------------------------------- */

static void c_on_frame(void *owner, struct vsri_conn *conn, struct vsr_msg *msg) {
  (void)conn;
  (void)msg;
  ((struct t_env *)owner)->c_frames++;
}

static void c_on_connected(void *owner, struct vsri_conn *conn, int status) {
  (void)conn;
  ((struct t_env *)owner)->c_connected = status == 0;
}

static void c_on_closed(void *owner, struct vsri_conn *conn, int reason) {
  (void)conn;
  (void)reason;
  struct t_env *e = owner;
  e->c_closed = true;
  e->cc = NULL;
  while (vsri_sendq_len(&e->cq) > 0) vsri_sendq_pop(&e->cq);
}

static const struct vsri_conn_events c_events = {
    .on_frame = c_on_frame,
    .on_connected = c_on_connected,
    .on_closed = c_on_closed,
};

/* ---- environment ----------------------------------------------------------------------------- */

static struct t_env *t_env_new(bool quic) {
  vsrt_require_backend();
  struct t_env *e = calloc(1, sizeof *e);
  assert_non_null(e);
  struct vsr_loop_options lo;
  vsr_loop_options_default(&lo);
  lo.pool.max_message_size = 4u << 20;
  assert_int_equal(vsr_loop_new(&e->loop, &lo), 0);
  struct vsr_bus_options o;
  vsr_bus_options_default(&o);
  o.loop = e->loop;
  o.client_tcp_addr = "127.0.0.1:0";
  o.quic.addr = quic ? "127.0.0.1:0" : NULL;
  o.quic.loopback_pmtud = true; /* the cases count datagrams of at most 1452 bytes */
  o.max_message_size = 4u << 20;
  o.close_peer_timeout_ns = 200 * T_MS;
  struct vsr_bus_callbacks cb = {.on_message = t_on_message};
  assert_int_equal(vsr_bus_new(&e->bus, &o, &cb, e), 0);
  e->replies_per = 1;
  e->reply_size = 4096;
  return e;
}

static bool t_run_until(struct t_env *e, bool (*done)(struct t_env *), uint64_t ns) {
  uint64_t end = vsrt_now() + ns;
  while (!done(e) && vsrt_now() < end) vsr_loop_run_once(e->loop, (int64_t)T_MS);
  return done(e);
}

static bool t_no_peer(struct t_env *e) {
  struct vsr_bus_stats st;
  vsr_bus_stats(e->bus, &st);
  return st.clients_active == 0;
}

static bool t_quiet(struct t_env *e) { return !e->cc && !e->sdk && vsri_quic_live() <= 1; }

static void t_env_del(struct t_env *e) {
  if (e->cc) vsri_transport_quic.close(e->cc, VSR_ECLOSED, false);
  t_run_until(e, t_quiet, 5 * T_SEC);
  vsr_bus_shutdown_start(e->bus, T_SEC);
  uint64_t end = vsrt_now() + 5 * T_SEC;
  while (!vsr_bus_shutdown_done(e->bus) && vsrt_now() < end) {
    vsr_loop_run_once(e->loop, (int64_t)T_MS);
  }
  vsr_bus_del(e->bus);
  for (int i = 0; i < 100 && vsri_quic_live() > 0; i++) vsr_loop_run_once(e->loop, (int64_t)T_MS);
  vsr_loop_del(e->loop);
  free(e);
}

/* The balance every peer must keep at any time. */
static void t_check_peer(struct t_env *e, struct vsr_peer_stats *ps) {
  assert_int_equal(vsr_bus_peer_stats(e->bus, VSR_PLANE_CLIENT, e->client, ps), 0);
  assert_int_equal(ps->frames_queued, ps->frames_out + ps->frames_dropped + ps->frames_pending);
  assert_true(ps->frames_pending >= ps->queue_depth);
}

/* After every close: the bus totals balance (nothing is pending once no peer is left). */
static void t_check_totals(struct t_env *e) {
  struct vsr_bus_stats st;
  vsr_bus_stats(e->bus, &st);
  assert_int_equal(st.clients_active, 0);
  assert_int_equal(st.frames_queued, st.frames_out + st.drops_on_close + st.drops_stream_reset);
}

/* Connects the raw QUIC client (stream per request, insecure) and sends Request 1. */
static void t_raw_client_request(struct t_env *e, uint64_t stream_window) {
  char addr[64];
  assert_int_equal(vsr_bus_listen_addr(e->bus, "quic", addr, sizeof addr), 0);
  vsri_quic_config_default(&e->ccfg);
  e->ccfg.insecure = true;
  e->ccfg.stream_per_request = true;
  e->ccfg.loopback_udp_payload = 0; /* datagrams of at most 1452 bytes, as on any path */
  if (stream_window) e->ccfg.stream_window = e->ccfg.conn_window = stream_window;
  struct vsr_loop *l = e->loop;
  e->cctx = (struct vsri_transport_ctx){.io = l->io, .pool = vsr_loop_pool(l),
                                        .max_message_size = 4u << 20,
                                        .decode_flags = VSRI_DECODE_VERIFY_BODY,
                                        .tls = &e->ccfg};
  vsri_sendq_init(&e->cq, e->cslots, 8);
  assert_int_equal(vsri_transport_quic.connect(&e->cc, &e->cctx, addr, &c_events, e, &e->cq), 0);
  assert_true(vsri_sendq_push(&e->cq, t_request(vsr_loop_pool(l), 1)));
  vsri_transport_quic.kick(e->cc);
}

static bool t_got_request(struct t_env *e) { return e->requests > 0 || e->c_closed; }

/* The bus's reply was taken by QUIC while the send path swallows: wholly (it left the queue),
 * or, for a reply larger than the client's window, in part (|partial_datagrams| datagrams of
 * it were swallowed: more than the handshake's few, at most the 64 KiB window). */
static bool t_reply_taken(struct t_env *e) {
  struct vsr_peer_stats ps;
  if (vsr_bus_peer_stats(e->bus, VSR_PLANE_CLIENT, e->client, &ps) != 0) return true;
  if (e->partial_datagrams) return e->swallowed >= e->partial_datagrams;
  return e->swallowed > 0 && ps.queue_depth == 0;
}

/* ---- traffic: the balance holds throughout, and everything received was counted out ------- */

static bool t_sdk_done(struct t_env *e) { return e->sdk_frames >= 60 || e->sdk_state < 0; }

static void sdk_on_message(void *user, struct vsr_client *c, struct vsr_msg *msg) {
  (void)c;
  (void)msg;
  ((struct t_env *)user)->sdk_frames++;
}

static void sdk_on_state(void *user, struct vsr_client *c, int status) {
  (void)c;
  struct t_env *e = user;
  e->sdk_state = status;
  if (status < 0) e->sdk = NULL;
}

static void traffic(bool quic) {
  struct t_env *e = t_env_new(quic);
  e->replies_per = 3;
  e->reply_size = 2000;
  struct vsr_client_options co;
  vsr_client_options_default(&co);
  co.transport = quic ? "quic" : "tcp";
  char addr[64];
  assert_int_equal(vsr_bus_listen_addr(e->bus, co.transport, addr, sizeof addr), 0);
  co.addr = addr;
  co.quic.insecure = true;
  co.quic.streams = VSR_QUIC_STREAMS_LONG; /* 20 Requests pipelined, 3 Replies each */
  co.quic.loopback_pmtud = true;
  struct vsr_client_callbacks cb = {.on_message = sdk_on_message, .on_state = sdk_on_state};
  assert_int_equal(vsr_client_new(&e->sdk, e->loop, &co, &cb, e), 0);
  for (uint64_t i = 1; i <= 20; i++) {
    struct vsr_msg *m = t_request(vsr_loop_pool(e->loop), i);
    assert_int_equal(vsr_client_send(e->sdk, m), 0);
    vsr_msg_unref(m);
  }
  uint64_t end = vsrt_now() + 10 * T_SEC;
  uint32_t checks = 0;
  while (!t_sdk_done(e) && vsrt_now() < end) {
    vsr_loop_run_once(e->loop, (int64_t)T_MS);
    struct vsr_peer_stats ps;
    if (e->requests > 0) {
      t_check_peer(e, &ps); /* after every turn */
      checks++;
    }
  }
  assert_int_equal(e->sdk_frames, 60);
  assert_true(checks > 0);
  struct vsr_peer_stats ps;
  t_check_peer(e, &ps);
  /* The client holds all 60: each one's last byte was taken by the kernel, and counted so. */
  assert_int_equal(ps.frames_queued, 60);
  assert_int_equal(ps.frames_out, 60);
  assert_int_equal(ps.bytes_out, 60 * 2000);
  assert_int_equal(ps.frames_pending, 0);
  /* The client SDK counts its own sends the same way: all 20 Requests went out. */
  struct vsri_client_counts cc;
  vsri_client_counts(e->sdk, &cc);
  assert_int_equal(cc.frames_queued, 20);
  assert_int_equal(cc.frames_out, 20);
  assert_int_equal(cc.bytes_out, 20 * VSR_HEADER_SIZE);
  assert_int_equal(cc.frames_dropped, 0);
  assert_int_equal(cc.queue_depth, 0);
  vsr_client_del(e->sdk);
  e->sdk = NULL;
  assert_true(t_run_until(e, t_no_peer, 5 * T_SEC));
  t_check_totals(e);
  struct vsr_bus_stats st;
  vsr_bus_stats(e->bus, &st);
  assert_int_equal(st.frames_out, 60);
  t_env_del(e);
}

static void tcp_traffic_balances(void **state) {
  (void)state;
  traffic(false);
}

static void quic_traffic_balances(void **state) {
  (void)state;
  traffic(true);
}

/* ---- TCP: a client that does not read; the close drops what is left ----------------------- */

static bool t_got_one(struct t_env *e) { return e->requests > 0; }

static void tcp_close_drops_exactly_the_unsent(void **state) {
  (void)state;
  struct t_env *e = t_env_new(false);
  e->replies_per = 150;
  e->reply_size = 256u << 10; /* 37.5 MiB: far more than the socket buffers hold */
  char addr[64];
  assert_int_equal(vsr_bus_listen_addr(e->bus, "tcp", addr, sizeof addr), 0);
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  assert_true(fd >= 0);
  int small = 4096;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  struct sockaddr_in a = {.sin_family = AF_INET};
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  a.sin_port = htons((uint16_t)atoi(strrchr(addr, ':') + 1));
  assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
  struct vsr_msg *rq = t_request(vsr_loop_pool(e->loop), 1);
  assert_true(vsrt_write_all(fd, rq->data, rq->size));
  vsr_msg_unref(rq);
  assert_true(t_run_until(e, t_got_one, 5 * T_SEC));
  for (int i = 0; i < 50; i++) vsr_loop_run_once(e->loop, (int64_t)T_MS); /* writes stall */
  struct vsr_peer_stats ps;
  t_check_peer(e, &ps);
  assert_int_equal(ps.frames_queued, 150);
  assert_true(ps.frames_out < 150); /* the client reads nothing */
  assert_true(ps.queue_depth > 0);
  assert_int_equal(vsr_bus_close_client(e->bus, e->client), 0);
  assert_true(t_run_until(e, t_no_peer, 5 * T_SEC));
  t_check_totals(e);
  struct vsr_bus_stats st;
  vsr_bus_stats(e->bus, &st);
  assert_int_equal(st.drops_on_close, 150 - st.frames_out);
  assert_true(st.drops_on_close >= ps.queue_depth);
  close(fd);
  t_env_del(e);
}

/* ---- QUIC: sent means the kernel took it ---------------------------------------------------- */

static void quic_swallowed_reply_not_sent_then_dropped(void **state) {
  (void)state;
  struct t_env *e = t_env_new(true);
  e->swallow_on_request = true;
  t_raw_client_request(e, 0);
  assert_true(t_run_until(e, t_got_request, 5 * T_SEC));
  assert_int_equal(e->requests, 1);
  assert_true(t_run_until(e, t_reply_taken, 5 * T_SEC));
  for (int i = 0; i < 20; i++) vsr_loop_run_once(e->loop, (int64_t)T_MS); /* timers, PTOs */
  struct vsr_peer_stats ps;
  t_check_peer(e, &ps);
  assert_int_equal(ps.frames_queued, 1);
  assert_int_equal(ps.queue_depth, 0); /* ngtcp2 took it ... */
  assert_true(e->swallowed > 0);       /* ... and its datagrams never reached the kernel */
  assert_int_equal(ps.frames_out, 0);  /* so it is not sent */
  assert_int_equal(ps.frames_pending, 1);
  struct vsr_bus_stats st;
  vsr_bus_stats(e->bus, &st);
  assert_int_equal(st.frames_out, 0);
  /* The connection dies with the reply never sent: dropped, counted at the close. */
  assert_int_equal(vsr_bus_close_client(e->bus, e->client), 0);
  assert_true(t_run_until(e, t_no_peer, 5 * T_SEC));
  vsr_bus_stats(e->bus, &st);
  assert_int_equal(st.frames_out, 0);
  assert_int_equal(st.drops_on_close, 1);
  t_check_totals(e);
  vsri_quic_listener_set_tx(t_quic_listener(e), NULL, NULL);
  assert_int_equal(e->c_frames, 0);
  t_env_del(e);
}

/* ---- QUIC: a reset stream drops its frames ---------------------------------------------------- */

static bool t_reset_counted(struct t_env *e) {
  struct vsr_bus_stats st;
  vsr_bus_stats(e->bus, &st);
  return st.drops_stream_reset > 0 || st.clients_active == 0;
}

static void reset_case(uint32_t reply_size, uint64_t client_window) {
  struct t_env *e = t_env_new(true);
  e->swallow_on_request = true;
  e->reply_size = reply_size;
  e->partial_datagrams = client_window ? 30 : 0;
  t_raw_client_request(e, client_window);
  assert_true(t_run_until(e, t_got_request, 5 * T_SEC));
  assert_true(t_run_until(e, t_reply_taken, 5 * T_SEC));
  struct vsr_peer_stats ps;
  t_check_peer(e, &ps);
  assert_int_equal(ps.frames_out, 0);
  assert_int_equal(ps.queue_depth, client_window ? 1 : 0); /* partly handed over, or wholly */
  /* The client gives up on its request: RESET_STREAM + STOP_SENDING reach the server (whose
   * send path works again) before anything else it sends. */
  vsri_quic_listener_set_tx(t_quic_listener(e), NULL, NULL);
  assert_int_equal(vsri_quic_test_reset_streams(e->cc, 0x10c), 1);
  assert_true(t_run_until(e, t_reset_counted, 5 * T_SEC));
  t_check_peer(e, &ps);
  assert_int_equal(ps.frames_queued, 1);
  assert_int_equal(ps.frames_out, 0); /* never sent: not counted as sent */
  assert_int_equal(ps.frames_dropped, 1);
  assert_int_equal(ps.frames_pending, 0);
  assert_int_equal(ps.queue_depth, 0);
  struct vsr_bus_stats st;
  vsr_bus_stats(e->bus, &st);
  assert_int_equal(st.drops_stream_reset, 1);
  assert_int_equal(st.frames_out, 0);
  assert_int_equal(e->c_frames, 0);
  /* The connection itself stays up; closing it leaves the totals balanced. */
  assert_int_equal(vsr_bus_close_client(e->bus, e->client), 0);
  assert_true(t_run_until(e, t_no_peer, 5 * T_SEC));
  t_check_totals(e);
  vsr_bus_stats(e->bus, &st);
  assert_int_equal(st.drops_on_close, 0);
  t_env_del(e);
}

/* The whole reply was handed to ngtcp2 (in flight, never in a datagram the kernel took). */
static void quic_stream_reset_drops_taken_reply(void **state) {
  (void)state;
  reset_case(4096, 0);
}

/* A 1 MiB reply against a 64 KiB client window: part of it handed over, the rest queued; the
 * reset leaves the rest nowhere to go. */
static void quic_stream_reset_inside_a_frame(void **state) {
  (void)state;
  reset_case(1u << 20, 64u << 10);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(tcp_traffic_balances),
      cmocka_unit_test(quic_traffic_balances),
      cmocka_unit_test(tcp_close_drops_exactly_the_unsent),
      cmocka_unit_test(quic_swallowed_reply_not_sent_then_dropped),
      cmocka_unit_test(quic_stream_reset_drops_taken_reply),
      cmocka_unit_test(quic_stream_reset_inside_a_frame),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
