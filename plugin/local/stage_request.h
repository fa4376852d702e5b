/* SPDX-License-Identifier: MIT */
/*
 * The request of a stage-run message: what the init needs to start a step, in a sealed memfd
 * passed with the message. A job's environment easily outgrows one control datagram, and a
 * memfd keeps the job's variables out of every file and argv. The memfd contains one JSON
 * object:
 *
 *   argv        array of strings, argv[0] searched in the sandbox's PATH unless it has a '/'
 *   env         array of "NAME=value" strings, the step's whole environment
 *   cwd         absolute working directory inside the sandbox
 *   uid, gid    the step's ids inside the job's user namespace
 *   set_groups  whether to set the supplementary groups (false in runner-uid mode)
 *   cap_last    highest capability number of the host kernel
 */
#ifndef SBX_LOCAL_STAGE_REQUEST_H
#define SBX_LOCAL_STAGE_REQUEST_H

#include <sys/types.h>

#include "sbx/executor.h"

/* Largest request the init reads; beyond it execve() would fail with E2BIG anyway. */
#define SBX_STAGE_REQUEST_MAX (64u << 20)

struct sbx_stage_request {
	char **argv;
	char **envp;
	char *cwd;
	uid_t uid;
	gid_t gid;
	int set_groups;
	int cap_last;
};

/* Writes REQUEST into a new sealed memfd (close-on-exec) and stores it in *FD. */
int sbx_stage_request_write(const struct sbx_stage_request *request, int *fd,
			    struct sbx_error *error);
/* Reads and checks the request in FD; SBX_ERROR_INVALID names what is wrong. */
int sbx_stage_request_read(int fd, struct sbx_stage_request *request, struct sbx_error *error);
void sbx_stage_request_clear(struct sbx_stage_request *request);

#endif /* SBX_LOCAL_STAGE_REQUEST_H */
