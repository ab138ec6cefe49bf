/* Socket address text: "host:port", "[v6]:port", "localhost:port". Parsed once at set-up.
 * And the errno -> error-code maps of the three ways an address fails: it does not parse
 * (VSR_EADDR), it cannot be bound (VSR_EADDRINUSE, VSR_EBIND), it cannot be reached
 * (VSR_ECONNREFUSED, VSR_EUNREACH, VSR_ETIMEDOUT, ...). */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "transport/transport.h"
#include "vsrbus/error.h"

/* Why |text| did not parse, for log lines; static strings only. */
static _Thread_local const char *addr_why;

int vsri_parse_addr(const char *text, struct sockaddr_storage *out, socklen_t *len) {
  addr_why = "no address";
  if (!text) return VSR_EADDR;
  char host[256];
  const char *port;
  if (text[0] == '[') {
    const char *end = strchr(text, ']');
    addr_why = "expected [v6-address]:port";
    if (!end || end[1] != ':' || (size_t)(end - text - 1) >= sizeof host) return VSR_EADDR;
    memcpy(host, text + 1, (size_t)(end - text - 1));
    host[end - text - 1] = 0;
    port = end + 2;
  } else {
    const char *colon = strrchr(text, ':');
    addr_why = colon ? "host name too long" : "expected host:port";
    if (!colon || (size_t)(colon - text) >= sizeof host) return VSR_EADDR;
    memcpy(host, text, (size_t)(colon - text));
    host[colon - text] = 0;
    port = colon + 1;
  }
  char *endp;
  long p = strtol(port, &endp, 10);
  addr_why = "the port is not a number in 0..65535";
  if (!*port || *endp || p < 0 || p > 65535) return VSR_EADDR;
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_flags = AI_NUMERICSERV}, *res = NULL;
  int rc = getaddrinfo(host[0] ? host : "127.0.0.1", port, &hints, &res);
  if (rc != 0 || !res) {
    addr_why = rc ? gai_strerror(rc) : "the host has no address";
    return VSR_EADDR;
  }
  memcpy(out, res->ai_addr, res->ai_addrlen);
  *len = res->ai_addrlen;
  freeaddrinfo(res);
  addr_why = "ok";
  return 0;
}

const char *vsri_parse_addr_why(void) { return addr_why; }

int vsri_bind_reason(int err) { return err == EADDRINUSE ? VSR_EADDRINUSE : VSR_EBIND; }

int vsri_sock_reason(int err) {
  switch (err) {
  case ECONNREFUSED: return VSR_ECONNREFUSED;
  case EHOSTUNREACH:
  case ENETUNREACH: return VSR_EUNREACH;
  case ETIMEDOUT: return VSR_ETIMEDOUT;
  case ECONNRESET:
  case EPIPE: return VSR_ERESET;
  case ENOMEM: return VSR_ENOMEM; /* e.g. the io layer could not track the fd */
  default: return VSR_EIO;
  }
}

void vsri_format_addr(const struct sockaddr *sa, char *buf, size_t len) {
  char host[INET6_ADDRSTRLEN] = "?";
  unsigned port = 0;
  if (sa->sa_family == AF_INET) {
    const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
    inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
    port = ntohs(in->sin_port);
    snprintf(buf, len, "%s:%u", host, port);
  } else if (sa->sa_family == AF_INET6) {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
    inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
    port = ntohs(in6->sin6_port);
    snprintf(buf, len, "[%s]:%u", host, port);
  } else {
    snprintf(buf, len, "?");
  }
}
