/* Integration-test harness: a bus running on its own thread (its loop belongs to that thread),
 * an event log the test thread can wait on, and a way to run a function on the bus thread.
 * The test thread talks to the bus with blocking clients or raw sockets. Every wait is bounded. */
#ifndef VSR_IT_HARNESS_H
#define VSR_IT_HARNESS_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"
#include "vsrbus/vsrbus.h"

#define H_EVENTS_MAX 4096
#define H_SEC 1000000000ull

enum h_mode {
  H_ECHO = 0, /* every client frame is sent back as is (same buffer, by reference) */
  H_SM,       /* reply like `vsrbus node`: PongClient, Reply */
  H_SILENT,   /* deliver, count, answer nothing */
};

struct h_event {
  enum vsr_peer_event_kind kind;
  enum vsr_plane plane;
  uint64_t id;
  int reason;
};

struct h_node {
  struct vsr_bus_options opts;
  enum h_mode mode;
  pthread_t thread;
  struct vsr_bus *bus;
  char addr[64];
  atomic_int ready; /* 1 running, -1 failed to start */
  atomic_int stop;  /* 1: shut down (graceful), 2: delete at once */
  int start_err;
  uint64_t shutdown_timeout_ns;
  int shutdown_result;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  struct h_event events[H_EVENTS_MAX];
  int nevents;
  uint64_t frames; /* frames delivered to on_message */
  uint64_t last_client;
  void (*task)(struct h_node *, void *);
  void *task_arg;
  bool task_done;
  void (*on_frame)(struct h_node *, uint64_t client, struct vsr_msg *msg); /* optional hook */
  void *user;
};

static inline void h_on_message(void *user, struct vsr_bus *bus, enum vsr_plane plane, uint64_t peer,
                         struct vsr_msg *msg) {
  struct h_node *n = user;
  (void)plane;
  pthread_mutex_lock(&n->mu);
  n->frames++;
  n->last_client = peer;
  pthread_cond_broadcast(&n->cv);
  pthread_mutex_unlock(&n->mu);
  if (n->on_frame) {
    n->on_frame(n, peer, msg);
    return;
  }
  if (n->mode == H_ECHO) {
    vsr_bus_send_to_client(bus, peer, msg);
  } else if (n->mode == H_SM) {
    uint8_t cmd = msg->data[60];
    struct vsr_msg *out = vsr_bus_msg_new(bus, cmd == VSR_CMD_REQUEST ? msg->size : 256);
    if (!out) return;
    if (cmd == VSR_CMD_REQUEST) {
      memcpy(out->data, msg->data, msg->size);
      out->data[60] = VSR_CMD_REPLY;
      struct vsr_reply_header *rp = (struct vsr_reply_header *)out->data;
      const struct vsr_request_header *rq = (const struct vsr_request_header *)msg->data;
      memset(out->data + 128, 0, 128);
      rp->client = rq->client;
      rp->request = rq->request;
      rp->request_checksum = rq->request_checksum;
      rp->operation = rq->operation;
      rp->op = rp->commit = 1;
    } else if (cmd == VSR_CMD_PING_CLIENT || cmd == VSR_CMD_PING) {
      out->data[60] = cmd + 1;
      memcpy(out->data + 128, msg->data + 128, 128);
    } else {
      vsr_msg_unref(out); /* unexpected command: ignored, connection kept */
      return;
    }
    vsr_bus_send_to_client(bus, peer, out);
    vsr_msg_unref(out);
  }
}

static inline void h_on_peer_event(void *user, struct vsr_bus *bus, const struct vsr_peer_event *ev) {
  (void)bus;
  struct h_node *n = user;
  pthread_mutex_lock(&n->mu);
  if (n->nevents < H_EVENTS_MAX) {
    n->events[n->nevents++] = (struct h_event){ev->kind, ev->plane, ev->id, ev->reason};
  }
  pthread_cond_broadcast(&n->cv);
  pthread_mutex_unlock(&n->mu);
}

static inline void *h_thread(void *arg) {
  struct h_node *n = arg;
  struct vsr_bus_callbacks cb = {.on_message = h_on_message, .on_peer_event = h_on_peer_event};
  n->start_err = vsr_bus_new(&n->bus, &n->opts, &cb, n);
  if (n->start_err) {
    atomic_store(&n->ready, -1);
    return NULL;
  }
  vsr_bus_listen_addr(n->bus, "tcp", n->addr, sizeof n->addr);
  atomic_store(&n->ready, 1);
  while (!atomic_load(&n->stop)) {
    vsr_bus_run_once(n->bus, 1000000);
    pthread_mutex_lock(&n->mu);
    if (n->task && !n->task_done) {
      n->task(n, n->task_arg);
      n->task_done = true;
      pthread_cond_broadcast(&n->cv);
    }
    pthread_mutex_unlock(&n->mu);
  }
  if (atomic_load(&n->stop) == 1) {
    n->shutdown_result = vsr_bus_shutdown(n->bus, n->shutdown_timeout_ns);
  }
  vsr_bus_del(n->bus);
  return NULL;
}

static inline void h_options(struct h_node *n) {
  memset(n, 0, sizeof *n);
  vsr_bus_options_default(&n->opts);
  n->opts.client_tcp_addr = "127.0.0.1:0";
  n->opts.loop_options.pool.prealloc[0] = 256;
  n->opts.loop_options.pool.prealloc[1] = 4;
  n->shutdown_timeout_ns = 5 * H_SEC;
}

/* Starts the bus thread; returns 0 or the bus creation error. */
static inline int h_start(struct h_node *n) {
  pthread_mutex_init(&n->mu, NULL);
  pthread_cond_init(&n->cv, NULL);
  if (pthread_create(&n->thread, NULL, h_thread, n) != 0) return VSR_ENOMEM;
  uint64_t end = vsrt_now() + 10 * H_SEC;
  while (atomic_load(&n->ready) == 0 && vsrt_now() < end) usleep(1000);
  if (atomic_load(&n->ready) != 1) {
    pthread_join(n->thread, NULL);
    return n->start_err ? n->start_err : VSR_ETIMEDOUT;
  }
  return 0;
}

/* Stops the bus: graceful (vsr_bus_shutdown) or at once. */
static inline void h_stop(struct h_node *n, bool graceful) {
  atomic_store(&n->stop, graceful ? 1 : 2);
  pthread_join(n->thread, NULL);
  pthread_mutex_destroy(&n->mu);
  pthread_cond_destroy(&n->cv);
}

/* Runs |fn| on the bus thread and waits for it. */
static inline void h_run(struct h_node *n, void (*fn)(struct h_node *, void *), void *arg) {
  pthread_mutex_lock(&n->mu);
  n->task = fn;
  n->task_arg = arg;
  n->task_done = false;
  while (!n->task_done) pthread_cond_wait(&n->cv, &n->mu);
  n->task = NULL;
  pthread_mutex_unlock(&n->mu);
}

static inline int h_count(struct h_node *n, enum vsr_peer_event_kind kind) {
  int c = 0;
  for (int i = 0; i < n->nevents; i++) c += n->events[i].kind == kind;
  return c;
}

/* Waits (bounded) until at least |want| events of |kind| were seen. Returns the count. */
static inline int h_wait_events(struct h_node *n, enum vsr_peer_event_kind kind, int want,
                         uint64_t timeout_ns) {
  uint64_t end = vsrt_now() + timeout_ns;
  pthread_mutex_lock(&n->mu);
  int c;
  while ((c = h_count(n, kind)) < want && vsrt_now() < end) {
    pthread_mutex_unlock(&n->mu);
    usleep(1000);
    pthread_mutex_lock(&n->mu);
  }
  pthread_mutex_unlock(&n->mu);
  return c;
}

/* The reason of the |i|-th LOST event (0-based), or 1 if there is none. */
static inline int h_lost_reason(struct h_node *n, int i) {
  pthread_mutex_lock(&n->mu);
  int r = 1;
  for (int k = 0; k < n->nevents; k++) {
    if (n->events[k].kind == VSR_PEER_LOST && i-- == 0) {
      r = n->events[k].reason;
      break;
    }
  }
  pthread_mutex_unlock(&n->mu);
  return r;
}

static inline struct vsr_client *h_client(struct h_node *n) {
  struct vsr_client_options o;
  vsr_client_options_default(&o);
  o.addr = n->addr;
  struct vsr_client *c = NULL;
  int err = vsr_client_connect(&c, &o, 5 * H_SEC);
  if (err) fprintf(stderr, "h_client: %s\n", vsr_strerror(err));
  return c;
}

/* A raw blocking socket to the node, for bad input. */
static inline int h_raw(struct h_node *n) { return vsrt_connect(n->addr); }

/* Reads until EOF (bounded by SO_RCVTIMEO). Returns bytes read before EOF, or -1 on timeout. */
static inline long h_read_to_eof(int fd) {
  char buf[4096];
  long total = 0;
  for (;;) {
    ssize_t r = read(fd, buf, sizeof buf);
    if (r == 0) return total;
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      if (errno == ECONNRESET) return total;
      fprintf(stderr, "h_read_to_eof: %s after %ld bytes\n", strerror(errno), total);
      return -1;
    }
    total += r;
  }
}

/* Fills a frame: header (command, size) + deterministic body. */
static inline struct vsr_msg *h_frame(struct vsr_client *c, uint8_t cmd, uint32_t size, uint32_t seed) {
  struct vsr_msg *m = vsr_client_msg_new(c, size);
  if (!m) return NULL;
  m->data[60] = cmd;
  if (cmd == VSR_CMD_REQUEST) {
    struct vsr_request_header *rq = (struct vsr_request_header *)m->data;
    rq->client = vsr_u128_from_u64(0x1234);
    rq->request = seed + 1;
    rq->session = 1;
    rq->operation = VSR_OP_SEND_MESSAGES;
  }
  vsr_put_u32(m->data + 128 + 64, seed); /* in reserved_command of generic frames */
  for (uint32_t i = 256; i < size; i++) m->data[i] = (uint8_t)(seed * 31 + i);
  vsr_frame_seal(m->data);
  return m;
}

/* The id of the first client that connected to |n| (0 after 5 s without one). */
static inline uint64_t h_first_client(struct h_node *n) {
  uint64_t end = vsrt_now() + 5 * H_SEC;
  while (vsrt_now() < end) {
    pthread_mutex_lock(&n->mu);
    for (int i = 0; i < n->nevents; i++) {
      if (n->events[i].kind == VSR_PEER_CONNECTED) {
        uint64_t id = n->events[i].id;
        pthread_mutex_unlock(&n->mu);
        return id;
      }
    }
    pthread_mutex_unlock(&n->mu);
    usleep(1000);
  }
  return 0;
}

/* h_run task: |tries| PongClient frames of |size| to |client| inside one loop turn (nothing is
 * written in between), each send's result counted. A frame that cannot be built counts as
 * |other|. */
struct h_flood_arg {
  uint64_t client;
  uint32_t size;
  int tries, ok, backpressure, other;
};

static inline void h_flood_task(struct h_node *n, void *arg) {
  struct h_flood_arg *a = arg;
  for (int i = 0; i < a->tries; i++) {
    struct vsr_msg *m = vsr_bus_msg_new(n->bus, a->size);
    if (!m) {
      a->other++;
      continue;
    }
    m->data[60] = VSR_CMD_PONG_CLIENT;
    int r = vsr_bus_send_to_client(n->bus, a->client, m);
    if (r == 0) a->ok++;
    else if (r == VSR_EBACKPRESSURE) a->backpressure++;
    else a->other++;
    vsr_msg_unref(m);
  }
}

#endif
