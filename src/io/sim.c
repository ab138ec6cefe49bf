/* The simulated io backend (sim.h): the vsri_io_backend ops and socket setup calls of a loop
 * on a simulated host; it tries each submitted operation from poll() and parks the ones that
 * must wait on their socket. The packet simulator lives in sim_world.c, sim_stream.c,
 * sim_dgram.c and sim_net.c (overview in sim_impl.h). */
#include "io/sim_impl.h"

static int32_t sim_attempt(struct sim_io *si, struct vsri_completion *c) {
  struct vsri_sim *w = si->w;
  struct sim_sock *s = vsri_sim_fd(si, c->fd);
  if (!s) return -EBADF;
  switch (c->op) {
  case VSRI_OP_ACCEPT: return vsri_sim_op_accept(si, s, c);
  case VSRI_OP_CONNECT:
    if (s->kind == SK_DGRAM) { /* a UDP connect only fixes the peer */
      vsri_sim_dgram_connect(s, (const struct sockaddr_in *)&c->u.connect.addr);
      return 0;
    }
    return vsri_sim_op_connect(w, s, c);
  case VSRI_OP_RECV: return vsri_sim_op_recv(w, s, c->u.recv.buf, c->u.recv.len);
  case VSRI_OP_RECV_POOLED:
    c->u.recv.buf = si->pooled;
    return vsri_sim_op_recv(w, s, si->pooled, c->u.recv.len);
  case VSRI_OP_SENDV: return vsri_sim_op_sendv(w, s, c->u.sendv.iov, c->u.sendv.iovcnt);
  case VSRI_OP_CLOSE: return vsri_sim_op_close(si, s);
  case VSRI_OP_SENDMSG: return vsri_sim_op_sendmsg(w, s, c->u.msg.msg);
  case VSRI_OP_RECVMSG: return vsri_sim_op_recvmsg(s, c->u.msg.msg);
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
      struct sim_sock *s = vsri_sim_fd(si, c->fd);
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
  si->pooled = malloc(io->opts.pooled_big_size); /* >= pooled_buf_size: both read sizes */
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
      vsri_sim_op_close(si, s);
    }
  }
  free(si->pooled);
  free(si);
}

static void sim_submit(struct vsri_io *io, struct vsri_completion *c) {
  vsri_sim_try_later(io->backend_data, c);
}

static void sim_cancel(struct vsri_io *io, struct vsri_completion *c) {
  struct sim_io *si = io->backend_data;
  if (c->backend_tag & SIM_ON_TRIES) {
    c->backend_tag &= ~(uint32_t)SIM_ON_TRIES;
    vsri_list_remove(&c->link);
    vsri_io_post(io, c, -ECANCELED);
    return;
  }
  struct sim_sock *s = vsri_sim_fd(si, c->fd);
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
    struct sim_sock *s = vsri_sim_sock_new(io->backend_data);
    s->kind = SK_DGRAM;
    return s->fd;
  }
  if ((type & 0xf) != SOCK_STREAM) return -EPROTONOSUPPORT;
  return vsri_sim_sock_new(io->backend_data)->fd;
}

static int sk_bind(struct vsri_io *io, int fd, const struct sockaddr *addr, socklen_t len) {
  struct sim_io *si = io->backend_data;
  struct sim_sock *s = vsri_sim_fd(si, fd);
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
  s->local.sin_port = a->sin_port ? a->sin_port : vsri_sim_host_port(si->h);
  return 0;
}

static int sk_listen(struct vsri_io *io, int fd, int backlog) {
  struct sim_sock *s = vsri_sim_fd(io->backend_data, fd);
  if (!s) return -EBADF;
  if (!s->local.sin_port) s->local.sin_port = vsri_sim_host_port(s->host);
  s->kind = SK_LISTEN;
  s->backlog_max = backlog > 0 ? (uint32_t)backlog : 1;
  return 0;
}

static int sk_setsockopt(struct vsri_io *io, int fd, int level, int name, const void *val,
                         socklen_t len) {
  struct sim_io *si = io->backend_data;
  struct sim_sock *s = vsri_sim_fd(si, fd);
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
  vsri_sim_ka_arm(si->w, s, s->last_heard + (uint64_t)s->ka_idle_s * 1000000000ull);
  return 0;
}

static int sk_getsockname(struct vsri_io *io, int fd, struct sockaddr *addr, socklen_t *len) {
  struct sim_sock *s = vsri_sim_fd(io->backend_data, fd);
  if (!s) return -EBADF;
  socklen_t n = *len < sizeof s->local ? *len : sizeof s->local;
  memcpy(addr, &s->local, n);
  *len = sizeof s->local;
  return 0;
}

static int sk_shutdown(struct vsri_io *io, int fd, int how) {
  struct sim_io *si = io->backend_data;
  struct sim_sock *s = vsri_sim_fd(si, fd);
  if (!s) return -EBADF;
  if (s->kind != SK_OPEN) return -ENOTCONN;
  if ((how == SHUT_WR || how == SHUT_RDWR) && !s->wr_shut && !s->err) {
    s->wr_shut = true;
    vsri_sim_tx_push(si->w, s, NULL, 0, true);
  }
  return 0;
}

static int sk_connect_dgram(struct vsri_io *io, int fd, const struct sockaddr *addr,
                            socklen_t len) {
  struct sim_sock *s = vsri_sim_fd(io->backend_data, fd);
  if (!s) return -EBADF;
  if (s->kind != SK_DGRAM) return -EOPNOTSUPP;
  const struct sockaddr_in *a = (const struct sockaddr_in *)addr;
  if (len < sizeof *a || a->sin_family != AF_INET) return -EAFNOSUPPORT;
  vsri_sim_dgram_connect(s, a);
  return 0;
}

static int sk_close_now(struct vsri_io *io, int fd) { /* vsri_io_close_now */
  struct sim_io *si = io->backend_data;
  struct sim_sock *s = vsri_sim_fd(si, fd);
  if (!s) return -EBADF;
  return vsri_sim_op_close(si, s);
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
  struct sim_sock *s = vsri_sim_fd(io->backend_data, fd);
  return s ? vsri_sim_op_recvmsg(s, msg) : -EBADF;
}

static ssize_t sim_sendmsg_now(struct vsri_io *io, int fd, const struct msghdr *msg, int flags) {
  (void)flags;
  struct sim_io *si = io->backend_data;
  struct sim_sock *s = vsri_sim_fd(si, fd);
  return s ? vsri_sim_op_sendmsg(si->w, s, msg) : -EBADF;
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
