/* QUIC transport: ngtcp2 0.12 + GnuTLS on the vsrbus loop (no thread, no second runtime).
 *
 * A UDP endpoint (q_ep) owns a socket: datagrams come in through a vsri_io_recvmsg completion
 * followed by a bounded drain of direct non-blocking receives (UDP_GRO batches are split into
 * packets), and go out as UDP GSO bursts sent at once with a non-blocking sendmsg; only a
 * burst the socket refuses (EAGAIN) is parked on a vsri_io_sendmsg completion. A listener is one
 * endpoint shared by many connections, found by connection ID; a dialed connection has its own.
 *
 * A connection carries frames on bidirectional streams: the seed's one long-lived stream, or
 * one stream per request (Iggy mainline's model), up to max_bidi_streams of them in flight at
 * once. Each stream has its own decoder. The owner's queue is one FIFO per connection: the
 * server routes each queued frame to a stream (a Reply to the stream that carried the Request
 * with the same `request` number, anything else first come first served) and finishes a
 * stream the peer finished once every frame it carried has its answer. Queued frames are
 * handed to ngtcp2 in place (no copy into a second buffer) and each keeps a reference until
 * ngtcp2 reports its bytes acknowledged (acked_stream_data_offset) or the stream closes:
 * ngtcp2 0.12 retransmits from our buffers.
 * Upcalls to the owner never come from ngtcp2 callbacks that could re-enter ngtcp2: the ops
 * only set flags and defer work; connections are freed from a deferred reaper. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <ngtcp2/ngtcp2_crypto_gnutls.h>
#include <xxhash.h>

#include "crypto/cert.h"
#include "frame/decode.h"
#include "transport/quic.h"
#include "util/alloc.h"
#include "util/log.h"
#include "vsrbus/error.h"

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif

#define Q_SCID_LEN 16
#define Q_BUF 65536           /* one GRO batch; the burst scratch buffer */
#define Q_BURST_BYTES 65000   /* GSO: total payload of one sendmsg stays under 64 KiB */
#define Q_MAX_BURST 64        /* GSO: datagrams per sendmsg (kernel UDP_MAX_SEGMENTS) */
#define Q_RX_DRAIN 64         /* direct receives per wake-up before other work runs */
#define Q_BURSTS_PER_WRITE 16 /* bursts one connection sends before yielding the loop */
#define Q_VEC 16              /* queued frames offered to ngtcp2 per write call */
#define Q_CIDS 16             /* connection IDs a server connection may own at once */
#define Q_MAX_STREAMS 1024    /* max_bidi_streams ceiling */
#define Q_SOCKBUF (8 << 20)
#define Q_PRIORITY                                                                           \
  "NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+AES-128-GCM:+AES-256-GCM:+CHACHA20-POLY1305:" \
  "+AES-128-CCM:%DISABLE_TLS13_COMPAT_MODE"

/* Burst scratch buffer: filled and sent synchronously, so one per thread is enough. */
static _Thread_local uint8_t q_txbuf[Q_BUF];

/* Connections and listeners not yet freed, across all loops (tests wait for 0). */
static atomic_uint q_live;

uint32_t vsri_quic_live(void) { return atomic_load_explicit(&q_live, memory_order_relaxed); }

/* Per-thread counters (one loop per thread): how well sends and receives are batched. */
static _Thread_local struct vsri_quic_stats q_stats;

void vsri_quic_stats(struct vsri_quic_stats *out) { *out = q_stats; }

/* ---- types ----------------------------------------------------------------------------- */

struct q_ep;
typedef void (*q_packet_fn)(struct q_ep *ep, const struct sockaddr *from, socklen_t fromlen,
                            const uint8_t *pkt, size_t len);

/* A UDP socket and its receive / send machinery. */
struct q_ep {
  struct vsri_io *io;
  int fd;
  bool gso, gro, connected;
  bool dead;  /* owner gone: close and free once no completion is pending */
  bool in_rx; /* inside the receive callback: do not free yet */
  struct sockaddr_storage local;
  socklen_t local_len;
  q_packet_fn on_packet;
  void (*on_error)(struct q_ep *ep, int err); /* receive/send errno worth reporting */
  void (*on_free)(struct q_ep *ep);
  void *owner;
  struct vsri_completion rx_c;
  struct msghdr rx_msg;
  struct iovec rx_iov;
  struct sockaddr_storage rx_from;
  _Alignas(size_t) uint8_t rx_ctl[CMSG_SPACE(sizeof(int)) * 4];
  uint8_t *rx_buf;
  /* A burst the socket refused, sent by a parked completion; connections wait behind it. */
  struct vsri_completion tx_c;
  struct msghdr tx_msg;
  struct iovec tx_iov;
  struct sockaddr_storage tx_to;
  _Alignas(size_t) uint8_t tx_ctl[CMSG_SPACE(sizeof(uint16_t))];
  uint8_t *tx_park;
  struct vsri_completion close_c;
  struct vsri_conn *wait_head, *wait_tail;
  void (*tx_hook)(void *user, const uint8_t *pkt, size_t len);
  void *tx_hook_user;
};

struct q_cident {
  struct vsri_conn *conn; /* NULL: empty slot */
  uint8_t len;
  uint8_t id[NGTCP2_MAX_CIDLEN];
};

/* Connection ID → connection; open addressing, keyed hash (client-chosen IDs are input). */
struct q_cidmap {
  struct q_cident *slots;
  uint32_t cap; /* power of two */
  uint32_t len;
  uint64_t seed;
};

/* Half-opens of one source (IPv4 address, IPv6 /64). */
#define Q_SRCKEY 9
struct q_src {
  uint8_t key[Q_SRCKEY]; /* family (4 / 6), then the address or the /64 prefix */
  uint32_t n;            /* 0: empty slot */
};

struct vsri_listener {
  const struct vsri_transport_ctx *ctx;
  struct vsri_quic_config cfg;
  struct q_ep ep;
  struct vsri_cert *own_cert;
  const struct vsri_cert *cert;
  void (*on_accept)(void *owner, struct vsri_conn *conn);
  void *owner;
  struct q_cidmap cids;
  struct vsri_conn *conns; /* every connection, live or closing */
  uint32_t nconns;
  uint32_t nhandshaking; /* not yet reported to the owner */
  uint8_t reset_secret[32];
  bool closing;
  char name[64];
  /* Handshake-flood admission: half-opens (server connections not yet reported) oldest first,
   * counted per source; Retry tokens sealed with |token_secret|. */
  struct vsri_conn *ho_head, *ho_tail;
  struct q_src *srcs; /* open addressing, 2x max_handshakes slots */
  uint32_t srcs_cap;
  uint8_t token_secret[32];
  gnutls_priority_t prio; /* parsed once: ~8 KiB and a string parse less per handshake */
  struct vsri_quic_admission adm;
};

enum q_state { Q_HANDSHAKE, Q_OPEN, Q_CLOSING, Q_DEAD };

/* A bidirectional stream frames travel on; a slot is free when |sid| < 0. */
struct q_stream {
  int64_t sid;
  uint64_t seq; /* open order: first come, first served */
  uint64_t tx_off;
  uint64_t want_request; /* |keyed|: the `request` of the last Request read on it */
  uint32_t frames_in, frames_out;
  bool peer_fin, fin_sent, keyed;
  uint64_t frame_start; /* loop clock at the first byte of the frame in progress */
  struct vsri_decoder dec;
};

/* A frame whose bytes ngtcp2 may still need: released once acked up to |end|. */
struct q_infl {
  struct vsr_msg *m;
  int64_t sid;
  uint64_t end;
  bool done;
};

struct vsri_conn {
  ngtcp2_crypto_conn_ref ref; /* the GnuTLS session's pointer */
  const struct vsri_transport_ctx *ctx;
  const struct vsri_quic_config *cfg;
  struct vsri_listener *l; /* server side; NULL when dialed */
  struct q_ep *ep;
  struct vsri_conn *prev, *next; /* listener's list */
  struct vsri_conn *wait_next;   /* endpoint's send-wait list */
  bool waiting;
  ngtcp2_conn *qc;
  gnutls_session_t tls;
  gnutls_certificate_credentials_t cred; /* client trust store */
  ngtcp2_connection_close_error ccerr;   /* what we send when we close */
  bool ccerr_set;
  struct sockaddr_storage remote;
  socklen_t remote_len;
  const struct vsri_conn_events *ev;
  void *owner;
  struct vsri_sendq *q;
  enum q_state state;
  bool server, hs_done, reported, counted, started, connected_notified, closed_notified;
  bool close_req, close_drain, keepalive_set, had_data, write_soon, alpn_refused;
  bool reaped; /* resources released; the memory goes once no completion is pending */
  int reason;
  int fail_reason; /* set by a callback that failed the connection */
  uint64_t close_code;
  bool close_app, close_remote, close_known;
  /* The streams frames travel on: |st_want| slots (max_bidi_streams), allocated once, at the
   * first stream; |nst| is 0 until then. */
  struct q_stream *st;
  uint32_t nst, nopen, st_want;
  uint64_t st_seq;
  int64_t head_sid; /* the stream the partly handed-over queue head belongs to */
  int64_t rx_sid;   /* the stream of the frame being delivered (tests) */
  bool stream_blocked, had_stream;
  uint64_t last_rx; /* the owner's timeout clock (struct vsri_rx_clock) */
  struct q_infl *infl;
  uint32_t infl_cap, infl_head, infl_len;
  struct vsr_msg **pend; /* frames decoded before start() */
  uint32_t pend_len, pend_cap;
  /* Timers and deferred work. */
  struct vsri_completion timer;
  uint64_t timer_at, grace_at, drain_at, closing_until;
  struct vsri_deferred flush;
  struct vsri_deferred reap;
  uint8_t *close_pkt; /* server closing period: resent to a peer that keeps sending */
  size_t close_len;
  ngtcp2_cid cids[Q_CIDS];
  uint32_t ncids;
  uint8_t pin[VSRI_SHA256_LEN];
  bool pinned;
  /* Server half-open: the listener's age list, its source, whether its address was validated
   * by a Retry token. */
  struct vsri_conn *ho_prev, *ho_next;
  bool ho_linked, validated;
  uint8_t srckey[Q_SRCKEY];
  /* Tests: an extra stream carrying raw bytes. */
  int64_t extra_sid;
  const uint8_t *extra_data;
  size_t extra_len, extra_off;
  char name[64];
};

static void q_conn_schedule(struct vsri_conn *c);
static void q_conn_close_now(struct vsri_conn *c, int reason);
static void q_conn_finish(struct vsri_conn *c, int reason, bool closing_period);
static void q_timer_update(struct vsri_conn *c);
static void q_conn_write(struct vsri_conn *c);
static void q_listener_maybe_free(struct vsri_listener *l);

/* ---- config ---------------------------------------------------------------------------- */

static const struct vsri_quic_config q_default_cfg = {
    .max_bidi_streams = 1,
    .idle_timeout_ns = 30 * NGTCP2_SECONDS,
    .keep_alive_ns = 10 * NGTCP2_SECONDS,
    .handshake_grace_ns = 10 * NGTCP2_SECONDS,
    .close_grace_ns = 2 * NGTCP2_SECONDS,
    .initial_mtu = 1200,
    .max_udp_payload = 1452,
    .stream_window = 64u << 20,
    .conn_window = 64u << 20,
    .cc = VSRI_QUIC_CC_CUBIC,
    .max_handshakes = 1024,
    .retry_threshold = 256,
    .max_handshakes_per_source = 32,
    .retry_token_lifetime_ns = 10 * NGTCP2_SECONDS,
    .server_name = "localhost",
};

void vsri_quic_config_default(struct vsri_quic_config *cfg) { *cfg = q_default_cfg; }

int vsri_quic_config_check(const struct vsri_quic_config *cfg) {
  const char *bad = NULL;
  if (cfg->max_bidi_streams < 1 || cfg->max_bidi_streams > Q_MAX_STREAMS) {
    bad = "max_bidi_streams must be within 1..1024";
  } else if (cfg->initial_mtu != 1200) {
    bad = "initial_mtu must be 1200 (ngtcp2 0.12 starts every path at 1200; raise "
          "max_udp_payload instead)";
  } else if (cfg->max_udp_payload < 1200 || cfg->max_udp_payload > 65527) {
    bad = "max_udp_payload must be within 1200..65527";
  } else if (cfg->stream_window < (64u << 10) || cfg->conn_window < cfg->stream_window ||
             cfg->conn_window > (1ull << 40)) {
    bad = "windows: 64 KiB <= stream_window <= conn_window <= 1 TiB";
  } else if (cfg->handshake_grace_ns == 0) {
    bad = "handshake_grace must be > 0";
  } else if (cfg->cc > VSRI_QUIC_CC_BBR2) {
    bad = "unknown congestion controller";
  } else if (cfg->max_handshakes == 0 || cfg->max_handshakes > (1u << 20)) {
    bad = "max_handshakes must be within 1..1048576";
  } else if (cfg->retry_token_lifetime_ns == 0) {
    bad = "retry_token_lifetime must be > 0";
  }
  if (bad) {
    VSRI_ERROR("VSR-CONFIG", "quic: %s", bad);
    return VSR_ECONFIG;
  }
  return 0;
}

static const struct vsri_quic_config *q_cfg(const struct vsri_transport_ctx *ctx) {
  return ctx->tls ? ctx->tls : &q_default_cfg;
}

/* ---- small helpers --------------------------------------------------------------------- */

static void q_rand(uint8_t *dst, size_t len) {
  if (gnutls_rnd(GNUTLS_RND_RANDOM, dst, len) != 0) {
    /* Only hit if the system RNG fails; keep going with a weaker source. */
    for (size_t i = 0; i < len; i++) dst[i] = (uint8_t)random();
  }
}

static uint64_t q_now(const struct vsri_conn *c) { return vsri_io_now(c->ctx->io); }

static int q_app_code(int reason) {
  switch (reason) {
  case VSR_EHANDSHAKE:
  case VSR_EHANDSHAKE_TIMEOUT:
  case VSR_EALPN: return VSRI_QUIC_HANDSHAKE_FAILED;
  case VSR_EAUTH:
  case VSR_EAUTH_CLUSTER:
  case VSR_EAUTH_DIRECTION:
  case VSR_EAUTH_REQUIRED:
  case VSR_EAUTH_COMMAND:
  case VSR_EAUTH_STATUS: return VSRI_QUIC_AUTH_FAILED;
  case VSR_EPROTO:
  case VSR_ESTREAM:
  case VSR_EEOF_HEADER:
  case VSR_EEOF_BODY:
  case VSR_EFRAME_TIMEOUT: return VSRI_QUIC_PROTOCOL_VIOLATION;
  default:
    if (reason <= VSR_EFRAME_SMALL && reason >= VSR_EFRAME_PLANE) {
      return VSRI_QUIC_PROTOCOL_VIOLATION;
    }
    return VSRI_QUIC_SHUTDOWN;
  }
}

/* The reason reported for a CONNECTION_CLOSE received from the peer. */
static int q_peer_reason(uint64_t code, bool app) {
  if (app) {
    switch (code) {
    case VSRI_QUIC_HANDSHAKE_FAILED: return VSR_EHANDSHAKE;
    case VSRI_QUIC_AUTH_FAILED: return VSR_EAUTH;
    case VSRI_QUIC_SHUTDOWN: return VSR_ESHUTDOWN;
    case VSRI_QUIC_PROTOCOL_VIOLATION: return VSR_EPROTO;
    default: return VSR_ECLOSED;
    }
  }
  if (code == NGTCP2_NO_ERROR) return VSR_ECLOSED;
  if (code == NGTCP2_CRYPTO_ERROR + 120) return VSR_EALPN; /* no_application_protocol */
  if (code >= NGTCP2_CRYPTO_ERROR && code <= NGTCP2_CRYPTO_ERROR + 0xff) return VSR_EHANDSHAKE;
  if (code == NGTCP2_STREAM_LIMIT_ERROR || code == NGTCP2_STREAM_STATE_ERROR) {
    return VSR_ESTREAM;
  }
  return VSR_EQUIC;
}

/* The reason for a local ngtcp2 error. */
static int q_liberr_reason(int rv) {
  switch (rv) {
  case NGTCP2_ERR_STREAM_LIMIT:
  case NGTCP2_ERR_STREAM_STATE: return VSR_ESTREAM;
  case NGTCP2_ERR_NOMEM: return VSR_ENOMEM;
  case NGTCP2_ERR_HANDSHAKE_TIMEOUT: return VSR_EHANDSHAKE_TIMEOUT;
  case NGTCP2_ERR_IDLE_CLOSE: return VSR_EIDLE;
  default: return VSR_EQUIC;
  }
}

static void q_set_app_error(struct vsri_conn *c, uint64_t code) {
  if (c->ccerr_set) return;
  ngtcp2_connection_close_error_set_application_error(&c->ccerr, code, NULL, 0);
  c->ccerr_set = true;
}

/* Records a violation found inside an ngtcp2 callback; the callback then fails and the read
 * path closes with 0x1004. */
static int q_violation(struct vsri_conn *c, int reason, const char *what) {
  VSRI_WARN("VSR-QUIC", "%s quic: %s (%s); closing with 0x%x", c->name, what,
            vsr_errname(reason), VSRI_QUIC_PROTOCOL_VIOLATION);
  if (!c->fail_reason) c->fail_reason = reason;
  q_set_app_error(c, VSRI_QUIC_PROTOCOL_VIOLATION);
  return NGTCP2_ERR_CALLBACK_FAILURE;
}

/* ---- connection ID map ----------------------------------------------------------------- */

static uint32_t q_cid_hash(const struct q_cidmap *m, const uint8_t *id, size_t len) {
  return (uint32_t)XXH3_64bits_withSeed(id, len, m->seed);
}

static struct q_cident *q_cidmap_slot(const struct q_cidmap *m, const uint8_t *id, size_t len) {
  if (!m->cap) return NULL;
  for (uint32_t i = q_cid_hash(m, id, len) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
    struct q_cident *e = &m->slots[i];
    if (!e->conn || (e->len == len && memcmp(e->id, id, len) == 0)) return e;
  }
}

static struct vsri_conn *q_cidmap_find(const struct q_cidmap *m, const uint8_t *id, size_t len) {
  if (len > NGTCP2_MAX_CIDLEN) return NULL;
  struct q_cident *e = q_cidmap_slot(m, id, len);
  return e ? e->conn : NULL;
}

static int q_cidmap_grow(struct q_cidmap *m) {
  uint32_t cap = m->cap ? m->cap * 2 : 256;
  struct q_cident *old = m->slots;
  uint32_t oldcap = m->cap;
  m->slots = vsri_calloc(cap, sizeof *m->slots);
  if (!m->slots) {
    m->slots = old;
    return VSR_ENOMEM;
  }
  m->cap = cap;
  for (uint32_t i = 0; i < oldcap; i++) {
    if (old[i].conn) *q_cidmap_slot(m, old[i].id, old[i].len) = old[i];
  }
  vsri_free(old);
  return 0;
}

static int q_cidmap_add(struct q_cidmap *m, const ngtcp2_cid *cid, struct vsri_conn *c) {
  if ((m->len + 1) * 2 > m->cap && q_cidmap_grow(m) != 0) return VSR_ENOMEM;
  struct q_cident *e = q_cidmap_slot(m, cid->data, cid->datalen);
  if (e->conn) return e->conn == c ? 0 : VSR_EDUPLICATE;
  e->conn = c;
  e->len = (uint8_t)cid->datalen;
  memcpy(e->id, cid->data, cid->datalen);
  m->len++;
  return 0;
}

/* Removes with backward shift, so lookups never need tombstones. */
static void q_cidmap_del(struct q_cidmap *m, const ngtcp2_cid *cid) {
  struct q_cident *e = q_cidmap_slot(m, cid->data, cid->datalen);
  if (!e || !e->conn) return;
  uint32_t mask = m->cap - 1, i = (uint32_t)(e - m->slots);
  for (uint32_t j = (i + 1) & mask; m->slots[j].conn; j = (j + 1) & mask) {
    uint32_t home = q_cid_hash(m, m->slots[j].id, m->slots[j].len) & mask;
    /* Move j into the hole at i unless its home lies cyclically in (i, j]. */
    bool stay = i <= j ? (home > i && home <= j) : (home > i || home <= j);
    if (stay) continue;
    m->slots[i] = m->slots[j];
    i = j;
  }
  m->slots[i].conn = NULL;
  m->len--;
}

/* Server connections remember their IDs so they can leave the map when freed. */
static int q_conn_add_cid(struct vsri_conn *c, const ngtcp2_cid *cid) {
  if (c->ncids == Q_CIDS) return VSR_ELIMIT;
  int err = q_cidmap_add(&c->l->cids, cid, c);
  if (err) return err;
  c->cids[c->ncids++] = *cid;
  return 0;
}

static void q_conn_del_cid(struct vsri_conn *c, const ngtcp2_cid *cid) {
  for (uint32_t i = 0; i < c->ncids; i++) {
    if (ngtcp2_cid_eq(&c->cids[i], cid)) {
      q_cidmap_del(&c->l->cids, cid);
      c->cids[i] = c->cids[--c->ncids];
      return;
    }
  }
}

/* ---- half-opens per source ------------------------------------------------------------- */

/* The source a limit applies to: an IPv4 address (also when IPv4-mapped), an IPv6 /64 (one
 * host usually holds a whole /64). The port never counts: it is free to change. */
static void q_src_key(const struct sockaddr *sa, uint8_t key[Q_SRCKEY]) {
  memset(key, 0, Q_SRCKEY);
  if (sa->sa_family == AF_INET) {
    key[0] = 4;
    memcpy(key + 1, &((const struct sockaddr_in *)sa)->sin_addr, 4);
  } else if (sa->sa_family == AF_INET6) {
    const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
    if (IN6_IS_ADDR_V4MAPPED(a)) {
      key[0] = 4;
      memcpy(key + 1, a->s6_addr + 12, 4);
    } else {
      key[0] = 6;
      memcpy(key + 1, a->s6_addr, 8);
    }
  }
}

static struct q_src *q_src_slot(const struct vsri_listener *l, const uint8_t key[Q_SRCKEY]) {
  uint32_t mask = l->srcs_cap - 1;
  for (uint32_t i = (uint32_t)XXH3_64bits_withSeed(key, Q_SRCKEY, l->cids.seed) & mask;;
       i = (i + 1) & mask) {
    struct q_src *e = &l->srcs[i];
    if (!e->n || memcmp(e->key, key, Q_SRCKEY) == 0) return e;
  }
}

static uint32_t q_src_count(const struct vsri_listener *l, const uint8_t key[Q_SRCKEY]) {
  return l->srcs_cap ? q_src_slot(l, key)->n : 0;
}

/* Never full: at most max_handshakes sources hold half-opens, in 2x as many slots. */
static void q_src_add(struct vsri_listener *l, const uint8_t key[Q_SRCKEY]) {
  struct q_src *e = q_src_slot(l, key);
  if (!e->n) memcpy(e->key, key, Q_SRCKEY);
  e->n++;
}

/* Removes with backward shift, like the connection ID map. */
static void q_src_del(struct vsri_listener *l, const uint8_t key[Q_SRCKEY]) {
  struct q_src *e = q_src_slot(l, key);
  if (!e->n || --e->n > 0) return;
  uint32_t mask = l->srcs_cap - 1, i = (uint32_t)(e - l->srcs);
  for (uint32_t j = (i + 1) & mask; l->srcs[j].n; j = (j + 1) & mask) {
    uint32_t home = (uint32_t)XXH3_64bits_withSeed(l->srcs[j].key, Q_SRCKEY, l->cids.seed) & mask;
    bool stay = i <= j ? (home > i && home <= j) : (home > i || home <= j);
    if (stay) continue;
    l->srcs[i] = l->srcs[j];
    i = j;
  }
  l->srcs[i].n = 0;
}

/* A new server connection is half-open until reported (or closed). */
static void q_halfopen_enter(struct vsri_conn *c, const struct sockaddr *from) {
  struct vsri_listener *l = c->l;
  l->nhandshaking++;
  q_src_key(from, c->srckey);
  q_src_add(l, c->srckey);
  c->ho_prev = l->ho_tail;
  c->ho_next = NULL;
  if (l->ho_tail) l->ho_tail->ho_next = c;
  else l->ho_head = c;
  l->ho_tail = c;
  c->ho_linked = true;
  l->adm.admitted++;
  if (l->nhandshaking > l->adm.halfopen_peak) l->adm.halfopen_peak = l->nhandshaking;
}

static void q_halfopen_leave(struct vsri_conn *c) {
  struct vsri_listener *l = c->l;
  c->counted = true;
  l->nhandshaking--;
  if (!c->ho_linked) return;
  c->ho_linked = false;
  q_src_del(l, c->srckey);
  if (c->ho_prev) c->ho_prev->ho_next = c->ho_next;
  else l->ho_head = c->ho_next;
  if (c->ho_next) c->ho_next->ho_prev = c->ho_prev;
  else l->ho_tail = c->ho_prev;
  c->ho_prev = c->ho_next = NULL;
}

/* The half-open to evict: the oldest one whose address was not validated (by a Retry token or
 * a finished handshake), else the oldest. */
static struct vsri_conn *q_halfopen_victim(const struct vsri_listener *l) {
  for (struct vsri_conn *c = l->ho_head; c; c = c->ho_next) {
    if (!c->validated && !c->hs_done) return c;
  }
  return l->ho_head;
}

/* ---- UDP endpoint ---------------------------------------------------------------------- */

static void q_ep_rx_done(struct vsri_io *io, struct vsri_completion *rc, int32_t res);
static void q_ep_tx_done(struct vsri_io *io, struct vsri_completion *tc, int32_t res);

static void q_sockbuf(int fd, int opt_force, int opt) {
  int v = Q_SOCKBUF;
  if (setsockopt(fd, SOL_SOCKET, opt_force, &v, sizeof v) < 0) {
    setsockopt(fd, SOL_SOCKET, opt, &v, sizeof v);
  }
}

/* Opens the socket: bound (listener) or connected (dialer). Returns 0, VSR_EIO (no socket),
 * VSR_EADDRINUSE / VSR_EBIND (listener), VSR_EUNREACH / ... (dialer) or VSR_ENOMEM; logged. */
static int q_ep_open(struct q_ep *ep, struct vsri_io *io, const struct sockaddr *sa,
                     socklen_t len, bool server, const struct vsri_quic_config *cfg,
                     const char *text) {
  ep->io = io;
  ep->fd = socket(sa->sa_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_UDP);
  if (ep->fd < 0) {
    VSRI_ERROR("VSR-QUIC", "%s quic: socket: %s", text, strerror(errno));
    return VSR_EIO;
  }
  q_sockbuf(ep->fd, SO_RCVBUFFORCE, SO_RCVBUF);
  q_sockbuf(ep->fd, SO_SNDBUFFORCE, SO_SNDBUF);
  int r = server ? bind(ep->fd, sa, len) : connect(ep->fd, sa, len);
  ep->local_len = sizeof ep->local;
  if (r < 0 || getsockname(ep->fd, (struct sockaddr *)&ep->local, &ep->local_len) < 0) {
    int err = errno;
    VSRI_ERROR("VSR-QUIC", "%s quic: %s: %s", text, server ? "bind" : "connect", strerror(err));
    close(ep->fd);
    ep->fd = -1;
    return server ? vsri_bind_reason(err) : vsri_sock_reason(err);
  }
  ep->connected = !server;
  int zero = 0, one = 1;
  bool batch = !cfg->unbatched;
  ep->gso = batch && !cfg->no_gso &&
            setsockopt(ep->fd, SOL_UDP, UDP_SEGMENT, &zero, sizeof zero) == 0;
  ep->gro = batch && !cfg->no_gro &&
            setsockopt(ep->fd, SOL_UDP, UDP_GRO, &one, sizeof one) == 0;
  ep->rx_buf = vsri_aligned_alloc(64, Q_BUF);
  if (!ep->rx_buf) {
    close(ep->fd);
    ep->fd = -1;
    return VSR_ENOMEM;
  }
  return 0;
}

static void q_ep_maybe_free(struct q_ep *ep);

static void q_ep_closed(struct vsri_io *io, struct vsri_completion *cc, int32_t res) {
  (void)io;
  (void)res;
  struct q_ep *ep = cc->ctx;
  ep->fd = -1;
  q_ep_maybe_free(ep);
}

static void q_ep_maybe_free(struct q_ep *ep) {
  if (!ep->dead || ep->in_rx || ep->rx_c.pending || ep->tx_c.pending || ep->close_c.pending) {
    return;
  }
  if (ep->fd >= 0) {
    /* Through the loop: the backend forgets the fd before its number can be reused. */
    vsri_io_close(ep->io, &ep->close_c, ep->fd, q_ep_closed, ep);
    return;
  }
  vsri_free(ep->rx_buf);
  vsri_free(ep->tx_park);
  ep->rx_buf = ep->tx_park = NULL;
  if (ep->on_free) ep->on_free(ep);
}

/* The owner is done with the endpoint: stop receiving, free once completions are back. */
static void q_ep_kill(struct q_ep *ep) {
  ep->dead = true;
  if (ep->rx_c.pending) vsri_io_cancel(ep->io, &ep->rx_c);
  if (ep->tx_c.pending) vsri_io_cancel(ep->io, &ep->tx_c);
  q_ep_maybe_free(ep);
}

static void q_ep_rx_prep(struct q_ep *ep) {
  ep->rx_iov.iov_base = ep->rx_buf;
  ep->rx_iov.iov_len = Q_BUF;
  memset(&ep->rx_msg, 0, sizeof ep->rx_msg);
  ep->rx_msg.msg_name = &ep->rx_from;
  ep->rx_msg.msg_namelen = sizeof ep->rx_from;
  ep->rx_msg.msg_iov = &ep->rx_iov;
  ep->rx_msg.msg_iovlen = 1;
  ep->rx_msg.msg_control = ep->rx_ctl;
  ep->rx_msg.msg_controllen = sizeof ep->rx_ctl;
}

static void q_ep_rx_arm(struct q_ep *ep) {
  if (ep->dead || ep->rx_c.pending) return;
  q_ep_rx_prep(ep);
  vsri_io_recvmsg(ep->io, &ep->rx_c, ep->fd, &ep->rx_msg, 0, q_ep_rx_done, ep);
}

/* Splits one received datagram (or GRO batch of equal-size datagrams) into packets. */
static void q_ep_dispatch(struct q_ep *ep, size_t n) {
  if (n == 0 || (ep->rx_msg.msg_flags & MSG_TRUNC)) return;
  q_stats.recv_calls++;
  q_stats.bytes_in += n;
  size_t seg = n;
  for (struct cmsghdr *cm = CMSG_FIRSTHDR(&ep->rx_msg); cm; cm = CMSG_NXTHDR(&ep->rx_msg, cm)) {
    if (cm->cmsg_level == SOL_UDP && cm->cmsg_type == UDP_GRO) {
      int v;
      memcpy(&v, CMSG_DATA(cm), sizeof v);
      if (v > 0) seg = (size_t)v;
    }
  }
  socklen_t fromlen = ep->rx_msg.msg_namelen;
  for (size_t off = 0; off < n && !ep->dead; off += seg) {
    size_t len = n - off < seg ? n - off : seg;
    q_stats.datagrams_in++;
    ep->on_packet(ep, (const struct sockaddr *)&ep->rx_from, fromlen, ep->rx_buf + off, len);
  }
}

static void q_ep_rx_error(struct q_ep *ep, int err) {
  if (err == EAGAIN || err == EWOULDBLOCK || err == EINTR || err == ECANCELED) return;
  if (ep->on_error) ep->on_error(ep, err);
  else VSRI_DEBUG("VSR-QUIC", "quic: recvmsg: %s", strerror(err));
}

static void q_ep_rx_done(struct vsri_io *io, struct vsri_completion *rc, int32_t res) {
  (void)io;
  struct q_ep *ep = rc->ctx;
  if (ep->dead) {
    q_ep_maybe_free(ep);
    return;
  }
  ep->in_rx = true;
  /* Callbacks may run before the loop re-reads its clock after waiting: packets get a fresh
   * receive time (RTT samples and ACK delays depend on it). */
  vsri_io_now_fresh(ep->io);
  if (res >= 0) {
    q_ep_dispatch(ep, (size_t)res);
    /* Drain what else is queued on the socket now, bounded so other fds get their turn. */
    for (int i = 0; i < Q_RX_DRAIN && !ep->dead; i++) {
      q_ep_rx_prep(ep);
      ssize_t r = recvmsg(ep->fd, &ep->rx_msg, MSG_DONTWAIT);
      if (r < 0) {
        q_ep_rx_error(ep, errno);
        break;
      }
      vsri_io_now_fresh(ep->io);
      q_ep_dispatch(ep, (size_t)r);
    }
  } else {
    q_ep_rx_error(ep, -res);
  }
  ep->in_rx = false;
  if (ep->dead) {
    q_ep_maybe_free(ep);
    return;
  }
  q_ep_rx_arm(ep);
}

static void q_ep_msg(struct msghdr *mh, struct iovec *iov, void *ctl, size_t ctlcap,
                     const struct q_ep *ep, const struct sockaddr *to, socklen_t tolen,
                     const uint8_t *data, size_t len, size_t seg) {
  memset(mh, 0, sizeof *mh);
  iov->iov_base = (void *)data;
  iov->iov_len = len;
  if (!ep->connected) {
    mh->msg_name = (void *)to;
    mh->msg_namelen = tolen;
  }
  mh->msg_iov = iov;
  mh->msg_iovlen = 1;
  if (ep->gso && len > seg) {
    mh->msg_control = ctl;
    mh->msg_controllen = ctlcap;
    struct cmsghdr *cm = CMSG_FIRSTHDR(mh);
    cm->cmsg_level = SOL_UDP;
    cm->cmsg_type = UDP_SEGMENT;
    cm->cmsg_len = CMSG_LEN(sizeof(uint16_t));
    uint16_t s = (uint16_t)seg;
    memcpy(CMSG_DATA(cm), &s, sizeof s);
  }
}

/* Keeps a refused burst and sends it when the socket has room; writers wait behind it. */
static void q_ep_park(struct q_ep *ep, const struct sockaddr *to, socklen_t tolen,
                      const uint8_t *data, size_t len, size_t seg) {
  q_stats.send_blocked++;
  if (ep->tx_c.pending) return; /* already waiting: drop, QUIC recovers it */
  if (!ep->tx_park && !(ep->tx_park = vsri_malloc(Q_BUF))) return;
  if (!ep->gso && len > seg) len = seg;
  memcpy(ep->tx_park, data, len);
  if (to && tolen) memcpy(&ep->tx_to, to, tolen);
  q_ep_msg(&ep->tx_msg, &ep->tx_iov, ep->tx_ctl, sizeof ep->tx_ctl, ep,
           (const struct sockaddr *)&ep->tx_to, tolen, ep->tx_park, len, seg);
  vsri_io_sendmsg(ep->io, &ep->tx_c, ep->fd, &ep->tx_msg, 0, q_ep_tx_done, ep);
}

/* Sends |len| bytes as datagrams of |seg| bytes (the last may be shorter): one sendmsg with
 * UDP_SEGMENT when GSO works, else one per datagram. Loss is left to QUIC. */
static void q_ep_send(struct q_ep *ep, const struct sockaddr *to, socklen_t tolen,
                      const uint8_t *data, size_t len, size_t seg) {
  if (ep->tx_hook) {
    for (size_t off = 0; off < len; off += seg) {
      ep->tx_hook(ep->tx_hook_user, data + off, len - off < seg ? len - off : seg);
    }
    return;
  }
  size_t off = 0;
  while (off < len) {
    size_t chunk = ep->gso ? len - off : (len - off < seg ? len - off : seg);
    struct msghdr mh;
    struct iovec iov;
    _Alignas(size_t) uint8_t ctl[CMSG_SPACE(sizeof(uint16_t))];
    q_ep_msg(&mh, &iov, ctl, sizeof ctl, ep, to, tolen, data + off, chunk, seg);
    if (sendmsg(ep->fd, &mh, MSG_DONTWAIT) >= 0) {
      q_stats.send_calls++;
      q_stats.datagrams_out += (chunk + seg - 1) / seg;
      q_stats.bytes_out += chunk;
      off += chunk;
      continue;
    }
    int err = errno;
    if (err == EINTR) continue;
    if (err == EAGAIN || err == EWOULDBLOCK || err == ENOBUFS) {
      q_ep_park(ep, to, tolen, data + off, len - off, seg);
      return;
    }
    if (ep->gso && (err == EIO || err == EINVAL) && chunk > seg) {
      VSRI_INFO("VSR-QUIC", "quic: UDP GSO send failed (%s); sending datagrams one by one",
                strerror(err));
      ep->gso = false;
      continue;
    }
    if (ep->on_error) ep->on_error(ep, err);
    else VSRI_DEBUG("VSR-QUIC", "quic: sendmsg: %s", strerror(err));
    off += chunk;
  }
}

static bool q_ep_blocked(const struct q_ep *ep) { return ep->tx_c.pending; }

static void q_ep_wait(struct q_ep *ep, struct vsri_conn *c) {
  if (c->waiting) return;
  c->waiting = true;
  c->wait_next = NULL;
  if (ep->wait_tail) ep->wait_tail->wait_next = c;
  else ep->wait_head = c;
  ep->wait_tail = c;
}

static void q_ep_unwait(struct q_ep *ep, struct vsri_conn *c) {
  if (!c->waiting) return;
  struct vsri_conn **pp = &ep->wait_head, *prev = NULL;
  while (*pp && *pp != c) {
    prev = *pp;
    pp = &(*pp)->wait_next;
  }
  if (*pp) {
    *pp = c->wait_next;
    if (ep->wait_tail == c) ep->wait_tail = prev;
  }
  c->waiting = false;
}

static void q_ep_tx_done(struct vsri_io *io, struct vsri_completion *tc, int32_t res) {
  (void)io;
  struct q_ep *ep = tc->ctx;
  if (res < 0 && res != -ECANCELED) VSRI_DEBUG("VSR-QUIC", "quic: parked send: %s", strerror(-res));
  if (ep->dead) {
    q_ep_maybe_free(ep);
    return;
  }
  while (ep->wait_head) {
    struct vsri_conn *c = ep->wait_head;
    ep->wait_head = c->wait_next;
    if (!ep->wait_head) ep->wait_tail = NULL;
    c->waiting = false;
    q_conn_schedule(c);
  }
}

/* ---- in-flight frames ------------------------------------------------------------------ */

/* Makes room for |n| more entries. Returns false when memory is short. */
static bool q_infl_reserve(struct vsri_conn *c, uint32_t n) {
  if (c->infl_len + n <= c->infl_cap) return true;
  uint32_t cap = c->infl_cap ? c->infl_cap : 64;
  while (cap < c->infl_len + n) cap *= 2;
  struct q_infl *v = vsri_malloc(cap * sizeof *v);
  if (!v) return false;
  for (uint32_t i = 0; i < c->infl_len; i++) {
    v[i] = c->infl[(c->infl_head + i) & (c->infl_cap - 1)];
  }
  vsri_free(c->infl);
  c->infl = v;
  c->infl_cap = cap;
  c->infl_head = 0;
  return true;
}

static void q_infl_push(struct vsri_conn *c, int64_t sid, struct vsr_msg *m, uint64_t end) {
  struct q_infl *e = &c->infl[(c->infl_head + c->infl_len) & (c->infl_cap - 1)];
  e->m = vsr_msg_ref(m);
  e->sid = sid;
  e->end = end;
  e->done = false;
  c->infl_len++;
}

static void q_infl_pop_done(struct vsri_conn *c) {
  while (c->infl_len > 0) {
    struct q_infl *e = &c->infl[c->infl_head];
    if (!e->done) break;
    vsr_msg_unref(e->m);
    c->infl_head = (c->infl_head + 1) & (c->infl_cap - 1);
    c->infl_len--;
  }
}

/* Marks frames of stream |sid| acknowledged up to stream offset |upto| (all of them when
 * |all|: the stream closed and ngtcp2 no longer needs any of its bytes). Frames of one stream
 * are in offset order; frames of other streams may sit between them. */
static void q_infl_release(struct vsri_conn *c, int64_t sid, uint64_t upto, bool all) {
  for (uint32_t i = 0; i < c->infl_len; i++) {
    struct q_infl *e = &c->infl[(c->infl_head + i) & (c->infl_cap - 1)];
    if (e->sid != sid) continue;
    if (!all && e->end > upto) break;
    e->done = true;
  }
  q_infl_pop_done(c);
}

static void q_infl_clear(struct vsri_conn *c) {
  while (c->infl_len > 0) {
    vsr_msg_unref(c->infl[c->infl_head].m);
    c->infl_head = (c->infl_head + 1) & (c->infl_cap - 1);
    c->infl_len--;
  }
  vsri_free(c->infl);
  c->infl = NULL;
  c->infl_cap = 0;
}

/* ---- delivery -------------------------------------------------------------------------- */

static void q_deliver_pending(struct vsri_conn *c);

static void q_deliver(struct vsri_conn *c, struct vsr_msg *m) {
  if (c->state >= Q_CLOSING || (c->close_req && c->started)) {
    vsr_msg_unref(m); /* closing: reading has stopped */
    return;
  }
  if (c->started) {
    if (c->pend_len) q_deliver_pending(c); /* frames held before start() go first */
    c->ev->on_frame(c->owner, c, m);
    vsr_msg_unref(m);
    return;
  }
  /* Arrived with the stream that made the connection reportable: hold until start(). */
  if (c->pend_len == c->pend_cap) {
    uint32_t cap = c->pend_cap ? c->pend_cap * 2 : 8;
    struct vsr_msg **p = vsri_realloc(c->pend, cap * sizeof *p);
    if (!p) {
      vsr_msg_unref(m);
      if (!c->fail_reason) c->fail_reason = VSR_ENOMEM;
      return;
    }
    c->pend = p;
    c->pend_cap = cap;
  }
  c->pend[c->pend_len++] = m;
}

static void q_deliver_pending(struct vsri_conn *c) {
  uint32_t n = c->pend_len, i = 0;
  int64_t rx_sid = c->rx_sid;
  c->pend_len = 0;
  c->rx_sid = -1;
  for (; i < n && c->state < Q_CLOSING && !c->close_req; i++) {
    c->ev->on_frame(c->owner, c, c->pend[i]);
    vsr_msg_unref(c->pend[i]);
  }
  c->rx_sid = rx_sid;
  for (; i < n; i++) vsr_msg_unref(c->pend[i]);
}

static void q_pend_clear(struct vsri_conn *c) {
  for (uint32_t i = 0; i < c->pend_len; i++) vsr_msg_unref(c->pend[i]);
  vsri_free(c->pend);
  c->pend = NULL;
  c->pend_len = c->pend_cap = 0;
}

/* A frame error poisons the stream: log like TCP does, close with 0x1004. */
static int q_frame_error(struct vsri_conn *c, const struct vsri_decoder *dec, int err) {
  if (err == VSR_EPOOL) {
    VSRI_WARN("VSR-POOL", "%s quic: message pool exhausted; closing", c->name);
    c->fail_reason = VSR_EPOOL;
    if (!c->ccerr_set) {
      ngtcp2_connection_close_error_set_transport_error(&c->ccerr, NGTCP2_INTERNAL_ERROR, NULL,
                                                        0);
      c->ccerr_set = true;
    }
    return NGTCP2_ERR_CALLBACK_FAILURE;
  }
  const uint8_t *h = dec->hdr;
  uint32_t size = (uint32_t)h[48] | (uint32_t)h[49] << 8 | (uint32_t)h[50] << 16 |
                  (uint32_t)h[51] << 24;
  VSRI_WARN("VSR-FRAME", "%s quic: %s (%s; size %u, command %u, max %u); closing with 0x%x",
            c->name, vsr_strerror(err), vsr_errname(err), size, h[60],
            c->ctx->max_message_size, VSRI_QUIC_PROTOCOL_VIOLATION);
  if (!c->fail_reason) c->fail_reason = err;
  q_set_app_error(c, VSRI_QUIC_PROTOCOL_VIOLATION);
  return NGTCP2_ERR_CALLBACK_FAILURE;
}

/* Feeds bytes of stream |s| to its decoder. Returns 0 or NGTCP2_ERR_CALLBACK_FAILURE. */
static int q_feed(struct vsri_conn *c, struct q_stream *s, const uint8_t *p, size_t n) {
  uint64_t now = q_now(c);
  c->last_rx = now;
  while (n > 0) {
    size_t used = 0;
    struct vsr_msg *m = NULL;
    if (vsri_decoder_idle(&s->dec)) s->frame_start = now; /* these bytes start a frame */
    int r = vsri_decoder_feed(&s->dec, p, n, &used, &m);
    p += used;
    n -= used;
    if (r < 0) return q_frame_error(c, &s->dec, r);
    if (r == 0) break;
    s->frames_in++;
    /* A Request's Reply goes back on this stream: remember its number for the routing. */
    s->keyed = m->data[60] == VSR_CMD_REQUEST;
    if (s->keyed) s->want_request = ((const struct vsr_request_header *)m->data)->request;
    c->rx_sid = s->sid;
    q_deliver(c, m);
    if (c->fail_reason) return NGTCP2_ERR_CALLBACK_FAILURE;
  }
  return 0;
}

/* ---- streams --------------------------------------------------------------------------- */

static struct q_stream *q_stream_find(struct vsri_conn *c, int64_t sid) {
  if (sid < 0) return NULL;
  for (uint32_t i = 0; i < c->nst; i++) {
    if (c->st[i].sid == sid) return &c->st[i];
  }
  return NULL;
}

/* Takes a free slot for stream |sid|; NULL when all max_bidi_streams are in use (or, at the
 * first stream, memory is short: c->st stays NULL). */
static struct q_stream *q_stream_add(struct vsri_conn *c, int64_t sid) {
  if (!c->st) {
    /* Once per connection, never per request, and not before a stream exists (a flood of
     * handshakes costs no stream memory). */
    c->st = vsri_calloc(c->st_want, sizeof *c->st);
    if (!c->st) return NULL;
    c->nst = c->st_want;
    for (uint32_t i = 0; i < c->nst; i++) {
      c->st[i].sid = -1;
      vsri_conn_decoder_init(&c->st[i].dec, c->ctx);
    }
  }
  for (uint32_t i = 0; i < c->nst; i++) {
    struct q_stream *s = &c->st[i];
    if (s->sid >= 0) continue;
    s->sid = sid;
    s->seq = c->st_seq++;
    s->tx_off = s->want_request = 0;
    s->frames_in = s->frames_out = 0;
    s->peer_fin = s->fin_sent = s->keyed = false;
    c->nopen++;
    c->had_stream = true;
    return s;
  }
  return NULL;
}

/* The stream closed: its slot (and decoder) is ready for the next one. */
static void q_stream_drop(struct vsri_conn *c, struct q_stream *s) {
  if (!vsri_decoder_idle(&s->dec)) {
    vsri_decoder_free(&s->dec);
    vsri_conn_decoder_init(&s->dec, c->ctx);
  }
  s->sid = -1;
  c->nopen--;
}

/* ---- ngtcp2 callbacks ------------------------------------------------------------------ */

static ngtcp2_conn *q_get_conn(ngtcp2_crypto_conn_ref *ref) {
  struct vsri_conn *c = ref->user_data;
  return c->qc;
}

static void q_cb_rand(uint8_t *dest, size_t len, const ngtcp2_rand_ctx *rctx) {
  (void)rctx;
  q_rand(dest, len);
}

static int q_cb_new_cid(ngtcp2_conn *qc, ngtcp2_cid *cid, uint8_t *token, size_t cidlen,
                        void *ud) {
  (void)qc;
  struct vsri_conn *c = ud;
  for (int tries = 0; tries < 4; tries++) {
    q_rand(cid->data, cidlen);
    cid->datalen = cidlen;
    if (!c->l) break;
    int err = q_conn_add_cid(c, cid);
    if (err == 0) break;
    if (err != VSR_EDUPLICATE) return NGTCP2_ERR_CALLBACK_FAILURE;
  }
  /* Server tokens derive from the listener's secret (stateless resets stay possible); a
   * client never sends one, so its tokens are just random. */
  if (!c->l) {
    q_rand(token, NGTCP2_STATELESS_RESET_TOKENLEN);
    return 0;
  }
  if (ngtcp2_crypto_generate_stateless_reset_token(token, c->l->reset_secret, 32, cid) != 0) {
    return NGTCP2_ERR_CALLBACK_FAILURE;
  }
  return 0;
}

static int q_cb_remove_cid(ngtcp2_conn *qc, const ngtcp2_cid *cid, void *ud) {
  (void)qc;
  struct vsri_conn *c = ud;
  if (c->l) q_conn_del_cid(c, cid);
  return 0;
}

static int q_cb_handshake_completed(ngtcp2_conn *qc, void *ud) {
  (void)qc;
  struct vsri_conn *c = ud;
  c->hs_done = true;
  gnutls_datum_t alpn = {NULL, 0};
  if (gnutls_alpn_get_selected_protocol(c->tls, &alpn) == 0) {
    VSRI_DEBUG("VSR-QUIC", "%s quic: handshake done, ALPN %.*s", c->name, (int)alpn.size,
               (const char *)alpn.data);
  } else {
    VSRI_DEBUG("VSR-QUIC", "%s quic: handshake done, no ALPN", c->name);
  }
  return 0;
}

static int q_cb_stream_open(ngtcp2_conn *qc, int64_t sid, void *ud) {
  (void)qc;
  struct vsri_conn *c = ud;
  if (!ngtcp2_is_bidi_stream(sid)) {
    return q_violation(c, VSR_ESTREAM, "peer opened a unidirectional stream");
  }
  if (!c->server) return q_violation(c, VSR_ESTREAM, "server opened a stream");
  /* ngtcp2 enforces max_bidi_streams (STREAM_LIMIT_ERROR); a slot is always free here. */
  if (!q_stream_add(c, sid)) {
    if (!c->st) {
      VSRI_WARN("VSR-QUIC", "%s quic: no memory for stream state; closing", c->name);
      c->fail_reason = VSR_ENOMEM;
      return NGTCP2_ERR_CALLBACK_FAILURE;
    }
    return q_violation(c, VSR_ESTREAM, "more concurrent bidirectional streams than allowed");
  }
  return 0;
}

static int q_cb_recv_stream_data(ngtcp2_conn *qc, uint32_t flags, int64_t sid, uint64_t offset,
                                 const uint8_t *data, size_t len, void *ud, void *sud) {
  (void)offset;
  (void)sud;
  struct vsri_conn *c = ud;
  if (flags & NGTCP2_STREAM_DATA_FLAG_EARLY) {
    return q_violation(c, VSR_EPROTO, "stream data in 0-RTT refused");
  }
  ngtcp2_conn_extend_max_stream_offset(qc, sid, len);
  ngtcp2_conn_extend_max_offset(qc, len);
  struct q_stream *s = q_stream_find(c, sid);
  if (!s) {
    if (sid == c->extra_sid) return 0;
    return q_violation(c, VSR_ESTREAM, "data on a stream that carries no frames");
  }
  if (len > 0 && q_feed(c, s, data, len) != 0) return NGTCP2_ERR_CALLBACK_FAILURE;
  if (flags & NGTCP2_STREAM_DATA_FLAG_FIN) {
    s->peer_fin = true;
    if (!vsri_decoder_idle(&s->dec)) {
      int r = vsri_decoder_eof_reason(&s->dec);
      return q_violation(c, r, "stream finished inside a frame");
    }
    q_conn_schedule(c);
  }
  return 0;
}

static int q_cb_acked(ngtcp2_conn *qc, int64_t sid, uint64_t offset, uint64_t len, void *ud,
                      void *sud) {
  (void)qc;
  (void)sud;
  struct vsri_conn *c = ud;
  q_infl_release(c, sid, offset + len, false);
  return 0;
}

static int q_cb_stream_close(ngtcp2_conn *qc, uint32_t flags, int64_t sid, uint64_t app_code,
                             void *ud, void *sud) {
  (void)flags;
  (void)app_code;
  (void)sud;
  struct vsri_conn *c = ud;
  if (sid == c->extra_sid) {
    c->extra_sid = -1;
    return 0;
  }
  q_infl_release(c, sid, 0, true);
  struct q_stream *s = q_stream_find(c, sid);
  if (!s) return 0;
  if (c->q && c->q->off > 0 && c->head_sid == sid) {
    /* The stream was reset inside a frame: the rest of it has nowhere to go. */
    VSRI_DEBUG("VSR-QUIC", "%s quic: stream %lld reset inside a frame; dropping it", c->name,
               (long long)sid);
    vsri_sendq_pop(c->q);
  }
  q_stream_drop(c, s);
  if (c->server && ngtcp2_is_bidi_stream(sid)) ngtcp2_conn_extend_max_streams_bidi(qc, 1);
  q_conn_schedule(c);
  return 0;
}

/* The peer abandoned its side of our stream: close both sides, the frames on it are lost. */
static int q_cb_stream_reset(ngtcp2_conn *qc, int64_t sid, uint64_t final_size,
                             uint64_t app_code, void *ud, void *sud) {
  (void)final_size;
  (void)sud;
  struct vsri_conn *c = ud;
  VSRI_DEBUG("VSR-QUIC", "%s quic: peer reset stream %lld (0x%llx)", c->name, (long long)sid,
             (unsigned long long)app_code);
  ngtcp2_conn_shutdown_stream(qc, sid, app_code);
  return 0;
}

static int q_cb_extend_streams(ngtcp2_conn *qc, uint64_t max_streams, void *ud) {
  (void)qc;
  (void)max_streams;
  q_conn_schedule(ud);
  return 0;
}

static const ngtcp2_callbacks q_server_callbacks = {
    .recv_client_initial = ngtcp2_crypto_recv_client_initial_cb,
    .recv_crypto_data = ngtcp2_crypto_recv_crypto_data_cb,
    .handshake_completed = q_cb_handshake_completed,
    .encrypt = ngtcp2_crypto_encrypt_cb,
    .decrypt = ngtcp2_crypto_decrypt_cb,
    .hp_mask = ngtcp2_crypto_hp_mask_cb,
    .recv_stream_data = q_cb_recv_stream_data,
    .acked_stream_data_offset = q_cb_acked,
    .stream_open = q_cb_stream_open,
    .stream_close = q_cb_stream_close,
    .rand = q_cb_rand,
    .get_new_connection_id = q_cb_new_cid,
    .remove_connection_id = q_cb_remove_cid,
    .update_key = ngtcp2_crypto_update_key_cb,
    .stream_reset = q_cb_stream_reset,
    .delete_crypto_aead_ctx = ngtcp2_crypto_delete_crypto_aead_ctx_cb,
    .delete_crypto_cipher_ctx = ngtcp2_crypto_delete_crypto_cipher_ctx_cb,
    .get_path_challenge_data = ngtcp2_crypto_get_path_challenge_data_cb,
    .version_negotiation = ngtcp2_crypto_version_negotiation_cb,
};

static const ngtcp2_callbacks q_client_callbacks = {
    .client_initial = ngtcp2_crypto_client_initial_cb,
    .recv_crypto_data = ngtcp2_crypto_recv_crypto_data_cb,
    .handshake_completed = q_cb_handshake_completed,
    .encrypt = ngtcp2_crypto_encrypt_cb,
    .decrypt = ngtcp2_crypto_decrypt_cb,
    .hp_mask = ngtcp2_crypto_hp_mask_cb,
    .recv_stream_data = q_cb_recv_stream_data,
    .acked_stream_data_offset = q_cb_acked,
    .stream_open = q_cb_stream_open,
    .stream_close = q_cb_stream_close,
    .recv_retry = ngtcp2_crypto_recv_retry_cb,
    .extend_max_local_streams_bidi = q_cb_extend_streams,
    .extend_max_local_streams_uni = q_cb_extend_streams,
    .rand = q_cb_rand,
    .get_new_connection_id = q_cb_new_cid,
    .update_key = ngtcp2_crypto_update_key_cb,
    .stream_reset = q_cb_stream_reset,
    .delete_crypto_aead_ctx = ngtcp2_crypto_delete_crypto_aead_ctx_cb,
    .delete_crypto_cipher_ctx = ngtcp2_crypto_delete_crypto_cipher_ctx_cb,
    .get_path_challenge_data = ngtcp2_crypto_get_path_challenge_data_cb,
    .version_negotiation = ngtcp2_crypto_version_negotiation_cb,
};

/* ---- TLS ------------------------------------------------------------------------------- */

struct q_alpn_scan {
  bool present, ours;
  char text[96]; /* what the client offered, for the log line */
  size_t len;
};

static void q_alpn_note(struct q_alpn_scan *s, const uint8_t *p, size_t n) {
  if (s->len && s->len + 1 < sizeof s->text) s->text[s->len++] = ',';
  for (size_t i = 0; i < n && s->len + 1 < sizeof s->text; i++) {
    s->text[s->len++] = p[i] >= 0x20 && p[i] < 0x7f ? (char)p[i] : '?';
  }
  s->text[s->len] = '\0';
}

static int q_alpn_ext(void *ctx, unsigned tls_id, const unsigned char *data, unsigned size) {
  struct q_alpn_scan *s = ctx;
  if (tls_id != 16) return 0; /* application_layer_protocol_negotiation */
  s->present = true;
  if (size < 2) return 0;
  size_t total = (size_t)data[0] << 8 | data[1];
  const uint8_t *p = data + 2, *end = p + (total < size - 2 ? total : size - 2);
  while (p < end) {
    size_t n = *p++;
    if (n > (size_t)(end - p)) break;
    if (n == sizeof VSRI_QUIC_ALPN - 1 && memcmp(p, VSRI_QUIC_ALPN, n) == 0) s->ours = true;
    q_alpn_note(s, p, n);
    p += n;
  }
  return 0;
}

/* Server: looks at the ALPN the client offers before GnuTLS negotiates. Offering ours passes;
 * offering none passes unless alpn_required (Iggy mainline's SDKs offer none); offering only
 * others never does. */
static int q_client_hello_hook(gnutls_session_t s, unsigned htype, unsigned when,
                               unsigned incoming, const gnutls_datum_t *msg) {
  if (htype != GNUTLS_HANDSHAKE_CLIENT_HELLO || when != GNUTLS_HOOK_PRE || !incoming) return 0;
  ngtcp2_crypto_conn_ref *ref = gnutls_session_get_ptr(s);
  struct vsri_conn *c = ref->user_data;
  struct q_alpn_scan scan;
  memset(&scan, 0, sizeof scan);
  if (gnutls_ext_raw_parse(&scan, q_alpn_ext, msg, GNUTLS_EXT_RAW_FLAG_TLS_CLIENT_HELLO) < 0) {
    return 0; /* malformed: GnuTLS itself rejects it */
  }
  if (scan.ours) return 0;
  if (!scan.present && !c->cfg->alpn_required) {
    VSRI_DEBUG("VSR-QUIC-ALPN", "%s quic: client offered no ALPN; admitted", c->name);
    return 0;
  }
  VSRI_WARN("VSR-QUIC-ALPN",
            "%s quic: refused at the handshake: client offered %s%s%s; this server requires "
            "ALPN %s%s",
            c->name, scan.present ? "ALPN \"" : "no ALPN", scan.present ? scan.text : "",
            scan.present ? "\"" : "", VSRI_QUIC_ALPN,
            c->cfg->alpn_required ? "" : " (or none)");
  c->alpn_refused = true;
  return GNUTLS_E_NO_APPLICATION_PROTOCOL;
}

static int q_tls_err(struct vsri_conn *c, const char *what, int rv) {
  VSRI_ERROR("VSR-QUIC", "%s quic: %s: %s", c->name, what, gnutls_strerror(rv));
  return VSR_ETLS;
}

static int q_server_tls(struct vsri_conn *c) {
  /* No GNUTLS_ENABLE_EARLY_DATA: 0-RTT is off; no tickets: no resumption to replay. */
  int rv = gnutls_init(&c->tls, GNUTLS_SERVER | GNUTLS_NO_TICKETS | GNUTLS_NO_END_OF_EARLY_DATA);
  if (rv < 0) return q_tls_err(c, "gnutls_init", rv);
  if (ngtcp2_crypto_gnutls_configure_server_session(c->tls) != 0) {
    return q_tls_err(c, "ngtcp2_crypto_gnutls_configure_server_session", GNUTLS_E_INTERNAL_ERROR);
  }
  if ((rv = gnutls_priority_set(c->tls, c->l->prio)) < 0) {
    return q_tls_err(c, "gnutls_priority_set", rv);
  }
  if ((rv = gnutls_credentials_set(c->tls, GNUTLS_CRD_CERTIFICATE, c->l->cert->cred)) < 0) {
    return q_tls_err(c, "gnutls_credentials_set", rv);
  }
  gnutls_datum_t alpn = {(unsigned char *)VSRI_QUIC_ALPN, sizeof VSRI_QUIC_ALPN - 1};
  unsigned flags = c->cfg->alpn_required ? GNUTLS_ALPN_MANDATORY : 0;
  if ((rv = gnutls_alpn_set_protocols(c->tls, &alpn, 1, flags)) < 0) {
    return q_tls_err(c, "gnutls_alpn_set_protocols", rv);
  }
  gnutls_handshake_set_hook_function(c->tls, GNUTLS_HANDSHAKE_CLIENT_HELLO, GNUTLS_HOOK_PRE,
                                     q_client_hello_hook);
  gnutls_session_set_ptr(c->tls, &c->ref);
  ngtcp2_conn_set_tls_native_handle(c->qc, c->tls);
  return 0;
}

/* Client: checks the server certificate against the pin and/or the CA file. */
static int q_verify_cb(gnutls_session_t s) {
  ngtcp2_crypto_conn_ref *ref = gnutls_session_get_ptr(s);
  struct vsri_conn *c = ref->user_data;
  unsigned n = 0;
  const gnutls_datum_t *certs = gnutls_certificate_get_peers(s, &n);
  if (!certs || n == 0) {
    VSRI_WARN("VSR-QUIC-CERT", "%s quic: server sent no certificate", c->name);
    return GNUTLS_E_CERTIFICATE_ERROR;
  }
  if (c->pinned) {
    uint8_t sha[VSRI_SHA256_LEN];
    if (vsri_fingerprint_der(&certs[0], sha) != 0 || memcmp(sha, c->pin, sizeof sha) != 0) {
      char got[VSRI_FINGERPRINT_TEXT_LEN], want[VSRI_FINGERPRINT_TEXT_LEN];
      vsri_fingerprint_format(sha, got);
      vsri_fingerprint_format(c->pin, want);
      VSRI_WARN("VSR-QUIC-CERT", "%s quic: server certificate SHA-256 %s is not the pinned %s",
                c->name, got, want);
      return GNUTLS_E_CERTIFICATE_ERROR;
    }
  }
  if (c->cfg->ca_file) {
    unsigned status = 0;
    int rv = gnutls_certificate_verify_peers3(s, c->cfg->server_name, &status);
    if (rv < 0 || status != 0) {
      gnutls_datum_t txt = {NULL, 0};
      if (rv >= 0) gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &txt, 0);
      VSRI_WARN("VSR-QUIC-CERT", "%s quic: server certificate not trusted by %s: %s", c->name,
                c->cfg->ca_file, rv < 0 ? gnutls_strerror(rv) : (const char *)txt.data);
      gnutls_free(txt.data);
      return GNUTLS_E_CERTIFICATE_ERROR;
    }
  }
  return 0;
}

/* Tests only: a client that lies to itself about the server's stream limits, so it opens
 * streams the server never allowed. Mirrors what ngtcp2_crypto_gnutls_configure_client_session
 * wires up, with the transport parameters edited on the way in. */
static int q_lie_secret(gnutls_session_t s, gnutls_record_encryption_level_t glevel,
                        const void *rx, const void *tx, size_t len) {
  ngtcp2_crypto_conn_ref *ref = gnutls_session_get_ptr(s);
  ngtcp2_conn *qc = ref->get_conn(ref);
  ngtcp2_crypto_level level = ngtcp2_crypto_gnutls_from_gnutls_record_encryption_level(glevel);
  if (rx && ngtcp2_crypto_derive_and_install_rx_key(qc, NULL, NULL, NULL, level, rx, len) != 0) {
    return -1;
  }
  if (tx && ngtcp2_crypto_derive_and_install_tx_key(qc, NULL, NULL, NULL, level, tx, len) != 0) {
    return -1;
  }
  return 0;
}

static int q_lie_read(gnutls_session_t s, gnutls_record_encryption_level_t glevel,
                      gnutls_handshake_description_t htype, const void *data, size_t len) {
  if (htype == GNUTLS_HANDSHAKE_CHANGE_CIPHER_SPEC) return 0;
  ngtcp2_crypto_conn_ref *ref = gnutls_session_get_ptr(s);
  ngtcp2_conn *qc = ref->get_conn(ref);
  ngtcp2_crypto_level level = ngtcp2_crypto_gnutls_from_gnutls_record_encryption_level(glevel);
  int rv = ngtcp2_conn_submit_crypto_data(qc, level, data, len);
  if (rv != 0) {
    ngtcp2_conn_set_tls_error(qc, rv);
    return -1;
  }
  return 0;
}

static int q_lie_alert(gnutls_session_t s, gnutls_record_encryption_level_t glevel,
                       gnutls_alert_level_t alevel, gnutls_alert_description_t desc) {
  (void)glevel;
  (void)alevel;
  ngtcp2_crypto_conn_ref *ref = gnutls_session_get_ptr(s);
  ngtcp2_conn_set_tls_alert(ref->get_conn(ref), (uint8_t)desc);
  return 0;
}

static int q_lie_tp_recv(gnutls_session_t s, const unsigned char *data, size_t len) {
  ngtcp2_crypto_conn_ref *ref = gnutls_session_get_ptr(s);
  struct vsri_conn *c = ref->user_data;
  ngtcp2_transport_params p;
  uint8_t buf[512];
  int rv = ngtcp2_decode_transport_params(&p, NGTCP2_TRANSPORT_PARAMS_TYPE_ENCRYPTED_EXTENSIONS,
                                          data, len);
  if (rv == 0) {
    p.initial_max_streams_bidi += c->cfg->test_lie_streams;
    p.initial_max_streams_uni += c->cfg->test_lie_streams;
    if (p.initial_max_stream_data_uni < 65536) p.initial_max_stream_data_uni = 65536;
    ngtcp2_ssize n = ngtcp2_encode_transport_params(
        buf, sizeof buf, NGTCP2_TRANSPORT_PARAMS_TYPE_ENCRYPTED_EXTENSIONS, &p);
    rv = n < 0 ? (int)n : ngtcp2_conn_decode_remote_transport_params(c->qc, buf, (size_t)n);
  }
  if (rv != 0) {
    ngtcp2_conn_set_tls_error(c->qc, rv);
    return -1;
  }
  return 0;
}

static int q_lie_tp_send(gnutls_session_t s, gnutls_buffer_t extdata) {
  ngtcp2_crypto_conn_ref *ref = gnutls_session_get_ptr(s);
  uint8_t buf[256];
  ngtcp2_ssize n = ngtcp2_conn_encode_local_transport_params(ref->get_conn(ref), buf, sizeof buf);
  if (n < 0) return -1;
  return gnutls_buffer_append_data(extdata, buf, (size_t)n) != 0 ? -1 : 0;
}

static int q_lie_configure(gnutls_session_t s) {
  gnutls_handshake_set_secret_function(s, q_lie_secret);
  gnutls_handshake_set_read_function(s, q_lie_read);
  gnutls_alert_set_read_function(s, q_lie_alert);
  return gnutls_session_ext_register(
      s, "QUIC Transport Parameters", NGTCP2_TLSEXT_QUIC_TRANSPORT_PARAMETERS_V1, GNUTLS_EXT_TLS,
      q_lie_tp_recv, q_lie_tp_send, NULL, NULL, NULL,
      GNUTLS_EXT_FLAG_TLS | GNUTLS_EXT_FLAG_CLIENT_HELLO | GNUTLS_EXT_FLAG_EE);
}

static int q_client_tls(struct vsri_conn *c) {
  const struct vsri_quic_config *cfg = c->cfg;
  int rv = gnutls_certificate_allocate_credentials(&c->cred);
  if (rv < 0) return q_tls_err(c, "gnutls_certificate_allocate_credentials", rv);
  if (cfg->ca_file) {
    rv = gnutls_certificate_set_x509_trust_file(c->cred, cfg->ca_file, GNUTLS_X509_FMT_PEM);
    if (rv <= 0) {
      VSRI_ERROR("VSR-QUIC-CERT", "%s quic: %s: no usable CA certificate (%s)", c->name,
                 cfg->ca_file, rv < 0 ? gnutls_strerror(rv) : "empty");
      return VSR_ECONFIG;
    }
  }
  if ((rv = gnutls_init(&c->tls, GNUTLS_CLIENT | GNUTLS_NO_TICKETS)) < 0) {
    return q_tls_err(c, "gnutls_init", rv);
  }
  rv = cfg->test_lie_streams ? q_lie_configure(c->tls)
                             : ngtcp2_crypto_gnutls_configure_client_session(c->tls);
  if (rv != 0) return q_tls_err(c, "configure client session", GNUTLS_E_INTERNAL_ERROR);
  if ((rv = gnutls_priority_set_direct(c->tls, Q_PRIORITY, NULL)) < 0) {
    return q_tls_err(c, "gnutls_priority_set_direct", rv);
  }
  if ((rv = gnutls_credentials_set(c->tls, GNUTLS_CRD_CERTIFICATE, c->cred)) < 0) {
    return q_tls_err(c, "gnutls_credentials_set", rv);
  }
  const char *alpn = cfg->alpn ? cfg->alpn : "";
  if (*alpn) {
    gnutls_datum_t d = {(unsigned char *)alpn, (unsigned)strlen(alpn)};
    gnutls_alpn_set_protocols(c->tls, &d, 1, GNUTLS_ALPN_MANDATORY);
  }
  const char *name = cfg->server_name ? cfg->server_name : "localhost";
  gnutls_server_name_set(c->tls, GNUTLS_NAME_DNS, name, strlen(name));
  if (!cfg->insecure || c->pinned || cfg->ca_file) {
    gnutls_session_set_verify_function(c->tls, q_verify_cb);
  }
  gnutls_session_set_ptr(c->tls, &c->ref);
  ngtcp2_conn_set_tls_native_handle(c->qc, c->tls);
  return 0;
}

/* ---- connection lifecycle -------------------------------------------------------------- */

static void q_conn_flush(void *arg);
static void q_conn_reap(void *arg);
static void q_on_timer(struct vsri_io *io, struct vsri_completion *t, int32_t res);

static struct vsri_conn *q_conn_alloc(const struct vsri_transport_ctx *ctx,
                                      const struct vsri_quic_config *cfg, struct q_ep *ep,
                                      bool server) {
  struct vsri_conn *c = vsri_calloc(1, sizeof *c);
  if (!c) return NULL;
  /* Stream slots: as many as may be open at once (allocated at the first stream). */
  c->st_want = server || cfg->stream_per_request ? cfg->max_bidi_streams : 1;
  atomic_fetch_add_explicit(&q_live, 1, memory_order_relaxed);
  c->server = server;
  c->ref.get_conn = q_get_conn;
  c->ref.user_data = c;
  c->ctx = ctx;
  c->cfg = cfg;
  c->ep = ep;
  c->head_sid = c->rx_sid = -1;
  c->extra_sid = -1;
  c->flush.fn = q_conn_flush;
  c->flush.ctx = c;
  c->reap.fn = q_conn_reap;
  c->reap.ctx = c;
  ngtcp2_connection_close_error_default(&c->ccerr);
  return c;
}

static void q_settings(ngtcp2_settings *s, const struct vsri_quic_config *cfg, uint64_t now) {
  static const ngtcp2_cc_algo algos[] = {NGTCP2_CC_ALGO_CUBIC, NGTCP2_CC_ALGO_RENO,
                                         NGTCP2_CC_ALGO_BBR2};
  ngtcp2_settings_default(s);
  s->initial_ts = now;
  s->cc_algo = algos[cfg->cc <= VSRI_QUIC_CC_BBR2 ? cfg->cc : 0];
  s->max_window = cfg->conn_window;
  s->max_stream_window = cfg->stream_window;
  s->handshake_timeout = cfg->handshake_grace_ns ? cfg->handshake_grace_ns : UINT64_MAX;
  s->max_tx_udp_payload_size = cfg->max_udp_payload;
  if (cfg->max_udp_payload > 1472) {
    /* Beyond every PMTUD probe: use the size at once (loopback / known paths only). */
    s->no_tx_udp_payload_size_shaping = 1;
    s->no_pmtud = 1;
  }
}

static void q_trace(void *user, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void q_trace(void *user, const char *fmt, ...) {
  struct vsri_conn *c = user;
  char line[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  VSRI_DEBUG("VSR-QUIC-TRACE", "%s %s", c->name, line);
}

static void q_params(ngtcp2_transport_params *p, const struct vsri_quic_config *cfg,
                     bool server) {
  ngtcp2_transport_params_default(p);
  p->initial_max_stream_data_bidi_local = cfg->stream_window;
  p->initial_max_stream_data_bidi_remote = cfg->stream_window;
  p->initial_max_stream_data_uni = 0;
  p->initial_max_data = cfg->conn_window;
  p->initial_max_streams_bidi = server ? cfg->max_bidi_streams : 0;
  p->initial_max_streams_uni = 0;
  p->max_idle_timeout = cfg->idle_timeout_ns;
  p->active_connection_id_limit = 4;
}

static void q_name(struct vsri_conn *c) {
  vsri_format_addr((const struct sockaddr *)&c->remote, c->name, sizeof c->name);
}

/* Creates the server side of a connection for an acceptable client Initial. |odcid|: the
 * client's first Destination Connection ID, from a valid Retry token (NULL: no Retry). */
static int q_server_init(struct vsri_conn *c, const ngtcp2_pkt_hd *hd, const ngtcp2_cid *odcid,
                         uint64_t now) {
  struct vsri_listener *l = c->l;
  ngtcp2_cid scid;
  scid.datalen = Q_SCID_LEN;
  q_rand(scid.data, scid.datalen);
  ngtcp2_settings s;
  q_settings(&s, c->cfg, now);
  if (getenv("VSRBUS_QUIC_TRACE")) s.log_printf = q_trace;
  ngtcp2_transport_params p;
  q_params(&p, c->cfg, true);
  p.original_dcid = hd->dcid;
  if (odcid) {
    /* Validated by Retry: the address is proven (no amplification limit), and the client
     * checks both connection IDs against what it saw. */
    p.original_dcid = *odcid;
    p.retry_scid = hd->dcid;
    p.retry_scid_present = 1;
    s.token = hd->token;
  }
  p.stateless_reset_token_present = 1;
  if (ngtcp2_crypto_generate_stateless_reset_token(p.stateless_reset_token, l->reset_secret, 32,
                                                   &scid) != 0) {
    return VSR_ETLS;
  }
  ngtcp2_path path = {
      .local = {(ngtcp2_sockaddr *)&l->ep.local, l->ep.local_len},
      .remote = {(ngtcp2_sockaddr *)&c->remote, c->remote_len},
  };
  int rv = ngtcp2_conn_server_new(&c->qc, &hd->scid, &scid, &path, hd->version,
                                  &q_server_callbacks, &s, &p, NULL, c);
  if (rv != 0) {
    VSRI_WARN("VSR-QUIC", "%s quic: ngtcp2_conn_server_new: %s", c->name, ngtcp2_strerror(rv));
    return VSR_EQUIC;
  }
  int err = q_server_tls(c);
  if (!err) err = q_conn_add_cid(c, &hd->dcid);
  if (!err) err = q_conn_add_cid(c, &scid);
  return err;
}

/* Frees everything but the struct; the caller decides when the memory goes. */
static void q_conn_release(struct vsri_conn *c) {
  if (c->l) {
    while (c->ncids > 0) q_cidmap_del(&c->l->cids, &c->cids[--c->ncids]);
  }
  if (c->qc) ngtcp2_conn_del(c->qc);
  c->qc = NULL;
  if (c->tls) gnutls_deinit(c->tls);
  c->tls = NULL;
  if (c->cred) gnutls_certificate_free_credentials(c->cred);
  c->cred = NULL;
  q_infl_clear(c);
  q_pend_clear(c);
  for (uint32_t i = 0; i < c->nst; i++) vsri_decoder_free(&c->st[i].dec);
  vsri_free(c->st);
  c->st = NULL;
  c->nst = c->nopen = 0;
  vsri_free(c->close_pkt);
  c->close_pkt = NULL;
}

/* on_closed, once, if an owner is attached (a dialer reports a failed connect first). */
static void q_conn_notify_closed(struct vsri_conn *c) {
  if (c->ev && c->started && !c->closed_notified) {
    c->closed_notified = true;
    if (!c->server && !c->connected_notified && c->ev->on_connected) {
      c->connected_notified = true;
      c->ev->on_connected(c->owner, c, c->reason);
    }
    c->ev->on_closed(c->owner, c, c->reason);
  }
  c->ev = NULL;
  c->owner = NULL;
  c->q = NULL;
}

/* Frees the memory once the reaper ran and no completion still points at |c|. */
static void q_conn_try_free(struct vsri_conn *c) {
  if (!c->reaped || c->timer.pending || (!c->l && c->ep)) return;
  q_conn_notify_closed(c);
  struct vsri_listener *l = c->l;
  if (l) {
    if (c->prev) c->prev->next = c->next;
    else l->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    l->nconns--;
  }
  vsri_free(c);
  atomic_fetch_sub_explicit(&q_live, 1, memory_order_relaxed);
  if (l) q_listener_maybe_free(l);
}

static void q_client_ep_free(struct q_ep *ep) {
  struct vsri_conn *c = ep->owner;
  vsri_free(ep);
  c->ep = NULL;
  q_conn_try_free(c);
}

/* Deferred (nothing of |c| is up the stack): releases everything, cancels what is pending;
 * on_closed and the free follow once the completions are back, so an owner may delete its
 * loop right after on_closed. */
static void q_conn_reap(void *arg) {
  struct vsri_conn *c = arg;
  struct vsri_io *io = c->ctx->io;
  vsri_io_undefer(io, &c->flush);
  if (c->ep) q_ep_unwait(c->ep, c);
  q_conn_release(c);
  c->reaped = true;
  if (c->timer.pending) vsri_io_cancel(io, &c->timer);
  if (!c->l && c->ep) {
    q_ep_kill(c->ep); /* its on_free (maybe right now) finishes the job */
    return;
  }
  q_conn_try_free(c);
}

/* Ends the connection: a server connection that sent CONNECTION_CLOSE lingers for a closing
 * period (answering a peer that keeps sending with the same packet; its owner is told now);
 * everything else goes to the reaper. */
static void q_conn_finish(struct vsri_conn *c, int reason, bool closing_period) {
  if (c->state >= Q_CLOSING) return;
  c->state = Q_CLOSING;
  c->reason = reason;
  vsri_io_undefer(c->ctx->io, &c->flush);
  if (c->l && !c->counted) q_halfopen_leave(c);
  if (closing_period && c->close_pkt && c->l && !c->l->closing && c->qc) {
    q_conn_notify_closed(c);
    uint64_t pto = ngtcp2_conn_get_pto(c->qc);
    c->closing_until = q_now(c) + 3 * pto;
    q_infl_clear(c);
    q_pend_clear(c);
    q_timer_update(c);
    return;
  }
  c->state = Q_DEAD;
  vsri_io_defer(c->ctx->io, &c->reap);
}

/* Sends CONNECTION_CLOSE with c->ccerr (once); the server keeps a copy for the closing
 * period. */
static void q_send_close(struct vsri_conn *c) {
  if (!c->qc || ngtcp2_conn_is_in_closing_period(c->qc) ||
      ngtcp2_conn_is_in_draining_period(c->qc)) {
    return;
  }
  ngtcp2_path_storage ps;
  ngtcp2_path_storage_zero(&ps);
  ngtcp2_pkt_info pi;
  ngtcp2_ssize n = ngtcp2_conn_write_connection_close(c->qc, &ps.path, &pi, q_txbuf, 1500,
                                                      &c->ccerr, vsri_io_now_fresh(c->ctx->io));
  if (n <= 0) return;
  c->close_code = c->ccerr.error_code;
  c->close_app = c->ccerr.type == NGTCP2_CONNECTION_CLOSE_ERROR_CODE_TYPE_APPLICATION;
  c->close_remote = false;
  c->close_known = true;
  q_ep_send(c->ep, (const struct sockaddr *)ps.path.remote.addr, ps.path.remote.addrlen,
            q_txbuf, (size_t)n, (size_t)n);
  if (c->l && (c->close_pkt = vsri_malloc((size_t)n)) != NULL) {
    memcpy(c->close_pkt, q_txbuf, (size_t)n);
    c->close_len = (size_t)n;
  }
}

/* Closes now with |reason|: CONNECTION_CLOSE (application code from the reason unless an
 * error was already recorded), then on_closed. */
static void q_conn_close_now(struct vsri_conn *c, int reason) {
  if (c->state >= Q_CLOSING) return;
  q_set_app_error(c, (uint64_t)q_app_code(reason));
  q_send_close(c);
  q_conn_finish(c, reason, true);
}

/* The peer closed (we are draining) or ngtcp2 says drop: no packet goes out. */
static void q_conn_peer_closed(struct vsri_conn *c) {
  ngtcp2_connection_close_error e;
  ngtcp2_conn_get_connection_close_error(c->qc, &e);
  c->close_code = e.error_code;
  c->close_app = e.type == NGTCP2_CONNECTION_CLOSE_ERROR_CODE_TYPE_APPLICATION;
  c->close_remote = true;
  c->close_known = true;
  int reason = q_peer_reason(e.error_code, c->close_app);
  if (c->reported || !c->server) {
    VSRI_INFO("VSR-QUIC", "%s quic: peer closed with %s 0x%llx%s%.*s (%s)", c->name,
              c->close_app ? "application code" : "transport code",
              (unsigned long long)e.error_code, e.reasonlen ? ": " : "", (int)e.reasonlen,
              e.reason ? (const char *)e.reason : "", vsr_errname(reason));
  }
  q_conn_finish(c, reason, false);
}

/* ngtcp2_conn_read_pkt failed: close with the recorded or inferred error. */
static void q_conn_read_error(struct vsri_conn *c, int rv) {
  int reason;
  switch (rv) {
  case NGTCP2_ERR_DRAINING:
    q_conn_peer_closed(c);
    return;
  case NGTCP2_ERR_DROP_CONN:
  case NGTCP2_ERR_RETRY:
    q_conn_finish(c, VSR_EQUIC, false);
    return;
  case NGTCP2_ERR_CRYPTO: {
    uint8_t alert = ngtcp2_conn_get_tls_alert(c->qc);
    ngtcp2_connection_close_error_set_transport_error_tls_alert(&c->ccerr, alert, NULL, 0);
    c->ccerr_set = true;
    reason = alert == 120 ? VSR_EALPN : VSR_EHANDSHAKE;
    if (!c->alpn_refused) {
      VSRI_INFO("VSR-QUIC", "%s quic: TLS handshake failed (alert %u, %s)", c->name, alert,
                vsr_errname(reason));
    }
    break;
  }
  case NGTCP2_ERR_CALLBACK_FAILURE:
    if (c->fail_reason) {
      reason = c->fail_reason; /* already logged where it was found */
      break;
    }
    /* fall through */
  default:
    reason = q_liberr_reason(rv);
    if (!c->ccerr_set) {
      ngtcp2_connection_close_error_set_transport_error_liberr(&c->ccerr, rv, NULL, 0);
      c->ccerr_set = true;
    }
    VSRI_WARN("VSR-QUIC", "%s quic: %s (%s); closing", c->name, ngtcp2_strerror(rv),
              vsr_errname(reason));
  }
  q_conn_close_now(c, reason);
}

/* After packets were read: report the connection once it is usable, schedule writes. */
static void q_conn_after_input(struct vsri_conn *c) {
  if (c->state >= Q_CLOSING) return;
  if (c->server && !c->reported && c->hs_done && c->had_stream) {
    c->reported = true;
    c->state = Q_OPEN;
    if (!c->counted) q_halfopen_leave(c);
    c->l->on_accept(c->l->owner, c);
    if (c->state >= Q_CLOSING) return;
  }
  if (!c->server && c->hs_done && !c->connected_notified) {
    c->connected_notified = true;
    c->state = Q_OPEN;
    if (c->ev->on_connected) c->ev->on_connected(c->owner, c, 0);
    if (c->state >= Q_CLOSING) return;
  }
  q_conn_schedule(c);
}

static void q_conn_input(struct vsri_conn *c, const struct sockaddr *from, socklen_t fromlen,
                         const uint8_t *pkt, size_t len) {
  if (c->state == Q_CLOSING && c->close_pkt) {
    q_ep_send(c->ep, from, fromlen, c->close_pkt, c->close_len, c->close_len);
    return;
  }
  if (c->state >= Q_CLOSING || !c->qc || len == 0) return;
  ngtcp2_path path = {
      .local = {(ngtcp2_sockaddr *)&c->ep->local, c->ep->local_len},
      .remote = {(ngtcp2_sockaddr *)from, fromlen},
  };
  ngtcp2_pkt_info pi = {0};
  int rv = ngtcp2_conn_read_pkt(c->qc, &path, &pi, pkt, len, vsri_io_now(c->ctx->io));
  if (rv != 0) {
    q_conn_read_error(c, rv);
    return;
  }
  q_conn_after_input(c);
}

/* ---- server side ----------------------------------------------------------------------- */

static void q_send_version_negotiation(struct vsri_listener *l, const struct sockaddr *from,
                                       socklen_t fromlen, const ngtcp2_version_cid *vc,
                                       size_t len) {
  if (len < NGTCP2_MAX_UDP_PAYLOAD_SIZE) return; /* RFC 9000 §6: no reply to small datagrams */
  uint32_t sv[] = {NGTCP2_PROTO_VER_V1};
  uint8_t unused;
  q_rand(&unused, 1);
  ngtcp2_ssize n = ngtcp2_pkt_write_version_negotiation(q_txbuf, 1500, unused, vc->scid,
                                                        vc->scidlen, vc->dcid, vc->dcidlen, sv,
                                                        1);
  if (n > 0) q_ep_send(&l->ep, from, fromlen, q_txbuf, (size_t)n, (size_t)n);
}

/* Flood events are logged per event; the log's per-call-site token bucket (util/log.c) turns a
 * flood into a burst, then one line per interval and "N more like this suppressed". */
static const char *q_peer_text(const struct sockaddr *sa, char *buf, size_t len) {
  vsri_format_addr(sa, buf, len);
  return buf;
}

/* Answers an Initial with a Retry carrying a token that seals the client's address, its first
 * Destination Connection ID and the time; no state is kept. */
static void q_send_retry(struct vsri_listener *l, const struct sockaddr *from, socklen_t fromlen,
                         const ngtcp2_pkt_hd *hd, size_t rxlen, uint64_t now) {
  ngtcp2_cid scid;
  scid.datalen = Q_SCID_LEN;
  q_rand(scid.data, scid.datalen);
  uint8_t token[NGTCP2_CRYPTO_MAX_RETRY_TOKENLEN];
  ngtcp2_ssize tlen = ngtcp2_crypto_generate_retry_token(
      token, l->token_secret, sizeof l->token_secret, hd->version, (const ngtcp2_sockaddr *)from,
      (ngtcp2_socklen)fromlen, &scid, &hd->dcid, now);
  if (tlen < 0) return;
  size_t cap = rxlen * 3 < 1500 ? rxlen * 3 : 1500; /* RFC 9000 §8: at most 3x what came in */
  ngtcp2_ssize n = ngtcp2_crypto_write_retry(q_txbuf, cap, hd->version, &hd->scid, &scid,
                                             &hd->dcid, token, (size_t)tlen);
  if (n > 0) q_ep_send(&l->ep, from, fromlen, q_txbuf, (size_t)n, (size_t)n);
}

/* Refuses an Initial whose Retry token does not verify, without keeping state. */
static void q_send_invalid_token(struct vsri_listener *l, const struct sockaddr *from,
                                 socklen_t fromlen, const ngtcp2_pkt_hd *hd) {
  ngtcp2_ssize n = ngtcp2_crypto_write_connection_close(
      q_txbuf, 1200, hd->version, &hd->scid, &hd->dcid, NGTCP2_INVALID_TOKEN, NULL, 0);
  if (n > 0) q_ep_send(&l->ep, from, fromlen, q_txbuf, (size_t)n, (size_t)n);
}

/* Makes room by closing a half-open: CONNECTION_REFUSED goes out (a real client gives up at
 * once instead of waiting for its handshake timeout), its memory goes at the end of the turn. */
static void q_evict(struct vsri_listener *l, struct vsri_conn *v) {
  if (!v) return;
  l->adm.evicted++;
  VSRI_INFO("VSR-QUIC-FLOOD", "%s quic: %u half-open (max_handshakes); evicted the oldest, from "
            "%s (%s)", l->name, l->nhandshaking, v->name,
            v->validated || v->hs_done ? "address validated" : "address not validated");
  if (!v->ccerr_set) {
    ngtcp2_connection_close_error_set_transport_error(&v->ccerr, NGTCP2_CONNECTION_REFUSED, NULL,
                                                      0);
    v->ccerr_set = true;
  }
  q_send_close(v);
  q_conn_finish(v, VSR_ELIMIT, false);
}

/* A packet for no known connection: a client Initial starts one, if admitted. Address
 * validation (Retry) is asked of every Initial without a valid token once retry_threshold
 * half-opens exist, and of a source already holding max_handshakes_per_source; a forged or
 * expired token is refused; a full max_handshakes evicts the oldest half-open (unvalidated
 * first) rather than refusing the newcomer. A validated newcomer is not held to its source's
 * limit: it proved its address with a round trip, many real clients may share one address
 * (NAT, one host's benchmark), and a source that keeps validating can only push out the
 * oldest half-opens, never lock newcomers out. */
static struct vsri_conn *q_server_accept(struct vsri_listener *l, const struct sockaddr *from,
                                         socklen_t fromlen, const uint8_t *pkt, size_t len) {
  ngtcp2_pkt_hd hd;
  if (l->closing || ngtcp2_accept(&hd, pkt, len) != 0) return NULL;
  uint64_t now = vsri_io_now(l->ctx->io);
  const struct vsri_quic_config *cfg = &l->cfg;
  l->adm.initials++;
  uint8_t key[Q_SRCKEY];
  q_src_key(from, key);
  uint32_t per_source = cfg->max_handshakes_per_source;
  bool source_full = per_source && q_src_count(l, key) >= per_source;
  ngtcp2_cid odcid;
  bool validated = false;
  /* Only Retry tokens are ours (no NEW_TOKEN is ever sent): any other token is ignored. */
  if (hd.token.len > 0 && hd.token.base[0] == NGTCP2_CRYPTO_TOKEN_MAGIC_RETRY) {
    if (ngtcp2_crypto_verify_retry_token(
            &odcid, hd.token.base, hd.token.len, l->token_secret, sizeof l->token_secret,
            hd.version, (const ngtcp2_sockaddr *)from, (ngtcp2_socklen)fromlen, &hd.dcid,
            cfg->retry_token_lifetime_ns, now) != 0) {
      l->adm.tokens_invalid++;
      char peer[64];
      VSRI_WARN("VSR-QUIC-FLOOD", "%s quic: Initial from %s with a forged, expired or misdirected "
                "Retry token refused (INVALID_TOKEN)", l->name,
                q_peer_text(from, peer, sizeof peer));
      q_send_invalid_token(l, from, fromlen, &hd);
      return NULL;
    }
    validated = true;
  }
  if (!validated &&
      (cfg->retry_threshold == 0 || l->nhandshaking >= cfg->retry_threshold || source_full)) {
    l->adm.retries++;
    char peer[64];
    q_peer_text(from, peer, sizeof peer);
    if (source_full) {
      l->adm.retry_source++;
      VSRI_INFO("VSR-QUIC-FLOOD", "%s quic: %s holds %u half-open handshakes "
                "(max_handshakes_per_source); address validation (Retry) asked of it", l->name,
                peer, per_source);
    } else {
      VSRI_INFO("VSR-QUIC-FLOOD", "%s quic: %u half-open handshakes (retry_threshold %u); "
                "address validation (Retry) asked of %s", l->name, l->nhandshaking,
                cfg->retry_threshold, peer);
    }
    q_send_retry(l, from, fromlen, &hd, len, now);
    return NULL;
  }
  if (l->nhandshaking >= cfg->max_handshakes) q_evict(l, q_halfopen_victim(l));
  struct vsri_conn *c = q_conn_alloc(l->ctx, &l->cfg, &l->ep, true);
  if (!c) return NULL;
  c->l = l;
  c->validated = validated;
  if (validated) l->adm.validated++;
  memcpy(&c->remote, from, fromlen);
  c->remote_len = fromlen;
  q_name(c);
  c->grace_at = now + l->cfg.handshake_grace_ns;
  c->next = l->conns;
  if (l->conns) l->conns->prev = c;
  l->conns = c;
  l->nconns++;
  q_halfopen_enter(c, from);
  int err = q_server_init(c, &hd, validated ? &odcid : NULL, now);
  if (err) {
    q_conn_finish(c, err, false);
    return NULL;
  }
  return c;
}

static void q_server_packet(struct q_ep *ep, const struct sockaddr *from, socklen_t fromlen,
                            const uint8_t *pkt, size_t len) {
  struct vsri_listener *l = ep->owner;
  if (len == 0) return; /* an empty datagram: ngtcp2 asserts on it */
  ngtcp2_version_cid vc;
  int rv = ngtcp2_pkt_decode_version_cid(&vc, pkt, len, Q_SCID_LEN);
  if (rv == NGTCP2_ERR_VERSION_NEGOTIATION) {
    q_send_version_negotiation(l, from, fromlen, &vc, len);
    return;
  }
  if (rv != 0) return;
  struct vsri_conn *c = q_cidmap_find(&l->cids, vc.dcid, vc.dcidlen);
  if (!c && !(c = q_server_accept(l, from, fromlen, pkt, len))) return;
  q_conn_input(c, from, fromlen, pkt, len);
}

/* ---- writing --------------------------------------------------------------------------- */

/* Frames stream |s| may still carry: all of them on a long-lived stream; on a stream the peer
 * finished, one answer per frame it carried; one frame per stream for a client in
 * stream_per_request mode. */
static uint32_t q_stream_allowance(const struct vsri_conn *c, const struct q_stream *s) {
  if (s->fin_sent) return 0;
  if (c->server) {
    if (!s->peer_fin) return UINT32_MAX;
    return s->frames_in > s->frames_out ? s->frames_in - s->frames_out : 0;
  }
  if (c->cfg->stream_per_request) return s->frames_out == 0 ? 1 : 0;
  return UINT32_MAX;
}

/* Whether we finish the stream once its allowance is used up. */
static bool q_stream_finite(const struct vsri_conn *c, const struct q_stream *s) {
  return c->server ? s->peer_fin : c->cfg->stream_per_request;
}

/* Client: opens a stream for the queue head (its long-lived stream, or the next request's). */
static struct q_stream *q_client_open_stream(struct vsri_conn *c) {
  if (!c->hs_done || c->nopen == c->st_want) return NULL; /* a closing stream reschedules us */
  int64_t sid;
  /* NGTCP2_ERR_STREAM_ID_BLOCKED: the server's MAX_STREAMS credit is used up;
   * extend_max_local_streams_bidi reschedules us when it grows. */
  if (ngtcp2_conn_open_bidi_stream(c->qc, &sid, NULL) != 0) return NULL;
  struct q_stream *s = q_stream_add(c, sid);
  if (!s) { /* only memory can fail here: the slot count was checked */
    ngtcp2_conn_shutdown_stream(c->qc, sid, 0);
    VSRI_WARN("VSR-QUIC", "%s quic: no memory for stream state; closing", c->name);
    if (!c->fail_reason) c->fail_reason = VSR_ENOMEM;
    q_conn_schedule(c);
  }
  return s;
}

/* The stream the queue head |m| goes on, or NULL: it waits until a stream can take it.
 * A frame partly handed over continues on its stream. Server, several streams open: a Reply
 * goes to the oldest stream whose last Request carried the same `request` number (Iggy
 * mainline's matching); any other frame, and a Reply that matches none, goes first come first
 * served to the oldest stream that still owes an answer (a Reply preferring streams that carried
 * a Request, anything else preferring the others), else to the oldest long-lived stream.
 * Client: a stream that may still carry a frame, else a new one. */
static struct q_stream *q_route(struct vsri_conn *c, const struct vsr_msg *m) {
  if (c->q->off > 0) return q_stream_find(c, c->head_sid);
  if (!c->server) {
    for (uint32_t i = 0; i < c->nst; i++) {
      struct q_stream *s = &c->st[i];
      if (s->sid >= 0 && q_stream_allowance(c, s) > 0) return s;
    }
    return q_client_open_stream(c);
  }
  bool reply = m->data[60] == VSR_CMD_REPLY;
  uint64_t req = reply ? ((const struct vsr_reply_header *)m->data)->request : 0;
  /* Candidates: [0] matching Reply, [1] owes and carried a Request, [2] owes, carried
   * something else, [3] long-lived with nothing owed. Oldest of each. */
  struct q_stream *best[4] = {NULL, NULL, NULL, NULL};
  for (uint32_t i = 0; i < c->nst; i++) {
    struct q_stream *s = &c->st[i];
    if (s->sid < 0 || q_stream_allowance(c, s) == 0) continue;
    bool owes = s->frames_in > s->frames_out;
    int k = !owes ? 3 : !s->keyed ? 2 : reply && s->want_request == req ? 0 : 1;
    if (!best[k] || s->seq < best[k]->seq) best[k] = s;
  }
  if (best[0]) return best[0];
  if (reply) return best[1] ? best[1] : best[2] ? best[2] : best[3];
  return best[2] ? best[2] : best[1] ? best[1] : best[3];
}

/* Points |v| at the queued bytes the next write carries and sets *|out| to their stream.
 * Returns the vector count; sets *fin when the stream should be finished after them. A stream
 * with nothing more to carry is finished first (a bare FIN), whatever the queue holds. */
static size_t q_stream_vec(struct vsri_conn *c, ngtcp2_vec *v, bool *fin,
                           struct q_stream **out) {
  *fin = false;
  *out = NULL;
  for (uint32_t i = 0; i < c->nst; i++) {
    struct q_stream *s = &c->st[i];
    if (s->sid < 0 || s->fin_sent || !q_stream_finite(c, s) || q_stream_allowance(c, s) > 0) {
      continue;
    }
    if (c->server || s->frames_out > 0) {
      *fin = true;
      *out = s;
      return 0;
    }
  }
  if (c->stream_blocked || !c->q || c->q->len == 0) return 0;
  struct q_stream *s = q_route(c, vsri_sendq_peek(c->q, 0));
  if (!s) return 0;
  uint32_t allow = q_stream_allowance(c, s);
  if (allow == 0) return 0;
  uint32_t n = c->q->len < allow ? c->q->len : allow;
  /* Several frames per call only where they can go nowhere else: one stream open. Frames for
   * other streams still share the packet (the write loop calls again with WRITE_MORE). */
  if (c->nopen > 1) n = 1;
  if (n > Q_VEC) n = Q_VEC;
  if (n > 1 && c->cfg->unbatched) n = 1;
  if (!q_infl_reserve(c, n)) return 0;
  for (uint32_t i = 0; i < n; i++) {
    struct vsr_msg *m = vsri_sendq_peek(c->q, i);
    uint32_t off = i == 0 ? c->q->off : 0;
    v[i].base = m->data + off;
    v[i].len = m->size - off;
  }
  *fin = q_stream_finite(c, s) && n == allow;
  *out = s;
  return n;
}

/* ngtcp2 took |n| bytes of stream |s|: frames wholly handed over move to the in-flight list
 * (their reference lives there until acked), the queue lets go of them. */
static void q_stream_took(struct vsri_conn *c, struct q_stream *s, size_t n, size_t offered,
                          bool fin) {
  struct vsri_sendq *q = c->q;
  if (fin && n == offered) s->fin_sent = true;
  while (n > 0) {
    struct vsr_msg *m = vsri_sendq_peek(q, 0);
    size_t rest = m->size - q->off;
    if (n < rest) {
      q->off += (uint32_t)n;
      s->tx_off += n;
      c->head_sid = s->sid;
      return;
    }
    n -= rest;
    s->tx_off += rest;
    q_infl_push(c, s->sid, m, s->tx_off);
    vsri_sendq_pop(q);
    s->frames_out++;
  }
}

/* Test stream: raw bytes on an extra stream. */
static size_t q_extra_vec(struct vsri_conn *c, ngtcp2_vec *v) {
  if (c->extra_sid < 0 || c->extra_off >= c->extra_len) return 0;
  v->base = (uint8_t *)c->extra_data + c->extra_off;
  v->len = c->extra_len - c->extra_off;
  return 1;
}

/* What the next ngtcp2 write call carries: the test stream's bytes, else queued frames. */
struct q_wv {
  ngtcp2_vec v[Q_VEC];
  size_t cnt, offered;
  int64_t sid;
  struct q_stream *st;
  bool fin, extra;
};

static void q_write_vec(struct vsri_conn *c, struct q_wv *w) {
  w->fin = w->extra = false;
  w->sid = -1;
  w->st = NULL;
  w->cnt = q_extra_vec(c, w->v);
  if (w->cnt) {
    w->extra = true;
    w->sid = c->extra_sid;
  } else {
    w->cnt = q_stream_vec(c, w->v, &w->fin, &w->st);
    if (w->st) w->sid = w->st->sid;
  }
  w->offered = 0;
  for (size_t i = 0; i < w->cnt; i++) w->offered += w->v[i].len;
}

/* Handles a write call's result for the stream side. Returns 1 to call again for the same
 * packet, 0 if a packet (or nothing) came out, -1 on a fatal error (the connection closed). */
static int q_write_result(struct vsri_conn *c, const struct q_wv *w, ngtcp2_ssize n,
                          ngtcp2_ssize nd) {
  if (nd >= 0 && w->sid >= 0) {
    if (w->extra) c->extra_off += (size_t)nd;
    else q_stream_took(c, w->st, (size_t)nd, w->offered, w->fin);
  }
  if (n == NGTCP2_ERR_WRITE_MORE) return 1;
  if (n == NGTCP2_ERR_STREAM_DATA_BLOCKED || n == NGTCP2_ERR_STREAM_SHUT_WR ||
      n == NGTCP2_ERR_STREAM_NOT_FOUND) {
    if (w->extra) c->extra_off = c->extra_len;
    else if (w->cnt == 0 && w->st) w->st->fin_sent = true; /* a FIN with nowhere to go */
    else c->stream_blocked = true; /* until the next write round */
    return 1;
  }
  if (n >= 0) return 0;
  if (!c->ccerr_set) {
    ngtcp2_connection_close_error_set_transport_error_liberr(&c->ccerr, (int)n, NULL, 0);
    c->ccerr_set = true;
  }
  VSRI_WARN("VSR-QUIC", "%s quic: write: %s; closing", c->name, ngtcp2_strerror((int)n));
  q_conn_close_now(c, q_liberr_reason((int)n));
  return -1;
}

static size_t q_burst_packets(struct vsri_conn *c, size_t mtu) {
  size_t max_pkts = ngtcp2_conn_get_send_quantum(c->qc) / mtu;
  if (max_pkts < 1) max_pkts = 1;
  if (max_pkts > Q_MAX_BURST) max_pkts = Q_MAX_BURST;
  if (max_pkts > Q_BURST_BYTES / mtu) max_pkts = Q_BURST_BYTES / mtu;
  if (c->cfg->unbatched) max_pkts = 1;
  return max_pkts;
}

/* Writes one GSO burst of up to send_quantum: equal-size packets back to back in q_txbuf, one
 * sendmsg. Returns 1 if more could be written right away, 0 if ngtcp2 has nothing more (or
 * pacing / congestion says wait), -1 if the connection failed. */
static int q_write_burst(struct vsri_conn *c, uint64_t ts) {
  size_t mtu = ngtcp2_conn_get_max_tx_udp_payload_size(c->qc);
  size_t path_mtu = ngtcp2_conn_get_path_max_tx_udp_payload_size(c->qc);
  size_t max_pkts = q_burst_packets(c, mtu);
  uint32_t flag_more = c->cfg->unbatched ? 0 : NGTCP2_WRITE_STREAM_FLAG_MORE;
  ngtcp2_path_storage ps;
  ngtcp2_path_storage_zero(&ps);
  const struct sockaddr *to = (const struct sockaddr *)ps.path.remote.addr;
  ngtcp2_pkt_info pi;
  size_t off = 0, npk = 0, seg = 0;
  int more = 1;
  for (;;) {
    struct q_wv w;
    q_write_vec(c, &w);
    uint32_t flags = flag_more | (w.fin ? NGTCP2_WRITE_STREAM_FLAG_FIN : 0);
    ngtcp2_ssize nd = -1;
    ngtcp2_ssize n = ngtcp2_conn_writev_stream(c->qc, &ps.path, &pi, q_txbuf + off, mtu, &nd,
                                               flags, w.sid, w.v, w.cnt, ts);
    int r = q_write_result(c, &w, n, nd);
    if (r < 0) return -1;
    if (r > 0) continue;
    if (n == 0) {
      more = 0;
      break;
    }
    if (npk == 0) seg = (size_t)n;
    if ((size_t)n > seg) {
      /* Larger than the burst's segments (a PMTUD probe): send the burst, then it alone. */
      q_ep_send(c->ep, to, ps.path.remote.addrlen, q_txbuf, off, seg);
      q_ep_send(c->ep, to, ps.path.remote.addrlen, q_txbuf + off, (size_t)n, (size_t)n);
      off = 0;
      break;
    }
    off += (size_t)n;
    if (++npk >= max_pkts || (size_t)n < seg || seg > path_mtu) break;
  }
  if (off) q_ep_send(c->ep, to, ps.path.remote.addrlen, q_txbuf, off, seg);
  /* Pacing starts once the handshake is done: ngtcp2 0.12 would pace the first flight with the
   * 333 ms initial RTT (one ~25 ms gap before the client's Finished) although an RTT sample
   * arrives a round trip later. The handshake flights are small and amplification-limited. */
  if (c->hs_done) ngtcp2_conn_update_pkt_tx_time(c->qc, ts);
  return more;
}

static void q_conn_write(struct vsri_conn *c) {
  if (c->state >= Q_CLOSING || !c->qc) return;
  if (ngtcp2_conn_is_in_closing_period(c->qc) || ngtcp2_conn_is_in_draining_period(c->qc)) {
    return;
  }
  if (q_ep_blocked(c->ep)) {
    q_ep_wait(c->ep, c);
    return;
  }
  c->stream_blocked = false;
  for (int i = 0; i < Q_BURSTS_PER_WRITE; i++) {
    int r = q_write_burst(c, vsri_io_now_fresh(c->ctx->io));
    if (r < 0) return;
    if (r == 0) return;
    if (q_ep_blocked(c->ep)) {
      q_ep_wait(c->ep, c);
      return;
    }
  }
  c->write_soon = true; /* budget spent with more to send: continue next turn */
}

/* ---- deferred work and timers ---------------------------------------------------------- */

static void q_conn_schedule(struct vsri_conn *c) {
  if (c->state < Q_CLOSING) vsri_io_defer(c->ctx->io, &c->flush);
}

/* Before-poll: deliver held frames, honour close requests, write, re-arm the timer. */
static void q_conn_flush(void *arg) {
  struct vsri_conn *c = arg;
  if (c->state >= Q_CLOSING || !c->qc) return;
  if (c->fail_reason) {
    q_conn_close_now(c, c->fail_reason);
    return;
  }
  if (c->started && c->pend_len) {
    q_deliver_pending(c);
    if (c->state >= Q_CLOSING) return;
  }
  if (c->started && !c->keepalive_set) {
    c->keepalive_set = true;
    if (c->cfg->keep_alive_ns) ngtcp2_conn_set_keep_alive_timeout(c->qc, c->cfg->keep_alive_ns);
  }
  if (c->close_req) {
    bool empty = (!c->q || c->q->len == 0) && c->infl_len == 0;
    if (!c->close_drain || empty) {
      q_conn_close_now(c, c->reason);
      return;
    }
  }
  if (c->q && c->q->len > 0) c->had_data = true;
  q_conn_write(c);
  if (c->state >= Q_CLOSING) return;
  if (c->had_data && c->started && c->q && c->q->len == 0 && c->infl_len == 0) {
    c->had_data = false;
    if (c->ev->on_drained) c->ev->on_drained(c->owner, c);
    if (c->state >= Q_CLOSING) return;
  }
  q_timer_update(c);
}

/* Keeps one timer per connection at the earliest deadline: ngtcp2's expiry, the handshake
 * grace, the drain bound, the closing period. A later deadline leaves the armed timer alone
 * (it re-checks when it fires); an earlier one cancels and re-arms from the callback. */
static void q_timer_update(struct vsri_conn *c) {
  if (c->state == Q_DEAD) return;
  uint64_t now = vsri_io_now(c->ctx->io), at;
  if (c->state == Q_CLOSING) {
    at = c->closing_until;
  } else {
    at = ngtcp2_conn_get_expiry(c->qc);
    if (c->server && !c->hs_done && c->grace_at < at) at = c->grace_at;
    if (c->close_req && c->close_drain && c->drain_at < at) at = c->drain_at;
    if (c->write_soon) at = now;
  }
  if (at == UINT64_MAX) return;
  if (c->timer.pending) {
    if (c->timer_at <= at) return;
    vsri_io_cancel(c->ctx->io, &c->timer);
    return;
  }
  c->timer_at = at;
  vsri_io_timeout(c->ctx->io, &c->timer, at > now ? at - now : 0, q_on_timer, c);
}

static void q_expiry_error(struct vsri_conn *c, int rv) {
  if (rv == NGTCP2_ERR_IDLE_CLOSE) {
    c->close_known = true;
    c->close_remote = false;
    c->close_app = false;
    c->close_code = NGTCP2_NO_ERROR;
    if (c->reported || !c->server) {
      VSRI_INFO("VSR-QUIC", "%s quic: idle timeout; closed", c->name);
    } else {
      VSRI_INFO("VSR-QUIC", "%s quic: idle before opening a stream; dropped", c->name);
    }
    q_conn_finish(c, VSR_EIDLE, false);
    return;
  }
  if (rv == NGTCP2_ERR_HANDSHAKE_TIMEOUT) {
    VSRI_INFO("VSR-QUIC", "%s quic: handshake did not finish in %llu ms; dropped", c->name,
              (unsigned long long)(c->cfg->handshake_grace_ns / NGTCP2_MILLISECONDS));
    q_conn_finish(c, VSR_EHANDSHAKE_TIMEOUT, false);
    return;
  }
  if (!c->ccerr_set) {
    ngtcp2_connection_close_error_set_transport_error_liberr(&c->ccerr, rv, NULL, 0);
    c->ccerr_set = true;
  }
  VSRI_WARN("VSR-QUIC", "%s quic: timer: %s; closing", c->name, ngtcp2_strerror(rv));
  q_conn_close_now(c, q_liberr_reason(rv));
}

static void q_on_timer(struct vsri_io *io, struct vsri_completion *t, int32_t res) {
  struct vsri_conn *c = t->ctx;
  if (c->state == Q_DEAD) {
    q_conn_try_free(c);
    return;
  }
  if (res == -ECANCELED) {
    q_timer_update(c);
    return;
  }
  uint64_t now = vsri_io_now_fresh(io);
  q_stats.timer_fires++;
  if (c->state == Q_CLOSING) {
    if (now >= c->closing_until) {
      c->state = Q_DEAD;
      vsri_io_defer(io, &c->reap);
    } else {
      q_timer_update(c);
    }
    return;
  }
  /* The grace bounds the handshake only: once it completed, a connection that has not opened
   * its first stream yet lives until the idle timeout (as in Iggy mainline). */
  if (c->server && !c->hs_done && now >= c->grace_at) {
    VSRI_INFO("VSR-QUIC", "%s quic: handshake not done within %llu ms; closing with 0x%x",
              c->name,
              (unsigned long long)(c->cfg->handshake_grace_ns / NGTCP2_MILLISECONDS),
              VSRI_QUIC_HANDSHAKE_FAILED);
    q_conn_close_now(c, VSR_EHANDSHAKE_TIMEOUT);
    return;
  }
  if (c->close_req && c->close_drain && now >= c->drain_at) {
    VSRI_INFO("VSR-QUIC", "%s quic: queue not drained within close grace; closing", c->name);
    q_conn_close_now(c, c->reason);
    return;
  }
  c->write_soon = false;
  if (now >= ngtcp2_conn_get_expiry(c->qc)) {
    int rv = ngtcp2_conn_handle_expiry(c->qc, now);
    if (rv != 0) {
      q_expiry_error(c, rv);
      return;
    }
  }
  q_conn_write(c);
  if (c->state >= Q_CLOSING) return;
  q_timer_update(c);
}

/* ---- listener -------------------------------------------------------------------------- */

static void q_listener_ep_free(struct q_ep *ep) {
  struct vsri_listener *l = ep->owner;
  vsri_free(l->cids.slots);
  vsri_free(l->srcs);
  if (l->prio) gnutls_priority_deinit(l->prio);
  vsri_cert_free(l->own_cert);
  vsri_free(l);
  atomic_fetch_sub_explicit(&q_live, 1, memory_order_relaxed);
}

/* A closed listener goes once its last connection has. */
static void q_listener_maybe_free(struct vsri_listener *l) {
  if (l->closing && l->nconns == 0 && !l->ep.dead) q_ep_kill(&l->ep);
}

static int q_listener_cert(struct vsri_listener *l) {
  if (l->cfg.cert) {
    l->cert = l->cfg.cert;
    return 0;
  }
  int err;
  if (l->cfg.cert_file || l->cfg.key_file) {
    err = vsri_cert_load(&l->own_cert, l->cfg.cert_file, l->cfg.key_file);
  } else {
    err = vsri_cert_generate(&l->own_cert, "localhost", 365);
  }
  if (err) return err;
  l->cert = l->own_cert;
  return 0;
}

static int q_listen(struct vsri_listener **out, const struct vsri_transport_ctx *ctx,
                    const char *addr, void (*on_accept)(void *owner, struct vsri_conn *conn),
                    void *owner) {
  struct sockaddr_storage sa;
  socklen_t len;
  if (vsri_parse_addr(addr, &sa, &len) < 0) {
    VSRI_ERROR("VSR-ADDR", "quic: cannot parse listen address \"%s\": %s", addr,
               vsri_parse_addr_why());
    return VSR_EADDR;
  }
  int err = vsri_quic_config_check(q_cfg(ctx));
  if (err) return err;
  struct vsri_listener *l = vsri_calloc(1, sizeof *l);
  if (!l) return VSR_ENOMEM;
  atomic_fetch_add_explicit(&q_live, 1, memory_order_relaxed);
  l->ctx = ctx;
  l->cfg = *q_cfg(ctx);
  l->on_accept = on_accept;
  l->owner = owner;
  q_rand(l->reset_secret, sizeof l->reset_secret);
  q_rand(l->token_secret, sizeof l->token_secret);
  q_rand((uint8_t *)&l->cids.seed, sizeof l->cids.seed);
  l->srcs_cap = 64;
  while (l->srcs_cap < 2 * l->cfg.max_handshakes) l->srcs_cap *= 2;
  l->srcs = vsri_calloc(l->srcs_cap, sizeof *l->srcs);
  err = l->srcs ? q_listener_cert(l) : VSR_ENOMEM;
  if (!err && gnutls_priority_init(&l->prio, Q_PRIORITY, NULL) < 0) {
    VSRI_ERROR("VSR-QUIC", "quic: gnutls_priority_init failed");
    l->prio = NULL;
    err = VSR_ETLS;
  }
  if (!err) err = q_ep_open(&l->ep, ctx->io, (struct sockaddr *)&sa, len, true, &l->cfg, addr);
  if (err) {
    if (l->prio) gnutls_priority_deinit(l->prio);
    vsri_free(l->srcs);
    vsri_cert_free(l->own_cert);
    vsri_free(l);
    atomic_fetch_sub_explicit(&q_live, 1, memory_order_relaxed);
    return err;
  }
  l->ep.owner = l;
  l->ep.on_packet = q_server_packet;
  l->ep.on_free = q_listener_ep_free;
  vsri_format_addr((struct sockaddr *)&l->ep.local, l->name, sizeof l->name);
  char fp[VSRI_FINGERPRINT_TEXT_LEN];
  vsri_fingerprint_format(l->cert->sha256, fp);
  VSRI_INFO("VSR-QUIC", "%s quic: listening (ALPN %s%s, GSO %s, GRO %s); %s certificate "
            "SHA-256 %s", l->name, VSRI_QUIC_ALPN, l->cfg.alpn_required ? " required" : " or none",
            l->ep.gso ? "on" : "off", l->ep.gro ? "on" : "off",
            l->cert->generated ? "self-signed localhost" : "server", fp);
  q_ep_rx_arm(&l->ep);
  *out = l;
  return 0;
}

static void q_listener_addr(const struct vsri_listener *l, char *buf, size_t len) {
  vsri_format_addr((const struct sockaddr *)&l->ep.local, buf, len);
}

/* Stops accepting: connections not yet reported are closed; reported ones stay with their
 * owner (they share the socket, which closes after the last of them). */
static void q_listener_close(struct vsri_listener *l) {
  if (l->closing) return;
  l->closing = true;
  for (struct vsri_conn *c = l->conns; c; c = c->next) {
    if (!c->reported && c->state < Q_CLOSING) {
      q_conn_close_now(c, VSR_ESHUTDOWN);
    } else if (c->state == Q_CLOSING) {
      c->state = Q_DEAD; /* cut the closing period short */
      vsri_io_defer(c->ctx->io, &c->reap);
    }
  }
  q_listener_maybe_free(l);
}

void vsri_quic_listener_fingerprint(const struct vsri_listener *l, uint8_t out[32]) {
  memcpy(out, l->cert->sha256, VSRI_SHA256_LEN);
}

uint32_t vsri_quic_listener_conns(const struct vsri_listener *l) { return l->nconns; }

void vsri_quic_listener_admission(const struct vsri_listener *l, struct vsri_quic_admission *out) {
  *out = l->adm;
  out->halfopen = l->nhandshaking;
}

uint32_t vsri_quic_listener_halfopen_from(const struct vsri_listener *l,
                                          const struct sockaddr *addr) {
  uint8_t key[Q_SRCKEY];
  q_src_key(addr, key);
  return q_src_count(l, key);
}

void vsri_quic_test_conn_set_tx(struct vsri_conn *c,
                                void (*tx)(void *user, const uint8_t *pkt, size_t len),
                                void *user) {
  c->ep->tx_hook = tx;
  c->ep->tx_hook_user = user;
}

void vsri_quic_test_conn_input(struct vsri_conn *c, const struct sockaddr *from,
                               socklen_t fromlen, const uint8_t *pkt, size_t len) {
  q_conn_input(c, from, fromlen, pkt, len);
}

void vsri_quic_listener_conn_agg(const struct vsri_listener *l, struct vsri_quic_conn_agg *out) {
  *out = (struct vsri_quic_conn_agg){0};
  for (const struct vsri_conn *c = l->conns; c; c = c->next) {
    if (c->state != Q_OPEN || !c->qc) continue;
    ngtcp2_conn_stat st;
    ngtcp2_conn_get_conn_stat(c->qc, &st);
    out->conns++;
    out->srtt_ns_sum += st.smoothed_rtt;
    if (st.smoothed_rtt > out->srtt_ns_max) out->srtt_ns_max = st.smoothed_rtt;
    out->cwnd_sum += st.cwnd;
    if (st.cwnd > out->cwnd_max) out->cwnd_max = st.cwnd;
    out->in_flight_sum += st.bytes_in_flight;
    out->pto_count_sum += st.pto_count;
  }
}

void vsri_quic_listener_input(struct vsri_listener *l, const struct sockaddr *from,
                              socklen_t fromlen, const uint8_t *pkt, size_t len) {
  q_server_packet(&l->ep, from, fromlen, pkt, len);
}

void vsri_quic_listener_set_tx(struct vsri_listener *l,
                               void (*tx)(void *user, const uint8_t *pkt, size_t len),
                               void *user) {
  l->ep.tx_hook = tx;
  l->ep.tx_hook_user = user;
}

/* ---- dialing --------------------------------------------------------------------------- */

static void q_client_packet(struct q_ep *ep, const struct sockaddr *from, socklen_t fromlen,
                            const uint8_t *pkt, size_t len) {
  q_conn_input(ep->owner, from, fromlen, pkt, len);
}

static void q_client_error(struct q_ep *ep, int err) {
  struct vsri_conn *c = ep->owner;
  if (err == ECONNREFUSED && !c->hs_done && c->state < Q_CLOSING) {
    VSRI_DEBUG("VSR-QUIC", "%s quic: connection refused (no UDP listener)", c->name);
    q_conn_finish(c, VSR_ECONNREFUSED, false);
    return;
  }
  VSRI_DEBUG("VSR-QUIC", "%s quic: socket: %s", c->name, strerror(err));
}

static int q_client_init(struct vsri_conn *c, const struct vsri_quic_config *cfg) {
  ngtcp2_cid dcid, scid;
  dcid.datalen = 18;
  q_rand(dcid.data, dcid.datalen);
  scid.datalen = Q_SCID_LEN;
  q_rand(scid.data, scid.datalen);
  ngtcp2_settings s;
  q_settings(&s, cfg, vsri_io_now_fresh(c->ctx->io));
  if (getenv("VSRBUS_QUIC_TRACE")) s.log_printf = q_trace;
  ngtcp2_transport_params p;
  q_params(&p, cfg, false);
  ngtcp2_path path = {
      .local = {(ngtcp2_sockaddr *)&c->ep->local, c->ep->local_len},
      .remote = {(ngtcp2_sockaddr *)&c->remote, c->remote_len},
  };
  int rv = ngtcp2_conn_client_new(&c->qc, &dcid, &scid, &path, NGTCP2_PROTO_VER_V1,
                                  &q_client_callbacks, &s, &p, NULL, c);
  if (rv != 0) {
    VSRI_ERROR("VSR-QUIC", "%s quic: ngtcp2_conn_client_new: %s", c->name, ngtcp2_strerror(rv));
    return rv == NGTCP2_ERR_NOMEM ? VSR_ENOMEM : VSR_EQUIC;
  }
  if (cfg->keep_alive_ns) ngtcp2_conn_set_keep_alive_timeout(c->qc, cfg->keep_alive_ns);
  c->keepalive_set = true;
  return q_client_tls(c);
}

static int q_connect(struct vsri_conn **out, const struct vsri_transport_ctx *ctx,
                     const char *addr, const struct vsri_conn_events *ev, void *owner,
                     struct vsri_sendq *q) {
  const struct vsri_quic_config *cfg = q_cfg(ctx);
  struct sockaddr_storage sa;
  socklen_t len;
  if (vsri_parse_addr(addr, &sa, &len) < 0) return VSR_EADDR;
  int err = vsri_quic_config_check(cfg);
  if (err) return err;
  uint8_t pin[VSRI_SHA256_LEN];
  if (cfg->pin_sha256 && vsri_fingerprint_parse(cfg->pin_sha256, pin) != 0) {
    VSRI_ERROR("VSR-CONFIG", "quic: pinned SHA-256 \"%s\" is not 64 hex digits", cfg->pin_sha256);
    return VSR_ECONFIG;
  }
  if (!cfg->pin_sha256 && !cfg->ca_file && !cfg->insecure) {
    VSRI_ERROR("VSR-CONFIG", "quic: dialing %s needs a CA/certificate file, a pinned SHA-256, "
               "or insecure mode", addr);
    return VSR_ECONFIG;
  }
  struct q_ep *ep = vsri_calloc(1, sizeof *ep);
  if (!ep) return VSR_ENOMEM;
  struct vsri_conn *c = q_conn_alloc(ctx, cfg, ep, false);
  if (!c) {
    vsri_free(ep);
    return VSR_ENOMEM;
  }
  memcpy(&c->remote, &sa, len);
  c->remote_len = len;
  q_name(c);
  c->ev = ev;
  c->owner = owner;
  c->q = q;
  c->started = true;
  c->pinned = cfg->pin_sha256 != NULL;
  memcpy(c->pin, pin, sizeof pin);
  ep->owner = c;
  ep->on_packet = q_client_packet;
  ep->on_error = q_client_error;
  ep->on_free = q_client_ep_free;
  err = q_ep_open(ep, ctx->io, (struct sockaddr *)&sa, len, false, cfg, c->name);
  if (!err) err = q_client_init(c, cfg);
  if (err) {
    c->ev = NULL;
    q_conn_release(c);
    if (ep->fd >= 0) close(ep->fd);
    vsri_free(ep->rx_buf);
    vsri_free(ep);
    vsri_free(c);
    atomic_fetch_sub_explicit(&q_live, 1, memory_order_relaxed);
    return err;
  }
  q_ep_rx_arm(ep);
  q_conn_schedule(c);
  *out = c;
  return 0;
}

/* ---- ops ------------------------------------------------------------------------------- */

static void q_start(struct vsri_conn *c, const struct vsri_conn_events *ev, void *owner,
                    struct vsri_sendq *q) {
  c->ev = ev;
  c->owner = owner;
  c->q = q;
  c->started = true;
  c->last_rx = q_now(c); /* the owner's idle clock starts now; earlier frames were held */
  q_conn_schedule(c);
}

static void q_kick(struct vsri_conn *c) {
  if (c->started && c->state < Q_CLOSING) q_conn_schedule(c);
}

static void q_close(struct vsri_conn *c, int reason, bool drain) {
  if (c->state >= Q_CLOSING) return;
  if (c->close_req) {
    if (!drain) c->close_drain = false; /* escalate a drain to a hard close */
    q_conn_schedule(c);
    return;
  }
  c->close_req = true;
  c->reason = reason;
  c->close_drain = drain && c->started && c->hs_done;
  uint64_t grace = c->ctx->drain_timeout_ns ? c->ctx->drain_timeout_ns : c->cfg->close_grace_ns;
  c->drain_at = vsri_io_now(c->ctx->io) + grace;
  q_conn_schedule(c);
}

static const char *q_peer_name(const struct vsri_conn *c) { return c->name; }

/* The oldest frame in progress on any open stream is the one the frame timeout judges. */
static void q_rx_clock(const struct vsri_conn *c, struct vsri_rx_clock *out) {
  *out = (struct vsri_rx_clock){.last_rx_ns = c->last_rx};
  for (uint32_t i = 0; i < c->nst; i++) {
    const struct q_stream *s = &c->st[i];
    uint32_t have, size;
    if (s->sid < 0) continue;
    vsri_decoder_progress(&s->dec, &have, &size);
    if (!have || (out->frame_start_ns && out->frame_start_ns <= s->frame_start)) continue;
    out->frame_start_ns = s->frame_start;
    out->frame_have = have;
    out->frame_size = size;
  }
}

void vsri_quic_close_info(const struct vsri_conn *c, uint64_t *code, bool *app, bool *remote) {
  *code = c->close_known ? c->close_code : 0;
  *app = c->close_app;
  *remote = c->close_remote;
}

int64_t vsri_quic_frame_stream(const struct vsri_conn *c) { return c->rx_sid; }

int vsri_quic_test_open_stream(struct vsri_conn *c, bool bidi, const uint8_t *data, size_t len) {
  if (!c->qc || c->state >= Q_CLOSING || c->extra_sid >= 0) return VSR_EINVAL;
  int64_t sid;
  int rv = bidi ? ngtcp2_conn_open_bidi_stream(c->qc, &sid, NULL)
                : ngtcp2_conn_open_uni_stream(c->qc, &sid, NULL);
  if (rv != 0) return VSR_ESTREAM;
  c->extra_sid = sid;
  c->extra_data = data;
  c->extra_len = len;
  c->extra_off = 0;
  q_conn_schedule(c);
  return 0;
}

const struct vsri_transport_ops vsri_transport_quic = {
    .name = "quic",
    .listen = q_listen,
    .listener_addr = q_listener_addr,
    .listener_close = q_listener_close,
    .connect = q_connect,
    .start = q_start,
    .kick = q_kick,
    .close = q_close,
    .peer_name = q_peer_name,
    .rx_clock = q_rx_clock,
};
