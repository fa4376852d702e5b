/* SPDX-License-Identifier: MIT */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "log.h"

static sbx_log_fn log_sink;
static void *log_userdata;
static enum sbx_log_level log_max_level = SBX_LOG_INFO;

void sbx_log_set_sink(sbx_log_fn sink, void *userdata, enum sbx_log_level max_level)
{
	log_sink = sink;
	log_userdata = userdata;
	log_max_level = max_level;
}

int sbx_log_enabled(enum sbx_log_level level)
{
	return log_sink != NULL && level <= log_max_level;
}

void sbx_log(enum sbx_log_level level, const char *format, ...)
{
	char line[2048];
	va_list args;
	size_t length;

	if (!sbx_log_enabled(level))
		return;
	va_start(args, format);
	vsnprintf(line, sizeof(line), format, args);
	va_end(args);

	/* One line per call: the sink adds its own newline. */
	length = strlen(line);
	while (length > 0 && line[length - 1] == '\n')
		line[--length] = '\0';
	log_sink(log_userdata, level, line);
}
