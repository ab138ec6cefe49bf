/* Shards (issue 18, docs/shards.md): vsr_bus_options.shards = N runs the TCP client plane on N
 * loops on N threads. Many clients each get every reply exactly once, in order; the clients
 * land on more than one shard (vsr_bus_shard_stats); a client flood on one shard does not cost
 * another shard's clients a frame; the replica plane works beside the shards; a graceful
 * shutdown reports every client lost and joins the worker threads (none is left running);
 * max_clients holds over every shard. Runs on both io backends (VSRBUS_IO). */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "harness.h"
#include "replica_harness.h"

#define CLIENTS 32
#define FRAMES 20

/* Threads of this process now (/proc/self/task). */
static int thread_count(void) {
  DIR *d = opendir("/proc/self/task");
  if (!d) return -1;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d))) n += e->d_name[0] != '.';
  closedir(d);
  return n;
}

struct shard_view {
  uint32_t shards;
  struct vsr_bus_stats total, per[4];
  int rc[4];
};

static void shard_view_task(struct h_node *n, void *arg) {
  struct shard_view *v = arg;
  v->shards = vsr_bus_shards(n->bus);
  vsr_bus_stats(n->bus, &v->total);
  for (uint32_t k = 0; k < 4; k++) v->rc[k] = vsr_bus_shard_stats(n->bus, k, &v->per[k]);
}

static struct shard_view shard_view(struct h_node *n) {
  struct shard_view v;
  memset(&v, 0, sizeof v);
  h_run(n, shard_view_task, &v);
  return v;
}

static uint32_t seed_of(const struct vsr_msg *m) { return vsr_get_u32(m->data + 128 + 64); }

/* The client ids the node reported connected, in order. */
static int connected_ids(struct h_node *n, uint64_t *ids, int max) {
  pthread_mutex_lock(&n->mu);
  int k = 0;
  for (int i = 0; i < n->nevents && k < max; i++) {
    if (n->events[i].kind == VSR_PEER_CONNECTED) ids[k++] = n->events[i].id;
  }
  pthread_mutex_unlock(&n->mu);
  return k;
}

/* Worker stats are published after each of the worker's loop turns: wait (bounded) until the
 * shards together show |want| clients. */
static struct shard_view wait_clients(struct h_node *n, uint64_t want) {
  struct shard_view v;
  uint64_t end = vsrt_now() + 10 * H_SEC;
  do {
    v = shard_view(n);
    if (v.total.clients_active == want) break;
    usleep(2000);
  } while (vsrt_now() < end);
  return v;
}

static void many_clients(uint32_t shards) {
  struct h_node n;
  h_options(&n);
  n.mode = H_ECHO;
  n.opts.shards = shards;
  assert_int_equal(h_start(&n), 0);
  struct vsr_client *cs[CLIENTS];
  for (int i = 0; i < CLIENTS; i++) {
    cs[i] = h_client(&n);
    assert_non_null(cs[i]);
  }
  assert_int_equal(h_wait_events(&n, VSR_PEER_CONNECTED, CLIENTS, 10 * H_SEC), CLIENTS);
  /* Every client sends FRAMES frames at once; each gets all of them back, once, in order. */
  for (int i = 0; i < CLIENTS; i++) {
    for (int f = 0; f < FRAMES; f++) {
      struct vsr_msg *m = h_frame(cs[i], VSR_CMD_REQUEST, 256 + 64 * (uint32_t)f,
                                  (uint32_t)(i * 1000 + f));
      assert_non_null(m);
      assert_int_equal(vsr_client_send(cs[i], m), 0);
      vsr_msg_unref(m);
    }
  }
  for (int i = 0; i < CLIENTS; i++) {
    for (int f = 0; f < FRAMES; f++) {
      struct vsr_msg *r = NULL;
      assert_int_equal(vsr_client_recv(cs[i], &r, 10 * H_SEC), 0);
      assert_int_equal(seed_of(r), (uint32_t)(i * 1000 + f));
      assert_int_equal(r->size, 256 + 64 * (uint32_t)f);
      vsr_msg_unref(r);
    }
    struct vsr_msg *extra = NULL; /* exactly once: nothing more arrives */
    assert_int_equal(vsr_client_recv(cs[i], &extra, 0), VSR_ETIMEDOUT);
  }
  /* The clients are spread: more than one shard holds some, and the shards add up. */
  struct shard_view v = wait_clients(&n, CLIENTS);
  assert_int_equal(v.shards, shards);
  assert_int_equal(v.total.clients_active, CLIENTS);
  assert_int_equal(v.total.frames_in, CLIENTS * FRAMES);
  uint32_t busy = 0;
  uint64_t sum = 0;
  for (uint32_t k = 0; k < 4; k++) {
    if (k >= shards) {
      assert_int_equal(v.rc[k], VSR_EINVAL);
      continue;
    }
    assert_int_equal(v.rc[k], 0);
    busy += v.per[k].clients_active > 0;
    sum += v.per[k].clients_active;
  }
  assert_true(busy >= 2);
  assert_int_equal(sum, CLIENTS);
  /* Client ids name their shard (bits 24..31), all of them below |shards|. */
  uint64_t ids[CLIENTS];
  assert_int_equal(connected_ids(&n, ids, CLIENTS), CLIENTS);
  for (int i = 0; i < CLIENTS; i++) assert_true(((ids[i] >> 24) & 0xff) < shards);

  for (int i = 0; i < CLIENTS; i++) vsr_client_del(cs[i]);
  assert_int_equal(h_wait_events(&n, VSR_PEER_LOST, CLIENTS, 10 * H_SEC), CLIENTS);
  h_stop(&n, true);
  assert_int_equal(n.shutdown_result, 0);
}

static void many_clients_two_shards(void **state) {
  (void)state;
  many_clients(2);
}

static void many_clients_three_shards(void **state) {
  (void)state;
  many_clients(3);
}

/* Clients on shard 1 flood the node with 16 KiB frames (echoed back, which they do not read
 * until the end); clients on shard 0 meanwhile do request / reply and lose nothing. */
static void flood_on_one_shard_costs_others_nothing(void **state) {
  (void)state;
  struct h_node n;
  h_options(&n);
  n.mode = H_ECHO;
  n.opts.shards = 2;
  assert_int_equal(h_start(&n), 0);
  /* Connect until each shard holds two clients (bounded: the kernel picks the shard). */
  struct vsr_client *cs[64], *on[2][2] = {{NULL, NULL}, {NULL, NULL}};
  int have[2] = {0, 0}, nc = 0;
  while (nc < 64 && (have[0] < 2 || have[1] < 2)) {
    cs[nc] = h_client(&n);
    assert_non_null(cs[nc]);
    nc++;
    assert_int_equal(h_wait_events(&n, VSR_PEER_CONNECTED, nc, 10 * H_SEC), nc);
    uint64_t ids[64];
    assert_int_equal(connected_ids(&n, ids, nc), nc);
    uint32_t k = (uint32_t)(ids[nc - 1] >> 24) & 0xff; /* the newest client's shard */
    assert_true(k < 2);
    if (have[k] < 2) on[k][have[k]++] = cs[nc - 1];
  }
  assert_int_equal(have[0], 2);
  assert_int_equal(have[1], 2);
  /* Flood from shard 1: 400 x 16 KiB per client, nothing read. */
  for (int c = 0; c < 2; c++) {
    for (int f = 0; f < 400; f++) {
      struct vsr_msg *m = h_frame(on[1][c], VSR_CMD_REQUEST, 16384, (uint32_t)(900000 + f));
      assert_non_null(m);
      int r = vsr_client_send(on[1][c], m);
      assert_true(r == 0 || r == VSR_EBACKPRESSURE);
      vsr_msg_unref(m);
    }
  }
  /* Shard 0's clients: 200 round trips each, every reply exactly the request. */
  for (int f = 0; f < 200; f++) {
    for (int c = 0; c < 2; c++) {
      struct vsr_msg *m = h_frame(on[0][c], VSR_CMD_REQUEST, 1024, (uint32_t)(c * 10000 + f));
      struct vsr_msg *r = NULL;
      assert_int_equal(vsr_client_call(on[0][c], m, &r, 10 * H_SEC), 0);
      assert_int_equal(seed_of(r), (uint32_t)(c * 10000 + f));
      vsr_msg_unref(r);
      vsr_msg_unref(m);
    }
  }
  for (int i = 0; i < nc; i++) vsr_client_del(cs[i]);
  assert_int_equal(h_wait_events(&n, VSR_PEER_LOST, nc, 10 * H_SEC), nc);
  h_stop(&n, true);
}

/* Two replicas, each with two shards: the replica plane on shard 0 authenticates and carries
 * Prepares both ways while TCP clients are served beside it. */
static void replica_plane_with_shards(void **state) {
  (void)state;
  struct r_node r[2];
  r_options(&r[0], 0, 2);
  r_options(&r[1], 1, 2);
  for (int i = 0; i < 2; i++) {
    r[i].opts.client_tcp_addr = "127.0.0.1:0";
    r[i].opts.shards = 2;
  }
  r[1].answer_prepare = true;
  assert_int_equal(r_start_cluster(r, 2), 0);
  assert_int_equal(r_wait(&r[0], VSR_PEER_AUTHENTICATED, 1, 1, 10 * R_SEC), 1);
  assert_int_equal(r_wait(&r[1], VSR_PEER_AUTHENTICATED, 0, 1, 10 * R_SEC), 1);
  for (uint64_t op = 1; op <= 100; op++) {
    assert_int_equal(r_send(&r[0], 1, VSR_CMD_PREPARE, op), 0);
  }
  assert_int_equal(r_wait_frames(&r[0], VSR_CMD_PREPARE_OK, 100, 10 * R_SEC), 100);
  pthread_mutex_lock(&r[1].mu);
  for (int i = 0; i < 100; i++) assert_int_equal(r[1].frames[i].op, (uint64_t)i + 1);
  pthread_mutex_unlock(&r[1].mu);
  struct r_stats_arg s = r_stats(&r[0]);
  assert_int_equal(s.st.replicas_connected, 1);
  r_stop(&r[0], true);
  r_stop(&r[1], true);
}

/* A graceful shutdown with clients on every shard: each is reported lost exactly once, the
 * shutdown is clean, and the worker threads are gone when vsr_bus_del returned. */
static void shutdown_joins_workers(void **state) {
  (void)state;
  int before = thread_count();
  assert_true(before > 0);
  struct h_node n;
  h_options(&n);
  n.mode = H_ECHO;
  n.opts.shards = 3;
  assert_int_equal(h_start(&n), 0);
  assert_int_equal(thread_count(), before + 3); /* the harness thread and two workers */
  struct vsr_client *cs[16];
  for (int i = 0; i < 16; i++) {
    cs[i] = h_client(&n);
    assert_non_null(cs[i]);
  }
  assert_int_equal(h_wait_events(&n, VSR_PEER_CONNECTED, 16, 10 * H_SEC), 16);
  h_stop(&n, true);
  assert_int_equal(n.shutdown_result, 0);
  assert_int_equal(h_count(&n, VSR_PEER_LOST), 16);
  assert_int_equal(thread_count(), before);
  for (int i = 0; i < 16; i++) {
    struct vsr_msg *m = NULL;
    assert_int_not_equal(vsr_client_recv(cs[i], &m, 5 * H_SEC), 0); /* closed by the node */
    vsr_client_del(cs[i]);
  }
}

/* max_clients counts every shard's clients: with 6 allowed and 3 shards, the 7th and 8th
 * clients are refused wherever they land. */
static void max_clients_is_node_wide(void **state) {
  (void)state;
  struct h_node n;
  h_options(&n);
  n.opts.shards = 3;
  n.opts.max_clients = 6;
  assert_int_equal(h_start(&n), 0);
  struct vsr_client *cs[8];
  for (int i = 0; i < 8; i++) {
    cs[i] = h_client(&n);
    assert_non_null(cs[i]); /* TCP connects; the refusal closes it */
  }
  assert_int_equal(h_wait_events(&n, VSR_PEER_CONNECTED, 6, 10 * H_SEC), 6);
  struct shard_view v;
  uint64_t end = vsrt_now() + 10 * H_SEC;
  do {
    v = shard_view(&n);
    if (v.total.clients_refused == 2) break;
    usleep(2000);
  } while (vsrt_now() < end);
  assert_int_equal(v.total.clients_refused, 2);
  assert_int_equal(v.total.clients_active, 6);
  usleep(100000); /* nothing else is admitted later */
  assert_int_equal(h_count(&n, VSR_PEER_CONNECTED), 6);
  for (int i = 0; i < 8; i++) vsr_client_del(cs[i]);
  h_stop(&n, true);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(many_clients_two_shards),
      cmocka_unit_test(many_clients_three_shards),
      cmocka_unit_test(flood_on_one_shard_costs_others_nothing),
      cmocka_unit_test(replica_plane_with_shards),
      cmocka_unit_test(shutdown_joins_workers),
      cmocka_unit_test(max_clients_is_node_wide),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
