/* The bus's statistics: vsr_bus_stats / vsr_bus_peer_stats (the structs), and
 * vsr_bus_metrics_render (the same as Prometheus text, exposition format 0.0.4).
 * Every family has HELP and TYPE lines; names follow the Prometheus conventions (counters end
 * in _total, sizes in _bytes, times in _seconds). docs/observability.md lists them. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "bus/bus_impl.h"
#include "transport/quic.h"
#include "util/pool.h"
#include "vsrbus/vsrbus.h"

struct mx_out {
  char *buf;
  size_t len, pos; /* pos counts every byte, written or not */
};

static void mx_printf(struct mx_out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void mx_printf(struct mx_out *o, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  size_t room = o->pos < o->len ? o->len - o->pos : 0;
  int n = vsnprintf(room ? o->buf + o->pos : NULL, room, fmt, ap);
  va_end(ap);
  if (n > 0) o->pos += (size_t)n;
}

static void mx_family(struct mx_out *o, const char *name, const char *type, const char *help) {
  mx_printf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void mx_value(struct mx_out *o, const char *name, const char *labels, uint64_t v) {
  mx_printf(o, "%s%s%s%s %llu\n", name, labels ? "{" : "", labels ? labels : "",
            labels ? "}" : "", (unsigned long long)v);
}

static void mx_one(struct mx_out *o, const char *name, const char *type, const char *help,
                   uint64_t v) {
  mx_family(o, name, type, help);
  mx_value(o, name, NULL, v);
}

static void mx_seconds(struct mx_out *o, const char *name, const char *labels, uint64_t ns) {
  mx_printf(o, "%s{%s} %llu.%09llu\n", name, labels, (unsigned long long)(ns / 1000000000ull),
            (unsigned long long)(ns % 1000000000ull));
}

static const char *const mx_planes[2] = {"client", "replica"};
/* Frames and bytes by plane and transport (the rows of vsri_bus_transports); the replica plane
 * runs on TCP (row 0) only. */
static void mx_traffic(struct mx_out *o, const char *name, const char *help,
                       const uint64_t v[2][VSRI_BUS_TRANSPORTS]) {
  mx_family(o, name, "counter", help);
  for (int pl = 0; pl < 2; pl++) {
    for (int t = 0; t < (pl == VSR_PLANE_REPLICA ? 1 : VSRI_BUS_TRANSPORTS); t++) {
      char labels[64];
      snprintf(labels, sizeof labels, "plane=\"%s\",transport=\"%s\"", mx_planes[pl],
               vsri_bus_transports[t].name);
      mx_value(o, name, labels, v[pl][t]);
    }
  }
}

struct mx_live {
  uint64_t queue_frames[2], queue_bytes[2], queue_frames_max[2];
  uint64_t peers[2];
};

static void mx_add_peer(struct mx_live *l, const struct bus_peer *p) {
  if (!p) return;
  int pl = p->plane;
  uint32_t len = vsri_sendq_len(&p->q);
  l->queue_frames[pl] += len;
  l->queue_bytes[pl] += p->q.bytes;
  if (len > l->queue_frames_max[pl]) l->queue_frames_max[pl] = len;
  l->peers[pl]++;
}

static void mx_quic(struct mx_out *o, const struct vsr_bus *bus) {
  struct vsri_quic_conn_agg a = {0};
  struct vsri_quic_admission adm = {0};
  const struct vsri_listener *l = vsri_bus_client_listener(bus, "quic");
  if (l) {
    vsri_quic_listener_conn_agg(l, &a);
    vsri_quic_listener_admission(l, &adm);
  }
  vsri_shards_quic_add(bus, &adm); /* the counters of every shard; the gauges below shard 0's */
  mx_one(o, "vsrbus_quic_initials_total", "counter",
         "QUIC Initials for unknown connection IDs the listener looked at.", adm.initials);
  mx_one(o, "vsrbus_quic_admitted_total", "counter",
         "QUIC handshakes started (half-open connections created).", adm.admitted);
  mx_one(o, "vsrbus_quic_admitted_validated_total", "counter",
         "QUIC handshakes started with a valid Retry token.", adm.validated);
  mx_family(o, "vsrbus_quic_retries_total", "counter",
            "QUIC Initials answered with a Retry instead of state, by reason.");
  mx_value(o, "vsrbus_quic_retries_total", "reason=\"threshold\"",
           adm.retries - adm.retry_source);
  mx_value(o, "vsrbus_quic_retries_total", "reason=\"source\"", adm.retry_source);
  mx_one(o, "vsrbus_quic_invalid_tokens_total", "counter",
         "QUIC Initials refused for a forged, expired or misdirected Retry token.",
         adm.tokens_invalid);
  mx_one(o, "vsrbus_quic_halfopen_evicted_total", "counter",
         "QUIC half-open connections evicted because quic_max_handshakes was full.",
         adm.evicted);
  mx_one(o, "vsrbus_quic_unknown_cid_total", "counter",
         "QUIC packets for no connection that could not start one (late, forged, misrouted).",
         adm.unknown_cid);
  mx_one(o, "vsrbus_quic_halfopen", "gauge", "QUIC half-open connections now.", adm.halfopen);
  mx_one(o, "vsrbus_quic_halfopen_peak", "gauge", "Most QUIC half-open connections at once.",
         adm.halfopen_peak);
  mx_one(o, "vsrbus_quic_connections", "gauge",
         "Open QUIC connections (handshake done) the QUIC gauges aggregate.", a.conns);
  mx_family(o, "vsrbus_quic_smoothed_rtt_seconds", "gauge",
            "Smoothed RTT of the open QUIC connections (ngtcp2): mean and max.");
  mx_seconds(o, "vsrbus_quic_smoothed_rtt_seconds", "agg=\"mean\"",
             a.conns ? a.srtt_ns_sum / a.conns : 0);
  mx_seconds(o, "vsrbus_quic_smoothed_rtt_seconds", "agg=\"max\"", a.srtt_ns_max);
  mx_family(o, "vsrbus_quic_cwnd_bytes", "gauge",
            "Congestion window of the open QUIC connections: sum and max.");
  mx_value(o, "vsrbus_quic_cwnd_bytes", "agg=\"sum\"", a.cwnd_sum);
  mx_value(o, "vsrbus_quic_cwnd_bytes", "agg=\"max\"", a.cwnd_max);
  mx_one(o, "vsrbus_quic_in_flight_bytes", "gauge",
         "Bytes sent and not yet acknowledged, summed over the open QUIC connections.",
         a.in_flight_sum);
  mx_one(o, "vsrbus_quic_probe_timeouts", "gauge",
         "Probe timeouts outstanding (unanswered loss probes), summed over the open QUIC "
         "connections.", a.pto_count_sum);
}

int vsr_bus_metrics_render(const struct vsr_bus *bus, char *buf, size_t len, size_t *written) {
  struct mx_out o = {.buf = buf, .len = len};
  struct vsr_bus_stats st;
  uint64_t pt[4][2][VSRI_BUS_TRANSPORTS]; /* frames in, bytes in, frames out, bytes out */
  vsri_bus_stats_own(bus, &st);
  memcpy(pt[0], bus->pt_frames_in, sizeof pt[0]);
  memcpy(pt[1], bus->pt_bytes_in, sizeof pt[1]);
  memcpy(pt[2], bus->pt_frames_out, sizeof pt[2]);
  memcpy(pt[3], bus->pt_bytes_out, sizeof pt[3]);
  vsri_shards_add(bus, &st, pt); /* every shard's traffic */
  struct mx_live live;
  memset(&live, 0, sizeof live);
  for (uint32_t i = 0; i < bus->client_slots_len; i++) mx_add_peer(&live, bus->client_slots[i]);
  for (int i = 0; i < VSR_MAX_REPLICAS; i++) mx_add_peer(&live, bus->replicas[i]);

  mx_family(&o, "vsrbus_build_info", "gauge", "The vsrbus library version (value 1).");
  mx_printf(&o, "vsrbus_build_info{version=\"%s\"} 1\n", vsr_version());
  mx_family(&o, "vsrbus_io_backend_info", "gauge", "The io backend the bus's loop runs on.");
  mx_printf(&o, "vsrbus_io_backend_info{backend=\"%s\"} 1\n",
            vsri_io_backend_name(bus->loop->io));

  mx_traffic(&o, "vsrbus_frames_in_total", "Frames delivered to the application.",
             (const uint64_t(*)[VSRI_BUS_TRANSPORTS])pt[0]);
  mx_traffic(&o, "vsrbus_in_bytes_total", "Bytes of the frames delivered to the application.",
             (const uint64_t(*)[VSRI_BUS_TRANSPORTS])pt[1]);
  mx_traffic(&o, "vsrbus_frames_out_total",
             "Frames whose last byte the kernel took (QUIC: in a datagram sendmsg accepted).",
             (const uint64_t(*)[VSRI_BUS_TRANSPORTS])pt[2]);
  mx_traffic(&o, "vsrbus_out_bytes_total", "Bytes of the frames the kernel took.",
             (const uint64_t(*)[VSRI_BUS_TRANSPORTS])pt[3]);
  mx_one(&o, "vsrbus_frames_queued_total", "counter", "Sends accepted into a peer queue.",
         st.frames_queued);

  mx_family(&o, "vsrbus_drops_total", "counter", "Frames not sent, by reason.");
  mx_value(&o, "vsrbus_drops_total", "reason=\"backpressure\"", st.drops_backpressure);
  mx_value(&o, "vsrbus_drops_total", "reason=\"not_connected\"", st.drops_not_connected);
  mx_value(&o, "vsrbus_drops_total", "reason=\"on_close\"", st.drops_on_close);
  mx_value(&o, "vsrbus_drops_total", "reason=\"stream_reset\"", st.drops_stream_reset);

  mx_family(&o, "vsrbus_connections_closed_total", "counter",
            "Connections closed, by reason (a VSR_E* code; VSR_ECLOSED is a clean close).");
  mx_value(&o, "vsrbus_connections_closed_total", "code=\"VSR_ECLOSED\"",
           st.errors[-VSR_ECLOSED]);
  for (int i = 1; i < VSR_ERR_SLOTS; i++) {
    if (i == -VSR_ECLOSED || st.errors[i] == 0) continue;
    char labels[64];
    snprintf(labels, sizeof labels, "code=\"%s\"", vsr_errname(-i));
    mx_value(&o, "vsrbus_connections_closed_total", labels, st.errors[i]);
  }

  mx_one(&o, "vsrbus_clients_accepted_total", "counter", "Client connections admitted.",
         st.clients_accepted);
  mx_one(&o, "vsrbus_clients_refused_total", "counter",
         "Client connections refused (max_clients, duplicate id, shutting down).",
         st.clients_refused);
  mx_one(&o, "vsrbus_clients_active", "gauge", "Client connections registered now.",
         st.clients_active);
  mx_one(&o, "vsrbus_replicas_connected", "gauge", "Authenticated replica links now.",
         st.replicas_connected);
  mx_one(&o, "vsrbus_connections_open", "gauge",
         "Connections the bus holds now, both planes, handshaking and closing included.",
         bus->peers_open);
  mx_one(&o, "vsrbus_handshakes_inflight", "gauge", "Inbound replica handshakes in progress.",
         st.handshakes_inflight);
  /* Replica handshake outcomes: ok, or the refusal's code (the auth range of error.h). */
  mx_family(&o, "vsrbus_replica_handshakes_total", "counter",
            "Replica handshakes finished, by outcome: ok or the error code that ended them.");
  mx_value(&o, "vsrbus_replica_handshakes_total", "outcome=\"ok\"", st.replica_handshakes_ok);
  for (int code = VSR_EAUTH; code >= VSR_EHANDSHAKE_TIMEOUT; code--) {
    char labels[64];
    snprintf(labels, sizeof labels, "outcome=\"%s\"", vsr_errname(code));
    mx_value(&o, "vsrbus_replica_handshakes_total", labels, st.errors[-code]);
  }
  mx_one(&o, "vsrbus_slow_peers_closed_total", "counter",
         "Peers closed because their send queue stayed full for slow_peer_timeout.",
         st.slow_peers_closed);

  mx_family(&o, "vsrbus_queue_frames", "gauge", "Frames waiting in the peer send queues.");
  for (int pl = 0; pl < 2; pl++) {
    char labels[32];
    snprintf(labels, sizeof labels, "plane=\"%s\"", mx_planes[pl]);
    mx_value(&o, "vsrbus_queue_frames", labels, live.queue_frames[pl]);
  }
  mx_family(&o, "vsrbus_queue_frames_max", "gauge", "The longest peer send queue, in frames.");
  for (int pl = 0; pl < 2; pl++) {
    char labels[32];
    snprintf(labels, sizeof labels, "plane=\"%s\"", mx_planes[pl]);
    mx_value(&o, "vsrbus_queue_frames_max", labels, live.queue_frames_max[pl]);
  }
  mx_family(&o, "vsrbus_queue_bytes", "gauge",
            "Buffer bytes the queued frames hold, in the peer send queues.");
  for (int pl = 0; pl < 2; pl++) {
    char labels[32];
    snprintf(labels, sizeof labels, "plane=\"%s\"", mx_planes[pl]);
    mx_value(&o, "vsrbus_queue_bytes", labels, live.queue_bytes[pl]);
  }

  struct vsr_pool_stats ps;
  vsr_pool_stats(bus->loop->pool, &ps);
  mx_one(&o, "vsrbus_pool_gets_total", "counter", "Messages taken from the pool.", ps.gets);
  mx_one(&o, "vsrbus_pool_reuses_total", "counter",
         "Pool gets served from a free list (no allocation).", ps.reuses);
  mx_one(&o, "vsrbus_pool_heap_allocs_total", "counter",
         "Pool buffers allocated from the heap (preallocation included).", ps.heap_allocs);
  mx_one(&o, "vsrbus_pool_heap_frees_total", "counter", "Pool buffers returned to the heap.",
         ps.heap_frees);
  mx_one(&o, "vsrbus_pool_failures_total", "counter",
         "Pool gets refused (over the byte cap or out of memory).", ps.failures);
  mx_one(&o, "vsrbus_pool_live_messages", "gauge", "Pool messages referenced now.", ps.live);
  mx_one(&o, "vsrbus_pool_bytes", "gauge", "Pool buffer bytes, live and cached.", ps.bytes);

  mx_quic(&o, bus);
  struct vsri_metrics_counts mc;
  vsri_metrics_counts(bus, &mc);
  mx_one(&o, "vsrbus_metrics_scrapes_total", "counter", "GET /metrics requests served.",
         mc.scrapes);
  mx_family(&o, "vsrbus_metrics_refused_total", "counter",
            "Requests to the metrics endpoint not served, by reason.");
  mx_value(&o, "vsrbus_metrics_refused_total", "reason=\"not_found\"", mc.not_found);
  mx_value(&o, "vsrbus_metrics_refused_total", "reason=\"method\"", mc.bad_method);
  mx_value(&o, "vsrbus_metrics_refused_total", "reason=\"bad_request\"", mc.bad_request);
  mx_value(&o, "vsrbus_metrics_refused_total", "reason=\"oversize\"", mc.oversize);
  mx_value(&o, "vsrbus_metrics_refused_total", "reason=\"timeout\"", mc.timeout);
  mx_value(&o, "vsrbus_metrics_refused_total", "reason=\"busy\"", mc.busy);

  if (o.pos < len) {
    *written = o.pos;
    return 0;
  }
  if (len) buf[len - 1] = '\0';
  *written = o.pos + 1;
  return VSR_ELIMIT;
}

/* ---- the structs ----------------------------------------------------------------------- */

void vsr_bus_stats(const struct vsr_bus *bus, struct vsr_bus_stats *out) {
  vsri_bus_stats_own(bus, out);
  vsri_shards_add(bus, out, NULL);
}

void vsri_bus_stats_own(const struct vsr_bus *bus, struct vsr_bus_stats *out) {
  if (bus->shard_set) vsri_pool_collect(bus->loop->pool); /* what other shards gave back */
  *out = bus->stats;
  for (int pl = 0; pl < 2; pl++) {
    out->rx_reserved[pl] = bus->budget[pl].reserved;
    out->rx_filled[pl] = bus->budget[pl].filled;
    out->rx_reserved_peak[pl] = bus->budget[pl].peak;
    out->rx_budget[pl] = bus->budget[pl].max;
  }
  struct vsr_pool_stats ps;
  vsr_pool_stats(bus->loop->pool, &ps);
  out->memory_max = vsri_pool_bytes_max(bus->loop->pool);
  out->memory_bytes = ps.bytes;
  out->memory_live = ps.bytes_live;
  out->memory_peak = ps.bytes_peak;
  for (int t = 0; t < VSRI_BUS_TRANSPORTS; t++) {
    const struct bus_listener *bl = &bus->client_t[t].l;
    if (bl->l && bl->t->listener_stats) bl->t->listener_stats(bl->l, out);
  }
}

int vsr_bus_peer_stats(const struct vsr_bus *bus, enum vsr_plane plane, uint64_t id,
                       struct vsr_peer_stats *out) {
  const struct bus_peer *p = plane == VSR_PLANE_CLIENT
                                 ? vsri_bus_client_find(bus, id)
                                 : (id < VSR_MAX_REPLICAS ? bus->replicas[id] : NULL);
  if (!p) return VSR_ENOTCONN;
  *out = (struct vsr_peer_stats){
      .queue_depth = vsri_sendq_len(&p->q),
      .queue_capacity = vsri_sendq_cap(&p->q),
      .frames_in = p->frames_in,
      .bytes_in = p->bytes_in,
      .frames_out = p->frames_out,
      .bytes_out = p->bytes_out,
      .drops_backpressure = p->drops_backpressure,
      .queue_bytes = p->q.bytes,
      .queue_full_ns = p->full_since_ns ? vsri_io_now(bus->loop->io) - p->full_since_ns : 0,
      .frames_queued = p->frames_queued,
      .frames_dropped = p->frames_dropped,
      .frames_pending = p->frames_queued - p->frames_out - p->frames_dropped,
  };
  return 0;
}
