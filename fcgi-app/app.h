/* app.h: the FastCGI worker's request context, response writer and handler table types. */
#ifndef CM_APP_H
#define CM_APP_H

#include <fcgiapp.h>
#include "cm.h"
#include "cm_config.h"
#include "db.h"
#include "docker.h"
#include "json.h"
#include "query.h"

struct cm_app {
	struct cm_config cfg;
	struct cm_db db;
	char runner_sock[512];
	char htpasswd[512];
	unsigned char cursor_key[32];
	char instance[17]; /* this stack's instance label: the volumes it may show, mount and delete */
};

#define CM_MAX_PARAMS 4

struct cm_req {
	FCGX_Request *fr;
	struct cm_app *app;
	char method[16]; /* copied: FastCGI params are gone once the response is finished */
	char path[1024];
	char request_id[40];
	char user[128];
	char remote_addr[64];
	int64_t start_us;
	/* query string, decoded */
	struct cm_query q;
	/* path parameters captured by the router */
	char params[CM_MAX_PARAMS][300];
	/* body (read on demand) */
	struct cm_buf body;
	/* what the audit row records */
	int status;
	char error_code[48];
	char cuid[40];
	char action[48];
	int64_t job_id;
	bool async;        /* Prefer: respond-async or ?async=true: answer 202 with the job */
	bool async_asked;  /* ?async=true was given (refused where there is no job) */
	bool dry_run;      /* ?dry_run=true: validate only, change nothing (cm_dry_run) */
	bool responded;
};

/* Response writers. Each sends the whole response; call exactly one of them once. */
void cm_respond(struct cm_req *r, int status, const char *content_type, const char *extra_headers,
		const char *body, size_t len);
/* Sends status and headers only (content_length < 0: none); the caller streams the body. */
void cm_respond_start(struct cm_req *r, int status, const char *content_type, const char *extra_headers,
		      long long content_length);
void cm_respond_json(struct cm_req *r, int status, const char *extra_headers, const char *json);
/* Finishes g (freeing it) and answers its JSON, or 500 when it ran out of memory. */
void cm_respond_gen(struct cm_req *r, int status, yajl_gen g);
/* The one place an error becomes the JSON error body (seed 004's schema). */
void cm_respond_error(struct cm_req *r, const struct cm_error *err, const char *extra_headers);
int cm_respond_errorf(struct cm_req *r, int status, const char *kind, const char *code, const char *field,
		      const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* Reads and discards what is left of the body (bounded), so the client sees the answer. */
void cm_req_drain(struct cm_req *r);
/* Reads the request body (bounded by MAX_BODY_BYTES). Returns 0, or -1 with err (413/400). */
int cm_req_read_body(struct cm_req *r, struct cm_error *err);
/* Parses the body as JSON (an empty body gives NULL with no error when allow_empty); a body
 * that is not sent as application/json is 415 UNSUPPORTED_MEDIA_TYPE. */
yajl_val cm_req_json(struct cm_req *r, bool allow_empty, struct cm_error *err);
const char *cm_req_query(struct cm_req *r, const char *key);
const char *cm_req_header(struct cm_req *r, const char *cgi_name);
/* Answers 400 UNKNOWN_PARAMETER (and returns -1) when the query has a key not in allowed (NULL-terminated). */
int cm_req_allow_params(struct cm_req *r, const char *const *allowed);
/* Parses the query string; -1 with err on a malformed one. */
int cm_req_parse_query(struct cm_req *r, const char *qs, struct cm_error *err);

/* Basic-auth check against the htpasswd file (with a short-lived in-memory cache).
 * Returns 0 and fills r->user, or -1 with err (401). */
int cm_auth_check(struct cm_req *r, struct cm_error *err);
/* Sets up the failed-login table shared by all workers (call before forking). */
int cm_auth_shared_init(void);

/* Audit row for the finished request (after the response has been flushed). */
void cm_audit_write(struct cm_req *r);

/* The {cuid} path parameter, validated (answers 400 itself and returns NULL when malformed). */
const char *cm_path_cuid(struct cm_req *r);
/* Whether the container row exists (answers 404 itself when not). */
bool cm_container_exists(struct cm_req *r, const char *cuid);

/* Handlers. */
void h_container_upload(struct cm_req *r);
void h_container_download(struct cm_req *r);
void h_container_download_zip(struct cm_req *r);
void h_container_archive_get(struct cm_req *r);
void h_container_archive_put(struct cm_req *r);
typedef void (*cm_handler)(struct cm_req *r);
void h_containers_create(struct cm_req *r);
void h_containers_list(struct cm_req *r);
void h_container_get(struct cm_req *r);
void h_container_patch(struct cm_req *r);
void h_container_delete(struct cm_req *r);
void h_container_action(struct cm_req *r);
void h_container_ports(struct cm_req *r);
void h_container_status(struct cm_req *r);
void h_healthz(struct cm_req *r);
void h_version(struct cm_req *r);
void h_metrics(struct cm_req *r);
/* containers.c: signed, stateless pagination cursors (keyset on a never-reused sequence) */
struct cm_cursor {
	int64_t seq;
	int64_t expires; /* unix seconds */
	uint32_t filter; /* cm_filter_hash of the listing's filters */
};
uint32_t cm_filter_hash(const char *a, const char *b);
void cm_cursor_encode(struct cm_app *app, const struct cm_cursor *c, char out[64]);
/* 400 INVALID_CURSOR when malformed or forged, 410 CURSOR_EXPIRED when old */
int cm_cursor_decode(struct cm_app *app, const char *tok, struct cm_cursor *c, struct cm_error *err);

/* "running,paused" (each one of known) into a canonical JSON array in known's order; 400 on an
 * unknown or empty filter. */
int cm_status_filter(const char *s, const char *const *known, size_t nknown, char *out, size_t outsz,
		     struct cm_error *err);
/* A cursor= token for a listing with these filters (none: start at the newest); answers 400/410
 * itself and returns -1. */
int cm_page_cursor(struct cm_req *r, const char *token, uint32_t filter, struct cm_cursor *c);
/* Steps st (bound with LIMIT limit+1, keyset column seq_col descending) and answers
 * {KEY: [...], "next_cursor": TOKEN|null}. */
void cm_respond_page(struct cm_req *r, sqlite3_stmt *st, const char *key, long limit, int seq_col, uint32_t filter,
		     void (*emit)(yajl_gen, sqlite3_stmt *));

/* Queues a job (plus what pre does in the same transaction) and waits for it: 1 with *result
 * on success; -1 when it answered the error; 0 when it answered 202 with the job (asked to run
 * in the background, or it outlived JOB_TIMEOUT + extra_wait). */
typedef int (*pre_insert_fn)(struct cm_db *db, void *ctx, struct cm_error *err);
int cm_run_job(struct cm_req *r, const char *kind, const char *cuid, const char *args, long extra_wait,
	       pre_insert_fn pre, void *ctx, char **result);
/* archive.c: this worker's Engine API client (for streams and image reads) */
struct cm_docker *cm_app_docker(struct cm_req *r, struct cm_error *err);
/* GET path from Docker, the JSON answer parsed into *v (status 200 only). Returns the status, or
 * -1 after answering the error itself. */
long cm_app_docker_get(struct cm_req *r, const char *path, yajl_val *v);

/* images.c */
void h_images_list(struct cm_req *r);
void h_image_get(struct cm_req *r);
void h_image_delete(struct cm_req *r);
void h_image_build(struct cm_req *r);
void h_container_commit(struct cm_req *r);
void h_job_log(struct cm_req *r);
/* Uploads (build contexts, app sources), shared by images.c and apps.c. */
/* A Content-Type a build context may be sent as (zip, tar, compressed tar). */
bool cm_context_type(const char *ct);
/* Streams the body into a new file DATA/builds/NAME (bounded by UPLOAD_MAX_BYTES): name gets
 * the file's name, path its path. Returns 0, or -1 with err (nothing left on disk). */
int cm_upload_stage(struct cm_req *r, char name[40], char *path, size_t pathsz, struct cm_error *err);

/* apps.c */
void h_apps_list(struct cm_req *r);
void h_app_create(struct cm_req *r);
void h_app_get(struct cm_req *r);
void h_app_update(struct cm_req *r);
void h_app_delete(struct cm_req *r);
void h_app_run(struct cm_req *r);
void h_app_gate(struct cm_req *r);

/* volumes.c */
void h_volumes_list(struct cm_req *r);
void h_volume_get(struct cm_req *r);
void h_volume_create(struct cm_req *r);
void h_volume_delete(struct cm_req *r);

/* jobs.c: workers held for long. Any request that keeps its worker past its first
 * CM_WAIT_FREE_MS (a synchronous change waiting for its job, GET /jobs/{id}?wait=, a log
 * follower from its start) takes a slot of the busy pool, WORKERS_MAX - WORKERS_MAX/4: at
 * least a quarter of the workers are never held longer than that by waiting, for every other
 * request and /_auth. Within it, at most WORKERS_MAX/4 followers, and WORKERS_MAX/2 waiters
 * past CM_POLL_FREE seconds (GET /jobs/{id}?wait=) or SYNC_WAIT_GRACE seconds (a synchronous
 * change). */
#define CM_WAIT_FREE_MS 1000
#define CM_POLL_FREE 5
#define CM_STR_(x) #x
#define CM_STR(x) CM_STR_(x)
enum cm_hold { CM_HOLD_FOLLOW, CM_HOLD_WAIT, CM_HOLD_BUSY };
/* Slots in pool (at least 1). */
int cm_hold_slots(const struct cm_app *app, enum cm_hold pool);
/* A free slot of pool: an fd the caller closes when done (the slot is freed when the worker
 * closes it or dies), or -1 when every slot is taken. */
int cm_hold_slot(const struct cm_app *app, enum cm_hold pool);
/* Answers 503 (code, field) with Retry-After: 5 for a request that found its pool full. */
void cm_respond_pool_full(struct cm_req *r, enum cm_hold pool, const char *code, const char *field, const char *hint);

/* jobs.c */
/* 202 with {job_id, status_url, status} and Location: the job runs in the background. */
void cm_respond_job_accepted(struct cm_req *r, int64_t id);
/* ?async=true on a route that runs no job: answers 400 ASYNC_NOT_SUPPORTED and returns true.
 * (Prefer: respond-async is a preference, so it is simply not applied there.) */
bool cm_refuse_async(struct cm_req *r, const char *why);
/* The {id} of /jobs/{id}...; answers 400 INVALID_JOB_ID itself and returns -1. */
int64_t cm_path_job_id(struct cm_req *r);
void h_job_get(struct cm_req *r);
void h_jobs_list(struct cm_req *r);
void h_job_delete(struct cm_req *r);

/* definitions.c */
void h_definitions_list(struct cm_req *r);
void h_definition_get(struct cm_req *r);
void h_auth(struct cm_req *r);

/* Routes the request to its handler (404/405 JSON when none matches). */
void cm_route(struct cm_req *r);

/* The route table (router.c), which describe.c also publishes. */
struct cm_route {
	const char *method;
	const char *pattern;  /* "*" matches one path segment, "**" the rest; captured into r->params */
	cm_handler handler;   /* NULL: served by nginx and cm-ws, listed for documentation only */
	const char *action;   /* recorded in the audit row */
	const char *const *params; /* query parameters it accepts (others: 400) */
	const char *doc;      /* the path as documented ("/containers/{cuid}"); NULL: internal, not listed */
	const char *summary;  /* one line for GET / and the OpenAPI summary */
	const char *body;     /* request body: a schema/ name, "zip", "tar", "build", "object", or NULL */
	int ok;               /* the success status */
	const char *resp;     /* success body: a schema/objects.json definition, "text", "octet", "zip", "tar", "stream" */
	const char *errors;   /* the statuses it answers besides 400, 401, 429, 500, 503: "404 409" */
};
const struct cm_route *cm_routes(size_t *n);

/* describe.c: GET /, GET /schema[/{name}], GET /openapi.json */
void h_index(struct cm_req *r);
void h_schema(struct cm_req *r);
void h_openapi(struct cm_req *r);
/* ?dry_run=true: answers 200 {"valid": true, "dry_run": true} and returns true. Call it once
 * the request has been validated, before anything changes. */
bool cm_dry_run(struct cm_req *r);

#endif
