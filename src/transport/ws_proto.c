/* WebSocket without I/O: see ws_proto.h. */
#include "transport/ws_proto.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#include "vsrbus/error.h"

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

enum { H_NONE, H_KEY, H_VERSION, H_UPGRADE, H_CONNECTION, H_ACCEPT };

/* ---- helpers --------------------------------------------------------------------------- */

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static size_t base64(const uint8_t *p, size_t n, char *out) {
  size_t o = 0;
  for (size_t i = 0; i < n; i += 3) {
    uint32_t v = (uint32_t)p[i] << 16;
    if (i + 1 < n) v |= (uint32_t)p[i + 1] << 8;
    if (i + 2 < n) v |= p[i + 2];
    out[o++] = b64[v >> 18 & 63];
    out[o++] = b64[v >> 12 & 63];
    out[o++] = i + 1 < n ? b64[v >> 6 & 63] : '=';
    out[o++] = i + 2 < n ? b64[v & 63] : '=';
  }
  out[o] = '\0';
  return o;
}

void vsri_ws_accept_of(const char *key, size_t key_len, char out[29]) {
  char buf[64 + sizeof WS_GUID];
  if (key_len > 64) key_len = 64;
  memcpy(buf, key, key_len);
  memcpy(buf + key_len, WS_GUID, sizeof WS_GUID - 1);
  uint8_t sha[20];
  gnutls_hash_fast(GNUTLS_DIG_SHA1, buf, key_len + sizeof WS_GUID - 1, sha);
  base64(sha, sizeof sha, out);
}

/* A Sec-WebSocket-Key is the base64 of 16 bytes: 22 digits and "==". */
static bool key_valid(const char *k, size_t n) {
  if (n != 24 || k[22] != '=' || k[23] != '=') return false;
  for (size_t i = 0; i < 22; i++) {
    if (!strchr(b64, k[i]) || k[i] == '\0') return false;
  }
  return strchr("AQgw", k[21]) != NULL; /* the last digit carries 2 bits of the 16th byte */
}

/* Whether the comma-separated |list| holds |token| (case-insensitive). */
static bool has_token(const char *list, const char *token) {
  size_t tl = strlen(token);
  const char *p = list;
  while (*p) {
    while (*p == ' ' || *p == '\t' || *p == ',') p++;
    const char *s = p;
    while (*p && *p != ',') p++;
    const char *e = p;
    while (e > s && (e[-1] == ' ' || e[-1] == '\t')) e--;
    if ((size_t)(e - s) == tl && strncasecmp(s, token, tl) == 0) return true;
  }
  return false;
}

static void append(char *dst, uint32_t *len, size_t cap, const char *p, size_t n, bool *over) {
  if (*len + n >= cap) {
    *over = true;
    n = *len + 1 < cap ? cap - 1 - *len : 0;
  }
  memcpy(dst + *len, p, n);
  *len += (uint32_t)n;
  dst[*len] = '\0';
}

/* ---- HTTP ------------------------------------------------------------------------------ */

static int on_url(http_parser *p, const char *at, size_t n) {
  struct vsri_ws_http *h = p->data;
  bool over = false;
  append(h->url, &h->url_len, sizeof h->url, at, n, &over);
  if (over) h->overlong = true;
  return 0;
}

static int on_field(http_parser *p, const char *at, size_t n) {
  struct vsri_ws_http *h = p->data;
  if (h->cur != -1) { /* a new field starts after a value */
    h->field_len = 0;
    h->field[0] = '\0';
    h->cur = -1;
  }
  bool over = false;
  append(h->field, &h->field_len, sizeof h->field, at, n, &over);
  return 0;
}

static int on_value(http_parser *p, const char *at, size_t n) {
  struct vsri_ws_http *h = p->data;
  if (h->cur == -1) {
    const char *f = h->field;
    h->cur = H_NONE;
    if (!strcasecmp(f, "Sec-WebSocket-Key") && !h->response) h->cur = H_KEY, h->have_key = true;
    else if (!strcasecmp(f, "Sec-WebSocket-Accept") && h->response)
      h->cur = H_ACCEPT, h->have_key = true;
    else if (!strcasecmp(f, "Sec-WebSocket-Version")) h->cur = H_VERSION, h->have_version = true;
    else if (!strcasecmp(f, "Upgrade")) h->cur = H_UPGRADE, h->have_upgrade = true;
    else if (!strcasecmp(f, "Connection")) h->cur = H_CONNECTION, h->have_connection = true;
    /* A repeated header replaces nothing: its value is appended after a comma. */
    if (h->cur == H_CONNECTION && h->connection_len) {
      bool over = false;
      append(h->connection, &h->connection_len, sizeof h->connection, ",", 1, &over);
    }
  }
  bool over = false;
  switch (h->cur) {
  case H_KEY:
  case H_ACCEPT: append(h->key, &h->key_len, sizeof h->key, at, n, &over); break;
  case H_VERSION: append(h->version, &h->version_len, sizeof h->version, at, n, &over); break;
  case H_UPGRADE: append(h->upgrade, &h->upgrade_len, sizeof h->upgrade, at, n, &over); break;
  case H_CONNECTION:
    append(h->connection, &h->connection_len, sizeof h->connection, at, n, &over);
    break;
  default: break;
  }
  if (over) h->overlong = true;
  return 0;
}

static int on_complete(http_parser *p) {
  struct vsri_ws_http *h = p->data;
  h->complete = true;
  http_parser_pause(p, 1);
  return 0;
}

static const http_parser_settings ws_settings = {
    .on_url = on_url,
    .on_header_field = on_field,
    .on_header_value = on_value,
    .on_message_complete = on_complete,
};

static void http_init(struct vsri_ws_http *h, enum http_parser_type type) {
  memset(h, 0, sizeof *h);
  http_parser_init(&h->p, type);
  h->p.data = h;
  h->cur = H_NONE;
  h->response = type == HTTP_RESPONSE;
}

void vsri_ws_http_init_request(struct vsri_ws_http *h) { http_init(h, HTTP_REQUEST); }

void vsri_ws_http_init_response(struct vsri_ws_http *h, const char *key) {
  http_init(h, HTTP_RESPONSE);
  vsri_ws_accept_of(key, strlen(key), h->expect_accept);
}

static enum vsri_ws_verdict refuse(struct vsri_ws_http *h, int status, const char *fmt,
                                   const char *arg) {
  h->status = status;
  snprintf(h->why, sizeof h->why, fmt, arg);
  return VSRI_WS_REFUSE;
}

static enum vsri_ws_verdict verdict_request(struct vsri_ws_http *h) {
  if (h->p.method != HTTP_GET) {
    return refuse(h, 405, "method %s is not GET", http_method_str(h->p.method));
  }
  bool root = h->url_len >= 1 && h->url[0] == '/' && (h->url[1] == '\0' || h->url[1] == '?');
  if (!root) return refuse(h, 404, "path \"%s\" is not \"/\"", h->overlong ? "(too long)" : h->url);
  if (!h->have_upgrade) return VSRI_WS_PAGE;
  if (h->overlong) return refuse(h, 400, "%s", "a WebSocket header value is too long");
  if (strcasecmp(h->upgrade, "websocket") != 0) {
    return refuse(h, 400, "Upgrade \"%s\" is not websocket", h->upgrade);
  }
  if (!has_token(h->connection, "upgrade")) {
    return refuse(h, 400, "Connection \"%s\" does not contain Upgrade", h->connection);
  }
  if (h->p.http_major < 1 || (h->p.http_major == 1 && h->p.http_minor < 1)) {
    return refuse(h, 400, "%s", "HTTP version below 1.1");
  }
  if (!h->have_version) return refuse(h, 426, "%s", "missing Sec-WebSocket-Version");
  if (strcmp(h->version, "13") != 0) {
    return refuse(h, 426, "Sec-WebSocket-Version \"%s\" is not 13", h->version);
  }
  if (!h->have_key) return refuse(h, 400, "%s", "missing Sec-WebSocket-Key");
  if (!key_valid(h->key, h->key_len)) {
    return refuse(h, 400, "Sec-WebSocket-Key \"%s\" is not the base64 of 16 bytes", h->key);
  }
  return VSRI_WS_UPGRADE;
}

static enum vsri_ws_verdict verdict_response(struct vsri_ws_http *h) {
  char st[16];
  snprintf(st, sizeof st, "%u", h->p.status_code);
  if (h->p.status_code != 101) return refuse(h, 0, "server answered HTTP %s, not 101", st);
  if (strcasecmp(h->upgrade, "websocket") != 0 || !has_token(h->connection, "upgrade")) {
    return refuse(h, 0, "%s", "server's 101 lacks Upgrade: websocket / Connection: Upgrade");
  }
  if (strcmp(h->key, h->expect_accept) != 0) {
    return refuse(h, 0, "Sec-WebSocket-Accept \"%s\" does not match the key", h->key);
  }
  return VSRI_WS_ACCEPTED;
}

enum vsri_ws_verdict vsri_ws_http_feed(struct vsri_ws_http *h, const uint8_t *p, size_t n,
                                       size_t *used) {
  *used = 0;
  if (h->complete) return VSRI_WS_MORE;
  size_t room = VSRI_WS_HEADERS_MAX - h->bytes;
  size_t give = n < room ? n : room;
  size_t k = http_parser_execute(&h->p, &ws_settings, (const char *)p, give);
  enum http_errno e = HTTP_PARSER_ERRNO(&h->p);
  if (e == HPE_PAUSED) http_parser_pause(&h->p, 0);
  h->bytes += (uint32_t)k;
  *used = k;
  if (e != HPE_OK && e != HPE_PAUSED) {
    h->status = 400;
    snprintf(h->why, sizeof h->why, "malformed HTTP %s: %s (%s)",
             h->response ? "response" : "request", http_errno_description(e), http_errno_name(e));
    return VSRI_WS_REFUSE;
  }
  if (!h->complete) {
    if (h->bytes >= VSRI_WS_HEADERS_MAX) {
      h->status = 431;
      snprintf(h->why, sizeof h->why, "request headers exceed %u bytes", VSRI_WS_HEADERS_MAX);
      return VSRI_WS_REFUSE;
    }
    return VSRI_WS_MORE;
  }
  return h->response ? verdict_response(h) : verdict_request(h);
}

static const char *status_text(int status) {
  switch (status) {
  case 404: return "Not Found";
  case 405: return "Method Not Allowed";
  case 426: return "Upgrade Required";
  case 431: return "Request Header Fields Too Large";
  default: return "Bad Request";
  }
}

size_t vsri_ws_http_101(const struct vsri_ws_http *h, char *buf, size_t len) {
  char accept[29];
  vsri_ws_accept_of(h->key, h->key_len, accept);
  int n = snprintf(buf, len,
                   "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
                   accept);
  return n < 0 ? 0 : (size_t)n < len ? (size_t)n : len - 1;
}

size_t vsri_ws_http_error(const struct vsri_ws_http *h, char *buf, size_t len) {
  int status = h->status ? h->status : 400;
  int n = snprintf(buf, len,
                   "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
                   "%sConnection: close\r\n\r\n%s\n",
                   status, status_text(status), strlen(h->why) + 1,
                   status == 426 ? "Sec-WebSocket-Version: 13\r\n" : "", h->why);
  return n < 0 ? 0 : (size_t)n < len ? (size_t)n : len - 1;
}

size_t vsri_ws_http_page_head(char *buf, size_t len) {
  int n = snprintf(buf, len,
                   "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n"
                   "Content-Length: %zu\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
                   vsri_ws_page_len);
  return n < 0 ? 0 : (size_t)n < len ? (size_t)n : len - 1;
}

size_t vsri_ws_http_request(const char *host, char key[25], char *buf, size_t len) {
  uint8_t raw[16];
  gnutls_rnd(GNUTLS_RND_NONCE, raw, sizeof raw);
  base64(raw, sizeof raw, key);
  int n = snprintf(buf, len,
                   "GET / HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n",
                   host, key);
  return n < 0 ? 0 : (size_t)n < len ? (size_t)n : len - 1;
}

/* ---- frames ---------------------------------------------------------------------------- */

int vsri_ws_reader_init(struct vsri_ws_reader *r, bool server, uint32_t max_message) {
  memset(r, 0, sizeof *r);
  r->server = server;
  r->max_message = max_message;
  return 0;
}

void vsri_ws_reader_free(struct vsri_ws_reader *r) { (void)r; }

void vsri_ws_feed(struct vsri_ws_reader *r, const uint8_t *p, size_t n) {
  r->in = p;
  r->in_len = n;
}

/* DATA of a reader that is not raw (tests, fuzzing): the unmasked payload, valid until the next
 * vsri_ws_next() on this thread. */
static _Thread_local uint8_t ws_buf[4096];

/* A frame header, as parsed. */
struct ws_hdr {
  bool fin, mask;
  uint8_t rsv, opcode;
  uint64_t payload_length;
};

/* Gathers a frame header from the fed bytes. Returns 1 (complete: *h), 0 (feed more) or -1
 * (malformed: a length not minimally encoded or over 2^63, a control frame fragmented or over
 * 125 bytes). */
static int ws_read_header(struct vsri_ws_reader *r, struct ws_hdr *h) {
  for (;;) {
    size_t need = 2;
    if (r->hdr_len >= 2) {
      uint8_t l = r->hdr[1] & 0x7f;
      need = 2u + (l == 126 ? 2u : l == 127 ? 8u : 0u) + (r->hdr[1] & 0x80 ? 4u : 0u);
    }
    if (r->hdr_len == need) break;
    if (r->in_len == 0) return 0;
    size_t t = need - r->hdr_len < r->in_len ? need - r->hdr_len : r->in_len;
    memcpy(r->hdr + r->hdr_len, r->in, t);
    r->hdr_len = (uint8_t)(r->hdr_len + t);
    r->in += t;
    r->in_len -= t;
  }
  const uint8_t *p = r->hdr;
  h->fin = p[0] >> 7;
  h->rsv = (p[0] >> 4) & 7;
  h->opcode = p[0] & 0x0f;
  h->mask = p[1] >> 7;
  uint8_t l = p[1] & 0x7f;
  size_t o = 2;
  uint64_t len = l;
  if (l == 126) {
    len = (uint64_t)p[2] << 8 | p[3];
    o = 4;
    if (len < 126) return -1;
  } else if (l == 127) {
    len = 0;
    for (int i = 0; i < 8; i++) len = len << 8 | p[2 + i];
    o = 10;
    if (len < 65536 || len >> 63) return -1;
  }
  if ((h->opcode & 8) && (!h->fin || len > 125)) return -1;
  h->payload_length = len;
  r->masked = h->mask;
  if (h->mask) memcpy(r->key, p + o, 4);
  r->frame_len = len;
  r->hdr_len = 0;
  return 1;
}

static void ws_fail(struct vsri_ws_reader *r, struct vsri_ws_event *ev, uint16_t code,
                    const char *fmt, unsigned long long a, unsigned long long b) {
  r->failed = true;
  snprintf(r->why, sizeof r->why, fmt, a, b);
  ev->kind = VSRI_WS_EV_ERROR;
  ev->code = code;
  ev->data = (const uint8_t *)r->why;
  ev->len = strlen(r->why);
}

/* Checks a frame's header (its first payload chunk, or the whole frame when empty). Returns
 * false after ws_fail. */
static bool ws_frame_start(struct vsri_ws_reader *r, const struct ws_hdr *io,
                           struct vsri_ws_event *ev) {
  if (io->rsv) {
    ws_fail(r, ev, VSRI_WS_PROTOCOL, "reserved bits 0x%llx set (no extension was negotiated)",
            io->rsv, 0);
    return false;
  }
  if (r->server && !io->mask) {
    ws_fail(r, ev, VSRI_WS_PROTOCOL, "unmasked client frame (opcode %llu)", io->opcode, 0);
    return false;
  }
  if (!r->server && io->mask) {
    ws_fail(r, ev, VSRI_WS_PROTOCOL, "masked server frame (opcode %llu)", io->opcode, 0);
    return false;
  }
  switch (io->opcode) {
  case WSLAY_TEXT_FRAME:
    ws_fail(r, ev, VSRI_WS_UNSUPPORTED,
            "text frame of %llu bytes: vsrbus carries binary messages only", io->payload_length,
            0);
    return false;
  case WSLAY_BINARY_FRAME:
    if (r->in_msg) {
      ws_fail(r, ev, VSRI_WS_PROTOCOL,
              "binary frame inside a fragmented message (after %llu fragments)", r->fragments, 0);
      return false;
    }
    r->in_msg = true;
    r->msg_len = 0;
    r->fragments = 1;
    break;
  case WSLAY_CONTINUATION_FRAME:
    if (!r->in_msg) {
      ws_fail(r, ev, VSRI_WS_PROTOCOL, "continuation frame outside a message", 0, 0);
      return false;
    }
    if (++r->fragments > VSRI_WS_FRAGMENTS_MAX) {
      ws_fail(r, ev, VSRI_WS_TOO_BIG, "message split into more than %llu fragments",
              VSRI_WS_FRAGMENTS_MAX, 0);
      return false;
    }
    break;
  case WSLAY_CONNECTION_CLOSE:
  case WSLAY_PING:
  case WSLAY_PONG: r->ctrl_len = 0; break;
  default:
    ws_fail(r, ev, VSRI_WS_PROTOCOL, "reserved opcode 0x%llx", io->opcode, 0);
    return false;
  }
  if (!wslay_is_ctrl_frame(io->opcode) && r->msg_len + io->payload_length > r->max_message) {
    ws_fail(r, ev, VSRI_WS_TOO_BIG, "message of at least %llu bytes exceeds max_message_size %llu",
            r->msg_len + io->payload_length, r->max_message);
    return false;
  }
  r->opcode = io->opcode;
  r->frame_left = io->payload_length;
  r->in_frame = true;
  r->fin_pending = io->fin;
  return true;
}

void vsri_ws_next(struct vsri_ws_reader *r, struct vsri_ws_event *ev) {
  memset(ev, 0, sizeof *ev);
  if (r->failed) {
    ev->kind = VSRI_WS_EV_ERROR;
    ev->code = VSRI_WS_PROTOCOL;
    ev->data = (const uint8_t *)r->why;
    ev->len = strlen(r->why);
    return;
  }
  if (r->end_pending) {
    r->end_pending = false;
    r->in_msg = false;
    ev->kind = VSRI_WS_EV_END;
    return;
  }
  for (;;) {
    if (!r->in_frame) {
      struct ws_hdr h;
      int hr = ws_read_header(r, &h);
      if (hr == 0) {
        ev->kind = VSRI_WS_EV_NONE;
        return;
      }
      if (hr < 0) {
        ws_fail(r, ev, VSRI_WS_PROTOCOL,
                "malformed frame header (length not minimally encoded or over 2^63, or a "
                "control frame fragmented or over 125 bytes)", 0, 0);
        return;
      }
      if (!ws_frame_start(r, &h, ev)) return;
    }
    size_t n = r->frame_left < r->in_len ? (size_t)r->frame_left : r->in_len;
    if (n == 0 && r->frame_left > 0) {
      ev->kind = VSRI_WS_EV_NONE;
      return;
    }
    const uint8_t *src = r->in;
    uint64_t off = r->frame_len - r->frame_left;
    bool ctrl = wslay_is_ctrl_frame(r->opcode);
    if (!ctrl && !r->raw && n > sizeof ws_buf) n = sizeof ws_buf;
    r->in += n;
    r->in_len -= n;
    r->frame_left -= (uint64_t)n;
    bool frame_done = r->frame_left == 0;
    if (frame_done) r->in_frame = false;
    if (ctrl) { /* at most 125 bytes (ws_read_header) */
      if (r->masked) vsri_ws_mask_copy(r->ctrl + r->ctrl_len, src, n, r->key, off);
      else memcpy(r->ctrl + r->ctrl_len, src, n);
      r->ctrl_len = (uint8_t)(r->ctrl_len + n);
      if (!frame_done) continue;
      ev->data = r->ctrl;
      ev->len = r->ctrl_len;
      if (r->opcode == WSLAY_PING) {
        ev->kind = VSRI_WS_EV_PING;
      } else if (r->opcode == WSLAY_PONG) {
        ev->kind = VSRI_WS_EV_PONG;
      } else {
        if (r->ctrl_len == 1) {
          ws_fail(r, ev, VSRI_WS_PROTOCOL, "close frame with a 1-byte payload", 0, 0);
          return;
        }
        ev->kind = VSRI_WS_EV_CLOSE;
        ev->code = r->ctrl_len >= 2 ? (uint16_t)(r->ctrl[0] << 8 | r->ctrl[1]) : 0;
        r->failed = true; /* nothing may follow a Close */
        snprintf(r->why, sizeof r->why, "frame after Close");
      }
      return;
    }
    bool msg_done = frame_done && r->fin_pending;
    if (n > 0) {
      ev->kind = VSRI_WS_EV_DATA;
      if (r->raw) {
        ev->data = src;
        ev->mask = r->masked ? r->key : NULL;
        ev->mask_off = off;
      } else {
        if (r->masked) vsri_ws_mask_copy(ws_buf, src, n, r->key, off);
        else memcpy(ws_buf, src, n);
        ev->data = ws_buf;
      }
      ev->len = n;
      ev->first = r->msg_len == 0;
      r->msg_len += (uint64_t)n;
      r->end_pending = msg_done;
      return;
    }
    if (msg_done) {
      r->in_msg = false;
      ev->kind = VSRI_WS_EV_END;
      return;
    }
  }
}

size_t vsri_ws_header(uint8_t out[VSRI_WS_HDR_MAX], uint8_t opcode, uint64_t len,
                      const uint8_t *mask) {
  size_t n = 0;
  out[n++] = (uint8_t)(0x80 | (opcode & 0x0f));
  uint8_t m = mask ? 0x80 : 0;
  if (len < 126) {
    out[n++] = (uint8_t)(m | len);
  } else if (len < 65536) {
    out[n++] = m | 126;
    out[n++] = (uint8_t)(len >> 8);
    out[n++] = (uint8_t)len;
  } else {
    out[n++] = m | 127;
    for (int i = 7; i >= 0; i--) out[n++] = (uint8_t)(len >> (8 * i));
  }
  if (mask) {
    memcpy(out + n, mask, 4);
    n += 4;
  }
  return n;
}

void vsri_ws_mask(uint8_t *p, size_t n, const uint8_t mask[4], uint64_t off) {
  vsri_ws_mask_copy(p, p, n, mask, off); /* each step loads before it stores: in place is safe */
}

size_t vsri_ws_close_frame(uint8_t out[127], uint16_t code, const char *reason) {
  size_t rl = reason ? strlen(reason) : 0;
  if (rl > 123) rl = 123;
  out[0] = 0x88;
  out[1] = (uint8_t)(2 + rl);
  out[2] = (uint8_t)(code >> 8);
  out[3] = (uint8_t)code;
  if (rl) memcpy(out + 4, reason, rl);
  return 4 + rl;
}

void vsri_ws_mask_copy(uint8_t *dst, const uint8_t *src, size_t n, const uint8_t mask[4],
                       uint64_t off) {
  size_t i = 0;
  for (; i < n && ((off + i) & 3) != 0; i++) dst[i] = src[i] ^ mask[(off + i) & 3];
  /* From a 4-aligned payload offset the key repeats every 4 bytes: 16 bytes a step. */
  uint64_t m8;
  uint8_t k[8] = {mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3]};
  memcpy(&m8, k, 8);
  for (; i + 16 <= n; i += 16) {
    uint64_t a, b;
    memcpy(&a, src + i, 8);
    memcpy(&b, src + i + 8, 8);
    a ^= m8;
    b ^= m8;
    memcpy(dst + i, &a, 8);
    memcpy(dst + i + 8, &b, 8);
  }
  for (; i < n; i++) dst[i] = src[i] ^ mask[(off + i) & 3];
}
