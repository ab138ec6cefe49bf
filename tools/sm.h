/* The built-in demo state machine of `vsrbus node`: answers PingClient -> PongClient,
 * Ping -> Pong, and Request -> Reply (body echoed; client, request number, checksum and
 * operation copied from the Request). Everything else is counted and ignored. */
#ifndef VSR_TOOLS_SM_H
#define VSR_TOOLS_SM_H

#include <stdint.h>

#include "vsrbus/vsrbus.h"

struct vsr_sm {
  struct vsr_bus *bus;
  uint8_t replica;  /* this replica's index, written into replies */
  uint64_t op;      /* last op number assigned */
  uint64_t replies, pongs, ignored, send_errors;
};

/* Handles one client-plane frame. */
void vsr_sm_on_client_message(struct vsr_sm *sm, uint64_t client, const struct vsr_msg *msg);

/* Builds the Reply to |req| (a valid Request) with |op|. NULL if the pool is exhausted. */
struct vsr_msg *vsr_sm_build_reply(struct vsr_bus *bus, const struct vsr_msg *req, uint8_t replica,
                                   uint64_t op);

#endif
