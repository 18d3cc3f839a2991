/* files.h: what the handlers of a container's /app files share (files.c, upload.c, archive.c). */
#ifndef CM_FILES_H
#define CM_FILES_H

#include "app.h"

#define IO_CHUNK 65536

/* Opens the container's directory (DATA/containers/<cuid>) and its app directory (500 when
 * either is missing). */
int cm_files_open_dirs(struct cm_req *r, const char *cuid, int *cdir, int *app, struct cm_error *err);
/* The error for errno e on /app/path (404 FILE_NOT_FOUND, 400 SYMLINK_IN_PATH, NOT_A_DIRECTORY,
 * IS_A_DIRECTORY, 507 DISK_FULL, else 500 IO_ERROR). Returns -1. */
int cm_files_path_error(struct cm_error *err, int e, const char *path);

#endif
