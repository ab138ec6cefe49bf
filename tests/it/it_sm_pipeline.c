/* The demo state machine (tools/sm.c) over three real buses on one loop: a pipelined primary
 * must never lose an op to its own flow control.
 *  - A burst larger than the primary's peer queues (capacity 4, 64 Requests in one loop turn):
 *    the sends a full queue refuses are counted and logged by the bus (VSR-DROP), the ops are
 *    held and sent as the queues drain, and all 64 commit. Before the fix the refused Prepares
 *    were dropped and the cluster stopped committing at op 4, for good.
 *  - Prepares lost after their queue took them (both backups drop the first copy of op 3, as a
 *    connection reset or a refused PrepareOk would): the primary sends them again after
 *    resend_ns and every op commits.
 *  - The client table: Register commits a session (its op) on every replica; a duplicate
 *    Request is answered from the table and not executed again; unknown clients get Eviction
 *    NoSession, a stale session SessionTooLow; a full table evicts the client whose newest
 *    commit is the oldest, on every replica alike.
 * Replies go to a client id that is not connected: each is refused and counted.
 *  - Batches (batch_max 64): the Requests of one loop turn from three clients connected to the
 *    primary become one Prepare; all three replicas commit it as one op with the Requests in
 *    the same order, every client gets each Reply once; a duplicate inside the batch is not
 *    prepared twice, one of a committed request is answered from the table, in and across
 *    batches. A batch Prepare whose body does not add up (count, lengths, a frame that is not
 *    a session Request), sent over the replica link, is refused with the reason logged. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

/* The unit under test: the demo state machine of `vsrbus node` (normal case, client table,
 * view change). */
#include "../../tools/sm.c"
#include "../../tools/sm_table.c"
#include "../../tools/sm_vc.c"
#include "../../tools/sm_batch.c"
#include "testutil.h"

#define T_SEC 1000000000ull
#define T_CLUSTER "it-sm-pipeline"
#define T_CLIENT 0x7777000000000001ull /* a client id the primary does not know */

static const char t_secret[] = "0123456789abcdef0123456789abcdef-sm";

struct t_cluster {
  struct vsr_loop *loop;
  struct vsr_bus *bus[3];
  struct vsr_sm sm[3];
  char addr[3][64];
  const char *addrs[3];
  uint64_t lose_op;    /* backups drop the first Prepare carrying this op (0: none) */
  int lost[3];         /* Prepares dropped that way, per backup */
};

/* ---- captured log lines ------------------------------------------------------------------ */

static int t_drop_lines, t_full_lines;
static bool t_with_clients; /* t_start: the primary listens for clients too */

/* The clients of the batch test: the primary's id for each (learned from its PingClient, which
 * carries the client's index in reserved_command[0]) and the Replies each got. */
#define T_NC 3
#define T_REQ_MAX 16
static struct {
  uint64_t bus_id[T_NC];
  uint32_t got[T_NC][T_REQ_MAX]; /* Replies by client and request number */
  uint64_t op[T_NC][T_REQ_MAX];  /* the op the last one named */
  uint32_t replies, stray;
} t_b;
static char t_said[512];
static int t_said_malformed;

static void t_say(void *ctx, const char *line) {
  (void)ctx;
  fprintf(stderr, "sm: %s\n", line);
  if (strstr(line, "malformed batch")) {
    t_said_malformed++;
    snprintf(t_said, sizeof t_said, "%s", line);
  }
}

static void t_log(void *user, enum vsr_log_level level, const char *line) {
  (void)user;
  (void)level;
  fprintf(stderr, "%s\n", line);
  if (strstr(line, "VSR-DROP")) t_drop_lines++;
  if (strstr(line, "VSR-DROP") && strstr(line, "Prepare not sent: send queue full")) {
    t_full_lines++;
  }
}

/* ---- the cluster -------------------------------------------------------------------------- */

static struct t_cluster *t_of(struct vsr_bus *bus, void *user, int *index) {
  struct t_cluster *c = user;
  for (int i = 0; i < 3; i++) {
    if (c->bus[i] == bus) *index = i;
  }
  return c;
}

static void t_on_message(void *user, struct vsr_bus *bus, enum vsr_plane plane, uint64_t peer,
                         struct vsr_msg *msg) {
  int i = -1;
  struct t_cluster *c = t_of(bus, user, &i);
  if (i < 0) return;
  if (plane == VSR_PLANE_CLIENT) {
    const struct vsr_header *h = (const struct vsr_header *)msg->data;
    if (h->command == VSR_CMD_PING_CLIENT && h->reserved_command[0] < T_NC) {
      t_b.bus_id[h->reserved_command[0]] = peer;
    }
    vsr_sm_on_client_message(&c->sm[i], peer, msg);
    return;
  }
  const struct vsr_prepare_header *p = (const struct vsr_prepare_header *)msg->data;
  if (i != 0 && p->command == VSR_CMD_PREPARE && c->lose_op && p->op == c->lose_op &&
      c->lost[i] == 0) {
    c->lost[i]++; /* lost in transit */
    return;
  }
  vsr_sm_on_replica_message(&c->sm[i], (uint8_t)peer, msg);
}

static void t_on_peer_event(void *user, struct vsr_bus *bus, const struct vsr_peer_event *ev) {
  int i = -1;
  struct t_cluster *c = t_of(bus, user, &i);
  if (i >= 0 && ev->plane == VSR_PLANE_REPLICA && ev->kind == VSR_PEER_AUTHENTICATED) {
    vsr_sm_on_replica_up(&c->sm[i], (uint8_t)ev->id);
  }
}

/* Runs the loop until |done| or |timeout_ns| passes. */
static bool t_run_until(struct t_cluster *c, bool (*done)(struct t_cluster *), uint64_t timeout_ns) {
  uint64_t end = vsrt_now() + timeout_ns;
  while (!done(c)) {
    if (vsrt_now() >= end) return false;
    vsr_loop_run_once(c->loop, 5000000);
  }
  return true;
}

static bool t_linked(struct t_cluster *c) {
  for (int i = 0; i < 3; i++) {
    struct vsr_bus_stats st;
    vsr_bus_stats(c->bus[i], &st);
    if (st.replicas_connected != 2) return false;
  }
  return true;
}

static bool t_normal(struct t_cluster *c) {
  for (int i = 0; i < 3; i++) {
    if (c->sm[i].status != VSR_SM_NORMAL) return false;
  }
  return true;
}

/* Replicas 2, 1, 0 in that order (lower ids dial higher ones), the primary's peer queues
 * |primary_queue| frames; all linked; the primary resends after |resend_ns|. */
static void t_start(struct t_cluster *c, uint32_t primary_queue, uint64_t resend_ns) {
  memset(c, 0, sizeof *c);
  t_drop_lines = t_full_lines = 0;
  vsr_log_set_handler(t_log, NULL);
  struct vsr_loop_options lo;
  vsr_loop_options_default(&lo);
  assert_int_equal(vsr_loop_new(&c->loop, &lo), 0);
  for (int i = 0; i < 3; i++) {
    snprintf(c->addr[i], sizeof c->addr[i], "127.0.0.1:0");
    c->addrs[i] = c->addr[i];
  }
  struct vsr_bus_callbacks cb = {.on_message = t_on_message, .on_peer_event = t_on_peer_event};
  for (int i = 2; i >= 0; i--) {
    struct vsr_bus_options o;
    vsr_bus_options_default(&o);
    o.loop = c->loop;
    o.client_tcp_addr = t_with_clients && i == 0 ? "127.0.0.1:0" : NULL;
    o.cluster_name = T_CLUSTER;
    o.replica_index = (uint8_t)i;
    o.replica_count = 3;
    o.replica_addrs = c->addrs;
    o.secret = (const uint8_t *)t_secret;
    o.secret_len = sizeof t_secret - 1;
    o.reconnect_period_ns = T_SEC / 10;
    if (i == 0) o.peer_queue_capacity = primary_queue;
    assert_int_equal(vsr_bus_new(&c->bus[i], &o, &cb, c), 0);
    assert_int_equal(vsr_sm_init(&c->sm[i], c->bus[i], (uint8_t)i, 3,
                                 vsr_cluster_id(T_CLUSTER)), 0);
    c->sm[i].resend_ns = resend_ns;
    assert_int_equal(vsr_bus_listen_addr(c->bus[i], "replica", c->addr[i], sizeof c->addr[i]), 0);
  }
  assert_true(t_run_until(c, t_linked, 10 * T_SEC));
  assert_true(t_run_until(c, t_normal, 10 * T_SEC)); /* a fresh cluster: view 0 */
}

static bool t_all_shut_down(struct t_cluster *c) {
  for (int i = 0; i < 3; i++) {
    if (!vsr_bus_shutdown_done(c->bus[i])) return false;
  }
  return true;
}

static void t_stop(struct t_cluster *c) {
  for (int i = 0; i < 3; i++) vsr_sm_fini(&c->sm[i]); /* timers first: they send */
  /* The loop is ours: shut the buses down without blocking, drive it until they are done. */
  for (int i = 0; i < 3; i++) assert_int_equal(vsr_bus_shutdown_start(c->bus[i], T_SEC), 0);
  assert_true(t_run_until(c, t_all_shut_down, 10 * T_SEC));
  for (int i = 0; i < 3; i++) vsr_bus_del(c->bus[i]);
  vsr_loop_del(c->loop);
  vsr_log_set_handler(NULL, NULL);
}

static uint64_t t_want;
static bool t_committed(struct t_cluster *c) { return c->sm[0].commit >= t_want; }

/* Client |id| holds session 1 on every replica, as if its Register had committed as op 1 (the
 * Register's own path is it.view_change's; here the ops stay the test's Requests). */
static void t_register_id(struct t_cluster *c, uint64_t id, uint64_t registers) {
  for (int i = 0; i < 3; i++) {
    struct vsr_msg *m = vsr_bus_msg_new(c->bus[i], VSR_HEADER_SIZE);
    assert_non_null(m);
    struct vsr_prepare_header *p = (struct vsr_prepare_header *)m->data;
    p->command = VSR_CMD_PREPARE;
    p->client = (vsr_u128){id, 0};
    p->op = 1;
    p->operation = VSR_OP_REGISTER;
    struct vsr_sm_entry e = {.op = 1, .prepare = m};
    struct vsr_sm_item it;
    uint32_t pos = 0;
    assert_true(vsr_sm_item_next(m, &pos, &it));
    assert_non_null(vsr_sm_table_apply(&c->sm[i], &e, &it));
    vsr_msg_unref(m);
    assert_int_equal(c->sm[i].registers, registers);
  }
}

static void t_register(struct t_cluster *c) { t_register_id(c, 42, 1); }

/* |n| Requests handed to the primary in one go (one loop turn: nothing is written meanwhile). */
static void t_requests(struct t_cluster *c, uint64_t n) {
  for (uint64_t k = 1; k <= n; k++) {
    struct vsr_msg *m = vsr_bus_msg_new(c->bus[0], VSR_HEADER_SIZE + 64);
    assert_non_null(m);
    struct vsr_request_header *rq = (struct vsr_request_header *)m->data;
    rq->command = VSR_CMD_REQUEST;
    rq->cluster = vsr_cluster_id(T_CLUSTER);
    rq->client = (vsr_u128){42, 0};
    rq->request = k;
    rq->session = 1;
    rq->operation = VSR_OP_SEND_MESSAGES;
    memset(m->data + VSR_HEADER_SIZE, (int)k, 64);
    vsr_sm_on_client_message(&c->sm[0], T_CLIENT, m);
    vsr_msg_unref(m);
  }
}

/* ---- tests -------------------------------------------------------------------------------- */

static void burst_beyond_the_queue_commits_every_op(void **state) {
  (void)state;
  struct t_cluster c;
  t_start(&c, 4, VSR_SM_RESEND_NS);
  t_register(&c);
  uint64_t refused0 = c.sm[0].replies_refused;
  struct vsr_bus_stats before;
  vsr_bus_stats(c.bus[0], &before);

  t_requests(&c, 64);
  /* Four Prepares fit each backup's queue; the fifth is refused once per backup (counted and
   * logged by the bus), the rest are held without asking again. */
  struct vsr_bus_stats st;
  vsr_bus_stats(c.bus[0], &st);
  assert_int_equal(c.sm[0].op, 64);
  assert_int_equal(c.sm[0].deferred, 2);
  assert_int_equal(st.drops_backpressure - before.drops_backpressure, 2);
  assert_int_equal(t_full_lines, 1); /* the second one falls in the same second: one line */
  assert_int_equal(c.sm[0].pipeline_full, 0);

  t_want = 64;
  assert_true(t_run_until(&c, t_committed, 20 * T_SEC));
  assert_int_equal(c.sm[0].commit, 64);
  /* A Reply counts only once the bus accepted it: none did (the client is not connected). */
  assert_int_equal(c.sm[0].replies, 0);
  assert_int_equal(c.sm[0].replies_refused - refused0, 64);
  vsr_bus_stats(c.bus[0], &st);
  /* Nothing lost unseen: every Reply (to a client that is not there) refused and counted. */
  assert_int_equal(st.drops_not_connected - before.drops_not_connected, 64);
  /* Every op reached a quorum, so a majority of the backups got it. */
  assert_true(c.sm[1].prepares + c.sm[2].prepares >= 64);
  assert_true(t_drop_lines >= 1);
  t_stop(&c);
}

static void prepares_lost_in_transit_are_sent_again(void **state) {
  (void)state;
  struct t_cluster c;
  t_start(&c, 256, 20 * 1000000ull);
  t_register(&c);
  c.lose_op = 3;
  t_requests(&c, 16);
  t_want = 16;
  assert_true(t_run_until(&c, t_committed, 20 * T_SEC));
  assert_int_equal(c.sm[0].commit, 16);
  assert_int_equal(c.lost[1], 1);
  assert_int_equal(c.lost[2], 1);
  /* op 3 again, to at least one backup: resent by the primary, or repaired on request (a
   * backup that holds op 4 asks for the gap at once) */
  assert_true(c.sm[0].resent + c.sm[0].repairs_sent >= 1);
  assert_int_equal(c.sm[0].deferred, 0);
  t_stop(&c);
}

/* A Request (or Register: |op| VSR_OP_REGISTER) from client |id| handed to the primary. */
static void t_client(struct t_cluster *c, uint64_t id, uint64_t session, uint64_t request,
                     uint8_t op) {
  struct vsr_msg *m = vsr_bus_msg_new(c->bus[0], VSR_HEADER_SIZE + 8);
  assert_non_null(m);
  struct vsr_request_header *rq = (struct vsr_request_header *)m->data;
  rq->command = VSR_CMD_REQUEST;
  rq->cluster = vsr_cluster_id(T_CLUSTER);
  rq->client = (vsr_u128){id, 0};
  rq->request = request;
  rq->session = session;
  rq->operation = op;
  vsr_sm_on_client_message(&c->sm[0], T_CLIENT, m);
  vsr_msg_unref(m);
}

static bool t_all_committed(struct t_cluster *c) {
  for (int i = 0; i < 3; i++) {
    if (c->sm[i].commit < t_want) return false;
  }
  return true;
}

static void client_table_sessions(void **state) {
  (void)state;
  struct t_cluster c;
  t_start(&c, 256, VSR_SM_RESEND_NS);
  for (int i = 0; i < 3; i++) c.sm[i].clients_max = 2;
  const uint64_t A = 100, B = 101, C = 102;
  t_client(&c, A, 0, 0, VSR_OP_REGISTER); /* op 1: session 1 */
  t_want = 1;
  assert_true(t_run_until(&c, t_committed, 10 * T_SEC));
  t_client(&c, B, 0, 0, VSR_OP_REGISTER); /* op 2: session 2 */
  t_client(&c, B, 0, 0, VSR_OP_REGISTER); /* a resend while it is prepared: not again */
  t_want = 2;
  assert_true(t_run_until(&c, t_committed, 10 * T_SEC));
  assert_int_equal(c.sm[0].op, 2);
  assert_int_equal(vsr_sm_table_find(&c.sm[0], (vsr_u128){A, 0})->session, 1);
  assert_int_equal(vsr_sm_table_find(&c.sm[0], (vsr_u128){B, 0})->session, 2);

  t_client(&c, A, 1, 1, VSR_OP_SEND_MESSAGES); /* op 3 */
  t_want = 3;
  assert_true(t_run_until(&c, t_committed, 10 * T_SEC));
  t_client(&c, A, 1, 1, VSR_OP_SEND_MESSAGES); /* a duplicate: from the table, not executed */
  t_client(&c, A, 1, 1, VSR_OP_SEND_MESSAGES);
  assert_int_equal(c.sm[0].duplicates, 2);
  assert_int_equal(c.sm[0].op, 3);
  t_client(&c, A, 1, 3, VSR_OP_SEND_MESSAGES); /* a gap (2 never sent): dropped */
  assert_int_equal(c.sm[0].op, 3);

  t_client(&c, C, 7, 1, VSR_OP_SEND_MESSAGES); /* never registered */
  assert_int_equal(c.sm[0].evictions[VSR_EVICT_NO_SESSION], 1);
  assert_int_equal(c.sm[0].op, 3);

  t_client(&c, C, 0, 0, VSR_OP_REGISTER); /* op 4: the table is full, B is the oldest */
  t_want = 4;
  assert_true(t_run_until(&c, t_committed, 10 * T_SEC));
  assert_int_equal(c.sm[0].table_evicted, 1);
  assert_null(vsr_sm_table_find(&c.sm[0], (vsr_u128){B, 0}));
  t_client(&c, B, 2, 1, VSR_OP_SEND_MESSAGES);
  assert_int_equal(c.sm[0].evictions[VSR_EVICT_NO_SESSION], 2);

  t_client(&c, A, 0, 0, VSR_OP_REGISTER); /* op 5: A's session becomes 5 */
  t_want = 5;
  assert_true(t_run_until(&c, t_committed, 10 * T_SEC));
  t_client(&c, A, 1, 2, VSR_OP_SEND_MESSAGES); /* the old session */
  assert_int_equal(c.sm[0].evictions[VSR_EVICT_SESSION_TOO_LOW], 1);
  assert_int_equal(c.sm[0].op, 5);

  /* The backups applied the same ops to their own tables (the Commit heartbeat tells them). */
  assert_true(t_run_until(&c, t_all_committed, 10 * T_SEC));
  for (int i = 0; i < 3; i++) {
    assert_int_equal(c.sm[i].registers, 4);
    assert_int_equal(c.sm[i].table_evicted, 1);
    assert_null(vsr_sm_table_find(&c.sm[i], (vsr_u128){B, 0}));
    assert_int_equal(vsr_sm_table_find(&c.sm[i], (vsr_u128){A, 0})->session, 5);
    assert_int_equal(vsr_sm_table_find(&c.sm[i], (vsr_u128){C, 0})->session, 4);
  }
  t_stop(&c);
}

/* ---- batches ------------------------------------------------------------------------------ */

static void t_client_msg(void *user, struct vsr_client *cl, struct vsr_msg *msg) {
  (void)user;
  (void)cl;
  const struct vsr_reply_header *rp = (const struct vsr_reply_header *)msg->data;
  if (rp->command != VSR_CMD_REPLY) return;
  uint64_t j = rp->client.lo - 201;
  if (j >= T_NC || rp->request >= T_REQ_MAX ||
      msg->size != VSR_HEADER_SIZE + 16 || msg->data[VSR_HEADER_SIZE] != (uint8_t)(16 * j + rp->request)) {
    t_b.stray++; /* not a Reply to a Request of ours, or not its body */
    return;
  }
  t_b.got[j][rp->request]++;
  t_b.op[j][rp->request] = rp->op;
  t_b.replies++;
}

static bool t_ids_known(struct t_cluster *c) {
  (void)c;
  for (int j = 0; j < T_NC; j++) {
    if (t_b.bus_id[j] == 0) return false;
  }
  return true;
}

/* Request |request| of client 201 + |j| (session 1) handed to the primary as if it arrived on
 * the client's connection; its body is 16 bytes of (16 j + request). */
static void t_batch_req(struct t_cluster *c, int j, uint64_t request) {
  struct vsr_msg *m = vsr_bus_msg_new(c->bus[0], VSR_HEADER_SIZE + 16);
  assert_non_null(m);
  struct vsr_request_header *rq = (struct vsr_request_header *)m->data;
  rq->command = VSR_CMD_REQUEST;
  rq->cluster = vsr_cluster_id(T_CLUSTER);
  rq->client = (vsr_u128){201 + (uint64_t)j, 0};
  rq->request = request;
  rq->session = 1;
  rq->operation = VSR_OP_SEND_MESSAGES;
  memset(m->data + VSR_HEADER_SIZE, (int)(16 * j + (int)request), 16);
  vsr_sm_on_client_message(&c->sm[0], t_b.bus_id[j], m);
  vsr_msg_unref(m);
}

static uint32_t t_replies_want;
static bool t_batch_done(struct t_cluster *c) {
  return t_all_committed(c) && t_b.replies >= t_replies_want;
}

/* Every replica holds op |op| as the same batch Prepare, whose requests are (client j,
 * request k) in the order |order| lists them (n pairs). */
static void t_check_batch(struct t_cluster *c, uint64_t op, const int (*order)[2], uint32_t n) {
  vsr_u128 sum = {0, 0};
  for (int i = 0; i < 3; i++) {
    struct vsr_sm_entry *e = vsr_sm_have(&c->sm[i], op);
    assert_non_null(e);
    assert_true(vsr_sm_is_batch(e->prepare));
    if (i == 0) sum = e->checksum;
    assert_true(vsr_u128_eq(e->checksum, sum));
    struct vsr_sm_item it;
    uint32_t pos = 0, k = 0;
    while (vsr_sm_item_next(e->prepare, &pos, &it)) {
      assert_true(k < n);
      assert_int_equal(it.index, k);
      assert_int_equal(it.client.lo, 201 + (uint64_t)order[k][0]);
      assert_int_equal(it.request, (uint64_t)order[k][1]);
      k++;
    }
    assert_int_equal(k, n);
  }
}

static void batch_commits_in_order_replies_once(void **state) {
  (void)state;
  struct t_cluster c;
  memset(&t_b, 0, sizeof t_b);
  t_with_clients = true;
  t_start(&c, 256, VSR_SM_RESEND_NS);
  t_with_clients = false;
  for (int i = 0; i < 3; i++) c.sm[i].batch_max = 64;
  char addr[64];
  assert_int_equal(vsr_bus_listen_addr(c.bus[0], "tcp", addr, sizeof addr), 0);
  struct vsr_client *cl[T_NC];
  struct vsr_client_callbacks ccb = {.on_message = t_client_msg};
  for (int j = 0; j < T_NC; j++) {
    struct vsr_client_options o;
    vsr_client_options_default(&o);
    o.addr = addr;
    assert_int_equal(vsr_client_new(&cl[j], c.loop, &o, &ccb, NULL), 0);
    struct vsr_msg *m = vsr_client_msg_new(cl[j], VSR_HEADER_SIZE);
    assert_non_null(m);
    struct vsr_header *h = (struct vsr_header *)m->data;
    h->command = VSR_CMD_PING_CLIENT;
    h->reserved_command[0] = (uint8_t)j;
    vsr_frame_seal(m->data);
    assert_int_equal(vsr_client_send(cl[j], m), 0);
    vsr_msg_unref(m);
    t_register_id(&c, 201 + (uint64_t)j, (uint64_t)j + 1);
  }
  assert_true(t_run_until(&c, t_ids_known, 10 * T_SEC));

  /* One loop turn: requests 1..8 of the three clients, interleaved, and request 3 of client 0
   * again while it waits in the batch. */
  int order[32][2];
  uint32_t n = 0;
  for (int k = 1; k <= 8; k++) {
    for (int j = 0; j < T_NC; j++) {
      t_batch_req(&c, j, (uint64_t)k);
      order[n][0] = j;
      order[n][1] = k;
      n++;
    }
    if (k == 3) t_batch_req(&c, 0, 3);
  }
  assert_int_equal(c.sm[0].pending_len, 24);
  assert_int_equal(c.sm[0].op, 0); /* nothing prepared before the turn ends */
  assert_int_equal(c.sm[0].duplicates_dropped, 1);
  t_want = 1;
  t_replies_want = 24;
  assert_true(t_run_until(&c, t_batch_done, 20 * T_SEC));
  assert_int_equal(c.sm[0].op, 1); /* one op for all of them */
  assert_int_equal(c.sm[0].batches, 1);
  assert_int_equal(c.sm[0].batched, 24);
  t_check_batch(&c, 1, (const int (*)[2])order, n);
  for (int i = 0; i < 3; i++) {
    for (int j = 0; j < T_NC; j++) {
      assert_int_equal(vsr_sm_table_find(&c.sm[i], (vsr_u128){201 + (uint64_t)j, 0})->request, 8);
    }
  }

  /* Across batches: request 5 of client 1 again (committed: its Reply from the table), then a
   * turn with request 9 of each and request 4 of client 2 again. */
  t_batch_req(&c, 1, 5);
  assert_int_equal(c.sm[0].duplicates, 1);
  assert_int_equal(c.sm[0].pending_len, 0);
  int order2[3][2] = {{0, 9}, {1, 9}, {2, 9}};
  t_batch_req(&c, 0, 9);
  t_batch_req(&c, 1, 9);
  t_batch_req(&c, 2, 4);
  t_batch_req(&c, 2, 9);
  assert_int_equal(c.sm[0].duplicates, 2);
  assert_int_equal(c.sm[0].pending_len, 3);
  t_want = 2;
  t_replies_want = 24 + 2 + 3;
  assert_true(t_run_until(&c, t_batch_done, 20 * T_SEC));
  t_check_batch(&c, 2, (const int (*)[2])order2, 3);
  /* Nothing more arrives: each Reply exactly once (twice for the two duplicates). */
  for (int turn = 0; turn < 20; turn++) vsr_loop_run_once(c.loop, 5000000);
  assert_int_equal(t_b.replies, 29);
  assert_int_equal(t_b.stray, 0);
  for (int j = 0; j < T_NC; j++) {
    for (int k = 1; k <= 9; k++) {
      int dup = (j == 1 && k == 5) || (j == 2 && k == 4);
      assert_int_equal(t_b.got[j][k], dup ? 2 : 1);
      assert_int_equal(t_b.op[j][k], k == 9 ? 2 : 1);
    }
  }
  assert_int_equal(c.sm[0].batches, 2);
  assert_int_equal(c.sm[0].replies, 27); /* the two from the table are duplicates, not replies */
  for (int j = 0; j < T_NC; j++) vsr_client_del(cl[j]);
  t_stop(&c);
}

/* A batch Prepare of |n| Request frames of |body| bytes each (header count |count|); |tail|
 * extra zero bytes after them; frame |bad| (if < n) gets command Ping. Sealed. */
static struct vsr_msg *t_bad_batch(struct vsr_bus *bus, uint32_t n, uint64_t count, uint32_t body,
                                   uint32_t tail, uint32_t bad, uint32_t lie) {
  uint32_t frame = VSR_HEADER_SIZE + body;
  struct vsr_msg *m = vsr_bus_msg_new(bus, VSR_HEADER_SIZE + n * frame + tail);
  assert_non_null(m);
  struct vsr_prepare_header *p = (struct vsr_prepare_header *)m->data;
  p->command = VSR_CMD_PREPARE;
  p->cluster = vsr_cluster_id(T_CLUSTER);
  p->replica = 0;
  p->op = 1;
  p->operation = VSR_OP_RESERVED;
  p->request = count;
  for (uint32_t k = 0; k < n; k++) {
    struct vsr_request_header *rq =
        (struct vsr_request_header *)(m->data + VSR_HEADER_SIZE + k * frame);
    rq->command = k == bad ? VSR_CMD_PING : VSR_CMD_REQUEST;
    rq->size = frame + (k == n - 1 ? lie : 0);
    rq->client = (vsr_u128){201 + k, 0};
    rq->request = 1;
    rq->session = 1;
    rq->operation = VSR_OP_SEND_MESSAGES;
  }
  vsr_prepare_set_body_checksum(m->data);
  vsr_frame_seal(m->data);
  return m;
}

static bool t_refused(struct t_cluster *c) { return c->sm[1].malformed >= 1; }

static void malformed_batch_refused(void **state) {
  (void)state;
  struct t_cluster c;
  t_start(&c, 256, VSR_SM_RESEND_NS);
  t_said_malformed = 0;
  t_said[0] = 0;
  vsr_sm_set_say(t_say, NULL);
  char why[160];
  /* The layouts a backup accepts and those it refuses, with the reason. */
  struct vsr_msg *m = t_bad_batch(c.bus[0], 3, 3, 8, 0, 99, 0);
  assert_int_equal(vsr_sm_batch_check(m, why, sizeof why), 0);
  vsr_msg_unref(m);
  m = t_bad_batch(c.bus[0], 3, 4, 8, 0, 99, 0); /* counts 4, holds 3 */
  assert_int_equal(vsr_sm_batch_check(m, why, sizeof why), -1);
  assert_non_null(strstr(why, "header counts 4 requests"));
  vsr_msg_unref(m);
  m = t_bad_batch(c.bus[0], 3, 2, 8, 0, 99, 0); /* counts 2, holds 3 */
  assert_int_equal(vsr_sm_batch_check(m, why, sizeof why), -1);
  assert_non_null(strstr(why, "holds more than 2"));
  vsr_msg_unref(m);
  m = t_bad_batch(c.bus[0], 3, 3, 8, 0, 99, 1); /* the last frame claims a byte too many */
  assert_int_equal(vsr_sm_batch_check(m, why, sizeof why), -1);
  assert_non_null(strstr(why, "frame 2 at body offset 528: size 265, 264 bytes left"));
  vsr_msg_unref(m);
  m = t_bad_batch(c.bus[0], 3, 3, 8, 100, 99, 0); /* 100 bytes after the last frame */
  assert_int_equal(vsr_sm_batch_check(m, why, sizeof why), -1);
  assert_non_null(strstr(why, "less than a header"));
  vsr_msg_unref(m);
  m = t_bad_batch(c.bus[0], 3, 3, 8, 0, 1, 0); /* frame 1 is a Ping */
  assert_int_equal(vsr_sm_batch_check(m, why, sizeof why), -1);
  assert_non_null(strstr(why, "frame 1 at body offset 264: command 1 operation 160"));
  vsr_msg_unref(m);
  m = t_bad_batch(c.bus[0], 1, 1, 8, 0, 99, 0); /* a batch of one is not a batch */
  assert_int_equal(vsr_sm_batch_check(m, why, sizeof why), -1);
  vsr_msg_unref(m);

  /* Over the replica link (checksums right: the bus delivers it): refused, logged with the
   * sender and the reason, not stored, not acknowledged; the link stays. */
  m = t_bad_batch(c.bus[0], 3, 4, 8, 0, 99, 0);
  assert_int_equal(vsr_bus_send_to_replica(c.bus[0], 1, m), 0);
  vsr_msg_unref(m);
  assert_true(t_run_until(&c, t_refused, 10 * T_SEC));
  assert_int_equal(c.sm[1].malformed, 1);
  assert_int_equal(t_said_malformed, 1);
  assert_non_null(strstr(t_said, "replica 1: malformed batch Prepare op 1"));
  assert_non_null(strstr(t_said, "from replica 0 refused: header counts 4 requests"));
  assert_null(vsr_sm_have(&c.sm[1], 1));
  assert_int_equal(c.sm[1].op, 0);
  assert_int_equal(c.sm[0].prepare_oks, 0);
  struct vsr_bus_stats st;
  vsr_bus_stats(c.bus[1], &st);
  assert_int_equal(st.replicas_connected, 2);
  vsr_sm_set_say(NULL, NULL);
  t_stop(&c);
}

int main(void) {
  vsrt_require_backend();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(burst_beyond_the_queue_commits_every_op),
      cmocka_unit_test(prepares_lost_in_transit_are_sent_again),
      cmocka_unit_test(client_table_sessions),
      cmocka_unit_test(batch_commits_in_order_replies_once),
      cmocka_unit_test(malformed_batch_refused),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
