/* SPDX-License-Identifier: MIT */
/*
 * kubeconfig loading. YAML documents are converted to json-c trees (every scalar a string,
 * plain null scalars a JSON null) so the rest of the code walks one kind of tree.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>
#include <openssl/evp.h>
#include <yaml.h>

#include "cleanup.h"
#include "error.h"
#include "log.h"
#include "util.h"

#include "kubeconfig.h"
#include "tls.h"

/* Kubeconfig files and the files they name are small; this bounds a corrupt or hostile one. */
#define KUBECONFIG_MAX_BYTES (16u << 20)
#define KUBECONFIG_MAX_DEPTH 64
#define KUBECONFIG_MAX_NODES 1000000

static void json_putp(struct json_object **object)
{
	if (*object != NULL)
		json_object_put(*object);
	*object = NULL;
}

#define _cleanup_json_ __attribute__((cleanup(json_putp)))

/* ---- YAML to json-c ---- */

/*
 * Converts NODE. BUDGET counts the nodes still allowed, since aliases let a small file expand
 * exponentially.
 */
static struct json_object *yaml_node_to_json(yaml_document_t *document, yaml_node_t *node,
					     int depth, size_t *budget)
{
	struct json_object *result;

	if (node == NULL || depth > KUBECONFIG_MAX_DEPTH || *budget == 0)
		return NULL;
	(*budget)--;

	switch (node->type) {
	case YAML_SCALAR_NODE: {
		const char *value = (const char *) node->data.scalar.value;
		size_t length = node->data.scalar.length;

		if (node->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
		    (length == 0 || strcmp(value, "~") == 0 || strcmp(value, "null") == 0 ||
		     strcmp(value, "Null") == 0 || strcmp(value, "NULL") == 0))
			return json_object_new_null();
		return json_object_new_string_len(value, (int) length);
	}
	case YAML_SEQUENCE_NODE: {
		yaml_node_item_t *item;

		result = json_object_new_array();
		if (result == NULL)
			return NULL;
		for (item = node->data.sequence.items.start; item < node->data.sequence.items.top;
		     item++) {
			yaml_node_t *child = yaml_document_get_node(document, *item);
			struct json_object *value = yaml_node_to_json(document, child, depth + 1, budget);

			if (value == NULL && child != NULL &&
			    !(child->type == YAML_SCALAR_NODE)) {
				json_object_put(result);
				return NULL;
			}
			json_object_array_add(result, value);
		}
		return result;
	}
	case YAML_MAPPING_NODE: {
		yaml_node_pair_t *pair;

		result = json_object_new_object();
		if (result == NULL)
			return NULL;
		for (pair = node->data.mapping.pairs.start; pair < node->data.mapping.pairs.top;
		     pair++) {
			yaml_node_t *key = yaml_document_get_node(document, pair->key);
			yaml_node_t *child = yaml_document_get_node(document, pair->value);
			struct json_object *value;

			if (key == NULL || key->type != YAML_SCALAR_NODE)
				continue;
			value = yaml_node_to_json(document, child, depth + 1, budget);
			if (value == NULL && child != NULL && child->type != YAML_SCALAR_NODE) {
				json_object_put(result);
				return NULL;
			}
			json_object_object_add(result, (const char *) key->data.scalar.value, value);
		}
		return result;
	}
	case YAML_NO_NODE:
		break;
	}
	return NULL;
}

/* Parses one YAML document; an empty file gives an empty object. */
static int parse_yaml(const char *path, const char *text, size_t length,
		      struct json_object **tree, struct sbx_error *error)
{
	yaml_parser_t parser;
	yaml_document_t document;
	yaml_node_t *root;
	struct json_object *result;
	size_t budget = KUBECONFIG_MAX_NODES;

	if (!yaml_parser_initialize(&parser))
		return sbx_error_set(error, SBX_ERROR_SYSTEM, "kubeconfig %s: out of memory", path);
	yaml_parser_set_input_string(&parser, (const unsigned char *) text, length);
	if (!yaml_parser_load(&parser, &document)) {
		sbx_error_set(error, SBX_ERROR_INVALID,
			      "kubeconfig %s:%zu:%zu: invalid YAML: %s; fix the file or remove it "
			      "from KUBECONFIG",
			      path, parser.problem_mark.line + 1, parser.problem_mark.column + 1,
			      parser.problem != NULL ? parser.problem : "parse error");
		yaml_parser_delete(&parser);
		return -1;
	}
	yaml_parser_delete(&parser);

	root = yaml_document_get_root_node(&document);
	if (root == NULL) {
		yaml_document_delete(&document);
		*tree = json_object_new_object();
		return 0;
	}
	if (root->type != YAML_MAPPING_NODE) {
		yaml_document_delete(&document);
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "kubeconfig %s: the top level is not a mapping; expected keys "
				     "such as clusters, users, contexts and current-context",
				     path);
	}
	result = yaml_node_to_json(&document, root, 0, &budget);
	yaml_document_delete(&document);
	if (result == NULL)
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "kubeconfig %s: nesting deeper than %d levels or more than %d "
				     "values (after expanding aliases)",
				     path, KUBECONFIG_MAX_DEPTH, KUBECONFIG_MAX_NODES);
	*tree = result;
	return 0;
}

/* ---- small helpers ---- */

/* A string member, NULL when absent, null or empty. */
static const char *get_string(struct json_object *object, const char *key)
{
	struct json_object *value;
	const char *text;

	if (object == NULL || !json_object_is_type(object, json_type_object) ||
	    !json_object_object_get_ex(object, key, &value) ||
	    !json_object_is_type(value, json_type_string))
		return NULL;
	text = json_object_get_string(value);
	return text[0] != '\0' ? text : NULL;
}

/* Reads a YAML boolean; absent is false. */
static int get_bool(struct json_object *object, const char *key, const char *where, int *result,
		    struct sbx_error *error)
{
	const char *text = get_string(object, key);

	*result = 0;
	if (text == NULL)
		return 0;
	if (strcmp(text, "true") == 0 || strcmp(text, "True") == 0 || strcmp(text, "TRUE") == 0) {
		*result = 1;
		return 0;
	}
	if (strcmp(text, "false") == 0 || strcmp(text, "False") == 0 ||
	    strcmp(text, "FALSE") == 0)
		return 0;
	return sbx_error_set(error, SBX_ERROR_INVALID,
			     "%s: key \"%s\": invalid boolean \"%s\"; use true or false", where, key,
			     text);
}

int k8s_base64_decode(const char *text, char **data, size_t *length)
{
	_cleanup_free_ char *compact = NULL;
	_cleanup_free_ unsigned char *out = NULL;
	size_t used = 0, i, padding = 0;
	int decoded;

	compact = malloc(strlen(text) + 1);
	if (compact == NULL)
		return -1;
	for (i = 0; text[i] != '\0'; i++) {
		if (text[i] == ' ' || text[i] == '\n' || text[i] == '\r' || text[i] == '\t')
			continue;
		compact[used++] = text[i];
	}
	compact[used] = '\0';
	if (used % 4 != 0)
		return -1;
	out = malloc(used / 4 * 3 + 1);
	if (out == NULL)
		return -1;
	decoded = EVP_DecodeBlock(out, (const unsigned char *) compact, (int) used);
	if (decoded < 0)
		return -1;
	/* EVP_DecodeBlock counts the padding as zero bytes. */
	if (used > 0 && compact[used - 1] == '=')
		padding++;
	if (used > 1 && compact[used - 2] == '=')
		padding++;
	decoded -= (int) padding;
	out[decoded] = '\0';
	*data = (char *) steal_pointer(&out);
	*length = (size_t) decoded;
	return 0;
}

/* Resolves PATH against the directory of FILE unless it is absolute. */
static char *resolve_path(const char *file, const char *path)
{
	const char *slash;
	char *result;

	if (path[0] == '/' || file == NULL)
		return strdup(path);
	slash = strrchr(file, '/');
	if (slash == NULL)
		return strdup(path);
	if (asprintf(&result, "%.*s/%s", (int) (slash - file), file, path) < 0)
		return NULL;
	return result;
}

/*
 * Takes KEY-data (base64 PEM, wins) or KEY (a path relative to FILE) from OBJECT. WHERE names
 * the file and entry for messages. A missing value leaves *PEM NULL.
 */
static int load_pem(struct json_object *object, const char *key, const char *file,
		    const char *where, char **pem, size_t *length, struct sbx_error *error)
{
	_cleanup_free_ char *data_key = NULL;
	_cleanup_free_ char *path = NULL;
	const char *value;

	if (asprintf(&data_key, "%s-data", key) < 0)
		return sbx_error_errno(error, ENOMEM, "%s", where);
	value = get_string(object, data_key);
	if (value != NULL) {
		if (k8s_base64_decode(value, pem, length) < 0)
			return sbx_error_set(error, SBX_ERROR_INVALID,
					     "%s: key \"%s\": invalid base64; put the base64 "
					     "encoding of the PEM file there",
					     where, data_key);
		return 0;
	}
	value = get_string(object, key);
	if (value == NULL) {
		*pem = NULL;
		*length = 0;
		return 0;
	}
	path = resolve_path(file, value);
	if (path == NULL)
		return sbx_error_errno(error, ENOMEM, "%s", where);
	if (sbx_read_file(path, KUBECONFIG_MAX_BYTES, pem, length, error) < 0)
		return sbx_error_prefix(error, "%s: key \"%s\"", where, key);
	return 0;
}

/* ---- server URL ---- */

void k8s_server_clear(struct k8s_server *server)
{
	free(server->host);
	free(server->prefix);
	free(server->base_url);
	memset(server, 0, sizeof(*server));
}

int k8s_kubeconfig_parse_server(const char *url, struct k8s_server *server,
				struct sbx_error *error)
{
	struct k8s_server result = { 0 };
	const char *rest, *host_end, *authority_end;
	_cleanup_free_ char *host = NULL;
	size_t prefix_length;
	int bracketed = 0;
	long port;

	if (strncmp(url, "https://", 8) == 0) {
		result.tls = 1;
		rest = url + 8;
		port = 443;
	} else if (strncmp(url, "http://", 7) == 0) {
		rest = url + 7;
		port = 80;
	} else {
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "server URL \"%s\" has no https:// or http:// scheme", url);
	}

	authority_end = rest + strcspn(rest, "/?#");
	if (*rest == '[') {
		host_end = memchr(rest, ']', (size_t) (authority_end - rest));
		if (host_end == NULL)
			return sbx_error_set(error, SBX_ERROR_INVALID,
					     "server URL \"%s\": unterminated IPv6 address", url);
		host = strndup(rest + 1, (size_t) (host_end - rest - 1));
		host_end++;
		bracketed = 1;
	} else {
		host_end = memchr(rest, ':', (size_t) (authority_end - rest));
		if (host_end == NULL)
			host_end = authority_end;
		host = strndup(rest, (size_t) (host_end - rest));
	}
	if (host == NULL)
		return sbx_error_errno(error, ENOMEM, "server URL");
	if (host[0] == '\0' || strchr(host, '@') != NULL)
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "server URL \"%s\": missing or invalid host", url);
	if (host_end < authority_end) {
		char *end;

		if (*host_end != ':')
			return sbx_error_set(error, SBX_ERROR_INVALID,
					     "server URL \"%s\": invalid text after the host", url);
		errno = 0;
		port = strtol(host_end + 1, &end, 10);
		if (errno != 0 || end != authority_end || end == host_end + 1 || port < 1 ||
		    port > 65535)
			return sbx_error_set(error, SBX_ERROR_INVALID,
					     "server URL \"%s\": invalid port; use 1 to 65535", url);
	}
	if (*authority_end == '?' || *authority_end == '#')
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "server URL \"%s\": a query or fragment is not allowed", url);

	/* A path prefix (Rancher, API proxies) is kept; API paths are appended to it. */
	prefix_length = strlen(authority_end);
	while (prefix_length > 0 && authority_end[prefix_length - 1] == '/')
		prefix_length--;
	result.prefix = strndup(authority_end, prefix_length);
	result.port = (int) port;
	if (result.prefix == NULL ||
	    asprintf(&result.base_url, "%s://%s%s%s:%d%s", result.tls ? "https" : "http",
		     bracketed ? "[" : "", host, bracketed ? "]" : "", result.port,
		     result.prefix) < 0) {
		free(result.prefix);
		return sbx_error_errno(error, ENOMEM, "server URL");
	}
	result.host = steal_pointer(&host);
	*server = result;
	return 0;
}

/* ---- configuration object ---- */

void k8s_kubeconfig_free(struct k8s_config *config)
{
	if (config == NULL)
		return;
	free(config->origin);
	free(config->context);
	free(config->cluster_name);
	free(config->user_name);
	free(config->server_url);
	k8s_server_clear(&config->server);
	free(config->namespace);
	free(config->ca_pem);
	free(config->tls_server_name);
	free(config->proxy_url);
	if (config->client_cert_pem != NULL)
		explicit_bzero(config->client_cert_pem, config->client_cert_pem_length);
	free(config->client_cert_pem);
	if (config->client_key_pem != NULL)
		explicit_bzero(config->client_key_pem, config->client_key_pem_length);
	free(config->client_key_pem);
	if (config->token != NULL)
		explicit_bzero(config->token, strlen(config->token));
	free(config->token);
	free(config->token_file);
	if (config->exec != NULL) {
		char **p;

		free(config->exec->api_version);
		free(config->exec->command);
		free(config->exec->path);
		for (p = config->exec->args; p != NULL && *p != NULL; p++)
			free(*p);
		free(config->exec->args);
		for (p = config->exec->env; p != NULL && *p != NULL; p++) {
			explicit_bzero(*p, strlen(*p));
			free(*p);
		}
		free(config->exec->env);
		free(config->exec->install_hint);
		free(config->exec);
	}
	free(config->credential_cache_dir);
	k8s_credential_state_free(config->credential_state);
	free(config);
}

static void kubeconfig_freep(struct k8s_config **config)
{
	k8s_kubeconfig_free(*config);
	*config = NULL;
}

#define _cleanup_config_ __attribute__((cleanup(kubeconfig_freep)))

/* ---- merging ---- */

/*
 * The merged view: for clusters, users and contexts a map from name to {"file": F,
 * "value": V}, taken whole from the first file that defines the name.
 */
struct merged {
	struct json_object *clusters;
	struct json_object *users;
	struct json_object *contexts;
	char *current_context;
	char *current_context_file;
	char *files; /* the files read, ':'-separated, for messages */
};

static void merged_clear(struct merged *merged)
{
	json_putp(&merged->clusters);
	json_putp(&merged->users);
	json_putp(&merged->contexts);
	free(merged->current_context);
	free(merged->current_context_file);
	free(merged->files);
}

static int merge_list(struct merged *merged, struct json_object *tree, const char *list_key,
		      const char *item_key, struct json_object *into, const char *path,
		      struct sbx_error *error)
{
	struct json_object *list;
	size_t i, count;

	if (!json_object_object_get_ex(tree, list_key, &list) || list == NULL)
		return 0;
	if (!json_object_is_type(list, json_type_array))
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "kubeconfig %s: key \"%s\" is not a list", path, list_key);
	count = json_object_array_length(list);
	for (i = 0; i < count; i++) {
		struct json_object *item = json_object_array_get_idx(list, i);
		struct json_object *value = NULL, *wrapper;
		const char *name = get_string(item, "name");

		if (name == NULL)
			return sbx_error_set(error, SBX_ERROR_INVALID,
					     "kubeconfig %s: %s[%zu]: missing key \"name\"", path,
					     list_key, i);
		if (json_object_object_get_ex(into, name, NULL))
			continue; /* the first file to define a name wins */
		json_object_object_get_ex(item, item_key, &value);
		if (value != NULL && !json_object_is_type(value, json_type_object))
			return sbx_error_set(error, SBX_ERROR_INVALID,
					     "kubeconfig %s: %s[%zu] \"%s\": key \"%s\" is not a "
					     "mapping",
					     path, list_key, i, name, item_key);
		wrapper = json_object_new_object();
		if (wrapper == NULL)
			return sbx_error_errno(error, ENOMEM, "kubeconfig %s", path);
		json_object_object_add(wrapper, "file", json_object_new_string(path));
		json_object_object_add(wrapper, "value",
				       value != NULL ? json_object_get(value)
						     : json_object_new_object());
		json_object_object_add(into, name, wrapper);
	}
	(void) merged;
	return 0;
}

static int merge_file(struct merged *merged, const char *path, int must_exist,
		      struct sbx_error *error)
{
	_cleanup_free_ char *text = NULL;
	_cleanup_json_ struct json_object *tree = NULL;
	size_t length;
	const char *current;
	char *files;

	if (!must_exist && access(path, F_OK) < 0 && errno == ENOENT)
		return 0;
	if (sbx_read_file(path, KUBECONFIG_MAX_BYTES, &text, &length, error) < 0)
		return sbx_error_prefix(error, "kubeconfig");
	if (parse_yaml(path, text, length, &tree, error) < 0)
		return -1;

	current = get_string(tree, "current-context");
	if (merged->current_context == NULL && current != NULL) {
		merged->current_context = strdup(current);
		merged->current_context_file = strdup(path);
	}
	if (merge_list(merged, tree, "clusters", "cluster", merged->clusters, path, error) < 0 ||
	    merge_list(merged, tree, "users", "user", merged->users, path, error) < 0 ||
	    merge_list(merged, tree, "contexts", "context", merged->contexts, path, error) < 0)
		return -1;

	if (asprintf(&files, "%s%s%s", merged->files != NULL ? merged->files : "",
		     merged->files != NULL ? ":" : "", path) < 0)
		return sbx_error_errno(error, ENOMEM, "kubeconfig");
	free(merged->files);
	merged->files = files;
	return 0;
}

/* Lists the names in MAP for a message, e.g. "a, b". */
static void list_names(struct json_object *map, char *buf, size_t size)
{
	size_t used = 0;

	buf[0] = '\0';
	json_object_object_foreach(map, name, value)
	{
		int n;

		(void) value;
		n = snprintf(buf + used, size - used, "%s%s", used > 0 ? ", " : "", name);
		if (n < 0 || (size_t) n >= size - used)
			break;
		used += (size_t) n;
	}
	if (used == 0)
		snprintf(buf, size, "none");
}

/* ---- resolving the context ---- */

static int load_cluster(struct k8s_config *config, struct json_object *entry,
			struct sbx_error *error)
{
	struct json_object *cluster = NULL, *file_object = NULL;
	const char *file, *server;
	char where[512];

	json_object_object_get_ex(entry, "value", &cluster);
	json_object_object_get_ex(entry, "file", &file_object);
	file = json_object_get_string(file_object);
	snprintf(where, sizeof(where), "kubeconfig %s: context \"%s\": cluster \"%s\"", file,
		 config->context, config->cluster_name);

	server = get_string(cluster, "server");
	if (server == NULL)
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "%s: missing key \"server\"; set the API server URL, e.g. "
				     "https://host:6443",
				     where);
	config->server_url = strdup(server);
	if (k8s_kubeconfig_parse_server(server, &config->server, error) < 0)
		return sbx_error_prefix(error, "%s: key \"server\"", where);

	if (load_pem(cluster, "certificate-authority", file, where, &config->ca_pem,
		     &config->ca_pem_length, error) < 0)
		return -1;
	if (config->ca_pem != NULL && k8s_tls_count_certificates(config->ca_pem,
								 config->ca_pem_length) <= 0)
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "%s: key \"certificate-authority%s\": no PEM certificate found",
				     where,
				     get_string(cluster, "certificate-authority-data") != NULL
					     ? "-data"
					     : "");
	if (get_bool(cluster, "insecure-skip-tls-verify", where,
		     &config->insecure_skip_tls_verify, error) < 0)
		return -1;
	if (config->insecure_skip_tls_verify && config->ca_pem != NULL)
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "%s: insecure-skip-tls-verify and a certificate authority are "
				     "both set; remove one of them",
				     where);
	if (config->insecure_skip_tls_verify)
		sbx_warning("%s: insecure-skip-tls-verify is set: the API server's certificate is "
			    "not verified",
			    where);
	config->tls_server_name = sbx_strdup_or_null(get_string(cluster, "tls-server-name"));
	config->proxy_url = sbx_strdup_or_null(get_string(cluster, "proxy-url"));
	/* Every job step is a pod exec, which tunnels through HTTP CONNECT only, so another
	 * scheme fails here rather than after the REST calls of prepare. The URL may hold a
	 * password, so the message names only its scheme. */
	if (config->proxy_url != NULL && strncmp(config->proxy_url, "http://", 7) != 0)
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "%s: key \"proxy-url\": scheme \"%.*s\" is not supported; "
				     "sbx reaches the API server through http:// proxies (HTTP "
				     "CONNECT)",
				     where, (int) strcspn(config->proxy_url, ":/"), config->proxy_url);
	return 0;
}

static int copy_string_list(struct json_object *list, const char *where, const char *key,
			    char ***result, struct sbx_error *error)
{
	size_t i, count;
	char **items;

	count = list != NULL && json_object_is_type(list, json_type_array)
			? json_object_array_length(list)
			: 0;
	if (list != NULL && !json_object_is_type(list, json_type_array))
		return sbx_error_set(error, SBX_ERROR_INVALID, "%s: key \"%s\" is not a list",
				     where, key);
	items = calloc(count + 1, sizeof(*items));
	if (items == NULL)
		return sbx_error_errno(error, ENOMEM, "%s", where);
	*result = items;
	for (i = 0; i < count; i++) {
		struct json_object *item = json_object_array_get_idx(list, i);

		if (item == NULL || !json_object_is_type(item, json_type_string))
			return sbx_error_set(error, SBX_ERROR_INVALID,
					     "%s: key \"%s\": item %zu is not a string", where, key,
					     i);
		items[i] = strdup(json_object_get_string(item));
		if (items[i] == NULL)
			return sbx_error_errno(error, ENOMEM, "%s", where);
	}
	return 0;
}

static int load_exec_plugin(struct k8s_config *config, struct json_object *exec,
			    const char *file, const char *where, struct sbx_error *error)
{
	struct k8s_exec_plugin *plugin;
	struct json_object *args = NULL, *env = NULL;
	const char *api_version, *command, *interactive;
	size_t i, count;

	plugin = calloc(1, sizeof(*plugin));
	if (plugin == NULL)
		return sbx_error_errno(error, ENOMEM, "%s", where);
	config->exec = plugin;

	api_version = get_string(exec, "apiVersion");
	if (api_version == NULL ||
	    (strcmp(api_version, "client.authentication.k8s.io/v1") != 0 &&
	     strcmp(api_version, "client.authentication.k8s.io/v1beta1") != 0))
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "%s: key \"exec.apiVersion\": unsupported value \"%s\"; use "
				     "client.authentication.k8s.io/v1",
				     where, api_version != NULL ? api_version : "");
	command = get_string(exec, "command");
	if (command == NULL)
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "%s: missing key \"exec.command\"", where);
	interactive = get_string(exec, "interactiveMode");
	if (interactive != NULL && strcmp(interactive, "Always") == 0)
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "%s: key \"exec.interactiveMode\" is Always, but sbx runs "
				     "credential plugins without a terminal; use IfAvailable or "
				     "Never",
				     where);
	plugin->api_version = strdup(api_version);
	plugin->command = strdup(command);
	/* kubectl resolves a command with a '/' against the kubeconfig's directory and looks a
	 * bare name up in PATH. */
	plugin->path = strchr(command, '/') != NULL ? resolve_path(file, command) : strdup(command);
	plugin->install_hint = sbx_strdup_or_null(get_string(exec, "installHint"));
	if (get_bool(exec, "provideClusterInfo", where, &plugin->provide_cluster_info, error) < 0)
		return -1;
	if (plugin->api_version == NULL || plugin->command == NULL || plugin->path == NULL)
		return sbx_error_errno(error, ENOMEM, "%s", where);

	json_object_object_get_ex(exec, "args", &args);
	if (copy_string_list(args, where, "exec.args", &plugin->args, error) < 0)
		return -1;

	json_object_object_get_ex(exec, "env", &env);
	if (env != NULL && !json_object_is_type(env, json_type_array))
		return sbx_error_set(error, SBX_ERROR_INVALID, "%s: key \"exec.env\" is not a list",
				     where);
	count = env != NULL ? json_object_array_length(env) : 0;
	plugin->env = calloc(count + 1, sizeof(*plugin->env));
	if (plugin->env == NULL)
		return sbx_error_errno(error, ENOMEM, "%s", where);
	for (i = 0; i < count; i++) {
		struct json_object *item = json_object_array_get_idx(env, i);
		const char *name = get_string(item, "name");
		const char *value = get_string(item, "value");

		if (name == NULL || strchr(name, '=') != NULL)
			return sbx_error_set(error, SBX_ERROR_INVALID,
					     "%s: key \"exec.env[%zu].name\" is missing or contains "
					     "'='",
					     where, i);
		if (asprintf(&plugin->env[i], "%s=%s", name, value != NULL ? value : "") < 0) {
			plugin->env[i] = NULL;
			return sbx_error_errno(error, ENOMEM, "%s", where);
		}
	}
	return 0;
}

static int load_user(struct k8s_config *config, struct json_object *entry,
		     struct sbx_error *error)
{
	struct json_object *user = NULL, *file_object = NULL, *exec = NULL;
	static const char *const unsupported[] = { "username", "password", "auth-provider",
						   "as", "as-uid", "as-groups", "as-user-extra" };
	const char *file, *token, *token_file;
	char where[512];
	size_t i;

	json_object_object_get_ex(entry, "value", &user);
	json_object_object_get_ex(entry, "file", &file_object);
	file = json_object_get_string(file_object);
	snprintf(where, sizeof(where), "kubeconfig %s: context \"%s\": user \"%s\"", file,
		 config->context, config->user_name);

	for (i = 0; i < SBX_ARRAY_SIZE(unsupported); i++) {
		struct json_object *value;

		if (json_object_object_get_ex(user, unsupported[i], &value) && value != NULL)
			return sbx_error_set(error, SBX_ERROR_INVALID,
					     "%s: key \"%s\" is not supported by sbx; use a token, "
					     "a client certificate or an exec credential plugin",
					     where, unsupported[i]);
	}

	if (load_pem(user, "client-certificate", file, where, &config->client_cert_pem,
		     &config->client_cert_pem_length, error) < 0 ||
	    load_pem(user, "client-key", file, where, &config->client_key_pem,
		     &config->client_key_pem_length, error) < 0)
		return -1;
	if ((config->client_cert_pem == NULL) != (config->client_key_pem == NULL))
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "%s: key \"%s\" is set without \"%s\"; set both or neither",
				     where,
				     config->client_cert_pem != NULL ? "client-certificate"
								     : "client-key",
				     config->client_cert_pem != NULL ? "client-key"
								     : "client-certificate");
	if (config->client_cert_pem != NULL &&
	    k8s_tls_check_key_pair(config->client_cert_pem, config->client_cert_pem_length,
				   config->client_key_pem, config->client_key_pem_length,
				   error) < 0)
		return sbx_error_prefix(error, "%s: keys \"client-certificate\" and \"client-key\"",
					where);

	token = get_string(user, "token");
	token_file = get_string(user, "tokenFile");
	config->token = sbx_strdup_or_null(token);
	if (token_file != NULL) {
		config->token_file = resolve_path(file, token_file);
		if (config->token_file == NULL)
			return sbx_error_errno(error, ENOMEM, "%s", where);
	}

	json_object_object_get_ex(user, "exec", &exec);
	if (exec != NULL) {
		if (!json_object_is_type(exec, json_type_object))
			return sbx_error_set(error, SBX_ERROR_INVALID,
					     "%s: key \"exec\" is not a mapping", where);
		if (token != NULL || token_file != NULL)
			return sbx_error_set(error, SBX_ERROR_INVALID,
					     "%s: keys \"exec\" and \"%s\" are both set; a user has "
					     "one authentication method, remove one of them",
					     where, token != NULL ? "token" : "tokenFile");
		if (load_exec_plugin(config, exec, file, where, error) < 0)
			return -1;
	}
	return 0;
}

static char *default_cache_dir(void)
{
	const char *runtime = getenv("XDG_RUNTIME_DIR");
	char *path;

	if (runtime == NULL || runtime[0] != '/')
		return NULL;
	if (asprintf(&path, "%s/sbx/k8s-credentials", runtime) < 0)
		return NULL;
	return path;
}

static int resolve_context(struct merged *merged, const struct k8s_kubeconfig_options *options,
			   struct k8s_config **result, struct sbx_error *error)
{
	_cleanup_config_ struct k8s_config *config = NULL;
	struct json_object *entry, *context = NULL, *file_object = NULL;
	const char *name, *file, *cluster, *user, *namespace;
	char names[512];

	config = calloc(1, sizeof(*config));
	if (config == NULL)
		return sbx_error_errno(error, ENOMEM, "kubeconfig");
	config->origin = strdup(merged->files);
	if (config->origin == NULL)
		return sbx_error_errno(error, ENOMEM, "kubeconfig");

	name = options != NULL && options->context != NULL ? options->context
							     : merged->current_context;
	if (name == NULL)
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "kubeconfig %s: no current-context is set; set current-context "
				     "or name a context in the sbx configuration",
				     merged->files);
	if (!json_object_object_get_ex(merged->contexts, name, &entry)) {
		list_names(merged->contexts, names, sizeof(names));
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "kubeconfig %s: context \"%s\" (from %s) not found; known "
				     "contexts: %s",
				     merged->files, name,
				     options != NULL && options->context != NULL
					     ? "the context option"
					     : merged->current_context_file,
				     names);
	}
	config->context = strdup(name);
	json_object_object_get_ex(entry, "value", &context);
	json_object_object_get_ex(entry, "file", &file_object);
	file = json_object_get_string(file_object);

	cluster = get_string(context, "cluster");
	user = get_string(context, "user");
	namespace = get_string(context, "namespace");
	if (cluster == NULL)
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "kubeconfig %s: context \"%s\": missing key \"cluster\"", file,
				     name);
	if (!json_object_object_get_ex(merged->clusters, cluster, &entry)) {
		list_names(merged->clusters, names, sizeof(names));
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "kubeconfig %s: context \"%s\": cluster \"%s\" not found; "
				     "known clusters: %s",
				     merged->files, name, cluster, names);
	}
	config->cluster_name = strdup(cluster);
	if (load_cluster(config, entry, error) < 0)
		return -1;

	if (user != NULL) {
		if (!json_object_object_get_ex(merged->users, user, &entry)) {
			list_names(merged->users, names, sizeof(names));
			return sbx_error_set(error, SBX_ERROR_INVALID,
					     "kubeconfig %s: context \"%s\": user \"%s\" not found; "
					     "known users: %s",
					     merged->files, name, user, names);
		}
		config->user_name = strdup(user);
		if (load_user(config, entry, error) < 0)
			return -1;
	}

	if (options != NULL && options->namespace != NULL)
		namespace = options->namespace;
	config->namespace = strdup(namespace != NULL ? namespace : "default");
	if (options != NULL && options->credential_cache_dir != NULL)
		config->credential_cache_dir = strdup(options->credential_cache_dir);
	else
		config->credential_cache_dir = default_cache_dir();
	if (config->context == NULL || config->cluster_name == NULL || config->namespace == NULL)
		return sbx_error_errno(error, ENOMEM, "kubeconfig");

	*result = steal_pointer(&config);
	return 0;
}

static int merged_init(struct merged *merged, struct sbx_error *error)
{
	memset(merged, 0, sizeof(*merged));
	merged->clusters = json_object_new_object();
	merged->users = json_object_new_object();
	merged->contexts = json_object_new_object();
	if (merged->clusters == NULL || merged->users == NULL || merged->contexts == NULL)
		return sbx_error_errno(error, ENOMEM, "kubeconfig");
	return 0;
}

int k8s_kubeconfig_load(const struct k8s_kubeconfig_options *options, struct k8s_config **config,
			struct sbx_error *error)
{
	struct merged merged;
	const char *list = getenv("KUBECONFIG");
	int ret = -1;

	if (merged_init(&merged, error) < 0)
		goto out;

	if (options != NULL && options->path != NULL) {
		if (merge_file(&merged, options->path, 1, error) < 0)
			goto out;
	} else if (list != NULL && list[0] != '\0') {
		_cleanup_free_ char *copy = strdup(list);
		char *saveptr = NULL, *item;

		if (copy == NULL) {
			sbx_error_errno(error, ENOMEM, "KUBECONFIG");
			goto out;
		}
		/* Empty entries and missing files are skipped, as kubectl does. */
		for (item = strtok_r(copy, ":", &saveptr); item != NULL;
		     item = strtok_r(NULL, ":", &saveptr))
			if (merge_file(&merged, item, 0, error) < 0)
				goto out;
		if (merged.files == NULL) {
			sbx_error_set(error, SBX_ERROR_INVALID,
				      "none of the files in KUBECONFIG=%s exists; fix KUBECONFIG",
				      list);
			goto out;
		}
	} else {
		const char *home = getenv("HOME");
		_cleanup_free_ char *path = NULL;

		if (home == NULL || asprintf(&path, "%s/.kube/config", home) < 0) {
			sbx_error_set(error, SBX_ERROR_INVALID,
				      "no kubeconfig: KUBECONFIG and HOME are unset; set KUBECONFIG");
			goto out;
		}
		if (merge_file(&merged, path, 1, error) < 0)
			goto out;
	}

	ret = resolve_context(&merged, options, config, error);
out:
	merged_clear(&merged);
	return ret;
}

/* ---- in-cluster ---- */

int k8s_kubeconfig_in_cluster_available(void)
{
	const char *host = getenv("KUBERNETES_SERVICE_HOST");
	const char *port = getenv("KUBERNETES_SERVICE_PORT");

	return host != NULL && host[0] != '\0' && port != NULL && port[0] != '\0';
}

int k8s_kubeconfig_in_cluster(const struct k8s_in_cluster_options *options,
			      struct k8s_config **result, struct sbx_error *error)
{
	_cleanup_config_ struct k8s_config *config = NULL;
	const char *dir = options != NULL && options->serviceaccount_dir != NULL
				  ? options->serviceaccount_dir
				  : K8S_SERVICEACCOUNT_DIR;
	const char *host = getenv("KUBERNETES_SERVICE_HOST");
	const char *port = getenv("KUBERNETES_SERVICE_PORT");
	_cleanup_free_ char *ca_path = NULL;
	_cleanup_free_ char *namespace_path = NULL;
	_cleanup_free_ char *namespace = NULL;
	size_t length;

	if (!k8s_kubeconfig_in_cluster_available())
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "in-cluster configuration: KUBERNETES_SERVICE_HOST and "
				     "KUBERNETES_SERVICE_PORT must both be set; run inside a pod or "
				     "use a kubeconfig");
	config = calloc(1, sizeof(*config));
	if (config == NULL)
		return sbx_error_errno(error, ENOMEM, "in-cluster configuration");
	if (asprintf(&config->origin, "in-cluster configuration (%s)", dir) < 0) {
		config->origin = NULL;
		return sbx_error_errno(error, ENOMEM, "in-cluster configuration");
	}
	if (asprintf(&config->server_url, "https://%s%s%s:%s", strchr(host, ':') ? "[" : "",
		     host, strchr(host, ':') ? "]" : "", port) < 0) {
		config->server_url = NULL;
		return sbx_error_errno(error, ENOMEM, "in-cluster configuration");
	}
	if (k8s_kubeconfig_parse_server(config->server_url, &config->server, error) < 0)
		return sbx_error_prefix(error, "in-cluster configuration: "
					       "KUBERNETES_SERVICE_HOST/PORT");

	if (asprintf(&ca_path, "%s/ca.crt", dir) < 0 ||
	    asprintf(&namespace_path, "%s/namespace", dir) < 0 ||
	    asprintf(&config->token_file, "%s/token", dir) < 0)
		return sbx_error_errno(error, ENOMEM, "in-cluster configuration");
	if (sbx_read_file(ca_path, KUBECONFIG_MAX_BYTES, &config->ca_pem, &config->ca_pem_length,
			  error) < 0)
		return sbx_error_prefix(error, "in-cluster configuration");
	if (k8s_tls_count_certificates(config->ca_pem, config->ca_pem_length) <= 0)
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "in-cluster configuration: %s contains no PEM certificate",
				     ca_path);
	if (access(config->token_file, R_OK) < 0)
		return sbx_error_errno(error, errno, "in-cluster configuration: cannot read %s",
				       config->token_file);
	if (sbx_read_file(namespace_path, 4096, &namespace, &length, error) < 0)
		return sbx_error_prefix(error, "in-cluster configuration");
	while (length > 0 && (namespace[length - 1] == '\n' || namespace[length - 1] == ' '))
		namespace[--length] = '\0';
	if (length == 0)
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "in-cluster configuration: %s is empty", namespace_path);
	config->namespace = steal_pointer(&namespace);
	config->context = strdup("in-cluster");

	*result = steal_pointer(&config);
	return 0;
}

int k8s_kubeconfig_load_default(const struct k8s_kubeconfig_options *options,
				const struct k8s_in_cluster_options *in_cluster,
				struct k8s_config **config, struct sbx_error *error)
{
	const char *list = getenv("KUBECONFIG");
	const char *home = getenv("HOME");
	_cleanup_free_ char *path = NULL;

	if ((options != NULL && options->path != NULL) || (list != NULL && list[0] != '\0'))
		return k8s_kubeconfig_load(options, config, error);
	if (home != NULL && asprintf(&path, "%s/.kube/config", home) >= 0 &&
	    access(path, F_OK) == 0)
		return k8s_kubeconfig_load(options, config, error);
	if (k8s_kubeconfig_in_cluster_available())
		return k8s_kubeconfig_in_cluster(in_cluster, config, error);
	return sbx_error_set(error, SBX_ERROR_INVALID,
			     "no Kubernetes configuration: KUBECONFIG is unset, ~/.kube/config "
			     "does not exist and this is not a pod; set KUBECONFIG or the "
			     "kubeconfig path in the sbx configuration");
}
