/* Bounded logs: a flood of bad frames, then of refused connections, writes at most a burst of
 * lines per call site; what is held back is reported as one "N more like this suppressed" line
 * with the exact N (every event is still counted in the stats). The interval is set to an hour
 * so that no token comes back during the test: the bounds are exact, not timing-dependent. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "harness.h"

#define BURST 20
#define BAD 200
#define REFUSED 100

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static char log_lines[1024][256];
static int log_n;

static void log_capture(void *user, enum vsr_log_level level, const char *line) {
  (void)user;
  (void)level;
  pthread_mutex_lock(&log_mu);
  if (log_n < 1024) snprintf(log_lines[log_n], sizeof log_lines[0], "%s", line);
  log_n++;
  pthread_mutex_unlock(&log_mu);
}

static int log_count(const char *a, const char *b) {
  int n = 0;
  pthread_mutex_lock(&log_mu);
  for (int i = 0; i < log_n && i < 1024; i++) {
    if (strstr(log_lines[i], a) && (!b || strstr(log_lines[i], b))) n++;
  }
  pthread_mutex_unlock(&log_mu);
  return n;
}

static int setup(void **state) {
  (void)state;
  log_n = 0;
  vsr_log_set_rate(BURST, 3600 * H_SEC);
  vsr_log_set_handler(log_capture, NULL);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  vsr_log_set_rate(VSR_LOG_BURST_DEFAULT, VSR_LOG_INTERVAL_NS_DEFAULT);
  vsr_log_set_handler(NULL, NULL);
  return 0;
}

static void stats_task(struct h_node *n, void *arg) { vsr_bus_stats(n->bus, arg); }

/* Waits (bounded) until the bus counted |want| closes with |reason|. */
static uint64_t wait_errors(struct h_node *n, int reason, uint64_t want) {
  struct vsr_bus_stats st;
  uint64_t end = vsrt_now() + 20 * H_SEC;
  do {
    h_run(n, stats_task, &st);
    if (st.errors[-reason] >= want) break;
    usleep(2000);
  } while (vsrt_now() < end);
  return st.errors[-reason];
}

static void bad_frame_flood_is_bounded(void **state) {
  (void)state;
  struct h_node n;
  h_options(&n);
  n.mode = H_SILENT;
  assert_int_equal(h_start(&n), 0);
  uint8_t h[256];
  for (int i = 0; i < BAD; i++) {
    int fd = h_raw(&n);
    assert_true(fd >= 0);
    memset(h, 0, sizeof h);
    h[60] = 30; /* no such command */
    vsr_put_u32(h + 48, 256);
    assert_true(vsrt_write_all(fd, h, sizeof h));
    assert_true(h_read_to_eof(fd) >= 0); /* closed, not left hanging */
    close(fd);
  }
  assert_int_equal(wait_errors(&n, VSR_EFRAME_COMMAND, BAD), BAD);
  assert_int_equal(log_count("VSR-FRAME", NULL), BURST);
  assert_int_equal(log_count("VSR-FRAME", "VSR_EFRAME_COMMAND"), BURST);
  assert_int_equal(log_count("suppressed", NULL), 0); /* the interval has not ended */
  h_stop(&n, true); /* vsr_bus_del writes the pending counts */
  assert_int_equal(log_count("VSR-FRAME", "180 more like this suppressed"), 1);
  assert_int_equal(log_count("VSR-FRAME", NULL), BURST + 1);
}

static void refused_connection_flood_is_bounded(void **state) {
  (void)state;
  struct h_node n;
  h_options(&n);
  n.mode = H_SILENT;
  n.opts.max_clients = 1;
  assert_int_equal(h_start(&n), 0);
  int holder = h_raw(&n);
  assert_true(holder >= 0);
  assert_int_equal(h_wait_events(&n, VSR_PEER_CONNECTED, 1, 5 * H_SEC), 1);
  for (int i = 0; i < REFUSED; i++) {
    int fd = h_raw(&n);
    assert_true(fd >= 0);
    assert_true(h_read_to_eof(fd) >= 0);
    close(fd);
  }
  struct vsr_bus_stats st;
  h_run(&n, stats_task, &st);
  assert_int_equal(st.clients_refused, REFUSED);
  assert_int_equal(log_count("VSR-CLIENT", "client refused"), BURST);
  vsr_log_flush();
  char want[64];
  snprintf(want, sizeof want, "%d more like this suppressed", REFUSED - BURST);
  assert_int_equal(log_count("VSR-CLIENT", want), 1);
  assert_int_equal(log_count("VSR-CLIENT", NULL), BURST + 1);
  close(holder);
  h_stop(&n, true);
}

int main(void) {
  vsrt_require_backend();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(bad_frame_flood_is_bounded, setup, teardown),
      cmocka_unit_test_setup_teardown(refused_connection_flood_is_bounded, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
