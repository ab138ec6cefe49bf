/* TLS, WS and WSS transports, bytes in: the TLS handshake and decryption, the HTTP upgrade
 * (server and client), WebSocket frames, and the frames they carry (tls_ws_impl.h). */
#include <string.h>

#include "transport/tls_ws_impl.h"
#include "util/alloc.h"
#include "util/log.h"
#include "vsrbus/error.h"

/* WS: a completed frame is held until its message ends (one frame per message). */
bool vsri_tw_on_frame(struct vsri_stream *s, struct vsr_msg *m) {
  struct tw_conn *c = tw_of(s);
  if (++c->msg_frames > 1 || c->held) {
    vsr_msg_unref(m);
    VSRI_WARN("VSR-WS", "%s %s: a WebSocket message carries more than one frame (each must "
              "carry exactly one); closing", s->name, tw_name(c));
    vsri_tw_ws_violation(c, VSRI_WS_TOO_BIG, "a message must carry exactly one frame",
                         VSR_EPROTO);
    return false;
  }
  c->held = m;
  return true;
}

static bool tw_ws_message_end(struct tw_conn *c) {
  struct vsr_msg *m = c->held;
  c->held = NULL;
  uint32_t have = 0, size = 0;
  vsri_decoder_progress(&c->s.dec, &have, &size);
  if (!m || have != 0) {
    vsr_msg_unref(m);
    VSRI_WARN("VSR-WS", "%s %s: a WebSocket message ended %s (each must carry exactly one "
              "whole frame); closing", c->s.name, tw_name(c),
              m ? "with bytes of a second frame" : have ? "inside a frame" : "without a frame");
    vsri_tw_ws_violation(c, VSRI_WS_TOO_BIG, "a message must carry exactly one frame", VSR_EPROTO);
    return false;
  }
  c->msg_frames = 0;
  return vsri_stream_deliver(&c->s, m);
}

static _Thread_local uint8_t tw_unmask_buf[VSR_HEADER_SIZE];

/* WebSocket payload bytes (still masked with |mask| from payload offset |off|, or not masked:
 * NULL) to the decoder: a frame's body is unmasked word-wise straight into its buffer, one
 * pass for the copy and the unmasking; only its 256-byte header goes through a small buffer.
 * Returns false once closing. */
static bool tw_ws_payload(struct tw_conn *c, const uint8_t *p, size_t n, const uint8_t *mask,
                          uint64_t off) {
  if (!mask) return vsri_stream_decode(&c->s, p, n);
  struct vsri_decoder *d = &c->s.dec;
  while (n > 0) {
    uint8_t *dst = NULL;
    size_t w = 0, k;
    if (!vsri_decoder_idle(d)) {
      int g = vsri_decoder_grow(d);
      if (g < 0) {
        vsri_stream_frame_error(&c->s, g);
        return false;
      }
      w = vsri_decoder_want(d, &dst);
    }
    if (w > 0) {
      k = n < w ? n : w;
      vsri_ws_mask_copy(dst, p, k, mask, off);
      if (!vsri_stream_wrote(&c->s, k)) return false;
    } else { /* the frame header (or a body the decoder must grow first) */
      uint32_t have = 0, size = 0;
      vsri_decoder_progress(d, &have, &size);
      size_t room = have < VSR_HEADER_SIZE ? VSR_HEADER_SIZE - have : sizeof tw_unmask_buf;
      k = n < room ? n : room;
      vsri_ws_mask_copy(tw_unmask_buf, p, k, mask, off);
      if (!vsri_stream_decode(&c->s, tw_unmask_buf, k)) return false;
    }
    p += k;
    n -= k;
    off += k;
  }
  return true;
}

static bool tw_ws_frames(struct tw_conn *c, const uint8_t *p, size_t n) {
  vsri_ws_feed(&c->ws, p, n);
  for (;;) {
    struct vsri_ws_event ev;
    vsri_ws_next(&c->ws, &ev);
    switch (ev.kind) {
    case VSRI_WS_EV_NONE: return true;
    case VSRI_WS_EV_DATA:
      if (ev.first) c->msg_frames = 0;
      if (!tw_ws_payload(c, ev.data, ev.len, ev.mask, ev.mask_off)) return false;
      break;
    case VSRI_WS_EV_END:
      if (!tw_ws_message_end(c)) return false;
      break;
    case VSRI_WS_EV_PING: vsri_tw_ctl_frame(c, WSLAY_PONG, ev.data, ev.len); break;
    case VSRI_WS_EV_PONG: break;
    case VSRI_WS_EV_CLOSE:
      VSRI_DEBUG("VSR-WS", "%s %s: peer sent Close (code %u); answering", c->s.name, tw_name(c),
                 ev.code);
      if (!c->ws_close_sent) {
        c->ws_close_due = true;
        c->close_code = ev.code && ev.code != 1005 ? ev.code : VSRI_WS_NORMAL;
      }
      vsri_stream_close(&c->s, VSR_ECLOSED, true);
      return false;
    case VSRI_WS_EV_ERROR:
      VSRI_WARN("VSR-WS", "%s %s: %s (close code %u); closing", c->s.name, tw_name(c),
                c->ws.why, ev.code);
      vsri_tw_ws_violation(c, ev.code, c->ws.why,
                      ev.code == VSRI_WS_TOO_BIG ? VSR_EFRAME_LARGE : VSR_EPROTO);
      return false;
    }
  }
}

/* The server's HTTP phase. Returns false when the connection is done with these bytes. */
static bool tw_http_server(struct tw_conn *c, const uint8_t **p, size_t *n) {
  size_t used = 0;
  enum vsri_ws_verdict v = vsri_ws_http_feed(c->http, *p, *n, &used);
  *p += used;
  *n -= used;
  char buf[TW_CTL_MAX];
  size_t len;
  switch (v) {
  case VSRI_WS_MORE: return false;
  case VSRI_WS_UPGRADE:
    len = vsri_ws_http_101(c->http, buf, sizeof buf);
    vsri_tw_ctl_add(c, buf, len);
    vsri_free(c->http);
    c->http = NULL;
    vsri_tw_established(c);
    return c->s.state == VSRI_SS_OPEN;
  case VSRI_WS_PAGE:
    VSRI_INFO("VSR-WS", "%s %s: GET / without Upgrade: serving the page", c->s.name, tw_name(c));
    len = vsri_ws_http_page_head(buf, sizeof buf);
    vsri_tw_ctl_add(c, buf, len);
    c->page = vsri_ws_page;
    c->page_len = vsri_ws_page_len;
    vsri_stream_close(&c->s, VSR_ECLOSED, true);
    return false;
  default:
    VSRI_WARN("VSR-WS", "%s %s: request refused with HTTP %d: %s; closing", c->s.name, tw_name(c),
              c->http->status, c->http->why);
    len = vsri_ws_http_error(c->http, buf, sizeof buf);
    vsri_tw_ctl_add(c, buf, len);
    vsri_stream_close(&c->s, VSR_EHANDSHAKE, true);
    return false;
  }
}

static bool tw_http_client(struct tw_conn *c, const uint8_t **p, size_t *n) {
  size_t used = 0;
  enum vsri_ws_verdict v = vsri_ws_http_feed(c->http, *p, *n, &used);
  *p += used;
  *n -= used;
  if (v == VSRI_WS_MORE) return false;
  if (v != VSRI_WS_ACCEPTED) {
    VSRI_WARN("VSR-WS", "%s %s: upgrade failed: %s", c->s.name, tw_name(c), c->http->why);
    if (c->s.ev->on_connected) c->s.ev->on_connected(c->s.owner, &c->s.base, VSR_EHANDSHAKE);
    vsri_stream_fail(&c->s, VSR_EHANDSHAKE);
    return false;
  }
  vsri_free(c->http);
  c->http = NULL;
  vsri_tw_established(c);
  return c->s.state == VSRI_SS_OPEN;
}

/* Plaintext bytes: the upgrade, WebSocket frames, or frames. Returns false once closing. */
static bool tw_plain(struct tw_conn *c, const uint8_t *p, size_t n) {
  if (c->phase == TWP_HTTP) {
    bool go = c->s.server ? tw_http_server(c, &p, &n) : tw_http_client(c, &p, &n);
    if (!go) return c->s.state == VSRI_SS_HANDSHAKE || c->s.state == VSRI_SS_CONNECTING;
    if (n == 0) return true;
  }
  return c->ws_on ? tw_ws_frames(c, p, n) : vsri_stream_decode(&c->s, p, n);
}

static bool tw_tls_failed(struct tw_conn *c, int rv, const char *what) {
  VSRI_WARN("VSR-TLS", "%s %s: %s: %s; closing", c->s.name, tw_name(c), what, c->tls.why);
  if (!c->s.server && !c->s.reported && c->s.ev->on_connected) {
    c->s.ev->on_connected(c->s.owner, &c->s.base, rv);
  }
  vsri_stream_close(&c->s, rv, true); /* the alert, if any, goes out */
  return false;
}

static _Thread_local uint8_t tw_plain_buf[VSRI_TLS_RECORD];

/* Ciphertext in: handshake, then decrypt and pass on. Returns false once closing. */
static bool tw_tls_input(struct tw_conn *c, const uint8_t *p, size_t n) {
  vsri_tls_feed(&c->tls, p, n);
  if (!c->tls.done) {
    int rv = vsri_tls_handshake(&c->tls);
    vsri_tw_want_write(c);
    if (rv == VSR_EAGAIN) return true;
    if (rv < 0) return tw_tls_failed(c, rv, "handshake failed");
    if (c->s.server) {
      if (!c->ws_on) vsri_tw_established(c);
      else c->phase = TWP_HTTP;
    } else {
      vsri_tw_client_ready(c);
    }
    uint8_t st = c->s.state;
    if (st != VSRI_SS_OPEN && st != VSRI_SS_HANDSHAKE && st != VSRI_SS_CONNECTING) return false;
  }
  for (;;) {
    uint8_t *dst = tw_plain_buf;
    size_t want = sizeof tw_plain_buf;
    bool direct = false;
    if (!c->ws_on && c->phase == TWP_FRAMES && !vsri_decoder_idle(&c->s.dec)) {
      int g = vsri_decoder_grow(&c->s.dec);
      if (g < 0) {
        vsri_stream_frame_error(&c->s, g);
        return false;
      }
      uint8_t *d;
      size_t w = vsri_decoder_want(&c->s.dec, &d);
      if (w >= sizeof tw_plain_buf) { /* decrypt straight into the frame buffer */
        dst = d;
        want = w;
        direct = true;
      }
    }
    ssize_t got = vsri_tls_recv(&c->tls, dst, want);
    if (got == VSR_EAGAIN) return true;
    if (got == VSR_ECLOSED) {
      c->s.peer_eof = true;
      int reason = c->phase == TWP_FRAMES ? vsri_decoder_eof_reason(&c->s.dec) : VSR_ECLOSED;
      vsri_stream_close(&c->s, reason, true);
      return false;
    }
    if (got < 0) return tw_tls_failed(c, (int)got, "record error");
    if (direct) {
      if (!vsri_stream_wrote(&c->s, (size_t)got)) return false;
      continue;
    }
    if (!tw_plain(c, dst, (size_t)got)) return false;
  }
}

/* The layer's input: ciphertext (TLS, WSS) or plaintext (WS). Returns false once closing. */
bool vsri_tw_bytes_in(struct vsri_stream *s, const uint8_t *p, size_t n) {
  struct tw_conn *c = tw_of(s);
  return c->tls_on ? tw_tls_input(c, p, n) : tw_plain(c, p, n);
}
