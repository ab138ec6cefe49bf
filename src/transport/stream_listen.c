/* Stream-socket core, the listener: see stream.h. Accepted sockets go to the transport's
 * |accepted| hook; running out of descriptors or memory never makes the listener spin. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "transport/stream.h"
#include "util/alloc.h"
#include "util/log.h"
#include "vsrbus/error.h"

/* Pause before accepting again when the process is out of descriptors and has no reserve to
 * shed with, or the kernel is out of memory: long enough not to spin, short enough to resume
 * service promptly once descriptors free up. */
#define STREAM_ACCEPT_BACKOFF_NS (100u * 1000 * 1000)

static void stream_accept_next(struct vsri_stream_listener *l);

static void stream_backoff_done(struct vsri_io *io, struct vsri_completion *t, int32_t res) {
  (void)io;
  (void)res;
  struct vsri_stream_listener *l = t->ctx;
  if (!l->closing) stream_accept_next(l);
}

void vsri_stream_close_unserved(int fd) {
  char buf[4096];
  for (int i = 0; i < 16 && recv(fd, buf, sizeof buf, MSG_DONTWAIT) > 0; i++) {
  }
  close(fd);
}

/* Out of descriptors (EMFILE, ENFILE): without a reserve the pending connection would hang in
 * the backlog until the client gives up. Free the reserve, accept the connection, close it at
 * once, take the reserve back. Returns false when that is impossible (no reserve, or the
 * descriptor was taken in between): the caller then pauses accepting. */
static bool stream_accept_shed(struct vsri_stream_listener *l) {
  if (l->reserve_fd < 0) l->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (l->reserve_fd < 0) return false;
  close(l->reserve_fd);
  int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
  int err = fd < 0 ? errno : 0;
  if (fd >= 0) {
    vsri_stream_close_unserved(fd);
    l->starved_shed++;
  }
  l->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  return l->reserve_fd >= 0 && (fd >= 0 || err == EAGAIN || err == ECONNABORTED);
}

/* Accept failed for want of descriptors or memory. One line per episode (the episode ends at
 * the next connection accepted normally); the listener never spins on the error. */
static void stream_accept_starved(struct vsri_io *io, struct vsri_stream_listener *l, int err) {
  bool fds = err == EMFILE || err == ENFILE;
  if (!l->starved) {
    l->starved = err;
    l->starved_shed = 0;
    VSRI_WARN("VSR-ACCEPT", "%s %s: accept: %s; %s until it clears", l->name, l->proto,
              strerror(err),
              fds && l->reserve_fd >= 0 ? "closing new connections at once" : "pausing accepts");
  }
  if (fds && stream_accept_shed(l)) {
    stream_accept_next(l);
    return;
  }
  vsri_io_timeout(io, &l->backoff, STREAM_ACCEPT_BACKOFF_NS, stream_backoff_done, l);
}

static void stream_accept_done(struct vsri_io *io, struct vsri_completion *ac, int32_t res) {
  struct vsri_stream_listener *l = ac->ctx;
  if (res < 0) {
    int err = -res;
    if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
      stream_accept_starved(io, l, err);
      return;
    }
    if (err != ECONNABORTED && err != EINTR) {
      VSRI_WARN("VSR-ACCEPT", "%s %s: accept: %s", l->name, l->proto, strerror(err));
    }
    stream_accept_next(l);
    return;
  }
  if (l->starved) {
    VSRI_INFO("VSR-ACCEPT", "%s %s: accepting again after %s; %llu connection(s) were closed "
              "at once meanwhile", l->name, l->proto, strerror(l->starved),
              (unsigned long long)l->starved_shed);
    l->starved = 0;
    if (l->reserve_fd < 0) l->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  }
  l->accepted(l, res);
  stream_accept_next(l);
}

static void stream_accept_next(struct vsri_stream_listener *l) {
  l->peer_len = sizeof l->peer;
  vsri_io_accept(l->ctx->io, &l->ac, l->fd, &l->peer, &l->peer_len, stream_accept_done, l);
}

void vsri_stream_listener_start(struct vsri_stream_listener *l) { stream_accept_next(l); }

/* Shards: the first socket of an SO_REUSEPORT group would share a port any other process of
 * the same user already listens on with SO_REUSEPORT, silently splitting its clients. So the
 * first one (reuseport 1) checks that the port is free with a plain bind (SO_REUSEADDR, as
 * the real socket: only a listener or a bound socket makes it fail); the shards that join the
 * group (reuseport 2) do not. Returns 0 or -errno (-EADDRINUSE: taken). */
static int stream_reuseport_probe(const struct vsri_transport_ctx *ctx,
                                  const struct sockaddr_storage *sa, socklen_t len) {
  uint16_t port = sa->ss_family == AF_INET6 ? ((const struct sockaddr_in6 *)sa)->sin6_port
                                            : ((const struct sockaddr_in *)sa)->sin_port;
  if (ctx->reuseport != 1 || port == 0) return 0; /* port 0: the kernel picks a free one */
  int probe = vsri_io_socket(ctx->io, sa->ss_family, SOCK_STREAM), one = 1;
  if (probe < 0) return probe;
  vsri_io_setsockopt(ctx->io, probe, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  int err = vsri_io_bind(ctx->io, probe, (const struct sockaddr *)sa, len);
  vsri_io_close_now(ctx->io, probe);
  return err == -EADDRINUSE ? err : 0;
}

int vsri_stream_listen(struct vsri_stream_listener **out, size_t size,
                       const struct vsri_transport_ops *ops, const char *proto,
                       const struct vsri_transport_ctx *ctx, const char *addr,
                       vsri_stream_accepted_fn accepted,
                       void (*on_accept)(void *owner, struct vsri_conn *conn), void *owner) {
  struct sockaddr_storage sa;
  socklen_t len;
  if (vsri_parse_addr(addr, &sa, &len) < 0) {
    VSRI_ERROR("VSR-LISTEN", "%s: cannot parse address '%s': %s", proto, addr,
               vsri_parse_addr_why());
    return VSR_EADDR;
  }
  int err = stream_reuseport_probe(ctx, &sa, len);
  int fd = err ? err : vsri_io_socket(ctx->io, sa.ss_family, SOCK_STREAM), one = 1;
  if (fd < 0 && err == 0) return VSR_EIO;
  if (err == 0) {
    vsri_io_setsockopt(ctx->io, fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (ctx->reuseport) {
      vsri_io_setsockopt(ctx->io, fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    }
    err = vsri_io_bind(ctx->io, fd, (struct sockaddr *)&sa, len);
  }
  if (err == 0) err = vsri_io_listen(ctx->io, fd, 4096);
  if (err < 0) {
    VSRI_ERROR("VSR-LISTEN", "%s: cannot listen on %s: %s", proto, addr, strerror(-err));
    if (fd >= 0) vsri_io_close_now(ctx->io, fd);
    return vsri_bind_reason(-err);
  }
  struct vsri_stream_listener *l = vsri_calloc(1, size);
  if (!l) {
    vsri_io_close_now(ctx->io, fd);
    return VSR_ENOMEM;
  }
  l->base.ops = ops;
  l->ctx = ctx;
  l->proto = proto;
  l->fd = fd;
  l->accepted = accepted;
  l->on_accept = on_accept;
  l->owner = owner;
  l->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC); /* -1: accepts pause instead */
  len = sizeof sa;
  vsri_io_getsockname(ctx->io, fd, (struct sockaddr *)&sa, &len);
  vsri_format_addr((struct sockaddr *)&sa, l->name, sizeof l->name);
  *out = l;
  return 0;
}

void vsri_stream_op_listener_addr(const struct vsri_listener *b, char *buf, size_t len) {
  snprintf(buf, len, "%s", vsri_container_of(b, const struct vsri_stream_listener, base)->name);
}

static void stream_listener_free(void *arg) { vsri_free(arg); }

/* Synchronous: the socket closes now; the memory goes once a canceled accept in the kernel
 * has answered (at once on epoll). */
void vsri_stream_op_listener_close(struct vsri_listener *b) {
  struct vsri_stream_listener *l = vsri_container_of(b, struct vsri_stream_listener, base);
  if (l->closing) return;
  l->closing = true;
  struct vsri_io *io = l->ctx->io;
  int fd = l->fd;
  vsri_io_timeout_drop(io, &l->backoff);
  if (l->on_close) l->on_close(l);
  if (l->reserve_fd >= 0) close(l->reserve_fd);
  l->reserve_fd = -1;
  struct vsri_completion *cs[] = {&l->ac};
  vsri_io_release(io, &l->grave, cs, 1, stream_listener_free, l);
  vsri_io_close_now(io, fd);
}
