/* bindpath.h: whether a host path may be bind-mounted into a container, now and later.
 *
 * Docker resolves a bind source path itself, at every create and start, after our checks. A
 * check of the path is therefore only worth something if nobody but root and the service can
 * change the path between the check and Docker's resolution. Two rules make that so:
 *
 *  - cm_bind_verify: the source is a canonical path below an ALLOWED_BIND_ROOTS directory, every
 *    component below the root is a real directory (no symbolic link, no "." or ".."; walked one
 *    component at a time with O_NOFOLLOW from the root's descriptor), and every directory from
 *    the root down to the source's parent belongs to root or to the service's uid and is not
 *    writable by its group or others: no other host user can rename or replace anything on the
 *    path. The source may not be, contain or lie inside the service's data or run directory.
 *  - cm_bind_overlap: no container may hold a writable mount of a directory that is a proper
 *    ancestor of another mount's source (it could swap what lies under it). The runner applies
 *    it against every container on the engine before each create and start (jobs/binds.c).
 */
#ifndef CM_BINDPATH_H
#define CM_BINDPATH_H

#include <sys/types.h>
#include "cm.h"
#include "cm_config.h"

/* Whether path equals anc or lies below it (both absolute, canonical: no trailing slash but "/"). */
bool cm_path_within(const char *path, const char *anc);
/* Whether one of the two mounts is writable and a proper ancestor of the other's source. */
bool cm_bind_overlap(const char *a, bool a_rw, const char *b, bool b_rw);

enum cm_bind_problem {
	CM_BIND_OK = 0,
	CM_BIND_NOT_UNDER_ROOT, /* not below any ALLOWED_BIND_ROOTS directory (or not canonical) */
	CM_BIND_MISSING,        /* a component does not exist */
	CM_BIND_SYMLINK,        /* a component is a symbolic link */
	CM_BIND_UNSAFE_PARENT,  /* a directory on the path belongs to another user or is group/other-writable */
	CM_BIND_BAD_TYPE,       /* neither a directory nor a regular file */
	CM_BIND_SERVICE_DIR,    /* is, contains or lies in the data or run directory */
};

/* Checks canonical path src as described above for a service running as service_uid. Returns
 * CM_BIND_OK, or the problem with a sentence in why. */
enum cm_bind_problem cm_bind_verify(const struct cm_config *cfg, const char *src, uid_t service_uid, char *why,
				    size_t whysz);

#endif
