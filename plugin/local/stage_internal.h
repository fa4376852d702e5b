/* SPDX-License-Identifier: MIT */
/* Shared by the parts of exec: stage.c (the common steps), stage_spawn.c and stage_join.c. */
#ifndef SBX_LOCAL_STAGE_INTERNAL_H
#define SBX_LOCAL_STAGE_INTERNAL_H

#include "allowlist.h"
#include "job.h"
#include "journal.h"
#include "local.h"
#include "sbx/executor.h"

struct sbx_seccomp_filter;
struct sbx_proxy;

/* Bound on the wait for each of the init's replies on the control socket. */
#define SBX_STAGE_CONTROL_TIMEOUT_MS 10000
/* Bound on the kill of a stage's leftovers: the cgroup empties within milliseconds. */
#define SBX_STAGE_LEAF_KILL_TIMEOUT_MS 5000

/* Everything one exec owns; released by exec_clear() in stage.c. */
struct exec {
	struct sbx_journal_entry entry;
	struct sbx_job job;
	int have_job;
	int init_pidfd;
	int control_fd;
	/* Protocol version of the init's reply to stage-begin. */
	int control_version;
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

enum sbx_stage_wait { STEP_ENDED, STEP_CANCELLED, STEP_TIMED_OUT, WAIT_FAILED };

/* Starts the egress proxy thread on the init's listening socket. */
int sbx_stage_start_proxy(struct sbx_executor *executor, const struct sbx_exec_spec *spec,
			  struct exec *exec, struct sbx_error *error);

/* Stops the egress proxy thread, if it runs, and frees what it used. */
void sbx_stage_stop_proxy(struct exec *exec);

/* The sbx_monotonic_ms() time at which the step times out, -1 without a timeout. */
int64_t sbx_stage_deadline(const struct sbx_exec_spec *spec);

/* Fills ERROR for a step that did not end by itself (RESULT other than STEP_ENDED). */
int sbx_stage_wait_error(const struct sbx_exec_spec *spec, enum sbx_stage_wait result,
			 struct sbx_error *error);

/*
 * Starts the step through the init (stage-run) and waits for it. Sets *FALLBACK and returns -1
 * without starting anything when the init cannot spawn steps; then the caller joins instead.
 */
int sbx_stage_run_spawned(struct sbx_executor *executor, const struct sbx_exec_spec *spec,
			  struct exec *exec, int *exit_status, int *fallback,
			  struct sbx_error *error);

/* Starts the step from a child that joins the init's namespaces, and waits for it. */
int sbx_stage_run_joined(struct sbx_executor *executor, const struct sbx_exec_spec *spec,
			 struct exec *exec, int *exit_status, struct sbx_error *error);

#endif /* SBX_LOCAL_STAGE_INTERNAL_H */
