/* Replica handshake state machines (see auth.h and spec/bus.md §5). Pure functions over
 * 256-byte headers: the bus does the reads, writes, timeouts and logging; this file decides
 * what to send and whether the peer is in. Checks run in the reference's order so every
 * reject carries the same status a Rust acceptor would send. */
#include "bus/auth.h"

#include <stddef.h>
#include <string.h>

#include "crypto/mac.h"
#include "vsrbus/bus.h"
#include "vsrbus/error.h"

/* Generic header fields (wire.md §1, identical in R-M). */
#define AUTH_OFF_CLUSTER offsetof(struct vsr_header, cluster)
#define AUTH_OFF_COMMAND offsetof(struct vsr_header, command)
#define AUTH_OFF_REPLICA offsetof(struct vsr_header, replica)
#define AUTH_OFF_RC offsetof(struct vsr_header, reserved_command)

#define AUTH_DIR_DIALER 1
#define AUTH_DIR_ACCEPTOR 2

/* Domain tag opening every transcript, and the key-derivation context (reference auth.rs). */
static const char auth_domain_tag[] = "apache-iggy replica-auth v1";
static const char auth_key_context[] = "apache-iggy replica-auth v1 psk->mac-key";
#define AUTH_TAG_LEN (sizeof auth_domain_tag - 1)
#define AUTH_TRANSCRIPT_LEN                                                                  \
  (AUTH_TAG_LEN + 16 + 2 + 2 * VSRI_AUTH_NONCE_LEN + 1 + VSRI_AUTH_EXPORTER_LEN + 1)
_Static_assert(AUTH_TAG_LEN == 27, "domain tag length");
_Static_assert(AUTH_TRANSCRIPT_LEN == 143, "transcript length");
_Static_assert(VSRI_AUTH_STATUS_OFFSET == VSRI_AUTH_NONCE_LEN + VSRI_AUTH_MAC_LEN,
               "status byte follows nonce and MAC");

enum { AUTH_ROLE_DIALER = 1, AUTH_ROLE_ACCEPTOR = 2 };
enum {
  AUTH_PHASE_START = 0,    /* dialer: hello next; acceptor: on_hello next */
  AUTH_PHASE_WAIT = 1,     /* dialer: on_challenge next; acceptor: on_finish next */
  AUTH_PHASE_DONE = 2,     /* connected */
  AUTH_PHASE_FAILED = 3,   /* close the connection */
};

static const uint8_t auth_zero[VSRI_AUTH_NONCE_LEN];

static bool auth_all_zero(const uint8_t *p, size_t n) { return vsri_ct_equal(p, auth_zero, n); }

int vsri_auth_derive_key(const void *secret, size_t len, uint8_t key[VSRI_AUTH_KEY_LEN]) {
  if (!secret || len < VSRI_AUTH_SECRET_MIN) {
    memset(key, 0, VSRI_AUTH_KEY_LEN);
    return VSR_ECONFIG;
  }
  vsri_blake3_derive_key(auth_key_context, secret, len, key);
  return 0;
}

vsr_u128 vsr_cluster_id(const char *name) { return vsri_auth_cluster_id(name); }

vsr_u128 vsri_auth_cluster_id(const char *name) {
  uint8_t digest[VSRI_BLAKE3_LEN];
  vsri_blake3_hash(name, strlen(name), digest);
  return vsr_get_u128(digest); /* little-endian: bytes 0..8 are the low half */
}

int vsri_auth_cfg_init(struct vsri_auth_cfg *cfg, const char *cluster_name, uint8_t self_id,
                       uint8_t replica_count, const void *secret, size_t secret_len,
                       const void *prev, size_t prev_len) {
  memset(cfg, 0, sizeof *cfg);
  if (!cluster_name || !cluster_name[0] || replica_count == 0 || self_id >= replica_count)
    return VSR_ECONFIG;
  bool has_secret = secret && secret_len;
  bool has_prev = prev && prev_len;
  if (has_prev && (!has_secret ||
                   (prev_len == secret_len && memcmp(prev, secret, secret_len) == 0)))
    return VSR_ECONFIG;
  cfg->cluster = vsri_auth_cluster_id(cluster_name);
  cfg->self_id = self_id;
  cfg->replica_count = replica_count;
  int rc = 0;
  if (has_secret) rc = vsri_auth_derive_key(secret, secret_len, cfg->key);
  if (rc == 0 && has_prev) rc = vsri_auth_derive_key(prev, prev_len, cfg->prev_key);
  if (rc != 0) {
    vsri_auth_cfg_wipe(cfg);
    return rc;
  }
  cfg->enabled = has_secret;
  cfg->has_prev = has_prev;
  return 0;
}

void vsri_auth_cfg_wipe(struct vsri_auth_cfg *cfg) {
  vsri_wipe(cfg->key, sizeof cfg->key);
  vsri_wipe(cfg->prev_key, sizeof cfg->prev_key);
  cfg->enabled = false;
  cfg->has_prev = false;
}

void vsri_auth_mac(const uint8_t key[VSRI_AUTH_KEY_LEN], const struct vsri_auth_transcript *t,
                   uint8_t dir, uint8_t mac[VSRI_AUTH_MAC_LEN]) {
  /* One contiguous buffer hashed at once equals the reference's successive updates. */
  uint8_t buf[AUTH_TRANSCRIPT_LEN];
  uint8_t *p = buf;
  memcpy(p, auth_domain_tag, AUTH_TAG_LEN);
  p += AUTH_TAG_LEN;
  vsr_put_u128(p, t->cluster);
  p += 16;
  *p++ = t->dialer_id;
  *p++ = t->acceptor_id;
  memcpy(p, t->nonce_d, VSRI_AUTH_NONCE_LEN);
  p += VSRI_AUTH_NONCE_LEN;
  memcpy(p, t->nonce_a, VSRI_AUTH_NONCE_LEN);
  p += VSRI_AUTH_NONCE_LEN;
  *p++ = t->mode;
  memcpy(p, t->exporter, VSRI_AUTH_EXPORTER_LEN);
  p += VSRI_AUTH_EXPORTER_LEN;
  *p++ = dir;
  vsri_blake3_keyed(key, buf, (size_t)(p - buf), mac);
}

/* Accepts a MAC made under the current key or, in a rotation window, the previous one. Each
 * key is tried independently (no memory of which one a peer used), as in the reference: a
 * window node verifies mixed-roll peers in either direction but always signs with the
 * current key. */
static bool auth_verify(const struct vsri_auth_cfg *cfg, const struct vsri_auth_transcript *t,
                        uint8_t dir, const uint8_t *received) {
  uint8_t mac[VSRI_AUTH_MAC_LEN];
  vsri_auth_mac(cfg->key, t, dir, mac);
  bool ok = vsri_ct_equal(mac, received, VSRI_AUTH_MAC_LEN);
  if (!ok && cfg->has_prev) {
    vsri_auth_mac(cfg->prev_key, t, dir, mac);
    ok = vsri_ct_equal(mac, received, VSRI_AUTH_MAC_LEN);
  }
  return ok;
}

/* A fresh header-only generic frame: size 256, checksum 0 (handshake frames are not sealed),
 * every byte not named here zero. */
static void auth_frame(uint8_t out[VSR_HEADER_SIZE], uint8_t command, vsr_u128 cluster,
                       uint8_t replica) {
  vsr_header_init(out, command, VSR_HEADER_SIZE);
  vsr_put_u128(out + AUTH_OFF_CLUSTER, cluster);
  out[AUTH_OFF_REPLICA] = replica;
}

static void auth_hs_init(struct vsri_auth_hs *hs, const struct vsri_auth_cfg *cfg,
                         uint8_t role, const uint8_t *tls_exporter) {
  memset(hs, 0, sizeof *hs);
  hs->cfg = cfg;
  hs->role = role;
  hs->phase = AUTH_PHASE_START;
  hs->status = VSRI_AUTH_OK;
  hs->t.cluster = cfg->cluster;
  hs->t.mode = tls_exporter ? VSRI_AUTH_MODE_TLS : VSRI_AUTH_MODE_PLAINTEXT;
  if (tls_exporter) memcpy(hs->t.exporter, tls_exporter, VSRI_AUTH_EXPORTER_LEN);
}

/* ---- dialer ---------------------------------------------------------------------------- */

void vsri_auth_dialer_init(struct vsri_auth_hs *hs, const struct vsri_auth_cfg *cfg,
                           uint8_t peer_id, const uint8_t *tls_exporter) {
  auth_hs_init(hs, cfg, AUTH_ROLE_DIALER, tls_exporter);
  hs->peer_id = peer_id;
  hs->t.dialer_id = cfg->self_id;
  hs->t.acceptor_id = peer_id;
}

int vsri_auth_dialer_hello(struct vsri_auth_hs *hs, const uint8_t rand[VSRI_AUTH_NONCE_LEN],
                           uint8_t out[VSR_HEADER_SIZE]) {
  const struct vsri_auth_cfg *cfg = hs->cfg;
  if (hs->role != AUTH_ROLE_DIALER || hs->phase != AUTH_PHASE_START) return VSR_EINVAL;
  if (hs->peer_id <= cfg->self_id || hs->peer_id >= cfg->replica_count) return VSR_EINVAL;
  if (cfg->enabled && auth_all_zero(rand, VSRI_AUTH_NONCE_LEN)) return VSR_EINVAL;
  auth_frame(out, VSR_CMD_REPLICA_HELLO, cfg->cluster, cfg->self_id);
  if (!cfg->enabled) {
    /* Legacy announce: the acceptor answers nothing, the link is up once this is sent. */
    hs->phase = AUTH_PHASE_DONE;
    return 0;
  }
  memcpy(hs->t.nonce_d, rand, VSRI_AUTH_NONCE_LEN);
  memcpy(out + AUTH_OFF_RC + VSRI_AUTH_NONCE_OFFSET, rand, VSRI_AUTH_NONCE_LEN);
  hs->phase = AUTH_PHASE_WAIT;
  return 0;
}

/* Maps the wire status byte as the reference's read_status does: 1 and any byte it does not
 * know collapse to UNKNOWN_COMMAND so garbage is never mistaken for Ok. */
static uint8_t auth_read_status(const uint8_t *in) {
  uint8_t s = in[AUTH_OFF_RC + VSRI_AUTH_STATUS_OFFSET];
  return s <= VSRI_AUTH_MAC_MISMATCH ? s : (uint8_t)VSRI_AUTH_UNKNOWN_COMMAND;
}

int vsri_auth_dialer_on_challenge(struct vsri_auth_hs *hs, const uint8_t in[VSR_HEADER_SIZE],
                                  uint8_t out[VSR_HEADER_SIZE]) {
  const struct vsri_auth_cfg *cfg = hs->cfg;
  if (hs->role != AUTH_ROLE_DIALER || hs->phase != AUTH_PHASE_WAIT) return VSR_EINVAL;
  hs->phase = AUTH_PHASE_FAILED;
  if (in[AUTH_OFF_COMMAND] != VSR_CMD_REPLICA_CHALLENGE) {
    hs->status = VSRI_AUTH_UNKNOWN_COMMAND;
    return VSR_EAUTH_COMMAND;
  }
  /* Status before nonce and MAC: a reject carries neither. The header's cluster and replica
   * fields are not checked (as in the reference): the MAC binds our cluster id and the id
   * we dialed, so a Challenge claiming anything else cannot verify. */
  uint8_t status = auth_read_status(in);
  if (status != VSRI_AUTH_OK) {
    hs->status = status;
    return VSR_EAUTH_STATUS;
  }
  memcpy(hs->t.nonce_a, in + AUTH_OFF_RC + VSRI_AUTH_NONCE_OFFSET, VSRI_AUTH_NONCE_LEN);
  if (!auth_verify(cfg, &hs->t, AUTH_DIR_ACCEPTOR, in + AUTH_OFF_RC + VSRI_AUTH_MAC_OFFSET)) {
    hs->status = VSRI_AUTH_MAC_MISMATCH;
    return VSR_EAUTH;
  }
  auth_frame(out, VSR_CMD_REPLICA_FINISH, cfg->cluster, cfg->self_id);
  vsri_auth_mac(cfg->key, &hs->t, AUTH_DIR_DIALER, out + AUTH_OFF_RC + VSRI_AUTH_MAC_OFFSET);
  hs->phase = AUTH_PHASE_DONE;
  return 0;
}

/* ---- acceptor -------------------------------------------------------------------------- */

void vsri_auth_acceptor_init(struct vsri_auth_hs *hs, const struct vsri_auth_cfg *cfg,
                             const uint8_t *tls_exporter) {
  auth_hs_init(hs, cfg, AUTH_ROLE_ACCEPTOR, tls_exporter);
  hs->t.acceptor_id = cfg->self_id;
}

/* Records a reject and, when the dialer is waiting for an answer, builds the reject
 * Challenge: our cluster and id, zero nonce and MAC, the reason at the status offset. */
static int auth_reject(struct vsri_auth_hs *hs, uint8_t status, int err, bool nack,
                       uint8_t *out, bool *send) {
  hs->status = status;
  hs->phase = AUTH_PHASE_FAILED;
  *send = nack;
  if (nack) {
    auth_frame(out, VSR_CMD_REPLICA_CHALLENGE, hs->cfg->cluster, hs->cfg->self_id);
    out[AUTH_OFF_RC + VSRI_AUTH_STATUS_OFFSET] = status;
  }
  return err;
}

int vsri_auth_acceptor_on_hello(struct vsri_auth_hs *hs, const uint8_t in[VSR_HEADER_SIZE],
                                const uint8_t rand[VSRI_AUTH_NONCE_LEN],
                                uint8_t out[VSR_HEADER_SIZE], bool *send) {
  const struct vsri_auth_cfg *cfg = hs->cfg;
  *send = false;
  if (hs->role != AUTH_ROLE_ACCEPTOR || hs->phase != AUTH_PHASE_START) return VSR_EINVAL;
  if (cfg->enabled && auth_all_zero(rand, VSRI_AUTH_NONCE_LEN)) return VSR_EINVAL;
  uint8_t peer = in[AUTH_OFF_REPLICA];
  const uint8_t *nonce_d = in + AUTH_OFF_RC + VSRI_AUTH_NONCE_OFFSET;
  bool has_nonce = !auth_all_zero(nonce_d, VSRI_AUTH_NONCE_LEN);
  /* Only a dialer that sent a nonce runs the authenticated protocol and reads an answer; a
   * legacy dialer goes straight to consensus traffic, where a reject frame would not belong. */
  bool nack = cfg->enabled && has_nonce;
  hs->peer_id = peer;
  if (in[AUTH_OFF_COMMAND] != VSR_CMD_REPLICA_HELLO)
    return auth_reject(hs, VSRI_AUTH_UNKNOWN_COMMAND, VSR_EAUTH_COMMAND, nack, out, send);
  if (!vsr_u128_eq(vsr_get_u128(in + AUTH_OFF_CLUSTER), cfg->cluster))
    return auth_reject(hs, VSRI_AUTH_CLUSTER_MISMATCH, VSR_EAUTH_CLUSTER, nack, out, send);
  /* Directional rule: only strictly lower ids dial us. */
  if (peer >= cfg->replica_count || peer >= cfg->self_id)
    return auth_reject(hs, VSRI_AUTH_DIRECTIONAL_RULE, VSR_EAUTH_DIRECTION, nack, out, send);
  if (!cfg->enabled) {
    hs->phase = AUTH_PHASE_DONE;
    return 0;
  }
  if (!has_nonce)
    return auth_reject(hs, VSRI_AUTH_AUTH_REQUIRED, VSR_EAUTH_REQUIRED, false, out, send);
  hs->t.dialer_id = peer;
  memcpy(hs->t.nonce_d, nonce_d, VSRI_AUTH_NONCE_LEN);
  memcpy(hs->t.nonce_a, rand, VSRI_AUTH_NONCE_LEN);
  auth_frame(out, VSR_CMD_REPLICA_CHALLENGE, cfg->cluster, cfg->self_id);
  memcpy(out + AUTH_OFF_RC + VSRI_AUTH_NONCE_OFFSET, rand, VSRI_AUTH_NONCE_LEN);
  vsri_auth_mac(cfg->key, &hs->t, AUTH_DIR_ACCEPTOR, out + AUTH_OFF_RC + VSRI_AUTH_MAC_OFFSET);
  *send = true;
  hs->phase = AUTH_PHASE_WAIT;
  return 0;
}

int vsri_auth_acceptor_on_finish(struct vsri_auth_hs *hs, const uint8_t in[VSR_HEADER_SIZE]) {
  if (hs->role != AUTH_ROLE_ACCEPTOR || hs->phase != AUTH_PHASE_WAIT) return VSR_EINVAL;
  hs->phase = AUTH_PHASE_FAILED;
  /* Command before MAC; every reject from here on is log-only. Our fresh nonce_a in the
   * transcript is what defeats a Finish replayed from an earlier session. */
  if (in[AUTH_OFF_COMMAND] != VSR_CMD_REPLICA_FINISH) {
    hs->status = VSRI_AUTH_UNKNOWN_COMMAND;
    return VSR_EAUTH_COMMAND;
  }
  if (!auth_verify(hs->cfg, &hs->t, AUTH_DIR_DIALER, in + AUTH_OFF_RC + VSRI_AUTH_MAC_OFFSET)) {
    hs->status = VSRI_AUTH_MAC_MISMATCH;
    return VSR_EAUTH;
  }
  hs->phase = AUTH_PHASE_DONE;
  return 0;
}

bool vsri_auth_done(const struct vsri_auth_hs *hs) { return hs->phase == AUTH_PHASE_DONE; }

const char *vsri_auth_status_name(uint8_t status) {
  switch (status) {
  case VSRI_AUTH_OK: return "ok";
  case VSRI_AUTH_UNKNOWN_COMMAND: return "unknown_command";
  case VSRI_AUTH_CLUSTER_MISMATCH: return "cluster_mismatch";
  case VSRI_AUTH_DIRECTIONAL_RULE: return "directional_rule";
  case VSRI_AUTH_AUTH_REQUIRED: return "auth_required";
  case VSRI_AUTH_MAC_MISMATCH: return "mac_mismatch";
  default: return "unknown";
  }
}
