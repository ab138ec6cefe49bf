/* Client SDK: one connection to a node over a transport, a bounded send queue, and an inbox for
 * blocking use. Async clients run on the caller's loop; blocking calls run a private loop. */
#include "bus/client_impl.h"

void vsr_client_options_default(struct vsr_client_options *o) {
  memset(o, 0, sizeof *o);
  o->transport = "tcp";
  o->addr = "127.0.0.1:8090";
  o->max_message_size = 64u << 20;
  o->queue_capacity = 4096;
  /* Larger than the bus's reference default (256): one vectored write of up to IOV_MAX small
   * frames costs the same syscall and moves more (+40 % at 1 KiB frames on loopback). */
  o->max_batch = 1024;
  for (int t = 0; t < VSRI_BUS_TRANSPORTS; t++) { /* each transport's own options (o->quic) */
    if (vsri_bus_transports[t].client_options_default) {
      vsri_bus_transports[t].client_options_default(o);
    }
  }
  o->max_pending = 64;
  o->request_timeout_ns = 1000000000ull;
  o->request_deadline_ns = 30000000000ull;
  o->reconnect_min_ns = 50000000ull;
  o->reconnect_max_ns = 2000000000ull;
  o->heartbeat_period_ns = 1000000000ull;
  o->liveness_timeout_ns = 5000000000ull;
  o->tcp_keepalive_ns = 15000000000ull;
  o->tcp_user_timeout_ns = 30000000000ull;
}


int vsri_client_inbox_push(struct vsr_client *c, struct vsr_msg *m) {
  struct vsri_ring *r = &c->inbox_ring;
  if (vsri_ring_full(r)) {
    uint32_t cap = vsri_ring_cap(r) ? vsri_ring_cap(r) * 2 : 64;
    struct vsr_msg **slots = vsri_malloc(cap * sizeof *slots);
    if (!slots) return VSR_ENOMEM;
    for (uint32_t i = 0; i < vsri_ring_len(r); i++) slots[i] = c->inbox[vsri_ring_at(r, i)];
    vsri_free(c->inbox);
    c->inbox = slots;
    vsri_ring_rebase(r, cap);
  }
  c->inbox[vsri_ring_push(r)] = vsr_msg_ref(m);
  return 0;
}

/* Takes the oldest received frame; the inbox must not be empty. */
static struct vsr_msg *client_inbox_pop(struct vsr_client *c) {
  return c->inbox[vsri_ring_pop(&c->inbox_ring)];
}

static void client_on_frame(void *owner, struct vsri_conn *conn, struct vsr_msg *msg) {
  struct vsr_client *c = owner;
  if (c->deleting) return;
  if (c->s) {
    vsri_client_sess_on_frame(c, msg); /* passes on what it does not consume */
    return;
  }
  if (c->cb.on_message) {
    c->in_cb++;
    c->cb.on_message(c->user, c, msg);
    c->in_cb--;
    return;
  }
  if (vsri_client_inbox_push(c, msg) < 0) c->tops->close(conn, VSR_ENOMEM, false);
}

static void client_on_connected(void *owner, struct vsri_conn *conn, int status) {
  (void)conn;
  struct vsr_client *c = owner;
  if (status < 0) return; /* on_closed follows with the reason */
  c->state = 1;
  if (c->s) {
    vsri_client_sess_on_connected(c);
    return;
  }
  if (c->cb.on_state && !c->deleting) {
    c->in_cb++;
    c->cb.on_state(c->user, c, 0);
    c->in_cb--;
  }
}

static void client_on_sent(void *owner, struct vsri_conn *conn, uint32_t frames,
                           uint64_t bytes) {
  (void)conn;
  struct vsr_client *c = owner;
  c->frames_out += frames;
  c->bytes_out += bytes;
}

static void client_on_dropped(void *owner, struct vsri_conn *conn, uint32_t frames,
                              uint64_t bytes, int reason) {
  (void)conn;
  (void)bytes;
  (void)reason;
  struct vsr_client *c = owner;
  c->frames_dropped += frames;
}

void vsri_client_free(struct vsr_client *c) {
  if (c->s) vsri_client_sess_free(c);
  c->frames_dropped += vsri_sendq_len(&c->q); /* never sent */
  while (vsri_sendq_len(&c->q) > 0) vsri_sendq_pop(&c->q);
  while (!vsri_ring_empty(&c->inbox_ring)) vsr_msg_unref(client_inbox_pop(c));
  vsri_free(c->inbox);
  if (c->owns_loop) vsr_loop_del(c->loop);
  if (c->tls_config) c->t->client_config_free(c->tls_config);
  vsri_free(c);
}

static void client_on_closed(void *owner, struct vsri_conn *conn, int reason) {
  (void)conn;
  struct vsr_client *c = owner;
  c->conn = NULL;
  if (c->s) {
    if (!c->deleting) vsri_client_sess_on_closed(c, reason); /* (vsr_client_del aborts: no upcall) */
    return;
  }
  c->state = reason < 0 ? reason : VSR_ECLOSED;
  if (c->deleting) return;
  if (c->cb.on_state) {
    c->in_cb++;
    c->cb.on_state(c->user, c, c->state);
    c->in_cb--;
  }
}

const struct vsri_conn_events vsri_client_events = {
    .on_frame = client_on_frame,
    .on_connected = client_on_connected,
    .on_sent = client_on_sent,
    .on_dropped = client_on_dropped,
    .on_closed = client_on_closed,
};

/* ---- blocking use ------------------------------------------------------------------------ */

/* Runs the client's loop until |done| holds or |timeout_ns| passes. */
int vsri_client_wait(struct vsr_client *c, bool (*done)(const struct vsr_client *),
                       uint64_t timeout_ns) {
  struct vsri_io *io = c->loop->io;
  uint64_t deadline = vsri_io_now_fresh(io) + timeout_ns;
  while (!done(c)) {
    uint64_t now = vsri_io_now_fresh(io);
    if (now >= deadline) return VSR_ETIMEDOUT;
    int r = vsri_io_run(io, (int64_t)(deadline - now));
    if (r < 0) return r;
  }
  return 0;
}

static bool client_settled(const struct vsr_client *c) { return c->state != 0; }
static bool client_flushed(const struct vsr_client *c) {
  return vsri_sendq_len(&c->q) == 0 || c->state < 0;
}
static bool client_has_mail(const struct vsr_client *c) {
  return !vsri_ring_empty(&c->inbox_ring) || c->state < 0;
}

int vsr_client_connect(struct vsr_client **out, const struct vsr_client_options *o,
                       uint64_t timeout_ns) {
  struct vsr_loop *loop;
  struct vsr_loop_options lo;
  vsr_loop_options_default(&lo);
  lo.pool.prealloc[0] = 64;
  lo.pool.prealloc[1] = 0;
  if (o && o->max_message_size > lo.pool.max_message_size) {
    lo.pool.max_message_size = o->max_message_size;
  }
  int err = vsr_loop_new(&loop, &lo);
  if (err) return err;
  struct vsr_client *c;
  err = vsr_client_new(&c, loop, o, NULL, NULL);
  if (err) {
    vsr_loop_del(loop);
    return err;
  }
  c->owns_loop = true;
  if (c->s) {
    err = vsri_client_wait(c, vsri_client_sess_registered, timeout_ns);
    if (err == 0 && c->s->ended < 0) err = c->s->ended;
  } else {
    err = vsri_client_wait(c, client_settled, timeout_ns);
    if (err == 0 && c->state < 0) err = c->state;
  }
  /* One more turn without waiting: what connecting left to send goes out now (QUIC: the
   * client's Finished, which completes the server's handshake), not at the next call. */
  if (err == 0) vsri_io_run(loop->io, 0);
  if (err) {
    vsr_client_del(c);
    return err;
  }
  *out = c;
  return 0;
}

int vsr_client_flush(struct vsr_client *c, uint64_t timeout_ns) {
  int err = vsri_client_wait(c, client_flushed, timeout_ns);
  if (err) return err;
  return vsri_sendq_len(&c->q) == 0 ? 0 : c->state;
}

int vsr_client_recv(struct vsr_client *c, struct vsr_msg **out, uint64_t timeout_ns) {
  int err = vsri_client_wait(c, client_has_mail, timeout_ns);
  if (err) return err;
  if (vsri_ring_empty(&c->inbox_ring)) return c->state;
  *out = client_inbox_pop(c);
  return 0;
}

int vsr_client_call(struct vsr_client *c, struct vsr_msg *req, struct vsr_msg **reply,
                    uint64_t timeout_ns) {
  int err = vsr_client_send(c, req);
  if (err) return err;
  return vsr_client_recv(c, reply, timeout_ns);
}
