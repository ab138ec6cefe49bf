/* Real QUIC client Initials for flood tests and the flood tool: each is the first datagram of
 * a real vsrbus client (a TLS 1.3 ClientHello offering iggy.consensus.v1, padded to >= 1200
 * bytes) with its own fresh Destination Connection ID, captured instead of sent. Replaying one
 * makes the server start a handshake that never finishes. */
#ifndef VSR_IT_QUIC_INITIALS_H
#define VSR_IT_QUIC_INITIALS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "io/io.h"
#include "transport/quic.h"
#include "transport/transport.h"
#include "vsrbus/vsrbus.h"

#define QI_MAX 1500

struct qi_set {
  uint8_t (*pkt)[QI_MAX];
  uint16_t *len;
  size_t n;
};

struct qi_cap {
  uint8_t *buf;
  size_t len;
  bool got;
};

static inline void qi_tx(void *user, const uint8_t *pkt, size_t len) {
  struct qi_cap *c = user;
  if (!c->got && len >= 1200 && len <= QI_MAX) {
    memcpy(c->buf, pkt, len);
    c->len = len;
    c->got = true;
  }
}

static inline void qi_on_frame(void *o, struct vsri_conn *c, struct vsr_msg *m) {
  (void)o;
  (void)c;
  (void)m;
}

static inline void qi_on_closed(void *o, struct vsri_conn *c, int reason) {
  (void)o;
  (void)c;
  (void)reason;
}

static const struct vsri_conn_events qi_events = {.on_frame = qi_on_frame,
                                                  .on_closed = qi_on_closed};

/* Fills |set| with |n| Initials from clients configured by |cctx| dialing |addr| (nothing is
 * sent there). Returns 0, or -1 if a client could not be made. Runs |io| until the throwaway
 * clients are freed again. */
static inline int qi_generate(struct qi_set *set, size_t n, struct vsri_io *io,
                              const struct vsri_transport_ctx *cctx, const char *addr) {
  set->pkt = calloc(n, sizeof *set->pkt);
  set->len = calloc(n, sizeof *set->len);
  set->n = 0;
  if (!set->pkt || !set->len) return -1;
  static struct vsr_msg *slots[4];
  static struct vsri_sendq q;
  vsri_sendq_init(&q, slots, 4);
  static struct qi_cap cap; /* outlives the clients: their CONNECTION_CLOSE lands here too */
  uint32_t base = vsri_quic_live();
  for (size_t i = 0; i < n; i++) {
    cap = (struct qi_cap){.buf = set->pkt[i]};
    struct vsri_conn *c;
    if (vsri_transport_quic.connect(&c, cctx, addr, &qi_events, NULL, &q) != 0) return -1;
    vsri_quic_test_conn_set_tx(c, qi_tx, &cap);
    for (int k = 0; k < 100 && !cap.got; k++) vsri_io_run(io, 0);
    vsri_transport_quic.close(c, VSR_ESHUTDOWN, false);
    /* Gone before the next one starts: its CONNECTION_CLOSE (also a padded Initial) must not
     * be taken for the next client's Initial. */
    for (int k = 0; k < 1000 && vsri_quic_live() > base; k++) vsri_io_run(io, 0);
    if (!cap.got || vsri_quic_live() > base) return -1;
    set->len[i] = (uint16_t)cap.len;
    set->n++;
  }
  return 0;
}

static inline void qi_free(struct qi_set *set) {
  free(set->pkt);
  free(set->len);
  memset(set, 0, sizeof *set);
}

/* Long-header packet type (QUIC v1): 0 Initial, 1 0-RTT, 2 Handshake, 3 Retry; -1: short. */
static inline int qi_type(const uint8_t *pkt, size_t len) {
  if (len < 1 || !(pkt[0] & 0x80)) return -1;
  return (pkt[0] & 0x30) >> 4;
}

#endif
