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
static const char *const log_json_names[] = {"error", "warn", "info", "debug"};
static _Atomic int log_format = VSR_LOG_TEXT;

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
  if (atomic_load_explicit(&log_format, memory_order_relaxed) == VSR_LOG_JSON) {
    fprintf(stderr, "%s\n", line); /* the time is inside the object */
    return;
  }
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm;
  gmtime_r(&ts.tv_sec, &tm);
  fprintf(stderr, "%02d:%02d:%02d.%03ld %s\n", tm.tm_hour, tm.tm_min, tm.tm_sec,
          ts.tv_nsec / 1000000, line);
}

void vsr_log_set_format(enum vsr_log_format format) {
  atomic_store_explicit(&log_format, format == VSR_LOG_JSON ? VSR_LOG_JSON : VSR_LOG_TEXT,
                        memory_order_relaxed);
}

enum vsr_log_format vsr_log_get_format(void) {
  return (enum vsr_log_format)atomic_load_explicit(&log_format, memory_order_relaxed);
}

/* ---- JSON lines ---------------------------------------------------------------------------- */

struct log_buf {
  char *p;
  size_t len, cap; /* len < cap always: room for the NUL */
};

static void lb_put(struct log_buf *b, const char *s, size_t n) {
  if (n > b->cap - 1 - b->len) n = b->cap - 1 - b->len;
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = '\0';
}

static void lb_str(struct log_buf *b, const char *s) { lb_put(b, s, strlen(s)); }

/* Length of the valid UTF-8 sequence at |s| (0: invalid). |s| is NUL-terminated, and a NUL is
 * never a continuation byte, so this never reads past the string. */
static size_t log_utf8_len(const unsigned char *s) {
  unsigned char c = s[0];
  size_t n;
  uint32_t cp;
  if (c >= 0xC2 && c <= 0xDF) n = 2, cp = c & 0x1F;
  else if (c >= 0xE0 && c <= 0xEF) n = 3, cp = c & 0x0F;
  else if (c >= 0xF0 && c <= 0xF4) n = 4, cp = c & 0x07;
  else return 0;
  for (size_t i = 1; i < n; i++) {
    if ((s[i] & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (s[i] & 0x3F);
  }
  if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
      (cp >= 0xD800 && cp <= 0xDFFF)) {
    return 0;
  }
  return n;
}

/* |s| (|n| bytes, NUL-terminated) as a JSON string: quotes, backslashes and control characters
 * escaped, invalid UTF-8 replaced by U+FFFD (a line may quote bytes from the network). */
static void lb_json_str(struct log_buf *b, const char *s, size_t n) {
  lb_put(b, "\"", 1);
  const unsigned char *u = (const unsigned char *)s;
  for (size_t i = 0; i < n;) {
    unsigned char c = u[i];
    char esc[8];
    if (c == '"' || c == '\\') {
      esc[0] = '\\';
      esc[1] = (char)c;
      lb_put(b, esc, 2);
      i++;
    } else if (c < 0x20 || c == 0x7F) {
      const char *named = c == '\n' ? "\\n" : c == '\r' ? "\\r" : c == '\t' ? "\\t" : NULL;
      if (named) {
        lb_str(b, named);
      } else {
        snprintf(esc, sizeof esc, "\\u%04x", c);
        lb_str(b, esc);
      }
      i++;
    } else if (c < 0x80) {
      lb_put(b, (const char *)&u[i], 1);
      i++;
    } else {
      size_t k = log_utf8_len(&u[i]);
      if (k == 0 || i + k > n) {
        lb_str(b, "\\ufffd");
        i++;
      } else {
        lb_put(b, (const char *)&u[i], k);
        i += k;
      }
    }
  }
  lb_put(b, "\"", 1);
}

static void lb_field(struct log_buf *b, const char *key, const char *v, size_t n) {
  lb_put(b, ",\"", 2);
  lb_str(b, key);
  lb_put(b, "\":", 2);
  lb_json_str(b, v, n);
}

/* The peer a line is about: its first word when that is an address ("1.2.3.4:5", "[::1]:5"),
 * as every per-connection line starts. Returns its length (0: none). */
static size_t log_peer_len(const char *msg) {
  size_t n = strcspn(msg, " ");
  if (n < 3 || n > 64) return 0;
  const char *colon = memrchr(msg, ':', n);
  if (!colon || colon == msg + n - 1) return 0;
  for (const char *p = colon + 1; p < msg + n; p++) {
    if (*p < '0' || *p > '9') return 0;
  }
  if (msg[0] == '[') return colon > msg && colon[-1] == ']' ? n : 0;
  for (const char *p = msg; p < colon; p++) {
    if ((*p < '0' || *p > '9') && *p != '.') return 0;
  }
  return n;
}

/* The first VSR_E* code a line names, as the "reason". Returns its start (NULL: none). */
static const char *log_reason(const char *msg, size_t *len) {
  for (const char *p = strstr(msg, "VSR_E"); p; p = strstr(p + 1, "VSR_E")) {
    if (p > msg && (p[-1] == '_' || (p[-1] >= 'A' && p[-1] <= 'Z'))) continue;
    size_t n = strspn(p, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_");
    if (n > 5) {
      *len = n;
      return p;
    }
  }
  return NULL;
}

/* One JSON object for a line: time (RFC 3339, UTC, ms), level, event, peer, reason, the count
 * of a summary line, msg. */
static void log_json(struct log_buf *b, enum vsr_log_level level, const char *id, const char *msg,
                     const struct log_summary *sum) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm;
  gmtime_r(&ts.tv_sec, &tm);
  char t[96];
  snprintf(t, sizeof t, "{\"time\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ\",\"level\":\"%s\"",
           tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
           ts.tv_nsec / 1000000, log_json_names[level]);
  lb_str(b, t);
  lb_field(b, "event", id, strlen(id));
  size_t pn = log_peer_len(msg), rn = 0;
  if (pn) lb_field(b, "peer", msg, pn);
  const char *r = log_reason(msg, &rn);
  if (r) lb_field(b, "reason", r, rn);
  if (sum) {
    snprintf(t, sizeof t, ",\"suppressed\":%llu,\"span_ms\":%llu", (unsigned long long)sum->count,
             (unsigned long long)(sum->span_ns / 1000000));
    lb_str(b, t);
  }
  lb_field(b, "msg", msg, strlen(msg));
  lb_put(b, "}", 1);
}

/* Writes one line in the current format; |sum| for a summary line. */
static void log_emit(enum vsr_log_level level, const char *id, const char *msg,
                     const struct log_summary *sum) {
  if (atomic_load_explicit(&log_format, memory_order_relaxed) == VSR_LOG_JSON) {
    char out[8192]; /* a 1 KiB message escapes to at most 6 KiB */
    struct log_buf b = {.p = out, .cap = sizeof out};
    out[0] = '\0';
    log_json(&b, level, id, msg, sum);
    log_write(level, out);
    return;
  }
  char line[1200];
  snprintf(line, sizeof line, "vsrbus %s %s %s", log_names[level], id, msg);
  log_write(level, line);
}

void vsr_log_event(enum vsr_log_level level, const char *event, const char *fmt, ...) {
  if ((int)level < VSR_LOG_ERROR || level > VSR_LOG_DEBUG) level = VSR_LOG_INFO;
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  log_emit(level, event ? event : "VSR-APP", msg, NULL);
}

static void log_write_summary(const struct log_summary *s) {
  char msg[128];
  snprintf(msg, sizeof msg, "%llu more like this suppressed in %llu ms",
           (unsigned long long)s->count, (unsigned long long)(s->span_ns / 1000000));
  log_emit((enum vsr_log_level)s->level, s->id, msg, s);
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
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  log_emit(level, id, msg, NULL);
}

const char *vsr_version(void) { return VSR_VERSION; }
