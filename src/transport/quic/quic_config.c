/* QUIC transport: quic_config.c.
 * Settings (defaults and range checks), per-thread counters, and small helpers shared by every
 * file: random bytes, the loop clock, close-code mapping. */
#include "transport/quic/quic_impl.h"

/* Burst scratch buffer: filled and sent synchronously, so one per thread is enough. */
_Thread_local uint8_t q_txbuf[Q_BUF];

/* Connections and listeners not yet freed, across all loops (tests wait for 0). */
atomic_uint q_live;

/* Per-thread counters (one loop per thread): how well sends and receives are batched. */
_Thread_local struct vsri_quic_stats q_stats;

void vsri_quic_stats(struct vsri_quic_stats *out) { *out = q_stats; }

/* ---- config ---------------------------------------------------------------------------- */

static const struct vsri_quic_config q_default_cfg = {
    .max_bidi_streams = 1,
    .idle_timeout_ns = 30 * NGTCP2_SECONDS,
    .keep_alive_ns = 10 * NGTCP2_SECONDS,
    .handshake_grace_ns = 10 * NGTCP2_SECONDS,
    .close_grace_ns = 2 * NGTCP2_SECONDS,
    .initial_mtu = 1200,
    .max_udp_payload = 1452,
    .loopback_udp_payload = 65000,
    .stream_window = 64u << 20,
    .conn_window = 64u << 20,
    .cc = VSRI_QUIC_CC_CUBIC,
    .max_handshakes = 1024,
    .retry_threshold = 256,
    .max_handshakes_per_source = 32,
    .retry_token_lifetime_ns = 10 * NGTCP2_SECONDS,
    .server_name = "localhost",
};

void vsri_quic_config_default(struct vsri_quic_config *cfg) { *cfg = q_default_cfg; }

int vsri_quic_config_check(const struct vsri_quic_config *cfg) {
  const char *bad = NULL;
  if (cfg->max_bidi_streams < 1 || cfg->max_bidi_streams > Q_MAX_STREAMS) {
    bad = "max_bidi_streams must be within 1..1024";
  } else if (cfg->initial_mtu != 1200) {
    bad = "initial_mtu must be 1200 (ngtcp2 0.12 starts every path at 1200; raise "
          "max_udp_payload instead)";
  } else if (cfg->max_udp_payload < 1200 || cfg->max_udp_payload > 65527) {
    bad = "max_udp_payload must be within 1200..65527";
  } else if (cfg->loopback_udp_payload && (cfg->loopback_udp_payload < 1200 ||
                                           cfg->loopback_udp_payload > 65507)) {
    bad = "loopback_udp_payload must be 0 or within 1200..65507";
  } else if (cfg->stream_window < (64u << 10) || cfg->conn_window < cfg->stream_window ||
             cfg->conn_window > (1ull << 40)) {
    bad = "windows: 64 KiB <= stream_window <= conn_window <= 1 TiB";
  } else if (cfg->handshake_grace_ns == 0) {
    bad = "handshake_grace must be > 0";
  } else if (cfg->cc > VSRI_QUIC_CC_BBR2) {
    bad = "unknown congestion controller";
  } else if (cfg->max_handshakes == 0 || cfg->max_handshakes > (1u << 20)) {
    bad = "max_handshakes must be within 1..1048576";
  } else if (cfg->retry_token_lifetime_ns == 0) {
    bad = "retry_token_lifetime must be > 0";
  }
  if (bad) {
    VSRI_ERROR("VSR-CONFIG", "quic: %s", bad);
    return VSR_ECONFIG;
  }
  return 0;
}

const struct vsri_quic_config *q_cfg(const struct vsri_transport_ctx *ctx) {
  return ctx->tls ? ctx->tls : &q_default_cfg;
}

/* ---- small helpers --------------------------------------------------------------------- */

void q_rand(uint8_t *dst, size_t len) {
  if (gnutls_rnd(GNUTLS_RND_RANDOM, dst, len) != 0) {
    /* Only hit if the system RNG fails; keep going with a weaker source. */
    for (size_t i = 0; i < len; i++) dst[i] = (uint8_t)random();
  }
}

uint64_t q_now(const struct q_conn *c) { return vsri_io_now(c->ctx->io); }

int q_app_code(int reason) {
  switch (reason) {
  case VSR_EHANDSHAKE:
  case VSR_EHANDSHAKE_TIMEOUT:
  case VSR_EALPN: return VSRI_QUIC_HANDSHAKE_FAILED;
  case VSR_EAUTH:
  case VSR_EAUTH_CLUSTER:
  case VSR_EAUTH_DIRECTION:
  case VSR_EAUTH_REQUIRED:
  case VSR_EAUTH_COMMAND:
  case VSR_EAUTH_STATUS: return VSRI_QUIC_AUTH_FAILED;
  case VSR_EPROTO:
  case VSR_ESTREAM:
  case VSR_EEOF_HEADER:
  case VSR_EEOF_BODY:
  case VSR_EFRAME_TIMEOUT: return VSRI_QUIC_PROTOCOL_VIOLATION;
  default:
    if (reason <= VSR_EFRAME_SMALL && reason >= VSR_EFRAME_PLANE) {
      return VSRI_QUIC_PROTOCOL_VIOLATION;
    }
    return VSRI_QUIC_SHUTDOWN;
  }
}

/* The reason reported for a CONNECTION_CLOSE received from the peer. */
int q_peer_reason(uint64_t code, bool app) {
  if (app) {
    switch (code) {
    case VSRI_QUIC_HANDSHAKE_FAILED: return VSR_EHANDSHAKE;
    case VSRI_QUIC_AUTH_FAILED: return VSR_EAUTH;
    case VSRI_QUIC_SHUTDOWN: return VSR_ESHUTDOWN;
    case VSRI_QUIC_PROTOCOL_VIOLATION: return VSR_EPROTO;
    default: return VSR_ECLOSED;
    }
  }
  if (code == NGTCP2_NO_ERROR) return VSR_ECLOSED;
  if (code == NGTCP2_CRYPTO_ERROR + 120) return VSR_EALPN; /* no_application_protocol */
  if (code >= NGTCP2_CRYPTO_ERROR && code <= NGTCP2_CRYPTO_ERROR + 0xff) return VSR_EHANDSHAKE;
  if (code == NGTCP2_STREAM_LIMIT_ERROR || code == NGTCP2_STREAM_STATE_ERROR) {
    return VSR_ESTREAM;
  }
  return VSR_EQUIC;
}

/* The reason for a local ngtcp2 error. */
int q_liberr_reason(int rv) {
  switch (rv) {
  case NGTCP2_ERR_STREAM_LIMIT:
  case NGTCP2_ERR_STREAM_STATE: return VSR_ESTREAM;
  case NGTCP2_ERR_NOMEM: return VSR_ENOMEM;
  case NGTCP2_ERR_HANDSHAKE_TIMEOUT: return VSR_EHANDSHAKE_TIMEOUT;
  case NGTCP2_ERR_IDLE_CLOSE: return VSR_EIDLE;
  default: return VSR_EQUIC;
  }
}

void q_set_app_error(struct q_conn *c, uint64_t code) {
  if (c->ccerr_set) return;
  ngtcp2_connection_close_error_set_application_error(&c->ccerr, code, NULL, 0);
  c->ccerr_set = true;
}

/* Records a violation found inside an ngtcp2 callback; the callback then fails and the read
 * path closes with 0x1004. */
int q_violation(struct q_conn *c, int reason, const char *what) {
  VSRI_WARN("VSR-QUIC", "%s quic: %s (%s); closing with 0x%x", c->name, what,
            vsr_errname(reason), VSRI_QUIC_PROTOCOL_VIOLATION);
  if (!c->fail_reason) c->fail_reason = reason;
  q_set_app_error(c, VSRI_QUIC_PROTOCOL_VIOLATION);
  return NGTCP2_ERR_CALLBACK_FAILURE;
}
