/* audit.c: `container-manager audit`: runs the ready queries of sql/audit/ (named parameters
 * from NAME=VALUE arguments) as a table or as JSON lines, and exports the audit table as
 * actions.jsonl lines (one JSON object per request or session). Read-only. */
#include "config.h"
#include "cli.h"
#include "cm_config.h"
#include "json.h"

#include <dirent.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#define MAX_PARAMS 16

static void audit_usage(void)
{
	fprintf(stderr, "usage: container-manager audit list\n"
			"       container-manager audit QUERY [NAME=VALUE]... [--json] [--env-file FILE]\n"
			"       container-manager audit export [--since TIME] [--until TIME] [--env-file FILE]\n");
}

/* The description of a query file: its leading comment lines joined, without the file's
 * own name ("-- name.sql" or "-- name.sql: ..."). */
static void query_title(const char *sql, char *out, size_t outsz)
{
	size_t o = 0;
	out[0] = '\0';
	for (const char *p = sql; !strncmp(p, "--", 2);) {
		const char *eol = strchr(p, '\n');
		size_t len = eol ? (size_t)(eol - p) : strlen(p);
		const char *t = p + 2;
		while (*t == ' ')
			t++;
		size_t tl = len - (size_t)(t - p);
		const char *dot = tl >= 4 ? memmem(t, tl, ".sql", 4) : NULL;
		if (dot && !memchr(t, ' ', (size_t)(dot - t))) {
			/* the file's name, alone or before a colon */
			const char *rest = dot + 4;
			if (rest < t + tl && *rest == ':')
				rest++;
			tl -= (size_t)(rest - t);
			t = rest;
			while (tl && *t == ' ')
				t++, tl--;
		}
		if (tl && o + 2 < outsz) {
			int n = snprintf(out + o, outsz - o, "%s%.*s", o ? " " : "", (int)tl, t);
			o = n < 0 ? o : (size_t)n + o >= outsz ? outsz - 1 : o + (size_t)n;
		}
		if (!eol)
			break;
		p = eol + 1;
	}
}

static int audit_list(void)
{
	char dir[PATH_MAX];
	if (!cli_find_share(dir, sizeof dir, "sql/audit")) {
		fprintf(stderr, "container-manager: the audit queries (sql/audit) are not installed (set CM_SHARE_DIR)\n");
		return 1;
	}
	struct dirent **ents = NULL;
	int n = scandir(dir, &ents, NULL, alphasort);
	if (n < 0) {
		fprintf(stderr, "container-manager: %s: %m\n", dir);
		return 1;
	}
	for (int i = 0; i < n; i++) {
		size_t l = strlen(ents[i]->d_name);
		if (l > 4 && !strcmp(ents[i]->d_name + l - 4, ".sql")) {
			char path[PATH_MAX], title[300];
			char *sql = cm_pathf(path, sizeof path, "%s/%s", dir, ents[i]->d_name) == 0 ? cm_read_file(path, 1 << 20, NULL)
												    : NULL;
			query_title(sql ? sql : "", title, sizeof title);
			printf("%-20.*s %s\n", (int)(l - 4), ents[i]->d_name, title);
			free(sql);
		}
		free(ents[i]);
	}
	free(ents);
	return 0;
}

/* Prints the rows of st as an aligned table with a header (NULL as an empty cell). */
static int print_table(sqlite3_stmt *st, sqlite3 *h)
{
	int ncol = sqlite3_column_count(st);
	size_t *w = calloc((size_t)ncol, sizeof *w);
	char ***rows = NULL;
	size_t nrows = 0, cap = 0;
	int rc, ret = 0;
	if (!w)
		return -1;
	for (int c = 0; c < ncol; c++)
		w[c] = strlen(sqlite3_column_name(st, c));
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (nrows == cap) {
			cap = cap ? cap * 2 : 64;
			char ***nr = realloc(rows, cap * sizeof *rows);
			if (!nr) {
				ret = -1;
				break;
			}
			rows = nr;
		}
		char **row = calloc((size_t)ncol, sizeof *row);
		if (!row) {
			ret = -1;
			break;
		}
		rows[nrows++] = row;
		for (int c = 0; c < ncol; c++) {
			const char *v = (const char *)sqlite3_column_text(st, c);
			char esc[1024];
			cm_log_escape(esc, sizeof esc, v ? v : "");
			row[c] = strdup(esc);
			if (!row[c]) {
				ret = -1;
				break;
			}
			if (strlen(row[c]) > w[c])
				w[c] = strlen(row[c]);
		}
		if (ret < 0)
			break;
	}
	if (ret == 0 && rc != SQLITE_DONE) {
		fprintf(stderr, "container-manager: %s\n", sqlite3_errmsg(h));
		ret = -1;
	}
	if (ret == 0) {
		for (int c = 0; c < ncol; c++)
			printf("%-*s%s", c + 1 < ncol ? (int)w[c] : 0, sqlite3_column_name(st, c), c + 1 < ncol ? "  " : "\n");
		for (int c = 0; c < ncol; c++) {
			for (size_t k = 0; k < w[c]; k++)
				putchar('-');
			fputs(c + 1 < ncol ? "  " : "\n", stdout);
		}
		for (size_t r = 0; r < nrows; r++)
			for (int c = 0; c < ncol; c++)
				printf("%-*s%s", c + 1 < ncol ? (int)w[c] : 0, rows[r][c] ? rows[r][c] : "", c + 1 < ncol ? "  " : "\n");
	}
	for (size_t r = 0; r < nrows; r++) {
		for (int c = 0; c < ncol; c++)
			free(rows[r][c]);
		free(rows[r]);
	}
	free(rows);
	free(w);
	return ret;
}

static int print_json(sqlite3_stmt *st, sqlite3 *h)
{
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
		if (cli_row_json(stdout, st) < 0)
			return -1;
	if (rc != SQLITE_DONE) {
		fprintf(stderr, "container-manager: %s\n", sqlite3_errmsg(h));
		return -1;
	}
	return 0;
}

/* Runs every statement of sql with the NAME=VALUE parameters bound. Returns the exit status. */
static int run_query(sqlite3 *h, const char *name, const char *sql, char **params, int nparams, bool json)
{
	const char *tail = sql;
	int status = 0;
	while (status == 0 && tail && *tail) {
		sqlite3_stmt *st = NULL;
		if (sqlite3_prepare_v2(h, tail, -1, &st, &tail) != SQLITE_OK) {
			fprintf(stderr, "container-manager: %s: %s\n", name, sqlite3_errmsg(h));
			return 1;
		}
		if (!st) /* only comments or blanks were left */
			break;
		for (int i = 1; i <= sqlite3_bind_parameter_count(st); i++) {
			const char *pn = sqlite3_bind_parameter_name(st, i);
			const char *val = NULL;
			for (int k = 0; pn && k < nparams; k++) {
				size_t nl = strcspn(params[k], "=");
				if (strlen(pn + 1) == nl && !strncmp(params[k], pn + 1, nl))
					val = params[k] + nl + 1;
			}
			if (!val) {
				fprintf(stderr, "container-manager: %s needs %s=VALUE\n", name, pn ? pn + 1 : "?");
				sqlite3_finalize(st);
				return 2;
			}
			sqlite3_bind_text(st, i, val, -1, SQLITE_TRANSIENT);
		}
		if (sqlite3_column_count(st) == 0) {
			/* only queries are run here: the connection is read-only anyway */
			sqlite3_finalize(st);
			continue;
		}
		if ((json ? print_json(st, h) : print_table(st, h)) < 0)
			status = 1;
		sqlite3_finalize(st);
	}
	return status;
}

/* seed 004's error types by HTTP status (the audit row keeps the precise code) */
static const char *error_type(long status)
{
	static const struct {
		long status;
		const char *type;
	} map[] = {
		{400, "validation_error"}, {401, "auth_error"}, {403, "forbidden"}, {404, "not_found"},
		{405, "method_not_allowed"}, {408, "timeout"}, {409, "conflict"}, {410, "gone"},
		{412, "precondition_failed"}, {413, "payload_too_large"}, {414, "validation_error"},
		{422, "validation_error"}, {426, "validation_error"}, {429, "too_many_requests"},
		{431, "validation_error"}, {500, "internal_error"}, {502, "unavailable"}, {503, "unavailable"},
		{504, "timeout"}, {507, "io_error"},
	};
	for (size_t i = 0; i < CM_ARRAY_LEN(map); i++)
		if (map[i].status == status)
			return map[i].type;
	return status >= 500 ? "internal_error" : "validation_error";
}

/* One actions.jsonl line per audit row, oldest first (by time: a row is written when its request
 * ends, so row ids do not follow the times when requests overlap). since/until: RFC 3339 bounds or NULL. */
static int audit_export(sqlite3 *h, const char *since, const char *until)
{
	static const char sql[] =
		"SELECT ts, request_id, user, remote_addr, method, path, cuid, action, status, error_code, "
		"duration_ms, job_id, command, bytes_in, bytes_out, exit_code FROM audit "
		"WHERE (?1 IS NULL OR ts >= ?1) AND (?2 IS NULL OR ts < ?2) ORDER BY ts, id";
	static const char *const keys[] = {"timestamp", "request_id", "user", "remote_addr", "method", "path",
					   "cuid", "action", "status", "code", "duration_ms", "job_id",
					   "command", "bytes_in", "bytes_out", "exit_code"};
	sqlite3_stmt *st = NULL;
	if (sqlite3_prepare_v2(h, sql, -1, &st, NULL) != SQLITE_OK) {
		fprintf(stderr, "container-manager: export: %s\n", sqlite3_errmsg(h));
		return 1;
	}
	if (since)
		sqlite3_bind_text(st, 1, since, -1, SQLITE_STATIC);
	if (until)
		sqlite3_bind_text(st, 2, until, -1, SQLITE_STATIC);
	int rc, status = 0;
	while (status == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		yajl_gen g = cm_jg_new();
		if (!g) {
			status = 1;
			break;
		}
		int ok = yajl_gen_map_open(g) == yajl_gen_status_ok ? 0 : -1;
		for (int c = 0; ok == 0 && c < (int)CM_ARRAY_LEN(keys); c++) {
			/* the session columns only on session rows */
			if (c >= 12 && sqlite3_column_type(st, c) == SQLITE_NULL)
				continue;
			if (cm_jg_str(g, keys[c]) < 0 || cli_jg_column(g, st, c) < 0)
				ok = -1;
			if (c == 9) {
				long http = sqlite3_column_int(st, 8);
				ok |= cm_jg_str(g, "error");
				ok |= http >= 400 ? cm_jg_str(g, error_type(http)) : cm_jg_null(g);
			}
		}
		if (ok == 0 && yajl_gen_map_close(g) != yajl_gen_status_ok)
			ok = -1;
		char *line = cm_jg_finish(g);
		if (ok < 0 || !line || printf("%s\n", line) < 0)
			status = 1;
		free(line);
	}
	if (status == 0 && rc != SQLITE_DONE) {
		fprintf(stderr, "container-manager: export: %s\n", sqlite3_errmsg(h));
		status = 1;
	}
	sqlite3_finalize(st);
	return status;
}

int cmd_audit(const char *env_file, int argc, char **argv)
{
	const char *query = NULL, *since = NULL, *until = NULL;
	char *params[MAX_PARAMS];
	int nparams = 0;
	bool json = false;
	for (int i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--env-file") && i + 1 < argc) {
			env_file = argv[++i];
		} else if (!strcmp(argv[i], "--json")) {
			json = true;
		} else if (!strcmp(argv[i], "--since") && i + 1 < argc) {
			since = argv[++i];
		} else if (!strcmp(argv[i], "--until") && i + 1 < argc) {
			until = argv[++i];
		} else if (argv[i][0] != '-' && !query) {
			query = argv[i];
		} else if (argv[i][0] != '-' && strchr(argv[i], '=') && strchr(argv[i], '=') != argv[i] && nparams < MAX_PARAMS) {
			params[nparams++] = argv[i];
		} else {
			audit_usage();
			return 2;
		}
	}
	if (!query) {
		audit_usage();
		return 2;
	}
	if (!strcmp(query, "list"))
		return audit_list();
	if (strcmp(query, "export") && (since || until)) {
		audit_usage();
		return 2;
	}
	/* a query name is a file name in sql/audit, nothing else */
	if (strcmp(query, "export") && (!*query || strspn(query, "abcdefghijklmnopqrstuvwxyz0123456789-_") != strlen(query))) {
		fprintf(stderr, "container-manager: no audit query named %s (`container-manager audit list`)\n", query);
		return 2;
	}
	struct cm_config cfg;
	char dbpath[PATH_MAX];
	if (cli_config_db(env_file, &cfg, dbpath, sizeof dbpath) < 0)
		return 1;
	if (!strcmp(query, "export")) {
		sqlite3 *h = cli_db_open_ro(dbpath);
		if (!h)
			return 1;
		int rc = audit_export(h, since, until);
		sqlite3_close(h);
		return rc;
	}
	char rel[128], path[PATH_MAX];
	snprintf(rel, sizeof rel, "sql/audit/%s.sql", query);
	if (!cli_find_share(path, sizeof path, rel)) {
		fprintf(stderr, "container-manager: no audit query named %s (`container-manager audit list`)\n", query);
		return 2;
	}
	char *sql = cm_read_file(path, 1 << 20, NULL);
	if (!sql) {
		fprintf(stderr, "container-manager: %s: %m\n", path);
		return 1;
	}
	sqlite3 *h = cli_db_open_ro(dbpath);
	int rc = h ? run_query(h, query, sql, params, nparams, json) : 1;
	sqlite3_close(h);
	free(sql);
	return rc;
}
