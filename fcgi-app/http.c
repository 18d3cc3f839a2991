/* http.c: request parsing (query, body) and the response and error writers. */
#include "config.h"
#include "app.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

static const char *reason(int status)
{
	switch (status) {
	case 200: return "OK";
	case 201: return "Created";
	case 202: return "Accepted";
	case 204: return "No Content";
	case 304: return "Not Modified";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 409: return "Conflict";
	case 410: return "Gone";
	case 412: return "Precondition Failed";
	case 413: return "Payload Too Large";
	case 415: return "Unsupported Media Type";
	case 422: return "Unprocessable Entity";
	case 429: return "Too Many Requests";
	case 500: return "Internal Server Error";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	case 507: return "Insufficient Storage";
	default: return "Status";
	}
}

void cm_respond_start(struct cm_req *r, int status, const char *content_type, const char *extra_headers,
		      long long content_length)
{
	if (r->responded)
		return;
	r->responded = true;
	r->status = status;
	/* headers are formatted here: FCGX_FPrintF lacks C99 length modifiers */
	char head[512];
	int n = snprintf(head, sizeof head, "Status: %d %s\r\nX-Request-Id: %s\r\nCache-Control: no-store\r\n", status,
			 reason(status), r->request_id);
	if (content_type && n < (int)sizeof head)
		n += snprintf(head + n, sizeof head - (size_t)n, "Content-Type: %s\r\n", content_type);
	if (content_length >= 0 && status != 204 && status != 304 && n < (int)sizeof head)
		n += snprintf(head + n, sizeof head - (size_t)n, "Content-Length: %lld\r\n", content_length);
	FCGX_PutS(head, r->fr->out);
	if (extra_headers)
		FCGX_PutS(extra_headers, r->fr->out);
	FCGX_PutS("\r\n", r->fr->out);
}

void cm_respond(struct cm_req *r, int status, const char *content_type, const char *extra_headers,
		const char *body, size_t len)
{
	if (r->responded)
		return;
	cm_respond_start(r, status, content_type, extra_headers, (long long)len);
	if (len && status != 204 && status != 304 && strcmp(r->method, "HEAD"))
		FCGX_PutStr(body, (int)len, r->fr->out);
}

void cm_respond_json(struct cm_req *r, int status, const char *extra_headers, const char *json)
{
	cm_respond(r, status, "application/json", extra_headers, json, json ? strlen(json) : 0);
}

void cm_respond_error(struct cm_req *r, const struct cm_error *err, const char *extra_headers)
{
	int status = err->status >= 400 && err->status <= 599 ? err->status : 500;
	char ts[32];
	cm_time_rfc3339(ts, cm_now_ms());
	yajl_gen g = cm_jg_new();
	if (!g) {
		cm_respond(r, 500, "application/json", NULL, "{}", 2);
		return;
	}
	yajl_gen_map_open(g);
	cm_jg_kv_str(g, "error", err->kind[0] ? err->kind : "internal_error");
	cm_jg_kv_str(g, "code", err->code[0] ? err->code : "INTERNAL");
	/* messages may quote request bytes: keep them valid UTF-8 */
	const char *msg = cm_valid_utf8(err->message, strlen(err->message)) ? err->message : "invalid request";
	cm_jg_kv_str(g, "message", msg);
	cm_jg_kv_int(g, "status", status);
	cm_jg_kv_str(g, "request_id", r->request_id);
	cm_jg_kv_str(g, "timestamp", ts);
	cm_jg_str(g, "details");
	yajl_gen_map_open(g);
	if (err->field[0] && cm_valid_utf8(err->field, strlen(err->field)))
		cm_jg_kv_str(g, "field", err->field);
	if (err->limit)
		cm_jg_kv_int(g, "limit", err->limit);
	if (r->cuid[0])
		cm_jg_kv_str(g, "cuid", r->cuid);
	if (r->job_id > 0)
		cm_jg_kv_int(g, "job_id", r->job_id);
	yajl_gen_map_close(g);
	yajl_gen_map_close(g);
	char *body = cm_jg_finish(g);
	snprintf(r->error_code, sizeof r->error_code, "%s", err->code);
	if (status >= 500)
		cm_warn("request %s %s failed: %d %s: %s", r->request_id, r->method, status, err->code, err->message);
	cm_respond(r, status, "application/json", extra_headers, body ? body : "{}", body ? strlen(body) : 2);
	free(body);
}

int cm_respond_errorf(struct cm_req *r, int status, const char *kind, const char *code, const char *field,
		      const char *fmt, ...)
{
	struct cm_error err = {.status = status};
	snprintf(err.kind, sizeof err.kind, "%s", kind);
	snprintf(err.code, sizeof err.code, "%s", code);
	snprintf(err.field, sizeof err.field, "%s", field ? field : "");
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err.message, sizeof err.message, fmt, ap);
	va_end(ap);
	cm_respond_error(r, &err, NULL);
	return -1;
}

const char *cm_req_header(struct cm_req *r, const char *cgi_name)
{
	return FCGX_GetParam(cgi_name, r->fr->envp);
}

int cm_req_read_body(struct cm_req *r, struct cm_error *err)
{
	if (r->body.data)
		return 0;
	long max = r->app->cfg.max_body;
	const char *cl = cm_req_header(r, "CONTENT_LENGTH");
	if (cl && *cl) {
		char *end;
		long long n = strtoll(cl, &end, 10);
		if (*end || n < 0)
			return cm_err_validation(err, "INVALID_CONTENT_LENGTH", NULL, "Content-Length is not a number");
		if (n > max)
			return cm_err_set(err, 413, "payload_too_large", "BODY_TOO_LARGE", NULL,
					  "request body is larger than %ld bytes", max);
	}
	r->body.limit = (size_t)max;
	if (cm_buf_puts(&r->body, "") < 0)
		return cm_err_internal(err, "out of memory");
	char chunk[8192];
	for (;;) {
		int n = FCGX_GetStr(chunk, sizeof chunk, r->fr->in);
		if (n <= 0)
			break;
		if (cm_buf_append(&r->body, chunk, (size_t)n) < 0)
			return cm_err_set(err, 413, "payload_too_large", "BODY_TOO_LARGE", NULL,
					  "request body is larger than %ld bytes", max);
	}
	return 0;
}

yajl_val cm_req_json(struct cm_req *r, bool allow_empty, struct cm_error *err)
{
	if (cm_req_read_body(r, err) < 0)
		return NULL;
	const char *p = cm_buf_str(&r->body);
	size_t n = r->body.len;
	bool blank = true;
	for (size_t i = 0; i < n; i++)
		if (!isspace((unsigned char)p[i]))
			blank = false;
	if (blank) {
		if (!allow_empty)
			cm_err_validation(err, "EMPTY_BODY", NULL, "a JSON request body is required");
		return NULL;
	}
	return cm_json_parse(p, n, err);
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* URL-decodes in[0..n) into out (outsz incl. NUL); -1 on bad escapes, NUL bytes or overflow. */
static int url_decode(const char *in, size_t n, char *out, size_t outsz)
{
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		char c = in[i];
		if (c == '+') {
			c = ' ';
		} else if (c == '%') {
			if (i + 2 >= n)
				return -1;
			int h = hexval(in[i + 1]), l = hexval(in[i + 2]);
			if (h < 0 || l < 0)
				return -1;
			c = (char)(h * 16 + l);
			i += 2;
		}
		if (c == '\0' || o + 1 >= outsz)
			return -1;
		out[o++] = c;
	}
	out[o] = '\0';
	return cm_valid_utf8(out, o) ? 0 : -1;
}

int cm_req_parse_query(struct cm_req *r, const char *qs, struct cm_error *err)
{
	r->nquery = 0;
	if (!qs)
		return 0;
	const char *p = qs;
	while (*p) {
		const char *amp = strchr(p, '&');
		size_t len = amp ? (size_t)(amp - p) : strlen(p);
		if (len > 0) {
			const char *eq = memchr(p, '=', len);
			size_t kl = eq ? (size_t)(eq - p) : len;
			if (r->nquery >= CM_MAX_QUERY)
				return cm_err_validation(err, "INVALID_QUERY", NULL, "too many query parameters");
			if (url_decode(p, kl, r->query[r->nquery].key, sizeof r->query[r->nquery].key) < 0 ||
			    url_decode(eq ? eq + 1 : p + len, eq ? len - kl - 1 : 0, r->query[r->nquery].val,
				       sizeof r->query[r->nquery].val) < 0)
				return cm_err_validation(err, "INVALID_QUERY", NULL, "malformed query string");
			for (int i = 0; i < r->nquery; i++)
				if (!strcmp(r->query[i].key, r->query[r->nquery].key))
					return cm_err_validation(err, "INVALID_QUERY", r->query[i].key,
								 "query parameter %s is given twice", r->query[i].key);
			r->nquery++;
		}
		if (!amp)
			break;
		p = amp + 1;
	}
	return 0;
}

const char *cm_req_query(struct cm_req *r, const char *key)
{
	for (int i = 0; i < r->nquery; i++)
		if (!strcmp(r->query[i].key, key))
			return r->query[i].val;
	return NULL;
}

int cm_req_allow_params(struct cm_req *r, const char *const *allowed)
{
	for (int i = 0; i < r->nquery; i++) {
		bool ok = false;
		for (const char *const *a = allowed; a && *a && !ok; a++)
			ok = !strcmp(r->query[i].key, *a);
		if (!ok) {
			char k[80];
			snprintf(k, sizeof k, "%.64s", r->query[i].key);
			cm_respond_errorf(r, 400, "validation_error", "UNKNOWN_PARAMETER", k, "unknown query parameter %s", k);
			return -1;
		}
	}
	return 0;
}
