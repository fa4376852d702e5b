/* SPDX-License-Identifier: MIT */
/* Helpers shared by cgroup.c (creating, entering, journal) and cgroup_kill.c (killing, removing). */
#ifndef SBX_LOCAL_CGROUP_INTERNAL_H
#define SBX_LOCAL_CGROUP_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "sbx/executor.h"

/* cgroup.c: file access. These return 0 or -1 with errno. */
int sbx_cgroup_join_path(char *buf, size_t size, const char *dir, const char *name);
int sbx_cgroup_write_file(const char *dir, const char *file, const char *value);
int sbx_cgroup_read_file(const char *dir, const char *file, char **data);
/* Fills ERROR for a failed OPERATION on PATH with the fix for CONTROLLER (NULL: any). */
int sbx_cgroup_error(struct sbx_error *error, int errnum, const char *path,
		     const char *controller, const char *operation);
long long sbx_cgroup_keyed_value(const char *text, const char *key);
void sbx_cgroup_sleep_ms(int64_t ms);
int64_t sbx_cgroup_remaining_ms(int64_t deadline);

/* cgroup_kill.c. DEADLINE is a sbx_monotonic_ms() value. */
/* Sends SIGNAL_NUMBER to every process in DIR and below. 0 or -1/errno. */
int sbx_cgroup_signal_tree(const char *dir, int signal_number, size_t *signalled);
/* Kills everything in the tracking cgroup DIR (cgroup2 when V2, else the v1 freezer) and
 * waits until it is empty. */
int sbx_cgroup_kill_tracking(const char *dir, int v2, int64_t deadline, struct sbx_error *error);
/* Kills everything in a v1 limit cgroup, which has no freezer, until it is empty. */
int sbx_cgroup_kill_plain(const char *dir, int64_t deadline, struct sbx_error *error);
/* Removes DIR and every cgroup below it; a missing DIR counts as removed. */
int sbx_cgroup_remove_tree(const char *dir, int64_t deadline, struct sbx_error *error);

/* cgroup_delegate.c. */
/*
 * Copies into PATH the caller's cgroup in the hierarchy whose line of PROC_CGROUP (the text of
 * /proc/self/cgroup) lists CONTROLLER, or in the cgroup2 hierarchy ("0::") when CONTROLLER is
 * NULL. 0, or -1 with errno ENOENT (no such line) or EINVAL.
 */
int sbx_cgroup_own_path(const char *proc_cgroup, const char *controller, char *path,
			size_t size);
/*
 * Finds the delegated cgroup below MOUNT (the hierarchy of CONTROLLER, NULL for cgroup2) that
 * job cgroups go in when sbx does not run as root. That is the highest cgroup between the
 * hierarchy's root and the caller's own cgroup that belongs to the caller, as every cgroup
 * below it on that path must. Fails with a message that ends in FIX when the caller's own
 * cgroup is not delegated.
 */
int sbx_cgroup_delegated_base(const char *mount, const char *controller, const char *fix,
			      char **base, struct sbx_error *error);

#endif /* SBX_LOCAL_CGROUP_INTERNAL_H */
