/* Node configuration shared by `vsrbus node` and `vsrbus demo` (which starts nodes). */
#ifndef VSR_TOOLS_NODE_H
#define VSR_TOOLS_NODE_H

#include "vsrbus/vsrbus.h"

struct node_cfg {
  struct vsr_bus_options bus;
  const char *addrs[VSR_MAX_REPLICAS];
  char *replicas_text;
  char *strings[64];
  size_t strings_len;
  uint8_t *secret;      /* owns bus.secret (VSR_SECRET_MAX bytes), wiped when freed */
  uint8_t *prev_secret; /* owns bus.previous_secret */
  bool replica_set;     /* --replica given: it needs --replicas */
  uint32_t log_burst;       /* --log-burst, default VSR_LOG_BURST_DEFAULT (0: no limit) */
  uint64_t log_interval_ns; /* --log-interval-ms, default VSR_LOG_INTERVAL_NS_DEFAULT */
  uint64_t primary_timeout_ns; /* --primary-timeout-ms, default VSR_SM_PRIMARY_TIMEOUT_NS (1 s):
                                  a backup that hears nothing from the primary this long starts
                                  a view change */
  const char *dump_commits;    /* --dump-commits FILE: a line per committed op (tests); NULL */
  uint32_t batch_max;          /* --prepare-batch, default VSR_SM_BATCH_MAX (64): Requests per
                                  Prepare on a cluster primary; 1: a Prepare per Request */
};

void vsr_node_cfg_init(struct node_cfg *cfg);
void vsr_node_cfg_free(struct node_cfg *cfg);
/* Sets one option by its long name (or config-file key). Returns 0 or -1 (printed). */
int vsr_node_set(struct node_cfg *cfg, const char *key, const char *value);
/* Returns 0, 1 (--help printed) or 2 (usage error printed). */
int vsr_node_parse(struct node_cfg *cfg, int argc, char **argv);
/* A line of the node's own: "vsrbus node: [EVENT ]text" on stderr, or a JSON object under
 * --log-format json (event default "VSR-NODE"). */
void vsr_node_say(enum vsr_log_level level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
