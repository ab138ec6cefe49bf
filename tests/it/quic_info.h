/* The QUIC listener of an h_node: its bound address and its certificate's SHA-256 fingerprint,
 * read on the loop thread (h_run task), for clients that pin it. Shared by the QUIC tests. */
#ifndef VSRT_QUIC_INFO_H
#define VSRT_QUIC_INFO_H

#include "harness.h"

#include "bus/bus_impl.h"
#include "crypto/cert.h"
#include "transport/quic.h"

struct quic_info {
  char addr[64];
  char pin[VSRI_FINGERPRINT_TEXT_LEN];
};

static inline void quic_info_task(struct h_node *n, void *arg) {
  struct quic_info *qi = arg;
  vsr_bus_listen_addr(n->bus, "quic", qi->addr, sizeof qi->addr);
  uint8_t fp[32];
  vsri_quic_listener_fingerprint(vsri_bus_client_listener(n->bus, "quic"), fp);
  vsri_fingerprint_format(fp, qi->pin);
}

#endif
