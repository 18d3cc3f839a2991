/* zipcheck.h: checks applied to uploaded zips before and while libarchive extracts them. */
#ifndef CM_ZIPCHECK_H
#define CM_ZIPCHECK_H

#include <stdint.h>
#include "cm.h"

/* Checks an entry name (UTF-8, relative, no "..", no backslash) and writes its normalised
 * form to out. Returns 0, or -1 with a 400 error naming the entry. */
int cm_zip_entry_name(const char *name, char *out, size_t outsz, struct cm_error *err);
/* Reads the central directory of the zip in fd (size bytes) and refuses symlink, device,
 * FIFO and socket entries, and names with NUL or broken UTF-8. Returns 0 when the
 * directory is fine or cannot be found (libarchive then reports the archive as broken). */
int cm_zip_check_central(int fd, int64_t size, struct cm_error *err);

#endif
