/* SPDX-License-Identifier: MIT */
#include <stdio.h>
#include <string.h>

#include "error.h"

int sbx_error_setv(struct sbx_error *error, enum sbx_error_class error_class, const char *format,
		   va_list args)
{
	if (error == NULL)
		return -1;
	error->struct_size = sizeof(*error);
	error->error_class = error_class;
	vsnprintf(error->message, sizeof(error->message), format, args);
	return -1;
}

int sbx_error_set(struct sbx_error *error, enum sbx_error_class error_class, const char *format,
		  ...)
{
	va_list args;

	va_start(args, format);
	sbx_error_setv(error, error_class, format, args);
	va_end(args);
	return -1;
}

int sbx_error_errno(struct sbx_error *error, int errnum, const char *format, ...)
{
	va_list args;
	size_t used;

	if (error == NULL)
		return -1;
	va_start(args, format);
	sbx_error_setv(error, SBX_ERROR_SYSTEM, format, args);
	va_end(args);
	used = strlen(error->message);
	snprintf(error->message + used, sizeof(error->message) - used, ": %s", strerror(errnum));
	return -1;
}

int sbx_error_prefix(struct sbx_error *error, const char *format, ...)
{
	char prefix[SBX_ERROR_MESSAGE_MAX];
	char old[SBX_ERROR_MESSAGE_MAX];
	va_list args;

	if (error == NULL)
		return -1;
	va_start(args, format);
	vsnprintf(prefix, sizeof(prefix), format, args);
	va_end(args);
	memcpy(old, error->message, sizeof(old));
	old[sizeof(old) - 1] = '\0';
	/* A message too long for the buffer is cut; the prefix always survives. */
	if (snprintf(error->message, sizeof(error->message), "%s: %s", prefix, old) < 0)
		error->message[0] = '\0';
	return -1;
}

void sbx_error_clear(struct sbx_error *error)
{
	if (error == NULL)
		return;
	error->struct_size = sizeof(*error);
	error->error_class = SBX_ERROR_NONE;
	error->message[0] = '\0';
}

const char *sbx_error_class_name(enum sbx_error_class error_class)
{
	switch (error_class) {
	case SBX_ERROR_NONE:
		return "none";
	case SBX_ERROR_BUILD:
		return "build failure";
	case SBX_ERROR_SYSTEM:
		return "system failure";
	case SBX_ERROR_CANCELLED:
		return "cancelled";
	case SBX_ERROR_NOT_FOUND:
		return "not found";
	case SBX_ERROR_INVALID:
		return "invalid input";
	case SBX_ERROR_ABI:
		return "ABI mismatch";
	}
	return "unknown";
}
