/* `vsrbus node` against 10 clients that send 64 KiB Requests and never read: they are closed as
 * slow peers (one VSR-SLOW line each), a good client is served 100 %, and the final line is
 * honest: replies and pongs count what the bus accepted, and every accepted frame was either
 * written or dropped at close (replies + pongs = frames out + frames dropped on close). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "hostile.h"

#define REQ_SIZE (64u * 1024 + 256)

struct final_line {
  unsigned long long in, out, dropped, replies, pongs, clients, refused_replies, refused_frames,
      on_close, slow;
};

static int parse_final(const char *log, struct final_line *f) {
  const char *at = log ? strstr(log, "vsrbus node: stopped: ") : NULL;
  if (!at) return -1;
  int n = sscanf(at,
                 "vsrbus node: stopped: %llu frames in, %llu out, %llu dropped, %llu replies, "
                 "%llu pongs, %llu clients served; %llu replies refused, %llu frames refused "
                 "(queue full), %llu frames dropped at close, %llu slow peers closed",
                 &f->in, &f->out, &f->dropped, &f->replies, &f->pongs, &f->clients,
                 &f->refused_replies, &f->refused_frames, &f->on_close, &f->slow);
  return n == 10 ? 0 : -1;
}

static void node_final_line_is_honest_under_slow_clients(void **state) {
  (void)state;
  /* The timeout from the INI file, the queue from a flag: both paths of the node's options. */
  char ini[] = "/tmp/vsrbus-it-slow-XXXXXX";
  int ini_fd = mkstemp(ini);
  assert_true(ini_fd >= 0);
  const char *text = "[bus]\nslow_peer_timeout_ms = 200\npeer_queue_bytes_max = 67108864\n"
                     "log_burst = 20\nlog_interval_ms = 1000\n";
  assert_int_equal(write(ini_fd, text, strlen(text)), (ssize_t)strlen(text));
  close(ini_fd);
  struct ho_node node;
  const char *args[] = {"--config", ini, "--peer-queue", "8", NULL};
  int rc = ho_node_start(&node, 0, args);
  unlink(ini);
  if (rc == VSRT_SKIP) skip();
  assert_int_equal(rc, 0);

  struct ho_slow slow;
  assert_int_equal(ho_slow_start(&slow, node.addr, 10, REQ_SIZE, 30 * HO_SEC), 0);
  int good = vsrt_connect(node.addr);
  assert_true(good >= 0);
  static uint8_t req[REQ_SIZE], rep[REQ_SIZE];
  int served = 0;
  for (uint32_t i = 0; i < 30; i++) {
    ho_request(req, REQ_SIZE, i);
    assert_true(vsrt_write_all(good, req, REQ_SIZE));
    assert_int_equal(ho_read_frame(good, rep, sizeof rep), REQ_SIZE);
    assert_int_equal(rep[60], VSR_CMD_REPLY);
    assert_int_equal(((struct vsr_reply_header *)rep)->request, i + 1);
    served++;
  }
  assert_int_equal(served, 30);
  assert_int_equal(ho_slow_join(&slow), 10); /* every slow client was closed by the node */
  close(good);
  assert_int_equal(ho_node_stop(&node, 15 * HO_SEC), 0);

  char *log = ho_log(&node);
  assert_non_null(log);
  struct final_line f;
  if (parse_final(log, &f) != 0) fail_msg("no final line in:\n%s", log);
  fprintf(stderr, "final: in %llu out %llu replies %llu pongs %llu refused %llu/%llu on_close "
          "%llu slow %llu\n", f.in, f.out, f.replies, f.pongs, f.refused_replies,
          f.refused_frames, f.on_close, f.slow);
  assert_int_equal(f.slow, 10);
  assert_int_equal(ho_count(log, "VSR-SLOW", "VSR_ESLOW_PEER"), 10);
  assert_true(f.refused_frames > 0);
  assert_int_equal(f.dropped, f.refused_frames + f.on_close); /* nothing sent to absent peers */
  assert_true(f.refused_replies >= f.refused_frames);
  assert_true(f.replies >= 30);
  /* Honest: everything the state machine counted was accepted by the bus, and everything the
   * bus accepted was written or dropped at close, nothing else. */
  assert_int_equal(f.replies + f.pongs, f.out + f.on_close);
  free(log);
  ho_node_cleanup(&node);
}

int main(void) {
  vsrt_require_backend();
  signal(SIGPIPE, SIG_IGN);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(node_final_line_is_honest_under_slow_clients),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
