/* SPDX-License-Identifier: MIT */
/*
 * destroy and list. On the claim path only the claim is deleted: deleting a claimed Sandbox
 * makes the controller provision a new one. The claim's garbage collection removes its
 * Sandbox, pod, NetworkPolicy and PodDisruptionBudget; objects created without an owner are
 * deleted by name. Deleting what is gone (404) counts as done.
 */
#include <errno.h>
#include <inttypes.h>
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

/* Bound on each DELETE, retries included; cleanup_timeout bounds the whole destroy. */
#define DELETE_TIMEOUT_S 30

/* Returns 1 when the object was deleted, 0 when it was already gone, -1 on failure. */
static int delete_object(struct sbx_executor *executor, const char *path, const char *what,
			 struct sbx_error *error)
{
	struct k8s_status status;

	if (k8s_rest_delete(executor->client, path, "Background", as_deadline(DELETE_TIMEOUT_S),
			    NULL, &status, error) < 0) {
		if (status.status_class == K8S_STATUS_NOT_FOUND) {
			sbx_error_clear(error);
			sbx_debug("%s: already gone", what);
			return 0;
		}
		return as_api_error(error, &status, what);
	}
	sbx_debug("%s: deleted", what);
	return 1;
}

/* Appends "KIND NAMESPACE/NAME" to the comma-separated list in BUF. */
static void append_object(char *buf, size_t size, const char *kind, const char *namespace,
			  const char *name)
{
	size_t used = strlen(buf);

	if (used + 1 < size)
		snprintf(buf + used, size - used, "%s%s %s/%s", used > 0 ? ", " : "", kind,
			 namespace, name);
}

/*
 * Deletes what SANDBOX records. DELETED and GONE (may be NULL) get the objects that were
 * deleted and those that were already gone, for the log.
 */
static int teardown(struct sbx_executor *executor, const struct as_sandbox *sandbox,
		    char *deleted, char *gone, size_t size, struct sbx_error *error)
{
	struct {
		const char *group_version;
		const char *plural;
		const char *name;
		const char *kind;
		int wanted;
	} objects[] = {
		{ AS_EXTENSIONS_GROUP_VERSION, "sandboxclaims", sandbox->claim, "SandboxClaim",
		  !sandbox->direct },
		{ AS_SANDBOX_GROUP_VERSION, "sandboxes", sandbox->sandbox, "Sandbox",
		  sandbox->direct },
		{ "networking.k8s.io/v1", "networkpolicies", sandbox->network_policy,
		  "NetworkPolicy", !sandbox->network_policy_owned || sandbox->owner_uid == NULL },
		{ "policy/v1", "poddisruptionbudgets", sandbox->pdb, "PodDisruptionBudget",
		  !sandbox->pdb_owned || sandbox->owner_uid == NULL },
	};
	struct sbx_error first;
	int failed = 0;

	if (as_connect(executor, error) < 0)
		return -1;
	sbx_error_clear(&first);
	/* Each object is tried even after one failed, so a retry has less left to do. */
	for (size_t i = 0; i < SBX_ARRAY_SIZE(objects); i++) {
		_cleanup_free_ char *path = NULL;
		struct sbx_error one;
		char what[300];
		int rc;

		if (!objects[i].wanted || objects[i].name == NULL)
			continue;
		if (asprintf(&path, "/apis/%s/namespaces/%s/%s/%s", objects[i].group_version,
			     sandbox->namespace, objects[i].plural, objects[i].name) < 0)
			return sbx_error_errno(error, ENOMEM, "destroy %s", sandbox->id);
		snprintf(what, sizeof(what), "delete %s %s/%s", objects[i].kind, sandbox->namespace,
			 objects[i].name);
		sbx_error_clear(&one);
		rc = delete_object(executor, path, what, &one);
		if (rc < 0 && !failed) {
			first = one;
			failed = 1;
		}
		if (rc >= 0 && deleted != NULL)
			append_object(rc == 1 ? deleted : gone, size, objects[i].kind,
				      sandbox->namespace, objects[i].name);
	}
	if (failed) {
		if (error != NULL)
			*error = first;
		return -1;
	}
	return 0;
}

int as_teardown(struct sbx_executor *executor, const struct as_sandbox *sandbox,
		struct sbx_error *error)
{
	return teardown(executor, sandbox, NULL, NULL, 0, error);
}

int as_destroy(struct sbx_executor *executor, const char *id, struct sbx_error *error)
{
	struct sbx_journal_entry entry;
	struct as_sandbox sandbox;
	int64_t started = sbx_monotonic_ms();
	char deleted[600] = "", gone[600] = "";
	int lock_fd, rc;

	if (!sbx_id_valid(id))
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "sandbox id \"%.80s\" is invalid; ids are 1-%d characters of "
				     "[a-z0-9-]",
				     id != NULL ? id : "(null)", SBX_ID_MAX);
	lock_fd = sbx_journal_lock(&executor->journal, id,
				   (int) (executor->config->cleanup_timeout * 1000), error);
	if (lock_fd < 0)
		return -1;

	sbx_journal_entry_init(&entry);
	if (sbx_journal_read(&executor->journal, id, &entry, error) < 0) {
		if (error != NULL && error->error_class == SBX_ERROR_NOT_FOUND) {
			sbx_error_clear(error);
			sbx_debug("sandbox %s: nothing to destroy", id);
			sbx_journal_unlock_remove(&executor->journal, id, lock_fd);
			return 0;
		}
		sbx_journal_unlock(lock_fd);
		return -1;
	}
	if (as_sandbox_from_entry(&entry, &sandbox, error) < 0) {
		if (error != NULL && error->error_class == SBX_ERROR_NOT_FOUND)
			error->error_class = SBX_ERROR_INVALID;
		sbx_journal_entry_clear(&entry);
		sbx_journal_unlock(lock_fd);
		return -1;
	}

	rc = teardown(executor, &sandbox, deleted, gone, sizeof(deleted), error);
	if (rc == 0)
		rc = sbx_journal_remove(&executor->journal, id, error);
	sbx_journal_entry_clear(&entry);
	if (rc < 0) {
		/* The entry stays, so a later cleanup or `sbx gc` can retry. */
		as_sandbox_clear(&sandbox);
		sbx_journal_unlock(lock_fd);
		return -1;
	}
	sbx_journal_unlock_remove(&executor->journal, id, lock_fd);
	/* Objects owned by the claim or Sandbox are left to garbage collection, so the log
	 * names only what sbx deleted itself. */
	if (deleted[0] == '\0' && gone[0] == '\0')
		sbx_info("sandbox %s destroyed in %" PRId64 " ms (no objects recorded)", id,
			 sbx_monotonic_ms() - started);
	else
		sbx_info("sandbox %s destroyed in %" PRId64 " ms (%s%s%s%s%s)", id,
			 sbx_monotonic_ms() - started, deleted[0] != '\0' ? "deleted " : "",
			 deleted, deleted[0] != '\0' && gone[0] != '\0' ? "; " : "", gone,
			 gone[0] != '\0' ? " already gone" : "");
	as_sandbox_clear(&sandbox);
	return 0;
}

struct list_context {
	sbx_list_fn callback;
	void *userdata;
};

static int list_one(void *userdata, const struct sbx_journal_entry *entry)
{
	struct list_context *context = userdata;
	struct sbx_owner owner = {
		.struct_size = sizeof(owner),
		.runner = entry->owner_runner,
		.project = entry->owner_project,
		.pipeline = entry->owner_pipeline,
		.job = entry->owner_job,
	};
	struct sbx_sandbox_info info = {
		.struct_size = sizeof(info),
		.id = entry->id,
		.backend = entry->backend,
		.state = entry->state,
		.created = entry->created,
		.deadline = entry->deadline,
		.owner = &owner,
	};

	if (entry->backend == NULL || strcmp(entry->backend, AS_BACKEND_NAME) != 0)
		return 0;
	return context->callback(context->userdata, &info);
}

int as_list(struct sbx_executor *executor, sbx_list_fn callback, void *userdata,
	    struct sbx_error *error)
{
	struct list_context context = { .callback = callback, .userdata = userdata };

	return sbx_journal_foreach(&executor->journal, list_one, &context, error);
}
