/* Does zero-copy send pay on this host's paths? (issue 18 item 6) One TCP connection on
 * 127.0.0.1 (run it under `ip netns exec` for another loopback), one sender writing
 * SIZE-byte buffers (16 rotating buffers) for SECONDS, one receiver (forked child) counting:
 *   --mode copy     send()
 *   --mode msgzc    send(MSG_ZEROCOPY) with SO_ZEROCOPY, completions reaped from the error
 *                   queue (the buffer may be reused only after its notification: 16 buffers
 *                   and a reap before each send keep that true for this measurement)
 *   --mode uring    io_uring IORING_OP_SEND, one in flight
 *   --mode uringzc  io_uring IORING_OP_SEND_ZC, one in flight (+ its notification CQE)
 * Prints "mode,size,MB/s,notifications,copied" (copied: notifications whose data the kernel
 * copied after all, SO_EE_CODE_ZEROCOPY_COPIED). Build: bench/zerocopy.sh. Not part of run.sh:
 * the answer (docs/performance.md) is a property of the kernel's paths, not a figure to track. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/errqueue.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef SO_ZEROCOPY
#define SO_ZEROCOPY 60
#endif
#ifndef MSG_ZEROCOPY
#define MSG_ZEROCOPY 0x4000000
#endif
#define NBUF 16

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static unsigned long notifs, copied;

/* MSG_ZEROCOPY: every pending completion on the error queue (ranges of send calls). */
static void reap_errqueue(int fd) {
  char ctl[128];
  for (;;) {
    struct msghdr m = {.msg_control = ctl, .msg_controllen = sizeof ctl};
    if (recvmsg(fd, &m, MSG_ERRQUEUE | MSG_DONTWAIT) < 0) return;
    struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
    if (!cm) return;
    struct sock_extended_err *e = (struct sock_extended_err *)CMSG_DATA(cm);
    if (e->ee_origin != SO_EE_ORIGIN_ZEROCOPY) continue;
    notifs += e->ee_data - e->ee_info + 1;
    if (e->ee_code & SO_EE_CODE_ZEROCOPY_COPIED) copied++;
  }
}

int main(int argc, char **argv) {
  const char *mode = "copy";
  size_t size = 1u << 20;
  double secs = 2;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--mode")) mode = argv[i + 1];
    else if (!strcmp(argv[i], "--size")) size = strtoul(argv[i + 1], NULL, 0);
    else if (!strcmp(argv[i], "--seconds")) secs = atof(argv[i + 1]);
  }
  int m = !strcmp(mode, "copy") ? 0 : !strcmp(mode, "msgzc") ? 1 : !strcmp(mode, "uring") ? 2
        : !strcmp(mode, "uringzc") ? 3 : -1;
  if (m < 0 || size == 0 || secs <= 0) {
    fprintf(stderr, "usage: zerocopy --mode copy|msgzc|uring|uringzc [--size B] [--seconds S]\n");
    return 2;
  }
  alarm((unsigned)secs + 30);
  int l = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t al = sizeof a;
  if (l < 0 || bind(l, (void *)&a, sizeof a) || listen(l, 1) || getsockname(l, (void *)&a, &al)) {
    perror("listen");
    return 1;
  }
  int res[2];
  if (pipe(res)) return 1;
  pid_t pid = fork();
  if (pid == 0) {
    int fd = accept(l, 0, 0);
    char *b = malloc(1u << 20);
    unsigned long long tot = 0;
    double t0 = 0;
    ssize_t n;
    while (fd >= 0 && b && (n = recv(fd, b, 1u << 20, 0)) > 0) {
      if (!tot) t0 = now();
      tot += (unsigned long long)n;
    }
    double mbs = tot ? (double)tot / (now() - t0) / 1e6 : 0;
    _exit(write(res[1], &mbs, sizeof mbs) == sizeof mbs ? 0 : 1);
  }
  close(l);
  int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  if (fd < 0 || connect(fd, (void *)&a, sizeof a)) return 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (m == 1 && setsockopt(fd, SOL_SOCKET, SO_ZEROCOPY, &one, sizeof one)) {
    perror("SO_ZEROCOPY");
    return 77;
  }
  struct io_uring ring;
  if (m >= 2 && io_uring_queue_init(8, &ring, 0)) return 77;
  char *bufs[NBUF];
  for (int i = 0; i < NBUF; i++) {
    if (!(bufs[i] = malloc(size))) return 1;
    memset(bufs[i], i, size);
  }
  double end = now() + secs;
  for (unsigned i = 0; now() < end; i++) {
    char *b = bufs[i % NBUF];
    size_t off = 0;
    while (off < size) {
      if (m <= 1) {
        if (m == 1) reap_errqueue(fd);
        ssize_t w = send(fd, b + off, size - off, m ? MSG_ZEROCOPY : 0);
        if (w < 0 && (errno == ENOBUFS || errno == EAGAIN || errno == EINTR)) continue;
        if (w < 0) {
          perror("send");
          return 1;
        }
        off += (size_t)w;
        continue;
      }
      struct io_uring_sqe *s = io_uring_get_sqe(&ring);
      if (m == 2) io_uring_prep_send(s, fd, b + off, size - off, 0);
      else io_uring_prep_send_zc(s, fd, b + off, size - off, 0, 0);
      io_uring_submit(&ring);
      for (int got = 0; !got;) {
        struct io_uring_cqe *c;
        if (io_uring_wait_cqe(&ring, &c)) return 1;
        if (c->flags & IORING_CQE_F_NOTIF) {
          notifs++;
        } else {
          if (c->res < 0) {
            fprintf(stderr, "send: %s\n", strerror(-c->res));
            return c->res == -EINVAL ? 77 : 1; /* kernel without SEND_ZC */
          }
          off += (size_t)c->res;
          got = 1;
        }
        io_uring_cqe_seen(&ring, c);
      }
    }
  }
  if (m == 1) reap_errqueue(fd);
  shutdown(fd, SHUT_WR);
  close(fd);
  double mbs = 0;
  if (read(res[0], &mbs, sizeof mbs) != sizeof mbs) return 1;
  waitpid(pid, NULL, 0);
  printf("%s,%zu,%.1f,%lu,%lu\n", mode, size, mbs, notifs, copied);
  return 0;
}
