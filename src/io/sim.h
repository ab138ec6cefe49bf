/* The simulated network: one world, many hosts, virtual time, one seed.
 *
 * A world holds hosts (each with an IPv4 address) and a packet simulator between them. A host
 * gets io loops (vsri_sim_io_new) whose sockets are virtual: listen/accept/connect/recv/send/
 * close between hosts of the same world, with per-path one-way delays, writes cut into
 * random-sized segments, send windows that fill (partial writes, would-block), refusals when
 * nobody listens, resets, partitions (one-way or both) that heal, clogging, and host crashes.
 * The loops' clock is the world's clock: nothing ever sleeps in the kernel. Every random choice
 * comes from the world's generator (xoshiro256** seeded from the seed by splitmix64), so one
 * seed is one run, byte for byte.
 *
 * Single-threaded: the world and every loop on it belong to the thread that runs the world.
 * Never chosen by VSRBUS_IO: a simulated loop only exists on a world. Datagram sockets
 * (SOCK_DGRAM: bind, connect, VSRI_OP_SENDMSG / RECVMSG with addresses, no control messages,
 * no GSO/GRO) lose, duplicate and reorder. */
#ifndef VSRI_IO_SIM_H
#define VSRI_IO_SIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "io/io.h"

#define VSRI_SIM_HOSTS_MAX 64

struct vsri_sim;
struct vsri_sim_host;

/* The network model, drawn by the caller from the seed. Zero fields take the defaults noted. */
struct vsri_sim_net {
  uint64_t delay_min_ns;   /* one-way delay floor; default 50 us */
  uint64_t delay_mean_ns;  /* mean one-way delay; default 500 us */
  uint64_t delay_tail_ns;  /* a tail draw adds up to this much; default 20 ms */
  uint32_t tail_ppm;       /* chance of a tail draw per segment, per million; default 1000 */
  uint32_t window_min;     /* per-direction window (in flight + unread), bytes; default 4 KiB */
  uint32_t window_max;     /* default 256 KiB; each connection draws in [min, max] */
  uint32_t segment_max;    /* largest segment; default 64 KiB (writes cut at random below it) */
  uint32_t partial_write_ppm; /* a write takes fewer bytes than it could; default 100000 */
  uint32_t short_read_ppm;    /* a read returns fewer bytes than it could; default 100000 */
  uint64_t connect_timeout_ns; /* a SYN into a partition fails after this; default 1 s */
  uint64_t rto_ns;             /* a segment held by a partition is retried after; default 200 ms */
  /* Datagrams (SOCK_DGRAM): each travels alone (its own delay: reordering comes free), is lost
   * on a partitioned path or when the receiver's queue is full, and besides: */
  uint32_t dgram_loss_ppm; /* lost, per million; 0: none */
  uint32_t dgram_dup_ppm;  /* delivered twice, per million; 0: none */
  uint32_t dgram_queue_max; /* datagrams a socket holds unread; default 256 (more are dropped) */
};

struct vsri_sim_stats {
  uint64_t segments, bytes;   /* data segments delivered */
  uint64_t connects, accepts, refused, connect_timeouts;
  uint64_t resets;            /* RSTs delivered (faults, crashes, writes to closed sockets) */
  uint64_t held;              /* segment deliveries postponed by a partition */
  uint64_t partial_writes, short_reads, would_block;
  uint64_t dgrams, dgrams_lost, dgrams_duplicated; /* datagrams delivered, lost, sent twice */
};

/* Creates a world. |net| may be NULL (defaults). Returns 0 or VSR_ENOMEM. */
int vsri_sim_new(struct vsri_sim **out, uint64_t seed, const struct vsri_sim_net *net);
/* Frees the world, its hosts and every virtual socket. Loops on it must be gone. */
void vsri_sim_del(struct vsri_sim *w);

uint64_t vsri_sim_now(const struct vsri_sim *w);
uint64_t vsri_sim_rand(struct vsri_sim *w);
uint64_t vsri_sim_below(struct vsri_sim *w, uint64_t n); /* uniform in [0, n); 0 if n == 0 */
/* A vsri_random_fn (util/random.h) drawing from the world: vsri_random_set_hook(fn, world). */
void vsri_sim_random_bytes(void *world, void *buf, size_t len);

/* Adds a host with IPv4 address |ip| ("10.0.0.1"). NULL when full or |ip| does not parse. */
struct vsri_sim_host *vsri_sim_host_new(struct vsri_sim *w, const char *ip);
uint32_t vsri_sim_host_index(const struct vsri_sim_host *h);

/* A loop on host |h|: its sockets live on the host, its clock is the world's. Free it with
 * vsri_io_del. Returns 0 or VSR_ENOMEM. */
int vsri_sim_io_new(struct vsri_io **out, struct vsri_sim_host *h,
                    const struct vsri_io_options *o);

/* ---- faults ---------------------------------------------------------------------------- */

/* Every socket of |h| is reset (its peers get RST), its listeners vanish: new connections to it
 * are refused until something listens again. The host's loops stay usable (to tear down). */
void vsri_sim_crash(struct vsri_sim_host *h);
/* Blocks the path a -> b (and b -> a when |both|): segments and SYNs wait or time out. */
void vsri_sim_partition(struct vsri_sim_host *a, struct vsri_sim_host *b, bool both);
/* Adds |extra_ns| to every one-way delay a -> b until |until_ns| (a delay spike). */
void vsri_sim_clog(struct vsri_sim_host *a, struct vsri_sim_host *b, uint64_t extra_ns,
                   uint64_t until_ns);
/* Lifts every partition and clog. */
void vsri_sim_heal(struct vsri_sim *w);
/* Resets one established connection chosen at random (both ends get RST). Returns true if
 * there was one. */
bool vsri_sim_reset_one(struct vsri_sim *w);

/* ---- running --------------------------------------------------------------------------- */

/* Runs every loop of the world and the network until virtual time |t|: ready work first, then
 * time jumps to the next network event or timer. Returns VSR_ELIMIT if a loop kept busy
 * without time advancing (a livelock), else 0. */
int vsri_sim_run_until(struct vsri_sim *w, uint64_t t);

/* Mixes |len| bytes into the trace hash (the caller's own events). */
void vsri_sim_trace(struct vsri_sim *w, const void *p, size_t len);
uint64_t vsri_sim_trace_hash(const struct vsri_sim *w);
void vsri_sim_stats(const struct vsri_sim *w, struct vsri_sim_stats *out);

#endif
