/* SPDX-License-Identifier: MIT */
/* Building the mount plan in the prepare process; applying it is in mounts_apply.c. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "config.h"
#include "error.h"
#include "mounts.h"
#include "util.h"

const char *const sbx_mounts_etc_names[SBX_MOUNTS_ETC_FILES] = {
	"passwd", "group", "hosts", "hostname", "resolv.conf",
};

const char *const sbx_mounts_builtin_masks[] = {
	"/root", "/home", "/run", "/var/run", "/mnt", "/media", "/var/tmp", "/etc/gitlab-runner",
	/* A writable cgroup file system would let a job leave its limits. */
	"/sys/fs/cgroup", NULL,
};

/* Top-level names the init mounts itself instead of binding them from the root. */
static const char *const own_entries[] = { "proc", "sys", "dev", "tmp", "builds", "cache",
					   ".sbx", NULL };

static int in_list(const char *const *list, const char *name)
{
	for (size_t i = 0; list[i] != NULL; i++)
		if (strcmp(list[i], name) == 0)
			return 1;
	return 0;
}

int sbx_mounts_select_rootfs(const struct sbx_config *config, const char *image,
			     const char **rootfs, int *ignored, struct sbx_error *error)
{
	const struct sbx_local_config *local = &config->local;
	const struct sbx_image_map_entry *entry;

	*ignored = 0;
	if (image == NULL || image[0] == '\0') {
		*rootfs = local->rootfs;
		return 0;
	}
	entry = sbx_config_find_image(config, image);
	if (entry != NULL) {
		*rootfs = entry->rootfs;
		return 0;
	}
	if (local->unmapped_image == SBX_UNMAPPED_IMAGE_REJECT)
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "job image \"%s\" has no entry in local.images; add one that "
				     "maps it to a root file system directory, remove the image from "
				     "the job, or set local.unmapped_image: ignore",
				     image);
	*rootfs = local->rootfs;
	*ignored = 1;
	return 0;
}

static int add_mask(struct sbx_mounts_plan *plan, const char *path, struct sbx_error *error)
{
	char normalised[PATH_MAX];
	size_t length;
	char **grown;

	if (path == NULL || path[0] == '\0')
		return 0;
	if (path[0] != '/' || strstr(path, "/../") != NULL || strcmp(path, "/") == 0)
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "masked path \"%s\" is invalid; use an absolute path other "
				     "than / without \"..\"",
				     path);
	length = strlen(path);
	if (length >= sizeof(normalised))
		return sbx_error_set(error, SBX_ERROR_INVALID, "masked path \"%.64s...\" is too long",
				     path);
	memcpy(normalised, path, length + 1);
	while (length > 1 && normalised[length - 1] == '/')
		normalised[--length] = '\0';
	for (size_t i = 0; i < plan->mask_count; i++)
		if (strcmp(plan->masks[i], normalised) == 0)
			return 0;

	grown = realloc(plan->masks, (plan->mask_count + 1) * sizeof(*grown));
	if (grown == NULL)
		return sbx_error_errno(error, ENOMEM, "cannot plan the mounts");
	plan->masks = grown;
	plan->masks[plan->mask_count] = strdup(normalised);
	if (plan->masks[plan->mask_count] == NULL)
		return sbx_error_errno(error, ENOMEM, "cannot plan the mounts");
	plan->mask_count++;
	return 0;
}

/* True when /NAME is masked as a whole, so its content need not be bound at all. */
static int is_masked_top_level(const struct sbx_mounts_plan *plan, const char *name)
{
	for (size_t i = 0; i < plan->mask_count; i++)
		if (plan->masks[i][0] == '/' && strcmp(plan->masks[i] + 1, name) == 0)
			return 1;
	return 0;
}

static int add_entry(struct sbx_mounts_plan *plan, int dir_fd, const char *name,
		     struct sbx_error *error)
{
	struct sbx_mounts_entry entry = { 0 };
	struct sbx_mounts_entry *grown;
	struct stat st;

	if (fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? 0 : sbx_error_errno(error, errno, "cannot inspect %s/%s",
							     plan->root_path, name);
	if (S_ISLNK(st.st_mode)) {
		char target[PATH_MAX];
		ssize_t n = readlinkat(dir_fd, name, target, sizeof(target) - 1);

		if (n < 0)
			return sbx_error_errno(error, errno, "cannot read link %s/%s",
					       plan->root_path, name);
		target[n] = '\0';
		entry.kind = SBX_MOUNTS_SYMLINK;
		entry.link_target = strdup(target);
		if (entry.link_target == NULL)
			return sbx_error_errno(error, ENOMEM, "cannot plan the mounts");
	} else if (S_ISDIR(st.st_mode)) {
		entry.kind = is_masked_top_level(plan, name) ? SBX_MOUNTS_EMPTY_DIR
							     : SBX_MOUNTS_BIND_DIR;
	} else if (S_ISREG(st.st_mode)) {
		entry.kind = SBX_MOUNTS_BIND_FILE;
	} else {
		/* Sockets, devices and fifos at the top level are not worth exposing. */
		return 0;
	}
	entry.name = strdup(name);
	grown = realloc(plan->entries, (plan->entry_count + 1) * sizeof(*grown));
	if (entry.name == NULL || grown == NULL) {
		free(entry.name);
		free(entry.link_target);
		if (grown != NULL)
			plan->entries = grown;
		return sbx_error_errno(error, ENOMEM, "cannot plan the mounts");
	}
	plan->entries = grown;
	plan->entries[plan->entry_count++] = entry;
	return 0;
}

static int compare_entries(const void *a, const void *b)
{
	const struct sbx_mounts_entry *x = a, *y = b;

	return strcmp(x->name, y->name);
}

int sbx_mounts_plan_build(const struct sbx_config *config, const struct sbx_mounts_sources *sources,
			  const char *state_dir, const char *cache_base, const char *extra_mask,
			  struct sbx_mounts_plan *plan, struct sbx_error *error)
{
	struct sbx_mounts_plan built;
	_cleanup_closedir_ DIR *dir = NULL;
	struct dirent *dirent;

	memset(&built, 0, sizeof(built));
	built.root_fd = built.builds_fd = built.cache_fd = built.runner_fd = -1;
	for (size_t i = 0; i < SBX_MOUNTS_ETC_FILES; i++)
		built.etc_fds[i] = -1;
	built.tmp_size = config->local.tmp_size;
	built.job_uid = config->local.job_uid;
	built.job_gid = config->local.job_gid;
	built.root_path = strdup(sources->root_path != NULL ? sources->root_path : "/");
	built.builds_dir = sbx_strdup_or_null(sources->builds_dir);
	built.cache_dir = sbx_strdup_or_null(sources->cache_dir);
	built.etc_dir = sbx_strdup_or_null(sources->etc_dir);
	built.runner_path = sbx_strdup_or_null(sources->runner_path);
	if (built.root_path == NULL || built.builds_dir == NULL || built.cache_dir == NULL ||
	    built.etc_dir == NULL || (sources->runner_path != NULL && built.runner_path == NULL)) {
		sbx_error_errno(error, ENOMEM, "cannot plan the mounts");
		goto fail;
	}
	if (built.root_path[0] != '/') {
		sbx_error_set(error, SBX_ERROR_INVALID,
			      "root file system \"%s\" is not an absolute path; fix local.rootfs "
			      "or local.images",
			      built.root_path);
		goto fail;
	}

	for (size_t i = 0; sbx_mounts_builtin_masks[i] != NULL; i++)
		if (add_mask(&built, sbx_mounts_builtin_masks[i], error) < 0)
			goto fail;
	for (size_t i = 0; i < config->local.masked_paths.count; i++)
		if (add_mask(&built, config->local.masked_paths.items[i], error) < 0)
			goto fail;
	/* The state directory contains every job's files, the cache base every project's cache. */
	if (add_mask(&built, state_dir, error) < 0 || add_mask(&built, cache_base, error) < 0)
		goto fail;
	if (extra_mask != NULL && strcmp(extra_mask, "/") != 0 && strcmp(extra_mask, "/tmp") != 0 &&
	    add_mask(&built, extra_mask, error) < 0)
		goto fail;

	dir = opendir(built.root_path);
	if (dir == NULL) {
		sbx_error_errno(error, errno,
				"cannot read root file system %s; check local.rootfs and "
				"local.images",
				built.root_path);
		goto fail;
	}
	while ((dirent = readdir(dir)) != NULL) {
		if (strcmp(dirent->d_name, ".") == 0 || strcmp(dirent->d_name, "..") == 0 ||
		    in_list(own_entries, dirent->d_name))
			continue;
		if (add_entry(&built, dirfd(dir), dirent->d_name, error) < 0)
			goto fail;
	}
	/* A stable order keeps the logs and the tests comparable between hosts. */
	if (built.entry_count > 1)
		qsort(built.entries, built.entry_count, sizeof(*built.entries), compare_entries);
	*plan = built;
	return 0;

fail:
	sbx_mounts_plan_free(&built);
	return -1;
}

static int open_path(const char *path, int flags, int *fd, struct sbx_error *error)
{
	int opened = open(path, O_PATH | O_CLOEXEC | flags);

	if (opened < 0)
		return sbx_error_errno(error, errno, "cannot open %s", path);
	*fd = opened;
	return 0;
}

int sbx_mounts_plan_open(struct sbx_mounts_plan *plan, struct sbx_error *error)
{
	char path[PATH_MAX];

	if (open_path(plan->root_path, O_DIRECTORY, &plan->root_fd, error) < 0 ||
	    open_path(plan->builds_dir, O_DIRECTORY | O_NOFOLLOW, &plan->builds_fd, error) < 0 ||
	    open_path(plan->cache_dir, O_DIRECTORY | O_NOFOLLOW, &plan->cache_fd, error) < 0)
		return -1;
	for (size_t i = 0; i < SBX_MOUNTS_ETC_FILES; i++) {
		snprintf(path, sizeof(path), "%s/%s", plan->etc_dir, sbx_mounts_etc_names[i]);
		if (open_path(path, O_NOFOLLOW, &plan->etc_fds[i], error) < 0)
			return -1;
	}
	if (plan->runner_path != NULL &&
	    open_path(plan->runner_path, 0, &plan->runner_fd, error) < 0)
		return -1;
	return 0;
}

void sbx_mounts_plan_free(struct sbx_mounts_plan *plan)
{
	int *fds[] = { &plan->root_fd, &plan->builds_fd, &plan->cache_fd, &plan->runner_fd };

	for (size_t i = 0; i < plan->entry_count; i++) {
		free(plan->entries[i].name);
		free(plan->entries[i].link_target);
	}
	free(plan->entries);
	for (size_t i = 0; i < plan->mask_count; i++)
		free(plan->masks[i]);
	free(plan->masks);
	free(plan->root_path);
	free(plan->builds_dir);
	free(plan->cache_dir);
	free(plan->etc_dir);
	free(plan->runner_path);
	for (size_t i = 0; i < SBX_ARRAY_SIZE(fds); i++)
		sbx_closep(fds[i]);
	for (size_t i = 0; i < SBX_MOUNTS_ETC_FILES; i++)
		sbx_closep(&plan->etc_fds[i]);
	memset(plan, 0, sizeof(*plan));
	plan->root_fd = plan->builds_fd = plan->cache_fd = plan->runner_fd = -1;
	for (size_t i = 0; i < SBX_MOUNTS_ETC_FILES; i++)
		plan->etc_fds[i] = -1;
}

static int write_etc_file(const char *etc_dir, const char *name, const char *content,
			  struct sbx_error *error)
{
	char path[PATH_MAX];

	if ((size_t) snprintf(path, sizeof(path), "%s/%s", etc_dir, name) >= sizeof(path))
		return sbx_error_set(error, SBX_ERROR_INVALID, "path %s/%s is too long", etc_dir,
				     name);
	/* 0644: the job reads these files through a bind mount as its own uid. No fsync: they
	 * serve one job, and after a power loss there is no job left to read them. */
	return sbx_write_file_atomic(path, content, strlen(content), 0644, 0, error);
}

int sbx_mounts_write_etc(const char *etc_dir, const char *hostname, uid_t job_uid,
			 gid_t job_gid, struct sbx_error *error)
{
	char passwd[512], group[256], hosts[512], hostname_line[128];
	const char *resolv;

	if (mkdir(etc_dir, 0755) < 0 && errno != EEXIST)
		return sbx_error_errno(error, errno, "cannot create %s", etc_dir);
	/* HOME is the private /tmp/home; "ci" is the job user's name in the sandbox. */
	snprintf(passwd, sizeof(passwd),
		 "root:x:0:0:root:/root:/bin/sh\n"
		 "ci:x:%u:%u:CI job:/tmp/home:/bin/sh\n"
		 "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
		 (unsigned) job_uid, (unsigned) job_gid);
	snprintf(group, sizeof(group), "root:x:0:\nci:x:%u:\nnogroup:x:65534:\n",
		 (unsigned) job_gid);
	/* Tools that look up the host name must find it without DNS, which the sandbox lacks. */
	snprintf(hosts, sizeof(hosts),
		 "127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\tlocalhost ip6-localhost "
		 "ip6-loopback\n",
		 hostname);
	snprintf(hostname_line, sizeof(hostname_line), "%s\n", hostname);
	/* A resolver on a closed loopback port makes lookups fail at once instead of timing out;
	 * the egress proxy resolves names on the host. */
	resolv = "nameserver 127.0.0.1\noptions attempts:1 timeout:1\n";

	if (write_etc_file(etc_dir, "passwd", passwd, error) < 0 ||
	    write_etc_file(etc_dir, "group", group, error) < 0 ||
	    write_etc_file(etc_dir, "hosts", hosts, error) < 0 ||
	    write_etc_file(etc_dir, "hostname", hostname_line, error) < 0 ||
	    write_etc_file(etc_dir, "resolv.conf", resolv, error) < 0)
		return -1;
	return 0;
}

char *sbx_mounts_find_gitlab_runner(const char *configured)
{
	const char *path_env = getenv("PATH");
	_cleanup_free_ char *copy = NULL;
	char candidate[PATH_MAX];
	char *save = NULL;

	if (configured != NULL)
		return strdup(configured);
	if (path_env == NULL)
		path_env = "/usr/local/bin:/usr/bin:/bin";
	copy = strdup(path_env);
	if (copy == NULL)
		return NULL;
	for (char *dir = strtok_r(copy, ":", &save); dir != NULL; dir = strtok_r(NULL, ":", &save)) {
		struct stat st;

		if (dir[0] != '/')
			continue;
		snprintf(candidate, sizeof(candidate), "%s/gitlab-runner", dir);
		if (stat(candidate, &st) == 0 && S_ISREG(st.st_mode) && access(candidate, X_OK) == 0)
			return strdup(candidate);
	}
	return NULL;
}
