/* describe.c: the service describes itself. GET / lists the endpoints (one line each),
 * GET /schema[/{name}] serves the JSON Schemas of schema/NAME.json (the request validators in
 * lib/spec.c and the handlers agree with them: tests/integration/t245_schema.js checks it),
 * and GET /openapi.json is an OpenAPI 3.1 document built from the route table and the same
 * schemas, so a route cannot exist without being described. */
#include "config.h"
#include "app.h"
#include "schemas.h"
#include "spec.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char COMMON_ERRORS[] = "400 401 429 500 503";

static const struct cm_schema *find_schema(const char *name)
{
	for (const struct cm_schema *s = cm_schemas; s->name; s++)
		if (!strcmp(s->name, name))
			return s;
	return NULL;
}

static yajl_val parse_schema(const struct cm_schema *s)
{
	struct cm_error err;
	return cm_json_parse(s->text, strlen(s->text), &err);
}

/* How a schema is emitted: into /schema/{name} as it is, or into the OpenAPI document with
 * its "$defs" references pointed into components (drop_ids: "$id"/"$schema" go, since
 * the document's jsonSchemaDialect says the same). */
struct emit {
	const char *ref_from; /* "#/$defs/" */
	const char *ref_to;   /* replacement prefix, or NULL to keep references */
	bool drop_ids;
};

static int emit_value(yajl_gen g, yajl_val v, const struct emit *e, const char *key)
{
	if (YAJL_IS_STRING(v)) {
		const char *s = v->u.string;
		if (key && !strcmp(key, "maximum") && !strcmp(s, "@HOST_CPUS@"))
			return cm_jg_double(g, cm_spec_max_cpus());
		if (key && !strcmp(key, "$ref") && e->ref_to && !strncmp(s, e->ref_from, strlen(e->ref_from))) {
			char ref[256];
			snprintf(ref, sizeof ref, "%s%s", e->ref_to, s + strlen(e->ref_from));
			return cm_jg_str(g, ref);
		}
		return cm_jg_str(g, s);
	}
	if (YAJL_IS_OBJECT(v)) {
		if (yajl_gen_map_open(g) != yajl_gen_status_ok)
			return -1;
		for (size_t i = 0; i < v->u.object.len; i++) {
			const char *k = v->u.object.keys[i];
			if (e->drop_ids && (!strcmp(k, "$id") || !strcmp(k, "$schema")))
				continue;
			if (cm_jg_str(g, k) < 0 || emit_value(g, v->u.object.values[i], e, k) < 0)
				return -1;
		}
		return yajl_gen_map_close(g) == yajl_gen_status_ok ? 0 : -1;
	}
	if (YAJL_IS_ARRAY(v)) {
		if (yajl_gen_array_open(g) != yajl_gen_status_ok)
			return -1;
		for (size_t i = 0; i < v->u.array.len; i++)
			if (emit_value(g, v->u.array.values[i], e, NULL) < 0)
				return -1;
		return yajl_gen_array_close(g) == yajl_gen_status_ok ? 0 : -1;
	}
	return cm_jg_value(g, v);
}

/* The documented path of a route: its doc, or one made from its pattern ("*" → "{id}") so that
 * a route added without documentation still shows (with its action as the summary, which
 * t245 refuses). NULL for the internal /_auth and /_appauth. */
static const char *doc_path(const struct cm_route *rt, char *buf, size_t n)
{
	if (rt->doc)
		return rt->doc;
	if (!strncmp(rt->pattern, "/_", 2))
		return NULL; /* nginx's auth_request sub-requests */
	size_t o = 0;
	for (const char *p = rt->pattern; *p && o + 8 < n; p++) {
		if (*p == '*') {
			o += (size_t)snprintf(buf + o, n - o, "%s", p[1] == '*' ? "{ref}" : "{id}");
			if (p[1] == '*')
				p++;
		} else {
			buf[o++] = *p;
		}
	}
	buf[o] = '\0';
	return buf;
}

void h_index(struct cm_req *r)
{
	size_t n;
	const struct cm_route *rt = cm_routes(&n);
	yajl_gen g = cm_jg_new();
	if (!g) {
		cm_respond_errorf(r, 500, "internal_error", "INTERNAL", NULL, "out of memory");
		return;
	}
	yajl_gen_map_open(g);
	for (size_t i = 0; i < n; i++) {
		char buf[128], key[160];
		const char *doc = doc_path(&rt[i], buf, sizeof buf);
		if (!doc)
			continue;
		snprintf(key, sizeof key, "%s %s", rt[i].method, doc);
		cm_jg_kv_str(g, key, rt[i].summary ? rt[i].summary : rt[i].action);
	}
	yajl_gen_map_close(g);
	cm_respond_gen(r, 200, g);
}

void h_schema(struct cm_req *r)
{
	const char *name = !strcmp(r->path, "/schema") ? "container-create" : r->params[0];
	const struct cm_schema *s = find_schema(name);
	if (!s) {
		struct cm_buf avail = {0};
		for (const struct cm_schema *x = cm_schemas; x->name; x++)
			cm_buf_printf(&avail, "%s%s", x == cm_schemas ? "" : ", ", x->name);
		char esc[80];
		cm_log_escape(esc, sizeof esc, name);
		cm_respond_errorf(r, 404, "not_found", "SCHEMA_NOT_FOUND", "name", "no schema named '%s' (there are: %s)", esc,
				  cm_buf_str(&avail));
		cm_buf_free(&avail);
		return;
	}
	yajl_val v = parse_schema(s);
	yajl_gen g = v ? cm_jg_new() : NULL;
	if (!g) {
		if (v)
			yajl_tree_free(v);
		cm_respond_errorf(r, 500, "internal_error", "INTERNAL", NULL, "schema %s cannot be read", s->name);
		return;
	}
	struct emit e = {"#/$defs/", NULL, false};
	emit_value(g, v, &e, NULL);
	yajl_tree_free(v);
	cm_respond_gen(r, 200, g);
}

/* ---- OpenAPI ---- */

static const char *reason(int status)
{
	switch (status) {
	case 101: return "Switching Protocols: the WebSocket is open";
	case 200: return "OK";
	case 201: return "Created";
	case 202: return "Accepted: the change runs as a job; follow status_url";
	case 204: return "No Content";
	case 206: return "Partial Content: the requested range";
	case 400: return "Bad request: the body, a path segment or a query parameter is invalid";
	case 401: return "Missing or wrong credentials";
	case 403: return "Forbidden";
	case 404: return "Not found";
	case 408: return "Timed out";
	case 409: return "Conflict with the current state";
	case 410: return "The pagination cursor has expired";
	case 412: return "If-Match did not match";
	case 413: return "The body is too large";
	case 416: return "Range not satisfiable";
	case 422: return "Impossible in the current state, or Docker could not do it";
	case 429: return "Too many failed logins from this address, or a capacity limit (MAX_CONTAINERS) reached";
	case 500: return "Docker or the service failed";
	case 503: return "The database, the runner or Docker is unavailable; retry";
	case 507: return "The disk is full";
	default: return "See the API reference";
	}
}

static void media(yajl_gen g, const char *type, const char *schema_ref, const char *format)
{
	cm_jg_str(g, type);
	yajl_gen_map_open(g);
	cm_jg_str(g, "schema");
	yajl_gen_map_open(g);
	if (schema_ref) {
		char ref[128];
		snprintf(ref, sizeof ref, "#/components/schemas/%s", schema_ref);
		cm_jg_kv_str(g, "$ref", ref);
	} else {
		cm_jg_kv_str(g, "type", "string");
		if (format)
			cm_jg_kv_str(g, "contentMediaType", format);
	}
	yajl_gen_map_close(g);
	yajl_gen_map_close(g);
}

/* a body kind of the route table → its media types */
static void content(yajl_gen g, const char *kind)
{
	cm_jg_str(g, "content");
	yajl_gen_map_open(g);
	if (!strcmp(kind, "zip")) {
		media(g, "application/zip", NULL, "application/zip");
	} else if (!strcmp(kind, "tar")) {
		media(g, "application/x-tar", NULL, "application/x-tar");
	} else if (!strcmp(kind, "build")) {
		media(g, "application/zip", NULL, "application/zip");
		media(g, "application/x-tar", NULL, "application/x-tar");
		media(g, "application/gzip", NULL, "application/gzip");
		media(g, "multipart/form-data", NULL, "multipart/form-data");
	} else if (!strcmp(kind, "app")) {
		media(g, "application/json", "object", NULL);
		media(g, "application/zip", NULL, "application/zip");
		media(g, "application/x-tar", NULL, "application/x-tar");
		media(g, "multipart/form-data", NULL, "multipart/form-data");
	} else if (!strcmp(kind, "text")) {
		media(g, "text/plain", NULL, "text/plain");
	} else if (!strcmp(kind, "stream")) {
		media(g, "text/plain", NULL, "text/plain");
	} else if (!strcmp(kind, "octet")) {
		media(g, "application/octet-stream", NULL, "application/octet-stream");
	} else {
		media(g, "application/json", kind, NULL);
	}
	yajl_gen_map_close(g);
}

static void response(yajl_gen g, int status, const char *kind)
{
	char code[8];
	snprintf(code, sizeof code, "%d", status);
	cm_jg_str(g, code);
	yajl_gen_map_open(g);
	if (status >= 400) {
		yajl_gen_map_close(g);
		return;
	}
	cm_jg_kv_str(g, "description", reason(status));
	if (kind)
		content(g, kind);
	yajl_gen_map_close(g);
}

static void error_response(yajl_gen g, int status)
{
	char code[8], ref[64];
	snprintf(code, sizeof code, "%d", status);
	snprintf(ref, sizeof ref, "#/components/responses/E%d", status);
	cm_jg_str(g, code);
	yajl_gen_map_open(g);
	cm_jg_kv_str(g, "$ref", ref);
	yajl_gen_map_close(g);
}

/* statuses of "404 409" into out (sorted, unique with the common ones); returns the count */
static size_t error_statuses(const char *extra, int out[32])
{
	size_t n = 0;
	char all[160];
	snprintf(all, sizeof all, "%s %s", COMMON_ERRORS, extra ? extra : "");
	for (char *p = all; *p;) {
		char *end;
		long v = strtol(p, &end, 10);
		if (end == p) {
			p++;
			continue;
		}
		p = end;
		bool seen = false;
		for (size_t i = 0; i < n; i++)
			seen |= out[i] == v;
		if (!seen && n < 32)
			out[n++] = (int)v;
	}
	for (size_t i = 1; i < n; i++)
		for (size_t j = i; j > 0 && out[j - 1] > out[j]; j--) {
			int t = out[j];
			out[j] = out[j - 1];
			out[j - 1] = t;
		}
	return n;
}

static void parameters(yajl_gen g, const struct cm_route *rt, const char *doc)
{
	cm_jg_str(g, "parameters");
	yajl_gen_array_open(g);
	for (const char *p = doc; (p = strchr(p, '{'));) {
		const char *q = strchr(p, '}');
		if (!q)
			break;
		char name[32];
		snprintf(name, sizeof name, "%.*s", (int)(q - p - 1), p + 1);
		yajl_gen_map_open(g);
		cm_jg_kv_str(g, "name", name);
		cm_jg_kv_str(g, "in", "path");
		cm_jg_str(g, "required");
		cm_jg_bool(g, true);
		cm_jg_str(g, "schema");
		cm_jg_raw(g, "{\"type\":\"string\"}");
		yajl_gen_map_close(g);
		p = q;
	}
	bool change = strcmp(rt->method, "GET") != 0;
	for (size_t i = 0; rt->params[i] || change; i++) {
		const char *q = rt->params[i];
		if (!q) {
			q = "async"; /* every change may run in the background */
			change = false;
		}
		yajl_gen_map_open(g);
		cm_jg_kv_str(g, "name", q);
		cm_jg_kv_str(g, "in", "query");
		cm_jg_str(g, "schema");
		cm_jg_raw(g, !strcmp(q, "async") || !strcmp(q, "dry_run") ? "{\"enum\":[\"true\",\"false\",\"1\",\"0\"]}"
									   : "{\"type\":\"string\"}");
		yajl_gen_map_close(g);
		if (!rt->params[i])
			break;
	}
	yajl_gen_array_close(g);
}

static void operation(yajl_gen g, const struct cm_route *rt, const char *doc)
{
	char method[8];
	size_t k = 0;
	for (; rt->method[k] && k + 1 < sizeof method; k++)
		method[k] = (char)tolower((unsigned char)rt->method[k]);
	method[k] = '\0';
	cm_jg_str(g, method);
	yajl_gen_map_open(g);
	cm_jg_kv_str(g, "operationId", rt->action);
	cm_jg_kv_str(g, "summary", rt->summary ? rt->summary : rt->action);
	char tag[32];
	snprintf(tag, sizeof tag, "%.*s", (int)strcspn(rt->action, "."), rt->action);
	cm_jg_str(g, "tags");
	yajl_gen_array_open(g);
	cm_jg_str(g, tag);
	yajl_gen_array_close(g);
	parameters(g, rt, doc);
	if (rt->body) {
		cm_jg_str(g, "requestBody");
		yajl_gen_map_open(g);
		cm_jg_str(g, "required");
		cm_jg_bool(g, true);
		content(g, rt->body);
		yajl_gen_map_close(g);
	}
	cm_jg_str(g, "responses");
	yajl_gen_map_open(g);
	response(g, rt->ok, rt->resp);
	/* every change runs as a job, but for the streamed uploads */
	bool jobbed = rt->handler && strcmp(rt->method, "GET") &&
		      !(rt->body && (!strcmp(rt->body, "zip") || !strcmp(rt->body, "tar")));
	if (jobbed)
		response(g, 202, "job_accepted");
	int st[32];
	char errors[96];
	snprintf(errors, sizeof errors, "%s%s", rt->errors ? rt->errors : "", jobbed ? " 408" : "");
	size_t n = error_statuses(errors, st);
	for (size_t i = 0; i < n; i++) {
		if (st[i] < 400)
			response(g, st[i], rt->resp);
		else
			error_response(g, st[i]);
	}
	yajl_gen_map_close(g);
	yajl_gen_map_close(g);
}

static void components(yajl_gen g)
{
	cm_jg_str(g, "components");
	yajl_gen_map_open(g);
	cm_jg_str(g, "securitySchemes");
	cm_jg_raw(g, "{\"basic\":{\"type\":\"http\",\"scheme\":\"basic\"}}");
	cm_jg_str(g, "schemas");
	yajl_gen_map_open(g);
	for (const struct cm_schema *s = cm_schemas; s->name; s++) {
		yajl_val v = parse_schema(s);
		if (!v)
			continue;
		if (!strcmp(s->name, "objects")) {
			/* the response objects become components of their own */
			struct emit e = {"#/$defs/", "#/components/schemas/", true};
			yajl_val defs = cm_json_get(v, "$defs");
			for (size_t i = 0; YAJL_IS_OBJECT(defs) && i < defs->u.object.len; i++) {
				cm_jg_str(g, defs->u.object.keys[i]);
				emit_value(g, defs->u.object.values[i], &e, NULL);
			}
		} else {
			char to[128];
			snprintf(to, sizeof to, "#/components/schemas/%s/$defs/", s->name);
			struct emit e = {"#/$defs/", to, true};
			cm_jg_str(g, s->name);
			emit_value(g, v, &e, NULL);
		}
		yajl_tree_free(v);
	}
	yajl_gen_map_close(g);
	cm_jg_str(g, "responses");
	yajl_gen_map_open(g);
	static const int errs[] = {400, 401, 403, 404, 408, 409, 410, 412, 413, 416, 422, 429, 500, 503, 507};
	for (size_t i = 0; i < CM_ARRAY_LEN(errs); i++) {
		char name[8];
		snprintf(name, sizeof name, "E%d", errs[i]);
		cm_jg_str(g, name);
		yajl_gen_map_open(g);
		cm_jg_kv_str(g, "description", reason(errs[i]));
		if (errs[i] == 401 || errs[i] == 429 || errs[i] == 503) {
			cm_jg_str(g, "headers");
			cm_jg_raw(g, errs[i] == 401 ? "{\"WWW-Authenticate\":{\"schema\":{\"type\":\"string\"}}}"
						    : "{\"Retry-After\":{\"schema\":{\"type\":\"integer\"}}}");
		}
		content(g, "error");
		yajl_gen_map_close(g);
	}
	yajl_gen_map_close(g);
	yajl_gen_map_close(g);
}

static char *openapi_document(void)
{
	size_t n;
	const struct cm_route *rt = cm_routes(&n);
	yajl_gen g = cm_jg_new();
	if (!g)
		return NULL;
	yajl_gen_map_open(g);
	cm_jg_kv_str(g, "openapi", "3.1.0");
	cm_jg_str(g, "info");
	yajl_gen_map_open(g);
	cm_jg_kv_str(g, "title", "container-manager");
	cm_jg_kv_str(g, "version", PACKAGE_VERSION);
	cm_jg_kv_str(g, "description",
		     "Hands out Docker containers over HTTP. Every route needs HTTP basic auth. Every error has the body "
		     "#/components/schemas/error. Changes run as jobs: ?async=true or Prefer: respond-async answers 202.");
	yajl_gen_map_close(g);
	cm_jg_kv_str(g, "jsonSchemaDialect", "https://json-schema.org/draft/2020-12/schema");
	cm_jg_str(g, "servers");
	cm_jg_raw(g, "[{\"url\":\"/\"}]");
	cm_jg_str(g, "security");
	cm_jg_raw(g, "[{\"basic\":[]}]");
	cm_jg_str(g, "paths");
	yajl_gen_map_open(g);
	/* one path item per documented path, its methods in table order */
	for (size_t i = 0; i < n; i++) {
		char bi[128], bj[128];
		const char *di = doc_path(&rt[i], bi, sizeof bi);
		if (!di)
			continue;
		bool first = true;
		for (size_t j = 0; j < i && first; j++) {
			const char *dj = doc_path(&rt[j], bj, sizeof bj);
			first = !dj || strcmp(dj, di);
		}
		if (!first)
			continue;
		cm_jg_str(g, di);
		yajl_gen_map_open(g);
		for (size_t j = i; j < n; j++) {
			const char *dj = doc_path(&rt[j], bj, sizeof bj);
			if (dj && !strcmp(dj, di))
				operation(g, &rt[j], dj);
		}
		yajl_gen_map_close(g);
	}
	yajl_gen_map_close(g);
	components(g);
	yajl_gen_map_close(g);
	return cm_jg_finish(g);
}

void h_openapi(struct cm_req *r)
{
	/* the same for the worker's whole life */
	static char *doc;
	if (!doc)
		doc = openapi_document();
	if (!doc) {
		cm_respond_errorf(r, 500, "internal_error", "INTERNAL", NULL, "out of memory");
		return;
	}
	cm_respond_json(r, 200, NULL, doc);
}

bool cm_dry_run(struct cm_req *r)
{
	if (!r->dry_run)
		return false;
	cm_respond_json(r, 200, NULL, "{\"valid\":true,\"dry_run\":true}");
	return true;
}
