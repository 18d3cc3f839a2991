/* metrics.h: counters shared by every process of one stack for GET /metrics: a small file in
 * the run directory, mapped shared, updated with atomic adds (no lock, nothing written to
 * SQLite on the request path). Counters start again from zero when the file is new (a
 * restarted stack), which Prometheus treats as a counter reset. */
#ifndef CM_METRICS_H
#define CM_METRICS_H

#include <stdint.h>
#include <stdio.h>

#define CM_MET_SLOTS 512   /* (route, method, status) combinations */
#define CM_MET_BUCKETS 12  /* request duration buckets, the last one +Inf */

enum cm_met_docker { CM_MET_DOCKER_UNREACHABLE, CM_MET_DOCKER_TIMEOUT, CM_MET_DOCKER_BROKEN, CM_MET_DOCKER_5XX,
		     CM_MET_DOCKER_KINDS };

/* Maps RUN_DIR/metrics.shm (creating it); -1 with errno when it cannot. Without a mapping
 * every counting call below does nothing. A forked child shares its parent's mapping. */
int cm_metrics_attach(const char *run_dir);
/* One answered request: its route (the audit action, or "unmatched"), method, status, time. */
void cm_metrics_request(const char *route, const char *method, int status, int64_t duration_us);
/* One failed Docker Engine API call. */
void cm_metrics_docker_error(enum cm_met_docker kind);
/* The WebSocket helper's sessions open now. */
void cm_metrics_ws_sessions(long open);
/* Writes the shared counters in the Prometheus text format (0.0.4) to f. */
int cm_metrics_write(FILE *f);

#endif
