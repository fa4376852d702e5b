/* SPDX-License-Identifier: MIT */
/*
 * The job init: PID 1 of the job's user, mount, pid, net, ipc and uts namespaces. It builds the
 * file system, brings up loopback, holds the egress proxy's listening socket, serves the control
 * socket, reaps orphans, and lives until it is killed or its deadline passes.
 *
 * It is started through a short-lived helper process: prepare forks the helper (so the init
 * descends from a regular fork() even when the host is multi-threaded), the helper clones the
 * init with the new namespaces, writes its id maps and exits. The init is then reparented away
 * from the host process and never holds the host's stdio.
 */
#ifndef SBX_LOCAL_INIT_H
#define SBX_LOCAL_INIT_H

#include <stdint.h>
#include <sys/types.h>

#include "sbx/executor.h"

struct sbx_mounts_plan;
struct sbx_id_map;

struct sbx_init_options {
	const struct sbx_mounts_plan *mounts;
	const struct sbx_id_map *ids;
	const char *hostname;
	uint16_t proxy_port;
	/* Listening control socket, created by prepare; the init keeps it. */
	int control_fd;
	/* Unix time after which the init exits, which kills the whole job. */
	int64_t deadline;
	/* Host directory the new root is assembled on, inside the init's own mount namespace. */
	const char *staging;
};

/*
 * Called with the init's host pid once its id maps are written and before it goes on, so the
 * caller can record it and put it into its cgroup. A failure stops the start and kills the init.
 */
typedef int (*sbx_init_pid_fn)(void *userdata, pid_t pid, struct sbx_error *error);

/* Starts the init and waits up to TIMEOUT_MS until it is ready. *PID gets its host pid. */
int sbx_init_start(const struct sbx_init_options *options, sbx_init_pid_fn on_pid,
		   void *userdata, int timeout_ms, pid_t *pid, struct sbx_error *error);

#endif /* SBX_LOCAL_INIT_H */
