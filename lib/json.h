/* json.h: yajl helpers shared by every program (generation, parsing, lookup). */
#ifndef CM_JSON_H
#define CM_JSON_H

#include <yajl/yajl_gen.h>
#include <yajl/yajl_tree.h>
#include "cm.h"

yajl_gen cm_jg_new(void);
/* Each returns 0 or -1. A NULL string emits null. */
int cm_jg_str(yajl_gen g, const char *s);
int cm_jg_strn(yajl_gen g, const char *s, size_t n);
int cm_jg_int(yajl_gen g, long long v);
int cm_jg_double(yajl_gen g, double v);
int cm_jg_bool(yajl_gen g, bool v);
int cm_jg_null(yajl_gen g);
/* Splices JSON text that this program generated itself (trusted, already valid). */
int cm_jg_raw(yajl_gen g, const char *json);
/* Emits a yajl tree value. */
int cm_jg_value(yajl_gen g, yajl_val v);
/* key + string/int/time (ms, 0 = null) convenience */
int cm_jg_kv_str(yajl_gen g, const char *k, const char *v);
int cm_jg_kv_int(yajl_gen g, const char *k, long long v);
int cm_jg_kv_time(yajl_gen g, const char *k, int64_t ms);
/* Copies the generated text into a new NUL-terminated string; frees g. */
char *cm_jg_finish(yajl_gen g);

/* Deepest nesting of arrays/objects cm_json_parse accepts ("[[1]]" is 2 deep). Every
 * document the API takes is far shallower; the limit keeps recursive tree walkers (yajl_tree_free
 * among them) off the end of the stack. */
#define CM_JSON_MAX_DEPTH 64

/* Parses JSON text (not necessarily NUL-terminated). Rejects invalid UTF-8
 * and duplicate object keys; returns NULL and fills err (400 INVALID_JSON).
 * Nesting deeper than CM_JSON_MAX_DEPTH is refused before yajl builds anything
 * (400 JSON_TOO_DEEP, details.limit 64). */
yajl_val cm_json_parse(const char *text, size_t len, struct cm_error *err);
/* Object member lookup (first match) or NULL. */
yajl_val cm_json_get(yajl_val obj, const char *key);
const char *cm_json_get_str(yajl_val obj, const char *key);
bool cm_json_get_int(yajl_val obj, const char *key, long long *out);

/* The project's JSON error body for err (details: field, limit, cuid, job_id when set); caller frees. */
char *cm_error_json(const struct cm_error *err, const char *request_id, const char *cuid, int64_t job_id);

#endif
