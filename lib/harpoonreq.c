/* harpoonreq.c: the bodies of harpoon's start_container / stop_container / unlock_container,
 * validated without touching any state (cm-ws decides what they mean; the fuzz harness feeds
 * them arbitrary bytes). */
#include "config.h"
#include "harpoonreq.h"
#include "json.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool ipv4_allowed(const char *ip, const char *publish_address)
{
	struct in_addr a;
	if (inet_pton(AF_INET, ip, &a) != 1)
		return false;
	if ((ntohl(a.s_addr) >> 24) == 127)
		return true;
	return !strcmp(publish_address, "0.0.0.0") || !strcmp(publish_address, ip);
}

static bool parse_port_num(const char *s, size_t n, long *out, long min)
{
	if (n == 0 || n > 5)
		return false;
	long v = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (s[i] - '0');
	}
	if (v < min || v > 65535)
		return false;
	*out = v;
	return true;
}

/* ports: [[host, container], "ip:host:container", "host:container", "container", N] (a
 * "/udp" or "/tcp" suffix on string forms) → [{"ip","host","container","protocol"}] */
static char *parse_ports(yajl_val v, const char *publish_address, struct cm_error *err)
{
	if (!YAJL_IS_ARRAY(v)) {
		cm_err_validation(err, "INVALID_VALUE", "ports", "ports must be a list such as [[0, 4545]]");
		return NULL;
	}
	if (v->u.array.len > 64) {
		cm_err_validation(err, "INVALID_VALUE", "ports", "at most 64 ports");
		return NULL;
	}
	yajl_gen g = cm_jg_new();
	if (!g) {
		cm_err_internal(err, "out of memory");
		return NULL;
	}
	long seen[64];
	char seen_proto[64][4];
	yajl_gen_array_open(g);
	for (size_t i = 0; i < v->u.array.len; i++) {
		yajl_val p = v->u.array.values[i];
		long host = 0, cont = 0;
		char ip[64] = "", proto[4] = "tcp";
		bool ok = false;
		if (YAJL_IS_ARRAY(p) && p->u.array.len == 2 && YAJL_IS_INTEGER(p->u.array.values[0]) &&
		    YAJL_IS_INTEGER(p->u.array.values[1])) {
			host = (long)YAJL_GET_INTEGER(p->u.array.values[0]);
			cont = (long)YAJL_GET_INTEGER(p->u.array.values[1]);
			ok = host >= 0 && host <= 65535 && cont >= 1 && cont <= 65535;
		} else if (YAJL_IS_INTEGER(p)) {
			cont = (long)YAJL_GET_INTEGER(p);
			ok = cont >= 1 && cont <= 65535;
		} else if (YAJL_IS_STRING(p)) {
			char s[128];
			const char *src = YAJL_GET_STRING(p);
			ok = src && strlen(src) < sizeof s;
			snprintf(s, sizeof s, "%s", src ? src : "");
			char *slash = strchr(s, '/');
			if (ok && slash) {
				*slash = '\0';
				ok = !strcmp(slash + 1, "tcp") || !strcmp(slash + 1, "udp");
				if (ok)
					snprintf(proto, sizeof proto, "%s", slash + 1);
			}
			char *parts[3];
			int np = 0;
			for (char *q = s, *c; ok && np < 3; q = c + 1) {
				parts[np++] = q;
				if (!(c = strchr(q, ':')))
					break;
				*c = '\0';
				if (np == 3)
					ok = false;
			}
			if (ok && np == 3) {
				snprintf(ip, sizeof ip, "%s", parts[0]);
				ok = ip[0] && parse_port_num(parts[1], strlen(parts[1]), &host, 0) &&
				     parse_port_num(parts[2], strlen(parts[2]), &cont, 1);
				if (ok && !ipv4_allowed(ip, publish_address)) {
					yajl_gen_free(g);
					cm_err_set(err, 400, "validation_error", "FORBIDDEN_OPTION", "ports",
						   "ports[%zu]: \"%.64s\" is not an address ports may be published on here (loopback or %s)",
						   i, ip, publish_address);
					return NULL;
				}
			} else if (ok && np == 2) {
				ok = parse_port_num(parts[0], strlen(parts[0]), &host, 0) &&
				     parse_port_num(parts[1], strlen(parts[1]), &cont, 1);
			} else if (ok && np == 1) {
				ok = parse_port_num(parts[0], strlen(parts[0]), &cont, 1);
			}
		}
		/* as for the REST API: no privileged host ports */
		if (ok && host != 0 && host < 1024)
			ok = false;
		if (!ok) {
			yajl_gen_free(g);
			cm_err_validation(err, "INVALID_VALUE", "ports",
					  "ports[%zu]: expected [host, container], \"host:container\", \"ip:host:container\" or "
					  "a container port, with host 0 (any free port) or 1024-65535 and container 1-65535",
					  i);
			return NULL;
		}
		for (size_t j = 0; j < i; j++)
			if (seen[j] == cont && !strcmp(seen_proto[j], proto)) {
				yajl_gen_free(g);
				cm_err_validation(err, "DUPLICATE_PORT", "ports", "ports[%zu]: container port %ld/%s is given twice", i,
						  cont, proto);
				return NULL;
			}
		seen[i] = cont;
		snprintf(seen_proto[i], sizeof seen_proto[i], "%s", proto);
		yajl_gen_map_open(g);
		cm_jg_kv_str(g, "ip", ip);
		cm_jg_kv_int(g, "host", host);
		cm_jg_kv_int(g, "container", cont);
		cm_jg_kv_str(g, "protocol", proto);
		yajl_gen_map_close(g);
	}
	yajl_gen_array_close(g);
	char *out = cm_jg_finish(g);
	if (!out)
		cm_err_internal(err, "out of memory");
	return out;
}

int cm_harpoon_body(const char *body, size_t len, bool start, const char *publish_address, struct cm_harpoon_body *r,
		    struct cm_error *err)
{
	memset(r, 0, sizeof *r);
	yajl_val v = cm_json_parse(body ? body : "", len, err);
	if (!v)
		return -1;
	int rc = 0;
	if (!YAJL_IS_OBJECT(v)) {
		rc = cm_err_validation(err, "INVALID_JSON", NULL, "the body must be a JSON object such as {\"image\": \"name\"}");
		goto out;
	}
		for (size_t i = 0; i < v->u.object.len; i++) {
		const char *k = v->u.object.keys[i];
		yajl_val x = v->u.object.values[i];
		if (!strcmp(k, "image")) {
			if (!YAJL_IS_STRING(x) || !*YAJL_GET_STRING(x)) {
				rc = cm_err_validation(err, "INVALID_VALUE", "image", "image must be the name of an image definition");
				goto out;
			}
			if (!cm_imagedef_valid_name(YAJL_GET_STRING(x))) {
				rc = cm_err_validation(err, "INVALID_VALUE", "image",
						       "\"%.64s\" is not a definition name (a-z 0-9 _ . -, at most 63)", YAJL_GET_STRING(x));
				goto out;
			}
			snprintf(r->image, sizeof r->image, "%s", YAJL_GET_STRING(x));
		} else if (!strcmp(k, "ports") && start) {
			r->has_ports = true;
			if (!(r->ports = parse_ports(x, publish_address, err))) {
				rc = -1;
				goto out;
			}
		} else if (!strcmp(k, "lock") && start) {
			if (!YAJL_IS_TRUE(x) && !YAJL_IS_FALSE(x)) {
				rc = cm_err_validation(err, "INVALID_VALUE", "lock", "lock must be true or false");
				goto out;
			}
			r->lock = YAJL_IS_TRUE(x);
		} else if (!strcmp(k, "lock_timeout") && start) {
			if (YAJL_IS_NULL(x))
				continue;
			double d = YAJL_IS_NUMBER(x) ? YAJL_GET_DOUBLE(x) : -1;
			if (!(d > 0 && d <= 86400 * 7)) {
				rc = cm_err_validation(err, "INVALID_VALUE", "lock_timeout",
						       "lock_timeout must be a number of seconds (0 < t <= 604800)");
				goto out;
			}
			r->lock_timeout = d;
		} else {
			rc = cm_err_validation(err, "UNKNOWN_FIELD", k, "unknown field \"%.64s\" (this endpoint takes %s)", k,
					       start ? "image, ports, lock, lock_timeout" : "image");
			goto out;
		}
	}
	if (!r->image[0]) {
		rc = cm_err_validation(err, "MISSING_FIELD", "image", "image is required");
		goto out;
	}
	if (start && !r->has_ports) {
		rc = cm_err_validation(err, "MISSING_FIELD", "ports", "ports is required, e.g. [[0, 4545]] (or [] for none)");
		goto out;
	}
	if (!r->lock)
		r->lock_timeout = 0;
out:
	yajl_tree_free(v);
	if (rc < 0) {
		free(r->ports);
		r->ports = NULL;
	}
	return rc;
}
