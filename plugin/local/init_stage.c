/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cleanup.h"
#include "command.h"
#include "control.h"
#include "error.h"
#include "init_stage.h"
#include "seccomp.h"
#include "stage_request.h"
#include "step.h"
#include "util.h"

/*
 * How long the init waits for a new step to execute its command. The init serves nothing else
 * meanwhile, and exec waits 10 s for the reply, so this stays below that.
 */
#define STEP_EXEC_TIMEOUT_MS 5000

/* The descriptors of one stage-run by role; -1 where absent. */
struct stage_fds {
	int request;
	int cgroup;
	int in;
	int out;
	int err;
	int script;
};

static void reply(int connection_fd, const struct sbx_control_message *message)
{
	/* A peer that vanished is noticed by the next poll. */
	sbx_control_send(connection_fd, message, -1, NULL);
}

static void reply_error(int connection_fd, int stage, const char *text)
{
	struct sbx_control_message message = { .type = SBX_CONTROL_REPLY, .stage = stage };

	snprintf(message.error, sizeof(message.error), "%.200s", text);
	reply(connection_fd, &message);
}

/* Sorts FDS into STAGE_FDS by the roles MESSAGE lists; fails on a missing or doubled one. */
static int sort_fds(const struct sbx_control_message *message, const int *fds, size_t count,
		    struct stage_fds *stage_fds, char *text, size_t size)
{
	int *slots[] = {
		[SBX_CONTROL_FD_REQUEST] = &stage_fds->request, [SBX_CONTROL_FD_CGROUP] = &stage_fds->cgroup,
		[SBX_CONTROL_FD_STDIN] = &stage_fds->in,	     [SBX_CONTROL_FD_STDOUT] = &stage_fds->out,
		[SBX_CONTROL_FD_STDERR] = &stage_fds->err,	     [SBX_CONTROL_FD_SCRIPT] = &stage_fds->script,
	};

	*stage_fds = (struct stage_fds){ -1, -1, -1, -1, -1, -1 };
	if (count != message->fd_count) {
		snprintf(text, size, "stage-run lists %zu descriptors but passes %zu",
			 message->fd_count, count);
		return -1;
	}
	for (size_t i = 0; i < count; i++) {
		enum sbx_control_fd_role role = message->fd_roles[i];

		if (role < SBX_CONTROL_FD_REQUEST || role > SBX_CONTROL_FD_SCRIPT) {
			snprintf(text, size, "stage-run passes a descriptor of unknown role %d",
				 (int) role);
			return -1;
		}
		if (*slots[role] >= 0) {
			snprintf(text, size, "stage-run passes descriptor \"%s\" twice",
				 sbx_control_fd_role_name(role));
			return -1;
		}
		*slots[role] = fds[i];
	}
	if (stage_fds->request < 0 || stage_fds->cgroup < 0 || stage_fds->out < 0 ||
	    stage_fds->err < 0) {
		snprintf(text, size,
			 "stage-run lacks one of the descriptors request, cgroup, stdout, stderr");
		return -1;
	}
	return 0;
}

/* The filter is the same for every step of this init: build it once. */
static struct sbx_seccomp_filter *step_filter(struct sbx_error *error)
{
	static struct sbx_seccomp_filter *filter;

	if (filter == NULL && sbx_seccomp_filter_new(&filter, error) < 0)
		return NULL;
	return filter;
}

/*
 * Forks the step into the cgroup2 directory CGROUP_FD. clone3 checks the init's own
 * credentials against the leaf's and the job cgroup's cgroup.procs files, as a write to them
 * would (exec makes them the init's). Returns the pid in the parent, -1 with errno on failure.
 */
static pid_t clone_into_cgroup(const struct sbx_step *step, int cgroup_fd)
{
	struct clone_args args = {
		.flags = CLONE_INTO_CGROUP,
		.exit_signal = SIGCHLD,
		.cgroup = (uint64_t) cgroup_fd,
	};
	long pid = syscall(SYS_clone3, &args, sizeof(args));

	if (pid == 0)
		sbx_step_exec(step);
	return (pid_t) pid;
}

/* True for the errors of a kernel without clone3 (< 5.3) or CLONE_INTO_CGROUP (< 5.7). */
static int clone_unsupported(int errnum)
{
	return errnum == ENOSYS || errnum == E2BIG || errnum == EINVAL;
}

/*
 * Waits until the step executed its command (the report pipe closes) or reported why it could
 * not. Returns 0, or -1 with TEXT filled; the step is then killed and reaped.
 */
static int await_exec(int report_fd, pid_t pid, char *text, size_t size)
{
	struct pollfd pfd = { .fd = report_fd, .events = POLLIN };
	struct sbx_stage_report report;
	int64_t deadline = sbx_monotonic_ms() + STEP_EXEC_TIMEOUT_MS;
	ssize_t n;
	int status;

	for (;;) {
		int64_t left = deadline - sbx_monotonic_ms();
		int rc = poll(&pfd, 1, left < 0 ? 0 : (int) left);

		if (rc < 0 && errno == EINTR)
			continue;
		if (rc <= 0) {
			snprintf(text, size, "the step did not start within %d ms",
				 STEP_EXEC_TIMEOUT_MS);
			break;
		}
		do
			n = read(report_fd, &report, sizeof(report));
		while (n < 0 && errno == EINTR);
		if (n == 0)
			return 0;
		report.text[sizeof(report.text) - 1] = '\0';
		if (n == (ssize_t) sizeof(report) && report.kind == SBX_STAGE_REPORT_ERROR)
			snprintf(text, size, "cannot start the step: %.160s: %s", report.text,
				 strerror(report.value));
		else
			snprintf(text, size, "cannot read the step's report");
		break;
	}
	kill(pid, SIGKILL);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	return -1;
}

/* Builds the step from REQUEST and STAGE_FDS and starts it; replies on CONNECTION_FD. */
static pid_t start_step(int connection_fd, int stage, const struct sbx_stage_request *request,
			const struct stage_fds *stage_fds)
{
	struct sbx_control_message message = { .type = SBX_CONTROL_REPLY, .stage = stage };
	struct sbx_error error = { 0 };
	char **exec_paths = sbx_command_exec_paths(request->argv[0]);
	struct sbx_step step = {
		.stdin_fd = stage_fds->in,
		.stdout_fd = stage_fds->out,
		.stderr_fd = stage_fds->err,
		.script_fd = stage_fds->script,
		.cwd = request->cwd,
		.argv = request->argv,
		.exec_paths = exec_paths,
		.envp = request->envp,
		.uid = request->uid,
		.gid = request->gid,
		.set_groups = request->set_groups,
		.cap_last = request->cap_last,
		.filter = step_filter(&error),
	};
	int report_pipe[2];
	pid_t pid;

	if (exec_paths == NULL || step.filter == NULL) {
		reply_error(connection_fd, stage,
			    step.filter == NULL ? error.message : "out of memory");
		sbx_command_free_strings(exec_paths);
		return 0;
	}
	if (pipe2(report_pipe, O_CLOEXEC) < 0) {
		reply_error(connection_fd, stage, "cannot create a pipe");
		sbx_command_free_strings(exec_paths);
		return 0;
	}
	step.report_fd = report_pipe[1];
	pid = clone_into_cgroup(&step, stage_fds->cgroup);
	close(report_pipe[1]);
	sbx_command_free_strings(exec_paths);
	if (pid < 0) {
		int saved = errno;

		close(report_pipe[0]);
		if (clone_unsupported(saved)) {
			message.unsupported = 1;
			snprintf(message.error, sizeof(message.error),
				 "this kernel cannot clone into a cgroup: %s", strerror(saved));
			reply(connection_fd, &message);
			return 0;
		}
		snprintf(message.error, sizeof(message.error),
			 "cannot start the step in its cgroup leaf: %s", strerror(saved));
		reply(connection_fd, &message);
		return 0;
	}
	if (await_exec(report_pipe[0], pid, message.error, sizeof(message.error)) < 0) {
		close(report_pipe[0]);
		reply(connection_fd, &message);
		return 0;
	}
	close(report_pipe[0]);
	message.ok = 1;
	message.pid = (int) pid;
	reply(connection_fd, &message);
	return pid;
}

pid_t sbx_init_stage_run(int connection_fd, int stage, const struct sbx_control_message *message,
			 int *fds, size_t count)
{
	struct sbx_stage_request request = { 0 };
	struct stage_fds stage_fds;
	struct sbx_error error = { 0 };
	char text[256];
	pid_t pid = 0;

	if (sort_fds(message, fds, count, &stage_fds, text, sizeof(text)) < 0)
		reply_error(connection_fd, stage, text);
	else if (sbx_stage_request_read(stage_fds.request, &request, &error) < 0)
		reply_error(connection_fd, stage, error.message);
	else
		pid = start_step(connection_fd, stage, &request, &stage_fds);
	/* The step has its own copies now; the init must not keep the runner's streams open. */
	for (size_t i = 0; i < count; i++)
		close(fds[i]);
	sbx_stage_request_clear(&request);
	return pid;
}

void sbx_init_stage_report_exit(int connection_fd, int stage, int status)
{
	struct sbx_control_message message = { .type = SBX_CONTROL_STEP_EXIT, .stage = stage };

	if (WIFSIGNALED(status))
		message.signal = WTERMSIG(status);
	else
		message.exit_code = WEXITSTATUS(status);
	reply(connection_fd, &message);
}
