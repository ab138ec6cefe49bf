/* The bus: peers, bounded send queues, planes. Replicas talk to replicas on the replica plane
 * (TCP, authenticated unless replica_auth is off, one connection per pair); clients talk to replicas on the client plane
 * (TCP, QUIC). Every transport delivers the same frames to the same callbacks.
 *
 * Sends never block: each peer has a bounded queue; a full queue returns VSR_EBACKPRESSURE and
 * is counted, and a peer whose queue stays full for slow_peer_timeout_ns is closed
 * (VSR_ESLOW_PEER). Frames are queued by reference (the bus takes its own reference on success), so
 * one Prepare sent to N replicas is one buffer in N queues. */
#ifndef VSRBUS_BUS_H
#define VSRBUS_BUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vsrbus/error.h"
#include "vsrbus/loop.h"
#include "vsrbus/msg.h"
#include "vsrbus/wire.h"

#ifdef __cplusplus
extern "C" {
#endif

#define VSR_MAX_REPLICAS 256
#define VSR_SECRET_MIN 32          /* bytes: the reference refuses shorter secrets */
#define VSR_SECRET_MAX (64 * 1024) /* bytes: ample for any key file; bounds what is read */

struct vsr_bus;

enum vsr_plane { VSR_PLANE_CLIENT = 0, VSR_PLANE_REPLICA = 1 };

/* Replica-plane authentication (vsr_bus_options.replica_auth). */
enum vsr_replica_auth {
  /* Mutual BLAKE3 challenge-response under the shared secret before any consensus frame. */
  VSR_REPLICA_AUTH_ON = 0,
  /* Legacy mode, Iggy mainline's default (`cluster.auth.enabled = false`): the dialer sends a
   * ReplicaHello without a nonce and reads nothing back; the acceptor checks command, cluster
   * and direction and trusts the announced id. UNAUTHENTICATED: anyone who can reach the
   * replica port and knows the cluster name can act as any lower replica. Only for joining a
   * cluster of stock mainline servers on a trusted network; logged as a warning at start. */
  VSR_REPLICA_AUTH_OFF = 1,
};

enum vsr_peer_event_kind {
  /* Clients: the connection is usable. Replicas we dial: TCP is up, the handshake follows.
   * Replicas that dial us: reported together with AUTHENTICATED once the handshake verified,
   * so an unauthenticated stranger can never cause events under a real replica's id. */
  VSR_PEER_CONNECTED = 1,
  VSR_PEER_AUTHENTICATED = 2, /* replica handshake verified: frames flow */
  VSR_PEER_LOST = 3,          /* fires exactly once per connection that reported CONNECTED */
};

struct vsr_peer_event {
  enum vsr_peer_event_kind kind;
  enum vsr_plane plane;
  uint64_t id;           /* client id (minted by the bus) or replica index */
  int reason;            /* VSR_PEER_LOST: why (VSR_ECLOSED, VSR_EFRAME_LARGE, ...) */
  const char *transport; /* "tcp", "quic" */
  const char *addr;      /* peer address, "127.0.0.1:41234" */
};

struct vsr_bus_callbacks {
  /* A frame arrived. |msg| is borrowed for the call; vsr_msg_ref() it to keep it.
   * |peer| is the client id or the replica index. */
  void (*on_message)(void *user, struct vsr_bus *bus, enum vsr_plane plane, uint64_t peer,
                     struct vsr_msg *msg);
  /* Peer connected / authenticated / lost. May be NULL. */
  void (*on_peer_event)(void *user, struct vsr_bus *bus, const struct vsr_peer_event *ev);
};

/* QUIC client plane (docs/quic.md): vsr_bus_options.quic. Every transport of the client plane
 * has its own struct like this one, embedded in vsr_bus_options under the transport's name and
 * filled by vsr_bus_options_default; a transport is off while its |addr| is NULL. */
struct vsr_quic_options {
  const char *addr;      /* listen "host:port"; default NULL (off); e.g. "127.0.0.1:8080" */
  const char *cert_file; /* PEM; with key_file. Neither: in-memory self-signed */
  const char *key_file;
  bool alpn_required;    /* default false: admit clients offering iggy.consensus.v1 or no
                            ALPN (Iggy mainline's SDKs offer none); true: only
                            iggy.consensus.v1 (the seed's strict rule). Any other ALPN is
                            always refused (TLS alert 0x178) */
  uint64_t idle_timeout_ns; /* default 30 s */
  uint64_t keep_alive_ns;   /* default 10 s */
  uint32_t max_bidi_streams; /* default 1 (as mainline): streams a client may hold open at once
                                (1..1024); a per-request client pipelines that many requests,
                                each Reply on its Request's stream */
  uint32_t initial_mtu;     /* default 1200 */
  uint64_t stream_window;   /* default 64 MiB */
  uint64_t conn_window;     /* default 64 MiB */
  /* Handshake floods (a half-open is a QUIC connection whose handshake and first stream are
   * not done yet; each costs memory and a TLS key exchange). */
  uint32_t max_handshakes;  /* default 1024: half-opens at once; when full the oldest
                               (unvalidated first) is evicted, never the newcomer, so a flood
                               cannot lock real clients out. 0: the default */
  uint32_t retry_threshold; /* default 256: from this many half-opens every new client must
                               prove its address with a Retry round trip (one extra RTT, no
                               state kept until it answers); 0: always */
  uint32_t max_handshakes_per_source; /* default 32: half-opens per IPv4 address / IPv6 /64
                               from which that source's new clients must pass a Retry (those
                               that did are admitted anyway: many real clients may share an
                               address); 0: no limit */
  bool loopback_pmtud;      /* default false: clients on loopback (127/8, ::1) get 65,000-byte
                               packets once the handshake is done (lo's MTU is 65,536; PMTUD
                               stops at 1452; 1 MiB frames move 2-3x faster); true: PMTUD as
                               on any path (docs/quic.md, "Packet size") */
};

/* TLS 1.3 over TCP (docs/tls-ws.md): vsr_bus_options.tls. The secure WebSocket listener
 * (vsr_bus_options.wss) uses the same certificate and client-certificate rule. The TLS / WS /
 * WSS handshake and upgrade are bounded by handshake_grace_ns. */
struct vsr_tls_options {
  const char *addr;           /* listen "host:port"; default NULL (off); e.g. "127.0.0.1:8443" */
  const char *cert_file;      /* PEM; with key_file. Neither: an in-memory self-signed
                                 certificate for localhost, one per process, so the TLS and
                                 WSS listeners show the same SHA-256 */
  const char *key_file;
  const char *client_ca_file; /* default NULL: no client certificate asked (as Iggy mainline);
                                 a PEM CA file: every TLS / WSS client must present a
                                 certificate it signed (a step beyond mainline) */
};

/* WebSocket, RFC 6455 (docs/tls-ws.md): vsr_bus_options.ws (plain) and .wss (inside TLS 1.3,
 * certificate from vsr_bus_options.tls). Upgrade on path "/", no subprotocol, one binary
 * message per frame; a plain "GET /" gets the browser page. */
struct vsr_ws_options {
  const char *addr; /* listen "host:port"; default NULL (off) */
};

struct vsr_bus_options {
  struct vsr_loop *loop; /* run on this loop; NULL: the bus creates and owns one */
  struct vsr_loop_options loop_options; /* used when |loop| is NULL */

  /* Client plane. */
  const char *client_tcp_addr;  /* default "127.0.0.1:8090"; NULL: no TCP listener */
  /* QUIC: quic.addr (struct vsr_quic_options, above). */
  uint32_t max_clients;         /* default 100000, at most 2^24 (every shard's clients
                                   together); more are refused and counted */
  /* A client that sends nothing for this long is closed (VSR_EIDLE), TCP and QUIC alike. Any
   * frame received (PingClient included) resets the clock; a frame in progress is bounded by
   * frame_timeout_ns instead. Default 60 s: twice frame_timeout, so a client sending one frame
   * a minute stays; silent connections cannot pile up. 0: off. */
  uint64_t client_idle_timeout_ns;

  /* Framing and queues (reference defaults). */
  uint32_t max_message_size;    /* default 64 MiB */
  uint32_t max_batch;           /* frames per vectored write, default 256 */
  uint32_t peer_queue_capacity; /* frames per peer queue, default 256 (rounded to 2^k) */
  bool verify_body_checksum;    /* verify non-zero Prepare body checksums, default true */
  uint64_t close_peer_timeout_ns; /* per-peer drain bound at shutdown, default 2 s */
  /* A frame whose first byte arrived must be complete this long after it (VSR_EFRAME_TIMEOUT),
   * on both planes and every transport. Default 30 s: a 64 MiB frame at ~2 MiB/s; a header
   * dripped one byte at a time cannot hold a connection open. 0: off. */
  uint64_t frame_timeout_ns;
  /* A peer whose send queue stays full (refusing frames, not drained back to half) this long
   * is not reading: it is closed with VSR_ESLOW_PEER, logged (VSR-SLOW) and counted. Default
   * 10 s: far above a live peer's stalls (TCP retransmits, GC pauses), far below what a
   * stuck peer may hold hostage. 0: never. */
  uint64_t slow_peer_timeout_ns;
  /* Buffer bytes (message capacity) one peer's send queue may hold; a frame beyond it is
   * refused like a full queue (VSR_EBACKPRESSURE), except into an empty queue. Default 64 MiB:
   * bounds the memory one peer that does not read can pin (the frame cap alone allows 256
   * frames of any size), while a reading peer's queue stays far below it. 0: frames only. */
  uint64_t peer_queue_bytes_max;
  /* Memory budgets (docs/limits.md, "Memory budgets"); 0 picks the default. A frame's buffer
   * is reserved as its bytes arrive, never from its header's size alone. */
  uint64_t memory_max; /* node-wide cap on message buffers (the pool's bytes_max when the bus
                          owns its loop; with a caller's loop, that pool's bytes_max is the cap
                          and this is ignored). Default 1/4 of physical memory (or of the
                          cgroup's memory.max), at least 256 MiB: the rest is left to the state
                          machine, its journal and the page cache. Frames beyond it are
                          refused with VSR_EMEMORY_MAX. */
  uint64_t client_memory_budget; /* buffers of client-plane frames still arriving; default
                                    memory_max / 2, so clients can never take it all. When
                                    full, the largest frame in flight is evicted, or the
                                    newcomer refused: VSR_EMEMORY_BUDGET. */
  uint64_t replica_memory_budget; /* share of memory_max the client plane may never take, kept
                                     for replica frames in flight; default min(memory_max / 4,
                                     (replica_count - 1) x max_message_size); 0 without a
                                     replica plane */
  uint32_t conn_memory_budget; /* largest frame one client connection may have in flight;
                                  default max_message_size. Beyond: VSR_EMEMORY_BUDGET at its
                                  header. */
  uint32_t frame_allowance; /* bytes of a client frame reserved at once when its body starts
                               (the rest grows as it arrives); default 65,792 = a 64 KiB body
                               and its header. Authenticated replicas: max_message_size. */
  /* TCP liveness on every accepted and dialed TCP socket, both planes (issue 15): a dead peer
   * is found even when no frame is due. Keepalive: SO_KEEPALIVE, idle time this, probes every
   * third of it, 3 probes; default 15 s (a silent dead peer is closed in ~30 s). 0: off.
   * Replica links need it too: a link whose peer crashed while its RST was lost (a partition),
   * and on which we have nothing to send, would otherwise stay up forever, and a dialer never
   * redials a link it believes up (found by the simulator, docs/simulation.md). */
  uint64_t tcp_keepalive_ns;
  /* TCP_USER_TIMEOUT: written data unacknowledged this long closes the connection; default
   * 30 s (the kernel's own default is ~15 minutes of retransmits). 0: the kernel's. */
  uint64_t tcp_user_timeout_ns;

  /* Replica plane: enabled when cluster_name is set and replica_count > 1. */
  const char *cluster_name;            /* the u128 cluster id is derived from it */
  uint8_t replica_index;               /* this replica */
  uint16_t replica_count;              /* <= VSR_MAX_REPLICAS */
  const char *const *replica_addrs;    /* replica_count "host:port" entries, by index */
  /* Shared secret: VSR_SECRET_MIN..VSR_SECRET_MAX bytes owned by the caller and read only
   * during vsr_bus_new() (the bus keeps the derived MAC keys, never the bytes: the caller may
   * wipe them as soon as it returns). Required unless replica_auth is VSR_REPLICA_AUTH_OFF. */
  const uint8_t *secret;
  size_t secret_len;
  const uint8_t *previous_secret; /* accepted for verification while rotating; same rules */
  size_t previous_secret_len;     /* 0: no rotation window */
  uint64_t reconnect_period_ns;        /* default 5 s: the redial backoff's cap */
  uint64_t handshake_grace_ns;         /* default 10 s; also bounds the QUIC handshake (only:
                                          a QUIC client may open its first stream later) */
  uint32_t max_inflight_handshakes;    /* default 256 */
  /* Default VSR_REPLICA_AUTH_ON. VSR_REPLICA_AUTH_OFF (legacy, unauthenticated) exists only to
   * join clusters of stock Iggy mainline servers, whose default is auth off; secrets are then
   * ignored. */
  enum vsr_replica_auth replica_auth;
  /* Redial backoff base (issue 15): after a failed dial or a lost link the next dial of that
   * peer waits a random delay in [0, min(reconnect_period, this x 2^(k-1))] (k: failures in a
   * row), so a restarted replica is back within ~this, and a dead one costs a dial per
   * reconnect_period at most. Default 100 ms. 0: reconnect_period (a fixed cap). */
  uint64_t reconnect_min_ns;
  /* Replica-plane TLS (appended, issue 16; docs/replica-plane.md). Default false: plain TCP.
   * true: every replica link runs TLS 1.3 with ALPN iggy-replica, and the handshake MACs are
   * bound to the session's TLS exporter (label "iggy replica psk binding", mode byte 1), as
   * Iggy mainline, so a transcript recorded elsewhere cannot be replayed in another session.
   * Every replica of the cluster must agree. */
  bool replica_tls;
  const char *replica_tls_cert_file; /* PEM, with the key; neither: a self-signed certificate */
  const char *replica_tls_key_file;
  const char *replica_tls_ca_file;   /* dialers check the acceptor's certificate against this
                                        CA and the dialed host; NULL: any certificate (the MAC
                                        authenticates the peer), as mainline's self-signed mode */

  /* Per-transport settings of the client plane, one struct per transport (see struct
   * vsr_quic_options; TLS and WebSocket add theirs here the same way). */
  struct vsr_quic_options quic;
  struct vsr_tls_options tls; /* appended (issue 16): TLS over TCP, off by default */
  struct vsr_ws_options ws;   /* appended (issue 16): WebSocket, off by default */
  struct vsr_ws_options wss;  /* appended (issue 16): WebSocket over TLS, off by default */

  /* Observability (issue 17). */
  /* HTTP listener serving GET /metrics (Prometheus text format 0.0.4) on the bus's loop.
   * Default NULL: off. e.g. "127.0.0.1:9100". vsr_bus_listen_addr(bus, "metrics") names it. */
  const char *metrics_addr;
  uint32_t metrics_max_conns;   /* default 4: scrape connections at once; more are closed */
  uint64_t metrics_timeout_ns;  /* default 5 s: a scrape (request and response) this long is
                                   closed, so a stalled client cannot hold a slot */

  /* Shards (appended, issue 18; docs/shards.md). Default 1: one loop, the caller's thread.
   * N > 1: the bus starts N - 1 worker threads, each with its own loop and pool, listening on
   * the TCP client address too (SO_REUSEPORT: the kernel spreads new TCP clients over the N
   * shards); frames cross to this loop by reference, and on_message / on_peer_event still run
   * here, on shard 0, with the replica plane, QUIC, TLS, WS, WSS and the metrics. A send to a
   * client of another shard returns once the frame is in that shard's ring (a refusal there is
   * counted in the stats, not returned). memory_max and max_clients stay node-wide (shared
   * counts); client_memory_budget is split in N equal slices. At most 255. */
  uint32_t shards;
};

/* The u128 cluster id Iggy derives from a cluster name: the first 16 bytes of BLAKE3(name),
 * little-endian. Frames of the cluster carry it in their `cluster` field. Cannot fail. */
vsr_u128 vsr_cluster_id(const char *name);

/* Fills |o| with the reference defaults (spec/bus.md §3). */
void vsr_bus_options_default(struct vsr_bus_options *o);

/* Creates a bus and starts its listeners (and, with a replica plane, its dialer).
 * |o| and the strings it points at are copied. Returns 0, VSR_EINVAL, VSR_ECONFIG (the log
 * line names the option), VSR_EADDR (an address does not parse), VSR_EADDRINUSE or VSR_EBIND
 * (cannot listen; the log line names the errno text), VSR_EUNSUPPORTED or VSR_ENOMEM. */
int vsr_bus_new(struct vsr_bus **out, const struct vsr_bus_options *o,
                const struct vsr_bus_callbacks *cb, void *user);

/* Closes every connection at once and frees the bus (and its loop if it owns it), whether or
 * not a shutdown was started or finished. It never runs the loop and never calls a callback
 * (on_peer_event, on_message): peers simply see their connections closed (TCP: the socket
 * closes; QUIC: CONNECTION_CLOSE with 0x1003), frames still queued are dropped, nothing is
 * leaked, and the loop may be deleted right after. For an orderly stop that loses nothing,
 * call vsr_bus_shutdown_start() and drive the loop until vsr_bus_shutdown_done() (or, when
 * the bus owns its loop, vsr_bus_shutdown()) first.
 * Not from inside one of this bus's own callbacks: there it is refused (logged VSR-MISUSE,
 * nothing freed) because the transport below the callback still uses the connection; delete
 * the bus once the loop turn returned (from a callback, vsr_bus_shutdown_start is fine). */
void vsr_bus_del(struct vsr_bus *bus);

struct vsr_loop *vsr_bus_loop(struct vsr_bus *bus);

/* Runs one loop turn (see vsr_loop_run_once). */
int vsr_bus_run_once(struct vsr_bus *bus, int64_t timeout_ns);

/* Non-blocking graceful shutdown, for a bus on any loop (the caller's or its own): stops
 * accepting (listeners closed), stops dialing, stops delivering frames, refuses new sends
 * (VSR_ESHUTDOWN) and starts draining every connection's queue, then closes it without losing
 * what was written: TCP half-closes (FIN after the last frame) and reads and discards until the
 * peer closes, so the kernel never resets replies still in flight; QUIC closes with 0x1003 once
 * the peer acknowledged the last stream byte. Returns at once; the
 * work happens as the caller keeps running the loop (vsr_bus_run_once / vsr_loop_run_once)
 * until vsr_bus_shutdown_done() is true. A connection still draining after
 * min(close_peer_timeout_ns, |timeout_ns|) is closed without draining (logged VSR-SHUTDOWN).
 * Calling it again does nothing. Returns 0 or VSR_EINVAL (|bus| NULL). */
int vsr_bus_shutdown_start(struct vsr_bus *bus, uint64_t timeout_ns);

/* True once a shutdown was started and every connection and timer of the bus is gone; then
 * vsr_bus_del frees the bus without running the loop. */
bool vsr_bus_shutdown_done(const struct vsr_bus *bus);

/* Blocking helper for a bus that owns its loop (options.loop was NULL): vsr_bus_shutdown_start
 * then runs the loop until vsr_bus_shutdown_done(), at most |timeout_ns| plus one second for
 * the forced closes. Returns 0, VSR_ETIMEDOUT (a queued frame could not be written, some
 * connection had to be force-closed or did not finish) or VSR_EINVAL when the loop is the caller's: the library never runs a loop
 * it does not own; use vsr_bus_shutdown_start / vsr_bus_shutdown_done there. */
int vsr_bus_shutdown(struct vsr_bus *bus, uint64_t timeout_ns);

/* A fresh message of |size| bytes (>= 256) from the bus's pool, header zeroed and its size
 * field set. NULL when size is out of range or the pool is exhausted. */
struct vsr_msg *vsr_bus_msg_new(struct vsr_bus *bus, uint32_t size);

/* Queues |msg| for a peer. On success the bus holds its own reference; the caller keeps its
 * own either way. Never blocks. Returns 0, VSR_ENOTCONN (unknown or not connected),
 * VSR_EBACKPRESSURE (queue full: peer_queue_capacity frames or peer_queue_bytes_max bytes; a
 * refusal that ends slow_peer_timeout_ns of full queue also closes the peer with
 * VSR_ESLOW_PEER), VSR_ESHUTDOWN or VSR_EINVAL (bad frame size). Refusals are counted in the
 * stats and logged (VSR-DROP, at most one line a second). A refused frame is not sent later:
 * the caller keeps it if it matters (vsr_bus_peer_stats tells the free room). */
int vsr_bus_send_to_client(struct vsr_bus *bus, uint64_t client_id, struct vsr_msg *msg);
int vsr_bus_send_to_replica(struct vsr_bus *bus, uint8_t replica, struct vsr_msg *msg);

/* Closes a client connection (its queue is dropped). Returns 0 or VSR_ENOTCONN. */
int vsr_bus_close_client(struct vsr_bus *bus, uint64_t client_id);

/* The bound address of a listener: which = "tcp", "quic", "replica" or "metrics". Returns 0 or
 * VSR_ENOTCONN (no such listener). */
int vsr_bus_listen_addr(const struct vsr_bus *bus, const char *which, char *buf, size_t len);

/* The bus's statistics in the Prometheus text exposition format 0.0.4 (what the metrics_addr
 * endpoint serves; docs/observability.md lists the metrics), for an application that serves
 * them itself. Writes at most |len| bytes, NUL-terminated, and sets *|written| to the text's
 * length. Returns 0, or VSR_ELIMIT when |len| is too small: then *|written| is the size the
 * text needs (NUL included; call again with that much, plus room for growth). Call it from the
 * thread that runs the bus's loop, like every other bus function. */
int vsr_bus_metrics_render(const struct vsr_bus *bus, char *buf, size_t len, size_t *written);

#define VSR_ERR_SLOTS 128 /* errors[-code] counts each VSR_E* code */

struct vsr_bus_stats {
  uint64_t frames_in, bytes_in;   /* frames delivered to on_message */
  uint64_t frames_out, bytes_out; /* frames whose last byte the kernel took (TCP: a write
                                     completed; QUIC: sendmsg accepted the datagram carrying
                                     it, or the peer acknowledged it) */
  uint64_t frames_queued;         /* successful sends */
  uint64_t drops_backpressure;    /* sends refused: queue full */
  uint64_t drops_not_connected;   /* sends refused: no such peer */
  uint64_t drops_on_close;        /* frames queued for a connection that closed before the
                                     kernel took them (still queued, or taken by QUIC and not
                                     yet sent) */
  uint64_t clients_accepted, clients_refused, clients_active;
  uint64_t replicas_connected;    /* authenticated replica links now */
  uint64_t handshakes_inflight;
  uint64_t errors[VSR_ERR_SLOTS]; /* connections closed per reason, by -code */
  uint64_t slow_peers_closed;     /* peers closed with VSR_ESLOW_PEER */
  /* QUIC client listener: handshake-flood defences (0 without one). */
  uint64_t quic_retries;          /* Initials answered with a Retry (address validation) */
  uint64_t quic_tokens_invalid;   /* Initials refused: forged / expired Retry token */
  uint64_t quic_evicted;          /* oldest half-opens evicted: max_handshakes was full */
  uint64_t quic_halfopen_peak;    /* most half-open QUIC handshakes at once */
  /* Memory, by plane (index enum vsr_plane): buffers of frames being received. */
  uint64_t rx_reserved[2];      /* bytes reserved for frames in flight now */
  uint64_t rx_filled[2];        /* bytes of those frames received so far */
  uint64_t rx_reserved_peak[2]; /* highest rx_reserved */
  uint64_t rx_budget[2];        /* client: client_memory_budget; replica: its protected share */
  uint64_t memory_max;          /* the node-wide cap (the pool's bytes_max) */
  uint64_t memory_bytes;        /* the pool's buffers: in use + cached */
  uint64_t memory_live;         /* the pool's buffers in use */
  uint64_t memory_peak;         /* highest memory_bytes */
  /* Replica handshakes that completed (links authenticated, both roles; failures are counted
   * by code in errors[]: VSR_EAUTH..VSR_EHANDSHAKE_TIMEOUT). */
  uint64_t replica_handshakes_ok;
  /* Frames a transport took from a queue that will never be sent because the peer reset or
   * stopped the QUIC stream they travel on (appended, issue 13). Frames of a connection that
   * closed before the kernel took them are in drops_on_close. */
  uint64_t drops_stream_reset;
  /* QUIC packets for no connection of the listener that could not start one (not an
   * acceptable Initial): late packets of a closed connection, forged or misrouted ones
   * (appended, issue 18: with shards, each packet must reach the shard its connection ID
   * names; docs/shards.md). */
  uint64_t quic_unknown_cid;
};

void vsr_bus_stats(const struct vsr_bus *bus, struct vsr_bus_stats *out);

/* Shards (docs/shards.md): the number of shards, and shard |shard|'s own statistics (0: this
 * loop's; 1..N-1: a worker's, as it published them after its last loop turn). vsr_bus_stats
 * is their sum (memory_max, the node-wide cap, once). Returns 0 or VSR_EINVAL. */
uint32_t vsr_bus_shards(const struct vsr_bus *bus);
int vsr_bus_shard_stats(const struct vsr_bus *bus, uint32_t shard, struct vsr_bus_stats *out);

struct vsr_peer_stats {
  uint32_t queue_depth, queue_capacity;
  uint64_t frames_in, bytes_in, frames_out, bytes_out;
  uint64_t drops_backpressure;
  uint64_t queue_bytes;   /* buffer bytes the queued frames hold now */
  uint64_t queue_full_ns; /* how long the queue has been full (0: not full, or no timeout) */
  /* Appended (issue 13): frames_queued (sends accepted) == frames_out + frames_dropped +
   * frames_pending, at any time. */
  uint64_t frames_queued;  /* sends to this peer accepted into its queue */
  uint64_t frames_dropped; /* of those, dropped: QUIC stream reset; at the close, every
                              frame not sent (then the peer is gone; see vsr_bus_stats) */
  uint64_t frames_pending; /* of those, neither sent nor dropped yet: queue_depth plus frames
                              QUIC took that the kernel has not yet */
};

/* Returns 0 or VSR_ENOTCONN. */
int vsr_bus_peer_stats(const struct vsr_bus *bus, enum vsr_plane plane, uint64_t id,
                       struct vsr_peer_stats *out);

#ifdef __cplusplus
}
#endif
#endif
