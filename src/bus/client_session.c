/* Client SDK, session mode (options.session; docs/client.md): Register, one request in flight
 * with the rest queued, replies matched by request number, resend to the next replica with
 * backoff and full jitter, the view followed from headers, heartbeat and liveness. */
#include "bus/client_impl.h"

/* ---- session mode ---------------------------------------------------------------------- */

static uint64_t client_now(struct vsr_client *c) { return vsri_io_now_fresh(c->loop->io); }

static void sess_tick_cb(struct vsri_io *io, struct vsri_completion *cc, int32_t res);

/* Arms the tick for |due| (absolute) unless it is armed for an earlier time already. A later
 * arm replaces an earlier one only by canceling: the callback re-arms for the new due time. */
static void sess_arm(struct vsr_client *c, uint64_t due) {
  struct client_sess *s = c->s;
  if (c->deleting) return;
  if (s->tick.pending) {
    if (due >= s->tick_due) return;
    s->tick_due = due;
    vsri_io_cancel(c->loop->io, &s->tick); /* the callback re-arms at tick_due */
    return;
  }
  s->tick_due = due;
  uint64_t now = client_now(c);
  vsri_io_timeout(c->loop->io, &s->tick, due > now ? due - now : 0, sess_tick_cb, c);
}

static bool sess_pend_full(const struct client_sess *s) { return s->pend_len == s->pend_cap; }

static struct client_req *sess_pend_at(struct client_sess *s, uint32_t i) {
  return &s->pend[(s->pend_head + i) % s->pend_cap];
}

/* Completes the request in flight with |status| (|reply| or NULL) and promotes the next. */
static void sess_complete(struct vsr_client *c, int status, struct vsr_msg *reply) {
  struct client_sess *s = c->s;
  struct client_req r = s->cur;
  memset(&s->cur, 0, sizeof s->cur);
  if (r.is_register) {
    if (status == 0) {
      s->session = ((const struct vsr_reply_header *)reply->data)->commit;
      s->next_request = 1;
    }
  } else {
    if (status == 0) s->st.replies++;
    else if (status == VSR_ETIMEDOUT) s->st.timeouts++;
    if (r.fn) {
      c->in_cb++;
      r.fn(r.arg, c, status, reply);
      c->in_cb--;
    }
  }
  vsr_msg_unref(r.msg);
}

/* Ends the session: every request completes with |reason|, no more connections. */
static void sess_end(struct vsr_client *c, int reason) {
  struct client_sess *s = c->s;
  if (s->ended) return;
  s->ended = reason;
  c->state = reason;
  if (s->cur.msg) sess_complete(c, reason, NULL);
  while (s->pend_len > 0) {
    s->cur = *sess_pend_at(s, 0);
    s->pend_head = (s->pend_head + 1) % s->pend_cap;
    s->pend_len--;
    sess_complete(c, reason, NULL);
  }
  if (c->conn) c->tops->close(c->conn, reason, false);
  if (c->cb.on_state && !c->deleting) {
    c->in_cb++;
    c->cb.on_state(c->user, c, reason);
    c->in_cb--;
  }
}

/* Stamps the head of the queue as the request in flight (its number is given now). */
static void sess_promote(struct vsr_client *c) {
  struct client_sess *s = c->s;
  if (s->cur.msg || s->session == 0 || s->pend_len == 0) return;
  s->cur = *sess_pend_at(s, 0);
  s->pend_head = (s->pend_head + 1) % s->pend_cap;
  s->pend_len--;
  struct vsr_request_header *rq = (struct vsr_request_header *)s->cur.msg->data;
  rq->command = VSR_CMD_REQUEST;
  rq->cluster = s->cluster;
  rq->view = s->view;
  rq->replica = 0;
  rq->client = s->id;
  rq->session = s->session;
  rq->request = s->cur.request = s->next_request++;
  rq->operation = s->cur.operation;
  rq->size = s->cur.msg->size;
}

/* Sends the request in flight on the current connection unless it went out on it already. */
static void sess_pump(struct vsr_client *c) {
  struct client_sess *s = c->s;
  sess_promote(c);
  if (!s->up || !s->cur.msg || s->cur.sent_gen == s->gen) return;
  if (!vsri_sendq_push(&c->q, s->cur.msg)) return; /* queue full of raw frames: next tick */
  vsr_msg_ref(s->cur.msg);
  c->frames_queued++;
  if (s->cur.sent_gen != 0) s->st.resends++;
  s->cur.sent_gen = s->gen;
  s->cur.sent_at = client_now(c);
  c->tops->kick(c->conn);
  sess_arm(c, s->cur.sent_at + s->request_timeout);
}

static void sess_ping(struct vsr_client *c) {
  struct client_sess *s = c->s;
  struct vsr_msg *m = vsr_client_msg_new(c, VSR_HEADER_SIZE);
  if (!m) return;
  struct vsr_header *h = (struct vsr_header *)m->data;
  h->command = VSR_CMD_PING_CLIENT;
  h->cluster = s->cluster;
  h->view = s->view;
  vsr_put_u128(h->reserved_command, s->id);
  vsr_put_u64(h->reserved_command + 16, client_now(c));
  if (vsri_sendq_push(&c->q, m)) {
    s->st.pings++;
    c->frames_queued++;
    c->tops->kick(c->conn);
  } else {
    vsr_msg_unref(m);
  }
}

static void sess_connect(struct vsr_client *c) {
  struct client_sess *s = c->s;
  s->reconnect_at = 0;
  if (s->gen > 0) s->st.reconnects++;
  s->gen++;
  s->up = false;
  s->switching = false;
  s->conn_started = client_now(c);
  c->state = 0;
  int err = c->tops->connect(&c->conn, &c->tctx, s->addrs[s->target], &vsri_client_events, c, &c->q);
  if (err) {
    c->conn = NULL;
    VSRI_WARN("VSR-CLIENT", "replica %u (%s): cannot dial: %s", s->target, s->addrs[s->target],
              vsr_strerror(err));
    vsri_client_sess_on_closed(c, err);
    return;
  }
  uint64_t wait = s->liveness ? s->liveness : s->request_timeout;
  sess_arm(c, s->conn_started + wait);
}

/* The connection is gone (or never came): choose the next replica and when to dial it. */
void vsri_client_sess_on_closed(struct vsr_client *c, int reason) {
  struct client_sess *s = c->s;
  bool was_up = s->up;
  s->up = false;
  c->state = s->ended ? s->ended : 0;
  c->frames_dropped += vsri_sendq_len(&c->q); /* never sent; the request in flight is resent */
  while (vsri_sendq_len(&c->q) > 0) vsri_sendq_pop(&c->q);
  if (s->ended) return;
  uint32_t from = s->target;
  if (!s->switching) {
    s->target = (s->target + 1) % s->n;
    s->attempt++;
  }
  s->switching = false;
  uint64_t wait = vsri_backoff_ns(s->rc_min, s->rc_max, s->attempt);
  s->reconnect_at = client_now(c) + wait;
  sess_arm(c, s->reconnect_at);
  /* One line per lost connection; failed dials in a row are counted, not logged. */
  if (was_up && reason != VSR_ECANCELED) {
    VSRI_INFO("VSR-CLIENT", "replica %u (%s): connection lost: %s; trying replica %u in %llu ms",
              from, s->addrs[from], vsr_strerror(reason), s->target,
              (unsigned long long)(wait / 1000000));
  }
}

/* Closes the connection on purpose and goes to |target| (backoff by |attempt|). */
static void sess_switch(struct vsr_client *c, uint32_t target, bool failure) {
  struct client_sess *s = c->s;
  s->target = target % s->n;
  if (failure) s->attempt++;
  if (c->conn) {
    s->switching = true;
    s->up = false;
    c->tops->close(c->conn, VSR_ECANCELED, false);
    return; /* vsri_client_sess_on_closed schedules the dial */
  }
  s->reconnect_at = client_now(c) + vsri_backoff_ns(s->rc_min, s->rc_max, s->attempt);
  sess_arm(c, s->reconnect_at);
}

void vsri_client_sess_on_connected(struct vsr_client *c) {
  struct client_sess *s = c->s;
  uint64_t now = client_now(c);
  s->up = true;
  s->st.connects++;
  s->last_rx = now;
  sess_ping(c); /* the answer names the view: a backup redirects us at once */
  s->next_ping = now + s->hb;
  sess_pump(c);
  if (s->hb) sess_arm(c, s->next_ping);
  if (s->liveness) sess_arm(c, now + s->liveness);
  if (c->cb.on_state && !c->deleting) {
    c->in_cb++;
    c->cb.on_state(c->user, c, 0);
    c->in_cb--;
  }
}

/* A header's view: remember the highest; follow the primary it names. */
static void sess_learn_view(struct vsr_client *c, uint32_t view, uint8_t from) {
  struct client_sess *s = c->s;
  if (view > s->view) s->view = view;
  uint32_t primary = s->view % s->n;
  if (primary == s->target) {
    if (from == primary) s->attempt = 0;
    return;
  }
  s->st.redirects++;
  VSRI_DEBUG("VSR-CLIENT", "view %u: replica %u is the primary; leaving replica %u", s->view,
             primary, s->target);
  sess_switch(c, primary, false);
}

void vsri_client_sess_on_frame(struct vsr_client *c, struct vsr_msg *msg) {
  struct client_sess *s = c->s;
  const struct vsr_header *h = (const struct vsr_header *)msg->data;
  s->last_rx = client_now(c);
  if (s->ended) return;
  switch (h->command) {
  case VSR_CMD_REPLY: {
    const struct vsr_reply_header *rp = (const struct vsr_reply_header *)msg->data;
    bool mine = vsr_u128_eq(rp->client, s->id) && s->cur.msg && s->cur.sent_gen != 0 &&
                rp->request == s->cur.request &&
                (s->cur.is_register ? rp->operation == VSR_OP_REGISTER && rp->commit > 0
                                    : rp->operation == s->cur.operation);
    uint32_t view = rp->view;
    uint8_t from = rp->replica;
    if (!mine) {
      s->st.late_replies++;
    } else {
      if (from == s->view % s->n || view > s->view) s->attempt = 0;
      sess_complete(c, 0, msg);
      if (s->ended || c->deleting) return;
    }
    sess_learn_view(c, view, from);
    sess_pump(c);
    return;
  }
  case VSR_CMD_PONG_CLIENT:
    s->st.pongs++;
    sess_learn_view(c, h->view, h->replica);
    return;
  case VSR_CMD_EVICTION: {
    const struct vsr_eviction_header *ev = (const struct vsr_eviction_header *)msg->data;
    if (!vsr_u128_eq(ev->client, s->id)) {
      s->st.late_replies++;
      return;
    }
    if (ev->view > s->view) s->view = ev->view;
    s->evict_reason = ev->reason;
    VSRI_WARN("VSR-CLIENT", "replica %u evicted the session (reason %u)", h->replica,
              (unsigned)ev->reason);
    sess_end(c, VSR_EEVICTED);
    return;
  }
  default:
    if (c->cb.on_message) {
      c->in_cb++;
      c->cb.on_message(c->user, c, msg);
      c->in_cb--;
    } else if (vsri_client_inbox_push(c, msg) < 0 && c->conn) c->tops->close(c->conn, VSR_ENOMEM, false);
    return;
  }
}

static void sess_tick_cb(struct vsri_io *io, struct vsri_completion *cc, int32_t res) {
  (void)io;
  (void)res;
  struct vsr_client *c = cc->ctx;
  struct client_sess *s = c->s;
  if (c->deleting || s->ended) return;
  uint64_t now = client_now(c);
  if (now < s->tick_due) { /* canceled for an earlier or a later due time: re-arm */
    vsri_io_timeout(c->loop->io, &s->tick, s->tick_due - now, sess_tick_cb, c);
    return;
  }
  uint64_t next = UINT64_MAX;
#define SESS_NEXT(t) do { if ((t) < next) next = (t); } while (0)
  /* Deadlines: the request in flight, then those waiting (submitted later: later deadlines). */
  if (s->cur.msg && now >= s->cur.deadline) {
    if (s->cur.is_register) {
      sess_end(c, VSR_ETIMEDOUT);
      return;
    }
    sess_complete(c, VSR_ETIMEDOUT, NULL);
  }
  while (!s->cur.msg && s->pend_len > 0 && now >= sess_pend_at(s, 0)->deadline) {
    s->cur = *sess_pend_at(s, 0);
    s->pend_head = (s->pend_head + 1) % s->pend_cap;
    s->pend_len--;
    sess_complete(c, VSR_ETIMEDOUT, NULL);
  }
  if (s->ended || c->deleting) return;
  sess_pump(c);
  if (s->cur.msg) SESS_NEXT(s->cur.deadline);
  else if (s->pend_len > 0) SESS_NEXT(sess_pend_at(s, 0)->deadline);
  if (c->conn && s->up) {
    if (s->cur.msg && s->cur.sent_gen == s->gen) {
      if (now - s->cur.sent_at >= s->request_timeout) {
        if (s->n > 1) {
          VSRI_DEBUG("VSR-CLIENT", "request %llu: no Reply from replica %u within the request "
                     "timeout; resending to replica %u", (unsigned long long)s->cur.request,
                     s->target, (s->target + 1) % s->n);
          sess_switch(c, s->target + 1, true);
          goto rearm;
        }
        s->cur.sent_gen = 0; /* one replica: the same request again on this connection */
        s->st.resends++;
        sess_pump(c);
      }
      SESS_NEXT(s->cur.sent_at + s->request_timeout);
    }
    if (s->liveness) {
      if (now - s->last_rx >= s->liveness) {
        s->st.liveness_drops++;
        VSRI_INFO("VSR-CLIENT", "replica %u (%s): nothing heard for %llu ms (liveness "
                  "timeout); trying replica %u", s->target, s->addrs[s->target],
                  (unsigned long long)((now - s->last_rx) / 1000000), (s->target + 1) % s->n);
        sess_switch(c, s->target + 1, true);
        goto rearm;
      }
      SESS_NEXT(s->last_rx + s->liveness);
    }
    if (s->hb) {
      if (now >= s->next_ping) {
        sess_ping(c);
        s->next_ping = now + s->hb;
      }
      SESS_NEXT(s->next_ping);
    }
  } else if (c->conn) {
    uint64_t wait = s->liveness ? s->liveness : s->request_timeout;
    if (now - s->conn_started >= wait) {
      s->st.liveness_drops++;
      sess_switch(c, s->target + 1, true);
      goto rearm;
    }
    SESS_NEXT(s->conn_started + wait);
  } else if (s->reconnect_at) {
    if (now >= s->reconnect_at) {
      sess_connect(c); /* arms its own wait; the deadlines are re-armed below */
    }
    SESS_NEXT(s->reconnect_at);
  }
rearm:
#undef SESS_NEXT
  if (s->reconnect_at && s->reconnect_at < next) next = s->reconnect_at;
  if (next != UINT64_MAX && !s->ended) sess_arm(c, next);
}

void vsri_client_sess_free(struct vsr_client *c) {
  struct client_sess *s = c->s;
  if (s->cur.msg) vsr_msg_unref(s->cur.msg);
  for (uint32_t i = 0; i < s->pend_len; i++) vsr_msg_unref(sess_pend_at(s, i)->msg);
  if (s->wait_reply) vsr_msg_unref(s->wait_reply);
  for (uint32_t i = 0; i < s->n; i++) vsri_free(s->addrs[i]);
  vsri_free(s->addrs);
  vsri_free(s->pend);
  vsri_free(s->reg_body);
  vsri_free(s);
  c->s = NULL;
}

static char *sess_strdup(const char *t) {
  size_t n = strlen(t) + 1;
  char *d = vsri_malloc(n);
  if (d) memcpy(d, t, n);
  return d;
}

static int sess_new(struct vsr_client *c, const struct vsr_client_options *o) {
  struct client_sess *s = vsri_calloc(1, sizeof *s);
  if (!s) return VSR_ENOMEM;
  c->s = s;
  s->n = o->addr_count && o->addrs ? o->addr_count : 1;
  s->addrs = vsri_calloc(s->n, sizeof *s->addrs);
  s->pend_cap = o->max_pending ? o->max_pending : 64;
  s->pend = vsri_calloc(s->pend_cap, sizeof *s->pend);
  if (!s->addrs || !s->pend) return VSR_ENOMEM;
  for (uint32_t i = 0; i < s->n; i++) {
    const char *a = o->addr_count && o->addrs ? o->addrs[i] : o->addr;
    if (!a) return VSR_EADDR;
    if (!(s->addrs[i] = sess_strdup(a))) return VSR_ENOMEM;
  }
  if (o->register_body_len) {
    if (!o->register_body) return VSR_EINVAL;
    if (!(s->reg_body = vsri_malloc(o->register_body_len))) return VSR_ENOMEM;
    memcpy(s->reg_body, o->register_body, o->register_body_len);
    s->reg_body_len = o->register_body_len;
  }
  s->cluster = o->cluster;
  s->id = o->client_id;
  while (vsr_u128_is_zero(s->id)) s->id = (vsr_u128){vsri_random_u64(), vsri_random_u64()};
  s->request_timeout = o->request_timeout_ns ? o->request_timeout_ns : 1000000000ull;
  s->request_deadline = o->request_deadline_ns ? o->request_deadline_ns : 30000000000ull;
  s->rc_min = o->reconnect_min_ns ? o->reconnect_min_ns : 50000000ull;
  s->rc_max = o->reconnect_max_ns >= s->rc_min ? o->reconnect_max_ns : s->rc_min;
  s->hb = o->heartbeat_period_ns;
  s->liveness = o->liveness_timeout_ns;
  s->st.replica = s->target = 0;
  /* The Register goes first: the request in flight until its Reply names the session. */
  struct vsr_msg *m = vsr_client_msg_new(c, VSR_HEADER_SIZE + s->reg_body_len);
  if (!m) return VSR_ENOMEM;
  struct vsr_request_header *rq = (struct vsr_request_header *)m->data;
  rq->command = VSR_CMD_REQUEST;
  rq->cluster = s->cluster;
  rq->client = s->id;
  rq->operation = VSR_OP_REGISTER;
  if (s->reg_body_len) memcpy(m->data + VSR_HEADER_SIZE, s->reg_body, s->reg_body_len);
  s->cur = (struct client_req){.msg = m, .is_register = true, .operation = VSR_OP_REGISTER,
                               .deadline = client_now(c) + s->request_deadline};
  return 0;
}

int vsr_client_request(struct vsr_client *c, struct vsr_msg *req, uint8_t operation,
                       vsr_client_reply_fn fn, void *arg) {
  struct client_sess *s = c->s;
  if (!s || !req || req->size < VSR_HEADER_SIZE || req->size > c->max_message_size ||
      operation == VSR_OP_RESERVED || operation == VSR_OP_REGISTER) {
    return VSR_EINVAL;
  }
  if (c->deleting) return VSR_ESHUTDOWN;
  if (s->ended) return s->ended;
  if (sess_pend_full(s)) return VSR_EBACKPRESSURE;
  uint64_t deadline = client_now(c) + s->request_deadline;
  *sess_pend_at(s, s->pend_len) = (struct client_req){
      .msg = vsr_msg_ref(req), .fn = fn, .arg = arg, .deadline = deadline, .operation = operation};
  s->pend_len++;
  s->st.requests++;
  sess_pump(c);
  sess_arm(c, deadline);
  return 0;
}

static void sess_wait_fn(void *arg, struct vsr_client *c, int status, struct vsr_msg *reply) {
  (void)arg;
  struct client_sess *s = c->s;
  s->wait_done = true;
  s->wait_status = status;
  s->wait_reply = reply ? vsr_msg_ref(reply) : NULL;
}

static bool sess_wait_over(const struct vsr_client *c) { return c->s->wait_done; }
bool vsri_client_sess_registered(const struct vsr_client *c) {
  return c->s->session != 0 || c->s->ended < 0;
}


int vsr_client_request_wait(struct vsr_client *c, struct vsr_msg *req, uint8_t operation,
                            struct vsr_msg **reply) {
  if (!c->s || !c->owns_loop || !reply) return VSR_EINVAL;
  struct client_sess *s = c->s;
  s->wait_done = false;
  s->wait_reply = NULL;
  int err = vsr_client_request(c, req, operation, sess_wait_fn, NULL);
  if (err) return err;
  /* The deadline completes the request; the margin only bounds a stuck loop. */
  err = vsri_client_wait(c, sess_wait_over, s->request_deadline + 1000000000ull);
  if (err) return err;
  *reply = s->wait_reply;
  s->wait_reply = NULL;
  return s->wait_status;
}

uint64_t vsr_client_session(const struct vsr_client *c) { return c->s ? c->s->session : 0; }
uint32_t vsr_client_view(const struct vsr_client *c) { return c->s ? c->s->view : 0; }
int vsr_client_eviction_reason(const struct vsr_client *c) {
  return c->s ? c->s->evict_reason : 0;
}

void vsr_client_stats(const struct vsr_client *c, struct vsr_client_stats *out) {
  memset(out, 0, sizeof *out);
  if (!c->s) return;
  *out = c->s->st;
  out->view = c->s->view;
  out->replica = c->s->target;
}

int vsr_client_new(struct vsr_client **out, struct vsr_loop *loop,
                   const struct vsr_client_options *o, const struct vsr_client_callbacks *cb,
                   void *user) {
  struct vsr_client_options def;
  if (!o) {
    vsr_client_options_default(&def);
    o = &def;
  }
  const char *tname = o->transport ? o->transport : "tcp";
  const struct vsri_bus_transport *t = vsri_bus_transport_find(tname);
  if (!t) {
    VSRI_ERROR("VSR-CLIENT", "transport '%s' is not available", tname);
    return VSR_EINVAL;
  }
  uint32_t cap = vsri_pow2_at_least(o->queue_capacity ? o->queue_capacity : 4096);
  struct vsr_client *c = vsri_calloc(1, sizeof *c + cap * sizeof(struct vsr_msg *));
  if (!c) return VSR_ENOMEM;
  c->loop = loop;
  c->t = t;
  c->tops = t->ops;
  vsri_sendq_init(&c->q, (struct vsr_msg **)(c + 1), cap);
  if (cb) c->cb = *cb;
  c->user = user;
  c->max_message_size = o->max_message_size ? o->max_message_size : 64u << 20;
  c->tctx = (struct vsri_transport_ctx){
      .io = loop->io,
      .pool = loop->pool,
      .max_message_size = c->max_message_size,
      .max_batch = o->max_batch ? o->max_batch : 256,
      .decode_flags = VSRI_DECODE_VERIFY_BODY,
      .tcp_keepalive_ns = o->tcp_keepalive_ns,
      .tcp_user_timeout_ns = o->tcp_user_timeout_ns,
  };
  int err = t->client_config_new ? t->client_config_new(o, &c->tls_config) : 0;
  c->tctx.tls = c->tls_config;
  if (!err && o->session) err = sess_new(c, o);
  const char *addr = c->s ? c->s->addrs[0] : o->addr;
  if (!err) err = c->tops->connect(&c->conn, &c->tctx, addr, &vsri_client_events, c, &c->q);
  if (err) {
    if (c->s) vsri_client_sess_free(c);
    if (c->tls_config) t->client_config_free(c->tls_config);
    vsri_free(c);
    return err;
  }
  if (c->s) {
    c->s->gen = 1;
    c->s->conn_started = client_now(c);
    sess_arm(c, c->s->conn_started + (c->s->liveness ? c->s->liveness : c->s->request_timeout));
    sess_arm(c, c->s->cur.deadline);
  }
  *out = c;
  return 0;
}

void vsr_client_del(struct vsr_client *c) {
  if (!c) return;
  if (c->in_cb) {
    /* The transport upcall below the callback still uses the connection and the client. */
    VSRI_ERROR("VSR-MISUSE", "vsr_client_del called from inside one of this client's "
               "callbacks: refused, nothing freed; delete it after the loop turn returns");
    return;
  }
  if (c->s && !c->deleting) {
    /* Pending requests complete (VSR_ECANCELED) while the client is still whole. */
    c->s->ended = c->s->ended ? c->s->ended : VSR_ESHUTDOWN;
    if (c->s->cur.msg) sess_complete(c, VSR_ECANCELED, NULL);
    while (c->s->pend_len > 0) {
      c->s->cur = *sess_pend_at(c->s, 0);
      c->s->pend_head = (c->s->pend_head + 1) % c->s->pend_cap;
      c->s->pend_len--;
      sess_complete(c, VSR_ECANCELED, NULL);
    }
  }
  c->deleting = true;
  if (c->s) vsri_io_timeout_drop(c->loop->io, &c->s->tick); /* gone at once, never runs */
  /* Closed now, no upcall, no loop turn (QUIC: CONNECTION_CLOSE goes out first); memory the
   * kernel may still touch is the io layer's to free (io.h, "Letting go"). */
  if (c->conn) c->tops->abort(c->conn, VSR_ECLOSED);
  c->conn = NULL;
  vsri_client_free(c); /* an owned loop goes too: its deletion waits for the kernel */
}

int vsr_client_state(const struct vsr_client *c) { return c->state; }

int vsr_client_send(struct vsr_client *c, struct vsr_msg *msg) {
  if (c->state < 0 || c->deleting || (c->s && c->s->ended)) return VSR_ENOTCONN;
  if (msg->size < VSR_HEADER_SIZE || msg->size > c->max_message_size) return VSR_EINVAL;
  if (!vsri_sendq_push(&c->q, msg)) return VSR_EBACKPRESSURE;
  vsr_msg_ref(msg);
  c->frames_queued++;
  if (c->conn) c->tops->kick(c->conn); /* session mode, reconnecting: goes out with the next */
  return 0;
}

void vsri_client_counts(const struct vsr_client *c, struct vsri_client_counts *out) {
  *out = (struct vsri_client_counts){.frames_queued = c->frames_queued,
                                     .frames_out = c->frames_out,
                                     .bytes_out = c->bytes_out,
                                     .frames_dropped = c->frames_dropped,
                                     .queue_depth = vsri_sendq_len(&c->q)};
}

uint32_t vsr_client_queued(const struct vsr_client *c) { return vsri_sendq_len(&c->q); }

struct vsr_loop *vsr_client_loop(struct vsr_client *c) { return c->loop; }

struct vsr_msg *vsr_client_msg_new(struct vsr_client *c, uint32_t size) {
  return vsri_frame_new(c->loop->pool, c->max_message_size, size);
}

