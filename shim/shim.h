/* SPDX-License-Identifier: MIT */
/*
 * Internal interfaces of the `sbx` command. Each command returns the process exit code to
 * main(), which alone exits.
 */
#ifndef SBX_SHIM_H
#define SBX_SHIM_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "sbx/executor.h"

/* Exit code of the non-GitLab commands (gc, doctor, version) for a wrong command line. */
#define SBX_EXIT_USAGE 2

/* Options given before the command. */
struct sbx_cli {
	const char *config_option; /* --config FILE, or NULL */
	const char *plugin_dir_option; /* --plugin-dir DIR, or NULL */
	int debug; /* --debug or $SBX_DEBUG */
};

/* main.c: the log sink that writes "sbx: MESSAGE" lines to stderr. */
void sbx_shim_log_sink(void *userdata, enum sbx_log_level level, const char *message);
/* Applies the configured log level unless --debug or $SBX_DEBUG asked for debug output. */
void sbx_shim_set_log_level(const struct sbx_cli *cli, const struct sbx_config *config);
enum sbx_log_level sbx_shim_log_level(void);

/* sandbox_id.c: a new id, `j<job id>-<8 hex>` for a numeric JOB_ID, `x-<12 hex>` otherwise. */
int sbx_sandbox_id_new(const char *job_id, char id[SBX_ID_MAX + 1], struct sbx_error *error);

/* signals.c: SIGTERM and SIGINT write to a self-pipe whose read end is the cancel descriptor. */
int sbx_signals_install(struct sbx_error *error);
/* The read end of the self-pipe: readable once SIGTERM or SIGINT arrived. */
int sbx_signals_cancel_fd(void);
/* The first SIGTERM or SIGINT received, or 0. */
int sbx_signals_received(void);
/* "SIGTERM" or "SIGINT" for messages. */
const char *sbx_signal_name(int signo);
/* Restores the default SIGTERM and SIGINT actions in a forked child. */
void sbx_signals_reset_in_child(void);

/* child.c: runs FN in a forked child process so that sbx can stop waiting for it. */
typedef int (*sbx_child_fn)(void *userdata, struct sbx_error *error);
/*
 * Runs FN(USERDATA) in a child and returns its result and error. Stops the child and fails
 * with SBX_ERROR_CANCELLED when CANCEL_FD (>= 0) becomes readable, and with SBX_ERROR_SYSTEM
 * naming WHAT when TIMEOUT_MS (>= 0) passes first.
 */
int sbx_run_in_child(sbx_child_fn fn, void *userdata, int cancel_fd, int64_t timeout_ms,
		     const char *what, struct sbx_error *error);

/* The plugin calls that sbx makes in a child through sbx_run_in_child(). */
struct sbx_prepare_call {
	const struct sbx_plugin *plugin;
	const struct sbx_job_spec *spec;
};

struct sbx_destroy_call {
	const struct sbx_plugin *plugin;
	const char *id;
};

/* sbx_child_fn for a struct sbx_prepare_call: opens the plugin and prepares the sandbox. */
int sbx_prepare_in_child(void *userdata, struct sbx_error *error);
/* sbx_child_fn for a struct sbx_destroy_call: opens the plugin and destroys the sandbox. */
int sbx_destroy_in_child(void *userdata, struct sbx_error *error);

/* Commands. ARGV[0] is the command name. */
int sbx_command_gitlab(const struct sbx_cli *cli, int argc, char **argv);
int sbx_command_exec(const struct sbx_cli *cli, int argc, char **argv);
int sbx_command_gc(const struct sbx_cli *cli, int argc, char **argv);
int sbx_command_doctor(const struct sbx_cli *cli, int argc, char **argv);

/* Formats Unix time T as "2006-01-02T15:04:05Z" into BUF. */
const char *sbx_format_time(int64_t t, char *buf, size_t size);

#endif /* SBX_SHIM_H */
