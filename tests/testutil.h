/* Helpers shared by tests: backend skip, bounded waits, loopback addresses. */
#ifndef VSR_TESTUTIL_H
#define VSR_TESTUTIL_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "io/io.h"
#include "vsrbus/error.h"

#define VSRT_SKIP 77

/* Exits 77 (skip) when VSRBUS_IO forces a backend this machine cannot run. */
static inline void vsrt_require_backend(void) {
  const char *want = getenv("VSRBUS_IO");
  if (!want || strcmp(want, "uring") != 0) return;
  struct vsri_io *io = NULL;
  struct vsri_io_options o;
  vsri_io_options_default(&o);
  o.backend = VSRI_IO_URING;
  int err = vsri_io_new(&io, &o);
  if (err) {
    fprintf(stderr, "skip: io_uring unavailable here (%s)\n", vsr_strerror(err));
    exit(VSRT_SKIP);
  }
  vsri_io_del(io);
}

static inline uint64_t vsrt_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* A blocking TCP socket connected to "a.b.c.d:port" (10 s receive timeout), or -1. */
static inline int vsrt_connect(const char *addr) {
  char host[64];
  snprintf(host, sizeof host, "%s", addr);
  char *colon = strrchr(host, ':');
  if (!colon) return -1;
  *colon = 0;
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
  inet_pton(AF_INET, host, &a.sin_addr);
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
    if (fd >= 0) close(fd);
    return -1;
  }
  struct timeval tv = {10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

static inline bool vsrt_write_all(int fd, const void *p, size_t n) {
  const uint8_t *b = p;
  while (n > 0) {
    ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    b += w;
    n -= (size_t)w;
  }
  return true;
}

#endif
