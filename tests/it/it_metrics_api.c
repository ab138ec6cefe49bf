/* The metrics API of the library: vsr_bus_metrics_render reports the size it needs and renders
 * exactly that much; counters in the text follow the traffic; the metrics_addr endpoint is named
 * by vsr_bus_listen_addr, serves a scrape, and a bus stopped (gracefully or at once) with a
 * scrape connection still open closes it and frees everything (ASan builds check the frees);
 * bad metrics options are refused at vsr_bus_new. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "harness.h"

struct render_res {
  int err_small, err_short, err_fit, err_addr;
  size_t need, need_short, written;
  char text[65536];
  char addr[64];
};

static void render_task(struct h_node *n, void *arg) {
  struct render_res *r = arg;
  r->err_small = vsr_bus_metrics_render(n->bus, NULL, 0, &r->need);
  char small[64];
  r->err_short = vsr_bus_metrics_render(n->bus, small, sizeof small, &r->need_short);
  r->err_fit = vsr_bus_metrics_render(n->bus, r->text, r->need, &r->written);
  r->err_addr = vsr_bus_listen_addr(n->bus, "metrics", r->addr, sizeof r->addr);
}

static void render_sizes_and_counters(void **state) {
  (void)state;
  struct h_node n;
  h_options(&n);
  n.mode = H_ECHO;
  assert_int_equal(h_start(&n), 0);
  static struct render_res r;
  memset(&r, 0, sizeof r);
  h_run(&n, render_task, &r);
  assert_int_equal(r.err_small, VSR_ELIMIT);
  assert_int_equal(r.err_short, VSR_ELIMIT);
  assert_int_equal(r.need_short, r.need);
  assert_true(r.need > 1000 && r.need < sizeof r.text);
  assert_int_equal(r.err_fit, 0);
  assert_int_equal(r.written, r.need - 1);
  assert_int_equal(strlen(r.text), r.written);
  assert_non_null(strstr(r.text, "\nvsrbus_frames_in_total{plane=\"client\",transport=\"tcp\"} 0\n"));
  assert_int_equal(r.err_addr, VSR_ENOTCONN); /* no endpoint configured */

  struct vsr_client *c = h_client(&n);
  assert_non_null(c);
  for (int i = 0; i < 3; i++) {
    struct vsr_msg *m = h_frame(c, VSR_CMD_PING_CLIENT, 256 + 100, (uint32_t)i), *rep = NULL;
    assert_int_equal(vsr_client_call(c, m, &rep, 5 * H_SEC), 0);
    vsr_msg_unref(m);
    vsr_msg_unref(rep);
  }
  h_run(&n, render_task, &r);
  assert_int_equal(r.err_fit, 0);
  assert_non_null(strstr(r.text, "\nvsrbus_frames_in_total{plane=\"client\",transport=\"tcp\"} 3\n"));
  assert_non_null(strstr(r.text, "\nvsrbus_in_bytes_total{plane=\"client\",transport=\"tcp\"} 1068\n"));
  assert_non_null(strstr(r.text, "\nvsrbus_frames_out_total{plane=\"client\",transport=\"tcp\"} 3\n"));
  assert_non_null(strstr(r.text, "\nvsrbus_clients_active 1\n"));
  vsr_client_del(c);
  h_stop(&n, true);
}

/* GET /metrics over a raw socket; returns the response (NUL-terminated) length or -1. */
static long http_get(const char *addr, const char *req, char *out, size_t cap) {
  int fd = vsrt_connect(addr);
  if (fd < 0) return -1;
  if (!vsrt_write_all(fd, req, strlen(req))) {
    close(fd);
    return -1;
  }
  size_t len = 0;
  for (;;) {
    ssize_t k = read(fd, out + len, cap - 1 - len);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) break;
    len += (size_t)k;
    if (len == cap - 1) break;
  }
  out[len] = '\0';
  close(fd);
  return (long)len;
}

static void endpoint_then_stop(bool graceful) {
  struct h_node n;
  h_options(&n);
  n.mode = H_ECHO;
  n.opts.metrics_addr = "127.0.0.1:0";
  n.opts.metrics_timeout_ns = 60 * H_SEC; /* the held connection must be closed by the stop */
  assert_int_equal(h_start(&n), 0);
  static struct render_res r;
  memset(&r, 0, sizeof r);
  h_run(&n, render_task, &r);
  assert_int_equal(r.err_addr, 0);
  assert_non_null(strstr(r.addr, "127.0.0.1:"));
  assert_string_not_equal(r.addr, "127.0.0.1:0");

  static char resp[65536];
  long len = http_get(r.addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", resp, sizeof resp);
  assert_true(len > 0);
  assert_int_equal(strncmp(resp, "HTTP/1.1 200 OK\r\n", 17), 0);
  assert_non_null(strstr(resp, "Content-Type: text/plain; version=0.0.4"));
  assert_non_null(strstr(resp, "\nvsrbus_metrics_scrapes_total 1\n"));
  len = http_get(r.addr, "DELETE /metrics HTTP/1.1\r\nHost: x\r\n\r\n", resp, sizeof resp);
  assert_true(len > 0);
  assert_int_equal(strncmp(resp, "HTTP/1.1 405 ", 13), 0);
  assert_non_null(strstr(resp, "Allow: GET\r\n"));
  len = http_get(r.addr, "GARBAGE\r\n\r\n", resp, sizeof resp);
  assert_true(len > 0);
  assert_int_equal(strncmp(resp, "HTTP/1.1 400 ", 13), 0);

  int held = vsrt_connect(r.addr);
  assert_true(held >= 0);
  assert_true(vsrt_write_all(held, "GET /met", 8));
  usleep(50000); /* let the bus accept it (either way the stop must close it) */
  h_stop(&n, graceful);
  assert_int_equal(h_read_to_eof(held), 0); /* closed, unanswered, well before 10 s */
  close(held);
}

static void endpoint_graceful_stop(void **state) {
  (void)state;
  endpoint_then_stop(true);
}

static void endpoint_immediate_del(void **state) {
  (void)state;
  endpoint_then_stop(false);
}

static void bad_options_refused(void **state) {
  (void)state;
  struct vsr_bus_options o;
  vsr_bus_options_default(&o);
  o.client_tcp_addr = "127.0.0.1:0";
  o.metrics_addr = "not an address";
  struct vsr_bus *bus = NULL;
  assert_int_equal(vsr_bus_new(&bus, &o, NULL, NULL), VSR_EADDR);
  o.metrics_addr = "127.0.0.1:0";
  o.metrics_max_conns = 0;
  assert_int_equal(vsr_bus_new(&bus, &o, NULL, NULL), VSR_ECONFIG);
  o.metrics_max_conns = 4;
  o.metrics_timeout_ns = 0;
  assert_int_equal(vsr_bus_new(&bus, &o, NULL, NULL), VSR_ECONFIG);
}

int main(void) {
  vsrt_require_backend();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(render_sizes_and_counters),
      cmocka_unit_test(endpoint_graceful_stop),
      cmocka_unit_test(endpoint_immediate_del),
      cmocka_unit_test(bad_options_refused),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
