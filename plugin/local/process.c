/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "process.h"
#include "util.h"

int sbx_process_parse_start_time(const char *stat_text, uint64_t *start_time)
{
	/* The command name (field 2) may contain spaces and parentheses: fields after it are
	 * counted from the last ')'. Field 22 is the 20th after it. */
	const char *p = strrchr(stat_text, ')');
	char *end;
	unsigned long long value;

	if (p == NULL)
		return -1;
	p++;
	for (int field = 3; field <= 22; field++) {
		while (*p == ' ')
			p++;
		if (*p == '\0')
			return -1;
		if (field == 22)
			break;
		while (*p != ' ' && *p != '\0')
			p++;
	}
	errno = 0;
	value = strtoull(p, &end, 10);
	if (errno != 0 || end == p || (*end != ' ' && *end != '\0' && *end != '\n'))
		return -1;
	*start_time = value;
	return 0;
}

int sbx_process_start_time(pid_t pid, uint64_t *start_time)
{
	char path[64], buf[1024];
	_cleanup_close_ int fd = -1;
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int) pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT)
			errno = ESRCH;
		return -1;
	}
	n = read(fd, buf, sizeof(buf) - 1);
	if (n <= 0) {
		errno = n == 0 ? ESRCH : errno;
		return -1;
	}
	buf[n] = '\0';
	if (sbx_process_parse_start_time(buf, start_time) < 0) {
		errno = EINVAL;
		return -1;
	}
	return 0;
}

int sbx_process_pid_namespace(pid_t pid, uint64_t *inode)
{
	char path[64];
	struct stat st;

	snprintf(path, sizeof(path), "/proc/%d/ns/pid", (int) pid);
	if (stat(path, &st) < 0) {
		if (errno == ENOENT)
			errno = ESRCH;
		return -1;
	}
	*inode = (uint64_t) st.st_ino;
	return 0;
}

int sbx_process_open_verified(pid_t pid, uint64_t start_time, uint64_t pid_namespace)
{
	_cleanup_close_ int pidfd = -1;
	uint64_t actual, namespace_inode;

	if (pid <= 1) {
		errno = ESRCH;
		return -1;
	}
	pidfd = pidfd_open(pid, 0);
	if (pidfd < 0)
		return -1;
	/* Checked after pidfd_open: if the start time matches now, the pidfd refers to the
	 * recorded process and cannot be redirected by a later reuse of the pid. */
	if (sbx_process_start_time(pid, &actual) < 0)
		return -1;
	if (actual != start_time) {
		errno = ESRCH;
		return -1;
	}
	if (pid_namespace != 0 &&
	    (sbx_process_pid_namespace(pid, &namespace_inode) < 0 ||
	     namespace_inode != pid_namespace)) {
		errno = ESRCH;
		return -1;
	}
	/* A pidfd turns readable when its process has exited. A zombie that is not reaped yet
	 * still has its /proc entry and start time, but it is dead. */
	if (sbx_process_wait_exit(pidfd, 0) != 0) {
		errno = ESRCH;
		return -1;
	}
	return steal_fd(&pidfd);
}

int sbx_process_wait_exit(int pidfd, int timeout_ms)
{
	struct pollfd pfd = { .fd = pidfd, .events = POLLIN };
	int64_t deadline = timeout_ms < 0 ? -1 : sbx_monotonic_ms() + timeout_ms;

	for (;;) {
		int wait_ms = deadline < 0 ? -1 : (int) (deadline - sbx_monotonic_ms());
		int rc;

		if (deadline >= 0 && wait_ms < 0)
			wait_ms = 0;
		rc = poll(&pfd, 1, wait_ms);
		if (rc < 0 && errno == EINTR)
			continue;
		if (rc < 0)
			return -1;
		return rc > 0 ? 1 : 0;
	}
}

int sbx_process_kill_wait(int pidfd, int timeout_ms)
{
	if (pidfd_send_signal(pidfd, SIGKILL, NULL, 0) < 0 && errno != ESRCH)
		return -1;
	if (sbx_process_wait_exit(pidfd, timeout_ms) != 1) {
		errno = ETIMEDOUT;
		return -1;
	}
	return 0;
}
