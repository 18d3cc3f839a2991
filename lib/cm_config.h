/* config.h: settings from .env and the environment (the environment wins). */
#ifndef CM_CONFIG_H_
#define CM_CONFIG_H_

#include <limits.h>
#include "cm.h"

struct cm_config {
	char env_file[PATH_MAX];
	char app_user[128];
	char app_pass[256];
	char data_dir[PATH_MAX]; /* absolute */
	char run_dir[PATH_MAX];  /* sockets; reachable by the web server's group */
	char http_listen[128];
	char https_listen[128];
	char default_uid[64];     /* "uid:gid" */
	char app_uid[64];         /* APP_USER_UID: "uid:gid" of app and harpoon containers */
	bool allow_root;          /* ALLOW_ROOT_CONTAINERS: an app or definition may ask for uid 0 */
	char boot_command[1024];
	char publish_address[64];
	char docker_host[PATH_MAX];
	int64_t default_memory;
	long default_pids;
	double default_cpus;      /* 0 = no limit */
	long max_body;
	int workers_min, workers_max;
	int runner_threads;
	long cursor_ttl;          /* seconds */
	long job_timeout;         /* seconds a request waits for its job */
	int64_t upload_max_bytes;    /* upload body (compressed) */
	int64_t upload_max_unpacked; /* sum of extracted file sizes */
	long upload_max_entries;
	long upload_max_ratio;       /* unpacked / compressed */
	long ws_max_frame;           /* largest client WebSocket message (bytes) */
	long ws_max_sessions;        /* open terminal/log sessions at once */
	long ws_ping_interval;       /* seconds of silence before a ping; hang up after twice that */
	char images_file[PATH_MAX]; /* image definitions (YAML/JSON), "" = none */
	char bind_roots[2048];      /* ALLOWED_BIND_ROOTS: host directories binds may come from, comma-separated */
	char allowed_origins[2048]; /* ALLOWED_ORIGINS: origins besides the service's own that may change state */
	char allowed_hosts[2048];   /* ALLOWED_HOSTS: host names besides IP literals, localhost and server_name */
	char apps_listen[512];      /* APPS_LISTEN: the apps' own listeners ("off" = none) */
	char nginx_dir[PATH_MAX];   /* CM_NGINX_DIR: the system nginx's configuration, whose sites the CM_AUTH=off guard reads */
	/* capacity: what one instance may take of the host (grouped: BUILD_*, MAX_CONTAINERS) */
	int64_t build_memory;     /* BUILD_MEMORY: memory (and memory+swap) of every image build step */
	long build_pids;          /* BUILD_PIDS: processes of one image build (see jobs/build.c) */
	long max_containers;      /* MAX_CONTAINERS: managed containers of this instance (REST, harpoon, apps) */
	long sync_wait_grace;     /* SYNC_WAIT_GRACE: seconds a synchronous change waits without a waiter slot */
	bool auth_off;            /* only honoured when every listener is loopback */
	bool https_listen_default; /* CM_HTTPS_LISTEN was not set anywhere */
};

/* Loads defaults, then env_file (may be NULL or missing), then the environment.
 * Returns -1 and fills err on a malformed value. */
int cm_config_load(struct cm_config *c, const char *env_file, struct cm_error *err);
/* The TLS listener when CM_HTTPS_LISTEN is not set (default 0.0.0.0:8443). */
void cm_config_https_default(const char *listen_spec);
/* APPS_LISTEN when it is not set (default: derived from the API's listeners; "off" for serve FILE). */
void cm_config_apps_default(const char *listen_spec);
/* Writes data_dir + "/" + rel into out. Returns -1 when it does not fit. */
int cm_config_path(const struct cm_config *c, char *out, size_t outsz, const char *rel);
/* Parses "uid:gid" (gid optional = uid). */
int cm_parse_uid(const char *s, unsigned *uid, unsigned *gid);
/* The User of an app or harpoon container: asked ("uid[:gid]", or NULL/"" for APP_USER_UID)
 * into out[64]. 400 INVALID_VALUE for anything but numbers, 400 ROOT_NOT_ALLOWED for uid 0
 * unless ALLOW_ROOT_CONTAINERS. field names the request's field in the error. */
int cm_config_container_user(const struct cm_config *c, const char *asked, char out[64], const char *field,
			     struct cm_error *err);

#endif
