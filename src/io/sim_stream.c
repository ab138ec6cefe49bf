/* The simulator's stream sockets: descriptors, windows, segments, and the stream operations
 * (send, receive, accept, connect, close) a loop tries (sim_impl.h). */
#include "io/sim_impl.h"

/* ---- loops and their operations ---------------------------------------------------------- */

struct sim_sock *vsri_sim_fd(struct sim_io *si, int fd) {
  uint32_t i = (uint32_t)(fd - SIM_FD_BASE);
  if (fd < SIM_FD_BASE || i >= si->h->fds_len) return NULL;
  return si->h->fds[i];
}

/* Queues |c| to be tried by its loop's next poll. */
void vsri_sim_try_later(struct sim_io *si, struct vsri_completion *c) {
  c->backend_tag |= SIM_ON_TRIES;
  vsri_list_push_back(&si->tries, &c->link);
}

/* A parked operation of |s| may now finish: try it again. */
void vsri_sim_sock_wake(struct sim_sock *s, bool rd, bool wr) {
  if (!s->sio) return;
  if (rd && s->rd) {
    struct vsri_completion *c = s->rd;
    s->rd = NULL;
    vsri_sim_try_later(s->sio, c);
  }
  if (wr && s->wr) {
    struct vsri_completion *c = s->wr;
    s->wr = NULL;
    vsri_sim_try_later(s->sio, c);
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
struct sim_sock *vsri_sim_sock_alloc(struct vsri_sim *w, struct vsri_sim_host *h) {
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

struct sim_sock *vsri_sim_sock_new(struct sim_io *si) {
  struct sim_sock *s = vsri_sim_sock_alloc(si->w, si->h);
  sock_fd_alloc(si, s);
  return s;
}

uint16_t vsri_sim_host_port(struct vsri_sim_host *h) {
  uint16_t p = h->next_port++;
  if (h->next_port == 0) h->next_port = SIM_PORT_FIRST;
  return htons(p);
}

/* Arms the event of |s|'s head segment. */
void vsri_sim_tx_arm(struct vsri_sim *w, struct sim_sock *s) {
  if (s->tx_armed || !s->tx_head) return;
  s->tx_armed = true;
  uint64_t t = s->tx_head->due > w->now ? s->tx_head->due : w->now;
  vsri_sim_ev_push(w, t, EV_SEG, s, 0);
}

/* Arms |s|'s keepalive timer: the first probe after ka_idle_s of silence. */
void vsri_sim_ka_arm(struct vsri_sim *w, struct sim_sock *s, uint64_t at) {
  if (!s->ka || s->kind != SK_OPEN || s->closed || s->err) return;
  vsri_sim_ev_push(w, at > w->now ? at : w->now, EV_KA, s, ++s->ka_gen);
}

void vsri_sim_tx_push(struct vsri_sim *w, struct sim_sock *s, const uint8_t *p, uint32_t len,
                      bool fin) {
  struct seg *g = malloc(sizeof *g + len);
  if (!g) abort();
  if (len) memcpy(g->data, p, len);
  g->next = NULL;
  g->len = len;
  g->off = 0;
  g->fin = fin;
  uint64_t due = w->now + (s->peer ? vsri_sim_delay(w, s->host, s->peer->host) : 0);
  if (due < s->tx_last_due) due = s->tx_last_due;
  s->tx_last_due = due;
  g->due = due;
  if (s->tx_tail) s->tx_tail->next = g;
  else s->tx_head = g;
  s->tx_tail = g;
  s->tx_bytes += len;
  vsri_sim_tx_arm(w, s);
}

/* |s| is reset: pending and later operations fail, buffered bytes are gone. */
void vsri_sim_sock_reset(struct sim_sock *s, int err) {
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
  vsri_sim_rx_clear(s);
  vsri_sim_sock_wake(s, true, true);
  /* Its unread bytes are gone: the peer's window opens (a zero-window probe would now be
   * answered, with RST). */
  if (s->peer) vsri_sim_sock_wake(s->peer, false, true);
}

/* Sends RST from |s| to its peer (lost if the path is blocked). */
void vsri_sim_send_rst(struct vsri_sim *w, struct sim_sock *s) {
  struct sim_sock *p = s->peer;
  if (!p || p->closed || p->err) return;
  if (vsri_sim_blocked(w, s->host, p->host)) return;
  vsri_sim_ev_push(w, w->now + vsri_sim_delay(w, s->host, p->host), EV_RST, p, 0);
}

size_t vsri_sim_iov_total(const struct iovec *iov, int n) {
  size_t t = 0;
  for (int i = 0; i < n; i++) t += iov[i].iov_len;
  return t;
}

int32_t vsri_sim_op_sendv(struct vsri_sim *w, struct sim_sock *s, const struct iovec *iov,
                          int iovcnt) {
  if (s->err) return -s->err;
  if (s->kind != SK_OPEN) return -ENOTCONN;
  if (s->wr_shut) return -EPIPE;
  uint64_t used = s->tx_bytes + (s->peer ? s->peer->rx_len : 0);
  size_t room = used < s->window ? s->window - used : 0;
  size_t want = vsri_sim_iov_total(iov, iovcnt);
  if (want == 0) return 0;
  if (room == 0) {
    w->stats.would_block++;
    return -EAGAIN;
  }
  size_t n = want < room ? want : room;
  if (n > 1 && vsri_sim_chance(w, w->net.partial_write_ppm)) {
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
    vsri_sim_tx_push(w, s, tmp, (uint32_t)seg, false);
    left -= seg;
  }
  free(tmp);
  return (int32_t)n;
}

int32_t vsri_sim_op_recv(struct vsri_sim *w, struct sim_sock *s, uint8_t *buf, size_t len) {
  if (s->rx_len > 0) {
    size_t n = len < s->rx_len ? len : s->rx_len;
    if (n > 1 && vsri_sim_chance(w, w->net.short_read_ppm)) {
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
    if (s->peer) vsri_sim_sock_wake(s->peer, false, true); /* room in the peer's window */
    return (int32_t)n;
  }
  if (s->err) return -s->err;
  if (s->rx_eof) return 0;
  if (s->kind != SK_OPEN) return s->kind == SK_FAILED ? -ENOTCONN : -EAGAIN;
  return -EAGAIN;
}

int32_t vsri_sim_op_accept(struct sim_io *si, struct sim_sock *l, struct vsri_completion *c) {
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

int32_t vsri_sim_op_connect(struct vsri_sim *w, struct sim_sock *s, struct vsri_completion *c) {
  if (s->kind == SK_OPEN) return 0;
  if (s->kind == SK_FAILED) return s->connect_res;
  if (s->kind == SK_CONNECTING) return -EAGAIN;
  if (s->kind != SK_NEW) return -EINVAL;
  const struct sockaddr_in *to = (const struct sockaddr_in *)&c->u.connect.addr;
  if (to->sin_family != AF_INET) return -EAFNOSUPPORT;
  if (!s->local.sin_port) s->local.sin_port = vsri_sim_host_port(s->host);
  s->remote = *to;
  s->kind = SK_CONNECTING;
  w->stats.connects++;
  struct vsri_sim_host *dst = vsri_sim_host_by_ip(w, to->sin_addr);
  if (!dst) {
    vsri_sim_ev_push(w, w->now + w->net.connect_timeout_ns, EV_SYNACK, s, -ENETUNREACH);
  } else if (vsri_sim_blocked(w, s->host, dst)) {
    vsri_sim_ev_push(w, w->now + w->net.connect_timeout_ns, EV_SYNACK, s, -ETIMEDOUT);
  } else {
    vsri_sim_ev_push(w, w->now + vsri_sim_delay(w, s->host, dst), EV_SYN, s, 0);
  }
  return -EAGAIN;
}

int32_t vsri_sim_op_close(struct sim_io *si, struct sim_sock *s) {
  struct vsri_sim *w = si->w;
  si->h->fds[s->fd - SIM_FD_BASE] = NULL;
  s->sio = NULL;
  s->rd = s->wr = NULL;
  if (s->kind == SK_LISTEN) {
    /* Connections never accepted are reset. */
    for (uint32_t i = 0; i < s->backlog_len; i++) {
      struct sim_sock *child = s->backlog[i];
      vsri_sim_send_rst(w, child);
      child->closed = true;
      vsri_sim_sock_release_buffers(child);
    }
    s->backlog_len = 0;
  } else if (s->kind == SK_OPEN && !s->err) {
    if (s->rx_len > 0) {
      vsri_sim_send_rst(w, s); /* unread input: the kernel resets, as Linux does */
      s->closed = true;
      vsri_sim_sock_release_buffers(s);
      return 0;
    }
    if (!s->wr_shut) {
      s->wr_shut = true;
      vsri_sim_tx_push(w, s, NULL, 0, true);
    }
  }
  s->closed = true;
  if (s->peer) vsri_sim_sock_wake(s->peer, false, true); /* its window opens: writes go on, into RST */
  /* Segments still queued keep flowing to the peer (a FIN after the last byte). */
  vsri_sim_rx_clear(s);
  return 0;
}
