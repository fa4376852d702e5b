/* SPDX-License-Identifier: MIT */
/* `sbx doctor`: checks the configuration, the plugin and the backend's prerequisites. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#include "cleanup.h"
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

/* Fixes for errors whose message names none. */
#define CONFIG_FIX "correct the file (see sbx-config(5)) or name another with --config"
#define PLUGIN_FIX "install the plugin of the configured backend or set plugin_dir"
#define BACKEND_FIX "run sbx doctor --debug for details"

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

/*
 * Prints a failed step of doctor's own (config, plugin, backend) from an sbx error message,
 * which reads "what failed; what to do": the part after the first "; " outside double quotes
 * goes to the fix line. A message without one gets FALLBACK_FIX.
 */
static void print_error_check(struct doctor_state *state, const char *name, const char *message,
			      const char *fallback_fix)
{
	char detail[SBX_ERROR_MESSAGE_MAX];
	const char *fix = fallback_fix;
	int quoted = 0;
	size_t i;

	snprintf(detail, sizeof(detail), "%s", message);
	for (i = 0; detail[i] != '\0'; i++) {
		if (detail[i] == '"') {
			quoted = !quoted;
		} else if (!quoted && detail[i] == ';' && detail[i + 1] == ' ' &&
			   detail[i + 2] != '\0') {
			detail[i] = '\0';
			fix = message + i + 2;
			break;
		}
	}
	print_check(state, SBX_CHECK_FAILED, name, detail, fix);
}

/* The configuration loader rejects larger files, so there is no backend to find in one. */
#define PEEK_FILE_MAX (1024 * 1024)

/*
 * Reads the top-level "backend" of the configuration file PATH, which failed to load, to find
 * the backend it selects. Returns a string to free, or NULL when the file
 * cannot be read as YAML or names no backend.
 */
static char *peek_backend(const char *path)
{
	_cleanup_fclose_ FILE *stream = NULL;
	yaml_parser_t parser;
	yaml_document_t document;
	yaml_node_t *root;
	struct stat st;
	char *backend = NULL;
	int fd;

	if (path == NULL)
		return NULL;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return NULL;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > PEEK_FILE_MAX) {
		close(fd);
		return NULL;
	}
	stream = fdopen(fd, "r");
	if (stream == NULL) {
		close(fd);
		return NULL;
	}
	if (!yaml_parser_initialize(&parser))
		return NULL;
	yaml_parser_set_input_file(&parser, stream);
	if (!yaml_parser_load(&parser, &document)) {
		yaml_parser_delete(&parser);
		return NULL;
	}
	root = yaml_document_get_root_node(&document);
	for (yaml_node_pair_t *pair = root != NULL && root->type == YAML_MAPPING_NODE
					      ? root->data.mapping.pairs.start
					      : NULL;
	     pair != NULL && pair < root->data.mapping.pairs.top; pair++) {
		yaml_node_t *key = yaml_document_get_node(&document, pair->key);
		yaml_node_t *value = yaml_document_get_node(&document, pair->value);

		if (key != NULL && value != NULL && key->type == YAML_SCALAR_NODE &&
		    value->type == YAML_SCALAR_NODE &&
		    strcmp((const char *) key->data.scalar.value, "backend") == 0) {
			free(backend);
			backend = strdup((const char *) value->data.scalar.value);
		}
	}
	yaml_document_delete(&document);
	yaml_parser_delete(&parser);
	return backend;
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
		_cleanup_free_ char *backend = NULL;

		print_error_check(&state, "config", error.message, CONFIG_FIX);
		/* Go on with the built-in defaults, so the plugin is checked as well, unless the
		 * file selects another backend than they do: checking theirs would pretend to
		 * check what the configuration does not use. */
		if (sbx_config_load(NULL, &config, &error) < 0) {
			print_error_check(&state, "config", error.message, CONFIG_FIX);
			goto out;
		}
		backend = peek_backend(sbx_config_default_path(cli->config_option));
		if (backend != NULL && strcmp(backend, config->backend) != 0) {
			snprintf(detail, sizeof(detail),
				 "not checked: the configuration selects backend \"%.64s\" but "
				 "does not load",
				 backend);
			print_check(&state, SBX_CHECK_FAILED, "backend", detail,
				    "fix the configuration error above and run sbx doctor again");
			goto out;
		}
	} else {
		print_check(&state, SBX_CHECK_OK, "config",
			    config->path != NULL ? config->path : "built-in defaults", NULL);
	}

	if (sbx_plugin_load(cli, config, &plugin, &error) < 0) {
		print_error_check(&state, "plugin", error.message, PLUGIN_FIX);
		goto out;
	}
	snprintf(detail, sizeof(detail), "%s (backend %s %s, ABI version %u)", plugin.path,
		 plugin.ops->backend_name,
		 plugin.ops->backend_version != NULL ? plugin.ops->backend_version : "",
		 plugin.ops->abi_version);
	print_check(&state, SBX_CHECK_OK, "plugin", detail, NULL);

	if (sbx_plugin_open(&plugin, &executor, &error) < 0) {
		print_error_check(&state, "backend", error.message, BACKEND_FIX);
		goto out;
	}
	fflush(stdout);
	if (plugin.ops->check(executor, on_check, &state, &error) < 0 && !state.failed)
		print_error_check(&state, "backend", error.message, BACKEND_FIX);
out:
	if (executor != NULL)
		plugin.ops->close(executor);
	sbx_plugin_unload(&plugin);
	sbx_config_free(config);
	if (fflush(stdout) != 0)
		return 1;
	return state.failed ? 1 : 0;
}
