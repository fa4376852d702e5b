/* SPDX-License-Identifier: MIT */
/* `sbx doctor`: checks the configuration, the plugin and the backend's prerequisites. */
#include <stdio.h>
#include <string.h>

#include "error.h"
#include "loader.h"
#include "log.h"
#include "shim.h"

static const char doctor_usage[] =
	"Usage: sbx doctor\n"
	"\n"
	"Loads the configuration and the backend's plugin, checks the backend's prerequisites and\n"
	"prints one line per check (ok, warning or FAILED) with what to fix. Exits 0 when no\n"
	"check failed, 1 otherwise.\n";

struct doctor_state {
	int failed;
};

static void print_check(struct doctor_state *state, enum sbx_check_status status,
			const char *name, const char *detail, const char *fix)
{
	const char *label = "ok";

	if (status == SBX_CHECK_WARNING) {
		label = "warning";
	} else if (status != SBX_CHECK_OK) {
		label = "FAILED";
		state->failed = 1;
	}
	printf("%-8s %s: %s\n", label, name != NULL ? name : "?", detail != NULL ? detail : "");
	if (fix != NULL && fix[0] != '\0')
		printf("  fix: %s\n", fix);
}

static void on_check(void *userdata, enum sbx_check_status status, const char *name,
		     const char *detail, const char *fix)
{
	print_check(userdata, status, name, detail, fix);
}

int sbx_command_doctor(const struct sbx_cli *cli, int argc, char **argv)
{
	struct doctor_state state = { 0 };
	struct sbx_config *config = NULL;
	struct sbx_plugin plugin = { 0 };
	struct sbx_executor *executor = NULL;
	struct sbx_error error;
	char detail[SBX_ERROR_MESSAGE_MAX + 128];

	if (argc > 1) {
		int help = strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0;

		fputs(doctor_usage, help ? stdout : stderr);
		return help ? 0 : SBX_EXIT_USAGE;
	}

	sbx_error_clear(&error);
	if (sbx_shim_load_config(cli, &config, &error) < 0) {
		print_check(&state, SBX_CHECK_FAILED, "config", error.message, NULL);
		/* Go on with the built-in defaults, so the plugin is checked as well. */
		if (sbx_config_load(NULL, &config, &error) < 0) {
			print_check(&state, SBX_CHECK_FAILED, "config", error.message, NULL);
			goto out;
		}
	} else {
		print_check(&state, SBX_CHECK_OK, "config",
			    config->path != NULL ? config->path : "built-in defaults", NULL);
	}

	if (sbx_plugin_load(cli, config, &plugin, &error) < 0) {
		print_check(&state, SBX_CHECK_FAILED, "plugin", error.message, NULL);
		goto out;
	}
	snprintf(detail, sizeof(detail), "%s (backend %s %s, ABI version %u)", plugin.path,
		 plugin.ops->backend_name,
		 plugin.ops->backend_version != NULL ? plugin.ops->backend_version : "",
		 plugin.ops->abi_version);
	print_check(&state, SBX_CHECK_OK, "plugin", detail, NULL);

	if (sbx_plugin_open(&plugin, &executor, &error) < 0) {
		print_check(&state, SBX_CHECK_FAILED, "backend", error.message, NULL);
		goto out;
	}
	fflush(stdout);
	if (plugin.ops->check(executor, on_check, &state, &error) < 0 && !state.failed)
		print_check(&state, SBX_CHECK_FAILED, "backend", error.message, NULL);
out:
	if (executor != NULL)
		plugin.ops->close(executor);
	sbx_plugin_unload(&plugin);
	sbx_config_free(config);
	if (fflush(stdout) != 0)
		return 1;
	return state.failed ? 1 : 0;
}
