/* Internal to the client SDK: the client object, shared by client.c (one connection, its send
 * queue and inbox, blocking calls) and client_session.c (session mode: register, requests,
 * resend with backoff, following the primary, heartbeat and liveness). */
#ifndef VSRI_CLIENT_IMPL_H
#define VSRI_CLIENT_IMPL_H

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "bus/bus_impl.h"
#include "frame/decode.h"
#include "util/alloc.h"
#include "util/log.h"
#include "util/random.h"
#include "util/ring.h"
#include "vsrbus/client.h"

/* Session mode (options.session): the request in flight, or one waiting behind it. */
struct client_req {
  struct vsr_msg *msg;
  vsr_client_reply_fn fn;
  void *arg;
  uint64_t deadline; /* absolute, loop clock */
  uint64_t request;  /* number stamped when it became the request in flight */
  uint64_t sent_gen; /* connection generation it was last sent on; 0: never */
  uint64_t sent_at;
  uint8_t operation;
  bool is_register;
};

/* Everything a session client adds to the raw pipe (docs/client.md). */
struct client_sess {
  char **addrs;
  uint32_t n;
  uint32_t target;   /* replica index connected or being connected to */
  uint32_t view;     /* highest view heard */
  uint32_t attempt;  /* consecutive failures: the backoff exponent */
  vsr_u128 cluster, id;
  uint64_t session;  /* 0 until the Register's Reply */
  uint64_t next_request;
  int ended;         /* < 0: the session is over (the reason); no more connections */
  int evict_reason;
  bool switching;    /* we closed the connection on purpose; target already chosen */
  bool up;           /* the connection is established */
  uint64_t gen;      /* connection generation, +1 per connect */
  uint64_t conn_started, last_rx, next_ping, reconnect_at; /* reconnect_at 0: none due */
  uint64_t tick_due;
  struct vsri_completion tick;
  struct client_req cur; /* cur.msg NULL: nothing in flight */
  struct client_req *pend; /* ring of max_pending */
  uint32_t pend_cap, pend_head, pend_len;
  void *reg_body;
  uint32_t reg_body_len;
  /* blocking request_wait */
  bool wait_done;
  int wait_status;
  struct vsr_msg *wait_reply;
  uint64_t request_timeout, request_deadline, rc_min, rc_max, hb, liveness;
  struct vsr_client_stats st;
};

struct vsr_client {
  struct vsr_loop *loop;
  bool owns_loop;
  bool deleting; /* vsr_client_del called */
  uint32_t in_cb; /* depth of user callbacks running (vsr_client_del refuses inside) */
  int state;     /* 0 connecting, 1 connected, < 0 closed with that reason */
  const struct vsri_bus_transport *t; /* its row in vsri_bus_transports */
  const struct vsri_transport_ops *tops;
  struct vsri_transport_ctx tctx;
  void *tls_config; /* transport settings owned by the client (its row's), or NULL */
  struct vsri_conn *conn;
  struct vsr_client_callbacks cb;
  void *user;
  /* Frames received for blocking use, oldest first: |inbox_ring| indexes |inbox|, which grows
   * by doubling (only while the caller lags). Zeroed until the first frame: full and empty. */
  struct vsr_msg **inbox;
  struct vsri_ring inbox_ring;
  uint32_t max_message_size;
  struct client_sess *s; /* NULL: raw mode */
  /* Send counters, moved only by the upcalls (the transport counts nothing). */
  uint64_t frames_queued, frames_out, bytes_out, frames_dropped;
  struct vsri_sendq q; /* slots follow the struct */
};

/* client.c */
extern const struct vsri_conn_events vsri_client_events;
int vsri_client_inbox_push(struct vsr_client *c, struct vsr_msg *m);
void vsri_client_free(struct vsr_client *c);
/* Runs the client's own loop until done(c) or |timeout_ns|: VSR_ETIMEDOUT. */
int vsri_client_wait(struct vsr_client *c, bool (*done)(const struct vsr_client *),
                     uint64_t timeout_ns);

/* client_session.c */
void vsri_client_sess_on_frame(struct vsr_client *c, struct vsr_msg *msg);
void vsri_client_sess_on_connected(struct vsr_client *c);
void vsri_client_sess_on_closed(struct vsr_client *c, int reason);
void vsri_client_sess_free(struct vsr_client *c);
bool vsri_client_sess_registered(const struct vsr_client *c);

#endif
