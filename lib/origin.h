/* origin.h: the checks that keep other web sites out: the Host a request was addressed to
 * (DNS rebinding) and the Origin / Sec-Fetch-Site of state-changing requests and WebSocket
 * upgrades (cross-site requests, cross-site WebSocket hijacking). Shared by the FastCGI
 * workers and the WebSocket helper, so both apply the same rules. */
#ifndef CM_ORIGIN_H
#define CM_ORIGIN_H

#include "cm.h"
#include "cm_config.h"

/* An origin or a listener: scheme ("http"/"https"), host (lowercase, no brackets), port. */
struct cm_origin {
	char scheme[8];
	char host[256];
	int port;
};

/* What the checks need to know of a request; any string may be NULL (header absent). */
struct cm_site_req {
	const char *method;      /* GET, POST, ... */
	const char *path;        /* the request path (GET /shutdown changes state too) */
	const char *host;        /* the Host header as the client sent it */
	const char *scheme;      /* "http" or "https": how the client reached nginx */
	const char *server_name; /* nginx's $server_name ("_" and "" mean none) */
	const char *origin;      /* Origin */
	const char *fetch_site;  /* Sec-Fetch-Site */
	bool upgrade;            /* a WebSocket upgrade */
};

#define CM_CHECK_HOST 1u   /* 421 MISDIRECTED_REQUEST unless Host names this service */
#define CM_CHECK_ORIGIN 2u /* 403 CROSS_ORIGIN_REFUSED for a foreign or an app's Origin */

/* Applies the checks of what to q. Returns 0, or -1 with err (421 or 403). */
int cm_site_check(const struct cm_config *c, const struct cm_site_req *q, unsigned what, struct cm_error *err);

/* Parses "scheme://host[:port]" (an Origin; no path). Returns 0 or -1. */
int cm_origin_parse(const char *s, struct cm_origin *o);
/* Whether host (no port, lowercase) may be a Host of this service: an IP literal, a loopback
 * name, server_name, or an entry of ALLOWED_HOSTS. */
bool cm_host_allowed(const struct cm_config *c, const char *host, const char *server_name);

/* Whether a Content-Type is application/json (any case; a charset parameter allowed, no other). */
bool cm_json_media_type(const char *ct);

/* Settings (lib/config.c): "" when list is valid, else writes the bad entry into bad. */
int cm_allowed_origins_valid(const char *list, char *bad, size_t badsz);
int cm_allowed_hosts_valid(const char *list, char *bad, size_t badsz);
/* APPS_LISTEN: "off" or up to CM_APPS_LISTENERS comma-separated [http://|https://]host:port.
 * Fills out (port 0 = unused). Returns the number of listeners, or -1 with a reason in why. */
#define CM_APPS_LISTENERS 2
int cm_apps_listen_parse(const char *spec, struct cm_origin out[CM_APPS_LISTENERS], char *why, size_t whysz);

#endif
