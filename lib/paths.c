/* paths.c: path normalisation and symlink-proof opening beneath a directory fd. */
#include "config.h"
#include "paths.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

int cm_path_normalize(const char *in, char *out, size_t outsz, struct cm_error *err)
{
	if (!in)
		in = "";
	size_t n = strlen(in);
	if (n > 4096)
		return cm_err_validation(err, "INVALID_PATH", "path", "path is longer than 4096 bytes");
	for (const unsigned char *p = (const unsigned char *)in; *p; p++)
		if (*p < 0x20 || *p == 0x7f)
			return cm_err_validation(err, "INVALID_PATH", "path", "path contains a control character");
	if (!cm_valid_utf8(in, n))
		return cm_err_validation(err, "INVALID_PATH", "path", "path is not valid UTF-8");
	const char *p = in;
	if (*p == '/') {
		/* absolute paths are accepted only inside /app */
		if (strncmp(p, "/app", 4) || (p[4] != '\0' && p[4] != '/'))
			return cm_err_validation(err, "PATH_TRAVERSAL", "path", "path must be inside /app");
		p += 4;
	}
	size_t o = 0;
	while (*p) {
		while (*p == '/')
			p++;
		if (!*p)
			break;
		const char *end = strchr(p, '/');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		if (len == 1 && p[0] == '.') {
			p += len;
			continue;
		}
		if (len == 2 && p[0] == '.' && p[1] == '.')
			return cm_err_validation(err, "PATH_TRAVERSAL", "path", "path must not contain '..'");
		if (len > 255)
			return cm_err_validation(err, "INVALID_PATH", "path", "a path component is longer than 255 bytes");
		if (o + len + 2 > outsz)
			return cm_err_validation(err, "INVALID_PATH", "path", "path is too long");
		if (o)
			out[o++] = '/';
		memcpy(out + o, p, len);
		o += len;
		p += len;
	}
	out[o] = '\0';
	return 0;
}

/* The same walk openat2 does, one component at a time with O_NOFOLLOW. */
static int walk_beneath(int dirfd, const char *rel, int flags, mode_t mode)
{
	char buf[4200];
	if (snprintf(buf, sizeof buf, "%s", rel) >= (int)sizeof buf) {
		errno = ENAMETOOLONG;
		return -1;
	}
	int cur = dup(dirfd);
	if (cur < 0)
		return -1;
	char *save = NULL;
	char *tok = strtok_r(buf, "/", &save);
	while (tok) {
		char *next = strtok_r(NULL, "/", &save);
		if (!strcmp(tok, "..")) {
			close(cur);
			errno = EXDEV;
			return -1;
		}
		int fd = next ? openat(cur, tok, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
			      : openat(cur, tok, flags | O_NOFOLLOW | O_CLOEXEC, mode);
		int saved = errno;
		struct stat st;
		/* as openat2 with RESOLVE_NO_SYMLINKS says it: ELOOP for a link, whatever the flags */
		if (fd < 0 && saved != ELOOP && fstatat(cur, tok, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode))
			saved = ELOOP;
		close(cur);
		if (fd < 0) {
			errno = saved;
			return -1;
		}
		cur = fd;
		tok = next;
	}
	return cur;
}

int cm_open_beneath(int dirfd, const char *rel, int flags, mode_t mode)
{
	if (!rel || !*rel)
		rel = ".";
	struct open_how how = {
		.flags = (uint64_t)(flags | O_CLOEXEC),
		.mode = (flags & O_CREAT) ? mode : 0,
		.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
	};
	long fd = syscall(SYS_openat2, dirfd, rel, &how, sizeof how);
	if (fd >= 0 || errno != ENOSYS)
		return (int)fd;
	if (!strcmp(rel, "."))
		return openat(dirfd, ".", flags | O_CLOEXEC, mode);
	return walk_beneath(dirfd, rel, flags, mode);
}

int cm_mkdirs_beneath(int dirfd, const char *rel, uid_t uid, gid_t gid)
{
	char buf[4200];
	if (snprintf(buf, sizeof buf, "%s", rel) >= (int)sizeof buf) {
		errno = ENAMETOOLONG;
		return -1;
	}
	int cur = dup(dirfd);
	if (cur < 0)
		return -1;
	char *save = NULL;
	for (char *tok = strtok_r(buf, "/", &save); tok; tok = strtok_r(NULL, "/", &save)) {
		if (mkdirat(cur, tok, 0755) == 0) {
			if (fchownat(cur, tok, uid, gid, AT_SYMLINK_NOFOLLOW) < 0) {
				close(cur);
				return -1;
			}
		} else if (errno != EEXIST) {
			int saved = errno;
			close(cur);
			errno = saved;
			return -1;
		}
		int fd = openat(cur, tok, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		int saved = errno;
		struct stat st;
		if (fd < 0 && fstatat(cur, tok, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode))
			saved = ELOOP; /* a planted link, not merely a file in the way */
		close(cur);
		if (fd < 0) {
			errno = saved;
			return -1;
		}
		cur = fd;
	}
	return cur;
}

int cm_empty_dir_at(int dirfd)
{
	int fd = dup(dirfd);
	if (fd < 0)
		return -1;
	DIR *d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -1;
	}
	int rc = 0;
	struct dirent *de;
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..") && cm_rm_rf_at(dirfd, de->d_name) < 0)
			rc = -1;
	closedir(d);
	return rc;
}

int cm_rm_rf_at(int dirfd, const char *name)
{
	struct stat st;
	if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? 0 : -1;
	if (!S_ISDIR(st.st_mode))
		return unlinkat(dirfd, name, 0);
	int sub = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (sub < 0)
		return -1;
	int rc = cm_empty_dir_at(sub);
	close(sub);
	if (unlinkat(dirfd, name, AT_REMOVEDIR) < 0)
		rc = -1;
	return rc;
}

int cm_rm_rf(const char *path)
{
	/* AT_FDCWD: the same symlink-proof walk for a plain path */
	return cm_rm_rf_at(AT_FDCWD, path);
}
