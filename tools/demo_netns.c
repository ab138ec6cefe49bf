/* `vsrbus demo --netns`: the topology of separate machines on one host. Each replica runs in a
 * network namespace of its own, the demo's clients in another; each of these namespaces has one
 * veth link (MTU 1500) to a bridge in a hub namespace:
 *
 *   vsrdemo-PID-r0 (10.98.0.1) --+
 *   vsrdemo-PID-r1 (10.98.0.2) --+-- br0 in vsrdemo-PID-hub
 *   vsrdemo-PID-r2 (10.98.0.3) --+
 *   vsrdemo-PID-cl (10.98.0.100) +
 *
 * Everything is made with iproute2's `ip` (run by PID, waited for) and lives only inside the
 * namespaces the demo creates: nothing is configured in the namespace the demo started in. A
 * node is started in its namespace by its child process (setns before exec); the demo moves
 * itself into the clients' namespace once the nodes are up, and back before it deletes every
 * namespace of the run: at the end of the run, on a failure, on SIGINT / SIGTERM (the loop
 * stops and the normal path runs) and at exit (atexit). A demo killed outright (SIGKILL)
 * leaves its namespaces: `ip netns list | grep vsrdemo-` names them. Root only. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* setns */
#endif
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "demo.h"

#define NETNS_HUB DEMO_REPLICAS          /* d->ns[] index of the hub */
#define NETNS_CLIENTS (DEMO_REPLICAS + 1) /* ... and of the clients' namespace */
#define NETNS_MTU "1500"
#define CAP_NET_ADMIN_BIT 12

static struct demo *netns_atexit_target;

/* Runs `ip ARGS...` (a NULL-terminated list), output discarded; 0 if it exited 0. */
static int netns_ip(const char *first, ...) {
  const char *argv[24] = {"ip", first};
  int n = 2;
  va_list ap;
  va_start(ap, first);
  const char *a;
  while (n < 23 && (a = va_arg(ap, const char *)) != NULL) argv[n++] = a;
  va_end(ap);
  argv[n] = NULL;
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    int fd = open("/dev/null", O_WRONLY);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
      close(fd);
    }
    execvp("ip", (char *const *)argv);
    _exit(127);
  }
  int st = 0;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

/* Whether `ip` is on the PATH. */
static bool netns_have_ip(void) {
  const char *path = getenv("PATH");
  char dir[512], file[600];
  for (const char *p = path ? path : "/usr/sbin:/usr/bin:/sbin:/bin"; *p;) {
    size_t len = strcspn(p, ":");
    if (len > 0 && len < sizeof dir) {
      memcpy(dir, p, len);
      dir[len] = 0;
      snprintf(file, sizeof file, "%s/ip", dir);
      if (access(file, X_OK) == 0) return true;
    }
    p += len;
    if (*p == ':') p++;
  }
  return false;
}

/* CAP_NET_ADMIN in the effective set (CapEff of /proc/self/status). */
static bool netns_have_cap(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  unsigned long long eff = 0;
  bool found = false;
  while (f && fgets(line, sizeof line, f)) {
    if (sscanf(line, "CapEff: %llx", &eff) == 1) {
      found = true;
      break;
    }
  }
  if (f) fclose(f);
  return found && (eff >> CAP_NET_ADMIN_BIT & 1);
}

static int netns_enter(const char *name) {
  char path[128];
  snprintf(path, sizeof path, "/run/netns/%s", name);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  int rc = setns(fd, CLONE_NEWNET);
  close(fd);
  return rc;
}

int demo_netns_enter_node(const struct demo *d, int i) {
  return d->netns ? netns_enter(d->ns[i]) : 0;
}

void demo_netns_cleanup(struct demo *d) {
  if (!d->netns) return;
  if (d->home_ns >= 0) { /* back where we started: we hold no namespace of the run */
    if (setns(d->home_ns, CLONE_NEWNET) != 0) {
      fprintf(stderr, "vsrbus demo: --netns: cannot return to the first namespace: %s\n",
              strerror(errno));
    }
    close(d->home_ns);
    d->home_ns = -1;
  }
  for (int i = 0; i < DEMO_NETNS; i++) {
    if (!d->ns_made[i]) continue;
    /* Its end of each veth pair goes with it (the bridge with the hub). */
    if (netns_ip("netns", "del", d->ns[i], (char *)NULL) != 0) {
      fprintf(stderr, "vsrbus demo: --netns: could not delete namespace %s\n", d->ns[i]);
    }
    d->ns_made[i] = false;
  }
  if (netns_atexit_target == d) netns_atexit_target = NULL; /* |d| is freed after this */
}

static void netns_atexit(void) {
  if (netns_atexit_target) demo_netns_cleanup(netns_atexit_target);
}

/* One member namespace |m| joined to the hub's bridge by a veth pair; address |addr|/24. */
static int netns_link(struct demo *d, int m, const char *addr) {
  char mine[16], hub[16], cidr[32];
  snprintf(mine, sizeof mine, "v%dm%d", (int)(getpid() % 1000000), m);
  snprintf(hub, sizeof hub, "v%dh%d", (int)(getpid() % 1000000), m);
  snprintf(cidr, sizeof cidr, "%s/24", addr);
  const char *ns = d->ns[m], *hns = d->ns[NETNS_HUB];
  if (netns_ip("link", "add", mine, "netns", ns, "mtu", NETNS_MTU, "type", "veth", "peer", "name",
               hub, "netns", hns, "mtu", NETNS_MTU, (char *)NULL) != 0 ||
      netns_ip("-n", ns, "addr", "add", cidr, "dev", mine, (char *)NULL) != 0 ||
      netns_ip("-n", ns, "link", "set", "dev", mine, "up", (char *)NULL) != 0 ||
      netns_ip("-n", ns, "link", "set", "dev", "lo", "up", (char *)NULL) != 0 ||
      netns_ip("-n", hns, "link", "set", "dev", hub, "master", "br0", (char *)NULL) != 0 ||
      netns_ip("-n", hns, "link", "set", "dev", hub, "up", (char *)NULL) != 0) {
    fprintf(stderr, "vsrbus demo: --netns: could not link namespace %s to the hub\n", ns);
    return -1;
  }
  return 0;
}

int demo_netns_check(void) {
  if (!netns_have_ip()) {
    fprintf(stderr, "vsrbus demo: --netns needs iproute2's ip command, and it is not on the "
            "PATH\n");
    return -1;
  }
  if (!netns_have_cap()) {
    fprintf(stderr, "vsrbus demo: --netns needs root (CAP_NET_ADMIN) to create network "
            "namespaces\n");
    return -1;
  }
  return 0;
}

int demo_netns_setup(struct demo *d) {
  d->home_ns = -1;
  if (demo_netns_check() != 0) return -1;
  netns_atexit_target = d;
  static bool registered;
  if (!registered && atexit(netns_atexit) == 0) registered = true;
  int pid = (int)getpid();
  for (int i = 0; i < DEMO_REPLICAS; i++) snprintf(d->ns[i], sizeof d->ns[i], "vsrdemo-%d-r%d", pid, i);
  snprintf(d->ns[NETNS_HUB], sizeof d->ns[NETNS_HUB], "vsrdemo-%d-hub", pid);
  snprintf(d->ns[NETNS_CLIENTS], sizeof d->ns[NETNS_CLIENTS], "vsrdemo-%d-cl", pid);
  for (int i = 0; i < DEMO_NETNS; i++) {
    if (netns_ip("netns", "add", d->ns[i], (char *)NULL) != 0) {
      fprintf(stderr, "vsrbus demo: --netns: ip netns add %s failed (network namespaces not "
              "available here?)\n", d->ns[i]);
      demo_netns_cleanup(d);
      return -1;
    }
    d->ns_made[i] = true;
  }
  const char *hns = d->ns[NETNS_HUB];
  if (netns_ip("-n", hns, "link", "add", "br0", "type", "bridge", (char *)NULL) != 0 ||
      netns_ip("-n", hns, "link", "set", "dev", "br0", "up", (char *)NULL) != 0) {
    fprintf(stderr, "vsrbus demo: --netns: could not make the bridge in %s\n", hns);
    demo_netns_cleanup(d);
    return -1;
  }
  for (int i = 0; i < DEMO_REPLICAS; i++) {
    snprintf(d->ns_addr[i], sizeof d->ns_addr[i], "10.98.0.%d", i + 1);
    if (netns_link(d, i, d->ns_addr[i]) != 0) {
      demo_netns_cleanup(d);
      return -1;
    }
  }
  if (netns_link(d, NETNS_CLIENTS, "10.98.0.100") != 0) {
    demo_netns_cleanup(d);
    return -1;
  }
  return 0;
}

int demo_netns_enter_clients(struct demo *d) {
  d->home_ns = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
  if (d->home_ns < 0 || netns_enter(d->ns[NETNS_CLIENTS]) != 0) {
    fprintf(stderr, "vsrbus demo: --netns: cannot enter %s: %s\n", d->ns[NETNS_CLIENTS],
            strerror(errno));
    return -1;
  }
  /* The link is up once the first replica answers a connect; the clients retry anyway. */
  return 0;
}
