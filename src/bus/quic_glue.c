/* Glue between the bus / client options and the QUIC transport's settings. QUIC is wired in
 * once src/transport/quic.c lands; until then "quic" is reported as unavailable. */
#include "bus/bus_impl.h"
#include "util/log.h"

const struct vsri_transport_ops *vsri_client_quic_ops(void) { return NULL; }

int vsri_client_quic_config(const struct vsr_client_options *o, void **out) {
  (void)o;
  *out = NULL;
  return VSR_EUNSUPPORTED;
}

void vsri_client_quic_config_free(void *cfg) { (void)cfg; }

int vsri_bus_quic_config(const struct vsr_bus_options *o, void **out) {
  (void)o;
  *out = NULL;
  return VSR_EUNSUPPORTED;
}

void vsri_bus_quic_config_free(void *cfg) { (void)cfg; }
