/* files.c: a container's /app files: download (one file, with Range) and download-zip
 * (streamed as it is written); upload-zip is in upload.c.
 * Every path is resolved beneath /app without following symlinks, because the container
 * owns /app and may plant links or swap names while we work. */
#include "config.h"
#include "app.h"
#include "files.h"
#include "paths.h"

#include <archive.h>
#include <archive_entry.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int cm_files_open_dirs(struct cm_req *r, const char *cuid, int *cdir, int *app, struct cm_error *err)
{
	char path[PATH_MAX];
	if (cm_pathf(path, sizeof path, "%s/containers/%s", r->app->cfg.data_dir, cuid) < 0)
		return cm_err_internal(err, "path too long");
	*cdir = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (*cdir < 0)
		return cm_err_set(err, 500, "io_error", "IO_ERROR", NULL, "the files of %s are missing", cuid);
	*app = openat(*cdir, "app", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (*app < 0) {
		close(*cdir);
		*cdir = -1;
		return cm_err_set(err, 500, "io_error", "IO_ERROR", NULL, "the app directory of %s is missing", cuid);
	}
	return 0;
}

int cm_files_path_error(struct cm_error *err, int e, const char *path)
{
	switch (e) {
	case ENOENT:
		return cm_err_set(err, 404, "not_found", "FILE_NOT_FOUND", "path", "/app/%s does not exist", path);
	case ELOOP:
	case EXDEV:
		return cm_err_validation(err, "SYMLINK_IN_PATH", "path",
					 "/app/%s goes through a symbolic link; links are not followed", path);
	case ENOTDIR:
		return cm_err_validation(err, "NOT_A_DIRECTORY", "path", "a component of /app/%s is not a directory", path);
	case EISDIR:
		return cm_err_validation(err, "IS_A_DIRECTORY", "path", "/app/%s is a directory", path);
	case ENOSPC:
	case EDQUOT:
		return cm_err_set(err, 500, "io_error", "DISK_FULL", NULL, "no space left for /app/%s", path);
	default:
		return cm_err_set(err, 500, "io_error", "IO_ERROR", NULL, "/app/%s: %s", path, strerror(e));
	}
}

/* ---------------------------------------------------------------- download */

static const char *mime_type(const char *name)
{
	static const char *const map[][2] = {
		{".txt", "text/plain; charset=utf-8"}, {".log", "text/plain; charset=utf-8"},
		{".py", "text/x-python; charset=utf-8"}, {".json", "application/json"}, {".html", "text/html; charset=utf-8"},
		{".css", "text/css"}, {".js", "text/javascript"}, {".csv", "text/csv"}, {".md", "text/markdown; charset=utf-8"},
		{".png", "image/png"}, {".jpg", "image/jpeg"}, {".jpeg", "image/jpeg"}, {".gif", "image/gif"},
		{".svg", "image/svg+xml"}, {".pdf", "application/pdf"}, {".zip", "application/zip"},
		{".gz", "application/gzip"}, {".tar", "application/x-tar"}, {".xml", "application/xml"},
		{".yml", "application/yaml"}, {".yaml", "application/yaml"},
	};
	const char *dot = strrchr(name, '.');
	if (dot)
		for (size_t i = 0; i < CM_ARRAY_LEN(map); i++)
			if (!strcasecmp(dot, map[i][0]))
				return map[i][1];
	return "application/octet-stream";
}

/* Content-Disposition with an ASCII fallback and the exact UTF-8 name (RFC 6266/5987):
 * no quote, CR, LF or other byte of the name can reach the header unencoded. */
static void disposition(const char *name, char *out, size_t outsz)
{
	char ascii[256], enc[1024];
	size_t a = 0, e = 0;
	for (const unsigned char *p = (const unsigned char *)name; *p && a + 1 < sizeof ascii; p++)
		ascii[a++] = (isalnum(*p) || *p == '.' || *p == '-' || *p == '_') ? (char)*p : '_';
	ascii[a] = '\0';
	for (const unsigned char *p = (const unsigned char *)name; *p && e + 4 < sizeof enc; p++) {
		if (isalnum(*p) || strchr(".-_~", *p))
			enc[e++] = (char)*p;
		else
			e += (size_t)snprintf(enc + e, sizeof enc - e, "%%%02X", *p);
	}
	enc[e] = '\0';
	snprintf(out, outsz, "Content-Disposition: attachment; filename=\"%s\"; filename*=UTF-8''%s\r\n",
		 a ? ascii : "download", enc);
}

/* Parses a single "bytes=a-b" range against size. 0 = no/ignored range, 1 = range, -1 = unsatisfiable. */
static int parse_range(const char *h, long long size, long long *from, long long *to)
{
	if (!h || strncmp(h, "bytes=", 6) || strchr(h, ','))
		return 0;
	const char *p = h + 6;
	char *end;
	if (*p == '-') {
		long long n = strtoll(p + 1, &end, 10);
		if (*end || end == p + 1 || n <= 0)
			return 0;
		if (size == 0)
			return -1;
		*from = n >= size ? 0 : size - n;
		*to = size - 1;
		return 1;
	}
	long long a = strtoll(p, &end, 10);
	if (end == p || *end != '-' || a < 0)
		return 0;
	p = end + 1;
	long long b = size - 1;
	if (*p) {
		b = strtoll(p, &end, 10);
		if (*end || b < a)
			return 0;
	}
	if (a >= size)
		return -1;
	if (b >= size)
		b = size - 1;
	*from = a;
	*to = b;
	return 1;
}

void h_container_download(struct cm_req *r)
{
	const char *cuid = cm_path_cuid(r);
	if (!cuid || !cm_container_exists(r, cuid))
		return;
	struct cm_error err = {0};
	char rel[4200];
	const char *q = cm_req_query(r, "path");
	if (!q || !*q) {
		cm_respond_errorf(r, 400, "validation_error", "MISSING_PATH", "path",
				  "path is required; for a whole directory use /containers/%s/download-zip", cuid);
		return;
	}
	if (cm_path_normalize(q, rel, sizeof rel, &err) < 0) {
		cm_respond_error(r, &err, NULL);
		return;
	}
	int cdir = -1, app = -1, fd = -1;
	if (cm_files_open_dirs(r, cuid, &cdir, &app, &err) < 0)
		goto fail;
	if (!rel[0]) {
		cm_respond_errorf(r, 400, "validation_error", "IS_A_DIRECTORY", "path",
				  "/app is a directory; use /containers/%s/download-zip", cuid);
		goto out;
	}
	/* O_NONBLOCK: a FIFO planted by the container must not hang the worker */
	fd = cm_open_beneath(app, rel, O_RDONLY | O_NOCTTY | O_NONBLOCK, 0);
	if (fd < 0) {
		cm_files_path_error(&err, errno, rel);
		goto fail;
	}
	struct stat st;
	if (fstat(fd, &st) < 0) {
		cm_files_path_error(&err, errno, rel);
		goto fail;
	}
	if (S_ISDIR(st.st_mode)) {
		cm_respond_errorf(r, 400, "validation_error", "IS_A_DIRECTORY", "path",
				  "/app/%s is a directory; use /containers/%s/download-zip?path=%s", rel, cuid, rel);
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		cm_respond_errorf(r, 400, "validation_error", "NOT_A_REGULAR_FILE", "path", "/app/%s is not a regular file", rel);
		goto out;
	}
	const char *base = strrchr(rel, '/') ? strrchr(rel, '/') + 1 : rel;
	char hdr[1600];
	disposition(base, hdr, sizeof hdr);
	size_t hl = strlen(hdr);
	long long size = st.st_size, from = 0, to = size - 1;
	int rr = parse_range(cm_req_header(r, "HTTP_RANGE"), size, &from, &to);
	if (rr < 0) {
		snprintf(hdr + hl, sizeof hdr - hl, "Content-Range: bytes */%lld\r\n", size);
		struct cm_error e416;
		cm_err_set(&e416, 416, "validation_error", "RANGE_NOT_SATISFIABLE", "Range", "the file has %lld bytes", size);
		cm_respond_error(r, &e416, hdr + hl);
		goto out;
	}
	if (rr > 0)
		snprintf(hdr + hl, sizeof hdr - hl, "Accept-Ranges: bytes\r\nContent-Range: bytes %lld-%lld/%lld\r\n", from, to, size);
	else
		snprintf(hdr + hl, sizeof hdr - hl, "Accept-Ranges: bytes\r\n");
	long long len = size ? to - from + 1 : 0;
	cm_respond_start(r, rr > 0 ? 206 : 200, mime_type(base), hdr, len);
	if (!strcmp(r->method, "HEAD"))
		goto out;
	char buf[IO_CHUNK];
	long long off = from, left = len;
	while (left > 0) {
		ssize_t n = pread(fd, buf, (size_t)(left < (long long)sizeof buf ? left : (long long)sizeof buf), off);
		if (n <= 0) {
			if (n < 0 && errno == EINTR)
				continue;
			cm_warn("download of %s/%s ended early", cuid, rel);
			break; /* the file shrank: the client sees a short body */
		}
		if (FCGX_PutStr(buf, (int)n, r->fr->out) < 0)
			break;
		off += n;
		left -= n;
	}
	goto out;
fail:
	cm_respond_error(r, &err, NULL);
out:
	if (fd >= 0)
		close(fd);
	if (app >= 0)
		close(app);
	if (cdir >= 0)
		close(cdir);
}

/* ---------------------------------------------------------------- download-zip */

static la_ssize_t zip_write(struct archive *a, void *ud, const void *buf, size_t n)
{
	(void)a;
	struct cm_req *r = ud;
	if (FCGX_PutStr(buf, (int)n, r->fr->out) < 0)
		return -1;
	return (la_ssize_t)n;
}

/* Adds the tree below dirfd to the zip under prefix. Symlinks and special files are skipped. */
static int zip_tree(struct archive *a, int dirfd, const char *prefix, int depth)
{
	if (depth > 64)
		return 0;
	int fd = dup(dirfd);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	if (!d) {
		if (fd >= 0)
			close(fd);
		return 0;
	}
	int rc = 0;
	struct dirent *de;
	struct archive_entry *e = archive_entry_new();
	while (rc == 0 && (de = readdir(d))) {
		const char *n = de->d_name;
		if (!strcmp(n, ".") || !strcmp(n, ".."))
			continue;
		char path[4300];
		if (snprintf(path, sizeof path, "%s%s", prefix, n) >= (int)sizeof path)
			continue;
		struct stat st;
		if (fstatat(dirfd, n, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		if (S_ISDIR(st.st_mode)) {
			int sub = openat(dirfd, n, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (sub < 0)
				continue;
			char dpath[4302];
			if (cm_pathf(dpath, sizeof dpath, "%s/", path) < 0) {
				close(sub);
				continue; /* never a cut name in the zip */
			}
			archive_entry_clear(e);
			archive_entry_copy_stat(e, &st);
			archive_entry_set_pathname_utf8(e, dpath);
			if (archive_write_header(a, e) != ARCHIVE_OK)
				rc = -1;
			else
				rc = zip_tree(a, sub, dpath, depth + 1);
			close(sub);
		} else if (S_ISREG(st.st_mode)) {
			int f = openat(dirfd, n, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
			if (f < 0)
				continue;
			if (fstat(f, &st) < 0 || !S_ISREG(st.st_mode)) {
				close(f);
				continue;
			}
			archive_entry_clear(e);
			archive_entry_copy_stat(e, &st);
			archive_entry_set_pathname_utf8(e, path);
			if (archive_write_header(a, e) != ARCHIVE_OK) {
				close(f);
				rc = -1;
				break;
			}
			char buf[IO_CHUNK];
			long long left = st.st_size;
			while (left > 0) {
				ssize_t got = read(f, buf, sizeof buf);
				if (got <= 0)
					break;
				if (got > left)
					got = (ssize_t)left; /* the file grew: the entry keeps its announced size */
				if (archive_write_data(a, buf, (size_t)got) < 0) {
					rc = -1;
					break;
				}
				left -= got;
			}
			/* a file that shrank is padded so the announced size stays true */
			memset(buf, 0, sizeof buf);
			while (rc == 0 && left > 0) {
				size_t pad = left < (long long)sizeof buf ? (size_t)left : sizeof buf;
				if (archive_write_data(a, buf, pad) < 0)
					rc = -1;
				left -= (long long)pad;
			}
			close(f);
		}
	}
	archive_entry_free(e);
	closedir(d);
	return rc;
}

void h_container_download_zip(struct cm_req *r)
{
	const char *cuid = cm_path_cuid(r);
	if (!cuid || !cm_container_exists(r, cuid))
		return;
	struct cm_error err = {0};
	char rel[4200];
	if (cm_path_normalize(cm_req_query(r, "path"), rel, sizeof rel, &err) < 0) {
		cm_respond_error(r, &err, NULL);
		return;
	}
	int cdir = -1, app = -1, dir = -1;
	if (cm_files_open_dirs(r, cuid, &cdir, &app, &err) < 0) {
		cm_respond_error(r, &err, NULL);
		return;
	}
	dir = cm_open_beneath(app, rel, O_RDONLY | O_DIRECTORY, 0);
	if (dir < 0) {
		if (errno == ENOTDIR)
			cm_respond_errorf(r, 400, "validation_error", "NOT_A_DIRECTORY", "path",
					  "/app/%s is a file; use /containers/%s/download?path=%s", rel, cuid, rel);
		else
			cm_respond_error(r, (cm_files_path_error(&err, errno, rel), &err), NULL);
		goto out;
	}
	const char *base = rel[0] ? (strrchr(rel, '/') ? strrchr(rel, '/') + 1 : rel) : "app";
	char name[300], hdr[1600];
	if (cm_pathf(name, sizeof name, "%s.zip", base) < 0)
		snprintf(name, sizeof name, "app.zip"); /* a name component is at most 255 bytes: never */
	disposition(name, hdr, sizeof hdr);
	struct archive *a = archive_write_new();
	if (!a || archive_write_set_format_zip(a) != ARCHIVE_OK) {
		if (a)
			archive_write_free(a);
		cm_respond_errorf(r, 500, "internal_error", "INTERNAL", NULL, "zip writer unavailable");
		goto out;
	}
	archive_write_set_bytes_in_last_block(a, 1);
	archive_write_set_options(a, "hdrcharset=UTF-8");
	cm_respond_start(r, 200, "application/zip", hdr, -1);
	if (strcmp(r->method, "HEAD") && archive_write_open(a, r, NULL, zip_write, NULL) == ARCHIVE_OK) {
		if (zip_tree(a, dir, "", 0) < 0)
			cm_warn("download-zip of %s/%s stopped: %s", cuid, rel,
				archive_error_string(a) ? archive_error_string(a) : "client went away");
		archive_write_close(a);
	}
	archive_write_free(a);
out:
	if (dir >= 0)
		close(dir);
	if (app >= 0)
		close(app);
	if (cdir >= 0)
		close(cdir);
}
