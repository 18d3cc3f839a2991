/* tarclean.h: rewrites an untrusted tar stream (PUT /containers/{cuid}/archive) into a tar that
 * dockerd may extract as root: every entry owned by one uid:gid, no names, no setuid, setgid or
 * sticky bit, no extended attributes, ACLs or file flags (file capabilities travel as the
 * security.capability xattr), no device, FIFO or socket, no hard link. */
#ifndef CM_TARCLEAN_H
#define CM_TARCLEAN_H

#include <sys/types.h>
#include "cm.h"

struct cm_tarclean {
	/* in */
	unsigned uid, gid;     /* the owner of every entry written */
	int64_t max_in;        /* bytes read from the source (maybe compressed); 0 = no limit */
	int64_t max_out;       /* bytes of file content written; 0 = no limit */
	long max_entries;      /* 0 = no limit */
	/* When set, the parent directories an entry implies but the archive does not hold, and
	 * that this says are missing at the destination, are written as directory entries of
	 * uid:gid (0755) before it: else Docker would create them as root. dir is the cleaned
	 * relative name ("a/b"). */
	bool (*dir_missing)(void *ud, const char *dir);
	void *dir_ud;
	/* out */
	long entries;          /* entries written */
	int64_t bytes;         /* file content written */
	int64_t in_bytes;      /* source bytes read */
	long skipped;          /* devices, FIFOs and sockets left out */
	struct cm_buf skipped_json; /* a JSON array of {"name","type"} for the first 100 of them */
};

/* The source: like libarchive's read callback, *buf gets the next bytes; returns their count,
 * 0 at the end, -1 on a transport error. */
typedef ssize_t (*cm_tarclean_read_fn)(void *ud, const void **buf);

/* Reads a tar (plain, gzip, bzip2 or xz) from rd and writes the cleaned plain (pax) tar to
 * out_fd. Returns 0, or -1 with err: 400 EMPTY_BODY, NOT_A_TAR, INVALID_ARCHIVE (corrupt or
 * truncated), HARDLINK_ENTRY; 413 BODY_TOO_LARGE, ARCHIVE_TOO_LARGE, TOO_MANY_ENTRIES (with
 * details.limit); 500/507 when out_fd cannot be written. Nothing of a refused source should be
 * used: the caller discards out_fd's content on error. Free t->skipped_json with cm_buf_free. */
int cm_tarclean(cm_tarclean_read_fn rd, void *ud, int out_fd, struct cm_tarclean *t, struct cm_error *err);

#endif
