/* docker.h: the Docker Engine API client (libcurl over the unix socket, or tcp with TLS). */
#ifndef CM_DOCKER_H
#define CM_DOCKER_H

#include <curl/curl.h>
#include "cm.h"

#define CM_DOCKER_API "/v1.41"

struct cm_docker {
	CURL *curl;
	char socket_path[512]; /* "" for tcp */
	char base[512];        /* "http://localhost/v1.41" or "https://host:port/v1.41" */
	char cert_dir[512];    /* DOCKER_CERT_PATH for tcp+TLS */
};

/* docker_host: "unix:///path" or "tcp://host:port" (TLS when DOCKER_TLS_VERIFY or
 * DOCKER_CERT_PATH is set). Returns -1 and fills err on a bad value. */
int cm_docker_init(struct cm_docker *d, const char *docker_host, struct cm_error *err);
void cm_docker_free(struct cm_docker *d);

/* d->base followed by path, in a buffer of exactly that size (caller frees), or NULL (no memory). */
char *cm_docker_url(const struct cm_docker *d, const char *path);

/* One request. path starts with "/" and is appended after the API version.
 * body (JSON) may be NULL. The response body is appended to resp (capped at 32 MiB).
 * Returns the HTTP status, or -1 (err: 503 DOCKER_UNAVAILABLE) when dockerd cannot be reached. */
long cm_docker_call(struct cm_docker *d, const char *method, const char *path, const char *body,
		    struct cm_buf *resp, long timeout_s, struct cm_error *err);

/* Streams a GET (events, logs): cb gets each chunk; returns non-zero to stop.
 * stop is polled about once a second. Returns HTTP status, or -1 on transport error. */
typedef int (*cm_docker_chunk_cb)(const char *data, size_t len, void *ud);
long cm_docker_stream(struct cm_docker *d, const char *path, cm_docker_chunk_cb cb, void *ud,
		      volatile int *stop, struct cm_error *err);

/* POST with a JSON body whose answer streams to cb (exec start, container wait): no size cap. */
long cm_docker_post_stream(struct cm_docker *d, const char *path, const char *json, cm_docker_chunk_cb cb, void *ud,
			   long timeout_s, struct cm_error *err);

/* A streamed exchange: the request body comes from io->read (NULL: none), response header
 * lines go to io->header, body chunks to io->body (non-zero return aborts). Returns the
 * HTTP status, or -1 with err when dockerd cannot be reached or the transfer broke. */
struct cm_docker_io {
	size_t (*read)(char *buf, size_t size, void *ud);
	void (*header)(const char *line, size_t len, void *ud);
	int (*body)(const char *data, size_t len, void *ud);
	void *ud;
};
long cm_docker_exchange(struct cm_docker *d, const char *method, const char *path, const struct cm_docker_io *io,
			long timeout_s, struct cm_error *err);

/* Extracts Docker's {"message": ...} from an error body into out. */
void cm_docker_message(const char *body, char *out, size_t outsz);

#endif
