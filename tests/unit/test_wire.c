/* Wire format: struct layouts at their byte offsets, the XXH3 vectors M-1..M-4 of
 * spec/wire.md §M3, seal / verify, and every header validation rule of §M5 with its error. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <xxhash.h>

#include "vsrbus/error.h"
#include "vsrbus/wire.h"

#define MAX_SIZE (1u << 20)

/* The frame under test: header and room for a body (DVC suffixes, M-4). */
static _Alignas(16) uint8_t F[VSR_HEADER_SIZE + 129 * VSR_HEADER_SIZE];

#define PUT8(T, f, v) (F[offsetof(struct T, f)] = (uint8_t)(v))
#define PUT32(T, f, v) vsr_put_u32(F + offsetof(struct T, f), (uint32_t)(v))
#define PUT64(T, f, v) vsr_put_u64(F + offsetof(struct T, f), (uint64_t)(v))
#define PUT128(T, f, l, h) vsr_put_u128(F + offsetof(struct T, f), (vsr_u128){(l), (h)})
#define SET_SIZE(s) vsr_put_u32(F + VSR_SIZE_FIELD_OFFSET, (s))

/* Seals F as a sender would, then checks it as a receiver. */
static int seal_check(void) {
  vsr_frame_seal(F);
  return vsr_frame_check_header(F, MAX_SIZE);
}

/* Checks F without touching its checksum. */
static int check(void) { return vsr_frame_check_header(F, MAX_SIZE); }

/* A minimal valid header of |cmd|: the fields §M5 requires, everything else zero. */
static void base(uint8_t cmd) {
  memset(F, 0, sizeof F);
  vsr_header_init(F, cmd, VSR_HEADER_SIZE);
  switch (cmd) {
  case VSR_CMD_REQUEST:
    PUT128(vsr_request_header, client, 1, 0);
    PUT8(vsr_request_header, operation, VSR_OP_SEND_MESSAGES);
    PUT64(vsr_request_header, session, 1);
    PUT64(vsr_request_header, request, 1);
    break;
  case VSR_CMD_EVICTION:
    PUT128(vsr_eviction_header, client, 1, 0);
    PUT8(vsr_eviction_header, reason, VSR_EVICT_NO_SESSION);
    break;
  case VSR_CMD_REQUEST_PREPARES:
    PUT64(vsr_request_prepares_header, from_op, 1);
    PUT64(vsr_request_prepares_header, to_op, 1);
    break;
  case VSR_CMD_REQUEST_STATE_CHUNK: PUT32(vsr_request_state_chunk_header, len, 1); break;
  case VSR_CMD_FORWARD_LOGOUT:
    PUT64(vsr_forward_logout_header, session, 1);
    PUT64(vsr_forward_logout_header, request, 1);
    /* fallthrough */
  case VSR_CMD_FORWARD_REGISTER:
  case VSR_CMD_FORWARD_REGISTER_RESULT:
  case VSR_CMD_FORWARD_LOGOUT_RESULT:
    vsr_put_u128(F + 128, (vsr_u128){1, 0}); /* client or nonce */
    vsr_put_u128(F + 144, (vsr_u128){1, 0}); /* nonce or client */
    break;
  default: break;
  }
}

static void hex_to_bytes(const char *hex, uint8_t *out) {
  for (size_t i = 0; hex[2 * i]; i++) {
    unsigned v;
    sscanf(hex + 2 * i, "%2x", &v);
    out[i] = (uint8_t)v;
  }
}

static void assert_hex(const uint8_t *p, const char *hex) {
  uint8_t want[64];
  size_t n = strlen(hex) / 2;
  hex_to_bytes(hex, want);
  assert_memory_equal(p, want, n);
}

/* ---- layout ----------------------------------------------------------------------------- */

static void test_layout_request_prepare(void **state) {
  (void)state;
  struct vsr_request_header r;
  memset(&r, 0, sizeof r);
  r.client = (vsr_u128){0x0102030405060708u, 0x1112131415161718u};
  r.size = 0x11223344u;
  r.command = VSR_CMD_REQUEST;
  r.operation = VSR_OP_SEND_MESSAGES;
  r.session = 0xa1a2a3a4a5a6a7a8u;
  r.user_id = 0xb1b2b3b4u;
  memcpy(F, &r, sizeof r);
  assert_hex(F + 48, "44332211");
  assert_int_equal(F[60], 5);
  assert_hex(F + 128, "08070605040302011817161514131211");
  assert_int_equal(F[176], 160);
  assert_hex(F + 184, "a8a7a6a5a4a3a2a1b4b3b2b1");

  struct vsr_prepare_header p;
  memset(&p, 0, sizeof p);
  p.op = 7;
  p.group = 0x8000000000000001u;
  p.user_id = 9;
  p.reserved[27] = 0xee;
  memcpy(F, &p, sizeof p);
  assert_int_equal(vsr_get_u64(F + 176), 7);
  assert_hex(F + 216, "0100000000000080");
  assert_int_equal(vsr_get_u32(F + 224), 9);
  assert_int_equal(F[255], 0xee);

  /* Back from bytes into the routed view: group shares the tail of Request.reserved. */
  struct vsr_routed_request_header rr;
  vsr_put_u64(F + 248, 42);
  memcpy(&rr, F, sizeof rr);
  assert_int_equal(rr.group, 42);
}

static void test_layout_control_views(void **state) {
  (void)state;
  struct vsr_do_view_change_header d;
  memset(&d, 0, sizeof d);
  d.log_view = 0x01020304u;
  d.nack_bitset = (vsr_u128){1, 0};
  d.present_bitset = (vsr_u128){0, 0x8000000000000000u};
  memcpy(F, &d, sizeof d);
  assert_hex(F + 152, "04030201");
  assert_int_equal(F[224], 1);
  assert_int_equal(F[255], 0x80);

  struct vsr_eviction_header e;
  memset(&e, 0, sizeof e);
  e.server_protocol_version = 3;
  e.server_protocol_version_min = 2;
  e.reason = VSR_EVICT_MALFORMED_LOGIN;
  memcpy(F, &e, sizeof e);
  assert_int_equal(vsr_get_u32(F + 144), 3);
  assert_int_equal(vsr_get_u32(F + 148), 2);
  assert_int_equal(F[255], 15);

  struct vsr_state_transfer_target_header t;
  memset(F, 0, VSR_HEADER_SIZE);
  F[160] = 1;
  F[161] = 1;
  vsr_put_u64(F + 168, 99);
  memcpy(&t, F, sizeof t);
  assert_int_equal(t.available, 1);
  assert_int_equal(t.unavailable_transient, 1);
  assert_int_equal(t.commit_max, 99);

  struct vsr_forward_register_result_header fr;
  memset(F, 0, VSR_HEADER_SIZE);
  vsr_put_u64(F + 160, 5);
  vsr_put_u64(F + 168, 6);
  F[255] = 3;
  memcpy(&fr, F, sizeof fr);
  assert_int_equal(fr.epoch, 5);
  assert_int_equal(fr.watermark, 6);
  assert_int_equal(fr.outcome, 3);
}

/* ---- checksums (§M3) -------------------------------------------------------------------- */

static void test_xxh3_empty(void **state) {
  (void)state;
  assert_true(vsr_xxh3("", 0) == 0x2d06800538d394c2u);
}

static void test_vector_m1_ping(void **state) {
  (void)state;
  vsr_header_init(F, VSR_CMD_PING, 256);
  assert_true(vsr_frame_checksum(F) == 0x9ae2be8c81d578a6u);
  vsr_put_u128(F, vsr_u128_from_u64(vsr_frame_checksum(F)));
  assert_hex(F, "a678d5818cbee29a0000000000000000");
  /* Ping is not sealed: vsr_frame_seal leaves a zero checksum alone. */
  vsr_header_init(F, VSR_CMD_PING, 256);
  vsr_frame_seal(F);
  assert_hex(F, "00000000000000000000000000000000");
}

static void test_vector_m2_commit(void **state) {
  (void)state;
  vsr_header_init(F, VSR_CMD_COMMIT, 256);
  vsr_frame_seal(F);
  assert_hex(F, "1d44e90c4e359bdb0000000000000000");
  assert_int_equal(check(), 0);
}

static void test_vector_m3_commit_fields(void **state) {
  (void)state;
  vsr_header_init(F, VSR_CMD_COMMIT, 256);
  PUT128(vsr_commit_header, cluster, 1, 0);
  PUT32(vsr_commit_header, view, 3);
  PUT8(vsr_commit_header, replica, 2);
  PUT64(vsr_commit_header, commit, 10);
  assert_hex(F + 32, "0100000000000000000000000000000000010000030000000000000009020000");
  assert_int_equal(F[152], 0x0a);
  vsr_frame_seal(F);
  assert_hex(F, "fbf9c375caf0c0570000000000000000");
  assert_int_equal(check(), 0);
}

static void test_vector_m4_prepare(void **state) {
  (void)state;
  memset(F, 0, sizeof F);
  vsr_header_init(F, VSR_CMD_PREPARE, 260);
  PUT32(vsr_prepare_header, view, 5);
  PUT64(vsr_prepare_header, op, 1);
  memcpy(F + 256, "abcd", 4);
  vsr_prepare_set_body_checksum(F);
  assert_hex(F + 16, "9098a8536fa997640000000000000000");
  vsr_frame_seal(F);
  assert_hex(F, "f0c40c7066d563440000000000000000");
  assert_hex(F + 48, "04010000050000000000000006000000");
  assert_int_equal(F[176], 1);
  assert_hex(F + 256, "61626364");
  assert_int_equal(check(), 0);
  assert_int_equal(vsr_frame_check_body(F, 260, VSR_CHECK_BODY_VERIFY), 0);
  /* The identity ignores the view: a re-stamped retransmission stays valid. */
  PUT32(vsr_prepare_header, view, 6);
  assert_int_equal(check(), 0);
  F[259] ^= 1;
  assert_int_equal(vsr_frame_check_body(F, 260, VSR_CHECK_BODY_VERIFY), VSR_EFRAME_BODY_CHECKSUM);
  assert_int_equal(vsr_frame_check_body(F, 260, 0), 0);
}

/* M-5: mainline repairs by sending the stored Prepare with only byte 60 rewritten to 19; the
 * identity checksum stays the Prepare's and must verify. Sealing a RepairPrepare from the same
 * fields gives the same value; hashing the literal 19 would give 0x52895cba6420daf6. */
static void m4_fields(uint8_t command) {
  memset(F, 0, sizeof F);
  vsr_header_init(F, command, 260);
  PUT32(vsr_prepare_header, view, 5);
  PUT64(vsr_prepare_header, op, 1);
  memcpy(F + 256, "abcd", 4);
  vsr_prepare_set_body_checksum(F);
}

static void test_vector_m5_repair_prepare(void **state) {
  (void)state;
  /* Received: a sealed Prepare (M-4), byte 60 rewritten, nothing else touched. */
  m4_fields(VSR_CMD_PREPARE);
  vsr_frame_seal(F);
  F[60] = VSR_CMD_REPAIR_PREPARE;
  assert_hex(F, "f0c40c7066d563440000000000000000");
  assert_true(vsr_prepare_identity(F) == 0x4463d566700cc4f0u);
  assert_int_equal(check(), 0);
  assert_int_equal(vsr_frame_check_body(F, 260, VSR_CHECK_BODY_VERIFY), 0);
  /* The literal-19 hash is what mainline rejects; ours must not be it. */
  uint8_t lit[VSR_HEADER_SIZE];
  memcpy(lit, F, sizeof lit);
  memset(lit, 0, 16);
  memset(lit + 52, 0, 4);
  assert_true(XXH3_64bits(lit, sizeof lit) == 0x52895cba6420daf6u);
  assert_true(vsr_prepare_identity(F) != 0x52895cba6420daf6u);
  /* Tampering is still caught. */
  PUT64(vsr_prepare_header, op, 2);
  assert_int_equal(check(), VSR_EFRAME_CHECKSUM);

  /* Sent: a RepairPrepare sealed by vsrbus from the same fields carries the same checksum, and
   * turned back into a Prepare (what mainline's receiver does) it verifies as one. */
  m4_fields(VSR_CMD_REPAIR_PREPARE);
  vsr_frame_seal(F);
  assert_hex(F, "f0c40c7066d563440000000000000000");
  assert_int_equal(check(), 0);
  F[60] = VSR_CMD_PREPARE;
  assert_int_equal(check(), 0);
  assert_true(vsr_prepare_identity(F) == 0x4463d566700cc4f0u);
  /* The view stays outside the identity for repairs too (a re-stamped retransmission). */
  F[60] = VSR_CMD_REPAIR_PREPARE;
  PUT32(vsr_prepare_header, view, 9);
  assert_int_equal(check(), 0);
}

/* Any Prepare turned into a RepairPrepare by rewriting byte 60 verifies, and the reverse. */
static void test_repair_prepare_from_prepare(void **state) {
  (void)state;
  for (unsigned i = 0; i < 64; i++) {
    base(VSR_CMD_PREPARE);
    PUT64(vsr_prepare_header, op, 1000 + i);
    PUT32(vsr_prepare_header, view, i);
    vsr_frame_seal(F);
    uint64_t prepare = vsr_get_u64(F);
    F[60] = VSR_CMD_REPAIR_PREPARE;
    assert_int_equal(check(), 0);
    assert_true(vsr_prepare_identity(F) == prepare);
    vsr_frame_seal(F); /* resealing as a repair keeps the value */
    assert_true(vsr_get_u64(F) == prepare);
  }
}

static void test_command_sealed(void **state) {
  (void)state;
  static const uint8_t sealed[] = {7, 9, 10, 11, 12, 17, 18, 20, 21, 22, 23,
                                   24, 25, 26, 27, 28, 29};
  unsigned n = 0;
  for (unsigned c = 0; c < 256; c++) {
    bool want = memchr(sealed, (int)c, sizeof sealed) != NULL;
    assert_int_equal(vsr_command_sealed((uint8_t)c), want);
    n += want;
  }
  assert_int_equal(n, sizeof sealed);
}

/* Every command's base header passes; a flipped bit anywhere in 16..256 of a sealed header,
 * or in its checksum, is VSR_EFRAME_CHECKSUM before any other rule. */
static void test_seal_roundtrip_all(void **state) {
  (void)state;
  for (unsigned c = 0; c <= VSR_CMD_MAX; c++) {
    base((uint8_t)c);
    assert_int_equal(seal_check(), 0);
    if (!vsr_command_sealed((uint8_t)c)) continue;
    for (unsigned off = 0; off < VSR_HEADER_SIZE; off++) {
      if (off >= 48 && off < 52) continue; /* size: framing checks come first */
      if (off == 60) continue;             /* command: would name another header */
      base((uint8_t)c);
      vsr_frame_seal(F);
      F[off] ^= 0x10;
      assert_int_equal(check(), VSR_EFRAME_CHECKSUM);
    }
  }
}

/* Unsealed commands never verify a checksum (Prepare only when non-zero). */
static void test_unsealed_ignore_checksum(void **state) {
  (void)state;
  static const uint8_t cmds[] = {0, 1, 2, 3, 4, 5, 8, 13, 14, 15, 16};
  for (size_t i = 0; i < sizeof cmds; i++) {
    base(cmds[i]);
    PUT128(vsr_header, checksum, 0x1234, 0x5678);
    assert_int_equal(check(), 0);
  }
}

static void test_prepare_identity(void **state) {
  (void)state;
  for (uint8_t cmd = VSR_CMD_PREPARE; cmd != 0; cmd = cmd == VSR_CMD_PREPARE ? 19 : 0) {
    base(cmd);
    assert_int_equal(check(), 0); /* checksum 0: unsealed, not verified */
    vsr_frame_seal(F);
    assert_true(vsr_get_u64(F) == vsr_prepare_identity(F));
    assert_int_equal(check(), 0);
    F[0] ^= 1;
    assert_int_equal(check(), VSR_EFRAME_CHECKSUM);
    F[0] ^= 1;
    F[15] = 1; /* the high half of a widened u64 must be zero */
    assert_int_equal(check(), VSR_EFRAME_CHECKSUM);
    F[15] = 0;
    PUT64(vsr_prepare_header, op, 2);
    assert_int_equal(check(), VSR_EFRAME_CHECKSUM);
  }
}

/* ---- framing checks and their order ----------------------------------------------------- */

static void test_size_and_command(void **state) {
  (void)state;
  base(VSR_CMD_PING);
  SET_SIZE(0);
  assert_int_equal(check(), VSR_EFRAME_SMALL);
  SET_SIZE(255);
  assert_int_equal(check(), VSR_EFRAME_SMALL);
  SET_SIZE(256);
  assert_int_equal(check(), 0);
  SET_SIZE(MAX_SIZE);
  assert_int_equal(check(), 0);
  SET_SIZE(MAX_SIZE + 1);
  assert_int_equal(check(), VSR_EFRAME_LARGE);
  SET_SIZE(0xffffffffu);
  assert_int_equal(check(), VSR_EFRAME_LARGE);
  assert_int_equal(vsr_frame_check_header(F, 0xffffffffu), 0);
  SET_SIZE(256);
  for (unsigned c = VSR_CMD_MAX + 1; c < 256; c++) {
    PUT8(vsr_header, command, c);
    assert_int_equal(check(), VSR_EFRAME_COMMAND);
  }
  /* Order: SMALL and LARGE before COMMAND; CHECKSUM before typed rules. */
  PUT8(vsr_header, command, 30);
  SET_SIZE(10);
  assert_int_equal(check(), VSR_EFRAME_SMALL);
  SET_SIZE(MAX_SIZE + 1);
  assert_int_equal(check(), VSR_EFRAME_LARGE);
  base(VSR_CMD_START_VIEW_CHANGE);
  PUT32(vsr_header, release, 1);
  assert_int_equal(check(), VSR_EFRAME_CHECKSUM);
  assert_int_equal(seal_check(), VSR_EFRAME_FIELD);
}

/* ---- §M5, command by command ------------------------------------------------------------- */

static void test_request_rules(void **state) {
  (void)state;
  base(VSR_CMD_REQUEST);
  assert_int_equal(check(), 0);
  static const uint8_t undefined[] = {4, 63, 69, 127, 150, 159, 163, 255};
  for (size_t i = 0; i < sizeof undefined; i++) {
    PUT8(vsr_request_header, operation, undefined[i]);
    assert_int_equal(check(), VSR_EFRAME_ENUM);
  }
  base(VSR_CMD_REQUEST);
  PUT128(vsr_request_header, client, 0, 0);
  assert_int_equal(check(), VSR_EFRAME_FIELD);
  PUT128(vsr_request_header, client, 0, 1); /* high half alone is a client id */
  assert_int_equal(check(), 0);
  PUT8(vsr_request_header, operation, VSR_OP_RESERVED);
  assert_int_equal(check(), VSR_EFRAME_FIELD);
  /* Register: session == 0 and request == 0. */
  PUT8(vsr_request_header, operation, VSR_OP_REGISTER);
  assert_int_equal(check(), VSR_EFRAME_FIELD);
  PUT64(vsr_request_header, session, 0);
  assert_int_equal(check(), VSR_EFRAME_FIELD);
  PUT64(vsr_request_header, request, 0);
  assert_int_equal(check(), 0);
  PUT64(vsr_request_header, session, 1);
  assert_int_equal(check(), VSR_EFRAME_FIELD);
  /* NonReplicated: no constraint. */
  PUT8(vsr_request_header, operation, VSR_OP_NON_REPLICATED);
  assert_int_equal(check(), 0);
  PUT64(vsr_request_header, session, 0);
  assert_int_equal(check(), 0);
  /* Everything else: session > 0 and request > 0. */
  PUT8(vsr_request_header, operation, VSR_OP_LOGOUT);
  assert_int_equal(check(), VSR_EFRAME_FIELD);
  PUT64(vsr_request_header, session, 1);
  assert_int_equal(check(), VSR_EFRAME_FIELD);
  PUT64(vsr_request_header, request, 1);
  assert_int_equal(check(), 0);
  /* Reserved bytes and the routed group are not checked on a Request. */
  F[200] = 0xff;
  PUT64(vsr_routed_request_header, group, 77);
  F[180] = 1;
  assert_int_equal(check(), 0);
}

static void test_operation_edges(void **state) {
  (void)state;
  static const uint8_t defined[] = {0,   1,   2,   3,   64,  65,  66,  67,  68,  128, 129, 138,
                                    147, 148, 149, 160, 161, 162};
  unsigned n = 0;
  for (unsigned op = 0; op < 256; op++) {
    bool d = vsr_operation_defined((uint8_t)op);
    n += d;
    assert_int_equal(d, strcmp(vsr_operation_name((uint8_t)op), "unknown") != 0);
  }
  assert_int_equal(n, 34);
  for (size_t i = 0; i < sizeof defined; i++) assert_true(vsr_operation_defined(defined[i]));
  assert_string_equal(vsr_operation_name(VSR_OP_SEND_MESSAGES), "SendMessages");
  assert_string_equal(vsr_operation_name(VSR_OP_LEAVE_CONSUMER_GROUP), "LeaveConsumerGroup");
}

static void test_reply_prepare_ok_rules(void **state) {
  (void)state;
  base(VSR_CMD_REPLY);
  PUT8(vsr_reply_header, operation, VSR_OP_DELETE_CONSUMER_OFFSET);
  PUT32(vsr_reply_header, status, 7);
  F[255] = 1; /* Reply reserved is not checked */
  assert_int_equal(check(), 0);
  PUT8(vsr_reply_header, operation, 163);
  assert_int_equal(check(), VSR_EFRAME_ENUM);
  SET_SIZE(1000); /* Reply carries a body */
  PUT8(vsr_reply_header, operation, 0);
  assert_int_equal(check(), 0);

  base(VSR_CMD_PREPARE_OK);
  PUT8(vsr_prepare_ok_header, operation, VSR_OP_REGISTER);
  assert_int_equal(seal_check(), 0);
  PUT8(vsr_prepare_ok_header, operation, 5);
  assert_int_equal(seal_check(), VSR_EFRAME_ENUM);
}

static void test_eviction_rules(void **state) {
  (void)state;
  base(VSR_CMD_EVICTION);
  assert_int_equal(check(), 0);
  PUT8(vsr_eviction_header, reason, VSR_EVICT_MAX);
  assert_int_equal(check(), 0);
  PUT8(vsr_eviction_header, reason, VSR_EVICT_MAX + 1);
  assert_int_equal(check(), VSR_EFRAME_ENUM);
  PUT8(vsr_eviction_header, reason, 255);
  assert_int_equal(check(), VSR_EFRAME_ENUM);
  PUT8(vsr_eviction_header, reason, VSR_EVICT_RESERVED);
  assert_int_equal(check(), VSR_EFRAME_FIELD);

  base(VSR_CMD_EVICTION);
  SET_SIZE(512);
  assert_int_equal(check(), VSR_EFRAME_FIELD);
  base(VSR_CMD_EVICTION);
  PUT128(vsr_eviction_header, client, 0, 0);
  assert_int_equal(check(), VSR_EFRAME_FIELD);
  static const unsigned rsv[] = {62, 127, 152, 254};
  for (size_t i = 0; i < 4; i++) {
    base(VSR_CMD_EVICTION);
    F[rsv[i]] = 1;
    assert_int_equal(check(), VSR_EFRAME_RESERVED);
  }
  /* Protocol window: only on IncompatibleProtocol, and there 1 <= min <= max. */
  base(VSR_CMD_EVICTION);
  PUT32(vsr_eviction_header, server_protocol_version, 1);
  assert_int_equal(check(), VSR_EFRAME_FIELD);
  PUT32(vsr_eviction_header, server_protocol_version, 0);
  PUT32(vsr_eviction_header, server_protocol_version_min, 1);
  assert_int_equal(check(), VSR_EFRAME_FIELD);
  PUT8(vsr_eviction_header, reason, VSR_EVICT_INCOMPATIBLE_PROTOCOL);
  assert_int_equal(check(), VSR_EFRAME_FIELD); /* max 0 < min 1 */
  PUT32(vsr_eviction_header, server_protocol_version, 1);
  assert_int_equal(check(), 0); /* min == max */
  PUT32(vsr_eviction_header, server_protocol_version, 4);
  assert_int_equal(check(), 0);
  PUT32(vsr_eviction_header, server_protocol_version_min, 0);
  assert_int_equal(check(), VSR_EFRAME_FIELD);
}

static void test_prepare_rules(void **state) {
  (void)state;
  for (uint8_t cmd = VSR_CMD_PREPARE; cmd != 0; cmd = cmd == VSR_CMD_PREPARE ? 19 : 0) {
    base(cmd);
    SET_SIZE(4096);
    PUT8(vsr_prepare_header, operation, VSR_OP_SEND_MESSAGES);
    PUT64(vsr_prepare_header, group, 1);
    PUT32(vsr_prepare_header, user_id, 3);
    F[209] = 1; /* operation_padding is not checked */
    assert_int_equal(seal_check(), 0);
    PUT8(vsr_prepare_header, operation, 100);
    assert_int_equal(seal_check(), VSR_EFRAME_ENUM);
    static const unsigned rsv[] = {62, 100, 127, 228, 255};
    for (size_t i = 0; i < 5; i++) {
      base(cmd);
      F[rsv[i]] = 0x80;
      assert_int_equal(check(), VSR_EFRAME_RESERVED);
      assert_int_equal(seal_check(), VSR_EFRAME_RESERVED);
    }
  }
}

static void test_commit_svc_rsv_rules(void **state) {
  (void)state;
  base(VSR_CMD_COMMIT);
  SET_SIZE(512);
  assert_int_equal(seal_check(), VSR_EFRAME_FIELD);
  static const uint8_t release_zero[] = {VSR_CMD_START_VIEW_CHANGE, VSR_CMD_REQUEST_START_VIEW};
  for (size_t i = 0; i < 2; i++) {
    base(release_zero[i]);
    PUT32(vsr_header, release, 1);
    assert_int_equal(seal_check(), VSR_EFRAME_FIELD);
    PUT32(vsr_header, release, 0);
    F[200] = 1; /* reserved areas of sealed control frames are covered by the seal only */
    assert_int_equal(seal_check(), 0);
  }
}

static void test_do_view_change_rules(void **state) {
  (void)state;
  base(VSR_CMD_DO_VIEW_CHANGE);
  PUT32(vsr_header, release, 1);
  assert_int_equal(seal_check(), VSR_EFRAME_FIELD);
  base(VSR_CMD_DO_VIEW_CHANGE);
  PUT32(vsr_header, view, 4);
  PUT32(vsr_do_view_change_header, log_view, 4);
  assert_int_equal(seal_check(), 0);
  PUT32(vsr_do_view_change_header, log_view, 5);
  assert_int_equal(seal_check(), VSR_EFRAME_FIELD);
  base(VSR_CMD_DO_VIEW_CHANGE);
  PUT64(vsr_do_view_change_header, op, 9);
  PUT64(vsr_do_view_change_header, commit, 9);
  assert_int_equal(seal_check(), 0);
  PUT64(vsr_do_view_change_header, commit, 10);
  assert_int_equal(seal_check(), VSR_EFRAME_FIELD);

  /* Suffix: whole headers, at most 128. */
  base(VSR_CMD_DO_VIEW_CHANGE);
  SET_SIZE(256 + 100);
  assert_int_equal(seal_check(), VSR_EFRAME_FIELD);
  SET_SIZE(256 + 129 * 256);
  assert_int_equal(seal_check(), VSR_EFRAME_FIELD);
  SET_SIZE(256 + 128 * 256);
  PUT128(vsr_do_view_change_header, nack_bitset, ~0ull, ~0ull);
  PUT128(vsr_do_view_change_header, present_bitset, ~0ull, ~0ull);
  assert_int_equal(seal_check(), 0);

  /* Bits at or above suffix_len are refused, in both bitsets and both halves. */
  static const struct {
    uint32_t n;
    unsigned bit;
    int rc;
  } cases[] = {{0, 0, VSR_EFRAME_FIELD}, {3, 2, 0},     {3, 3, VSR_EFRAME_FIELD},
               {3, 64, VSR_EFRAME_FIELD}, {64, 63, 0},  {64, 64, VSR_EFRAME_FIELD},
               {100, 99, 0},             {100, 100, VSR_EFRAME_FIELD}, {127, 126, 0},
               {127, 127, VSR_EFRAME_FIELD}, {128, 127, 0}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    for (int which = 0; which < 2; which++) {
      base(VSR_CMD_DO_VIEW_CHANGE);
      SET_SIZE(256 + cases[i].n * 256);
      size_t off = which ? offsetof(struct vsr_do_view_change_header, present_bitset)
                         : offsetof(struct vsr_do_view_change_header, nack_bitset);
      F[off + cases[i].bit / 8] = (uint8_t)(1u << (cases[i].bit % 8));
      assert_int_equal(seal_check(), cases[i].rc);
    }
  }
}

static void test_start_view_rules(void **state) {
  (void)state;
  base(VSR_CMD_START_VIEW);
  PUT32(vsr_header, release, 1);
  assert_int_equal(seal_check(), VSR_EFRAME_FIELD);
  base(VSR_CMD_START_VIEW);
  PUT64(vsr_start_view_header, op, 3);
  PUT64(vsr_start_view_header, commit, 4);
  assert_int_equal(seal_check(), VSR_EFRAME_FIELD);
  PUT64(vsr_start_view_header, commit, 3);
  PUT128(vsr_start_view_header, incarnation, 5, 5);
  SET_SIZE(256 + 2 * 256);
  assert_int_equal(seal_check(), 0);
  SET_SIZE(256 + 2 * 256 + 1);
  assert_int_equal(seal_check(), VSR_EFRAME_FIELD);
  SET_SIZE(256 + 129 * 256);
  assert_int_equal(seal_check(), VSR_EFRAME_FIELD);
}

static void test_handshake_header_only(void **state) {
  (void)state;
  for (uint8_t c = VSR_CMD_REPLICA_HELLO; c <= VSR_CMD_REPLICA_FINISH; c++) {
    base(c);
    memset(F + 128, 0xab, 65); /* nonce / mac / status live in reserved_command */
    assert_int_equal(check(), 0);
    SET_SIZE(257);
    assert_int_equal(check(), VSR_EFRAME_FIELD);
  }
}

static void test_repair_rules(void **state) {
  (void)state;
  base(VSR_CMD_REQUEST_PREPARES);
  PUT64(vsr_request_prepares_header, from_op, 0);
  PUT64(vsr_request_prepares_header, to_op, 0);
  assert_int_equal(seal_check(), VSR_EFRAME_FIELD);
  PUT64(vsr_request_prepares_header, from_op, 5);
  PUT64(vsr_request_prepares_header, to_op, 4);
  assert_int_equal(seal_check(), VSR_EFRAME_FIELD);
  PUT64(vsr_request_prepares_header, to_op, 5);
  assert_int_equal(seal_check(), 0);
  for (uint8_t c = VSR_CMD_REPAIR_DONE; c <= VSR_CMD_RANGE_EVICTED; c++) {
    base(c);
    SET_SIZE(1024);
    PUT64(vsr_repair_range_reply_header, op, 77);
    assert_int_equal(seal_check(), 0);
  }
}

static void test_state_transfer_rules(void **state) {
  (void)state;
  base(VSR_CMD_REQUEST_STATE_TRANSFER);
  SET_SIZE(512);
  assert_int_equal(seal_check(), VSR_EFRAME_FIELD);

  base(VSR_CMD_STATE_TRANSFER_TARGET);
  PUT8(vsr_state_transfer_target_header, available, 2);
  assert_int_equal(seal_check(), VSR_EFRAME_FIELD);
  PUT8(vsr_state_transfer_target_header, available, 0);
  PUT8(vsr_state_transfer_target_header, unavailable_transient, 2);
  assert_int_equal(seal_check(), VSR_EFRAME_FIELD);
  PUT8(vsr_state_transfer_target_header, unavailable_transient, 1);
  assert_int_equal(seal_check(), 0);
  PUT8(vsr_state_transfer_target_header, available, 1);
  assert_int_equal(seal_check(), VSR_EFRAME_FIELD);
  PUT8(vsr_state_transfer_target_header, unavailable_transient, 0);
  SET_SIZE(4096); /* an offer carries the manifest */
  assert_int_equal(seal_check(), 0);
  PUT8(vsr_state_transfer_target_header, available, 0);
  assert_int_equal(seal_check(), VSR_EFRAME_FIELD);

  base(VSR_CMD_REQUEST_STATE_CHUNK);
  PUT32(vsr_request_state_chunk_header, len, 0);
  assert_int_equal(seal_check(), VSR_EFRAME_FIELD);
  PUT32(vsr_request_state_chunk_header, len, 1);
  SET_SIZE(300);
  assert_int_equal(seal_check(), VSR_EFRAME_FIELD);

  base(VSR_CMD_STATE_CHUNK);
  SET_SIZE(MAX_SIZE);
  assert_int_equal(seal_check(), 0);
}

static void test_forward_rules(void **state) {
  (void)state;
  static const struct {
    uint8_t cmd;
    unsigned rsv_first;
  } fw[] = {{26, 164}, {27, 176}, {28, 176}, {29, 168}};
  for (size_t i = 0; i < 4; i++) {
    base(fw[i].cmd);
    F[100] = 1; /* reserved_frame is not checked on forward frames */
    assert_int_equal(seal_check(), 0);
    SET_SIZE(512);
    assert_int_equal(seal_check(), VSR_EFRAME_FIELD);
    base(fw[i].cmd);
    PUT128(vsr_header, reserved_command, 0, 0); /* the u128 at 128 */
    assert_int_equal(seal_check(), VSR_EFRAME_FIELD);
    base(fw[i].cmd);
    vsr_put_u128(F + 144, (vsr_u128){0, 0});
    assert_int_equal(seal_check(), VSR_EFRAME_FIELD);
    base(fw[i].cmd);
    F[fw[i].rsv_first] = 1;
    assert_int_equal(seal_check(), VSR_EFRAME_RESERVED);
    if (fw[i].cmd == VSR_CMD_FORWARD_REGISTER || fw[i].cmd == VSR_CMD_FORWARD_LOGOUT) {
      base(fw[i].cmd);
      F[255] = 1;
      assert_int_equal(seal_check(), VSR_EFRAME_RESERVED);
    }
  }
  base(VSR_CMD_FORWARD_LOGOUT);
  PUT64(vsr_forward_logout_header, session, 0);
  assert_int_equal(seal_check(), VSR_EFRAME_FIELD);
  base(VSR_CMD_FORWARD_LOGOUT);
  PUT64(vsr_forward_logout_header, request, 0);
  assert_int_equal(seal_check(), VSR_EFRAME_FIELD);
}

static void test_forward_result_outcomes(void **state) {
  (void)state;
  base(VSR_CMD_FORWARD_REGISTER_RESULT);
  PUT64(vsr_forward_register_result_header, epoch, 5);
  PUT64(vsr_forward_register_result_header, watermark, 6);
  assert_int_equal(seal_check(), 0); /* Ok carries the bind */
  PUT8(vsr_forward_register_result_header, outcome, VSR_FWD_REGISTER_NOT_PRIMARY);
  assert_int_equal(seal_check(), VSR_EFRAME_FIELD);
  PUT64(vsr_forward_register_result_header, epoch, 0);
  assert_int_equal(seal_check(), VSR_EFRAME_FIELD);
  PUT64(vsr_forward_register_result_header, watermark, 0);
  assert_int_equal(seal_check(), 0);
  PUT8(vsr_forward_register_result_header, outcome, VSR_FWD_REGISTER_MAX);
  assert_int_equal(seal_check(), 0);
  PUT8(vsr_forward_register_result_header, outcome, VSR_FWD_REGISTER_MAX + 1);
  assert_int_equal(seal_check(), VSR_EFRAME_ENUM);
  PUT8(vsr_forward_register_result_header, outcome, 255);
  assert_int_equal(seal_check(), VSR_EFRAME_ENUM);

  base(VSR_CMD_FORWARD_LOGOUT_RESULT);
  PUT64(vsr_forward_logout_result_header, commit, 9);
  assert_int_equal(seal_check(), 0);
  PUT8(vsr_forward_logout_result_header, outcome, VSR_FWD_LOGOUT_MAX);
  assert_int_equal(seal_check(), VSR_EFRAME_FIELD);
  PUT64(vsr_forward_logout_result_header, commit, 0);
  assert_int_equal(seal_check(), 0);
  PUT8(vsr_forward_logout_result_header, outcome, VSR_FWD_LOGOUT_MAX + 1);
  assert_int_equal(seal_check(), VSR_EFRAME_ENUM);
}

static void test_check_body(void **state) {
  (void)state;
  memset(F, 0, sizeof F);
  vsr_header_init(F, VSR_CMD_PREPARE, 256 + 1000);
  for (unsigned i = 0; i < 1000; i++) F[256 + i] = (uint8_t)(i * 7);
  assert_int_equal(vsr_frame_check_body(F, 1256, VSR_CHECK_BODY_VERIFY), 0); /* 0: unchecked */
  vsr_prepare_set_body_checksum(F);
  assert_int_equal(vsr_frame_check_body(F, 1256, VSR_CHECK_BODY_VERIFY), 0);
  F[1255] ^= 0xff;
  assert_int_equal(vsr_frame_check_body(F, 1256, VSR_CHECK_BODY_VERIFY),
                   VSR_EFRAME_BODY_CHECKSUM);
  PUT8(vsr_header, command, VSR_CMD_REPAIR_PREPARE);
  assert_int_equal(vsr_frame_check_body(F, 1256, VSR_CHECK_BODY_VERIFY),
                   VSR_EFRAME_BODY_CHECKSUM);
  PUT8(vsr_header, command, VSR_CMD_REQUEST); /* only Prepare bodies carry a checksum */
  assert_int_equal(vsr_frame_check_body(F, 1256, VSR_CHECK_BODY_VERIFY), 0);
  /* Empty body: XXH3 of nothing. */
  vsr_header_init(F, VSR_CMD_PREPARE, 256);
  vsr_prepare_set_body_checksum(F);
  assert_true(vsr_get_u64(F + 16) == 0x2d06800538d394c2u);
  assert_int_equal(vsr_frame_check_body(F, 256, VSR_CHECK_BODY_VERIFY), 0);
}

static void test_names(void **state) {
  (void)state;
  for (unsigned c = 0; c <= VSR_CMD_MAX; c++)
    assert_string_not_equal(vsr_command_name((uint8_t)c), "unknown");
  assert_string_equal(vsr_command_name(VSR_CMD_PREPARE), "Prepare");
  assert_string_equal(vsr_command_name(VSR_CMD_FORWARD_LOGOUT_RESULT), "ForwardLogoutResult");
  assert_string_equal(vsr_command_name(30), "unknown");
  assert_string_equal(vsr_command_name(255), "unknown");

  /* Every code of error.h has a name and a text; nothing else does. */
  static const int codes[] = {
      VSR_OK, VSR_EINVAL, VSR_ENOMEM, VSR_EPOOL, VSR_EBACKPRESSURE, VSR_ENOTCONN,
      VSR_ESHUTDOWN, VSR_ETIMEDOUT, VSR_EADDR, VSR_ECONFIG, VSR_EUNSUPPORTED, VSR_EDUPLICATE,
      VSR_ELIMIT, VSR_ECANCELED, VSR_EAGAIN, VSR_EADDRINUSE, VSR_EBIND, VSR_EMEMORY_BUDGET,
      VSR_EMEMORY_MAX, VSR_EFRAME_SMALL, VSR_EFRAME_LARGE,
      VSR_EFRAME_COMMAND, VSR_EFRAME_CHECKSUM, VSR_EFRAME_BODY_CHECKSUM, VSR_EFRAME_FIELD,
      VSR_EFRAME_RESERVED, VSR_EFRAME_ENUM, VSR_EFRAME_PLANE, VSR_EFRAME_PREAUTH, VSR_ECLOSED,
      VSR_EEOF_HEADER, VSR_EEOF_BODY, VSR_EIO, VSR_ERESET, VSR_EPROTO, VSR_EIDLE, VSR_EWRITE,
      VSR_ECONNREFUSED, VSR_EUNREACH, VSR_EFRAME_TIMEOUT, VSR_EAUTH, VSR_EAUTH_CLUSTER,
      VSR_EAUTH_DIRECTION, VSR_EAUTH_REQUIRED, VSR_EAUTH_COMMAND, VSR_EAUTH_STATUS,
      VSR_EHANDSHAKE_TIMEOUT, VSR_EHANDSHAKE, VSR_EALPN, VSR_ETLS, VSR_EQUIC, VSR_ESTREAM,
      VSR_ESLOW_PEER, VSR_EEVICTED};
  for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
    assert_string_not_equal(vsr_errname(codes[i]), "VSR_E?");
    assert_string_not_equal(vsr_strerror(codes[i]), "unknown error");
  }
  assert_string_equal(vsr_errname(VSR_EFRAME_LARGE), "VSR_EFRAME_LARGE");
  assert_string_equal(vsr_errname(-1000), "VSR_E?");
  assert_string_equal(vsr_strerror(7), "unknown error");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_layout_request_prepare),
      cmocka_unit_test(test_layout_control_views),
      cmocka_unit_test(test_xxh3_empty),
      cmocka_unit_test(test_vector_m1_ping),
      cmocka_unit_test(test_vector_m2_commit),
      cmocka_unit_test(test_vector_m3_commit_fields),
      cmocka_unit_test(test_vector_m4_prepare),
      cmocka_unit_test(test_command_sealed),
      cmocka_unit_test(test_seal_roundtrip_all),
      cmocka_unit_test(test_unsealed_ignore_checksum),
      cmocka_unit_test(test_prepare_identity),
      cmocka_unit_test(test_vector_m5_repair_prepare),
      cmocka_unit_test(test_repair_prepare_from_prepare),
      cmocka_unit_test(test_size_and_command),
      cmocka_unit_test(test_request_rules),
      cmocka_unit_test(test_operation_edges),
      cmocka_unit_test(test_reply_prepare_ok_rules),
      cmocka_unit_test(test_eviction_rules),
      cmocka_unit_test(test_prepare_rules),
      cmocka_unit_test(test_commit_svc_rsv_rules),
      cmocka_unit_test(test_do_view_change_rules),
      cmocka_unit_test(test_start_view_rules),
      cmocka_unit_test(test_handshake_header_only),
      cmocka_unit_test(test_repair_rules),
      cmocka_unit_test(test_state_transfer_rules),
      cmocka_unit_test(test_forward_rules),
      cmocka_unit_test(test_forward_result_outcomes),
      cmocka_unit_test(test_check_body),
      cmocka_unit_test(test_names),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
