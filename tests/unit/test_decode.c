/* Streaming decoder: any split of the byte stream yields the same frames, large bodies are
 * written in place (want / wrote), each bad frame gives its exact error, EOF reasons, pool
 * exhaustion and retry, and no message is leaked. */
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

/* A 1 MiB body goes straight into the frame buffer: want gives its tail, wrote completes it. */
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
  assert_int_equal(want, body - 10);
  assert_ptr_equal(dst, fx->d.msg->data + VSR_HEADER_SIZE + 10);
  assert_int_equal(vsri_decoder_eof_reason(&fx->d), VSR_EEOF_BODY);

  struct vsr_msg *m = NULL;
  size_t first = want / 3;
  memcpy(dst, f + VSR_HEADER_SIZE + 10, first);
  assert_int_equal(vsri_decoder_wrote(&fx->d, first, &m), 0);
  assert_null(m);
  want = vsri_decoder_want(&fx->d, &dst);
  assert_int_equal(want, body - 10 - first);
  assert_int_equal(vsri_decoder_wrote(&fx->d, want + 1, &m), VSR_EINVAL); /* over the want */
  memcpy(dst, f + VSR_HEADER_SIZE + 10 + first, want);
  assert_int_equal(vsri_decoder_wrote(&fx->d, want, &m), 1);
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

/* A pool with room for one 4 KiB buffer: the decoder reports VSR_EPOOL, keeps the header, and
 * a feed of nothing after a release resumes with the same bytes. */
static void test_pool_exhausted_retry(void **state) {
  (void)state;
  struct vsr_pool_options o;
  vsr_pool_options_default(&o);
  memset(o.prealloc, 0, sizeof o.prealloc);
  o.bytes_max = 4096;
  struct vsr_pool *pool;
  assert_int_equal(vsr_pool_new(&pool, &o), 0);
  struct vsri_decoder d;
  vsri_decoder_init(&d, pool, MAX_SIZE, 0);
  make_stream();

  struct vsr_msg *hold = vsr_pool_get(pool, 256);
  assert_non_null(hold);
  for (int variant = 0; variant < 3; variant++) {
    size_t used = 0;
    struct vsr_msg *m = NULL;
    const uint8_t *p = S;
    size_t n = S_off[1];
    if (variant == 1) { /* header gathered across two feeds */
      assert_int_equal(vsri_decoder_feed(&d, p, 100, &used, &m), 0);
      p += used;
      n -= used;
    }
    int rc = vsri_decoder_feed(&d, p, variant == 2 ? 256 : n, &used, &m);
    assert_int_equal(rc, VSR_EPOOL);
    assert_int_equal(used, variant == 1 ? 156 : 256); /* the header is kept */
    assert_null(m);
    assert_int_equal(vsri_decoder_feed(&d, NULL, 0, &used, &m), VSR_EPOOL); /* still full */
    assert_int_equal(used, 0);
    p += 256 - (variant == 1 ? 100 : 0);
    n = S_off[1] - 256;
    vsr_msg_unref(hold);
    assert_int_equal(vsri_decoder_feed(&d, NULL, 0, &used, &m), 0); /* buffer taken */
    assert_non_null(d.msg);
    struct sink k = {0};
    assert_int_equal(feed_chunk(&d, p, n, &k), 0);
    assert_int_equal(k.n, 1);
    assert_memory_equal(k.msgs[0]->data, S, S_off[1]);
    hold = k.msgs[0]; /* keep the pool full for the next variant */
  }
  vsr_msg_unref(hold);
  vsri_decoder_free(&d);
  struct vsr_pool_stats st;
  vsr_pool_stats(pool, &st);
  assert_int_equal(st.live, 0);
  assert_int_equal(st.failures, 6);
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
      cmocka_unit_test(test_pool_exhausted_retry),
      cmocka_unit_test_setup_teardown(test_header_only_completion, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
