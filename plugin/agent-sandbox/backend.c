/* SPDX-License-Identifier: MIT */
/* The agent-sandbox backend's operations table and the plugin's only exported symbol. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "agent_sandbox.h"
#include "backend.h"
#include "error.h"
#include "log.h"
#include "util.h"

#include "k8s/kubeconfig.h"
#include "k8s/rest.h"

int64_t as_deadline(int64_t seconds)
{
	return sbx_monotonic_ms() + seconds * 1000;
}

int as_connect(struct sbx_executor *executor, struct sbx_error *error)
{
	const struct sbx_agent_sandbox_config *settings = &executor->config->agent_sandbox;
	struct k8s_kubeconfig_options options = {
		.path = settings->kubeconfig,
		.context = settings->context,
		.namespace = settings->namespace,
	};
	struct k8s_config *config = NULL;

	if (executor->client != NULL)
		return 0;
	if (settings->in_cluster) {
		if (k8s_kubeconfig_in_cluster(NULL, &config, error) < 0)
			return sbx_error_prefix(error, "agent_sandbox.in_cluster");
	} else if (k8s_kubeconfig_load_default(&options, NULL, &config, error) < 0) {
		return -1;
	}
	/* The in-cluster configuration takes the service account's namespace. */
	if (settings->namespace != NULL && settings->in_cluster) {
		free(config->namespace);
		config->namespace = strdup(settings->namespace);
		if (config->namespace == NULL) {
			k8s_kubeconfig_free(config);
			return sbx_error_errno(error, ENOMEM, "agent-sandbox backend");
		}
	}
	if (k8s_client_new(config, &executor->client, error) < 0) {
		k8s_kubeconfig_free(config);
		return -1;
	}
	executor->k8s_config = config;
	executor->namespace = config->namespace != NULL && config->namespace[0] != '\0'
				      ? config->namespace
				      : "default";
	sbx_debug("agent-sandbox: API server %s (%s), namespace %s", config->server_url,
		  config->origin, executor->namespace);
	return 0;
}

static int agent_sandbox_open(const struct sbx_host *host, const struct sbx_open_options *options,
			      struct sbx_executor **executor, struct sbx_error *error)
{
	struct sbx_executor *opened;
	char *state_dir;

	opened = calloc(1, sizeof(*opened));
	if (opened == NULL)
		return sbx_error_errno(error, ENOMEM, "cannot open the agent-sandbox backend");
	if (sbx_backend_open_common("agent-sandbox", host, options, &opened->config,
				    &opened->journal, &state_dir, error) < 0) {
		free(opened);
		return -1;
	}
	free(state_dir);
	if (as_settings_check(opened->config, error) < 0) {
		sbx_journal_close(&opened->journal);
		sbx_config_free(opened->config);
		free(opened);
		return -1;
	}
	*executor = opened;
	return 0;
}

static void agent_sandbox_close(struct sbx_executor *executor)
{
	if (executor == NULL)
		return;
	k8s_client_free(executor->client);
	k8s_kubeconfig_free(executor->k8s_config);
	sbx_journal_close(&executor->journal);
	sbx_config_free(executor->config);
	free(executor);
}

static const struct sbx_executor_ops agent_sandbox_ops = {
	.struct_size = sizeof(struct sbx_executor_ops),
	.abi_version = SBX_EXECUTOR_ABI_VERSION,
	.backend_name = AS_BACKEND_NAME,
	.backend_version = SBX_VERSION,
	.open = agent_sandbox_open,
	.close = agent_sandbox_close,
	.prepare = as_prepare,
	.exec = as_exec,
	.destroy = as_destroy,
	.list = as_list,
	.check = as_check,
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
