/* QUIC transport: quic_ep.c.
 * UDP endpoint: one socket, its receive path (a vsri_io_recvmsg completion, then a bounded drain
 * of vsri_io_recvmsg_now receives, UDP_GRO batches split into packets) and its send path (UDP GSO
 * bursts sent at once with vsri_io_sendmsg_now; a burst the socket refuses is parked on a
 * vsri_io_sendmsg completion and connections wait behind it). Every datagram goes through the
 * io layer (io.h's datagram contract), so a simulated backend can carry QUIC. */
#include "transport/quic/quic_impl.h"

/* ---- UDP endpoint ---------------------------------------------------------------------- */

static void q_ep_rx_done(struct vsri_io *io, struct vsri_completion *rc, int32_t res);
static void q_ep_tx_done(struct vsri_io *io, struct vsri_completion *tc, int32_t res);

static void q_sockbuf(struct vsri_io *io, int fd, int opt_force, int opt) {
  int v = Q_SOCKBUF;
  if (vsri_io_setsockopt(io, fd, SOL_SOCKET, opt_force, &v, sizeof v) < 0) {
    vsri_io_setsockopt(io, fd, SOL_SOCKET, opt, &v, sizeof v);
  }
}

/* Opens the socket through the io layer (real syscalls on epoll / io_uring, a virtual socket in
 * the simulator, which refuses GSO / GRO like an old kernel): bound (listener) or connected
 * (dialer). Returns 0, VSR_EIO (no socket), VSR_EADDRINUSE / VSR_EBIND (listener),
 * VSR_EUNREACH / ... (dialer) or VSR_ENOMEM; logged. */
int q_ep_open(struct q_ep *ep, struct vsri_io *io, const struct sockaddr *sa,
              socklen_t len, bool server, const struct vsri_quic_config *cfg,
              const char *text, const struct vsri_transport_ctx *ctx) {
  ep->io = io;
  vsri_list_init(&ep->waiters);
  ep->fd = vsri_io_socket(io, sa->sa_family, SOCK_DGRAM);
  if (ep->fd < 0) {
    VSRI_ERROR("VSR-QUIC", "%s quic: socket: %s", text, strerror(-ep->fd));
    ep->fd = -1;
    return VSR_EIO;
  }
  q_sockbuf(io, ep->fd, SO_RCVBUFFORCE, SO_RCVBUF);
  q_sockbuf(io, ep->fd, SO_SNDBUFFORCE, SO_SNDBUF);
  /* Shards: the SO_REUSEPORT group and its routing program (quic_shard.c). */
  int r = server ? q_reuseport_join(io, ep->fd, sa, len, ctx) : 0;
  const char *what = !server ? "connect" : r == 0 ? "bind" : "SO_REUSEPORT";
  if (r == -EADDRINUSE) what = "bind (shards share a port only among themselves)";
  if (r == 0) r = server ? vsri_io_bind(io, ep->fd, sa, len) : vsri_io_connect_dgram(io, ep->fd, sa, len);
  if (r == 0 && server && (r = q_reuseport_route(io, ep->fd, ctx)) < 0) what = "SO_ATTACH_REUSEPORT_CBPF";
  ep->local_len = sizeof ep->local;
  if (r == 0) r = vsri_io_getsockname(io, ep->fd, (struct sockaddr *)&ep->local, &ep->local_len);
  if (r < 0) {
    int err = -r;
    VSRI_ERROR("VSR-QUIC", "%s quic: %s: %s", text, what, strerror(err));
    vsri_io_close_now(io, ep->fd);
    ep->fd = -1;
    return server ? vsri_bind_reason(err) : vsri_sock_reason(err);
  }
  ep->connected = !server;
  /* DF on every datagram, never fragmented here, the route's learned PMTU not applied: PMTUD
   * probes (ngtcp2) are then only acknowledged if they crossed the path whole (RFC 8899). A
   * datagram over the local MTU fails with EMSGSIZE and counts as lost. */
  int probe = sa->sa_family == AF_INET6 ? IPV6_PMTUDISC_PROBE : IP_PMTUDISC_PROBE;
  int lvl = sa->sa_family == AF_INET6 ? IPPROTO_IPV6 : IPPROTO_IP;
  int opt = sa->sa_family == AF_INET6 ? IPV6_MTU_DISCOVER : IP_MTU_DISCOVER;
  int pr = vsri_io_setsockopt(io, ep->fd, lvl, opt, &probe, sizeof probe);
  if (pr < 0) VSRI_DEBUG("VSR-QUIC", "%s quic: MTU_DISCOVER: %s", text, strerror(-pr));
  int zero = 0, one = 1;
  bool batch = !cfg->unbatched;
  ep->gso = batch && !cfg->no_gso &&
            vsri_io_setsockopt(io, ep->fd, SOL_UDP, UDP_SEGMENT, &zero, sizeof zero) == 0;
  ep->gro = batch && !cfg->no_gro &&
            vsri_io_setsockopt(io, ep->fd, SOL_UDP, UDP_GRO, &one, sizeof one) == 0;
  ep->rx_buf = vsri_aligned_alloc(64, Q_BUF);
  if (!ep->rx_buf) {
    vsri_io_close_now(io, ep->fd);
    ep->fd = -1;
    return VSR_ENOMEM;
  }
  return 0;
}

/* The block goes once the kernel answered the canceled receive and send (io.h, "Letting go":
 * the kernel may write into rx_buf and read tx_park until then). */
static void q_ep_free(void *arg) {
  struct q_ep *ep = arg;
  vsri_free(ep->rx_buf);
  vsri_free(ep->tx_park);
  ep->rx_buf = ep->tx_park = NULL;
  if (ep->on_free) ep->on_free(ep);
}

/* Closes the socket now and hands the endpoint to the io layer. */
static void q_ep_let_go(struct q_ep *ep) {
  if (ep->gone) return;
  ep->gone = true;
  struct vsri_io *io = ep->io;
  int fd = ep->fd;
  ep->fd = -1;
  struct vsri_completion *cs[] = {&ep->rx_c, &ep->tx_c, &ep->close_c};
  vsri_io_release(io, &ep->grave, cs, sizeof cs / sizeof cs[0], q_ep_free, ep);
  vsri_io_close_now(io, fd);
}

static void q_ep_maybe_free(struct q_ep *ep) {
  if (ep->dead && !ep->in_rx) q_ep_let_go(ep);
}

/* The owner is done with the endpoint: closed now (or when the receive callback on the stack
 * returns), freed once the kernel is done with its buffers. Never needs a loop turn. */
void q_ep_kill(struct q_ep *ep) {
  ep->dead = true;
  q_ep_maybe_free(ep);
}

static void q_ep_rx_prep(struct q_ep *ep) {
  ep->rx_iov.iov_base = ep->rx_buf;
  ep->rx_iov.iov_len = Q_BUF;
  memset(&ep->rx_msg, 0, sizeof ep->rx_msg);
  ep->rx_msg.msg_name = &ep->rx_from;
  ep->rx_msg.msg_namelen = sizeof ep->rx_from;
  ep->rx_msg.msg_iov = &ep->rx_iov;
  ep->rx_msg.msg_iovlen = 1;
  ep->rx_msg.msg_control = ep->rx_ctl;
  ep->rx_msg.msg_controllen = sizeof ep->rx_ctl;
}

void q_ep_rx_arm(struct q_ep *ep) {
  if (ep->dead || ep->rx_c.pending) return;
  q_ep_rx_prep(ep);
  vsri_io_recvmsg(ep->io, &ep->rx_c, ep->fd, &ep->rx_msg, 0, q_ep_rx_done, ep);
}

/* Splits one received datagram (or GRO batch of equal-size datagrams) into packets. */
static void q_ep_dispatch(struct q_ep *ep, size_t n) {
  if (n == 0 || (ep->rx_msg.msg_flags & MSG_TRUNC)) return;
  q_stats.recv_calls++;
  q_stats.bytes_in += n;
  size_t seg = n;
  for (struct cmsghdr *cm = CMSG_FIRSTHDR(&ep->rx_msg); cm; cm = CMSG_NXTHDR(&ep->rx_msg, cm)) {
    if (cm->cmsg_level == SOL_UDP && cm->cmsg_type == UDP_GRO) {
      int v;
      memcpy(&v, CMSG_DATA(cm), sizeof v);
      if (v > 0) seg = (size_t)v;
    }
  }
  socklen_t fromlen = ep->rx_msg.msg_namelen;
  for (size_t off = 0; off < n && !ep->dead; off += seg) {
    size_t len = n - off < seg ? n - off : seg;
    q_stats.datagrams_in++;
    ep->on_packet(ep, (const struct sockaddr *)&ep->rx_from, fromlen, ep->rx_buf + off, len);
  }
}

static void q_ep_rx_error(struct q_ep *ep, int err) {
  if (err == EAGAIN || err == EWOULDBLOCK || err == EINTR || err == ECANCELED) return;
  if (ep->on_error) ep->on_error(ep, err);
  else VSRI_DEBUG("VSR-QUIC", "quic: recvmsg: %s", strerror(err));
}

static void q_ep_rx_done(struct vsri_io *io, struct vsri_completion *rc, int32_t res) {
  (void)io;
  struct q_ep *ep = rc->ctx;
  if (ep->dead) {
    q_ep_maybe_free(ep);
    return;
  }
  ep->in_rx = true;
  /* Callbacks may run before the loop re-reads its clock after waiting: packets get a fresh
   * receive time (RTT samples and ACK delays depend on it). */
  vsri_io_now_fresh(ep->io);
  if (res >= 0) {
    q_ep_dispatch(ep, (size_t)res);
    /* Drain what else is queued on the socket now, bounded so other fds get their turn. */
    for (int i = 0; i < Q_RX_DRAIN && !ep->dead; i++) {
      q_ep_rx_prep(ep);
      ssize_t r = vsri_io_recvmsg_now(ep->io, ep->fd, &ep->rx_msg, 0);
      if (r < 0) {
        q_ep_rx_error(ep, (int)-r);
        break;
      }
      vsri_io_now_fresh(ep->io);
      q_ep_dispatch(ep, (size_t)r);
    }
  } else {
    q_ep_rx_error(ep, -res);
  }
  ep->in_rx = false;
  if (ep->dead) {
    q_ep_maybe_free(ep);
    return;
  }
  q_ep_rx_arm(ep);
}

static void q_ep_msg(struct msghdr *mh, struct iovec *iov, void *ctl, size_t ctlcap,
                     const struct q_ep *ep, const struct sockaddr *to, socklen_t tolen,
                     const uint8_t *data, size_t len, size_t seg) {
  memset(mh, 0, sizeof *mh);
  iov->iov_base = (void *)data;
  iov->iov_len = len;
  if (!ep->connected) {
    mh->msg_name = (void *)to;
    mh->msg_namelen = tolen;
  }
  mh->msg_iov = iov;
  mh->msg_iovlen = 1;
  if (ep->gso && len > seg) {
    mh->msg_control = ctl;
    mh->msg_controllen = ctlcap;
    struct cmsghdr *cm = CMSG_FIRSTHDR(mh);
    cm->cmsg_level = SOL_UDP;
    cm->cmsg_type = UDP_SEGMENT;
    cm->cmsg_len = CMSG_LEN(sizeof(uint16_t));
    uint16_t s = (uint16_t)seg;
    memcpy(CMSG_DATA(cm), &s, sizeof s);
  }
}

/* Keeps a refused burst and sends it when the socket has room; writers wait behind it. */
static void q_ep_park(struct q_ep *ep, const struct sockaddr *to, socklen_t tolen,
                      const uint8_t *data, size_t len, size_t seg) {
  q_stats.send_blocked++;
  if (ep->tx_c.pending) return; /* already waiting: drop, QUIC recovers it */
  if (!ep->tx_park && !(ep->tx_park = vsri_malloc(Q_BUF))) return;
  if (!ep->gso && len > seg) len = seg;
  memcpy(ep->tx_park, data, len);
  if (to && tolen) memcpy(&ep->tx_to, to, tolen);
  q_ep_msg(&ep->tx_msg, &ep->tx_iov, ep->tx_ctl, sizeof ep->tx_ctl, ep,
           (const struct sockaddr *)&ep->tx_to, tolen, ep->tx_park, len, seg);
  vsri_io_sendmsg(ep->io, &ep->tx_c, ep->fd, &ep->tx_msg, 0, q_ep_tx_done, ep);
}

/* Sends |len| bytes as datagrams of |seg| bytes (the last may be shorter): one sendmsg with
 * UDP_SEGMENT when GSO works, else one per datagram. Loss is left to QUIC. */
void q_ep_send(struct q_ep *ep, const struct sockaddr *to, socklen_t tolen,
               const uint8_t *data, size_t len, size_t seg) {
  if (ep->tx_hook) {
    for (size_t off = 0; off < len; off += seg) {
      ep->tx_hook(ep->tx_hook_user, data + off, len - off < seg ? len - off : seg);
    }
    return;
  }
  size_t off = 0;
  while (off < len) {
    size_t chunk = ep->gso ? len - off : (len - off < seg ? len - off : seg);
    struct msghdr mh;
    struct iovec iov;
    _Alignas(size_t) uint8_t ctl[CMSG_SPACE(sizeof(uint16_t))];
    q_ep_msg(&mh, &iov, ctl, sizeof ctl, ep, to, tolen, data + off, chunk, seg);
    ssize_t sent = vsri_io_sendmsg_now(ep->io, ep->fd, &mh, 0);
    if (sent >= 0) {
      q_stats.send_calls++;
      q_stats.datagrams_out += (chunk + seg - 1) / seg;
      q_stats.bytes_out += chunk;
      off += chunk;
      continue;
    }
    int err = (int)-sent;
    if (err == EINTR) continue;
    if (err == EAGAIN || err == EWOULDBLOCK || err == ENOBUFS) {
      q_ep_park(ep, to, tolen, data + off, len - off, seg);
      return;
    }
    if (ep->gso && (err == EIO || err == EINVAL) && chunk > seg) {
      VSRI_INFO("VSR-QUIC", "quic: UDP GSO send failed (%s); sending datagrams one by one",
                strerror(err));
      ep->gso = false;
      continue;
    }
    if (ep->on_error) ep->on_error(ep, err);
    else VSRI_DEBUG("VSR-QUIC", "quic: sendmsg: %s", strerror(err));
    off += chunk;
  }
}

bool q_ep_blocked(const struct q_ep *ep) { return ep->tx_c.pending; }

void q_ep_wait(struct q_ep *ep, struct q_conn *c) {
  if (!vsri_list_linked(&c->wait_link)) vsri_list_push_back(&ep->waiters, &c->wait_link);
}

void q_ep_unwait(struct q_ep *ep, struct q_conn *c) {
  (void)ep;
  if (vsri_list_linked(&c->wait_link)) vsri_list_remove(&c->wait_link);
}

static void q_ep_tx_done(struct vsri_io *io, struct vsri_completion *tc, int32_t res) {
  (void)io;
  struct q_ep *ep = tc->ctx;
  if (res < 0 && res != -ECANCELED) VSRI_DEBUG("VSR-QUIC", "quic: parked send: %s", strerror(-res));
  if (ep->dead) {
    q_ep_maybe_free(ep);
    return;
  }
  struct vsri_list_node *n;
  while ((n = vsri_list_pop_front(&ep->waiters))) {
    q_conn_schedule(vsri_container_of(n, struct q_conn, wait_link));
  }
}
