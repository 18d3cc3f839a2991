/* imagedef.c: the definitions file (YAML via libyaml, or JSON), validation, normalization,
 * and packing a definition's build context with libarchive. */
#include "config.h"
#include "imagedef.h"
#include "json.h"
#include "cm_config.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#define YAML_MAX_NODES 200000 /* aliases are expanded: bounds "billion laughs" documents */
#define YAML_MAX_DEPTH 64
#define INLINE_MAX (16 << 20)  /* inline file contents, all definitions together */

bool cm_imagedef_valid_name(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > CM_IMAGEDEF_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
		if (!alnum && (i == 0 || (c != '_' && c != '.' && c != '-')))
			return false;
	}
	return true;
}

/* ------------------------------------------------------------------ YAML → JSON */

struct y2j {
	yaml_document_t *doc;
	yajl_gen g;
	long nodes;
	struct cm_error *err;
};

static bool json_number(const char *s)
{
	const char *p = s;
	if (*p == '-')
		p++;
	if (*p < '0' || *p > '9')
		return false;
	if (*p == '0' && p[1] >= '0' && p[1] <= '9')
		return false;
	while (*p >= '0' && *p <= '9')
		p++;
	if (*p == '.') {
		p++;
		if (*p < '0' || *p > '9')
			return false;
		while (*p >= '0' && *p <= '9')
			p++;
	}
	if (*p == 'e' || *p == 'E') {
		p++;
		if (*p == '+' || *p == '-')
			p++;
		if (*p < '0' || *p > '9')
			return false;
		while (*p >= '0' && *p <= '9')
			p++;
	}
	return *p == '\0';
}

static int y2j_scalar(struct y2j *y, yaml_node_t *n)
{
	const char *v = (const char *)n->data.scalar.value;
	size_t len = n->data.scalar.length;
	if (strlen(v) != len)
		return cm_err_validation(y->err, "INVALID_DEFINITIONS", NULL, "line %lu: NUL byte in a scalar",
					 (unsigned long)n->start_mark.line + 1);
	if (n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE) {
		/* YAML 1.1 core types, as PyYAML (harpoon) reads them */
		if (len == 0 || !strcmp(v, "~") || !strcmp(v, "null") || !strcmp(v, "Null") || !strcmp(v, "NULL"))
			return yajl_gen_null(y->g) == yajl_gen_status_ok ? 0 : -1;
		static const char *const t[] = {"true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON"};
		static const char *const f[] = {"false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF"};
		for (size_t i = 0; i < CM_ARRAY_LEN(t); i++) {
			if (!strcmp(v, t[i]))
				return cm_jg_bool(y->g, true);
			if (!strcmp(v, f[i]))
				return cm_jg_bool(y->g, false);
		}
		if (json_number(v))
			return yajl_gen_number(y->g, v, len) == yajl_gen_status_ok ? 0 : -1;
	}
	if (!cm_valid_utf8(v, len))
		return cm_err_validation(y->err, "INVALID_DEFINITIONS", NULL, "line %lu: text is not UTF-8",
					 (unsigned long)n->start_mark.line + 1);
	return cm_jg_strn(y->g, v, len);
}

static int y2j_node(struct y2j *y, yaml_node_t *n, int depth)
{
	if (!n)
		return cm_err_validation(y->err, "INVALID_DEFINITIONS", NULL, "broken YAML node");
	if (++y->nodes > YAML_MAX_NODES || depth > YAML_MAX_DEPTH)
		return cm_err_validation(y->err, "INVALID_DEFINITIONS", NULL,
					 "the document is too large or too deep once aliases are expanded");
	switch (n->type) {
	case YAML_SCALAR_NODE:
		return y2j_scalar(y, n);
	case YAML_SEQUENCE_NODE:
		yajl_gen_array_open(y->g);
		for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top; it++)
			if (y2j_node(y, yaml_document_get_node(y->doc, *it), depth + 1) < 0)
				return -1;
		yajl_gen_array_close(y->g);
		return 0;
	case YAML_MAPPING_NODE:
		yajl_gen_map_open(y->g);
		for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
			yaml_node_t *k = yaml_document_get_node(y->doc, p->key);
			if (!k || k->type != YAML_SCALAR_NODE)
				return cm_err_validation(y->err, "INVALID_DEFINITIONS", NULL, "line %lu: keys must be plain text",
							 k ? (unsigned long)k->start_mark.line + 1 : 0UL);
			const char *kv = (const char *)k->data.scalar.value;
			if (strlen(kv) != k->data.scalar.length || !cm_valid_utf8(kv, k->data.scalar.length))
				return cm_err_validation(y->err, "INVALID_DEFINITIONS", NULL, "line %lu: bad key",
							 (unsigned long)k->start_mark.line + 1);
			for (yaml_node_pair_t *q = n->data.mapping.pairs.start; q < p; q++) {
				yaml_node_t *k2 = yaml_document_get_node(y->doc, q->key);
				if (k2 && k2->type == YAML_SCALAR_NODE && !strcmp((const char *)k2->data.scalar.value, kv))
					return cm_err_validation(y->err, "INVALID_DEFINITIONS", NULL,
								 "line %lu: key \"%.64s\" appears twice",
								 (unsigned long)k->start_mark.line + 1, kv);
			}
			cm_jg_strn(y->g, kv, k->data.scalar.length);
			if (y2j_node(y, yaml_document_get_node(y->doc, p->value), depth + 1) < 0)
				return -1;
		}
		yajl_gen_map_close(y->g);
		return 0;
	default:
		return cm_err_validation(y->err, "INVALID_DEFINITIONS", NULL, "empty YAML node");
	}
}

/* Whether flow collections ([...], {...}) nest deeper than YAML_MAX_DEPTH. libyaml spends
 * minutes on ~300,000 nested flow sequences before y2j_node's depth check could see them, so
 * this cheap scan runs first. Quotes and comments are skipped roughly: a miscount can only let
 * a document through to libyaml (which then bounds it), or refuse one whose plain text holds
 * 65 unmatched brackets. */
static bool yaml_flow_too_deep(const char *t, size_t n)
{
	int depth = 0;
	char q = 0;
	for (size_t i = 0; i < n; i++) {
		char c = t[i];
		if (q) {
			if (q == '"' && c == '\\')
				i++;
			else if (c == q && q == '\'' && i + 1 < n && t[i + 1] == '\'')
				i++;
			else if (c == q)
				q = 0;
			continue;
		}
		if (c == '"' || c == '\'') {
			q = c;
		} else if (c == '#' && (i == 0 || t[i - 1] == ' ' || t[i - 1] == '\t' || t[i - 1] == '\n')) {
			while (i + 1 < n && t[i + 1] != '\n')
				i++;
		} else if (c == '[' || c == '{') {
			if (++depth > YAML_MAX_DEPTH)
				return true;
		} else if ((c == ']' || c == '}') && depth > 0) {
			depth--;
		}
	}
	return false;
}

char *cm_yaml_to_json(const char *text, size_t len, struct cm_error *err)
{
	if (yaml_flow_too_deep(text, len)) {
		cm_err_validation(err, "INVALID_DEFINITIONS", NULL, "the document nests deeper than %d levels",
				  YAML_MAX_DEPTH);
		return NULL;
	}
	yaml_parser_t parser;
	yaml_document_t doc;
	if (!yaml_parser_initialize(&parser)) {
		cm_err_internal(err, "cannot initialize the YAML parser");
		return NULL;
	}
	yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
	if (!yaml_parser_load(&parser, &doc)) {
		cm_err_validation(err, "INVALID_DEFINITIONS", NULL, "YAML error at line %lu: %s",
				  (unsigned long)parser.problem_mark.line + 1, parser.problem ? parser.problem : "unreadable");
		yaml_parser_delete(&parser);
		return NULL;
	}
	char *out = NULL;
	yaml_node_t *root = yaml_document_get_root_node(&doc);
	if (!root) {
		cm_err_validation(err, "INVALID_DEFINITIONS", NULL, "the file holds no document");
	} else {
		struct y2j y = {.doc = &doc, .g = cm_jg_new(), .err = err};
		if (!y.g) {
			cm_err_internal(err, "out of memory");
		} else if (y2j_node(&y, root, 0) < 0) {
			if (!err->status)
				cm_err_internal(err, "cannot convert the YAML document");
			yajl_gen_free(y.g);
		} else {
			out = cm_jg_finish(y.g);
			if (!out)
				cm_err_internal(err, "out of memory");
		}
	}
	yaml_document_delete(&doc);
	yaml_parser_delete(&parser);
	return out;
}

/* ------------------------------------------------------------------ validation */

struct norm {
	yajl_gen g;
	const char *name;
	const char *base_dir;
	struct cm_buf dockerfile;
	int ninline;
	size_t inline_bytes;
	bool has_context;
	struct cm_error *err;
};

static int bad(struct norm *nm, const char *where, const char *fmt, const char *arg)
{
	char msg[400];
	snprintf(msg, sizeof msg, fmt, arg ? arg : "");
	return cm_err_validation(nm->err, "INVALID_DEFINITIONS", NULL, "images.%s.%s: %s", nm->name, where, msg);
}

/* A path inside the context: relative, no "..", no empty or "." components at the ends. */
static bool safe_rel(const char *p)
{
	if (!*p || *p == '/' || strlen(p) > 1024)
		return false;
	const char *s = p;
	while (*s) {
		const char *e = strchr(s, '/');
		size_t n = e ? (size_t)(e - s) : strlen(s);
		if (n == 0 || (n == 2 && !strncmp(s, "..", 2)))
			return false;
		s += n;
		if (*s == '/')
			s++;
	}
	return !strchr(p, '\n') && !strchr(p, '\r');
}

static bool one_line(const char *s)
{
	return !strchr(s, '\n') && !strchr(s, '\r');
}

/* Dockerfile JSON form of one argument: ["..."] keeps spaces in a path intact. */
static void quote_arg(struct cm_buf *b, const char *s)
{
	cm_buf_puts(b, "\"");
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			cm_buf_puts(b, "\\");
		cm_buf_append(b, s, 1);
	}
	cm_buf_puts(b, "\"");
}

/* [ADD|COPY, {dest, content|get, mode?}] (or a list of such objects) */
static int file_item(struct norm *nm, const char *where, const char *instr, yajl_val o, yajl_gen inl)
{
	if (!YAJL_IS_OBJECT(o))
		return bad(nm, where, "%s takes an object {dest, content} or {dest, get}", instr);
	const char *dest = NULL, *content = NULL, *get = NULL;
	for (size_t i = 0; i < o->u.object.len; i++) {
		const char *k = o->u.object.keys[i];
		yajl_val v = o->u.object.values[i];
		if (!strcmp(k, "dest") && YAJL_IS_STRING(v))
			dest = YAJL_GET_STRING(v);
		else if (!strcmp(k, "content") && YAJL_IS_STRING(v))
			content = YAJL_GET_STRING(v);
		else if (!strcmp(k, "get") && YAJL_IS_STRING(v))
			get = YAJL_GET_STRING(v);
		else
			return bad(nm, where, "unknown or malformed key \"%.64s\" (dest, content and get are strings)", k);
	}
	if (!dest || !*dest || !one_line(dest))
		return bad(nm, where, "%s needs a one-line \"dest\"", instr);
	if ((content != NULL) == (get != NULL))
		return bad(nm, where, "%s needs exactly one of \"content\" or \"get\"", instr);
	cm_buf_printf(&nm->dockerfile, "%s [", instr);
	if (content) {
		size_t cl = strlen(content);
		nm->inline_bytes += cl;
		if (nm->inline_bytes > INLINE_MAX)
			return bad(nm, where, "inline contents exceed %s in total", "16 MiB");
		char path[64];
		snprintf(path, sizeof path, ".cm-inline/%d", ++nm->ninline);
		yajl_gen_map_open(inl);
		cm_jg_kv_str(inl, "path", path);
		cm_jg_str(inl, "content");
		cm_jg_strn(inl, content, cl);
		yajl_gen_map_close(inl);
		quote_arg(&nm->dockerfile, path);
	} else {
		if (!nm->has_context)
			return bad(nm, where, "\"get\" needs a build context (this definition has context: false)", NULL);
		if (!safe_rel(get))
			return bad(nm, where, "\"get\" must be a relative path inside the context: %.200s", get);
		quote_arg(&nm->dockerfile, get);
	}
	cm_buf_puts(&nm->dockerfile, ", ");
	quote_arg(&nm->dockerfile, dest);
	cm_buf_puts(&nm->dockerfile, "]\n");
	return 0;
}

static int norm_commands(struct norm *nm, yajl_val cmds, yajl_gen inl)
{
	if (!YAJL_IS_ARRAY(cmds) || cmds->u.array.len == 0)
		return bad(nm, "commands", "must be a non-empty list of Dockerfile instructions", NULL);
	bool from_seen = false;
	for (size_t i = 0; i < cmds->u.array.len; i++) {
		char where[48];
		snprintf(where, sizeof where, "commands[%zu]", i);
		yajl_val c = cmds->u.array.values[i];
		char kw[16]; /* the instruction's keyword, upper case */
		if (YAJL_IS_STRING(c)) {
			const char *s = YAJL_GET_STRING(c);
			while (*s == ' ' || *s == '\t')
				s++;
			if (!*s || !one_line(s))
				return bad(nm, where, "an instruction is one non-empty line", NULL);
			size_t kl = strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz");
			const char *rest = s + kl;
			size_t gap = strspn(rest, " \t");
			if (kl == 0 || kl >= sizeof kw || gap == 0 || !rest[gap])
				return bad(nm, where, "\"%.64s\" is not INSTRUCTION ARGUMENTS", s);
			for (size_t k = 0; k < kl; k++)
				kw[k] = (char)toupper((unsigned char)s[k]);
			kw[kl] = '\0';
			cm_buf_printf(&nm->dockerfile, "%s %s\n", kw, rest + gap);
		} else if (YAJL_IS_ARRAY(c) && c->u.array.len == 2 && YAJL_IS_STRING(c->u.array.values[0])) {
			const char *instr = YAJL_GET_STRING(c->u.array.values[0]);
			yajl_val arg = c->u.array.values[1];
			bool file_instr = !strcasecmp(instr, "ADD") || !strcasecmp(instr, "COPY");
			size_t kl = strlen(instr);
			if (!kl || kl >= sizeof kw || strspn(instr, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") != kl)
				return bad(nm, where, "\"%.32s\" is not an instruction", instr);
			for (size_t k = 0; k <= kl; k++)
				kw[k] = (char)toupper((unsigned char)instr[k]);
			if (YAJL_IS_STRING(arg)) {
				const char *a = YAJL_GET_STRING(arg);
				if (!one_line(a))
					return bad(nm, where, "an instruction is one line", NULL);
				a += strspn(a, " \t");
				if (!*a)
					return bad(nm, where, "[%.32s, ...] needs a non-empty argument", instr);
				cm_buf_printf(&nm->dockerfile, "%s %s\n", kw, a);
			} else if (file_instr && YAJL_IS_OBJECT(arg)) {
				if (file_item(nm, where, !strcasecmp(instr, "ADD") ? "ADD" : "COPY", arg, inl) < 0)
					return -1;
			} else if (file_instr && YAJL_IS_ARRAY(arg) && arg->u.array.len > 0) {
				for (size_t j = 0; j < arg->u.array.len; j++)
					if (file_item(nm, where, !strcasecmp(instr, "ADD") ? "ADD" : "COPY", arg->u.array.values[j], inl) < 0)
						return -1;
			} else {
				return bad(nm, where, "[%.32s, ...] takes a string (or, for ADD/COPY, {dest, content|get})", instr);
			}
		} else {
			return bad(nm, where, "an instruction is a string or a pair [INSTRUCTION, argument]", NULL);
		}
		if (!strcmp(kw, "FROM"))
			from_seen = true;
		else if (!from_seen && strcmp(kw, "ARG"))
			return bad(nm, where, "the first instruction must be FROM (or ARG before it)", NULL);
	}
	if (!from_seen)
		return bad(nm, "commands", "no FROM instruction", NULL);
	return 0;
}

static int norm_wait(struct norm *nm, yajl_val w)
{
	yajl_gen g = nm->g;
	if (!w || YAJL_IS_NULL(w)) {
		cm_jg_str(g, "wait");
		return cm_jg_null(g);
	}
	if (!YAJL_IS_OBJECT(w))
		return bad(nm, "wait_condition", "must be an object {command, port_open, timeout, wait_between_attempts}", NULL);
	yajl_val cmd = NULL, ports = NULL;
	double timeout = 60, interval = 0.5;
	for (size_t i = 0; i < w->u.object.len; i++) {
		const char *k = w->u.object.keys[i];
		yajl_val v = w->u.object.values[i];
		if (!strcmp(k, "command"))
			cmd = v;
		else if (!strcmp(k, "port_open"))
			ports = v;
		else if (!strcmp(k, "timeout") || !strcmp(k, "wait_between_attempts")) {
			if (!YAJL_IS_NUMBER(v))
				return bad(nm, "wait_condition", "\"%s\" must be a number of seconds", k);
			double d = YAJL_GET_DOUBLE(v);
			if (!strcmp(k, "timeout")) {
				if (!(d > 0 && d <= 3600))
					return bad(nm, "wait_condition.timeout", "must be between 0 and 3600 seconds", NULL);
				timeout = d;
			} else {
				if (!(d >= 0.01 && d <= 60))
					return bad(nm, "wait_condition.wait_between_attempts", "must be between 0.01 and 60 seconds",
						   NULL);
				interval = d;
			}
		} else {
			return bad(nm, "wait_condition", "unknown key \"%.64s\" (command, port_open, timeout, wait_between_attempts)", k);
		}
	}
	if (!cmd && !ports)
		return bad(nm, "wait_condition", "needs \"command\" or \"port_open\"", NULL);
	cm_jg_str(g, "wait");
	yajl_gen_map_open(g);
	cm_jg_str(g, "command");
	if (!cmd) {
		cm_jg_null(g);
	} else if (YAJL_IS_STRING(cmd) && *YAJL_GET_STRING(cmd)) {
		yajl_gen_array_open(g);
		cm_jg_str(g, "/bin/sh");
		cm_jg_str(g, "-c");
		cm_jg_str(g, YAJL_GET_STRING(cmd));
		yajl_gen_array_close(g);
	} else if (YAJL_IS_ARRAY(cmd) && cmd->u.array.len > 0) {
		yajl_gen_array_open(g);
		for (size_t i = 0; i < cmd->u.array.len; i++) {
			if (!YAJL_IS_STRING(cmd->u.array.values[i]))
				return bad(nm, "wait_condition.command", "a list command holds strings only", NULL);
			cm_jg_str(g, YAJL_GET_STRING(cmd->u.array.values[i]));
		}
		yajl_gen_array_close(g);
	} else {
		return bad(nm, "wait_condition.command", "must be a non-empty string or list of strings", NULL);
	}
	cm_jg_str(g, "ports");
	yajl_gen_array_open(g);
	if (ports) {
		size_t np = YAJL_IS_ARRAY(ports) ? ports->u.array.len : 1;
		for (size_t i = 0; i < np; i++) {
			yajl_val p = YAJL_IS_ARRAY(ports) ? ports->u.array.values[i] : ports;
			if (!YAJL_IS_INTEGER(p) || YAJL_GET_INTEGER(p) < 1 || YAJL_GET_INTEGER(p) > 65535)
				return bad(nm, "wait_condition.port_open", "ports are integers 1-65535", NULL);
			cm_jg_int(g, YAJL_GET_INTEGER(p));
		}
	}
	yajl_gen_array_close(g);
	cm_jg_str(g, "timeout");
	cm_jg_double(g, timeout);
	cm_jg_str(g, "interval");
	cm_jg_double(g, interval);
	yajl_gen_map_close(g);
	return 0;
}

static int norm_context(struct norm *nm, yajl_val ctx)
{
	char path[PATH_MAX];
	cm_jg_str(nm->g, "context");
	if (ctx && YAJL_IS_FALSE(ctx)) {
		nm->has_context = false;
		return cm_jg_null(nm->g);
	}
	const char *rel = ".";
	if (ctx && YAJL_IS_STRING(ctx) && *YAJL_GET_STRING(ctx))
		rel = YAJL_GET_STRING(ctx);
	else if (ctx && !YAJL_IS_TRUE(ctx) && !YAJL_IS_NULL(ctx))
		return bad(nm, "context", "must be false, true or a directory path", NULL);
	char joined[PATH_MAX * 2];
	if (rel[0] == '/' ? cm_pathf(joined, sizeof joined, "%s", rel) < 0
			  : cm_pathf(joined, sizeof joined, "%s/%s", nm->base_dir, rel) < 0)
		return bad(nm, "context", "is too long", NULL);
	struct stat st;
	if (!realpath(joined, path) || stat(path, &st) < 0 || !S_ISDIR(st.st_mode))
		return bad(nm, "context", "\"%.300s\" is not a directory", rel);
	nm->has_context = true;
	return cm_jg_str(nm->g, path);
}

static int norm_one(const char *name, yajl_val d, const char *base_dir, char **out, struct cm_error *err)
{
	struct norm nm = {.name = name, .base_dir = base_dir, .err = err};
	if (!cm_imagedef_valid_name(name))
		return cm_err_validation(err, "INVALID_DEFINITIONS", NULL,
					 "images.%.80s: a name is 1-63 of a-z 0-9 _ . - (starting with a letter or digit)", name);
	if (!YAJL_IS_OBJECT(d))
		return bad(&nm, "", "a definition is an object with \"commands\"%s", NULL);
	yajl_val cmds = NULL, ctx = NULL, wait = NULL;
	char user[32] = "";
	for (size_t i = 0; i < d->u.object.len; i++) {
		const char *k = d->u.object.keys[i];
		yajl_val x = d->u.object.values[i];
		if (!strcmp(k, "user")) {
			/* uid[:gid], numbers only (names mean nothing outside the image); whether root is
			 * allowed is the runner's call (ALLOW_ROOT_CONTAINERS) */
			if (YAJL_IS_INTEGER(x) && YAJL_GET_INTEGER(x) >= 0 && YAJL_GET_INTEGER(x) <= 2147483647)
				snprintf(user, sizeof user, "%lld", (long long)YAJL_GET_INTEGER(x));
			else if (YAJL_IS_STRING(x) && strlen(x->u.string) < sizeof user &&
				 strspn(x->u.string, "0123456789:") == strlen(x->u.string))
				snprintf(user, sizeof user, "%s", x->u.string);
			else
				return bad(&nm, "user", "must be a numeric uid or \"uid:gid\"%s", NULL);
			unsigned uu, gg;
			if (cm_parse_uid(user, &uu, &gg) < 0)
				return bad(&nm, "user", "must be a numeric uid or \"uid:gid\"%s", NULL);
		} else if (!strcmp(k, "commands"))
			cmds = d->u.object.values[i];
		else if (!strcmp(k, "context"))
			ctx = d->u.object.values[i];
		else if (!strcmp(k, "wait_condition"))
			wait = d->u.object.values[i];
		else
			return bad(&nm, k, "unsupported option (supported: context, commands, wait_condition, user)%s", NULL);
	}
	if (!cmds)
		return bad(&nm, "commands", "missing%s", NULL);
	nm.g = cm_jg_new();
	yajl_gen inl = cm_jg_new();
	if (!nm.g || !inl) {
		if (nm.g)
			yajl_gen_free(nm.g);
		if (inl)
			yajl_gen_free(inl);
		return cm_err_internal(err, "out of memory");
	}
	yajl_gen_map_open(nm.g);
	cm_jg_kv_str(nm.g, "name", name);
	if (user[0])
		cm_jg_kv_str(nm.g, "user", user);
	yajl_gen_array_open(inl);
	int rc = norm_context(&nm, ctx);
	if (rc == 0)
		rc = norm_commands(&nm, cmds, inl);
	if (rc == 0)
		rc = norm_wait(&nm, wait);
	if (rc == 0) {
		yajl_gen_array_close(inl);
		char *inl_text = cm_jg_finish(inl);
		inl = NULL;
		cm_jg_kv_str(nm.g, "dockerfile", cm_buf_str(&nm.dockerfile));
		cm_jg_str(nm.g, "inline");
		rc = inl_text ? cm_jg_raw(nm.g, inl_text) : -1;
		free(inl_text);
		yajl_gen_map_close(nm.g);
		*out = cm_jg_finish(nm.g);
		nm.g = NULL;
		if (rc < 0 || !*out)
			rc = cm_err_internal(err, "out of memory");
	}
	if (inl)
		yajl_gen_free(inl);
	if (nm.g)
		yajl_gen_free(nm.g);
	cm_buf_free(&nm.dockerfile);
	return rc;
}

static int cmp_def(const void *a, const void *b)
{
	return strcmp(((const struct cm_imagedef *)a)->name, ((const struct cm_imagedef *)b)->name);
}

void cm_imagedefs_free(struct cm_imagedef *defs, size_t n)
{
	for (size_t i = 0; defs && i < n; i++)
		free(defs[i].json);
	free(defs);
}

int cm_imagedefs_parse(const char *text, size_t len, const char *base_dir, struct cm_imagedef **defs, size_t *n,
		       struct cm_error *err)
{
	*defs = NULL;
	*n = 0;
	size_t i = 0;
	while (i < len && (text[i] == ' ' || text[i] == '\t' || text[i] == '\n' || text[i] == '\r'))
		i++;
	char *json = NULL;
	yajl_val root;
	if (i < len && text[i] == '{') {
		root = cm_json_parse(text, len, err);
		if (!root)
			cm_err_prefix(err, "definitions (JSON)");
	} else {
		json = cm_yaml_to_json(text, len, err);
		root = json ? cm_json_parse(json, strlen(json), err) : NULL;
		free(json);
	}
	if (!root)
		return -1;
	yajl_val images = YAJL_IS_OBJECT(root) ? cm_json_get(root, "images") : NULL;
	if (!YAJL_IS_OBJECT(images)) {
		yajl_tree_free(root);
		return cm_err_validation(err, "INVALID_DEFINITIONS", NULL, "the document needs an \"images\" mapping");
	}
	size_t cnt = images->u.object.len;
	struct cm_imagedef *out = calloc(cnt ? cnt : 1, sizeof *out);
	if (!out) {
		yajl_tree_free(root);
		return cm_err_internal(err, "out of memory");
	}
	for (size_t k = 0; k < cnt; k++) {
		const char *name = images->u.object.keys[k];
		if (norm_one(name, images->u.object.values[k], base_dir, &out[k].json, err) < 0) {
			cm_imagedefs_free(out, cnt);
			yajl_tree_free(root);
			return -1;
		}
		snprintf(out[k].name, sizeof out[k].name, "%s", name);
	}
	yajl_tree_free(root);
	qsort(out, cnt, sizeof *out, cmp_def);
	*defs = out;
	*n = cnt;
	return 0;
}

int cm_imagedefs_load(const char *path, struct cm_imagedef **defs, size_t *n, struct cm_error *err)
{
	size_t len = 0;
	errno = 0;
	char *text = cm_read_file(path, CM_IMAGEDEF_MAX_FILE, &len);
	if (!text)
		return cm_err_validation(err, "INVALID_DEFINITIONS", NULL, "cannot read %s: %s", path,
					 errno ? strerror(errno) : "too large or unreadable");
	char dir[PATH_MAX], abs[PATH_MAX];
	if (!realpath(path, abs)) {
		free(text);
		return cm_err_validation(err, "INVALID_DEFINITIONS", NULL, "cannot resolve %s: %s", path, strerror(errno));
	}
	(void)cm_pathf(dir, sizeof dir, "%s", dirname(abs)); /* no longer than abs: always fits */
	int rc = cm_imagedefs_parse(text, len, dir, defs, n, err);
	free(text);
	if (rc < 0)
		cm_err_prefix(err, "%s", path);
	return rc;
}

/* ------------------------------------------------------------------ packing */

struct packer {
	struct archive *a;
	EVP_MD_CTX *md;
	struct cm_buf *out;
	long long total;
	long long limit;
	struct cm_error *err;
};

static la_ssize_t pk_write(struct archive *a, void *ud, const void *buf, size_t len)
{
	(void)a;
	struct packer *p = ud;
	if (cm_buf_append(p->out, buf, len) < 0)
		return -1;
	return (la_ssize_t)len;
}

static void hash_field(struct packer *p, const void *data, size_t len)
{
	unsigned char n[8];
	for (int i = 0; i < 8; i++)
		n[i] = (unsigned char)((uint64_t)len >> (56 - 8 * i));
	EVP_DigestUpdate(p->md, n, sizeof n);
	EVP_DigestUpdate(p->md, data, len);
}

/* One entry into the tar and the hash. type: 'f' file, 'd' dir, 'l' symlink (data = target). */
static int pk_entry(struct packer *p, const char *path, char type, unsigned mode, const void *data, size_t len)
{
	p->total += (long long)len + 512;
	if (p->total > p->limit)
		return cm_err_set(p->err, 422, "validation_error", "BUILD_CONTEXT", NULL,
				  "the build context is larger than %lld MiB", p->limit >> 20);
	char meta[32];
	snprintf(meta, sizeof meta, "%c %o", type, mode & 07777);
	hash_field(p, path, strlen(path));
	hash_field(p, meta, strlen(meta));
	hash_field(p, data ? data : "", data ? len : 0);
	struct archive_entry *e = archive_entry_new();
	if (!e)
		return cm_err_internal(p->err, "out of memory");
	archive_entry_set_pathname(e, path);
	archive_entry_set_mode(e, (type == 'd' ? AE_IFDIR : type == 'l' ? AE_IFLNK : AE_IFREG) | (mode & 07777));
	archive_entry_set_mtime(e, 0, 0);
	if (type == 'l')
		archive_entry_set_symlink(e, data);
	archive_entry_set_size(e, type == 'f' ? (la_int64_t)len : 0);
	int rc = 0;
	if (archive_write_header(p->a, e) != ARCHIVE_OK ||
	    (type == 'f' && len && archive_write_data(p->a, data, len) != (la_ssize_t)len))
		rc = cm_err_internal(p->err, "tar: %s", archive_error_string(p->a));
	archive_entry_free(e);
	return rc;
}

static int pk_dir(struct packer *p, int dfd, const char *rel, int depth)
{
	if (depth > 64)
		return cm_err_set(p->err, 422, "validation_error", "BUILD_CONTEXT", NULL, "the context is nested too deeply");
	DIR *d = fdopendir(dfd);
	if (!d) {
		close(dfd);
		return cm_err_set(p->err, 422, "validation_error", "BUILD_CONTEXT", NULL, "cannot read %s: %s",
				  *rel ? rel : ".", strerror(errno));
	}
	/* sorted, so the hash does not depend on directory order */
	size_t cnt = 0, cap = 0;
	char **list = NULL;
	struct dirent *de;
	int rc = 0;
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (!*rel && (!strcmp(de->d_name, ".cm-Dockerfile") || !strcmp(de->d_name, ".cm-inline")))
			continue;
		if (cnt == cap) {
			cap = cap ? cap * 2 : 32;
			char **nl = realloc(list, cap * sizeof *list);
			if (!nl) {
				rc = cm_err_internal(p->err, "out of memory");
				break;
			}
			list = nl;
		}
		if (!(list[cnt] = strdup(de->d_name))) {
			rc = cm_err_internal(p->err, "out of memory");
			break;
		}
		cnt++;
	}
	for (size_t i = 1; i < cnt; i++)
		for (size_t j = i; j > 0 && strcmp(list[j - 1], list[j]) > 0; j--) {
			char *t = list[j];
			list[j] = list[j - 1];
			list[j - 1] = t;
		}
	for (size_t i = 0; rc == 0 && i < cnt; i++) {
		char path[PATH_MAX];
		if (snprintf(path, sizeof path, "%s%s%s", rel, *rel ? "/" : "", list[i]) >= (int)sizeof path) {
			rc = cm_err_set(p->err, 422, "validation_error", "BUILD_CONTEXT", NULL, "path too long in the context");
			break;
		}
		struct stat st;
		if (fstatat(dirfd(d), list[i], &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue; /* vanished meanwhile */
		if (S_ISDIR(st.st_mode)) {
			rc = pk_entry(p, path, 'd', st.st_mode, NULL, 0);
			int sub = rc == 0 ? openat(dirfd(d), list[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) : -1;
			if (rc == 0 && sub < 0)
				rc = cm_err_set(p->err, 422, "validation_error", "BUILD_CONTEXT", NULL, "cannot open %s: %s", path,
						strerror(errno));
			if (rc == 0)
				rc = pk_dir(p, sub, path, depth + 1);
		} else if (S_ISLNK(st.st_mode)) {
			char target[PATH_MAX];
			ssize_t n = readlinkat(dirfd(d), list[i], target, sizeof target - 1);
			if (n >= 0) {
				target[n] = '\0';
				rc = pk_entry(p, path, 'l', 0777, target, (size_t)n);
			}
		} else if (S_ISREG(st.st_mode)) {
			if (p->total + st.st_size > p->limit) {
				rc = cm_err_set(p->err, 422, "validation_error", "BUILD_CONTEXT", NULL,
						"the build context is larger than %lld MiB", p->limit >> 20);
				break;
			}
			int fd = openat(dirfd(d), list[i], O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
			struct cm_buf b = {.limit = (size_t)(p->limit - p->total) + 1};
			struct stat fst;
			if (fd < 0 || fstat(fd, &fst) < 0 || !S_ISREG(fst.st_mode)) {
				rc = cm_err_set(p->err, 422, "validation_error", "BUILD_CONTEXT", NULL, "cannot read %s: %s", path,
						strerror(errno ? errno : EINVAL));
			} else {
				char chunk[65536];
				ssize_t r;
				while ((r = read(fd, chunk, sizeof chunk)) > 0)
					if (cm_buf_append(&b, chunk, (size_t)r) < 0) {
						r = -2;
						break;
					}
				if (r == -2)
					rc = cm_err_set(p->err, 422, "validation_error", "BUILD_CONTEXT", NULL,
							"the build context is larger than %lld MiB", p->limit >> 20);
				else if (r < 0)
					rc = cm_err_set(p->err, 422, "validation_error", "BUILD_CONTEXT", NULL, "cannot read %s: %s",
							path, strerror(errno));
				else
					rc = pk_entry(p, path, 'f', fst.st_mode, b.data ? b.data : "", b.len);
			}
			if (fd >= 0)
				close(fd);
			cm_buf_free(&b);
		}
		/* sockets, fifos, devices: not part of a build context */
	}
	for (size_t i = 0; i < cnt; i++)
		free(list[i]);
	free(list);
	closedir(d);
	return rc;
}

int cm_imagedef_pack(yajl_val def, struct cm_buf *out, char hash[65], struct cm_error *err)
{
	const char *dockerfile = cm_json_get_str(def, "dockerfile");
	const char *ctx = cm_json_get_str(def, "context");
	yajl_val inl = cm_json_get(def, "inline");
	if (!dockerfile)
		return cm_err_internal(err, "definition without a dockerfile");
	struct packer p = {.out = out, .limit = CM_IMAGEDEF_CONTEXT_MAX, .err = err};
	p.md = EVP_MD_CTX_new();
	p.a = archive_write_new();
	int rc = -1;
	if (!p.md || !p.a || EVP_DigestInit_ex(p.md, EVP_sha256(), NULL) != 1) {
		cm_err_internal(err, "out of memory");
		goto done;
	}
	EVP_DigestUpdate(p.md, "cm-def-v1", 10);
	if (archive_write_set_format_pax_restricted(p.a) != ARCHIVE_OK ||
	    archive_write_set_bytes_in_last_block(p.a, 1) != ARCHIVE_OK ||
	    archive_write_open2(p.a, &p, NULL, pk_write, NULL, NULL) != ARCHIVE_OK) {
		cm_err_internal(err, "tar: %s", archive_error_string(p.a));
		goto done;
	}
	rc = pk_entry(&p, ".cm-Dockerfile", 'f', 0644, dockerfile, strlen(dockerfile));
	if (rc == 0 && YAJL_IS_ARRAY(inl) && inl->u.array.len)
		rc = pk_entry(&p, ".cm-inline", 'd', 0755, NULL, 0);
	for (size_t i = 0; rc == 0 && YAJL_IS_ARRAY(inl) && i < inl->u.array.len; i++) {
		const char *path = cm_json_get_str(inl->u.array.values[i], "path");
		const char *content = cm_json_get_str(inl->u.array.values[i], "content");
		if (!path || !content)
			rc = cm_err_internal(err, "malformed inline file");
		else
			rc = pk_entry(&p, path, 'f', 0644, content, strlen(content));
	}
	if (rc == 0 && ctx) {
		int dfd = open(ctx, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd < 0)
			rc = cm_err_set(err, 422, "validation_error", "BUILD_CONTEXT", NULL, "cannot open the context %s: %s", ctx,
					strerror(errno));
		else
			rc = pk_dir(&p, dfd, "", 0);
	}
	if (rc == 0 && archive_write_close(p.a) != ARCHIVE_OK)
		rc = cm_err_internal(err, "tar: %s", archive_error_string(p.a));
	if (rc == 0) {
		unsigned char md[EVP_MAX_MD_SIZE];
		unsigned int mdlen = 0;
		if (EVP_DigestFinal_ex(p.md, md, &mdlen) != 1 || mdlen != 32) {
			rc = cm_err_internal(err, "sha256 failed");
		} else {
			for (unsigned i = 0; i < 32; i++)
				snprintf(hash + 2 * i, 3, "%02x", md[i]);
		}
	}
done:
	if (p.a)
		archive_write_free(p.a);
	if (p.md)
		EVP_MD_CTX_free(p.md);
	return rc;
}
