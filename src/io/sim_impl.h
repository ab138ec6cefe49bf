/* The simulator's internals, shared by src/io/sim*.c (not a public header; sim.h is the
 * interface).
 *
 * Streams: each direction of a connection is a FIFO of segments in the sender's socket. A write
 * takes at most the window's room (segments not yet delivered + bytes the receiver has not
 * read), cuts what it takes into random-sized segments and stamps each with a due time (one
 * way delay, never before the previous segment: TCP delivers in order). Only the head segment
 * of a direction has an event in the world's heap; when it comes due it is delivered, or held
 * for rto_ns if the path is partitioned (TCP retransmits: nothing is lost, it waits). A segment
 * reaching a closed or crashed socket is answered with RST.
 *
 * Operations are tried from poll() (never from submit: callbacks never run inside a submit),
 * in submission order; one that cannot finish parks on its socket (one read side, one write
 * side) until a network event makes it possible again.
 *
 * The world's own memory (sockets, segments, buffers) comes from libc, not vsri_malloc: it is
 * the network's, not the library's, and stays out of the counters the leak checks read.
 * Sockets live until the world is freed (their buffers are released at close), so an event
 * never points at freed memory. */
#ifndef VSRI_IO_SIM_IMPL_H
#define VSRI_IO_SIM_IMPL_H

#include "io/sim.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>

#include "io/io_impl.h"
#include "vsrbus/error.h"

#define SIM_FD_BASE (1 << 20) /* virtual fds: far above any real one, so a stray close() fails */
#define SIM_PORT_FIRST 40000   /* ephemeral ports */
#define SIM_TURNS_MAX 1000000  /* loop turns at one instant before it is a livelock */

enum { SIM_ON_TRIES = 1u << 0 }; /* c->backend_tag: on the io's tries list */

enum sock_kind { SK_NEW, SK_LISTEN, SK_CONNECTING, SK_OPEN, SK_FAILED, SK_DGRAM };

struct seg {
  struct seg *next;
  uint64_t due;
  uint32_t len, off;
  bool fin;
  struct sockaddr_in from; /* datagrams: the sender */
  struct sockaddr_in to;   /* datagrams in flight: the destination */
  uint8_t data[];
};

struct sim_io;

struct sim_sock {
  struct sim_sock *all_next; /* every socket of the world */
  struct vsri_sim_host *host;
  struct sim_io *sio; /* the loop that owns the fd (NULL once closed) */
  int fd;
  enum sock_kind kind;
  bool closed;  /* fd closed */
  bool wr_shut; /* FIN queued: no more writes */
  bool rx_eof;  /* the peer's FIN arrived */
  int err;      /* pending error (ECONNRESET ...): every later op fails with it */
  int connect_res;
  struct sockaddr_in local, remote;
  struct sim_sock *peer;
  /* Sending: segments not yet delivered, oldest first. */
  struct seg *tx_head, *tx_tail;
  uint64_t tx_bytes;
  uint64_t tx_last_due;
  bool tx_armed; /* the head segment has an event */
  uint32_t window;
  /* Receiving. */
  struct seg *rx_head, *rx_tail; /* delivered, not read yet (head->off bytes of it already read) */
  size_t rx_len;
  uint32_t rx_dgrams; /* SK_DGRAM: datagrams queued on rx (each a seg; its source in dg_from) */
  bool connected;     /* SK_DGRAM: connect() set |remote| */
  /* Listening: established connections not yet accepted. */
  struct sim_sock **backlog;
  uint32_t backlog_len, backlog_cap;
  uint32_t backlog_max;
  /* Parked operations. */
  struct vsri_completion *rd, *wr;
  /* TCP keepalive (SO_KEEPALIVE, TCP_KEEPIDLE / KEEPINTVL / KEEPCNT). */
  bool ka;
  int ka_gen; /* the armed keepalive event's generation: older ones are stale */
  uint32_t ka_idle_s, ka_intvl_s, ka_cnt, ka_probes;
  uint64_t last_heard; /* a segment (or an acknowledgement) from the peer */
};

struct vsri_sim_host {
  struct vsri_sim *w;
  uint32_t index;
  struct in_addr ip;
  uint16_t next_port;
  struct sim_sock **fds;
  uint32_t fds_len;
};

struct sim_io {
  struct vsri_sim *w;
  struct vsri_sim_host *h;
  struct vsri_io *io;
  struct sim_io *next; /* the world's loops, in creation order */
  struct vsri_list tries;
  uint8_t *pooled;
};

enum ev_kind { EV_SEG, EV_SYN, EV_SYNACK, EV_RST, EV_KA, EV_DGRAM };

struct ev {
  uint64_t t, seq;
  uint8_t kind;
  struct sim_sock *s; /* EV_SEG: sender; EV_SYN: the dialer; EV_SYNACK / EV_RST: receiver */
  int res;            /* EV_SYNACK */
  struct seg *dg;     /* EV_DGRAM: the datagram (s: NULL) */
};

struct vsri_sim {
  struct vsri_sim_net net;
  uint64_t rng[4];
  uint64_t now;
  uint64_t seq;
  uint64_t hash;
  struct vsri_sim_host *hosts[VSRI_SIM_HOSTS_MAX];
  uint32_t hosts_len;
  bool blocked[VSRI_SIM_HOSTS_MAX][VSRI_SIM_HOSTS_MAX];
  uint64_t clog_ns[VSRI_SIM_HOSTS_MAX][VSRI_SIM_HOSTS_MAX];
  uint64_t clog_until[VSRI_SIM_HOSTS_MAX][VSRI_SIM_HOSTS_MAX];
  struct ev *heap;
  uint32_t heap_len, heap_cap;
  struct sim_sock *all;
  struct sim_io *ios;
  struct vsri_sim_stats stats;
};

static inline void *sim_xalloc(size_t n) {
  void *p = calloc(1, n);
  if (!p) abort(); /* the simulator has no graceful way out of a full heap */
  return p;
}

/* sim_world.c */
bool vsri_sim_chance(struct vsri_sim *w, uint32_t ppm);
void vsri_sim_trace_ev(struct vsri_sim *w, uint32_t kind, uint32_t a, uint32_t b, uint64_t n);
void vsri_sim_rx_clear(struct sim_sock *s);
void vsri_sim_sock_release_buffers(struct sim_sock *s);
struct vsri_sim_host *vsri_sim_host_by_ip(struct vsri_sim *w, struct in_addr ip);
void vsri_sim_ev_push(struct vsri_sim *w, uint64_t t, uint8_t kind, struct sim_sock *s, int res);
void vsri_sim_ev_push_dgram(struct vsri_sim *w, uint64_t t, struct seg *g);
struct ev vsri_sim_ev_pop(struct vsri_sim *w);
uint64_t vsri_sim_delay(struct vsri_sim *w, const struct vsri_sim_host *a,
                        const struct vsri_sim_host *b);
bool vsri_sim_blocked(const struct vsri_sim *w, const struct vsri_sim_host *a,
                      const struct vsri_sim_host *b);

/* sim_stream.c */
struct sim_sock *vsri_sim_fd(struct sim_io *si, int fd);
void vsri_sim_try_later(struct sim_io *si, struct vsri_completion *c);
void vsri_sim_sock_wake(struct sim_sock *s, bool rd, bool wr);
struct sim_sock *vsri_sim_sock_alloc(struct vsri_sim *w, struct vsri_sim_host *h);
struct sim_sock *vsri_sim_sock_new(struct sim_io *si);
uint16_t vsri_sim_host_port(struct vsri_sim_host *h);
void vsri_sim_tx_arm(struct vsri_sim *w, struct sim_sock *s);
void vsri_sim_ka_arm(struct vsri_sim *w, struct sim_sock *s, uint64_t at);
void vsri_sim_tx_push(struct vsri_sim *w, struct sim_sock *s, const uint8_t *p, uint32_t len,
                      bool fin);
void vsri_sim_sock_reset(struct sim_sock *s, int err);
void vsri_sim_send_rst(struct vsri_sim *w, struct sim_sock *s);
size_t vsri_sim_iov_total(const struct iovec *iov, int n);
int32_t vsri_sim_op_sendv(struct vsri_sim *w, struct sim_sock *s, const struct iovec *iov,
                          int iovcnt);
int32_t vsri_sim_op_recv(struct vsri_sim *w, struct sim_sock *s, uint8_t *buf, size_t len);
int32_t vsri_sim_op_accept(struct sim_io *si, struct sim_sock *l, struct vsri_completion *c);
int32_t vsri_sim_op_connect(struct vsri_sim *w, struct sim_sock *s, struct vsri_completion *c);
int32_t vsri_sim_op_close(struct sim_io *si, struct sim_sock *s);

/* sim_dgram.c */
int32_t vsri_sim_op_sendmsg(struct vsri_sim *w, struct sim_sock *s, const struct msghdr *m);
int32_t vsri_sim_op_recvmsg(struct sim_sock *s, struct msghdr *m);
void vsri_sim_dgram_connect(struct sim_sock *s, const struct sockaddr_in *to);
void vsri_sim_ev_dgram(struct vsri_sim *w, struct seg *g);

/* sim_net.c */
void vsri_sim_deliver(struct vsri_sim *w);

#endif
