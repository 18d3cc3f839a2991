/* fuzz_zip.c: an uploaded zip through the program's own checks (central directory, entry
 * names) and libarchive's seekable zip reader, reading every entry as extraction does but
 * writing nothing. */
#include "config.h"
#include "zipcheck.h"

#include <archive.h>
#include <archive_entry.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

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
	close(fd);
	return 0;
}
