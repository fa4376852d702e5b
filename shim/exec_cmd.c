/* SPDX-License-Identifier: MIT */
/*
 * `sbx exec`: runs one command in a new sandbox and destroys the sandbox afterwards. Like
 * `podman run`, it exits with the command's status, or 125 when sbx itself failed.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cleanup.h"
#include "error.h"
#include "loader.h"
#include "log.h"
#include "shim.h"
#include "util.h"

#define EXEC_FAILED 125

static const char exec_usage[] =
	"Usage: sbx exec [OPTIONS] [--] CMD [ARG...]\n"
	"\n"
	"Runs CMD in a new sandbox, with this terminal's stdin, stdout and stderr, then destroys\n"
	"the sandbox. Exits with CMD's status, 128 + N when signal N ended it, and 125 when sbx\n"
	"itself failed.\n"
	"\n"
	"Options:\n"
	"  --allow ENTRY        also allow egress to ENTRY (host, *.domain, IP or CIDR, each with\n"
	"                       an optional :port); one entry per option, repeatable\n"
	"  --image IMAGE        job image, mapped to a root file system by local.images\n"
	"  --timeout SECONDS    stop CMD after SECONDS (default: no limit; the sandbox's\n"
	"                       deadline is default_job_timeout)\n"
	"  --cwd DIR            working directory inside the sandbox (default: /builds)\n"
	"  --env NAME=VALUE     set NAME in CMD's environment; repeatable\n"
	"  --env NAME           pass NAME's value from sbx's own environment, which keeps\n"
	"                       secrets off the command line; repeatable\n"
	"  --help               print this help\n";

struct string_array {
	char **items; /* NULL-terminated */
	size_t count;
};

static int string_array_add(struct string_array *array, char *item)
{
	char **bigger = realloc(array->items, (array->count + 2) * sizeof(*bigger));

	if (bigger == NULL)
		return -1;
	array->items = bigger;
	array->items[array->count++] = item;
	array->items[array->count] = NULL;
	return 0;
}

static void string_array_free(struct string_array *array, int free_items)
{
	if (free_items)
		for (size_t i = 0; i < array->count; i++)
			free(array->items[i]);
	free(array->items);
	array->items = NULL;
	array->count = 0;
}

/* Turns `--env NAME=VALUE` or `--env NAME` into a "NAME=VALUE" string the caller frees. */
static int env_entry(const char *text, char **entry, struct sbx_error *error)
{
	const char *equals = strchr(text, '=');
	char *result;

	if (text[0] == '\0' || equals == text)
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "--env \"%s\" has no variable name; use --env NAME=VALUE or "
				     "--env NAME",
				     text);
	if (equals != NULL) {
		result = strdup(text);
	} else {
		const char *value = getenv(text);

		if (value == NULL)
			return sbx_error_set(error, SBX_ERROR_INVALID,
					     "--env %s: %s is not set in sbx's environment; set it "
					     "or use --env NAME=VALUE",
					     text, text);
		if (asprintf(&result, "%s=%s", text, value) < 0)
			result = NULL;
	}
	if (result == NULL)
		return sbx_error_errno(error, ENOMEM, "cannot store --env %s", text);
	*entry = result;
	return 0;
}

struct exec_options {
	struct string_array allow; /* items point into argv */
	struct string_array env; /* items are owned */
	const char *image;
	const char *cwd;
	int64_t timeout;
	char **command;
};

/* Returns 1 after --help, 0 on success, -1 on a usage error. */
static int parse_exec_options(int argc, char **argv, struct exec_options *options,
			      struct sbx_error *error)
{
	static const struct option long_options[] = {
		{ "allow", required_argument, NULL, 'a' },
		{ "image", required_argument, NULL, 'i' },
		{ "timeout", required_argument, NULL, 't' },
		{ "cwd", required_argument, NULL, 'w' },
		{ "env", required_argument, NULL, 'e' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int option;

	opterr = 0;
	while ((option = getopt_long(argc, argv, "+h", long_options, NULL)) != -1) {
		char *entry = NULL;

		switch (option) {
		case 'a':
			if (string_array_add(&options->allow, optarg) < 0)
				return sbx_error_errno(error, ENOMEM, "cannot store --allow");
			break;
		case 'i':
			options->image = optarg;
			break;
		case 't':
			if (sbx_parse_int64(optarg, &options->timeout) < 0)
				return sbx_error_set(error, SBX_ERROR_INVALID,
						     "--timeout \"%s\" is not a number of seconds; "
						     "use e.g. --timeout 600",
						     optarg);
			break;
		case 'w':
			options->cwd = optarg;
			break;
		case 'e':
			if (env_entry(optarg, &entry, error) < 0)
				return -1;
			if (string_array_add(&options->env, entry) < 0) {
				free(entry);
				return sbx_error_errno(error, ENOMEM, "cannot store --env");
			}
			break;
		case 'h':
			return 1;
		default:
			return sbx_error_set(error, SBX_ERROR_INVALID,
					     "unknown or incomplete option %s; run 'sbx exec --help'",
					     argv[optind - 1]);
		}
	}
	if (optind >= argc)
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "no command given; use sbx exec [OPTIONS] [--] CMD [ARG...]");
	options->command = argv + optind;
	return 0;
}

/* Runs the command in sandbox ID; returns its status, or -1 with ERROR. */
static int run_command(const struct sbx_plugin *plugin, const char *id,
		       const struct exec_options *options, int *exit_status,
		       struct sbx_error *error)
{
	struct sbx_exec_spec spec = { .struct_size = sizeof(spec) };
	struct sbx_executor *executor = NULL;
	int status;

	if (sbx_plugin_open(plugin, &executor, error) < 0)
		return -1;
	spec.id = id;
	spec.argv = (const char *const *) options->command;
	spec.envp = (const char *const *) options->env.items;
	spec.cwd = options->cwd;
	spec.stdin_fd = STDIN_FILENO;
	spec.stdout_fd = STDOUT_FILENO;
	spec.stderr_fd = STDERR_FILENO;
	spec.network_profile = SBX_NETWORK_USER;
	spec.cancel_fd = sbx_signals_cancel_fd();
	spec.timeout_seconds = options->timeout;
	status = plugin->ops->exec(executor, &spec, exit_status, error);
	plugin->ops->close(executor);
	return status;
}

/*
 * Logs why COMMAND has no exit status. A build error means the command ran and then failed
 * without one (e.g. it timed out). Plugin messages usually name the sandbox already, so the
 * id is added only when ERROR's message lacks it.
 */
static void log_run_error(const char *command, const char *id, const struct sbx_error *error)
{
	if (error->error_class == SBX_ERROR_BUILD && strstr(error->message, id) != NULL)
		sbx_error_log("%s failed: %s", command, error->message);
	else if (error->error_class == SBX_ERROR_BUILD)
		sbx_error_log("%s failed in sandbox %s: %s", command, id, error->message);
	else if (strstr(error->message, id) != NULL)
		sbx_error_log("cannot run %s: %s", command, error->message);
	else
		sbx_error_log("cannot run %s in sandbox %s: %s", command, id, error->message);
}

static int exec_in_sandbox(const struct sbx_cli *cli, struct exec_options *options)
{
	struct sbx_config *config = NULL;
	struct sbx_plugin plugin = { 0 };
	struct sbx_owner owner = { .struct_size = sizeof(owner) };
	struct sbx_job_spec spec = { .struct_size = sizeof(spec) };
	struct sbx_prepare_call prepare_call = { .plugin = &plugin, .spec = &spec };
	struct sbx_destroy_call destroy_call = { .plugin = &plugin };
	struct sbx_error error;
	char id[SBX_ID_MAX + 1];
	int exit_status = -1;
	int status = EXEC_FAILED;

	sbx_error_clear(&error);
	if (sbx_shim_load_config(cli, &config, &error) < 0 ||
	    sbx_plugin_load(cli, config, &plugin, &error) < 0 ||
	    sbx_sandbox_id_new(NULL, id, &error) < 0) {
		sbx_error_log("%s", error.message);
		goto out;
	}

	spec.id = id;
	spec.owner = &owner;
	spec.image = options->image;
	spec.timeout_seconds = options->timeout;
	spec.extra_allow = (const char *const *) options->allow.items;
	sbx_debug("preparing sandbox %s", id);
	if (sbx_run_in_child(sbx_prepare_in_child, &prepare_call, sbx_signals_cancel_fd(), -1,
			     "prepare", &error) < 0) {
		if (error.error_class == SBX_ERROR_CANCELLED) {
			sbx_error_log("stopped by %s while preparing sandbox %s",
				      sbx_signal_name(sbx_signals_received()), id);
			status = 128 + sbx_signals_received();
		} else {
			sbx_error_log("cannot prepare sandbox %s: %s", id, error.message);
		}
	} else if (run_command(&plugin, id, options, &exit_status, &error) < 0) {
		if (error.error_class == SBX_ERROR_CANCELLED) {
			sbx_error_log("%s stopped the command in sandbox %s",
				      sbx_signal_name(sbx_signals_received()), id);
			status = 128 + sbx_signals_received();
		} else {
			log_run_error(options->command[0], id, &error);
		}
	} else if (exit_status < 0 || exit_status > 255) {
		sbx_error_log("the plugin reported the invalid exit status %d", exit_status);
	} else {
		status = exit_status;
	}

	/* Destroy even after SIGTERM, so the signal pipe must not cut it short. */
	destroy_call.id = id;
	if (sbx_run_in_child(sbx_destroy_in_child, &destroy_call, -1,
			     config->cleanup_timeout > 0 ? config->cleanup_timeout * 1000 : -1,
			     "destroy", &error) < 0)
		sbx_error_log("cannot destroy sandbox %s: %s; `sbx gc` destroys it after its "
			      "deadline",
			      id, error.message);
	else
		sbx_debug("destroyed sandbox %s", id);
out:
	sbx_plugin_unload(&plugin);
	sbx_config_free(config);
	return status;
}

int sbx_command_exec(const struct sbx_cli *cli, int argc, char **argv)
{
	struct exec_options options = { 0 };
	struct sbx_error error;
	int parsed, status;

	sbx_error_clear(&error);
	parsed = parse_exec_options(argc, argv, &options, &error);
	if (parsed == 1) {
		fputs(exec_usage, stdout);
		status = 0;
	} else if (parsed < 0) {
		sbx_error_log("%s", error.message);
		status = EXEC_FAILED;
	} else {
		status = exec_in_sandbox(cli, &options);
	}
	string_array_free(&options.allow, 0);
	string_array_free(&options.env, 1);
	return status;
}
