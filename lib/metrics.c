/* metrics.c: the shared counters behind GET /metrics (see metrics.h). */
#include "config.h"
#include "cm.h"
#include "metrics.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define MET_MAGIC 0x434d4d31u /* "CMM1" */

enum { SLOT_EMPTY, SLOT_CLAIMED, SLOT_READY };

struct met_slot {
	_Atomic uint32_t state;
	uint16_t status;
	char method[10];
	char route[48];
	_Atomic uint64_t count;
	_Atomic uint64_t sum_us;
	_Atomic uint64_t buckets[CM_MET_BUCKETS]; /* not cumulative: one bucket per request */
};

struct met_shm {
	_Atomic uint32_t magic;
	_Atomic int64_t ws_sessions;
	_Atomic uint64_t docker_errors[CM_MET_DOCKER_KINDS];
	struct met_slot slots[CM_MET_SLOTS];
};

/* upper bounds in microseconds; the last bucket is +Inf */
static const int64_t bounds_us[CM_MET_BUCKETS - 1] = {5000, 10000, 25000, 50000, 100000, 250000,
						       500000, 1000000, 2500000, 5000000, 10000000};
static const char *const bound_text[CM_MET_BUCKETS] = {"0.005", "0.01", "0.025", "0.05", "0.1", "0.25",
						       "0.5", "1", "2.5", "5", "10", "+Inf"};
static const char *const docker_kind_text[CM_MET_DOCKER_KINDS] = {"unreachable", "timeout", "broken", "server_error"};

static struct met_shm *shm;

int cm_metrics_attach(const char *run_dir)
{
	if (shm)
		return 0;
	char path[4096];
	if (cm_pathf(path, sizeof path, "%s/metrics.shm", run_dir) < 0)
		return -1;
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return -1;
	struct stat st;
	/* a file of another size is another layout: start it again */
	if (fchmod(fd, 0600) < 0 || fstat(fd, &st) < 0 || ((size_t)st.st_size != sizeof *shm && (ftruncate(fd, 0) < 0 || ftruncate(fd, sizeof *shm) < 0))) {
		int saved = errno;
		close(fd);
		errno = saved;
		return -1;
	}
	void *p = mmap(NULL, sizeof *shm, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	if (p == MAP_FAILED)
		return -1;
	shm = p;
	uint32_t zero = 0;
	atomic_compare_exchange_strong(&shm->magic, &zero, MET_MAGIC);
	return 0;
}

static void copy_label(char *dst, size_t dstsz, const char *src)
{
	/* label values stay printable ASCII without quotes or backslashes */
	size_t o = 0;
	for (const unsigned char *s = (const unsigned char *)(src ? src : ""); *s && o + 1 < dstsz; s++)
		dst[o++] = (*s > 0x20 && *s < 0x7f && *s != '"' && *s != '\\') ? (char)*s : '_';
	dst[o] = '\0';
}

/* The slot of (route, method, status), claimed on first use; NULL when the table is full. */
static struct met_slot *slot_for(const char *route, const char *method, int status)
{
	char r[sizeof shm->slots[0].route], m[sizeof shm->slots[0].method];
	copy_label(r, sizeof r, route);
	copy_label(m, sizeof m, method);
	uint32_t h = 2166136261u;
	for (const char *p = r; *p; p++)
		h = (h ^ (unsigned char)*p) * 16777619u;
	for (const char *p = m; *p; p++)
		h = (h ^ (unsigned char)*p) * 16777619u;
	h = (h ^ (uint32_t)status) * 16777619u;
	for (size_t i = 0; i < CM_MET_SLOTS; i++) {
		struct met_slot *s = &shm->slots[(h + i) % CM_MET_SLOTS];
		uint32_t st = atomic_load(&s->state);
		if (st == SLOT_EMPTY) {
			uint32_t expect = SLOT_EMPTY;
			if (atomic_compare_exchange_strong(&s->state, &expect, SLOT_CLAIMED)) {
				memcpy(s->route, r, sizeof r);
				memcpy(s->method, m, sizeof m);
				s->status = (uint16_t)status;
				atomic_store(&s->state, SLOT_READY);
				return s;
			}
			st = expect;
		}
		/* another process is writing this slot's key: ready within instructions (one killed right
		 * there leaves it claimed for good; then the next free slot serves the key) */
		for (int spin = 0; st == SLOT_CLAIMED && spin < 10000; spin++)
			st = atomic_load(&s->state);
		if (st == SLOT_READY && s->status == (uint16_t)status && !strcmp(s->route, r) && !strcmp(s->method, m))
			return s;
	}
	return NULL;
}

void cm_metrics_request(const char *route, const char *method, int status, int64_t duration_us)
{
	if (!shm)
		return;
	struct met_slot *s = slot_for(route && *route ? route : "unmatched", method, status);
	if (!s)
		return;
	if (duration_us < 0)
		duration_us = 0;
	size_t b = 0;
	while (b < CM_MET_BUCKETS - 1 && duration_us > bounds_us[b])
		b++;
	atomic_fetch_add(&s->count, 1);
	atomic_fetch_add(&s->sum_us, (uint64_t)duration_us);
	atomic_fetch_add(&s->buckets[b], 1);
}

void cm_metrics_docker_error(enum cm_met_docker kind)
{
	if (shm && kind < CM_MET_DOCKER_KINDS)
		atomic_fetch_add(&shm->docker_errors[kind], 1);
}

void cm_metrics_ws_sessions(long open)
{
	if (shm)
		atomic_store(&shm->ws_sessions, (int64_t)open);
}

int cm_metrics_write(FILE *f)
{
	if (!shm)
		return -1;
	fprintf(f, "# HELP cm_http_requests_total Requests answered, by route (the audit action), method and status.\n"
		   "# TYPE cm_http_requests_total counter\n");
	for (size_t i = 0; i < CM_MET_SLOTS; i++) {
		struct met_slot *s = &shm->slots[i];
		if (atomic_load(&s->state) == SLOT_READY)
			fprintf(f, "cm_http_requests_total{route=\"%s\",method=\"%s\",status=\"%u\"} %llu\n", s->route, s->method,
				(unsigned)s->status, (unsigned long long)atomic_load(&s->count));
	}
	/* the histogram by route: the slots of one route summed */
	fprintf(f, "# HELP cm_http_request_duration_seconds Time from the request reaching a worker to its answer, by route.\n"
		   "# TYPE cm_http_request_duration_seconds histogram\n");
	bool done[CM_MET_SLOTS] = {false};
	for (size_t i = 0; i < CM_MET_SLOTS; i++) {
		struct met_slot *s = &shm->slots[i];
		if (done[i] || atomic_load(&s->state) != SLOT_READY)
			continue;
		uint64_t buckets[CM_MET_BUCKETS] = {0}, count = 0, sum_us = 0;
		for (size_t j = i; j < CM_MET_SLOTS; j++) {
			struct met_slot *t = &shm->slots[j];
			if (done[j] || atomic_load(&t->state) != SLOT_READY || strcmp(t->route, s->route))
				continue;
			done[j] = true;
			for (size_t b = 0; b < CM_MET_BUCKETS; b++)
				buckets[b] += atomic_load(&t->buckets[b]);
			sum_us += atomic_load(&t->sum_us);
		}
		uint64_t cum = 0;
		for (size_t b = 0; b < CM_MET_BUCKETS; b++) {
			cum += buckets[b];
			fprintf(f, "cm_http_request_duration_seconds_bucket{route=\"%s\",le=\"%s\"} %llu\n", s->route, bound_text[b],
				(unsigned long long)cum);
		}
		count = cum;
		fprintf(f, "cm_http_request_duration_seconds_sum{route=\"%s\"} %.6f\n", s->route, (double)sum_us / 1e6);
		fprintf(f, "cm_http_request_duration_seconds_count{route=\"%s\"} %llu\n", s->route, (unsigned long long)count);
	}
	fprintf(f, "# HELP cm_docker_api_errors_total Docker Engine API calls that failed: unreachable, timed out, broken transfers, 5xx answers.\n"
		   "# TYPE cm_docker_api_errors_total counter\n");
	for (size_t k = 0; k < CM_MET_DOCKER_KINDS; k++)
		fprintf(f, "cm_docker_api_errors_total{kind=\"%s\"} %llu\n", docker_kind_text[k],
			(unsigned long long)atomic_load(&shm->docker_errors[k]));
	fprintf(f, "# HELP cm_websocket_sessions_open Terminals and log streams open in the WebSocket helper.\n"
		   "# TYPE cm_websocket_sessions_open gauge\n"
		   "cm_websocket_sessions_open %lld\n",
		(long long)atomic_load(&shm->ws_sessions));
	return ferror(f) ? -1 : 0;
}
