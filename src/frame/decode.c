/* Streaming frame decoder (src/frame/decode.h): header → checks → pool buffer → body.
 *
 * A chunk that holds a whole header is checked in place and copied once, straight into the
 * pool buffer; only a header split across chunks is gathered in d->hdr first. */
#include "frame/decode.h"

#include "vsrbus/error.h"

_Static_assert(VSRI_DECODE_VERIFY_BODY == VSR_CHECK_BODY_VERIFY, "decode flag = check flag");

void vsri_decoder_init(struct vsri_decoder *d, struct vsr_pool *pool, uint32_t max_size,
                       uint32_t flags) {
  d->pool = pool;
  d->max_size = max_size;
  d->flags = flags;
  d->hdr_have = 0;
  d->have = 0;
  d->msg = NULL;
}

void vsri_decoder_free(struct vsri_decoder *d) {
  vsr_msg_unref(d->msg);
  d->msg = NULL;
  d->have = 0;
  d->hdr_have = 0;
}

/* Checks the complete header at |hdr| (d->hdr or the caller's chunk) and takes the frame's
 * buffer. On any failure the header ends up in d->hdr with hdr_have == 256, so the next feed
 * re-runs this step: a pool retry, or the same frame error again (the stream stays poisoned). */
static int dec_start(struct vsri_decoder *d, const uint8_t *hdr) {
  int rc = vsr_frame_check_header(hdr, d->max_size);
  struct vsr_msg *m = NULL;
  if (rc == 0) {
    m = vsr_pool_get(d->pool, vsr_hdr_size(hdr));
    if (m == NULL) rc = VSR_EPOOL;
  }
  if (rc != 0) {
    if (hdr != d->hdr) memcpy(d->hdr, hdr, VSR_HEADER_SIZE);
    d->hdr_have = VSR_HEADER_SIZE;
    return rc;
  }
  memcpy(m->data, hdr, VSR_HEADER_SIZE);
  d->msg = m;
  d->have = VSR_HEADER_SIZE;
  d->hdr_have = 0;
  return 0;
}

/* The body is complete: verify it if asked, hand the frame over. */
static int dec_finish(struct vsri_decoder *d, struct vsr_msg **out) {
  struct vsr_msg *m = d->msg;
  d->msg = NULL;
  d->have = 0;
  int rc = vsr_frame_check_body(m->data, m->size, d->flags);
  if (rc != 0) {
    /* Like a header error, leave the header in d->hdr for the caller's log line. */
    memcpy(d->hdr, m->data, VSR_HEADER_SIZE);
    vsr_msg_unref(m);
    return rc;
  }
  *out = m;
  return 1;
}

/* Gathers header bytes; returns how many of |n| it took. */
static size_t dec_gather(struct vsri_decoder *d, const uint8_t *p, size_t n) {
  size_t take = VSR_HEADER_SIZE - d->hdr_have;
  if (take > n) take = n;
  if (take == 0) return 0; /* |p| may be NULL when n == 0 */
  memcpy(d->hdr + d->hdr_have, p, take);
  d->hdr_have += (uint32_t)take;
  return take;
}

int vsri_decoder_feed(struct vsri_decoder *d, const uint8_t *p, size_t n, size_t *used,
                      struct vsr_msg **out) {
  size_t u = 0;
  *used = 0;
  *out = NULL;
  if (d->msg == NULL) {
    const uint8_t *hdr = d->hdr;
    if (d->hdr_have == 0 && n >= VSR_HEADER_SIZE) {
      hdr = p; /* whole header in this chunk: check it where it lies */
      u = VSR_HEADER_SIZE;
    } else if (d->hdr_have < VSR_HEADER_SIZE) {
      u = dec_gather(d, p, n);
      if (d->hdr_have < VSR_HEADER_SIZE) {
        *used = u;
        return 0;
      }
    }
    int rc = dec_start(d, hdr);
    *used = u;
    if (rc != 0) return rc;
  }
  struct vsr_msg *m = d->msg;
  size_t take = m->size - d->have;
  if (take > n - u) take = n - u;
  if (take > 0) {
    memcpy(m->data + d->have, p + u, take);
    d->have += (uint32_t)take;
  }
  *used = u + take;
  return d->have == m->size ? dec_finish(d, out) : 0;
}

size_t vsri_decoder_want(const struct vsri_decoder *d, uint8_t **dst) {
  if (d->msg == NULL) return 0;
  *dst = d->msg->data + d->have;
  return d->msg->size - d->have;
}

int vsri_decoder_wrote(struct vsri_decoder *d, size_t n, struct vsr_msg **out) {
  *out = NULL;
  /* More than the last want is a caller bug; refuse it rather than overrun the buffer. */
  if (d->msg == NULL || n > d->msg->size - d->have) return VSR_EINVAL;
  d->have += (uint32_t)n;
  return d->have == d->msg->size ? dec_finish(d, out) : 0;
}

int vsri_decoder_eof_reason(const struct vsri_decoder *d) {
  if (d->msg != NULL) return VSR_EEOF_BODY;
  if (d->hdr_have == 0) return VSR_ECLOSED;
  if (d->hdr_have < VSR_HEADER_SIZE) return VSR_EEOF_HEADER;
  /* A whole header is parked (pool retry or poisoned): its body, if any, never came. */
  return vsr_hdr_size(d->hdr) > VSR_HEADER_SIZE ? VSR_EEOF_BODY : VSR_ECLOSED;
}
