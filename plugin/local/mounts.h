/* SPDX-License-Identifier: MIT */
/*
 * The job's file system. The plan is built in the prepare process, which may allocate and log,
 * and applied by the job init inside its new user and mount namespaces, which only makes system
 * calls on what the plan already holds.
 *
 * The root is a fresh tmpfs with read-only recursive binds of every top-level entry of the
 * host's root (or of a configured root file system directory), with symlinks recreated. It
 * gets the job's own /proc, /sys and /dev, writable /builds, /cache and a bounded /tmp,
 * generated /etc files, and /.sbx/bin with the host's gitlab-runner. After pivot_root the
 * masked paths get empty read-only mounts and the root itself becomes read-only.
 */
#ifndef SBX_LOCAL_MOUNTS_H
#define SBX_LOCAL_MOUNTS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "sbx/executor.h"

struct sbx_config;

enum sbx_mounts_entry_kind {
	SBX_MOUNTS_BIND_DIR = 0, /* directory: read-only recursive bind */
	SBX_MOUNTS_BIND_FILE = 1, /* any other file: read-only bind */
	SBX_MOUNTS_SYMLINK = 2, /* symlink: recreated with the same target */
	SBX_MOUNTS_EMPTY_DIR = 3, /* masked directory: an empty mount point only */
};

struct sbx_mounts_entry {
	char *name;
	enum sbx_mounts_entry_kind kind;
	char *link_target; /* SBX_MOUNTS_SYMLINK */
};

/* The files generated into jobs/<id>/etc and bound over /etc/<name>. */
#define SBX_MOUNTS_ETC_FILES 5
extern const char *const sbx_mounts_etc_names[SBX_MOUNTS_ETC_FILES];

struct sbx_mounts_plan {
	/* Root file system of the job: "/" or a configured directory. */
	char *root_path;
	struct sbx_mounts_entry *entries;
	size_t entry_count;
	/* Absolute paths masked after pivot_root, in order. */
	char **masks;
	size_t mask_count;
	uint64_t tmp_size;
	uid_t job_uid;
	gid_t job_gid;
	/* Host descriptors (O_PATH, close-on-exec) the init binds through /proc/self/fd. A bind
	 * source must be a mount of the caller's own mount namespace, so the init opens them
	 * itself, while its fsuid is still the one of its creator (sbx_mounts_plan_open()). */
	int root_fd;
	/* Host paths behind the descriptors. */
	char *builds_dir;
	char *cache_dir;
	char *etc_dir;
	char *runner_path;
	int builds_fd;
	int cache_fd;
	int etc_fds[SBX_MOUNTS_ETC_FILES];
	int runner_fd; /* gitlab-runner binary, or -1 */
};

/* Paths every job has masked, besides local.masked_paths and the state directory. */
extern const char *const sbx_mounts_builtin_masks[];

/*
 * Picks the root file system for IMAGE from local.images and local.rootfs. *ROOTFS gets a
 * directory or NULL for the host's root. *IGNORED is set when IMAGE matched nothing and
 * local.unmapped_image is "ignore". With unmapped_image "reject" that is an
 * SBX_ERROR_INVALID error.
 */
int sbx_mounts_select_rootfs(const struct sbx_config *config, const char *image,
			     const char **rootfs, int *ignored, struct sbx_error *error);

/* The host paths a job's file system is made of. */
struct sbx_mounts_sources {
	const char *root_path; /* NULL: the host's root */
	const char *builds_dir;
	const char *cache_dir;
	const char *etc_dir; /* the generated /etc files */
	const char *runner_path; /* gitlab-runner binary, may be NULL */
};

/*
 * Builds the plan: lists the root's top-level entries and the mask list (built-in masks,
 * local.masked_paths, STATE_DIR, CACHE_BASE and EXTRA_MASK such as the runner's TMPDIR, each
 * may be NULL). The descriptors start at -1.
 */
int sbx_mounts_plan_build(const struct sbx_config *config, const struct sbx_mounts_sources *sources,
			  const char *state_dir, const char *cache_base, const char *extra_mask,
			  struct sbx_mounts_plan *plan, struct sbx_error *error);
/* Opens the descriptors of PLAN: the root, builds, cache, the /etc files and gitlab-runner. */
int sbx_mounts_plan_open(struct sbx_mounts_plan *plan, struct sbx_error *error);
void sbx_mounts_plan_free(struct sbx_mounts_plan *plan);

/*
 * Writes the generated /etc files (passwd, group, hosts, hostname, resolv.conf) into ETC_DIR.
 */
int sbx_mounts_write_etc(const char *etc_dir, const char *hostname, uid_t job_uid,
			 gid_t job_gid, struct sbx_error *error);

/*
 * Builds the job's file system and switches to it with pivot_root. Runs in the job init (PID 1
 * of the new namespaces, uid 0 of its user namespace). STAGING is an existing host directory
 * that the new root's tmpfs is mounted on. On failure MESSAGE names the step that failed.
 */
int sbx_mounts_apply(const struct sbx_mounts_plan *plan, const char *staging, char *message,
		     size_t message_size);

/*
 * Mounts a procfs of the caller's pid namespace on ROOT/proc ("" for /proc) with /proc/sys,
 * /proc/sysrq-trigger, /proc/irq and /proc/bus read-only. On failure MESSAGE names the step.
 */
int sbx_mounts_proc(const char *root, char *message, size_t message_size);

/* Finds the gitlab-runner binary: CONFIGURED if set, else the first one on PATH. */
char *sbx_mounts_find_gitlab_runner(const char *configured);

#endif /* SBX_LOCAL_MOUNTS_H */
