/* SPDX-License-Identifier: MIT */
/*
 * The check of a warm pool's SandboxTemplate for `sbx doctor`: its NetworkPolicy management must
 * leave egress to sbx. A job does not read the template: the policy a managed template makes
 * selects the job's pod, so the job's check of the other policies (netpol.c) finds it, as it
 * is in force, one request fewer per job.
 */
#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent_sandbox.h"
#include "cleanup.h"
#include "error.h"
#include "log.h"
#include "util.h"

#include "k8s/rest.h"
#include "k8s/status.h"

/* A Kubernetes object name is at most 253 characters. */
#define NAME_MAX_LENGTH 253

static char *object_path(const char *namespace, const char *plural, const char *name)
{
	char *path = NULL;

	if (asprintf(&path, "/apis/%s/namespaces/%s/%s/%s", AS_EXTENSIONS_GROUP_VERSION,
		     namespace, plural, name) < 0)
		return NULL;
	return path;
}

/* NetworkPolicies add up: a template policy that allows egress would widen every job's
 * allow-list, so only templates that leave the policy to sbx are used. */
static int check_management(struct sbx_executor *executor, const char *pool,
			    struct json_object *template, struct sbx_error *error)
{
	const char *name = as_json_string(template, "metadata.name");
	const char *management = as_json_string(template, "spec.networkPolicyManagement");
	struct json_object *egress = as_json_get(template, "spec.networkPolicy.egress");

	if (management != NULL && strcmp(management, "Unmanaged") == 0)
		return 0;
	if (egress != NULL && json_object_is_type(egress, json_type_array) &&
	    json_object_array_length(egress) == 0)
		return 0;
	return sbx_error_set(error, SBX_ERROR_SYSTEM,
			     "SandboxTemplate %s/%s (of warm pool %s) lets the controller manage "
			     "a NetworkPolicy that allows egress%s, which would add to every job's "
			     "allow-list; set spec.networkPolicyManagement: Unmanaged (or an empty "
			     "spec.networkPolicy.egress list) in the template",
			     executor->namespace, name != NULL ? name : "?", pool,
			     egress == NULL ? " to every public address" : "");
}

static int get_template(struct sbx_executor *executor, const char *name,
			struct json_object **template, struct k8s_status *status,
			struct sbx_error *error)
{
	_cleanup_free_ char *path = object_path(executor->namespace, "sandboxtemplates", name);
	char what[NAME_MAX_LENGTH + 64];

	if (path == NULL)
		return sbx_error_errno(error, ENOMEM, "template %s", name);
	snprintf(what, sizeof(what), "get SandboxTemplate %s/%s", executor->namespace, name);
	if (k8s_rest_get(executor->client, path, as_deadline(30), template, status, error) < 0)
		return sbx_error_prefix(error, "%s", what);
	return 0;
}

/* Reads POOL, then its template; *TEMPLATE_OUT gets the template after the check passed. */
static int check_through_pool(struct sbx_executor *executor, const char *pool,
			      struct json_object **template_out, struct as_template_failure *failure,
			      struct sbx_error *error)
{
	_cleanup_free_ char *pool_path = object_path(executor->namespace, "sandboxwarmpools",
						     pool);
	struct json_object *pool_object = NULL, *template = NULL;
	struct k8s_status status;
	const char *template_name;
	char what[256];

	if (pool_path == NULL)
		return sbx_error_errno(error, ENOMEM, "warm pool %s", pool);
	snprintf(what, sizeof(what), "get SandboxWarmPool %s/%s", executor->namespace, pool);
	if (k8s_rest_get(executor->client, pool_path, as_deadline(30), &pool_object, &status,
			 error) < 0) {
		failure->resource = "sandboxwarmpools";
		failure->status = status;
		if (status.status_class == K8S_STATUS_NOT_FOUND)
			return sbx_error_set(error, SBX_ERROR_NOT_FOUND,
					     "SandboxWarmPool %s/%s not found", executor->namespace,
					     pool);
		return sbx_error_prefix(error, "%s", what);
	}
	template_name = as_json_string(pool_object, "spec.sandboxTemplateRef.name");
	if (template_name == NULL) {
		json_object_put(pool_object);
		return sbx_error_set(error, SBX_ERROR_SYSTEM,
				     "SandboxWarmPool %s/%s names no spec.sandboxTemplateRef; set "
				     "spec.sandboxTemplateRef.name in the pool",
				     executor->namespace, pool);
	}
	if (get_template(executor, template_name, &template, &status, error) < 0) {
		failure->resource = "sandboxtemplates";
		failure->status = status;
		if (status.status_class == K8S_STATUS_NOT_FOUND)
			sbx_error_set(error, SBX_ERROR_NOT_FOUND,
				      "SandboxTemplate %s/%s, named by warm pool %s, not found",
				      executor->namespace, template_name, pool);
		json_object_put(pool_object);
		return -1;
	}
	json_object_put(pool_object);
	if (check_management(executor, pool, template, error) < 0) {
		json_object_put(template);
		return -1;
	}
	*template_out = template;
	return 0;
}

int as_template_check(struct sbx_executor *executor, const char *pool,
		      struct json_object **template_out, struct as_template_failure *failure,
		      struct sbx_error *error)
{
	struct json_object *template = NULL;

	memset(failure, 0, sizeof(*failure));
	if (check_through_pool(executor, pool, &template, failure, error) < 0)
		return -1;
	if (template_out != NULL)
		*template_out = template;
	else
		json_object_put(template);
	return 0;
}
