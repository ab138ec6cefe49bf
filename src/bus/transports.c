/* The client-plane transports the bus and the client SDK know: one row each (struct
 * vsri_bus_transport in bus_impl.h). bus.c and client.c iterate this table and name no
 * transport; a new transport adds its row here and its glue file next to quic_glue.c. */
#include <stddef.h>
#include <string.h>

#include "bus/bus_impl.h"
#include "transport/tls_ws.h"

#define BUS_OPTS(member) \
  .opts_offset = offsetof(struct vsr_bus_options, member), \
  .opts_size = sizeof(((struct vsr_bus_options *)0)->member)

static const char *tcp_listen_addr(const struct vsr_bus_options *o) { return o->client_tcp_addr; }

static const struct vsri_bus_transport bus_transport_rows[] = {
    {
        /* Plain TCP: no settings of its own beyond the shared context. */
        .name = "tcp",
        .ops = &vsri_transport_tcp,
        .listen_addr = tcp_listen_addr,
    },
    {
        .name = "quic",
        .ops = &vsri_transport_quic,
        BUS_OPTS(quic),
        .options_default = vsri_bus_quic_defaults,
        .client_options_default = vsri_client_quic_defaults,
        .listen_addr = vsri_bus_quic_listen_addr,
        .config_new = vsri_bus_quic_config,
        .config_free = vsri_quic_glue_free,
        .listener_stats = vsri_bus_quic_stats,
        .client_config_new = vsri_client_quic_config,
        .client_config_free = vsri_quic_glue_free,
    },
    {
        /* TLS 1.3 over TCP (tls_glue.c, transport/tls_ws.c). */
        .name = "tls",
        .ops = &vsri_transport_tls,
        BUS_OPTS(tls),
        .listen_addr = vsri_bus_tls_listen_addr,
        .config_new = vsri_bus_tls_config,
        .config_free = vsri_tls_glue_free,
        .client_config_new = vsri_client_tls_config,
        .client_config_free = vsri_tls_glue_free,
    },
    {
        /* WebSocket: no TLS; its settings only carry handshake_grace. */
        .name = "ws",
        .ops = &vsri_transport_ws,
        BUS_OPTS(ws),
        .listen_addr = vsri_bus_ws_listen_addr,
        .config_new = vsri_bus_ws_config,
        .config_free = vsri_tls_glue_free,
    },
    {
        /* WebSocket over TLS 1.3: the certificate of vsr_bus_options.tls. */
        .name = "wss",
        .ops = &vsri_transport_wss,
        BUS_OPTS(wss),
        .listen_addr = vsri_bus_wss_listen_addr,
        .config_new = vsri_bus_tls_config,
        .config_free = vsri_tls_glue_free,
        .client_config_new = vsri_client_tls_config,
        .client_config_free = vsri_tls_glue_free,
    },
};

_Static_assert(sizeof bus_transport_rows / sizeof bus_transport_rows[0] == VSRI_BUS_TRANSPORTS,
               "VSRI_BUS_TRANSPORTS (bus_impl.h) must count the rows above");

const struct vsri_bus_transport *const vsri_bus_transports = bus_transport_rows;

const struct vsri_bus_transport *vsri_bus_transport_find(const char *name) {
  for (int i = 0; i < VSRI_BUS_TRANSPORTS; i++) {
    if (strcmp(vsri_bus_transports[i].name, name) == 0) return &vsri_bus_transports[i];
  }
  return NULL;
}

int vsri_bus_transport_index(const struct vsri_transport_ops *ops) {
  for (int i = 0; i < VSRI_BUS_TRANSPORTS; i++) {
    if (vsri_bus_transports[i].ops == ops) return i;
  }
  return 0;
}

const struct vsri_listener *vsri_bus_client_listener(const struct vsr_bus *bus, const char *name) {
  const struct vsri_bus_transport *t = vsri_bus_transport_find(name);
  return t ? bus->client_t[t - vsri_bus_transports].l.l : NULL;
}
