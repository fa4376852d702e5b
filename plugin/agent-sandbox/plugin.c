/* SPDX-License-Identifier: MIT */
/*
 * The agent-sandbox backend's operations table and the plugin's only exported symbol.
 *
 * TODO: prepare, exec and destroy are stubs until the backend on top of the Kubernetes client
 * (k8s/) is written; they fail with SBX_ERROR_SYSTEM.
 */
#include <errno.h>
#include <stdlib.h>

#include "error.h"
#include "log.h"

#define AGENT_SANDBOX_BACKEND_NAME "agent-sandbox"
#define NOT_IMPLEMENTED "agent-sandbox backend: not implemented yet"

struct sbx_executor {
	int unused;
};

static int agent_sandbox_open(const struct sbx_host *host, const struct sbx_open_options *options,
			      struct sbx_executor **executor, struct sbx_error *error)
{
	struct sbx_executor *opened;

	if (host != NULL && SBX_HAS_FIELD(host, struct sbx_host, log_level))
		sbx_log_set_sink(host->log, host->log_userdata, (enum sbx_log_level) host->log_level);
	opened = calloc(1, sizeof(*opened));
	if (opened == NULL)
		return sbx_error_errno(error, ENOMEM, "cannot open the agent-sandbox backend");
	*executor = opened;
	return 0;
}

static void agent_sandbox_close(struct sbx_executor *executor)
{
	free(executor);
}

static int agent_sandbox_prepare(struct sbx_executor *executor, const struct sbx_job_spec *spec,
				 struct sbx_error *error)
{
	return sbx_error_set(error, SBX_ERROR_SYSTEM, NOT_IMPLEMENTED);
}

static int agent_sandbox_exec(struct sbx_executor *executor, const struct sbx_exec_spec *spec,
			      int *exit_status, struct sbx_error *error)
{
	return sbx_error_set(error, SBX_ERROR_SYSTEM, NOT_IMPLEMENTED);
}

static int agent_sandbox_destroy(struct sbx_executor *executor, const char *id,
				 struct sbx_error *error)
{
	return sbx_error_set(error, SBX_ERROR_SYSTEM, NOT_IMPLEMENTED);
}

static int agent_sandbox_list(struct sbx_executor *executor, sbx_list_fn callback,
			      void *userdata, struct sbx_error *error)
{
	/* Nothing can have been created yet, so there is nothing to list. */
	return 0;
}

static int agent_sandbox_check(struct sbx_executor *executor, sbx_check_fn callback,
			       void *userdata, struct sbx_error *error)
{
	if (callback != NULL)
		callback(userdata, SBX_CHECK_FAILED, "agent-sandbox backend", NOT_IMPLEMENTED,
			 "use the local backend");
	return sbx_error_set(error, SBX_ERROR_SYSTEM, NOT_IMPLEMENTED);
}

static const struct sbx_executor_ops agent_sandbox_ops = {
	.struct_size = sizeof(struct sbx_executor_ops),
	.abi_version = SBX_EXECUTOR_ABI_VERSION,
	.backend_name = AGENT_SANDBOX_BACKEND_NAME,
	.backend_version = SBX_VERSION,
	.open = agent_sandbox_open,
	.close = agent_sandbox_close,
	.prepare = agent_sandbox_prepare,
	.exec = agent_sandbox_exec,
	.destroy = agent_sandbox_destroy,
	.list = agent_sandbox_list,
	.check = agent_sandbox_check,
};

SBX_EXPORT int sbx_executor_entry(uint32_t host_abi_version, const struct sbx_executor_ops **ops,
				  struct sbx_error *error)
{
	if (host_abi_version != SBX_EXECUTOR_ABI_VERSION)
		return sbx_error_set(error, SBX_ERROR_ABI,
				     "the host speaks executor ABI version %u, but "
				     "sbx-agent-sandbox.so speaks version %u; install matching "
				     "versions of sbx and its plugins",
				     host_abi_version, SBX_EXECUTOR_ABI_VERSION);
	*ops = &agent_sandbox_ops;
	return 0;
}
