/* Plane discipline and precise reasons on the client plane (issue 12, rows 7 and 8): a client
 * may send Request, PingClient and PongClient, nothing else. A replica-plane command (Prepare,
 * the replica handshake, view change, repair ...) or a replica-to-client one (Reply) closes that
 * connection with VSR_EFRAME_PLANE, after the answers to what came before it; other clients
 * are served throughout. A client that resets its connection is reported as a reset. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "harness.h"

#include "bus/bus_impl.h"
#include "crypto/cert.h"
#include "transport/quic.h"
#include "quic_info.h"

/* A valid 256-byte frame of |cmd| (it passes the decoder's checks): zero fields, a defined
 * operation where the command has one, sealed. */
static void frame_of(uint8_t h[256], uint8_t cmd) {
  vsr_header_init(h, cmd, 256);
  if (cmd == VSR_CMD_PREPARE || cmd == VSR_CMD_REPAIR_PREPARE) {
    ((struct vsr_prepare_header *)h)->operation = VSR_OP_SEND_MESSAGES;
  } else if (cmd == VSR_CMD_PREPARE_OK) {
    ((struct vsr_prepare_ok_header *)h)->operation = VSR_OP_SEND_MESSAGES;
  } else if (cmd == VSR_CMD_REPLY) {
    ((struct vsr_reply_header *)h)->operation = VSR_OP_SEND_MESSAGES;
  }
  vsr_frame_seal(h);
  assert_int_equal(vsr_frame_check_header(h, 1u << 20), 0);
}

static const uint8_t refused[] = {
    VSR_CMD_RESERVED,        VSR_CMD_PING,           VSR_CMD_PONG,
    VSR_CMD_PREPARE,         VSR_CMD_PREPARE_OK,     VSR_CMD_REPLY,
    VSR_CMD_COMMIT,          VSR_CMD_START_VIEW_CHANGE, VSR_CMD_REPLICA_HELLO,
    VSR_CMD_REPLICA_CHALLENGE, VSR_CMD_REPLICA_FINISH, VSR_CMD_REPAIR_PREPARE,
};
#define NREFUSED (int)(sizeof refused / sizeof refused[0])

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

/* Reads until EOF. Returns the bytes read, or -1 on a reset or a 10 s stall. */
static long read_to_fin(int fd) {
  char buf[4096];
  long total = 0;
  for (;;) {
    ssize_t r = read(fd, buf, sizeof buf);
    if (r == 0) return total;
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return -1;
    total += r;
  }
}

struct stats_arg {
  struct vsr_bus_stats st;
};

static void stats_task(struct h_node *n, void *arg) {
  vsr_bus_stats(n->bus, &((struct stats_arg *)arg)->st);
}

static void tcp_replica_commands_refused(void **state) {
  (void)state;
  struct h_node n;
  h_options(&n);
  n.mode = H_SM;
  assert_int_equal(h_start(&n), 0);
  struct vsr_client *good = h_client(&n);
  assert_non_null(good);
  ping(good, 0);
  for (int k = 0; k < NREFUSED; k++) {
    uint64_t frames_before = n.frames;
    int fd = h_raw(&n);
    assert_true(fd >= 0);
    uint8_t h[512];
    vsr_header_init(h, VSR_CMD_PING_CLIENT, 256); /* answered: it came first */
    frame_of(h + 256, refused[k]);
    assert_true(vsrt_write_all(fd, h, sizeof h));
    assert_int_equal(read_to_fin(fd), 256); /* the PongClient, then FIN */
    close(fd);
    assert_int_equal(h_wait_events(&n, VSR_PEER_LOST, k + 1, 5 * H_SEC), k + 1);
    assert_int_equal(h_lost_reason(&n, k), VSR_EFRAME_PLANE);
    assert_int_equal(n.frames, frames_before + 1); /* the refused frame never reached the app */
    ping(good, 1 + (uint32_t)k);
  }
  struct stats_arg s;
  h_run(&n, stats_task, &s);
  assert_int_equal(s.st.errors[-VSR_EFRAME_PLANE], NREFUSED);
  assert_int_equal(s.st.clients_active, 1);
  vsr_client_del(good);
  h_stop(&n, true);
}


/* Over QUIC the same refusal ends the connection with 0x1004 PROTOCOL_VIOLATION. */
static void quic_replica_commands_refused(void **state) {
  (void)state;
  struct h_node n;
  h_options(&n);
  n.mode = H_SM;
  n.opts.quic.addr = "127.0.0.1:0";
  assert_int_equal(h_start(&n), 0);
  struct quic_info qi;
  h_run(&n, quic_info_task, &qi);
  struct vsr_client_options o;
  vsr_client_options_default(&o);
  o.transport = "quic";
  o.addr = qi.addr;
  o.quic.pin_sha256 = qi.pin;
  struct vsr_client *good = NULL;
  assert_int_equal(vsr_client_connect(&good, &o, 5 * H_SEC), 0);
  const uint8_t cmds[] = {VSR_CMD_PREPARE, VSR_CMD_REPLICA_HELLO, VSR_CMD_COMMIT};
  for (int k = 0; k < 3; k++) {
    struct vsr_client *bad = NULL;
    assert_int_equal(vsr_client_connect(&bad, &o, 5 * H_SEC), 0);
    ping(bad, 100); /* opens the stream; answered */
    struct vsr_msg *m = vsr_client_msg_new(bad, 256);
    frame_of(m->data, cmds[k]);
    assert_int_equal(vsr_client_send(bad, m), 0);
    vsr_msg_unref(m);
    struct vsr_msg *r = NULL;
    assert_int_equal(vsr_client_recv(bad, &r, 10 * H_SEC), VSR_EPROTO); /* 0x1004 */
    vsr_client_del(bad);
    assert_int_equal(h_wait_events(&n, VSR_PEER_LOST, k + 1, 5 * H_SEC), k + 1);
    assert_int_equal(h_lost_reason(&n, k), VSR_EFRAME_PLANE);
    ping(good, (uint32_t)k);
  }
  vsr_client_del(good);
  h_stop(&n, true);
}

/* A client that resets its connection (SO_LINGER 0, what a killed process with unread input
 * does) is reported as VSR_ERESET, not as a close at a frame boundary; one that closes normally
 * is VSR_ECLOSED. */
static void tcp_client_reset_reported_as_reset(void **state) {
  (void)state;
  struct h_node n;
  h_options(&n);
  n.mode = H_SM;
  assert_int_equal(h_start(&n), 0);
  for (int k = 0; k < 2; k++) {
    int fd = h_raw(&n);
    assert_true(fd >= 0);
    uint8_t h[256];
    vsr_header_init(h, VSR_CMD_PING_CLIENT, 256);
    assert_true(vsrt_write_all(fd, h, 256));
    uint8_t pong[256];
    size_t got = 0;
    while (got < 256) {
      ssize_t r = read(fd, pong + got, 256 - got);
      if (r < 0 && errno == EINTR) continue;
      assert_true(r > 0);
      got += (size_t)r;
    }
    if (k == 0) {
      struct linger lg = {1, 0};
      setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    }
    close(fd); /* k == 0: RST; k == 1: FIN */
    assert_int_equal(h_wait_events(&n, VSR_PEER_LOST, k + 1, 5 * H_SEC), k + 1);
    assert_int_equal(h_lost_reason(&n, k), k == 0 ? VSR_ERESET : VSR_ECLOSED);
  }
  struct stats_arg s;
  h_run(&n, stats_task, &s);
  assert_int_equal(s.st.errors[-VSR_ERESET], 1);
  assert_int_equal(s.st.errors[-VSR_ECLOSED], 1);
  h_stop(&n, true);
}

int main(void) {
  vsrt_require_backend();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(tcp_replica_commands_refused),
      cmocka_unit_test(quic_replica_commands_refused),
      cmocka_unit_test(tcp_client_reset_reported_as_reset),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
