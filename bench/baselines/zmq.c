/* libzmq baseline: every frame is one zmq message, default socket options (HWM 1000, one I/O
 * thread per context). Fork: child = receiver / server (binds), parent = sender / client.
 *   tput  N PUSH sockets, one thread each (zmq_send copies from a frame pool) -> one PULL,
 *         which fair-queues the N connections; each sender ends with a stop frame
 *   lat   REQ -> REP, the server sends the received message back
 *   idle  one PUSH connected N times to one PULL; RSS growth of the PULL side per connection */
#include "common.h"

#include <zmq.h>

static struct bl_opts opt;
static void *zctx;

#define ZCHK(x)                                                                                \
  do {                                                                                         \
    if ((x) < 0) BL_DIE("%s: %s", #x, zmq_strerror(zmq_errno()));                              \
  } while (0)

/* Receives one message into |m|; returns its command (the frame was checked). */
static int zrecv(void *s, zmq_msg_t *m) {
  ZCHK(zmq_msg_recv(m, s, 0));
  const uint8_t *f = zmq_msg_data(m);
  if (!bl_frame_ok(f, zmq_msg_size(m), opt.size)) BL_DIE("bad frame (%zu bytes)", zmq_msg_size(m));
  return f[BL_OFF_COMMAND];
}

static void tput_server(void *s, int stats_fd) {
  zmq_msg_t m;
  zmq_msg_init(&m);
  struct bl_rx rx = { 0 };
  for (int stops = 0; stops < opt.conns;) {
    if (zrecv(s, &m) == BL_CMD_STOP) stops++;
    else bl_rx_frame(&rx, zmq_msg_size(&m));
  }
  bl_rx_end(&rx);
  zmq_msg_close(&m);
  bl_rx_row("zmq", &opt, &rx, stats_fd);
}

static void lat_server(void *s, int stats_fd) {
  zmq_msg_t m;
  zmq_msg_init(&m);
  uint64_t n = 0, a0 = bl_allocs();
  while (zrecv(s, &m) != BL_CMD_STOP) {
    ZCHK(zmq_msg_send(&m, s, 0)); /* hands the same message back, no copy */
    if (++n == BL_WARMUP) a0 = bl_allocs();
  }
  struct bl_stats st = { .allocs = bl_allocs() - a0, .msgs = n > BL_WARMUP ? n - BL_WARMUP : 0 };
  zmq_msg_close(&m);
  st.hwm_kib = bl_status_kib("VmHWM");
  bl_stats_send(stats_fd, &st);
}

/* Counts completed ZMTP handshakes through a socket monitor. */
static void idle_wait_handshakes(void *mon, int want) {
  for (int got = 0; got < want;) {
    zmq_msg_t ev, addr;
    zmq_msg_init(&ev);
    zmq_msg_init(&addr);
    ZCHK(zmq_msg_recv(&ev, mon, 0));
    ZCHK(zmq_msg_recv(&addr, mon, 0));
    uint16_t id;
    memcpy(&id, zmq_msg_data(&ev), sizeof id);
    if (id == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) got++;
    zmq_msg_close(&ev);
    zmq_msg_close(&addr);
  }
}

static void idle_server(void *s, int ready_fd) {
  void *mon = zmq_socket(zctx, ZMQ_PAIR);
  ZCHK(zmq_socket_monitor(s, "inproc://bl-monitor", ZMQ_EVENT_HANDSHAKE_SUCCEEDED));
  ZCHK(zmq_connect(mon, "inproc://bl-monitor"));
  bl_byte_send(ready_fd); /* monitor in place: the client may dial */
  idle_wait_handshakes(mon, 1);
  bl_sleep_ms(100);
  double rss0 = bl_status_kib("VmRSS");
  bl_byte_send(ready_fd);
  idle_wait_handshakes(mon, opt.conns - 1);
  bl_sleep_ms(200); /* let the I/O thread finish setting up the last sessions */
  struct bl_row row = { "zmq", "tcp", opt.label, 0, opt.conns, BL_ROW_EMPTY };
  row.rss_kib = (bl_status_kib("VmRSS") - rss0) / (opt.conns - 1);
  bl_row_print(&row);
}

static void server(int up_fd, int down_fd) {
  int lat = !strcmp(opt.mode, "lat"), idle = !strcmp(opt.mode, "idle");
  zctx = zmq_ctx_new();
  if (idle) ZCHK(zmq_ctx_set(zctx, ZMQ_MAX_SOCKETS, opt.conns + 64));
  void *s = zmq_socket(zctx, lat ? ZMQ_REP : ZMQ_PULL);
  char ep[256];
  size_t len = sizeof ep;
  ZCHK(zmq_bind(s, "tcp://127.0.0.1:*"));
  ZCHK(zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, ep, &len));
  if (write(up_fd, ep, sizeof ep) != (ssize_t)sizeof ep) BL_DIE("pipe");
  if (idle) idle_server(s, up_fd);
  else if (lat) lat_server(s, up_fd);
  else tput_server(s, down_fd);
  if (idle) _exit(0); /* tearing down thousands of sessions measures nothing */
  zmq_close(s);
  zmq_ctx_term(zctx);
}

static void zmq_tx_open(struct bl_tx *x, const char *ep) {
  x->sock = zmq_socket(zctx, ZMQ_PUSH);
  ZCHK(zmq_connect(x->sock, ep));
}

static void zmq_tx_send(void *sock, const void *buf, size_t len) {
  ZCHK(zmq_send(sock, buf, len, 0));
}

static void tput_client(const char *ep, int stats_fd) {
  static const struct bl_tx_lib lib = { zmq_tx_open, zmq_tx_send };
  struct bl_tx *xs = bl_tx_run(&opt, &lib, ep, stats_fd);
  for (int i = 0; i < opt.conns; i++) zmq_close(xs[i].sock); /* linger: queued frames go out */
}

static struct hist lat_hist;

static void lat_client(const char *ep, int stats_fd) {
  void *s = zmq_socket(zctx, ZMQ_REQ);
  ZCHK(zmq_connect(s, ep));
  uint8_t *frame = bl_frames(1, opt.size), stop[BL_HDR];
  zmq_msg_t m;
  zmq_msg_init(&m);
  hist_init(&lat_hist);
  uint64_t a0 = 0;
  for (long i = -BL_WARMUP; i < opt.iters; i++) {
    if (i == 0) a0 = bl_allocs();
    uint64_t t0 = bl_now_ns();
    ZCHK(zmq_send(s, frame, opt.size, 0));
    if (zrecv(s, &m) != BL_CMD_REQUEST) BL_DIE("bad echo");
    if (i >= 0) hist_record(&lat_hist, bl_now_ns() - t0);
  }
  uint64_t allocs = bl_allocs() - a0;
  bl_header(stop, BL_HDR, BL_CMD_STOP);
  ZCHK(zmq_send(s, stop, BL_HDR, 0));
  bl_lat_row("zmq", &opt, &lat_hist, allocs, stats_fd);
  zmq_msg_close(&m);
  zmq_close(s);
}

/* One PUSH socket, N connects to the same endpoint: N sessions, one descriptor each. */
static void idle_client(const char *ep, int ready_fd, pid_t child) {
  void *s = zmq_socket(zctx, ZMQ_PUSH);
  bl_byte_recv(ready_fd);
  ZCHK(zmq_connect(s, ep));
  bl_byte_recv(ready_fd);
  for (int i = 1; i < opt.conns; i++) ZCHK(zmq_connect(s, ep));
  int rc = bl_wait_child(child);
  _exit(rc);
}

int main(int argc, char **argv) {
  bl_parse(argc, argv, &opt);
  if (!strcmp(opt.mode, "idle")) bl_idle_limit(&opt, 1);
  int up[2], down[2]; /* child -> parent, parent -> child */
  pid_t pid = bl_fork(&opt, up, down);
  if (pid == 0) {
    server(up[1], down[0]);
    _exit(0);
  }
  char ep[256];
  if (read(up[0], ep, sizeof ep) != (ssize_t)sizeof ep) BL_DIE("no endpoint from the server");
  zctx = zmq_ctx_new();
  if (!strcmp(opt.mode, "idle")) idle_client(ep, up[0], pid);
  else if (!strcmp(opt.mode, "lat")) lat_client(ep, up[0]);
  else tput_client(ep, down[1]);
  int rc = bl_wait_child(pid);
  zmq_ctx_term(zctx);
  return rc;
}
