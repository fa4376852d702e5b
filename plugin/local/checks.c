/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "allowlist.h"
#include "cgroup.h"
#include "checks.h"
#include "cleanup.h"
#include "config.h"
#include "error.h"
#include "ids.h"
#include "mounts.h"
#include "seccomp.h"
#include "util.h"

struct checks {
	sbx_check_fn callback;
	void *userdata;
	int failed;
};

static void report(struct checks *checks, enum sbx_check_status status, const char *name,
		   const char *detail, const char *fix)
{
	if (status == SBX_CHECK_FAILED)
		checks->failed++;
	checks->callback(checks->userdata, status, name, detail, fix);
}

/* Runs FN in a forked child, so nothing it changes (namespaces, filters) reaches the host. */
static int in_child(int (*fn)(void *), void *arg, int *child_errno)
{
	int status;
	pid_t pid = fork();

	if (pid < 0)
		return -1;
	if (pid == 0)
		_exit(fn(arg) == 0 ? 0 : (errno & 0x7f) + 1);
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -1;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	*child_errno = WIFEXITED(status) ? WEXITSTATUS(status) - 1 : EINTR;
	return -1;
}

static int try_user_namespace(void *arg)
{
	(void) arg;
	return unshare(CLONE_NEWUSER);
}

static void check_user_namespaces(struct checks *checks)
{
	char detail[256];
	int child_errno = 0;

	if (in_child(try_user_namespace, NULL, &child_errno) == 0) {
		report(checks, SBX_CHECK_OK, "user namespaces", "a user namespace can be created",
		       NULL);
		return;
	}
	snprintf(detail, sizeof(detail), "cannot create a user namespace: %s",
		 strerror(child_errno));
	report(checks, SBX_CHECK_FAILED, "user namespaces", detail,
	       child_errno == ENOSPC
		       ? "raise the sysctl user.max_user_namespaces (e.g. to 15000)"
		       : "enable user namespaces: sysctl kernel.unprivileged_userns_clone=1 on "
			 "Debian kernels, kernel.apparmor_restrict_unprivileged_userns=0 on Ubuntu, "
			 "or run sbx as root");
}

static void check_id_mapping(struct checks *checks, const struct sbx_executor *executor)
{
	struct sbx_ids_host host;
	struct sbx_id_map map;
	struct sbx_error error;
	char detail[512];

	memset(&error, 0, sizeof(error));
	sbx_ids_host_detect(&host);
	if (sbx_ids_plan(executor->config, &host, &map, &error) < 0) {
		report(checks, SBX_CHECK_FAILED, "uid mapping", error.message,
		       "install the uidmap package and give the runner's user subordinate ids in "
		       "/etc/subuid and /etc/subgid, or run sbx as root");
		return;
	}
	snprintf(detail, sizeof(detail), "%s mode: the job runs as uid %u, host uid %u%s",
		 sbx_ids_mode_name(map.mode), (unsigned) map.job_uid, (unsigned) map.host_uid,
		 map.mode == SBX_IDS_RUNNER ? " (the runner's own uid)" : "");
	report(checks, map.mode == SBX_IDS_RUNNER ? SBX_CHECK_WARNING : SBX_CHECK_OK, "uid mapping",
	       detail,
	       map.mode == SBX_IDS_RUNNER
		       ? "install the uidmap package and add a subordinate id range to /etc/subuid "
			 "and /etc/subgid so jobs get their own uid"
		       : NULL);
}

static void check_cgroups(struct checks *checks, const struct sbx_executor *executor)
{
	const struct sbx_local_config *local = &executor->config->local;
	struct sbx_cgroup_limits limits = {
		.memory_max = local->memory_max,
		.pids_max = local->pids_max,
		.cpu_max_millis = local->cpu_max_millis,
	};
	enum sbx_cgroup_layout layout = sbx_cgroup_detect();
	/* Jobs run without a cgroup then, which is worth a warning but works. */
	enum sbx_check_status missing = local->require_cgroup ? SBX_CHECK_FAILED
							      : SBX_CHECK_WARNING;
	struct sbx_ids_host host;
	struct sbx_id_map map;
	enum sbx_cgroup_placement placement = SBX_CGROUP_AT_TOP;
	struct sbx_cgroup_job job;
	struct sbx_error error;
	char id[32], hex[9], detail[1024];

	if (layout == SBX_CGROUP_NONE) {
		report(checks, missing, "cgroups", "no cgroup file system under /sys/fs/cgroup",
		       "mount cgroup2 on /sys/fs/cgroup (or the v1 memory, pids and cpu "
		       "controllers), or set local.require_cgroup: false to run jobs without "
		       "cgroup limits");
		return;
	}
	/* Where prepare would put it; with no valid id mapping, where its mode would. */
	memset(&error, 0, sizeof(error));
	sbx_ids_host_detect(&host);
	if (sbx_ids_plan(executor->config, &host, &map, &error) == 0 ? map.mode != SBX_IDS_ROOT
								      : host.euid != 0)
		placement = SBX_CGROUP_DELEGATED;
	/* Creating a real job cgroup with the configured limits checks controllers and
	 * delegation in one go. */
	if (sbx_random_hex(hex, 4) < 0)
		snprintf(hex, sizeof(hex), "%08x", (unsigned) getpid());
	snprintf(id, sizeof(id), "doctor-%s", hex);
	memset(&error, 0, sizeof(error));
	if (sbx_cgroup_job_create_in(id, &limits, placement, &job, &error) < 0) {
		report(checks, missing, "cgroups", error.message,
		       local->require_cgroup
			       ? "run sbx as root, or delegate a cgroup subtree that contains the "
				 "runner, with the memory, pids and cpu controllers, to the runner's "
				 "user (systemd: Delegate=yes on its unit), or set "
				 "local.require_cgroup: false to run jobs without cgroup limits"
			       : "jobs run without memory, process and CPU limits, each stage in its "
				 "own pid namespace; delegate a cgroup subtree to the runner's user "
				 "to limit them");
		return;
	}
	snprintf(detail, sizeof(detail), "%s layout; a job cgroup with the configured limits can "
		 "be created (%s)",
		 sbx_cgroup_layout_name(layout), job.path_count > 0 ? job.paths[0] : "-");
	if (sbx_cgroup_job_destroy(&job, 2000, &error) < 0)
		report(checks, SBX_CHECK_WARNING, "cgroups", error.message,
		       "remove the leftover doctor-* cgroups by hand");
	else
		report(checks, SBX_CHECK_OK, "cgroups", detail, NULL);
	sbx_cgroup_job_clear(&job);
}

static int try_seccomp(void *arg)
{
	int rc = sbx_seccomp_filter_apply(arg);

	if (rc < 0) {
		errno = -rc;
		return -1;
	}
	return 0;
}

static void check_seccomp(struct checks *checks)
{
	struct sbx_seccomp_filter *filter = NULL;
	struct sbx_error error;
	char detail[256];
	int child_errno = 0;

	memset(&error, 0, sizeof(error));
	if (sbx_seccomp_filter_new(&filter, &error) < 0) {
		report(checks, SBX_CHECK_FAILED, "seccomp", error.message,
		       "install libseccomp2 and use a kernel built with CONFIG_SECCOMP_FILTER");
		return;
	}
	if (in_child(try_seccomp, filter, &child_errno) < 0) {
		snprintf(detail, sizeof(detail), "cannot load the job's seccomp filter: %s",
			 strerror(child_errno));
		report(checks, SBX_CHECK_FAILED, "seccomp", detail,
		       "use a kernel built with CONFIG_SECCOMP_FILTER");
	} else {
		report(checks, SBX_CHECK_OK, "seccomp", "the job's syscall filter loads", NULL);
	}
	sbx_seccomp_filter_free(filter);
}

static void check_state_dir(struct checks *checks, const struct sbx_executor *executor)
{
	const char *path = executor->journal.state_dir;
	char detail[512];
	struct stat st;

	if (stat(path, &st) < 0 || !S_ISDIR(st.st_mode) || access(path, W_OK | X_OK) < 0) {
		snprintf(detail, sizeof(detail), "state directory %s is not a writable directory",
			 path);
		report(checks, SBX_CHECK_FAILED, "state directory", detail,
		       "create it (mode 0700) for the user that runs sbx, or set state_dir");
		return;
	}
	snprintf(detail, sizeof(detail), "%s (mode %04o)", path, (unsigned) (st.st_mode & 07777));
	if (st.st_mode & 0077)
		report(checks, SBX_CHECK_WARNING, "state directory", detail,
		       "chmod 0700 the state directory: it holds every job's files");
	else
		report(checks, SBX_CHECK_OK, "state directory", detail, NULL);
}

static void check_gitlab_runner(struct checks *checks, const struct sbx_executor *executor)
{
	_cleanup_free_ char *path =
		sbx_mounts_find_gitlab_runner(executor->config->local.gitlab_runner_path);
	char detail[512];

	if (path == NULL || access(path, X_OK) < 0) {
		report(checks, executor->config->local.gitlab_runner_path != NULL
				       ? SBX_CHECK_FAILED
				       : SBX_CHECK_WARNING,
		       "gitlab-runner", "no gitlab-runner binary to expose in /.sbx/bin",
		       "install gitlab-runner or set local.gitlab_runner_path; without it, runner "
		       "stages for artifacts and caches fail inside the sandbox");
		return;
	}
	snprintf(detail, sizeof(detail), "%s, exposed as /.sbx/bin/gitlab-runner", path);
	report(checks, SBX_CHECK_OK, "gitlab-runner", detail, NULL);
}

/* An address range that an allow-list entry should name on purpose, not cover by accident. */
struct sensitive_range {
	int family;
	unsigned char network[16];
	unsigned prefix_length;
	const char *what;
};

static const struct sensitive_range sensitive_ranges[] = {
	{ AF_INET, { 127 }, 8, "all of loopback 127.0.0.0/8" },
	{ AF_INET, { 169, 254 }, 16, "all of link-local 169.254.0.0/16, cloud metadata included" },
	{ AF_INET6, { 0xfe, 0x80 }, 10, "all of link-local fe80::/10" },
};

/* True when the CIDR ENTRY contains every address of RANGE. */
static bool entry_covers(const struct sbx_allow_entry *entry, const struct sensitive_range *range)
{
	unsigned full = entry->prefix_length / 8, rest = entry->prefix_length % 8;

	if (entry->kind != SBX_ALLOW_CIDR || entry->family != range->family ||
	    entry->prefix_length > range->prefix_length)
		return false;
	if (memcmp(entry->address, range->network, full) != 0)
		return false;
	return rest == 0 ||
	       ((entry->address[full] ^ range->network[full]) & (0xff << (8 - rest))) == 0;
}

/*
 * Warns about each entry of KEY's LIST that allows every address (0.0.0.0/0, ::/0) or a whole
 * loopback or link-local range. The proxy admits those ranges only for an IP or CIDR entry, so
 * such an entry opens the runner host's own services or the cloud metadata service to jobs.
 */
static int check_allow_list(struct checks *checks, const char *key,
			    const struct sbx_string_list *list)
{
	int warnings = 0;

	for (size_t i = 0; i < list->count; i++) {
		struct sbx_allow_entry entry = { 0 };
		char detail[512];
		const char *what = NULL;

		if (sbx_allow_entry_parse(list->items[i], &entry, NULL) < 0)
			continue;
		if (entry.kind == SBX_ALLOW_CIDR && entry.prefix_length == 0)
			what = "every address, loopback and link-local included";
		for (size_t r = 0; what == NULL && r < SBX_ARRAY_SIZE(sensitive_ranges); r++)
			if (entry_covers(&entry, &sensitive_ranges[r]))
				what = sensitive_ranges[r].what;
		free(entry.host);
		if (what == NULL)
			continue;
		snprintf(detail, sizeof(detail), "%s entry \"%s\" allows %s", key, list->items[i],
			 what);
		report(checks, SBX_CHECK_WARNING, "allow-lists", detail,
		       "narrow the entry to the addresses jobs need, because with it every job "
		       "reaches services on the runner host or the cloud metadata service");
		warnings++;
	}
	return warnings;
}

static void check_allow_lists(struct checks *checks, const struct sbx_executor *executor)
{
	const struct sbx_network_config *network = &executor->config->network;
	int warnings = check_allow_list(checks, "network.runner_allow", &network->runner_allow) +
		       check_allow_list(checks, "network.user_allow", &network->user_allow);

	if (warnings == 0)
		report(checks, SBX_CHECK_OK, "allow-lists",
		       "no entry allows every address or a whole loopback or link-local range",
		       NULL);
}

int sbx_checks_run(struct sbx_executor *executor, sbx_check_fn callback, void *userdata,
		   struct sbx_error *error)
{
	struct checks checks = { .callback = callback, .userdata = userdata };

	check_user_namespaces(&checks);
	check_id_mapping(&checks, executor);
	check_cgroups(&checks, executor);
	check_seccomp(&checks);
	check_state_dir(&checks, executor);
	check_gitlab_runner(&checks, executor);
	check_allow_lists(&checks, executor);
	if (checks.failed > 0)
		return sbx_error_set(error, SBX_ERROR_SYSTEM,
				     "%d prerequisite%s of the local backend failed", checks.failed,
				     checks.failed == 1 ? "" : "s");
	return 0;
}
