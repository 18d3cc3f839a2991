/* router.c: the route table (method + path pattern → handler), 404 and 405. */
#include "config.h"
#include "app.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

struct route {
	const char *method;
	const char *pattern; /* "*" matches one path segment, captured into r->params */
	cm_handler handler;
	const char *action;  /* recorded in the audit row */
	const char *const *params; /* query parameters it accepts (others: 400) */
};

static const char *const p_none[] = {NULL};
static const char *const p_list[] = {"status", "tag", "limit", "cursor", NULL};
static const char *const p_delete[] = {"keep_files", NULL};
static const char *const p_stop[] = {"timeout", NULL};
static const char *const p_path[] = {"path", NULL};
static const char *const p_upload[] = {"path", "replace", NULL};
static const char *const p_jobs[] = {"status", "cuid", "kind", "limit", "cursor", NULL};
static const char *const p_wait[] = {"wait", NULL};
static const char *const p_build[] = {"tag", "dockerfile", "build_dir", NULL};
static const char *const p_follow[] = {"follow", NULL};
static const char *const p_app[] = {"name", "src", "port", "scheme", "health", "lifetime", "build_dir", NULL};

static const struct route routes[] = {
	{"POST", "/containers", h_containers_create, "container.create", p_none},
	{"GET", "/containers", h_containers_list, "container.list", p_list},
	{"GET", "/containers/*", h_container_get, "container.get", p_none},
	{"PATCH", "/containers/*", h_container_patch, "container.update", p_none},
	{"DELETE", "/containers/*", h_container_delete, "container.delete", p_delete},
	{"POST", "/containers/*/start", h_container_action, "container.start", p_none},
	{"POST", "/containers/*/stop", h_container_action, "container.stop", p_stop},
	{"POST", "/containers/*/restart", h_container_action, "container.restart", p_stop},
	{"POST", "/containers/*/pause", h_container_action, "container.pause", p_none},
	{"POST", "/containers/*/unpause", h_container_action, "container.unpause", p_none},
	{"PATCH", "/containers/*/ports", h_container_ports, "container.ports", p_none},
	{"GET", "/containers/*/status", h_container_status, "container.status", p_none},
	{"POST", "/containers/*/upload-zip", h_container_upload, "files.upload_zip", p_upload},
	{"GET", "/containers/*/download", h_container_download, "files.download", p_path},
	{"GET", "/containers/*/download-zip", h_container_download_zip, "files.download_zip", p_path},
	{"GET", "/containers/*/archive", h_container_archive_get, "files.archive_get", p_path},
	{"PUT", "/containers/*/archive", h_container_archive_put, "files.archive_put", p_path},
	{"POST", "/containers/*/commit", h_container_commit, "container.commit", p_none},
	{"GET", "/volumes", h_volumes_list, "volume.list", p_none},
	{"POST", "/volumes", h_volume_create, "volume.create", p_none},
	{"GET", "/volumes/*", h_volume_get, "volume.get", p_none},
	{"DELETE", "/volumes/*", h_volume_delete, "volume.delete", p_none},
	{"GET", "/images", h_images_list, "image.list", p_none},
	{"POST", "/images/build", h_image_build, "image.build", p_build},
	{"GET", "/images/**", h_image_get, "image.get", p_none},
	{"DELETE", "/images/**", h_image_delete, "image.delete", p_none},
	{"GET", "/jobs/*/log", h_job_log, "job.log", p_follow},
	{"GET", "/jobs", h_jobs_list, "job.list", p_jobs},
	{"GET", "/jobs/*", h_job_get, "job.get", p_wait},
	{"DELETE", "/jobs/*", h_job_delete, "job.cancel", p_none},
	{"GET", "/apps", h_apps_list, "app.list", p_none},
	{"POST", "/apps", h_app_create, "app.create", p_app},
	{"GET", "/apps/*", h_app_get, "app.get", p_none},
	{"PUT", "/apps/*", h_app_update, "app.update", p_app},
	{"DELETE", "/apps/*", h_app_delete, "app.delete", p_none},
	{"POST", "/apps/*/run", h_app_run, "app.run", p_none},
	{"GET", "/_appauth", h_app_gate, "app.proxy", p_none}, /* auth_request of /apps/{name}/... */
	{"GET", "/definitions", h_definitions_list, "definitions.list", p_none},
	{"GET", "/definitions/*", h_definition_get, "definitions.get", p_none},
	{"GET", "/healthz", h_healthz, "healthz", p_none},
	{"GET", "/version", h_version, "version", p_none},
	{"GET", "/_auth", h_auth, "auth", p_none},
	{"POST", "/_auth", h_auth, "auth", p_none}, /* auth_request of POST /start_container and the like */
};

/* Matches path against pattern; on success fills r->params. */
static bool match(const char *pattern, const char *path, struct cm_req *r)
{
	int np = 0;
	const char *p = pattern, *s = path;
	while (*p && *s) {
		if (p[0] == '*' && p[1] == '*') {
			/* the rest of the path (an image reference may hold '/') */
			size_t len = strlen(s);
			if (np >= CM_MAX_PARAMS)
				return false;
			if (len >= sizeof r->params[0])
				snprintf(r->params[np], sizeof r->params[0], "%s", "(too long)");
			else
				memcpy(r->params[np], s, len + 1);
			np++;
			p += 2;
			s += len;
		} else if (*p == '*') {
			const char *end = strchr(s, '/');
			size_t len = end ? (size_t)(end - s) : strlen(s);
			if (len == 0 || np >= CM_MAX_PARAMS)
				return false;
			if (len >= sizeof r->params[0]) {
				/* too long to be any id: keep the route, let the handler refuse it */
				snprintf(r->params[np], sizeof r->params[0], "%s", "(too long)");
			} else {
				memcpy(r->params[np], s, len);
				r->params[np][len] = '\0';
			}
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

/* Prefer: respond-async (RFC 7240; a token of a comma-separated list) */
static bool prefers_async(const char *prefer)
{
	for (const char *p = prefer; p && *p;) {
		p += strspn(p, " \t,");
		size_t n = strcspn(p, ",;");
		const char *q = p + n;
		while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
			n--;
		if (n == 13 && !strncasecmp(p, "respond-async", 13))
			return true;
		p = q + strcspn(q, ",");
	}
	return false;
}

static int parse_async(struct cm_req *r)
{
	const char *a = cm_req_query(r, "async");
	if (a) {
		if (!strcmp(a, "true") || !strcmp(a, "1")) {
			r->async = r->async_asked = true;
		} else if (strcmp(a, "false") && strcmp(a, "0")) {
			cm_respond_errorf(r, 400, "validation_error", "INVALID_VALUE", "async", "async must be true or false");
			return -1;
		}
		return 0;
	}
	r->async = prefers_async(cm_req_header(r, "HTTP_PREFER"));
	return 0;
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
			if (strcmp(method, "GET")) {
				/* any change may run in the background: ?async=true or Prefer: respond-async */
				const char *list[16];
				size_t n = 0;
				for (const char *const *p = routes[i].params; *p && n < CM_ARRAY_LEN(list) - 2; p++)
					list[n++] = *p;
				list[n++] = "async";
				list[n] = NULL;
				if (cm_req_allow_params(r, list) < 0 || parse_async(r) < 0)
					return;
			} else if (cm_req_allow_params(r, routes[i].params) < 0) {
				return;
			}
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
