/* tarclean.c: untrusted tar in, a tar safe to extract as root out (see tarclean.h).
 * Each entry is rebuilt from a whitelist of its fields (name, type, permission bits, size,
 * link target, modification time) rather than edited, so whatever else a header carries
 * (pax records, xattrs, ACLs, flags, owner names) never reaches the output. */
#include "config.h"
#include "tarclean.h"
#include "json.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <string.h>
#include <time.h>

#define TC_CHUNK 65536
#define TC_SKIPPED_LISTED 100

/* The directory names an archive holds or implies (open addressing, grown at half load). */
struct dirset {
	char **slot;
	size_t cap, n;
};

static uint64_t hash_str(const char *s)
{
	uint64_t h = 1469598103934665603ULL;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ULL;
	return h;
}

/* Adds name: 1 when it was new, 0 when present, -1 out of memory. */
static int dirset_add(struct dirset *d, const char *name)
{
	if ((d->n + 1) * 2 > d->cap) {
		size_t nc = d->cap ? d->cap * 2 : 256;
		char **ns = calloc(nc, sizeof *ns);
		if (!ns)
			return -1;
		for (size_t i = 0; i < d->cap; i++) {
			if (!d->slot[i])
				continue;
			size_t j = hash_str(d->slot[i]) & (nc - 1);
			while (ns[j])
				j = (j + 1) & (nc - 1);
			ns[j] = d->slot[i];
		}
		free(d->slot);
		d->slot = ns;
		d->cap = nc;
	}
	size_t j = hash_str(name) & (d->cap - 1);
	for (; d->slot[j]; j = (j + 1) & (d->cap - 1))
		if (!strcmp(d->slot[j], name))
			return 0;
	if (!(d->slot[j] = strdup(name)))
		return -1;
	d->n++;
	return 1;
}

static void dirset_free(struct dirset *d)
{
	for (size_t i = 0; i < d->cap; i++)
		free(d->slot[i]);
	free(d->slot);
}

/* "./a//b/c/" into "a/b/c"; false when a component is ".." or the name is too long (such names
 * are left to Docker's own checks, nothing is implied for them). */
static bool clean_name(const char *in, char *out, size_t outsz)
{
	size_t o = 0;
	const char *p = in;
	while (*p) {
		while (*p == '/')
			p++;
		size_t n = strcspn(p, "/");
		if (n == 0)
			break;
		if (n == 2 && p[0] == '.' && p[1] == '.')
			return false;
		if (!(n == 1 && p[0] == '.')) {
			if (o + n + 2 > outsz)
				return false;
			if (o)
				out[o++] = '/';
			memcpy(out + o, p, n);
			o += n;
		}
		p += n;
	}
	out[o] = '\0';
	return true;
}

struct src {
	cm_tarclean_read_fn rd;
	void *ud;
	struct cm_tarclean *t;
	bool too_big;
	bool broken; /* the transport failed (not the archive) */
};

static la_ssize_t src_read(struct archive *a, void *ud, const void **buf)
{
	struct src *s = ud;
	ssize_t n = s->rd(s->ud, buf);
	if (n < 0) {
		s->broken = true;
		archive_set_error(a, EIO, "the request body could not be read");
		return -1;
	}
	s->t->in_bytes += n;
	if (s->t->max_in > 0 && s->t->in_bytes > s->t->max_in) {
		s->too_big = true;
		archive_set_error(a, EFBIG, "the body is too large");
		return -1;
	}
	return n;
}

static int limit_error(struct cm_error *err, const char *code, long long limit, const char *what)
{
	cm_err_set(err, 413, "payload_too_large", code, NULL, "%s (limit %lld)", what, limit);
	err->limit = limit;
	return -1;
}

static int write_error(struct archive *w, struct cm_error *err)
{
	int e = archive_errno(w);
	const char *msg = archive_error_string(w) ? archive_error_string(w) : "write failed";
	if (e == ENOSPC || e == EDQUOT)
		return cm_err_set(err, 507, "io_error", "DISK_FULL", NULL, "no space left to stage the archive: %s", msg);
	return cm_err_set(err, 500, "io_error", "IO_ERROR", NULL, "cannot stage the archive: %s", msg);
}

/* The error for a failure of the reader: a limit, the transport, or the archive itself. */
static int read_error(struct archive *a, const struct src *s, struct cm_error *err)
{
	const char *msg = archive_error_string(a) ? archive_error_string(a) : "unreadable archive";
	if (s->too_big)
		return limit_error(err, "BODY_TOO_LARGE", (long long)s->t->max_in, "the archive is larger than allowed");
	if (s->broken)
		return cm_err_validation(err, "INVALID_ARCHIVE", NULL, "the request body ended early: %s", msg);
	if (s->t->in_bytes == 0)
		return cm_err_validation(err, "EMPTY_BODY", NULL, "the request body is empty; send a tar archive");
	if (s->t->entries == 0 && s->t->skipped == 0)
		return cm_err_validation(err, "NOT_A_TAR", NULL, "the request body is not a tar archive: %s", msg);
	return cm_err_validation(err, "INVALID_ARCHIVE", NULL, "the tar archive is corrupt or truncated: %s", msg);
}

static const char *special_type(mode_t type)
{
	switch (type) {
	case AE_IFCHR: return "character device";
	case AE_IFBLK: return "block device";
	case AE_IFIFO: return "fifo";
	case AE_IFSOCK: return "socket";
	default: return "unknown";
	}
}

static void note_skipped(struct cm_tarclean *t, const char *name, mode_t type)
{
	t->skipped++;
	if (t->skipped > TC_SKIPPED_LISTED)
		return;
	yajl_gen g = cm_jg_new();
	if (!g)
		return;
	yajl_gen_map_open(g);
	/* names are bytes; a name that is not UTF-8 is shown escaped */
	char shown[600];
	if (cm_valid_utf8(name, strlen(name)))
		snprintf(shown, sizeof shown, "%.500s", name);
	else
		cm_log_escape(shown, sizeof shown, name);
	cm_jg_kv_str(g, "name", shown);
	cm_jg_kv_str(g, "type", special_type(type));
	yajl_gen_map_close(g);
	char *j = cm_jg_finish(g);
	if (!j)
		return;
	if (t->skipped_json.len == 0)
		cm_buf_puts(&t->skipped_json, "[");
	else
		t->skipped_json.len--; /* drop the closing bracket */
	if (t->skipped > 1)
		cm_buf_puts(&t->skipped_json, ",");
	cm_buf_puts(&t->skipped_json, j);
	cm_buf_puts(&t->skipped_json, "]");
	free(j);
}

/* Writes a directory entry (uid:gid, 0755) for every parent of name that the archive has not
 * held or implied yet and that t->dir_missing says the destination lacks. */
static int imply_parents(struct archive *w, struct archive_entry *o, struct dirset *seen, const char *name,
			 struct cm_tarclean *t, struct cm_error *err)
{
	char cn[4200], dir[4202];
	if (!t->dir_missing || !clean_name(name, cn, sizeof cn))
		return 0;
	for (char *sl = strchr(cn, '/'); sl; sl = strchr(sl + 1, '/')) {
		*sl = '\0';
		int added = dirset_add(seen, cn);
		bool missing = added > 0 && t->dir_missing(t->dir_ud, cn);
		snprintf(dir, sizeof dir, "%s/", cn);
		*sl = '/';
		if (added < 0)
			return cm_err_internal(err, "out of memory");
		if (!missing)
			continue;
		if (t->max_entries > 0 && t->entries + 1 > t->max_entries)
			return limit_error(err, "TOO_MANY_ENTRIES", t->max_entries, "the archive has too many entries");
		archive_entry_clear(o);
		archive_entry_copy_pathname(o, dir);
		archive_entry_set_filetype(o, AE_IFDIR);
		archive_entry_set_perm(o, 0755);
		archive_entry_set_uid(o, t->uid);
		archive_entry_set_gid(o, t->gid);
		archive_entry_set_mtime(o, time(NULL), 0);
		int wh = archive_write_header(w, o);
		if (wh != ARCHIVE_OK && wh != ARCHIVE_WARN)
			return write_error(w, err);
		t->entries++;
	}
	return 0;
}

/* Copies the current entry's data from r to w, counting it against the content limit. */
static int copy_data(struct archive *r, struct archive *w, const struct src *s, struct cm_tarclean *t, char *buf,
		     struct cm_error *err)
{
	for (;;) {
		la_ssize_t n = archive_read_data(r, buf, TC_CHUNK);
		if (n == 0)
			return 0;
		if (n < 0)
			return read_error(r, s, err);
		t->bytes += n;
		if (t->max_out > 0 && t->bytes > t->max_out)
			return limit_error(err, "ARCHIVE_TOO_LARGE", (long long)t->max_out, "the archive unpacks to more bytes than allowed");
		if (archive_write_data(w, buf, (size_t)n) != n)
			return write_error(w, err);
	}
}

int cm_tarclean(cm_tarclean_read_fn rd, void *ud, int out_fd, struct cm_tarclean *t, struct cm_error *err)
{
	struct src s = {rd, ud, t, false, false};
	struct archive *r = archive_read_new();
	struct archive *w = archive_write_new();
	struct archive_entry *o = archive_entry_new();
	char *buf = malloc(TC_CHUNK);
	struct dirset seen = {0};
	int rc = 0;
	t->entries = t->skipped = 0;
	t->bytes = t->in_bytes = 0;
	if (!r || !w || !o || !buf) {
		rc = cm_err_internal(err, "out of memory");
		goto out;
	}
	/* what Docker's archive endpoint takes: tar, maybe gzip, bzip2 or xz compressed */
	archive_read_support_format_tar(r);
	archive_read_support_filter_gzip(r);
	archive_read_support_filter_bzip2(r);
	archive_read_support_filter_xz(r);
	if (archive_write_set_format_pax_restricted(w) != ARCHIVE_OK || archive_write_open_fd(w, out_fd) != ARCHIVE_OK) {
		rc = write_error(w, err);
		goto out;
	}
	if (archive_read_open(r, &s, NULL, src_read, NULL) != ARCHIVE_OK) {
		rc = read_error(r, &s, err);
		goto out;
	}
	for (;;) {
		struct archive_entry *e;
		int h = archive_read_next_header(r, &e);
		if (h == ARCHIVE_EOF)
			break;
		if (h != ARCHIVE_OK && h != ARCHIVE_WARN) {
			rc = read_error(r, &s, err);
			goto out;
		}
		const char *name = archive_entry_pathname(e);
		if (!name || !*name) {
			rc = cm_err_validation(err, "INVALID_ARCHIVE", NULL, "an entry of the tar archive has no name");
			goto out;
		}
		if (archive_entry_hardlink(e)) {
			/* Docker would link() to whatever the target names by then (through links the same
			 * archive planted) and chown/chmod that inode: refused, as upload-zip does */
			rc = cm_err_validation(err, "HARDLINK_ENTRY", NULL, "entry '%.200s' is a hard link; hard links are refused",
					       cm_valid_utf8(name, strlen(name)) ? name : "?");
			goto out;
		}
		mode_t type = archive_entry_filetype(e);
		if (type != AE_IFREG && type != AE_IFDIR && type != AE_IFLNK) {
			note_skipped(t, name, type);
			continue;
		}
		if ((rc = imply_parents(w, o, &seen, name, t, err)) < 0)
			goto out;
		if (type == AE_IFDIR) {
			char cn[4200];
			if (clean_name(name, cn, sizeof cn) && cn[0] && dirset_add(&seen, cn) < 0) {
				rc = cm_err_internal(err, "out of memory");
				goto out;
			}
		}
		if (t->max_entries > 0 && t->entries + 1 > t->max_entries) {
			rc = limit_error(err, "TOO_MANY_ENTRIES", t->max_entries, "the archive has too many entries");
			goto out;
		}
		archive_entry_clear(o);
		archive_entry_copy_pathname(o, name);
		archive_entry_set_filetype(o, type);
		/* no setuid, setgid or sticky bit */
		archive_entry_set_perm(o, archive_entry_perm(e) & 0777);
		archive_entry_set_uid(o, t->uid);
		archive_entry_set_gid(o, t->gid);
		if (archive_entry_mtime_is_set(e))
			archive_entry_set_mtime(o, archive_entry_mtime(e), archive_entry_mtime_nsec(e));
		if (type == AE_IFLNK) {
			const char *target = archive_entry_symlink(e);
			if (!target || !*target) {
				rc = cm_err_validation(err, "INVALID_ARCHIVE", NULL, "symbolic link '%.200s' has no target",
						       cm_valid_utf8(name, strlen(name)) ? name : "?");
				goto out;
			}
			archive_entry_copy_symlink(o, target);
		}
		if (type == AE_IFREG)
			archive_entry_set_size(o, archive_entry_size(e));
		int wh = archive_write_header(w, o);
		if (wh != ARCHIVE_OK && wh != ARCHIVE_WARN) {
			rc = write_error(w, err);
			goto out;
		}
		t->entries++;
		if (type == AE_IFREG && (rc = copy_data(r, w, &s, t, buf, err)) < 0)
			goto out;
	}
	if (t->entries == 0 && t->skipped == 0 && t->in_bytes == 0) {
		rc = cm_err_validation(err, "EMPTY_BODY", NULL, "the request body is empty; send a tar archive");
		goto out;
	}
	if (archive_write_close(w) != ARCHIVE_OK)
		rc = write_error(w, err);
out:
	dirset_free(&seen);
	free(buf);
	if (o)
		archive_entry_free(o);
	if (r)
		archive_read_free(r);
	if (w)
		archive_write_free(w);
	return rc;
}
