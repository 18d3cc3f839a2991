/* apps.h: what the runner's app files share (jobs/apps.c, apps_run.c, apps_health.c). */
#ifndef CM_JOBS_APPS_H
#define CM_JOBS_APPS_H

#include "runner.h"

#define INSTANCE_LABEL "io.container-manager.instance"
#define APP_LABEL "io.container-manager.app"
#define START_FAILS 15       /* consecutive failed checks before a starting app is unhealthy */
#define HEALTHY_FAILS 3      /* ... and a healthy one */
#define CHECK_MS 1000
#define SWAP_WAIT_MS 180000  /* a rebuilt container has this long to become healthy */
#define DRAIN_MS 2000        /* the old container keeps serving requests already sent to it */
#define OUT_MAX (1 << 20)    /* captured stdout / stderr of a run, each */
#define RUN_TIMEOUT 300
#define BACKOFF_MAX_MS 60000

struct app {
	char name[64];
	char image[400];
	char docker_id[80];
	char lifetime[10];
	char scheme[8];
	char health[520];
	char status[16];
	char user[64]; /* as asked ("" = APP_USER_UID) */
	long long generation, host_port, container_port;
	int64_t last_job; /* the create/update job that wrote the row (a re-run after a crash sees it) */
	bool built;
};

/* Where a service container answers: its address on the bridge network (what nginx and the
 * health checks use: no docker-proxy on the way) and the host port it publishes on 127.0.0.1
 * (for operators, and the fallback when the container has no bridge address). */
struct where {
	char ip[64];
	long long host_port;
};

/* Reads app name's row into a (404 APP_NOT_FOUND when there is none). */
int app_load(struct ctx *c, const char *name, struct app *a, struct cm_error *err);
/* One write statement with parameters typed by types ("t" text, "i" long long); retried while
 * the database is busy. 0, or -1 (logged). */
int app_exec(struct ctx *c, const char *sql, const char *types, ...);
void app_rm_container(struct ctx *c, const char *id_or_name);
void app_rm_image(struct ctx *c, const char *ref);
/* Removes this stack's containers of app name but keep_id and its built images but keep_tag. */
void app_sweep(struct ctx *c, const char *name, const char *keep_id, const char *keep_tag);
/* A confined create body for the app's image (port published on 127.0.0.1 when > 0; argv
 * replaces the entrypoint and command when given). Caller frees. */
char *app_body(struct ctx *c, const char *name, const char *image, long long port, yajl_val argv, const char *user);
/* The User of app's containers: its own user or APP_USER_UID ("uid:gid" into out[64]); 400
 * ROOT_NOT_ALLOWED when that is root and ALLOW_ROOT_CONTAINERS is not set (any more). */
int app_user(struct ctx *c, const char *asked, char out[64], struct cm_error *err);
int app_container_create(struct ctx *c, const char *cname, const char *body, char id[80], struct cm_error *err);
int app_container_start(struct ctx *c, const char *id, struct cm_error *err);
int app_container_state(struct ctx *c, const char *id, long long port, bool *running, struct where *w,
			struct cm_error *err);
int app_service_up(struct ctx *c, const char *name, long long gen, const char *image, long long port, const char *user,
		   char id[80], struct where *w, struct cm_error *err);
/* GET scheme://ADDRESS:port{health}: 0 when it answers 2xx/3xx, else -1 with why in msg. */
int app_probe(CURL *h, const char *scheme, const struct where *w, long long port, const char *health, char *msg,
	      size_t msgsz);
/* apps_run.c */
int app_job_run(struct ctx *c, const char *name, yajl_val args, char **result, struct cm_error *err);

#endif
