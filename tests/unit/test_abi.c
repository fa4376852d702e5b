/* SPDX-License-Identifier: MIT */
/*
 * The ABI contract of the built sbx-local.so: one exported function, the version handshake,
 * a complete operations table, and no network or TLS library among its dependencies.
 */
#include <check.h>
#include <ctype.h>
#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sbx/executor.h"

static char plugin_path[PATH_MAX + 32];

/* The plugin sits in the build directory: $SBX_BUILD_DIR, else the parent of this test's
 * directory (build/tests/test_abi). */
static void find_plugin(void)
{
	const char *build = getenv("SBX_BUILD_DIR");
	char exe[PATH_MAX];
	ssize_t length;
	char *slash;

	if (build != NULL && build[0] != '\0') {
		snprintf(plugin_path, sizeof(plugin_path), "%s/sbx-local.so", build);
		return;
	}
	snprintf(plugin_path, sizeof(plugin_path), "build/sbx-local.so");
	length = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (length <= 0)
		return;
	exe[length] = '\0';
	for (int i = 0; i < 2; i++) {
		slash = strrchr(exe, '/');
		if (slash == NULL)
			return;
		*slash = '\0';
	}
	snprintf(plugin_path, sizeof(plugin_path), "%s/sbx-local.so", exe);
}

static sbx_executor_entry_fn load_entry(void **handle)
{
	sbx_executor_entry_fn entry;

	ck_assert_msg(access(plugin_path, R_OK) == 0, "%s is missing; run make first",
		      plugin_path);
	*handle = dlopen(plugin_path, RTLD_NOW | RTLD_LOCAL);
	ck_assert_msg(*handle != NULL, "dlopen %s: %s", plugin_path, dlerror());
	*(void **) &entry = dlsym(*handle, SBX_EXECUTOR_ENTRY_SYMBOL);
	ck_assert_msg(entry != NULL, "%s has no %s", plugin_path, SBX_EXECUTOR_ENTRY_SYMBOL);
	return entry;
}

/* True when TEXT contains NUMBER as a whole decimal number. */
static int mentions_number(const char *text, unsigned number)
{
	char digits[16];
	size_t length = (size_t) snprintf(digits, sizeof(digits), "%u", number);

	for (const char *p = text; (p = strstr(p, digits)) != NULL; p++) {
		int starts = p == text || !isdigit((unsigned char) p[-1]);
		int ends = !isdigit((unsigned char) p[length]);

		if (starts && ends)
			return 1;
	}
	return 0;
}

/* Runs COMMAND with the plugin path appended and returns its whole output. */
static char *run_tool(const char *command)
{
	char line[1024];
	char *output = NULL;
	size_t used = 0;
	char *shell_command;
	FILE *pipe;
	int status;

	ck_assert_int_ge(asprintf(&shell_command, "%s '%s' 2>&1", command, plugin_path), 0);
	pipe = popen(shell_command, "r");
	ck_assert_msg(pipe != NULL, "cannot run %s", shell_command);
	while (fgets(line, sizeof(line), pipe) != NULL) {
		size_t length = strlen(line);

		output = realloc(output, used + length + 1);
		ck_assert_ptr_nonnull(output);
		memcpy(output + used, line, length + 1);
		used += length;
	}
	status = pclose(pipe);
	ck_assert_msg(status == 0, "%s failed with status %d: %s", shell_command, status,
		      output != NULL ? output : "");
	free(shell_command);
	return output != NULL ? output : strdup("");
}

START_TEST(plugin_exports_only_entry)
{
	char *output = run_tool("nm -D --defined-only");
	int entry_seen = 0;

	for (char *line = strtok(output, "\n"); line != NULL; line = strtok(NULL, "\n")) {
		char address[64], type[8], name[512];

		if (sscanf(line, "%63s %7s %511s", address, type, name) != 3)
			continue;
		/* T: text, W: weak, i: indirect function; data symbols are not functions. */
		if (strcmp(type, "T") != 0 && strcmp(type, "W") != 0 && strcmp(type, "i") != 0)
			continue;
		ck_assert_msg(strcmp(name, SBX_EXECUTOR_ENTRY_SYMBOL) == 0,
			      "sbx-local.so exports the function %s", name);
		entry_seen = 1;
	}
	ck_assert_msg(entry_seen, "sbx-local.so does not export %s", SBX_EXECUTOR_ENTRY_SYMBOL);
	free(output);
}
END_TEST

START_TEST(handshake_version_1)
{
	const struct sbx_executor_ops *ops = NULL;
	struct sbx_error error = { .struct_size = sizeof(error) };
	void *handle;
	sbx_executor_entry_fn entry = load_entry(&handle);

	ck_assert_int_eq(entry(SBX_EXECUTOR_ABI_VERSION, &ops, &error), 0);
	ck_assert_ptr_nonnull(ops);
	ck_assert_uint_eq(ops->abi_version, 1);
	ck_assert_uint_ge(ops->struct_size, sizeof(struct sbx_executor_ops));
	ck_assert_ptr_nonnull(ops->backend_name);
	ck_assert_str_eq(ops->backend_name, "local");
	ck_assert_ptr_nonnull(ops->backend_version);
	ck_assert_ptr_nonnull(ops->open);
	ck_assert_ptr_nonnull(ops->close);
	ck_assert_ptr_nonnull(ops->prepare);
	ck_assert_ptr_nonnull(ops->exec);
	ck_assert_ptr_nonnull(ops->destroy);
	ck_assert_ptr_nonnull(ops->list);
	ck_assert_ptr_nonnull(ops->check);
	dlclose(handle);
}
END_TEST

static void check_rejected_version(uint32_t version)
{
	const struct sbx_executor_ops *ops = NULL;
	struct sbx_error error = { .struct_size = sizeof(error) };
	void *handle;
	sbx_executor_entry_fn entry = load_entry(&handle);

	ck_assert_int_eq(entry(version, &ops, &error), -1);
	ck_assert_ptr_null(ops);
	ck_assert_int_eq(error.error_class, SBX_ERROR_ABI);
	ck_assert_msg(mentions_number(error.message, version),
		      "message \"%s\" does not name the requested version %u", error.message,
		      version);
	ck_assert_msg(mentions_number(error.message, SBX_EXECUTOR_ABI_VERSION),
		      "message \"%s\" does not name the plugin's version %u", error.message,
		      SBX_EXECUTOR_ABI_VERSION);
	dlclose(handle);
}

START_TEST(handshake_version_0_rejected)
{
	check_rejected_version(0);
}
END_TEST

START_TEST(handshake_version_2_rejected)
{
	check_rejected_version(2);
}
END_TEST

START_TEST(plugin_needs_no_network_library)
{
	static const char *const forbidden[] = {
		"libcurl", "libssl", "libcrypto", "libwebsockets", "libgnutls",
	};
	char *output = run_tool("readelf -d");
	int needed = 0;

	for (char *line = strtok(output, "\n"); line != NULL; line = strtok(NULL, "\n")) {
		if (strstr(line, "(NEEDED)") == NULL)
			continue;
		needed++;
		for (size_t i = 0; i < sizeof(forbidden) / sizeof(forbidden[0]); i++)
			ck_assert_msg(strstr(line, forbidden[i]) == NULL,
				      "sbx-local.so needs a network library: %s", line);
	}
	/* readelf printed the dynamic section at all: libc is always needed. */
	ck_assert_int_gt(needed, 0);
	free(output);
}
END_TEST

int main(void)
{
	Suite *suite = suite_create("abi");
	TCase *tcase = tcase_create("local plugin");
	SRunner *runner;
	int failed;

	find_plugin();
	tcase_add_test(tcase, plugin_exports_only_entry);
	tcase_add_test(tcase, handshake_version_1);
	tcase_add_test(tcase, handshake_version_0_rejected);
	tcase_add_test(tcase, handshake_version_2_rejected);
	tcase_add_test(tcase, plugin_needs_no_network_library);
	suite_add_tcase(suite, tcase);

	runner = srunner_create(suite);
	srunner_run_all(runner, CK_NORMAL);
	failed = srunner_ntests_failed(runner);
	srunner_free(runner);
	return failed == 0 ? 0 : 1;
}
