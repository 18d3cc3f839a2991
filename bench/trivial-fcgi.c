/* trivial-fcgi.c: the reference FastCGI responder the benchmarks compare the service with.
 * It answers every request with a fixed JSON body about the size of a container object
 * (~500 bytes) and the same kind of headers the service sends, and does nothing else:
 * no parsing, no authentication, no SQLite, no audit row. That is the floor for a FastCGI
 * program behind the same nginx.
 *
 *   cc -O2 -o bench/trivial-fcgi bench/trivial-fcgi.c -lfcgi
 *   bench/trivial-fcgi SOCKET NPROCS [GROUP]
 *
 * Listens on the unix socket SOCKET (group GROUP, mode 0660, so nginx's www-data workers can
 * connect), forks NPROCS processes that all accept on it (like the service's pre-forked pool)
 * and runs until SIGTERM/SIGINT, which it passes on to the processes before removing the socket.
 * Every process also dies with its parent (PR_SET_PDEATHSIG), so a killed benchmark leaves
 * nothing behind. */
#include <errno.h>
#include <fcgiapp.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_PROCS 256

static const char body[] =
	"{\"cuid\":\"c3f0b7f2e-9d41-4c6a-8f6e-2b7f5d1c0a93\",\"image\":\"cm-bench-busybox:latest\","
	"\"command\":[\"sleep\",\"3600\"],\"env\":{},\"tags\":[],"
	"\"resources\":{\"cpus\":null,\"memory\":1073741824,\"pids\":512},\"ports\":[],\"status\":\"running\","
	"\"docker_id\":\"5f2c9e1d7b3a4c8e9f0a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5a6\","
	"\"exit_code\":null,\"started_at\":\"2026-01-01T00:00:00.123Z\",\"finished_at\":null,"
	"\"restart_count\":0,\"created_at\":\"2026-01-01T00:00:00.012Z\","
	"\"updated_at\":\"2026-01-01T00:00:00.125Z\"}";

static volatile sig_atomic_t stop;
static pid_t kids[MAX_PROCS];
static int nkids;

static void on_stop(int sig)
{
	(void)sig;
	stop = 1;
}

static int serve(int fd)
{
	prctl(PR_SET_PDEATHSIG, SIGTERM);
	signal(SIGTERM, SIG_DFL);
	signal(SIGINT, SIG_DFL);
	signal(SIGPIPE, SIG_IGN);
	FCGX_Request req;
	if (FCGX_InitRequest(&req, fd, 0) != 0)
		return 1;
	char head[256];
	while (FCGX_Accept_r(&req) >= 0) {
		const char *rid = FCGX_GetParam("REQUEST_ID", req.envp);
		int n = snprintf(head, sizeof head,
				 "Status: 200 OK\r\nX-Request-Id: %s\r\nCache-Control: no-store\r\n"
				 "Content-Type: application/json\r\nContent-Length: %zu\r\nETag: \"3\"\r\n\r\n",
				 rid ? rid : "-", sizeof body - 1);
		FCGX_PutStr(head, n, req.out);
		FCGX_PutStr(body, (int)(sizeof body - 1), req.out);
		FCGX_Finish_r(&req);
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: trivial-fcgi SOCKET NPROCS [GROUP]\n");
		return 2;
	}
	const char *path = argv[1];
	int n = atoi(argv[2]);
	if (n < 1 || n > MAX_PROCS) {
		fprintf(stderr, "trivial-fcgi: NPROCS must be 1..%d\n", MAX_PROCS);
		return 2;
	}
	prctl(PR_SET_PDEATHSIG, SIGTERM);
	if (FCGX_Init() != 0)
		return 1;
	unlink(path);
	int fd = FCGX_OpenSocket(path, 1024);
	if (fd < 0) {
		fprintf(stderr, "trivial-fcgi: cannot listen on %s\n", path);
		return 1;
	}
	if (argc > 3) {
		struct group *gr = getgrnam(argv[3]);
		if (!gr || chown(path, (uid_t)-1, gr->gr_gid) < 0) {
			fprintf(stderr, "trivial-fcgi: cannot give %s to group %s\n", path, argv[3]);
			return 1;
		}
	}
	if (chmod(path, 0660) < 0)
		return 1;
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_stop;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	for (int i = 0; i < n; i++) {
		pid_t pid = fork();
		if (pid < 0) {
			perror("trivial-fcgi: fork");
			stop = 1;
			break;
		}
		if (pid == 0)
			_exit(serve(fd));
		kids[nkids++] = pid;
	}
	fprintf(stderr, "trivial-fcgi: listening on %s with %d processes\n", path, nkids);
	while (!stop) {
		pid_t pid = waitpid(-1, NULL, 0);
		if (pid < 0 && errno == ECHILD)
			break;
		if (pid > 0) /* a responder died: that would skew the benchmark, so say so and stop */
			fprintf(stderr, "trivial-fcgi: process %ld ended unexpectedly\n", (long)pid), stop = 1;
	}
	for (int i = 0; i < nkids; i++)
		kill(kids[i], SIGTERM);
	while (waitpid(-1, NULL, 0) > 0 || errno == EINTR)
		;
	unlink(path);
	return 0;
}
