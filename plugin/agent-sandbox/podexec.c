/* SPDX-License-Identifier: MIT */
/* Short commands in the job's pod whose output sbx reads itself. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "agent_sandbox.h"
#include "cleanup.h"
#include "error.h"
#include "podexec.h"

#include "k8s/exec.h"

#define CAPTURE_MAX (64u << 10)

void as_capture_clear(struct as_capture *capture)
{
	free(capture->out);
	free(capture->err);
	capture->out = NULL;
	capture->err = NULL;
}

static char *read_back(int fd)
{
	char *buf = malloc(CAPTURE_MAX + 1);
	ssize_t n;
	size_t used = 0;

	if (buf == NULL)
		return NULL;
	if (lseek(fd, 0, SEEK_SET) < 0) {
		free(buf);
		return NULL;
	}
	while (used < CAPTURE_MAX && (n = read(fd, buf + used, CAPTURE_MAX - used)) != 0) {
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			break;
		used += (size_t) n;
	}
	buf[used] = '\0';
	return buf;
}

int as_pod_exec_capture(struct sbx_executor *executor, const struct as_sandbox *sandbox,
			const char *const *argv, const void *stdin_data, size_t stdin_length,
			int64_t deadline_ms, struct as_capture *capture, struct sbx_error *error)
{
	_cleanup_close_ int out_fd = memfd_create("sbx-exec-stdout", MFD_CLOEXEC);
	_cleanup_close_ int err_fd = memfd_create("sbx-exec-stderr", MFD_CLOEXEC);
	struct k8s_exec_options options = {
		.namespace = sandbox->namespace,
		.pod = sandbox->pod,
		.container = sandbox->container,
		.argv = argv,
		.stdin_mode = stdin_data != NULL ? K8S_EXEC_STDIN_COUNTED : K8S_EXEC_STDIN_NONE,
		.stdin_data = stdin_data,
		.stdin_length = stdin_length,
		.stdin_fd = -1,
		.stdout_fd = out_fd,
		.stderr_fd = err_fd,
		.cancel_fd = -1,
		.deadline_ms = deadline_ms,
	};
	struct k8s_exec_result result;

	if (out_fd < 0 || err_fd < 0)
		return sbx_error_errno(error, errno, "cannot create a memfd for exec output");
	if (k8s_exec_run(executor->client, &options, &result, error) < 0)
		return -1;
	capture->exit_code = result.exit_code;
	capture->out = read_back(out_fd);
	capture->err = read_back(err_fd);
	if (capture->out == NULL || capture->err == NULL) {
		as_capture_clear(capture);
		return sbx_error_errno(error, ENOMEM, "exec output");
	}
	return 0;
}
