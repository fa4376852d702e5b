/* SPDX-License-Identifier: MIT */
/*
 * The egress proxy. It runs on the host side while a step executes, accepting on a listening
 * socket that lives in the job's network namespace (127.0.0.1:<port> there), and dials out from
 * the host's network namespace to allow-listed destinations only. It speaks HTTP CONNECT and
 * absolute-form plain HTTP; it connects only to the address it checked.
 */
#ifndef SBX_LOCAL_PROXY_H
#define SBX_LOCAL_PROXY_H

#include "../common/allowlist.h"
#include "sbx/executor.h"

struct sbx_proxy;

struct sbx_proxy_options {
	/* Listening socket (already bound and listening), borrowed for the proxy's lifetime. */
	int listen_fd;
	/* Destinations allowed for this step; borrowed. */
	const struct sbx_allowlist *allow;
	/* Descriptor that gets one line per refused destination (the step's stderr), or -1. */
	int notice_fd;
	/* File that gets one line per allowed and refused destination, or NULL. */
	const char *log_path;
	/* Seconds to wait for an upstream connect before answering 504. */
	int connect_timeout;
};

/* Starts serving in a background thread. */
int sbx_proxy_start(const struct sbx_proxy_options *options, struct sbx_proxy **proxy,
		    struct sbx_error *error);
/* Stops accepting, closes every open connection and joins all threads. */
void sbx_proxy_stop(struct sbx_proxy *proxy);

#endif /* SBX_LOCAL_PROXY_H */
