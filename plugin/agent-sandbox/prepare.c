/* SPDX-License-Identifier: MIT */
/*
 * prepare: the journal entry first, then each object, recorded before it is asked for, so
 * that cleanup and `sbx gc` can delete what a half-done prepare left from the entry alone.
 *
 * Claim path: create the SandboxClaim and wait for Ready. Then the NetworkPolicy (the adopted
 * Sandbox's name is known only now), the PodDisruptionBudget, the check of the other policies
 * and the pod setup with the enforcement probe. The check of the other policies also covers
 * the policy of a template that manages one.
 * Direct path: the Sandbox's name is the id, so its NetworkPolicy comes first, before the pod
 * exists; then the Sandbox, made the policy's owner at once, its PodDisruptionBudget,
 * Ready, and the same checks.
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

struct prepare {
	struct sbx_executor *executor;
	const struct sbx_job_spec *spec;
	struct sbx_journal_entry entry;
	struct as_sandbox sandbox;
	struct sbx_allowlist allow;
	struct as_egress egress;
	struct json_object *pod;
};

static int record(struct prepare *prepare, struct sbx_error *error)
{
	struct json_object *data = as_sandbox_to_json(&prepare->sandbox);

	if (data == NULL)
		return sbx_error_errno(error, ENOMEM, "cannot record sandbox %s", prepare->spec->id);
	json_object_put(prepare->entry.data);
	prepare->entry.data = data;
	return sbx_journal_write(&prepare->executor->journal, &prepare->entry, error);
}

static int set_string(char **field, const char *value)
{
	free(*field);
	*field = value != NULL ? strdup(value) : NULL;
	return value != NULL && *field == NULL ? -1 : 0;
}

static int fill_entry(struct prepare *prepare, const char *pool, struct sbx_error *error)
{
	const struct sbx_job_spec *spec = prepare->spec;
	const struct sbx_config *config = prepare->executor->config;
	const struct sbx_owner *owner = spec->owner;
	struct as_sandbox *sandbox = &prepare->sandbox;
	int64_t timeout = config->default_job_timeout;
	char name[SBX_ID_MAX + 16];

	if (SBX_HAS_FIELD(spec, struct sbx_job_spec, timeout_seconds) && spec->timeout_seconds > 0)
		timeout = spec->timeout_seconds;
	snprintf(prepare->entry.id, sizeof(prepare->entry.id), "%s", spec->id);
	prepare->entry.version = SBX_JOURNAL_VERSION;
	prepare->entry.backend = strdup(AS_BACKEND_NAME);
	prepare->entry.state = SBX_SANDBOX_PREPARING;
	prepare->entry.created = sbx_now();
	prepare->entry.deadline = prepare->entry.created + timeout + config->deadline_margin;
	if (owner != NULL) {
		prepare->entry.owner_runner = sbx_strdup_or_null(owner->runner);
		prepare->entry.owner_project = sbx_strdup_or_null(owner->project);
		prepare->entry.owner_pipeline = sbx_strdup_or_null(owner->pipeline);
		prepare->entry.owner_job = sbx_strdup_or_null(owner->job);
	}

	snprintf(sandbox->id, sizeof(sandbox->id), "%s", spec->id);
	sandbox->direct = pool == NULL;
	/* `sbx gc` removes the sandbox after its deadline. The controller's backstop comes a
	 * little later and removes it even where no gc runs, such as on a runner host that is
	 * gone. */
	sandbox->backstop = prepare->entry.deadline + AS_BACKSTOP_DELAY_S;
	if (prepare->entry.backend == NULL ||
	    set_string(&sandbox->namespace, prepare->executor->namespace) < 0 ||
	    set_string(&sandbox->pool, pool) < 0 ||
	    set_string(&sandbox->step_dir, config->agent_sandbox.step_dir) < 0)
		return sbx_error_errno(error, ENOMEM, "sandbox %s", spec->id);
	snprintf(name, sizeof(name), "%s-egress", spec->id);
	if (set_string(&sandbox->network_policy, name) < 0)
		return sbx_error_errno(error, ENOMEM, "sandbox %s", spec->id);
	if (config->agent_sandbox.disruption_protection == SBX_DISRUPTION_PER_JOB) {
		snprintf(name, sizeof(name), "%s-pdb", spec->id);
		if (set_string(&sandbox->pdb, name) < 0)
			return sbx_error_errno(error, ENOMEM, "sandbox %s", spec->id);
	}
	if (sandbox->direct) {
		char hash[9];

		as_name_hash(spec->id, hash);
		if (set_string(&sandbox->sandbox, spec->id) < 0 ||
		    set_string(&sandbox->name_hash, hash) < 0)
			return sbx_error_errno(error, ENOMEM, "sandbox %s", spec->id);
	} else if (set_string(&sandbox->claim, spec->id) < 0) {
		return sbx_error_errno(error, ENOMEM, "sandbox %s", spec->id);
	}
	return 0;
}

static int check_spec(const struct sbx_job_spec *spec, struct sbx_error *error)
{
	if (spec == NULL || spec->struct_size < offsetof(struct sbx_job_spec, id) + sizeof(char *))
		return sbx_error_set(error, SBX_ERROR_INVALID, "prepare: the job spec is missing");
	if (!sbx_id_valid(spec->id))
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "sandbox id \"%.80s\" is invalid; ids are 1-%d characters of "
				     "[a-z0-9-]",
				     spec->id != NULL ? spec->id : "(null)", SBX_ID_MAX);
	return 0;
}

/* Builds the allow-list (job extras included) and resolves it before anything exists. */
static int build_egress(struct prepare *prepare, struct sbx_error *error)
{
	const struct sbx_job_spec *spec = prepare->spec;
	const char *ci_server = SBX_HAS_FIELD(spec, struct sbx_job_spec, ci_server_url)
					? spec->ci_server_url
					: NULL;

	if (as_egress_allowlist(prepare->executor->config, ci_server, &prepare->allow, error) < 0)
		return -1;
	if (SBX_HAS_FIELD(spec, struct sbx_job_spec, extra_allow) && spec->extra_allow != NULL)
		for (size_t i = 0; spec->extra_allow[i] != NULL; i++)
			if (sbx_allowlist_add(&prepare->allow, spec->extra_allow[i], error) < 0)
				return -1;
	for (size_t i = 0; i < prepare->allow.count; i++)
		if (prepare->allow.entries[i].kind == SBX_ALLOW_WILDCARD)
			return sbx_error_set(error, SBX_ERROR_INVALID,
					     "egress entry *.%s is a wildcard, which a "
					     "NetworkPolicy cannot enforce; list host names or CIDRs",
					     prepare->allow.entries[i].host);
	if (as_egress_resolve(&prepare->allow, &prepare->egress, error) < 0)
		return -1;
	return as_probe_check_destination(prepare->executor, &prepare->egress, error);
}

static int prepare_claim(struct prepare *prepare, int *warm, struct sbx_error *error)
{
	struct sbx_executor *executor = prepare->executor;
	struct as_sandbox *sandbox = &prepare->sandbox;
	_cleanup_free_ char *version = NULL;
	char hash[9];

	if (record(prepare, error) < 0)
		return -1;
	if (as_sandbox_create(executor, sandbox, prepare->spec, &version, error) < 0 ||
	    record(prepare, error) < 0)
		return -1;
	sbx_info("SandboxClaim %s/%s created against warm pool %s; waiting until it is ready",
		 sandbox->namespace, sandbox->claim, sandbox->pool);
	if (as_sandbox_wait_ready(executor, sandbox, version, warm, error) < 0)
		return -1;
	as_name_hash(sandbox->sandbox, hash);
	if (set_string(&sandbox->name_hash, hash) < 0)
		return sbx_error_errno(error, ENOMEM, "sandbox %s", sandbox->id);
	sandbox->network_policy_owned = 1;
	sandbox->pdb_owned = 1;
	if (record(prepare, error) < 0 ||
	    as_netpol_create(executor, sandbox, &prepare->egress, error) < 0)
		return -1;
	if (sandbox->pdb != NULL && as_pdb_create(executor, sandbox, error) < 0)
		return -1;
	return 0;
}

static int prepare_direct(struct prepare *prepare, struct sbx_error *error)
{
	struct sbx_executor *executor = prepare->executor;
	struct as_sandbox *sandbox = &prepare->sandbox;
	_cleanup_free_ char *version = NULL;
	int warm = 0;

	/* Created before the pod exists, so the pod never runs unrestricted; without an owner
	 * yet, destroy deletes it by name. */
	if (record(prepare, error) < 0 ||
	    as_netpol_create(executor, sandbox, &prepare->egress, error) < 0)
		return -1;
	if (as_sandbox_create(executor, sandbox, prepare->spec, &version, error) < 0)
		return -1;
	sandbox->pdb_owned = 1;
	if (record(prepare, error) < 0 || as_netpol_adopt(executor, sandbox, error) < 0 ||
	    record(prepare, error) < 0)
		return -1;
	if (sandbox->pdb != NULL && as_pdb_create(executor, sandbox, error) < 0)
		return -1;
	sbx_info("Sandbox %s/%s created for image %s; waiting until it is ready",
		 sandbox->namespace, sandbox->sandbox, prepare->spec->image);
	return as_sandbox_wait_ready(executor, sandbox, version, &warm, error);
}

static void prepare_clear(struct prepare *prepare)
{
	sbx_journal_entry_clear(&prepare->entry);
	as_sandbox_clear(&prepare->sandbox);
	sbx_allowlist_free(&prepare->allow);
	as_egress_clear(&prepare->egress);
	json_object_put(prepare->pod);
}

int as_prepare(struct sbx_executor *executor, const struct sbx_job_spec *spec,
	       struct sbx_error *error)
{
	struct prepare prepare;
	struct sbx_journal_entry existing;
	struct as_sandbox *sandbox = &prepare.sandbox;
	const char *image = SBX_HAS_FIELD(spec, struct sbx_job_spec, image) ? spec->image : NULL;
	const char *pool = NULL, *launch;
	int64_t started = sbx_monotonic_ms(), ready_ms = 0;
	int lock_fd, warm = 0, rejected = 0;

	if (check_spec(spec, error) < 0)
		return -1;
	memset(&prepare, 0, sizeof(prepare));
	prepare.executor = executor;
	prepare.spec = spec;
	sbx_journal_entry_init(&prepare.entry);

	if (as_select_pool(executor->config, image, &pool, error) < 0 ||
	    (pool != NULL &&
	     as_rejection_check(executor, pool, spec->owner != NULL ? spec->owner->job : NULL,
			      error) < 0) ||
	    as_connect(executor, error) < 0 || build_egress(&prepare, error) < 0) {
		prepare_clear(&prepare);
		return -1;
	}
	lock_fd = sbx_journal_lock(&executor->journal, spec->id, AS_LOCK_TIMEOUT_MS, error);
	if (lock_fd < 0) {
		prepare_clear(&prepare);
		return -1;
	}
	sbx_journal_entry_init(&existing);
	if (sbx_journal_read(&executor->journal, spec->id, &existing, NULL) == 0) {
		sbx_journal_entry_clear(&existing);
		sbx_journal_unlock(lock_fd);
		prepare_clear(&prepare);
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "sandbox %s exists already; every prepare needs a new id",
				     spec->id);
	}

	if (fill_entry(&prepare, pool, error) < 0)
		goto fail;
	if (sandbox->direct ? prepare_direct(&prepare, error) < 0
			    : prepare_claim(&prepare, &warm, error) < 0)
		goto fail;
	ready_ms = sbx_monotonic_ms() - started;
	if (as_sandbox_read_pod(executor, sandbox, &prepare.pod, error) < 0 ||
	    record(&prepare, error) < 0)
		goto fail;
	if (sandbox->direct)
		launch = "direct Sandbox";
	else
		launch = warm ? "warm pool hit" : "cold start";
	sbx_info("sandbox %s ready in %" PRId64 " ms (%s): Sandbox %s, pod %s, container %s",
		 spec->id, ready_ms, launch,
		 sandbox->sandbox, sandbox->pod, sandbox->container);
	if (as_netpol_check_others(executor, sandbox, prepare.pod, &prepare.egress, &rejected,
				   error) < 0) {
		if (rejected && !sandbox->direct)
			as_rejection_remember(executor, sandbox->pool, prepare.entry.owner_job,
					    error->message);
		goto fail;
	}
	if (as_pod_setup(executor, sandbox, error) < 0)
		goto fail;

	prepare.entry.state = SBX_SANDBOX_READY;
	if (record(&prepare, error) < 0)
		goto fail;
	sbx_info("sandbox %s prepared in %" PRId64 " ms", spec->id,
		 sbx_monotonic_ms() - started);
	sbx_journal_unlock(lock_fd);
	prepare_clear(&prepare);
	return 0;

fail:
	/* Undo what the entry records; if that fails too, the entry stays for cleanup or gc. */
	if (prepare.entry.backend != NULL) {
		struct sbx_error undo_error;

		sbx_error_clear(&undo_error);
		if (as_teardown(executor, sandbox, &undo_error) == 0 &&
		    sbx_journal_remove(&executor->journal, spec->id, &undo_error) == 0)
			sbx_debug("sandbox %s: undid the failed prepare", spec->id);
		else
			sbx_error_log("sandbox %s: cannot undo the failed prepare: %s; run cleanup "
				      "or `sbx gc`",
				      spec->id, undo_error.message);
	}
	sbx_journal_unlock(lock_fd);
	prepare_clear(&prepare);
	return -1;
}
