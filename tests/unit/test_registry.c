/* Client registry, through the public bus API: a bus and its SDK clients on one loop in the
 * test thread, on each io backend. Client ids are (sequence << 32) | slot; a freed slot is
 * reused under a new sequence, so an id of a gone client is refused and never reaches the
 * client that now holds its slot; max_clients bounds the registry. Every wait is bounded. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "vsrbus/vsrbus.h"

#define R_SEC 1000000000ull
#define R_MS 1000000ull
#define R_EVENTS 64
#define R_TAGS 16

struct r_backend {
  const char *label;
  enum vsr_io_backend kind;
};

static struct r_backend r_epoll = {"epoll", VSR_IO_EPOLL};
static struct r_backend r_uring = {"io_uring", VSR_IO_URING};

struct r_env {
  struct vsr_loop *loop;
  struct vsr_bus *bus;
  char addr[64];
  struct vsr_peer_event events[R_EVENTS];
  int nevents;
};

struct r_client {
  struct vsr_client *c;
  uint64_t id; /* as the bus announced it */
  int state;
  uint32_t tags[R_TAGS];
  int ntags;
};

static void r_on_peer_event(void *user, struct vsr_bus *bus, const struct vsr_peer_event *ev) {
  (void)bus;
  struct r_env *e = user;
  assert_true(e->nevents < R_EVENTS);
  e->events[e->nevents] = *ev;
  e->events[e->nevents].transport = NULL; /* not kept past the call */
  e->events[e->nevents].addr = NULL;
  e->nevents++;
}

static void r_on_message(void *user, struct vsr_bus *bus, enum vsr_plane plane, uint64_t peer,
                         struct vsr_msg *msg) {
  (void)user;
  (void)bus;
  (void)plane;
  (void)peer;
  (void)msg;
}

static void r_client_on_message(void *user, struct vsr_client *c, struct vsr_msg *msg) {
  (void)c;
  struct r_client *rc = user;
  if (rc->ntags < R_TAGS) rc->tags[rc->ntags++] = vsr_get_u32(msg->data + 128 + 64);
}

static void r_client_on_state(void *user, struct vsr_client *c, int status) {
  (void)c;
  struct r_client *rc = user;
  rc->state = status == 0 ? 1 : status;
}

/* A bus on a loop of the backend in |state|, max_clients |max|; skips if io_uring is not
 * available here. */
static void r_env_init(void **state, struct r_env *e, uint32_t max) {
  const struct r_backend *b = *state;
  memset(e, 0, sizeof *e);
  struct vsr_loop_options lo;
  vsr_loop_options_default(&lo);
  lo.backend = b->kind;
  lo.pool.prealloc[0] = 16;
  lo.pool.prealloc[1] = 0;
  int err = vsr_loop_new(&e->loop, &lo);
  if (err == VSR_EUNSUPPORTED && b->kind == VSR_IO_URING) {
    print_message("skip %s: io_uring unavailable here\n", b->label);
    skip();
  }
  assert_int_equal(err, 0);
  assert_string_equal(vsr_loop_backend(e->loop), b->kind == VSR_IO_URING ? "io_uring" : "epoll");
  struct vsr_bus_options o;
  vsr_bus_options_default(&o);
  o.loop = e->loop;
  o.client_tcp_addr = "127.0.0.1:0";
  o.max_clients = max;
  struct vsr_bus_callbacks cb = {.on_message = r_on_message, .on_peer_event = r_on_peer_event};
  assert_int_equal(vsr_bus_new(&e->bus, &o, &cb, e), 0);
  assert_int_equal(vsr_bus_listen_addr(e->bus, "tcp", e->addr, sizeof e->addr), 0);
}

static bool r_shut_down(struct r_env *e, void *arg) {
  (void)arg;
  return vsr_bus_shutdown_done(e->bus);
}

static void r_run(struct r_env *e, bool (*done)(struct r_env *, void *), void *arg);

static void r_env_fini(struct r_env *e) {
  /* The loop is the test's: shut down without blocking, drive it until done. */
  assert_int_equal(vsr_bus_shutdown_start(e->bus, R_SEC), 0);
  r_run(e, r_shut_down, NULL);
  vsr_bus_del(e->bus);
  struct vsr_pool_stats ps;
  vsr_pool_stats(vsr_loop_pool(e->loop), &ps);
  assert_int_equal(ps.live, 0);
  vsr_loop_del(e->loop);
}

static void r_run(struct r_env *e, bool (*done)(struct r_env *, void *), void *arg) {
  uint64_t end = vsrt_now() + 5 * R_SEC;
  while (!done(e, arg)) {
    if (vsrt_now() > end) fail_msg("not done within 5 s");
    vsr_loop_run_once(e->loop, (int64_t)R_MS);
  }
}

static int r_count(struct r_env *e, enum vsr_peer_event_kind kind) {
  int n = 0;
  for (int i = 0; i < e->nevents; i++) n += e->events[i].kind == kind;
  return n;
}

struct r_wait {
  struct r_client *rc;
  int connected_before;
};

static bool r_settled(struct r_env *e, void *arg) {
  struct r_wait *w = arg;
  if (w->rc->state < 0) return true;
  return w->rc->state == 1 && r_count(e, VSR_PEER_CONNECTED) > w->connected_before;
}

/* Connects |rc|; returns once the client is connected and the bus announced it (id set), or
 * the client was closed (rc->state < 0). */
static void r_connect(struct r_env *e, struct r_client *rc) {
  memset(rc, 0, sizeof *rc);
  struct vsr_client_options o;
  vsr_client_options_default(&o);
  o.addr = e->addr;
  o.queue_capacity = 16;
  struct vsr_client_callbacks cb = {.on_message = r_client_on_message,
                                    .on_state = r_client_on_state};
  struct r_wait w = {rc, r_count(e, VSR_PEER_CONNECTED)};
  assert_int_equal(vsr_client_new(&rc->c, e->loop, &o, &cb, rc), 0);
  r_run(e, r_settled, &w);
  if (rc->state == 1) {
    for (int i = e->nevents; i-- > 0;) {
      if (e->events[i].kind == VSR_PEER_CONNECTED) {
        rc->id = e->events[i].id;
        break;
      }
    }
    assert_int_equal(e->events[e->nevents - 1].plane, VSR_PLANE_CLIENT);
  }
}

static bool r_has_tags(struct r_env *e, void *arg) {
  (void)e;
  struct r_client *rc = arg;
  return rc->ntags > 0 || rc->state < 0;
}

/* Sends a Ping tagged |tag| to |id|. Returns what vsr_bus_send_to_client returned. */
static int r_send(struct r_env *e, uint64_t id, uint32_t tag) {
  struct vsr_msg *m = vsr_bus_msg_new(e->bus, 256);
  assert_non_null(m);
  m->data[60] = VSR_CMD_PING;
  vsr_put_u32(m->data + 128 + 64, tag);
  vsr_frame_seal(m->data);
  int err = vsr_bus_send_to_client(e->bus, id, m);
  vsr_msg_unref(m);
  return err;
}

/* Sends |tag| to |rc|'s id and checks exactly |rc| got it. */
static void r_send_check(struct r_env *e, struct r_client *rc, uint32_t tag) {
  rc->ntags = 0;
  assert_int_equal(r_send(e, rc->id, tag), 0);
  r_run(e, r_has_tags, rc);
  assert_int_equal(rc->state, 1);
  assert_int_equal(rc->ntags, 1);
  assert_int_equal(rc->tags[0], tag);
}

static bool r_lost(struct r_env *e, void *arg) {
  return r_count(e, VSR_PEER_LOST) >= *(int *)arg;
}

static uint32_t r_slot(uint64_t id) { return (uint32_t)id; }
static uint64_t r_seq(uint64_t id) { return id >> 32; }

static void ids_carry_sequence_and_slot(void **state) {
  struct r_env e;
  r_env_init(state, &e, 100);
  struct r_client rc[3];
  for (int i = 0; i < 3; i++) {
    r_connect(&e, &rc[i]);
    assert_int_equal(rc[i].state, 1);
    assert_int_equal(r_seq(rc[i].id), (uint64_t)i + 1); /* sequence 1, 2, 3 */
    assert_true(r_slot(rc[i].id) < 100);
    for (int k = 0; k < i; k++) assert_int_not_equal(r_slot(rc[i].id), r_slot(rc[k].id));
  }
  /* Each id reaches its own connection and no other. */
  for (int i = 0; i < 3; i++) {
    for (int k = 0; k < 3; k++) rc[k].ntags = 0;
    r_send_check(&e, &rc[i], 0x100u + (uint32_t)i);
    for (int k = 0; k < 3; k++) {
      if (k != i) assert_int_equal(rc[k].ntags, 0);
    }
  }
  struct vsr_bus_stats bs;
  vsr_bus_stats(e.bus, &bs);
  assert_int_equal(bs.clients_accepted, 3);
  assert_int_equal(bs.clients_active, 3);
  for (int i = 0; i < 3; i++) vsr_client_del(rc[i].c);
  int want = 3;
  r_run(&e, r_lost, &want);
  r_env_fini(&e);
}

static void slot_reused_stale_id_refused(void **state) {
  struct r_env e;
  r_env_init(state, &e, 100);
  struct r_client a, b, c;
  r_connect(&e, &a);
  r_connect(&e, &b);
  assert_int_equal(a.state, 1);
  assert_int_equal(b.state, 1);
  assert_int_equal(vsr_bus_close_client(e.bus, a.id), 0);
  int want = 1;
  r_run(&e, r_lost, &want);
  assert_int_equal(e.events[e.nevents - 1].id, a.id);
  r_connect(&e, &c);
  assert_int_equal(c.state, 1);
  /* The freed slot is taken again, under a newer sequence. */
  assert_int_equal(r_slot(c.id), r_slot(a.id));
  assert_true(r_seq(c.id) > r_seq(b.id));
  assert_int_not_equal(c.id, a.id);
  /* The stale id names nobody, though its slot is in use again. */
  struct vsr_bus_stats before, after;
  vsr_bus_stats(e.bus, &before);
  assert_int_equal(r_send(&e, a.id, 0xdead), VSR_ENOTCONN);
  vsr_bus_stats(e.bus, &after);
  assert_int_equal(after.drops_not_connected, before.drops_not_connected + 1);
  struct vsr_peer_stats ps;
  assert_int_equal(vsr_bus_peer_stats(e.bus, VSR_PLANE_CLIENT, a.id, &ps), VSR_ENOTCONN);
  assert_int_equal(vsr_bus_close_client(e.bus, a.id), VSR_ENOTCONN);
  assert_int_equal(vsr_bus_peer_stats(e.bus, VSR_PLANE_CLIENT, c.id, &ps), 0);
  /* ... and the client holding the slot now got nothing meant for the old one. */
  for (int i = 0; i < 20; i++) vsr_loop_run_once(e.loop, (int64_t)R_MS);
  assert_int_equal(c.ntags, 0);
  assert_int_equal(c.state, 1);
  r_send_check(&e, &c, 0xc);
  r_send_check(&e, &b, 0xb);
  /* An id whose slot was never handed out is refused too. */
  assert_int_equal(r_send(&e, (1ull << 32) | 99, 0x99), VSR_ENOTCONN);
  vsr_client_del(a.c);
  vsr_client_del(b.c);
  vsr_client_del(c.c);
  want = 3;
  r_run(&e, r_lost, &want);
  r_env_fini(&e);
}

static void max_clients_bounds_registry(void **state) {
  struct r_env e;
  r_env_init(state, &e, 2);
  struct r_client a, b, c, d;
  r_connect(&e, &a);
  r_connect(&e, &b);
  assert_int_equal(a.state, 1);
  assert_int_equal(b.state, 1);
  r_connect(&e, &c); /* over the limit: the bus closes it */
  assert_true(c.state < 0);
  struct vsr_bus_stats bs;
  vsr_bus_stats(e.bus, &bs);
  assert_int_equal(bs.clients_accepted, 2);
  assert_int_equal(bs.clients_refused, 1);
  assert_int_equal(bs.clients_active, 2);
  assert_int_equal(r_count(&e, VSR_PEER_CONNECTED), 2);
  r_send_check(&e, &a, 0xa); /* the admitted ones are unaffected */
  /* A leaving client frees room for one more. */
  vsr_client_del(a.c);
  int want = 1;
  r_run(&e, r_lost, &want);
  r_connect(&e, &d);
  assert_int_equal(d.state, 1);
  assert_int_equal(r_slot(d.id), r_slot(a.id));
  r_send_check(&e, &d, 0xd);
  r_send_check(&e, &b, 0xb);
  vsr_bus_stats(e.bus, &bs);
  assert_int_equal(bs.clients_accepted, 3);
  assert_int_equal(bs.clients_refused, 1);
  assert_int_equal(bs.clients_active, 2);
  vsr_client_del(b.c);
  vsr_client_del(c.c);
  vsr_client_del(d.c);
  want = 3;
  r_run(&e, r_lost, &want);
  r_env_fini(&e);
}

#define R_BOTH(fn)                                      \
  cmocka_unit_test_prestate(fn, &r_epoll), cmocka_unit_test_prestate(fn, &r_uring)

int main(void) {
  const struct CMUnitTest tests[] = {
      R_BOTH(ids_carry_sequence_and_slot),
      R_BOTH(slot_reused_stale_id_refused),
      R_BOTH(max_clients_bounds_registry),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
