/* throttle.c: failed-login counters in shared memory (see throttle.h). */
#include "config.h"
#include "throttle.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

void cm_throttle_key(const char *addr, char key[CM_THROTTLE_KEY])
{
	unsigned char b[16];
	if (inet_pton(AF_INET, addr, b) == 1) {
		snprintf(key, CM_THROTTLE_KEY, "4:%u.%u.%u.%u", b[0], b[1], b[2], b[3]);
		return;
	}
	/* nginx may give a zone ("fe80::1%eth0"): the address is what comes before it */
	char a6[64];
	size_t n = strcspn(addr, "%");
	if (n < sizeof a6) {
		memcpy(a6, addr, n);
		a6[n] = '\0';
		if (inet_pton(AF_INET6, a6, b) == 1) {
			static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
			if (!memcmp(b, mapped, sizeof mapped))
				snprintf(key, CM_THROTTLE_KEY, "4:%u.%u.%u.%u", b[12], b[13], b[14], b[15]);
			else
				snprintf(key, CM_THROTTLE_KEY, "6:%02x%02x%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2], b[3], b[4],
					 b[5], b[6], b[7]);
			return;
		}
	}
	uint64_t x = 1469598103934665603ULL;
	for (const char *c = addr; *c; c++)
		x = (x ^ (unsigned char)*c) * 1099511628211ULL;
	snprintf(key, CM_THROTTLE_KEY, "?:%016llx", (unsigned long long)x);
}

struct cm_throttle *cm_throttle_new(uint32_t nslots)
{
	size_t sz = sizeof(struct cm_throttle) + sizeof(struct cm_fail_slot) * nslots;
	struct cm_throttle *t = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (t == MAP_FAILED)
		return NULL;
	pthread_mutexattr_t ma;
	if (pthread_mutexattr_init(&ma) != 0)
		goto fail;
	int rc = pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
	if (rc == 0)
		rc = pthread_mutexattr_setrobust(&ma, PTHREAD_MUTEX_ROBUST);
	if (rc == 0)
		rc = pthread_mutex_init(&t->mu, &ma);
	pthread_mutexattr_destroy(&ma);
	if (rc != 0)
		goto fail;
	t->nslots = nslots;
	if (cm_random_bytes(&t->seed, sizeof t->seed) < 0)
		goto fail;
	return t;
fail:
	munmap(t, sz);
	return NULL;
}

static void lock(struct cm_throttle *t)
{
	if (pthread_mutex_lock(&t->mu) == EOWNERDEAD)
		pthread_mutex_consistent(&t->mu); /* the counters are plain numbers: still usable */
}

static uint64_t key_hash(const struct cm_throttle *t, const char *key)
{
	uint64_t x = 1469598103934665603ULL ^ t->seed;
	for (const char *c = key; *c; c++)
		x = (x ^ (unsigned char)*c) * 1099511628211ULL;
	return x;
}

/* A slot with no failure in this window or the one before counts nothing any more. */
static bool lapsed(const struct cm_fail_slot *s, uint32_t w)
{
	return !s->key[0] || s->window + 1 < w;
}

/* key's slot; else (create) a free or lapsed candidate made key's, or the overflow counter
 * when every candidate holds another live key; else NULL (*full: no candidate was free). */
static struct cm_fail_slot *find(struct cm_throttle *t, const char *key, uint32_t w, bool create, bool *full)
{
	uint64_t h = key_hash(t, key);
	struct cm_fail_slot *spare = NULL;
	for (uint32_t i = 0; i < CM_THROTTLE_PROBE && i < t->nslots; i++) {
		struct cm_fail_slot *s = &t->slots[(h + i) % t->nslots];
		if (s->key[0] && !strcmp(s->key, key))
			return s;
		if (!spare && lapsed(s, w))
			spare = s;
	}
	*full = spare == NULL;
	if (!create)
		return NULL;
	if (!spare)
		return &t->overflow;
	memset(spare, 0, sizeof *spare);
	snprintf(spare->key, sizeof spare->key, "%s", key); /* keys are shorter than CM_THROTTLE_KEY */
	spare->window = w;
	return spare;
}

static double estimate(const struct cm_fail_slot *s, int64_t now_ms, int window_s)
{
	uint32_t w = (uint32_t)(now_ms / 1000 / window_s);
	double into = (double)(now_ms % (window_s * 1000LL)) / (window_s * 1000.0);
	if (s->window == w)
		return s->count + s->prev * (1.0 - into);
	if (s->window + 1 == w)
		return s->count * (1.0 - into);
	return 0;
}

double cm_throttle_recent(struct cm_throttle *t, const char *key, int64_t now_ms, int window_s)
{
	uint32_t w = (uint32_t)(now_ms / 1000 / window_s);
	bool full = false;
	lock(t);
	struct cm_fail_slot *s = find(t, key, w, false, &full);
	/* no slot of its own and none to be had: its failures went to the overflow counter */
	double n = s ? estimate(s, now_ms, window_s) : full ? estimate(&t->overflow, now_ms, window_s) : 0;
	pthread_mutex_unlock(&t->mu);
	return n;
}

void cm_throttle_fail(struct cm_throttle *t, const char *key, int64_t now_ms, int window_s)
{
	uint32_t w = (uint32_t)(now_ms / 1000 / window_s);
	bool full = false;
	lock(t);
	struct cm_fail_slot *s = find(t, key, w, true, &full);
	if (s->window != w) {
		s->prev = s->window + 1 == w ? s->count : 0;
		s->count = 0;
		s->window = w;
	}
	s->count++;
	pthread_mutex_unlock(&t->mu);
}
