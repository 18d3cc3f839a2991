/* trust.c: the proxy secret nginx sends to the WebSocket helper, and the reading of nginx's
 * `listen` directives behind the CM_AUTH=off guard (see trust.h). */
#include "config.h"
#include "trust.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

int cm_proxy_secret_make(const char *run_dir, struct cm_error *err)
{
	unsigned char raw[CM_PROXY_SECRET_HEX / 2];
	char hex[CM_PROXY_SECRET_HEX + 1];
	char path[4096];
	if (cm_random_bytes(raw, sizeof raw) < 0)
		return cm_err_internal(err, "getrandom failed: %s", strerror(errno));
	for (size_t i = 0; i < sizeof raw; i++)
		snprintf(hex + 2 * i, 3, "%02x", raw[i]);
	explicit_bzero(raw, sizeof raw);
	struct cm_buf conf = {0};
	/* the include nginx reads: one header, set where the helper's locations proxy */
	cm_buf_printf(&conf,
		      "# written at each start by container-manager: proves to the helper that a request came\n"
		      "# through this nginx (other www-data processes cannot read this file)\n"
		      "proxy_set_header X-CM-Proxy-Secret \"%s\";\n",
		      hex);
	struct cm_buf fconf = {0};
	cm_buf_printf(&fconf,
		      "# written at each start by container-manager: proves to the worker pool that a request\n"
		      "# came through this nginx (other www-data processes cannot read this file)\n"
		      "fastcgi_param " CM_PROXY_SECRET_PARAM " \"%s\";\n",
		      hex);
	int rc = 0;
	/* the secret first: a helper started in between reads the new one, nginx the old, and a
	 * failed write leaves the pair unusable rather than silently open */
	if (cm_pathf(path, sizeof path, "%s/%s", run_dir, CM_PROXY_SECRET_FILE) < 0 ||
	    cm_write_file_atomic(path, hex, CM_PROXY_SECRET_HEX, 0600) < 0)
		rc = cm_err_internal(err, "cannot write %s/%s: %s", run_dir, CM_PROXY_SECRET_FILE, strerror(errno));
	else if (!conf.data || cm_pathf(path, sizeof path, "%s/%s", run_dir, CM_PROXY_SECRET_CONF) < 0 ||
		 cm_write_file_atomic(path, conf.data, conf.len, 0600) < 0)
		rc = cm_err_internal(err, "cannot write %s/%s: %s", run_dir, CM_PROXY_SECRET_CONF, strerror(errno));
	else if (!fconf.data || cm_pathf(path, sizeof path, "%s/%s", run_dir, CM_PROXY_SECRET_FCGI_CONF) < 0 ||
		 cm_write_file_atomic(path, fconf.data, fconf.len, 0600) < 0)
		rc = cm_err_internal(err, "cannot write %s/%s: %s", run_dir, CM_PROXY_SECRET_FCGI_CONF, strerror(errno));
	if (fconf.data)
		explicit_bzero(fconf.data, fconf.len);
	cm_buf_free(&fconf);
	if (conf.data)
		explicit_bzero(conf.data, conf.len);
	cm_buf_free(&conf);
	explicit_bzero(hex, sizeof hex);
	return rc;
}

int cm_proxy_secret_load(const char *run_dir, char out[CM_PROXY_SECRET_HEX + 1], struct cm_error *err)
{
	char path[4096];
	out[0] = '\0';
	if (cm_pathf(path, sizeof path, "%s/%s", run_dir, CM_PROXY_SECRET_FILE) < 0)
		return cm_err_internal(err, "run directory path too long");
	size_t len = 0;
	char *s = cm_read_file(path, 4096, &len);
	if (!s)
		return cm_err_internal(err, "cannot read the proxy secret %s: %s (run `container-manager prepare` first)", path,
				       strerror(errno));
	bool good = len == CM_PROXY_SECRET_HEX && strspn(s, "0123456789abcdef") == CM_PROXY_SECRET_HEX;
	if (good)
		memcpy(out, s, CM_PROXY_SECRET_HEX + 1);
	explicit_bzero(s, len);
	free(s);
	if (!good)
		return cm_err_internal(err, "the proxy secret %s is malformed", path);
	return 0;
}

bool cm_proxy_secret_ok(const char *expected, const char *got)
{
	/* the length is public (always CM_PROXY_SECRET_HEX); only the bytes are compared in
	 * constant time */
	if (!expected || !got || strlen(expected) != CM_PROXY_SECRET_HEX || strnlen(got, CM_PROXY_SECRET_HEX + 1) != CM_PROXY_SECRET_HEX)
		return false;
	return cm_consttime_eq(expected, got, CM_PROXY_SECRET_HEX);
}

/* ------------------------------------------------------------------ nginx listeners */

struct lexer {
	const char *p;
	char tok[512];
	bool special; /* the token is ; { or } */
};

/* The next token of nginx's syntax: 1, 0 at the end, -1 on an unterminated quote. */
static int next_token(struct lexer *lx)
{
	for (;;) {
		while (*lx->p == ' ' || *lx->p == '\t' || *lx->p == '\r' || *lx->p == '\n')
			lx->p++;
		if (*lx->p != '#')
			break;
		while (*lx->p && *lx->p != '\n')
			lx->p++;
	}
	if (!*lx->p)
		return 0;
	size_t n = 0;
	lx->special = false;
	if (*lx->p == ';' || *lx->p == '{' || *lx->p == '}') {
		lx->tok[0] = *lx->p++;
		lx->tok[1] = '\0';
		lx->special = true;
		return 1;
	}
	if (*lx->p == '"' || *lx->p == '\'') {
		char q = *lx->p++;
		while (*lx->p && *lx->p != q) {
			if (*lx->p == '\\' && lx->p[1])
				lx->p++;
			if (n + 1 < sizeof lx->tok)
				lx->tok[n++] = *lx->p;
			lx->p++;
		}
		if (!*lx->p)
			return -1;
		lx->p++;
	} else {
		while (*lx->p && !strchr(" \t\r\n;{}#", *lx->p)) {
			if (*lx->p == '\\' && lx->p[1])
				lx->p++;
			if (n + 1 < sizeof lx->tok)
				lx->tok[n++] = *lx->p;
			lx->p++;
		}
	}
	lx->tok[n] = '\0';
	return 1;
}

/* One listen address: a unix socket or a loopback host is local; a bare port, "*", a
 * wildcard or any other address is not. */
static bool listen_is_local(const char *a)
{
	if (!strncmp(a, "unix:", 5))
		return true;
	if (*a && strspn(a, "0123456789") == strlen(a))
		return false; /* a port alone: every address */
	char host[256];
	if (a[0] == '[') {
		const char *close = strchr(a, ']');
		if (!close || (size_t)(close - a - 1) >= sizeof host)
			return false;
		memcpy(host, a + 1, (size_t)(close - a - 1));
		host[close - a - 1] = '\0';
	} else {
		snprintf(host, sizeof host, "%s", a);
		char *colon = strrchr(host, ':');
		if (colon)
			*colon = '\0';
	}
	return cm_is_loopback_host(host);
}

int cm_nginx_listeners_loopback(const char *conf, char *bad, size_t badsz)
{
	struct lexer lx = {.p = conf};
	/* the blocks we are in: is each a server block, and how many listens did it have */
	enum { MAXDEPTH = 64 };
	bool is_server[MAXDEPTH];
	int listens[MAXDEPTH];
	int depth = 0;
	char first[64] = "";
	int ntok = 0; /* tokens of the directive being read */
	bool in_listen = false;
	int r;
	if (badsz)
		bad[0] = '\0';
	while ((r = next_token(&lx)) > 0) {
		if (lx.special && lx.tok[0] == '{') {
			if (depth >= MAXDEPTH)
				return -1;
			is_server[depth] = ntok == 1 && !strcmp(first, "server");
			listens[depth] = 0;
			depth++;
			ntok = 0;
			in_listen = false;
			continue;
		}
		if (lx.special && lx.tok[0] == '}') {
			if (depth == 0 || ntok != 0)
				return -1;
			depth--;
			if (is_server[depth] && listens[depth] == 0) {
				/* nginx listens on *:80 (or *:8000) for a server without listen */
				snprintf(bad, badsz, "*:80 (a server block without listen)");
				return 0;
			}
			continue;
		}
		if (lx.special) { /* ; */
			ntok = 0;
			in_listen = false;
			continue;
		}
		if (ntok == 0) {
			snprintf(first, sizeof first, "%s", lx.tok);
			in_listen = !strcmp(lx.tok, "listen");
		} else if (ntok == 1 && in_listen) {
			for (int d = depth - 1; d >= 0; d--)
				if (is_server[d]) {
					listens[d]++;
					break;
				}
			if (!listen_is_local(lx.tok)) {
				snprintf(bad, badsz, "%s", lx.tok);
				return 0;
			}
		}
		ntok++;
	}
	if (r < 0 || depth != 0 || ntok != 0)
		return -1;
	return 1;
}

/* One candidate site file: 0 when it does not name run_dir or listens on loopback only, -1
 * with why otherwise. */
static int check_site(const char *path, const char *run_dir, char *why, size_t whysz)
{
	char *text = cm_read_file(path, 4u << 20, NULL);
	if (!text) {
		if (errno == ENOENT || errno == EISDIR)
			return 0; /* none, or a link to nothing: nginx serves nothing from it */
		snprintf(why, whysz, "cannot read %s to check its listeners: %s", path, strerror(errno));
		return -1;
	}
	char needle[4200];
	int rc = 0;
	if (cm_pathf(needle, sizeof needle, "%s/", run_dir) == 0 && strstr(text, needle)) {
		char bad[128];
		int r = cm_nginx_listeners_loopback(text, bad, sizeof bad);
		if (r == 0) {
			snprintf(why, whysz, "%s listens on %s (and serves this stack: it names %s)", path, bad, run_dir);
			rc = -1;
		} else if (r < 0) {
			snprintf(why, whysz, "%s names %s but its listeners cannot be read (unbalanced braces or quotes)", path,
				 run_dir);
			rc = -1;
		}
	}
	free(text);
	return rc;
}

int cm_nginx_sites_loopback(const char *nginx_dir, const char *run_dir, char *why, size_t whysz)
{
	char path[4200];
	if (cm_pathf(path, sizeof path, "%s/sites-available/container-manager", nginx_dir) < 0) {
		snprintf(why, whysz, "the nginx directory path is too long");
		return -1;
	}
	if (check_site(path, run_dir, why, whysz) < 0)
		return -1;
	static const char *const dirs[] = {"sites-enabled", "conf.d"};
	for (size_t i = 0; i < CM_ARRAY_LEN(dirs); i++) {
		char dpath[4200];
		if (cm_pathf(dpath, sizeof dpath, "%s/%s", nginx_dir, dirs[i]) < 0) {
			snprintf(why, whysz, "the nginx directory path is too long");
			return -1;
		}
		DIR *d = opendir(dpath);
		if (!d) {
			if (errno == ENOENT)
				continue;
			snprintf(why, whysz, "cannot list %s to check its sites' listeners: %s", dpath, strerror(errno));
			return -1;
		}
		struct dirent *e;
		int rc = 0;
		while (rc == 0 && (e = readdir(d))) {
			size_t nl = strlen(e->d_name);
			if (e->d_name[0] == '.')
				continue;
			/* nginx.conf includes conf.d/ *.conf and sites-enabled/ * */
			if (i == 1 && (nl < 5 || strcmp(e->d_name + nl - 5, ".conf")))
				continue;
			if (cm_pathf(path, sizeof path, "%s/%s", dpath, e->d_name) < 0) {
				snprintf(why, whysz, "a path in %s is too long", dpath);
				rc = -1;
			} else {
				rc = check_site(path, run_dir, why, whysz);
			}
		}
		closedir(d);
		if (rc < 0)
			return -1;
	}
	return 0;
}
