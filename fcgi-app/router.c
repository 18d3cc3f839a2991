/* router.c: the route table (method + path pattern → handler), 404 and 405. */
#include "config.h"
#include "app.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

static const char *const p_none[] = {NULL};
static const char *const p_list[] = {"status", "tag", "limit", "cursor", NULL};
static const char *const p_create[] = {"dry_run", NULL};
static const char *const p_delete[] = {"keep_files", NULL};
static const char *const p_stop[] = {"timeout", NULL};
static const char *const p_path[] = {"path", NULL};
static const char *const p_upload[] = {"path", "replace", NULL};
static const char *const p_jobs[] = {"status", "cuid", "kind", "limit", "cursor", NULL};
static const char *const p_wait[] = {"wait", NULL};
static const char *const p_build[] = {"tag", "dockerfile", "build_dir", NULL};
static const char *const p_follow[] = {"follow", NULL};
static const char *const p_app[] = {"name", "src", "port", "scheme", "health", "lifetime", "build_dir", "user", NULL};
static const char *const p_tty[] = {"cols", "rows", "tty", "command", NULL};
static const char *const p_logs[] = {"tail", "since", "timestamps", "follow", "stream", NULL};

/* One line per route; the same table answers GET / and GET /openapi.json (describe.c).
 * Routes without a handler are served by nginx and cm-ws and are listed for documentation. */
static const struct cm_route routes[] = {
	{"GET", "/", h_index, "describe.index", p_none, "/", "Returns the list of endpoints that this service provides.", NULL, 200, "index", ""},
	{"GET", "/schema", h_schema, "describe.schema", p_none, "/schema", "Returns the JSON Schema that POST /containers requests are validated against.", NULL, 200, "object", ""},
	{"GET", "/schema/*", h_schema, "describe.schema", p_none, "/schema/{name}", "Returns the JSON Schema of one request body (container-create, container-patch, container-ports, container-commit, volume-create) or of the response objects (objects).", NULL, 200, "object", "404"},
	{"GET", "/openapi.json", h_openapi, "describe.openapi", p_none, "/openapi.json", "Returns the OpenAPI 3.1 description of every endpoint.", NULL, 200, "object", ""},
	{"POST", "/containers", h_containers_create, "container.create", p_create, "/containers", "Creates and starts a container from a JSON spec (?dry_run=true only validates).", "container-create", 201, "container", "404 409 413"},
	{"GET", "/containers", h_containers_list, "container.list", p_list, "/containers", "Lists containers, newest first, filtered by status or tag, one page at a time.", NULL, 200, "container_list", "410"},
	{"GET", "/containers/*", h_container_get, "container.get", p_none, "/containers/{cuid}", "Returns one container.", NULL, 200, "container", "404"},
	{"PATCH", "/containers/*", h_container_patch, "container.update", p_create, "/containers/{cuid}", "Changes a container's image, command, env, tags, volumes or resources (?dry_run=true only validates).", "container-patch", 200, "container", "404 409 412 413 422"},
	{"DELETE", "/containers/*", h_container_delete, "container.delete", p_delete, "/containers/{cuid}", "Removes a container (and its files unless keep_files=true).", NULL, 204, NULL, "404 409"},
	{"POST", "/containers/*/start", h_container_action, "container.start", p_none, "/containers/{cuid}/start", "Starts a container.", NULL, 200, "object", "404 409 422"},
	{"POST", "/containers/*/stop", h_container_action, "container.stop", p_stop, "/containers/{cuid}/stop", "Stops a container (SIGTERM, then SIGKILL after timeout seconds).", NULL, 200, "object", "404 409 422"},
	{"POST", "/containers/*/restart", h_container_action, "container.restart", p_stop, "/containers/{cuid}/restart", "Restarts a container.", NULL, 200, "object", "404 409 422"},
	{"POST", "/containers/*/pause", h_container_action, "container.pause", p_none, "/containers/{cuid}/pause", "Pauses a running container.", NULL, 200, "object", "404 409 422"},
	{"POST", "/containers/*/unpause", h_container_action, "container.unpause", p_none, "/containers/{cuid}/unpause", "Resumes a paused container.", NULL, 200, "object", "404 409 422"},
	{"PATCH", "/containers/*/ports", h_container_ports, "container.ports", p_create, "/containers/{cuid}/ports", "Replaces a container's published ports (?dry_run=true only validates).", "container-ports", 200, "object", "404 409 413"},
	{"GET", "/containers/*/status", h_container_status, "container.status", p_none, "/containers/{cuid}/status", "Returns a container's run state.", NULL, 200, "status", "404"},
	{"POST", "/containers/*/upload-zip", h_container_upload, "files.upload_zip", p_upload, "/containers/{cuid}/upload-zip", "Unpacks a zip archive into the container's /app (or path=).", "zip", 200, "object", "404 409 413 507"},
	{"GET", "/containers/*/download", h_container_download, "files.download", p_path, "/containers/{cuid}/download", "Returns one file from the container's /app (Range requests answer 206).", NULL, 200, "octet", "206 404 416"},
	{"GET", "/containers/*/download-zip", h_container_download_zip, "files.download_zip", p_path, "/containers/{cuid}/download-zip", "Returns a directory of the container's /app as a zip archive.", NULL, 200, "zip", "404"},
	{"GET", "/containers/*/archive", h_container_archive_get, "files.archive_get", p_path, "/containers/{cuid}/archive", "Returns a path of the container's filesystem as a tar archive (Docker's archive endpoint).", NULL, 200, "tar", "404"},
	{"PUT", "/containers/*/archive", h_container_archive_put, "files.archive_put", p_path, "/containers/{cuid}/archive", "Extracts a tar archive into a directory of the container's filesystem.", "tar", 200, "object", "404 409 413 507"},
	{"POST", "/containers/*/commit", h_container_commit, "container.commit", p_create, "/containers/{cuid}/commit", "Makes an image from a container ({repository, tag, comment}; ?dry_run=true only validates).", "container-commit", 201, "object", "404 409"},
	{"GET", "/containers/*/logs", NULL, "container.logs", p_logs, "/containers/{cuid}/logs", "Streams a container's output (served by the WebSocket helper).", NULL, 200, "stream", "404"},
	{"GET", "/ws/*", NULL, "ws.terminal", p_tty, "/ws/{cuid}", "WebSocket terminal: a shell in the container (docker exec).", NULL, 101, NULL, "404 409"},
	{"GET", "/ws/*/logs", NULL, "ws.logs", p_logs, "/ws/{cuid}/logs", "WebSocket stream of a container's output.", NULL, 101, NULL, "404"},
	{"GET", "/volumes", h_volumes_list, "volume.list", p_none, "/volumes", "Lists Docker volumes.", NULL, 200, "volume_list", ""},
	{"POST", "/volumes", h_volume_create, "volume.create", p_create, "/volumes", "Creates a local named volume (?dry_run=true only validates).", "volume-create", 201, "volume", "409"},
	{"GET", "/volumes/*", h_volume_get, "volume.get", p_none, "/volumes/{name}", "Returns one volume.", NULL, 200, "volume", "404"},
	{"DELETE", "/volumes/*", h_volume_delete, "volume.delete", p_none, "/volumes/{name}", "Removes a volume no container uses.", NULL, 204, NULL, "404 409"},
	{"GET", "/images", h_images_list, "image.list", p_none, "/images", "Lists local images.", NULL, 200, "image_list", ""},
	{"POST", "/images/build", h_image_build, "image.build", p_build, "/images/build", "Builds an image from a zip or tar build context (or multipart); the log streams into the job.", "build", 201, "object", "413 422"},
	{"GET", "/images/**", h_image_get, "image.get", p_none, "/images/{ref}", "Inspects an image.", NULL, 200, "image", "404"},
	{"DELETE", "/images/**", h_image_delete, "image.delete", p_none, "/images/{ref}", "Removes an image no managed container uses.", NULL, 204, NULL, "404 409"},
	{"GET", "/jobs/*/log", h_job_log, "job.log", p_follow, "/jobs/{id}/log", "Returns a build job's log (follow=1 streams it as it grows).", NULL, 200, "text", "404"},
	{"GET", "/jobs", h_jobs_list, "job.list", p_jobs, "/jobs", "Lists jobs, newest first, filtered by status, cuid or kind.", NULL, 200, "job_list", "410"},
	{"GET", "/jobs/*", h_job_get, "job.get", p_wait, "/jobs/{id}", "Returns a job (wait=N long-polls until it ends).", NULL, 200, "job", "404"},
	{"DELETE", "/jobs/*", h_job_delete, "job.cancel", p_none, "/jobs/{id}", "Cancels a queued job.", NULL, 200, "job", "404 409"},
	{"GET", "/apps", h_apps_list, "app.list", p_none, "/apps", "Lists apps with their URL, status and image.", NULL, 200, "object", ""},
	{"POST", "/apps", h_app_create, "app.create", p_app, "/apps", "Creates an app: builds its source (zip or tar, raw or multipart) or uses image:REF, starts it and routes /apps/{name}/ to it once healthy.", "app", 201, "object", "404 409 413 422"},
	{"GET", "/apps/*", h_app_get, "app.get", p_none, "/apps/{name}", "Returns one app with its health (status, last check, failures).", NULL, 200, "object", "404"},
	{"PUT", "/apps/*", h_app_update, "app.update", p_app, "/apps/{name}", "Rebuilds an app from new source and swaps its container once the new one is healthy.", "app", 200, "object", "404 413 422"},
	{"DELETE", "/apps/*", h_app_delete, "app.delete", p_none, "/apps/{name}", "Removes an app: its route, container and image.", NULL, 204, NULL, "404"},
	{"POST", "/apps/*/run", h_app_run, "app.run", p_none, "/apps/{name}/run", "Runs a command in the app's container and returns its stdout, stderr and exit code.", "object", 200, "object", "404 409 422"},
	{"GET", "/apps/*/**", NULL, "app.proxy", p_none, "/apps/{name}/{path}", "The app itself (any method) on the apps' own listeners (APPS_LISTEN), proxied once its health check passes; 503 with Retry-After until then.", NULL, 200, "octet", "404 503"},
	{"GET", "/_appauth", h_app_gate, "app.proxy", p_none, NULL, NULL, NULL, 204, NULL, NULL}, /* auth_request of /apps/{name}/... */
	{"GET", "/definitions", h_definitions_list, "definitions.list", p_none, "/definitions", "Lists the image definitions loaded at start (harpoon).", NULL, 200, "object", ""},
	{"GET", "/definitions/*", h_definition_get, "definitions.get", p_none, "/definitions/{name}", "Returns one image definition with its builds.", NULL, 200, "object", "404"},
	{"POST", "/start_container", NULL, "harpoon.start", p_none, "/start_container", "Starts (or reuses) a container of an image definition, optionally locked (harpoon).", "object", 200, "object", "404 408 409 422"},
	{"POST", "/stop_container", NULL, "harpoon.stop", p_none, "/stop_container", "Stops the container of an image definition (harpoon).", "object", 204, NULL, "404 409"},
	{"POST", "/unlock_container", NULL, "harpoon.unlock", p_none, "/unlock_container", "Releases a lock taken by start_container (harpoon).", "object", 204, NULL, "404 409"},
	{"GET", "/shutdown", NULL, "harpoon.shutdown", p_none, "/shutdown", "Removes harpoon's containers and stops the service (403 unless started with definitions).", NULL, 204, NULL, "403"},
	{"GET", "/healthz", h_healthz, "healthz", p_none, "/healthz", "Reports whether the database, the runner and Docker answer.", NULL, 200, "object", ""},
	{"GET", "/version", h_version, "version", p_none, "/version", "Returns the version.", NULL, 200, "text", ""},
	{"GET", "/metrics", h_metrics, "metrics", p_none, "/metrics", "Returns the service's metrics in the Prometheus text format.", NULL, 200, "text", ""},
	{"GET", "/_auth", h_auth, "auth", p_none, NULL, NULL, NULL, 204, NULL, NULL},
	{"POST", "/_auth", h_auth, "auth", p_none, NULL, NULL, NULL, 204, NULL, NULL}, /* auth_request of POST /start_container and the like */
};

const struct cm_route *cm_routes(size_t *n)
{
	*n = CM_ARRAY_LEN(routes);
	return routes;
}

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

static int parse_dry_run(struct cm_req *r)
{
	const char *d = cm_req_query(r, "dry_run");
	if (!d)
		return 0;
	if (!strcmp(d, "true") || !strcmp(d, "1"))
		r->dry_run = true;
	else if (strcmp(d, "false") && strcmp(d, "0")) {
		cm_respond_errorf(r, 400, "validation_error", "INVALID_VALUE", "dry_run", "dry_run must be true or false");
		return -1;
	}
	return 0;
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
		if (!routes[i].handler || !match(routes[i].pattern, r->path, r))
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
				if (cm_req_allow_params(r, list) < 0 || parse_async(r) < 0 || parse_dry_run(r) < 0)
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
	if (!strncmp(r->path, "/apps/", 6) && strchr(r->path + 6, '/')) {
		/* an app's page asked on the API's listener: apps have an origin of their own */
		cm_respond_errorf(r, 404, "not_found", "ROUTE_NOT_FOUND", NULL,
				  "no such endpoint: %s (apps are served on their own listeners, APPS_LISTEN)", esc);
		return;
	}
	cm_respond_errorf(r, 404, "not_found", "ROUTE_NOT_FOUND", NULL, "no such endpoint: %s", esc);
}
