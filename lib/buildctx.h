/* buildctx.h: build contexts uploaded to POST /images/build (zip, or tar optionally gzip/bzip2/
 * xz-compressed): checked before a job is queued, then re-packed by the runner as the plain
 * tar the Engine API's /build takes, holding only the build directory. */
#ifndef CM_BUILDCTX_H
#define CM_BUILDCTX_H

#include "cm.h"

struct cm_buildctx {
	char build_dir[1024];   /* normalized, "" = the archive's root */
	char dockerfile[1024];  /* relative to build_dir; found by scan when given empty */
	int64_t max_unpacked;   /* bytes */
	long max_entries;
	/* filled by scan */
	long entries;
	int64_t unpacked;
	bool tar;               /* a tar (maybe compressed), not a zip */
};

/* Checks every entry (clean relative name; a file, directory or symbolic link) and finds the
 * Dockerfile: the one named, or Containerfile, then Dockerfile, in build_dir. Returns 0, or -1
 * with err: 400 NOT_AN_ARCHIVE, INVALID_ENTRY_NAME, PATH_TRAVERSAL, SPECIAL_ENTRY,
 * HARDLINK_ENTRY, DUPLICATE_ENTRY, NO_DOCKERFILE, NO_BUILD_DIR; 413 TOO_MANY_ENTRIES, CONTEXT_TOO_LARGE. */
int cm_buildctx_scan(const char *path, struct cm_buildctx *b, struct cm_error *err);
/* Writes build_dir's entries, re-rooted, as a plain tar to out_fd (after a successful scan). */
int cm_buildctx_repack(const char *path, const struct cm_buildctx *b, int out_fd, struct cm_error *err);

#endif
