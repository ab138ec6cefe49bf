/* TCP transport: frames over a byte stream, the stream-socket core (stream.h) with no layer.
 * The core's plain path reads into a loop-owned buffer fed to the streaming decoder (large
 * bodies straight into their frame buffer) and drains the owner's queue with one vectored
 * write of up to max_batch frames at the loop's before-poll point; its graceful close never
 * loses a written byte (stream.c). */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include "transport/stream.h"
#include "transport/transport.h"
#include "util/log.h"
#include "vsrbus/error.h"

/* Keepalive probes find a dead peer on an idle connection; TCP_USER_TIMEOUT bounds how long
 * written data may stay unacknowledged. Failures are harmless (the socket works without). */
void vsri_tcp_liveness(struct vsri_io *io, int fd, uint64_t keepalive_ns,
                       uint64_t user_timeout_ns) {
  if (keepalive_ns) {
    int on = 1;
    int idle = (int)(keepalive_ns / 1000000000ull);
    if (idle < 1) idle = 1;
    int intvl = idle / 3 > 0 ? idle / 3 : 1, cnt = 3;
    vsri_io_setsockopt(io, fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
    vsri_io_setsockopt(io, fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    vsri_io_setsockopt(io, fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
    vsri_io_setsockopt(io, fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
  }
  if (user_timeout_ns) {
    unsigned ms = user_timeout_ns / 1000000u > 0xffffffffu ? 0xffffffffu
                                                           : (unsigned)(user_timeout_ns / 1000000u);
    if (ms == 0) ms = 1;
    vsri_io_setsockopt(io, fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ms, sizeof ms);
  }
}

static int tcp_connect(struct vsri_conn **out, const struct vsri_transport_ctx *ctx,
                       const char *addr, const struct vsri_conn_events *ev, void *owner,
                       struct vsri_sendq *q) {
  struct vsri_stream *s = NULL;
  int err = vsri_stream_dial(&s, sizeof *s, &vsri_transport_tcp, NULL, "tcp", ctx, addr, ev,
                             owner, q);
  if (err) return err;
  *out = &s->base;
  return 0;
}

static void tcp_accepted(struct vsri_stream_listener *l, int fd) {
  struct vsri_stream *s = vsri_stream_new(sizeof *s, &vsri_transport_tcp, NULL, "tcp", l->ctx, fd);
  if (!s) {
    VSRI_WARN("VSR-ACCEPT", "%s tcp: no memory for a connection; refused", l->name);
    vsri_io_close_now(l->ctx->io, fd);
    return;
  }
  vsri_format_addr((struct sockaddr *)&l->peer, s->name, sizeof s->name);
  s->server = true;
  vsri_stream_reported(s);
  l->on_accept(l->owner, &s->base);
}

static int tcp_listen(struct vsri_listener **out, const struct vsri_transport_ctx *ctx,
                      const char *addr, void (*on_accept)(void *owner, struct vsri_conn *conn),
                      void *owner) {
  struct vsri_stream_listener *l = NULL;
  int err = vsri_stream_listen(&l, sizeof *l, &vsri_transport_tcp, "tcp", ctx, addr,
                               tcp_accepted, on_accept, owner);
  if (err) return err;
  vsri_stream_listener_start(l);
  *out = &l->base;
  return 0;
}

const struct vsri_transport_ops vsri_transport_tcp = {
    .name = "tcp",
    .listen = tcp_listen,
    .listener_addr = vsri_stream_op_listener_addr,
    .listener_close = vsri_stream_op_listener_close,
    .connect = tcp_connect,
    .start = vsri_stream_op_start,
    .kick = vsri_stream_op_kick,
    .close = vsri_stream_op_close,
    .abort = vsri_stream_op_abort,
    .peer_name = vsri_stream_op_peer_name,
    .rx_clock = vsri_stream_op_rx_clock,
    .set_frame_limit = vsri_stream_op_set_frame_limit,
};
