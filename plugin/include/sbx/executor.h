/* SPDX-License-Identifier: MIT */
/*
 * sbx executor plugin ABI, version 1.
 *
 * A host (the `sbx` command, or any program that runs CI steps) loads an executor plugin with
 * dlopen(), looks up SBX_EXECUTOR_ENTRY_SYMBOL and calls it with the ABI version it speaks.
 * The plugin returns its operations table only if it speaks that version.
 *
 * Rules every plugin and host follow:
 *  - Every struct that crosses the boundary starts with `struct_size`, which the side that fills
 *    the struct sets to sizeof() as that side was compiled. Structs only ever grow at the end, so a reader
 *    takes a field only when `struct_size` covers it (SBX_HAS_FIELD).
 *  - Calls return 0 on success or -1 on failure. On failure they fill the caller's struct
 *    sbx_error with a class and a message that names the value and the fix.
 *  - A plugin never exits, never aborts, never writes to stdout or stderr on its own: it logs
 *    through the host's callback.
 *  - A sandbox is addressed by an id the host chose (SBX_ID_MAX, characters [a-z0-9-]), so a
 *    later process can exec in it or destroy it.
 *  - Secrets the host passes in (environment values, scripts) are never logged by the plugin.
 */
#ifndef SBX_EXECUTOR_H
#define SBX_EXECUTOR_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SBX_EXECUTOR_ABI_VERSION 1u
#define SBX_EXECUTOR_ENTRY_SYMBOL "sbx_executor_entry"

/* Maximum length of a sandbox id, without the terminating NUL; it is a valid Kubernetes name. */
#define SBX_ID_MAX 63
#define SBX_ERROR_MESSAGE_MAX 1024

/* True when a struct filled by the other side is large enough to contain FIELD. */
#define SBX_HAS_FIELD(ptr, type, field) \
	((ptr)->struct_size >= offsetof(type, field) + sizeof(((type *) 0)->field))

enum sbx_error_class {
	SBX_ERROR_NONE = 0,
	/* The job cannot succeed as configured (e.g. its image is rejected); retrying does not help. */
	SBX_ERROR_BUILD = 1,
	/* The backend failed: a sandbox could not be made, reached or read. */
	SBX_ERROR_SYSTEM = 2,
	/* The host's cancel descriptor fired and the operation stopped. */
	SBX_ERROR_CANCELLED = 3,
	/* The sandbox id is not in this backend's journal. */
	SBX_ERROR_NOT_FOUND = 4,
	/* A value the caller or the configuration passed is invalid. */
	SBX_ERROR_INVALID = 5,
	/* The host and the plugin speak different ABI versions. */
	SBX_ERROR_ABI = 6,
};

struct sbx_error {
	uint32_t struct_size;
	int32_t error_class; /* enum sbx_error_class */
	char message[SBX_ERROR_MESSAGE_MAX];
};

enum sbx_log_level {
	SBX_LOG_ERROR = 0,
	SBX_LOG_WARNING = 1,
	SBX_LOG_INFO = 2,
	SBX_LOG_DEBUG = 3,
};

/* Log callback from the host. MESSAGE is one line without a trailing newline. */
typedef void (*sbx_log_fn)(void *userdata, enum sbx_log_level level, const char *message);

struct sbx_host {
	uint32_t struct_size;
	sbx_log_fn log;
	void *log_userdata;
	/* Most verbose level the host wants to receive. */
	int32_t log_level;
};

struct sbx_open_options {
	uint32_t struct_size;
	/* Path of the sbx YAML configuration file, or NULL for built-in defaults. */
	const char *config_path;
	/* Directory for the state journal; NULL picks the configured or default one. */
	const char *state_dir;
};

/* Owner of a sandbox, recorded so that `sbx gc` and operators can tell jobs apart. */
struct sbx_owner {
	uint32_t struct_size;
	const char *runner; /* e.g. the runner's short token; may be NULL */
	const char *project; /* project id; may be NULL */
	const char *pipeline; /* pipeline id; may be NULL */
	const char *job; /* job id; may be NULL */
};

struct sbx_job_spec {
	uint32_t struct_size;
	/* Id the host chose for this sandbox (one per prepare attempt). */
	const char *id;
	const struct sbx_owner *owner;
	/* Job image name, or NULL when the job names none. */
	const char *image;
	/* Project path used to key the cache directory (e.g. "group/project"); may be NULL. */
	const char *project_path;
	/* Non-zero when the job runs for a protected ref; such jobs get their own cache. */
	int32_t protected_ref;
	/* Job timeout in seconds; 0 means the configured default. */
	int64_t timeout_seconds;
	/* URL of the CI server; its host is allowed for runner stages unless configured off. */
	const char *ci_server_url;
	/* Allow-list entries added to both network profiles of this sandbox, NULL-terminated;
	 * may be NULL. */
	const char *const *extra_allow;
};

enum sbx_network_profile {
	/* Stages that run user code: the user-stage allow-list. */
	SBX_NETWORK_USER = 0,
	/* Stages the CI system generates (sources, cache, artifacts): the runner-stage list. */
	SBX_NETWORK_RUNNER = 1,
};

struct sbx_exec_spec {
	uint32_t struct_size;
	const char *id;
	/*
	 * The command: either ARGV (NULL-terminated, argv[0] looked up in the sandbox's PATH),
	 * or SCRIPT bytes run by SHELL ("bash" or "sh"). The script is handed to the shell as a
	 * file descriptor, never on a command line.
	 */
	const char *const *argv;
	const void *script;
	size_t script_length;
	const char *shell;
	/* Extra environment, "NAME=value" strings, NULL-terminated; may be NULL. */
	const char *const *envp;
	/* Working directory inside the sandbox; NULL means the builds directory. */
	const char *cwd;
	/* Descriptors of the host; -1 for stdin means an empty input. */
	int32_t stdin_fd;
	int32_t stdout_fd;
	int32_t stderr_fd;
	int32_t network_profile; /* enum sbx_network_profile */
	/*
	 * When this descriptor becomes readable the plugin stops the step's processes, leaves the
	 * sandbox in place and returns SBX_ERROR_CANCELLED. -1 means no cancellation.
	 */
	int32_t cancel_fd;
	/* Seconds after which the step is stopped and the call fails; 0 means no limit. */
	int64_t timeout_seconds;
};

enum sbx_sandbox_state {
	SBX_SANDBOX_UNKNOWN = 0,
	SBX_SANDBOX_PREPARING = 1,
	SBX_SANDBOX_READY = 2,
	/* The journal names it but its processes are gone (e.g. after a reboot). */
	SBX_SANDBOX_DEAD = 3,
};

struct sbx_sandbox_info {
	uint32_t struct_size;
	const char *id;
	const char *backend;
	int32_t state; /* enum sbx_sandbox_state */
	int64_t created; /* Unix time, seconds */
	int64_t deadline; /* Unix time after which nothing may still run in it */
	const struct sbx_owner *owner;
};

/* Called once per sandbox by list(); a non-zero return stops the listing. */
typedef int (*sbx_list_fn)(void *userdata, const struct sbx_sandbox_info *info);

enum sbx_check_status {
	SBX_CHECK_OK = 0,
	SBX_CHECK_WARNING = 1,
	SBX_CHECK_FAILED = 2,
};

/* Called once per prerequisite by check(). FIX is NULL when there is nothing to do. */
typedef void (*sbx_check_fn)(void *userdata, enum sbx_check_status status, const char *name,
			     const char *detail, const char *fix);

struct sbx_executor;

struct sbx_executor_ops {
	uint32_t struct_size;
	uint32_t abi_version;
	const char *backend_name;
	const char *backend_version;

	int (*open)(const struct sbx_host *host, const struct sbx_open_options *options,
		    struct sbx_executor **executor, struct sbx_error *error);
	void (*close)(struct sbx_executor *executor);

	/* Creates the sandbox SPEC->id and returns when it is ready for exec(). */
	int (*prepare)(struct sbx_executor *executor, const struct sbx_job_spec *spec,
		       struct sbx_error *error);

	/*
	 * Runs one step. Returns 0 when the step ran to its end, with its status in EXIT_STATUS
	 * (0-255, or 128 + signal number when a signal ended it). Returns -1 when the status
	 * cannot be had: SBX_ERROR_CANCELLED after the cancel descriptor fired, SBX_ERROR_SYSTEM
	 * otherwise. A status that cannot be had is never reported as a success.
	 */
	int (*exec)(struct sbx_executor *executor, const struct sbx_exec_spec *spec,
		    int *exit_status, struct sbx_error *error);

	/* Destroys the sandbox and everything made for it. Destroying what is gone succeeds. */
	int (*destroy)(struct sbx_executor *executor, const char *id, struct sbx_error *error);

	/* Lists the sandboxes in this backend's journal, for garbage collection. */
	int (*list)(struct sbx_executor *executor, sbx_list_fn callback, void *userdata,
		    struct sbx_error *error);

	/* Checks the backend's prerequisites; returns -1 when one of them failed. */
	int (*check)(struct sbx_executor *executor, sbx_check_fn callback, void *userdata,
		     struct sbx_error *error);
};

/*
 * The entry point. HOST_ABI_VERSION is SBX_EXECUTOR_ABI_VERSION as the host was compiled.
 * On success *OPS points to a static table whose abi_version equals HOST_ABI_VERSION. On a
 * version the plugin does not speak it returns -1 with SBX_ERROR_ABI.
 */
typedef int (*sbx_executor_entry_fn)(uint32_t host_abi_version,
				     const struct sbx_executor_ops **ops, struct sbx_error *error);

#if defined(__GNUC__)
#define SBX_EXPORT __attribute__((visibility("default")))
#else
#define SBX_EXPORT
#endif

SBX_EXPORT int sbx_executor_entry(uint32_t host_abi_version, const struct sbx_executor_ops **ops,
				  struct sbx_error *error);

#ifdef __cplusplus
}
#endif

#endif /* SBX_EXECUTOR_H */
