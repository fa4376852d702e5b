/* SPDX-License-Identifier: MIT */
/*
 * The GitLab Runner custom executor front-end: `sbx gitlab config|prepare|run|cleanup`.
 *
 * The runner accepts three exit codes: 0, BUILD_FAILURE_EXIT_CODE and SYSTEM_FAILURE_EXIT_CODE.
 * After a build failure it reads the step's status from BUILD_EXIT_CODE_FILE. After a system
 * failure (sbx or the sandbox failed) it retries prepare. Any other code, or death by a signal,
 * is an "unknown Custom executor executable exit code", so every path here ends in one of the
 * three.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "cleanup.h"
#include "error.h"
#include "loader.h"
#include "log.h"
#include "shim.h"
#include "util.h"

/* Largest script `run` accepts. Runner scripts carry every job variable, file variables
 * included, so they reach several MiB in practice. */
#define SCRIPT_MAX_BYTES (64u * 1024 * 1024)

#define SECTION_NAME "prepare_sbx"

struct gitlab_codes {
	int build_failure;
	int system_failure;
};

static const char gitlab_usage[] =
	"Usage: sbx gitlab config|prepare|run|cleanup\n"
	"\n"
	"GitLab Runner custom executor stages; set them in the runner's config.toml:\n"
	"  config_exec = \"sbx\", config_args = [\"gitlab\", \"config\"]\n"
	"  prepare_exec = \"sbx\", prepare_args = [\"gitlab\", \"prepare\"]\n"
	"  run_exec = \"sbx\", run_args = [\"gitlab\", \"run\"]\n"
	"  cleanup_exec = \"sbx\", cleanup_args = [\"gitlab\", \"cleanup\"]\n"
	"\n"
	"  config                 print the executor configuration (JSON) with a new sandbox id\n"
	"  prepare                create the sandbox named by $SBX_SANDBOX_ID\n"
	"  run [ARGS] SCRIPT STAGE\n"
	"                         run the script file SCRIPT in the sandbox; STAGE picks the\n"
	"                         network allow-list (runner stages or user stages)\n"
	"  cleanup                destroy the sandbox, within cleanup_timeout seconds\n"
	"\n"
	"Exit codes: 0, $BUILD_FAILURE_EXIT_CODE (default 1) when the job's step failed, and\n"
	"$SYSTEM_FAILURE_EXIT_CODE (default 2) when sbx or the sandbox failed.\n";

/* Reads an exit code the runner advertises; FALLBACK when unset or not in 1..255. */
static int exit_code_from_env(const char *name, int fallback)
{
	const char *text = getenv(name);
	int64_t value;

	if (text == NULL || sbx_parse_int64(text, &value) < 0 || value < 1 || value > 255)
		return fallback;
	return (int) value;
}

static const char *env_nonempty(const char *name)
{
	const char *value = getenv(name);

	return value != NULL && value[0] != '\0' ? value : NULL;
}

/*
 * The facts of a job that decide what it may touch on the host. They come from the runner's
 * $JOB_RESPONSE_FILE (GitLab's job payload) and never from CUSTOM_ENV_*: a job's `variables:`
 * override predefined variables such as CI_PROJECT_ID and CI_COMMIT_REF_PROTECTED.
 */
struct job_response {
	/* job_info.project_id in decimal, or "" when missing. */
	char project_id[24];
	/* 1 only when git_info.protected is the JSON value true. */
	int protected_ref;
	/* "scheme://host[:port]/" of git_info.repo_url without its credentials, or "". */
	char ci_server_url[320];
	/* runner_info.timeout in seconds, or 0 when missing or not positive. */
	int64_t timeout;
};

/* Maximum job timeout passed on; the configuration limits its seconds keys the same way. */
#define JOB_TIMEOUT_MAX INT32_MAX

/* Largest response file read; it contains every job variable, file variables included. */
#define RESPONSE_MAX_BYTES (64u * 1024 * 1024)

static struct json_object *object_member(struct json_object *object, const char *key)
{
	struct json_object *member = NULL;

	if (object == NULL || !json_object_is_type(object, json_type_object) ||
	    !json_object_object_get_ex(object, key, &member))
		return NULL;
	return member;
}

/*
 * Writes the scheme, host and port of the clone URL REPO_URL ("https://gitlab-ci-token:TOKEN@
 * gitlab.example.com/group/project.git") to OUT as "https://gitlab.example.com/", or "" when
 * REPO_URL is not an http(s) URL with a plain host. The credentials are dropped: they contain
 * the job token, and OUT reaches the journal and error messages.
 */
static void ci_server_from_repo_url(const char *repo_url, char *out, size_t size)
{
	const char *scheme_end = strstr(repo_url, "://");
	const char *authority, *host, *at;
	size_t scheme_length, authority_length, host_length;

	out[0] = '\0';
	if (scheme_end == NULL)
		return;
	scheme_length = (size_t) (scheme_end - repo_url);
	if (!((scheme_length == 5 && strncasecmp(repo_url, "https", 5) == 0) ||
	      (scheme_length == 4 && strncasecmp(repo_url, "http", 4) == 0)))
		return;
	authority = scheme_end + 3;
	authority_length = strcspn(authority, "/?#");
	host = authority;
	while ((at = memchr(host, '@', authority_length - (size_t) (host - authority))) != NULL)
		host = at + 1;
	host_length = authority_length - (size_t) (host - authority);
	if (host_length == 0 ||
	    strspn(host, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:[]") <
		    host_length)
		return;
	if ((size_t) snprintf(out, size, "%.*s://%.*s/", (int) scheme_length, repo_url,
			      (int) host_length, host) >= size)
		out[0] = '\0';
}

/*
 * Reads $JOB_RESPONSE_FILE into RESPONSE. The file also contains the job token and every
 * secret variable, so nothing from it is logged except the fields taken. Fields that are
 * missing or of another type keep their safe defaults: no project id, unprotected.
 */
static int read_job_response(struct job_response *response, struct sbx_error *error)
{
	_cleanup_free_ char *data = NULL;
	struct json_object *root, *job_info, *git_info, *value;
	struct json_tokener *tokener;
	enum json_tokener_error parse_error;
	const char *path = env_nonempty("JOB_RESPONSE_FILE");
	size_t length = 0;

	memset(response, 0, sizeof(*response));
	if (path == NULL)
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "JOB_RESPONSE_FILE is not set; run sbx as GitLab Runner's "
				     "custom executor, which sets it");
	if (sbx_read_file(path, RESPONSE_MAX_BYTES, &data, &length, error) < 0)
		return -1;
	tokener = json_tokener_new();
	if (tokener == NULL)
		return sbx_error_errno(error, ENOMEM, "cannot parse JOB_RESPONSE_FILE %s", path);
	root = json_tokener_parse_ex(tokener, data, (int) length);
	parse_error = json_tokener_get_error(tokener);
	json_tokener_free(tokener);
	if (root == NULL || parse_error != json_tokener_success ||
	    !json_object_is_type(root, json_type_object)) {
		json_object_put(root);
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "JOB_RESPONSE_FILE %s is not a JSON object", path);
	}

	job_info = object_member(root, "job_info");
	git_info = object_member(root, "git_info");
	value = object_member(job_info, "project_id");
	if (value != NULL && json_object_is_type(value, json_type_int) &&
	    json_object_get_int64(value) > 0)
		snprintf(response->project_id, sizeof(response->project_id), "%" PRId64,
			 json_object_get_int64(value));
	value = object_member(git_info, "repo_url");
	if (value != NULL && json_object_is_type(value, json_type_string))
		ci_server_from_repo_url(json_object_get_string(value), response->ci_server_url,
					sizeof(response->ci_server_url));
	value = object_member(object_member(root, "runner_info"), "timeout");
	if (value != NULL && json_object_is_type(value, json_type_int) &&
	    json_object_get_int64(value) > 0)
		response->timeout = json_object_get_int64(value);
	value = object_member(git_info, "protected");
	response->protected_ref = value != NULL && json_object_is_type(value, json_type_boolean) &&
				  json_object_get_boolean(value);
	json_object_put(root);
	return 0;
}

/*
 * Returns the job timeout in seconds for the sandbox's deadline, or 0 for default_job_timeout.
 * runner_info.timeout comes first, because a job's variables can override CI_JOB_TIMEOUT.
 */
static int64_t job_timeout(const struct job_response *response)
{
	const char *text = env_nonempty("CUSTOM_ENV_CI_JOB_TIMEOUT");
	int64_t timeout = response->timeout;

	if (timeout == 0 && text != NULL) {
		if (sbx_parse_int64(text, &timeout) < 0 || timeout <= 0) {
			sbx_warning("CUSTOM_ENV_CI_JOB_TIMEOUT \"%.40s\" is not a positive number of "
				    "seconds; using default_job_timeout",
				    text);
			return 0;
		}
	}
	if (timeout > JOB_TIMEOUT_MAX) {
		sbx_warning("job timeout %" PRId64 " s is longer than %d s; using %d s", timeout,
			    JOB_TIMEOUT_MAX, JOB_TIMEOUT_MAX);
		timeout = JOB_TIMEOUT_MAX;
	}
	return timeout;
}

/* Runner stages get the runner allow-list: they fetch sources, caches and artifacts. */
static enum sbx_network_profile stage_profile(const char *stage)
{
	static const char *const exact[] = {
		"get_sources",	      "clear_worktree",	       "restore_cache",
		"download_artifacts", "cleanup_file_variables",
	};
	static const char *const prefixes[] = { "archive_cache", "upload_artifacts" };

	for (size_t i = 0; i < SBX_ARRAY_SIZE(exact); i++)
		if (strcmp(stage, exact[i]) == 0)
			return SBX_NETWORK_RUNNER;
	for (size_t i = 0; i < SBX_ARRAY_SIZE(prefixes); i++)
		if (strncmp(stage, prefixes[i], strlen(prefixes[i])) == 0)
			return SBX_NETWORK_RUNNER;
	return SBX_NETWORK_USER;
}

/* The id of this attempt's sandbox from job_env; fails with the reason and the fix. */
static int sandbox_id_from_env(const char **id, struct sbx_error *error)
{
	const char *value = getenv("SBX_SANDBOX_ID");

	if (value == NULL || value[0] == '\0')
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "SBX_SANDBOX_ID is not set; run `sbx gitlab config` as the "
				     "runner's config_exec, whose job_env passes it");
	if (!sbx_id_valid(value))
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "SBX_SANDBOX_ID \"%.80s\" is not a sandbox id (1 to %d "
				     "characters of a-z, 0-9 and -); let `sbx gitlab config` set it",
				     value, SBX_ID_MAX);
	*id = value;
	return 0;
}

/* Writes the host name for the runner's "Running on ... via HOST" banner. The runner inserts
 * it unescaped between double quotes in a shell command, so only [A-Za-z0-9._-] are kept. */
static void safe_hostname(char *buf, size_t size)
{
	char raw[256];
	size_t out = 0;

	if (gethostname(raw, sizeof(raw)) < 0)
		raw[0] = '\0';
	raw[sizeof(raw) - 1] = '\0';
	for (const char *p = raw; *p != '\0' && out + 1 < size; p++) {
		char c = *p;

		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		    c == '.' || c == '_' || c == '-')
			buf[out++] = c;
	}
	if (out == 0)
		out = (size_t) snprintf(buf, size, "sbx");
	buf[out] = '\0';
}

/*
 * Warns when SBX_CONFIG or SBX_DEBUG reached sbx only with the runner's CUSTOM_ENV_ prefix:
 * GitLab Runner passes the environment = [...] entries of config.toml, like job variables, to
 * custom executors only as CUSTOM_ENV_<name>, so putting them there silently does nothing.
 */
static void warn_prefixed_settings(const struct sbx_cli *cli)
{
	if (env_nonempty("CUSTOM_ENV_SBX_CONFIG") != NULL && env_nonempty("SBX_CONFIG") == NULL &&
	    cli->config_option == NULL)
		sbx_warning("CUSTOM_ENV_SBX_CONFIG is set but SBX_CONFIG is not, so sbx ignores it "
			    "(the runner passes config.toml's environment only to jobs); add "
			    "\"--config\", \"FILE\" before \"gitlab\" in every *_args instead");
	if (env_nonempty("CUSTOM_ENV_SBX_DEBUG") != NULL && !cli->debug)
		sbx_warning("CUSTOM_ENV_SBX_DEBUG is set but SBX_DEBUG is not, so sbx ignores it "
			    "(the runner passes config.toml's environment only to jobs); add "
			    "\"--debug\" before \"gitlab\" in every *_args, or set SBX_DEBUG=1 in "
			    "the gitlab-runner service's environment");
}

static int gitlab_config(const struct sbx_cli *cli, const struct gitlab_codes *codes)
{
	struct sbx_config *config = NULL;
	struct json_object *root, *driver, *job_env;
	struct sbx_error error;
	char id[SBX_ID_MAX + 1];
	char hostname[256];
	const char *json;
	int status = codes->system_failure;

	/* config_exec's stderr is the first thing in the job log, and it runs once per job. */
	warn_prefixed_settings(cli);
	sbx_error_clear(&error);
	if (sbx_shim_load_config(cli, &config, &error) < 0) {
		sbx_error_log("%s", error.message);
		return codes->system_failure;
	}
	if (sbx_sandbox_id_new(getenv("CUSTOM_ENV_CI_JOB_ID"), id, &error) < 0) {
		sbx_error_log("%s", error.message);
		sbx_config_free(config);
		return codes->system_failure;
	}
	safe_hostname(hostname, sizeof(hostname));

	root = json_object_new_object();
	driver = json_object_new_object();
	job_env = json_object_new_object();
	if (root == NULL || driver == NULL || job_env == NULL) {
		json_object_put(root);
		json_object_put(driver);
		json_object_put(job_env);
		sbx_config_free(config);
		sbx_error_log("cannot build the configuration JSON: out of memory");
		return codes->system_failure;
	}
	json_object_object_add(root, "builds_dir", json_object_new_string("/builds"));
	json_object_object_add(root, "cache_dir", json_object_new_string("/cache"));
	json_object_object_add(root, "builds_dir_is_shared", json_object_new_boolean(0));
	json_object_object_add(root, "hostname", json_object_new_string(hostname));
	json_object_object_add(driver, "name", json_object_new_string("sbx"));
	json_object_object_add(driver, "version", json_object_new_string(SBX_VERSION));
	json_object_object_add(root, "driver", driver);
	json_object_object_add(root, "shell",
			       json_object_new_string(config->shell != NULL ? config->shell
									    : "bash"));
	json_object_object_add(job_env, "SBX_SANDBOX_ID", json_object_new_string(id));
	json_object_object_add(root, "job_env", job_env);

	/* The runner parses all of stdout as one JSON value: nothing else may go there. */
	json = json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN |
							    JSON_C_TO_STRING_NOSLASHESCAPE);
	if (json == NULL) {
		sbx_error_log("cannot build the configuration JSON");
	} else if (sbx_signals_received() != 0) {
		/* An exit 0 after SIGTERM (config_exec_timeout) would count as a success. */
		sbx_error_log("stopped by %s", sbx_signal_name(sbx_signals_received()));
	} else if (printf("%s\n", json) < 0 || fflush(stdout) != 0) {
		sbx_error_log("cannot write the configuration JSON to stdout: %s", strerror(errno));
	} else {
		sbx_debug("sandbox id for this attempt: %s", id);
		status = 0;
	}
	json_object_put(root);
	sbx_config_free(config);
	return status;
}

struct describe_state {
	const char *id;
	int found;
	int64_t deadline;
	int32_t state;
};

static int describe_entry(void *userdata, const struct sbx_sandbox_info *info)
{
	struct describe_state *state = userdata;

	if (info->id == NULL || strcmp(info->id, state->id) != 0)
		return 0;
	state->found = 1;
	state->deadline = info->deadline;
	state->state = info->state;
	return 1;
}

/*
 * Succeeds when the plugin lists sandbox CALL->id, and fails with SBX_ERROR_NOT_FOUND when it
 * does not. destroy() also succeeds for an id the plugin never knew, so cleanup needs this
 * lookup to report whether there was anything to destroy.
 */
static int lookup_in_child(void *userdata, struct sbx_error *error)
{
	const struct sbx_destroy_call *call = userdata;
	struct sbx_executor *executor = NULL;
	struct describe_state state = { .id = call->id };
	int status;

	if (sbx_plugin_open(call->plugin, &executor, error) < 0)
		return -1;
	status = call->plugin->ops->list(executor, describe_entry, &state, error);
	call->plugin->ops->close(executor);
	if (status < 0)
		return -1;
	if (!state.found)
		return sbx_error_set(error, SBX_ERROR_NOT_FOUND, "sandbox %s is not in the journal",
				     call->id);
	return 0;
}

/* Prints the deadline of the new sandbox, after which `sbx gc` may reclaim it. */
static void print_sandbox_details(const struct sbx_plugin *plugin, const char *id)
{
	struct sbx_executor *executor = NULL;
	struct describe_state state = { .id = id };
	struct sbx_error error;
	char when[64];

	if (sbx_plugin_open(plugin, &executor, &error) < 0)
		return;
	if (plugin->ops->list(executor, describe_entry, &state, &error) == 0 && state.found)
		printf("Deadline: %s (then `sbx gc` may destroy it)\n",
		       sbx_format_time(state.deadline, when, sizeof(when)));
	plugin->ops->close(executor);
}

static void section_start(const char *header)
{
	printf("\033[0Ksection_start:%lld:" SECTION_NAME "[collapsed=true]\r\033[0K%s\n",
	       (long long) sbx_now(), header);
}

static void section_end(void)
{
	printf("\033[0Ksection_end:%lld:" SECTION_NAME "\r\033[0K\n", (long long) sbx_now());
	fflush(stdout);
}

static int gitlab_prepare(const struct sbx_cli *cli, const struct gitlab_codes *codes)
{
	struct sbx_config *config = NULL;
	struct sbx_plugin plugin = { 0 };
	struct sbx_owner owner = { .struct_size = sizeof(owner) };
	struct sbx_job_spec spec = { .struct_size = sizeof(spec) };
	struct sbx_prepare_call call = { .plugin = &plugin, .spec = &spec };
	struct sbx_error error;
	const char *id = NULL;
	struct job_response response;
	int64_t started;
	int status = codes->system_failure;

	sbx_error_clear(&error);
	if (sandbox_id_from_env(&id, &error) < 0) {
		sbx_error_log("%s", error.message);
		return codes->system_failure;
	}
	if (sbx_shim_load_config(cli, &config, &error) < 0 ||
	    sbx_plugin_load(cli, config, &plugin, &error) < 0) {
		sbx_error_log("%s", error.message);
		sbx_config_free(config);
		return codes->system_failure;
	}

	/* Without the response file the job gets the cache shared by every job without a
	 * project id, in the unprotected class, never what a variable claims. */
	if (read_job_response(&response, &error) < 0) {
		sbx_warning("%s; the job gets the unprotected cache shared by jobs without a "
			    "project id",
			    error.message);
		sbx_error_clear(&error);
	} else if (response.project_id[0] == '\0') {
		sbx_warning("JOB_RESPONSE_FILE has no job_info.project_id; the job gets the "
			    "unprotected cache shared by jobs without a project id");
	}

	owner.runner = env_nonempty("CUSTOM_ENV_CI_RUNNER_SHORT_TOKEN");
	owner.project = response.project_id[0] != '\0' ? response.project_id : NULL;
	owner.pipeline = env_nonempty("CUSTOM_ENV_CI_PIPELINE_ID");
	owner.job = env_nonempty("CUSTOM_ENV_CI_JOB_ID");
	spec.id = id;
	spec.owner = &owner;
	spec.image = env_nonempty("CUSTOM_ENV_CI_JOB_IMAGE");
	/* The local backend keys caches by owner.project; a path from the environment would
	 * let a job pick another project's cache. */
	spec.project_path = NULL;
	spec.protected_ref = response.protected_ref && owner.project != NULL;
	spec.timeout_seconds = job_timeout(&response);
	/* Not CI_SERVER_URL, which a job can point at a host loopback service. */
	spec.ci_server_url = response.ci_server_url[0] != '\0' ? response.ci_server_url : NULL;
	spec.extra_allow = NULL;

	/* The job log is readable by project members: host paths go to the debug log. */
	sbx_debug("plugin %s", plugin.path);
	section_start("Preparing the sbx sandbox");
	printf("Using sbx %s with the %s backend %s\n", SBX_VERSION, plugin.ops->backend_name,
	       plugin.ops->backend_version != NULL ? plugin.ops->backend_version : "");
	printf("Creating sandbox %s for job %s%s%s\n", id, owner.job != NULL ? owner.job : "?",
	       spec.image != NULL ? " with image " : "", spec.image != NULL ? spec.image : "");
	fflush(stdout);

	started = sbx_monotonic_ms();
	if (sbx_run_in_child(sbx_prepare_in_child, &call, sbx_signals_cancel_fd(), -1,
			     "prepare", &error) < 0) {
		section_end();
		if (error.error_class == SBX_ERROR_CANCELLED) {
			sbx_error_log("prepare of sandbox %s stopped by %s; cleanup removes what was "
				      "created",
				      id, sbx_signal_name(sbx_signals_received()));
		} else {
			sbx_error_log("prepare of sandbox %s failed: %s", id, error.message);
			/* A build error is the job's own fault (e.g. a refused image): a retry
			 * cannot help. */
			if (error.error_class == SBX_ERROR_BUILD)
				status = codes->build_failure;
		}
		goto out;
	}
	printf("Sandbox %s (%s backend) is ready after %lld ms\n", id, plugin.ops->backend_name,
	       (long long) (sbx_monotonic_ms() - started));
	print_sandbox_details(&plugin, id);
	section_end();

	if (sbx_signals_received() != 0) {
		sbx_error_log("stopped by %s after prepare; cleanup removes sandbox %s",
			      sbx_signal_name(sbx_signals_received()), id);
		goto out;
	}
	if (ferror(stdout))
		sbx_warning("cannot write progress to stdout");
	status = 0;
out:
	sbx_plugin_unload(&plugin);
	sbx_config_free(config);
	return status;
}

/* Removes the exit code an earlier stage may have left: the runner re-reads it whenever a
 * stage exits with BUILD_FAILURE_EXIT_CODE. */
static void remove_stale_exit_code_file(const char *path)
{
	if (path == NULL || path[0] == '\0')
		return;
	if (unlink(path) < 0 && errno != ENOENT)
		sbx_warning("cannot remove the old exit code file %s: %s", path, strerror(errno));
}

static int write_exit_code_file(const char *path, int exit_status, struct sbx_error *error)
{
	_cleanup_close_ int fd = -1;
	char text[16];
	int length;

	length = snprintf(text, sizeof(text), "%d\n", exit_status);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return sbx_error_errno(error, errno, "cannot write BUILD_EXIT_CODE_FILE %s", path);
	if (sbx_write_all(fd, text, (size_t) length) < 0)
		return sbx_error_errno(error, errno, "cannot write BUILD_EXIT_CODE_FILE %s", path);
	if (close(steal_fd(&fd)) < 0)
		return sbx_error_errno(error, errno, "cannot write BUILD_EXIT_CODE_FILE %s", path);
	return 0;
}

static int gitlab_run(const struct sbx_cli *cli, const struct gitlab_codes *codes, int argc,
		      char **argv)
{
	const char *exit_code_file = env_nonempty("BUILD_EXIT_CODE_FILE");
	_cleanup_free_ char *script = NULL;
	struct sbx_config *config = NULL;
	struct sbx_plugin plugin = { 0 };
	struct sbx_executor *executor = NULL;
	struct sbx_exec_spec spec = { .struct_size = sizeof(spec) };
	struct sbx_error error;
	const char *id = NULL, *script_path, *stage;
	size_t script_length = 0;
	int exit_status = -1;
	int status = codes->system_failure;

	remove_stale_exit_code_file(exit_code_file);
	sbx_error_clear(&error);

	/* run_exec gets run_args, then the script path and the stage name. */
	if (argc < 3) {
		sbx_error_log("gitlab run needs the script path and the stage name as its last two "
			      "arguments; set run_args = [\"gitlab\", \"run\"] in config.toml");
		return codes->system_failure;
	}
	script_path = argv[argc - 2];
	stage = argv[argc - 1];
	for (int i = 1; i < argc - 2; i++)
		sbx_warning("ignoring run argument \"%s\"", argv[i]);

	if (sandbox_id_from_env(&id, &error) < 0) {
		sbx_error_log("%s", error.message);
		return codes->system_failure;
	}
	if (sbx_read_file(script_path, SCRIPT_MAX_BYTES, &script, &script_length, &error) < 0) {
		sbx_error_log("cannot read the %s script: %s", stage, error.message);
		return codes->system_failure;
	}
	if (sbx_shim_load_config(cli, &config, &error) < 0 ||
	    sbx_plugin_load(cli, config, &plugin, &error) < 0 ||
	    sbx_plugin_open(&plugin, &executor, &error) < 0) {
		sbx_error_log("%s", error.message);
		goto out;
	}

	spec.id = id;
	spec.argv = NULL;
	spec.script = script;
	spec.script_length = script_length;
	spec.shell = config->shell != NULL ? config->shell : "bash";
	/* The runner's script exports every job variable itself. */
	spec.envp = NULL;
	spec.cwd = NULL;
	spec.stdin_fd = -1;
	spec.stdout_fd = STDOUT_FILENO;
	spec.stderr_fd = STDERR_FILENO;
	spec.network_profile = stage_profile(stage);
	spec.cancel_fd = sbx_signals_cancel_fd();
	/* The runner enforces the job and stage timeouts with SIGTERM. */
	spec.timeout_seconds = 0;
	sbx_debug("running stage %s in sandbox %s (%zu script bytes, %s network profile)", stage,
		  id, script_length, spec.network_profile == SBX_NETWORK_RUNNER ? "runner" : "user");

	if (plugin.ops->exec(executor, &spec, &exit_status, &error) < 0) {
		if (error.error_class == SBX_ERROR_CANCELLED) {
			sbx_error_log("stage %s stopped by %s; sandbox %s stays for the next stages",
				      stage, sbx_signal_name(sbx_signals_received()), id);
		} else if (error.error_class == SBX_ERROR_BUILD) {
			/* The step failed in a way that has no exit code, and the message names
			 * it. Without the file, the runner reports exit code 1. */
			sbx_error_log("stage %s failed: %s", stage, error.message);
			status = codes->build_failure;
		} else {
			sbx_error_log("stage %s in sandbox %s failed: %s", stage, id, error.message);
		}
		goto out;
	}

	if (exit_status == 0) {
		status = 0;
	} else if (exit_status < 0 || exit_status > 255) {
		sbx_error_log("stage %s: the plugin reported the invalid exit status %d", stage,
			      exit_status);
	} else if (exit_code_file != NULL &&
		   write_exit_code_file(exit_code_file, exit_status, &error) < 0) {
		sbx_error_log("stage %s exited with status %d, but %s", stage, exit_status,
			      error.message);
	} else {
		sbx_debug("stage %s exited with status %d", stage, exit_status);
		status = codes->build_failure;
	}
out:
	if (executor != NULL)
		plugin.ops->close(executor);
	sbx_plugin_unload(&plugin);
	sbx_config_free(config);
	return status;
}

static int gitlab_cleanup(const struct sbx_cli *cli, const struct gitlab_codes *codes)
{
	struct sbx_config *config = NULL;
	struct sbx_plugin plugin = { 0 };
	struct sbx_destroy_call call = { .plugin = &plugin };
	struct sbx_error error;
	const char *id = NULL;
	int64_t started, budget_ms;
	int listed = 0; /* 1: listed, 0: not listed, -1: the lookup failed */
	int status = codes->system_failure;

	sbx_error_clear(&error);
	if (getenv("SBX_SANDBOX_ID") == NULL || getenv("SBX_SANDBOX_ID")[0] == '\0') {
		/* config_exec failed or never ran in this attempt, so no sandbox was named. */
		printf("SBX_SANDBOX_ID is not set: no sandbox was prepared, nothing to clean up\n");
		fflush(stdout);
		return 0;
	}
	if (sandbox_id_from_env(&id, &error) < 0) {
		sbx_error_log("%s", error.message);
		return codes->system_failure;
	}
	if (sbx_shim_load_config(cli, &config, &error) < 0 ||
	    sbx_plugin_load(cli, config, &plugin, &error) < 0) {
		sbx_error_log("cannot destroy sandbox %s: %s", id, error.message);
		sbx_config_free(config);
		return codes->system_failure;
	}

	call.id = id;
	started = sbx_monotonic_ms();
	budget_ms = config->cleanup_timeout > 0 ? config->cleanup_timeout * 1000 : -1;
	/* Whether the sandbox exists only changes the message: destroy runs either way, and a
	 * failed lookup is no reason to skip it. */
	if (sbx_run_in_child(lookup_in_child, &call, sbx_signals_cancel_fd(), budget_ms, "lookup",
			     &error) == 0) {
		listed = 1;
	} else if (error.error_class != SBX_ERROR_NOT_FOUND) {
		sbx_debug("cannot tell whether sandbox %s exists: %s", id, error.message);
		listed = -1;
	}
	sbx_error_clear(&error);
	if (budget_ms >= 0) {
		budget_ms -= sbx_monotonic_ms() - started;
		if (budget_ms < 0)
			budget_ms = 0;
	}
	if (sbx_run_in_child(sbx_destroy_in_child, &call, sbx_signals_cancel_fd(), budget_ms,
			     "destroy", &error) < 0) {
		sbx_error_log("cannot destroy sandbox %s: %s; `sbx gc` destroys it after its "
			      "deadline",
			      id, error.message);
		goto out;
	}
	if (listed == 0)
		printf("Sandbox %s does not exist (never prepared, or already destroyed): nothing "
		       "to destroy\n",
		       id);
	else
		printf("Destroyed sandbox %s in %lld ms\n", id,
		       (long long) (sbx_monotonic_ms() - started));
	fflush(stdout);
	status = 0;
out:
	sbx_plugin_unload(&plugin);
	sbx_config_free(config);
	return status;
}

int sbx_command_gitlab(const struct sbx_cli *cli, int argc, char **argv)
{
	struct gitlab_codes codes;
	const char *stage;

	codes.build_failure = exit_code_from_env("BUILD_FAILURE_EXIT_CODE", 1);
	codes.system_failure = exit_code_from_env("SYSTEM_FAILURE_EXIT_CODE", 2);

	if (argc < 2) {
		fputs(gitlab_usage, stderr);
		return codes.system_failure;
	}
	stage = argv[1];
	if (argc == 3 && (strcmp(argv[2], "--help") == 0 || strcmp(argv[2], "-h") == 0)) {
		fputs(gitlab_usage, stdout);
		return 0;
	}
	if (strcmp(stage, "--help") == 0 || strcmp(stage, "-h") == 0) {
		fputs(gitlab_usage, stdout);
		return 0;
	}
	if (strcmp(stage, "config") == 0)
		return gitlab_config(cli, &codes);
	if (strcmp(stage, "prepare") == 0)
		return gitlab_prepare(cli, &codes);
	if (strcmp(stage, "run") == 0)
		return gitlab_run(cli, &codes, argc - 1, argv + 1);
	if (strcmp(stage, "cleanup") == 0)
		return gitlab_cleanup(cli, &codes);

	sbx_error_log("unknown GitLab stage \"%s\"; use config, prepare, run or cleanup", stage);
	return codes.system_failure;
}
