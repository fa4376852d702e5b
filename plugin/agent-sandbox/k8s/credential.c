/* SPDX-License-Identifier: MIT */
/*
 * Credentials. Token files are re-read when the file changes, because the kubelet rotates
 * projected service account tokens by swapping a symlink. Exec credential plugins get a
 * per-user cache file, so the separate sbx processes of one job run the plugin once per
 * credential lifetime instead of once per stage.
 */
#include <ctype.h>
#include <inttypes.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>
#include <openssl/evp.h>

#include "cleanup.h"
#include "error.h"
#include "log.h"
#include "util.h"

#include "kubeconfig.h"

extern char **environ;

#define TOKEN_FILE_MAX_BYTES (64u << 10)
#define PLUGIN_OUTPUT_MAX_BYTES (1u << 20)
#define PLUGIN_STDERR_KEEP 512
#define PLUGIN_TIMEOUT_MS 60000
#define CACHE_FORMAT_VERSION 1
/* A credential is treated as expired this many seconds before its expirationTimestamp, so a
 * request does not start with a token that expires while it travels. */
#define EXPIRY_MARGIN_SECONDS 2

struct k8s_credential_state {
	/* tokenFile */
	char *file_token;
	dev_t file_device;
	ino_t file_inode;
	struct timespec file_mtime;
	off_t file_size;
	int file_loaded;

	/* exec plugin */
	int exec_valid;
	char *exec_token;
	char *exec_cert;
	size_t exec_cert_length;
	char *exec_key;
	size_t exec_key_length;
	int64_t exec_expiry; /* Unix time; 0 when the plugin gave none */

	uint64_t tls_generation;
};

static void free_secret(char **secret, size_t length)
{
	if (*secret != NULL) {
		explicit_bzero(*secret, length != 0 ? length : strlen(*secret));
		free(*secret);
	}
	*secret = NULL;
}

static void clear_exec(struct k8s_credential_state *state)
{
	free_secret(&state->exec_token, 0);
	free_secret(&state->exec_cert, state->exec_cert_length);
	free_secret(&state->exec_key, state->exec_key_length);
	state->exec_cert_length = 0;
	state->exec_key_length = 0;
	state->exec_expiry = 0;
	state->exec_valid = 0;
}

void k8s_credential_state_free(struct k8s_credential_state *state)
{
	if (state == NULL)
		return;
	free_secret(&state->file_token, 0);
	clear_exec(state);
	free(state);
}

int k8s_parse_rfc3339(const char *text, int64_t *seconds)
{
	struct tm tm = { 0 };
	int year, month, day, hour, minute, second, consumed = 0;
	const char *p;
	int64_t offset = 0;
	time_t value;

	if (sscanf(text, "%4d-%2d-%2d%*1[Tt]%2d:%2d:%2d%n", &year, &month, &day, &hour, &minute,
		   &second, &consumed) != 6 ||
	    consumed != 19)
		return -1;
	p = text + consumed;
	if (*p == '.') {
		p++;
		if (!isdigit((unsigned char) *p))
			return -1;
		while (isdigit((unsigned char) *p))
			p++;
	}
	if (*p == 'Z' || *p == 'z') {
		p++;
	} else if (*p == '+' || *p == '-') {
		int sign = *p == '-' ? -1 : 1, oh, om, n = 0;

		if (sscanf(p + 1, "%2d:%2d%n", &oh, &om, &n) != 2 || n != 5 || oh > 23 || om > 59)
			return -1;
		offset = sign * (oh * 3600 + om * 60);
		p += 6;
	} else {
		return -1;
	}
	if (*p != '\0' || month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 ||
	    minute > 59 || second > 60)
		return -1;
	tm.tm_year = year - 1900;
	tm.tm_mon = month - 1;
	tm.tm_mday = day;
	tm.tm_hour = hour;
	tm.tm_min = minute;
	tm.tm_sec = second;
	value = timegm(&tm);
	if (value == (time_t) -1)
		return -1;
	*seconds = (int64_t) value - offset;
	return 0;
}

static struct k8s_credential_state *state_of(struct k8s_config *config)
{
	if (config->credential_state == NULL)
		config->credential_state = calloc(1, sizeof(*config->credential_state));
	return config->credential_state;
}

/* ---- token file ---- */

static int refresh_token_file(struct k8s_config *config, struct k8s_credential_state *state,
			      struct sbx_error *error)
{
	_cleanup_free_ char *text = NULL;
	struct stat st;
	size_t length;

	/* stat() follows the projected volume's symlinks, so a rotation shows as a new inode. */
	if (stat(config->token_file, &st) < 0)
		return sbx_error_errno(error, errno, "%s: cannot read the token file %s",
				       config->origin, config->token_file);
	if (state->file_loaded && st.st_dev == state->file_device &&
	    st.st_ino == state->file_inode && st.st_size == state->file_size &&
	    st.st_mtim.tv_sec == state->file_mtime.tv_sec &&
	    st.st_mtim.tv_nsec == state->file_mtime.tv_nsec)
		return 0;

	if (sbx_read_file(config->token_file, TOKEN_FILE_MAX_BYTES, &text, &length, error) < 0)
		return sbx_error_prefix(error, "%s: token file", config->origin);
	while (length > 0 && isspace((unsigned char) text[length - 1]))
		text[--length] = '\0';
	if (length == 0) {
		return sbx_error_set(error, SBX_ERROR_INVALID, "%s: the token file %s is empty",
				     config->origin, config->token_file);
	}
	if (state->file_loaded)
		sbx_debug("k8s: token file %s changed, using the new token", config->token_file);
	free_secret(&state->file_token, 0);
	state->file_token = steal_pointer(&text);
	state->file_device = st.st_dev;
	state->file_inode = st.st_ino;
	state->file_size = st.st_size;
	state->file_mtime = st.st_mtim;
	state->file_loaded = 1;
	return 0;
}

/* ---- exec plugin: cache ---- */

static char *cache_path(struct k8s_config *config)
{
	const struct k8s_exec_plugin *plugin = config->exec;
	unsigned char digest[EVP_MAX_MD_SIZE];
	char hex[2 * EVP_MAX_MD_SIZE + 1];
	unsigned int digest_length = 0, i;
	EVP_MD_CTX *md;
	char *path;
	char **p;

	if (config->credential_cache_dir == NULL)
		return NULL;
	md = EVP_MD_CTX_new();
	if (md == NULL)
		return NULL;
	/* Everything that can change the credential is part of the key: the cluster, the user
	 * and the exact plugin invocation. */
	EVP_DigestInit_ex(md, EVP_sha256(), NULL);
#define HASH_FIELD(s) EVP_DigestUpdate(md, (s) != NULL ? (s) : "", strlen((s) != NULL ? (s) : "") + 1)
	HASH_FIELD(config->server_url);
	HASH_FIELD(config->user_name);
	HASH_FIELD(plugin->api_version);
	HASH_FIELD(plugin->path);
	for (p = plugin->args; *p != NULL; p++)
		HASH_FIELD(*p);
	EVP_DigestUpdate(md, "\1", 1);
	for (p = plugin->env; *p != NULL; p++)
		HASH_FIELD(*p);
#undef HASH_FIELD
	EVP_DigestFinal_ex(md, digest, &digest_length);
	EVP_MD_CTX_free(md);
	for (i = 0; i < digest_length; i++)
		snprintf(hex + 2 * i, 3, "%02x", digest[i]);
	if (asprintf(&path, "%s/%s.json", config->credential_cache_dir, hex) < 0)
		return NULL;
	return path;
}

/* Creates the cache directory 0700 and checks that no other user can read or replace it. */
static int cache_dir_usable(const char *dir)
{
	struct stat st;

	if (sbx_mkdir_p(dir, 0700) < 0) {
		sbx_warning("k8s: cannot create the credential cache directory %s: %s; the exec "
			    "plugin will run in every process",
			    dir, strerror(errno));
		return 0;
	}
	if (lstat(dir, &st) < 0 || !S_ISDIR(st.st_mode) || st.st_uid != geteuid() ||
	    (st.st_mode & 0077) != 0) {
		sbx_warning("k8s: the credential cache directory %s is not a directory of mode "
			    "0700 owned by uid %u; not caching credentials there",
			    dir, (unsigned) geteuid());
		return 0;
	}
	return 1;
}

static int take_string(struct json_object *object, const char *key, char **result,
		       size_t *length)
{
	struct json_object *value;

	*result = NULL;
	if (length != NULL)
		*length = 0;
	if (!json_object_object_get_ex(object, key, &value) || value == NULL)
		return 0;
	if (!json_object_is_type(value, json_type_string))
		return -1;
	*result = strdup(json_object_get_string(value));
	if (*result == NULL)
		return -1;
	if (length != NULL)
		*length = (size_t) json_object_get_string_len(value);
	return 0;
}

/* Loads an unexpired credential from the cache file; 1 when one was loaded. */
static int cache_load(struct k8s_config *config, struct k8s_credential_state *state,
		      const char *path)
{
	_cleanup_close_ int fd = -1;
	_cleanup_free_ char *text = NULL;
	struct json_object *root = NULL, *value;
	struct json_tokener *tokener;
	struct stat st;
	size_t used = 0;
	int64_t expires;
	int loaded = 0;

	fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return 0;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid() ||
	    (st.st_mode & 0077) != 0 || st.st_size <= 0 || st.st_size > PLUGIN_OUTPUT_MAX_BYTES) {
		sbx_warning("k8s: ignoring the credential cache file %s: not a private regular "
			    "file of this user",
			    path);
		return 0;
	}
	text = malloc((size_t) st.st_size + 1);
	if (text == NULL)
		return 0;
	while (used < (size_t) st.st_size) {
		ssize_t n = read(fd, text + used, (size_t) st.st_size - used);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		used += (size_t) n;
	}
	tokener = json_tokener_new();
	if (tokener == NULL)
		goto out;
	root = json_tokener_parse_ex(tokener, text, (int) used);
	json_tokener_free(tokener);
	if (root == NULL || !json_object_is_type(root, json_type_object))
		goto out;
	if (!json_object_object_get_ex(root, "version", &value) ||
	    json_object_get_int(value) != CACHE_FORMAT_VERSION ||
	    !json_object_object_get_ex(root, "expires", &value))
		goto out;
	expires = json_object_get_int64(value);
	if (expires - EXPIRY_MARGIN_SECONDS <= sbx_now())
		goto out;

	clear_exec(state);
	if (take_string(root, "token", &state->exec_token, NULL) < 0 ||
	    take_string(root, "clientCertificateData", &state->exec_cert,
			&state->exec_cert_length) < 0 ||
	    take_string(root, "clientKeyData", &state->exec_key, &state->exec_key_length) < 0) {
		clear_exec(state);
		goto out;
	}
	if (state->exec_token == NULL && state->exec_cert == NULL) {
		clear_exec(state);
		goto out;
	}
	state->exec_expiry = expires;
	state->exec_valid = 1;
	loaded = 1;
	sbx_debug("k8s: using the cached credential of the exec plugin %s (expires in %" PRId64
		  " s)",
		  config->exec->command, expires - sbx_now());
out:
	if (text != NULL)
		explicit_bzero(text, used);
	if (root != NULL)
		json_object_put(root);
	return loaded;
}

static void cache_store(struct k8s_credential_state *state, const char *path)
{
	struct json_object *root = json_object_new_object();
	struct sbx_error error;
	const char *text;

	if (root == NULL)
		return;
	json_object_object_add(root, "version", json_object_new_int(CACHE_FORMAT_VERSION));
	json_object_object_add(root, "expires", json_object_new_int64(state->exec_expiry));
	if (state->exec_token != NULL)
		json_object_object_add(root, "token", json_object_new_string(state->exec_token));
	if (state->exec_cert != NULL)
		json_object_object_add(root, "clientCertificateData",
				       json_object_new_string(state->exec_cert));
	if (state->exec_key != NULL)
		json_object_object_add(root, "clientKeyData",
				       json_object_new_string(state->exec_key));
	text = json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN);
	sbx_error_clear(&error);
	if (sbx_write_file_atomic(path, text, strlen(text), 0600, SBX_WRITE_DURABLE, &error) < 0)
		sbx_warning("k8s: cannot cache the exec plugin's credential: %s", error.message);
	explicit_bzero((char *) text, strlen(text));
	json_object_put(root);
}

/* ---- exec plugin: running it ---- */

static char *exec_info(struct k8s_config *config)
{
	struct json_object *root = json_object_new_object();
	struct json_object *spec = json_object_new_object();
	char *result;

	if (root == NULL || spec == NULL) {
		json_object_put(root);
		json_object_put(spec);
		return NULL;
	}
	json_object_object_add(root, "apiVersion",
			       json_object_new_string(config->exec->api_version));
	json_object_object_add(root, "kind", json_object_new_string("ExecCredential"));
	json_object_object_add(spec, "interactive", json_object_new_boolean(0));
	if (config->exec->provide_cluster_info) {
		struct json_object *cluster = json_object_new_object();

		json_object_object_add(cluster, "server",
				       json_object_new_string(config->server_url));
		if (config->tls_server_name != NULL)
			json_object_object_add(cluster, "tls-server-name",
					       json_object_new_string(config->tls_server_name));
		if (config->insecure_skip_tls_verify)
			json_object_object_add(cluster, "insecure-skip-tls-verify",
					       json_object_new_boolean(1));
		if (config->ca_pem != NULL) {
			size_t size = 4 * ((config->ca_pem_length + 2) / 3) + 1;
			unsigned char *encoded = malloc(size);

			if (encoded != NULL) {
				EVP_EncodeBlock(encoded, (const unsigned char *) config->ca_pem,
						(int) config->ca_pem_length);
				json_object_object_add(
					cluster, "certificate-authority-data",
					json_object_new_string((const char *) encoded));
				free(encoded);
			}
		}
		if (config->proxy_url != NULL)
			json_object_object_add(cluster, "proxy-url",
					       json_object_new_string(config->proxy_url));
		json_object_object_add(spec, "cluster", cluster);
	}
	json_object_object_add(root, "spec", spec);
	result = strdup(json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN));
	json_object_put(root);
	return result;
}

/* The child's environment: ours, then the plugin's entries (which override), then
 * KUBERNETES_EXEC_INFO. */
static char **plugin_environment(struct k8s_config *config, const char *info)
{
	size_t count = 0, extra = 0, used = 0, i;
	char **result, **p;

	for (p = environ; p != NULL && *p != NULL; p++)
		count++;
	for (p = config->exec->env; *p != NULL; p++)
		extra++;
	result = calloc(count + extra + 2, sizeof(*result));
	if (result == NULL)
		return NULL;
	for (i = 0; i < count; i++) {
		const char *entry = environ[i];
		size_t name_length = strcspn(entry, "=");
		int overridden = strncmp(entry, "KUBERNETES_EXEC_INFO=", 21) == 0;

		for (p = config->exec->env; !overridden && *p != NULL; p++)
			overridden = strncmp(*p, entry, name_length + 1) == 0;
		if (!overridden)
			result[used++] = (char *) entry;
	}
	for (p = config->exec->env; *p != NULL; p++)
		result[used++] = *p;
	result[used++] = (char *) info;
	result[used] = NULL;
	return result;
}

struct plugin_output {
	char *stdout_data;
	size_t stdout_length;
	char stderr_tail[PLUGIN_STDERR_KEEP + 1];
	size_t stderr_length;
};

static int append_stdout(struct plugin_output *output, const char *data, size_t length)
{
	char *bigger;

	if (output->stdout_length + length > PLUGIN_OUTPUT_MAX_BYTES)
		return -1;
	bigger = realloc(output->stdout_data, output->stdout_length + length + 1);
	if (bigger == NULL)
		return -1;
	memcpy(bigger + output->stdout_length, data, length);
	output->stdout_length += length;
	bigger[output->stdout_length] = '\0';
	output->stdout_data = bigger;
	return 0;
}

static void append_stderr(struct plugin_output *output, const char *data, size_t length)
{
	/* Keeps the last PLUGIN_STDERR_KEEP bytes: the end of a failure message matters. */
	if (length >= PLUGIN_STDERR_KEEP) {
		memcpy(output->stderr_tail, data + length - PLUGIN_STDERR_KEEP, PLUGIN_STDERR_KEEP);
		output->stderr_length = PLUGIN_STDERR_KEEP;
	} else {
		size_t keep = output->stderr_length + length > PLUGIN_STDERR_KEEP
				      ? PLUGIN_STDERR_KEEP - length
				      : output->stderr_length;

		memmove(output->stderr_tail, output->stderr_tail + output->stderr_length - keep,
			keep);
		memcpy(output->stderr_tail + keep, data, length);
		output->stderr_length = keep + length;
	}
	output->stderr_tail[output->stderr_length] = '\0';
}

/* Runs the plugin, collecting stdout and the tail of stderr; fills *STATUS with the wait
 * status. */
static int run_plugin(struct k8s_config *config, const char *where, struct plugin_output *output,
		      int *status, struct sbx_error *error)
{
	_cleanup_free_ char *info = NULL;
	_cleanup_free_ char **envp = NULL;
	_cleanup_close_ int out_read = -1, err_read = -1;
	int out_pipe[2] = { -1, -1 }, err_pipe[2] = { -1, -1 };
	posix_spawn_file_actions_t actions;
	char **argv;
	size_t argc = 0, i;
	int64_t deadline = sbx_monotonic_ms() + PLUGIN_TIMEOUT_MS;
	pid_t pid;
	int spawn_error;

	{
		_cleanup_free_ char *json = exec_info(config);

		if (json == NULL || asprintf(&info, "KUBERNETES_EXEC_INFO=%s", json) < 0) {
			info = NULL;
			return sbx_error_errno(error, ENOMEM, "%s", where);
		}
	}
	envp = plugin_environment(config, info);
	for (argc = 0; config->exec->args[argc] != NULL; argc++)
		;
	argv = calloc(argc + 2, sizeof(*argv));
	if (envp == NULL || argv == NULL) {
		free(argv);
		return sbx_error_errno(error, ENOMEM, "%s", where);
	}
	argv[0] = config->exec->path;
	for (i = 0; i < argc; i++)
		argv[i + 1] = config->exec->args[i];

	if (pipe2(out_pipe, O_CLOEXEC) < 0 || pipe2(err_pipe, O_CLOEXEC) < 0) {
		spawn_error = errno;
		free(argv);
		if (out_pipe[0] >= 0) {
			close(out_pipe[0]);
			close(out_pipe[1]);
		}
		return sbx_error_errno(error, spawn_error, "%s: pipe", where);
	}
	out_read = out_pipe[0];
	err_read = err_pipe[0];
	posix_spawn_file_actions_init(&actions);
	posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_adddup2(&actions, out_pipe[1], 1);
	posix_spawn_file_actions_adddup2(&actions, err_pipe[1], 2);
	posix_spawn_file_actions_addclosefrom_np(&actions, 3);
	spawn_error = posix_spawnp(&pid, argv[0], &actions, NULL, argv, envp);
	posix_spawn_file_actions_destroy(&actions);
	close(out_pipe[1]);
	close(err_pipe[1]);
	free(argv);
	if (spawn_error != 0)
		return sbx_error_set(error, SBX_ERROR_SYSTEM,
				     "%s: cannot run the exec credential plugin \"%s\": %s%s%s", where,
				     config->exec->command, strerror(spawn_error),
				     config->exec->install_hint != NULL ? "; " : "",
				     config->exec->install_hint != NULL ? config->exec->install_hint
									: "");

	while (out_read >= 0 || err_read >= 0) {
		struct pollfd fds[2] = { { .fd = out_read, .events = POLLIN },
					 { .fd = err_read, .events = POLLIN } };
		int64_t left = deadline - sbx_monotonic_ms();
		char buf[4096];
		int n;

		if (left <= 0) {
			kill(pid, SIGKILL);
			waitpid(pid, status, 0);
			return sbx_error_set(error, SBX_ERROR_SYSTEM,
					     "%s: the exec credential plugin \"%s\" did not finish "
					     "within %d s",
					     where, config->exec->command, PLUGIN_TIMEOUT_MS / 1000);
		}
		n = poll(fds, 2, (int) left);
		if (n < 0 && errno == EINTR)
			continue;
		for (i = 0; i < 2; i++) {
			int *fd = i == 0 ? &out_read : &err_read;
			ssize_t got;

			if (*fd < 0 || fds[i].revents == 0)
				continue;
			got = read(*fd, buf, sizeof(buf));
			if (got < 0 && errno == EINTR)
				continue;
			if (got <= 0) {
				sbx_closep(fd);
				continue;
			}
			if (i == 1) {
				append_stderr(output, buf, (size_t) got);
			} else if (append_stdout(output, buf, (size_t) got) < 0) {
				kill(pid, SIGKILL);
				waitpid(pid, status, 0);
				return sbx_error_set(error, SBX_ERROR_SYSTEM,
						     "%s: the exec credential plugin \"%s\" wrote "
						     "more than %u bytes",
						     where, config->exec->command,
						     PLUGIN_OUTPUT_MAX_BYTES);
			}
		}
	}
	while (waitpid(pid, status, 0) < 0) {
		if (errno != EINTR)
			return sbx_error_errno(error, errno, "%s: waitpid", where);
	}
	return 0;
}

static int parse_plugin_output(struct k8s_config *config, const char *where,
			       struct plugin_output *output, struct k8s_credential_state *state,
			       struct sbx_error *error)
{
	struct json_object *root, *status = NULL;
	const char *api_version, *kind, *expiration;
	int ret = -1;

	root = json_tokener_parse(output->stdout_data != NULL ? output->stdout_data : "");
	if (root == NULL || !json_object_is_type(root, json_type_object)) {
		sbx_error_set(error, SBX_ERROR_SYSTEM,
			      "%s: the exec credential plugin \"%s\" did not print an "
			      "ExecCredential JSON object",
			      where, config->exec->command);
		goto out;
	}
	api_version = json_object_get_string(json_object_object_get(root, "apiVersion"));
	kind = json_object_get_string(json_object_object_get(root, "kind"));
	if (api_version == NULL || strcmp(api_version, config->exec->api_version) != 0 ||
	    kind == NULL || strcmp(kind, "ExecCredential") != 0) {
		sbx_error_set(error, SBX_ERROR_SYSTEM,
			      "%s: the exec credential plugin \"%s\" printed apiVersion \"%s\" kind "
			      "\"%s\"; expected %s ExecCredential",
			      where, config->exec->command, api_version != NULL ? api_version : "",
			      kind != NULL ? kind : "", config->exec->api_version);
		goto out;
	}
	if (!json_object_object_get_ex(root, "status", &status) ||
	    !json_object_is_type(status, json_type_object)) {
		sbx_error_set(error, SBX_ERROR_SYSTEM,
			      "%s: the exec credential plugin \"%s\" printed no status", where,
			      config->exec->command);
		goto out;
	}

	clear_exec(state);
	if (take_string(status, "token", &state->exec_token, NULL) < 0 ||
	    take_string(status, "clientCertificateData", &state->exec_cert,
			&state->exec_cert_length) < 0 ||
	    take_string(status, "clientKeyData", &state->exec_key, &state->exec_key_length) < 0) {
		sbx_error_set(error, SBX_ERROR_SYSTEM,
			      "%s: the exec credential plugin \"%s\" printed a status with "
			      "non-string fields",
			      where, config->exec->command);
		goto out;
	}
	if (state->exec_token != NULL && state->exec_token[0] == '\0')
		free_secret(&state->exec_token, 0);
	if ((state->exec_cert == NULL) != (state->exec_key == NULL)) {
		sbx_error_set(error, SBX_ERROR_SYSTEM,
			      "%s: the exec credential plugin \"%s\" printed only one of "
			      "clientCertificateData and clientKeyData",
			      where, config->exec->command);
		goto out;
	}
	if (state->exec_token == NULL && state->exec_cert == NULL) {
		sbx_error_set(error, SBX_ERROR_SYSTEM,
			      "%s: the exec credential plugin \"%s\" printed neither status.token "
			      "nor status.clientCertificateData",
			      where, config->exec->command);
		goto out;
	}
	expiration = json_object_get_string(json_object_object_get(status, "expirationTimestamp"));
	if (expiration != NULL && k8s_parse_rfc3339(expiration, &state->exec_expiry) < 0) {
		sbx_error_set(error, SBX_ERROR_SYSTEM,
			      "%s: the exec credential plugin \"%s\" printed an invalid "
			      "status.expirationTimestamp \"%s\"; expected RFC 3339",
			      where, config->exec->command, expiration);
		goto out;
	}
	state->exec_valid = 1;
	ret = 0;
out:
	if (ret < 0)
		clear_exec(state);
	json_object_put(root);
	return ret;
}

static int refresh_exec(struct k8s_config *config, struct k8s_credential_state *state,
			struct sbx_error *error)
{
	_cleanup_free_ char *path = NULL;
	struct plugin_output output = { 0 };
	char where[512];
	int status = 0, ret = -1;
	uint64_t old_cert_generation = state->tls_generation;
	int had_cert = state->exec_cert != NULL;

	if (state->exec_valid &&
	    (state->exec_expiry == 0 || state->exec_expiry - EXPIRY_MARGIN_SECONDS > sbx_now()))
		return 0;

	path = cache_path(config);
	if (path != NULL && cache_dir_usable(config->credential_cache_dir) &&
	    cache_load(config, state, path)) {
		if (had_cert || state->exec_cert != NULL)
			state->tls_generation = old_cert_generation + 1;
		return 0;
	}

	snprintf(where, sizeof(where), "%s: context \"%s\": user \"%s\"", config->origin,
		 config->context != NULL ? config->context : "",
		 config->user_name != NULL ? config->user_name : "");
	sbx_debug("k8s: running the exec credential plugin %s", config->exec->command);
	if (run_plugin(config, where, &output, &status, error) < 0)
		goto out;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		char *line = output.stderr_tail;
		size_t length = strlen(line);

		while (length > 0 && isspace((unsigned char) line[length - 1]))
			line[--length] = '\0';
		sbx_error_set(error, SBX_ERROR_SYSTEM,
			      "%s: the exec credential plugin \"%s\" %s %d%s%s%s%s", where,
			      config->exec->command,
			      WIFEXITED(status) ? "exited with status" : "was killed by signal",
			      WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status),
			      length > 0 ? ": " : "", line,
			      config->exec->install_hint != NULL ? "; " : "",
			      config->exec->install_hint != NULL ? config->exec->install_hint : "");
		goto out;
	}
	if (parse_plugin_output(config, where, &output, state, error) < 0)
		goto out;
	if (had_cert || state->exec_cert != NULL)
		state->tls_generation = old_cert_generation + 1;
	/* Without an expiry the credential lives as long as this process. Other processes cannot
	 * know when it stops working, so it is not cached on disk. */
	if (path != NULL && state->exec_expiry != 0)
		cache_store(state, path);
	ret = 0;
out:
	free_secret(&output.stdout_data, output.stdout_length);
	return ret;
}

int k8s_credential_get(struct k8s_config *config, struct k8s_credential *credential,
		       struct sbx_error *error)
{
	struct k8s_credential_state *state = state_of(config);
	struct k8s_credential result = { 0 };

	if (state == NULL)
		return sbx_error_errno(error, ENOMEM, "k8s credential");

	if (config->exec != NULL) {
		if (refresh_exec(config, state, error) < 0)
			return -1;
		result.token = state->exec_token;
		if (state->exec_cert != NULL) {
			result.client_cert_pem = state->exec_cert;
			result.client_cert_pem_length = state->exec_cert_length;
			result.client_key_pem = state->exec_key;
			result.client_key_pem_length = state->exec_key_length;
		}
	}
	if (result.token == NULL && config->token_file != NULL) {
		if (refresh_token_file(config, state, error) < 0) {
			if (config->token == NULL)
				return -1;
			sbx_warning("%s; using the static token", error->message);
			result.token = config->token;
		} else {
			result.token = state->file_token;
		}
	}
	if (result.token == NULL)
		result.token = config->token;
	if (result.client_cert_pem == NULL && config->client_cert_pem != NULL) {
		result.client_cert_pem = config->client_cert_pem;
		result.client_cert_pem_length = config->client_cert_pem_length;
		result.client_key_pem = config->client_key_pem;
		result.client_key_pem_length = config->client_key_pem_length;
	}
	result.tls_generation = state->tls_generation;
	*credential = result;
	return 0;
}

int k8s_credential_invalidate(struct k8s_config *config)
{
	struct k8s_credential_state *state = state_of(config);

	if (state == NULL)
		return 0;
	if (config->exec != NULL) {
		_cleanup_free_ char *path = cache_path(config);

		/* Other processes must not pick up the credential the server just rejected. */
		if (path != NULL && unlink(path) < 0 && errno != ENOENT)
			sbx_warning("k8s: cannot remove the credential cache file %s: %s", path,
				    strerror(errno));
		if (state->exec_cert != NULL)
			state->tls_generation++;
		clear_exec(state);
		return 1;
	}
	if (config->token_file != NULL) {
		state->file_loaded = 0;
		return 1;
	}
	return 0;
}
