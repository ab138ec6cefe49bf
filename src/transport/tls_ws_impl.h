/* TLS, WS and WSS transports, the structs and functions their files share (internal to
 * src/transport/tls_ws*.c). The connection is a stream of the stream-socket core (stream.h)
 * with a layer on top: TLS (tls_engine.c), WebSocket (ws_proto.c), or both.
 *
 *   tls_ws_config.c  settings: certificates, client checks, the replica plane's ALPN
 *   tls_ws.c         the layer's lifecycle hooks, establishing, dialing, the listener, ops
 *   tls_ws_read.c    bytes in: TLS handshake and decryption, the HTTP upgrade, WS frames
 *   tls_ws_write.c   bytes out: control output, units (WS header + frame), TLS records */
#ifndef VSRI_TLS_WS_IMPL_H
#define VSRI_TLS_WS_IMPL_H

#include "transport/stream.h"
#include "transport/tls_engine.h"
#include "transport/tls_ws.h"
#include "transport/ws_proto.h"
#include "util/list.h"

#define TW_CTL_MAX 640u        /* control output: the longest is an HTTP refusal (~450 bytes) */
#define TW_GRACE_NS 10000000000ull
#define TW_MAX_HANDSHAKES 1024u

enum tw_kind { TW_TLS, TW_WS, TW_WSS };
enum tw_phase { TWP_TLS, TWP_HTTP, TWP_FRAMES };
enum tw_write { TWW_NONE, TWW_CTL, TWW_UNITS, TWW_BUF };

struct vsri_tlsws_config {
  bool server;      /* can listen: a certificate (or plain WS) */
  bool can_dial;    /* client settings present */
  bool name_from_addr; /* dialer: check the certificate against the dialed host */
  bool shared_cert; /* |cert| is the process's self-signed one */
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
  struct vsri_stream s; /* first: the core's stream (its base is what the bus holds) */
  const struct vsri_tlsws_config *cfg;
  struct tw_listener *l; /* server connections not yet reported: the owning listener */
  struct vsri_list_node link;
  uint8_t kind;  /* enum tw_kind */
  uint8_t phase; /* enum tw_phase */
  uint8_t wkind; /* enum tw_write: what the pending write carries */
  bool tls_on, ws_on;
  bool ws_close_sent; /* our Close frame is queued */
  bool ws_close_due;  /* send a Close frame when the queue is out */
  bool tls_bye_sent;
  uint16_t close_code;
  const char *close_why; /* reason text of our Close frame (static or c->ws.why), or NULL */
  uint32_t head_off;  /* bytes of the oldest unit written (or encrypted / masked) */
  uint8_t head_mask[4]; /* client: mask key of a partly produced oldest unit */
  uint32_t rng;       /* client: mask keys */
  uint32_t msg_frames; /* frames completed in the current WebSocket message */
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
  uint8_t (*hdr)[VSRI_WS_HDR_MAX];
  uint32_t batch;
  struct vsri_tls tls;
  struct vsri_ws_http *http; /* during the upgrade only */
  struct vsri_ws_reader ws;
  char host[80];          /* client: Host header */
  char key[25];           /* client: Sec-WebSocket-Key */
};

struct tw_listener {
  struct vsri_stream_listener sl; /* first */
  const struct vsri_tlsws_config *cfg;
  uint8_t kind;
  struct vsri_list pending; /* connections in their handshake */
  uint32_t npending;
  uint64_t refused;         /* connections closed at once: too many handshakes */
};

extern const char *const vsri_tw_names[];

static inline struct tw_conn *tw_of(struct vsri_stream *s) {
  return vsri_container_of(s, struct tw_conn, s);
}
static inline const char *tw_name(const struct tw_conn *c) { return vsri_tw_names[c->kind]; }

/* tls_ws.c */
void vsri_tw_established(struct tw_conn *c);
void vsri_tw_client_ready(struct tw_conn *c);
void vsri_tw_ws_violation(struct tw_conn *c, uint16_t code, const char *why, int reason);
/* tls_ws_read.c */
bool vsri_tw_bytes_in(struct vsri_stream *s, const uint8_t *p, size_t n);
bool vsri_tw_on_frame(struct vsri_stream *s, struct vsr_msg *m);
/* tls_ws_write.c */
bool vsri_tw_ctl_add(struct tw_conn *c, const void *p, size_t n);
void vsri_tw_ctl_frame(struct tw_conn *c, uint8_t opcode, const uint8_t *p, size_t n);
void vsri_tw_produce_out(struct vsri_stream *s);
uint32_t vsri_tw_written(struct vsri_stream *s, size_t n, uint64_t *bytes);
/* Defers the flush unless a write is pending. */
static inline void vsri_tw_want_write(struct tw_conn *c) {
  if (!c->s.writing) vsri_io_defer(c->s.ctx->io, &c->s.flush);
}

#endif
