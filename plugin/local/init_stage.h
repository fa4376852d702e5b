/* SPDX-License-Identifier: MIT */
/*
 * The init's side of stage-run: it forks the step straight into the stage's cgroup2 leaf with
 * clone3(CLONE_INTO_CGROUP), so that no process of the stage ever moves between cgroups. The
 * step is a child of the init, so the init reaps it and reports its status (init_serve.c).
 */
#ifndef SBX_LOCAL_INIT_STAGE_H
#define SBX_LOCAL_INIT_STAGE_H

#include <stddef.h>
#include <sys/types.h>

#include "control.h"

/*
 * Starts the step that MESSAGE (stage-run of stage STAGE) requests with the descriptors FDS,
 * and closes FDS. The reply on CONNECTION_FD carries the step's pid once it has executed its
 * command, an error when it could not, or "unsupported" when the kernel cannot clone into a
 * cgroup. Returns the step's pid, or 0 when no step runs.
 */
pid_t sbx_init_stage_run(int connection_fd, int stage, const struct sbx_control_message *message,
			 int *fds, size_t count);

/* Sends step-exit for a step of stage STAGE that ended with wait status STATUS. */
void sbx_init_stage_report_exit(int connection_fd, int stage, int status);

#endif /* SBX_LOCAL_INIT_STAGE_H */
