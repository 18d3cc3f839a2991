/* t_imagedef.c: image definitions (harpoon's YAML layout, or JSON): what is accepted, how it is
 * normalized, what is refused (with the place named), and the packed build context and hash. */
#include "config.h"
#include "imagedef.h"
#include "json.h"
#include "tap.h"

#include <archive.h>
#include <archive_entry.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[] = "/tmp/cm-unit-imagedef.XXXXXX";

static int parse(const char *text, struct cm_imagedef **defs, size_t *n, struct cm_error *err)
{
	memset(err, 0, sizeof *err);
	return cm_imagedefs_parse(text, strlen(text), dir, defs, n, err);
}

static void refuse(const char *text, const char *needle, const char *what)
{
	struct cm_imagedef *defs = NULL;
	size_t n = 0;
	struct cm_error err;
	int r = parse(text, &defs, &n, &err);
	ok(r < 0 && err.status == 400 && strstr(err.message, needle), "refuses %s (message names \"%s\"; got \"%s\")", what,
	   needle, err.message);
	if (r == 0)
		cm_imagedefs_free(defs, n);
}

static yajl_val def_json(const struct cm_imagedef *d)
{
	struct cm_error err;
	return cm_json_parse(d->json, strlen(d->json), &err);
}

static void write_file(const char *rel, const char *content)
{
	char p[512];
	snprintf(p, sizeof p, "%s/%s", dir, rel);
	FILE *f = fopen(p, "w");
	if (f) {
		fputs(content, f);
		fclose(f);
	}
}

/* Lists the tar's entries as "path:size," in order. */
static char *tar_index(const struct cm_buf *tar, char *out, size_t outsz)
{
	struct archive *a = archive_read_new();
	archive_read_support_format_tar(a);
	out[0] = '\0';
	if (archive_read_open_memory(a, tar->data, tar->len) != ARCHIVE_OK) {
		archive_read_free(a);
		return out;
	}
	struct archive_entry *e;
	size_t used = 0;
	while (archive_read_next_header(a, &e) == ARCHIVE_OK) {
		int n = snprintf(out + used, outsz - used, "%s:%lld,", archive_entry_pathname(e),
				 (long long)archive_entry_size(e));
		if (n < 0 || (size_t)n >= outsz - used)
			break;
		used += (size_t)n;
	}
	archive_read_free(a);
	return out;
}

static const char seed_yaml[] = "---\n"
				"images:\n"
				"   server:\n"
				"      context: false\n"
				"\n"
				"      commands:\n"
				"         - FROM python:3\n"
				"         - - ADD\n"
				"           - dest: /example_file\n"
				"             content: \"hello there\"\n"
				"         - CMD python -m http.server 4545\n";

int main(void)
{
	if (!mkdtemp(dir)) {
		printf("Bail out! mkdtemp\n");
		return 1;
	}
	struct cm_imagedef *defs = NULL;
	size_t n = 0;
	struct cm_error err;

	/* the seed's own document */
	ok(parse(seed_yaml, &defs, &n, &err) == 0 && n == 1, "the seed's YAML is accepted (%s)", err.message);
	if (n == 1) {
		is_str(defs[0].name, "server", "definition name");
		yajl_val v = def_json(&defs[0]);
		const char *df = cm_json_get_str(v, "dockerfile");
		ok(df && strstr(df, "FROM python:3\n") && strstr(df, "ADD [\".cm-inline/1\", \"/example_file\"]\n") &&
			   strstr(df, "CMD python -m http.server 4545\n"),
		   "Dockerfile generated from commands: %s", df ? df : "(none)");
		yajl_val inl = cm_json_get(v, "inline");
		ok(inl && YAJL_IS_ARRAY(inl) && inl->u.array.len == 1 &&
			   !strcmp(cm_json_get_str(inl->u.array.values[0], "content"), "hello there"),
		   "inline content kept");
		yajl_val ctx = cm_json_get(v, "context");
		ok(!ctx || YAJL_IS_NULL(ctx), "context: false means no context");

		/* pack: the Dockerfile and the inline file, nothing else; the hash is stable */
		struct cm_buf tar = {0}, tar2 = {0};
		char h1[65] = "", h2[65] = "", idx[1024];
		ok(cm_imagedef_pack(v, &tar, h1, &err) == 0 && strlen(h1) == 64, "packs the context (%s)", err.message);
		tar_index(&tar, idx, sizeof idx);
		ok(strstr(idx, ".cm-Dockerfile:") && strstr(idx, ".cm-inline/") && strstr(idx, ":11,"),
		   "tar holds the Dockerfile and the 11-byte inline file: %s", idx);
		ok(cm_imagedef_pack(v, &tar2, h2, &err) == 0 && !strcmp(h1, h2), "same definition, same hash");
		ok(tar.len == tar2.len && !memcmp(tar.data, tar2.data, tar.len), "same definition, same bytes");
		cm_buf_free(&tar);
		cm_buf_free(&tar2);
		yajl_tree_free(v);

		/* one changed byte of content changes the hash */
		char *other = strdup(seed_yaml);
		*strstr(other, "hello there") = 'j';
		struct cm_imagedef *d2 = NULL;
		size_t n2 = 0;
		ok(parse(other, &d2, &n2, &err) == 0 && n2 == 1, "edited definition parses");
		if (n2 == 1) {
			yajl_val v2 = def_json(&d2[0]);
			char h3[65] = "";
			struct cm_buf t3 = {0};
			ok(cm_imagedef_pack(v2, &t3, h3, &err) == 0 && strcmp(h1, h3), "changed content, new hash");
			cm_buf_free(&t3);
			yajl_tree_free(v2);
		}
		cm_imagedefs_free(d2, n2);
		free(other);
	}
	cm_imagedefs_free(defs, n);

	/* the same document as JSON */
	const char *json = "{\"images\":{\"b\":{\"context\":false,\"commands\":[\"FROM x\",[\"ENV\",\"A=1\"]],"
			   "\"wait_condition\":{\"command\":\"test -f /ready\",\"timeout\":5}},"
			   "\"a\":{\"context\":false,\"commands\":[\"FROM y\"],\"wait_condition\":{\"port_open\":[80,443]}}}}";
	ok(parse(json, &defs, &n, &err) == 0 && n == 2, "JSON accepted (%s)", err.message);
	if (n == 2) {
		is_str(defs[0].name, "a", "sorted by name");
		yajl_val va = def_json(&defs[0]), vb = def_json(&defs[1]);
		yajl_val wa = cm_json_get(va, "wait"), wb = cm_json_get(vb, "wait");
		yajl_val pa = cm_json_get(wa, "ports");
		ok(pa && YAJL_IS_ARRAY(pa) && pa->u.array.len == 2, "port_open list kept");
		yajl_val cb = cm_json_get(wb, "command");
		ok(cb && YAJL_IS_ARRAY(cb) && cb->u.array.len == 3 && YAJL_IS_STRING(cb->u.array.values[2]) &&
			   !strcmp(cb->u.array.values[2]->u.string, "test -f /ready"),
		   "a string command runs through /bin/sh -c");
		yajl_val to = cm_json_get(wb, "timeout");
		ok(to && YAJL_IS_NUMBER(to) && YAJL_GET_DOUBLE(to) == 5, "timeout kept");
		const char *dfb = cm_json_get_str(vb, "dockerfile");
		ok(dfb && strstr(dfb, "ENV A=1\n"), "[ENV, A=1] becomes ENV A=1");
		yajl_tree_free(va);
		yajl_tree_free(vb);
	}
	cm_imagedefs_free(defs, n);

	/* context directory with get */
	char sub[600];
	snprintf(sub, sizeof sub, "%s/ctx", dir);
	mkdir(sub, 0755);
	write_file("ctx/app.txt", "from the context\n");
	write_file("secret.txt", "outside\n");
	char lnk[700], tgt[700];
	snprintf(lnk, sizeof lnk, "%s/ctx/escape", dir);
	snprintf(tgt, sizeof tgt, "%s/secret.txt", dir);
	if (symlink(tgt, lnk) < 0)
		printf("# symlink: failed\n");
	const char *with_ctx = "images:\n  c:\n    context: ctx\n    commands:\n      - FROM x\n"
			       "      - [COPY, {dest: /app.txt, get: app.txt}]\n";
	ok(parse(with_ctx, &defs, &n, &err) == 0 && n == 1, "context directory with get accepted (%s)", err.message);
	if (n == 1) {
		yajl_val v = def_json(&defs[0]);
		ok(cm_json_get_str(v, "context") && strstr(cm_json_get_str(v, "context"), "/ctx"), "context resolved: %s",
		   cm_json_get_str(v, "context") ? cm_json_get_str(v, "context") : "(none)");
		struct cm_buf tar = {0};
		char h[65], idx[2048];
		ok(cm_imagedef_pack(v, &tar, h, &err) == 0, "context packed (%s)", err.message);
		tar_index(&tar, idx, sizeof idx);
		ok(strstr(idx, "app.txt:17,") != NULL, "context file packed: %s", idx);
		ok(strstr(idx, "escape:0,") != NULL && !strstr(idx, "escape:8,"),
		   "a symlink is packed as a link, never followed out of the context: %s", idx);
		cm_buf_free(&tar);
		/* a context file change changes the hash */
		write_file("ctx/app.txt", "from the context!\n");
		char h2[65];
		struct cm_buf t2 = {0};
		ok(cm_imagedef_pack(v, &t2, h2, &err) == 0 && strcmp(h, h2), "edited context file, new hash");
		cm_buf_free(&t2);
		yajl_tree_free(v);
	}
	cm_imagedefs_free(defs, n);

	/* YAML 1.1 scalars and structure */
	ok(parse("images:\n  t:\n    context: no\n    commands: [\"FROM x\"]\n", &defs, &n, &err) == 0 && n == 1,
	   "YAML 1.1 'no' is false (%s)", err.message);
	cm_imagedefs_free(defs, n);

	/* instruction keywords are normalized to upper case */
	ok(parse("images:\n  l:\n    context: false\n    commands: [\"from x\", [env, \"A=1\"], \"cmd  [\\\"sh\\\"]\"]\n", &defs, &n, &err) == 0 && n == 1,
	   "lower-case instructions accepted (%s)", err.message);
	if (n == 1) {
		yajl_val v = def_json(&defs[0]);
		is_str(cm_json_get_str(v, "dockerfile"), "FROM x\nENV A=1\nCMD [\"sh\"]\n", "keywords upper-cased, one space");
		yajl_tree_free(v);
	}
	cm_imagedefs_free(defs, n);

	/* refusals, each naming the place */
	refuse("images: {a: {context: no, commands: [FROM ,ue]}}\n", "not INSTRUCTION ARGUMENTS", "FROM without an image");
	refuse("images: {a: {context: no, commands: [[FROM, \" \"]]}}\n", "non-empty argument", "[FROM, \" \"]");
	refuse("images: {a: {context: no, commands: [\"ARGX y\", \"FROM x\"]}}\n", "first instruction", "ARGX is not ARG");
	refuse("images:\n  a:\n    context: false\n    commands: [\"RUN x\"]\n", "images.a.commands",
	       "a first instruction other than FROM");
	refuse("images:\n  a:\n    context: false\n    commands: []\n", "images.a.commands", "empty commands");
	refuse("images:\n  a:\n    context: false\n    commands: [\"FROM x\", [ADD, {dest: /f, get: f}]]\n", "context: false",
	       "get without a context");
	refuse("images:\n  a:\n    context: ctx\n    commands: [\"FROM x\", [ADD, {dest: /f, get: ../secret.txt}]]\n",
	       "relative path inside", "get escaping the context");
	refuse("images:\n  a:\n    context: ctx\n    commands: [\"FROM x\", [ADD, {dest: /f, get: /etc/passwd}]]\n",
	       "relative path inside", "absolute get");
	refuse("images:\n  a:\n    context: nope-dir\n    commands: [\"FROM x\"]\n", "images.a.context", "a missing context dir");
	refuse("images:\n  a:\n    context: false\n    commands: [\"FROM x\"]\n    bogus: 1\n", "bogus", "an unknown key");
	refuse("images:\n  a:\n    context: false\n    commands: [\"FROM x\"]\n    wait_condition: {timeout: 9999, port_open: 80}\n",
	       "wait_condition.timeout", "a timeout over an hour");
	refuse("images:\n  a:\n    context: false\n    commands: [\"FROM x\"]\n    wait_condition: {port_open: 70000}\n",
	       "wait_condition.port_open", "a port out of range");
	refuse("images:\n  a:\n    context: false\n    commands: [\"FROM x\", \"RUN a\\nRUN b\"]\n", "one non-empty line",
	       "a multi-line instruction (Dockerfile injection)");
	refuse("images:\n  a:\n    context: false\n    commands: [\"FROM x\", [ADD, {dest: \"/f\\nRUN evil\", content: x}]]\n",
	       "one-line", "a multi-line dest");
	refuse("images:\n  Bad_Name:\n    context: false\n    commands: [\"FROM x\"]\n", "Bad_Name", "an invalid name");
	refuse("images:\n  a:\n    commands: [\"FROM x\"]\n  a:\n    commands: [\"FROM y\"]\n", "line", "a duplicate key");
	refuse("images: [1, 2]\n", "images", "images that is not a mapping");
	ok(parse("images:\n  a: &x\n    context: false\n    commands: [\"FROM x\"]\n  b: *x\n", &defs, &n, &err) == 0 && n == 2,
	   "YAML anchors and aliases work (%s)", err.message);
	cm_imagedefs_free(defs, n);
	refuse("a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
	       "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
	       "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
	       "images: [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]\n",
	       "too large", "an alias bomb (expansion is bounded)");
	refuse("images: {a: {commands: [\"FROM x\"]}\n", "YAML", "broken YAML");
	refuse("{\"images\": {\"a\": {\"commands\": [\"FROM x\"]}}", "JSON", "broken JSON");
	refuse("", "", "an empty file");
	/* a deeply nested document is refused, not a stack overflow */
	char deep[5000];
	size_t k = 0;
	k += (size_t)snprintf(deep, sizeof deep, "images: ");
	for (int i = 0; i < 1000 && k < sizeof deep - 4; i++)
		deep[k++] = '[';
	deep[k] = '\0';
	refuse(deep, "", "a deeply nested document");
	/* 300,000 levels, closed, in both syntaxes: refused, not a stack overflow */
	{
		size_t nn = 300000;
		char *big = malloc(2 * nn + 64);
		if (!big)
			return 1;
		for (int isjson = 0; isjson < 2; isjson++) {
			size_t b = (size_t)snprintf(big, 64, isjson ? "{\"images\": " : "images: ");
			memset(big + b, '[', nn);
			memset(big + b + nn, ']', nn);
			b += 2 * nn;
			if (isjson)
				big[b++] = '}';
			big[b] = '\0';
			refuse(big, "deeper", isjson ? "300,000 nested JSON arrays" : "300,000 nested YAML flow sequences");
		}
		free(big);
	}

	char cmd[700];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		printf("# cleanup failed\n");
	return tap_done();
}
