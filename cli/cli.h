/* cli.h: what the launcher's commands share: finding installed files, the default settings
 * file, read-only database access and table/JSON-lines output of query results. */
#ifndef CM_CLI_H
#define CM_CLI_H

#include <sqlite3.h>
#include <stdio.h>
#include <yajl/yajl_gen.h>
#include "cm.h"

/* The settings file when --env-file is not given: ./.env from a build tree, and
 * SYSCONFDIR/container-manager/container-manager.conf when this program runs from BINDIR. */
const char *cli_default_env_file(void);
/* True when this program runs from its installed location (BINDIR). */
bool cli_installed(void);
/* Finds rel (e.g. "nginx/nginx.conf.in") under $CM_SHARE_DIR, the build tree or PKGDATADIR.
 * Writes the path into out and returns out, or NULL when it is nowhere. */
const char *cli_find_share(char *out, size_t outsz, const char *rel);
/* Opens the database read-only (no migration, no write). Returns NULL with the reason on stderr. */
sqlite3 *cli_db_open_ro(const char *path);
/* Writes the current row of st as one JSON object {column: value} plus "\n" to f. */
int cli_row_json(FILE *f, sqlite3_stmt *st);
/* Adds a SQLite value to g: integers and reals as numbers, NULL as null, the rest as strings. */
int cli_jg_column(yajl_gen g, sqlite3_stmt *st, int col);

struct cm_config;
/* Loads the settings of env_file and the database path; -1 with the reason on stderr. */
int cli_config_db(const char *env_file, struct cm_config *cfg, char *dbpath, size_t dbsz);
/* True when the unix stream socket dir/name accepts a connection. */
bool cli_unix_probe(const char *dir, const char *name);

/* One running stack per data directory (instance.c). Locks DATA/serve.lock for the life of
 * the caller and of the processes it starts (the fd is inherited); when another stack holds it and may_move (harpoon's `serve FILE`), moves cfg (and
 * CM_DATA_DIR, CM_RUN_DIR in the environment, for the children) to DATA/instances/N, the first
 * free one, saying so on stderr. Returns the lock's fd, or -1 with the reason on stderr. */
int cli_instance_claim(struct cm_config *cfg, const char *env_file, bool may_move);
/* The same for the run directory (sockets, nginx's pid and configuration). */
int cli_instance_claim_run_dir(const struct cm_config *cfg);
/* Writes "pid P, http://LISTEN/" into a held lock file, for the message of the one refused. */
int cli_instance_note(int fd, const char *http_listen);

int cmd_status(const char *env_file, int argc, char **argv);
int cmd_audit(const char *env_file, int argc, char **argv);
int cmd_backup(const char *env_file, int argc, char **argv);

#endif
