/* Logging settings: the level and where lines go. Included by the umbrella header vsrbus.h. */
#ifndef VSRBUS_LOG_H
#define VSRBUS_LOG_H

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

#ifdef __cplusplus
}
#endif
#endif
