/* SPDX-License-Identifier: MIT */
#ifndef SBX_ERROR_H
#define SBX_ERROR_H

#include <stdarg.h>

#include "sbx/executor.h"

/* Fills ERROR (if not NULL) and returns -1, so callers can write `return sbx_error_set(...)`. */
int sbx_error_set(struct sbx_error *error, enum sbx_error_class error_class, const char *format,
		  ...) __attribute__((format(printf, 3, 4)));
int sbx_error_setv(struct sbx_error *error, enum sbx_error_class error_class, const char *format,
		   va_list args) __attribute__((format(printf, 3, 0)));
/* Like sbx_error_set() and appends ": strerror(ERRNUM)". */
int sbx_error_errno(struct sbx_error *error, int errnum, const char *format, ...)
	__attribute__((format(printf, 3, 4)));
/* Prepends "PREFIX: " to the message already in ERROR; returns -1. */
int sbx_error_prefix(struct sbx_error *error, const char *format, ...)
	__attribute__((format(printf, 2, 3)));
void sbx_error_clear(struct sbx_error *error);
const char *sbx_error_class_name(enum sbx_error_class error_class);

#endif /* SBX_ERROR_H */
