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

/* Line format. VSR_LOG_TEXT (default): "hh:mm:ss.mmm vsrbus WARN  VSR-FRAME <text>".
 * VSR_LOG_JSON: one JSON object a line, e.g.
 *   {"time":"2026-01-02T03:04:05.678Z","level":"warn","event":"VSR-FRAME",
 *    "peer":"127.0.0.1:41234","reason":"VSR_EFRAME_LARGE","msg":"127.0.0.1:41234 tcp: ..."}
 * "peer" is present when the line is about one connection, "reason" when it names a VSR_E*
 * code; summary lines carry "suppressed" (the count) and "span_ms". A handler set with
 * vsr_log_set_handler receives the same JSON text. */
enum vsr_log_format { VSR_LOG_TEXT = 0, VSR_LOG_JSON = 1 };
void vsr_log_set_format(enum vsr_log_format format);
enum vsr_log_format vsr_log_get_format(void);

/* Writes one line of the application's own (whatever the level, not rate limited) in the
 * current format under the tag |event| (e.g. "VSR-NODE"): for the few lines of a program
 * embedding the bus that must sit in the same log stream. */
void vsr_log_event(enum vsr_log_level level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#ifdef __cplusplus
}
#endif
#endif
