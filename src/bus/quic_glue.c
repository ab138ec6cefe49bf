/* The QUIC row of vsri_bus_transports (transports.c): its defaults, and the glue between
 * struct vsr_quic_options / vsr_client_quic_options and the QUIC transport's settings
 * (transport/quic.h). Each config is one allocation holding struct vsri_quic_config and copies
 * of the strings it points at, so it lives exactly as long as the bus or client that owns it. */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "bus/bus_impl.h"
#include "vsrbus/client.h"
#include "transport/quic.h"
#include "util/alloc.h"
#include "util/log.h"

struct glue_cfg {
  struct vsri_quic_config cfg;
  struct vsri_cert *own; /* shards: the certificate every shard's listener serves */
  char strings[];
};

static size_t glue_len(const char *s) { return s ? strlen(s) + 1 : 0; }

static const char *glue_copy(char **p, const char *s) {
  if (!s) return NULL;
  size_t n = strlen(s) + 1;
  char *r = memcpy(*p, s, n);
  *p += n;
  return r;
}

void vsri_bus_quic_defaults(struct vsr_bus_options *bo) {
  struct vsr_quic_options *o = &bo->quic;
  o->idle_timeout_ns = 30000000000ull;
  o->keep_alive_ns = 10000000000ull;
  o->max_bidi_streams = 1;
  o->initial_mtu = 1200;
  o->stream_window = 64u << 20;
  o->conn_window = 64u << 20;
  o->max_handshakes = 1024;
  o->retry_threshold = 256;
  o->max_handshakes_per_source = 32;
}

void vsri_client_quic_defaults(struct vsr_client_options *co) {
  struct vsr_client_quic_options *o = &co->quic;
  o->alpn = NULL; /* none: Iggy mainline's servers advertise none */
  o->streams = VSR_QUIC_STREAMS_PER_REQUEST;
  o->max_streams = 16;
}

const char *vsri_bus_quic_listen_addr(const struct vsr_bus_options *o) { return o->quic.addr; }

/* GnuTLS writes every TLS secret (QUIC included) to $SSLKEYLOGFILE: say so, once per bus. */
static void glue_warn_keylog(void) {
  const char *path = getenv("SSLKEYLOGFILE");
  if (!path || !*path) return;
  VSRI_WARN("VSR-KEYLOG", "SSLKEYLOGFILE is set: the TLS secrets of every QUIC connection are "
            "written to %s; anyone who can read it can decrypt the traffic (for debugging "
            "only)", path);
}

int vsri_client_quic_config(const struct vsr_client_options *co, void **out) {
  *out = NULL;
  /* Said once per process, at the first QUIC client. */
  static atomic_flag warned = ATOMIC_FLAG_INIT;
  if (!atomic_flag_test_and_set(&warned)) glue_warn_keylog();
  const struct vsr_client_quic_options *o = &co->quic;
  const char *alpn = o->alpn && *o->alpn ? o->alpn : NULL;
  size_t need = glue_len(o->ca_file) + glue_len(o->pin_sha256) + glue_len(alpn);
  struct glue_cfg *g = vsri_malloc(sizeof *g + need);
  if (!g) return VSR_ENOMEM;
  vsri_quic_config_default(&g->cfg);
  g->own = NULL;
  char *p = g->strings;
  g->cfg.ca_file = glue_copy(&p, o->ca_file);
  g->cfg.pin_sha256 = glue_copy(&p, o->pin_sha256);
  g->cfg.alpn = glue_copy(&p, alpn);
  g->cfg.insecure = o->insecure;
  if (o->loopback_pmtud) g->cfg.loopback_udp_payload = 0;
  g->cfg.stream_per_request = o->streams != VSR_QUIC_STREAMS_LONG;
  if (g->cfg.stream_per_request && o->max_streams) {
    g->cfg.max_bidi_streams = o->max_streams;
  }
  int err = vsri_quic_config_check(&g->cfg);
  if (err) {
    vsri_free(g);
    return err;
  }
  *out = g;
  return 0;
}

int vsri_bus_quic_config(const struct vsr_bus_options *bo, void **out) {
  *out = NULL;
  const struct vsr_quic_options *o = &bo->quic;
  size_t need = glue_len(o->cert_file) + glue_len(o->key_file);
  struct glue_cfg *g = vsri_malloc(sizeof *g + need);
  if (!g) return VSR_ENOMEM;
  struct vsri_quic_config *c = &g->cfg;
  vsri_quic_config_default(c);
  g->own = NULL;
  char *p = g->strings;
  c->cert_file = glue_copy(&p, o->cert_file);
  c->key_file = glue_copy(&p, o->key_file);
  c->alpn_required = o->alpn_required;
  c->idle_timeout_ns = o->idle_timeout_ns;
  c->keep_alive_ns = o->keep_alive_ns;
  if (o->max_bidi_streams) c->max_bidi_streams = o->max_bidi_streams;
  if (o->initial_mtu) c->initial_mtu = o->initial_mtu;
  if (o->stream_window) c->stream_window = o->stream_window;
  if (o->conn_window) c->conn_window = o->conn_window;
  if (bo->handshake_grace_ns) c->handshake_grace_ns = bo->handshake_grace_ns;
  if (bo->close_peer_timeout_ns) c->close_grace_ns = bo->close_peer_timeout_ns;
  if (o->max_handshakes) c->max_handshakes = o->max_handshakes;
  c->retry_threshold = o->retry_threshold;
  c->max_handshakes_per_source = o->max_handshakes_per_source;
  if (o->loopback_pmtud) c->loopback_udp_payload = 0;
  int err = vsri_quic_config_check(c);
  /* Shards: the workers' listeners borrow this config, so they serve this one certificate. */
  if (!err && bo->shards > 1) err = vsri_quic_config_own_cert(c, &g->own);
  if (err) {
    vsri_free(g);
    return err;
  }
  glue_warn_keylog();
  *out = g;
  return 0;
}

void vsri_quic_glue_free(void *cfg) {
  struct glue_cfg *g = cfg;
  if (g) vsri_quic_cert_free(g->own);
  vsri_free(g);
}

void vsri_bus_quic_stats(const struct vsri_listener *l, struct vsr_bus_stats *out) {
  struct vsri_quic_admission a;
  vsri_quic_listener_admission(l, &a);
  out->quic_retries = a.retries;
  out->quic_tokens_invalid = a.tokens_invalid;
  out->quic_evicted = a.evicted;
  out->quic_halfopen_peak = a.halfopen_peak;
  out->quic_unknown_cid = a.unknown_cid;
}
