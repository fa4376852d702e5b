/* SPDX-License-Identifier: MIT */
/* Loads the configuration and the executor plugin, and checks the plugin's ABI. */
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "error.h"
#include "loader.h"
#include "log.h"
#include "util.h"

#define INSTALLED_CONFIG_PATH SBX_SYSCONFDIR "/sbx/config.yaml"

static struct sbx_host shim_host;

int sbx_shim_load_config(const struct sbx_cli *cli, struct sbx_config **config,
			 struct sbx_error *error)
{
	const char *path = sbx_config_default_path(cli->config_option);
	struct sbx_config *loaded = NULL;

	sbx_debug("configuration: %s", path != NULL ? path : "built-in defaults");
	if (sbx_config_load(path, &loaded, error) < 0)
		return -1;
	sbx_shim_set_log_level(cli, loaded);
	*config = loaded;
	return 0;
}

const char *sbx_shim_config_display_path(const struct sbx_config *config)
{
	if (config != NULL && config->path != NULL)
		return config->path;
	return INSTALLED_CONFIG_PATH;
}

/* A backend name becomes part of a file name: only [a-z0-9-]. */
static int backend_name_valid(const char *name)
{
	size_t length = name != NULL ? strlen(name) : 0;

	return length > 0 && length <= 64 &&
	       strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789-") == length;
}

static int file_exists(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0;
}

/* Returns the directory of the running sbx binary when it contains FILE_NAME (a build
 * tree), else NULL. */
static char *exe_dir_with(const char *file_name)
{
	char exe[PATH_MAX];
	_cleanup_free_ char *candidate = NULL;
	ssize_t length = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	char *slash;

	if (length <= 0)
		return NULL;
	exe[length] = '\0';
	slash = strrchr(exe, '/');
	if (slash == NULL)
		return NULL;
	*slash = '\0';
	if (asprintf(&candidate, "%s/%s", exe, file_name) < 0)
		return NULL;
	if (!file_exists(candidate))
		return NULL;
	return strdup(exe);
}

static int check_ops(const char *path, const struct sbx_executor_ops *ops,
		     struct sbx_error *error)
{
	static const char fix[] = "install matching versions of sbx and its plugins";
	size_t required = offsetof(struct sbx_executor_ops, check) + sizeof(ops->check);

	if (ops == NULL)
		return sbx_error_set(error, SBX_ERROR_ABI,
				     "plugin %s returned no operations table; %s", path, fix);
	if (ops->abi_version != SBX_EXECUTOR_ABI_VERSION)
		return sbx_error_set(error, SBX_ERROR_ABI,
				     "plugin %s speaks ABI version %u, this sbx speaks %u; %s", path,
				     ops->abi_version, SBX_EXECUTOR_ABI_VERSION, fix);
	if (ops->struct_size < required)
		return sbx_error_set(error, SBX_ERROR_ABI,
				     "plugin %s has an operations table of %u bytes, ABI version %u "
				     "needs at least %zu; %s",
				     path, ops->struct_size, SBX_EXECUTOR_ABI_VERSION, required, fix);

	const struct {
		const char *name;
		int present;
	} required_ops[] = {
		{ "open", ops->open != NULL },	     { "close", ops->close != NULL },
		{ "prepare", ops->prepare != NULL }, { "exec", ops->exec != NULL },
		{ "destroy", ops->destroy != NULL }, { "list", ops->list != NULL },
		{ "check", ops->check != NULL },
	};
	for (size_t i = 0; i < SBX_ARRAY_SIZE(required_ops); i++) {
		if (!required_ops[i].present)
			return sbx_error_set(error, SBX_ERROR_ABI,
					     "plugin %s has no %s operation; %s", path,
					     required_ops[i].name, fix);
	}
	if (ops->backend_name == NULL)
		return sbx_error_set(error, SBX_ERROR_ABI, "plugin %s has no backend name; %s", path,
				     fix);
	return 0;
}

/* Picks the plugin path. FIX and SETTING name where it came from, for the error messages. */
static int choose_plugin_path(const struct sbx_cli *cli, const struct sbx_config *config,
			      const char *file_name, char **path, char **fix,
			      const char **setting, struct sbx_error *error)
{
	const char *env_dir = getenv("SBX_PLUGIN_DIR");
	_cleanup_free_ char *exe_dir = NULL;
	_cleanup_free_ char *chosen = NULL;
	_cleanup_free_ char *advice = NULL;
	const char *dir;
	int ok;

	if (cli->plugin_dir_option != NULL) {
		dir = cli->plugin_dir_option;
		*setting = "--plugin-dir";
		ok = asprintf(&advice, "check --plugin-dir %s", dir);
	} else if (env_dir != NULL && env_dir[0] != '\0') {
		dir = env_dir;
		*setting = "SBX_PLUGIN_DIR";
		ok = asprintf(&advice, "check SBX_PLUGIN_DIR=%s or unset it", dir);
	} else if (config->plugin_dir != NULL) {
		dir = config->plugin_dir;
		*setting = "plugin_dir";
		ok = asprintf(&advice, "install it or set plugin_dir in %s",
			      sbx_shim_config_display_path(config));
	} else if ((exe_dir = exe_dir_with(file_name)) != NULL) {
		dir = exe_dir;
		ok = asprintf(&advice, "rebuild it");
	} else {
		dir = SBX_PLUGIN_DIR;
		ok = asprintf(&advice, "install it or set plugin_dir in %s",
			      sbx_shim_config_display_path(config));
	}
	if (ok < 0 || asprintf(&chosen, "%s/%s", dir, file_name) < 0)
		return sbx_error_errno(error, ENOMEM, "cannot build the plugin path");
	*path = steal_pointer(&chosen);
	*fix = steal_pointer(&advice);
	return 0;
}

int sbx_plugin_load(const struct sbx_cli *cli, const struct sbx_config *config,
		    struct sbx_plugin *plugin, struct sbx_error *error)
{
	_cleanup_free_ char *file_name = NULL;
	_cleanup_free_ char *path = NULL;
	_cleanup_free_ char *fix = NULL;
	const struct sbx_executor_ops *ops = NULL;
	const char *setting = NULL;
	sbx_executor_entry_fn entry;
	struct sbx_error entry_error;
	void *handle;

	if (!backend_name_valid(config->backend))
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "backend \"%s\" is not a valid backend name; set backend in %s "
				     "to \"local\" or \"agent-sandbox\"",
				     config->backend != NULL ? config->backend : "",
				     sbx_shim_config_display_path(config));
	if (asprintf(&file_name, "sbx-%s.so", config->backend) < 0)
		return sbx_error_errno(error, ENOMEM, "cannot build the plugin path");
	if (choose_plugin_path(cli, config, file_name, &path, &fix, &setting, error) < 0)
		return -1;

	if (!file_exists(path))
		return sbx_error_set(error, SBX_ERROR_SYSTEM, "plugin %s not found; %s", path, fix);
	sbx_debug("loading plugin %s", path);
	/* RTLD_NODELETE keeps the plugin and its libraries mapped after dlclose(). Otherwise
	 * the dynamic TLS of a library unloaded with the plugin stays in the thread's DTLS
	 * list, and LeakSanitizer (GCC 12) crashes with "Tracer caught signal 11" when it
	 * scans that list at exit. */
	handle = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
	if (handle == NULL)
		return sbx_error_set(error, SBX_ERROR_SYSTEM,
				     "cannot load plugin %s: %s; reinstall it or install the "
				     "libraries it needs",
				     path, dlerror());

	*(void **) &entry = dlsym(handle, SBX_EXECUTOR_ENTRY_SYMBOL);
	if (entry == NULL) {
		dlclose(handle);
		if (setting != NULL)
			return sbx_error_set(error, SBX_ERROR_ABI,
					     "%s is not an sbx plugin: it has no %s symbol; point "
					     "%s at the directory of the sbx plugins",
					     path, SBX_EXECUTOR_ENTRY_SYMBOL, setting);
		return sbx_error_set(error, SBX_ERROR_ABI,
				     "%s is not an sbx plugin: it has no %s symbol; reinstall sbx "
				     "and its plugins",
				     path, SBX_EXECUTOR_ENTRY_SYMBOL);
	}

	sbx_error_clear(&entry_error);
	if (entry(SBX_EXECUTOR_ABI_VERSION, &ops, &entry_error) < 0) {
		entry_error.message[sizeof(entry_error.message) - 1] = '\0';
		dlclose(handle);
		return sbx_error_set(error, SBX_ERROR_ABI,
				     "plugin %s does not speak ABI version %u, which this sbx "
				     "speaks (%s); install matching versions of sbx and its plugins",
				     path, SBX_EXECUTOR_ABI_VERSION,
				     entry_error.message[0] != '\0' ? entry_error.message
								    : "no message");
	}
	if (check_ops(path, ops, error) < 0) {
		dlclose(handle);
		return -1;
	}
	if (strcmp(ops->backend_name, config->backend) != 0)
		sbx_warning("plugin %s calls its backend \"%s\", the configuration names \"%s\"",
			    path, ops->backend_name, config->backend);
	sbx_debug("plugin %s: backend %s %s, ABI version %u", path, ops->backend_name,
		  ops->backend_version != NULL ? ops->backend_version : "", ops->abi_version);

	plugin->handle = handle;
	plugin->path = steal_pointer(&path);
	plugin->ops = ops;
	plugin->config_path = config->path;
	return 0;
}

void sbx_plugin_unload(struct sbx_plugin *plugin)
{
	if (plugin->handle != NULL)
		dlclose(plugin->handle);
	free(plugin->path);
	plugin->handle = NULL;
	plugin->path = NULL;
	plugin->ops = NULL;
}

int sbx_plugin_open(const struct sbx_plugin *plugin, struct sbx_executor **executor,
		    struct sbx_error *error)
{
	struct sbx_open_options options;
	struct sbx_executor *opened = NULL;

	/* The plugin may keep the host pointer for the executor's lifetime. */
	shim_host.struct_size = sizeof(shim_host);
	shim_host.log = sbx_shim_log_sink;
	shim_host.log_userdata = NULL;
	shim_host.log_level = sbx_shim_log_level();

	memset(&options, 0, sizeof(options));
	options.struct_size = sizeof(options);
	options.config_path = plugin->config_path;
	options.state_dir = NULL;

	sbx_error_clear(error);
	if (plugin->ops->open(&shim_host, &options, &opened, error) < 0) {
		if (error != NULL && error->error_class == SBX_ERROR_NONE)
			error->error_class = SBX_ERROR_SYSTEM;
		return -1;
	}
	*executor = opened;
	return 0;
}
