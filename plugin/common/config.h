/* SPDX-License-Identifier: MIT */
/*
 * The sbx configuration file (YAML). Both the shim and every plugin read it through this module,
 * so a key means the same thing everywhere. docs/config.md documents every key.
 */
#ifndef SBX_CONFIG_H
#define SBX_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "sbx/executor.h"

struct json_object;

/* A list of strings, e.g. allow-list entries or masked paths. */
struct sbx_string_list {
	char **items;
	size_t count;
};

/* One entry of local.images: a job image pattern and the root filesystem it maps to. */
struct sbx_image_map_entry {
	char *pattern; /* exact image name, or a prefix ending in '*' */
	char *rootfs;
};

enum sbx_unmapped_image {
	SBX_UNMAPPED_IMAGE_IGNORE = 0, /* run on the default root and say so in the job log */
	SBX_UNMAPPED_IMAGE_REJECT = 1, /* fail prepare */
};

enum sbx_local_mode {
	SBX_LOCAL_MODE_AUTO = 0, /* root when euid is 0, unprivileged otherwise */
	SBX_LOCAL_MODE_ROOT = 1,
	SBX_LOCAL_MODE_UNPRIVILEGED = 2,
};

struct sbx_local_config {
	enum sbx_local_mode mode;
	/* Root mode: the job's user namespace maps ids 0..65535 onto host ids from id_map_base. */
	uid_t id_map_base;
	/* The uid and gid the job runs as inside the sandbox. */
	uid_t job_uid;
	gid_t job_gid;
	/* Unprivileged mode without newuidmap: run the job as the runner's own uid only when set. */
	int allow_runner_uid;
	/* Fail a job whose cgroup cannot be created (default); when 0, run it without cgroup
	 * limits and end each stage through a nested pid namespace. */
	int require_cgroup;
	/* Default root filesystem directory; NULL means the host's root, read-only. */
	char *rootfs;
	struct sbx_image_map_entry *images;
	size_t image_count;
	enum sbx_unmapped_image unmapped_image;
	/* Paths masked in addition to the built-in list. */
	struct sbx_string_list masked_paths;
	/* Size limit of the private /tmp, bytes. */
	uint64_t tmp_size;
	/* Host directory under which per-project caches live. NULL: <state_dir>/cache. */
	char *cache_dir;
	/* cgroup limits; 0 means no limit. cpu is in thousandths of a CPU (1500 = 1.5 CPUs). */
	uint64_t memory_max;
	uint64_t pids_max;
	uint64_t cpu_max_millis;
	/* Host path of the gitlab-runner binary to expose inside the sandbox; NULL: search PATH. */
	char *gitlab_runner_path;
	/* Hostname inside the sandbox. */
	char *hostname;
};

struct sbx_network_config {
	/* Allow-lists in the shared syntax: host, *.domain, IP or CIDR, each with optional :port. */
	struct sbx_string_list runner_allow;
	struct sbx_string_list user_allow;
	/* Allow the CI server's host for runner stages. */
	int allow_ci_server;
	/* Port of the egress proxy inside the sandbox, on 127.0.0.1. */
	uint16_t proxy_port;
};

/* A mapping of strings to strings, in the order written: labels, annotations, selectors. */
struct sbx_string_map {
	char **keys;
	char **values;
	size_t count;
};

/* One agent_sandbox.warm_pools entry: a job image pattern and the SandboxWarmPool to claim from. */
struct sbx_warm_pool_entry {
	char *pattern; /* exact image name, a prefix ending in '*', or "*" for every job */
	char *pool;
};

enum sbx_disruption_protection {
	SBX_DISRUPTION_NONE = 0,
	/* A PodDisruptionBudget per job with maxUnavailable 0, owned by the claim or Sandbox. */
	SBX_DISRUPTION_PER_JOB = 1,
	/* The shared namespace PDB selects pods by the sandbox-disruption-policy label. */
	SBX_DISRUPTION_SHARED = 2,
};

struct sbx_agent_sandbox_dns_config {
	/* Allow DNS (UDP and TCP port 53) to the cluster's DNS pods and DNS_CIDRS. */
	int allow;
	char *namespace;
	struct sbx_string_map pod_labels;
	struct sbx_string_list cidrs;
};

struct sbx_agent_sandbox_probe_config {
	/* IP:port outside the allow-list that the pod could reach without the NetworkPolicy. */
	char *destination;
	/* Fail prepare when no destination is configured. */
	int required;
	/* Seconds the probe may take, retries included, before the policy counts as unenforced. */
	int64_t timeout;
	/* Image of the pod `sbx doctor` starts to test enforcement. */
	char *image;
};

struct sbx_agent_sandbox_config {
	/* kubeconfig file; NULL: $KUBECONFIG, ~/.kube/config, or the in-cluster configuration. */
	char *kubeconfig;
	char *context;
	/* Use the pod's service account even when a kubeconfig exists. */
	int in_cluster;
	/* Namespace of every object sbx creates; NULL: the kubeconfig context's. */
	char *namespace;
	struct sbx_warm_pool_entry *warm_pools;
	size_t warm_pool_count;
	/* PodTemplateSpec (metadata and spec) of a direct Sandbox, as JSON; NULL: no direct mode. */
	struct json_object *pod_template;
	/* Image patterns a direct Sandbox may run. */
	struct sbx_string_list allowed_images;
	/* Container steps run in; NULL: the first container. */
	char *container;
	char *runtime_class_name;
	struct json_object *resources; /* core/v1 ResourceRequirements */
	struct sbx_string_map node_selector;
	struct json_object *tolerations; /* list of core/v1 Toleration */
	char *service_account;
	int automount_service_account_token;
	/* Labels and annotations of the claim or Sandbox; pod labels need an allowed domain. */
	struct sbx_string_map labels;
	struct sbx_string_map pod_labels;
	struct sbx_string_list allowed_label_domains;
	struct sbx_string_map annotations;
	struct sbx_agent_sandbox_dns_config dns;
	struct sbx_agent_sandbox_probe_config probe;
	/* Other NetworkPolicies of the namespace that may select a job's pod. */
	struct sbx_string_list accepted_policies;
	enum sbx_disruption_protection disruption_protection;
	/* Seconds prepare waits for the sandbox to become ready. */
	int64_t ready_timeout;
	/* Directory inside the pod that records each step's output and exit status. */
	char *step_dir;
};

struct sbx_config {
	/* Path the configuration came from; NULL for built-in defaults. */
	char *path;
	/* "local" or "agent-sandbox". */
	char *backend;
	/* Directory holding sbx-<backend>.so; NULL means the installed default. */
	char *plugin_dir;
	/* Directory of the state journal; NULL means the default for this user. */
	char *state_dir;
	/* Shell used for scripts: "bash" or "sh". */
	char *shell;
	/* Default job timeout when the CI system gives none, seconds. */
	int64_t default_job_timeout;
	/* Time added to a job's timeout before `sbx gc` may reclaim its sandbox, seconds. */
	int64_t deadline_margin;
	/* Bound on `sbx gitlab cleanup`, seconds. */
	int64_t cleanup_timeout;
	/* Seconds between SIGTERM and SIGKILL of a cancelled step's processes. */
	int64_t stop_grace;
	enum sbx_log_level log_level;
	struct sbx_local_config local;
	struct sbx_network_config network;
	struct sbx_agent_sandbox_config agent_sandbox;
};

/*
 * Loads PATH; NULL means built-in defaults only. Unknown keys and bad values fail with an
 * SBX_ERROR_INVALID message naming the file, line, key and the fix.
 */
int sbx_config_load(const char *path, struct sbx_config **config, struct sbx_error *error);
void sbx_config_free(struct sbx_config *config);

/*
 * Picks the configuration path: EXPLICIT (from --config) if set, else $SBX_CONFIG, else the
 * installed default (SBX_SYSCONFDIR "/sbx/config.yaml") when that file exists, else NULL.
 */
const char *sbx_config_default_path(const char *explicit_path);

/* The state directory: configured, else /var/lib/sbx for root, else $XDG_STATE_HOME/sbx. The
 * caller frees the result. */
char *sbx_config_state_dir(const struct sbx_config *config);

/*
 * Finds the local.images entry for IMAGE: an exact pattern first, else the longest prefix
 * pattern (ending in '*') that IMAGE starts with. NULL when nothing matches.
 */
const struct sbx_image_map_entry *sbx_config_find_image(const struct sbx_config *config,
							 const char *image);

#endif /* SBX_CONFIG_H */
