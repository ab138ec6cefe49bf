/* QUIC defences: ALPN policy (ours or none admitted by default, ours only with alpn_required;
 * others always refused, including Debian's ngtcp2 example client speaking h3), a client that
 * never opens a stream (never reported, dropped at the idle timeout; the handshake grace does
 * not apply once the handshake completed), a bidirectional stream beyond max_bidi_streams or
 * any unidirectional stream (connection closed). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <signal.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "quic_util.h"

static bool pred_listener_empty(struct qt_env *env, void *arg) {
  (void)arg;
  return vsri_quic_listener_conns(env->l) == 0;
}

static bool pred_listener_has_conn(struct qt_env *env, void *arg) {
  (void)arg;
  return vsri_quic_listener_conns(env->l) > 0;
}

static bool pred_never(struct qt_env *env, void *arg) {
  (void)env;
  (void)arg;
  return false;
}

static bool pred_echo(struct qt_env *env, void *arg) {
  struct qt_peer *p = arg;
  (void)env;
  return p->nframes >= 1 || p->closed;
}

/* Dials with the client offering |alpn| (NULL or "" = none) and runs until connected or
 * closed. */
static struct qt_peer *dial_alpn(struct qt_env *env, const char *alpn) {
  env->ccfg.alpn = alpn;
  assert_int_equal(qt_dial(env, 0, NULL), 0);
  assert_true(qt_run_until(env, qt_pred_connected, (void *)0, 5 * QT_SEC));
  return &env->client[0];
}

static void expect_refused(struct qt_env *env, struct qt_peer *c, const char *offered) {
  assert_true(qt_run_until(env, qt_pred_closed, c, 5 * QT_SEC));
  assert_false(c->connected);
  assert_int_equal(c->connect_status, VSR_EALPN);
  assert_int_equal(c->close_reason, VSR_EALPN);
  assert_false(c->close_app);
  assert_int_equal(c->close_code, 0x178); /* CRYPTO_ERROR + no_application_protocol */
  assert_int_equal(env->naccepted, 0);
  assert_true(qt_log_has("VSR-QUIC-ALPN"));
  assert_true(qt_log_has(offered));
  assert_true(qt_run_until(env, pred_listener_empty, NULL, 5 * QT_SEC));
}

/* A listener (ALPN required or not) refuses a client offering |alpn| at the handshake, and logs
 * |offered|. */
static void alpn_refused(bool required, const char *alpn, const char *offered) {
  struct qt_env env;
  qt_env_init(&env);
  env.scfg.alpn_required = required;
  qt_log_capture();
  assert_int_equal(qt_listen(&env), 0);
  expect_refused(&env, dial_alpn(&env, alpn), offered);
  vsr_log_set_handler(NULL, NULL);
  assert_int_equal(qt_env_fini(&env), 0);
}

/* A PING frame sent by |c| comes back: one frame echoed. */
static void echo_one(struct qt_env *env, struct qt_peer *c) {
  qt_send(c, qt_frame(env->pool, VSR_CMD_PING, 256, 0));
  assert_true(qt_run_until(env, pred_echo, c, 5 * QT_SEC));
  assert_int_equal(c->nframes, 1);
}

static void test_wrong_alpn_refused(void **state) {
  (void)state;
  alpn_refused(false, "h3", "client offered ALPN \"h3\"");
}

static void test_wrong_alpn_refused_when_required(void **state) {
  (void)state;
  alpn_refused(true, "h3", "client offered ALPN \"h3\"");
}

static void test_no_alpn_refused_when_required(void **state) {
  (void)state;
  alpn_refused(true, "", "client offered no ALPN");
}

/* Iggy mainline's SDK offers no ALPN: admitted by default. */
static void test_no_alpn_admitted_by_default(void **state) {
  (void)state;
  struct qt_env env;
  qt_env_init(&env);
  qt_log_capture();
  assert_int_equal(qt_listen(&env), 0);
  struct qt_peer *c = dial_alpn(&env, NULL);
  assert_true(c->connected);
  echo_one(&env, c);
  assert_int_equal(env.naccepted, 1);
  assert_false(qt_log_has("refused at the handshake"));
  vsr_log_set_handler(NULL, NULL);
  assert_int_equal(qt_env_fini(&env), 0);
}

/* Our ALPN is admitted under either policy. */
static void test_our_alpn_admitted(void **state) {
  (void)state;
  for (int required = 0; required < 2; required++) {
    struct qt_env env;
    qt_env_init(&env);
    env.scfg.alpn_required = required;
    assert_int_equal(qt_listen(&env), 0);
    struct qt_peer *c = dial_alpn(&env, VSRI_QUIC_ALPN);
    assert_true(c->connected);
    echo_one(&env, c);
    assert_int_equal(qt_env_fini(&env), 0);
  }
}

/* Handshake done, no stream ever: never reported; dropped at the (short) idle timeout. */
static void test_no_stream_dropped_at_idle(void **state) {
  (void)state;
  struct qt_env env;
  qt_env_init(&env);
  env.scfg.idle_timeout_ns = 300 * QT_MS;
  env.ccfg.keep_alive_ns = 0;
  qt_log_capture();
  assert_int_equal(qt_listen(&env), 0);
  struct qt_peer *c = dial_alpn(&env, NULL);
  assert_true(c->connected);
  assert_int_equal(vsri_quic_listener_conns(env.l), 1);
  assert_true(qt_run_until(&env, pred_listener_empty, NULL, 5 * QT_SEC));
  assert_int_equal(env.naccepted, 0);
  assert_true(qt_log_has("idle before opening a stream"));
  assert_true(qt_run_until(&env, qt_pred_closed, c, 5 * QT_SEC));
  assert_int_equal(c->close_reason, VSR_EIDLE);
  vsr_log_set_handler(NULL, NULL);
  assert_int_equal(qt_env_fini(&env), 0);
}

/* The handshake grace bounds the handshake only: a client that keeps the connection alive and
 * opens its first stream well past the grace (1 s after a 300 ms grace, modelling mainline's
 * SDK sending its first request 12 s after connecting to a 10 s grace) is served. */
static void test_first_stream_after_grace_served(void **state) {
  (void)state;
  struct qt_env env;
  qt_env_init(&env);
  env.scfg.handshake_grace_ns = 300 * QT_MS;
  env.ccfg.keep_alive_ns = 50 * QT_MS;
  assert_int_equal(qt_listen(&env), 0);
  struct qt_peer *c = dial_alpn(&env, NULL);
  assert_true(c->connected);
  qt_run_until(&env, pred_never, NULL, 1 * QT_SEC);
  assert_false(c->closed);
  assert_int_equal(env.naccepted, 0); /* not reported before its first stream */
  assert_int_equal(vsri_quic_listener_conns(env.l), 1);
  echo_one(&env, c);
  assert_false(c->closed);
  assert_int_equal(env.naccepted, 1);
  assert_int_equal(qt_env_fini(&env), 0);
}

/* The grace still bounds a handshake that does not finish: a path that drops everything after
 * the client's first datagram leaves the server connection half-open; it is gone at the
 * grace, long before the idle timeout. */
static void test_stalled_handshake_dropped_at_grace(void **state) {
  (void)state;
  struct qt_env env;
  qt_env_init(&env);
  env.scfg.handshake_grace_ns = 300 * QT_MS;
  env.scfg.idle_timeout_ns = 60 * QT_SEC;
  assert_int_equal(qt_listen(&env), 0);
  struct qt_shim shim;
  assert_int_equal(qt_shim_start(&shim, env.addr, 0, 1, 1), 0);
  assert_int_equal(qt_dial(&env, 0, shim.addr), 0);
  assert_true(qt_run_until(&env, pred_listener_has_conn, NULL, 5 * QT_SEC));
  assert_true(qt_run_until(&env, pred_listener_empty, NULL, 5 * QT_SEC));
  assert_int_equal(env.naccepted, 0);
  assert_int_equal(qt_env_fini(&env), 0);
  qt_shim_stop(&shim);
}

/* A client that believes it may open more streams than the server allows. */
static void extra_stream(bool bidi) {
  static const uint8_t junk[300] = {1, 2, 3};
  struct qt_env env;
  qt_env_init(&env);
  vsri_quic_test_lie_streams(&env.ccfg, 2);
  assert_int_equal(qt_listen(&env), 0);
  struct qt_peer *c = dial_alpn(&env, NULL);
  assert_true(c->connected);
  echo_one(&env, c);
  assert_int_equal(env.naccepted, 1);
  assert_int_equal(vsri_quic_test_open_stream(c->conn, bidi, junk, sizeof junk), 0);
  assert_true(qt_run_until(&env, qt_pred_closed, c, 5 * QT_SEC));
  assert_true(qt_run_until(&env, qt_pred_closed, &env.server[0], 5 * QT_SEC));
  assert_int_equal(env.server[0].close_reason, VSR_ESTREAM);
  assert_int_equal(c->close_reason, VSR_ESTREAM);
  assert_true(c->close_remote);
  assert_false(c->close_app);
  assert_int_equal(c->close_code, 0x4); /* STREAM_LIMIT_ERROR */
  assert_int_equal(qt_env_fini(&env), 0);
}

static void test_second_bidi_stream_closes(void **state) {
  (void)state;
  extra_stream(true);
}

static void test_uni_stream_closes(void **state) {
  (void)state;
  extra_stream(false);
}

/* Debian's ngtcp2 example client (GnuTLS, ALPN h3) is refused at the handshake. */
static void test_gtlsclient_h3_refused(void **state) {
  (void)state;
  if (access("/usr/bin/gtlsclient", X_OK) != 0) {
    fprintf(stderr, "skip: /usr/bin/gtlsclient not installed (ngtcp2-client)\n");
    skip();
  }
  struct qt_env env;
  qt_env_init(&env);
  qt_log_capture();
  assert_int_equal(qt_listen(&env), 0);
  char port[16], out[] = "/tmp/vsrbus-gtlsclient-XXXXXX";
  snprintf(port, sizeof port, "%s", strrchr(env.addr, ':') + 1);
  int fd = mkstemp(out);
  assert_true(fd >= 0);
  char qlog[] = "/tmp/vsrbus-gtlsclient-qlog-XXXXXX", qlog_opt[64];
  int qfd = mkstemp(qlog);
  assert_true(qfd >= 0);
  snprintf(qlog_opt, sizeof qlog_opt, "--qlog-file=%s", qlog);
  pid_t pid = fork();
  if (pid == 0) {
    dup2(fd, 1);
    dup2(fd, 2);
    execl("/usr/bin/gtlsclient", "gtlsclient", "--exit-on-all-streams-close",
          "--handshake-timeout=5s", "--timeout=5s", qlog_opt, "127.0.0.1", port,
          "https://localhost/", (char *)NULL);
    _exit(127);
  }
  assert_true(pid > 0);
  int status = 0;
  uint64_t end = vsrt_now() + 20 * QT_SEC;
  pid_t done = 0;
  while ((done = waitpid(pid, &status, WNOHANG)) == 0 && vsrt_now() < end) {
    vsri_io_run(env.io, (int64_t)(5 * QT_MS));
  }
  if (done == 0) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
  }
  static char buf[1 << 16], ql[1 << 16];
  ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
  buf[n > 0 ? n : 0] = '\0';
  n = pread(qfd, ql, sizeof ql - 1, 0);
  ql[n > 0 ? n : 0] = '\0';
  close(fd);
  close(qfd);
  unlink(out);
  unlink(qlog);
  fprintf(stderr, "gtlsclient (status 0x%x) said:\n%s\n", status, buf);
  assert_int_not_equal(done, 0); /* it gave up by itself: the server closed on it */
  assert_true(WIFEXITED(status));
  assert_non_null(strstr(buf, "ERR_DRAINING"));
  /* Its qlog shows the server's CONNECTION_CLOSE: CRYPTO_ERROR 0x178 (alert 120,
   * no_application_protocol). */
  char *cc = strstr(ql, "connection_close");
  if (!cc) fprintf(stderr, "qlog:\n%s\n", ql);
  assert_non_null(cc);
  assert_true(strstr(cc, "376") || strstr(cc, "0x178") || strstr(cc, "crypto_error"));
  assert_int_equal(env.naccepted, 0);
  assert_true(qt_log_has("VSR-QUIC-ALPN"));
  assert_true(qt_log_has("client offered ALPN \"h3"));
  vsr_log_set_handler(NULL, NULL);
  assert_int_equal(qt_env_fini(&env), 0);
}

/* The client verifies the server against a CA / certificate file, or a pinned SHA-256; a
 * mismatch fails the handshake on the client side with a clear log line. */
static void test_ca_file_and_pin(void **state) {
  (void)state;
  char dir[] = "/tmp/vsrbus-quic-ca-XXXXXX", srv[128], other[128], certp[160], keyp[160],
       otherp[160];
  assert_non_null(mkdtemp(dir));
  snprintf(srv, sizeof srv, "%s/srv", dir);
  snprintf(other, sizeof other, "%s/other", dir);
  struct vsri_cert *a = NULL, *b = NULL;
  assert_int_equal(vsri_cert_generate(&a, "localhost", 2), 0);
  assert_int_equal(vsri_cert_generate(&b, "localhost", 2), 0);
  assert_int_equal(vsri_cert_write(a, srv), 0);
  assert_int_equal(vsri_cert_write(b, other), 0);
  snprintf(certp, sizeof certp, "%s/cert.pem", srv);
  snprintf(keyp, sizeof keyp, "%s/key.pem", srv);
  snprintf(otherp, sizeof otherp, "%s/cert.pem", other);
  char bad_pin[VSRI_FINGERPRINT_TEXT_LEN];
  vsri_fingerprint_format(b->sha256, bad_pin);

  struct qt_env env;
  qt_env_init(&env);
  qt_log_capture();
  env.scfg.cert_file = certp;
  env.scfg.key_file = keyp;
  assert_int_equal(qt_listen(&env), 0);
  env.ccfg.pin_sha256 = NULL;
  env.ccfg.ca_file = certp; /* trusted: the server's own certificate */
  struct qt_peer *c = dial_alpn(&env, NULL);
  assert_true(c->connected);
  echo_one(&env, c);

  env.ccfg.ca_file = otherp; /* some other certificate: not trusted */
  assert_int_equal(qt_dial(&env, 1, NULL), 0);
  assert_true(qt_run_until(&env, qt_pred_closed, &env.client[1], 5 * QT_SEC));
  assert_int_equal(env.client[1].close_reason, VSR_EHANDSHAKE);
  assert_false(env.client[1].connected);
  assert_true(qt_log_has("server certificate not trusted"));

  env.ccfg.ca_file = NULL;
  env.ccfg.pin_sha256 = bad_pin;
  assert_int_equal(qt_dial(&env, 2, NULL), 0);
  assert_true(qt_run_until(&env, qt_pred_closed, &env.client[2], 5 * QT_SEC));
  assert_int_equal(env.client[2].close_reason, VSR_EHANDSHAKE);
  assert_true(qt_log_has("is not the pinned"));

  env.ccfg.pin_sha256 = NULL;
  env.ccfg.insecure = false;
  struct vsri_conn *conn;
  assert_int_equal(vsri_transport_quic.connect(&conn, &env.cctx, env.addr, &qt_events,
                                               &env.client[3], &env.client[3].q),
                   VSR_ECONFIG); /* no way to check the server: refused up front */
  assert_int_equal(env.naccepted, 1);
  vsr_log_set_handler(NULL, NULL);
  assert_int_equal(qt_env_fini(&env), 0);
  vsri_cert_free(a);
  vsri_cert_free(b);
  char cmd[200];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  assert_int_equal(system(cmd), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_wrong_alpn_refused),
      cmocka_unit_test(test_wrong_alpn_refused_when_required),
      cmocka_unit_test(test_no_alpn_refused_when_required),
      cmocka_unit_test(test_no_alpn_admitted_by_default),
      cmocka_unit_test(test_our_alpn_admitted),
      cmocka_unit_test(test_no_stream_dropped_at_idle),
      cmocka_unit_test(test_first_stream_after_grace_served),
      cmocka_unit_test(test_stalled_handshake_dropped_at_grace),
      cmocka_unit_test(test_second_bidi_stream_closes),
      cmocka_unit_test(test_uni_stream_closes),
      cmocka_unit_test(test_gtlsclient_h3_refused),
      cmocka_unit_test(test_ca_file_and_pin),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
