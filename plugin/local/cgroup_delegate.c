/* SPDX-License-Identifier: MIT */
/*
 * Finding the cgroup an unprivileged runner may create job cgroups in.
 *
 * A user other than root may create cgroups only in a directory it owns, and on cgroup2 it may
 * move a process only when it can also write cgroup.procs of the common ancestor of the
 * process's old and new cgroup. Both hold below a delegated subtree that contains the runner:
 * systemd's Delegate=yes (user@.service, or a service with User=) hands one to the unit's user,
 * and an administrator can do the same with chown -R. So the parent of the job cgroups is the
 * highest cgroup on the path from the hierarchy's root to the caller's own cgroup that belongs,
 * together with every cgroup below it on that path, to the caller's effective uid.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cgroup_internal.h"
#include "cleanup.h"
#include "error.h"
#include "util.h"

/* True when WORD is one of the comma-separated names in LIST (e.g. "cpu,cpuacct"). */
static int name_listed(const char *list, size_t length, const char *word)
{
	size_t word_length = strlen(word);
	const char *end = list + length;

	for (const char *p = list; p < end;) {
		const char *comma = memchr(p, ',', (size_t) (end - p));
		size_t item = comma != NULL ? (size_t) (comma - p) : (size_t) (end - p);

		if (item == word_length && memcmp(p, word, item) == 0)
			return 1;
		p += item + 1;
	}
	return 0;
}

int sbx_cgroup_own_path(const char *proc_cgroup, const char *controller, char *path,
			size_t size)
{
	for (const char *line = proc_cgroup; line != NULL && *line != '\0';) {
		const char *next = strchr(line, '\n');
		size_t length = next != NULL ? (size_t) (next - line) : strlen(line);
		const char *first = memchr(line, ':', length);
		const char *second =
			first != NULL ? memchr(first + 1, ':', length - (size_t) (first + 1 - line))
				      : NULL;

		if (second != NULL) {
			size_t names_length = (size_t) (second - first - 1);
			size_t path_length = length - (size_t) (second + 1 - line);
			int match = controller == NULL
					    ? first - line == 1 && line[0] == '0' && names_length == 0
					    : name_listed(first + 1, names_length, controller);

			if (match) {
				if (path_length == 0 || second[1] != '/' || path_length >= size) {
					errno = EINVAL;
					return -1;
				}
				memcpy(path, second + 1, path_length);
				path[path_length] = '\0';
				return 0;
			}
		}
		line = next != NULL ? next + 1 : NULL;
	}
	errno = ENOENT;
	return -1;
}

/* True when DIR and its cgroup.procs belong to, and can be written by, the effective uid. */
static int owned_by_caller(const char *dir)
{
	char procs[PATH_MAX];
	struct stat st;

	if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode) || st.st_uid != geteuid())
		return 0;
	if (sbx_cgroup_join_path(procs, sizeof(procs), dir, "cgroup.procs") < 0)
		return 0;
	return faccessat(AT_FDCWD, procs, W_OK, AT_EACCESS) == 0;
}

int sbx_cgroup_delegated_base(const char *mount, const char *controller, const char *fix,
			      char **base, struct sbx_error *error)
{
	_cleanup_free_ char *proc_cgroup = NULL;
	char own[PATH_MAX], dir[PATH_MAX];
	const char *hierarchy = controller != NULL ? controller : "cgroup2";
	size_t mount_length = strlen(mount);

	if (sbx_read_file("/proc/self/cgroup", 1 << 16, &proc_cgroup, NULL, NULL) < 0)
		return sbx_error_errno(error, errno, "cannot read /proc/self/cgroup");
	if (sbx_cgroup_own_path(proc_cgroup, controller, own, sizeof(own)) < 0)
		return sbx_error_set(error, SBX_ERROR_SYSTEM,
				     "cgroup %s: /proc/self/cgroup has no valid line for the %s "
				     "hierarchy, so sbx cannot find its own cgroup there; %s",
				     mount, hierarchy, fix);
	if (snprintf(dir, sizeof(dir), "%s%s", mount, strcmp(own, "/") == 0 ? "" : own) >=
	    (int) sizeof(dir))
		return sbx_error_errno(error, ENAMETOOLONG, "cgroup %s%s", mount, own);

	if (!owned_by_caller(dir))
		return sbx_error_set(error, SBX_ERROR_SYSTEM,
				     "cgroup %s: sbx runs as uid %u, and its own cgroup there is "
				     "not delegated to that uid (not owned by it or cgroup.procs "
				     "not writable); %s",
				     dir, (unsigned) geteuid(), fix);

	/* Climb while the parent is delegated too, but never above the hierarchy's root. */
	for (;;) {
		char *slash = strrchr(dir, '/');

		if (slash == NULL || (size_t) (slash - dir) < mount_length)
			break;
		*slash = '\0';
		if (strlen(dir) < mount_length || !owned_by_caller(dir)) {
			*slash = '/';
			break;
		}
	}
	*base = strdup(dir);
	if (*base == NULL)
		return sbx_error_errno(error, ENOMEM, "cgroup %s", dir);
	return 0;
}
