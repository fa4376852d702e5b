/* SPDX-License-Identifier: MIT */
/* Scope-bound cleanup helpers. Ownership moves out of a variable with steal_pointer()/steal_fd(). */
#ifndef SBX_CLEANUP_H
#define SBX_CLEANUP_H

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static inline void sbx_freep(void *p)
{
	void **pp = p;

	free(*pp);
	*pp = NULL;
}

static inline void sbx_closep(int *fd)
{
	if (*fd >= 0) {
		int saved = errno;

		close(*fd);
		errno = saved;
	}
	*fd = -1;
}

static inline void sbx_fclosep(FILE **f)
{
	if (*f != NULL)
		fclose(*f);
	*f = NULL;
}

static inline void sbx_closedirp(DIR **d)
{
	if (*d != NULL)
		closedir(*d);
	*d = NULL;
}

#define _cleanup_free_ __attribute__((cleanup(sbx_freep)))
#define _cleanup_close_ __attribute__((cleanup(sbx_closep)))
#define _cleanup_fclose_ __attribute__((cleanup(sbx_fclosep)))
#define _cleanup_closedir_ __attribute__((cleanup(sbx_closedirp)))

static inline void *sbx_steal_pointer(void *pp)
{
	void **p = pp;
	void *value = *p;

	*p = NULL;
	return value;
}

static inline int sbx_steal_fd(int *fd)
{
	int value = *fd;

	*fd = -1;
	return value;
}

#define steal_pointer(pp) sbx_steal_pointer(pp)
#define steal_fd(fdp) sbx_steal_fd(fdp)

#endif /* SBX_CLEANUP_H */
