/* SPDX-License-Identifier: MIT */
/*
 * prepare: the journal entry first, then every object in an order that lets destroy undo a
 * half-done prepare from what the entry records at any point.
 */
#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "allowlist.h"
#include "cleanup.h"
#include "control.h"
#include "error.h"
#include "init.h"
#include "job.h"
#include "log.h"
#include "mounts.h"
#include "process.h"
#include "util.h"

/* Bound on the init's setup; building the file system takes milliseconds. */
#define INIT_READY_TIMEOUT_MS 30000
/* Bound on waiting for another prepare, cleanup or gc of the same id. */
#define LOCK_TIMEOUT_MS 30000
/* Maximum job timeout in seconds, the limit the configuration sets for its seconds keys. */
#define JOB_TIMEOUT_MAX INT32_MAX
/* Directory the init assembles the new root on, inside its own mount namespace only. */
#define STAGING_DIR "/tmp"

struct prepare {
	struct sbx_executor *executor;
	const struct sbx_job_spec *spec;
	struct sbx_journal_entry entry;
	struct sbx_id_map ids;
	struct sbx_cgroup_job cgroup;
	int have_cgroup;
	char *job_dir;
	char *builds_dir;
	char *cache_dir;
	char *etc_dir;
	char *control_path;
	char *runner_path;
	const char *rootfs;
};

static struct json_object *entry_data(struct prepare *prepare)
{
	if (prepare->entry.data == NULL) {
		prepare->entry.data = json_object_new_object();
		if (prepare->entry.data != NULL)
			json_object_object_add(prepare->entry.data, "format",
					       json_object_new_int(SBX_JOB_DATA_FORMAT));
	}
	return prepare->entry.data;
}

/* Adds KEY to the entry's data (taking VALUE) and writes the entry. */
static int record(struct prepare *prepare, const char *key, struct json_object *value,
		  struct sbx_error *error)
{
	struct json_object *data = entry_data(prepare);

	if (data == NULL || (key != NULL && value == NULL)) {
		json_object_put(value);
		return sbx_error_errno(error, ENOMEM, "cannot record sandbox %s", prepare->spec->id);
	}
	if (key != NULL)
		json_object_object_add(data, key, value);
	return sbx_journal_write(&prepare->executor->journal, &prepare->entry, error);
}

static struct json_object *string_or_null(const char *text)
{
	return text != NULL ? json_object_new_string(text) : NULL;
}

/* Longest escaped project path used as a directory name, below NAME_MAX (255). */
#define PATH_KEY_MAX 240

/*
 * Turns a project path into one directory name. Characters outside [A-Za-z0-9.-] become "_xx"
 * (hex), so "a/b-c" and "a-b/c" get different caches and no name can be "." or "..". A leading
 * digit or dot is escaped too, so no name is all digits like a project id. The whole path is
 * escaped, never a prefix, so two paths never share a name; one whose name would be longer than
 * PATH_KEY_MAX is rejected.
 */
static int project_cache_key(const char *project_path, char **key, struct sbx_error *error)
{
	static const char hex[] = "0123456789abcdef";
	char buffer[PATH_KEY_MAX + 1];
	size_t out = 0;

	if (project_path == NULL || project_path[0] == '\0')
		project_path = "";
	for (size_t i = 0; project_path[i] != '\0'; i++) {
		unsigned char c = (unsigned char) project_path[i];
		int plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			    (c >= '0' && c <= '9' && i > 0) || c == '-' || (c == '.' && i > 0);

		if (out + (plain ? 1 : 3) > PATH_KEY_MAX)
			return sbx_error_set(error, SBX_ERROR_INVALID,
					     "project path \"%.80s...\" is too long to name a cache "
					     "directory (more than %d bytes once escaped); pass the "
					     "numeric project id as the owner's project",
					     project_path, PATH_KEY_MAX);
		if (plain) {
			buffer[out++] = (char) c;
		} else {
			buffer[out++] = '_';
			buffer[out++] = hex[c >> 4];
			buffer[out++] = hex[c & 15];
		}
	}
	buffer[out] = '\0';
	*key = strdup(out > 0 ? buffer : "_none");
	if (*key == NULL)
		return sbx_error_errno(error, ENOMEM, "cannot name the cache of project %.80s",
				       project_path);
	return 0;
}

/* True for a project id as GitLab writes it: 1 to 20 decimal digits without a leading zero. */
static int project_id_valid(const char *id)
{
	size_t length;

	if (id == NULL || id[0] < '1' || id[0] > '9')
		return 0;
	length = strspn(id, "0123456789");
	return id[length] == '\0' && length <= 20;
}

/*
 * Names the cache directory of SPEC's project: the owner's project id where there is one, so
 * two projects never share a cache, else the escaped project path. Ids are all digits and
 * escaped paths never are, so the two kinds cannot collide.
 */
static int cache_key(const struct sbx_job_spec *spec, char **key, struct sbx_error *error)
{
	if (spec->owner != NULL && project_id_valid(spec->owner->project)) {
		*key = strdup(spec->owner->project);
		if (*key == NULL)
			return sbx_error_errno(error, ENOMEM, "cannot name the cache of project %s",
					       spec->owner->project);
		return 0;
	}
	return project_cache_key(spec->project_path, key, error);
}

static int make_owned_dir(const char *path, const struct sbx_id_map *ids,
			  struct sbx_error *error)
{
	if (sbx_mkdir_p(path, 0700) < 0)
		return sbx_error_errno(error, errno, "cannot create %s", path);
	/* In root mode the job's host uid owns its directories. In unprivileged mode the
	 * runner cannot chown to a subordinate id; the init does it inside the namespace. */
	if (ids->mode == SBX_IDS_ROOT && chown(path, ids->host_uid, ids->host_gid) < 0)
		return sbx_error_errno(error, errno, "cannot give %s to uid %u", path,
				       (unsigned) ids->host_uid);
	return 0;
}

static int create_directories(struct prepare *prepare, struct sbx_error *error)
{
	struct sbx_executor *executor = prepare->executor;
	const struct sbx_job_spec *spec = prepare->spec;
	_cleanup_free_ char *key = NULL;

	prepare->job_dir = sbx_journal_job_dir(&executor->journal, spec->id);
	if (prepare->job_dir == NULL)
		return sbx_error_errno(error, errno, "cannot create the job directory of sandbox %s "
				       "under %s/jobs",
				       spec->id, executor->journal.state_dir);
	if (record(prepare, "job_dir", json_object_new_string(prepare->job_dir), error) < 0)
		return -1;

	if (asprintf(&prepare->builds_dir, "%s/builds", prepare->job_dir) < 0 ||
	    asprintf(&prepare->etc_dir, "%s/etc", prepare->job_dir) < 0 ||
	    asprintf(&prepare->control_path, "%s/" SBX_CONTROL_SOCKET_NAME, prepare->job_dir) < 0)
		return sbx_error_errno(error, ENOMEM, "cannot prepare sandbox %s", spec->id);
	if (make_owned_dir(prepare->builds_dir, &prepare->ids, error) < 0)
		return -1;
	if (sbx_mounts_write_etc(prepare->etc_dir, executor->config->local.hostname,
				 prepare->ids.job_uid, prepare->ids.job_gid, error) < 0)
		return -1;

	if (cache_key(spec, &key, error) < 0)
		return -1;
	if (asprintf(&prepare->cache_dir, "%s/%s/%s", executor->cache_base, key,
		     spec->protected_ref ? "protected" : "unprotected") < 0)
		return sbx_error_errno(error, ENOMEM, "cannot prepare sandbox %s", spec->id);
	if (make_owned_dir(prepare->cache_dir, &prepare->ids, error) < 0)
		return -1;

	if (record(prepare, "builds_dir", json_object_new_string(prepare->builds_dir), error) < 0 ||
	    record(prepare, "cache_dir", json_object_new_string(prepare->cache_dir), error) < 0)
		return -1;
	return 0;
}

static int create_cgroup(struct prepare *prepare, struct sbx_error *error)
{
	const struct sbx_local_config *local = &prepare->executor->config->local;
	struct sbx_cgroup_limits limits = {
		.memory_max = local->memory_max,
		.pids_max = local->pids_max,
		.cpu_max_millis = local->cpu_max_millis,
	};
	/* Root puts job cgroups outside the runner's own, so restarting the runner leaves jobs
	 * alone; another user can only use a subtree delegated to it. */
	enum sbx_cgroup_placement placement = prepare->ids.mode == SBX_IDS_ROOT
						      ? SBX_CGROUP_AT_TOP
						      : SBX_CGROUP_DELEGATED;
	struct sbx_error cgroup_error;

	memset(&cgroup_error, 0, sizeof(cgroup_error));
	if (sbx_cgroup_detect() == SBX_CGROUP_NONE)
		sbx_error_set(&cgroup_error, SBX_ERROR_SYSTEM,
			      "no usable cgroup file system under /sys/fs/cgroup; mount cgroup2 "
			      "there (or the v1 memory, pids and cpu controllers), which the local "
			      "backend needs to limit and kill jobs, or set local.require_cgroup: "
			      "false to run jobs without cgroup limits");
	else if (sbx_cgroup_job_create_in(prepare->spec->id, &limits, placement, &prepare->cgroup,
					  &cgroup_error) == 0)
		prepare->have_cgroup = 1;

	if (prepare->have_cgroup)
		return record(prepare, "cgroup", sbx_cgroup_job_to_json(&prepare->cgroup), error);
	if (local->require_cgroup || cgroup_error.error_class != SBX_ERROR_SYSTEM) {
		if (error != NULL)
			*error = cgroup_error;
		return -1;
	}
	/* Each stage then runs in its own pid namespace, whose end kills what the stage left.
	 * The cause is logged without its fix ("what failed; fix"), which would name the
	 * setting that is already in place. */
	sbx_warning("sandbox %s runs without a cgroup, so without memory, process and CPU limits "
		    "(local.require_cgroup is false): %.*s",
		    prepare->spec->id, (int) strcspn(cgroup_error.message, ";"),
		    cgroup_error.message);
	return record(prepare, "stage_pid_namespace", json_object_new_boolean(1), error);
}

/* Called by sbx_init_start() before the init goes on: record it, then put it in its leaf. */
static int on_init_pid(void *userdata, pid_t pid, struct sbx_error *error)
{
	struct prepare *prepare = userdata;
	struct json_object *init;
	uint64_t start_time, pid_namespace;

	if (sbx_process_start_time(pid, &start_time) < 0 ||
	    sbx_process_pid_namespace(pid, &pid_namespace) < 0)
		return sbx_error_errno(error, errno, "cannot identify the job init %d", (int) pid);
	init = json_object_new_object();
	if (init == NULL)
		return sbx_error_errno(error, ENOMEM, "cannot record the job init");
	json_object_object_add(init, "pid", json_object_new_int64(pid));
	json_object_object_add(init, "start_time", json_object_new_int64((int64_t) start_time));
	json_object_object_add(init, "pid_namespace",
			       json_object_new_int64((int64_t) pid_namespace));
	if (record(prepare, "init", init, error) < 0)
		return -1;
	if (!prepare->have_cgroup)
		return 0;
	return sbx_cgroup_job_enter(&prepare->cgroup, "init", pid, error);
}

static int start_init(struct prepare *prepare, pid_t *pid, struct sbx_error *error)
{
	struct sbx_executor *executor = prepare->executor;
	struct sbx_config *config = executor->config;
	struct sbx_mounts_sources sources = {
		.root_path = prepare->rootfs,
		.builds_dir = prepare->builds_dir,
		.cache_dir = prepare->cache_dir,
		.etc_dir = prepare->etc_dir,
		.runner_path = prepare->runner_path,
	};
	struct sbx_mounts_plan plan;
	struct sbx_init_options options;
	_cleanup_close_ int control_fd = -1;
	const char *tmpdir = getenv("TMPDIR");
	int rc;

	/* The runner's TMPDIR contains the job's secrets (GitLab's response.json). */
	if (sbx_mounts_plan_build(config, &sources, executor->journal.state_dir,
				  executor->cache_base, tmpdir != NULL && tmpdir[0] == '/' ? tmpdir : NULL,
				  &plan, error) < 0)
		return -1;
	control_fd = sbx_control_listen(prepare->control_path, error);
	if (control_fd < 0) {
		sbx_mounts_plan_free(&plan);
		return -1;
	}

	memset(&options, 0, sizeof(options));
	options.mounts = &plan;
	options.ids = &prepare->ids;
	options.hostname = config->local.hostname;
	options.proxy_port = config->network.proxy_port;
	options.control_fd = control_fd;
	options.deadline = prepare->entry.deadline;
	options.staging = STAGING_DIR;
	rc = sbx_init_start(&options, on_init_pid, prepare, INIT_READY_TIMEOUT_MS, pid, error);
	sbx_mounts_plan_free(&plan);
	return rc;
}

static int check_spec(struct sbx_executor *executor, const struct sbx_job_spec *spec,
		      struct sbx_error *error)
{
	if (spec == NULL || spec->struct_size < offsetof(struct sbx_job_spec, id) + sizeof(char *))
		return sbx_error_set(error, SBX_ERROR_INVALID, "prepare: the job spec is missing");
	if (!sbx_id_valid(spec->id))
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "sandbox id \"%.80s\" is invalid; ids are 1-%d characters of "
				     "[a-z0-9-]",
				     spec->id != NULL ? spec->id : "(null)", SBX_ID_MAX);
	if (SBX_HAS_FIELD(spec, struct sbx_job_spec, extra_allow) && spec->extra_allow != NULL) {
		for (size_t i = 0; spec->extra_allow[i] != NULL; i++) {
			struct sbx_allowlist list = { 0 };
			int rc = sbx_allowlist_add(&list, spec->extra_allow[i], error);

			sbx_allowlist_free(&list);
			if (rc < 0)
				return -1;
		}
	}
	(void) executor;
	return 0;
}

static void fill_entry(struct prepare *prepare)
{
	const struct sbx_job_spec *spec = prepare->spec;
	const struct sbx_config *config = prepare->executor->config;
	int64_t timeout = config->default_job_timeout;
	const struct sbx_owner *owner = spec->owner;

	if (SBX_HAS_FIELD(spec, struct sbx_job_spec, timeout_seconds) && spec->timeout_seconds > 0)
		timeout = spec->timeout_seconds;
	/* The configuration's own limit for seconds: created + timeout + margin must not
	 * overflow, or the deadline would lie in the past. */
	if (timeout > JOB_TIMEOUT_MAX) {
		sbx_warning("sandbox %s: job timeout %" PRId64 " s is longer than %d s; using %d s",
			    spec->id, timeout, JOB_TIMEOUT_MAX, JOB_TIMEOUT_MAX);
		timeout = JOB_TIMEOUT_MAX;
	}
	snprintf(prepare->entry.id, sizeof(prepare->entry.id), "%s", spec->id);
	prepare->entry.version = SBX_JOURNAL_VERSION;
	prepare->entry.backend = strdup(SBX_LOCAL_BACKEND_NAME);
	prepare->entry.state = SBX_SANDBOX_PREPARING;
	prepare->entry.created = sbx_now();
	prepare->entry.deadline = prepare->entry.created + timeout + config->deadline_margin;
	if (owner != NULL) {
		prepare->entry.owner_runner = sbx_strdup_or_null(owner->runner);
		prepare->entry.owner_project = sbx_strdup_or_null(owner->project);
		prepare->entry.owner_pipeline = sbx_strdup_or_null(owner->pipeline);
		prepare->entry.owner_job = sbx_strdup_or_null(owner->job);
	}
}

static int record_job_settings(struct prepare *prepare, struct sbx_error *error)
{
	const struct sbx_job_spec *spec = prepare->spec;
	struct json_object *extra = json_object_new_array();

	if (extra == NULL)
		return sbx_error_errno(error, ENOMEM, "cannot record sandbox %s", spec->id);
	if (SBX_HAS_FIELD(spec, struct sbx_job_spec, extra_allow) && spec->extra_allow != NULL)
		for (size_t i = 0; spec->extra_allow[i] != NULL; i++)
			json_object_array_add(extra, json_object_new_string(spec->extra_allow[i]));
	json_object_object_add(entry_data(prepare), "extra_allow", extra);
	if (SBX_HAS_FIELD(spec, struct sbx_job_spec, ci_server_url) && spec->ci_server_url != NULL)
		json_object_object_add(entry_data(prepare), "ci_server_url",
				       string_or_null(spec->ci_server_url));
	json_object_object_add(entry_data(prepare), "rootfs",
			       json_object_new_string(prepare->rootfs != NULL ? prepare->rootfs : "/"));
	json_object_object_add(entry_data(prepare), "proxy_port",
			       json_object_new_int(prepare->executor->config->network.proxy_port));
	return record(prepare, "ids", sbx_ids_to_json(&prepare->ids), error);
}

static int select_root_and_runner(struct prepare *prepare, struct sbx_error *error)
{
	const struct sbx_config *config = prepare->executor->config;
	const char *image = SBX_HAS_FIELD(prepare->spec, struct sbx_job_spec, image)
				    ? prepare->spec->image
				    : NULL;
	int ignored = 0;

	if (sbx_mounts_select_rootfs(config, image, &prepare->rootfs, &ignored, error) < 0)
		return -1;
	if (ignored)
		sbx_info("job image \"%s\" has no entry in local.images and is ignored: the job runs "
			 "on %s, read-only",
			 image, prepare->rootfs != NULL ? prepare->rootfs : "the host's root file system");
	prepare->runner_path = sbx_mounts_find_gitlab_runner(config->local.gitlab_runner_path);
	if (config->local.gitlab_runner_path != NULL &&
	    (prepare->runner_path == NULL || access(prepare->runner_path, X_OK) < 0))
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "local.gitlab_runner_path %s is not an executable file; fix the "
				     "path or remove the key to search PATH",
				     config->local.gitlab_runner_path);
	return 0;
}

static void prepare_clear(struct prepare *prepare)
{
	sbx_journal_entry_clear(&prepare->entry);
	if (prepare->have_cgroup)
		sbx_cgroup_job_clear(&prepare->cgroup);
	free(prepare->job_dir);
	free(prepare->builds_dir);
	free(prepare->cache_dir);
	free(prepare->etc_dir);
	free(prepare->control_path);
	free(prepare->runner_path);
}

int sbx_prepare(struct sbx_executor *executor, const struct sbx_job_spec *spec,
		struct sbx_error *error)
{
	struct prepare prepare;
	struct sbx_ids_host host;
	struct sbx_journal_entry existing;
	int64_t started = sbx_monotonic_ms();
	pid_t init_pid = 0;
	int lock_fd;

	if (check_spec(executor, spec, error) < 0)
		return -1;
	memset(&prepare, 0, sizeof(prepare));
	prepare.executor = executor;
	prepare.spec = spec;
	sbx_journal_entry_init(&prepare.entry);

	sbx_ids_host_detect(&host);
	if (sbx_ids_plan(executor->config, &host, &prepare.ids, error) < 0 ||
	    select_root_and_runner(&prepare, error) < 0) {
		prepare_clear(&prepare);
		return -1;
	}

	lock_fd = sbx_journal_lock(&executor->journal, spec->id, LOCK_TIMEOUT_MS, error);
	if (lock_fd < 0) {
		prepare_clear(&prepare);
		return -1;
	}
	sbx_journal_entry_init(&existing);
	if (sbx_journal_read(&executor->journal, spec->id, &existing, NULL) == 0) {
		sbx_journal_entry_clear(&existing);
		sbx_journal_unlock(lock_fd);
		prepare_clear(&prepare);
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "sandbox %s exists already; every prepare needs a new id", spec->id);
	}

	fill_entry(&prepare);
	/* The cgroup before the directories: a host without a usable cgroup fails the job
	 * before it has created the job's cache directory. */
	if (prepare.entry.backend == NULL || record_job_settings(&prepare, error) < 0 ||
	    create_cgroup(&prepare, error) < 0 || create_directories(&prepare, error) < 0 ||
	    start_init(&prepare, &init_pid, error) < 0)
		goto fail;

	prepare.entry.state = SBX_SANDBOX_READY;
	if (record(&prepare, NULL, NULL, error) < 0)
		goto fail;
	/* Debug only: stderr of prepare goes to the job log, which project members can read,
	 * and host paths, ids and pids are for the runner's administrator. */
	sbx_debug("sandbox %s ready in %" PRId64 " ms: %s mode, job uid %u (host uid %u), init pid "
		  "%d, root %s, builds %s, cache %s, cgroup %s, proxy 127.0.0.1:%u",
		  spec->id, sbx_monotonic_ms() - started, sbx_ids_mode_name(prepare.ids.mode),
		  (unsigned) prepare.ids.job_uid, (unsigned) prepare.ids.host_uid, (int) init_pid,
		  prepare.rootfs != NULL ? prepare.rootfs : "/", prepare.builds_dir,
		  prepare.cache_dir, prepare.cgroup.path_count > 0 ? prepare.cgroup.paths[0] : "none",
		  (unsigned) executor->config->network.proxy_port);
	sbx_journal_unlock(lock_fd);
	prepare_clear(&prepare);
	return 0;

fail:
	/* Undo what the entry records; if that fails too, the entry (and its lock file) stays
	 * for cleanup or gc. */
	{
		struct sbx_error undo_error;

		memset(&undo_error, 0, sizeof(undo_error));
		if (sbx_job_teardown(executor, &prepare.entry, &undo_error) == 0 &&
		    sbx_journal_remove(&executor->journal, spec->id, &undo_error) == 0) {
			sbx_debug("sandbox %s: undid the failed prepare", spec->id);
			sbx_journal_unlock_remove(&executor->journal, spec->id, lock_fd);
			lock_fd = -1;
		} else {
			sbx_error_log("sandbox %s: cannot undo the failed prepare: %s; run cleanup "
				      "or `sbx gc`",
				      spec->id, undo_error.message);
		}
	}
	if (lock_fd >= 0)
		sbx_journal_unlock(lock_fd);
	prepare_clear(&prepare);
	return -1;
}
