/* libFuzzer target for the streaming frame decoder (src/frame/decode.c + header.c).
 *
 * Run for 60 s (from the repository root; tests/fuzz/CMakeLists.txt has the build lines):
 *   cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DVSR_FUZZ=ON
 *   cmake --build build-fuzz --target fuzz_decode -j2
 *   mkdir -p build-fuzz/corpus-decode
 *   build-fuzz/tests/fuzz/fuzz_decode -max_total_time=60 -rss_limit_mb=2048 \
 *       build-fuzz/corpus-decode tests/fuzz/corpus/decode
 *
 * Input: byte 0 = mode (bit 0 verify Prepare bodies, bit 1 tiny pool, bit 2 bodies through
 * want/wrote, bits 3-4 max_message_size class, bit 5 reseal every frame first so the typed
 * rules behind the XXH3 seals are reachable), byte 1 = split seed, then the byte stream.
 * Invariants: no crash or sanitizer report; used <= n; only documented return codes; every
 * delivered frame is the exact stream bytes that precede the cut, has a header that passes
 * vsr_frame_check_header, and fits max_size; after vsri_decoder_free the pool has no live
 * message. Any violation aborts. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "frame/decode.h"
#include "vsrbus/error.h"
#include "vsrbus/msg.h"
#include "vsrbus/wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FZ_HELD_MAX 4

struct fz {
  const uint8_t *s; /* the stream */
  size_t len;
  size_t pos;       /* stream bytes consumed by the decoder so far */
  uint32_t rng;
  uint32_t max_size;
  struct vsri_decoder d;
  struct vsr_pool *pool;
  struct vsr_msg *held[FZ_HELD_MAX]; /* delivered frames kept a while (pool pressure) */
  unsigned nheld;
};

#define FZ_CHECK(c)                                                                              \
  do {                                                                                           \
    if (!(c)) abort();                                                                           \
  } while (0)

static uint32_t fz_next(struct fz *z) {
  z->rng ^= z->rng << 13;
  z->rng ^= z->rng >> 17;
  z->rng ^= z->rng << 5;
  return z->rng;
}

static void fz_release_held(struct fz *z) {
  for (unsigned i = 0; i < z->nheld; i++) vsr_msg_unref(z->held[i]);
  z->nheld = 0;
}

/* A frame just completed at stream offset z->pos: check it, then keep or drop it. */
static void fz_frame(struct fz *z, struct vsr_msg *m) {
  FZ_CHECK(m != NULL && m->refs == 1);
  FZ_CHECK(m->size >= VSR_HEADER_SIZE && m->size <= z->max_size && m->size <= z->pos);
  FZ_CHECK(vsr_hdr_size(m->data) == m->size);
  FZ_CHECK(vsr_frame_check_header(m->data, z->max_size) == 0);
  FZ_CHECK(memcmp(m->data, z->s + z->pos - m->size, m->size) == 0);
  if (z->nheld == FZ_HELD_MAX) fz_release_held(z);
  z->held[z->nheld++] = m;
}

static bool fz_error_ok(int rc) {
  return rc == VSR_EPOOL || rc == VSR_EMEMORY_MAX || rc == VSR_EMEMORY_BUDGET ||
         (rc <= VSR_EFRAME_SMALL && rc >= VSR_EFRAME_ENUM);
}

/* Writes part of the wanted body directly. Returns the wrote() result, or 0 when the decoder
 * wants nothing or the stream is exhausted. */
static int fz_direct(struct fz *z) {
  uint8_t *dst = NULL;
  size_t want = vsri_decoder_want(&z->d, &dst);
  if (want == 0 || z->pos == z->len) return 0;
  size_t n = 1 + fz_next(z) % 4096;
  if (n > want) n = want;
  if (n > z->len - z->pos) n = z->len - z->pos;
  memcpy(dst, z->s + z->pos, n);
  z->pos += n;
  struct vsr_msg *m = NULL;
  int rc = vsri_decoder_wrote(&z->d, n, &m);
  FZ_CHECK(rc == 0 || rc == 1 || rc == VSR_EFRAME_BODY_CHECKSUM);
  FZ_CHECK((rc == 1) == (m != NULL));
  if (rc == 1) fz_frame(z, m);
  return rc;
}

/* One feed of a chunk (possibly empty) chosen by the seed. Returns <0 to stop. */
static int fz_feed(struct fz *z) {
  size_t n = fz_next(z) % 600;
  if (fz_next(z) % 16 == 0) n = 0;
  if (n > z->len - z->pos) n = z->len - z->pos;
  size_t used = SIZE_MAX;
  struct vsr_msg *m = NULL;
  int rc = vsri_decoder_feed(&z->d, n ? z->s + z->pos : NULL, n, &used, &m);
  FZ_CHECK(used <= n);
  z->pos += used;
  if (rc == 1) {
    fz_frame(z, m);
    return 0;
  }
  FZ_CHECK(m == NULL);
  if (rc == 0) {
    FZ_CHECK(used == n);
    return 0;
  }
  FZ_CHECK(fz_error_ok(rc));
  /* Every error poisons the stream: the same error again, nothing consumed. */
  FZ_CHECK(vsri_decoder_feed(&z->d, z->s, z->len, &used, &m) == rc && used == 0 && !m);
  return rc;
}

static void fz_run(struct fz *z, uint8_t mode) {
  unsigned steps = 0;
  uint8_t *dst;
  while (z->pos < z->len && steps++ < 100000) {
    int rc = (mode & 4) && vsri_decoder_want(&z->d, &dst) ? fz_direct(z) : fz_feed(z);
    if (rc < 0) return; /* poisoned stream: a transport would close here */
  }
  int eof = vsri_decoder_eof_reason(&z->d);
  FZ_CHECK(eof == VSR_ECLOSED || eof == VSR_EEOF_HEADER || eof == VSR_EEOF_BODY);
}

/* Seals each frame of a copy of the stream as a sender would (XXH3 is out of a mutator's
 * reach). Returns the copy; the caller frees it. */
static uint8_t *fz_reseal(const uint8_t *s, size_t len) {
  uint8_t *c = malloc(len ? len : 1);
  FZ_CHECK(c != NULL);
  memcpy(c, s, len);
  size_t off = 0;
  while (len - off >= VSR_HEADER_SIZE) {
    uint32_t size = vsr_hdr_size(c + off);
    if (size < VSR_HEADER_SIZE || size > len - off) break;
    if (c[off + 60] == VSR_CMD_PREPARE || c[off + 60] == VSR_CMD_REPAIR_PREPARE)
      vsr_prepare_set_body_checksum(c + off);
    vsr_frame_seal(c + off);
    off += size;
  }
  return c;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const uint32_t max_sizes[4] = {256, 4096, 64u << 10, (1u << 20) + 256};
  if (size < 2) return 0;
  uint8_t mode = data[0];
  struct fz z;
  memset(&z, 0, sizeof z);
  uint8_t *copy = (mode & 0x20) ? fz_reseal(data + 2, size - 2) : NULL;
  z.s = copy ? copy : data + 2;
  z.len = size - 2;
  z.rng = 0x9e3779b9u ^ ((uint32_t)data[1] << 8) ^ (uint32_t)size;
  z.max_size = max_sizes[(mode >> 3) & 3];

  struct vsr_pool_options o;
  vsr_pool_options_default(&o);
  memset(o.prealloc, 0, sizeof o.prealloc);
  o.max_message_size = 2u << 20;
  o.bytes_max = (mode & 2) ? 8192 : (16u << 20);
  FZ_CHECK(vsr_pool_new(&z.pool, &o) == 0);
  vsri_decoder_init(&z.d, z.pool, z.max_size, (mode & 1) ? VSRI_DECODE_VERIFY_BODY : 0);

  fz_run(&z, mode);

  fz_release_held(&z);
  vsri_decoder_free(&z.d);
  struct vsr_pool_stats st;
  vsr_pool_stats(z.pool, &st);
  FZ_CHECK(st.live == 0);
  vsr_pool_del(z.pool);
  free(copy);
  return 0;
}
