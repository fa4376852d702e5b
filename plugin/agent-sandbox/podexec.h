/* SPDX-License-Identifier: MIT */
/* Short commands in the job's pod whose output sbx reads itself. */
#ifndef SBX_AS_PODEXEC_H
#define SBX_AS_PODEXEC_H

#include <stddef.h>
#include <stdint.h>

#include "sbx/executor.h"

struct sbx_executor;
struct as_sandbox;

/* Output of a captured command, NUL-terminated; at most the first 64 KiB of each stream. */
struct as_capture {
	int exit_code;
	char *out;
	char *err;
};

void as_capture_clear(struct as_capture *capture);

/*
 * Runs ARGV in the sandbox's pod and container with STDIN_DATA (STDIN_LENGTH bytes, counted;
 * NULL for none) as its input and its output captured. Returns
 * 0 when the command ran to an exit code; errors are the k8s exec errors (NOT_FOUND for a pod
 * that is gone).
 */
int as_pod_exec_capture(struct sbx_executor *executor, const struct as_sandbox *sandbox,
			const char *const *argv, const void *stdin_data, size_t stdin_length,
			int64_t deadline_ms, struct as_capture *capture, struct sbx_error *error);

#endif /* SBX_AS_PODEXEC_H */
