/* QUIC transport: quic_cb.c.
 * ngtcp2 callbacks (server and client tables). They only record state and defer work: no upcall to
 * the owner from inside ngtcp2. */
#include "transport/quic/quic_impl.h"

/* ---- ngtcp2 callbacks ------------------------------------------------------------------ */

ngtcp2_conn *q_get_conn(ngtcp2_crypto_conn_ref *ref) {
  struct q_conn *c = ref->user_data;
  return c->qc;
}

static void q_cb_rand(uint8_t *dest, size_t len, const ngtcp2_rand_ctx *rctx) {
  (void)rctx;
  q_rand(dest, len);
}

static int q_cb_new_cid(ngtcp2_conn *qc, ngtcp2_cid *cid, uint8_t *token, size_t cidlen,
                        void *ud) {
  (void)qc;
  struct q_conn *c = ud;
  for (int tries = 0; tries < 4; tries++) {
    q_cid_fill(c->l, cid->data, cidlen); /* a server's names its shard (quic_shard.c) */
    cid->datalen = cidlen;
    if (!c->l) break;
    int err = q_conn_add_cid(c, cid);
    if (err == 0) break;
    if (err != VSR_EDUPLICATE) return NGTCP2_ERR_CALLBACK_FAILURE;
  }
  /* Server tokens derive from the listener's secret (stateless resets stay possible); a
   * client never sends one, so its tokens are just random. */
  if (!c->l) {
    q_rand(token, NGTCP2_STATELESS_RESET_TOKENLEN);
    return 0;
  }
  if (ngtcp2_crypto_generate_stateless_reset_token(token, c->l->reset_secret, 32, cid) != 0) {
    return NGTCP2_ERR_CALLBACK_FAILURE;
  }
  return 0;
}

static int q_cb_remove_cid(ngtcp2_conn *qc, const ngtcp2_cid *cid, void *ud) {
  (void)qc;
  struct q_conn *c = ud;
  if (c->l) q_conn_del_cid(c, cid);
  return 0;
}

/* From here no datagram of ours carries an Initial packet, which ngtcp2 pads to the full
 * payload size (quic_write.c). */
static int q_cb_handshake_confirmed(ngtcp2_conn *qc, void *ud) {
  (void)qc;
  ((struct q_conn *)ud)->hs_confirmed = true;
  return 0;
}

static int q_cb_handshake_completed(ngtcp2_conn *qc, void *ud) {
  (void)qc;
  struct q_conn *c = ud;
  if (c->state == Q_HANDSHAKING) c->state = Q_ESTABLISHED;
  if (c->server) c->hs_confirmed = true; /* a server's handshake is confirmed when complete */
  gnutls_datum_t alpn = {NULL, 0};
  if (gnutls_alpn_get_selected_protocol(c->tls, &alpn) == 0) {
    VSRI_DEBUG("VSR-QUIC", "%s quic: handshake done, ALPN %.*s", c->name, (int)alpn.size,
               (const char *)alpn.data);
  } else {
    VSRI_DEBUG("VSR-QUIC", "%s quic: handshake done, no ALPN", c->name);
  }
  return 0;
}

static int q_cb_stream_open(ngtcp2_conn *qc, int64_t sid, void *ud) {
  (void)qc;
  struct q_conn *c = ud;
  if (!ngtcp2_is_bidi_stream(sid)) {
    return q_violation(c, VSR_ESTREAM, "peer opened a unidirectional stream");
  }
  if (!c->server) return q_violation(c, VSR_ESTREAM, "server opened a stream");
  /* ngtcp2 enforces max_bidi_streams (STREAM_LIMIT_ERROR); a slot is always free here. */
  if (!q_stream_add(c, sid)) {
    if (!c->st) {
      VSRI_WARN("VSR-QUIC", "%s quic: no memory for stream state; closing", c->name);
      c->fail_reason = VSR_ENOMEM;
      return NGTCP2_ERR_CALLBACK_FAILURE;
    }
    return q_violation(c, VSR_ESTREAM, "more concurrent bidirectional streams than allowed");
  }
  return 0;
}

static int q_cb_recv_stream_data(ngtcp2_conn *qc, uint32_t flags, int64_t sid, uint64_t offset,
                                 const uint8_t *data, size_t len, void *ud, void *sud) {
  (void)offset;
  (void)sud;
  struct q_conn *c = ud;
  if (flags & NGTCP2_STREAM_DATA_FLAG_EARLY) {
    return q_violation(c, VSR_EPROTO, "stream data in 0-RTT refused");
  }
  ngtcp2_conn_extend_max_stream_offset(qc, sid, len);
  ngtcp2_conn_extend_max_offset(qc, len);
  struct q_stream *s = q_stream_find(c, sid);
  if (!s) {
    if (sid == c->extra_sid) return 0;
    return q_violation(c, VSR_ESTREAM, "data on a stream that carries no frames");
  }
  if (len > 0 && q_feed(c, s, data, len) != 0) return NGTCP2_ERR_CALLBACK_FAILURE;
  if (flags & NGTCP2_STREAM_DATA_FLAG_FIN) {
    s->peer_fin = true;
    if (!vsri_decoder_idle(&s->dec)) {
      int r = vsri_decoder_eof_reason(&s->dec);
      return q_violation(c, r, "stream finished inside a frame");
    }
    q_conn_schedule(c);
  }
  return 0;
}

static int q_cb_acked(ngtcp2_conn *qc, int64_t sid, uint64_t offset, uint64_t len, void *ud,
                      void *sud) {
  (void)qc;
  (void)sud;
  struct q_conn *c = ud;
  q_infl_release(c, sid, offset + len, false);
  return 0;
}

static int q_cb_stream_close(ngtcp2_conn *qc, uint32_t flags, int64_t sid, uint64_t app_code,
                             void *ud, void *sud) {
  (void)flags;
  (void)app_code;
  (void)sud;
  struct q_conn *c = ud;
  if (sid == c->extra_sid) {
    c->extra_sid = -1;
    return 0;
  }
  q_infl_release(c, sid, 0, true);
  struct q_stream *s = q_stream_find(c, sid);
  if (!s) return 0;
  if (c->q && c->q->off > 0 && c->head_sid == sid) {
    /* The stream was reset inside a frame: the rest of it has nowhere to go. */
    VSRI_DEBUG("VSR-QUIC", "%s quic: stream %lld reset inside a frame; dropping it", c->name,
               (long long)sid);
    uint32_t size = vsri_sendq_pop(c->q);
    if (c->ev && c->ev->on_dropped) c->ev->on_dropped(c->owner, &c->base, 1, size, VSR_ESTREAM);
  }
  q_stream_drop(c, s);
  if (c->server && ngtcp2_is_bidi_stream(sid)) ngtcp2_conn_extend_max_streams_bidi(qc, 1);
  q_conn_schedule(c);
  return 0;
}

/* The peer abandoned its side of our stream: close both sides, the frames on it are lost. */
static int q_cb_stream_reset(ngtcp2_conn *qc, int64_t sid, uint64_t final_size,
                             uint64_t app_code, void *ud, void *sud) {
  (void)final_size;
  (void)sud;
  struct q_conn *c = ud;
  VSRI_DEBUG("VSR-QUIC", "%s quic: peer reset stream %lld (0x%llx)", c->name, (long long)sid,
             (unsigned long long)app_code);
  /* Frames on it the kernel has not taken yet will never go out: dropped now, before a later
   * packet of this connection could be taken for theirs (quic_infl.c). */
  q_infl_drop_stream(c, sid);
  ngtcp2_conn_shutdown_stream(qc, sid, app_code);
  return 0;
}

static int q_cb_extend_streams(ngtcp2_conn *qc, uint64_t max_streams, void *ud) {
  (void)qc;
  (void)max_streams;
  q_conn_schedule(ud);
  return 0;
}

const ngtcp2_callbacks q_server_callbacks = {
    .recv_client_initial = ngtcp2_crypto_recv_client_initial_cb,
    .recv_crypto_data = ngtcp2_crypto_recv_crypto_data_cb,
    .handshake_completed = q_cb_handshake_completed,
    .handshake_confirmed = q_cb_handshake_confirmed,
    .encrypt = ngtcp2_crypto_encrypt_cb,
    .decrypt = ngtcp2_crypto_decrypt_cb,
    .hp_mask = ngtcp2_crypto_hp_mask_cb,
    .recv_stream_data = q_cb_recv_stream_data,
    .acked_stream_data_offset = q_cb_acked,
    .stream_open = q_cb_stream_open,
    .stream_close = q_cb_stream_close,
    .rand = q_cb_rand,
    .get_new_connection_id = q_cb_new_cid,
    .remove_connection_id = q_cb_remove_cid,
    .update_key = ngtcp2_crypto_update_key_cb,
    .stream_reset = q_cb_stream_reset,
    .delete_crypto_aead_ctx = ngtcp2_crypto_delete_crypto_aead_ctx_cb,
    .delete_crypto_cipher_ctx = ngtcp2_crypto_delete_crypto_cipher_ctx_cb,
    .get_path_challenge_data = ngtcp2_crypto_get_path_challenge_data_cb,
    .version_negotiation = ngtcp2_crypto_version_negotiation_cb,
};

const ngtcp2_callbacks q_client_callbacks = {
    .client_initial = ngtcp2_crypto_client_initial_cb,
    .recv_crypto_data = ngtcp2_crypto_recv_crypto_data_cb,
    .handshake_completed = q_cb_handshake_completed,
    .handshake_confirmed = q_cb_handshake_confirmed,
    .encrypt = ngtcp2_crypto_encrypt_cb,
    .decrypt = ngtcp2_crypto_decrypt_cb,
    .hp_mask = ngtcp2_crypto_hp_mask_cb,
    .recv_stream_data = q_cb_recv_stream_data,
    .acked_stream_data_offset = q_cb_acked,
    .stream_open = q_cb_stream_open,
    .stream_close = q_cb_stream_close,
    .recv_retry = ngtcp2_crypto_recv_retry_cb,
    .extend_max_local_streams_bidi = q_cb_extend_streams,
    .extend_max_local_streams_uni = q_cb_extend_streams,
    .rand = q_cb_rand,
    .get_new_connection_id = q_cb_new_cid,
    .update_key = ngtcp2_crypto_update_key_cb,
    .stream_reset = q_cb_stream_reset,
    .delete_crypto_aead_ctx = ngtcp2_crypto_delete_crypto_aead_ctx_cb,
    .delete_crypto_cipher_ctx = ngtcp2_crypto_delete_crypto_cipher_ctx_cb,
    .get_path_challenge_data = ngtcp2_crypto_get_path_challenge_data_cb,
    .version_negotiation = ngtcp2_crypto_version_negotiation_cb,
};
