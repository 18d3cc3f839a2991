/* http.c: request parsing (query, body) and the response and error writers. */
#include "config.h"
#include "app.h"
#include "origin.h"

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
	case 421: return "Misdirected Request";
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

void cm_respond_gen(struct cm_req *r, int status, yajl_gen g)
{
	char *body = cm_jg_finish(g);
	if (!body) {
		cm_respond_errorf(r, 500, "internal_error", "INTERNAL", NULL, "out of memory");
		return;
	}
	cm_respond_json(r, status, NULL, body);
	free(body);
}

void cm_respond_json(struct cm_req *r, int status, const char *extra_headers, const char *json)
{
	cm_respond(r, status, "application/json", extra_headers, json, json ? strlen(json) : 0);
}

void cm_respond_error(struct cm_req *r, const struct cm_error *err, const char *extra_headers)
{
	int status = err->status >= 400 && err->status <= 599 ? err->status : 500;
	char *body = cm_error_json(err, r->request_id, r->cuid, r->job_id);
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
	/* A browser sends text/plain, form or multipart bodies to another site without asking
	 * first (no CORS preflight); application/json it cannot send cross-site unasked. */
	const char *ct = cm_req_header(r, "CONTENT_TYPE");
	if (!cm_json_media_type(ct)) {
		char esc[80];
		cm_log_escape(esc, sizeof esc, ct && *ct ? ct : "(none)");
		cm_err_set(err, 415, "unsupported_media_type", "UNSUPPORTED_MEDIA_TYPE", NULL,
			   "the request body must be sent as Content-Type: application/json, not %s", esc);
		return NULL;
	}
	return cm_json_parse(p, n, err);
}

int cm_req_parse_query(struct cm_req *r, const char *qs, struct cm_error *err)
{
	return cm_query_parse(&r->q, qs, err);
}

const char *cm_req_query(struct cm_req *r, const char *key)
{
	return cm_query_get(&r->q, key);
}

int cm_req_allow_params(struct cm_req *r, const char *const *allowed)
{
	const char *bad = cm_query_unknown(&r->q, allowed);
	if (!bad)
		return 0;
	char k[80];
	snprintf(k, sizeof k, "%.64s", bad);
	cm_respond_errorf(r, 400, "validation_error", "UNKNOWN_PARAMETER", k, "unknown query parameter %s", k);
	return -1;
}
