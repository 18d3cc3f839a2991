/* multipart.h: multipart/form-data bodies of uploads (POST /images/build, POST and PUT /apps):
 * the file part and the plain form fields, from a body spooled to a file. */
#ifndef CM_MULTIPART_H
#define CM_MULTIPART_H

#include "cm.h"

#define CM_MULTIPART_FIELD_MAX 65536 /* bytes of one plain field */
#define CM_MULTIPART_FIELDS_MAX 32   /* plain fields in one body */

struct cm_mp_field {
	char name[64];
	char *value; /* NUL-terminated (a field holding a NUL byte is refused) */
	size_t len;
};

struct cm_mp_fields {
	struct cm_mp_field f[CM_MULTIPART_FIELDS_MAX];
	size_t n;
};

/* multipart/form-data; boundary=...: the boundary into out (1-70 characters), or false. */
bool cm_multipart_boundary(const char *ct, char *out, size_t outsz);

/* Replaces the spooled multipart body at path with the content of its file part (the part
 * named file_part, or else the first part with a filename whose name is not one of field_names,
 * a NULL-terminated list or NULL); every other part is a plain field and goes to fields, also
 * one sent with a filename (curl -F spec=@spec.json). Returns 0 with the file in place, 1 when the body has no file part
 * (path is left as it was; the fields are filled), or -1 with err: 400 INVALID_MULTIPART
 * (no part at all, a part without a name, more than CM_MULTIPART_FIELDS_MAX fields),
 * DUPLICATE_FIELD (a field twice; details.field names it), INVALID_VALUE (a field over
 * CM_MULTIPART_FIELD_MAX bytes or holding a NUL byte); 500/507 when the file cannot be
 * written. Free fields with cm_mp_fields_free in every case. */
int cm_multipart_extract(const char *path, const char *boundary, const char *file_part, const char *const *field_names,
			 struct cm_mp_fields *fields, struct cm_error *err);
void cm_mp_fields_free(struct cm_mp_fields *fields);

#endif
