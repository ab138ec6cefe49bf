/* Memory budgets on the client plane (issue 12, item 2), attacked as a stranger would:
 *  (a) connections sending only a header that claims 64 MiB (and nothing, or part of a body)
 *      reserve nothing / a few times what they sent: the reserved bytes stay within the
 *      client plane's budget (stalled bodies are evicted, largest first, with
 *      VSR_EMEMORY_BUDGET) and legit 1 MiB and 4 MiB Requests are all served;
 *  (c) with a small memory_max, a frame that cannot fit is refused with VSR_EMEMORY_MAX (at
 *      its header when it never could, as it grows otherwise) while small frames pass.
 * Outcomes only: served, closed with a reason, counted, bounded by the configured caps. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "harness.h"

#define MIB (1u << 20)

/* A valid Request header claiming |size| bytes. */
static void claim_header(uint8_t *h, uint32_t size, uint64_t request) {
  vsr_header_init(h, VSR_CMD_REQUEST, size);
  struct vsr_request_header *rq = (struct vsr_request_header *)h;
  rq->client = vsr_u128_from_u64(0xbad);
  rq->request = request;
  rq->session = 1;
  rq->operation = VSR_OP_SEND_MESSAGES;
}

/* Writes |n| body bytes (a pattern) to |fd|. Returns false once the node closed it. */
static bool send_body(int fd, size_t n) {
  static uint8_t chunk[256u << 10];
  memset(chunk, 0x5a, sizeof chunk);
  while (n > 0) {
    size_t k = n < sizeof chunk ? n : sizeof chunk;
    if (!vsrt_write_all(fd, chunk, k)) return false;
    n -= k;
  }
  return true;
}

static void stats_task(struct h_node *n, void *arg) { vsr_bus_stats(n->bus, arg); }

static struct vsr_bus_stats stats(struct h_node *n) {
  struct vsr_bus_stats st;
  h_run(n, stats_task, &st);
  return st;
}

/* Waits (bounded) until the client plane's frames in flight hold exactly |want| bytes. */
static uint64_t wait_filled(struct h_node *n, uint64_t want) {
  uint64_t end = vsrt_now() + 10 * H_SEC, v;
  while ((v = stats(n).rx_filled[VSR_PLANE_CLIENT]) != want && vsrt_now() < end) usleep(2000);
  return v;
}

static uint64_t wait_errors(struct h_node *n, int code, uint64_t want) {
  uint64_t end = vsrt_now() + 10 * H_SEC, v;
  while ((v = stats(n).errors[-code]) < want && vsrt_now() < end) usleep(2000);
  return v;
}

/* |count| Requests of |size| bytes, each answered with a Reply of the same size. Returns how
 * many were served. */
static int serve(struct vsr_client *c, uint32_t size, int count, uint32_t seed) {
  int ok = 0;
  for (int i = 0; i < count; i++) {
    struct vsr_msg *m = h_frame(c, VSR_CMD_REQUEST, size, seed + (uint32_t)i), *r = NULL;
    if (!m) continue;
    if (vsr_client_call(c, m, &r, 10 * H_SEC) == 0 && r->data[60] == VSR_CMD_REPLY &&
        r->size == size) {
      ok++;
    }
    vsr_msg_unref(r);
    vsr_msg_unref(m);
  }
  return ok;
}

static bool pinged(struct vsr_client *c, uint32_t seq) {
  struct vsr_msg *m = vsr_client_msg_new(c, 256), *r = NULL;
  m->data[60] = VSR_CMD_PING_CLIENT;
  vsr_put_u32(m->data + 128, seq);
  bool ok = vsr_client_call(c, m, &r, 5 * H_SEC) == 0 && r->data[60] == VSR_CMD_PONG_CLIENT &&
            vsr_get_u32(r->data + 128) == seq;
  vsr_msg_unref(m);
  vsr_msg_unref(r);
  return ok;
}

#define CLAIMS 16
#define SLOW 24
#define SLOW_BODY (3u * MIB)
#define SLOW_FRAME (256ull + SLOW_BODY)

/* Reads nothing, true once the node closed |fd| (EOF or reset) within 10 s. */
static bool closed_by_node(int fd) {
  struct timeval tv = {10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  char c;
  ssize_t r = recv(fd, &c, 1, 0);
  return r == 0 || (r < 0 && errno == ECONNRESET);
}

/* (a) 16 header-only claims of 64 MiB (1 GiB in all, 4x memory_max) reserve nothing; 24 that
 * also send 3 MiB of body would hold 120 MiB of a 96 MiB client budget, so the budget evicts
 * the largest stalled ones; legit 1 MiB and 4 MiB Requests are all served (they evict stalled
 * claims when they need room); a 60 MiB body that would need more than any stalled frame holds
 * is refused. Reserved bytes stay within the budget, and the accounting returns to zero when
 * they leave. */
static void claims_do_not_starve_clients(void **state) {
  (void)state;
  struct h_node n;
  h_options(&n);
  n.mode = H_SM;
  n.opts.memory_max = 256u * MIB;
  n.opts.client_memory_budget = 96u * MIB;
  assert_int_equal(h_start(&n), 0);
  uint8_t h[256];
  int claim[CLAIMS], slow[SLOW];
  for (int i = 0; i < CLAIMS; i++) {
    claim[i] = h_raw(&n);
    assert_true(claim[i] >= 0);
    claim_header(h, 64u * MIB, (uint64_t)i + 1);
    assert_true(vsrt_write_all(claim[i], h, 256));
  }
  for (int i = 0; i < SLOW; i++) {
    slow[i] = h_raw(&n);
    assert_true(slow[i] >= 0);
    claim_header(h, 64u * MIB, 100 + (uint64_t)i);
    assert_true(vsrt_write_all(slow[i], h, 256));
    (void)send_body(slow[i], SLOW_BODY); /* fails if the node evicted it meanwhile */
  }
  /* Every slow body is either held whole or was evicted. */
  uint64_t end = vsrt_now() + 10 * H_SEC;
  struct vsr_bus_stats st;
  for (;;) {
    st = stats(&n);
    uint64_t held = st.rx_filled[VSR_PLANE_CLIENT];
    if ((held % SLOW_FRAME == 0 && held / SLOW_FRAME + st.errors[-VSR_EMEMORY_BUDGET] == SLOW) ||
        vsrt_now() > end) {
      break;
    }
    usleep(2000);
  }
  uint64_t evicted = st.errors[-VSR_EMEMORY_BUDGET];
  assert_int_equal(st.rx_filled[VSR_PLANE_CLIENT] / SLOW_FRAME + evicted, SLOW);
  assert_true(evicted >= SLOW - 96 / 5); /* 5 MiB buffers: at most 19 fit in 96 MiB */
  assert_true(st.rx_reserved[VSR_PLANE_CLIENT] <= st.rx_budget[VSR_PLANE_CLIENT]);
  assert_true(st.rx_reserved_peak[VSR_PLANE_CLIENT] <= st.rx_budget[VSR_PLANE_CLIENT]);
  assert_int_equal(st.rx_budget[VSR_PLANE_CLIENT], 96u * MIB);
  assert_int_equal(st.memory_max, 256u * MIB);
  assert_true(st.memory_peak <= st.memory_max);

  /* Legit Requests: all served, whatever the strangers hold. */
  struct vsr_client *c = h_client(&n);
  assert_non_null(c);
  assert_int_equal(serve(c, MIB, 10, 1), 10);
  assert_int_equal(serve(c, 4 * MIB, 5, 100), 5);

  /* A greedy stranger sends 60 MiB of a 64 MiB frame: it would need more than any stalled frame
   * holds, so it is refused (VSR_EMEMORY_BUDGET) and closed; legit Requests still pass. */
  int greedy = h_raw(&n);
  assert_true(greedy >= 0);
  claim_header(h, 64u * MIB, 200);
  assert_true(vsrt_write_all(greedy, h, 256));
  (void)send_body(greedy, 60u * MIB); /* fails once the node closed it */
  assert_true(closed_by_node(greedy));
  close(greedy);
  assert_int_equal(serve(c, 4 * MIB, 5, 300), 5);
  assert_int_equal(serve(c, MIB, 10, 400), 10);
  st = stats(&n);
  assert_true(st.errors[-VSR_EMEMORY_BUDGET] > evicted);
  assert_true(st.rx_reserved_peak[VSR_PLANE_CLIENT] <= st.rx_budget[VSR_PLANE_CLIENT]);
  assert_true(st.memory_peak <= st.memory_max);
  assert_int_equal(st.errors[-VSR_EMEMORY_MAX] + st.errors[-VSR_EPOOL], 0);
  /* The header-only claims are still open: claiming alone costs the node nothing. */
  for (int i = 0; i < CLAIMS; i++) {
    char b;
    assert_int_equal(recv(claim[i], &b, 1, MSG_DONTWAIT), -1);
    assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
  }

  /* Everyone leaves: the books return to zero. */
  for (int i = 0; i < CLAIMS; i++) close(claim[i]);
  for (int i = 0; i < SLOW; i++) close(slow[i]);
  vsr_client_del(c);
  end = vsrt_now() + 10 * H_SEC;
  while ((st = stats(&n)).clients_active > 0 && vsrt_now() < end) usleep(2000);
  assert_int_equal(st.clients_active, 0);
  assert_int_equal(st.rx_reserved[VSR_PLANE_CLIENT], 0);
  assert_int_equal(st.rx_filled[VSR_PLANE_CLIENT], 0);
  h_stop(&n, true);
}

/* (c) memory_max 32 MiB: a 48 MiB frame is refused at its header; a 30 MiB frame is received
 * until its buffer would have to grow past the cap, then refused; small frames pass all along,
 * and so does a 4 MiB Request once the refused frame's memory is back. A buffer grows to at
 * most 4x what it holds: up to 6 MiB held every growth fits (6 + 24 MiB), and reaching 30 MiB
 * needs at least 7.5 + 30 MiB, so the refusal comes whatever steps the read sizes made. */
static void memory_max_refuses_large_frames(void **state) {
  (void)state;
  struct h_node n;
  h_options(&n);
  n.mode = H_SM;
  n.opts.memory_max = 32u * MIB;
  n.opts.client_memory_budget = 32u * MIB; /* so the node-wide cap is what refuses */
  assert_int_equal(h_start(&n), 0);
  struct vsr_client *c = h_client(&n);
  assert_non_null(c);
  assert_true(pinged(c, 1));
  assert_int_equal(serve(c, 64u << 10, 3, 1), 3);

  uint8_t h[256];
  int fd = h_raw(&n);
  assert_true(fd >= 0);
  claim_header(h, 48u * MIB, 1);
  assert_true(vsrt_write_all(fd, h, 256));
  assert_int_equal(h_read_to_eof(fd), 0); /* closed at once, nothing reserved */
  close(fd);
  assert_int_equal(h_wait_events(&n, VSR_PEER_LOST, 1, 10 * H_SEC), 1);
  assert_int_equal(h_lost_reason(&n, 0), VSR_EMEMORY_MAX);
  assert_true(pinged(c, 2));

  fd = h_raw(&n);
  assert_true(fd >= 0);
  claim_header(h, 30u * MIB, 2);
  assert_true(vsrt_write_all(fd, h, 256));
  assert_true(send_body(fd, 6u * MIB));
  assert_int_equal(wait_filled(&n, 256 + 6u * MIB), 256 + 6u * MIB);
  for (uint32_t i = 0; i < 10; i++) assert_true(pinged(c, 10 + i)); /* small frames pass */
  assert_int_equal(serve(c, 1024, 5, 10), 5);
  assert_int_equal(serve(c, 64u << 10, 5, 20), 5);
  (void)send_body(fd, 24u * MIB - 256); /* the rest: its buffer cannot grow to 30 MiB */
  assert_int_equal(wait_errors(&n, VSR_EMEMORY_MAX, 2), 2);
  assert_int_equal(h_wait_events(&n, VSR_PEER_LOST, 2, 10 * H_SEC), 2);
  assert_int_equal(h_lost_reason(&n, 1), VSR_EMEMORY_MAX);
  close(fd);

  for (uint32_t i = 0; i < 10; i++) assert_true(pinged(c, 100 + i));
  assert_int_equal(serve(c, 4 * MIB, 2, 30), 2);
  struct vsr_bus_stats st = stats(&n);
  assert_int_equal(st.memory_max, 32u * MIB);
  assert_true(st.memory_peak <= st.memory_max);
  assert_int_equal(st.rx_reserved[VSR_PLANE_CLIENT], 0);
  assert_int_equal(st.errors[-VSR_EMEMORY_MAX], 2);
  vsr_client_del(c);
  h_stop(&n, true);
}

int main(void) {
  vsrt_require_backend();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(claims_do_not_starve_clients),
      cmocka_unit_test(memory_max_refuses_large_frames),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
