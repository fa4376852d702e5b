/* SPDX-License-Identifier: MIT */
/*
 * Plugin calls without a cancel descriptor (prepare, destroy) run in a forked child, so that
 * sbx can stop waiting on SIGTERM or at a deadline: the parent kills the child and reports why.
 * What the child made is on record in the state journal, so cleanup or `sbx gc` undoes it.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cleanup.h"
#include "error.h"
#include "loader.h"
#include "log.h"
#include "shim.h"
#include "util.h"

/* Time a stopped child gets between SIGTERM and SIGKILL. */
#define CHILD_STOP_GRACE_MS 2000
/* Poll interval when the kernel offers no pidfd. */
#define CHILD_POLL_SLICE_MS 100

struct child_result {
	int32_t status;
	struct sbx_error error;
};

static void run_child(sbx_child_fn fn, void *userdata, int result_fd)
{
	struct child_result result;

	sbx_signals_reset_in_child();
	memset(&result, 0, sizeof(result));
	sbx_error_clear(&result.error);
	result.status = fn(userdata, &result.error) < 0 ? -1 : 0;
	if (result.status < 0 && result.error.error_class == SBX_ERROR_NONE)
		sbx_error_set(&result.error, SBX_ERROR_SYSTEM, "the plugin failed without a message");
	sbx_write_all(result_fd, &result, sizeof(result));
	_exit(0);
}

static int read_result(int fd, struct child_result *result)
{
	size_t done = 0;

	while (done < sizeof(*result)) {
		ssize_t n = read(fd, (char *) result + done, sizeof(*result) - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		done += (size_t) n;
	}
	return 0;
}

/* Waits up to TIMEOUT_MS for PID to end; returns 1 when it ended and was reaped. */
static int reap_within(pid_t pid, int pidfd, int timeout_ms, int *wait_status)
{
	int64_t deadline = sbx_monotonic_ms() + timeout_ms;

	for (;;) {
		pid_t done = waitpid(pid, wait_status, WNOHANG);
		int64_t left;

		if (done == pid)
			return 1;
		if (done < 0 && errno != EINTR)
			return 1;
		left = deadline - sbx_monotonic_ms();
		if (left <= 0)
			return 0;
		if (pidfd >= 0) {
			struct pollfd pfd = { .fd = pidfd, .events = POLLIN };

			poll(&pfd, 1, (int) left);
		} else {
			usleep(1000 * (left < CHILD_POLL_SLICE_MS ? left : CHILD_POLL_SLICE_MS));
		}
	}
}

static void stop_child(pid_t pid, int pidfd, int *wait_status)
{
	kill(pid, SIGTERM);
	if (reap_within(pid, pidfd, CHILD_STOP_GRACE_MS, wait_status))
		return;
	kill(pid, SIGKILL);
	while (waitpid(pid, wait_status, 0) < 0 && errno == EINTR)
		;
}

int sbx_run_in_child(sbx_child_fn fn, void *userdata, int cancel_fd, int64_t timeout_ms,
		     const char *what, struct sbx_error *error)
{
	_cleanup_close_ int result_read = -1;
	_cleanup_close_ int result_write = -1;
	_cleanup_close_ int pidfd = -1;
	struct child_result result;
	int64_t deadline = timeout_ms >= 0 ? sbx_monotonic_ms() + timeout_ms : -1;
	int pipe_fds[2];
	int wait_status = 0;
	int got_result = 0, cancelled = 0, timed_out = 0;
	pid_t pid;

	if (pipe2(pipe_fds, O_CLOEXEC) < 0)
		return sbx_error_errno(error, errno, "cannot create a pipe for %s", what);
	result_read = pipe_fds[0];
	result_write = pipe_fds[1];

	/* The child must not write out what the parent buffered. */
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid < 0)
		return sbx_error_errno(error, errno, "cannot fork for %s", what);
	if (pid == 0)
		run_child(fn, userdata, result_write);
	sbx_closep(&result_write);
	/* A pidfd is always close-on-exec. */
	pidfd = pidfd_open(pid, 0);

	for (;;) {
		struct pollfd fds[3];
		nfds_t count = 0;
		int wait_ms = -1;
		int ready;

		fds[count++] = (struct pollfd) { .fd = result_read, .events = POLLIN };
		if (cancel_fd >= 0)
			fds[count++] = (struct pollfd) { .fd = cancel_fd, .events = POLLIN };
		if (deadline >= 0) {
			int64_t left = deadline - sbx_monotonic_ms();

			if (left <= 0) {
				timed_out = 1;
				break;
			}
			wait_ms = left > 60000 ? 60000 : (int) left;
		}
		/* Without a pidfd, waitpid() in slices detects the child's end, because a
		 * grandchild may have inherited the result pipe's write end and delay its EOF. */
		if (pidfd >= 0)
			fds[count++] = (struct pollfd) { .fd = pidfd, .events = POLLIN };
		else if (wait_ms < 0 || wait_ms > CHILD_POLL_SLICE_MS)
			wait_ms = CHILD_POLL_SLICE_MS;

		ready = poll(fds, count, wait_ms);
		if (ready < 0 && errno == EINTR)
			continue;
		if (ready < 0) {
			int saved = errno;

			stop_child(pid, pidfd, &wait_status);
			return sbx_error_errno(error, saved, "cannot wait for %s", what);
		}
		if (fds[0].revents != 0) {
			got_result = read_result(result_read, &result) == 0;
			break;
		}
		if (cancel_fd >= 0 && fds[1].revents != 0) {
			cancelled = 1;
			break;
		}
		if (pidfd >= 0 && fds[count - 1].revents != 0)
			break;
		if (pidfd < 0 && waitpid(pid, &wait_status, WNOHANG) == pid) {
			pid = -1;
			break;
		}
	}

	/* A SIGTERM sent to the whole process group also ends the child, whose end may be
	 * seen before the signal pipe: that is still a cancellation. */
	if (!got_result && !timed_out && cancel_fd >= 0) {
		struct pollfd pfd = { .fd = cancel_fd, .events = POLLIN };

		if (poll(&pfd, 1, 0) > 0)
			cancelled = 1;
	}

	if (pid > 0) {
		if (got_result)
			while (waitpid(pid, &wait_status, 0) < 0 && errno == EINTR)
				;
		else if (cancelled || timed_out)
			stop_child(pid, pidfd, &wait_status);
		else if (!reap_within(pid, pidfd, CHILD_STOP_GRACE_MS, &wait_status))
			stop_child(pid, pidfd, &wait_status);
	}

	if (cancelled)
		return sbx_error_set(error, SBX_ERROR_CANCELLED, "%s stopped by %s", what,
				     sbx_signal_name(sbx_signals_received()));
	if (timed_out)
		return sbx_error_set(error, SBX_ERROR_SYSTEM, "%s timed out after %lld s", what,
				     (long long) (timeout_ms / 1000));
	if (!got_result) {
		if (WIFSIGNALED(wait_status))
			return sbx_error_set(error, SBX_ERROR_SYSTEM,
					     "%s failed: the process running it was killed by "
					     "signal %d (%s)",
					     what, WTERMSIG(wait_status),
					     strsignal(WTERMSIG(wait_status)));
		return sbx_error_set(error, SBX_ERROR_SYSTEM,
				     "%s failed: the process running it ended without a result", what);
	}
	if (result.status < 0) {
		result.error.message[sizeof(result.error.message) - 1] = '\0';
		if (error != NULL)
			*error = result.error;
		return -1;
	}
	return 0;
}

int sbx_prepare_in_child(void *userdata, struct sbx_error *error)
{
	const struct sbx_prepare_call *call = userdata;
	struct sbx_executor *executor = NULL;
	int status;

	if (sbx_plugin_open(call->plugin, &executor, error) < 0)
		return -1;
	status = call->plugin->ops->prepare(executor, call->spec, error);
	call->plugin->ops->close(executor);
	return status;
}

int sbx_destroy_in_child(void *userdata, struct sbx_error *error)
{
	const struct sbx_destroy_call *call = userdata;
	struct sbx_executor *executor = NULL;
	int status;

	if (sbx_plugin_open(call->plugin, &executor, error) < 0)
		return -1;
	status = call->plugin->ops->destroy(executor, call->id, error);
	call->plugin->ops->close(executor);
	return status;
}
