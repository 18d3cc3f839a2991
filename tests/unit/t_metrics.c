/* t_metrics.c: the shared counters of GET /metrics: several processes count into one mapping
 * at once and nothing is lost; the text is cumulative histograms and escaped labels; a file
 * of another layout starts again. */
#include "config.h"
#include "cm.h"
#include "metrics.h"
#include "tap.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define PROCS 6
#define EACH 20000

static char *text_of(void)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	if (!f)
		return NULL;
	cm_metrics_write(f);
	fclose(f);
	return buf;
}

static long long sample(const char *text, const char *prefix)
{
	const char *p = strstr(text, prefix);
	return p ? atoll(p + strlen(prefix)) : -1;
}

int main(void)
{
	char dir[] = "/tmp/t_metrics.XXXXXX";
	if (!mkdtemp(dir))
		return 1;
	char path[256];
	snprintf(path, sizeof path, "%s/metrics.shm", dir);
	/* a file of another layout (an older version) is started again */
	FILE *old = fopen(path, "w");
	fputs("left over", old);
	fclose(old);
	cm_metrics_request("nothing", "GET", 200, 1);
	char *t0 = text_of();
	ok(t0 == NULL || !strstr(t0, "nothing"), "before attaching, counting does nothing");
	free(t0);
	ok(cm_metrics_attach(dir) == 0, "attach maps %s", path);
	struct stat st;
	ok(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600 && st.st_size > 50000, "the file is 0600 (also one that was there) and sized for the table");

	/* PROCS processes, each EACH requests over 3 routes and 2 statuses, plus Docker errors */
	for (int p = 0; p < PROCS; p++) {
		pid_t pid = fork();
		if (pid == 0) {
			for (int i = 0; i < EACH; i++) {
				const char *route = i % 3 == 0 ? "container.get" : i % 3 == 1 ? "container.list" : "version";
				cm_metrics_request(route, "GET", i % 2 ? 200 : 404, (int64_t)(i % 7) * 3000);
				if (i % 100 == 0)
					cm_metrics_docker_error(CM_MET_DOCKER_UNREACHABLE);
			}
			_exit(0);
		}
	}
	int all_ok = 1;
	for (int p = 0; p < PROCS; p++) {
		int ws;
		if (wait(&ws) < 0 || !WIFEXITED(ws) || WEXITSTATUS(ws))
			all_ok = 0;
	}
	ok(all_ok, "%d processes counted %d requests each", PROCS, EACH);
	cm_metrics_request("we\"ird\\route\n", "GET", 200, 12000000);
	cm_metrics_ws_sessions(3);
	char *t = text_of();
	ok(t != NULL, "the text is written");
	if (!t)
		return tap_done();
	long long total = 0;
	const char *keys[] = {"route=\"container.get\",method=\"GET\",status=\"200\"} ", "route=\"container.get\",method=\"GET\",status=\"404\"} ",
			      "route=\"container.list\",method=\"GET\",status=\"200\"} ", "route=\"container.list\",method=\"GET\",status=\"404\"} ",
			      "route=\"version\",method=\"GET\",status=\"200\"} ", "route=\"version\",method=\"GET\",status=\"404\"} "};
	for (size_t k = 0; k < CM_ARRAY_LEN(keys); k++) {
		char pre[200];
		snprintf(pre, sizeof pre, "cm_http_requests_total{%s", keys[k]);
		long long v = sample(t, pre);
		total += v > 0 ? v : 0;
	}
	ok(total == (long long)PROCS * EACH, "no count lost: %lld of %d", total, PROCS * EACH);
	ok(sample(t, "cm_docker_api_errors_total{kind=\"unreachable\"} ") == PROCS * (EACH / 100),
	   "Docker errors: %lld", sample(t, "cm_docker_api_errors_total{kind=\"unreachable\"} "));
	ok(sample(t, "\ncm_websocket_sessions_open ") == 3, "the sessions gauge");
	/* version: i%3==2 → durations (i%7)*3 ms, all at most 18 ms: none above the 25 ms bucket */
	long long c25 = sample(t, "cm_http_request_duration_seconds_bucket{route=\"version\",le=\"0.025\"} ");
	long long cinf = sample(t, "cm_http_request_duration_seconds_bucket{route=\"version\",le=\"+Inf\"} ");
	long long cnt = sample(t, "cm_http_request_duration_seconds_count{route=\"version\"} ");
	long long c5 = sample(t, "cm_http_request_duration_seconds_bucket{route=\"version\",le=\"0.005\"} ");
	ok(c25 == cinf && cinf == cnt && cnt > 0 && c5 > 0 && c5 < c25, "version's histogram is cumulative (%lld <= %lld = %lld = %lld)",
	   c5, c25, cinf, cnt);
	ok(strstr(t, "route=\"we_ird_route_\"") != NULL, "quotes, backslashes and newlines never reach a label");
	ok(sample(t, "cm_http_request_duration_seconds_bucket{route=\"we_ird_route_\",le=\"10\"} ") == 0 &&
		   sample(t, "cm_http_request_duration_seconds_bucket{route=\"we_ird_route_\",le=\"+Inf\"} ") == 1,
	   "a 12 s request is only in +Inf");
	free(t);
	unlink(path);
	rmdir(dir);
	return tap_done();
}
