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
#include "util.h"

#define CONTROL_TIMEOUT_MS 10000
/* Bound on the kill of a stage's leftovers: the cgroup empties within milliseconds. */
#define LEAF_KILL_TIMEOUT_MS 5000
#define PROXY_CONNECT_TIMEOUT_S 30

/* Everything one exec owns; released by exec_clear(). */
struct exec {
	struct sbx_journal_entry entry;
	struct sbx_job job;
	int have_job;
	int init_pidfd;
	int control_fd;
	int proxy_listen_fd;
	int stage;
	char leaf[32];
	struct sbx_allowlist allow;
	struct sbx_seccomp_filter *filter;
	struct sbx_proxy *proxy;
	int script_fd;
	char **envp;
	char **argv;
	char **exec_paths;
	char *egress_log;
};

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
				CONTROL_TIMEOUT_MS, error) < 0)
		return sbx_error_prefix(error, "sandbox %s", id);
	if (message.type != SBX_CONTROL_REPLY || !message.ok || message.stage < 1)
		return sbx_error_set(error, SBX_ERROR_SYSTEM, "sandbox %s: the init refused the stage: %s",
				     id, message.error[0] != '\0' ? message.error : "no reason given");
	if (exec->proxy_listen_fd < 0)
		return sbx_error_set(error, SBX_ERROR_SYSTEM,
				     "sandbox %s: the init did not pass the proxy's socket", id);
	exec->stage = message.stage;
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
	if (sbx_control_send(exec->control_fd, &message, -1, &error) < 0 ||
	    sbx_control_receive(exec->control_fd, &message, NULL, CONTROL_TIMEOUT_MS, &error) < 0)
		sbx_warning("sandbox %s: stage %d: %s", id, exec->stage, error.message);
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

static int read_cap_last(void)
{
	_cleanup_free_ char *text = NULL;
	int64_t value;

	if (sbx_read_file("/proc/sys/kernel/cap_last_cap", 64, &text, NULL, NULL) < 0)
		return 63;
	text[strcspn(text, "\n")] = '\0';
	if (sbx_parse_int64(text, &value) < 0 || value > 63)
		return 63;
	return (int) value;
}

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

static int start_proxy(struct sbx_executor *executor, const struct sbx_exec_spec *spec,
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

enum wait_result { STEP_ENDED, STEP_CANCELLED, STEP_TIMED_OUT, WAIT_FAILED };

/* Waits for the joining child (it exits right after the step) or the cancel or timeout. */
static enum wait_result wait_step(int child_pidfd, const struct sbx_exec_spec *spec)
{
	struct pollfd fds[2] = {
		{ .fd = child_pidfd, .events = POLLIN },
		{ .fd = spec->cancel_fd, .events = POLLIN },
	};
	nfds_t count = spec->cancel_fd >= 0 ? 2 : 1;
	int64_t deadline = spec->timeout_seconds > 0
				   ? sbx_monotonic_ms() + spec->timeout_seconds * 1000
				   : -1;

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
		return sbx_cgroup_leaf_kill(&exec->job.cgroup, exec->leaf, LEAF_KILL_TIMEOUT_MS,
					    error);
	if (child_pidfd >= 0)
		pidfd_send_signal(child_pidfd, SIGKILL, NULL, 0);
	return 0;
}

static int run_child(struct sbx_executor *executor, const struct sbx_exec_spec *spec,
		     struct exec *exec, int *exit_status, struct sbx_error *error)
{
	struct sbx_stage_child child;
	struct sbx_stage_report failure;
	int report_pipe[2], go_pipe[2];
	_cleanup_close_ int report_fd = -1, go_fd = -1, child_pidfd = -1;
	struct sbx_error leaf_error;
	enum wait_result result;
	int have_status = 0, status = 0, child_status;
	pid_t pid;

	memset(&child, 0, sizeof(child));
	child.init_pid = exec->job.init_pid;
	child.init_pidfd = exec->init_pidfd;
	child.join_user = init_has_own_user_namespace(exec->job.init_pid);
	child.stdin_fd = spec->stdin_fd;
	child.stdout_fd = spec->stdout_fd;
	child.stderr_fd = spec->stderr_fd;
	child.script_fd = exec->script_fd;
	child.cwd = spec->cwd != NULL ? spec->cwd : "/builds";
	child.argv = exec->argv;
	child.exec_paths = exec->exec_paths;
	child.envp = exec->envp;
	child.uid = exec->job.ids.job_uid;
	child.gid = exec->job.ids.job_gid;
	child.set_groups = exec->job.ids.mode != SBX_IDS_RUNNER;
	child.stage_pid_namespace = !exec->job.have_cgroup;
	child.cap_last = read_cap_last();
	child.filter = exec->filter;

	if (pipe2(report_pipe, O_CLOEXEC) < 0)
		return sbx_error_errno(error, errno, "cannot create a pipe");
	report_fd = report_pipe[0];
	if (pipe2(go_pipe, O_CLOEXEC) < 0) {
		close(report_pipe[1]);
		return sbx_error_errno(error, errno, "cannot create a pipe");
	}
	go_fd = go_pipe[1];
	child.report_fd = report_pipe[1];
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
	    start_proxy(executor, spec, exec, error) < 0 || write(go_fd, "g", 1) != 1) {
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

	if (result == STEP_CANCELLED)
		return sbx_error_set(error, SBX_ERROR_CANCELLED,
				     "the step in sandbox %s was cancelled; its processes are "
				     "stopped and the sandbox stays",
				     spec->id);
	if (result == STEP_TIMED_OUT)
		return sbx_error_set(error, SBX_ERROR_BUILD,
				     "the step in sandbox %s timed out after %" PRId64 " s",
				     spec->id, (int64_t) spec->timeout_seconds);
	if (result == WAIT_FAILED)
		return sbx_error_errno(error, errno, "cannot wait for the step in sandbox %s",
				       spec->id);
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
		rc = sbx_seccomp_filter_new(&exec.filter, error);
	if (rc == 0)
		rc = begin_stage(&exec, spec->id, error);
	if (rc == 0) {
		rc = run_child(executor, spec, &exec, &status, error);
		if (exec.proxy != NULL) {
			sbx_proxy_stop(exec.proxy);
			exec.proxy = NULL;
		}
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
