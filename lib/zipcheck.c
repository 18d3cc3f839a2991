/* zipcheck.c: the program's own checks around libarchive's zip reader: entry names, and
 * entry types read straight from the zip's central directory. */
#include "config.h"
#include "zipcheck.h"
#include "paths.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* Checks an entry name and writes its normalised form; refuses what could leave the target. */
int cm_zip_entry_name(const char *name, char *out, size_t outsz, struct cm_error *err)
{
	if (!name || !*name)
		return cm_err_validation(err, "INVALID_ENTRY_NAME", NULL, "the archive has an entry without a name");
	if (!cm_valid_utf8(name, strlen(name)))
		return cm_err_validation(err, "INVALID_ENTRY_NAME", NULL, "an entry name is not valid UTF-8");
	if (name[0] == '/')
		return cm_err_validation(err, "ABSOLUTE_PATH", NULL, "entry '%.200s' has an absolute path", name);
	if (strchr(name, '\\'))
		return cm_err_validation(err, "INVALID_ENTRY_NAME", NULL, "entry '%.200s' contains a backslash", name);
	struct cm_error e2;
	if (cm_path_normalize(name, out, outsz, &e2) < 0) {
		if (!strcmp(e2.code, "PATH_TRAVERSAL"))
			return cm_err_validation(err, "PATH_TRAVERSAL", NULL, "entry '%.200s' climbs out with '..'", name);
		return cm_err_validation(err, "INVALID_ENTRY_NAME", NULL, "entry '%.200s': %s", name, e2.message);
	}
	if (!out[0])
		return cm_err_validation(err, "INVALID_ENTRY_NAME", NULL, "entry '%.200s' names the target itself", name);
	return 0;
}

static uint32_t le32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const unsigned char *p)
{
	return le32(p) | (uint64_t)le32(p + 4) << 32;
}

/* Reads the zip's central directory itself and refuses entries whose Unix mode is a
 * symlink, device, FIFO or socket: libarchive turns the last three into plain files,
 * but a zip that carries them is not what the client meant to send. Returns 0 when the
 * directory cannot be found (libarchive then reports the archive as broken). */
int cm_zip_check_central(int fd, int64_t size, struct cm_error *err)
{
	unsigned char tail[65557];
	int64_t tl = size < (int64_t)sizeof tail ? size : (int64_t)sizeof tail;
	if (tl < 22 || pread(fd, tail, (size_t)tl, size - tl) != tl)
		return 0;
	int64_t eocd = -1;
	for (int64_t i = tl - 22; i >= 0; i--)
		if (tail[i] == 'P' && tail[i + 1] == 'K' && tail[i + 2] == 5 && tail[i + 3] == 6) {
			eocd = i;
			break;
		}
	if (eocd < 0)
		return 0;
	uint64_t count = (uint64_t)(tail[eocd + 10] | tail[eocd + 11] << 8);
	uint64_t cd_size = le32(tail + eocd + 12), cd_off = le32(tail + eocd + 16);
	if ((count == 0xffff || cd_off == 0xffffffffu || cd_size == 0xffffffffu) && eocd >= 20 &&
	    le32(tail + eocd - 20) == 0x07064b50) {
		/* zip64: the locator points at the zip64 end record */
		unsigned char rec[56];
		uint64_t at = le64(tail + eocd - 20 + 8);
		if ((int64_t)at + 56 > size || pread(fd, rec, sizeof rec, (off_t)at) != (ssize_t)sizeof rec ||
		    le32(rec) != 0x06064b50)
			return 0;
		count = le64(rec + 32);
		cd_size = le64(rec + 40);
		cd_off = le64(rec + 48);
	}
	if (cd_off + cd_size > (uint64_t)size)
		return 0;
	unsigned char h[46];
	uint64_t at = cd_off;
	char name[512];
	for (uint64_t i = 0; i < count && at + 46 <= cd_off + cd_size; i++) {
		if (pread(fd, h, sizeof h, (off_t)at) != (ssize_t)sizeof h || le32(h) != 0x02014b50)
			return 0;
		unsigned system = h[5];
		uint32_t ext = le32(h + 38);
		unsigned nl = (unsigned)(h[28] | h[29] << 8), xl = (unsigned)(h[30] | h[31] << 8), cl = (unsigned)(h[32] | h[33] << 8);
		size_t take = nl < sizeof name - 1 ? nl : sizeof name - 1;
		ssize_t got = pread(fd, name, take, (off_t)(at + 46));
		size_t len = got > 0 ? (size_t)got : 0;
		name[len] = '\0';
		bool nul = memchr(name, '\0', len) != NULL;
		/* general purpose bit 11: the name is UTF-8 (and must be valid) */
		bool bad_utf8 = (h[8] | h[9] << 8) & 0x800 ? !cm_valid_utf8(name, len) : false;
		for (size_t k = 0; k < len; k++)
			if ((unsigned char)name[k] < 0x20 || (unsigned char)name[k] >= 0x80)
				name[k] = '?';
		if (nul)
			return cm_err_validation(err, "INVALID_ENTRY_NAME", NULL, "entry '%.200s' has a NUL byte in its name", name);
		if (bad_utf8)
			return cm_err_validation(err, "INVALID_ENTRY_NAME", NULL, "entry '%.200s' is marked UTF-8 but is not", name);
		if (system == 3) {
			unsigned type = (ext >> 16) & 0170000;
			if (type == 0120000)
				return cm_err_validation(err, "SYMLINK_ENTRY", NULL, "entry '%.200s' is a symbolic link; links are refused", name);
			if (type != 0 && type != 0100000 && type != 0040000)
				return cm_err_validation(err, "SPECIAL_ENTRY", NULL, "entry '%.200s' is a device, FIFO or socket", name);
		}
		at += 46 + nl + xl + cl;
	}
	return 0;
}

