/* SPDX-License-Identifier: MIT */
/*
 * The joining path of exec: a forked child enters the stage's cgroup leaf, joins the init's
 * namespaces and forks the step. Used where the init cannot spawn the step itself.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cgroup.h"
#include "cleanup.h"
#include "error.h"
#include "log.h"
#include "process.h"
#include "stage.h"
#include "stage_internal.h"
#include "step.h"
#include "util.h"

/* True when the init lives in a user namespace other than the caller's. */
static int init_has_own_user_namespace(pid_t pid)
{
	char path[64];
	struct stat self, init;

	snprintf(path, sizeof(path), "/proc/%d/ns/user", (int) pid);
	if (stat("/proc/self/ns/user", &self) < 0 || stat(path, &init) < 0)
		return 1;
	return self.st_ino != init.st_ino || self.st_dev != init.st_dev;
}

/* Reads every report from the pipe; the last status wins, the first error is kept. */
static void read_reports(int fd, int *have_status, int *status, struct sbx_stage_report *failure)
{
	struct sbx_stage_report report;

	for (;;) {
		ssize_t n = read(fd, &report, sizeof(report));

		if (n < 0 && errno == EINTR)
			continue;
		if (n != (ssize_t) sizeof(report))
			return;
		report.text[sizeof(report.text) - 1] = '\0';
		if (report.kind == SBX_STAGE_REPORT_STATUS) {
			*have_status = 1;
			*status = report.value;
		} else if (report.kind == SBX_STAGE_REPORT_ERROR && failure->kind == 0) {
			*failure = report;
		}
	}
}

/* Waits for the joining child (it exits right after the step) or the cancel or timeout. */
static enum sbx_stage_wait wait_step(int child_pidfd, const struct sbx_exec_spec *spec)
{
	struct pollfd fds[2] = {
		{ .fd = child_pidfd, .events = POLLIN },
		{ .fd = spec->cancel_fd, .events = POLLIN },
	};
	nfds_t count = spec->cancel_fd >= 0 ? 2 : 1;
	int64_t deadline = sbx_stage_deadline(spec);

	for (;;) {
		int64_t left = deadline < 0 ? -1 : deadline - sbx_monotonic_ms();
		int rc;

		if (deadline >= 0 && left <= 0)
			return STEP_TIMED_OUT;
		rc = poll(fds, count, left < 0 || left > INT_MAX ? -1 : (int) left);
		if (rc < 0 && errno == EINTR)
			continue;
		if (rc < 0)
			return WAIT_FAILED;
		if (count == 2 && (fds[1].revents & (POLLIN | POLLHUP | POLLERR)))
			return STEP_CANCELLED;
		if (fds[0].revents & POLLIN)
			return STEP_ENDED;
	}
}

/* SIGTERM to the stage's processes, SIGKILL for whatever is left after STOP_GRACE seconds. */
static void stop_step(struct exec *exec, int child_pidfd, int64_t stop_grace)
{
	/* Without a cgroup the joining child passes SIGTERM down to the stage's pid namespace. */
	if (exec->job.have_cgroup)
		sbx_cgroup_leaf_signal(&exec->job.cgroup, exec->leaf, SIGTERM);
	else
		pidfd_send_signal(child_pidfd, SIGTERM, NULL, 0);
	sbx_process_wait_exit(child_pidfd, stop_grace > INT_MAX / 1000 ? INT_MAX
								     : (int) stop_grace * 1000);
}

/*
 * Kills whatever the stage left. Without a cgroup, SIGKILL of the joining child reaches the
 * stage's pid namespace through PR_SET_PDEATHSIG, and the namespace dies with its init.
 */
static int kill_stage(struct exec *exec, int child_pidfd, struct sbx_error *error)
{
	if (exec->job.have_cgroup)
		return sbx_cgroup_leaf_kill(&exec->job.cgroup, exec->leaf, SBX_STAGE_LEAF_KILL_TIMEOUT_MS,
					    error);
	if (child_pidfd >= 0)
		pidfd_send_signal(child_pidfd, SIGKILL, NULL, 0);
	return 0;
}

int sbx_stage_run_joined(struct sbx_executor *executor, const struct sbx_exec_spec *spec,
		     struct exec *exec, int *exit_status, struct sbx_error *error)
{
	struct sbx_stage_child child;
	struct sbx_stage_report failure;
	int report_pipe[2], go_pipe[2];
	_cleanup_close_ int report_fd = -1, go_fd = -1, child_pidfd = -1;
	struct sbx_error leaf_error;
	enum sbx_stage_wait result;
	int have_status = 0, status = 0, child_status;
	pid_t pid;

	memset(&child, 0, sizeof(child));
	child.init_pid = exec->job.init_pid;
	child.init_pidfd = exec->init_pidfd;
	child.join_user = init_has_own_user_namespace(exec->job.init_pid);
	child.step.stdin_fd = spec->stdin_fd;
	child.step.stdout_fd = spec->stdout_fd;
	child.step.stderr_fd = spec->stderr_fd;
	child.step.script_fd = exec->script_fd;
	child.step.cwd = spec->cwd != NULL ? spec->cwd : "/builds";
	child.step.argv = exec->argv;
	child.step.exec_paths = exec->exec_paths;
	child.step.envp = exec->envp;
	child.step.uid = exec->job.ids.job_uid;
	child.step.gid = exec->job.ids.job_gid;
	child.step.set_groups = exec->job.ids.mode != SBX_IDS_RUNNER;
	child.step.cap_last = sbx_step_cap_last();
	child.step.filter = exec->filter;
	child.stage_pid_namespace = !exec->job.have_cgroup;

	if (pipe2(report_pipe, O_CLOEXEC) < 0)
		return sbx_error_errno(error, errno, "cannot create a pipe");
	report_fd = report_pipe[0];
	if (pipe2(go_pipe, O_CLOEXEC) < 0) {
		close(report_pipe[1]);
		return sbx_error_errno(error, errno, "cannot create a pipe");
	}
	go_fd = go_pipe[1];
	child.step.report_fd = report_pipe[1];
	child.go_fd = go_pipe[0];

	/* Forked before the proxy thread starts: a process with threads cannot join a mount or
	 * user namespace. */
	pid = fork();
	if (pid < 0) {
		int saved = errno;

		close(report_pipe[1]);
		close(go_pipe[0]);
		return sbx_error_errno(error, saved, "cannot fork");
	}
	if (pid == 0) {
		/* The control connection and the proxy socket stay with exec: if exec dies, the
		 * init must see the connection close. */
		close(exec->control_fd);
		close(exec->proxy_listen_fd);
		close(report_pipe[0]);
		close(go_pipe[1]);
		sbx_stage_child_run(&child);
	}
	close(report_pipe[1]);
	close(go_pipe[0]);
	child_pidfd = pidfd_open(pid, 0);

	/* The child enters the stage's leaf while it still has the host's view of the cgroup
	 * file system; the step inherits the leaf. */
	if (child_pidfd < 0 ||
	    (exec->job.have_cgroup &&
	     sbx_cgroup_job_enter(&exec->job.cgroup, exec->leaf, pid, error) < 0) ||
	    sbx_stage_start_proxy(executor, spec, exec, error) < 0 || write(go_fd, "g", 1) != 1) {
		if (child_pidfd < 0)
			sbx_error_errno(error, errno, "cannot open a pidfd of the stage's child");
		else if (error != NULL && error->error_class == SBX_ERROR_NONE)
			sbx_error_errno(error, errno, "cannot start the stage's child");
		kill(pid, SIGKILL);
		waitpid(pid, &child_status, 0);
		memset(&leaf_error, 0, sizeof(leaf_error));
		kill_stage(exec, -1, &leaf_error);
		return -1;
	}
	sbx_closep(&go_fd);

	result = wait_step(child_pidfd, spec);
	if (result != STEP_ENDED)
		stop_step(exec, child_pidfd, executor->config->stop_grace);
	/* Whatever the step left in its leaf (background jobs, daemons) must not outlive it:
	 * it could hold the runner's stdout or stderr open. */
	memset(&leaf_error, 0, sizeof(leaf_error));
	if (kill_stage(exec, child_pidfd, &leaf_error) < 0)
		sbx_warning("sandbox %s: %s", spec->id, leaf_error.message);
	while (waitpid(pid, &child_status, 0) < 0 && errno == EINTR)
		;
	memset(&failure, 0, sizeof(failure));
	read_reports(report_fd, &have_status, &status, &failure);

	if (result != STEP_ENDED)
		return sbx_stage_wait_error(spec, result, error);
	/* A step killed because the init died has a status that means nothing. */
	if (sbx_process_wait_exit(exec->init_pidfd, 0) != 0)
		return sbx_error_set(error, SBX_ERROR_SYSTEM,
				     "the init of sandbox %s died during the step; its status is "
				     "lost",
				     spec->id);
	if (failure.kind == SBX_STAGE_REPORT_ERROR)
		return sbx_error_set(error, SBX_ERROR_SYSTEM, "cannot start the step in sandbox %s: %s: %s",
				     spec->id, failure.text, strerror(failure.value));
	if (!have_status)
		return sbx_error_set(error, SBX_ERROR_SYSTEM,
				     "the step's status in sandbox %s is lost: its parent ended with "
				     "status %d",
				     spec->id, child_status);
	if (WIFEXITED(status))
		*exit_status = WEXITSTATUS(status);
	else if (WIFSIGNALED(status))
		*exit_status = 128 + WTERMSIG(status);
	else
		return sbx_error_set(error, SBX_ERROR_SYSTEM, "the step ended with wait status %d",
				     status);
	return 0;
}
