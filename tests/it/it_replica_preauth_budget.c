/* (b) of issue 12, item 2: strangers on a backup's replica port send headers claiming 64 MiB
 * before any handshake (8 of them: twice the backup's memory_max). Before the handshake a
 * replica connection accepts only 256-byte frames, so each is refused at its header with
 * VSR_EFRAME_PREAUTH (closed, counted, logged with its address) and reserves nothing, while the
 * authenticated primary's 2 MiB Prepares to that backup keep flowing, every one acknowledged. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "replica_harness.h"

#define MIB (1u << 20)
#define STRANGERS 8
#define PREPARES 20
#define PREPARE_SIZE (2u * MIB)

struct big_prepares {
  uint8_t to;
  int sent;
};

/* On the primary's bus thread: PREPARES Prepares of 2 MiB with a checksummed body. */
static void send_big_prepares(struct r_node *n, void *arg) {
  struct big_prepares *a = arg;
  for (int i = 0; i < PREPARES; i++) {
    struct vsr_msg *m = vsr_bus_msg_new(n->bus, PREPARE_SIZE);
    if (!m) continue;
    struct vsr_prepare_header *p = (struct vsr_prepare_header *)m->data;
    p->command = VSR_CMD_PREPARE;
    p->replica = n->opts.replica_index;
    p->cluster = vsri_auth_cluster_id(R_CLUSTER);
    p->op = 1000 + (uint64_t)i;
    for (uint32_t k = VSR_HEADER_SIZE; k < PREPARE_SIZE; k++) m->data[k] = (uint8_t)(k * 7 + i);
    vsr_prepare_set_body_checksum(m->data);
    vsr_frame_seal(m->data);
    if (vsr_bus_send_to_replica(n->bus, a->to, m) == 0) a->sent++;
    vsr_msg_unref(m);
  }
}

static void claims_before_handshake_are_refused(void **state) {
  (void)state;
  r_log_capture();
  struct r_node n[2];
  r_options(&n[0], 0, 2);
  r_options(&n[1], 1, 2);
  n[1].answer_prepare = true;
  n[1].opts.memory_max = 256u * MIB;
  n[1].opts.handshake_grace_ns = 60 * R_SEC; /* only the frame cap can close them early */
  assert_int_equal(r_start_cluster(n, 2), 0);
  assert_int_equal(r_wait(&n[0], VSR_PEER_AUTHENTICATED, 1, 1, 10 * R_SEC), 1);
  assert_int_equal(r_wait(&n[1], VSR_PEER_AUTHENTICATED, 0, 1, 10 * R_SEC), 1);

  /* The strangers: sealed Prepare headers (half) and Request headers claiming 64 MiB. */
  int fds[STRANGERS];
  for (int i = 0; i < STRANGERS; i++) {
    fds[i] = vsrt_connect(n[1].replica_addr);
    assert_true(fds[i] >= 0);
    uint8_t h[256];
    vsr_header_init(h, i % 2 ? VSR_CMD_PREPARE : VSR_CMD_REQUEST, 64u * MIB);
    h[61] = 0;
    vsr_put_u128(h + 32, vsri_auth_cluster_id(R_CLUSTER));
    vsr_frame_seal(h);
    assert_true(vsrt_write_all(fds[i], h, 256));
  }
  /* The primary's Prepares go out while the strangers are connected. */
  struct big_prepares a = {.to = 1};
  r_run(&n[0], send_big_prepares, &a);
  assert_int_equal(a.sent, PREPARES);

  for (int i = 0; i < STRANGERS; i++) {
    assert_true(r_wait_eof(fds[i], 10 * R_SEC)); /* refused at once, well before the grace */
    close(fds[i]);
  }
  assert_int_equal(r_wait_errors(&n[1], VSR_EFRAME_PREAUTH, STRANGERS, 10 * R_SEC), STRANGERS);
  assert_true(r_log_count("VSR_EFRAME_PREAUTH", "max 256 before the replica handshake") >= 1);
  assert_true(r_log_count("127.0.0.1:", "VSR_EFRAME_PREAUTH") >= 1); /* names the peer */

  assert_int_equal(r_wait_frames(&n[1], VSR_CMD_PREPARE, PREPARES, 20 * R_SEC), PREPARES);
  assert_int_equal(r_wait_frames(&n[0], VSR_CMD_PREPARE_OK, PREPARES, 20 * R_SEC), PREPARES);
  for (int i = 0; i < PREPARES; i++) assert_int_equal(r_frames_op(&n[1], VSR_CMD_PREPARE, 1000 + (uint64_t)i), 1);

  struct r_stats_arg s = r_stats(&n[1]);
  assert_true(s.st.bytes_in >= (uint64_t)PREPARES * PREPARE_SIZE);
  assert_int_equal(s.st.replicas_connected, 1);
  assert_int_equal(s.st.handshakes_inflight, 0);
  assert_int_equal(s.st.rx_reserved[VSR_PLANE_REPLICA], 0);
  assert_true(s.st.rx_reserved_peak[VSR_PLANE_REPLICA] >= PREPARE_SIZE);
  assert_true(s.st.memory_peak <= s.st.memory_max);
  assert_int_equal(s.st.errors[-VSR_EPOOL] + s.st.errors[-VSR_EMEMORY_MAX], 0);
  assert_int_equal(r_count(&n[0], VSR_PEER_LOST, -1), 0); /* the link was never cut */
  assert_int_equal(r_count(&n[1], VSR_PEER_LOST, -1), 0);

  r_stop(&n[0], true);
  r_stop(&n[1], true);
}

int main(void) {
  vsrt_require_backend();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(claims_before_handshake_are_refused),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
