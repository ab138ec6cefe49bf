/* Demo state machine: the smallest useful application of the bus. Single replica: Request ->
 * Reply at once. Cluster: Viewstamped Replication in memory (see sm.h); this file holds the
 * normal case and the log, sm_table.c the client table, sm_vc.c the view change. */
#include "sm.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SM_DROP_LOG_EVERY_NS 1000000000ull /* at most one VSR-DROP line a second */
#define SM_STR_(x) #x
#define SM_STR(x) SM_STR_(x)

static uint64_t (*sm_clock_fn)(void *ctx);
static void *sm_clock_ctx;

void vsr_sm_set_clock(uint64_t (*fn)(void *ctx), void *ctx) {
  sm_clock_fn = fn;
  sm_clock_ctx = ctx;
}

static void (*sm_say_fn)(void *ctx, const char *line);
static void *sm_say_ctx;

void vsr_sm_set_say(void (*fn)(void *ctx, const char *line), void *ctx) {
  sm_say_fn = fn;
  sm_say_ctx = ctx;
}

void vsr_sm_say(const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (sm_say_fn) sm_say_fn(sm_say_ctx, msg);
  else fprintf(stderr, "vsrbus node: %s\n", msg);
}

static uint64_t sm_realtime_ns(void) {
  if (sm_clock_fn) return sm_clock_fn(sm_clock_ctx);
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void sm_on_resend_timer(void *ctx);

int vsr_sm_init(struct vsr_sm *sm, struct vsr_bus *bus, uint8_t replica, uint16_t count,
                vsr_u128 cluster) {
  memset(sm, 0, sizeof *sm);
  sm->bus = bus;
  sm->replica = replica;
  sm->replica_count = count;
  sm->cluster = cluster;
  sm->resend_ns = VSR_SM_RESEND_NS;
  sm->primary_timeout_ns = VSR_SM_PRIMARY_TIMEOUT_NS;
  sm->clients_max = VSR_SM_CLIENTS_MAX;
  sm->batch_max = 1;
  sm->batch_bytes = VSR_SM_BATCH_BYTES;
  if (count > VSR_SM_MAX_REPLICAS) return VSR_ECONFIG;
  if (count <= 1) return 0;
  sm->pipe = calloc(VSR_SM_LOG, sizeof *sm->pipe);
  if (!sm->pipe || vsr_timer_new(&sm->resend_timer, vsr_bus_loop(bus), sm_on_resend_timer, sm) ||
      vsr_sm_vc_init(sm) != 0 || vsr_sm_batch_init(sm) != 0) {
    vsr_sm_fini(sm);
    return VSR_ENOMEM;
  }
  struct vsr_bus_stats st;
  vsr_bus_stats(bus, &st);
  sm->mem_max = st.memory_max;
  sm->trim_from = 1;
  vsr_timer_arm(sm->resend_timer, sm->resend_ns);
  return 0;
}

void vsr_sm_entry_clear(struct vsr_sm_entry *e) {
  vsr_msg_unref(e->prepare);
  memset(e, 0, sizeof *e);
}

void vsr_sm_fini(struct vsr_sm *sm) {
  if (sm->resend_timer) {
    vsr_timer_del(sm->resend_timer);
    sm->resend_timer = NULL;
  }
  vsr_sm_batch_fini(sm);
  vsr_sm_vc_fini(sm);
  vsr_sm_table_fini(sm);
  if (sm->pipe) {
    for (uint32_t i = 0; i < VSR_SM_LOG; i++) vsr_sm_entry_clear(&sm->pipe[i]);
    free(sm->pipe);
    sm->pipe = NULL;
  }
}

struct vsr_msg *vsr_sm_build_reply(struct vsr_bus *bus, const struct vsr_msg *req, uint8_t replica,
                                   uint64_t op) {
  struct vsr_msg *m = vsr_bus_msg_new(bus, req->size);
  if (!m) return NULL;
  const struct vsr_request_header *rq = (const struct vsr_request_header *)req->data;
  struct vsr_reply_header *rp = (struct vsr_reply_header *)m->data;
  rp->command = VSR_CMD_REPLY;
  rp->cluster = rq->cluster;
  rp->view = rq->view;
  rp->replica = replica;
  rp->request_checksum = rq->request_checksum;
  rp->client = rq->client;
  rp->op = op;
  rp->commit = op;
  rp->timestamp = sm_realtime_ns();
  rp->request = rq->request;
  rp->operation = rq->operation;
  memcpy(m->data + VSR_HEADER_SIZE, req->data + VSR_HEADER_SIZE, req->size - VSR_HEADER_SIZE);
  return m;
}

/* Pong and PongClient echo the ping's reserved_command, so the pinger can match them; the view
 * tells a client which replica is the primary. */
static struct vsr_msg *sm_build_pong(struct vsr_sm *sm, const struct vsr_msg *ping,
                                     uint8_t command) {
  struct vsr_msg *m = vsr_bus_msg_new(sm->bus, VSR_HEADER_SIZE);
  if (!m) return NULL;
  const struct vsr_header *in = (const struct vsr_header *)ping->data;
  struct vsr_header *out = (struct vsr_header *)m->data;
  out->command = command;
  out->cluster = in->cluster;
  out->replica = sm->replica;
  /* Only a view that exists: a replica in a view change (or recovering) names the last view
   * it was normal in. A client follows the highest view it hears, so naming a view change that
   * then failed (its new primary crashed) sent every client to a primary that never was, for
   * good (found by vsrbus sim, seed 5383 --replicas 3). */
  out->view = sm->status == VSR_SM_NORMAL ? sm->view : sm->log_view;
  memcpy(out->reserved_command, in->reserved_command, sizeof out->reserved_command);
  return m;
}

uint64_t vsr_sm_now(struct vsr_sm *sm) { return vsr_loop_now(vsr_bus_loop(sm->bus)); }

/* One VSR-DROP line in the bus's log format (a JSON object a line under --log-format json). The
 * node's own vsr_node_say does the same; the state machine stays free of node.c for its tests. */
static void sm_log_drop_line(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void sm_log_drop_line(const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (vsr_log_get_format() == VSR_LOG_JSON) vsr_log_event(VSR_LOG_WARN, "VSR-DROP", "%s", msg);
  else vsr_sm_say("VSR-DROP %s", msg);
}

/* The drops the bus cannot see (it logs its own, VSR-DROP too): a Request refused because the
 * pipeline is full, a frame not built because the pool is exhausted. Counted always; logged at
 * once, then at most once a second with the count since the previous line. */
void vsr_sm_log_drop(struct vsr_sm *sm, const char *what) {
  uint64_t now = vsr_sm_now(sm), total = sm->pipeline_full + sm->send_errors;
  if (sm->drop_log_ns != 0 && now - sm->drop_log_ns < SM_DROP_LOG_EVERY_NS) return;
  sm_log_drop_line("replica %u: %s; %llu dropped since the last line "
          "(totals: %llu pipeline full, %llu send errors)", sm->replica, what,
          (unsigned long long)(total - sm->drops_logged), (unsigned long long)sm->pipeline_full,
          (unsigned long long)sm->send_errors);
  sm->drop_log_ns = now ? now : 1;
  sm->drops_logged = total;
}

bool vsr_sm_send_client(struct vsr_sm *sm, uint64_t client, struct vsr_msg *out) {
  if (!out) {
    sm->send_errors++;
    vsr_sm_log_drop(sm, "reply not built: message pool exhausted");
    return false;
  }
  bool ok = client != 0 && vsr_bus_send_to_client(sm->bus, client, out) == 0;
  if (!ok) sm->send_errors++;
  vsr_msg_unref(out);
  return ok;
}

/* Sends |reply| (borrowed) to |client|: counted as sent only if the bus took it. */
static void sm_send_reply(struct vsr_sm *sm, uint64_t client, struct vsr_msg *reply) {
  if (reply && vsr_sm_send_client(sm, client, vsr_msg_ref(reply))) {
    sm->replies++;
  } else {
    sm->replies_refused++;
  }
}

/* The Reply to |req| as op |op| (single replica): counted as sent only if the bus took it. */
static void sm_reply(struct vsr_sm *sm, uint64_t client, const struct vsr_msg *req, uint64_t op) {
  if (vsr_sm_send_client(sm, client, vsr_sm_build_reply(sm->bus, req, sm->replica, op))) {
    sm->replies++;
  } else {
    sm->replies_refused++;
  }
}

struct vsr_msg *vsr_sm_control(struct vsr_sm *sm, uint8_t command) {
  struct vsr_msg *m = vsr_bus_msg_new(sm->bus, VSR_HEADER_SIZE);
  if (!m) {
    sm->send_errors++;
    vsr_sm_log_drop(sm, "replica frame not built: message pool exhausted");
    return NULL;
  }
  struct vsr_header *h = (struct vsr_header *)m->data;
  h->command = command;
  h->cluster = sm->cluster;
  h->replica = sm->replica;
  h->view = sm->view;
  return m;
}

void vsr_sm_send_replica(struct vsr_sm *sm, uint8_t to, struct vsr_msg *m) {
  if (vsr_bus_send_to_replica(sm->bus, to, m) < 0) sm->send_errors++;
}

void vsr_sm_broadcast(struct vsr_sm *sm, struct vsr_msg *m) {
  struct vsr_peer_stats ps;
  for (unsigned r = 0; r < sm->replica_count; r++) {
    /* Linked replicas only: one that links later is told on vsr_sm_on_replica_up. */
    if (r != sm->replica && vsr_bus_peer_stats(sm->bus, VSR_PLANE_REPLICA, r, &ps) == 0) {
      vsr_sm_send_replica(sm, (uint8_t)r, m);
    }
  }
}

/* ---- the log ------------------------------------------------------------------------------- */

bool vsr_sm_store(struct vsr_sm *sm, struct vsr_msg *prepare) {
  const struct vsr_prepare_header *p = (const struct vsr_prepare_header *)prepare->data;
  struct vsr_sm_entry *e = vsr_sm_entry(sm, p->op);
  if (e->op > p->op) return false;
  if (e->op != p->op) {
    vsr_sm_entry_clear(e);
    e->op = p->op;
  } else if (e->prepare) {
    return vsr_u128_eq(e->checksum, p->checksum); /* held already (or a different one) */
  } else if (!vsr_u128_is_zero(e->checksum) && !vsr_u128_eq(e->checksum, p->checksum)) {
    return false; /* not the Prepare the log expects at this op */
  }
  e->checksum = p->checksum;
  e->prepare = vsr_msg_ref(prepare);
  return true;
}

void vsr_sm_send_prepare_ok(struct vsr_sm *sm, const struct vsr_sm_entry *e) {
  const struct vsr_prepare_header *p = (const struct vsr_prepare_header *)e->prepare->data;
  struct vsr_msg *m = vsr_sm_control(sm, VSR_CMD_PREPARE_OK);
  if (!m) return;
  struct vsr_prepare_ok_header *ok = (struct vsr_prepare_ok_header *)m->data;
  ok->parent = p->parent;
  ok->prepare_checksum = p->checksum;
  ok->op = p->op;
  ok->commit = sm->commit;
  ok->timestamp = p->timestamp;
  ok->request = p->request;
  ok->operation = p->operation;
  ok->group = p->group;
  vsr_frame_seal(m->data);
  vsr_sm_send_replica(sm, vsr_sm_primary_of(sm, sm->view), m);
  vsr_msg_unref(m);
}

void vsr_sm_extend(struct vsr_sm *sm) {
  bool backup = sm->status == VSR_SM_NORMAL && !vsr_sm_is_primary(sm);
  struct vsr_sm_entry *e, *last = NULL;
  while ((e = vsr_sm_have(sm, sm->op + 1)) != NULL) {
    sm->op++;
    last = e;
  }
  /* A backup's log is its view's (log_view) only once it holds every op of the StartView it
   * adopted; until then it acknowledges nothing. Taking the view at once let a backup whose
   * log stopped at a hole claim that view's log in the next view change and win with its few
   * ops over replicas of the view before, truncating ops committed there (found by vsrbus
   * sim, seed 12069 --replicas 5 --max-frame 1048576). */
  if (sm->lv_pending && sm->op >= sm->lv_target) {
    sm->log_view = sm->view;
    sm->lv_pending = false;
  }
  /* One PrepareOk for the newest: it vouches for every op up to it (cumulative). */
  if (backup && !sm->lv_pending && last && last->op > sm->commit) {
    vsr_sm_send_prepare_ok(sm, last);
  }
  if (sm->op > sm->repair_target) sm->repair_target = sm->op;
}

/* One line per committed request: "op client request operation index" (client as 32 hex
 * digits; index: its place in the op's batch, 0 for a Prepare of one Request). */
static void sm_dump(struct vsr_sm *sm, uint64_t op, const struct vsr_sm_item *it) {
  fprintf(sm->dump, "%llu %016llx%016llx %llu %u %u\n", (unsigned long long)op,
          (unsigned long long)it->client.hi, (unsigned long long)it->client.lo,
          (unsigned long long)it->request, it->operation, it->index);
}

/* Releases the oldest committed Prepares beyond VSR_SM_LOG_BYTES (counted at their average
 * size), and while the pool's buffers in use exceed half of memory_max. Never the newest
 * committed op (the log's head may be it) nor anything above. */
static void sm_trim(struct vsr_sm *sm) {
  if (sm->commit < 2) return;
  uint64_t keep = sm->avg_bytes ? VSR_SM_LOG_BYTES / sm->avg_bytes : VSR_SM_LOG;
  if (keep < VSR_SM_LOG_MIN) keep = VSR_SM_LOG_MIN;
  if (keep < VSR_SM_LOG && sm->commit > keep) {
    if (sm->trim_from < sm->commit - keep) { /* ops below the log's window are gone anyway */
      uint64_t floor = sm->op >= VSR_SM_LOG ? sm->op - VSR_SM_LOG + 1 : 1;
      if (sm->trim_from < floor) sm->trim_from = floor;
    }
    while (sm->trim_from < sm->commit - keep) {
      struct vsr_sm_entry *e = vsr_sm_have(sm, sm->trim_from++);
      if (!e) continue;
      vsr_msg_unref(e->prepare); /* op and checksum stay: the slot is known, its body gone */
      e->prepare = NULL;
      sm->trimmed++;
    }
  }
  if (!sm->mem_max) return;
  struct vsr_pool_stats ps;
  vsr_pool_stats(vsr_loop_pool(vsr_bus_loop(sm->bus)), &ps);
  uint64_t floor = sm->op >= VSR_SM_LOG ? sm->op - VSR_SM_LOG + 1 : 1;
  if (sm->trim_from < floor) sm->trim_from = floor;
  uint64_t live = ps.bytes_live, high = sm->mem_max / 2;
  while (live > high && sm->trim_from < sm->commit) {
    struct vsr_sm_entry *e = vsr_sm_have(sm, sm->trim_from++);
    if (!e) continue;
    live -= live < e->prepare->capacity ? live : e->prepare->capacity;
    vsr_msg_unref(e->prepare); /* op and checksum stay: the slot is known, its body gone */
    e->prepare = NULL;
    sm->trimmed++;
  }
}

void vsr_sm_commit_to(struct vsr_sm *sm, uint64_t target) {
  if (target > sm->commit_max) sm->commit_max = target;
  if (target > sm->op) target = sm->op;
  bool primary = vsr_sm_is_primary(sm) && sm->status == VSR_SM_NORMAL;
  while (sm->commit < target) {
    struct vsr_sm_entry *e = vsr_sm_have(sm, sm->commit + 1);
    if (!e) break;
    sm->commit++;
    uint64_t cap = e->prepare->capacity;
    sm->avg_bytes = sm->avg_bytes ? sm->avg_bytes - sm->avg_bytes / 16 + cap / 16 : cap;
    if (sm->on_commit) sm->on_commit(sm->on_commit_ctx, e->prepare);
    /* Every request of the op, in the batch's order: one table, one Reply each. */
    struct vsr_sm_item it;
    for (uint32_t pos = 0; vsr_sm_item_next(e->prepare, &pos, &it);) {
      struct vsr_msg *reply = vsr_sm_table_apply(sm, e, &it);
      if (sm->dump) sm_dump(sm, sm->commit, &it);
      if (!primary) continue;
      struct vsr_sm_client *c = vsr_sm_table_find(sm, it.client);
      /* e->conn: the connection of a single Request (a Register's before its entry exists) */
      uint64_t conn = c && c->conn ? c->conn : it.index == 0 ? e->conn : 0;
      if (conn) sm_send_reply(sm, conn, reply);
      else sm->replies_refused++; /* nobody to answer here yet: the client resends */
    }
  }
  sm_trim(sm);
}

/* ---- primary ------------------------------------------------------------------------------- */

/* The Prepare for |req| as op |op|: the Request's body and identity, chained to the previous
 * Prepare through |parent|, body checksum set, identity checksum stamped last. */
void vsr_sm_prepare_fill(struct vsr_sm *sm, struct vsr_prepare_header *p, uint64_t op) {
  p->command = VSR_CMD_PREPARE;
  p->cluster = sm->cluster;
  p->view = sm->view;
  p->replica = sm->replica;
  p->parent = sm->parent;
  p->op = op;
  p->commit = sm->commit;
  p->timestamp = sm_realtime_ns();
}

struct vsr_msg *vsr_sm_build_prepare(struct vsr_sm *sm, const struct vsr_msg *req, uint64_t op) {
  struct vsr_msg *m = vsr_bus_msg_new(sm->bus, req->size);
  if (!m) return NULL;
  const struct vsr_request_header *rq = (const struct vsr_request_header *)req->data;
  struct vsr_prepare_header *p = (struct vsr_prepare_header *)m->data;
  vsr_sm_prepare_fill(sm, p, op);
  if (sm->replica_count <= 1) p->cluster = rq->cluster;
  p->release = rq->release;
  p->client = rq->client;
  p->request_checksum = rq->request_checksum;
  p->request = rq->request;
  p->operation = rq->operation;
  p->user_id = rq->user_id;
  memcpy(m->data + VSR_HEADER_SIZE, req->data + VSR_HEADER_SIZE, req->size - VSR_HEADER_SIZE);
  if (req->size > VSR_HEADER_SIZE) vsr_prepare_set_body_checksum(m->data);
  vsr_frame_seal(m->data);
  sm->parent = p->checksum;
  return m;
}

/* Free slots in backup |r|'s send queue: 0 when it is full or the link is down. */
static uint32_t sm_room(struct vsr_sm *sm, unsigned r) {
  struct vsr_peer_stats ps;
  if (vsr_bus_peer_stats(sm->bus, VSR_PLANE_REPLICA, r, &ps) != 0) return 0;
  return ps.queue_depth < ps.queue_capacity ? ps.queue_capacity - ps.queue_depth : 0;
}

/* Frames queued to backup |r| and not yet handed to the kernel (0 when the link is down). */
static uint32_t sm_depth(struct vsr_sm *sm, unsigned r) {
  struct vsr_peer_stats ps;
  if (vsr_bus_peer_stats(sm->bus, VSR_PLANE_REPLICA, r, &ps) != 0) return 0;
  return ps.queue_depth;
}

/* Queues to backup |r| the ops it fell behind on, oldest first, while its queue has room (the
 * room is asked first, so catching up never adds refusals). Runs on every PrepareOk from |r|,
 * every Request and every resend tick, so a queue that drains is refilled. Ops committed
 * meanwhile go too while the log holds them (a backup acknowledges in order: it needs them);
 * older ones are left to the backup's own repair (RequestPrepares / RangeEvicted). */
void vsr_sm_primary_catch_up(struct vsr_sm *sm, unsigned r) {
  uint64_t op = sm->behind[r];
  if (op == 0) return;
  if (sm->op >= VSR_SM_LOG && op <= sm->op - VSR_SM_LOG) { /* gone from the log: it repairs */
    sm->skipped += sm->op - VSR_SM_LOG + 1 - op;
    op = sm->op - VSR_SM_LOG + 1;
  }
  while (op <= sm->commit && !vsr_sm_have(sm, op)) {
    sm->skipped++;
    op++;
  }
  uint32_t room = op <= sm->op ? sm_room(sm, r) : 0;
  uint64_t now = vsr_sm_now(sm);
  for (; op <= sm->op && room > 0; op++) {
    struct vsr_sm_entry *e = vsr_sm_have(sm, op);
    if (!e) break; /* still being repaired (new view) */
    if (e->acks >> r & 1) continue;
    if (vsr_bus_send_to_replica(sm->bus, (uint8_t)r, e->prepare) < 0) break;
    e->sent_ns = now;
    if (op <= sm->sent_hi[r]) sm->resent++; /* queued before, on a link now gone */
    else sm->sent_hi[r] = op;
    room--;
  }
  sm->behind[r] = op <= sm->op ? op : 0;
}

/* Sends the new op |e| to every backup: one buffer, one reference per queue. A backup already
 * behind gets it in order after the older ones; a refused send (queue full, link down: counted
 * and logged by the bus) makes the backup fall behind from this op. */
static void sm_broadcast_prepare(struct vsr_sm *sm, struct vsr_sm_entry *e) {
  for (unsigned r = 0; r < sm->replica_count; r++) {
    if (r == sm->replica) continue;
    if (sm->behind[r] != 0) {
      vsr_sm_primary_catch_up(sm, r);
    } else if (vsr_bus_send_to_replica(sm->bus, (uint8_t)r, e->prepare) == 0) {
      sm->sent_hi[r] = e->op;
    } else {
      sm->behind[r] = e->op;
      sm->deferred++;
    }
  }
}

/* Commit goes to every backup with room in its queue (never refused for a Prepare's place); it
 * is also the primary's heartbeat (sm_vc.c sends it every tick), so a backup the primary holds
 * Prepares back from still hears it. */
static void sm_send_commit(struct vsr_sm *sm) {
  struct vsr_msg *m = vsr_sm_control(sm, VSR_CMD_COMMIT);
  if (!m) return;
  struct vsr_commit_header *c = (struct vsr_commit_header *)m->data;
  c->commit = sm->commit;
  c->timestamp_monotonic = sm_realtime_ns();
  vsr_frame_seal(m->data);
  for (unsigned r = 0; r < sm->replica_count; r++) {
    if (r == sm->replica || sm_room(sm, r) == 0) continue;
    if (vsr_bus_send_to_replica(sm->bus, (uint8_t)r, m) < 0) sm->send_errors++;
  }
  vsr_msg_unref(m);
}

void vsr_sm_send_commit(struct vsr_sm *sm);
void vsr_sm_send_commit(struct vsr_sm *sm) { sm_send_commit(sm); }

/* Commits every op, in order, that a majority holds (or that an earlier view committed);
 * replies; tells the backups once. */
void vsr_sm_advance(struct vsr_sm *sm) {
  uint64_t start = sm->commit;
  while (sm->commit < sm->op) {
    struct vsr_sm_entry *e = vsr_sm_have(sm, sm->commit + 1);
    if (!e) break;
    if (e->op > sm->commit_max && (unsigned)__builtin_popcountll(e->acks) < vsr_sm_quorum(sm)) {
      break;
    }
    vsr_sm_commit_to(sm, sm->commit + 1);
  }
  if (sm->commit != start) sm_send_commit(sm);
}

static void sm_primary_request(struct vsr_sm *sm, uint64_t client, const struct vsr_msg *req) {
  if (sm->status != VSR_SM_NORMAL || !vsr_sm_is_primary(sm) || sm->commit < sm->view_start_op) {
    sm->not_primary++; /* a backup, a view change, or a new primary still catching up */
    return;
  }
  if (sm->op - sm->commit + (sm->pending_len > 0) >= VSR_SM_PIPELINE) {
    sm->pipeline_full++;
    vsr_sm_log_drop(sm, "Request dropped: pipeline full (" SM_STR(VSR_SM_PIPELINE)
                    " uncommitted ops)");
    return;
  }
  const struct vsr_request_header *rq = (const struct vsr_request_header *)req->data;
  bool loose = sm->sessions_optional && rq->operation != VSR_OP_REGISTER &&
               vsr_sm_table_find(sm, rq->client) == NULL;
  if (!loose && !vsr_sm_table_admit(sm, client, req)) return;
  /* A Register (its connection is the op's) and a client without a session go alone, after
   * whatever is queued (the order of arrival is the order of the log). */
  if (sm->batch_max > 1 && !loose && rq->operation != VSR_OP_REGISTER) {
    vsr_sm_batch_add(sm, client, req);
    return;
  }
  vsr_sm_batch_flush(sm);
  struct vsr_msg *prep = vsr_sm_build_prepare(sm, req, sm->op + 1);
  if (!prep) {
    sm->send_errors++;
    vsr_sm_log_drop(sm, "Prepare not built: message pool exhausted");
    return;
  }
  vsr_sm_primary_append(sm, prep, client);
}

void vsr_sm_primary_append(struct vsr_sm *sm, struct vsr_msg *prep, uint64_t client) {
  uint64_t op = sm->op + 1;
  struct vsr_sm_entry *e = vsr_sm_entry(sm, op);
  vsr_sm_entry_clear(e);
  e->op = op;
  e->checksum = ((const struct vsr_prepare_header *)prep->data)->checksum;
  e->acks = 1ull << sm->replica;
  e->sent_ns = vsr_sm_now(sm);
  e->conn = client;
  e->prepare = prep;
  sm->op = op;
  sm->repair_target = op;
  sm_broadcast_prepare(sm, e);
  vsr_sm_advance(sm); /* a quorum of one when the other replicas are not needed */
}

static void sm_primary_prepare_ok(struct vsr_sm *sm, uint8_t from, const struct vsr_msg *msg) {
  const struct vsr_prepare_ok_header *ok = (const struct vsr_prepare_ok_header *)msg->data;
  sm->prepare_oks++;
  if (from >= sm->replica_count || ok->view != sm->view) {
    sm->ignored++;
    return;
  }
  if (ok->op > sm->commit && ok->op <= sm->op) {
    struct vsr_sm_entry *e = vsr_sm_entry(sm, ok->op);
    if (e->op != ok->op || !vsr_u128_eq(e->checksum, ok->prepare_checksum)) {
      sm->ignored++; /* not the Prepare we sent for that op */
      return;
    }
    uint64_t k = sm->acked[from] > sm->commit ? sm->acked[from] : sm->commit;
    for (k++; k <= ok->op; k++) {
      struct vsr_sm_entry *x = vsr_sm_entry(sm, k);
      if (x->op == k) x->acks |= 1ull << from;
    }
    if (ok->op > sm->acked[from]) sm->acked[from] = ok->op;
    vsr_sm_advance(sm);
  } /* else stale: committed already */
  vsr_sm_primary_catch_up(sm, from); /* its queue moved: room for the ops it is behind on */
}

/* Every resend_ns, on the primary: a Prepare queued to a backup resend_ns ago or more without
 * its PrepareOk is queued again (it went down with a connection, or the backup's PrepareOk was
 * refused by a full queue); backups still behind catch up. Only uncommitted ops: the pipeline
 * holds at most VSR_SM_PIPELINE, so a tick is bounded. */
static void sm_on_resend_timer(void *ctx) {
  struct vsr_sm *sm = ctx;
  vsr_timer_arm(sm->resend_timer, sm->resend_ns);
  if (sm->status != VSR_SM_NORMAL || !vsr_sm_is_primary(sm)) return;
  uint64_t now = vsr_sm_now(sm);
  uint32_t room[VSR_SM_MAX_REPLICAS];
  for (unsigned r = 0; r < sm->replica_count; r++) {
    /* Only to a backup whose queue is empty: a Prepare still queued has not even reached the
     * kernel, and queuing it again only slows the link further (on a slow link with large
     * Prepares, resends every resend_ns filled the queue with copies and commits stalled;
     * found by vsrbus sim, seed 61449). A link that went down is caught up on reconnect. */
    room[r] = r == sm->replica || sm->commit == sm->op || sm_depth(sm, r) != 0 ? 0 : sm_room(sm, r);
  }
  for (uint64_t op = sm->commit + 1; op <= sm->op; op++) {
    struct vsr_sm_entry *e = vsr_sm_have(sm, op);
    if (!e) break;
    if (now - e->sent_ns < sm->resend_ns) continue;
    for (unsigned r = 0; r < sm->replica_count; r++) {
      if (room[r] == 0 || (e->acks >> r & 1)) continue;
      if (sm->behind[r] != 0 && sm->behind[r] <= op) continue; /* never queued: catch-up's */
      if (vsr_bus_send_to_replica(sm->bus, (uint8_t)r, e->prepare) == 0) {
        sm->resent++;
        room[r]--;
        e->sent_ns = now;
      }
    }
  }
  for (unsigned r = 0; r < sm->replica_count; r++) {
    if (r != sm->replica) vsr_sm_primary_catch_up(sm, r);
  }
}

void vsr_sm_on_replica_up(struct vsr_sm *sm, uint8_t id) {
  if (!sm->pipe || id == sm->replica || id >= sm->replica_count) return;
  sm->repair_queued[id] = 0; /* a new link: nothing of ours is queued to it */
  vsr_sm_vc_replica_up(sm, id);
  if (sm->status != VSR_SM_NORMAL || !vsr_sm_is_primary(sm)) return;
  /* Whatever was queued on its previous link may be gone: every uncommitted op it has not
   * acknowledged goes out again, in order, as its queue allows. */
  sm->behind[id] = sm->commit < sm->op ? sm->commit + 1 : 0;
  sm->acked[id] = sm->commit; /* perhaps a new incarnation: its acknowledgements start over */
  vsr_sm_primary_catch_up(sm, id);
}

/* ---- backup -------------------------------------------------------------------------------- */

/* A Prepare from the primary of our view: kept in the log (out of order too, within the log's
 * window), acknowledged once every op before it is held; a gap is repaired from the primary. */
static void sm_backup_prepare(struct vsr_sm *sm, uint8_t from, struct vsr_msg *msg) {
  const struct vsr_prepare_header *p = (const struct vsr_prepare_header *)msg->data;
  sm->prepares++;
  if (p->view > sm->view) {
    vsr_sm_vc_behind(sm, from);
    return;
  }
  /* From the primary of our view only. An older view in the header is fine: a new primary
   * sends the ops it inherited as they were prepared (the identity does not cover the view). */
  if (sm->status != VSR_SM_NORMAL || vsr_sm_is_primary(sm) ||
      from != vsr_sm_primary_of(sm, sm->view)) {
    sm->ignored++;
    return;
  }
  sm->heard_ns = vsr_sm_now(sm);
  if (p->op <= sm->op) {
    struct vsr_sm_entry *e = vsr_sm_have(sm, p->op), *head = vsr_sm_have(sm, sm->op);
    if (e && head && sm->op > sm->commit && !sm->lv_pending &&
        vsr_u128_eq(e->checksum, p->checksum)) {
      vsr_sm_send_prepare_ok(sm, head); /* a resend: our PrepareOk may have been lost */
    }
  } else if (p->op - sm->commit < VSR_SM_LOG) {
    vsr_sm_store(sm, msg);
    vsr_sm_extend(sm);
    if (p->op > sm->repair_target) sm->repair_target = p->op;
    if (sm->op < sm->repair_target) vsr_sm_vc_repair(sm, false);
  }
  vsr_sm_commit_to(sm, p->commit);
}

static void sm_backup_commit(struct vsr_sm *sm, uint8_t from, const struct vsr_msg *msg) {
  const struct vsr_commit_header *c = (const struct vsr_commit_header *)msg->data;
  sm->commits++;
  if (c->view > sm->view) {
    vsr_sm_vc_behind(sm, from);
    return;
  }
  if (sm->status != VSR_SM_NORMAL || c->view < sm->view || vsr_sm_is_primary(sm) ||
      from != vsr_sm_primary_of(sm, sm->view)) {
    return;
  }
  sm->heard_ns = vsr_sm_now(sm);
  if (c->commit > sm->repair_target) sm->repair_target = c->commit;
  vsr_sm_commit_to(sm, c->commit);
  if (sm->op < sm->repair_target) vsr_sm_vc_repair(sm, false);
}

/* ---- dispatch ------------------------------------------------------------------------------ */

void vsr_sm_on_replica_message(struct vsr_sm *sm, uint8_t from, struct vsr_msg *msg) {
  const struct vsr_header *h = (const struct vsr_header *)msg->data;
  /* The bus proved the peer's membership; which cluster a frame speaks for is ours to judge. */
  if (!vsr_u128_eq(h->cluster, sm->cluster)) {
    sm->foreign++;
    return;
  }
  if (!sm->pipe || from >= sm->replica_count || from == sm->replica) {
    sm->ignored++;
    return;
  }
  /* Any frame of our view from its primary shows the primary alive (a backup's timeout), but
   * a RequestStartView (or a Ping or Pong) may come from a primary that restarted and is
   * recovering: it lost its state, and counting its recovery as its heartbeat kept the backups
   * from ever electing another, so it never recovered (found by vsrbus sim, seed 1073). */
  bool from_primary = from == vsr_sm_primary_of(sm, sm->view);
  bool prepare = h->command == VSR_CMD_PREPARE || h->command == VSR_CMD_REPAIR_PREPARE;
  char why[160];
  if (prepare && vsr_sm_batch_check(msg, why, sizeof why) != 0) {
    vsr_sm_batch_refuse(sm, from, msg, why); /* never stored, acknowledged nor applied */
    return;
  }
  /* A Prepare or RepairPrepare keeps the view it was prepared in: one of an older view from
   * our primary (an inherited op, or repair traffic that fills our queue so that its Commit
   * heartbeat finds no room) shows it alive too. Without it, a backup catching up on 1 MiB
   * Prepares timed out on a live primary again and again, and its StartViewChanges took the
   * cluster through a view change every primary timeout (found by vsrbus sim, seed 2703). */
  if (from_primary && ((h->view == sm->view && h->command != VSR_CMD_REQUEST_START_VIEW &&
                        h->command != VSR_CMD_PING && h->command != VSR_CMD_PONG) ||
                       (prepare && h->view < sm->view))) {
    sm->heard_ns = vsr_sm_now(sm);
  }
  switch (h->command) {
  case VSR_CMD_PREPARE:
    sm_backup_prepare(sm, from, msg);
    break;
  case VSR_CMD_PREPARE_OK:
    if (vsr_sm_is_primary(sm) && sm->status == VSR_SM_NORMAL) sm_primary_prepare_ok(sm, from, msg);
    else sm->ignored++;
    break;
  case VSR_CMD_COMMIT:
    sm_backup_commit(sm, from, msg);
    break;
  case VSR_CMD_PING: {
    /* Answered to the pinging replica; the Pong echoes the Ping's reserved_command (the
     * pinger's timestamps) and is stamped with our cluster and id. */
    struct vsr_msg *pong = sm_build_pong(sm, msg, VSR_CMD_PONG);
    if (!pong) {
      sm->send_errors++;
      break;
    }
    sm->pongs++;
    vsr_sm_send_replica(sm, from, pong);
    vsr_msg_unref(pong);
    break;
  }
  default:
    if (!vsr_sm_vc_message(sm, from, msg)) sm->ignored++;
    break;
  }
}

/* A single replica answers at once; a client that registered gets the table's guarantees. */
static void sm_single_request(struct vsr_sm *sm, uint64_t client, const struct vsr_msg *msg) {
  const struct vsr_request_header *rq = (const struct vsr_request_header *)msg->data;
  if (rq->operation != VSR_OP_REGISTER && vsr_sm_table_find(sm, rq->client) == NULL) {
    sm_reply(sm, client, msg, ++sm->op); /* no session: served as before sessions */
    sm->commit = sm->op;
    return;
  }
  if (!vsr_sm_table_admit(sm, client, msg)) return;
  struct vsr_sm_entry e = {.op = sm->op + 1, .conn = client,
                           .prepare = vsr_sm_build_prepare(sm, msg, sm->op + 1)};
  if (!e.prepare) {
    sm->send_errors++;
    vsr_sm_log_drop(sm, "Prepare not built: message pool exhausted");
    return;
  }
  sm->commit = ++sm->op;
  struct vsr_sm_item it;
  uint32_t pos = 0;
  vsr_sm_item_next(e.prepare, &pos, &it);
  struct vsr_msg *reply = vsr_sm_table_apply(sm, &e, &it);
  if (sm->on_commit) sm->on_commit(sm->on_commit_ctx, e.prepare);
  sm_send_reply(sm, client, reply);
  vsr_msg_unref(e.prepare);
}

void vsr_sm_on_client_message(struct vsr_sm *sm, uint64_t client, const struct vsr_msg *msg) {
  uint8_t cmd = msg->data[60];
  switch (cmd) {
  case VSR_CMD_PING_CLIENT:
    sm->pongs += vsr_sm_send_client(sm, client, sm_build_pong(sm, msg, VSR_CMD_PONG_CLIENT));
    return;
  case VSR_CMD_PING:
    sm->pongs += vsr_sm_send_client(sm, client, sm_build_pong(sm, msg, VSR_CMD_PONG));
    return;
  case VSR_CMD_REQUEST:
    sm->requests++;
    if (sm->replica_count <= 1) {
      sm_single_request(sm, client, msg);
    } else {
      sm_primary_request(sm, client, msg);
    }
    return;
  default:
    sm->ignored++;
    return;
  }
}
