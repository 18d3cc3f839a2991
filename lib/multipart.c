/* multipart.c: the file part and the plain fields of a spooled multipart/form-data body
 * (see multipart.h). The body is mapped, not read into memory; only fields are copied. */
#include "config.h"
#include "multipart.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* multipart/form-data; boundary=...: the boundary into out (1-70 characters), or false. */
bool cm_multipart_boundary(const char *ct, char *out, size_t outsz)
{
	if (!ct || strncasecmp(ct, "multipart/form-data", 19))
		return false;
	const char *b = strcasestr(ct, "boundary=");
	if (!b)
		return false;
	b += 9;
	bool quoted = *b == '"';
	if (quoted)
		b++;
	size_t n = quoted ? strcspn(b, "\"") : strcspn(b, "; \t");
	if (n == 0 || n > 70 || n >= outsz)
		return false;
	memcpy(out, b, n);
	out[n] = '\0';
	return true;
}

/* The value of param (name=, filename=) in a Content-Disposition header line. */
static bool disposition_param(const char *h, size_t hl, const char *param, char *out, size_t outsz)
{
	size_t pl = strlen(param);
	for (size_t i = 0; i + pl < hl; i++) {
		if ((i == 0 || h[i - 1] == ' ' || h[i - 1] == ';') && !strncasecmp(h + i, param, pl) && h[i + pl] == '=') {
			const char *v = h + i + pl + 1;
			size_t left = hl - (i + pl + 1), n;
			if (left && *v == '"') {
				v++;
				left--;
				const char *q = memchr(v, '"', left);
				n = q ? (size_t)(q - v) : left;
			} else {
				n = strcspn(v, ";\r\n");
				if (n > left)
					n = left;
			}
			if (n >= outsz)
				n = outsz - 1;
			memcpy(out, v, n);
			out[n] = '\0';
			return true;
		}
	}
	return false;
}

void cm_mp_fields_free(struct cm_mp_fields *fields)
{
	for (size_t i = 0; i < fields->n; i++)
		free(fields->f[i].value);
	fields->n = 0;
}

/* Adds a plain field (name, value of fl bytes): -1 with err on a duplicate or a bad one. */
static int add_field(struct cm_mp_fields *fields, const char *name, const char *value, size_t fl, struct cm_error *err)
{
	char shown[64];
	cm_log_escape(shown, sizeof shown, name);
	if (!name[0])
		return cm_err_validation(err, "INVALID_MULTIPART", "body", "a part of the multipart body has no name");
	for (size_t i = 0; i < fields->n; i++)
		if (!strcmp(fields->f[i].name, name))
			return cm_err_validation(err, "DUPLICATE_FIELD", shown, "the field \"%s\" is given twice", shown);
	if (fields->n >= CM_MULTIPART_FIELDS_MAX)
		return cm_err_validation(err, "INVALID_MULTIPART", "body", "the multipart body has more than %d fields",
					 CM_MULTIPART_FIELDS_MAX);
	if (fl > CM_MULTIPART_FIELD_MAX)
		return cm_err_validation(err, "INVALID_VALUE", shown, "the \"%s\" part is larger than %d bytes", shown,
					 CM_MULTIPART_FIELD_MAX);
	if (memchr(value, '\0', fl))
		return cm_err_validation(err, "INVALID_VALUE", shown, "the \"%s\" part holds a NUL byte", shown);
	struct cm_mp_field *f = &fields->f[fields->n];
	if (!(f->value = malloc(fl + 1)))
		return cm_err_internal(err, "out of memory");
	memcpy(f->value, value, fl);
	f->value[fl] = '\0';
	f->len = fl;
	snprintf(f->name, sizeof f->name, "%s", name);
	fields->n++;
	return 0;
}

/* True when name is one of the NULL-terminated names (none when names is NULL). */
static bool listed(const char *const *names, const char *name)
{
	for (; names && *names; names++)
		if (!strcmp(*names, name))
			return true;
	return false;
}

int cm_multipart_extract(const char *path, const char *boundary, const char *file_part, const char *const *field_names,
			 struct cm_mp_fields *fields, struct cm_error *err)
{
	fields->n = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0) {
		if (fd >= 0)
			close(fd);
		return cm_err_set(err, 500, "io_error", "IO_ERROR", NULL, "cannot read the upload");
	}
	size_t len = (size_t)st.st_size;
	char *m = len ? mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0) : MAP_FAILED;
	close(fd);
	if (m == MAP_FAILED)
		return cm_err_validation(err, "INVALID_MULTIPART", "body", "the multipart body is empty");
	char delim[80];
	int dl = snprintf(delim, sizeof delim, "--%s", boundary);
	const char *p = memmem(m, len, delim, (size_t)dl), *end = m + len;
	/* the parts first, then the choice of the file part: a part named file_part, or else the
	 * first with a filename that is not one of field_names; every other part is a field, also
	 * one sent as a file (curl -F spec=@spec.json) */
	struct part {
		char name[64];
		bool has_filename;
		const char *body, *end;
	} parts[CM_MULTIPART_FIELDS_MAX + 2];
	size_t np = 0;
	const char *best = NULL, *best_end = NULL;
	bool any = false;
	int rc = 0;
	while (p && p + dl + 2 <= end) {
		const char *q = p + dl;
		if (q[0] == '-' && q[1] == '-')
			break; /* the closing delimiter */
		const char *hdr = memmem(q, (size_t)(end - q), "\r\n", 2);
		const char *body = hdr ? memmem(hdr, (size_t)(end - hdr), "\r\n\r\n", 4) : NULL;
		if (!body)
			break;
		body += 4;
		char nd[90];
		int nl = snprintf(nd, sizeof nd, "\r\n--%s", boundary);
		const char *next = memmem(body, (size_t)(end - body), nd, (size_t)nl);
		if (!next)
			break;
		any = true;
		if (np == CM_ARRAY_LEN(parts)) {
			rc = cm_err_validation(err, "INVALID_MULTIPART", "body", "the multipart body has more than %d fields",
					       CM_MULTIPART_FIELDS_MAX);
			break;
		}
		struct part *pt = &parts[np++];
		pt->name[0] = '\0';
		pt->has_filename = false;
		pt->body = body;
		pt->end = next;
		/* the part's headers: hdr .. body-4 */
		char filename[256];
		for (const char *h = hdr + 2; h < body - 4;) {
			const char *eol = memmem(h, (size_t)(body - 2 - h), "\r\n", 2);
			size_t hl = eol ? (size_t)(eol - h) : (size_t)(body - 4 - h);
			if (hl > 20 && !strncasecmp(h, "Content-Disposition:", 20)) {
				disposition_param(h, hl, "name", pt->name, sizeof pt->name);
				pt->has_filename = disposition_param(h, hl, "filename", filename, sizeof filename);
			}
			h += hl + 2;
		}
		p = next + 2;
	}
	size_t file = np;
	for (size_t i = 0; i < np && file == np; i++)
		if (!strcmp(parts[i].name, file_part))
			file = i;
	for (size_t i = 0; i < np && file == np; i++)
		if (parts[i].has_filename && !listed(field_names, parts[i].name))
			file = i;
	if (file < np) {
		best = parts[file].body;
		best_end = parts[file].end;
	}
	for (size_t i = 0; rc == 0 && i < np; i++)
		if (i != file && add_field(fields, parts[i].name, parts[i].body, (size_t)(parts[i].end - parts[i].body), err) < 0)
			rc = -1;
	if (rc == 0 && !any)
		rc = cm_err_validation(err, "INVALID_MULTIPART", "body", "the multipart body has no part (boundary %s)", boundary);
	if (rc == 0 && !best)
		rc = 1;
	if (rc == 0) {
		char tmp[PATH_MAX + 8];
		snprintf(tmp, sizeof tmp, "%s.part", path);
		int out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		size_t n = (size_t)(best_end - best), off = 0;
		while (out >= 0 && off < n) {
			ssize_t w = write(out, best + off, n - off);
			if (w < 0 && errno == EINTR)
				continue;
			if (w < 0)
				break;
			off += (size_t)w;
		}
		int e = out < 0 ? errno : off < n ? (errno ? errno : EIO) : 0;
		if (out >= 0 && close(out) < 0 && !e)
			e = errno;
		if (!e && rename(tmp, path) < 0)
			e = errno;
		if (e) {
			unlink(tmp);
			rc = cm_err_set(err, e == ENOSPC ? 507 : 500, "io_error", e == ENOSPC ? "DISK_FULL" : "IO_ERROR", NULL,
					"cannot store the upload: %s", strerror(e));
		}
	}
	munmap(m, len);
	return rc;
}
