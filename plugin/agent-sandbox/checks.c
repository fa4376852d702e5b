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
#define RBAC_FILE "config-examples/kubernetes/rbac.yaml"

struct checker {
	struct sbx_executor *executor;
	sbx_check_fn callback;
	void *userdata;
	int failed;
	/* Verbs the enforcement probe needs and the identity lacks; valid when probe_known. */
	int probe_known;
	char probe_missing[512];
	char fix[512];
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

/*
 * Fills checker->fix for a request that failed for a reason other than a missing verb or
 * object: the credential, the server's certificate or the connection.
 */
static const char *transport_fix(struct checker *checker, const struct k8s_status *status)
{
	const struct k8s_config *config = checker->executor->k8s_config;

	switch (status->status_class) {
	case K8S_STATUS_UNAUTHORIZED:
		snprintf(checker->fix, sizeof(checker->fix),
			 "check the credential of user %s (context %s) in %s; a token may have "
			 "expired or been revoked, so issue a new token or client certificate",
			 config->user_name != NULL ? config->user_name : "(in-cluster)",
			 config->context != NULL ? config->context : "(none)", config->origin);
		break;
	case K8S_STATUS_TLS_VERIFY:
		snprintf(checker->fix, sizeof(checker->fix),
			 "set certificate-authority or certificate-authority-data of cluster %s in "
			 "%s to the CA that signed the API server's certificate, or tls-server-name "
			 "to a name that certificate is issued for",
			 config->cluster_name != NULL ? config->cluster_name : "(in-cluster)",
			 config->origin);
		break;
	default:
		snprintf(checker->fix, sizeof(checker->fix),
			 "check the server URL %s in %s and that this host can reach it",
			 config->server_url, config->origin);
		break;
	}
	return checker->fix;
}

/* Fills checker->fix for a 403 on VERB of RESOURCE in GROUP ("" for the core group). */
static const char *forbidden_fix(struct checker *checker, const char *verb, const char *resource,
				 const char *group)
{
	snprintf(checker->fix, sizeof(checker->fix),
		 "grant the identity %s on %s%s%s in namespace %s in its Role (" RBAC_FILE
		 " lists every verb sbx uses)",
		 verb, resource, group[0] != '\0' ? "." : "", group, checker->executor->namespace);
	return checker->fix;
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
		       status.status_class == K8S_STATUS_FORBIDDEN
			       ? "grant the identity get on the non-resource URL /version (the "
				 "default ClusterRole system:public-info-viewer does)"
			       : transport_fix(checker, &status),
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
			       transport_fix(checker, &status),
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

/* Configurations in which jobs use a verb. */
enum verb_use {
	USE_ALWAYS,
	USE_DIRECT, /* Sandboxes created from agent_sandbox.pod_template */
	USE_CLAIMS, /* agent_sandbox.warm_pools */
	USE_PDB, /* disruption_protection: per-job-pdb */
	USE_PROBE_ONLY, /* no job: only the doctor's enforcement probe */
};

struct verb {
	const char *group;
	const char *resource;
	const char *subresource;
	const char *verb;
	enum verb_use use;
	int probe; /* the doctor's enforcement probe needs it (and cleans up with it) */
};

/*
 * Every verb sbx sends in the namespace. get on sandboxclaims and sandboxes reads the object
 * when a retried create finds it exists, and get on sandboxes also reads the pod-name
 * annotation. list on them catches up after a watch's resourceVersion expired (410).
 */
static const struct verb verbs[] = {
	{ "extensions.agents.x-k8s.io", "sandboxclaims", NULL, "create", USE_CLAIMS, 0 },
	{ "extensions.agents.x-k8s.io", "sandboxclaims", NULL, "get", USE_CLAIMS, 0 },
	{ "extensions.agents.x-k8s.io", "sandboxclaims", NULL, "list", USE_CLAIMS, 0 },
	{ "extensions.agents.x-k8s.io", "sandboxclaims", NULL, "watch", USE_CLAIMS, 0 },
	{ "extensions.agents.x-k8s.io", "sandboxclaims", NULL, "delete", USE_CLAIMS, 0 },
	{ "extensions.agents.x-k8s.io", "sandboxwarmpools", NULL, "get", USE_CLAIMS, 0 },
	{ "extensions.agents.x-k8s.io", "sandboxtemplates", NULL, "get", USE_CLAIMS, 0 },
	{ "agents.x-k8s.io", "sandboxes", NULL, "get", USE_ALWAYS, 0 },
	{ "agents.x-k8s.io", "sandboxes", NULL, "list", USE_DIRECT, 0 },
	{ "agents.x-k8s.io", "sandboxes", NULL, "watch", USE_DIRECT, 0 },
	{ "agents.x-k8s.io", "sandboxes", NULL, "create", USE_DIRECT, 0 },
	{ "agents.x-k8s.io", "sandboxes", NULL, "delete", USE_DIRECT, 0 },
	{ "", "pods", NULL, "get", USE_ALWAYS, 1 },
	{ "", "pods", "exec", "get", USE_ALWAYS, 1 },
	{ "", "pods", "exec", "create", USE_ALWAYS, 1 },
	{ "networking.k8s.io", "networkpolicies", NULL, "create", USE_ALWAYS, 1 },
	{ "networking.k8s.io", "networkpolicies", NULL, "list", USE_ALWAYS, 0 },
	{ "networking.k8s.io", "networkpolicies", NULL, "patch", USE_DIRECT, 0 },
	{ "networking.k8s.io", "networkpolicies", NULL, "delete", USE_ALWAYS, 1 },
	{ "policy", "poddisruptionbudgets", NULL, "create", USE_PDB, 0 },
	{ "policy", "poddisruptionbudgets", NULL, "delete", USE_PDB, 0 },
	{ "", "pods", NULL, "create", USE_PROBE_ONLY, 1 },
	{ "", "pods", NULL, "delete", USE_PROBE_ONLY, 1 },
};

static int used_by_jobs(const struct sbx_agent_sandbox_config *settings, const struct verb *verb)
{
	switch (verb->use) {
	case USE_ALWAYS:
		return 1;
	case USE_DIRECT:
		return settings->pod_template != NULL;
	case USE_CLAIMS:
		return settings->warm_pool_count > 0;
	case USE_PDB:
		return settings->disruption_protection == SBX_DISRUPTION_PER_JOB;
	case USE_PROBE_ONLY:
		return 0;
	}
	return 0;
}

/* Appends "VERB RESOURCE[/SUBRESOURCE][.GROUP]" to the comma-separated list in BUF. */
static void append_verb(char *buf, size_t size, const struct verb *verb)
{
	size_t used = strlen(buf);

	if (used + 1 >= size)
		return;
	snprintf(buf + used, size - used, "%s%s %s%s%s%s%s", used > 0 ? ", " : "", verb->verb,
		 verb->resource, verb->subresource ? "/" : "",
		 verb->subresource ? verb->subresource : "", verb->group[0] != '\0' ? "." : "",
		 verb->group);
}

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

/*
 * Asks for every verb jobs use with this configuration, and for the probe's verbs when the
 * probe will run, so the probe is skipped before it creates what it could not delete.
 */
static void check_verbs(struct checker *checker)
{
	const struct sbx_agent_sandbox_config *settings = &checker->executor->config->agent_sandbox;
	int probe = settings->probe.destination != NULL;
	char missing[1024] = "";
	size_t checked = 0;

	for (size_t i = 0; i < SBX_ARRAY_SIZE(verbs); i++) {
		const struct verb *verb = &verbs[i];
		int jobs = used_by_jobs(settings, verb);
		struct sbx_error error;
		int answer;

		if (!jobs && !(probe && verb->probe))
			continue;
		sbx_error_clear(&error);
		answer = allowed(checker, verb, &error);
		if (answer < 0) {
			report(checker, SBX_CHECK_FAILED, "permissions", RBAC_FIX,
			       "SelfSubjectAccessReview failed: %s", error.message);
			return;
		}
		if (jobs)
			checked++;
		if (!answer && jobs)
			append_verb(missing, sizeof(missing), verb);
		if (!answer && probe && verb->probe)
			append_verb(checker->probe_missing, sizeof(checker->probe_missing), verb);
	}
	checker->probe_known = 1;
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
		if (status.status_class == K8S_STATUS_NOT_FOUND)
			report(checker, SBX_CHECK_FAILED, group,
			       "install Agent Sandbox with its extensions (the release's "
			       "sandbox-with-extensions.yaml)",
			       "API group not served (%s): %s not installed", error.message, kinds);
		else
			report(checker, SBX_CHECK_FAILED, group,
			       status.status_class == K8S_STATUS_FORBIDDEN
				       ? "grant the identity get on the non-resource URLs /apis and "
					 "/apis/* (the default ClusterRole system:discovery does)"
				       : transport_fix(checker, &status),
			       "cannot read the API group: %s", error.message);
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

/* Splits MESSAGE, which reads "what failed; the fix", into DETAIL and the returned fix. */
static const char *split_fix(const char *message, char *detail, size_t size)
{
	const char *separator = strstr(message, "; ");

	snprintf(detail, size, "%s", message);
	if (separator == NULL || (size_t) (separator - message) >= size)
		return NULL;
	detail[separator - message] = '\0';
	return separator + 2;
}

static void report_pool_failure(struct checker *checker, const char *name, const char *pool,
				const struct as_template_failure *failure,
				const struct sbx_error *error)
{
	char detail[SBX_ERROR_MESSAGE_MAX];
	const char *fix;

	if (failure->resource == NULL) {
		fix = split_fix(error->message, detail, sizeof(detail));
		report(checker, SBX_CHECK_FAILED, name, fix, "%s", detail);
		return;
	}
	switch (failure->status.status_class) {
	case K8S_STATUS_NOT_FOUND:
		if (strcmp(failure->resource, "sandboxwarmpools") == 0)
			snprintf(checker->fix, sizeof(checker->fix),
				 "create the pool in namespace %s (see "
				 "config-examples/kubernetes/warm-pool.yaml) or fix the pool name "
				 "in agent_sandbox.warm_pools",
				 checker->executor->namespace);
		else
			snprintf(checker->fix, sizeof(checker->fix),
				 "create the template (see config-examples/kubernetes/warm-pool.yaml) "
				 "or name an existing one in spec.sandboxTemplateRef of pool %s",
				 pool);
		fix = checker->fix;
		break;
	case K8S_STATUS_FORBIDDEN:
		fix = forbidden_fix(checker, "get", failure->resource, "extensions.agents.x-k8s.io");
		break;
	default:
		fix = transport_fix(checker, &failure->status);
		break;
	}
	report(checker, SBX_CHECK_FAILED, name, fix, "%s", error->message);
}

static void report_template_ok(struct checker *checker, const char *name,
			       struct json_object *template)
{
	const struct sbx_agent_sandbox_config *settings = &checker->executor->config->agent_sandbox;
	const char *template_name = as_json_string(template, "metadata.name");
	const char *management = as_json_string(template, "spec.networkPolicyManagement");

	if (settings->disruption_protection == SBX_DISRUPTION_SHARED &&
	    as_json_map_value(template, "spec.podTemplate.metadata.labels", AS_LABEL_SHARED_PDB) ==
		    NULL) {
		report(checker, SBX_CHECK_FAILED, name,
		       "add the label " AS_LABEL_SHARED_PDB ": " AS_SHARED_PDB_VALUE
		       " to the template's podTemplate.metadata.labels",
		       "disruption_protection is shared-pdb, but template %s does not carry the "
		       "shared PDB's label",
		       template_name);
		return;
	}
	/* as_template_check() passes only Unmanaged templates and Managed ones whose policy has
	 * an empty egress list. */
	if (management != NULL && strcmp(management, "Unmanaged") == 0)
		report(checker, SBX_CHECK_OK, name, NULL,
		       "template %s leaves the NetworkPolicy to sbx (networkPolicyManagement: "
		       "Unmanaged)",
		       template_name);
	else
		report(checker, SBX_CHECK_OK, name, NULL,
		       "the controller manages a NetworkPolicy for the pods of template %s that "
		       "allows no egress, so it adds nothing to a job's allow-list",
		       template_name);
}

static void check_pools(struct checker *checker)
{
	const struct sbx_agent_sandbox_config *settings = &checker->executor->config->agent_sandbox;

	for (size_t i = 0; i < settings->warm_pool_count; i++) {
		const char *pool = settings->warm_pools[i].pool;
		struct as_template_failure failure;
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
		if (as_template_check(checker->executor, pool, &template, &failure, &error) < 0) {
			report_pool_failure(checker, name, pool, &failure, &error);
			continue;
		}
		report_template_ok(checker, name, template);
		json_object_put(template);
	}
}

/* Whether the configuration offers a way to run a job, and whether pod_template is used. */
static void check_sandboxes(struct checker *checker)
{
	const struct sbx_agent_sandbox_config *settings = &checker->executor->config->agent_sandbox;
	size_t pools = settings->warm_pool_count, patterns = settings->allowed_images.count;
	int direct = settings->pod_template != NULL && patterns > 0;

	if (pools == 0 && !direct) {
		report(checker, SBX_CHECK_FAILED, "sandboxes",
		       "set agent_sandbox.warm_pools, or agent_sandbox.pod_template with "
		       "allowed_images",
		       "no warm pool and %s: no job can run",
		       settings->pod_template == NULL ? "no pod template"
						      : "no allowed_images for the pod template");
		return;
	}
	if (!direct)
		report(checker, SBX_CHECK_OK, "sandboxes", NULL,
		       "jobs run in warm pools (%zu image pattern%s)", pools, pools == 1 ? "" : "s");
	else if (pools == 0)
		report(checker, SBX_CHECK_OK, "sandboxes", NULL, "jobs run in direct Sandboxes");
	else
		report(checker, SBX_CHECK_OK, "sandboxes", NULL,
		       "jobs run in warm pools (%zu image pattern%s) and in direct Sandboxes",
		       pools, pools == 1 ? "" : "s");

	if (settings->pod_template == NULL)
		return;
	if (!direct)
		report(checker, SBX_CHECK_WARNING, "direct Sandbox",
		       "list the images in agent_sandbox.allowed_images",
		       "agent_sandbox.pod_template is set but allowed_images is empty, so no job "
		       "uses it");
	else
		report(checker, SBX_CHECK_OK, "direct Sandbox", NULL,
		       "agent_sandbox.pod_template runs the images of %zu allowed_images "
		       "pattern%s",
		       patterns, patterns == 1 ? "" : "s");
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
		report(checker, SBX_CHECK_FAILED, "NetworkPolicies",
		       status.status_class == K8S_STATUS_FORBIDDEN
			       ? forbidden_fix(checker, "list", "networkpolicies", "networking.k8s.io")
			       : transport_fix(checker, &status),
		       "%s", error.message);
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
		check_sandboxes(&checker);
		check_policies(&checker);
		check_probe_config(&checker);
		as_check_enforcement(executor, callback, userdata,
				     checker.probe_known ? checker.probe_missing : NULL,
				     &checker.failed);
	}
	if (checker.failed)
		return sbx_error_set(error, SBX_ERROR_SYSTEM, "the agent-sandbox backend is not "
				     "ready");
	return 0;
}
