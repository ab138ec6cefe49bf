/* `vsrbus demo`: what it prints: the live line once a second (and the timer that drives the
 * run's phases), the summary, the nodes' own accounts and the `vsrbus bench` CSV row. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmds.h"
#include "demo.h"

/* ---- measuring ------------------------------------------------------------------------- */

static void demo_ms(char *buf, size_t len, uint64_t ns, bool pad) {
  snprintf(buf, len, pad ? "%7.3f ms" : "%.3f ms", (double)ns / 1e6);
}

void demo_tick(void *ctx) {
  struct demo *d = ctx;
  uint64_t now = vsr_tool_now();
  if (d->connect == NULL && !demo_nodes_alive(d)) {
    d->failed = true;
    vsr_loop_stop(d->loop);
    return;
  }
  if (!d->measuring) {
    if (d->warm < d->clients) {
      if (now - d->start_ns > DEMO_WARMUP_NS) {
        fprintf(stderr, "vsrbus demo: only %d of %d clients got a Reply within %llu s; "
                "giving up (logs in %s)\n", d->warm, d->clients,
                (unsigned long long)(DEMO_WARMUP_NS / DEMO_SEC), d->connect ? "-" : d->dir);
        d->failed = true;
        vsr_loop_stop(d->loop);
        return;
      }
      vsr_timer_arm(d->tick, DEMO_SEC / 10);
      return;
    }
    if (!d->quiet) {
      fprintf(d->out, "cluster answering after %.2f s (every client got a committed Reply); "
              "measuring for %d s\n", (double)(now - d->start_ns) / 1e9, d->seconds);
    }
    d->measuring = true;
    d->measure_ns = now;
    d->last_reply_ns = 0;
    demo_events(d);
    vsr_timer_arm(d->tick, DEMO_SEC);
    return;
  }
  d->ticks++;
  char p50[32], p99[32];
  demo_ms(p50, sizeof p50, vsri_hist_percentile(&d->sec, 50), true);
  demo_ms(p99, sizeof p99, vsri_hist_percentile(&d->sec, 99), true);
  if (!d->quiet) {
    fprintf(d->out, "[%3ds] %9llu committed req/s   p50 %s   p99 %s   view %u\n", d->ticks,
            (unsigned long long)d->sec_committed, p50, p99, d->view);
    fflush(d->out);
  }
  if (d->ticks < d->seconds) demo_events(d);
  d->total_committed += d->sec_committed;
  d->sec_committed = 0;
  vsri_hist_merge(&d->total, &d->sec);
  vsri_hist_reset(&d->sec);
  if (d->ticks >= d->seconds) {
    d->done = true;
    d->end_ns = now;
    vsr_loop_stop(d->loop);
    return;
  }
  /* Next tick on the second boundary of the measurement, whatever this one cost. */
  uint64_t next = d->measure_ns + (uint64_t)(d->ticks + 1) * DEMO_SEC;
  vsr_timer_arm(d->tick, next > now ? next - now : 1);
}

void demo_summary(const struct demo *d) {
  double secs = d->ticks ? (double)d->ticks : 1.0;
  char p50[32], p99[32], p999[32], mx[32];
  demo_ms(p50, sizeof p50, vsri_hist_percentile(&d->total, 50), false);
  demo_ms(p99, sizeof p99, vsri_hist_percentile(&d->total, 99), false);
  demo_ms(p999, sizeof p999, vsri_hist_percentile(&d->total, 99.9), false);
  demo_ms(mx, sizeof mx, d->total.max_ns, false);
  fprintf(d->out, "summary: %llu requests committed in %d s = %.0f req/s; latency p50 %s, p99 %s, "
         "p99.9 %s, max %s; %d clients x %d in flight, %u-byte bodies; %llu errors\n",
         (unsigned long long)d->total_committed, d->ticks, (double)d->total_committed / secs,
         p50, p99, p999, mx, d->clients, d->depth, d->size, (unsigned long long)d->errors);
  char gap[32];
  demo_ms(gap, sizeof gap, d->max_gap_ns, false);
  fprintf(d->out, "sessions: %llu requests sent (%llu sent again: timeout or failover), %llu "
          "replies received (%llu late or duplicate, dropped), %llu evictions, %llu failovers; "
          "view changes: %u (view %u, primary %u); longest gap without a commit %s\n",
          (unsigned long long)d->sent, (unsigned long long)d->resent,
          (unsigned long long)d->replied, (unsigned long long)d->late,
          (unsigned long long)d->evicted, (unsigned long long)d->failovers, d->view, d->view,
          d->nodes ? d->view % (uint32_t)d->nodes : 0, gap);
  if (d->kill_ns && d->kill_ns > d->measure_ns && d->end_ns > d->kill_ns) {
    char b99[32], a99[32];
    demo_ms(b99, sizeof b99, vsri_hist_percentile(&d->before, 99), false);
    demo_ms(a99, sizeof a99, vsri_hist_percentile(&d->after, 99), false);
    double bs = (double)(d->kill_ns - d->measure_ns) / 1e9;
    double as = (double)(d->end_ns - d->kill_ns) / 1e9;
    fprintf(d->out, "failover: before the kill %.0f req/s, p99 %s; after it %.0f req/s, p99 %s "
            "(gap included); first commit %.0f ms after the kill\n", (double)d->before_n / bs,
            b99, (double)d->after_n / as, a99,
            d->recovered_ns ? (double)(d->recovered_ns - d->kill_ns) / 1e6 : -1.0);
  }
}

/* The count written just before |label| in a node's report line (0 if absent). */
static uint64_t demo_count_before(const char *line, const char *label) {
  const char *at = strstr(line, label);
  if (!at) return 0;
  const char *p = at;
  while (p > line && p[-1] == ' ') p--;
  while (p > line && p[-1] >= '0' && p[-1] <= '9') p--;
  return strtoull(p, NULL, 10);
}

/* Prints each node's own account (its last lines) once it stopped, then the drops they
 * counted, summed: frames the replicas' buses refused or dropped and Requests the primary
 * refused. Each is also in the node's log (VSR-DROP lines). */
void demo_node_reports(const struct demo *d) {
  uint64_t full = 0, down = 0, closed = 0, pipeline = 0, dups = 0;
  for (int i = 0; i < DEMO_REPLICAS; i++) {
    char path[96], line[1024];
    snprintf(path, sizeof path, "%s/node%d.log", d->dir, i);
    FILE *f = fopen(path, "r");
    if (!f) continue;
    while (fgets(line, sizeof line, f)) {
      if (strstr(line, "vsrbus node: replica") && strstr(line, "view changes")) {
        fprintf(d->out, "  %s", line + strlen("vsrbus node: "));
        dups += demo_count_before(line, " duplicates answered from the table");
      }
      if (strstr(line, "vsrbus node: replica") && strstr(line, "ops committed")) {
        fprintf(d->out, "  %s", line + strlen("vsrbus node: "));
        full += demo_count_before(line, " sends refused (queue full)");
        down += demo_count_before(line, " sends refused (not connected)");
        closed += demo_count_before(line, " dropped at close");
        pipeline += demo_count_before(line, " dropped (pipeline full)");
      }
    }
    fclose(f);
  }
  fprintf(d->out, "drops: %llu frames (%llu refused: queue full, %llu refused: not connected, "
          "%llu queued at close), %llu requests refused (pipeline full); %llu client errors\n",
          (unsigned long long)(full + down + closed), (unsigned long long)full,
          (unsigned long long)down, (unsigned long long)closed, (unsigned long long)pipeline,
          (unsigned long long)d->errors);
  fprintf(d->out, "client table: %llu duplicates answered from the table (summed over the "
          "replicas)\n", (unsigned long long)dups);
}

/* One row in the `vsrbus bench` format: msgs_per_s = committed requests per second, latency
 * = request round trips, rss_kib = the primary's peak RSS; allocations are not counted. The
 * mode is "pipeline" with one request in flight per client, "pipeline-kK" with K. */
void demo_csv_row(const struct demo *d) {
  double secs = d->ticks ? (double)d->ticks : 1.0, rps = (double)d->total_committed / secs;
  uint32_t frame = VSR_HEADER_SIZE + d->size;
  char mode[32] = "pipeline";
  if (d->depth > 1) snprintf(mode, sizeof mode, "pipeline-k%d", d->depth);
  printf("%s,%s,%s,%u,%d,%.0f,%.1f,%.1f,%.1f,%.1f,", d->system, d->transport, mode, frame,
         d->clients, rps, rps * frame / 1e6,
         (double)vsri_hist_percentile(&d->total, 50) / 1e3,
         (double)vsri_hist_percentile(&d->total, 99) / 1e3,
         (double)vsri_hist_percentile(&d->total, 99.9) / 1e3);
  if (d->primary_hwm_kib) printf("%llu", (unsigned long long)d->primary_hwm_kib);
  printf(",\n");
  fflush(stdout);
}
