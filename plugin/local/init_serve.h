/* SPDX-License-Identifier: MIT */
/* The job init's main loop: reaping, the control socket, the deadline. */
#ifndef SBX_LOCAL_INIT_SERVE_H
#define SBX_LOCAL_INIT_SERVE_H

#include <stdint.h>

/* Most control connections served at once; GitLab runs one stage at a time. */
#define SBX_INIT_MAX_CONNECTIONS 32

/*
 * Serves CONTROL_FD (listening) and hands PROXY_FD to each stage until DEADLINE (Unix time)
 * passes. Returns the init's exit status; when the init exits, the kernel kills the job.
 */
int sbx_init_serve(int control_fd, int proxy_fd, int64_t deadline);

#endif /* SBX_LOCAL_INIT_SERVE_H */
