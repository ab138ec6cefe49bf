/* TLS, WS and WSS transports: see tls_ws.h.
 *
 * Reading: the loop's pooled receive buffer goes through the layers in turn: TLS (decrypt),
 * then the HTTP upgrade or the WebSocket reader, then the frame decoder. A WebSocket message
 * must carry exactly one whole frame: the frame is held until its message ends and refused if
 * the message holds less or more.
 *
 * Writing: queued frames are "units" (a WebSocket header, empty for plain TLS, then the frame).
 * Plain WS on the server writes them zero-copy (header and frame as separate iovecs, many units
 * per sendmsg). TLS packs up to VSRI_TLS_SEND_MAX bytes of units into full records per call;
 * a WS client masks its units into a pool buffer first (RFC 6455 requires masking). Control
 * output (the 101, the page, an HTTP refusal, Pong, Close) goes out between units, never
 * inside one.
 *
 * Closing follows tcp.c: a graceful close stops delivering, keeps reading and dropping, writes
 * the queue out, then the WebSocket Close frame and TLS close_notify, then FIN, and closes the
 * socket once the peer has closed (or drain_timeout passed). */
#include "transport/tls_ws.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gnutls/crypto.h>

#include "crypto/cert.h"
#include "frame/decode.h"
#include "transport/tls_engine.h"
#include "transport/ws_proto.h"
#include "util/alloc.h"
#include "util/list.h"
#include "util/log.h"
#include "vsrbus/error.h"

#define TW_CTL_MAX 640u        /* control output: the longest is an HTTP refusal (~450 bytes) */
#define TW_GRACE_NS 10000000000ull
#define TW_MAX_HANDSHAKES 1024u

enum tw_kind { TW_TLS, TW_WS, TW_WSS };
enum tw_state { TW_CONNECTING, TW_HANDSHAKE, TW_OPEN, TW_CLOSING, TW_CLOSED };
enum tw_phase { TWP_TLS, TWP_HTTP, TWP_FRAMES };
enum tw_write { TWW_NONE, TWW_CTL, TWW_UNITS, TWW_BUF };

struct vsri_tlsws_config {
  bool server;      /* can listen: a certificate (or plain WS) */
  bool can_dial;    /* client settings present */
  bool name_from_addr; /* dialer: check the certificate against the dialed host */
  bool shared_cert; /* |cert| is the process's self-signed one (tw_shared) */
  struct vsri_cert *cert;
  struct vsri_tls_server srv;
  struct vsri_tls_client cli;
  gnutls_certificate_credentials_t client_cred;
  uint64_t grace_ns;
  uint32_t max_handshakes;
  char client_ca[256];
  char ca_file[256];
  char server_name[128];
};

struct tw_conn {
  struct vsri_conn base; /* first: the bus and the SDK hold this */
  const struct vsri_transport_ctx *ctx;
  const struct vsri_tlsws_config *cfg;
  const struct vsri_conn_events *ev;
  void *owner;
  struct vsri_sendq *q;
  struct tw_listener *l; /* server connections not yet reported: the owning listener */
  struct vsri_list_node link;
  int fd;
  uint8_t kind;  /* enum tw_kind */
  uint8_t state; /* enum tw_state */
  uint8_t phase; /* enum tw_phase */
  uint8_t wkind; /* enum tw_write: what the pending write carries */
  bool server, tls_on, ws_on;
  bool reading, writing, draining, started, discard, half_closed, peer_eof;
  bool reported;      /* on_accept / on_connected(0) done */
  bool ws_close_sent; /* our Close frame is queued */
  bool ws_close_due;  /* send a Close frame when the queue is out */
  bool tls_bye_sent;
  int reason;
  uint16_t close_code;
  const char *close_why; /* reason text of our Close frame (static or c->ws.why), or NULL */
  uint32_t head_off;  /* bytes of the oldest unit written (or encrypted / masked) */
  uint8_t head_mask[4]; /* client: mask key of a partly produced oldest unit */
  uint32_t rng;       /* client: mask keys */
  uint32_t msg_frames; /* frames completed in the current WebSocket message */
  uint64_t last_rx, frame_start;
  struct vsr_msg *held;  /* WS: the frame of the message in progress, until its end */
  struct vsr_msg *wbuf;  /* TLS ciphertext / masked bytes being written */
  uint32_t woff;
  /* Frames taken from the queue into TLS / masked output and not yet handed to the kernel:
   * tk_* since the last take, wb_* inside wbuf (reported sent when wbuf is written). */
  uint32_t tk_frames, wb_frames;
  uint64_t tk_bytes, wb_bytes;
  uint8_t ctl[TW_CTL_MAX];
  uint32_t ctl_len, ctl_off;
  const char *page;      /* page body still to write (after ctl), or NULL */
  size_t page_len;
  struct iovec *iov;     /* 2 * batch entries, allocated at the first write */
  uint8_t (*hdr)[VSRI_WS_HDR_MAX];
  uint32_t batch;
  struct vsri_tls tls;
  struct vsri_ws_http *http; /* during the upgrade only */
  struct vsri_ws_reader ws;
  struct vsri_completion rc, wc, cc, dc, hc;
  struct vsri_io_grave grave; /* abort: the block goes once the kernel let go of it */
  struct vsr_msg **inflight;  /* abort during a zero-copy write: the frames it reads */
  uint32_t inflight_n;
  struct vsri_deferred flush;
  struct vsri_decoder dec;
  char host[80];          /* client: Host header */
  char key[25];           /* client: Sec-WebSocket-Key */
  char name[64];
};

struct tw_listener {
  struct vsri_listener base;
  const struct vsri_transport_ctx *ctx;
  const struct vsri_tlsws_config *cfg;
  uint8_t kind;
  int fd;
  bool closing;
  void (*on_accept)(void *owner, struct vsri_conn *conn);
  void *owner;
  struct vsri_completion ac;
  struct vsri_completion backoff;
  struct sockaddr_storage peer;
  socklen_t peer_len;
  struct vsri_list pending; /* connections in their handshake */
  uint32_t npending;
  struct vsri_io_grave grave;
  uint64_t refused;         /* connections closed at once: too many handshakes */
  char name[64];
};

static const char *const tw_names[] = {"tls", "ws", "wss"};

/* A WS client needs no TLS settings: these bound its upgrade. */
static const struct vsri_tlsws_config tw_default_cfg = {
    .grace_ns = TW_GRACE_NS,
    .max_handshakes = TW_MAX_HANDSHAKES,
};

static void tw_read(struct tw_conn *c);
static void tw_flush(void *arg);
static void tw_teardown(struct tw_conn *c);
static void tw_close(struct tw_conn *c, int reason, bool drain);

static const char *tw_name(const struct tw_conn *c) { return tw_names[c->kind]; }

/* ---- settings -------------------------------------------------------------------------- */

/* The process's self-signed certificate: the TLS and WSS listeners of a node share it (one
 * SHA-256 to pin), generated at the first use and freed with the last. */
static struct {
  pthread_mutex_t lock;
  struct vsri_cert *cert;
  unsigned refs;
} tw_shared = {PTHREAD_MUTEX_INITIALIZER, NULL, 0};

static int tw_shared_get(struct vsri_cert **out) {
  pthread_mutex_lock(&tw_shared.lock);
  int err = 0;
  if (!tw_shared.cert) err = vsri_cert_generate(&tw_shared.cert, "localhost", 365);
  if (!err) {
    tw_shared.refs++;
    *out = tw_shared.cert;
  }
  pthread_mutex_unlock(&tw_shared.lock);
  return err;
}

static void tw_shared_put(void) {
  pthread_mutex_lock(&tw_shared.lock);
  if (tw_shared.refs && --tw_shared.refs == 0) {
    vsri_cert_free(tw_shared.cert);
    tw_shared.cert = NULL;
  }
  pthread_mutex_unlock(&tw_shared.lock);
}

static void tw_copy(char *dst, size_t cap, const char *src) {
  snprintf(dst, cap, "%s", src ? src : "");
}

int vsri_tlsws_server_config(struct vsri_tlsws_config **out,
                             const struct vsri_tlsws_server_options *o) {
  struct vsri_tlsws_config *c = vsri_calloc(1, sizeof *c);
  if (!c) return VSR_ENOMEM;
  c->server = true;
  c->grace_ns = o->handshake_grace_ns ? o->handshake_grace_ns : TW_GRACE_NS;
  c->max_handshakes = o->max_handshakes ? o->max_handshakes : TW_MAX_HANDSHAKES;
  if (o->plain) {
    *out = c;
    return 0;
  }
  int err;
  if (o->cert_file || o->key_file) {
    err = vsri_cert_load(&c->cert, o->cert_file, o->key_file);
  } else if (o->client_ca) { /* its own: the client CA is set on the credentials */
    err = vsri_cert_generate(&c->cert, "localhost", 365);
  } else {
    err = tw_shared_get(&c->cert);
    c->shared_cert = err == 0;
  }
  if (err) goto fail;
  if (gnutls_priority_init(&c->srv.prio, VSRI_TLS_PRIORITY, NULL) < 0) {
    c->srv.prio = NULL;
    err = VSR_ETLS;
    goto fail;
  }
  c->srv.cred = c->cert->cred;
  if (o->client_ca) {
    tw_copy(c->client_ca, sizeof c->client_ca, o->client_ca);
    int n = gnutls_certificate_set_x509_trust_file(c->cert->cred, o->client_ca,
                                                   GNUTLS_X509_FMT_PEM);
    if (n <= 0) {
      VSRI_ERROR("VSR-TLS", "%s: no usable CA certificate for client verification (%s)",
                 o->client_ca, n < 0 ? gnutls_strerror(n) : "empty");
      err = VSR_ECONFIG;
      goto fail;
    }
    c->srv.verify_client = true;
    c->srv.client_ca = c->client_ca;
  }
  static atomic_flag said = ATOMIC_FLAG_INIT; /* which TLS path runs: one line per process */
  if (!atomic_flag_test_and_set(&said)) {
    char why[200];
    vsri_tls_kernel_available(why, sizeof why);
    VSRI_INFO("VSR-TLS", "%s", why);
  }
  *out = c;
  return 0;
fail:
  vsri_tlsws_config_free(c);
  return err;
}

int vsri_tlsws_client_config(struct vsri_tlsws_config **out,
                             const struct vsri_tlsws_client_options *o) {
  if (!o->ca_file && !o->pin_sha256 && !o->insecure) {
    VSRI_ERROR("VSR-CONFIG", "tls client: give a CA file or a pinned SHA-256 of the server "
               "certificate (or insecure, for tests)");
    return VSR_ECONFIG;
  }
  struct vsri_tlsws_config *c = vsri_calloc(1, sizeof *c);
  if (!c) return VSR_ENOMEM;
  c->grace_ns = o->handshake_grace_ns ? o->handshake_grace_ns : TW_GRACE_NS;
  int err = VSR_ETLS;
  if (gnutls_certificate_allocate_credentials(&c->client_cred) < 0) goto fail;
  c->cli.cred = c->client_cred;
  if (o->pin_sha256) {
    if (vsri_fingerprint_parse(o->pin_sha256, c->cli.pin) != 0) {
      VSRI_ERROR("VSR-CONFIG", "tls client: pin \"%s\" is not 64 hex digits", o->pin_sha256);
      err = VSR_ECONFIG;
      goto fail;
    }
    c->cli.pinned = true;
  }
  if (o->ca_file) {
    tw_copy(c->ca_file, sizeof c->ca_file, o->ca_file);
    int n = gnutls_certificate_set_x509_trust_file(c->client_cred, o->ca_file,
                                                   GNUTLS_X509_FMT_PEM);
    if (n <= 0) {
      VSRI_ERROR("VSR-TLS", "%s: no usable CA certificate (%s)", o->ca_file,
                 n < 0 ? gnutls_strerror(n) : "empty");
      err = VSR_ECONFIG;
      goto fail;
    }
    c->cli.ca_file = c->ca_file;
  }
  if (o->cert_file && o->key_file &&
      gnutls_certificate_set_x509_key_file(c->client_cred, o->cert_file, o->key_file,
                                           GNUTLS_X509_FMT_PEM) < 0) {
    VSRI_ERROR("VSR-TLS", "%s / %s: cannot load the client certificate and key", o->cert_file,
               o->key_file);
    err = VSR_ECONFIG;
    goto fail;
  }
  tw_copy(c->server_name, sizeof c->server_name, o->server_name ? o->server_name : "localhost");
  c->cli.server_name = c->server_name;
  c->can_dial = true;
  *out = c;
  return 0;
fail:
  vsri_tlsws_config_free(c);
  return err;
}

int vsri_tlsws_replica_config(struct vsri_tlsws_config **out, const char *cert_file,
                              const char *key_file, const char *ca_file, uint64_t grace_ns) {
  struct vsri_tlsws_server_options so = {.cert_file = cert_file, .key_file = key_file,
                                         .handshake_grace_ns = grace_ns};
  struct vsri_tlsws_config *c = NULL;
  int err = vsri_tlsws_server_config(&c, &so);
  if (err) return err;
  c->srv.alpn = VSRI_REPLICA_ALPN;
  err = VSR_ETLS;
  if (gnutls_certificate_allocate_credentials(&c->client_cred) < 0) goto fail;
  c->cli.cred = c->client_cred;
  c->cli.alpn = VSRI_REPLICA_ALPN;
  if (ca_file) {
    tw_copy(c->ca_file, sizeof c->ca_file, ca_file);
    int n = gnutls_certificate_set_x509_trust_file(c->client_cred, ca_file, GNUTLS_X509_FMT_PEM);
    if (n <= 0) {
      VSRI_ERROR("VSR-TLS", "%s: no usable CA certificate for the replica plane (%s)", ca_file,
                 n < 0 ? gnutls_strerror(n) : "empty");
      err = VSR_ECONFIG;
      goto fail;
    }
    c->cli.ca_file = c->ca_file;
    c->name_from_addr = true;
  }
  tw_copy(c->server_name, sizeof c->server_name, "localhost");
  c->cli.server_name = c->server_name;
  c->can_dial = true;
  *out = c;
  return 0;
fail:
  vsri_tlsws_config_free(c);
  return err;
}

void vsri_tlsws_config_free(struct vsri_tlsws_config *c) {
  if (!c) return;
  if (c->srv.prio) gnutls_priority_deinit(c->srv.prio);
  if (c->client_cred) gnutls_certificate_free_credentials(c->client_cred);
  if (c->shared_cert) tw_shared_put();
  else vsri_cert_free(c->cert);
  vsri_free(c);
}

void vsri_tlsws_fingerprint(const struct vsri_tlsws_config *c, uint8_t out[32]) {
  if (c->cert) memcpy(out, c->cert->sha256, 32);
  else memset(out, 0, 32);
}

/* ---- connections ----------------------------------------------------------------------- */

static void tw_evicted(void *arg) {
  struct tw_conn *c = arg;
  char what[200];
  vsri_decoder_describe(&c->dec, VSR_EMEMORY_BUDGET, what, sizeof what);
  VSRI_WARN("VSR-MEMORY", "%s %s: %s (%s; %s); closing", c->name, tw_name(c),
            vsr_strerror(VSR_EMEMORY_BUDGET), vsr_errname(VSR_EMEMORY_BUDGET), what);
  tw_close(c, VSR_EMEMORY_BUDGET, false);
}

static struct tw_conn *tw_conn_new(const struct vsri_transport_ctx *ctx, uint8_t kind,
                                     bool server, int fd) {
  struct tw_conn *c = vsri_calloc(1, sizeof *c);
  if (!c) return NULL;
  static const struct vsri_transport_ops *const ops[] = {&vsri_transport_tls, &vsri_transport_ws,
                                                         &vsri_transport_wss};
  c->base.ops = ops[kind];
  c->ctx = ctx;
  c->cfg = ctx->tls ? ctx->tls : &tw_default_cfg;
  c->kind = kind;
  c->server = server;
  c->fd = fd;
  c->tls_on = kind != TW_WS;
  c->ws_on = kind != TW_TLS;
  c->phase = c->tls_on ? TWP_TLS : TWP_HTTP;
  c->flush.fn = tw_flush;
  c->flush.ctx = c;
  c->last_rx = vsri_io_now(ctx->io);
  uint32_t max = ctx->max_batch ? ctx->max_batch : 256;
  c->batch = max > IOV_MAX / 2 ? IOV_MAX / 2 : max;
  vsri_conn_decoder_init(&c->dec, ctx);
  vsri_decoder_set_evict(&c->dec, tw_evicted, c);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return c;
}

/* Sets up the layers of a connection whose socket is connected. Returns 0 or an error. */
static int tw_layers(struct tw_conn *c) {
  int err = 0;
  if (c->tls_on) {
    err = c->server ? vsri_tls_server_init(&c->tls, &c->cfg->srv, c->ctx->pool, c->name)
                    : vsri_tls_client_init(&c->tls, &c->cfg->cli, c->ctx->pool, c->name);
    if (err) {
      VSRI_ERROR("VSR-TLS", "%s %s: %s", c->name, tw_name(c), c->tls.why);
      return err;
    }
    if (!c->server && c->cfg->name_from_addr) { /* "10.0.0.2:7000" -> "10.0.0.2" */
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
    if (c->server) vsri_ws_http_init_request(c->http);
    err = vsri_ws_reader_init(&c->ws, c->server, c->ctx->max_message_size);
  }
  return err;
}

/* ---- closing --------------------------------------------------------------------------- */

static void tw_closed_cb(struct vsri_io *io, struct vsri_completion *cc, int32_t res) {
  (void)io;
  (void)res;
  struct tw_conn *c = cc->ctx;
  c->state = TW_CLOSED;
  vsri_decoder_free(&c->dec);
  vsr_msg_unref(c->held);
  vsr_msg_unref(c->wbuf);
  if (c->tls_on) vsri_tls_free(&c->tls);
  vsri_ws_reader_free(&c->ws);
  vsri_free(c->http);
  uint32_t lost = c->tk_frames + c->wb_frames;
  if (lost && c->ev && c->ev->on_dropped) {
    c->ev->on_dropped(c->owner, &c->base, lost, c->tk_bytes + c->wb_bytes, c->reason);
  }
  if (c->reported) {
    if (c->ev && c->ev->on_closed) c->ev->on_closed(c->owner, &c->base, c->reason);
  } else if (c->server && c->l) {
    vsri_list_remove(&c->link);
    c->l->npending--;
  } else if (!c->server && c->ev && c->ev->on_closed) {
    c->ev->on_closed(c->owner, &c->base, c->reason);
  }
  vsri_free(c->iov);
  vsri_free(c->hdr);
  vsri_free(c);
}

static void tw_finish(struct tw_conn *c) {
  if (c->state < TW_CLOSING) return; /* a timer canceled on an open connection */
  if (c->reading || c->writing || c->draining || c->cc.pending || c->state == TW_CLOSED) return;
  if (c->dc.pending) {
    vsri_io_cancel(c->ctx->io, &c->dc);
    return;
  }
  if (c->hc.pending) {
    vsri_io_cancel(c->ctx->io, &c->hc);
    return;
  }
  vsri_io_undefer(c->ctx->io, &c->flush);
  vsri_io_close(c->ctx->io, &c->cc, c->fd, tw_closed_cb, c);
}

static void tw_teardown(struct tw_conn *c) {
  c->draining = false;
  if (c->reading) vsri_io_cancel(c->ctx->io, &c->rc);
  if (c->writing) vsri_io_cancel(c->ctx->io, &c->wc);
  tw_finish(c);
}

static void tw_fail(struct tw_conn *c, int reason) {
  if (c->state < TW_CLOSING) {
    c->state = TW_CLOSING;
    c->reason = reason;
  }
  tw_teardown(c);
}

static void tw_drain_expired(struct vsri_io *io, struct vsri_completion *dc, int32_t res) {
  (void)io;
  struct tw_conn *c = dc->ctx;
  if (res == 0 && c->draining) {
    VSRI_DEBUG("VSR-DRAIN", "%s %s: drain deadline passed (%s); closing", c->name, tw_name(c),
               c->half_closed ? "the peer did not close" : "output still queued");
    tw_teardown(c);
    return;
  }
  tw_finish(c);
}

static void tw_drained(struct tw_conn *c) {
  if (!c->half_closed) {
    c->half_closed = true;
    shutdown(c->fd, SHUT_WR);
  }
  if (c->peer_eof) tw_teardown(c);
}

static void tw_close(struct tw_conn *c, int reason, bool drain) {
  if (c->state >= TW_CLOSING) {
    if (!drain && c->draining) tw_teardown(c);
    return;
  }
  bool live = c->state == TW_OPEN || c->state == TW_HANDSHAKE;
  c->state = TW_CLOSING;
  c->reason = reason;
  if (drain && live && c->ws_on && c->phase == TWP_FRAMES && !c->ws_close_due) {
    /* Every WebSocket close says so: going away at shutdown, normal otherwise. */
    c->ws_close_due = true;
    c->close_code = reason == VSR_ESHUTDOWN ? VSRI_WS_GOING_AWAY : VSRI_WS_NORMAL;
    c->close_why = reason == VSR_ESHUTDOWN || reason == VSR_ECLOSED ? NULL : vsr_errname(reason);
  }
  if (drain && live) {
    c->draining = true;
    c->discard = true;
    uint64_t ns = c->ctx->drain_timeout_ns ? c->ctx->drain_timeout_ns : 2000000000ull;
    vsri_io_timeout(c->ctx->io, &c->dc, ns, tw_drain_expired, c);
    tw_read(c);
    if (!c->writing) vsri_io_defer(c->ctx->io, &c->flush);
    return;
  }
  tw_teardown(c);
}

/* Frees an aborted connection once the kernel has answered its canceled operations. */
static void tw_conn_free(void *arg) {
  struct tw_conn *c = arg;
  vsri_decoder_free(&c->dec);
  for (uint32_t i = 0; i < c->inflight_n; i++) vsr_msg_unref(c->inflight[i]);
  vsri_free(c->inflight);
  vsr_msg_unref(c->held);
  vsr_msg_unref(c->wbuf);
  if (c->tls_on) vsri_tls_free(&c->tls);
  vsri_ws_reader_free(&c->ws);
  vsri_free(c->http);
  vsri_free(c->iov);
  vsri_free(c->hdr);
  vsri_free(c);
}

/* The owner (or the listener) is going away: no upcall ever again, the fd closes now (io.h,
 * "Letting go"). A zero-copy write in flight keeps its frames referenced. */
static void tw_abort(struct tw_conn *c, int reason) {
  (void)reason;
  struct vsri_io *io = c->ctx->io;
  if (c->writing && c->wkind == TWW_UNITS && c->q) {
    uint32_t len = vsri_sendq_len(c->q), n = len < c->batch ? len : c->batch;
    c->inflight = n ? vsri_malloc(n * sizeof *c->inflight) : NULL;
    for (uint32_t i = 0; c->inflight && i < n; i++) {
      c->inflight[c->inflight_n++] = vsr_msg_ref(vsri_sendq_peek(c->q, i));
    }
  }
  if (c->server && c->l) {
    vsri_list_remove(&c->link);
    c->l->npending--;
    c->l = NULL;
  }
  c->ev = NULL;
  c->owner = NULL;
  c->q = NULL;
  c->state = TW_CLOSED;
  c->draining = false;
  vsri_io_undefer(io, &c->flush);
  vsri_io_timeout_drop(io, &c->dc);
  vsri_io_timeout_drop(io, &c->hc);
  vsri_decoder_detach(&c->dec);
  int fd = c->cc.pending ? -1 : c->fd; /* a final close under way is waited for */
  struct vsri_completion *cs[] = {&c->rc, &c->wc, &c->cc};
  vsri_io_release(io, &c->grave, cs, sizeof cs / sizeof cs[0], tw_conn_free, c);
  vsri_io_close_now(io, fd);
}

/* A protocol violation on a WebSocket: Close with |code| after what is queued, then close. */
static void tw_ws_violation(struct tw_conn *c, uint16_t code, const char *why, int reason) {
  if (c->phase == TWP_FRAMES && !c->ws_close_sent) {
    c->ws_close_due = true;
    c->close_code = code;
    c->close_why = why;
  }
  tw_close(c, reason, true);
}

/* ---- control output -------------------------------------------------------------------- */

static uint32_t tw_rand(struct tw_conn *c) {
  uint32_t x = c->rng ? c->rng : 0x9e3779b9u;
  x ^= x << 13;
  x ^= x >> 17;
  x ^= x << 5;
  return c->rng = x;
}

static void tw_new_mask(struct tw_conn *c, uint8_t m[4]) {
  uint32_t r = tw_rand(c);
  memcpy(m, &r, 4);
}

static bool tw_ctl_add(struct tw_conn *c, const void *p, size_t n) {
  if (c->ctl_len + n > sizeof c->ctl) return false;
  memcpy(c->ctl + c->ctl_len, p, n);
  c->ctl_len += (uint32_t)n;
  return true;
}

/* Queues a control frame (masked on the client side). */
static void tw_ctl_frame(struct tw_conn *c, uint8_t opcode, const uint8_t *p, size_t n) {
  uint8_t f[VSRI_WS_HDR_MAX + 125], mask[4];
  if (n > 125) n = 125;
  if (!c->server) tw_new_mask(c, mask);
  size_t h = vsri_ws_header(f, opcode, n, c->server ? NULL : mask);
  memcpy(f + h, p, n);
  if (!c->server) vsri_ws_mask(f + h, n, mask, 0);
  if (!tw_ctl_add(c, f, h + n)) {
    VSRI_DEBUG("VSR-WS", "%s %s: control output full; %s frame dropped", c->name, tw_name(c),
               opcode == WSLAY_PONG ? "Pong" : "control");
  }
  if (!c->writing) vsri_io_defer(c->ctx->io, &c->flush);
}

static void tw_ctl_close(struct tw_conn *c, uint16_t code, const char *why) {
  uint8_t f[127];
  size_t n = vsri_ws_close_frame(f, code, why);
  c->ws_close_sent = true;
  tw_ctl_frame(c, WSLAY_CONNECTION_CLOSE, f + 2, n - 2);
}

/* ---- established ----------------------------------------------------------------------- */

/* The TLS handshake and the upgrade are done: report the connection. */
static void tw_established(struct tw_conn *c) {
  if (c->hc.pending) vsri_io_cancel(c->ctx->io, &c->hc);
  c->phase = TWP_FRAMES;
  c->reported = true;
  if (c->tls_on) {
    char d[64];
    VSRI_DEBUG("VSR-TLS", "%s %s: handshake done (%s)", c->name, tw_name(c),
               vsri_tls_describe(&c->tls, d, sizeof d));
  }
  if (c->server) {
    struct tw_listener *l = c->l;
    vsri_list_remove(&c->link);
    l->npending--;
    c->l = NULL;
    c->state = TW_OPEN;
    l->on_accept(l->owner, &c->base);
    return;
  }
  c->state = TW_OPEN;
  if (c->ev->on_connected) c->ev->on_connected(c->owner, &c->base, 0);
  if (c->state == TW_OPEN && c->q && vsri_sendq_len(c->q) && !c->writing) {
    vsri_io_defer(c->ctx->io, &c->flush);
  }
}

/* Client: the TLS layer (if any) is up; start the upgrade or report. */
static void tw_client_ready(struct tw_conn *c) {
  if (!c->ws_on) {
    tw_established(c);
    return;
  }
  c->phase = TWP_HTTP;
  char req[256];
  size_t n = vsri_ws_http_request(c->host, c->key, req, sizeof req);
  vsri_ws_http_init_response(c->http, c->key);
  tw_ctl_add(c, req, n);
  if (!c->writing) vsri_io_defer(c->ctx->io, &c->flush);
}

/* ---- reading --------------------------------------------------------------------------- */

static void tw_frame_error(struct tw_conn *c, int err) {
  char what[200];
  vsri_decoder_describe(&c->dec, err, what, sizeof what);
  bool mem = err == VSR_EMEMORY_BUDGET || err == VSR_EMEMORY_MAX || err == VSR_EPOOL;
  VSRI_WARN(mem ? "VSR-MEMORY" : "VSR-FRAME", "%s %s: %s (%s; %s); closing", c->name,
            tw_name(c), vsr_strerror(err), vsr_errname(err), what);
  tw_ws_violation(c, err == VSR_EFRAME_LARGE ? VSRI_WS_TOO_BIG : VSRI_WS_PROTOCOL,
                  vsr_errname(err), err);
}

/* Delivers a whole frame. Returns false if the connection started closing. */
static bool tw_deliver(struct tw_conn *c, struct vsr_msg *m) {
  if (c->started && c->state == TW_OPEN) c->ev->on_frame(c->owner, &c->base, m);
  vsr_msg_unref(m);
  return c->state == TW_OPEN;
}

/* Feeds frame bytes to the decoder. WS: a completed frame is held until its message ends. */
static bool tw_decode(struct tw_conn *c, const uint8_t *p, size_t n) {
  uint64_t now = vsri_io_now(c->ctx->io);
  while (n > 0) {
    size_t used = 0;
    struct vsr_msg *m = NULL;
    if (vsri_decoder_idle(&c->dec)) c->frame_start = now;
    int r = vsri_decoder_feed(&c->dec, p, n, &used, &m);
    p += used;
    n -= used;
    if (r < 0) {
      tw_frame_error(c, r);
      return false;
    }
    if (r == 0) break;
    if (!c->ws_on) {
      if (!tw_deliver(c, m)) return false;
      continue;
    }
    if (++c->msg_frames > 1 || c->held) {
      vsr_msg_unref(m);
      VSRI_WARN("VSR-WS", "%s %s: a WebSocket message carries more than one frame (each must "
                "carry exactly one); closing", c->name, tw_name(c));
      tw_ws_violation(c, VSRI_WS_TOO_BIG, "a message must carry exactly one frame", VSR_EPROTO);
      return false;
    }
    c->held = m;
  }
  return true;
}

static bool tw_ws_message_end(struct tw_conn *c) {
  struct vsr_msg *m = c->held;
  c->held = NULL;
  uint32_t have = 0, size = 0;
  vsri_decoder_progress(&c->dec, &have, &size);
  if (!m || have != 0) {
    vsr_msg_unref(m);
    VSRI_WARN("VSR-WS", "%s %s: a WebSocket message ended %s (each must carry exactly one "
              "whole frame); closing", c->name, tw_name(c),
              m ? "with bytes of a second frame" : have ? "inside a frame" : "without a frame");
    tw_ws_violation(c, VSRI_WS_TOO_BIG, "a message must carry exactly one frame", VSR_EPROTO);
    return false;
  }
  c->msg_frames = 0;
  return tw_deliver(c, m);
}

static bool tw_ws_frames(struct tw_conn *c, const uint8_t *p, size_t n) {
  vsri_ws_feed(&c->ws, p, n);
  for (;;) {
    struct vsri_ws_event ev;
    vsri_ws_next(&c->ws, &ev);
    switch (ev.kind) {
    case VSRI_WS_EV_NONE: return true;
    case VSRI_WS_EV_DATA:
      if (ev.first) c->msg_frames = 0;
      if (!tw_decode(c, ev.data, ev.len)) return false;
      break;
    case VSRI_WS_EV_END:
      if (!tw_ws_message_end(c)) return false;
      break;
    case VSRI_WS_EV_PING: tw_ctl_frame(c, WSLAY_PONG, ev.data, ev.len); break;
    case VSRI_WS_EV_PONG: break;
    case VSRI_WS_EV_CLOSE:
      VSRI_DEBUG("VSR-WS", "%s %s: peer sent Close (code %u); answering", c->name, tw_name(c),
                 ev.code);
      if (!c->ws_close_sent) {
        c->ws_close_due = true;
        c->close_code = ev.code && ev.code != 1005 ? ev.code : VSRI_WS_NORMAL;
      }
      tw_close(c, VSR_ECLOSED, true);
      return false;
    case VSRI_WS_EV_ERROR:
      VSRI_WARN("VSR-WS", "%s %s: %s (close code %u); closing", c->name, tw_name(c),
                c->ws.why, ev.code);
      tw_ws_violation(c, ev.code, c->ws.why,
                      ev.code == VSRI_WS_TOO_BIG ? VSR_EFRAME_LARGE : VSR_EPROTO);
      return false;
    }
  }
}

/* The server's HTTP phase. Returns false when the connection is done with these bytes. */
static bool tw_http_server(struct tw_conn *c, const uint8_t **p, size_t *n) {
  size_t used = 0;
  enum vsri_ws_verdict v = vsri_ws_http_feed(c->http, *p, *n, &used);
  *p += used;
  *n -= used;
  char buf[TW_CTL_MAX];
  size_t len;
  switch (v) {
  case VSRI_WS_MORE: return false;
  case VSRI_WS_UPGRADE:
    len = vsri_ws_http_101(c->http, buf, sizeof buf);
    tw_ctl_add(c, buf, len);
    vsri_free(c->http);
    c->http = NULL;
    tw_established(c);
    return c->state == TW_OPEN;
  case VSRI_WS_PAGE:
    VSRI_INFO("VSR-WS", "%s %s: GET / without Upgrade: serving the page", c->name, tw_name(c));
    len = vsri_ws_http_page_head(buf, sizeof buf);
    tw_ctl_add(c, buf, len);
    c->page = vsri_ws_page;
    c->page_len = vsri_ws_page_len;
    tw_close(c, VSR_ECLOSED, true);
    return false;
  default:
    VSRI_WARN("VSR-WS", "%s %s: request refused with HTTP %d: %s; closing", c->name, tw_name(c),
              c->http->status, c->http->why);
    len = vsri_ws_http_error(c->http, buf, sizeof buf);
    tw_ctl_add(c, buf, len);
    tw_close(c, VSR_EHANDSHAKE, true);
    return false;
  }
}

static bool tw_http_client(struct tw_conn *c, const uint8_t **p, size_t *n) {
  size_t used = 0;
  enum vsri_ws_verdict v = vsri_ws_http_feed(c->http, *p, *n, &used);
  *p += used;
  *n -= used;
  if (v == VSRI_WS_MORE) return false;
  if (v != VSRI_WS_ACCEPTED) {
    VSRI_WARN("VSR-WS", "%s %s: upgrade failed: %s", c->name, tw_name(c), c->http->why);
    if (c->ev->on_connected) c->ev->on_connected(c->owner, &c->base, VSR_EHANDSHAKE);
    tw_fail(c, VSR_EHANDSHAKE);
    return false;
  }
  vsri_free(c->http);
  c->http = NULL;
  tw_established(c);
  return c->state == TW_OPEN;
}

/* Plaintext bytes: the upgrade, WebSocket frames, or frames. Returns false once closing. */
static bool tw_plain(struct tw_conn *c, const uint8_t *p, size_t n) {
  if (c->phase == TWP_HTTP) {
    bool go = c->server ? tw_http_server(c, &p, &n) : tw_http_client(c, &p, &n);
    if (!go) return c->state == TW_HANDSHAKE || c->state == TW_CONNECTING;
    if (n == 0) return true;
  }
  return c->ws_on ? tw_ws_frames(c, p, n) : tw_decode(c, p, n);
}

static bool tw_tls_failed(struct tw_conn *c, int rv, const char *what) {
  VSRI_WARN("VSR-TLS", "%s %s: %s: %s; closing", c->name, tw_name(c), what, c->tls.why);
  if (!c->server && !c->reported && c->ev->on_connected) {
    c->ev->on_connected(c->owner, &c->base, rv);
  }
  tw_close(c, rv, true); /* the alert, if any, goes out */
  return false;
}

static _Thread_local uint8_t tw_plain_buf[VSRI_TLS_RECORD];

/* Ciphertext in: handshake, then decrypt and pass on. Returns false once closing. */
static bool tw_tls_input(struct tw_conn *c, const uint8_t *p, size_t n) {
  vsri_tls_feed(&c->tls, p, n);
  if (!c->tls.done) {
    int rv = vsri_tls_handshake(&c->tls);
    if (!c->writing) vsri_io_defer(c->ctx->io, &c->flush);
    if (rv == VSR_EAGAIN) return true;
    if (rv < 0) return tw_tls_failed(c, rv, "handshake failed");
    if (c->server) {
      if (!c->ws_on) tw_established(c);
      else c->phase = TWP_HTTP;
    } else {
      tw_client_ready(c);
    }
    if (c->state != TW_OPEN && c->state != TW_HANDSHAKE && c->state != TW_CONNECTING) {
      return false;
    }
  }
  for (;;) {
    uint8_t *dst = tw_plain_buf;
    size_t want = sizeof tw_plain_buf;
    bool direct = false;
    if (!c->ws_on && c->phase == TWP_FRAMES && !vsri_decoder_idle(&c->dec)) {
      int g = vsri_decoder_grow(&c->dec);
      if (g < 0) {
        tw_frame_error(c, g);
        return false;
      }
      uint8_t *d;
      size_t w = vsri_decoder_want(&c->dec, &d);
      if (w >= sizeof tw_plain_buf) { /* decrypt straight into the frame buffer */
        dst = d;
        want = w;
        direct = true;
      }
    }
    ssize_t got = vsri_tls_recv(&c->tls, dst, want);
    if (got == VSR_EAGAIN) return true;
    if (got == VSR_ECLOSED) {
      c->peer_eof = true;
      int reason = c->phase == TWP_FRAMES ? vsri_decoder_eof_reason(&c->dec) : VSR_ECLOSED;
      tw_close(c, reason, true);
      return false;
    }
    if (got < 0) return tw_tls_failed(c, (int)got, "record error");
    if (direct) {
      struct vsr_msg *m = NULL;
      int r = vsri_decoder_wrote(&c->dec, (size_t)got, &m);
      if (r < 0) {
        tw_frame_error(c, r);
        return false;
      }
      if (r == 1 && !tw_deliver(c, m)) return false;
      continue;
    }
    if (!tw_plain(c, dst, (size_t)got)) return false;
  }
}

static void tw_discard_done(struct tw_conn *c, int32_t res) {
  if (res == -ECANCELED || !c->draining) {
    tw_finish(c);
    return;
  }
  if (res > 0) {
    tw_read(c);
    return;
  }
  c->peer_eof = true;
  if (res < 0 || c->half_closed) tw_teardown(c);
}

static void tw_read_done(struct vsri_io *io, struct vsri_completion *rc, int32_t res) {
  struct tw_conn *c = rc->ctx;
  c->reading = false;
  if (c->discard) {
    tw_discard_done(c, res);
    return;
  }
  if (c->state != TW_OPEN && c->state != TW_HANDSHAKE) {
    tw_finish(c);
    return;
  }
  if (res <= 0) {
    int reason = res < 0 ? vsri_sock_reason(-res)
                 : c->phase == TWP_FRAMES ? vsri_decoder_eof_reason(&c->dec) : VSR_ECLOSED;
    if (c->phase != TWP_FRAMES) {
      VSRI_WARN("VSR-HANDSHAKE", "%s %s: peer closed during the %s; closing", c->name,
                tw_name(c), c->phase == TWP_TLS ? "TLS handshake" : "WebSocket upgrade");
      reason = VSR_EHANDSHAKE;
    } else if (reason == VSR_EEOF_HEADER || reason == VSR_EEOF_BODY) {
      VSRI_WARN("VSR-EOF", "%s %s: %s; closing", c->name, tw_name(c), vsr_strerror(reason));
    }
    c->peer_eof = true;
    if (!c->server && !c->reported && c->ev->on_connected) {
      c->ev->on_connected(c->owner, &c->base, reason);
    }
    tw_close(c, reason, res == 0 && c->reported);
    return;
  }
  c->last_rx = vsri_io_now(io);
  const uint8_t *p = rc->u.recv.buf;
  bool go = c->tls_on ? tw_tls_input(c, p, (size_t)res) : tw_plain(c, p, (size_t)res);
  if (go) tw_read(c);
}

static void tw_read(struct tw_conn *c) {
  if (c->reading) return;
  if (c->discard) {
    if (!c->draining || c->peer_eof) return;
  } else if (c->state != TW_OPEN && c->state != TW_HANDSHAKE) {
    return;
  } else if (c->state == TW_OPEN && !c->started) {
    return; /* reported, not started yet: start() reads */
  }
  c->reading = true;
  vsri_io_recv_pooled(c->ctx->io, &c->rc, c->fd, tw_read_done, c);
}

/* ---- writing --------------------------------------------------------------------------- */

static uint32_t tw_hlen(const struct tw_conn *c, uint32_t size) {
  if (!c->ws_on) return 0;
  return (size < 126 ? 2 : size < 65536 ? 4 : 10) + (c->server ? 0 : 4);
}

/* Consumes |k| bytes of units from the queue (written, encrypted or masked); *bytes gets the
 * sizes of the frames completed. Returns their count. */
static uint32_t tw_units_done(struct tw_conn *c, size_t k, uint64_t *bytes) {
  struct vsri_sendq *q = c->q;
  uint32_t frames = 0;
  *bytes = 0;
  while (k > 0 && vsri_sendq_len(q) > 0) {
    struct vsr_msg *m = vsri_sendq_peek(q, 0);
    size_t rest = tw_hlen(c, m->size) + m->size - c->head_off;
    if (k < rest) {
      c->head_off += (uint32_t)k;
      break;
    }
    k -= rest;
    c->head_off = 0;
    *bytes += vsri_sendq_pop(q);
    frames++;
  }
  return frames;
}

/* Builds iovecs for up to |budget| bytes of units. Returns the count; *bytes the total. */
static int tw_units_iov(struct tw_conn *c, size_t budget, size_t *bytes) {
  struct vsri_sendq *q = c->q;
  uint32_t n = vsri_sendq_len(q) < c->batch ? vsri_sendq_len(q) : c->batch;
  int k = 0;
  *bytes = 0;
  for (uint32_t i = 0; i < n && *bytes < budget; i++) {
    struct vsr_msg *m = vsri_sendq_peek(q, i);
    size_t skip = i == 0 ? c->head_off : 0, h = 0;
    if (c->ws_on) {
      uint8_t mask[4];
      if (!c->server) {
        if (i == 0 && c->head_off) memcpy(mask, c->head_mask, 4);
        else tw_new_mask(c, mask);
        if (i == 0) memcpy(c->head_mask, mask, 4);
      }
      h = vsri_ws_header(c->hdr[i], WSLAY_BINARY_FRAME, m->size, c->server ? NULL : mask);
      if (skip < h) {
        c->iov[k].iov_base = c->hdr[i] + skip;
        c->iov[k++].iov_len = h - skip;
        *bytes += h - skip;
        skip = 0;
      } else {
        skip -= h;
      }
    }
    c->iov[k].iov_base = m->data + skip;
    c->iov[k++].iov_len = m->size - skip;
    *bytes += m->size - skip;
  }
  return k;
}

/* Client WS: masks up to VSRI_TLS_SEND_MAX bytes of units into a pool buffer. */
static struct vsr_msg *tw_mask_units(struct tw_conn *c, size_t *taken) {
  size_t bytes;
  tw_units_iov(c, VSRI_TLS_SEND_MAX, &bytes); /* headers (with their mask keys) into c->hdr */
  if (bytes > VSRI_TLS_SEND_MAX) bytes = VSRI_TLS_SEND_MAX;
  struct vsr_msg *out = vsr_pool_get(c->ctx->pool, (uint32_t)bytes);
  if (!out) return NULL;
  size_t o = 0;
  /* Walk the units again to know each payload's mask and offset. */
  struct vsri_sendq *q = c->q;
  uint32_t head = c->head_off;
  for (uint32_t i = 0; o < bytes && i < vsri_sendq_len(q); i++) {
    struct vsr_msg *m = vsri_sendq_peek(q, i);
    size_t h = tw_hlen(c, m->size), start = i == 0 ? head : 0;
    const uint8_t *hdr = c->hdr[i];
    uint8_t mask[4];
    memcpy(mask, hdr + h - 4, 4);
    memcpy(c->head_mask, mask, 4); /* the last unit touched may stay partly produced */
    for (size_t pos = start; pos < h + m->size && o < bytes;) {
      if (pos < h) {
        size_t t = h - pos < bytes - o ? h - pos : bytes - o;
        memcpy(out->data + o, hdr + pos, t);
        o += t;
        pos += t;
        continue;
      }
      size_t t = h + m->size - pos < bytes - o ? h + m->size - pos : bytes - o;
      memcpy(out->data + o, m->data + (pos - h), t);
      vsri_ws_mask(out->data + o, t, mask, pos - h);
      o += t;
      pos += t;
    }
  }
  out->size = (uint32_t)o;
  *taken = o;
  return out;
}

static void tw_write_done(struct vsri_io *io, struct vsri_completion *wc, int32_t res);

static void tw_send_buf(struct tw_conn *c) {
  c->iov[0].iov_base = c->wbuf->data + c->woff;
  c->iov[0].iov_len = c->wbuf->size - c->woff;
  c->wkind = TWW_BUF;
  c->writing = true;
  vsri_io_sendv(c->ctx->io, &c->wc, c->fd, c->iov, 1, tw_write_done, c);
}

static bool tw_alloc_vectors(struct tw_conn *c) {
  if (c->iov) return true;
  c->iov = vsri_malloc(2 * c->batch * sizeof *c->iov);
  c->hdr = c->ws_on ? vsri_malloc(c->batch * sizeof *c->hdr) : NULL;
  if (c->iov && (c->hdr || !c->ws_on)) return true;
  VSRI_ERROR("VSR-NOMEM", "%s %s: no memory for the write vector; closing", c->name, tw_name(c));
  tw_fail(c, VSR_ENOMEM);
  return false;
}

/* Control bytes then page bytes, as iovecs. */
static int tw_ctl_iov(struct tw_conn *c) {
  int k = 0;
  if (c->ctl_off < c->ctl_len) {
    c->iov[k].iov_base = c->ctl + c->ctl_off;
    c->iov[k++].iov_len = c->ctl_len - c->ctl_off;
  }
  if (c->page && c->page_len) {
    c->iov[k].iov_base = (void *)c->page;
    c->iov[k++].iov_len = c->page_len;
  }
  return k;
}

static void tw_ctl_done(struct tw_conn *c, size_t k) {
  size_t t = c->ctl_len - c->ctl_off < k ? c->ctl_len - c->ctl_off : k;
  c->ctl_off += (uint32_t)t;
  k -= t;
  if (c->ctl_off == c->ctl_len) c->ctl_off = c->ctl_len = 0;
  if (c->page) {
    c->page += k;
    c->page_len -= k;
    if (c->page_len == 0) c->page = NULL;
  }
}

/* Everything queued is out: the closing sequence (Close frame, close_notify, FIN). */
static void tw_flush_idle(struct tw_conn *c) {
  if (!c->draining) {
    if (c->reported && c->ev && c->ev->on_drained) c->ev->on_drained(c->owner, &c->base);
    return;
  }
  if (c->ws_on && c->phase == TWP_FRAMES && c->ws_close_due && !c->ws_close_sent) {
    tw_ctl_close(c, c->close_code ? c->close_code : VSRI_WS_NORMAL, c->close_why);
    return;
  }
  if (c->tls_on && c->tls.done && !c->tls_bye_sent) {
    c->tls_bye_sent = true;
    vsri_tls_bye(&c->tls);
    vsri_io_defer(c->ctx->io, &c->flush);
    return;
  }
  tw_drained(c);
}

/* Units through a transform: TLS records, or masking for a WS client (then TLS for WSS). The
 * frames taken are counted in tk_* until their bytes are handed to the kernel. Returns 0 or -1
 * (no pool buffer, or a TLS error). */
static int tw_produce_units(struct tw_conn *c) {
  size_t taken = 0;
  if (c->ws_on && !c->server) {
    struct vsr_msg *mb = tw_mask_units(c, &taken);
    if (!mb) return -1;
    if (c->tls_on) {
      struct iovec v = {mb->data, mb->size};
      ssize_t t = vsri_tls_send(&c->tls, &v, 1, 0);
      vsr_msg_unref(mb);
      if (t < 0 || (size_t)t != taken) return -1;
    } else {
      c->wbuf = mb;
      c->woff = 0;
    }
  } else {
    size_t bytes;
    int k = tw_units_iov(c, VSRI_TLS_SEND_MAX, &bytes);
    ssize_t t = vsri_tls_send(&c->tls, c->iov, k, 0);
    if (t < 0) return -1;
    taken = (size_t)t;
  }
  uint64_t b;
  c->tk_frames += tw_units_done(c, taken, &b);
  c->tk_bytes += b;
  return 0;
}

static void tw_flush(void *arg) {
  struct tw_conn *c = arg;
  if (c->writing || c->state == TW_CLOSED || c->state == TW_CONNECTING) return;
  if (c->state == TW_CLOSING && !c->draining) return;
  if (!tw_alloc_vectors(c)) return;
  if (c->wbuf) {
    tw_send_buf(c);
    return;
  }
  bool ctl = c->head_off == 0 && (c->ctl_len || c->page);
  bool units = !ctl && c->phase == TWP_FRAMES && c->q && vsri_sendq_len(c->q) > 0 &&
               (c->started || !c->server) && (c->state == TW_OPEN || c->draining);
  if (ctl && !c->tls_on) {
    c->wkind = TWW_CTL;
    c->writing = true;
    vsri_io_sendv(c->ctx->io, &c->wc, c->fd, c->iov, tw_ctl_iov(c), tw_write_done, c);
    return;
  }
  if (ctl) {
    int k = tw_ctl_iov(c);
    ssize_t t = vsri_tls_send(&c->tls, c->iov, k, 0);
    if (t < 0) goto out_failed;
    tw_ctl_done(c, (size_t)t);
  } else if (units && !c->tls_on && c->server) {
    size_t bytes;
    c->wkind = TWW_UNITS;
    c->writing = true;
    vsri_io_sendv(c->ctx->io, &c->wc, c->fd, c->iov, tw_units_iov(c, SIZE_MAX, &bytes),
                  tw_write_done, c);
    return;
  } else if (units && tw_produce_units(c) < 0) {
    goto out_failed;
  }
  if (!c->wbuf && c->tls_on) {
    c->wbuf = vsri_tls_take_out(&c->tls);
    c->woff = 0;
  }
  if (c->wbuf) { /* the frames just produced travel in this buffer */
    c->wb_frames = c->tk_frames;
    c->wb_bytes = c->tk_bytes;
    c->tk_frames = 0;
    c->tk_bytes = 0;
    tw_send_buf(c);
    return;
  }
  if (c->ctl_len || c->page || (units && vsri_sendq_len(c->q))) {
    vsri_io_defer(c->ctx->io, &c->flush);
    return;
  }
  if (c->state == TW_HANDSHAKE) return;
  tw_flush_idle(c);
  return;
out_failed:
  VSRI_ERROR("VSR-TLS", "%s %s: cannot produce output: %s; closing", c->name, tw_name(c),
             c->tls_on && c->tls.why[0] ? c->tls.why : "no pool buffer");
  tw_fail(c, VSR_EPOOL);
}

static void tw_write_done(struct vsri_io *io, struct vsri_completion *wc, int32_t res) {
  (void)io;
  struct tw_conn *c = wc->ctx;
  c->writing = false;
  if (res < 0) {
    if (res != -ECANCELED) {
      int reason = vsri_sock_reason(-res);
      VSRI_WARN("VSR-WRITE", "%s %s: write: %s; closing", c->name, tw_name(c), strerror(-res));
      if (c->state == TW_CLOSING && c->reason == VSR_ECLOSED && reason == VSR_ERESET) {
        c->reason = VSR_ERESET;
      }
      tw_fail(c, reason == VSR_EIO ? VSR_EWRITE : reason);
    } else {
      tw_finish(c);
    }
    return;
  }
  uint32_t frames = 0;
  uint64_t bytes = 0;
  switch (c->wkind) {
  case TWW_BUF:
    c->woff += (uint32_t)res;
    if (c->woff == c->wbuf->size) {
      vsr_msg_unref(c->wbuf);
      c->wbuf = NULL;
      frames = c->wb_frames;
      bytes = c->wb_bytes;
      c->wb_frames = 0;
      c->wb_bytes = 0;
    }
    break;
  case TWW_CTL: tw_ctl_done(c, (size_t)res); break;
  case TWW_UNITS: frames = tw_units_done(c, (size_t)res, &bytes); break;
  default: break;
  }
  if (frames && c->ev && c->ev->on_sent) c->ev->on_sent(c->owner, &c->base, frames, bytes);
  c->wkind = TWW_NONE;
  if (c->state == TW_CLOSING && !c->draining) {
    tw_finish(c);
    return;
  }
  tw_flush(c);
}

static void tw_kick(struct tw_conn *c) {
  if (c->state == TW_OPEN && c->started && !c->writing) vsri_io_defer(c->ctx->io, &c->flush);
}

/* ---- handshake deadline ---------------------------------------------------------------- */

static void tw_grace_expired(struct vsri_io *io, struct vsri_completion *hc, int32_t res) {
  (void)io;
  struct tw_conn *c = hc->ctx;
  if (res == 0 && !c->reported && c->state < TW_CLOSING) {
    VSRI_WARN("VSR-HANDSHAKE", "%s %s: %s not finished within handshake_grace (%llu ms); "
              "closing", c->name, tw_name(c),
              c->phase == TWP_TLS ? "TLS handshake" : "WebSocket upgrade",
              (unsigned long long)(c->cfg->grace_ns / 1000000));
    if (!c->server && c->ev->on_connected) {
      c->ev->on_connected(c->owner, &c->base, VSR_EHANDSHAKE_TIMEOUT);
    }
    tw_fail(c, VSR_EHANDSHAKE_TIMEOUT);
    return;
  }
  tw_finish(c);
}

/* ---- ops ------------------------------------------------------------------------------- */

static void tw_start(struct tw_conn *c, const struct vsri_conn_events *ev, void *owner,
                     struct vsri_sendq *q) {
  c->ev = ev;
  c->owner = owner;
  c->q = q;
  c->started = true;
  if (c->state != TW_OPEN) return;
  tw_read(c);
  if (!c->writing) vsri_io_defer(c->ctx->io, &c->flush);
}

static void tw_connect_done(struct vsri_io *io, struct vsri_completion *rc, int32_t res) {
  struct tw_conn *c = rc->ctx;
  c->reading = false;
  if (c->state != TW_CONNECTING) {
    tw_finish(c);
    return;
  }
  int err = res < 0 ? vsri_sock_reason(-res) : tw_layers(c);
  if (err) {
    VSRI_DEBUG("VSR-CONNECT", "%s %s: connect: %s", c->name, tw_name(c),
               res < 0 ? strerror(-res) : vsr_strerror(err));
    if (c->ev->on_connected) c->ev->on_connected(c->owner, &c->base, err);
    tw_fail(c, err);
    return;
  }
  c->state = TW_HANDSHAKE;
  c->last_rx = vsri_io_now(io);
  vsri_io_timeout(io, &c->hc, c->cfg->grace_ns, tw_grace_expired, c);
  if (c->tls_on) {
    vsri_tls_handshake(&c->tls); /* the ClientHello */
    vsri_io_defer(io, &c->flush);
  } else {
    tw_client_ready(c);
  }
  tw_read(c);
}

static int tw_socket(int family) {
  return socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
}

static int tw_connect(uint8_t kind, struct vsri_conn **out, const struct vsri_transport_ctx *ctx,
                      const char *addr, const struct vsri_conn_events *ev, void *owner,
                      struct vsri_sendq *q) {
  const struct vsri_tlsws_config *cfg = ctx->tls;
  if (kind != TW_WS && (!cfg || !cfg->can_dial)) return VSR_ECONFIG;
  struct sockaddr_storage sa;
  socklen_t len;
  if (vsri_parse_addr(addr, &sa, &len) < 0) return VSR_EADDR;
  int fd = tw_socket(sa.ss_family);
  if (fd < 0) return errno == EMFILE || errno == ENFILE ? VSR_ELIMIT : VSR_EIO;
  struct tw_conn *c = tw_conn_new(ctx, kind, false, fd);
  if (!c) {
    close(fd);
    return VSR_ENOMEM;
  }
  vsri_format_addr((struct sockaddr *)&sa, c->name, sizeof c->name);
  tw_copy(c->host, sizeof c->host, addr);
  uint32_t seed = 0;
  gnutls_rnd(GNUTLS_RND_NONCE, &seed, sizeof seed);
  c->rng = seed | 1;
  c->state = TW_CONNECTING;
  c->ev = ev;
  c->owner = owner;
  c->q = q;
  c->started = true;
  c->reading = true;
  vsri_io_connect(ctx->io, &c->rc, fd, (struct sockaddr *)&sa, len, tw_connect_done, c);
  *out = &c->base;
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

static struct tw_conn *tw_of(struct vsri_conn *b) {
  return vsri_container_of(b, struct tw_conn, base);
}
static const struct tw_conn *tw_of_const(const struct vsri_conn *b) {
  return vsri_container_of(b, const struct tw_conn, base);
}
static struct tw_listener *tw_listener_of(struct vsri_listener *b) {
  return vsri_container_of(b, struct tw_listener, base);
}

static const char *tw_peer_name(const struct vsri_conn *b) { return tw_of_const(b)->name; }

static void tw_set_frame_limit(struct vsri_conn *b, uint32_t max_size, uint32_t allowance) {
  struct tw_conn *c = tw_of(b);
  vsri_decoder_set_max(&c->dec, max_size, false);
  vsri_decoder_set_budget(&c->dec, c->dec.budget, allowance, c->dec.conn_max);
}

static void tw_rx_clock(const struct vsri_conn *b, struct vsri_rx_clock *out) {
  const struct tw_conn *c = tw_of_const(b);
  vsri_decoder_progress(&c->dec, &out->frame_have, &out->frame_size);
  out->last_rx_ns = c->last_rx;
  out->frame_start_ns = out->frame_have ? c->frame_start : 0;
}

/* ---- listener -------------------------------------------------------------------------- */

static void tw_accept_next(struct tw_listener *l);

static void tw_listener_free(void *arg) { vsri_free(arg); }

static void tw_backoff_done(struct vsri_io *io, struct vsri_completion *t, int32_t res) {
  (void)io;
  (void)res;
  struct tw_listener *l = t->ctx;
  if (!l->closing) tw_accept_next(l);
}

static void tw_accepted(struct tw_listener *l, int fd) {
  if (l->npending >= l->cfg->max_handshakes) {
    if (l->refused++ % 1024 == 0) {
      VSRI_WARN("VSR-ACCEPT", "%s %s: %u connections in their handshake (the cap); new ones "
                "are closed at once (%llu so far)", l->name, tw_names[l->kind], l->npending,
                (unsigned long long)l->refused);
    }
    close(fd);
    return;
  }
  struct tw_conn *c = tw_conn_new(l->ctx, l->kind, true, fd);
  if (!c) {
    VSRI_WARN("VSR-ACCEPT", "%s %s: no memory for a connection; refused", l->name,
              tw_names[l->kind]);
    close(fd);
    return;
  }
  vsri_format_addr((struct sockaddr *)&l->peer, c->name, sizeof c->name);
  c->l = l;
  vsri_list_push_back(&l->pending, &c->link);
  l->npending++;
  c->state = TW_HANDSHAKE;
  if (tw_layers(c) != 0) {
    tw_fail(c, VSR_ENOMEM);
    return;
  }
  vsri_io_timeout(l->ctx->io, &c->hc, c->cfg->grace_ns, tw_grace_expired, c);
  tw_read(c);
}

static void tw_accept_done(struct vsri_io *io, struct vsri_completion *ac, int32_t res) {
  struct tw_listener *l = ac->ctx;
  if (l->closing) {
    if (res >= 0) close(res);
    return;
  }
  if (res < 0) {
    int err = -res;
    if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
      VSRI_WARN("VSR-ACCEPT", "%s %s: accept: %s; pausing accepts", l->name, tw_names[l->kind],
                strerror(err));
      vsri_io_timeout(io, &l->backoff, 100000000ull, tw_backoff_done, l);
      return;
    }
    if (err != ECONNABORTED && err != EINTR) {
      VSRI_WARN("VSR-ACCEPT", "%s %s: accept: %s", l->name, tw_names[l->kind], strerror(err));
    }
  } else {
    tw_accepted(l, res);
  }
  tw_accept_next(l);
}

static void tw_accept_next(struct tw_listener *l) {
  l->peer_len = sizeof l->peer;
  vsri_io_accept(l->ctx->io, &l->ac, l->fd, &l->peer, &l->peer_len, tw_accept_done, l);
}

static int tw_listen(uint8_t kind, struct vsri_listener **out,
                     const struct vsri_transport_ctx *ctx, const char *addr,
                     void (*on_accept)(void *owner, struct vsri_conn *conn), void *owner) {
  const struct vsri_tlsws_config *cfg = ctx->tls;
  if (!cfg || !cfg->server || (kind != TW_WS && !cfg->cert)) {
    VSRI_ERROR("VSR-LISTEN", "%s: no server settings", tw_names[kind]);
    return VSR_ECONFIG;
  }
  struct sockaddr_storage sa;
  socklen_t len;
  if (vsri_parse_addr(addr, &sa, &len) < 0) {
    VSRI_ERROR("VSR-LISTEN", "%s: cannot parse address '%s': %s", tw_names[kind], addr,
               vsri_parse_addr_why());
    return VSR_EADDR;
  }
  int fd = tw_socket(sa.ss_family), one = 1;
  if (fd < 0) return VSR_EIO;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(fd, (struct sockaddr *)&sa, len) < 0 || listen(fd, 4096) < 0) {
    int err = errno;
    VSRI_ERROR("VSR-LISTEN", "%s: cannot listen on %s: %s", tw_names[kind], addr,
               strerror(err));
    close(fd);
    return vsri_bind_reason(err);
  }
  struct tw_listener *l = vsri_calloc(1, sizeof *l);
  if (!l) {
    close(fd);
    return VSR_ENOMEM;
  }
  static const struct vsri_transport_ops *const ops[] = {&vsri_transport_tls, &vsri_transport_ws,
                                                         &vsri_transport_wss};
  l->base.ops = ops[kind];
  l->ctx = ctx;
  l->cfg = cfg;
  l->kind = kind;
  l->fd = fd;
  l->on_accept = on_accept;
  l->owner = owner;
  vsri_list_init(&l->pending);
  len = sizeof sa;
  getsockname(fd, (struct sockaddr *)&sa, &len);
  vsri_format_addr((struct sockaddr *)&sa, l->name, sizeof l->name);
  if (kind == TW_WS) {
    VSRI_INFO("VSR-WS", "%s ws: listening (WebSocket; the page on http://%s/)", l->name,
              l->name);
  } else {
    char fp[VSRI_FINGERPRINT_TEXT_LEN];
    vsri_fingerprint_format(cfg->cert->sha256, fp);
    char what[128] = "TLS 1.3";
    if (kind == TW_WSS) {
      snprintf(what, sizeof what, "TLS 1.3 + WebSocket; the page on https://%s/", l->name);
    }
    VSRI_INFO("VSR-TLS", "%s %s: listening (%s); %s certificate SHA-256 %s", l->name,
              tw_names[kind], what, cfg->cert->generated ? "self-signed localhost" : "server",
              fp);
  }
  if (cfg->srv.verify_client && kind != TW_WS) {
    VSRI_INFO("VSR-TLS", "%s %s: clients must present a certificate signed by %s", l->name,
              tw_names[kind], cfg->client_ca);
  }
  tw_accept_next(l);
  *out = &l->base;
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

static void tw_listener_addr(const struct vsri_listener *b, char *buf, size_t len) {
  snprintf(buf, len, "%s", vsri_container_of(b, const struct tw_listener, base)->name);
}

static void tw_listener_close(struct vsri_listener *b) {
  struct tw_listener *l = tw_listener_of(b);
  if (l->closing) return;
  l->closing = true;
  struct vsri_io *io = l->ctx->io;
  vsri_io_timeout_drop(io, &l->backoff);
  /* Synchronous: connections still in their handshake are the listener's, aborted now. */
  struct vsri_list_node *n, *tmp;
  vsri_list_for_each_safe(n, tmp, &l->pending) {
    tw_abort(vsri_container_of(n, struct tw_conn, link), VSR_ESHUTDOWN);
  }
  int fd = l->fd;
  struct vsri_completion *cs[] = {&l->ac};
  vsri_io_release(io, &l->grave, cs, 1, tw_listener_free, l);
  vsri_io_close_now(io, fd);
}

static int tw_tls_exporter(struct vsri_conn *b, const char *label, uint8_t out[32]) {
  struct tw_conn *c = tw_of(b);
  if (!c->tls_on || !c->tls.done) return 0;
  return vsri_tls_exporter(&c->tls, label, out, 32) == 0 ? 1 : 0;
}

/* The ops take the base; the functions above take struct tw_conn. */
static void tw_op_start(struct vsri_conn *b, const struct vsri_conn_events *ev, void *owner,
                        struct vsri_sendq *q) {
  tw_start(tw_of(b), ev, owner, q);
}
static void tw_op_kick(struct vsri_conn *b) { tw_kick(tw_of(b)); }
static void tw_op_close(struct vsri_conn *b, int reason, bool drain) {
  tw_close(tw_of(b), reason, drain);
}
static void tw_op_abort(struct vsri_conn *b, int reason) { tw_abort(tw_of(b), reason); }

#define TW_OPS(NAME, SUFFIX)                                                                  \
  {                                                                                           \
    .name = NAME, .listen = tw_listen_##SUFFIX, .listener_addr = tw_listener_addr,            \
    .listener_close = tw_listener_close, .connect = tw_connect_##SUFFIX,                      \
    .start = tw_op_start, .kick = tw_op_kick, .close = tw_op_close, .abort = tw_op_abort,      \
    .peer_name = tw_peer_name, .set_frame_limit = tw_set_frame_limit,                         \
    .rx_clock = tw_rx_clock, .tls_exporter = tw_tls_exporter,                                 \
  }

const struct vsri_transport_ops vsri_transport_tls = TW_OPS("tls", tls);
const struct vsri_transport_ops vsri_transport_ws = TW_OPS("ws", ws);
const struct vsri_transport_ops vsri_transport_wss = TW_OPS("wss", wss);
