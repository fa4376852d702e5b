/* SPDX-License-Identifier: MIT */
/* Starting the job init and its setup inside the new namespaces. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/sched.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/pidfd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cleanup.h"
#include "error.h"
#include "ids.h"
#include "init.h"
#include "init_serve.h"
#include "mounts.h"
#include "process.h"
#include "util.h"

#define NAMESPACE_FLAGS \
	(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS)

/* Messages on the report pipe. Each is one write() below PIPE_BUF, so it arrives whole. */
enum report_kind {
	REPORT_PID = 'P', /* the helper cloned the init and wrote its maps */
	REPORT_READY = 'R', /* the init is serving */
	REPORT_ERROR = 'E', /* TEXT names what failed */
};

struct report {
	char kind;
	int32_t pid;
	char text[1024];
};

/* Descriptor numbers the detached init keeps; everything above them is closed. */
enum { KEEP_CONTROL_FD = 3, KEEP_PROXY_FD = 4, KEEP_REPORT_FD = 5 };

static void send_report(int fd, char kind, pid_t pid, const char *text)
{
	struct report report;

	memset(&report, 0, sizeof(report));
	report.kind = kind;
	report.pid = (int32_t) pid;
	if (text != NULL)
		snprintf(report.text, sizeof(report.text), "%s", text);
	(void) !write(fd, &report, sizeof(report));
}

/* Reports a failure, with strerror(ERRNUM) appended unless ERRNUM is 0, and exits. */
static void __attribute__((noreturn)) init_fail(int report_fd, int errnum, const char *format,
						...) __attribute__((format(printf, 3, 4)));

static void init_fail(int report_fd, int errnum, const char *format, ...)
{
	char text[1024];
	size_t used;
	va_list args;

	va_start(args, format);
	vsnprintf(text, sizeof(text), format, args);
	va_end(args);
	used = strlen(text);
	if (errnum != 0)
		snprintf(text + used, sizeof(text) - used, ": %s", strerror(errnum));
	send_report(report_fd, REPORT_ERROR, 0, text);
	_exit(1);
}

/* Brings up lo and adds 127.0.0.2/8. With 127.0.0.1 as the only IPv4 address, glibc's
 * AI_ADDRCONFIG finds no IPv4 address and getaddrinfo(AF_INET) fails even for 127.0.0.1. */
static int setup_loopback(char *message, size_t size)
{
	struct ifreq request;
	struct sockaddr_in *address = (struct sockaddr_in *) &request.ifr_addr;
	_cleanup_close_ int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	if (fd < 0) {
		snprintf(message, size, "cannot create a socket: %s", strerror(errno));
		return -1;
	}
	memset(&request, 0, sizeof(request));
	snprintf(request.ifr_name, sizeof(request.ifr_name), "lo");
	if (ioctl(fd, SIOCGIFFLAGS, &request) < 0) {
		snprintf(message, size, "cannot read the flags of lo: %s", strerror(errno));
		return -1;
	}
	request.ifr_flags |= IFF_UP | IFF_RUNNING;
	if (ioctl(fd, SIOCSIFFLAGS, &request) < 0) {
		snprintf(message, size, "cannot bring up lo: %s", strerror(errno));
		return -1;
	}

	memset(&request, 0, sizeof(request));
	snprintf(request.ifr_name, sizeof(request.ifr_name), "lo:1");
	address->sin_family = AF_INET;
	address->sin_addr.s_addr = htonl(0x7f000002);
	if (ioctl(fd, SIOCSIFADDR, &request) < 0) {
		snprintf(message, size, "cannot add 127.0.0.2 to lo: %s", strerror(errno));
		return -1;
	}
	address->sin_addr.s_addr = htonl(0xff000000);
	if (ioctl(fd, SIOCSIFNETMASK, &request) < 0) {
		snprintf(message, size, "cannot set the netmask of 127.0.0.2: %s", strerror(errno));
		return -1;
	}
	return 0;
}

static int create_proxy_listener(uint16_t port, char *message, size_t size)
{
	struct sockaddr_in address = { .sin_family = AF_INET, .sin_port = htons(port) };
	int one = 1;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(fd, (struct sockaddr *) &address, sizeof(address)) < 0 || listen(fd, 128) < 0) {
		snprintf(message, size, "cannot listen on 127.0.0.1:%u in the job's network: %s",
			 (unsigned) port, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
}

/* Moves FD to TARGET without the close-on-exec flag mattering: the init never execs. */
static int move_fd(int fd, int target)
{
	if (fd == target)
		return 0;
	if (dup3(fd, target, O_CLOEXEC) < 0)
		return -1;
	close(fd);
	return 0;
}

/* Reads env_start and env_end (fields 50 and 51 of /proc/self/stat, Linux 3.5+). */
static int environment_area(unsigned long *start, unsigned long *end)
{
	char buf[4096];
	ssize_t length;
	const char *p;
	int fd, field = 2;

	fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	length = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (length <= 0)
		return -1;
	buf[length] = '\0';
	/* The command name (field 2) may contain spaces; count fields after its ')'. */
	p = strrchr(buf, ')');
	if (p == NULL)
		return -1;
	while (*p != '\0' && field < 50) {
		if (*p++ == ' ')
			field++;
	}
	if (sscanf(p, "%lu %lu", start, end) != 2 || *end <= *start)
		return -1;
	return 0;
}

/*
 * Wipes the environment inherited from the runner, which carries the job token and every job
 * variable. clearenv() alone is not enough: /proc/<pid>/environ shows the memory the strings
 * were first placed in, so that area and every string still listed are overwritten first.
 */
static void forget_environment(void)
{
	unsigned long start, end;

	if (environment_area(&start, &end) == 0)
		explicit_bzero((void *) start, end - start);
	for (char **entry = environ; entry != NULL && *entry != NULL; entry++)
		explicit_bzero(*entry, strlen(*entry));
	clearenv();
}

static void __attribute__((noreturn)) init_main(const struct sbx_init_options *options,
						int report_fd, int go_fd)
{
	struct sbx_mounts_plan plan = *options->mounts;
	struct sbx_error error;
	char message[1024];
	char byte;
	int proxy_fd, null_fd, control_fd = options->control_fd;

	/* The host process's name would mislead anyone reading the job's process list. */
	prctl(PR_SET_NAME, "sbx-init", 0, 0, 0);
	forget_environment();
	/* prepare records the pid and fills the cgroup before it lets the init go on. */
	if (read(go_fd, &byte, 1) != 1)
		_exit(1);
	close(go_fd);

	/* Still with the creator's fsuid, which owns the job directory (0700); and in this mount
	 * namespace, as bind sources must be. */
	memset(&error, 0, sizeof(error));
	if (sbx_mounts_plan_open(&plan, &error) < 0)
		init_fail(report_fd, 0, "%s", error.message);

	/* The maps are written. Becoming uid 0 of the namespace gives files made here an owner
	 * that the namespace maps. In runner-uid mode 0 is unmapped, so the init keeps the job's
	 * uid with the capabilities that clone gave it. */
	if (options->ids->mode != SBX_IDS_RUNNER) {
		if (setgroups(0, NULL) < 0 || setresgid(0, 0, 0) < 0 || setresuid(0, 0, 0) < 0)
			init_fail(report_fd, errno, "cannot become root of the job's user namespace");
	}
	/* Credential changes clear the dumpable flag, which would make the files in /proc/<init>/ns owned
	 * by host root and keep an unprivileged runner from joining. */
	prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);

	if (sbx_mounts_apply(&plan, options->staging, message, sizeof(message)) < 0)
		init_fail(report_fd, 0, "cannot build the job's file system: %s", message);
	if (sethostname(options->hostname, strlen(options->hostname)) < 0)
		init_fail(report_fd, errno, "cannot set the host name %s", options->hostname);
	if (setup_loopback(message, sizeof(message)) < 0)
		init_fail(report_fd, 0, "%s", message);
	proxy_fd = create_proxy_listener(options->proxy_port, message, sizeof(message));
	if (proxy_fd < 0)
		init_fail(report_fd, 0, "%s", message);

	/* Detach completely: a descendant that keeps the runner's stdout or stderr open keeps the
	 * runner waiting for the stage to end. */
	if (setsid() < 0)
		init_fail(report_fd, errno, "cannot start a new session");
	null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (null_fd < 0 || dup2(null_fd, STDIN_FILENO) < 0 || dup2(null_fd, STDOUT_FILENO) < 0 ||
	    dup2(null_fd, STDERR_FILENO) < 0)
		init_fail(report_fd, errno,
			  "cannot redirect the init's standard streams to /dev/null");
	close(null_fd);
	/* The three descriptors may sit on each other's target numbers: lift them first. */
	control_fd = fcntl(control_fd, F_DUPFD_CLOEXEC, 100);
	proxy_fd = fcntl(proxy_fd, F_DUPFD_CLOEXEC, 100);
	report_fd = fcntl(report_fd, F_DUPFD_CLOEXEC, 100);
	if (control_fd < 0 || proxy_fd < 0 || report_fd < 0 ||
	    move_fd(control_fd, KEEP_CONTROL_FD) < 0 || move_fd(proxy_fd, KEEP_PROXY_FD) < 0 ||
	    move_fd(report_fd, KEEP_REPORT_FD) < 0)
		_exit(1);
	if (close_range(KEEP_REPORT_FD + 1, ~0U, 0) < 0) {
		for (int fd = KEEP_REPORT_FD + 1; fd < 4096; fd++)
			close(fd);
	}

	send_report(KEEP_REPORT_FD, REPORT_READY, 0, NULL);
	close(KEEP_REPORT_FD);
	_exit(sbx_init_serve(KEEP_CONTROL_FD, KEEP_PROXY_FD, options->deadline));
}

static pid_t clone_namespaces(void)
{
	struct clone_args args = {
		.flags = NAMESPACE_FLAGS,
		.exit_signal = SIGCHLD,
	};
	long pid = syscall(SYS_clone3, &args, sizeof(args));

	/* Kernels before 5.3 lack clone3; clone with a NULL stack behaves like fork. */
	if (pid < 0 && errno == ENOSYS)
		pid = syscall(SYS_clone, NAMESPACE_FLAGS | SIGCHLD, NULL, NULL, NULL, NULL);
	return (pid_t) pid;
}

/* The helper: clones the init, writes its maps, reports the pid and exits. */
static void __attribute__((noreturn)) run_helper(const struct sbx_init_options *options,
						 int report_fd, int go_fd)
{
	char message[512];
	pid_t pid;

	errno = 0;
	pid = clone_namespaces();
	if (pid < 0) {
		int saved = errno;

		snprintf(message, sizeof(message),
			 "cannot create the job's namespaces: %s%s", strerror(saved),
			 saved == ENOSPC ? "; the sysctl user.max_user_namespaces is 0 or used up: "
					   "raise it, e.g. sysctl -w user.max_user_namespaces=15000"
			 : saved == EPERM ? "; user namespaces are disabled for this user: set the "
					    "sysctl kernel.unprivileged_userns_clone=1 (Debian kernels) or "
					    "kernel.apparmor_restrict_unprivileged_userns=0 (Ubuntu), or "
					    "run sbx as root"
					  : "");
		send_report(report_fd, REPORT_ERROR, 0, message);
		_exit(1);
	}
	if (pid == 0)
		init_main(options, report_fd, go_fd);

	close(go_fd);
	if (sbx_ids_apply(options->ids, pid, message, sizeof(message)) < 0) {
		kill(pid, SIGKILL);
		send_report(report_fd, REPORT_ERROR, 0, message);
		_exit(1);
	}
	send_report(report_fd, REPORT_PID, pid, NULL);
	_exit(0);
}

static int read_report(int fd, int timeout_ms, struct report *report, struct sbx_error *error)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	int64_t deadline = sbx_monotonic_ms() + timeout_ms;
	ssize_t n;

	for (;;) {
		int64_t left = deadline - sbx_monotonic_ms();
		int rc = poll(&pfd, 1, left < 0 ? 0 : (int) left);

		if (rc < 0 && errno == EINTR)
			continue;
		if (rc < 0)
			return sbx_error_errno(error, errno, "cannot wait for the job init");
		if (rc == 0)
			return sbx_error_set(error, SBX_ERROR_SYSTEM,
					     "the job init did not become ready within %d ms",
					     timeout_ms);
		break;
	}
	do
		n = read(fd, report, sizeof(*report));
	while (n < 0 && errno == EINTR);
	if (n == 0)
		return sbx_error_set(error, SBX_ERROR_SYSTEM,
				     "the job init exited during its setup without a message");
	if (n != (ssize_t) sizeof(*report))
		return sbx_error_errno(error, n < 0 ? errno : EIO, "cannot read the job init's report");
	report->text[sizeof(report->text) - 1] = '\0';
	if (report->kind == REPORT_ERROR)
		return sbx_error_set(error, SBX_ERROR_SYSTEM, "job init: %s", report->text);
	return 0;
}

int sbx_init_start(const struct sbx_init_options *options, sbx_init_pid_fn on_pid,
		   void *userdata, int timeout_ms, pid_t *pid, struct sbx_error *error)
{
	int report_pipe[2], go_pipe[2];
	_cleanup_close_ int report_fd = -1, go_fd = -1;
	_cleanup_close_ int init_pidfd = -1;
	struct report report;
	pid_t helper, init_pid;
	int status, rc;

	if (pipe2(report_pipe, O_CLOEXEC) < 0)
		return sbx_error_errno(error, errno, "cannot create a pipe");
	if (pipe2(go_pipe, O_CLOEXEC) < 0) {
		close(report_pipe[0]);
		close(report_pipe[1]);
		return sbx_error_errno(error, errno, "cannot create a pipe");
	}
	helper = fork();
	if (helper < 0) {
		int saved = errno;

		close(report_pipe[0]);
		close(report_pipe[1]);
		close(go_pipe[0]);
		close(go_pipe[1]);
		return sbx_error_errno(error, saved, "cannot fork");
	}
	if (helper == 0) {
		close(report_pipe[0]);
		close(go_pipe[1]);
		run_helper(options, report_pipe[1], go_pipe[0]);
	}
	close(report_pipe[1]);
	close(go_pipe[0]);
	report_fd = report_pipe[0];
	go_fd = go_pipe[1];

	memset(&report, 0, sizeof(report));
	rc = read_report(report_fd, timeout_ms, &report, error);
	if (rc < 0 || report.kind != REPORT_PID) {
		/* An error report already filled ERROR with its text. */
		if (rc == 0)
			sbx_error_set(error, SBX_ERROR_SYSTEM, "job init: unexpected report '%c'",
				      report.kind);
		kill(helper, SIGKILL);
		waitpid(helper, &status, 0);
		return -1;
	}
	init_pid = report.pid;
	/* The pidfd pins the init: while the helper is not yet reaped, the init cannot have been
	 * reparented and reaped, so its pid still names it. */
	init_pidfd = pidfd_open(init_pid, 0);
	while (waitpid(helper, &status, 0) < 0 && errno == EINTR)
		;
	if (init_pidfd < 0)
		return sbx_error_errno(error, errno, "the job init %d is gone", (int) init_pid);

	if (on_pid != NULL && on_pid(userdata, init_pid, error) < 0)
		goto kill_init;
	if (write(go_fd, "g", 1) != 1) {
		sbx_error_errno(error, errno, "cannot start the job init");
		goto kill_init;
	}
	if (read_report(report_fd, timeout_ms, &report, error) < 0)
		goto kill_init;
	if (report.kind != REPORT_READY) {
		sbx_error_set(error, SBX_ERROR_SYSTEM, "job init: unexpected report '%c'",
			      report.kind);
		goto kill_init;
	}
	*pid = init_pid;
	return 0;

kill_init:
	sbx_process_kill_wait(init_pidfd, 5000);
	return -1;
}
