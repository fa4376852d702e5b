/* SPDX-License-Identifier: MIT */
/*
 * The step process: the last fork before the job's command. It takes the stage's standard
 * streams, changes to the job's uid and gid, drops every capability, sets no_new_privs, loads
 * the seccomp filter and executes the command. Both starters use it: the init, which forks the
 * step into the stage's cgroup leaf (init_stage.c), and the joining child of exec
 * (stage_child.c). It runs after fork() and sticks to system calls on what struct sbx_step
 * holds.
 */
#ifndef SBX_LOCAL_STEP_H
#define SBX_LOCAL_STEP_H

#include <stdint.h>
#include <sys/types.h>

struct sbx_seccomp_filter;

/* Descriptor number of the script in the step; the shell reads /proc/self/fd/3. */
#define SBX_STEP_SCRIPT_FD 3

/* Messages from a starter or the step to whoever waits for it, one write() each. */
enum sbx_stage_report_kind {
	SBX_STAGE_REPORT_STATUS = 1, /* VALUE: the step's wait status */
	SBX_STAGE_REPORT_ERROR = 2, /* VALUE: errno, TEXT: the step that failed */
};

struct sbx_stage_report {
	int32_t kind;
	int32_t value;
	char text[256];
};

struct sbx_step {
	/* Descriptors for the step; STDIN_FD -1 means /dev/null, SCRIPT_FD -1 none. */
	int stdin_fd;
	int stdout_fd;
	int stderr_fd;
	int script_fd;
	/* Write end of the report pipe (close-on-exec, so execve() closes it). */
	int report_fd;
	const char *cwd;
	char *const *argv;
	/* Candidate paths for argv[0], from the sandbox's PATH, NULL-terminated. */
	char *const *exec_paths;
	char *const *envp;
	uid_t uid;
	gid_t gid;
	int set_groups; /* 0 where setgroups is denied (runner-uid mode) */
	int cap_last; /* highest capability number of the kernel */
	struct sbx_seccomp_filter *filter;
};

/* Writes one report to REPORT_FD; a reader that is gone is ignored. */
void sbx_step_report(int report_fd, int kind, int value, const char *text);

/* Reports errno with WHAT as an error and exits with 126. */
void sbx_step_fail(int report_fd, const char *what) __attribute__((noreturn));

/* Becomes the step: sets up descriptors, credentials and the filter, then executes argv. */
void sbx_step_exec(const struct sbx_step *step) __attribute__((noreturn));

/* Reads the highest capability number of the running kernel (63 when unknown). */
int sbx_step_cap_last(void);

#endif /* SBX_LOCAL_STEP_H */
