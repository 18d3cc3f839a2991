/* buildctx.c: uploaded build contexts, read with libarchive (see buildctx.h). */
#include "config.h"
#include "buildctx.h"
#include "paths.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define BLOCK 65536

static struct archive *open_reader(const char *path, struct cm_error *err)
{
	struct archive *a = archive_read_new();
	if (!a) {
		cm_err_internal(err, "out of memory");
		return NULL;
	}
	archive_read_support_format_zip(a);
	archive_read_support_format_tar(a);
	archive_read_support_filter_gzip(a);
	archive_read_support_filter_bzip2(a);
	archive_read_support_filter_xz(a);
	if (archive_read_open_filename(a, path, BLOCK) != ARCHIVE_OK) {
		cm_err_validation(err, "NOT_AN_ARCHIVE", "body", "the build context is not a zip or tar archive: %s",
				  archive_error_string(a) ? archive_error_string(a) : "unreadable");
		archive_read_free(a);
		return NULL;
	}
	return a;
}

/* The entry's clean name into out ("" = the root); -1 with err when it is not acceptable. */
static int entry_name(struct archive_entry *e, char *out, size_t outsz, struct cm_error *err)
{
	const char *n = archive_entry_pathname(e);
	if (!n || !*n)
		return cm_err_validation(err, "INVALID_ENTRY_NAME", "body", "an entry of the build context has no name");
	if (n[0] == '/' || strchr(n, '\\'))
		return cm_err_validation(err, "INVALID_ENTRY_NAME", "body", "entry \"%.200s\" is not a relative path",
					 cm_valid_utf8(n, strlen(n)) ? n : "?");
	if (!cm_valid_utf8(n, strlen(n)))
		return cm_err_validation(err, "INVALID_ENTRY_NAME", "body", "an entry name is not UTF-8");
	if (cm_path_normalize(n, out, outsz, err) < 0) {
		cm_err_prefix(err, "build context entry \"%.200s\"", n);
		return -1;
	}
	return 0;
}

/* rel below dir? *rest gets the part under it. */
static bool under(const char *rel, const char *dir, const char **rest)
{
	size_t n = strlen(dir);
	if (!n) {
		*rest = rel;
		return true;
	}
	if (strncmp(rel, dir, n))
		return false;
	if (rel[n] == '\0') {
		*rest = "";
		return true;
	}
	if (rel[n] != '/')
		return false;
	*rest = rel + n + 1;
	return true;
}

static int entry_type_ok(struct archive_entry *e, const char *name, struct cm_error *err)
{
	if (archive_entry_hardlink(e))
		return cm_err_validation(err, "HARDLINK_ENTRY", "body", "entry \"%.200s\" is a hard link", name);
	mode_t t = archive_entry_filetype(e);
	if (t != AE_IFREG && t != AE_IFDIR && t != AE_IFLNK)
		return cm_err_validation(err, "SPECIAL_ENTRY", "body", "entry \"%.200s\" is not a file, directory or link", name);
	return 0;
}

int cm_buildctx_scan(const char *path, struct cm_buildctx *b, struct cm_error *err)
{
	char bd[1024];
	if (cm_path_normalize(b->build_dir, bd, sizeof bd, err) < 0) {
		err->field[0] = '\0';
		snprintf(err->field, sizeof err->field, "build_dir");
		return -1;
	}
	snprintf(b->build_dir, sizeof b->build_dir, "%s", bd);
	if (b->dockerfile[0]) {
		char df[1024];
		if (cm_path_normalize(b->dockerfile, df, sizeof df, err) < 0 || !df[0]) {
			return cm_err_validation(err, "INVALID_VALUE", "dockerfile",
						 "dockerfile must name a file inside the build directory");
		}
		snprintf(b->dockerfile, sizeof b->dockerfile, "%s", df);
	}
	struct archive *a = open_reader(path, err);
	if (!a)
		return -1;
	bool has_named = false, has_container = false, has_docker = false, dir_seen = !bd[0];
	int rc = 0;
	b->entries = 0;
	b->unpacked = 0;
	struct archive_entry *e;
	int r;
	while ((r = archive_read_next_header(a, &e)) == ARCHIVE_OK || r == ARCHIVE_WARN) {
		char rel[4200];
		if ((rc = entry_name(e, rel, sizeof rel, err)) < 0)
			break;
		if ((rc = entry_type_ok(e, rel, err)) < 0)
			break;
		if (++b->entries > b->max_entries) {
			rc = cm_err_set(err, 413, "payload_too_large", "TOO_MANY_ENTRIES", "body",
					"the build context has more than %ld entries", b->max_entries);
			break;
		}
		if (archive_entry_size_is_set(e) && archive_entry_size(e) > 0)
			b->unpacked += archive_entry_size(e);
		if (b->unpacked > b->max_unpacked) {
			rc = cm_err_set(err, 413, "payload_too_large", "CONTEXT_TOO_LARGE", "body",
					"the build context unpacks to more than %lld bytes", (long long)b->max_unpacked);
			break;
		}
		const char *rest;
		if (!under(rel, bd, &rest))
			continue;
		dir_seen = true;
		bool reg = archive_entry_filetype(e) == AE_IFREG;
		if (reg && b->dockerfile[0] && !strcmp(rest, b->dockerfile))
			has_named = true;
		if (reg && !strcmp(rest, "Containerfile"))
			has_container = true;
		if (reg && !strcmp(rest, "Dockerfile"))
			has_docker = true;
	}
	b->tar = (archive_format(a) & ARCHIVE_FORMAT_BASE_MASK) == ARCHIVE_FORMAT_TAR;
	if (rc == 0 && r != ARCHIVE_EOF)
		rc = cm_err_validation(err, b->entries ? "CORRUPT_ARCHIVE" : "NOT_AN_ARCHIVE", "body",
				       "the build context is not a readable zip or tar archive: %s",
				       archive_error_string(a) ? archive_error_string(a) : "truncated");
	archive_read_free(a);
	if (rc < 0)
		return -1;
	if (!dir_seen)
		return cm_err_validation(err, "NO_BUILD_DIR", "build_dir", "the build context has no directory %s", bd);
	if (b->dockerfile[0]) {
		if (!has_named)
			return cm_err_validation(err, "NO_DOCKERFILE", "dockerfile", "the build context has no %s%s%s", bd,
						 bd[0] ? "/" : "", b->dockerfile);
	} else if (has_container) {
		snprintf(b->dockerfile, sizeof b->dockerfile, "Containerfile");
	} else if (has_docker) {
		snprintf(b->dockerfile, sizeof b->dockerfile, "Dockerfile");
	} else {
		return cm_err_validation(err, "NO_DOCKERFILE", "body", "the build context has no Containerfile or Dockerfile%s%s",
					 bd[0] ? " in " : "", bd);
	}
	return 0;
}

static la_ssize_t fd_write(struct archive *a, void *ud, const void *buf, size_t n)
{
	int fd = *(int *)ud;
	size_t off = 0;
	while (off < n) {
		ssize_t w = write(fd, (const char *)buf + off, n - off);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			archive_set_error(a, errno, "write: %s", strerror(errno));
			return -1;
		}
		off += (size_t)w;
	}
	return (la_ssize_t)n;
}

int cm_buildctx_repack(const char *path, const struct cm_buildctx *b, int out_fd, struct cm_error *err)
{
	struct archive *a = open_reader(path, err);
	if (!a)
		return -1;
	struct archive *w = archive_write_new();
	int fd = out_fd;
	if (!w || archive_write_set_format_pax_restricted(w) != ARCHIVE_OK ||
	    archive_write_open(w, &fd, NULL, fd_write, NULL) != ARCHIVE_OK) {
		archive_read_free(a);
		if (w)
			archive_write_free(w);
		return cm_err_internal(err, "cannot write the build context");
	}
	int rc = 0;
	struct archive_entry *e;
	int r;
	char *buf = malloc(BLOCK);
	int64_t total = 0;
	if (!buf)
		rc = cm_err_internal(err, "out of memory");
	while (rc == 0 && ((r = archive_read_next_header(a, &e)) == ARCHIVE_OK || r == ARCHIVE_WARN)) {
		char rel[4200];
		const char *rest;
		if ((rc = entry_name(e, rel, sizeof rel, err)) < 0 || (rc = entry_type_ok(e, rel, err)) < 0)
			break;
		if (!under(rel, b->build_dir, &rest) || !*rest)
			continue;
		struct archive_entry *o = archive_entry_new();
		if (!o) {
			rc = cm_err_internal(err, "out of memory");
			break;
		}
		mode_t t = archive_entry_filetype(e);
		archive_entry_set_pathname(o, rest);
		archive_entry_set_filetype(o, t);
		archive_entry_set_perm(o, (archive_entry_perm(e) & 0777) | (t == AE_IFDIR ? 0700 : 0600));
		archive_entry_set_mtime(o, archive_entry_mtime(e), 0);
		if (t == AE_IFLNK)
			archive_entry_set_symlink(o, archive_entry_symlink(e) ? archive_entry_symlink(e) : "");
		if (t == AE_IFREG && archive_entry_size_is_set(e))
			archive_entry_set_size(o, archive_entry_size(e));
		bool stream = t == AE_IFREG;
		if (stream && !archive_entry_size_is_set(e)) {
			/* zip entries without a size in the local header: read it all first */
			struct cm_buf data = {0};
			la_ssize_t n;
			while ((n = archive_read_data(a, buf, BLOCK)) > 0) {
				total += n;
				if (total > b->max_unpacked || cm_buf_append(&data, buf, (size_t)n) < 0) {
					rc = cm_err_set(err, 413, "payload_too_large", "CONTEXT_TOO_LARGE", "body",
							"the build context unpacks to more than %lld bytes", (long long)b->max_unpacked);
					break;
				}
			}
			if (rc == 0 && n < 0)
				rc = cm_err_validation(err, "CORRUPT_ARCHIVE", "body", "%s", archive_error_string(a));
			archive_entry_set_size(o, (la_int64_t)data.len);
			if (rc == 0 && (archive_write_header(w, o) != ARCHIVE_OK ||
					(data.len && archive_write_data(w, data.data, data.len) != (la_ssize_t)data.len)))
				rc = cm_err_internal(err, "tar: %s", archive_error_string(w));
			cm_buf_free(&data);
			archive_entry_free(o);
			continue;
		}
		if (archive_write_header(w, o) != ARCHIVE_OK) {
			rc = cm_err_internal(err, "tar: %s", archive_error_string(w));
			archive_entry_free(o);
			break;
		}
		archive_entry_free(o);
		if (!stream)
			continue;
		la_ssize_t n;
		while ((n = archive_read_data(a, buf, BLOCK)) > 0) {
			total += n;
			if (total > b->max_unpacked) {
				rc = cm_err_set(err, 413, "payload_too_large", "CONTEXT_TOO_LARGE", "body",
						"the build context unpacks to more than %lld bytes", (long long)b->max_unpacked);
				break;
			}
			if (archive_write_data(w, buf, (size_t)n) != n) {
				rc = cm_err_internal(err, "tar: %s", archive_error_string(w));
				break;
			}
		}
		if (rc == 0 && n < 0)
			rc = cm_err_validation(err, "CORRUPT_ARCHIVE", "body", "%s", archive_error_string(a));
	}
	if (rc == 0 && r != ARCHIVE_EOF)
		rc = cm_err_validation(err, "CORRUPT_ARCHIVE", "body", "the build context is truncated or corrupt");
	free(buf);
	if (archive_write_close(w) != ARCHIVE_OK && rc == 0)
		rc = cm_err_internal(err, "tar: %s", archive_error_string(w));
	archive_write_free(w);
	archive_read_free(a);
	return rc;
}
