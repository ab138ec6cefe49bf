/* Unit tests for the intrusive doubly-linked list (src/util/list.h): empty list, both ends,
 * removal from the head, the middle and the tail, iteration that removes or frees the element
 * it stands on, an element on two lists, splicing, and a bounded random run against an array
 * model that checks both directions after every step. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "util/list.h"

struct item {
  int value;
  struct vsri_list_node link;  /* on list a */
  struct vsri_list_node link2; /* on list b (two-list tests) */
};

static struct item *item_of(struct vsri_list_node *n) {
  return vsri_container_of(n, struct item, link);
}

/* Asserts |l| holds exactly |want[0..n)| in that order, walking forwards and backwards and
 * checking every node's links. */
static void check_list(const struct vsri_list *l, const int *want, size_t n) {
  size_t i = 0;
  const struct vsri_list_node *prev = &l->head;
  for (const struct vsri_list_node *p = l->head.next; p != &l->head; p = p->next) {
    assert_true(i < n);
    assert_ptr_equal(p->prev, prev);
    assert_true(vsri_list_linked(p));
    assert_int_equal(vsri_container_of(p, const struct item, link)->value, want[i]);
    prev = p;
    i++;
  }
  assert_int_equal(i, n);
  assert_ptr_equal(l->head.prev, prev);
  for (const struct vsri_list_node *p = l->head.prev; p != &l->head; p = p->prev) {
    assert_true(i > 0);
    i--;
    assert_int_equal(vsri_container_of(p, const struct item, link)->value, want[i]);
  }
  assert_int_equal(i, 0);
  assert_int_equal(vsri_list_empty(l), n == 0);
}

static void fill(struct vsri_list *l, struct item *items, int n) {
  vsri_list_init(l);
  for (int i = 0; i < n; i++) {
    memset(&items[i], 0, sizeof items[i]);
    items[i].value = i;
    vsri_list_push_back(l, &items[i].link);
  }
}

static void test_empty(void **state) {
  (void)state;
  struct vsri_list l;
  vsri_list_init(&l);
  assert_true(vsri_list_empty(&l));
  assert_null(vsri_list_front(&l));
  assert_null(vsri_list_back(&l));
  assert_null(vsri_list_pop_front(&l));
  struct vsri_list_node *n, *tmp;
  int visits = 0;
  vsri_list_for_each_safe(n, tmp, &l) visits++;
  assert_int_equal(visits, 0);
  check_list(&l, NULL, 0);
}

static void test_zeroed_node_is_unlinked(void **state) {
  (void)state;
  struct item it = {0};
  assert_false(vsri_list_linked(&it.link));
  struct vsri_list l;
  vsri_list_init(&l);
  vsri_list_push_back(&l, &it.link);
  assert_true(vsri_list_linked(&it.link));
  vsri_list_remove(&it.link);
  assert_false(vsri_list_linked(&it.link));
  assert_true(vsri_list_empty(&l));
  /* Removed nodes can be linked again. */
  vsri_list_push_front(&l, &it.link);
  assert_ptr_equal(vsri_list_front(&l), &it.link);
  assert_ptr_equal(vsri_list_back(&l), &it.link);
}

static void test_push_back_front_order(void **state) {
  (void)state;
  struct vsri_list l;
  struct item it[4] = {{.value = 0}, {.value = 1}, {.value = 2}, {.value = 3}};
  vsri_list_init(&l);
  vsri_list_push_back(&l, &it[1].link);
  vsri_list_push_front(&l, &it[0].link);
  vsri_list_push_back(&l, &it[2].link);
  vsri_list_push_back(&l, &it[3].link);
  check_list(&l, (const int[]){0, 1, 2, 3}, 4);
  assert_ptr_equal(item_of(vsri_list_front(&l)), &it[0]);
  assert_ptr_equal(item_of(vsri_list_back(&l)), &it[3]);
  assert_ptr_equal(vsri_list_next(&l, &it[2].link), &it[3].link);
  assert_null(vsri_list_next(&l, &it[3].link));
  for (int i = 0; i < 4; i++) {
    struct vsri_list_node *n = vsri_list_pop_front(&l);
    assert_non_null(n);
    assert_int_equal(item_of(n)->value, i);
    assert_false(vsri_list_linked(n));
  }
  assert_null(vsri_list_pop_front(&l));
  check_list(&l, NULL, 0);
}

static void test_remove_head_middle_tail(void **state) {
  (void)state;
  struct vsri_list l;
  struct item it[5];
  fill(&l, it, 5);
  vsri_list_remove(&it[2].link); /* middle */
  check_list(&l, (const int[]){0, 1, 3, 4}, 4);
  vsri_list_remove(&it[0].link); /* head */
  check_list(&l, (const int[]){1, 3, 4}, 3);
  vsri_list_remove(&it[4].link); /* tail */
  check_list(&l, (const int[]){1, 3}, 2);
  assert_false(vsri_list_linked(&it[0].link));
  assert_false(vsri_list_linked(&it[2].link));
  assert_false(vsri_list_linked(&it[4].link));
  vsri_list_remove(&it[3].link); /* tail of two */
  check_list(&l, (const int[]){1}, 1);
  vsri_list_remove(&it[1].link); /* the only one */
  check_list(&l, NULL, 0);
  /* A tail push after removals lands at the end. */
  vsri_list_push_back(&l, &it[4].link);
  vsri_list_push_back(&l, &it[2].link);
  check_list(&l, (const int[]){4, 2}, 2);
}

static void test_iterate_removing_every_other(void **state) {
  (void)state;
  struct vsri_list l;
  struct item it[9];
  fill(&l, it, 9);
  struct vsri_list_node *n, *tmp;
  int seen = 0;
  vsri_list_for_each_safe(n, tmp, &l) {
    assert_int_equal(item_of(n)->value, seen);
    if (seen % 2 == 0) vsri_list_remove(n);
    seen++;
  }
  assert_int_equal(seen, 9);
  check_list(&l, (const int[]){1, 3, 5, 7}, 4);
  vsri_list_for_each_safe(n, tmp, &l) vsri_list_remove(n);
  check_list(&l, NULL, 0);
}

/* The body frees the element it stands on (ASan flags any later read of it). */
static void test_iterate_freeing(void **state) {
  (void)state;
  struct vsri_list l;
  vsri_list_init(&l);
  for (int i = 0; i < 16; i++) {
    struct item *it = calloc(1, sizeof *it);
    assert_non_null(it);
    it->value = i;
    vsri_list_push_back(&l, &it->link);
  }
  struct vsri_list_node *n, *tmp;
  int seen = 0;
  vsri_list_for_each_safe(n, tmp, &l) {
    struct item *it = item_of(n);
    assert_int_equal(it->value, seen++);
    vsri_list_remove(n);
    free(it);
  }
  assert_int_equal(seen, 16);
  assert_true(vsri_list_empty(&l));
}

/* Removing the element and pushing it back to the end while iterating visits it again: the
 * walk follows the list as it is, which callers must know (the loop's deferred queue relies on
 * a budget for that reason). */
static void test_iterate_requeue_at_end(void **state) {
  (void)state;
  struct vsri_list l;
  struct item it[3];
  fill(&l, it, 3);
  struct vsri_list_node *n, *tmp;
  int visits = 0;
  vsri_list_for_each_safe(n, tmp, &l) {
    visits++;
    if (item_of(n)->value == 0 && visits == 1) {
      vsri_list_remove(n);
      vsri_list_push_back(&l, n);
    }
  }
  assert_int_equal(visits, 4);
  check_list(&l, (const int[]){1, 2, 0}, 3);
}

static void test_two_lists(void **state) {
  (void)state;
  struct vsri_list a, b;
  struct item it[4];
  fill(&a, it, 4);
  vsri_list_init(&b);
  vsri_list_push_back(&b, &it[3].link2);
  vsri_list_push_back(&b, &it[1].link2);
  vsri_list_remove(&it[1].link); /* leaves b alone */
  check_list(&a, (const int[]){0, 2, 3}, 3);
  assert_ptr_equal(vsri_container_of(vsri_list_front(&b), struct item, link2), &it[3]);
  assert_ptr_equal(vsri_container_of(vsri_list_back(&b), struct item, link2), &it[1]);
  vsri_list_remove(&it[3].link2);
  assert_true(vsri_list_linked(&it[3].link));
  assert_ptr_equal(vsri_container_of(vsri_list_pop_front(&b), struct item, link2), &it[1]);
  assert_true(vsri_list_empty(&b));
  check_list(&a, (const int[]){0, 2, 3}, 3);
}

static void test_splice(void **state) {
  (void)state;
  struct vsri_list a, b;
  struct item it[5];
  fill(&a, it, 3);
  vsri_list_init(&b);
  vsri_list_splice_back(&a, &b); /* empty source: no change */
  check_list(&a, (const int[]){0, 1, 2}, 3);
  for (int i = 3; i < 5; i++) {
    memset(&it[i], 0, sizeof it[i]);
    it[i].value = i;
    vsri_list_push_back(&b, &it[i].link);
  }
  vsri_list_splice_back(&a, &b);
  check_list(&a, (const int[]){0, 1, 2, 3, 4}, 5);
  check_list(&b, NULL, 0);
  vsri_list_splice_back(&b, &a); /* into an empty list */
  check_list(&b, (const int[]){0, 1, 2, 3, 4}, 5);
  check_list(&a, NULL, 0);
}

static uint64_t lcg_state = 0x2545f4914f6cdd1du;
static uint32_t lcg_next(uint32_t n) {
  lcg_state = lcg_state * 6364136223846793005u + 1442695040888963407u;
  return (uint32_t)(lcg_state >> 33) % n;
}

/* 20,000 random pushes (either end), pops and removals anywhere against an array model. */
static void test_random_against_model(void **state) {
  (void)state;
  enum { N = 64, STEPS = 20000 };
  static struct item items[N];
  int model[N];
  size_t len = 0;
  struct vsri_list l;
  vsri_list_init(&l);
  memset(items, 0, sizeof items);
  for (int i = 0; i < N; i++) items[i].value = i;
  for (int step = 0; step < STEPS; step++) {
    uint32_t op = lcg_next(4);
    if (op <= 1 && len < N) {
      int v;
      do v = (int)lcg_next(N);
      while (vsri_list_linked(&items[v].link));
      if (op == 0) {
        vsri_list_push_back(&l, &items[v].link);
        model[len++] = v;
      } else {
        vsri_list_push_front(&l, &items[v].link);
        memmove(model + 1, model, len * sizeof *model);
        model[0] = v;
        len++;
      }
    } else if (op == 2 && len > 0) {
      struct vsri_list_node *n = vsri_list_pop_front(&l);
      assert_int_equal(item_of(n)->value, model[0]);
      memmove(model, model + 1, --len * sizeof *model);
    } else if (len > 0) {
      size_t at = lcg_next((uint32_t)len);
      vsri_list_remove(&items[model[at]].link);
      memmove(model + at, model + at + 1, (--len - at) * sizeof *model);
    }
    check_list(&l, model, len);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_empty),
      cmocka_unit_test(test_zeroed_node_is_unlinked),
      cmocka_unit_test(test_push_back_front_order),
      cmocka_unit_test(test_remove_head_middle_tail),
      cmocka_unit_test(test_iterate_removing_every_other),
      cmocka_unit_test(test_iterate_freeing),
      cmocka_unit_test(test_iterate_requeue_at_end),
      cmocka_unit_test(test_two_lists),
      cmocka_unit_test(test_splice),
      cmocka_unit_test(test_random_against_model),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
