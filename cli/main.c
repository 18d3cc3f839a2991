/* main.c: container-manager, the launcher. `serve [FILE][:PORT]` prepares the data directory
 * (database, image definitions, credentials, TLS certificate, nginx config), binds the HTTP
 * port, then starts and supervises the job runner, the FastCGI pool, the WebSocket/harpoon
 * helper and nginx until SIGINT/SIGTERM (or GET /shutdown). With FILE it forks into the
 * background once the stack answers and writes "PORT\nPID\n" to FILE. On stop, the
 * containers start_container handed out are removed; REST API containers keep running. */
#include "config.h"
#include "cli.h"
#include "cm.h"
#include "cm_config.h"
#include "db.h"
#include "imagedef.h"
#include "origin.h"
#include "store.h"
#include "trust.h"

#include <crypt.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static volatile sig_atomic_t got_stop;

static void on_stop(int sig)
{
	(void)sig;
	got_stop = 1;
}

static int spawn_argv(pid_t *pid, char *const argv[])
{
	int rc = posix_spawn(pid, argv[0], NULL, NULL, argv, environ);
	if (rc) {
		fprintf(stderr, "container-manager: cannot start %s: %s\n", argv[0], strerror(rc));
		return -1;
	}
	return 0;
}

/* Runs argv to completion; returns its exit status or -1. */
static int run_argv(char *const argv[])
{
	pid_t pid;
	int rc = posix_spawnp(&pid, argv[0], NULL, NULL, argv, environ);
	if (rc) {
		fprintf(stderr, "container-manager: cannot run %s: %s\n", argv[0], strerror(rc));
		return -1;
	}
	int st;
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return -1;
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Runs argv to completion with its stderr captured into errout (at most 64 KiB kept);
 * returns its exit status or -1. */
static int run_argv_capture(char *const argv[], struct cm_buf *errout)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		return -1;
	posix_spawn_file_actions_t fa;
	if (posix_spawn_file_actions_init(&fa) != 0) {
		close(p[0]);
		close(p[1]);
		return -1;
	}
	posix_spawn_file_actions_adddup2(&fa, p[1], STDERR_FILENO);
	pid_t pid;
	int rc = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	close(p[1]);
	if (rc) {
		close(p[0]);
		fprintf(stderr, "container-manager: cannot run %s: %s\n", argv[0], strerror(rc));
		return -1;
	}
	char buf[4096];
	ssize_t n;
	while ((n = read(p[0], buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR))
		if (n > 0 && errout->len < 65536)
			cm_buf_append(errout, buf, (size_t)n);
	close(p[0]);
	int st;
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return -1;
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Replaces every @KEY@ of vars in tpl. Returns a new string. */
static char *render(const char *tpl, const char *const vars[][2], size_t nvars)
{
	struct cm_buf out = {0};
	const char *p = tpl;
	while (*p) {
		const char *at = strchr(p, '@');
		if (!at) {
			cm_buf_puts(&out, p);
			break;
		}
		cm_buf_append(&out, p, (size_t)(at - p));
		bool done = false;
		for (size_t i = 0; i < nvars && !done; i++) {
			size_t kl = strlen(vars[i][0]);
			if (!strncmp(at + 1, vars[i][0], kl) && at[1 + kl] == '@') {
				cm_buf_puts(&out, vars[i][1]);
				p = at + kl + 2;
				done = true;
			}
		}
		if (!done) {
			cm_buf_append(&out, "@", 1);
			p = at + 1;
		}
	}
	if (!out.data)
		cm_buf_puts(&out, "");
	return out.data;
}

static int render_file(const char *tpl_path, const char *out_path, const char *const vars[][2], size_t n)
{
	char *tpl = cm_read_file(tpl_path, 1 << 20, NULL);
	if (!tpl) {
		fprintf(stderr, "container-manager: cannot read %s: %s\n", tpl_path, strerror(errno));
		return -1;
	}
	char *out = render(tpl, vars, n);
	free(tpl);
	int rc = out ? cm_write_file_atomic(out_path, out, strlen(out), 0644) : -1;
	if (rc < 0)
		fprintf(stderr, "container-manager: cannot write %s: %s\n", out_path, strerror(errno));
	free(out);
	return rc;
}

/* The server blocks of the apps' own listeners (APPS_LISTEN) for nginx.conf: plain HTTP ones,
 * and TLS ones (https.conf.in with the API's certificate, which tls says exists). Returns a new
 * string ("" for none), or NULL after saying why. */
static char *render_apps_servers(const struct cm_config *cfg, const char *tpl_https, bool tls, const char *cert,
				 const char *key)
{
	struct cm_origin apps[CM_APPS_LISTENERS];
	char why[160];
	int n = cm_apps_listen_parse(cfg->apps_listen, apps, why, sizeof why);
	struct cm_buf out = {0};
	if (cm_buf_puts(&out, "") < 0)
		return NULL;
	for (int i = 0; i < n; i++) {
		char lst[300];
		bool v6 = strchr(apps[i].host, ':') != NULL;
		snprintf(lst, sizeof lst, "%s%s%s:%d", v6 ? "[" : "", apps[i].host, v6 ? "]" : "", apps[i].port);
		if (strcmp(apps[i].scheme, "https")) {
			if (cm_buf_printf(&out, "\tserver {\n\t\tlisten %s;\n\t\tinclude %s/apps.conf;\n\t}\n", lst,
					  cfg->run_dir) < 0) {
				cm_buf_free(&out);
				return NULL;
			}
			continue;
		}
		if (!tls) {
			fprintf(stderr, "container-manager: APPS_LISTEN https://%s needs the TLS listener's certificate "
				"(CM_HTTPS_LISTEN is off)\n", lst);
			cm_buf_free(&out);
			return NULL;
		}
		char *t = cm_read_file(tpl_https, 1 << 16, NULL);
		const char *hv[][2] = {{"HTTPS_LISTEN", lst}, {"TLS_CERT", cert}, {"TLS_KEY", key},
				       {"RUN_DIR", cfg->run_dir}, {"SITE_CONF", "apps.conf"}};
		char *b = t ? render(t, hv, CM_ARRAY_LEN(hv)) : NULL;
		free(t);
		if (!b) {
			cm_buf_free(&out);
			return NULL;
		}
		int rc = cm_buf_puts(&out, b);
		free(b);
		if (rc < 0) {
			cm_buf_free(&out);
			return NULL;
		}
	}
	return out.data;
}

/* Generates a password, saves it into the env file (0600) and prints it once. */
static int ensure_password(struct cm_config *cfg, const char *env_file)
{
	if (cfg->app_pass[0])
		return 0;
	unsigned char raw[18];
	char pass[32];
	if (cm_random_bytes(raw, sizeof raw) < 0)
		return -1;
	cm_b64url_encode(pass, raw, sizeof raw);
	int fd = open(env_file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (fd < 0) {
		fprintf(stderr, "container-manager: cannot write %s: %s\n", env_file, strerror(errno));
		return -1;
	}
	char line[160];
	int n = snprintf(line, sizeof line, "\n# generated by container-manager serve\nAPP_USER=%s\nAPP_PASS=%s\n",
			 cfg->app_user, pass);
	if (write(fd, line, (size_t)n) != n || fchmod(fd, 0600) < 0) {
		close(fd);
		return -1;
	}
	close(fd);
	snprintf(cfg->app_pass, sizeof cfg->app_pass, "%s", pass);
	printf("Generated credentials (saved in %s): user %s password %s\n", env_file, cfg->app_user, pass);
	return 0;
}

/* Writes the htpasswd file (sha512-crypt) unless it already holds this password. */
static int ensure_htpasswd(const struct cm_config *cfg, const char *path)
{
	struct crypt_data cd;
	memset(&cd, 0, sizeof cd);
	char *old = cm_read_file(path, 4096, NULL);
	if (old) {
		size_t ul = strlen(cfg->app_user);
		if (!strncmp(old, cfg->app_user, ul) && old[ul] == ':') {
			char hash[512];
			snprintf(hash, sizeof hash, "%s", old + ul + 1);
			hash[strcspn(hash, "\r\n")] = '\0';
			const char *h = crypt_r(cfg->app_pass, hash, &cd);
			if (h && !strcmp(h, hash)) {
				free(old);
				return 0;
			}
		}
		free(old);
	}
	char salt[CRYPT_GENSALT_OUTPUT_SIZE];
	if (!crypt_gensalt_rn("$6$", 0, NULL, 0, salt, sizeof salt))
		return -1;
	const char *h = crypt_r(cfg->app_pass, salt, &cd);
	if (!h || h[0] == '*')
		return -1;
	struct cm_buf b = {0};
	cm_buf_printf(&b, "%s:%s\n", cfg->app_user, h);
	int rc = cm_write_file_atomic(path, b.data, b.len, 0600);
	cm_buf_free(&b);
	explicit_bzero(&cd, sizeof cd);
	return rc;
}

static int ensure_cert(const char *cert, const char *key)
{
	if (access(cert, R_OK) == 0 && access(key, R_OK) == 0)
		return 0;
	char *const argv[] = {"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
			      "-nodes", "-days", "825", "-subj", "/CN=localhost", "-addext",
			      "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", (char *)key, "-out", (char *)cert,
			      NULL};
	int fd = open("/dev/null", O_WRONLY);
	int saved = dup(STDERR_FILENO);
	if (fd >= 0)
		dup2(fd, STDERR_FILENO);
	int rc = run_argv(argv);
	if (saved >= 0) {
		dup2(saved, STDERR_FILENO);
		close(saved);
	}
	if (fd >= 0)
		close(fd);
	if (rc != 0) {
		fprintf(stderr, "container-manager: openssl could not make a TLS certificate\n");
		return -1;
	}
	chmod(key, 0600);
	printf("Generated a self-signed TLS certificate: %s\n", cert);
	return 0;
}

/* mkdir -p path, then set owner group and mode on the last component. */
/* Warns when containers run as the uid of a host account with a login shell: whoever escapes a
 * container would then act as that person on the host (their files, their processes). */
static void warn_container_uid(const char *setting, const char *value)
{
	unsigned uid, gid;
	if (cm_parse_uid(value, &uid, &gid) < 0 || uid == 0)
		return;
	struct passwd *pw = getpwuid((uid_t)uid);
	if (!pw || !pw->pw_shell || !pw->pw_shell[0])
		return;
	bool login = false;
	setusershell();
	for (const char *sh; (sh = getusershell());)
		if (!strcmp(sh, pw->pw_shell))
			login = true;
	endusershell();
	if (login)
		fprintf(stderr,
			"container-manager: warning: %s=%s is the uid of the host account \"%s\" (login shell %s): "
			"a process that escapes a container would act as that user; pick a uid that no account "
			"has (see getent passwd UID)\n",
			setting, value, pw->pw_name, pw->pw_shell);
}

static int prepare_dir(const char *path, unsigned mode, gid_t gid)
{
	if (cm_mkdir_p(path, 0755) < 0) {
		fprintf(stderr, "container-manager: cannot create %s: %s\n", path, strerror(errno));
		return -1;
	}
	if ((gid != (gid_t)-1 && chown(path, (uid_t)-1, gid) < 0) || chmod(path, mode) < 0) {
		fprintf(stderr, "container-manager: cannot set up %s: %s\n", path, strerror(errno));
		return -1;
	}
	return 0;
}

/* The programs serve starts: beside it in the build tree (cli/../jobs/cm-runner), else in
 * PKGLIBEXECDIR where `make install` puts them. */
static int find_program(const char *self, const char *subdir, const char *name, char *out, size_t outsz)
{
	if (!cli_installed() && cm_pathf(out, outsz, "%s/../%s/%s", self, subdir, name) == 0 && access(out, X_OK) == 0)
		return 0;
	if (cm_pathf(out, outsz, "%s/%s", PKGLIBEXECDIR, name) == 0 && access(out, X_OK) == 0)
		return 0;
	fprintf(stderr, "container-manager: %s not found (in %s/../%s or %s)\n", name, self, subdir, PKGLIBEXECDIR);
	return -1;
}

struct child {
	const char *name;
	char *const *argv;
	pid_t pid;
	int64_t started;
	int restarts;
};

struct serve_opts {
	const char *env_file;
	const char *position; /* [FILE][:PORT], NULL when not given */
	const char *images;
	bool no_auth;
	bool only_migrate;
	bool only_prepare; /* the data and run directories and nginx's snippets, nothing started */
};

static void usage(void)
{
	fprintf(stderr, "usage: container-manager serve [FILE][:PORT] [--non-interactive] [--no-auth] [--images FILE]\n"
			"                               [--env-file FILE]\n"
			"       container-manager status [--json] [--env-file FILE]\n"
			"       container-manager migrate [--env-file FILE]\n"
			"       container-manager prepare [--env-file FILE]\n"
			"       container-manager audit list | QUERY [NAME=VALUE]... [--json] | export [--since T] [--until T]\n"
			"       container-manager backup DEST [--force] [--env-file FILE]\n"
			"       container-manager version\n"
			"\n"
			"serve           foreground, HTTP on CM_HTTP_LISTEN (default 127.0.0.1:4545)\n"
			"serve :PORT     foreground on 127.0.0.1:PORT\n"
			"serve FILE:PORT background once the stack answers; FILE gets \"PORT\\nPID\\n\"\n"
			"serve FILE      the same on a free port\n"
			"\n"
			"Settings come from --env-file FILE, by default %s.\n",
		cli_default_env_file());
}

/* "[FILE][:PORT]" into file ("" = none) and port (-1 = none given). */
static int parse_position(const char *pos, char *file, size_t fsz, int *port)
{
	*port = -1;
	const char *colon = strrchr(pos, ':');
	size_t flen = strlen(pos);
	if (colon && colon[1] && strspn(colon + 1, "0123456789") == strlen(colon + 1)) {
		if (strlen(colon + 1) > 5 || atol(colon + 1) > 65535) {
			fprintf(stderr, "container-manager: %s: the port must be 0..65535\n", pos);
			return -1;
		}
		*port = atoi(colon + 1);
		flen = (size_t)(colon - pos);
	} else if (colon && !colon[1]) {
		fprintf(stderr, "container-manager: %s: a port must follow the ':'\n", pos);
		return -1;
	}
	if (flen >= fsz) {
		fprintf(stderr, "container-manager: %s: path too long\n", pos);
		return -1;
	}
	memcpy(file, pos, flen);
	file[flen] = '\0';
	return 0;
}

/* Binds the plain HTTP listener before anything starts: `serve FILE` learns its free port with
 * no window for another process to take it, and a busy port is a clear error here. nginx
 * inherits the socket (NGINX="fd;"). Returns the fd (close-on-exec) or -1. */
static int bind_listener(const char *host, int *port)
{
	char ps[16];
	snprintf(ps, sizeof ps, "%d", *port);
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
				 .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
	struct addrinfo *ai = NULL;
	int gr = getaddrinfo(host, ps, &hints, &ai);
	if (gr != 0 || !ai) {
		fprintf(stderr, "container-manager: cannot resolve %s: %s\n", host, gai_strerror(gr));
		return -1;
	}
	int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0); /* nginx keeps it as is */
	int one = 1;
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
	    bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 511) < 0) {
		fprintf(stderr, "container-manager: cannot listen on %s port %d: %s\n", host, *port, strerror(errno));
		if (fd >= 0)
			close(fd);
		freeaddrinfo(ai);
		return -1;
	}
	freeaddrinfo(ai);
	struct sockaddr_storage ss;
	socklen_t sl = sizeof ss;
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0) {
		close(fd);
		return -1;
	}
	*port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
					       : ((struct sockaddr_in *)&ss)->sin_port);
	return fd;
}

/* One GET /version through nginx; returns the HTTP status or -1. */
static int http_probe(const char *listen_spec)
{
	char host[128], ps[16];
	int port;
	if (cm_parse_listen(listen_spec, host, sizeof host, &port) < 0)
		return -1;
	snprintf(ps, sizeof ps, "%d", port);
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
	struct addrinfo *ai = NULL;
	if (getaddrinfo(host, ps, &hints, &ai) != 0 || !ai)
		return -1;
	int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int status = -1;
	if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
		static const char req[] = "GET /version HTTP/1.0\r\nHost: localhost\r\nUser-Agent: container-manager-readiness\r\n\r\n";
		char buf[64] = "";
		size_t got = 0;
		if (send(fd, req, sizeof req - 1, MSG_NOSIGNAL) == (ssize_t)(sizeof req - 1)) {
			struct pollfd pfd = {.fd = fd, .events = POLLIN};
			while (got < sizeof buf - 1 && poll(&pfd, 1, 2000) > 0) {
				ssize_t n = recv(fd, buf + got, sizeof buf - 1 - got, 0);
				if (n <= 0)
					break;
				got += (size_t)n;
			}
		}
		buf[got] = '\0';
		if (!strncmp(buf, "HTTP/1.", 7) && got >= 12)
			status = atoi(buf + 9);
	}
	if (fd >= 0)
		close(fd);
	freeaddrinfo(ai);
	return status;
}

/* Records the definitions and resets what start_container handed out: a new stack hands out
 * nothing yet (the runner removes a crashed stack's leftovers, which no row vouches for). */
static int load_definitions(struct cm_db *db, const struct cm_config *cfg)
{
	struct cm_imagedef *defs = NULL;
	size_t n = 0;
	struct cm_error err = {0};
	if (cfg->images_file[0] && cm_imagedefs_load(cfg->images_file, &defs, &n, &err) < 0) {
		fprintf(stderr, "container-manager: image definitions %s\n", err.message); /* it starts with the path */
		return -1;
	}
	int rc = cm_db_begin(db, &err);
	if (rc == 0)
		rc = cm_db_exec(db,
				"DELETE FROM image_defs; DELETE FROM harpoon; DELETE FROM harpoon_locks; "
				"DELETE FROM settings WHERE key = 'shutting_down'; "
				"UPDATE jobs SET status = 'cancelled', finished_at = CAST(strftime('%s','now') AS INTEGER) * 1000 "
				"WHERE kind LIKE 'h.%' AND status IN ('queued', 'running')",
				&err);
	for (size_t i = 0; rc == 0 && i < n; i++) {
		sqlite3_stmt *st = cm_db_stmt(db, "INSERT INTO image_defs(name, def, loaded_at) VALUES (?, ?, ?)", &err);
		if (!st) {
			rc = -1;
			break;
		}
		sqlite3_bind_text(st, 1, defs[i].name, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, defs[i].json, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 3, cm_now_ms());
		if (sqlite3_step(st) != SQLITE_DONE)
			rc = cm_db_fail(db, &err, "record a definition");
		sqlite3_reset(st);
	}
	if (rc == 0)
		rc = cm_db_commit(db, &err);
	if (rc < 0) {
		cm_db_rollback(db);
		fprintf(stderr, "container-manager: cannot record the image definitions: %s\n", err.message);
	} else if (cfg->images_file[0]) {
		printf("%zu image definition%s from %s\n", n, n == 1 ? "" : "s", cfg->images_file);
	}
	cm_imagedefs_free(defs, n);
	return rc;
}

/* Shutdown of start_container's world: new starts are refused (settings.shutting_down, and
 * SIGUSR1 makes cm-ws answer its waiters 503), then the runner removes every container
 * start_container made. Containers of the REST API are not touched. */
static void stop_harpoon(const struct cm_config *cfg, pid_t ws_pid, bool runner_alive)
{
	char path[PATH_MAX], sock[PATH_MAX];
	struct cm_db db;
	struct cm_error err = {0};
	if (ws_pid > 0)
		kill(ws_pid, SIGUSR1);
	if (cm_config_path(cfg, path, sizeof path, "db/cm.sqlite") < 0 || cm_db_open(&db, path, &err) < 0) {
		fprintf(stderr, "container-manager: start_container containers not removed: %s\n", err.message);
		return;
	}
	int64_t job = -1;
	if (cm_db_begin(&db, &err) == 0) {
		if (cm_db_exec(&db, "INSERT OR REPLACE INTO settings(key, value) VALUES ('shutting_down', 1)", &err) == 0) {
			sqlite3_stmt *st = cm_db_stmt(&db, "SELECT count(*) FROM harpoon", &err);
			bool any = st && sqlite3_step(st) == SQLITE_ROW && sqlite3_column_int64(st, 0) > 0;
			if (st)
				sqlite3_reset(st);
			/* nothing handed out and no definitions: nothing to remove */
			job = any || cfg->images_file[0] ? cm_job_insert(&db, "h.teardown", "h:*", "{}", NULL, "container-manager", &err)
							 : 0;
		}
		if (job < 0 || cm_db_commit(&db, &err) < 0) {
			cm_db_rollback(&db);
			job = -1;
		}
	}
	if (job > 0 && runner_alive && cm_pathf(sock, sizeof sock, "%s/runner.sock", cfg->run_dir) == 0 &&
	    cm_job_wait(&db, sock, job, 30, &err) == 0) {
		char *result = NULL;
		struct cm_error jerr = {0};
		int ok = cm_job_outcome(&db, job, &result, &jerr, &err);
		if (ok == 0)
			fprintf(stderr, "container-manager: removing start_container containers: %s\n", jerr.message);
		free(result);
	} else if (job != 0) {
		fprintf(stderr, "container-manager: start_container containers not removed: %s\n",
			err.message[0] ? err.message : "the runner is not running");
	}
	cm_db_close(&db);
}

/* Spawns nginx with the pre-bound listener (the only time it is inheritable). */
static int spawn_nginx(pid_t *pid, char *const argv[], int lfd, bool wait_exit)
{
	char env[32];
	snprintf(env, sizeof env, "%d;", lfd);
	if (fcntl(lfd, F_SETFD, 0) < 0 || setenv("NGINX", env, 1) < 0)
		return -1;
	int rc;
	if (wait_exit) {
		/* nginx -t: its notice about the inherited socket is noise; errors are shown */
		struct cm_buf out = {0};
		rc = run_argv_capture(argv, &out);
		if (rc != 0 && out.len)
			fprintf(stderr, "%s", cm_buf_str(&out));
		cm_buf_free(&out);
	} else {
		rc = spawn_argv(pid, argv);
	}
	unsetenv("NGINX");
	if (fcntl(lfd, F_SETFD, FD_CLOEXEC) < 0)
		return -1;
	return rc;
}

static int spawn_kid(struct child *k, int lfd)
{
	int rc = !strcmp(k->name, "nginx") ? spawn_nginx(&k->pid, k->argv, lfd, false) : spawn_argv(&k->pid, k->argv);
	k->started = cm_monotonic_ms();
	return rc;
}

/* Waits until nginx answers GET /version and every helper's socket accepts. Returns 0, or -1
 * with the reason in why. */
static int wait_ready(const struct cm_config *cfg, struct child *kids, size_t nkids, char *why, size_t whysz)
{
	int64_t deadline = cm_monotonic_ms() + 60000;
	int last = -1;
	while (!got_stop) {
		for (size_t i = 0; i < nkids; i++) {
			int st;
			if (kids[i].pid > 0 && waitpid(kids[i].pid, &st, WNOHANG) == kids[i].pid) {
				kids[i].pid = 0;
				snprintf(why, whysz, "%s exited (%s %d) before the stack answered", kids[i].name,
					 WIFSIGNALED(st) ? "signal" : "status", WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
				return -1;
			}
			if (kids[i].pid <= 0) {
				snprintf(why, whysz, "%s could not be started", kids[i].name);
				return -1;
			}
		}
		if (cli_unix_probe(cfg->run_dir, "runner.sock") && cli_unix_probe(cfg->run_dir, "ws.sock") &&
		    cli_unix_probe(cfg->run_dir, "harpoon.sock")) {
			last = http_probe(cfg->http_listen);
			if (last == 200 || last == 401)
				return 0;
		}
		if (cm_monotonic_ms() > deadline) {
			snprintf(why, whysz, "the stack did not answer on %s within 60 s (last status %d)", cfg->http_listen, last);
			return -1;
		}
		usleep(50000);
	}
	snprintf(why, whysz, "stopped by a signal while starting");
	return -1;
}

/* Background mode: returns in the child (the supervisor) with *report the pipe to tell the
 * parent; the parent waits for the verdict, writes FILE and exits. */
static int daemonize(const char *file, const char *log_path, int *report)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0) {
		fprintf(stderr, "container-manager: pipe: %s\n", strerror(errno));
		return -1;
	}
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	if (pid < 0) {
		fprintf(stderr, "container-manager: fork: %s\n", strerror(errno));
		return -1;
	}
	if (pid == 0) {
		close(p[0]);
		*report = p[1];
		if (setsid() < 0)
			_exit(1);
		int nul = open("/dev/null", O_RDONLY | O_CLOEXEC);
		int log = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
		if (nul < 0 || log < 0 || dup2(nul, STDIN_FILENO) < 0 || dup2(log, STDOUT_FILENO) < 0 ||
		    dup2(log, STDERR_FILENO) < 0) {
			const char msg[] = "cannot open the log file";
			ssize_t w = write(p[1], msg, sizeof msg - 1);
			(void)w;
			_exit(1);
		}
		close(nul);
		close(log);
		return 0;
	}
	close(p[1]);
	char buf[600];
	size_t got = 0;
	for (;;) {
		ssize_t n = read(p[0], buf + got, sizeof buf - 1 - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
		if (got == sizeof buf - 1)
			break;
	}
	buf[got] = '\0';
	close(p[0]);
	if (strncmp(buf, "OK ", 3)) {
		fprintf(stderr, "container-manager: the stack could not start: %s (log: %s)\n",
			got ? buf : "it exited before it answered", log_path);
		exit(1);
	}
	/* "OK PORT": the file says where it listens and whom to signal */
	struct cm_buf b = {0};
	cm_buf_printf(&b, "%d\n%d\n", atoi(buf + 3), (int)pid);
	if (cm_write_file_atomic(file, b.data, b.len, 0644) < 0) {
		fprintf(stderr, "container-manager: cannot write %s: %s; stopping the stack\n", file, strerror(errno));
		kill(pid, SIGTERM);
		cm_buf_free(&b);
		exit(1);
	}
	cm_buf_free(&b);
	exit(0);
}

static int cmd_serve(const struct serve_opts *o)
{
	char file[PATH_MAX] = "";
	int port = -1;
	if (o->position && parse_position(o->position, file, sizeof file, &port) < 0)
		return 2;
	bool background = file[0] != '\0';
	if (background && port < 0)
		port = 0;
	char buf[PATH_MAX + 32];
	int lfd = -1;
	if (port == 0 && !o->only_migrate && !o->only_prepare) {
		/* a free port, held from now on */
		if ((lfd = bind_listener("127.0.0.1", &port)) < 0)
			return 1;
	}
	if (port >= 0) {
		snprintf(buf, sizeof buf, "127.0.0.1:%d", port);
		setenv("CM_HTTP_LISTEN", buf, 1);
	}
	if (o->no_auth)
		setenv("CM_AUTH", "off", 1);
	if (o->images)
		setenv("CM_IMAGES", o->images, 1);
	/* serve [FILE][:PORT] is local tooling: one loopback port unless TLS is configured */
	if (o->position) {
		cm_config_https_default("off");
		cm_config_apps_default("off");
	}
	struct cm_config cfg;
	struct cm_error err = {0};
	if (cm_config_load(&cfg, o->env_file, &err) < 0) {
		fprintf(stderr, "container-manager: %s\n", err.message);
		return 1;
	}
	if (o->position && cfg.https_listen_default)
		setenv("CM_HTTPS_LISTEN", "off", 1); /* the same for the children */
	setenv("APPS_LISTEN", cfg.apps_listen, 1); /* (a default derived from the listeners above) */
	if (!o->only_migrate) {
		warn_container_uid("DEFAULT_USER_UID", cfg.default_uid);
		warn_container_uid("APP_USER_UID", cfg.app_uid);
	}
	if (cfg.images_file[0]) {
		char abs[PATH_MAX];
		if (!realpath(cfg.images_file, abs)) {
			fprintf(stderr, "container-manager: image definitions %s: %s\n", cfg.images_file, strerror(errno));
			return 1;
		}
		if (cm_pathf(cfg.images_file, sizeof cfg.images_file, "%s", abs) < 0) {
			fprintf(stderr, "container-manager: image definitions %s: path too long\n", abs);
			return 1;
		}
		setenv("CM_IMAGES", abs, 1);
	}
	/* one stack per data directory: a second one would share the database and the sockets
	 * (prepare too: it resets start_container's state); `serve FILE` moves aside instead */
	int data_lock = -1, run_lock = -1;
	if (!o->only_migrate && (data_lock = cli_instance_claim(&cfg, o->env_file, background && !o->only_prepare)) < 0)
		return 1;
	char path[PATH_MAX], p2[PATH_MAX];
	cm_config_path(&cfg, path, sizeof path, "db");
	if (prepare_dir(cfg.data_dir, 0711, (gid_t)-1) < 0 || prepare_dir(path, 0700, (gid_t)-1) < 0)
		return 1;
	cm_config_path(&cfg, path, sizeof path, "db/cm.sqlite");
	struct cm_db db;
	if (cm_db_open(&db, path, &err) < 0) {
		fprintf(stderr, "container-manager: database %s: %s\n", path, err.message);
		return 1;
	}
	if (o->only_migrate) {
		cm_db_close(&db);
		printf("database %s is up to date\n", path);
		return 0;
	}
	int lrc = load_definitions(&db, &cfg);
	cm_db_close(&db);
	if (lrc < 0)
		return 1;
	if (o->only_prepare && !cfg.auth_off && !cfg.app_pass[0]) {
		/* the units cannot write the settings file: the password is set at installation */
		fprintf(stderr, "container-manager: APP_PASS is empty in %s; set it there (or CM_AUTH=off on loopback)\n",
			o->env_file);
		return 1;
	}
	if (!cfg.auth_off && ensure_password(&cfg, o->env_file) < 0)
		return 1;
	if (lfd < 0 && !o->only_prepare) {
		char host[128];
		if (cm_parse_listen(cfg.http_listen, host, sizeof host, &port) < 0 || (lfd = bind_listener(host, &port)) < 0)
			return 1;
	}
	struct group *gr = getgrnam("www-data");
	struct passwd *pw = getpwnam("www-data");
	if (!gr || !pw) {
		fprintf(stderr, "container-manager: the www-data user and group are needed for nginx\n");
		return 1;
	}
	gid_t web_gid = gr->gr_gid;
	/* all 0700: no other host user may traverse into the containers' files (app/ belongs to
	 * DEFAULT_USER_UID, and Docker, as root, needs no search permission to bind it) */
	const char *subdirs[] = {"containers", "nginx", "log", "builds"};
	for (size_t i = 0; i < CM_ARRAY_LEN(subdirs); i++) {
		cm_config_path(&cfg, path, sizeof path, subdirs[i]);
		if (prepare_dir(path, 0700, (gid_t)-1) < 0)
			return 1;
	}
	if (prepare_dir(cfg.run_dir, 0750, web_gid) < 0 || (run_lock = cli_instance_claim_run_dir(&cfg)) < 0)
		return 1;
	if (cli_instance_note(data_lock, cfg.http_listen) < 0 || cli_instance_note(run_lock, cfg.http_listen) < 0)
		fprintf(stderr, "container-manager: cannot note this stack in its lock files: %s\n", strerror(errno));
	if (cm_pathf(path, sizeof path, "%s/conf.d", cfg.run_dir) < 0 || prepare_dir(path, 0755, (gid_t)-1) < 0)
		return 1;
	/* a new secret at each start: nginx proves itself to the WebSocket helper with it */
	if (cm_proxy_secret_make(cfg.run_dir, &err) < 0) {
		fprintf(stderr, "container-manager: %s\n", err.message);
		return 1;
	}
	if (cm_pathf(path, sizeof path, "%s/nginx-tmp", cfg.run_dir) < 0)
		return 1;
	/* (the system's nginx has its own temporary directories) */
	if (!o->only_prepare && (prepare_dir(path, 0700, (gid_t)-1) < 0 || chown(path, pw->pw_uid, web_gid) < 0))
		return 1;
	cm_config_path(&cfg, path, sizeof path, "nginx/htpasswd");
	if (!cfg.auth_off && ensure_htpasswd(&cfg, path) < 0) {
		fprintf(stderr, "container-manager: cannot write %s\n", path);
		return 1;
	}
	char cert[PATH_MAX], key[PATH_MAX];
	cm_config_path(&cfg, cert, sizeof cert, "nginx/tls.crt");
	cm_config_path(&cfg, key, sizeof key, "nginx/tls.key");
	/* prepare: the system's nginx terminates TLS with the site's certificate */
	bool https = strcmp(cfg.https_listen, "off") != 0 && !o->only_prepare;
	if (https && ensure_cert(cert, key) < 0)
		return 1;

	char *self = cm_self_dir();
	if (!self)
		return 1;
	static const char *const tpl_names[] = {"nginx.conf", "locations.conf", "fastcgi.conf", "wsproxy.conf",
						"harpoonproxy.conf", "appproxy.conf", "apps.conf", "errors.conf"};
	char tpl[CM_ARRAY_LEN(tpl_names)][PATH_MAX], tpl_https[PATH_MAX];
	for (size_t i = 0; i < CM_ARRAY_LEN(tpl_names); i++) {
		snprintf(buf, sizeof buf, "nginx/%s.in", tpl_names[i]);
		if (!cli_find_share(tpl[i], sizeof tpl[i], buf)) {
			fprintf(stderr, "container-manager: nginx template %s not found (set CM_SHARE_DIR)\n", buf);
			return 1;
		}
	}
	if (!cli_find_share(tpl_https, sizeof tpl_https, "nginx/https.conf.in")) {
		fprintf(stderr, "container-manager: nginx templates not found (set CM_SHARE_DIR)\n");
		return 1;
	}
	char max_body[32], upload_max[32];
	snprintf(max_body, sizeof max_body, "%ld", cfg.max_body);
	snprintf(upload_max, sizeof upload_max, "%lld", (long long)cfg.upload_max_bytes);
	char *https_block = NULL;
	if (https) {
		char *t = cm_read_file(tpl_https, 1 << 16, NULL);
		const char *hv[][2] = {{"HTTPS_LISTEN", cfg.https_listen}, {"TLS_CERT", cert}, {"TLS_KEY", key},
				       {"RUN_DIR", cfg.run_dir}, {"SITE_CONF", "locations.conf"}};
		https_block = t ? render(t, hv, CM_ARRAY_LEN(hv)) : NULL;
		free(t);
		if (!https_block)
			return 1;
	}
	/* (prepare: the system's nginx site has the apps' servers of its own) */
	char *apps_block = o->only_prepare ? strdup("") : render_apps_servers(&cfg, tpl_https, https, cert, key);
	if (!apps_block) {
		free(https_block);
		return 1;
	}
	const char *vars[][2] = {
		{"DATA_DIR", cfg.data_dir}, {"RUN_DIR", cfg.run_dir}, {"HTTP_LISTEN", cfg.http_listen},
		{"MAX_BODY", max_body}, {"UPLOAD_MAX_BODY", upload_max}, {"NGINX_USER", "www-data"}, {"NGINX_GROUP", "www-data"},
		{"HTTPS_SERVER", https_block ? https_block : ""}, {"APPS_SERVER", apps_block},
	};
	char conf[PATH_MAX];
	for (size_t i = 0; i < CM_ARRAY_LEN(tpl_names); i++) {
		if (cm_pathf(p2, sizeof p2, "%s/%s", cfg.run_dir, tpl_names[i]) < 0 ||
		    render_file(tpl[i], p2, vars, CM_ARRAY_LEN(vars)) < 0) {
			free(https_block);
			free(apps_block);
			return 1;
		}
		if (i == 0 && cm_pathf(conf, sizeof conf, "%s", p2) < 0) {
			free(https_block);
			fprintf(stderr, "container-manager: %s: path too long\n", p2);
			return 1;
		}
	}
	free(https_block);
	free(apps_block);
	if (o->only_prepare) {
		free(self);
		printf("prepared %s and %s (nginx snippets: %s/locations.conf)\n", cfg.data_dir, cfg.run_dir, cfg.run_dir);
		return 0;
	}
	char *const test_argv[] = {"nginx", "-t", "-q", "-c", conf, NULL};
	if (spawn_nginx(NULL, test_argv, lfd, true) != 0) {
		fprintf(stderr, "container-manager: nginx rejected the rendered configuration %s\n", conf);
		return 1;
	}

	char runner[PATH_MAX], fcgi[PATH_MAX], ws[PATH_MAX], sock[PATH_MAX], wssock[PATH_MAX];
	if (find_program(self, "jobs", "cm-runner", runner, sizeof runner) < 0 ||
	    find_program(self, "fcgi-app", "cm-fcgi", fcgi, sizeof fcgi) < 0 || find_program(self, "ws", "cm-ws", ws, sizeof ws) < 0) {
		free(self);
		return 1;
	}
	if (cm_pathf(sock, sizeof sock, "%s/fcgi.sock", cfg.run_dir) < 0 ||
	    cm_pathf(wssock, sizeof wssock, "%s/ws.sock", cfg.run_dir) < 0)
		return 1;
	free(self);

	int report = -1;
	if (background) {
		char log_path[PATH_MAX];
		if (cm_config_path(&cfg, log_path, sizeof log_path, "log/serve.log") < 0 || daemonize(file, log_path, &report) < 0)
			return 1;
	}
	/* the supervisor's pid in the lock files (the one the message of a refused stack names) */
	if (background && (cli_instance_note(data_lock, cfg.http_listen) < 0 || cli_instance_note(run_lock, cfg.http_listen) < 0))
		fprintf(stderr, "container-manager: cannot note this stack in its lock files: %s\n", strerror(errno));
	/* children see the resolved data directory, so a relative CM_DATA_DIR means the same;
	 * GET /shutdown signals this process */
	setenv("CM_DATA_DIR", cfg.data_dir, 1);
	snprintf(buf, sizeof buf, "%d", (int)getpid());
	setenv("CM_SERVE_PID", buf, 1);
	if (o->position || cfg.images_file[0])
		setenv("CM_SHUTDOWN_ENDPOINT", "1", 1);
	else
		unsetenv("CM_SHUTDOWN_ENDPOINT");
	char *const runner_argv[] = {runner, "--env-file", (char *)o->env_file, NULL};
	char *const fcgi_argv[] = {fcgi, "--env-file", (char *)o->env_file, "--socket", sock, "--group", "www-data", NULL};
	char *const ws_argv[] = {ws, "--env-file", (char *)o->env_file, "--socket", wssock, "--group", "www-data", NULL};
	char *const nginx_argv[] = {"/usr/sbin/nginx", "-c", conf, "-g", "daemon off;", NULL};
	struct child kids[] = {
		{"runner", runner_argv, 0, 0, 0},
		{"fcgi", fcgi_argv, 0, 0, 0},
		{"ws", ws_argv, 0, 0, 0},
		{"nginx", nginx_argv, 0, 0, 0},
	};
	enum { K_RUNNER, K_FCGI, K_WS, K_NGINX };
	/* CM_VALGRIND_DIR: run the pool, the runner and the helper under valgrind's memcheck,
	 * one log per process in that directory (tests/run-valgrind) */
	const char *vg_dir = getenv("CM_VALGRIND_DIR");
	char vg_log[PATH_MAX + 32];
	char *vg_argv[3][16];
	if (vg_dir && *vg_dir) {
		snprintf(vg_log, sizeof vg_log, "--log-file=%s/%%n.%%p.log", vg_dir);
		for (size_t i = 0; i < 3; i++) {
			char *pre[] = {"/usr/bin/valgrind", "--tool=memcheck", "--leak-check=full", "--show-leak-kinds=definite",
				       "--errors-for-leak-kinds=definite", "--trace-children=no", "--child-silent-after-fork=no",
				       vg_log};
			size_t n = 0;
			for (; n < CM_ARRAY_LEN(pre); n++)
				vg_argv[i][n] = pre[n];
			for (char *const *a = kids[i].argv; *a && n < 15; a++)
				vg_argv[i][n++] = *a;
			vg_argv[i][n] = NULL;
			kids[i].argv = vg_argv[i];
		}
	}
	struct sigaction sa = {0};
	sa.sa_handler = on_stop;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	for (size_t i = 0; i < CM_ARRAY_LEN(kids); i++)
		if (spawn_kid(&kids[i], lfd) < 0)
			kids[i].pid = 0;
	char why[300];
	int exit_code = 0;
	if (wait_ready(&cfg, kids, CM_ARRAY_LEN(kids), why, sizeof why) < 0) {
		fprintf(stderr, "container-manager: the stack could not start: %s\n", why);
		if (report >= 0) {
			ssize_t w = write(report, why, strlen(why));
			(void)w;
			close(report);
			report = -1;
		}
		got_stop = 1;
		exit_code = 1;
	} else {
		if (report >= 0) {
			snprintf(buf, sizeof buf, "OK %d", port);
			ssize_t w = write(report, buf, strlen(buf));
			(void)w;
			close(report);
			report = -1;
		}
		printf("container-manager %s is up (pid %d):\n  http://%s/  (plain HTTP%s)\n", PACKAGE_VERSION, (int)getpid(),
		       cfg.http_listen, cfg.auth_off ? ", no authentication" : "");
		if (https)
			printf("  https://%s/  (TLS, self-signed unless replaced: %s)\n", cfg.https_listen, cert);
		if (cfg.images_file[0])
			printf("  image definitions: %s\n", cfg.images_file);
		printf("  user: %s   data: %s\nCtrl-C or SIGTERM stops it (REST API containers keep running; "
		       "start_container ones are removed).\n",
		       cfg.auth_off ? "-" : cfg.app_user, cfg.data_dir);
		fflush(stdout);
	}
	while (!got_stop) {
		int st;
		pid_t pid = waitpid(-1, &st, 0);
		if (pid < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		for (size_t i = 0; i < CM_ARRAY_LEN(kids); i++) {
			if (kids[i].pid != pid || got_stop)
				continue;
			kids[i].pid = 0;
			int64_t now = cm_monotonic_ms();
			if (now - kids[i].started > 60000)
				kids[i].restarts = 0;
			kids[i].restarts++;
			fprintf(stderr, "container-manager: %s exited (%s %d); restarting\n", kids[i].name,
				WIFSIGNALED(st) ? "signal" : "status", WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
			if (kids[i].restarts > 1)
				usleep((useconds_t)(kids[i].restarts > 10 ? 2000000 : 100000 * kids[i].restarts));
			if (got_stop)
				break;
			spawn_kid(&kids[i], lfd);
		}
	}
	int64_t t_stop = cm_monotonic_ms();
	fprintf(stderr, "container-manager: stopping\n");
	/* start_container's containers go first, while the runner still runs */
	bool runner_alive = kids[K_RUNNER].pid > 0 && waitpid(kids[K_RUNNER].pid, NULL, WNOHANG) == 0;
	stop_harpoon(&cfg, kids[K_WS].pid, runner_alive);
	fprintf(stderr, "container-manager: start_container containers removed after %lld ms\n",
		(long long)(cm_monotonic_ms() - t_stop));
	/* nginx first (stop taking requests), then the sessions end, the pool drains, the runner stops */
	int sigs[] = {SIGTERM, SIGTERM, SIGTERM, SIGQUIT};
	for (int i = (int)CM_ARRAY_LEN(kids) - 1; i >= 0; i--) {
		if (kids[i].pid <= 0)
			continue;
		kill(kids[i].pid, sigs[i]);
		int64_t deadline = cm_monotonic_ms() + 30000;
		for (;;) {
			pid_t r = waitpid(kids[i].pid, NULL, WNOHANG);
			if (r == kids[i].pid || (r < 0 && errno != EINTR))
				break;
			if (cm_monotonic_ms() > deadline) {
				kill(kids[i].pid, SIGKILL);
				waitpid(kids[i].pid, NULL, 0);
				break;
			}
			usleep(5000);
		}
		fprintf(stderr, "container-manager: %s stopped after %lld ms\n", kids[i].name, (long long)(cm_monotonic_ms() - t_stop));
	}
	close(lfd);
	close(run_lock);
	close(data_lock);
	return exit_code;
}

int main(int argc, char **argv)
{
	cm_log_init("container-manager");
	if (argc < 2) {
		usage();
		return 2;
	}
	const char *cmd = argv[1];
	struct serve_opts o = {.env_file = cli_default_env_file()};
	if (!strcmp(cmd, "status"))
		return cmd_status(o.env_file, argc - 2, argv + 2);
	if (!strcmp(cmd, "audit"))
		return cmd_audit(o.env_file, argc - 2, argv + 2);
	if (!strcmp(cmd, "backup"))
		return cmd_backup(o.env_file, argc - 2, argv + 2);
	bool is_serve = !strcmp(cmd, "serve");
	for (int i = 2; i < argc; i++) {
		if (!strcmp(argv[i], "--env-file") && i + 1 < argc) {
			o.env_file = argv[++i];
		} else if (is_serve && !strcmp(argv[i], "--images") && i + 1 < argc) {
			o.images = argv[++i];
		} else if (is_serve && !strcmp(argv[i], "--no-auth")) {
			o.no_auth = true;
		} else if (is_serve && !strcmp(argv[i], "--non-interactive")) {
			/* nothing here ever prompts; accepted for harpoon's command line */
		} else if (is_serve && argv[i][0] != '-' && !o.position) {
			o.position = argv[i];
		} else {
			usage();
			return 2;
		}
	}
	if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
		printf("%s\n", CM_VERSION_STRING);
		return 0;
	}
	if (is_serve)
		return cmd_serve(&o);
	if (!strcmp(cmd, "migrate")) {
		o.only_migrate = true;
		return cmd_serve(&o);
	}
	if (!strcmp(cmd, "prepare")) {
		o.only_prepare = true;
		return cmd_serve(&o);
	}
	usage();
	return 2;
}
