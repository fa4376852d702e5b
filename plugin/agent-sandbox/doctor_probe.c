/* SPDX-License-Identifier: MIT */
/*
 * The doctor's enforcement check: a short-lived pod under a policy that denies all egress
 * tries to reach agent_sandbox.probe.destination. If it gets through, the cluster ignores
 * NetworkPolicies and every job would fail its own probe.
 */
#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent_sandbox.h"
#include "cleanup.h"
#include "error.h"
#include "log.h"
#include "util.h"

#include "k8s/rest.h"
#include "k8s/status.h"

#define CHECK_NAME "NetworkPolicy enforcement"
/* Label of the probe's pod and NetworkPolicy, whose value is their name. The policy selects
 * the pod by it, and `kubectl delete pods,networkpolicies -l sbx.dev/doctor` removes what a
 * doctor left behind. */
#define LABEL_DOCTOR AS_LABEL_PREFIX "doctor"
/* Used when agent_sandbox.probe.image is unset: it has sh, sleep, timeout and nc. */
#define DEFAULT_PROBE_IMAGE "busybox:1.36"
#define POD_READY_TIMEOUT_S 90
/* The pod ends on its own after this, should the doctor die before deleting it. */
#define POD_LIFETIME_S 300

static struct json_object *probe_pod(const struct sbx_agent_sandbox_config *settings,
				     const char *name)
{
	struct json_object *pod = json_object_new_object(), *spec, *containers, *container;
	struct json_object *command = json_object_new_array();

	as_json_add_string(pod, "apiVersion", "v1");
	as_json_add_string(pod, "kind", "Pod");
	as_json_add_string(as_json_object_path(pod, "metadata"), "name", name);
	as_json_add_string(as_json_object_path(pod, "metadata.labels"), AS_LABEL_MANAGED_BY, "sbx");
	as_json_add_string(as_json_object_path(pod, "metadata.labels"), LABEL_DOCTOR, name);
	spec = as_json_object_path(pod, "spec");
	json_object_object_add(spec, "automountServiceAccountToken", json_object_new_boolean(0));
	as_json_add_string(spec, "restartPolicy", "Never");
	json_object_object_add(spec, "activeDeadlineSeconds", json_object_new_int(POD_LIFETIME_S));
	if (settings->runtime_class_name != NULL)
		as_json_add_string(spec, "runtimeClassName", settings->runtime_class_name);
	if (settings->node_selector.count > 0)
		json_object_object_add(spec, "nodeSelector",
				       as_string_map_json(&settings->node_selector));
	if (settings->tolerations != NULL)
		json_object_object_add(spec, "tolerations", json_object_get(settings->tolerations));
	containers = json_object_new_array();
	container = json_object_new_object();
	as_json_add_string(container, "name", "probe");
	as_json_add_string(container, "image", settings->probe.image != NULL ? settings->probe.image
									     : DEFAULT_PROBE_IMAGE);
	json_object_array_add(command, json_object_new_string("sleep"));
	json_object_array_add(command, json_object_new_string("300"));
	json_object_object_add(container, "command", command);
	json_object_array_add(containers, container);
	json_object_object_add(spec, "containers", containers);
	return pod;
}

static struct json_object *deny_policy(const char *name)
{
	struct json_object *policy = json_object_new_object(), *spec, *types;

	as_json_add_string(policy, "apiVersion", "networking.k8s.io/v1");
	as_json_add_string(policy, "kind", "NetworkPolicy");
	as_json_add_string(as_json_object_path(policy, "metadata"), "name", name);
	as_json_add_string(as_json_object_path(policy, "metadata.labels"), AS_LABEL_MANAGED_BY,
			   "sbx");
	as_json_add_string(as_json_object_path(policy, "metadata.labels"), LABEL_DOCTOR, name);
	spec = as_json_object_path(policy, "spec");
	as_json_add_string(as_json_object_path(spec, "podSelector.matchLabels"), LABEL_DOCTOR,
			   name);
	types = json_object_new_array();
	json_object_array_add(types, json_object_new_string("Egress"));
	json_object_object_add(spec, "policyTypes", types);
	json_object_object_add(spec, "egress", json_object_new_array());
	return policy;
}

static int wait_running(struct sbx_executor *executor, const char *path, struct sbx_error *error)
{
	int64_t deadline = as_deadline(POD_READY_TIMEOUT_S);

	while (sbx_monotonic_ms() < deadline) {
		struct json_object *pod = NULL, *ready;
		struct k8s_status status;
		int done;

		if (k8s_rest_get(executor->client, path, deadline, &pod, &status, error) < 0)
			return -1;
		ready = as_condition(pod, "Ready");
		done = ready != NULL && as_json_string(ready, "status") != NULL &&
		       strcmp(as_json_string(ready, "status"), "True") == 0;
		json_object_put(pod);
		if (done)
			return 0;
		usleep(250 * 1000);
	}
	return sbx_error_set(error, SBX_ERROR_SYSTEM, "the probe pod is not ready after %d s",
			     POD_READY_TIMEOUT_S);
}

/* Deletes the probe's object at PATH; returns 0 when it is gone. */
static int delete_probe_object(struct sbx_executor *executor, const char *path,
			       struct sbx_error *error)
{
	struct k8s_status status;

	if (k8s_rest_delete(executor->client, path, "Background", as_deadline(30), NULL, &status,
			    error) < 0 &&
	    status.status_class != K8S_STATUS_NOT_FOUND)
		return -1;
	sbx_error_clear(error);
	return 0;
}

/*
 * Deletes the probe's pod and policy. What cannot be deleted is reported with the command that
 * removes it, because nothing else does: `sbx gc` reads only the journal's sandboxes.
 */
static void remove_probe(struct sbx_executor *executor, sbx_check_fn callback, void *userdata,
			 const char *name, const char *pod_path, int have_pod,
			 const char *policy_path, int have_policy)
{
	struct sbx_error error;
	char detail[1400], fix[300];
	const char *left = NULL;

	sbx_error_clear(&error);
	/* The pod goes first, so it never runs without its deny-all policy. */
	if (have_pod && delete_probe_object(executor, pod_path, &error) < 0)
		left = have_policy ? "pod and NetworkPolicy" : "pod";
	else if (have_policy && delete_probe_object(executor, policy_path, &error) < 0)
		left = "NetworkPolicy";
	if (left == NULL)
		return;
	snprintf(detail, sizeof(detail), "cannot delete the probe's %s %s/%s: %s", left,
		 executor->namespace, name, error.message);
	snprintf(fix, sizeof(fix),
		 "run kubectl -n %s delete pods,networkpolicies -l " LABEL_DOCTOR
		 " with an identity that may delete them",
		 executor->namespace);
	callback(userdata, SBX_CHECK_WARNING, CHECK_NAME, detail, fix);
}

void as_check_enforcement(struct sbx_executor *executor, sbx_check_fn callback, void *userdata,
			  const char *missing, int *failed)
{
	const struct sbx_agent_sandbox_config *settings = &executor->config->agent_sandbox;
	_cleanup_free_ char *pods = NULL, *pod_path = NULL, *policies = NULL, *policy_path = NULL;
	struct as_sandbox sandbox;
	struct json_object *body;
	struct k8s_status status;
	struct sbx_error error;
	char name[32], random[9], detail[1200];
	int reachable = -1, have_pod = 0, have_policy = 0;

	if (settings->probe.destination == NULL || callback == NULL)
		return;
	/* Decided before anything is created: a probe that may create its policy or pod but
	 * not delete them would leave one of each behind on every run. */
	if (missing == NULL) {
		callback(userdata, SBX_CHECK_WARNING, CHECK_NAME,
			 "skipped: the permissions the probe pod needs could not be checked",
			 "fix the permissions check above; each job still probes its own pod");
		return;
	}
	if (missing[0] != '\0') {
		snprintf(detail, sizeof(detail),
			 "skipped: the identity may not %s in namespace %s, which the probe needs "
			 "to run its pod and delete it afterwards",
			 missing, executor->namespace);
		callback(userdata, SBX_CHECK_WARNING, CHECK_NAME, detail,
			 "grant create, get and delete on pods, get and create on pods/exec, and "
			 "create and delete on networkpolicies to an identity that runs sbx doctor, "
			 "or run it once with an administrator's kubeconfig; each job still probes "
			 "its own pod");
		return;
	}
	if (sbx_random_hex(random, 4) < 0)
		return;
	snprintf(name, sizeof(name), "sbx-doctor-%s", random);
	if (asprintf(&pods, "/api/v1/namespaces/%s/pods", executor->namespace) < 0 ||
	    asprintf(&pod_path, "%s/%s", pods, name) < 0 ||
	    asprintf(&policies, "/apis/networking.k8s.io/v1/namespaces/%s/networkpolicies",
		     executor->namespace) < 0 ||
	    asprintf(&policy_path, "%s/%s", policies, name) < 0)
		return;
	sbx_error_clear(&error);

	/* The policy comes first, so the pod is never unrestricted. */
	body = deny_policy(name);
	have_policy = k8s_rest_create(executor->client, policies, body, as_deadline(30), NULL,
				      &status, &error) == 0;
	json_object_put(body);
	if (have_policy) {
		body = probe_pod(settings, name);
		have_pod = k8s_rest_create(executor->client, pods, body, as_deadline(30), NULL,
					   &status, &error) == 0;
		json_object_put(body);
	}
	if (have_pod && wait_running(executor, pod_path, &error) == 0) {
		memset(&sandbox, 0, sizeof(sandbox));
		snprintf(sandbox.id, sizeof(sandbox.id), "%s", name);
		sandbox.namespace = (char *) executor->namespace;
		sandbox.pod = name;
		sandbox.container = (char *) "probe";
		sandbox.step_dir = (char *) "/tmp";
		reachable = as_probe_reachable(executor, &sandbox, &error);
	}

	if (reachable == 0) {
		callback(userdata, SBX_CHECK_OK, CHECK_NAME, "a pod under a deny-all policy cannot "
			 "reach the probe destination", NULL);
	} else if (reachable == 1) {
		snprintf(detail, sizeof(detail), "a pod under a deny-all NetworkPolicy still reaches "
			 "%s: the cluster does not enforce NetworkPolicies, so every job fails",
			 settings->probe.destination);
		callback(userdata, SBX_CHECK_FAILED, CHECK_NAME, detail,
			 "use a CNI that enforces NetworkPolicies (Calico, Cilium, GKE Dataplane "
			 "V2)");
		*failed = 1;
	} else {
		snprintf(detail, sizeof(detail), "cannot run the probe pod: %s", error.message);
		callback(userdata, SBX_CHECK_WARNING, CHECK_NAME, detail,
			 "set agent_sandbox.probe.image to an image with sh, timeout and nc that "
			 "the nodes can pull, and check the pod's events; each job still probes its "
			 "own pod");
	}

	remove_probe(executor, callback, userdata, name, pod_path, have_pod, policy_path,
		     have_policy);
}
