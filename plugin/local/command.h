/* SPDX-License-Identifier: MIT */
/* The command of a step: its argv, the candidate paths of argv[0], its environment, its script. */
#ifndef SBX_LOCAL_COMMAND_H
#define SBX_LOCAL_COMMAND_H

#include <stddef.h>
#include <stdint.h>

#include "sbx/executor.h"

/* PATH inside the sandbox. /.sbx/bin contains the host's gitlab-runner. */
#define SBX_COMMAND_PATH "/.sbx/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

/*
 * Builds the step's environment: PATH, HOME=/tmp/home, USER, LOGNAME, the proxy variables
 * (HTTP_PROXY, HTTPS_PROXY, http_proxy, https_proxy = http://127.0.0.1:PROXY_PORT; NO_PROXY,
 * no_proxy = localhost,127.0.0.1,::1), then SPEC_ENVP (may be NULL), whose entries replace
 * sbx's of the same name. NULL on ENOMEM.
 */
char **sbx_command_environment(const char *const *spec_envp, uint16_t proxy_port);

/* Candidate paths of COMMAND in the sandbox's PATH: execvpe() would search the host's PATH.
 * NULL-terminated; NULL on ENOMEM. */
char **sbx_command_exec_paths(const char *command);

char **sbx_command_copy_argv(const char *const *argv);
void sbx_command_free_strings(char **strings);

/*
 * Puts SCRIPT into a sealed memfd (close-on-exec): the shell reads it through a descriptor,
 * so the script's bytes never show in argv and no file contains them.
 */
int sbx_command_script_fd(const void *script, size_t length, struct sbx_error *error);

#endif /* SBX_LOCAL_COMMAND_H */
