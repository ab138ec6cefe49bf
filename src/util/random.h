/* The one source of randomness of the library (handshake nonces today; anything that draws
 * random bytes goes through here). Defaults to the kernel CSPRNG; the simulator installs a
 * seeded generator so a run is reproducible from its seed. Process-wide, like the log. */
#ifndef VSRI_RANDOM_H
#define VSRI_RANDOM_H

#include <stddef.h>

/* Fills |buf| with |len| random bytes. Returns 0 or VSR_EIO (the kernel refused). */
int vsri_random_bytes(void *buf, size_t len);

/* Replaces the source (NULL: back to getrandom). For the simulator and tests only: never set
 * it in a process that serves real traffic, the nonces would be predictable. */
typedef void (*vsri_random_fn)(void *ctx, void *buf, size_t len);
void vsri_random_set_hook(vsri_random_fn fn, void *ctx);

#endif
