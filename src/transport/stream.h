/* Stream-socket core: the connection lifecycle every transport over one TCP socket shares
 * (tcp.c plain, tls_ws*.c with TLS and WebSocket layers on top).
 *
 * The core owns the socket and everything around it: connect, accept (stream_listen.c), read
 * and write submission, the frame decoder, the drain deadline, the graceful close (keep
 * reading and dropping, write the queue out, FIN after the last byte, close once the peer
 * closed), hard teardown, abort, and the sent / dropped / closed upcalls. Every exit path ends
 * in vsri_stream_finish(), which fires on_closed once.
 *
 * A stream without a layer (layer == NULL) is plain TCP: bytes read go to the decoder (large
 * bodies are read straight into their frame buffer), and the writer hands the queued frames to
 * the kernel as one vectored write. A layer (struct vsri_stream_layer) sits between the socket
 * and the frames: it gets the bytes read (on_bytes_in), produces each write (produce_out) and
 * accounts for it (on_written). The plain-TCP path pays one predicted branch per read and
 * per write for this. */
#ifndef VSRI_STREAM_H
#define VSRI_STREAM_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "transport/transport.h"

enum vsri_stream_state {
  VSRI_SS_CONNECTING, /* dialed, the TCP connect is pending */
  VSRI_SS_HANDSHAKE,  /* connected, a layer's handshake runs (TLS, the WebSocket upgrade) */
  VSRI_SS_OPEN,
  VSRI_SS_CLOSING,
  VSRI_SS_CLOSED,
};

struct vsri_stream;

/* What a layer adds. Every hook may be NULL where noted. */
struct vsri_stream_layer {
  /* Connected (dialer): set up the layer, move to VSRI_SS_HANDSHAKE (or report the stream
   * with vsri_stream_reported + on_connected). Returns 0 or an error (the core reports it). */
  int (*on_connect)(struct vsri_stream *s);
  /* |n| bytes read while live. Returns false once the stream started closing (or must not
   * read again). */
  bool (*on_bytes_in)(struct vsri_stream *s, const uint8_t *p, size_t n);
  /* A whole frame the decoder completed (vsri_stream_decode). Consumes |m|. Returns false once
   * closing. NULL: delivered to the owner at once. */
  bool (*on_frame)(struct vsri_stream *s, struct vsr_msg *m);
  /* A frame error (logged by the core): start closing. NULL: graceful close with |err|. */
  void (*on_frame_error)(struct vsri_stream *s, int err);
  /* The flush point: start the next write (vsri_stream_sendv), or run the closing sequence
   * when nothing is left (vsri_stream_drained). Called when no write is pending. */
  void (*produce_out)(struct vsri_stream *s);
  /* A write of |n| bytes completed: returns the frames it completed, their sizes in *bytes. */
  uint32_t (*on_written)(struct vsri_stream *s, size_t n, uint64_t *bytes);
  /* A close starts (state is already CLOSING): e.g. queue the WebSocket Close frame. May be
   * NULL. */
  void (*on_close)(struct vsri_stream *s, int reason, bool drain, bool live);
  /* The handshake the layer runs, for log lines ("TLS handshake"); NULL: none. */
  const char *(*stage)(const struct vsri_stream *s);
  /* The fd is closed (or the stream aborted: |aborted|): report frames taken and never sent
   * (on_dropped), leave a listener. Returns true when the owner gets on_closed. */
  bool (*on_closed)(struct vsri_stream *s, bool aborted);
  /* Frees what the layer holds (both paths, after on_closed). */
  void (*on_free)(struct vsri_stream *s);
};

struct vsri_stream {
  struct vsri_conn base; /* first: the ops convert with vsri_stream_of */
  const struct vsri_stream_layer *layer; /* NULL: plain TCP */
  const struct vsri_transport_ctx *ctx;
  const struct vsri_conn_events *ev;
  void *owner;
  struct vsri_sendq *q;
  const char *proto;  /* "tcp", "tls", "ws", "wss": log lines */
  int fd;
  uint8_t state;      /* enum vsri_stream_state */
  bool server;        /* accepted, not dialed */
  bool reported;      /* on_accept / on_connected(0) done */
  bool reading;       /* a read-side op is pending */
  bool writing;       /* a sendv is pending */
  bool draining;      /* closing: write the queue out before closing */
  bool started;       /* start() called: reads may run */
  bool direct_read;   /* the pending recv writes straight into the decoder's frame */
  bool discard;       /* graceful close: bytes read are dropped, no more frames delivered */
  bool half_closed;   /* shutdown(SHUT_WR) done: FIN follows the last queued byte */
  bool peer_eof;      /* the peer's FIN (or a reset) was read: nothing more will come */
  int reason;         /* close reason, valid once state >= VSRI_SS_CLOSING */
  uint64_t last_rx;   /* loop clock at the last byte read (or at the start) */
  uint64_t frame_start; /* loop clock at the first byte of the frame in progress */
  uint64_t grace_ns;  /* the handshake timer's length (log lines) */
  struct iovec *iov;  /* iov_cap entries, allocated at the first write */
  uint32_t iov_cap;
  uint32_t wr_frames; /* queued frames the pending sendv reads in place (0: a layer buffer) */
  struct vsri_completion rc; /* reads (and connect) */
  struct vsri_completion wc; /* writes */
  struct vsri_completion cc; /* final close(fd) */
  struct vsri_completion dc; /* drain deadline */
  struct vsri_completion hc; /* handshake deadline (layers) */
  struct vsri_deferred flush;
  struct vsri_decoder dec;
  /* Streaming input (plain TCP and layers alike): the last loop-buffer read filled its
   * buffer, so more is queued: the next read that does not go straight into a frame takes
   * the loop's larger buffer (vsri_io_recv_pooled_big, 256 KiB: fewer reads per byte), until
   * one does not fill it. Loop-owned either way: a stream holds no receive buffer. */
  bool rbusy;
  struct vsr_msg **held;  /* aborted mid-write: those frames, kept until the kernel is done */
  uint32_t held_n;
  struct vsri_io_grave grave; /* abort: the block waits here for the kernel */
  char name[64];
};

static inline struct vsri_stream *vsri_stream_of(struct vsri_conn *b) {
  return vsri_container_of(b, struct vsri_stream, base);
}
static inline const struct vsri_stream *vsri_stream_of_const(const struct vsri_conn *b) {
  return vsri_container_of(b, const struct vsri_stream, base);
}

/* A new stream of |size| bytes (>= sizeof struct vsri_stream; a layer's struct embeds the
 * stream first) over connected or connecting |fd|, zeroed beyond the core. NULL: no memory. */
struct vsri_stream *vsri_stream_new(size_t size, const struct vsri_transport_ops *ops,
                                    const struct vsri_stream_layer *layer, const char *proto,
                                    const struct vsri_transport_ctx *ctx, int fd);
/* Dials |addr| with a new stream (see vsri_stream_new). Returns 0 (connecting), VSR_EADDR,
 * VSR_ELIMIT, VSR_EIO or VSR_ENOMEM. */
int vsri_stream_dial(struct vsri_stream **out, size_t size, const struct vsri_transport_ops *ops,
                     const struct vsri_stream_layer *layer, const char *proto,
                     const struct vsri_transport_ctx *ctx, const char *addr,
                     const struct vsri_conn_events *ev, void *owner, struct vsri_sendq *q);

/* Lifecycle. */
void vsri_stream_close(struct vsri_stream *s, int reason, bool drain);
void vsri_stream_fail(struct vsri_stream *s, int reason);     /* first reason wins; hard stop */
void vsri_stream_teardown(struct vsri_stream *s);             /* cancel what is pending, close */
void vsri_stream_finish(struct vsri_stream *s);               /* close the fd once idle */
void vsri_stream_abort(struct vsri_stream *s, int reason);
/* Everything is written: FIN after the last byte, then wait for the peer's close. */
void vsri_stream_drained(struct vsri_stream *s);
/* Arms the handshake deadline: a stream not reported within |ns| closes with
 * VSR_EHANDSHAKE_TIMEOUT (a dialer's owner gets on_connected first). */
void vsri_stream_grace(struct vsri_stream *s, uint64_t ns);
/* The stream is established: cancels the handshake deadline, state OPEN, reported. */
void vsri_stream_reported(struct vsri_stream *s);

/* Reading. */
void vsri_stream_read(struct vsri_stream *s);
/* Feeds frame bytes to the decoder; completed frames go to layer->on_frame or the owner.
 * Returns false once closing. */
bool vsri_stream_decode(struct vsri_stream *s, const uint8_t *p, size_t n);
/* |n| bytes were written straight into the decoder's frame (vsri_decoder_want). Returns
 * false once closing. */
bool vsri_stream_wrote(struct vsri_stream *s, size_t n);
/* Hands a frame to the owner (if started and open) and drops it. False once closing. */
bool vsri_stream_deliver(struct vsri_stream *s, struct vsr_msg *m);
/* Logs a decoder error and closes (layer->on_frame_error, or a graceful close). */
void vsri_stream_frame_error(struct vsri_stream *s, int err);

/* Writing. */
void vsri_stream_kick(struct vsri_stream *s);
void vsri_stream_flush(void *arg); /* the deferred flush */
/* Makes sure s->iov holds |n| entries. Returns false (the stream failed) without memory. */
bool vsri_stream_iov(struct vsri_stream *s, uint32_t n);
/* Writes iov[0..n): |frames| queued frames are read in place by it (kept alive on abort). */
void vsri_stream_sendv(struct vsri_stream *s, int n, uint32_t frames);

/* The ops every stream transport shares. */
void vsri_stream_op_start(struct vsri_conn *b, const struct vsri_conn_events *ev, void *owner,
                          struct vsri_sendq *q);
void vsri_stream_op_kick(struct vsri_conn *b);
void vsri_stream_op_close(struct vsri_conn *b, int reason, bool drain);
void vsri_stream_op_abort(struct vsri_conn *b, int reason);
const char *vsri_stream_op_peer_name(const struct vsri_conn *b);
void vsri_stream_op_set_frame_limit(struct vsri_conn *b, uint32_t max_size, uint32_t allowance);
void vsri_stream_op_rx_clock(const struct vsri_conn *b, struct vsri_rx_clock *out);

/* ---- listener (stream_listen.c) -------------------------------------------------------- */

struct vsri_stream_listener;
/* An accepted socket: the transport makes a stream of it (or closes |fd|). */
typedef void (*vsri_stream_accepted_fn)(struct vsri_stream_listener *l, int fd);

struct vsri_stream_listener {
  struct vsri_listener base; /* first */
  const struct vsri_transport_ctx *ctx;
  const char *proto;
  int fd;
  bool closing;
  vsri_stream_accepted_fn accepted;
  void (*on_close)(struct vsri_stream_listener *l); /* before the socket closes; may be NULL */
  void (*on_accept)(void *owner, struct vsri_conn *conn);
  void *owner;
  struct vsri_completion ac;
  struct vsri_completion backoff;
  struct vsri_io_grave grave; /* closed: waits here for a canceled accept's answer */
  struct sockaddr_storage peer;
  socklen_t peer_len;
  char name[64];
  /* Out of descriptors: a /dev/null descriptor held from listen() on, given up for a moment
   * to accept a connection that cannot be served and close it at once (-1: none held). */
  int reserve_fd;
  int starved;          /* errno of the current accept-trouble episode (0: accepting fine) */
  uint64_t starved_shed; /* connections accepted and closed at once during the episode */
};

/* Binds and listens on |addr| with a listener of |size| bytes (a transport's struct embeds
 * it first). Accepting starts with vsri_stream_listener_start. Returns 0, VSR_EADDR,
 * VSR_EADDRINUSE, VSR_EBIND, VSR_EIO or VSR_ENOMEM (logged). */
int vsri_stream_listen(struct vsri_stream_listener **out, size_t size,
                       const struct vsri_transport_ops *ops, const char *proto,
                       const struct vsri_transport_ctx *ctx, const char *addr,
                       vsri_stream_accepted_fn accepted,
                       void (*on_accept)(void *owner, struct vsri_conn *conn), void *owner);
void vsri_stream_listener_start(struct vsri_stream_listener *l);
/* Closes a connection that will not be served (its input read and dropped first: a FIN). */
void vsri_stream_close_unserved(int fd);
void vsri_stream_op_listener_addr(const struct vsri_listener *b, char *buf, size_t len);
void vsri_stream_op_listener_close(struct vsri_listener *b);

#endif
