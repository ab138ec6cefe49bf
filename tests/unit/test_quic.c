/* QUIC settings and certificates: the reference's default values, range checks, self-signed
 * generation, PEM write + load, SHA-256 fingerprints. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "crypto/cert.h"
#include "transport/quic.h"
#include "vsrbus/error.h"

static void test_defaults_match_reference(void **state) {
  (void)state;
  struct vsri_quic_config c;
  vsri_quic_config_default(&c);
  assert_int_equal(c.max_bidi_streams, 1);
  assert_int_equal(c.idle_timeout_ns, 30ull * 1000000000);
  assert_int_equal(c.keep_alive_ns, 10ull * 1000000000);
  assert_int_equal(c.handshake_grace_ns, 10ull * 1000000000);
  assert_int_equal(c.close_grace_ns, 2ull * 1000000000);
  assert_int_equal(c.initial_mtu, 1200);
  assert_int_equal(c.stream_window, 64u << 20);
  assert_int_equal(c.conn_window, 64u << 20);
  assert_int_equal(c.cc, VSRI_QUIC_CC_CUBIC);
  assert_false(c.alpn_required);
  assert_null(c.alpn);
  assert_false(c.insecure);
  assert_false(c.stream_per_request);
  assert_string_equal(c.server_name, "localhost");
  assert_string_equal(VSRI_QUIC_ALPN, "iggy.consensus.v1");
  assert_int_equal(VSRI_QUIC_HANDSHAKE_FAILED, 0x1001);
  assert_int_equal(VSRI_QUIC_AUTH_FAILED, 0x1002);
  assert_int_equal(VSRI_QUIC_SHUTDOWN, 0x1003);
  assert_int_equal(VSRI_QUIC_PROTOCOL_VIOLATION, 0x1004);
  assert_int_equal(vsri_quic_config_check(&c), 0);
}

static void test_config_check_rejects(void **state) {
  (void)state;
  struct vsri_quic_config c;
  vsri_quic_config_default(&c);
  c.max_bidi_streams = 0;
  assert_int_equal(vsri_quic_config_check(&c), VSR_ECONFIG);
  c.max_bidi_streams = 1025;
  assert_int_equal(vsri_quic_config_check(&c), VSR_ECONFIG);
  c.max_bidi_streams = 1024;
  assert_int_equal(vsri_quic_config_check(&c), 0);
  vsri_quic_config_default(&c);
  c.max_udp_payload = 1000;
  assert_int_equal(vsri_quic_config_check(&c), VSR_ECONFIG);
  vsri_quic_config_default(&c);
  c.stream_window = 1024;
  assert_int_equal(vsri_quic_config_check(&c), VSR_ECONFIG);
  vsri_quic_config_default(&c);
  c.conn_window = c.stream_window - 1;
  assert_int_equal(vsri_quic_config_check(&c), VSR_ECONFIG);
  vsri_quic_config_default(&c);
  c.handshake_grace_ns = 0;
  assert_int_equal(vsri_quic_config_check(&c), VSR_ECONFIG);
  vsri_quic_config_default(&c);
  c.max_udp_payload = 16384; /* loopback benchmarks: allowed */
  assert_int_equal(vsri_quic_config_check(&c), 0);
}

static void test_fingerprint_text(void **state) {
  (void)state;
  uint8_t a[32], b[32];
  for (int i = 0; i < 32; i++) a[i] = (uint8_t)(i * 37 + 5);
  char txt[VSRI_FINGERPRINT_TEXT_LEN];
  vsri_fingerprint_format(a, txt);
  assert_int_equal(strlen(txt), 95);
  assert_int_equal(vsri_fingerprint_parse(txt, b), 0);
  assert_memory_equal(a, b, 32);
  char plain[80] = "sha256:";
  for (int i = 0; i < 32; i++) snprintf(plain + 7 + 2 * i, 3, "%02x", a[i]);
  memset(b, 0, sizeof b);
  assert_int_equal(vsri_fingerprint_parse(plain, b), 0);
  assert_memory_equal(a, b, 32);
  assert_int_equal(vsri_fingerprint_parse("AB:CD", b), VSR_EINVAL);
  assert_int_equal(vsri_fingerprint_parse("zz", b), VSR_EINVAL);
  plain[20] = 'g';
  assert_int_equal(vsri_fingerprint_parse(plain, b), VSR_EINVAL);
  assert_int_equal(vsri_fingerprint_parse(NULL, b), VSR_EINVAL);
}

static void test_cert_generate_write_load(void **state) {
  (void)state;
  struct vsri_cert *c = NULL;
  assert_int_equal(vsri_cert_generate(&c, "localhost", 30), 0);
  assert_true(c->generated);
  uint8_t zero[32] = {0};
  assert_memory_not_equal(c->sha256, zero, 32);
  char dir[] = "/tmp/vsrbus-cert-XXXXXX";
  assert_non_null(mkdtemp(dir));
  char sub[128], certp[160], keyp[160];
  snprintf(sub, sizeof sub, "%s/out", dir);
  assert_int_equal(vsri_cert_write(c, sub), 0); /* creates the directory */
  snprintf(certp, sizeof certp, "%s/cert.pem", sub);
  snprintf(keyp, sizeof keyp, "%s/key.pem", sub);
  struct stat st;
  assert_int_equal(stat(keyp, &st), 0);
  assert_int_equal(st.st_mode & 0777, 0600);
  uint8_t fp[32];
  assert_int_equal(vsri_fingerprint_pem_file(certp, fp), 0);
  assert_memory_equal(fp, c->sha256, 32);
  struct vsri_cert *l = NULL;
  assert_int_equal(vsri_cert_load(&l, certp, keyp), 0);
  assert_false(l->generated);
  assert_memory_equal(l->sha256, c->sha256, 32);
  vsri_cert_free(l);
  /* A key that does not match the certificate is refused. */
  struct vsri_cert *other = NULL;
  assert_int_equal(vsri_cert_generate(&other, "localhost", 30), 0);
  char sub2[128], key2[160];
  snprintf(sub2, sizeof sub2, "%s/other", dir);
  assert_int_equal(vsri_cert_write(other, sub2), 0);
  snprintf(key2, sizeof key2, "%s/key.pem", sub2);
  assert_int_equal(vsri_cert_load(&l, certp, key2), VSR_ECONFIG);
  assert_int_equal(vsri_cert_load(&l, "/nonexistent/cert.pem", keyp), VSR_ECONFIG);
  assert_int_equal(vsri_cert_load(&l, certp, NULL), VSR_ECONFIG);
  vsri_cert_free(other);
  vsri_cert_free(c);
  char cmd[256];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  assert_int_equal(system(cmd), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_defaults_match_reference),
      cmocka_unit_test(test_config_check_rejects),
      cmocka_unit_test(test_fingerprint_text),
      cmocka_unit_test(test_cert_generate_write_load),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
