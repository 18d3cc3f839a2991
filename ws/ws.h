/* ws.h: cm-ws, the WebSocket helper. One libwebsockets event loop serves every session;
 * blocking Docker calls (exec create, the attach handshake, resize, inspect) and process-tree
 * reaping run on a few worker threads and hand their results back to the loop. */
#ifndef CM_WS_H
#define CM_WS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include "cm.h"

/* ---- docker side (dock.c; worker threads only) ---- */
struct dock_conn {
	int fd;                 /* hijacked / streaming connection (non-blocking), -1 on failure */
	unsigned char *extra;   /* stream bytes read together with the response headers */
	size_t extra_len;
};

/* The identity of the exec'd process on the host, checked before any signal or kill so that
 * a reused pid is never touched. */
struct proc_id {
	pid_t pid;
	unsigned long long starttime; /* /proc/PID/stat field 22 */
	unsigned long long pidns;     /* inode of /proc/PID/ns/pid */
};

void dock_setup(const char *socket_path);
/* Creates an exec (argv_json: a JSON array) and starts it attached. */
int dock_exec_start(const char *container, const char *argv_json, bool tty, int cols, int rows, char *exec_id,
		    size_t exec_id_sz, struct dock_conn *conn, struct proc_id *proc, struct cm_error *err);
int dock_exec_resize(const char *exec_id, int cols, int rows, struct cm_error *err);
/* Waits (up to wait_ms) for the exec to end; returns its exit code, or -1 with err. */
int dock_exec_exit_code(const char *exec_id, int wait_ms, bool *still_running, struct cm_error *err);
/* Opens the container's log stream; *tty tells whether the stream is raw (TTY) or multiplexed. */
int dock_logs_open(const char *container, const char *query, bool *tty, struct dock_conn *conn, struct cm_error *err);

/* ---- processes (proc.c) ---- */
int proc_identify(pid_t pid, struct proc_id *out);
/* true when pid still is the process identified by id */
bool proc_same(const struct proc_id *id);
/* Sends sig to the foreground process group of the session's terminal (tty) or to the
 * process group of the exec'd process; -1 when that process is gone. */
int proc_signal(const struct proc_id *id, bool tty, int sig);
/* SIGKILLs every process of the exec's session (same pid namespace); returns how many. */
int proc_kill_session(const struct proc_id *id);

/* ---- HTTP helpers shared with the start_container endpoints (main.c) ---- */
struct lws;
struct lws_context;
struct cm_config;
struct cm_db;
int ws_http_reply(struct lws *wsi, int status, const char *ctype, const char *body, size_t blen, const char *request_id);
void ws_header(struct lws *wsi, const char *name, char *out, size_t outsz);
/* The Host and Origin checks of lib/origin.c on a request nginx passed on (it names the
 * client's Host, scheme and server_name in X-CM-Host, X-CM-Scheme and X-CM-Server-Name).
 * Returns 0, or -1 with err (421 MISDIRECTED_REQUEST, 403 CROSS_ORIGIN_REFUSED). */
int ws_site_check(struct lws *wsi, const struct cm_config *cfg, const char *method, const char *path, bool upgrade,
		  struct cm_error *err);
/* True when the request carries this start's proxy secret (X-CM-Proxy-Secret), which only
 * nginx's configuration holds; compared in constant time. */
bool ws_proxy_trusted(struct lws *wsi);

/* ---- start_container / stop_container / unlock_container / shutdown (harpoon.c) ---- */
/* Listens on sock (group gid may connect). Returns -1 when it cannot. */
int harpoon_setup(struct lws_context *ctx, const struct cm_config *cfg, struct cm_db *db, bool db_ok, const char *sock,
		  unsigned gid);
/* The stack is stopping: waiters get 503 shutting_down, new calls too. */
void harpoon_shutting_down(void);
/* Requests still waiting for an answer (the loop keeps running until they are written). */
int harpoon_pending(void);

#endif
