/* origin.c: Host and Origin checks (see origin.h). The rules:
 *  - Host: a DNS-rebinding page reaches the service under the attacker's own name, so a Host
 *    must be an IP literal (a rebinding needs a name), a loopback name, nginx's server_name
 *    or an entry of ALLOWED_HOSTS; otherwise 421 MISDIRECTED_REQUEST.
 *  - Origin: browsers send it on every cross-origin request and on every non-GET one; curl
 *    and the API's clients send none, and those keep working. A state-changing request
 *    (any method but GET/HEAD/OPTIONS, and GET /shutdown) or a WebSocket upgrade whose Origin
 *    is not one of the service's own (the request's own scheme://Host, or an allowed host on
 *    an API listener's scheme and port) nor listed in ALLOWED_ORIGINS is refused 403
 *    CROSS_ORIGIN_REFUSED; without an Origin, Sec-Fetch-Site: cross-site is refused the same.
 *  - An app's origin (an apps listener, APPS_LISTEN) is refused on every request, reads
 *    included: the apps' JavaScript must never drive the API with the user's credentials. */
#include "config.h"
#include "origin.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

static int default_port(const char *scheme)
{
	return !strcmp(scheme, "https") ? 443 : 80;
}

static bool host_chars_ok(const char *h, size_t n)
{
	if (n == 0 || n > 253)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)h[i];
		if (!isalnum(ch) && ch != '.' && ch != '-' && ch != '_')
			return false;
	}
	return true;
}

/* "host", "host:port", "[v6]" or "[v6]:port" into host (lowercase, brackets dropped, one
 * trailing dot dropped) and port (defport when absent). Returns 0 or -1. */
static int split_hostport(const char *s, size_t n, char *host, size_t hostsz, int *port, int defport)
{
	const char *hs = s, *pe = NULL;
	size_t hl;
	if (n && s[0] == '[') {
		const char *rb = memchr(s, ']', n);
		if (!rb)
			return -1;
		hs = s + 1;
		hl = (size_t)(rb - hs);
		pe = rb + 1;
		if (pe < s + n && *pe != ':')
			return -1;
		char tmp[64];
		struct in6_addr a6;
		if (hl == 0 || hl >= sizeof tmp)
			return -1;
		memcpy(tmp, hs, hl);
		tmp[hl] = '\0';
		if (inet_pton(AF_INET6, tmp, &a6) != 1)
			return -1;
	} else {
		const char *colon = memchr(s, ':', n);
		hl = colon ? (size_t)(colon - s) : n;
		pe = colon;
		if (hl && s[hl - 1] == '.')
			hl--;
		if (!host_chars_ok(s, hl))
			return -1;
	}
	if (hl >= hostsz)
		return -1;
	for (size_t i = 0; i < hl; i++)
		host[i] = (char)tolower((unsigned char)hs[i]);
	host[hl] = '\0';
	*port = defport;
	if (pe && pe < s + n) {
		/* ":" then 1-5 digits */
		const char *d = pe + 1;
		size_t dl = (size_t)(s + n - d);
		if (dl == 0 || dl > 5 || strspn(d, "0123456789") < dl)
			return -1;
		long p = 0;
		for (size_t i = 0; i < dl; i++)
			p = p * 10 + (d[i] - '0');
		if (p < 1 || p > 65535)
			return -1;
		*port = (int)p;
	}
	return 0;
}

int cm_origin_parse(const char *s, struct cm_origin *o)
{
	memset(o, 0, sizeof *o);
	if (!s)
		return -1;
	const char *sep = strstr(s, "://");
	if (!sep)
		return -1;
	size_t sl = (size_t)(sep - s);
	if (sl == 4 && !strncasecmp(s, "http", 4))
		snprintf(o->scheme, sizeof o->scheme, "http");
	else if (sl == 5 && !strncasecmp(s, "https", 5))
		snprintf(o->scheme, sizeof o->scheme, "https");
	else
		return -1;
	const char *h = sep + 3;
	size_t n = strlen(h);
	if (n && h[n - 1] == '/') /* tolerated in settings: "https://x.example/" */
		n--;
	if (memchr(h, '/', n) || memchr(h, '@', n))
		return -1;
	return split_hostport(h, n, o->host, sizeof o->host, &o->port, default_port(o->scheme));
}

static bool is_ip_literal(const char *host)
{
	struct in_addr a4;
	struct in6_addr a6;
	return inet_pton(AF_INET, host, &a4) == 1 || inet_pton(AF_INET6, host, &a6) == 1;
}

/* host matches one ALLOWED_HOSTS entry: a name, "*.suffix" / ".suffix" (subdomains) or "*" */
static bool host_matches(const char *host, const char *entry, size_t el)
{
	if (el == 1 && entry[0] == '*')
		return true;
	const char *suffix = NULL;
	if (el > 2 && entry[0] == '*' && entry[1] == '.')
		suffix = entry + 1;
	else if (el > 1 && entry[0] == '.')
		suffix = entry;
	size_t hl = strlen(host);
	if (suffix) {
		size_t sl = el - (size_t)(suffix - entry);
		return hl > sl && !strncasecmp(host + hl - sl, suffix, sl);
	}
	if (el && entry[el - 1] == '.')
		el--;
	return hl == el && !strncasecmp(host, entry, el);
}

/* This machine's own name (gethostname, read once): a rebinding needs a name of the
 * attacker's, so the host's own name is safe to accept without configuration. */
static bool own_hostname(const char *host)
{
	static char name[256];
	static bool read;
	if (!read) {
		if (gethostname(name, sizeof name - 1) < 0)
			name[0] = '\0';
		name[sizeof name - 1] = '\0';
		read = true;
	}
	return name[0] && !strcasecmp(host, name);
}

/* A name of this service: loopback, the machine's own name, nginx's server_name or an
 * ALLOWED_HOSTS entry (not any IP literal: those pass as a Host, never as an origin of
 * another address). */
static bool service_name(const struct cm_config *c, const char *host, const char *server_name)
{
	if (cm_is_loopback_host(host) || own_hostname(host))
		return true;
	if (server_name && server_name[0] && strcmp(server_name, "_") && server_name[0] != '~' &&
	    host_matches(host, server_name, strlen(server_name)))
		return true;
	for (const char *p = c->allowed_hosts; *p;) {
		p += strspn(p, " ,");
		size_t n = strcspn(p, ",");
		size_t el = n;
		while (el && p[el - 1] == ' ')
			el--;
		if (el && host_matches(host, p, el))
			return true;
		p += n;
	}
	return false;
}

bool cm_host_allowed(const struct cm_config *c, const char *host, const char *server_name)
{
	return is_ip_literal(host) || service_name(c, host, server_name);
}

static bool same_origin(const struct cm_origin *a, const struct cm_origin *b)
{
	return !strcmp(a->scheme, b->scheme) && !strcmp(a->host, b->host) && a->port == b->port;
}

/* The scheme and port of a listener setting ("host:port"), or false. */
static bool listener_port(const char *spec, int *port)
{
	char host[128];
	return spec[0] && strcmp(spec, "off") && cm_parse_listen(spec, host, sizeof host, port) == 0;
}

static bool is_app_origin(const struct cm_config *c, const struct cm_origin *o, const char *server_name)
{
	struct cm_origin apps[CM_APPS_LISTENERS];
	char why[8];
	int n = cm_apps_listen_parse(c->apps_listen, apps, why, sizeof why);
	for (int i = 0; i < n; i++)
		if (!strcmp(apps[i].scheme, o->scheme) && apps[i].port == o->port && cm_host_allowed(c, o->host, server_name))
			return true;
	return false;
}

static bool own_origin(const struct cm_config *c, const struct cm_site_req *q, const struct cm_origin *o)
{
	/* the origin the request itself was addressed to */
	const char *scheme = q->scheme && !strcmp(q->scheme, "https") ? "https" : "http";
	struct cm_origin self = {0};
	snprintf(self.scheme, sizeof self.scheme, "%s", scheme);
	if (q->host && q->host[0] &&
	    split_hostport(q->host, strlen(q->host), self.host, sizeof self.host, &self.port, default_port(scheme)) == 0 &&
	    same_origin(&self, o))
		return true;
	/* a name of this service on one of the API's listeners (an IP literal only when loopback:
	 * a page served from any other address on the API's port number is another site) */
	int port;
	if (!service_name(c, o->host, q->server_name))
		return false;
	if (!strcmp(o->scheme, "http") && listener_port(c->http_listen, &port) && port == o->port)
		return true;
	if (!strcmp(o->scheme, "https") && listener_port(c->https_listen, &port) && port == o->port)
		return true;
	return false;
}

static bool listed_origin(const struct cm_config *c, const struct cm_origin *o)
{
	char tmp[sizeof c->allowed_origins], *save = NULL;
	snprintf(tmp, sizeof tmp, "%s", c->allowed_origins);
	for (char *e = strtok_r(tmp, ", ", &save); e; e = strtok_r(NULL, ", ", &save)) {
		struct cm_origin a;
		if (cm_origin_parse(e, &a) == 0 && same_origin(&a, o))
			return true;
	}
	return false;
}

static bool changes_state(const struct cm_site_req *q)
{
	const char *m = q->method ? q->method : "GET";
	if (strcmp(m, "GET") && strcmp(m, "HEAD") && strcmp(m, "OPTIONS"))
		return true;
	/* harpoon's GET /shutdown stops the service */
	return q->path && !strcmp(q->path, "/shutdown");
}

static int refuse_origin(struct cm_error *err, const char *why)
{
	return cm_err_set(err, 403, "forbidden", "CROSS_ORIGIN_REFUSED", NULL, "%s", why);
}

int cm_site_check(const struct cm_config *c, const struct cm_site_req *q, unsigned what, struct cm_error *err)
{
	if ((what & CM_CHECK_HOST) && q->host && q->host[0]) {
		char host[256];
		int port;
		if (split_hostport(q->host, strlen(q->host), host, sizeof host, &port, 80) < 0 ||
		    !cm_host_allowed(c, host, q->server_name)) {
			char esc[96];
			cm_log_escape(esc, sizeof esc, q->host);
			return cm_err_set(err, 421, "misdirected_request", "MISDIRECTED_REQUEST", NULL,
					  "this service does not answer to the host name %s (ALLOWED_HOSTS)", esc);
		}
	}
	if (!(what & CM_CHECK_ORIGIN))
		return 0;
	bool guarded = q->upgrade || changes_state(q);
	if (q->origin && q->origin[0]) {
		struct cm_origin o;
		if (cm_origin_parse(q->origin, &o) < 0) {
			/* "null" (sandboxed frames, file: pages, redirects) and anything unparsable */
			return guarded ? refuse_origin(err, "requests from this origin are not accepted (ALLOWED_ORIGINS)") : 0;
		}
		if (is_app_origin(c, &o, q->server_name))
			return refuse_origin(err, "an app's origin may not call the API");
		if (guarded && !own_origin(c, q, &o) && !listed_origin(c, &o))
			return refuse_origin(err, "requests from this origin are not accepted (ALLOWED_ORIGINS)");
		return 0;
	}
	if (guarded && q->fetch_site && !strcasecmp(q->fetch_site, "cross-site"))
		return refuse_origin(err, "cross-site requests are not accepted");
	return 0;
}

int cm_allowed_origins_valid(const char *list, char *bad, size_t badsz)
{
	char tmp[2048], *save = NULL;
	if (snprintf(tmp, sizeof tmp, "%s", list) >= (int)sizeof tmp) {
		snprintf(bad, badsz, "(too long)");
		return -1;
	}
	for (char *e = strtok_r(tmp, ", ", &save); e; e = strtok_r(NULL, ", ", &save)) {
		struct cm_origin o;
		if (cm_origin_parse(e, &o) < 0) {
			snprintf(bad, badsz, "%s", e);
			return -1;
		}
	}
	return 0;
}

int cm_allowed_hosts_valid(const char *list, char *bad, size_t badsz)
{
	char tmp[2048], *save = NULL;
	if (snprintf(tmp, sizeof tmp, "%s", list) >= (int)sizeof tmp) {
		snprintf(bad, badsz, "(too long)");
		return -1;
	}
	for (char *e = strtok_r(tmp, ", ", &save); e; e = strtok_r(NULL, ", ", &save)) {
		const char *h = e;
		if (!strcmp(h, "*"))
			continue;
		if (!strncmp(h, "*.", 2))
			h += 2;
		else if (h[0] == '.')
			h++;
		char host[256];
		int port;
		if (strchr(h, ':') || split_hostport(h, strlen(h), host, sizeof host, &port, 80) < 0) {
			snprintf(bad, badsz, "%s", e);
			return -1;
		}
	}
	return 0;
}

int cm_apps_listen_parse(const char *spec, struct cm_origin out[CM_APPS_LISTENERS], char *why, size_t whysz)
{
	memset(out, 0, sizeof(struct cm_origin) * CM_APPS_LISTENERS);
	if (!spec || !spec[0] || !strcmp(spec, "off"))
		return 0;
	char tmp[512], *save = NULL;
	if (snprintf(tmp, sizeof tmp, "%s", spec) >= (int)sizeof tmp) {
		snprintf(why, whysz, "too long");
		return -1;
	}
	int n = 0;
	for (char *e = strtok_r(tmp, ", ", &save); e; e = strtok_r(NULL, ", ", &save)) {
		if (n == CM_APPS_LISTENERS) {
			snprintf(why, whysz, "at most %d listeners", CM_APPS_LISTENERS);
			return -1;
		}
		const char *scheme = "http", *hp = e;
		if (!strncasecmp(e, "http://", 7)) {
			hp = e + 7;
		} else if (!strncasecmp(e, "https://", 8)) {
			scheme = "https";
			hp = e + 8;
		}
		char host[128];
		int port;
		if (cm_parse_listen(hp, host, sizeof host, &port) < 0 || !strchr(hp, ':')) {
			snprintf(why, whysz, "%.100s is not [http://|https://]host:port", e);
			return -1;
		}
		/* plain HTTP carries the password in clear: loopback only, as CM_HTTP_LISTEN */
		if (!strcmp(scheme, "http") && !cm_is_loopback_host(host)) {
			snprintf(why, whysz, "%.100s: plain HTTP must listen on loopback (use https:// for other interfaces)", e);
			return -1;
		}
		snprintf(out[n].scheme, sizeof out[n].scheme, "%s", scheme);
		snprintf(out[n].host, sizeof out[n].host, "%s", host);
		out[n].port = port;
		n++;
	}
	return n;
}

/* A browser sends text/plain, form and multipart bodies to another site without a CORS
 * preflight; application/json only after one (which this service never grants). */
bool cm_json_media_type(const char *ct)
{
	if (!ct)
		return false;
	while (*ct == ' ' || *ct == '\t')
		ct++;
	size_t n = strcspn(ct, "; \t");
	if (n != 16 || strncasecmp(ct, "application/json", 16))
		return false;
	/* parameters: charset only (JSON is UTF-8 whatever it says; the parser checks that) */
	for (const char *p = ct + n; *p;) {
		p += strspn(p, " \t");
		if (!*p)
			break;
		if (*p != ';')
			return false;
		p++;
		p += strspn(p, " \t");
		if (!*p)
			break;
		if (strncasecmp(p, "charset=", 8))
			return false;
		p += 8;
		if (*p == '"') {
			const char *q = strchr(p + 1, '"');
			if (!q)
				return false;
			p = q + 1;
		} else {
			p += strcspn(p, "; \t");
		}
	}
	return true;
}
