/* Send queue (struct vsri_sendq, transport/transport.h): the bounded FIFO of frames the bus
 * fills and a transport drains, over util/ring.h. Push until full, peek in FIFO order, pop (the
 * popped frame's size returned for the transport's on_sent / on_dropped report, partial write
 * offset reset, the queue's reference dropped, pinned buffer bytes), wrap-around of head over
 * many cycles. The queue counts nothing itself: its owner does, from the upcalls. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "transport/transport.h"
#include "vsrbus/vsrbus.h"

#define T_CAP 8u

struct t_q {
  struct vsri_sendq q;
  struct vsr_msg *slots[T_CAP];
  struct vsr_pool *pool;
};

static int t_setup(void **state) {
  struct t_q *t = calloc(1, sizeof *t);
  if (!t) return -1;
  struct vsr_pool_options po;
  vsr_pool_options_default(&po);
  for (int i = 0; i < VSR_POOL_CLASSES - 1; i++) po.prealloc[i] = 0;
  if (vsr_pool_new(&t->pool, &po) != 0) return -1;
  vsri_sendq_init(&t->q, t->slots, T_CAP);
  *state = t;
  return 0;
}

static int t_teardown(void **state) {
  struct t_q *t = *state;
  while (vsri_sendq_len(&t->q) > 0) vsri_sendq_pop(&t->q);
  struct vsr_pool_stats st;
  vsr_pool_stats(t->pool, &st);
  vsr_pool_del(t->pool);
  free(t);
  return st.live == 0 ? 0 : -1; /* every frame popped was released */
}

static uint64_t t_live(struct t_q *t) {
  struct vsr_pool_stats st;
  vsr_pool_stats(t->pool, &st);
  return st.live;
}

/* A message of |size| bytes tagged with |tag| in its first bytes. */
static struct vsr_msg *t_msg(struct t_q *t, uint32_t size, uint32_t tag) {
  struct vsr_msg *m = vsr_pool_get(t->pool, size);
  assert_non_null(m);
  memcpy(m->data, &tag, sizeof tag);
  return m;
}

static uint32_t t_tag(const struct vsr_msg *m) {
  uint32_t tag;
  memcpy(&tag, m->data, sizeof tag);
  return tag;
}

static void push_until_full(void **state) {
  struct t_q *t = *state;
  for (uint32_t i = 0; i < T_CAP; i++) {
    assert_true(vsri_sendq_push(&t->q, t_msg(t, 256 + i, i)));
    assert_int_equal(vsri_sendq_len(&t->q), i + 1);
  }
  struct vsr_msg *extra = t_msg(t, 256, 99);
  assert_false(vsri_sendq_push(&t->q, extra)); /* full: refused, the caller keeps it */
  assert_int_equal(vsri_sendq_len(&t->q), T_CAP);
  for (uint32_t i = 0; i < T_CAP; i++) assert_int_equal(t_tag(vsri_sendq_peek(&t->q, i)), i);
  vsr_msg_unref(extra);
  /* One pop makes room for exactly one more. */
  vsri_sendq_pop(&t->q);
  assert_true(vsri_sendq_push(&t->q, t_msg(t, 256, 100)));
  assert_false(vsri_sendq_push(&t->q, extra = t_msg(t, 256, 101)));
  vsr_msg_unref(extra);
  assert_int_equal(t_tag(vsri_sendq_peek(&t->q, 0)), 1);
  assert_int_equal(t_tag(vsri_sendq_peek(&t->q, T_CAP - 1)), 100);
}

static void pop_counts_and_releases(void **state) {
  struct t_q *t = *state;
  assert_int_equal(t_live(t), 0);
  assert_true(vsri_sendq_push(&t->q, t_msg(t, 300, 1)));
  assert_true(vsri_sendq_push(&t->q, t_msg(t, 1000, 2)));
  struct vsr_msg *kept = t_msg(t, 4000, 3);
  assert_true(vsri_sendq_push(&t->q, vsr_msg_ref(kept))); /* the queue holds its own ref */
  assert_int_equal(t_live(t), 3);
  uint64_t c0 = vsri_sendq_peek(&t->q, 0)->capacity, c1 = vsri_sendq_peek(&t->q, 1)->capacity;
  assert_int_equal(t->q.bytes, c0 + c1 + kept->capacity); /* buffer bytes pinned */
  t->q.off = 123; /* a partial write of the oldest frame */
  assert_int_equal(vsri_sendq_pop(&t->q), 300); /* its size: what the transport reports */
  assert_int_equal(t->q.off, 0);
  assert_int_equal(vsri_sendq_len(&t->q), 2);
  assert_int_equal(t_live(t), 2); /* the queue's only reference: released */
  assert_int_equal(t->q.bytes, c1 + kept->capacity);
  assert_int_equal(t_tag(vsri_sendq_peek(&t->q, 0)), 2);
  assert_int_equal(vsri_sendq_pop(&t->q), 1000);
  assert_int_equal(vsri_sendq_pop(&t->q), 4000);
  assert_int_equal(vsri_sendq_len(&t->q), 0);
  assert_int_equal(t->q.bytes, 0);
  assert_int_equal(t_live(t), 1); /* |kept| still has the caller's reference */
  assert_int_equal(t_tag(kept), 3);
  vsr_msg_unref(kept);
  assert_int_equal(t_live(t), 0);
}

/* Many cycles of pushes and pops at varying depths: head wraps around the ring again and
 * again, FIFO order and the counters hold throughout. */
static void wraps_in_order(void **state) {
  struct t_q *t = *state;
  uint32_t next_in = 0, next_out = 0;
  uint64_t bytes = 0, popped_bytes = 0, pinned = 0;
  bool wrapped = false;
  for (uint32_t round = 0; round < 50; round++) {
    uint32_t depth = 1 + round % T_CAP; /* 1..cap */
    while (vsri_sendq_len(&t->q) < depth) {
      uint32_t size = 256 + next_in % 7;
      struct vsr_msg *m = t_msg(t, size, next_in);
      pinned += m->capacity;
      assert_true(vsri_sendq_push(&t->q, m));
      next_in++;
    }
    for (uint32_t i = 0; i < vsri_sendq_len(&t->q); i++) {
      assert_int_equal(t_tag(vsri_sendq_peek(&t->q, i)), next_out + i);
    }
    uint32_t pops = 1 + round % depth;
    for (uint32_t i = 0; i < pops; i++) {
      uint32_t head = t->q.ring.head;
      struct vsr_msg *m = vsri_sendq_peek(&t->q, 0);
      assert_int_equal(t_tag(m), next_out);
      bytes += m->size;
      pinned -= m->capacity;
      popped_bytes += vsri_sendq_pop(&t->q);
      assert_int_equal(t->q.bytes, pinned);
      assert_true(t->q.ring.head < T_CAP);
      if (head == T_CAP - 1) {
        assert_int_equal(t->q.ring.head, 0);
        wrapped = true;
      }
      next_out++;
    }
  }
  assert_true(wrapped);
  assert_true(next_out > 3 * T_CAP);
  assert_int_equal(popped_bytes, bytes);
  assert_int_equal(t_live(t), next_in - next_out);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(push_until_full, t_setup, t_teardown),
      cmocka_unit_test_setup_teardown(pop_counts_and_releases, t_setup, t_teardown),
      cmocka_unit_test_setup_teardown(wraps_in_order, t_setup, t_teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
