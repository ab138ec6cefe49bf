/* QUIC transport, internal header shared by the files of src/transport/quic/.
 *
 * ngtcp2 0.12 + GnuTLS on the vsrbus loop (no thread, no second runtime).
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
#ifndef VSRI_TRANSPORT_QUIC_IMPL_H
#define VSRI_TRANSPORT_QUIC_IMPL_H

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
#include "util/list.h"
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

/* Functions and data shared between the files are external; these names keep the q_ spelling in
 * the source but give the linker a vsri_ prefix (the static library must not export q_*). */
#define q_app_code vsri_q_app_code
#define q_cfg vsri_q_cfg
#define q_cidmap_del vsri_q_cidmap_del
#define q_cidmap_find vsri_q_cidmap_find
#define q_client_ep_free vsri_q_client_ep_free
#define q_client_tls vsri_q_client_tls
#define q_conn_add_cid vsri_q_conn_add_cid
#define q_conn_alloc vsri_q_conn_alloc
#define q_conn_close_now vsri_q_conn_close_now
#define q_conn_destroy vsri_q_conn_destroy
#define q_abort vsri_q_abort
#define q_conn_del_cid vsri_q_conn_del_cid
#define q_conn_finish vsri_q_conn_finish
#define q_conn_flush vsri_q_conn_flush
#define q_conn_input vsri_q_conn_input
#define q_conn_release vsri_q_conn_release
#define q_conn_schedule vsri_q_conn_schedule
#define q_conn_try_free vsri_q_conn_try_free
#define q_conn_write vsri_q_conn_write
#define q_connect vsri_q_connect
#define q_deliver_pending vsri_q_deliver_pending
#define q_ep_blocked vsri_q_ep_blocked
#define q_ep_kill vsri_q_ep_kill
#define q_ep_open vsri_q_ep_open
#define q_ep_rx_arm vsri_q_ep_rx_arm
#define q_ep_send vsri_q_ep_send
#define q_ep_unwait vsri_q_ep_unwait
#define q_ep_wait vsri_q_ep_wait
#define q_feed vsri_q_feed
#define q_get_conn vsri_q_get_conn
#define q_halfopen_leave vsri_q_halfopen_leave
#define q_infl_abandon vsri_q_infl_abandon
#define q_infl_clear vsri_q_infl_clear
#define q_infl_drop_stream vsri_q_infl_drop_stream
#define q_infl_kernel vsri_q_infl_kernel
#define q_infl_push vsri_q_infl_push
#define q_infl_release vsri_q_infl_release
#define q_infl_reserve vsri_q_infl_reserve
#define q_liberr_reason vsri_q_liberr_reason
#define q_listen vsri_q_listen
#define q_listener_addr vsri_q_listener_addr
#define q_listener_close vsri_q_listener_close
#define q_listener_maybe_free vsri_q_listener_maybe_free
#define q_name vsri_q_name
#define q_now vsri_q_now
#define q_on_timer vsri_q_on_timer
#define q_params vsri_q_params
#define q_peer_reason vsri_q_peer_reason
#define q_pend_clear vsri_q_pend_clear
#define q_rand vsri_q_rand
#define q_send_close vsri_q_send_close
#define q_server_init vsri_q_server_init
#define q_server_packet vsri_q_server_packet
#define q_server_tls vsri_q_server_tls
#define q_set_app_error vsri_q_set_app_error
#define q_settings vsri_q_settings
#define q_stream_add vsri_q_stream_add
#define q_stream_drop vsri_q_stream_drop
#define q_stream_find vsri_q_stream_find
#define q_timer_update vsri_q_timer_update
#define q_trace vsri_q_trace
#define q_violation vsri_q_violation
#define q_txbuf vsri_q_txbuf
#define q_live vsri_q_live
#define q_stats vsri_q_stats
#define q_server_callbacks vsri_q_server_callbacks
#define q_client_callbacks vsri_q_client_callbacks
#define q_mem vsri_q_mem
#define q_test_client_tls vsri_q_test_client_tls
#define q_src_key vsri_q_src_key
#define q_src_count vsri_q_src_count
#define q_cid_fill vsri_q_cid_fill
#define q_reuseport_join vsri_q_reuseport_join
#define q_reuseport_route vsri_q_reuseport_route

/* ---- types ----------------------------------------------------------------------------- */

struct q_ep;
typedef void (*q_packet_fn)(struct q_ep *ep, const struct sockaddr *from, socklen_t fromlen,
                            const uint8_t *pkt, size_t len);

/* A UDP socket and its receive / send machinery. */
struct q_ep {
  struct vsri_io *io;
  int fd;
  bool gso, gro, connected;
  bool dead;  /* owner gone: closed and released (vsri_io_release) */
  bool in_rx; /* inside the receive callback: that callback lets go when it returns */
  bool gone;  /* closed and handed to the io layer */
  struct vsri_io_grave grave;
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
  struct vsri_list waiters; /* connections waiting for the parked burst (vsri_conn.wait_link) */
  void (*tx_hook)(void *user, const uint8_t *pkt, size_t len);
  void *tx_hook_user;
};

struct q_cident {
  struct q_conn *conn; /* NULL: empty slot */
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

/* A listener: the transport-neutral base first (transport.h), then the QUIC state. */
struct q_listener {
  struct vsri_listener base; /* first: vsri_transport_quic's ops convert with q_listener_of */
  const struct vsri_transport_ctx *ctx;
  struct vsri_quic_config cfg;
  struct q_ep ep;
  struct vsri_cert *own_cert;
  const struct vsri_cert *cert;
  void (*on_accept)(void *owner, struct vsri_conn *conn);
  void *owner;
  struct q_cidmap cids;
  struct vsri_list conns; /* every connection, live or closing (vsri_conn.l_link) */
  uint32_t nconns;
  uint32_t nhandshaking; /* not yet reported to the owner */
  uint8_t reset_secret[32];
  bool closing;
  bool walking; /* q_listener_close walks |conns|: the listener must not free under it */
  char name[64];
  /* Handshake-flood admission: half-opens (server connections not yet reported) oldest first,
   * counted per source; Retry tokens sealed with |token_secret|. */
  struct vsri_list halfopen; /* oldest first (vsri_conn.ho_link) */
  struct q_src *srcs; /* open addressing, 2x max_handshakes slots */
  uint32_t srcs_cap;
  uint8_t token_secret[32];
  gnutls_priority_t prio; /* parsed once: ~8 KiB and a string parse less per handshake */
  struct vsri_quic_admission adm;
  uint8_t shard, shards; /* shards: the CIDs it chooses name |shard| (quic_shard.c) */
};

/* A connection's life, in order (a connection only moves forward; comparisons rely on it).
 *   HANDSHAKING  TLS/QUIC handshake under way (a server one is "half-open": not reported).
 *   ESTABLISHED  handshake done, not yet reported to an owner (a server connection waits for
 *                the client's first stream; a client one is reported at once).
 *   ACTIVE       reported (server: on_accept; client: on_connected): frames flow.
 *   DRAINING     the owner asked to close: the queue drains (close_drain) or the next flush
 *                closes at once; reading has stopped.
 *   CLOSING      CONNECTION_CLOSE sent (or received): a server connection lingers for its
 *                closing period, answering a peer that keeps sending.
 *   CLOSED       finished: the reaper is queued.
 *   REAPED       resources released; the memory goes once no completion points at it. */
enum q_state { Q_HANDSHAKING, Q_ESTABLISHED, Q_ACTIVE, Q_DRAINING, Q_CLOSING, Q_CLOSED, Q_REAPED };

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

/* What the owner was told about an in-flight frame (quic_infl.c). */
enum q_infl_state {
  Q_INFL_TAKEN = 0, /* ngtcp2 took it; the kernel has not yet: not reported */
  Q_INFL_SENT,      /* reported sent */
  Q_INFL_DROPPED,   /* reported dropped */
};

/* A frame whose bytes ngtcp2 may still need: released once acked up to |end| (|done|). */
struct q_infl {
  struct vsr_msg *m;
  int64_t sid;
  uint64_t end;
  bool done;
  enum q_infl_state state;
};

/* A connection: the transport-neutral base first (transport.h), then the QUIC state. */
struct q_conn {
  struct vsri_conn base;      /* first: vsri_transport_quic's ops convert with q_conn_of */
  ngtcp2_crypto_conn_ref ref; /* the GnuTLS session's pointer */
  const struct vsri_transport_ctx *ctx;
  const struct vsri_quic_config *cfg;
  struct q_listener *l; /* server side; NULL when dialed */
  struct q_ep *ep;
  struct vsri_list_node l_link;    /* on the listener's |conns| (server side) */
  struct vsri_list_node wait_link; /* on the endpoint's |waiters| while waiting */
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
  bool server;
  bool started; /* an owner is attached (server: start(); client: from connect) */
  bool counted; /* server: no longer counted as half-open */
  bool connected_notified, closed_notified; /* upcalls made (each once) */
  bool notifying; /* inside the on_closed upcall: not destroyed under it */
  bool close_drain; /* DRAINING: wait for the queue to empty (else close at the next flush) */
  bool keepalive_set, had_data, write_soon, alpn_refused;
  bool hs_confirmed; /* ngtcp2's handshake_confirmed: the client's Initial keys are gone */
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
  struct q_infl *infl;       /* in-flight frames: storage of |infl_ring| (quic_infl.c) */
  struct vsri_ring infl_ring;
  uint32_t infl_unsent;      /* the newest entries not yet reported sent or dropped */
  bool tx_parked;            /* a burst with our packets waits on the endpoint (EAGAIN) */
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
  struct vsri_list_node ho_link; /* on the listener's |halfopen| while counted there */
  bool validated;
  uint8_t srckey[Q_SRCKEY];
  /* Tests: an extra stream carrying raw bytes. */
  int64_t extra_sid;
  const uint8_t *extra_data;
  size_t extra_len, extra_off;
  char name[64];
};

static inline struct q_conn *q_conn_of(struct vsri_conn *b) {
  return vsri_container_of(b, struct q_conn, base);
}
static inline const struct q_conn *q_conn_of_const(const struct vsri_conn *b) {
  return vsri_container_of(b, const struct q_conn, base);
}
static inline struct q_listener *q_listener_of(struct vsri_listener *b) {
  return vsri_container_of(b, struct q_listener, base);
}
static inline const struct q_listener *q_listener_of_const(const struct vsri_listener *b) {
  return vsri_container_of(b, const struct q_listener, base);
}

/* ---- shared data ------------------------------------------------------------------------- */

extern _Thread_local uint8_t q_txbuf[Q_BUF];
extern atomic_uint q_live;
extern _Thread_local struct vsri_quic_stats q_stats;
extern const ngtcp2_callbacks q_server_callbacks;
extern const ngtcp2_callbacks q_client_callbacks;
/* ngtcp2's heap: per-thread free lists by size class (quic_mem.c). */
extern const ngtcp2_mem q_mem;
/* Tests: blocks on this thread's free list of class |cls| (64 B << cls). */
uint32_t vsri_quic_mem_cached(unsigned cls);
/* Test hooks (quic_testhooks.c, static library only): NULL in the shipped library. */
extern int (*q_test_client_tls)(gnutls_session_t s);

/* The handshake completed. A close request (DRAINING) hides the state it interrupted, and a
 * connection past it no longer asks: there ngtcp2 knows. */
static inline bool q_hs_done(const struct q_conn *c) {
  if (c->state >= Q_DRAINING) return c->qc && ngtcp2_conn_get_handshake_completed(c->qc);
  return c->state >= Q_ESTABLISHED;
}

/* ---- shared functions, by file ----------------------------------------------------------- */

/* quic_config.c */
const struct vsri_quic_config *q_cfg(const struct vsri_transport_ctx *ctx);
void q_rand(uint8_t *dst, size_t len);
uint64_t q_now(const struct q_conn *c);
int q_app_code(int reason);
int q_peer_reason(uint64_t code, bool app);
int q_liberr_reason(int rv);
void q_set_app_error(struct q_conn *c, uint64_t code);
int q_violation(struct q_conn *c, int reason, const char *what);

/* quic_cid.c */
struct q_conn *q_cidmap_find(const struct q_cidmap *m, const uint8_t *id, size_t len);
void q_cidmap_del(struct q_cidmap *m, const ngtcp2_cid *cid);
int q_conn_add_cid(struct q_conn *c, const ngtcp2_cid *cid);
void q_conn_del_cid(struct q_conn *c, const ngtcp2_cid *cid);

/* quic_shard.c */
void q_cid_fill(const struct q_listener *l, uint8_t *data, size_t len);
int q_reuseport_join(struct vsri_io *io, int fd, const struct sockaddr *sa, socklen_t len,
                     const struct vsri_transport_ctx *ctx);
int q_reuseport_route(struct vsri_io *io, int fd, const struct vsri_transport_ctx *ctx);

/* quic_listen.c */
void q_src_key(const struct sockaddr *sa, uint8_t key[Q_SRCKEY]);
uint32_t q_src_count(const struct q_listener *l, const uint8_t key[Q_SRCKEY]);
void q_halfopen_leave(struct q_conn *c);
void q_server_packet(struct q_ep *ep, const struct sockaddr *from, socklen_t fromlen,
                     const uint8_t *pkt, size_t len);
void q_listener_maybe_free(struct q_listener *l);
int q_listen(struct vsri_listener **out, const struct vsri_transport_ctx *ctx,
             const char *addr, void (*on_accept)(void *owner, struct vsri_conn *conn),
             void *owner);
void q_listener_addr(const struct vsri_listener *l, char *buf, size_t len);
void q_listener_close(struct vsri_listener *l);

/* quic_ep.c */
int q_ep_open(struct q_ep *ep, struct vsri_io *io, const struct sockaddr *sa,
              socklen_t len, bool server, const struct vsri_quic_config *cfg,
              const char *text, const struct vsri_transport_ctx *ctx);
void q_ep_kill(struct q_ep *ep);
void q_ep_rx_arm(struct q_ep *ep);
void q_ep_send(struct q_ep *ep, const struct sockaddr *to, socklen_t tolen,
               const uint8_t *data, size_t len, size_t seg);
bool q_ep_blocked(const struct q_ep *ep);
void q_ep_wait(struct q_ep *ep, struct q_conn *c);
void q_ep_unwait(struct q_ep *ep, struct q_conn *c);

/* quic_infl.c */
bool q_infl_reserve(struct q_conn *c, uint32_t n);
void q_infl_push(struct q_conn *c, int64_t sid, struct vsr_msg *m, uint64_t end);
void q_infl_release(struct q_conn *c, int64_t sid, uint64_t upto, bool all);
void q_infl_clear(struct q_conn *c);
/* The kernel took every packet written so far: reports their frames sent. */
void q_infl_kernel(struct q_conn *c);
/* The peer reset stream |sid|: its frames not yet reported are dropped now (VSR_ESTREAM); their
 * references stay until the stream closes. */
void q_infl_drop_stream(struct q_conn *c, int64_t sid);
/* The connection closes with |reason|: frames not yet reported are dropped (before on_closed). */
void q_infl_abandon(struct q_conn *c, int reason);

/* quic_stream.c */
void q_deliver_pending(struct q_conn *c);
void q_pend_clear(struct q_conn *c);
int q_feed(struct q_conn *c, struct q_stream *s, const uint8_t *p, size_t n);
struct q_stream *q_stream_find(struct q_conn *c, int64_t sid);
struct q_stream *q_stream_add(struct q_conn *c, int64_t sid);
void q_stream_drop(struct q_conn *c, struct q_stream *s);

/* quic_cb.c */
ngtcp2_conn *q_get_conn(ngtcp2_crypto_conn_ref *ref);

/* quic_tls.c */
int q_server_tls(struct q_conn *c);
int q_client_tls(struct q_conn *c);

/* quic_conn.c */
struct q_conn *q_conn_alloc(const struct vsri_transport_ctx *ctx,
                               const struct vsri_quic_config *cfg, struct q_ep *ep,
                               bool server);
void q_settings(ngtcp2_settings *s, const struct vsri_quic_config *cfg, uint64_t now,
                const struct sockaddr *peer);
void q_trace(void *user, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void q_params(ngtcp2_transport_params *p, const struct vsri_quic_config *cfg,
              bool server);
void q_name(struct q_conn *c);
int q_server_init(struct q_conn *c, const ngtcp2_pkt_hd *hd, const ngtcp2_cid *odcid,
                  uint64_t now);
void q_conn_release(struct q_conn *c);
void q_conn_try_free(struct q_conn *c);
/* Frees |c| now, telling no owner (abort, listener close): resources, timer, CID entries, the
 * listener's list, a dialed connection's own endpoint. */
void q_conn_destroy(struct q_conn *c);
void q_abort(struct q_conn *c, int reason);
void q_client_ep_free(struct q_ep *ep);
void q_conn_finish(struct q_conn *c, int reason, bool closing_period);
void q_send_close(struct q_conn *c);
void q_conn_close_now(struct q_conn *c, int reason);
void q_conn_input(struct q_conn *c, const struct sockaddr *from, socklen_t fromlen,
                  const uint8_t *pkt, size_t len);

/* quic_write.c */
void q_conn_write(struct q_conn *c);

/* quic_timer.c */
void q_conn_schedule(struct q_conn *c);
void q_conn_flush(void *arg);
void q_timer_update(struct q_conn *c);
void q_on_timer(struct vsri_io *io, struct vsri_completion *t, int32_t res);

/* quic_dial.c */
int q_connect(struct vsri_conn **out, const struct vsri_transport_ctx *ctx,
              const char *addr, const struct vsri_conn_events *ev, void *owner,
              struct vsri_sendq *q);

#endif
