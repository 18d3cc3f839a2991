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
