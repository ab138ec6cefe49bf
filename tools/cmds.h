/* Subcommands of the vsrbus command, one file each. Each returns the process exit code:
 * 0 success, 1 runtime failure, 2 usage error. */
#ifndef VSR_TOOLS_CMDS_H
#define VSR_TOOLS_CMDS_H

int vsr_cmd_node(int argc, char **argv);
int vsr_cmd_ping(int argc, char **argv);
int vsr_cmd_demo(int argc, char **argv);
int vsr_cmd_bench(int argc, char **argv);
int vsr_cmd_cert(int argc, char **argv);

#endif
