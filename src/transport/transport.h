/* transport: one small ops table per transport (tcp.c, quic/, later tls.c, ws.c).
 *
 * A transport turns a socket (or a QUIC stream) into whole frames and writes queued frames.
 * It never knows about peers, planes or registries; the bus never knows about sockets or
 * packets. The bus owns each peer's bounded send queue (struct vsri_sendq); the transport
 * drains it in place (no second queue, no copy), drops each frame's reference once it no
 * longer needs its bytes, and reports each frame as sent (the kernel took its last byte) or
 * dropped through the owner's upcalls: the owner owns every counter. */
#ifndef VSRI_TRANSPORT_H
#define VSRI_TRANSPORT_H

#include <stdbool.h>
#include <stdint.h>

#include "frame/decode.h"
#include "io/io.h"
#include "util/ring.h"
#include "vsrbus/msg.h"

struct vsri_transport_ops;

/* A connection and a listener: each transport embeds this base as the FIRST member of its own
 * struct (struct tcp_conn, struct quic_conn; struct tcp_listener, struct quic_listener) and
 * converts with vsri_container_of. The bus and the client SDK only ever hold the base. */
struct vsri_conn {
  const struct vsri_transport_ops *ops;
};
struct vsri_listener {
  const struct vsri_transport_ops *ops;
};

/* Bounded FIFO of frames to one peer, a typed use of util/ring.h over |slots|. The owner (bus,
 * client SDK) pushes; the transport peeks and pops. Popping counts nothing: the transport
 * reports what became of each frame through on_sent / on_dropped, and the owner counts. */
struct vsri_sendq {
  struct vsr_msg **slots; /* vsri_ring_cap(&ring) entries, a power of two */
  struct vsri_ring ring;
  uint32_t off;   /* bytes of the oldest frame already written (partial writes) */
  uint64_t bytes; /* buffer bytes the queued frames hold (their capacity): memory pinned */
};

/* Empties |q| over |slots|, |cap| entries (a power of two). */
static inline void vsri_sendq_init(struct vsri_sendq *q, struct vsr_msg **slots, uint32_t cap) {
  q->slots = slots;
  vsri_ring_init(&q->ring, cap);
  q->off = 0;
  q->bytes = 0;
}
static inline uint32_t vsri_sendq_len(const struct vsri_sendq *q) { return vsri_ring_len(&q->ring); }
static inline uint32_t vsri_sendq_cap(const struct vsri_sendq *q) { return vsri_ring_cap(&q->ring); }

/* Appends |m| (the caller hands over one reference). Returns false when full. */
static inline bool vsri_sendq_push(struct vsri_sendq *q, struct vsr_msg *m) {
  if (vsri_ring_full(&q->ring)) return false;
  q->slots[vsri_ring_push(&q->ring)] = m;
  q->bytes += m->capacity;
  return true;
}
/* The |i|-th oldest frame (0: the oldest); |i| < len. */
static inline struct vsr_msg *vsri_sendq_peek(const struct vsri_sendq *q, uint32_t i) {
  return q->slots[vsri_ring_at(&q->ring, i)];
}
/* Removes the oldest frame and drops the queue's reference to it; returns its size (bytes). */
static inline uint32_t vsri_sendq_pop(struct vsri_sendq *q) {
  struct vsr_msg *m = q->slots[vsri_ring_pop(&q->ring)];
  uint32_t size = m->size;
  q->off = 0;
  q->bytes -= m->capacity;
  vsr_msg_unref(m);
  return size;
}

/* Upcalls from a connection to its owner (the bus, or the client SDK).
 *
 * Counting rule: the owner counts every frame it pushed exactly once, as sent (on_sent), as
 * dropped (on_dropped, or still queued when on_closed fires: those stay in the owner's queue
 * and the owner drops them itself), never both; the transport keeps no counter of its own. */
struct vsri_conn_events {
  /* A whole, validated frame arrived. The owner borrows |msg|; vsr_msg_ref() to keep it. */
  void (*on_frame)(void *owner, struct vsri_conn *conn, struct vsr_msg *msg);
  /* A dialed connection is established (status 0) or failed (VSR_E*). On failure on_closed
   * still follows. May be NULL. */
  void (*on_connected)(void *owner, struct vsri_conn *conn, int status);
  /* Every queued frame has been handed to the kernel. May be NULL. */
  void (*on_drained)(void *owner, struct vsri_conn *conn);
  /* The kernel took the last byte of |frames| more frames (|bytes| their sizes), the oldest
   * the queue held: TCP when a write completes, QUIC when sendmsg accepted the datagram that
   * carries a frame's last stream byte (or, failing that, when the peer acknowledged it).
   * One call per completed write, never per frame. Counts only: the owner must not close or
   * kick from it. May be NULL. */
  void (*on_sent)(void *owner, struct vsri_conn *conn, uint32_t frames, uint64_t bytes);
  /* |frames| frames the transport had taken out of the queue will never be sent: |reason|
   * VSR_ESTREAM (QUIC: the peer reset or stopped the stream they travel on) or the close
   * reason (the connection closed before the kernel took them). Always before on_closed.
   * Counts only, like on_sent. May be NULL. */
  void (*on_dropped)(void *owner, struct vsri_conn *conn, uint32_t frames, uint64_t bytes,
                     int reason);
  /* The connection is gone: fires exactly once, whatever noticed first (reader, writer, close).
   * The transport frees |conn| after this returns; the queue's frames stay with the owner,
   * which counts them as dropped. */
  void (*on_closed)(void *owner, struct vsri_conn *conn, int reason);
};

/* Settings shared by every connection of a bus or client. */
struct vsri_transport_ctx {
  struct vsri_io *io;
  struct vsr_pool *pool;
  uint32_t max_message_size;
  uint32_t max_batch;    /* frames per vectored write */
  uint32_t decode_flags; /* VSRI_DECODE_* */
  uint64_t drain_timeout_ns; /* a graceful close: queue out and the peer's close (2 s) */
  const void *tls;       /* transport-specific settings (e.g. struct vsri_quic_config), or NULL */
  struct vsri_mem_budget *budget; /* the plane's budget for frames in flight, or NULL */
  uint32_t frame_allowance; /* bytes taken at once when a body starts; 0: VSRI_DECODE_ALLOWANCE */
  uint32_t conn_budget;     /* largest frame one connection may hold in flight; 0: max size */
  uint32_t preauth_max;     /* non-zero: frames above it are VSR_EFRAME_PREAUTH until the owner
                               calls set_frame_limit (the replica handshake) */
  /* TCP liveness (issue 15), applied to every accepted and dialed socket: */
  uint64_t tcp_keepalive_ns;    /* SO_KEEPALIVE idle time (interval = /3, 3 probes); 0: off */
  uint64_t tcp_user_timeout_ns; /* TCP_USER_TIMEOUT; 0: the kernel's default */
  /* Shards: every shard's TCP listener binds the same address with SO_REUSEPORT. 0: no; 1: the
   * first of the group (shard 0: fails with EADDRINUSE if anyone listens there already); 2: a
   * shard joining the group shard 0 made. QUIC's UDP listeners too (docs/shards.md, "QUIC"). */
  uint8_t reuseport;
  /* Shards: this bus's shard index and the shard count (1: not sharded). QUIC writes the index
   * into the first byte of every connection ID it chooses when |shards| > 1. */
  uint8_t shard, shards;
};

/* What a connection has received, for the owner's timeout sweep (one sweep per bus and period,
 * no timer per read): the transport stamps it with the loop's cached clock as bytes arrive. */
struct vsri_rx_clock {
  uint64_t last_rx_ns;     /* last frame byte received, or when the connection started */
  uint64_t frame_start_ns; /* first byte of the frame in progress; 0 at a frame boundary */
  uint32_t frame_have;     /* bytes of that frame received so far (header included) */
  uint32_t frame_size;     /* its size field; 0 while the header is incomplete */
};

/* Sets up a connection's decoder from |ctx|: limits, budget, pre-authentication cap. */
static inline void vsri_conn_decoder_init(struct vsri_decoder *d,
                                          const struct vsri_transport_ctx *ctx) {
  bool pre = ctx->preauth_max != 0;
  vsri_decoder_init(d, ctx->pool, pre ? ctx->preauth_max : ctx->max_message_size,
                    ctx->decode_flags | (pre ? VSRI_DECODE_PREAUTH : 0));
  vsri_decoder_set_budget(d, ctx->budget, ctx->frame_allowance, ctx->conn_budget);
}

struct vsri_transport_ops {
  const char *name; /* "tcp", "quic" */

  /* Listens on |addr| ("host:port", port 0 = any). Accepted connections are reported through
   * |on_accept| once usable (QUIC: handshake done and first stream opened); the owner must then
   * call start() or close(). Returns 0, VSR_EADDR (does not parse), VSR_EADDRINUSE, VSR_EBIND,
   * VSR_EIO or VSR_ENOMEM. */
  int (*listen)(struct vsri_listener **out, const struct vsri_transport_ctx *ctx, const char *addr,
                void (*on_accept)(void *owner, struct vsri_conn *conn), void *owner);
  /* Writes the bound "host:port" into |buf|. */
  void (*listener_addr)(const struct vsri_listener *l, char *buf, size_t len);
  /* Stops accepting and frees the listener; established connections are not touched. Never
   * needs a loop turn: the socket closes now, memory the kernel may still touch goes through
   * vsri_io_release. (A QUIC listener shares its socket with the connections it accepted:
   * it lingers until the last of them is closed or aborted, then goes the same way.) */
  void (*listener_close)(struct vsri_listener *l);

  /* Dials |addr|. The connection reports on_connected, then frames, then on_closed.
   * Returns 0 (in progress), VSR_EADDR or VSR_ENOMEM; a refused or unreachable peer is reported
   * later through on_connected / on_closed (VSR_ECONNREFUSED, VSR_EUNREACH, VSR_ETIMEDOUT). */
  int (*connect)(struct vsri_conn **out, const struct vsri_transport_ctx *ctx, const char *addr,
                 const struct vsri_conn_events *ev, void *owner, struct vsri_sendq *q);

  /* Attaches an accepted connection to its owner and queue, and starts reading. */
  void (*start)(struct vsri_conn *c, const struct vsri_conn_events *ev, void *owner,
                struct vsri_sendq *q);

  /* Frames were pushed on the queue. The transport writes them at the loop's before-poll point,
   * coalescing up to max_batch frames per write. */
  void (*kick)(struct vsri_conn *c);

  /* Closes the connection with |reason|. drain: deliver no more frames, write what is queued,
   * then close without destroying it (TCP: FIN after the last byte, reading and dropping input
   * until the peer closes; QUIC: CONNECTION_CLOSE once the peer acknowledged every stream
   * byte), all bounded by drain_timeout_ns; !drain: close now. on_closed fires once, later,
   * from the loop. Safe to call more than once. */
  void (*close)(struct vsri_conn *c, int reason, bool drain);

  /* Destroys the connection now, for an owner that is going away: the socket closes at once
   * (QUIC: CONNECTION_CLOSE with |reason|'s code is sent first), no upcall ever comes again
   * (not even on_closed), frames still on the owner's queue stay the owner's, and memory the
   * kernel may still touch goes later through vsri_io_release. Never runs the loop. Not from
   * inside one of |c|'s own upcalls. Valid on a connection that is closing. */
  void (*abort)(struct vsri_conn *c, int reason);

  /* "127.0.0.1:41234" (stable for the connection's life). */
  const char *(*peer_name)(const struct vsri_conn *c);

  /* Lifts the pre-authentication frame cap: frames up to |max_size| are accepted from now on,
   * and a frame's first |allowance| bytes are reserved at once. NULL for transports that never
   * carry the replica plane (QUIC). */
  void (*set_frame_limit)(struct vsri_conn *c, uint32_t max_size, uint32_t allowance);

  /* Fills |out| (see struct vsri_rx_clock). Cheap: no syscall, no clock read. */
  void (*rx_clock)(const struct vsri_conn *c, struct vsri_rx_clock *out);

  /* TLS links (appended, issue 16): writes the 32-byte TLS exporter of the connection's
   * session for |label| (empty context) and returns 1; 0 when the connection carries no TLS.
   * NULL for transports without TLS. Valid from on_accept / on_connected(0) on. */
  int (*tls_exporter)(struct vsri_conn *c, const char *label, uint8_t out[32]);
};

extern const struct vsri_transport_ops vsri_transport_tcp;
extern const struct vsri_transport_ops vsri_transport_quic;

/* Parses "host:port" / "[v6]:port" / "localhost:port". Returns 0 or VSR_EADDR. */
int vsri_parse_addr(const char *text, struct sockaddr_storage *out, socklen_t *len);
/* Why the last vsri_parse_addr() on this thread failed ("expected host:port", a getaddrinfo
 * text, ...), for the log line that reports it. A static string. Never NULL. */
const char *vsri_parse_addr_why(void);
/* The error code of a bind()/listen() errno: VSR_EADDRINUSE or VSR_EBIND. */
int vsri_bind_reason(int err);
/* The error code of a connect() (or later socket) errno: VSR_ECONNREFUSED, VSR_EUNREACH,
 * VSR_ETIMEDOUT, VSR_ERESET or VSR_EIO. */
int vsri_sock_reason(int err);
/* Sets SO_KEEPALIVE (+ idle/interval/count) and TCP_USER_TIMEOUT on a TCP socket; 0: leave. */
void vsri_tcp_liveness(struct vsri_io *io, int fd, uint64_t keepalive_ns,
                       uint64_t user_timeout_ns);
/* Formats |sa| as "host:port" into |buf|. */
void vsri_format_addr(const struct sockaddr *sa, char *buf, size_t len);

#endif
