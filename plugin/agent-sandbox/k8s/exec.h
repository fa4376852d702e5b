/* SPDX-License-Identifier: MIT */
/*
 * Pod exec over WebSocket, offering v5.channel.k8s.io then v4.channel.k8s.io.
 *
 * The exit code comes only from the status channel: Success is 0, Failure with reason
 * NonZeroExitCode carries the code. Any other status, and a connection that ends without a
 * status, is a system failure: the command may or may not have run.
 *
 * stdin: v5 closes stdin with the message [255, 0]; v4 cannot signal the end of stdin at
 * all. Three modes:
 *  - K8S_EXEC_STDIN_NONE: no stdin (the command reads EOF).
 *  - K8S_EXEC_STDIN_STREAM: send the source until EOF, then close stdin. Needs v5: on a v4
 *    connection the call fails before it sends any stdin, but the server has started the
 *    command at the upgrade, and it runs on with a stdin that never ends.
 *  - K8S_EXEC_STDIN_COUNTED: the length is known in advance; the command runs as
 *    `sh -c 'head -c N | "$@"' sh ARGV...`, so the remote side stops reading after exactly N
 *    bytes and the command reads EOF on both protocols (on v5 [255, 0] follows as well). The
 *    image needs sh and head (coreutils or busybox).
 *  - K8S_EXEC_STDIN_EXACT: the length is known in advance and the command itself stops
 *    reading after exactly N bytes, so no wrapper is added. v5 closes stdin after N bytes.
 *    On v4 stdin stays open, so a command that reads more waits forever.
 *
 * Flow control: stdin is read from its descriptor only when the previous chunk has been
 * framed for sending. Output waits in a bounded queue. Reading from the socket stops when
 * the queue is half full and resumes when it is a quarter full.
 */
#ifndef SBX_K8S_EXEC_H
#define SBX_K8S_EXEC_H

#include <stddef.h>
#include <stdint.h>

#include "sbx/executor.h"

#include "rest.h"

enum k8s_exec_stdin_mode {
	K8S_EXEC_STDIN_NONE = 0,
	K8S_EXEC_STDIN_STREAM = 1,
	K8S_EXEC_STDIN_COUNTED = 2,
	K8S_EXEC_STDIN_EXACT = 3,
};

struct k8s_exec_options {
	const char *namespace;
	const char *pod;
	const char *container; /* NULL when the pod has one container */
	const char *const *argv; /* NULL-terminated; no shell splitting */

	enum k8s_exec_stdin_mode stdin_mode;
	/* stdin source: STDIN_DATA (STDIN_LENGTH bytes) when not NULL, else STDIN_FD. */
	const void *stdin_data;
	int stdin_fd;
	/* COUNTED and EXACT: the exact number of bytes the command gets. */
	uint64_t stdin_length;

	int stdout_fd; /* -1 discards */
	int stderr_fd; /* -1 discards */
	/* When readable, the call stops and fails with SBX_ERROR_CANCELLED; -1 for none. The
	 * remote process is not killed by closing the connection. */
	int cancel_fd;

	int64_t deadline_ms; /* absolute sbx_monotonic_ms(); 0 for none */
	int ping_interval_ms; /* 0: 5000 */
	int idle_timeout_ms; /* no data and no pong for this long fails the call; 0: 61000 */
	size_t output_queue_max; /* bytes of output waiting for the sinks; 0: 1 MiB */
};

struct k8s_exec_result {
	int exit_code;
	/* The negotiated subprotocol, "v5.channel.k8s.io" or "v4.channel.k8s.io". */
	char protocol[32];
	uint64_t stdout_bytes;
	uint64_t stderr_bytes;
	/* Largest number of output bytes that waited in the queue at one time. */
	size_t output_queue_peak;
};

/*
 * Runs OPTIONS->argv in the pod. Returns 0 when the command's status arrived with an exit
 * code (RESULT filled), -1 otherwise: SBX_ERROR_CANCELLED after the cancel descriptor fired,
 * SBX_ERROR_NOT_FOUND when the pod does not exist, SBX_ERROR_SYSTEM for everything else.
 */
int k8s_exec_run(struct k8s_client *client, const struct k8s_exec_options *options,
		 struct k8s_exec_result *result, struct sbx_error *error);

/* Builds the exec path with its query (each argv element a separate command= parameter). */
int k8s_exec_build_path(const struct k8s_config *config, const struct k8s_exec_options *options,
			char **path, struct sbx_error *error);

#endif /* SBX_K8S_EXEC_H */
