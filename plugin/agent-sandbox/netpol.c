/* SPDX-License-Identifier: MIT */
/*
 * The per-job NetworkPolicy and the check of every other policy that selects the job's pod.
 *
 * NetworkPolicies add up: traffic is allowed when any policy selecting the pod allows it. The
 * per-job policy denies all ingress and all egress but DNS and the allow-list, and a job runs
 * only when no other policy selecting its pod allows more egress, unless the configuration
 * accepts that policy by name.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <json-c/json.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent_sandbox.h"
#include "cleanup.h"
#include "error.h"
#include "log.h"
#include "netpol.h"

#include "k8s/rest.h"
#include "k8s/status.h"

#define DNS_PORT 53

void as_egress_clear(struct as_egress *egress)
{
	free(egress->blocks);
	egress->blocks = NULL;
	egress->count = 0;
}

static int add_block(struct as_egress *egress, int family, const void *address,
		     unsigned prefix_length, uint16_t port)
{
	struct as_egress_block *blocks;
	size_t size = family == AF_INET ? 4 : 16;

	for (size_t i = 0; i < egress->count; i++) {
		const struct as_egress_block *block = &egress->blocks[i];

		if (block->family == family && block->prefix_length == prefix_length &&
		    block->port == port && memcmp(block->address, address, size) == 0)
			return 0;
	}
	blocks = realloc(egress->blocks, (egress->count + 1) * sizeof(*blocks));
	if (blocks == NULL)
		return -1;
	egress->blocks = blocks;
	memset(&blocks[egress->count], 0, sizeof(blocks[0]));
	blocks[egress->count].family = family;
	memcpy(blocks[egress->count].address, address, size);
	blocks[egress->count].prefix_length = prefix_length;
	blocks[egress->count].port = port;
	egress->count++;
	return 0;
}

int as_egress_resolve(const struct sbx_allowlist *list, struct as_egress *egress,
		      struct sbx_error *error)
{
	struct as_egress resolved = { 0 };

	for (size_t i = 0; i < list->count; i++) {
		const struct sbx_allow_entry *entry = &list->entries[i];
		struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *addresses = NULL;
		size_t before = resolved.count;
		int rc;

		if (entry->kind == SBX_ALLOW_CIDR) {
			if (add_block(&resolved, entry->family, entry->address,
				      entry->prefix_length, entry->port) < 0)
				goto nomem;
			continue;
		}
		if (entry->kind != SBX_ALLOW_HOST)
			continue;
		/* NOTE: the runner host's resolver answers here, which can differ from cluster
		 * DNS and drift during the job (short TTLs, round-robin records). */
		rc = getaddrinfo(entry->host, NULL, &hints, &addresses);
		if (rc != 0) {
			sbx_warning("egress: cannot resolve %s (%s); the job cannot reach it",
				    entry->host, gai_strerror(rc));
			continue;
		}
		for (struct addrinfo *a = addresses; a != NULL; a = a->ai_next) {
			int failed = 0;

			if (a->ai_family == AF_INET)
				failed = add_block(&resolved, AF_INET,
						   &((struct sockaddr_in *) a->ai_addr)->sin_addr, 32,
						   entry->port);
			else if (a->ai_family == AF_INET6)
				failed = add_block(&resolved, AF_INET6,
						   &((struct sockaddr_in6 *) a->ai_addr)->sin6_addr,
						   128, entry->port);
			if (failed < 0) {
				freeaddrinfo(addresses);
				goto nomem;
			}
		}
		freeaddrinfo(addresses);
		sbx_debug("egress: %s resolved to %zu address(es)", entry->host,
			  resolved.count - before);
	}
	*egress = resolved;
	return 0;

nomem:
	as_egress_clear(&resolved);
	return sbx_error_errno(error, ENOMEM, "egress allow-list");
}

static void format_block(const struct as_egress_block *block, char *buf, size_t size)
{
	char address[INET6_ADDRSTRLEN];

	inet_ntop(block->family, block->address, address, sizeof(address));
	snprintf(buf, size, "%s/%u", address, block->prefix_length);
}

static struct json_object *port_list(const char *protocol, uint16_t port)
{
	struct json_object *ports = json_object_new_array(), *entry = json_object_new_object();

	as_json_add_string(entry, "protocol", protocol);
	json_object_object_add(entry, "port", json_object_new_int(port));
	json_object_array_add(ports, entry);
	return ports;
}

static struct json_object *dns_rule(const struct sbx_agent_sandbox_dns_config *dns)
{
	struct json_object *rule = json_object_new_object();
	struct json_object *to = json_object_new_array();
	struct json_object *peer = json_object_new_object();
	struct json_object *ports = port_list("UDP", DNS_PORT);
	struct json_object *tcp = json_object_new_object();

	as_json_add_string(as_json_object_path(peer, "namespaceSelector.matchLabels"),
			   "kubernetes.io/metadata.name", dns->namespace);
	json_object_object_add(as_json_object_path(peer, "podSelector"), "matchLabels",
			       as_string_map_json(&dns->pod_labels));
	json_object_array_add(to, peer);
	/* NodeLocal DNSCache and DNS servers outside the cluster are reached by address. */
	for (size_t i = 0; i < dns->cidrs.count; i++) {
		struct json_object *block = json_object_new_object();
		struct sbx_allow_entry entry = { 0 };
		struct as_egress_block parsed = { 0 };
		char cidr[64];

		if (sbx_allow_entry_parse(dns->cidrs.items[i], &entry, NULL) < 0 ||
		    entry.kind != SBX_ALLOW_CIDR) {
			free(entry.host);
			json_object_put(block);
			continue;
		}
		parsed.family = entry.family;
		memcpy(parsed.address, entry.address, sizeof(parsed.address));
		parsed.prefix_length = entry.prefix_length;
		format_block(&parsed, cidr, sizeof(cidr));
		as_json_add_string(as_json_object_path(block, "ipBlock"), "cidr", cidr);
		json_object_array_add(to, block);
	}
	as_json_add_string(tcp, "protocol", "TCP");
	json_object_object_add(tcp, "port", json_object_new_int(DNS_PORT));
	json_object_array_add(ports, tcp);
	json_object_object_add(rule, "to", to);
	json_object_object_add(rule, "ports", ports);
	return rule;
}

static struct json_object *policy_body(struct sbx_executor *executor,
				       const struct as_sandbox *sandbox,
				       const struct as_egress *egress)
{
	const struct sbx_agent_sandbox_config *settings = &executor->config->agent_sandbox;
	struct json_object *body = json_object_new_object(), *metadata, *spec, *rules, *types;

	as_json_add_string(body, "apiVersion", "networking.k8s.io/v1");
	as_json_add_string(body, "kind", "NetworkPolicy");
	metadata = as_json_object_path(body, "metadata");
	as_json_add_string(metadata, "name", sandbox->network_policy);
	json_object_object_add(metadata, "labels",
			       as_owner_labels(executor->config, sandbox->id, NULL));
	if (sandbox->owner_uid != NULL)
		json_object_object_add(metadata, "ownerReferences", as_owner_reference(sandbox));

	spec = as_json_object_path(body, "spec");
	as_json_add_string(as_json_object_path(spec, "podSelector.matchLabels"),
			   AS_LABEL_NAME_HASH, sandbox->name_hash);
	types = json_object_new_array();
	json_object_array_add(types, json_object_new_string("Ingress"));
	json_object_array_add(types, json_object_new_string("Egress"));
	json_object_object_add(spec, "policyTypes", types);
	/* Ingress listed with no rules: nothing may connect to the job's pod. */
	json_object_object_add(spec, "ingress", json_object_new_array());
	rules = json_object_new_array();
	if (settings->dns.allow)
		json_object_array_add(rules, dns_rule(&settings->dns));
	for (size_t i = 0; i < egress->count; i++) {
		struct json_object *rule = json_object_new_object();
		struct json_object *to = json_object_new_array();
		struct json_object *peer = json_object_new_object();
		char cidr[64];

		format_block(&egress->blocks[i], cidr, sizeof(cidr));
		as_json_add_string(as_json_object_path(peer, "ipBlock"), "cidr", cidr);
		json_object_array_add(to, peer);
		json_object_object_add(rule, "to", to);
		/* The allow-list speaks of TCP connections, which is all a port entry allows. */
		if (egress->blocks[i].port != 0)
			json_object_object_add(rule, "ports",
					       port_list("TCP", egress->blocks[i].port));
		json_object_array_add(rules, rule);
	}
	json_object_object_add(spec, "egress", rules);
	return body;
}

int as_netpol_create(struct sbx_executor *executor, struct as_sandbox *sandbox,
		     const struct as_egress *egress, struct sbx_error *error)
{
	_cleanup_free_ char *path = NULL;
	struct json_object *body;
	struct k8s_status status;
	char what[300];
	int rc;

	if (asprintf(&path, "/apis/networking.k8s.io/v1/namespaces/%s/networkpolicies",
		     sandbox->namespace) < 0)
		return sbx_error_errno(error, ENOMEM, "NetworkPolicy");
	body = policy_body(executor, sandbox, egress);
	if (body == NULL)
		return sbx_error_errno(error, ENOMEM, "NetworkPolicy");
	snprintf(what, sizeof(what), "create NetworkPolicy %s/%s", sandbox->namespace,
		 sandbox->network_policy);
	rc = k8s_rest_create(executor->client, path, body, as_deadline(60), NULL, &status, error);
	json_object_put(body);
	/* A retried create whose first response was lost finds its own policy. */
	if (rc < 0 && status.status_class != K8S_STATUS_ALREADY_EXISTS)
		return as_api_error(error, &status, what);
	sbx_info("NetworkPolicy %s: ingress denied, egress to DNS%s and %zu address block(s)",
		 sandbox->network_policy, executor->config->agent_sandbox.dns.allow ? "" : " (off)",
		 egress->count);
	return 0;
}

int as_netpol_adopt(struct sbx_executor *executor, struct as_sandbox *sandbox,
		    struct sbx_error *error)
{
	_cleanup_free_ char *path = NULL;
	struct json_object *patch, *references;
	struct k8s_status status;
	char what[300];
	int rc;

	if (asprintf(&path, "/apis/networking.k8s.io/v1/namespaces/%s/networkpolicies/%s",
		     sandbox->namespace, sandbox->network_policy) < 0)
		return sbx_error_errno(error, ENOMEM, "NetworkPolicy");
	references = as_owner_reference(sandbox);
	patch = json_object_new_object();
	if (references == NULL || patch == NULL) {
		json_object_put(references);
		json_object_put(patch);
		return sbx_error_errno(error, ENOMEM, "NetworkPolicy");
	}
	json_object_object_add(as_json_object_path(patch, "metadata"), "ownerReferences",
			       references);
	snprintf(what, sizeof(what), "set the owner of NetworkPolicy %s/%s", sandbox->namespace,
		 sandbox->network_policy);
	rc = k8s_rest_merge_patch(executor->client, path, patch, as_deadline(60), NULL, &status,
				  error);
	json_object_put(patch);
	if (rc < 0)
		return as_api_error(error, &status, what);
	sandbox->network_policy_owned = 1;
	sbx_debug("NetworkPolicy %s is owned by Sandbox %s", sandbox->network_policy,
		  sandbox->sandbox);
	return 0;
}

/* ---- other policies ---- */

static int labels_value(struct json_object *labels, const char *key, const char **value)
{
	struct json_object *field;

	if (labels == NULL || !json_object_object_get_ex(labels, key, &field))
		return 0;
	*value = json_object_get_string(field);
	return 1;
}

int as_selector_matches(struct json_object *selector, struct json_object *labels)
{
	struct json_object *match = as_json_get(selector, "matchLabels");
	struct json_object *expressions = as_json_get(selector, "matchExpressions");

	if (match != NULL && json_object_is_type(match, json_type_object)) {
		json_object_object_foreach(match, key, wanted)
		{
			const char *value;

			if (!labels_value(labels, key, &value) ||
			    strcmp(value, json_object_get_string(wanted)) != 0)
				return 0;
		}
	}
	for (size_t i = 0; expressions != NULL && i < json_object_array_length(expressions); i++) {
		struct json_object *expression = json_object_array_get_idx(expressions, i);
		struct json_object *values = as_json_get(expression, "values");
		const char *key = as_json_string(expression, "key");
		const char *operator= as_json_string(expression, "operator");
		const char *value = NULL;
		int present, listed = 0;

		if (key == NULL || operator== NULL)
			return 0;
		present = labels_value(labels, key, &value);
		for (size_t j = 0; present && values != NULL && j < json_object_array_length(values);
		     j++)
			if (strcmp(json_object_get_string(json_object_array_get_idx(values, j)),
				   value) == 0)
				listed = 1;
		if ((strcmp(operator, "In") == 0 && !listed) ||
		    (strcmp(operator, "NotIn") == 0 && listed) ||
		    (strcmp(operator, "Exists") == 0 && !present) ||
		    (strcmp(operator, "DoesNotExist") == 0 && present))
			return 0;
	}
	return 1;
}

static int parse_cidr(const char *text, struct as_egress_block *block)
{
	struct sbx_allow_entry entry = { 0 };
	int ok = sbx_allow_entry_parse(text, &entry, NULL) == 0 && entry.kind == SBX_ALLOW_CIDR;

	free(entry.host);
	if (!ok)
		return -1;
	memset(block, 0, sizeof(*block));
	block->family = entry.family;
	memcpy(block->address, entry.address, sizeof(block->address));
	block->prefix_length = entry.prefix_length;
	return 0;
}

static int block_inside(const struct as_egress_block *inner, const struct as_egress_block *outer)
{
	unsigned bits = outer->prefix_length;

	if (inner->family != outer->family || inner->prefix_length < bits)
		return 0;
	for (unsigned i = 0; i < bits; i++) {
		unsigned byte = i / 8, mask = 0x80u >> (i % 8);

		if ((inner->address[byte] & mask) != (outer->address[byte] & mask))
			return 0;
	}
	return 1;
}

/* True when every port of the rule (all ports when it lists none) is PORT over TCP. */
static int ports_within(struct json_object *ports, uint16_t port)
{
	if (port == 0)
		return 1;
	if (ports == NULL || json_object_array_length(ports) == 0)
		return 0;
	for (size_t i = 0; i < json_object_array_length(ports); i++) {
		struct json_object *entry = json_object_array_get_idx(ports, i);
		const char *protocol = as_json_string(entry, "protocol");
		struct json_object *number = as_json_get(entry, "port");

		if ((protocol != NULL && strcmp(protocol, "TCP") != 0) || number == NULL ||
		    !json_object_is_type(number, json_type_int) ||
		    json_object_get_int(number) != port || as_json_get(entry, "endPort") != NULL)
			return 0;
	}
	return 1;
}

static int dns_only(struct json_object *ports)
{
	if (ports == NULL || json_object_array_length(ports) == 0)
		return 0;
	for (size_t i = 0; i < json_object_array_length(ports); i++) {
		struct json_object *number = as_json_get(json_object_array_get_idx(ports, i), "port");

		if (number == NULL || !json_object_is_type(number, json_type_int) ||
		    json_object_get_int(number) != DNS_PORT ||
		    as_json_get(json_object_array_get_idx(ports, i), "endPort") != NULL)
			return 0;
	}
	return 1;
}

int as_netpol_within(struct json_object *policy, const struct as_egress *egress, int dns_allowed,
		     char *reason, size_t size)
{
	struct json_object *types = as_json_get(policy, "spec.policyTypes");
	struct json_object *rules = as_json_get(policy, "spec.egress");
	int limits_egress = 0;

	/* Without policyTypes a policy is about egress only when it has egress rules. */
	if (types != NULL && json_object_is_type(types, json_type_array)) {
		for (size_t i = 0; i < json_object_array_length(types); i++)
			if (strcmp(json_object_get_string(json_object_array_get_idx(types, i)),
				   "Egress") == 0)
				limits_egress = 1;
	} else {
		limits_egress = rules != NULL;
	}
	if (!limits_egress || rules == NULL)
		return 1;

	for (size_t i = 0; i < json_object_array_length(rules); i++) {
		struct json_object *rule = json_object_array_get_idx(rules, i);
		struct json_object *to = as_json_get(rule, "to");
		struct json_object *ports = as_json_get(rule, "ports");

		if (dns_allowed && dns_only(ports))
			continue;
		if (to == NULL || json_object_array_length(to) == 0) {
			snprintf(reason, size, "egress rule %zu allows every destination%s", i + 1,
				 ports == NULL ? " on every port" : "");
			return 0;
		}
		for (size_t j = 0; j < json_object_array_length(to); j++) {
			struct json_object *peer = json_object_array_get_idx(to, j);
			const char *cidr = as_json_string(peer, "ipBlock.cidr");
			struct as_egress_block block;
			int covered = 0;

			if (cidr == NULL) {
				snprintf(reason, size, "egress rule %zu allows pods or namespaces "
					 "chosen by selectors", i + 1);
				return 0;
			}
			if (parse_cidr(cidr, &block) < 0) {
				snprintf(reason, size, "egress rule %zu has the unreadable CIDR %s",
					 i + 1, cidr);
				return 0;
			}
			for (size_t k = 0; k < egress->count && !covered; k++)
				covered = block_inside(&block, &egress->blocks[k]) &&
					  ports_within(ports, egress->blocks[k].port);
			if (!covered) {
				snprintf(reason, size, "egress rule %zu allows %s%s, which is not on "
					 "the job's allow-list", i + 1, cidr,
					 ports == NULL ? " on every port" : "");
				return 0;
			}
		}
	}
	return 1;
}

static int accepted(const struct sbx_string_list *names, const char *name)
{
	for (size_t i = 0; i < names->count; i++)
		if (strcmp(names->items[i], name) == 0)
			return 1;
	return 0;
}

/*
 * A SandboxTemplate with networkPolicyManagement Managed makes one policy for all its pods, and
 * policies add up, so egress it allows would widen every job's allow-list. Only a template
 * that leaves the policy to sbx (Unmanaged, no policy) or whose policy allows no egress is
 * used, and agent_sandbox.accepted_policies cannot accept its policy. Checking the policy in
 * force rather than the template also catches a template changed after its pool's sandboxes
 * were made.
 * Returns 1 with ERROR filled for such a policy.
 */
static int template_policy_allows_egress(struct sbx_executor *executor, struct json_object *policy,
					 const struct as_sandbox *sandbox,
					 struct sbx_error *error)
{
	struct json_object *owners = as_json_get(policy, "metadata.ownerReferences");
	struct json_object *egress = as_json_get(policy, "spec.egress");
	const char *template = NULL;

	for (size_t i = 0; owners != NULL && json_object_is_type(owners, json_type_array) &&
			   i < json_object_array_length(owners);
	     i++) {
		struct json_object *owner = json_object_array_get_idx(owners, i);
		const char *kind = as_json_string(owner, "kind");

		if (kind != NULL && strcmp(kind, "SandboxTemplate") == 0)
			template = as_json_string(owner, "name");
	}
	if (template == NULL || egress == NULL || !json_object_is_type(egress, json_type_array) ||
	    json_object_array_length(egress) == 0)
		return 0;
	sbx_error_set(error, SBX_ERROR_SYSTEM,
		      "SandboxTemplate %s/%s%s%s lets the controller manage NetworkPolicy %s, "
		      "which selects the job's pod %s and allows egress, which would add to every "
		      "job's allow-list; set spec.networkPolicyManagement: Unmanaged (or an empty "
		      "spec.networkPolicy.egress list) in the template",
		      executor->namespace, template,
		      sandbox->pool != NULL ? " of warm pool " : "",
		      sandbox->pool != NULL ? sandbox->pool : "",
		      as_json_string(policy, "metadata.name"), sandbox->pod);
	return 1;
}

int as_netpol_check_others(struct sbx_executor *executor, const struct as_sandbox *sandbox,
			   struct json_object *pod, const struct as_egress *egress, int *rejected,
			   struct sbx_error *error)
{
	const struct sbx_agent_sandbox_config *settings = &executor->config->agent_sandbox;
	_cleanup_free_ char *path = NULL;
	struct json_object *list = NULL, *items, *labels = as_json_get(pod, "metadata.labels");
	struct k8s_status status;
	char what[300];

	if (asprintf(&path, "/apis/networking.k8s.io/v1/namespaces/%s/networkpolicies",
		     sandbox->namespace) < 0)
		return sbx_error_errno(error, ENOMEM, "NetworkPolicy");
	snprintf(what, sizeof(what), "list NetworkPolicies in namespace %s", sandbox->namespace);
	if (k8s_rest_list(executor->client, path, NULL, as_deadline(30), &list, &status, error) < 0)
		return as_api_error(error, &status, what);
	items = as_json_get(list, "items");
	for (size_t i = 0; items != NULL && i < json_object_array_length(items); i++) {
		struct json_object *policy = json_object_array_get_idx(items, i);
		const char *name = as_json_string(policy, "metadata.name");
		char reason[256];

		if (name == NULL || strcmp(name, sandbox->network_policy) == 0)
			continue;
		if (!as_selector_matches(as_json_get(policy, "spec.podSelector"), labels))
			continue;
		if (template_policy_allows_egress(executor, policy, sandbox, error)) {
			json_object_put(list);
			*rejected = 1;
			return -1;
		}
		if (as_netpol_within(policy, egress, settings->dns.allow, reason, sizeof(reason)))
			continue;
		if (accepted(&settings->accepted_policies, name)) {
			sbx_info("NetworkPolicy %s also selects pod %s and %s; accepted by "
				 "agent_sandbox.accepted_policies",
				 name, sandbox->pod, reason);
			continue;
		}
		sbx_error_set(error, SBX_ERROR_SYSTEM,
			      "NetworkPolicy %s/%s selects the job's pod %s and %s; NetworkPolicies "
			      "add up, so the job's egress would not be restricted to its "
			      "allow-list. Narrow that policy's podSelector, or list it in "
			      "agent_sandbox.accepted_policies to accept it",
			      sandbox->namespace, name, sandbox->pod, reason);
		json_object_put(list);
		*rejected = 1;
		return -1;
	}
	json_object_put(list);
	return 0;
}
