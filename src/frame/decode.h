/* Streaming frame decoder: bytes in, whole frames (in pool buffers) out. No I/O, no clock.
 *
 * Feed it chunks of any size. It collects the 256-byte header, checks it (size range, command,
 * seal, typed validation: vsr_frame_check_header, then the memory limits), and fills the body.
 * Memory is reserved only as bytes arrive: nothing until the first body byte, then the frame's
 * size up to |allowance|; a larger frame's buffer grows (x4, copied) when it is full and more
 * bytes are here, so a peer that claims 64 MiB and sends 1 KiB holds one allowance-sized
 * buffer. Every buffer is charged to the plane's budget. For large bodies the
 * caller may read straight into the frame buffer (vsri_decoder_want / vsri_decoder_wrote) so a
 * 1 MiB frame is copied at most at its few growth steps. */
#ifndef VSRI_FRAME_DECODE_H
#define VSRI_FRAME_DECODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vsrbus/msg.h"
#include "vsrbus/wire.h"

enum {
  VSRI_DECODE_VERIFY_BODY = 1u << 0, /* verify a non-zero Prepare checksum_body */
  VSRI_DECODE_PREAUTH = 1u << 1,     /* frames above max_size are VSR_EFRAME_PREAUTH */
};

/* Default allowance: a 64 KiB body and its header are taken at their final size at once. */
#define VSRI_DECODE_ALLOWANCE ((64u << 10) + 256u)

struct vsri_decoder;

/* The bytes of the frames being received on one plane (shared by its connections). When a
 * frame's growth would cross |max|, the largest frame in flight on the plane is evicted (its
 * connection closed with VSR_EMEMORY_BUDGET) if it holds at least as much as the grower would;
 * else the grower is refused. So the biggest holder pays first, stalled bodies lose to bodies
 * that are arriving, and small frames get through. */
struct vsri_mem_budget {
  const char *name; /* "client plane", for log lines */
  uint64_t max;      /* frames in flight on the plane hold at most this; 0: no cap */
  bool reserve_only; /* |max| is only a share others must leave free: never enforced here */
  uint64_t reserved; /* capacity of the buffers of frames being filled */
  uint64_t filled;   /* bytes received into them */
  uint64_t peak;     /* highest |reserved| */
  /* Another plane whose unused budget (max - reserved) this one may never take from the
   * node-wide cap: the client plane cannot starve the replica plane. */
  const struct vsri_mem_budget *protect;
  struct vsri_decoder *head; /* decoders holding a charged buffer */
  uint64_t evictions;        /* frames evicted to make room */
};

/* Which limit refused a frame (for the log line). */
enum vsri_decode_why {
  VSRI_WHY_NONE = 0,
  VSRI_WHY_CONN,  /* larger than the connection budget */
  VSRI_WHY_PLANE, /* the plane budget is (or would be) exceeded */
  VSRI_WHY_NODE,  /* the node-wide cap (pool bytes_max) */
  VSRI_WHY_RESERVE, /* the node-wide cap less the other plane's protected share */
  VSRI_WHY_EVICTED, /* the largest frame in flight when the plane budget was full */
};

struct vsri_decoder {
  struct vsr_pool *pool;
  uint32_t max_size; /* frames above it are VSR_EFRAME_LARGE (PREAUTH: VSR_EFRAME_PREAUTH) */
  uint32_t flags;
  uint32_t hdr_have; /* header bytes collected in |hdr| while |msg| is NULL */
  uint32_t have;     /* frame bytes in |msg| (header included) while |msg| is non-NULL */
  /* Frame being filled, or NULL. Its msg->size is the bytes reserved so far (<= |size|). */
  struct vsr_msg *msg;
  uint32_t size;      /* the accepted header's frame size; 0 while no header is accepted */
  uint32_t allowance; /* bytes taken at once when the body starts (default VSRI_DECODE_ALLOWANCE) */
  uint32_t conn_max;  /* frames above it are VSR_EMEMORY_BUDGET (0: no cap beyond max_size) */
  int err;            /* sticky error: the stream is poisoned */
  uint8_t why;        /* enum vsri_decode_why of a VSR_EMEMORY_* error */
  uint64_t why_limit, why_used; /* the limit that refused, and what was in use */
  struct vsri_mem_budget *budget; /* plane budget, or NULL */
  struct vsri_decoder *bprev, *bnext; /* the budget's list, while a buffer is charged */
  /* Called when the budget evicts this decoder's frame: the stream is poisoned, the buffer no
   * longer charged (it is freed with the decoder); the owner closes the connection without
   * touching it (a read into the buffer may still be pending). NULL: never evicted. */
  void (*on_evict)(void *ctx);
  void *evict_ctx;
  _Alignas(16) uint8_t hdr[VSR_HEADER_SIZE];
};

void vsri_decoder_init(struct vsri_decoder *d, struct vsr_pool *pool, uint32_t max_size,
                       uint32_t flags);

/* Sets the memory limits (any time; they apply to the next frame's header and to growth). */
void vsri_decoder_set_budget(struct vsri_decoder *d, struct vsri_mem_budget *budget,
                             uint32_t allowance, uint32_t conn_max);

/* Lets the plane budget evict this decoder's frame (see struct vsri_mem_budget). */
void vsri_decoder_set_evict(struct vsri_decoder *d, void (*fn)(void *ctx), void *ctx);

/* Changes the frame size limit and the PREAUTH flag (the replica handshake completed). */
void vsri_decoder_set_max(struct vsri_decoder *d, uint32_t max_size, bool preauth);

/* Writes "size S, command C, <the limit that refused it>" for a log line about error |err|. */
void vsri_decoder_describe(const struct vsri_decoder *d, int err, char *buf, size_t len);

/* Gives the frame in progress's charge back to the plane budget and forgets the budget and
 * the evict hook; the buffer stays (a read into it may still be pending) until
 * vsri_decoder_free. For an owner that goes away before its buffer may (io.h, "Letting go"). */
void vsri_decoder_detach(struct vsri_decoder *d);

/* Releases a partially filled frame, if any. The decoder may be re-initialised afterwards. */
void vsri_decoder_free(struct vsri_decoder *d);

/* Consumes up to |n| bytes of |p|; *|used| tells how many. Returns
 *   1  a frame completed: *|out| holds it (one reference, owned by the caller); call again
 *      with the rest of the bytes;
 *   0  all |n| bytes were consumed and the frame is not complete yet;
 *   <0 VSR_EFRAME_*, VSR_EMEMORY_BUDGET, VSR_EMEMORY_MAX or VSR_EPOOL (the heap refused):
 *      the stream is poisoned: close the connection. |hdr| holds the offending header for the
 *      log line (vsri_decoder_describe), and the error repeats on every later feed. */
int vsri_decoder_feed(struct vsri_decoder *d, const uint8_t *p, size_t n, size_t *used,
                      struct vsr_msg **out);

/* While a frame body is being filled, returns the room left in its buffer (bytes still missing
 * that the buffer can take now) and sets *|dst| to where they go; returns 0 otherwise, also
 * when the buffer is full but the frame is not: the next bytes go through feed, which grows
 * it as they arrive. */
size_t vsri_decoder_want(const struct vsri_decoder *d, uint8_t **dst);

/* When the frame's buffer is full but the frame is not, grows it now from the bytes already
 * received (to at most 4x them), so the next read can go straight into it. Returns 0 or, like
 * feed, a VSR_EMEMORY_* / VSR_EPOOL error that poisons the stream. */
int vsri_decoder_grow(struct vsri_decoder *d);

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
  *size = d->size ? d->size : d->hdr_have == VSR_HEADER_SIZE ? vsr_hdr_size(d->hdr) : 0;
}

#endif
