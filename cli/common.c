/* common.c: helpers the launcher's commands share (see cli.h). */
#include "config.h"
#include "cli.h"
#include "cm_config.h"
#include "json.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

bool cli_installed(void)
{
	static int cached = -1;
	if (cached >= 0)
		return cached;
	cached = 0;
	char *self = cm_self_dir();
	char bindir[PATH_MAX], selfr[PATH_MAX];
	if (self && realpath(self, selfr) && realpath(BINDIR, bindir) && !strcmp(selfr, bindir))
		cached = 1;
	free(self);
	return cached;
}

const char *cli_default_env_file(void)
{
	return cli_installed() ? SYSCONFDIR "/container-manager/container-manager.conf" : ".env";
}

const char *cli_find_share(char *out, size_t outsz, const char *rel)
{
	const char *env = getenv("CM_SHARE_DIR");
	if (env && *env && cm_pathf(out, outsz, "%s/%s", env, rel) == 0 && access(out, R_OK) == 0)
		return out;
	char *self = cm_self_dir();
	/* the build tree: cli/../nginx, cli/../sql */
	if (self && !cli_installed() && cm_pathf(out, outsz, "%s/../%s", self, rel) == 0 && access(out, R_OK) == 0) {
		free(self);
		return out;
	}
	free(self);
	if (cm_pathf(out, outsz, "%s/%s", PKGDATADIR, rel) == 0 && access(out, R_OK) == 0)
		return out;
	return NULL;
}

sqlite3 *cli_db_open_ro(const char *path)
{
	if (access(path, F_OK) != 0) {
		fprintf(stderr, "container-manager: database %s: %s (has the stack ever started? `container-manager migrate` creates it)\n",
			path, strerror(errno));
		return NULL;
	}
	sqlite3 *h = NULL;
	int rc = sqlite3_open_v2(path, &h, SQLITE_OPEN_READONLY, NULL);
	if (rc != SQLITE_OK) {
		fprintf(stderr, "container-manager: database %s: %s\n", path, h ? sqlite3_errmsg(h) : sqlite3_errstr(rc));
		sqlite3_close(h);
		return NULL;
	}
	sqlite3_busy_timeout(h, 10000);
	return h;
}

int cli_jg_column(yajl_gen g, sqlite3_stmt *st, int col)
{
	switch (sqlite3_column_type(st, col)) {
	case SQLITE_INTEGER:
		return cm_jg_int(g, sqlite3_column_int64(st, col));
	case SQLITE_FLOAT:
		return cm_jg_double(g, sqlite3_column_double(st, col));
	case SQLITE_NULL:
		return cm_jg_null(g);
	default: {
		const char *s = (const char *)sqlite3_column_text(st, col);
		int n = sqlite3_column_bytes(st, col);
		if (!s)
			return cm_jg_null(g);
		/* text that is not UTF-8 (a blob, a mangled path) is shown escaped, not dropped */
		if (!cm_valid_utf8(s, (size_t)n)) {
			char esc[4096];
			cm_log_escape(esc, sizeof esc, s);
			return cm_jg_str(g, esc);
		}
		return cm_jg_strn(g, s, (size_t)n);
	}
	}
}

int cli_row_json(FILE *f, sqlite3_stmt *st)
{
	yajl_gen g = cm_jg_new();
	if (!g)
		return -1;
	int rc = yajl_gen_map_open(g) == yajl_gen_status_ok ? 0 : -1;
	for (int i = 0; rc == 0 && i < sqlite3_column_count(st); i++) {
		const char *name = sqlite3_column_name(st, i);
		if (cm_jg_str(g, name ? name : "") < 0 || cli_jg_column(g, st, i) < 0)
			rc = -1;
	}
	if (rc == 0 && yajl_gen_map_close(g) != yajl_gen_status_ok)
		rc = -1;
	char *out = cm_jg_finish(g);
	if (!out)
		return -1;
	if (rc == 0 && fprintf(f, "%s\n", out) < 0)
		rc = -1;
	free(out);
	return rc;
}

int cli_config_db(const char *env_file, struct cm_config *cfg, char *dbpath, size_t dbsz)
{
	struct cm_error err = {0};
	if (cm_config_load(cfg, env_file, &err) < 0) {
		fprintf(stderr, "container-manager: %s\n", err.message);
		return -1;
	}
	if (cm_config_path(cfg, dbpath, dbsz, "db/cm.sqlite") < 0) {
		fprintf(stderr, "container-manager: CM_DATA_DIR is too long\n");
		return -1;
	}
	return 0;
}

bool cli_unix_probe(const char *dir, const char *name)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (cm_pathf(sa.sun_path, sizeof sa.sun_path, "%s/%s", dir, name) < 0)
		return false;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	bool ok = fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
	if (fd >= 0)
		close(fd);
	return ok;
}
