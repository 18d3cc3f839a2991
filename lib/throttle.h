/* throttle.h: the failed-login counters shared by the FastCGI workers (a table in shared
 * memory): keyed by client address (IPv6 by its /64), sliding windows, no eviction of a live
 * counter by another address. */
#ifndef CM_THROTTLE_H
#define CM_THROTTLE_H

#include <pthread.h>
#include <stdint.h>
#include "cm.h"

#define CM_THROTTLE_KEY 40     /* "4:255.255.255.255", "6:" + 16 hex digits, or "?:" + a hash */
#define CM_THROTTLE_PROBE 8    /* slots looked at for one key */

struct cm_fail_slot {
	char key[CM_THROTTLE_KEY]; /* "" = free */
	uint32_t window;           /* window number of count */
	uint32_t count;            /* failures in it */
	uint32_t prev;             /* failures in the window before it */
};

struct cm_throttle {
	pthread_mutex_t mu;        /* process-shared and robust: a worker killed holding it is no deadlock */
	uint32_t nslots;
	uint64_t seed;             /* random, so that nobody can choose addresses whose slots collide */
	struct cm_fail_slot overflow; /* every address that found no slot shares this counter */
	struct cm_fail_slot slots[];
};

/* The counting key of a client address: IPv4 (and IPv4-mapped IPv6) as the address, IPv6 by
 * its first 64 bits (one customer gets a whole /64, so counting single addresses would give
 * each attacker 2^64 allowances), anything else by a hash of the text. */
void cm_throttle_key(const char *addr, char key[CM_THROTTLE_KEY]);

/* A table of nslots in shared memory (MAP_SHARED | MAP_ANONYMOUS, before the workers fork),
 * or NULL. */
struct cm_throttle *cm_throttle_new(uint32_t nslots);

/* Failures of key over the last window_s seconds (sliding estimate) at time now_ms. */
double cm_throttle_recent(struct cm_throttle *t, const char *key, int64_t now_ms, int window_s);

/* Counts one failure of key. A key keeps its own slot among CM_THROTTLE_PROBE candidates; a
 * slot is reused only when its counter has lapsed (two windows without a failure), so no
 * address can reset another's counter; when every candidate holds a live counter the failure
 * goes to the shared overflow counter, which then throttles every such address together. */
void cm_throttle_fail(struct cm_throttle *t, const char *key, int64_t now_ms, int window_s);

#endif
