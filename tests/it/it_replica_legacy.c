/* Replica auth off (legacy mode, Iggy mainline's default; spec/bus.md §5) over real sockets.
 * A legacy dialer - a raw socket that sends a ReplicaHello with an all-zero nonce, reads
 * nothing, then consensus frames - joins a bus with replica_auth off, and the same Hello is
 * closed without a reject frame by a bus with auth on. A bus dialing in legacy mode joins a raw
 * legacy acceptor (which reads the Hello and answers nothing) and its frames flow. The start-up
 * WARN says the plane is unauthenticated. Secrets up to 64 KiB authenticate; longer ones, or
 * none with auth on, are refused. Then the same through `vsrbus node --replica-auth off`
 * processes, whose demo state machine answers a replica's Ping with a Pong. */
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "replica_harness.h"

static vsr_u128 cluster_id;

static int raw_listen(char *addr, size_t len) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t alen = sizeof a;
  assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
  assert_int_equal(listen(fd, 16), 0);
  getsockname(fd, (struct sockaddr *)&a, &alen);
  snprintf(addr, len, "127.0.0.1:%u", ntohs(a.sin_port));
  return fd;
}

/* Accepts the next connection (bounded) and reads its first header: a legacy Hello from
 * replica |from| of |cluster|, nonce and the rest of reserved_command all zero. */
static int raw_accept_legacy_hello(int lfd, vsr_u128 cluster, uint8_t from) {
  struct pollfd p = {lfd, POLLIN, 0};
  assert_int_equal(poll(&p, 1, 10000), 1);
  int fd = accept(lfd, NULL, NULL);
  assert_true(fd >= 0);
  struct timeval tv = {10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  uint8_t h[256];
  static const uint8_t zero[128];
  assert_int_equal(r_read_header(fd, h), 1);
  assert_int_equal(h[60], VSR_CMD_REPLICA_HELLO);
  assert_int_equal(h[61], from);
  assert_int_equal(vsr_hdr_size(h), 256);
  assert_true(vsr_u128_eq(vsr_get_u128(h + 32), cluster));
  assert_memory_equal(h + 128, zero, sizeof zero); /* no nonce: the legacy announce */
  return fd;
}

/* A header-only generic frame |cmd| from |replica| with |stamp| at reserved_command[0..8]. */
static void generic_frame(uint8_t out[256], uint8_t cmd, vsr_u128 cluster, uint8_t replica,
                          uint64_t stamp) {
  vsr_header_init(out, cmd, 256);
  vsr_put_u128(out + 32, cluster);
  out[61] = replica;
  vsr_put_u64(out + 128, stamp);
}

/* ---- bus against raw sockets -------------------------------------------------------------- */

static void legacy_dialer_joins_auth_off_refused_by_auth_on(void **state) {
  (void)state;
  struct r_node n;
  r_options(&n, 1, 2);
  n.opts.replica_auth = VSR_REPLICA_AUTH_OFF;
  n.opts.secret = NULL; /* not needed, and not required, in legacy mode */
  n.opts.secret_len = 0;
  int warned = r_log_count("UNAUTHENTICATED", "replica auth off");
  assert_int_equal(r_start(&n), 0);
  assert_int_equal(r_log_count("UNAUTHENTICATED", "replica auth off"), warned + 1);

  int fd = vsrt_connect(n.replica_addr);
  assert_true(fd >= 0);
  uint8_t two[512];
  r_hello(two, cluster_id, 0, NULL);
  generic_frame(two + 256, VSR_CMD_PING, cluster_id, 0, 0x1122334455667788ull);
  assert_true(vsrt_write_all(fd, two, sizeof two)); /* Hello and Ping back to back */
  assert_int_equal(r_wait(&n, VSR_PEER_AUTHENTICATED, 0, 1, 10 * R_SEC), 1);
  assert_int_equal(r_wait_frames(&n, VSR_CMD_PING, 1, 10 * R_SEC), 1);
  assert_true(r_stats(&n).linked[0]);

  /* Consensus frames flow back to the legacy dialer; the first bytes it reads are the frame,
   * not a ReplicaChallenge. */
  assert_int_equal(r_send(&n, 0, VSR_CMD_PREPARE, 42), 0);
  uint8_t h[256];
  assert_int_equal(r_read_header(fd, h), 1);
  assert_int_equal(h[60], VSR_CMD_PREPARE);
  assert_int_equal(((struct vsr_prepare_header *)h)->op, 42);
  /* A second legacy dialer claiming the same id is a duplicate, as with auth on. */
  int dup = vsrt_connect(n.replica_addr);
  assert_true(dup >= 0);
  assert_true(vsrt_write_all(dup, two, 256));
  assert_true(r_wait_eof(dup, 10 * R_SEC));
  close(dup);
  assert_int_equal(r_wait_errors(&n, VSR_EDUPLICATE, 1, 10 * R_SEC), 1);
  assert_true(r_stats(&n).linked[0]);
  close(fd);
  assert_int_equal(r_wait(&n, VSR_PEER_LOST, 0, 1, 10 * R_SEC), 1);
  r_stop(&n, true);

  /* Auth on (the default): the same Hello is closed without a single byte back. */
  r_options(&n, 1, 2);
  assert_int_equal(r_start(&n), 0);
  fd = vsrt_connect(n.replica_addr);
  assert_true(fd >= 0);
  assert_true(vsrt_write_all(fd, two, sizeof two));
  assert_int_equal(r_read_header(fd, h), 0); /* EOF (or reset), no reject frame */
  close(fd);
  assert_int_equal(r_wait_errors(&n, VSR_EAUTH_REQUIRED, 1, 10 * R_SEC), 1);
  assert_int_equal(r_count(&n, VSR_PEER_CONNECTED, -1), 0);
  assert_int_equal(r_frames(&n, VSR_CMD_PING), 0);
  r_stop(&n, true);
}

static void legacy_bus_dialer_joins_legacy_acceptor(void **state) {
  (void)state;
  char laddr[64];
  int lfd = raw_listen(laddr, sizeof laddr);
  struct r_node n;
  r_options(&n, 0, 2);
  r_set_addr(&n, 1, laddr);
  n.opts.replica_auth = VSR_REPLICA_AUTH_OFF;
  n.opts.handshake_grace_ns = 200000000ull; /* a legacy link must not be closed by it */
  n.opts.reconnect_period_ns = 50000000ull;
  assert_int_equal(r_start(&n), 0);
  int fd = raw_accept_legacy_hello(lfd, cluster_id, 0);
  /* Nothing is sent back: the dialer is linked as soon as its Hello is out. */
  assert_int_equal(r_wait(&n, VSR_PEER_AUTHENTICATED, 1, 1, 10 * R_SEC), 1);
  assert_int_equal(r_send(&n, 1, VSR_CMD_PREPARE, 7), 0);
  uint8_t h[256];
  assert_int_equal(r_read_header(fd, h), 1);
  assert_int_equal(h[60], VSR_CMD_PREPARE);
  assert_int_equal(((struct vsr_prepare_header *)h)->op, 7);
  /* And the other way round. */
  generic_frame(h, VSR_CMD_PING, cluster_id, 1, 5);
  assert_true(vsrt_write_all(fd, h, 256));
  assert_int_equal(r_wait_frames(&n, VSR_CMD_PING, 1, 10 * R_SEC), 1);
  /* Well past handshake_grace the link is still the same one: frames keep flowing. */
  usleep(3 * 200000);
  assert_int_equal(r_send(&n, 1, VSR_CMD_PREPARE, 8), 0);
  assert_int_equal(r_read_header(fd, h), 1);
  assert_int_equal(((struct vsr_prepare_header *)h)->op, 8);
  assert_int_equal(r_count(&n, VSR_PEER_LOST, 1), 0);
  assert_int_equal(r_stats(&n).st.errors[-VSR_EHANDSHAKE_TIMEOUT], 0);
  close(fd);
  assert_int_equal(r_wait(&n, VSR_PEER_LOST, 1, 1, 10 * R_SEC), 1);
  r_stop(&n, true);
  close(lfd);
}

static void legacy_buses_link_and_auth_mismatch_never_links(void **state) {
  (void)state;
  /* Two legacy buses link both ways of the directional rule. */
  struct r_node n[2];
  r_options(&n[0], 0, 2);
  r_options(&n[1], 1, 2);
  n[0].opts.replica_auth = n[1].opts.replica_auth = VSR_REPLICA_AUTH_OFF;
  assert_int_equal(r_start_cluster(n, 2), 0);
  assert_int_equal(r_wait(&n[0], VSR_PEER_AUTHENTICATED, 1, 1, 10 * R_SEC), 1);
  assert_int_equal(r_wait(&n[1], VSR_PEER_AUTHENTICATED, 0, 1, 10 * R_SEC), 1);
  assert_int_equal(r_send(&n[0], 1, VSR_CMD_PREPARE, 3), 0);
  assert_int_equal(r_wait_frames(&n[1], VSR_CMD_PREPARE, 1, 10 * R_SEC), 1);
  r_stop(&n[0], true);
  r_stop(&n[1], true);

  /* A legacy dialer against an acceptor with auth on: closed every time, never linked. */
  r_options(&n[0], 0, 2);
  r_options(&n[1], 1, 2);
  n[0].opts.replica_auth = VSR_REPLICA_AUTH_OFF;
  n[0].opts.reconnect_period_ns = 20000000ull;
  assert_int_equal(r_start_cluster(n, 2), 0);
  /* The dialer redials every 20 ms: a slow run may count a fourth refusal before it looks. */
  assert_true(r_wait_errors(&n[1], VSR_EAUTH_REQUIRED, 3, 10 * R_SEC) >= 3);
  assert_false(r_stats(&n[1]).linked[0]);
  assert_int_equal(r_count(&n[1], VSR_PEER_AUTHENTICATED, -1), 0);
  r_stop(&n[0], true);
  r_stop(&n[1], true);
}

static void secrets_up_to_64k(void **state) {
  (void)state;
  static uint8_t big[VSR_SECRET_MAX + 1];
  for (size_t i = 0; i < sizeof big; i++) big[i] = (uint8_t)(i * 131 + 7);
  struct r_node n[2];
  r_options(&n[0], 0, 2);
  r_options(&n[1], 1, 2);
  for (int i = 0; i < 2; i++) {
    n[i].opts.secret = big;
    n[i].opts.secret_len = VSR_SECRET_MAX;
  }
  assert_int_equal(r_start_cluster(n, 2), 0);
  assert_int_equal(r_wait(&n[0], VSR_PEER_AUTHENTICATED, 1, 1, 10 * R_SEC), 1);
  assert_int_equal(r_wait(&n[1], VSR_PEER_AUTHENTICATED, 0, 1, 10 * R_SEC), 1);
  r_stop(&n[0], true);
  r_stop(&n[1], true);

  /* The same 64 KiB but for the last byte: a different key, never linked. */
  r_options(&n[0], 0, 2);
  r_options(&n[1], 1, 2);
  static uint8_t other[VSR_SECRET_MAX];
  memcpy(other, big, sizeof other);
  other[VSR_SECRET_MAX - 1] ^= 1;
  n[0].opts.secret = big;
  n[1].opts.secret = other;
  n[0].opts.secret_len = n[1].opts.secret_len = VSR_SECRET_MAX;
  int before = r_log_count("ReplicaChallenge MAC does not verify", NULL);
  assert_int_equal(r_start_cluster(n, 2), 0);
  uint64_t end = vsrt_now() + 10 * R_SEC;
  while (r_log_count("ReplicaChallenge MAC does not verify", NULL) <= before && vsrt_now() < end)
    usleep(2000);
  assert_true(r_log_count("ReplicaChallenge MAC does not verify", NULL) > before);
  assert_false(r_stats(&n[0]).linked[1]);
  r_stop(&n[0], true);
  r_stop(&n[1], true);

  /* One byte over, or none with auth on: refused at start. */
  r_options(&n[0], 1, 2);
  n[0].opts.secret = big;
  n[0].opts.secret_len = VSR_SECRET_MAX + 1;
  assert_int_equal(r_start(&n[0]), VSR_ECONFIG);
  r_options(&n[0], 1, 2);
  n[0].opts.secret = NULL;
  n[0].opts.secret_len = 0;
  assert_int_equal(r_start(&n[0]), VSR_ECONFIG);
  r_options(&n[0], 1, 2);
  n[0].opts.secret = NULL;
  n[0].opts.secret_len = 32; /* a length without bytes */
  assert_int_equal(r_start(&n[0]), VSR_ECONFIG);
  r_options(&n[0], 1, 2);
  n[0].opts.replica_auth = (enum vsr_replica_auth)7;
  assert_int_equal(r_start(&n[0]), VSR_ECONFIG);
}

/* ---- `vsrbus node` processes -------------------------------------------------------------- */

#define NODE_CLUSTER "legacy-it"

static char tmpdir[64];
static pid_t spawned[8]; /* killed by the group teardown if a failed test left them running */
static int nspawned;

/* Starts `vsrbus node ARGS...` (NULL-terminated) with stdout and stderr in |log|. */
static pid_t node_spawn(const char *log, const char *const *args) {
  const char *bin = getenv("VSRBUS_BIN");
  assert_non_null(bin);
  const char *argv[40] = {bin, "node", "--tcp", "off", "--quic", "off", "--log", "info"};
  int argc = 8;
  for (int i = 0; args[i] && argc < 39; i++) argv[argc++] = args[i];
  argv[argc] = NULL;
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the test */
    int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) _exit(126);
    dup2(fd, 1);
    dup2(fd, 2);
    execv(bin, (char *const *)argv);
    _exit(127);
  }
  if (nspawned < (int)(sizeof spawned / sizeof spawned[0])) spawned[nspawned++] = pid;
  return pid;
}

static size_t slurp(const char *path, char *buf, size_t len) {
  buf[0] = 0;
  int fd = open(path, O_RDONLY);
  if (fd < 0) return 0; /* not created by the child yet */
  ssize_t n = read(fd, buf, len - 1);
  close(fd);
  buf[n > 0 ? n : 0] = 0;
  return n > 0 ? (size_t)n : 0;
}

/* A line of |log| holding |a| and |b|. */
static bool log_has(const char *log, const char *a, const char *b) {
  static char buf[1 << 16];
  slurp(log, buf, sizeof buf);
  for (char *save, *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
    if (strstr(line, a) && (!b || strstr(line, b))) return true;
  return false;
}

/* Waits (bounded) until a line of |log| holds |a| and |b|. */
static bool log_wait(const char *log, const char *a, const char *b) {
  uint64_t end = vsrt_now() + 10 * R_SEC;
  while (!log_has(log, a, b) && vsrt_now() < end) usleep(20000);
  return log_has(log, a, b);
}

/* Waits (bounded) for the node's replica listener line and returns its address. */
static void node_replica_addr(pid_t pid, const char *log, char *addr, size_t len) {
  static char buf[1 << 16];
  const char *key = "replica plane tcp listening on ";
  uint64_t end = vsrt_now() + 10 * R_SEC;
  while (vsrt_now() < end) {
    slurp(log, buf, sizeof buf);
    const char *p = strstr(buf, key);
    if (p) {
      p += strlen(key);
      size_t n = strcspn(p, " \n");
      assert_true(n < len);
      memcpy(addr, p, n);
      addr[n] = 0;
      return;
    }
    if (waitpid(pid, NULL, WNOHANG) == pid) fail_msg("node exited at start:\n%s", buf);
    usleep(20000);
  }
  fail_msg("node did not listen:\n%s", buf);
}

static void node_stop(pid_t pid, const char *log) {
  kill(pid, SIGINT);
  int st = 0;
  assert_int_equal(waitpid(pid, &st, 0), pid);
  for (int i = 0; i < nspawned; i++)
    if (spawned[i] == pid) spawned[i] = 0;
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
    static char buf[1 << 16];
    slurp(log, buf, sizeof buf);
    fail_msg("node did not exit cleanly (status %d):\n%s", st, buf);
  }
}

/* The next frame from a node's replica link other than the recovery and view-change frames
 * its state machine sends on its own when a link comes up (RequestStartView, StartViewChange;
 * docs/demo.md): returns r_read_header's result. At most 16 of those are skipped. */
static int r_read_answer(int fd, uint8_t h[256]) {
  int rc = r_read_header(fd, h);
  for (int i = 0; rc == 1 && i < 16 && vsr_hdr_size(h) == 256 && /* both header-only */
                  (h[60] == VSR_CMD_REQUEST_START_VIEW || h[60] == VSR_CMD_START_VIEW_CHANGE);
       i++) {
    rc = r_read_header(fd, h);
  }
  return rc;
}

static void node_pongs_legacy_dialer_and_auth_on_node_closes_it(void **state) {
  (void)state;
  vsr_u128 cid = vsr_cluster_id(NODE_CLUSTER);
  char log[128], addr[64], peers[96];
  snprintf(log, sizeof log, "%s/legacy1.log", tmpdir);
  snprintf(peers, sizeof peers, "127.0.0.1:%d,127.0.0.1:0", r_free_port());
  const char *args[] = {"--cluster", NODE_CLUSTER, "--replica", "1", "--replicas", peers,
                        "--replica-auth", "off", NULL};
  pid_t pid = node_spawn(log, args);
  node_replica_addr(pid, log, addr, sizeof addr);
  if (!log_wait(log, "WARN", "UNAUTHENTICATED")) fail_msg("no start-up WARN about auth off");

  int fd = vsrt_connect(addr);
  assert_true(fd >= 0);
  uint8_t two[512], h[256];
  r_hello(two, cid, 0, NULL);
  generic_frame(two + 256, VSR_CMD_PING, cid, 0, 0x0102030405060708ull);
  memset(two + 256 + 136, 0xA5, 8); /* a second stamp: the whole area is echoed */
  assert_true(vsrt_write_all(fd, two, sizeof two));
  assert_int_equal(r_read_answer(fd, h), 1);
  assert_int_equal(h[60], VSR_CMD_PONG);
  assert_int_equal(h[61], 1);
  assert_int_equal(vsr_hdr_size(h), 256);
  assert_true(vsr_u128_eq(vsr_get_u128(h + 32), cid));
  assert_memory_equal(h + 128, two + 256 + 128, 128);
  /* Again on the same link: every Ping gets its Pong. */
  generic_frame(two + 256, VSR_CMD_PING, cid, 0, 99);
  assert_true(vsrt_write_all(fd, two + 256, 256));
  assert_int_equal(r_read_answer(fd, h), 1);
  assert_int_equal(h[60], VSR_CMD_PONG);
  assert_int_equal(vsr_get_u64(h + 128), 99);
  close(fd);
  node_stop(pid, log);
  if (!log_has(log, "replica 0", "unauthenticated (replica auth off)"))
    fail_msg("no link line for the legacy dialer");

  /* The default (auth on, a secret): the same Hello is closed, nothing sent back. */
  snprintf(log, sizeof log, "%s/auth1.log", tmpdir);
  const char *args_on[] = {"--cluster", NODE_CLUSTER, "--replica", "1", "--replicas", peers,
                           "--secret-hex",
                           "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
                           NULL};
  pid = node_spawn(log, args_on);
  node_replica_addr(pid, log, addr, sizeof addr);
  fd = vsrt_connect(addr);
  if (fd < 0) {
    static char buf[1 << 16];
    slurp(log, buf, sizeof buf);
    fail_msg("connect %s: %s; log:\n%s", addr, strerror(errno), buf);
  }
  r_hello(two, cid, 0, NULL);
  generic_frame(two + 256, VSR_CMD_PING, cid, 0, 1);
  assert_true(vsrt_write_all(fd, two, sizeof two));
  assert_int_equal(r_read_header(fd, h), 0);
  close(fd);
  if (!log_wait(log, "carries no nonce", "VSR_EAUTH_REQUIRED"))
    fail_msg("no refusal line for the nonce-less Hello");
  node_stop(pid, log);
  assert_false(log_has(log, "UNAUTHENTICATED", NULL)); /* the whole run's log */
}

static void legacy_node_dials_legacy_acceptor(void **state) {
  (void)state;
  vsr_u128 cid = vsr_cluster_id(NODE_CLUSTER);
  char laddr[64], log[128], peers[96];
  int lfd = raw_listen(laddr, sizeof laddr);
  snprintf(log, sizeof log, "%s/legacy0.log", tmpdir);
  snprintf(peers, sizeof peers, "127.0.0.1:0,%s", laddr);
  const char *args[] = {"--cluster", NODE_CLUSTER, "--replica", "0", "--replicas", peers,
                        "--replica-auth", "off", NULL};
  pid_t pid = node_spawn(log, args);
  int fd = raw_accept_legacy_hello(lfd, cid, 0);
  /* No answer to the Hello; the first consensus frame goes straight over the link and the
   * node's state machine answers it on the link it dialed. */
  uint8_t h[256];
  generic_frame(h, VSR_CMD_PING, cid, 1, 0xfeedull);
  assert_true(vsrt_write_all(fd, h, 256));
  assert_int_equal(r_read_answer(fd, h), 1);
  assert_int_equal(h[60], VSR_CMD_PONG);
  assert_int_equal(h[61], 0);
  assert_int_equal(vsr_get_u64(h + 128), 0xfeedull);
  close(fd);
  close(lfd);
  node_stop(pid, log);
  if (!log_has(log, "WARN", "UNAUTHENTICATED")) fail_msg("no start-up WARN about auth off");
}

static int setup_tmp(void **state) {
  (void)state;
  snprintf(tmpdir, sizeof tmpdir, "/tmp/vsrbus-legacy-XXXXXX");
  return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown_tmp(void **state) {
  (void)state;
  for (int i = 0; i < nspawned; i++) {
    if (spawned[i] <= 0) continue;
    kill(spawned[i], SIGKILL);
    waitpid(spawned[i], NULL, 0);
  }
  const char *names[] = {"legacy1.log", "auth1.log", "legacy0.log"};
  char path[128];
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    snprintf(path, sizeof path, "%s/%s", tmpdir, names[i]);
    unlink(path);
  }
  rmdir(tmpdir);
  return 0;
}

int main(void) {
  vsrt_require_backend();
  signal(SIGPIPE, SIG_IGN);
  r_log_capture();
  cluster_id = vsri_auth_cluster_id(R_CLUSTER);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(legacy_dialer_joins_auth_off_refused_by_auth_on),
      cmocka_unit_test(legacy_bus_dialer_joins_legacy_acceptor),
      cmocka_unit_test(legacy_buses_link_and_auth_mismatch_never_links),
      cmocka_unit_test(secrets_up_to_64k),
      cmocka_unit_test(node_pongs_legacy_dialer_and_auth_on_node_closes_it),
      cmocka_unit_test(legacy_node_dials_legacy_acceptor),
  };
  return cmocka_run_group_tests(tests, setup_tmp, teardown_tmp);
}
