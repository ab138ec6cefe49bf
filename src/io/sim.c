/* The simulated io backend and its packet simulator (sim.h).
 *
 * Streams: each direction of a connection is a FIFO of segments in the sender's socket. A write
 * takes at most the window's room (segments not yet delivered + bytes the receiver has not
 * read), cuts what it takes into random-sized segments and stamps each with a due time (one
 * way delay, never before the previous segment: TCP delivers in order). Only the head segment
 * of a direction has an event in the world's heap; when it comes due it is delivered, or held
 * for rto_ns if the path is partitioned (TCP retransmits: nothing is lost, it waits). A segment
 * reaching a closed or crashed socket is answered with RST.
 *
 * Operations are tried from poll() (never from submit: callbacks never run inside a submit),
 * in submission order; one that cannot finish parks on its socket (one read side, one write
 * side) until a network event makes it possible again.
 *
 * The world's own memory (sockets, segments, buffers) comes from libc, not vsri_malloc: it is
 * the network's, not the library's, and stays out of the counters the leak checks read.
 * Sockets live until the world is freed (their buffers are released at close), so an event
 * never points at freed memory. */
#include "io/sim.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>

#include "io/io_impl.h"
#include "vsrbus/error.h"

#define SIM_FD_BASE (1 << 20) /* virtual fds: far above any real one, so a stray close() fails */
#define SIM_PORT_FIRST 40000   /* ephemeral ports */
#define SIM_TURNS_MAX 1000000  /* loop turns at one instant before it is a livelock */

enum { SIM_ON_TRIES = 1u << 0 }; /* c->backend_tag: on the io's tries list */

enum sock_kind { SK_NEW, SK_LISTEN, SK_CONNECTING, SK_OPEN, SK_FAILED, SK_DGRAM };

struct seg {
  struct seg *next;
  uint64_t due;
  uint32_t len, off;
  bool fin;
  struct sockaddr_in from; /* datagrams: the sender */
  struct sockaddr_in to;   /* datagrams in flight: the destination */
  uint8_t data[];
};

struct sim_io;

struct sim_sock {
  struct sim_sock *all_next; /* every socket of the world */
  struct vsri_sim_host *host;
  struct sim_io *sio; /* the loop that owns the fd (NULL once closed) */
  int fd;
  enum sock_kind kind;
  bool closed;  /* fd closed */
  bool wr_shut; /* FIN queued: no more writes */
  bool rx_eof;  /* the peer's FIN arrived */
  int err;      /* pending error (ECONNRESET ...): every later op fails with it */
  int connect_res;
  struct sockaddr_in local, remote;
  struct sim_sock *peer;
  /* Sending: segments not yet delivered, oldest first. */
  struct seg *tx_head, *tx_tail;
  uint64_t tx_bytes;
  uint64_t tx_last_due;
  bool tx_armed; /* the head segment has an event */
  uint32_t window;
  /* Receiving. */
  struct seg *rx_head, *rx_tail; /* delivered, not read yet (head->off bytes of it already read) */
  size_t rx_len;
  uint32_t rx_dgrams; /* SK_DGRAM: datagrams queued on rx (each a seg; its source in dg_from) */
  bool connected;     /* SK_DGRAM: connect() set |remote| */
  /* Listening: established connections not yet accepted. */
  struct sim_sock **backlog;
  uint32_t backlog_len, backlog_cap;
  uint32_t backlog_max;
  /* Parked operations. */
  struct vsri_completion *rd, *wr;
  /* TCP keepalive (SO_KEEPALIVE, TCP_KEEPIDLE / KEEPINTVL / KEEPCNT). */
  bool ka;
  int ka_gen; /* the armed keepalive event's generation: older ones are stale */
  uint32_t ka_idle_s, ka_intvl_s, ka_cnt, ka_probes;
  uint64_t last_heard; /* a segment (or an acknowledgement) from the peer */
};

struct vsri_sim_host {
  struct vsri_sim *w;
  uint32_t index;
  struct in_addr ip;
  uint16_t next_port;
  struct sim_sock **fds;
  uint32_t fds_len;
};

struct sim_io {
  struct vsri_sim *w;
  struct vsri_sim_host *h;
  struct vsri_io *io;
  struct sim_io *next; /* the world's loops, in creation order */
  struct vsri_list tries;
  uint8_t *pooled;
};

enum ev_kind { EV_SEG, EV_SYN, EV_SYNACK, EV_RST, EV_KA, EV_DGRAM };

struct ev {
  uint64_t t, seq;
  uint8_t kind;
  struct sim_sock *s; /* EV_SEG: sender; EV_SYN: the dialer; EV_SYNACK / EV_RST: receiver */
  int res;            /* EV_SYNACK */
  struct seg *dg;     /* EV_DGRAM: the datagram (s: NULL) */
};

struct vsri_sim {
  struct vsri_sim_net net;
  uint64_t rng[4];
  uint64_t now;
  uint64_t seq;
  uint64_t hash;
  struct vsri_sim_host *hosts[VSRI_SIM_HOSTS_MAX];
  uint32_t hosts_len;
  bool blocked[VSRI_SIM_HOSTS_MAX][VSRI_SIM_HOSTS_MAX];
  uint64_t clog_ns[VSRI_SIM_HOSTS_MAX][VSRI_SIM_HOSTS_MAX];
  uint64_t clog_until[VSRI_SIM_HOSTS_MAX][VSRI_SIM_HOSTS_MAX];
  struct ev *heap;
  uint32_t heap_len, heap_cap;
  struct sim_sock *all;
  struct sim_io *ios;
  struct vsri_sim_stats stats;
};

static void *sim_xalloc(size_t n) {
  void *p = calloc(1, n);
  if (!p) abort(); /* the simulator has no graceful way out of a full heap */
  return p;
}

/* ---- randomness and the trace ---------------------------------------------------------- */

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t vsri_sim_rand(struct vsri_sim *w) {
  uint64_t *s = w->rng;
  uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return r;
}

uint64_t vsri_sim_below(struct vsri_sim *w, uint64_t n) {
  return n ? vsri_sim_rand(w) % n : 0;
}

static bool sim_chance(struct vsri_sim *w, uint32_t ppm) {
  return vsri_sim_below(w, 1000000) < ppm;
}

void vsri_sim_random_bytes(void *world, void *buf, size_t len) {
  uint8_t *p = buf;
  while (len > 0) {
    uint64_t r = vsri_sim_rand(world);
    size_t n = len < 8 ? len : 8;
    memcpy(p, &r, n);
    p += n;
    len -= n;
  }
}

void vsri_sim_trace(struct vsri_sim *w, const void *p, size_t len) {
  const uint8_t *b = p;
  for (size_t i = 0; i < len; i++) {
    w->hash ^= b[i];
    w->hash *= 0x100000001b3ull; /* FNV-1a, 64-bit */
  }
}

static void sim_trace_ev(struct vsri_sim *w, uint32_t kind, uint32_t a, uint32_t b, uint64_t n) {
  uint64_t rec[4] = {w->now, ((uint64_t)kind << 32) | a, b, n};
  vsri_sim_trace(w, rec, sizeof rec);
}

uint64_t vsri_sim_trace_hash(const struct vsri_sim *w) { return w->hash; }
uint64_t vsri_sim_now(const struct vsri_sim *w) { return w->now; }
void vsri_sim_stats(const struct vsri_sim *w, struct vsri_sim_stats *out) { *out = w->stats; }

/* ---- world ------------------------------------------------------------------------------- */

int vsri_sim_new(struct vsri_sim **out, uint64_t seed, const struct vsri_sim_net *net) {
  struct vsri_sim *w = calloc(1, sizeof *w);
  if (!w) return VSR_ENOMEM;
  if (net) w->net = *net;
  struct vsri_sim_net *n = &w->net;
  if (!n->delay_min_ns) n->delay_min_ns = 50000;
  if (!n->delay_mean_ns) n->delay_mean_ns = 500000;
  if (n->delay_mean_ns < n->delay_min_ns) n->delay_mean_ns = n->delay_min_ns;
  if (!n->delay_tail_ns) n->delay_tail_ns = 20000000;
  if (!n->tail_ppm) n->tail_ppm = 1000;
  if (!n->window_min) n->window_min = 4096;
  if (!n->window_max) n->window_max = 256u << 10;
  if (n->window_max < n->window_min) n->window_max = n->window_min;
  if (!n->segment_max) n->segment_max = 64u << 10;
  if (!n->partial_write_ppm) n->partial_write_ppm = 100000;
  if (!n->short_read_ppm) n->short_read_ppm = 100000;
  if (!n->connect_timeout_ns) n->connect_timeout_ns = 1000000000ull;
  if (!n->rto_ns) n->rto_ns = 200000000ull;
  if (!n->dgram_queue_max) n->dgram_queue_max = 256;
  uint64_t x = seed;
  for (int i = 0; i < 4; i++) { /* splitmix64 */
    uint64_t z = (x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    w->rng[i] = z ^ (z >> 31);
  }
  w->hash = 0xcbf29ce484222325ull;
  w->now = 1000000000ull; /* t = 1 s: a zero clock reads as "never" in places */
  *out = w;
  return 0;
}

static void seg_free_all(struct seg *g) {
  while (g) {
    struct seg *nx = g->next;
    free(g);
    g = nx;
  }
}

static void rx_clear(struct sim_sock *s) {
  seg_free_all(s->rx_head);
  s->rx_head = s->rx_tail = NULL;
  s->rx_len = 0;
  s->rx_dgrams = 0;
}

static void sock_release_buffers(struct sim_sock *s) {
  seg_free_all(s->tx_head);
  s->tx_head = s->tx_tail = NULL;
  s->tx_bytes = 0;
  rx_clear(s);
  free(s->backlog);
  s->backlog = NULL;
  s->backlog_len = s->backlog_cap = 0;
}

void vsri_sim_del(struct vsri_sim *w) {
  if (!w) return;
  struct sim_sock *s = w->all;
  while (s) {
    struct sim_sock *nx = s->all_next;
    sock_release_buffers(s);
    free(s);
    s = nx;
  }
  for (uint32_t i = 0; i < w->hosts_len; i++) {
    free(w->hosts[i]->fds);
    free(w->hosts[i]);
  }
  for (uint32_t i = 0; i < w->heap_len; i++) free(w->heap[i].dg); /* datagrams in flight */
  free(w->heap);
  free(w);
}

struct vsri_sim_host *vsri_sim_host_new(struct vsri_sim *w, const char *ip) {
  if (w->hosts_len == VSRI_SIM_HOSTS_MAX) return NULL;
  struct in_addr a;
  if (inet_pton(AF_INET, ip, &a) != 1) return NULL;
  struct vsri_sim_host *h = sim_xalloc(sizeof *h);
  h->w = w;
  h->index = w->hosts_len;
  h->ip = a;
  h->next_port = SIM_PORT_FIRST;
  w->hosts[w->hosts_len++] = h;
  return h;
}

uint32_t vsri_sim_host_index(const struct vsri_sim_host *h) { return h->index; }

static struct vsri_sim_host *sim_host_by_ip(struct vsri_sim *w, struct in_addr ip) {
  for (uint32_t i = 0; i < w->hosts_len; i++) {
    if (w->hosts[i]->ip.s_addr == ip.s_addr) return w->hosts[i];
  }
  return NULL;
}

/* ---- the event heap ---------------------------------------------------------------------- */

static bool ev_before(const struct ev *a, const struct ev *b) {
  return a->t < b->t || (a->t == b->t && a->seq < b->seq);
}

static void ev_insert(struct vsri_sim *w, struct ev e) {
  if (w->heap_len == w->heap_cap) {
    w->heap_cap = w->heap_cap ? w->heap_cap * 2 : 256;
    w->heap = realloc(w->heap, w->heap_cap * sizeof *w->heap);
    if (!w->heap) abort();
  }
  uint32_t i = w->heap_len++;
  while (i > 0) {
    uint32_t p = (i - 1) / 2;
    if (!ev_before(&e, &w->heap[p])) break;
    w->heap[i] = w->heap[p];
    i = p;
  }
  w->heap[i] = e;
}

static void ev_push(struct vsri_sim *w, uint64_t t, uint8_t kind, struct sim_sock *s, int res) {
  ev_insert(w, (struct ev){.t = t, .seq = w->seq++, .kind = kind, .s = s, .res = res});
}

static void ev_push_dgram(struct vsri_sim *w, uint64_t t, struct seg *g) {
  ev_insert(w, (struct ev){.t = t, .seq = w->seq++, .kind = EV_DGRAM, .dg = g});
}

static struct ev ev_pop(struct vsri_sim *w) {
  struct ev top = w->heap[0];
  struct ev last = w->heap[--w->heap_len];
  uint32_t i = 0;
  for (;;) {
    uint32_t l = 2 * i + 1, r = l + 1, m = i;
    const struct ev *best = &last;
    if (l < w->heap_len && ev_before(&w->heap[l], best)) {
      m = l;
      best = &w->heap[l];
    }
    if (r < w->heap_len && ev_before(&w->heap[r], best)) m = r;
    if (m == i) break;
    w->heap[i] = w->heap[m];
    i = m;
  }
  if (w->heap_len > 0) w->heap[i] = last;
  return top;
}

/* ---- paths ------------------------------------------------------------------------------- */

static uint64_t sim_delay(struct vsri_sim *w, const struct vsri_sim_host *a,
                          const struct vsri_sim_host *b) {
  const struct vsri_sim_net *n = &w->net;
  uint64_t d = n->delay_min_ns + vsri_sim_below(w, 2 * (n->delay_mean_ns - n->delay_min_ns) + 1);
  if (sim_chance(w, n->tail_ppm)) d += vsri_sim_below(w, n->delay_tail_ns + 1);
  if (w->clog_until[a->index][b->index] > w->now) d += w->clog_ns[a->index][b->index];
  return d;
}

static bool sim_blocked(const struct vsri_sim *w, const struct vsri_sim_host *a,
                        const struct vsri_sim_host *b) {
  return w->blocked[a->index][b->index];
}

void vsri_sim_partition(struct vsri_sim_host *a, struct vsri_sim_host *b, bool both) {
  struct vsri_sim *w = a->w;
  w->blocked[a->index][b->index] = true;
  if (both) w->blocked[b->index][a->index] = true;
  sim_trace_ev(w, 100, a->index, b->index, both);
}

void vsri_sim_clog(struct vsri_sim_host *a, struct vsri_sim_host *b, uint64_t extra_ns,
                   uint64_t until_ns) {
  struct vsri_sim *w = a->w;
  w->clog_ns[a->index][b->index] = extra_ns;
  w->clog_until[a->index][b->index] = until_ns;
  sim_trace_ev(w, 101, a->index, b->index, extra_ns);
}

void vsri_sim_heal(struct vsri_sim *w) {
  memset(w->blocked, 0, sizeof w->blocked);
  memset(w->clog_until, 0, sizeof w->clog_until);
  sim_trace_ev(w, 102, 0, 0, 0);
}

/* ---- loops and their operations ---------------------------------------------------------- */

static struct sim_sock *sim_fd(struct sim_io *si, int fd) {
  uint32_t i = (uint32_t)(fd - SIM_FD_BASE);
  if (fd < SIM_FD_BASE || i >= si->h->fds_len) return NULL;
  return si->h->fds[i];
}

/* Queues |c| to be tried by its loop's next poll. */
static void sim_try_later(struct sim_io *si, struct vsri_completion *c) {
  c->backend_tag |= SIM_ON_TRIES;
  vsri_list_push_back(&si->tries, &c->link);
}

/* A parked operation of |s| may now finish: try it again. */
static void sock_wake(struct sim_sock *s, bool rd, bool wr) {
  if (!s->sio) return;
  if (rd && s->rd) {
    struct vsri_completion *c = s->rd;
    s->rd = NULL;
    sim_try_later(s->sio, c);
  }
  if (wr && s->wr) {
    struct vsri_completion *c = s->wr;
    s->wr = NULL;
    sim_try_later(s->sio, c);
  }
}

/* Gives |s| the lowest free fd of |si|'s host, on |si|. */
static void sock_fd_alloc(struct sim_io *si, struct sim_sock *s) {
  struct vsri_sim_host *h = si->h;
  uint32_t i = 0;
  while (i < h->fds_len && h->fds[i]) i++;
  if (i == h->fds_len) {
    uint32_t len = h->fds_len ? h->fds_len * 2 : 64;
    h->fds = realloc(h->fds, len * sizeof *h->fds);
    if (!h->fds) abort();
    memset(h->fds + h->fds_len, 0, (len - h->fds_len) * sizeof *h->fds);
    h->fds_len = len;
  }
  h->fds[i] = s;
  s->fd = SIM_FD_BASE + (int)i;
  s->sio = si;
}

static uint32_t sim_window(struct vsri_sim *w) {
  return w->net.window_min +
         (uint32_t)vsri_sim_below(w, (uint64_t)w->net.window_max - w->net.window_min + 1);
}

/* A socket of host |h| without a fd (an accepted end waits in a backlog without one). */
static struct sim_sock *sock_alloc(struct vsri_sim *w, struct vsri_sim_host *h) {
  struct sim_sock *s = sim_xalloc(sizeof *s);
  s->host = h;
  s->fd = -1;
  s->local.sin_family = AF_INET;
  s->local.sin_addr = h->ip;
  s->window = sim_window(w);
  s->all_next = w->all;
  w->all = s;
  return s;
}

static struct sim_sock *sock_new(struct sim_io *si) {
  struct sim_sock *s = sock_alloc(si->w, si->h);
  sock_fd_alloc(si, s);
  return s;
}

static uint16_t host_port(struct vsri_sim_host *h) {
  uint16_t p = h->next_port++;
  if (h->next_port == 0) h->next_port = SIM_PORT_FIRST;
  return htons(p);
}

/* Arms the event of |s|'s head segment. */
static void tx_arm(struct vsri_sim *w, struct sim_sock *s) {
  if (s->tx_armed || !s->tx_head) return;
  s->tx_armed = true;
  uint64_t t = s->tx_head->due > w->now ? s->tx_head->due : w->now;
  ev_push(w, t, EV_SEG, s, 0);
}

/* Arms |s|'s keepalive timer: the first probe after ka_idle_s of silence. */
static void ka_arm(struct vsri_sim *w, struct sim_sock *s, uint64_t at) {
  if (!s->ka || s->kind != SK_OPEN || s->closed || s->err) return;
  ev_push(w, at > w->now ? at : w->now, EV_KA, s, ++s->ka_gen);
}

static void tx_push(struct vsri_sim *w, struct sim_sock *s, const uint8_t *p, uint32_t len,
                    bool fin) {
  struct seg *g = malloc(sizeof *g + len);
  if (!g) abort();
  if (len) memcpy(g->data, p, len);
  g->next = NULL;
  g->len = len;
  g->off = 0;
  g->fin = fin;
  uint64_t due = w->now + (s->peer ? sim_delay(w, s->host, s->peer->host) : 0);
  if (due < s->tx_last_due) due = s->tx_last_due;
  s->tx_last_due = due;
  g->due = due;
  if (s->tx_tail) s->tx_tail->next = g;
  else s->tx_head = g;
  s->tx_tail = g;
  s->tx_bytes += len;
  tx_arm(w, s);
}

/* |s| is reset: pending and later operations fail, buffered bytes are gone. */
static void sock_reset(struct sim_sock *s, int err) {
  if (s->err || s->closed) return;
  s->err = err;
  struct seg *g = s->tx_head;
  while (g) {
    struct seg *nx = g->next;
    free(g);
    g = nx;
  }
  s->tx_head = s->tx_tail = NULL;
  s->tx_bytes = 0;
  rx_clear(s);
  sock_wake(s, true, true);
  /* Its unread bytes are gone: the peer's window opens (a zero-window probe would now be
   * answered, with RST). */
  if (s->peer) sock_wake(s->peer, false, true);
}

/* Sends RST from |s| to its peer (lost if the path is blocked). */
static void send_rst(struct vsri_sim *w, struct sim_sock *s) {
  struct sim_sock *p = s->peer;
  if (!p || p->closed || p->err) return;
  if (sim_blocked(w, s->host, p->host)) return;
  ev_push(w, w->now + sim_delay(w, s->host, p->host), EV_RST, p, 0);
}

static size_t iov_total(const struct iovec *iov, int n) {
  size_t t = 0;
  for (int i = 0; i < n; i++) t += iov[i].iov_len;
  return t;
}

static int32_t op_sendv(struct vsri_sim *w, struct sim_sock *s, const struct iovec *iov,
                        int iovcnt) {
  if (s->err) return -s->err;
  if (s->kind != SK_OPEN) return -ENOTCONN;
  if (s->wr_shut) return -EPIPE;
  uint64_t used = s->tx_bytes + (s->peer ? s->peer->rx_len : 0);
  size_t room = used < s->window ? s->window - used : 0;
  size_t want = iov_total(iov, iovcnt);
  if (want == 0) return 0;
  if (room == 0) {
    w->stats.would_block++;
    return -EAGAIN;
  }
  size_t n = want < room ? want : room;
  if (n > 1 && sim_chance(w, w->net.partial_write_ppm)) {
    n = 1 + (size_t)vsri_sim_below(w, n);
    w->stats.partial_writes++;
  }
  if (n > INT32_MAX) n = INT32_MAX;
  /* Cut into segments, gathering across iovecs. */
  size_t left = n;
  int vi = 0;
  size_t voff = 0;
  uint8_t *tmp = NULL;
  while (left > 0) {
    size_t seg = 1 + (size_t)vsri_sim_below(w, w->net.segment_max);
    if (seg > left) seg = left;
    tmp = realloc(tmp, seg);
    if (!tmp) abort();
    size_t got = 0;
    while (got < seg) {
      size_t k = iov[vi].iov_len - voff;
      if (k > seg - got) k = seg - got;
      memcpy(tmp + got, (const uint8_t *)iov[vi].iov_base + voff, k);
      got += k;
      voff += k;
      if (voff == iov[vi].iov_len) {
        vi++;
        voff = 0;
      }
    }
    tx_push(w, s, tmp, (uint32_t)seg, false);
    left -= seg;
  }
  free(tmp);
  return (int32_t)n;
}

static int32_t op_recv(struct vsri_sim *w, struct sim_sock *s, uint8_t *buf, size_t len) {
  if (s->rx_len > 0) {
    size_t n = len < s->rx_len ? len : s->rx_len;
    if (n > 1 && sim_chance(w, w->net.short_read_ppm)) {
      n = 1 + (size_t)vsri_sim_below(w, n);
      w->stats.short_reads++;
    }
    size_t done = 0;
    while (done < n) {
      struct seg *g = s->rx_head;
      size_t k = g->len - g->off;
      if (k > n - done) k = n - done;
      memcpy(buf + done, g->data + g->off, k);
      g->off += (uint32_t)k;
      done += k;
      if (g->off == g->len) {
        s->rx_head = g->next;
        if (!s->rx_head) s->rx_tail = NULL;
        free(g);
      }
    }
    s->rx_len -= n;
    if (s->peer) sock_wake(s->peer, false, true); /* room in the peer's window */
    return (int32_t)n;
  }
  if (s->err) return -s->err;
  if (s->rx_eof) return 0;
  if (s->kind != SK_OPEN) return s->kind == SK_FAILED ? -ENOTCONN : -EAGAIN;
  return -EAGAIN;
}

static int32_t op_accept(struct sim_io *si, struct sim_sock *l, struct vsri_completion *c) {
  if (l->kind != SK_LISTEN) return -EINVAL;
  if (l->backlog_len == 0) return -EAGAIN;
  struct sim_sock *child = l->backlog[0];
  memmove(l->backlog, l->backlog + 1, --l->backlog_len * sizeof *l->backlog);
  sock_fd_alloc(si, child);
  if (c->u.accept.addr && c->u.accept.addrlen) {
    socklen_t n = *c->u.accept.addrlen < sizeof child->remote ? *c->u.accept.addrlen
                                                              : sizeof child->remote;
    memcpy(c->u.accept.addr, &child->remote, n);
    *c->u.accept.addrlen = sizeof child->remote;
  }
  si->w->stats.accepts++;
  return child->fd;
}

static int32_t op_connect(struct vsri_sim *w, struct sim_sock *s, struct vsri_completion *c) {
  if (s->kind == SK_OPEN) return 0;
  if (s->kind == SK_FAILED) return s->connect_res;
  if (s->kind == SK_CONNECTING) return -EAGAIN;
  if (s->kind != SK_NEW) return -EINVAL;
  const struct sockaddr_in *to = (const struct sockaddr_in *)&c->u.connect.addr;
  if (to->sin_family != AF_INET) return -EAFNOSUPPORT;
  if (!s->local.sin_port) s->local.sin_port = host_port(s->host);
  s->remote = *to;
  s->kind = SK_CONNECTING;
  w->stats.connects++;
  struct vsri_sim_host *dst = sim_host_by_ip(w, to->sin_addr);
  if (!dst) {
    ev_push(w, w->now + w->net.connect_timeout_ns, EV_SYNACK, s, -ENETUNREACH);
  } else if (sim_blocked(w, s->host, dst)) {
    ev_push(w, w->now + w->net.connect_timeout_ns, EV_SYNACK, s, -ETIMEDOUT);
  } else {
    ev_push(w, w->now + sim_delay(w, s->host, dst), EV_SYN, s, 0);
  }
  return -EAGAIN;
}

static int32_t op_close(struct sim_io *si, struct sim_sock *s) {
  struct vsri_sim *w = si->w;
  si->h->fds[s->fd - SIM_FD_BASE] = NULL;
  s->sio = NULL;
  s->rd = s->wr = NULL;
  if (s->kind == SK_LISTEN) {
    /* Connections never accepted are reset. */
    for (uint32_t i = 0; i < s->backlog_len; i++) {
      struct sim_sock *child = s->backlog[i];
      send_rst(w, child);
      child->closed = true;
      sock_release_buffers(child);
    }
    s->backlog_len = 0;
  } else if (s->kind == SK_OPEN && !s->err) {
    if (s->rx_len > 0) {
      send_rst(w, s); /* unread input: the kernel resets, as Linux does */
      s->closed = true;
      sock_release_buffers(s);
      return 0;
    }
    if (!s->wr_shut) {
      s->wr_shut = true;
      tx_push(w, s, NULL, 0, true);
    }
  }
  s->closed = true;
  if (s->peer) sock_wake(s->peer, false, true); /* its window opens: writes go on, into RST */
  /* Segments still queued keep flowing to the peer (a FIN after the last byte). */
  rx_clear(s);
  return 0;
}

/* ---- datagrams ----------------------------------------------------------------------------- */

static void dgram_launch(struct vsri_sim *w, struct vsri_sim_host *src, struct seg *g) {
  struct vsri_sim_host *dst = sim_host_by_ip(w, g->to.sin_addr);
  if (!dst || sim_blocked(w, src, dst) || sim_chance(w, w->net.dgram_loss_ppm)) {
    w->stats.dgrams_lost++;
    free(g);
    return;
  }
  uint64_t t = w->now + sim_delay(w, src, dst);
  if (sim_chance(w, w->net.dgram_dup_ppm)) {
    struct seg *d = malloc(sizeof *d + g->len);
    if (!d) abort();
    memcpy(d, g, sizeof *d + g->len);
    w->stats.dgrams_duplicated++;
    ev_push_dgram(w, w->now + sim_delay(w, src, dst), d);
  }
  ev_push_dgram(w, t, g);
}

static int32_t op_sendmsg(struct vsri_sim *w, struct sim_sock *s, const struct msghdr *m) {
  if (s->kind != SK_DGRAM) return -EOPNOTSUPP;
  if (s->err) return -s->err;
  struct sockaddr_in to;
  if (m->msg_name && m->msg_namelen >= sizeof to) {
    memcpy(&to, m->msg_name, sizeof to);
  } else if (s->connected) {
    to = s->remote;
  } else {
    return -EDESTADDRREQ;
  }
  if (to.sin_family != AF_INET) return -EAFNOSUPPORT;
  if (!s->local.sin_port) s->local.sin_port = host_port(s->host);
  size_t len = iov_total(m->msg_iov, (int)m->msg_iovlen);
  if (len > 65507) return -EMSGSIZE;
  struct seg *g = malloc(sizeof *g + len);
  if (!g) abort();
  memset(g, 0, sizeof *g);
  size_t off = 0;
  for (size_t i = 0; i < m->msg_iovlen; i++) {
    size_t k = m->msg_iov[i].iov_len;
    if (k) memcpy(g->data + off, m->msg_iov[i].iov_base, k);
    off += k;
  }
  g->len = (uint32_t)len;
  g->from = s->local;
  g->to = to;
  dgram_launch(w, s->host, g);
  return (int32_t)len;
}

static int32_t op_recvmsg(struct sim_sock *s, struct msghdr *m) {
  if (s->kind != SK_DGRAM) return -EOPNOTSUPP;
  struct seg *g = s->rx_head;
  if (!g) return s->err ? -s->err : -EAGAIN;
  s->rx_head = g->next;
  if (!s->rx_head) s->rx_tail = NULL;
  s->rx_dgrams--;
  s->rx_len -= g->len;
  size_t off = 0;
  for (size_t i = 0; i < m->msg_iovlen && off < g->len; i++) {
    size_t k = g->len - off < m->msg_iov[i].iov_len ? g->len - off : m->msg_iov[i].iov_len;
    memcpy(m->msg_iov[i].iov_base, g->data + off, k);
    off += k;
  }
  m->msg_flags = off < g->len ? MSG_TRUNC : 0;
  if (m->msg_name && m->msg_namelen >= sizeof g->from) {
    memcpy(m->msg_name, &g->from, sizeof g->from);
    m->msg_namelen = sizeof g->from;
  }
  m->msg_controllen = 0; /* no ECN, no GRO segment size: one datagram per read */
  free(g);
  return (int32_t)off;
}

static void dgram_connect(struct sim_sock *s, const struct sockaddr_in *to) {
  memcpy(&s->remote, to, sizeof s->remote);
  s->connected = true;
  if (!s->local.sin_port) s->local.sin_port = host_port(s->host);
}

/* Tries |c| once: its result, or -EAGAIN to park. */
static int32_t sim_attempt(struct sim_io *si, struct vsri_completion *c) {
  struct vsri_sim *w = si->w;
  struct sim_sock *s = sim_fd(si, c->fd);
  if (!s) return -EBADF;
  switch (c->op) {
  case VSRI_OP_ACCEPT: return op_accept(si, s, c);
  case VSRI_OP_CONNECT:
    if (s->kind == SK_DGRAM) { /* a UDP connect only fixes the peer */
      dgram_connect(s, (const struct sockaddr_in *)&c->u.connect.addr);
      return 0;
    }
    return op_connect(w, s, c);
  case VSRI_OP_RECV: return op_recv(w, s, c->u.recv.buf, c->u.recv.len);
  case VSRI_OP_RECV_POOLED:
    c->u.recv.buf = si->pooled;
    return op_recv(w, s, si->pooled, c->u.recv.len);
  case VSRI_OP_SENDV: return op_sendv(w, s, c->u.sendv.iov, c->u.sendv.iovcnt);
  case VSRI_OP_CLOSE: return op_close(si, s);
  case VSRI_OP_SENDMSG: return op_sendmsg(w, s, c->u.msg.msg);
  case VSRI_OP_RECVMSG: return op_recvmsg(s, c->u.msg.msg);
  default: return -EOPNOTSUPP;
  }
}

static bool sim_read_side(uint8_t op) {
  return op == VSRI_OP_ACCEPT || op == VSRI_OP_RECV || op == VSRI_OP_RECV_POOLED ||
         op == VSRI_OP_RECVMSG;
}

static int sim_run_tries(struct sim_io *si) {
  int n = 0;
  /* Only what is queued now: operations submitted by these callbacks wait for the next turn. */
  struct vsri_list batch;
  vsri_list_init(&batch);
  vsri_list_splice_back(&batch, &si->tries);
  struct vsri_list_node *node;
  while ((node = vsri_list_pop_front(&batch))) {
    struct vsri_completion *c = vsri_container_of(node, struct vsri_completion, link);
    c->backend_tag &= ~(uint32_t)SIM_ON_TRIES;
    int32_t res = sim_attempt(si, c);
    if (res == -EAGAIN) {
      struct sim_sock *s = sim_fd(si, c->fd);
      struct vsri_completion **slot = sim_read_side(c->op) ? &s->rd : &s->wr;
      if (*slot && *slot != c) {
        res = -EBUSY;
      } else {
        *slot = c;
        continue;
      }
    }
    vsri_io_complete(si->io, c, res);
    n++;
  }
  return n;
}

/* ---- the backend ------------------------------------------------------------------------- */

static int sim_init(struct vsri_io *io) {
  struct sim_io *si = io->backend_data; /* set by vsri_sim_io_new */
  si->io = io;
  si->pooled = malloc(io->opts.pooled_buf_size);
  if (!si->pooled) return VSR_ENOMEM;
  vsri_list_init(&si->tries);
  struct vsri_sim *w = si->w;
  struct sim_io **pp = &w->ios;
  while (*pp) pp = &(*pp)->next;
  *pp = si;
  return 0;
}

static void sim_fini(struct vsri_io *io) {
  struct sim_io *si = io->backend_data;
  struct sim_io **pp = &si->w->ios;
  while (*pp && *pp != si) pp = &(*pp)->next;
  if (*pp) *pp = si->next;
  /* Sockets the loop never closed are closed now (a loop freed with fds open). */
  struct vsri_sim_host *h = si->h;
  for (uint32_t i = 0; i < h->fds_len; i++) {
    struct sim_sock *s = h->fds[i];
    if (s && s->sio == si) {
      s->rd = s->wr = NULL;
      op_close(si, s);
    }
  }
  free(si->pooled);
  free(si);
}

static void sim_submit(struct vsri_io *io, struct vsri_completion *c) {
  sim_try_later(io->backend_data, c);
}

static void sim_cancel(struct vsri_io *io, struct vsri_completion *c) {
  struct sim_io *si = io->backend_data;
  if (c->backend_tag & SIM_ON_TRIES) {
    c->backend_tag &= ~(uint32_t)SIM_ON_TRIES;
    vsri_list_remove(&c->link);
    vsri_io_post(io, c, -ECANCELED);
    return;
  }
  struct sim_sock *s = sim_fd(si, c->fd);
  if (!s) return;
  if (s->rd == c) s->rd = NULL;
  else if (s->wr == c) s->wr = NULL;
  else return;
  vsri_io_post(io, c, -ECANCELED);
}

static int sim_poll(struct vsri_io *io, int64_t timeout_ns) {
  (void)timeout_ns; /* virtual time: the world moves the clock, a loop never waits */
  io->stats.enters++;
  return sim_run_tries(io->backend_data);
}

static uint64_t sim_clock(struct vsri_io *io) {
  const struct sim_io *si = io->backend_data;
  return si->w->now;
}

/* ---- socket setup ------------------------------------------------------------------------ */

static int sk_socket(struct vsri_io *io, int family, int type) {
  if (family != AF_INET) return -EAFNOSUPPORT;
  if ((type & 0xf) == SOCK_DGRAM) {
    struct sim_sock *s = sock_new(io->backend_data);
    s->kind = SK_DGRAM;
    return s->fd;
  }
  if ((type & 0xf) != SOCK_STREAM) return -EPROTONOSUPPORT;
  return sock_new(io->backend_data)->fd;
}

static int sk_bind(struct vsri_io *io, int fd, const struct sockaddr *addr, socklen_t len) {
  struct sim_io *si = io->backend_data;
  struct sim_sock *s = sim_fd(si, fd);
  if (!s) return -EBADF;
  const struct sockaddr_in *a = (const struct sockaddr_in *)addr;
  if (len < sizeof *a || a->sin_family != AF_INET) return -EAFNOSUPPORT;
  if (a->sin_addr.s_addr != INADDR_ANY && a->sin_addr.s_addr != si->h->ip.s_addr) {
    return -EADDRNOTAVAIL;
  }
  if (a->sin_port) {
    for (uint32_t i = 0; i < si->h->fds_len; i++) {
      struct sim_sock *o = si->h->fds[i];
      bool same = (o && o->kind == SK_DGRAM) == (s->kind == SK_DGRAM);
      if (o && o != s && same && (o->kind == SK_LISTEN || o->kind == SK_DGRAM) &&
          o->local.sin_port == a->sin_port) {
        return -EADDRINUSE;
      }
    }
  }
  s->local.sin_port = a->sin_port ? a->sin_port : host_port(si->h);
  return 0;
}

static int sk_listen(struct vsri_io *io, int fd, int backlog) {
  struct sim_sock *s = sim_fd(io->backend_data, fd);
  if (!s) return -EBADF;
  if (!s->local.sin_port) s->local.sin_port = host_port(s->host);
  s->kind = SK_LISTEN;
  s->backlog_max = backlog > 0 ? (uint32_t)backlog : 1;
  return 0;
}

static int sk_setsockopt(struct vsri_io *io, int fd, int level, int name, const void *val,
                         socklen_t len) {
  struct sim_io *si = io->backend_data;
  struct sim_sock *s = sim_fd(si, fd);
  if (!s) return -EBADF;
  int v = 0;
  if (len >= sizeof v) memcpy(&v, val, sizeof v);
  if (level == IPPROTO_UDP) return -ENOPROTOOPT; /* no GSO / GRO: one datagram per call */
  if (level == SOL_SOCKET && name == SO_KEEPALIVE) s->ka = v != 0;
  else if (level == IPPROTO_TCP && name == TCP_KEEPIDLE && v > 0) s->ka_idle_s = (uint32_t)v;
  else if (level == IPPROTO_TCP && name == TCP_KEEPINTVL && v > 0) s->ka_intvl_s = (uint32_t)v;
  else if (level == IPPROTO_TCP && name == TCP_KEEPCNT && v > 0) s->ka_cnt = (uint32_t)v;
  else return 0; /* others (TCP_NODELAY, SO_REUSEADDR) change nothing here */
  if (!s->ka_idle_s) s->ka_idle_s = 7200; /* Linux's defaults */
  if (!s->ka_intvl_s) s->ka_intvl_s = 75;
  if (!s->ka_cnt) s->ka_cnt = 9;
  ka_arm(si->w, s, s->last_heard + (uint64_t)s->ka_idle_s * 1000000000ull);
  return 0;
}

static int sk_getsockname(struct vsri_io *io, int fd, struct sockaddr *addr, socklen_t *len) {
  struct sim_sock *s = sim_fd(io->backend_data, fd);
  if (!s) return -EBADF;
  socklen_t n = *len < sizeof s->local ? *len : sizeof s->local;
  memcpy(addr, &s->local, n);
  *len = sizeof s->local;
  return 0;
}

static int sk_shutdown(struct vsri_io *io, int fd, int how) {
  struct sim_io *si = io->backend_data;
  struct sim_sock *s = sim_fd(si, fd);
  if (!s) return -EBADF;
  if (s->kind != SK_OPEN) return -ENOTCONN;
  if ((how == SHUT_WR || how == SHUT_RDWR) && !s->wr_shut && !s->err) {
    s->wr_shut = true;
    tx_push(si->w, s, NULL, 0, true);
  }
  return 0;
}

static int sk_connect_dgram(struct vsri_io *io, int fd, const struct sockaddr *addr,
                            socklen_t len) {
  struct sim_sock *s = sim_fd(io->backend_data, fd);
  if (!s) return -EBADF;
  if (s->kind != SK_DGRAM) return -EOPNOTSUPP;
  const struct sockaddr_in *a = (const struct sockaddr_in *)addr;
  if (len < sizeof *a || a->sin_family != AF_INET) return -EAFNOSUPPORT;
  dgram_connect(s, a);
  return 0;
}

static int sk_close_now(struct vsri_io *io, int fd) { /* vsri_io_close_now */
  struct sim_io *si = io->backend_data;
  struct sim_sock *s = sim_fd(si, fd);
  if (!s) return -EBADF;
  return op_close(si, s);
}

static const struct vsri_io_sockops sim_sockops = {
    .socket = sk_socket,
    .bind = sk_bind,
    .listen = sk_listen,
    .setsockopt = sk_setsockopt,
    .getsockname = sk_getsockname,
    .shutdown = sk_shutdown,
    .connect_dgram = sk_connect_dgram,
    .close_now = sk_close_now,
};

/* The synchronous datagram calls (io.h's vsri_io_recvmsg_now / sendmsg_now). */
static ssize_t sim_recvmsg_now(struct vsri_io *io, int fd, struct msghdr *msg, int flags) {
  (void)flags;
  struct sim_sock *s = sim_fd(io->backend_data, fd);
  return s ? op_recvmsg(s, msg) : -EBADF;
}

static ssize_t sim_sendmsg_now(struct vsri_io *io, int fd, const struct msghdr *msg, int flags) {
  (void)flags;
  struct sim_io *si = io->backend_data;
  struct sim_sock *s = sim_fd(si, fd);
  return s ? op_sendmsg(si->w, s, msg) : -EBADF;
}

static const struct vsri_io_backend sim_backend = {
    .name = "sim",
    .sock = &sim_sockops,
    .clock = sim_clock,
    .init = sim_init,
    .fini = sim_fini,
    .submit = sim_submit,
    .cancel = sim_cancel,
    .poll = sim_poll,
    .recvmsg_now = sim_recvmsg_now,
    .sendmsg_now = sim_sendmsg_now,
};

int vsri_sim_io_new(struct vsri_io **out, struct vsri_sim_host *h,
                    const struct vsri_io_options *o) {
  struct sim_io *si = calloc(1, sizeof *si);
  if (!si) return VSR_ENOMEM;
  si->w = h->w;
  si->h = h;
  int err = vsri_io_new_on(out, o, &sim_backend, si);
  if (err) free(si);
  return err;
}

/* ---- network events ---------------------------------------------------------------------- */

static struct sim_sock *sim_listener(struct vsri_sim_host *h, uint16_t port) {
  for (uint32_t i = 0; i < h->fds_len; i++) {
    struct sim_sock *s = h->fds[i];
    if (s && s->kind == SK_LISTEN && !s->err && s->local.sin_port == port) return s;
  }
  return NULL;
}

static void ev_syn(struct vsri_sim *w, struct sim_sock *c) {
  if (c->closed || c->kind != SK_CONNECTING || c->err) return;
  struct vsri_sim_host *dst = sim_host_by_ip(w, c->remote.sin_addr);
  struct sim_sock *l = sim_listener(dst, c->remote.sin_port);
  bool back_blocked = sim_blocked(w, dst, c->host);
  uint64_t back = w->now + sim_delay(w, dst, c->host);
  if (!l || !l->sio || l->backlog_len >= l->backlog_max) {
    if (back_blocked) ev_push(w, w->now + w->net.connect_timeout_ns, EV_SYNACK, c, -ETIMEDOUT);
    else ev_push(w, back, EV_SYNACK, c, -ECONNREFUSED);
    sim_trace_ev(w, 3, c->host->index, dst->index, 0);
    return;
  }
  if (back_blocked) { /* the SYN-ACK is lost: the dialer times out, the half-open is dropped */
    ev_push(w, w->now + w->net.connect_timeout_ns, EV_SYNACK, c, -ETIMEDOUT);
    return;
  }
  /* The accepted end: no fd until accept() takes it. */
  struct sim_sock *a = sock_alloc(w, dst);
  a->kind = SK_OPEN;
  a->local = l->local;
  a->remote = c->local;
  a->peer = c;
  a->tx_last_due = back; /* nothing it sends overtakes the SYN-ACK */
  a->last_heard = w->now;
  c->peer = a;
  if (l->backlog_len == l->backlog_cap) {
    l->backlog_cap = l->backlog_cap ? l->backlog_cap * 2 : 16;
    l->backlog = realloc(l->backlog, l->backlog_cap * sizeof *l->backlog);
    if (!l->backlog) abort();
  }
  l->backlog[l->backlog_len++] = a;
  sock_wake(l, true, false);
  ev_push(w, back, EV_SYNACK, c, 0);
  sim_trace_ev(w, 2, c->host->index, dst->index, 0);
}

static void ev_synack(struct vsri_sim *w, struct sim_sock *c, int res) {
  if (c->closed || c->kind != SK_CONNECTING) return;
  if (res == 0 && (!c->peer || c->peer->closed || c->peer->err)) res = -ECONNRESET;
  if (res == 0) {
    c->kind = SK_OPEN;
    c->tx_last_due = w->now;
    c->last_heard = w->now;
    ka_arm(w, c, w->now + (uint64_t)c->ka_idle_s * 1000000000ull);
  } else {
    c->kind = SK_FAILED;
    c->connect_res = res;
    if (res == -ECONNREFUSED) w->stats.refused++;
    else w->stats.connect_timeouts++;
  }
  sock_wake(c, false, true);
}

/* Hands segment |g| (data) to |s|'s receive queue: no copy. */
static void rx_append(struct sim_sock *s, struct seg *g) {
  g->next = NULL;
  g->off = 0;
  if (s->rx_tail) s->rx_tail->next = g;
  else s->rx_head = g;
  s->rx_tail = g;
  s->rx_len += g->len;
}

static void ev_seg(struct vsri_sim *w, struct sim_sock *s) {
  s->tx_armed = false;
  struct seg *g = s->tx_head;
  if (!g) return;
  struct sim_sock *p = s->peer;
  if (p && sim_blocked(w, s->host, p->host)) {
    w->stats.held++;
    g->due = w->now + w->net.rto_ns;
    tx_arm(w, s);
    return;
  }
  /* A reset or closed socket no longer exists for TCP: data (or a FIN it did not cross) gets
   * RST back. */
  bool to_gone = p && (p->err || (p->closed && (g->len > 0 || !p->wr_shut)));
  if (!to_gone) {
    s->tx_head = g->next;
    if (!s->tx_head) s->tx_tail = NULL;
    s->tx_bytes -= g->len;
  }
  if (!p) {
    free(g);
  } else if (to_gone) {
    /* Data for a closed socket: RST back, the rest of this direction is void. If the RST
     * cannot get back, the segment stays unacknowledged and is retransmitted later (and
     * answered with RST once the path heals), as TCP does. */
    if (sim_blocked(w, p->host, s->host)) {
      w->stats.held++;
      g->due = w->now + w->net.rto_ns;
      tx_arm(w, s);
      return;
    }
    s->tx_head = g->next;
    if (!s->tx_head) s->tx_tail = NULL;
    s->tx_bytes -= g->len;
    free(g);
    if (!s->closed && !s->err) ev_push(w, w->now + sim_delay(w, p->host, s->host), EV_RST, s, 0);
    struct seg *r = s->tx_head;
    while (r) {
      struct seg *nx = r->next;
      free(r);
      r = nx;
    }
    s->tx_head = s->tx_tail = NULL;
    s->tx_bytes = 0;
    return;
  } else if (p->closed) {
    free(g); /* a FIN crossing our own close */
  } else {
    p->last_heard = w->now;
    p->ka_probes = 0;
    s->last_heard = w->now; /* its acknowledgement */
    s->ka_probes = 0;
    if (g->fin) {
      p->rx_eof = true;
    } else {
      rx_append(p, g);
      w->stats.segments++;
      w->stats.bytes += g->len;
    }
    sim_trace_ev(w, g->fin ? 5 : 4, s->host->index, p->host->index, g->len);
    if (g->fin) free(g);
    sock_wake(p, true, false);
  }
  /* Room in the window: a parked write of |s| may go on. */
  sock_wake(s, false, true);
  tx_arm(w, s);
}

static void ev_rst(struct vsri_sim *w, struct sim_sock *s) {
  if (s->closed || s->err) return;
  w->stats.resets++;
  sim_trace_ev(w, 6, s->host->index, 0, 0);
  if (s->kind == SK_CONNECTING) {
    s->kind = SK_FAILED;
    s->connect_res = -ECONNREFUSED;
  }
  sock_reset(s, ECONNRESET);
}

/* A keepalive timer: after ka_idle_s of silence, probe; a live peer answers (the link is
 * heard), a gone one answers RST, an unreachable one not at all: ka_cnt probes unanswered,
 * ka_intvl_s apart, and the connection times out. */
static void ev_ka(struct vsri_sim *w, struct sim_sock *s, int gen) {
  if (gen != s->ka_gen) return; /* re-armed since */
  if (!s->ka || s->kind != SK_OPEN || s->closed || s->err || !s->peer) return;
  uint64_t idle = (uint64_t)s->ka_idle_s * 1000000000ull;
  if (s->ka_probes == 0 && w->now < s->last_heard + idle) {
    ka_arm(w, s, s->last_heard + idle);
    return;
  }
  struct sim_sock *p = s->peer;
  if (!sim_blocked(w, s->host, p->host) && !sim_blocked(w, p->host, s->host)) {
    sim_trace_ev(w, 7, s->host->index, p->host->index, 0);
    if (p->closed || p->err) {
      ev_push(w, w->now + sim_delay(w, s->host, p->host) + sim_delay(w, p->host, s->host),
              EV_RST, s, 0);
      return;
    }
    s->last_heard = w->now;
    s->ka_probes = 0;
    ka_arm(w, s, w->now + idle);
    return;
  }
  if (++s->ka_probes > s->ka_cnt) {
    sim_trace_ev(w, 8, s->host->index, p->host->index, 0);
    sock_reset(s, ETIMEDOUT);
    return;
  }
  ka_arm(w, s, w->now + (uint64_t)s->ka_intvl_s * 1000000000ull);
}

static void ev_dgram(struct vsri_sim *w, struct seg *g) {
  struct vsri_sim_host *dst = sim_host_by_ip(w, g->to.sin_addr);
  struct sim_sock *s = NULL;
  for (uint32_t i = 0; dst && i < dst->fds_len && !s; i++) {
    struct sim_sock *o = dst->fds[i];
    if (o && o->kind == SK_DGRAM && o->local.sin_port == g->to.sin_port) s = o;
  }
  if (!s || s->err || s->closed || s->rx_dgrams >= w->net.dgram_queue_max ||
      (s->connected && (s->remote.sin_addr.s_addr != g->from.sin_addr.s_addr ||
                        s->remote.sin_port != g->from.sin_port))) {
    w->stats.dgrams_lost++;
    free(g);
    return;
  }
  sim_trace_ev(w, 9, 0, dst->index, g->len);
  g->next = NULL;
  if (s->rx_tail) s->rx_tail->next = g;
  else s->rx_head = g;
  s->rx_tail = g;
  s->rx_dgrams++;
  s->rx_len += g->len;
  w->stats.dgrams++;
  sock_wake(s, true, false);
}

static void sim_deliver(struct vsri_sim *w) {
  while (w->heap_len > 0 && w->heap[0].t <= w->now) {
    struct ev e = ev_pop(w);
    switch (e.kind) {
    case EV_SEG: ev_seg(w, e.s); break;
    case EV_SYN: ev_syn(w, e.s); break;
    case EV_SYNACK: ev_synack(w, e.s, e.res); break;
    case EV_RST: ev_rst(w, e.s); break;
    case EV_KA: ev_ka(w, e.s, e.res); break;
    case EV_DGRAM: ev_dgram(w, e.dg); break;
    default: break;
    }
  }
}

/* ---- faults ------------------------------------------------------------------------------ */

void vsri_sim_crash(struct vsri_sim_host *h) {
  struct vsri_sim *w = h->w;
  sim_trace_ev(w, 103, h->index, 0, 0);
  for (struct sim_sock *s = w->all; s; s = s->all_next) {
    if (s->host != h || s->closed) continue;
    if (s->kind == SK_LISTEN) {
      /* Gone: nothing accepts here any more; a pending accept just stays parked. */
      for (uint32_t i = 0; i < s->backlog_len; i++) send_rst(w, s->backlog[i]);
      s->backlog_len = 0;
      s->err = ECONNRESET;
      continue;
    }
    if (s->kind == SK_OPEN) send_rst(w, s);
    if (s->kind == SK_CONNECTING) {
      s->kind = SK_FAILED;
      s->connect_res = -ECONNRESET;
    }
    sock_reset(s, ECONNRESET);
  }
}

bool vsri_sim_reset_one(struct vsri_sim *w) {
  uint32_t n = 0;
  for (struct sim_sock *s = w->all; s; s = s->all_next) {
    if (s->kind == SK_OPEN && !s->closed && !s->err && s->peer && s->fd >= 0) n++;
  }
  if (n == 0) return false;
  uint32_t k = (uint32_t)vsri_sim_below(w, n);
  for (struct sim_sock *s = w->all; s; s = s->all_next) {
    if (!(s->kind == SK_OPEN && !s->closed && !s->err && s->peer && s->fd >= 0)) continue;
    if (k-- > 0) continue;
    sim_trace_ev(w, 104, s->host->index, s->peer->host->index, 0);
    ev_push(w, w->now, EV_RST, s, 0);
    ev_push(w, w->now + sim_delay(w, s->host, s->peer->host), EV_RST, s->peer, 0);
    return true;
  }
  return false;
}

/* ---- running ----------------------------------------------------------------------------- */

static bool sim_io_busy(const struct vsri_sim *w, const struct sim_io *si) {
  const struct vsri_io *io = si->io;
  return !vsri_list_empty(&si->tries) || !vsri_list_empty(&io->ready) || io->nowait ||
         !vsri_list_empty(&io->deferred) ||
         (io->timers_len > 0 && io->timers[0]->u.timeout.deadline_ns <= w->now);
}

int vsri_sim_run_until(struct vsri_sim *w, uint64_t t) {
  for (;;) {
    uint32_t turns = 0;
    bool any;
    do {
      any = false;
      for (struct sim_io *si = w->ios; si; si = si->next) {
        if (!sim_io_busy(w, si)) continue;
        any = true;
        vsri_io_run(si->io, 0);
        if (++turns > SIM_TURNS_MAX) return VSR_ELIMIT;
      }
    } while (any);
    uint64_t next = UINT64_MAX;
    if (w->heap_len > 0) next = w->heap[0].t;
    for (struct sim_io *si = w->ios; si; si = si->next) {
      const struct vsri_io *io = si->io;
      if (io->timers_len > 0 && io->timers[0]->u.timeout.deadline_ns < next) {
        next = io->timers[0]->u.timeout.deadline_ns;
      }
    }
    if (next > t) {
      if (t > w->now) w->now = t;
      return 0;
    }
    if (next > w->now) w->now = next;
    sim_deliver(w);
  }
}
