/* backup.c: `container-manager backup DEST`: an online copy of the database with SQLite's
 * backup API while the stack runs (readers and writers go on; pages a writer changes during
 * the copy are copied again). The copy is written beside DEST, checked, synced and renamed
 * into place, so DEST is either absent or a complete database. */
#include "config.h"
#include "cli.h"
#include "cm_config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int fsync_path(const char *path, int flags)
{
	int fd = open(path, flags | O_CLOEXEC);
	if (fd < 0)
		return -1;
	int rc = fsync(fd);
	close(fd);
	return rc;
}

/* Copies src into the new file tmp. Returns 0, or -1 with the reason on stderr. */
static int copy_db(sqlite3 *src, const char *tmp)
{
	sqlite3 *dst = NULL;
	int rc = sqlite3_open_v2(tmp, &dst, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
	if (rc != SQLITE_OK) {
		fprintf(stderr, "container-manager: backup: %s: %s\n", tmp, dst ? sqlite3_errmsg(dst) : sqlite3_errstr(rc));
		sqlite3_close(dst);
		return -1;
	}
	sqlite3_backup *b = sqlite3_backup_init(dst, "main", src, "main");
	if (!b) {
		fprintf(stderr, "container-manager: backup: %s\n", sqlite3_errmsg(dst));
		sqlite3_close(dst);
		return -1;
	}
	/* small steps: the source is locked only while a step reads */
	do {
		rc = sqlite3_backup_step(b, 256);
		if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED)
			sqlite3_sleep(20);
	} while (rc == SQLITE_OK || rc == SQLITE_BUSY || rc == SQLITE_LOCKED);
	sqlite3_backup_finish(b);
	if (rc != SQLITE_DONE) {
		fprintf(stderr, "container-manager: backup: %s\n", sqlite3_errstr(rc));
		sqlite3_close(dst);
		return -1;
	}
	/* a self-contained file: no WAL beside it */
	sqlite3_stmt *st = NULL;
	bool ok = sqlite3_exec(dst, "PRAGMA journal_mode=DELETE", NULL, NULL, NULL) == SQLITE_OK &&
		  sqlite3_prepare_v2(dst, "PRAGMA quick_check", -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW &&
		  !strcmp((const char *)sqlite3_column_text(st, 0), "ok");
	if (!ok)
		fprintf(stderr, "container-manager: backup: the copy does not pass quick_check: %s\n", sqlite3_errmsg(dst));
	sqlite3_finalize(st);
	if (sqlite3_close(dst) != SQLITE_OK)
		ok = false;
	return ok ? 0 : -1;
}

int cmd_backup(const char *env_file, int argc, char **argv)
{
	const char *dest = NULL;
	bool force = false;
	for (int i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--env-file") && i + 1 < argc) {
			env_file = argv[++i];
		} else if (!strcmp(argv[i], "--force")) {
			force = true;
		} else if (argv[i][0] != '-' && !dest) {
			dest = argv[i];
		} else {
			dest = NULL;
			break;
		}
	}
	if (!dest) {
		fprintf(stderr, "usage: container-manager backup DEST [--force] [--env-file FILE]\n");
		return 2;
	}
	if (!force && access(dest, F_OK) == 0) {
		fprintf(stderr, "container-manager: backup: %s exists (--force replaces it)\n", dest);
		return 1;
	}
	struct cm_config cfg;
	char dbpath[PATH_MAX], tmp[PATH_MAX];
	if (cli_config_db(env_file, &cfg, dbpath, sizeof dbpath) < 0)
		return 1;
	if (cm_pathf(tmp, sizeof tmp, "%s.tmp-%ld", dest, (long)getpid()) < 0) {
		fprintf(stderr, "container-manager: backup: path too long\n");
		return 1;
	}
	sqlite3 *src = cli_db_open_ro(dbpath);
	if (!src)
		return 1;
	/* the copy holds everything the database does (credentials hashes, audit): owner only */
	mode_t old = umask(077);
	unlink(tmp);
	int rc = copy_db(src, tmp);
	umask(old);
	sqlite3_close(src);
	if (rc == 0 && fsync_path(tmp, O_RDONLY) < 0)
		rc = -1;
	if (rc == 0 && rename(tmp, dest) < 0) {
		fprintf(stderr, "container-manager: backup: %s: %s\n", dest, strerror(errno));
		rc = -1;
	}
	if (rc < 0) {
		unlink(tmp);
		char j[PATH_MAX + 16];
		if (cm_pathf(j, sizeof j, "%s-journal", tmp) == 0)
			unlink(j);
		return 1;
	}
	char dir[PATH_MAX];
	if (cm_pathf(dir, sizeof dir, "%s", dest) < 0) {
		fprintf(stderr, "container-manager: backup: %s: path too long\n", dest);
		return 1;
	}
	char *slash = strrchr(dir, '/');
	if (slash)
		*(slash == dir ? slash + 1 : slash) = '\0';
	fsync_path(slash ? dir : ".", O_RDONLY | O_DIRECTORY);
	struct stat sb;
	printf("backup of %s written to %s (%lld bytes)\n", dbpath, dest, stat(dest, &sb) == 0 ? (long long)sb.st_size : 0LL);
	return 0;
}
