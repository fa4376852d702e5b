/* SPDX-License-Identifier: MIT */
/*
 * The agent_sandbox settings beyond what the configuration loader checks on its own: rules
 * that hold only for this backend (no wildcard egress, pod label domains), the choice between
 * a warm pool and a direct Sandbox, and the egress allow-list a NetworkPolicy enforces.
 */
#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent_sandbox.h"
#include "error.h"
#include "log.h"

static int reject_wildcards(const struct sbx_config *config, const char *key,
			    const struct sbx_string_list *list, struct sbx_error *error)
{
	for (size_t i = 0; i < list->count; i++) {
		struct sbx_allow_entry entry = { 0 };
		int wildcard;

		if (sbx_allow_entry_parse(list->items[i], &entry, error) < 0)
			return -1;
		wildcard = entry.kind == SBX_ALLOW_WILDCARD;
		free(entry.host);
		if (wildcard)
			return sbx_error_set(error, SBX_ERROR_INVALID,
					     "config %s: key \"%s\": wildcard entry \"%s\" cannot be "
					     "enforced by the agent-sandbox backend, because a "
					     "NetworkPolicy matches addresses, not names; list each "
					     "host name (resolved when the job starts) or its CIDR",
					     config->path != NULL ? config->path : "(defaults)", key,
					     list->items[i]);
	}
	return 0;
}

static int label_domain_allowed(const struct sbx_string_list *domains, const char *key)
{
	const char *slash = strchr(key, '/');

	if (slash == NULL)
		return 0;
	for (size_t i = 0; i < domains->count; i++) {
		size_t length = strlen(domains->items[i]);
		size_t prefix = (size_t) (slash - key);

		/* The domain itself or one below it, as the controller's check accepts. */
		if (prefix == length && strncmp(key, domains->items[i], length) == 0)
			return 1;
		if (prefix > length && key[prefix - length - 1] == '.' &&
		    strncmp(key + prefix - length, domains->items[i], length) == 0)
			return 1;
	}
	return 0;
}

int as_settings_check(const struct sbx_config *config, struct sbx_error *error)
{
	const struct sbx_agent_sandbox_config *settings = &config->agent_sandbox;
	const char *path = config->path != NULL ? config->path : "(defaults)";

	if (reject_wildcards(config, "network.runner_allow", &config->network.runner_allow,
			     error) < 0 ||
	    reject_wildcards(config, "network.user_allow", &config->network.user_allow, error) < 0 ||
	    reject_wildcards(config, "agent_sandbox.dns.cidrs", &settings->dns.cidrs, error) < 0)
		return -1;
	for (size_t i = 0; i < settings->pod_labels.count; i++)
		if (!label_domain_allowed(&settings->allowed_label_domains,
					  settings->pod_labels.keys[i]))
			return sbx_error_set(error, SBX_ERROR_INVALID,
					     "config %s: key \"agent_sandbox.pod_labels\": label "
					     "\"%s\" is outside the allowed domains, and the Agent "
					     "Sandbox controller rejects the claim with "
					     "InvalidMetadata; prefix it with one of "
					     "agent_sandbox.allowed_label_domains, such as "
					     "sandbox.users.io/",
					     path, settings->pod_labels.keys[i]);
	for (size_t i = 0; i < settings->allowed_images.count; i++) {
		const char *pattern = settings->allowed_images.items[i];
		const char *star = strchr(pattern, '*');

		if (strcmp(pattern, "*") == 0)
			return sbx_error_set(error, SBX_ERROR_INVALID,
					     "config %s: key \"agent_sandbox.allowed_images\": \"*\" "
					     "would let a job run any image it names; list images or "
					     "prefixes such as registry.example.com/ci/*",
					     path);
		if (pattern[0] == '\0' || (star != NULL && star[1] != '\0') ||
		    strpbrk(pattern, " \t") != NULL)
			return sbx_error_set(error, SBX_ERROR_INVALID,
					     "config %s: key \"agent_sandbox.allowed_images\": invalid "
					     "image pattern \"%s\"; use an image name or a prefix "
					     "ending in *",
					     path, pattern);
	}
	if (settings->pod_template != NULL) {
		struct json_object *containers =
			as_json_get(settings->pod_template, "spec.containers");

		if (!json_object_is_type(settings->pod_template, json_type_object) ||
		    containers == NULL || !json_object_is_type(containers, json_type_array) ||
		    json_object_array_length(containers) == 0)
			return sbx_error_set(error, SBX_ERROR_INVALID,
					     "config %s: key \"agent_sandbox.pod_template\": expected "
					     "a pod template with metadata and spec.containers (at "
					     "least one container); see "
					     "config-examples/k8s-direct.yaml",
					     path);
	}
	if (settings->probe.destination != NULL) {
		struct sbx_allow_entry entry = { 0 };
		int valid = sbx_allow_entry_parse(settings->probe.destination, &entry, NULL) == 0 &&
			    entry.kind == SBX_ALLOW_CIDR && entry.port != 0 &&
			    entry.prefix_length == (entry.family == AF_INET ? 32u : 128u);

		free(entry.host);
		if (!valid)
			return sbx_error_set(error, SBX_ERROR_INVALID,
					     "config %s: key \"agent_sandbox.probe.destination\": "
					     "\"%s\" is not an IP address with a port; use a form "
					     "such as 203.0.113.10:443 or [2001:db8::10]:443",
					     path, settings->probe.destination);
	}
	return 0;
}

int as_image_pattern_match(const char *pattern, const char *image)
{
	size_t length = strlen(pattern);

	if (length > 0 && pattern[length - 1] == '*')
		return strncmp(image, pattern, length - 1) == 0;
	return strcmp(image, pattern) == 0;
}

int as_select_pool(const struct sbx_config *config, const char *image, const char **pool,
		   struct sbx_error *error)
{
	const struct sbx_agent_sandbox_config *settings = &config->agent_sandbox;
	const struct sbx_warm_pool_entry *best = NULL, *every = NULL;
	size_t best_length = 0;
	const char *name = image != NULL ? image : "";

	/* An exact name wins, then the longest prefix, then allowed_images, then "*". */
	for (size_t i = 0; i < settings->warm_pool_count; i++) {
		const struct sbx_warm_pool_entry *entry = &settings->warm_pools[i];
		size_t length = strlen(entry->pattern);

		if (strcmp(entry->pattern, "*") == 0) {
			every = entry;
			continue;
		}
		if (!as_image_pattern_match(entry->pattern, name))
			continue;
		if (entry->pattern[length - 1] != '*') {
			*pool = entry->pool;
			return 0;
		}
		if (best == NULL || length > best_length) {
			best = entry;
			best_length = length;
		}
	}
	if (best != NULL) {
		*pool = best->pool;
		return 0;
	}
	if (image != NULL && settings->pod_template != NULL) {
		for (size_t i = 0; i < settings->allowed_images.count; i++) {
			if (as_image_pattern_match(settings->allowed_images.items[i], image)) {
				*pool = NULL;
				return 0;
			}
		}
	}
	if (every != NULL) {
		*pool = every->pool;
		return 0;
	}
	if (image == NULL)
		return sbx_error_set(error, SBX_ERROR_BUILD,
				     "the job names no image and no agent_sandbox.warm_pools entry "
				     "is \"*\"; set image: in .gitlab-ci.yml to one this runner "
				     "offers");
	return sbx_error_set(error, SBX_ERROR_BUILD,
			     "image \"%s\" is not offered by this runner: it matches no "
			     "agent_sandbox.warm_pools pattern%s; use an image the runner "
			     "offers, or ask its administrator to add it",
			     image,
			     settings->pod_template != NULL
				     ? " and no agent_sandbox.allowed_images pattern"
				     : "");
}

/* Adds the host and port of the CI server URL, e.g. https://gitlab.example.com:8443/. */
static int add_ci_server(struct sbx_allowlist *list, const char *url, struct sbx_error *error)
{
	const char *start = strstr(url, "://"), *end, *at, *host_end;
	char host[256], entry[300];
	int port = strncmp(url, "http://", 7) == 0 ? 80 : 443;
	size_t length;

	if (start == NULL)
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "CI server URL \"%.200s\" has no scheme; expected "
				     "https://host/",
				     url);
	start += 3;
	end = start + strcspn(start, "/?#");
	at = memchr(start, '@', (size_t) (end - start));
	if (at != NULL)
		start = at + 1;
	if (*start == '[') {
		host_end = memchr(start, ']', (size_t) (end - start));
		if (host_end == NULL)
			goto invalid;
		host_end++;
	} else {
		host_end = memchr(start, ':', (size_t) (end - start));
		if (host_end == NULL)
			host_end = end;
	}
	length = (size_t) (host_end - start);
	if (length == 0 || length >= sizeof(host))
		goto invalid;
	memcpy(host, start, length);
	host[length] = '\0';
	if (host_end < end && *host_end == ':')
		port = atoi(host_end + 1);
	if (port <= 0 || port > 65535)
		goto invalid;
	snprintf(entry, sizeof(entry), "%s:%d", host, port);
	/* An address entry admits loopback and link-local (the cloud metadata service), so the
	 * implicit CI server entry never opens them; only an explicit allow-list entry can. */
	if (sbx_allow_literal_is_local(host, NULL)) {
		sbx_debug("the CI server's address %s is not added to the egress policy: only an "
			  "explicit allow-list entry admits a loopback or link-local address",
			  entry);
		return 0;
	}
	return sbx_allowlist_add(list, entry, error);

invalid:
	return sbx_error_set(error, SBX_ERROR_INVALID,
			     "CI server URL \"%.200s\" has no valid host and port", url);
}

int as_egress_allowlist(const struct sbx_config *config, const char *ci_server_url,
			struct sbx_allowlist *list, struct sbx_error *error)
{
	struct sbx_allowlist built = { 0 };
	const struct sbx_string_list *lists[] = { &config->network.runner_allow,
						  &config->network.user_allow };

	/* A NetworkPolicy covers the whole pod, so every stage gets the union. */
	for (size_t l = 0; l < 2; l++)
		for (size_t i = 0; i < lists[l]->count; i++)
			if (sbx_allowlist_add(&built, lists[l]->items[i], error) < 0)
				goto fail;
	if (config->network.allow_ci_server && ci_server_url != NULL &&
	    add_ci_server(&built, ci_server_url, error) < 0)
		goto fail;
	*list = built;
	return 0;

fail:
	sbx_allowlist_free(&built);
	return -1;
}
