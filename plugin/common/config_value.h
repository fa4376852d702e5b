/* SPDX-License-Identifier: MIT */
/*
 * Internal to the configuration loader: the key table type and the parsers that turn one YAML
 * node into a checked value. config.c walks the mappings, config_value.c parses the values.
 */
#ifndef SBX_CONFIG_VALUE_H
#define SBX_CONFIG_VALUE_H

#include <stdbool.h>
#include <stdint.h>
#include <yaml.h>

#include "config.h"

/* Values are quoted in messages up to this many bytes. */
#define QUOTE_MAX 80
/* Room for a quoted value: every byte may become a four-byte escape, plus "...". */
#define QUOTED_SIZE (QUOTE_MAX * 4 + 8)

enum config_key_kind {
	KEY_WORD, /* char *: one of WORDS, stored as a string */
	KEY_ENUM, /* enum: the index of the word in WORDS */
	KEY_INT, /* integer of SIZE bytes in MIN..MAX */
	KEY_BOOL, /* int: true or false */
	KEY_PATH, /* char *: absolute path, null unsets it */
	KEY_SIZE, /* uint64_t bytes: a size with an optional K, M, G or T suffix */
	KEY_CPU, /* uint64_t thousandths of a CPU */
	KEY_HOSTNAME, /* char *: an RFC 1123 host name */
	KEY_PATH_LIST, /* struct sbx_string_list of absolute paths */
	KEY_ALLOW_LIST, /* struct sbx_string_list of allow-list entries */
	KEY_IMAGES, /* local.images */
	KEY_STRING, /* char *: a single non-empty value, null unsets it */
	KEY_K8S_NAME, /* char *: a Kubernetes DNS label (namespace, object or container name) */
	KEY_STRING_LIST, /* struct sbx_string_list of non-empty values */
	KEY_STRING_MAP, /* struct sbx_string_map of single values */
	KEY_LABELS, /* struct sbx_string_map of Kubernetes label keys and values */
	KEY_WARM_POOLS, /* agent_sandbox.warm_pools */
	KEY_JSON, /* struct json_object *: any YAML value, converted to JSON */
	KEY_SECTION, /* a mapping parsed with SECTION */
};

struct config_key {
	const char *name;
	enum config_key_kind kind;
	size_t offset;
	size_t size;
	const char *const *words;
	int64_t min;
	int64_t max;
	/* Reasons for MIN and MAX, appended to range errors. */
	const char *below_reason;
	const char *above_reason;
	const struct config_key *section;
};

struct config_parser {
	const char *path;
	yaml_document_t *document;
	struct sbx_error *error;
};

/* Fills the error with "config PATH:LINE: key "KEY": MESSAGE" and returns -1. KEY may be
 * NULL for messages about the file or a mapping as a whole. */
int config_fail(struct config_parser *parser, const yaml_node_t *node, const char *key,
		const char *format, ...) __attribute__((format(printf, 4, 5)));

/* Copies TEXT into BUF for a message, escaping what would break a log line. */
const char *config_quote_value(char *buf, size_t size, const char *text, size_t length);
const char *config_scalar_text(const yaml_node_t *node);
/* True for a plain empty, "~" or "null" scalar: the YAML core schema's null. */
bool config_node_is_null(const yaml_node_t *node);
/* Describes NODE's type for messages: "a list", "a mapping", "nothing". */
const char *config_node_type_name(const yaml_node_t *node);
/* Fails with a message that names the mapping key and its first line when a key repeats. */
int config_check_duplicate_keys(struct config_parser *parser, const yaml_node_t *mapping,
				const char *prefix);

/* Value parsers. Each one checks NODE and sets the output only on success. */
int config_parse_word(struct config_parser *parser, const yaml_node_t *node, const char *key,
		      const char *const *words, size_t *index);
int config_parse_int(struct config_parser *parser, const yaml_node_t *node,
		     const struct config_key *key, const char *key_path, int64_t *value);
int config_parse_bool(struct config_parser *parser, const yaml_node_t *node, const char *key,
		      int *value);
int config_parse_path(struct config_parser *parser, const yaml_node_t *node, const char *key,
		      char **value);
int config_parse_size(struct config_parser *parser, const yaml_node_t *node,
		      const struct config_key *key, const char *key_path, uint64_t *value);
int config_parse_cpu(struct config_parser *parser, const yaml_node_t *node, const char *key,
		     uint64_t *millis);
int config_parse_hostname(struct config_parser *parser, const yaml_node_t *node,
			  const char *key, char **value);
int config_parse_list(struct config_parser *parser, const yaml_node_t *node,
		      const struct config_key *key, const char *key_path,
		      struct sbx_string_list *list);
int config_parse_images(struct config_parser *parser, const yaml_node_t *node,
			const char *key_path, struct sbx_local_config *local);

/* Checks that NODE is one value without NUL bytes or control characters; WHAT names the
 * expected value for the message. */
int config_parse_scalar(struct config_parser *parser, const yaml_node_t *node, const char *key,
			const char *what, const char **text);

/* The agent_sandbox value parsers (config_agent_sandbox.c). */
int config_parse_string(struct config_parser *parser, const yaml_node_t *node, const char *key,
			char **value);
int config_parse_k8s_name(struct config_parser *parser, const yaml_node_t *node,
			  const char *key, char **value);
int config_parse_string_map(struct config_parser *parser, const yaml_node_t *node,
			    const struct config_key *key, const char *key_path,
			    struct sbx_string_map *map);
int config_parse_warm_pools(struct config_parser *parser, const yaml_node_t *node,
			    const char *key_path, struct sbx_agent_sandbox_config *agent_sandbox);
int config_parse_json(struct config_parser *parser, const yaml_node_t *node, const char *key,
		      struct json_object **value);
void config_string_map_clear(struct sbx_string_map *map);
void config_agent_sandbox_clear(struct sbx_agent_sandbox_config *agent_sandbox);

void config_string_list_clear(struct sbx_string_list *list);
void config_image_map_clear(struct sbx_local_config *local);

#endif /* SBX_CONFIG_VALUE_H */
