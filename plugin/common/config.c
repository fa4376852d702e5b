/* SPDX-License-Identifier: MIT */
/*
 * Loads the sbx YAML configuration with libyaml's document API. The YAML keys are the field
 * names of struct sbx_config. A table per mapping defines how each key is parsed and checked,
 * so the key names, the checks and the defaults each live in one place. This file walks the
 * mappings; config_value.c parses and checks single values.
 */
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#include "cleanup.h"
#include "config.h"
#include "config_value.h"
#include "error.h"
#include "util.h"

#ifndef SBX_SYSCONFDIR
#define SBX_SYSCONFDIR "/etc"
#endif

/* A configuration file is a few kilobytes; the cap keeps a wrong path (a disk image, a log)
 * from being read whole into memory. */
#define CONFIG_FILE_MAX (1024 * 1024)

/* Keeps created + timeout + margin far from int64_t overflow. */
#define SECONDS_MAX INT32_MAX

/* The job's user namespace maps ids 0..65535. */
#define JOB_ID_RANGE 65536

/* The man page, because the docs directory is not on every host that runs sbx. */
#define DOCS_HINT "See sbx-config(5)"

#define FIELD(type, member) .offset = offsetof(type, member), .size = sizeof(((type *) 0)->member)
#define LOCAL(member) FIELD(struct sbx_local_config, member)
#define NETWORK(member) FIELD(struct sbx_network_config, member)
#define TOP(member) FIELD(struct sbx_config, member)
#define AGENT(member) FIELD(struct sbx_agent_sandbox_config, member)
#define DNS(member) FIELD(struct sbx_agent_sandbox_dns_config, member)
#define PROBE(member) FIELD(struct sbx_agent_sandbox_probe_config, member)

static const char *const backend_words[] = { "local", "agent-sandbox", NULL };
static const char *const shell_words[] = { "bash", "sh", NULL };
/* In the order of enum sbx_log_level, enum sbx_local_mode and enum sbx_unmapped_image. */
static const char *const log_level_words[] = { "error", "warning", "info", "debug", NULL };
static const char *const mode_words[] = { "auto", "root", "unprivileged", NULL };
static const char *const unmapped_words[] = { "ignore", "reject", NULL };
/* In the order of enum sbx_disruption_protection. */
static const char *const disruption_words[] = { "none", "per-job-pdb", "shared-pdb", NULL };

#define ID_MAP_REASON                                                                          \
	"the job's ids 0-65535 map onto id_map_base and the 65535 ids after it, which must "  \
	"stay clear of the host's own accounts (0-65535) and of the invalid id 4294967295"
#define JOB_ID_REASON "the job's user namespace maps only the ids 0-65535"

static const struct config_key local_keys[] = {
	{ .name = "mode", .kind = KEY_ENUM, LOCAL(mode), .words = mode_words },
	{ .name = "id_map_base", .kind = KEY_INT, LOCAL(id_map_base), .min = JOB_ID_RANGE,
	  .max = (int64_t) UINT32_MAX - JOB_ID_RANGE,
	  .below_reason = ID_MAP_REASON, .above_reason = ID_MAP_REASON },
	{ .name = "job_uid", .kind = KEY_INT, LOCAL(job_uid), .min = 1, .max = JOB_ID_RANGE - 1,
	  .below_reason = "0 is root inside the sandbox, and in unprivileged mode it is the "
			  "runner's own uid",
	  .above_reason = JOB_ID_REASON },
	{ .name = "job_gid", .kind = KEY_INT, LOCAL(job_gid), .min = 1, .max = JOB_ID_RANGE - 1,
	  .below_reason = "0 is the root group inside the sandbox, and in unprivileged mode it "
			  "is the runner's own gid",
	  .above_reason = JOB_ID_REASON },
	{ .name = "allow_runner_uid", .kind = KEY_BOOL, LOCAL(allow_runner_uid) },
	{ .name = "require_cgroup", .kind = KEY_BOOL, LOCAL(require_cgroup) },
	{ .name = "rootfs", .kind = KEY_PATH, LOCAL(rootfs) },
	{ .name = "images", .kind = KEY_IMAGES },
	{ .name = "unmapped_image", .kind = KEY_ENUM, LOCAL(unmapped_image),
	  .words = unmapped_words },
	{ .name = "masked_paths", .kind = KEY_PATH_LIST, LOCAL(masked_paths) },
	/* tmpfs reads size=0 as "no limit", so 0 is rejected: /tmp is always bounded. */
	{ .name = "tmp_size", .kind = KEY_SIZE, LOCAL(tmp_size), .min = 1,
	  .below_reason = "a tmpfs of size 0 has no limit at all" },
	{ .name = "cache_dir", .kind = KEY_PATH, LOCAL(cache_dir) },
	{ .name = "memory_max", .kind = KEY_SIZE, LOCAL(memory_max) },
	{ .name = "pids_max", .kind = KEY_INT, LOCAL(pids_max), .max = INT32_MAX },
	{ .name = "cpu_max", .kind = KEY_CPU, LOCAL(cpu_max_millis) },
	{ .name = "gitlab_runner_path", .kind = KEY_PATH, LOCAL(gitlab_runner_path) },
	{ .name = "hostname", .kind = KEY_HOSTNAME, LOCAL(hostname) },
	{ .name = NULL },
};

static const struct config_key network_keys[] = {
	{ .name = "runner_allow", .kind = KEY_ALLOW_LIST, NETWORK(runner_allow) },
	{ .name = "user_allow", .kind = KEY_ALLOW_LIST, NETWORK(user_allow) },
	{ .name = "allow_ci_server", .kind = KEY_BOOL, NETWORK(allow_ci_server) },
	{ .name = "proxy_port", .kind = KEY_INT, NETWORK(proxy_port), .min = 1, .max = 65535 },
	{ .name = NULL },
};

static const struct config_key dns_keys[] = {
	{ .name = "allow", .kind = KEY_BOOL, DNS(allow) },
	{ .name = "namespace", .kind = KEY_K8S_NAME, DNS(namespace) },
	{ .name = "pod_labels", .kind = KEY_LABELS, DNS(pod_labels) },
	{ .name = "cidrs", .kind = KEY_ALLOW_LIST, DNS(cidrs) },
	{ .name = NULL },
};

static const struct config_key probe_keys[] = {
	{ .name = "destination", .kind = KEY_STRING, PROBE(destination) },
	{ .name = "required", .kind = KEY_BOOL, PROBE(required) },
	{ .name = "timeout", .kind = KEY_INT, PROBE(timeout), .min = 1, .max = 3600 },
	{ .name = "image", .kind = KEY_STRING, PROBE(image) },
	{ .name = NULL },
};

static const struct config_key agent_sandbox_keys[] = {
	{ .name = "kubeconfig", .kind = KEY_PATH, AGENT(kubeconfig) },
	{ .name = "context", .kind = KEY_STRING, AGENT(context) },
	{ .name = "in_cluster", .kind = KEY_BOOL, AGENT(in_cluster) },
	{ .name = "namespace", .kind = KEY_K8S_NAME, AGENT(namespace) },
	{ .name = "warm_pools", .kind = KEY_WARM_POOLS },
	{ .name = "pod_template", .kind = KEY_JSON, AGENT(pod_template) },
	{ .name = "allowed_images", .kind = KEY_STRING_LIST, AGENT(allowed_images) },
	{ .name = "container", .kind = KEY_K8S_NAME, AGENT(container) },
	{ .name = "runtime_class_name", .kind = KEY_STRING, AGENT(runtime_class_name) },
	{ .name = "resources", .kind = KEY_JSON, AGENT(resources) },
	{ .name = "node_selector", .kind = KEY_LABELS, AGENT(node_selector) },
	{ .name = "tolerations", .kind = KEY_JSON, AGENT(tolerations) },
	{ .name = "service_account", .kind = KEY_K8S_NAME, AGENT(service_account) },
	{ .name = "automount_service_account_token", .kind = KEY_BOOL,
	  AGENT(automount_service_account_token) },
	{ .name = "labels", .kind = KEY_LABELS, AGENT(labels) },
	{ .name = "pod_labels", .kind = KEY_LABELS, AGENT(pod_labels) },
	{ .name = "allowed_label_domains", .kind = KEY_STRING_LIST,
	  AGENT(allowed_label_domains) },
	{ .name = "annotations", .kind = KEY_STRING_MAP, AGENT(annotations) },
	{ .name = "dns", .kind = KEY_SECTION, AGENT(dns), .section = dns_keys },
	{ .name = "probe", .kind = KEY_SECTION, AGENT(probe), .section = probe_keys },
	{ .name = "accepted_policies", .kind = KEY_STRING_LIST, AGENT(accepted_policies) },
	{ .name = "disruption_protection", .kind = KEY_ENUM, AGENT(disruption_protection),
	  .words = disruption_words },
	{ .name = "ready_timeout", .kind = KEY_INT, AGENT(ready_timeout), .min = 1,
	  .max = SECONDS_MAX },
	{ .name = "step_dir", .kind = KEY_PATH, AGENT(step_dir) },
	{ .name = NULL },
};

static const struct config_key top_keys[] = {
	{ .name = "backend", .kind = KEY_WORD, TOP(backend), .words = backend_words },
	{ .name = "plugin_dir", .kind = KEY_PATH, TOP(plugin_dir) },
	{ .name = "state_dir", .kind = KEY_PATH, TOP(state_dir) },
	{ .name = "shell", .kind = KEY_WORD, TOP(shell), .words = shell_words },
	{ .name = "default_job_timeout", .kind = KEY_INT, TOP(default_job_timeout), .min = 1,
	  .max = SECONDS_MAX },
	{ .name = "deadline_margin", .kind = KEY_INT, TOP(deadline_margin), .max = SECONDS_MAX },
	{ .name = "cleanup_timeout", .kind = KEY_INT, TOP(cleanup_timeout), .min = 1,
	  .max = SECONDS_MAX },
	{ .name = "stop_grace", .kind = KEY_INT, TOP(stop_grace), .max = SECONDS_MAX },
	{ .name = "log_level", .kind = KEY_ENUM, TOP(log_level), .words = log_level_words },
	{ .name = "local", .kind = KEY_SECTION, TOP(local), .section = local_keys },
	{ .name = "network", .kind = KEY_SECTION, TOP(network), .section = network_keys },
	{ .name = "agent_sandbox", .kind = KEY_SECTION, TOP(agent_sandbox),
	  .section = agent_sandbox_keys },
	{ .name = NULL },
};

void sbx_config_free(struct sbx_config *config)
{
	if (config == NULL)
		return;
	free(config->path);
	free(config->backend);
	free(config->plugin_dir);
	free(config->state_dir);
	free(config->shell);
	free(config->local.rootfs);
	config_image_map_clear(&config->local);
	config_string_list_clear(&config->local.masked_paths);
	free(config->local.cache_dir);
	free(config->local.gitlab_runner_path);
	free(config->local.hostname);
	config_string_list_clear(&config->network.runner_allow);
	config_string_list_clear(&config->network.user_allow);
	config_agent_sandbox_clear(&config->agent_sandbox);
	free(config);
}

static inline void config_freep(struct sbx_config **config)
{
	sbx_config_free(*config);
	*config = NULL;
}

#define _cleanup_config_ __attribute__((cleanup(config_freep)))

static int config_default_agent_sandbox_maps(struct sbx_agent_sandbox_config *agent_sandbox)
{
	static const char dns_key[] = "k8s-app", dns_value[] = "kube-dns";
	static const char domain[] = "sandbox.users.io";

	/* The labels CoreDNS and kube-dns pods carry in kubeadm, kind, GKE and EKS clusters. */
	agent_sandbox->dns.pod_labels.keys = calloc(1, sizeof(char *));
	agent_sandbox->dns.pod_labels.values = calloc(1, sizeof(char *));
	/* The Agent Sandbox controller's default for additionalPodMetadata label keys. */
	agent_sandbox->allowed_label_domains.items = calloc(1, sizeof(char *));
	if (agent_sandbox->dns.pod_labels.keys == NULL ||
	    agent_sandbox->dns.pod_labels.values == NULL ||
	    agent_sandbox->allowed_label_domains.items == NULL)
		return -1;
	agent_sandbox->dns.pod_labels.keys[0] = strdup(dns_key);
	agent_sandbox->dns.pod_labels.values[0] = strdup(dns_value);
	agent_sandbox->dns.pod_labels.count = 1;
	agent_sandbox->allowed_label_domains.items[0] = strdup(domain);
	agent_sandbox->allowed_label_domains.count = 1;
	if (agent_sandbox->dns.pod_labels.keys[0] == NULL ||
	    agent_sandbox->dns.pod_labels.values[0] == NULL ||
	    agent_sandbox->allowed_label_domains.items[0] == NULL)
		return -1;
	return 0;
}

static int config_set_defaults(struct sbx_config *config, struct sbx_error *error)
{
	config->backend = strdup("local");
	config->shell = strdup("bash");
	config->default_job_timeout = 7200;
	config->deadline_margin = 3600;
	config->cleanup_timeout = 300;
	config->stop_grace = 5;
	config->log_level = SBX_LOG_INFO;

	config->local.mode = SBX_LOCAL_MODE_AUTO;
	config->local.id_map_base = 1879048192;
	config->local.job_uid = 1000;
	config->local.job_gid = 1000;
	config->local.allow_runner_uid = 0;
	config->local.require_cgroup = 1;
	config->local.unmapped_image = SBX_UNMAPPED_IMAGE_IGNORE;
	config->local.tmp_size = 1024ULL * 1024 * 1024;
	config->local.memory_max = 4ULL * 1024 * 1024 * 1024;
	config->local.pids_max = 4096;
	config->local.cpu_max_millis = 0;
	config->local.hostname = strdup("sbx");

	config->network.allow_ci_server = 1;
	config->network.proxy_port = 3128;

	config->agent_sandbox.dns.allow = 1;
	config->agent_sandbox.dns.namespace = strdup("kube-system");
	config->agent_sandbox.probe.required = 1;
	config->agent_sandbox.probe.timeout = 15;
	config->agent_sandbox.disruption_protection = SBX_DISRUPTION_PER_JOB;
	config->agent_sandbox.ready_timeout = 300;
	config->agent_sandbox.step_dir = strdup("/tmp/sbx");

	if (config->backend == NULL || config->shell == NULL || config->local.hostname == NULL ||
	    config->agent_sandbox.dns.namespace == NULL ||
	    config->agent_sandbox.step_dir == NULL ||
	    config_default_agent_sandbox_maps(&config->agent_sandbox) < 0)
		return sbx_error_errno(error, ENOMEM, "cannot set the configuration defaults");
	return 0;
}

static void store_integer(void *field, size_t size, int64_t value)
{
	switch (size) {
	case sizeof(uint16_t): {
		uint16_t narrow = (uint16_t) value;

		memcpy(field, &narrow, size);
		break;
	}
	case sizeof(uint32_t): {
		uint32_t narrow = (uint32_t) value;

		memcpy(field, &narrow, size);
		break;
	}
	default:
		memcpy(field, &value, sizeof(value));
		break;
	}
}

static void replace_string(void *field, char *value)
{
	char **slot = field;

	free(*slot);
	*slot = value;
}

static int parse_section(struct config_parser *parser, const yaml_node_t *mapping,
			 const struct config_key *keys, const char *prefix, void *base);

static int parse_key(struct config_parser *parser, const struct config_key *key,
		     const yaml_node_t *value, const char *key_path, void *base)
{
	void *field = (char *) base + key->offset;
	size_t index = 0;
	int64_t number = 0;
	char *text = NULL;

	switch (key->kind) {
	case KEY_WORD:
		if (config_parse_word(parser, value, key_path, key->words, &index) < 0)
			return -1;
		text = strdup(key->words[index]);
		if (text == NULL)
			return sbx_error_errno(parser->error, ENOMEM, "config %s", parser->path);
		replace_string(field, text);
		return 0;
	case KEY_ENUM:
		if (config_parse_word(parser, value, key_path, key->words, &index) < 0)
			return -1;
		store_integer(field, key->size, (int64_t) index);
		return 0;
	case KEY_INT:
		if (config_parse_int(parser, value, key, key_path, &number) < 0)
			return -1;
		store_integer(field, key->size, number);
		return 0;
	case KEY_BOOL:
		return config_parse_bool(parser, value, key_path, field);
	case KEY_PATH:
		/* Optional paths: null restores the built-in default. */
		if (!config_node_is_null(value) &&
		    config_parse_path(parser, value, key_path, &text) < 0)
			return -1;
		replace_string(field, text);
		return 0;
	case KEY_SIZE:
		return config_parse_size(parser, value, key, key_path, field);
	case KEY_CPU:
		return config_parse_cpu(parser, value, key_path, field);
	case KEY_HOSTNAME:
		if (config_parse_hostname(parser, value, key_path, &text) < 0)
			return -1;
		replace_string(field, text);
		return 0;
	case KEY_PATH_LIST:
	case KEY_ALLOW_LIST:
		return config_parse_list(parser, value, key, key_path, field);
	case KEY_IMAGES:
		return config_parse_images(parser, value, key_path, base);
	case KEY_STRING:
		if (!config_node_is_null(value) &&
		    config_parse_string(parser, value, key_path, &text) < 0)
			return -1;
		replace_string(field, text);
		return 0;
	case KEY_K8S_NAME:
		if (!config_node_is_null(value) &&
		    config_parse_k8s_name(parser, value, key_path, &text) < 0)
			return -1;
		replace_string(field, text);
		return 0;
	case KEY_STRING_LIST:
		return config_parse_list(parser, value, key, key_path, field);
	case KEY_STRING_MAP:
	case KEY_LABELS:
		return config_parse_string_map(parser, value, key, key_path, field);
	case KEY_WARM_POOLS:
		return config_parse_warm_pools(parser, value, key_path, base);
	case KEY_JSON:
		return config_parse_json(parser, value, key_path, field);
	case KEY_SECTION:
		return parse_section(parser, value, key->section, key_path, field);
	}
	return sbx_error_set(parser->error, SBX_ERROR_INVALID, "config %s: key \"%s\" has an "
			     "unknown kind", parser->path, key_path);
}

/* Levenshtein distance, for "did you mean" hints; key names are short. */
static size_t edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	size_t row[64];

	if (la >= SBX_ARRAY_SIZE(row) || lb >= SBX_ARRAY_SIZE(row))
		return SIZE_MAX;
	for (size_t j = 0; j <= lb; j++)
		row[j] = j;
	for (size_t i = 1; i <= la; i++) {
		size_t diagonal = row[0];

		row[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			size_t above = row[j];
			size_t best = diagonal + (a[i - 1] == b[j - 1] ? 0 : 1);

			if (above + 1 < best)
				best = above + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			row[j] = best;
			diagonal = above;
		}
	}
	return row[lb];
}

static const struct config_key *closest_key(const struct config_key *keys, const char *name)
{
	const struct config_key *best = NULL;
	size_t best_distance = SIZE_MAX;
	/* Two edits catch typos and swapped letters without suggesting unrelated keys. */
	size_t limit = strlen(name) <= 4 ? 1 : 2;

	for (const struct config_key *key = keys; key->name != NULL; key++) {
		size_t distance = edit_distance(name, key->name);

		if (distance < best_distance) {
			best_distance = distance;
			best = key;
		}
	}
	return best_distance <= limit ? best : NULL;
}

/* Finds NAME in a section other than the one it was written in, for a hint. */
static const char *misplaced_key_section(const struct config_key *keys, const char *name)
{
	if (keys != top_keys) {
		for (const struct config_key *key = top_keys; key->name != NULL; key++)
			if (strcmp(key->name, name) == 0)
				return "";
	}
	for (const struct config_key *section = top_keys; section->name != NULL; section++) {
		if (section->kind != KEY_SECTION || section->section == keys)
			continue;
		for (const struct config_key *key = section->section; key->name != NULL; key++)
			if (strcmp(key->name, name) == 0)
				return section->name;
	}
	return NULL;
}

static int unknown_key(struct config_parser *parser, const yaml_node_t *node,
		       const struct config_key *keys, const char *prefix, const char *name)
{
	char quoted[QUOTED_SIZE], full[QUOTED_SIZE + 64];
	const struct config_key *closest;
	const char *section;

	config_quote_value(quoted, sizeof(quoted), name, strlen(name));
	snprintf(full, sizeof(full), "%s%s%s", prefix, prefix[0] != '\0' ? "." : "", quoted);

	section = misplaced_key_section(keys, name);
	if (section != NULL && section[0] == '\0')
		return config_fail(parser, node, NULL, "unknown key \"%s\"; \"%s\" is a top-level "
				   "key, move it out of \"%s:\". " DOCS_HINT, full, quoted, prefix);
	if (section != NULL)
		return config_fail(parser, node, NULL, "unknown key \"%s\"; did you mean "
				   "\"%s.%s\"? Move it under \"%s:\". " DOCS_HINT, full, section,
				   quoted, section);
	closest = closest_key(keys, name);
	if (closest != NULL)
		return config_fail(parser, node, NULL, "unknown key \"%s\"; did you mean \"%s\"? "
				   DOCS_HINT, full, closest->name);
	return config_fail(parser, node, NULL, "unknown key \"%s\"; remove it. " DOCS_HINT
			   " for every key", full);
}

static int parse_section(struct config_parser *parser, const yaml_node_t *mapping,
			 const struct config_key *keys, const char *prefix, void *base)
{
	if (config_node_is_null(mapping))
		return 0;
	if (mapping->type != YAML_MAPPING_NODE) {
		if (prefix[0] == '\0')
			return config_fail(parser, mapping, NULL, "expected a mapping of keys such "
					   "as \"backend: local\", got %s; see "
					   "sbx-config(5)",
					   config_node_type_name(mapping));
		return config_fail(parser, mapping, prefix, "expected a mapping of keys, got %s; "
				   "indent its keys below \"%s:\"", config_node_type_name(mapping),
				   prefix);
	}
	if (config_check_duplicate_keys(parser, mapping, prefix) < 0)
		return -1;

	for (yaml_node_pair_t *pair = mapping->data.mapping.pairs.start;
	     pair < mapping->data.mapping.pairs.top; pair++) {
		const yaml_node_t *key_node = yaml_document_get_node(parser->document, pair->key);
		const yaml_node_t *value = yaml_document_get_node(parser->document, pair->value);
		const char *name = config_scalar_text(key_node);
		const struct config_key *key;
		char key_path[128];

		for (key = keys; key->name != NULL; key++)
			if (strcmp(key->name, name) == 0)
				break;
		if (key->name == NULL)
			return unknown_key(parser, key_node, keys, prefix, name);
		snprintf(key_path, sizeof(key_path), "%s%s%s", prefix, prefix[0] != '\0' ? "." : "",
			 key->name);
		if (parse_key(parser, key, value, key_path, base) < 0)
			return -1;
	}
	return 0;
}

/*
 * Opens PATH for reading. As root, a file that other users can write would let them choose
 * the plugin sbx loads (plugin_dir) and every limit, so it is rejected.
 */
static int read_config_file(const char *path, char **data, size_t *length,
			    struct sbx_error *error)
{
	_cleanup_close_ int fd = -1;
	_cleanup_free_ char *buf = NULL;
	size_t used = 0;
	struct stat st;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0 && errno == ENOENT)
		return sbx_error_set(error, SBX_ERROR_INVALID, "config %s: file not found; create "
				     "it (see sbx-config(5)) or name another file with --config "
				     "or $SBX_CONFIG", path);
	if (fd < 0)
		return sbx_error_errno(error, errno, "config %s: cannot open", path);
	if (fstat(fd, &st) < 0)
		return sbx_error_errno(error, errno, "config %s: cannot stat", path);
	if (!S_ISREG(st.st_mode))
		return sbx_error_set(error, SBX_ERROR_INVALID, "config %s: not a regular file; "
				     "name a YAML file", path);
	if (st.st_mode & S_IWOTH)
		return sbx_error_set(error, SBX_ERROR_INVALID, "config %s: the file is writable "
				     "by every user; run chmod o-w %s", path, path);
	if (st.st_uid != 0 && st.st_uid != geteuid())
		return sbx_error_set(error, SBX_ERROR_INVALID, "config %s: the file belongs to uid "
				     "%u, neither root nor this user (uid %u); chown it to one of "
				     "them", path, (unsigned) st.st_uid, (unsigned) geteuid());
	if (st.st_size > CONFIG_FILE_MAX)
		return sbx_error_set(error, SBX_ERROR_INVALID, "config %s: %lld bytes is larger "
				     "than the limit of %d bytes; is this the right file?", path,
				     (long long) st.st_size, CONFIG_FILE_MAX);

	buf = malloc(CONFIG_FILE_MAX + 1);
	if (buf == NULL)
		return sbx_error_errno(error, ENOMEM, "config %s", path);
	for (;;) {
		ssize_t n = read(fd, buf + used, CONFIG_FILE_MAX + 1 - used);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return sbx_error_errno(error, errno, "config %s: cannot read", path);
		if (n == 0)
			break;
		used += (size_t) n;
		if (used > CONFIG_FILE_MAX)
			return sbx_error_set(error, SBX_ERROR_INVALID, "config %s: larger than the "
					     "limit of %d bytes; is this the right file?", path,
					     CONFIG_FILE_MAX);
	}
	buf[used] = '\0';
	*data = steal_pointer(&buf);
	*length = used;
	return 0;
}

static int yaml_syntax_error(const char *path, const yaml_parser_t *yaml, struct sbx_error *error)
{
	const char *problem = yaml->problem != NULL ? yaml->problem : "unknown problem";

	if (yaml->context != NULL)
		return sbx_error_set(error, SBX_ERROR_INVALID, "config %s:%zu: invalid YAML: %s "
				     "(%s, line %zu); fix the syntax", path,
				     yaml->problem_mark.line + 1, problem, yaml->context,
				     yaml->context_mark.line + 1);
	return sbx_error_set(error, SBX_ERROR_INVALID, "config %s:%zu: invalid YAML: %s; fix the "
			     "syntax", path, yaml->problem_mark.line + 1, problem);
}

static int parse_document(struct config_parser *parser, const char *data, size_t length,
			  struct sbx_config *config)
{
	yaml_parser_t yaml;
	yaml_document_t document, extra;
	yaml_node_t *root;
	int ret = -1;

	if (!yaml_parser_initialize(&yaml))
		return sbx_error_errno(parser->error, ENOMEM, "config %s", parser->path);
	yaml_parser_set_input_string(&yaml, (const unsigned char *) data, length);
	if (!yaml_parser_load(&yaml, &document)) {
		yaml_syntax_error(parser->path, &yaml, parser->error);
		yaml_parser_delete(&yaml);
		return -1;
	}
	parser->document = &document;

	/* An empty file has no root node: every key keeps its default. */
	root = yaml_document_get_root_node(&document);
	if (root != NULL && parse_section(parser, root, top_keys, "", config) < 0)
		goto out;

	/* A second document ("---") would otherwise be ignored without a word, so reject it. */
	if (root != NULL) {
		if (!yaml_parser_load(&yaml, &extra)) {
			yaml_syntax_error(parser->path, &yaml, parser->error);
			goto out;
		}
		if (yaml_document_get_root_node(&extra) != NULL) {
			config_fail(parser, yaml_document_get_root_node(&extra), NULL, "a second "
				    "YAML document starts here; keep one document per file");
			yaml_document_delete(&extra);
			goto out;
		}
		yaml_document_delete(&extra);
	}
	ret = 0;

out:
	parser->document = NULL;
	yaml_document_delete(&document);
	yaml_parser_delete(&yaml);
	return ret;
}

int sbx_config_load(const char *path, struct sbx_config **config, struct sbx_error *error)
{
	_cleanup_config_ struct sbx_config *loaded = NULL;
	_cleanup_free_ char *data = NULL;
	struct config_parser parser = { .path = path, .error = error };
	size_t length = 0;

	loaded = calloc(1, sizeof(*loaded));
	if (loaded == NULL)
		return sbx_error_errno(error, ENOMEM, "cannot load the configuration");
	if (config_set_defaults(loaded, error) < 0)
		return -1;
	if (path == NULL) {
		*config = steal_pointer(&loaded);
		return 0;
	}

	if (read_config_file(path, &data, &length, error) < 0)
		return -1;
	if (parse_document(&parser, data, length, loaded) < 0)
		return -1;
	loaded->path = strdup(path);
	if (loaded->path == NULL)
		return sbx_error_errno(error, ENOMEM, "config %s", path);

	*config = steal_pointer(&loaded);
	return 0;
}

const char *sbx_config_default_path(const char *explicit_path)
{
	static const char installed[] = SBX_SYSCONFDIR "/sbx/config.yaml";
	const char *from_environment;

	if (explicit_path != NULL && explicit_path[0] != '\0')
		return explicit_path;
	from_environment = getenv("SBX_CONFIG");
	if (from_environment != NULL && from_environment[0] != '\0')
		return from_environment;
	if (access(installed, F_OK) == 0)
		return installed;
	return NULL;
}

char *sbx_config_state_dir(const struct sbx_config *config)
{
	const char *xdg, *home;
	char *path = NULL;

	if (config != NULL && config->state_dir != NULL)
		return strdup(config->state_dir);
	if (geteuid() == 0)
		return strdup("/var/lib/sbx");

	/* The XDG Base Directory Specification requires relative values to be ignored. */
	xdg = getenv("XDG_STATE_HOME");
	if (xdg != NULL && xdg[0] == '/') {
		if (asprintf(&path, "%s/sbx", xdg) < 0)
			return NULL;
		return path;
	}

	home = getenv("HOME");
	if (home == NULL || home[0] != '/') {
		struct passwd entry, *found = NULL;
		char buf[4096];

		if (getpwuid_r(geteuid(), &entry, buf, sizeof(buf), &found) != 0 || found == NULL ||
		    found->pw_dir == NULL || found->pw_dir[0] != '/') {
			errno = ENOENT;
			return NULL;
		}
		if (asprintf(&path, "%s/.local/state/sbx", found->pw_dir) < 0)
			return NULL;
		return path;
	}
	if (asprintf(&path, "%s/.local/state/sbx", home) < 0)
		return NULL;
	return path;
}

const struct sbx_image_map_entry *sbx_config_find_image(const struct sbx_config *config,
							 const char *image)
{
	const struct sbx_image_map_entry *best = NULL;
	size_t best_length = 0;

	if (config == NULL || image == NULL)
		return NULL;
	for (size_t i = 0; i < config->local.image_count; i++) {
		const struct sbx_image_map_entry *entry = &config->local.images[i];
		size_t length = strlen(entry->pattern);

		if (length > 0 && entry->pattern[length - 1] == '*') {
			length--;
			if (strncmp(image, entry->pattern, length) == 0 &&
			    (best == NULL || length > best_length)) {
				best = entry;
				best_length = length;
			}
		} else if (strcmp(image, entry->pattern) == 0) {
			/* An exact name wins over every prefix. */
			return entry;
		}
	}
	return best;
}
