/* SPDX-License-Identifier: MIT */
/*
 * Per-job cgroups for the local backend. A job gets sbx/<id> at the top of every hierarchy it
 * uses (outside the runner service's own cgroup, so restarting the runner does not kill jobs):
 * on a unified host one cgroup v2 tree with memory, pids and cpu limits; on a hybrid host the v1
 * memory, pids and cpu hierarchies of the limits that are set plus the controller-less cgroup2
 * (or v1 freezer) to track and kill. Below the job cgroup each process group has a leaf ("init", "stage-N"), so
 * a stage can be killed without the init.
 */
#ifndef SBX_LOCAL_CGROUP_H
#define SBX_LOCAL_CGROUP_H

#include <stdint.h>
#include <sys/types.h>

#include "sbx/executor.h"

struct json_object;

enum sbx_cgroup_layout {
	SBX_CGROUP_NONE = 0, /* no usable cgroup file system */
	SBX_CGROUP_UNIFIED = 1, /* cgroup v2 only */
	SBX_CGROUP_HYBRID = 2, /* v1 controllers plus a cgroup2 without controllers */
	SBX_CGROUP_LEGACY = 3, /* v1 only */
};

struct sbx_cgroup_limits {
	uint64_t memory_max; /* bytes, 0: none */
	uint64_t pids_max; /* 0: none */
	uint64_t cpu_max_millis; /* thousandths of a CPU, 0: none */
};

#define SBX_CGROUP_MAX_PATHS 5

/* The directories that make up one job's cgroup, in every hierarchy used. */
struct sbx_cgroup_job {
	enum sbx_cgroup_layout layout;
	/* Absolute directories of the job cgroup, e.g. /sys/fs/cgroup/memory/sbx/<id>. */
	char *paths[SBX_CGROUP_MAX_PATHS];
	size_t path_count;
	/* Index into PATHS of the hierarchy used to track and kill processes (-1: none). */
	int tracking_index;
};

/* Detects the layout the host uses. */
enum sbx_cgroup_layout sbx_cgroup_detect(void);
const char *sbx_cgroup_layout_name(enum sbx_cgroup_layout layout);

/* Placement of a job's cgroups in each hierarchy. */
enum sbx_cgroup_placement {
	/* <hierarchy>/sbx/<id>, outside the runner's own cgroup; needs root. */
	SBX_CGROUP_AT_TOP = 0,
	/* <delegated cgroup>/sbx/<id>, where the delegated cgroup is the highest one above the
	 * caller's own cgroup that belongs to the caller's uid (systemd's Delegate=yes, or a
	 * subtree chowned to the runner's user). */
	SBX_CGROUP_DELEGATED = 1,
};

/* Creates the job cgroup for ID with LIMITS at the top of each hierarchy. Fails with a message
 * naming the missing controller or the permission problem and the fix. */
int sbx_cgroup_job_create(const char *id, const struct sbx_cgroup_limits *limits,
			  struct sbx_cgroup_job *job, struct sbx_error *error);
/* The same with the PLACEMENT of the job cgroups chosen. */
int sbx_cgroup_job_create_in(const char *id, const struct sbx_cgroup_limits *limits,
			     enum sbx_cgroup_placement placement, struct sbx_cgroup_job *job,
			     struct sbx_error *error);

/* Moves PID into leaf LEAF ("init", "stage-3", ...) of the job, creating the leaf. */
int sbx_cgroup_job_enter(const struct sbx_cgroup_job *job, const char *leaf, pid_t pid,
			 struct sbx_error *error);

/* True when JOB tracks processes in a cgroup2 hierarchy, whose leaves clone3 can fork into. */
int sbx_cgroup_job_can_clone_into(const struct sbx_cgroup_job *job);

/*
 * Creates leaf LEAF like sbx_cgroup_job_enter() and opens its directory (O_PATH) into *FD, for
 * clone3(CLONE_INTO_CGROUP). Unless OWNER is (uid_t) -1, the cgroup.procs files of the leaf
 * and of the job cgroup are given to OWNER. The kernel checks the cloning process's write
 * permission on the leaf's file and on that of the common ancestor of the source and the
 * target, which is the job cgroup.
 */
int sbx_cgroup_leaf_open(const struct sbx_cgroup_job *job, const char *leaf, uid_t owner,
			 int *fd, struct sbx_error *error);

/* Kills every process in leaf LEAF and removes it; waits at most TIMEOUT_MS for it to empty. */
int sbx_cgroup_leaf_kill(const struct sbx_cgroup_job *job, const char *leaf, int timeout_ms,
			 struct sbx_error *error);

/* Sends SIGNAL to every process in leaf LEAF (e.g. SIGTERM before a kill). */
int sbx_cgroup_leaf_signal(const struct sbx_cgroup_job *job, const char *leaf, int signal_number);

/* Kills every process of the job and removes all its directories; removing what is gone
 * succeeds. Waits at most TIMEOUT_MS. */
int sbx_cgroup_job_destroy(const struct sbx_cgroup_job *job, int timeout_ms,
			   struct sbx_error *error);

/* Records JOB in, and restores it from, a journal entry's data object. */
struct json_object *sbx_cgroup_job_to_json(const struct sbx_cgroup_job *job);
int sbx_cgroup_job_from_json(struct json_object *object, struct sbx_cgroup_job *job,
			     struct sbx_error *error);
void sbx_cgroup_job_clear(struct sbx_cgroup_job *job);

/* For tests: when DISABLED is non-zero, kill the way kernels before 5.14 require (freeze,
 * SIGKILL every process, thaw) even where cgroup.kill exists. */
void sbx_cgroup_testing_disable_kill_file(int disabled);

#endif /* SBX_LOCAL_CGROUP_H */
