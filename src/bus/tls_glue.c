/* The TLS, WS and WSS rows of vsri_bus_transports (transports.c): the glue between struct
 * vsr_tls_options / vsr_ws_options / vsr_client_tls_options and the transports' settings
 * (transport/tls_ws.h, opaque here: the bus never sees GnuTLS). */
#include "bus/bus_impl.h"
#include "transport/tls_ws.h"
#include "vsrbus/client.h"

const char *vsri_bus_tls_listen_addr(const struct vsr_bus_options *o) { return o->tls.addr; }
const char *vsri_bus_ws_listen_addr(const struct vsr_bus_options *o) { return o->ws.addr; }
const char *vsri_bus_wss_listen_addr(const struct vsr_bus_options *o) { return o->wss.addr; }

static int glue_server(const struct vsr_bus_options *o, bool plain, void **out) {
  struct vsri_tlsws_server_options so = {
      .plain = plain,
      .cert_file = o->tls.cert_file,
      .key_file = o->tls.key_file,
      .client_ca = o->tls.client_ca_file,
      .handshake_grace_ns = o->handshake_grace_ns,
  };
  struct vsri_tlsws_config *c = NULL;
  int err = vsri_tlsws_server_config(&c, &so);
  *out = c;
  return err;
}

int vsri_bus_tls_config(const struct vsr_bus_options *o, void **out) {
  return glue_server(o, false, out);
}

int vsri_bus_ws_config(const struct vsr_bus_options *o, void **out) {
  return glue_server(o, true, out);
}

int vsri_client_tls_config(const struct vsr_client_options *co, void **out) {
  const struct vsr_client_tls_options *o = &co->tls;
  struct vsri_tlsws_client_options t = {
      .ca_file = o->ca_file,
      .pin_sha256 = o->pin_sha256,
      .insecure = o->insecure,
      .server_name = o->server_name,
      .cert_file = o->cert_file,
      .key_file = o->key_file,
  };
  struct vsri_tlsws_config *c = NULL;
  int err = vsri_tlsws_client_config(&c, &t);
  *out = c;
  return err;
}

void vsri_tls_glue_free(void *cfg) { vsri_tlsws_config_free(cfg); }
