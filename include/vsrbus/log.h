/* Logging settings: the level and where lines go. Included by the umbrella header vsrbus.h. */
#ifndef VSRBUS_LOG_H
#define VSRBUS_LOG_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum vsr_log_level { VSR_LOG_ERROR = 0, VSR_LOG_WARN, VSR_LOG_INFO, VSR_LOG_DEBUG };

/* Receives each log line (no trailing newline). The default writes to stderr. */
typedef void (*vsr_log_fn)(void *user, enum vsr_log_level level, const char *line);

/* Lines above |level| are dropped. Default VSR_LOG_INFO, or VSRBUS_LOG=error|warn|info|debug. */
void vsr_log_set_level(enum vsr_log_level level);
/* NULL restores the stderr writer. */
void vsr_log_set_handler(vsr_log_fn fn, void *user);

/* Rate limit of log lines (DEBUG excepted): each call site (tag and message template) may write
 * |burst| lines at once, then one more per |interval_ns|; lines held back are counted and
 * reported as one line "<TAG> N more like this suppressed in T ms" after the interval. burst 0:
 * no limit; interval 0: the default. Defaults: a burst of 20 (a whole incident's first lines
 * stay readable) and 1 s (a flood costs about two lines per second per site, not thousands).
 * Resets every site's bucket. */
#define VSR_LOG_BURST_DEFAULT 20u
#define VSR_LOG_INTERVAL_NS_DEFAULT 1000000000ull
void vsr_log_set_rate(uint32_t burst, uint64_t interval_ns);

/* Writes every pending "N more like this suppressed" line now (vsr_bus_del calls it). */
void vsr_log_flush(void);

#ifdef __cplusplus
}
#endif
#endif
