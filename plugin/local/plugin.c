/* SPDX-License-Identifier: MIT */
/* The local backend's operations table and the plugin's only exported symbol. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checks.h"
#include "config.h"
#include "error.h"
#include "job.h"
#include "local.h"
#include "log.h"
#include "stage.h"

static int local_open(const struct sbx_host *host, const struct sbx_open_options *options,
		      struct sbx_executor **executor, struct sbx_error *error)
{
	struct sbx_executor *opened;
	const char *config_path = NULL, *state_override = NULL;
	char *state_dir;
	int rc;

	if (host != NULL && SBX_HAS_FIELD(host, struct sbx_host, log_level))
		sbx_log_set_sink(host->log, host->log_userdata, (enum sbx_log_level) host->log_level);
	if (options != NULL && SBX_HAS_FIELD(options, struct sbx_open_options, config_path))
		config_path = options->config_path;
	if (options != NULL && SBX_HAS_FIELD(options, struct sbx_open_options, state_dir))
		state_override = options->state_dir;

	opened = calloc(1, sizeof(*opened));
	if (opened == NULL)
		return sbx_error_errno(error, ENOMEM, "cannot open the local backend");
	if (sbx_config_load(config_path, &opened->config, error) < 0) {
		free(opened);
		return -1;
	}
	state_dir = state_override != NULL ? strdup(state_override)
					   : sbx_config_state_dir(opened->config);
	if (state_dir == NULL) {
		sbx_config_free(opened->config);
		free(opened);
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "no state directory: set state_dir in the configuration, or "
				     "HOME or XDG_STATE_HOME in the environment");
	}
	rc = sbx_journal_open(state_dir, &opened->journal, error);
	if (rc == 0) {
		if (opened->config->local.cache_dir != NULL)
			opened->cache_base = strdup(opened->config->local.cache_dir);
		else if (asprintf(&opened->cache_base, "%s/cache", state_dir) < 0)
			opened->cache_base = NULL;
		if (opened->cache_base == NULL) {
			sbx_journal_close(&opened->journal);
			rc = sbx_error_errno(error, ENOMEM, "cannot open the local backend");
		}
	}
	free(state_dir);
	if (rc < 0) {
		sbx_config_free(opened->config);
		free(opened);
		return -1;
	}
	*executor = opened;
	return 0;
}

static void local_close(struct sbx_executor *executor)
{
	if (executor == NULL)
		return;
	sbx_journal_close(&executor->journal);
	sbx_config_free(executor->config);
	free(executor->cache_base);
	free(executor);
}

static int local_prepare(struct sbx_executor *executor, const struct sbx_job_spec *spec,
			 struct sbx_error *error)
{
	return sbx_prepare(executor, spec, error);
}

static int local_exec(struct sbx_executor *executor, const struct sbx_exec_spec *spec,
		      int *exit_status, struct sbx_error *error)
{
	return sbx_stage_exec(executor, spec, exit_status, error);
}

static int local_destroy(struct sbx_executor *executor, const char *id, struct sbx_error *error)
{
	return sbx_job_destroy(executor, id, error);
}

static int local_list(struct sbx_executor *executor, sbx_list_fn callback, void *userdata,
		      struct sbx_error *error)
{
	return sbx_job_list(executor, callback, userdata, error);
}

static int local_check(struct sbx_executor *executor, sbx_check_fn callback, void *userdata,
		       struct sbx_error *error)
{
	return sbx_checks_run(executor, callback, userdata, error);
}

static const struct sbx_executor_ops local_ops = {
	.struct_size = sizeof(struct sbx_executor_ops),
	.abi_version = SBX_EXECUTOR_ABI_VERSION,
	.backend_name = SBX_LOCAL_BACKEND_NAME,
	.backend_version = SBX_VERSION,
	.open = local_open,
	.close = local_close,
	.prepare = local_prepare,
	.exec = local_exec,
	.destroy = local_destroy,
	.list = local_list,
	.check = local_check,
};

SBX_EXPORT int sbx_executor_entry(uint32_t host_abi_version, const struct sbx_executor_ops **ops,
				  struct sbx_error *error)
{
	if (host_abi_version != SBX_EXECUTOR_ABI_VERSION)
		return sbx_error_set(error, SBX_ERROR_ABI,
				     "the host speaks executor ABI version %u, but sbx-local.so "
				     "speaks version %u; install matching versions of sbx and its "
				     "plugins",
				     host_abi_version, SBX_EXECUTOR_ABI_VERSION);
	*ops = &local_ops;
	return 0;
}
