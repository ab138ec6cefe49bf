/* vsrbus error codes: every fallible call returns 0 or one negative VSR_E* code.
 * A system errno never crosses the public API; the io layer maps it at its edge and the
 * log line that reports a failure names the errno text. */
#ifndef VSRBUS_ERROR_H
#define VSRBUS_ERROR_H

#ifdef __cplusplus
extern "C" {
#endif

enum vsr_err {
  VSR_OK = 0,

  /* -1..-19: arguments, resources, state. */
  VSR_EINVAL = -1,        /* invalid argument */
  VSR_ENOMEM = -2,        /* out of memory */
  VSR_EPOOL = -3,         /* message pool exhausted */
  VSR_EBACKPRESSURE = -4, /* peer send queue full: the frame was not queued (counted) */
  VSR_ENOTCONN = -5,      /* peer unknown or not connected (counted) */
  VSR_ESHUTDOWN = -6,     /* bus or connection is shutting down */
  VSR_ETIMEDOUT = -7,     /* deadline passed */
  VSR_EADDR = -8,         /* address cannot be parsed or resolved ("host:port") */
  VSR_ECONFIG = -9,       /* invalid configuration */
  VSR_EUNSUPPORTED = -10, /* feature not available on this system (e.g. io_uring) */
  VSR_EDUPLICATE = -11,   /* a peer with that id is already connected */
  VSR_ELIMIT = -12,       /* a configured cap was reached (clients, handshakes in flight) */
  VSR_ECANCELED = -13,    /* operation canceled */
  VSR_EAGAIN = -14,       /* nothing available yet (non-blocking receive) */
  VSR_EADDRINUSE = -15,   /* cannot bind: address already in use */
  VSR_EBIND = -16,        /* cannot bind or listen for another reason (address not local,
                           * permission denied; the log line names the errno text) */
  VSR_EMEMORY_BUDGET = -17, /* a frame would exceed its connection's or its plane's memory budget */
  VSR_EMEMORY_MAX = -18,    /* the node-wide memory cap (memory_max) is reached: frame refused */

  /* -20..-39: frame errors from the decoder; the connection that sent the frame is closed. */
  VSR_EFRAME_SMALL = -20,         /* size field < 256 */
  VSR_EFRAME_LARGE = -21,         /* size field > max_message_size */
  VSR_EFRAME_COMMAND = -22,       /* command byte is not a known command */
  VSR_EFRAME_CHECKSUM = -23,      /* header checksum (seal / Prepare identity) mismatch */
  VSR_EFRAME_BODY_CHECKSUM = -24, /* body checksum mismatch */
  VSR_EFRAME_FIELD = -25,         /* a field fails the command's validation rules */
  VSR_EFRAME_RESERVED = -26,      /* reserved bytes that must be zero are not */
  VSR_EFRAME_ENUM = -27,          /* an enum byte (operation, reason, outcome) is undefined */
  VSR_EFRAME_PLANE = -28,         /* valid frame, wrong plane or wrong direction (e.g. a
                                   * client sending Prepare or ReplicaHello: docs/limits.md) */
  VSR_EFRAME_PREAUTH = -29,       /* frame larger than a handshake frame (256 bytes) before the
                                     replica handshake completed */

  /* -40..-59: connection errors. */
  VSR_ECLOSED = -40,     /* peer closed (FIN) at a frame boundary; a crashed process closes
                          * the same way unless data was in flight (then: VSR_ERESET) */
  VSR_EEOF_HEADER = -41, /* peer closed inside a frame header */
  VSR_EEOF_BODY = -42,   /* peer closed inside a frame body */
  VSR_EIO = -43,         /* socket error (the log line carries the errno text) */
  VSR_ERESET = -44,      /* connection reset by peer */
  VSR_EPROTO = -45,      /* protocol violation (transport or plane level) */
  VSR_EIDLE = -46,       /* idle timeout (client_idle_timeout; QUIC: the transport's) */
  VSR_EWRITE = -47,      /* write failed; the connection is torn down */
  VSR_ECONNREFUSED = -48, /* connect: connection refused (nothing listens there) */
  VSR_EUNREACH = -49,     /* connect: host or network unreachable */
  VSR_EFRAME_TIMEOUT = -50, /* a frame that had started did not complete within frame_timeout */
  VSR_ESLOW_PEER = -55,  /* peer's send queue stayed full for slow_peer_timeout: not reading */
  VSR_EEVICTED = -56,    /* the cluster evicted this client's session (Eviction frame; the
                          * reason: vsr_client_eviction_reason) */

  /* -60..-79: replica plane authentication (see src/bus/replica.c). */
  VSR_EAUTH = -60,           /* MAC mismatch or other authentication failure */
  VSR_EAUTH_CLUSTER = -61,   /* cluster id mismatch */
  VSR_EAUTH_DIRECTION = -62, /* directional rule violated / id out of range */
  VSR_EAUTH_REQUIRED = -63,  /* peer did not offer authentication */
  VSR_EAUTH_COMMAND = -64,   /* wrong command in a handshake position */
  VSR_EAUTH_STATUS = -65,    /* peer rejected us with a status byte */
  VSR_EHANDSHAKE_TIMEOUT = -66, /* handshake did not finish within handshake_grace */

  /* -80..-99: TLS and QUIC. */
  VSR_EHANDSHAKE = -80, /* TLS / QUIC handshake failed */
  VSR_EALPN = -81,      /* no acceptable ALPN */
  VSR_ETLS = -82,       /* TLS error after the handshake */
  VSR_EQUIC = -83,      /* QUIC connection error (the log line carries the code) */
  VSR_ESTREAM = -84,    /* QUIC stream limit / stream protocol violation */
};

/* Returns a static, human-readable description of |err| (a VSR_E* code or 0). Never NULL. */
const char *vsr_strerror(int err);

/* Returns a static short identifier such as "VSR_EFRAME_LARGE" for |err|. Never NULL. */
const char *vsr_errname(int err);

#ifdef __cplusplus
}
#endif
#endif
