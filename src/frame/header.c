/* Frame headers: names, XXH3 seals (spec/wire.md §M3) and the header validation of §M5.
 *
 * vsr_frame_check_header runs once per received frame: one switch on the command, then only
 * that command's rules, with fields read by memcpy at their offsetof (any buffer alignment). */
#include <xxhash.h>

#include "vsrbus/error.h"
#include "vsrbus/wire.h"

#define HDR_OFF(T, f) offsetof(struct T, f)
#define HDR_U32(h, T, f) vsr_get_u32((h) + HDR_OFF(T, f))
#define HDR_U64(h, T, f) vsr_get_u64((h) + HDR_OFF(T, f))
#define HDR_U128(h, T, f) vsr_get_u128((h) + HDR_OFF(T, f))
#define HDR_U8(h, T, f) ((h)[HDR_OFF(T, f)])
#define HDR_ZERO(h, T, f) hdr_zero((h) + HDR_OFF(T, f), sizeof(((struct T *)0)->f))

static const char *const hdr_command_names[VSR_CMD_MAX + 1] = {
    "Reserved",          "Ping",
    "Pong",              "PingClient",
    "PongClient",        "Request",
    "Prepare",           "PrepareOk",
    "Reply",             "Commit",
    "StartViewChange",   "DoViewChange",
    "StartView",         "Eviction",
    "ReplicaHello",      "ReplicaChallenge",
    "ReplicaFinish",     "RequestStartView",
    "RequestPrepares",   "RepairPrepare",
    "RepairDone",        "RangeEvicted",
    "RequestStateTransfer", "StateTransferTarget",
    "RequestStateChunk", "StateChunk",
    "ForwardRegister",   "ForwardRegisterResult",
    "ForwardLogout",     "ForwardLogoutResult",
};

/* Bit i set: command i is sealed (§M3). */
#define HDR_SEALED_MASK                                                                          \
  ((1u << VSR_CMD_PREPARE_OK) | (1u << VSR_CMD_COMMIT) | (1u << VSR_CMD_START_VIEW_CHANGE) |    \
   (1u << VSR_CMD_DO_VIEW_CHANGE) | (1u << VSR_CMD_START_VIEW) |                                 \
   (1u << VSR_CMD_REQUEST_START_VIEW) | (1u << VSR_CMD_REQUEST_PREPARES) |                       \
   (1u << VSR_CMD_REPAIR_DONE) | (1u << VSR_CMD_RANGE_EVICTED) |                                 \
   (1u << VSR_CMD_REQUEST_STATE_TRANSFER) | (1u << VSR_CMD_STATE_TRANSFER_TARGET) |              \
   (1u << VSR_CMD_REQUEST_STATE_CHUNK) | (1u << VSR_CMD_STATE_CHUNK) |                           \
   (1u << VSR_CMD_FORWARD_REGISTER) | (1u << VSR_CMD_FORWARD_REGISTER_RESULT) |                  \
   (1u << VSR_CMD_FORWARD_LOGOUT) | (1u << VSR_CMD_FORWARD_LOGOUT_RESULT))

const char *vsr_command_name(uint8_t cmd) {
  return cmd <= VSR_CMD_MAX ? hdr_command_names[cmd] : "unknown";
}

const char *vsr_operation_name(uint8_t op) {
  switch (op) {
  case VSR_OP_RESERVED: return "Reserved";
  case VSR_OP_REGISTER: return "Register";
  case VSR_OP_NON_REPLICATED: return "NonReplicated";
  case VSR_OP_LOGOUT: return "Logout";
  case VSR_OP_CREATE_TOPIC_WITH_ASSIGNMENTS: return "CreateTopicWithAssignments";
  case VSR_OP_CREATE_PARTITIONS_WITH_ASSIGNMENTS: return "CreatePartitionsWithAssignments";
  case VSR_OP_REMOVE_CONSUMER_GROUP_MEMBER: return "RemoveConsumerGroupMember";
  case VSR_OP_COMPLETE_CONSUMER_GROUP_REVOCATION: return "CompleteConsumerGroupRevocation";
  case VSR_OP_TRUNCATE_PARTITION: return "TruncatePartition";
  case VSR_OP_CREATE_STREAM: return "CreateStream";
  case VSR_OP_UPDATE_STREAM: return "UpdateStream";
  case VSR_OP_DELETE_STREAM: return "DeleteStream";
  case VSR_OP_PURGE_STREAM: return "PurgeStream";
  case VSR_OP_CREATE_TOPIC: return "CreateTopic";
  case VSR_OP_UPDATE_TOPIC: return "UpdateTopic";
  case VSR_OP_DELETE_TOPIC: return "DeleteTopic";
  case VSR_OP_PURGE_TOPIC: return "PurgeTopic";
  case VSR_OP_CREATE_PARTITIONS: return "CreatePartitions";
  case VSR_OP_DELETE_PARTITIONS: return "DeletePartitions";
  case VSR_OP_DELETE_SEGMENTS: return "DeleteSegments";
  case VSR_OP_CREATE_CONSUMER_GROUP: return "CreateConsumerGroup";
  case VSR_OP_DELETE_CONSUMER_GROUP: return "DeleteConsumerGroup";
  case VSR_OP_CREATE_USER: return "CreateUser";
  case VSR_OP_UPDATE_USER: return "UpdateUser";
  case VSR_OP_DELETE_USER: return "DeleteUser";
  case VSR_OP_CHANGE_PASSWORD: return "ChangePassword";
  case VSR_OP_UPDATE_PERMISSIONS: return "UpdatePermissions";
  case VSR_OP_CREATE_PERSONAL_ACCESS_TOKEN: return "CreatePersonalAccessToken";
  case VSR_OP_DELETE_PERSONAL_ACCESS_TOKEN: return "DeletePersonalAccessToken";
  case VSR_OP_JOIN_CONSUMER_GROUP: return "JoinConsumerGroup";
  case VSR_OP_LEAVE_CONSUMER_GROUP: return "LeaveConsumerGroup";
  case VSR_OP_SEND_MESSAGES: return "SendMessages";
  case VSR_OP_STORE_CONSUMER_OFFSET: return "StoreConsumerOffset";
  case VSR_OP_DELETE_CONSUMER_OFFSET: return "DeleteConsumerOffset";
  default: return "unknown";
  }
}

bool vsr_command_sealed(uint8_t cmd) {
  return cmd <= VSR_CMD_MAX && ((HDR_SEALED_MASK >> cmd) & 1u);
}

uint64_t vsr_xxh3(const void *p, size_t n) { return XXH3_64bits(p, n); }

uint64_t vsr_frame_checksum(const uint8_t *hdr) {
  return XXH3_64bits(hdr + 16, VSR_HEADER_SIZE - 16);
}

uint64_t vsr_prepare_identity(const uint8_t *hdr) {
  /* The reference hashes a copy with both fields zeroed; so do we (256 bytes, on the stack).
   * A RepairPrepare is a stored Prepare with only the command byte rewritten to 19, and the
   * receiver turns it back into a Prepare before verifying: its identity is the Prepare's, so
   * command 19 is hashed as 6 (§M3, vector M-5). */
  uint8_t covered[VSR_HEADER_SIZE];
  memcpy(covered, hdr, VSR_HEADER_SIZE);
  memset(covered, 0, 16);
  memset(covered + offsetof(struct vsr_header, view), 0, 4);
  if (covered[offsetof(struct vsr_header, command)] == VSR_CMD_REPAIR_PREPARE)
    covered[offsetof(struct vsr_header, command)] = VSR_CMD_PREPARE;
  return XXH3_64bits(covered, VSR_HEADER_SIZE);
}

void vsr_header_init(void *hdr, uint8_t command, uint32_t size) {
  uint8_t *h = hdr;
  memset(h, 0, VSR_HEADER_SIZE);
  h[offsetof(struct vsr_header, command)] = command;
  vsr_put_u32(h + VSR_SIZE_FIELD_OFFSET, size);
}

void vsr_frame_seal(uint8_t *frame) {
  uint8_t cmd = vsr_hdr_command(frame);
  if (vsr_command_sealed(cmd)) {
    vsr_put_u128(frame, vsr_u128_from_u64(vsr_frame_checksum(frame)));
  } else if (cmd == VSR_CMD_PREPARE || cmd == VSR_CMD_REPAIR_PREPARE) {
    vsr_put_u128(frame, vsr_u128_from_u64(vsr_prepare_identity(frame)));
  }
}

void vsr_prepare_set_body_checksum(uint8_t *frame) {
  uint32_t size = vsr_hdr_size(frame);
  size_t body = size > VSR_HEADER_SIZE ? size - VSR_HEADER_SIZE : 0;
  uint64_t h = XXH3_64bits(frame + VSR_HEADER_SIZE, body);
  vsr_put_u128(frame + offsetof(struct vsr_header, checksum_body), vsr_u128_from_u64(h));
}

/* ---- validation ---------------------------------------------------------------------------- */

static bool hdr_zero(const uint8_t *p, size_t n) {
  uint8_t acc = 0;
  for (size_t i = 0; i < n; i++) acc |= p[i];
  return acc == 0;
}

static bool hdr_u128_nonzero(const uint8_t *p) { return !vsr_u128_is_zero(vsr_get_u128(p)); }

static int hdr_check_seal(const uint8_t *h) {
  vsr_u128 c = vsr_get_u128(h);
  return (c.hi == 0 && c.lo == vsr_frame_checksum(h)) ? 0 : VSR_EFRAME_CHECKSUM;
}

/* Request and RoutedRequest (validate_request_fields). */
static int hdr_check_request(const uint8_t *h) {
  uint8_t op = HDR_U8(h, vsr_request_header, operation);
  if (!vsr_operation_defined(op)) return VSR_EFRAME_ENUM;
  if (!hdr_u128_nonzero(h + HDR_OFF(vsr_request_header, client))) return VSR_EFRAME_FIELD;
  if (op == VSR_OP_RESERVED) return VSR_EFRAME_FIELD;
  uint64_t session = HDR_U64(h, vsr_request_header, session);
  uint64_t request = HDR_U64(h, vsr_request_header, request);
  if (op == VSR_OP_REGISTER) {
    if (session != 0 || request != 0) return VSR_EFRAME_FIELD;
  } else if (op != VSR_OP_NON_REPLICATED) {
    if (session == 0 || request == 0) return VSR_EFRAME_FIELD;
  }
  return 0;
}

/* Prepare and RepairPrepare: identity checksum (when stamped), operation, reserved bytes. */
static int hdr_check_prepare(const uint8_t *h) {
  vsr_u128 c = vsr_get_u128(h);
  if (!vsr_u128_is_zero(c) && (c.hi != 0 || c.lo != vsr_prepare_identity(h)))
    return VSR_EFRAME_CHECKSUM;
  if (!vsr_operation_defined(HDR_U8(h, vsr_prepare_header, operation))) return VSR_EFRAME_ENUM;
  if (!HDR_ZERO(h, vsr_prepare_header, reserved_frame)) return VSR_EFRAME_RESERVED;
  if (!HDR_ZERO(h, vsr_prepare_header, reserved)) return VSR_EFRAME_RESERVED;
  return 0;
}

static int hdr_check_eviction(const uint8_t *h, uint32_t size) {
  uint8_t reason = HDR_U8(h, vsr_eviction_header, reason);
  if (reason > VSR_EVICT_MAX) return VSR_EFRAME_ENUM;
  if (size != VSR_HEADER_SIZE) return VSR_EFRAME_FIELD;
  if (!hdr_u128_nonzero(h + HDR_OFF(vsr_eviction_header, client))) return VSR_EFRAME_FIELD;
  if (!HDR_ZERO(h, vsr_eviction_header, reserved_frame)) return VSR_EFRAME_RESERVED;
  if (!HDR_ZERO(h, vsr_eviction_header, reserved)) return VSR_EFRAME_RESERVED;
  if (reason == VSR_EVICT_RESERVED) return VSR_EFRAME_FIELD;
  uint32_t ver = HDR_U32(h, vsr_eviction_header, server_protocol_version);
  uint32_t ver_min = HDR_U32(h, vsr_eviction_header, server_protocol_version_min);
  if (reason == VSR_EVICT_INCOMPATIBLE_PROTOCOL) {
    if (ver_min == 0 || ver < ver_min) return VSR_EFRAME_FIELD;
  } else if (ver != 0 || ver_min != 0) {
    return VSR_EFRAME_FIELD;
  }
  return 0;
}

/* suffix_len_of: the body is a whole number (<= 128) of 256-byte headers; returns it or -1. */
static int hdr_suffix_len(uint32_t size) {
  uint32_t body = size - VSR_HEADER_SIZE; /* size >= 256 was checked first */
  if (body % VSR_HEADER_SIZE != 0) return -1;
  uint32_t n = body / VSR_HEADER_SIZE;
  return n <= VSR_DVC_HEADERS_MAX ? (int)n : -1;
}

/* True when a bit at or above |n| (< 128) is set in the u128 at |p|. */
static bool hdr_bits_from(const uint8_t *p, unsigned n) {
  vsr_u128 v = vsr_get_u128(p);
  if (n >= 64) return (v.hi >> (n - 64)) != 0;
  return (v.lo >> n) != 0 || v.hi != 0;
}

static int hdr_check_dvc(const uint8_t *h, uint32_t size) {
  if (HDR_U32(h, vsr_do_view_change_header, release) != 0) return VSR_EFRAME_FIELD;
  if (HDR_U32(h, vsr_do_view_change_header, log_view) > HDR_U32(h, vsr_do_view_change_header, view))
    return VSR_EFRAME_FIELD;
  if (HDR_U64(h, vsr_do_view_change_header, commit) > HDR_U64(h, vsr_do_view_change_header, op))
    return VSR_EFRAME_FIELD;
  int n = hdr_suffix_len(size);
  if (n < 0) return VSR_EFRAME_FIELD;
  if ((unsigned)n < VSR_DVC_HEADERS_MAX &&
      (hdr_bits_from(h + HDR_OFF(vsr_do_view_change_header, nack_bitset), (unsigned)n) ||
       hdr_bits_from(h + HDR_OFF(vsr_do_view_change_header, present_bitset), (unsigned)n)))
    return VSR_EFRAME_FIELD;
  return 0;
}

static int hdr_check_start_view(const uint8_t *h, uint32_t size) {
  if (HDR_U32(h, vsr_start_view_header, release) != 0) return VSR_EFRAME_FIELD;
  if (HDR_U64(h, vsr_start_view_header, commit) > HDR_U64(h, vsr_start_view_header, op))
    return VSR_EFRAME_FIELD;
  return hdr_suffix_len(size) < 0 ? VSR_EFRAME_FIELD : 0;
}

static int hdr_check_state_target(const uint8_t *h, uint32_t size) {
  uint8_t avail = HDR_U8(h, vsr_state_transfer_target_header, available);
  uint8_t transient = HDR_U8(h, vsr_state_transfer_target_header, unavailable_transient);
  if (avail > 1 || transient > 1) return VSR_EFRAME_FIELD;
  if (avail == 1 && transient == 1) return VSR_EFRAME_FIELD;
  if (avail == 0 && size != VSR_HEADER_SIZE) return VSR_EFRAME_FIELD;
  return 0;
}

/* validate_forward_frame: header-only, client and nonce set, reserved zero. Every forward
 * header starts with {client, nonce} or {nonce, client} at 128 / 144, so the pair is tested
 * without caring which is which. */
static int hdr_check_forward(const uint8_t *h, uint32_t size, const uint8_t *rsv, size_t rsv_n) {
  if (size != VSR_HEADER_SIZE) return VSR_EFRAME_FIELD;
  if (!hdr_u128_nonzero(h + 128) || !hdr_u128_nonzero(h + 144)) return VSR_EFRAME_FIELD;
  if (!hdr_zero(rsv, rsv_n)) return VSR_EFRAME_RESERVED;
  return 0;
}

#define HDR_FWD(h, size, T) hdr_check_forward(h, size, (h) + HDR_OFF(T, reserved),               \
                                              sizeof(((struct T *)0)->reserved))

static int hdr_check_forward_cmd(const uint8_t *h, uint8_t cmd, uint32_t size) {
  int rc;
  switch (cmd) {
  case VSR_CMD_FORWARD_REGISTER: return HDR_FWD(h, size, vsr_forward_register_header);
  case VSR_CMD_FORWARD_REGISTER_RESULT: {
    uint8_t outcome = HDR_U8(h, vsr_forward_register_result_header, outcome);
    if (outcome > VSR_FWD_REGISTER_MAX) return VSR_EFRAME_ENUM;
    if ((rc = HDR_FWD(h, size, vsr_forward_register_result_header)) != 0) return rc;
    if (outcome != VSR_FWD_REGISTER_OK &&
        (HDR_U64(h, vsr_forward_register_result_header, epoch) != 0 ||
         HDR_U64(h, vsr_forward_register_result_header, watermark) != 0))
      return VSR_EFRAME_FIELD;
    return 0;
  }
  case VSR_CMD_FORWARD_LOGOUT:
    if ((rc = HDR_FWD(h, size, vsr_forward_logout_header)) != 0) return rc;
    if (HDR_U64(h, vsr_forward_logout_header, session) == 0 ||
        HDR_U64(h, vsr_forward_logout_header, request) == 0)
      return VSR_EFRAME_FIELD;
    return 0;
  default: { /* VSR_CMD_FORWARD_LOGOUT_RESULT */
    uint8_t outcome = HDR_U8(h, vsr_forward_logout_result_header, outcome);
    if (outcome > VSR_FWD_LOGOUT_MAX) return VSR_EFRAME_ENUM;
    if ((rc = HDR_FWD(h, size, vsr_forward_logout_result_header)) != 0) return rc;
    if (outcome != VSR_FWD_LOGOUT_OK && HDR_U64(h, vsr_forward_logout_result_header, commit) != 0)
      return VSR_EFRAME_FIELD;
    return 0;
  }
  }
}

/* The sealed control commands other than the forward family. */
static int hdr_check_control(const uint8_t *h, uint8_t cmd, uint32_t size) {
  switch (cmd) {
  case VSR_CMD_PREPARE_OK:
    return vsr_operation_defined(HDR_U8(h, vsr_prepare_ok_header, operation)) ? 0
                                                                               : VSR_EFRAME_ENUM;
  case VSR_CMD_COMMIT:
  case VSR_CMD_REQUEST_STATE_TRANSFER: return size == VSR_HEADER_SIZE ? 0 : VSR_EFRAME_FIELD;
  case VSR_CMD_START_VIEW_CHANGE:
  case VSR_CMD_REQUEST_START_VIEW:
    return HDR_U32(h, vsr_header, release) == 0 ? 0 : VSR_EFRAME_FIELD;
  case VSR_CMD_DO_VIEW_CHANGE: return hdr_check_dvc(h, size);
  case VSR_CMD_START_VIEW: return hdr_check_start_view(h, size);
  case VSR_CMD_REQUEST_PREPARES: {
    uint64_t from = HDR_U64(h, vsr_request_prepares_header, from_op);
    uint64_t to = HDR_U64(h, vsr_request_prepares_header, to_op);
    return (from == 0 || from > to) ? VSR_EFRAME_FIELD : 0;
  }
  case VSR_CMD_STATE_TRANSFER_TARGET: return hdr_check_state_target(h, size);
  case VSR_CMD_REQUEST_STATE_CHUNK:
    if (HDR_U32(h, vsr_request_state_chunk_header, len) == 0) return VSR_EFRAME_FIELD;
    return size == VSR_HEADER_SIZE ? 0 : VSR_EFRAME_FIELD;
  case VSR_CMD_FORWARD_REGISTER:
  case VSR_CMD_FORWARD_REGISTER_RESULT:
  case VSR_CMD_FORWARD_LOGOUT:
  case VSR_CMD_FORWARD_LOGOUT_RESULT: return hdr_check_forward_cmd(h, cmd, size);
  default: return 0; /* RepairDone, RangeEvicted: command only; StateChunk: size >= 256 */
  }
}

int vsr_frame_check_header(const uint8_t hdr[256], uint32_t max_size) {
  uint32_t size = vsr_hdr_size(hdr);
  if (size < VSR_HEADER_SIZE) return VSR_EFRAME_SMALL;
  if (size > max_size) return VSR_EFRAME_LARGE;
  uint8_t cmd = vsr_hdr_command(hdr);
  switch (cmd) {
  case VSR_CMD_REQUEST: return hdr_check_request(hdr);
  case VSR_CMD_PREPARE:
  case VSR_CMD_REPAIR_PREPARE: return hdr_check_prepare(hdr);
  case VSR_CMD_REPLY:
    return vsr_operation_defined(HDR_U8(hdr, vsr_reply_header, operation)) ? 0 : VSR_EFRAME_ENUM;
  case VSR_CMD_EVICTION: return hdr_check_eviction(hdr, size);
  case VSR_CMD_RESERVED:
  case VSR_CMD_PING:
  case VSR_CMD_PONG:
  case VSR_CMD_PING_CLIENT:
  case VSR_CMD_PONG_CLIENT: return 0; /* generic: nothing to validate */
  case VSR_CMD_REPLICA_HELLO:
  case VSR_CMD_REPLICA_CHALLENGE:
  case VSR_CMD_REPLICA_FINISH: return size == VSR_HEADER_SIZE ? 0 : VSR_EFRAME_FIELD;
  default:
    if (cmd > VSR_CMD_MAX) return VSR_EFRAME_COMMAND;
    /* Every remaining command is sealed: nothing is believed before the seal matches. */
    if (hdr_check_seal(hdr) != 0) return VSR_EFRAME_CHECKSUM;
    return hdr_check_control(hdr, cmd, size);
  }
}

int vsr_frame_check_body(const uint8_t *frame, uint32_t size, uint32_t flags) {
  if (!(flags & VSR_CHECK_BODY_VERIFY)) return 0;
  uint8_t cmd = vsr_hdr_command(frame);
  if (cmd != VSR_CMD_PREPARE && cmd != VSR_CMD_REPAIR_PREPARE) return 0;
  vsr_u128 want = vsr_get_u128(frame + offsetof(struct vsr_header, checksum_body));
  if (vsr_u128_is_zero(want)) return 0; /* partition prepares: 0 means "not checked" */
  size_t body = size > VSR_HEADER_SIZE ? size - VSR_HEADER_SIZE : 0;
  uint64_t got = XXH3_64bits(frame + VSR_HEADER_SIZE, body);
  return (want.hi == 0 && want.lo == got) ? 0 : VSR_EFRAME_BODY_CHECKSUM;
}
