/* SPDX-License-Identifier: MIT */
/*
 * exec: one step in a prepared sandbox. The calling process asks the init for the proxy's
 * listening socket and serves the egress proxy in a thread while the step runs. The step starts
 * one of two ways:
 *
 * - spawned by the init (stage_spawn.c): the init forks it straight into the stage's cgroup2
 *   leaf with clone3(CLONE_INTO_CGROUP). No process moves between cgroups, which matters
 *   because the first cgroup.procs write after an idle period waits for an RCU grace period
 *   (about 16 ms on kernels without favordynmods);
 * - joined (stage_join.c), where the job has no cgroup2 leaf, the init is older than this sbx
 *   or the kernel lacks CLONE_INTO_CGROUP (before 5.7): exec forks a child that enters the
 *   leaf and joins the init's namespaces (a multi-threaded process cannot join a mount or user
 *   namespace, and the proxy thread must stay in the host's network namespace); that child
 *   forks the step.
 */
#ifndef SBX_LOCAL_STAGE_H
#define SBX_LOCAL_STAGE_H

#include <stdint.h>
#include <sys/types.h>

#include "local.h"
#include "sbx/executor.h"
#include "step.h"

/* Data the joining child needs, prepared before fork so the child does not allocate. */
struct sbx_stage_child {
	pid_t init_pid;
	int init_pidfd;
	int join_user; /* include CLONE_NEWUSER: the job has its own user namespace */
	/* The step to start, with the host's descriptors; STEP.REPORT_FD is the write end of the
	 * report pipe. */
	struct sbx_step step;
	int go_fd; /* read end: exec writes one byte once the child is in its cgroup leaf */
	/* The job has no cgroup: the step runs below a nested pid namespace's init, whose exit
	 * makes the kernel kill whatever the step left behind. */
	int stage_pid_namespace;
};

/* Runs in the forked child: joins, forks the step, reports its status, exits. */
void sbx_stage_child_run(const struct sbx_stage_child *child) __attribute__((noreturn));

int sbx_stage_exec(struct sbx_executor *executor, const struct sbx_exec_spec *spec,
		   int *exit_status, struct sbx_error *error);

#endif /* SBX_LOCAL_STAGE_H */
