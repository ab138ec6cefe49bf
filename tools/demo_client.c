/* `vsrbus demo`: the client sessions, its load generator (see struct demo_client). */
#include <string.h>

#include "cmds.h"
#include "demo.h"

/* ---- clients --------------------------------------------------------------------------- */

static struct vsr_msg *demo_request_new(struct demo_client *k, uint64_t request, uint8_t op,
                                        uint32_t body) {
  struct vsr_msg *m = vsr_client_msg_new(k->c, VSR_HEADER_SIZE + body);
  if (!m) return NULL;
  struct vsr_request_header *rq = (struct vsr_request_header *)m->data;
  rq->command = VSR_CMD_REQUEST;
  rq->cluster = k->d->cluster;
  rq->view = k->view;
  rq->client = k->id;
  rq->request = request;
  rq->session = k->session;
  rq->operation = op;
  for (uint32_t i = 0; i < body; i++) m->data[VSR_HEADER_SIZE + i] = (uint8_t)(i * 7 + 1);
  return m;
}

static void demo_put(struct demo_client *k, struct vsr_msg *m) {
  if (!m || vsr_client_send(k->c, m) != 0) k->d->errors++;
  vsr_msg_unref(m);
}

/* Request |request| (new, or again after a failover: same number, same bytes). */
static void demo_send_request(struct demo_client *k, uint64_t request) {
  demo_put(k, demo_request_new(k, request, VSR_OP_SEND_MESSAGES, k->d->size));
}

static void demo_send(struct demo_client *k) {
  uint32_t slot = (uint32_t)(k->next_request % DEMO_DEPTH_MAX);
  if (k->slot_req[slot] != 0) return; /* the depth is full */
  k->slot_req[slot] = k->next_request;
  k->sent_at[slot] = vsr_tool_now();
  k->inflight++;
  k->d->sent++;
  demo_send_request(k, k->next_request++);
}

/* On a fresh connection: the PingClient that names the view, then the Register or every
 * request still unanswered, oldest first. */
static void demo_client_resume(struct demo_client *k) {
  struct demo *d = k->d;
  struct vsr_msg *ping = vsr_client_msg_new(k->c, VSR_HEADER_SIZE);
  if (ping) {
    struct vsr_header *h = (struct vsr_header *)ping->data;
    h->command = VSR_CMD_PING_CLIENT;
    h->cluster = d->cluster;
    h->view = k->view;
    vsr_put_u128(h->reserved_command, k->id);
  }
  demo_put(k, ping);
  k->progress_ns = vsr_tool_now();
  if (k->session == 0) {
    k->register_ns = k->progress_ns;
    demo_put(k, demo_request_new(k, 0, VSR_OP_REGISTER, 0));
    return;
  }
  for (uint64_t r = k->next_request - k->inflight; r < k->next_request; r++) {
    if (k->slot_req[r % DEMO_DEPTH_MAX] != r) continue;
    d->resent++;
    demo_send_request(k, r);
  }
  while (k->inflight < (uint32_t)d->depth && !d->done) demo_send(k);
}

/* Leaves the replica it is on for |target| (the next one, or the primary a header named). */
static void demo_failover(struct demo_client *k, int target) {
  k->target = target;
  k->d->failovers++;
  vsr_timer_arm(k->retry, 1); /* closes and connects from the loop, not inside a callback */
}

static void demo_learn_view(struct demo_client *k, uint32_t view) {
  struct demo *d = k->d;
  if (view > k->view) k->view = view;
  if (view > d->view) {
    d->view = view;
    if (!d->quiet) {
      fprintf(d->out, "  view %u: replica %u is primary; clients follow it\n", view,
              view % DEMO_REPLICAS);
      fflush(d->out);
    }
  }
}

static void demo_on_reply(struct demo_client *k, const struct vsr_reply_header *rp) {
  struct demo *d = k->d;
  uint64_t now = vsr_tool_now();
  if (rp->request == 0) { /* the Register's: the session */
    if (k->session != 0 || rp->operation != VSR_OP_REGISTER) {
      d->late++;
      return;
    }
    k->session = rp->commit;
    k->progress_ns = now;
    while (k->inflight < (uint32_t)d->depth && !d->done) demo_send(k);
    return;
  }
  uint32_t slot = (uint32_t)(rp->request % DEMO_DEPTH_MAX);
  if (k->slot_req[slot] != rp->request) {
    d->late++; /* answered already (a duplicate after a resend) */
    return;
  }
  uint64_t lat = now - k->sent_at[slot];
  k->slot_req[slot] = 0;
  k->inflight--;
  k->progress_ns = now;
  d->replied++;
  if (d->acks) {
    fprintf(d->acks, "%016llx%016llx %llu\n", (unsigned long long)k->id.hi,
            (unsigned long long)k->id.lo, (unsigned long long)rp->request);
  }
  if (!k->replied) {
    k->replied = true;
    d->warm++;
  }
  if (d->measuring) {
    if (d->last_reply_ns && now - d->last_reply_ns > d->max_gap_ns) {
      d->max_gap_ns = now - d->last_reply_ns;
      d->max_gap_at_ns = d->last_reply_ns;
    }
    if (d->kill_ns && !d->recovered_ns && rp->view >= d->kill_view) {
      d->recovered_ns = now;
      if (!d->quiet) {
        fprintf(d->out, "  first commit %.0f ms after the kill (view %u)\n",
                (double)(now - d->kill_ns) / 1e6, d->view);
        fflush(d->out);
      }
    }
    d->sec_committed++;
    vsri_hist_record(&d->sec, lat);
    vsri_hist_record(d->kill_ns ? &d->after : &d->before, lat);
    if (d->kill_ns) d->after_n++;
    else d->before_n++;
  }
  d->last_reply_ns = now;
  if (!d->done) demo_send(k);
}

static void demo_on_message(void *user, struct vsr_client *c, struct vsr_msg *msg) {
  (void)c;
  struct demo_client *k = user;
  struct demo *d = k->d;
  const struct vsr_header *h = (const struct vsr_header *)msg->data;
  switch (h->command) {
  case VSR_CMD_REPLY:
    demo_learn_view(k, h->view);
    demo_on_reply(k, (const struct vsr_reply_header *)msg->data);
    return;
  case VSR_CMD_PONG_CLIENT:
    demo_learn_view(k, h->view);
    if (d->nodes > 1 && (int)(k->view % (uint32_t)d->nodes) != k->target) {
      demo_failover(k, (int)(k->view % (uint32_t)d->nodes)); /* a backup: go to the primary */
    }
    return;
  case VSR_CMD_EVICTION: {
    /* The session is gone (the table evicted it): its requests in flight are lost (counted);
     * a new session numbers from 1 again. */
    d->evicted++;
    d->errors += k->inflight;
    memset(k->slot_req, 0, sizeof k->slot_req);
    k->inflight = 0;
    k->next_request = 1;
    k->session = 0;
    demo_client_resume(k);
    return;
  }
  default:
    d->errors++;
    return;
  }
}

static void demo_on_state(void *user, struct vsr_client *c, int status) {
  (void)c;
  struct demo_client *k = user;
  if (status == 0) {
    demo_client_resume(k);
    return;
  }
  /* Closed (the replica is not up yet, or went away): the next one, shortly. */
  if (!k->d->done) {
    k->target = (k->target + 1) % k->d->nodes;
    vsr_timer_arm(k->retry, DEMO_RETRY_NS);
  }
}

void demo_retry(void *ctx) {
  struct demo_client *k = ctx;
  vsr_client_del(k->c);
  k->c = NULL;
  demo_client_start(k);
}

/* The one place that picks the replica and opens the connection (see struct demo_client). */
void demo_client_start(struct demo_client *k) {
  struct vsr_client_options o;
  vsr_client_options_default(&o);
  o.addr = k->d->addrs[k->target];
  o.transport = k->d->transport;
  if (k->d->cert[0]) o.quic.ca_file = k->d->cert;
  /* Pipelined requests, in order, on one stream (the per-request model would carry one request
   * per round trip: the node allows 1 stream per client by default). */
  o.quic.streams = VSR_QUIC_STREAMS_LONG;
  struct vsr_client_callbacks cb = {.on_message = demo_on_message, .on_state = demo_on_state};
  if (vsr_client_new(&k->c, k->d->loop, &o, &cb, k) != 0) {
    k->c = NULL;
    k->target = (k->target + 1) % k->d->nodes;
    vsr_timer_arm(k->retry, DEMO_RETRY_NS);
  }
}

/* Every DEMO_WATCH_NS: a client whose requests (or Register) got no Reply for a primary
 * timeout sends them again where it is (a new primary drops Requests until it has committed
 * what it inherited); after request_timeout it tries the next replica. */
void demo_watch(void *ctx) {
  struct demo *d = ctx;
  uint64_t now = vsr_tool_now(), resend_ns = (uint64_t)d->primary_timeout_ms * DEMO_MS;
  for (int i = 0; i < d->clients && d->nodes > 1; i++) {
    struct demo_client *k = &d->cl[i];
    bool waiting = k->inflight > 0 || (k->session == 0 && k->register_ns != 0);
    if (!k->c || !waiting || now - k->progress_ns <= resend_ns) continue;
    if (now - k->progress_ns > d->request_timeout_ns) {
      demo_failover(k, (k->target + 1) % d->nodes);
    } else if (now - k->resend_ns > resend_ns && vsr_client_state(k->c) == 1) {
      k->resend_ns = now;
      uint64_t progress = k->progress_ns;
      demo_client_resume(k);
      k->progress_ns = progress; /* a resend is not progress */
    }
  }
  vsr_timer_arm(d->watch, DEMO_WATCH_NS);
}
