/* paths.h: safe handling of client-supplied paths inside a container's /app directory. */
#ifndef CM_PATHS_H
#define CM_PATHS_H

#include <sys/types.h>
#include "cm.h"

/* Normalises a client path relative to /app into out ("" = /app itself). Accepts "a/b",
 * "/app/a/b", "./a//b/"; refuses "..", other absolute paths, control characters and
 * over-long names (400 with code INVALID_PATH / PATH_TRAVERSAL). */
int cm_path_normalize(const char *in, char *out, size_t outsz, struct cm_error *err);
/* Opens rel (normalised) beneath dirfd without following any symlink, even ones a
 * container planted (openat2 RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS, or a component walk
 * with O_NOFOLLOW where openat2 is missing). rel "" opens dirfd itself. errno on failure
 * (ELOOP/EXDEV when a symlink or escape is in the way). */
int cm_open_beneath(int dirfd, const char *rel, int flags, mode_t mode);
/* Creates every missing directory of rel beneath dirfd (no symlinks followed), owned by
 * uid:gid, and returns an fd for the last one. */
int cm_mkdirs_beneath(int dirfd, const char *rel, uid_t uid, gid_t gid);
/* Removes everything inside dirfd (not dirfd itself), never following symlinks. */
int cm_empty_dir_at(int dirfd);
/* Removes name beneath dirfd, recursively when a directory, never following symlinks. */
int cm_rm_rf_at(int dirfd, const char *name);

#endif
