/* SPDX-License-Identifier: MIT */
/* Parsers for single configuration values: each checks one YAML node and names the fix. */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "allowlist.h"
#include "config_value.h"
#include "error.h"
#include "util.h"

void config_string_list_clear(struct sbx_string_list *list)
{
	for (size_t i = 0; i < list->count; i++)
		free(list->items[i]);
	free(list->items);
	list->items = NULL;
	list->count = 0;
}

void config_image_map_clear(struct sbx_local_config *local)
{
	for (size_t i = 0; i < local->image_count; i++) {
		free(local->images[i].pattern);
		free(local->images[i].rootfs);
	}
	free(local->images);
	local->images = NULL;
	local->image_count = 0;
}

const char *config_quote_value(char *buf, size_t size, const char *text, size_t length)
{
	size_t used = 0;

	for (size_t i = 0; i < length && used + 8 < size; i++) {
		unsigned char c = (unsigned char) text[i];

		if (i == QUOTE_MAX) {
			used += (size_t) snprintf(buf + used, size - used, "...");
			break;
		}
		if (c == '"' || c == '\\')
			used += (size_t) snprintf(buf + used, size - used, "\\%c", c);
		else if (c < 0x20 || c == 0x7f)
			used += (size_t) snprintf(buf + used, size - used, "\\x%02x", c);
		else
			buf[used++] = (char) c;
	}
	buf[used] = '\0';
	return buf;
}

int config_fail(struct config_parser *parser, const yaml_node_t *node, const char *key,
		const char *format, ...)
{
	char message[SBX_ERROR_MESSAGE_MAX];
	va_list args;

	va_start(args, format);
	vsnprintf(message, sizeof(message), format, args);
	va_end(args);
	if (key != NULL)
		return sbx_error_set(parser->error, SBX_ERROR_INVALID,
				     "config %s:%zu: key \"%s\": %s", parser->path,
				     node->start_mark.line + 1, key, message);
	return sbx_error_set(parser->error, SBX_ERROR_INVALID, "config %s:%zu: %s", parser->path,
			     node->start_mark.line + 1, message);
}

const char *config_scalar_text(const yaml_node_t *node)
{
	return (const char *) node->data.scalar.value;
}

bool config_node_is_null(const yaml_node_t *node)
{
	static const char *const null_words[] = { "", "~", "null", "Null", "NULL" };
	const char *text;

	if (node->type != YAML_SCALAR_NODE || node->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return false;
	text = config_scalar_text(node);
	for (size_t i = 0; i < SBX_ARRAY_SIZE(null_words); i++)
		if (strcmp(text, null_words[i]) == 0)
			return true;
	return false;
}

const char *config_node_type_name(const yaml_node_t *node)
{
	if (config_node_is_null(node))
		return "nothing";
	switch (node->type) {
	case YAML_SCALAR_NODE:
		return "a single value";
	case YAML_SEQUENCE_NODE:
		return "a list";
	case YAML_MAPPING_NODE:
		return "a mapping";
	default:
		return "an empty node";
	}
}

/*
 * Returns the scalar's text after checking that NODE is a scalar without NUL bytes or control
 * characters. WHAT names the expected value for the message ("a path", "true or false").
 */
static int scalar_value(struct config_parser *parser, const yaml_node_t *node, const char *key,
			const char *what, const char **text)
{
	const char *value;

	if (config_node_is_null(node))
		return config_fail(parser, node, key, "no value; give %s or remove the line to use "
				   "the default", what);
	if (node->type != YAML_SCALAR_NODE)
		return config_fail(parser, node, key, "expected %s, got %s; write %s as a single "
				   "value", what, config_node_type_name(node), what);
	value = config_scalar_text(node);
	/* A double-quoted "\0" would cut the value short where C reads it. */
	if (strlen(value) != node->data.scalar.length)
		return config_fail(parser, node, key, "the value contains a NUL byte; remove it");
	for (const char *p = value; *p != '\0'; p++)
		if ((unsigned char) *p < 0x20 || *p == 0x7f)
			return config_fail(parser, node, key, "the value contains a control "
					   "character (0x%02x); remove it", (unsigned char) *p);
	*text = value;
	return 0;
}

int config_parse_scalar(struct config_parser *parser, const yaml_node_t *node, const char *key,
			const char *what, const char **text)
{
	return scalar_value(parser, node, key, what, text);
}

static char *words_list(const char *const *words, char *buf, size_t size)
{
	size_t used = 0;

	buf[0] = '\0';
	for (size_t i = 0; words[i] != NULL && used < size; i++) {
		const char *separator = ", ";

		if (i == 0)
			separator = "";
		else if (words[i + 1] == NULL)
			separator = " or ";

		used += (size_t) snprintf(buf + used, size - used, "%s%s", separator, words[i]);
	}
	return buf;
}

int config_parse_word(struct config_parser *parser, const yaml_node_t *node, const char *key,
		      const char *const *words, size_t *index)
{
	char quoted[QUOTED_SIZE], expected[256];
	const char *text;

	words_list(words, expected, sizeof(expected));
	if (scalar_value(parser, node, key, expected, &text) < 0)
		return -1;
	for (size_t i = 0; words[i] != NULL; i++) {
		if (strcmp(text, words[i]) == 0) {
			*index = i;
			return 0;
		}
	}
	config_quote_value(quoted, sizeof(quoted), text, strlen(text));
	return config_fail(parser, node, key, "unknown value \"%s\"; use %s", quoted, expected);
}

int config_parse_int(struct config_parser *parser, const yaml_node_t *node,
		     const struct config_key *key, const char *key_path, int64_t *value)
{
	char quoted[QUOTED_SIZE], range[256];
	const char *text;
	int64_t parsed;

	snprintf(range, sizeof(range), "a whole number from %" PRId64 " to %" PRId64, key->min,
		 key->max);
	if (scalar_value(parser, node, key_path, range, &text) < 0)
		return -1;
	config_quote_value(quoted, sizeof(quoted), text, strlen(text));
	if (node->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return config_fail(parser, node, key_path, "expected a number, got the quoted "
				   "string \"%s\"; remove the quotes", quoted);
	if (text[0] == '-' && sbx_parse_int64(text + 1, &parsed) == 0)
		return config_fail(parser, node, key_path, "%s is negative; use %s%s%s", quoted,
				   range, key->below_reason ? " because " : "",
				   key->below_reason ? key->below_reason : "");
	if (sbx_parse_int64(text, &parsed) < 0) {
		/* Only digits can still fail here: the number does not fit in 64 bits. */
		bool digits = text[0] != '\0' && strspn(text, "0123456789") == strlen(text);

		if (!digits)
			return config_fail(parser, node, key_path, "invalid number \"%s\"; use %s",
					   quoted, range);
		parsed = INT64_MAX;
	}
	if (parsed < key->min || parsed > key->max) {
		const char *reason = parsed < key->min ? key->below_reason : key->above_reason;

		return config_fail(parser, node, key_path, "%s is out of range; use %s%s%s", quoted,
				   range, reason ? " because " : "", reason ? reason : "");
	}
	*value = parsed;
	return 0;
}

int config_parse_bool(struct config_parser *parser, const yaml_node_t *node, const char *key,
		      int *value)
{
	static const char *const true_words[] = { "true", "True", "TRUE" };
	static const char *const false_words[] = { "false", "False", "FALSE" };
	char quoted[QUOTED_SIZE];
	const char *text;

	if (scalar_value(parser, node, key, "true or false", &text) < 0)
		return -1;
	if (node->data.scalar.style == YAML_PLAIN_SCALAR_STYLE) {
		for (size_t i = 0; i < SBX_ARRAY_SIZE(true_words); i++) {
			if (strcmp(text, true_words[i]) == 0) {
				*value = 1;
				return 0;
			}
			if (strcmp(text, false_words[i]) == 0) {
				*value = 0;
				return 0;
			}
		}
	}
	config_quote_value(quoted, sizeof(quoted), text, strlen(text));
	if (node->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return config_fail(parser, node, key, "expected true or false, got the quoted "
				   "string \"%s\"; remove the quotes", quoted);
	/* YAML 1.1 also read yes, no, on and off as booleans; YAML 1.2 does not, so they
	 * are rejected rather than guessed at. */
	return config_fail(parser, node, key, "expected true or false, got \"%s\"; use true or "
			   "false", quoted);
}

static int check_absolute_path(struct config_parser *parser, const yaml_node_t *node,
			       const char *key, const char *text)
{
	char quoted[QUOTED_SIZE];

	if (text[0] != '/')
		return config_fail(parser, node, key, "\"%s\" is not an absolute path; use a path "
				   "that starts with /",
				   config_quote_value(quoted, sizeof(quoted), text, strlen(text)));
	return 0;
}

int config_parse_path(struct config_parser *parser, const yaml_node_t *node, const char *key,
		      char **value)
{
	const char *text;
	char *copy;

	if (scalar_value(parser, node, key, "an absolute path", &text) < 0)
		return -1;
	if (check_absolute_path(parser, node, key, text) < 0)
		return -1;
	copy = strdup(text);
	if (copy == NULL)
		return sbx_error_errno(parser->error, ENOMEM, "config %s", parser->path);
	*value = copy;
	return 0;
}

int config_parse_size(struct config_parser *parser, const yaml_node_t *node,
		      const struct config_key *key, const char *key_path, uint64_t *value)
{
	char quoted[QUOTED_SIZE];
	const char *text;
	uint64_t bytes;

	if (scalar_value(parser, node, key_path, "a size such as 512M or 4G", &text) < 0)
		return -1;
	config_quote_value(quoted, sizeof(quoted), text, strlen(text));
	if (sbx_parse_size(text, &bytes) < 0)
		return config_fail(parser, node, key_path, "invalid size \"%s\"; use a number with "
				   "an optional K, M, G or T suffix%s", quoted,
				   key->min > 0 ? "" : ", or 0 for no limit");
	/* The only minimum is 1 (tmp_size), so "too small" means 0. */
	if (bytes < (uint64_t) key->min)
		return config_fail(parser, node, key_path, "size \"%s\" is not allowed because %s; "
				   "use a size such as 1G", quoted, key->below_reason);
	*value = bytes;
	return 0;
}

/*
 * Parses a CPU count with up to three decimals ("2", "1.5", "0.25") into thousandths. The
 * kernel rejects CFS quotas below 1 ms, which is 0.01 CPU at the default 100 ms period.
 */
int config_parse_cpu(struct config_parser *parser, const yaml_node_t *node, const char *key,
		     uint64_t *millis)
{
	char quoted[QUOTED_SIZE];
	const char *text, *p;
	uint64_t whole = 0, fraction = 0, total;
	int decimals = 0;

	if (scalar_value(parser, node, key, "a number of CPUs such as 2 or 1.5", &text) < 0)
		return -1;
	config_quote_value(quoted, sizeof(quoted), text, strlen(text));
	if (node->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return config_fail(parser, node, key, "expected a number, got the quoted string "
				   "\"%s\"; remove the quotes", quoted);

	p = text;
	if (!isdigit((unsigned char) *p))
		goto invalid;
	for (; isdigit((unsigned char) *p); p++) {
		whole = whole * 10 + (uint64_t) (*p - '0');
		/* More CPUs than any machine has; also keeps the product below in range. */
		if (whole > 1000000)
			return config_fail(parser, node, key,
					   "%s CPUs is out of range; use at most 1000000", quoted);
	}
	if (*p == '.') {
		p++;
		if (!isdigit((unsigned char) *p))
			goto invalid;
		for (; isdigit((unsigned char) *p); p++) {
			if (++decimals > 3)
				return config_fail(parser, node, key, "\"%s\" has more than three "
						   "decimals; round it to thousandths of a CPU",
						   quoted);
			fraction = fraction * 10 + (uint64_t) (*p - '0');
		}
		for (int i = decimals; i < 3; i++)
			fraction *= 10;
	}
	if (*p != '\0')
		goto invalid;

	total = whole * 1000 + fraction;
	if (total > 0 && total < 10)
		return config_fail(parser, node, key, "%s CPUs is below the smallest limit the "
				   "kernel enforces; use at least 0.01, or 0 for no limit", quoted);
	*millis = total;
	return 0;

invalid:
	return config_fail(parser, node, key, "invalid CPU count \"%s\"; use a number of CPUs "
			   "such as 2 or 1.5, or 0 for no limit", quoted);
}

/* RFC 1123 host name, at most HOST_NAME_MAX (64) bytes as sethostname() accepts. */
int config_parse_hostname(struct config_parser *parser, const yaml_node_t *node,
			  const char *key, char **value)
{
	char quoted[QUOTED_SIZE];
	const char *text;
	size_t length, label = 0;
	char *copy;

	if (scalar_value(parser, node, key, "a host name", &text) < 0)
		return -1;
	length = strlen(text);
	config_quote_value(quoted, sizeof(quoted), text, length);
	if (length == 0 || length > 64)
		goto invalid;
	for (size_t i = 0; i < length; i++) {
		char c = text[i];

		if (c == '.') {
			if (label == 0 || text[i - 1] == '-')
				goto invalid;
			label = 0;
			continue;
		}
		if (!isalnum((unsigned char) c) && !(c == '-' && label > 0))
			goto invalid;
		if (++label > 63)
			goto invalid;
	}
	if (label == 0 || text[length - 1] == '-')
		goto invalid;

	copy = strdup(text);
	if (copy == NULL)
		return sbx_error_errno(parser->error, ENOMEM, "config %s", parser->path);
	*value = copy;
	return 0;

invalid:
	return config_fail(parser, node, key, "invalid host name \"%s\"; use at most 64 letters, "
			   "digits, '-' and '.', with no label starting or ending in '-'", quoted);
}

static int string_list_append(struct sbx_string_list *list, const char *text)
{
	char **items;
	char *copy = strdup(text);

	if (copy == NULL)
		return -1;
	items = realloc(list->items, (list->count + 1) * sizeof(*items));
	if (items == NULL) {
		free(copy);
		return -1;
	}
	items[list->count++] = copy;
	list->items = items;
	return 0;
}

/* One list item is one entry: "a, b" in a single item is a mistake, not two entries. */
static int check_allow_entry(struct config_parser *parser, const yaml_node_t *node,
			     const char *key, const char *text)
{
	struct sbx_allow_entry entry = { 0 };
	struct sbx_error allow_error = { 0 };

	if (sbx_allow_entry_parse(text, &entry, &allow_error) < 0)
		return config_fail(parser, node, key, "%s", allow_error.message);
	/* allowlist.h has no function to free a single entry; its only allocation is host. */
	free(entry.host);
	return 0;
}

int config_parse_list(struct config_parser *parser, const yaml_node_t *node,
		      const struct config_key *key, const char *key_path,
		      struct sbx_string_list *list)
{
	const char *what = key->kind == KEY_PATH_LIST	 ? "an absolute path"
			   : key->kind == KEY_ALLOW_LIST ? "an allow-list entry"
							 : "a value";
	struct sbx_string_list parsed = { 0 };

	if (config_node_is_null(node)) {
		config_string_list_clear(list);
		return 0;
	}
	if (node->type != YAML_SEQUENCE_NODE)
		return config_fail(parser, node, key_path, "expected a list, got %s; write it as "
				   "[a, b] or as lines starting with \"- \"",
				   config_node_type_name(node));

	for (yaml_node_item_t *item = node->data.sequence.items.start;
	     item < node->data.sequence.items.top; item++) {
		const yaml_node_t *element = yaml_document_get_node(parser->document, *item);
		const char *text;

		if (scalar_value(parser, element, key_path, what, &text) < 0)
			goto fail;
		if (key->kind == KEY_PATH_LIST && check_absolute_path(parser, element, key_path,
								      text) < 0)
			goto fail;
		if (key->kind == KEY_ALLOW_LIST && check_allow_entry(parser, element, key_path,
								     text) < 0)
			goto fail;
		if (string_list_append(&parsed, text) < 0) {
			sbx_error_errno(parser->error, ENOMEM, "config %s", parser->path);
			goto fail;
		}
	}
	config_string_list_clear(list);
	*list = parsed;
	return 0;

fail:
	config_string_list_clear(&parsed);
	return -1;
}

int config_check_duplicate_keys(struct config_parser *parser, const yaml_node_t *mapping,
				const char *prefix)
{
	for (yaml_node_pair_t *pair = mapping->data.mapping.pairs.start;
	     pair < mapping->data.mapping.pairs.top; pair++) {
		const yaml_node_t *key = yaml_document_get_node(parser->document, pair->key);

		if (key->type != YAML_SCALAR_NODE)
			return config_fail(parser, key, NULL, "%s: keys must be single words, not "
					   "%s; write \"key: value\"",
					   prefix[0] != '\0' ? prefix : "top level",
					   config_node_type_name(key));
		for (yaml_node_pair_t *earlier = mapping->data.mapping.pairs.start; earlier < pair;
		     earlier++) {
			const yaml_node_t *other = yaml_document_get_node(parser->document,
									  earlier->key);
			char quoted[QUOTED_SIZE];

			if (other->type != YAML_SCALAR_NODE ||
			    strcmp(config_scalar_text(other), config_scalar_text(key)) != 0)
				continue;
			config_quote_value(quoted, sizeof(quoted), config_scalar_text(key),
					   key->data.scalar.length);
			return config_fail(parser, key, NULL, "duplicate key \"%s%s%s\", first set "
					   "on line %zu; keep only one", prefix,
					   prefix[0] != '\0' ? "." : "", quoted,
					   other->start_mark.line + 1);
		}
	}
	return 0;
}

/* Image patterns are an exact image name or a prefix ending in '*'. */
int config_parse_images(struct config_parser *parser, const yaml_node_t *node,
			const char *key_path, struct sbx_local_config *local)
{
	struct sbx_local_config parsed = { 0 };
	char quoted[QUOTED_SIZE];

	if (config_node_is_null(node)) {
		config_image_map_clear(local);
		return 0;
	}
	if (node->type != YAML_MAPPING_NODE)
		return config_fail(parser, node, key_path, "expected a mapping of image names to "
				   "root file system directories, got %s; write lines such as "
				   "\"debian:12\": /srv/rootfs/debian-12",
				   config_node_type_name(node));
	if (config_check_duplicate_keys(parser, node, key_path) < 0)
		return -1;

	for (yaml_node_pair_t *pair = node->data.mapping.pairs.start;
	     pair < node->data.mapping.pairs.top; pair++) {
		const yaml_node_t *key = yaml_document_get_node(parser->document, pair->key);
		const yaml_node_t *value = yaml_document_get_node(parser->document, pair->value);
		struct sbx_image_map_entry *entries, entry = { 0 };
		char entry_key[sizeof(quoted) + 160];
		const char *pattern, *star;

		if (scalar_value(parser, key, key_path, "an image name", &pattern) < 0)
			goto fail;
		config_quote_value(quoted, sizeof(quoted), pattern, strlen(pattern));
		star = strchr(pattern, '*');
		if (pattern[0] == '*' || (star != NULL && star[1] != '\0') ||
		    strpbrk(pattern, " \t") != NULL) {
			config_fail(parser, key, key_path, "invalid image pattern \"%s\"; use an "
				    "image name such as debian:12, or a prefix ending in '*' "
				    "such as registry.example.com/ci/*", quoted);
			goto fail;
		}
		snprintf(entry_key, sizeof(entry_key), "%s.\"%s\"", key_path, quoted);
		entry.pattern = strdup(pattern);
		if (entry.pattern == NULL ||
		    config_parse_path(parser, value, entry_key, &entry.rootfs) < 0) {
			if (entry.pattern == NULL)
				sbx_error_errno(parser->error, ENOMEM, "config %s", parser->path);
			free(entry.pattern);
			goto fail;
		}
		entries = realloc(parsed.images, (parsed.image_count + 1) * sizeof(*entries));
		if (entries == NULL) {
			free(entry.pattern);
			free(entry.rootfs);
			sbx_error_errno(parser->error, ENOMEM, "config %s", parser->path);
			goto fail;
		}
		entries[parsed.image_count++] = entry;
		parsed.images = entries;
	}
	config_image_map_clear(local);
	local->images = parsed.images;
	local->image_count = parsed.image_count;
	return 0;

fail:
	config_image_map_clear(&parsed);
	return -1;
}
