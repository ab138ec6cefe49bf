/* libFuzzer target for the WebSocket frame reader (src/transport/ws_proto.c over wslay's frame
 * layer): the input, after two control bytes (side and chunk size), is fed in chunks to a
 * server-side (or client-side) reader with a 4 KiB message cap. Every event must be consistent:
 * DATA never grows a message past the cap and flags its first bytes, control
 * payloads stay within 125 bytes, an error carries a close code of RFC 6455 and a reason, and
 * nothing follows an error or a Close. Seeds in corpus/ws_frame: a masked PingClient message,
 * one split in fragments around a Ping, a Close, a text frame. */
#include <stdlib.h>
#include <string.h>

#include "transport/ws_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FZ_MAX 4096u

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 2) return 0;
  bool server = (data[0] & 1) == 0;
  size_t chunk = (size_t)data[1] % 200 + 1;
  data += 2;
  size -= 2;
  struct vsri_ws_reader r;
  if (vsri_ws_reader_init(&r, server, FZ_MAX) != 0) return 0;
  size_t msg = 0;
  bool done = false;
  while (size > 0 && !done) {
    size_t k = chunk < size ? chunk : size;
    vsri_ws_feed(&r, data, k);
    for (;;) {
      struct vsri_ws_event ev;
      vsri_ws_next(&r, &ev);
      if (ev.kind == VSRI_WS_EV_NONE) break;
      switch (ev.kind) {
      case VSRI_WS_EV_DATA:
        if (ev.first != (msg == 0)) abort();
        msg += ev.len;
        if (msg > FZ_MAX) abort();
        break;
      case VSRI_WS_EV_END:
        msg = 0;
        break;
      case VSRI_WS_EV_PING:
      case VSRI_WS_EV_PONG:
        if (ev.len > 125) abort();
        break;
      case VSRI_WS_EV_CLOSE:
        if (ev.len > 125) abort();
        done = true;
        break;
      case VSRI_WS_EV_ERROR:
        if (ev.code != 1002 && ev.code != 1003 && ev.code != 1009) abort();
        if (r.why[0] == '\0') abort();
        done = true;
        break;
      default: abort();
      }
      if (done) break;
    }
    data += k;
    size -= k;
  }
  if (done) { /* a failed or closed reader reports an error, never data */
    struct vsri_ws_event ev;
    vsri_ws_next(&r, &ev);
    if (ev.kind != VSRI_WS_EV_ERROR) abort();
  }
  vsri_ws_reader_free(&r);
  return 0;
}
