/* The bus's limits on what a peer may cost: slow consumers (a queue that stays full), the
 * frame and idle timeouts (one sweep over receive clocks), and the memory budgets set up at
 * start. Split from bus.c; the peers and queues these act on are bus.c's. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bus/bus_impl.h"
#include "frame/decode.h"
#include "util/alloc.h"
#include "util/log.h"
#include "util/pool.h"

#define BUS_TIMEOUT_SWEEP_MIN_NS 10000000ull   /* timeout sweeps run at most every 10 ms */
#define BUS_TIMEOUT_SWEEP_MAX_NS 1000000000ull /* and at least every second */

/* ---- slow consumers --------------------------------------------------------------------- */

/* A peer's full-queue episode starts at the first refused send and ends when the queue is seen
 * back at half its frame capacity and half its byte budget (at a send or a sweep). An episode
 * that lasts slow_peer_timeout closes the peer. The sweep timer runs only while some peer is
 * listed, and only listed peers are visited: no timer per peer or per message. */

void vsri_bus_full_unlink(struct bus_peer *p) {
  if (!p->full_since_ns) return;
  vsri_list_remove(&p->full_link);
  p->full_since_ns = 0;
}

/* Room for |m|: under the frame cap and the byte budget (buffer bytes, what the queue pins). An
 * empty queue always takes one frame, so a frame larger than the budget can still be sent. */
bool vsri_bus_queue_room(const struct vsr_bus *bus, const struct bus_peer *p,
                         const struct vsr_msg *m) {
  uint64_t max = bus->opts.peer_queue_bytes_max;
  uint32_t len = vsri_sendq_len(&p->q);
  if (len == vsri_sendq_cap(&p->q)) return false;
  return max == 0 || len == 0 || p->q.bytes + m->capacity <= max;
}

bool vsri_bus_queue_relieved(const struct vsr_bus *bus, const struct bus_peer *p) {
  uint64_t max = bus->opts.peer_queue_bytes_max;
  return vsri_sendq_len(&p->q) <= vsri_sendq_cap(&p->q) / 2 &&
         (max == 0 || p->q.bytes <= max / 2);
}

/* A quarter of the timeout (1 ms .. 1 s): a stuck peer is closed within 1.25 timeouts. */
static uint64_t bus_sweep_period(const struct vsr_bus *bus) {
  uint64_t t = bus->opts.slow_peer_timeout_ns / 4;
  return t < 1000000 ? 1000000 : t > 1000000000 ? 1000000000 : t;
}

static void bus_slow_close(struct bus_peer *p, uint64_t now) {
  struct vsr_bus *bus = p->bus;
  uint64_t full_ms = (now - p->full_since_ns) / 1000000;
  vsri_bus_full_unlink(p);
  bus->stats.slow_peers_closed++;
  VSRI_WARN("VSR-SLOW", "%s %s: %s %llx is not reading: send queue full for %llu ms (%u frames, "
            "%llu buffer bytes held; %llu frames refused); closing (VSR_ESLOW_PEER)",
            p->tops->peer_name(p->conn), p->tops->name,
            p->plane == VSR_PLANE_CLIENT ? "client" : "replica", (unsigned long long)p->id,
            (unsigned long long)full_ms, vsri_sendq_len(&p->q), (unsigned long long)p->q.bytes,
            (unsigned long long)p->drops_backpressure);
  vsri_bus_peer_close(p, VSR_ESLOW_PEER, false); /* not reading: nothing to drain */
}

/* A listed peer: relieved, it leaves the list; full for too long, it is closed. */
static void bus_full_check(struct bus_peer *p, uint64_t now) {
  if (vsri_bus_queue_relieved(p->bus, p)) vsri_bus_full_unlink(p);
  else if (now - p->full_since_ns >= p->bus->opts.slow_peer_timeout_ns) bus_slow_close(p, now);
}

static void bus_sweep_cb(struct vsri_io *io, struct vsri_completion *c, int32_t res) {
  struct vsr_bus *bus = c->ctx;
  if (res < 0 || bus->shutting_down) return;
  uint64_t now = vsri_io_now(io);
  struct vsri_list_node *n, *tmp;
  vsri_list_for_each_safe(n, tmp, &bus->full) { /* closing only unlinks; freed later */
    bus_full_check(vsri_container_of(n, struct bus_peer, full_link), now);
  }
  if (!vsri_list_empty(&bus->full)) {
    vsri_io_timeout(io, &bus->slow_sweep, bus_sweep_period(bus), bus_sweep_cb, bus);
  }
}

/* A send to |p| was just refused: start its episode, or close it if the episode is too old. */
void vsri_bus_full_note(struct vsr_bus *bus, struct bus_peer *p) {
  if (!bus->opts.slow_peer_timeout_ns || bus->shutting_down) return;
  uint64_t now = vsri_io_now(bus->loop->io);
  if (p->full_since_ns) {
    bus_full_check(p, now);
    return;
  }
  p->full_since_ns = now ? now : 1;
  vsri_list_push_back(&bus->full, &p->full_link);
  if (!bus->slow_sweep.pending) {
    vsri_io_timeout(bus->loop->io, &bus->slow_sweep, bus_sweep_period(bus), bus_sweep_cb, bus);
  }
}

/* ---- timeouts -------------------------------------------------------------------------- */

/* One periodic sweep per bus reads every peer's receive clock (stamped by the transport as bytes
 * arrive, from the loop's cached time): O(peers) per period, no timer per connection or read.
 * A connection is closed at most one period after its deadline. */
static bool bus_overdue(uint64_t now, uint64_t since, uint64_t limit) {
  return limit && since && now > since && now - since >= limit;
}

static void bus_check_peer(struct vsr_bus *bus, struct bus_peer *p, uint64_t now) {
  if (!p || p->state != BUS_PEER_ACTIVE || !p->conn) return;
  const struct vsr_bus_options *o = &bus->opts;
  struct vsri_rx_clock rx;
  p->tops->rx_clock(p->conn, &rx);
  char who[40];
  snprintf(who, sizeof who, p->plane == VSR_PLANE_CLIENT ? "client %llx" : "replica %llu",
           (unsigned long long)p->id);
  if (bus_overdue(now, rx.frame_start_ns, o->frame_timeout_ns)) {
    char got[64];
    if (rx.frame_size) snprintf(got, sizeof got, "%u of %u bytes", rx.frame_have, rx.frame_size);
    else snprintf(got, sizeof got, "%u of %u header bytes", rx.frame_have, VSR_HEADER_SIZE);
    VSRI_WARN("VSR-TIMEOUT", "%s %s: %s: frame not complete %llu ms after its first byte "
              "(%s; frame_timeout %llu ms) (%s); closing", p->tops->peer_name(p->conn),
              p->tops->name, who,
              (unsigned long long)((now - rx.frame_start_ns) / 1000000), got,
              (unsigned long long)(o->frame_timeout_ns / 1000000),
              vsr_errname(VSR_EFRAME_TIMEOUT));
    vsri_bus_peer_close(p, VSR_EFRAME_TIMEOUT, true);
    return;
  }
  /* Replica links are not idled out: an idle cluster is quiet, and VSR's own timeouts (the
   * primary's Commit heartbeats, view changes) judge a silent replica. */
  if (p->plane == VSR_PLANE_CLIENT && !rx.frame_start_ns &&
      bus_overdue(now, rx.last_rx_ns, o->client_idle_timeout_ns)) {
    VSRI_INFO("VSR-TIMEOUT", "%s %s: client %llx sent nothing for %llu ms "
              "(client_idle_timeout) (%s); closing", p->tops->peer_name(p->conn),
              p->tops->name, (unsigned long long)p->id,
              (unsigned long long)((now - rx.last_rx_ns) / 1000000), vsr_errname(VSR_EIDLE));
    vsri_bus_peer_close(p, VSR_EIDLE, true);
  }
}

static void bus_timeout_cb(struct vsri_io *io, struct vsri_completion *t, int32_t res) {
  struct vsr_bus *bus = t->ctx;
  if (res == -ECANCELED || bus->shutting_down) return;
  uint64_t now = vsri_io_now(io);
  /* Closing never frees a peer from inside this loop: on_closed comes later, from the loop. */
  for (uint32_t i = 0; i < bus->client_slots_len; i++) {
    bus_check_peer(bus, bus->client_slots[i], now);
  }
  for (int i = 0; i < VSR_MAX_REPLICAS; i++) bus_check_peer(bus, bus->replicas[i], now);
  vsri_io_timeout(io, &bus->timeout_sweep, bus->timeout_period_ns, bus_timeout_cb, bus);
}

void vsri_bus_timeout_start(struct vsr_bus *bus) {
  uint64_t a = bus->opts.frame_timeout_ns, b = bus->opts.client_idle_timeout_ns;
  uint64_t shortest = !a ? b : !b ? a : a < b ? a : b;
  if (!shortest) return;
  uint64_t period = shortest / 4;
  if (period < BUS_TIMEOUT_SWEEP_MIN_NS) period = BUS_TIMEOUT_SWEEP_MIN_NS;
  if (period > BUS_TIMEOUT_SWEEP_MAX_NS) period = BUS_TIMEOUT_SWEEP_MAX_NS;
  bus->timeout_period_ns = period;
  vsri_io_timeout(bus->loop->io, &bus->timeout_sweep, period, bus_timeout_cb, bus);
}

/* Takes the sweep out of the loop: it never fires again (no loop turn needed). */
void vsri_bus_timeout_stop(struct vsr_bus *bus) {
  if (bus->loop) vsri_io_timeout_drop(bus->loop->io, &bus->timeout_sweep);
}


#define BUS_MEMORY_MIN (256ull << 20)

/* Physical memory, or the cgroup (v2) memory.max when that is smaller. 0 if unknown. */
static uint64_t bus_memory_total(void) {
  long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
  uint64_t total = pages > 0 && psz > 0 ? (uint64_t)pages * (uint64_t)psz : 0;
  FILE *f = fopen("/sys/fs/cgroup/memory.max", "r");
  if (f) {
    unsigned long long lim;
    if (fscanf(f, "%llu", &lim) == 1 && lim > 0 && (total == 0 || lim < total)) total = lim;
    fclose(f);
  }
  return total;
}

/* The default node-wide cap: a quarter of the machine (or cgroup), at least 256 MiB. */
uint64_t vsri_bus_memory_default(void) {
  uint64_t q = bus_memory_total() / 4;
  return q < BUS_MEMORY_MIN ? BUS_MEMORY_MIN : q;
}

uint64_t vsri_bus_pool_prealloc_bytes(const struct vsr_pool_options *po) {
  return (uint64_t)po->prealloc[0] * (4u << 10) + (uint64_t)po->prealloc[1] * (64u << 10) +
         (uint64_t)po->prealloc[2] * (1u << 20);
}

/* Fills the budgets from the options once the pool (and so memory_max) is known. */
int vsri_bus_setup_memory(struct vsr_bus *bus) {
  struct vsr_bus_options *o = &bus->opts;
  uint64_t mmax = vsri_pool_bytes_max(bus->loop->pool);
  bool replica_plane = o->cluster_name && o->replica_count > 1;
  uint64_t client = o->client_memory_budget ? o->client_memory_budget : mmax / 2;
  uint64_t replica = o->replica_memory_budget;
  if (!replica && replica_plane) {
    replica = mmax / 4;
    uint64_t need = (uint64_t)(o->replica_count - 1) * o->max_message_size;
    if (need < replica) replica = need;
  }
  if (!replica_plane) replica = 0;
  if (client + replica > mmax) {
    VSRI_ERROR("VSR-CONFIG", "client_memory_budget %llu + replica_memory_budget %llu exceed "
               "memory_max %llu", (unsigned long long)client, (unsigned long long)replica,
               (unsigned long long)mmax);
    return VSR_ECONFIG;
  }
  o->memory_max = mmax;
  o->client_memory_budget = client;
  o->replica_memory_budget = replica;
  if (!o->conn_memory_budget) o->conn_memory_budget = o->max_message_size;
  if (!o->frame_allowance) o->frame_allowance = VSRI_DECODE_ALLOWANCE;
  bus->budget[VSR_PLANE_CLIENT] = (struct vsri_mem_budget){
      .name = "client plane",
      .max = client,
      .protect = replica ? &bus->budget[VSR_PLANE_REPLICA] : NULL,
  };
  /* The replica budget refuses nothing (authenticated frames are reserved whole, handshakes
   * are 256 bytes): it is the share the client plane must leave free. */
  bus->budget[VSR_PLANE_REPLICA] = (struct vsri_mem_budget){
      .name = "replica plane", .max = replica, .reserve_only = true};
  VSRI_INFO("VSR-MEMORY", "memory_max %llu MiB; client plane budget %llu MiB (allowance %u "
            "bytes, %u bytes per connection); replica plane reserve %llu MiB",
            (unsigned long long)(mmax >> 20), (unsigned long long)(client >> 20),
            o->frame_allowance, o->conn_memory_budget, (unsigned long long)(replica >> 20));
  return 0;
}
