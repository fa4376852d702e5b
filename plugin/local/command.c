/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "cleanup.h"
#include "command.h"
#include "error.h"
#include "util.h"

#define NO_PROXY_LIST "localhost,127.0.0.1,::1"

void sbx_command_free_strings(char **strings)
{
	for (size_t i = 0; strings != NULL && strings[i] != NULL; i++)
		free(strings[i]);
	free(strings);
}

static int name_matches(const char *assignment, const char *other)
{
	size_t length = strcspn(assignment, "=");

	return strncmp(assignment, other, length) == 0 && other[length] == '=';
}

char **sbx_command_environment(const char *const *spec_envp, uint16_t proxy_port)
{
	static const char *const proxy_names[] = { "HTTP_PROXY", "HTTPS_PROXY", "http_proxy",
						   "https_proxy" };
	char *own[16];
	size_t own_count = 0, spec_count = 0, total = 0;
	char **envp;

	own[own_count++] = strdup("PATH=" SBX_COMMAND_PATH);
	own[own_count++] = strdup("HOME=/tmp/home");
	own[own_count++] = strdup("USER=ci");
	own[own_count++] = strdup("LOGNAME=ci");
	for (size_t i = 0; i < 4; i++)
		if (asprintf(&own[own_count++], "%s=http://127.0.0.1:%u", proxy_names[i],
			     (unsigned) proxy_port) < 0)
			own[own_count - 1] = NULL;
	own[own_count++] = strdup("NO_PROXY=" NO_PROXY_LIST);
	own[own_count++] = strdup("no_proxy=" NO_PROXY_LIST);

	while (spec_envp != NULL && spec_envp[spec_count] != NULL)
		spec_count++;
	envp = calloc(own_count + spec_count + 1, sizeof(char *));
	for (size_t i = 0; i < own_count; i++) {
		int replaced = 0;

		for (size_t k = 0; k < spec_count && own[i] != NULL; k++)
			if (name_matches(own[i], spec_envp[k]))
				replaced = 1;
		if (envp == NULL || own[i] == NULL || replaced) {
			free(own[i]);
			if (own[i] == NULL && envp != NULL) {
				sbx_command_free_strings(envp);
				envp = NULL;
			}
			continue;
		}
		envp[total++] = own[i];
	}
	for (size_t k = 0; envp != NULL && k < spec_count; k++) {
		envp[total] = strdup(spec_envp[k]);
		if (envp[total++] == NULL) {
			sbx_command_free_strings(envp);
			envp = NULL;
		}
	}
	return envp;
}

char **sbx_command_exec_paths(const char *command)
{
	char *copy, *save = NULL;
	char **paths = calloc(16, sizeof(char *));
	size_t count = 0;

	if (paths == NULL)
		return NULL;
	if (strchr(command, '/') != NULL) {
		paths[0] = strdup(command);
		if (paths[0] == NULL) {
			free(paths);
			return NULL;
		}
		return paths;
	}
	copy = strdup(SBX_COMMAND_PATH);
	for (char *dir = copy != NULL ? strtok_r(copy, ":", &save) : NULL; dir != NULL && count < 15;
	     dir = strtok_r(NULL, ":", &save)) {
		if (asprintf(&paths[count], "%s/%s", dir, command) < 0) {
			paths[count] = NULL;
			break;
		}
		count++;
	}
	free(copy);
	if (count == 0) {
		free(paths);
		return NULL;
	}
	return paths;
}

char **sbx_command_copy_argv(const char *const *argv)
{
	size_t count = 0;
	char **copy;

	while (argv[count] != NULL)
		count++;
	copy = calloc(count + 1, sizeof(char *));
	for (size_t i = 0; copy != NULL && i < count; i++) {
		copy[i] = strdup(argv[i]);
		if (copy[i] == NULL) {
			sbx_command_free_strings(copy);
			return NULL;
		}
	}
	return copy;
}

int sbx_command_script_fd(const void *script, size_t length, struct sbx_error *error)
{
	_cleanup_close_ int fd = memfd_create("sbx-script", MFD_CLOEXEC | MFD_ALLOW_SEALING);

	if (fd < 0)
		return sbx_error_errno(error, errno, "cannot create a memfd for the script");
	if (sbx_write_all(fd, script, length) < 0)
		return sbx_error_errno(error, errno, "cannot write the script to its memfd");
	if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) < 0)
		return sbx_error_errno(error, errno, "cannot seal the script's memfd");
	if (lseek(fd, 0, SEEK_SET) < 0)
		return sbx_error_errno(error, errno, "cannot rewind the script's memfd");
	return steal_fd(&fd);
}

