/* t_spec.c: container spec validation: accepted shapes, refusals, patch merging. */
#include "config.h"
#include "spec.h"
#include "tap.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static struct cm_config cfg;

static int create(const char *json, struct cm_spec *s, struct cm_error *err)
{
	yajl_val v = cm_json_parse(json, strlen(json), err);
	if (!v)
		return -1;
	int r = cm_spec_from_create(&cfg, v, s, err);
	yajl_tree_free(v);
	return r;
}

static void refuse(const char *json, const char *code, const char *field)
{
	struct cm_spec s;
	struct cm_error err = {0};
	int r = create(json, &s, &err);
	ok(r < 0 && err.status == 400 && !strcmp(err.code, code) && (!field || !strcmp(err.field, field)),
	   "refuses %s with %s %s (got %s %s)", json, code, field ? field : "", err.code, err.field);
	if (r == 0)
		cm_spec_free(&s);
}

int main(void)
{
	struct cm_error err = {0};
	setenv("CM_DATA_DIR", "/tmp/cm-unit", 1);
	ok(cm_config_load(&cfg, NULL, &err) == 0, "default config");
	struct cm_config other;
	setenv("CM_HTTP_LISTEN", "0.0.0.0:8080", 1);
	ok(cm_config_load(&other, NULL, &err) < 0 && !strcmp(err.field, "CM_HTTP_LISTEN"), "plain HTTP off loopback refused");
	setenv("CM_HTTP_LISTEN", "127.0.0.1:8080", 1);
	setenv("CM_AUTH", "off", 1);
	ok(cm_config_load(&other, NULL, &err) < 0 && !strcmp(err.field, "CM_AUTH"), "CM_AUTH=off refused with a public TLS listener");
	setenv("CM_HTTPS_LISTEN", "off", 1);
	ok(cm_config_load(&other, NULL, &err) == 0 && other.auth_off, "CM_AUTH=off allowed when every listener is loopback");
	unsetenv("CM_HTTP_LISTEN");
	unsetenv("CM_HTTPS_LISTEN");
	unsetenv("CM_AUTH");
	struct cm_spec s;
	ok(create("{\"image\":\"python:3.12-slim\",\"env\":{\"APP_ENV\":\"production\"},\"tags\":[\"web\",\"production\"],"
		  "\"resources\":{\"cpus\":1.0,\"memory\":\"4096m\",\"pids\":2048},"
		  "\"ports\":[{\"host\":8080,\"container\":80,\"protocol\":\"tcp\"}]}",
		  &s, &err) == 0,
	   "seed create payload accepted");
	ok(s.memory == 4096LL << 20 && s.pids == 2048 && s.cpus == 1.0, "resources parsed");
	is_str(s.ports, "[{\"host\":8080,\"container\":80,\"protocol\":\"tcp\"}]", "ports canonical");
	is_str(s.command, "[\"/bin/sh\",\"-c\",\"python /app/boot.py\"]", "default boot command");
	char *csv = cm_spec_tags_csv(s.tags);
	is_str(csv, "web,production", "tags csv");
	free(csv);

	unsigned changed;
	const char *patch = "{\"env\":{\"NEW_VAR\":\"value\",\"APP_ENV\":null},\"tags\":[\"updated\",\"v2\"],"
			    "\"resources\":{\"memory\":\"8192m\"}}";
	yajl_val pv = cm_json_parse(patch, strlen(patch), &err);
	ok(cm_spec_apply_patch(&cfg, &s, pv, &changed, &err) == 0, "seed patch accepted");
	yajl_tree_free(pv);
	is_str(s.env, "{\"NEW_VAR\":\"value\"}", "env merged, null removed");
	ok(changed == (CM_CHANGED_ENV | CM_CHANGED_TAGS | CM_CHANGED_RESOURCES), "changed flags %u", changed);
	ok(s.memory == 8192LL << 20 && s.pids == 2048, "resources merged");
	cm_spec_free(&s);

	ok(create("{\"image\":\"x\"}", &s, &err) == 0 && s.memory == cfg.default_memory && s.pids == cfg.default_pids,
	   "defaults applied");
	cm_spec_free(&s);
	ok(create("{\"image\":\"x\",\"command\":\"echo hi\"}", &s, &err) == 0, "string command");
	is_str(s.command, "[\"/bin/sh\",\"-c\",\"echo hi\"]", "string command runs under sh -c");
	cm_spec_free(&s);

	refuse("{}", "MISSING_IMAGE", "image");
	refuse("{\"image\":\"\"}", "MISSING_IMAGE", "image");
	refuse("{\"image\":5}", "INVALID_TYPE", "image");
	refuse("{\"image\":\"-x\"}", "INVALID_VALUE", "image");
	refuse("{\"image\":\"x\",\"bogus\":1}", "UNKNOWN_FIELD", "bogus");
	refuse("{\"image\":\"x\",\"resources\":{\"disk\":1}}", "UNKNOWN_FIELD", "resources.disk");
	refuse("{\"image\":\"x\",\"resources\":{\"memory\":\"12xb\"}}", "INVALID_SIZE", "resources.memory");
	refuse("{\"image\":\"x\",\"resources\":{\"memory\":\"1m\"}}", "INVALID_VALUE", "resources.memory");
	refuse("{\"image\":\"x\",\"resources\":{\"cpus\":0}}", "INVALID_VALUE", "resources.cpus");
	refuse("{\"image\":\"x\",\"resources\":{\"pids\":\"10\"}}", "INVALID_TYPE", "resources.pids");
	refuse("{\"image\":\"x\",\"env\":{\"1BAD\":\"x\"}}", "INVALID_ENV_NAME", "env.1BAD");
	refuse("{\"image\":\"x\",\"env\":{\"A=B\":\"x\"}}", "INVALID_ENV_NAME", "env.A=B");
	refuse("{\"image\":\"x\",\"env\":{\"A\":1}}", "INVALID_TYPE", "env.A");
	refuse("{\"image\":\"x\",\"env\":{\"CONTAINER_UID\":\"x\"}}", "RESERVED_ENV_NAME", "env.CONTAINER_UID");
	refuse("{\"image\":\"x\",\"tags\":\"web\"}", "INVALID_TYPE", "tags");
	refuse("{\"image\":\"x\",\"tags\":[\"a,b\"]}", "INVALID_TAG", "tags[0]");
	refuse("{\"image\":\"x\",\"tags\":[\"a\",\"a\"]}", "DUPLICATE_TAG", "tags[1]");
	refuse("{\"image\":\"x\",\"ports\":[{\"container\":70000}]}", "INVALID_PORT", "ports[0].container");
	refuse("{\"image\":\"x\",\"ports\":[{\"container\":80,\"host\":22}]}", "INVALID_PORT", "ports[0].host");
	refuse("{\"image\":\"x\",\"ports\":[{\"container\":80},{\"container\":80}]}", "DUPLICATE_PORT", "ports[1].container");
	refuse("{\"image\":\"x\",\"ports\":[{\"container\":80,\"host\":5000},{\"container\":81,\"host\":5000}]}",
	       "DUPLICATE_PORT", "ports[1].host");
	refuse("{\"image\":\"x\",\"ports\":[{\"container\":80,\"protocol\":\"sctp\"}]}", "INVALID_VALUE", "ports[0].protocol");
	refuse("{\"image\":\"x\",\"ports\":[{\"host\":5000}]}", "MISSING_FIELD", "ports[0].container");
	refuse("{\"image\":\"x\",\"command\":[]}", "INVALID_VALUE", "command");
	refuse("{\"image\":\"x\",\"command\":[1]}", "INVALID_TYPE", "command[0]");
	const char *dangerous[] = {"privileged", "cap_add", "CapAdd", "network_mode", "pid_mode", "ipc_mode",
				   "userns_mode", "uts_mode", "devices", "security_opt", "sysctls", "cgroup_parent",
				   "runtime", "binds", "volumes_from", "mounts", "HostConfig", "user", "tmpfs"};
	for (size_t i = 0; i < sizeof dangerous / sizeof *dangerous; i++) {
		char json[128];
		snprintf(json, sizeof json, "{\"image\":\"x\",\"%s\":true}", dangerous[i]);
		refuse(json, "FORBIDDEN_OPTION", dangerous[i]);
	}
	refuse("{\"image\":\"x\",\"volumes\":true}", "INVALID_TYPE", "volumes"); /* supported, as objects */
	/* image references */
	static const char *const good_refs[] = {"busybox", "busybox:latest", "library/busybox:1.36", "cm-test-busybox:latest",
						"registry.example.com:5000/team/app:v1.2_3", "localhost/x", "a__b/c-d.e:T",
						"sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
						"0123456789ab", "app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"};
	for (size_t i = 0; i < sizeof good_refs / sizeof good_refs[0]; i++)
		ok(cm_valid_image_ref(good_refs[i], false), "image ref %s accepted", good_refs[i]);
	static const char *const bad_refs[] = {"", "Busybox", "busy box", "-x", "x-", "a..b", "a___b", "x:", ":tag", "x:-t",
					       "x/", "/x", "x//y", "x@sha256:123", "host:99999/x", "x:tag:more", "sha256:xyz",
					       "x\ny", "../x"};
	for (size_t i = 0; i < sizeof bad_refs / sizeof bad_refs[0]; i++)
		ok(!cm_valid_image_ref(bad_refs[i], false), "image ref '%s' refused", bad_refs[i]);
	ok(!cm_valid_image_ref("app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", true),
	   "a digest is not a build tag");
	ok(!cm_valid_image_ref("sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", true),
	   "an image id is not a build tag");
	ok(cm_valid_image_ref("team/app:v1", true), "team/app:v1 is a build tag");
	/* volumes */
	{
		char root[] = "/tmp/cm-unit-binds.XXXXXX";
		if (mkdtemp(root)) {
			char sub[600], lnk[600];
			snprintf(sub, sizeof sub, "%s/sub", root);
			snprintf(lnk, sizeof lnk, "%s/out", root);
			mkdir(sub, 0755);
			if (symlink("/etc", lnk) < 0)
				printf("# symlink failed\n");
			struct cm_config vc = cfg;
			snprintf(vc.bind_roots, sizeof vc.bind_roots, "%s", root);
			struct {
				const char *json;
				const char *code; /* NULL: accepted */
			} vcases[] = {
				{"[{\"name\":\"data1\",\"target\":\"/data/\"}]", NULL},
				{"[{\"source\":\"SUB\",\"target\":\"/s\",\"read_only\":true}]", NULL},
				{"[{\"source\":\"LNK\",\"target\":\"/s\"}]", "FORBIDDEN_OPTION"},
				{"[{\"source\":\"/etc\",\"target\":\"/s\"}]", "FORBIDDEN_OPTION"},
				{"[{\"name\":\"x\",\"target\":\"/s\"}]", "INVALID_VALUE"},
				{"[{\"name\":\"data1\",\"target\":\"/app/x\"}]", "INVALID_VALUE"},
				{"[{\"name\":\"data1\",\"target\":\"/a/../b\"}]", "INVALID_VALUE"},
				{"[{\"name\":\"data1\",\"target\":\"/a\"},{\"name\":\"d2\",\"target\":\"//a\"}]", "DUPLICATE_TARGET"},
				{"[\"/etc:/etc\"]", "FORBIDDEN_OPTION"},
			};
			for (size_t i = 0; i < sizeof vcases / sizeof vcases[0]; i++) {
				char js[1400];
				const char *src = vcases[i].json;
				const char *at = strstr(src, "SUB") ? strstr(src, "SUB") : strstr(src, "LNK");
				if (at)
					snprintf(js, sizeof js, "%.*s%s%s", (int)(at - src), src, !strncmp(at, "SUB", 3) ? sub : lnk, at + 3);
				else
					snprintf(js, sizeof js, "%s", src);
				struct cm_error e = {0};
				yajl_val v = cm_json_parse(js, strlen(js), &e);
				char *out = NULL;
				int r = v ? cm_spec_volumes(&vc, v, &out, &e) : -1;
				if (vcases[i].code)
					ok(r < 0 && !strcmp(e.code, vcases[i].code), "volumes %s refused with %s (got %s: %s)", js, vcases[i].code,
					   e.code, e.message);
				else
					ok(r == 0 && out && strstr(out, "\"target\":\"/"), "volumes %s accepted: %s", js, out ? out : e.message);
				free(out);
				if (v)
					yajl_tree_free(v);
			}
			struct cm_error e = {0};
			const char *nb = "[{\"source\":\"/tmp\",\"target\":\"/t\"}]";
			yajl_val v = cm_json_parse(nb, strlen(nb), &e);
			char *out = NULL;
			ok(v && cm_spec_volumes(&cfg, v, &out, &e) < 0 && !strcmp(e.code, "FORBIDDEN_OPTION"),
			   "no ALLOWED_BIND_ROOTS: no host path (%s)", e.message);
			free(out);
			if (v)
				yajl_tree_free(v);
			char cmd[700];
			snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
			if (system(cmd) != 0)
				printf("# cleanup failed\n");
		}
	}
	/* app names (POST /apps): [a-z0-9][a-z0-9-]{0,62} */
	static const char *const good_apps[] = {"a", "0", "web", "my-app-2", "a-",
						"abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz01234567890"};
	static const char *const bad_apps[] = {"", "-a", "A", "my_app", "my.app", "a b", "a/b", "\xc3\xa9",
					       "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz012345678901"};
	for (size_t i = 0; i < sizeof good_apps / sizeof *good_apps; i++)
		ok(cm_valid_app_name(good_apps[i]), "app name '%s' accepted", good_apps[i]);
	for (size_t i = 0; i < sizeof bad_apps / sizeof *bad_apps; i++)
		ok(!cm_valid_app_name(bad_apps[i]), "app name '%s' refused", bad_apps[i]);
	ok(!cm_valid_app_name(NULL), "no app name refused");
	return tap_done();
}
