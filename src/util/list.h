/* Intrusive doubly-linked list (the Linux list_head / TigerBeetle DoublyLinkedType shape): the
 * caller embeds a struct vsri_list_node in each element and owns all memory; nothing here
 * allocates. Insert and remove are O(1), so an element can leave from anywhere in the list.
 *
 * The list is circular around a sentinel head. A node that is on no list has next == NULL, so
 * a zero-initialised (calloc'ed or `= {0}`) element reads as "not linked" with no init call;
 * vsri_list_remove() restores that state. A head must be vsri_list_init()ed before use.
 * An element may sit on several lists at once through several nodes. */
#ifndef VSRI_LIST_H
#define VSRI_LIST_H

#include <assert.h>
#include <stdbool.h>
#include <stddef.h>

struct vsri_list_node {
  struct vsri_list_node *next; /* NULL exactly when the node is on no list */
  struct vsri_list_node *prev;
};

/* The list itself: a sentinel node; empty when it points at itself. */
struct vsri_list {
  struct vsri_list_node head;
};

/* The element of type |type| whose member |member| is the node |ptr|. */
#define vsri_container_of(ptr, type, member) \
  ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

/* The element holding |node| (a struct vsri_list_node *), or NULL when |node| is NULL.
 * |node| is evaluated twice: pass a variable. */
#define vsri_list_entry_or_null(node, type, member) \
  ((node) ? vsri_container_of((node), type, member) : (type *)NULL)

static inline void vsri_list_init(struct vsri_list *l) {
  l->head.next = &l->head;
  l->head.prev = &l->head;
}

static inline bool vsri_list_empty(const struct vsri_list *l) {
  assert(l->head.next != NULL); /* initialised */
  return l->head.next == &l->head;
}

/* True while |n| is on some list. */
static inline bool vsri_list_linked(const struct vsri_list_node *n) { return n->next != NULL; }

/* Links |n| between |prev| and |next| (adjacent nodes of one list). */
static inline void vsri_list_link_(struct vsri_list_node *n, struct vsri_list_node *prev,
                                   struct vsri_list_node *next) {
  assert(n->next == NULL); /* a node is on one list at a time */
  assert(prev->next == next && next->prev == prev);
  n->prev = prev;
  n->next = next;
  prev->next = n;
  next->prev = n;
}

/* Appends |n| (not linked) as the newest element. */
static inline void vsri_list_push_back(struct vsri_list *l, struct vsri_list_node *n) {
  vsri_list_link_(n, l->head.prev, &l->head);
}

/* Prepends |n| (not linked) as the oldest element. */
static inline void vsri_list_push_front(struct vsri_list *l, struct vsri_list_node *n) {
  vsri_list_link_(n, &l->head, l->head.next);
}

/* Unlinks |n| from whatever list holds it; it reads as not linked afterwards. |n| must be
 * linked (callers that are not sure test vsri_list_linked first). */
static inline void vsri_list_remove(struct vsri_list_node *n) {
  assert(n->next != NULL && n->prev != NULL);
  assert(n->next->prev == n && n->prev->next == n);
  n->prev->next = n->next;
  n->next->prev = n->prev;
  n->next = NULL;
  n->prev = NULL;
}

/* The oldest node, or NULL when empty. */
static inline struct vsri_list_node *vsri_list_front(const struct vsri_list *l) {
  return vsri_list_empty(l) ? NULL : l->head.next;
}

/* The newest node, or NULL when empty. */
static inline struct vsri_list_node *vsri_list_back(const struct vsri_list *l) {
  return vsri_list_empty(l) ? NULL : l->head.prev;
}

/* Unlinks and returns the oldest node, or NULL when empty. */
static inline struct vsri_list_node *vsri_list_pop_front(struct vsri_list *l) {
  struct vsri_list_node *n = vsri_list_front(l);
  if (n) vsri_list_remove(n);
  return n;
}

/* The node after |n| in |l|, or NULL when |n| is the newest. */
static inline struct vsri_list_node *vsri_list_next(const struct vsri_list *l,
                                                    const struct vsri_list_node *n) {
  return n->next == &l->head ? NULL : n->next;
}

/* Moves every node of |from| to the end of |to| in order, leaving |from| empty. O(1). */
static inline void vsri_list_splice_back(struct vsri_list *to, struct vsri_list *from) {
  if (vsri_list_empty(from)) return;
  struct vsri_list_node *first = from->head.next, *last = from->head.prev;
  first->prev = to->head.prev;
  to->head.prev->next = first;
  last->next = &to->head;
  to->head.prev = last;
  vsri_list_init(from);
}

/* Iterates |n| (a struct vsri_list_node *) over |l| oldest first. The body may remove |n| (and
 * only |n|) from the list, or free its element: the next node is read before the body runs.
 * |tmp| is a second struct vsri_list_node * the macro uses for that. */
#define vsri_list_for_each_safe(n, tmp, l) \
  for ((n) = (l)->head.next, (tmp) = (n)->next; (n) != &(l)->head; (n) = (tmp), (tmp) = (n)->next)

#endif
