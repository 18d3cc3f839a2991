/* upload.c: POST /containers/{cuid}/upload-zip: the body is spooled and unpacked into a private
 * working directory beside app/ (DATA/containers/<cuid>/.upload-<tag>, locked while in use:
 * lib/staging.h), then moved in; with replace=true the old files first go aside into
 * .trash-<tag>, under a journal, so that a crash at any point is undone or finished at the next
 * start (cm_stage_sweep) and the old files are never stranded. */
#include "config.h"
#include "app.h"
#include "files.h"
#include "paths.h"
#include "staging.h"
#include "zipcheck.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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
				return cm_files_path_error(err, errno, "(upload)");
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
		return cm_files_path_error(err, errno, rel);
	}
	int fd = openat(pfd, base, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, (perm & 0111) ? 0755 : 0644);
	int saved = errno;
	close(pfd);
	if (fd < 0) {
		if (saved == EEXIST || saved == EISDIR)
			return cm_err_validation(err, "DUPLICATE_ENTRY", NULL, "entry '%.200s' appears twice", rel);
		return cm_files_path_error(err, saved, rel);
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
				rc = cm_files_path_error(err, errno, rel);
				break;
			}
			off += w;
		}
		if (rc < 0)
			break;
	}
	if (rc == 0 && fchown(fd, u->uid, u->gid) < 0)
		rc = cm_files_path_error(err, errno, rel);
	if (close(fd) < 0 && rc == 0)
		rc = cm_files_path_error(err, errno, rel);
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
					     : cm_files_path_error(err, errno, rel);
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

/* cm_merge_dirs with the error of the name it failed on. */
static int merge(int src, int dst, struct cm_error *err)
{
	char failed[300] = "";
	if (cm_merge_dirs(src, dst, failed, sizeof failed) < 0)
		return cm_files_path_error(err, errno, failed);
	return 0;
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
	/* lock: the working directory's fd, held (with its flock) until it is removed */
	int cdir = -1, app = -1, lock = -1, root = -1, target = -1, trash = -1;
	char tag[CM_STAGE_TAG_LEN] = "", stg_name[64] = "", trash_name[64] = "";
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
	if (cm_files_open_dirs(r, cuid, &cdir, &app, &err) < 0)
		goto fail_drain;
	if (cm_stage_tag(tag) < 0) {
		cm_err_internal(&err, "no randomness");
		goto fail_drain;
	}
	/* staged beside app/, not inside it: the container cannot see or race the staging tree */
	snprintf(stg_name, sizeof stg_name, ".upload-%s", tag);
	if ((lock = cm_stage_mkdir(cdir, ".upload-", tag)) < 0) {
		cm_files_path_error(&err, errno, stg_name);
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
	int zipfd = openat(lock, "body.zip", O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	int rc = zipfd < 0 ? cm_files_path_error(&err, errno, "(upload)") : spool_body(u, zipfd, &err);
	if (rc == 0 && (mkdirat(lock, "root", 0700) < 0 ||
			(root = openat(lock, "root", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0))
		rc = cm_files_path_error(&err, errno, "(upload)");
	if (rc == 0)
		rc = extract(u, zipfd, root, &err);
	if (zipfd >= 0)
		close(zipfd);
	/* the spooled zip is not needed any more: only root/ is moved in */
	if (rc == 0 && unlinkat(lock, "body.zip", 0) < 0)
		rc = cm_files_path_error(&err, errno, "(upload)");
	long files = u->files;
	int64_t bytes = u->unpacked;
	names_free(u);
	free(u);
	if (rc < 0)
		goto fail_drain;
	target = cm_mkdirs_beneath(app, rel, uid, gid);
	if (target < 0) {
		cm_files_path_error(&err, errno, rel);
		goto fail;
	}
	if (replace) {
		/* the journal first: from here on a crash is undone (aside) or finished (merge) at
		 * the next start, never left with the old files stranded in the trash */
		snprintf(trash_name, sizeof trash_name, ".trash-%s", tag);
		if (cm_stage_journal(lock, CM_STAGE_ASIDE, rel) < 0 || (trash = cm_stage_mkdir(cdir, ".trash-", tag)) < 0) {
			cm_files_path_error(&err, errno, trash_name);
			trash_name[0] = '\0';
			goto fail;
		}
		if (merge(target, trash, &err) < 0) { /* replace=true: the old files go aside first */
			char failed[300];
			if (cm_merge_dirs(trash, target, failed, sizeof failed) < 0) {
				/* the trash is kept (locked until we leave, then the sweep retries) */
				cm_warn("upload %s of %s: the old files could not all be put back (%s: %s)", tag, cuid, failed,
					strerror(errno));
				trash_name[0] = stg_name[0] = '\0';
			}
			goto fail;
		}
	}
	if (cm_stage_journal(lock, CM_STAGE_MERGE, rel) < 0) {
		cm_files_path_error(&err, errno, "(upload journal)");
		if (replace) {
			char failed[300];
			if (cm_merge_dirs(trash, target, failed, sizeof failed) < 0)
				trash_name[0] = stg_name[0] = '\0'; /* the ASIDE journal tells the sweep */
		}
		goto fail;
	}
	if (merge(root, target, &err) < 0) {
		cm_warn("upload %s of %s: moving the files in stopped: %s", tag, cuid, err.message);
		if (replace) {
			/* the target held nothing but new files: back to the old ones */
			char failed[300];
			if (cm_stage_journal(lock, CM_STAGE_ASIDE, rel) < 0 || cm_empty_dir_at(target) < 0 ||
			    cm_merge_dirs(trash, target, failed, sizeof failed) < 0) {
				cm_warn("upload %s of %s: the old files could not all be put back: %s", tag, cuid, strerror(errno));
				trash_name[0] = stg_name[0] = '\0'; /* kept for the sweep (journal: aside) */
			}
		}
		goto fail;
	}
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
	/* the trash before the upload: a trash whose upload is gone is known to be finished */
	if (cdir >= 0 && trash_name[0] && cm_rm_rf_at(cdir, trash_name) < 0)
		cm_warn("could not remove %s of %s", trash_name, cuid);
	if (cdir >= 0 && stg_name[0] && cm_rm_rf_at(cdir, stg_name) < 0)
		cm_warn("could not remove staging %s of %s", stg_name, cuid);
	int fds[] = {cdir, app, root, target, trash, lock};
	for (size_t i = 0; i < CM_ARRAY_LEN(fds); i++)
		if (fds[i] >= 0)
			close(fds[i]);
}
