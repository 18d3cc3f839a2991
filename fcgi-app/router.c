/* router.c: the route table (method + path pattern → handler), 404 and 405. */
#include "config.h"
#include "app.h"

#include <stdio.h>
#include <string.h>

struct route {
	const char *method;
	const char *pattern; /* "*" matches one path segment, captured into r->params */
	cm_handler handler;
	const char *action;  /* recorded in the audit row */
};

static const struct route routes[] = {
	{"POST", "/containers", h_containers_create, "container.create"},
	{"GET", "/containers", h_containers_list, "container.list"},
	{"GET", "/containers/*", h_container_get, "container.get"},
	{"PATCH", "/containers/*", h_container_patch, "container.update"},
	{"DELETE", "/containers/*", h_container_delete, "container.delete"},
	{"POST", "/containers/*/start", h_container_action, "container.start"},
	{"POST", "/containers/*/stop", h_container_action, "container.stop"},
	{"POST", "/containers/*/restart", h_container_action, "container.restart"},
	{"POST", "/containers/*/pause", h_container_action, "container.pause"},
	{"POST", "/containers/*/unpause", h_container_action, "container.unpause"},
	{"PATCH", "/containers/*/ports", h_container_ports, "container.ports"},
	{"GET", "/containers/*/status", h_container_status, "container.status"},
	{"POST", "/containers/*/upload-zip", h_container_upload, "files.upload_zip"},
	{"GET", "/containers/*/download", h_container_download, "files.download"},
	{"GET", "/containers/*/download-zip", h_container_download_zip, "files.download_zip"},
	{"GET", "/healthz", h_healthz, "healthz"},
	{"GET", "/version", h_version, "version"},
	{"GET", "/_auth", h_auth, "auth"},
};

/* Matches path against pattern; on success fills r->params. */
static bool match(const char *pattern, const char *path, struct cm_req *r)
{
	int np = 0;
	const char *p = pattern, *s = path;
	while (*p && *s) {
		if (*p == '*') {
			const char *end = strchr(s, '/');
			size_t len = end ? (size_t)(end - s) : strlen(s);
			if (len == 0 || len >= sizeof r->params[0] || np >= CM_MAX_PARAMS)
				return false;
			memcpy(r->params[np], s, len);
			r->params[np][len] = '\0';
			np++;
			p++;
			s += len;
		} else if (*p == *s) {
			p++;
			s++;
		} else {
			return false;
		}
	}
	return !*p && !*s;
}

void cm_route(struct cm_req *r)
{
	const char *method = !strcmp(r->method, "HEAD") ? "GET" : r->method;
	char allow[128] = "";
	for (size_t i = 0; i < CM_ARRAY_LEN(routes); i++) {
		if (!match(routes[i].pattern, r->path, r))
			continue;
		if (!strcmp(routes[i].method, method)) {
			snprintf(r->action, sizeof r->action, "%s", routes[i].action);
			routes[i].handler(r);
			return;
		}
		if (!strstr(allow, routes[i].method)) {
			size_t l = strlen(allow);
			snprintf(allow + l, sizeof allow - l, "%s%s", l ? ", " : "", routes[i].method);
		}
	}
	if (allow[0]) {
		char hdr[192];
		snprintf(hdr, sizeof hdr, "Allow: %s%s\r\n", allow, strstr(allow, "GET") ? ", HEAD" : "");
		struct cm_error err;
		cm_err_set(&err, 405, "method_not_allowed", "METHOD_NOT_ALLOWED", NULL, "%s is not allowed on %s; allowed: %s",
			   r->method, r->path, allow);
		cm_respond_error(r, &err, hdr);
		return;
	}
	char esc[128];
	cm_log_escape(esc, sizeof esc, r->path);
	cm_respond_errorf(r, 404, "not_found", "ROUTE_NOT_FOUND", NULL, "no such endpoint: %s", esc);
}
