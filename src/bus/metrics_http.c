/* The metrics endpoint: a tiny HTTP/1.1 server on the bus's loop (io layer completions, no
 * thread, no blocking call). One request per connection: GET /metrics gets the text of
 * vsr_bus_metrics_render, any other path 404, any other method 405, a request that does not
 * parse 400, one larger than METRICS_REQ_MAX 431; then the connection closes. A connection is
 * closed when its request and response take longer than metrics_timeout_ns, and at most
 * metrics_max_conns are served at once (more are closed on accept). Requests are parsed by
 * libhttp-parser. */
#include <errno.h>
#include <http_parser.h>
#include <stdio.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bus/bus_impl.h"
#include "util/alloc.h"
#include "util/log.h"

#define METRICS_REQ_MAX 8192             /* bytes of one request, headers included */
#define METRICS_BACKOFF_NS 100000000ull  /* pause after an accept error (EMFILE, ...) */
#define METRICS_BODY_GUESS 16384         /* first render buffer; grown to what is needed */

struct mconn {
  struct vsri_metrics_srv *srv;
  int fd; /* -1: free slot */
  bool closing, complete;
  char name[64];
  struct vsri_completion rc, wc, tc;
  http_parser hp;
  char url[64];
  size_t url_len;
  bool url_long;
  char *req; /* METRICS_REQ_MAX bytes, allocated on first use and kept */
  size_t req_len;
  char hdr[256];
  char *body;
  size_t body_len;
  struct iovec iov[2];
  int iovcnt;
  struct vsri_io_grave grave; /* vsri_metrics_stop: waits for the kernel (req is read into) */
};

struct vsri_metrics_srv {
  struct vsr_bus *bus; /* NULL once stopped */
  struct vsri_io *io;
  int fd;
  bool closing;
  struct vsri_completion ac, backoff;
  struct sockaddr_storage peer;
  socklen_t peer_len;
  char addr[64];
  uint64_t timeout_ns;
  uint32_t nconns;
  struct mconn *conns;
  struct vsri_metrics_counts counts;
  struct vsri_io_grave grave; /* vsri_metrics_stop: the listener's accept */
  uint32_t parts;             /* released blocks (the server, its connections) not yet back */
};

static void m_accept_next(struct vsri_metrics_srv *s);

static void m_srv_free_cb(struct vsri_io *io, struct vsri_completion *ac, int32_t res) {
  (void)io;
  (void)res;
  struct vsri_metrics_srv *s = ac->ctx;
  for (uint32_t i = 0; i < s->nconns; i++) vsri_free(s->conns[i].req);
  vsri_free(s->conns);
  vsri_free(s);
}

/* Once stopped and idle: closes the listening socket (through the io layer, which forgets the
 * descriptor), then frees the server. */
static void m_srv_maybe_free(struct vsri_metrics_srv *s) {
  if (!s->closing || s->fd < 0 || s->ac.pending || s->backoff.pending) return;
  for (uint32_t i = 0; i < s->nconns; i++) {
    if (s->conns[i].fd >= 0) return;
  }
  int fd = s->fd;
  s->fd = -1;
  vsri_io_close(s->io, &s->ac, fd, m_srv_free_cb, s);
}

static void m_conn_closed_cb(struct vsri_io *io, struct vsri_completion *rc, int32_t res) {
  (void)io;
  (void)res;
  struct mconn *c = rc->ctx;
  c->fd = -1;
  vsri_free(c->body);
  c->body = NULL;
  m_srv_maybe_free(c->srv);
}

/* Closes |c| once none of its operations is pending (the last callback comes back here). */
static void m_conn_close(struct mconn *c) {
  struct vsri_io *io = c->srv->io;
  c->closing = true;
  if (c->rc.pending) vsri_io_cancel(io, &c->rc);
  if (c->wc.pending) vsri_io_cancel(io, &c->wc);
  if (c->tc.pending) vsri_io_cancel(io, &c->tc);
  if (c->rc.pending || c->wc.pending || c->tc.pending) return;
  vsri_io_close(io, &c->rc, c->fd, m_conn_closed_cb, c);
}

static void m_write_done(struct vsri_io *io, struct vsri_completion *wc, int32_t res) {
  (void)io;
  struct mconn *c = wc->ctx;
  if (c->closing || res <= 0) {
    m_conn_close(c);
    return;
  }
  size_t n = (size_t)res;
  while (c->iovcnt > 0 && n >= c->iov[0].iov_len) {
    n -= c->iov[0].iov_len;
    c->iov[0] = c->iov[1];
    c->iovcnt--;
  }
  if (c->iovcnt == 0) {
    m_conn_close(c); /* Connection: close */
    return;
  }
  c->iov[0].iov_base = (char *)c->iov[0].iov_base + n;
  c->iov[0].iov_len -= n;
  vsri_io_sendv(c->srv->io, &c->wc, c->fd, c->iov, c->iovcnt, m_write_done, c);
}

/* Sends the response; |owned| bodies are freed when the connection closes. */
static void m_respond(struct mconn *c, int status, const char *reason, const char *type,
                      const char *extra, const char *body, size_t body_len, bool owned) {
  if (owned) c->body = (char *)body;
  int n = snprintf(c->hdr, sizeof c->hdr,
                   "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s"
                   "Connection: close\r\n\r\n",
                   status, reason, type, body_len, extra ? extra : "");
  c->iov[0] = (struct iovec){.iov_base = c->hdr, .iov_len = (size_t)n};
  c->iov[1] = (struct iovec){.iov_base = (char *)body, .iov_len = body_len};
  c->iovcnt = body_len ? 2 : 1;
  vsri_io_sendv(c->srv->io, &c->wc, c->fd, c->iov, c->iovcnt, m_write_done, c);
}

static void m_respond_text(struct mconn *c, int status, const char *reason, const char *extra,
                           const char *text) {
  m_respond(c, status, reason, "text/plain; charset=utf-8", extra, text, strlen(text), false);
}

static void m_serve(struct mconn *c) {
  struct vsri_metrics_srv *s = c->srv;
  if (c->hp.method != HTTP_GET) {
    s->counts.bad_method++;
    m_respond_text(c, 405, "Method Not Allowed", "Allow: GET\r\n", "method not allowed\n");
    return;
  }
  size_t path_len = strcspn(c->url, "?");
  if (c->url_long || path_len != 8 || memcmp(c->url, "/metrics", 8) != 0) {
    s->counts.not_found++;
    m_respond_text(c, 404, "Not Found", NULL, "not found\n");
    return;
  }
  s->counts.scrapes++;
  size_t cap = METRICS_BODY_GUESS, need = 0;
  char *body = NULL;
  for (int i = 0; i < 4; i++) {
    char *nb = vsri_realloc(body, cap);
    if (!nb) break;
    body = nb;
    if (vsr_bus_metrics_render(s->bus, body, cap, &need) == 0) {
      m_respond(c, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", NULL, body, need,
                true);
      return;
    }
    cap = need + 4096; /* room for a line or two more by the next render */
  }
  vsri_free(body);
  VSRI_WARN("VSR-METRICS", "%s metrics: no memory for the response; closing", c->name);
  m_conn_close(c);
}

static int m_on_url(http_parser *hp, const char *at, size_t len) {
  struct mconn *c = hp->data;
  if (c->url_len + len >= sizeof c->url) {
    c->url_long = true;
    return 0;
  }
  memcpy(c->url + c->url_len, at, len);
  c->url_len += len;
  c->url[c->url_len] = '\0';
  return 0;
}

static int m_on_complete(http_parser *hp) {
  struct mconn *c = hp->data;
  c->complete = true;
  http_parser_pause(hp, 1); /* one request per connection: ignore what follows */
  return 0;
}

static const http_parser_settings m_settings = {
    .on_url = m_on_url,
    .on_message_complete = m_on_complete,
};

static void m_recv_done(struct vsri_io *io, struct vsri_completion *rc, int32_t res) {
  struct mconn *c = rc->ctx;
  if (c->closing || res <= 0) {
    m_conn_close(c); /* peer closed, error, or canceled */
    return;
  }
  const char *data = c->req + c->req_len;
  c->req_len += (size_t)res;
  http_parser_execute(&c->hp, &m_settings, data, (size_t)res);
  enum http_errno e = HTTP_PARSER_ERRNO(&c->hp);
  if (c->complete) {
    m_serve(c);
    return;
  }
  if (e != HPE_OK) {
    c->srv->counts.bad_request++;
    VSRI_INFO("VSR-METRICS", "%s metrics: bad request: %s; closing", c->name,
              http_errno_description(e));
    m_respond_text(c, 400, "Bad Request", NULL, "bad request\n");
    return;
  }
  if (c->req_len == METRICS_REQ_MAX) {
    c->srv->counts.oversize++;
    VSRI_INFO("VSR-METRICS", "%s metrics: request larger than %d bytes; closing", c->name,
              METRICS_REQ_MAX);
    m_respond_text(c, 431, "Request Header Fields Too Large", NULL, "request too large\n");
    return;
  }
  vsri_io_recv(io, &c->rc, c->fd, c->req + c->req_len, METRICS_REQ_MAX - c->req_len,
               m_recv_done, c);
}

static void m_timeout_done(struct vsri_io *io, struct vsri_completion *tc, int32_t res) {
  (void)io;
  struct mconn *c = tc->ctx;
  if (c->closing) {
    m_conn_close(c);
    return;
  }
  if (res < 0) return; /* canceled while open: cannot happen, closing cancels */
  c->srv->counts.timeout++;
  VSRI_INFO("VSR-METRICS", "%s metrics: request not served within %llu ms; closing", c->name,
            (unsigned long long)(c->srv->timeout_ns / 1000000));
  m_conn_close(c);
}

static void m_backoff_done(struct vsri_io *io, struct vsri_completion *bc, int32_t res) {
  (void)io;
  (void)res;
  struct vsri_metrics_srv *s = bc->ctx;
  if (s->closing) m_srv_maybe_free(s);
  else m_accept_next(s);
}

static void m_accept_done(struct vsri_io *io, struct vsri_completion *ac, int32_t res) {
  struct vsri_metrics_srv *s = ac->ctx;
  if (s->closing) {
    if (res >= 0) close(res);
    m_srv_maybe_free(s);
    return;
  }
  if (res < 0) {
    if (-res != ECONNABORTED && -res != EINTR) {
      VSRI_WARN("VSR-METRICS", "%s metrics: accept: %s", s->addr, strerror(-res));
      vsri_io_timeout(io, &s->backoff, METRICS_BACKOFF_NS, m_backoff_done, s);
      return;
    }
    m_accept_next(s);
    return;
  }
  struct mconn *c = NULL;
  for (uint32_t i = 0; i < s->nconns && !c; i++) {
    if (s->conns[i].fd < 0) c = &s->conns[i];
  }
  char name[64];
  vsri_format_addr((struct sockaddr *)&s->peer, name, sizeof name);
  if (c && !c->req) c->req = vsri_malloc(METRICS_REQ_MAX);
  if (!c || !c->req) {
    s->counts.busy++;
    VSRI_WARN("VSR-METRICS", "%s metrics: %s; closing", name,
              c ? "no memory for the request" : "all scrape slots busy");
    close(res);
    m_accept_next(s);
    return;
  }
  char *req = c->req;
  *c = (struct mconn){.srv = s, .fd = res, .req = req};
  memcpy(c->name, name, sizeof c->name);
  http_parser_init(&c->hp, HTTP_REQUEST);
  c->hp.data = c;
  vsri_io_timeout(io, &c->tc, s->timeout_ns, m_timeout_done, c);
  vsri_io_recv(io, &c->rc, c->fd, c->req, METRICS_REQ_MAX, m_recv_done, c);
  m_accept_next(s);
}

static void m_accept_next(struct vsri_metrics_srv *s) {
  s->peer_len = sizeof s->peer;
  vsri_io_accept(s->io, &s->ac, s->fd, &s->peer, &s->peer_len, m_accept_done, s);
}

int vsri_metrics_start(struct vsr_bus *bus, const char *addr) {
  const struct vsr_bus_options *o = &bus->opts;
  if (o->metrics_max_conns == 0 || o->metrics_timeout_ns == 0) {
    VSRI_ERROR("VSR-CONFIG", "metrics_max_conns and metrics_timeout_ns must be > 0");
    return VSR_ECONFIG;
  }
  struct sockaddr_storage sa;
  socklen_t len;
  if (vsri_parse_addr(addr, &sa, &len) < 0) {
    VSRI_ERROR("VSR-LISTEN", "metrics: cannot parse address '%s': %s", addr,
               vsri_parse_addr_why());
    return VSR_EADDR;
  }
  int fd = socket(sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP), one = 1;
  if (fd < 0) return VSR_EIO;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(fd, (struct sockaddr *)&sa, len) < 0 || listen(fd, 64) < 0) {
    int err = errno;
    VSRI_ERROR("VSR-LISTEN", "metrics: cannot listen on %s: %s", addr, strerror(err));
    close(fd);
    return vsri_bind_reason(err);
  }
  struct vsri_metrics_srv *s = vsri_calloc(1, sizeof *s);
  struct mconn *conns = s ? vsri_calloc(o->metrics_max_conns, sizeof *conns) : NULL;
  if (!conns) {
    vsri_free(s);
    close(fd);
    return VSR_ENOMEM;
  }
  s->bus = bus;
  s->io = bus->loop->io;
  s->fd = fd;
  s->timeout_ns = o->metrics_timeout_ns;
  s->nconns = o->metrics_max_conns;
  s->conns = conns;
  for (uint32_t i = 0; i < s->nconns; i++) conns[i].fd = -1;
  len = sizeof sa;
  getsockname(fd, (struct sockaddr *)&sa, &len);
  vsri_format_addr((struct sockaddr *)&sa, s->addr, sizeof s->addr);
  bus->metrics = s;
  m_accept_next(s);
  VSRI_INFO("VSR-LISTEN", "metrics listening on http://%s/metrics", s->addr);
  return 0;
}

/* One released part came back; the last one frees the server (io.h, "Letting go"). */
static void m_part_gone(void *arg) {
  struct vsri_metrics_srv *s = arg;
  if (--s->parts > 0) return;
  for (uint32_t i = 0; i < s->nconns; i++) {
    vsri_free(s->conns[i].req);
    vsri_free(s->conns[i].body);
  }
  vsri_free(s->conns);
  vsri_free(s);
}

/* Synchronous: every socket closes now; no loop turn is needed. */
void vsri_metrics_stop(struct vsr_bus *bus) {
  struct vsri_metrics_srv *s = bus->metrics;
  if (!s) return;
  bus->metrics = NULL;
  s->bus = NULL;
  s->closing = true;
  s->parts = 1;
  for (uint32_t i = 0; i < s->nconns; i++) {
    struct mconn *c = &s->conns[i];
    if (c->fd < 0) continue;
    /* A close under way closes the fd itself: it is waited for, not repeated. */
    int fd = c->rc.pending && c->rc.op == VSRI_OP_CLOSE ? -1 : c->fd;
    c->fd = -1;
    s->parts++;
    struct vsri_completion *cs[] = {&c->rc, &c->wc, &c->tc};
    vsri_io_release(s->io, &c->grave, cs, sizeof cs / sizeof cs[0], m_part_gone, s);
    vsri_io_close_now(s->io, fd);
  }
  struct vsri_io *io = s->io;
  int fd = s->fd;
  s->fd = -1;
  vsri_io_timeout_drop(io, &s->backoff);
  struct vsri_completion *cs[] = {&s->ac};
  vsri_io_release(io, &s->grave, cs, 1, m_part_gone, s);
  vsri_io_close_now(io, fd);
}

const char *vsri_metrics_addr(const struct vsr_bus *bus) {
  return bus->metrics ? bus->metrics->addr : NULL;
}

void vsri_metrics_counts(const struct vsr_bus *bus, struct vsri_metrics_counts *out) {
  if (bus->metrics) *out = bus->metrics->counts;
  else *out = (struct vsri_metrics_counts){0};
}
