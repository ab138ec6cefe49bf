/* Prepare batching for the demo state machine (docs/demo.md, "Batches").
 *
 * The primary does not prepare each Request as it arrives: admitted Requests wait in |pending|
 * until the end of the loop turn (a 0 ns timer: it fires after the turn's deliveries), or until
 * batch_max of them or batch_bytes of body are queued, and then go out as ONE Prepare, one op:
 *  - one Request: the Prepare of before (the Request's identity in the header, its body);
 *  - two or more: a batch Prepare. Header: operation Reserved (0, which no Request carries: the
 *    bus refuses it from clients), client 0, request_checksum 0, request = the number of
 *    Requests; the rest as for any Prepare. Body: the Request frames as the clients sent them,
 *    back to back, each its 256-byte header (whose size field is the frame's length) and its
 *    body. checksum_body covers the whole body, so the bus has checked it end to end.
 * A backup checks the layout before it keeps the Prepare (vsr_sm_batch_check): a count or a
 * length that does not add up, or a frame that is not a session Request, is refused with the
 * reason and the sender logged; the op is then neither stored nor acknowledged.
 * Every replica applies a committed batch's Requests in order to its client table; the primary
 * answers each. Registers and Requests without a session always go alone. */
#include "sm.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#define BATCH_LOG_EVERY_NS 1000000000ull /* at most one refusal line a second */

static void batch_on_timer(void *ctx) {
  struct vsr_sm *sm = ctx;
  sm->batch_armed = false;
  vsr_sm_batch_flush(sm);
}

int vsr_sm_batch_init(struct vsr_sm *sm) {
  return vsr_timer_new(&sm->batch_timer, vsr_bus_loop(sm->bus), batch_on_timer, sm);
}

static void batch_drop_pending(struct vsr_sm *sm) {
  for (uint32_t i = 0; i < sm->pending_len; i++) {
    vsr_msg_unref(sm->pending[i]);
    sm->pending[i] = NULL;
  }
  sm->pending_len = 0;
  sm->pending_bytes = 0;
}

void vsr_sm_batch_fini(struct vsr_sm *sm) {
  if (sm->batch_timer) {
    vsr_timer_del(sm->batch_timer);
    sm->batch_timer = NULL;
  }
  sm->batch_armed = false;
  batch_drop_pending(sm);
}

bool vsr_sm_item_next(const struct vsr_msg *prepare, uint32_t *pos, struct vsr_sm_item *it) {
  const struct vsr_prepare_header *p = (const struct vsr_prepare_header *)prepare->data;
  if (!vsr_sm_is_batch(prepare)) {
    if (*pos != 0) return false;
    *it = (struct vsr_sm_item){.client = p->client, .request_checksum = p->request_checksum,
                               .request = p->request, .operation = p->operation,
                               .body = prepare->data + VSR_HEADER_SIZE,
                               .body_size = prepare->size - VSR_HEADER_SIZE};
    *pos = prepare->size;
    return true;
  }
  /* A batch: |*pos| is the next frame's offset in the body; the index counts frames. A frame
   * starts wherever the one before it ended: its header is copied out, not read in place. */
  uint32_t off = VSR_HEADER_SIZE + *pos;
  if (off >= prepare->size || prepare->size - off < VSR_HEADER_SIZE) return false;
  struct vsr_request_header rq;
  memcpy(&rq, prepare->data + off, sizeof rq);
  if (rq.size < VSR_HEADER_SIZE || rq.size > prepare->size - off) return false; /* checked */
  uint32_t index = *pos == 0 ? 0 : it->index + 1;
  *it = (struct vsr_sm_item){.client = rq.client, .request_checksum = rq.request_checksum,
                             .request = rq.request, .session = rq.session,
                             .operation = rq.operation, .index = index,
                             .body = prepare->data + off + VSR_HEADER_SIZE,
                             .body_size = rq.size - VSR_HEADER_SIZE};
  *pos += rq.size;
  return true;
}

int vsr_sm_batch_check(const struct vsr_msg *prepare, char *why, size_t why_len) {
  if (prepare->size < VSR_HEADER_SIZE || !vsr_sm_is_batch(prepare)) return 0;
  const struct vsr_prepare_header *p = (const struct vsr_prepare_header *)prepare->data;
  uint32_t body = prepare->size - VSR_HEADER_SIZE, off = 0;
  uint64_t n = 0;
  if (!vsr_u128_is_zero(p->client) || p->request < 2 || p->request > VSR_SM_BATCH_CAP) {
    snprintf(why, why_len, "header: client %s, count %" PRIu64 " (2..%u)",
             vsr_u128_is_zero(p->client) ? "0" : "not 0", p->request, VSR_SM_BATCH_CAP);
    return -1;
  }
  while (off < body) {
    const uint8_t *f = prepare->data + VSR_HEADER_SIZE + off;
    if (body - off < VSR_HEADER_SIZE) {
      snprintf(why, why_len, "frame %" PRIu64 " at body offset %u: %u bytes left, less than a "
               "header", n, off, body - off);
      return -1;
    }
    struct vsr_request_header rq; /* at any offset: copied out, not read in place */
    memcpy(&rq, f, sizeof rq);
    if (rq.size < VSR_HEADER_SIZE || rq.size > body - off) {
      snprintf(why, why_len, "frame %" PRIu64 " at body offset %u: size %u, %u bytes left", n,
               off, rq.size, body - off);
      return -1;
    }
    if (rq.command != VSR_CMD_REQUEST || rq.operation == VSR_OP_RESERVED ||
        rq.operation == VSR_OP_REGISTER || vsr_u128_is_zero(rq.client) || rq.request == 0) {
      snprintf(why, why_len, "frame %" PRIu64 " at body offset %u: command %u operation %u "
               "request %" PRIu64 ": not a session Request", n, off, rq.command, rq.operation,
               rq.request);
      return -1;
    }
    off += rq.size;
    if (++n > p->request) break;
  }
  if (n != p->request || off != body) {
    snprintf(why, why_len, "header counts %" PRIu64 " requests, the %u-byte body holds %s%" PRIu64,
             p->request, body, n > p->request ? "more than " : "", n > p->request ? p->request : n);
    return -1;
  }
  return 0;
}

void vsr_sm_batch_refuse(struct vsr_sm *sm, uint8_t from, const struct vsr_msg *prepare,
                         const char *why) {
  const struct vsr_prepare_header *p = (const struct vsr_prepare_header *)prepare->data;
  sm->malformed++;
  uint64_t now = vsr_sm_now(sm);
  if (sm->malformed_log_ns != 0 && now - sm->malformed_log_ns < BATCH_LOG_EVERY_NS) return;
  vsr_sm_say("VSR-DROP replica %u: malformed batch %s op %" PRIu64 " (view %u, %u bytes) from "
             "replica %u refused: %s; %" PRIu64 " refused since the last line",
             sm->replica, vsr_command_name(p->command), p->op, p->view, prepare->size, from, why,
             sm->malformed - sm->malformed_logged);
  sm->malformed_log_ns = now ? now : 1;
  sm->malformed_logged = sm->malformed;
}

/* The batch Prepare of the |pending| Requests as the next op. */
static struct vsr_msg *batch_build(struct vsr_sm *sm) {
  struct vsr_msg *m = vsr_bus_msg_new(sm->bus, VSR_HEADER_SIZE + sm->pending_bytes);
  if (!m) return NULL;
  struct vsr_prepare_header *p = (struct vsr_prepare_header *)m->data;
  vsr_sm_prepare_fill(sm, p, sm->op + 1);
  const struct vsr_request_header *first = (const struct vsr_request_header *)sm->pending[0]->data;
  p->release = first->release;
  p->operation = VSR_OP_RESERVED;
  p->request = sm->pending_len;
  uint8_t *dst = m->data + VSR_HEADER_SIZE;
  for (uint32_t i = 0; i < sm->pending_len; i++) {
    memcpy(dst, sm->pending[i]->data, sm->pending[i]->size);
    dst += sm->pending[i]->size;
  }
  vsr_prepare_set_body_checksum(m->data);
  vsr_frame_seal(m->data);
  sm->parent = p->checksum;
  return m;
}

void vsr_sm_batch_flush(struct vsr_sm *sm) {
  if (sm->pending_len == 0) return;
  if (sm->status != VSR_SM_NORMAL || !vsr_sm_is_primary(sm)) {
    /* The view moved in this turn: the clients resend to the new primary, which judges them
     * from its own table (vsr_sm_table_reset_prepared). */
    sm->not_primary += sm->pending_len;
    batch_drop_pending(sm);
    return;
  }
  struct vsr_msg *prep;
  uint64_t conn = 0;
  if (sm->pending_len == 1) {
    prep = vsr_sm_build_prepare(sm, sm->pending[0], sm->op + 1);
    conn = sm->pending_conn[0];
  } else {
    prep = batch_build(sm);
    if (prep) {
      sm->batches++;
      sm->batched += sm->pending_len;
    }
  }
  batch_drop_pending(sm);
  if (!prep) {
    sm->send_errors++;
    vsr_sm_log_drop(sm, "Prepare not built: message pool exhausted");
    return;
  }
  vsr_sm_primary_append(sm, prep, conn);
}

void vsr_sm_batch_add(struct vsr_sm *sm, uint64_t conn, const struct vsr_msg *req) {
  if (sm->pending_len > 0 && sm->pending_bytes + req->size > sm->batch_bytes) {
    vsr_sm_batch_flush(sm);
  }
  sm->pending[sm->pending_len] = vsr_msg_ref((struct vsr_msg *)req);
  sm->pending_conn[sm->pending_len] = conn;
  sm->pending_len++;
  sm->pending_bytes += req->size;
  if (sm->pending_len >= sm->batch_max || sm->pending_len >= VSR_SM_BATCH_CAP) {
    vsr_sm_batch_flush(sm);
  } else if (!sm->batch_armed) {
    sm->batch_armed = true;
    vsr_timer_arm(sm->batch_timer, sm->batch_delay_ns);
  }
}
