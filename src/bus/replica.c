/* Replica plane (spec/bus.md §5): one authenticated TCP connection per replica pair. The lower
 * index dials the higher one (at start, then per peer with exponential backoff and full jitter
 * between reconnect_min and reconnect_period, skipping connected and dialing peers), the higher one
 * accepts; every new connection runs the 3-message handshake of auth.c under a deadline before
 * vsri_bus_replica_activate() lets consensus frames through. Pending inbound handshakes are
 * capped; at the cap the oldest one makes room, so a flood cannot lock real replicas out.
 * With replica_auth off (legacy, mainline's default) only a nonce-less Hello flows: the dialer
 * is linked once it is queued, the acceptor once it passes the command, cluster and direction
 * checks. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "bus/auth.h"
#include "bus/bus_impl.h"
#include "crypto/mac.h"
#include "transport/tls_ws.h"
#include "util/alloc.h"
#include "util/list.h"
#include "util/log.h"
#include "util/random.h"

#define RP_LOG_EVERY_NS 1000000000ull /* at most one line per second about evictions */

struct rp_plane;

/* One connection still in its handshake: the peer's plane_data until it is activated or gone
 * (then freed at once: its deadline timer is dropped from the loop). */
struct rp_hs {
  struct rp_plane *rp;
  struct bus_peer *p;   /* NULL once the handshake ended (activated or closed) */
  struct vsri_list_node link;      /* on rp->pending exactly while |p| is set */
  struct vsri_list_node slot_link; /* on rp->slots while it holds one of the
                                    * max_inflight_handshakes inbound slots */
  struct vsri_completion deadline;
  struct vsri_auth_hs auth;
  bool acceptor;
  bool got_hello; /* acceptor: the next frame is the Finish */
  bool linked;    /* dialer: the handshake installed the link (no backoff) */
  uint8_t target; /* dialer: the replica dialed */
};

struct rp_plane {
  struct vsr_bus *bus;
  const struct vsri_transport_ops *tops; /* tcp, or tls with replica_tls */
  struct vsri_auth_cfg auth;
  struct vsri_completion sweep;
  bool stopping;
  uint32_t accept_inflight; /* inbound handshakes holding a slot */
  uint32_t npeers;          /* replica-plane connections not yet closed */
  uint32_t nhs;             /* rp_hs not yet freed */
  struct vsri_list pending; /* every handshake in progress, oldest first (rp_hs.link) */
  struct vsri_list slots;   /* those holding an inbound slot, oldest first (rp_hs.slot_link) */
  bool dialing[VSR_MAX_REPLICAS];   /* a dialed connection is connecting or handshaking */
  bool down_logged[VSR_MAX_REPLICAS]; /* "cannot reach" already said since the last link */
  uint32_t attempt[VSR_MAX_REPLICAS];    /* dials failed / links lost since the last link */
  uint64_t next_dial[VSR_MAX_REPLICAS];  /* loop clock: not before (0: at once) */
  uint64_t sweep_due;                    /* when the armed sweep should run */
  uint64_t evicted, evicted_logged, evict_log_ns;
};

static struct rp_plane *rp_of(struct vsr_bus *bus) { return bus->replica_plane; }

static const char *rp_name(const struct bus_peer *p) {
  return p->conn ? p->tops->peer_name(p->conn) : "?";
}

/* ---- handshake records --------------------------------------------------------------------- */

static struct rp_hs *rp_hs_new(struct rp_plane *rp, struct bus_peer *p, bool acceptor) {
  struct rp_hs *hs = vsri_calloc(1, sizeof *hs);
  if (!hs) return NULL;
  hs->rp = rp;
  hs->p = p;
  hs->acceptor = acceptor;
  vsri_list_push_back(&rp->pending, &hs->link);
  p->plane_data = hs;
  rp->nhs++;
  rp->bus->stats.handshakes_inflight++;
  return hs;
}

static void rp_sweep_cb(struct vsri_io *io, struct vsri_completion *c, int32_t res);

/* Arms the dial sweep for |due| (loop clock) unless it is armed for earlier already. */
static void rp_sweep_arm(struct rp_plane *rp, uint64_t due) {
  if (rp->stopping) return;
  struct vsri_io *io = rp->bus->loop->io;
  if (rp->sweep.pending) {
    if (due >= rp->sweep_due) return;
    rp->sweep_due = due;
    vsri_io_cancel(io, &rp->sweep); /* the callback re-arms for sweep_due */
    return;
  }
  rp->sweep_due = due;
  uint64_t now = vsri_io_now(io);
  vsri_io_timeout(io, &rp->sweep, due > now ? due - now : 0, rp_sweep_cb, rp);
}

/* Replica |t| could not be reached or its link was lost: next dial after a jittered,
 * doubling delay (reconnect_min .. reconnect_period). */
static void rp_backoff(struct rp_plane *rp, uint8_t t) {
  const struct vsr_bus_options *o = &rp->bus->opts;
  uint64_t min = o->reconnect_min_ns ? o->reconnect_min_ns : o->reconnect_period_ns;
  if (min > o->reconnect_period_ns) min = o->reconnect_period_ns;
  if (rp->attempt[t] < 64) rp->attempt[t]++;
  rp->next_dial[t] = vsri_io_now(rp->bus->loop->io) +
                     vsri_backoff_ns(min, o->reconnect_period_ns, rp->attempt[t]);
  rp_sweep_arm(rp, rp->next_dial[t]);
}

static void rp_hs_free(struct rp_hs *hs) {
  hs->rp->nhs--;
  vsri_free(hs);
}

static void rp_hs_release_slot(struct rp_hs *hs) {
  if (!vsri_list_linked(&hs->slot_link)) return;
  vsri_list_remove(&hs->slot_link);
  hs->rp->accept_inflight--;
}

/* The handshake is over (activated or the connection is gone): detach and free (its deadline
 * timer leaves the loop at once). */
static void rp_hs_end(struct rp_hs *hs) {
  struct rp_plane *rp = hs->rp;
  if (!hs->p) return;
  vsri_list_remove(&hs->link);
  rp_hs_release_slot(hs);
  if (!hs->acceptor) {
    rp->dialing[hs->target] = false;
    if (!hs->linked) rp_backoff(rp, hs->target); /* connect or handshake failed */
  }
  hs->p->plane_data = NULL;
  hs->p = NULL;
  rp->bus->stats.handshakes_inflight--;
  vsri_io_timeout_drop(rp->bus->loop->io, &hs->deadline);
  rp_hs_free(hs);
}

static void rp_deadline_cb(struct vsri_io *io, struct vsri_completion *c, int32_t res) {
  (void)io;
  (void)res;
  struct rp_hs *hs = c->ctx;
  if (!hs->p) {
    rp_hs_free(hs);
    return;
  }
  if (hs->p->state == BUS_PEER_CLOSING) {
    /* Already refused and draining its reject to a peer that does not read: stop waiting. */
    vsri_bus_peer_close(hs->p, VSR_EHANDSHAKE_TIMEOUT, false);
    return;
  }
  /* Still pending (res 0, or a timer the loop could not track): the peer had its chance. */
  VSRI_WARN("VSR-AUTH", "%s replica: handshake not finished within %llu ms (%s); closing",
            rp_name(hs->p), (unsigned long long)(hs->rp->bus->opts.handshake_grace_ns / 1000000),
            vsr_errname(VSR_EHANDSHAKE_TIMEOUT));
  vsri_bus_peer_close(hs->p, VSR_EHANDSHAKE_TIMEOUT, false);
}

static void rp_arm_deadline(struct rp_hs *hs) {
  struct vsr_bus *bus = hs->rp->bus;
  vsri_io_timeout(bus->loop->io, &hs->deadline, bus->opts.handshake_grace_ns, rp_deadline_cb, hs);
}

/* ---- sending handshake frames -------------------------------------------------------------- */

/* Queues one 256-byte handshake frame ahead of any consensus frame. Returns 0 or VSR_EPOOL. */
static int rp_push(struct bus_peer *p, const uint8_t frame[VSR_HEADER_SIZE]) {
  struct vsr_msg *m = vsr_bus_msg_new(p->bus, VSR_HEADER_SIZE);
  if (!m) return VSR_EPOOL;
  memcpy(m->data, frame, VSR_HEADER_SIZE);
  if (!vsri_sendq_push(&p->q, m)) { /* cannot happen: handshake frames come first */
    vsr_msg_unref(m);
    return VSR_EBACKPRESSURE;
  }
  if (p->bus->send_tap) p->bus->send_tap(p->bus->send_tap_ctx, VSR_PLANE_REPLICA, UINT64_MAX, m);
  p->tops->kick(p->conn);
  return 0;
}

/* 32 bytes from the kernel CSPRNG, never all zero. Returns 0 or VSR_EIO. */
static int rp_nonce(uint8_t out[VSRI_AUTH_NONCE_LEN]) {
  static const uint8_t zero[VSRI_AUTH_NONCE_LEN];
  for (int tries = 0; tries < 4; tries++) {
    int err = vsri_random_bytes(out, VSRI_AUTH_NONCE_LEN);
    if (err == 0 && memcmp(out, zero, sizeof zero) != 0) return 0;
    if (err) break;
  }
  VSRI_ERROR("VSR-AUTH", "getrandom: %s; cannot make a handshake nonce", strerror(errno));
  return VSR_EIO;
}

/* One refusal, one line: "<addr> replica: <why> (<code>, status <n> <name>[, reject sent]);
 * closing", then the connection closes (after the reject frame, if one is queued). */
static void rp_refuse(struct bus_peer *p, int err, const char *why, bool sent) {
  const struct rp_hs *hs = p->plane_data;
  uint8_t st = hs ? hs->auth.status : VSRI_AUTH_OK;
  VSRI_WARN("VSR-AUTH", "%s replica: %s (%s, status %u %s%s); closing", rp_name(p), why,
            vsr_errname(err), st, vsri_auth_status_name(st), sent ? ", reject sent" : "");
  vsri_bus_peer_close(p, err, sent);
}

/* ---- activation ---------------------------------------------------------------------------- */

/* The TLS exporter of |p|'s link (replica_tls): 1 and |out| filled, or 0 on plain TCP. */
static int rp_exporter(struct bus_peer *p, uint8_t out[32]) {
  if (!p->conn || !p->tops->tls_exporter) return 0;
  return p->tops->tls_exporter(p->conn, VSRI_REPLICA_EXPORTER_LABEL, out);
}

static void rp_activate(struct bus_peer *p, struct rp_hs *hs, uint8_t id) {
  struct rp_plane *rp = hs->rp;
  struct vsr_bus *bus = rp->bus;
  hs->linked = !bus->replicas[id];
  rp_hs_end(hs);
  if (bus->replicas[id]) {
    /* As the reference: the link already installed stays, the newcomer is dropped. No event:
     * the application's view of replica |id| is the installed link. */
    VSRI_WARN("VSR-AUTH", "%s replica: replica %u is already connected; dropping the new "
              "connection (%s); closing", rp_name(p), id, vsr_errname(VSR_EDUPLICATE));
    vsri_bus_peer_close(p, VSR_EDUPLICATE, false);
    return;
  }
  /* An inbound link is announced only now: an unproven Hello must never produce events that
   * an application could mistake for news about the real replica with that id. */
  if (!p->announced) {
    p->id = id;
    vsri_bus_emit(bus, VSR_PEER_CONNECTED, p, 0);
  }
  vsri_bus_replica_activate(p, id);
  rp->down_logged[id] = false;
  rp->attempt[id] = 0;
  rp->next_dial[id] = 0;
  VSRI_INFO("VSR-REPLICA", "%s replica: replica %u %s (%s%s)", rp_name(p), id,
            rp->auth.enabled ? "authenticated" : "linked, unauthenticated (replica auth off)",
            p->dialed ? "dialed" : "accepted",
            rp->tops->tls_exporter ? "; TLS 1.3, MACs bound to the TLS exporter" : "");
}

/* ---- dialer -------------------------------------------------------------------------------- */

static void rp_dial(struct rp_plane *rp, uint8_t target) {
  struct vsr_bus *bus = rp->bus;
  const char *addr = bus->opts.replica_addrs[target];
  struct bus_peer *p = vsri_bus_peer_new(bus, VSR_PLANE_REPLICA, rp->tops);
  struct rp_hs *hs = p ? rp_hs_new(rp, p, false) : NULL;
  if (!hs) {
    if (p) vsri_bus_peer_free(p);
    VSRI_WARN("VSR-REPLICA", "replica %u at %s: no memory to dial; retrying with backoff",
              target, addr);
    rp_backoff(rp, target);
    return;
  }
  p->dialed = true;
  p->id = target;
  hs->target = target;
  vsri_auth_dialer_init(&hs->auth, &rp->auth, target, NULL);
  struct vsri_conn *conn = NULL;
  int err = rp->tops->connect(&conn, &bus->tctx_replica, addr, &vsri_bus_conn_events, p, &p->q);
  if (err) {
    rp_hs_end(hs);
    vsri_bus_peer_free(p);
    VSRI_WARN("VSR-REPLICA", "replica %u at %s: cannot dial: %s; retrying with backoff",
              target, addr, vsr_strerror(err));
    return; /* rp_hs_end scheduled the retry */
  }
  vsri_bus_peer_attach(p, conn, false);
  rp->dialing[target] = true;
  rp->npeers++;
  rp_arm_deadline(hs); /* bounds connect + handshake: a black-holed SYN cannot pin the slot */
}

/* Dials every higher replica that has neither a link nor a dial in flight and whose backoff
 * has passed; returns when the next one is due (or a reconnect_period from now). */
static uint64_t rp_dial_all(struct rp_plane *rp) {
  struct vsr_bus *bus = rp->bus;
  uint64_t now = vsri_io_now(bus->loop->io);
  uint64_t next = now + bus->opts.reconnect_period_ns;
  for (unsigned t = bus->opts.replica_index + 1u; t < bus->opts.replica_count; t++) {
    if (bus->replicas[t] || rp->dialing[t]) continue;
    if (rp->next_dial[t] > now) {
      if (rp->next_dial[t] < next) next = rp->next_dial[t];
      continue;
    }
    rp_dial(rp, (uint8_t)t);
  }
  return next;
}

static void rp_sweep_cb(struct vsri_io *io, struct vsri_completion *c, int32_t res) {
  (void)res;
  struct rp_plane *rp = c->ctx;
  if (rp->stopping) return;
  uint64_t now = vsri_io_now(io);
  if (now < rp->sweep_due) { /* canceled to run earlier: go again for the new due time */
    vsri_io_timeout(io, &rp->sweep, rp->sweep_due - now, rp_sweep_cb, rp);
    return;
  }
  uint64_t next = rp_dial_all(rp);
  if (!rp->sweep.pending) rp_sweep_arm(rp, next);
  else if (next < rp->sweep_due) rp_sweep_arm(rp, next);
}

void vsri_replica_on_connected(struct bus_peer *p, int status) {
  struct rp_hs *hs = p->plane_data;
  if (!hs) return;
  struct rp_plane *rp = hs->rp;
  if (status) {
    /* on_closed follows and frees the dial (rp_hs_end schedules the retry with backoff). */
    if (!rp->down_logged[hs->target]) {
      rp->down_logged[hs->target] = true;
      VSRI_INFO("VSR-REPLICA", "replica %u at %s: cannot connect: %s; retrying with backoff "
                "(up to every %llu ms)", hs->target, rp_name(p), vsr_strerror(status),
                (unsigned long long)(rp->bus->opts.reconnect_period_ns / 1000000));
    }
    return;
  }
  vsri_bus_emit(rp->bus, VSR_PEER_CONNECTED, p, 0);
  uint8_t exporter[32];
  if (rp_exporter(p, exporter)) { /* TLS: the MACs are bound to this session */
    vsri_auth_dialer_init(&hs->auth, &rp->auth, hs->target, exporter);
    vsri_wipe(exporter, sizeof exporter);
  }
  uint8_t nonce[VSRI_AUTH_NONCE_LEN], out[VSR_HEADER_SIZE];
  int err = rp_nonce(nonce);
  if (!err) err = vsri_auth_dialer_hello(&hs->auth, nonce, out);
  if (!err) err = rp_push(p, out);
  vsri_wipe(nonce, sizeof nonce);
  if (err) {
    VSRI_WARN("VSR-AUTH", "%s replica: cannot send the ReplicaHello: %s; closing", rp_name(p),
              vsr_strerror(err));
    vsri_bus_peer_close(p, err, false);
    return;
  }
  /* Legacy: nothing comes back; consensus frames queue behind the Hello. */
  if (vsri_auth_done(&hs->auth)) rp_activate(p, hs, hs->target);
}

static void rp_dialer_frame(struct bus_peer *p, struct rp_hs *hs, const struct vsr_msg *msg) {
  uint8_t out[VSR_HEADER_SIZE];
  uint8_t cmd = vsr_hdr_command(msg->data);
  int err = vsri_auth_dialer_on_challenge(&hs->auth, msg->data, out);
  char why[160];
  switch (err) {
  case 0:
    err = rp_push(p, out);
    if (err) {
      rp_refuse(p, err, "cannot queue the ReplicaFinish", false);
      return;
    }
    rp_activate(p, hs, hs->target);
    return;
  case VSR_EAUTH_COMMAND:
    snprintf(why, sizeof why, "%s (command %u) where a ReplicaChallenge belongs",
             vsr_command_name(cmd), cmd);
    break;
  case VSR_EAUTH_STATUS:
    snprintf(why, sizeof why, "replica %u refused our ReplicaHello", hs->target);
    break;
  case VSR_EAUTH:
    snprintf(why, sizeof why, "the ReplicaChallenge MAC does not verify (wrong secret, or a "
                              "replayed or forged challenge)");
    break;
  default:
    snprintf(why, sizeof why, "unexpected %s during the handshake", vsr_command_name(cmd));
    err = VSR_EPROTO;
    break;
  }
  rp_refuse(p, err, why, false);
}

/* ---- acceptor ------------------------------------------------------------------------------ */

/* Closes the oldest pending inbound handshake to make room for a new one. A real replica answers
 * within one round trip, so cycling the slots keeps it admitted under a flood; the reference
 * refuses the newcomer instead, which lets a flood hold every slot for handshake_grace. */
static void rp_evict_oldest(struct rp_plane *rp) {
  struct vsri_list_node *n = vsri_list_front(&rp->slots);
  if (!n) return;
  struct rp_hs *hs = vsri_container_of(n, struct rp_hs, slot_link);
  rp_hs_release_slot(hs);
  rp->evicted++;
  uint64_t now = vsri_io_now(rp->bus->loop->io);
  if (rp->evicted_logged == 0 || now - rp->evict_log_ns >= RP_LOG_EVERY_NS) {
    VSRI_WARN("VSR-AUTH", "%s replica: %u inbound handshakes in flight (the cap); closing the "
              "oldest (%s; %llu closed so far)", rp_name(hs->p),
              rp->bus->opts.max_inflight_handshakes, vsr_errname(VSR_ELIMIT),
              (unsigned long long)rp->evicted);
    rp->evicted_logged = rp->evicted;
    rp->evict_log_ns = now;
  }
  vsri_bus_peer_close(hs->p, VSR_ELIMIT, false);
}

static void rp_accept(void *owner, struct vsri_conn *conn) {
  struct bus_listener *bl = owner;
  struct vsr_bus *bus = bl->bus;
  struct rp_plane *rp = rp_of(bus);
  if (!rp || rp->stopping) {
    bl->tops->close(conn, VSR_ESHUTDOWN, false);
    return;
  }
  if (rp->accept_inflight >= bus->opts.max_inflight_handshakes) rp_evict_oldest(rp);
  struct bus_peer *p = vsri_bus_peer_new(bus, VSR_PLANE_REPLICA, bl->tops);
  struct rp_hs *hs = p ? rp_hs_new(rp, p, true) : NULL;
  if (!hs) {
    if (p) vsri_bus_peer_free(p);
    VSRI_WARN("VSR-AUTH", "%s replica: no memory for a handshake (%s); closing",
              bl->tops->peer_name(conn), vsr_errname(VSR_ENOMEM));
    bl->tops->close(conn, VSR_ENOMEM, false);
    return;
  }
  vsri_list_push_back(&rp->slots, &hs->slot_link);
  rp->accept_inflight++;
  rp->npeers++;
  uint8_t exporter[32];
  p->conn = conn; /* rp_exporter reads it; attach below starts the connection */
  bool tls = rp_exporter(p, exporter);
  vsri_auth_acceptor_init(&hs->auth, &rp->auth, tls ? exporter : NULL);
  vsri_wipe(exporter, sizeof exporter);
  vsri_bus_peer_attach(p, conn, true);
  rp_arm_deadline(hs);
}

/* Explains an acceptor-side reject in words, for the log line. */
static void rp_hello_why(const struct rp_hs *hs, const uint8_t *in, char *why, size_t len) {
  uint8_t cmd = vsr_hdr_command(in);
  switch (hs->auth.status) {
  case VSRI_AUTH_UNKNOWN_COMMAND:
    snprintf(why, len, "%s (command %u) where a ReplicaHello belongs", vsr_command_name(cmd),
             cmd);
    break;
  case VSRI_AUTH_CLUSTER_MISMATCH: {
    vsr_u128 c = vsr_get_u128(in + offsetof(struct vsr_header, cluster));
    snprintf(why, len, "ReplicaHello from replica %u for cluster %016llx%016llx, not ours",
             hs->auth.peer_id, (unsigned long long)c.hi, (unsigned long long)c.lo);
    break;
  }
  case VSRI_AUTH_DIRECTIONAL_RULE:
    snprintf(why, len, "ReplicaHello from replica %u: only lower ids (< %u) may dial replica %u",
             hs->auth.peer_id, hs->auth.cfg->self_id, hs->auth.cfg->self_id);
    break;
  case VSRI_AUTH_AUTH_REQUIRED:
    snprintf(why, len, "ReplicaHello from replica %u carries no nonce (authentication is "
             "required)", hs->auth.peer_id);
    break;
  default:
    snprintf(why, len, "ReplicaHello refused");
    break;
  }
}

static void rp_acceptor_hello(struct bus_peer *p, struct rp_hs *hs, const struct vsr_msg *msg) {
  uint8_t nonce[VSRI_AUTH_NONCE_LEN], out[VSR_HEADER_SIZE];
  bool send = false;
  int err = rp_nonce(nonce);
  if (err) {
    vsri_bus_peer_close(p, err, false);
    return;
  }
  err = vsri_auth_acceptor_on_hello(&hs->auth, msg->data, nonce, out, &send);
  vsri_wipe(nonce, sizeof nonce);
  hs->got_hello = true;
  if (err) {
    char why[192];
    rp_hello_why(hs, msg->data, why, sizeof why);
    bool sent = send && rp_push(p, out) == 0;
    rp_refuse(p, err, why, sent);
    return;
  }
  if (!send) { /* legacy: the announced id is trusted */
    const uint8_t *nonce_d = msg->data + offsetof(struct vsr_header, reserved_command);
    if (memcmp(nonce_d, (const uint8_t[VSRI_AUTH_NONCE_LEN]){0}, VSRI_AUTH_NONCE_LEN) != 0) {
      VSRI_WARN("VSR-AUTH", "%s replica: replica %u offers authentication but replica auth is "
                "off here; linked without it (that dialer will give up waiting for a "
                "ReplicaChallenge: configure both sides alike)", rp_name(p), hs->auth.peer_id);
    }
    rp_activate(p, hs, hs->auth.peer_id);
    return;
  }
  err = rp_push(p, out);
  if (err) rp_refuse(p, err, "cannot queue the ReplicaChallenge", false);
}

static void rp_acceptor_finish(struct bus_peer *p, struct rp_hs *hs, const struct vsr_msg *msg) {
  uint8_t cmd = vsr_hdr_command(msg->data);
  int err = vsri_auth_acceptor_on_finish(&hs->auth, msg->data);
  if (err == 0) {
    rp_activate(p, hs, hs->auth.peer_id);
    return;
  }
  char why[192];
  if (err == VSR_EAUTH_COMMAND) {
    snprintf(why, sizeof why, "%s (command %u) from replica %u where a ReplicaFinish belongs",
             vsr_command_name(cmd), cmd, hs->auth.peer_id);
  } else {
    snprintf(why, sizeof why, "the ReplicaFinish MAC from replica %u does not verify (wrong "
             "secret, or a replayed, reflected or altered handshake)", hs->auth.peer_id);
  }
  rp_refuse(p, err, why, false);
}

void vsri_replica_on_handshake_frame(struct bus_peer *p, struct vsr_msg *msg) {
  struct rp_hs *hs = p->plane_data;
  if (!hs) { /* activated or refused already: the bus only calls us for pending peers */
    vsri_bus_peer_close(p, VSR_EPROTO, false);
    return;
  }
  if (!hs->acceptor) rp_dialer_frame(p, hs, msg);
  else if (!hs->got_hello) rp_acceptor_hello(p, hs, msg);
  else rp_acceptor_finish(p, hs, msg);
}

void vsri_replica_on_closed(struct bus_peer *p, int reason) {
  struct rp_plane *rp = rp_of(p->bus);
  struct rp_hs *hs = p->plane_data;
  if (hs) rp = hs->rp;
  if (rp) rp->npeers--;
  if (hs) {
    rp_hs_end(hs);
    return;
  }
  if (p->registered && p->bus->replicas[p->id] == p) {
    VSRI_INFO("VSR-REPLICA", "%s replica: link to replica %u lost: %s%s", rp_name(p),
              (unsigned)p->id, vsr_strerror(reason),
              p->dialed && rp && !rp->stopping ? "; redialing with backoff" : "");
    if (p->dialed && rp && !rp->stopping) rp_backoff(rp, (uint8_t)p->id);
  }
}

/* ---- lifecycle ----------------------------------------------------------------------------- */

static int rp_check_intervals(const struct vsr_bus_options *o);

static int rp_check(const struct vsr_bus_options *o) {
  if (o->replica_count > 255) {
    VSRI_ERROR("VSR-CONFIG", "replica_count %u: at most 255 replicas (ids are one byte)",
               o->replica_count);
    return VSR_ECONFIG;
  }
  if (o->replica_index >= o->replica_count || !o->replica_addrs) {
    VSRI_ERROR("VSR-CONFIG", "replica %u: needs replica_addrs for %u replicas, this one among "
               "them", o->replica_index, o->replica_count);
    return VSR_ECONFIG;
  }
  for (unsigned i = 0; i < o->replica_count; i++) {
    struct sockaddr_storage sa;
    socklen_t len;
    if (!o->replica_addrs[i] || vsri_parse_addr(o->replica_addrs[i], &sa, &len) < 0) {
      VSRI_ERROR("VSR-CONFIG", "replica %u: address '%s' is not host:port (%s)", i,
                 o->replica_addrs[i] ? o->replica_addrs[i] : "(none)", vsri_parse_addr_why());
      return VSR_ECONFIG;
    }
  }
  if (o->replica_auth == VSR_REPLICA_AUTH_OFF) return rp_check_intervals(o);
  if (o->replica_auth != VSR_REPLICA_AUTH_ON) {
    VSRI_ERROR("VSR-CONFIG", "replica_auth %d: expected VSR_REPLICA_AUTH_ON or _OFF",
               (int)o->replica_auth);
    return VSR_ECONFIG;
  }
  if (!o->secret || o->secret_len < VSR_SECRET_MIN || o->secret_len > VSR_SECRET_MAX) {
    VSRI_ERROR("VSR-CONFIG", "cluster '%s': the replica plane needs a shared secret of %d..%d "
               "bytes (got %zu), or replica auth off (legacy, unauthenticated)", o->cluster_name,
               VSR_SECRET_MIN, VSR_SECRET_MAX, o->secret ? o->secret_len : 0);
    return VSR_ECONFIG;
  }
  if (o->previous_secret_len && (!o->previous_secret || o->previous_secret_len < VSR_SECRET_MIN ||
                                 o->previous_secret_len > VSR_SECRET_MAX)) {
    VSRI_ERROR("VSR-CONFIG", "previous secret: %zu bytes, needs %d..%d", o->previous_secret_len,
               VSR_SECRET_MIN, VSR_SECRET_MAX);
    return VSR_ECONFIG;
  }
  return rp_check_intervals(o);
}

static int rp_check_intervals(const struct vsr_bus_options *o) {
  if (!o->reconnect_period_ns || !o->handshake_grace_ns || !o->max_inflight_handshakes) {
    VSRI_ERROR("VSR-CONFIG", "reconnect_period, handshake_grace and max_inflight_handshakes "
               "must be > 0");
    return VSR_ECONFIG;
  }
  return 0;
}

static int rp_listen(struct vsr_bus *bus) {
  struct bus_listener *bl = &bus->replica_tcp;
  bl->bus = bus;
  bl->tops = rp_of(bus)->tops;
  bl->plane = VSR_PLANE_REPLICA;
  const char *addr = bus->opts.replica_addrs[bus->opts.replica_index];
  int err = bl->tops->listen(&bl->l, &bus->tctx_replica, addr, rp_accept, bl);
  if (err) {
    VSRI_ERROR("VSR-LISTEN", "replica plane: cannot listen on %s: %s", addr, vsr_strerror(err));
    return err;
  }
  bl->tops->listener_addr(bl->l, bl->addr, sizeof bl->addr);
  VSRI_INFO("VSR-LISTEN", "replica plane %s listening on %s (replica %u of %u, cluster '%s')",
            bl->tops->name, bl->addr, bus->opts.replica_index, bus->opts.replica_count,
            bus->opts.cluster_name);
  return 0;
}

int vsri_replica_init(struct vsr_bus *bus) {
  const struct vsr_bus_options *o = &bus->opts;
  int err = rp_check(o);
  if (err) return err;
  struct rp_plane *rp = vsri_calloc(1, sizeof *rp);
  if (!rp) return VSR_ENOMEM;
  rp->bus = bus;
  vsri_list_init(&rp->pending);
  vsri_list_init(&rp->slots);
  bool on = o->replica_auth == VSR_REPLICA_AUTH_ON;
  if (!on && (o->secret_len || o->previous_secret_len)) {
    VSRI_WARN("VSR-CONFIG", "replica auth is off: the shared secret is ignored");
  }
  /* A NULL secret selects auth.c's legacy mode. */
  err = vsri_auth_cfg_init(&rp->auth, o->cluster_name, o->replica_index,
                           (uint8_t)o->replica_count, on ? o->secret : NULL,
                           on ? o->secret_len : 0,
                           on && o->previous_secret_len ? o->previous_secret : NULL,
                           on ? o->previous_secret_len : 0);
  if (err) {
    VSRI_ERROR("VSR-CONFIG", "cluster '%s': invalid replica auth settings (the previous secret "
               "must differ from the secret)", o->cluster_name);
    vsri_free(rp);
    return err;
  }
  bus->replica_plane = rp;
  rp->tops = &vsri_transport_tcp;
  if (o->replica_tls) {
    struct vsri_tlsws_config *tc = NULL;
    err = vsri_tlsws_replica_config(&tc, o->replica_tls_cert_file, o->replica_tls_key_file,
                                    o->replica_tls_ca_file, o->handshake_grace_ns);
    if (err) return err; /* vsr_bus_new's cleanup calls vsri_replica_fini */
    bus->replica_tls_cfg = tc;
    bus->tctx_replica.tls = tc;
    rp->tops = &vsri_transport_tls;
  }
  err = rp_listen(bus);
  if (err) return err; /* vsr_bus_new's cleanup calls vsri_replica_fini */
  if (!on) {
    VSRI_WARN("VSR-AUTH", "replica plane on %s is UNAUTHENTICATED (replica auth off, legacy "
              "mode, Iggy mainline's default): any host that reaches a replica port and knows "
              "the cluster name can pose as a replica. Use only to join stock mainline servers "
              "on a trusted network", bus->replica_tcp.addr);
  }
  rp_sweep_arm(rp, rp_dial_all(rp));
  return 0;
}

void vsri_replica_shutdown(struct vsr_bus *bus) {
  struct rp_plane *rp = rp_of(bus);
  if (!rp || rp->stopping) return;
  rp->stopping = true;
  struct bus_listener *bl = &bus->replica_tcp;
  if (bl->l) {
    bl->tops->listener_close(bl->l);
    bl->l = NULL;
  }
  if (rp->sweep.pending) vsri_io_cancel(bus->loop->io, &rp->sweep);
  /* Half-done handshakes have nothing worth draining; established links drain in the bus. */
  /* A close may end the handshake at once (unlinking it, even freeing it): walk safely. */
  struct vsri_list_node *n, *tmp;
  vsri_list_for_each_safe(n, tmp, &rp->pending) {
    vsri_bus_peer_close(vsri_container_of(n, struct rp_hs, link)->p, VSR_ESHUTDOWN, false);
  }
}

bool vsri_replica_idle(const struct vsr_bus *bus) {
  const struct rp_plane *rp = bus->replica_plane;
  return !rp || (!rp->npeers && !rp->nhs && !rp->sweep.pending);
}

/* vsr_bus_del: the bus aborted its peers already (every replica link and handshake is a bus
 * peer); what is left here is the listener, the sweep and the plane's own memory. No loop
 * turn, nothing leaked. */
void vsri_replica_fini(struct vsr_bus *bus) {
  struct rp_plane *rp = rp_of(bus);
  if (!rp) return;
  rp->stopping = true;
  struct bus_listener *bl = &bus->replica_tcp;
  if (bl->l) {
    bl->tops->listener_close(bl->l);
    bl->l = NULL;
  }
  vsri_io_timeout_drop(bus->loop->io, &rp->sweep);
  struct vsri_list_node *n;
  while ((n = vsri_list_front(&rp->pending))) {
    struct rp_hs *hs = vsri_container_of(n, struct rp_hs, link);
    vsri_bus_peer_abort(hs->p, VSR_ESHUTDOWN); /* ends |hs| */
  }
  if (rp->npeers || rp->nhs) {
    VSRI_ERROR("VSR-SHUTDOWN", "replica plane: %u connection(s), %u handshake(s) unaccounted "
               "for at delete (a bug); freeing the plane", rp->npeers, rp->nhs);
  }
  vsri_auth_cfg_wipe(&rp->auth);
  bus->replica_plane = NULL;
  vsri_free(rp);
}
