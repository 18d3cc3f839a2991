/* main.c: cm-runner. Claims jobs from SQLite and runs them against Docker on a pool of
 * threads (one container's jobs in order, different containers in parallel). Workers wake
 * it over a unix socket and wait on the same connection for "ID\n" when the job ends. */
#include "config.h"
#include "metrics.h"
#include "runner.h"
#include "staging.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define MAX_CLIENTS 1024
#define MAX_ATTEMPTS 5

static struct runner rn;
static int self_pipe[2] = {-1, -1};

static void on_signal(int sig)
{
	(void)sig;
	int saved = errno;
	rn.stop = 1;
	ssize_t w = write(self_pipe[1], "x", 1);
	(void)w;
	errno = saved;
}

int ctx_open(struct ctx *c, struct runner *r, struct cm_error *err)
{
	memset(c, 0, sizeof *c);
	c->rn = r;
	if (cm_db_open(&c->db, r->db_path, err) < 0)
		return -1;
	if (cm_docker_init(&c->docker, r->cfg.docker_host, err) < 0) {
		cm_db_close(&c->db);
		return -1;
	}
	return 0;
}

void ctx_close(struct ctx *c)
{
	cm_docker_free(&c->docker);
	cm_db_close(&c->db);
}

/* Claims the oldest queued job whose container has no job running. 1 = claimed, 0 = none. */
static int claim(struct ctx *c, int64_t *id, char **kind, char **cuid, char **args)
{
	static const char *sql =
		"UPDATE jobs SET status = 'running', started_at = ?1, attempts = attempts + 1 WHERE id = ("
		"SELECT j.id FROM jobs j WHERE j.status = 'queued' AND NOT EXISTS (SELECT 1 FROM jobs r "
		"WHERE r.status = 'running' AND r.cuid = j.cuid) ORDER BY j.id LIMIT 1) "
		"RETURNING id, kind, cuid, args";
	struct cm_error err;
	if (cm_db_begin(&c->db, &err) < 0)
		return -1;
	sqlite3_stmt *st = cm_db_stmt(&c->db, sql, &err);
	if (!st) {
		cm_db_rollback(&c->db);
		return -1;
	}
	sqlite3_bind_int64(st, 1, cm_now_ms());
	int rc = sqlite3_step(st);
	int got = 0;
	if (rc == SQLITE_ROW) {
		*id = sqlite3_column_int64(st, 0);
		*kind = strdup(cm_col_str(st, 1));
		*cuid = cm_col_str(st, 2) ? strdup(cm_col_str(st, 2)) : NULL;
		*args = strdup(cm_col_str(st, 3) ? cm_col_str(st, 3) : "{}");
		got = 1;
		rc = sqlite3_step(st);
	}
	sqlite3_reset(st);
	if (rc != SQLITE_DONE) {
		cm_db_rollback(&c->db);
		return -1;
	}
	if (cm_db_commit(&c->db, &err) < 0)
		return -1;
	return got;
}

static int finish(struct ctx *c, int64_t id, const char *result, const struct cm_error *jerr)
{
	static const char *sql = "UPDATE jobs SET status = ?2, finished_at = ?3, result = ?4, err_status = ?5, "
				 "err_kind = ?6, err_code = ?7, err_field = ?8, err_message = ?9 WHERE id = ?1";
	struct cm_error err;
	for (int attempt = 0; attempt < 20; attempt++) {
		sqlite3_stmt *st = cm_db_stmt(&c->db, sql, &err);
		if (!st)
			return -1;
		sqlite3_bind_int64(st, 1, id);
		sqlite3_bind_text(st, 2, jerr ? "failed" : "succeeded", -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 3, cm_now_ms());
		if (result)
			sqlite3_bind_text(st, 4, result, -1, SQLITE_STATIC);
		if (jerr) {
			sqlite3_bind_int(st, 5, jerr->status);
			sqlite3_bind_text(st, 6, jerr->kind, -1, SQLITE_STATIC);
			sqlite3_bind_text(st, 7, jerr->code, -1, SQLITE_STATIC);
			if (jerr->field[0])
				sqlite3_bind_text(st, 8, jerr->field, -1, SQLITE_STATIC);
			sqlite3_bind_text(st, 9, jerr->message, -1, SQLITE_STATIC);
		}
		int rc = sqlite3_step(st);
		sqlite3_reset(st);
		if (rc == SQLITE_DONE)
			return 0;
		usleep(100000);
	}
	cm_error("could not record the end of job %lld", (long long)id);
	return -1;
}

static void *executor(void *arg)
{
	(void)arg;
	struct ctx c;
	struct cm_error err;
	if (ctx_open(&c, &rn, &err) < 0) {
		cm_error("executor: %s", err.message);
		rn.stop = 1;
		return NULL;
	}
	unsigned seen = 0;
	while (!rn.stop) {
		int64_t id;
		char *kind = NULL, *cuid = NULL, *args = NULL;
		int got = claim(&c, &id, &kind, &cuid, &args);
		if (got <= 0) {
			if (got < 0)
				usleep(100000);
			pthread_mutex_lock(&rn.mu);
			if (rn.wake_seq == seen && !rn.stop) {
				struct timespec ts;
				clock_gettime(CLOCK_REALTIME, &ts);
				ts.tv_sec += 2; /* safety net only: wake-ups arrive on the socket */
				pthread_cond_timedwait(&rn.cv, &rn.mu, &ts);
			}
			seen = rn.wake_seq;
			pthread_mutex_unlock(&rn.mu);
			continue;
		}
		struct cm_error jerr = {0};
		char *result = NULL;
		yajl_val av = cm_json_parse(args, strlen(args), &jerr);
		c.job_id = id;
		int rc = av ? exec_job(&c, kind, cuid, av, &result, &jerr) : -1;
		if (av)
			yajl_tree_free(av);
		if (rc < 0)
			cm_info("job %lld %s %s failed: %d %s: %s", (long long)id, kind, cuid ? cuid : "-", jerr.status,
				jerr.code, jerr.message);
		finish(&c, id, rc == 0 ? result : NULL, rc == 0 ? NULL : &jerr);
		ssize_t w = write(rn.done_pipe[1], &id, sizeof id);
		(void)w;
		/* a finished job may unblock the next one of the same container */
		pthread_mutex_lock(&rn.mu);
		rn.wake_seq++;
		pthread_cond_broadcast(&rn.cv);
		pthread_mutex_unlock(&rn.mu);
		free(result);
		free(kind);
		free(cuid);
		free(args);
	}
	ctx_close(&c);
	return NULL;
}

static void wake_executors(void)
{
	pthread_mutex_lock(&rn.mu);
	rn.wake_seq++;
	pthread_cond_broadcast(&rn.cv);
	pthread_mutex_unlock(&rn.mu);
}

struct client {
	int fd;
	int64_t job;
	char buf[32];
	size_t len;
};

static int job_is_over(struct cm_db *db, int64_t id)
{
	static const char *sql = "SELECT status FROM jobs WHERE id = ?";
	struct cm_error err;
	sqlite3_stmt *st = cm_db_stmt(db, sql, &err);
	if (!st)
		return 0;
	sqlite3_bind_int64(st, 1, id);
	int over = 1; /* unknown job: nothing to wait for */
	if (sqlite3_step(st) == SQLITE_ROW)
		over = strcmp(cm_col_str(st, 0), "queued") && strcmp(cm_col_str(st, 0), "running");
	sqlite3_reset(st);
	return over;
}

static void reply(struct client *cl)
{
	char line[32];
	int n = snprintf(line, sizeof line, "%lld\n", (long long)cl->job);
	ssize_t w = send(cl->fd, line, (size_t)n, MSG_NOSIGNAL);
	(void)w;
	close(cl->fd);
	cl->fd = -1;
}

/* Puts jobs left running by a previous runner back in the queue (they are idempotent). */
static int requeue_interrupted(struct cm_db *db, struct cm_error *err)
{
	if (cm_db_exec(db,
		       "UPDATE jobs SET status = 'failed', finished_at = CAST(strftime('%s','now') AS INTEGER) * 1000, "
		       "err_status = 500, err_kind = 'compose_error', err_code = 'JOB_ABANDONED', "
		       "err_message = 'the job was interrupted too many times' "
		       "WHERE status = 'running' AND attempts >= 5",
		       err) < 0)
		return -1;
	return cm_db_exec(db, "UPDATE jobs SET status = 'queued' WHERE status = 'running'", err);
}

int main(int argc, char **argv)
{
	const char *env_file = ".env";
	static const struct option opts[] = {
		{"env-file", required_argument, NULL, 'e'},
		{NULL, 0, NULL, 0},
	};
	int o;
	while ((o = getopt_long(argc, argv, "e:", opts, NULL)) != -1) {
		if (o == 'e')
			env_file = optarg;
		else
			return 2;
	}
	cm_log_init("cm-runner");
	curl_global_init(CURL_GLOBAL_ALL);
	struct cm_error err = {0};
	if (cm_config_load(&rn.cfg, env_file, &err) < 0) {
		cm_error("config: %s", err.message);
		return 1;
	}
	if (cm_parse_uid(rn.cfg.default_uid, &rn.uid, &rn.gid) < 0)
		return 1;
	if (cm_metrics_attach(rn.cfg.run_dir) < 0)
		cm_warn("metrics: cannot map %s/metrics.shm: %s", rn.cfg.run_dir, strerror(errno));
	if (cm_config_path(&rn.cfg, rn.db_path, sizeof rn.db_path, "db/cm.sqlite") < 0 ||
	    snprintf(rn.sock_path, sizeof rn.sock_path, "%s/runner.sock", rn.cfg.run_dir) >= (int)sizeof rn.sock_path ||
	    cm_config_path(&rn.cfg, rn.containers_dir, sizeof rn.containers_dir, "containers") < 0) {
		cm_error("data directory path too long");
		return 1;
	}
	if (cm_mkdir_p(rn.containers_dir, 0700) < 0) {
		cm_error("cannot create %s: %s", rn.containers_dir, strerror(errno));
		return 1;
	}
	/* no other host user may traverse into the containers' files (an older tree had 0711) */
	if (chmod(rn.containers_dir, 0700) < 0)
		cm_warn("cannot make %s 0700: %s", rn.containers_dir, strerror(errno));
	/* uploads a crash or a kill left behind: finished or undone by their journals, removed;
	 * live ones are locked by their workers and left alone (lib/staging.h) */
	long swept = 0, recovered = 0;
	if (cm_stage_sweep(rn.containers_dir, rn.uid, rn.gid, &swept, &recovered) < 0)
		cm_warn("the sweep of unfinished uploads in %s did not complete", rn.containers_dir);
	if (swept || recovered)
		cm_info("startup: removed %ld unfinished uploads (%ld of them finished or undone by their journal)", swept, recovered);
	pthread_mutex_init(&rn.mu, NULL);
	pthread_cond_init(&rn.cv, NULL);
	if (pipe2(self_pipe, O_CLOEXEC | O_NONBLOCK) < 0 || pipe2(rn.done_pipe, O_CLOEXEC | O_NONBLOCK) < 0)
		return 1;
	struct sigaction sa = {0};
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	struct ctx main_ctx;
	if (ctx_open(&main_ctx, &rn, &err) < 0) {
		cm_error("startup: %s", err.message);
		return 1;
	}
	if (requeue_interrupted(&main_ctx.db, &err) < 0) {
		cm_error("startup: %s", err.message);
		return 1;
	}
	images_sweep(&main_ctx);
	if (cm_db_instance(&main_ctx.db, rn.instance, &err) < 0) {
		cm_error("startup: %s", err.message);
		return 1;
	}
	detect_compose(&rn);
	build_limits_setup(&main_ctx);
	int lfd = cm_unix_bind(rn.sock_path, SOCK_STREAM | SOCK_NONBLOCK, 512);
	if (lfd < 0) {
		cm_error("cannot listen on %s: %s", rn.sock_path, strerror(errno));
		return 1;
	}
	pthread_t mon, ev, aud, health;
	pthread_t *ex = calloc((size_t)rn.cfg.runner_threads, sizeof *ex);
	if (!ex || pthread_create(&mon, NULL, monitor_thread, &rn) || pthread_create(&ev, NULL, events_thread, &rn) ||
	    pthread_create(&aud, NULL, audit_thread, &rn) || pthread_create(&health, NULL, health_thread, &rn))
		return 1;
	for (int i = 0; i < rn.cfg.runner_threads; i++)
		if (pthread_create(&ex[i], NULL, executor, NULL))
			return 1;
	cm_info("runner ready on %s with %d threads", rn.sock_path, rn.cfg.runner_threads);

	static struct client clients[MAX_CLIENTS];
	for (int i = 0; i < MAX_CLIENTS; i++)
		clients[i].fd = -1;
	struct pollfd pfds[MAX_CLIENTS + 3];
	while (!rn.stop) {
		int n = 0;
		pfds[n++] = (struct pollfd){.fd = lfd, .events = POLLIN};
		pfds[n++] = (struct pollfd){.fd = rn.done_pipe[0], .events = POLLIN};
		pfds[n++] = (struct pollfd){.fd = self_pipe[0], .events = POLLIN};
		int map[MAX_CLIENTS + 3];
		for (int i = 0; i < MAX_CLIENTS; i++) {
			if (clients[i].fd >= 0) {
				map[n] = i;
				pfds[n++] = (struct pollfd){.fd = clients[i].fd, .events = POLLIN};
			}
		}
		if (poll(pfds, (nfds_t)n, 1000) < 0 && errno != EINTR)
			break;
		if (pfds[0].revents & POLLIN) {
			int fd;
			while ((fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK)) >= 0) {
				int slot = -1;
				for (int i = 0; i < MAX_CLIENTS && slot < 0; i++)
					if (clients[i].fd < 0)
						slot = i;
				if (slot < 0) {
					close(fd);
					wake_executors();
					continue;
				}
				clients[slot] = (struct client){.fd = fd, .job = 0};
			}
		}
		if (pfds[1].revents & POLLIN) {
			int64_t id;
			while (read(rn.done_pipe[0], &id, sizeof id) == sizeof id)
				for (int i = 0; i < MAX_CLIENTS; i++)
					if (clients[i].fd >= 0 && clients[i].job == id)
						reply(&clients[i]);
		}
		for (int k = 3; k < n; k++) {
			if (!pfds[k].revents)
				continue;
			struct client *cl = &clients[map[k]];
			if (cl->fd < 0)
				continue;
			ssize_t r = read(cl->fd, cl->buf + cl->len, sizeof cl->buf - 1 - cl->len);
			if (r <= 0) {
				if (r < 0 && errno == EAGAIN)
					continue;
				close(cl->fd);
				cl->fd = -1;
				continue;
			}
			cl->len += (size_t)r;
			cl->buf[cl->len] = '\0';
			char *nl = strchr(cl->buf, '\n');
			if (!nl) {
				if (cl->len >= sizeof cl->buf - 1) {
					close(cl->fd);
					cl->fd = -1;
				}
				continue;
			}
			*nl = '\0';
			cl->job = strtoll(cl->buf, NULL, 10);
			/* registered first, then checked: a job that ended before is answered now, and
			 * so is everyone else waiting for it (a job cancelled through the API ends
			 * without this process running it) */
			if (cl->job <= 0) {
				reply(cl);
			} else if (job_is_over(&main_ctx.db, cl->job)) {
				int64_t id = cl->job;
				for (int i = 0; i < MAX_CLIENTS; i++)
					if (clients[i].fd >= 0 && clients[i].job == id)
						reply(&clients[i]);
			} else {
				wake_executors();
			}
		}
	}
	cm_info("stopping");
	rn.stop = 1;
	wake_executors();
	for (int i = 0; i < rn.cfg.runner_threads; i++)
		pthread_join(ex[i], NULL);
	pthread_join(aud, NULL); /* flushes the audit rows still queued */
	/* the event and monitor threads may sit in a long Docker call; the process ends anyway */
	unlink(rn.sock_path);
	build_limits_teardown(&rn);
	ctx_close(&main_ctx);
	free(ex);
	return 0;
}
