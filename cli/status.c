/* status.c: `container-manager status`: the stack's processes (nginx, the worker pool, the
 * runner, the WebSocket helper, the supervising `serve` if any), whether their sockets
 * answer, the job queue, the containers by state and whether Docker answers, as text or one
 * JSON object. Exits 0 when everything answers, 3 when something does not. */
#include "config.h"
#include "cli.h"
#include "cm_config.h"
#include "docker.h"
#include "json.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct proc {
	const char *name;  /* nginx, cm-fcgi, cm-runner, cm-ws, serve */
	const char *sock;  /* socket in the run directory that must accept, or NULL */
	pid_t pid;         /* main process, 0 = not found */
	int children;      /* worker processes under it */
	bool sock_ok;
};

/* The command line of pid with NULs turned into spaces, and its parent. */
static int read_proc(pid_t pid, char *cmd, size_t cmdsz, pid_t *ppid)
{
	char path[64];
	snprintf(path, sizeof path, "/proc/%d/cmdline", (int)pid);
	size_t n = 0;
	char *raw = cm_read_file(path, 65536, &n);
	if (!raw)
		return -1;
	for (size_t i = 0; i < n; i++)
		if (!raw[i])
			raw[i] = ' ';
	snprintf(cmd, cmdsz, "%s", raw);
	free(raw);
	snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
	char *st = cm_read_file(path, 4096, NULL);
	if (!st)
		return -1;
	/* "pid (comm) S ppid": comm may hold spaces and parentheses, so start after the last ')' */
	const char *rp = strrchr(st, ')');
	int pp = 0;
	if (!rp || sscanf(rp + 1, " %*c %d", &pp) != 1) {
		free(st);
		return -1;
	}
	*ppid = pp;
	free(st);
	return 0;
}

static const char *base_name(const char *cmd, char *out, size_t outsz)
{
	size_t l = strcspn(cmd, " ");
	snprintf(out, outsz, "%.*s", (int)l, cmd);
	char *s = strrchr(out, '/');
	return s ? s + 1 : out;
}

/* Finds the stack's processes in /proc: cm-fcgi and cm-ws by their socket path in the run
 * directory, the runner by the pid it records in the database, nginx by its pid file; the
 * main process of each is the one whose parent is not one of its kind, the others are its
 * workers. `serve` is the runner's parent when it supervises the stack. */
#define MAX_SEEN 512
static void find_procs(const struct cm_config *cfg, struct proc *ps, size_t nps, pid_t runner_pid)
{
	char fsock[PATH_MAX + 16], wsock[PATH_MAX + 16], pidf[PATH_MAX];
	snprintf(fsock, sizeof fsock, " %s/fcgi.sock", cfg->run_dir);
	snprintf(wsock, sizeof wsock, " %s/ws.sock", cfg->run_dir);
	/* serve's own nginx, else the system's (the systemd units sit behind it) */
	pid_t nginx_pid = 0;
	const char *pidfiles[] = {pidf, "/run/nginx.pid"};
	for (size_t i = 0; i < CM_ARRAY_LEN(pidfiles) && nginx_pid <= 0; i++) {
		if (i == 0 && cm_pathf(pidf, sizeof pidf, "%s/nginx.pid", cfg->run_dir) < 0)
			continue;
		char *s = cm_read_file(pidfiles[i], 64, NULL);
		if (s) {
			nginx_pid = (pid_t)atoi(s);
			free(s);
		}
		if (nginx_pid > 0 && kill(nginx_pid, 0) < 0 && errno == ESRCH)
			nginx_pid = 0;
	}
	struct {
		pid_t pid, ppid;
		size_t kind;
	} seen[MAX_SEEN];
	size_t nseen = 0;
	char cmd[4096], nb[256];
	DIR *d = opendir("/proc");
	struct dirent *e;
	while (d && (e = readdir(d)) && nseen < MAX_SEEN) {
		if (!isdigit((unsigned char)e->d_name[0]))
			continue;
		pid_t pid = (pid_t)atoi(e->d_name), ppid = 0;
		if (read_proc(pid, cmd, sizeof cmd, &ppid) < 0)
			continue;
		const char *bn = base_name(cmd, nb, sizeof nb);
		for (size_t i = 0; i < nps; i++) {
			const char *n = ps[i].name;
			bool mine = (!strcmp(n, "cm-fcgi") && !strcmp(bn, "cm-fcgi") && strstr(cmd, fsock)) ||
				    (!strcmp(n, "cm-ws") && !strcmp(bn, "cm-ws") && strstr(cmd, wsock)) ||
				    (!strcmp(n, "cm-runner") && pid == runner_pid && !strcmp(bn, "cm-runner")) ||
				    (!strcmp(n, "nginx") && nginx_pid && (pid == nginx_pid || ppid == nginx_pid));
			if (mine) {
				seen[nseen].pid = pid;
				seen[nseen].ppid = ppid;
				seen[nseen++].kind = i;
				break;
			}
		}
	}
	if (d)
		closedir(d);
	for (size_t k = 0; k < nseen; k++) {
		bool parent_same = false;
		for (size_t j = 0; j < nseen; j++)
			if (seen[j].pid == seen[k].ppid && seen[j].kind == seen[k].kind)
				parent_same = true;
		struct proc *p = &ps[seen[k].kind];
		if (parent_same)
			p->children++;
		else if (!p->pid)
			p->pid = seen[k].pid;
	}
	for (size_t i = 0; i < nps; i++) {
		if (strcmp(ps[i].name, "serve") || runner_pid <= 0)
			continue;
		pid_t ppid = 0, pp2 = 0;
		if (read_proc(runner_pid, cmd, sizeof cmd, &ppid) == 0 && ppid > 1 && read_proc(ppid, cmd, sizeof cmd, &pp2) == 0 &&
		    !strcmp(base_name(cmd, nb, sizeof nb), "container-manager"))
			ps[i].pid = ppid;
	}
}

static long long scalar(sqlite3 *h, const char *sql)
{
	sqlite3_stmt *st = NULL;
	long long v = -1;
	if (sqlite3_prepare_v2(h, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return v;
}

int cmd_status(const char *env_file, int argc, char **argv)
{
	bool json = false;
	for (int i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--env-file") && i + 1 < argc) {
			env_file = argv[++i];
		} else if (!strcmp(argv[i], "--json")) {
			json = true;
		} else {
			fprintf(stderr, "usage: container-manager status [--json] [--env-file FILE]\n");
			return 2;
		}
	}
	struct cm_config cfg;
	char dbpath[PATH_MAX];
	if (cli_config_db(env_file, &cfg, dbpath, sizeof dbpath) < 0)
		return 1;
	struct cm_error err = {0};
	sqlite3 *h = cli_db_open_ro(dbpath);
	long long queued = -1, running = -1, hb_age = -1;
	pid_t runner_pid = 0;
	bool runner_docker_ok = false;
	char docker_error[512] = "";
	yajl_gen cg = cm_jg_new(); /* containers by state, as JSON */
	struct cm_buf ctext = {0};  /* the same as text */
	if (!cg) {
		sqlite3_close(h);
		return 1;
	}
	yajl_gen_map_open(cg);
	if (h) {
		queued = scalar(h, "SELECT count(*) FROM jobs WHERE status = 'queued'");
		running = scalar(h, "SELECT count(*) FROM jobs WHERE status = 'running'");
		sqlite3_stmt *st = NULL;
		if (sqlite3_prepare_v2(h, "SELECT pid, heartbeat_ms, docker_ok, docker_error FROM runner_state WHERE id = 1", -1,
				       &st, NULL) == SQLITE_OK &&
		    sqlite3_step(st) == SQLITE_ROW) {
			runner_pid = (pid_t)sqlite3_column_int(st, 0);
			hb_age = cm_now_ms() - sqlite3_column_int64(st, 1);
			runner_docker_ok = sqlite3_column_int(st, 2) != 0;
			const char *de = (const char *)sqlite3_column_text(st, 3);
			snprintf(docker_error, sizeof docker_error, "%s", de ? de : "");
		}
		sqlite3_finalize(st);
		st = NULL;
		if (sqlite3_prepare_v2(h, "SELECT status, count(*) FROM containers GROUP BY status ORDER BY status", -1, &st,
				       NULL) == SQLITE_OK) {
			while (sqlite3_step(st) == SQLITE_ROW) {
				const char *s = (const char *)sqlite3_column_text(st, 0);
				cm_jg_str(cg, s ? s : "");
				cm_jg_int(cg, sqlite3_column_int64(st, 1));
				cm_buf_printf(&ctext, "%s%s %lld", ctext.len ? ", " : "", s ? s : "", sqlite3_column_int64(st, 1));
			}
		}
		sqlite3_finalize(st);
		sqlite3_close(h);
	}
	yajl_gen_map_close(cg);
	char *containers_json = cm_jg_finish(cg);

	/* Docker as this program sees it, not only as the runner last reported */
	struct cm_docker dk;
	struct cm_buf resp = {0};
	char docker_version[64] = "";
	bool docker_ok = false;
	if (cm_docker_init(&dk, cfg.docker_host, &err) == 0) {
		long code = cm_docker_call(&dk, "GET", "/version", NULL, &resp, 5, &err);
		docker_ok = code == 200;
		if (docker_ok) {
			yajl_val v = cm_json_parse(resp.data ? resp.data : "", resp.len, &err);
			const char *ver = v ? cm_json_get_str(v, "Version") : NULL;
			snprintf(docker_version, sizeof docker_version, "%s", ver ? ver : "");
			yajl_tree_free(v);
		} else if (!docker_error[0]) {
			snprintf(docker_error, sizeof docker_error, "%s", code < 0 ? err.message : "unexpected answer");
		}
		cm_docker_free(&dk);
	}
	cm_buf_free(&resp);

	struct proc ps[] = {
		{"serve", NULL, 0, 0, false},         {"nginx", NULL, 0, 0, false},
		{"cm-fcgi", "fcgi.sock", 0, 0, false}, {"cm-runner", "runner.sock", 0, 0, false},
		{"cm-ws", "ws.sock", 0, 0, false},
	};
	find_procs(&cfg, ps, CM_ARRAY_LEN(ps), runner_pid);
	bool all_ok = docker_ok && h != NULL;
	for (size_t i = 0; i < CM_ARRAY_LEN(ps); i++) {
		if (ps[i].sock)
			ps[i].sock_ok = cli_unix_probe(cfg.run_dir, ps[i].sock);
		/* serve is optional: systemd units run the programs without it */
		if (strcmp(ps[i].name, "serve") && (!ps[i].pid || (ps[i].sock && !ps[i].sock_ok)))
			all_ok = false;
	}
	bool runner_fresh = hb_age >= 0 && hb_age < 15000;
	if (!runner_fresh)
		all_ok = false;

	if (json) {
		yajl_gen g = cm_jg_new();
		if (!g) {
			free(containers_json);
			cm_buf_free(&ctext);
			return 1;
		}
		yajl_gen_map_open(g);
		cm_jg_kv_str(g, "version", PACKAGE_VERSION);
		cm_jg_kv_str(g, "env_file", env_file);
		cm_jg_kv_str(g, "data_dir", cfg.data_dir);
		cm_jg_kv_str(g, "run_dir", cfg.run_dir);
		cm_jg_str(g, "ok");
		cm_jg_bool(g, all_ok);
		cm_jg_str(g, "processes");
		yajl_gen_map_open(g);
		for (size_t i = 0; i < CM_ARRAY_LEN(ps); i++) {
			cm_jg_str(g, ps[i].name);
			yajl_gen_map_open(g);
			cm_jg_str(g, "pid");
			ps[i].pid ? cm_jg_int(g, ps[i].pid) : cm_jg_null(g);
			cm_jg_kv_int(g, "workers", ps[i].children);
			if (ps[i].sock) {
				cm_jg_str(g, "socket");
				cm_jg_bool(g, ps[i].sock_ok);
			}
			yajl_gen_map_close(g);
		}
		yajl_gen_map_close(g);
		cm_jg_str(g, "runner_heartbeat_age_ms");
		hb_age >= 0 ? cm_jg_int(g, hb_age) : cm_jg_null(g);
		cm_jg_str(g, "queue");
		yajl_gen_map_open(g);
		cm_jg_kv_int(g, "queued", queued);
		cm_jg_kv_int(g, "running", running);
		yajl_gen_map_close(g);
		cm_jg_str(g, "containers");
		cm_jg_raw(g, containers_json ? containers_json : "{}");
		cm_jg_str(g, "docker");
		yajl_gen_map_open(g);
		cm_jg_str(g, "reachable");
		cm_jg_bool(g, docker_ok);
		cm_jg_str(g, "runner_sees_docker");
		cm_jg_bool(g, runner_docker_ok);
		cm_jg_kv_str(g, "host", cfg.docker_host);
		cm_jg_kv_str(g, "version", docker_version[0] ? docker_version : NULL);
		cm_jg_kv_str(g, "error", docker_ok ? NULL : docker_error);
		yajl_gen_map_close(g);
		yajl_gen_map_close(g);
		char *out = cm_jg_finish(g);
		if (out)
			printf("%s\n", out);
		free(out);
	} else {
		printf("container-manager %s (%s, data %s)\n", PACKAGE_VERSION, env_file, cfg.data_dir);
		for (size_t i = 0; i < CM_ARRAY_LEN(ps); i++) {
			char extra[96] = "";
			if (ps[i].children)
				snprintf(extra, sizeof extra, ", %d worker%s", ps[i].children, ps[i].children == 1 ? "" : "s");
			if (ps[i].pid)
				printf("  %-10s running (pid %d%s)%s%s\n", ps[i].name, (int)ps[i].pid, extra,
				       ps[i].sock ? (ps[i].sock_ok ? ", socket answers" : ", SOCKET DOES NOT ANSWER") : "",
				       !strcmp(ps[i].name, "cm-runner") && !runner_fresh ? ", HEARTBEAT STALE" : "");
			else
				printf("  %-10s %s\n", ps[i].name, strcmp(ps[i].name, "serve") ? "NOT RUNNING" : "not running (systemd units or stopped)");
		}
		if (queued >= 0)
			printf("  jobs       %lld queued, %lld running\n", queued, running);
		printf("  containers %s\n", ctext.len ? cm_buf_str(&ctext) : "none");
		if (docker_ok)
			printf("  docker     reachable at %s (Docker %s)%s\n", cfg.docker_host, docker_version,
			       runner_docker_ok ? "" : "; the runner does not see it yet");
		else
			printf("  docker     NOT REACHABLE at %s: %s\n", cfg.docker_host, docker_error);
		printf("%s\n", all_ok ? "ok" : "degraded");
	}
	free(containers_json);
	cm_buf_free(&ctext);
	return all_ok ? 0 : 3;
}
