/* fuzz_parsers.c: the small parsers that see outside bytes: size strings ("4096m"), listen
 * specs, uid:gid, base64url/base64 (cursor tokens, Authorization), path normalisation,
 * UTF-8 validation, query strings, Host and Origin headers. The first byte picks the parser. */
#include "config.h"
#include "cm.h"
#include "cm_config.h"
#include "paths.h"
#include "query.h"
#include "origin.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > 8192)
		return 0;
	char *s = malloc(size);
	if (!s)
		return 0;
	memcpy(s, data + 1, size - 1);
	s[size - 1] = '\0';
	struct cm_error err;
	switch (data[0] % 8) {
	case 0: {
		int64_t v;
		if (cm_parse_size(s, &v) == 0 && v < 0)
			abort();
		break;
	}
	case 1: {
		char host[64];
		int port;
		if (cm_parse_listen(s, host, sizeof host, &port) == 0 && (port < 1 || port > 65535))
			abort();
		break;
	}
	case 2: {
		unsigned u, g;
		cm_parse_uid(s, &u, &g);
		break;
	}
	case 3: {
		unsigned char out[64];
		long n = cm_b64url_decode(out, sizeof out, s);
		if (n > (long)sizeof out)
			abort();
		char back[128];
		if (n >= 0)
			cm_b64url_encode(back, out, (size_t)n);
		break;
	}
	case 4: {
		char out[4200];
		if (cm_path_normalize(s, out, sizeof out, &err) == 0) {
			/* a normalised path never climbs or starts at the root */
			if (out[0] == '/' || !strcmp(out, "..") || !strncmp(out, "../", 3) || strstr(out, "/../") ||
			    (strlen(out) >= 3 && !strcmp(out + strlen(out) - 3, "/..")))
				abort();
		}
		break;
	}
	case 5: {
		char out[512];
		cm_b64_decode(out, sizeof out, s, strlen(s));
		break;
	}
	case 6: {
		/* query strings (API and WebSocket helper): decoded pairs are valid UTF-8, unique */
		struct cm_query q;
		if (cm_query_parse(&q, s, &err) == 0) {
			if (q.n < 0 || q.n > CM_MAX_QUERY)
				abort();
			for (int i = 0; i < q.n; i++) {
				if (!cm_valid_utf8(q.kv[i].key, strlen(q.kv[i].key)) || !cm_valid_utf8(q.kv[i].val, strlen(q.kv[i].val)))
					abort();
				for (int j = 0; j < i; j++)
					if (!strcmp(q.kv[i].key, q.kv[j].key))
						abort();
			}
		}
		break;
	}
	default: {
		cm_valid_utf8((const char *)data, size);
		/* Host and Origin headers (lib/origin.c): the same bytes as each */
		struct cm_origin o;
		if (cm_origin_parse(s, &o) == 0 && (o.port < 1 || o.port > 65535 || strlen(o.host) >= sizeof o.host))
			abort();
		static struct cm_config c = {.http_listen = "127.0.0.1:4545", .https_listen = "0.0.0.0:8443",
					     .apps_listen = "127.0.0.1:4546", .allowed_origins = "https://a.example",
					     .allowed_hosts = "*.b.example"};
		struct cm_site_req q = {.method = "POST", .path = "/x", .host = s, .scheme = "https", .origin = s,
					.server_name = s, .fetch_site = s, .upgrade = true};
		int rc = cm_site_check(&c, &q, CM_CHECK_HOST | CM_CHECK_ORIGIN, &err);
		if (rc < 0 && err.status != 421 && err.status != 403)
			abort();
		break;
	}
	}
	free(s);
	return 0;
}
