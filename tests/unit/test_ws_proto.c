/* WebSocket without I/O (src/transport/ws_proto.c): the HTTP upgrade verdicts (101 with the
 * RFC 6455 accept value, the page for a plain GET /, each refusal with its status and reason,
 * requests fed byte by byte, pipelined frames left over), the client's check of the 101, and
 * the frame reader: a fragmented masked binary message fed byte by byte, and each violation
 * with its close code (1002 unmasked / reserved opcode / stray continuation / bad length,
 * 1003 text, 1009 too big or too many fragments), Ping, Close. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "transport/ws_proto.h"
#include "vsrbus/error.h"

#define KEY "dGhlIHNhbXBsZSBub25jZQ==" /* RFC 6455 §1.3 */

static enum vsri_ws_verdict t_req(struct vsri_ws_http *h, const char *req, size_t *used) {
  vsri_ws_http_init_request(h);
  return vsri_ws_http_feed(h, (const uint8_t *)req, strlen(req), used);
}

static void upgrade_ok(void **state) {
  (void)state;
  struct vsri_ws_http h;
  size_t used;
  const char *req = "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: WebSocket\r\n"
                    "Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: " KEY "\r\n"
                    "Sec-WebSocket-Version: 13\r\n\r\n\x82\x80";
  assert_int_equal(t_req(&h, req, &used), VSRI_WS_UPGRADE);
  assert_int_equal(used, strlen(req) - 2); /* the frame bytes after it are not HTTP */
  char resp[256];
  vsri_ws_http_101(&h, resp, sizeof resp);
  assert_non_null(strstr(resp, "HTTP/1.1 101 "));
  assert_non_null(strstr(resp, "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
  /* Byte by byte. */
  vsri_ws_http_init_request(&h);
  enum vsri_ws_verdict v = VSRI_WS_MORE;
  size_t i = 0;
  for (; i < strlen(req) && v == VSRI_WS_MORE; i++) {
    v = vsri_ws_http_feed(&h, (const uint8_t *)req + i, 1, &used);
  }
  assert_int_equal(v, VSRI_WS_UPGRADE);
  assert_int_equal(i, strlen(req) - 2);
}

static void plain_get_gets_page(void **state) {
  (void)state;
  struct vsri_ws_http h;
  size_t used;
  assert_int_equal(t_req(&h, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", &used), VSRI_WS_PAGE);
  assert_int_equal(t_req(&h, "GET /?count=5 HTTP/1.1\r\nHost: x\r\n\r\n", &used), VSRI_WS_PAGE);
  char head[256];
  vsri_ws_http_page_head(head, sizeof head);
  char want[64];
  snprintf(want, sizeof want, "Content-Length: %zu\r\n", vsri_ws_page_len);
  assert_non_null(strstr(head, want));
  assert_non_null(strstr(vsri_ws_page, "new WebSocket("));
  assert_non_null(strstr(vsri_ws_page, "DataView"));
}

static void t_refused(const char *req, int status, const char *why) {
  struct vsri_ws_http h;
  size_t used;
  enum vsri_ws_verdict v = t_req(&h, req, &used);
  if (v != VSRI_WS_REFUSE || h.status != status || !strstr(h.why, why)) {
    fail_msg("request %.40s...: verdict %d status %d why \"%s\" (want %d \"%s\")", req, v,
             h.status, h.why, status, why);
  }
  char resp[512];
  vsri_ws_http_error(&h, resp, sizeof resp);
  char line[32];
  snprintf(line, sizeof line, "HTTP/1.1 %d ", status);
  assert_non_null(strstr(resp, line));
  assert_non_null(strstr(resp, why));
}

#define UPG "Upgrade: websocket\r\nConnection: Upgrade\r\n"

static void refusals(void **state) {
  (void)state;
  t_refused("BLAH\r\n\r\n", 400, "malformed HTTP request");
  t_refused("GET / HTTP/1.1\r\nHost x\r\n\r\n", 400, "malformed HTTP request");
  t_refused("POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 405, "method POST is not GET");
  t_refused("GET /metrics HTTP/1.1\r\n\r\n", 404, "path \"/metrics\" is not \"/\"");
  t_refused("GET / HTTP/1.1\r\n" UPG "Sec-WebSocket-Version: 13\r\n\r\n", 400,
            "missing Sec-WebSocket-Key");
  t_refused("GET / HTTP/1.1\r\n" UPG "Sec-WebSocket-Key: abc\r\nSec-WebSocket-Version: 13\r\n\r\n",
            400, "is not the base64 of 16 bytes");
  t_refused("GET / HTTP/1.1\r\n" UPG "Sec-WebSocket-Key: " KEY "\r\n\r\n", 426,
            "missing Sec-WebSocket-Version");
  t_refused("GET / HTTP/1.1\r\n" UPG "Sec-WebSocket-Key: " KEY "\r\nSec-WebSocket-Version: 8\r\n\r\n",
            426, "Sec-WebSocket-Version \"8\" is not 13");
  t_refused("GET / HTTP/1.1\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n", 400,
            "Upgrade \"h2c\" is not websocket");
  t_refused("GET / HTTP/1.1\r\nUpgrade: websocket\r\nSec-WebSocket-Key: " KEY
            "\r\nSec-WebSocket-Version: 13\r\n\r\n",
            400, "does not contain Upgrade");
  /* Headers over 8 KiB. */
  size_t n = VSRI_WS_HEADERS_MAX + 100;
  char *big = malloc(n + 1);
  assert_non_null(big);
  memset(big, 'a', n);
  memcpy(big, "GET / HTTP/1.1\r\nX-Pad: ", 23);
  big[n] = '\0';
  t_refused(big, 431, "request headers exceed 8192 bytes");
  free(big);
}

static void client_checks_101(void **state) {
  (void)state;
  char key[25], req[256];
  vsri_ws_http_request("127.0.0.1:1", key, req, sizeof req);
  assert_int_equal(strlen(key), 24);
  /* The server side accepts what the client writes. */
  struct vsri_ws_http srv;
  size_t used;
  assert_int_equal(t_req(&srv, req, &used), VSRI_WS_UPGRADE);
  char resp[256];
  size_t rl = vsri_ws_http_101(&srv, resp, sizeof resp);
  struct vsri_ws_http cl;
  vsri_ws_http_init_response(&cl, key);
  assert_int_equal(vsri_ws_http_feed(&cl, (const uint8_t *)resp, rl, &used), VSRI_WS_ACCEPTED);
  assert_int_equal(used, rl);
  /* A wrong accept value, and a 200, are refused. */
  vsri_ws_http_init_response(&cl, KEY);
  assert_int_equal(vsri_ws_http_feed(&cl, (const uint8_t *)resp, rl, &used), VSRI_WS_REFUSE);
  assert_non_null(strstr(cl.why, "does not match"));
  const char *ok = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
  vsri_ws_http_init_response(&cl, key);
  assert_int_equal(vsri_ws_http_feed(&cl, (const uint8_t *)ok, strlen(ok), &used),
                   VSRI_WS_REFUSE);
  assert_non_null(strstr(cl.why, "not 101"));
}

/* ---- frames ---------------------------------------------------------------------------- */

static const uint8_t t_mask[4] = {0x11, 0x22, 0x33, 0x44};

/* Appends one frame (FIN as given) to |out|; client frames are masked. */
static size_t t_frame(uint8_t *out, bool fin, uint8_t opcode, const uint8_t *p, size_t n,
                      bool masked) {
  size_t h = vsri_ws_header(out, opcode, n, masked ? t_mask : NULL);
  if (!fin) out[0] &= 0x7f;
  memcpy(out + h, p, n);
  if (masked) vsri_ws_mask(out + h, n, t_mask, 0);
  return h + n;
}

/* Feeds |n| bytes (byte by byte when |slow|) and collects events: DATA bytes into |msg|.
 * Returns the last non-DATA, non-NONE event kind; *code gets its code. */
static int t_read(struct vsri_ws_reader *r, const uint8_t *p, size_t n, bool slow, uint8_t *msg,
                  size_t *msg_len, uint16_t *code, unsigned *ends) {
  int last = VSRI_WS_EV_NONE;
  size_t step = slow ? 1 : n;
  for (size_t off = 0; off < n; off += step) {
    vsri_ws_feed(r, p + off, step < n - off ? step : n - off);
    for (;;) {
      struct vsri_ws_event ev;
      vsri_ws_next(r, &ev);
      if (ev.kind == VSRI_WS_EV_NONE) break;
      if (ev.kind == VSRI_WS_EV_DATA) {
        memcpy(msg + *msg_len, ev.data, ev.len);
        *msg_len += ev.len;
        continue;
      }
      if (ev.kind == VSRI_WS_EV_END) {
        (*ends)++;
        continue;
      }
      last = ev.kind;
      *code = ev.code;
      if (ev.kind == VSRI_WS_EV_ERROR || ev.kind == VSRI_WS_EV_CLOSE) return last;
    }
  }
  return last;
}

static void fragmented_message_byte_by_byte(void **state) {
  (void)state;
  uint8_t payload[1000], wire[1200], got[1000];
  for (size_t i = 0; i < sizeof payload; i++) payload[i] = (uint8_t)(i * 13);
  size_t n = t_frame(wire, false, WSLAY_BINARY_FRAME, payload, 300, true);
  uint8_t ping[] = "hi";
  n += t_frame(wire + n, true, WSLAY_PING, ping, 2, true); /* control frames may interleave */
  n += t_frame(wire + n, true, WSLAY_CONTINUATION_FRAME, payload + 300, 700, true);
  struct vsri_ws_reader r;
  assert_int_equal(vsri_ws_reader_init(&r, true, 4096), 0);
  size_t len = 0;
  uint16_t code = 0;
  unsigned ends = 0;
  assert_int_equal(t_read(&r, wire, n, true, got, &len, &code, &ends), VSRI_WS_EV_PING);
  assert_int_equal(len, 1000);
  assert_int_equal(ends, 1);
  assert_memory_equal(got, payload, 1000);
  vsri_ws_reader_free(&r);
}

static void t_violation(const uint8_t *wire, size_t n, bool server, uint32_t max,
                        uint16_t want_code, const char *why) {
  struct vsri_ws_reader r;
  assert_int_equal(vsri_ws_reader_init(&r, server, max), 0);
  uint8_t got[4096];
  size_t len = 0;
  uint16_t code = 0;
  unsigned ends = 0;
  int kind = t_read(&r, wire, n, false, got, &len, &code, &ends);
  if (kind != VSRI_WS_EV_ERROR || code != want_code || !strstr(r.why, why)) {
    fail_msg("kind %d code %u why \"%s\" (want %u \"%s\")", kind, code, r.why, want_code, why);
  }
  vsri_ws_reader_free(&r);
}

static void violations(void **state) {
  (void)state;
  uint8_t w[8192], p[2000] = {0};
  size_t n;
  n = t_frame(w, true, WSLAY_BINARY_FRAME, p, 10, false);
  t_violation(w, n, true, 4096, 1002, "unmasked client frame");
  n = t_frame(w, true, WSLAY_BINARY_FRAME, p, 10, true);
  t_violation(w, n, false, 4096, 1002, "masked server frame");
  n = t_frame(w, true, WSLAY_TEXT_FRAME, p, 10, true);
  t_violation(w, n, true, 4096, 1003, "text frame");
  n = t_frame(w, true, WSLAY_BINARY_FRAME, p, 2000, true);
  t_violation(w, n, true, 1000, 1009, "exceeds max_message_size 1000");
  n = t_frame(w, true, WSLAY_CONTINUATION_FRAME, p, 10, true);
  t_violation(w, n, true, 4096, 1002, "continuation frame outside a message");
  n = t_frame(w, true, 0x3, p, 10, true);
  t_violation(w, n, true, 4096, 1002, "reserved opcode 0x3");
  n = t_frame(w, true, WSLAY_BINARY_FRAME, p, 10, true);
  w[0] |= 0x40; /* RSV1 */
  t_violation(w, n, true, 4096, 1002, "reserved bits");
  /* Length 5 written in the 16-bit form: not minimal. */
  static const uint8_t bad_len[] = {0x82, 0xfe, 0x00, 0x05, 1, 2, 3, 4, 0, 0, 0, 0, 0};
  t_violation(bad_len, sizeof bad_len, true, 4096, 1002, "malformed frame header");
  /* 65 fragments of one byte. */
  n = t_frame(w, false, WSLAY_BINARY_FRAME, p, 1, true);
  for (int i = 0; i < 64; i++) n += t_frame(w + n, false, WSLAY_CONTINUATION_FRAME, p, 1, true);
  t_violation(w, n, true, 4096, 1009, "more than 64 fragments");
  /* A binary frame inside a fragmented message. */
  n = t_frame(w, false, WSLAY_BINARY_FRAME, p, 1, true);
  n += t_frame(w + n, true, WSLAY_BINARY_FRAME, p, 1, true);
  t_violation(w, n, true, 4096, 1002, "binary frame inside a fragmented message");
}

static void close_frame(void **state) {
  (void)state;
  uint8_t w[200], body[2] = {0x03, 0xe8}, got[16];
  size_t n = t_frame(w, true, WSLAY_CONNECTION_CLOSE, body, 2, true);
  struct vsri_ws_reader r;
  assert_int_equal(vsri_ws_reader_init(&r, true, 4096), 0);
  size_t len = 0;
  uint16_t code = 0;
  unsigned ends = 0;
  assert_int_equal(t_read(&r, w, n, false, got, &len, &code, &ends), VSRI_WS_EV_CLOSE);
  assert_int_equal(code, 1000);
  vsri_ws_reader_free(&r);
  /* Our own close frame: code and reason, unmasked. */
  uint8_t out[127];
  size_t cl = vsri_ws_close_frame(out, 1009, "too big");
  assert_int_equal(cl, 4 + 7);
  assert_int_equal(out[0], 0x88);
  assert_int_equal(out[1], 9);
  assert_int_equal(out[2] << 8 | out[3], 1009);
}

/* The word-wise mask equals the RFC's byte rule at every start offset and length. */
static void mask_matches_bytewise(void **state) {
  (void)state;
  uint8_t a[100], b[100];
  for (uint64_t off = 0; off < 8; off++) {
    for (size_t n = 0; n <= 37; n++) {
      for (size_t i = 0; i < sizeof a; i++) a[i] = b[i] = (uint8_t)(i * 29 + n);
      vsri_ws_mask(a + 1, n, t_mask, off);
      for (size_t i = 0; i < n; i++) b[1 + i] ^= t_mask[(off + i) % 4];
      assert_memory_equal(a, b, sizeof a);
    }
  }
}

/* The one-pass unmasking copy equals the RFC's byte rule at every start offset and length
 * (long enough to take its 16-byte steps), and writes nothing outside the destination. */
static void mask_copy_matches_bytewise(void **state) {
  (void)state;
  uint8_t src[80], a[82], b[82];
  for (size_t i = 0; i < sizeof src; i++) src[i] = (uint8_t)(i * 31 + 7);
  for (uint64_t off = 0; off < 8; off++) {
    for (size_t n = 0; n <= 70; n++) {
      memset(a, 0xee, sizeof a);
      memset(b, 0xee, sizeof b);
      vsri_ws_mask_copy(a + 1, src + 3, n, t_mask, off);
      for (size_t i = 0; i < n; i++) b[1 + i] = src[3 + i] ^ t_mask[(off + i) % 4];
      assert_memory_equal(a, b, sizeof a);
    }
  }
}

/* A raw reader (the transport's) hands out the masked wire bytes with the key and offset,
 * no copy: unmasked by the consumer they give the message back, fed whole or byte by byte,
 * for 7-bit, 16-bit and 64-bit payload lengths. Its malformed-length checks still hold. */
static void raw_reader_gives_masked_spans(void **state) {
  (void)state;
  static uint8_t payload[70000], wire[70100], got[70000];
  for (size_t i = 0; i < sizeof payload; i++) payload[i] = (uint8_t)(i * 7 + 1);
  const size_t sizes[] = {100, 1000, 70000};
  for (int slow = 0; slow < 2; slow++) {
    for (size_t k = 0; k < 3; k++) {
      size_t n = t_frame(wire, true, WSLAY_BINARY_FRAME, payload, sizes[k], true);
      struct vsri_ws_reader r;
      assert_int_equal(vsri_ws_reader_init(&r, true, sizeof payload), 0);
      r.raw = true;
      size_t len = 0, step = slow ? 1 : n;
      unsigned ends = 0;
      for (size_t off = 0; off < n; off += step) {
        vsri_ws_feed(&r, wire + off, step < n - off ? step : n - off);
        for (;;) {
          struct vsri_ws_event ev;
          vsri_ws_next(&r, &ev);
          if (ev.kind == VSRI_WS_EV_NONE) break;
          if (ev.kind == VSRI_WS_EV_END) {
            ends++;
            continue;
          }
          assert_int_equal(ev.kind, VSRI_WS_EV_DATA);
          assert_non_null(ev.mask);
          assert_int_equal(ev.mask_off, len);
          assert_true(ev.data >= wire && ev.data + ev.len <= wire + n); /* no copy */
          vsri_ws_mask_copy(got + len, ev.data, ev.len, ev.mask, ev.mask_off);
          len += ev.len;
        }
      }
      assert_int_equal(len, sizes[k]);
      assert_int_equal(ends, 1);
      assert_memory_equal(got, payload, sizes[k]);
      vsri_ws_reader_free(&r);
    }
  }
  /* 126 announcing a length under 126 is not minimally encoded: refused. */
  const uint8_t bad[] = {0x82, 0x80 | 126, 0x00, 0x05, 1, 2, 3, 4};
  struct vsri_ws_reader r;
  assert_int_equal(vsri_ws_reader_init(&r, true, 4096), 0);
  r.raw = true;
  vsri_ws_feed(&r, bad, sizeof bad);
  struct vsri_ws_event ev;
  vsri_ws_next(&r, &ev);
  assert_int_equal(ev.kind, VSRI_WS_EV_ERROR);
  assert_int_equal(ev.code, VSRI_WS_PROTOCOL);
  assert_non_null(strstr(r.why, "minimally"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(upgrade_ok),
      cmocka_unit_test(plain_get_gets_page),
      cmocka_unit_test(refusals),
      cmocka_unit_test(client_checks_101),
      cmocka_unit_test(fragmented_message_byte_by_byte),
      cmocka_unit_test(violations),
      cmocka_unit_test(close_frame),
      cmocka_unit_test(mask_matches_bytewise),
      cmocka_unit_test(mask_copy_matches_bytewise),
      cmocka_unit_test(raw_reader_gives_masked_spans),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
