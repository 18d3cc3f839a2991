/* files.c: a container's /app files: upload-zip (streamed, staged, then moved in),
 * download (one file, with Range) and download-zip (streamed as it is written).
 * Every path is resolved beneath /app without following symlinks, because the container
 * owns /app and may plant links or swap names while we work. */
#include "config.h"
#include "app.h"
#include "paths.h"
#include "zipcheck.h"

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

#define IO_CHUNK 65536

/* Opens the container's directory (DATA/containers/<cuid>) and its app directory. */
static int open_dirs(struct cm_req *r, const char *cuid, int *cdir, int *app, struct cm_error *err)
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

static int path_error(struct cm_error *err, int e, const char *path)
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

/* ---------------------------------------------------------------- upload */

static int limit_error(struct cm_error *err, const char *code, long long limit, const char *what)
{
	cm_err_set(err, 413, "payload_too_large", code, NULL, "%s (limit %lld)", what, limit);
	err->limit = limit;
	return -1;
}

struct upload {
	struct cm_req *r;
	char buf[IO_CHUNK];
	int64_t compressed;
	unsigned char magic[4]; /* first bytes of the body */
	int64_t unpacked;
	long files, entries;
	uid_t uid;
	gid_t gid;
	/* names seen, to refuse duplicates (open addressing) */
	char **names;
	size_t nslots, nnames;
};

/* Copies the request body into fd (a file in the private staging directory), bounded. */
static int spool_body(struct upload *u, int fd, struct cm_error *err)
{
	int64_t max = u->r->app->cfg.upload_max_bytes;
	for (;;) {
		int n = FCGX_GetStr(u->buf, sizeof u->buf, u->r->fr->in);
		if (n <= 0)
			break;
		for (int i = 0; i < n && u->compressed + i < 4; i++)
			u->magic[u->compressed + i] = (unsigned char)u->buf[i];
		u->compressed += n;
		if (u->compressed > max)
			return limit_error(err, "BODY_TOO_LARGE", max, "the upload is larger than allowed");
		for (int off = 0; off < n;) {
			ssize_t w = write(fd, u->buf + off, (size_t)(n - off));
			if (w < 0) {
				if (errno == EINTR)
					continue;
				return path_error(err, errno, "(upload)");
			}
			off += (int)w;
		}
	}
	return 0;
}

static uint64_t hash_str(const char *s)
{
	uint64_t h = 1469598103934665603ULL;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ULL;
	return h;
}

/* Adds name; returns 1 if it was new, 0 if already present, -1 on allocation failure. */
static int names_add(struct upload *u, const char *name)
{
	if ((u->nnames + 1) * 2 > u->nslots) {
		size_t ns = u->nslots ? u->nslots * 2 : 1024;
		char **n = calloc(ns, sizeof *n);
		if (!n)
			return -1;
		for (size_t i = 0; i < u->nslots; i++) {
			if (!u->names[i])
				continue;
			size_t j = hash_str(u->names[i]) & (ns - 1);
			while (n[j])
				j = (j + 1) & (ns - 1);
			n[j] = u->names[i];
		}
		free(u->names);
		u->names = n;
		u->nslots = ns;
	}
	size_t j = hash_str(name) & (u->nslots - 1);
	while (u->names[j]) {
		if (!strcmp(u->names[j], name))
			return 0;
		j = (j + 1) & (u->nslots - 1);
	}
	u->names[j] = strdup(name);
	if (!u->names[j])
		return -1;
	u->nnames++;
	return 1;
}

static void names_free(struct upload *u)
{
	for (size_t i = 0; i < u->nslots; i++)
		free(u->names[i]);
	free(u->names);
	u->names = NULL;
	u->nslots = u->nnames = 0;
}



/* Writes one regular-file entry below stg (a private directory nobody else can change). */
static int extract_file(struct upload *u, struct archive *a, int stg, const char *rel, mode_t perm,
			struct cm_error *err)
{
	const struct cm_config *cfg = &u->r->app->cfg;
	char parent[4200];
	if (cm_pathf(parent, sizeof parent, "%s", rel) < 0)
		return cm_err_validation(err, "INVALID_PATH", "path", "path is too long");
	char *slash = strrchr(parent, '/');
	const char *base = rel;
	int pfd;
	if (slash) {
		*slash = '\0';
		base = rel + (slash - parent) + 1;
		pfd = cm_mkdirs_beneath(stg, parent, u->uid, u->gid);
	} else {
		pfd = dup(stg);
	}
	if (pfd < 0) {
		if (errno == ENOTDIR || errno == EEXIST || errno == ELOOP)
			return cm_err_validation(err, "DUPLICATE_ENTRY", NULL, "entry '%.200s' conflicts with a file of the same name", rel);
		return path_error(err, errno, rel);
	}
	int fd = openat(pfd, base, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, (perm & 0111) ? 0755 : 0644);
	int saved = errno;
	close(pfd);
	if (fd < 0) {
		if (saved == EEXIST || saved == EISDIR)
			return cm_err_validation(err, "DUPLICATE_ENTRY", NULL, "entry '%.200s' appears twice", rel);
		return path_error(err, saved, rel);
	}
	int rc = 0;
	for (;;) {
		char chunk[IO_CHUNK];
		la_ssize_t n = archive_read_data(a, chunk, sizeof chunk);
		if (n == 0)
			break;
		if (n < 0) {
			rc = cm_err_validation(err, "CORRUPT_ZIP", NULL, "entry '%.200s' cannot be read: %s", rel,
					       archive_error_string(a) ? archive_error_string(a) : "corrupt data");
			break;
		}
		u->unpacked += n;
		if (u->unpacked > cfg->upload_max_unpacked) {
			rc = limit_error(err, "ZIP_TOO_LARGE", cfg->upload_max_unpacked, "the archive unpacks to more bytes than allowed");
			break;
		}
		if (u->unpacked > (1 << 20) && u->unpacked / (u->compressed > 0 ? u->compressed : 1) > cfg->upload_max_ratio) {
			rc = limit_error(err, "ZIP_BOMB", cfg->upload_max_ratio, "the archive's compression ratio is suspiciously high");
			break;
		}
		for (la_ssize_t off = 0; off < n;) {
			ssize_t w = write(fd, chunk + off, (size_t)(n - off));
			if (w < 0) {
				if (errno == EINTR)
					continue;
				rc = path_error(err, errno, rel);
				break;
			}
			off += w;
		}
		if (rc < 0)
			break;
	}
	if (rc == 0 && fchown(fd, u->uid, u->gid) < 0)
		rc = path_error(err, errno, rel);
	if (close(fd) < 0 && rc == 0)
		rc = path_error(err, errno, rel);
	if (rc == 0)
		u->files++;
	return rc;
}

/* Extracts the spooled zip (fd) into stg. The central directory is read (seekable reader),
 * so entry types (symlinks!) and names are those every other zip tool sees. */
static int extract(struct upload *u, int zipfd, int stg, struct cm_error *err)
{
	const struct cm_config *cfg = &u->r->app->cfg;
	struct archive *a = archive_read_new();
	if (!a)
		return cm_err_internal(err, "out of memory");
	/* only the zip reader: the other formats carry most of libarchive's history of bugs */
	archive_read_support_format_zip_seekable(a);
	int rc = 0;
	if (u->compressed == 0) {
		archive_read_free(a);
		return cm_err_validation(err, "EMPTY_BODY", NULL, "the request body is empty; send a zip archive");
	}
	bool pk = u->magic[0] == 'P' && u->magic[1] == 'K';
	if (cm_zip_check_central(zipfd, u->compressed, err) < 0) {
		archive_read_free(a);
		return -1;
	}
	if (lseek(zipfd, 0, SEEK_SET) < 0 || archive_read_open_fd(a, zipfd, IO_CHUNK) != ARCHIVE_OK) {
		rc = pk ? cm_err_validation(err, "CORRUPT_ZIP", NULL, "the zip archive is truncated or corrupt")
			: cm_err_validation(err, "NOT_A_ZIP", NULL, "the request body is not a zip archive");
		archive_read_free(a);
		return rc;
	}
	struct archive_entry *e;
	for (;;) {
		int r = archive_read_next_header(a, &e);
		if (r == ARCHIVE_EOF)
			break;
		if (r != ARCHIVE_OK && r != ARCHIVE_WARN) {
			const char *msg = archive_error_string(a) ? archive_error_string(a) : "unreadable archive";
			if (u->compressed == 0)
				rc = cm_err_validation(err, "EMPTY_BODY", NULL, "the request body is empty; send a zip archive");
			else if (u->entries == 0 && !pk)
				rc = cm_err_validation(err, "NOT_A_ZIP", NULL, "the request body is not a zip archive");
			else
				rc = cm_err_validation(err, "CORRUPT_ZIP", NULL, "the zip archive is corrupt or truncated: %s", msg);
			break;
		}
		if (++u->entries > cfg->upload_max_entries) {
			rc = limit_error(err, "TOO_MANY_ENTRIES", cfg->upload_max_entries, "the archive has too many entries");
			break;
		}
		const char *name = archive_entry_pathname_utf8(e);
		if (!name)
			name = archive_entry_pathname(e);
		char rel[4200];
		if (cm_zip_entry_name(name, rel, sizeof rel, err) < 0) {
			rc = -1;
			break;
		}
		if (archive_entry_hardlink(e)) {
			rc = cm_err_validation(err, "HARDLINK_ENTRY", NULL, "entry '%.200s' is a hard link; links are refused", name);
			break;
		}
		mode_t type = archive_entry_filetype(e);
		if (type == AE_IFLNK) {
			rc = cm_err_validation(err, "SYMLINK_ENTRY", NULL, "entry '%.200s' is a symbolic link; links are refused", name);
			break;
		}
		if (type != AE_IFREG && type != AE_IFDIR) {
			rc = cm_err_validation(err, "SPECIAL_ENTRY", NULL, "entry '%.200s' is a device, FIFO or socket", name);
			break;
		}
		int added = names_add(u, rel);
		if (added < 0) {
			rc = cm_err_internal(err, "out of memory");
			break;
		}
		if (!added && type == AE_IFREG) {
			rc = cm_err_validation(err, "DUPLICATE_ENTRY", NULL, "entry '%.200s' appears twice", name);
			break;
		}
		if (type == AE_IFDIR) {
			int fd = cm_mkdirs_beneath(stg, rel, u->uid, u->gid);
			if (fd < 0) {
				rc = (errno == ENOTDIR || errno == EEXIST || errno == ELOOP)
					     ? cm_err_validation(err, "DUPLICATE_ENTRY", NULL,
								 "directory entry '%.200s' conflicts with a file", name)
					     : path_error(err, errno, rel);
				break;
			}
			close(fd);
			continue;
		}
		if (extract_file(u, a, stg, rel, archive_entry_perm(e), err) < 0) {
			rc = -1;
			break;
		}
	}
	if (rc == 0 && u->entries == 0)
		rc = u->compressed == 0 ? cm_err_validation(err, "EMPTY_BODY", NULL, "the request body is empty; send a zip archive")
					: cm_err_validation(err, "NOT_A_ZIP", NULL, "the request body is not a zip archive with entries");
	archive_read_free(a);
	return rc;
}

/* Moves everything from src into dst (both directory fds), replacing what is there.
 * renameat replaces a file or a symlink itself, never what a symlink points to. */
static int merge(int src, int dst, struct cm_error *err)
{
	int fd = dup(src);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	if (!d) {
		if (fd >= 0)
			close(fd);
		return cm_err_set(err, 500, "io_error", "IO_ERROR", NULL, "cannot read the staged upload");
	}
	int rc = 0;
	struct dirent *de;
	while (rc == 0 && (de = readdir(d))) {
		const char *n = de->d_name;
		if (!strcmp(n, ".") || !strcmp(n, ".."))
			continue;
		struct stat ss, ds;
		if (fstatat(src, n, &ss, AT_SYMLINK_NOFOLLOW) < 0) {
			rc = path_error(err, errno, n);
			break;
		}
		bool exists = fstatat(dst, n, &ds, AT_SYMLINK_NOFOLLOW) == 0;
		if (S_ISDIR(ss.st_mode) && exists && S_ISDIR(ds.st_mode)) {
			int s2 = openat(src, n, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			int d2 = openat(dst, n, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (s2 < 0 || d2 < 0)
				rc = path_error(err, errno, n);
			else
				rc = merge(s2, d2, err);
			if (s2 >= 0)
				close(s2);
			if (d2 >= 0)
				close(d2);
			continue;
		}
		if (exists && (S_ISDIR(ds.st_mode) || S_ISDIR(ss.st_mode)) && cm_rm_rf_at(dst, n) < 0) {
			rc = path_error(err, errno, n);
			break;
		}
		if (renameat(src, n, dst, n) < 0)
			rc = path_error(err, errno, n);
	}
	closedir(d);
	return rc;
}

static bool zip_content_type(const char *ct)
{
	if (!ct)
		return false;
	static const char *const ok[] = {"application/zip", "application/x-zip-compressed", "application/x-zip"};
	for (size_t i = 0; i < CM_ARRAY_LEN(ok); i++) {
		size_t n = strlen(ok[i]);
		if (!strncasecmp(ct, ok[i], n) && (ct[n] == '\0' || ct[n] == ';' || ct[n] == ' '))
			return true;
	}
	return false;
}

void cm_req_drain(struct cm_req *r)
{
	char buf[IO_CHUNK];
	int64_t left = 64LL << 20;
	int n;
	while (left > 0 && (n = FCGX_GetStr(buf, sizeof buf, r->fr->in)) > 0)
		left -= n;
}

static bool query_bool(struct cm_req *r, const char *key, bool *out)
{
	const char *v = cm_req_query(r, key);
	*out = false;
	if (!v)
		return true;
	if (!strcmp(v, "true") || !strcmp(v, "1")) {
		*out = true;
		return true;
	}
	return !strcmp(v, "false") || !strcmp(v, "0");
}

void h_container_upload(struct cm_req *r)
{
	const char *cuid = cm_path_cuid(r);
	if (!cuid || cm_refuse_async(r, "an upload is unpacked while its body streams in") || !cm_container_exists(r, cuid)) {
		cm_req_drain(r);
		return;
	}
	struct cm_error err = {0};
	const struct cm_config *cfg = &r->app->cfg;
	char rel[4200];
	bool replace;
	int cdir = -1, app = -1, stg = -1, target = -1, trash = -1;
	char stg_name[64] = "", trash_name[64] = "";
	if (!zip_content_type(cm_req_header(r, "CONTENT_TYPE"))) {
		cm_err_validation(&err, "INVALID_CONTENT_TYPE", "Content-Type", "send the archive as Content-Type: application/zip");
		goto fail_drain;
	}
	if (cm_path_normalize(cm_req_query(r, "path"), rel, sizeof rel, &err) < 0)
		goto fail_drain;
	if (!query_bool(r, "replace", &replace)) {
		cm_err_validation(&err, "INVALID_VALUE", "replace", "replace must be true or false");
		goto fail_drain;
	}
	const char *cl = cm_req_header(r, "CONTENT_LENGTH");
	if (cl && *cl && strtoll(cl, NULL, 10) > cfg->upload_max_bytes) {
		limit_error(&err, "BODY_TOO_LARGE", cfg->upload_max_bytes, "the upload is larger than allowed");
		goto fail_drain;
	}
	unsigned uid, gid;
	cm_parse_uid(cfg->default_uid, &uid, &gid);
	if (open_dirs(r, cuid, &cdir, &app, &err) < 0)
		goto fail_drain;
	char rnd[16];
	if (cm_random_bytes(rnd, sizeof rnd) < 0) {
		cm_err_internal(&err, "no randomness");
		goto fail_drain;
	}
	char tag[40];
	cm_b64url_encode(tag, (unsigned char *)rnd, 12);
	snprintf(stg_name, sizeof stg_name, ".upload-%s", tag);
	/* staged beside app/, not inside it: the container cannot see or race the staging tree */
	if (mkdirat(cdir, stg_name, 0700) < 0 ||
	    (stg = openat(cdir, stg_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0) {
		path_error(&err, errno, stg_name);
		stg_name[0] = '\0';
		goto fail_drain;
	}
	struct upload *u = calloc(1, sizeof *u);
	if (!u) {
		cm_err_internal(&err, "out of memory");
		goto fail_drain;
	}
	u->r = r;
	u->uid = uid;
	u->gid = gid;
	int zipfd = openat(stg, "body.zip", O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	int root = -1;
	int rc = zipfd < 0 ? path_error(&err, errno, "(upload)") : spool_body(u, zipfd, &err);
	if (rc == 0 && (mkdirat(stg, "root", 0700) < 0 ||
			(root = openat(stg, "root", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0))
		rc = path_error(&err, errno, "(upload)");
	if (rc == 0)
		rc = extract(u, zipfd, root, &err);
	if (zipfd >= 0)
		close(zipfd);
	if (rc < 0 && root >= 0)
		close(root);
	if (rc == 0) {
		close(stg);
		stg = root; /* what gets merged into the target */
	}
	long files = u->files;
	int64_t bytes = u->unpacked;
	names_free(u);
	free(u);
	if (rc < 0)
		goto fail_drain;
	target = cm_mkdirs_beneath(app, rel, uid, gid);
	if (target < 0) {
		path_error(&err, errno, rel);
		goto fail;
	}
	if (replace) {
		snprintf(trash_name, sizeof trash_name, ".trash-%s", tag);
		if (mkdirat(cdir, trash_name, 0700) < 0 ||
		    (trash = openat(cdir, trash_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0) {
			path_error(&err, errno, trash_name);
			trash_name[0] = '\0';
			goto fail;
		}
		if (merge(target, trash, &err) < 0) { /* replace=true: the old files go aside first */
			struct cm_error e2;
			merge(trash, target, &e2);
			goto fail;
		}
	}
	if (merge(stg, target, &err) < 0)
		goto fail;
	yajl_gen g = cm_jg_new();
	yajl_gen_map_open(g);
	cm_jg_kv_int(g, "files", files);
	cm_jg_kv_int(g, "bytes", bytes);
	char shown[4300 + 8];
	if (cm_pathf(shown, sizeof shown, "/app%s%s", rel[0] ? "/" : "", rel) < 0)
		shown[0] = '\0';
	cm_jg_kv_str(g, "path", shown);
	cm_jg_str(g, "replaced");
	cm_jg_bool(g, replace);
	yajl_gen_map_close(g);
	char *body = cm_jg_finish(g);
	cm_respond_json(r, 200, NULL, body ? body : "{}");
	free(body);
	goto cleanup;
fail_drain:
	cm_req_drain(r);
fail:
	cm_respond_error(r, &err, NULL);
cleanup:
	if (cdir >= 0 && stg_name[0] && cm_rm_rf_at(cdir, stg_name) < 0)
		cm_warn("could not remove staging %s of %s", stg_name, cuid);
	if (cdir >= 0 && trash_name[0] && cm_rm_rf_at(cdir, trash_name) < 0)
		cm_warn("could not remove %s of %s", trash_name, cuid);
	int fds[] = {cdir, app, stg, target, trash};
	for (size_t i = 0; i < CM_ARRAY_LEN(fds); i++)
		if (fds[i] >= 0)
			close(fds[i]);
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
	if (open_dirs(r, cuid, &cdir, &app, &err) < 0)
		goto fail;
	if (!rel[0]) {
		cm_respond_errorf(r, 400, "validation_error", "IS_A_DIRECTORY", "path",
				  "/app is a directory; use /containers/%s/download-zip", cuid);
		goto out;
	}
	/* O_NONBLOCK: a FIFO planted by the container must not hang the worker */
	fd = cm_open_beneath(app, rel, O_RDONLY | O_NOCTTY | O_NONBLOCK, 0);
	if (fd < 0) {
		path_error(&err, errno, rel);
		goto fail;
	}
	struct stat st;
	if (fstat(fd, &st) < 0) {
		path_error(&err, errno, rel);
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
	if (open_dirs(r, cuid, &cdir, &app, &err) < 0) {
		cm_respond_error(r, &err, NULL);
		return;
	}
	dir = cm_open_beneath(app, rel, O_RDONLY | O_DIRECTORY, 0);
	if (dir < 0) {
		if (errno == ENOTDIR)
			cm_respond_errorf(r, 400, "validation_error", "NOT_A_DIRECTORY", "path",
					  "/app/%s is a file; use /containers/%s/download?path=%s", rel, cuid, rel);
		else
			cm_respond_error(r, (path_error(&err, errno, rel), &err), NULL);
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
