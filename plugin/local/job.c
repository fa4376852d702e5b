/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cleanup.h"
#include "error.h"
#include "job.h"
#include "log.h"
#include "process.h"
#include "util.h"

/* Bound on waiting for the init and the cgroup to empty during destroy. */
#define TEARDOWN_WAIT_MS 5000

static int copy_string(struct json_object *data, const char *key, char **value)
{
	struct json_object *field;

	if (!json_object_object_get_ex(data, key, &field))
		return 0;
	if (!json_object_is_type(field, json_type_string))
		return -1;
	*value = strdup(json_object_get_string(field));
	return *value == NULL ? -1 : 0;
}

int sbx_job_from_entry(const struct sbx_journal_entry *entry, struct sbx_job *job,
		       struct sbx_error *error)
{
	struct sbx_job parsed;
	struct json_object *data = entry->data, *field, *value;

	memset(&parsed, 0, sizeof(parsed));
	if (data == NULL) {
		*job = parsed;
		return 0;
	}
	if (!json_object_is_type(data, json_type_object))
		goto invalid;
	if (json_object_object_get_ex(data, "format", &field) &&
	    json_object_get_int64(field) > SBX_JOB_DATA_FORMAT)
		sbx_debug("sandbox %s: journal data format %" PRId64 " is newer than %d; reading "
			  "the fields this version knows",
			  entry->id, json_object_get_int64(field), SBX_JOB_DATA_FORMAT);
	if (copy_string(data, "job_dir", &parsed.job_dir) < 0 ||
	    copy_string(data, "builds_dir", &parsed.builds_dir) < 0 ||
	    copy_string(data, "cache_dir", &parsed.cache_dir) < 0 ||
	    copy_string(data, "rootfs", &parsed.rootfs) < 0 ||
	    copy_string(data, "ci_server_url", &parsed.ci_server_url) < 0)
		goto invalid;
	if (json_object_object_get_ex(data, "ids", &field)) {
		if (sbx_ids_from_json(field, &parsed.ids, error) < 0)
			goto fail;
		parsed.have_ids = 1;
	}
	if (json_object_object_get_ex(data, "cgroup", &field)) {
		if (sbx_cgroup_job_from_json(field, &parsed.cgroup, error) < 0)
			goto fail;
		parsed.have_cgroup = 1;
	}
	if (json_object_object_get_ex(data, "stage_pid_namespace", &field)) {
		if (!json_object_is_type(field, json_type_boolean))
			goto invalid;
		parsed.stage_pid_namespace = json_object_get_boolean(field);
	}
	if (json_object_object_get_ex(data, "init", &field)) {
		int64_t pid = 0, start = -1, namespace_inode = 0;

		if (json_object_object_get_ex(field, "pid", &value))
			pid = json_object_get_int64(value);
		if (json_object_object_get_ex(field, "start_time", &value))
			start = json_object_get_int64(value);
		if (json_object_object_get_ex(field, "pid_namespace", &value))
			namespace_inode = json_object_get_int64(value);
		if (pid <= 1 || pid > INT_MAX || start < 0 || namespace_inode < 0)
			goto invalid;
		parsed.init_pid = (pid_t) pid;
		parsed.init_start_time = (uint64_t) start;
		parsed.init_pid_namespace = (uint64_t) namespace_inode;
	}
	if (json_object_object_get_ex(data, "proxy_port", &field)) {
		int64_t port = json_object_get_int64(field);

		if (port < 1 || port > 65535)
			goto invalid;
		parsed.proxy_port = (uint16_t) port;
	}
	if (json_object_object_get_ex(data, "extra_allow", &field)) {
		size_t count;

		if (!json_object_is_type(field, json_type_array))
			goto invalid;
		count = json_object_array_length(field);
		parsed.extra_allow = calloc(count + 1, sizeof(char *));
		if (parsed.extra_allow == NULL)
			goto invalid;
		for (size_t i = 0; i < count; i++) {
			value = json_object_array_get_idx(field, i);
			if (!json_object_is_type(value, json_type_string))
				goto invalid;
			parsed.extra_allow[i] = strdup(json_object_get_string(value));
			if (parsed.extra_allow[i] == NULL)
				goto invalid;
			parsed.extra_allow_count++;
		}
	}
	*job = parsed;
	return 0;

invalid:
	sbx_error_set(error, SBX_ERROR_SYSTEM,
		      "journal entry of sandbox %s has invalid local backend data; destroy it with "
		      "`sbx gc` or remove the sandbox's files by hand",
		      entry->id);
fail:
	sbx_job_clear(&parsed);
	return -1;
}

void sbx_job_clear(struct sbx_job *job)
{
	free(job->job_dir);
	free(job->builds_dir);
	free(job->cache_dir);
	free(job->rootfs);
	free(job->ci_server_url);
	for (size_t i = 0; i < job->extra_allow_count; i++)
		free(job->extra_allow[i]);
	free(job->extra_allow);
	if (job->have_cgroup)
		sbx_cgroup_job_clear(&job->cgroup);
	memset(job, 0, sizeof(*job));
}

int sbx_job_open_init(const struct sbx_job *job)
{
	if (job->init_pid <= 1) {
		errno = ESRCH;
		return -1;
	}
	return sbx_process_open_verified(job->init_pid, job->init_start_time,
					 job->init_pid_namespace);
}

/* The job directory must be the one this sandbox owns: never follow a path elsewhere. */
static int expected_job_dir(struct sbx_executor *executor, const char *id, const char *path)
{
	_cleanup_free_ char *expected = NULL;

	if (asprintf(&expected, "%s/jobs/%s", executor->journal.state_dir, id) < 0)
		return 0;
	return strcmp(expected, path) == 0;
}

int sbx_job_teardown(struct sbx_executor *executor, const struct sbx_journal_entry *entry,
		     struct sbx_error *error)
{
	struct sbx_job job;
	struct sbx_error step_error;
	int failures = 0;

	if (sbx_job_from_entry(entry, &job, error) < 0)
		return -1;

	/* Killing the init makes the kernel kill every process of its pid namespace. */
	if (job.init_pid > 0) {
		int pidfd = sbx_job_open_init(&job);

		if (pidfd >= 0) {
			if (sbx_process_kill_wait(pidfd, TEARDOWN_WAIT_MS) < 0) {
				sbx_error_errno(error, errno, "cannot kill the init (pid %d) of sandbox %s",
						(int) job.init_pid, entry->id);
				failures++;
			} else {
				sbx_debug("sandbox %s: killed init %d", entry->id, (int) job.init_pid);
			}
			close(pidfd);
		}
	}

	/* The cgroup catches whatever may have escaped the pid namespace's teardown. */
	if (job.have_cgroup) {
		memset(&step_error, 0, sizeof(step_error));
		if (sbx_cgroup_job_destroy(&job.cgroup, TEARDOWN_WAIT_MS, &step_error) < 0) {
			if (failures++ == 0 && error != NULL)
				*error = step_error;
			else
				sbx_error_log("sandbox %s: %s", entry->id, step_error.message);
		}
	}

	if (job.job_dir != NULL) {
		if (!expected_job_dir(executor, entry->id, job.job_dir)) {
			sbx_error_log("sandbox %s: journal names job directory %s outside %s/jobs; "
				      "not removing it",
				      entry->id, job.job_dir, executor->journal.state_dir);
		} else {
			memset(&step_error, 0, sizeof(step_error));
			if (sbx_ids_remove_tree(job.have_ids ? &job.ids : NULL, job.job_dir,
						&step_error) < 0) {
				if (failures++ == 0 && error != NULL)
					*error = step_error;
				else
					sbx_error_log("sandbox %s: %s", entry->id, step_error.message);
			}
		}
	}
	sbx_job_clear(&job);
	return failures > 0 ? -1 : 0;
}

int sbx_job_destroy(struct sbx_executor *executor, const char *id, struct sbx_error *error)
{
	struct sbx_journal_entry entry;
	int64_t started = sbx_monotonic_ms();
	int lock_fd, rc;

	if (!sbx_id_valid(id))
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "sandbox id \"%.80s\" is invalid; ids are 1-%d characters of "
				     "[a-z0-9-]",
				     id != NULL ? id : "(null)", SBX_ID_MAX);
	lock_fd = sbx_journal_lock(&executor->journal, id,
				   (int) (executor->config->cleanup_timeout * 1000), error);
	if (lock_fd < 0)
		return -1;

	sbx_journal_entry_init(&entry);
	if (sbx_journal_read(&executor->journal, id, &entry, error) < 0) {
		if (error != NULL && error->error_class == SBX_ERROR_NOT_FOUND) {
			sbx_error_clear(error);
			sbx_debug("sandbox %s: nothing to destroy", id);
			sbx_journal_unlock_remove(&executor->journal, id, lock_fd);
			return 0;
		}
		sbx_journal_unlock(lock_fd);
		return -1;
	}
	if (entry.backend == NULL || strcmp(entry.backend, SBX_LOCAL_BACKEND_NAME) != 0) {
		sbx_error_set(error, SBX_ERROR_INVALID,
			      "sandbox %s belongs to backend \"%s\", not \"local\"; destroy it with "
			      "that backend",
			      id, entry.backend != NULL ? entry.backend : "(none)");
		sbx_journal_entry_clear(&entry);
		sbx_journal_unlock(lock_fd);
		return -1;
	}

	rc = sbx_job_teardown(executor, &entry, error);
	if (rc == 0)
		rc = sbx_journal_remove(&executor->journal, id, error);
	sbx_journal_entry_clear(&entry);
	if (rc < 0) {
		/* The entry stays, so a later cleanup or `sbx gc` can retry. */
		sbx_journal_unlock(lock_fd);
		return -1;
	}
	sbx_journal_unlock_remove(&executor->journal, id, lock_fd);
	sbx_info("sandbox %s destroyed in %" PRId64 " ms", id, sbx_monotonic_ms() - started);
	return 0;
}

struct list_context {
	sbx_list_fn callback;
	void *userdata;
};

static int list_one(void *userdata, const struct sbx_journal_entry *entry)
{
	struct list_context *context = userdata;
	struct sbx_owner owner = {
		.struct_size = sizeof(owner),
		.runner = entry->owner_runner,
		.project = entry->owner_project,
		.pipeline = entry->owner_pipeline,
		.job = entry->owner_job,
	};
	struct sbx_sandbox_info info = {
		.struct_size = sizeof(info),
		.id = entry->id,
		.backend = entry->backend,
		.state = entry->state,
		.created = entry->created,
		.deadline = entry->deadline,
		.owner = &owner,
	};
	struct sbx_job job;

	if (entry->backend == NULL || strcmp(entry->backend, SBX_LOCAL_BACKEND_NAME) != 0)
		return 0;
	if (sbx_job_from_entry(entry, &job, NULL) == 0) {
		/* A ready sandbox whose init is gone (e.g. after a reboot) is dead. */
		if (entry->state == SBX_SANDBOX_READY) {
			int pidfd = sbx_job_open_init(&job);

			if (pidfd < 0)
				info.state = SBX_SANDBOX_DEAD;
			else
				close(pidfd);
		}
		sbx_job_clear(&job);
	} else {
		info.state = SBX_SANDBOX_DEAD;
	}
	return context->callback(context->userdata, &info);
}

int sbx_job_list(struct sbx_executor *executor, sbx_list_fn callback, void *userdata,
		 struct sbx_error *error)
{
	struct list_context context = { .callback = callback, .userdata = userdata };

	return sbx_journal_foreach(&executor->journal, list_one, &context, error);
}
