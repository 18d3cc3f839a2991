/* query.c: URL query strings, decoded strictly (bad escapes, NUL bytes, invalid UTF-8,
 * repeated keys and oversized values are errors), shared by the workers and the WebSocket helper. */
#include "config.h"
#include "query.h"

#include <string.h>

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

int cm_query_parse(struct cm_query *q, const char *qs, struct cm_error *err)
{
	q->n = 0;
	if (!qs)
		return 0;
	const char *p = qs;
	while (*p) {
		const char *amp = strchr(p, '&');
		size_t len = amp ? (size_t)(amp - p) : strlen(p);
		if (len > 0) {
			const char *eq = memchr(p, '=', len);
			size_t kl = eq ? (size_t)(eq - p) : len;
			if (q->n >= CM_MAX_QUERY)
				return cm_err_validation(err, "INVALID_QUERY", NULL, "too many query parameters");
			if (url_decode(p, kl, q->kv[q->n].key, sizeof q->kv[q->n].key) < 0 ||
			    url_decode(eq ? eq + 1 : p + len, eq ? len - kl - 1 : 0, q->kv[q->n].val,
				       sizeof q->kv[q->n].val) < 0)
				return cm_err_validation(err, "INVALID_QUERY", NULL, "malformed query string");
			for (int i = 0; i < q->n; i++)
				if (!strcmp(q->kv[i].key, q->kv[q->n].key))
					return cm_err_validation(err, "INVALID_QUERY", q->kv[i].key,
								 "query parameter %s is given twice", q->kv[i].key);
			q->n++;
		}
		if (!amp)
			break;
		p = amp + 1;
	}
	return 0;
}

const char *cm_query_get(const struct cm_query *q, const char *key)
{
	for (int i = 0; i < q->n; i++)
		if (!strcmp(q->kv[i].key, key))
			return q->kv[i].val;
	return NULL;
}

const char *cm_query_unknown(const struct cm_query *q, const char *const *allowed)
{
	for (int i = 0; i < q->n; i++) {
		bool ok = false;
		for (const char *const *a = allowed; a && *a && !ok; a++)
			ok = !strcmp(q->kv[i].key, *a);
		if (!ok)
			return q->kv[i].key;
	}
	return NULL;
}
