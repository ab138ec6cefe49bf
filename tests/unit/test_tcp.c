/* TCP transport (vsri_transport_tcp) driven directly, on each io backend: a dialed connection
 * to a raw loopback peer whose small receive buffer forces partial writes. Checks that the
 * bytes the peer reads are exactly the queued frames in order (partial writes resume at the
 * right offset), that a queue of more than IOV_MAX frames with max_batch above IOV_MAX is
 * written in several vectored writes without error, and that close with drain writes every
 * queued frame before the FIN while close without drain writes nothing and a drain that cannot
 * finish is bounded by drain_timeout_ns. Every wait is bounded. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "frame/decode.h"
#include "testutil.h"
#include "transport/transport.h"
#include "vsrbus/vsrbus.h"

#define T_SEC 1000000000ull
#define T_MS 1000000ull
#define T_QCAP 4096u

struct t_backend {
  const char *label;
  enum vsri_io_backend_kind kind;
};

static struct t_backend t_epoll = {"epoll", VSRI_IO_EPOLL};
static struct t_backend t_uring = {"io_uring", VSRI_IO_URING};

struct t_env {
  struct vsri_io *io;
  struct vsr_pool *pool;
  struct vsri_transport_ctx ctx;
  int lfd;  /* raw listener */
  int peer; /* raw accepted peer (non-blocking) */
  char addr[64];
  struct vsri_conn *conn;
  struct vsri_sendq q;
  struct vsr_msg *slots[T_QCAP];
  bool connected, closed;
  int connect_status, close_reason, closed_count;
  uint32_t len_at_close;  /* frames still queued when on_closed fired */
  uint64_t done_at_close; /* frames the transport had reported sent by then */
  /* What on_sent reported: frames and bytes the kernel took, and in how many calls. */
  uint64_t sent_frames, sent_bytes, sent_calls;
  uint32_t drained;
  /* The byte stream expected at the peer: frame sizes and seeds, in queue order. */
  uint64_t expect_total;
  uint64_t got; /* bytes the peer read and checked */
  uint32_t nframes;
  uint32_t sizes[T_QCAP];
  uint32_t cur, cur_off; /* frame and offset the next peer byte belongs to */
  bool mismatch;
  /* Reading: frames the peer wrote, and how many on_frame delivered intact. */
  uint8_t *in_stream;
  size_t in_len;
  uint32_t in_sizes[16];
  uint32_t in_frames, in_ok, in_bad;
};

static uint8_t t_byte(uint32_t frame, uint32_t off) {
  return (uint8_t)(frame * 131u + off * 7u + (off >> 8));
}

static void t_on_frame(void *owner, struct vsri_conn *conn, struct vsr_msg *msg) {
  (void)conn;
  struct t_env *e = owner;
  size_t off = 0;
  uint32_t i = e->in_ok + e->in_bad;
  for (uint32_t k = 0; k < i && k < 16; k++) off += e->in_sizes[k];
  if (i < e->in_frames && msg->size == e->in_sizes[i] &&
      memcmp(msg->data, e->in_stream + off, msg->size) == 0) {
    e->in_ok++;
  } else {
    e->in_bad++;
  }
}

static void t_on_connected(void *owner, struct vsri_conn *conn, int status) {
  (void)conn;
  struct t_env *e = owner;
  e->connected = status == 0;
  e->connect_status = status;
}

static void t_on_drained(void *owner, struct vsri_conn *conn) {
  (void)conn;
  struct t_env *e = owner;
  e->drained++;
}

static void t_on_sent(void *owner, struct vsri_conn *conn, uint32_t frames, uint64_t bytes) {
  (void)conn;
  struct t_env *e = owner;
  assert_true(frames > 0); /* never an empty report */
  e->sent_frames += frames;
  e->sent_bytes += bytes;
  e->sent_calls++;
}

static void t_on_closed(void *owner, struct vsri_conn *conn, int reason) {
  (void)conn;
  struct t_env *e = owner;
  e->closed = true;
  e->closed_count++;
  e->close_reason = reason;
  e->len_at_close = vsri_sendq_len(&e->q);
  e->done_at_close = e->sent_frames;
  e->conn = NULL;
  while (vsri_sendq_len(&e->q) > 0) vsri_sendq_pop(&e->q); /* the owner's frames */
}

static const struct vsri_conn_events t_events = {
    .on_frame = t_on_frame,
    .on_connected = t_on_connected,
    .on_drained = t_on_drained,
    .on_sent = t_on_sent,
    .on_closed = t_on_closed,
};

/* A loop, a pool and a connection dialed to a raw peer with a |rcvbuf|-byte receive buffer. */
static struct t_env *t_env_new(void **state, uint32_t max_batch, int rcvbuf) {
  const struct t_backend *b = *state;
  struct t_env *e = calloc(1, sizeof *e);
  assert_non_null(e);
  struct vsri_io_options io;
  vsri_io_options_default(&io);
  io.backend = b->kind;
  io.pooled_big_min_ready = 1; /* one connection may read big (the default gate: unit.io) */
  int err = vsri_io_new(&e->io, &io);
  if (err == VSR_EUNSUPPORTED && b->kind == VSRI_IO_URING) {
    free(e);
    print_message("skip %s: io_uring unavailable here\n", b->label);
    skip();
  }
  assert_int_equal(err, 0);
  struct vsr_pool_options po;
  vsr_pool_options_default(&po);
  po.prealloc[0] = 0;
  po.prealloc[1] = 0;
  po.max_message_size = 1u << 20;
  assert_int_equal(vsr_pool_new(&e->pool, &po), 0);
  e->ctx = (struct vsri_transport_ctx){.io = e->io, .pool = e->pool,
                                       .max_message_size = 1u << 20, .max_batch = max_batch,
                                       .decode_flags = VSRI_DECODE_VERIFY_BODY,
                                       .drain_timeout_ns = 5 * T_SEC};
  vsri_sendq_init(&e->q, e->slots, T_QCAP);
  e->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  assert_true(e->lfd >= 0);
  /* Accepted sockets inherit the listener's receive buffer: a small window for the sender. */
  if (rcvbuf) setsockopt(e->lfd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  assert_int_equal(bind(e->lfd, (struct sockaddr *)&a, sizeof a), 0);
  assert_int_equal(listen(e->lfd, 4), 0);
  socklen_t al = sizeof a;
  getsockname(e->lfd, (struct sockaddr *)&a, &al);
  snprintf(e->addr, sizeof e->addr, "127.0.0.1:%u", ntohs(a.sin_port));
  assert_int_equal(vsri_transport_tcp.connect(&e->conn, &e->ctx, e->addr, &t_events, e, &e->q),
                   0);
  uint64_t end = vsrt_now() + 5 * T_SEC;
  while (!e->connected && !e->closed && vsrt_now() < end) vsri_io_run(e->io, (int64_t)T_MS);
  assert_true(e->connected);
  for (int i = 0; i < 3; i++) vsri_io_run(e->io, 0); /* the flush deferred at connect: empty */
  e->peer = accept(e->lfd, NULL, NULL);
  assert_true(e->peer >= 0);
  fcntl(e->peer, F_SETFL, fcntl(e->peer, F_GETFL) | O_NONBLOCK);
  return e;
}

static void t_env_del(struct t_env *e) {
  if (e->conn) vsri_transport_tcp.close(e->conn, VSR_ESHUTDOWN, false);
  uint64_t end = vsrt_now() + 5 * T_SEC;
  while (!e->closed && vsrt_now() < end) vsri_io_run(e->io, (int64_t)T_MS);
  assert_true(e->closed);
  assert_int_equal(e->closed_count, 1);
  for (int i = 0; i < 20; i++) vsri_io_run(e->io, 0);
  close(e->peer);
  close(e->lfd);
  free(e->in_stream);
  struct vsr_pool_stats st;
  vsr_pool_stats(e->pool, &st);
  assert_int_equal(st.live, 0); /* every written or dropped frame was released */
  vsr_pool_del(e->pool);
  vsri_io_del(e->io);
  free(e);
}

/* Queues |n| frames; frame i has size size_fn(i), its bytes a pattern of (i, offset). */
static void t_queue(struct t_env *e, uint32_t n, uint32_t (*size_fn)(uint32_t)) {
  for (uint32_t k = 0; k < n; k++) {
    uint32_t i = e->nframes++;
    uint32_t size = size_fn(i);
    struct vsr_msg *m = vsr_pool_get(e->pool, size);
    assert_non_null(m);
    for (uint32_t off = 0; off < size; off++) m->data[off] = t_byte(i, off);
    assert_true(vsri_sendq_push(&e->q, m));
    e->sizes[i] = size;
    e->expect_total += size;
  }
  /* Filling megabytes takes a while: one turn re-reads the loop's clock, so timers armed next
   * (the drain deadline) count from now. Nothing is written yet: the queue was not kicked. */
  vsri_io_run(e->io, 0);
  assert_int_equal(e->sent_frames, 0);
}

/* Reads up to |max| bytes at the peer and checks them against the expected stream. Returns
 * bytes read, 0 at EOF, -1 if nothing is available now. */
static long t_peer_read(struct t_env *e, size_t max) {
  static uint8_t buf[1 << 16];
  if (max > sizeof buf) max = sizeof buf;
  ssize_t r = read(e->peer, buf, max);
  if (r < 0) {
    assert_true(errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR);
    return -1;
  }
  for (ssize_t k = 0; k < r; k++) {
    if (e->cur >= e->nframes || buf[k] != t_byte(e->cur, e->cur_off)) {
      if (!e->mismatch) {
        print_message("byte %llu: frame %u offset %u differs\n",
                      (unsigned long long)(e->got + (uint64_t)k), e->cur, e->cur_off);
      }
      e->mismatch = true;
    }
    if (++e->cur_off == (e->cur < e->nframes ? e->sizes[e->cur] : 0)) {
      e->cur++;
      e->cur_off = 0;
    }
  }
  e->got += (uint64_t)r;
  return (long)r;
}

static uint32_t t_size_odd(uint32_t i) { return 256 + 1000 * (i % 40) + 13 * (i % 7); }
static uint32_t t_size_header(uint32_t i) { return 256 + (i % 3); }

/* Partial writes: 200 frames of odd sizes (~4 MiB) to a peer with a tiny receive buffer that
 * reads in small pieces. Each writev is cut off mid-frame; the stream must stay byte-exact. */
static void partial_writes_byte_exact(void **state) {
  struct t_env *e = t_env_new(state, 64, 4096);
  t_queue(e, 200, t_size_odd);
  vsri_transport_tcp.kick(e->conn);
  bool partial = false;
  uint64_t end = vsrt_now() + 30 * T_SEC;
  while (e->got < e->expect_total && vsrt_now() < end && !e->closed) {
    vsri_io_run(e->io, 0);
    if (e->q.off != 0) partial = true; /* a write ended inside a frame */
    if (t_peer_read(e, 3000) < 0) vsri_io_run(e->io, (int64_t)T_MS);
  }
  assert_false(e->closed);
  assert_false(e->mismatch);
  assert_int_equal(e->got, e->expect_total);
  assert_true(partial);
  /* The last completion pops the last frame; the counters match the stream. */
  end = vsrt_now() + 5 * T_SEC;
  while (vsri_sendq_len(&e->q) > 0 && vsrt_now() < end) vsri_io_run(e->io, (int64_t)T_MS);
  assert_int_equal(vsri_sendq_len(&e->q), 0);
  assert_int_equal(e->sent_frames, 200);
  assert_int_equal(e->sent_bytes, e->expect_total);
  assert_true(e->sent_calls < 200); /* batched: one report per completed write */
  assert_true(e->drained >= 1);
  t_env_del(e);
}

/* More frames than IOV_MAX queued at once, with max_batch above IOV_MAX: the writer must cap
 * each vectored write at IOV_MAX (the kernel refuses more with EINVAL, which would close the
 * connection) and keep going until the queue is empty. Then the same with a tiny max_batch. */
static void t_batch_case(void **state, uint32_t max_batch, uint32_t n) {
  struct t_env *e = t_env_new(state, max_batch, 0);
  t_queue(e, n, t_size_header);
  vsri_transport_tcp.kick(e->conn);
  uint64_t end = vsrt_now() + 30 * T_SEC;
  while ((e->got < e->expect_total || vsri_sendq_len(&e->q) > 0) && vsrt_now() < end &&
         !e->closed) {
    vsri_io_run(e->io, 0);
    while (t_peer_read(e, 1 << 16) > 0) {
    }
    vsri_io_run(e->io, (int64_t)T_MS);
  }
  assert_false(e->closed);
  assert_false(e->mismatch);
  assert_int_equal(e->got, e->expect_total);
  assert_int_equal(vsri_sendq_len(&e->q), 0);
  assert_int_equal(e->sent_frames, n);
  t_env_del(e);
}

static void iov_max_batches_split(void **state) {
  assert_true(IOV_MAX < 3000);
  t_batch_case(state, 4 * IOV_MAX, 3 * IOV_MAX + 17);
  t_batch_case(state, 3, 1000);
}

/* Close with drain: every queued frame reaches the peer, then EOF; on_closed fires once, with
 * the reason given and nothing left in the queue. */
static void drain_on_close_writes_all(void **state) {
  struct t_env *e = t_env_new(state, 256, 4096);
  t_queue(e, 300, t_size_odd);
  vsri_transport_tcp.kick(e->conn);
  vsri_transport_tcp.close(e->conn, VSR_ESHUTDOWN, true); /* before anything was written */
  bool eof = false;
  uint64_t end = vsrt_now() + 30 * T_SEC;
  while (!eof && vsrt_now() < end) {
    vsri_io_run(e->io, 0);
    long r = t_peer_read(e, 1 << 14);
    if (r == 0) eof = true;
    else if (r < 0) vsri_io_run(e->io, (int64_t)T_MS);
  }
  assert_true(eof);
  assert_false(e->mismatch);
  assert_int_equal(e->got, e->expect_total);
  end = vsrt_now() + 5 * T_SEC;
  while (!e->closed && vsrt_now() < end) vsri_io_run(e->io, (int64_t)T_MS);
  assert_true(e->closed);
  assert_int_equal(e->closed_count, 1);
  assert_int_equal(e->close_reason, VSR_ESHUTDOWN);
  assert_int_equal(e->len_at_close, 0);
  assert_int_equal(e->done_at_close, 300);
  t_env_del(e);
}

/* Close without drain: the queue is not written; the owner gets every frame back. */
static void close_without_drain_writes_nothing(void **state) {
  struct t_env *e = t_env_new(state, 256, 0);
  t_queue(e, 50, t_size_odd);
  vsri_transport_tcp.kick(e->conn);
  vsri_transport_tcp.close(e->conn, VSR_ECLOSED, false);
  vsri_transport_tcp.close(e->conn, VSR_ECLOSED, true); /* again: ignored */
  uint64_t end = vsrt_now() + 5 * T_SEC;
  while (!e->closed && vsrt_now() < end) vsri_io_run(e->io, (int64_t)T_MS);
  assert_true(e->closed);
  assert_int_equal(e->close_reason, VSR_ECLOSED);
  assert_int_equal(e->len_at_close, 50);
  assert_int_equal(e->done_at_close, 0);
  long r;
  end = vsrt_now() + 5 * T_SEC;
  while ((r = t_peer_read(e, 1 << 16)) < 0 && vsrt_now() < end) usleep(1000);
  assert_int_equal(r, 0); /* EOF, no byte */
  assert_int_equal(e->got, 0);
  t_env_del(e);
}

/* A drain the peer never lets finish ends at drain_timeout_ns: on_closed fires with frames
 * still queued (the owner releases them). */
static void drain_bounded_by_timeout(void **state) {
  struct t_env *e = t_env_new(state, 256, 4096);
  e->ctx.drain_timeout_ns = 200 * T_MS;
  t_queue(e, 1000, t_size_odd); /* ~20 MiB: far more than socket buffers hold (4 MiB) */
  vsri_transport_tcp.kick(e->conn);
  vsri_transport_tcp.close(e->conn, VSR_ESHUTDOWN, true);
  uint64_t end = vsrt_now() + 10 * T_SEC;
  while (!e->closed && vsrt_now() < end) vsri_io_run(e->io, (int64_t)T_MS);
  assert_true(e->closed);
  assert_int_equal(e->closed_count, 1);
  assert_int_equal(e->close_reason, VSR_ESHUTDOWN);
  assert_true(e->len_at_close > 0);
  assert_int_equal(e->done_at_close + e->len_at_close, 1000);
  t_env_del(e);
}

/* Builds the peer's byte stream: a Ping, then Prepares with checksummed bodies of |sizes|. */
static void t_in_frames(struct t_env *e, const uint32_t *sizes, uint32_t n) {
  size_t total = 0;
  for (uint32_t i = 0; i < n; i++) total += sizes[i];
  e->in_stream = malloc(total);
  assert_non_null(e->in_stream);
  uint8_t *p = e->in_stream;
  for (uint32_t i = 0; i < n; i++) {
    uint32_t size = sizes[i];
    vsr_header_init(p, size == VSR_HEADER_SIZE ? VSR_CMD_PING : VSR_CMD_PREPARE, size);
    vsr_put_u32(p + 128 + 64, i);
    for (uint32_t k = VSR_HEADER_SIZE; k < size; k++) p[k] = t_byte(i, k);
    if (size > VSR_HEADER_SIZE) vsr_prepare_set_body_checksum(p);
    vsr_frame_seal(p);
    e->in_sizes[i] = size;
    p += size;
  }
  e->in_frames = n;
  e->in_len = total;
}

/* Writes the peer's stream in pieces of the given sizes (cycled), turning the loop between
 * pieces, so frames arrive split at every kind of boundary. */
static void t_peer_write_pieces(struct t_env *e, const size_t *pieces, size_t npieces) {
  size_t off = 0, k = 0;
  uint64_t end = vsrt_now() + 20 * T_SEC;
  while (off < e->in_len && vsrt_now() < end) {
    size_t n = pieces[k++ % npieces];
    if (n > e->in_len - off) n = e->in_len - off;
    ssize_t w = send(e->peer, e->in_stream + off, n, MSG_NOSIGNAL);
    if (w > 0) off += (size_t)w;
    else assert_true(w < 0 && (errno == EAGAIN || errno == EINTR));
    vsri_io_run(e->io, 0);
  }
  assert_int_equal(off, e->in_len);
}

/* Reading: frames written in pieces of 1, 3, 17, 255, 4096 and 60000 bytes arrive whole, in
 * order, byte-exact (one body of 70000 bytes takes the direct-read path). */
static void reads_split_frames_in_order(void **state) {
  struct t_env *e = t_env_new(state, 256, 0);
  const uint32_t sizes[] = {256, 300, 256 + 70000, 256, 256 + 20000, 257, 256};
  t_in_frames(e, sizes, 7);
  const size_t pieces[] = {1, 3, 17, 255, 4096, 60000};
  t_peer_write_pieces(e, pieces, 6);
  uint64_t end = vsrt_now() + 10 * T_SEC;
  while (e->in_ok + e->in_bad < 7 && !e->closed && vsrt_now() < end) {
    vsri_io_run(e->io, (int64_t)T_MS);
  }
  assert_false(e->closed);
  assert_int_equal(e->in_bad, 0);
  assert_int_equal(e->in_ok, 7);
  t_env_del(e);
}

/* A frame whose body was altered after sealing closes the connection (once) with the decoder's
 * reason; the frames before it were delivered. */
static void reads_bad_body_closes(void **state) {
  struct t_env *e = t_env_new(state, 256, 0);
  const uint32_t sizes[] = {256, 256 + 1000, 256 + 1000};
  t_in_frames(e, sizes, 3);
  e->in_stream[256 + 256 + 1000 + 256 + 10] ^= 0x40; /* the third frame's body */
  const size_t pieces[] = {100};
  t_peer_write_pieces(e, pieces, 1);
  uint64_t end = vsrt_now() + 10 * T_SEC;
  while (!e->closed && vsrt_now() < end) vsri_io_run(e->io, (int64_t)T_MS);
  assert_true(e->closed);
  assert_int_equal(e->closed_count, 1);
  assert_int_equal(e->in_ok, 2);
  assert_int_equal(e->in_bad, 0);
  print_message("closed with %s\n", vsr_errname(e->close_reason));
  assert_true(e->close_reason < 0);
  assert_int_not_equal(e->close_reason, VSR_ECLOSED);
  t_env_del(e);
}

/* Writes as much of the peer's stream as the sockets take without running the loop (a burst
 * that is queued before the connection reads), then the rest while turning the loop. */
static void t_peer_write_burst(struct t_env *e) {
  size_t off = 0;
  while (off < e->in_len) {
    ssize_t w = send(e->peer, e->in_stream + off, e->in_len - off, MSG_NOSIGNAL);
    if (w <= 0) break;
    off += (size_t)w;
  }
  uint64_t end = vsrt_now() + 20 * T_SEC;
  while (off < e->in_len && vsrt_now() < end) {
    ssize_t w = send(e->peer, e->in_stream + off, e->in_len - off, MSG_NOSIGNAL);
    if (w > 0) off += (size_t)w;
    vsri_io_run(e->io, 0);
  }
  assert_int_equal(off, e->in_len);
}

static void t_read_all(struct t_env *e) {
  uint64_t end = vsrt_now() + 10 * T_SEC;
  while (e->in_ok + e->in_bad < e->in_frames && !e->closed && vsrt_now() < end) {
    vsri_io_run(e->io, (int64_t)T_MS);
  }
  assert_false(e->closed);
  assert_int_equal(e->in_bad, 0);
  assert_int_equal(e->in_ok, e->in_frames);
}

/* Read sizing (rbusy in stream.h): a burst queued before the connection reads fills the
 * first 64 KiB loop-buffer read, so the reads that follow take the loop's 256 KiB buffers
 * (counted by the io layer); once the burst is read, a small frame is read into a small
 * buffer again, and the connection holds no pool buffer at any point between frames. Frames
 * around the direct-read threshold (16 KiB still missing) and one larger than the big buffer
 * arrive byte-exact through both kinds of read. */
static void reads_burst_takes_big_buffers_then_small_again(void **state) {
  struct t_env *e = t_env_new(state, 256, 0);
  const uint32_t sizes[] = {256 + 16000, 256 + 16383, 256 + 16384, 256 + 16385, 256,
                            256 + 300000, 300, 256 + 16000, 256 + 16000, 256 + 16000,
                            256 + 16000, 256 + 16000, 256 + 40000, 256 + 1, 256 + 16000, 256};
  t_in_frames(e, sizes, 16);
  assert_true(e->in_len > (128u << 10));
  struct vsri_io_stats st0, st1, st2;
  vsri_io_stats(e->io, &st0);
  t_peer_write_burst(e);
  t_read_all(e);
  vsri_io_stats(e->io, &st1);
  print_message("burst: %llu reads, %llu of them full, %llu into big buffers\n",
                (unsigned long long)(st1.recvs - st0.recvs),
                (unsigned long long)(st1.recv_full - st0.recv_full),
                (unsigned long long)(st1.recv_big - st0.recv_big));
  assert_true(st1.recv_full > st0.recv_full);
  assert_true(st1.recv_big > st0.recv_big); /* a full read moved it to the big buffers */
  for (int i = 0; i < 5; i++) vsri_io_run(e->io, (int64_t)T_MS);
  struct vsr_pool_stats ps;
  vsr_pool_stats(e->pool, &ps);
  assert_int_equal(ps.live, 0); /* the idle connection holds no buffer */
  /* One small frame: the read before it did not fill its buffer, so it is a small read. */
  free(e->in_stream);
  const uint32_t small[] = {256 + 100};
  t_in_frames(e, small, 1);
  e->in_ok = e->in_bad = 0;
  const size_t pieces[] = {356};
  t_peer_write_pieces(e, pieces, 1);
  t_read_all(e);
  vsri_io_stats(e->io, &st2);
  assert_true(st2.recvs > st1.recvs);
  assert_int_equal(st2.recv_big, st1.recv_big);
  t_env_del(e);
}

/* One frame of a 70,000-byte body (above the direct-read threshold and the 64 KiB allowance)
 * arrives intact whatever the first read holds: sixteen copies, each written in two parts
 * split at a different boundary (inside the header, at it, around where 16 KiB of body is
 * still missing, around the allowance, near the end), the loop turning between the parts. */
static void reads_large_frame_split_at_boundaries(void **state) {
  struct t_env *e = t_env_new(state, 256, 0);
  const uint32_t size = 256 + 70000;
  uint32_t sizes[16];
  for (int i = 0; i < 16; i++) sizes[i] = size;
  t_in_frames(e, sizes, 16);
  const size_t splits[16] = {1, 255, 256, 257, 1000, 16384, size - 16385, size - 16384,
                             size - 16383, 65536, 65792, 65793, size - 257, size - 256,
                             size - 255, size - 1};
  for (uint32_t i = 0; i < 16; i++) {
    const uint8_t *f = e->in_stream + (size_t)i * size;
    size_t parts[2] = {splits[i], size - splits[i]}, off = 0;
    for (int p = 0; p < 2; p++) {
      size_t end_off = off + parts[p];
      uint64_t end = vsrt_now() + 10 * T_SEC;
      while (off < end_off && vsrt_now() < end) {
        ssize_t w = send(e->peer, f + off, end_off - off, MSG_NOSIGNAL);
        if (w > 0) off += (size_t)w;
        for (int t = 0; t < 3; t++) vsri_io_run(e->io, 0);
      }
      assert_int_equal(off, end_off);
    }
    uint64_t end = vsrt_now() + 10 * T_SEC;
    while (e->in_ok + e->in_bad < i + 1 && !e->closed && vsrt_now() < end) {
      vsri_io_run(e->io, (int64_t)T_MS);
    }
    assert_false(e->closed);
    assert_int_equal(e->in_bad, 0);
    assert_int_equal(e->in_ok, i + 1);
  }
  t_env_del(e);
}

#define T_BOTH(fn) cmocka_unit_test_prestate(fn, &t_epoll), cmocka_unit_test_prestate(fn, &t_uring)

int main(void) {
  const struct CMUnitTest tests[] = {
      T_BOTH(partial_writes_byte_exact),
      T_BOTH(iov_max_batches_split),
      T_BOTH(drain_on_close_writes_all),
      T_BOTH(close_without_drain_writes_nothing),
      T_BOTH(drain_bounded_by_timeout),
      T_BOTH(reads_split_frames_in_order),
      T_BOTH(reads_bad_body_closes),
      T_BOTH(reads_burst_takes_big_buffers_then_small_again),
      T_BOTH(reads_large_frame_split_at_boundaries),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
