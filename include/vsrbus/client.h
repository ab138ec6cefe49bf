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
};

struct vsr_client_options {
  const char *transport;      /* "tcp" (default) or "quic" */
  const char *addr;           /* "127.0.0.1:8090" */
  uint32_t max_message_size;  /* default 64 MiB */
  uint32_t queue_capacity;    /* frames queued for sending, default 4096 */
  uint32_t max_batch;         /* frames per vectored write, default 1024 (IOV_MAX) */
  struct vsr_client_quic_options quic; /* transport "quic" only */
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

/* ---- blocking use ------------------------------------------------------------------------ */

/* Connects with a private loop; waits up to |timeout_ns|. Returns 0, VSR_ETIMEDOUT,
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
