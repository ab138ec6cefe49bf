/* Error names and descriptions: one case per code of include/vsrbus/error.h.
 * A code added there must be added to both switches here (test_wire checks every known code). */
#include "vsrbus/error.h"

const char *vsr_strerror(int err) {
  switch (err) {
  case VSR_OK: return "success";
  case VSR_EINVAL: return "invalid argument";
  case VSR_ENOMEM: return "out of memory";
  case VSR_EPOOL: return "message pool exhausted";
  case VSR_EBACKPRESSURE: return "peer send queue full; the frame was not queued";
  case VSR_ENOTCONN: return "peer unknown or not connected";
  case VSR_ESHUTDOWN: return "bus or connection is shutting down";
  case VSR_ETIMEDOUT: return "deadline passed";
  case VSR_EADDR: return "address cannot be parsed or resolved";
  case VSR_ECONFIG: return "invalid configuration";
  case VSR_EUNSUPPORTED: return "feature not available on this system (e.g. io_uring)";
  case VSR_EDUPLICATE: return "a peer with that id is already connected";
  case VSR_ELIMIT: return "a configured cap was reached (clients, handshakes in flight)";
  case VSR_ECANCELED: return "operation canceled";
  case VSR_EAGAIN: return "nothing available yet (non-blocking receive)";
  case VSR_EADDRINUSE: return "address already in use";
  case VSR_EBIND: return "address cannot be bound (not local, or not permitted)";
  case VSR_EMEMORY_BUDGET: return "frame refused: it would exceed a connection or plane memory budget";
  case VSR_EMEMORY_MAX: return "frame refused: the node-wide memory cap (memory_max) is reached";
  case VSR_EFRAME_SMALL: return "size field < 256";
  case VSR_EFRAME_LARGE: return "size field > max_message_size";
  case VSR_EFRAME_COMMAND: return "command byte is not a known command";
  case VSR_EFRAME_CHECKSUM: return "header checksum (seal / Prepare identity) mismatch";
  case VSR_EFRAME_BODY_CHECKSUM: return "body checksum mismatch";
  case VSR_EFRAME_FIELD: return "a header field fails its command's validation rules";
  case VSR_EFRAME_RESERVED: return "reserved bytes that must be zero are not";
  case VSR_EFRAME_ENUM: return "an enum byte (operation, reason, outcome) is undefined";
  case VSR_EFRAME_PLANE: return "valid frame, wrong plane or wrong direction";
  case VSR_EFRAME_PREAUTH: return "frame larger than 256 bytes before the replica handshake completed";
  case VSR_ECLOSED: return "peer closed the connection at a frame boundary";
  case VSR_EEOF_HEADER: return "peer closed inside a frame header";
  case VSR_EEOF_BODY: return "peer closed inside a frame body";
  case VSR_EIO: return "socket error";
  case VSR_ERESET: return "connection reset by peer";
  case VSR_EPROTO: return "protocol violation (transport or plane level)";
  case VSR_EIDLE: return "idle timeout";
  case VSR_EWRITE: return "write failed; the connection is torn down";
  case VSR_ECONNREFUSED: return "connection refused";
  case VSR_EUNREACH: return "host or network unreachable";
  case VSR_EFRAME_TIMEOUT: return "a frame that had started did not complete within frame_timeout";
  case VSR_ESLOW_PEER: return "peer's send queue stayed full for slow_peer_timeout (not reading)";
  case VSR_EEVICTED: return "the cluster evicted this client's session (Eviction)";
  case VSR_EAUTH: return "MAC mismatch or other authentication failure";
  case VSR_EAUTH_CLUSTER: return "cluster id mismatch";
  case VSR_EAUTH_DIRECTION: return "directional rule violated / id out of range";
  case VSR_EAUTH_REQUIRED: return "peer did not offer authentication";
  case VSR_EAUTH_COMMAND: return "wrong command in a handshake position";
  case VSR_EAUTH_STATUS: return "peer rejected us with a status byte";
  case VSR_EHANDSHAKE_TIMEOUT: return "handshake did not finish within handshake_grace";
  case VSR_EHANDSHAKE: return "TLS / QUIC handshake failed";
  case VSR_EALPN: return "no acceptable ALPN";
  case VSR_ETLS: return "TLS error after the handshake";
  case VSR_EQUIC: return "QUIC connection error";
  case VSR_ESTREAM: return "QUIC stream limit / stream protocol violation";
  default: return "unknown error";
  }
}

const char *vsr_errname(int err) {
  switch (err) {
  case VSR_OK: return "VSR_OK";
  case VSR_EINVAL: return "VSR_EINVAL";
  case VSR_ENOMEM: return "VSR_ENOMEM";
  case VSR_EPOOL: return "VSR_EPOOL";
  case VSR_EBACKPRESSURE: return "VSR_EBACKPRESSURE";
  case VSR_ENOTCONN: return "VSR_ENOTCONN";
  case VSR_ESHUTDOWN: return "VSR_ESHUTDOWN";
  case VSR_ETIMEDOUT: return "VSR_ETIMEDOUT";
  case VSR_EADDR: return "VSR_EADDR";
  case VSR_ECONFIG: return "VSR_ECONFIG";
  case VSR_EUNSUPPORTED: return "VSR_EUNSUPPORTED";
  case VSR_EDUPLICATE: return "VSR_EDUPLICATE";
  case VSR_ELIMIT: return "VSR_ELIMIT";
  case VSR_ECANCELED: return "VSR_ECANCELED";
  case VSR_EAGAIN: return "VSR_EAGAIN";
  case VSR_EADDRINUSE: return "VSR_EADDRINUSE";
  case VSR_EBIND: return "VSR_EBIND";
  case VSR_EMEMORY_BUDGET: return "VSR_EMEMORY_BUDGET";
  case VSR_EMEMORY_MAX: return "VSR_EMEMORY_MAX";
  case VSR_EFRAME_SMALL: return "VSR_EFRAME_SMALL";
  case VSR_EFRAME_LARGE: return "VSR_EFRAME_LARGE";
  case VSR_EFRAME_COMMAND: return "VSR_EFRAME_COMMAND";
  case VSR_EFRAME_CHECKSUM: return "VSR_EFRAME_CHECKSUM";
  case VSR_EFRAME_BODY_CHECKSUM: return "VSR_EFRAME_BODY_CHECKSUM";
  case VSR_EFRAME_FIELD: return "VSR_EFRAME_FIELD";
  case VSR_EFRAME_RESERVED: return "VSR_EFRAME_RESERVED";
  case VSR_EFRAME_ENUM: return "VSR_EFRAME_ENUM";
  case VSR_EFRAME_PLANE: return "VSR_EFRAME_PLANE";
  case VSR_EFRAME_PREAUTH: return "VSR_EFRAME_PREAUTH";
  case VSR_ECLOSED: return "VSR_ECLOSED";
  case VSR_EEOF_HEADER: return "VSR_EEOF_HEADER";
  case VSR_EEOF_BODY: return "VSR_EEOF_BODY";
  case VSR_EIO: return "VSR_EIO";
  case VSR_ERESET: return "VSR_ERESET";
  case VSR_EPROTO: return "VSR_EPROTO";
  case VSR_EIDLE: return "VSR_EIDLE";
  case VSR_EWRITE: return "VSR_EWRITE";
  case VSR_ECONNREFUSED: return "VSR_ECONNREFUSED";
  case VSR_EUNREACH: return "VSR_EUNREACH";
  case VSR_EFRAME_TIMEOUT: return "VSR_EFRAME_TIMEOUT";
  case VSR_ESLOW_PEER: return "VSR_ESLOW_PEER";
  case VSR_EEVICTED: return "VSR_EEVICTED";
  case VSR_EAUTH: return "VSR_EAUTH";
  case VSR_EAUTH_CLUSTER: return "VSR_EAUTH_CLUSTER";
  case VSR_EAUTH_DIRECTION: return "VSR_EAUTH_DIRECTION";
  case VSR_EAUTH_REQUIRED: return "VSR_EAUTH_REQUIRED";
  case VSR_EAUTH_COMMAND: return "VSR_EAUTH_COMMAND";
  case VSR_EAUTH_STATUS: return "VSR_EAUTH_STATUS";
  case VSR_EHANDSHAKE_TIMEOUT: return "VSR_EHANDSHAKE_TIMEOUT";
  case VSR_EHANDSHAKE: return "VSR_EHANDSHAKE";
  case VSR_EALPN: return "VSR_EALPN";
  case VSR_ETLS: return "VSR_ETLS";
  case VSR_EQUIC: return "VSR_EQUIC";
  case VSR_ESTREAM: return "VSR_ESTREAM";
  default: return "VSR_E?";
  }
}
