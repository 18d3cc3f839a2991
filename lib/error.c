/* error.c: the one error convention (see cm.h) and the process log. */
#include "config.h"
#include "cm.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

int cm_err_set(struct cm_error *err, int status, const char *kind, const char *code,
	       const char *field, const char *fmt, ...)
{
	if (!err)
		return -1;
	err->status = status;
	snprintf(err->kind, sizeof err->kind, "%s", kind ? kind : "internal_error");
	snprintf(err->code, sizeof err->code, "%s", code ? code : "INTERNAL");
	snprintf(err->field, sizeof err->field, "%s", field ? field : "");
	err->limit = 0;
	err->used = 0;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err->message, sizeof err->message, fmt, ap);
	va_end(ap);
	return -1;
}

void cm_err_prefix(struct cm_error *err, const char *fmt, ...)
{
	if (!err)
		return;
	char pre[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(pre, sizeof pre, fmt, ap);
	va_end(ap);
	char old[sizeof err->message];
	memcpy(old, err->message, sizeof old);
	snprintf(err->message, sizeof err->message, "%s: %s", pre, old);
}

void cm_err_clear(struct cm_error *err)
{
	memset(err, 0, sizeof *err);
}

static char log_prog[32] = "container-manager";
static enum cm_log_level log_level = CM_LOG_INFO;

void cm_log_init(const char *prog)
{
	snprintf(log_prog, sizeof log_prog, "%s", prog);
	const char *lv = getenv("CM_LOG_LEVEL");
	if (lv && !strcmp(lv, "debug"))
		log_level = CM_LOG_DEBUG;
}

void cm_log(enum cm_log_level lvl, const char *fmt, ...)
{
	static const char *names[] = {"debug", "info", "warn", "error"};
	if (lvl < log_level)
		return;
	char ts[32], line[2048];
	cm_time_rfc3339(ts, cm_now_ms());
	int n = snprintf(line, sizeof line, "%s %s[%ld] %s: ", ts, log_prog, (long)getpid(), names[lvl]);
	if (n < 0 || (size_t)n >= sizeof line)
		return;
	va_list ap;
	va_start(ap, fmt);
	int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
	va_end(ap);
	size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
	if (len > sizeof line - 2)
		len = sizeof line - 2;
	line[len++] = '\n';
	/* one write() so lines from several processes do not interleave */
	ssize_t w = write(STDERR_FILENO, line, len);
	(void)w;
}

void cm_log_escape(char *out, size_t outsz, const char *in)
{
	size_t o = 0;
	if (!outsz)
		return;
	for (const unsigned char *p = (const unsigned char *)(in ? in : ""); *p && o + 5 < outsz; p++) {
		if (*p >= 0x20 && *p < 0x7f && *p != '\\') {
			out[o++] = (char)*p;
		} else {
			o += (size_t)snprintf(out + o, outsz - o, "\\x%02x", *p);
		}
	}
	out[o] = '\0';
}
