/* SPDX-License-Identifier: MIT */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "config.h"
#include "util.h"

static char temp_dir[PATH_MAX];

static void make_temp_dir(void)
{
	snprintf(temp_dir, sizeof(temp_dir), "/tmp/sbx-test-config-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(temp_dir));
}

static void remove_temp_dir(void)
{
	sbx_remove_tree(temp_dir);
}

/* Writes TEXT to a new file in the temporary directory and returns its path. */
static char *write_config(const char *name, const char *text)
{
	struct sbx_error error = { 0 };
	char *path;

	ck_assert_int_ge(asprintf(&path, "%s/%s", temp_dir, name), 0);
	ck_assert_msg(sbx_write_file_atomic(path, text, strlen(text), 0644, 0, &error) == 0, "%s",
		      error.message);
	return path;
}

static struct sbx_config *load_text(const char *text)
{
	struct sbx_error error = { 0 };
	struct sbx_config *config = NULL;
	char *path = write_config("config.yaml", text);

	ck_assert_msg(sbx_config_load(path, &config, &error) == 0, "%s", error.message);
	free(path);
	return config;
}

static void assert_defaults(const struct sbx_config *config)
{
	ck_assert_str_eq(config->backend, "local");
	ck_assert_ptr_null(config->plugin_dir);
	ck_assert_ptr_null(config->state_dir);
	ck_assert_str_eq(config->shell, "bash");
	ck_assert_int_eq(config->default_job_timeout, 7200);
	ck_assert_int_eq(config->deadline_margin, 3600);
	ck_assert_int_eq(config->cleanup_timeout, 300);
	ck_assert_int_eq(config->stop_grace, 5);
	ck_assert_int_eq(config->log_level, SBX_LOG_INFO);

	ck_assert_int_eq(config->local.mode, SBX_LOCAL_MODE_AUTO);
	ck_assert_uint_eq(config->local.id_map_base, 1879048192);
	ck_assert_uint_eq(config->local.job_uid, 1000);
	ck_assert_uint_eq(config->local.job_gid, 1000);
	ck_assert_int_eq(config->local.allow_runner_uid, 0);
	ck_assert_ptr_null(config->local.rootfs);
	ck_assert_uint_eq(config->local.image_count, 0);
	ck_assert_int_eq(config->local.unmapped_image, SBX_UNMAPPED_IMAGE_IGNORE);
	ck_assert_uint_eq(config->local.masked_paths.count, 0);
	ck_assert_uint_eq(config->local.tmp_size, 1ULL << 30);
	ck_assert_ptr_null(config->local.cache_dir);
	ck_assert_uint_eq(config->local.memory_max, 4ULL << 30);
	ck_assert_uint_eq(config->local.pids_max, 4096);
	ck_assert_uint_eq(config->local.cpu_max_millis, 0);
	ck_assert_ptr_null(config->local.gitlab_runner_path);
	ck_assert_str_eq(config->local.hostname, "sbx");

	ck_assert_uint_eq(config->network.runner_allow.count, 0);
	ck_assert_uint_eq(config->network.user_allow.count, 0);
	ck_assert_int_eq(config->network.allow_ci_server, 1);
	ck_assert_uint_eq(config->network.proxy_port, 3128);
}

START_TEST(load_null_gives_defaults)
{
	struct sbx_error error = { 0 };
	struct sbx_config *config = NULL;

	ck_assert_int_eq(sbx_config_load(NULL, &config, &error), 0);
	ck_assert_ptr_nonnull(config);
	ck_assert_ptr_null(config->path);
	assert_defaults(config);
	sbx_config_free(config);
}
END_TEST

START_TEST(load_empty_file_gives_defaults)
{
	struct sbx_config *config = load_text("");

	ck_assert_ptr_nonnull(config->path);
	ck_assert_ptr_nonnull(strstr(config->path, "/config.yaml"));
	assert_defaults(config);
	sbx_config_free(config);

	config = load_text("# only a comment\n---\n");
	assert_defaults(config);
	sbx_config_free(config);
}
END_TEST

static const char full_config[] =
	"backend: agent-sandbox\n"
	"plugin_dir: /usr/lib/sbx\n"
	"state_dir: /var/lib/sbx-test\n"
	"shell: sh\n"
	"default_job_timeout: 600\n"
	"deadline_margin: 0\n"
	"cleanup_timeout: 30\n"
	"stop_grace: 2\n"
	"log_level: debug\n"
	"local:\n"
	"  mode: unprivileged\n"
	"  id_map_base: 100000\n"
	"  job_uid: 2000\n"
	"  job_gid: 3000\n"
	"  allow_runner_uid: true\n"
	"  rootfs: /srv/rootfs/debian\n"
	"  images:\n"
	"    \"debian:12\": /srv/rootfs/debian-12\n"
	"    registry.example.com/ci/*: /srv/rootfs/ci\n"
	"    registry.example.com/*: /srv/rootfs/any\n"
	"  unmapped_image: reject\n"
	"  masked_paths: [/srv/secrets, /opt/keys]\n"
	"  tmp_size: 512M\n"
	"  cache_dir: /var/cache/sbx\n"
	"  memory_max: 0\n"
	"  pids_max: 0\n"
	"  cpu_max: 1.5\n"
	"  gitlab_runner_path: /usr/bin/gitlab-runner\n"
	"  hostname: ci-box.example\n"
	"network:\n"
	"  runner_allow: [gitlab.example.com, \"*.s3.amazonaws.com:443\"]\n"
	"  user_allow:\n"
	"    - registry.npmjs.org:443\n"
	"    - 203.0.113.0/24\n"
	"  allow_ci_server: false\n"
	"  proxy_port: 8080\n";

START_TEST(load_full_file)
{
	struct sbx_config *config = load_text(full_config);

	ck_assert_str_eq(config->backend, "agent-sandbox");
	ck_assert_str_eq(config->plugin_dir, "/usr/lib/sbx");
	ck_assert_str_eq(config->state_dir, "/var/lib/sbx-test");
	ck_assert_str_eq(config->shell, "sh");
	ck_assert_int_eq(config->default_job_timeout, 600);
	ck_assert_int_eq(config->deadline_margin, 0);
	ck_assert_int_eq(config->cleanup_timeout, 30);
	ck_assert_int_eq(config->stop_grace, 2);
	ck_assert_int_eq(config->log_level, SBX_LOG_DEBUG);

	ck_assert_int_eq(config->local.mode, SBX_LOCAL_MODE_UNPRIVILEGED);
	ck_assert_uint_eq(config->local.id_map_base, 100000);
	ck_assert_uint_eq(config->local.job_uid, 2000);
	ck_assert_uint_eq(config->local.job_gid, 3000);
	ck_assert_int_eq(config->local.allow_runner_uid, 1);
	ck_assert_str_eq(config->local.rootfs, "/srv/rootfs/debian");
	ck_assert_uint_eq(config->local.image_count, 3);
	ck_assert_str_eq(config->local.images[0].pattern, "debian:12");
	ck_assert_str_eq(config->local.images[0].rootfs, "/srv/rootfs/debian-12");
	ck_assert_str_eq(config->local.images[1].pattern, "registry.example.com/ci/*");
	ck_assert_int_eq(config->local.unmapped_image, SBX_UNMAPPED_IMAGE_REJECT);
	ck_assert_uint_eq(config->local.masked_paths.count, 2);
	ck_assert_str_eq(config->local.masked_paths.items[0], "/srv/secrets");
	ck_assert_str_eq(config->local.masked_paths.items[1], "/opt/keys");
	ck_assert_uint_eq(config->local.tmp_size, 512ULL << 20);
	ck_assert_str_eq(config->local.cache_dir, "/var/cache/sbx");
	ck_assert_uint_eq(config->local.memory_max, 0);
	ck_assert_uint_eq(config->local.pids_max, 0);
	ck_assert_uint_eq(config->local.cpu_max_millis, 1500);
	ck_assert_str_eq(config->local.gitlab_runner_path, "/usr/bin/gitlab-runner");
	ck_assert_str_eq(config->local.hostname, "ci-box.example");

	ck_assert_uint_eq(config->network.runner_allow.count, 2);
	ck_assert_str_eq(config->network.runner_allow.items[0], "gitlab.example.com");
	ck_assert_str_eq(config->network.runner_allow.items[1], "*.s3.amazonaws.com:443");
	ck_assert_uint_eq(config->network.user_allow.count, 2);
	ck_assert_str_eq(config->network.user_allow.items[0], "registry.npmjs.org:443");
	ck_assert_str_eq(config->network.user_allow.items[1], "203.0.113.0/24");
	ck_assert_int_eq(config->network.allow_ci_server, 0);
	ck_assert_uint_eq(config->network.proxy_port, 8080);
	sbx_config_free(config);
}
END_TEST

START_TEST(load_sets_path)
{
	struct sbx_error error = { 0 };
	struct sbx_config *config = NULL;
	char *path = write_config("named.yaml", "shell: sh\n");

	ck_assert_int_eq(sbx_config_load(path, &config, &error), 0);
	ck_assert_str_eq(config->path, path);
	sbx_config_free(config);
	free(path);
}
END_TEST

START_TEST(load_null_values_keep_defaults)
{
	struct sbx_config *config = load_text("local:\nnetwork: ~\nstate_dir: null\n");

	assert_defaults(config);
	sbx_config_free(config);

	config = load_text("network:\n  runner_allow:\n  user_allow: []\nlocal:\n  images: {}\n");
	assert_defaults(config);
	sbx_config_free(config);
}
END_TEST

START_TEST(cpu_max_decimals)
{
	static const struct {
		const char *text;
		uint64_t millis;
	} cases[] = {
		{ "0", 0 }, { "2", 2000 }, { "0.5", 500 }, { "1.25", 1250 }, { "0.01", 10 },
		{ "3.125", 3125 }, { "16", 16000 },
	};

	for (size_t i = 0; i < SBX_ARRAY_SIZE(cases); i++) {
		char text[64];
		struct sbx_config *config;

		snprintf(text, sizeof(text), "local:\n  cpu_max: %s\n", cases[i].text);
		config = load_text(text);
		ck_assert_msg(config->local.cpu_max_millis == cases[i].millis,
			      "cpu_max %s: got %llu thousandths, expected %llu", cases[i].text,
			      (unsigned long long) config->local.cpu_max_millis,
			      (unsigned long long) cases[i].millis);
		sbx_config_free(config);
	}
}
END_TEST

START_TEST(images_find_exact_then_longest_prefix)
{
	struct sbx_config *config = load_text(full_config);
	const struct sbx_image_map_entry *entry;

	entry = sbx_config_find_image(config, "debian:12");
	ck_assert_ptr_nonnull(entry);
	ck_assert_str_eq(entry->rootfs, "/srv/rootfs/debian-12");
	entry = sbx_config_find_image(config, "registry.example.com/ci/node:20");
	ck_assert_ptr_nonnull(entry);
	ck_assert_str_eq(entry->rootfs, "/srv/rootfs/ci");
	entry = sbx_config_find_image(config, "registry.example.com/other");
	ck_assert_ptr_nonnull(entry);
	ck_assert_str_eq(entry->rootfs, "/srv/rootfs/any");
	ck_assert_ptr_null(sbx_config_find_image(config, "debian:11"));
	ck_assert_ptr_null(sbx_config_find_image(config, NULL));
	sbx_config_free(config);
}
END_TEST

struct invalid_case {
	const char *yaml;
	unsigned line;
	/* Substrings the message must contain: the key and the fix. */
	const char *key;
	const char *fix;
};

static const struct invalid_case invalid_cases[] = {
	{ "local:\n  memroy_max: 4G\n", 2, "unknown key \"local.memroy_max\"",
	  "did you mean \"memory_max\"? See sbx-config(5)" },
	{ "bakend: local\n", 1, "unknown key \"bakend\"", "did you mean \"backend\"?" },
	{ "frobnicate: 1\n", 1, "unknown key \"frobnicate\"", "remove it. See sbx-config(5)" },
	{ "- backend\n", 1, "expected a mapping", "see sbx-config(5)" },
	{ "memory_max: 4G\n", 1, "unknown key \"memory_max\"", "Move it under \"local:\"" },
	{ "local:\n  log_level: info\n", 2, "unknown key \"local.log_level\"",
	  "top-level key, move it out of \"local:\"" },
	{ "shell: bash\nshell: sh\n", 2, "duplicate key \"shell\"", "first set on line 1" },
	{ "local:\n  job_uid: 1\n  job_uid: 2\n", 3, "duplicate key \"local.job_uid\"",
	  "keep only one" },
	{ "backend: docker\n", 1, "key \"backend\"", "use local or agent-sandbox" },
	{ "shell: zsh\n", 1, "key \"shell\"", "use bash or sh" },
	{ "log_level: verbose\n", 1, "key \"log_level\"", "use error, warning, info or debug" },
	{ "local:\n  mode: rootless\n", 2, "key \"local.mode\"", "use auto, root or unprivileged" },
	{ "local:\n  unmapped_image: fail\n", 2, "key \"local.unmapped_image\"",
	  "use ignore or reject" },
	{ "default_job_timeout: -5\n", 1, "key \"default_job_timeout\"",
	  "is negative; use a whole number from 1 to" },
	{ "default_job_timeout: 0\n", 1, "key \"default_job_timeout\"", "out of range" },
	{ "stop_grace: 1.5\n", 1, "key \"stop_grace\"", "invalid number \"1.5\"" },
	{ "cleanup_timeout: \"300\"\n", 1, "key \"cleanup_timeout\"", "remove the quotes" },
	{ "deadline_margin: 99999999999999999999999\n", 1, "key \"deadline_margin\"",
	  "out of range" },
	{ "deadline_margin: [1]\n", 1, "key \"deadline_margin\"", "got a list" },
	{ "deadline_margin:\n", 1, "key \"deadline_margin\"",
	  "no value; give a whole number from 0 to 2147483647 or remove the line" },
	{ "state_dir: var/lib/sbx\n", 1, "key \"state_dir\"",
	  "is not an absolute path; use a path that starts with /" },
	{ "plugin_dir: lib\n", 1, "key \"plugin_dir\"", "absolute path" },
	{ "local:\n  rootfs: srv/rootfs\n", 2, "key \"local.rootfs\"", "absolute path" },
	{ "local:\n  cache_dir: cache\n", 2, "key \"local.cache_dir\"", "absolute path" },
	{ "local:\n  gitlab_runner_path: gitlab-runner\n", 2, "key \"local.gitlab_runner_path\"",
	  "absolute path" },
	{ "local:\n  masked_paths:\n    - /ok\n    - relative\n", 4, "key \"local.masked_paths\"",
	  "\"relative\" is not an absolute path" },
	{ "local:\n  masked_paths: /srv\n", 2, "key \"local.masked_paths\"",
	  "expected a list, got a single value" },
	{ "local:\n  images:\n    \"debian:12\": rootfs\n", 3,
	  "key \"local.images.\"debian:12\"\"", "absolute path" },
	{ "local:\n  images:\n    \"*\": /srv/rootfs\n", 3, "key \"local.images\"",
	  "invalid image pattern \"*\"" },
	{ "local:\n  images:\n    \"a*b\": /srv/rootfs\n", 3, "key \"local.images\"",
	  "a prefix ending in '*'" },
	{ "local:\n  images: [debian]\n", 2, "key \"local.images\"", "expected a mapping" },
	{ "local:\n  images:\n    a: /x\n    a: /y\n", 4, "duplicate key \"local.images.a\"",
	  "keep only one" },
	{ "local:\n  tmp_size: 12Q\n", 2, "key \"local.tmp_size\"",
	  "invalid size \"12Q\"; use a number with an optional K, M, G or T suffix" },
	{ "local:\n  tmp_size: 0\n", 2, "key \"local.tmp_size\"",
	  "a tmpfs of size 0 has no limit at all; use a size such as 1G" },
	{ "local:\n  memory_max: -1G\n", 2, "key \"local.memory_max\"", "or 0 for no limit" },
	{ "local:\n  pids_max: -1\n", 2, "key \"local.pids_max\"", "is negative" },
	{ "local:\n  cpu_max: 1.2345\n", 2, "key \"local.cpu_max\"", "more than three decimals" },
	{ "local:\n  cpu_max: 0.001\n", 2, "key \"local.cpu_max\"", "use at least 0.01" },
	{ "local:\n  cpu_max: two\n", 2, "key \"local.cpu_max\"", "invalid CPU count" },
	{ "local:\n  cpu_max: -1\n", 2, "key \"local.cpu_max\"", "invalid CPU count" },
	{ "local:\n  job_uid: 0\n", 2, "key \"local.job_uid\"",
	  "use a whole number from 1 to 65535 because 0 is root inside the sandbox" },
	{ "local:\n  job_gid: 0\n", 2, "key \"local.job_gid\"", "from 1 to 65535" },
	{ "local:\n  job_uid: 65536\n", 2, "key \"local.job_uid\"",
	  "out of range; use a whole number from 1 to 65535 because the job's user namespace "
	  "maps only the ids 0-65535" },
	{ "local:\n  id_map_base: 1000\n", 2, "key \"local.id_map_base\"",
	  "from 65536 to 4294901759" },
	{ "local:\n  id_map_base: 4294967000\n", 2, "key \"local.id_map_base\"", "out of range" },
	{ "local:\n  allow_runner_uid: yes\n", 2, "key \"local.allow_runner_uid\"",
	  "use true or false" },
	{ "local:\n  allow_runner_uid: \"true\"\n", 2, "key \"local.allow_runner_uid\"",
	  "got the quoted string \"true\"; remove the quotes" },
	{ "local:\n  hostname: -bad\n", 2, "key \"local.hostname\"", "invalid host name" },
	{ "local:\n  hostname: a_b\n", 2, "key \"local.hostname\"", "invalid host name" },
	{ "local: [1, 2]\n", 1, "key \"local\"", "expected a mapping of keys, got a list" },
	{ "network:\n  proxy_port: 0\n", 2, "key \"network.proxy_port\"", "from 1 to 65535" },
	{ "network:\n  proxy_port: 65536\n", 2, "key \"network.proxy_port\"", "out of range" },
	{ "network:\n  allow_ci_server: 1\n", 2, "key \"network.allow_ci_server\"",
	  "use true or false" },
	{ "network:\n  user_allow:\n    - ok.example.com\n    - \"bad host!\"\n", 4,
	  "key \"network.user_allow\"", "allow-list entry" },
	{ "network:\n  runner_allow: [\"example.com:99999\"]\n", 2,
	  "key \"network.runner_allow\"", "port" },
	{ "network:\n  runner_allow: [\"a.example, b.example\"]\n", 2,
	  "key \"network.runner_allow\"", "allow-list entry" },
	{ "network:\n  user_allow: [[nested]]\n", 2, "key \"network.user_allow\"",
	  "expected an allow-list entry, got a list" },
	{ "hostname: \"a\\nb\"\n", 1, "unknown key \"hostname\"", "Move it under \"local:\"" },
	{ "local:\n  hostname: \"a\\nb\"\n", 2, "key \"local.hostname\"", "control character" },
	{ "local:\n  rootfs: \"/srv/a\\0b\"\n", 2, "key \"local.rootfs\"", "NUL byte" },
	{ "- a\n- b\n", 1, "expected a mapping of keys such as \"backend: local\"",
	  "got a list" },
	{ "shell: bash\n---\nshell: sh\n", 3, "a second YAML document", "keep one document" },
	{ "shell: [bash\n", 2, "invalid YAML", "fix the syntax" },
	{ "local:\n  job_uid: 1\n job_gid: 2\n", 3, "invalid YAML", "fix the syntax" },
	{ "? [a, b]\n: c\n", 1, "keys must be single words", "not a list" },
};

START_TEST(invalid_config_rejected)
{
	const struct invalid_case *c = &invalid_cases[_i];
	struct sbx_error error = { 0 };
	struct sbx_config *config = NULL;
	char *path = write_config("invalid.yaml", c->yaml);
	char *prefix;

	ck_assert_int_eq(sbx_config_load(path, &config, &error), -1);
	ck_assert_ptr_null(config);
	ck_assert_int_eq(error.error_class, SBX_ERROR_INVALID);
	ck_assert_int_ge(asprintf(&prefix, "config %s:%u: ", path, c->line), 0);
	ck_assert_msg(strncmp(error.message, prefix, strlen(prefix)) == 0,
		      "case %d: expected the message to start with \"%s\", got \"%s\"", _i, prefix,
		      error.message);
	ck_assert_msg(strstr(error.message, c->key) != NULL,
		      "case %d: expected \"%s\" in \"%s\"", _i, c->key, error.message);
	ck_assert_msg(strstr(error.message, c->fix) != NULL,
		      "case %d: expected \"%s\" in \"%s\"", _i, c->fix, error.message);
	ck_assert_msg(strchr(error.message, '\n') == NULL, "case %d: message has a newline: %s",
		      _i, error.message);
	free(prefix);
	free(path);
}
END_TEST

START_TEST(missing_file_names_path)
{
	struct sbx_error error = { 0 };
	struct sbx_config *config = NULL;
	char *path;

	ck_assert_int_ge(asprintf(&path, "%s/does-not-exist.yaml", temp_dir), 0);
	ck_assert_int_eq(sbx_config_load(path, &config, &error), -1);
	ck_assert_ptr_null(config);
	ck_assert_ptr_nonnull(strstr(error.message, path));
	ck_assert_ptr_nonnull(strstr(error.message, "not found"));
	/* The man page, not a source-tree path that packages do not install. */
	ck_assert_ptr_nonnull(strstr(error.message, "see sbx-config(5)"));
	free(path);
}
END_TEST

START_TEST(world_writable_file_rejected)
{
	struct sbx_error error = { 0 };
	struct sbx_config *config = NULL;
	char *path = write_config("open.yaml", "shell: sh\n");

	ck_assert_int_eq(chmod(path, 0666), 0);
	ck_assert_int_eq(sbx_config_load(path, &config, &error), -1);
	ck_assert_ptr_null(config);
	ck_assert_ptr_nonnull(strstr(error.message, "chmod o-w"));
	free(path);
}
END_TEST

START_TEST(directory_rejected)
{
	struct sbx_error error = { 0 };
	struct sbx_config *config = NULL;

	ck_assert_int_eq(sbx_config_load(temp_dir, &config, &error), -1);
	ck_assert_ptr_null(config);
	ck_assert_ptr_nonnull(strstr(error.message, "not a regular file"));
}
END_TEST

/* The repository root: $SBX_SOURCE_DIR, the working directory, or two levels above the test
 * binary (build/tests/test_config). */
static char *find_source_dir(void)
{
	const char *from_environment = getenv("SBX_SOURCE_DIR");
	char exe[PATH_MAX], probe[PATH_MAX + 32];
	ssize_t length;

	if (from_environment != NULL && from_environment[0] != '\0')
		return strdup(from_environment);
	if (access("config-examples", F_OK) == 0)
		return realpath(".", NULL);
	length = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (length <= 0)
		return NULL;
	exe[length] = '\0';
	for (int up = 0; up < 3; up++) {
		char *slash = strrchr(exe, '/');

		if (slash == NULL)
			return NULL;
		*slash = '\0';
		snprintf(probe, sizeof(probe), "%s/config-examples", exe);
		if (access(probe, F_OK) == 0)
			return strdup(exe);
	}
	return NULL;
}

START_TEST(examples_load)
{
	char *source = find_source_dir();
	char *examples;
	DIR *dir;
	struct dirent *entry;
	int loaded = 0;
	int has_default = 0;

	ck_assert_msg(source != NULL, "cannot find config-examples/; set SBX_SOURCE_DIR");
	ck_assert_int_ge(asprintf(&examples, "%s/config-examples", source), 0);
	dir = opendir(examples);
	ck_assert_msg(dir != NULL, "cannot open %s", examples);
	while ((entry = readdir(dir)) != NULL) {
		size_t length = strlen(entry->d_name);
		struct sbx_error error = { 0 };
		struct sbx_config *config = NULL;
		char *path;

		/* Kubernetes manifests (k8s-*.yaml) are not sbx configuration files. */
		if (length < 6 || strcmp(entry->d_name + length - 5, ".yaml") != 0 ||
		    strncmp(entry->d_name, "k8s-", 4) == 0)
			continue;
		ck_assert_int_ge(asprintf(&path, "%s/%s", examples, entry->d_name), 0);
		ck_assert_msg(sbx_config_load(path, &config, &error) == 0, "%s", error.message);
		ck_assert_str_eq(config->path, path);
		if (strcmp(entry->d_name, "config.yaml") == 0)
			has_default = 1;
		sbx_config_free(config);
		free(path);
		loaded++;
	}
	closedir(dir);
	ck_assert_msg(has_default, "config-examples/config.yaml is missing");
	ck_assert_int_ge(loaded, 2);
	free(examples);
	free(source);
}
END_TEST

START_TEST(default_path_lookup_order)
{
	/* Under CK_FORK=no (valgrind) the tests share one process, so this test ends with
	 * SBX_CONFIG unset. */
	ck_assert_int_eq(setenv("SBX_CONFIG", "/from/environment.yaml", 1), 0);
	ck_assert_str_eq(sbx_config_default_path("/explicit.yaml"), "/explicit.yaml");
	ck_assert_str_eq(sbx_config_default_path(NULL), "/from/environment.yaml");

	ck_assert_int_eq(setenv("SBX_CONFIG", "", 1), 0);
	if (access(SBX_SYSCONFDIR "/sbx/config.yaml", F_OK) == 0)
		ck_assert_str_eq(sbx_config_default_path(NULL), SBX_SYSCONFDIR "/sbx/config.yaml");
	else
		ck_assert_ptr_null(sbx_config_default_path(NULL));

	ck_assert_int_eq(unsetenv("SBX_CONFIG"), 0);
	if (access(SBX_SYSCONFDIR "/sbx/config.yaml", F_OK) != 0)
		ck_assert_ptr_null(sbx_config_default_path(NULL));
}
END_TEST

START_TEST(sbx_config_env_file_loads)
{
	struct sbx_error error = { 0 };
	struct sbx_config *config = NULL;
	char *path = write_config("env.yaml", "shell: sh\nlocal:\n  pids_max: 77\n");

	ck_assert_int_eq(setenv("SBX_CONFIG", path, 1), 0);
	ck_assert_int_eq(sbx_config_load(sbx_config_default_path(NULL), &config, &error), 0);
	ck_assert_str_eq(config->path, path);
	ck_assert_str_eq(config->shell, "sh");
	ck_assert_uint_eq(config->local.pids_max, 77);
	sbx_config_free(config);
	free(path);
	unsetenv("SBX_CONFIG");
}
END_TEST

START_TEST(state_dir_choice)
{
	struct sbx_config *config = load_text("state_dir: /srv/sbx-state\n");
	char *dir;

	dir = sbx_config_state_dir(config);
	ck_assert_str_eq(dir, "/srv/sbx-state");
	free(dir);
	sbx_config_free(config);

	dir = sbx_config_state_dir(NULL);
	ck_assert_ptr_nonnull(dir);
	if (geteuid() == 0) {
		ck_assert_str_eq(dir, "/var/lib/sbx");
	} else {
		ck_assert_int_eq(dir[0], '/');
		ck_assert_ptr_nonnull(strstr(dir, "sbx"));
	}
	free(dir);
}
END_TEST

/* The non-root branch runs in a child that drops to an unprivileged uid. */
START_TEST(state_dir_unprivileged)
{
	pid_t pid;
	int status;

	if (geteuid() != 0)
		return;
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		char *dir;
		int ok;

		if (setresuid(65534, 65534, 65534) < 0)
			_exit(10);
		setenv("XDG_STATE_HOME", "/xdg/state", 1);
		dir = sbx_config_state_dir(NULL);
		if (dir == NULL || strcmp(dir, "/xdg/state/sbx") != 0)
			_exit(11);
		free(dir);
		/* The XDG specification requires a relative XDG_STATE_HOME to be ignored. */
		setenv("XDG_STATE_HOME", "relative", 1);
		setenv("HOME", "/home/runner", 1);
		dir = sbx_config_state_dir(NULL);
		ok = dir != NULL && strcmp(dir, "/home/runner/.local/state/sbx") == 0;
		free(dir);
		_exit(ok ? 0 : 12);
	}
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d", status);
}
END_TEST

static Suite *config_suite(void)
{
	Suite *suite = suite_create("config");
	TCase *tc = tcase_create("load");

	tcase_add_checked_fixture(tc, make_temp_dir, remove_temp_dir);
	tcase_add_test(tc, load_null_gives_defaults);
	tcase_add_test(tc, load_empty_file_gives_defaults);
	tcase_add_test(tc, load_full_file);
	tcase_add_test(tc, load_sets_path);
	tcase_add_test(tc, load_null_values_keep_defaults);
	tcase_add_test(tc, cpu_max_decimals);
	tcase_add_test(tc, images_find_exact_then_longest_prefix);
	tcase_add_loop_test(tc, invalid_config_rejected, 0, (int) SBX_ARRAY_SIZE(invalid_cases));
	tcase_add_test(tc, missing_file_names_path);
	tcase_add_test(tc, world_writable_file_rejected);
	tcase_add_test(tc, directory_rejected);
	tcase_add_test(tc, examples_load);
	tcase_add_test(tc, default_path_lookup_order);
	tcase_add_test(tc, sbx_config_env_file_loads);
	tcase_add_test(tc, state_dir_choice);
	tcase_add_test(tc, state_dir_unprivileged);
	suite_add_tcase(suite, tc);
	return suite;
}

int main(void)
{
	SRunner *runner = srunner_create(config_suite());
	int failed;

	srunner_run_all(runner, CK_NORMAL);
	failed = srunner_ntests_failed(runner);
	srunner_free(runner);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
