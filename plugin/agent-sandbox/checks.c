/* SPDX-License-Identifier: MIT */
/*
 * `sbx doctor` for the agent-sandbox backend: the API server and the credential, every verb
 * sbx uses (SelfSubjectAccessReview), the Agent Sandbox CRDs, the configured warm pools and
 * their templates, the namespace's other NetworkPolicies and whether policies are enforced.
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
#include "podexec.h"
#include "util.h"

#include "k8s/rest.h"
#include "k8s/status.h"

#define RBAC_FIX "apply config-examples/kubernetes/rbac.yaml (adapted to the namespace and identity)"

struct checker {
	struct sbx_executor *executor;
	sbx_check_fn callback;
	void *userdata;
	int failed;
};

static void report(struct checker *checker, enum sbx_check_status status, const char *name,
		   const char *fix, const char *format, ...) __attribute__((format(printf, 5, 6)));

static void report(struct checker *checker, enum sbx_check_status status, const char *name,
		   const char *fix, const char *format, ...)
{
	char detail[1024];
	va_list args;

	va_start(args, format);
	vsnprintf(detail, sizeof(detail), format, args);
	va_end(args);
	if (status == SBX_CHECK_FAILED)
		checker->failed = 1;
	if (checker->callback != NULL)
		checker->callback(checker->userdata, status, name, detail, fix);
}

static int check_version(struct checker *checker)
{
	struct json_object *version = NULL;
	struct k8s_status status;
	struct sbx_error error;

	sbx_error_clear(&error);
	if (k8s_rest_get(checker->executor->client, "/version", as_deadline(15), &version,
			 &status, &error) < 0) {
		report(checker, SBX_CHECK_FAILED, "API server",
		       "check the server URL in the kubeconfig and that this host can reach it",
		       "%s", error.message);
		return -1;
	}
	report(checker, SBX_CHECK_OK, "API server", NULL, "%s answers, Kubernetes %s",
	       checker->executor->k8s_config->server_url,
	       as_json_string(version, "gitVersion") != NULL ? as_json_string(version, "gitVersion")
							     : "(unknown version)");
	json_object_put(version);
	return 0;
}

static void check_identity(struct checker *checker)
{
	struct json_object *body = json_object_new_object(), *review = NULL;
	struct k8s_status status;
	struct sbx_error error;
	const char *user;

	sbx_error_clear(&error);
	as_json_add_string(body, "apiVersion", "authentication.k8s.io/v1");
	as_json_add_string(body, "kind", "SelfSubjectReview");
	if (k8s_rest_create(checker->executor->client,
			    "/apis/authentication.k8s.io/v1/selfsubjectreviews", body,
			    as_deadline(15), &review, &status, &error) < 0) {
		json_object_put(body);
		if (status.status_class == K8S_STATUS_UNAUTHORIZED)
			report(checker, SBX_CHECK_FAILED, "authentication",
			       "renew the token or certificate of the kubeconfig's user",
			       "the API server rejected the credential: %s", error.message);
		else
			report(checker, SBX_CHECK_WARNING, "authentication", NULL,
			       "cannot ask who sbx is (SelfSubjectReview needs Kubernetes 1.28): %s",
			       error.message);
		return;
	}
	json_object_put(body);
	user = as_json_string(review, "status.userInfo.username");
	report(checker, SBX_CHECK_OK, "authentication", NULL, "authenticated as %s",
	       user != NULL ? user : "(no name)");
	json_object_put(review);
}

struct verb {
	const char *group;
	const char *resource;
	const char *subresource;
	const char *verb;
	int direct_only; /* 1: only the direct path needs it; 2: only the claim path */
	int pdb_only;
};

static const struct verb verbs[] = {
	{ "extensions.agents.x-k8s.io", "sandboxclaims", NULL, "create", 2, 0 },
	{ "extensions.agents.x-k8s.io", "sandboxclaims", NULL, "get", 2, 0 },
	{ "extensions.agents.x-k8s.io", "sandboxclaims", NULL, "list", 2, 0 },
	{ "extensions.agents.x-k8s.io", "sandboxclaims", NULL, "watch", 2, 0 },
	{ "extensions.agents.x-k8s.io", "sandboxclaims", NULL, "delete", 2, 0 },
	{ "extensions.agents.x-k8s.io", "sandboxwarmpools", NULL, "get", 2, 0 },
	{ "extensions.agents.x-k8s.io", "sandboxtemplates", NULL, "get", 2, 0 },
	{ "agents.x-k8s.io", "sandboxes", NULL, "get", 0, 0 },
	{ "agents.x-k8s.io", "sandboxes", NULL, "list", 1, 0 },
	{ "agents.x-k8s.io", "sandboxes", NULL, "watch", 1, 0 },
	{ "agents.x-k8s.io", "sandboxes", NULL, "create", 1, 0 },
	{ "agents.x-k8s.io", "sandboxes", NULL, "delete", 1, 0 },
	{ "", "pods", NULL, "get", 0, 0 },
	{ "", "pods", "exec", "get", 0, 0 },
	{ "", "pods", "exec", "create", 0, 0 },
	{ "networking.k8s.io", "networkpolicies", NULL, "create", 0, 0 },
	{ "networking.k8s.io", "networkpolicies", NULL, "list", 0, 0 },
	{ "networking.k8s.io", "networkpolicies", NULL, "patch", 1, 0 },
	{ "networking.k8s.io", "networkpolicies", NULL, "delete", 0, 0 },
	{ "policy", "poddisruptionbudgets", NULL, "create", 0, 1 },
	{ "policy", "poddisruptionbudgets", NULL, "delete", 0, 1 },
};

static int allowed(struct checker *checker, const struct verb *verb, struct sbx_error *error)
{
	struct json_object *body = json_object_new_object(), *review = NULL, *attributes;
	struct k8s_status status;
	struct json_object *answer;
	int result;

	as_json_add_string(body, "apiVersion", "authorization.k8s.io/v1");
	as_json_add_string(body, "kind", "SelfSubjectAccessReview");
	attributes = as_json_object_path(body, "spec.resourceAttributes");
	as_json_add_string(attributes, "namespace", checker->executor->namespace);
	as_json_add_string(attributes, "group", verb->group);
	as_json_add_string(attributes, "resource", verb->resource);
	as_json_add_string(attributes, "verb", verb->verb);
	if (verb->subresource != NULL)
		as_json_add_string(attributes, "subresource", verb->subresource);
	if (k8s_rest_create(checker->executor->client,
			    "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", body,
			    as_deadline(15), &review, &status, error) < 0) {
		json_object_put(body);
		return -1;
	}
	json_object_put(body);
	answer = as_json_get(review, "status.allowed");
	result = answer != NULL && json_object_get_boolean(answer);
	json_object_put(review);
	return result;
}

static void check_verbs(struct checker *checker)
{
	const struct sbx_agent_sandbox_config *settings = &checker->executor->config->agent_sandbox;
	int direct = settings->pod_template != NULL, claims = settings->warm_pool_count > 0;
	char missing[1024] = "";
	size_t used = 0, checked = 0;

	for (size_t i = 0; i < SBX_ARRAY_SIZE(verbs); i++) {
		const struct verb *verb = &verbs[i];
		struct sbx_error error;
		int answer;

		if ((verb->direct_only == 1 && !direct) || (verb->direct_only == 2 && !claims) ||
		    (verb->pdb_only && settings->disruption_protection != SBX_DISRUPTION_PER_JOB))
			continue;
		sbx_error_clear(&error);
		answer = allowed(checker, verb, &error);
		if (answer < 0) {
			report(checker, SBX_CHECK_FAILED, "permissions", RBAC_FIX,
			       "SelfSubjectAccessReview failed: %s", error.message);
			return;
		}
		checked++;
		if (!answer && used < sizeof(missing))
			used += (size_t) snprintf(missing + used, sizeof(missing) - used,
						  "%s%s %s%s%s%s%s", used > 0 ? ", " : "", verb->verb,
						  verb->resource, verb->subresource ? "/" : "",
						  verb->subresource ? verb->subresource : "",
						  verb->group[0] != '\0' ? "." : "", verb->group);
	}
	if (missing[0] != '\0')
		report(checker, SBX_CHECK_FAILED, "permissions", RBAC_FIX,
		       "namespace %s: not allowed to %s", checker->executor->namespace, missing);
	else
		report(checker, SBX_CHECK_OK, "permissions", NULL,
		       "all %zu verbs sbx uses are allowed in namespace %s", checked,
		       checker->executor->namespace);
}

static void check_group(struct checker *checker, const char *group, const char *kinds)
{
	_cleanup_free_ char *path = NULL;
	struct json_object *discovery = NULL, *versions;
	struct k8s_status status;
	struct sbx_error error;
	char served[256] = "";
	size_t used = 0;
	int beta = 0;

	sbx_error_clear(&error);
	if (asprintf(&path, "/apis/%s", group) < 0)
		return;
	if (k8s_rest_get(checker->executor->client, path, as_deadline(15), &discovery, &status,
			 &error) < 0) {
		report(checker, SBX_CHECK_FAILED, group,
		       "install Agent Sandbox with its extensions (the release's "
		       "sandbox-with-extensions.yaml)",
		       "API group not served (%s): %s not installed", error.message, kinds);
		return;
	}
	versions = as_json_get(discovery, "versions");
	for (size_t i = 0; versions != NULL && i < json_object_array_length(versions); i++) {
		const char *version = as_json_string(json_object_array_get_idx(versions, i),
						     "version");

		if (version == NULL)
			continue;
		beta |= strcmp(version, "v1beta1") == 0;
		if (used < sizeof(served))
			used += (size_t) snprintf(served + used, sizeof(served) - used, "%s%s",
						  used > 0 ? ", " : "", version);
	}
	json_object_put(discovery);
	if (beta)
		report(checker, SBX_CHECK_OK, group, NULL, "%s served in %s", kinds, served);
	else
		report(checker, SBX_CHECK_FAILED, group,
		       "upgrade Agent Sandbox to v0.5 or later, which serves v1beta1",
		       "serves only %s; sbx speaks v1beta1", served);
}

static void check_pools(struct checker *checker)
{
	const struct sbx_agent_sandbox_config *settings = &checker->executor->config->agent_sandbox;

	for (size_t i = 0; i < settings->warm_pool_count; i++) {
		const char *pool = settings->warm_pools[i].pool;
		struct json_object *template = NULL;
		struct sbx_error error;
		char name[300];
		int duplicate = 0;

		for (size_t j = 0; j < i; j++)
			duplicate |= strcmp(settings->warm_pools[j].pool, pool) == 0;
		if (duplicate)
			continue;
		snprintf(name, sizeof(name), "warm pool %s", pool);
		sbx_error_clear(&error);
		if (as_template_check(checker->executor, pool, &template, &error) < 0) {
			report(checker, SBX_CHECK_FAILED, name,
			       "create the pool and its template with networkPolicyManagement: "
			       "Unmanaged (config-examples/kubernetes/warm-pool.yaml)",
			       "%s",
			       error.message);
			continue;
		}
		if (settings->disruption_protection == SBX_DISRUPTION_SHARED &&
		    as_json_map_value(template, "spec.podTemplate.metadata.labels",
				      AS_LABEL_SHARED_PDB) == NULL)
			report(checker, SBX_CHECK_FAILED, name,
			       "add the label " AS_LABEL_SHARED_PDB ": " AS_SHARED_PDB_VALUE
			       " to the template's podTemplate.metadata.labels",
			       "disruption_protection is shared-pdb, but template %s does not "
			       "carry the shared PDB's label",
			       as_json_string(template, "metadata.name"));
		else
			report(checker, SBX_CHECK_OK, name, NULL,
			       "template %s leaves the NetworkPolicy to sbx",
			       as_json_string(template, "metadata.name"));
		json_object_put(template);
	}
	if (settings->warm_pool_count == 0 && settings->pod_template == NULL)
		report(checker, SBX_CHECK_FAILED, "sandboxes",
		       "set agent_sandbox.warm_pools, or agent_sandbox.pod_template with "
		       "allowed_images",
		       "no warm pool and no pod template: no job can run");
	if (settings->pod_template != NULL && settings->allowed_images.count == 0)
		report(checker, SBX_CHECK_WARNING, "direct Sandbox",
		       "list the images in agent_sandbox.allowed_images",
		       "agent_sandbox.pod_template is set but allowed_images is empty, so no job "
		       "uses it");
}

/* Policies that select every pod, or the pods of a configured template, and allow egress. */
static void check_policies(struct checker *checker)
{
	const struct sbx_agent_sandbox_config *settings = &checker->executor->config->agent_sandbox;
	_cleanup_free_ char *path = NULL;
	struct json_object *list = NULL, *items, *empty = json_object_new_object();
	struct as_egress egress = { 0 };
	struct k8s_status status;
	struct sbx_error error;
	int found = 0;

	sbx_error_clear(&error);
	if (asprintf(&path, "/apis/networking.k8s.io/v1/namespaces/%s/networkpolicies",
		     checker->executor->namespace) < 0 || empty == NULL)
		goto out;
	if (k8s_rest_list(checker->executor->client, path, NULL, as_deadline(15), &list, &status,
			  &error) < 0) {
		report(checker, SBX_CHECK_FAILED, "NetworkPolicies", RBAC_FIX, "%s", error.message);
		goto out;
	}
	items = as_json_get(list, "items");
	for (size_t i = 0; items != NULL && i < json_object_array_length(items); i++) {
		struct json_object *policy = json_object_array_get_idx(items, i);
		const char *name = as_json_string(policy, "metadata.name");
		char reason[256];
		int listed = 0;

		/* sbx's own per-job policies allow only each job's list. */
		if (name == NULL ||
		    as_json_map_value(policy, "metadata.labels", AS_LABEL_MANAGED_BY) != NULL)
			continue;
		/* Only an empty selector is sure to select sbx's pods before they exist. */
		if (!as_selector_matches(as_json_get(policy, "spec.podSelector"), empty))
			continue;
		if (as_netpol_within(policy, &egress, settings->dns.allow, reason, sizeof(reason)))
			continue;
		for (size_t j = 0; j < settings->accepted_policies.count; j++)
			listed |= strcmp(settings->accepted_policies.items[j], name) == 0;
		found = 1;
		report(checker, listed ? SBX_CHECK_WARNING : SBX_CHECK_FAILED, "NetworkPolicies",
		       listed ? NULL
			      : "narrow its podSelector, or add it to "
				"agent_sandbox.accepted_policies to accept it",
		       "%s selects every pod in namespace %s and %s%s", name,
		       checker->executor->namespace, reason,
		       listed ? " (accepted by agent_sandbox.accepted_policies)" : "; jobs fail");
	}
	if (!found)
		report(checker, SBX_CHECK_OK, "NetworkPolicies", NULL,
		       "no other policy in namespace %s selects every pod and allows egress",
		       checker->executor->namespace);
out:
	json_object_put(empty);
	json_object_put(list);
}

static void check_probe_config(struct checker *checker)
{
	const struct sbx_agent_sandbox_probe_config *probe =
		&checker->executor->config->agent_sandbox.probe;

	if (probe->destination == NULL)
		report(checker, probe->required ? SBX_CHECK_FAILED : SBX_CHECK_WARNING,
		       "NetworkPolicy enforcement",
		       "set agent_sandbox.probe.destination to an IP:port outside the allow-list "
		       "that pods can reach without a policy",
		       "no probe destination: %s",
		       probe->required ? "every prepare fails"
				       : "jobs run without checking that policies are enforced");
}

int as_check(struct sbx_executor *executor, sbx_check_fn callback, void *userdata,
	     struct sbx_error *error)
{
	struct checker checker = { .executor = executor, .callback = callback,
				   .userdata = userdata };
	struct sbx_error connect_error;

	sbx_error_clear(&connect_error);
	if (as_connect(executor, &connect_error) < 0) {
		report(&checker, SBX_CHECK_FAILED, "kubeconfig",
		       "set agent_sandbox.kubeconfig (and context), or run sbx in a pod with "
		       "agent_sandbox.in_cluster: true",
		       "%s", connect_error.message);
		return sbx_error_set(error, SBX_ERROR_SYSTEM, "the agent-sandbox backend is not "
				     "ready");
	}
	report(&checker, SBX_CHECK_OK, "kubeconfig", NULL, "%s: server %s, namespace %s",
	       executor->k8s_config->origin, executor->k8s_config->server_url,
	       executor->namespace);
	if (check_version(&checker) == 0) {
		check_identity(&checker);
		check_verbs(&checker);
		check_group(&checker, "agents.x-k8s.io", "Sandbox");
		check_group(&checker, "extensions.agents.x-k8s.io",
			    "SandboxClaim, SandboxTemplate and SandboxWarmPool");
		check_pools(&checker);
		check_policies(&checker);
		check_probe_config(&checker);
		as_check_enforcement(executor, callback, userdata, &checker.failed);
	}
	if (checker.failed)
		return sbx_error_set(error, SBX_ERROR_SYSTEM, "the agent-sandbox backend is not "
				     "ready");
	return 0;
}
