/* cm.h: shared declarations for the container-manager convenience library. */
#ifndef CM_H
#define CM_H

#include <stdarg.h>
#include <stdlib.h>
#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include <time.h>

#define CM_VERSION_STRING "container-manager " PACKAGE_VERSION

#define CM_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* ---- errors ----
 * Convention: a function that can fail returns a negative value (or NULL) and
 * fills a struct cm_error. Callers may prefix context with cm_err_prefix().
 * The HTTP layer turns it into the JSON error body in exactly one place. */
struct cm_error {
	int status;        /* HTTP status the error maps to (500 when unsure) */
	char kind[32];     /* seed error type: validation_error, not_found, ... */
	char code[48];     /* machine code: MISSING_IMAGE, PORT_IN_USE, ... */
	char field[128];   /* details.field, or "" */
	char message[512];
	long long limit;   /* details.limit when non-zero (a size or count the request exceeded) */
	long long used;    /* details.used when limit is set: how much of it is taken (a count) */
};

int cm_err_set(struct cm_error *err, int status, const char *kind, const char *code,
	       const char *field, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
void cm_err_prefix(struct cm_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void cm_err_clear(struct cm_error *err);
/* Shorthands for the most common kinds. All return -1. */
#define cm_err_validation(e, code, field, ...) cm_err_set((e), 400, "validation_error", (code), (field), __VA_ARGS__)
#define cm_err_internal(e, ...) cm_err_set((e), 500, "internal_error", "INTERNAL", NULL, __VA_ARGS__)

/* ---- logging (stderr, UTC timestamps, untrusted bytes escaped by the caller with cm_log_escape) ---- */
enum cm_log_level { CM_LOG_DEBUG, CM_LOG_INFO, CM_LOG_WARN, CM_LOG_ERROR };
void cm_log_init(const char *prog);
void cm_log(enum cm_log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define cm_info(...) cm_log(CM_LOG_INFO, __VA_ARGS__)
#define cm_warn(...) cm_log(CM_LOG_WARN, __VA_ARGS__)
#define cm_error(...) cm_log(CM_LOG_ERROR, __VA_ARGS__)
#define cm_debug(...) cm_log(CM_LOG_DEBUG, __VA_ARGS__)
/* Writes a printable, escaped copy of in (at most outsz-1 bytes) to out. */
void cm_log_escape(char *out, size_t outsz, const char *in);

/* ---- growable byte buffer ---- */
struct cm_buf {
	char *data;
	size_t len, cap;
	size_t limit; /* 0 = unlimited; appends past it fail */
};
int cm_buf_append(struct cm_buf *b, const void *data, size_t len);
int cm_buf_puts(struct cm_buf *b, const char *s);
int cm_buf_printf(struct cm_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends s percent-encoded (everything but unreserved characters): a query value or a path segment. */
void cm_buf_urlenc(struct cm_buf *b, const char *s);
void cm_buf_free(struct cm_buf *b);
/* NUL-terminated view of the buffer (always valid after any append; "" when empty). */
const char *cm_buf_str(struct cm_buf *b);

/* ---- misc ---- */
int cm_random_bytes(void *buf, size_t len);
/* Writes a random RFC 4122 v4 uuid (36 chars + NUL) into out[37]. */
int cm_uuid4(char out[37]);
/* "c" + uuid4: 37 chars + NUL. */
int cm_new_cuid(char out[38]);
bool cm_valid_cuid(const char *s);
/* RFC 3339 UTC with milliseconds: "2024-01-20T15:30:00.123Z" into out[32]. */
void cm_time_rfc3339(char out[32], int64_t unix_ms);
int64_t cm_now_ms(void);
int64_t cm_monotonic_ms(void);
int64_t cm_monotonic_us(void);
/* Parses Docker's RFC 3339 nano timestamps; returns unix ms, or 0 for Docker's zero time. */
int64_t cm_parse_docker_time(const char *s);
bool cm_valid_utf8(const char *s, size_t len);
/* base64url without padding. out must hold 4*((len+2)/3)+1. */
size_t cm_b64url_encode(char *out, const unsigned char *in, size_t len);
/* Returns decoded length or -1. */
long cm_b64url_decode(unsigned char *out, size_t outsz, const char *in);
/* Parses "4096m", "1g", "512k", "100" (bytes) and the same with a trailing "b". */
int cm_parse_size(const char *s, int64_t *out);
/* Writes "ip:port" parsing: splits listen spec into host and port. */
int cm_parse_listen(const char *spec, char *host, size_t hostsz, int *port);
bool cm_is_loopback_host(const char *host);
/* mkdir -p with mode for created components. */
int cm_mkdir_p(const char *path, unsigned mode);
/* rm -rf without following symlinks (lib/paths.c, openat/unlinkat based). Missing path is success. */
int cm_rm_rf(const char *path);
/* Writes data to path atomically (temp file + rename) with mode. */
int cm_write_file_atomic(const char *path, const void *data, size_t len, unsigned mode);
/* Reads a whole (small) file; caller frees. Returns NULL on error (errno set). */
char *cm_read_file(const char *path, size_t max, size_t *lenp);
/* Directory of the running executable (for finding sibling programs), caller frees. */
char *cm_self_dir(void);
/* snprintf that fails (-1, ENAMETOOLONG) instead of truncating: for paths. */
int cm_pathf(char *out, size_t outsz, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* A unix socket of type (SOCK_STREAM/SOCK_DGRAM, flags allowed) bound at path, mode 0600,
 * replacing a stale one; stream sockets also listen. Returns the fd or -1 (errno). */
int cm_unix_bind(const char *path, int type, int backlog);
/* Standard base64 (padding optional). Returns the decoded length (out NUL-terminated) or -1. */
long cm_b64_decode(char *out, size_t outsz, const char *in, size_t inlen);
/* HMAC-SHA256 */
int cm_hmac_sha256(const void *key, size_t keylen, const void *msg, size_t msglen, unsigned char out[32]);
bool cm_consttime_eq(const void *a, const void *b, size_t n);

#endif
