/* SPDX-License-Identifier: MIT */
/*
 * User and group id maps of a job's user namespace.
 *
 * Root mode maps ids 0..65535 onto host ids from local.id_map_base, so the job's files and
 * processes belong to id_map_base + job_uid and never to the runner. Unprivileged mode maps the
 * runner's uid to 0 and its subordinate range (/etc/subuid, /etc/subgid) onto 1..N through the
 * setuid helpers newuidmap and newgidmap. Without them sbx refuses, unless local.allow_runner_uid
 * is set: then only the runner's own id is mapped, onto the job uid.
 */
#ifndef SBX_LOCAL_IDS_H
#define SBX_LOCAL_IDS_H

#include <stdint.h>
#include <sys/types.h>

#include "sbx/executor.h"

struct sbx_config;
struct json_object;

/* Ids 0..65535 inside the namespace: the range every distribution's tools expect. */
#define SBX_IDS_RANGE 65536u
/* Lines per map file; the kernel accepts 340 since Linux 4.15, we never need more than 2. */
#define SBX_IDS_MAX_LINES 2

enum sbx_ids_mode {
	SBX_IDS_ROOT = 0, /* the runner is root and writes the maps itself */
	SBX_IDS_SUBID = 1, /* newuidmap/newgidmap with a subordinate range */
	SBX_IDS_RUNNER = 2, /* only the runner's own id, mapped onto the job uid */
};

struct sbx_id_range {
	uint32_t inside;
	uint32_t outside;
	uint32_t count;
};

struct sbx_id_map {
	enum sbx_ids_mode mode;
	struct sbx_id_range uid[SBX_IDS_MAX_LINES];
	size_t uid_count;
	struct sbx_id_range gid[SBX_IDS_MAX_LINES];
	size_t gid_count;
	/* The job's ids inside the namespace and the host ids they map to. */
	uid_t job_uid;
	gid_t job_gid;
	uid_t host_uid;
	gid_t host_gid;
	/* Helpers for SBX_IDS_SUBID, found at planning time. */
	char newuidmap[256];
	char newgidmap[256];
};

/* Where the planner looks; tests point these at their own files. */
struct sbx_ids_host {
	uid_t euid;
	gid_t egid;
	const char *user_name; /* name of EUID, or NULL */
	const char *subuid_path;
	const char *subgid_path;
	const char *newuidmap_path; /* NULL: not installed */
	const char *newgidmap_path;
};

/* Fills HOST with the calling process's ids and the system's files and helpers. */
void sbx_ids_host_detect(struct sbx_ids_host *host);

/*
 * Decides the maps for a job from the configuration (mode, id_map_base, job_uid, job_gid,
 * allow_runner_uid) and HOST. Fails with SBX_ERROR_INVALID and the fix when no mapping is
 * allowed.
 */
int sbx_ids_plan(const struct sbx_config *config, const struct sbx_ids_host *host,
		 struct sbx_id_map *map, struct sbx_error *error);

/*
 * Looks up USER_NAME (or the decimal ID) in CONTENT, an /etc/subuid-format text, and returns
 * the first range. Returns 0, or -1 when there is none.
 */
int sbx_ids_parse_subid(const char *content, const char *user_name, uint32_t id, uint32_t *start,
			uint32_t *count);

/* Writes RANGES as uid_map text ("inside outside count\n" per line) into BUF. */
int sbx_ids_format(const struct sbx_id_range *ranges, size_t count, char *buf, size_t size);

/*
 * Writes the maps of the process PID. Runs in the forked helper that cloned the job init, so it
 * only uses system calls and the strings MAP already holds. On failure it fills MESSAGE.
 */
int sbx_ids_apply(const struct sbx_id_map *map, pid_t pid, char *message, size_t message_size);

const char *sbx_ids_mode_name(enum sbx_ids_mode mode);

/* Records MAP in, and restores it from, journal data. */
struct json_object *sbx_ids_to_json(const struct sbx_id_map *map);
int sbx_ids_from_json(struct json_object *object, struct sbx_id_map *map,
		      struct sbx_error *error);

/*
 * Removes PATH recursively. In SBX_IDS_SUBID mode the job's files belong to subordinate ids the
 * runner cannot remove, so a helper in a fresh user namespace with the same maps removes them.
 */
int sbx_ids_remove_tree(const struct sbx_id_map *map, const char *path, struct sbx_error *error);

#endif /* SBX_LOCAL_IDS_H */
