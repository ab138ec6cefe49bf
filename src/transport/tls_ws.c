/* TLS, WS and WSS transports: see tls_ws.h; the files and structs are listed in tls_ws_impl.h.
 *
 * The connection is a stream of the stream-socket core (stream.h): the core owns the socket,
 * its reads and writes, the drain deadline and the close; this file adds the layer's hooks
 * (setting up TLS and the WebSocket reader, the Close frame of a closing WebSocket, what is
 * reported and freed at the end), establishing (the handshake and the upgrade done), dialing,
 * the listener (connections in their handshake are the listener's) and the ops.
 *
 * Reading (tls_ws_read.c): the loop's pooled receive buffer goes through the layers in turn:
 * TLS (decrypt), then the HTTP upgrade or the WebSocket reader, then the frame decoder. A
 * WebSocket message must carry exactly one whole frame: the frame is held until its message
 * ends and refused if the message holds less or more.
 *
 * Writing (tls_ws_write.c): queued frames are "units" (a WebSocket header, empty for plain
 * TLS, then the frame). Plain WS on the server writes them zero-copy (header and frame as
 * separate iovecs, many units per sendmsg). TLS packs up to VSRI_TLS_SEND_MAX bytes of units
 * into full records per call; a WS client masks its units into a pool buffer first (RFC 6455
 * requires masking). Control output (the 101, the page, an HTTP refusal, Pong, Close) goes out
 * between units, never inside one.
 *
 * Closing is the core's: a graceful close stops delivering, keeps reading and dropping, writes
 * the queue out, then the WebSocket Close frame and TLS close_notify, then FIN, and closes the
 * socket once the peer has closed (or drain_timeout passed). */
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include <gnutls/crypto.h>

#include "crypto/cert.h"
#include "transport/tls_ws_impl.h"
#include "util/alloc.h"
#include "util/log.h"
#include "vsrbus/error.h"

const char *const vsri_tw_names[] = {"tls", "ws", "wss"};

static const struct vsri_transport_ops *const tw_ops[] = {
    &vsri_transport_tls, &vsri_transport_ws, &vsri_transport_wss};

/* A WS client needs no TLS settings: these bound its upgrade. */
static const struct vsri_tlsws_config tw_default_cfg = {
    .grace_ns = TW_GRACE_NS,
    .max_handshakes = TW_MAX_HANDSHAKES,
};

/* ---- layer hooks ----------------------------------------------------------------------- */

/* Sets up the layers of a connection whose socket is connected. Returns 0 or an error. */
static int tw_layers(struct tw_conn *c) {
  int err = 0;
  if (c->tls_on) {
    err = c->s.server ? vsri_tls_server_init(&c->tls, &c->cfg->srv, c->s.ctx->pool, c->s.name)
                      : vsri_tls_client_init(&c->tls, &c->cfg->cli, c->s.ctx->pool, c->s.name);
    if (err) {
      VSRI_ERROR("VSR-TLS", "%s %s: %s", c->s.name, tw_name(c), c->tls.why);
      return err;
    }
    if (!c->s.server && c->cfg->name_from_addr) { /* "10.0.0.2:7000" -> "10.0.0.2" */
      char *colon = strrchr(c->host, ':');
      if (colon) *colon = '\0';
      char *h = c->host;
      if (h[0] == '[') {
        h++;
        char *end = strchr(h, ']');
        if (end) *end = '\0';
      }
      c->tls.verify_name = h;
    }
  }
  if (c->ws_on) {
    c->http = vsri_malloc(sizeof *c->http);
    if (!c->http) return VSR_ENOMEM;
    if (c->s.server) vsri_ws_http_init_request(c->http);
    err = vsri_ws_reader_init(&c->ws, c->s.server, c->s.ctx->max_message_size);
    c->ws.raw = true; /* payloads are unmasked straight into the frame (tls_ws_read.c) */
  }
  return err;
}

/* Dialer: connected; the handshake (and the upgrade) starts, bounded by handshake_grace. */
static int tw_on_connect(struct vsri_stream *s) {
  struct tw_conn *c = tw_of(s);
  int err = tw_layers(c);
  if (err) return err;
  s->state = VSRI_SS_HANDSHAKE;
  vsri_stream_grace(s, c->cfg->grace_ns);
  if (c->tls_on) {
    vsri_tls_handshake(&c->tls); /* the ClientHello */
    vsri_io_defer(s->ctx->io, &s->flush);
  } else {
    vsri_tw_client_ready(c);
  }
  return 0;
}

static void tw_on_close(struct vsri_stream *s, int reason, bool drain, bool live) {
  struct tw_conn *c = tw_of(s);
  if (drain && live && c->ws_on && c->phase == TWP_FRAMES && !c->ws_close_due) {
    /* Every WebSocket close says so: going away at shutdown, normal otherwise. */
    c->ws_close_due = true;
    c->close_code = reason == VSR_ESHUTDOWN ? VSRI_WS_GOING_AWAY : VSRI_WS_NORMAL;
    c->close_why = reason == VSR_ESHUTDOWN || reason == VSR_ECLOSED ? NULL : vsr_errname(reason);
  }
}

static const char *tw_stage(const struct vsri_stream *s) {
  const struct tw_conn *c = vsri_container_of(s, const struct tw_conn, s);
  return c->phase == TWP_TLS ? "TLS handshake" : "WebSocket upgrade";
}

static void tw_leave_listener(struct tw_conn *c) {
  if (!c->l) return;
  vsri_list_remove(&c->link);
  c->l->npending--;
  c->l = NULL;
}

static bool tw_on_closed(struct vsri_stream *s, bool aborted) {
  struct tw_conn *c = tw_of(s);
  tw_leave_listener(c);
  if (aborted) return false;
  uint32_t lost = c->tk_frames + c->wb_frames;
  if (lost && s->ev && s->ev->on_dropped) {
    s->ev->on_dropped(s->owner, &s->base, lost, c->tk_bytes + c->wb_bytes, s->reason);
  }
  return s->reported || !s->server; /* a connection never reported has nobody to tell */
}

static void tw_on_free(struct vsri_stream *s) {
  struct tw_conn *c = tw_of(s);
  vsr_msg_unref(c->held);
  vsr_msg_unref(c->wbuf);
  if (c->tls_on) vsri_tls_free(&c->tls);
  vsri_ws_reader_free(&c->ws);
  vsri_free(c->http);
  vsri_free(c->hdr);
}

static void tw_on_frame_error(struct vsri_stream *s, int err) {
  vsri_tw_ws_violation(tw_of(s), err == VSR_EFRAME_LARGE ? VSRI_WS_TOO_BIG : VSRI_WS_PROTOCOL,
                       vsr_errname(err), err);
}

/* TLS alone delivers frames as they complete; WebSocket holds each until its message ends. */
#define TW_LAYER(ON_FRAME)                                                                    \
  {                                                                                           \
    .on_connect = tw_on_connect, .on_bytes_in = vsri_tw_bytes_in, .on_frame = ON_FRAME,       \
    .on_frame_error = tw_on_frame_error, .produce_out = vsri_tw_produce_out,                  \
    .on_written = vsri_tw_written, .on_close = tw_on_close, .stage = tw_stage,                \
    .on_closed = tw_on_closed, .on_free = tw_on_free,                                         \
  }
static const struct vsri_stream_layer tw_layer_tls = TW_LAYER(NULL);
static const struct vsri_stream_layer tw_layer_ws = TW_LAYER(vsri_tw_on_frame);

/* A protocol violation on a WebSocket: Close with |code| after what is queued, then close. */
void vsri_tw_ws_violation(struct tw_conn *c, uint16_t code, const char *why, int reason) {
  if (c->phase == TWP_FRAMES && !c->ws_close_sent) {
    c->ws_close_due = true;
    c->close_code = code;
    c->close_why = why;
  }
  vsri_stream_close(&c->s, reason, true);
}

/* ---- established ----------------------------------------------------------------------- */

/* The TLS handshake and the upgrade are done: report the connection. */
void vsri_tw_established(struct tw_conn *c) {
  c->phase = TWP_FRAMES;
  vsri_stream_reported(&c->s);
  if (c->tls_on) {
    char d[64];
    VSRI_DEBUG("VSR-TLS", "%s %s: handshake done (%s)", c->s.name, tw_name(c),
               vsri_tls_describe(&c->tls, d, sizeof d));
  }
  if (c->s.server) {
    struct tw_listener *l = c->l;
    tw_leave_listener(c);
    l->sl.on_accept(l->sl.owner, &c->s.base);
    return;
  }
  if (c->s.ev->on_connected) c->s.ev->on_connected(c->s.owner, &c->s.base, 0);
  if (c->s.state == VSRI_SS_OPEN && c->s.q && vsri_sendq_len(c->s.q)) vsri_tw_want_write(c);
}

/* Client: the TLS layer (if any) is up; start the upgrade or report. */
void vsri_tw_client_ready(struct tw_conn *c) {
  if (!c->ws_on) {
    vsri_tw_established(c);
    return;
  }
  c->phase = TWP_HTTP;
  char req[256];
  size_t n = vsri_ws_http_request(c->host, c->key, req, sizeof req);
  vsri_ws_http_init_response(c->http, c->key);
  vsri_tw_ctl_add(c, req, n);
  vsri_tw_want_write(c);
}

/* ---- connections ----------------------------------------------------------------------- */

static void tw_init(struct tw_conn *c, uint8_t kind, bool server) {
  c->cfg = c->s.ctx->tls ? c->s.ctx->tls : &tw_default_cfg;
  c->kind = kind;
  c->s.server = server;
  c->tls_on = kind != TW_WS;
  c->ws_on = kind != TW_TLS;
  c->phase = c->tls_on ? TWP_TLS : TWP_HTTP;
  uint32_t max = c->s.ctx->max_batch ? c->s.ctx->max_batch : 256;
  c->batch = max > IOV_MAX / 2 ? IOV_MAX / 2 : max;
}

static const struct vsri_stream_layer *tw_layer(uint8_t kind) {
  return kind == TW_TLS ? &tw_layer_tls : &tw_layer_ws;
}

static int tw_connect(uint8_t kind, struct vsri_conn **out, const struct vsri_transport_ctx *ctx,
                      const char *addr, const struct vsri_conn_events *ev, void *owner,
                      struct vsri_sendq *q) {
  const struct vsri_tlsws_config *cfg = ctx->tls;
  if (kind != TW_WS && (!cfg || !cfg->can_dial)) return VSR_ECONFIG;
  struct vsri_stream *s = NULL;
  int err = vsri_stream_dial(&s, sizeof(struct tw_conn), tw_ops[kind], tw_layer(kind),
                             vsri_tw_names[kind], ctx, addr, ev, owner, q);
  if (err) return err;
  struct tw_conn *c = tw_of(s); /* the connect completes later: set up the rest now */
  tw_init(c, kind, false);
  snprintf(c->host, sizeof c->host, "%s", addr);
  uint32_t seed = 0;
  gnutls_rnd(GNUTLS_RND_NONCE, &seed, sizeof seed);
  c->rng = seed | 1;
  *out = &s->base;
  return 0;
}

static int tw_connect_tls(struct vsri_conn **out, const struct vsri_transport_ctx *ctx,
                          const char *addr, const struct vsri_conn_events *ev, void *owner,
                          struct vsri_sendq *q) {
  return tw_connect(TW_TLS, out, ctx, addr, ev, owner, q);
}
static int tw_connect_ws(struct vsri_conn **out, const struct vsri_transport_ctx *ctx,
                         const char *addr, const struct vsri_conn_events *ev, void *owner,
                         struct vsri_sendq *q) {
  return tw_connect(TW_WS, out, ctx, addr, ev, owner, q);
}
static int tw_connect_wss(struct vsri_conn **out, const struct vsri_transport_ctx *ctx,
                          const char *addr, const struct vsri_conn_events *ev, void *owner,
                          struct vsri_sendq *q) {
  return tw_connect(TW_WSS, out, ctx, addr, ev, owner, q);
}

static int tw_tls_exporter(struct vsri_conn *b, const char *label, uint8_t out[32]) {
  struct tw_conn *c = tw_of(vsri_stream_of(b));
  if (!c->tls_on || !c->tls.done) return 0;
  return vsri_tls_exporter(&c->tls, label, out, 32) == 0 ? 1 : 0;
}

/* ---- listener -------------------------------------------------------------------------- */

static void tw_accepted(struct vsri_stream_listener *sl, int fd) {
  struct tw_listener *l = vsri_container_of(sl, struct tw_listener, sl);
  struct vsri_io *io = sl->ctx->io;
  if (l->npending >= l->cfg->max_handshakes) {
    if (l->refused++ % 1024 == 0) {
      VSRI_WARN("VSR-ACCEPT", "%s %s: %u connections in their handshake (the cap); new ones "
                "are closed at once (%llu so far)", sl->name, sl->proto, l->npending,
                (unsigned long long)l->refused);
    }
    vsri_io_close_now(io, fd);
    return;
  }
  struct vsri_stream *s = vsri_stream_new(sizeof(struct tw_conn), tw_ops[l->kind],
                                          tw_layer(l->kind), sl->proto, sl->ctx, fd);
  if (!s) {
    VSRI_WARN("VSR-ACCEPT", "%s %s: no memory for a connection; refused", sl->name, sl->proto);
    vsri_io_close_now(io, fd);
    return;
  }
  struct tw_conn *c = tw_of(s);
  tw_init(c, l->kind, true);
  vsri_format_addr((struct sockaddr *)&sl->peer, s->name, sizeof s->name);
  c->l = l;
  vsri_list_push_back(&l->pending, &c->link);
  l->npending++;
  s->state = VSRI_SS_HANDSHAKE;
  if (tw_layers(c) != 0) {
    vsri_stream_fail(s, VSR_ENOMEM);
    return;
  }
  vsri_stream_grace(s, c->cfg->grace_ns);
  vsri_stream_read(s);
}

/* Synchronous: connections still in their handshake are the listener's, aborted now. */
static void tw_listener_closing(struct vsri_stream_listener *sl) {
  struct tw_listener *l = vsri_container_of(sl, struct tw_listener, sl);
  struct vsri_list_node *n, *tmp;
  vsri_list_for_each_safe(n, tmp, &l->pending) {
    vsri_stream_abort(&vsri_container_of(n, struct tw_conn, link)->s, VSR_ESHUTDOWN);
  }
}

static int tw_listen(uint8_t kind, struct vsri_listener **out,
                     const struct vsri_transport_ctx *ctx, const char *addr,
                     void (*on_accept)(void *owner, struct vsri_conn *conn), void *owner) {
  const struct vsri_tlsws_config *cfg = ctx->tls;
  if (!cfg || !cfg->server || (kind != TW_WS && !cfg->cert)) {
    VSRI_ERROR("VSR-LISTEN", "%s: no server settings", vsri_tw_names[kind]);
    return VSR_ECONFIG;
  }
  struct vsri_stream_listener *sl = NULL;
  int err = vsri_stream_listen(&sl, sizeof(struct tw_listener), tw_ops[kind],
                               vsri_tw_names[kind], ctx, addr, tw_accepted, on_accept, owner);
  if (err) return err;
  struct tw_listener *l = vsri_container_of(sl, struct tw_listener, sl);
  l->cfg = cfg;
  l->kind = kind;
  vsri_list_init(&l->pending);
  sl->on_close = tw_listener_closing;
  if (kind == TW_WS) {
    VSRI_INFO("VSR-WS", "%s ws: listening (WebSocket; the page on http://%s/)", sl->name,
              sl->name);
  } else {
    char fp[VSRI_FINGERPRINT_TEXT_LEN];
    vsri_fingerprint_format(cfg->cert->sha256, fp);
    char what[128] = "TLS 1.3";
    if (kind == TW_WSS) {
      snprintf(what, sizeof what, "TLS 1.3 + WebSocket; the page on https://%s/", sl->name);
    }
    VSRI_INFO("VSR-TLS", "%s %s: listening (%s); %s certificate SHA-256 %s", sl->name,
              sl->proto, what, cfg->cert->generated ? "self-signed localhost" : "server", fp);
  }
  if (cfg->srv.verify_client && kind != TW_WS) {
    VSRI_INFO("VSR-TLS", "%s %s: clients must present a certificate signed by %s", sl->name,
              sl->proto, cfg->client_ca);
  }
  vsri_stream_listener_start(sl);
  *out = &sl->base;
  return 0;
}

static int tw_listen_tls(struct vsri_listener **out, const struct vsri_transport_ctx *ctx,
                         const char *addr, void (*on_accept)(void *, struct vsri_conn *),
                         void *owner) {
  return tw_listen(TW_TLS, out, ctx, addr, on_accept, owner);
}
static int tw_listen_ws(struct vsri_listener **out, const struct vsri_transport_ctx *ctx,
                        const char *addr, void (*on_accept)(void *, struct vsri_conn *),
                        void *owner) {
  return tw_listen(TW_WS, out, ctx, addr, on_accept, owner);
}
static int tw_listen_wss(struct vsri_listener **out, const struct vsri_transport_ctx *ctx,
                         const char *addr, void (*on_accept)(void *, struct vsri_conn *),
                         void *owner) {
  return tw_listen(TW_WSS, out, ctx, addr, on_accept, owner);
}

#define TW_OPS(NAME, SUFFIX)                                                                  \
  {                                                                                           \
    .name = NAME, .listen = tw_listen_##SUFFIX, .listener_addr = vsri_stream_op_listener_addr, \
    .listener_close = vsri_stream_op_listener_close, .connect = tw_connect_##SUFFIX,          \
    .start = vsri_stream_op_start, .kick = vsri_stream_op_kick, .close = vsri_stream_op_close, \
    .abort = vsri_stream_op_abort, .peer_name = vsri_stream_op_peer_name,                     \
    .set_frame_limit = vsri_stream_op_set_frame_limit, .rx_clock = vsri_stream_op_rx_clock,   \
    .tls_exporter = tw_tls_exporter,                                                          \
  }

const struct vsri_transport_ops vsri_transport_tls = TW_OPS("tls", tls);
const struct vsri_transport_ops vsri_transport_ws = TW_OPS("ws", ws);
const struct vsri_transport_ops vsri_transport_wss = TW_OPS("wss", wss);
