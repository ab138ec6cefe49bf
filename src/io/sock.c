/* Socket setup for the kernel backends (epoll, io_uring): plain syscalls, -errno on failure,
 * and the dispatch of vsri_io_socket & co. to the backend's sockops (the simulator has its
 * own). */
#include <errno.h>
#include <sys/socket.h>

#include "io/io_impl.h"

static int sk_ret(int r) { return r < 0 ? -errno : r; }

static int sk_socket(struct vsri_io *io, int family, int type) {
  (void)io;
  return sk_ret(socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
}

static int sk_bind(struct vsri_io *io, int fd, const struct sockaddr *addr, socklen_t len) {
  (void)io;
  return sk_ret(bind(fd, addr, len));
}

static int sk_listen(struct vsri_io *io, int fd, int backlog) {
  (void)io;
  return sk_ret(listen(fd, backlog));
}

static int sk_setsockopt(struct vsri_io *io, int fd, int level, int name, const void *val,
                         socklen_t len) {
  (void)io;
  return sk_ret(setsockopt(fd, level, name, val, len));
}

static int sk_getsockname(struct vsri_io *io, int fd, struct sockaddr *addr, socklen_t *len) {
  (void)io;
  return sk_ret(getsockname(fd, addr, len));
}

static int sk_shutdown(struct vsri_io *io, int fd, int how) {
  (void)io;
  return sk_ret(shutdown(fd, how));
}

static int sk_connect_dgram(struct vsri_io *io, int fd, const struct sockaddr *addr,
                            socklen_t len) {
  (void)io;
  return sk_ret(connect(fd, addr, len));
}

const struct vsri_io_sockops vsri_io_sockops_posix = {
    .socket = sk_socket,
    .bind = sk_bind,
    .listen = sk_listen,
    .setsockopt = sk_setsockopt,
    .getsockname = sk_getsockname,
    .shutdown = sk_shutdown,
    .connect_dgram = sk_connect_dgram,
    .close_now = NULL, /* vsri_io_close_now (loop.c) closes kernel fds itself */
};

static const struct vsri_io_sockops *sk_ops(const struct vsri_io *io) {
  return io->backend->sock ? io->backend->sock : &vsri_io_sockops_posix;
}

int vsri_io_socket(struct vsri_io *io, int family, int type) {
  return sk_ops(io)->socket(io, family, type);
}

int vsri_io_bind(struct vsri_io *io, int fd, const struct sockaddr *addr, socklen_t len) {
  return sk_ops(io)->bind(io, fd, addr, len);
}

int vsri_io_listen(struct vsri_io *io, int fd, int backlog) {
  return sk_ops(io)->listen(io, fd, backlog);
}

int vsri_io_setsockopt(struct vsri_io *io, int fd, int level, int name, const void *val,
                       socklen_t len) {
  return sk_ops(io)->setsockopt(io, fd, level, name, val, len);
}

int vsri_io_getsockname(struct vsri_io *io, int fd, struct sockaddr *addr, socklen_t *len) {
  return sk_ops(io)->getsockname(io, fd, addr, len);
}

int vsri_io_shutdown(struct vsri_io *io, int fd, int how) {
  return sk_ops(io)->shutdown(io, fd, how);
}

int vsri_io_connect_dgram(struct vsri_io *io, int fd, const struct sockaddr *addr,
                          socklen_t len) {
  return sk_ops(io)->connect_dgram(io, fd, addr, len);
}
