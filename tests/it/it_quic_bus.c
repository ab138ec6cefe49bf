/* QUIC through the bus and the client SDK: one node serves TCP and QUIC clients at once with
 * the same frames and callbacks, on both stream models; graceful shutdown drains queued frames
 * to QUIC clients, then closes them with 0x1003; the ALPN policy as a bus option; per-request
 * clients pipelining on several streams; the handshake grace bounding the handshake only. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "harness.h"

#include "bus/bus_impl.h"
#include "crypto/cert.h"
#include "transport/quic.h"
#include "quic_info.h"


/* A node's options with a QUIC client listener on any port, and TCP too unless |quic_only|. */
static void quic_node_options(struct h_node *n, enum h_mode mode, bool quic_only) {
  h_options(n);
  n->mode = mode;
  if (quic_only) n->opts.client_tcp_addr = NULL;
  n->opts.quic.addr = "127.0.0.1:0";
}

/* Starts |n| and reads its QUIC address and certificate pin into |qi|. */
static void quic_node_start(struct h_node *n, struct quic_info *qi) {
  assert_int_equal(h_start(n), 0);
  h_run(n, quic_info_task, qi);
}

static struct vsr_client *quic_client_model(const struct quic_info *qi, const char *alpn,
                                            enum vsr_quic_streams model, uint32_t streams,
                                            int *err) {
  struct vsr_client_options o;
  vsr_client_options_default(&o);
  o.transport = "quic";
  o.addr = qi->addr;
  o.quic.pin_sha256 = qi->pin;
  o.quic.alpn = alpn;
  o.quic.streams = model;
  if (streams) o.quic.max_streams = streams;
  struct vsr_client *c = NULL;
  *err = vsr_client_connect(&c, &o, 5 * H_SEC);
  return *err ? NULL : c;
}

/* The SDK's defaults: no ALPN, one stream per request. */
static struct vsr_client *quic_client(const struct quic_info *qi, const char *alpn, int *err) {
  return quic_client_model(qi, alpn, VSR_QUIC_STREAMS_PER_REQUEST, 0, err);
}

static void ping(struct vsr_client *c, uint32_t seq) {
  struct vsr_msg *m = vsr_client_msg_new(c, 256), *r = NULL;
  m->data[60] = VSR_CMD_PING_CLIENT;
  vsr_put_u32(m->data + 128, seq);
  assert_int_equal(vsr_client_call(c, m, &r, 5 * H_SEC), 0);
  assert_int_equal(r->data[60], VSR_CMD_PONG_CLIENT);
  assert_int_equal(vsr_get_u32(r->data + 128), seq);
  vsr_msg_unref(m);
  vsr_msg_unref(r);
}

static void request(struct vsr_client *c, uint32_t seq) {
  struct vsr_msg *m = h_frame(c, VSR_CMD_REQUEST, 256 + 1000, seq), *r = NULL;
  assert_non_null(m);
  assert_int_equal(vsr_client_call(c, m, &r, 5 * H_SEC), 0);
  assert_int_equal(r->data[60], VSR_CMD_REPLY);
  const struct vsr_reply_header *rp = (const struct vsr_reply_header *)r->data;
  assert_int_equal(rp->request, seq + 1);
  vsr_msg_unref(m);
  vsr_msg_unref(r);
}

static void test_tcp_and_quic_at_once(void **state) {
  (void)state;
  struct h_node n;
  struct quic_info qi;
  quic_node_options(&n, H_SM, false);
  quic_node_start(&n, &qi);
  int err;
  struct vsr_client *q = quic_client(&qi, NULL, &err); /* per-request streams */
  assert_int_equal(err, 0);
  struct vsr_client *ql = quic_client_model(&qi, NULL, VSR_QUIC_STREAMS_LONG, 0, &err);
  assert_int_equal(err, 0);
  struct vsr_client *t = h_client(&n);
  assert_non_null(t);
  for (uint32_t i = 0; i < 5; i++) {
    ping(q, i);
    ping(ql, 50 + i);
    ping(t, 100 + i);
    request(q, i);
    request(ql, 50 + i);
    request(t, 100 + i);
  }
  assert_int_equal(h_wait_events(&n, VSR_PEER_CONNECTED, 3, 5 * H_SEC), 3);
  vsr_client_del(q);
  vsr_client_del(ql);
  vsr_client_del(t);
  assert_int_equal(h_wait_events(&n, VSR_PEER_LOST, 3, 5 * H_SEC), 3);
  h_stop(&n, true);
  assert_int_equal(n.shutdown_result, 0);
}

/* graceful_shutdown over QUIC: what was queued reaches every client, then 0x1003. */
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

static void test_shutdown_drains_then_0x1003(void **state) {
  (void)state;
  struct h_node n;
  struct quic_info qi;
  quic_node_options(&n, H_SILENT, true);
  /* The clients are read one after another, so the later ones acknowledge late: drain bounds
   * well above what a loaded (or sanitized) machine needs. */
  n.opts.close_peer_timeout_ns = 10 * H_SEC;
  n.shutdown_timeout_ns = 20 * H_SEC;
  quic_node_start(&n, &qi);
  struct vsr_client *cl[4];
  int err;
  for (int c = 0; c < 4; c++) {
    /* Frames pushed by the server need a stream that stays open: the long-lived model. */
    cl[c] = quic_client_model(&qi, NULL, VSR_QUIC_STREAMS_LONG, 0, &err);
    assert_int_equal(err, 0);
    struct vsr_msg *m = vsr_client_msg_new(cl[c], 256);
    m->data[60] = VSR_CMD_PING_CLIENT;
    assert_int_equal(vsr_client_send(cl[c], m), 0); /* opens the stream: reported */
    vsr_msg_unref(m);
    assert_int_equal(vsr_client_flush(cl[c], 5 * H_SEC), 0);
    assert_int_equal(h_wait_events(&n, VSR_PEER_CONNECTED, c + 1, 5 * H_SEC), c + 1);
  }
  struct queue_arg a = {.per_client = 200};
  for (int c = 0; c < 4; c++) a.ids[c] = n.events[c].id;
  pthread_mutex_lock(&n.mu);
  n.task = queue_then_stop_task;
  n.task_arg = &a;
  n.task_done = false;
  pthread_mutex_unlock(&n.mu);
  for (int c = 0; c < 4; c++) {
    int got = 0, rc;
    struct vsr_msg *m;
    while ((rc = vsr_client_recv(cl[c], &m, 10 * H_SEC)) == 0) {
      assert_int_equal(vsr_get_u32(m->data + 128), (uint32_t)got);
      assert_int_equal(m->size, 256 + 4096);
      got++;
      vsr_msg_unref(m);
    }
    assert_int_equal(got, 200);
    assert_int_equal(rc, VSR_ESHUTDOWN); /* CONNECTION_CLOSE 0x1003 */
    vsr_client_del(cl[c]);
  }
  pthread_join(n.thread, NULL);
  assert_int_equal(a.ok, 800);
  assert_int_equal(n.shutdown_result, 0);
  assert_int_equal(h_count(&n, VSR_PEER_LOST), 4);
  for (int i = 0; i < 4; i++) assert_int_equal(h_lost_reason(&n, i), VSR_ESHUTDOWN);
}

/* The ALPN policy as a bus option. Default: a client offering no ALPN (mainline's SDK) or
 * iggy.consensus.v1 is admitted; quic_alpn_required: only iggy.consensus.v1. One offering h3
 * is refused either way (0x178, reported as VSR_EALPN). */
static void test_alpn_policy(void **state) {
  (void)state;
  for (int required = 0; required < 2; required++) {
    struct h_node n;
    struct quic_info qi;
    quic_node_options(&n, H_SM, false);
    n.opts.quic.alpn_required = required;
    quic_node_start(&n, &qi);
    int err;
    struct vsr_client *c = quic_client(&qi, NULL, &err);
    if (required) {
      assert_int_equal(err, VSR_EALPN);
    } else {
      assert_int_equal(err, 0);
      ping(c, 7);
      vsr_client_del(c);
    }
    c = quic_client(&qi, "iggy.consensus.v1", &err);
    assert_int_equal(err, 0);
    ping(c, 8);
    vsr_client_del(c);
    c = quic_client(&qi, "h3", &err);
    assert_int_equal(err, VSR_EALPN);
    h_stop(&n, true);
  }
}

/* quic_max_bidi_streams 4: a per-request client has 4 Requests in flight on 4 streams and gets
 * every Reply (the transport test checks each lands on its Request's stream). */
static void test_per_request_pipelined(void **state) {
  (void)state;
  struct h_node n;
  struct quic_info qi;
  quic_node_options(&n, H_SM, true);
  n.opts.quic.max_bidi_streams = 4;
  quic_node_start(&n, &qi);
  int err;
  struct vsr_client *c = quic_client_model(&qi, NULL, VSR_QUIC_STREAMS_PER_REQUEST, 4, &err);
  assert_int_equal(err, 0);
  for (int round = 0; round < 3; round++) {
    bool seen[4] = {false, false, false, false};
    for (uint32_t i = 0; i < 4; i++) {
      struct vsr_msg *m = h_frame(c, VSR_CMD_REQUEST, 256 + 100, (uint32_t)round * 4 + i);
      assert_int_equal(vsr_client_send(c, m), 0);
      vsr_msg_unref(m);
    }
    for (int k = 0; k < 4; k++) {
      struct vsr_msg *r = NULL;
      assert_int_equal(vsr_client_recv(c, &r, 5 * H_SEC), 0);
      assert_int_equal(r->data[60], VSR_CMD_REPLY);
      uint64_t req = ((const struct vsr_reply_header *)r->data)->request;
      assert_true(req >= (uint64_t)round * 4 + 1 && req <= (uint64_t)round * 4 + 4);
      assert_false(seen[req - 1 - (uint64_t)round * 4]);
      seen[req - 1 - (uint64_t)round * 4] = true;
      vsr_msg_unref(r);
    }
  }
  vsr_client_del(c);
  h_stop(&n, true);
  assert_int_equal(h_count(&n, VSR_PEER_CONNECTED), 1);
}

/* The handshake grace bounds the handshake only: a client that opens its first stream well
 * after it (mainline's SDK may send its first request 11 s after connecting) is served. A
 * 300 ms grace and a first request after 1 s model the 10 s grace and the 12 s delay. */
static void test_first_stream_after_grace(void **state) {
  (void)state;
  struct h_node n;
  struct quic_info qi;
  quic_node_options(&n, H_SM, true);
  n.opts.handshake_grace_ns = 300000000ull;
  quic_node_start(&n, &qi);
  for (int model = 0; model < 2; model++) {
    int err;
    struct vsr_client *c = quic_client_model(&qi, NULL, (enum vsr_quic_streams)model, 0, &err);
    assert_int_equal(err, 0); /* handshake done, no stream yet */
    usleep(1000 * 1000);      /* > 3 graces; the client's own loop is not running either */
    assert_int_equal(vsr_client_state(c), 1);
    ping(c, 40 + (uint32_t)model);
    request(c, 40 + (uint32_t)model);
    vsr_client_del(c);
  }
  assert_int_equal(h_wait_events(&n, VSR_PEER_LOST, 2, 5 * H_SEC), 2);
  h_stop(&n, true);
  assert_int_equal(h_count(&n, VSR_PEER_CONNECTED), 2);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_tcp_and_quic_at_once),
      cmocka_unit_test(test_shutdown_drains_then_0x1003),
      cmocka_unit_test(test_alpn_policy),
      cmocka_unit_test(test_per_request_pipelined),
      cmocka_unit_test(test_first_stream_after_grace),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
