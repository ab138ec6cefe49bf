/* QUIC transport (src/transport/quic/): settings, close codes, and the few internals that
 * tests, the fuzz target and the node need (fingerprint of the listener's certificate, close
 * codes seen, raw packet input). The transport itself is vsri_transport_quic in transport.h. */
#ifndef VSRI_TRANSPORT_QUIC_H
#define VSRI_TRANSPORT_QUIC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "transport/transport.h"

#define VSRI_QUIC_ALPN "iggy.consensus.v1"

/* Application close codes (the reference's values). */
enum {
  VSRI_QUIC_HANDSHAKE_FAILED = 0x1001,
  VSRI_QUIC_AUTH_FAILED = 0x1002,
  VSRI_QUIC_SHUTDOWN = 0x1003,
  VSRI_QUIC_PROTOCOL_VIOLATION = 0x1004,
};

enum vsri_quic_cc { VSRI_QUIC_CC_CUBIC = 0, VSRI_QUIC_CC_RENO, VSRI_QUIC_CC_BBR2 };

struct vsri_cert;

/* Settings for QUIC listeners and dialers, passed as vsri_transport_ctx.tls. Strings and |cert|
 * are borrowed: they must outlive every listener and connection using them. A NULL ctx.tls
 * means vsri_quic_config_default(). */
struct vsri_quic_config {
  /* Server identity: |cert| if set, else cert_file + key_file (PEM), else a self-signed
   * certificate for "localhost" generated at listen time (its SHA-256 is logged). */
  const struct vsri_cert *cert;
  const char *cert_file;
  const char *key_file;
  /* Server ALPN policy. Default (false): admit a client that offers iggy.consensus.v1 or no
   * ALPN at all (Iggy mainline's SDKs offer none). true: the seed's strict rule, only clients
   * offering iggy.consensus.v1. A client that offers only other protocols is always refused at
   * the handshake (TLS alert no_application_protocol, QUIC 0x178). */
  bool alpn_required;

  uint32_t max_bidi_streams;   /* 1 (1..1024). Server: bidi streams a client may hold open at
                                  once (MAX_STREAMS), each served concurrently. Client in
                                  stream_per_request mode: frames in flight at once, each on
                                  its own stream (the server's limit caps it further) */
  uint64_t idle_timeout_ns;    /* 30 s; 0: none */
  uint64_t keep_alive_ns;      /* 10 s; 0: none (server: only once the owner started it) */
  uint64_t handshake_grace_ns; /* 10 s: bound on the TLS/QUIC handshake only; a connection
                                  that completed it lives until the idle timeout even before
                                  its first stream (as in Iggy mainline) */
  uint64_t close_grace_ns;     /* 2 s: bound on a draining close before 0x1003 goes out */
  uint32_t initial_mtu;        /* 1200: UDP payload before path MTU discovery */
  uint32_t max_udp_payload;    /* 1452: PMTUD ceiling; above 1472 PMTUD is off and this size
                                  is used at once (loopback benchmarks only) */
  uint32_t loopback_udp_payload; /* 65000: UDP payload used at once with a peer on loopback
                                  (lo's MTU is 65,536; ngtcp2 0.12's PMTUD probes stop at
                                  1452; measured: 1 MiB frames 2-3x faster than 1452). 0:
                                  loopback peers get PMTUD like any path */
  uint64_t stream_window;      /* 64 MiB: per-stream receive window */
  uint64_t conn_window;        /* 64 MiB: connection receive window */
  enum vsri_quic_cc cc;        /* CUBIC */
  uint32_t max_handshakes;     /* 1024: server, connections not yet reported to the owner
                                  ("half-open"); when full the oldest is evicted */
  uint32_t retry_threshold;    /* 256: server, half-opens from which an Initial without a valid
                                  Retry token gets a Retry (address validation); 0: always */
  uint32_t max_handshakes_per_source; /* 32: server, half-opens per source (IPv4 address, IPv6
                                  /64) from which that source's new clients must answer a
                                  Retry (those that did are admitted anyway); 0: no limit */
  uint64_t retry_token_lifetime_ns; /* 10 s: how long a Retry token is accepted */
  bool no_gso;                 /* send one datagram per syscall instead of UDP GSO bursts */
  bool no_gro;                 /* receive without UDP_GRO */
  bool unbatched;              /* benchmarks: behave like the reference (each frame written and
                                  flushed alone: no packing of frames into packets, one
                                  sendmsg per datagram, no GSO / GRO) */

  /* Client: how the server's certificate is checked. ca_file: PEM CA bundle or the server's
   * own certificate; pin_sha256: hex SHA-256 of the server certificate's DER (colons allowed);
   * insecure: accept any certificate (only when neither is given). */
  const char *ca_file;
  const char *pin_sha256;
  bool insecure;
  const char *server_name;   /* SNI and name check; "localhost" */
  bool stream_per_request;   /* client: one bidi stream per frame, finished after it (Iggy
                                mainline SDK model); default: one long-lived stream */
  const char *alpn;          /* client: ALPN offered; NULL or "": none (mainline) */

  /* Tests only: set with vsri_quic_test_lie_streams() (test hooks). */
  uint32_t test_lie_streams;    /* client believes the server allows this many more streams */
};

/* Fills |cfg| with the defaults above. */
void vsri_quic_config_default(struct vsri_quic_config *cfg);

/* Checks ranges (windows, MTU, stream count). Returns 0 or VSR_ECONFIG (logged). */
int vsri_quic_config_check(const struct vsri_quic_config *cfg);

/* SHA-256 of the certificate a listener serves. */
void vsri_quic_listener_fingerprint(const struct vsri_listener *l, uint8_t out[32]);

/* Admission of client Initials by a listener (handshake-flood defences), counted since listen. */
struct vsri_quic_admission {
  uint64_t initials;        /* Initials for unknown connection IDs that were looked at */
  uint64_t admitted;        /* half-opens created (validated ones included) */
  uint64_t validated;       /* ... of which carried a valid Retry token */
  uint64_t retries;         /* answered with a Retry packet instead (no state kept) */
  uint64_t retry_source;    /* ... of which because their source was at its limit */
  uint64_t tokens_invalid;  /* carried a forged, expired or misdirected Retry token: refused
                               with a stateless CONNECTION_CLOSE (INVALID_TOKEN) */
  uint64_t evicted;         /* oldest half-open evicted: max_handshakes was full */
  uint32_t halfopen;        /* half-opens now */
  uint32_t halfopen_peak;   /* most half-opens at once */
  uint64_t unknown_cid;     /* packets for no connection of this listener that could not start
                               one (not an acceptable Initial): stale, forged, or misrouted */
};
void vsri_quic_listener_admission(const struct vsri_listener *l, struct vsri_quic_admission *out);

/* Counters of the calling thread's QUIC traffic (benchmarks). */
struct vsri_quic_stats {
  uint64_t send_calls, datagrams_out, bytes_out, send_blocked;
  uint64_t recv_calls, datagrams_in, bytes_in;
  uint64_t timer_fires;
};
void vsri_quic_stats(struct vsri_quic_stats *out);

/* ---- test hooks ------------------------------------------------------------------------
 * Defined in quic/quic_testhooks.c, which only the static library contains (the installed
 * shared library has none of them); a program linking the static library gets them only if
 * it calls one (the node does not). */

/* Tests: the client dialing with |cfg| believes the server allows |n| more streams than it
 * does (its TLS session rewrites the server's transport parameters on the way in). */
void vsri_quic_test_lie_streams(struct vsri_quic_config *cfg, uint32_t n);

/* Connections the listener holds (handshaking, live, closing). */
uint32_t vsri_quic_listener_conns(const struct vsri_listener *l);

/* Half-opens now from the source of |addr| (its IPv4 address or IPv6 /64; the port is
 * ignored). */
uint32_t vsri_quic_listener_halfopen_from(const struct vsri_listener *l,
                                          const struct sockaddr *addr);

/* Congestion and RTT aggregates over a listener's open connections (handshake done, not
 * closing), from ngtcp2_conn_get_conn_stat: the metrics endpoint's QUIC gauges. */
struct vsri_quic_conn_agg {
  uint32_t conns;               /* connections aggregated */
  uint64_t srtt_ns_sum, srtt_ns_max;
  uint64_t cwnd_sum, cwnd_max;  /* bytes */
  uint64_t in_flight_sum;       /* bytes */
  uint64_t pto_count_sum;       /* probe timeouts now outstanding (ngtcp2 0.12 counts no lost
                                   packets) */
};
void vsri_quic_listener_conn_agg(const struct vsri_listener *l, struct vsri_quic_conn_agg *out);

/* Shards (docs/shards.md, "QUIC"): the classic BPF program attached to the SO_REUSEPORT group of
 * the shards' UDP sockets (SO_ATTACH_REUSEPORT_CBPF): it returns the socket index named by a
 * datagram's Destination Connection ID (its first byte modulo |shards|). Fills |out| and returns
 * its length (VSRI_QUIC_CID_PROG_LEN), or 0 when |shards| is not within 2..255. The transport
 * attaches exactly this program; tests build a group with it. */
#define VSRI_QUIC_CID_PROG_LEN 7
struct sock_filter;
size_t vsri_quic_cid_prog(uint32_t shards, struct sock_filter *out);

/* Shards: every shard's listener serves one certificate. Loads it (cert_file + key_file) or
 * generates the self-signed one once, into |*own|, and points cfg->cert at it (a no-op when
 * cfg->cert is set). Returns 0 or the load error (logged). vsri_quic_cert_free(*own) once no
 * listener uses |cfg| any more. */
int vsri_quic_config_own_cert(struct vsri_quic_config *cfg, struct vsri_cert **own);
void vsri_quic_cert_free(struct vsri_cert *own);

/* QUIC connections and listeners not yet freed (all loops): tests run the loop until 0 before
 * deleting it. */
uint32_t vsri_quic_live(void);

/* Inside on_closed: the CONNECTION_CLOSE that ended |c| (received from the peer, or sent by
 * us). *app is true for an application code (0x1001..0x1004), false for a transport code. */
void vsri_quic_close_info(const struct vsri_conn *c, uint64_t *code, bool *app, bool *remote);

/* Tests, inside on_frame: the stream the frame arrived on (-1 for a frame held until
 * start()). */
int64_t vsri_quic_frame_stream(const struct vsri_conn *c);

/* Tests: opens an extra stream on a dialed connection (bidi or uni) and sends |len| bytes of
 * |data| (borrowed until the connection closes) on it. Returns 0, VSR_ESTREAM or VSR_EINVAL. */
int vsri_quic_test_open_stream(struct vsri_conn *c, bool bidi, const uint8_t *data, size_t len);

/* Tests: resets every frame stream of |c| (RESET_STREAM and STOP_SENDING with |code|), as a
 * client that gives up on its requests. Returns the number of streams reset, or VSR_EINVAL. */
int vsri_quic_test_reset_streams(struct vsri_conn *c, uint64_t code);

/* Fuzzing: feeds one datagram from |from| to a listener as if it had been received now, and
 * replaces the UDP send with |tx| (NULL restores it). */
void vsri_quic_listener_input(struct vsri_listener *l, const struct sockaddr *from,
                              socklen_t fromlen, const uint8_t *pkt, size_t len);
/* Tests: drives a dialed connection without its socket. Its datagrams go to |tx| instead
 * (NULL restores the socket), and vsri_quic_test_conn_input() feeds it one datagram from
 * |from| as if received now. */
void vsri_quic_test_conn_set_tx(struct vsri_conn *c,
                                void (*tx)(void *user, const uint8_t *pkt, size_t len),
                                void *user);
void vsri_quic_test_conn_input(struct vsri_conn *c, const struct sockaddr *from,
                               socklen_t fromlen, const uint8_t *pkt, size_t len);
void vsri_quic_listener_set_tx(struct vsri_listener *l,
                               void (*tx)(void *user, const uint8_t *pkt, size_t len),
                               void *user);

#endif
