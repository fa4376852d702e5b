/* SPDX-License-Identifier: MIT */
/*
 * The per-job PodDisruptionBudget: maxUnavailable 0 for exactly the job's pod, so a node drain
 * waits for the job instead of evicting it. It is owned by the claim or Sandbox, so the
 * garbage collector removes it with them.
 */
#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>

#include "agent_sandbox.h"
#include "cleanup.h"
#include "error.h"
#include "log.h"

#include "k8s/rest.h"
#include "k8s/status.h"

int as_pdb_create(struct sbx_executor *executor, struct as_sandbox *sandbox,
		  struct sbx_error *error)
{
	_cleanup_free_ char *path = NULL;
	struct json_object *body = json_object_new_object(), *metadata, *spec;
	struct k8s_status status;
	char what[300];
	int rc;

	if (body == NULL || asprintf(&path, "/apis/policy/v1/namespaces/%s/poddisruptionbudgets",
				     sandbox->namespace) < 0) {
		json_object_put(body);
		return sbx_error_errno(error, ENOMEM, "PodDisruptionBudget");
	}
	as_json_add_string(body, "apiVersion", "policy/v1");
	as_json_add_string(body, "kind", "PodDisruptionBudget");
	metadata = as_json_object_path(body, "metadata");
	as_json_add_string(metadata, "name", sandbox->pdb);
	json_object_object_add(metadata, "labels",
			       as_owner_labels(executor->config, sandbox->id, NULL));
	json_object_object_add(metadata, "ownerReferences", as_owner_reference(sandbox));
	spec = as_json_object_path(body, "spec");
	json_object_object_add(spec, "maxUnavailable", json_object_new_int(0));
	as_json_add_string(as_json_object_path(spec, "selector.matchLabels"), AS_LABEL_NAME_HASH,
			   sandbox->name_hash);

	snprintf(what, sizeof(what), "create PodDisruptionBudget %s/%s", sandbox->namespace,
		 sandbox->pdb);
	rc = k8s_rest_create(executor->client, path, body, as_deadline(60), NULL, &status, error);
	json_object_put(body);
	if (rc < 0 && status.status_class != K8S_STATUS_ALREADY_EXISTS)
		return as_api_error(error, &status, what);
	sbx_debug("PodDisruptionBudget %s: maxUnavailable 0 for pod %s", sandbox->pdb,
		  sandbox->pod != NULL ? sandbox->pod : sandbox->sandbox);
	return 0;
}
