/* Wire format of the consensus bus (Iggy mainline R-M, spec/wire.md Part M): the 256-byte
 * generic header, every command-specific header view of §M4, the command / operation / enum
 * codes, XXH3 seals (§M3) and header validation (§M5).
 *
 * The structs document the layout and are checked field by field at compile time. To read a
 * received header, copy it into a struct with memcpy, or read single fields with the
 * vsr_get_* helpers at offsetof(struct ..., field): never cast an unaligned receive buffer. */
#ifndef VSRBUS_WIRE_H
#define VSRBUS_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#define VSR_STATIC_ASSERT static_assert
#else
#define VSR_STATIC_ASSERT _Static_assert
#endif

/* The structs mirror Rust #[repr(C)] casts: they are the wire only on a little-endian host. */
VSR_STATIC_ASSERT(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "vsrbus needs a little-endian host");

#define VSR_HEADER_SIZE 256u
#define VSR_SIZE_FIELD_OFFSET 48
#define VSR_RESERVED_COMMAND_LEN 128u
#define VSR_MAX_MESSAGE_SIZE_DEFAULT (64u * 1024u * 1024u)
#define VSR_DVC_HEADERS_MAX 128u /* suffix headers a DoViewChange / StartView may carry */

/* u128 as two LE halves: bytes 0..8 are |lo|. */
typedef struct {
  uint64_t lo, hi;
} vsr_u128;

/* ---- commands (§M2) ---------------------------------------------------------------------- */

enum vsr_command {
  VSR_CMD_RESERVED = 0,
  VSR_CMD_PING = 1,
  VSR_CMD_PONG = 2,
  VSR_CMD_PING_CLIENT = 3,
  VSR_CMD_PONG_CLIENT = 4,
  VSR_CMD_REQUEST = 5,
  VSR_CMD_PREPARE = 6,
  VSR_CMD_PREPARE_OK = 7,
  VSR_CMD_REPLY = 8,
  VSR_CMD_COMMIT = 9,
  VSR_CMD_START_VIEW_CHANGE = 10,
  VSR_CMD_DO_VIEW_CHANGE = 11,
  VSR_CMD_START_VIEW = 12,
  VSR_CMD_EVICTION = 13,
  VSR_CMD_REPLICA_HELLO = 14,
  VSR_CMD_REPLICA_CHALLENGE = 15,
  VSR_CMD_REPLICA_FINISH = 16,
  VSR_CMD_REQUEST_START_VIEW = 17,
  VSR_CMD_REQUEST_PREPARES = 18,
  VSR_CMD_REPAIR_PREPARE = 19,
  VSR_CMD_REPAIR_DONE = 20,
  VSR_CMD_RANGE_EVICTED = 21,
  VSR_CMD_REQUEST_STATE_TRANSFER = 22,
  VSR_CMD_STATE_TRANSFER_TARGET = 23,
  VSR_CMD_REQUEST_STATE_CHUNK = 24,
  VSR_CMD_STATE_CHUNK = 25,
  VSR_CMD_FORWARD_REGISTER = 26,
  VSR_CMD_FORWARD_REGISTER_RESULT = 27,
  VSR_CMD_FORWARD_LOGOUT = 28,
  VSR_CMD_FORWARD_LOGOUT_RESULT = 29,
  VSR_CMD_MAX = 29,
};

/* ---- operations (§5 + §M6) ----------------------------------------------------------------- */

enum vsr_operation {
  VSR_OP_RESERVED = 0,
  VSR_OP_REGISTER = 1,
  VSR_OP_NON_REPLICATED = 2,
  VSR_OP_LOGOUT = 3,
  VSR_OP_CREATE_TOPIC_WITH_ASSIGNMENTS = 64,
  VSR_OP_CREATE_PARTITIONS_WITH_ASSIGNMENTS = 65,
  VSR_OP_REMOVE_CONSUMER_GROUP_MEMBER = 66,
  VSR_OP_COMPLETE_CONSUMER_GROUP_REVOCATION = 67,
  VSR_OP_TRUNCATE_PARTITION = 68,
  VSR_OP_CREATE_STREAM = 128,
  VSR_OP_UPDATE_STREAM = 129,
  VSR_OP_DELETE_STREAM = 130,
  VSR_OP_PURGE_STREAM = 131,
  VSR_OP_CREATE_TOPIC = 132,
  VSR_OP_UPDATE_TOPIC = 133,
  VSR_OP_DELETE_TOPIC = 134,
  VSR_OP_PURGE_TOPIC = 135,
  VSR_OP_CREATE_PARTITIONS = 136,
  VSR_OP_DELETE_PARTITIONS = 137,
  VSR_OP_DELETE_SEGMENTS = 138,
  VSR_OP_CREATE_CONSUMER_GROUP = 139,
  VSR_OP_DELETE_CONSUMER_GROUP = 140,
  VSR_OP_CREATE_USER = 141,
  VSR_OP_UPDATE_USER = 142,
  VSR_OP_DELETE_USER = 143,
  VSR_OP_CHANGE_PASSWORD = 144,
  VSR_OP_UPDATE_PERMISSIONS = 145,
  VSR_OP_CREATE_PERSONAL_ACCESS_TOKEN = 146,
  VSR_OP_DELETE_PERSONAL_ACCESS_TOKEN = 147,
  VSR_OP_JOIN_CONSUMER_GROUP = 148,
  VSR_OP_LEAVE_CONSUMER_GROUP = 149,
  VSR_OP_SEND_MESSAGES = 160,
  VSR_OP_STORE_CONSUMER_OFFSET = 161,
  VSR_OP_DELETE_CONSUMER_OFFSET = 162,
};

/* Eviction.reason (@255). Reserved is a defined byte that validation rejects. */
enum vsr_eviction_reason {
  VSR_EVICT_RESERVED = 0,
  VSR_EVICT_NO_SESSION = 1,
  VSR_EVICT_CLIENT_RELEASE_TOO_LOW = 2,
  VSR_EVICT_CLIENT_RELEASE_TOO_HIGH = 3,
  VSR_EVICT_INVALID_REQUEST_OPERATION = 4,
  VSR_EVICT_INVALID_REQUEST_BODY = 5,
  VSR_EVICT_INVALID_REQUEST_BODY_SIZE = 6,
  VSR_EVICT_SESSION_TOO_LOW = 7,
  VSR_EVICT_SESSION_RELEASE_MISMATCH = 8,
  VSR_EVICT_INVALID_CREDENTIALS = 9,
  VSR_EVICT_INVALID_TOKEN = 10,
  VSR_EVICT_USER_INACTIVE = 11,
  VSR_EVICT_SESSION_ERROR = 12,
  VSR_EVICT_STALE_CLIENT = 13,
  VSR_EVICT_INCOMPATIBLE_PROTOCOL = 14,
  VSR_EVICT_MALFORMED_LOGIN = 15,
  VSR_EVICT_MAX = 15,
};

/* ForwardRegisterResult.outcome (@255). */
enum vsr_forward_register_outcome {
  VSR_FWD_REGISTER_OK = 0,
  VSR_FWD_REGISTER_NOT_PRIMARY = 1,
  VSR_FWD_REGISTER_NOT_CAUGHT_UP = 2,
  VSR_FWD_REGISTER_PIPELINE_FULL = 3,
  VSR_FWD_REGISTER_IN_PROGRESS = 4,
  VSR_FWD_REGISTER_CANCELED = 5,
  VSR_FWD_REGISTER_CLIENT_ID_OWNED_BY_ANOTHER_USER = 6,
  VSR_FWD_REGISTER_MAX = 6,
};

/* ForwardLogoutResult.outcome (@255). */
enum vsr_forward_logout_outcome {
  VSR_FWD_LOGOUT_OK = 0,
  VSR_FWD_LOGOUT_NOT_PRIMARY = 1,
  VSR_FWD_LOGOUT_PIPELINE_FULL = 2,
  VSR_FWD_LOGOUT_IN_PROGRESS = 3,
  VSR_FWD_LOGOUT_CANCELED = 4,
  VSR_FWD_LOGOUT_MAX = 4,
};

/* ---- header layouts (§1, §M4) -------------------------------------------------------------- */

/* Bytes 0..128, shared by every header. */
#define VSR_HEADER_FRAME_FIELDS_                                                                 \
  vsr_u128 checksum;      /* @0   seal / Prepare identity (§M3) */                               \
  vsr_u128 checksum_body; /* @16  Prepare body XXH3, else 0 */                                   \
  vsr_u128 cluster;       /* @32 */                                                              \
  uint32_t size;          /* @48  header + body bytes */                                         \
  uint32_t view;          /* @52 */                                                              \
  uint32_t release;       /* @56 */                                                              \
  uint8_t command;        /* @60  enum vsr_command */                                            \
  uint8_t replica;        /* @61 */                                                              \
  uint8_t reserved_frame[66] /* @62 */

struct vsr_header { /* generic; also Ping..PongClient and ReplicaHello/Challenge/Finish */
  VSR_HEADER_FRAME_FIELDS_;
  uint8_t reserved_command[128]; /* @128 */
};

struct vsr_request_header { /* 5, client wire */
  VSR_HEADER_FRAME_FIELDS_;
  vsr_u128 client;
  vsr_u128 request_checksum;
  uint64_t timestamp;
  uint64_t request;
  uint8_t operation; /* enum vsr_operation */
  uint8_t operation_padding[7];
  uint64_t session;
  uint32_t user_id;
  uint8_t reserved[60];
};

struct vsr_routed_request_header { /* 5, replica-internal hop: group in the reserved tail */
  VSR_HEADER_FRAME_FIELDS_;
  vsr_u128 client;
  vsr_u128 request_checksum;
  uint64_t timestamp;
  uint64_t request;
  uint8_t operation;
  uint8_t operation_padding[7];
  uint64_t session;
  uint32_t user_id;
  uint8_t reserved[52];
  uint64_t group;
};

struct vsr_reply_header { /* 8 */
  VSR_HEADER_FRAME_FIELDS_;
  vsr_u128 request_checksum;
  vsr_u128 context;
  vsr_u128 client;
  uint64_t op;
  uint64_t commit;
  uint64_t timestamp;
  uint64_t request;
  uint8_t operation;
  uint8_t operation_padding[7];
  uint32_t status;
  uint8_t reserved[36];
};

struct vsr_eviction_header { /* 13 */
  VSR_HEADER_FRAME_FIELDS_;
  vsr_u128 client;
  uint32_t server_protocol_version;
  uint32_t server_protocol_version_min;
  uint8_t reserved[103];
  uint8_t reason; /* enum vsr_eviction_reason */
};

struct vsr_prepare_header { /* 6 Prepare and 19 RepairPrepare */
  VSR_HEADER_FRAME_FIELDS_;
  vsr_u128 client;
  vsr_u128 parent;
  vsr_u128 request_checksum;
  uint64_t op;
  uint64_t commit;
  uint64_t timestamp;
  uint64_t request;
  uint8_t operation;
  uint8_t operation_padding[7];
  uint64_t group;
  uint32_t user_id;
  uint8_t reserved[28];
};

struct vsr_prepare_ok_header { /* 7 */
  VSR_HEADER_FRAME_FIELDS_;
  vsr_u128 parent;
  vsr_u128 prepare_checksum;
  uint64_t op;
  uint64_t commit;
  uint64_t timestamp;
  uint64_t request;
  uint8_t operation;
  uint8_t operation_padding[7];
  uint64_t group;
  uint8_t reserved[48];
};

struct vsr_commit_header { /* 9 */
  VSR_HEADER_FRAME_FIELDS_;
  vsr_u128 commit_checksum;
  uint64_t timestamp_monotonic;
  uint64_t commit;
  uint64_t checkpoint_op;
  uint64_t group;
  uint8_t reserved[80];
};

struct vsr_start_view_change_header { /* 10 */
  VSR_HEADER_FRAME_FIELDS_;
  uint64_t group;
  uint8_t reserved[120];
};

struct vsr_do_view_change_header { /* 11; body = suffix of 256-byte Prepare headers */
  VSR_HEADER_FRAME_FIELDS_;
  uint64_t op;
  uint64_t commit;
  uint64_t group;
  uint32_t log_view;
  uint8_t reserved[68];
  vsr_u128 nack_bitset;
  vsr_u128 present_bitset;
};

struct vsr_start_view_header { /* 12; body = suffix of Prepare headers */
  VSR_HEADER_FRAME_FIELDS_;
  uint64_t op;
  uint64_t commit;
  uint64_t group;
  uint8_t reserved[88];
  vsr_u128 incarnation;
};

struct vsr_request_start_view_header { /* 17 */
  VSR_HEADER_FRAME_FIELDS_;
  uint64_t group;
  uint8_t reserved[104];
  vsr_u128 incarnation;
};

struct vsr_request_prepares_header { /* 18 */
  VSR_HEADER_FRAME_FIELDS_;
  vsr_u128 nonce;
  uint64_t from_op;
  uint64_t to_op;
  uint64_t group;
  uint8_t reserved[88];
};

struct vsr_repair_range_reply_header { /* 20 RepairDone and 21 RangeEvicted */
  VSR_HEADER_FRAME_FIELDS_;
  vsr_u128 nonce;
  uint64_t op;
  uint64_t group;
  uint8_t reserved[96];
};

struct vsr_request_state_transfer_header { /* 22 */
  VSR_HEADER_FRAME_FIELDS_;
  vsr_u128 nonce;
  uint64_t group;
  uint8_t reserved[104];
};

struct vsr_state_transfer_target_header { /* 23 */
  VSR_HEADER_FRAME_FIELDS_;
  vsr_u128 nonce;
  uint64_t commit_op;
  uint64_t group;
  uint8_t available;             /* 0 or 1 */
  uint8_t unavailable_transient; /* 0 or 1 */
  uint8_t reserved_alignment[6];
  uint64_t commit_max;
  uint8_t reserved[80];
};

struct vsr_request_state_chunk_header { /* 24 */
  VSR_HEADER_FRAME_FIELDS_;
  vsr_u128 nonce;
  uint64_t offset;
  uint64_t group;
  uint32_t len;
  uint32_t artifact;
  uint8_t reserved[88];
};

struct vsr_state_chunk_header { /* 25 */
  VSR_HEADER_FRAME_FIELDS_;
  vsr_u128 nonce;
  uint64_t offset;
  uint64_t group;
  uint32_t artifact;
  uint8_t reserved[92];
};

struct vsr_forward_register_header { /* 26 */
  VSR_HEADER_FRAME_FIELDS_;
  vsr_u128 client;
  vsr_u128 nonce;
  uint32_t user_id;
  uint8_t reserved[92];
};

struct vsr_forward_register_result_header { /* 27 */
  VSR_HEADER_FRAME_FIELDS_;
  vsr_u128 nonce;
  vsr_u128 client;
  uint64_t epoch;
  uint64_t watermark;
  uint8_t reserved[79];
  uint8_t outcome; /* enum vsr_forward_register_outcome */
};

struct vsr_forward_logout_header { /* 28 */
  VSR_HEADER_FRAME_FIELDS_;
  vsr_u128 client;
  vsr_u128 nonce;
  uint64_t session;
  uint64_t request;
  uint8_t reserved[80];
};

struct vsr_forward_logout_result_header { /* 29 */
  VSR_HEADER_FRAME_FIELDS_;
  vsr_u128 nonce;
  vsr_u128 client;
  uint64_t commit;
  uint8_t reserved[87];
  uint8_t outcome; /* enum vsr_forward_logout_outcome */
};

/* ---- layout checks: every field offset of §1 / §M4, and size 256 ------------------------- */

#define VSR_OFF_(T, f, off) VSR_STATIC_ASSERT(offsetof(struct T, f) == (off), #T "." #f)
#define VSR_FRAME_OFFS_(T)                                                                       \
  VSR_STATIC_ASSERT(sizeof(struct T) == VSR_HEADER_SIZE, #T " size");                           \
  VSR_OFF_(T, checksum, 0);                                                                      \
  VSR_OFF_(T, checksum_body, 16);                                                                \
  VSR_OFF_(T, cluster, 32);                                                                      \
  VSR_OFF_(T, size, VSR_SIZE_FIELD_OFFSET);                                                      \
  VSR_OFF_(T, view, 52);                                                                         \
  VSR_OFF_(T, release, 56);                                                                      \
  VSR_OFF_(T, command, 60);                                                                      \
  VSR_OFF_(T, replica, 61);                                                                      \
  VSR_OFF_(T, reserved_frame, 62)

VSR_STATIC_ASSERT(sizeof(vsr_u128) == 16, "vsr_u128 size");
VSR_FRAME_OFFS_(vsr_header);
VSR_OFF_(vsr_header, reserved_command, 128);

VSR_FRAME_OFFS_(vsr_request_header);
VSR_OFF_(vsr_request_header, client, 128);
VSR_OFF_(vsr_request_header, request_checksum, 144);
VSR_OFF_(vsr_request_header, timestamp, 160);
VSR_OFF_(vsr_request_header, request, 168);
VSR_OFF_(vsr_request_header, operation, 176);
VSR_OFF_(vsr_request_header, operation_padding, 177);
VSR_OFF_(vsr_request_header, session, 184);
VSR_OFF_(vsr_request_header, user_id, 192);
VSR_OFF_(vsr_request_header, reserved, 196);

VSR_FRAME_OFFS_(vsr_routed_request_header);
VSR_OFF_(vsr_routed_request_header, client, 128);
VSR_OFF_(vsr_routed_request_header, request_checksum, 144);
VSR_OFF_(vsr_routed_request_header, timestamp, 160);
VSR_OFF_(vsr_routed_request_header, request, 168);
VSR_OFF_(vsr_routed_request_header, operation, 176);
VSR_OFF_(vsr_routed_request_header, operation_padding, 177);
VSR_OFF_(vsr_routed_request_header, session, 184);
VSR_OFF_(vsr_routed_request_header, user_id, 192);
VSR_OFF_(vsr_routed_request_header, reserved, 196);
VSR_OFF_(vsr_routed_request_header, group, 248);

VSR_FRAME_OFFS_(vsr_reply_header);
VSR_OFF_(vsr_reply_header, request_checksum, 128);
VSR_OFF_(vsr_reply_header, context, 144);
VSR_OFF_(vsr_reply_header, client, 160);
VSR_OFF_(vsr_reply_header, op, 176);
VSR_OFF_(vsr_reply_header, commit, 184);
VSR_OFF_(vsr_reply_header, timestamp, 192);
VSR_OFF_(vsr_reply_header, request, 200);
VSR_OFF_(vsr_reply_header, operation, 208);
VSR_OFF_(vsr_reply_header, operation_padding, 209);
VSR_OFF_(vsr_reply_header, status, 216);
VSR_OFF_(vsr_reply_header, reserved, 220);

VSR_FRAME_OFFS_(vsr_eviction_header);
VSR_OFF_(vsr_eviction_header, client, 128);
VSR_OFF_(vsr_eviction_header, server_protocol_version, 144);
VSR_OFF_(vsr_eviction_header, server_protocol_version_min, 148);
VSR_OFF_(vsr_eviction_header, reserved, 152);
VSR_OFF_(vsr_eviction_header, reason, 255);

VSR_FRAME_OFFS_(vsr_prepare_header);
VSR_OFF_(vsr_prepare_header, client, 128);
VSR_OFF_(vsr_prepare_header, parent, 144);
VSR_OFF_(vsr_prepare_header, request_checksum, 160);
VSR_OFF_(vsr_prepare_header, op, 176);
VSR_OFF_(vsr_prepare_header, commit, 184);
VSR_OFF_(vsr_prepare_header, timestamp, 192);
VSR_OFF_(vsr_prepare_header, request, 200);
VSR_OFF_(vsr_prepare_header, operation, 208);
VSR_OFF_(vsr_prepare_header, operation_padding, 209);
VSR_OFF_(vsr_prepare_header, group, 216);
VSR_OFF_(vsr_prepare_header, user_id, 224);
VSR_OFF_(vsr_prepare_header, reserved, 228);

VSR_FRAME_OFFS_(vsr_prepare_ok_header);
VSR_OFF_(vsr_prepare_ok_header, parent, 128);
VSR_OFF_(vsr_prepare_ok_header, prepare_checksum, 144);
VSR_OFF_(vsr_prepare_ok_header, op, 160);
VSR_OFF_(vsr_prepare_ok_header, commit, 168);
VSR_OFF_(vsr_prepare_ok_header, timestamp, 176);
VSR_OFF_(vsr_prepare_ok_header, request, 184);
VSR_OFF_(vsr_prepare_ok_header, operation, 192);
VSR_OFF_(vsr_prepare_ok_header, operation_padding, 193);
VSR_OFF_(vsr_prepare_ok_header, group, 200);
VSR_OFF_(vsr_prepare_ok_header, reserved, 208);

VSR_FRAME_OFFS_(vsr_commit_header);
VSR_OFF_(vsr_commit_header, commit_checksum, 128);
VSR_OFF_(vsr_commit_header, timestamp_monotonic, 144);
VSR_OFF_(vsr_commit_header, commit, 152);
VSR_OFF_(vsr_commit_header, checkpoint_op, 160);
VSR_OFF_(vsr_commit_header, group, 168);
VSR_OFF_(vsr_commit_header, reserved, 176);

VSR_FRAME_OFFS_(vsr_start_view_change_header);
VSR_OFF_(vsr_start_view_change_header, group, 128);
VSR_OFF_(vsr_start_view_change_header, reserved, 136);

VSR_FRAME_OFFS_(vsr_do_view_change_header);
VSR_OFF_(vsr_do_view_change_header, op, 128);
VSR_OFF_(vsr_do_view_change_header, commit, 136);
VSR_OFF_(vsr_do_view_change_header, group, 144);
VSR_OFF_(vsr_do_view_change_header, log_view, 152);
VSR_OFF_(vsr_do_view_change_header, reserved, 156);
VSR_OFF_(vsr_do_view_change_header, nack_bitset, 224);
VSR_OFF_(vsr_do_view_change_header, present_bitset, 240);

VSR_FRAME_OFFS_(vsr_start_view_header);
VSR_OFF_(vsr_start_view_header, op, 128);
VSR_OFF_(vsr_start_view_header, commit, 136);
VSR_OFF_(vsr_start_view_header, group, 144);
VSR_OFF_(vsr_start_view_header, reserved, 152);
VSR_OFF_(vsr_start_view_header, incarnation, 240);

VSR_FRAME_OFFS_(vsr_request_start_view_header);
VSR_OFF_(vsr_request_start_view_header, group, 128);
VSR_OFF_(vsr_request_start_view_header, reserved, 136);
VSR_OFF_(vsr_request_start_view_header, incarnation, 240);

VSR_FRAME_OFFS_(vsr_request_prepares_header);
VSR_OFF_(vsr_request_prepares_header, nonce, 128);
VSR_OFF_(vsr_request_prepares_header, from_op, 144);
VSR_OFF_(vsr_request_prepares_header, to_op, 152);
VSR_OFF_(vsr_request_prepares_header, group, 160);
VSR_OFF_(vsr_request_prepares_header, reserved, 168);

VSR_FRAME_OFFS_(vsr_repair_range_reply_header);
VSR_OFF_(vsr_repair_range_reply_header, nonce, 128);
VSR_OFF_(vsr_repair_range_reply_header, op, 144);
VSR_OFF_(vsr_repair_range_reply_header, group, 152);
VSR_OFF_(vsr_repair_range_reply_header, reserved, 160);

VSR_FRAME_OFFS_(vsr_request_state_transfer_header);
VSR_OFF_(vsr_request_state_transfer_header, nonce, 128);
VSR_OFF_(vsr_request_state_transfer_header, group, 144);
VSR_OFF_(vsr_request_state_transfer_header, reserved, 152);

VSR_FRAME_OFFS_(vsr_state_transfer_target_header);
VSR_OFF_(vsr_state_transfer_target_header, nonce, 128);
VSR_OFF_(vsr_state_transfer_target_header, commit_op, 144);
VSR_OFF_(vsr_state_transfer_target_header, group, 152);
VSR_OFF_(vsr_state_transfer_target_header, available, 160);
VSR_OFF_(vsr_state_transfer_target_header, unavailable_transient, 161);
VSR_OFF_(vsr_state_transfer_target_header, reserved_alignment, 162);
VSR_OFF_(vsr_state_transfer_target_header, commit_max, 168);
VSR_OFF_(vsr_state_transfer_target_header, reserved, 176);

VSR_FRAME_OFFS_(vsr_request_state_chunk_header);
VSR_OFF_(vsr_request_state_chunk_header, nonce, 128);
VSR_OFF_(vsr_request_state_chunk_header, offset, 144);
VSR_OFF_(vsr_request_state_chunk_header, group, 152);
VSR_OFF_(vsr_request_state_chunk_header, len, 160);
VSR_OFF_(vsr_request_state_chunk_header, artifact, 164);
VSR_OFF_(vsr_request_state_chunk_header, reserved, 168);

VSR_FRAME_OFFS_(vsr_state_chunk_header);
VSR_OFF_(vsr_state_chunk_header, nonce, 128);
VSR_OFF_(vsr_state_chunk_header, offset, 144);
VSR_OFF_(vsr_state_chunk_header, group, 152);
VSR_OFF_(vsr_state_chunk_header, artifact, 160);
VSR_OFF_(vsr_state_chunk_header, reserved, 164);

VSR_FRAME_OFFS_(vsr_forward_register_header);
VSR_OFF_(vsr_forward_register_header, client, 128);
VSR_OFF_(vsr_forward_register_header, nonce, 144);
VSR_OFF_(vsr_forward_register_header, user_id, 160);
VSR_OFF_(vsr_forward_register_header, reserved, 164);

VSR_FRAME_OFFS_(vsr_forward_register_result_header);
VSR_OFF_(vsr_forward_register_result_header, nonce, 128);
VSR_OFF_(vsr_forward_register_result_header, client, 144);
VSR_OFF_(vsr_forward_register_result_header, epoch, 160);
VSR_OFF_(vsr_forward_register_result_header, watermark, 168);
VSR_OFF_(vsr_forward_register_result_header, reserved, 176);
VSR_OFF_(vsr_forward_register_result_header, outcome, 255);

VSR_FRAME_OFFS_(vsr_forward_logout_header);
VSR_OFF_(vsr_forward_logout_header, client, 128);
VSR_OFF_(vsr_forward_logout_header, nonce, 144);
VSR_OFF_(vsr_forward_logout_header, session, 160);
VSR_OFF_(vsr_forward_logout_header, request, 168);
VSR_OFF_(vsr_forward_logout_header, reserved, 176);

VSR_FRAME_OFFS_(vsr_forward_logout_result_header);
VSR_OFF_(vsr_forward_logout_result_header, nonce, 128);
VSR_OFF_(vsr_forward_logout_result_header, client, 144);
VSR_OFF_(vsr_forward_logout_result_header, commit, 160);
VSR_OFF_(vsr_forward_logout_result_header, reserved, 168);
VSR_OFF_(vsr_forward_logout_result_header, outcome, 255);

/* ---- little-endian field access (memcpy: any alignment, no aliasing issue) ----------------- */

static inline uint16_t vsr_get_u16(const uint8_t *p) {
  uint16_t v;
  memcpy(&v, p, sizeof v);
  return v;
}
static inline uint32_t vsr_get_u32(const uint8_t *p) {
  uint32_t v;
  memcpy(&v, p, sizeof v);
  return v;
}
static inline uint64_t vsr_get_u64(const uint8_t *p) {
  uint64_t v;
  memcpy(&v, p, sizeof v);
  return v;
}
static inline vsr_u128 vsr_get_u128(const uint8_t *p) {
  vsr_u128 v;
  memcpy(&v, p, sizeof v);
  return v;
}
static inline void vsr_put_u16(uint8_t *p, uint16_t v) { memcpy(p, &v, sizeof v); }
static inline void vsr_put_u32(uint8_t *p, uint32_t v) { memcpy(p, &v, sizeof v); }
static inline void vsr_put_u64(uint8_t *p, uint64_t v) { memcpy(p, &v, sizeof v); }
static inline void vsr_put_u128(uint8_t *p, vsr_u128 v) { memcpy(p, &v, sizeof v); }

static inline bool vsr_u128_is_zero(vsr_u128 v) { return (v.lo | v.hi) == 0; }
static inline bool vsr_u128_eq(vsr_u128 a, vsr_u128 b) { return a.lo == b.lo && a.hi == b.hi; }
/* u128::from(u64): zero-extension, as the reference widens XXH3-64. */
static inline vsr_u128 vsr_u128_from_u64(uint64_t v) { return (vsr_u128){v, 0}; }

/* Generic fields of a raw header. */
static inline uint32_t vsr_hdr_size(const uint8_t *hdr) {
  return vsr_get_u32(hdr + VSR_SIZE_FIELD_OFFSET);
}
static inline uint8_t vsr_hdr_command(const uint8_t *hdr) {
  return hdr[offsetof(struct vsr_header, command)];
}

/* True when |op| is a defined enum vsr_operation byte (Reserved included). */
static inline bool vsr_operation_defined(uint8_t op) {
  /* One bit per byte value: 0..3 | 64..68 | 128..149, 160..162 | none. */
  static const uint64_t vsr_op_bits_[4] = {
      0x000000000000000fu, 0x000000000000001fu, 0x00000007003fffffu, 0};
  return (vsr_op_bits_[op >> 6] >> (op & 63)) & 1u;
}

/* ---- functions (src/frame/header.c) -------------------------------------------------------- */

/* Name of a command ("Prepare"), or "unknown" above VSR_CMD_MAX. Never NULL. */
const char *vsr_command_name(uint8_t cmd);

/* Name of an operation ("SendMessages"), or "unknown" for an undefined byte. Never NULL. */
const char *vsr_operation_name(uint8_t op);

/* True for the commands whose `checksum` is the frame seal XXH3(header[16..256]) (§M3):
 * PrepareOk, Commit, StartViewChange, DoViewChange, StartView, RequestStartView,
 * RequestPrepares, RepairDone, RangeEvicted, the state-transfer and forward commands.
 * False for everything else (Prepare / RepairPrepare use an identity checksum instead). */
bool vsr_command_sealed(uint8_t cmd);

/* XXH3-64, seed 0, default secret (libxxhash XXH3_64bits). */
uint64_t vsr_xxh3(const void *p, size_t n);

/* The seal value of a header: XXH3(hdr[16..256]) (low 64 bits of the widened u128). */
uint64_t vsr_frame_checksum(const uint8_t *hdr);

/* The Prepare identity: XXH3 of the 256-byte header with checksum (0..16) and view (52..56)
 * read as zero. A RepairPrepare (19) is a stored Prepare with only byte 60 rewritten, so its
 * command byte is read as 6 (Prepare): a Prepare and the RepairPrepare made from it carry the
 * same identity, as Iggy mainline sends and verifies it (vector M-5). */
uint64_t vsr_prepare_identity(const uint8_t *hdr);

/* Zeroes the 256 bytes at |hdr| and sets command and size. */
void vsr_header_init(void *hdr, uint8_t command, uint32_t size);

/* Stamps the checksum of a finished frame; call last, after every other field (and
 * vsr_prepare_set_body_checksum) is written. Sealed commands get the seal, Prepare and
 * RepairPrepare their identity checksum, other commands are left untouched. */
void vsr_frame_seal(uint8_t *frame);

/* Sets checksum_body = XXH3(frame[256..size]) widened, size read from the header. Call before
 * vsr_frame_seal. Meaningful for Prepare / RepairPrepare. */
void vsr_prepare_set_body_checksum(uint8_t *frame);

/* Checks everything decidable from a header alone, in this order, and returns 0 or the first
 * failure:
 *   VSR_EFRAME_SMALL     size < 256;
 *   VSR_EFRAME_LARGE     size > |max_size|;
 *   VSR_EFRAME_COMMAND   command > VSR_CMD_MAX;
 *   VSR_EFRAME_CHECKSUM  seal mismatch on a sealed command, or a non-zero Prepare /
 *                        RepairPrepare checksum that is not the identity checksum;
 *   then the typed validation of §M5 for the command:
 *   VSR_EFRAME_ENUM      undefined operation / eviction reason / forward outcome byte;
 *   VSR_EFRAME_RESERVED  non-zero reserved bytes where §M5 requires zero;
 *   VSR_EFRAME_FIELD     any other rule (size pinned to 256, non-zero ids, ranges, bitsets;
 *                        ReplicaHello/Challenge/Finish must be header-only). */
int vsr_frame_check_header(const uint8_t hdr[256], uint32_t max_size);

/* vsr_frame_check_body flag; equal to VSRI_DECODE_VERIFY_BODY. */
#define VSR_CHECK_BODY_VERIFY 1u

/* For a Prepare / RepairPrepare with non-zero checksum_body, when |flags| has
 * VSR_CHECK_BODY_VERIFY, checks XXH3(frame[256..size]) against it. |size| is the frame length
 * (the header's size, already checked). Returns 0 or VSR_EFRAME_BODY_CHECKSUM. */
int vsr_frame_check_body(const uint8_t *frame, uint32_t size, uint32_t flags);

#ifdef __cplusplus
}
#endif
#endif
