/* SPDX-License-Identifier: MIT */
/*
 * The agent-sandbox backend: one Agent Sandbox per job, either a SandboxClaim against a warm
 * pool or a Sandbox built from the configured pod template, a per-job NetworkPolicy and
 * PodDisruptionBudget, and steps run through pods/exec with their output and status recorded
 * inside the pod (durable steps).
 */
#ifndef SBX_AGENT_SANDBOX_H
#define SBX_AGENT_SANDBOX_H

#include <stddef.h>
#include <stdint.h>

#include "allowlist.h"
#include "config.h"
#include "journal.h"
#include "sbx/executor.h"

#include "netpol.h"

#include "k8s/kubeconfig.h"
#include "k8s/rest.h"

#define AS_BACKEND_NAME "agent-sandbox"
/* Format of the backend data in a journal entry. */
#define AS_DATA_FORMAT 1

#define AS_SANDBOX_GROUP_VERSION "agents.x-k8s.io/v1beta1"
#define AS_EXTENSIONS_GROUP_VERSION "extensions.agents.x-k8s.io/v1beta1"
#define AS_LABEL_NAME_HASH "agents.x-k8s.io/sandbox-name-hash"
#define AS_LABEL_LAUNCH_TYPE "agents.x-k8s.io/launch-type"
#define AS_ANNOTATION_POD_NAME "agents.x-k8s.io/pod-name"
#define AS_LABEL_SHARED_PDB "sandbox-disruption-policy"
#define AS_SHARED_PDB_VALUE "manual-protection"

/* Labels sbx puts on every object it creates, so operators and sbx can find them. */
#define AS_LABEL_MANAGED_BY "app.kubernetes.io/managed-by"
#define AS_LABEL_PREFIX "sbx.dev/"
#define AS_LABEL_ID AS_LABEL_PREFIX "sandbox-id"

/* Seconds from a sandbox's deadline to its shutdownTime. */
#define AS_BACKSTOP_DELAY_S 600

/* Bound on waiting for another prepare, cleanup or gc of the same id. */
#define AS_LOCK_TIMEOUT_MS 30000

struct json_object;
struct k8s_status;

struct sbx_executor {
	struct sbx_config *config;
	struct sbx_journal journal;
	/* Connected on first use: list() works without a cluster. */
	struct k8s_config *k8s_config;
	struct k8s_client *client;
	const char *namespace; /* the configured one, else the kubeconfig context's */
};

/* Everything sbx created for one sandbox, as the journal records it. */
struct as_sandbox {
	char id[SBX_ID_MAX + 1];
	char *namespace;
	int direct; /* 1: a Sandbox sbx created; 0: a SandboxClaim */
	char *pool;
	char *claim; /* claim name (the id) on the claim path */
	char *sandbox; /* Sandbox name; differs from the claim's after a warm adoption */
	char *owner_uid; /* uid of the claim or the direct Sandbox */
	char *pod;
	char *pod_uid;
	char *container;
	char *name_hash;
	char *network_policy;
	int network_policy_owned; /* carries an ownerReference to the claim or Sandbox */
	char *pdb;
	int pdb_owned;
	char *step_dir;
	int64_t backstop; /* shutdownTime, Unix seconds */
};

void as_sandbox_clear(struct as_sandbox *sandbox);
struct json_object *as_sandbox_to_json(const struct as_sandbox *sandbox);
int as_sandbox_from_entry(const struct sbx_journal_entry *entry, struct as_sandbox *sandbox,
			  struct sbx_error *error);
/* Marker written inside the pod at prepare; a step that does not find it is in another pod. */
char *as_sandbox_marker(const struct as_sandbox *sandbox);

/* backend.c */
int as_connect(struct sbx_executor *executor, struct sbx_error *error);
/* Absolute deadline SECONDS from now, for one API call or a bounded sequence of them. */
int64_t as_deadline(int64_t seconds);

/* json.c: small helpers over json-c */
const char *as_json_string(struct json_object *object, const char *path);
struct json_object *as_json_get(struct json_object *object, const char *path);
/* The string under KEY (which may contain dots, as label keys do) in the map at MAP_PATH. */
const char *as_json_map_value(struct json_object *object, const char *map_path, const char *key);
/* Finds status.conditions[type == TYPE]. */
struct json_object *as_condition(struct json_object *object, const char *type);
/* FNV-1a 32-bit of NAME as 8 lower-case hex digits: the controller's sandbox-name-hash. */
void as_name_hash(const char *name, char out[9]);
/* Adds "KEY": "VALUE" to OBJECT; returns -1 when out of memory. */
int as_json_add_string(struct json_object *object, const char *key, const char *value);
struct json_object *as_json_object_path(struct json_object *object, const char *path);
/* The owner labels of the sandbox ID and OWNER, plus agent_sandbox.labels. */
struct json_object *as_owner_labels(const struct sbx_config *config, const char *id,
				    const struct sbx_owner *owner);
struct json_object *as_string_map_json(const struct sbx_string_map *map);
struct json_object *as_owner_reference(const struct as_sandbox *sandbox);
/* Formats Unix time as RFC 3339 UTC with seconds. */
void as_format_time(int64_t when, char *buf, size_t size);
/* Fails with a message naming WHAT and the API's response; a 403 names the missing verb. */
int as_api_error(struct sbx_error *error, const struct k8s_status *status, const char *what);

/* settings.c */
int as_settings_check(const struct sbx_config *config, struct sbx_error *error);
/* Picks the warm pool for IMAGE (*POOL) or the direct path (*POOL NULL); BUILD error when
 * the image is allowed neither way. */
int as_select_pool(const struct sbx_config *config, const char *image, const char **pool,
		   struct sbx_error *error);
/* The allow-list a NetworkPolicy enforces: both network lists plus the CI server. */
int as_egress_allowlist(const struct sbx_config *config, const char *ci_server_url,
			struct sbx_allowlist *list, struct sbx_error *error);
int as_image_pattern_match(const char *pattern, const char *image);

/* sandbox.c */
int as_sandbox_create(struct sbx_executor *executor, struct as_sandbox *sandbox,
		      const struct sbx_job_spec *spec, char **resource_version,
		      struct sbx_error *error);
int as_sandbox_wait_ready(struct sbx_executor *executor, struct as_sandbox *sandbox,
			  const char *resource_version, int *warm, struct sbx_error *error);
int as_sandbox_read_pod(struct sbx_executor *executor, struct as_sandbox *sandbox,
			struct json_object **pod, struct sbx_error *error);

/* template.c */
/* The request of a template check that failed, so the doctor can give the fix that fits. */
struct as_template_failure {
	/* "sandboxwarmpools" or "sandboxtemplates"; NULL when both were read and the check
	 * rejected them, and then the error message reads "what failed; the fix". */
	const char *resource;
	struct k8s_status status;
};

/* Checks the template of warm pool POOL through the pool; *TEMPLATE gets it when not NULL.
 * On failure *FAILURE names the request that failed. */
int as_template_check(struct sbx_executor *executor, const char *pool, struct json_object **template,
		      struct as_template_failure *failure, struct sbx_error *error);

/* netpol.c */
int as_netpol_create(struct sbx_executor *executor, struct as_sandbox *sandbox,
		     const struct as_egress *egress, struct sbx_error *error);
/*
 * Direct path: makes the Sandbox the owner of its NetworkPolicy, created before the Sandbox,
 * so the cluster deletes the policy with the Sandbox even when no journal entry is left.
 */
int as_netpol_adopt(struct sbx_executor *executor, struct as_sandbox *sandbox,
		    struct sbx_error *error);
/* Sets *REJECTED when it fails because a policy selects the pod, not because of the API. */
int as_netpol_check_others(struct sbx_executor *executor, const struct as_sandbox *sandbox,
			   struct json_object *pod, const struct as_egress *egress, int *rejected,
			   struct sbx_error *error);

/* rejection.c: a policy rejection that the next attempts of the same JOB would meet again. */
int as_rejection_check(struct sbx_executor *executor, const char *pool, const char *job,
		     struct sbx_error *error);
void as_rejection_remember(struct sbx_executor *executor, const char *pool, const char *job,
			 const char *message);
/* Returns 1 when SELECTOR (a LabelSelector) selects LABELS, 0 otherwise. */
int as_selector_matches(struct json_object *selector, struct json_object *labels);
/* Returns 1 when POLICY's egress stays within EGRESS (and DNS when DNS_ALLOWED); on 0 fills
 * REASON with the first rule that goes beyond. */
int as_netpol_within(struct json_object *policy, const struct as_egress *egress,
		     int dns_allowed, char *reason, size_t size);

/* pdb.c */
int as_pdb_create(struct sbx_executor *executor, struct as_sandbox *sandbox,
		  struct sbx_error *error);

/* probe.c: fails when agent_sandbox.probe.destination is malformed or on the job's
 * allow-list EGRESS. */
int as_probe_check_destination(struct sbx_executor *executor, const struct as_egress *egress,
			       struct sbx_error *error);
/* probe.c: creates the step directory, the builds and cache directories and probes egress. */
int as_pod_setup(struct sbx_executor *executor, const struct as_sandbox *sandbox,
		 struct sbx_error *error);

/* prepare.c */
int as_prepare(struct sbx_executor *executor, const struct sbx_job_spec *spec,
	       struct sbx_error *error);

/* step.c */
int as_exec(struct sbx_executor *executor, const struct sbx_exec_spec *spec, int *exit_status,
	    struct sbx_error *error);
/* The step wrapper, which prepare installs in the step directory under the file name that
 * as_step_wrapper_name() gives (a hash of the text: another sbx version looks for another
 * file). */
#define AS_STEP_WRAPPER_NAME_MAX 24
const char *as_step_wrapper(size_t *length);
void as_step_wrapper_name(char name[AS_STEP_WRAPPER_NAME_MAX]);
/* The `sh -c` text of an exec: it runs the installed wrapper ($0), or with BOOTSTRAP reads
 * the wrapper from stdin first ($1 its length) and installs it as $0. */
const char *as_step_launcher(int bootstrap);

/* gc.c */
/* Deletes what SANDBOX records; objects already gone count as deleted. */
int as_teardown(struct sbx_executor *executor, const struct as_sandbox *sandbox,
		struct sbx_error *error);
int as_destroy(struct sbx_executor *executor, const char *id, struct sbx_error *error);
int as_list(struct sbx_executor *executor, sbx_list_fn callback, void *userdata,
	    struct sbx_error *error);

/* probe.c: the probe alone, in a pod of `sbx doctor`; returns 1 when DESTINATION is reachable,
 * 0 when not, -1 on failure. */
int as_probe_reachable(struct sbx_executor *executor, const struct as_sandbox *sandbox,
		       struct sbx_error *error);

/* doctor_probe.c: starts a pod under a deny-all policy and probes from it. MISSING lists the
 * verbs the probe needs that the identity lacks ("" for none, NULL when unknown). The probe
 * runs only when it is "", because otherwise it could leave objects behind. */
void as_check_enforcement(struct sbx_executor *executor, sbx_check_fn callback, void *userdata,
			  const char *missing, int *failed);

/* checks.c */
int as_check(struct sbx_executor *executor, sbx_check_fn callback, void *userdata,
	     struct sbx_error *error);

#endif /* SBX_AGENT_SANDBOX_H */
