/* QUIC transport: quic_timer.c.
 * Deferred work (the per-connection flush) and the connection timer: ngtcp2 expiry, handshake
 * grace, drain deadline, closing period. */
#include "transport/quic/quic_impl.h"

/* ---- deferred work and timers ---------------------------------------------------------- */

void q_conn_schedule(struct q_conn *c) {
  if (c->state < Q_CLOSING) vsri_io_defer(c->ctx->io, &c->flush);
}

/* Before-poll: deliver held frames, honour close requests, write, re-arm the timer. */
void q_conn_flush(void *arg) {
  struct q_conn *c = arg;
  if (c->state >= Q_CLOSING || !c->qc) return;
  if (c->fail_reason) {
    q_conn_close_now(c, c->fail_reason);
    return;
  }
  if (c->started && c->pend_len) {
    q_deliver_pending(c);
    if (c->state >= Q_CLOSING) return;
  }
  if (c->started && !c->keepalive_set) {
    c->keepalive_set = true;
    if (c->cfg->keep_alive_ns) ngtcp2_conn_set_keep_alive_timeout(c->qc, c->cfg->keep_alive_ns);
  }
  if (c->state == Q_DRAINING) {
    bool empty = (!c->q || vsri_sendq_len(c->q) == 0) && vsri_ring_empty(&c->infl_ring);
    if (!c->close_drain || empty) {
      q_conn_close_now(c, c->reason);
      return;
    }
  }
  if (c->q && vsri_sendq_len(c->q) > 0) c->had_data = true;
  q_conn_write(c);
  if (c->state >= Q_CLOSING) return;
  if (c->had_data && c->started && c->q && vsri_sendq_len(c->q) == 0 &&
      vsri_ring_empty(&c->infl_ring)) {
    c->had_data = false;
    if (c->ev->on_drained) c->ev->on_drained(c->owner, &c->base);
    if (c->state >= Q_CLOSING) return;
  }
  q_timer_update(c);
}

/* Keeps one timer per connection at the earliest deadline: ngtcp2's expiry, the handshake
 * grace, the drain bound, the closing period. A later deadline leaves the armed timer alone
 * (it re-checks when it fires); an earlier one cancels and re-arms from the callback. */
void q_timer_update(struct q_conn *c) {
  if (c->state >= Q_CLOSED) return;
  uint64_t now = vsri_io_now(c->ctx->io), at;
  if (c->state == Q_CLOSING) {
    at = c->closing_until;
  } else {
    at = ngtcp2_conn_get_expiry(c->qc);
    if (c->server && !q_hs_done(c) && c->grace_at < at) at = c->grace_at;
    if (c->state == Q_DRAINING && c->close_drain && c->drain_at < at) at = c->drain_at;
    if (c->write_soon) at = now;
  }
  if (at == UINT64_MAX) return;
  if (c->timer.pending) {
    if (c->timer_at <= at) return;
    vsri_io_cancel(c->ctx->io, &c->timer);
    return;
  }
  c->timer_at = at;
  vsri_io_timeout(c->ctx->io, &c->timer, at > now ? at - now : 0, q_on_timer, c);
}

static void q_expiry_error(struct q_conn *c, int rv) {
  if (rv == NGTCP2_ERR_IDLE_CLOSE) {
    c->close_known = true;
    c->close_remote = false;
    c->close_app = false;
    c->close_code = NGTCP2_NO_ERROR;
    if (c->state >= Q_ACTIVE || !c->server) {
      VSRI_INFO("VSR-QUIC", "%s quic: idle timeout; closed", c->name);
    } else {
      VSRI_INFO("VSR-QUIC", "%s quic: idle before opening a stream; dropped", c->name);
    }
    q_conn_finish(c, VSR_EIDLE, false);
    return;
  }
  if (rv == NGTCP2_ERR_HANDSHAKE_TIMEOUT) {
    VSRI_INFO("VSR-QUIC", "%s quic: handshake did not finish in %llu ms; dropped", c->name,
              (unsigned long long)(c->cfg->handshake_grace_ns / NGTCP2_MILLISECONDS));
    q_conn_finish(c, VSR_EHANDSHAKE_TIMEOUT, false);
    return;
  }
  if (!c->ccerr_set) {
    ngtcp2_connection_close_error_set_transport_error_liberr(&c->ccerr, rv, NULL, 0);
    c->ccerr_set = true;
  }
  VSRI_WARN("VSR-QUIC", "%s quic: timer: %s; closing", c->name, ngtcp2_strerror(rv));
  q_conn_close_now(c, q_liberr_reason(rv));
}

void q_on_timer(struct vsri_io *io, struct vsri_completion *t, int32_t res) {
  struct q_conn *c = t->ctx;
  if (c->state >= Q_CLOSED) {
    q_conn_try_free(c);
    return;
  }
  if (res == -ECANCELED) {
    q_timer_update(c);
    return;
  }
  uint64_t now = vsri_io_now_fresh(io);
  q_stats.timer_fires++;
  if (c->state == Q_CLOSING) {
    if (now >= c->closing_until) {
      c->state = Q_CLOSED;
      vsri_io_defer(io, &c->reap);
    } else {
      q_timer_update(c);
    }
    return;
  }
  /* The grace bounds the handshake only: once it completed, a connection that has not opened
   * its first stream yet lives until the idle timeout (as in Iggy mainline). */
  if (c->server && !q_hs_done(c) && now >= c->grace_at) {
    VSRI_INFO("VSR-QUIC", "%s quic: handshake not done within %llu ms; closing with 0x%x",
              c->name,
              (unsigned long long)(c->cfg->handshake_grace_ns / NGTCP2_MILLISECONDS),
              VSRI_QUIC_HANDSHAKE_FAILED);
    q_conn_close_now(c, VSR_EHANDSHAKE_TIMEOUT);
    return;
  }
  if (c->state == Q_DRAINING && c->close_drain && now >= c->drain_at) {
    VSRI_INFO("VSR-QUIC", "%s quic: queue not drained within close grace; closing", c->name);
    q_conn_close_now(c, c->reason);
    return;
  }
  c->write_soon = false;
  if (now >= ngtcp2_conn_get_expiry(c->qc)) {
    int rv = ngtcp2_conn_handle_expiry(c->qc, now);
    if (rv != 0) {
      q_expiry_error(c, rv);
      return;
    }
  }
  q_conn_write(c);
  if (c->state >= Q_CLOSING) return;
  q_timer_update(c);
}
