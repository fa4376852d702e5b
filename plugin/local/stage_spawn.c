/* SPDX-License-Identifier: MIT */
/*
 * The spawning path of exec: the init forks the step straight into the stage's cgroup2 leaf
 * (stage-run), so no process of the stage moves between cgroups, and reports the step's end
 * on the control connection. exec keeps the proxy, the timeout, cancellation and the kill of
 * the leaf's leftovers.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cgroup.h"
#include "cleanup.h"
#include "control.h"
#include "error.h"
#include "log.h"
#include "stage_internal.h"
#include "stage_request.h"
#include "step.h"
#include "util.h"

/* The end of a step, from the init's step-exit message. */
struct step_end {
	int exit_code;
	int signal;
};

/*
 * The host uid of the init, which must own the cgroup.procs files that clone3 checks. Only
 * root needs to hand them over: an unprivileged runner creates the cgroups itself, and its
 * uid is the init's. (uid_t) -1 when nothing needs changing or the uid is unknown.
 */
static uid_t init_host_uid(const struct sbx_id_map *ids)
{
	if (geteuid() != 0)
		return (uid_t) -1;
	/* In runner-uid mode the init keeps the job's uid, which maps onto the runner's. */
	if (ids->mode == SBX_IDS_RUNNER)
		return ids->host_uid;
	for (size_t i = 0; i < ids->uid_count; i++)
		if (ids->uid[i].inside == 0 && ids->uid[i].count > 0)
			return ids->uid[i].outside;
	return (uid_t) -1;
}

static int write_request(const struct sbx_exec_spec *spec, const struct exec *exec, int *fd,
			 struct sbx_error *error)
{
	struct sbx_stage_request request = {
		.argv = exec->argv,
		.envp = exec->envp,
		.cwd = (char *) (spec->cwd != NULL ? spec->cwd : "/builds"),
		.uid = exec->job.ids.job_uid,
		.gid = exec->job.ids.job_gid,
		.set_groups = exec->job.ids.mode != SBX_IDS_RUNNER,
		.cap_last = sbx_step_cap_last(),
	};

	return sbx_stage_request_write(&request, fd, error);
}

static void add_fd(struct sbx_control_message *message, int *fds, enum sbx_control_fd_role role,
		   int fd)
{
	if (fd < 0)
		return;
	message->fd_roles[message->fd_count] = role;
	fds[message->fd_count++] = fd;
}

/*
 * Sends stage-run and reads the reply. Returns 0 once the step runs; -1 with *FALLBACK set
 * when the init cannot spawn it, else -1 with ERROR.
 */
static int request_step(const struct sbx_exec_spec *spec, struct exec *exec, int leaf_fd,
			int *fallback, struct sbx_error *error)
{
	struct sbx_control_message message = { .type = SBX_CONTROL_STAGE_RUN,
					       .stage = exec->stage };
	_cleanup_close_ int request_fd = -1;
	int fds[SBX_CONTROL_MAX_FDS];

	if (write_request(spec, exec, &request_fd, error) < 0)
		return -1;
	add_fd(&message, fds, SBX_CONTROL_FD_REQUEST, request_fd);
	add_fd(&message, fds, SBX_CONTROL_FD_CGROUP, leaf_fd);
	add_fd(&message, fds, SBX_CONTROL_FD_STDIN, spec->stdin_fd);
	add_fd(&message, fds, SBX_CONTROL_FD_STDOUT, spec->stdout_fd);
	add_fd(&message, fds, SBX_CONTROL_FD_STDERR, spec->stderr_fd);
	add_fd(&message, fds, SBX_CONTROL_FD_SCRIPT, exec->script_fd);
	if (sbx_control_send_fds(exec->control_fd, &message, fds, message.fd_count, error) < 0 ||
	    sbx_control_receive(exec->control_fd, &message, NULL, SBX_STAGE_CONTROL_TIMEOUT_MS,
				error) < 0)
		return sbx_error_prefix(error, "sandbox %s", spec->id);
	if (message.type == SBX_CONTROL_REPLY && message.unsupported) {
		*fallback = 1;
		return sbx_error_set(error, SBX_ERROR_SYSTEM, "the init cannot start steps: %s",
				     message.error);
	}
	if (message.type != SBX_CONTROL_REPLY || !message.ok)
		return sbx_error_set(error, SBX_ERROR_SYSTEM,
				     "sandbox %s: the init did not start the step: %s", spec->id,
				     message.error[0] != '\0' ? message.error : "no reason given");
	sbx_debug("sandbox %s: stage %d: the init started the step as pid %d", spec->id,
		  exec->stage, message.pid);
	return 0;
}

/* Receives one message and keeps it when it is the step-exit of STAGE. 1: got it, 0: other. */
static int receive_step_exit(int control_fd, int stage, struct step_end *end,
			     struct sbx_error *error)
{
	struct sbx_control_message message;

	if (sbx_control_receive(control_fd, &message, NULL, 0, error) < 0)
		return -1;
	if (message.type != SBX_CONTROL_STEP_EXIT || message.stage != stage)
		return 0;
	end->exit_code = message.exit_code;
	end->signal = message.signal;
	return 1;
}

/*
 * Waits for the init's step-exit, for CANCEL_FD (-1: none) to become readable, or until
 * DEADLINE (sbx_monotonic_ms(), -1: none). WAIT_FAILED fills ERROR: the init closed the
 * connection or sent garbage, so the step's status is lost.
 */
static enum sbx_stage_wait wait_step_exit(struct exec *exec, int cancel_fd, int64_t deadline,
					  struct step_end *end, struct sbx_error *error)
{
	struct pollfd fds[2] = {
		{ .fd = exec->control_fd, .events = POLLIN },
		{ .fd = cancel_fd, .events = POLLIN },
	};
	nfds_t count = cancel_fd >= 0 ? 2 : 1;

	for (;;) {
		int64_t left = deadline < 0 ? -1 : deadline - sbx_monotonic_ms();
		int rc;

		if (deadline >= 0 && left <= 0)
			return STEP_TIMED_OUT;
		rc = poll(fds, count, left < 0 || left > INT_MAX ? -1 : (int) left);
		if (rc < 0 && errno == EINTR)
			continue;
		if (rc < 0) {
			sbx_error_errno(error, errno, "cannot wait for the step");
			return WAIT_FAILED;
		}
		if (count == 2 && (fds[1].revents & (POLLIN | POLLHUP | POLLERR)))
			return STEP_CANCELLED;
		if (fds[0].revents == 0)
			continue;
		rc = receive_step_exit(exec->control_fd, exec->stage, end, error);
		if (rc < 0)
			return WAIT_FAILED;
		if (rc > 0)
			return STEP_ENDED;
	}
}

/* SIGTERM to the stage's processes, then up to STOP_GRACE seconds for the step to end. */
static void stop_step(struct exec *exec, int64_t stop_grace)
{
	struct step_end end;
	struct sbx_error error;

	memset(&error, 0, sizeof(error));
	sbx_cgroup_leaf_signal(&exec->job.cgroup, exec->leaf, SIGTERM);
	wait_step_exit(exec, -1, sbx_monotonic_ms() + stop_grace * 1000, &end, &error);
}

/* Kills whatever is left in the stage's leaf: the step's background processes could hold the
 * runner's stdout or stderr open. */
static void kill_leaf(struct exec *exec, const char *id)
{
	struct sbx_error error;

	memset(&error, 0, sizeof(error));
	if (sbx_cgroup_leaf_kill(&exec->job.cgroup, exec->leaf, SBX_STAGE_LEAF_KILL_TIMEOUT_MS,
				 &error) < 0)
		sbx_warning("sandbox %s: %s", id, error.message);
}

int sbx_stage_run_spawned(struct sbx_executor *executor, const struct sbx_exec_spec *spec,
			  struct exec *exec, int *exit_status, int *fallback,
			  struct sbx_error *error)
{
	_cleanup_close_ int leaf_fd = -1;
	struct step_end end = { 0 };
	enum sbx_stage_wait result;

	if (sbx_cgroup_leaf_open(&exec->job.cgroup, exec->leaf, init_host_uid(&exec->job.ids),
				 &leaf_fd, error) < 0)
		return sbx_error_prefix(error, "sandbox %s", spec->id);
	/* Started first, so that the thread gets going while the init starts the step. */
	if (sbx_stage_start_proxy(executor, spec, exec, error) < 0) {
		kill_leaf(exec, spec->id);
		return -1;
	}
	if (request_step(spec, exec, leaf_fd, fallback, error) < 0) {
		/* The joining path forks, which must happen while exec has no other thread. */
		if (*fallback)
			sbx_stage_stop_proxy(exec);
		else
			kill_leaf(exec, spec->id);
		return -1;
	}

	result = wait_step_exit(exec, spec->cancel_fd, sbx_stage_deadline(spec), &end, error);
	if (result == STEP_CANCELLED || result == STEP_TIMED_OUT)
		stop_step(exec, executor->config->stop_grace);
	kill_leaf(exec, spec->id);

	if (result == WAIT_FAILED)
		return sbx_error_prefix(error, "the step's status in sandbox %s is lost", spec->id);
	if (result != STEP_ENDED)
		return sbx_stage_wait_error(spec, result, error);
	*exit_status = end.signal > 0 ? 128 + end.signal : end.exit_code;
	return 0;
}
