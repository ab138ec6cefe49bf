/* vsrbus: the command. Dispatches to one subcommand per file (node, ping, demo, bench, cert, sim). */
#include <stdio.h>
#include <string.h>

#include "cmds.h"
#include "vsrbus/vsrbus.h"

/* Subcommands that live in optional files are weak: a build without them says so. */
__attribute__((weak)) int vsr_cmd_demo(int argc, char **argv);
__attribute__((weak)) int vsr_cmd_bench(int argc, char **argv);
__attribute__((weak)) int vsr_cmd_cert(int argc, char **argv);
__attribute__((weak)) int vsr_cmd_sim(int argc, char **argv);

static void usage(FILE *f) {
  fprintf(f,
          "usage: vsrbus COMMAND [OPTIONS]\n"
          "\n"
          "commands:\n"
          "  node    run one replica: client plane listeners (TCP, QUIC), replica plane, and\n"
          "          the built-in demo state machine (Ping->Pong, Request->Reply)\n"
          "  ping    send PingClient frames to a node and print round-trip times\n"
          "  demo    run a local 3-replica cluster with clients and print live figures\n"
          "  bench   load generator: throughput and latency of frames through vsrbus\n"
          "  cert    write a self-signed certificate and key (PEM) for QUIC\n"
          "  sim     deterministic simulation: the bus on a simulated network, seeded faults\n"
          "\n"
          "  vsrbus COMMAND --help   options of one command\n"
          "  vsrbus --version\n");
}

int main(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  const char *cmd = argv[1];
  if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
    usage(stdout);
    return 0;
  }
  if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "version") == 0) {
    printf("vsrbus %s\n", vsr_version());
    return 0;
  }
  struct {
    const char *name;
    int (*fn)(int, char **);
  } cmds[] = {
      {"node", vsr_cmd_node},   {"ping", vsr_cmd_ping}, {"demo", vsr_cmd_demo},
      {"bench", vsr_cmd_bench}, {"cert", vsr_cmd_cert},
      {"sim", vsr_cmd_sim},
  };
  for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
    if (strcmp(cmd, cmds[i].name) != 0) continue;
    if (!cmds[i].fn) {
      fprintf(stderr, "vsrbus: '%s' is not available in this build\n", cmd);
      return 1;
    }
    return cmds[i].fn(argc - 1, argv + 1);
  }
  fprintf(stderr, "vsrbus: unknown command '%s'\n", cmd);
  usage(stderr);
  return 2;
}
