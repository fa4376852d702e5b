/* SPDX-License-Identifier: MIT */
/*
 * A plugin of a future ABI version 2, for testing how sbx reports a version mismatch. With
 * SBX_FAKE_BAD_ABI_MODE=table its entry accepts any version and returns a table of
 * version 2. Otherwise it rejects every version but 2, as a well-behaved plugin would.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sbx/executor.h"

#define FUTURE_ABI_VERSION 2u

static const struct sbx_executor_ops future_ops = {
	.struct_size = sizeof(struct sbx_executor_ops),
	.abi_version = FUTURE_ABI_VERSION,
	.backend_name = "local",
	.backend_version = "future",
};

SBX_EXPORT int sbx_executor_entry(uint32_t host_abi_version, const struct sbx_executor_ops **ops,
				  struct sbx_error *error)
{
	const char *mode = getenv("SBX_FAKE_BAD_ABI_MODE");

	if ((mode != NULL && strcmp(mode, "table") == 0) ||
	    host_abi_version == FUTURE_ABI_VERSION) {
		*ops = &future_ops;
		return 0;
	}
	error->struct_size = sizeof(*error);
	error->error_class = SBX_ERROR_ABI;
	snprintf(error->message, sizeof(error->message),
		 "this plugin speaks ABI version %u, the host speaks %u", FUTURE_ABI_VERSION,
		 host_abi_version);
	return -1;
}
