/* proc.c: signals and clean-up for exec'd processes, through the host's /proc. Every action
 * first checks that the pid still names the same process (start time and pid namespace), so
 * a pid reused after the session's process ended is never signalled. */
#include "config.h"
#include "ws.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct pstat {
	pid_t pgrp, session, tpgid;
	unsigned long long starttime;
};

static int read_stat(pid_t pid, struct pstat *st)
{
	char path[64], buf[1024];
	snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	/* the command name may hold spaces and parentheses: fields resume after the last ')' */
	char *p = strrchr(buf, ')');
	if (!p)
		return -1;
	char state;
	int ppid, pgrp, session, tty_nr, tpgid;
	unsigned long long starttime;
	/* state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime stime
	 * cutime cstime priority nice num_threads itrealvalue starttime */
	if (sscanf(p + 1, " %c %d %d %d %d %d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d %*d %llu", &state, &ppid,
		   &pgrp, &session, &tty_nr, &tpgid, &starttime) != 7)
		return -1;
	if (state == 'Z' || state == 'X')
		return -1;
	st->pgrp = pgrp;
	st->session = session;
	st->tpgid = tpgid;
	st->starttime = starttime;
	return 0;
}

static unsigned long long pidns_of(pid_t pid)
{
	char path[64];
	struct stat sb;
	snprintf(path, sizeof path, "/proc/%d/ns/pid", (int)pid);
	if (stat(path, &sb) < 0)
		return 0;
	return (unsigned long long)sb.st_ino;
}

int proc_identify(pid_t pid, struct proc_id *out)
{
	struct pstat st;
	memset(out, 0, sizeof *out);
	if (pid <= 1 || read_stat(pid, &st) < 0)
		return -1;
	out->pid = pid;
	out->starttime = st.starttime;
	out->pidns = pidns_of(pid);
	return out->pidns ? 0 : -1;
}

bool proc_same(const struct proc_id *id)
{
	struct pstat st;
	return id->pid > 1 && read_stat(id->pid, &st) == 0 && st.starttime == id->starttime &&
	       pidns_of(id->pid) == id->pidns;
}

int proc_signal(const struct proc_id *id, bool tty, int sig)
{
	struct pstat st;
	if (id->pid <= 1 || read_stat(id->pid, &st) < 0 || st.starttime != id->starttime || pidns_of(id->pid) != id->pidns)
		return -1;
	/* a terminal's signals go to its foreground job (what ^C does); otherwise to the group
	 * the exec'd process leads (Docker makes it a session and group leader) */
	pid_t target = tty && st.tpgid > 1 ? st.tpgid : (st.pgrp == id->pid ? id->pid : 0);
	if (target > 1 && kill(-target, sig) == 0)
		return 0;
	return kill(id->pid, sig) == 0 ? 0 : -1;
}

int proc_kill_session(const struct proc_id *id)
{
	if (id->pid <= 1 || !id->pidns)
		return 0;
	DIR *d = opendir("/proc");
	if (!d)
		return -1;
	int killed = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		char *end;
		long p = strtol(de->d_name, &end, 10);
		if (*end || p <= 1)
			continue;
		struct pstat st;
		if (read_stat((pid_t)p, &st) < 0 || st.session != id->pid)
			continue;
		/* the same session id in another pid namespace is someone else's */
		if (pidns_of((pid_t)p) != id->pidns || st.starttime < id->starttime)
			continue;
		if (kill((pid_t)p, SIGKILL) == 0)
			killed++;
	}
	closedir(d);
	return killed;
}

