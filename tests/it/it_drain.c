/* A drain that loses nothing (issue 12, row 6): the node shuts down while a client is still
 * sending 256 KiB Requests as fast as its window allows. Every Request the node accepted
 * (delivered to on_message) gets its Reply, the client sees a clean end (TCP: FIN, never a
 * reset; QUIC: 0x1003), and vsr_bus_shutdown reports nothing dropped. Before the fix the node
 * closed its socket with the client's unread Requests in it: the kernel sent RST and the
 * Replies still in flight were lost. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "harness.h"

#include "bus/bus_impl.h"
#include "crypto/cert.h"
#include "transport/quic.h"

#define REQ_SIZE (256u << 10)
#define WINDOW 64       /* Requests in flight (16 MiB): the node always has unread input */
#define BEFORE_STOP 20  /* Replies before the shutdown starts */

/* Reads until EOF. Returns the bytes read, or -1 on a reset or a 10 s stall. */
static long read_to_fin(int fd) {
  char buf[4096];
  long total = 0;
  for (;;) {
    ssize_t r = read(fd, buf, sizeof buf);
    if (r == 0) return total;
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      fprintf(stderr, "read_to_fin: %s after %ld bytes\n", strerror(errno), total);
      return -1;
    }
    total += r;
  }
}

static void quic_addr_task(struct h_node *n, void *arg) {
  char *pin = (char *)arg + 64;
  vsr_bus_listen_addr(n->bus, "quic", arg, 64);
  uint8_t fp[32];
  vsri_quic_listener_fingerprint(vsri_bus_client_listener(n->bus, "quic"), fp);
  vsri_fingerprint_format(fp, pin);
}

static void shutdown_while_sending(bool quic) {
  struct h_node n;
  h_options(&n);
  n.mode = H_SM;
  n.opts.peer_queue_bytes_max = 0; /* a full window of Replies never meets backpressure */
  char qaddr[64 + VSRI_FINGERPRINT_TEXT_LEN];
  if (quic) {
    n.opts.client_tcp_addr = NULL;
    n.opts.quic.addr = "127.0.0.1:0";
  }
  assert_int_equal(h_start(&n), 0);
  struct vsr_client_options o;
  vsr_client_options_default(&o);
  o.addr = n.addr;
  if (quic) {
    h_run(&n, quic_addr_task, qaddr);
    o.transport = "quic";
    o.addr = qaddr;
    o.quic.pin_sha256 = qaddr + 64;
  }
  struct vsr_client *c = NULL;
  assert_int_equal(vsr_client_connect(&c, &o, 5 * H_SEC), 0);
  uint64_t sent = 0, replies = 0;
  bool stopping = false;
  int end_reason = 0;
  uint64_t end = vsrt_now() + 30 * H_SEC;
  while (vsrt_now() < end) {
    while (sent - replies < WINDOW) {
      struct vsr_msg *m = h_frame(c, VSR_CMD_REQUEST, REQ_SIZE, (uint32_t)sent);
      assert_non_null(m);
      int err = vsr_client_send(c, m);
      vsr_msg_unref(m);
      if (err) break; /* closed: the end reason comes from recv */
      sent++;
    }
    struct vsr_msg *r = NULL;
    int err = vsr_client_recv(c, &r, 20 * 1000000ull);
    if (err == VSR_ETIMEDOUT) continue;
    if (err < 0) {
      end_reason = err;
      break;
    }
    assert_int_equal(r->data[60], VSR_CMD_REPLY);
    assert_int_equal(r->size, REQ_SIZE);
    assert_int_equal(((const struct vsr_reply_header *)r->data)->request, replies + 1);
    vsr_msg_unref(r);
    replies++;
    if (replies == BEFORE_STOP && !stopping) {
      stopping = true;
      atomic_store(&n.stop, 1); /* vsr_bus_shutdown while the window is full */
    }
  }
  assert_true(stopping);
  pthread_join(n.thread, NULL);
  pthread_mutex_destroy(&n.mu);
  pthread_cond_destroy(&n.cv);
  /* Every Request the node accepted was answered, and the client saw no reset. */
  fprintf(stderr, "sent %llu, node accepted %llu, replies %llu, end %s\n",
          (unsigned long long)sent, (unsigned long long)n.frames, (unsigned long long)replies,
          vsr_errname(end_reason));
  assert_int_equal(end_reason, quic ? VSR_ESHUTDOWN : VSR_ECLOSED);
  assert_true(replies >= BEFORE_STOP);
  assert_int_equal(replies, n.frames);
  assert_int_equal(n.shutdown_result, 0);
  assert_int_equal(h_count(&n, VSR_PEER_LOST), 1);
  assert_int_equal(h_lost_reason(&n, 0), VSR_ESHUTDOWN);
  vsr_client_del(c);
}

static void tcp_shutdown_while_client_sends(void **state) {
  (void)state;
  shutdown_while_sending(false);
}

static void quic_shutdown_while_client_sends(void **state) {
  (void)state;
  shutdown_while_sending(true);
}

/* The half-close itself: after a frame error the node answers what came before, sends FIN and
 * keeps reading until the client closes, so bytes the client sent after the bad frame never
 * turn into a reset that would destroy the answer. */
static void tcp_frame_error_answer_survives_more_input(void **state) {
  (void)state;
  struct h_node n;
  h_options(&n);
  n.mode = H_SM;
  assert_int_equal(h_start(&n), 0);
  int fd = h_raw(&n);
  assert_true(fd >= 0);
  uint8_t h[256];
  memset(h, 0, sizeof h);
  h[60] = VSR_CMD_PING_CLIENT;
  vsr_put_u32(h + 48, 256);
  assert_true(vsrt_write_all(fd, h, 256)); /* answered */
  h[60] = 200;                             /* not a command: VSR_EFRAME_COMMAND */
  assert_true(vsrt_write_all(fd, h, 256));
  static uint8_t junk[1 << 20]; /* the node has not read this when it closes */
  memset(junk, 0x5a, sizeof junk);
  assert_true(vsrt_write_all(fd, junk, sizeof junk));
  assert_int_equal(read_to_fin(fd), 256); /* the PongClient, then FIN: no ECONNRESET */
  close(fd);
  assert_int_equal(h_wait_events(&n, VSR_PEER_LOST, 1, 5 * H_SEC), 1);
  assert_int_equal(h_lost_reason(&n, 0), VSR_EFRAME_COMMAND);
  h_stop(&n, true);
  assert_int_equal(n.shutdown_result, 0);
}

int main(void) {
  vsrt_require_backend();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(tcp_shutdown_while_client_sends),
      cmocka_unit_test(quic_shutdown_while_client_sends),
      cmocka_unit_test(tcp_frame_error_answer_survives_more_input),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
