/* auth.c: HTTP basic auth against the htpasswd file (sha512-crypt or stronger).
 * Verifying such a hash costs milliseconds, so a worker remembers credentials it has
 * verified, in memory only, for a short time and only while the htpasswd file is unchanged. */
#include "config.h"
#include "app.h"

#include <crypt.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

#define AUTH_CACHE_SLOTS 16
#define AUTH_CACHE_TTL_MS 30000
#define AUTH_MAX_HEADER 512
/* failed logins: at most AUTH_FAIL_LIMIT per address per AUTH_FAIL_WINDOW seconds, counted
 * across all workers; past that, 429 before any password hash is computed */
#define AUTH_FAIL_SLOTS 4096
#define AUTH_FAIL_WINDOW 10
#define AUTH_FAIL_LIMIT 20

struct fail_slot {
	uint64_t addr_hash;
	uint32_t window; /* AUTH_FAIL_WINDOW-second window number */
	uint32_t count;  /* failures in it */
	uint32_t prev;   /* failures in the window before it */
};

static struct fail_slot *fails; /* MAP_SHARED, made by the supervisor before it forks */

int cm_auth_shared_init(void)
{
	void *p = mmap(NULL, sizeof(struct fail_slot) * AUTH_FAIL_SLOTS, PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return -1;
	fails = p;
	return 0;
}

static struct fail_slot *fail_slot(const char *addr, uint64_t *h)
{
	uint64_t x = 1469598103934665603ULL;
	for (const char *c = addr; *c; c++)
		x = (x ^ (unsigned char)*c) * 1099511628211ULL;
	*h = x | 1;
	return fails ? &fails[x % AUTH_FAIL_SLOTS] : NULL;
}

/* Failures of addr over the last AUTH_FAIL_WINDOW seconds, estimated as a sliding window
 * (this window's count plus the previous window's, weighted by how much of it still lies
 * within the last AUTH_FAIL_WINDOW seconds): a flood that straddles a window boundary gets no
 * fresh allowance there. */
static double recent_failures(const struct fail_slot *s, uint64_t h)
{
	int64_t now = cm_monotonic_ms();
	uint32_t w = (uint32_t)(now / 1000 / AUTH_FAIL_WINDOW);
	if (__atomic_load_n(&s->addr_hash, __ATOMIC_RELAXED) != h)
		return 0;
	uint32_t sw = __atomic_load_n(&s->window, __ATOMIC_RELAXED);
	uint32_t cur = __atomic_load_n(&s->count, __ATOMIC_RELAXED), prev = __atomic_load_n(&s->prev, __ATOMIC_RELAXED);
	double into = (double)(now % (AUTH_FAIL_WINDOW * 1000)) / (AUTH_FAIL_WINDOW * 1000.0);
	if (sw == w)
		return cur + prev * (1.0 - into);
	if (sw + 1 == w)
		return cur * (1.0 - into);
	return 0;
}

/* Whether addr has used up its failed logins. */
static bool throttled(const char *addr)
{
	uint64_t h;
	struct fail_slot *s = fail_slot(addr, &h);
	return s && recent_failures(s, h) >= AUTH_FAIL_LIMIT;
}

/* Counts one failed login of addr (approximate under races; a slot shared by two
 * addresses goes to the latest). */
static void count_failure(const char *addr)
{
	uint64_t h;
	struct fail_slot *s = fail_slot(addr, &h);
	if (!s)
		return;
	uint32_t w = (uint32_t)(cm_monotonic_ms() / 1000 / AUTH_FAIL_WINDOW);
	uint32_t sw = __atomic_load_n(&s->window, __ATOMIC_RELAXED);
	if (__atomic_load_n(&s->addr_hash, __ATOMIC_RELAXED) != h) {
		__atomic_store_n(&s->addr_hash, h, __ATOMIC_RELAXED);
		__atomic_store_n(&s->window, w, __ATOMIC_RELAXED);
		__atomic_store_n(&s->count, 0, __ATOMIC_RELAXED);
		__atomic_store_n(&s->prev, 0, __ATOMIC_RELAXED);
	} else if (sw != w) {
		uint32_t carried = sw + 1 == w ? __atomic_load_n(&s->count, __ATOMIC_RELAXED) : 0;
		__atomic_store_n(&s->window, w, __ATOMIC_RELAXED);
		__atomic_store_n(&s->prev, carried, __ATOMIC_RELAXED);
		__atomic_store_n(&s->count, 0, __ATOMIC_RELAXED);
	}
	__atomic_add_fetch(&s->count, 1, __ATOMIC_RELAXED);
}

struct auth_slot {
	char header[AUTH_MAX_HEADER];
	char user[128];
	int64_t expires;
};

static struct auth_slot cache[AUTH_CACHE_SLOTS];
static struct stat cache_stamp;
static unsigned cache_next;

static bool same_file(const struct stat *a, const struct stat *b)
{
	return a->st_ino == b->st_ino && a->st_size == b->st_size && a->st_mtim.tv_sec == b->st_mtim.tv_sec &&
	       a->st_mtim.tv_nsec == b->st_mtim.tv_nsec && a->st_dev == b->st_dev;
}

static void cache_flush(void)
{
	explicit_bzero(cache, sizeof cache);
}

static int deny(struct cm_error *err, const char *code, const char *msg)
{
	return cm_err_set(err, 401, "auth_error", code, NULL, "%s", msg);
}

/* Looks user up in the htpasswd file; copies the hash. Returns 0 if found. */
static int find_hash(const char *path, const char *user, char *hash, size_t hashsz)
{
	FILE *f = fopen(path, "re");
	if (!f)
		return -1;
	char line[1024];
	int rc = -1;
	size_t ul = strlen(user);
	while (fgets(line, sizeof line, f)) {
		if (!strncmp(line, user, ul) && line[ul] == ':') {
			char *h = line + ul + 1;
			h[strcspn(h, "\r\n:")] = '\0';
			snprintf(hash, hashsz, "%s", h);
			rc = 0;
			break;
		}
	}
	explicit_bzero(line, sizeof line);
	fclose(f);
	return rc;
}

int cm_auth_check(struct cm_req *r, struct cm_error *err)
{
	if (r->app->cfg.auth_off) {
		snprintf(r->user, sizeof r->user, "%s", "-");
		return 0;
	}
	const char *hdr = cm_req_header(r, "HTTP_AUTHORIZATION");
	if (!hdr || !*hdr)
		return deny(err, "AUTH_REQUIRED", "Authentication required");
	if (strncasecmp(hdr, "Basic ", 6))
		return deny(err, "AUTH_REQUIRED", "Basic authentication required");
	const char *cred = hdr + 6;
	while (*cred == ' ')
		cred++;
	if (strlen(cred) >= AUTH_MAX_HEADER)
		return deny(err, "INVALID_CREDENTIALS", "Invalid credentials");

	/* a changed password file empties the cache; looked at no more than once a second */
	static int64_t checked_at;
	int64_t now = cm_monotonic_ms();
	if (now - checked_at >= 1000 || !checked_at) {
		struct stat st;
		if (stat(r->app->htpasswd, &st) < 0) {
			cache_flush();
			return cm_err_set(err, 503, "unavailable", "AUTH_UNAVAILABLE", NULL, "credentials file is missing");
		}
		if (!same_file(&st, &cache_stamp)) {
			cache_flush();
			cache_stamp = st;
		}
		checked_at = now;
	}
	size_t cl = strlen(cred);
	for (unsigned i = 0; i < AUTH_CACHE_SLOTS; i++) {
		struct auth_slot *s = &cache[i];
		if (s->expires > now && strlen(s->header) == cl && cm_consttime_eq(s->header, cred, cl)) {
			snprintf(r->user, sizeof r->user, "%s", s->user);
			return 0;
		}
	}

	if (throttled(r->remote_addr)) {
		cm_err_set(err, 429, "too_many_requests", "AUTH_RATE_LIMITED", NULL,
			   "too many failed logins from this address; retry in %d seconds", AUTH_FAIL_WINDOW);
		return -1;
	}
	char plain[AUTH_MAX_HEADER];
	int n = (int)cm_b64_decode(plain, sizeof plain, cred, strlen(cred));
	char *colon = n > 0 ? memchr(plain, ':', (size_t)n) : NULL;
	if (!colon || memchr(plain, '\0', (size_t)n)) {
		explicit_bzero(plain, sizeof plain);
		count_failure(r->remote_addr);
		return deny(err, "INVALID_CREDENTIALS", "Invalid credentials");
	}
	*colon = '\0';
	const char *user = plain, *pass = colon + 1;
	/* remember who tried, for the audit row */
	if (cm_valid_utf8(user, strlen(user)))
		snprintf(r->user, sizeof r->user, "%s", user);
	char hash[512];
	static struct crypt_data cd; /* large; one per worker process */
	bool ok = false;
	if (find_hash(r->app->htpasswd, user, hash, sizeof hash) == 0 && hash[0] == '$') {
		const char *out = crypt_r(pass, hash, &cd);
		ok = out && out[0] != '*' && strlen(out) == strlen(hash) && cm_consttime_eq(out, hash, strlen(hash));
	}
	explicit_bzero(&cd, sizeof cd);
	explicit_bzero(plain + (colon - plain), (size_t)n - (size_t)(colon - plain));
	explicit_bzero(hash, sizeof hash);
	if (!ok) {
		explicit_bzero(plain, sizeof plain);
		count_failure(r->remote_addr);
		return deny(err, "INVALID_CREDENTIALS", "Invalid credentials");
	}
	struct auth_slot *s = &cache[cache_next++ % AUTH_CACHE_SLOTS];
	snprintf(s->header, sizeof s->header, "%s", cred);
	snprintf(s->user, sizeof s->user, "%s", user);
	s->expires = now + AUTH_CACHE_TTL_MS;
	explicit_bzero(plain, sizeof plain);
	return 0;
}
