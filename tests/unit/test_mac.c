/* BLAKE3 wrapper (src/crypto/mac.c) cross-checked against Debian's b3sum, an independent
 * (Rust) implementation: plain hash, keyed hash and derive_key on inputs that straddle the
 * 1024-byte chunk boundary. b3sum is a declared dependency (scripts/deps.sh): its absence is
 * a failure, not a skip. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "crypto/mac.h"

#define MAC_MAX_INPUT 100000

static const size_t mac_lengths[] = {0, 1, 1023, 1024, 1025, 100000};
static const char mac_context[] = "apache-iggy replica-auth v1 psk->mac-key";

static uint8_t mac_input[MAC_MAX_INPUT];
static char mac_dir[] = "/tmp/vsr_test_mac_XXXXXX";
static bool mac_dir_made;

/* The BLAKE3 test-vector pattern: byte i is i mod 251. */
static void mac_fill_input(void) {
  for (size_t i = 0; i < MAC_MAX_INPUT; i++) mac_input[i] = (uint8_t)(i % 251);
}

static void mac_write_file(const char *path, const void *p, size_t n) {
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  if (n) assert_int_equal(fwrite(p, 1, n, f), n);
  assert_int_equal(fclose(f), 0);
}

static void mac_hex(const uint8_t *p, size_t n, char *out) {
  for (size_t i = 0; i < n; i++) snprintf(out + 2 * i, 3, "%02x", p[i]);
}

/* Runs |cmd| (a shell command line built from fixed strings and our temp paths) and returns
 * the first 64 hex characters it prints in |out|. */
static void mac_run_b3sum(const char *cmd, char out[65]) {
  FILE *p = popen(cmd, "r");
  if (!p) fail_msg("popen(%s) failed", cmd);
  size_t got = fread(out, 1, 64, p);
  out[got] = 0;
  int status = pclose(p);
  if (status != 0 || got != 64) fail_msg("'%s' exited %d with output '%s'", cmd, status, out);
}

static int mac_setup(void **state) {
  (void)state;
  FILE *p = popen("b3sum --version 2>/dev/null", "r");
  char ver[64] = {0};
  size_t got = p ? fread(ver, 1, sizeof ver - 1, p) : 0;
  int status = p ? pclose(p) : -1;
  if (status != 0 || got < 5 || strncmp(ver, "b3sum", 5) != 0) {
    fprintf(stderr, "test_mac: b3sum not found on PATH; it is a declared dependency "
                    "(apt-get install b3sum, see scripts/deps.sh)\n");
    return -1;
  }
  if (!mkdtemp(mac_dir)) return -1;
  mac_dir_made = true;
  mac_fill_input();
  return 0;
}

static int mac_teardown(void **state) {
  (void)state;
  char path[128];
  if (!mac_dir_made) return 0; /* setup failed before the directory existed */
  for (size_t i = 0; i < sizeof mac_lengths / sizeof mac_lengths[0]; i++) {
    snprintf(path, sizeof path, "%s/in_%zu", mac_dir, mac_lengths[i]);
    unlink(path);
  }
  snprintf(path, sizeof path, "%s/key", mac_dir);
  unlink(path);
  return rmdir(mac_dir) == 0 ? 0 : -1;
}

static void test_empty_input_matches_the_published_vector(void **state) {
  (void)state;
  uint8_t out[VSRI_BLAKE3_LEN];
  char hex[65];
  vsri_blake3_hash(NULL, 0, out);
  mac_hex(out, sizeof out, hex);
  assert_string_equal(hex, "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262");
}

static void test_hash_matches_b3sum(void **state) {
  (void)state;
  char path[128], cmd[256], want[65], got[65];
  uint8_t out[VSRI_BLAKE3_LEN];
  for (size_t i = 0; i < sizeof mac_lengths / sizeof mac_lengths[0]; i++) {
    size_t n = mac_lengths[i];
    snprintf(path, sizeof path, "%s/in_%zu", mac_dir, n);
    mac_write_file(path, mac_input, n);
    snprintf(cmd, sizeof cmd, "b3sum --no-names --num-threads 1 '%s'", path);
    mac_run_b3sum(cmd, want);
    vsri_blake3_hash(mac_input, n, out);
    mac_hex(out, sizeof out, got);
    if (strcmp(got, want) != 0) fail_msg("hash of %zu bytes: %s, b3sum %s", n, got, want);
  }
}

static void test_keyed_hash_matches_b3sum(void **state) {
  (void)state;
  char path[128], keypath[128], cmd[384], want[65], got[65];
  uint8_t key[VSRI_BLAKE3_LEN], out[VSRI_BLAKE3_LEN];
  for (size_t i = 0; i < sizeof key; i++) key[i] = (uint8_t)(0xa0 + i);
  snprintf(keypath, sizeof keypath, "%s/key", mac_dir);
  mac_write_file(keypath, key, sizeof key);
  for (size_t i = 0; i < sizeof mac_lengths / sizeof mac_lengths[0]; i++) {
    size_t n = mac_lengths[i];
    snprintf(path, sizeof path, "%s/in_%zu", mac_dir, n);
    mac_write_file(path, mac_input, n);
    snprintf(cmd, sizeof cmd, "b3sum --keyed --no-names --num-threads 1 '%s' < '%s'", path,
             keypath);
    mac_run_b3sum(cmd, want);
    vsri_blake3_keyed(key, mac_input, n, out);
    mac_hex(out, sizeof out, got);
    if (strcmp(got, want) != 0) fail_msg("keyed hash of %zu bytes: %s, b3sum %s", n, got, want);
  }
}

static void test_derive_key_matches_b3sum(void **state) {
  (void)state;
  char path[128], cmd[384], want[65], got[65];
  uint8_t out[VSRI_BLAKE3_LEN];
  for (size_t i = 0; i < sizeof mac_lengths / sizeof mac_lengths[0]; i++) {
    size_t n = mac_lengths[i];
    snprintf(path, sizeof path, "%s/in_%zu", mac_dir, n);
    mac_write_file(path, mac_input, n);
    /* The replica-auth context itself: it has spaces and '>', hence the quotes. */
    snprintf(cmd, sizeof cmd, "b3sum --derive-key '%s' --no-names --num-threads 1 '%s'",
             mac_context, path);
    mac_run_b3sum(cmd, want);
    vsri_blake3_derive_key(mac_context, mac_input, n, out);
    mac_hex(out, sizeof out, got);
    if (strcmp(got, want) != 0) fail_msg("derive_key of %zu bytes: %s, b3sum %s", n, got, want);
  }
}

static void test_ct_equal_compares_every_byte(void **state) {
  (void)state;
  uint8_t a[64], b[64];
  memset(a, 0x5a, sizeof a);
  memcpy(b, a, sizeof b);
  assert_true(vsri_ct_equal(a, b, sizeof a));
  assert_true(vsri_ct_equal(a, b, 0));
  b[0] ^= 1;
  assert_false(vsri_ct_equal(a, b, sizeof a));
  b[0] ^= 1;
  b[63] ^= 0x80;
  assert_false(vsri_ct_equal(a, b, sizeof a));
  assert_true(vsri_ct_equal(a, b, 63));
}

static void test_wipe_zeroes(void **state) {
  (void)state;
  uint8_t k[32];
  memset(k, 0xff, sizeof k);
  vsri_wipe(k, sizeof k);
  for (size_t i = 0; i < sizeof k; i++) assert_int_equal(k[i], 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_empty_input_matches_the_published_vector),
      cmocka_unit_test(test_hash_matches_b3sum),
      cmocka_unit_test(test_keyed_hash_matches_b3sum),
      cmocka_unit_test(test_derive_key_matches_b3sum),
      cmocka_unit_test(test_ct_equal_compares_every_byte),
      cmocka_unit_test(test_wipe_zeroes),
  };
  return cmocka_run_group_tests(tests, mac_setup, mac_teardown);
}
