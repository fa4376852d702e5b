/* SPDX-License-Identifier: MIT */
/*
 * The forked side of exec: joining the init's namespaces and starting the step. Runs after
 * fork() and sticks to system calls on what struct sbx_stage_child already holds.
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mounts.h"
#include "seccomp.h"
#include "stage.h"

#define JOIN_FLAGS (CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS)

static void __attribute__((noreturn)) fail(const struct sbx_stage_child *child, const char *what)
{
	sbx_step_fail(child->step.report_fd, what);
}

/* Joins with one setns() per /proc/PID/ns file, for kernels without pidfd setns (< 5.8). */
static int join_by_files(const struct sbx_stage_child *child)
{
	static const struct {
		const char *name;
		int flag;
	} namespaces[] = {
		/* The user namespace first: joining it is what grants the rights to join the
		 * others, which all belong to it. */
		{ "user", CLONE_NEWUSER }, { "mnt", CLONE_NEWNS },   { "pid", CLONE_NEWPID },
		{ "net", CLONE_NEWNET },   { "ipc", CLONE_NEWIPC }, { "uts", CLONE_NEWUTS },
	};
	int fds[6];
	char path[64];
	int rc = 0;

	/* Open every file before joining anything: after the mount namespace changes, /proc is
	 * the job's, where the init's host pid means nothing. */
	for (size_t i = 0; i < 6; i++) {
		fds[i] = -1;
		if (namespaces[i].flag == CLONE_NEWUSER && !child->join_user)
			continue;
		snprintf(path, sizeof(path), "/proc/%d/ns/%s", (int) child->init_pid,
			 namespaces[i].name);
		fds[i] = open(path, O_RDONLY | O_CLOEXEC);
		if (fds[i] < 0)
			rc = -1;
	}
	for (size_t i = 0; rc == 0 && i < 6; i++)
		if (fds[i] >= 0 && setns(fds[i], namespaces[i].flag) < 0)
			rc = -1;
	for (size_t i = 0; i < 6; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	return rc;
}

static int join_namespaces(const struct sbx_stage_child *child)
{
	int flags = JOIN_FLAGS | (child->join_user ? CLONE_NEWUSER : 0);

	/* One atomic join through the pidfd (Linux 5.8); older kernels reject a pidfd here. */
	if (setns(child->init_pidfd, flags) == 0)
		return 0;
	if (errno != EINVAL && errno != EBADF)
		return -1;
	return join_by_files(child);
}

/* Closes this process's copies of the step's descriptors once the step has its own. */
static void close_step_fds(const struct sbx_step *step)
{
	if (step->stdin_fd >= 0)
		close(step->stdin_fd);
	close(step->stdout_fd);
	close(step->stderr_fd);
	if (step->script_fd >= 0)
		close(step->script_fd);
}

/* Target of a forwarded SIGTERM (a cancelled step): a child's pid, or -1 for every process in
 * the caller's pid namespace but itself. 0: none. */
static volatile sig_atomic_t forward_target;

static void forward_signal(int signal_number)
{
	int saved = errno;

	if (forward_target != 0)
		kill((pid_t) forward_target, signal_number);
	errno = saved;
}

static void forward_sigterm_to(pid_t target)
{
	struct sigaction action;

	memset(&action, 0, sizeof(action));
	action.sa_handler = forward_signal;
	action.sa_flags = SA_RESTART;
	sigemptyset(&action.sa_mask);
	forward_target = target;
	sigaction(SIGTERM, &action, NULL);
}

/*
 * The stage's own pid namespace, for jobs without a cgroup. This process is inside the job's
 * pid namespace, so it may create a child namespace there (a process that only joined a pid
 * namespace may not: unshare() fails with EINVAL). Its child becomes PID 1 of the new
 * namespace and runs the step below it; when that init exits, the kernel kills every process
 * left in the namespace. SIGTERM travels C -> this process -> the stage init -> kill(-1), and
 * PR_SET_PDEATHSIG carries a SIGKILL of C down the same chain. The stage also gets its own
 * mount namespace with a procfs of its pid namespace: with the job's, getpid() would name
 * another process in /proc, and ps fails.
 */
static void __attribute__((noreturn)) run_stage_namespace(const struct sbx_stage_child *child)
{
	pid_t stage_init, step, done;
	char message[256];
	int status;

	prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
	if (unshare(CLONE_NEWPID | CLONE_NEWNS) < 0)
		fail(child, "cannot create the stage's pid and mount namespaces");
	stage_init = fork();
	if (stage_init < 0)
		fail(child, "cannot fork the stage's init");
	if (stage_init > 0) {
		forward_sigterm_to(stage_init);
		while (waitpid(stage_init, &status, 0) < 0 && errno == EINTR)
			;
		_exit(0);
	}

	/* PID 1 of the stage's namespace: the kernel drops signals it has no handler for. */
	prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
	forward_sigterm_to(-1);
	/* Private first, so that the new /proc stays out of the job's mount namespace. */
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		fail(child, "cannot make the stage's mounts private");
	if (sbx_mounts_proc("", message, sizeof(message)) < 0)
		fail(child, message);
	step = fork();
	if (step < 0)
		fail(child, "cannot fork the step");
	if (step == 0)
		sbx_step_exec(&child->step);
	close_step_fds(&child->step);
	/* Orphans of the step come here too: reap them until the step itself ends. */
	for (;;) {
		done = waitpid(-1, &status, 0);
		if (done == step)
			break;
		if (done < 0 && errno != EINTR)
			fail(child, "cannot wait for the step");
	}
	sbx_step_report(child->step.report_fd, SBX_STAGE_REPORT_STATUS, status, NULL);
	_exit(0);
}

void sbx_stage_child_run(const struct sbx_stage_child *shared)
{
	struct sbx_stage_child copy = *shared;
	const struct sbx_stage_child *child = &copy;
	struct sbx_step *step = &copy.step;
	int status;
	pid_t pid;
	char byte;

	/* The report pipe must not sit on 0-3, which the step's dup2() calls overwrite. */
	if (step->report_fd <= SBX_STEP_SCRIPT_FD) {
		int lifted = fcntl(step->report_fd, F_DUPFD_CLOEXEC, 10);

		if (lifted < 0)
			_exit(125);
		step->report_fd = lifted;
	}

	/* If exec dies, this child must not linger and keep the step's status to itself. */
	prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
	/* Cancellation signals the whole stage leaf; this child stays to report the status. */
	signal(SIGTERM, SIG_IGN);
	signal(SIGINT, SIG_IGN);

	/* Lift the host descriptors above 0-3, so the step's dup2() calls cannot clobber one
	 * with another. */
	if (step->stdin_fd >= 0 && (step->stdin_fd = fcntl(step->stdin_fd, F_DUPFD_CLOEXEC, 10)) < 0)
		fail(child, "cannot duplicate stdin");
	step->stdout_fd = fcntl(step->stdout_fd, F_DUPFD_CLOEXEC, 10);
	step->stderr_fd = fcntl(step->stderr_fd, F_DUPFD_CLOEXEC, 10);
	if (step->stdout_fd < 0 || step->stderr_fd < 0)
		fail(child, "cannot duplicate stdout or stderr");
	if (step->script_fd >= 0 &&
	    (step->script_fd = fcntl(step->script_fd, F_DUPFD_CLOEXEC, 10)) < 0)
		fail(child, "cannot duplicate the script");

	if (read(child->go_fd, &byte, 1) != 1)
		_exit(125);
	close(child->go_fd);
	if (join_namespaces(child) < 0)
		fail(child, "cannot join the sandbox's namespaces");

	pid = fork();
	if (pid < 0)
		fail(child, "cannot fork the step");
	if (pid == 0) {
		if (child->stage_pid_namespace)
			run_stage_namespace(child);
		sbx_step_exec(step);
	}
	if (child->stage_pid_namespace)
		forward_sigterm_to(pid);

	close_step_fds(step);
	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR)
			fail(child, "cannot wait for the step");
	}
	/* With a stage pid namespace, its init reported the step's status. */
	if (!child->stage_pid_namespace)
		sbx_step_report(step->report_fd, SBX_STAGE_REPORT_STATUS, status, NULL);
	_exit(0);
}
