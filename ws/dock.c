/* dock.c: the Engine API calls of a session, made from worker threads. Plain calls go through
 * the shared libcurl client; the attached exec (a hijacked HTTP connection) and the log stream
 * are opened on a socket of their own that the event loop then adopts. */
#include "config.h"
#include "ws.h"
#include "docker.h"
#include "json.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static char sock_path[108];
static pthread_key_t curl_key;
static pthread_once_t key_once = PTHREAD_ONCE_INIT;

static void free_docker(void *p)
{
	cm_docker_free(p);
	free(p);
}

static void make_key(void)
{
	pthread_key_create(&curl_key, free_docker);
}

void dock_setup(const char *socket_path)
{
	snprintf(sock_path, sizeof sock_path, "%s", socket_path);
	pthread_once(&key_once, make_key);
}

static struct cm_docker *client(struct cm_error *err)
{
	struct cm_docker *d = pthread_getspecific(curl_key);
	if (d)
		return d;
	d = calloc(1, sizeof *d);
	char host[160];
	snprintf(host, sizeof host, "unix://%s", sock_path);
	if (!d || cm_docker_init(d, host, err) < 0) {
		free(d);
		return NULL;
	}
	pthread_setspecific(curl_key, d);
	return d;
}

static int unavailable(struct cm_error *err, const char *what)
{
	return cm_err_set(err, 503, "unavailable", "DOCKER_UNAVAILABLE", NULL, "Docker engine: %s: %s", what,
			  strerror(errno));
}

static int write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Sends req on a new connection and reads the response head (up to 15 s). Keeps the
 * connection for 101/200 answers (stream bytes that came with the head go to conn->extra);
 * other answers become err with Docker's message. */
static int raw_exchange(const char *req, size_t reqlen, struct dock_conn *conn, struct cm_error *err)
{
	conn->fd = -1;
	conn->extra = NULL;
	conn->extra_len = 0;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return unavailable(err, "socket");
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof sa.sun_path, "%s", sock_path);
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || write_all(fd, req, reqlen) < 0) {
		unavailable(err, "connect");
		close(fd);
		return -1;
	}
	char head[16384 + 1];
	size_t have = 0;
	char *eoh = NULL;
	int64_t deadline = cm_monotonic_ms() + 15000;
	while (!eoh) {
		int64_t left = deadline - cm_monotonic_ms();
		struct pollfd pfd = {.fd = fd, .events = POLLIN};
		if (have >= sizeof head - 1 || left <= 0 || poll(&pfd, 1, (int)left) <= 0) {
			close(fd);
			return cm_err_set(err, 504, "timeout", "DOCKER_TIMEOUT", NULL, "Docker engine did not answer in time");
		}
		ssize_t n = recv(fd, head + have, sizeof head - 1 - have, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			close(fd);
			return cm_err_set(err, 503, "unavailable", "DOCKER_UNAVAILABLE", NULL, "Docker engine closed the connection");
		}
		have += (size_t)n;
		head[have] = '\0';
		eoh = strstr(head, "\r\n\r\n");
	}
	int status = 0;
	if (sscanf(head, "HTTP/1.%*d %d", &status) != 1) {
		close(fd);
		return cm_err_set(err, 502, "unavailable", "DOCKER_BAD_RESPONSE", NULL, "Docker engine sent a malformed response");
	}
	size_t body_off = (size_t)(eoh + 4 - head);
	if (status == 101 || status == 200) {
		if (have > body_off) {
			conn->extra = malloc(have - body_off);
			if (!conn->extra) {
				close(fd);
				return cm_err_internal(err, "out of memory");
			}
			memcpy(conn->extra, head + body_off, have - body_off);
			conn->extra_len = have - body_off;
		}
		int fl = fcntl(fd, F_GETFL);
		if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
			free(conn->extra);
			conn->extra = NULL;
			close(fd);
			return cm_err_internal(err, "fcntl: %s", strerror(errno));
		}
		conn->fd = fd;
		return 0;
	}
	/* an error: read a little more of the body for Docker's message */
	struct pollfd pfd = {.fd = fd, .events = POLLIN};
	while (have < sizeof head - 1 && poll(&pfd, 1, 200) > 0) {
		ssize_t n = recv(fd, head + have, sizeof head - 1 - have, 0);
		if (n <= 0)
			break;
		have += (size_t)n;
	}
	head[have] = '\0';
	close(fd);
	char msg[300];
	const char *body = head + body_off;
	const char *brace = strchr(body, '{');
	cm_docker_message(brace ? brace : body, msg, sizeof msg);
	if (status == 404)
		return cm_err_set(err, 404, "not_found", "CONTAINER_NOT_FOUND", NULL, "%s", msg[0] ? msg : "no such container");
	if (status == 409)
		return cm_err_set(err, 422, "state_error", "CONTAINER_NOT_RUNNING", NULL, "%s", msg[0] ? msg : "container is not running");
	return cm_err_set(err, 502, "docker_error", "DOCKER_ERROR", NULL, "Docker engine answered %d: %s", status, msg);
}

static int api_error(long st, struct cm_buf *resp, struct cm_error *err, const char *what)
{
	char msg[300];
	cm_docker_message(cm_buf_str(resp), msg, sizeof msg);
	if (st == 404)
		return cm_err_set(err, 404, "not_found", "CONTAINER_NOT_FOUND", NULL, "%s: %s", what, msg);
	if (st == 409)
		return cm_err_set(err, 422, "state_error", "CONTAINER_NOT_RUNNING", NULL, "%s: %s", what, msg);
	return cm_err_set(err, 502, "docker_error", "DOCKER_ERROR", NULL, "%s: Docker engine answered %ld: %s", what, st, msg);
}

int dock_exec_resize(const char *exec_id, int cols, int rows, struct cm_error *err)
{
	struct cm_docker *d = client(err);
	if (!d)
		return -1;
	char path[256];
	snprintf(path, sizeof path, "/exec/%s/resize?h=%d&w=%d", exec_id, rows, cols);
	struct cm_buf resp = {.limit = 1 << 16};
	long st = cm_docker_call(d, "POST", path, NULL, &resp, 10, err);
	int rc = st >= 200 && st < 300 ? 0 : st < 0 ? -1 : api_error(st, &resp, err, "resize");
	cm_buf_free(&resp);
	return rc;
}

/* GET /exec/ID/json → running, pid, exit code */
static int exec_inspect(const char *exec_id, bool *running, long long *pid, long long *code, struct cm_error *err)
{
	struct cm_docker *d = client(err);
	if (!d)
		return -1;
	char path[160];
	snprintf(path, sizeof path, "/exec/%s/json", exec_id);
	struct cm_buf resp = {.limit = 1 << 20};
	long st = cm_docker_call(d, "GET", path, NULL, &resp, 10, err);
	int rc = -1;
	if (st == 200) {
		yajl_val v = cm_json_parse(resp.data, resp.len, err);
		if (v) {
			yajl_val r = cm_json_get(v, "Running");
			*running = YAJL_IS_TRUE(r);
			if (!cm_json_get_int(v, "Pid", pid))
				*pid = 0;
			if (!cm_json_get_int(v, "ExitCode", code))
				*code = -1;
			yajl_tree_free(v);
			rc = 0;
		}
	} else if (st >= 0) {
		api_error(st, &resp, err, "exec inspect");
	}
	cm_buf_free(&resp);
	return rc;
}

int dock_exec_start(const char *container, const char *argv_json, bool tty, int cols, int rows, char *exec_id,
		    size_t exec_id_sz, struct dock_conn *conn, struct proc_id *proc, struct cm_error *err)
{
	conn->fd = -1;
	conn->extra = NULL;
	conn->extra_len = 0;
	memset(proc, 0, sizeof *proc);
	struct cm_docker *d = client(err);
	if (!d)
		return -1;
	struct cm_buf body = {0}, resp = {.limit = 1 << 20};
	cm_buf_printf(&body,
		      "{\"AttachStdin\":true,\"AttachStdout\":true,\"AttachStderr\":true,\"Tty\":%s,\"Cmd\":%s%s}",
		      tty ? "true" : "false", argv_json, tty ? ",\"Env\":[\"TERM=xterm-256color\"]" : "");
	char path[200];
	snprintf(path, sizeof path, "/containers/%s/exec", container);
	long st = cm_docker_call(d, "POST", path, cm_buf_str(&body), &resp, 15, err);
	cm_buf_free(&body);
	if (st != 201) {
		if (st >= 0)
			api_error(st, &resp, err, "exec");
		cm_buf_free(&resp);
		return -1;
	}
	yajl_val v = cm_json_parse(resp.data, resp.len, err);
	const char *id = v ? cm_json_get_str(v, "Id") : NULL;
	if (!id || strlen(id) >= exec_id_sz || strspn(id, "0123456789abcdef") != strlen(id)) {
		if (v)
			yajl_tree_free(v);
		cm_buf_free(&resp);
		return cm_err_set(err, 502, "docker_error", "DOCKER_BAD_RESPONSE", NULL, "exec create gave no id");
	}
	snprintf(exec_id, exec_id_sz, "%s", id);
	yajl_tree_free(v);
	cm_buf_free(&resp);

	char start[512];
	const char *sbody = tty ? "{\"Detach\":false,\"Tty\":true}" : "{\"Detach\":false,\"Tty\":false}";
	int n = snprintf(start, sizeof start,
			 "POST " CM_DOCKER_API "/exec/%s/start HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\n"
			 "Connection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: %zu\r\n\r\n%s",
			 exec_id, strlen(sbody), sbody);
	if (raw_exchange(start, (size_t)n, conn, err) < 0)
		return -1;
	/* the size first (as the docker CLI does: the process may not be running yet) */
	if (tty)
		for (int i = 0; i < 10; i++) {
			struct cm_error e2;
			if (dock_exec_resize(exec_id, cols, rows, &e2) == 0)
				break;
			usleep((useconds_t)(10000 * (i + 1)));
		}
	/* the host pid, for signals and clean-up: the exec may not be running yet right after
	 * the attach (Running false, no Pid), so wait for it, up to 2 s */
	for (int i = 0; i < 100; i++) {
		bool running = false;
		long long pid = 0, code = 0;
		struct cm_error e2;
		if (exec_inspect(exec_id, &running, &pid, &code, &e2) < 0)
			break;
		if (running && pid > 1 && proc_identify((pid_t)pid, proc) == 0)
			break;
		if (!running && pid > 1)
			break; /* it ran and has already ended */
		usleep(i < 10 ? 2000 : 20000);
	}
	return 0;
}

int dock_exec_exit_code(const char *exec_id, int wait_ms, bool *still_running, struct cm_error *err)
{
	int64_t deadline = cm_monotonic_ms() + wait_ms;
	*still_running = false;
	for (;;) {
		bool running = false;
		long long pid = 0, code = -1;
		if (exec_inspect(exec_id, &running, &pid, &code, err) < 0)
			return -1;
		if (!running)
			return (int)code;
		if (cm_monotonic_ms() >= deadline) {
			*still_running = true;
			return -1;
		}
		usleep(20000);
	}
}

int dock_logs_open(const char *container, const char *query, bool *tty, struct dock_conn *conn, struct cm_error *err)
{
	conn->fd = -1;
	struct cm_docker *d = client(err);
	if (!d)
		return -1;
	char path[200];
	snprintf(path, sizeof path, "/containers/%s/json", container);
	struct cm_buf resp = {.limit = 8 << 20};
	long st = cm_docker_call(d, "GET", path, NULL, &resp, 15, err);
	if (st != 200) {
		if (st >= 0)
			api_error(st, &resp, err, "inspect");
		cm_buf_free(&resp);
		return -1;
	}
	yajl_val v = cm_json_parse(resp.data, resp.len, err);
	cm_buf_free(&resp);
	if (!v)
		return -1;
	yajl_val c = cm_json_get(v, "Config");
	*tty = c && YAJL_IS_TRUE(cm_json_get(c, "Tty"));
	yajl_tree_free(v);
	/* HTTP/1.0: the body simply ends when Docker closes the connection (no chunking) */
	char req[1024];
	int n = snprintf(req, sizeof req, "GET " CM_DOCKER_API "/containers/%s/logs?%s HTTP/1.0\r\nHost: docker\r\n\r\n",
			 container, query);
	if (n < 0 || (size_t)n >= sizeof req)
		return cm_err_internal(err, "log query too long");
	return raw_exchange(req, (size_t)n, conn, err);
}
