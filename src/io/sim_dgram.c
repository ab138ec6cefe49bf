/* The simulator's datagram sockets: sendmsg / recvmsg with addresses, loss, duplication,
 * reordering, and a datagram's arrival (sim_impl.h). */
#include "io/sim_impl.h"

/* ---- datagrams ----------------------------------------------------------------------------- */

static void dgram_launch(struct vsri_sim *w, struct vsri_sim_host *src, struct seg *g) {
  struct vsri_sim_host *dst = vsri_sim_host_by_ip(w, g->to.sin_addr);
  if (!dst || vsri_sim_blocked(w, src, dst) || vsri_sim_chance(w, w->net.dgram_loss_ppm)) {
    w->stats.dgrams_lost++;
    free(g);
    return;
  }
  uint64_t t = w->now + vsri_sim_delay(w, src, dst);
  if (vsri_sim_chance(w, w->net.dgram_dup_ppm)) {
    struct seg *d = malloc(sizeof *d + g->len);
    if (!d) abort();
    memcpy(d, g, sizeof *d + g->len);
    w->stats.dgrams_duplicated++;
    vsri_sim_ev_push_dgram(w, w->now + vsri_sim_delay(w, src, dst), d);
  }
  vsri_sim_ev_push_dgram(w, t, g);
}

int32_t vsri_sim_op_sendmsg(struct vsri_sim *w, struct sim_sock *s, const struct msghdr *m) {
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
  if (!s->local.sin_port) s->local.sin_port = vsri_sim_host_port(s->host);
  size_t len = vsri_sim_iov_total(m->msg_iov, (int)m->msg_iovlen);
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

int32_t vsri_sim_op_recvmsg(struct sim_sock *s, struct msghdr *m) {
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

void vsri_sim_dgram_connect(struct sim_sock *s, const struct sockaddr_in *to) {
  memcpy(&s->remote, to, sizeof s->remote);
  s->connected = true;
  if (!s->local.sin_port) s->local.sin_port = vsri_sim_host_port(s->host);
}

/* Tries |c| once: its result, or -EAGAIN to park. */

void vsri_sim_ev_dgram(struct vsri_sim *w, struct seg *g) {
  struct vsri_sim_host *dst = vsri_sim_host_by_ip(w, g->to.sin_addr);
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
  vsri_sim_trace_ev(w, 9, 0, dst->index, g->len);
  g->next = NULL;
  if (s->rx_tail) s->rx_tail->next = g;
  else s->rx_head = g;
  s->rx_tail = g;
  s->rx_dgrams++;
  s->rx_len += g->len;
  w->stats.dgrams++;
  vsri_sim_sock_wake(s, true, false);
}
