/* SPDX-License-Identifier: MIT */
/*
 * Rejections that another attempt of the same job would meet again. A warm pool's policies are
 * checked on the claimed pod, so each attempt costs the pool a sandbox, and GitLab Runner
 * retries a failed prepare up to three times. When a namespace policy rejects the pod, the
 * rejection is kept in the state directory (agent-sandbox/rejections/<pool>.<job>) for
 * REJECTION_TTL_S, and the next attempts of that job fail at once with the same message,
 * without claiming. A new job checks again.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent_sandbox.h"
#include "cleanup.h"
#include "error.h"
#include "log.h"
#include "util.h"

#define REJECTION_TTL_S 600
#define REJECTION_MAX_BYTES 4096

/* Job ids are GitLab's numbers; anything else is not used in a file name. */
static int valid_job(const char *job)
{
	if (job == NULL || job[0] == '\0' || strlen(job) > 32)
		return 0;
	for (const char *p = job; *p != '\0'; p++)
		if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z') || *p == '-'))
			return 0;
	return 1;
}

static char *rejection_dir(struct sbx_executor *executor)
{
	char *path = NULL;

	if (asprintf(&path, "%s/agent-sandbox/rejections", executor->journal.state_dir) < 0)
		return NULL;
	return path;
}

static char *rejection_path(struct sbx_executor *executor, const char *pool, const char *job)
{
	_cleanup_free_ char *dir = rejection_dir(executor);
	char *path = NULL;

	if (dir == NULL || asprintf(&path, "%s/%s.%s", dir, pool, job) < 0)
		return NULL;
	return path;
}

int as_rejection_check(struct sbx_executor *executor, const char *pool, const char *job,
		     struct sbx_error *error)
{
	_cleanup_free_ char *path = NULL, *data = NULL;
	struct sbx_error read_error;
	size_t length = 0;
	int64_t when, age;
	char *message;

	if (!valid_job(job))
		return 0;
	path = rejection_path(executor, pool, job);
	sbx_error_clear(&read_error);
	if (path == NULL || sbx_read_file(path, REJECTION_MAX_BYTES, &data, &length, &read_error) < 0)
		return 0;
	when = strtoll(data, &message, 10);
	age = sbx_now() - when;
	if (*message != '\n' || age < 0 || age >= REJECTION_TTL_S)
		return 0;
	return sbx_error_set(error, SBX_ERROR_SYSTEM,
			     "an earlier attempt of job %s was rejected %" PRId64 " s ago, so no "
			     "sandbox of warm pool %s is claimed again for this job: %s",
			     job, age, pool, message + 1);
}

/* Removes rejections older than REJECTION_TTL_S, so the directory does not grow. */
static void prune(const char *dir)
{
	_cleanup_closedir_ DIR *stream = opendir(dir);
	struct dirent *entry;
	int64_t now = sbx_now();

	if (stream == NULL)
		return;
	while ((entry = readdir(stream)) != NULL) {
		struct stat st;

		if (entry->d_name[0] == '.')
			continue;
		if (fstatat(dirfd(stream), entry->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
		    now - st.st_mtime >= REJECTION_TTL_S)
			unlinkat(dirfd(stream), entry->d_name, 0);
	}
}

void as_rejection_remember(struct sbx_executor *executor, const char *pool, const char *job,
			 const char *message)
{
	_cleanup_free_ char *dir = rejection_dir(executor), *path = NULL, *data = NULL;
	struct sbx_error error;
	int length;

	if (!valid_job(job) || dir == NULL)
		return;
	if (sbx_mkdir_p(dir, 0700) < 0) {
		sbx_debug("cannot create %s: %s", dir, strerror(errno));
		return;
	}
	prune(dir);
	path = rejection_path(executor, pool, job);
	length = asprintf(&data, "%" PRId64 "\n%s", sbx_now(), message);
	if (path == NULL || length < 0)
		return;
	sbx_error_clear(&error);
	/* Only an optimisation: without the file, the next attempt claims and checks again. */
	if (sbx_write_file_atomic(path, data, (size_t) length, 0600, 0, &error) < 0)
		sbx_debug("cannot keep the rejection of job %s: %s", job, error.message);
}
