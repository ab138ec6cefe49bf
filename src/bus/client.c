/* Client SDK: one connection to a node over a transport, a bounded send queue, and an inbox for
 * blocking use. Async clients run on the caller's loop; blocking calls run a private loop. */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "bus/bus_impl.h"
#include "frame/decode.h"
#include "util/alloc.h"
#include "util/log.h"
#include "util/ring.h"
#include "vsrbus/client.h"

struct vsr_client {
  struct vsr_loop *loop;
  bool owns_loop;
  bool deleting; /* vsr_client_del called */
  uint32_t in_cb; /* depth of user callbacks running (vsr_client_del refuses inside) */
  int state;     /* 0 connecting, 1 connected, < 0 closed with that reason */
  const struct vsri_bus_transport *t; /* its row in vsri_bus_transports */
  const struct vsri_transport_ops *tops;
  struct vsri_transport_ctx tctx;
  void *tls_config; /* transport settings owned by the client (its row's), or NULL */
  struct vsri_conn *conn;
  struct vsr_client_callbacks cb;
  void *user;
  /* Frames received for blocking use, oldest first: |inbox_ring| indexes |inbox|, which grows
   * by doubling (only while the caller lags). Zeroed until the first frame: full and empty. */
  struct vsr_msg **inbox;
  struct vsri_ring inbox_ring;
  uint32_t max_message_size;
  /* Send counters, moved only by the upcalls (the transport counts nothing). */
  uint64_t frames_queued, frames_out, bytes_out, frames_dropped;
  struct vsri_sendq q; /* slots follow the struct */
};

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
}

static int client_inbox_push(struct vsr_client *c, struct vsr_msg *m) {
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
  if (c->cb.on_message) {
    c->in_cb++;
    c->cb.on_message(c->user, c, msg);
    c->in_cb--;
    return;
  }
  if (client_inbox_push(c, msg) < 0) c->tops->close(conn, VSR_ENOMEM, false);
}

static void client_on_connected(void *owner, struct vsri_conn *conn, int status) {
  (void)conn;
  struct vsr_client *c = owner;
  if (status < 0) return; /* on_closed follows with the reason */
  c->state = 1;
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

static void client_free(struct vsr_client *c) {
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
  c->state = reason < 0 ? reason : VSR_ECLOSED;
  if (c->deleting) return;
  if (c->cb.on_state) {
    c->in_cb++;
    c->cb.on_state(c->user, c, c->state);
    c->in_cb--;
  }
}

static const struct vsri_conn_events client_events = {
    .on_frame = client_on_frame,
    .on_connected = client_on_connected,
    .on_sent = client_on_sent,
    .on_dropped = client_on_dropped,
    .on_closed = client_on_closed,
};

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
  };
  int err = t->client_config_new ? t->client_config_new(o, &c->tls_config) : 0;
  c->tctx.tls = c->tls_config;
  if (!err) err = c->tops->connect(&c->conn, &c->tctx, o->addr, &client_events, c, &c->q);
  if (err) {
    if (c->tls_config) t->client_config_free(c->tls_config);
    vsri_free(c);
    return err;
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
  c->deleting = true;
  /* Closed now, no upcall, no loop turn (QUIC: CONNECTION_CLOSE goes out first); memory the
   * kernel may still touch is the io layer's to free (io.h, "Letting go"). */
  if (c->conn) c->tops->abort(c->conn, VSR_ECLOSED);
  c->conn = NULL;
  client_free(c); /* an owned loop goes too: its deletion waits for the kernel */
}

int vsr_client_state(const struct vsr_client *c) { return c->state; }

int vsr_client_send(struct vsr_client *c, struct vsr_msg *msg) {
  if (c->state < 0 || c->deleting) return VSR_ENOTCONN;
  if (msg->size < VSR_HEADER_SIZE || msg->size > c->max_message_size) return VSR_EINVAL;
  if (!vsri_sendq_push(&c->q, msg)) return VSR_EBACKPRESSURE;
  vsr_msg_ref(msg);
  c->frames_queued++;
  c->tops->kick(c->conn);
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

/* ---- blocking use ------------------------------------------------------------------------ */

/* Runs the client's loop until |done| holds or |timeout_ns| passes. */
static int client_wait(struct vsr_client *c, bool (*done)(const struct vsr_client *),
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
  err = client_wait(c, client_settled, timeout_ns);
  if (err == 0 && c->state < 0) err = c->state;
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
  int err = client_wait(c, client_flushed, timeout_ns);
  if (err) return err;
  return vsri_sendq_len(&c->q) == 0 ? 0 : c->state;
}

int vsr_client_recv(struct vsr_client *c, struct vsr_msg **out, uint64_t timeout_ns) {
  int err = client_wait(c, client_has_mail, timeout_ns);
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
