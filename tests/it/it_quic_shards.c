/* QUIC per shard (issue 18, docs/shards.md "QUIC"): with vsr_bus_options.shards = N every shard
 * serves QUIC on the same UDP address (one SO_REUSEPORT group) and a classic BPF program sends
 * each datagram to the shard its Destination Connection ID names.
 *   - the program itself, without ngtcp2: a reuseport group of 2..4 UDP sockets built the way the
 *     transport builds it; crafted short- and long-header packets land on socket (first DCID
 *     byte mod N), whatever their source port; short and garbage datagrams land on socket 0;
 *   - the node's group: a short-header packet whose DCID names shard k is counted as "unknown
 *     connection ID" by shard k and no other (the program is attached, sockets are in shard
 *     order), and the metrics text sums the shards;
 *   - 16 QUIC clients on 2 shards: every one is served, both shards hold some, a frame the
 *     application sends to each client id arrives, vsr_bus_close_client closes a client of a
 *     worker shard; no shard counted a packet for a connection it does not hold;
 *   - Retry on every Initial: the Retry's connection ID brings the client back to the shard
 *     whose key sealed its token;
 *   - NAT rebinding: the clients talk through a relay that moves every flow to a new source
 *     port mid-way; each connection stays on its shard (the frames after the move are served,
 *     no shard counts a misrouted packet);
 *   - a port someone else holds (SO_REUSEPORT or not) is refused, as TCP's is.
 * Runs on both io backends (VSRBUS_IO). */
#include <linux/filter.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "harness.h"
#include "quic_info.h"

#ifndef SO_ATTACH_REUSEPORT_CBPF
#define SO_ATTACH_REUSEPORT_CBPF 51
#endif

#define CLIENTS 16
#define FRAMES 8

/* ---- the routing program on a group of plain sockets ----------------------------------- */

static int udp_socket(void) {
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  assert_true(fd >= 0);
  return fd;
}

static struct sockaddr_in loopback(uint16_t port) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

/* |n| sockets in one SO_REUSEPORT group on 127.0.0.1, bound in order, the program attached to
 * the first after its bind (as quic_shard.c does). Returns the port. */
static uint16_t make_group(int *fds, uint32_t n) {
  uint16_t port = 0;
  for (uint32_t i = 0; i < n; i++) {
    fds[i] = udp_socket();
    int one = 1;
    assert_int_equal(setsockopt(fds[i], SOL_SOCKET, SO_REUSEPORT, &one, sizeof one), 0);
    struct sockaddr_in a = loopback(port);
    assert_int_equal(bind(fds[i], (struct sockaddr *)&a, sizeof a), 0);
    if (i == 0) {
      socklen_t len = sizeof a;
      assert_int_equal(getsockname(fds[0], (struct sockaddr *)&a, &len), 0);
      port = ntohs(a.sin_port);
      struct sock_filter prog[VSRI_QUIC_CID_PROG_LEN];
      struct sock_fprog fp = {.len = (unsigned short)vsri_quic_cid_prog(n, prog), .filter = prog};
      assert_int_equal(fp.len, VSRI_QUIC_CID_PROG_LEN);
      assert_int_equal(setsockopt(fds[0], SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &fp, sizeof fp),
                       0);
    }
  }
  return port;
}

/* Sends |len| bytes from |from| to the group and returns the index of the one socket that
 * received them (-1: none within 2 s, -2: more than one). */
static int route(int from, uint16_t port, const uint8_t *pkt, size_t len, const int *fds,
                 uint32_t n) {
  struct sockaddr_in to = loopback(port);
  assert_int_equal(sendto(from, pkt, len, 0, (struct sockaddr *)&to, sizeof to), (ssize_t)len);
  struct pollfd p[4];
  for (uint32_t i = 0; i < n; i++) p[i] = (struct pollfd){.fd = fds[i], .events = POLLIN};
  if (poll(p, n, 2000) <= 0) return -1;
  int got = -1;
  for (uint32_t i = 0; i < n; i++) {
    uint8_t buf[2048];
    ssize_t r = recv(fds[i], buf, sizeof buf, 0);
    if (r < 0) continue;
    assert_int_equal(r, (ssize_t)len);
    if (got >= 0) return -2;
    got = (int)i;
  }
  return got;
}

static void routing_program(uint32_t n) {
  int fds[4], a = udp_socket(), b = udp_socket();
  uint16_t port = make_group(fds, n);
  uint8_t pkt[1200];
  for (uint32_t byte = 0; byte < 3 * n + 2; byte++) {
    uint8_t dcid0 = byte < 3 * n ? (uint8_t)byte : (uint8_t)(255 - byte % 2);
    /* Short header: flags, then the DCID. */
    memset(pkt, 0xa5, sizeof pkt);
    pkt[0] = 0x40;
    pkt[1] = dcid0;
    assert_int_equal(route(a, port, pkt, 40, fds, n), dcid0 % n);
    assert_int_equal(route(b, port, pkt, 40, fds, n), dcid0 % n); /* another source port */
    /* Long header (an Initial): flags, version, DCID length, the DCID. */
    pkt[0] = 0xc0;
    pkt[1] = 0, pkt[2] = 0, pkt[3] = 0, pkt[4] = 1;
    pkt[5] = 8;
    pkt[6] = dcid0;
    assert_int_equal(route(a, port, pkt, sizeof pkt, fds, n), dcid0 % n);
    assert_int_equal(route(b, port, pkt, 64, fds, n), dcid0 % n);
  }
  /* Too short to hold the byte the program reads: socket 0, no error. */
  uint8_t shorts[][6] = {{0x40}, {0xc0, 0, 0, 0, 1, 8}};
  assert_int_equal(route(a, port, shorts[0], 1, fds, n), 0);
  assert_int_equal(route(a, port, shorts[1], 6, fds, n), 0);
  assert_int_equal(route(b, port, shorts[1], 3, fds, n), 0);
  for (uint32_t i = 0; i < n; i++) close(fds[i]);
  close(a);
  close(b);
  /* No group of one, and no more shards than a byte names. */
  struct sock_filter prog[VSRI_QUIC_CID_PROG_LEN];
  assert_int_equal(vsri_quic_cid_prog(1, prog), 0);
  assert_int_equal(vsri_quic_cid_prog(256, prog), 0);
}

static void routing_program_2_3_4(void **state) {
  (void)state;
  for (uint32_t n = 2; n <= 4; n++) routing_program(n);
}

/* ---- the node ------------------------------------------------------------------------- */

struct shard_view {
  uint32_t shards;
  struct vsr_bus_stats total, per[4];
};

static void shard_view_task(struct h_node *n, void *arg) {
  struct shard_view *v = arg;
  v->shards = vsr_bus_shards(n->bus);
  vsr_bus_stats(n->bus, &v->total);
  for (uint32_t k = 0; k < v->shards && k < 4; k++) vsr_bus_shard_stats(n->bus, k, &v->per[k]);
}

static struct shard_view shard_view(struct h_node *n) {
  struct shard_view v;
  memset(&v, 0, sizeof v);
  h_run(n, shard_view_task, &v);
  return v;
}

/* Worker stats are published after each of its loop turns: waits (bounded) until |ok| holds. */
static struct shard_view wait_view(struct h_node *n, bool (*ok)(const struct shard_view *, uint64_t),
                                   uint64_t arg) {
  struct shard_view v;
  uint64_t end = vsrt_now() + 10 * H_SEC;
  do {
    v = shard_view(n);
    if (ok(&v, arg)) break;
    usleep(2000);
  } while (vsrt_now() < end);
  return v;
}

static void quic_node_retry(struct h_node *n, uint32_t shards, struct quic_info *qi,
                            bool retry_all) {
  h_options(n);
  if (retry_all) n->opts.quic.retry_threshold = 0; /* every first Initial gets a Retry */
  n->mode = H_ECHO;
  n->opts.client_tcp_addr = NULL; /* QUIC only: every client counted below is a QUIC one */
  n->opts.quic.addr = "127.0.0.1:0";
  n->opts.shards = shards;
  assert_int_equal(h_start(n), 0);
  h_run(n, quic_info_task, qi);
}

static void quic_node(struct h_node *n, uint32_t shards, struct quic_info *qi) {
  quic_node_retry(n, shards, qi, false);
}

static struct vsr_client *quic_client(const struct quic_info *qi, const char *addr) {
  struct vsr_client_options o;
  vsr_client_options_default(&o);
  o.transport = "quic";
  o.addr = addr ? addr : qi->addr;
  o.quic.pin_sha256 = qi->pin; /* every shard serves shard 0's certificate */
  o.quic.streams = VSR_QUIC_STREAMS_LONG; /* the node may send first on it */
  struct vsr_client *c = NULL;
  int err = vsr_client_connect(&c, &o, 5 * H_SEC);
  if (err) fprintf(stderr, "quic client: %s\n", vsr_strerror(err));
  return c;
}

static uint16_t addr_port(const char *addr) { return (uint16_t)atoi(strrchr(addr, ':') + 1); }

/* A short-header packet whose DCID names shard |k| (16 bytes: the node's length) reaches shard
 * k, which holds no such connection and counts it. */
static bool unknown_is(const struct shard_view *v, uint64_t want) {
  return v->total.quic_unknown_cid == want;
}

/* h_run task: the Prometheus text's vsrbus_quic_unknown_cid_total. */
static void metric_task(struct h_node *n, void *arg) {
  static char text[1 << 18];
  size_t w = 0;
  long long *out = arg;
  *out = -1;
  if (vsr_bus_metrics_render(n->bus, text, sizeof text, &w) != 0) return;
  const char *p = strstr(text, "\nvsrbus_quic_unknown_cid_total ");
  if (p) *out = atoll(p + strlen("\nvsrbus_quic_unknown_cid_total "));
}

static void node_routes_by_cid(void **state) {
  (void)state;
  const uint32_t shards = 3;
  struct h_node n;
  struct quic_info qi;
  quic_node(&n, shards, &qi);
  struct shard_view v = shard_view(&n);
  assert_int_equal(v.shards, shards);
  int fd = udp_socket();
  uint8_t pkt[64];
  uint64_t sent = 0, want[3] = {0};
  for (uint32_t byte = 0; byte < 2 * shards; byte++) {
    for (int rep = 0; rep < 2; rep++) {
      memset(pkt, 0x5a, sizeof pkt);
      pkt[0] = 0x40;
      pkt[1] = (uint8_t)byte;
      struct sockaddr_in to = loopback(addr_port(qi.addr));
      assert_int_equal(sendto(fd, pkt, sizeof pkt, 0, (struct sockaddr *)&to, sizeof to),
                       (ssize_t)sizeof pkt);
      sent++;
      want[byte % shards]++;
      v = wait_view(&n, unknown_is, sent);
      assert_int_equal(v.total.quic_unknown_cid, sent);
      for (uint32_t k = 0; k < shards; k++) assert_int_equal(v.per[k].quic_unknown_cid, want[k]);
    }
  }
  long long metric = 0; /* the metrics endpoint sums the shards too */
  h_run(&n, metric_task, &metric);
  assert_int_equal(metric, (long long)sent);
  close(fd);
  h_stop(&n, true);
  assert_int_equal(n.shutdown_result, 0);
}

/* Every client sends FRAMES frames and gets each back (the application's echo, sent to its
 * client id), then |tag| more. */
static void exchange(struct vsr_client **cs, int nclients, uint32_t tag) {
  for (int i = 0; i < nclients; i++) {
    for (int f = 0; f < FRAMES; f++) {
      struct vsr_msg *m = h_frame(cs[i], VSR_CMD_REQUEST, 256 + 512 * (uint32_t)f,
                                  tag + (uint32_t)(i * 100 + f));
      assert_non_null(m);
      assert_int_equal(vsr_client_send(cs[i], m), 0);
      vsr_msg_unref(m);
    }
  }
  for (int i = 0; i < nclients; i++) {
    for (int f = 0; f < FRAMES; f++) {
      struct vsr_msg *r = NULL;
      assert_int_equal(vsr_client_recv(cs[i], &r, 10 * H_SEC), 0);
      assert_int_equal(vsr_get_u32(r->data + 128 + 64), tag + (uint32_t)(i * 100 + f));
      vsr_msg_unref(r);
    }
  }
}

static int connected_ids(struct h_node *n, uint64_t *ids, int max) {
  pthread_mutex_lock(&n->mu);
  int k = 0;
  for (int i = 0; i < n->nevents && k < max; i++) {
    if (n->events[i].kind == VSR_PEER_CONNECTED) ids[k++] = n->events[i].id;
  }
  pthread_mutex_unlock(&n->mu);
  return k;
}

/* h_run task: a PongClient carrying the client id to each of |ids|; the send results. */
struct push_arg {
  const uint64_t *ids;
  int n;
  int rc[CLIENTS];
  int close_rc;
  uint64_t close_id;
};

static void push_task(struct h_node *n, void *arg) {
  struct push_arg *a = arg;
  for (int i = 0; i < a->n; i++) {
    struct vsr_msg *m = vsr_bus_msg_new(n->bus, 256);
    if (!m) {
      a->rc[i] = VSR_ENOMEM;
      continue;
    }
    memset(m->data, 0, 256);
    vsr_put_u32(m->data + 48, 256); /* size */
    m->data[60] = VSR_CMD_PONG_CLIENT;
    vsr_put_u64(m->data + 128, a->ids[i]);
    vsr_frame_seal(m->data);
    a->rc[i] = vsr_bus_send_to_client(n->bus, a->ids[i], m);
    vsr_msg_unref(m);
  }
}

static void close_task(struct h_node *n, void *arg) {
  struct push_arg *a = arg;
  a->close_rc = vsr_bus_close_client(n->bus, a->close_id);
}

static bool both_busy(const struct shard_view *v, uint64_t want) {
  return v->total.clients_active == want && v->per[0].clients_active > 0 &&
         v->per[1].clients_active > 0;
}

static void many_quic_clients_two_shards(void **state) {
  (void)state;
  struct h_node n;
  struct quic_info qi;
  quic_node(&n, 2, &qi);
  /* A client's first Initial picks its shard by a random byte: 16 clients leave one of two
   * shards empty with probability 2^-15. */
  struct vsr_client *cs[CLIENTS];
  for (int i = 0; i < CLIENTS; i++) {
    cs[i] = quic_client(&qi, NULL);
    assert_non_null(cs[i]);
  }
  exchange(cs, CLIENTS, 0); /* a QUIC client is reported at its first stream */
  assert_int_equal(h_wait_events(&n, VSR_PEER_CONNECTED, CLIENTS, 10 * H_SEC), CLIENTS);
  struct shard_view v = wait_view(&n, both_busy, CLIENTS);
  assert_int_equal(v.shards, 2);
  assert_int_equal(v.total.clients_active, CLIENTS);
  assert_true(v.per[0].clients_active > 0);
  assert_true(v.per[1].clients_active > 0);
  assert_int_equal(v.per[0].clients_active + v.per[1].clients_active, CLIENTS);
  assert_int_equal(v.total.frames_in, CLIENTS * FRAMES);
  /* The application sends to each client id: each client gets the frame naming its own id,
   * once, and the ids the clients got are exactly the connected ones. */
  uint64_t ids[CLIENTS];
  assert_int_equal(connected_ids(&n, ids, CLIENTS), CLIENTS);
  int on_worker = -1;
  for (int i = 0; i < CLIENTS; i++) {
    assert_true(((ids[i] >> 24) & 0xff) < 2);
    if (((ids[i] >> 24) & 0xff) == 1) on_worker = i;
  }
  assert_true(on_worker >= 0);
  struct push_arg pa = {.ids = ids, .n = CLIENTS};
  h_run(&n, push_task, &pa);
  bool seen[CLIENTS] = {false};
  for (int i = 0; i < CLIENTS; i++) {
    assert_int_equal(pa.rc[i], 0);
    struct vsr_msg *r = NULL;
    assert_int_equal(vsr_client_recv(cs[i], &r, 10 * H_SEC), 0);
    assert_int_equal(r->data[60], VSR_CMD_PONG_CLIENT);
    uint64_t id = vsr_get_u64(r->data + 128);
    vsr_msg_unref(r);
    int k = 0;
    while (k < CLIENTS && ids[k] != id) k++;
    assert_true(k < CLIENTS);
    assert_false(seen[k]);
    seen[k] = true;
  }
  /* vsr_bus_close_client on a client of shard 1: that id, and only it, is reported lost. */
  pa.close_id = ids[on_worker];
  h_run(&n, close_task, &pa);
  assert_int_equal(pa.close_rc, 0);
  assert_int_equal(h_wait_events(&n, VSR_PEER_LOST, 1, 10 * H_SEC), 1);
  pthread_mutex_lock(&n.mu);
  for (int i = 0; i < n.nevents; i++) {
    if (n.events[i].kind == VSR_PEER_LOST) assert_true(n.events[i].id == ids[on_worker]);
  }
  pthread_mutex_unlock(&n.mu);
  /* Every packet reached the shard holding its connection. */
  v = shard_view(&n);
  assert_int_equal(v.total.quic_unknown_cid, 0);
  for (int i = 0; i < CLIENTS; i++) vsr_client_del(cs[i]);
  assert_int_equal(h_wait_events(&n, VSR_PEER_LOST, CLIENTS, 10 * H_SEC), CLIENTS);
  h_stop(&n, true);
  assert_int_equal(n.shutdown_result, 0);
}

/* Every client must answer a Retry first: the Retry's connection ID names the shard that sealed
 * the token (each shard has its own token key), so the client's second Initial comes back to
 * it and is admitted; none is refused for a misdirected token. */
static void retry_names_the_shard(void **state) {
  (void)state;
  struct h_node n;
  struct quic_info qi;
  quic_node_retry(&n, 2, &qi, true);
  struct vsr_client *cs[CLIENTS];
  for (int i = 0; i < CLIENTS; i++) {
    cs[i] = quic_client(&qi, NULL);
    assert_non_null(cs[i]);
  }
  exchange(cs, CLIENTS, 0);
  assert_int_equal(h_wait_events(&n, VSR_PEER_CONNECTED, CLIENTS, 10 * H_SEC), CLIENTS);
  struct shard_view v = wait_view(&n, both_busy, CLIENTS);
  assert_true(v.per[0].clients_active > 0 && v.per[1].clients_active > 0);
  assert_true(v.per[0].quic_retries > 0 && v.per[1].quic_retries > 0);
  assert_true(v.total.quic_retries >= CLIENTS);
  assert_int_equal(v.total.quic_tokens_invalid, 0);
  assert_int_equal(v.total.quic_unknown_cid, 0);
  for (int i = 0; i < CLIENTS; i++) vsr_client_del(cs[i]);
  assert_int_equal(h_wait_events(&n, VSR_PEER_LOST, CLIENTS, 10 * H_SEC), CLIENTS);
  h_stop(&n, true);
  assert_int_equal(n.shutdown_result, 0);
}

/* ---- NAT rebinding: a relay that moves every flow to a new source port ----------------- */

struct relay_flow {
  struct sockaddr_in client;
  int up; /* connected to the node; its port is what the node sees */
};

struct relay {
  int front; /* the clients' server address */
  uint16_t port;
  struct sockaddr_in node;
  struct relay_flow flows[CLIENTS];
  int nflows;
  atomic_int rebind; /* 1: move every flow to a new socket (then 0) */
  atomic_int stop;
  atomic_int moved;  /* flows moved so far */
  pthread_t thread;
};

static int relay_up(const struct relay *r) {
  int fd = udp_socket();
  assert_int_equal(connect(fd, (const struct sockaddr *)&r->node, sizeof r->node), 0);
  return fd;
}

static void *relay_main(void *arg) {
  struct relay *r = arg;
  uint8_t buf[65536];
  while (!atomic_load(&r->stop)) {
    if (atomic_load(&r->rebind)) { /* the old mapping is gone: the node's packets to it die */
      for (int i = 0; i < r->nflows; i++) {
        int fd = relay_up(r);
        close(r->flows[i].up);
        r->flows[i].up = fd;
        atomic_fetch_add(&r->moved, 1);
      }
      atomic_store(&r->rebind, 0);
    }
    struct pollfd p[CLIENTS + 1];
    p[0] = (struct pollfd){.fd = r->front, .events = POLLIN};
    for (int i = 0; i < r->nflows; i++) {
      p[i + 1] = (struct pollfd){.fd = r->flows[i].up, .events = POLLIN};
    }
    if (poll(p, (nfds_t)r->nflows + 1, 10) <= 0) continue;
    struct sockaddr_in from;
    socklen_t fl = sizeof from;
    ssize_t n;
    while ((n = recvfrom(r->front, buf, sizeof buf, 0, (struct sockaddr *)&from, &fl)) >= 0) {
      int i = 0;
      while (i < r->nflows && (r->flows[i].client.sin_port != from.sin_port)) i++;
      if (i == r->nflows) {
        if (i == CLIENTS) continue;
        r->flows[i].client = from;
        r->flows[i].up = relay_up(r);
        r->nflows++;
      }
      send(r->flows[i].up, buf, (size_t)n, 0);
      fl = sizeof from;
    }
    for (int i = 0; i < r->nflows; i++) {
      while ((n = recv(r->flows[i].up, buf, sizeof buf, 0)) >= 0) {
        sendto(r->front, buf, (size_t)n, 0, (struct sockaddr *)&r->flows[i].client,
               sizeof r->flows[i].client);
      }
    }
  }
  return NULL;
}

static void relay_start(struct relay *r, const char *node_addr) {
  memset(r, 0, sizeof *r);
  r->node = loopback(addr_port(node_addr));
  r->front = udp_socket();
  struct sockaddr_in a = loopback(0);
  assert_int_equal(bind(r->front, (struct sockaddr *)&a, sizeof a), 0);
  socklen_t len = sizeof a;
  assert_int_equal(getsockname(r->front, (struct sockaddr *)&a, &len), 0);
  r->port = ntohs(a.sin_port);
  assert_int_equal(pthread_create(&r->thread, NULL, relay_main, r), 0);
}

static void relay_stop(struct relay *r) {
  atomic_store(&r->stop, 1);
  pthread_join(r->thread, NULL);
  for (int i = 0; i < r->nflows; i++) close(r->flows[i].up);
  close(r->front);
}

static void nat_rebinding_keeps_the_shard(void **state) {
  (void)state;
  struct h_node n;
  struct quic_info qi;
  quic_node(&n, 2, &qi);
  struct relay r;
  relay_start(&r, qi.addr);
  char via[64];
  snprintf(via, sizeof via, "127.0.0.1:%u", r.port);
  struct vsr_client *cs[CLIENTS];
  for (int i = 0; i < CLIENTS; i++) {
    cs[i] = quic_client(&qi, via);
    assert_non_null(cs[i]);
  }
  exchange(cs, CLIENTS, 0);
  assert_int_equal(h_wait_events(&n, VSR_PEER_CONNECTED, CLIENTS, 10 * H_SEC), CLIENTS);
  struct shard_view v = wait_view(&n, both_busy, CLIENTS);
  assert_true(v.per[0].clients_active > 0 && v.per[1].clients_active > 0);
  /* Every flow now reaches the node from a new port: by 4-tuple about half would hash to the
   * other shard; by connection ID each stays on its own. */
  atomic_store(&r.rebind, 1);
  uint64_t end = vsrt_now() + 5 * H_SEC;
  while (atomic_load(&r.moved) < CLIENTS && vsrt_now() < end) usleep(1000);
  assert_int_equal(atomic_load(&r.moved), CLIENTS);
  exchange(cs, CLIENTS, 1000000);
  v = wait_view(&n, both_busy, CLIENTS);
  assert_int_equal(v.total.frames_in, 2 * CLIENTS * FRAMES);
  assert_int_equal(v.total.clients_active, CLIENTS); /* no connection lost, none new */
  pthread_mutex_lock(&n.mu);
  int lost = h_count(&n, VSR_PEER_LOST);
  pthread_mutex_unlock(&n.mu);
  assert_int_equal(lost, 0);
  assert_int_equal(v.total.quic_unknown_cid, 0); /* no packet reached a shard not holding it */
  for (int i = 0; i < CLIENTS; i++) vsr_client_del(cs[i]);
  assert_int_equal(h_wait_events(&n, VSR_PEER_LOST, CLIENTS, 10 * H_SEC), CLIENTS);
  relay_stop(&r);
  h_stop(&n, true);
  assert_int_equal(n.shutdown_result, 0);
}

/* Another process's socket on the port (here: this process's, joined to a SO_REUSEPORT group
 * as a second node's shard 0 would be): a sharded node refuses to start there rather than
 * silently share the datagrams; a free port works. */
static void port_taken_is_refused(void **state) {
  (void)state;
  int fd = udp_socket(), one = 1;
  assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one), 0);
  struct sockaddr_in a = loopback(0);
  assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
  socklen_t len = sizeof a;
  assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
  char addr[64];
  snprintf(addr, sizeof addr, "127.0.0.1:%u", ntohs(a.sin_port));
  struct h_node n;
  h_options(&n);
  n.opts.client_tcp_addr = NULL;
  n.opts.quic.addr = addr;
  n.opts.shards = 2;
  assert_int_equal(h_start(&n), VSR_EADDRINUSE);
  pthread_mutex_destroy(&n.mu);
  pthread_cond_destroy(&n.cv);
  close(fd); /* now free: the same node starts */
  h_options(&n);
  n.opts.client_tcp_addr = NULL;
  n.opts.quic.addr = addr;
  n.opts.shards = 2;
  assert_int_equal(h_start(&n), 0);
  h_stop(&n, true);
  assert_int_equal(n.shutdown_result, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(routing_program_2_3_4),
      cmocka_unit_test(node_routes_by_cid),
      cmocka_unit_test(many_quic_clients_two_shards),
      cmocka_unit_test(retry_names_the_shard),
      cmocka_unit_test(nat_rebinding_keeps_the_shard),
      cmocka_unit_test(port_taken_is_refused),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
