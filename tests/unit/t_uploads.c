/* t_uploads.c: the library pieces of uploads: cm_tarclean (the archive PUT rewrite),
 * cm_multipart_extract (file part and plain fields) and the staging sweep (replace journal). */
#include "config.h"
#include "cm.h"
#include "multipart.h"
#include "staging.h"
#include "tarclean.h"
#include "tap.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct mem {
	const char *data;
	size_t len, off;
	size_t step;
};

static ssize_t mem_read(void *ud, const void **buf)
{
	struct mem *m = ud;
	size_t n = m->len - m->off;
	if (n > m->step)
		n = m->step;
	*buf = m->data + m->off;
	m->off += n;
	return (ssize_t)n;
}

static bool always_missing(void *ud, const char *dir)
{
	(void)ud;
	(void)dir;
	return true;
}

static void add(struct archive *w, const char *name, mode_t type, mode_t perm, const char *data)
{
	struct archive_entry *e = archive_entry_new();
	archive_entry_set_pathname(e, name);
	archive_entry_set_filetype(e, type);
	archive_entry_set_perm(e, perm);
	archive_entry_set_uid(e, 0);
	archive_entry_set_gid(e, 0);
	archive_entry_set_uname(e, "root");
	if (type == AE_IFREG) {
		archive_entry_set_size(e, (la_int64_t)strlen(data));
		archive_entry_xattr_add_entry(e, "security.capability", "\x01\x00\x00\x02", 4);
		archive_entry_xattr_add_entry(e, "user.note", "x", 1);
	}
	if (type == AE_IFLNK)
		archive_entry_set_symlink(e, data);
	if (type == AE_IFCHR)
		archive_entry_set_rdev(e, (dev_t)((1 << 8) | 3));
	if (!strcmp(name, "hl"))
		archive_entry_set_hardlink(e, "suid");
	archive_write_header(w, e);
	if (type == AE_IFREG && data && !archive_entry_hardlink(e))
		archive_write_data(w, data, strlen(data));
	archive_entry_free(e);
}

static size_t make_tar(char *buf, size_t bufsz, bool with_hardlink)
{
	struct archive *w = archive_write_new();
	size_t used = 0;
	archive_write_set_format_pax(w);
	archive_write_open_memory(w, buf, bufsz, &used);
	add(w, "suid", AE_IFREG, 04755, "#!/bin/sh\n");
	add(w, "sgid/", AE_IFDIR, 02775, NULL);
	add(w, "a/b/c.txt", AE_IFREG, 06644, "nested");
	add(w, "null", AE_IFCHR, 0666, NULL);
	add(w, "fifo", AE_IFIFO, 0644, NULL);
	add(w, "link", AE_IFLNK, 0777, "suid");
	if (with_hardlink)
		add(w, "hl", AE_IFREG, 0644, "");
	archive_write_close(w);
	archive_write_free(w);
	return used;
}

static int clean(const char *data, size_t len, int fd, struct cm_tarclean *t, struct cm_error *err)
{
	struct mem m = {data, len, 0, 777};
	t->uid = 1000;
	t->gid = 1001;
	return cm_tarclean(mem_read, &m, fd, t, err);
}

static void test_tarclean(const char *dir)
{
	static char tar[1 << 20];
	size_t len = make_tar(tar, sizeof tar, false);
	char path[512];
	snprintf(path, sizeof path, "%s/out.tar", dir);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	struct cm_tarclean t = {.dir_missing = always_missing};
	struct cm_error err = {0};
	ok(clean(tar, len, fd, &t, &err) == 0, "tarclean accepts a tar with special entries (%s)", err.message);
	ok(t.skipped == 2 && strstr(cm_buf_str(&t.skipped_json), "\"fifo\"") &&
		   strstr(cm_buf_str(&t.skipped_json), "character device"),
	   "the device and the FIFO are left out and listed: %s", cm_buf_str(&t.skipped_json));
	cm_buf_free(&t.skipped_json);
	lseek(fd, 0, SEEK_SET);
	struct archive *r = archive_read_new();
	archive_read_support_format_tar(r);
	archive_read_open_fd(r, fd, 10240);
	struct archive_entry *e;
	int n = 0, bad = 0, implied = 0;
	char names[512] = "";
	while (archive_read_next_header(r, &e) == ARCHIVE_OK) {
		n++;
		const char *nm = archive_entry_pathname(e);
		size_t nl = strlen(names);
		snprintf(names + nl, sizeof names - nl, "%s ", nm);
		if (archive_entry_uid(e) != 1000 || archive_entry_gid(e) != 1001 || (archive_entry_perm(e) & 07000) ||
		    archive_entry_xattr_count(e) || (archive_entry_uname(e) && *archive_entry_uname(e)) ||
		    (archive_entry_gname(e) && *archive_entry_gname(e))) {
			printf("# bad entry %s: %ld:%ld %o xattrs %d uname '%s'\n", nm, (long)archive_entry_uid(e), (long)archive_entry_gid(e),
			       (unsigned)archive_entry_perm(e), archive_entry_xattr_count(e), archive_entry_uname(e) ? archive_entry_uname(e) : "");
			bad++;
		}
		mode_t ty = archive_entry_filetype(e);
		if (ty != AE_IFREG && ty != AE_IFDIR && ty != AE_IFLNK)
			bad++;
		if (!strcmp(nm, "a/") || !strcmp(nm, "a/b/"))
			implied += archive_entry_filetype(e) == AE_IFDIR && archive_entry_perm(e) == 0755;
		if (!strcmp(nm, "a/b/c.txt")) {
			char data[16] = "";
			archive_read_data(r, data, sizeof data - 1);
			ok(!strcmp(data, "nested"), "content kept");
		}
		if (!strcmp(nm, "link"))
			is_str(archive_entry_symlink(e), "suid", "symlink target kept");
	}
	archive_read_free(r);
	close(fd);
	ok(bad == 0, "every entry 1000:1001, no s-bit, no xattr, no owner name, no special type");
	ok(implied == 2, "the implied parents a/ and a/b/ are written as 0755 directories");
	is_str(names, "suid sgid/ a/ a/b/ a/b/c.txt link ", "entries in order");

	struct {
		const char *label;
		const char *data;
		size_t len;
		const char *code;
		long max_entries;
	} bad_cases[] = {
		{"a truncated tar", tar, len / 2 > 3000 ? 3000 : len / 2, "INVALID_ARCHIVE", 0},
		{"not a tar", "hello world, this is not a tar archive at all; hello world hello world", 70, "NOT_A_TAR", 0},
		{"empty", "", 0, "EMPTY_BODY", 0},
		{"too many entries", tar, len, "TOO_MANY_ENTRIES", 2},
	};
	for (size_t i = 0; i < CM_ARRAY_LEN(bad_cases); i++) {
		fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
		struct cm_tarclean tb = {.max_entries = bad_cases[i].max_entries};
		cm_err_clear(&err);
		int rc = clean(bad_cases[i].data, bad_cases[i].len, fd, &tb, &err);
		ok(rc < 0 && !strcmp(err.code, bad_cases[i].code), "%s: %s (%s)", bad_cases[i].label, bad_cases[i].code, err.code);
		cm_buf_free(&tb.skipped_json);
		close(fd);
	}
	len = make_tar(tar, sizeof tar, true);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	struct cm_tarclean th = {0};
	cm_err_clear(&err);
	ok(clean(tar, len, fd, &th, &err) < 0 && !strcmp(err.code, "HARDLINK_ENTRY"), "a hard link is refused (%s)", err.code);
	cm_buf_free(&th.skipped_json);
	close(fd);
	unlink(path);
}

static void write_file(const char *path, const char *data, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	ok(fd >= 0 && write(fd, data, len) == (ssize_t)len && close(fd) == 0, "wrote %s", path);
}

static void test_multipart(const char *dir)
{
	char path[512];
	snprintf(path, sizeof path, "%s/body", dir);
	const char *body = "--XyZ\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nweb\r\n"
			   "--XyZ\r\nContent-Disposition: form-data; name=\"port\"\r\n\r\n8080\r\n"
			   "--XyZ\r\nContent-Disposition: form-data; name=\"source\"; filename=\"s.zip\"\r\n"
			   "Content-Type: application/zip\r\n\r\nPK-DATA\r\n--XyZ--\r\n";
	write_file(path, body, strlen(body));
	struct cm_mp_fields f;
	struct cm_error err = {0};
	ok(cm_multipart_extract(path, "XyZ", "source", NULL, &f, &err) == 0, "a form with fields and a file");
	ok(f.n == 2 && !strcmp(f.f[0].name, "name") && !strcmp(f.f[0].value, "web") && !strcmp(f.f[1].name, "port") &&
		   !strcmp(f.f[1].value, "8080"),
	   "the plain fields, in order");
	cm_mp_fields_free(&f);
	size_t n;
	char *got = cm_read_file(path, 1024, &n);
	ok(got && n == 7 && !memcmp(got, "PK-DATA", 7), "the file part replaced the body");
	free(got);

	body = "--XyZ\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nweb\r\n"
	       "--XyZ\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nweb2\r\n--XyZ--\r\n";
	write_file(path, body, strlen(body));
	cm_err_clear(&err);
	ok(cm_multipart_extract(path, "XyZ", "source", NULL, &f, &err) < 0 && !strcmp(err.code, "DUPLICATE_FIELD") &&
		   !strcmp(err.field, "name"),
	   "a field twice: DUPLICATE_FIELD naming it");
	cm_mp_fields_free(&f);

	body = "--XyZ\r\nContent-Disposition: form-data; name=\"spec\"\r\n\r\n{\"src\":\"image:x\"}\r\n--XyZ--\r\n";
	write_file(path, body, strlen(body));
	ok(cm_multipart_extract(path, "XyZ", "source", NULL, &f, &err) == 1 && f.n == 1 && !strcmp(f.f[0].value, "{\"src\":\"image:x\"}"),
	   "fields and no file part: 1, the fields filled");
	cm_mp_fields_free(&f);

	body = "--XyZ\r\nContent-Disposition: form-data\r\n\r\nvalue\r\n--XyZ--\r\n";
	write_file(path, body, strlen(body));
	cm_err_clear(&err);
	ok(cm_multipart_extract(path, "XyZ", "source", NULL, &f, &err) < 0 && !strcmp(err.code, "INVALID_MULTIPART"),
	   "a part without a name is refused");
	cm_mp_fields_free(&f);
	unlink(path);
}

static bool exists(int dirfd, const char *rel)
{
	struct stat st;
	return fstatat(dirfd, rel, &st, AT_SYMLINK_NOFOLLOW) == 0;
}

static void touch(int dirfd, const char *rel)
{
	int fd = openat(dirfd, rel, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd >= 0)
		close(fd);
}

static void test_sweep(const char *dir)
{
	char cpath[512];
	snprintf(cpath, sizeof cpath, "%s/containers/c1", dir);
	cm_mkdir_p(cpath, 0755);
	int cdir = open(cpath, O_RDONLY | O_DIRECTORY);
	mkdirat(cdir, "app", 0755);
	mkdirat(cdir, "app/sub", 0755);
	/* an interrupted replace, killed while the old files went aside: old1 moved, old2 not yet */
	mkdirat(cdir, ".upload-A", 0700);
	mkdirat(cdir, ".upload-A/root", 0700);
	touch(cdir, ".upload-A/root/new1");
	mkdirat(cdir, ".trash-A", 0700);
	touch(cdir, ".trash-A/old1");
	touch(cdir, "app/sub/old2");
	int stg = openat(cdir, ".upload-A", O_RDONLY | O_DIRECTORY);
	ok(cm_stage_journal(stg, CM_STAGE_ASIDE, "sub") == 0, "journal: aside");
	close(stg);
	/* another, killed while the new files went in: new2 in, new3 not yet, the old aside */
	mkdirat(cdir, "app/other", 0755);
	mkdirat(cdir, ".upload-B", 0700);
	mkdirat(cdir, ".upload-B/root", 0700);
	touch(cdir, ".upload-B/root/new3");
	touch(cdir, "app/other/new2");
	mkdirat(cdir, ".trash-B", 0700);
	touch(cdir, ".trash-B/old3");
	stg = openat(cdir, ".upload-B", O_RDONLY | O_DIRECTORY);
	ok(cm_stage_journal(stg, CM_STAGE_MERGE, "/app/other") == 0, "journal: merge");
	close(stg);
	/* a plain leftover, and a live upload (its lock held) */
	mkdirat(cdir, ".upload-C", 0700);
	touch(cdir, ".upload-C/body.zip");
	int live = cm_stage_mkdir(cdir, ".upload-", "LIVE");
	ok(live >= 0 && exists(cdir, ".upload-LIVE") && !exists(cdir, ".mk-LIVE"), "a locked working directory");
	long removed = 0, recovered = 0;
	snprintf(cpath, sizeof cpath, "%s/containers", dir);
	ok(cm_stage_sweep(cpath, 1000, 1000, &removed, &recovered) == 0, "sweep");
	ok(removed == 3 && recovered == 2, "3 removed, 2 by their journals (%ld, %ld)", removed, recovered);
	ok(exists(cdir, "app/sub/old1") && exists(cdir, "app/sub/old2") && !exists(cdir, "app/sub/new1"),
	   "aside: the old files are back, nothing new");
	ok(exists(cdir, "app/other/new2") && exists(cdir, "app/other/new3") && !exists(cdir, "app/other/old3"),
	   "merge: the new files are all in");
	ok(!exists(cdir, ".upload-A") && !exists(cdir, ".trash-A") && !exists(cdir, ".upload-B") && !exists(cdir, ".trash-B") &&
		   !exists(cdir, ".upload-C"),
	   "the dead working directories are gone");
	ok(exists(cdir, ".upload-LIVE"), "the live one is left alone");
	struct stat st;
	ok(fstat(cdir, &st) == 0 && (st.st_mode & 0777) == 0700, "the container directory is made 0700");
	close(live);
	ok(cm_stage_sweep(cpath, 1000, 1000, &removed, &recovered) == 0 && removed == 1 && !exists(cdir, ".upload-LIVE"),
	   "once its owner is gone, it is swept");
	close(cdir);
}

int main(void)
{
	char dir[] = "/tmp/cm-unit-uploads-XXXXXX";
	if (!mkdtemp(dir)) {
		printf("Bail out! mkdtemp\n");
		return 1;
	}
	test_tarclean(dir);
	test_multipart(dir);
	test_sweep(dir);
	cm_rm_rf(dir);
	return tap_done();
}
