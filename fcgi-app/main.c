/* main.c: cm-fcgi, the FastCGI worker pool. The supervisor opens the socket, pre-forks
 * workers, respawns the ones that die, grows between WORKERS_MIN and WORKERS_MAX when all
 * are busy, replaces them on SIGHUP and drains in-flight requests on SIGTERM. */
#include "config.h"
#include "metrics.h"
#include "app.h"
#include "origin.h"
#include "trust.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <locale.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_SLOTS 1024
#define IDLE_REAP_MS 15000

struct slot {
	pid_t pid;
	volatile int busy;
	int generation;
	int64_t idle_since;
};

static struct slot *board; /* shared with the workers (MAP_SHARED) */
static volatile sig_atomic_t got_term, got_hup, got_chld;
static int self_pipe[2] = {-1, -1};
static const char *env_file = ".env";

static void on_signal(int sig)
{
	int saved = errno;
	if (sig == SIGTERM || sig == SIGINT)
		got_term = 1;
	else if (sig == SIGHUP)
		got_hup = 1;
	else if (sig == SIGCHLD)
		got_chld = 1;
	if (self_pipe[1] >= 0) {
		ssize_t w = write(self_pipe[1], "x", 1);
		(void)w;
	}
	errno = saved;
}

static void on_worker_term(int sig)
{
	(void)sig;
	got_term = 1;
	FCGX_ShutdownPending();
}

static void install(int sig, void (*fn)(int))
{
	struct sigaction sa = {0};
	sa.sa_handler = fn;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = 0; /* no SA_RESTART: blocking calls return EINTR */
	sigaction(sig, &sa, NULL);
}

/* Fills request fields from the FastCGI parameters. Returns -1 (and answers) on bad input. */
static int req_init(struct cm_req *r)
{
	const char *rid = cm_req_header(r, "REQUEST_ID");
	if (rid && strlen(rid) == 36 && strspn(rid, "0123456789abcdef-") == 36) {
		snprintf(r->request_id, sizeof r->request_id, "%s", rid);
	} else if (cm_uuid4(r->request_id) < 0) {
		snprintf(r->request_id, sizeof r->request_id, "unknown");
	}
	const char *m = cm_req_header(r, "REQUEST_METHOD");
	snprintf(r->method, sizeof r->method, "%s", m && *m && strlen(m) < sizeof r->method ? m : "GET");
	const char *ra = cm_req_header(r, "REMOTE_ADDR");
	snprintf(r->remote_addr, sizeof r->remote_addr, "%s", ra ? ra : "");
	const char *uri = cm_req_header(r, "DOCUMENT_URI");
	if (!uri)
		uri = cm_req_header(r, "SCRIPT_NAME");
	if (!uri || !*uri)
		uri = "/";
	if (strlen(uri) >= sizeof r->path) {
		snprintf(r->path, sizeof r->path, "%s", "/");
		cm_respond_errorf(r, 414, "validation_error", "URI_TOO_LONG", NULL, "request path is too long");
		return -1;
	}
	snprintf(r->path, sizeof r->path, "%s", uri);
	size_t pl = strlen(r->path);
	if (pl > 1 && r->path[pl - 1] == '/')
		r->path[pl - 1] = '\0';
	if (!cm_valid_utf8(r->path, strlen(r->path))) {
		snprintf(r->path, sizeof r->path, "%s", "/");
		cm_respond_errorf(r, 400, "validation_error", "INVALID_UTF8", NULL, "request path is not valid UTF-8");
		return -1;
	}
	struct cm_error err = {0};
	if (cm_req_parse_query(r, cm_req_header(r, "QUERY_STRING"), &err) < 0) {
		cm_respond_error(r, &err, NULL);
		return -1;
	}
	return 0;
}

/* The Host and Origin checks of lib/origin.c, before credentials are looked at. /_auth is
 * nginx's sub-request for the WebSocket helper's routes, which checks them itself (an
 * auth_request answer can only allow, 401 or 403); the apps' gate checks the Host only (what
 * an app accepts from other sites is the app's business) and answers with a state header
 * that nginx renders as the 421. Returns -1 once it answered. */
static int site_check(struct cm_req *r)
{
	/* (nginx's own sub-requests name these exact URIs; r->path has lost a trailing slash) */
	const char *doc = cm_req_header(r, "DOCUMENT_URI");
	bool gate = doc && !strcmp(doc, "/_appauth");
	if (doc && !strcmp(doc, "/_auth"))
		return 0;
	const char *upgrade = cm_req_header(r, "HTTP_UPGRADE");
	const char *https = cm_req_header(r, "HTTPS");
	struct cm_site_req q = {
		.method = r->method,
		.path = r->path,
		.host = cm_req_header(r, "HTTP_HOST"),
		.scheme = https && *https ? "https" : "http",
		.server_name = cm_req_header(r, "SERVER_NAME"),
		.origin = cm_req_header(r, "HTTP_ORIGIN"),
		.fetch_site = cm_req_header(r, "HTTP_SEC_FETCH_SITE"),
		.upgrade = upgrade && !strcasecmp(upgrade, "websocket"),
	};
	struct cm_error err = {0};
	if (cm_site_check(&r->app->cfg, &q, gate ? CM_CHECK_HOST : CM_CHECK_HOST | CM_CHECK_ORIGIN, &err) == 0)
		return 0;
	snprintf(r->action, sizeof r->action, "%s", "site.refused");
	if (gate) {
		err.status = 403;
		cm_respond_error(r, &err, "X-CM-App-State: misdirected\r\n");
	} else {
		cm_respond_error(r, &err, NULL);
	}
	return -1;
}

/* /_auth and /_appauth answer nginx's auth_request sub-requests only: their internal locations
 * add CM_AUTH_SUBREQUEST (a FastCGI parameter no client header can make: those come as HTTP_*).
 * A variant nginx does not match to them (/_auth/, /_auth/., /_appauth/) reaches location /,
 * whose path the app sees without its trailing slash: without the mark it is an unknown path. */
static bool outside_auth_call(struct cm_req *r)
{
	if (strcmp(r->path, "/_auth") != 0 && strcmp(r->path, "/_appauth") != 0)
		return false;
	const char *mark = cm_req_header(r, "CM_AUTH_SUBREQUEST");
	return !mark || strcmp(mark, "1") != 0;
}

/* Whether the request came through this stack's nginx: the per-start secret as the FastCGI
 * parameter CM_PROXY_SECRET (see trust.h). Read at the first request, and once more when a
 * request does not match (a `prepare` of the packaged units writes a new one). */
static bool proxy_trusted(struct cm_req *r)
{
	static char secret[CM_PROXY_SECRET_HEX + 1];
	const char *got = cm_req_header(r, CM_PROXY_SECRET_PARAM);
	if (secret[0] && cm_proxy_secret_ok(secret, got))
		return true;
	struct cm_error err = {0};
	if (cm_proxy_secret_load(r->app->cfg.run_dir, secret, &err) < 0) {
		cm_warn("%s", err.message);
		return false;
	}
	return cm_proxy_secret_ok(secret, got);
}

static void handle(struct cm_app *app, FCGX_Request *fr)
{
	struct cm_req r = {0};
	r.fr = fr;
	r.app = app;
	r.start_us = cm_monotonic_us();
	if (req_init(&r) == 0) {
		if (!proxy_trusted(&r)) {
			/* another www-data process on the socket: nothing it says (REMOTE_ADDR, the
			 * sub-request marks, a user) is believed */
			snprintf(r.action, sizeof r.action, "%s", "auth.failed");
			r.user[0] = '\0';
			snprintf(r.remote_addr, sizeof r.remote_addr, "%s", "untrusted"); /* (the one it claims is not believed) */
			cm_respond_errorf(&r, 401, "auth_error", "UNTRUSTED_PROXY", NULL,
					  "this request did not come through this stack's nginx");
		} else if (site_check(&r) == 0) {
			struct cm_error err = {0};
			if (outside_auth_call(&r)) {
				char esc[128];
				cm_log_escape(esc, sizeof esc, r.path);
				cm_respond_errorf(&r, 404, "not_found", "ROUTE_NOT_FOUND", NULL, "no such endpoint: %s", esc);
			} else if (cm_auth_check(&r, &err) < 0) {
				snprintf(r.action, sizeof r.action, "%s", "auth.failed");
				/* nginx's auth_request knows only 2xx, 401 and 403: throttled becomes 403 there */
				if (err.status == 429 && (!strcmp(r.path, "/_auth") || !strcmp(r.path, "/_appauth")))
					err.status = 403;
				cm_respond_error(&r, &err,
						 err.status == 401 ? "WWW-Authenticate: Basic realm=\"container-manager\", charset=\"UTF-8\"\r\n"
						 : err.status == 429 ? "Retry-After: 10\r\n" : NULL);
			} else {
				cm_route(&r);
			}
		}
	}
	if (!r.responded)
		cm_respond_errorf(&r, 500, "internal_error", "INTERNAL", NULL, "no response was produced");
	/* Every byte of input read means close() cannot reset the connection, so skip
	 * libfcgi's lingering close (a wait for nginx to hang up after every request). */
	char sink[4096];
	int left = 64, n;
	while (left-- > 0 && (n = FCGX_GetStr(sink, sizeof sink, fr->in)) > 0)
		;
	if (FCGX_HasSeenEOF(fr->in) == EOF)
		FCGX_Detach(fr);
	FCGX_Finish_r(fr);
	/* a passed auth_request check is not a request of its own: the helper audits the session */
	if (strcmp(r.action, "auth") != 0 || r.status != 204)
		cm_audit_write(&r);
	cm_buf_free(&r.body);
}

static int worker_main(int listen_fd, int slot)
{
	install(SIGTERM, on_worker_term);
	install(SIGINT, SIG_IGN);
	install(SIGHUP, SIG_IGN);
	signal(SIGCHLD, SIG_DFL);
	signal(SIGPIPE, SIG_IGN);
	close(self_pipe[0]);
	close(self_pipe[1]);
	self_pipe[0] = self_pipe[1] = -1;

	static struct cm_app app;
	struct cm_error err = {0};
	if (cm_config_load(&app.cfg, env_file, &err) < 0) {
		cm_error("config: %s", err.message);
		return 1;
	}
	char dbpath[PATH_MAX];
	if (cm_config_path(&app.cfg, dbpath, sizeof dbpath, "db/cm.sqlite") < 0 ||
	    snprintf(app.runner_sock, sizeof app.runner_sock, "%s/runner.sock", app.cfg.run_dir) >= (int)sizeof app.runner_sock ||
	    cm_config_path(&app.cfg, app.htpasswd, sizeof app.htpasswd, "nginx/htpasswd") < 0) {
		cm_error("data directory path too long");
		return 1;
	}
	if (cm_db_open(&app.db, dbpath, &err) < 0 || cm_db_secret(&app.db, "cursor_key", app.cursor_key, &err) < 0 ||
	    cm_db_instance(&app.db, app.instance, &err) < 0) {
		cm_error("database: %s", err.message);
		return 1;
	}
	FCGX_Request fr;
	if (FCGX_InitRequest(&fr, listen_fd, FCGI_FAIL_ACCEPT_ON_INTR) != 0) {
		cm_error("FCGX_InitRequest failed");
		return 1;
	}
	while (!got_term) {
		board[slot].busy = 0;
		int rc = FCGX_Accept_r(&fr);
		if (rc < 0) {
			if (got_term)
				break;
			if (errno == EINTR)
				continue;
			cm_warn("accept failed: %s", strerror(errno));
			usleep(10000);
			continue;
		}
		board[slot].busy = 1;
		handle(&app, &fr);
	}
	FCGX_Free(&fr, 1);
	cm_db_close(&app.db);
	return 0;
}

static int open_socket(const char *path, const char *group)
{
	/* not close-on-exec: nothing execs, and the workers inherit it */
	int fd = cm_unix_bind(path, SOCK_STREAM, 1024);
	if (fd < 0) {
		cm_error("cannot listen on %s: %s", path, strerror(errno));
		return -1;
	}
	/* only the web server's group may connect */
	if (group && *group) {
		struct group *gr = getgrnam(group);
		if (!gr || chown(path, getuid(), gr->gr_gid) < 0 || chmod(path, 0660) < 0) {
			cm_error("cannot give %s to group %s", path, group);
			close(fd);
			return -1;
		}
	}
	return fd;
}

static int spawn(int listen_fd, int generation)
{
	for (int i = 0; i < MAX_SLOTS; i++) {
		if (board[i].pid)
			continue;
		board[i].busy = 0;
		board[i].generation = generation;
		board[i].idle_since = cm_monotonic_ms();
		pid_t pid = fork();
		if (pid < 0) {
			cm_error("fork: %s", strerror(errno));
			return -1;
		}
		if (pid == 0)
			_exit(worker_main(listen_fd, i));
		board[i].pid = pid;
		return 0;
	}
	return -1;
}

static void usage(void)
{
	fprintf(stderr, "usage: cm-fcgi --socket PATH [--env-file FILE] [--group GROUP]\n");
}

int main(int argc, char **argv)
{
	const char *sock = NULL, *group = NULL;
	static const struct option opts[] = {
		{"socket", required_argument, NULL, 's'},
		{"env-file", required_argument, NULL, 'e'},
		{"group", required_argument, NULL, 'g'},
		{NULL, 0, NULL, 0},
	};
	int c;
	while ((c = getopt_long(argc, argv, "s:e:g:", opts, NULL)) != -1) {
		switch (c) {
		case 's': sock = optarg; break;
		case 'e': env_file = optarg; break;
		case 'g': group = optarg; break;
		default: usage(); return 2;
		}
	}
	if (!sock) {
		usage();
		return 2;
	}
	cm_log_init("cm-fcgi");
	/* file names are UTF-8 (libarchive converts names through the locale) */
	if (!setlocale(LC_CTYPE, "C.UTF-8"))
		cm_warn("the C.UTF-8 locale is missing; non-ASCII file names in archives will be refused");
	struct cm_config cfg;
	struct cm_error err = {0};
	if (cm_config_load(&cfg, env_file, &err) < 0) {
		cm_error("config: %s", err.message);
		return 1;
	}
	if (cm_metrics_attach(cfg.run_dir) < 0) /* before forking: the workers share the mapping */
		cm_warn("metrics: cannot map %s/metrics.shm: %s", cfg.run_dir, strerror(errno));
	/* migrate once before forking so workers do not race on a fresh database */
	char dbpath[PATH_MAX];
	struct cm_db db;
	if (cm_config_path(&cfg, dbpath, sizeof dbpath, "db/cm.sqlite") < 0 || cm_db_open(&db, dbpath, &err) < 0) {
		cm_error("database: %s", err.message);
		return 1;
	}
	cm_db_close(&db);
	if (FCGX_Init() != 0) {
		cm_error("FCGX_Init failed");
		return 1;
	}
	if (cm_auth_shared_init() < 0) {
		cm_error("mmap: %s", strerror(errno));
		return 1;
	}
	board = mmap(NULL, sizeof(struct slot) * MAX_SLOTS, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (board == MAP_FAILED) {
		cm_error("mmap: %s", strerror(errno));
		return 1;
	}
	if (pipe2(self_pipe, O_CLOEXEC | O_NONBLOCK) < 0)
		return 1;
	int listen_fd = open_socket(sock, group);
	if (listen_fd < 0)
		return 1;
	install(SIGTERM, on_signal);
	install(SIGINT, on_signal);
	install(SIGHUP, on_signal);
	install(SIGCHLD, on_signal);
	signal(SIGPIPE, SIG_IGN);

	int generation = 1;
	int wmin = cfg.workers_min, wmax = cfg.workers_max;
	for (int i = 0; i < wmin; i++)
		spawn(listen_fd, generation);
	cm_info("listening on %s with %d-%d workers", sock, wmin, wmax);
	int64_t all_busy_since = -1;
	while (!got_term) {
		struct pollfd p = {.fd = self_pipe[0], .events = POLLIN};
		poll(&p, 1, 50);
		char drain[64];
		while (read(self_pipe[0], drain, sizeof drain) > 0)
			;
		/* reap */
		pid_t pid;
		int status;
		while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
			for (int i = 0; i < MAX_SLOTS; i++) {
				if (board[i].pid == pid) {
					board[i].pid = 0;
					if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
						cm_warn("worker %ld ended (%s %d); replacing it", (long)pid,
							WIFSIGNALED(status) ? "signal" : "status",
							WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
				}
			}
		}
		got_chld = 0;
		if (got_hup) {
			got_hup = 0;
			struct cm_config ncfg;
			if (cm_config_load(&ncfg, env_file, &err) == 0) {
				wmin = ncfg.workers_min;
				wmax = ncfg.workers_max;
			} else {
				cm_warn("reload: %s (keeping the old settings)", err.message);
			}
			generation++;
			cm_info("reloading: replacing workers (generation %d)", generation);
			for (int i = 0; i < MAX_SLOTS; i++)
				if (board[i].pid && board[i].generation != generation)
					kill(board[i].pid, SIGTERM);
		}
		int live = 0, busy = 0, idle_extra = -1;
		for (int i = 0; i < MAX_SLOTS; i++) {
			if (!board[i].pid || board[i].generation != generation)
				continue;
			live++;
			if (board[i].busy)
				busy++;
			else if (idle_extra < 0)
				idle_extra = i;
		}
		while (live < wmin && spawn(listen_fd, generation) == 0)
			live++;
		int64_t now = cm_monotonic_ms();
		if (live > 0 && busy == live) {
			if (all_busy_since < 0)
				all_busy_since = now;
			if (now - all_busy_since >= 20 && live < wmax) {
				spawn(listen_fd, generation);
				all_busy_since = -1;
			}
		} else {
			all_busy_since = -1;
			/* shrink back towards the minimum after a quiet period */
			static int64_t quiet_since = -1;
			if (live > wmin && busy < live - 1) {
				if (quiet_since < 0)
					quiet_since = now;
				if (now - quiet_since > IDLE_REAP_MS && idle_extra >= 0) {
					kill(board[idle_extra].pid, SIGTERM);
					board[idle_extra].generation = -1;
					quiet_since = -1;
				}
			} else {
				quiet_since = -1;
			}
		}
	}
	cm_info("stopping: draining workers");
	close(listen_fd);
	unlink(sock);
	for (int i = 0; i < MAX_SLOTS; i++)
		if (board[i].pid)
			kill(board[i].pid, SIGTERM);
	int64_t deadline = cm_monotonic_ms() + 30000;
	for (;;) {
		int left = 0;
		for (int i = 0; i < MAX_SLOTS; i++)
			if (board[i].pid)
				left++;
		if (!left)
			break;
		if (cm_monotonic_ms() > deadline) {
			for (int i = 0; i < MAX_SLOTS; i++)
				if (board[i].pid)
					kill(board[i].pid, SIGKILL);
		}
		pid_t pid = waitpid(-1, NULL, WNOHANG);
		if (pid < 0 && errno == ECHILD)
			break;
		if (pid <= 0) {
			usleep(20000);
			continue;
		}
		for (int i = 0; i < MAX_SLOTS; i++)
			if (board[i].pid == pid)
				board[i].pid = 0;
	}
	return 0;
}
