/* SPDX-License-Identifier: MIT */
/*
 * The sandbox itself: a SandboxClaim against a warm pool, or a Sandbox built from the
 * configured pod template, then a watch until it is Ready and the pod it runs in.
 */
#include <errno.h>
#include <inttypes.h>
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
#include "k8s/watch.h"

/* Ready=False reasons after which the sandbox never becomes ready: the claim's own input
 * errors, expiry, and a pod that ended (the controller does not recreate a finished pod). */
static const char *const terminal_reasons[] = {
	"InvalidMetadata",   "EnvVarsInjectionRejected", "VolumeClaimTemplatesError",
	"ClaimExpired",	     "SandboxExpired",		 "PodFailed",
	"PodSucceeded",	     "TemplateNotFound",	 "WarmPoolNotFound",
	NULL,
};

static char *collection_path(const char *group_version, const char *namespace,
			     const char *plural)
{
	char *path = NULL;

	if (asprintf(&path, "/apis/%s/namespaces/%s/%s", group_version, namespace, plural) < 0)
		return NULL;
	return path;
}

static char *object_path(const char *group_version, const char *namespace, const char *plural,
			 const char *name)
{
	char *path = NULL;

	if (asprintf(&path, "/apis/%s/namespaces/%s/%s/%s", group_version, namespace, plural,
		     name) < 0)
		return NULL;
	return path;
}

static struct json_object *claim_body(struct sbx_executor *executor,
				      const struct as_sandbox *sandbox,
				      const struct sbx_job_spec *spec)
{
	const struct sbx_agent_sandbox_config *settings = &executor->config->agent_sandbox;
	struct json_object *body = json_object_new_object(), *metadata, *lifecycle, *extra;
	char backstop[64];

	if (body == NULL)
		return NULL;
	as_format_time(sandbox->backstop, backstop, sizeof(backstop));
	as_json_add_string(body, "apiVersion", AS_EXTENSIONS_GROUP_VERSION);
	as_json_add_string(body, "kind", "SandboxClaim");
	metadata = as_json_object_path(body, "metadata");
	lifecycle = as_json_object_path(body, "spec.lifecycle");
	extra = as_json_object_path(body, "spec.additionalPodMetadata");
	if (metadata == NULL || lifecycle == NULL || extra == NULL ||
	    as_json_add_string(metadata, "name", sandbox->claim) < 0 ||
	    as_json_add_string(as_json_object_path(body, "spec.warmPoolRef"), "name",
			       sandbox->pool) < 0 ||
	    as_json_add_string(lifecycle, "shutdownTime", backstop) < 0 ||
	    as_json_add_string(lifecycle, "shutdownPolicy", "Delete") < 0)
		goto fail;
	json_object_object_add(metadata, "labels",
			       as_owner_labels(executor->config, sandbox->id, spec->owner));
	json_object_object_add(metadata, "annotations", as_string_map_json(&settings->annotations));
	json_object_object_add(extra, "labels", as_string_map_json(&settings->pod_labels));
	json_object_object_add(extra, "annotations", as_string_map_json(&settings->annotations));
	return body;

fail:
	json_object_put(body);
	return NULL;
}

/* The container the job runs in: agent_sandbox.container, else the first. */
static struct json_object *job_container(const struct sbx_agent_sandbox_config *settings,
					 struct json_object *pod_spec)
{
	struct json_object *containers = as_json_get(pod_spec, "containers");

	if (containers == NULL || !json_object_is_type(containers, json_type_array))
		return NULL;
	for (size_t i = 0; i < json_object_array_length(containers); i++) {
		struct json_object *container = json_object_array_get_idx(containers, i);
		const char *name = as_json_string(container, "name");

		if (settings->container == NULL ||
		    (name != NULL && strcmp(name, settings->container) == 0))
			return container;
	}
	return NULL;
}

static struct json_object *sandbox_body(struct sbx_executor *executor,
					const struct as_sandbox *sandbox,
					const struct sbx_job_spec *spec, struct sbx_error *error)
{
	const struct sbx_agent_sandbox_config *settings = &executor->config->agent_sandbox;
	struct json_object *body = json_object_new_object(), *metadata, *template = NULL;
	struct json_object *pod_metadata, *pod_spec, *container, *labels, *annotations;
	char backstop[64];

	if (body == NULL ||
	    json_object_deep_copy(settings->pod_template, &template, NULL) != 0) {
		json_object_put(body);
		sbx_error_errno(error, ENOMEM, "Sandbox %s", sandbox->sandbox);
		return NULL;
	}
	as_format_time(sandbox->backstop, backstop, sizeof(backstop));
	as_json_add_string(body, "apiVersion", AS_SANDBOX_GROUP_VERSION);
	as_json_add_string(body, "kind", "Sandbox");
	metadata = as_json_object_path(body, "metadata");
	as_json_add_string(metadata, "name", sandbox->sandbox);
	json_object_object_add(metadata, "labels",
			       as_owner_labels(executor->config, sandbox->id, spec->owner));
	json_object_object_add(metadata, "annotations", as_string_map_json(&settings->annotations));

	pod_metadata = as_json_object_path(template, "metadata");
	pod_spec = as_json_object_path(template, "spec");
	labels = as_json_object_path(pod_metadata, "labels");
	annotations = as_json_object_path(pod_metadata, "annotations");
	for (size_t i = 0; i < settings->pod_labels.count; i++)
		as_json_add_string(labels, settings->pod_labels.keys[i],
				   settings->pod_labels.values[i]);
	for (size_t i = 0; i < settings->annotations.count; i++)
		as_json_add_string(annotations, settings->annotations.keys[i],
				   settings->annotations.values[i]);
	if (settings->disruption_protection == SBX_DISRUPTION_SHARED)
		as_json_add_string(labels, AS_LABEL_SHARED_PDB, AS_SHARED_PDB_VALUE);

	container = job_container(settings, pod_spec);
	if (container == NULL) {
		json_object_put(template);
		json_object_put(body);
		sbx_error_set(error, SBX_ERROR_INVALID,
			      "agent_sandbox.pod_template has no container named \"%s\"; fix "
			      "agent_sandbox.container",
			      settings->container != NULL ? settings->container : "");
		return NULL;
	}
	as_json_add_string(container, "image", spec->image);
	if (settings->resources != NULL)
		json_object_object_add(container, "resources", json_object_get(settings->resources));
	if (settings->runtime_class_name != NULL)
		as_json_add_string(pod_spec, "runtimeClassName", settings->runtime_class_name);
	if (settings->node_selector.count > 0)
		json_object_object_add(pod_spec, "nodeSelector",
				       as_string_map_json(&settings->node_selector));
	if (settings->tolerations != NULL)
		json_object_object_add(pod_spec, "tolerations",
				       json_object_get(settings->tolerations));
	if (settings->service_account != NULL)
		as_json_add_string(pod_spec, "serviceAccountName", settings->service_account);
	/* A Sandbox made without a template gets none of the controller's secure defaults. */
	json_object_object_add(pod_spec, "automountServiceAccountToken",
			       json_object_new_boolean(settings->automount_service_account_token));
	if (as_json_get(pod_spec, "restartPolicy") == NULL)
		as_json_add_string(pod_spec, "restartPolicy", "Never");

	json_object_object_add(as_json_object_path(body, "spec"), "podTemplate", template);
	as_json_add_string(as_json_object_path(body, "spec"), "shutdownTime", backstop);
	as_json_add_string(as_json_object_path(body, "spec"), "shutdownPolicy", "Delete");
	return body;
}

/* After a create whose response was lost, the retry gets 409: the object is ours when it
 * carries our id label. */
static int adopt_existing(struct sbx_executor *executor, const char *path, const char *id,
			  struct json_object **result, struct sbx_error *error)
{
	struct json_object *existing = NULL;
	struct k8s_status status;
	const char *owner;

	if (k8s_rest_get(executor->client, path, as_deadline(30), &existing, &status, error) < 0)
		return -1;
	owner = as_json_map_value(existing, "metadata.labels", AS_LABEL_ID);
	if (owner == NULL || strcmp(owner, id) != 0) {
		json_object_put(existing);
		return sbx_error_set(error, SBX_ERROR_SYSTEM,
				     "%s exists and was not created for sandbox %s; delete it", path,
				     id);
	}
	*result = existing;
	return 0;
}

int as_sandbox_create(struct sbx_executor *executor, struct as_sandbox *sandbox,
		      const struct sbx_job_spec *spec, char **resource_version,
		      struct sbx_error *error)
{
	_cleanup_free_ char *collection = NULL, *path = NULL;
	struct json_object *body, *created = NULL;
	struct k8s_status status;
	const char *uid, *version;
	char what[256];

	if (sandbox->direct) {
		collection = collection_path(AS_SANDBOX_GROUP_VERSION, sandbox->namespace,
					     "sandboxes");
		path = object_path(AS_SANDBOX_GROUP_VERSION, sandbox->namespace, "sandboxes",
				   sandbox->sandbox);
		body = sandbox_body(executor, sandbox, spec, error);
		snprintf(what, sizeof(what), "create Sandbox %s/%s", sandbox->namespace,
			 sandbox->sandbox);
	} else {
		collection = collection_path(AS_EXTENSIONS_GROUP_VERSION, sandbox->namespace,
					     "sandboxclaims");
		path = object_path(AS_EXTENSIONS_GROUP_VERSION, sandbox->namespace,
				   "sandboxclaims", sandbox->claim);
		body = claim_body(executor, sandbox, spec);
		if (body == NULL)
			sbx_error_errno(error, ENOMEM, "SandboxClaim %s", sandbox->claim);
		snprintf(what, sizeof(what), "create SandboxClaim %s/%s", sandbox->namespace,
			 sandbox->claim);
	}
	if (body == NULL)
		return -1;
	if (collection == NULL || path == NULL) {
		json_object_put(body);
		return sbx_error_errno(error, ENOMEM, "%s", what);
	}

	if (k8s_rest_create(executor->client, collection, body, as_deadline(60), &created,
			    &status, error) < 0) {
		json_object_put(body);
		if (status.status_class != K8S_STATUS_ALREADY_EXISTS)
			return as_api_error(error, &status, what);
		if (adopt_existing(executor, path, sandbox->id, &created, error) < 0)
			return -1;
	} else {
		json_object_put(body);
	}
	uid = as_json_string(created, "metadata.uid");
	version = as_json_string(created, "metadata.resourceVersion");
	sandbox->owner_uid = uid != NULL ? strdup(uid) : NULL;
	*resource_version = strdup(version != NULL ? version : "0");
	json_object_put(created);
	if (sandbox->owner_uid == NULL || *resource_version == NULL)
		return sbx_error_set(error, SBX_ERROR_SYSTEM,
				     "%s: the response has no metadata.uid", what);
	return 0;
}

struct ready_watch {
	struct sbx_executor *executor;
	struct as_sandbox *sandbox;
	const char *path; /* collection */
	const char *kind;
	int64_t deadline;
	int ready;
	char sandbox_name[256];
	char pod_name[256];
	char reason[64];
	char message[256];
};

static int is_terminal(const char *reason)
{
	for (size_t i = 0; reason != NULL && terminal_reasons[i] != NULL; i++)
		if (strcmp(reason, terminal_reasons[i]) == 0)
			return 1;
	return 0;
}

/* Looks at one state of the claim or Sandbox: 1 when ready, 0 to wait, -1 when it never
 * will be. */
static int judge(struct ready_watch *watch, struct json_object *object, struct sbx_error *error)
{
	struct json_object *ready = as_condition(object, "Ready");
	const char *state = ready != NULL ? as_json_string(ready, "status") : NULL;
	const char *reason = ready != NULL ? as_json_string(ready, "reason") : NULL;
	const char *message = ready != NULL ? as_json_string(ready, "message") : NULL;
	const char *bound;

	snprintf(watch->reason, sizeof(watch->reason), "%s", reason != NULL ? reason : "");
	snprintf(watch->message, sizeof(watch->message), "%s", message != NULL ? message : "");
	if (is_terminal(reason))
		return sbx_error_set(error, SBX_ERROR_SYSTEM,
				     "%s %s/%s failed: Ready is False with reason %s: %s%s",
				     watch->kind, watch->sandbox->namespace,
				     watch->sandbox->direct ? watch->sandbox->sandbox
							    : watch->sandbox->claim,
				     reason, message != NULL ? message : "",
				     strcmp(reason, "InvalidMetadata") == 0
					     ? "; check agent_sandbox.pod_labels and annotations"
					     : "");
	if (state == NULL || strcmp(state, "True") != 0)
		return 0;
	if (watch->sandbox->direct) {
		const char *pod = as_json_map_value(object, "metadata.annotations",
						    AS_ANNOTATION_POD_NAME);

		snprintf(watch->sandbox_name, sizeof(watch->sandbox_name), "%s",
			 watch->sandbox->sandbox);
		snprintf(watch->pod_name, sizeof(watch->pod_name), "%s",
			 pod != NULL && pod[0] != '\0' ? pod : watch->sandbox->sandbox);
		return 1;
	}
	/* A warm adoption writes the name and Ready=True in the same status update. */
	bound = as_json_string(object, "status.sandbox.name");
	if (bound == NULL || bound[0] == '\0')
		return 0;
	snprintf(watch->sandbox_name, sizeof(watch->sandbox_name), "%s", bound);
	return 1;
}

static int on_ready_event(void *userdata, const char *type, struct json_object *object,
			  struct sbx_error *error)
{
	struct ready_watch *watch = userdata;
	int verdict;

	if (strcmp(type, "DELETED") == 0)
		return sbx_error_set(error, SBX_ERROR_SYSTEM,
				     "%s %s/%s was deleted while sbx waited for it to become ready",
				     watch->kind, watch->sandbox->namespace,
				     watch->sandbox->direct ? watch->sandbox->sandbox
							    : watch->sandbox->claim);
	verdict = judge(watch, object, error);
	if (verdict < 0)
		return -1;
	watch->ready = verdict;
	return verdict;
}

/* After 410 Gone: read the object again and judge it, then watch from the list. */
static int relist_ready(void *userdata, char **resource_version, struct sbx_error *error)
{
	struct ready_watch *watch = userdata;
	struct k8s_list_options options = { 0 };
	struct json_object *list = NULL, *items;
	struct k8s_status status;
	char selector[300];
	const char *version;

	snprintf(selector, sizeof(selector), "metadata.name=%s",
		 watch->sandbox->direct ? watch->sandbox->sandbox : watch->sandbox->claim);
	options.field_selector = selector;
	if (k8s_rest_list(watch->executor->client, watch->path, &options, watch->deadline, &list,
			  &status, error) < 0)
		return -1;
	items = as_json_get(list, "items");
	if (items != NULL && json_object_array_length(items) > 0) {
		int verdict = judge(watch, json_object_array_get_idx(items, 0), error);

		if (verdict < 0) {
			json_object_put(list);
			return -1;
		}
		watch->ready = verdict;
	}
	version = as_json_string(list, "metadata.resourceVersion");
	*resource_version = strdup(version != NULL ? version : "0");
	json_object_put(list);
	return *resource_version != NULL ? 0 : -1;
}

/* Reads the pod name from the Sandbox's pod-name annotation (the Sandbox's name when absent). */
static int fetch_pod_name(struct sbx_executor *executor, struct as_sandbox *sandbox,
			  char **pod_name, struct sbx_error *error)
{
	_cleanup_free_ char *path = object_path(AS_SANDBOX_GROUP_VERSION, sandbox->namespace,
						"sandboxes", sandbox->sandbox);
	struct json_object *object = NULL;
	struct k8s_status status;
	const char *pod;
	char what[300];

	snprintf(what, sizeof(what), "get Sandbox %s/%s", sandbox->namespace, sandbox->sandbox);
	if (path == NULL)
		return sbx_error_errno(error, ENOMEM, "%s", what);
	if (k8s_rest_get(executor->client, path, as_deadline(30), &object, &status, error) < 0)
		return as_api_error(error, &status, what);
	pod = as_json_map_value(object, "metadata.annotations", AS_ANNOTATION_POD_NAME);
	*pod_name = strdup(pod != NULL && pod[0] != '\0' ? pod : sandbox->sandbox);
	json_object_put(object);
	return *pod_name != NULL ? 0 : sbx_error_errno(error, ENOMEM, "%s", what);
}

int as_sandbox_wait_ready(struct sbx_executor *executor, struct as_sandbox *sandbox,
			  const char *resource_version, int *warm, struct sbx_error *error)
{
	_cleanup_free_ char *collection = NULL;
	struct ready_watch watch;
	struct k8s_watch_options options = { 0 };
	struct k8s_watch_callbacks callbacks = { .event = on_ready_event, .relist = relist_ready };
	struct k8s_status status;
	char selector[300], what[340];
	int64_t timeout = executor->config->agent_sandbox.ready_timeout;

	memset(&watch, 0, sizeof(watch));
	watch.executor = executor;
	watch.sandbox = sandbox;
	watch.kind = sandbox->direct ? "Sandbox" : "SandboxClaim";
	watch.deadline = as_deadline(timeout);
	collection = sandbox->direct
			     ? collection_path(AS_SANDBOX_GROUP_VERSION, sandbox->namespace,
					       "sandboxes")
			     : collection_path(AS_EXTENSIONS_GROUP_VERSION, sandbox->namespace,
					       "sandboxclaims");
	if (collection == NULL)
		return sbx_error_errno(error, ENOMEM, "watch");
	watch.path = collection;
	snprintf(selector, sizeof(selector), "metadata.name=%s",
		 sandbox->direct ? sandbox->sandbox : sandbox->claim);
	options.path = collection;
	options.field_selector = selector;
	options.resource_version = resource_version;
	options.timeout_seconds = 60;
	options.deadline_ms = watch.deadline;

	if (k8s_watch_run(executor->client, &options, &callbacks, &watch, NULL, &status,
			  error) < 0) {
		if (status.status_class == K8S_STATUS_TIMEOUT && !watch.ready)
			return sbx_error_set(error, SBX_ERROR_SYSTEM,
					     "%s %s/%s is not ready after %" PRId64 " s (Ready "
					     "reason %s: %s); raise agent_sandbox.ready_timeout or "
					     "check the warm pool and the pod's events",
					     watch.kind, sandbox->namespace, selector + 14, timeout,
					     watch.reason[0] != '\0' ? watch.reason : "none",
					     watch.message);
		if (status.status_class == K8S_STATUS_OK || watch.ready)
			return -1;
		snprintf(what, sizeof(what), "watch %s %s/%s", watch.kind, sandbox->namespace,
			 selector + 14);
		return as_api_error(error, &status, what);
	}

	*warm = 0;
	if (!sandbox->direct) {
		/* A cold start creates a Sandbox named like the claim; a warm adoption binds a
		 * pool member, which has a generated name. The pod is named like its Sandbox
		 * unless the Sandbox's pod-name annotation says otherwise, which
		 * as_sandbox_read_pod() checks through the pod's owner, so no GET of the Sandbox
		 * is needed here. */
		*warm = strcmp(watch.sandbox_name, sandbox->claim) != 0;
		free(sandbox->sandbox);
		sandbox->sandbox = strdup(watch.sandbox_name);
		snprintf(watch.pod_name, sizeof(watch.pod_name), "%s", watch.sandbox_name);
	}
	free(sandbox->pod);
	sandbox->pod = strdup(watch.pod_name);
	if (sandbox->sandbox == NULL || sandbox->pod == NULL)
		return sbx_error_errno(error, ENOMEM, "sandbox %s", sandbox->id);
	return 0;
}

/* Returns 1 when POD's controller is the Sandbox NAME. */
static int pod_owned_by(struct json_object *pod, const char *name)
{
	struct json_object *owners = as_json_get(pod, "metadata.ownerReferences");

	for (size_t i = 0; owners != NULL && json_object_is_type(owners, json_type_array) &&
			   i < json_object_array_length(owners);
	     i++) {
		struct json_object *owner = json_object_array_get_idx(owners, i);
		const char *kind = as_json_string(owner, "kind");
		const char *owner_name = as_json_string(owner, "name");
		struct json_object *controller = as_json_get(owner, "controller");

		if (kind != NULL && strcmp(kind, "Sandbox") == 0 && owner_name != NULL &&
		    strcmp(owner_name, name) == 0 && controller != NULL &&
		    json_object_get_boolean(controller))
			return 1;
	}
	return 0;
}

static int get_pod(struct sbx_executor *executor, struct as_sandbox *sandbox,
		   struct json_object **pod, struct k8s_status *status, struct sbx_error *error)
{
	_cleanup_free_ char *path = NULL;
	char what[300];

	if (asprintf(&path, "/api/v1/namespaces/%s/pods/%s", sandbox->namespace, sandbox->pod) < 0)
		return sbx_error_errno(error, ENOMEM, "pod %s", sandbox->pod);
	snprintf(what, sizeof(what), "get pod %s/%s", sandbox->namespace, sandbox->pod);
	if (k8s_rest_get(executor->client, path, as_deadline(30), pod, status, error) < 0)
		return as_api_error(error, status, what);
	return 0;
}

int as_sandbox_read_pod(struct sbx_executor *executor, struct as_sandbox *sandbox,
			struct json_object **pod_out, struct sbx_error *error)
{
	const struct sbx_agent_sandbox_config *settings = &executor->config->agent_sandbox;
	struct json_object *pod = NULL, *container;
	struct k8s_status status;
	const char *uid, *name;
	int owned;

	memset(&status, 0, sizeof(status));
	if (get_pod(executor, sandbox, &pod, &status, error) < 0 &&
	    status.status_class != K8S_STATUS_NOT_FOUND)
		return -1;
	owned = pod != NULL && pod_owned_by(pod, sandbox->sandbox);
	if (!owned) {
		/* The pod named like the Sandbox is missing or belongs to another Sandbox: the
		 * Sandbox's pod-name annotation names the right one. */
		_cleanup_free_ char *pod_name = NULL;

		json_object_put(pod);
		pod = NULL;
		sbx_error_clear(error);
		if (fetch_pod_name(executor, sandbox, &pod_name, error) < 0)
			return -1;
		free(sandbox->pod);
		sandbox->pod = pod_name;
		pod_name = NULL;
		if (get_pod(executor, sandbox, &pod, &status, error) < 0)
			return -1;
		if (!pod_owned_by(pod, sandbox->sandbox)) {
			json_object_put(pod);
			return sbx_error_set(error, SBX_ERROR_SYSTEM,
					     "pod %s/%s is not controlled by Sandbox %s; delete "
					     "the stray pod",
					     sandbox->namespace, sandbox->pod, sandbox->sandbox);
		}
	}
	uid = as_json_string(pod, "metadata.uid");
	container = job_container(settings, as_json_get(pod, "spec"));
	name = container != NULL ? as_json_string(container, "name") : NULL;
	if (uid == NULL || name == NULL) {
		json_object_put(pod);
		return sbx_error_set(error, SBX_ERROR_SYSTEM,
				     "pod %s/%s has no uid or no container%s%s; fix "
				     "agent_sandbox.container or the template",
				     sandbox->namespace, sandbox->pod,
				     settings->container != NULL ? " named " : "",
				     settings->container != NULL ? settings->container : "");
	}
	free(sandbox->pod_uid);
	free(sandbox->container);
	sandbox->pod_uid = strdup(uid);
	sandbox->container = strdup(name);
	if (pod_out != NULL)
		*pod_out = pod;
	else
		json_object_put(pod);
	if (sandbox->pod_uid == NULL || sandbox->container == NULL)
		return sbx_error_errno(error, ENOMEM, "pod %s", sandbox->pod);
	return 0;
}
