/* SPDX-License-Identifier: MIT */
/*
 * Parsers for the agent_sandbox section's values: Kubernetes names and labels, string maps,
 * the warm pool map, and raw YAML (pod templates, resources, tolerations) converted to JSON.
 */
#include <ctype.h>
#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config_value.h"
#include "error.h"
#include "util.h"

/* Nesting deeper than this in a pod template is a mistake (or an alias loop). */
#define JSON_DEPTH_MAX 32

void config_string_map_clear(struct sbx_string_map *map)
{
	for (size_t i = 0; i < map->count; i++) {
		free(map->keys[i]);
		free(map->values[i]);
	}
	free(map->keys);
	free(map->values);
	map->keys = NULL;
	map->values = NULL;
	map->count = 0;
}

static void warm_pools_clear(struct sbx_agent_sandbox_config *agent_sandbox)
{
	for (size_t i = 0; i < agent_sandbox->warm_pool_count; i++) {
		free(agent_sandbox->warm_pools[i].pattern);
		free(agent_sandbox->warm_pools[i].pool);
	}
	free(agent_sandbox->warm_pools);
	agent_sandbox->warm_pools = NULL;
	agent_sandbox->warm_pool_count = 0;
}

void config_agent_sandbox_clear(struct sbx_agent_sandbox_config *agent_sandbox)
{
	free(agent_sandbox->kubeconfig);
	free(agent_sandbox->context);
	free(agent_sandbox->namespace);
	warm_pools_clear(agent_sandbox);
	json_object_put(agent_sandbox->pod_template);
	config_string_list_clear(&agent_sandbox->allowed_images);
	free(agent_sandbox->container);
	free(agent_sandbox->runtime_class_name);
	json_object_put(agent_sandbox->resources);
	config_string_map_clear(&agent_sandbox->node_selector);
	json_object_put(agent_sandbox->tolerations);
	free(agent_sandbox->service_account);
	config_string_map_clear(&agent_sandbox->labels);
	config_string_map_clear(&agent_sandbox->pod_labels);
	config_string_list_clear(&agent_sandbox->allowed_label_domains);
	config_string_map_clear(&agent_sandbox->annotations);
	free(agent_sandbox->dns.namespace);
	config_string_map_clear(&agent_sandbox->dns.pod_labels);
	config_string_list_clear(&agent_sandbox->dns.cidrs);
	free(agent_sandbox->probe.destination);
	free(agent_sandbox->probe.image);
	config_string_list_clear(&agent_sandbox->accepted_policies);
	free(agent_sandbox->step_dir);
}

int config_parse_string(struct config_parser *parser, const yaml_node_t *node, const char *key,
			char **value)
{
	const char *text;
	char *copy;

	if (config_parse_scalar(parser, node, key, "a value", &text) < 0)
		return -1;
	if (text[0] == '\0')
		return config_fail(parser, node, key, "the value is empty; give a value or remove "
				   "the line to use the default");
	copy = strdup(text);
	if (copy == NULL)
		return sbx_error_errno(parser->error, ENOMEM, "config %s", parser->path);
	*value = copy;
	return 0;
}

/* RFC 1123 label as Kubernetes checks namespace and container names: at most 63 of a-z,
 * 0-9 and '-', starting and ending with a letter or digit. */
static int k8s_label_name_valid(const char *text)
{
	size_t length = strlen(text);

	if (length == 0 || length > 63 || text[0] == '-' || text[length - 1] == '-')
		return 0;
	for (const char *p = text; *p != '\0'; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-'))
			return 0;
	return 1;
}

int config_parse_k8s_name(struct config_parser *parser, const yaml_node_t *node,
			  const char *key, char **value)
{
	char quoted[QUOTED_SIZE];
	const char *text;
	char *copy;

	if (config_parse_scalar(parser, node, key, "a Kubernetes name", &text) < 0)
		return -1;
	if (!k8s_label_name_valid(text))
		return config_fail(parser, node, key, "invalid name \"%s\"; use at most 63 "
				   "lower-case letters, digits and '-', starting and ending with a "
				   "letter or digit",
				   config_quote_value(quoted, sizeof(quoted), text, strlen(text)));
	copy = strdup(text);
	if (copy == NULL)
		return sbx_error_errno(parser->error, ENOMEM, "config %s", parser->path);
	*value = copy;
	return 0;
}

/* The name part of a label key and a label value: at most 63 of [A-Za-z0-9_.-], starting and
 * ending with a letter or digit (a value may also be empty). */
static int label_word_valid(const char *text, size_t length, int empty_ok)
{
	if (length == 0)
		return empty_ok;
	if (length > 63 || !isalnum((unsigned char) text[0]) ||
	    !isalnum((unsigned char) text[length - 1]))
		return 0;
	for (size_t i = 0; i < length; i++)
		if (!isalnum((unsigned char) text[i]) && text[i] != '-' && text[i] != '_' &&
		    text[i] != '.')
			return 0;
	return 1;
}

/* A label key: an optional DNS subdomain prefix of at most 253 bytes and '/', then a name. */
static int label_key_valid(const char *key)
{
	const char *slash = strchr(key, '/');
	const char *name = key;

	if (slash != NULL) {
		size_t prefix = (size_t) (slash - key);

		if (prefix == 0 || prefix > 253 || strchr(slash + 1, '/') != NULL)
			return 0;
		for (size_t i = 0; i < prefix; i++)
			if (!((key[i] >= 'a' && key[i] <= 'z') || (key[i] >= '0' && key[i] <= '9') ||
			      key[i] == '-' || key[i] == '.'))
				return 0;
		name = slash + 1;
	}
	return label_word_valid(name, strlen(name), 0);
}

static int string_map_add(struct sbx_string_map *map, const char *key, const char *value)
{
	char **keys, **values;
	char *key_copy = strdup(key), *value_copy = strdup(value);

	if (key_copy == NULL || value_copy == NULL)
		goto fail;
	keys = realloc(map->keys, (map->count + 1) * sizeof(*keys));
	if (keys == NULL)
		goto fail;
	map->keys = keys;
	values = realloc(map->values, (map->count + 1) * sizeof(*values));
	if (values == NULL)
		goto fail;
	map->values = values;
	map->keys[map->count] = key_copy;
	map->values[map->count] = value_copy;
	map->count++;
	return 0;

fail:
	free(key_copy);
	free(value_copy);
	return -1;
}

int config_parse_string_map(struct config_parser *parser, const yaml_node_t *node,
			    const struct config_key *key, const char *key_path,
			    struct sbx_string_map *map)
{
	struct sbx_string_map parsed = { 0 };
	int labels = key->kind == KEY_LABELS;
	char quoted[QUOTED_SIZE];

	if (config_node_is_null(node)) {
		config_string_map_clear(map);
		return 0;
	}
	if (node->type != YAML_MAPPING_NODE)
		return config_fail(parser, node, key_path, "expected a mapping, got %s; write "
				   "lines such as \"example.com/team: ci\" below \"%s:\"",
				   config_node_type_name(node), key_path);
	if (config_check_duplicate_keys(parser, node, key_path) < 0)
		return -1;

	for (yaml_node_pair_t *pair = node->data.mapping.pairs.start;
	     pair < node->data.mapping.pairs.top; pair++) {
		const yaml_node_t *name_node = yaml_document_get_node(parser->document, pair->key);
		const yaml_node_t *value_node = yaml_document_get_node(parser->document,
									pair->value);
		const char *name, *value;

		if (config_parse_scalar(parser, name_node, key_path, "a key", &name) < 0)
			goto fail;
		/* An empty plain value is YAML's null; for a label it is the empty value. */
		if (config_node_is_null(value_node) && value_node->type == YAML_SCALAR_NODE)
			value = "";
		else if (config_parse_scalar(parser, value_node, key_path, "a value", &value) < 0)
			goto fail;
		if (labels && !label_key_valid(name)) {
			config_fail(parser, name_node, key_path, "invalid label key \"%s\"; use an "
				    "optional DNS prefix and '/', then at most 63 letters, digits, "
				    "'-', '_' and '.', such as example.com/team",
				    config_quote_value(quoted, sizeof(quoted), name, strlen(name)));
			goto fail;
		}
		if (labels && !label_word_valid(value, strlen(value), 1)) {
			config_fail(parser, value_node, key_path, "invalid label value \"%s\"; use "
				    "at most 63 letters, digits, '-', '_' and '.', starting and ending "
				    "with a letter or digit",
				    config_quote_value(quoted, sizeof(quoted), value, strlen(value)));
			goto fail;
		}
		if (string_map_add(&parsed, name, value) < 0) {
			sbx_error_errno(parser->error, ENOMEM, "config %s", parser->path);
			goto fail;
		}
	}
	config_string_map_clear(map);
	*map = parsed;
	return 0;

fail:
	config_string_map_clear(&parsed);
	return -1;
}

/* Pool names are DNS subdomains; sbx accepts the common subset, DNS labels joined by '.'. */
static int pool_name_valid(const char *name)
{
	size_t length = strlen(name);

	if (length == 0 || length > 253 || name[0] == '.' || name[length - 1] == '.')
		return 0;
	for (const char *p = name; *p != '\0'; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' ||
		      *p == '.'))
			return 0;
	return name[0] != '-' && name[length - 1] != '-';
}

int config_parse_warm_pools(struct config_parser *parser, const yaml_node_t *node,
			    const char *key_path, struct sbx_agent_sandbox_config *agent_sandbox)
{
	struct sbx_agent_sandbox_config parsed = { 0 };
	char quoted[QUOTED_SIZE];

	if (config_node_is_null(node)) {
		warm_pools_clear(agent_sandbox);
		return 0;
	}
	if (node->type != YAML_MAPPING_NODE)
		return config_fail(parser, node, key_path, "expected a mapping of job image "
				   "patterns to SandboxWarmPool names, got %s; write lines such as "
				   "\"debian:12\": ci-debian", config_node_type_name(node));
	if (config_check_duplicate_keys(parser, node, key_path) < 0)
		return -1;

	for (yaml_node_pair_t *pair = node->data.mapping.pairs.start;
	     pair < node->data.mapping.pairs.top; pair++) {
		const yaml_node_t *key = yaml_document_get_node(parser->document, pair->key);
		const yaml_node_t *value = yaml_document_get_node(parser->document, pair->value);
		struct sbx_warm_pool_entry *entries, entry = { 0 };
		char entry_key[QUOTED_SIZE + 160];
		const char *pattern, *pool, *star;

		if (config_parse_scalar(parser, key, key_path, "an image pattern", &pattern) < 0)
			goto fail;
		config_quote_value(quoted, sizeof(quoted), pattern, strlen(pattern));
		star = strchr(pattern, '*');
		if (pattern[0] == '\0' || (star != NULL && star[1] != '\0') ||
		    strpbrk(pattern, " \t") != NULL) {
			config_fail(parser, key, key_path, "invalid image pattern \"%s\"; use an "
				    "image name such as debian:12, a prefix ending in '*' such as "
				    "registry.example.com/ci/*, or \"*\" for every job", quoted);
			goto fail;
		}
		snprintf(entry_key, sizeof(entry_key), "%s.\"%s\"", key_path, quoted);
		if (config_parse_scalar(parser, value, entry_key, "a SandboxWarmPool name",
					&pool) < 0)
			goto fail;
		if (!pool_name_valid(pool)) {
			config_fail(parser, value, entry_key, "invalid SandboxWarmPool name \"%s\"; "
				    "use lower-case letters, digits, '-' and '.'",
				    config_quote_value(quoted, sizeof(quoted), pool, strlen(pool)));
			goto fail;
		}
		entry.pattern = strdup(pattern);
		entry.pool = strdup(pool);
		entries = realloc(parsed.warm_pools,
				  (parsed.warm_pool_count + 1) * sizeof(*entries));
		if (entry.pattern == NULL || entry.pool == NULL || entries == NULL) {
			free(entry.pattern);
			free(entry.pool);
			if (entries != NULL)
				parsed.warm_pools = entries;
			sbx_error_errno(parser->error, ENOMEM, "config %s", parser->path);
			goto fail;
		}
		entries[parsed.warm_pool_count++] = entry;
		parsed.warm_pools = entries;
	}
	warm_pools_clear(agent_sandbox);
	agent_sandbox->warm_pools = parsed.warm_pools;
	agent_sandbox->warm_pool_count = parsed.warm_pool_count;
	return 0;

fail:
	warm_pools_clear(&parsed);
	return -1;
}

/* Types a plain scalar as YAML's core schema does: null, booleans, integers, floats. */
static struct json_object *plain_scalar_to_json(const char *text)
{
	int64_t number;
	char *end;
	double real;

	if (text[0] == '\0' || strcmp(text, "~") == 0 || strcmp(text, "null") == 0 ||
	    strcmp(text, "Null") == 0 || strcmp(text, "NULL") == 0)
		return NULL;
	if (strcmp(text, "true") == 0 || strcmp(text, "True") == 0 || strcmp(text, "TRUE") == 0)
		return json_object_new_boolean(1);
	if (strcmp(text, "false") == 0 || strcmp(text, "False") == 0 ||
	    strcmp(text, "FALSE") == 0)
		return json_object_new_boolean(0);
	if (text[0] == '-' && sbx_parse_int64(text + 1, &number) == 0 && text[1] != '+')
		return json_object_new_int64(-number);
	if (text[0] != '+' && sbx_parse_int64(text, &number) == 0)
		return json_object_new_int64(number);
	if (strspn(text, "0123456789.-+eE") == strlen(text) && strchr(text, '.') != NULL) {
		errno = 0;
		real = strtod(text, &end);
		if (errno == 0 && *end == '\0')
			return json_object_new_double(real);
	}
	return json_object_new_string(text);
}

static int node_to_json(struct config_parser *parser, const yaml_node_t *node, const char *key,
			int depth, struct json_object **value)
{
	struct json_object *result = NULL;

	if (depth > JSON_DEPTH_MAX)
		return config_fail(parser, node, key, "nested more than %d levels deep; flatten "
				   "the value", JSON_DEPTH_MAX);
	switch (node->type) {
	case YAML_SCALAR_NODE: {
		const char *text = config_scalar_text(node);

		if (strlen(text) != node->data.scalar.length)
			return config_fail(parser, node, key, "a value contains a NUL byte; remove "
					   "it");
		if (node->data.scalar.style == YAML_PLAIN_SCALAR_STYLE) {
			result = plain_scalar_to_json(text);
			*value = result;
			return 0;
		}
		result = json_object_new_string(text);
		break;
	}
	case YAML_SEQUENCE_NODE:
		result = json_object_new_array();
		if (result == NULL)
			break;
		for (yaml_node_item_t *item = node->data.sequence.items.start;
		     item < node->data.sequence.items.top; item++) {
			struct json_object *element = NULL;

			if (node_to_json(parser, yaml_document_get_node(parser->document, *item),
					 key, depth + 1, &element) < 0) {
				json_object_put(result);
				return -1;
			}
			json_object_array_add(result, element);
		}
		break;
	case YAML_MAPPING_NODE:
		if (config_check_duplicate_keys(parser, node, key) < 0)
			return -1;
		result = json_object_new_object();
		if (result == NULL)
			break;
		for (yaml_node_pair_t *pair = node->data.mapping.pairs.start;
		     pair < node->data.mapping.pairs.top; pair++) {
			const yaml_node_t *name = yaml_document_get_node(parser->document,
									 pair->key);
			struct json_object *element = NULL;

			if (node_to_json(parser, yaml_document_get_node(parser->document,
									pair->value),
					 key, depth + 1, &element) < 0) {
				json_object_put(result);
				return -1;
			}
			json_object_object_add(result, config_scalar_text(name), element);
		}
		break;
	default:
		return config_fail(parser, node, key, "expected a value, got %s",
				   config_node_type_name(node));
	}
	if (result == NULL)
		return sbx_error_errno(parser->error, ENOMEM, "config %s", parser->path);
	*value = result;
	return 0;
}

int config_parse_json(struct config_parser *parser, const yaml_node_t *node, const char *key,
		      struct json_object **value)
{
	struct json_object *converted = NULL;

	if (!config_node_is_null(node) && node_to_json(parser, node, key, 0, &converted) < 0)
		return -1;
	json_object_put(*value);
	*value = converted;
	return 0;
}
