/* SPDX-License-Identifier: MIT */
/*
 * The forked side of exec: joining the init's namespaces and starting the step. Runs after
 * fork() and sticks to system calls on what struct sbx_stage_child already holds.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
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
/* Descriptor number of the script in the step; the shell reads /proc/self/fd/3. */
#define SCRIPT_FD 3

static void report(const struct sbx_stage_child *child, int kind, int value, const char *text)
{
	struct sbx_stage_report message;

	memset(&message, 0, sizeof(message));
	message.kind = kind;
	message.value = value;
	if (text != NULL)
		snprintf(message.text, sizeof(message.text), "%s", text);
	(void) !write(child->report_fd, &message, sizeof(message));
}

static void __attribute__((noreturn)) fail(const struct sbx_stage_child *child, const char *what)
{
	report(child, SBX_STAGE_REPORT_ERROR, errno, what);
	_exit(126);
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

/* Empties the effective, permitted and inheritable sets. */
static int clear_capabilities(void)
{
	struct __user_cap_header_struct header = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct data[2];

	memset(data, 0, sizeof(data));
	return (int) syscall(SYS_capset, &header, data);
}

/* Drops every privilege: the bounding set needs CAP_SETPCAP, so it goes before the uid. */
static void drop_privileges(const struct sbx_stage_child *child)
{
	for (int cap = 0; cap <= child->cap_last; cap++)
		if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL)
			fail(child, "cannot drop the capability bounding set");
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
		fail(child, "cannot clear the ambient capabilities");
	if (child->set_groups && setgroups(1, &child->gid) < 0)
		fail(child, "cannot set the supplementary groups");
	if (setresgid(child->gid, child->gid, child->gid) < 0)
		fail(child, "cannot change to the job's gid");
	if (setresuid(child->uid, child->uid, child->uid) < 0)
		fail(child, "cannot change to the job's uid");
	/* A job uid that was already the process's uid keeps its capabilities: clear them. */
	if (clear_capabilities() < 0)
		fail(child, "cannot clear the capabilities");
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		fail(child, "cannot set no_new_privs");
	/* After the uid change, which would clear it. */
	prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
}

static void setup_descriptors(const struct sbx_stage_child *child, int in_fd, int out_fd,
			      int err_fd, int script_fd)
{
	if (in_fd < 0) {
		in_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
		if (in_fd < 0)
			fail(child, "cannot open /dev/null for stdin");
	}
	if (dup2(in_fd, STDIN_FILENO) < 0 || dup2(out_fd, STDOUT_FILENO) < 0 ||
	    dup2(err_fd, STDERR_FILENO) < 0)
		fail(child, "cannot set up the step's standard streams");
	/* Nothing else reaches the step: no control connection, no proxy socket, no host
	 * descriptor. The report pipe stays usable until execve() closes it. */
	if (syscall(SYS_close_range, 3, ~0U, CLOSE_RANGE_CLOEXEC) < 0) {
		for (int fd = 3; fd < 65536; fd++)
			fcntl(fd, F_SETFD, FD_CLOEXEC);
	}
	if (script_fd >= 0 && dup2(script_fd, SCRIPT_FD) < 0)
		fail(child, "cannot pass the script to the shell");
}

static void __attribute__((noreturn)) run_step(const struct sbx_stage_child *child, int in_fd,
					       int out_fd, int err_fd, int script_fd)
{
	sigset_t none;
	int rc, exec_errno = ENOENT;

	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	for (int sig = 1; sig < NSIG; sig++)
		signal(sig, SIG_DFL);
	/* A new session: no controlling terminal to push input into (TIOCSTI). */
	setsid();

	setup_descriptors(child, in_fd, out_fd, err_fd, script_fd);
	if (chdir(child->cwd) < 0)
		fail(child, child->cwd);
	drop_privileges(child);

	/* Last, because the filter blocks what the steps above need. */
	rc = sbx_seccomp_filter_apply(child->filter);
	if (rc < 0) {
		errno = -rc;
		fail(child, "cannot load the seccomp filter");
	}
	for (size_t i = 0; child->exec_paths[i] != NULL; i++) {
		execve(child->exec_paths[i], child->argv, child->envp);
		if (errno != ENOENT && errno != ENOTDIR)
			exec_errno = errno;
	}
	/* Like a shell: 127 for a command that is not there, 126 for one that cannot run. */
	dprintf(STDERR_FILENO, "sbx: %s: %s\n", child->argv[0], strerror(exec_errno));
	_exit(exec_errno == ENOENT ? 127 : 126);
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
static void __attribute__((noreturn)) run_stage_namespace(const struct sbx_stage_child *child,
							  int in_fd, int out_fd, int err_fd,
							  int script_fd)
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
		run_step(child, in_fd, out_fd, err_fd, script_fd);
	if (in_fd >= 0)
		close(in_fd);
	close(out_fd);
	close(err_fd);
	if (script_fd >= 0)
		close(script_fd);
	/* Orphans of the step come here too: reap them until the step itself ends. */
	for (;;) {
		done = waitpid(-1, &status, 0);
		if (done == step)
			break;
		if (done < 0 && errno != EINTR)
			fail(child, "cannot wait for the step");
	}
	report(child, SBX_STAGE_REPORT_STATUS, status, NULL);
	_exit(0);
}

void sbx_stage_child_run(const struct sbx_stage_child *shared)
{
	struct sbx_stage_child copy = *shared;
	const struct sbx_stage_child *child = &copy;
	int in_fd = -1, out_fd, err_fd, script_fd = -1, status;
	pid_t step;
	char byte;

	/* The report pipe must not sit on 0-3, which the step's dup2() calls overwrite. */
	if (copy.report_fd <= SCRIPT_FD) {
		int lifted = fcntl(copy.report_fd, F_DUPFD_CLOEXEC, 10);

		if (lifted < 0)
			_exit(125);
		copy.report_fd = lifted;
	}

	/* If exec dies, this child must not linger and keep the step's status to itself. */
	prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
	/* Cancellation signals the whole stage leaf; this child stays to report the status. */
	signal(SIGTERM, SIG_IGN);
	signal(SIGINT, SIG_IGN);

	/* Lift the host descriptors above 0-3, so the step's dup2() calls cannot clobber one
	 * with another. */
	if (child->stdin_fd >= 0 && (in_fd = fcntl(child->stdin_fd, F_DUPFD_CLOEXEC, 10)) < 0)
		fail(child, "cannot duplicate stdin");
	out_fd = fcntl(child->stdout_fd, F_DUPFD_CLOEXEC, 10);
	err_fd = fcntl(child->stderr_fd, F_DUPFD_CLOEXEC, 10);
	if (out_fd < 0 || err_fd < 0)
		fail(child, "cannot duplicate stdout or stderr");
	if (child->script_fd >= 0 &&
	    (script_fd = fcntl(child->script_fd, F_DUPFD_CLOEXEC, 10)) < 0)
		fail(child, "cannot duplicate the script");

	if (read(child->go_fd, &byte, 1) != 1)
		_exit(125);
	close(child->go_fd);
	if (join_namespaces(child) < 0)
		fail(child, "cannot join the sandbox's namespaces");

	step = fork();
	if (step < 0)
		fail(child, "cannot fork the step");
	if (step == 0) {
		if (child->stage_pid_namespace)
			run_stage_namespace(child, in_fd, out_fd, err_fd, script_fd);
		run_step(child, in_fd, out_fd, err_fd, script_fd);
	}
	if (child->stage_pid_namespace)
		forward_sigterm_to(step);

	if (in_fd >= 0)
		close(in_fd);
	close(out_fd);
	close(err_fd);
	if (script_fd >= 0)
		close(script_fd);
	while (waitpid(step, &status, 0) < 0) {
		if (errno != EINTR)
			fail(child, "cannot wait for the step");
	}
	/* With a stage pid namespace, its init reported the step's status. */
	if (!child->stage_pid_namespace)
		report(child, SBX_STAGE_REPORT_STATUS, status, NULL);
	_exit(0);
}
