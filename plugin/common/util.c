/* SPDX-License-Identifier: MIT */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cleanup.h"
#include "error.h"
#include "util.h"

int sbx_read_file(const char *path, size_t max_bytes, char **data, size_t *length,
		  struct sbx_error *error)
{
	_cleanup_close_ int fd = -1;
	_cleanup_free_ char *buf = NULL;
	size_t used = 0, capacity = 4096;
	struct stat st;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return sbx_error_errno(error, errno, "cannot open %s", path);
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && (size_t) st.st_size + 1 > capacity)
		capacity = (size_t) st.st_size + 1;
	if (capacity > max_bytes + 1)
		capacity = max_bytes + 1;
	buf = malloc(capacity);
	if (buf == NULL)
		return sbx_error_errno(error, ENOMEM, "cannot read %s", path);

	for (;;) {
		ssize_t n;

		if (used + 1 >= capacity) {
			char *bigger;

			if (capacity > max_bytes)
				return sbx_error_set(error, SBX_ERROR_INVALID,
						     "%s is larger than the limit of %zu bytes",
						     path, max_bytes);
			capacity = capacity * 2 > max_bytes + 1 ? max_bytes + 1 : capacity * 2;
			bigger = realloc(buf, capacity);
			if (bigger == NULL)
				return sbx_error_errno(error, ENOMEM, "cannot read %s", path);
			buf = bigger;
		}
		n = read(fd, buf + used, capacity - used - 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return sbx_error_errno(error, errno, "cannot read %s", path);
		if (n == 0)
			break;
		used += (size_t) n;
	}
	buf[used] = '\0';
	*data = steal_pointer(&buf);
	if (length != NULL)
		*length = used;
	return 0;
}

int sbx_write_all(int fd, const void *buf, size_t length)
{
	const char *p = buf;

	while (length > 0) {
		ssize_t n = write(fd, p, length);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		p += n;
		length -= (size_t) n;
	}
	return 0;
}

int sbx_write_file_atomic(const char *path, const void *data, size_t length, mode_t mode,
			  unsigned flags, struct sbx_error *error)
{
	_cleanup_free_ char *tmp = NULL;
	_cleanup_close_ int fd = -1;
	char suffix[17];

	if (sbx_random_hex(suffix, 8) < 0)
		return sbx_error_errno(error, errno, "cannot write %s", path);
	if (asprintf(&tmp, "%s.%s.tmp", path, suffix) < 0)
		return sbx_error_errno(error, ENOMEM, "cannot write %s", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
	if (fd < 0)
		return sbx_error_errno(error, errno, "cannot create %s", tmp);
	if (fchmod(fd, mode) < 0 || sbx_write_all(fd, data, length) < 0 ||
	    ((flags & SBX_WRITE_DURABLE) && fsync(fd) < 0)) {
		int saved = errno;

		unlink(tmp);
		return sbx_error_errno(error, saved, "cannot write %s", tmp);
	}
	if (rename(tmp, path) < 0) {
		int saved = errno;

		unlink(tmp);
		return sbx_error_errno(error, saved, "cannot rename %s to %s", tmp, path);
	}
	return 0;
}

int sbx_write_string(const char *path, const char *value)
{
	_cleanup_close_ int fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);

	if (fd < 0)
		return -1;
	return sbx_write_all(fd, value, strlen(value));
}

int sbx_mkdir_p(const char *path, mode_t mode)
{
	char buf[PATH_MAX];
	size_t length = strlen(path);

	if (length == 0 || length >= sizeof(buf)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(buf, path, length + 1);
	for (char *p = buf + 1; *p != '\0'; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, mode) < 0 && errno != EEXIST)
			return -1;
		*p = '/';
	}
	if (mkdir(buf, mode) < 0 && errno != EEXIST)
		return -1;
	return 0;
}

static int remove_tree_at(int parent_fd, const char *name, dev_t device)
{
	struct stat st;
	_cleanup_closedir_ DIR *dir = NULL;
	struct dirent *entry;
	int fd;

	if (fstatat(parent_fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? 0 : -1;
	if (!S_ISDIR(st.st_mode))
		return unlinkat(parent_fd, name, 0) < 0 && errno != ENOENT ? -1 : 0;
	if (st.st_dev != device) {
		/* A mount point: never descend into another file system. */
		errno = EBUSY;
		return -1;
	}

	fd = openat(parent_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -1;
	dir = fdopendir(fd);
	if (dir == NULL) {
		close(fd);
		return -1;
	}
	/* A directory without write or search permission for its owner still has to go. */
	if ((st.st_mode & 0700) != 0700)
		fchmod(fd, st.st_mode | 0700);
	while ((entry = readdir(dir)) != NULL) {
		if (strcmp(entry->d_name, ".") == 0 || strcmp(entry->d_name, "..") == 0)
			continue;
		if (remove_tree_at(fd, entry->d_name, device) < 0)
			return -1;
	}
	if (unlinkat(parent_fd, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
		return -1;
	return 0;
}

int sbx_remove_tree(const char *path)
{
	struct stat st;

	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : -1;
	return remove_tree_at(AT_FDCWD, path, st.st_dev);
}

int sbx_id_valid(const char *id)
{
	size_t length;

	if (id == NULL)
		return 0;
	length = strlen(id);
	if (length == 0 || length > SBX_ID_MAX || id[0] == '-')
		return 0;
	for (size_t i = 0; i < length; i++) {
		char c = id[i];

		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'))
			return 0;
	}
	return 1;
}

int sbx_random_hex(char *buf, size_t bytes)
{
	unsigned char raw[64];
	size_t done = 0;

	if (bytes > sizeof(raw)) {
		errno = EINVAL;
		return -1;
	}
	while (done < bytes) {
		ssize_t n = getrandom(raw + done, bytes - done, 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		done += (size_t) n;
	}
	for (size_t i = 0; i < bytes; i++)
		snprintf(buf + 2 * i, 3, "%02x", raw[i]);
	buf[2 * bytes] = '\0';
	return 0;
}

int64_t sbx_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t) ts.tv_sec;
}

int64_t sbx_monotonic_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int sbx_parse_int64(const char *text, int64_t *value)
{
	char *end;
	long long parsed;

	if (text == NULL || !isdigit((unsigned char) text[0]))
		return -1;
	errno = 0;
	parsed = strtoll(text, &end, 10);
	if (errno != 0 || *end != '\0')
		return -1;
	*value = parsed;
	return 0;
}

int sbx_parse_size(const char *text, uint64_t *bytes)
{
	char *end;
	unsigned long long number;
	uint64_t multiplier = 1;

	if (text == NULL || !isdigit((unsigned char) text[0]))
		return -1;
	errno = 0;
	number = strtoull(text, &end, 10);
	if (errno != 0)
		return -1;
	switch (*end) {
	case '\0':
		break;
	case 'K':
	case 'k':
		multiplier = 1024ULL;
		break;
	case 'M':
	case 'm':
		multiplier = 1024ULL * 1024;
		break;
	case 'G':
	case 'g':
		multiplier = 1024ULL * 1024 * 1024;
		break;
	case 'T':
	case 't':
		multiplier = 1024ULL * 1024 * 1024 * 1024;
		break;
	default:
		return -1;
	}
	if (*end != '\0') {
		end++;
		/* "512M", "512MB", "512Mi" and "512MiB" in any case: every suffix is binary. */
		if (*end == 'i' || *end == 'I')
			end++;
		if (*end == 'B' || *end == 'b')
			end++;
		if (*end != '\0')
			return -1;
	}
	if (number > UINT64_MAX / multiplier)
		return -1;
	*bytes = number * multiplier;
	return 0;
}

char *sbx_strdup_or_null(const char *text)
{
	return text == NULL ? NULL : strdup(text);
}
