/* The simulator's world: its randomness and trace hash, hosts, the event heap, paths
 * (delays, partitions, clogs), faults and the run loop (sim.h, sim_impl.h). */
#include "io/sim_impl.h"

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

bool vsri_sim_chance(struct vsri_sim *w, uint32_t ppm) {
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

void vsri_sim_trace_ev(struct vsri_sim *w, uint32_t kind, uint32_t a, uint32_t b, uint64_t n) {
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

void vsri_sim_rx_clear(struct sim_sock *s) {
  seg_free_all(s->rx_head);
  s->rx_head = s->rx_tail = NULL;
  s->rx_len = 0;
  s->rx_dgrams = 0;
}

void vsri_sim_sock_release_buffers(struct sim_sock *s) {
  seg_free_all(s->tx_head);
  s->tx_head = s->tx_tail = NULL;
  s->tx_bytes = 0;
  vsri_sim_rx_clear(s);
  free(s->backlog);
  s->backlog = NULL;
  s->backlog_len = s->backlog_cap = 0;
}

void vsri_sim_del(struct vsri_sim *w) {
  if (!w) return;
  struct sim_sock *s = w->all;
  while (s) {
    struct sim_sock *nx = s->all_next;
    vsri_sim_sock_release_buffers(s);
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

struct vsri_sim_host *vsri_sim_host_by_ip(struct vsri_sim *w, struct in_addr ip) {
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

void vsri_sim_ev_push(struct vsri_sim *w, uint64_t t, uint8_t kind, struct sim_sock *s, int res) {
  ev_insert(w, (struct ev){.t = t, .seq = w->seq++, .kind = kind, .s = s, .res = res});
}

void vsri_sim_ev_push_dgram(struct vsri_sim *w, uint64_t t, struct seg *g) {
  ev_insert(w, (struct ev){.t = t, .seq = w->seq++, .kind = EV_DGRAM, .dg = g});
}

struct ev vsri_sim_ev_pop(struct vsri_sim *w) {
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

uint64_t vsri_sim_delay(struct vsri_sim *w, const struct vsri_sim_host *a,
                        const struct vsri_sim_host *b) {
  const struct vsri_sim_net *n = &w->net;
  uint64_t d = n->delay_min_ns + vsri_sim_below(w, 2 * (n->delay_mean_ns - n->delay_min_ns) + 1);
  if (vsri_sim_chance(w, n->tail_ppm)) d += vsri_sim_below(w, n->delay_tail_ns + 1);
  if (w->clog_until[a->index][b->index] > w->now) d += w->clog_ns[a->index][b->index];
  return d;
}

bool vsri_sim_blocked(const struct vsri_sim *w, const struct vsri_sim_host *a,
                      const struct vsri_sim_host *b) {
  return w->blocked[a->index][b->index];
}

void vsri_sim_partition(struct vsri_sim_host *a, struct vsri_sim_host *b, bool both) {
  struct vsri_sim *w = a->w;
  w->blocked[a->index][b->index] = true;
  if (both) w->blocked[b->index][a->index] = true;
  vsri_sim_trace_ev(w, 100, a->index, b->index, both);
}

void vsri_sim_clog(struct vsri_sim_host *a, struct vsri_sim_host *b, uint64_t extra_ns,
                   uint64_t until_ns) {
  struct vsri_sim *w = a->w;
  w->clog_ns[a->index][b->index] = extra_ns;
  w->clog_until[a->index][b->index] = until_ns;
  vsri_sim_trace_ev(w, 101, a->index, b->index, extra_ns);
}

void vsri_sim_heal(struct vsri_sim *w) {
  memset(w->blocked, 0, sizeof w->blocked);
  memset(w->clog_until, 0, sizeof w->clog_until);
  vsri_sim_trace_ev(w, 102, 0, 0, 0);
}


/* ---- faults ------------------------------------------------------------------------------ */

void vsri_sim_crash(struct vsri_sim_host *h) {
  struct vsri_sim *w = h->w;
  vsri_sim_trace_ev(w, 103, h->index, 0, 0);
  for (struct sim_sock *s = w->all; s; s = s->all_next) {
    if (s->host != h || s->closed) continue;
    if (s->kind == SK_LISTEN) {
      /* Gone: nothing accepts here any more; a pending accept just stays parked. */
      for (uint32_t i = 0; i < s->backlog_len; i++) vsri_sim_send_rst(w, s->backlog[i]);
      s->backlog_len = 0;
      s->err = ECONNRESET;
      continue;
    }
    if (s->kind == SK_OPEN) vsri_sim_send_rst(w, s);
    if (s->kind == SK_CONNECTING) {
      s->kind = SK_FAILED;
      s->connect_res = -ECONNRESET;
    }
    vsri_sim_sock_reset(s, ECONNRESET);
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
    vsri_sim_trace_ev(w, 104, s->host->index, s->peer->host->index, 0);
    vsri_sim_ev_push(w, w->now, EV_RST, s, 0);
    vsri_sim_ev_push(w, w->now + vsri_sim_delay(w, s->host, s->peer->host), EV_RST, s->peer, 0);
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
    vsri_sim_deliver(w);
  }
}
