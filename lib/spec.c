/* spec.c: container spec validation. Everything a request may set is listed here;
 * anything else is refused, and Docker options that weaken isolation are named as forbidden. */
#include "config.h"
#include "spec.h"
#include "bindpath.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_ENV 256
#define MAX_ENV_VALUE 32768
#define MAX_TAGS 32
#define MAX_TAG_LEN 64
#define MAX_PORTS 64
#define MAX_CMD_ARGS 256
#define MAX_CMD_ARG 4096

/* Options some clients try to pass straight to Docker; compared case-insensitively
 * with '_' and '-' removed. They are never accepted from requests. */
static const char *const forbidden[] = {
	"privileged", "capadd", "capabilities", "networkmode", "network", "networks", "pidmode", "pid",
	"ipcmode", "ipc", "utsmode", "uts", "usernsmode", "userns", "devices", "devicecgrouprules",
	"securityopt", "securityopts", "sysctls", "cgroupparent", "cgroupns", "cgroupnsmode", "runtime",
	"binds", "mounts", "volumesfrom", "tmpfs", "user", "groupadd", "hostconfig",
	"oomkilldisable", "oomscoreadj", "capdrop", "readonlyrootfs", "extrahosts", "dns", "init",
	"restartpolicy", "logconfig", "labels", "entrypoint", "workingdir", "hostname", "shmsize",
	"ulimits", "deviceRequests", "cpuset", "cpusetcpus", "isolation", "links", "name",
};

static bool is_forbidden(const char *key)
{
	char norm[64];
	size_t o = 0;
	for (const char *p = key; *p && o + 1 < sizeof norm; p++)
		if (*p != '_' && *p != '-')
			norm[o++] = (char)tolower((unsigned char)*p);
	norm[o] = '\0';
	for (size_t i = 0; i < CM_ARRAY_LEN(forbidden); i++) {
		char f[64];
		size_t k = 0;
		for (const char *p = forbidden[i]; *p && k + 1 < sizeof f; p++)
			f[k++] = (char)tolower((unsigned char)*p);
		f[k] = '\0';
		if (!strcmp(norm, f))
			return true;
	}
	return false;
}

static int type_error(struct cm_error *err, const char *field, const char *want)
{
	return cm_err_validation(err, "INVALID_TYPE", field, "%s must be %s", field, want);
}

void cm_spec_free(struct cm_spec *s)
{
	free(s->image);
	free(s->command);
	free(s->env);
	free(s->tags);
	free(s->ports);
	free(s->volumes);
	memset(s, 0, sizeof *s);
}

double cm_spec_max_cpus(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	return n > 0 ? (double)n : 1.0;
}

static int check_image(yajl_val v, char **out, struct cm_error *err)
{
	if (!v || YAJL_IS_NULL(v))
		return cm_err_validation(err, "MISSING_IMAGE", "image", "Image is required");
	if (!YAJL_IS_STRING(v))
		return type_error(err, "image", "a string");
	const char *s = v->u.string;
	size_t n = strlen(s);
	if (n == 0)
		return cm_err_validation(err, "MISSING_IMAGE", "image", "Image is required");
	if (n > 255)
		return cm_err_validation(err, "INVALID_VALUE", "image", "image reference is longer than 255 characters");
	if (!isalnum((unsigned char)s[0]))
		return cm_err_validation(err, "INVALID_VALUE", "image", "image reference must start with a letter or digit");
	for (const char *p = s; *p; p++) {
		if (!isalnum((unsigned char)*p) && !strchr("._-/:@", *p))
			return cm_err_validation(err, "INVALID_VALUE", "image",
						 "image reference contains an invalid character");
	}
	*out = strdup(s);
	return *out ? 0 : cm_err_internal(err, "out of memory");
}

static bool valid_cmd_arg(const char *s)
{
	size_t n = strlen(s);
	return n <= MAX_CMD_ARG;
}

/* A string command runs under /bin/sh -c, as Docker's shell form does. */
static int command_from_string(const char *s, char **out, struct cm_error *err)
{
	if (!*s)
		return cm_err_validation(err, "INVALID_VALUE", "command", "command must not be empty");
	if (!valid_cmd_arg(s))
		return cm_err_validation(err, "INVALID_VALUE", "command", "command is too long");
	yajl_gen g = cm_jg_new();
	if (!g)
		return cm_err_internal(err, "out of memory");
	yajl_gen_array_open(g);
	cm_jg_str(g, "/bin/sh");
	cm_jg_str(g, "-c");
	if (cm_jg_str(g, s) < 0) {
		yajl_gen_free(g);
		return cm_err_validation(err, "INVALID_UTF8", "command", "command is not valid UTF-8");
	}
	yajl_gen_array_close(g);
	*out = cm_jg_finish(g);
	return *out ? 0 : cm_err_internal(err, "out of memory");
}

static int check_command(yajl_val v, char **out, struct cm_error *err)
{
	if (YAJL_IS_STRING(v))
		return command_from_string(v->u.string, out, err);
	if (!YAJL_IS_ARRAY(v))
		return type_error(err, "command", "a string or an array of strings");
	size_t n = v->u.array.len;
	if (n == 0)
		return cm_err_validation(err, "INVALID_VALUE", "command", "command must not be empty");
	if (n > MAX_CMD_ARGS)
		return cm_err_validation(err, "INVALID_VALUE", "command", "command has more than %d arguments",
					 MAX_CMD_ARGS);
	yajl_gen g = cm_jg_new();
	if (!g)
		return cm_err_internal(err, "out of memory");
	yajl_gen_array_open(g);
	for (size_t i = 0; i < n; i++) {
		yajl_val a = v->u.array.values[i];
		char field[32];
		snprintf(field, sizeof field, "command[%zu]", i);
		if (!YAJL_IS_STRING(a)) {
			yajl_gen_free(g);
			return type_error(err, field, "a string");
		}
		if (!valid_cmd_arg(a->u.string)) {
			yajl_gen_free(g);
			return cm_err_validation(err, "INVALID_VALUE", field, "%s is too long", field);
		}
		cm_jg_str(g, a->u.string);
	}
	yajl_gen_array_close(g);
	*out = cm_jg_finish(g);
	return *out ? 0 : cm_err_internal(err, "out of memory");
}

static bool valid_env_name(const char *k)
{
	size_t n = strlen(k);
	if (n == 0 || n > 256 || !(isalpha((unsigned char)k[0]) || k[0] == '_'))
		return false;
	for (const char *p = k; *p; p++)
		if (!(isalnum((unsigned char)*p) || *p == '_'))
			return false;
	return true;
}

/* Merges patch (an object of string|null, or a full object when base is NULL) into base. */
static int check_env(yajl_val base, yajl_val v, bool allow_null, char **out, struct cm_error *err)
{
	if (!YAJL_IS_OBJECT(v))
		return type_error(err, "env", "an object of strings");
	char field[300];
	for (size_t i = 0; i < v->u.object.len; i++) {
		const char *k = v->u.object.keys[i];
		yajl_val val = v->u.object.values[i];
		snprintf(field, sizeof field, "env.%.256s", k);
		if (!valid_env_name(k))
			return cm_err_validation(err, "INVALID_ENV_NAME", field,
						 "environment variable names must match [A-Za-z_][A-Za-z0-9_]* (got '%.64s')", k);
		if (!strcmp(k, "CONTAINER_UID") || !strcmp(k, "TAGS"))
			return cm_err_validation(err, "RESERVED_ENV_NAME", field, "%s is set by the service", k);
		if (YAJL_IS_NULL(val)) {
			if (!allow_null)
				return type_error(err, field, "a string");
			continue;
		}
		if (!YAJL_IS_STRING(val))
			return type_error(err, field, allow_null ? "a string or null" : "a string");
		if (strlen(val->u.string) > MAX_ENV_VALUE)
			return cm_err_validation(err, "INVALID_VALUE", field, "%s is longer than %d bytes", field,
						 MAX_ENV_VALUE);
	}
	yajl_gen g = cm_jg_new();
	if (!g)
		return cm_err_internal(err, "out of memory");
	yajl_gen_map_open(g);
	size_t count = 0;
	if (base) {
		for (size_t i = 0; i < base->u.object.len; i++) {
			const char *k = base->u.object.keys[i];
			if (cm_json_get(v, k))
				continue; /* replaced or removed by the patch */
			cm_jg_str(g, k);
			cm_jg_value(g, base->u.object.values[i]);
			count++;
		}
	}
	for (size_t i = 0; i < v->u.object.len; i++) {
		if (YAJL_IS_NULL(v->u.object.values[i]))
			continue;
		cm_jg_str(g, v->u.object.keys[i]);
		cm_jg_str(g, v->u.object.values[i]->u.string);
		count++;
	}
	yajl_gen_map_close(g);
	if (count > MAX_ENV) {
		yajl_gen_free(g);
		return cm_err_validation(err, "INVALID_VALUE", "env", "at most %d environment variables", MAX_ENV);
	}
	*out = cm_jg_finish(g);
	return *out ? 0 : cm_err_internal(err, "out of memory");
}

bool cm_spec_valid_tag(const char *t)
{
	size_t n = strlen(t);
	if (n == 0 || n > MAX_TAG_LEN || !isalnum((unsigned char)t[0]))
		return false;
	for (const char *p = t; *p; p++)
		if (!isalnum((unsigned char)*p) && !strchr("_.:/-", *p))
			return false;
	return true;
}

static int check_tags(yajl_val v, char **out, struct cm_error *err)
{
	if (!YAJL_IS_ARRAY(v))
		return type_error(err, "tags", "an array of strings");
	size_t n = v->u.array.len;
	if (n > MAX_TAGS)
		return cm_err_validation(err, "INVALID_VALUE", "tags", "at most %d tags", MAX_TAGS);
	char field[32];
	for (size_t i = 0; i < n; i++) {
		yajl_val t = v->u.array.values[i];
		snprintf(field, sizeof field, "tags[%zu]", i);
		if (!YAJL_IS_STRING(t))
			return type_error(err, field, "a string");
		if (!cm_spec_valid_tag(t->u.string))
			return cm_err_validation(err, "INVALID_TAG", field,
						 "tags are 1-%d characters of letters, digits and _.:/- starting with a letter or digit",
						 MAX_TAG_LEN);
		for (size_t j = 0; j < i; j++)
			if (!strcmp(v->u.array.values[j]->u.string, t->u.string))
				return cm_err_validation(err, "DUPLICATE_TAG", field, "tag '%s' is given twice", t->u.string);
	}
	yajl_gen g = cm_jg_new();
	if (!g)
		return cm_err_internal(err, "out of memory");
	yajl_gen_array_open(g);
	for (size_t i = 0; i < n; i++)
		cm_jg_str(g, v->u.array.values[i]->u.string);
	yajl_gen_array_close(g);
	*out = cm_jg_finish(g);
	return *out ? 0 : cm_err_internal(err, "out of memory");
}

/* Resources: sets only the members present; null resets to the configured default. */
static int check_resources(const struct cm_config *cfg, yajl_val v, struct cm_spec *s, struct cm_error *err)
{
	if (!YAJL_IS_OBJECT(v))
		return type_error(err, "resources", "an object");
	for (size_t i = 0; i < v->u.object.len; i++) {
		const char *k = v->u.object.keys[i];
		yajl_val val = v->u.object.values[i];
		char field[160];
		snprintf(field, sizeof field, "resources.%.128s", k);
		if (!strcmp(k, "cpus")) {
			if (YAJL_IS_NULL(val)) {
				s->cpus = cfg->default_cpus;
				continue;
			}
			if (!YAJL_IS_NUMBER(val))
				return type_error(err, field, "a number");
			double c = YAJL_GET_DOUBLE(val);
			double max = cm_spec_max_cpus();
			if (!(c >= 0.01) || c > max || isnan(c))
				return cm_err_validation(err, "INVALID_VALUE", field,
							 "cpus must be between 0.01 and %.0f (the host's CPUs)", max);
			s->cpus = c;
		} else if (!strcmp(k, "memory")) {
			int64_t m;
			if (YAJL_IS_NULL(val)) {
				s->memory = cfg->default_memory;
				continue;
			}
			if (YAJL_IS_STRING(val)) {
				if (cm_parse_size(val->u.string, &m) < 0)
					return cm_err_validation(err, "INVALID_SIZE", field,
								 "memory must be a size such as \"512m\", \"4096m\" or \"1g\"");
			} else if (YAJL_IS_INTEGER(val)) {
				m = YAJL_GET_INTEGER(val);
			} else {
				return type_error(err, field, "a size string or an integer number of bytes");
			}
			if (m < (6LL << 20) || m > (1LL << 42))
				return cm_err_validation(err, "INVALID_VALUE", field, "memory must be between 6m and 4096g");
			s->memory = m;
		} else if (!strcmp(k, "pids")) {
			if (YAJL_IS_NULL(val)) {
				s->pids = cfg->default_pids;
				continue;
			}
			if (!YAJL_IS_INTEGER(val))
				return type_error(err, field, "an integer");
			long long p = YAJL_GET_INTEGER(val);
			if (p < 1 || p > 4194304)
				return cm_err_validation(err, "INVALID_VALUE", field, "pids must be between 1 and 4194304");
			s->pids = p;
		} else if (is_forbidden(k)) {
			return cm_err_validation(err, "FORBIDDEN_OPTION", field, "%s cannot be set through this API", field);
		} else {
			return cm_err_validation(err, "UNKNOWN_FIELD", field, "unknown field %s", field);
		}
	}
	return 0;
}

int cm_spec_ports(yajl_val v, char **out, struct cm_error *err)
{
	if (!YAJL_IS_ARRAY(v))
		return type_error(err, "ports", "an array of {host, container, protocol} objects");
	size_t n = v->u.array.len;
	if (n > MAX_PORTS)
		return cm_err_validation(err, "INVALID_VALUE", "ports", "at most %d ports", MAX_PORTS);
	int hosts[MAX_PORTS], conts[MAX_PORTS];
	bool udp[MAX_PORTS];
	char field[64];
	for (size_t i = 0; i < n; i++) {
		yajl_val p = v->u.array.values[i];
		snprintf(field, sizeof field, "ports[%zu]", i);
		if (!YAJL_IS_OBJECT(p))
			return type_error(err, field, "an object");
		long long host = 0, cont = -1;
		bool is_udp = false;
		for (size_t k = 0; k < p->u.object.len; k++) {
			const char *key = p->u.object.keys[k];
			yajl_val val = p->u.object.values[k];
			snprintf(field, sizeof field, "ports[%zu].%.32s", i, key);
			if (!strcmp(key, "host")) {
				if (YAJL_IS_NULL(val))
					continue;
				if (!YAJL_IS_INTEGER(val))
					return type_error(err, field, "an integer");
				host = YAJL_GET_INTEGER(val);
				if (host != 0 && (host < 1024 || host > 65535))
					return cm_err_validation(err, "INVALID_PORT", field,
								 "host port must be 0 (ephemeral) or 1024-65535");
			} else if (!strcmp(key, "container")) {
				if (!YAJL_IS_INTEGER(val))
					return type_error(err, field, "an integer");
				cont = YAJL_GET_INTEGER(val);
				if (cont < 1 || cont > 65535)
					return cm_err_validation(err, "INVALID_PORT", field, "container port must be 1-65535");
			} else if (!strcmp(key, "protocol")) {
				if (!YAJL_IS_STRING(val))
					return type_error(err, field, "\"tcp\" or \"udp\"");
				if (!strcmp(val->u.string, "udp"))
					is_udp = true;
				else if (strcmp(val->u.string, "tcp"))
					return cm_err_validation(err, "INVALID_VALUE", field, "protocol must be \"tcp\" or \"udp\"");
			} else if (!strcmp(key, "host_ip") || !strcmp(key, "HostIp")) {
				return cm_err_validation(err, "FORBIDDEN_OPTION", field,
							 "the publish address is set by the service (PUBLISH_ADDRESS)");
			} else {
				return cm_err_validation(err, "UNKNOWN_FIELD", field, "unknown field %s", field);
			}
		}
		if (cont < 0) {
			snprintf(field, sizeof field, "ports[%zu].container", i);
			return cm_err_validation(err, "MISSING_FIELD", field, "%s is required", field);
		}
		for (size_t j = 0; j < i; j++) {
			if (udp[j] == is_udp && conts[j] == cont) {
				snprintf(field, sizeof field, "ports[%zu].container", i);
				return cm_err_validation(err, "DUPLICATE_PORT", field, "container port %lld/%s is given twice",
							 cont, is_udp ? "udp" : "tcp");
			}
			if (udp[j] == is_udp && host != 0 && hosts[j] == host) {
				snprintf(field, sizeof field, "ports[%zu].host", i);
				return cm_err_validation(err, "DUPLICATE_PORT", field, "host port %lld/%s is given twice",
							 host, is_udp ? "udp" : "tcp");
			}
		}
		hosts[i] = (int)host;
		conts[i] = (int)cont;
		udp[i] = is_udp;
	}
	yajl_gen g = cm_jg_new();
	if (!g)
		return cm_err_internal(err, "out of memory");
	yajl_gen_array_open(g);
	for (size_t i = 0; i < n; i++) {
		yajl_gen_map_open(g);
		cm_jg_kv_int(g, "host", hosts[i]);
		cm_jg_kv_int(g, "container", conts[i]);
		cm_jg_kv_str(g, "protocol", udp[i] ? "udp" : "tcp");
		yajl_gen_map_close(g);
	}
	yajl_gen_array_close(g);
	*out = cm_jg_finish(g);
	return *out ? 0 : cm_err_internal(err, "out of memory");
}

static int replace(char **dst, char *src)
{
	free(*dst);
	*dst = src;
	return 0;
}

int cm_spec_from_create(const struct cm_config *cfg, yajl_val req, struct cm_spec *s, struct cm_error *err)
{
	memset(s, 0, sizeof *s);
	if (!YAJL_IS_OBJECT(req))
		return cm_err_validation(err, "INVALID_TYPE", NULL, "request body must be a JSON object");
	for (size_t i = 0; i < req->u.object.len; i++) {
		const char *k = req->u.object.keys[i];
		if (!strcmp(k, "image") || !strcmp(k, "env") || !strcmp(k, "tags") || !strcmp(k, "resources") ||
		    !strcmp(k, "ports") || !strcmp(k, "command") || !strcmp(k, "volumes"))
			continue;
		if (is_forbidden(k))
			return cm_err_validation(err, "FORBIDDEN_OPTION", k, "%.64s cannot be set through this API", k);
		return cm_err_validation(err, "UNKNOWN_FIELD", k, "unknown field %.64s", k);
	}
	s->cpus = cfg->default_cpus;
	s->memory = cfg->default_memory;
	s->pids = cfg->default_pids;
	yajl_val v;
	char *tmp = NULL;
	if (check_image(cm_json_get(req, "image"), &s->image, err) < 0)
		goto fail;
	v = cm_json_get(req, "command");
	if (v && !YAJL_IS_NULL(v)) {
		if (check_command(v, &s->command, err) < 0)
			goto fail;
	} else if (command_from_string(cfg->boot_command, &s->command, err) < 0) {
		goto fail;
	}
	v = cm_json_get(req, "env");
	if (v && !YAJL_IS_NULL(v)) {
		if (check_env(NULL, v, false, &s->env, err) < 0)
			goto fail;
	} else {
		s->env = strdup("{}");
	}
	v = cm_json_get(req, "tags");
	if (v && !YAJL_IS_NULL(v)) {
		if (check_tags(v, &s->tags, err) < 0)
			goto fail;
	} else {
		s->tags = strdup("[]");
	}
	v = cm_json_get(req, "resources");
	if (v && !YAJL_IS_NULL(v) && check_resources(cfg, v, s, err) < 0)
		goto fail;
	v = cm_json_get(req, "ports");
	if (v && !YAJL_IS_NULL(v)) {
		if (cm_spec_ports(v, &tmp, err) < 0)
			goto fail;
		replace(&s->ports, tmp);
	} else {
		s->ports = strdup("[]");
	}
	v = cm_json_get(req, "volumes");
	if (v && !YAJL_IS_NULL(v)) {
		if (cm_spec_volumes(cfg, v, &tmp, err) < 0)
			goto fail;
		replace(&s->volumes, tmp);
	} else {
		s->volumes = strdup("[]");
	}
	if (!s->env || !s->tags || !s->ports || !s->volumes) {
		cm_err_internal(err, "out of memory");
		goto fail;
	}
	return 0;
fail:
	cm_spec_free(s);
	return -1;
}

int cm_spec_apply_patch(const struct cm_config *cfg, struct cm_spec *s, yajl_val patch, unsigned *changed,
			struct cm_error *err)
{
	*changed = 0;
	if (!YAJL_IS_OBJECT(patch))
		return cm_err_validation(err, "INVALID_TYPE", NULL, "request body must be a JSON object");
	for (size_t i = 0; i < patch->u.object.len; i++) {
		const char *k = patch->u.object.keys[i];
		if (!strcmp(k, "image") || !strcmp(k, "env") || !strcmp(k, "tags") || !strcmp(k, "resources") ||
		    !strcmp(k, "command") || !strcmp(k, "volumes"))
			continue;
		if (!strcmp(k, "ports"))
			return cm_err_validation(err, "UNKNOWN_FIELD", k, "ports are changed with PATCH /containers/{cuid}/ports");
		if (is_forbidden(k))
			return cm_err_validation(err, "FORBIDDEN_OPTION", k, "%.64s cannot be set through this API", k);
		return cm_err_validation(err, "UNKNOWN_FIELD", k, "unknown field %.64s", k);
	}
	yajl_val v;
	char *tmp = NULL;
	if ((v = cm_json_get(patch, "image"))) {
		if (check_image(v, &tmp, err) < 0)
			return -1;
		if (strcmp(tmp, s->image))
			*changed |= CM_CHANGED_IMAGE;
		replace(&s->image, tmp);
	}
	if ((v = cm_json_get(patch, "command"))) {
		if (YAJL_IS_NULL(v)) {
			if (command_from_string(cfg->boot_command, &tmp, err) < 0)
				return -1;
		} else if (check_command(v, &tmp, err) < 0) {
			return -1;
		}
		if (strcmp(tmp, s->command))
			*changed |= CM_CHANGED_COMMAND;
		replace(&s->command, tmp);
	}
	if ((v = cm_json_get(patch, "env"))) {
		struct cm_error perr;
		yajl_val base = cm_json_parse(s->env, strlen(s->env), &perr);
		if (!base)
			return cm_err_internal(err, "stored env is corrupt");
		int r = check_env(base, v, true, &tmp, err);
		yajl_tree_free(base);
		if (r < 0)
			return -1;
		if (strcmp(tmp, s->env))
			*changed |= CM_CHANGED_ENV;
		replace(&s->env, tmp);
	}
	if ((v = cm_json_get(patch, "tags"))) {
		if (YAJL_IS_NULL(v)) {
			tmp = strdup("[]");
			if (!tmp)
				return cm_err_internal(err, "out of memory");
		} else if (check_tags(v, &tmp, err) < 0) {
			return -1;
		}
		if (strcmp(tmp, s->tags))
			*changed |= CM_CHANGED_TAGS;
		replace(&s->tags, tmp);
	}
	if ((v = cm_json_get(patch, "volumes"))) {
		if (YAJL_IS_NULL(v)) {
			tmp = strdup("[]");
			if (!tmp)
				return cm_err_internal(err, "out of memory");
		} else if (cm_spec_volumes(cfg, v, &tmp, err) < 0) {
			return -1;
		}
		if (!s->volumes || strcmp(tmp, s->volumes))
			*changed |= CM_CHANGED_VOLUMES;
		replace(&s->volumes, tmp);
	}
	if ((v = cm_json_get(patch, "resources")) && !YAJL_IS_NULL(v)) {
		double c = s->cpus;
		int64_t m = s->memory, p = s->pids;
		if (check_resources(cfg, v, s, err) < 0)
			return -1;
		if (c != s->cpus || m != s->memory || p != s->pids)
			*changed |= CM_CHANGED_RESOURCES;
	}
	return 0;
}

char *cm_spec_tags_csv(const char *tags_json)
{
	struct cm_error err;
	yajl_val v = cm_json_parse(tags_json, strlen(tags_json), &err);
	struct cm_buf b = {0};
	if (cm_buf_puts(&b, "") < 0)
		goto out;
	if (YAJL_IS_ARRAY(v)) {
		for (size_t i = 0; i < v->u.array.len; i++) {
			const char *t = YAJL_GET_STRING(v->u.array.values[i]);
			if (t && (cm_buf_puts(&b, i ? "," : "") < 0 || cm_buf_puts(&b, t) < 0))
				break;
		}
	}
out:
	if (v)
		yajl_tree_free(v);
	return b.data;
}

/* One path component of an image name: lower-case letters and digits, with '.', '_' or '-'
 * inside (not at either end, no "..", at most two '_' in a row). */
static bool valid_name_component(const char *s, size_t n)
{
	if (!n || !(islower((unsigned char)s[0]) || isdigit((unsigned char)s[0])) ||
	    !(islower((unsigned char)s[n - 1]) || isdigit((unsigned char)s[n - 1])))
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (!(islower(c) || isdigit(c) || c == '.' || c == '_' || c == '-'))
			return false;
		if (c == '.' && s[i + 1] == '.')
			return false;
		if (c == '_' && i + 2 < n && s[i + 1] == '_' && s[i + 2] == '_')
			return false;
	}
	return true;
}

static bool all_hex(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!isxdigit((unsigned char)s[i]) || isupper((unsigned char)s[i]))
			return false;
	return n > 0;
}

bool cm_valid_image_ref(const char *s, bool tag_only)
{
	size_t n = s ? strlen(s) : 0;
	if (n == 0 || n > 255)
		return false;
	if (!strncmp(s, "sha256:", 7))
		return !tag_only && n == 71 && all_hex(s + 7, 64);
	if (!tag_only && n >= 12 && n <= 64 && all_hex(s, n))
		return true;
	const char *at = strchr(s, '@');
	size_t end = n;
	if (at) {
		if (tag_only || strncmp(at, "@sha256:", 8) || strlen(at + 8) != 64 || !all_hex(at + 8, 64))
			return false;
		end = (size_t)(at - s);
	}
	/* the tag: after the last ':' that follows the last '/' */
	const char *slash = NULL;
	for (size_t i = 0; i < end; i++)
		if (s[i] == '/')
			slash = s + i;
	const char *colon = NULL;
	for (const char *p = slash ? slash : s; p < s + end; p++)
		if (*p == ':')
			colon = p;
	size_t name_end = colon ? (size_t)(colon - s) : end;
	if (colon) {
		size_t tl = end - name_end - 1;
		const char *t = colon + 1;
		if (tl == 0 || tl > 128 || !(isalnum((unsigned char)t[0]) || t[0] == '_'))
			return false;
		for (size_t i = 0; i < tl; i++)
			if (!(isalnum((unsigned char)t[i]) || t[i] == '_' || t[i] == '.' || t[i] == '-'))
				return false;
	}
	/* components; the first may be a registry host[:port] when more follow */
	size_t start = 0;
	bool first = true;
	while (start <= name_end) {
		size_t stop = start;
		while (stop < name_end && s[stop] != '/')
			stop++;
		bool more = stop < name_end;
		const char *c = s + start;
		size_t cl = stop - start;
		if (first && more && (memchr(c, '.', cl) || memchr(c, ':', cl) || (cl == 9 && !strncmp(c, "localhost", 9)))) {
			/* host[:port] */
			const char *pc = memchr(c, ':', cl);
			size_t hl = pc ? (size_t)(pc - c) : cl;
			if (!hl || !isalnum((unsigned char)c[0]) || !isalnum((unsigned char)c[hl - 1]))
				return false;
			for (size_t i = 0; i < hl; i++)
				if (!(isalnum((unsigned char)c[i]) || c[i] == '.' || c[i] == '-') || (c[i] == '.' && c[i + 1] == '.'))
					return false;
			size_t pl = pc ? cl - hl - 1 : 0;
			if (pc && (pl == 0 || pl > 5 || strspn(pc + 1, "0123456789") < pl || atol(pc + 1) > 65535))
				return false;
		} else if (!valid_name_component(c, cl)) {
			return false;
		}
		first = false;
		if (!more)
			break;
		start = stop + 1;
	}
	return true;
}

bool cm_valid_app_name(const char *s)
{
	size_t n = s ? strlen(s) : 0;
	if (n < 1 || n > 63 || !((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= '0' && s[0] <= '9')))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
			return false;
	return true;
}

bool cm_volume_is_ours(yajl_val inspect, const char *instance)
{
	const char *inst = cm_json_get_str(cm_json_get(inspect, "Labels"), "io.container-manager.instance");
	return inst && instance && *instance && !strcmp(inst, instance);
}

bool cm_valid_volume_name(const char *s)
{
	size_t n = s ? strlen(s) : 0;
	if (n < 2 || n > 255 || !isalnum((unsigned char)s[0]))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!(isalnum((unsigned char)s[i]) || s[i] == '_' || s[i] == '.' || s[i] == '-'))
			return false;
	return true;
}

/* A clean absolute container path into out (no "..", no "//", no trailing "/"). */
static int clean_target(const char *t, char *out, size_t outsz, const char *field, struct cm_error *err)
{
	size_t n = strlen(t);
	if (t[0] != '/')
		return cm_err_validation(err, "INVALID_VALUE", field, "target must be an absolute path in the container");
	if (n >= outsz || n > 255)
		return cm_err_validation(err, "INVALID_VALUE", field, "target is longer than 255 bytes");
	size_t o = 0;
	for (const char *p = t; *p;) {
		while (*p == '/')
			p++;
		if (!*p)
			break;
		size_t l = strcspn(p, "/");
		if ((l == 1 && p[0] == '.') || (l == 2 && p[0] == '.' && p[1] == '.'))
			return cm_err_validation(err, "INVALID_VALUE", field, "target must not contain . or .. components");
		out[o++] = '/';
		memcpy(out + o, p, l);
		o += l;
		p += l;
	}
	out[o] = '\0';
	for (size_t i = 0; i < o; i++)
		if ((unsigned char)out[i] < 0x20 || out[i] == ',' || out[i] == ':')
			return cm_err_validation(err, "INVALID_VALUE", field, "target holds a control character, ',' or ':'");
	if (!o)
		return cm_err_validation(err, "INVALID_VALUE", field, "target cannot be / itself");
	if (!strcmp(out, "/app") || !strncmp(out, "/app/", 5))
		return cm_err_validation(err, "INVALID_VALUE", field, "/app is the container's own file area");
	static const char *const system[] = {"/proc", "/sys", "/dev", "/etc"};
	for (size_t i = 0; i < CM_ARRAY_LEN(system); i++) {
		size_t l = strlen(system[i]);
		if (!strncmp(out, system[i], l) && (out[l] == '\0' || out[l] == '/'))
			return cm_err_validation(err, "FORBIDDEN_OPTION", field, "%s cannot be mounted over", system[i]);
	}
	return 0;
}

/* source: an existing host directory (or file) whose real path lies under an allowed root. */
static int bind_source(const struct cm_config *cfg, const char *src, char *out, const char *field, struct cm_error *err)
{
	if (!cfg->bind_roots[0])
		return cm_err_validation(err, "FORBIDDEN_OPTION", field,
					 "host directories cannot be mounted here (no ALLOWED_BIND_ROOTS)");
	if (src[0] != '/' || strlen(src) >= PATH_MAX)
		return cm_err_validation(err, "INVALID_VALUE", field, "source must be an absolute host path");
	char real[PATH_MAX];
	if (!realpath(src, real))
		return cm_err_validation(err, "INVALID_VALUE", field, "source %.200s does not exist", src);
	struct stat st;
	if (stat(real, &st) < 0 || !(S_ISDIR(st.st_mode) || S_ISREG(st.st_mode)))
		return cm_err_validation(err, "FORBIDDEN_OPTION", field, "source must be a directory or a regular file");
	char tmp[sizeof cfg->bind_roots], *save = NULL;
	snprintf(tmp, sizeof tmp, "%s", cfg->bind_roots);
	for (char *r = strtok_r(tmp, ",", &save); r; r = strtok_r(NULL, ",", &save)) {
		while (*r == ' ')
			r++;
		char root[PATH_MAX];
		if (!realpath(r, root))
			continue;
		size_t l = strlen(root);
		if (!strncmp(real, root, l) && (real[l] == '\0' || real[l] == '/')) {
			/* Docker resolves the path again at every start: only a path that no container
			 * and no other host user can change is accepted (bindpath.h) */
			char why[400];
			if (cm_bind_verify(cfg, real, getuid(), why, sizeof why) != CM_BIND_OK)
				return cm_err_validation(err, "FORBIDDEN_OPTION", field, "source %s", why);
			snprintf(out, PATH_MAX, "%s", real);
			return 0;
		}
	}
	return cm_err_validation(err, "FORBIDDEN_OPTION", field, "source %.200s is not under ALLOWED_BIND_ROOTS", src);
}

/* cm_spec_volumes' body; binds[] collects the canonical bind sources (the caller frees them). */
static int spec_volumes(const struct cm_config *cfg, yajl_val v, char **out, char *binds[32], struct cm_error *err)
{
	if (!YAJL_IS_ARRAY(v))
		return type_error(err, "volumes", "an array of {name, target, read_only} or {source, target, read_only}");
	if (v->u.array.len > 32)
		return cm_err_validation(err, "INVALID_VALUE", "volumes", "at most 32 volumes");
	yajl_gen g = cm_jg_new();
	if (!g)
		return cm_err_internal(err, "out of memory");
	char targets[32][256];
	bool bind_rw[32] = {0}; /* with binds[]: to refuse a source that a writable other could swap */
	yajl_gen_array_open(g);
	for (size_t i = 0; i < v->u.array.len; i++) {
		yajl_val m = v->u.array.values[i];
		char field[48];
		snprintf(field, sizeof field, "volumes[%zu]", i);
		if (YAJL_IS_STRING(m)) {
			/* Docker's "src:dst" strings would smuggle host paths past the checks below */
			yajl_gen_free(g);
			return cm_err_validation(err, "FORBIDDEN_OPTION", "volumes",
						 "volumes take objects {name, target} or {source, target} (source under "
						 "ALLOWED_BIND_ROOTS), not Docker's \"src:dst\" strings");
		}
		if (!YAJL_IS_OBJECT(m)) {
			yajl_gen_free(g);
			return type_error(err, field, "an object {name, target, read_only} or {source, target, read_only}");
		}
		const char *name = NULL, *source = NULL, *target = NULL;
		bool ro = false;
		for (size_t k = 0; k < m->u.object.len; k++) {
			const char *key = m->u.object.keys[k];
			yajl_val x = m->u.object.values[k];
			char f2[64];
			snprintf(f2, sizeof f2, "%s.%s", field, key);
			const char **slot = !strcmp(key, "name") ? &name : !strcmp(key, "source") ? &source :
					    !strcmp(key, "target") ? &target : NULL;
			if (slot) {
				if (!YAJL_IS_STRING(x)) {
					yajl_gen_free(g);
					return type_error(err, f2, "a string");
				}
				*slot = x->u.string;
			} else if (!strcmp(key, "read_only")) {
				if (!YAJL_IS_TRUE(x) && !YAJL_IS_FALSE(x)) {
					yajl_gen_free(g);
					return type_error(err, f2, "true or false");
				}
				ro = YAJL_IS_TRUE(x);
			} else {
				yajl_gen_free(g);
				return cm_err_validation(err, is_forbidden(key) ? "FORBIDDEN_OPTION" : "UNKNOWN_FIELD", f2,
							 "%s: a volume takes name or source, target and read_only", f2);
			}
		}
		char tf[64], clean[4200], src[PATH_MAX];
		snprintf(tf, sizeof tf, "%s.target", field);
		if (!target) {
			yajl_gen_free(g);
			return cm_err_validation(err, "MISSING_FIELD", tf, "%s needs a target", field);
		}
		if (clean_target(target, clean, sizeof clean, tf, err) < 0) {
			yajl_gen_free(g);
			return -1;
		}
		if (strlen(clean) >= sizeof targets[0]) {
			yajl_gen_free(g);
			return cm_err_validation(err, "INVALID_VALUE", tf, "target is too long");
		}
		for (size_t j = 0; j < i; j++)
			if (!strcmp(targets[j], clean)) {
				yajl_gen_free(g);
				return cm_err_validation(err, "DUPLICATE_TARGET", tf, "%s is mounted twice", clean);
			}
		snprintf(targets[i], sizeof targets[i], "%s", clean);
		if ((name != NULL) == (source != NULL)) {
			yajl_gen_free(g);
			return cm_err_validation(err, "INVALID_VALUE", field, "%s needs exactly one of name (a volume) or source (a host path)",
						 field);
		}
		snprintf(tf, sizeof tf, "%s.%s", field, name ? "name" : "source");
		if (name && !cm_valid_volume_name(name)) {
			yajl_gen_free(g);
			return cm_err_validation(err, "INVALID_VALUE", tf, "'%.80s' is not a volume name ([a-zA-Z0-9][a-zA-Z0-9_.-]+)",
						 cm_valid_utf8(name, strlen(name)) ? name : "?");
		}
		if (source && bind_source(cfg, source, src, tf, err) < 0) {
			yajl_gen_free(g);
			return -1;
		}
		if (source) {
			for (size_t j = 0; j < i; j++)
				if (binds[j] && cm_bind_overlap(binds[j], bind_rw[j], src, !ro)) {
					yajl_gen_free(g);
					return cm_err_validation(err, "BIND_OVERLAP", tf,
								 "%s and volumes[%zu] overlap with a writable one above the other "
								 "(a writable mount must not hold another mount's source)",
								 tf, j);
				}
			if (!(binds[i] = strdup(src))) {
				yajl_gen_free(g);
				return cm_err_internal(err, "out of memory");
			}
			bind_rw[i] = !ro;
		}
		yajl_gen_map_open(g);
		cm_jg_kv_str(g, "type", name ? "volume" : "bind");
		cm_jg_kv_str(g, "source", name ? name : src);
		cm_jg_kv_str(g, "target", clean);
		cm_jg_str(g, "read_only");
		cm_jg_bool(g, ro);
		yajl_gen_map_close(g);
	}
	yajl_gen_array_close(g);
	*out = cm_jg_finish(g);
	return *out ? 0 : cm_err_internal(err, "out of memory");
}

int cm_spec_volumes(const struct cm_config *cfg, yajl_val v, char **out, struct cm_error *err)
{
	char *binds[32] = {0};
	int rc = spec_volumes(cfg, v, out, binds, err);
	for (size_t j = 0; j < CM_ARRAY_LEN(binds); j++)
		free(binds[j]);
	return rc;
}
