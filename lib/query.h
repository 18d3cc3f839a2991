/* query.h: strict URL query-string parsing. */
#ifndef CM_QUERY_H
#define CM_QUERY_H

#include "cm.h"

#define CM_MAX_QUERY 16

struct cm_query {
	int n;
	struct {
		char key[64];
		char val[1024];
	} kv[CM_MAX_QUERY];
};

/* Parses qs (NULL: empty); -1 with a 400 INVALID_QUERY err on a malformed or repeated key. */
int cm_query_parse(struct cm_query *q, const char *qs, struct cm_error *err);
const char *cm_query_get(const struct cm_query *q, const char *key);
/* The first key not in allowed (NULL-terminated), or NULL. */
const char *cm_query_unknown(const struct cm_query *q, const char *const *allowed);

#endif
