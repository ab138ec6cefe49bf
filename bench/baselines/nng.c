/* nng baseline: every frame is one nng message, default options except NNG_OPT_RECVMAXSZ = 0
 * (the 1 MiB default would refuse 1 MiB frames). Fork: child = receiver / server (listens),
 * parent = sender / client.
 *   tput  N push0 sockets, one thread each (nng_send copies from a frame pool) -> one pull0;
 *         each sender ends with a stop frame
 *   lat   req0 -> rep0, the server sends the received message back
 *   idle  one push0 socket dialing N times; RSS growth of the pull0 side per connection */
#include "common.h"

#include <nng/nng.h>
#include <nng/protocol/pipeline0/pull.h>
#include <nng/protocol/pipeline0/push.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/reqrep0/req.h>

static struct bl_opts opt;

#define NCHK(x)                                                                                \
  do {                                                                                         \
    int e_ = (x);                                                                              \
    if (e_) BL_DIE("%s: %s", #x, nng_strerror(e_));                                            \
  } while (0)

/* Receives one message; returns its command (the frame was checked). */
static int nrecv(nng_socket s, nng_msg **m) {
  NCHK(nng_recvmsg(s, m, 0));
  const uint8_t *f = nng_msg_body(*m);
  if (!bl_frame_ok(f, nng_msg_len(*m), opt.size)) BL_DIE("bad frame (%zu bytes)",
                                                         nng_msg_len(*m));
  return f[BL_OFF_COMMAND];
}

static void tput_server(nng_socket s, int stats_fd) {
  struct bl_rx rx = { 0 };
  for (int stops = 0; stops < opt.conns;) {
    nng_msg *m;
    int cmd = nrecv(s, &m);
    size_t len = nng_msg_len(m);
    nng_msg_free(m);
    if (cmd == BL_CMD_STOP) stops++;
    else bl_rx_frame(&rx, len);
  }
  bl_rx_end(&rx);
  bl_rx_row("nng", &opt, &rx, stats_fd);
}

static void lat_server(nng_socket s, int stats_fd) {
  uint64_t n = 0, a0 = bl_allocs();
  for (;;) {
    nng_msg *m;
    if (nrecv(s, &m) == BL_CMD_STOP) {
      nng_msg_free(m);
      break;
    }
    NCHK(nng_sendmsg(s, m, 0)); /* the message goes back; nng owns it now */
    if (++n == BL_WARMUP) a0 = bl_allocs();
  }
  struct bl_stats st = { .allocs = bl_allocs() - a0, .msgs = n > BL_WARMUP ? n - BL_WARMUP : 0 };
  st.hwm_kib = bl_status_kib("VmHWM");
  bl_stats_send(stats_fd, &st);
}

static int idle_pipes; /* pipes added to the server socket (nng callback thread) */

static void idle_pipe_added(nng_pipe p, nng_pipe_ev ev, void *arg) {
  (void)p;
  (void)ev;
  (void)arg;
  __atomic_fetch_add(&idle_pipes, 1, __ATOMIC_RELAXED);
}

static void idle_wait_pipes(int want) {
  while (__atomic_load_n(&idle_pipes, __ATOMIC_RELAXED) < want) bl_sleep_ms(2);
}

static void idle_server(int ready_fd) {
  bl_byte_send(ready_fd);
  idle_wait_pipes(1);
  bl_sleep_ms(100);
  double rss0 = bl_status_kib("VmRSS");
  bl_byte_send(ready_fd);
  idle_wait_pipes(opt.conns);
  bl_sleep_ms(200);
  struct bl_row row = { "nng", "tcp", opt.label, 0, opt.conns, BL_ROW_EMPTY };
  row.rss_kib = (bl_status_kib("VmRSS") - rss0) / (opt.conns - 1);
  bl_row_print(&row);
  _exit(0); /* tearing down thousands of pipes measures nothing */
}

static void server(int up_fd, int down_fd) {
  int lat = !strcmp(opt.mode, "lat"), idle = !strcmp(opt.mode, "idle"), port;
  nng_socket s;
  nng_listener l;
  NCHK(lat ? nng_rep0_open(&s) : nng_pull0_open(&s));
  NCHK(nng_socket_set_size(s, NNG_OPT_RECVMAXSZ, 0));
  if (idle) NCHK(nng_pipe_notify(s, NNG_PIPE_EV_ADD_POST, idle_pipe_added, NULL));
  NCHK(nng_listener_create(&l, s, "tcp://127.0.0.1:0"));
  NCHK(nng_listener_start(l, 0));
  NCHK(nng_listener_get_int(l, NNG_OPT_TCP_BOUND_PORT, &port));
  if (write(up_fd, &port, sizeof port) != (ssize_t)sizeof port) BL_DIE("pipe");
  if (idle) idle_server(up_fd);
  else if (lat) lat_server(s, up_fd);
  else tput_server(s, down_fd);
  nng_close(s);
}

static void nng_tx_open(struct bl_tx *x, const char *url) {
  nng_socket *s = calloc(1, sizeof *s); /* nng_socket is a struct: keep it behind the pointer */
  if (!s) BL_DIE("out of memory");
  NCHK(nng_push0_open(s));
  NCHK(nng_dial(*s, url, NULL, 0));
  x->sock = s;
}

static void nng_tx_send(void *sock, const void *buf, size_t len) {
  NCHK(nng_send(*(nng_socket *)sock, (void *)buf, len, 0));
}

/* Sockets stay open until the receiver has exited: nng_close may drop queued messages. */
static struct bl_tx *tput_client(const char *url, int stats_fd) {
  static const struct bl_tx_lib lib = { nng_tx_open, nng_tx_send };
  return bl_tx_run(&opt, &lib, url, stats_fd);
}

static struct hist lat_hist;

static void lat_client(const char *url, int stats_fd) {
  nng_socket s;
  NCHK(nng_req0_open(&s));
  NCHK(nng_socket_set_size(s, NNG_OPT_RECVMAXSZ, 0));
  NCHK(nng_dial(s, url, NULL, 0));
  uint8_t *frame = bl_frames(1, opt.size), stop[BL_HDR];
  hist_init(&lat_hist);
  uint64_t a0 = 0;
  for (long i = -BL_WARMUP; i < opt.iters; i++) {
    nng_msg *m;
    if (i == 0) a0 = bl_allocs();
    uint64_t t0 = bl_now_ns();
    NCHK(nng_send(s, frame, opt.size, 0));
    if (nrecv(s, &m) != BL_CMD_REQUEST) BL_DIE("bad echo");
    if (i >= 0) hist_record(&lat_hist, bl_now_ns() - t0);
    nng_msg_free(m);
  }
  uint64_t allocs = bl_allocs() - a0;
  bl_header(stop, BL_HDR, BL_CMD_STOP);
  NCHK(nng_send(s, stop, BL_HDR, 0));
  bl_lat_row("nng", &opt, &lat_hist, allocs, stats_fd);
  nng_close(s);
}

/* One push0 socket dialing the same address N times: N pipes, one descriptor each. */
static void idle_client(const char *url, int ready_fd, pid_t child) {
  nng_socket s;
  NCHK(nng_push0_open(&s));
  bl_byte_recv(ready_fd);
  NCHK(nng_dial(s, url, NULL, 0));
  bl_byte_recv(ready_fd);
  for (int i = 1; i < opt.conns; i++) NCHK(nng_dial(s, url, NULL, 0));
  _exit(bl_wait_child(child));
}

int main(int argc, char **argv) {
  bl_parse(argc, argv, &opt);
  if (!strcmp(opt.mode, "idle")) bl_idle_limit(&opt, 1);
  int up[2], down[2], port; /* child -> parent, parent -> child */
  pid_t pid = bl_fork(&opt, up, down);
  if (pid == 0) {
    server(up[1], down[0]);
    _exit(0);
  }
  if (read(up[0], &port, sizeof port) != (ssize_t)sizeof port) BL_DIE("no port from server");
  char url[64];
  snprintf(url, sizeof url, "tcp://127.0.0.1:%d", port);
  struct bl_tx *xs = NULL;
  if (!strcmp(opt.mode, "idle")) idle_client(url, up[0], pid);
  else if (!strcmp(opt.mode, "lat")) lat_client(url, up[0]);
  else xs = tput_client(url, down[1]);
  int rc = bl_wait_child(pid);
  for (int i = 0; xs && i < opt.conns; i++) nng_close(*(nng_socket *)xs[i].sock);
  return rc;
}
