/* SPDX-License-Identifier: MIT */
/*
 * sbx: the exec shim that CI systems call. This file parses the options that come before the
 * command, sets up logging and signals, and dispatches to one command.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "log.h"
#include "shim.h"
#include "util.h"

static enum sbx_log_level shim_log_level = SBX_LOG_INFO;

static const char usage_text[] =
	"Usage: sbx [--config FILE] [--debug] [--plugin-dir DIR] COMMAND [ARGS]\n"
	"\n"
	"Runs CI jobs in fresh sandboxes.\n"
	"\n"
	"Commands:\n"
	"  gitlab config|prepare|run|cleanup   GitLab Runner custom executor stages\n"
	"  exec [OPTIONS] [--] CMD [ARG...]    run one command in a new sandbox\n"
	"  gc [--dry-run]                      destroy sandboxes whose deadline has passed\n"
	"  doctor                              check the configuration and the backend\n"
	"  version                             print the version\n"
	"\n"
	"Options:\n"
	"  --config FILE      configuration file (default: $SBX_CONFIG, else " SBX_SYSCONFDIR
	"/sbx/config.yaml when it exists, else built-in defaults)\n"
	"  --debug            log debug messages to stderr (also when $SBX_DEBUG is set)\n"
	"  --plugin-dir DIR   directory holding sbx-<backend>.so (default: $SBX_PLUGIN_DIR,\n"
	"                     else plugin_dir in the configuration, else " SBX_PLUGIN_DIR ")\n"
	"  --help             print this help\n"
	"  --version          print the version\n"
	"\n"
	"Run 'sbx COMMAND --help' for the options of one command.\n";

void sbx_shim_log_sink(void *userdata, enum sbx_log_level level, const char *message)
{
	char line[4096];
	const char *kind = "";
	int length;

	if (level > shim_log_level)
		return;
	if (level == SBX_LOG_WARNING)
		kind = "warning: ";
	else if (level == SBX_LOG_DEBUG)
		kind = "debug: ";

	/* One write per line, so lines of concurrent processes on one pipe do not interleave. */
	length = snprintf(line, sizeof(line), "sbx: %s%s\n", kind, message);
	if (length < 0)
		return;
	if ((size_t) length >= sizeof(line)) {
		length = sizeof(line) - 1;
		line[length - 1] = '\n';
	}
	sbx_write_all(STDERR_FILENO, line, (size_t) length);
}

enum sbx_log_level sbx_shim_log_level(void)
{
	return shim_log_level;
}

void sbx_shim_set_log_level(const struct sbx_cli *cli, const struct sbx_config *config)
{
	if (cli->debug)
		shim_log_level = SBX_LOG_DEBUG;
	else if (config != NULL)
		shim_log_level = config->log_level;
	sbx_log_set_sink(sbx_shim_log_sink, NULL, shim_log_level);
}

const char *sbx_format_time(int64_t t, char *buf, size_t size)
{
	time_t seconds = (time_t) t;
	struct tm tm;

	if (gmtime_r(&seconds, &tm) == NULL || strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(buf, size, "%lld", (long long) t);
	return buf;
}

static int env_flag(const char *name)
{
	const char *value = getenv(name);

	return value != NULL && value[0] != '\0' && strcmp(value, "0") != 0 &&
	       strcmp(value, "false") != 0;
}

static int print_version(void)
{
	printf("sbx %s (executor ABI version %u)\n", SBX_VERSION, SBX_EXECUTOR_ABI_VERSION);
	return fflush(stdout) == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
	static const struct option options[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "debug", no_argument, NULL, 'd' },
		{ "plugin-dir", required_argument, NULL, 'p' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct sbx_cli cli = { 0 };
	struct sbx_error error;
	const char *command;
	int option;

	sbx_error_clear(&error);
	cli.debug = env_flag("SBX_DEBUG");

	/* '+': stop at the command, whose own options follow it. */
	opterr = 0;
	while ((option = getopt_long(argc, argv, "+h", options, NULL)) != -1) {
		switch (option) {
		case 'c':
			cli.config_option = optarg;
			break;
		case 'd':
			cli.debug = 1;
			break;
		case 'p':
			cli.plugin_dir_option = optarg;
			break;
		case 'h':
			fputs(usage_text, stdout);
			return 0;
		case 'V':
			return print_version();
		default:
			fprintf(stderr, "sbx: unknown or incomplete option %s; run 'sbx --help'\n",
				argv[optind - 1]);
			return SBX_EXIT_USAGE;
		}
	}
	sbx_shim_set_log_level(&cli, NULL);

	if (optind >= argc) {
		fputs(usage_text, stderr);
		return SBX_EXIT_USAGE;
	}
	command = argv[optind];
	argc -= optind;
	argv += optind;
	/* Each command parses its own options from the start of its argument list; optind 0
	 * makes glibc's getopt start over, including its ordering mode. */
	optind = 0;

	if (strcmp(command, "version") == 0)
		return print_version();
	if (strcmp(command, "help") == 0) {
		fputs(usage_text, stdout);
		return 0;
	}

	if (sbx_signals_install(&error) < 0) {
		sbx_error_log("%s", error.message);
		/* The GitLab stages must not exit with a code the runner does not know. */
		if (strcmp(command, "gitlab") == 0) {
			const char *code = getenv("SYSTEM_FAILURE_EXIT_CODE");
			int64_t value;

			if (code != NULL && sbx_parse_int64(code, &value) == 0 && value > 0 &&
			    value < 256)
				return (int) value;
			return 2;
		}
		return strcmp(command, "exec") == 0 ? 125 : 1;
	}

	if (strcmp(command, "gitlab") == 0)
		return sbx_command_gitlab(&cli, argc, argv);
	if (strcmp(command, "exec") == 0)
		return sbx_command_exec(&cli, argc, argv);
	if (strcmp(command, "gc") == 0)
		return sbx_command_gc(&cli, argc, argv);
	if (strcmp(command, "doctor") == 0)
		return sbx_command_doctor(&cli, argc, argv);

	fprintf(stderr, "sbx: unknown command \"%s\"; run 'sbx --help' for the list\n", command);
	return SBX_EXIT_USAGE;
}
