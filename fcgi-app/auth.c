/* auth.c: HTTP basic auth against the htpasswd file (sha512-crypt or stronger).
 * Verifying such a hash costs milliseconds, so a worker remembers credentials it has
 * verified, in memory only, for a short time and only while the htpasswd file is unchanged. */
#include "config.h"
#include "app.h"
#include "throttle.h"

#include <crypt.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#define AUTH_CACHE_SLOTS 16
#define AUTH_CACHE_TTL_MS 30000
#define AUTH_MAX_HEADER 512
/* failed logins: at most AUTH_FAIL_LIMIT per address (per /64 for IPv6) per AUTH_FAIL_WINDOW
 * seconds, counted across all workers (lib/throttle.c); past that, 429 before any password hash
 * is computed */
#define AUTH_FAIL_SLOTS 4096
#define AUTH_FAIL_WINDOW 10
#define AUTH_FAIL_LIMIT 20

static struct cm_throttle *fails; /* shared memory, made by the supervisor before it forks */

int cm_auth_shared_init(void)
{
	fails = cm_throttle_new(AUTH_FAIL_SLOTS);
	return fails ? 0 : -1;
}

/* Whether addr (its /64 for IPv6) has used up its failed logins. */
static bool throttled(const char *addr)
{
	char key[CM_THROTTLE_KEY];
	cm_throttle_key(addr, key);
	return fails && cm_throttle_recent(fails, key, cm_monotonic_ms(), AUTH_FAIL_WINDOW) >= AUTH_FAIL_LIMIT;
}

/* Counts one failed login of addr (its /64 for IPv6). */
static void count_failure(const char *addr)
{
	char key[CM_THROTTLE_KEY];
	cm_throttle_key(addr, key);
	if (fails)
		cm_throttle_fail(fails, key, cm_monotonic_ms(), AUTH_FAIL_WINDOW);
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

/* Looks user up in the htpasswd file; copies the hash. Returns 0 if found. Otherwise (-1) copies
 * the file's first crypt hash into dummy (when there is one): checking a password against it
 * costs what checking a known user's costs (same method and rounds), so the answer's timing
 * does not tell whether a user name exists. */
static int find_hash(const char *path, const char *user, char *hash, size_t hashsz, char *dummy, size_t dummysz)
{
	dummy[0] = '\0';
	FILE *f = fopen(path, "re");
	if (!f)
		return -1;
	char line[1024];
	int rc = -1;
	size_t ul = strlen(user);
	while (fgets(line, sizeof line, f)) {
		char *c = strchr(line, ':');
		if (!c)
			continue;
		char *h = c + 1;
		h[strcspn(h, "\r\n:")] = '\0';
		if ((size_t)(c - line) == ul && !strncmp(line, user, ul)) {
			rc = cm_pathf(hash, hashsz, "%s", h) == 0 ? 0 : -1; /* a cut hash would never match */
			break;
		}
		if (!dummy[0] && h[0] == '$' && cm_pathf(dummy, dummysz, "%s", h) < 0)
			dummy[0] = '\0';
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

	char plain[AUTH_MAX_HEADER];
	int n = (int)cm_b64_decode(plain, sizeof plain, cred, strlen(cred));
	char *colon = n > 0 ? memchr(plain, ':', (size_t)n) : NULL;
	if (colon && !memchr(plain, '\0', (size_t)n)) {
		/* remember who tried, for the audit row (a throttled attempt's too) */
		*colon = '\0';
		if (cm_valid_utf8(plain, strlen(plain)))
			snprintf(r->user, sizeof r->user, "%s", plain);
		*colon = ':';
	}
	if (throttled(r->remote_addr)) {
		explicit_bzero(plain, sizeof plain);
		cm_err_set(err, 429, "too_many_requests", "AUTH_RATE_LIMITED", NULL,
			   "too many failed logins from this address; retry in %d seconds", AUTH_FAIL_WINDOW);
		return -1;
	}
	if (!colon || memchr(plain, '\0', (size_t)n)) {
		explicit_bzero(plain, sizeof plain);
		count_failure(r->remote_addr);
		return deny(err, "INVALID_CREDENTIALS", "Invalid credentials");
	}
	*colon = '\0';
	const char *user = plain, *pass = colon + 1;
	char hash[512], dummy[512];
	static struct crypt_data cd; /* large; one per worker process */
	bool ok = false;
	if (find_hash(r->app->htpasswd, user, hash, sizeof hash, dummy, sizeof dummy) == 0 && hash[0] == '$') {
		const char *out = crypt_r(pass, hash, &cd);
		ok = out && out[0] != '*' && strlen(out) == strlen(hash) && cm_consttime_eq(out, hash, strlen(hash));
	} else if (dummy[0]) {
		/* an unknown user costs the same hash computation as a known one; never a success */
		const char *out = crypt_r(pass, dummy, &cd);
		(void)out;
	}
	explicit_bzero(&cd, sizeof cd);
	explicit_bzero(dummy, sizeof dummy);
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
