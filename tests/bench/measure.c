/* SPDX-License-Identifier: MIT */
/*
 * measure: runs one command and prints what it cost, for tests/bench/bench.py.
 *
 *   measure [--peak-rss] [--stdout FILE] -- CMD [ARG...]
 *
 * Prints one line to stdout after CMD has exited:
 *
 *   wall_ns=N start_ns=T status=S cpu_us=C tree_maxrss_kib=K [hwm_kib=H rss_kib=R]
 *
 * wall_ns is the monotonic time from just before fork() to the return of wait4(), so it covers
 * process creation, exec, the command and the reaping of its exit status. start_ns is the
 * CLOCK_MONOTONIC time of that fork(), for lining up timestamps that CMD records itself. status is the exit
 * status, or 128 + N when signal N ended CMD. cpu_us is the user plus system CPU time of CMD and
 * of its waited-for descendants. tree_maxrss_kib is wait4()'s ru_maxrss: the
 * largest peak resident set of CMD and of every descendant that was waited for, because Linux
 * fills wait4's rusage as getrusage(RUSAGE_BOTH) of the child.
 *
 * --peak-rss measures CMD's own process alone: it traces CMD with ptrace and, at the
 * PTRACE_EVENT_EXIT stop, where the exiting process still has its memory map, reads VmHWM
 * (peak resident set) and VmRSS from /proc/PID/status. Forked children are not traced. The
 * tracing adds a stop per signal CMD receives, so wall_ns of such a run is not a timing.
 *
 * CMD's stdin is /dev/null; its stdout goes to FILE (default /dev/null); its stderr is
 * inherited. Exits 0 when it measured CMD, whatever CMD's status, and 2 on its own errors.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct options {
	int peak_rss;
	const char *stdout_path;
	char **argv;
};

static long long monotonic_ns(void)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (long long) now.tv_sec * 1000000000LL + now.tv_nsec;
}

static long long timeval_us(const struct timeval *value)
{
	return (long long) value->tv_sec * 1000000LL + value->tv_usec;
}

static void usage(FILE *stream)
{
	fprintf(stream, "Usage: measure [--peak-rss] [--stdout FILE] -- CMD [ARG...]\n");
}

static int parse_options(int argc, char **argv, struct options *options)
{
	static const struct option long_options[] = {
		{ "peak-rss", no_argument, NULL, 'p' },
		{ "stdout", required_argument, NULL, 'o' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	memset(options, 0, sizeof(*options));
	options->stdout_path = "/dev/null";
	while ((c = getopt_long(argc, argv, "+", long_options, NULL)) != -1) {
		switch (c) {
		case 'p':
			options->peak_rss = 1;
			break;
		case 'o':
			options->stdout_path = optarg;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			return -1;
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return -1;
	}
	options->argv = argv + optind;
	return 0;
}

/* Runs in the forked child: sets up stdio (and tracing) and executes the command. */
static void exec_command(const struct options *options)
{
	int in = open("/dev/null", O_RDONLY | O_CLOEXEC);
	int out = open(options->stdout_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	if (in < 0 || out < 0) {
		fprintf(stderr, "measure: cannot open %s: %s\n",
			in < 0 ? "/dev/null" : options->stdout_path, strerror(errno));
		_exit(127);
	}
	if (dup2(in, STDIN_FILENO) < 0 || dup2(out, STDOUT_FILENO) < 0) {
		fprintf(stderr, "measure: dup2 failed: %s\n", strerror(errno));
		_exit(127);
	}
	if (options->peak_rss && ptrace(PTRACE_TRACEME, 0, NULL, NULL) < 0) {
		fprintf(stderr, "measure: PTRACE_TRACEME failed: %s\n", strerror(errno));
		_exit(127);
	}
	execvp(options->argv[0], options->argv);
	fprintf(stderr, "measure: cannot run %s: %s\n", options->argv[0], strerror(errno));
	_exit(127);
}

/* Reads the "NAME:   N kB" line of /proc/PID/status into *KIB, which stays as it was if the
 * line is missing. */
static void read_status_kib(pid_t pid, const char *name, long *kib)
{
	char path[64], line[256];
	size_t name_length = strlen(name);
	FILE *file;

	snprintf(path, sizeof(path), "/proc/%d/status", (int) pid);
	file = fopen(path, "re");
	if (file == NULL)
		return;
	while (fgets(line, sizeof(line), file) != NULL) {
		if (strncmp(line, name, name_length) == 0 && line[name_length] == ':') {
			*kib = strtol(line + name_length + 1, NULL, 10);
			break;
		}
	}
	fclose(file);
}

/*
 * Follows the traced child until it exits. Signals it receives are passed on unchanged; at
 * the exit event its peak and current RSS are read. PTRACE_O_TRACEEXEC turns a later execve()
 * into an event stop, since without it the kernel sends the tracee a real SIGTRAP. Returns wait4()'s status of the exit.
 */
static int trace_until_exit(pid_t pid, struct rusage *usage, long *hwm_kib, long *rss_kib)
{
	int status, options_set = 0;

	for (;;) {
		int signal_number = 0;

		if (wait4(pid, &status, 0, usage) < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (WIFEXITED(status) || WIFSIGNALED(status))
			return status;
		if (!WIFSTOPPED(status))
			continue;

		if (!options_set) {
			/* The first stop is the SIGTRAP that follows a traced execve(). */
			if (ptrace(PTRACE_SETOPTIONS, pid, NULL,
				   (void *) (PTRACE_O_TRACEEXIT | PTRACE_O_TRACEEXEC |
					     PTRACE_O_EXITKILL)) < 0)
				return -1;
			options_set = 1;
		} else if (status >> 8 == (SIGTRAP | (PTRACE_EVENT_EXIT << 8))) {
			read_status_kib(pid, "VmHWM", hwm_kib);
			read_status_kib(pid, "VmRSS", rss_kib);
		} else if (status >> 16 == 0) {
			signal_number = WSTOPSIG(status);
		}
		/* Other event stops (a later execve) carry no signal to pass on. */
		if (ptrace(PTRACE_CONT, pid, NULL, (void *) (long) signal_number) < 0 &&
		    errno != ESRCH)
			return -1;
	}
}

int main(int argc, char **argv)
{
	struct options options;
	struct rusage usage;
	long hwm_kib = -1, rss_kib = -1;
	long long started, ended;
	int status, exit_status;
	pid_t pid;

	if (parse_options(argc, argv, &options) < 0)
		return 2;

	fflush(stdout);
	started = monotonic_ns();
	pid = fork();
	if (pid < 0) {
		fprintf(stderr, "measure: fork failed: %s\n", strerror(errno));
		return 2;
	}
	if (pid == 0)
		exec_command(&options);

	if (options.peak_rss) {
		status = trace_until_exit(pid, &usage, &hwm_kib, &rss_kib);
		if (status < 0) {
			fprintf(stderr, "measure: tracing %s failed: %s\n", options.argv[0],
				strerror(errno));
			kill(pid, SIGKILL);
			return 2;
		}
	} else {
		while (wait4(pid, &status, 0, &usage) < 0) {
			if (errno != EINTR) {
				fprintf(stderr, "measure: wait4 failed: %s\n", strerror(errno));
				return 2;
			}
		}
	}
	ended = monotonic_ns();

	exit_status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	printf("wall_ns=%lld start_ns=%lld status=%d cpu_us=%lld tree_maxrss_kib=%ld",
	       ended - started, started, exit_status, timeval_us(&usage.ru_utime) + timeval_us(&usage.ru_stime),
	       usage.ru_maxrss);
	if (options.peak_rss)
		printf(" hwm_kib=%ld rss_kib=%ld", hwm_kib, rss_kib);
	printf("\n");
	return fflush(stdout) == 0 ? 0 : 2;
}
