/* main.c: cm-ws, the WebSocket helper. nginx proxies /ws/ (after authentication) and
 * GET /containers/{cuid}/logs to its unix socket.
 *
 *   /ws/{cuid}?cols=&rows=&command=&tty=   a process in the container, attached
 *   /ws/{cuid}/logs?tail=&follow=&since=&timestamps=&stream=   the container's log stream
 *   /containers/{cuid}/logs?...            the same as text/plain, for curl
 *
 * One libwebsockets loop owns every session. Output flows Docker → client only as fast as the
 * client takes it: the Docker socket stops being read while a session has more than
 * OUT_HIGH bytes queued. Blocking work runs on worker threads (tasks); their results come
 * back through lws_cancel_service(). */
#include "config.h"
#include "metrics.h"
#include "ws.h"
#include "frames.h"
#include "audit.h"
#include "cm_config.h"
#include "db.h"
#include "json.h"
#include "query.h"
#include "origin.h"
#include "trust.h"

#include <libwebsockets.h>

#include <dirent.h>
#include <grp.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define OUT_HIGH (1u << 20)     /* queued output that pauses the Docker side */
#define OUT_LOW (256u << 10)    /* ... and resumes it */
#define IN_HIGH (1u << 20)      /* queued stdin that pauses the client side */
#define CHUNK 65536             /* raw bytes per output frame at most */
#define NWORKERS 4

enum kind { K_EXEC, K_LOGS_WS, K_LOGS_HTTP };

struct frame {
	struct frame *next;
	size_t len;
	bool ping;
	unsigned char buf[]; /* LWS_PRE + len */
};

struct session {
	struct session *next;
	uint64_t id;
	enum kind kind;
	struct lws *wsi;  /* client side (NULL once gone) */
	struct lws *dwsi; /* Docker side (NULL until adopted / once closed) */
	char cuid[64], container[80], exec_id[80];
	char user[128], request_id[40], remote[64], path[160];
	char *argv_json;
	char logs_query[600];
	bool tty, logs_tty;
	int cols, rows;
	int stream_filter; /* logs: 0 both, 1 stdout, 2 stderr */
	struct proc_id proc;
	struct ws_demux demux;
	unsigned char carry[3][4];
	int carry_len[3];
	/* client-bound frames */
	struct frame *outq, **outq_tail;
	size_t out_bytes;
	bool docker_paused;
	/* Docker-bound stdin */
	struct cm_buf in;
	size_t in_off;
	bool client_paused, want_eof, eof_done;
	/* an incoming message being reassembled */
	struct cm_buf msg;
	bool msg_too_big;
	/* lifecycle */
	int pending_signal;     /* a signal or close that came before the process started */
	bool pending_close;
	bool close_started;
	bool started, stream_ended, close_after_flush;
	int exit_code;
	bool has_exit;
	char close_reason[64];
	int close_status;
	int64_t start_ms, last_rx_ms, ping_sent_ms;
	bool ping_outstanding;
	int64_t bytes_in, bytes_out;
	int http_status;
	char error_code[48];
	char statefile[300];
};

enum task_kind { T_START, T_RESIZE, T_FINISH, T_REAP };

struct task {
	struct task *next;
	enum task_kind kind;
	uint64_t sid;
	enum kind skind;
	char container[80], exec_id[80];
	char *argv_json;
	char logs_query[600];
	bool tty;
	int cols, rows;
	struct proc_id proc;
	char statefile[300]; /* T_REAP: removed once the processes are gone */
	/* results */
	int rc;
	struct cm_error err;
	struct dock_conn conn;
	bool logs_tty;
	int exit_code;
	bool still_running;
};

static struct cm_config cfg;
static struct lws_context *ctx;
static struct lws_vhost *vh_docker;
static struct cm_db db;
static bool db_ok;
static struct session *sessions;
static long nsessions;
static uint64_t next_sid = 1;
static volatile sig_atomic_t stopping, shutdown_asked;
static char state_dir[PATH_MAX];

static pthread_mutex_t q_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t q_cv = PTHREAD_COND_INITIALIZER;
static struct task *todo_head, **todo_tail = &todo_head;
static struct task *done_head, **done_tail = &done_head;
static bool workers_quit;

/* ------------------------------------------------------------------ tasks */

static struct task *task_new(enum task_kind kind, struct session *s)
{
	struct task *t = calloc(1, sizeof *t);
	if (!t)
		return NULL;
	t->kind = kind;
	t->conn.fd = -1;
	if (s) {
		t->sid = s->id;
		t->skind = s->kind;
		t->tty = s->tty;
		t->cols = s->cols;
		t->rows = s->rows;
		t->proc = s->proc;
		snprintf(t->container, sizeof t->container, "%s", s->container);
		snprintf(t->exec_id, sizeof t->exec_id, "%s", s->exec_id);
		snprintf(t->logs_query, sizeof t->logs_query, "%s", s->logs_query);
	}
	return t;
}

static void task_submit(struct task *t)
{
	pthread_mutex_lock(&q_mu);
	t->next = NULL;
	*todo_tail = t;
	todo_tail = &t->next;
	pthread_cond_signal(&q_cv);
	pthread_mutex_unlock(&q_mu);
}

static void task_free(struct task *t)
{
	if (t->conn.fd >= 0)
		close(t->conn.fd);
	free(t->conn.extra);
	free(t->argv_json);
	free(t);
}

static void task_run(struct task *t)
{
	switch (t->kind) {
	case T_START:
		if (t->skind == K_EXEC)
			t->rc = dock_exec_start(t->container, t->argv_json, t->tty, t->cols, t->rows, t->exec_id,
						sizeof t->exec_id, &t->conn, &t->proc, &t->err);
		else
			t->rc = dock_logs_open(t->container, t->logs_query, &t->logs_tty, &t->conn, &t->err);
		break;
	case T_RESIZE:
		t->rc = dock_exec_resize(t->exec_id, t->cols, t->rows, &t->err);
		break;
	case T_FINISH:
		t->exit_code = dock_exec_exit_code(t->exec_id, 3000, &t->still_running, &t->err);
		if (t->still_running) {
			/* the streams closed but the process lives on: end it */
			proc_kill_session(&t->proc);
			t->exit_code = dock_exec_exit_code(t->exec_id, 3000, &t->still_running, &t->err);
		}
		t->rc = t->exit_code < 0 ? -1 : 0;
		break;
	case T_REAP:
		t->rc = proc_kill_session(&t->proc);
		if (t->statefile[0])
			unlink(t->statefile);
		break;
	}
}

static void *worker(void *arg)
{
	(void)arg;
	for (;;) {
		pthread_mutex_lock(&q_mu);
		while (!todo_head && !workers_quit)
			pthread_cond_wait(&q_cv, &q_mu);
		if (workers_quit && !todo_head) {
			pthread_mutex_unlock(&q_mu);
			return NULL;
		}
		struct task *t = todo_head;
		todo_head = t->next;
		if (!todo_head)
			todo_tail = &todo_head;
		pthread_mutex_unlock(&q_mu);
		task_run(t);
		pthread_mutex_lock(&q_mu);
		t->next = NULL;
		*done_tail = t;
		done_tail = &t->next;
		pthread_mutex_unlock(&q_mu);
		lws_cancel_service(ctx);
	}
}

/* ------------------------------------------------------------------ sessions */

static struct session *find_session(uint64_t id)
{
	for (struct session *s = sessions; s; s = s->next)
		if (s->id == id)
			return s;
	return NULL;
}

static void state_write(struct session *s)
{
	if (s->kind != K_EXEC || s->proc.pid <= 1 || !state_dir[0])
		return;
	char line[128];
	int n = snprintf(line, sizeof line, "%d %llu %llu\n", (int)s->proc.pid, s->proc.starttime, s->proc.pidns);
	if (cm_pathf(s->statefile, sizeof s->statefile, "%s/%llu-%d", state_dir, (unsigned long long)s->id,
		     (int)getpid()) < 0 ||
	    cm_write_file_atomic(s->statefile, line, (size_t)n, 0600) < 0)
		s->statefile[0] = '\0';
}

/* Sessions of a previous cm-ws that died with processes still running: end them. */
static void reap_leftovers(void)
{
	DIR *d = opendir(state_dir);
	if (!d)
		return;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		char path[PATH_MAX];
		if (cm_pathf(path, sizeof path, "%s/%s", state_dir, de->d_name) < 0)
			continue;
		char *text = cm_read_file(path, 256, NULL);
		struct proc_id id = {0};
		int pid = 0;
		if (text && sscanf(text, "%d %llu %llu", &pid, &id.starttime, &id.pidns) == 3) {
			id.pid = pid;
			if (proc_same(&id)) {
				int n = proc_kill_session(&id);
				cm_info("ended %d process(es) of a session left by a previous helper", n);
			}
		}
		free(text);
		unlink(path);
	}
	closedir(d);
}

static void audit_session(struct session *s)
{
	char ts[32];
	cm_time_rfc3339(ts, cm_now_ms());
	const char *action = s->kind == K_EXEC ? "ws.exec" : s->kind == K_LOGS_WS ? "ws.logs" : "logs";
	struct cm_audit_row row = {
		.ts = ts, .request_id = s->request_id, .user = s->user, .remote_addr = s->remote, .method = "GET",
		.path = s->path, .cuid = s->cuid, .action = action, .error_code = s->error_code,
		.status = s->http_status, .duration_ms = (double)(cm_monotonic_ms() - s->start_ms),
		.command = s->argv_json, .bytes_in = s->bytes_in, .bytes_out = s->bytes_out, .has_bytes = true,
		.exit_code = s->exit_code, .has_exit = s->has_exit,
	};
	cm_audit_send(cfg.run_dir, &row, db_ok ? &db : NULL);
}

static void drop_docker(struct session *s)
{
	if (s->dwsi) {
		lws_set_opaque_user_data(s->dwsi, NULL);
		lws_set_timeout(s->dwsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
		s->dwsi = NULL;
	}
}

/* The client side is gone: end the process if it still runs, write the audit row, free. */
static void session_end(struct session *s)
{
	drop_docker(s);
	struct task *t = s->kind == K_EXEC && s->proc.pid > 1 && !s->has_exit ? task_new(T_REAP, s) : NULL;
	if (t) {
		snprintf(t->statefile, sizeof t->statefile, "%s", s->statefile);
		task_submit(t);
	} else if (s->statefile[0]) {
		unlink(s->statefile);
	}
	audit_session(s);
	for (struct session **pp = &sessions; *pp; pp = &(*pp)->next)
		if (*pp == s) {
			*pp = s->next;
			break;
		}
	nsessions--;
	cm_metrics_ws_sessions(nsessions);
	while (s->outq) {
		struct frame *f = s->outq;
		s->outq = f->next;
		free(f);
	}
	cm_buf_free(&s->in);
	cm_buf_free(&s->msg);
	free(s->argv_json);
	free(s);
}

static int queue_frame(struct session *s, const void *data, size_t len, bool ping)
{
	struct frame *f = malloc(sizeof *f + LWS_PRE + len);
	if (!f)
		return -1;
	f->next = NULL;
	f->len = len;
	f->ping = ping;
	memcpy(f->buf + LWS_PRE, data, len);
	*s->outq_tail = f;
	s->outq_tail = &f->next;
	s->out_bytes += len;
	if (s->wsi)
		lws_callback_on_writable(s->wsi);
	if (s->out_bytes > OUT_HIGH) {
		if (s->dwsi && !s->docker_paused) {
			lws_rx_flow_control(s->dwsi, 0);
			s->docker_paused = true;
		}
		if (s->wsi && !s->client_paused && s->kind == K_EXEC) {
			/* a client that sends but never reads is stopped too */
			lws_rx_flow_control(s->wsi, 0);
			s->client_paused = true;
		}
	}
	return 0;
}

static void queue_json(struct session *s, struct cm_buf *b)
{
	if (b->data && queue_frame(s, b->data, b->len, false) < 0)
		cm_warn("session %llu: out of memory", (unsigned long long)s->id);
	cm_buf_free(b);
}

static void send_error(struct session *s, const char *code, const char *message)
{
	struct cm_buf b = {0};
	ws_frame_error(&b, code, message);
	queue_json(s, &b);
}

/* Ends the session after what is queued has been sent (close code 1000 unless given). */
static void close_after_flush(struct session *s, int status, const char *reason)
{
	s->close_after_flush = true;
	s->close_status = status;
	snprintf(s->close_reason, sizeof s->close_reason, "%s", reason ? reason : "");
	if (s->wsi)
		lws_callback_on_writable(s->wsi);
}

/* One piece of process output for the client, split at UTF-8 boundaries and at CHUNK. */
static void emit(struct session *s, int stream, const unsigned char *data, size_t len, bool final)
{
	if (!s->stream_filter || s->stream_filter == stream)
		s->bytes_out += (int64_t)len;
	if (s->kind == K_LOGS_HTTP) {
		if (!s->stream_filter || s->stream_filter == stream)
			for (size_t off = 0; off < len; off += CHUNK)
				queue_frame(s, data + off, len - off < CHUNK ? len - off : CHUNK, false);
		return;
	}
	if (s->stream_filter && s->stream_filter != stream)
		return;
	const char *type = stream == 2 ? "stderr" : "stdout";
	while (len > 0 || (final && s->carry_len[stream])) {
		unsigned char buf[CHUNK + 4];
		size_t c = (size_t)s->carry_len[stream];
		if (c)
			memcpy(buf, s->carry[stream], c);
		size_t take = len < CHUNK ? len : CHUNK;
		if (take) {
			memcpy(buf + c, data, take);
			data += take;
		}
		len -= take;
		size_t n = c + take;
		size_t cut = final && len == 0 ? n : ws_utf8_boundary(buf, n);
		s->carry_len[stream] = (int)(n - cut);
		memcpy(s->carry[stream], buf + cut, n - cut);
		if (cut > 0) {
			/* text before the first invalid byte stays readable; from there on, base64 */
			size_t text = cm_valid_utf8((const char *)buf, cut) ? cut : ws_utf8_valid_prefix(buf, cut);
			struct cm_buf b = {0};
			if (text > 0) {
				ws_frame_data(&b, type, buf, text);
				queue_json(s, &b);
			}
			if (text < cut) {
				ws_frame_data(&b, type, buf + text, cut - text);
				queue_json(s, &b);
			}
		}
		if (final && len == 0)
			break;
	}
}

static int demux_cb(int stream, const unsigned char *data, size_t n, void *ud)
{
	emit(ud, stream, data, n, false);
	return 0;
}

static void docker_bytes(struct session *s, const unsigned char *data, size_t len)
{
	bool muxed = s->kind == K_EXEC ? !s->tty : !s->logs_tty;
	if (!muxed) {
		emit(s, 1, data, len, false);
		return;
	}
	if (ws_demux_feed(&s->demux, data, len, demux_cb, s) < 0) {
		send_error(s, "DOCKER_BAD_RESPONSE", "malformed stream from the Docker engine");
		drop_docker(s);
		close_after_flush(s, LWS_CLOSE_STATUS_UNEXPECTED_CONDITION, "bad stream");
	}
}

/* The Docker stream ended: flush, then learn the exit code (exec) or finish (logs). */
static void stream_ended(struct session *s)
{
	if (s->stream_ended)
		return;
	s->stream_ended = true;
	if (s->kind != K_LOGS_HTTP)
		for (int st = 1; st <= 2; st++)
			emit(s, st, NULL, 0, true);
	if (s->kind == K_EXEC) {
		struct task *t = task_new(T_FINISH, s);
		if (t) {
			task_submit(t);
			return;
		}
	}
	close_after_flush(s, LWS_CLOSE_STATUS_NORMAL, NULL);
}

static void pump_stdin(struct session *s)
{
	if (s->dwsi && (s->in.len > s->in_off || (s->want_eof && !s->eof_done)))
		lws_callback_on_writable(s->dwsi);
}

static void on_task_done(struct task *t)
{
	struct session *s = find_session(t->sid);
	if (!s) {
		/* the client left while we worked: end what was started for it */
		if (t->kind == T_START && t->skind == K_EXEC && t->rc == 0 && t->proc.pid > 1) {
			struct task *r = task_new(T_REAP, NULL);
			if (r) {
				r->proc = t->proc;
				task_submit(r);
			}
		}
		return;
	}
	switch (t->kind) {
	case T_START:
		if (t->rc < 0) {
			s->has_exit = false;
			snprintf(s->error_code, sizeof s->error_code, "%s", t->err.code);
			send_error(s, t->err.code, t->err.message);
			close_after_flush(s, LWS_CLOSE_STATUS_UNEXPECTED_CONDITION, "start failed");
			return;
		}
		s->started = true;
		snprintf(s->exec_id, sizeof s->exec_id, "%s", t->exec_id);
		s->proc = t->proc;
		s->logs_tty = t->logs_tty;
		state_write(s);
		struct lws *d = lws_adopt_descriptor_vhost(vh_docker, LWS_ADOPT_SOCKET,
							  (lws_sock_file_fd_type){.sockfd = t->conn.fd}, "cm-docker", NULL);
		if (!d) {
			send_error(s, "INTERNAL", "cannot watch the Docker connection");
			close_after_flush(s, LWS_CLOSE_STATUS_UNEXPECTED_CONDITION, "internal");
			return; /* the fd stays with the task and is closed there */
		}
		t->conn.fd = -1;
		s->dwsi = d;
		lws_set_opaque_user_data(d, s);
		if (t->conn.extra_len)
			docker_bytes(s, t->conn.extra, t->conn.extra_len);
		if (s->out_bytes > OUT_HIGH) {
			lws_rx_flow_control(d, 0);
			s->docker_paused = true;
		}
		pump_stdin(s);
		if (s->pending_close && s->proc.pid > 1) {
			struct task *r = task_new(T_REAP, s);
			if (r)
				task_submit(r);
		} else if (s->pending_signal && s->proc.pid > 1 && proc_signal(&s->proc, s->tty, s->pending_signal) < 0) {
			send_error(s, "NOT_RUNNING", "the process has already exited");
		}
		break;
	case T_RESIZE:
		if (t->rc < 0)
			send_error(s, "RESIZE_FAILED", t->err.message);
		break;
	case T_FINISH:
		if (t->rc < 0) {
			send_error(s, t->err.code[0] ? t->err.code : "DOCKER_UNAVAILABLE", t->err.message);
			close_after_flush(s, LWS_CLOSE_STATUS_UNEXPECTED_CONDITION, "exit status unknown");
			return;
		}
		s->has_exit = true;
		s->exit_code = t->exit_code;
		if (s->statefile[0]) {
			unlink(s->statefile);
			s->statefile[0] = '\0';
		}
		struct cm_buf b = {0};
		ws_frame_exit(&b, t->exit_code);
		queue_json(s, &b);
		close_after_flush(s, LWS_CLOSE_STATUS_NORMAL, NULL);
		break;
	case T_REAP:
		break;
	}
}

static void drain_done(void)
{
	pthread_mutex_lock(&q_mu);
	struct task *list = done_head;
	done_head = NULL;
	done_tail = &done_head;
	pthread_mutex_unlock(&q_mu);
	while (list) {
		struct task *t = list;
		list = t->next;
		on_task_done(t);
		task_free(t);
	}
}

/* ------------------------------------------------------------------ client commands */

static void handle_message(struct session *s, const char *msg, size_t len)
{
	struct ws_cmd cmd;
	char why[200];
	if (s->kind != K_EXEC) {
		/* log streams take no input; a close request is honoured */
		if (ws_cmd_parse(msg, len, &cmd, why, sizeof why) == 0 && cmd.type == WS_CMD_CLOSE) {
			ws_cmd_free(&cmd);
			close_after_flush(s, LWS_CLOSE_STATUS_NORMAL, NULL);
			return;
		}
		ws_cmd_free(&cmd);
		send_error(s, "BAD_FRAME", "a log stream takes no input other than {\"type\":\"close\"}");
		return;
	}
	int prc = ws_cmd_parse(msg, len, &cmd, why, sizeof why);
	if (prc < 0) {
		send_error(s, prc == WS_CMD_TOO_DEEP ? "JSON_TOO_DEEP" : "BAD_FRAME", why);
		return;
	}
	switch (cmd.type) {
	case WS_CMD_STDIN:
		if (s->want_eof) {
			send_error(s, "BAD_FRAME", "stdin was already closed with an eof frame");
			break;
		}
		if (cm_buf_append(&s->in, cmd.data, cmd.len) < 0) {
			send_error(s, "INTERNAL", "out of memory");
			break;
		}
		s->bytes_in += (int64_t)cmd.len;
		if (s->in.len - s->in_off > IN_HIGH && s->wsi && !s->client_paused) {
			lws_rx_flow_control(s->wsi, 0);
			s->client_paused = true;
		}
		pump_stdin(s);
		break;
	case WS_CMD_RESIZE:
		if (!s->tty) {
			send_error(s, "NO_TTY", "resize needs a session with a TTY (tty=1)");
			break;
		}
		s->cols = cmd.cols;
		s->rows = cmd.rows;
		if (s->started) {
			struct task *t = task_new(T_RESIZE, s);
			if (t)
				task_submit(t);
		}
		break;
	case WS_CMD_SIGNAL:
		if (!s->started && !s->has_exit) {
			s->pending_signal = cmd.signo;
		} else if (s->has_exit) {
			send_error(s, "NOT_RUNNING", "the process is not running");
		} else if (s->proc.pid > 1) {
			if (proc_signal(&s->proc, s->tty, cmd.signo) < 0)
				send_error(s, "NOT_RUNNING", "the process has already exited");
		} else if (s->tty && (cmd.signo == SIGINT || cmd.signo == SIGQUIT)) {
			/* no host pid known: the terminal's own keys do the same */
			cm_buf_append(&s->in, cmd.signo == SIGINT ? "\003" : "\034", 1);
			pump_stdin(s);
		} else {
			send_error(s, "SIGNAL_FAILED", "the process cannot be signalled");
		}
		break;
	case WS_CMD_EOF:
		s->want_eof = true;
		pump_stdin(s);
		break;
	case WS_CMD_CLOSE:
		if (!s->started && !s->has_exit) {
			s->pending_close = true;
		} else if (s->started && s->proc.pid > 1 && !s->has_exit) {
			/* end the process; its exit arrives through the normal path */
			struct task *t = task_new(T_REAP, s);
			if (t)
				task_submit(t);
		} else {
			close_after_flush(s, LWS_CLOSE_STATUS_NORMAL, NULL);
		}
		break;
	}
	ws_cmd_free(&cmd);
}

/* ------------------------------------------------------------------ request checks */

void ws_header(struct lws *wsi, const char *name, char *out, size_t outsz)
{
	out[0] = '\0';
	int n = lws_hdr_custom_copy(wsi, out, (int)outsz, name, (int)strlen(name));
	if (n < 0)
		out[0] = '\0';
}

int ws_site_check(struct lws *wsi, const struct cm_config *c, const char *method, const char *path, bool upgrade,
		  struct cm_error *err)
{
	char origin[512] = "", site[32] = "", host[300] = "", scheme[8] = "", server_name[256] = "";
	if (lws_hdr_total_length(wsi, WSI_TOKEN_ORIGIN) > 0) {
		if (lws_hdr_copy(wsi, origin, sizeof origin, WSI_TOKEN_ORIGIN) < 0)
			snprintf(origin, sizeof origin, "%s", "(too long)"); /* refused as unparsable */
	}
	ws_header(wsi, "sec-fetch-site:", site, sizeof site);
	ws_header(wsi, "x-cm-host:", host, sizeof host);
	ws_header(wsi, "x-cm-scheme:", scheme, sizeof scheme);
	ws_header(wsi, "x-cm-server-name:", server_name, sizeof server_name);
	struct cm_site_req q = {
		.method = method,
		.path = path,
		.host = host,
		.scheme = scheme,
		.server_name = server_name,
		.origin = origin,
		.fetch_site = site,
		.upgrade = upgrade,
	};
	return cm_site_check(c, &q, CM_CHECK_HOST | CM_CHECK_ORIGIN, err);
}

/* nginx's secret of this start (RUN_DIR/proxy.secret), read once at start */
static char proxy_secret[CM_PROXY_SECRET_HEX + 1];

bool ws_proxy_trusted(struct lws *wsi)
{
	char got[CM_PROXY_SECRET_HEX + 2];
	ws_header(wsi, CM_PROXY_SECRET_LWS_HEADER, got, sizeof got);
	bool trusted = cm_proxy_secret_ok(proxy_secret, got);
	explicit_bzero(got, sizeof got);
	if (!trusted) {
		/* another www-data process, or an nginx not reloaded since the secret changed; at most
		 * one line a minute (the secret itself is never logged) */
		static int64_t last;
		int64_t now = cm_monotonic_ms();
		if (!last || now - last > 60000) {
			last = now;
			cm_warn("a request without this start's proxy secret was refused (401 UNTRUSTED_PROXY): not from "
				"this stack's nginx, or nginx was not reloaded after the secret changed");
		}
	}
	return trusted;
}

static bool parse_bool(const char *v, bool *out)
{
	if (!strcmp(v, "1") || !strcmp(v, "true"))
		*out = true;
	else if (!strcmp(v, "0") || !strcmp(v, "false"))
		*out = false;
	else
		return false;
	return true;
}

static int parse_dim(const char *v, int *out)
{
	char *end;
	long n = strtol(v, &end, 10);
	if (!*v || *end || n < 1 || n > 10000)
		return -1;
	*out = (int)n;
	return 0;
}

/* command= : a JSON array of strings, or a string for /bin/sh -c. */
static char *parse_command(const char *v, struct cm_error *err)
{
	struct cm_error e2;
	yajl_val j = v[0] == '[' ? cm_json_parse(v, strlen(v), &e2) : NULL;
	yajl_gen g = cm_jg_new();
	if (!g) {
		if (j)
			yajl_tree_free(j);
		cm_err_internal(err, "out of memory");
		return NULL;
	}
	yajl_gen_array_open(g);
	if (j) {
		if (!YAJL_IS_ARRAY(j) || j->u.array.len == 0 || j->u.array.len > 256) {
			yajl_tree_free(j);
			yajl_gen_free(g);
			cm_err_validation(err, "INVALID_VALUE", "command", "command must be a non-empty JSON array of strings or a string");
			return NULL;
		}
		for (size_t i = 0; i < j->u.array.len; i++) {
			yajl_val a = j->u.array.values[i];
			if (!YAJL_IS_STRING(a)) {
				yajl_tree_free(j);
				yajl_gen_free(g);
				cm_err_validation(err, "INVALID_VALUE", "command", "command array items must be strings");
				return NULL;
			}
			cm_jg_str(g, YAJL_GET_STRING(a));
		}
		yajl_tree_free(j);
	} else if (v[0] == '[') {
		yajl_gen_free(g);
		cm_err_validation(err, "INVALID_VALUE", "command", "command looks like a JSON array but is not valid JSON");
		return NULL;
	} else {
		if (!v[0]) {
			yajl_gen_free(g);
			cm_err_validation(err, "INVALID_VALUE", "command", "command is empty");
			return NULL;
		}
		cm_jg_str(g, "/bin/sh");
		cm_jg_str(g, "-c");
		cm_jg_str(g, v);
	}
	yajl_gen_array_close(g);
	return cm_jg_finish(g);
}

/* The Docker logs query from ours (tail, since, timestamps, follow); stream picks one side. */
static int logs_query(struct session *s, const struct cm_query *q, struct cm_error *err)
{
	const char *tail = cm_query_get(q, "tail");
	const char *since = cm_query_get(q, "since");
	const char *ts = cm_query_get(q, "timestamps");
	const char *follow = cm_query_get(q, "follow");
	const char *stream = cm_query_get(q, "stream");
	bool b_ts = false, b_follow = s->kind == K_LOGS_WS;
	char tailv[24] = "all", sincev[40] = "0";
	if (tail) {
		char *end;
		long long n = strtoll(tail, &end, 10);
		if (!strcmp(tail, "all"))
			;
		else if (!*tail || *end || n < 0 || n > 100000000)
			return cm_err_validation(err, "INVALID_VALUE", "tail", "tail must be a number of lines or \"all\"");
		else
			snprintf(tailv, sizeof tailv, "%lld", n);
	}
	if (since) {
		char *end;
		double d = strtod(since, &end);
		if (*since && !*end && d >= 0 && d < 1e11) {
			snprintf(sincev, sizeof sincev, "%.6f", d);
		} else {
			int64_t ms = cm_parse_docker_time(since);
			if (ms <= 0)
				return cm_err_validation(err, "INVALID_VALUE", "since",
							 "since must be a Unix time in seconds or an RFC 3339 time");
			snprintf(sincev, sizeof sincev, "%lld.%03lld", (long long)(ms / 1000), (long long)(ms % 1000));
		}
	}
	if (ts && !parse_bool(ts, &b_ts))
		return cm_err_validation(err, "INVALID_VALUE", "timestamps", "timestamps must be 0 or 1");
	if (follow && !parse_bool(follow, &b_follow))
		return cm_err_validation(err, "INVALID_VALUE", "follow", "follow must be 0 or 1");
	s->stream_filter = 0;
	if (stream) {
		if (!strcmp(stream, "stdout"))
			s->stream_filter = 1;
		else if (!strcmp(stream, "stderr"))
			s->stream_filter = 2;
		else if (strcmp(stream, "all") && strcmp(stream, "both"))
			return cm_err_validation(err, "INVALID_VALUE", "stream", "stream must be stdout, stderr or all");
	}
	snprintf(s->logs_query, sizeof s->logs_query, "stdout=%d&stderr=%d&follow=%d&tail=%s&since=%s&timestamps=%d",
		 s->stream_filter != 2, s->stream_filter != 1, b_follow, tailv, sincev, b_ts);
	return 0;
}

/* Looks the container up: 404 when unknown, 422 for a terminal on one that is not running. */
static int lookup_container(struct session *s, struct cm_error *err)
{
	if (!cm_valid_cuid(s->cuid))
		return cm_err_validation(err, "INVALID_CUID", "cuid", "not a valid container id");
	if (!db_ok)
		return cm_err_set(err, 503, "unavailable", "DATABASE_UNAVAILABLE", NULL, "the database cannot be read");
	sqlite3_stmt *st = cm_db_stmt(&db, "SELECT coalesce(docker_id, ''), status FROM containers WHERE cuid = ?", err);
	if (!st)
		return -1;
	sqlite3_bind_text(st, 1, s->cuid, -1, SQLITE_TRANSIENT);
	int rc = sqlite3_step(st);
	char status[32] = "";
	if (rc == SQLITE_ROW) {
		snprintf(s->container, sizeof s->container, "%s", (const char *)sqlite3_column_text(st, 0));
		snprintf(status, sizeof status, "%s", (const char *)sqlite3_column_text(st, 1));
	}
	sqlite3_reset(st);
	if (rc == SQLITE_DONE)
		return cm_err_set(err, 404, "not_found", "CONTAINER_NOT_FOUND", NULL, "container %s not found", s->cuid);
	if (rc != SQLITE_ROW)
		return cm_db_fail(&db, err, "read container");
	if (!s->container[0] || strspn(s->container, "0123456789abcdef") != strlen(s->container)) {
		if (s->kind != K_EXEC)
			return cm_err_set(err, 409, "conflict", "CONTAINER_NOT_READY", NULL, "container %s is still being created",
					  s->cuid);
		return cm_err_set(err, 422, "state_error", "CONTAINER_NOT_RUNNING", NULL,
				  "container %s is %s, not running", s->cuid, status);
	}
	if (s->kind == K_EXEC && strcmp(status, "running") != 0)
		return cm_err_set(err, 422, "state_error", "CONTAINER_NOT_RUNNING", NULL,
				  "container %s is %s; a terminal needs it running", s->cuid, status);
	return 0;
}

/* Builds a session from the request (path, query, headers); -1 with err on bad input. */
static struct session *session_from_request(struct lws *wsi, const char *uri, bool upgrade, struct cm_error *err)
{
	struct session *s = calloc(1, sizeof *s);
	if (!s) {
		cm_err_internal(err, "out of memory");
		return NULL;
	}
	s->outq_tail = &s->outq;
	s->start_ms = s->last_rx_ms = cm_monotonic_ms();
	s->in.limit = 64u << 20;
	s->cols = 80;
	s->rows = 24;
	s->tty = true;
	ws_header(wsi, "x-cm-user:", s->user, sizeof s->user);
	ws_header(wsi, "x-request-id:", s->request_id, sizeof s->request_id);
	ws_header(wsi, "x-cm-remote-addr:", s->remote, sizeof s->remote);
	if (!s->request_id[0])
		cm_uuid4(s->request_id);
	snprintf(s->path, sizeof s->path, "%.150s", uri);
	char qs[2048];
	ws_header(wsi, "x-cm-query:", qs, sizeof qs);
	/* only nginx knows the secret: the socket is open to the whole www-data group, and any
	 * process in it could name any user */
	if (!ws_proxy_trusted(wsi)) {
		s->user[0] = '\0';
		cm_err_set(err, 401, "auth_error", "UNTRUSTED_PROXY", NULL, "the request did not come through this stack's nginx");
		return s;
	}
	/* nginx names the user once the application accepted the credentials; a request that
	 * reached the socket some other way has none */
	if (!s->user[0]) {
		cm_err_set(err, 401, "auth_error", "AUTH_REQUIRED", NULL, "Authentication required");
		return s;
	}
	/* a terminal opened by another site's page would run that site's commands */
	if (ws_site_check(wsi, &cfg, "GET", uri, upgrade, err) < 0)
		return s;

	const char *rest = NULL;
	if (!strncmp(uri, "/ws/", 4)) {
		rest = uri + 4;
		s->kind = K_EXEC;
	} else if (!strncmp(uri, "/containers/", 12)) {
		rest = uri + 12;
		s->kind = K_LOGS_HTTP;
	}
	const char *slash = rest ? strchr(rest, '/') : NULL;
	size_t clen = slash ? (size_t)(slash - rest) : rest ? strlen(rest) : 0;
	if (!rest || clen == 0 || clen >= sizeof s->cuid) {
		cm_err_set(err, 404, "not_found", "ROUTE_NOT_FOUND", NULL, "no such endpoint");
		return s;
	}
	memcpy(s->cuid, rest, clen);
	s->cuid[clen] = '\0';
	if (s->kind == K_EXEC && slash && !strcmp(slash, "/logs"))
		s->kind = K_LOGS_WS;
	else if ((s->kind == K_EXEC && slash) || (s->kind == K_LOGS_HTTP && (!slash || strcmp(slash, "/logs")))) {
		cm_err_set(err, 404, "not_found", "ROUTE_NOT_FOUND", NULL, "no such endpoint");
		return s;
	}
	if (s->kind != K_LOGS_HTTP && !upgrade) {
		cm_err_set(err, 426, "validation_error", "WEBSOCKET_REQUIRED", NULL,
			   "this endpoint speaks WebSocket: send Connection: Upgrade and Upgrade: websocket");
		return s;
	}
	struct cm_query q;
	if (cm_query_parse(&q, qs, err) < 0)
		return s;
	static const char *const exec_params[] = {"cols", "rows", "command", "tty", NULL};
	static const char *const logs_params[] = {"tail", "follow", "since", "timestamps", "stream", NULL};
	const char *unknown = cm_query_unknown(&q, s->kind == K_EXEC ? exec_params : logs_params);
	if (unknown) {
		char k[80];
		snprintf(k, sizeof k, "%.64s", unknown);
		cm_err_set(err, 400, "validation_error", "UNKNOWN_PARAMETER", k, "unknown query parameter %s", k);
		return s;
	}
	if (s->kind == K_EXEC) {
		const char *v;
		if ((v = cm_query_get(&q, "cols")) && parse_dim(v, &s->cols) < 0) {
			cm_err_validation(err, "INVALID_VALUE", "cols", "cols must be an integer from 1 to 10000");
			return s;
		}
		if ((v = cm_query_get(&q, "rows")) && parse_dim(v, &s->rows) < 0) {
			cm_err_validation(err, "INVALID_VALUE", "rows", "rows must be an integer from 1 to 10000");
			return s;
		}
		if ((v = cm_query_get(&q, "tty")) && !parse_bool(v, &s->tty)) {
			cm_err_validation(err, "INVALID_VALUE", "tty", "tty must be 0 or 1");
			return s;
		}
		v = cm_query_get(&q, "command");
		s->argv_json = v ? parse_command(v, err) : strdup("[\"/bin/sh\"]");
		if (!s->argv_json) {
			if (!v)
				cm_err_internal(err, "out of memory");
			return s;
		}
	} else if (logs_query(s, &q, err) < 0) {
		return s;
	}
	if (lookup_container(s, err) < 0)
		return s;
	if (nsessions >= cfg.ws_max_sessions) {
		cm_err_set(err, 503, "unavailable", "TOO_MANY_SESSIONS", NULL, "%ld sessions are open; try again later",
			   nsessions);
		return s;
	}
	cm_err_clear(err);
	return s;
}

static void session_link(struct session *s, struct lws *wsi)
{
	s->id = next_sid++;
	s->wsi = wsi;
	s->next = sessions;
	sessions = s;
	nsessions++;
	cm_metrics_ws_sessions(nsessions);
	lws_set_opaque_user_data(wsi, s);
}

static const char *reason_phrase(int status)
{
	switch (status) {
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 204: return "No Content";
	case 200: return "OK";
	case 404: return "Not Found";
	case 408: return "Request Timeout";
	case 413: return "Payload Too Large";
	case 403: return "Forbidden";
	case 421: return "Misdirected Request";
	case 405: return "Method Not Allowed";
	case 409: return "Conflict";
	case 422: return "Unprocessable Entity";
	case 426: return "Upgrade Required";
	case 500: return "Internal Server Error";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	default: return "Error";
	}
}

/* Writes a whole HTTP answer: status line, Content-Length (none for 204), type, request id.
 * Returns 0, or -1 when it could not be written. */
int ws_http_reply(struct lws *wsi, int status, const char *ctype, const char *body, size_t blen, const char *request_id)
{
	unsigned char *buf = malloc(LWS_PRE + 1024 + blen + 1);
	if (!buf)
		return -1;
	unsigned char *start = buf + LWS_PRE, *p = start, *end = start + 1024;
	int rc = -1;
	/* the status line by hand: lws has no reason phrase for 422, 426 and some others */
	char sl[96];
	int sln = snprintf(sl, sizeof sl, "HTTP/1.1 %d %s\r\n", status, reason_phrase(status));
	memcpy(p, sl, (size_t)sln);
	p += sln;
	if ((status == 204 || !lws_add_http_header_content_length(wsi, blen, &p, end)) &&
	    (!ctype || !lws_add_http_header_by_name(wsi, (const unsigned char *)"content-type:", (const unsigned char *)ctype,
						    (int)strlen(ctype), &p, end)) &&
	    !lws_add_http_header_by_name(wsi, (const unsigned char *)"x-request-id:", (const unsigned char *)request_id,
					 (int)strlen(request_id), &p, end) &&
	    (status != 426 || !lws_add_http_header_by_name(wsi, (const unsigned char *)"upgrade:",
							   (const unsigned char *)"websocket", 9, &p, end)) &&
	    (status != 426 || !lws_add_http_header_by_name(wsi, (const unsigned char *)"sec-websocket-version:",
							   (const unsigned char *)"13", 2, &p, end)) &&
	    !lws_finalize_write_http_header(wsi, start, &p, end)) {
		if (blen)
			memcpy(start, body, blen);
		rc = lws_write(wsi, start, blen, LWS_WRITE_HTTP_FINAL) == (int)blen ? 0 : -1;
	}
	free(buf);
	return rc;
}

/* Writes an HTTP error answer (JSON body). Returns 0, or -1 when even that failed. */
static int http_error(struct lws *wsi, const struct cm_error *err, const char *request_id, const char *cuid)
{
	char *body = cm_error_json(err, request_id, cuid, 0);
	int status = err->status >= 400 && err->status <= 599 ? err->status : 500;
	int rc = ws_http_reply(wsi, status, "application/json", body ? body : "{}", body ? strlen(body) : 2, request_id);
	free(body);
	return rc;
}

/* A request turned away before any session: still one audit row. */
static void audit_rejected(struct session *s, const struct cm_error *err)
{
	s->http_status = err->status;
	snprintf(s->error_code, sizeof s->error_code, "%s", err->code);
	s->start_ms = s->start_ms ? s->start_ms : cm_monotonic_ms();
	s->has_exit = false;
	audit_session(s);
}

static void session_free_unlinked(struct session *s)
{
	free(s->argv_json);
	free(s);
}

/* ------------------------------------------------------------------ lws callbacks */

static void start_session(struct session *s)
{
	struct task *t = task_new(T_START, s);
	if (!t) {
		send_error(s, "INTERNAL", "out of memory");
		close_after_flush(s, LWS_CLOSE_STATUS_UNEXPECTED_CONDITION, "internal");
		return;
	}
	t->argv_json = s->argv_json ? strdup(s->argv_json) : NULL;
	task_submit(t);
}

/* One queued frame to the client per writable callback. Returns -1 to close. */
static int client_writable(struct session *s, struct lws *wsi)
{
	if (s->ping_outstanding && s->ping_sent_ms == 0) {
		/* with a payload: lws hands zero-length pongs to nobody */
		unsigned char pb[LWS_PRE + 8];
		memcpy(pb + LWS_PRE, "cm-ping", 7);
		if (lws_write(wsi, pb + LWS_PRE, 7, LWS_WRITE_PING) < 0)
			return -1;
		s->ping_sent_ms = cm_monotonic_ms();
		if (s->outq || s->close_after_flush)
			lws_callback_on_writable(wsi);
		return 0;
	}
	struct frame *f = s->outq;
	if (f) {
		s->outq = f->next;
		if (!s->outq)
			s->outq_tail = &s->outq;
		s->out_bytes -= f->len;
		enum lws_write_protocol wp = s->kind == K_LOGS_HTTP ? LWS_WRITE_HTTP : LWS_WRITE_TEXT;
		int n = lws_write(wsi, f->buf + LWS_PRE, f->len, wp);
		free(f);
		if (n < 0)
			return -1;
		if (s->out_bytes < OUT_LOW) {
			if (s->docker_paused && s->dwsi) {
				lws_rx_flow_control(s->dwsi, 1);
				s->docker_paused = false;
			}
			if (s->client_paused && s->in.len - s->in_off <= IN_HIGH) {
				lws_rx_flow_control(wsi, 1);
				s->client_paused = false;
			}
		}
		if (s->outq || s->close_after_flush)
			lws_callback_on_writable(wsi);
		return 0;
	}
	if (s->close_after_flush) {
		if (s->kind == K_LOGS_HTTP) {
			unsigned char eb[LWS_PRE + 1];
			lws_write(wsi, eb + LWS_PRE, 0, LWS_WRITE_HTTP_FINAL);
			return -1;
		}
		/* once: lws then sends the close frame and waits (5 s at most) for the client's reply
		 * before it drops the TCP connection (RFC 6455 7.1.1); a second -1 would cut that short */
		if (s->close_started)
			return 0;
		s->close_started = true;
		lws_close_reason(wsi, (enum lws_close_status)s->close_status, (unsigned char *)s->close_reason,
				 strlen(s->close_reason));
		return -1;
	}
	return 0;
}

static int cb_main(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
	(void)user;
	struct session *s = lws_get_opaque_user_data(wsi);
	switch (reason) {
	case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
		drain_done();
		return 0;

	case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE: {
		char uri[512];
		if (lws_hdr_copy(wsi, uri, sizeof uri, WSI_TOKEN_GET_URI) <= 0)
			return -1;
		struct cm_error err = {0};
		struct session *ns = session_from_request(wsi, uri, true, &err);
		if (!ns)
			return -1;
		/* a handshake lws would drop without a word gets an answer (RFC 6455 4.2.1, 4.4) */
		char ver[8] = "";
		if (lws_hdr_copy(wsi, ver, sizeof ver, WSI_TOKEN_VERSION) < 0)
			ver[0] = '\0';
		if (!err.status && lws_hdr_total_length(wsi, WSI_TOKEN_KEY) <= 0)
			cm_err_set(&err, 400, "validation_error", "BAD_HANDSHAKE", NULL, "Sec-WebSocket-Key is missing");
		else if (!err.status && strcmp(ver, "13") != 0)
			cm_err_set(&err, 426, "validation_error", "BAD_HANDSHAKE", NULL,
				   "Sec-WebSocket-Version must be 13");
		if (err.status) {
			audit_rejected(ns, &err);
			int rc = http_error(wsi, &err, ns->request_id, ns->cuid);
			session_free_unlinked(ns);
			return rc < 0 ? -1 : 1;
		}
		ns->http_status = 101;
		session_link(ns, wsi);
		return 0;
	}

	case LWS_CALLBACK_HTTP: {
		const char *uri = in ? (const char *)in : "/";
		struct cm_error err = {0};
		struct session *ns = NULL;
		if (lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI) <= 0)
			cm_err_set(&err, 405, "method_not_allowed", "METHOD_NOT_ALLOWED", NULL, "only GET is allowed here");
		else
			ns = session_from_request(wsi, uri, false, &err);
		if (!ns && !err.status)
			return -1;
		if (err.status) {
			char rid[40] = "";
			if (ns)
				snprintf(rid, sizeof rid, "%s", ns->request_id);
			if (ns)
				audit_rejected(ns, &err);
			int rc = http_error(wsi, &err, rid, ns ? ns->cuid : NULL);
			if (ns)
				session_free_unlinked(ns);
			if (rc < 0 || lws_http_transaction_completed(wsi))
				return -1;
			return 0;
		}
		/* the logs twin: headers now, the body as Docker sends it, end when Docker ends */
		unsigned char hb[LWS_PRE + 512], *start = hb + LWS_PRE, *p = start, *end = hb + sizeof hb - 1;
		if (lws_add_http_common_headers(wsi, HTTP_STATUS_OK, "text/plain; charset=utf-8", LWS_ILLEGAL_HTTP_CONTENT_LEN,
						&p, end) ||
		    lws_add_http_header_by_name(wsi, (const unsigned char *)"x-request-id:",
						(const unsigned char *)ns->request_id, (int)strlen(ns->request_id), &p, end) ||
		    lws_add_http_header_by_name(wsi, (const unsigned char *)"x-accel-buffering:", (const unsigned char *)"no", 2,
						&p, end) ||
		    lws_finalize_write_http_header(wsi, start, &p, end)) {
			session_free_unlinked(ns);
			return -1;
		}
		ns->http_status = 200;
		/* a followed log may stay quiet for long: no lws transaction timeout on it */
		lws_set_timeout(wsi, NO_PENDING_TIMEOUT, 0);
		session_link(ns, wsi);
		start_session(ns);
		return 0;
	}

	case LWS_CALLBACK_ESTABLISHED:
		if (!s)
			return -1;
		start_session(s);
		return 0;

	case LWS_CALLBACK_RECEIVE:
		if (!s)
			return -1;
		s->last_rx_ms = cm_monotonic_ms();
		s->ping_outstanding = false;
		if (lws_frame_is_binary(wsi)) {
			if (lws_is_final_fragment(wsi))
				send_error(s, "BAD_FRAME", "binary frames are not accepted: send JSON text frames");
			return 0;
		}
		if (!s->msg_too_big && s->msg.len + len > (size_t)cfg.ws_max_frame) {
			s->msg_too_big = true;
			cm_buf_free(&s->msg);
		}
		if (!s->msg_too_big && cm_buf_append(&s->msg, in, len) < 0) {
			s->msg_too_big = true;
			cm_buf_free(&s->msg);
		}
		if (lws_is_final_fragment(wsi) && !lws_remaining_packet_payload(wsi)) {
			if (s->msg_too_big) {
				char m[120];
				snprintf(m, sizeof m, "message larger than %ld bytes refused", cfg.ws_max_frame);
				send_error(s, "FRAME_TOO_LARGE", m);
			} else {
				handle_message(s, s->msg.data ? s->msg.data : "", s->msg.len);
			}
			cm_buf_free(&s->msg);
			s->msg_too_big = false;
		}
		return 0;

	case LWS_CALLBACK_RECEIVE_PONG:
		if (s) {
			s->last_rx_ms = cm_monotonic_ms();
			s->ping_outstanding = false;
			s->ping_sent_ms = 0;
		}
		return 0;

	case LWS_CALLBACK_SERVER_WRITEABLE:
	case LWS_CALLBACK_HTTP_WRITEABLE:
		if (!s)
			return 0;
		return client_writable(s, wsi);

	case LWS_CALLBACK_CLOSED:
	case LWS_CALLBACK_CLOSED_HTTP:
	case LWS_CALLBACK_WSI_DESTROY:
		if (s) {
			lws_set_opaque_user_data(wsi, NULL);
			s->wsi = NULL;
			session_end(s);
		}
		return 0;

	default:
		break;
	}
	return lws_callback_http_dummy(wsi, reason, user, in, len);
}

static int cb_docker(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
	(void)user;
	struct session *s = lws_get_opaque_user_data(wsi);
	switch (reason) {
	case LWS_CALLBACK_RAW_RX:
		if (s && len)
			docker_bytes(s, in, len);
		return 0;
	case LWS_CALLBACK_RAW_WRITEABLE:
		if (!s)
			return 0;
		if (s->in.len > s->in_off) {
			size_t n = s->in.len - s->in_off;
			if (n > 65536)
				n = 65536;
			unsigned char *buf = malloc(LWS_PRE + n);
			if (!buf)
				return -1;
			memcpy(buf + LWS_PRE, s->in.data + s->in_off, n);
			int w = lws_write(wsi, buf + LWS_PRE, n, LWS_WRITE_RAW);
			free(buf);
			if (w < 0)
				return -1;
			s->in_off += n;
			if (s->in_off == s->in.len) {
				cm_buf_free(&s->in);
				s->in_off = 0;
			}
			if (s->client_paused && s->in.len - s->in_off <= IN_HIGH / 2 && s->out_bytes < OUT_LOW && s->wsi) {
				lws_rx_flow_control(s->wsi, 1);
				s->client_paused = false;
			}
			if (s->in.len > s->in_off || (s->want_eof && !s->eof_done))
				lws_callback_on_writable(wsi);
			return 0;
		}
		if (s->want_eof && !s->eof_done) {
			s->eof_done = true;
			shutdown(lws_get_socket_fd(wsi), SHUT_WR);
		}
		return 0;
	case LWS_CALLBACK_RAW_CLOSE:
		if (s) {
			lws_set_opaque_user_data(wsi, NULL);
			s->dwsi = NULL;
			stream_ended(s);
		}
		return 0;
	default:
		return 0;
	}
}

/* Once a second: ping quiet WebSocket sessions, hang up on peers that stopped answering. */
static lws_sorted_usec_list_t tick_sul;

static void tick(lws_sorted_usec_list_t *sul)
{
	int64_t now = cm_monotonic_ms();
	int64_t iv = cfg.ws_ping_interval * 1000;
	for (struct session *s = sessions; s; s = s->next) {
		if (!s->wsi || s->kind == K_LOGS_HTTP)
			continue;
		if (s->ping_outstanding && s->ping_sent_ms && now - s->ping_sent_ms > iv) {
			/* no pong within an interval: the peer is gone */
			lws_set_timeout(s->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
			continue;
		}
		if (!s->ping_outstanding && now - s->last_rx_ms >= iv) {
			s->ping_outstanding = true;
			s->ping_sent_ms = 0;
			lws_callback_on_writable(s->wsi);
		}
	}
	if (shutdown_asked)
		harpoon_shutting_down();
	if (stopping)
		lws_cancel_service(ctx);
	lws_sul_schedule(ctx, 0, sul, tick, shutdown_asked ? 20000 : LWS_US_PER_SEC);
}

static void on_signal(int sig)
{
	if (sig == SIGUSR1)
		shutdown_asked = 1;
	else
		stopping = 1;
}

static const struct lws_protocols protocols[] = {
	{"cm", cb_main, 0, 65536, 0, NULL, 0},
	{NULL, NULL, 0, 0, 0, NULL, 0},
};

static const struct lws_protocols docker_protocols[] = {
	{"cm-docker", cb_docker, 0, 65536, 0, NULL, 0},
	{NULL, NULL, 0, 0, 0, NULL, 0},
};

int main(int argc, char **argv)
{
	cm_log_init("cm-ws");
	const char *env_file = ".env", *sock = NULL, *group = "www-data";
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--env-file") && i + 1 < argc)
			env_file = argv[++i];
		else if (!strcmp(argv[i], "--socket") && i + 1 < argc)
			sock = argv[++i];
		else if (!strcmp(argv[i], "--group") && i + 1 < argc)
			group = argv[++i];
		else {
			fprintf(stderr, "usage: cm-ws [--env-file FILE] [--socket PATH] [--group GROUP]\n");
			return 2;
		}
	}
	struct cm_error err = {0};
	if (cm_config_load(&cfg, env_file, &err) < 0) {
		cm_error("%s", err.message);
		return 1;
	}
	/* without the secret nothing could be told from a forgery: refuse to start */
	if (cm_proxy_secret_load(cfg.run_dir, proxy_secret, &err) < 0) {
		cm_error("%s", err.message);
		return 1;
	}
	if (cm_metrics_attach(cfg.run_dir) < 0)
		cm_warn("metrics: cannot map %s/metrics.shm: %s", cfg.run_dir, strerror(errno));
	cm_metrics_ws_sessions(0);
	if (strncmp(cfg.docker_host, "unix://", 7) != 0) {
		cm_error("terminals need the Docker engine on a unix socket (DOCKER_HOST=%s)", cfg.docker_host);
		return 1;
	}
	dock_setup(cfg.docker_host + 7);
	char sockpath[PATH_MAX], dbpath[PATH_MAX];
	if (!sock) {
		if (cm_pathf(sockpath, sizeof sockpath, "%s/ws.sock", cfg.run_dir) < 0)
			return 1;
		sock = sockpath;
	}
	cm_config_path(&cfg, dbpath, sizeof dbpath, "db/cm.sqlite");
	if (cm_db_open(&db, dbpath, &err) < 0)
		cm_warn("database %s: %s (sessions are refused until it opens)", dbpath, err.message);
	else
		db_ok = true;
	if (cm_pathf(state_dir, sizeof state_dir, "%s/ws-sessions", cfg.run_dir) == 0) {
		if (mkdir(state_dir, 0700) < 0 && errno != EEXIST)
			state_dir[0] = '\0';
		else
			reap_leftovers();
	}

	struct sigaction sa = {0};
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGUSR1, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	const char *lv = getenv("CM_LWS_LOG");
	lws_set_log_level(lv ? atoi(lv) : LLL_ERR, NULL);

	/* two descriptors per session (client and Docker) */
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	struct lws_context_creation_info info;
	memset(&info, 0, sizeof info);
	info.options = LWS_SERVER_OPTION_EXPLICIT_VHOSTS | LWS_SERVER_OPTION_DISABLE_OS_CA_CERTS | LWS_SERVER_OPTION_VALIDATE_UTF8;
	info.pt_serv_buf_size = 65536;
	info.count_threads = 1;
	info.fd_limit_per_thread = (unsigned)(cfg.ws_max_sessions * 2 + 64);
	ctx = lws_create_context(&info);
	if (!ctx) {
		cm_error("cannot create the WebSocket context");
		return 1;
	}
	unlink(sock);
	struct lws_context_creation_info vi;
	memset(&vi, 0, sizeof vi);
	/* text frames that are not UTF-8 fail the connection with 1007, as RFC 6455 asks */
	vi.options = LWS_SERVER_OPTION_UNIX_SOCK | LWS_SERVER_OPTION_VALIDATE_UTF8;
	vi.iface = sock;
	vi.port = 0;
	vi.protocols = protocols;
	vi.vhost_name = "cm";
	vi.max_http_header_data = 8192;
	vi.keepalive_timeout = 65;
	vi.timeout_secs = 30;
	if (!lws_create_vhost(ctx, &vi)) {
		cm_error("cannot listen on %s", sock);
		lws_context_destroy(ctx);
		return 1;
	}
	/* only nginx's group may connect (it vouches for the user) */
	struct group *gr = getgrnam(group);
	if (!gr || chown(sock, 0, gr->gr_gid) < 0 || chmod(sock, 0660) < 0) {
		cm_error("cannot give %s to group %s: %s", sock, group, strerror(errno));
		lws_context_destroy(ctx);
		return 1;
	}
	char hsock[PATH_MAX];
	if (cm_pathf(hsock, sizeof hsock, "%s/harpoon.sock", cfg.run_dir) < 0 ||
	    harpoon_setup(ctx, &cfg, &db, db_ok, hsock, gr->gr_gid) < 0) {
		lws_context_destroy(ctx);
		return 1;
	}
	memset(&vi, 0, sizeof vi);
	vi.port = CONTEXT_PORT_NO_LISTEN_SERVER;
	vi.protocols = docker_protocols;
	vi.vhost_name = "docker";
	vh_docker = lws_create_vhost(ctx, &vi);
	if (!vh_docker) {
		cm_error("cannot create the Docker vhost");
		lws_context_destroy(ctx);
		return 1;
	}
	pthread_t th[NWORKERS];
	for (int i = 0; i < NWORKERS; i++)
		if (pthread_create(&th[i], NULL, worker, NULL) != 0) {
			cm_error("cannot start worker threads");
			return 1;
		}
	lws_sul_schedule(ctx, 0, &tick_sul, tick, LWS_US_PER_SEC);
	cm_info("listening on %s (max %ld sessions, messages up to %ld bytes)", sock, cfg.ws_max_sessions,
		cfg.ws_max_frame);
	while (!stopping)
		if (lws_service(ctx, 0) < 0)
			break;
	/* held start_container calls get their 503 before the loop ends (a second at most) */
	harpoon_shutting_down();
	for (int64_t until = cm_monotonic_ms() + 1000; harpoon_pending() && cm_monotonic_ms() < until;)
		if (lws_service(ctx, 0) < 0)
			break;
	/* end every session's process before leaving */
	for (struct session *s = sessions; s; s = s->next)
		if (s->kind == K_EXEC && s->proc.pid > 1 && !s->has_exit) {
			proc_kill_session(&s->proc);
			s->has_exit = false;
		}
	lws_context_destroy(ctx);
	pthread_mutex_lock(&q_mu);
	workers_quit = true;
	pthread_cond_broadcast(&q_cv);
	pthread_mutex_unlock(&q_mu);
	for (int i = 0; i < NWORKERS; i++)
		pthread_join(th[i], NULL);
	if (db_ok)
		cm_db_close(&db);
	unlink(sock);
	unlink(hsock);
	return 0;
}
