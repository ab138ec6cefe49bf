/* Demo state machine: the smallest useful application of the bus. */
#include "sm.h"

#include <string.h>
#include <time.h>

static uint64_t sm_realtime_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

struct vsr_msg *vsr_sm_build_reply(struct vsr_bus *bus, const struct vsr_msg *req, uint8_t replica,
                                   uint64_t op) {
  struct vsr_msg *m = vsr_bus_msg_new(bus, req->size);
  if (!m) return NULL;
  const struct vsr_request_header *rq = (const struct vsr_request_header *)req->data;
  struct vsr_reply_header *rp = (struct vsr_reply_header *)m->data;
  rp->command = VSR_CMD_REPLY;
  rp->cluster = rq->cluster;
  rp->view = rq->view;
  rp->replica = replica;
  rp->request_checksum = rq->request_checksum;
  rp->client = rq->client;
  rp->op = op;
  rp->commit = op;
  rp->timestamp = sm_realtime_ns();
  rp->request = rq->request;
  rp->operation = rq->operation;
  memcpy(m->data + VSR_HEADER_SIZE, req->data + VSR_HEADER_SIZE, req->size - VSR_HEADER_SIZE);
  return m;
}

/* Pong and PongClient echo the ping's reserved_command, so the pinger can match them. */
static struct vsr_msg *sm_build_pong(struct vsr_bus *bus, const struct vsr_msg *ping,
                                     uint8_t command, uint8_t replica) {
  struct vsr_msg *m = vsr_bus_msg_new(bus, VSR_HEADER_SIZE);
  if (!m) return NULL;
  const struct vsr_header *in = (const struct vsr_header *)ping->data;
  struct vsr_header *out = (struct vsr_header *)m->data;
  out->command = command;
  out->cluster = in->cluster;
  out->replica = replica;
  memcpy(out->reserved_command, in->reserved_command, sizeof out->reserved_command);
  return m;
}

void vsr_sm_on_client_message(struct vsr_sm *sm, uint64_t client, const struct vsr_msg *msg) {
  uint8_t cmd = msg->data[60];
  struct vsr_msg *out = NULL;
  switch (cmd) {
  case VSR_CMD_PING_CLIENT:
    out = sm_build_pong(sm->bus, msg, VSR_CMD_PONG_CLIENT, sm->replica);
    sm->pongs++;
    break;
  case VSR_CMD_PING:
    out = sm_build_pong(sm->bus, msg, VSR_CMD_PONG, sm->replica);
    sm->pongs++;
    break;
  case VSR_CMD_REQUEST:
    out = vsr_sm_build_reply(sm->bus, msg, sm->replica, ++sm->op);
    sm->replies++;
    break;
  default:
    sm->ignored++;
    return;
  }
  if (!out) {
    sm->send_errors++;
    return;
  }
  if (vsr_bus_send_to_client(sm->bus, client, out) < 0) sm->send_errors++;
  vsr_msg_unref(out);
}
