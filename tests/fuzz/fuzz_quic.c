/* libFuzzer target: random datagrams into the QUIC server's packet input (the sans-I/O test
 * hook vsri_quic_listener_input, quic/quic_testhooks.c). Input: records of
 * [u8 source][u16 LE length][datagram]; the source byte picks one of a few client addresses.
 * Each input gets a fresh listener (the certificate is made once); what the server sends is
 * dropped. Accepted connections are closed by their owner at once; everything must be freed
 * again before the next input. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/cert.h"
#include "io/io.h"
#include "transport/quic.h"
#include "transport/transport.h"
#include "vsrbus/vsrbus.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct vsri_io *fz_io;
static struct vsr_pool *fz_pool;
static struct vsri_cert *fz_cert;
static struct vsri_quic_config fz_cfg;
static struct vsri_transport_ctx fz_ctx;

static void fz_tx(void *user, const uint8_t *pkt, size_t len) {
  (void)user;
  (void)pkt;
  (void)len;
}

static void fz_on_frame(void *owner, struct vsri_conn *conn, struct vsr_msg *msg) {
  (void)owner;
  (void)conn;
  (void)msg;
}

static void fz_on_closed(void *owner, struct vsri_conn *conn, int reason) {
  (void)owner;
  (void)conn;
  (void)reason;
}

static const struct vsri_conn_events fz_events = {.on_frame = fz_on_frame,
                                                  .on_closed = fz_on_closed};
static struct vsr_msg *fz_slots[16];
static struct vsri_sendq fz_q = {.slots = fz_slots, .ring = {.cap = 16}};

static void fz_on_accept(void *owner, struct vsri_conn *conn) {
  (void)owner;
  vsri_transport_quic.start(conn, &fz_events, NULL, &fz_q);
  vsri_transport_quic.close(conn, VSR_ESHUTDOWN, false);
}

static void fz_init(void) {
  vsr_log_set_level(VSR_LOG_ERROR);
  struct vsri_io_options io;
  vsri_io_options_default(&io);
  io.backend = VSRI_IO_EPOLL;
  struct vsr_pool_options po;
  vsr_pool_options_default(&po);
  po.prealloc[0] = 16;
  po.prealloc[1] = 0;
  if (vsri_io_new(&fz_io, &io) || vsr_pool_new(&fz_pool, &po) ||
      vsri_cert_generate(&fz_cert, "localhost", 2)) {
    abort();
  }
  vsri_quic_config_default(&fz_cfg);
  fz_cfg.cert = fz_cert;
  fz_cfg.alpn_required = false; /* both ALPN paths are reachable (the default) */
  fz_ctx = (struct vsri_transport_ctx){.io = fz_io, .pool = fz_pool,
                                       .max_message_size = 1u << 20, .max_batch = 16,
                                       .tls = &fz_cfg};
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!fz_io) fz_init();
  struct vsri_listener *l = NULL;
  if (vsri_transport_quic.listen(&l, &fz_ctx, "127.0.0.1:0", fz_on_accept, NULL) != 0) abort();
  vsri_quic_listener_set_tx(l, fz_tx, NULL);
  size_t off = 0;
  while (off + 3 <= size) {
    uint8_t src = data[off];
    size_t len = (size_t)data[off + 1] | (size_t)data[off + 2] << 8;
    off += 3;
    if (len > size - off) len = size - off;
    struct sockaddr_in from = {.sin_family = AF_INET,
                               .sin_port = htons((uint16_t)(40000 + (src & 3))),
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    vsri_quic_listener_input(l, (struct sockaddr *)&from, sizeof from, data + off, len);
    off += len;
    vsri_io_run(fz_io, 0);
  }
  vsri_transport_quic.listener_close(l);
  for (int i = 0; i < 1000 && vsri_quic_live() > 0; i++) vsri_io_run(fz_io, 0);
  for (int i = 0; i < 4; i++) vsri_io_run(fz_io, 0);
  if (vsri_quic_live() != 0) {
    fprintf(stderr, "fuzz_quic: %u QUIC objects not freed\n", vsri_quic_live());
    abort();
  }
  struct vsr_pool_stats st;
  vsr_pool_stats(fz_pool, &st);
  if (st.live != 0) {
    fprintf(stderr, "fuzz_quic: %llu messages leaked\n", (unsigned long long)st.live);
    abort();
  }
  return 0;
}
