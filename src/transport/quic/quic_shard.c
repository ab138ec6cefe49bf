/* QUIC transport: quic_shard.c.
 * QUIC per shard (docs/shards.md, "QUIC"): every shard's listener binds the same UDP address in
 * one SO_REUSEPORT group, and a classic BPF program attached to the group sends each datagram
 * to the socket its Destination Connection ID names. Every connection ID a shard's listener
 * chooses (the handshake's, each NEW_CONNECTION_ID's, a Retry's) carries the shard's index in
 * its first byte, so every packet of a connection after the client's first flight comes back to
 * the shard that holds it, whatever its source address (migration, NAT rebinding). */
#include <linux/filter.h>

#include "transport/quic/quic_impl.h"

#ifndef SO_ATTACH_REUSEPORT_CBPF
#define SO_ATTACH_REUSEPORT_CBPF 51
#endif

/* The reuseport program sees the UDP payload (the kernel pulled the UDP header): byte 0 is the
 * QUIC first byte. Short header (bit 0x80 clear): the DCID starts at byte 1. Long header: byte
 * 1..4 version, byte 5 the DCID length, the DCID at byte 6. The socket is that byte modulo the
 * shard count: a CID this node chose names its shard (byte = shard index < N); a client's first
 * Initial carries a random DCID, so its byte picks a shard, which then issues IDs naming
 * itself. A datagram too short to hold the byte makes the program stop with 0 (classic BPF's
 * rule for a load out of bounds): shard 0, whose QUIC defences drop it. */
size_t vsri_quic_cid_prog(uint32_t shards, struct sock_filter *out) {
  if (shards < 2 || shards > 255) return 0;
  const struct sock_filter prog[VSRI_QUIC_CID_PROG_LEN] = {
      BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 0),             /* A = first byte */
      BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, 0x80, 0, 2),  /* long header? */
      BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 6),             /* long: DCID byte 0 */
      BPF_JUMP(BPF_JMP | BPF_JA | BPF_K, 1, 0, 0),
      BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 1),             /* short: DCID byte 0 */
      BPF_STMT(BPF_ALU | BPF_MOD | BPF_K, shards),       /* the socket index */
      BPF_STMT(BPF_RET | BPF_A, 0),
  };
  memcpy(out, prog, sizeof prog);
  return VSRI_QUIC_CID_PROG_LEN;
}

/* A connection ID this listener chooses: random, its first byte the shard's index when the
 * listener is one of several (the reuseport program routes on it). */
void q_cid_fill(const struct q_listener *l, uint8_t *data, size_t len) {
  q_rand(data, len);
  if (l && l->shards > 1 && len > 0) data[0] = l->shard;
}

/* Before bind: joins (or starts) the SO_REUSEPORT group of the shards. The first socket
 * (reuseport 1) first checks with a plain bind that no one else holds the port: any process of
 * the same user could otherwise have made a group there and would silently take a share of the
 * datagrams. Returns 0 or -errno (-EADDRINUSE: taken). */
int q_reuseport_join(struct vsri_io *io, int fd, const struct sockaddr *sa, socklen_t len,
                     const struct vsri_transport_ctx *ctx) {
  if (!ctx || !ctx->reuseport) return 0;
  uint16_t port = sa->sa_family == AF_INET6 ? ((const struct sockaddr_in6 *)sa)->sin6_port
                                            : ((const struct sockaddr_in *)sa)->sin_port;
  if (ctx->reuseport == 1 && port != 0) {
    int probe = vsri_io_socket(io, sa->sa_family, SOCK_DGRAM);
    if (probe < 0) return probe;
    int err = vsri_io_bind(io, probe, sa, len);
    vsri_io_close_now(io, probe);
    if (err == -EADDRINUSE) return err;
  }
  int one = 1;
  return vsri_io_setsockopt(io, fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
}

/* After bind, on the group's first socket (shard 0's): the routing program. Sockets then take
 * indexes in bind order (shard 0, 1, ...; the workers bind one after the other). */
int q_reuseport_route(struct vsri_io *io, int fd, const struct vsri_transport_ctx *ctx) {
  if (!ctx || ctx->reuseport != 1 || ctx->shards < 2) return 0;
  struct sock_filter prog[VSRI_QUIC_CID_PROG_LEN];
  struct sock_fprog fp = {.len = (unsigned short)vsri_quic_cid_prog(ctx->shards, prog),
                          .filter = prog};
  return vsri_io_setsockopt(io, fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &fp, sizeof fp);
}

int vsri_quic_config_own_cert(struct vsri_quic_config *cfg, struct vsri_cert **own) {
  *own = NULL;
  if (cfg->cert) return 0;
  int err = cfg->cert_file || cfg->key_file ? vsri_cert_load(own, cfg->cert_file, cfg->key_file)
                                            : vsri_cert_generate(own, "localhost", 365);
  if (!err) cfg->cert = *own;
  return err;
}

void vsri_quic_cert_free(struct vsri_cert *own) { vsri_cert_free(own); }
