/* TLS over TCP, WebSocket and secure WebSocket transports (tls_ws.c): one connection machine
 * over a TCP socket with two optional layers, the TLS record engine (tls_engine.c) and
 * WebSocket framing (ws_proto.c). Three ops tables share it: "tls" (TLS 1.3, frames as a byte
 * stream inside), "ws" (RFC 6455, one binary message per frame) and "wss" (WebSocket inside
 * TLS 1.3).
 *
 * A listener reports a connection (on_accept) only once it is usable: TLS handshake done and,
 * for WS / WSS, the HTTP upgrade answered with 101. Until then the listener owns it, and
 * handshake_grace bounds it. A plain "GET /" on a WS / WSS listener gets the browser page
 * (ws_page.c) and the connection closes after it.
 *
 * Settings come through vsri_transport_ctx.tls as a struct vsri_tlsws_config (opaque here, so
 * the bus never sees GnuTLS). */
#ifndef VSRI_TLS_WS_H
#define VSRI_TLS_WS_H

#include <stdbool.h>
#include <stdint.h>

#include "transport/transport.h"

struct vsri_tlsws_config;

struct vsri_tlsws_server_options {
  bool plain;                       /* WS only: no certificate, no TLS */
  const char *cert_file, *key_file; /* both NULL: the process's self-signed certificate for
                                       localhost (generated once, shared while in use) */
  const char *client_ca;            /* non-NULL: clients must present a certificate it signed */
  uint64_t handshake_grace_ns;      /* TLS handshake + upgrade; 0: 10 s */
  uint32_t max_handshakes;          /* connections not yet upgraded, per listener; 0: 1024 */
};

struct vsri_tlsws_client_options {
  const char *ca_file;     /* the server's chain must verify against it */
  const char *pin_sha256;  /* hex SHA-256 of the server certificate (':' allowed) */
  bool insecure;           /* no check at all (tests only) */
  const char *server_name; /* SNI, name check and the Host header; NULL: "localhost" */
  const char *cert_file, *key_file; /* a client certificate, or NULL */
  uint64_t handshake_grace_ns;      /* 0: 10 s */
};

/* Server settings: loads (or generates) the certificate, logs its SHA-256 and which TLS path
 * runs (kernel TLS or user space). Returns 0, VSR_ECONFIG (logged with the file), VSR_ETLS or
 * VSR_ENOMEM. */
int vsri_tlsws_server_config(struct vsri_tlsws_config **out,
                             const struct vsri_tlsws_server_options *o);
/* Client settings. A client without ca_file, pin_sha256 or insecure is refused (VSR_ECONFIG). */
int vsri_tlsws_client_config(struct vsri_tlsws_config **out,
                             const struct vsri_tlsws_client_options *o);
/* Replica plane (both roles on one config): TLS 1.3 with ALPN "iggy-replica" required on both
 * sides. The acceptor presents cert_file/key_file (or the process's self-signed certificate);
 * the dialer checks the acceptor's chain against ca_file and the host of the address it
 * dialed, or accepts any certificate when ca_file is NULL (the replica handshake's MAC, bound
 * to the TLS exporter, authenticates the peer), as Iggy mainline's self-signed mode. */
int vsri_tlsws_replica_config(struct vsri_tlsws_config **out, const char *cert_file,
                              const char *key_file, const char *ca_file, uint64_t grace_ns);
void vsri_tlsws_config_free(struct vsri_tlsws_config *c);
/* The certificate's SHA-256 (server settings). */
void vsri_tlsws_fingerprint(const struct vsri_tlsws_config *c, uint8_t out[32]);

#define VSRI_REPLICA_ALPN "iggy-replica"
#define VSRI_REPLICA_EXPORTER_LABEL "iggy replica psk binding"

extern const struct vsri_transport_ops vsri_transport_tls;
extern const struct vsri_transport_ops vsri_transport_ws;
extern const struct vsri_transport_ops vsri_transport_wss;

#endif
