/* config.c: .env loading. Only known keys are read; the process environment overrides the file. */
#include "config.h"
#include "cm_config.h"
#include "origin.h"
#include "trust.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static const char *const known_keys[] = {
	"APP_USER", "APP_PASS", "CM_DATA_DIR", "CM_HTTP_LISTEN", "CM_HTTPS_LISTEN", "DEFAULT_USER_UID",
	"BOOT_COMMAND", "PUBLISH_ADDRESS", "DOCKER_HOST", "DEFAULT_MEMORY", "DEFAULT_PIDS",
	"DEFAULT_CPUS", "MAX_BODY_BYTES", "WORKERS_MIN", "WORKERS_MAX", "RUNNER_THREADS",
	"CURSOR_TTL", "JOB_TIMEOUT", "CM_AUTH", "CM_RUN_DIR", "UPLOAD_MAX_BYTES", "UPLOAD_MAX_UNPACKED", "UPLOAD_MAX_ENTRIES", "UPLOAD_MAX_RATIO",
	"WS_MAX_FRAME", "WS_MAX_SESSIONS", "WS_PING_INTERVAL", "CM_IMAGES", "ALLOWED_BIND_ROOTS",
	"ALLOWED_ORIGINS", "ALLOWED_HOSTS", "APPS_LISTEN",
	"CM_NGINX_DIR",
	/* capacity */
	"BUILD_MEMORY", "BUILD_PIDS", "MAX_CONTAINERS", "SYNC_WAIT_GRACE",
	/* who app and harpoon containers run as (issue 15, item 16) */
	"APP_USER_UID", "ALLOW_ROOT_CONTAINERS",
};

struct kv {
	char key[32];
	char val[1024];
	bool set;
};

static struct kv *find_kv(struct kv *kvs, const char *key)
{
	for (size_t i = 0; i < CM_ARRAY_LEN(known_keys); i++)
		if (!strcmp(kvs[i].key, key))
			return &kvs[i];
	return NULL;
}

/* Parses one .env line into key/value; returns 1 for a pair, 0 for blank/comment, -1 if malformed. */
static int parse_line(char *line, char **key, char **val)
{
	char *p = line;
	while (isspace((unsigned char)*p))
		p++;
	if (!*p || *p == '#')
		return 0;
	if (!strncmp(p, "export ", 7))
		p += 7;
	char *eq = strchr(p, '=');
	if (!eq)
		return -1;
	char *kend = eq;
	while (kend > p && isspace((unsigned char)kend[-1]))
		kend--;
	*kend = '\0';
	char *v = eq + 1;
	while (isspace((unsigned char)*v))
		v++;
	size_t vl = strlen(v);
	while (vl > 0 && (v[vl - 1] == '\n' || v[vl - 1] == '\r' || isspace((unsigned char)v[vl - 1])))
		v[--vl] = '\0';
	if (vl >= 2 && (v[0] == '"' || v[0] == '\'') && v[vl - 1] == v[0]) {
		v[vl - 1] = '\0';
		v++;
	} else {
		char *hash = strstr(v, " #");
		if (hash) {
			*hash = '\0';
			vl = strlen(v);
			while (vl > 0 && isspace((unsigned char)v[vl - 1]))
				v[--vl] = '\0';
		}
	}
	*key = p;
	*val = v;
	return 1;
}

static int set_str(char *dst, size_t dstsz, const char *val, const char *key, struct cm_error *err)
{
	size_t n = strlen(val);
	if (n >= dstsz)
		return cm_err_set(err, 500, "config_error", "BAD_CONFIG", key, "%s is longer than %zu characters", key,
				  dstsz - 1);
	memcpy(dst, val, n + 1);
	return 0;
}

static int parse_long(const char *s, long lo, long hi, long *out)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < lo || v > hi)
		return -1;
	*out = v;
	return 0;
}

int cm_parse_uid(const char *s, unsigned *uid, unsigned *gid)
{
	char *end;
	errno = 0;
	unsigned long u = strtoul(s, &end, 10);
	if (errno || end == s || u > 2147483647UL)
		return -1;
	unsigned long g = u;
	if (*end == ':') {
		const char *gs = end + 1;
		g = strtoul(gs, &end, 10);
		if (errno || end == gs || g > 2147483647UL)
			return -1;
	}
	if (*end)
		return -1;
	*uid = (unsigned)u;
	*gid = (unsigned)g;
	return 0;
}

int cm_config_container_user(const struct cm_config *c, const char *asked, char out[64], const char *field,
			     struct cm_error *err)
{
	const char *s = asked && *asked ? asked : c->app_uid;
	unsigned u, g;
	size_t colons = 0, n = strlen(s);
	for (size_t i = 0; i < n; i++) {
		if (s[i] == ':')
			colons++;
		else if (!isdigit((unsigned char)s[i]))
			colons = 2;
	}
	if (colons > 1 || n > 21 || cm_parse_uid(s, &u, &g) < 0)
		return cm_err_validation(err, "INVALID_VALUE", field, "%s is a numeric uid or uid:gid (names are not looked up)",
					 field);
	if (u == 0 && !c->allow_root)
		return cm_err_validation(err, "ROOT_NOT_ALLOWED", field,
					 "containers may not run as root here (the operator's ALLOW_ROOT_CONTAINERS=true allows it)");
	snprintf(out, 64, "%u:%u", u, g);
	return 0;
}

static char https_default[128] = "0.0.0.0:8443";

void cm_config_https_default(const char *listen_spec)
{
	snprintf(https_default, sizeof https_default, "%s", listen_spec);
}

static char apps_default[128]; /* "": derived from the API's listeners */

void cm_config_apps_default(const char *listen_spec)
{
	snprintf(apps_default, sizeof apps_default, "%s", listen_spec);
}

/* APPS_LISTEN's default: the port after each API listener's, on the same address (apps get
 * their own origin; see lib/origin.c). */
static void derive_apps_listen(struct cm_config *c)
{
	char host[2][128];
	int port[2] = {0, 0};
	if (cm_parse_listen(c->http_listen, host[0], sizeof host[0], &port[0]) < 0)
		port[0] = 0;
	if (!strcmp(c->https_listen, "off") || cm_parse_listen(c->https_listen, host[1], sizeof host[1], &port[1]) < 0)
		port[1] = 0;
	c->apps_listen[0] = '\0';
	size_t n = 0;
	for (int i = 0; i < 2; i++) {
		if (!port[i])
			continue;
		/* the next port that is not the other API listener's */
		int p = port[i] + 1;
		if (p == port[1 - i])
			p++;
		if (p > 65535 || n >= sizeof c->apps_listen)
			continue;
		bool v6 = strchr(host[i], ':') != NULL;
		n += (size_t)snprintf(c->apps_listen + n, sizeof c->apps_listen - n, "%s%s%s%s%s:%d", n ? "," : "",
				      i ? "https://" : "", v6 ? "[" : "", host[i], v6 ? "]" : "", p);
	}
	if (!c->apps_listen[0])
		snprintf(c->apps_listen, sizeof c->apps_listen, "off");
}

int cm_config_load(struct cm_config *c, const char *env_file, struct cm_error *err)
{
	struct kv kvs[CM_ARRAY_LEN(known_keys)];
	memset(kvs, 0, sizeof kvs);
	for (size_t i = 0; i < CM_ARRAY_LEN(known_keys); i++)
		snprintf(kvs[i].key, sizeof kvs[i].key, "%s", known_keys[i]);

	memset(c, 0, sizeof *c);
	if (env_file) {
		if (cm_pathf(c->env_file, sizeof c->env_file, "%s", env_file) < 0)
			return cm_err_set(err, 500, "config_error", "BAD_ENV_FILE", NULL, "the env file's path is too long");
		FILE *f = fopen(env_file, "re");
		if (f) {
			char line[2048];
			int lineno = 0;
			while (fgets(line, sizeof line, f)) {
				lineno++;
				char *k, *v;
				int r = parse_line(line, &k, &v);
				if (r < 0) {
					fclose(f);
					return cm_err_set(err, 500, "config_error", "BAD_ENV_FILE", NULL,
							  "%s:%d: expected KEY=VALUE", env_file, lineno);
				}
				struct kv *kv = r ? find_kv(kvs, k) : NULL;
				if (kv) {
					if (cm_pathf(kv->val, sizeof kv->val, "%s", v) < 0) {
						fclose(f);
						return cm_err_set(err, 500, "config_error", "BAD_CONFIG", kv->key,
								  "%s:%d: %s is longer than %zu bytes", env_file, lineno, kv->key,
								  sizeof kv->val - 1);
					}
					kv->set = true;
				}
			}
			fclose(f);
		} else if (errno != ENOENT) {
			return cm_err_set(err, 500, "config_error", "BAD_ENV_FILE", NULL, "cannot read %s: %s",
					  env_file, strerror(errno));
		}
	}
	for (size_t i = 0; i < CM_ARRAY_LEN(known_keys); i++) {
		const char *e = getenv(known_keys[i]);
		if (e) {
			if (cm_pathf(kvs[i].val, sizeof kvs[i].val, "%s", e) < 0)
				return cm_err_set(err, 500, "config_error", "BAD_CONFIG", known_keys[i],
						  "%s is longer than %zu bytes", known_keys[i], sizeof kvs[i].val - 1);
			kvs[i].set = true;
		}
	}
#define GET(k, def) (find_kv(kvs, k)->set && find_kv(kvs, k)->val[0] ? find_kv(kvs, k)->val : (def))
	if (set_str(c->app_user, sizeof c->app_user, GET("APP_USER", "admin"), "APP_USER", err) < 0)
		return -1;
	if (set_str(c->app_pass, sizeof c->app_pass, GET("APP_PASS", ""), "APP_PASS", err) < 0)
		return -1;
	const char *dd = GET("CM_DATA_DIR", "var");
	if (dd[0] == '/') {
		if (cm_pathf(c->data_dir, sizeof c->data_dir, "%s", dd) < 0)
			return cm_err_set(err, 500, "config_error", "BAD_CONFIG", "CM_DATA_DIR", "CM_DATA_DIR too long");
	} else {
		char cwd[PATH_MAX];
		if (!getcwd(cwd, sizeof cwd))
			return cm_err_internal(err, "getcwd: %s", strerror(errno));
		if (snprintf(c->data_dir, sizeof c->data_dir, "%s/%s", cwd, dd) >= (int)sizeof c->data_dir)
			return cm_err_set(err, 500, "config_error", "BAD_CONFIG", "CM_DATA_DIR", "CM_DATA_DIR too long");
	}
	size_t dl = strlen(c->data_dir);
	while (dl > 1 && c->data_dir[dl - 1] == '/')
		c->data_dir[--dl] = '\0';
	const char *rd = GET("CM_RUN_DIR", "");
	if (*rd) {
		if (rd[0] != '/' || snprintf(c->run_dir, sizeof c->run_dir, "%s", rd) >= (int)sizeof c->run_dir)
			return cm_err_set(err, 500, "config_error", "BAD_CONFIG", "CM_RUN_DIR", "CM_RUN_DIR must be an absolute path");
	} else {
		/* one directory per data directory, outside it: the data directory's parents
		 * (a home directory, say) need not be reachable by the web server */
		uint32_t h = 2166136261u;
		for (const char *p = c->data_dir; *p; p++)
			h = (h ^ (unsigned char)*p) * 16777619u;
		snprintf(c->run_dir, sizeof c->run_dir, "/run/container-manager/%08x", h);
	}
	if (set_str(c->images_file, sizeof c->images_file, GET("CM_IMAGES", ""), "CM_IMAGES", err) < 0)
		return -1;
	if (set_str(c->bind_roots, sizeof c->bind_roots, GET("ALLOWED_BIND_ROOTS", ""), "ALLOWED_BIND_ROOTS", err) < 0)
		return -1;
	{
		/* every root absolute; "/" would allow everything (the Docker socket included) */
		char tmp[sizeof c->bind_roots], *save = NULL;
		snprintf(tmp, sizeof tmp, "%s", c->bind_roots);
		for (char *r = strtok_r(tmp, ",", &save); r; r = strtok_r(NULL, ",", &save)) {
			while (*r == ' ')
				r++;
			if (r[0] != '/' || !strcmp(r, "/") || strstr(r, ".."))
				return cm_err_set(err, 500, "config_error", "BAD_CONFIG", "ALLOWED_BIND_ROOTS",
						  "ALLOWED_BIND_ROOTS holds absolute directories other than / (comma-separated)");
		}
	}
	if (set_str(c->http_listen, sizeof c->http_listen, GET("CM_HTTP_LISTEN", "127.0.0.1:4545"), "CM_HTTP_LISTEN", err) < 0)
		return -1;
	if (set_str(c->https_listen, sizeof c->https_listen, GET("CM_HTTPS_LISTEN", https_default), "CM_HTTPS_LISTEN", err) < 0)
		return -1;
	c->https_listen_default = !find_kv(kvs, "CM_HTTPS_LISTEN")->set || !find_kv(kvs, "CM_HTTPS_LISTEN")->val[0];
	if (set_str(c->default_uid, sizeof c->default_uid, GET("DEFAULT_USER_UID", "1000:1000"), "DEFAULT_USER_UID", err) < 0)
		return -1;
	if (set_str(c->boot_command, sizeof c->boot_command, GET("BOOT_COMMAND", "python /app/boot.py"), "BOOT_COMMAND", err) < 0)
		return -1;
	if (set_str(c->publish_address, sizeof c->publish_address, GET("PUBLISH_ADDRESS", "127.0.0.1"), "PUBLISH_ADDRESS", err) < 0)
		return -1;
	if (set_str(c->docker_host, sizeof c->docker_host, GET("DOCKER_HOST", "unix:///var/run/docker.sock"), "DOCKER_HOST", err) < 0)
		return -1;

	unsigned u, g;
	if (cm_parse_uid(c->default_uid, &u, &g) < 0)
		return cm_err_set(err, 500, "config_error", "BAD_CONFIG", "DEFAULT_USER_UID",
				  "DEFAULT_USER_UID must be uid or uid:gid");
	/* app and harpoon containers: a uid of no account by default (65534, "nobody", owns no
	 * files); root only where the operator says so */
	if (set_str(c->app_uid, sizeof c->app_uid, GET("APP_USER_UID", "65534:65534"), "APP_USER_UID", err) < 0)
		return -1;
	const char *allow_root = GET("ALLOW_ROOT_CONTAINERS", "false");
	if (!strcmp(allow_root, "true") || !strcmp(allow_root, "1") || !strcmp(allow_root, "yes"))
		c->allow_root = true;
	else if (strcmp(allow_root, "false") && strcmp(allow_root, "0") && strcmp(allow_root, "no"))
		return cm_err_set(err, 500, "config_error", "BAD_CONFIG", "ALLOW_ROOT_CONTAINERS",
				  "ALLOW_ROOT_CONTAINERS must be true or false");
	if (cm_parse_uid(c->app_uid, &u, &g) < 0)
		return cm_err_set(err, 500, "config_error", "BAD_CONFIG", "APP_USER_UID", "APP_USER_UID must be uid or uid:gid");
	if (u == 0 && !c->allow_root)
		return cm_err_set(err, 500, "config_error", "BAD_CONFIG", "APP_USER_UID",
				  "APP_USER_UID=0 runs app and harpoon containers as root: set ALLOW_ROOT_CONTAINERS=true to allow it");
	if (cm_parse_size(GET("DEFAULT_MEMORY", "1g"), &c->default_memory) < 0 || c->default_memory < (6 << 20))
		return cm_err_set(err, 500, "config_error", "BAD_CONFIG", "DEFAULT_MEMORY",
				  "DEFAULT_MEMORY must be a size of at least 6m");
	if (cm_parse_size(GET("UPLOAD_MAX_BYTES", "2g"), &c->upload_max_bytes) < 0 || c->upload_max_bytes < 1024)
		return cm_err_set(err, 500, "config_error", "BAD_CONFIG", "UPLOAD_MAX_BYTES", "UPLOAD_MAX_BYTES must be a size");
	if (cm_parse_size(GET("UPLOAD_MAX_UNPACKED", "8g"), &c->upload_max_unpacked) < 0 || c->upload_max_unpacked < 1024)
		return cm_err_set(err, 500, "config_error", "BAD_CONFIG", "UPLOAD_MAX_UNPACKED", "UPLOAD_MAX_UNPACKED must be a size");
	/* capacity: every image build is confined like a container, and the number of managed
	 * containers is bounded (both refuse to start when malformed, like every setting) */
	if (cm_parse_size(GET("BUILD_MEMORY", "2g"), &c->build_memory) < 0 || c->build_memory < (6 << 20))
		return cm_err_set(err, 500, "config_error", "BAD_CONFIG", "BUILD_MEMORY",
				  "BUILD_MEMORY must be a size of at least 6m");
	long v;
	struct {
		const char *key, *def;
		long lo, hi;
		long *dst;
	} longs[] = {
		{"DEFAULT_PIDS", "512", 16, 4194304, &c->default_pids},
		{"MAX_BODY_BYTES", "1048576", 1024, 1L << 30, &c->max_body},
		{"CURSOR_TTL", "3600", 1, 86400 * 30, &c->cursor_ttl},
		{"JOB_TIMEOUT", "120", 5, 3600, &c->job_timeout},
		{"UPLOAD_MAX_ENTRIES", "100000", 1, 10000000, &c->upload_max_entries},
		{"UPLOAD_MAX_RATIO", "200", 2, 100000, &c->upload_max_ratio},
		{"WS_MAX_FRAME", "1048576", 1024, 64L << 20, &c->ws_max_frame},
		{"WS_MAX_SESSIONS", "1000", 1, 100000, &c->ws_max_sessions},
		{"WS_PING_INTERVAL", "30", 2, 3600, &c->ws_ping_interval},
		/* capacity */
		{"BUILD_PIDS", "1024", 16, 4194304, &c->build_pids},
		{"MAX_CONTAINERS", "1000", 1, 1000000, &c->max_containers},
		{"SYNC_WAIT_GRACE", "30", 1, 3600, &c->sync_wait_grace},
	};
	for (size_t i = 0; i < CM_ARRAY_LEN(longs); i++) {
		if (parse_long(GET(longs[i].key, longs[i].def), longs[i].lo, longs[i].hi, longs[i].dst) < 0)
			return cm_err_set(err, 500, "config_error", "BAD_CONFIG", longs[i].key,
					  "%s must be an integer from %ld to %ld", longs[i].key, longs[i].lo, longs[i].hi);
	}
	struct {
		const char *key, *def;
		long lo, hi;
		int *dst;
	} ints[] = {
		{"WORKERS_MIN", "2", 1, 256, &c->workers_min},
		{"WORKERS_MAX", "16", 1, 1024, &c->workers_max},
		{"RUNNER_THREADS", "4", 1, 64, &c->runner_threads},
	};
	for (size_t i = 0; i < CM_ARRAY_LEN(ints); i++) {
		if (parse_long(GET(ints[i].key, ints[i].def), ints[i].lo, ints[i].hi, &v) < 0)
			return cm_err_set(err, 500, "config_error", "BAD_CONFIG", ints[i].key,
					  "%s must be an integer from %ld to %ld", ints[i].key, ints[i].lo, ints[i].hi);
		*ints[i].dst = (int)v;
	}
	if (c->workers_max < c->workers_min)
		c->workers_max = c->workers_min;
	const char *cpus = GET("DEFAULT_CPUS", "");
	if (*cpus) {
		char *end;
		c->default_cpus = strtod(cpus, &end);
		if (*end || c->default_cpus < 0.01 || c->default_cpus > 1024)
			return cm_err_set(err, 500, "config_error", "BAD_CONFIG", "DEFAULT_CPUS",
					  "DEFAULT_CPUS must be a number from 0.01");
	}
	{
		/* plain HTTP carries the password in clear: loopback only (TLS is the public listener) */
		char host[128];
		int port;
		if (cm_parse_listen(c->http_listen, host, sizeof host, &port) < 0)
			return cm_err_set(err, 500, "config_error", "BAD_CONFIG", "CM_HTTP_LISTEN", "CM_HTTP_LISTEN must be host:port");
		if (!cm_is_loopback_host(host))
			return cm_err_set(err, 500, "config_error", "BAD_CONFIG", "CM_HTTP_LISTEN",
					  "CM_HTTP_LISTEN must be a loopback address; use CM_HTTPS_LISTEN for other interfaces");
		if (strcmp(c->https_listen, "off") && cm_parse_listen(c->https_listen, host, sizeof host, &port) < 0)
			return cm_err_set(err, 500, "config_error", "BAD_CONFIG", "CM_HTTPS_LISTEN",
					  "CM_HTTPS_LISTEN must be host:port or off");
	}
	{
		/* the checks of lib/origin.c: who may call the API from a browser */
		char bad[128];
		if (set_str(c->allowed_origins, sizeof c->allowed_origins, GET("ALLOWED_ORIGINS", ""), "ALLOWED_ORIGINS", err) < 0 ||
		    set_str(c->allowed_hosts, sizeof c->allowed_hosts, GET("ALLOWED_HOSTS", ""), "ALLOWED_HOSTS", err) < 0)
			return -1;
		if (cm_allowed_origins_valid(c->allowed_origins, bad, sizeof bad) < 0)
			return cm_err_set(err, 500, "config_error", "BAD_CONFIG", "ALLOWED_ORIGINS",
					  "ALLOWED_ORIGINS holds comma-separated origins (scheme://host[:port]), not %s", bad);
		if (cm_allowed_hosts_valid(c->allowed_hosts, bad, sizeof bad) < 0)
			return cm_err_set(err, 500, "config_error", "BAD_CONFIG", "ALLOWED_HOSTS",
					  "ALLOWED_HOSTS holds comma-separated host names (name, *.suffix, or *), not %s", bad);
		const char *al = GET("APPS_LISTEN", apps_default);
		if (al[0]) {
			if (set_str(c->apps_listen, sizeof c->apps_listen, al, "APPS_LISTEN", err) < 0)
				return -1;
		} else {
			derive_apps_listen(c);
		}
		struct cm_origin apps[CM_APPS_LISTENERS];
		char why[160];
		int napps = cm_apps_listen_parse(c->apps_listen, apps, why, sizeof why);
		if (napps < 0)
			return cm_err_set(err, 500, "config_error", "BAD_CONFIG", "APPS_LISTEN",
					  "APPS_LISTEN must be off or up to two [http://|https://]host:port: %s", why);
		/* the same port as the API's would put the apps back on the API's origin */
		char host[128];
		int hp = 0, sp = 0;
		if (cm_parse_listen(c->http_listen, host, sizeof host, &hp) < 0)
			hp = 0;
		if (!strcmp(c->https_listen, "off") || cm_parse_listen(c->https_listen, host, sizeof host, &sp) < 0)
			sp = 0;
		for (int i = 0; i < napps; i++)
			if (apps[i].port == hp || apps[i].port == sp)
				return cm_err_set(err, 500, "config_error", "BAD_CONFIG", "APPS_LISTEN",
						  "APPS_LISTEN port %d is an API listener's: apps need a port of their own", apps[i].port);
	}
	if (set_str(c->nginx_dir, sizeof c->nginx_dir, GET("CM_NGINX_DIR", "/etc/nginx"), "CM_NGINX_DIR", err) < 0)
		return -1;
	if (c->nginx_dir[0] != '/')
		return cm_err_set(err, 500, "config_error", "BAD_CONFIG", "CM_NGINX_DIR", "CM_NGINX_DIR must be an absolute path");
	const char *auth = GET("CM_AUTH", "on");
	if (!strcmp(auth, "off")) {
		char host[128];
		int port;
		if (cm_parse_listen(c->http_listen, host, sizeof host, &port) < 0 || !cm_is_loopback_host(host) ||
		    (strcmp(c->https_listen, "off") &&
		     (cm_parse_listen(c->https_listen, host, sizeof host, &port) < 0 || !cm_is_loopback_host(host))))
			return cm_err_set(err, 500, "config_error", "BAD_CONFIG", "CM_AUTH",
					  "CM_AUTH=off is only allowed when every listener is on loopback");
		/* the apps' listeners pass the same gate: without credentials an app on another
		 * address would be open to everyone who reaches it */
		struct cm_origin apps[CM_APPS_LISTENERS];
		char why_apps[160];
		int napps = cm_apps_listen_parse(c->apps_listen, apps, why_apps, sizeof why_apps);
		for (int i = 0; i < napps; i++)
			if (!cm_is_loopback_host(apps[i].host))
				return cm_err_set(err, 500, "config_error", "BAD_CONFIG", "CM_AUTH",
						  "CM_AUTH=off is only allowed when every listener is on loopback: APPS_LISTEN has %s:%d",
						  apps[i].host, apps[i].port);
		/* the system nginx's sites that include this stack's snippets (the packaged one listens
		 * on 443 of every address, whatever CM_HTTP(S)_LISTEN say) */
		char why[400];
		if (cm_nginx_sites_loopback(c->nginx_dir, c->run_dir, why, sizeof why) < 0)
			return cm_err_set(err, 500, "config_error", "BAD_CONFIG", "CM_AUTH",
					  "CM_AUTH=off is only allowed when every listener is on loopback: %s", why);
		c->auth_off = true;
	} else if (strcmp(auth, "on")) {
		return cm_err_set(err, 500, "config_error", "BAD_CONFIG", "CM_AUTH", "CM_AUTH must be on or off");
	}
#undef GET
	return 0;
}

int cm_config_path(const struct cm_config *c, char *out, size_t outsz, const char *rel)
{
	int n = snprintf(out, outsz, "%s/%s", c->data_dir, rel);
	return (n < 0 || (size_t)n >= outsz) ? -1 : 0;
}
