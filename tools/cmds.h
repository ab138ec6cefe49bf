/* Subcommands of the vsrbus command, one file each. Each returns the process exit code:
 * 0 success, 1 runtime failure, 2 usage error. */
#ifndef VSR_TOOLS_CMDS_H
#define VSR_TOOLS_CMDS_H

#include <stdint.h>
#include <time.h>

/* Monotonic nanoseconds, for the commands' own timing (outside a loop turn). */
static inline uint64_t vsr_tool_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int vsr_cmd_node(int argc, char **argv);
int vsr_cmd_ping(int argc, char **argv);
int vsr_cmd_demo(int argc, char **argv);
int vsr_cmd_bench(int argc, char **argv);
int vsr_cmd_cert(int argc, char **argv);
int vsr_cmd_sim(int argc, char **argv);

#endif
