/* SPDX-License-Identifier: MIT */
/* The start of open() that every backend shares: log sink, configuration and journal. */
#ifndef SBX_BACKEND_H
#define SBX_BACKEND_H

#include "config.h"
#include "journal.h"
#include "sbx/executor.h"

/*
 * Installs the host's log sink, loads the configuration named by OPTIONS and opens the state
 * journal, taking each field of HOST and OPTIONS only when the host's struct contains it. On
 * success *CONFIG and JOURNAL are open and *STATE_DIR is the state directory, which the caller
 * frees; on failure nothing is left open. BACKEND names the backend in error messages.
 */
int sbx_backend_open_common(const char *backend, const struct sbx_host *host,
			    const struct sbx_open_options *options, struct sbx_config **config,
			    struct sbx_journal *journal, char **state_dir, struct sbx_error *error);

#endif /* SBX_BACKEND_H */
