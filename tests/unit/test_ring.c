/* Unit tests for the index ring (src/util/ring.h): empty and full, capacity 1, FIFO order across
 * many wrap-arounds, positional reads after a wrap, growing a wrapped ring, a ring of structs,
 * the zeroed (never initialised) ring, and a bounded random run against a model queue. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "util/ring.h"

static void test_cap_valid(void **state) {
  (void)state;
  assert_false(vsri_ring_cap_valid(0));
  assert_true(vsri_ring_cap_valid(1));
  assert_true(vsri_ring_cap_valid(2));
  assert_false(vsri_ring_cap_valid(3));
  assert_false(vsri_ring_cap_valid(6));
  assert_true(vsri_ring_cap_valid(4096));
  assert_true(vsri_ring_cap_valid(UINT32_C(1) << 31));
  assert_false(vsri_ring_cap_valid(UINT32_MAX));
}

static void test_empty_full(void **state) {
  (void)state;
  struct vsri_ring r;
  int slots[8];
  vsri_ring_init(&r, 8);
  assert_true(vsri_ring_empty(&r));
  assert_false(vsri_ring_full(&r));
  assert_int_equal(vsri_ring_len(&r), 0);
  assert_int_equal(vsri_ring_cap(&r), 8);
  for (int i = 0; i < 8; i++) {
    assert_false(vsri_ring_full(&r));
    slots[vsri_ring_push(&r)] = 100 + i;
    assert_false(vsri_ring_empty(&r));
    assert_int_equal(slots[vsri_ring_peek_back(&r)], 100 + i);
  }
  assert_true(vsri_ring_full(&r));
  assert_int_equal(vsri_ring_len(&r), 8);
  assert_int_equal(slots[vsri_ring_peek(&r)], 100);
  for (int i = 0; i < 8; i++) {
    assert_int_equal(slots[vsri_ring_at(&r, (uint32_t)i)], 100 + i);
  }
  for (int i = 0; i < 8; i++) {
    assert_int_equal(slots[vsri_ring_pop(&r)], 100 + i);
    assert_false(vsri_ring_full(&r));
  }
  assert_true(vsri_ring_empty(&r));
}

static void test_capacity_one(void **state) {
  (void)state;
  struct vsri_ring r;
  const char *slot[1];
  vsri_ring_init(&r, 1);
  assert_true(vsri_ring_empty(&r));
  for (int i = 0; i < 1000; i++) {
    assert_false(vsri_ring_full(&r));
    uint32_t s = vsri_ring_push(&r);
    assert_int_equal(s, 0);
    slot[s] = (i & 1) ? "odd" : "even";
    assert_true(vsri_ring_full(&r));
    assert_false(vsri_ring_empty(&r));
    assert_int_equal(vsri_ring_peek(&r), 0);
    assert_string_equal(slot[vsri_ring_pop(&r)], (i & 1) ? "odd" : "even");
    assert_true(vsri_ring_empty(&r));
  }
}

/* Each slot index stays below the capacity and FIFO order holds over 1,000 wraps. */
static void test_wrap_many_times(void **state) {
  (void)state;
  enum { CAP = 8 };
  struct vsri_ring r;
  uint32_t slots[CAP];
  uint32_t pushed = 0, popped = 0;
  vsri_ring_init(&r, CAP);
  /* Keep 5 entries in flight so head and tail cross the end at different times. */
  while (pushed < 5) slots[vsri_ring_push(&r)] = pushed++;
  for (int round = 0; round < 1000 * CAP; round++) {
    uint32_t s = vsri_ring_push(&r);
    assert_true(s < CAP);
    assert_int_equal(s, pushed % CAP);
    slots[s] = pushed++;
    s = vsri_ring_pop(&r);
    assert_true(s < CAP);
    assert_int_equal(slots[s], popped++);
    assert_int_equal(vsri_ring_len(&r), 5);
  }
  /* Positional reads after the wraps still go oldest to newest. */
  for (uint32_t i = 0; i < 5; i++) assert_int_equal(slots[vsri_ring_at(&r, i)], popped + i);
  while (!vsri_ring_empty(&r)) assert_int_equal(slots[vsri_ring_pop(&r)], popped++);
  assert_int_equal(popped, pushed);
}

/* Filling to full while wrapped, then draining, keeps order (full is not mistaken for empty). */
static void test_full_while_wrapped(void **state) {
  (void)state;
  struct vsri_ring r;
  int slots[4];
  vsri_ring_init(&r, 4);
  for (int i = 0; i < 3; i++) slots[vsri_ring_push(&r)] = i;
  for (int i = 0; i < 3; i++) (void)vsri_ring_pop(&r);
  assert_true(vsri_ring_empty(&r));
  for (int i = 0; i < 4; i++) slots[vsri_ring_push(&r)] = 10 + i;
  assert_true(vsri_ring_full(&r));
  assert_int_equal(vsri_ring_peek(&r), 3);      /* the oldest sits at the end */
  assert_int_equal(vsri_ring_peek_back(&r), 2); /* the newest wrapped to slot 2 */
  for (int i = 0; i < 4; i++) assert_int_equal(slots[vsri_ring_pop(&r)], 10 + i);
  assert_true(vsri_ring_empty(&r));
}

/* The growth recipe of ring.h on a wrapped ring: order survives, the new room is usable. */
static void test_grow_wrapped(void **state) {
  (void)state;
  struct vsri_ring r;
  int *slots = malloc(4 * sizeof *slots);
  assert_non_null(slots);
  vsri_ring_init(&r, 4);
  for (int i = 0; i < 2; i++) slots[vsri_ring_push(&r)] = -1;
  for (int i = 0; i < 2; i++) (void)vsri_ring_pop(&r);
  for (int i = 0; i < 4; i++) slots[vsri_ring_push(&r)] = i; /* wrapped and full */
  int *bigger = malloc(16 * sizeof *bigger);
  assert_non_null(bigger);
  for (uint32_t i = 0; i < vsri_ring_len(&r); i++) bigger[i] = slots[vsri_ring_at(&r, i)];
  free(slots);
  slots = bigger;
  vsri_ring_rebase(&r, 16);
  assert_int_equal(vsri_ring_cap(&r), 16);
  assert_int_equal(vsri_ring_len(&r), 4);
  for (int i = 4; i < 16; i++) slots[vsri_ring_push(&r)] = i;
  assert_true(vsri_ring_full(&r));
  for (int i = 0; i < 16; i++) assert_int_equal(slots[vsri_ring_pop(&r)], i);
  free(slots);
}

/* A zeroed ring (no init) is full and empty, so "grow when full" code starts from it. */
static void test_zeroed_ring(void **state) {
  (void)state;
  struct vsri_ring r;
  memset(&r, 0, sizeof r);
  assert_true(vsri_ring_empty(&r));
  assert_true(vsri_ring_full(&r));
  vsri_ring_rebase(&r, 2);
  assert_false(vsri_ring_full(&r));
  void *slots[2];
  slots[vsri_ring_push(&r)] = &r;
  assert_ptr_equal(slots[vsri_ring_pop(&r)], &r);
}

struct rec {
  uint64_t seq;
  char tag[12];
};

static void test_ring_of_structs(void **state) {
  (void)state;
  struct vsri_ring r;
  struct rec recs[16];
  vsri_ring_init(&r, 16);
  uint64_t in = 0, out = 0;
  for (int round = 0; round < 100; round++) {
    while (!vsri_ring_full(&r)) {
      struct rec *e = &recs[vsri_ring_push(&r)];
      e->seq = in++;
      memcpy(e->tag, "frame", 6);
    }
    for (int i = 0; i < 11; i++) {
      const struct rec *e = &recs[vsri_ring_pop(&r)];
      assert_int_equal(e->seq, out++);
      assert_string_equal(e->tag, "frame");
    }
  }
  while (!vsri_ring_empty(&r)) assert_int_equal(recs[vsri_ring_pop(&r)].seq, out++);
  assert_int_equal(in, out);
}

static uint64_t lcg_state = 0x9e3779b97f4a7c15u;
static uint32_t lcg_next(uint32_t n) {
  lcg_state = lcg_state * 6364136223846793005u + 1442695040888963407u;
  return (uint32_t)(lcg_state >> 33) % n;
}

/* 10,000 random pushes and pops on each capacity 1, 2, 4 .. 32 against a plain array queue. */
static void test_random_against_model(void **state) {
  (void)state;
  for (uint32_t cap = 1; cap <= 32; cap <<= 1) {
    struct vsri_ring r;
    uint32_t slots[32], model[32];
    uint32_t mlen = 0, next = 0;
    vsri_ring_init(&r, cap);
    for (int step = 0; step < 10000; step++) {
      if (lcg_next(2) == 0) {
        if (vsri_ring_full(&r)) {
          assert_int_equal(mlen, cap);
          continue;
        }
        slots[vsri_ring_push(&r)] = next;
        model[mlen++] = next++;
      } else {
        if (vsri_ring_empty(&r)) {
          assert_int_equal(mlen, 0);
          continue;
        }
        assert_int_equal(slots[vsri_ring_pop(&r)], model[0]);
        memmove(model, model + 1, --mlen * sizeof *model);
      }
      assert_int_equal(vsri_ring_len(&r), mlen);
      for (uint32_t i = 0; i < mlen; i++) assert_int_equal(slots[vsri_ring_at(&r, i)], model[i]);
    }
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_cap_valid),
      cmocka_unit_test(test_empty_full),
      cmocka_unit_test(test_capacity_one),
      cmocka_unit_test(test_wrap_many_times),
      cmocka_unit_test(test_full_while_wrapped),
      cmocka_unit_test(test_grow_wrapped),
      cmocka_unit_test(test_zeroed_ring),
      cmocka_unit_test(test_ring_of_structs),
      cmocka_unit_test(test_random_against_model),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
