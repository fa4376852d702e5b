/* SPDX-License-Identifier: MIT */
/*
 * A command-line driver of the Kubernetes client for the integration tests:
 *
 *   k8s_client_tool [OPTIONS] get PATH
 *   k8s_client_tool [OPTIONS] list PATH [LABEL_SELECTOR [FIELD_SELECTOR]]
 *   k8s_client_tool [OPTIONS] create|merge-patch|apply|apply-force PATH JSON
 *   k8s_client_tool [OPTIONS] delete PATH [PROPAGATION_POLICY]
 *   k8s_client_tool [OPTIONS] watch PATH EVENTS [RESOURCE_VERSION]
 *   k8s_client_tool [OPTIONS] exec NAMESPACE POD -- ARGV...
 *
 * Options: --kubeconfig FILE, --context NAME, --in-cluster DIR, --cache-dir DIR, --debug,
 * --timeout-ms N, --backoff-ms N; for exec also --stdin-mode none|stream|counted,
 * --stdin-file FILE (counted takes its size), --stdin-text TEXT, --output-queue BYTES,
 * --ping-ms N, --idle-ms N, --cancel-fd N, --result FILE (JSON summary).
 *
 * REST results go to stdout as JSON; failures print one line "error: CLASS HTTP: MESSAGE" on
 * stderr and exit 1. The watch prints "EVENT TYPE NAME RESOURCEVERSION" lines and a final
 * "RV <version>", relisting PATH on 410.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>

#include "error.h"
#include "log.h"
#include "util.h"
#include "k8s/exec.h"
#include "k8s/kubeconfig.h"
#include "k8s/rest.h"
#include "k8s/watch.h"

struct tool {
	struct k8s_client *client;
	const char *path;
	int64_t deadline;
	long events_wanted;
	long events_seen;
	int relists;
};

static void log_to_stderr(void *userdata, enum sbx_log_level level, const char *message)
{
	static const char *const names[] = { "error", "warning", "info", "debug" };

	fprintf(stderr, "sbx: %s: %s\n", names[level], message);
}

static int fail(const struct k8s_status *status, const struct sbx_error *error)
{
	fprintf(stderr, "error: %s %ld: %s\n",
		status != NULL ? k8s_status_class_name(status->status_class) : "-",
		status != NULL ? status->http_code : 0L, error->message);
	return 1;
}

static int print_object(struct json_object *object)
{
	printf("%s\n", json_object_to_json_string_ext(object, JSON_C_TO_STRING_PLAIN));
	json_object_put(object);
	return 0;
}

static const char *object_field(struct json_object *object, const char *section,
				const char *key)
{
	struct json_object *metadata, *value;

	if (!json_object_object_get_ex(object, section, &metadata) ||
	    !json_object_object_get_ex(metadata, key, &value))
		return "-";
	return json_object_get_string(value);
}

static int on_event(void *userdata, const char *type, struct json_object *object,
		    struct sbx_error *error)
{
	struct tool *tool = userdata;

	printf("EVENT %s %s %s\n", type, object_field(object, "metadata", "name"),
	       object_field(object, "metadata", "resourceVersion"));
	fflush(stdout);
	tool->events_seen++;
	return tool->events_seen >= tool->events_wanted ? 1 : 0;
}

static int relist(void *userdata, char **resource_version, struct sbx_error *error)
{
	struct tool *tool = userdata;
	struct json_object *list = NULL;
	struct k8s_status status;
	const char *version;

	if (k8s_rest_list(tool->client, tool->path, NULL, tool->deadline, &list, &status,
			  error) < 0)
		return -1;
	version = object_field(list, "metadata", "resourceVersion");
	tool->relists++;
	printf("RELIST %s\n", version);
	fflush(stdout);
	*resource_version = strdup(version);
	json_object_put(list);
	return *resource_version != NULL ? 0 : -1;
}

static int parse_json(const char *text, struct json_object **object)
{
	*object = json_tokener_parse(text);
	if (*object == NULL) {
		fprintf(stderr, "error: invalid JSON argument\n");
		return -1;
	}
	return 0;
}

static int write_result(const char *path, const struct k8s_exec_result *result, int ret,
			const struct sbx_error *error)
{
	struct json_object *root = json_object_new_object();
	struct rusage usage;
	FILE *f;

	getrusage(RUSAGE_SELF, &usage);
	json_object_object_add(root, "ok", json_object_new_boolean(ret == 0));
	json_object_object_add(root, "exit_code", json_object_new_int(result->exit_code));
	json_object_object_add(root, "protocol", json_object_new_string(result->protocol));
	json_object_object_add(root, "stdout_bytes",
			       json_object_new_int64((int64_t) result->stdout_bytes));
	json_object_object_add(root, "stderr_bytes",
			       json_object_new_int64((int64_t) result->stderr_bytes));
	json_object_object_add(root, "queue_peak",
			       json_object_new_int64((int64_t) result->output_queue_peak));
	json_object_object_add(root, "maxrss_kb", json_object_new_int64(usage.ru_maxrss));
	json_object_object_add(root, "error_class",
			       json_object_new_string(ret == 0 ? "none"
							       : sbx_error_class_name(
									 error->error_class)));
	json_object_object_add(root, "error", json_object_new_string(ret == 0 ? ""
									     : error->message));
	f = fopen(path, "w");
	if (f == NULL) {
		json_object_put(root);
		return -1;
	}
	fprintf(f, "%s\n", json_object_to_json_string(root));
	fclose(f);
	json_object_put(root);
	return 0;
}

static int run_exec(struct tool *tool, int argc, char **argv, const char *stdin_mode,
		    const char *stdin_file, const char *stdin_text, size_t output_queue,
		    int ping_ms, int idle_ms, int cancel_fd, const char *result_path)
{
	struct k8s_exec_options options = {
		.stdin_fd = -1,
		.stdout_fd = 1,
		.stderr_fd = 2,
		.cancel_fd = cancel_fd,
		.deadline_ms = tool->deadline,
		.ping_interval_ms = ping_ms,
		.idle_timeout_ms = idle_ms,
		.output_queue_max = output_queue,
	};
	struct k8s_exec_result result;
	struct sbx_error error;
	int fd = -1, ret;

	if (argc < 4 || strcmp(argv[2], "--") != 0) {
		fprintf(stderr, "usage: exec NAMESPACE POD -- ARGV...\n");
		return 2;
	}
	options.namespace = argv[0];
	options.pod = argv[1];
	options.argv = (const char *const *) argv + 3;
	if (strcmp(stdin_mode, "stream") == 0)
		options.stdin_mode = K8S_EXEC_STDIN_STREAM;
	else if (strcmp(stdin_mode, "counted") == 0)
		options.stdin_mode = K8S_EXEC_STDIN_COUNTED;
	if (stdin_text != NULL) {
		options.stdin_data = stdin_text;
		options.stdin_length = strlen(stdin_text);
	} else if (stdin_file != NULL) {
		struct stat st;

		fd = open(stdin_file, O_RDONLY | O_CLOEXEC);
		if (fd < 0 || fstat(fd, &st) < 0) {
			perror(stdin_file);
			return 2;
		}
		options.stdin_fd = fd;
		options.stdin_length = (uint64_t) st.st_size;
	} else if (options.stdin_mode != K8S_EXEC_STDIN_NONE) {
		options.stdin_fd = 0;
	}

	sbx_error_clear(&error);
	ret = k8s_exec_run(tool->client, &options, &result, &error);
	if (fd >= 0)
		close(fd);
	if (result_path != NULL)
		write_result(result_path, &result, ret, &error);
	if (ret < 0) {
		fprintf(stderr, "error: %s: %s\n", sbx_error_class_name(error.error_class),
			error.message);
		return 1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct k8s_kubeconfig_options options = { 0 };
	struct k8s_in_cluster_options in_cluster = { 0 };
	const char *stdin_mode = "none", *stdin_file = NULL, *stdin_text = NULL;
	const char *result_path = NULL, *command;
	struct k8s_config *config = NULL;
	struct tool tool = { 0 };
	struct k8s_status status;
	struct sbx_error error;
	struct json_object *object = NULL, *body = NULL;
	int64_t timeout_ms = 30000, backoff_ms = -1;
	size_t output_queue = 0;
	int ping_ms = 0, idle_ms = 0, cancel_fd = -1, use_in_cluster = 0, i, ret = 1;

	for (i = 1; i < argc && strncmp(argv[i], "--", 2) == 0 && argv[i][2] != '\0'; i++) {
		const char *option = argv[i];

		if (strcmp(option, "--debug") == 0) {
			sbx_log_set_sink(log_to_stderr, NULL, SBX_LOG_DEBUG);
			continue;
		}
		if (i + 1 >= argc) {
			fprintf(stderr, "option %s needs a value\n", option);
			return 2;
		}
		if (strcmp(option, "--kubeconfig") == 0)
			options.path = argv[++i];
		else if (strcmp(option, "--context") == 0)
			options.context = argv[++i];
		else if (strcmp(option, "--cache-dir") == 0)
			options.credential_cache_dir = argv[++i];
		else if (strcmp(option, "--in-cluster") == 0) {
			in_cluster.serviceaccount_dir = argv[++i];
			use_in_cluster = 1;
		} else if (strcmp(option, "--timeout-ms") == 0)
			timeout_ms = strtoll(argv[++i], NULL, 10);
		else if (strcmp(option, "--backoff-ms") == 0)
			backoff_ms = strtoll(argv[++i], NULL, 10);
		else if (strcmp(option, "--stdin-mode") == 0)
			stdin_mode = argv[++i];
		else if (strcmp(option, "--stdin-file") == 0)
			stdin_file = argv[++i];
		else if (strcmp(option, "--stdin-text") == 0)
			stdin_text = argv[++i];
		else if (strcmp(option, "--output-queue") == 0)
			output_queue = (size_t) strtoull(argv[++i], NULL, 10);
		else if (strcmp(option, "--ping-ms") == 0)
			ping_ms = atoi(argv[++i]);
		else if (strcmp(option, "--idle-ms") == 0)
			idle_ms = atoi(argv[++i]);
		else if (strcmp(option, "--cancel-fd") == 0)
			cancel_fd = atoi(argv[++i]);
		else if (strcmp(option, "--result") == 0)
			result_path = argv[++i];
		else {
			fprintf(stderr, "unknown option %s\n", option);
			return 2;
		}
	}
	if (i + 1 >= argc) {
		fprintf(stderr, "usage: k8s_client_tool [OPTIONS] COMMAND ARGS...\n");
		return 2;
	}
	command = argv[i];
	tool.path = argv[i + 1];

	sbx_error_clear(&error);
	if ((use_in_cluster ? k8s_kubeconfig_in_cluster(&in_cluster, &config, &error)
			    : k8s_kubeconfig_load(&options, &config, &error)) < 0)
		return fail(NULL, &error);
	if (k8s_client_new(config, &tool.client, &error) < 0) {
		k8s_kubeconfig_free(config);
		return fail(NULL, &error);
	}
	if (backoff_ms >= 0)
		k8s_client_set_backoff(tool.client, backoff_ms, backoff_ms * 8);
	tool.deadline = sbx_monotonic_ms() + timeout_ms;
	memset(&status, 0, sizeof(status));

	if (strcmp(command, "get") == 0) {
		ret = k8s_rest_get(tool.client, tool.path, tool.deadline, &object, &status, &error);
	} else if (strcmp(command, "list") == 0) {
		struct k8s_list_options list = {
			.label_selector = i + 2 < argc ? argv[i + 2] : NULL,
			.field_selector = i + 3 < argc ? argv[i + 3] : NULL,
		};

		ret = k8s_rest_list(tool.client, tool.path, &list, tool.deadline, &object, &status,
				    &error);
	} else if (strcmp(command, "create") == 0 || strcmp(command, "merge-patch") == 0 ||
		   strcmp(command, "apply") == 0 || strcmp(command, "apply-force") == 0) {
		if (i + 2 >= argc || parse_json(argv[i + 2], &body) < 0) {
			ret = 2;
			goto out;
		}
		if (strcmp(command, "create") == 0)
			ret = k8s_rest_create(tool.client, tool.path, body, tool.deadline, &object,
					      &status, &error);
		else if (strcmp(command, "merge-patch") == 0)
			ret = k8s_rest_merge_patch(tool.client, tool.path, body, tool.deadline,
						   &object, &status, &error);
		else
			ret = k8s_rest_apply(tool.client, tool.path, body,
					     strcmp(command, "apply-force") == 0, tool.deadline,
					     &object, &status, &error);
	} else if (strcmp(command, "delete") == 0) {
		ret = k8s_rest_delete(tool.client, tool.path, i + 2 < argc ? argv[i + 2] : NULL,
				      tool.deadline, &object, &status, &error);
	} else if (strcmp(command, "watch") == 0) {
		struct k8s_watch_options watch = {
			.path = tool.path,
			.resource_version = i + 3 < argc ? argv[i + 3] : NULL,
			.timeout_seconds = 5,
			.deadline_ms = tool.deadline,
		};
		struct k8s_watch_callbacks callbacks = { .event = on_event, .relist = relist };
		char *last = NULL;

		tool.events_wanted = i + 2 < argc ? strtol(argv[i + 2], NULL, 10) : 1;
		ret = k8s_watch_run(tool.client, &watch, &callbacks, &tool, &last, &status, &error);
		if (ret == 0)
			printf("RV %s\n", last != NULL ? last : "");
		free(last);
		if (ret < 0)
			ret = fail(&status, &error);
		goto out;
	} else if (strcmp(command, "exec") == 0) {
		ret = run_exec(&tool, argc - i - 1, argv + i + 1, stdin_mode, stdin_file,
			       stdin_text, output_queue, ping_ms, idle_ms, cancel_fd, result_path);
		goto out;
	} else {
		fprintf(stderr, "unknown command %s\n", command);
		ret = 2;
		goto out;
	}
	if (ret < 0)
		ret = fail(&status, &error);
	else
		ret = print_object(object);
out:
	if (body != NULL)
		json_object_put(body);
	k8s_client_free(tool.client);
	k8s_kubeconfig_free(config);
	return ret;
}
