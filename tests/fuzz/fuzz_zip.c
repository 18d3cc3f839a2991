/* fuzz_zip.c: an uploaded zip through the program's own checks (central directory, entry
 * names) and libarchive's seekable zip reader, reading every entry as extraction does but
 * writing nothing; and the same bytes as a build context (zip or tar, any compression):
 * scanned, and when accepted re-packed into a tar that must read back; and the same bytes as
 * the body of PUT .../archive: rewritten by cm_tarclean, whose output must read back with
 * every entry 1000:1000, no s-bit, no xattr and no special type. */
#include "config.h"
#include "buildctx.h"
#include "tarclean.h"
#include "zipcheck.h"

#include <stdio.h>

#include <archive.h>
#include <archive_entry.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct mem {
	const uint8_t *data;
	size_t len, off;
};

/* the body arrives in small pieces, as from FastCGI */
static ssize_t mem_read(void *ud, const void **buf)
{
	struct mem *m = ud;
	size_t n = m->len - m->off > 1000 ? 1000 : m->len - m->off;
	*buf = m->data + m->off;
	m->off += n;
	return (ssize_t)n;
}

static bool any_missing(void *ud, const char *dir)
{
	(void)ud;
	return dir[0] != '\0';
}

static void check_clean(int out)
{
	struct archive *t = archive_read_new();
	archive_read_support_format_tar(t);
	if (lseek(out, 0, SEEK_SET) != 0 || archive_read_open_fd(t, out, 4096) != ARCHIVE_OK)
		abort();
	struct archive_entry *e;
	int r;
	while ((r = archive_read_next_header(t, &e)) == ARCHIVE_OK) {
		mode_t ty = archive_entry_filetype(e);
		if (archive_entry_uid(e) != 1000 || archive_entry_gid(e) != 1000 || (archive_entry_perm(e) & 07000) ||
		    archive_entry_xattr_count(e) || archive_entry_hardlink(e) ||
		    (ty != AE_IFREG && ty != AE_IFDIR && ty != AE_IFLNK))
			abort();
	}
	if (r != ARCHIVE_EOF)
		abort();
	archive_read_free(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int fd = memfd_create("zip", MFD_CLOEXEC);
	if (fd < 0)
		return 0;
	if (write(fd, data, size) != (ssize_t)size) {
		close(fd);
		return 0;
	}
	struct cm_error err;
	if (cm_zip_check_central(fd, (int64_t)size, &err) == 0 && lseek(fd, 0, SEEK_SET) == 0) {
		struct archive *a = archive_read_new();
		archive_read_support_format_zip_seekable(a);
		if (archive_read_open_fd(a, fd, 4096) == ARCHIVE_OK) {
			struct archive_entry *e;
			int64_t total = 0;
			while (archive_read_next_header(a, &e) == ARCHIVE_OK) {
				const char *name = archive_entry_pathname_utf8(e);
				char rel[4200];
				if (!name || cm_zip_entry_name(name, rel, sizeof rel, &err) < 0)
					break;
				char buf[8192];
				la_ssize_t n;
				while ((n = archive_read_data(a, buf, sizeof buf)) > 0 && total < (64 << 20))
					total += n;
				if (n < 0 || total >= (64 << 20))
					break;
			}
		}
		archive_read_free(a);
	}
	char path[64];
	snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
	struct cm_buildctx b = {.max_unpacked = 64 << 20, .max_entries = 10000};
	if (cm_buildctx_scan(path, &b, &err) == 0) {
		if (!b.dockerfile[0])
			abort();
		int out = memfd_create("tar", MFD_CLOEXEC);
		if (out >= 0) {
			if (cm_buildctx_repack(path, &b, out, &err) == 0) {
				/* what goes to Docker is a tar libarchive reads back */
				struct archive *t = archive_read_new();
				archive_read_support_format_tar(t);
				if (lseek(out, 0, SEEK_SET) != 0 || archive_read_open_fd(t, out, 4096) != ARCHIVE_OK)
					abort();
				struct archive_entry *e;
				int r;
				while ((r = archive_read_next_header(t, &e)) == ARCHIVE_OK)
					;
				if (r != ARCHIVE_EOF)
					abort();
				archive_read_free(t);
			}
			close(out);
		}
	} else if (!err.message[0]) {
		abort();
	}
	struct mem m = {data, size, 0};
	int out = memfd_create("clean", MFD_CLOEXEC);
	struct cm_tarclean tc = {.uid = 1000, .gid = 1000, .max_out = 64 << 20, .max_entries = 10000,
				 .dir_missing = any_missing};
	if (out >= 0) {
		if (cm_tarclean(mem_read, &m, out, &tc, &err) == 0)
			check_clean(out);
		else if (!err.message[0] || err.status < 400)
			abort();
		close(out);
	}
	cm_buf_free(&tc.skipped_json);
	close(fd);
	return 0;
}
