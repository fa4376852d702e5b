/* SPDX-License-Identifier: MIT */
/*
 * The job's syscall filter: allow by default, deny the dangerous set that Docker's default
 * profile also blocks (namespace and mount changes, module loading, kexec, bpf, keyrings, ...),
 * keep ptrace allowed inside the sandbox.
 */
#ifndef SBX_LOCAL_SECCOMP_H
#define SBX_LOCAL_SECCOMP_H

#include "sbx/executor.h"

struct sbx_seccomp_filter;

/* Builds the filter in the parent, before fork, so the child only has to load it. */
int sbx_seccomp_filter_new(struct sbx_seccomp_filter **filter, struct sbx_error *error);
void sbx_seccomp_filter_free(struct sbx_seccomp_filter *filter);

/* Loads FILTER into the calling process (sets no_new_privs). Async-signal-safe enough to call
 * in a forked child of a single-threaded parent; returns 0 or -errno. */
int sbx_seccomp_filter_apply(struct sbx_seccomp_filter *filter);

#endif /* SBX_LOCAL_SECCOMP_H */
