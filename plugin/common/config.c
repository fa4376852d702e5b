/* SPDX-License-Identifier: MIT */
/*
 * Loads the sbx YAML configuration with libyaml's document API. The YAML keys are the field
 * names of struct sbx_config. A table per mapping defines how each key is parsed and checked,
 * so the key names, the checks and the defaults each live in one place.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pwd.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#include "allowlist.h"
#include "cleanup.h"
#include "config.h"
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

/* Values are quoted in messages up to this many bytes. */
#define QUOTE_MAX 80

#define DOCS_HINT "See docs/config.md"

enum key_kind {
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
	KEY_SECTION, /* a mapping parsed with SECTION */
};

struct config_key {
	const char *name;
	enum key_kind kind;
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

#define FIELD(type, member) .offset = offsetof(type, member), .size = sizeof(((type *) 0)->member)
#define LOCAL(member) FIELD(struct sbx_local_config, member)
#define NETWORK(member) FIELD(struct sbx_network_config, member)
#define TOP(member) FIELD(struct sbx_config, member)

static const char *const backend_words[] = { "local", "agent-sandbox", NULL };
static const char *const shell_words[] = { "bash", "sh", NULL };
/* In the order of enum sbx_log_level, enum sbx_local_mode and enum sbx_unmapped_image. */
static const char *const log_level_words[] = { "error", "warning", "info", "debug", NULL };
static const char *const mode_words[] = { "auto", "root", "unprivileged", NULL };
static const char *const unmapped_words[] = { "ignore", "reject", NULL };

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
	{ .name = NULL },
};

struct config_parser {
	const char *path;
	yaml_document_t *document;
	struct sbx_error *error;
};

static void string_list_clear(struct sbx_string_list *list)
{
	for (size_t i = 0; i < list->count; i++)
		free(list->items[i]);
	free(list->items);
	list->items = NULL;
	list->count = 0;
}

static void image_map_clear(struct sbx_local_config *local)
{
	for (size_t i = 0; i < local->image_count; i++) {
		free(local->images[i].pattern);
		free(local->images[i].rootfs);
	}
	free(local->images);
	local->images = NULL;
	local->image_count = 0;
}

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
	image_map_clear(&config->local);
	string_list_clear(&config->local.masked_paths);
	free(config->local.cache_dir);
	free(config->local.gitlab_runner_path);
	free(config->local.hostname);
	string_list_clear(&config->network.runner_allow);
	string_list_clear(&config->network.user_allow);
	free(config);
}

static inline void config_freep(struct sbx_config **config)
{
	sbx_config_free(*config);
	*config = NULL;
}

#define _cleanup_config_ __attribute__((cleanup(config_freep)))

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
	config->local.unmapped_image = SBX_UNMAPPED_IMAGE_IGNORE;
	config->local.tmp_size = 1024ULL * 1024 * 1024;
	config->local.memory_max = 4ULL * 1024 * 1024 * 1024;
	config->local.pids_max = 4096;
	config->local.cpu_max_millis = 0;
	config->local.hostname = strdup("sbx");

	config->network.allow_ci_server = 1;
	config->network.proxy_port = 3128;

	if (config->backend == NULL || config->shell == NULL || config->local.hostname == NULL)
		return sbx_error_errno(error, ENOMEM, "cannot set the configuration defaults");
	return 0;
}

/* Copies TEXT into BUF for a message, escaping what would break a log line. */
static const char *quote_value(char *buf, size_t size, const char *text, size_t length)
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

/* Fills the error with "config PATH:LINE: key "KEY": MESSAGE" and returns -1. */
static int __attribute__((format(printf, 4, 5)))
config_fail(struct config_parser *parser, const yaml_node_t *node, const char *key,
	    const char *format, ...)
{
	char message[SBX_ERROR_MESSAGE_MAX];
	va_list args;

	va_start(args, format);
	vsnprintf(message, sizeof(message), format, args);
	va_end(args);
	if (key != NULL)
		return sbx_error_set(parser->error, SBX_ERROR_INVALID, "config %s:%zu: key \"%s\": %s",
				     parser->path, node->start_mark.line + 1, key, message);
	return sbx_error_set(parser->error, SBX_ERROR_INVALID, "config %s:%zu: %s", parser->path,
			     node->start_mark.line + 1, message);
}

static const char *scalar_text(const yaml_node_t *node)
{
	return (const char *) node->data.scalar.value;
}

/* A plain empty, "~" or "null" scalar: the YAML core schema's null. */
static bool node_is_null(const yaml_node_t *node)
{
	static const char *const null_words[] = { "", "~", "null", "Null", "NULL" };
	const char *text;

	if (node->type != YAML_SCALAR_NODE || node->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return false;
	text = scalar_text(node);
	for (size_t i = 0; i < SBX_ARRAY_SIZE(null_words); i++)
		if (strcmp(text, null_words[i]) == 0)
			return true;
	return false;
}

static const char *node_type_name(const yaml_node_t *node)
{
	if (node_is_null(node))
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

	if (node_is_null(node))
		return config_fail(parser, node, key, "no value; give %s or remove the line to use "
				   "the default", what);
	if (node->type != YAML_SCALAR_NODE)
		return config_fail(parser, node, key, "expected %s, got %s; write %s as a single "
				   "value", what, node_type_name(node), what);
	value = scalar_text(node);
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

static int parse_word(struct config_parser *parser, const yaml_node_t *node, const char *key,
		      const char *const *words, size_t *index)
{
	char quoted[QUOTE_MAX * 4 + 8], expected[256];
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
	return config_fail(parser, node, key, "unknown value \"%s\"; use %s",
			   quote_value(quoted, sizeof(quoted), text, strlen(text)), expected);
}

static int parse_int(struct config_parser *parser, const yaml_node_t *node,
		     const struct config_key *key, const char *key_path, int64_t *value)
{
	char quoted[QUOTE_MAX * 4 + 8], range[256];
	const char *text;
	int64_t parsed;

	snprintf(range, sizeof(range), "a whole number from %" PRId64 " to %" PRId64, key->min,
		 key->max);
	if (scalar_value(parser, node, key_path, range, &text) < 0)
		return -1;
	quote_value(quoted, sizeof(quoted), text, strlen(text));
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

static int parse_bool(struct config_parser *parser, const yaml_node_t *node, const char *key,
		      int *value)
{
	static const char *const true_words[] = { "true", "True", "TRUE" };
	static const char *const false_words[] = { "false", "False", "FALSE" };
	char quoted[QUOTE_MAX * 4 + 8];
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
	quote_value(quoted, sizeof(quoted), text, strlen(text));
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
	char quoted[QUOTE_MAX * 4 + 8];

	if (text[0] != '/')
		return config_fail(parser, node, key, "\"%s\" is not an absolute path; use a path "
				   "that starts with /",
				   quote_value(quoted, sizeof(quoted), text, strlen(text)));
	return 0;
}

static int parse_path(struct config_parser *parser, const yaml_node_t *node, const char *key,
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

static int parse_size(struct config_parser *parser, const yaml_node_t *node,
		      const struct config_key *key, const char *key_path, uint64_t *value)
{
	char quoted[QUOTE_MAX * 4 + 8];
	const char *text;
	uint64_t bytes;

	if (scalar_value(parser, node, key_path, "a size such as 512M or 4G", &text) < 0)
		return -1;
	quote_value(quoted, sizeof(quoted), text, strlen(text));
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
static int parse_cpu(struct config_parser *parser, const yaml_node_t *node, const char *key,
		     uint64_t *millis)
{
	char quoted[QUOTE_MAX * 4 + 8];
	const char *text, *p;
	uint64_t whole = 0, fraction = 0;
	int decimals = 0;

	if (scalar_value(parser, node, key, "a number of CPUs such as 2 or 1.5", &text) < 0)
		return -1;
	quote_value(quoted, sizeof(quoted), text, strlen(text));
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
			return config_fail(parser, node, key, "%s CPUs is out of range; use at most "
					   "1000000", quoted);
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

	*millis = whole * 1000 + fraction;
	if (*millis > 0 && *millis < 10)
		return config_fail(parser, node, key, "%s CPUs is below the smallest limit the "
				   "kernel enforces; use at least 0.01, or 0 for no limit", quoted);
	return 0;

invalid:
	return config_fail(parser, node, key, "invalid CPU count \"%s\"; use a number of CPUs "
			   "such as 2 or 1.5, or 0 for no limit", quoted);
}

/* RFC 1123 host name, at most HOST_NAME_MAX (64) bytes as sethostname() accepts. */
static int parse_hostname(struct config_parser *parser, const yaml_node_t *node,
			  const char *key, char **value)
{
	char quoted[QUOTE_MAX * 4 + 8];
	const char *text;
	size_t length, label = 0;
	char *copy;

	if (scalar_value(parser, node, key, "a host name", &text) < 0)
		return -1;
	length = strlen(text);
	quote_value(quoted, sizeof(quoted), text, length);
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

static int parse_list(struct config_parser *parser, const yaml_node_t *node,
		      const struct config_key *key, const char *key_path,
		      struct sbx_string_list *list)
{
	const char *what = key->kind == KEY_PATH_LIST ? "an absolute path" : "an allow-list entry";
	struct sbx_string_list parsed = { 0 };

	if (node_is_null(node)) {
		string_list_clear(list);
		return 0;
	}
	if (node->type != YAML_SEQUENCE_NODE)
		return config_fail(parser, node, key_path, "expected a list, got %s; write it as "
				   "[a, b] or as lines starting with \"- \"", node_type_name(node));

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
	string_list_clear(list);
	*list = parsed;
	return 0;

fail:
	string_list_clear(&parsed);
	return -1;
}

static int check_duplicate_keys(struct config_parser *parser, const yaml_node_t *mapping,
				const char *prefix)
{
	for (yaml_node_pair_t *pair = mapping->data.mapping.pairs.start;
	     pair < mapping->data.mapping.pairs.top; pair++) {
		const yaml_node_t *key = yaml_document_get_node(parser->document, pair->key);

		if (key->type != YAML_SCALAR_NODE)
			return config_fail(parser, key, NULL, "%s: keys must be single words, not "
					   "%s; write \"key: value\"",
					   prefix[0] != '\0' ? prefix : "top level",
					   node_type_name(key));
		for (yaml_node_pair_t *earlier = mapping->data.mapping.pairs.start; earlier < pair;
		     earlier++) {
			const yaml_node_t *other = yaml_document_get_node(parser->document,
									  earlier->key);
			char quoted[QUOTE_MAX * 4 + 8];

			if (other->type != YAML_SCALAR_NODE ||
			    strcmp(scalar_text(other), scalar_text(key)) != 0)
				continue;
			quote_value(quoted, sizeof(quoted), scalar_text(key),
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
static int parse_images(struct config_parser *parser, const yaml_node_t *node,
			const char *key_path, struct sbx_local_config *local)
{
	struct sbx_local_config parsed = { 0 };
	char quoted[QUOTE_MAX * 4 + 8];

	if (node_is_null(node)) {
		image_map_clear(local);
		return 0;
	}
	if (node->type != YAML_MAPPING_NODE)
		return config_fail(parser, node, key_path, "expected a mapping of image names to "
				   "root file system directories, got %s; write lines such as "
				   "\"debian:12\": /srv/rootfs/debian-12", node_type_name(node));
	if (check_duplicate_keys(parser, node, key_path) < 0)
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
		quote_value(quoted, sizeof(quoted), pattern, strlen(pattern));
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
		if (entry.pattern == NULL || parse_path(parser, value, entry_key, &entry.rootfs) < 0) {
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
	image_map_clear(local);
	local->images = parsed.images;
	local->image_count = parsed.image_count;
	return 0;

fail:
	image_map_clear(&parsed);
	return -1;
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
		if (parse_word(parser, value, key_path, key->words, &index) < 0)
			return -1;
		text = strdup(key->words[index]);
		if (text == NULL)
			return sbx_error_errno(parser->error, ENOMEM, "config %s", parser->path);
		replace_string(field, text);
		return 0;
	case KEY_ENUM:
		if (parse_word(parser, value, key_path, key->words, &index) < 0)
			return -1;
		store_integer(field, key->size, (int64_t) index);
		return 0;
	case KEY_INT:
		if (parse_int(parser, value, key, key_path, &number) < 0)
			return -1;
		store_integer(field, key->size, number);
		return 0;
	case KEY_BOOL:
		return parse_bool(parser, value, key_path, field);
	case KEY_PATH:
		/* Optional paths: null restores the built-in default. */
		if (!node_is_null(value) && parse_path(parser, value, key_path, &text) < 0)
			return -1;
		replace_string(field, text);
		return 0;
	case KEY_SIZE:
		return parse_size(parser, value, key, key_path, field);
	case KEY_CPU:
		return parse_cpu(parser, value, key_path, field);
	case KEY_HOSTNAME:
		if (parse_hostname(parser, value, key_path, &text) < 0)
			return -1;
		replace_string(field, text);
		return 0;
	case KEY_PATH_LIST:
	case KEY_ALLOW_LIST:
		return parse_list(parser, value, key, key_path, field);
	case KEY_IMAGES:
		return parse_images(parser, value, key_path, base);
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
	char quoted[QUOTE_MAX * 4 + 8], full[QUOTE_MAX * 4 + 64];
	const struct config_key *closest;
	const char *section;

	quote_value(quoted, sizeof(quoted), name, strlen(name));
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
	if (node_is_null(mapping))
		return 0;
	if (mapping->type != YAML_MAPPING_NODE) {
		if (prefix[0] == '\0')
			return config_fail(parser, mapping, NULL, "expected a mapping of keys such "
					   "as \"backend: local\", got %s; see "
					   "config-examples/config.yaml", node_type_name(mapping));
		return config_fail(parser, mapping, prefix, "expected a mapping of keys, got %s; "
				   "indent its keys below \"%s:\"", node_type_name(mapping), prefix);
	}
	if (check_duplicate_keys(parser, mapping, prefix) < 0)
		return -1;

	for (yaml_node_pair_t *pair = mapping->data.mapping.pairs.start;
	     pair < mapping->data.mapping.pairs.top; pair++) {
		const yaml_node_t *key_node = yaml_document_get_node(parser->document, pair->key);
		const yaml_node_t *value = yaml_document_get_node(parser->document, pair->value);
		const char *name = scalar_text(key_node);
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
				     "it (config-examples/config.yaml is a starting point) or "
				     "name another file with --config or $SBX_CONFIG", path);
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
