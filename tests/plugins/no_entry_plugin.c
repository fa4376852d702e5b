/* SPDX-License-Identifier: MIT */
/* A shared object without the plugin entry symbol, for testing sbx's "not a plugin" message. */
#include "sbx/executor.h"

SBX_EXPORT int sbx_some_other_symbol(void);

SBX_EXPORT int sbx_some_other_symbol(void)
{
	return 0;
}
