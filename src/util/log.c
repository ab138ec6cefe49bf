/* Log lines: "vsrbus WARN  VSR-FRAME <text>", to stderr or a user handler.
 *
 * Every log call site (its tag and message template) has a token bucket: a burst of lines, then
 * one line per interval; what is held back is counted and reported as one line "VSR-FRAME 180
 * more like this suppressed in 1000 ms" once the interval has passed (at the site's next line,
 * at the next loop turn, or at vsr_log_flush()). A flood from the network therefore costs a
 * bounded number of lines per second, and the count is never lost. DEBUG lines are not limited:
 * whoever turns them on asked for all of them. */
#include "util/log.h"
#include "vsrbus/vsrbus.h" /* vsr_version */

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LOG_SITES 256       /* call sites tracked; more share the overflow bucket */
#define LOG_FLUSH_BATCH 16  /* summaries collected per pass under the lock */

static int log_level = -1; /* -1: not yet read from VSRBUS_LOG */
static vsr_log_fn log_fn;
static void *log_user;

static const char *const log_names[] = {"ERROR", "WARN ", "INFO ", "DEBUG"};

/* One call site's bucket. Invariant: suppressed > 0 exactly when since_ns is the time of the
 * first line held back since the last summary. */
struct log_site {
  const char *fmt; /* key: the call site's template (a literal); NULL: free slot */
  const char *id;  /* its tag, for the summary line */
  uint32_t tokens; /* lines that may still be written now, <= log_burst */
  uint64_t refill_ns;
  uint64_t suppressed;
  uint64_t since_ns;
  int level; /* most severe level held back */
};

struct log_summary {
  const char *id;
  int level;
  uint64_t count, span_ns;
};

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static struct log_site log_sites[LOG_SITES];
static struct log_site log_overflow;
static uint32_t log_burst = VSR_LOG_BURST_DEFAULT;
static uint64_t log_interval_ns = VSR_LOG_INTERVAL_NS_DEFAULT;
static _Atomic uint64_t log_due_ns; /* earliest pending summary (0: none); read without the lock */

static uint64_t log_mono(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t (*log_clock)(void) = log_mono;

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

static void log_write(enum vsr_log_level level, const char *line) {
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

static void log_write_summary(const struct log_summary *s) {
  char line[160];
  snprintf(line, sizeof line, "vsrbus %s %s %llu more like this suppressed in %llu ms",
           log_names[s->level], s->id, (unsigned long long)s->count,
           (unsigned long long)(s->span_ns / 1000000));
  log_write((enum vsr_log_level)s->level, line);
}

/* ---- rate limit (callers hold log_mu) ------------------------------------------------------ */

static struct log_site *log_site_get(const char *id, const char *fmt, uint64_t now) {
  uintptr_t h = ((uintptr_t)fmt >> 3) * 0x9E3779B97F4A7C15ull;
  for (uint32_t i = 0; i < LOG_SITES; i++) {
    struct log_site *s = &log_sites[(h + i) & (LOG_SITES - 1)];
    if (s->fmt == fmt) return s;
    if (!s->fmt) {
      *s = (struct log_site){.fmt = fmt, .id = id, .tokens = log_burst, .refill_ns = now};
      return s;
    }
  }
  if (!log_overflow.fmt) {
    log_overflow = (struct log_site){.fmt = "", .id = "VSR-LOG", .tokens = log_burst,
                                     .refill_ns = now};
  }
  return &log_overflow;
}

/* Takes the pending count of |s| into |out| and resets it. */
static void log_take_summary(struct log_site *s, uint64_t now, struct log_summary *out) {
  *out = (struct log_summary){.id = s->id, .level = s->level, .count = s->suppressed,
                              .span_ns = now - s->since_ns};
  s->suppressed = 0;
}

/* Recomputes the earliest pending summary for vsri_log_tick's lock-free check. */
static void log_due_update(void) {
  uint64_t due = 0;
  for (uint32_t i = 0; i <= LOG_SITES; i++) {
    const struct log_site *s = i < LOG_SITES ? &log_sites[i] : &log_overflow;
    if (s->suppressed == 0) continue;
    uint64_t at = s->since_ns + log_interval_ns;
    if (due == 0 || at < due) due = at;
  }
  atomic_store_explicit(&log_due_ns, due, memory_order_relaxed);
}

/* Refills |s|, takes its summary if one is due, and spends a token. Returns true when the line
 * may be written. */
static bool log_admit(struct log_site *s, int level, uint64_t now, struct log_summary *sum) {
  uint64_t steps = (now - s->refill_ns) / log_interval_ns;
  if (steps > 0) {
    uint64_t t = s->tokens + steps;
    s->tokens = t > log_burst ? log_burst : (uint32_t)t;
    s->refill_ns = s->tokens == log_burst ? now : s->refill_ns + steps * log_interval_ns;
  }
  sum->count = 0;
  if (s->suppressed > 0 && now - s->since_ns >= log_interval_ns) log_take_summary(s, now, sum);
  if (s->tokens > 0) {
    s->tokens--;
    return true;
  }
  if (s->suppressed == 0) {
    s->since_ns = now;
    s->level = level;
  } else if (level < s->level) {
    s->level = level;
  }
  s->suppressed++;
  return false;
}

/* Collects up to LOG_FLUSH_BATCH summaries due at |now| (all of them when |all|). */
static int log_collect(uint64_t now, bool all, struct log_summary *out) {
  int n = 0;
  for (uint32_t i = 0; i <= LOG_SITES && n < LOG_FLUSH_BATCH; i++) {
    struct log_site *s = i < LOG_SITES ? &log_sites[i] : &log_overflow;
    if (s->suppressed == 0) continue;
    if (all || now - s->since_ns >= log_interval_ns) log_take_summary(s, now, &out[n++]);
  }
  log_due_update();
  return n;
}

static void log_emit_due(bool all) {
  struct log_summary batch[LOG_FLUSH_BATCH];
  int n;
  do {
    pthread_mutex_lock(&log_mu);
    n = log_collect(log_clock(), all, batch);
    pthread_mutex_unlock(&log_mu);
    for (int i = 0; i < n; i++) log_write_summary(&batch[i]);
  } while (n == LOG_FLUSH_BATCH);
}

uint64_t vsri_log_tick(uint64_t now_ns) {
  uint64_t due = atomic_load_explicit(&log_due_ns, memory_order_relaxed);
  if (due == 0 || now_ns < due) return due;
  log_emit_due(false);
  return atomic_load_explicit(&log_due_ns, memory_order_relaxed);
}

void vsr_log_flush(void) {
  if (atomic_load_explicit(&log_due_ns, memory_order_relaxed) != 0) log_emit_due(true);
}

void vsr_log_set_rate(uint32_t burst, uint64_t interval_ns) {
  vsr_log_flush();
  pthread_mutex_lock(&log_mu);
  log_burst = burst;
  log_interval_ns = interval_ns ? interval_ns : VSR_LOG_INTERVAL_NS_DEFAULT;
  memset(log_sites, 0, sizeof log_sites); /* fresh buckets under the new rate */
  memset(&log_overflow, 0, sizeof log_overflow);
  atomic_store_explicit(&log_due_ns, 0, memory_order_relaxed);
  pthread_mutex_unlock(&log_mu);
}

void vsri_log_set_clock(uint64_t (*clock)(void)) { log_clock = clock ? clock : log_mono; }

/* ---- lines --------------------------------------------------------------------------------- */

void vsri_log(enum vsr_log_level level, const char *id, const char *fmt, ...) {
  if (!vsri_log_enabled(level)) return;
  if (level != VSR_LOG_DEBUG && log_burst > 0) {
    struct log_summary sum;
    pthread_mutex_lock(&log_mu);
    uint64_t now = log_clock();
    struct log_site *s = log_site_get(id, fmt, now);
    bool admit = log_admit(s, (int)level, now, &sum);
    if (sum.count > 0 || (!admit && s->suppressed == 1)) log_due_update();
    pthread_mutex_unlock(&log_mu);
    if (sum.count > 0) log_write_summary(&sum);
    if (!admit) return; /* counted: not even formatted */
  }
  char line[1024];
  int n = snprintf(line, sizeof line, "vsrbus %s %s ", log_names[level], id);
  if (n < 0) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
  va_end(ap);
  log_write(level, line);
}

const char *vsr_version(void) { return VSR_VERSION; }
