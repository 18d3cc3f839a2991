/* staging.h: the private working directories of uploads beside a container's app directory
 * (DATA/containers/<cuid>/.upload-<tag>, .trash-<tag>), the replace journal that makes an
 * interrupted replace recoverable, and the sweep that cleans up after a crash.
 *
 * Liveness is the kernel's: the process that owns a working directory holds flock(LOCK_EX) on it
 * from before the directory gets its final name until it has removed it, so a sweep (which only
 * touches directories it can lock) never removes a live upload, whichever process runs it and
 * whenever, and a dead owner's lock is gone with it (no pid files, no pid reuse). */
#ifndef CM_STAGING_H
#define CM_STAGING_H

#include <sys/types.h>
#include "cm.h"

#define CM_STAGE_TAG_LEN 24

/* A fresh random tag (letters, digits, '-', '_') for a set of working directories. */
int cm_stage_tag(char tag[CM_STAGE_TAG_LEN]);
/* Creates parent/<prefix><tag> (0700), locked: made as .mk-<tag>, locked, then renamed, so it
 * is never visible unlocked under its final name. Returns the directory's fd (keep it open
 * while the directory is in use; closing it releases the lock), or -1 with errno. */
int cm_stage_mkdir(int parent, const char *prefix, const char *tag);

/* Moves everything of src into dst (directory fds), replacing what is there; directories that
 * exist on both sides are merged. Never follows a symlink. Returns 0, or -1 with errno and the
 * failing name in failed. */
int cm_merge_dirs(int src, int dst, char *failed, size_t failedsz);

/* The journal of an upload (a file "journal" in its .upload-<tag> directory): phase and the
 * target directory (relative to app/). Written durably (temp file, fsync, rename). */
enum cm_stage_phase { CM_STAGE_NONE, CM_STAGE_ASIDE, CM_STAGE_MERGE };
int cm_stage_journal(int stg, enum cm_stage_phase phase, const char *rel);

/* Cleans the working directories of one container directory: every unlocked .upload-<tag>
 * is finished by its journal (ASIDE: the old files in .trash-<tag> go back into the target,
 * MERGE: the staged files of root/ are moved in) and removed with its .trash-<tag>; unlocked
 * leftovers of .mk-<tag> older than a minute are removed. Directories of the container
 * directory itself are made 0700. Counts go to *removed and *recovered. */
int cm_stage_sweep_dir(int cdir, uid_t uid, gid_t gid, long *removed, long *recovered);
/* cm_stage_sweep_dir for every container directory under containers_dir (DATA/containers). */
int cm_stage_sweep(const char *containers_dir, uid_t uid, gid_t gid, long *removed, long *recovered);

#endif
