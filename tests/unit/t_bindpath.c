/* t_bindpath.c: the bind-source rules (bindpath.h): path containment, writable overlap, and the
 * walk that refuses links, foreign or group/other-writable parents and the service's own dirs. */
#include "config.h"
#include "bindpath.h"
#include "tap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char base[64];

static const char *p(const char *rel)
{
	static char buf[4][PATH_MAX];
	static int i;
	i = (i + 1) % 4;
	snprintf(buf[i], sizeof buf[i], "%s/%s", base, rel);
	return buf[i];
}

int main(void)
{
	ok(cm_path_within("/a/b", "/a"), "/a/b within /a");
	ok(cm_path_within("/a", "/a"), "/a within itself");
	ok(!cm_path_within("/ab", "/a"), "/ab not within /a");
	ok(cm_path_within("/x", "/"), "everything within /");
	ok(cm_bind_overlap("/r", true, "/r/v", false), "writable parent over a read-only child overlaps");
	ok(cm_bind_overlap("/r/v", false, "/r", true), "in either order");
	ok(!cm_bind_overlap("/r", false, "/r/v", true), "read-only parent, writable child: fine");
	ok(!cm_bind_overlap("/r", true, "/r", true), "the same directory twice: fine");
	ok(!cm_bind_overlap("/r/a", true, "/r/ab", true), "siblings with a common prefix: fine");

	snprintf(base, sizeof base, "/tmp/t_bindpath.XXXXXX");
	if (!mkdtemp(base)) {
		ok(0, "mkdtemp");
		return tap_done();
	}
	chmod(base, 0755);
	struct cm_config cfg;
	memset(&cfg, 0, sizeof cfg);
	snprintf(cfg.bind_roots, sizeof cfg.bind_roots, "%s", p("root"));
	snprintf(cfg.data_dir, sizeof cfg.data_dir, "%s", p("root/data"));
	snprintf(cfg.run_dir, sizeof cfg.run_dir, "%s", p("run"));
	mkdir(p("root"), 0755);
	mkdir(p("root/a"), 0755);
	mkdir(p("root/a/b"), 0777);
	mkdir(p("root/data"), 0700);
	mkdir(p("root/open"), 0777);
	mkdir(p("root/open/x"), 0755);
	mkdir(p("outside"), 0755);
	FILE *f = fopen(p("root/a/file"), "w");
	if (f)
		fclose(f);
	ok(symlink(p("outside"), p("root/a/out")) == 0, "a link to outside");
	ok(symlink(p("root/a/b"), p("root/in")) == 0, "a link inside the root");
	if (mkfifo(p("root/a/fifo"), 0600) < 0)
		ok(0, "mkfifo");
	chmod(p("root/a/b"), 0777);
	chmod(p("root/open"), 0777);
	uid_t me = geteuid();
	char why[400];
	ok(cm_bind_verify(&cfg, p("root/a/b"), me, why, sizeof why) == CM_BIND_OK, "a plain directory: %s", why);
	ok(cm_bind_verify(&cfg, p("root/a/b"), me, why, sizeof why) == CM_BIND_OK, "its own mode does not matter");
	ok(cm_bind_verify(&cfg, p("root/a"), me, why, sizeof why) == CM_BIND_OK, "a directory below the root");
	ok(cm_bind_verify(&cfg, p("root/a/file"), me, why, sizeof why) == CM_BIND_OK, "a regular file");
	ok(cm_bind_verify(&cfg, p("root/a/fifo"), me, why, sizeof why) == CM_BIND_BAD_TYPE, "a fifo: %s", why);
	ok(cm_bind_verify(&cfg, p("root/a/out"), me, why, sizeof why) == CM_BIND_SYMLINK, "a link: %s", why);
	ok(cm_bind_verify(&cfg, p("root/in"), me, why, sizeof why) == CM_BIND_SYMLINK, "a link inside the root too");
	ok(cm_bind_verify(&cfg, p("root/in/x"), me, why, sizeof why) == CM_BIND_SYMLINK, "a link as a middle component");
	ok(cm_bind_verify(&cfg, p("root/a/missing"), me, why, sizeof why) == CM_BIND_MISSING, "a missing source: %s", why);
	ok(cm_bind_verify(&cfg, p("root/a/file/x"), me, why, sizeof why) == CM_BIND_MISSING, "a file as a directory");
	ok(cm_bind_verify(&cfg, p("root/open/x"), me, why, sizeof why) == CM_BIND_UNSAFE_PARENT,
	   "below a world-writable directory: %s", why);
	ok(cm_bind_verify(&cfg, p("root/open"), me, why, sizeof why) == CM_BIND_OK, "the world-writable directory itself");
	ok(cm_bind_verify(&cfg, p("root/a/b"), me + 4242, why, sizeof why) == (me == 0 ? CM_BIND_OK : CM_BIND_UNSAFE_PARENT),
	   "parents owned by root, or else by the service's uid only");
	ok(cm_bind_verify(&cfg, p("outside"), me, why, sizeof why) == CM_BIND_NOT_UNDER_ROOT, "outside the roots: %s", why);
	ok(cm_bind_verify(&cfg, p("root/a/../a/b"), me, why, sizeof why) == CM_BIND_NOT_UNDER_ROOT, "a .. component");
	ok(cm_bind_verify(&cfg, p("root/a//b"), me, why, sizeof why) == CM_BIND_NOT_UNDER_ROOT, "an empty component");
	ok(cm_bind_verify(&cfg, p("root/data"), me, why, sizeof why) == CM_BIND_SERVICE_DIR, "the data directory: %s", why);
	ok(cm_bind_verify(&cfg, p("root"), me, why, sizeof why) == CM_BIND_SERVICE_DIR, "the root, which holds the data directory");
	snprintf(cfg.data_dir, sizeof cfg.data_dir, "%s", p("root/a/b/data"));
	mkdir(p("root/a/b/data"), 0700);
	chmod(p("root/a/b"), 0755);
	ok(cm_bind_verify(&cfg, p("root/a"), me, why, sizeof why) == CM_BIND_SERVICE_DIR, "a directory above the data directory");
	ok(cm_bind_verify(&cfg, p("root/a/b/data/x"), me, why, sizeof why) == CM_BIND_SERVICE_DIR, "one inside it");
	if (me == 0) {
		ok(chown(p("root/a"), 4242, 4242) == 0, "hand root/a to uid 4242");
		snprintf(cfg.data_dir, sizeof cfg.data_dir, "%s", p("elsewhere"));
		ok(cm_bind_verify(&cfg, p("root/a/b"), me, why, sizeof why) == CM_BIND_UNSAFE_PARENT,
		   "below a directory of another user: %s", why);
		ok(cm_bind_verify(&cfg, p("root/a"), me, why, sizeof why) == CM_BIND_OK, "that directory itself is fine");
		ok(cm_bind_verify(&cfg, p("root"), me, why, sizeof why) == CM_BIND_OK, "and so is the root itself");
	}
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf %s", base);
	if (system(cmd) != 0)
		ok(0, "cleanup");
	return tap_done();
}
