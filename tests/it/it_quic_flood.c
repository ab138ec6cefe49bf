/* QUIC under handshake floods: real client Initials (valid ClientHello, fresh connection IDs)
 * that never finish. A flood of 1,100 over UDP from one address leaves a real client able to
 * connect through Retry; beyond retry_threshold every tokenless Initial gets a Retry; only a
 * source beyond max_handshakes_per_source must validate (IPv4 address, IPv6 /64), and its
 * clients that do are admitted; a full max_handshakes evicts the oldest half-open, unvalidated
 * ones first; forged and expired Retry tokens are refused (INVALID_TOKEN) and counted. Sources other than 127.0.0.1 are simulated without a network:
 * datagrams go through the listener's packet input and come back through send hooks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <ngtcp2/ngtcp2_crypto.h>

#include "quic_initials.h"
#include "quic_util.h"

static struct vsri_quic_admission adm(struct qt_env *env) {
  struct vsri_quic_admission a;
  vsri_quic_listener_admission(env->l, &a);
  return a;
}

static struct qi_set gen(struct qt_env *env, size_t n) {
  struct qi_set set;
  assert_int_equal(qi_generate(&set, n, env->io, &env->cctx, env->addr), 0);
  assert_int_equal(set.n, n);
  return set;
}

/* A UDP socket on 127.0.0.1 with a large receive buffer. */
static int udp_socket(void) {
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  int big = 4 << 20;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
  struct sockaddr_in lo = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  if (bind(fd, (struct sockaddr *)&lo, sizeof lo) < 0) {
    close(fd);
    return -1;
  }
  return fd;
}

static bool pred_echo(struct qt_env *env, void *arg) {
  struct qt_peer *p = arg;
  (void)env;
  return p->nframes >= 1 || p->closed;
}

/* Dials client 0 over the loopback socket: it connects and gets a Ping echoed (bounded). */
static void connect_and_ping(struct qt_env *env) {
  struct qt_peer *c = &env->client[0];
  assert_int_equal(qt_dial(env, 0, NULL), 0);
  assert_true(qt_run_until(env, qt_pred_connected, (void *)0, 10 * QT_SEC));
  assert_true(c->connected);
  qt_send(c, qt_frame(env->pool, VSR_CMD_PING, 256, 0));
  assert_true(qt_run_until(env, pred_echo, c, 10 * QT_SEC));
  assert_int_equal(c->nframes, 1);
}

/* ---- simulated sources ----------------------------------------------------------------- */

#define PQ 256

struct dq {
  uint8_t pkt[PQ][QI_MAX];
  uint16_t len[PQ];
  int n;
};

static struct dq s2c, c2s;        /* what the listener / the piped client sent */
static uint32_t s2c_retries, s2c_initials, s2c_total;

static void dq_push(struct dq *q, const uint8_t *pkt, size_t len) {
  if (q->n == PQ || len > QI_MAX) return;
  memcpy(q->pkt[q->n], pkt, len);
  q->len[q->n++] = (uint16_t)len;
}

static void server_tx(void *user, const uint8_t *pkt, size_t len) {
  (void)user;
  s2c_total++;
  int t = qi_type(pkt, len);
  if (t == 3) s2c_retries++;
  if (t == 0) s2c_initials++;
  dq_push(&s2c, pkt, len);
}

static void client_tx(void *user, const uint8_t *pkt, size_t len) {
  (void)user;
  dq_push(&c2s, pkt, len);
}

static struct sockaddr_in src(int net, int host, int port) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl((uint32_t)(10u << 24 | (uint32_t)net << 8 | (uint32_t)host));
  return a;
}

static void feed(struct qt_env *env, const struct sockaddr_in *from, const uint8_t *pkt,
                 size_t len) {
  vsri_quic_listener_input(env->l, (const struct sockaddr *)from, sizeof *from, pkt, len);
}

static uint32_t from_count(struct qt_env *env, struct sockaddr_in a) {
  return vsri_quic_listener_halfopen_from(env->l, (const struct sockaddr *)&a);
}

/* Listener without a network (its datagrams go to server_tx). */
static void sim_listen(struct qt_env *env) {
  assert_int_equal(qt_listen(env), 0);
  vsri_quic_listener_set_tx(env->l, server_tx, NULL);
  s2c.n = c2s.n = 0;
  s2c_retries = s2c_initials = s2c_total = 0;
}

/* Client |i| dialing the listener from |from| through the hooks. */
static void pipe_dial(struct qt_env *env, int i) {
  assert_int_equal(qt_dial(env, i, NULL), 0);
  vsri_quic_test_conn_set_tx(env->client[i].conn, client_tx, NULL);
  s2c.n = 0; /* older output belongs to the flood's half-opens */
}

/* Moves datagrams both ways between client |i| (seen by the listener as |from|) and the
 * listener until |pred| holds (bounded). */
static bool pipe_run(struct qt_env *env, int i, const struct sockaddr_in *from,
                     bool (*pred)(struct qt_env *, void *), void *arg) {
  struct sockaddr_storage laddr;
  socklen_t llen;
  assert_int_equal(vsri_parse_addr(env->addr, &laddr, &llen), 0);
  uint64_t end = vsrt_now() + 10 * QT_SEC;
  while (!pred(env, arg) && vsrt_now() < end) {
    vsri_io_run(env->io, (int64_t)QT_MS);
    for (int k = 0; k < c2s.n; k++) feed(env, from, c2s.pkt[k], c2s.len[k]);
    c2s.n = 0;
    struct qt_peer *p = &env->client[i];
    for (int k = 0; k < s2c.n && p->conn; k++) {
      vsri_quic_test_conn_input(p->conn, (struct sockaddr *)&laddr, llen, s2c.pkt[k], s2c.len[k]);
    }
    s2c.n = 0;
  }
  return pred(env, arg);
}

/* ---- tests ----------------------------------------------------------------------------- */

/* 1,100 real Initials from 127.0.0.1 (four source ports) never finish; a real client from the
 * same address still connects, through Retry, and is served. Before the defences the flood
 * filled max_handshakes (1024) and the client's Initials were dropped. */
static void test_flood_then_real_client_connects(void **state) {
  (void)state;
  struct qt_env env;
  qt_env_init(&env);
  env.ccfg.handshake_grace_ns = 5 * QT_SEC;
  assert_int_equal(qt_listen(&env), 0);
  struct qi_set set = gen(&env, 1100);

  struct sockaddr_storage to;
  socklen_t tolen;
  assert_int_equal(vsri_parse_addr(env.addr, &to, &tolen), 0);
  int fds[4];
  for (int i = 0; i < 4; i++) {
    fds[i] = udp_socket();
    assert_true(fds[i] >= 0);
  }
  uint32_t retries_seen = 0;
  static uint8_t rx[2048];
  for (size_t i = 0; i < set.n;) {
    size_t chunk_end = i + 50 < set.n ? i + 50 : set.n;
    for (; i < chunk_end; i++) {
      assert_true(sendto(fds[i % 4], set.pkt[i], set.len[i], 0, (struct sockaddr *)&to, tolen) ==
                  (ssize_t)set.len[i]);
    }
    uint64_t end = vsrt_now() + 10 * QT_SEC;
    while (adm(&env).initials < chunk_end && vsrt_now() < end) vsri_io_run(env.io, 0);
    for (int k = 0; k < 4; k++) {
      ssize_t n;
      while ((n = recv(fds[k], rx, sizeof rx, MSG_DONTWAIT)) > 0) {
        if (qi_type(rx, (size_t)n) == 3) retries_seen++;
      }
    }
  }
  struct vsri_quic_admission a = adm(&env);
  assert_int_equal(a.initials, 1100);
  assert_int_equal(a.admitted, 32); /* max_handshakes_per_source */
  assert_int_equal(a.halfopen, 32);
  assert_int_equal(a.retries, 1100 - 32);
  assert_int_equal(a.retry_source, 1100 - 32);
  assert_true(retries_seen > 0);
  struct sockaddr_in lo = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  assert_int_equal(vsri_quic_listener_halfopen_from(env.l, (struct sockaddr *)&lo), 32);

  connect_and_ping(&env);
  a = adm(&env);
  assert_int_equal(a.validated, 1);
  assert_int_equal(a.evicted, 0);
  assert_int_equal(a.halfopen, 32); /* the flood's stay until their grace ends; harmless */
  assert_int_equal(env.naccepted, 1);
  for (int i = 0; i < 4; i++) close(fds[i]);
  qi_free(&set);
  assert_int_equal(qt_env_fini(&env), 0);
}

/* retry_threshold 0: every client validates first, and connects. */
static void test_always_retry(void **state) {
  (void)state;
  struct qt_env env;
  qt_env_init(&env);
  env.scfg.retry_threshold = 0;
  assert_int_equal(qt_listen(&env), 0);
  connect_and_ping(&env);
  struct vsri_quic_admission a = adm(&env);
  assert_int_equal(a.retries, 1);
  assert_int_equal(a.validated, 1);
  assert_int_equal(a.admitted, 1);
  assert_int_equal(a.tokens_invalid, 0);
  assert_int_equal(qt_env_fini(&env), 0);
}

static bool pred_client0_echo(struct qt_env *env, void *arg) {
  (void)arg;
  return env->client[0].nframes >= 1 || env->client[0].closed;
}

static bool pred_client0_connected(struct qt_env *env, void *arg) {
  (void)arg;
  return env->client[0].connected || env->client[0].closed;
}

/* Connects client 0 from |from| through the hooks and gets a Ping echoed. */
static void pipe_connect_and_ping(struct qt_env *env, const struct sockaddr_in *from) {
  pipe_dial(env, 0);
  assert_true(pipe_run(env, 0, from, pred_client0_connected, NULL));
  assert_true(env->client[0].connected);
  qt_send(&env->client[0], qt_frame(env->pool, VSR_CMD_PING, 256, 0));
  assert_true(pipe_run(env, 0, from, pred_client0_echo, NULL));
  assert_int_equal(env->client[0].nframes, 1);
}

/* Beyond retry_threshold half-opens, every Initial without a token gets a Retry (no state);
 * a client that answers it is admitted. */
static void test_retry_threshold(void **state) {
  (void)state;
  struct qt_env env;
  qt_env_init(&env);
  env.scfg.retry_threshold = 5;
  env.scfg.max_handshakes_per_source = 0;
  sim_listen(&env);
  struct qi_set set = gen(&env, 8);
  for (int i = 0; i < 8; i++) {
    struct sockaddr_in a = src(1, i + 1, 40000);
    feed(&env, &a, set.pkt[i], set.len[i]);
  }
  struct vsri_quic_admission a = adm(&env);
  assert_int_equal(a.initials, 8);
  assert_int_equal(a.admitted, 5);
  assert_int_equal(a.halfopen, 5);
  assert_int_equal(a.retries, 3);
  assert_int_equal(a.retry_source, 0);
  assert_int_equal(s2c_retries, 3);

  struct sockaddr_in me = src(1, 100, 50000);
  pipe_connect_and_ping(&env, &me);
  a = adm(&env);
  assert_int_equal(a.retries, 4);
  assert_int_equal(a.validated, 1);
  assert_int_equal(a.admitted, 6);
  assert_int_equal(a.halfopen, 5); /* the client was reported; the flood's 5 stay */
  assert_int_equal(env.naccepted, 1);
  qi_free(&set);
  assert_int_equal(qt_env_fini(&env), 0);
}

/* A source at max_handshakes_per_source must validate (Retry) and only it: other sources are
 * admitted as before; its clients that validate are admitted. */
static void test_per_source_limit(void **state) {
  (void)state;
  struct qt_env env;
  qt_env_init(&env);
  env.scfg.max_handshakes_per_source = 4;
  env.scfg.retry_threshold = 1000;
  sim_listen(&env);
  struct qi_set set = gen(&env, 10);
  struct sockaddr_in A = src(2, 1, 40000), B = src(2, 2, 40000), C = src(2, 3, 40000);
  for (int i = 0; i < 6; i++) {
    struct sockaddr_in a = A;
    a.sin_port = htons((uint16_t)(40000 + i)); /* other ports: still the same source */
    feed(&env, &a, set.pkt[i], set.len[i]);
  }
  for (int i = 6; i < 9; i++) feed(&env, &B, set.pkt[i], set.len[i]);
  struct vsri_quic_admission a = adm(&env);
  assert_int_equal(from_count(&env, A), 4);
  assert_int_equal(from_count(&env, B), 3);
  assert_int_equal(a.admitted, 7);
  assert_int_equal(a.retries, 2);
  assert_int_equal(a.retry_source, 2);
  assert_int_equal(s2c_retries, 2);

  /* A real client from A (another port): Retry, then admitted; nobody evicted. */
  struct sockaddr_in me = A;
  me.sin_port = htons(50000);
  pipe_connect_and_ping(&env, &me);
  a = adm(&env);
  assert_int_equal(a.retries, 3);
  assert_int_equal(a.retry_source, 3);
  assert_int_equal(a.validated, 1);
  assert_int_equal(a.evicted, 0);
  assert_int_equal(from_count(&env, A), 4); /* the client was reported: no longer half-open */
  assert_int_equal(from_count(&env, B), 3);
  assert_int_equal(env.naccepted, 1);

  /* Another source is not limited by A's state. */
  feed(&env, &C, set.pkt[9], set.len[9]);
  a = adm(&env);
  assert_int_equal(from_count(&env, C), 1);
  assert_int_equal(a.retries, 3);
  assert_int_equal(a.admitted, 9);
  qi_free(&set);
  assert_int_equal(qt_env_fini(&env), 0);
}

static struct sockaddr_in6 src6(const char *text, int port) {
  struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_port = htons((uint16_t)port)};
  assert_int_equal(inet_pton(AF_INET6, text, &a.sin6_addr), 1);
  return a;
}

/* IPv6 sources are /64 prefixes (one host usually holds a whole /64); IPv4-mapped addresses
 * are their IPv4 address. */
static void test_per_source_ipv6_prefix(void **state) {
  (void)state;
  struct qt_env env;
  qt_env_init(&env);
  env.scfg.max_handshakes_per_source = 2;
  sim_listen(&env);
  struct qi_set set = gen(&env, 5);
  struct sockaddr_in6 a1 = src6("2001:db8::1", 40000), a2 = src6("2001:db8::2", 40000),
                      a3 = src6("2001:db8::3:3", 40000), b = src6("2001:db8:0:1::1", 40000),
                      m = src6("::ffff:10.0.9.9", 40000);
  vsri_quic_listener_input(env.l, (struct sockaddr *)&a1, sizeof a1, set.pkt[0], set.len[0]);
  vsri_quic_listener_input(env.l, (struct sockaddr *)&a2, sizeof a2, set.pkt[1], set.len[1]);
  vsri_quic_listener_input(env.l, (struct sockaddr *)&a3, sizeof a3, set.pkt[2], set.len[2]);
  vsri_quic_listener_input(env.l, (struct sockaddr *)&b, sizeof b, set.pkt[3], set.len[3]);
  vsri_quic_listener_input(env.l, (struct sockaddr *)&m, sizeof m, set.pkt[4], set.len[4]);
  struct vsri_quic_admission a = adm(&env);
  assert_int_equal(a.admitted, 4);
  assert_int_equal(a.retry_source, 1); /* the third from 2001:db8::/64 */
  struct sockaddr_in6 other = src6("2001:db8::ffff", 1);
  assert_int_equal(vsri_quic_listener_halfopen_from(env.l, (struct sockaddr *)&other), 2);
  assert_int_equal(vsri_quic_listener_halfopen_from(env.l, (struct sockaddr *)&b), 1);
  assert_int_equal(from_count(&env, src(9, 9, 0)), 1); /* ::ffff:10.0.9.9 is 10.0.9.9 */
  qi_free(&set);
  assert_int_equal(qt_env_fini(&env), 0);
}

static bool pred_validated(struct qt_env *env, void *arg) {
  (void)arg;
  return adm(env).validated >= 1;
}

/* max_handshakes full: the oldest half-open goes, the newcomer is admitted, each counted; a
 * validated half-open outlives older unvalidated ones. */
static void test_cap_evicts_oldest(void **state) {
  (void)state;
  struct qt_env env;
  qt_env_init(&env);
  env.scfg.max_handshakes = 8;
  env.scfg.retry_threshold = 1000;         /* no Retry for the many: the cap alone */
  env.scfg.max_handshakes_per_source = 1;  /* but a second Initial from one source validates */
  sim_listen(&env);
  struct qi_set set = gen(&env, 18);
  for (int i = 0; i < 10; i++) {
    struct sockaddr_in a = src(3, i + 1, 40000);
    feed(&env, &a, set.pkt[i], set.len[i]);
    vsri_io_run(env.io, 0); /* evicted connections are reaped at the end of the turn */
  }
  struct vsri_quic_admission a = adm(&env);
  assert_int_equal(a.admitted, 10);
  assert_int_equal(a.halfopen, 8);
  assert_int_equal(a.halfopen_peak, 8);
  assert_int_equal(a.evicted, 2);
  assert_int_equal(a.retries, 0);
  assert_int_equal(from_count(&env, src(3, 1, 0)), 0); /* the two oldest went */
  assert_int_equal(from_count(&env, src(3, 2, 0)), 0);
  for (int i = 3; i <= 10; i++) assert_int_equal(from_count(&env, src(3, i, 0)), 1);
  assert_int_equal(vsri_quic_listener_conns(env.l), 8);

  /* A real client from source 3 (full): Retry, then validated and admitted in place of the
   * oldest (source 3's own). Its handshake is held half-way. */
  struct sockaddr_in me = src(3, 3, 50000);
  pipe_dial(&env, 0);
  assert_true(pipe_run(&env, 0, &me, pred_validated, NULL));
  a = adm(&env);
  assert_int_equal(a.retries, 1);
  assert_int_equal(a.validated, 1);
  assert_int_equal(a.evicted, 3);
  assert_int_equal(a.halfopen, 8);
  assert_int_equal(from_count(&env, src(3, 3, 0)), 1); /* now the validated one */

  /* Eight more newcomers: each evicts the oldest unvalidated half-open, never the validated
   * one although it is now the oldest. */
  for (int i = 10; i < 18; i++) {
    struct sockaddr_in x = src(3, i + 1, 40000);
    feed(&env, &x, set.pkt[i], set.len[i]);
    vsri_io_run(env.io, 0);
  }
  a = adm(&env);
  assert_int_equal(a.evicted, 11);
  assert_int_equal(a.halfopen, 8);
  assert_int_equal(from_count(&env, src(3, 3, 0)), 1);
  for (int i = 4; i <= 11; i++) assert_int_equal(from_count(&env, src(3, i, 0)), 0);
  for (int i = 12; i <= 18; i++) assert_int_equal(from_count(&env, src(3, i, 0)), 1);
  /* ... and it still completes. */
  assert_true(pipe_run(&env, 0, &me, pred_client0_connected, NULL));
  assert_true(env.client[0].connected);
  qi_free(&set);
  assert_int_equal(qt_env_fini(&env), 0);
}

/* Splices |token| into a client Initial (whose token field is empty) and, if |dcid| is given,
 * replaces its Destination Connection ID (same length). The payload stays as it was: the
 * token is checked before anything is decrypted. */
static size_t splice_token(uint8_t *out, const uint8_t *pkt, size_t len, const uint8_t *token,
                           size_t tlen) {
  size_t off = 5;
  size_t dcil = pkt[off++];
  off += dcil;
  size_t scil = pkt[off++];
  off += scil;
  assert_int_equal(pkt[off], 0); /* empty token */
  memcpy(out, pkt, off);
  size_t o = off;
  assert_true(tlen < 16384);
  out[o++] = (uint8_t)(0x40 | tlen >> 8);
  out[o++] = (uint8_t)tlen;
  memcpy(out + o, token, tlen);
  o += tlen;
  memcpy(out + o, pkt + off + 1, len - off - 1);
  return o + len - off - 1;
}

/* Forged Retry tokens (right magic and length, or garbage) are refused with a stateless
 * CONNECTION_CLOSE and counted; no state is kept. */
static void test_forged_token_refused(void **state) {
  (void)state;
  struct qt_env env;
  qt_env_init(&env);
  qt_log_capture();
  sim_listen(&env);
  struct qi_set set = gen(&env, 2);
  static uint8_t buf[QI_MAX + 200];
  uint8_t token[NGTCP2_CRYPTO_MAX_RETRY_TOKENLEN];
  for (size_t i = 0; i < sizeof token; i++) token[i] = (uint8_t)(i * 37 + 11);
  token[0] = NGTCP2_CRYPTO_TOKEN_MAGIC_RETRY;
  struct sockaddr_in a = src(4, 1, 40000);
  size_t n = splice_token(buf, set.pkt[0], set.len[0], token, sizeof token);
  feed(&env, &a, buf, n);
  n = splice_token(buf, set.pkt[1], set.len[1], token, 20); /* wrong length */
  feed(&env, &a, buf, n);
  struct vsri_quic_admission x = adm(&env);
  assert_int_equal(x.initials, 2);
  assert_int_equal(x.tokens_invalid, 2);
  assert_int_equal(x.admitted, 0);
  assert_int_equal(x.halfopen, 0);
  assert_int_equal(s2c_total, 2);
  assert_int_equal(s2c_initials, 2); /* CONNECTION_CLOSE in an Initial packet */
  assert_int_equal(vsri_quic_listener_conns(env.l), 0);
  assert_true(qt_log_has("VSR-QUIC-FLOOD"));
  assert_true(qt_log_has("Retry token refused"));
  vsr_log_set_handler(NULL, NULL);
  qi_free(&set);
  assert_int_equal(qt_env_fini(&env), 0);
}

static bool pred_s2c_retry(struct qt_env *env, void *arg) {
  (void)env;
  (void)arg;
  return s2c_retries > 0;
}

static bool pred_client0_closed(struct qt_env *env, void *arg) {
  (void)arg;
  return env->client[0].closed || env->client[0].connected;
}

/* A Retry token older than retry_token_lifetime is refused: the client is told INVALID_TOKEN
 * and gives up; nothing was admitted. */
static void test_expired_token_refused(void **state) {
  (void)state;
  struct qt_env env;
  qt_env_init(&env);
  env.scfg.retry_threshold = 0;
  env.scfg.retry_token_lifetime_ns = 2 * QT_MS;
  sim_listen(&env);
  struct sockaddr_in me = src(5, 1, 50000);
  struct sockaddr_storage laddr;
  socklen_t llen;
  assert_int_equal(vsri_parse_addr(env.addr, &laddr, &llen), 0);
  pipe_dial(&env, 0);
  uint64_t end = vsrt_now() + 5 * QT_SEC;
  /* Client Initial to the server; its Retry is held back. */
  while (!pred_s2c_retry(&env, NULL) && vsrt_now() < end) {
    vsri_io_run(env.io, (int64_t)QT_MS);
    for (int k = 0; k < c2s.n; k++) feed(&env, &me, c2s.pkt[k], c2s.len[k]);
    c2s.n = 0;
  }
  assert_int_equal(s2c_retries, 1);
  /* Let the token expire: the loop's clock moves past the lifetime. */
  uint64_t t0 = vsrt_now();
  while (vsrt_now() < t0 + 20 * QT_MS) vsri_io_run(env.io, (int64_t)QT_MS);
  for (int k = 0; k < s2c.n; k++) {
    vsri_quic_test_conn_input(env.client[0].conn, (struct sockaddr *)&laddr, llen, s2c.pkt[k],
                              s2c.len[k]);
  }
  s2c.n = 0;
  assert_true(pipe_run(&env, 0, &me, pred_client0_closed, NULL));
  assert_false(env.client[0].connected);
  assert_true(env.client[0].close_remote);
  assert_int_equal(env.client[0].close_code, 0x0b); /* INVALID_TOKEN */
  struct vsri_quic_admission a = adm(&env);
  assert_int_equal(a.retries, 1);
  assert_int_equal(a.tokens_invalid, 1);
  assert_int_equal(a.admitted, 0);
  assert_int_equal(env.naccepted, 0);
  assert_int_equal(qt_env_fini(&env), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_flood_then_real_client_connects),
      cmocka_unit_test(test_always_retry),
      cmocka_unit_test(test_retry_threshold),
      cmocka_unit_test(test_per_source_limit),
      cmocka_unit_test(test_per_source_ipv6_prefix),
      cmocka_unit_test(test_cap_evicts_oldest),
      cmocka_unit_test(test_forged_token_refused),
      cmocka_unit_test(test_expired_token_refused),
  };
  if (getenv("VSRT_FILTER")) cmocka_set_test_filter(getenv("VSRT_FILTER"));
  return cmocka_run_group_tests(tests, NULL, NULL);
}
