/* libFuzzer target for the WebSocket upgrade (src/transport/ws_proto.c, HTTP side): the input is
 * fed to a request parser (server) and to a response parser (client) in chunks whose sizes come
 * from the first byte, so requests split anywhere are covered. Every verdict must be one the
 * side can give, a refusal must carry a status and a reason, and the responses built from a
 * verdict must fit their buffers. Seeds in corpus/ws_http: a valid upgrade, a plain GET / (the
 * page), a bad version, a server's 101. */
#include <stdlib.h>
#include <string.h>

#include "transport/ws_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static enum vsri_ws_verdict fz_feed(struct vsri_ws_http *h, const uint8_t *p, size_t n,
                                    size_t chunk) {
  enum vsri_ws_verdict v = VSRI_WS_MORE;
  size_t total = 0;
  while (n > 0 && v == VSRI_WS_MORE) {
    size_t k = chunk < n ? chunk : n, used = 0;
    v = vsri_ws_http_feed(h, p, k, &used);
    if (used > k) abort();
    total += used;
    if (v == VSRI_WS_MORE && used != k) abort(); /* an incomplete message takes every byte */
    p += k;
    n -= k;
  }
  if (total > VSRI_WS_HEADERS_MAX) abort();
  return v;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  size_t chunk = (size_t)data[0] % 64 + 1;
  data++;
  size--;
  struct vsri_ws_http h;
  char out[1024];
  vsri_ws_http_init_request(&h);
  enum vsri_ws_verdict v = fz_feed(&h, data, size, chunk);
  switch (v) {
  case VSRI_WS_MORE: break;
  case VSRI_WS_UPGRADE:
    if (vsri_ws_http_101(&h, out, sizeof out) == 0) abort();
    break;
  case VSRI_WS_PAGE:
    if (vsri_ws_http_page_head(out, sizeof out) == 0) abort();
    break;
  case VSRI_WS_REFUSE:
    if (h.status < 400 || h.status > 499 || h.why[0] == '\0') abort();
    if (vsri_ws_http_error(&h, out, sizeof out) == 0) abort();
    break;
  default: abort();
  }
  vsri_ws_http_init_response(&h, "dGhlIHNhbXBsZSBub25jZQ==");
  v = fz_feed(&h, data, size, chunk);
  if (v != VSRI_WS_MORE && v != VSRI_WS_ACCEPTED && v != VSRI_WS_REFUSE) abort();
  if (v == VSRI_WS_REFUSE && h.why[0] == '\0') abort();
  return 0;
}
