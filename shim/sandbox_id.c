/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "error.h"
#include "shim.h"
#include "util.h"

/* "j" + job id + "-" + 8 hex digits must fit SBX_ID_MAX. */
#define JOB_ID_MAX (SBX_ID_MAX - 10)

static int is_job_id(const char *text)
{
	size_t length;

	if (text == NULL)
		return 0;
	length = strlen(text);
	if (length == 0 || length > JOB_ID_MAX)
		return 0;
	return strspn(text, "0123456789") == length;
}

int sbx_sandbox_id_new(const char *job_id, char id[SBX_ID_MAX + 1], struct sbx_error *error)
{
	char random_hex[2 * 6 + 1];
	char buf[SBX_ID_MAX + 1];
	int length;

	if (is_job_id(job_id)) {
		if (sbx_random_hex(random_hex, 4) < 0)
			return sbx_error_errno(error, errno, "cannot make a sandbox id");
		length = snprintf(buf, sizeof(buf), "j%s-%s", job_id, random_hex);
	} else {
		if (sbx_random_hex(random_hex, 6) < 0)
			return sbx_error_errno(error, errno, "cannot make a sandbox id");
		length = snprintf(buf, sizeof(buf), "x-%s", random_hex);
	}
	if (length < 0 || (size_t) length >= sizeof(buf) || !sbx_id_valid(buf))
		return sbx_error_set(error, SBX_ERROR_SYSTEM, "cannot make a sandbox id for job %s",
				     job_id);
	memcpy(id, buf, (size_t) length + 1);
	return 0;
}
