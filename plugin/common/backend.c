/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "error.h"
#include "log.h"

int sbx_backend_open_common(const char *backend, const struct sbx_host *host,
			    const struct sbx_open_options *options, struct sbx_config **config,
			    struct sbx_journal *journal, char **state_dir, struct sbx_error *error)
{
	const char *config_path = NULL, *state_override = NULL;
	struct sbx_config *loaded;
	char *dir;

	if (host != NULL && SBX_HAS_FIELD(host, struct sbx_host, log_level))
		sbx_log_set_sink(host->log, host->log_userdata, (enum sbx_log_level) host->log_level);
	if (options != NULL && SBX_HAS_FIELD(options, struct sbx_open_options, config_path))
		config_path = options->config_path;
	if (options != NULL && SBX_HAS_FIELD(options, struct sbx_open_options, state_dir))
		state_override = options->state_dir;

	if (sbx_config_load(config_path, &loaded, error) < 0)
		return -1;
	dir = state_override != NULL ? strdup(state_override) : sbx_config_state_dir(loaded);
	if (dir == NULL) {
		sbx_config_free(loaded);
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "cannot open the %s backend: no state directory; set state_dir "
				     "in the configuration, or HOME or XDG_STATE_HOME in the "
				     "environment",
				     backend);
	}
	if (sbx_journal_open(dir, journal, error) < 0) {
		free(dir);
		sbx_config_free(loaded);
		return -1;
	}
	*config = loaded;
	*state_dir = dir;
	return 0;
}
