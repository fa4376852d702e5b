/* SPDX-License-Identifier: MIT */
/* The local backend's prerequisites, checked by `sbx doctor`. */
#ifndef SBX_LOCAL_CHECKS_H
#define SBX_LOCAL_CHECKS_H

#include "local.h"
#include "sbx/executor.h"

/*
 * Reports user namespaces, the id mapping, cgroups, seccomp, the state directory and the
 * gitlab-runner binary to CALLBACK, each with a fix when it is not OK. Returns -1 when one of
 * them failed.
 */
int sbx_checks_run(struct sbx_executor *executor, sbx_check_fn callback, void *userdata,
		   struct sbx_error *error);

#endif /* SBX_LOCAL_CHECKS_H */
