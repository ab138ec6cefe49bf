/* The simulator's network events: SYN, SYN-ACK, segment arrival, RST, keepalive probes, and
 * the dispatch of the next due event (sim_impl.h). */
#include "io/sim_impl.h"

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
  struct vsri_sim_host *dst = vsri_sim_host_by_ip(w, c->remote.sin_addr);
  struct sim_sock *l = sim_listener(dst, c->remote.sin_port);
  bool back_blocked = vsri_sim_blocked(w, dst, c->host);
  uint64_t back = w->now + vsri_sim_delay(w, dst, c->host);
  if (!l || !l->sio || l->backlog_len >= l->backlog_max) {
    if (back_blocked) vsri_sim_ev_push(w, w->now + w->net.connect_timeout_ns, EV_SYNACK, c, -ETIMEDOUT);
    else vsri_sim_ev_push(w, back, EV_SYNACK, c, -ECONNREFUSED);
    vsri_sim_trace_ev(w, 3, c->host->index, dst->index, 0);
    return;
  }
  if (back_blocked) { /* the SYN-ACK is lost: the dialer times out, the half-open is dropped */
    vsri_sim_ev_push(w, w->now + w->net.connect_timeout_ns, EV_SYNACK, c, -ETIMEDOUT);
    return;
  }
  /* The accepted end: no fd until accept() takes it. */
  struct sim_sock *a = vsri_sim_sock_alloc(w, dst);
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
  vsri_sim_sock_wake(l, true, false);
  vsri_sim_ev_push(w, back, EV_SYNACK, c, 0);
  vsri_sim_trace_ev(w, 2, c->host->index, dst->index, 0);
}

static void ev_synack(struct vsri_sim *w, struct sim_sock *c, int res) {
  if (c->closed || c->kind != SK_CONNECTING) return;
  if (res == 0 && (!c->peer || c->peer->closed || c->peer->err)) res = -ECONNRESET;
  if (res == 0) {
    c->kind = SK_OPEN;
    c->tx_last_due = w->now;
    c->last_heard = w->now;
    vsri_sim_ka_arm(w, c, w->now + (uint64_t)c->ka_idle_s * 1000000000ull);
  } else {
    c->kind = SK_FAILED;
    c->connect_res = res;
    if (res == -ECONNREFUSED) w->stats.refused++;
    else w->stats.connect_timeouts++;
  }
  vsri_sim_sock_wake(c, false, true);
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
  if (p && vsri_sim_blocked(w, s->host, p->host)) {
    w->stats.held++;
    g->due = w->now + w->net.rto_ns;
    vsri_sim_tx_arm(w, s);
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
    if (vsri_sim_blocked(w, p->host, s->host)) {
      w->stats.held++;
      g->due = w->now + w->net.rto_ns;
      vsri_sim_tx_arm(w, s);
      return;
    }
    s->tx_head = g->next;
    if (!s->tx_head) s->tx_tail = NULL;
    s->tx_bytes -= g->len;
    free(g);
    if (!s->closed && !s->err) vsri_sim_ev_push(w, w->now + vsri_sim_delay(w, p->host, s->host), EV_RST, s, 0);
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
    vsri_sim_trace_ev(w, g->fin ? 5 : 4, s->host->index, p->host->index, g->len);
    if (g->fin) free(g);
    vsri_sim_sock_wake(p, true, false);
  }
  /* Room in the window: a parked write of |s| may go on. */
  vsri_sim_sock_wake(s, false, true);
  vsri_sim_tx_arm(w, s);
}

static void ev_rst(struct vsri_sim *w, struct sim_sock *s) {
  if (s->closed || s->err) return;
  w->stats.resets++;
  vsri_sim_trace_ev(w, 6, s->host->index, 0, 0);
  if (s->kind == SK_CONNECTING) {
    s->kind = SK_FAILED;
    s->connect_res = -ECONNREFUSED;
  }
  vsri_sim_sock_reset(s, ECONNRESET);
}

/* A keepalive timer: after ka_idle_s of silence, probe; a live peer answers (the link is
 * heard), a gone one answers RST, an unreachable one not at all: ka_cnt probes unanswered,
 * ka_intvl_s apart, and the connection times out. */
static void ev_ka(struct vsri_sim *w, struct sim_sock *s, int gen) {
  if (gen != s->ka_gen) return; /* re-armed since */
  if (!s->ka || s->kind != SK_OPEN || s->closed || s->err || !s->peer) return;
  uint64_t idle = (uint64_t)s->ka_idle_s * 1000000000ull;
  if (s->ka_probes == 0 && w->now < s->last_heard + idle) {
    vsri_sim_ka_arm(w, s, s->last_heard + idle);
    return;
  }
  struct sim_sock *p = s->peer;
  if (!vsri_sim_blocked(w, s->host, p->host) && !vsri_sim_blocked(w, p->host, s->host)) {
    vsri_sim_trace_ev(w, 7, s->host->index, p->host->index, 0);
    if (p->closed || p->err) {
      vsri_sim_ev_push(w, w->now + vsri_sim_delay(w, s->host, p->host) + vsri_sim_delay(w, p->host, s->host),
              EV_RST, s, 0);
      return;
    }
    s->last_heard = w->now;
    s->ka_probes = 0;
    vsri_sim_ka_arm(w, s, w->now + idle);
    return;
  }
  if (++s->ka_probes > s->ka_cnt) {
    vsri_sim_trace_ev(w, 8, s->host->index, p->host->index, 0);
    vsri_sim_sock_reset(s, ETIMEDOUT);
    return;
  }
  vsri_sim_ka_arm(w, s, w->now + (uint64_t)s->ka_intvl_s * 1000000000ull);
}

void vsri_sim_deliver(struct vsri_sim *w) {
  while (w->heap_len > 0 && w->heap[0].t <= w->now) {
    struct ev e = vsri_sim_ev_pop(w);
    switch (e.kind) {
    case EV_SEG: ev_seg(w, e.s); break;
    case EV_SYN: ev_syn(w, e.s); break;
    case EV_SYNACK: ev_synack(w, e.s, e.res); break;
    case EV_RST: ev_rst(w, e.s); break;
    case EV_KA: ev_ka(w, e.s, e.res); break;
    case EV_DGRAM: vsri_sim_ev_dgram(w, e.dg); break;
    default: break;
    }
  }
}
