/* `vsrbus demo`: the three `vsrbus node` processes it runs (ports, secret, certificate, spawn,
 * kill, restart, stop) and the files they leave in the temp dir. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cmds.h"
#include "crypto/cert.h"
#include "demo.h"

/* ---- the nodes ------------------------------------------------------------------------- */

/* Picks |n| distinct free loopback ports (all bound at once, then released). */
static int demo_ports(int *ports, int n) {
  int fds[2 * DEMO_REPLICAS];
  int rc = 0;
  for (int i = 0; i < n; i++) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    fds[i] = socket(AF_INET, SOCK_STREAM, 0);
    if (fds[i] < 0 || bind(fds[i], (struct sockaddr *)&a, sizeof a) < 0 ||
        getsockname(fds[i], (struct sockaddr *)&a, &len) < 0) {
      rc = -1;
    }
    ports[i] = ntohs(a.sin_port);
  }
  for (int i = 0; i < n; i++) {
    if (fds[i] >= 0) close(fds[i]);
  }
  return rc;
}

/* A free loopback UDP port for the primary's QUIC listener (bound, then released). */
static int demo_udp_port(void) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof a;
  int fd = socket(AF_INET, SOCK_DGRAM, 0), port = -1;
  if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
      getsockname(fd, (struct sockaddr *)&a, &len) == 0) {
    port = ntohs(a.sin_port);
  }
  if (fd >= 0) close(fd);
  return port;
}

/* QUIC: a self-signed certificate for 127.0.0.1 in |d->dir| (cert.pem, key.pem). */
static int demo_cert(struct demo *d) {
  struct vsri_cert *c = NULL;
  int err = vsri_cert_generate(&c, "localhost", 1);
  if (!err) err = vsri_cert_write(c, d->dir);
  vsri_cert_free(c);
  if (err) {
    fprintf(stderr, "vsrbus demo: cannot make a certificate: %s\n", vsr_strerror(err));
    return -1;
  }
  snprintf(d->cert, sizeof d->cert, "%s/cert.pem", d->dir);
  return 0;
}

/* A fresh 32-byte secret, written as 64 hex digits to a 0600 file in |d->dir|. */
static int demo_secret(struct demo *d, char *path, size_t len) {
  uint8_t key[32];
  if (getrandom(key, sizeof key, 0) != (ssize_t)sizeof key) return -1;
  snprintf(path, len, "%s/secret", d->dir);
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
  if (fd < 0) return -1;
  char hex[65];
  for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", key[i]);
  ssize_t w = write(fd, hex, 64);
  close(fd);
  memset(key, 0, sizeof key);
  return w == 64 ? 0 : -1;
}

/* A "Key:   N kB" line of /proc/PID/status, in KiB (0 if absent). */
uint64_t demo_status_kib(pid_t pid, const char *key) {
  char path[64], line[256];
  unsigned long long kib = 0;
  snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
  FILE *f = fopen(path, "r");
  while (f && fgets(line, sizeof line, f)) {
    if (strncmp(line, key, strlen(key)) == 0) {
      kib = strtoull(line + strlen(key), NULL, 10);
      break;
    }
  }
  if (f) fclose(f);
  return kib;
}

static int demo_log_count(const char *path, const char *needle) {
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  char line[512];
  int n = 0;
  while (fgets(line, sizeof line, f)) n += strstr(line, needle) != NULL;
  fclose(f);
  return n;
}

static pid_t demo_spawn(struct demo *d, int i) {
  char idx[8], tcp[32], quic[32], key[96], timeout[16], dump[96], log[96], batch[16];
  snprintf(idx, sizeof idx, "%d", i);
  const char *host = d->netns ? d->ns_addr[i] : "127.0.0.1";
  snprintf(tcp, sizeof tcp, "%s:%d", host, d->client_ports[i]);
  snprintf(quic, sizeof quic, "%s:%d", host, d->quic_ports[i]);
  snprintf(key, sizeof key, "%s/key.pem", d->dir);
  snprintf(timeout, sizeof timeout, "%d", d->primary_timeout_ms);
  snprintf(dump, sizeof dump, "%s/commits.%d.txt", d->dir, i);
  snprintf(log, sizeof log, "%s/node%d.log", d->dir, i);
  const char *argv[40] = {"vsrbus", "node", "--cluster", d->cluster_name, "--replica", idx,
                          "--replicas", d->replicas, "--secret-file", d->secret_path, "--tcp", tcp,
                          "--reconnect-ms", "200", "--handshake-grace-ms", "2000",
                          "--primary-timeout-ms", timeout};
  int n = 18;
  if (d->io) {
    argv[n++] = "--io";
    argv[n++] = d->io;
  }
  if (d->batch_max > 0) {
    snprintf(batch, sizeof batch, "%d", d->batch_max);
    argv[n++] = "--prepare-batch";
    argv[n++] = batch;
  }
  if (d->dump) {
    argv[n++] = "--dump-commits";
    argv[n++] = dump;
  }
  if (d->cert[0]) { /* every replica serves clients: the primary moves */
    const char *q[] = {"--quic", quic, "--cert", d->cert, "--key", key};
    for (size_t j = 0; j < sizeof q / sizeof q[0]; j++) argv[n++] = q[j];
  } else {
    argv[n++] = "--quic"; /* the node's default QUIC port would collide between replicas */
    argv[n++] = "off";
  }
  argv[n] = NULL;
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid != 0) return pid;
  /* A demo killed outright must not leave its replicas running. */
  if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || getppid() != parent) _exit(127);
  if (demo_netns_enter_node(d, i) != 0) _exit(126); /* --netns: its own namespace */
  int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600); /* a restart appends */
  if (fd >= 0) {
    dup2(fd, 1);
    dup2(fd, 2);
    close(fd);
  }
  execv("/proc/self/exe", (char *const *)argv);
  _exit(127);
}

/* Waits (bounded) for replica |i|'s |n|th "listening" line. */
static int demo_wait_listening(struct demo *d, int i, int n) {
  char log[96];
  snprintf(log, sizeof log, "%s/node%d.log", d->dir, i);
  for (int t = 0; t < 200 && !demo_stop_requested; t++) {
    if (demo_log_count(log, "replica plane tcp listening") >= n) return 0;
    if (waitpid(d->pids[i], NULL, WNOHANG) == d->pids[i]) {
      d->pids[i] = 0;
      fprintf(stderr, "vsrbus demo: replica %d exited at start; see %s\n", i, log);
      return -1;
    }
    usleep(25000);
  }
  return 0;
}

/* Starts replicas 2, 1, 0 in that order, each once the previous one listens (lower ids dial
 * the higher ones, so the cluster forms without waiting for a reconnect sweep). */
int demo_start_nodes(struct demo *d) {
  int ports[2 * DEMO_REPLICAS];
  /* --netns: every replica has an address of its own, the ports can be fixed */
  for (int i = 0; d->netns && i < DEMO_REPLICAS; i++) {
    ports[i] = DEMO_NETNS_REPLICA_PORT;
    ports[DEMO_REPLICAS + i] = DEMO_NETNS_CLIENT_PORT;
  }
  if ((!d->netns && demo_ports(ports, 2 * DEMO_REPLICAS) < 0) ||
      demo_secret(d, d->secret_path, sizeof d->secret_path) < 0) {
    fprintf(stderr, "vsrbus demo: cannot prepare ports or the secret: %s\n", strerror(errno));
    return -1;
  }
  const char *h[DEMO_REPLICAS] = {"127.0.0.1", "127.0.0.1", "127.0.0.1"};
  for (int i = 0; d->netns && i < DEMO_REPLICAS; i++) h[i] = d->ns_addr[i];
  snprintf(d->replicas, sizeof d->replicas, "%s:%d,%s:%d,%s:%d", h[0], ports[0], h[1], ports[1],
           h[2], ports[2]);
  bool quic = strcmp(d->transport, "quic") == 0;
  if (quic && demo_cert(d) < 0) return -1;
  for (int i = 0; i < DEMO_REPLICAS; i++) {
    d->replica_ports[i] = ports[i];
    d->client_ports[i] = ports[DEMO_REPLICAS + i];
    d->quic_ports[i] = !quic ? 0 : d->netns ? DEMO_NETNS_CLIENT_PORT : demo_udp_port();
    if (quic && d->quic_ports[i] < 0) return -1;
    snprintf(d->addrs[i], sizeof d->addrs[i], "%s:%d", h[i],
             quic ? d->quic_ports[i] : d->client_ports[i]);
  }
  snprintf(d->primary, sizeof d->primary, "%s", d->addrs[0]);
  d->nodes = DEMO_REPLICAS;
  for (int i = DEMO_REPLICAS - 1; i >= 0; i--) {
    d->pids[i] = demo_spawn(d, i);
    if (d->pids[i] < 0 || demo_wait_listening(d, i, 1) < 0) return -1;
  }
  /* Clients once every replica is normal (a fresh cluster: view 0), so that none starts behind
   * and has to catch up from the others' logs (bounded: then clients start anyway). */
  for (int t = 0; t < 200 && !demo_stop_requested; t++) {
    int ready = 0;
    for (int i = 0; i < DEMO_REPLICAS; i++) {
      char log[96];
      snprintf(log, sizeof log, "%s/node%d.log", d->dir, i);
      ready += demo_log_count(log, "VSR-VIEW") > 0;
    }
    if (ready == DEMO_REPLICAS) break;
    usleep(25000);
  }
  return 0;
}

/* --kill / --kill-primary-after: SIGKILL by PID, reaped at once. */
static void demo_kill(struct demo *d, int i, const char *why) {
  if (d->pids[i] <= 0) return;
  kill(d->pids[i], SIGKILL);
  waitpid(d->pids[i], NULL, 0);
  if (!d->quiet) {
    fprintf(d->out, "  killed replica %d (%s, pid %d) at %.2f s\n", i, why, (int)d->pids[i],
            (double)(vsr_tool_now() - d->measure_ns) / 1e9);
    fflush(d->out);
  }
  d->pids[i] = 0;
  d->killed[i] = true;
  if (!d->kill_ns) {
    d->kill_ns = vsr_tool_now();
    d->kill_view = (uint32_t)i == d->view % DEMO_REPLICAS ? d->view + 1 : d->view;
  }
}

/* --restart: the same replica on the same addresses, memory empty: it recovers. */
static void demo_restart(struct demo *d, int i) {
  if (d->pids[i] > 0) demo_kill(d, i, "to restart it");
  /* Not waited for: the clients' loop runs on (the others redial it, it answers when up). */
  d->pids[i] = demo_spawn(d, i);
  if (d->pids[i] < 0) {
    d->pids[i] = 0;
    return;
  }
  d->killed[i] = false;
  if (!d->quiet) {
    fprintf(d->out, "  restarted replica %d (pid %d) at %.2f s: it recovers from the others\n",
            i, (int)d->pids[i], (double)(vsr_tool_now() - d->measure_ns) / 1e9);
    fflush(d->out);
  }
}

void demo_events(struct demo *d) {
  int at = d->ticks;
  for (int e = 0; e < d->nev; e++) {
    struct demo_event *ev = &d->ev[e];
    if (ev->done || ev->at_s > at) continue;
    ev->done = true;
    if (ev->kind == 'p') demo_kill(d, (int)(d->view % DEMO_REPLICAS), "the primary");
    else if (ev->kind == 'k') demo_kill(d, ev->replica, "as asked");
    else demo_restart(d, ev->replica);
  }
}

void demo_stop_nodes(struct demo *d) {
  for (int i = 0; i < DEMO_REPLICAS; i++) {
    if (d->pids[i] > 0) kill(d->pids[i], SIGTERM);
  }
  for (int i = 0; i < DEMO_REPLICAS; i++) {
    if (d->pids[i] <= 0) continue;
    int st = 0;
    for (int t = 0; t < 100 && waitpid(d->pids[i], &st, WNOHANG) == 0; t++) usleep(50000);
    if (waitpid(d->pids[i], &st, WNOHANG) == 0) {
      kill(d->pids[i], SIGKILL);
      waitpid(d->pids[i], &st, 0);
    }
    d->pids[i] = 0;
  }
}

/* A node that died during the run (not killed on purpose) ends the demo. */
bool demo_nodes_alive(struct demo *d) {
  for (int i = 0; i < DEMO_REPLICAS; i++) {
    if (d->pids[i] > 0 && waitpid(d->pids[i], NULL, WNOHANG) == d->pids[i]) {
      fprintf(stderr, "vsrbus demo: replica %d exited during the run; logs in %s\n", i, d->dir);
      d->pids[i] = 0;
      return false;
    }
  }
  return true;
}

void demo_cleanup_dir(const struct demo *d) {
  char path[96];
  const char *names[] = {"secret",        "node0.log",     "node1.log",     "node2.log",
                         "cert.pem",      "key.pem",       "commits.0.txt", "commits.1.txt",
                         "commits.2.txt", "acks.txt"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    snprintf(path, sizeof path, "%s/%s", d->dir, names[i]);
    unlink(path);
  }
  rmdir(d->dir);
}

void demo_dump_logs(const struct demo *d) {
  for (int i = 0; i < DEMO_REPLICAS; i++) {
    char path[96], line[512];
    snprintf(path, sizeof path, "%s/node%d.log", d->dir, i);
    FILE *f = fopen(path, "r");
    for (int n = 0; f && n < 40 && fgets(line, sizeof line, f); n++) {
      fprintf(stderr, "  node%d: %s", i, line);
    }
    if (f) fclose(f);
  }
}
