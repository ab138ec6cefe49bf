/* Out of descriptors: `vsrbus node` under a low RLIMIT_NOFILE accepts the connections it cannot
 * serve and closes them at once (the client reads EOF instead of hanging in the backlog), writes
 * one warning for the whole episode (not one every 10 ms), and serves again once descriptors
 * free up. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "hostile.h"

#define NOFILE 24 /* the node needs about 8 for itself */
#define CLIENTS 40

enum outcome { SERVED, CLOSED, HUNG };

/* Connects, pings, and waits for the Pong or the close (a 5 s receive timeout means a hang). */
static enum outcome ping_once(const char *addr, uint32_t seq, int *fd_out) {
  int fd = vsrt_connect(addr);
  if (fd < 0) return HUNG;
  struct timeval tv = {5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  uint8_t buf[VSR_HEADER_SIZE];
  ho_ping(buf, seq);
  enum outcome o = HUNG;
  if (vsrt_write_all(fd, buf, sizeof buf)) {
    long r = ho_read_frame(fd, buf, sizeof buf);
    if (r == VSR_HEADER_SIZE && buf[60] == VSR_CMD_PONG_CLIENT && vsr_get_u32(buf + 128) == seq) {
      o = SERVED;
    } else if (r == 0) {
      o = CLOSED;
    }
  } else {
    o = CLOSED; /* the node closed it before the Ping was written */
  }
  if (o == SERVED) {
    *fd_out = fd; /* held open: it keeps one of the node's descriptors busy */
  } else {
    close(fd);
  }
  return o;
}

static void connections_beyond_the_fd_limit_are_closed_not_left_hanging(void **state) {
  (void)state;
  struct ho_node node;
  /* One shard: the reserve-descriptor trick is per listener while descriptors are per process,
   * so with several shards one can lose its reserve to another's thread and its clients wait
   * in its SO_REUSEPORT queue (docs/shards.md, "Not done"). */
  static const char *const one_shard[] = {"--shards", "1", NULL};
  int rc = ho_node_start(&node, NOFILE, one_shard);
  if (rc == VSRT_SKIP) skip();
  assert_int_equal(rc, 0);

  int held[CLIENTS];
  int nheld = 0, closed = 0, hung = 0;
  for (uint32_t i = 0; i < CLIENTS; i++) {
    int fd = -1;
    enum outcome o = ping_once(node.addr, i, &fd);
    if (o == SERVED) held[nheld++] = fd;
    else if (o == CLOSED) closed++;
    else hung++;
  }
  fprintf(stderr, "served %d, closed %d, hung %d\n", nheld, closed, hung);
  assert_int_equal(hung, 0);
  assert_true(nheld > 0 && nheld < NOFILE);
  assert_int_equal(nheld + closed, CLIENTS);
  assert_true(closed > 0);

  char *log = ho_log(&node);
  assert_non_null(log);
  assert_int_equal(ho_count(log, "VSR-ACCEPT", "Too many open files"), 1); /* one episode */
  free(log);

  /* Descriptors free up: service resumes. */
  for (int i = 0; i < nheld; i++) close(held[i]);
  enum outcome o = HUNG;
  uint64_t end = vsrt_now() + 10 * HO_SEC;
  for (uint32_t seq = 1000; vsrt_now() < end; seq++) {
    int fd = -1;
    o = ping_once(node.addr, seq, &fd);
    if (o == SERVED) {
      close(fd);
      break;
    }
    assert_int_equal(o, CLOSED);
    usleep(20000);
  }
  assert_int_equal(o, SERVED);

  assert_int_equal(ho_node_stop(&node, 10 * HO_SEC), 0);
  log = ho_log(&node);
  assert_non_null(log);
  assert_int_equal(ho_count(log, "VSR-ACCEPT", "WARN"), 1);
  assert_int_equal(ho_count(log, "VSR-ACCEPT", "accepting again"), 1);
  free(log);
  ho_node_cleanup(&node);
}

int main(void) {
  vsrt_require_backend();
  signal(SIGPIPE, SIG_IGN);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(connections_beyond_the_fd_limit_are_closed_not_left_hanging),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
