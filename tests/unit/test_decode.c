/* Streaming decoder: any split of the byte stream yields the same frames, large bodies are
 * written in place (want / wrote), each bad frame gives its exact error, EOF reasons, memory
 * limits (reservation as bytes arrive, size classes, budgets, node cap, pre-authentication cap),
 * and no message is leaked. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "frame/decode.h"
#include "vsrbus/error.h"
#include "vsrbus/msg.h"
#include "vsrbus/wire.h"

#define MAX_SIZE (2u << 20)
#define MAX_FRAMES 8

struct fixture {
  struct vsr_pool *pool;
  struct vsri_decoder d;
};

static int setup(void **state) {
  struct fixture *fx = calloc(1, sizeof *fx);
  struct vsr_pool_options o;
  vsr_pool_options_default(&o);
  o.prealloc[0] = 4;
  o.prealloc[1] = 0;
  if (!fx || vsr_pool_new(&fx->pool, &o) != 0) return -1;
  vsri_decoder_init(&fx->d, fx->pool, MAX_SIZE, VSRI_DECODE_VERIFY_BODY);
  *state = fx;
  return 0;
}

/* A pool with nothing preallocated (|bytes_max| 0: the default cap); its options in |o|. */
static struct vsr_pool *empty_pool(struct vsr_pool_options *o, uint64_t bytes_max) {
  vsr_pool_options_default(o);
  memset(o->prealloc, 0, sizeof o->prealloc);
  if (bytes_max) o->bytes_max = bytes_max;
  struct vsr_pool *pool = NULL;
  assert_int_equal(vsr_pool_new(&pool, o), 0);
  return pool;
}

/* Every test must end with no live message: the decoder and the test released everything. */
static int teardown(void **state) {
  struct fixture *fx = *state;
  vsri_decoder_free(&fx->d);
  struct vsr_pool_stats st;
  vsr_pool_stats(fx->pool, &st);
  assert_int_equal(st.live, 0);
  vsr_pool_del(fx->pool);
  free(fx);
  return 0;
}

/* ---- frame builders ---------------------------------------------------------------------- */

/* A sealed Request with |body| pattern bytes; returns the frame length. */
static uint32_t make_request(uint8_t *f, uint32_t body, uint8_t seed) {
  uint32_t size = VSR_HEADER_SIZE + body;
  vsr_header_init(f, VSR_CMD_REQUEST, size);
  vsr_put_u128(f + offsetof(struct vsr_request_header, client), (vsr_u128){0xc1, 0});
  f[offsetof(struct vsr_request_header, operation)] = VSR_OP_SEND_MESSAGES;
  vsr_put_u64(f + offsetof(struct vsr_request_header, session), 1);
  vsr_put_u64(f + offsetof(struct vsr_request_header, request), seed);
  for (uint32_t i = 0; i < body; i++) f[VSR_HEADER_SIZE + i] = (uint8_t)(seed + i * 31);
  return size;
}

static uint32_t make_commit(uint8_t *f, uint64_t commit) {
  vsr_header_init(f, VSR_CMD_COMMIT, VSR_HEADER_SIZE);
  vsr_put_u64(f + offsetof(struct vsr_commit_header, commit), commit);
  vsr_frame_seal(f);
  return VSR_HEADER_SIZE;
}

static uint32_t make_prepare(uint8_t *f, uint32_t body) {
  uint32_t size = VSR_HEADER_SIZE + body;
  vsr_header_init(f, VSR_CMD_PREPARE, size);
  vsr_put_u64(f + offsetof(struct vsr_prepare_header, op), 3);
  for (uint32_t i = 0; i < body; i++) f[VSR_HEADER_SIZE + i] = (uint8_t)(i ^ 0x5a);
  vsr_prepare_set_body_checksum(f);
  vsr_frame_seal(f);
  return size;
}

/* The reference stream: Request(1000-byte body) + Commit + Prepare(300) + Request(0). */
static uint8_t S[4096];
static uint32_t S_len, S_off[5];

static void make_stream(void) {
  S_len = 0;
  S_off[0] = 0;
  S_len += make_request(S + S_len, 1000, 7);
  S_off[1] = S_len;
  S_len += make_commit(S + S_len, 42);
  S_off[2] = S_len;
  S_len += make_prepare(S + S_len, 300);
  S_off[3] = S_len;
  S_len += make_request(S + S_len, 0, 9);
  S_off[4] = S_len;
}

/* ---- feeding helpers --------------------------------------------------------------------- */

struct sink {
  struct vsr_msg *msgs[MAX_FRAMES];
  unsigned n;
};

/* Feeds one chunk until it is consumed; frames go to |k|. Returns 0 or the first error. */
static int feed_chunk(struct vsri_decoder *d, const uint8_t *p, size_t n, struct sink *k) {
  while (true) {
    size_t used = 0;
    struct vsr_msg *m = NULL;
    int rc = vsri_decoder_feed(d, p, n, &used, &m);
    assert_true(used <= n);
    if (rc < 0) return rc;
    p += used;
    n -= used;
    if (rc == 1) {
      assert_non_null(m);
      assert_true(k->n < MAX_FRAMES);
      k->msgs[k->n++] = m;
      continue; /* "call again with the rest", even when nothing is left */
    }
    assert_null(m);
    assert_int_equal(n, 0);
    return 0;
  }
}

/* The sink holds exactly the frames of S, byte for byte; releases them. */
static void sink_expect_stream(struct sink *k) {
  assert_int_equal(k->n, 4);
  for (unsigned i = 0; i < 4; i++) {
    uint32_t len = S_off[i + 1] - S_off[i];
    assert_int_equal(k->msgs[i]->size, len);
    assert_memory_equal(k->msgs[i]->data, S + S_off[i], len);
    assert_int_equal((uintptr_t)k->msgs[i]->data % VSR_MESSAGE_ALIGN, 0);
    vsr_msg_unref(k->msgs[i]);
  }
  k->n = 0;
}

static void sink_release(struct sink *k) {
  for (unsigned i = 0; i < k->n; i++) vsr_msg_unref(k->msgs[i]);
  k->n = 0;
}

/* ---- tests ------------------------------------------------------------------------------- */

static void test_one_byte_at_a_time(void **state) {
  struct fixture *fx = *state;
  struct sink k = {0};
  make_stream();
  for (uint32_t i = 0; i < S_len; i++) {
    assert_int_equal(feed_chunk(&fx->d, S + i, 1, &k), 0);
    bool boundary = false;
    for (int j = 0; j < 5; j++) boundary |= (S_off[j] == i + 1);
    assert_int_equal(vsri_decoder_idle(&fx->d), boundary);
  }
  sink_expect_stream(&k);
  assert_int_equal(vsri_decoder_eof_reason(&fx->d), VSR_ECLOSED);
}

/* Two-frame stream (Request + Commit) cut at every point, plus the whole stream in one go. */
static void test_every_split_point(void **state) {
  struct fixture *fx = *state;
  make_stream();
  uint32_t len = S_off[2];
  for (uint32_t s = 0; s <= len; s++) {
    struct sink k = {0};
    assert_int_equal(feed_chunk(&fx->d, S, s, &k), 0);
    assert_int_equal(feed_chunk(&fx->d, S + s, len - s, &k), 0);
    assert_int_equal(k.n, 2);
    assert_memory_equal(k.msgs[0]->data, S, S_off[1]);
    assert_memory_equal(k.msgs[1]->data, S + S_off[1], VSR_HEADER_SIZE);
    sink_release(&k);
    assert_true(vsri_decoder_idle(&fx->d));
  }
}

static uint64_t prng_next(uint64_t *x) {
  *x ^= *x << 13;
  *x ^= *x >> 7;
  *x ^= *x << 17;
  return *x;
}

static void test_random_splits(void **state) {
  struct fixture *fx = *state;
  uint64_t seed = 0x9e3779b97f4a7c15u;
  make_stream();
  for (int round = 0; round < 300; round++) {
    struct sink k = {0};
    uint32_t off = 0;
    while (off < S_len) {
      uint32_t chunk = (uint32_t)(prng_next(&seed) % 700);
      if (chunk > S_len - off) chunk = S_len - off;
      assert_int_equal(feed_chunk(&fx->d, S + off, chunk, &k), 0);
      off += chunk;
    }
    sink_expect_stream(&k);
  }
}

/* A 1 MiB body goes straight into the frame buffer: want gives the room its buffer has now;
 * when the buffer is full the next bytes go through feed, which grows it (x4), and the frame
 * comes out whole after a few growth steps. */
static void test_want_wrote_large(void **state) {
  struct fixture *fx = *state;
  const uint32_t body = 1u << 20;
  uint8_t *f = malloc(VSR_HEADER_SIZE + body);
  assert_non_null(f);
  make_request(f, body, 3);
  uint8_t *dst = NULL;
  assert_int_equal(vsri_decoder_want(&fx->d, &dst), 0);

  struct sink k = {0};
  assert_int_equal(feed_chunk(&fx->d, f, VSR_HEADER_SIZE + 10, &k), 0);
  assert_int_equal(k.n, 0);
  size_t want = vsri_decoder_want(&fx->d, &dst);
  assert_int_equal(want, VSRI_DECODE_ALLOWANCE - VSR_HEADER_SIZE - 10); /* one allowance */
  assert_ptr_equal(dst, fx->d.msg->data + VSR_HEADER_SIZE + 10);
  assert_int_equal(vsri_decoder_eof_reason(&fx->d), VSR_EEOF_BODY);
  struct vsr_msg *m = NULL;
  assert_int_equal(vsri_decoder_wrote(&fx->d, want + 1, &m), VSR_EINVAL); /* over the want */

  uint32_t off = VSR_HEADER_SIZE + 10, feeds = 0;
  int rc = 0;
  while (off < VSR_HEADER_SIZE + body) {
    want = vsri_decoder_want(&fx->d, &dst);
    if (want == 0) { /* buffer full: 1000 bytes through feed grow it */
      size_t used = 0;
      assert_true(fx->d.have < fx->d.size);
      rc = vsri_decoder_feed(&fx->d, f + off, 1000, &used, &m);
      assert_int_equal(rc, 0);
      assert_int_equal(used, 1000);
      assert_true(fx->d.msg->size <= 4 * (off + 1000u) || fx->d.msg->size == fx->d.size);
      off += 1000;
      feeds++;
      continue;
    }
    size_t n = want / 2 + 1;
    if (n > VSR_HEADER_SIZE + body - off) n = VSR_HEADER_SIZE + body - off;
    memcpy(dst, f + off, n);
    off += (uint32_t)n;
    rc = vsri_decoder_wrote(&fx->d, n, &m);
    assert_true(rc == 0 || rc == 1);
  }
  assert_int_equal(rc, 1);
  assert_true(feeds >= 2 && feeds <= 4); /* 64 KiB -> 256 KiB -> 1 MiB -> whole */
  assert_non_null(m);
  assert_int_equal(m->size, VSR_HEADER_SIZE + body);
  assert_memory_equal(m->data, f, VSR_HEADER_SIZE + body);
  vsr_msg_unref(m);
  assert_true(vsri_decoder_idle(&fx->d));
  assert_int_equal(vsri_decoder_want(&fx->d, &dst), 0);
  assert_int_equal(vsri_decoder_wrote(&fx->d, 1, &m), VSR_EINVAL);
  free(f);
}

/* Feeds a bad header (whole, and split in two) and expects |want| both times; the error is
 * sticky: feeding again (even nothing) repeats it. */
static void expect_header_error(struct fixture *fx, const uint8_t *f, int want) {
  for (int split = 0; split < 2; split++) {
    struct sink k = {0};
    vsri_decoder_init(&fx->d, fx->pool, MAX_SIZE, VSRI_DECODE_VERIFY_BODY);
    int rc = split ? feed_chunk(&fx->d, f, 100, &k) : 0;
    assert_int_equal(rc, 0);
    rc = feed_chunk(&fx->d, f + (split ? 100 : 0), VSR_HEADER_SIZE - (split ? 100 : 0), &k);
    assert_int_equal(rc, want);
    assert_int_equal(k.n, 0);
    assert_memory_equal(fx->d.hdr, f, VSR_HEADER_SIZE);
    size_t used = 1;
    struct vsr_msg *m = NULL;
    assert_int_equal(vsri_decoder_feed(&fx->d, NULL, 0, &used, &m), want);
    assert_int_equal(used, 0);
    assert_null(m);
    vsri_decoder_free(&fx->d);
  }
}

static void test_bad_size(void **state) {
  struct fixture *fx = *state;
  uint8_t f[VSR_HEADER_SIZE];
  static const struct {
    uint32_t size;
    int rc;
  } cases[] = {{0, VSR_EFRAME_SMALL},
               {255, VSR_EFRAME_SMALL},
               {MAX_SIZE + 1, VSR_EFRAME_LARGE},
               {0xffffffffu, VSR_EFRAME_LARGE}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    make_request(f, 0, 1);
    vsr_put_u32(f + VSR_SIZE_FIELD_OFFSET, cases[i].size);
    expect_header_error(fx, f, cases[i].rc);
  }
}

static void test_bad_command(void **state) {
  struct fixture *fx = *state;
  uint8_t f[VSR_HEADER_SIZE];
  make_request(f, 0, 1);
  f[offsetof(struct vsr_header, command)] = 30;
  expect_header_error(fx, f, VSR_EFRAME_COMMAND);
  f[offsetof(struct vsr_header, command)] = 255;
  expect_header_error(fx, f, VSR_EFRAME_COMMAND);
}

static void test_bad_checksums(void **state) {
  struct fixture *fx = *state;
  uint8_t f[VSR_HEADER_SIZE + 300];
  make_commit(f, 5);
  f[3] ^= 1;
  expect_header_error(fx, f, VSR_EFRAME_CHECKSUM);
  make_commit(f, 5);
  f[152] ^= 1; /* a field changed after sealing */
  expect_header_error(fx, f, VSR_EFRAME_CHECKSUM);
  make_prepare(f, 300);
  f[180] ^= 1; /* op changed after the identity was stamped */
  expect_header_error(fx, f, VSR_EFRAME_CHECKSUM);
}

static void test_typed_validation_error(void **state) {
  struct fixture *fx = *state;
  uint8_t f[VSR_HEADER_SIZE];
  make_request(f, 0, 1);
  f[offsetof(struct vsr_request_header, operation)] = 200;
  expect_header_error(fx, f, VSR_EFRAME_ENUM);
  make_request(f, 0, 1);
  vsr_put_u128(f + offsetof(struct vsr_request_header, client), (vsr_u128){0, 0});
  expect_header_error(fx, f, VSR_EFRAME_FIELD);
}

static void test_body_checksum(void **state) {
  struct fixture *fx = *state;
  uint8_t f[VSR_HEADER_SIZE + 300];
  uint32_t len = make_prepare(f, 300);
  f[len - 1] ^= 0x40; /* body changed: the header (and its identity) is still intact */
  struct sink k = {0};
  assert_int_equal(feed_chunk(&fx->d, f, len, &k), VSR_EFRAME_BODY_CHECKSUM);
  assert_int_equal(k.n, 0);
  assert_memory_equal(fx->d.hdr, f, VSR_HEADER_SIZE); /* for the caller's log line */
  vsri_decoder_free(&fx->d);
  /* Split inside the body, and through want / wrote. */
  vsri_decoder_init(&fx->d, fx->pool, MAX_SIZE, VSRI_DECODE_VERIFY_BODY);
  assert_int_equal(feed_chunk(&fx->d, f, len - 1, &k), 0);
  assert_int_equal(feed_chunk(&fx->d, f + len - 1, 1, &k), VSR_EFRAME_BODY_CHECKSUM);
  vsri_decoder_init(&fx->d, fx->pool, MAX_SIZE, VSRI_DECODE_VERIFY_BODY);
  assert_int_equal(feed_chunk(&fx->d, f, 300, &k), 0);
  uint8_t *dst;
  size_t want = vsri_decoder_want(&fx->d, &dst);
  memcpy(dst, f + 300, want);
  struct vsr_msg *m = NULL;
  assert_int_equal(vsri_decoder_wrote(&fx->d, want, &m), VSR_EFRAME_BODY_CHECKSUM);
  assert_null(m);
  /* Without the flag the frame is delivered as is. */
  vsri_decoder_init(&fx->d, fx->pool, MAX_SIZE, 0);
  assert_int_equal(feed_chunk(&fx->d, f, len, &k), 0);
  assert_int_equal(k.n, 1);
  assert_memory_equal(k.msgs[0]->data, f, len);
  sink_release(&k);
}

static void test_eof_reasons(void **state) {
  struct fixture *fx = *state;
  struct sink k = {0};
  make_stream();
  assert_int_equal(vsri_decoder_eof_reason(&fx->d), VSR_ECLOSED);
  assert_int_equal(feed_chunk(&fx->d, S, S_off[2], &k), 0);
  assert_int_equal(vsri_decoder_eof_reason(&fx->d), VSR_ECLOSED);
  assert_int_equal(feed_chunk(&fx->d, S + S_off[2], 1, &k), 0);
  assert_int_equal(vsri_decoder_eof_reason(&fx->d), VSR_EEOF_HEADER);
  assert_int_equal(feed_chunk(&fx->d, S + S_off[2] + 1, 254, &k), 0);
  assert_int_equal(vsri_decoder_eof_reason(&fx->d), VSR_EEOF_HEADER);
  assert_int_equal(feed_chunk(&fx->d, S + S_off[2] + 255, 1, &k), 0);
  assert_int_equal(vsri_decoder_eof_reason(&fx->d), VSR_EEOF_BODY);
  assert_int_equal(feed_chunk(&fx->d, S + S_off[2] + 256, 299, &k), 0);
  assert_int_equal(vsri_decoder_eof_reason(&fx->d), VSR_EEOF_BODY);
  assert_int_equal(feed_chunk(&fx->d, S + S_off[3] - 1, 1, &k), 0);
  assert_int_equal(vsri_decoder_eof_reason(&fx->d), VSR_ECLOSED);
  assert_int_equal(k.n, 3);
  sink_release(&k);
  /* Mid-body then free: the partial frame goes back to the pool (teardown checks live). */
  assert_int_equal(feed_chunk(&fx->d, S, 300, &k), 0);
  assert_int_equal(vsri_decoder_eof_reason(&fx->d), VSR_EEOF_BODY);
}

/* A pool with room for one 4 KiB buffer: a frame that needs another is refused with
 * VSR_EMEMORY_MAX, and the stream stays poisoned (the transport closes the connection). */
static void test_pool_exhausted_poisons(void **state) {
  (void)state;
  struct vsr_pool_options o;
  struct vsr_pool *pool = empty_pool(&o, 4096);
  make_stream();
  struct vsr_msg *hold = vsr_pool_get(pool, 256);
  assert_non_null(hold);
  for (int variant = 0; variant < 2; variant++) {
    struct vsri_decoder d;
    vsri_decoder_init(&d, pool, MAX_SIZE, 0);
    size_t used = 0;
    struct vsr_msg *m = NULL;
    const uint8_t *p = S;
    size_t n = S_off[1];
    if (variant == 1) { /* header gathered across two feeds */
      assert_int_equal(vsri_decoder_feed(&d, p, 100, &used, &m), 0);
      p += used;
      n -= used;
    }
    assert_int_equal(vsri_decoder_feed(&d, p, n, &used, &m), VSR_EMEMORY_MAX);
    assert_null(m);
    assert_int_equal(vsri_decoder_feed(&d, p, n, &used, &m), VSR_EMEMORY_MAX); /* sticky */
    assert_int_equal(used, 0);
    char what[160];
    vsri_decoder_describe(&d, VSR_EMEMORY_MAX, what, sizeof what);
    assert_non_null(strstr(what, "memory_max 4096 bytes"));
    vsri_decoder_free(&d);
  }
  vsr_msg_unref(hold);
  struct vsr_pool_stats st;
  vsr_pool_stats(pool, &st);
  assert_int_equal(st.live, 0);
  assert_int_equal(st.failures, 2);
  vsr_pool_del(pool);
}

/* (d) Size classes: a 65,792-byte frame takes an 80 KiB buffer, not 1 MiB; every capacity is a
 * multiple of 4 KiB and wastes at most a quarter of itself; the free lists are reused. */
static void test_size_classes(void **state) {
  (void)state;
  struct vsr_pool_options o;
  struct vsr_pool *pool = empty_pool(&o, 0);
  struct vsr_msg *m = vsr_pool_get(pool, 65792);
  assert_non_null(m);
  assert_true(m->capacity < (1u << 20));
  assert_int_equal(m->capacity, 80u << 10);
  vsr_msg_unref(m);
  m = vsr_pool_get(pool, 65792); /* steady state: the free list, no heap */
  struct vsr_pool_stats st;
  vsr_pool_stats(pool, &st);
  assert_int_equal(st.reuses, 1);
  assert_int_equal(st.heap_allocs, 1);
  assert_int_equal(st.bytes_live, 80u << 10);
  vsr_msg_unref(m);
  static const uint32_t sizes[] = {256, 4096, 4097, 20000, 65536, 65537, (1u << 20),
                                   (1u << 20) + 1, (2u << 20) + 256, (64u << 20)};
  static const uint32_t caps[] = {4096, 4096, 8192, 20480, 65536, 81920, (1u << 20),
                                  (1280u << 10), (2560u << 10), (64u << 20)};
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    m = vsr_pool_get(pool, sizes[i]);
    assert_non_null(m);
    assert_int_equal(m->capacity, caps[i]);
    vsr_msg_unref(m);
  }
  for (uint32_t size = 256; size < (64u << 20); size = size * 9 / 8 + 1) {
    m = vsr_pool_get(pool, size);
    assert_non_null(m);
    assert_true(m->capacity >= size && m->capacity % 4096 == 0);
    assert_true(size <= 16384 || (uint64_t)m->capacity * 4 <= (uint64_t)size * 5 + 4 * 4096);
    vsr_msg_unref(m);
  }
  vsr_pool_stats(pool, &st);
  assert_true(st.bytes_cached <= o.cache_bytes_max);
  assert_int_equal(st.bytes, st.bytes_cached);
  vsr_pool_del(pool);
}

/* A header claiming 64 MiB reserves nothing; its body's buffer stays within a small multiple
 * of what arrived; the plane budget sees it and gets it back at the end. */
static void test_claim_reserves_as_bytes_arrive(void **state) {
  (void)state;
  struct vsr_pool_options o;
  struct vsr_pool *pool = empty_pool(&o, 0);
  struct vsri_mem_budget b = {.name = "client plane", .max = 256u << 20};
  struct vsri_decoder d;
  vsri_decoder_init(&d, pool, 64u << 20, 0);
  vsri_decoder_set_budget(&d, &b, 0, 0);
  uint8_t *f = calloc(1, 1u << 20);
  assert_non_null(f);
  make_request(f, 0, 1);
  vsr_header_init(f, VSR_CMD_REQUEST, 64u << 20); /* the claim */
  make_request(f, (1u << 20) - VSR_HEADER_SIZE, 1); /* first MiB of a body, then resized */
  vsr_put_u32(f + 48, 64u << 20);
  vsr_frame_seal(f);
  size_t used = 0;
  struct vsr_msg *m = NULL;
  assert_int_equal(vsri_decoder_feed(&d, f, VSR_HEADER_SIZE, &used, &m), 0);
  struct vsr_pool_stats st;
  vsr_pool_stats(pool, &st);
  assert_int_equal(st.gets, 0); /* header only: nothing reserved */
  assert_int_equal(b.reserved, 0);
  assert_int_equal(vsri_decoder_eof_reason(&d), VSR_EEOF_BODY);
  uint32_t off = VSR_HEADER_SIZE;
  while (off + 4096 <= (1u << 20)) {
    assert_int_equal(vsri_decoder_feed(&d, f + off, 4096, &used, &m), 0);
    off += 4096;
    assert_true(b.reserved <= 5ull * off + (128u << 10)); /* ~4x what arrived, + class */
    assert_int_equal(b.filled, off);
  }
  assert_true(b.peak <= (5u << 20) + (128u << 10));
  vsr_pool_stats(pool, &st);
  assert_int_equal(st.bytes_live, b.reserved);
  vsri_decoder_free(&d);
  assert_int_equal(b.reserved, 0);
  assert_int_equal(b.filled, 0);
  free(f);
  vsr_pool_del(pool);
}

/* The limits: a frame larger than the connection budget, the plane budget or the node cap is
 * refused at its header; a growth that would cross the plane budget is refused as it grows;
 * the protected share of the other plane is kept; before the replica handshake only 256-byte
 * frames pass. Each with its own code and a log description naming the limit. */
static void test_memory_limits(void **state) {
  (void)state;
  struct vsr_pool_options o;
  struct vsr_pool *pool = empty_pool(&o, 16u << 20);
  struct vsri_mem_budget replica = {.name = "replica plane", .max = 8u << 20,
                                    .reserve_only = true};
  struct vsri_mem_budget client = {.name = "client plane", .max = 8u << 20, .protect = &replica};
  uint8_t *f = calloc(1, 4u << 20);
  assert_non_null(f);
  char what[200];
  struct {
    uint32_t size, conn_max, max;
    bool preauth;
    int want;
    const char *says;
  } cases[] = {
      {32u << 20, 0, 64u << 20, false, VSR_EMEMORY_MAX, "memory_max 16.0 MiB"},
      {3u << 20, 2u << 20, 64u << 20, false, VSR_EMEMORY_BUDGET, "connection budget 2.0 MiB"},
      {9u << 20, 0, 64u << 20, false, VSR_EMEMORY_BUDGET, "client plane budget 8.0 MiB"},
      {64u << 20, 0, 256, true, VSR_EFRAME_PREAUTH, "max 256 before the replica handshake"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    struct vsri_decoder d;
    vsri_decoder_init(&d, pool, cases[i].max, cases[i].preauth ? VSRI_DECODE_PREAUTH : 0);
    vsri_decoder_set_budget(&d, &client, 0, cases[i].conn_max);
    make_request(f, 1000, 1);
    vsr_put_u32(f + 48, cases[i].size);
    vsr_frame_seal(f);
    size_t used = 0;
    struct vsr_msg *m = NULL;
    assert_int_equal(vsri_decoder_feed(&d, f, VSR_HEADER_SIZE + 1000, &used, &m),
                     cases[i].want);
    assert_int_equal(used, VSR_HEADER_SIZE);
    assert_int_equal(client.reserved, 0);
    vsri_decoder_describe(&d, cases[i].want, what, sizeof what);
    assert_non_null(strstr(what, cases[i].says));
    vsri_decoder_free(&d);
  }
  /* Header-only frames pass before the handshake. */
  struct vsri_decoder d, e;
  vsri_decoder_init(&d, pool, 256, VSRI_DECODE_PREAUTH);
  make_commit(f, 1);
  size_t used = 0;
  struct vsr_msg *m = NULL;
  assert_int_equal(vsri_decoder_feed(&d, f, VSR_HEADER_SIZE, &used, &m), 1);
  vsr_msg_unref(m);
  vsri_decoder_free(&d);

  /* Growth: two 6 MiB frames in flight cannot both grow within the 8 MiB budget. */
  vsri_decoder_init(&d, pool, 64u << 20, 0);
  vsri_decoder_set_budget(&d, &client, 0, 0);
  vsri_decoder_init(&e, pool, 64u << 20, 0);
  vsri_decoder_set_budget(&e, &client, 0, 0);
  uint32_t big = 6u << 20;
  make_request(f, (4u << 20) - VSR_HEADER_SIZE, 2);
  vsr_put_u32(f + 48, big);
  vsr_frame_seal(f);
  /* d takes 2 MiB of a 6 MiB frame: its buffer is ~4 MiB (x4 of 1 MiB), a 5 MiB class. */
  for (uint32_t off = 0; off < (2u << 20); off += 65536) {
    assert_int_equal(vsri_decoder_feed(&d, f + off, 65536, &used, &m), 0);
  }
  assert_true(d.msg->size >= (4u << 20) && d.msg->size < big);
  assert_int_equal(client.reserved, d.msg->capacity);
  /* e's growth past 1 MiB would cross 8 MiB: refused, e's buffer goes back. */
  int rc = 0;
  for (uint32_t off = 0; off < (4u << 20) && rc == 0; off += 65536) {
    rc = vsri_decoder_feed(&e, f + off, 65536, &used, &m);
  }
  assert_int_equal(rc, VSR_EMEMORY_BUDGET);
  vsri_decoder_describe(&e, rc, what, sizeof what);
  assert_non_null(strstr(what, "client plane budget 8.0 MiB"));
  assert_int_equal(client.reserved, d.msg->capacity);
  vsri_decoder_free(&e);

  /* The replica plane's 8 MiB share: with 5 MiB held in the pool by the client plane, the
   * client plane may not go past 16 - 8 MiB in all, even with its own budget raised. */
  client.max = 16u << 20;
  vsri_decoder_init(&e, pool, 64u << 20, 0);
  vsri_decoder_set_budget(&e, &client, 0, 0);
  rc = 0;
  for (uint32_t off = 0; off < (4u << 20) && rc == 0; off += 65536) {
    rc = vsri_decoder_feed(&e, f + off, 65536, &used, &m);
  }
  assert_int_equal(rc, VSR_EMEMORY_MAX);
  vsri_decoder_describe(&e, rc, what, sizeof what);
  assert_non_null(strstr(what, "replica plane's reserve"));
  vsri_decoder_free(&e);
  /* ...while the replica plane itself still gets its frame. */
  vsri_decoder_init(&e, pool, 64u << 20, 0);
  vsri_decoder_set_budget(&e, &replica, 64u << 20, 0);
  make_request(f, (3u << 20) - VSR_HEADER_SIZE, 3);
  assert_int_equal(vsri_decoder_feed(&e, f, 3u << 20, &used, &m), 1);
  assert_int_equal(m->size, 3u << 20);
  assert_int_equal(replica.reserved, 0);
  vsr_msg_unref(m);
  vsri_decoder_free(&e);
  vsri_decoder_free(&d);
  assert_int_equal(client.reserved, 0);
  free(f);
  vsr_pool_del(pool);
}

static void note_evicted(void *ctx) { (*(int *)ctx)++; }

/* A full plane budget evicts the largest frame in flight when it holds more than the grower
 * would; the grower completes, the victim's stream is poisoned and its buffer uncharged. */
static void test_budget_evicts_largest(void **state) {
  (void)state;
  struct vsr_pool_options o;
  struct vsr_pool *pool = empty_pool(&o, 0);
  struct vsri_mem_budget b = {.name = "client plane", .max = 6u << 20};
  struct vsri_decoder hog, small;
  int evicted = 0;
  vsri_decoder_init(&hog, pool, 64u << 20, 0);
  vsri_decoder_set_budget(&hog, &b, 0, 0);
  vsri_decoder_set_evict(&hog, note_evicted, &evicted);
  vsri_decoder_init(&small, pool, 64u << 20, 0);
  vsri_decoder_set_budget(&small, &b, 0, 0);
  vsri_decoder_set_evict(&small, note_evicted, &evicted);
  uint8_t *f = calloc(1, 2u << 20);
  assert_non_null(f);
  make_request(f, (2u << 20) - VSR_HEADER_SIZE, 4);
  vsr_put_u32(f + 48, 6u << 20); /* the hog claims 6 MiB and sends 2 */
  size_t used = 0;
  struct vsr_msg *m = NULL;
  for (uint32_t off = 0; off < (2u << 20); off += 65536) {
    assert_int_equal(vsri_decoder_feed(&hog, f + off, 65536, &used, &m), 0);
  }
  uint32_t hog_cap = hog.msg->capacity;
  assert_int_equal(b.reserved, hog_cap);
  make_request(f, (2u << 20) - VSR_HEADER_SIZE, 5); /* a whole 2 MiB frame */
  int rc = 0;
  for (uint32_t off = 0; off < (2u << 20) && rc == 0; off += 65536) {
    rc = vsri_decoder_feed(&small, f + off, 65536, &used, &m);
  }
  assert_int_equal(rc, 1);
  assert_int_equal(m->size, 2u << 20);
  assert_memory_equal(m->data, f, 2u << 20);
  vsr_msg_unref(m);
  assert_int_equal(evicted, 1);
  assert_int_equal(b.evictions, 1);
  assert_int_equal(b.reserved, 0);
  assert_null(b.head);
  assert_true(b.peak <= b.max);
  assert_int_equal(vsri_decoder_feed(&hog, f, 100, &used, &m), VSR_EMEMORY_BUDGET);
  char what[200];
  vsri_decoder_describe(&hog, VSR_EMEMORY_BUDGET, what, sizeof what);
  assert_non_null(strstr(what, "evicted"));
  assert_non_null(hog.msg); /* still owned until the connection is gone */
  vsri_decoder_free(&hog);
  vsri_decoder_free(&small);
  struct vsr_pool_stats st;
  vsr_pool_stats(pool, &st);
  assert_int_equal(st.live, 0);
  free(f);
  vsr_pool_del(pool);
}

/* A header-only frame completes as soon as its header does, and a feed that ends exactly at a
 * frame boundary leaves the decoder idle. */
static void test_header_only_completion(void **state) {
  struct fixture *fx = *state;
  uint8_t f[VSR_HEADER_SIZE];
  make_commit(f, 1);
  size_t used = 0;
  struct vsr_msg *m = NULL;
  assert_int_equal(vsri_decoder_feed(&fx->d, f, 255, &used, &m), 0);
  assert_int_equal(used, 255);
  assert_int_equal(vsri_decoder_feed(&fx->d, f + 255, 1, &used, &m), 1);
  assert_int_equal(used, 1);
  assert_non_null(m);
  assert_int_equal(m->size, VSR_HEADER_SIZE);
  vsr_msg_unref(m);
  assert_int_equal(vsri_decoder_feed(&fx->d, f, 256, &used, &m), 1);
  assert_int_equal(used, 256);
  vsr_msg_unref(m);
  assert_true(vsri_decoder_idle(&fx->d));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_one_byte_at_a_time, setup, teardown),
      cmocka_unit_test_setup_teardown(test_every_split_point, setup, teardown),
      cmocka_unit_test_setup_teardown(test_random_splits, setup, teardown),
      cmocka_unit_test_setup_teardown(test_want_wrote_large, setup, teardown),
      cmocka_unit_test_setup_teardown(test_bad_size, setup, teardown),
      cmocka_unit_test_setup_teardown(test_bad_command, setup, teardown),
      cmocka_unit_test_setup_teardown(test_bad_checksums, setup, teardown),
      cmocka_unit_test_setup_teardown(test_typed_validation_error, setup, teardown),
      cmocka_unit_test_setup_teardown(test_body_checksum, setup, teardown),
      cmocka_unit_test_setup_teardown(test_eof_reasons, setup, teardown),
      cmocka_unit_test(test_pool_exhausted_poisons),
      cmocka_unit_test(test_size_classes),
      cmocka_unit_test(test_claim_reserves_as_bytes_arrive),
      cmocka_unit_test(test_memory_limits),
      cmocka_unit_test(test_budget_evicts_largest),
      cmocka_unit_test_setup_teardown(test_header_only_completion, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
