/* Glue between the bus / client options and the QUIC transport's settings (transport/quic.h).
 * Each config is one allocation holding struct vsri_quic_config and copies of the strings it
 * points at, so it lives exactly as long as the bus or client that owns it. */
#include <string.h>

#include "bus/bus_impl.h"
#include "transport/quic.h"
#include "util/alloc.h"
#include "util/log.h"

struct glue_cfg {
  struct vsri_quic_config cfg;
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

const struct vsri_transport_ops *vsri_client_quic_ops(void) { return &vsri_transport_quic; }

int vsri_client_quic_config(const struct vsr_client_options *o, void **out) {
  *out = NULL;
  const char *alpn = o->quic_alpn && *o->quic_alpn ? o->quic_alpn : NULL;
  size_t need = glue_len(o->quic_ca_file) + glue_len(o->quic_pin_sha256) + glue_len(alpn);
  struct glue_cfg *g = vsri_malloc(sizeof *g + need);
  if (!g) return VSR_ENOMEM;
  vsri_quic_config_default(&g->cfg);
  char *p = g->strings;
  g->cfg.ca_file = glue_copy(&p, o->quic_ca_file);
  g->cfg.pin_sha256 = glue_copy(&p, o->quic_pin_sha256);
  g->cfg.alpn = glue_copy(&p, alpn);
  g->cfg.insecure = o->quic_insecure;
  g->cfg.stream_per_request = o->quic_streams != VSR_QUIC_STREAMS_LONG;
  if (g->cfg.stream_per_request && o->quic_max_streams) {
    g->cfg.max_bidi_streams = o->quic_max_streams;
  }
  int err = vsri_quic_config_check(&g->cfg);
  if (err) {
    vsri_free(g);
    return err;
  }
  *out = g;
  return 0;
}

void vsri_client_quic_config_free(void *cfg) { vsri_free(cfg); }

int vsri_bus_quic_config(const struct vsr_bus_options *o, void **out) {
  *out = NULL;
  size_t need = glue_len(o->quic_cert_file) + glue_len(o->quic_key_file);
  struct glue_cfg *g = vsri_malloc(sizeof *g + need);
  if (!g) return VSR_ENOMEM;
  struct vsri_quic_config *c = &g->cfg;
  vsri_quic_config_default(c);
  char *p = g->strings;
  c->cert_file = glue_copy(&p, o->quic_cert_file);
  c->key_file = glue_copy(&p, o->quic_key_file);
  c->alpn_required = o->quic_alpn_required;
  c->idle_timeout_ns = o->quic_idle_timeout_ns;
  c->keep_alive_ns = o->quic_keep_alive_ns;
  if (o->quic_max_bidi_streams) c->max_bidi_streams = o->quic_max_bidi_streams;
  if (o->quic_initial_mtu) c->initial_mtu = o->quic_initial_mtu;
  if (o->quic_stream_window) c->stream_window = o->quic_stream_window;
  if (o->quic_conn_window) c->conn_window = o->quic_conn_window;
  if (o->handshake_grace_ns) c->handshake_grace_ns = o->handshake_grace_ns;
  if (o->close_peer_timeout_ns) c->close_grace_ns = o->close_peer_timeout_ns;
  if (o->quic_max_handshakes) c->max_handshakes = o->quic_max_handshakes;
  c->retry_threshold = o->quic_retry_threshold;
  c->max_handshakes_per_source = o->quic_max_handshakes_per_source;
  int err = vsri_quic_config_check(c);
  if (err) {
    vsri_free(g);
    return err;
  }
  *out = g;
  return 0;
}

void vsri_bus_quic_config_free(void *cfg) { vsri_free(cfg); }

void vsri_bus_quic_stats(const struct vsri_listener *l, struct vsr_bus_stats *out) {
  struct vsri_quic_admission a;
  vsri_quic_listener_admission(l, &a);
  out->quic_retries = a.retries;
  out->quic_tokens_invalid = a.tokens_invalid;
  out->quic_evicted = a.evicted;
  out->quic_halfopen_peak = a.halfopen_peak;
}
