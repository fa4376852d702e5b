/* SPDX-License-Identifier: MIT */
/*
 * A minimal host of an executor plugin for the integration tests: it loads the plugin with
 * dlopen() through the public ABI only, exactly as any third-party host would.
 *
 *   sbx-local-host [--plugin SO] [--config FILE] [--state-dir DIR] COMMAND ...
 *     prepare ID [--project PATH] [--protected] [--timeout S] [--image NAME] [--ci-url URL]
 *                [--allow ENTRY]...
 *     exec ID [--runner] [--cwd DIR] [--timeout S] [--shell SH] [--script FILE] [--stdin]
 *             [--env NAME=VALUE]... [-- ARGV...]
 *     destroy ID
 *     list
 *     check
 *
 * exec exits with the step's status. A failed call prints "error (CLASS): MESSAGE" to stderr
 * and exits with 200 + the error class. SIGTERM or SIGINT during exec fires its cancel
 * descriptor. Log lines go to stderr as "sbx[LEVEL]: MESSAGE".
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sbx/executor.h"

#define MAX_ITEMS 64

static int cancel_pipe[2] = { -1, -1 };

static void on_signal(int sig)
{
	int saved = errno;

	(void) sig;
	(void) !write(cancel_pipe[1], "c", 1);
	errno = saved;
}

static void log_line(void *userdata, enum sbx_log_level level, const char *message)
{
	static const char *const names[] = { "error", "warning", "info", "debug" };

	(void) userdata;
	fprintf(stderr, "sbx[%s]: %s\n", level <= SBX_LOG_DEBUG ? names[level] : "?", message);
}

static int fail(const struct sbx_error *error)
{
	fprintf(stderr, "error (%d): %s\n", error->error_class, error->message);
	return 200 + error->error_class;
}

static int usage(void)
{
	fprintf(stderr, "usage: sbx-local-host [--plugin SO] [--config FILE] [--state-dir DIR] "
			"prepare|exec|destroy|list|check ...\n");
	return 2;
}

static char *read_script(const char *path, size_t *length)
{
	FILE *file = fopen(path, "rbe");
	char *data = NULL;
	size_t capacity = 0, used = 0, n;

	if (file == NULL)
		return NULL;
	do {
		if (used + 4096 > capacity) {
			char *bigger = realloc(data, capacity + 65536);

			if (bigger == NULL) {
				free(data);
				fclose(file);
				return NULL;
			}
			data = bigger;
			capacity += 65536;
		}
		n = fread(data + used, 1, capacity - used, file);
		used += n;
	} while (n > 0);
	fclose(file);
	*length = used;
	return data != NULL ? data : calloc(1, 1);
}

static int list_one(void *userdata, const struct sbx_sandbox_info *info)
{
	static const char *const states[] = { "unknown", "preparing", "ready", "dead" };

	(void) userdata;
	printf("%s %s %s %lld\n", info->id, info->backend,
	       info->state >= 0 && info->state <= 3 ? states[info->state] : "?",
	       (long long) info->deadline);
	return 0;
}

static void check_one(void *userdata, enum sbx_check_status status, const char *name,
		      const char *detail, const char *fix)
{
	static const char *const states[] = { "ok", "warning", "failed" };

	(void) userdata;
	printf("%s: %s: %s%s%s\n", states[status], name, detail, fix != NULL ? "; fix: " : "",
	       fix != NULL ? fix : "");
}

static int run_prepare(const struct sbx_executor_ops *ops, struct sbx_executor *executor,
		       int argc, char **argv)
{
	const char *allow[MAX_ITEMS + 1] = { NULL };
	size_t allow_count = 0;
	struct sbx_owner owner = { .struct_size = sizeof(owner), .runner = "test", .job = "1" };
	struct sbx_job_spec spec = { .struct_size = sizeof(spec), .owner = &owner };
	struct sbx_error error = { .struct_size = sizeof(error) };

	if (argc < 1)
		return usage();
	spec.id = argv[0];
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--project") == 0 && i + 1 < argc)
			spec.project_path = argv[++i];
		else if (strcmp(argv[i], "--protected") == 0)
			spec.protected_ref = 1;
		else if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc)
			spec.timeout_seconds = atoll(argv[++i]);
		else if (strcmp(argv[i], "--image") == 0 && i + 1 < argc)
			spec.image = argv[++i];
		else if (strcmp(argv[i], "--ci-url") == 0 && i + 1 < argc)
			spec.ci_server_url = argv[++i];
		else if (strcmp(argv[i], "--allow") == 0 && i + 1 < argc && allow_count < MAX_ITEMS)
			allow[allow_count++] = argv[++i];
		else
			return usage();
	}
	spec.extra_allow = allow_count > 0 ? allow : NULL;
	if (ops->prepare(executor, &spec, &error) < 0)
		return fail(&error);
	return 0;
}

static int run_exec(const struct sbx_executor_ops *ops, struct sbx_executor *executor, int argc,
		    char **argv)
{
	const char *envp[MAX_ITEMS + 1] = { NULL };
	size_t env_count = 0;
	struct sbx_exec_spec spec = {
		.struct_size = sizeof(spec),
		.stdin_fd = -1,
		.stdout_fd = STDOUT_FILENO,
		.stderr_fd = STDERR_FILENO,
		.network_profile = SBX_NETWORK_USER,
	};
	struct sbx_error error = { .struct_size = sizeof(error) };
	struct sigaction action;
	char *script = NULL;
	int status = -1, rc;

	if (argc < 1)
		return usage();
	spec.id = argv[0];
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--runner") == 0) {
			spec.network_profile = SBX_NETWORK_RUNNER;
		} else if (strcmp(argv[i], "--cwd") == 0 && i + 1 < argc) {
			spec.cwd = argv[++i];
		} else if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc) {
			spec.timeout_seconds = atoll(argv[++i]);
		} else if (strcmp(argv[i], "--shell") == 0 && i + 1 < argc) {
			spec.shell = argv[++i];
		} else if (strcmp(argv[i], "--script") == 0 && i + 1 < argc) {
			script = read_script(argv[++i], &spec.script_length);
			if (script == NULL) {
				perror(argv[i]);
				return 2;
			}
			spec.script = script;
		} else if (strcmp(argv[i], "--stdin") == 0) {
			spec.stdin_fd = STDIN_FILENO;
		} else if (strcmp(argv[i], "--env") == 0 && i + 1 < argc && env_count < MAX_ITEMS) {
			envp[env_count++] = argv[++i];
		} else if (strcmp(argv[i], "--") == 0) {
			spec.argv = (const char *const *) &argv[i + 1];
			break;
		} else {
			return usage();
		}
	}
	spec.envp = env_count > 0 ? envp : NULL;

	if (pipe2(cancel_pipe, O_CLOEXEC) < 0)
		return 2;
	spec.cancel_fd = cancel_pipe[0];
	memset(&action, 0, sizeof(action));
	action.sa_handler = on_signal;
	sigaction(SIGTERM, &action, NULL);
	sigaction(SIGINT, &action, NULL);

	rc = ops->exec(executor, &spec, &status, &error);
	free(script);
	if (rc < 0)
		return fail(&error);
	return status;
}

int main(int argc, char **argv)
{
	const char *plugin = NULL, *config = NULL, *state_dir = NULL;
	char default_plugin[4096];
	const struct sbx_executor_ops *ops;
	struct sbx_executor *executor = NULL;
	struct sbx_error error = { .struct_size = sizeof(error) };
	struct sbx_host host = { .struct_size = sizeof(host), .log = log_line };
	struct sbx_open_options options = { .struct_size = sizeof(options) };
	sbx_executor_entry_fn entry;
	const char *command;
	void *handle;
	int i = 1, rc;

	for (; i + 1 < argc && strncmp(argv[i], "--", 2) == 0 && argv[i][2] != '\0'; i += 2) {
		if (strcmp(argv[i], "--plugin") == 0)
			plugin = argv[i + 1];
		else if (strcmp(argv[i], "--config") == 0)
			config = argv[i + 1];
		else if (strcmp(argv[i], "--state-dir") == 0)
			state_dir = argv[i + 1];
		else
			return usage();
	}
	if (i >= argc)
		return usage();
	command = argv[i++];
	if (plugin == NULL) {
		const char *build = getenv("SBX_BUILD_DIR");

		snprintf(default_plugin, sizeof(default_plugin), "%s/sbx-local.so",
			 build != NULL ? build : "build");
		plugin = default_plugin;
	}
	host.log_level = getenv("SBX_TEST_DEBUG") != NULL ? SBX_LOG_DEBUG : SBX_LOG_INFO;

	handle = dlopen(plugin, RTLD_NOW | RTLD_LOCAL);
	if (handle == NULL) {
		fprintf(stderr, "cannot load %s: %s\n", plugin, dlerror());
		return 2;
	}
	*(void **) &entry = dlsym(handle, SBX_EXECUTOR_ENTRY_SYMBOL);
	if (entry == NULL) {
		fprintf(stderr, "%s has no %s\n", plugin, SBX_EXECUTOR_ENTRY_SYMBOL);
		return 2;
	}
	if (entry(SBX_EXECUTOR_ABI_VERSION, &ops, &error) < 0)
		return fail(&error);
	options.config_path = config;
	options.state_dir = state_dir;
	if (ops->open(&host, &options, &executor, &error) < 0)
		return fail(&error);

	if (strcmp(command, "prepare") == 0) {
		rc = run_prepare(ops, executor, argc - i, argv + i);
	} else if (strcmp(command, "exec") == 0) {
		rc = run_exec(ops, executor, argc - i, argv + i);
	} else if (strcmp(command, "destroy") == 0 && i < argc) {
		rc = ops->destroy(executor, argv[i], &error) < 0 ? fail(&error) : 0;
	} else if (strcmp(command, "list") == 0) {
		rc = ops->list(executor, list_one, NULL, &error) < 0 ? fail(&error) : 0;
	} else if (strcmp(command, "check") == 0) {
		rc = ops->check(executor, check_one, NULL, &error) < 0 ? fail(&error) : 0;
	} else {
		rc = usage();
	}
	fflush(stdout);
	ops->close(executor);
	dlclose(handle);
	return rc;
}
