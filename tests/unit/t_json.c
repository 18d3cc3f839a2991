/* t_json.c: the JSON parser wrapper refuses what is not strict JSON. */
#include "config.h"
#include "json.h"
#include "tap.h"

static int parses(const char *s)
{
	struct cm_error err = {0};
	yajl_val v = cm_json_parse(s, strlen(s), &err);
	if (v)
		yajl_tree_free(v);
	return v != NULL;
}

/* "[" * n + "1" + "]" * n, or objects {"a":{"a":...1}} when obj; caller frees */
static char *nested(size_t n, bool obj)
{
	size_t per = obj ? 5 : 1;
	char *s = malloc(n * (per + 1) + 2);
	if (!s)
		abort();
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		memcpy(s + k, obj ? "{\"a\":" : "[", per);
		k += per;
	}
	s[k++] = '1';
	for (size_t i = 0; i < n; i++)
		s[k++] = obj ? '}' : ']';
	s[k] = '\0';
	return s;
}

static void depth_tests(void)
{
	struct cm_error err = {0};
	char *s = nested(CM_JSON_MAX_DEPTH, false);
	ok(parses(s), "arrays nested exactly %d deep are accepted", CM_JSON_MAX_DEPTH);
	free(s);
	s = nested(CM_JSON_MAX_DEPTH, true);
	ok(parses(s), "objects nested exactly %d deep are accepted", CM_JSON_MAX_DEPTH);
	free(s);
	s = nested(CM_JSON_MAX_DEPTH + 1, false);
	yajl_val v = cm_json_parse(s, strlen(s), &err);
	ok(!v && err.status == 400 && !strcmp(err.code, "JSON_TOO_DEEP") && err.limit == CM_JSON_MAX_DEPTH,
	   "arrays nested %d deep: 400 JSON_TOO_DEEP, limit %d (%s)", CM_JSON_MAX_DEPTH + 1, CM_JSON_MAX_DEPTH, err.code);
	free(s);
	s = nested(CM_JSON_MAX_DEPTH + 1, true);
	ok(!parses(s), "objects nested %d deep are refused", CM_JSON_MAX_DEPTH + 1);
	free(s);
	/* the size that overflowed the stack in yajl_tree_free / has_dup_keys */
	s = nested(500000, false);
	memset(&err, 0, sizeof err);
	v = cm_json_parse(s, strlen(s), &err);
	ok(!v && !strcmp(err.code, "JSON_TOO_DEEP"), "500,000 nested arrays: JSON_TOO_DEEP, no crash");
	free(s);
	s = nested(500000, true);
	ok(!parses(s), "500,000 nested objects: refused, no crash");
	free(s);
	/* unclosed: yajl would build the partial tree and free it recursively */
	s = nested(500000, false);
	s[500000] = '\0';
	ok(!parses(s), "500,000 unclosed arrays: refused, no crash");
	free(s);
	/* brackets inside strings are text, not nesting */
	char buf[400];
	size_t k = (size_t)snprintf(buf, sizeof buf, "{\"a\":\"");
	for (int i = 0; i < 200; i++)
		buf[k++] = i % 2 ? '[' : '{';
	memcpy(buf + k, "\\\"[\"}", 6);
	buf[k + 6] = '\0';
	ok(parses(buf), "brackets (and an escaped quote) inside a string do not count");
	/* closers cannot bank depth for later: ']]' then 65 '[' is still refused (and invalid) */
	s = nested(CM_JSON_MAX_DEPTH + 1, false);
	char *t = malloc(strlen(s) + 3);
	memcpy(t, "]]", 2);
	memcpy(t + 2, s, strlen(s) + 1);
	memset(&err, 0, sizeof err);
	ok(!cm_json_parse(t, strlen(t), &err), "leading closers then deep nesting: refused");
	free(t);
	free(s);
	/* siblings do not add up: 64 deep twice in one document */
	s = nested(CM_JSON_MAX_DEPTH - 1, false);
	char *two = malloc(2 * strlen(s) + 4);
	snprintf(two, 2 * strlen(s) + 4, "[%s,%s]", s, s);
	ok(parses(two), "two siblings each %d deep (the document %d deep) are accepted", CM_JSON_MAX_DEPTH - 1,
	   CM_JSON_MAX_DEPTH);
	free(two);
	free(s);
}

int main(void)
{
	ok(parses("{\"a\":1}"), "object");
	ok(parses("[1,2,{\"x\":null}]"), "array");
	ok(!parses("{\"a\":1"), "truncated");
	ok(!parses("{\"a\":1,\"a\":2}"), "duplicate key");
	ok(!parses("{\"a\":{\"b\":1,\"b\":1}}"), "nested duplicate key");
	ok(!parses("{/*c*/\"a\":1}"), "comment");
	ok(parses("{\"a\":\"/*not a comment*/\"}"), "slash inside string");
	ok(!parses("{\"a\":\"\xff\"}"), "invalid utf-8");
	ok(!parses("{'a':1}"), "single quotes");
	struct cm_error err = {0};
	yajl_val v = cm_json_parse("{\"a\"", 4, &err);
	ok(!v && err.status == 400 && !strcmp(err.code, "INVALID_JSON"), "error code INVALID_JSON");
	const char nul[] = "{\"a\":1}\0x";
	ok(!cm_json_parse(nul, sizeof nul - 1, &err), "NUL byte rejected");

	depth_tests();

	yajl_gen g = cm_jg_new();
	yajl_gen_map_open(g);
	cm_jg_kv_str(g, "k", "v\"q");
	cm_jg_str(g, "raw");
	cm_jg_raw(g, "[1,2]");
	cm_jg_kv_time(g, "t", 0);
	yajl_gen_map_close(g);
	char *out = cm_jg_finish(g);
	is_str(out, "{\"k\":\"v\\\"q\",\"raw\":[1,2],\"t\":null}", "generation and raw splice");
	free(out);
	return tap_done();
}
