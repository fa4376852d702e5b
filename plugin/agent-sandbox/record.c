/* SPDX-License-Identifier: MIT */
/* What the journal records of a sandbox: every object's name before sbx requests it. */
#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent_sandbox.h"
#include "error.h"
#include "log.h"

void as_sandbox_clear(struct as_sandbox *sandbox)
{
	char **strings[] = {
		&sandbox->namespace, &sandbox->pool,	 &sandbox->claim,	   &sandbox->sandbox,
		&sandbox->owner_uid, &sandbox->pod,	 &sandbox->pod_uid,	   &sandbox->container,
		&sandbox->name_hash, &sandbox->network_policy, &sandbox->pdb, &sandbox->step_dir,
	};

	for (size_t i = 0; i < sizeof(strings) / sizeof(strings[0]); i++) {
		free(*strings[i]);
		*strings[i] = NULL;
	}
}

static int add_optional(struct json_object *data, const char *key, const char *value)
{
	return value == NULL ? 0 : as_json_add_string(data, key, value);
}

struct json_object *as_sandbox_to_json(const struct as_sandbox *sandbox)
{
	struct json_object *data = json_object_new_object();

	if (data == NULL)
		return NULL;
	json_object_object_add(data, "format", json_object_new_int(AS_DATA_FORMAT));
	json_object_object_add(data, "direct", json_object_new_boolean(sandbox->direct));
	json_object_object_add(data, "network_policy_owned",
			       json_object_new_boolean(sandbox->network_policy_owned));
	json_object_object_add(data, "pdb_owned", json_object_new_boolean(sandbox->pdb_owned));
	json_object_object_add(data, "backstop", json_object_new_int64(sandbox->backstop));
	if (add_optional(data, "namespace", sandbox->namespace) < 0 ||
	    add_optional(data, "pool", sandbox->pool) < 0 ||
	    add_optional(data, "claim", sandbox->claim) < 0 ||
	    add_optional(data, "sandbox", sandbox->sandbox) < 0 ||
	    add_optional(data, "owner_uid", sandbox->owner_uid) < 0 ||
	    add_optional(data, "pod", sandbox->pod) < 0 ||
	    add_optional(data, "pod_uid", sandbox->pod_uid) < 0 ||
	    add_optional(data, "container", sandbox->container) < 0 ||
	    add_optional(data, "name_hash", sandbox->name_hash) < 0 ||
	    add_optional(data, "network_policy", sandbox->network_policy) < 0 ||
	    add_optional(data, "pdb", sandbox->pdb) < 0 ||
	    add_optional(data, "step_dir", sandbox->step_dir) < 0) {
		json_object_put(data);
		return NULL;
	}
	return data;
}

static int copy_field(struct json_object *data, const char *key, char **value)
{
	struct json_object *field;

	if (!json_object_object_get_ex(data, key, &field) || json_object_is_type(field,
										json_type_null))
		return 0;
	if (!json_object_is_type(field, json_type_string))
		return -1;
	*value = strdup(json_object_get_string(field));
	return *value == NULL ? -1 : 0;
}

static int flag_field(struct json_object *data, const char *key)
{
	struct json_object *field;

	return json_object_object_get_ex(data, key, &field) && json_object_get_boolean(field);
}

int as_sandbox_from_entry(const struct sbx_journal_entry *entry, struct as_sandbox *sandbox,
			  struct sbx_error *error)
{
	struct as_sandbox parsed;
	struct json_object *data = entry->data, *field;

	memset(&parsed, 0, sizeof(parsed));
	snprintf(parsed.id, sizeof(parsed.id), "%s", entry->id);
	if (entry->backend == NULL || strcmp(entry->backend, AS_BACKEND_NAME) != 0)
		return sbx_error_set(error, SBX_ERROR_NOT_FOUND,
				     "sandbox %s belongs to the %s backend, not %s; use the "
				     "configuration that created it",
				     entry->id, entry->backend != NULL ? entry->backend : "unknown",
				     AS_BACKEND_NAME);
	if (data == NULL || !json_object_is_type(data, json_type_object))
		goto invalid;
	if (json_object_object_get_ex(data, "format", &field) &&
	    json_object_get_int64(field) > AS_DATA_FORMAT)
		sbx_debug("sandbox %s: journal data format %" PRId64 " is newer than %d; reading "
			  "the fields this version knows",
			  entry->id, json_object_get_int64(field), AS_DATA_FORMAT);
	parsed.direct = flag_field(data, "direct");
	parsed.network_policy_owned = flag_field(data, "network_policy_owned");
	parsed.pdb_owned = flag_field(data, "pdb_owned");
	if (json_object_object_get_ex(data, "backstop", &field))
		parsed.backstop = json_object_get_int64(field);
	if (copy_field(data, "namespace", &parsed.namespace) < 0 ||
	    copy_field(data, "pool", &parsed.pool) < 0 ||
	    copy_field(data, "claim", &parsed.claim) < 0 ||
	    copy_field(data, "sandbox", &parsed.sandbox) < 0 ||
	    copy_field(data, "owner_uid", &parsed.owner_uid) < 0 ||
	    copy_field(data, "pod", &parsed.pod) < 0 ||
	    copy_field(data, "pod_uid", &parsed.pod_uid) < 0 ||
	    copy_field(data, "container", &parsed.container) < 0 ||
	    copy_field(data, "name_hash", &parsed.name_hash) < 0 ||
	    copy_field(data, "network_policy", &parsed.network_policy) < 0 ||
	    copy_field(data, "pdb", &parsed.pdb) < 0 ||
	    copy_field(data, "step_dir", &parsed.step_dir) < 0)
		goto invalid;
	if (parsed.namespace == NULL)
		goto invalid;
	*sandbox = parsed;
	return 0;

invalid:
	as_sandbox_clear(&parsed);
	return sbx_error_set(error, SBX_ERROR_SYSTEM,
			     "journal entry of sandbox %s has invalid agent-sandbox data; delete "
			     "its objects by the label " AS_LABEL_ID "=%s and remove the entry",
			     entry->id, entry->id);
}

char *as_sandbox_marker(const struct as_sandbox *sandbox)
{
	char *marker = NULL;

	if (asprintf(&marker, "%s %s", sandbox->id,
		     sandbox->pod_uid != NULL ? sandbox->pod_uid : "-") < 0)
		return NULL;
	return marker;
}
