/* instance.c: one running stack per data directory and per run directory. `serve` takes an
 * exclusive lock on DATA/serve.lock and RUN_DIR/serve.lock for its whole life; a second stack
 * on the same directories would share the database (and wipe the first's start_container
 * state) and replace the first's sockets, which its nginx then loses at the second's stop.
 * harpoon's `serve FILE`, which test suites start side by side from one project directory,
 * moves to a data directory of its own instead (DATA/instances/N, the first one free); a
 * foreground `serve` refuses, naming the stack that holds the directory. */
#include "config.h"
#include "cli.h"
#include "cm.h"
#include "cm_config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_INSTANCES 64

/* Tries the lock dir/serve.lock. Returns the fd (held) when taken, -1 with errno EWOULDBLOCK
 * when another stack holds it (its "pid listen" line in holder), -1 with another errno on
 * failure. The fd is inherited by the stack's processes on purpose: when the supervisor is
 * killed, the processes it leaves behind still hold the directory, and a new stack never
 * takes over their sockets. */
static int try_lock(const char *dir, char *holder, size_t holdersz)
{
	char path[PATH_MAX];
	if (cm_pathf(path, sizeof path, "%s/serve.lock", dir) < 0) {
		errno = ENAMETOOLONG;
		return -1;
	}
	int fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW, 0600);
	if (fd < 0)
		return -1;
	if (flock(fd, LOCK_EX | LOCK_NB) == 0)
		return fd;
	int e = errno;
	if (holder && holdersz) {
		ssize_t n = pread(fd, holder, holdersz - 1, 0);
		holder[n > 0 ? n : 0] = '\0';
		holder[strcspn(holder, "\n")] = '\0';
	}
	close(fd);
	errno = e;
	return -1;
}

int cli_instance_note(int fd, const char *http_listen)
{
	char line[256];
	int n = snprintf(line, sizeof line, "pid %d, http://%s/\n", (int)getpid(), http_listen);
	if (n < 0 || (size_t)n >= sizeof line || ftruncate(fd, 0) < 0 || pwrite(fd, line, (size_t)n, 0) != n)
		return -1;
	return 0;
}

/* Reloads the settings with CM_DATA_DIR (and, when it was set explicitly, CM_RUN_DIR) moved to
 * instance slot n. */
static int move_to_slot(struct cm_config *cfg, const char *env_file, const char *slot, int n)
{
	char old_run[PATH_MAX];
	snprintf(old_run, sizeof old_run, "%s", cfg->run_dir);
	struct cm_error err = {0};
	if (setenv("CM_DATA_DIR", slot, 1) < 0 || cm_config_load(cfg, env_file, &err) < 0) {
		fprintf(stderr, "container-manager: %s\n", err.message[0] ? err.message : strerror(errno));
		return -1;
	}
	if (!strcmp(cfg->run_dir, old_run)) {
		/* CM_RUN_DIR is set: the instance gets a directory inside it */
		char rd[PATH_MAX];
		if (cm_pathf(rd, sizeof rd, "%s/instance-%d", old_run, n) < 0 || setenv("CM_RUN_DIR", rd, 1) < 0 ||
		    cm_config_load(cfg, env_file, &err) < 0) {
			fprintf(stderr, "container-manager: %s\n", err.message[0] ? err.message : "run directory path too long");
			return -1;
		}
	}
	return 0;
}

int cli_instance_claim(struct cm_config *cfg, const char *env_file, bool may_move)
{
	char holder[200] = "";
	if (cm_mkdir_p(cfg->data_dir, 0711) < 0) {
		fprintf(stderr, "container-manager: cannot create %s: %s\n", cfg->data_dir, strerror(errno));
		return -1;
	}
	int fd = try_lock(cfg->data_dir, holder, sizeof holder);
	if (fd >= 0)
		return fd;
	if (errno != EWOULDBLOCK) {
		fprintf(stderr, "container-manager: cannot lock %s/serve.lock: %s\n", cfg->data_dir, strerror(errno));
		return -1;
	}
	if (!may_move) {
		fprintf(stderr,
			"container-manager: the data directory %s is in use by another running stack (%s); stop that one, "
			"or give this one a CM_DATA_DIR of its own\n",
			cfg->data_dir, holder[0] ? holder : "pid unknown");
		return -1;
	}
	char base[PATH_MAX], slot[PATH_MAX];
	if (cm_pathf(base, sizeof base, "%s/instances", cfg->data_dir) < 0 || cm_mkdir_p(base, 0711) < 0) {
		fprintf(stderr, "container-manager: cannot create %s/instances: %s\n", cfg->data_dir, strerror(errno));
		return -1;
	}
	char first_holder[sizeof holder];
	snprintf(first_holder, sizeof first_holder, "%s", holder);
	for (int n = 1; n <= MAX_INSTANCES; n++) {
		if (cm_pathf(slot, sizeof slot, "%s/%d", base, n) < 0 || cm_mkdir_p(slot, 0711) < 0) {
			fprintf(stderr, "container-manager: cannot create %s: %s\n", slot, strerror(errno));
			return -1;
		}
		fd = try_lock(slot, NULL, 0);
		if (fd < 0 && errno == EWOULDBLOCK)
			continue;
		if (fd < 0) {
			fprintf(stderr, "container-manager: cannot lock %s/serve.lock: %s\n", slot, strerror(errno));
			return -1;
		}
		fprintf(stderr,
			"container-manager: the data directory %s is in use by another running stack (%s); this one keeps "
			"its state in %s\n",
			cfg->data_dir, first_holder[0] ? first_holder : "pid unknown", slot);
		if (move_to_slot(cfg, env_file, slot, n) < 0) {
			close(fd);
			return -1;
		}
		return fd;
	}
	fprintf(stderr, "container-manager: %s and its %d instance directories are all in use by running stacks\n",
		cfg->data_dir, MAX_INSTANCES);
	return -1;
}

int cli_instance_claim_run_dir(const struct cm_config *cfg)
{
	char holder[200] = "";
	int fd = try_lock(cfg->run_dir, holder, sizeof holder);
	if (fd >= 0)
		return fd;
	if (errno == EWOULDBLOCK)
		fprintf(stderr,
			"container-manager: the run directory %s is in use by another running stack (%s); give this one a "
			"CM_RUN_DIR of its own\n",
			cfg->run_dir, holder[0] ? holder : "pid unknown");
	else
		fprintf(stderr, "container-manager: cannot lock %s/serve.lock: %s\n", cfg->run_dir, strerror(errno));
	return -1;
}
