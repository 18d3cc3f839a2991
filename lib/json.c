/* json.c: yajl generation and parsing helpers. */
#include "config.h"
#include "json.h"

#include <string.h>
#include <stdio.h>

yajl_gen cm_jg_new(void)
{
	yajl_gen g = yajl_gen_alloc(NULL);
	if (g)
		yajl_gen_config(g, yajl_gen_validate_utf8, 1);
	return g;
}

int cm_jg_str(yajl_gen g, const char *s)
{
	if (!s)
		return yajl_gen_null(g) == yajl_gen_status_ok ? 0 : -1;
	return yajl_gen_string(g, (const unsigned char *)s, strlen(s)) == yajl_gen_status_ok ? 0 : -1;
}

int cm_jg_strn(yajl_gen g, const char *s, size_t n)
{
	return yajl_gen_string(g, (const unsigned char *)s, n) == yajl_gen_status_ok ? 0 : -1;
}

int cm_jg_int(yajl_gen g, long long v)
{
	return yajl_gen_integer(g, v) == yajl_gen_status_ok ? 0 : -1;
}

int cm_jg_double(yajl_gen g, double v)
{
	char num[64];
	int n = snprintf(num, sizeof num, "%.15g", v);
	return yajl_gen_number(g, num, (size_t)n) == yajl_gen_status_ok ? 0 : -1;
}

int cm_jg_bool(yajl_gen g, bool v)
{
	return yajl_gen_bool(g, v) == yajl_gen_status_ok ? 0 : -1;
}

int cm_jg_null(yajl_gen g)
{
	return yajl_gen_null(g) == yajl_gen_status_ok ? 0 : -1;
}

int cm_jg_raw(yajl_gen g, const char *json)
{
	/* yajl_gen_number emits its argument verbatim; used only for text we generated */
	if (!json)
		return cm_jg_null(g);
	return yajl_gen_number(g, json, strlen(json)) == yajl_gen_status_ok ? 0 : -1;
}

int cm_jg_value(yajl_gen g, yajl_val v)
{
	if (!v)
		return cm_jg_null(g);
	switch (v->type) {
	case yajl_t_string:
		return cm_jg_str(g, v->u.string);
	case yajl_t_number:
		return yajl_gen_number(g, v->u.number.r, strlen(v->u.number.r)) == yajl_gen_status_ok ? 0 : -1;
	case yajl_t_true:
		return cm_jg_bool(g, true);
	case yajl_t_false:
		return cm_jg_bool(g, false);
	case yajl_t_null:
		return cm_jg_null(g);
	case yajl_t_object:
		if (yajl_gen_map_open(g) != yajl_gen_status_ok)
			return -1;
		for (size_t i = 0; i < v->u.object.len; i++) {
			if (cm_jg_str(g, v->u.object.keys[i]) < 0 || cm_jg_value(g, v->u.object.values[i]) < 0)
				return -1;
		}
		return yajl_gen_map_close(g) == yajl_gen_status_ok ? 0 : -1;
	case yajl_t_array:
		if (yajl_gen_array_open(g) != yajl_gen_status_ok)
			return -1;
		for (size_t i = 0; i < v->u.array.len; i++)
			if (cm_jg_value(g, v->u.array.values[i]) < 0)
				return -1;
		return yajl_gen_array_close(g) == yajl_gen_status_ok ? 0 : -1;
	default:
		return -1;
	}
}

int cm_jg_kv_str(yajl_gen g, const char *k, const char *v)
{
	return cm_jg_str(g, k) < 0 ? -1 : cm_jg_str(g, v);
}

int cm_jg_kv_int(yajl_gen g, const char *k, long long v)
{
	return cm_jg_str(g, k) < 0 ? -1 : cm_jg_int(g, v);
}

int cm_jg_kv_time(yajl_gen g, const char *k, int64_t ms)
{
	if (cm_jg_str(g, k) < 0)
		return -1;
	if (ms <= 0)
		return cm_jg_null(g);
	char ts[32];
	cm_time_rfc3339(ts, ms);
	return cm_jg_str(g, ts);
}

char *cm_jg_finish(yajl_gen g)
{
	const unsigned char *buf;
	size_t len;
	char *out = NULL;
	if (yajl_gen_get_buf(g, &buf, &len) == yajl_gen_status_ok) {
		out = malloc(len + 1);
		if (out) {
			memcpy(out, buf, len);
			out[len] = '\0';
		}
	}
	yajl_gen_free(g);
	return out;
}

static bool has_dup_keys(yajl_val v)
{
	if (YAJL_IS_OBJECT(v)) {
		size_t n = v->u.object.len;
		for (size_t i = 0; i < n; i++) {
			for (size_t j = i + 1; j < n; j++)
				if (!strcmp(v->u.object.keys[i], v->u.object.keys[j]))
					return true;
			if (has_dup_keys(v->u.object.values[i]))
				return true;
		}
	} else if (YAJL_IS_ARRAY(v)) {
		for (size_t i = 0; i < v->u.array.len; i++)
			if (has_dup_keys(v->u.array.values[i]))
				return true;
	}
	return false;
}

yajl_val cm_json_parse(const char *text, size_t len, struct cm_error *err)
{
	if (!cm_valid_utf8(text, len)) {
		cm_err_validation(err, "INVALID_UTF8", NULL, "request body is not valid UTF-8");
		return NULL;
	}
	if (memchr(text, '\0', len)) {
		cm_err_validation(err, "INVALID_JSON", NULL, "request body contains a NUL byte");
		return NULL;
	}
	/* yajl_tree accepts comments; JSON does not. The same pass bounds the nesting: yajl's
	 * parser is iterative, but yajl_tree_free and has_dup_keys (and every walker of the tree)
	 * recurse, so ~150,000 nested arrays overflow the stack. Counting brackets outside strings
	 * is exact up to the first byte yajl would refuse (an unmatched closer stops it there). */
	bool in_str = false;
	int depth = 0;
	for (size_t i = 0; i < len; i++) {
		char c = text[i];
		if (in_str) {
			if (c == '\\') {
				/* a NUL inside a string would silently cut it short in C */
				if (i + 5 < len && text[i + 1] == 'u' && !memcmp(text + i + 2, "0000", 4)) {
					cm_err_validation(err, "INVALID_VALUE", NULL, "strings must not contain NUL (\\u0000)");
					return NULL;
				}
				i++;
			} else if (c == '"')
				in_str = false;
		} else if (c == '"') {
			in_str = true;
		} else if (c == '[' || c == '{') {
			if (++depth > CM_JSON_MAX_DEPTH) {
				cm_err_validation(err, "JSON_TOO_DEEP", NULL,
						  "JSON nests deeper than %d arrays/objects", CM_JSON_MAX_DEPTH);
				err->limit = CM_JSON_MAX_DEPTH;
				return NULL;
			}
		} else if (c == ']' || c == '}') {
			if (depth > 0)
				depth--;
		} else if (c == '/') {
			cm_err_validation(err, "INVALID_JSON", NULL, "malformed JSON: comments are not allowed");
			return NULL;
		}
	}
	char *copy = malloc(len + 1);
	if (!copy) {
		cm_err_internal(err, "out of memory");
		return NULL;
	}
	memcpy(copy, text, len);
	copy[len] = '\0';
	char ebuf[256] = "";
	yajl_val v = yajl_tree_parse(copy, ebuf, sizeof ebuf);
	free(copy);
	if (!v) {
		/* keep yajl's first line ("parse error: premature EOF"), not its excerpt of the input */
		ebuf[strcspn(ebuf, "\r\n")] = '\0';
		size_t el = strlen(ebuf);
		while (el > 0 && ebuf[el - 1] == ' ')
			ebuf[--el] = '\0';
		cm_err_validation(err, "INVALID_JSON", NULL, "malformed JSON: %s", ebuf[0] ? ebuf : "parse error");
		return NULL;
	}
	if (has_dup_keys(v)) {
		yajl_tree_free(v);
		cm_err_validation(err, "INVALID_JSON", NULL, "malformed JSON: duplicate object key");
		return NULL;
	}
	return v;
}

yajl_val cm_json_get(yajl_val obj, const char *key)
{
	if (!YAJL_IS_OBJECT(obj))
		return NULL;
	for (size_t i = 0; i < obj->u.object.len; i++)
		if (!strcmp(obj->u.object.keys[i], key))
			return obj->u.object.values[i];
	return NULL;
}

const char *cm_json_get_str(yajl_val obj, const char *key)
{
	yajl_val v = cm_json_get(obj, key);
	return YAJL_IS_STRING(v) ? v->u.string : NULL;
}

bool cm_json_get_int(yajl_val obj, const char *key, long long *out)
{
	yajl_val v = cm_json_get(obj, key);
	if (!v || !YAJL_IS_INTEGER(v))
		return false;
	*out = YAJL_GET_INTEGER(v);
	return true;
}

char *cm_error_json(const struct cm_error *err, const char *request_id, const char *cuid, int64_t job_id)
{
	int status = err->status >= 400 && err->status <= 599 ? err->status : 500;
	char ts[32];
	cm_time_rfc3339(ts, cm_now_ms());
	yajl_gen g = cm_jg_new();
	if (!g)
		return NULL;
	yajl_gen_map_open(g);
	cm_jg_kv_str(g, "error", err->kind[0] ? err->kind : "internal_error");
	cm_jg_kv_str(g, "code", err->code[0] ? err->code : "INTERNAL");
	/* messages may quote request bytes: keep them valid UTF-8 */
	const char *msg = cm_valid_utf8(err->message, strlen(err->message)) ? err->message : "invalid request";
	cm_jg_kv_str(g, "message", msg);
	cm_jg_kv_int(g, "status", status);
	cm_jg_kv_str(g, "request_id", request_id ? request_id : "");
	cm_jg_kv_str(g, "timestamp", ts);
	cm_jg_str(g, "details");
	yajl_gen_map_open(g);
	if (err->field[0] && cm_valid_utf8(err->field, strlen(err->field)))
		cm_jg_kv_str(g, "field", err->field);
	if (err->limit)
		cm_jg_kv_int(g, "limit", err->limit);
	if (err->limit && err->used)
		cm_jg_kv_int(g, "used", err->used);
	if (cuid && cuid[0])
		cm_jg_kv_str(g, "cuid", cuid);
	if (job_id > 0)
		cm_jg_kv_int(g, "job_id", job_id);
	yajl_gen_map_close(g);
	yajl_gen_map_close(g);
	return cm_jg_finish(g);
}
