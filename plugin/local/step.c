/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "cleanup.h"
#include "seccomp.h"
#include "step.h"
#include "util.h"

/* Lowest number for descriptors lifted out of the way of dup2() onto 0-3. */
#define LIFTED_FD_MIN 10

void sbx_step_report(int report_fd, int kind, int value, const char *text)
{
	struct sbx_stage_report message;

	memset(&message, 0, sizeof(message));
	message.kind = kind;
	message.value = value;
	if (text != NULL)
		snprintf(message.text, sizeof(message.text), "%s", text);
	(void) !write(report_fd, &message, sizeof(message));
}

void sbx_step_fail(int report_fd, const char *what)
{
	sbx_step_report(report_fd, SBX_STAGE_REPORT_ERROR, errno, what);
	_exit(126);
}

int sbx_step_cap_last(void)
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

/* Empties the effective, permitted and inheritable sets. */
static int clear_capabilities(void)
{
	struct __user_cap_header_struct header = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct data[2];

	memset(data, 0, sizeof(data));
	return (int) syscall(SYS_capset, &header, data);
}

/* Drops every privilege: the bounding set needs CAP_SETPCAP, so it goes before the uid. */
static void drop_privileges(const struct sbx_step *step)
{
	for (int cap = 0; cap <= step->cap_last; cap++)
		if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL)
			sbx_step_fail(step->report_fd, "cannot drop the capability bounding set");
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
		sbx_step_fail(step->report_fd, "cannot clear the ambient capabilities");
	if (step->set_groups && setgroups(1, &step->gid) < 0)
		sbx_step_fail(step->report_fd, "cannot set the supplementary groups");
	if (setresgid(step->gid, step->gid, step->gid) < 0)
		sbx_step_fail(step->report_fd, "cannot change to the job's gid");
	if (setresuid(step->uid, step->uid, step->uid) < 0)
		sbx_step_fail(step->report_fd, "cannot change to the job's uid");
	/* A job uid that was already the process's uid keeps its capabilities: clear them. */
	if (clear_capabilities() < 0)
		sbx_step_fail(step->report_fd, "cannot clear the capabilities");
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		sbx_step_fail(step->report_fd, "cannot set no_new_privs");
	/* After the uid change, which would clear it. */
	prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
}

/* Moves *FD to LIFTED_FD_MIN or above, so that no dup2() onto 0-3 can clobber it. */
static void lift_fd(struct sbx_step *step, int *fd, const char *what)
{
	int lifted;

	if (*fd < 0)
		return;
	lifted = fcntl(*fd, F_DUPFD_CLOEXEC, LIFTED_FD_MIN);
	if (lifted < 0)
		sbx_step_fail(step->report_fd, what);
	*fd = lifted;
}

static void setup_descriptors(struct sbx_step *step)
{
	if (step->stdin_fd < 0) {
		step->stdin_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
		if (step->stdin_fd < 0)
			sbx_step_fail(step->report_fd, "cannot open /dev/null for stdin");
	}
	lift_fd(step, &step->stdin_fd, "cannot duplicate stdin");
	lift_fd(step, &step->stdout_fd, "cannot duplicate stdout");
	lift_fd(step, &step->stderr_fd, "cannot duplicate stderr");
	lift_fd(step, &step->script_fd, "cannot duplicate the script");
	if (dup2(step->stdin_fd, STDIN_FILENO) < 0 || dup2(step->stdout_fd, STDOUT_FILENO) < 0 ||
	    dup2(step->stderr_fd, STDERR_FILENO) < 0)
		sbx_step_fail(step->report_fd, "cannot set up the step's standard streams");
	/* Nothing else reaches the step: no control connection, no proxy socket, no cgroup
	 * directory, no host descriptor. The report pipe stays usable until execve() closes
	 * it. */
	if (syscall(SYS_close_range, 3, ~0U, CLOSE_RANGE_CLOEXEC) < 0) {
		for (int fd = 3; fd < 65536; fd++)
			fcntl(fd, F_SETFD, FD_CLOEXEC);
	}
	if (step->script_fd >= 0 && dup2(step->script_fd, SBX_STEP_SCRIPT_FD) < 0)
		sbx_step_fail(step->report_fd, "cannot pass the script to the shell");
}

void sbx_step_exec(const struct sbx_step *shared)
{
	struct sbx_step step = *shared;
	sigset_t none;
	int rc, exec_errno = ENOENT;

	/* The report pipe must not sit on 0-3, which the dup2() calls below overwrite. */
	if (step.report_fd <= SBX_STEP_SCRIPT_FD) {
		int lifted = fcntl(step.report_fd, F_DUPFD_CLOEXEC, LIFTED_FD_MIN);

		if (lifted < 0)
			_exit(125);
		step.report_fd = lifted;
	}
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	for (int sig = 1; sig < NSIG; sig++)
		signal(sig, SIG_DFL);
	/* A new session: no controlling terminal to push input into (TIOCSTI). */
	setsid();

	setup_descriptors(&step);
	if (chdir(step.cwd) < 0)
		sbx_step_fail(step.report_fd, step.cwd);
	drop_privileges(&step);

	/* Last, because the filter blocks what the steps above need. */
	rc = sbx_seccomp_filter_apply(step.filter);
	if (rc < 0) {
		errno = -rc;
		sbx_step_fail(step.report_fd, "cannot load the seccomp filter");
	}
	for (size_t i = 0; step.exec_paths[i] != NULL; i++) {
		execve(step.exec_paths[i], step.argv, step.envp);
		if (errno != ENOENT && errno != ENOTDIR)
			exec_errno = errno;
	}
	/* Like a shell: 127 for a command that is not there, 126 for one that cannot run. */
	dprintf(STDERR_FILENO, "sbx: %s: %s\n", step.argv[0], strerror(exec_errno));
	_exit(exec_errno == ENOENT ? 127 : 126);
}
