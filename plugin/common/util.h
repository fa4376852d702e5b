/* SPDX-License-Identifier: MIT */
#ifndef SBX_UTIL_H
#define SBX_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "sbx/executor.h"

#define SBX_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Reads a whole file (at most MAX_BYTES) into a NUL-terminated buffer the caller frees. */
int sbx_read_file(const char *path, size_t max_bytes, char **data, size_t *length,
		  struct sbx_error *error);
/* Flags of sbx_write_file_atomic(). */
enum sbx_write_flags {
	/* fsync() the data before the rename, so that after a power loss PATH contains the old
	 * or the new content. Without it, a file system that may commit the rename before the
	 * data (XFS, or ext4 mounted with noauto_da_alloc) can leave PATH empty after a power
	 * loss. A crash of the process alone never loses the data. */
	SBX_WRITE_DURABLE = 1 << 0,
};

/* Writes DATA to PATH through a temporary file and rename(), with MODE. FLAGS is a mask of
 * enum sbx_write_flags. */
int sbx_write_file_atomic(const char *path, const void *data, size_t length, mode_t mode,
			  unsigned flags, struct sbx_error *error);
/* Writes all of BUF to FD, retrying on EINTR and short writes. Returns 0 or -1 with errno. */
int sbx_write_all(int fd, const void *buf, size_t length);
/* Writes a short string to a file such as a cgroup or /proc control file. */
int sbx_write_string(const char *path, const char *value);
/* Creates PATH and its parents with MODE; existing directories are fine. Returns 0 or -1/errno. */
int sbx_mkdir_p(const char *path, mode_t mode);
/* Removes PATH recursively without following symlinks or crossing mount points. */
int sbx_remove_tree(const char *path);

/* True when ID is a valid sandbox id: 1..SBX_ID_MAX characters of [a-z0-9-], starting with a
 * letter or digit. */
int sbx_id_valid(const char *id);
/* Fills BUF (at least 2*BYTES+1 long) with BYTES random bytes as lower-case hex. */
int sbx_random_hex(char *buf, size_t bytes);

/* Wall clock in seconds and monotonic clock in milliseconds. */
int64_t sbx_now(void);
int64_t sbx_monotonic_ms(void);

/*
 * Parses a size such as "1048576", "512M", "4G", "4gb" or "4GiB" into bytes: a whole number
 * with an optional K, M, G or T suffix (powers of 1024), optionally followed by i, B or iB, all
 * in either case. Returns 0 or -1.
 */
int sbx_parse_size(const char *text, uint64_t *bytes);
/* Parses a non-negative decimal integer that fits in int64_t. Returns 0 or -1. */
int sbx_parse_int64(const char *text, int64_t *value);

/* strdup() that returns NULL only for a NULL input; aborts nothing, returns NULL on ENOMEM. */
char *sbx_strdup_or_null(const char *text);

#endif /* SBX_UTIL_H */
