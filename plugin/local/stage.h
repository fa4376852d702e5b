/* SPDX-License-Identifier: MIT */
/*
 * exec: one step in a prepared sandbox. The calling process asks the init for the proxy's
 * listening socket, forks a child that enters the stage's cgroup leaf and joins the init's
 * namespaces (a multi-threaded process cannot join a mount or user namespace, and the proxy
 * thread must stay in the host's network namespace), and serves the egress proxy while the
 * step runs. The child forks the step process, which is then inside the job's pid namespace.
 */
#ifndef SBX_LOCAL_STAGE_H
#define SBX_LOCAL_STAGE_H

#include <stdint.h>
#include <sys/types.h>

#include "local.h"
#include "sbx/executor.h"

struct sbx_seccomp_filter;

/* Messages from the joining child and the step process to exec, one write() each. */
enum sbx_stage_report_kind {
	SBX_STAGE_REPORT_STATUS = 1, /* VALUE: the step's wait status */
	SBX_STAGE_REPORT_ERROR = 2, /* VALUE: errno, TEXT: the step that failed */
};

struct sbx_stage_report {
	int32_t kind;
	int32_t value;
	char text[256];
};

/* What the joining child needs; prepared before fork so the child does not allocate. */
struct sbx_stage_child {
	pid_t init_pid;
	int init_pidfd;
	int join_user; /* include CLONE_NEWUSER: the job has its own user namespace */
	/* The host's descriptors for the step; STDIN_FD -1 means /dev/null. */
	int stdin_fd;
	int stdout_fd;
	int stderr_fd;
	int script_fd; /* sealed memfd with the script, or -1 */
	int report_fd; /* write end of the report pipe */
	int go_fd; /* read end: exec writes one byte once the child is in its cgroup leaf */
	const char *cwd;
	char *const *argv;
	/* Candidate paths for argv[0], from the sandbox's PATH, NULL-terminated. */
	char *const *exec_paths;
	char *const *envp;
	uid_t uid;
	gid_t gid;
	int set_groups; /* 0 where setgroups is denied (runner-uid mode) */
	/* The job has no cgroup: the step runs below a nested pid namespace's init, whose exit
	 * makes the kernel kill whatever the step left behind. */
	int stage_pid_namespace;
	int cap_last; /* highest capability number of the kernel */
	struct sbx_seccomp_filter *filter;
};

/* Runs in the forked child: joins, forks the step, reports its status, exits. */
void sbx_stage_child_run(const struct sbx_stage_child *child) __attribute__((noreturn));

int sbx_stage_exec(struct sbx_executor *executor, const struct sbx_exec_spec *spec,
		   int *exit_status, struct sbx_error *error);

#endif /* SBX_LOCAL_STAGE_H */
