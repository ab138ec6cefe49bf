/* Log lines: "vsrbus WARN  VSR-FRAME <text>", to stderr or a user handler. */
#include "util/log.h"
#include "vsrbus/vsrbus.h" /* vsr_version */

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int log_level = -1; /* -1: not yet read from VSRBUS_LOG */
static vsr_log_fn log_fn;
static void *log_user;

static const char *const log_names[] = {"ERROR", "WARN ", "INFO ", "DEBUG"};

static int log_level_get(void) {
  if (log_level >= 0) return log_level;
  const char *env = getenv("VSRBUS_LOG");
  log_level = VSR_LOG_INFO;
  if (env) {
    for (int i = 0; i <= VSR_LOG_DEBUG; i++) {
      if (strncasecmp(env, log_names[i], strlen(env)) == 0) log_level = i;
    }
  }
  return log_level;
}

void vsr_log_set_level(enum vsr_log_level level) { log_level = (int)level; }

void vsr_log_set_handler(vsr_log_fn fn, void *user) {
  log_fn = fn;
  log_user = user;
}

bool vsri_log_enabled(enum vsr_log_level level) { return (int)level <= log_level_get(); }

void vsri_log(enum vsr_log_level level, const char *id, const char *fmt, ...) {
  if (!vsri_log_enabled(level)) return;
  char line[1024];
  int n = snprintf(line, sizeof line, "vsrbus %s %s ", log_names[level], id);
  if (n < 0) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
  va_end(ap);
  if (log_fn) {
    log_fn(log_user, level, line);
    return;
  }
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm;
  gmtime_r(&ts.tv_sec, &tm);
  fprintf(stderr, "%02d:%02d:%02d.%03ld %s\n", tm.tm_hour, tm.tm_min, tm.tm_sec,
          ts.tv_nsec / 1000000, line);
}

const char *vsr_version(void) { return VSR_VERSION; }
