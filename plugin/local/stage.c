/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cgroup.h"
#include "cleanup.h"
#include "command.h"
#include "control.h"
#include "egress.h"
#include "error.h"
#include "job.h"
#include "log.h"
#include "process.h"
#include "proxy.h"
#include "seccomp.h"
#include "stage.h"
#include "stage_internal.h"
#include "util.h"

#define PROXY_CONNECT_TIMEOUT_S 30

static void exec_clear(struct exec *exec)
{
	if (exec->proxy != NULL)
		sbx_proxy_stop(exec->proxy);
	sbx_allowlist_free(&exec->allow);
	if (exec->filter != NULL)
		sbx_seccomp_filter_free(exec->filter);
	sbx_closep(&exec->init_pidfd);
	sbx_closep(&exec->control_fd);
	sbx_closep(&exec->proxy_listen_fd);
	sbx_closep(&exec->script_fd);
	sbx_command_free_strings(exec->envp);
	sbx_command_free_strings(exec->argv);
	sbx_command_free_strings(exec->exec_paths);
	free(exec->egress_log);
	if (exec->have_job)
		sbx_job_clear(&exec->job);
	sbx_journal_entry_clear(&exec->entry);
}

static int check_spec(const struct sbx_exec_spec *spec, struct sbx_error *error)
{
	int has_argv, has_script;

	if (spec == NULL || spec->struct_size < offsetof(struct sbx_exec_spec, timeout_seconds) +
							sizeof(spec->timeout_seconds))
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "exec: the exec spec is missing or from an older ABI");
	if (!sbx_id_valid(spec->id))
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "sandbox id \"%.80s\" is invalid; ids are 1-%d characters of "
				     "[a-z0-9-]",
				     spec->id != NULL ? spec->id : "(null)", SBX_ID_MAX);
	has_argv = spec->argv != NULL && spec->argv[0] != NULL;
	has_script = spec->script != NULL;
	if (has_argv == has_script)
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "exec: pass either argv or a script, not %s",
				     has_argv ? "both" : "neither");
	if (has_argv && spec->argv[0][0] == '\0')
		return sbx_error_set(error, SBX_ERROR_INVALID, "exec: argv[0] is empty");
	if (spec->stdout_fd < 0 || spec->stderr_fd < 0 || fcntl(spec->stdout_fd, F_GETFD) < 0 ||
	    fcntl(spec->stderr_fd, F_GETFD) < 0 ||
	    (spec->stdin_fd >= 0 && fcntl(spec->stdin_fd, F_GETFD) < 0))
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "exec: stdin %d, stdout %d or stderr %d is not an open descriptor",
				     (int) spec->stdin_fd, (int) spec->stdout_fd, (int) spec->stderr_fd);
	if (spec->cwd != NULL && spec->cwd[0] != '/')
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "exec: working directory \"%.200s\" is not absolute", spec->cwd);
	if (spec->network_profile != SBX_NETWORK_USER && spec->network_profile != SBX_NETWORK_RUNNER)
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "exec: network profile %d is unknown; use SBX_NETWORK_USER or "
				     "SBX_NETWORK_RUNNER",
				     (int) spec->network_profile);
	return 0;
}

static int load_sandbox(struct sbx_executor *executor, const char *id, struct exec *exec,
			struct sbx_error *error)
{
	if (sbx_journal_read(&executor->journal, id, &exec->entry, error) < 0)
		return -1;
	if (exec->entry.backend == NULL || strcmp(exec->entry.backend, SBX_LOCAL_BACKEND_NAME) != 0)
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "sandbox %s belongs to backend \"%s\", not \"local\"", id,
				     exec->entry.backend != NULL ? exec->entry.backend : "(none)");
	if (exec->entry.state != SBX_SANDBOX_READY)
		return sbx_error_set(error, SBX_ERROR_SYSTEM,
				     "sandbox %s is not ready (its prepare did not finish); destroy "
				     "it and prepare a new one",
				     id);
	if (sbx_job_from_entry(&exec->entry, &exec->job, error) < 0)
		return -1;
	exec->have_job = 1;
	if (exec->job.job_dir == NULL ||
	    (!exec->job.have_cgroup && !exec->job.stage_pid_namespace) || !exec->job.have_ids)
		return sbx_error_set(error, SBX_ERROR_SYSTEM,
				     "journal entry of sandbox %s lacks its job directory, cgroup or "
				     "id map; destroy it and prepare a new one",
				     id);
	exec->init_pidfd = sbx_job_open_init(&exec->job);
	if (exec->init_pidfd < 0)
		return sbx_error_set(error, SBX_ERROR_SYSTEM,
				     "the init (pid %d) of sandbox %s is gone, so the sandbox is "
				     "dead; destroy it and prepare a new one",
				     (int) exec->job.init_pid, id);
	return 0;
}

static int begin_stage(struct exec *exec, const char *id, struct sbx_error *error)
{
	struct sbx_control_message message = { .type = SBX_CONTROL_STAGE_BEGIN };
	_cleanup_free_ char *path = NULL;

	if (asprintf(&path, "%s/" SBX_CONTROL_SOCKET_NAME, exec->job.job_dir) < 0)
		return sbx_error_errno(error, ENOMEM, "cannot start a stage");
	exec->control_fd = sbx_control_connect(path, error);
	if (exec->control_fd < 0)
		return -1;
	if (sbx_control_send(exec->control_fd, &message, -1, error) < 0 ||
	    sbx_control_receive(exec->control_fd, &message, &exec->proxy_listen_fd,
				SBX_STAGE_CONTROL_TIMEOUT_MS, error) < 0)
		return sbx_error_prefix(error, "sandbox %s", id);
	if (message.type != SBX_CONTROL_REPLY || !message.ok || message.stage < 1)
		return sbx_error_set(error, SBX_ERROR_SYSTEM, "sandbox %s: the init refused the stage: %s",
				     id, message.error[0] != '\0' ? message.error : "no reason given");
	if (exec->proxy_listen_fd < 0)
		return sbx_error_set(error, SBX_ERROR_SYSTEM,
				     "sandbox %s: the init did not pass the proxy's socket", id);
	exec->stage = message.stage;
	exec->control_version = message.version;
	snprintf(exec->leaf, sizeof(exec->leaf), "stage-%d", exec->stage);
	return 0;
}

static void end_stage(struct exec *exec, const char *id)
{
	struct sbx_control_message message = { .type = SBX_CONTROL_STAGE_END,
					       .stage = exec->stage };
	struct sbx_error error;

	memset(&error, 0, sizeof(error));
	if (exec->control_fd < 0)
		return;
	if (sbx_control_send(exec->control_fd, &message, -1, &error) < 0) {
		sbx_warning("sandbox %s: stage %d: %s", id, exec->stage, error.message);
		return;
	}
	/* A step-exit that exec did not wait for (a cancelled or timed-out step) may come
	 * first. */
	do {
		if (sbx_control_receive(exec->control_fd, &message, NULL,
					SBX_STAGE_CONTROL_TIMEOUT_MS, &error) < 0) {
			sbx_warning("sandbox %s: stage %d: %s", id, exec->stage, error.message);
			return;
		}
	} while (message.type == SBX_CONTROL_STEP_EXIT);
}

static int build_command(struct sbx_executor *executor, const struct sbx_exec_spec *spec,
			 struct exec *exec, struct sbx_error *error)
{
	const char *shell = spec->shell != NULL ? spec->shell : executor->config->shell;

	if (spec->argv != NULL) {
		exec->argv = sbx_command_copy_argv(spec->argv);
	} else {
		const char *script_argv[] = { shell, "/proc/self/fd/3", NULL };

		if (strcmp(shell, "bash") != 0 && strcmp(shell, "sh") != 0)
			return sbx_error_set(error, SBX_ERROR_INVALID,
					     "exec: shell \"%.64s\" is not supported; use bash or sh",
					     shell);
		exec->script_fd = sbx_command_script_fd(spec->script, spec->script_length, error);
		if (exec->script_fd < 0)
			return -1;
		exec->argv = sbx_command_copy_argv(script_argv);
	}
	exec->envp = sbx_command_environment(spec->envp, exec->job.proxy_port ? exec->job.proxy_port
								  : executor->config->network.proxy_port);
	if (exec->argv == NULL || exec->envp == NULL)
		return sbx_error_errno(error, ENOMEM, "cannot build the step's command");
	exec->exec_paths = sbx_command_exec_paths(exec->argv[0]);
	if (exec->exec_paths == NULL)
		return sbx_error_errno(error, ENOMEM, "cannot build the step's command");
	return 0;
}

int sbx_stage_start_proxy(struct sbx_executor *executor, const struct sbx_exec_spec *spec,
		       struct exec *exec, struct sbx_error *error)
{
	struct sbx_proxy_options options;

	if (sbx_egress_build(executor->config, (enum sbx_network_profile) spec->network_profile,
			     exec->job.ci_server_url, exec->job.extra_allow,
			     exec->job.extra_allow_count, &exec->allow, error) < 0)
		return -1;
	if (asprintf(&exec->egress_log, "%s/egress.log", exec->job.job_dir) < 0)
		return sbx_error_errno(error, ENOMEM, "cannot start the egress proxy");
	memset(&options, 0, sizeof(options));
	options.listen_fd = exec->proxy_listen_fd;
	options.allow = &exec->allow;
	options.notice_fd = spec->stderr_fd;
	options.log_path = exec->egress_log;
	options.connect_timeout = PROXY_CONNECT_TIMEOUT_S;
	return sbx_proxy_start(&options, &exec->proxy, error);
}

void sbx_stage_stop_proxy(struct exec *exec)
{
	if (exec->proxy != NULL)
		sbx_proxy_stop(exec->proxy);
	exec->proxy = NULL;
	sbx_allowlist_free(&exec->allow);
	free(exec->egress_log);
	exec->egress_log = NULL;
}

int64_t sbx_stage_deadline(const struct sbx_exec_spec *spec)
{
	if (spec->timeout_seconds <= 0)
		return -1;
	return sbx_monotonic_ms() + spec->timeout_seconds * 1000;
}

int sbx_stage_wait_error(const struct sbx_exec_spec *spec, enum sbx_stage_wait result,
			 struct sbx_error *error)
{
	switch (result) {
	case STEP_CANCELLED:
		return sbx_error_set(error, SBX_ERROR_CANCELLED,
				     "the step in sandbox %s was cancelled; its processes are "
				     "stopped and the sandbox stays",
				     spec->id);
	case STEP_TIMED_OUT:
		return sbx_error_set(error, SBX_ERROR_BUILD,
				     "the step in sandbox %s timed out after %" PRId64 " s",
				     spec->id, (int64_t) spec->timeout_seconds);
	case WAIT_FAILED:
		return sbx_error_errno(error, errno, "cannot wait for the step in sandbox %s",
				       spec->id);
	case STEP_ENDED:
		break;
	}
	return sbx_error_set(error, SBX_ERROR_SYSTEM, "the step in sandbox %s ended without a status",
			     spec->id);
}

/*
 * Runs the step the fast way where it can: the init forks it into the stage's cgroup2 leaf.
 * That needs a cgroup2 leaf (jobs without a cgroup use nested pid namespaces, which only the
 * joining path creates) and an init that speaks stage-run.
 */
static int run_step(struct sbx_executor *executor, const struct sbx_exec_spec *spec,
		    struct exec *exec, int *exit_status, struct sbx_error *error)
{
	struct sbx_error spawn_error;
	int fallback = 0;

	memset(&spawn_error, 0, sizeof(spawn_error));
	if (exec->job.have_cgroup && sbx_cgroup_job_can_clone_into(&exec->job.cgroup) &&
	    exec->control_version >= SBX_CONTROL_VERSION_STAGE_RUN) {
		if (sbx_stage_run_spawned(executor, spec, exec, exit_status, &fallback,
					  &spawn_error) == 0)
			return 0;
		if (!fallback) {
			if (error != NULL)
				*error = spawn_error;
			return -1;
		}
		sbx_debug("sandbox %s: stage %d: %s; joining the init's namespaces instead",
			  spec->id, exec->stage, spawn_error.message);
	}
	/* The init builds its own filter for the steps it spawns. */
	if (sbx_seccomp_filter_new(&exec->filter, error) < 0)
		return -1;
	return sbx_stage_run_joined(executor, spec, exec, exit_status, error);
}

int sbx_stage_exec(struct sbx_executor *executor, const struct sbx_exec_spec *spec,
		   int *exit_status, struct sbx_error *error)
{
	struct exec exec;
	int64_t started = sbx_monotonic_ms();
	int status = -1, rc;

	if (check_spec(spec, error) < 0)
		return -1;
	memset(&exec, 0, sizeof(exec));
	exec.init_pidfd = exec.control_fd = exec.proxy_listen_fd = exec.script_fd = -1;
	sbx_journal_entry_init(&exec.entry);

	rc = load_sandbox(executor, spec->id, &exec, error);
	if (rc == 0)
		rc = build_command(executor, spec, &exec, error);
	if (rc == 0)
		rc = begin_stage(&exec, spec->id, error);
	if (rc == 0) {
		rc = run_step(executor, spec, &exec, &status, error);
		sbx_stage_stop_proxy(&exec);
		end_stage(&exec, spec->id);
	}
	if (rc == 0) {
		*exit_status = status;
		sbx_debug("sandbox %s: stage %d ended with status %d after %" PRId64 " ms", spec->id,
			  exec.stage, status, sbx_monotonic_ms() - started);
	}
	exec_clear(&exec);
	return rc;
}
