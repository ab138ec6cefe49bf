/* WebSocket (RFC 6455) without I/O: the HTTP/1.1 upgrade (libhttp-parser), the frame reader
 * (its own header parser, wslay's constants; a raw reader leaves the unmasking to its consumer,
 * which does it word-wise straight into the frame buffer) and the frame header writer, for the WS / WSS transports and the client
 * SDK. Nothing here touches a socket or a clock; the unit tests and tests/fuzz drive it with
 * byte strings.
 *
 * vsrbus rules on top of the RFC (as Iggy mainline): no subprotocol, no extension; every binary
 * message carries exactly one whole vsrbus frame (the transport checks the frame boundary); the
 * upgrade is on path "/", and a plain "GET /" without Upgrade is answered with the browser page
 * (ws_page.c). */
#ifndef VSRI_WS_PROTO_H
#define VSRI_WS_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <http_parser.h>
#include <wslay/wslay.h>

#define VSRI_WS_HEADERS_MAX 8192u /* request line + headers; more is 431 */
#define VSRI_WS_FRAGMENTS_MAX 64u /* frames one message may be split into; more: 1009 */
#define VSRI_WS_HDR_MAX 14u       /* longest frame header (64-bit length + mask key) */

/* Close codes used (RFC 6455 §7.4.1). */
enum {
  VSRI_WS_NORMAL = 1000,
  VSRI_WS_GOING_AWAY = 1001,
  VSRI_WS_PROTOCOL = 1002,
  VSRI_WS_UNSUPPORTED = 1003, /* text frames: vsrbus speaks binary only */
  VSRI_WS_POLICY = 1008,
  VSRI_WS_TOO_BIG = 1009,
};

/* ---- HTTP upgrade ---------------------------------------------------------------------- */

enum vsri_ws_verdict {
  VSRI_WS_MORE = 0,    /* the request (or response) is not complete yet */
  VSRI_WS_UPGRADE,     /* valid upgrade: send the 101 response, then frames */
  VSRI_WS_PAGE,        /* "GET /" without Upgrade: send the page, then close */
  VSRI_WS_REFUSE,      /* bad request: send the error response (status, why), then close */
  VSRI_WS_ACCEPTED,    /* client: the server's 101 is valid */
};

struct vsri_ws_http {
  http_parser p;
  bool response;           /* parsing the server's answer (client side) */
  bool complete;
  uint32_t bytes;          /* bytes consumed */
  int status;              /* HTTP status of the refusal (400, 404, 405, 426, 431) */
  char why[160];           /* the precise reason, for the log line */
  int cur;                 /* header whose value is being collected */
  char field[32];
  uint32_t field_len;
  char url[64];
  uint32_t url_len;
  char key[32];            /* Sec-WebSocket-Key (request) or -Accept (response) */
  uint32_t key_len;
  char version[8];
  uint32_t version_len;
  char upgrade[32];
  uint32_t upgrade_len;
  char connection[96];
  uint32_t connection_len;
  bool have_key, have_version, have_upgrade, have_connection, overlong;
  char expect_accept[32];  /* client: the Sec-WebSocket-Accept it must see */
};

/* Server: starts parsing a request. */
void vsri_ws_http_init_request(struct vsri_ws_http *h);
/* Client: starts parsing the answer to a request sent with |key| (base64, 24 chars). */
void vsri_ws_http_init_response(struct vsri_ws_http *h, const char *key);

/* Feeds bytes. *used: bytes that belong to the HTTP message (the rest are WebSocket frames).
 * Returns a verdict: MORE, UPGRADE, PAGE or REFUSE (server), ACCEPTED or REFUSE (client). */
enum vsri_ws_verdict vsri_ws_http_feed(struct vsri_ws_http *h, const uint8_t *p, size_t n,
                                       size_t *used);

/* Writes the 101 response for an UPGRADE verdict. Returns its length (< |len|). */
size_t vsri_ws_http_101(const struct vsri_ws_http *h, char *buf, size_t len);
/* Writes the error response of a REFUSE verdict (status line, the reason as the body). */
size_t vsri_ws_http_error(const struct vsri_ws_http *h, char *buf, size_t len);
/* Writes the headers of the page response (the body is vsri_ws_page). */
size_t vsri_ws_http_page_head(char *buf, size_t len);
/* Writes a client's upgrade request for |host| with a fresh key (kept in |key|, 25 bytes). */
size_t vsri_ws_http_request(const char *host, char key[25], char *buf, size_t len);
/* The Sec-WebSocket-Accept value of |key|: 28 chars + NUL. */
void vsri_ws_accept_of(const char *key, size_t key_len, char out[29]);

/* The page served on "GET /" (ws_page.c): HTML + JavaScript, no framework. */
extern const char vsri_ws_page[];
extern const size_t vsri_ws_page_len;

/* ---- frames ---------------------------------------------------------------------------- */

enum vsri_ws_event_kind {
  VSRI_WS_EV_NONE = 0, /* every fed byte is consumed: feed more */
  VSRI_WS_EV_DATA,     /* payload bytes of the current binary message: data, len, first */
  VSRI_WS_EV_END,      /* the current binary message is complete */
  VSRI_WS_EV_PING,     /* answer with a Pong carrying data/len */
  VSRI_WS_EV_PONG,
  VSRI_WS_EV_CLOSE,    /* the peer sent Close: code (0: none), answer and close */
  VSRI_WS_EV_ERROR,    /* protocol violation: code (close code) and why */
};

struct vsri_ws_event {
  enum vsri_ws_event_kind kind;
  const uint8_t *data; /* valid until the next vsri_ws_next() */
  size_t len;
  bool first;          /* DATA: first bytes of a message */
  uint16_t code;
  /* DATA of a raw reader (vsri_ws_reader.raw): |data| is still masked with |mask| (NULL: the
   * frame was not masked), data[0] at payload offset |mask_off|: vsri_ws_mask_copy() it. */
  const uint8_t *mask;
  uint64_t mask_off;
};

struct vsri_ws_reader {
  const uint8_t *in; /* fed bytes not yet taken (borrowed) */
  size_t in_len;
  bool raw;           /* DATA events point into the fed bytes, still masked (no copy here) */
  uint8_t hdr[VSRI_WS_HDR_MAX]; /* the frame header being gathered */
  uint8_t hdr_len;
  uint8_t key[4];     /* mask key of the frame in progress */
  bool masked;
  uint64_t frame_len; /* payload length of the frame in progress */
  bool server;        /* frames must be masked (server) / unmasked (client) */
  bool in_msg;        /* inside a binary message (a frame without FIN seen) */
  bool in_frame;      /* inside a frame's payload */
  bool failed;
  bool fin_pending;   /* the frame in progress has FIN set */
  bool end_pending;   /* EV_END follows the DATA event just returned */
  uint8_t opcode;     /* of the frame in progress */
  uint64_t frame_left; /* payload bytes of the frame in progress still to come */
  uint64_t msg_len;
  uint32_t fragments;
  uint32_t max_message; /* largest message payload accepted */
  uint8_t ctrl[125];   /* control frame payload being gathered */
  uint8_t ctrl_len;
  char why[160];
};

/* Returns 0 or VSR_ENOMEM. */
int vsri_ws_reader_init(struct vsri_ws_reader *r, bool server, uint32_t max_message);
void vsri_ws_reader_free(struct vsri_ws_reader *r);
/* Makes |n| bytes available; they must stay valid until vsri_ws_next() returns EV_NONE. */
void vsri_ws_feed(struct vsri_ws_reader *r, const uint8_t *p, size_t n);
/* The next event. After EV_ERROR the reader stays failed. */
void vsri_ws_next(struct vsri_ws_reader *r, struct vsri_ws_event *ev);

/* Writes a frame header (FIN set) for |len| payload bytes; |mask| (4 bytes) or NULL.
 * Returns the header length (2..14). */
size_t vsri_ws_header(uint8_t out[VSRI_WS_HDR_MAX], uint8_t opcode, uint64_t len,
                      const uint8_t *mask);
/* XORs |n| bytes with |mask|, starting at payload offset |off|. */
void vsri_ws_mask(uint8_t *p, size_t n, const uint8_t mask[4], uint64_t off);
/* dst = src XOR |mask| (from payload offset |off|), 16 bytes at a time: the copy and the
 * (un)masking in one pass. */
void vsri_ws_mask_copy(uint8_t *dst, const uint8_t *src, size_t n, const uint8_t mask[4],
                       uint64_t off);
/* Writes a whole Close frame (server: unmasked) with |code| and |reason| (cut to fit).
 * Returns its length (<= 2 + 125). */
size_t vsri_ws_close_frame(uint8_t out[127], uint16_t code, const char *reason);

#endif
