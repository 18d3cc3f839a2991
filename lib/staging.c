/* staging.c: uploads' working directories, the replace journal and the crash sweep
 * (see staging.h for the locking rule every piece here relies on). */
#include "config.h"
#include "staging.h"
#include "paths.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MK_PREFIX ".mk-"
#define UPLOAD_PREFIX ".upload-"
#define TRASH_PREFIX ".trash-"

int cm_stage_tag(char tag[CM_STAGE_TAG_LEN])
{
	unsigned char rnd[12];
	if (cm_random_bytes(rnd, sizeof rnd) < 0)
		return -1;
	cm_b64url_encode(tag, rnd, sizeof rnd); /* 16 characters */
	return 0;
}

int cm_stage_mkdir(int parent, const char *prefix, const char *tag)
{
	char tmp[64], final[64];
	if (cm_pathf(tmp, sizeof tmp, MK_PREFIX "%s", tag) < 0 || cm_pathf(final, sizeof final, "%s%s", prefix, tag) < 0)
		return -1;
	if (mkdirat(parent, tmp, 0700) < 0)
		return -1;
	int fd = openat(parent, tmp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	/* nobody else knows the name yet: the lock cannot be busy */
	if (fd < 0 || flock(fd, LOCK_EX | LOCK_NB) < 0 || renameat(parent, tmp, parent, final) < 0) {
		int saved = errno;
		if (fd >= 0)
			close(fd);
		unlinkat(parent, tmp, AT_REMOVEDIR);
		errno = saved;
		return -1;
	}
	return fd;
}

int cm_merge_dirs(int src, int dst, char *failed, size_t failedsz)
{
	int fd = dup(src);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	if (!d) {
		int saved = errno;
		if (fd >= 0)
			close(fd);
		snprintf(failed, failedsz, "(staging)");
		errno = saved;
		return -1;
	}
	int rc = 0, saved = 0;
	struct dirent *de;
	while (rc == 0 && (de = readdir(d))) {
		const char *n = de->d_name;
		if (!strcmp(n, ".") || !strcmp(n, ".."))
			continue;
		struct stat ss, ds;
		if (fstatat(src, n, &ss, AT_SYMLINK_NOFOLLOW) < 0) {
			rc = -1;
			saved = errno;
			snprintf(failed, failedsz, "%s", n);
			break;
		}
		bool exists = fstatat(dst, n, &ds, AT_SYMLINK_NOFOLLOW) == 0;
		if (S_ISDIR(ss.st_mode) && exists && S_ISDIR(ds.st_mode)) {
			int s2 = openat(src, n, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			int d2 = openat(dst, n, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (s2 < 0 || d2 < 0) {
				rc = -1;
				saved = errno;
				snprintf(failed, failedsz, "%s", n);
			} else if ((rc = cm_merge_dirs(s2, d2, failed, failedsz)) < 0) {
				saved = errno;
			}
			if (s2 >= 0)
				close(s2);
			if (d2 >= 0)
				close(d2);
			continue;
		}
		/* renameat replaces a file or a symlink itself, never what a symlink points to */
		if ((exists && (S_ISDIR(ds.st_mode) || S_ISDIR(ss.st_mode)) && cm_rm_rf_at(dst, n) < 0) ||
		    renameat(src, n, dst, n) < 0) {
			rc = -1;
			saved = errno;
			snprintf(failed, failedsz, "%s", n);
		}
	}
	closedir(d);
	errno = saved;
	return rc;
}

int cm_stage_journal(int stg, enum cm_stage_phase phase, const char *rel)
{
	char text[4400];
	int n = snprintf(text, sizeof text, "%s\n%s\n", phase == CM_STAGE_ASIDE ? "aside" : phase == CM_STAGE_MERGE ? "merge" : "none",
			 rel);
	if (n < 0 || n >= (int)sizeof text) {
		errno = ENAMETOOLONG;
		return -1;
	}
	int fd = openat(stg, "journal.tmp", O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return -1;
	int rc = write(fd, text, (size_t)n) == n && fsync(fd) == 0 ? 0 : -1;
	int saved = errno;
	if (close(fd) < 0 && rc == 0) {
		rc = -1;
		saved = errno;
	}
	if (rc == 0 && (renameat(stg, "journal.tmp", stg, "journal") < 0 || fsync(stg) < 0)) {
		rc = -1;
		saved = errno;
	}
	errno = saved;
	return rc;
}

/* The journal of stg: phase and rel (normalised again: it is read back from disk). */
static enum cm_stage_phase read_journal(int stg, char *rel, size_t relsz)
{
	int fd = openat(stg, "journal", O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return CM_STAGE_NONE;
	char text[4400];
	ssize_t n = read(fd, text, sizeof text - 1);
	close(fd);
	if (n <= 0)
		return CM_STAGE_NONE;
	text[n] = '\0';
	char *nl = strchr(text, '\n');
	if (!nl || n < 2 || text[n - 1] != '\n')
		return CM_STAGE_NONE;
	*nl = '\0';
	text[n - 1] = '\0';
	struct cm_error err;
	if (cm_path_normalize(nl + 1, rel, relsz, &err) < 0)
		return CM_STAGE_NONE;
	return !strcmp(text, "aside") ? CM_STAGE_ASIDE : !strcmp(text, "merge") ? CM_STAGE_MERGE : CM_STAGE_NONE;
}

/* Opens parent/name and takes its lock: the fd, -1 when it is missing (errno ENOENT), or -2
 * when its owner is alive (the lock is held). */
static int open_locked(int parent, const char *name)
{
	int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -1;
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		close(fd);
		return -2;
	}
	return fd;
}

/* Finishes and removes the upload tag (both of its directories are locked by the caller). */
static int recover_upload(int cdir, int stg, int trash, const char *tag, uid_t uid, gid_t gid, long *recovered)
{
	char rel[4200], failed[300] = "";
	enum cm_stage_phase ph = read_journal(stg, rel, sizeof rel);
	if (ph == CM_STAGE_NONE)
		return 0;
	int src = ph == CM_STAGE_ASIDE ? (trash >= 0 ? dup(trash) : -1)
				       : openat(stg, "root", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (src < 0)
		return 0; /* nothing to move (the phase's source is gone) */
	int app = openat(cdir, "app", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	int target = app >= 0 ? cm_mkdirs_beneath(app, rel, uid, gid) : -1;
	int rc = target >= 0 ? cm_merge_dirs(src, target, failed, sizeof failed) : -1;
	if (rc < 0)
		cm_warn("upload %s: cannot %s /app/%s (%s: %s); its files stay in " UPLOAD_PREFIX "%s / " TRASH_PREFIX "%s", tag,
			ph == CM_STAGE_ASIDE ? "put back the old files of" : "finish moving the new files into", rel,
			failed[0] ? failed : "app", strerror(errno), tag, tag);
	else
		(*recovered)++;
	close(src);
	if (target >= 0)
		close(target);
	if (app >= 0)
		close(app);
	return rc;
}

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int cm_stage_sweep_dir(int cdir, uid_t uid, gid_t gid, long *removed, long *recovered)
{
	struct stat st;
	/* no other host user reaches into a container's files (DATA/containers is 0700 as well) */
	if (fstat(cdir, &st) == 0 && (st.st_mode & 077) && fchmod(cdir, 0700) < 0)
		cm_warn("cannot make a container directory 0700: %s", strerror(errno));
	int fd = dup(cdir);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	if (!d) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	char **names = NULL;
	size_t n = 0, cap = 0;
	struct dirent *de;
	int rc = 0;
	while ((de = readdir(d))) {
		const char *nm = de->d_name;
		if (strncmp(nm, UPLOAD_PREFIX, strlen(UPLOAD_PREFIX)) && strncmp(nm, TRASH_PREFIX, strlen(TRASH_PREFIX)) &&
		    strncmp(nm, MK_PREFIX, strlen(MK_PREFIX)))
			continue;
		if (n == cap) {
			char **nn = realloc(names, (cap = cap ? cap * 2 : 16) * sizeof *names);
			if (!nn) {
				rc = -1;
				break;
			}
			names = nn;
		}
		if (!(names[n] = strdup(nm))) {
			rc = -1;
			break;
		}
		n++;
	}
	closedir(d);
	/* sorted: ".mk-" < ".trash-" < ".upload-"; uploads are handled with their trash below */
	if (n)
		qsort(names, n, sizeof *names, name_cmp);
	time_t now = time(NULL);
	for (size_t i = 0; i < n; i++) {
		const char *nm = names[i];
		char other[80];
		if (!strncmp(nm, MK_PREFIX, strlen(MK_PREFIX))) {
			/* made and locked within microseconds by a live owner: only old ones are debris */
			int l = open_locked(cdir, nm);
			if (l >= 0 && fstat(l, &st) == 0 && st.st_mtime < now - 60 && cm_rm_rf_at(cdir, nm) == 0)
				(*removed)++;
			if (l >= 0)
				close(l);
		} else if (!strncmp(nm, TRASH_PREFIX, strlen(TRASH_PREFIX))) {
			/* a trash whose upload is gone: the upload finished (it removes its trash first) */
			const char *tag = nm + strlen(TRASH_PREFIX);
			if (cm_pathf(other, sizeof other, UPLOAD_PREFIX "%s", tag) < 0 ||
			    faccessat(cdir, other, F_OK, AT_SYMLINK_NOFOLLOW) == 0)
				continue;
			int l = open_locked(cdir, nm);
			if (l >= 0 && cm_rm_rf_at(cdir, nm) == 0)
				(*removed)++;
			if (l >= 0)
				close(l);
		} else {
			const char *tag = nm + strlen(UPLOAD_PREFIX);
			int stg = open_locked(cdir, nm);
			if (stg < 0)
				continue; /* alive, or gone meanwhile */
			int trash = -1;
			if (cm_pathf(other, sizeof other, TRASH_PREFIX "%s", tag) == 0)
				trash = open_locked(cdir, other);
			if (trash == -2) {
				close(stg);
				continue;
			}
			if (recover_upload(cdir, stg, trash, tag, uid, gid, recovered) == 0) {
				/* the trash first: a trash without its upload is known to be finished */
				if (trash >= 0 && cm_rm_rf_at(cdir, other) < 0)
					rc = -1;
				if (cm_rm_rf_at(cdir, nm) < 0)
					rc = -1;
				else
					(*removed)++;
			} else {
				rc = -1;
			}
			if (trash >= 0)
				close(trash);
			close(stg);
		}
	}
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	return rc;
}

int cm_stage_sweep(const char *containers_dir, uid_t uid, gid_t gid, long *removed, long *recovered)
{
	*removed = *recovered = 0;
	int top = open(containers_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (top < 0)
		return -1;
	int fd = dup(top);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	if (!d) {
		if (fd >= 0)
			close(fd);
		close(top);
		return -1;
	}
	int rc = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		int cdir = openat(top, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (cdir < 0)
			continue;
		if (cm_stage_sweep_dir(cdir, uid, gid, removed, recovered) < 0)
			rc = -1;
		close(cdir);
	}
	closedir(d);
	close(top);
	return rc;
}
