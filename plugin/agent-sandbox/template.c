/* SPDX-License-Identifier: MIT */
/*
 * The check of a warm pool's SandboxTemplate: its NetworkPolicy management must leave egress
 * to sbx. A job checks the template its pod was made from, which the pod's
 * sandbox-template-ref-hash label names. The pool's template name is remembered in the state
 * directory (agent-sandbox/pools/<pool>), so a job usually reads only the template, and the
 * label shows whether the remembered name is still right.
 */
#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent_sandbox.h"
#include "cleanup.h"
#include "error.h"
#include "log.h"
#include "util.h"

#include "k8s/rest.h"
#include "k8s/status.h"

#define AS_LABEL_TEMPLATE_REF_HASH "agents.x-k8s.io/sandbox-template-ref-hash"
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
		return as_api_error(error, status, what);
	return 0;
}

/* Reads POOL, then its template; *TEMPLATE_OUT gets the template after the check passed. */
static int check_through_pool(struct sbx_executor *executor, const char *pool,
			      struct json_object **template_out, struct sbx_error *error)
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
		if (status.status_class == K8S_STATUS_NOT_FOUND)
			return sbx_error_set(error, SBX_ERROR_SYSTEM,
					     "SandboxWarmPool %s/%s not found; create it (see "
					     "config-examples/kubernetes/warm-pool.yaml) or fix "
					     "agent_sandbox.warm_pools",
					     executor->namespace, pool);
		return as_api_error(error, &status, what);
	}
	template_name = as_json_string(pool_object, "spec.sandboxTemplateRef.name");
	if (template_name == NULL) {
		json_object_put(pool_object);
		return sbx_error_set(error, SBX_ERROR_SYSTEM,
				     "SandboxWarmPool %s/%s names no spec.sandboxTemplateRef",
				     executor->namespace, pool);
	}
	if (get_template(executor, template_name, &template, &status, error) < 0) {
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
		      struct json_object **template_out, struct sbx_error *error)
{
	struct json_object *template = NULL;

	if (check_through_pool(executor, pool, &template, error) < 0)
		return -1;
	if (template_out != NULL)
		*template_out = template;
	else
		json_object_put(template);
	return 0;
}

/* ---- the remembered template name of each pool ---- */

static char *memo_path(struct sbx_executor *executor, const char *pool)
{
	char *path = NULL;

	if (asprintf(&path, "%s/agent-sandbox/pools/%s", executor->journal.state_dir, pool) < 0)
		return NULL;
	return path;
}

static int valid_name(const char *name, size_t length)
{
	if (length == 0 || length > NAME_MAX_LENGTH)
		return 0;
	for (size_t i = 0; i < length; i++)
		if (!((name[i] >= 'a' && name[i] <= 'z') || (name[i] >= '0' && name[i] <= '9') ||
		      name[i] == '-' || name[i] == '.'))
			return 0;
	return 1;
}

/* Returns the remembered name, or NULL when there is none or it is unreadable. */
static char *memo_read(struct sbx_executor *executor, const char *pool)
{
	_cleanup_free_ char *path = memo_path(executor, pool);
	char *data = NULL;
	size_t length = 0;
	struct sbx_error error;

	sbx_error_clear(&error);
	if (path == NULL || sbx_read_file(path, NAME_MAX_LENGTH + 1, &data, &length, &error) < 0)
		return NULL;
	if (!valid_name(data, length)) {
		sbx_debug("%s: not a template name; reading the warm pool again", path);
		free(data);
		return NULL;
	}
	return data;
}

/* Remembering is an optimisation: a failure costs the next job one GET, so it is logged. */
static void memo_write(struct sbx_executor *executor, const char *pool, const char *name)
{
	_cleanup_free_ char *path = memo_path(executor, pool);
	struct sbx_error error;
	char *slash;

	if (path == NULL)
		return;
	sbx_error_clear(&error);
	slash = strrchr(path, '/');
	*slash = '\0';
	if (sbx_mkdir_p(path, 0700) < 0) {
		sbx_debug("cannot create %s: %s", path, strerror(errno));
		return;
	}
	*slash = '/';
	if (sbx_write_file_atomic(path, name, strlen(name), 0600, 0, &error) < 0)
		sbx_debug("cannot remember the template of warm pool %s: %s", pool, error.message);
}

static void memo_forget(struct sbx_executor *executor, const char *pool)
{
	_cleanup_free_ char *path = memo_path(executor, pool);

	if (path != NULL && unlink(path) < 0 && errno != ENOENT)
		sbx_debug("cannot remove %s: %s", path, strerror(errno));
}

int as_template_check_job(struct sbx_executor *executor, const char *pool, char **name,
			  struct sbx_error *error)
{
	_cleanup_free_ char *remembered = memo_read(executor, pool);
	struct json_object *template = NULL;
	struct k8s_status status;
	const char *template_name;

	if (remembered != NULL) {
		if (get_template(executor, remembered, &template, &status, error) == 0 &&
		    check_management(executor, pool, template, error) == 0) {
			json_object_put(template);
			*name = remembered;
			remembered = NULL;
			return 0;
		}
		/* The pool may point to another template now: read it again. */
		json_object_put(template);
		template = NULL;
		sbx_debug("remembered template %s of warm pool %s: %s; reading the pool again",
			  remembered, pool, error != NULL ? error->message : "");
		sbx_error_clear(error);
	}
	if (check_through_pool(executor, pool, &template, error) < 0)
		return -1;
	template_name = as_json_string(template, "metadata.name");
	*name = strdup(template_name != NULL ? template_name : "");
	json_object_put(template);
	if (*name == NULL)
		return sbx_error_errno(error, ENOMEM, "warm pool %s", pool);
	if (remembered == NULL || strcmp(remembered, *name) != 0)
		memo_write(executor, pool, *name);
	return 0;
}

int as_template_check_pod(struct sbx_executor *executor, const char *pool, char **name,
			  struct json_object *pod, const char *pod_name, struct sbx_error *error)
{
	const char *label = as_json_map_value(pod, "metadata.labels", AS_LABEL_TEMPLATE_REF_HASH);
	char hash[9];

	if (label == NULL)
		return sbx_error_set(error, SBX_ERROR_SYSTEM,
				     "pod %s/%s has no label " AS_LABEL_TEMPLATE_REF_HASH
				     ", so its SandboxTemplate is unknown; check that the Agent "
				     "Sandbox controller runs with its extensions",
				     executor->namespace, pod_name);
	as_name_hash(*name, hash);
	if (strcmp(label, hash) == 0)
		return 0;

	/* The remembered name is out of date: the pool points to another template. */
	sbx_info("pod %s was made from another template than %s; reading warm pool %s again",
		 pod_name, *name, pool);
	memo_forget(executor, pool);
	free(*name);
	*name = NULL;
	if (as_template_check_job(executor, pool, name, error) < 0)
		return -1;
	as_name_hash(*name, hash);
	if (strcmp(label, hash) != 0)
		return sbx_error_set(error, SBX_ERROR_SYSTEM,
				     "pod %s/%s was not made from SandboxTemplate %s of warm pool "
				     "%s (label " AS_LABEL_TEMPLATE_REF_HASH " is %s, not %s); "
				     "retry the job once the pool's sandboxes are replaced",
				     executor->namespace, pod_name, *name, pool, label, hash);
	return 0;
}
