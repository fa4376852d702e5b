/* SPDX-License-Identifier: MIT */
/* The allow-list of one step: the stage's network profile plus what the job adds. */
#ifndef SBX_LOCAL_EGRESS_H
#define SBX_LOCAL_EGRESS_H

#include <stddef.h>

#include "allowlist.h"
#include "sbx/executor.h"

struct sbx_config;

/*
 * Turns a CI server URL ("https://gitlab.example.com/", "http://[2001:db8::1]:8080") into an
 * allow-list entry for its host and port (the scheme's default port when none is given).
 */
int sbx_egress_ci_server_entry(const char *url, char *entry, size_t size,
			       struct sbx_error *error);

/*
 * Builds the allow-list for PROFILE: network.runner_allow plus the CI server's host (unless
 * network.allow_ci_server is false) for runner stages, network.user_allow for user stages,
 * and EXTRA (may be NULL) for both.
 */
int sbx_egress_build(const struct sbx_config *config, enum sbx_network_profile profile,
		     const char *ci_server_url, char *const *extra, size_t extra_count,
		     struct sbx_allowlist *list, struct sbx_error *error);

#endif /* SBX_LOCAL_EGRESS_H */
