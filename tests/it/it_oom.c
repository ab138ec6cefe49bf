/* Out-of-memory paths: with the allocation fault injector (vsri_alloc_fail_after), every
 * allocation from the N-th on fails, for N = 0, 1, 2, ... until the operation succeeds
 * (bounded by O_MAX_N). Covered: bus creation (client TCP listener, QUIC listener, replica
 * plane), client creation and connect (TCP and QUIC, on a caller's loop and blocking), and
 * accept (a client connecting to a bus whose allocations fail, TCP and QUIC handshake).
 *
 * Each failure must be clean: the call returns VSR_ENOMEM (or, on the accepting side, the
 * connection is refused while the bus keeps serving), no message stays referenced, no fd stays
 * open, and under the ASan build (detect_leaks=1) no allocation leaks. The injector is process
 * wide, so the peer that must not fail runs in a forked child (a server bus for the connect
 * cases; one blocking client per attempt for the accept cases). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>

#include "harness.h"
#include "util/alloc.h"

#define O_MAX_N 500
#define O_SEC 1000000000ull
#define O_MS 1000000ull

static const char o_secret[] = "OOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOO-oom-secret";

/* Open file descriptors of this process. */
static int o_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  if (!d) return -1;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) n += e->d_name[0] != '.';
  closedir(d);
  return n - 1; /* the directory stream's own fd */
}

static void o_small_pool(struct vsr_loop_options *lo) {
  lo->pool.prealloc[0] = 4;
  lo->pool.prealloc[1] = 1;
  lo->pool.prealloc[2] = 0;
}

/* ---- bus creation ---------------------------------------------------------------------- */

enum o_bus_kind { O_BUS_TCP, O_BUS_QUIC, O_BUS_REPLICA };

static void o_bus_options(struct vsr_bus_options *o, enum o_bus_kind kind,
                          const char *const *replica_addrs) {
  vsr_bus_options_default(o);
  o_small_pool(&o->loop_options);
  o->client_tcp_addr = "127.0.0.1:0";
  if (kind == O_BUS_QUIC) o->quic.addr = "127.0.0.1:0";
  if (kind == O_BUS_REPLICA) {
    o->cluster_name = "oom-cluster";
    o->replica_index = 0;
    o->replica_count = 3;
    o->replica_addrs = replica_addrs;
    o->secret = (const uint8_t *)o_secret;
    o->secret_len = sizeof o_secret - 1;
  }
}

/* Fails the N-th allocation of vsr_bus_new (its own loop included) for every N until it
 * succeeds; every failure must be VSR_ENOMEM with no fd left open. Returns that N. */
static int o_bus_new_until_ok(enum o_bus_kind kind) {
  /* Replica 0 listens; replicas 1 and 2 are addresses where nobody listens (dialed later). */
  const char *addrs[3] = {"127.0.0.1:0", "127.0.0.1:1", "127.0.0.1:2"};
  struct vsr_bus_options o;
  o_bus_options(&o, kind, addrs);
  struct vsr_bus_callbacks cb = {0};
  int fds = o_fds();
  int n;
  for (n = 0; n <= O_MAX_N; n++) {
    struct vsr_bus *bus = NULL;
    vsri_alloc_fail_after(n);
    int err = vsr_bus_new(&bus, &o, &cb, NULL);
    vsri_alloc_fail_after(-1);
    if (err == 0) {
      assert_non_null(bus);
      char addr[64];
      assert_int_equal(vsr_bus_listen_addr(bus, "tcp", addr, sizeof addr), 0);
      if (kind == O_BUS_QUIC) {
        assert_int_equal(vsr_bus_listen_addr(bus, "quic", addr, sizeof addr), 0);
      }
      if (kind == O_BUS_REPLICA) {
        assert_int_equal(vsr_bus_listen_addr(bus, "replica", addr, sizeof addr), 0);
      }
      vsr_bus_del(bus);
      break;
    }
    if (err != VSR_ENOMEM) fail_msg("vsr_bus_new, allocation %d failing: %s", n, vsr_errname(err));
    assert_null(bus);
    assert_int_equal(o_fds(), fds);
  }
  assert_int_equal(o_fds(), fds);
  assert_true(n > 0); /* allocation 0 failing must fail creation, or nothing was tested */
  assert_true(n <= O_MAX_N);
  print_message("vsr_bus_new succeeded once %d allocation(s) were allowed\n", n);
  return n;
}

static void bus_new_tcp(void **state) {
  (void)state;
  o_bus_new_until_ok(O_BUS_TCP);
}

static void bus_new_quic(void **state) {
  (void)state;
  int tcp_n = o_bus_new_until_ok(O_BUS_TCP);
  assert_true(o_bus_new_until_ok(O_BUS_QUIC) > tcp_n); /* the QUIC listener's own allocations */
}

static void bus_new_replica(void **state) {
  (void)state;
  int tcp_n = o_bus_new_until_ok(O_BUS_TCP);
  assert_true(o_bus_new_until_ok(O_BUS_REPLICA) > tcp_n);
}

/* ---- a server in a child process ------------------------------------------------------- */

struct o_server {
  pid_t pid;
  int ctl; /* closing it stops the child */
  char addr[64];
};

static void o_echo(void *user, struct vsr_bus *bus, enum vsr_plane plane, uint64_t peer,
                   struct vsr_msg *msg) {
  (void)user;
  (void)plane;
  vsr_bus_send_to_client(bus, peer, msg);
}

/* A child process running an echo bus on TCP or QUIC, free of injected failures. */
static void o_server_start(struct o_server *s, bool quic) {
  int ap[2], cp[2];
  assert_int_equal(pipe(ap), 0);
  assert_int_equal(pipe(cp), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    vsri_alloc_fail_after(-1);
    close(ap[0]);
    close(cp[1]);
    struct vsr_bus_options o;
    vsr_bus_options_default(&o);
    o_small_pool(&o.loop_options);
    o.client_tcp_addr = quic ? NULL : "127.0.0.1:0";
    o.quic.addr = quic ? "127.0.0.1:0" : NULL;
    struct vsr_bus_callbacks cb = {.on_message = o_echo};
    struct vsr_bus *bus = NULL;
    char addr[64] = "";
    if (vsr_bus_new(&bus, &o, &cb, NULL) == 0) {
      vsr_bus_listen_addr(bus, quic ? "quic" : "tcp", addr, sizeof addr);
    }
    if (write(ap[1], addr, sizeof addr) != (ssize_t)sizeof addr || !bus) _exit(1);
    for (;;) {
      vsr_bus_run_once(bus, 5 * (int64_t)O_MS);
      struct pollfd pf = {cp[0], POLLIN, 0};
      if (poll(&pf, 1, 0) != 0) break; /* the parent closed its end (or died) */
    }
    vsr_bus_del(bus);
    _exit(0);
  }
  close(ap[1]);
  close(cp[0]);
  s->pid = pid;
  s->ctl = cp[1];
  ssize_t r = read(ap[0], s->addr, sizeof s->addr);
  close(ap[0]);
  assert_int_equal(r, (ssize_t)sizeof s->addr);
  assert_true(s->addr[0] != '\0');
}

static void o_server_stop(struct o_server *s) {
  close(s->ctl);
  int status = 0;
  uint64_t end = vsrt_now() + 10 * O_SEC;
  while (waitpid(s->pid, &status, WNOHANG) == 0) {
    if (vsrt_now() > end) {
      kill(s->pid, SIGKILL);
      waitpid(s->pid, &status, 0);
      fail_msg("server child did not stop");
    }
    usleep(1000);
  }
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);
}

static void o_client_options(struct vsr_client_options *o, bool quic, const char *addr) {
  vsr_client_options_default(o);
  o->addr = addr;
  o->queue_capacity = 16;
  if (quic) {
    o->transport = "quic";
    o->quic.insecure = true;
  }
}

/* One echo round trip; true if the same bytes came back. */
static bool o_roundtrip(struct vsr_client *c, uint32_t seed) {
  struct vsr_msg *m = h_frame(c, VSR_CMD_PING_CLIENT, 256, seed), *r = NULL;
  if (!m) return false;
  int err = vsr_client_call(c, m, &r, 3 * O_SEC);
  bool ok = err == 0 && r->size == m->size && memcmp(r->data, m->data, m->size) == 0;
  vsr_msg_unref(m);
  if (r) vsr_msg_unref(r);
  return ok;
}

/* ---- client connect, blocking ---------------------------------------------------------- */

static void o_connect_blocking(bool quic) {
  struct o_server s;
  o_server_start(&s, quic);
  struct vsr_client_options o;
  o_client_options(&o, quic, s.addr);
  int fds = o_fds();
  int n;
  for (n = 0; n <= O_MAX_N; n++) {
    struct vsr_client *c = NULL;
    vsri_alloc_fail_after(n);
    int err = vsr_client_connect(&c, &o, 5 * O_SEC);
    vsri_alloc_fail_after(-1);
    if (err == 0) {
      assert_true(o_roundtrip(c, (uint32_t)n));
      vsr_client_del(c);
      break;
    }
    if (err != VSR_ENOMEM) {
      fail_msg("vsr_client_connect (%s), allocation %d failing: %s", quic ? "quic" : "tcp", n,
               vsr_errname(err));
    }
    assert_null(c);
    assert_int_equal(o_fds(), fds);
  }
  assert_int_equal(o_fds(), fds);
  assert_true(n > 0 && n <= O_MAX_N);
  print_message("vsr_client_connect (%s) succeeded once %d allocation(s) were allowed\n",
                quic ? "quic" : "tcp", n);
  o_server_stop(&s);
}

static void connect_blocking_tcp(void **state) {
  (void)state;
  o_connect_blocking(false);
}

static void connect_blocking_quic(void **state) {
  (void)state;
  o_connect_blocking(true);
}

/* ---- client connect on the caller's loop ----------------------------------------------- */

struct o_cstate {
  int status; /* last on_state: 0 none yet, 1 connected, < 0 closed */
};

static void o_on_state(void *user, struct vsr_client *c, int status) {
  (void)c;
  struct o_cstate *st = user;
  st->status = status == 0 ? 1 : status;
}

static uint64_t o_pool_live(struct vsr_loop *loop) {
  struct vsr_pool_stats ps;
  vsr_pool_stats(vsr_loop_pool(loop), &ps);
  return ps.live;
}

/* vsr_client_new, then the loop turns until connected or closed, all with allocations from
 * the N-th on failing: creation returns VSR_ENOMEM, or the connection closes with VSR_ENOMEM,
 * or it connects (and then carries a round trip once the failures stop). */
static void o_connect_on_loop(bool quic) {
  struct o_server s;
  o_server_start(&s, quic);
  struct vsr_loop_options lo;
  vsr_loop_options_default(&lo);
  o_small_pool(&lo);
  struct vsr_loop *loop = NULL;
  assert_int_equal(vsr_loop_new(&loop, &lo), 0);
  struct vsr_client_options o;
  o_client_options(&o, quic, s.addr);
  struct vsr_client_callbacks cb = {.on_state = o_on_state};
  int fds = o_fds();
  int n, closed_enomem = 0;
  for (n = 0; n <= O_MAX_N; n++) {
    struct vsr_client *c = NULL;
    struct o_cstate st = {0};
    vsri_alloc_fail_after(n);
    int err = vsr_client_new(&c, loop, &o, &cb, &st);
    if (err) {
      vsri_alloc_fail_after(-1);
      if (err != VSR_ENOMEM) {
        fail_msg("vsr_client_new (%s), allocation %d failing: %s", quic ? "quic" : "tcp", n,
                 vsr_errname(err));
      }
      assert_null(c);
      assert_int_equal(o_fds(), fds);
      continue;
    }
    uint64_t end = vsrt_now() + 5 * O_SEC;
    while (st.status == 0 && vsrt_now() < end) vsr_loop_run_once(loop, 10 * (int64_t)O_MS);
    vsri_alloc_fail_after(-1);
    if (st.status == 0) fail_msg("client %d neither connected nor closed within 5 s", n);
    bool done = st.status == 1;
    if (done) {
      /* Connected while allocations failed: once they stop, frames flow. */
      struct vsr_msg *m = h_frame(c, VSR_CMD_PING_CLIENT, 256, (uint32_t)n);
      assert_non_null(m);
      assert_int_equal(vsr_client_send(c, m), 0);
      vsr_msg_unref(m);
      struct o_cstate *sp = &st;
      end = vsrt_now() + 5 * O_SEC;
      while (vsr_client_queued(c) > 0 && sp->status == 1 && vsrt_now() < end) {
        vsr_loop_run_once(loop, 10 * (int64_t)O_MS);
      }
      assert_int_equal(vsr_client_queued(c), 0);
      assert_int_equal(st.status, 1);
    } else {
      if (st.status != VSR_ENOMEM) {
        fail_msg("client (%s), allocation %d failing: closed with %s", quic ? "quic" : "tcp", n,
                 vsr_errname(st.status));
      }
      assert_int_equal(vsr_client_state(c), VSR_ENOMEM);
      closed_enomem++;
    }
    vsr_client_del(c);
    for (int i = 0; i < 20; i++) vsr_loop_run_once(loop, 0); /* canceled ops report back */
    assert_int_equal(o_pool_live(loop), 0);
    assert_int_equal(o_fds(), fds);
    if (done) break;
  }
  assert_true(n > 0 && n <= O_MAX_N);
  print_message("vsr_client_new (%s) on a loop connected once %d allocation(s) were allowed "
                "(%d closed with VSR_ENOMEM after creation)\n",
                quic ? "quic" : "tcp", n, closed_enomem);
  vsr_loop_del(loop);
  o_server_stop(&s);
}

static void connect_on_loop_tcp(void **state) {
  (void)state;
  o_connect_on_loop(false);
}

static void connect_on_loop_quic(void **state) {
  (void)state;
  o_connect_on_loop(true);
}

/* ---- accept: a client connecting to a bus whose allocations fail ----------------------- */

/* Forks a child that connects with a blocking client and does one round trip. Exit status:
 * 0 round trip done, 2 connect failed, 3 round trip failed. */
static pid_t o_client_child(bool quic, const char *addr, uint32_t seed) {
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid != 0) return pid;
  vsri_alloc_fail_after(-1);
  struct vsr_client_options o;
  o_client_options(&o, quic, addr);
  struct vsr_client *c = NULL;
  if (vsr_client_connect(&c, &o, 2 * O_SEC) != 0) _exit(2);
  bool ok = o_roundtrip(c, seed);
  vsr_client_del(c);
  _exit(ok ? 0 : 3);
}

/* Runs |bus| until the child exits (bounded). Returns its exit status. */
static int o_serve_child(struct vsr_bus *bus, pid_t pid) {
  int status = 0;
  uint64_t end = vsrt_now() + 20 * O_SEC;
  while (waitpid(pid, &status, WNOHANG) == 0) {
    if (vsrt_now() > end) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      fail_msg("client child did not finish within 20 s");
    }
    vsr_bus_run_once(bus, 2 * (int64_t)O_MS);
  }
  assert_true(WIFEXITED(status));
  return WEXITSTATUS(status);
}

static void o_accept(bool quic) {
  struct vsr_loop_options lo;
  vsr_loop_options_default(&lo);
  o_small_pool(&lo);
  struct vsr_loop *loop = NULL;
  assert_int_equal(vsr_loop_new(&loop, &lo), 0);
  struct vsr_bus_options o;
  vsr_bus_options_default(&o);
  o.loop = loop;
  o.client_tcp_addr = quic ? NULL : "127.0.0.1:0";
  o.quic.addr = quic ? "127.0.0.1:0" : NULL;
  o.handshake_grace_ns = 1 * O_SEC;
  struct vsr_bus_callbacks cb = {.on_message = o_echo};
  struct vsr_bus *bus = NULL;
  assert_int_equal(vsr_bus_new(&bus, &o, &cb, NULL), 0);
  char addr[64];
  assert_int_equal(vsr_bus_listen_addr(bus, quic ? "quic" : "tcp", addr, sizeof addr), 0);
  /* Warm up with no failure: the pool buffers and lazily allocated vectors exist. */
  assert_int_equal(o_serve_child(bus, o_client_child(quic, addr, 0)), 0);
  int n, refused = 0;
  for (n = 0; n <= O_MAX_N; n++) {
    pid_t pid = o_client_child(quic, addr, (uint32_t)n + 1);
    vsri_alloc_fail_after(n);
    int rc = o_serve_child(bus, pid);
    vsri_alloc_fail_after(-1);
    if (rc == 0) break;
    refused++;
    /* Refused cleanly: the bus serves the next client at once. */
    assert_int_equal(o_serve_child(bus, o_client_child(quic, addr, 1000 + (uint32_t)n)), 0);
  }
  assert_true(n <= O_MAX_N);
  print_message("accept (%s): %d connection(s) refused before one was served with %d "
                "allocation(s) allowed\n", quic ? "quic" : "tcp", refused, n);
  assert_true(refused > 0); /* with no allocation allowed, the bus must have refused */
  /* Every connection is gone once the children are; nothing stays referenced. */
  struct vsr_bus_stats bs;
  uint64_t end = vsrt_now() + 5 * O_SEC;
  do {
    vsr_bus_run_once(bus, 5 * (int64_t)O_MS);
    vsr_bus_stats(bus, &bs);
  } while (bs.clients_active > 0 && vsrt_now() < end);
  assert_int_equal(bs.clients_active, 0);
  vsr_bus_del(bus);
  for (int i = 0; i < 20; i++) vsr_loop_run_once(loop, 0);
  assert_int_equal(o_pool_live(loop), 0);
  vsr_loop_del(loop);
}

static void accept_tcp(void **state) {
  (void)state;
  o_accept(false);
}

static void accept_quic_handshake(void **state) {
  (void)state;
  o_accept(true);
}

int main(void) {
  vsrt_require_backend();
  signal(SIGPIPE, SIG_IGN);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(bus_new_tcp),
      cmocka_unit_test(bus_new_quic),
      cmocka_unit_test(bus_new_replica),
      cmocka_unit_test(connect_blocking_tcp),
      cmocka_unit_test(connect_blocking_quic),
      cmocka_unit_test(connect_on_loop_tcp),
      cmocka_unit_test(connect_on_loop_quic),
      cmocka_unit_test(accept_tcp),
      cmocka_unit_test(accept_quic_handshake),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
