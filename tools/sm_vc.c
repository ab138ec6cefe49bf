/* View change, repair and recovery of the demo state machine (VR Revisited §4.2-4.3, with Iggy
 * mainline's message layouts; docs/demo.md walks through it).
 *
 * View change. A backup that hears neither Prepare nor Commit from the primary for
 * primary_timeout_ns moves to view v+1 and sends StartViewChange(v+1) to all; a replica that
 * hears a StartViewChange for a higher view joins it. With StartViewChanges from a majority
 * (itself included) a replica sends DoViewChange to the new primary, v mod n: its log_view, op,
 * commit and the headers of its last (up to 128) ops. The new primary, with DoViewChanges from
 * a majority including its own, takes the log of the one with the highest (log_view, op): ops
 * whose header it holds the same are kept, the others fetched from that replica
 * (RequestPrepares -> RepairPrepare). It commits every op up to the highest commit reported,
 * sends StartView (op, commit, the last headers) and Prepares the uncommitted ops again in the
 * new view; it takes new Requests once it has committed everything it inherited. A view change
 * that does not finish within primary_timeout_ns moves on to the next view.
 *
 * Repair. A backup keeps Prepares out of order; a gap (or a Commit beyond its log) makes it
 * ask the primary for the missing range (RequestPrepares), at most VSR_SM_REPAIR_BATCH at a
 * time; the answer ends with RepairDone, upon which it asks for the next range. A range the
 * sender no longer holds (its log keeps VSR_SM_LOG ops) is answered with
 * RangeEvicted(lowest op held): the asker then jumps there (state transfer of a state machine
 * whose only state is the client table: see "jumped").
 *
 * Recovery. Memory only: a replica cannot know whether it ever ran, so every replica starts
 * recovering and takes no part in quorums. It sends RequestStartView(incarnation nonce); every
 * normal replica answers with a StartView of its view echoing the nonce. It becomes a normal
 * backup once it has answers from a majority (f+1) including the primary of the highest view
 * among them, or once every other replica answered or is recovering too (a fresh cluster:
 * everyone starts normal in view 0). Then it repairs its log from the primary. */
#include "sm.h"

#include <stdlib.h>
#include <string.h>

#include "util/random.h"

static void vc_on_tick(void *ctx);

static uint64_t vc_tick_ns(const struct vsr_sm *sm) {
  uint64_t t = sm->primary_timeout_ns / 5;
  return t ? t : 1;
}

int vsr_sm_vc_init(struct vsr_sm *sm) {
  if (vsr_timer_new(&sm->tick_timer, vsr_bus_loop(sm->bus), vc_on_tick, sm) != 0) {
    return VSR_ENOMEM;
  }
  /* Through the library's one source of randomness: seeded in vsrbus sim. */
  if (vsri_random_bytes(&sm->incarnation, sizeof sm->incarnation) != 0) {
    sm->incarnation = (vsr_u128){vsr_sm_now(sm), sm->replica};
  }
  sm->incarnation.lo |= 1; /* never zero */
  sm->status = VSR_SM_RECOVERING;
  sm->heard_ns = vsr_sm_now(sm);
  vsr_timer_arm(sm->tick_timer, vc_tick_ns(sm));
  return 0;
}

void vsr_sm_vc_fini(struct vsr_sm *sm) {
  if (sm->tick_timer) {
    vsr_timer_del(sm->tick_timer);
    sm->tick_timer = NULL;
  }
  vsr_msg_unref(sm->dvc_best_msg);
  vsr_msg_unref(sm->rsv_primary);
  sm->dvc_best_msg = sm->rsv_primary = NULL;
}

static unsigned vc_count(uint64_t bits) { return (unsigned)__builtin_popcountll(bits); }

/* ---- building the frames ------------------------------------------------------------------ */

/* Writes into |body| the headers of the last ops up to |top| the log holds, at most
 * VSR_DVC_HEADERS_MAX, oldest first. Returns how many. */
static unsigned vc_suffix(struct vsr_sm *sm, uint64_t top, uint8_t *body) {
  unsigned n = 0;
  while (n < VSR_DVC_HEADERS_MAX && top > n && vsr_sm_have(sm, top - n)) n++;
  for (unsigned i = 0; i < n && body; i++) {
    memcpy(body + (size_t)i * VSR_HEADER_SIZE, vsr_sm_have(sm, top - n + 1 + i)->prepare->data,
           VSR_HEADER_SIZE);
  }
  return n;
}

static vsr_u128 vc_bits(unsigned n) {
  vsr_u128 b = {0, 0};
  if (n >= 64) {
    b.lo = ~0ull;
    b.hi = n >= 128 ? ~0ull : (1ull << (n - 64)) - 1;
  } else {
    b.lo = (1ull << n) - 1;
  }
  return b;
}

/* A frame of |command| from this replica with room for |n| suffix headers. */
static struct vsr_msg *vc_frame(struct vsr_sm *sm, uint8_t command, unsigned n) {
  struct vsr_msg *m = vsr_bus_msg_new(sm->bus, VSR_HEADER_SIZE * (1u + n));
  if (!m) {
    sm->send_errors++;
    vsr_sm_log_drop(sm, "view-change frame not built: message pool exhausted");
    return NULL;
  }
  struct vsr_header *h = (struct vsr_header *)m->data;
  h->command = command;
  h->cluster = sm->cluster;
  h->replica = sm->replica;
  h->view = sm->view;
  return m;
}

/* The highest op up to which the log holds every Prepare. */
static uint64_t vc_contiguous(struct vsr_sm *sm) {
  uint64_t op = sm->commit;
  while (op < sm->op && vsr_sm_have(sm, op + 1)) op++;
  return op;
}

static struct vsr_msg *vc_build_dvc(struct vsr_sm *sm) {
  uint64_t top = vc_contiguous(sm);
  unsigned n = vc_suffix(sm, top, NULL);
  struct vsr_msg *m = vc_frame(sm, VSR_CMD_DO_VIEW_CHANGE, n);
  if (!m) return NULL;
  struct vsr_do_view_change_header *d = (struct vsr_do_view_change_header *)m->data;
  d->op = top;
  d->commit = sm->commit;
  d->log_view = sm->log_view;
  d->present_bitset = vc_bits(n);
  vc_suffix(sm, top, m->data + VSR_HEADER_SIZE);
  vsr_frame_seal(m->data);
  return m;
}

static struct vsr_msg *vc_build_start_view(struct vsr_sm *sm, vsr_u128 incarnation) {
  unsigned n = vc_suffix(sm, sm->op, NULL);
  struct vsr_msg *m = vc_frame(sm, VSR_CMD_START_VIEW, n);
  if (!m) return NULL;
  struct vsr_start_view_header *s = (struct vsr_start_view_header *)m->data;
  s->op = sm->op;
  s->commit = sm->commit;
  s->incarnation = incarnation;
  vc_suffix(sm, sm->op, m->data + VSR_HEADER_SIZE);
  vsr_frame_seal(m->data);
  return m;
}

static void vc_send_simple(struct vsr_sm *sm, uint8_t command, int to) {
  struct vsr_msg *m = vc_frame(sm, command, 0);
  if (!m) return;
  if (command == VSR_CMD_REQUEST_START_VIEW) {
    ((struct vsr_request_start_view_header *)m->data)->incarnation = sm->incarnation;
  }
  vsr_frame_seal(m->data);
  if (to < 0) vsr_sm_broadcast(sm, m);
  else vsr_sm_send_replica(sm, (uint8_t)to, m);
  vsr_msg_unref(m);
}

/* ---- repair -------------------------------------------------------------------------------- */

/* The first op after commit whose Prepare the log lacks, up to |hi| (0: none). */
static uint64_t vc_first_missing(struct vsr_sm *sm, uint64_t hi) {
  for (uint64_t op = sm->commit + 1; op <= hi && op - sm->commit < VSR_SM_LOG; op++) {
    if (!vsr_sm_have(sm, op)) return op;
  }
  return 0;
}

void vsr_sm_vc_repair(struct vsr_sm *sm, bool now) {
  if (sm->status != VSR_SM_NORMAL || sm->repair_from == sm->replica) return;
  uint64_t hi = sm->repair_target > sm->op ? sm->repair_target : sm->op;
  uint64_t lo = vc_first_missing(sm, hi);
  if (lo == 0) return;
  uint64_t t = vsr_sm_now(sm);
  if (!now && sm->repair_hi >= lo && t - sm->repair_ns < vc_tick_ns(sm)) return; /* asked */
  if (hi - lo >= VSR_SM_REPAIR_BATCH) hi = lo + VSR_SM_REPAIR_BATCH - 1;
  struct vsr_msg *m = vc_frame(sm, VSR_CMD_REQUEST_PREPARES, 0);
  if (!m) return;
  struct vsr_request_prepares_header *r = (struct vsr_request_prepares_header *)m->data;
  r->nonce = (vsr_u128){lo, sm->replica + 1u};
  r->from_op = lo;
  r->to_op = hi;
  vsr_frame_seal(m->data);
  vsr_sm_send_replica(sm, sm->repair_from, m);
  vsr_msg_unref(m);
  sm->repair_hi = hi;
  sm->repair_ns = t;
}

/* RequestPrepares: every op of the range we hold goes back as a RepairPrepare (the stored
 * Prepare, command byte rewritten: same identity), as far as the asker's queue allows; a range
 * that starts below what the log still holds is answered with RangeEvicted first. */
static void vc_on_request_prepares(struct vsr_sm *sm, uint8_t from, const struct vsr_msg *msg) {
  const struct vsr_request_prepares_header *r =
      (const struct vsr_request_prepares_header *)msg->data;
  uint64_t lo = r->from_op;
  uint64_t floor = sm->op >= VSR_SM_LOG ? sm->op - VSR_SM_LOG + 1 : 1;
  while (floor <= sm->commit && !vsr_sm_have(sm, floor)) floor++;
  if (lo < floor) {
    struct vsr_msg *m = vc_frame(sm, VSR_CMD_RANGE_EVICTED, 0);
    if (!m) return;
    struct vsr_repair_range_reply_header *ev = (struct vsr_repair_range_reply_header *)m->data;
    ev->nonce = r->nonce;
    ev->op = floor;
    vsr_frame_seal(m->data);
    vsr_sm_send_replica(sm, from, m);
    vsr_msg_unref(m);
    lo = floor;
  }
  struct vsr_peer_stats ps = {0};
  uint32_t room = 0;
  if (vsr_bus_peer_stats(sm->bus, VSR_PLANE_REPLICA, from, &ps) == 0 &&
      ps.queue_depth < ps.queue_capacity) {
    room = ps.queue_capacity - ps.queue_depth;
  }
  room = room > 0 ? room - 1 : 0; /* one slot stays for the RepairDone */
  if (room > VSR_SM_REPAIR_BATCH) room = VSR_SM_REPAIR_BATCH;
  /* The asker asks again every tick until the ops arrive: ops an earlier answer queued to it
   * and still in its queue are not queued again (they were, up to 19 times each, and a
   * recovering backup on a busy link fell further behind than it caught up: found by vsrbus
   * sim, seed 151). An empty queue sent them all: asked again, they go again (a reset link
   * loses its queue). */
  if (ps.queue_depth > 0 && sm->repair_queued[from] >= lo) {
    if (sm->repair_queued[from] >= r->to_op) return; /* all queued: its RepairDone follows */
    lo = sm->repair_queued[from] + 1;
  }
  uint64_t last = lo - 1, op, bytes = 0;
  for (op = lo; op <= r->to_op && room > 0 && bytes < VSR_SM_REPAIR_BYTES; op++) {
    struct vsr_sm_entry *e = vsr_sm_have(sm, op);
    if (!e) continue;
    last = op;
    bytes += e->prepare->size;
    struct vsr_msg *m = vsr_bus_msg_new(sm->bus, e->prepare->size);
    if (!m) break;
    memcpy(m->data, e->prepare->data, e->prepare->size);
    m->data[offsetof(struct vsr_header, command)] = VSR_CMD_REPAIR_PREPARE;
    vsr_frame_seal(m->data); /* the identity reads the command as Prepare: unchanged */
    if (vsr_bus_send_to_replica(sm->bus, from, m) == 0) {
      sm->repairs_sent++;
      sm->repair_queued[from] = op;
    } else {
      room = 0;
    }
    vsr_msg_unref(m);
    room = room ? room - 1 : 0;
  }
  /* RepairDone(last op sent): the asker asks for the next range at once instead of waiting for
   * its tick (our queue to it may have had room for part of the range only). */
  struct vsr_msg *m = vc_frame(sm, VSR_CMD_REPAIR_DONE, 0);
  if (!m) return;
  struct vsr_repair_range_reply_header *done = (struct vsr_repair_range_reply_header *)m->data;
  done->nonce = r->nonce;
  done->op = last;
  vsr_frame_seal(m->data);
  vsr_sm_send_replica(sm, from, m);
  vsr_msg_unref(m);
}

static void vc_on_repair_done(struct vsr_sm *sm, uint8_t from, const struct vsr_msg *msg) {
  const struct vsr_repair_range_reply_header *d =
      (const struct vsr_repair_range_reply_header *)msg->data;
  if (sm->status != VSR_SM_NORMAL || from != sm->repair_from) return;
  /* Something came (our nonce carries the first op asked): ask for what is still missing now.
   * Nothing came (its queue to us was full): the tick asks again. */
  if (d->op >= d->nonce.lo) vsr_sm_vc_repair(sm, true);
}

static void vc_send_start_view(struct vsr_sm *sm);

static void vc_after_repair(struct vsr_sm *sm) {
  if (vsr_sm_is_primary(sm)) {
    if (sm->sv_pending && vc_contiguous(sm) >= sm->op) vc_send_start_view(sm);
    vsr_sm_advance(sm);
  } else {
    vsr_sm_extend(sm);
    vsr_sm_commit_to(sm, sm->commit_max);
  }
  vsr_sm_vc_repair(sm, false);
}

static void vc_on_repair_prepare(struct vsr_sm *sm, uint8_t from, struct vsr_msg *msg) {
  const struct vsr_prepare_header *p = (const struct vsr_prepare_header *)msg->data;
  if (sm->status != VSR_SM_NORMAL || p->op <= sm->commit || p->op - sm->commit >= VSR_SM_LOG) {
    return;
  }
  struct vsr_sm_entry *e = vsr_sm_entry(sm, p->op);
  bool expected = e->op == p->op && !vsr_u128_is_zero(e->checksum);
  if (!expected && from != sm->repair_from) return; /* nobody vouches for it */
  msg->data[offsetof(struct vsr_header, command)] = VSR_CMD_PREPARE; /* ours now: a Prepare */
  if (!vsr_sm_store(sm, msg)) return;
  sm->repairs_received++;
  if (vsr_sm_is_primary(sm)) vsr_sm_entry(sm, p->op)->acks |= 1ull << sm->replica;
  if (p->op > sm->repair_target) sm->repair_target = p->op;
  vc_after_repair(sm);
}

/* RangeEvicted: what we miss is gone from the log of the replica we repair from. We jump to
 * the lowest op it holds: our log and table restart there (the table learns sessions again). */
static void vc_on_range_evicted(struct vsr_sm *sm, uint8_t from, const struct vsr_msg *msg) {
  uint64_t floor = ((const struct vsr_repair_range_reply_header *)msg->data)->op;
  if (sm->status != VSR_SM_NORMAL || from != sm->repair_from || floor <= sm->op + 1) return;
  for (uint32_t i = 0; i < VSR_SM_LOG; i++) {
    if (sm->pipe[i].op < floor) vsr_sm_entry_clear(&sm->pipe[i]);
  }
  sm->commit = sm->op = floor - 1;
  if (sm->commit_max < sm->commit) sm->commit_max = sm->commit;
  vsr_sm_table_clear(sm);
  sm->jumped = true;
  if (sm->dump) fprintf(sm->dump, "# state transfer: ops up to %llu from replica %u\n",
                        (unsigned long long)sm->commit, from);
  vsr_sm_say("VSR-VIEW replica %u: state transfer: ops up to %llu are gone from "
          "replica %u's log; continuing from there with a fresh client table", sm->replica,
          (unsigned long long)sm->commit, from);
  vc_after_repair(sm);
  vsr_sm_vc_repair(sm, true);
}

/* ---- the log after a view change ------------------------------------------------------------ */

/* Makes our log agree with a log whose head is |head| and whose last |n| headers are |hdrs|
 * (a DoViewChange or StartView body), as told by |source|: ops past |head| go; an uncommitted op
 * is kept only when its header is in |hdrs| and ours is the same; the rest is fetched from
 * |source| (expected by checksum when |hdrs| has it). Committed ops are the same everywhere. */
/* The checksum |hdrs| gives for |op| (zero: not there, or a header that is not a Prepare for
 * that op: the suffix is checked, not believed). */
static vsr_u128 vc_hdr_checksum(const uint8_t *hdrs, unsigned n, uint64_t head, uint64_t op) {
  if (op > head || head - op >= n) return (vsr_u128){0, 0};
  const uint8_t *h = hdrs + (size_t)(n - 1 - (head - op)) * VSR_HEADER_SIZE;
  if (h[offsetof(struct vsr_header, command)] != VSR_CMD_PREPARE ||
      vsr_get_u64(h + offsetof(struct vsr_prepare_header, op)) != op) {
    return (vsr_u128){0, 0};
  }
  return vsr_get_u128(h);
}

static void vc_adopt_log(struct vsr_sm *sm, const uint8_t *hdrs, unsigned n, uint64_t head,
                         uint8_t source) {
  for (uint32_t i = 0; i < VSR_SM_LOG; i++) {
    struct vsr_sm_entry *e = &sm->pipe[i];
    if (e->op <= sm->commit) continue;
    vsr_u128 c = vc_hdr_checksum(hdrs, n, head, e->op);
    bool keep = e->prepare && !vsr_u128_is_zero(c) && vsr_u128_eq(c, e->checksum);
    if (!keep) vsr_sm_entry_clear(e);
  }
  for (uint64_t op = sm->commit + 1; op <= head && op - sm->commit < VSR_SM_LOG; op++) {
    struct vsr_sm_entry *e = vsr_sm_entry(sm, op);
    if (e->op != op) {
      vsr_sm_entry_clear(e);
      e->op = op;
    }
    if (!e->prepare) e->checksum = vc_hdr_checksum(hdrs, n, head, op);
    e->acks = 0;
  }
  sm->op = sm->commit;
  sm->repair_from = source;
  sm->repair_target = head;
  sm->repair_hi = 0;
}

/* ---- view change ---------------------------------------------------------------------------- */

static void vc_reset_round(struct vsr_sm *sm) {
  sm->svc_bits = sm->dvc_bits = 0;
  sm->dvc_sent = false;
  sm->dvc_best_op = sm->dvc_commit_max = 0;
  sm->dvc_best_log_view = 0;
  sm->dvc_best = sm->replica;
  vsr_msg_unref(sm->dvc_best_msg);
  sm->dvc_best_msg = NULL;
}

static void vc_start_view_change(struct vsr_sm *sm, uint32_t view) {
  sm->view = view;
  sm->status = VSR_SM_VIEW_CHANGE;
  sm->sv_pending = sm->lv_pending = false; /* log_view stays the last whole one */
  vc_reset_round(sm);
  sm->svc_bits = 1ull << sm->replica;
  sm->vc_start_ns = vsr_sm_now(sm);
  vsr_sm_say("VSR-VIEW replica %u: view change to view %u (primary %u), "
          "op %llu commit %llu", sm->replica, view, vsr_sm_primary_of(sm, view),
          (unsigned long long)sm->op, (unsigned long long)sm->commit);
  vc_send_simple(sm, VSR_CMD_START_VIEW_CHANGE, -1);
}

static void vc_record_dvc(struct vsr_sm *sm, uint8_t from, uint32_t log_view, uint64_t op,
                          uint64_t commit, struct vsr_msg *msg) {
  if (sm->dvc_bits >> from & 1) return;
  bool first = sm->dvc_bits == 0;
  sm->dvc_bits |= 1ull << from;
  if (commit > sm->dvc_commit_max) sm->dvc_commit_max = commit;
  bool better = log_view > sm->dvc_best_log_view ||
                (log_view == sm->dvc_best_log_view && op > sm->dvc_best_op) ||
                (log_view == sm->dvc_best_log_view && op == sm->dvc_best_op &&
                 from == sm->replica); /* a tie: our own log needs no repair */
  if (first || better) {
    sm->dvc_best = from;
    sm->dvc_best_log_view = log_view;
    sm->dvc_best_op = op;
    vsr_msg_unref(sm->dvc_best_msg);
    sm->dvc_best_msg = msg ? vsr_msg_ref(msg) : NULL;
  }
}

static void vc_become_primary(struct vsr_sm *sm) {
  sm->status = VSR_SM_NORMAL; /* log_view moves to this view with the StartView, below */
  sm->lv_pending = false;
  sm->view_changes++;
  if (sm->dvc_best != sm->replica && sm->dvc_best_msg) {
    const struct vsr_msg *d = sm->dvc_best_msg;
    vc_adopt_log(sm, d->data + VSR_HEADER_SIZE, (d->size - VSR_HEADER_SIZE) / VSR_HEADER_SIZE,
                 sm->dvc_best_op, sm->dvc_best);
    sm->op = sm->dvc_best_op; /* the head, with holes being repaired */
  } else {
    uint64_t top = vc_contiguous(sm);
    for (uint32_t i = 0; i < VSR_SM_LOG; i++) { /* out-of-order Prepares past our head go */
      if (sm->pipe[i].op > top) vsr_sm_entry_clear(&sm->pipe[i]);
    }
    sm->op = top;
    sm->repair_from = sm->replica;
  }
  for (uint64_t op = sm->commit + 1; op <= sm->op && op - sm->commit < VSR_SM_LOG; op++) {
    struct vsr_sm_entry *e = vsr_sm_entry(sm, op);
    if (e->op == op) e->acks = 1ull << sm->replica;
  }
  if (sm->dvc_commit_max > sm->commit_max) sm->commit_max = sm->dvc_commit_max;
  struct vsr_sm_entry *head = vsr_sm_entry(sm, sm->op);
  sm->parent = head->op == sm->op ? head->checksum : (vsr_u128){0, 0};
  sm->view_start_op = sm->op;
  sm->repair_target = sm->op;
  for (unsigned r = 0; r < sm->replica_count; r++) {
    sm->behind[r] = r != sm->replica && sm->commit < sm->op ? sm->commit + 1 : 0;
    sm->sent_hi[r] = 0;
    sm->acked[r] = sm->commit;
  }
  vsr_sm_table_reset_prepared(sm);
  vc_reset_round(sm);
  vsr_sm_say("VSR-VIEW replica %u: primary of view %u, op %llu commit %llu "
             "(committed up to %llu before)", sm->replica, sm->view, (unsigned long long)sm->op,
             (unsigned long long)sm->commit, (unsigned long long)sm->commit_max);
  /* The StartView waits until our log holds every Prepare up to its head: it names the ops
   * the backups keep (by header), and a backup drops what it does not name. Sent with holes,
   * it made the backups drop the very Prepares we were repairing from them, and the view
   * stalled for good (found by vsrbus sim, seed 86). The holes are repaired from the replica
   * whose log won, which keeps its log while it waits in view-change status. */
  sm->sv_pending = true;
  if (vc_contiguous(sm) >= sm->op) vc_send_start_view(sm);
  vsr_sm_advance(sm);
  vsr_sm_vc_repair(sm, true);
}

static void vc_send_start_view(struct vsr_sm *sm) {
  /* Our log is the view's now. Not before: a primary still repairing holes that lost its view
   * would otherwise tell the next view change its log (up to the first hole) was the newest,
   * and ops committed in the view before could be truncated (found by vsrbus sim, seed 1436:
   * a lagging replica elected, its view timed out while it repaired, and the next primary
   * took its 327 ops over the others' 2782). */
  sm->log_view = sm->view;
  sm->sv_pending = false;
  struct vsr_msg *m = vc_build_start_view(sm, (vsr_u128){0, 0});
  if (m) {
    vsr_sm_broadcast(sm, m);
    vsr_msg_unref(m);
  }
  for (unsigned r = 0; r < sm->replica_count; r++) {
    if (r != sm->replica) vsr_sm_primary_catch_up(sm, r);
  }
}

/* With StartViewChanges from a majority: our DoViewChange to the new primary. */
static void vc_check_svc(struct vsr_sm *sm) {
  if (sm->dvc_sent || vc_count(sm->svc_bits) < vsr_sm_quorum(sm)) return;
  sm->dvc_sent = true;
  uint8_t primary = vsr_sm_primary_of(sm, sm->view);
  if (primary == sm->replica) {
    vc_record_dvc(sm, sm->replica, sm->log_view, vc_contiguous(sm), sm->commit, NULL);
  } else {
    struct vsr_msg *m = vc_build_dvc(sm);
    if (m) {
      vsr_sm_send_replica(sm, primary, m);
      vsr_msg_unref(m);
    }
  }
}

static void vc_check_dvc(struct vsr_sm *sm) {
  if (sm->status == VSR_SM_VIEW_CHANGE && (sm->dvc_bits >> sm->replica & 1) &&
      vc_count(sm->dvc_bits) >= vsr_sm_quorum(sm)) {
    vc_become_primary(sm);
  }
}

static void vc_on_svc(struct vsr_sm *sm, uint8_t from, const struct vsr_msg *msg) {
  uint32_t v = ((const struct vsr_header *)msg->data)->view;
  if (v > sm->view) vc_start_view_change(sm, v);
  if (v != sm->view) return;
  if (sm->status == VSR_SM_NORMAL) {
    if (vsr_sm_is_primary(sm) && !sm->sv_pending) { /* it missed our StartView */
      struct vsr_msg *m = vc_build_start_view(sm, (vsr_u128){0, 0});
      if (m) {
        vsr_sm_send_replica(sm, from, m);
        vsr_msg_unref(m);
      }
    }
    return;
  }
  sm->svc_bits |= 1ull << from;
  vc_check_svc(sm);
  vc_check_dvc(sm);
}

static void vc_on_dvc(struct vsr_sm *sm, uint8_t from, struct vsr_msg *msg) {
  const struct vsr_do_view_change_header *d = (const struct vsr_do_view_change_header *)msg->data;
  if (d->view > sm->view) vc_start_view_change(sm, d->view);
  if (d->view != sm->view || sm->status != VSR_SM_VIEW_CHANGE ||
      vsr_sm_primary_of(sm, d->view) != sm->replica) {
    return;
  }
  sm->svc_bits |= 1ull << from; /* it sent one, or it would not be here */
  vc_record_dvc(sm, from, d->log_view, d->op, d->commit, msg);
  vc_check_svc(sm);
  vc_check_dvc(sm);
}

/* A normal backup adopts the StartView |msg| of the primary of its view. */
static void vc_adopt_start_view(struct vsr_sm *sm, uint8_t from, const struct vsr_msg *msg) {
  const struct vsr_start_view_header *s = (const struct vsr_start_view_header *)msg->data;
  bool changed = s->view != sm->view || sm->status != VSR_SM_NORMAL;
  sm->heard_ns = vsr_sm_now(sm);
  if (s->commit > sm->commit_max) sm->commit_max = s->commit;
  if (!changed) { /* again (it answers our StartViewChange or RequestStartView) */
    if (s->op > sm->repair_target) sm->repair_target = s->op;
    vsr_sm_commit_to(sm, sm->commit_max);
    vsr_sm_vc_repair(sm, false);
    return;
  }
  if (sm->view != s->view || sm->log_view != s->view) sm->view_changes++;
  sm->view = s->view; /* log_view follows once the log is whole (vsr_sm_extend) */
  sm->status = VSR_SM_NORMAL;
  sm->sv_pending = false;
  sm->lv_pending = true;
  sm->lv_target = s->op;
  vc_reset_round(sm);
  vc_adopt_log(sm, msg->data + VSR_HEADER_SIZE, (msg->size - VSR_HEADER_SIZE) / VSR_HEADER_SIZE,
               s->op, from);
  vsr_sm_say("VSR-VIEW replica %u: backup in view %u (primary %u), op %llu "
          "commit %llu", sm->replica, sm->view, from, (unsigned long long)s->op,
          (unsigned long long)s->commit);
  vsr_sm_extend(sm); /* PrepareOk, in the new view, for every op we keep */
  vsr_sm_commit_to(sm, sm->commit_max);
  vsr_sm_vc_repair(sm, true);
}

/* A recovering replica counts the StartViews answering its RequestStartView. */
static void vc_recovery_answer(struct vsr_sm *sm, uint8_t from, struct vsr_msg *msg) {
  const struct vsr_start_view_header *s = (const struct vsr_start_view_header *)msg->data;
  if (!vsr_u128_eq(s->incarnation, sm->incarnation)) return;
  sm->rsv_bits |= 1ull << from;
  if (s->op == 0) sm->fresh_bits |= 1ull << from;
  else sm->fresh_bits &= ~(1ull << from);
  if (s->view > sm->rsv_view || sm->rsv_bits == (1ull << from)) {
    sm->rsv_view = s->view;
    vsr_msg_unref(sm->rsv_primary);
    sm->rsv_primary = NULL;
  }
  if (s->view == sm->rsv_view && from == vsr_sm_primary_of(sm, s->view)) {
    vsr_msg_unref(sm->rsv_primary);
    sm->rsv_primary = vsr_msg_ref(msg);
  }
}

static void vc_check_recovery(struct vsr_sm *sm) {
  uint64_t others = ((sm->replica_count >= 64 ? 0 : 1ull << sm->replica_count) - 1) &
                    ~(1ull << sm->replica);
  if (sm->status != VSR_SM_RECOVERING) return;
  if ((sm->fresh_bits & others) == others) {
    /* Every other replica is empty (recovering too, or holding no op): nothing can be lost. */
    sm->status = VSR_SM_NORMAL;
    sm->view = sm->log_view = sm->rsv_view;
    sm->heard_ns = vsr_sm_now(sm);
    vsr_sm_say("VSR-VIEW replica %u: fresh cluster, normal in view %u",
            sm->replica, sm->view);
    return;
  }
  if (!sm->rsv_primary || vc_count(sm->rsv_bits) < vsr_sm_quorum(sm)) return;
  const struct vsr_start_view_header *s =
      (const struct vsr_start_view_header *)sm->rsv_primary->data;
  sm->recoveries++;
  sm->view = sm->log_view = s->view;
  sm->status = VSR_SM_VIEW_CHANGE; /* adopting the StartView makes it normal */
  vsr_sm_say("VSR-VIEW replica %u: recovered: view %u from replica %u",
          sm->replica, s->view, vsr_sm_primary_of(sm, s->view));
  /* Until it holds the primary's log up to this op it casts no view-change vote: the ops it
   * acknowledged before it lost them may exist nowhere else but on the primary. */
  sm->recover_op = s->op;
  struct vsr_msg *m = sm->rsv_primary;
  sm->rsv_primary = NULL;
  vc_adopt_start_view(sm, vsr_sm_primary_of(sm, s->view), m);
  vsr_msg_unref(m);
}

static void vc_on_start_view(struct vsr_sm *sm, uint8_t from, struct vsr_msg *msg) {
  const struct vsr_start_view_header *s = (const struct vsr_start_view_header *)msg->data;
  if (sm->status == VSR_SM_RECOVERING) {
    vc_recovery_answer(sm, from, msg);
    vc_check_recovery(sm);
    return;
  }
  if (from != vsr_sm_primary_of(sm, s->view) || s->view < sm->view) return;
  vc_adopt_start_view(sm, from, msg);
}

static void vc_on_request_start_view(struct vsr_sm *sm, uint8_t from, const struct vsr_msg *msg) {
  if (sm->status == VSR_SM_RECOVERING) {
    sm->fresh_bits |= 1ull << from;
    vc_check_recovery(sm);
    return;
  }
  if (sm->status != VSR_SM_NORMAL || sm->sv_pending) return; /* asked again on its tick */
  vsr_u128 inc = ((const struct vsr_request_start_view_header *)msg->data)->incarnation;
  struct vsr_msg *m = vc_build_start_view(sm, inc);
  if (m) {
    vsr_sm_send_replica(sm, from, m);
    vsr_msg_unref(m);
  }
}

void vsr_sm_vc_behind(struct vsr_sm *sm, uint8_t from) {
  if (sm->status == VSR_SM_RECOVERING) return;
  uint64_t t = vsr_sm_now(sm);
  if (t - sm->rsv_ns < vc_tick_ns(sm)) return; /* asked recently */
  sm->rsv_ns = t;
  vc_send_simple(sm, VSR_CMD_REQUEST_START_VIEW, from);
}

bool vsr_sm_vc_message(struct vsr_sm *sm, uint8_t from, struct vsr_msg *msg) {
  uint8_t cmd = msg->data[offsetof(struct vsr_header, command)];
  bool recovering = sm->status == VSR_SM_RECOVERING || sm->op < sm->recover_op;
  switch (cmd) {
  case VSR_CMD_START_VIEW_CHANGE:
    if (!recovering) vc_on_svc(sm, from, msg);
    return true;
  case VSR_CMD_DO_VIEW_CHANGE:
    if (!recovering) vc_on_dvc(sm, from, msg);
    return true;
  case VSR_CMD_START_VIEW: vc_on_start_view(sm, from, msg); return true;
  case VSR_CMD_REQUEST_START_VIEW: vc_on_request_start_view(sm, from, msg); return true;
  case VSR_CMD_REQUEST_PREPARES:
    if (!recovering) vc_on_request_prepares(sm, from, msg);
    return true;
  case VSR_CMD_REPAIR_PREPARE: vc_on_repair_prepare(sm, from, msg); return true;
  case VSR_CMD_RANGE_EVICTED: vc_on_range_evicted(sm, from, msg); return true;
  case VSR_CMD_REPAIR_DONE: vc_on_repair_done(sm, from, msg); return true;
  default: return false;
  }
}

void vsr_sm_vc_replica_up(struct vsr_sm *sm, uint8_t id) {
  if (sm->status == VSR_SM_RECOVERING) vc_send_simple(sm, VSR_CMD_REQUEST_START_VIEW, id);
  else if (sm->status == VSR_SM_VIEW_CHANGE) vc_send_simple(sm, VSR_CMD_START_VIEW_CHANGE, id);
}

void vsr_sm_send_commit(struct vsr_sm *sm); /* sm.c */

/* Every primary_timeout / 5: the primary's heartbeat; a backup's timeout; a view change that
 * takes too long moves on; a recovering replica asks again; repairs are asked again. */
static void vc_on_tick(void *ctx) {
  struct vsr_sm *sm = ctx;
  uint64_t t = vsr_sm_now(sm);
  vsr_timer_arm(sm->tick_timer, vc_tick_ns(sm));
  switch (sm->status) {
  case VSR_SM_NORMAL:
    if (vsr_sm_is_primary(sm)) {
      vsr_sm_send_commit(sm);
    } else if (t - sm->heard_ns >= sm->primary_timeout_ns && sm->op >= sm->recover_op) {
      vc_start_view_change(sm, sm->view + 1);
      break;
    }
    vsr_sm_vc_repair(sm, false);
    break;
  case VSR_SM_VIEW_CHANGE:
    if (t - sm->vc_start_ns >= sm->primary_timeout_ns) {
      vc_start_view_change(sm, sm->view + 1);
    } else {
      vc_send_simple(sm, VSR_CMD_START_VIEW_CHANGE, -1); /* lost with a link, perhaps */
      if (sm->dvc_sent && vsr_sm_primary_of(sm, sm->view) != sm->replica) {
        sm->dvc_sent = false;
        vc_check_svc(sm);
      }
    }
    break;
  case VSR_SM_RECOVERING:
    vc_send_simple(sm, VSR_CMD_REQUEST_START_VIEW, -1);
    break;
  }
}
