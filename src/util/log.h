/* Logging: one line per event, with an ID, the peer and the numbers, written where the event is
 * handled (never twice up the stack). Example:
 *   vsrbus WARN  VSR-FRAME 127.0.0.1:41234 tcp: size 4294967295 > max 67108864 (VSR_EFRAME_LARGE); closing */
#ifndef VSRI_LOG_H
#define VSRI_LOG_H

#include <stdbool.h>
#include <stdint.h>

#include "vsrbus/log.h"

void vsri_log(enum vsr_log_level level, const char *id, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* True when |level| would be written: guards costly argument preparation. */
bool vsri_log_enabled(enum vsr_log_level level);

/* Writes the "N more like this suppressed" lines due at |now_ns| (CLOCK_MONOTONIC) and returns
 * when the next one is due (0: none pending), so a loop can wake for it. One relaxed atomic load
 * when nothing is due: the loop calls it every turn. */
uint64_t vsri_log_tick(uint64_t now_ns);

/* Tests: the clock the rate limit reads (NULL: CLOCK_MONOTONIC). */
void vsri_log_set_clock(uint64_t (*clock)(void));

#define VSRI_ERROR(id, ...) vsri_log(VSR_LOG_ERROR, id, __VA_ARGS__)
#define VSRI_WARN(id, ...) vsri_log(VSR_LOG_WARN, id, __VA_ARGS__)
#define VSRI_INFO(id, ...) vsri_log(VSR_LOG_INFO, id, __VA_ARGS__)
#define VSRI_DEBUG(id, ...)                                                                      \
  do {                                                                                           \
    if (vsri_log_enabled(VSR_LOG_DEBUG)) vsri_log(VSR_LOG_DEBUG, id, __VA_ARGS__);               \
  } while (0)

#endif
