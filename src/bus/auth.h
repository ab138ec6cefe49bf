/* Replica-plane handshake (spec/bus.md §5), sans-I/O: three header-only frames carry a mutual
 * BLAKE3 keyed-MAC challenge-response between the dialer (lower id) and the acceptor (higher
 * id). Frames in, frames out; no sockets, no clock, no RNG (the caller supplies nonces).
 *
 *   dialer                                 acceptor
 *   vsri_auth_dialer_hello      -- Hello -->     vsri_auth_acceptor_on_hello
 *   vsri_auth_dialer_on_challenge <-- Challenge --
 *                               -- Finish -->    vsri_auth_acceptor_on_finish
 *
 * The dialer is connected once it has sent the Finish; the acceptor once the Finish verifies.
 * With auth disabled (legacy mode) only the Hello flows and carries no nonce. Each MAC is
 *   keyed_hash(key, "apache-iggy replica-auth v1" || cluster u128 LE || dialer_id ||
 *              acceptor_id || nonce_d || nonce_a || mode || exporter[32] || dir)
 * with dir 1 for the dialer's MAC and 2 for the acceptor's, and
 *   key = derive_key("apache-iggy replica-auth v1 psk->mac-key", secret).
 * A MAC proves possession of the cluster secret (membership), not a replica's identity. */
#ifndef VSRI_BUS_AUTH_H
#define VSRI_BUS_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vsrbus/wire.h"

#define VSRI_AUTH_NONCE_LEN 32
#define VSRI_AUTH_MAC_LEN 32
#define VSRI_AUTH_KEY_LEN 32
#define VSRI_AUTH_EXPORTER_LEN 32
#define VSRI_AUTH_SECRET_MIN 32 /* bytes of secret material, as the reference's config demands */
/* Layout inside reserved_command (header bytes 128..256). */
#define VSRI_AUTH_NONCE_OFFSET 0
#define VSRI_AUTH_MAC_OFFSET 32
#define VSRI_AUTH_STATUS_OFFSET 64
/* TLS exporter label for the channel binding (RFC 8446 exporter, empty context, 32 bytes). */
#define VSRI_AUTH_EXPORTER_LABEL "iggy replica psk binding"

/* Status byte of a ReplicaChallenge (wire values). Only the acceptor's pre-challenge rejects
 * reach the wire; AUTH_REQUIRED and MAC_MISMATCH are reasons for our own logs. */
enum vsri_auth_status {
  VSRI_AUTH_OK = 0,
  VSRI_AUTH_UNKNOWN_COMMAND = 1,
  VSRI_AUTH_CLUSTER_MISMATCH = 2,
  VSRI_AUTH_DIRECTIONAL_RULE = 3,
  VSRI_AUTH_AUTH_REQUIRED = 4,
  VSRI_AUTH_MAC_MISMATCH = 5,
};

/* Mode byte of the channel binding. */
enum vsri_auth_mode { VSRI_AUTH_MODE_PLAINTEXT = 0, VSRI_AUTH_MODE_TLS = 1 };

/* Per node, fixed at start, shared read-only by every handshake. Holds derived MAC keys,
 * never the raw secret. */
struct vsri_auth_cfg {
  vsr_u128 cluster;      /* vsri_auth_cluster_id(cluster name) */
  uint8_t self_id;       /* < replica_count */
  uint8_t replica_count; /* >= 1 */
  bool enabled;          /* false: legacy mode, no nonce, no MAC, ids trusted as announced */
  bool has_prev;         /* prev_key is valid: the rotation window is open */
  uint8_t key[VSRI_AUTH_KEY_LEN];      /* signs and verifies */
  uint8_t prev_key[VSRI_AUTH_KEY_LEN]; /* verifies only (rotation window) */
};

/* The fields one MAC binds. Both peers build the same one. */
struct vsri_auth_transcript {
  vsr_u128 cluster;
  uint8_t dialer_id;
  uint8_t acceptor_id;
  uint8_t mode; /* enum vsri_auth_mode */
  uint8_t nonce_d[VSRI_AUTH_NONCE_LEN];
  uint8_t nonce_a[VSRI_AUTH_NONCE_LEN];
  uint8_t exporter[VSRI_AUTH_EXPORTER_LEN]; /* zero in plaintext mode */
};

/* One handshake, one side. Embedded by the caller; no allocation, no secret inside. */
struct vsri_auth_hs {
  const struct vsri_auth_cfg *cfg;
  uint8_t role;    /* internal: dialer or acceptor */
  uint8_t phase;   /* internal: what the next call may be */
  uint8_t peer_id; /* dialer: the id dialed; acceptor: the id the Hello announced (valid
                    * after on_hello, even on a reject, for logs) */
  uint8_t status;  /* enum vsri_auth_status: why the handshake failed (ours, or the
                    * acceptor's status byte on the dialer side); VSRI_AUTH_OK otherwise */
  struct vsri_auth_transcript t;
};

/* Derives the 32-byte MAC key from |len| bytes of secret material. Returns 0, or
 * VSR_ECONFIG when |len| < VSRI_AUTH_SECRET_MIN (|key| is then left zeroed). */
int vsri_auth_derive_key(const void *secret, size_t len, uint8_t key[VSRI_AUTH_KEY_LEN]);

/* The consensus cluster id for a cluster name: the first 16 bytes of BLAKE3(name bytes, no
 * NUL, no trimming) read as a little-endian u128. Same on every node sharing the name. */
vsr_u128 vsri_auth_cluster_id(const char *name);

/* Fills |cfg|. |secret| NULL (or |secret_len| 0) disables auth (legacy mode); |prev| non-NULL
 * opens the rotation window. Returns 0, or VSR_ECONFIG: a secret or previous secret shorter
 * than VSRI_AUTH_SECRET_MIN, a previous secret equal to the secret or without a secret,
 * replica_count 0, self_id >= replica_count, or a NULL/empty cluster name. */
int vsri_auth_cfg_init(struct vsri_auth_cfg *cfg, const char *cluster_name, uint8_t self_id,
                       uint8_t replica_count, const void *secret, size_t secret_len,
                       const void *prev, size_t prev_len);

/* Wipes the keys in |cfg|. Cannot fail. */
void vsri_auth_cfg_wipe(struct vsri_auth_cfg *cfg);

/* |mac| = the MAC of |t| under |key| for direction |dir| (1 dialer, 2 acceptor). Exposed for
 * known-answer tests. Cannot fail. */
void vsri_auth_mac(const uint8_t key[VSRI_AUTH_KEY_LEN], const struct vsri_auth_transcript *t,
                   uint8_t dir, uint8_t mac[VSRI_AUTH_MAC_LEN]);

/* Starts the dialer side towards |peer_id|. |tls_exporter| is the 32-byte exporter value of
 * the TLS session the frames will flow over (label VSRI_AUTH_EXPORTER_LABEL), or NULL on
 * plaintext TCP. Cannot fail. */
void vsri_auth_dialer_init(struct vsri_auth_hs *hs, const struct vsri_auth_cfg *cfg,
                           uint8_t peer_id, const uint8_t *tls_exporter);

/* Writes the ReplicaHello into |out| (256 bytes) using |rand| (32 bytes from the system
 * CSPRNG; ignored in legacy mode) as nonce_d. Send it; in legacy mode the handshake is then
 * done (vsri_auth_done), otherwise wait for the Challenge. Returns 0, or VSR_EINVAL: called
 * twice, peer_id not in (self_id, replica_count) (the lower id dials), or an all-zero |rand|
 * with auth on (it would read as "no auth" on the wire). */
int vsri_auth_dialer_hello(struct vsri_auth_hs *hs, const uint8_t rand[VSRI_AUTH_NONCE_LEN],
                           uint8_t out[VSR_HEADER_SIZE]);

/* Handles the acceptor's answer |in| (its 256-byte header). On 0, |out| holds the
 * ReplicaFinish: send it, and the peer is connected from this side. On error close the
 * connection; nothing is sent. Returns 0, or
 *   VSR_EAUTH_COMMAND  |in| is not a ReplicaChallenge;
 *   VSR_EAUTH_STATUS   the acceptor rejected us (hs->status holds its reason; an unknown
 *                      byte reads as VSRI_AUTH_UNKNOWN_COMMAND);
 *   VSR_EAUTH          mac_a does not verify (wrong secret, replayed or forged Challenge);
 *   VSR_EINVAL         not waiting for a Challenge. */
int vsri_auth_dialer_on_challenge(struct vsri_auth_hs *hs, const uint8_t in[VSR_HEADER_SIZE],
                                  uint8_t out[VSR_HEADER_SIZE]);

/* Starts the acceptor side; |tls_exporter| as for the dialer. Cannot fail. */
void vsri_auth_acceptor_init(struct vsri_auth_hs *hs, const struct vsri_auth_cfg *cfg,
                             const uint8_t *tls_exporter);

/* Handles the first frame |in| of an inbound replica connection, with |rand| (32 bytes from
 * the CSPRNG) as nonce_a. Checks, in the reference order: command, cluster, peer id <
 * replica_count and < self_id, a nonce present (auth on), then answers with a Challenge.
 * *|send| tells whether |out| holds a frame to send: on 0 with *|send| the Challenge (then
 * wait for the Finish); on 0 without it the legacy peer is accepted (vsri_auth_done); on an
 * error with *|send| a reject Challenge carrying hs->status, to send before closing (only to
 * a dialer that offered a nonce while auth is on: a legacy dialer does not read). Returns 0,
 * or VSR_EAUTH_COMMAND, VSR_EAUTH_CLUSTER, VSR_EAUTH_DIRECTION, VSR_EAUTH_REQUIRED, or
 * VSR_EINVAL (called twice, or an all-zero |rand| with auth on). */
int vsri_auth_acceptor_on_hello(struct vsri_auth_hs *hs, const uint8_t in[VSR_HEADER_SIZE],
                                const uint8_t rand[VSRI_AUTH_NONCE_LEN],
                                uint8_t out[VSR_HEADER_SIZE], bool *send);

/* Handles the dialer's ReplicaFinish |in|. On 0 the peer hs->peer_id is authenticated. On an
 * error close without sending anything (the dialer no longer reads handshake frames).
 * Returns 0, or VSR_EAUTH_COMMAND (not a ReplicaFinish), VSR_EAUTH (mac_d verifies under
 * neither the key nor, in a rotation window, the previous key), VSR_EINVAL (not waiting
 * for a Finish). */
int vsri_auth_acceptor_on_finish(struct vsri_auth_hs *hs, const uint8_t in[VSR_HEADER_SIZE]);

/* True once this side may carry consensus frames. Cannot fail. */
bool vsri_auth_done(const struct vsri_auth_hs *hs);

/* Stable lowercase label of a status byte for logs ("mac_mismatch"); "unknown" otherwise.
 * Never NULL. */
const char *vsri_auth_status_name(uint8_t status);

#endif
