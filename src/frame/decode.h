/* Streaming frame decoder: bytes in, whole frames (in pool buffers) out. No I/O, no clock.
 *
 * Feed it chunks of any size. It collects the 256-byte header, checks it (size range, command,
 * seal, typed validation: vsr_frame_check_header), takes a buffer of the frame's size from the
 * pool, and fills the body. For large bodies the caller may read straight into the frame buffer
 * (vsri_decoder_want / vsri_decoder_wrote) so a 1 MiB frame is never copied. */
#ifndef VSRI_FRAME_DECODE_H
#define VSRI_FRAME_DECODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vsrbus/msg.h"
#include "vsrbus/wire.h"

enum {
  VSRI_DECODE_VERIFY_BODY = 1u << 0, /* verify a non-zero Prepare checksum_body */
};

struct vsri_decoder {
  struct vsr_pool *pool;
  uint32_t max_size; /* frames above it are VSR_EFRAME_LARGE */
  uint32_t flags;
  uint32_t hdr_have; /* header bytes collected in |hdr| while |msg| is NULL */
  uint32_t have;     /* frame bytes in |msg| (header included) while |msg| is non-NULL */
  struct vsr_msg *msg; /* frame being filled; non-NULL exactly when the header was accepted */
  _Alignas(16) uint8_t hdr[VSR_HEADER_SIZE];
};

void vsri_decoder_init(struct vsri_decoder *d, struct vsr_pool *pool, uint32_t max_size,
                       uint32_t flags);

/* Releases a partially filled frame, if any. The decoder may be re-initialised afterwards. */
void vsri_decoder_free(struct vsri_decoder *d);

/* Consumes up to |n| bytes of |p|; *|used| tells how many. Returns
 *   1  a frame completed: *|out| holds it (one reference, owned by the caller); call again
 *      with the rest of the bytes;
 *   0  all |n| bytes were consumed and the frame is not complete yet;
 *   <0 VSR_EFRAME_* (the stream is poisoned: close the connection; |hdr| holds the offending
 *      header for the log line, and a header error repeats on every later feed) or VSR_EPOOL (no buffer; the header is kept, feeding again with
 *      n == 0 retries the pool). */
int vsri_decoder_feed(struct vsri_decoder *d, const uint8_t *p, size_t n, size_t *used,
                      struct vsr_msg **out);

/* While a frame body is being filled, returns the number of bytes still missing and sets
 * *|dst| to where they go; returns 0 otherwise. */
size_t vsri_decoder_want(const struct vsri_decoder *d, uint8_t **dst);

/* Records that |n| bytes (<= the last want) were written at the want pointer. Returns 1 with
 * *|out| when the frame completed, 0 if more is needed, or a VSR_EFRAME_* body error;
 * VSR_EINVAL (nothing recorded) when no body is wanted or |n| exceeds the want. */
int vsri_decoder_wrote(struct vsri_decoder *d, size_t n, struct vsr_msg **out);

/* The reason to report when the stream ends now: VSR_ECLOSED at a frame boundary,
 * VSR_EEOF_HEADER inside a header, VSR_EEOF_BODY inside a body. */
int vsri_decoder_eof_reason(const struct vsri_decoder *d);

static inline bool vsri_decoder_idle(const struct vsri_decoder *d) {
  return d->msg == NULL && d->hdr_have == 0;
}

/* Progress of the frame in progress: bytes received (header included) and its size (0 while
 * the header is incomplete). Both 0 at a frame boundary. */
static inline void vsri_decoder_progress(const struct vsri_decoder *d, uint32_t *have,
                                         uint32_t *size) {
  *have = d->msg ? d->have : d->hdr_have;
  *size = d->msg ? d->msg->size : d->hdr_have == VSR_HEADER_SIZE ? vsr_hdr_size(d->hdr) : 0;
}

#endif
