/* libFuzzer target for the replica handshake (src/bus/auth.c): arbitrary 256-byte frames at
 * every position of both state machines, with auth on, off, and a rotation window. Each
 * step must return 0 or a negative code and never read or write out of bounds.
 * Input: byte 0 selects config and path, bytes 1..32 a nonce, then up to two frames (short
 * frames are zero-padded). The seeds in corpus/auth were written from a real session of these
 * state machines (secret "0123456789abcdef0123456789abcdef", nonces 0x11.. / 0x22..): the
 * Hello + Finish and a wrong-cluster Hello for the acceptor, the Challenge and a reject
 * Challenge for the dialer. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bus/auth.h"
#include "vsrbus/error.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct vsri_auth_cfg fz_cfg[3][3]; /* [mode: on, off, window][self id] */
static bool fz_ready;

static void fz_init(void) {
  static const char a[] = "0123456789abcdef0123456789abcdef";
  static const char b[] = "fedcba9876543210fedcba9876543210";
  for (uint8_t id = 0; id < 3; id++) {
    if (vsri_auth_cfg_init(&fz_cfg[0][id], "iggy-cluster", id, 3, a, 32, NULL, 0) ||
        vsri_auth_cfg_init(&fz_cfg[1][id], "iggy-cluster", id, 3, NULL, 0, NULL, 0) ||
        vsri_auth_cfg_init(&fz_cfg[2][id], "iggy-cluster", id, 3, b, 32, a, 32))
      abort();
  }
  fz_ready = true;
}

/* Copies the next frame (zero-padded to 256 bytes) out of the input. */
static void fz_take(const uint8_t **p, size_t *n, uint8_t out[VSR_HEADER_SIZE]) {
  size_t k = *n < VSR_HEADER_SIZE ? *n : VSR_HEADER_SIZE;
  memset(out, 0, VSR_HEADER_SIZE);
  memcpy(out, *p, k);
  *p += k;
  *n -= k;
}

static void fz_check(int rc) {
  /* Only these codes are documented for the handshake calls. */
  if (rc != 0 && rc != VSR_EINVAL && rc != VSR_EAUTH && rc != VSR_EAUTH_CLUSTER &&
      rc != VSR_EAUTH_DIRECTION && rc != VSR_EAUTH_REQUIRED && rc != VSR_EAUTH_COMMAND &&
      rc != VSR_EAUTH_STATUS)
    abort();
}

static void fz_acceptor(const struct vsri_auth_cfg *c, const uint8_t *rand, const uint8_t *p,
                        size_t n, const uint8_t *tls) {
  struct vsri_auth_hs a;
  uint8_t in[VSR_HEADER_SIZE], out[VSR_HEADER_SIZE];
  bool send = false;
  vsri_auth_acceptor_init(&a, c, tls);
  fz_take(&p, &n, in);
  int rc = vsri_auth_acceptor_on_hello(&a, in, rand, out, &send);
  fz_check(rc);
  /* A reject frame is sent only on an error, and only with a reason the dialer can read. */
  if (rc < 0 && send && (out[60] != VSR_CMD_REPLICA_CHALLENGE || out[128 + 64] == 0)) abort();
  if (rc == 0 && vsri_auth_done(&a) == c->enabled) abort();
  fz_take(&p, &n, in);
  rc = vsri_auth_acceptor_on_finish(&a, in);
  fz_check(rc);
}

static void fz_dialer(const struct vsri_auth_cfg *c, const uint8_t *rand, const uint8_t *p,
                      size_t n, const uint8_t *tls) {
  struct vsri_auth_hs d;
  uint8_t in[VSR_HEADER_SIZE], out[VSR_HEADER_SIZE];
  vsri_auth_dialer_init(&d, c, 2, tls);
  fz_check(vsri_auth_dialer_hello(&d, rand, out));
  fz_take(&p, &n, in);
  int rc = vsri_auth_dialer_on_challenge(&d, in, out);
  fz_check(rc);
  /* Success (reachable from the seed, which is a real Challenge) always yields a Finish. */
  if (rc == 0 && (!vsri_auth_done(&d) || out[60] != VSR_CMD_REPLICA_FINISH)) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!fz_ready) fz_init();
  if (size < 1 + VSRI_AUTH_NONCE_LEN) return 0;
  uint8_t sel = data[0];
  const uint8_t *rand = data + 1;
  const uint8_t *p = data + 1 + VSRI_AUTH_NONCE_LEN;
  size_t n = size - 1 - VSRI_AUTH_NONCE_LEN;
  const struct vsri_auth_cfg *cfgs = fz_cfg[(sel >> 1) % 3];
  const uint8_t *tls = (sel & 0x40) ? rand : NULL;
  if (sel & 1) fz_dialer(&cfgs[0], rand, p, n, tls);
  else fz_acceptor(&cfgs[2], rand, p, n, tls);
  return 0;
}
