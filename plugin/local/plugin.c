/* SPDX-License-Identifier: MIT */
/* The local backend's operations table and the plugin's only exported symbol. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
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
	char *state_dir;

	opened = calloc(1, sizeof(*opened));
	if (opened == NULL)
		return sbx_error_errno(error, ENOMEM, "cannot open the local backend");
	if (sbx_backend_open_common("local", host, options, &opened->config, &opened->journal,
				    &state_dir, error) < 0) {
		free(opened);
		return -1;
	}
	if (opened->config->local.cache_dir != NULL)
		opened->cache_base = strdup(opened->config->local.cache_dir);
	else if (asprintf(&opened->cache_base, "%s/cache", state_dir) < 0)
		opened->cache_base = NULL;
	free(state_dir);
	if (opened->cache_base == NULL) {
		sbx_journal_close(&opened->journal);
		sbx_config_free(opened->config);
		free(opened);
		return sbx_error_errno(error, ENOMEM, "cannot open the local backend");
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
