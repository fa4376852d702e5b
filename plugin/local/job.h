/* SPDX-License-Identifier: MIT */
/*
 * A local sandbox as the journal records it, and the operations on a whole sandbox: prepare
 * (prepare.c), destroy and list (job.c). The backend data of a journal entry holds:
 *
 *   format        version of this layout (SBX_JOB_DATA_FORMAT)
 *   job_dir       <state_dir>/jobs/<id>
 *   builds_dir    host directory bound on /builds
 *   cache_dir     host directory bound on /cache
 *   rootfs        root file system of the job
 *   ids           the user namespace's id maps (ids.h)
 *   cgroup        the job's cgroup (cgroup.h)
 *   stage_pid_namespace   true when the job has no cgroup (local.require_cgroup: false), so
 *                 each stage runs in a nested pid namespace instead
 *   init          {"pid": N, "start_time": N, "pid_namespace": N}
 *   proxy_port    port of the egress proxy inside the sandbox
 *   ci_server_url, extra_allow   what the egress allow-lists add for this job
 *
 * Every key but format may be missing while prepare is still running or after it failed.
 */
#ifndef SBX_LOCAL_JOB_H
#define SBX_LOCAL_JOB_H

#include <stdint.h>
#include <sys/types.h>

#include "cgroup.h"
#include "ids.h"
#include "journal.h"
#include "local.h"

#define SBX_JOB_DATA_FORMAT 1

struct sbx_job {
	char *job_dir;
	char *builds_dir;
	char *cache_dir;
	char *rootfs;
	int have_ids;
	struct sbx_id_map ids;
	int have_cgroup;
	struct sbx_cgroup_job cgroup;
	int stage_pid_namespace; /* no cgroup: each stage gets a nested pid namespace */
	pid_t init_pid; /* 0: none recorded */
	uint64_t init_start_time;
	uint64_t init_pid_namespace; /* inode of the init's pid namespace; 0: not recorded */
	uint16_t proxy_port;
	char *ci_server_url;
	char **extra_allow;
	size_t extra_allow_count;
};

/* Reads the backend data of ENTRY. Missing parts stay empty; malformed ones fail. */
int sbx_job_from_entry(const struct sbx_journal_entry *entry, struct sbx_job *job,
		       struct sbx_error *error);
void sbx_job_clear(struct sbx_job *job);

/* Opens a pidfd of the job's init after checking its start time; -1/ESRCH when it is gone. */
int sbx_job_open_init(const struct sbx_job *job);

/* Undoes everything ENTRY records (init, cgroup, job directory); does not touch the journal. */
int sbx_job_teardown(struct sbx_executor *executor, const struct sbx_journal_entry *entry,
		     struct sbx_error *error);

int sbx_job_destroy(struct sbx_executor *executor, const char *id, struct sbx_error *error);
int sbx_job_list(struct sbx_executor *executor, sbx_list_fn callback, void *userdata,
		 struct sbx_error *error);

/* prepare.c */
int sbx_prepare(struct sbx_executor *executor, const struct sbx_job_spec *spec,
		struct sbx_error *error);

#endif /* SBX_LOCAL_JOB_H */
