/* bindpath.c: the bind-source rules of bindpath.h (path walk, ownership, overlap). */
#include "config.h"
#include "bindpath.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

bool cm_path_within(const char *path, const char *anc)
{
	if (!strcmp(anc, "/"))
		return path[0] == '/';
	size_t l = strlen(anc);
	return !strncmp(path, anc, l) && (path[l] == '\0' || path[l] == '/');
}

bool cm_bind_overlap(const char *a, bool a_rw, const char *b, bool b_rw)
{
	if (!strcmp(a, b))
		return false; /* the same directory: neither can rename its own mount point */
	return (a_rw && cm_path_within(b, a)) || (b_rw && cm_path_within(a, b));
}

/* Whether a directory on the path can be changed only by root and the service. */
static bool safe_dir(const struct stat *st, uid_t service_uid)
{
	return (st->st_uid == 0 || st->st_uid == service_uid) && !(st->st_mode & (S_IWGRP | S_IWOTH));
}

static enum cm_bind_problem problem(enum cm_bind_problem p, char *why, size_t whysz, const char *fmt, const char *a)
{
	snprintf(why, whysz, fmt, a);
	return p;
}

/* The canonical root of cfg's ALLOWED_BIND_ROOTS that src lies in, into root[PATH_MAX]. */
static bool find_root(const struct cm_config *cfg, const char *src, char *root)
{
	char tmp[sizeof cfg->bind_roots], *save = NULL;
	snprintf(tmp, sizeof tmp, "%s", cfg->bind_roots);
	for (char *r = strtok_r(tmp, ",", &save); r; r = strtok_r(NULL, ",", &save)) {
		while (*r == ' ')
			r++;
		if (!*r || !realpath(r, root))
			continue;
		if (cm_path_within(src, root))
			return true;
	}
	return false;
}

static bool overlaps_service_dir(const char *src, const char *dir)
{
	char real[PATH_MAX];
	if (!dir[0] || !realpath(dir, real))
		return false;
	return cm_path_within(src, real) || cm_path_within(real, src);
}

enum cm_bind_problem cm_bind_verify(const struct cm_config *cfg, const char *src, uid_t service_uid, char *why,
				    size_t whysz)
{
	char root[PATH_MAX];
	if (src[0] != '/' || strlen(src) >= PATH_MAX || !find_root(cfg, src, root))
		return problem(CM_BIND_NOT_UNDER_ROOT, why, whysz, "%.200s is not under ALLOWED_BIND_ROOTS", src);
	if (overlaps_service_dir(src, cfg->data_dir) || overlaps_service_dir(src, cfg->run_dir))
		return problem(CM_BIND_SERVICE_DIR, why, whysz,
			       "%.200s is, holds or lies in the service's own data or run directory", src);
	int dfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return problem(CM_BIND_MISSING, why, whysz, "the bind root of %.200s cannot be opened", src);
	const char *rel = src + strlen(root);
	char comp[NAME_MAX + 1];
	enum cm_bind_problem p = CM_BIND_OK;
	struct stat st;
	if (*rel == '/')
		rel++;
	while (*rel) {
		const char *end = strchr(rel, '/');
		size_t n = end ? (size_t)(end - rel) : strlen(rel);
		if (n == 0 || n > NAME_MAX || (n == 1 && rel[0] == '.') || (n == 2 && rel[0] == '.' && rel[1] == '.')) {
			p = problem(CM_BIND_NOT_UNDER_ROOT, why, whysz, "%.200s is not a canonical path", src);
			break;
		}
		memcpy(comp, rel, n);
		comp[n] = '\0';
		/* the directory that holds this component: whoever may write it may swap the component */
		if (fstat(dfd, &st) < 0 || !S_ISDIR(st.st_mode)) {
			p = problem(CM_BIND_MISSING, why, whysz, "a directory on the path of %.200s is gone", src);
			break;
		}
		if (!safe_dir(&st, service_uid)) {
			p = problem(CM_BIND_UNSAFE_PARENT, why, whysz,
				    "a directory on the path of %.200s belongs to another user or is writable by its group or "
				    "others (they could replace the path while Docker mounts it)",
				    src);
			break;
		}
		int nfd = openat(dfd, comp, O_PATH | O_NOFOLLOW | O_CLOEXEC);
		if (nfd < 0) {
			p = problem(CM_BIND_MISSING, why, whysz, "%.200s does not exist", src);
			break;
		}
		close(dfd);
		dfd = nfd;
		if (fstat(dfd, &st) < 0) {
			p = problem(CM_BIND_MISSING, why, whysz, "%.200s cannot be examined", src);
			break;
		}
		if (S_ISLNK(st.st_mode)) {
			p = problem(CM_BIND_SYMLINK, why, whysz, "the path of %.200s goes through a symbolic link", src);
			break;
		}
		rel += n;
		if (*rel == '/')
			rel++; /* one: a second is an empty component, refused above */
		if (*rel && !S_ISDIR(st.st_mode)) {
			p = problem(CM_BIND_MISSING, why, whysz, "%.200s does not exist", src);
			break;
		}
	}
	if (p == CM_BIND_OK && (fstat(dfd, &st) < 0 || !(S_ISDIR(st.st_mode) || S_ISREG(st.st_mode))))
		p = problem(CM_BIND_BAD_TYPE, why, whysz, "%.200s is neither a directory nor a regular file", src);
	close(dfd);
	if (p == CM_BIND_OK && whysz)
		why[0] = '\0';
	return p;
}
