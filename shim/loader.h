/* SPDX-License-Identifier: MIT */
/* Loading the configuration and the executor plugin it names. */
#ifndef SBX_SHIM_LOADER_H
#define SBX_SHIM_LOADER_H

#include "config.h"
#include "sbx/executor.h"
#include "shim.h"

struct sbx_plugin {
	void *handle;
	char *path;
	const struct sbx_executor_ops *ops;
	/* Path of the configuration the plugin is opened with; NULL for built-in defaults. */
	const char *config_path;
};

/*
 * Loads the configuration from --config, $SBX_CONFIG or the installed default; with none of
 * them, the built-in defaults. Also applies its log level.
 */
int sbx_shim_load_config(const struct sbx_cli *cli, struct sbx_config **config,
			 struct sbx_error *error);

/* The path of the installed default configuration file, for messages. */
const char *sbx_shim_config_display_path(const struct sbx_config *config);

/*
 * Finds sbx-<backend>.so (--plugin-dir, $SBX_PLUGIN_DIR, plugin_dir in the configuration,
 * the directory of the sbx binary when it contains the plugin, the installed plugin
 * directory), loads it and checks its ABI version and operations table.
 */
int sbx_plugin_load(const struct sbx_cli *cli, const struct sbx_config *config,
		    struct sbx_plugin *plugin, struct sbx_error *error);
void sbx_plugin_unload(struct sbx_plugin *plugin);

/* Opens an executor of PLUGIN with the shim's log sink. */
int sbx_plugin_open(const struct sbx_plugin *plugin, struct sbx_executor **executor,
		    struct sbx_error *error);

#endif /* SBX_SHIM_LOADER_H */
