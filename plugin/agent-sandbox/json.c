/* SPDX-License-Identifier: MIT */
/* Helpers over json-c for reading API objects and building request bodies. */
#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "agent_sandbox.h"
#include "error.h"

#include "k8s/status.h"

struct json_object *as_json_get(struct json_object *object, const char *path)
{
	char key[128];

	while (object != NULL && *path != '\0') {
		const char *dot = strchr(path, '.');
		size_t length = dot != NULL ? (size_t) (dot - path) : strlen(path);

		if (length >= sizeof(key) || !json_object_is_type(object, json_type_object))
			return NULL;
		memcpy(key, path, length);
		key[length] = '\0';
		if (!json_object_object_get_ex(object, key, &object))
			return NULL;
		path += length + (dot != NULL ? 1 : 0);
	}
	return object;
}

const char *as_json_string(struct json_object *object, const char *path)
{
	struct json_object *value = as_json_get(object, path);

	if (value == NULL || !json_object_is_type(value, json_type_string))
		return NULL;
	return json_object_get_string(value);
}

const char *as_json_map_value(struct json_object *object, const char *map_path, const char *key)
{
	struct json_object *map = as_json_get(object, map_path), *value;

	if (map == NULL || !json_object_is_type(map, json_type_object) ||
	    !json_object_object_get_ex(map, key, &value) ||
	    !json_object_is_type(value, json_type_string))
		return NULL;
	return json_object_get_string(value);
}

struct json_object *as_json_object_path(struct json_object *object, const char *path)
{
	char key[128];

	while (*path != '\0') {
		const char *dot = strchr(path, '.');
		size_t length = dot != NULL ? (size_t) (dot - path) : strlen(path);
		struct json_object *child;

		if (length >= sizeof(key))
			return NULL;
		memcpy(key, path, length);
		key[length] = '\0';
		if (!json_object_object_get_ex(object, key, &child) ||
		    !json_object_is_type(child, json_type_object)) {
			child = json_object_new_object();
			if (child == NULL)
				return NULL;
			json_object_object_add(object, key, child);
		}
		object = child;
		path += length + (dot != NULL ? 1 : 0);
	}
	return object;
}

struct json_object *as_condition(struct json_object *object, const char *type)
{
	struct json_object *conditions = as_json_get(object, "status.conditions");

	if (conditions == NULL || !json_object_is_type(conditions, json_type_array))
		return NULL;
	for (size_t i = 0; i < json_object_array_length(conditions); i++) {
		struct json_object *condition = json_object_array_get_idx(conditions, i);
		const char *kind = as_json_string(condition, "type");

		if (kind != NULL && strcmp(kind, type) == 0)
			return condition;
	}
	return NULL;
}

void as_name_hash(const char *name, char out[9])
{
	uint32_t hash = 2166136261u;

	for (const unsigned char *p = (const unsigned char *) name; *p != '\0'; p++) {
		hash ^= *p;
		hash *= 16777619u;
	}
	snprintf(out, 9, "%08x", hash);
}

int as_json_add_string(struct json_object *object, const char *key, const char *value)
{
	struct json_object *string = json_object_new_string(value);

	if (string == NULL)
		return -1;
	json_object_object_add(object, key, string);
	return 0;
}

/* A label value: at most 63 of [A-Za-z0-9_.-], starting and ending with a letter or digit. */
static int label_value_valid(const char *value)
{
	size_t length = strlen(value);

	if (length == 0 || length > 63)
		return 0;
	for (size_t i = 0; i < length; i++) {
		char c = value[i];
		int alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');

		if (!alnum && ((i == 0 || i == length - 1) || (c != '-' && c != '_' && c != '.')))
			return 0;
	}
	return 1;
}

struct json_object *as_owner_labels(const struct sbx_config *config, const char *id,
				    const struct sbx_owner *owner)
{
	const struct sbx_string_map *extra = &config->agent_sandbox.labels;
	struct json_object *labels = json_object_new_object();
	struct {
		const char *key;
		const char *value;
	} owned[] = {
		{ AS_LABEL_PREFIX "runner", owner != NULL ? owner->runner : NULL },
		{ AS_LABEL_PREFIX "project", owner != NULL ? owner->project : NULL },
		{ AS_LABEL_PREFIX "pipeline", owner != NULL ? owner->pipeline : NULL },
		{ AS_LABEL_PREFIX "job", owner != NULL ? owner->job : NULL },
	};

	if (labels == NULL)
		return NULL;
	for (size_t i = 0; i < extra->count; i++)
		if (as_json_add_string(labels, extra->keys[i], extra->values[i]) < 0)
			goto fail;
	if (as_json_add_string(labels, AS_LABEL_MANAGED_BY, "sbx") < 0 ||
	    as_json_add_string(labels, AS_LABEL_ID, id) < 0)
		goto fail;
	/* A value that is no valid label value (the CI system's ids normally are) is left
	 * out: the journal still records the owner. */
	for (size_t i = 0; i < sizeof(owned) / sizeof(owned[0]); i++)
		if (owned[i].value != NULL && label_value_valid(owned[i].value) &&
		    as_json_add_string(labels, owned[i].key, owned[i].value) < 0)
			goto fail;
	return labels;

fail:
	json_object_put(labels);
	return NULL;
}

struct json_object *as_string_map_json(const struct sbx_string_map *map)
{
	struct json_object *object = json_object_new_object();

	if (object == NULL)
		return NULL;
	for (size_t i = 0; i < map->count; i++) {
		if (as_json_add_string(object, map->keys[i], map->values[i]) < 0) {
			json_object_put(object);
			return NULL;
		}
	}
	return object;
}

struct json_object *as_owner_reference(const struct as_sandbox *sandbox)
{
	struct json_object *references = json_object_new_array();
	struct json_object *reference = json_object_new_object();

	if (references == NULL || reference == NULL || sandbox->owner_uid == NULL)
		goto fail;
	if (as_json_add_string(reference, "apiVersion", sandbox->direct
								? AS_SANDBOX_GROUP_VERSION
								: AS_EXTENSIONS_GROUP_VERSION) < 0 ||
	    as_json_add_string(reference, "kind", sandbox->direct ? "Sandbox" : "SandboxClaim") < 0 ||
	    as_json_add_string(reference, "name", sandbox->direct ? sandbox->sandbox
								  : sandbox->claim) < 0 ||
	    as_json_add_string(reference, "uid", sandbox->owner_uid) < 0)
		goto fail;
	json_object_array_add(references, reference);
	return references;

fail:
	json_object_put(reference);
	json_object_put(references);
	return NULL;
}

void as_format_time(int64_t when, char *buf, size_t size)
{
	time_t seconds = (time_t) when;
	struct tm tm;

	gmtime_r(&seconds, &tm);
	strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

int as_api_error(struct sbx_error *error, const struct k8s_status *status, const char *what)
{
	if (status != NULL && status->status_class == K8S_STATUS_FORBIDDEN)
		return sbx_error_prefix(error, "%s: forbidden; grant the runner's identity this "
					"verb in its Role (config-examples/kubernetes/rbac.yaml lists "
					"every verb sbx needs)",
					what);
	if (status != NULL && status->status_class == K8S_STATUS_UNAUTHORIZED)
		return sbx_error_prefix(error, "%s: the API server rejected the credential; check "
					"the kubeconfig's user or token",
					what);
	return sbx_error_prefix(error, "%s", what);
}
