/* docker.c: Engine API requests with libcurl. One handle per thread (connections are reused). */
#include "config.h"
#include "docker.h"
#include "metrics.h"
#include "json.h"

#include <stdio.h>
#include <string.h>

int cm_docker_init(struct cm_docker *d, const char *docker_host, struct cm_error *err)
{
	memset(d, 0, sizeof *d);
	if (!strncmp(docker_host, "unix://", 7)) {
		if (snprintf(d->socket_path, sizeof d->socket_path, "%s", docker_host + 7) >= (int)sizeof d->socket_path)
			return cm_err_set(err, 500, "config_error", "BAD_CONFIG", "DOCKER_HOST", "DOCKER_HOST too long");
		if (cm_pathf(d->base, sizeof d->base, "http://localhost%s", CM_DOCKER_API) < 0)
			return cm_err_internal(err, "Docker base URL too long");
	} else if (!strncmp(docker_host, "tcp://", 6)) {
		const char *certs = getenv("DOCKER_CERT_PATH");
		const char *verify = getenv("DOCKER_TLS_VERIFY");
		bool tls = (certs && *certs) || (verify && *verify && strcmp(verify, "0"));
		if (certs && cm_pathf(d->cert_dir, sizeof d->cert_dir, "%s", certs) < 0)
			return cm_err_set(err, 500, "config_error", "BAD_CONFIG", "DOCKER_CERT_PATH", "DOCKER_CERT_PATH too long");
		if (snprintf(d->base, sizeof d->base, "%s://%s%s", tls ? "https" : "http", docker_host + 6,
			     CM_DOCKER_API) >= (int)sizeof d->base)
			return cm_err_set(err, 500, "config_error", "BAD_CONFIG", "DOCKER_HOST", "DOCKER_HOST too long");
	} else {
		return cm_err_set(err, 500, "config_error", "BAD_CONFIG", "DOCKER_HOST",
				  "DOCKER_HOST must be unix:///path or tcp://host:port");
	}
	d->curl = curl_easy_init();
	if (!d->curl)
		return cm_err_internal(err, "curl_easy_init failed");
	return 0;
}

void cm_docker_free(struct cm_docker *d)
{
	if (d->curl)
		curl_easy_cleanup(d->curl);
	d->curl = NULL;
}

static size_t write_buf(char *ptr, size_t size, size_t nmemb, void *ud)
{
	struct cm_buf *b = ud;
	size_t n = size * nmemb;
	if (b && cm_buf_append(b, ptr, n) < 0)
		return 0;
	return n;
}

char *cm_docker_url(const struct cm_docker *d, const char *path)
{
	size_t bl = strlen(d->base), pl = strlen(path);
	char *url = malloc(bl + pl + 1);
	if (!url)
		return NULL;
	memcpy(url, d->base, bl);
	memcpy(url + bl, path, pl + 1);
	return url;
}

/* Resets the handle for path. The URL is sized exactly (a fixed buffer cut long archive paths
 * short, and Docker then acted on the shorter path); -1 (err) only when memory runs out. */
static int setup(struct cm_docker *d, const char *path, struct cm_error *err)
{
	char *url = cm_docker_url(d, path);
	if (!url)
		return cm_err_internal(err, "out of memory");
	curl_easy_reset(d->curl);
	/* libcurl copies the string */
	CURLcode uc = curl_easy_setopt(d->curl, CURLOPT_URL, url);
	free(url);
	if (uc != CURLE_OK)
		return cm_err_set(err, 400, "validation_error", "INVALID_PATH", NULL, "the Docker request URL is refused: %s",
				  curl_easy_strerror(uc));
	curl_easy_setopt(d->curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(d->curl, CURLOPT_CONNECTTIMEOUT, 5L);
	if (d->socket_path[0])
		curl_easy_setopt(d->curl, CURLOPT_UNIX_SOCKET_PATH, d->socket_path);
	if (d->cert_dir[0]) {
		/* cert_dir is at most 511 bytes: these always fit */
		char p[700];
		if (cm_pathf(p, sizeof p, "%s/ca.pem", d->cert_dir) == 0)
			curl_easy_setopt(d->curl, CURLOPT_CAINFO, p);
		if (cm_pathf(p, sizeof p, "%s/cert.pem", d->cert_dir) == 0)
			curl_easy_setopt(d->curl, CURLOPT_SSLCERT, p);
		if (cm_pathf(p, sizeof p, "%s/key.pem", d->cert_dir) == 0)
			curl_easy_setopt(d->curl, CURLOPT_SSLKEY, p);
	}
	return 0;
}

/* GET /metrics counts the calls that failed: no answer, too slow, a transfer that broke (not
 * one this side stopped), an answer of 5xx. A 4xx is an answer about the request, not a failure. */
static void count_failure(struct cm_docker *d, CURLcode rc, bool stopped_here)
{
	long status = 0;
	curl_easy_getinfo(d->curl, CURLINFO_RESPONSE_CODE, &status);
	if (rc == CURLE_OPERATION_TIMEDOUT)
		cm_metrics_docker_error(CM_MET_DOCKER_TIMEOUT);
	else if (rc != CURLE_OK && !stopped_here)
		cm_metrics_docker_error(status > 0 ? CM_MET_DOCKER_BROKEN : CM_MET_DOCKER_UNREACHABLE);
	else if (status >= 500)
		cm_metrics_docker_error(CM_MET_DOCKER_5XX);
}

long cm_docker_call(struct cm_docker *d, const char *method, const char *path, const char *body,
		    struct cm_buf *resp, long timeout_s, struct cm_error *err)
{
	if (setup(d, path, err) < 0)
		return -1;
	struct curl_slist *hdrs = NULL;
	if (body) {
		hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
		curl_easy_setopt(d->curl, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(d->curl, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
	} else if (!strcmp(method, "POST")) {
		curl_easy_setopt(d->curl, CURLOPT_POSTFIELDS, "");
		curl_easy_setopt(d->curl, CURLOPT_POSTFIELDSIZE, 0L);
	}
	hdrs = curl_slist_append(hdrs, "Expect:");
	curl_easy_setopt(d->curl, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(d->curl, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(d->curl, CURLOPT_TIMEOUT, timeout_s > 0 ? timeout_s : 60L);
	if (resp)
		resp->limit = 32u << 20;
	curl_easy_setopt(d->curl, CURLOPT_WRITEFUNCTION, write_buf);
	curl_easy_setopt(d->curl, CURLOPT_WRITEDATA, resp);
	CURLcode rc = curl_easy_perform(d->curl);
	curl_slist_free_all(hdrs);
	count_failure(d, rc, false);
	if (rc != CURLE_OK) {
		if (rc == CURLE_OPERATION_TIMEDOUT)
			return cm_err_set(err, 408, "timeout", "DOCKER_TIMEOUT", NULL,
					  "Docker did not answer %s %s in time", method, path);
		return cm_err_set(err, 503, "compose_error", "DOCKER_UNAVAILABLE", NULL,
				  "Docker engine unreachable: %s", curl_easy_strerror(rc));
	}
	long status = 0;
	curl_easy_getinfo(d->curl, CURLINFO_RESPONSE_CODE, &status);
	return status;
}

struct stream_ctx {
	cm_docker_chunk_cb cb;
	void *ud;
	volatile int *stop;
	bool stopped;
};

static size_t write_stream(char *ptr, size_t size, size_t nmemb, void *ud)
{
	struct stream_ctx *s = ud;
	size_t n = size * nmemb;
	if (s->cb(ptr, n, s->ud)) {
		s->stopped = true;
		return 0;
	}
	return n;
}

static int stream_progress(void *ud, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t e)
{
	(void)a, (void)b, (void)c, (void)e;
	struct stream_ctx *s = ud;
	if (s->stop && *s->stop) {
		s->stopped = true;
		return 1;
	}
	return 0;
}

long cm_docker_stream(struct cm_docker *d, const char *path, cm_docker_chunk_cb cb, void *ud,
		      volatile int *stop, struct cm_error *err)
{
	struct stream_ctx s = {cb, ud, stop, false};
	if (setup(d, path, err) < 0)
		return -1;
	curl_easy_setopt(d->curl, CURLOPT_WRITEFUNCTION, write_stream);
	curl_easy_setopt(d->curl, CURLOPT_WRITEDATA, &s);
	curl_easy_setopt(d->curl, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(d->curl, CURLOPT_XFERINFOFUNCTION, stream_progress);
	curl_easy_setopt(d->curl, CURLOPT_XFERINFODATA, &s);
	CURLcode rc = curl_easy_perform(d->curl);
	long status = 0;
	curl_easy_getinfo(d->curl, CURLINFO_RESPONSE_CODE, &status);
	count_failure(d, rc, s.stopped);
	if (rc != CURLE_OK && !s.stopped)
		return cm_err_set(err, 503, "compose_error", "DOCKER_UNAVAILABLE", NULL, "Docker stream ended: %s",
				  curl_easy_strerror(rc));
	return status;
}

long cm_docker_post_stream(struct cm_docker *d, const char *path, const char *json, cm_docker_chunk_cb cb, void *ud,
			   long timeout_s, struct cm_error *err)
{
	struct stream_ctx s = {cb, ud, NULL, false};
	if (setup(d, path, err) < 0)
		return -1;
	struct curl_slist *hdrs = curl_slist_append(NULL, "Content-Type: application/json");
	hdrs = curl_slist_append(hdrs, "Expect:");
	curl_easy_setopt(d->curl, CURLOPT_POSTFIELDS, json ? json : "");
	curl_easy_setopt(d->curl, CURLOPT_POSTFIELDSIZE, json ? (long)strlen(json) : 0L);
	curl_easy_setopt(d->curl, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(d->curl, CURLOPT_TIMEOUT, timeout_s > 0 ? timeout_s : 60L);
	curl_easy_setopt(d->curl, CURLOPT_WRITEFUNCTION, write_stream);
	curl_easy_setopt(d->curl, CURLOPT_WRITEDATA, &s);
	CURLcode rc = curl_easy_perform(d->curl);
	curl_slist_free_all(hdrs);
	long status = 0;
	curl_easy_getinfo(d->curl, CURLINFO_RESPONSE_CODE, &status);
	if (rc == CURLE_OPERATION_TIMEDOUT)
		return cm_err_set(err, 408, "timeout", "DOCKER_TIMEOUT", NULL, "Docker did not finish %s in time", path);
	if (rc != CURLE_OK && !s.stopped)
		return cm_err_set(err, 503, "compose_error", "DOCKER_UNAVAILABLE", NULL, "Docker stream ended: %s",
				  curl_easy_strerror(rc));
	return status;
}

void cm_docker_message(const char *body, char *out, size_t outsz)
{
	struct cm_error e;
	snprintf(out, outsz, "%s", "Docker error");
	if (!body || !*body)
		return;
	yajl_val v = cm_json_parse(body, strlen(body), &e);
	const char *m = v ? cm_json_get_str(v, "message") : NULL;
	if (m)
		snprintf(out, outsz, "%s", m);
	else
		snprintf(out, outsz, "%.200s", body);
	if (v)
		yajl_tree_free(v);
	size_t n = strlen(out);
	while (n && (out[n - 1] == '\n' || out[n - 1] == '\r'))
		out[--n] = '\0';
}

struct exch {
	const struct cm_docker_io *io;
	bool aborted;
};

static size_t exch_read(char *buf, size_t size, size_t nitems, void *ud)
{
	struct exch *x = ud;
	return x->io->read(buf, size * nitems, x->io->ud);
}

static size_t exch_header(char *buf, size_t size, size_t nitems, void *ud)
{
	struct exch *x = ud;
	if (x->io->header)
		x->io->header(buf, size * nitems, x->io->ud);
	return size * nitems;
}

static size_t exch_body(char *buf, size_t size, size_t nitems, void *ud)
{
	struct exch *x = ud;
	if (x->io->body && x->io->body(buf, size * nitems, x->io->ud)) {
		x->aborted = true;
		return 0;
	}
	return size * nitems;
}

long cm_docker_exchange(struct cm_docker *d, const char *method, const char *path, const struct cm_docker_io *io,
			long timeout_s, struct cm_error *err)
{
	struct exch x = {io, false};
	if (setup(d, path, err) < 0)
		return -1;
	struct curl_slist *hdrs = curl_slist_append(NULL, "Expect:");
	if (io->read) {
		hdrs = curl_slist_append(hdrs, "Content-Type: application/x-tar");
		curl_easy_setopt(d->curl, CURLOPT_UPLOAD, 1L);
		curl_easy_setopt(d->curl, CURLOPT_READFUNCTION, exch_read);
		curl_easy_setopt(d->curl, CURLOPT_READDATA, &x);
	}
	if (!strcmp(method, "HEAD"))
		curl_easy_setopt(d->curl, CURLOPT_NOBODY, 1L);
	else
		curl_easy_setopt(d->curl, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(d->curl, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(d->curl, CURLOPT_HEADERFUNCTION, exch_header);
	curl_easy_setopt(d->curl, CURLOPT_HEADERDATA, &x);
	curl_easy_setopt(d->curl, CURLOPT_WRITEFUNCTION, exch_body);
	curl_easy_setopt(d->curl, CURLOPT_WRITEDATA, &x);
	/* a stream may be long: fail only when it stalls */
	curl_easy_setopt(d->curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(d->curl, CURLOPT_LOW_SPEED_TIME, timeout_s > 0 ? timeout_s : 60L);
	CURLcode rc = curl_easy_perform(d->curl);
	curl_slist_free_all(hdrs);
	long status = 0;
	curl_easy_getinfo(d->curl, CURLINFO_RESPONSE_CODE, &status);
	count_failure(d, rc, x.aborted);
	if (rc != CURLE_OK && !x.aborted) {
		if (status > 0)
			return cm_err_set(err, 502, "compose_error", "DOCKER_STREAM_BROKEN", NULL, "the transfer with Docker broke: %s",
					  curl_easy_strerror(rc));
		return cm_err_set(err, 503, "compose_error", "DOCKER_UNAVAILABLE", NULL, "Docker engine unreachable: %s",
				  curl_easy_strerror(rc));
	}
	return status;
}
