/* SPDX-License-Identifier: MIT */
/*
 * Logging inside a plugin goes through the host's callback only. The shim installs its own
 * sink with the same function.
 */
#ifndef SBX_LOG_H
#define SBX_LOG_H

#include "sbx/executor.h"

void sbx_log_set_sink(sbx_log_fn sink, void *userdata, enum sbx_log_level max_level);
void sbx_log(enum sbx_log_level level, const char *format, ...)
	__attribute__((format(printf, 2, 3)));
int sbx_log_enabled(enum sbx_log_level level);

#define sbx_error_log(...) sbx_log(SBX_LOG_ERROR, __VA_ARGS__)
#define sbx_warning(...) sbx_log(SBX_LOG_WARNING, __VA_ARGS__)
#define sbx_info(...) sbx_log(SBX_LOG_INFO, __VA_ARGS__)
#define sbx_debug(...) sbx_log(SBX_LOG_DEBUG, __VA_ARGS__)

#endif /* SBX_LOG_H */
