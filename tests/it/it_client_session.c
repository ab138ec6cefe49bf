/* Client sessions and the cluster client (docs/client.md): Register, request numbers, replies
 * matched by number (late and duplicate replies dropped), resend of the same request to the
 * next replica when the primary dies, view learned from PongClient / Reply headers, Eviction,
 * reconnect across a server restart (blocking and async, TCP and QUIC), and the PingClient
 * heartbeat against the server's client_idle_timeout. The servers are h_node buses with a stub
 * replica in their on_frame hook; every timeout is configured short, and every assertion is on
 * an outcome (served, counted, closed), never on a duration. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "harness.h"

#define SEEN_MAX 64
#define STUB_SESSION 7u

/* What a stub replica does with a Request that is not a Register. */
enum stub_mode {
  STUB_SERVE = 0, /* answer once */
  STUB_SWALLOW,   /* count it, answer nothing (a primary that dies before replying, or a
                     backup); Registers too */
  STUB_TWICE,     /* answer twice, and first a stale Reply for the previous request number */
  STUB_EVICT,     /* an Eviction for another client id, then one for the sender (NoSession) */
  STUB_SILENT,    /* answer nothing at all, not even PingClient */
};

struct seen {
  vsr_u128 client;
  uint64_t session, request;
  uint8_t operation;
  uint32_t size;
  uint8_t body[64];
};

struct stub {
  struct h_node n; /* first: the hook gets the h_node */
  uint8_t replica;
  _Atomic uint32_t view;
  _Atomic int mode;
  atomic_int count; /* replicas in the cluster: a stub that is not primary (view mod count)
                       answers PingClient only, like a backup; 0 or 1: always primary */
  atomic_int registers, requests, pings;
  struct seen seen[SEEN_MAX]; /* Requests other than Register, under n.mu */
  int nseen;
};

static struct vsr_msg *stub_reply(struct stub *s, const struct vsr_msg *req, uint64_t request) {
  const struct vsr_request_header *rq = (const struct vsr_request_header *)req->data;
  struct vsr_msg *out = vsr_bus_msg_new(s->n.bus, req->size);
  if (!out) return NULL;
  struct vsr_reply_header *rp = (struct vsr_reply_header *)out->data;
  rp->command = VSR_CMD_REPLY;
  rp->cluster = rq->cluster;
  rp->size = req->size;
  rp->view = atomic_load(&s->view);
  rp->replica = s->replica;
  rp->client = rq->client;
  rp->request = request;
  rp->operation = rq->operation;
  rp->op = rp->commit = rq->operation == VSR_OP_REGISTER ? STUB_SESSION : 100 + request;
  memcpy(out->data + VSR_HEADER_SIZE, req->data + VSR_HEADER_SIZE, req->size - VSR_HEADER_SIZE);
  return out;
}

static void stub_send(struct stub *s, uint64_t client, struct vsr_msg *m) {
  if (!m) return;
  vsr_bus_send_to_client(s->n.bus, client, m);
  vsr_msg_unref(m);
}

static struct vsr_msg *stub_eviction(struct stub *s, vsr_u128 client, uint8_t reason) {
  struct vsr_msg *m = vsr_bus_msg_new(s->n.bus, VSR_HEADER_SIZE);
  if (!m) return NULL;
  struct vsr_eviction_header *e = (struct vsr_eviction_header *)m->data;
  e->command = VSR_CMD_EVICTION;
  e->view = atomic_load(&s->view);
  e->replica = s->replica;
  e->client = client;
  e->reason = reason;
  return m;
}

static void stub_on_frame(struct h_node *n, uint64_t client, struct vsr_msg *msg) {
  struct stub *s = (struct stub *)n;
  int mode = atomic_load(&s->mode);
  uint8_t cmd = msg->data[60];
  if (mode == STUB_SILENT) return;
  if (cmd == VSR_CMD_PING_CLIENT) {
    atomic_fetch_add(&s->pings, 1);
    struct vsr_msg *out = vsr_bus_msg_new(n->bus, VSR_HEADER_SIZE);
    if (!out) return;
    struct vsr_header *h = (struct vsr_header *)out->data;
    h->command = VSR_CMD_PONG_CLIENT;
    h->view = atomic_load(&s->view);
    h->replica = s->replica;
    memcpy(h->reserved_command, msg->data + 128, 128);
    stub_send(s, client, out);
    return;
  }
  if (cmd != VSR_CMD_REQUEST) return;
  int count = atomic_load(&s->count);
  if (count > 1 && atomic_load(&s->view) % (uint32_t)count != s->replica) mode = STUB_SWALLOW;
  const struct vsr_request_header *rq = (const struct vsr_request_header *)msg->data;
  if (rq->operation == VSR_OP_REGISTER) {
    atomic_fetch_add(&s->registers, 1);
    if (mode == STUB_SWALLOW) return;
    stub_send(s, client, stub_reply(s, msg, 0));
    if (mode == STUB_TWICE) stub_send(s, client, stub_reply(s, msg, 0));
    return;
  }
  atomic_fetch_add(&s->requests, 1);
  pthread_mutex_lock(&n->mu);
  if (s->nseen < SEEN_MAX) {
    struct seen *e = &s->seen[s->nseen++];
    *e = (struct seen){.client = rq->client, .session = rq->session, .request = rq->request,
                       .operation = rq->operation, .size = msg->size};
    uint32_t len = msg->size - VSR_HEADER_SIZE;
    memcpy(e->body, msg->data + VSR_HEADER_SIZE, len < sizeof e->body ? len : sizeof e->body);
  }
  pthread_mutex_unlock(&n->mu);
  switch (mode) {
  case STUB_SERVE:
    stub_send(s, client, stub_reply(s, msg, rq->request));
    break;
  case STUB_TWICE:
    if (rq->request > 1) stub_send(s, client, stub_reply(s, msg, rq->request - 1));
    stub_send(s, client, stub_reply(s, msg, rq->request));
    stub_send(s, client, stub_reply(s, msg, rq->request));
    break;
  case STUB_EVICT: {
    vsr_u128 other = rq->client;
    other.hi ^= 0x5a5a;
    stub_send(s, client, stub_eviction(s, other, VSR_EVICT_SESSION_TOO_LOW));
    stub_send(s, client, stub_eviction(s, rq->client, VSR_EVICT_NO_SESSION));
    break;
  }
  default:
    break;
  }
}

static void quic_addr_task(struct h_node *n, void *arg) {
  (void)arg;
  vsr_bus_listen_addr(n->bus, "quic", n->addr, sizeof n->addr);
}

/* |addr| NULL: any port. |quic|: the client plane listens on QUIC instead of TCP. */
static int stub_try_start(struct stub *s, uint8_t replica, uint32_t view, const char *addr,
                          bool quic) {
  memset(s, 0, sizeof *s);
  h_options(&s->n);
  static char addrs[8][64];
  snprintf(addrs[replica], sizeof addrs[replica], "%s", addr ? addr : "127.0.0.1:0");
  if (quic) {
    s->n.opts.client_tcp_addr = NULL;
    s->n.opts.quic.addr = addrs[replica];
  } else {
    s->n.opts.client_tcp_addr = addrs[replica];
  }
  s->n.on_frame = stub_on_frame;
  s->replica = replica;
  atomic_store(&s->view, view);
  int err = h_start(&s->n);
  if (err == 0 && quic) h_run(&s->n, quic_addr_task, NULL);
  return err;
}

static void stub_start_on(struct stub *s, uint8_t replica, uint32_t view, const char *addr,
                          bool quic) {
  assert_int_equal(stub_try_start(s, replica, view, addr, quic), 0);
}

static void stub_start(struct stub *s, uint8_t replica, uint32_t view, const char *addr) {
  stub_start_on(s, replica, view, addr, false);
}

static void session_options(struct vsr_client_options *o, const char *const *addrs, uint32_t n) {
  vsr_client_options_default(o);
  o->session = true;
  o->addrs = addrs;
  o->addr_count = n;
  o->addr = addrs[0];
  o->request_timeout_ns = H_SEC; /* tests that want a resend swallow the request */
  o->request_deadline_ns = 20 * H_SEC;
  o->reconnect_min_ns = 10000000ull;
  o->reconnect_max_ns = 200000000ull;
  o->heartbeat_period_ns = 100000000ull;
  o->liveness_timeout_ns = 2 * H_SEC;
}

static struct vsr_msg *body_msg(struct vsr_client *c, uint32_t seed) {
  struct vsr_msg *m = vsr_client_msg_new(c, VSR_HEADER_SIZE + 16);
  if (!m) return NULL;
  for (int i = 0; i < 16; i++) m->data[VSR_HEADER_SIZE + i] = (uint8_t)(seed * 31 + (uint32_t)i);
  return m;
}

/* The reply answers request |want| and echoes the body of |req|. */
static void assert_reply(const struct vsr_msg *reply, const struct vsr_msg *req, uint64_t want) {
  const struct vsr_reply_header *rp = (const struct vsr_reply_header *)reply->data;
  assert_int_equal(rp->command, VSR_CMD_REPLY);
  assert_int_equal(rp->request, want);
  assert_int_equal(reply->size, req->size);
  assert_memory_equal(reply->data + VSR_HEADER_SIZE, req->data + VSR_HEADER_SIZE,
                      req->size - VSR_HEADER_SIZE);
}

/* A blocking request with body |seed| and operation |op| succeeds with the Reply to request
 * |want|, echoing the body. */
static void request_ok(struct vsr_client *c, uint32_t seed, uint8_t op, uint64_t want) {
  struct vsr_msg *m = body_msg(c, seed), *r = NULL;
  assert_int_equal(vsr_client_request_wait(c, m, op, &r), 0);
  assert_reply(r, m, want);
  vsr_msg_unref(m);
  vsr_msg_unref(r);
}

/* |n| stubs, replicas 0..n-1 of an n-replica cluster in |view|, each on any port; their
 * client addresses in |addrs|. */
static void stubs_start(struct stub *s, uint8_t n, uint32_t view, const char **addrs) {
  for (uint8_t i = 0; i < n; i++) {
    stub_start(&s[i], i, view, NULL);
    atomic_store(&s[i].count, n);
    addrs[i] = s[i].n.addr;
  }
}

/* Register, then requests 1..N, each with the next number and the session from the Register
 * Reply; on a one-node cluster the raw API keeps working alongside. */
static void register_then_numbered_requests(void **state) {
  (void)state;
  struct stub s;
  stub_start(&s, 0, 0, NULL);
  const char *addrs[] = {s.n.addr};
  struct vsr_client_options o;
  session_options(&o, addrs, 1);
  struct vsr_client *c = NULL;
  assert_int_equal(vsr_client_connect(&c, &o, 10 * H_SEC), 0);
  assert_int_equal(vsr_client_session(c), STUB_SESSION);
  assert_int_equal(atomic_load(&s.registers), 1);
  for (uint32_t i = 1; i <= 5; i++) request_ok(c, i, VSR_OP_CREATE_STREAM, i);
  pthread_mutex_lock(&s.n.mu);
  assert_int_equal(s.nseen, 5);
  for (int i = 0; i < 5; i++) {
    assert_int_equal(s.seen[i].request, (uint64_t)i + 1);
    assert_int_equal(s.seen[i].session, STUB_SESSION);
    assert_int_equal(s.seen[i].operation, VSR_OP_CREATE_STREAM);
    assert_false(vsr_u128_is_zero(s.seen[i].client));
    assert_true(vsr_u128_eq(s.seen[i].client, s.seen[0].client));
  }
  pthread_mutex_unlock(&s.n.mu);
  /* Reserved and Register are not application operations. */
  struct vsr_msg *m = body_msg(c, 9), *r = NULL;
  assert_int_equal(vsr_client_request_wait(c, m, VSR_OP_RESERVED, &r), VSR_EINVAL);
  assert_int_equal(vsr_client_request_wait(c, m, VSR_OP_REGISTER, &r), VSR_EINVAL);
  vsr_msg_unref(m);
  struct vsr_client_stats st;
  vsr_client_stats(c, &st);
  assert_int_equal(st.requests, 5);
  assert_int_equal(st.replies, 5);
  assert_int_equal(st.late_replies, 0);
  vsr_client_del(c);
  h_stop(&s.n, true);
}

/* A server that answers every request twice, and first repeats the previous request's Reply:
 * each call gets the Reply to its own request number, the others are dropped and counted. */
static void late_reply_never_returned_for_next_request(void **state) {
  (void)state;
  struct stub s;
  stub_start(&s, 0, 0, NULL);
  atomic_store(&s.mode, STUB_TWICE);
  const char *addrs[] = {s.n.addr};
  struct vsr_client_options o;
  session_options(&o, addrs, 1);
  struct vsr_client *c = NULL;
  assert_int_equal(vsr_client_connect(&c, &o, 10 * H_SEC), 0);
  enum { N = 10 };
  for (uint32_t i = 1; i <= N; i++) request_ok(c, i, VSR_OP_SEND_MESSAGES, i);
  struct vsr_client_stats st;
  vsr_client_stats(c, &st);
  assert_int_equal(st.replies, N);
  /* Requests 2..N each saw the stale Reply of the one before and the duplicate of the one
   * before (the Register's duplicate included): at least 2 per request after the first. */
  assert_true(st.late_replies >= 2 * (N - 1));
  assert_int_equal(atomic_load(&s.requests), N); /* nothing was resent */
  vsr_client_del(c);
  h_stop(&s.n, true);
}

/* Three replicas. The primary (0) takes request 2 and dies without replying: the client
 * resends the same bytes (client, session, request 2) to replica 1, which is primary of view 1
 * and answers; the call returns that one Reply. Then replica 1's process goes away between
 * requests: request 3 goes to replica 2 (view 2). */
static void primary_dies_same_request_resent_to_next(void **state) {
  (void)state;
  struct stub s[3];
  const char *addrs[3];
  stubs_start(s, 3, 0, addrs);
  struct vsr_client_options o;
  session_options(&o, addrs, 3);
  struct vsr_client *c = NULL;
  assert_int_equal(vsr_client_connect(&c, &o, 10 * H_SEC), 0);
  request_ok(c, 1, VSR_OP_CREATE_TOPIC, 1);
  assert_int_equal(atomic_load(&s[1].requests) + atomic_load(&s[2].requests), 0);

  /* The primary swallows request 2; the cluster moves to view 1 (replica 1 primary). */
  atomic_store(&s[0].mode, STUB_SWALLOW);
  atomic_store(&s[1].view, 1);
  atomic_store(&s[2].view, 1);
  struct vsr_msg *m = body_msg(c, 2), *r = NULL;
  assert_int_equal(vsr_client_request_wait(c, m, VSR_OP_CREATE_TOPIC, &r), 0);
  assert_reply(r, m, 2);
  vsr_msg_unref(r);
  assert_int_equal(vsr_client_view(c), 1);
  pthread_mutex_lock(&s[0].n.mu);
  pthread_mutex_lock(&s[1].n.mu);
  assert_int_equal(s[0].nseen, 2);
  assert_int_equal(s[1].nseen, 1);
  const struct seen *a = &s[0].seen[1], *b = &s[1].seen[0];
  assert_true(vsr_u128_eq(a->client, b->client));
  assert_int_equal(a->session, b->session);
  assert_int_equal(a->request, 2);
  assert_int_equal(b->request, 2);
  assert_int_equal(a->size, b->size);
  assert_memory_equal(a->body, b->body, 16);
  assert_memory_equal(b->body, m->data + VSR_HEADER_SIZE, 16);
  pthread_mutex_unlock(&s[1].n.mu);
  pthread_mutex_unlock(&s[0].n.mu);
  vsr_msg_unref(m);
  struct vsr_client_stats st;
  vsr_client_stats(c, &st);
  assert_int_equal(st.replies, 2);
  assert_int_equal(st.late_replies, 0); /* answered once */
  assert_true(st.resends >= 1);
  assert_int_equal(st.replica, 1);

  /* Replica 1 dies; replica 2 becomes primary of view 2. Request 3 goes there, once. */
  h_stop(&s[1].n, false);
  atomic_store(&s[2].view, 2);
  request_ok(c, 3, VSR_OP_CREATE_TOPIC, 3);
  assert_int_equal(vsr_client_view(c), 2);
  assert_int_equal(atomic_load(&s[2].requests), 1);
  vsr_client_del(c);
  h_stop(&s[0].n, true);
  h_stop(&s[2].n, true);
}

/* A client that connects to a backup first learns the primary from the PongClient's view and
 * goes there before its Register is served by anyone else. */
static void backup_redirects_through_pong_view(void **state) {
  (void)state;
  struct stub s[3];
  const char *addrs[3];
  stubs_start(s, 3, 2, addrs); /* view 2: replica 2 primary, 0 and 1 backups */
  struct vsr_client_options o;
  session_options(&o, addrs, 3);
  o.request_timeout_ns = 5 * H_SEC; /* only the redirect can bring it to replica 2 in time */
  o.request_deadline_ns = 4 * H_SEC;
  struct vsr_client *c = NULL;
  assert_int_equal(vsr_client_connect(&c, &o, 10 * H_SEC), 0);
  request_ok(c, 1, VSR_OP_CREATE_USER, 1);
  struct vsr_client_stats st;
  vsr_client_stats(c, &st);
  assert_true(st.redirects >= 1);
  assert_int_equal(st.view, 2);
  assert_int_equal(st.replica, 2);
  assert_int_equal(atomic_load(&s[2].requests), 1);
  vsr_client_del(c);
  for (int i = 0; i < 3; i++) h_stop(&s[i].n, true);
}

/* An Eviction for another client id is dropped; one for ours ends the session: the call
 * returns VSR_EEVICTED with the header's reason, and so does every later request. */
static void eviction_ends_session(void **state) {
  (void)state;
  struct stub s;
  stub_start(&s, 0, 0, NULL);
  const char *addrs[] = {s.n.addr};
  struct vsr_client_options o;
  session_options(&o, addrs, 1);
  struct vsr_client *c = NULL;
  assert_int_equal(vsr_client_connect(&c, &o, 10 * H_SEC), 0);
  atomic_store(&s.mode, STUB_EVICT);
  struct vsr_msg *m = body_msg(c, 1), *r = NULL;
  assert_int_equal(vsr_client_request_wait(c, m, VSR_OP_CREATE_STREAM, &r), VSR_EEVICTED);
  assert_null(r);
  assert_int_equal(vsr_client_eviction_reason(c), VSR_EVICT_NO_SESSION);
  assert_int_equal(vsr_client_state(c), VSR_EEVICTED);
  struct vsr_client_stats st;
  vsr_client_stats(c, &st);
  assert_int_equal(st.late_replies, 1); /* the other client's Eviction */
  assert_int_equal(vsr_client_request_wait(c, m, VSR_OP_CREATE_STREAM, &r), VSR_EEVICTED);
  assert_int_equal(atomic_load(&s.requests), 1);
  vsr_msg_unref(m);
  assert_string_equal(vsr_errname(VSR_EEVICTED), "VSR_EEVICTED");
  vsr_client_del(c);
  h_stop(&s.n, true);
}

/* No server answers at all: the request completes with VSR_ETIMEDOUT at its deadline, after
 * having been resent. */
static void deadline_gives_etimedout(void **state) {
  (void)state;
  struct stub s;
  stub_start(&s, 0, 0, NULL);
  const char *addrs[] = {s.n.addr};
  struct vsr_client_options o;
  session_options(&o, addrs, 1);
  o.request_timeout_ns = 50000000ull;
  o.request_deadline_ns = 500000000ull;
  struct vsr_client *c = NULL;
  assert_int_equal(vsr_client_connect(&c, &o, 10 * H_SEC), 0);
  atomic_store(&s.mode, STUB_SWALLOW);
  struct vsr_msg *m = body_msg(c, 1), *r = NULL;
  assert_int_equal(vsr_client_request_wait(c, m, VSR_OP_CREATE_STREAM, &r), VSR_ETIMEDOUT);
  vsr_msg_unref(m);
  struct vsr_client_stats st;
  vsr_client_stats(c, &st);
  assert_int_equal(st.timeouts, 1);
  assert_true(st.resends >= 1);
  assert_true(atomic_load(&s.requests) >= 2); /* the same request, again */
  pthread_mutex_lock(&s.n.mu);
  for (int i = 0; i < s.nseen; i++) assert_int_equal(s.seen[i].request, 1);
  pthread_mutex_unlock(&s.n.mu);
  vsr_client_del(c);
  h_stop(&s.n, true);
}

/* ---- restart ----------------------------------------------------------------------------- */

struct restarter {
  struct stub *s;
  char addr[64];
  bool quic;
};

static void *restart_later(void *arg) {
  struct restarter *rs = arg;
  usleep(300000); /* the client is in its call, dialing a dead address, by now */
  /* The old socket's port may be held a moment longer (a UDP socket the io layer releases
   * once the kernel is done with it): retry the bind, bounded. */
  for (int i = 0; i < 100 && stub_try_start(rs->s, 0, 0, rs->addr, rs->quic) != 0; i++) {
    usleep(20000);
  }
  return NULL;
}

/* The node |rs->s| dies and comes back on the same address while a blocking call for request
 * |want| waits: the call gets its Reply. */
static void request_ok_across_restart(struct vsr_client *c, struct restarter *rs, uint64_t want) {
  h_stop(&rs->s->n, false);
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, restart_later, rs), 0);
  struct vsr_msg *m = body_msg(c, (uint32_t)want), *r = NULL;
  assert_int_equal(vsr_client_request_wait(c, m, VSR_OP_CREATE_STREAM, &r), 0);
  pthread_join(t, NULL);
  assert_reply(r, m, want);
  vsr_msg_unref(m);
  vsr_msg_unref(r);
}

/* The single node dies between two blocking calls and comes back on the same address while
 * the second call waits: the call succeeds (new connection, same session, request 2). */
static void blocking_call_survives_restart_tcp(void **state) {
  (void)state;
  static struct stub s;
  stub_start(&s, 0, 0, NULL);
  struct restarter rs = {.s = &s};
  snprintf(rs.addr, sizeof rs.addr, "%s", s.n.addr);
  const char *addrs[] = {rs.addr};
  struct vsr_client_options o;
  session_options(&o, addrs, 1);
  struct vsr_client *c = NULL;
  assert_int_equal(vsr_client_connect(&c, &o, 10 * H_SEC), 0);
  request_ok(c, 1, VSR_OP_CREATE_STREAM, 1);
  request_ok_across_restart(c, &rs, 2);
  struct vsr_client_stats st;
  vsr_client_stats(c, &st);
  assert_true(st.reconnects >= 1);
  assert_int_equal(st.connects, 2);
  pthread_mutex_lock(&s.n.mu);
  assert_int_equal(s.nseen, 1);
  assert_int_equal(s.seen[0].request, 2);
  assert_int_equal(s.seen[0].session, STUB_SESSION);
  pthread_mutex_unlock(&s.n.mu);
  vsr_client_del(c);
  h_stop(&s.n, true);
}

/* The same over QUIC (server verification off: the restarted node has a new certificate). */
static void blocking_call_survives_restart_quic(void **state) {
  (void)state;
  static struct stub s;
  stub_start_on(&s, 0, 0, NULL, true);
  struct restarter rs = {.s = &s, .quic = true};
  snprintf(rs.addr, sizeof rs.addr, "%s", s.n.addr);
  const char *addrs[] = {rs.addr};
  struct vsr_client_options o;
  session_options(&o, addrs, 1);
  o.transport = "quic";
  o.quic.insecure = true;
  o.liveness_timeout_ns = 500000000ull;
  struct vsr_client *c = NULL;
  assert_int_equal(vsr_client_connect(&c, &o, 10 * H_SEC), 0);
  request_ok(c, 1, VSR_OP_CREATE_STREAM, 1);
  request_ok_across_restart(c, &rs, 2);
  struct vsr_client_stats st;
  vsr_client_stats(c, &st);
  assert_true(st.connects >= 2);
  vsr_client_del(c);
  h_stop(&s.n, true);
}

struct async_state {
  int done, status;
  uint64_t request;
};

static void async_done(void *arg, struct vsr_client *c, int status, struct vsr_msg *reply) {
  (void)c;
  struct async_state *a = arg;
  a->done++;
  a->status = status;
  if (reply) a->request = ((const struct vsr_reply_header *)reply->data)->request;
}

static bool run_until(struct vsr_loop *loop, const int *flag, uint64_t limit_ns) {
  uint64_t end = vsrt_now() + limit_ns;
  while (!*flag && vsrt_now() < end) vsr_loop_run_once(loop, 10000000);
  return *flag != 0;
}

/* A request with a |body|-byte body submitted on |c|, |loop| run until it completes (bounded:
 * it must). Returns how it completed. */
static struct async_state async_roundtrip(struct vsr_loop *loop, struct vsr_client *c,
                                          uint32_t body) {
  struct async_state a = {0};
  struct vsr_msg *m = vsr_client_msg_new(c, VSR_HEADER_SIZE + body);
  assert_int_equal(vsr_client_request(c, m, VSR_OP_CREATE_STREAM, async_done, &a), 0);
  assert_true(run_until(loop, &a.done, 10 * H_SEC));
  vsr_msg_unref(m);
  return a;
}

/* Session options with a fast heartbeat (20 ms) and a short liveness timeout (200 ms). */
static void liveness_options(struct vsr_client_options *o, const char *const *addrs,
                             uint32_t n) {
  session_options(o, addrs, n);
  o->heartbeat_period_ns = 20000000ull;
  o->liveness_timeout_ns = 200000000ull;
}

/* The same on the caller's loop: a request submitted while the node is down completes once it
 * is back. */
static void async_request_survives_restart_tcp(void **state) {
  (void)state;
  static struct stub s;
  stub_start(&s, 0, 0, NULL);
  struct restarter rs = {.s = &s};
  snprintf(rs.addr, sizeof rs.addr, "%s", s.n.addr);
  const char *addrs[] = {rs.addr};
  struct vsr_client_options o;
  session_options(&o, addrs, 1);
  struct vsr_loop *loop;
  assert_int_equal(vsr_loop_new(&loop, NULL), 0);
  struct vsr_client *c = NULL;
  assert_int_equal(vsr_client_new(&c, loop, &o, NULL, NULL), 0);
  struct async_state a1 = async_roundtrip(loop, c, 8), a2 = {0};
  assert_int_equal(a1.status, 0);
  assert_int_equal(a1.request, 1);
  h_stop(&s.n, false);
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, restart_later, &rs), 0);
  struct vsr_msg *m2 = vsr_client_msg_new(c, VSR_HEADER_SIZE + 8);
  assert_int_equal(vsr_client_request(c, m2, VSR_OP_CREATE_STREAM, async_done, &a2), 0);
  assert_true(run_until(loop, &a2.done, 15 * H_SEC));
  pthread_join(t, NULL);
  assert_int_equal(a2.done, 1);
  assert_int_equal(a2.status, 0);
  assert_int_equal(a2.request, 2);
  assert_int_equal(vsr_client_state(c), 1);
  vsr_msg_unref(m2);
  vsr_client_del(c);
  vsr_loop_del(loop);
  h_stop(&s.n, true);
}

/* ---- heartbeat vs client_idle_timeout ------------------------------------------------------ */

struct raw_state {
  int closed;
  int reason;
};

static void raw_on_state(void *user, struct vsr_client *c, int status) {
  (void)c;
  struct raw_state *rs = user;
  if (status < 0) {
    rs->closed = 1;
    rs->reason = status;
  }
}

/* Server idle timeout 300 ms. A session client with a 50 ms heartbeat and a raw client that
 * sends nothing share a loop: the raw one is closed (VSR_EIDLE on the server), the
 * heartbeating one stays on its first connection for twice the idle timeout after that, and
 * still gets its request served. */
static void heartbeat_keeps_quiet_client_open(void **state) {
  (void)state;
  struct stub s;
  memset(&s, 0, sizeof s);
  h_options(&s.n);
  s.n.opts.client_idle_timeout_ns = 300000000ull;
  s.n.opts.frame_timeout_ns = 300000000ull;
  s.n.on_frame = stub_on_frame;
  assert_int_equal(h_start(&s.n), 0);
  const char *addrs[] = {s.n.addr};
  struct vsr_loop *loop;
  assert_int_equal(vsr_loop_new(&loop, NULL), 0);
  struct vsr_client_options o;
  session_options(&o, addrs, 1);
  o.heartbeat_period_ns = 50000000ull;
  struct vsr_client *hb = NULL, *quiet = NULL;
  assert_int_equal(vsr_client_new(&hb, loop, &o, NULL, NULL), 0);
  struct vsr_client_options ro;
  vsr_client_options_default(&ro);
  ro.addr = s.n.addr;
  struct raw_state rs = {0};
  struct vsr_client_callbacks rcb = {.on_state = raw_on_state};
  assert_int_equal(vsr_client_new(&quiet, loop, &ro, &rcb, &rs), 0);
  assert_true(run_until(loop, &rs.closed, 10 * H_SEC));
  assert_int_equal(h_wait_events(&s.n, VSR_PEER_LOST, 1, 5 * H_SEC), 1);
  assert_int_equal(h_lost_reason(&s.n, 0), VSR_EIDLE);
  /* Twice the idle timeout more, the heartbeating client quiet but for its PingClient. */
  uint64_t end = vsrt_now() + 600000000ull;
  while (vsrt_now() < end) vsr_loop_run_once(loop, 10000000);
  struct vsr_client_stats st;
  vsr_client_stats(hb, &st);
  assert_int_equal(st.connects, 1);
  assert_int_equal(st.reconnects, 0);
  assert_true(st.pongs >= 1);
  assert_int_equal(vsr_client_state(hb), 1);
  assert_int_equal(h_count(&s.n, VSR_PEER_LOST), 1); /* only the quiet one */
  assert_int_equal(async_roundtrip(loop, hb, 0).status, 0);
  vsr_client_del(hb);
  vsr_client_del(quiet);
  vsr_loop_del(loop);
  h_stop(&s.n, true);
}

/* A server that stops answering anything (not even PingClient) is left after the client's
 * liveness timeout: the client reconnects (to the only replica again). */
static void silent_server_triggers_liveness_reconnect(void **state) {
  (void)state;
  struct stub s;
  stub_start(&s, 0, 0, NULL);
  const char *addrs[] = {s.n.addr};
  struct vsr_loop *loop;
  assert_int_equal(vsr_loop_new(&loop, NULL), 0);
  struct vsr_client_options o;
  liveness_options(&o, addrs, 1);
  struct vsr_client *c = NULL;
  assert_int_equal(vsr_client_new(&c, loop, &o, NULL, NULL), 0);
  async_roundtrip(loop, c, 0);
  atomic_store(&s.mode, STUB_SILENT);
  struct vsr_client_stats st = {0};
  uint64_t end = vsrt_now() + 10 * H_SEC;
  while ((st.liveness_drops == 0 || st.reconnects == 0) && vsrt_now() < end) {
    vsr_loop_run_once(loop, 10000000);
    vsr_client_stats(c, &st);
  }
  assert_true(st.liveness_drops >= 1);
  assert_true(st.reconnects >= 1);
  vsr_client_del(c);
  vsr_loop_del(loop);
  h_stop(&s.n, true);
}

/* Two replicas; the primary goes silent (no Reply, no PongClient) while the client has nothing
 * in flight, and replica 1 takes over as primary of view 1: the liveness timeout alone moves
 * the client there, and its next request is served by replica 1. */
static void silent_primary_left_for_the_next_by_liveness(void **state) {
  (void)state;
  struct stub s[2];
  const char *addrs[2];
  stubs_start(s, 2, 0, addrs);
  struct vsr_loop *loop;
  assert_int_equal(vsr_loop_new(&loop, NULL), 0);
  struct vsr_client_options o;
  liveness_options(&o, addrs, 2);
  struct vsr_client *c = NULL;
  assert_int_equal(vsr_client_new(&c, loop, &o, NULL, NULL), 0);
  assert_int_equal(async_roundtrip(loop, c, 0).status, 0);
  atomic_store(&s[0].mode, STUB_SILENT);
  atomic_store(&s[1].view, 1);
  struct vsr_client_stats st = {0};
  uint64_t end = vsrt_now() + 10 * H_SEC;
  while ((st.liveness_drops == 0 || st.view != 1) && vsrt_now() < end) {
    vsr_loop_run_once(loop, 10000000);
    vsr_client_stats(c, &st);
  }
  assert_true(st.liveness_drops >= 1);
  assert_int_equal(st.view, 1);
  assert_int_equal(st.replica, 1);
  struct async_state b = async_roundtrip(loop, c, 0);
  assert_int_equal(b.status, 0);
  assert_int_equal(b.request, 2);
  assert_int_equal(atomic_load(&s[1].requests), 1);
  vsr_client_del(c);
  vsr_loop_del(loop);
  for (int i = 0; i < 2; i++) h_stop(&s[i].n, true);
}

/* Nothing listens anywhere: a session connect keeps dialing (refused, backoff, next replica)
 * and gives up at its own timeout with VSR_ETIMEDOUT, where a raw connect says
 * VSR_ECONNREFUSED at once. */
static void session_connect_to_dead_cluster_times_out(void **state) {
  (void)state;
  struct stub s[2];
  for (uint8_t i = 0; i < 2; i++) stub_start(&s[i], i, 0, NULL);
  static char a0[64], a1[64];
  snprintf(a0, sizeof a0, "%s", s[0].n.addr);
  snprintf(a1, sizeof a1, "%s", s[1].n.addr);
  for (int i = 0; i < 2; i++) h_stop(&s[i].n, true); /* both addresses now refuse */
  const char *addrs[] = {a0, a1};
  struct vsr_client_options o;
  session_options(&o, addrs, 2);
  struct vsr_client *c = NULL;
  assert_int_equal(vsr_client_connect(&c, &o, 500000000ull), VSR_ETIMEDOUT);
  assert_null(c);
  o.session = false;
  assert_int_equal(vsr_client_connect(&c, &o, 5 * H_SEC), VSR_ECONNREFUSED);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(register_then_numbered_requests),
      cmocka_unit_test(late_reply_never_returned_for_next_request),
      cmocka_unit_test(primary_dies_same_request_resent_to_next),
      cmocka_unit_test(backup_redirects_through_pong_view),
      cmocka_unit_test(eviction_ends_session),
      cmocka_unit_test(deadline_gives_etimedout),
      cmocka_unit_test(blocking_call_survives_restart_tcp),
      cmocka_unit_test(blocking_call_survives_restart_quic),
      cmocka_unit_test(async_request_survives_restart_tcp),
      cmocka_unit_test(heartbeat_keeps_quiet_client_open),
      cmocka_unit_test(silent_server_triggers_liveness_reconnect),
      cmocka_unit_test(silent_primary_left_for_the_next_by_liveness),
      cmocka_unit_test(session_connect_to_dead_cluster_times_out),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
