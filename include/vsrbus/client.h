/* Client SDK: connect to a vsrbus node (or an Iggy consensus server) over TCP or QUIC, send
 * frames, receive frames. Two ways to use it:
 *   - on a loop you run (vsr_client_new + callbacks): many clients on one thread, no blocking;
 *   - blocking, for scripts and tests (vsr_client_connect, vsr_client_recv, vsr_client_call):
 *     the client runs a private loop inside each call. */
#ifndef VSRBUS_CLIENT_H
#define VSRBUS_CLIENT_H

#include <stdint.h>

#include "vsrbus/error.h"
#include "vsrbus/loop.h"
#include "vsrbus/msg.h"
#include "vsrbus/wire.h"

#ifdef __cplusplus
extern "C" {
#endif

struct vsr_client;

/* How a QUIC client carries frames (vsr_client_options.quic.streams). */
enum vsr_quic_streams {
  /* One bidirectional stream per frame, finished after it; the reply comes back on it. Iggy
   * mainline's SDK model: its server reads exactly one frame per stream. Up to
   * quic.max_streams frames are in flight at once, each on its own stream, as far as the
   * server's stream limit allows (a vsrbus node allows 1 unless --quic-max-bidi-streams);
   * frames on different streams may reach the server in any order. */
  VSR_QUIC_STREAMS_PER_REQUEST = 0,
  /* One long-lived stream carries every frame, in order (the seed's model; vsrbus servers
   * only: a mainline server answers only the first frame). */
  VSR_QUIC_STREAMS_LONG = 1,
};

/* QUIC client settings: vsr_client_options.quic (used when transport is "quic"). Each transport
 * with settings of its own has a struct like this one, embedded under its name. */
struct vsr_client_quic_options {
  /* Server verification: a CA/cert PEM file, or a pinned SHA-256 fingerprint of the server
   * certificate (64 hex digits, ':' allowed), or insecure (tests only). */
  const char *ca_file;
  const char *pin_sha256;
  bool insecure;
  const char *alpn;      /* ALPN offered; default NULL (or ""): none, as Iggy mainline's SDK
                            (its server advertises none, and rustls aborts a QUIC handshake
                            when the client offers an ALPN the server lacks);
                            "iggy.consensus.v1" for a server that requires it */
  enum vsr_quic_streams streams; /* default VSR_QUIC_STREAMS_PER_REQUEST (mainline) */
  uint32_t max_streams;  /* per-request: frames in flight at once, default 16 (1..1024) */
  bool loopback_pmtud;   /* default false: with a server on loopback (127/8, ::1) packets are
                            65,000 bytes once the handshake is done (lo's MTU is 65,536;
                            PMTUD stops at 1452; 1 MiB frames move 2-3x faster); true: PMTUD
                            as on any path (docs/quic.md, "Packet size") */
};

/* TLS and secure WebSocket client settings: vsr_client_options.tls (transport "tls" or "wss";
 * "ws" needs none). One of ca_file, pin_sha256 or insecure is required. */
struct vsr_client_tls_options {
  const char *ca_file;     /* PEM CA bundle (or the server's own certificate) to verify with */
  const char *pin_sha256;  /* SHA-256 of the server certificate's DER (64 hex, ':' allowed) */
  bool insecure;           /* no verification (tests only) */
  const char *server_name; /* SNI and the name checked with ca_file; default "localhost" */
  const char *cert_file;   /* a client certificate and its key (a node with --tls-client-ca) */
  const char *key_file;
};

struct vsr_client_options {
  const char *transport;      /* "tcp" (default), "quic", "tls", "ws" or "wss" */
  const char *addr;           /* "127.0.0.1:8090" */
  uint32_t max_message_size;  /* default 64 MiB */
  uint32_t queue_capacity;    /* frames queued for sending, default 4096 */
  uint32_t max_batch;         /* frames per vectored write, default 1024 (IOV_MAX) */
  struct vsr_client_quic_options quic; /* transport "quic" only */

  /* ---- cluster and session (docs/client.md). Off unless |session| is true; with it off the
   * client is the raw frame pipe above (one address, no reconnect). ---- */
  const char *const *addrs;   /* every replica's address in replica-index order (entry i is
                                 replica i); NULL: the cluster is { addr } (a cluster of one).
                                 The strings are copied. */
  uint32_t addr_count;        /* entries in addrs; 0: use addr */
  bool session;               /* default false. true: register a session (Operation Register)
                                 on connect, send to the primary (view mod addr_count), resend
                                 on timeout, reconnect with backoff, heartbeat; enables
                                 vsr_client_request*() */
  vsr_u128 cluster;           /* cluster id stamped on Request and PingClient, default 0 */
  vsr_u128 client_id;         /* default 0: a random non-zero id is drawn */
  const void *register_body;  /* body of the Register request (copied), default NULL: none */
  uint32_t register_body_len;
  uint32_t max_pending;       /* requests queued behind the one in flight, default 64 */
  uint64_t request_timeout_ns;  /* default 1 s: no Reply within it -> the same request goes to
                                   the next replica (one replica: resent on the connection) */
  uint64_t request_deadline_ns; /* default 30 s from submission: then VSR_ETIMEDOUT */
  uint64_t reconnect_min_ns;    /* default 50 ms: backoff base (full jitter, doubling) */
  uint64_t reconnect_max_ns;    /* default 2 s: backoff cap */
  uint64_t heartbeat_period_ns; /* default 1 s: PingClient while connected (0: off); keeps a
                                   quiet client inside the server's client_idle_timeout */
  uint64_t liveness_timeout_ns; /* default 5 s: nothing received for this long (or a connect
                                   not done) -> reconnect to the next replica (0: off) */
  /* TCP, raw and session mode alike: */
  uint64_t tcp_keepalive_ns;    /* default 15 s: SO_KEEPALIVE with TCP_KEEPIDLE = this,
                                   TCP_KEEPINTVL = this / 3 (>= 1 s), TCP_KEEPCNT = 3; 0: off */
  uint64_t tcp_user_timeout_ns; /* default 30 s: TCP_USER_TIMEOUT (unacknowledged data);
                                   0: the kernel's default */
  struct vsr_client_tls_options tls;   /* appended (issue 16): transports "tls" and "wss" */
};

void vsr_client_options_default(struct vsr_client_options *o);

struct vsr_client_callbacks {
  /* A frame arrived; borrowed for the call. NULL: frames wait in the inbox (vsr_client_recv). */
  void (*on_message)(void *user, struct vsr_client *c, struct vsr_msg *msg);
  /* Connected (status 0) or closed (status < 0, the reason). May be NULL. */
  void (*on_state)(void *user, struct vsr_client *c, int status);
};

/* Starts connecting on |loop|. Returns 0, VSR_EADDR (the address does not parse or resolve),
 * VSR_EINVAL or VSR_ENOMEM; a refused or unreachable peer is reported later through on_state
 * (VSR_ECONNREFUSED, VSR_EUNREACH, VSR_ETIMEDOUT, ...). */
int vsr_client_new(struct vsr_client **out, struct vsr_loop *loop,
                   const struct vsr_client_options *o, const struct vsr_client_callbacks *cb,
                   void *user);

/* Closes the connection at once and frees the client: never runs the loop and calls no
 * callback (QUIC: CONNECTION_CLOSE is sent first). Frames still queued are dropped. Must not
 * be called from inside one of this client's own callbacks: refused there (logged
 * VSR-MISUSE, nothing freed). The loop may be deleted right after. */
void vsr_client_del(struct vsr_client *c);

/* 1 connected, 0 connecting, < 0 closed (the reason). */
int vsr_client_state(const struct vsr_client *c);

/* Queues |msg| (the client takes its own reference). Never blocks. Returns 0,
 * VSR_EBACKPRESSURE, VSR_ENOTCONN (closed) or VSR_EINVAL. Frames queued while connecting go
 * out once connected. */
int vsr_client_send(struct vsr_client *c, struct vsr_msg *msg);

/* Frames queued and not yet handed to the kernel. */
uint32_t vsr_client_queued(const struct vsr_client *c);

struct vsr_loop *vsr_client_loop(struct vsr_client *c);

/* A fresh message (header zeroed, size field set) from the client's loop pool, or NULL. */
struct vsr_msg *vsr_client_msg_new(struct vsr_client *c, uint32_t size);

/* ---- sessions (options.session) --------------------------------------------------------- */

/* Completion of one request. status 0: |reply| is the matching Reply, borrowed for the call
 * (vsr_msg_ref to keep it). status < 0 (|reply| NULL): VSR_ETIMEDOUT (request_deadline_ns
 * passed), VSR_EEVICTED (the cluster evicted the session: vsr_client_eviction_reason),
 * VSR_ECANCELED (vsr_client_del while pending). */
typedef void (*vsr_client_reply_fn)(void *arg, struct vsr_client *c, int status,
                                    struct vsr_msg *reply);

/* Submits a request. |req| comes from vsr_client_msg_new(c, 256 + body_len) with the body at
 * data + 256. The client writes command (Request), cluster, view, replica (0), client,
 * session, request (the next number), operation and size; release, request_checksum,
 * timestamp and user_id stay as the caller set them. The client takes its own reference; do
 * not modify |req| afterwards (a resend is the same bytes). |operation| must not be Reserved
 * (0) or Register (1). One request is in flight at a time, in submission order. Returns 0,
 * VSR_EBACKPRESSURE (max_pending full), VSR_EINVAL (not a session client, bad size or
 * operation), or the session's end reason (VSR_EEVICTED, VSR_ETIMEDOUT, VSR_ESHUTDOWN). */
int vsr_client_request(struct vsr_client *c, struct vsr_msg *req, uint8_t operation,
                       vsr_client_reply_fn fn, void *arg);

/* Blocking form (a client from vsr_client_connect): waits for the completion. Returns 0 with
 * *reply (the caller owns one reference), or the status above. */
int vsr_client_request_wait(struct vsr_client *c, struct vsr_msg *req, uint8_t operation,
                            struct vsr_msg **reply);

/* The session number (the Register Reply's commit), 0 until registered. */
uint64_t vsr_client_session(const struct vsr_client *c);

/* The highest view heard in a Reply, PongClient or Eviction header. */
uint32_t vsr_client_view(const struct vsr_client *c);

/* The Eviction's reason (enum vsr_eviction_reason) once evicted, else 0. */
int vsr_client_eviction_reason(const struct vsr_client *c);

struct vsr_client_stats {
  uint64_t requests;       /* submitted (Register not counted) */
  uint64_t replies;        /* matched and delivered */
  uint64_t resends;        /* the request in flight sent again (timeout or new connection) */
  uint64_t late_replies;   /* Replies / Evictions dropped: another client, or not the request
                              in flight (late or duplicate) */
  uint64_t timeouts;       /* requests completed with VSR_ETIMEDOUT */
  uint64_t connects;       /* connections established */
  uint64_t reconnects;     /* connection attempts after the first */
  uint64_t redirects;      /* replica switched because a header named another primary */
  uint64_t liveness_drops; /* connections dropped: nothing heard within liveness_timeout */
  uint64_t pings;          /* PingClient sent */
  uint64_t pongs;          /* PongClient received */
  uint32_t view;           /* highest view heard */
  uint32_t replica;        /* replica index currently targeted */
};

/* Session counters (all zero for a raw client). */
void vsr_client_stats(const struct vsr_client *c, struct vsr_client_stats *out);

/* ---- blocking use ------------------------------------------------------------------------ */

/* Connects with a private loop; waits up to |timeout_ns| (session mode: until the session is
 * registered, failing over and retrying inside that time). Returns 0, VSR_ETIMEDOUT,
 * VSR_EADDR (does not parse or resolve), VSR_ECONNREFUSED (nothing listens there; QUIC: when
 * the kernel reports the ICMP), VSR_EUNREACH, VSR_EIO or another connection error. */
int vsr_client_connect(struct vsr_client **out, const struct vsr_client_options *o,
                       uint64_t timeout_ns);

/* Waits until every queued frame is written. Returns 0, VSR_ETIMEDOUT or the close reason. */
int vsr_client_flush(struct vsr_client *c, uint64_t timeout_ns);

/* Waits for the next frame (the caller owns one reference to *out). Returns 0,
 * VSR_ETIMEDOUT, or the close reason (VSR_ECLOSED, ...) once the inbox is empty. */
int vsr_client_recv(struct vsr_client *c, struct vsr_msg **out, uint64_t timeout_ns);

/* send + recv. */
int vsr_client_call(struct vsr_client *c, struct vsr_msg *req, struct vsr_msg **reply,
                    uint64_t timeout_ns);

#ifdef __cplusplus
}
#endif
#endif
