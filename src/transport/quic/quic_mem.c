/* QUIC transport: quic_mem.c.
 * ngtcp2's heap (the ngtcp2_mem every connection is created with). ngtcp2 takes a block or two
 * per packet it sends (the record of a packet in flight, the data vector of a STREAM frame that
 * gathers several frames) and gives them back when the packet is acknowledged. Served from
 * libc, that was about one malloc per packet. Here blocks come from per-thread free lists, one
 * per power-of-two size class from 64 B to 64 KiB, so steady traffic takes none from libc;
 * larger blocks go to libc directly. A list keeps at most QM_KEEP_BYTES (at least 4 blocks);
 * a thread's lists are freed when it exits. */
#include <pthread.h>

#include "transport/quic/quic_impl.h"

#define QM_MIN_SHIFT 6u  /* 64 B */
#define QM_MAX_SHIFT 16u /* 64 KiB */
#define QM_CLASSES (QM_MAX_SHIFT - QM_MIN_SHIFT + 1u)
#define QM_BIG 0xffu
#define QM_KEEP_BYTES (256u * 1024u)

/* In front of every block: its class, and 16 bytes so the block keeps malloc's alignment. */
struct qm_hdr {
  uint32_t cls;
  uint32_t unused[3];
};

struct qm_free {
  struct qm_free *next;
};

/* A thread's lists. The struct itself is on the heap and listed in |qm_all|, a plain global:
 * a leak checker that scans globals but not every thread's TLS block (LeakSanitizer, for one)
 * still reaches every cached block. */
struct qm_cache {
  struct qm_free *head[QM_CLASSES];
  uint32_t count[QM_CLASSES];
  struct qm_cache *next, *prev; /* in qm_all */
};

static _Thread_local struct qm_cache *qm_mine;
static struct qm_cache *qm_all;
static pthread_mutex_t qm_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_key_t qm_key;
static pthread_once_t qm_once = PTHREAD_ONCE_INIT;

/* Thread exit: the lists go back to libc; later frees on this thread go to libc directly. */
static void qm_drop(void *arg) {
  struct qm_cache *c = arg;
  qm_mine = NULL;
  pthread_mutex_lock(&qm_mu);
  if (c->prev) c->prev->next = c->next;
  else qm_all = c->next;
  if (c->next) c->next->prev = c->prev;
  pthread_mutex_unlock(&qm_mu);
  for (unsigned i = 0; i < QM_CLASSES; i++) {
    while (c->head[i]) {
      struct qm_free *f = c->head[i];
      c->head[i] = f->next;
      free((struct qm_hdr *)f - 1);
    }
  }
  free(c);
}

static void qm_key_init(void) {
  if (pthread_key_create(&qm_key, qm_drop) != 0) qm_key = (pthread_key_t)-1;
}

/* This thread's lists, freed when it exits (none if the key cannot be made: frees go to
 * libc). */
static void qm_register(void) {
  pthread_once(&qm_once, qm_key_init);
  if (qm_key == (pthread_key_t)-1) return;
  struct qm_cache *c = calloc(1, sizeof *c);
  if (!c) return;
  if (pthread_setspecific(qm_key, c) != 0) {
    free(c);
    return;
  }
  pthread_mutex_lock(&qm_mu);
  c->next = qm_all;
  if (qm_all) qm_all->prev = c;
  qm_all = c;
  pthread_mutex_unlock(&qm_mu);
  qm_mine = c;
}

static unsigned qm_class(size_t n) {
  unsigned s = QM_MIN_SHIFT;
  while (s <= QM_MAX_SHIFT && ((size_t)1 << s) < n) s++;
  return s <= QM_MAX_SHIFT ? s - QM_MIN_SHIFT : QM_BIG;
}

static size_t qm_size(unsigned cls) { return (size_t)1 << (cls + QM_MIN_SHIFT); }

static void *qm_malloc(size_t n, void *user) {
  (void)user;
  unsigned cls = qm_class(n ? n : 1);
  struct qm_cache *c = qm_mine;
  if (cls != QM_BIG && c && c->head[cls]) {
    struct qm_free *f = c->head[cls];
    c->head[cls] = f->next;
    c->count[cls]--;
    return f;
  }
  if (cls != QM_BIG && !c) qm_register();
  struct qm_hdr *h = malloc(sizeof *h + (cls == QM_BIG ? n : qm_size(cls)));
  if (!h) return NULL;
  h->cls = cls;
  return h + 1;
}

static void qm_free(void *p, void *user) {
  (void)user;
  if (!p) return;
  struct qm_hdr *h = (struct qm_hdr *)p - 1;
  unsigned cls = h->cls;
  struct qm_cache *c = qm_mine;
  uint32_t keep = QM_KEEP_BYTES / (uint32_t)qm_size(cls < QM_CLASSES ? cls : 0);
  if (cls >= QM_CLASSES || !c || c->count[cls] >= (keep < 4 ? 4 : keep)) {
    free(h);
    return;
  }
  struct qm_free *f = p;
  f->next = c->head[cls];
  c->head[cls] = f;
  c->count[cls]++;
}

static void *qm_calloc(size_t count, size_t n, void *user) {
  if (n && count > SIZE_MAX / n) return NULL;
  void *p = qm_malloc(count * n, user);
  if (p) memset(p, 0, count * n);
  return p;
}

static void *qm_realloc(void *p, size_t n, void *user) {
  if (!p) return qm_malloc(n, user);
  struct qm_hdr *h = (struct qm_hdr *)p - 1;
  if (h->cls != QM_BIG && n <= qm_size(h->cls)) return p;
  if (h->cls == QM_BIG && qm_class(n) == QM_BIG) {
    struct qm_hdr *g = realloc(h, sizeof *g + n);
    return g ? g + 1 : NULL;
  }
  void *q = qm_malloc(n, user);
  if (!q) return NULL;
  size_t old = h->cls == QM_BIG ? n : qm_size(h->cls); /* a big block only shrinks here */
  memcpy(q, p, old < n ? old : n);
  qm_free(p, user);
  return q;
}

const ngtcp2_mem q_mem = {
    .user_data = NULL,
    .malloc = qm_malloc,
    .free = qm_free,
    .calloc = qm_calloc,
    .realloc = qm_realloc,
};

uint32_t vsri_quic_mem_cached(unsigned cls) {
  return cls < QM_CLASSES && qm_mine ? qm_mine->count[cls] : 0;
}
