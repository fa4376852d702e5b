/* SPDX-License-Identifier: MIT */
/* Recorded processes (start time, pid namespace) and the egress allow-list of a step. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "config.h"
#include "egress.h"
#include "process.h"

START_TEST(parse_start_time_with_odd_command_name)
{
	uint64_t start = 0;
	/* A command name with spaces and ')' must not shift the fields. */
	const char *stat_text = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 "
				"987654 1000 100 18446744073709551615\n";

	ck_assert_int_eq(sbx_process_parse_start_time(stat_text, &start), 0);
	ck_assert_uint_eq(start, 987654);
	ck_assert_int_eq(sbx_process_parse_start_time("42 (x) S 1 2 3", &start), -1);
	ck_assert_int_eq(sbx_process_parse_start_time("no parenthesis", &start), -1);
}
END_TEST

START_TEST(open_verified_checks_identity)
{
	uint64_t start, namespace_inode;
	int pidfd, status;
	pid_t child = fork();

	if (child == 0) {
		pause();
		_exit(0);
	}
	ck_assert_int_gt(child, 0);
	ck_assert_int_eq(sbx_process_start_time(child, &start), 0);
	ck_assert_int_eq(sbx_process_pid_namespace(child, &namespace_inode), 0);

	pidfd = sbx_process_open_verified(child, start, namespace_inode);
	ck_assert_int_ge(pidfd, 0);
	close(pidfd);
	/* Another start time or pid namespace means another process. */
	ck_assert_int_eq(sbx_process_open_verified(child, start + 1, namespace_inode), -1);
	ck_assert_int_eq(sbx_process_open_verified(child, start, namespace_inode + 1), -1);

	/* Killed but not reaped: a zombie is gone for our purposes. */
	pidfd = sbx_process_open_verified(child, start, 0);
	ck_assert_int_ge(pidfd, 0);
	ck_assert_int_eq(sbx_process_kill_wait(pidfd, 5000), 0);
	close(pidfd);
	ck_assert_int_eq(sbx_process_open_verified(child, start, 0), -1);
	ck_assert_int_eq(waitpid(child, &status, 0), child);
	ck_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
	ck_assert_int_eq(sbx_process_open_verified(child, start, 0), -1);
}
END_TEST

START_TEST(ci_server_entry_from_url)
{
	struct sbx_error error = { 0 };
	char entry[300];

	ck_assert_int_eq(sbx_egress_ci_server_entry("https://gitlab.example.com/", entry,
						    sizeof(entry), &error),
			 0);
	ck_assert_str_eq(entry, "gitlab.example.com:443");
	ck_assert_int_eq(sbx_egress_ci_server_entry("http://ci.local:8080/gitlab?x=1", entry,
						    sizeof(entry), &error),
			 0);
	ck_assert_str_eq(entry, "ci.local:8080");
	ck_assert_int_eq(sbx_egress_ci_server_entry("HTTPS://[2001:db8::1]", entry, sizeof(entry),
						    &error),
			 0);
	ck_assert_str_eq(entry, "[2001:db8::1]:443");

	const char *bad[] = { "gitlab.example.com", "ftp://host/", "https://", "https://u@h/",
			      "https://host:99999999/", "https://host:abc/", "https://[::1/" };

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ck_assert_msg(sbx_egress_ci_server_entry(bad[i], entry, sizeof(entry), &error) == -1,
			      "%s accepted", bad[i]);
		ck_assert_int_eq(error.error_class, SBX_ERROR_INVALID);
	}
}
END_TEST

static struct sbx_config *load_config(const char *yaml)
{
	char path[] = "/tmp/sbx-test-egress-XXXXXX";
	struct sbx_config *config = NULL;
	struct sbx_error error = { 0 };
	int fd = mkstemp(path);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, yaml, strlen(yaml)), (ssize_t) strlen(yaml));
	close(fd);
	ck_assert_msg(sbx_config_load(path, &config, &error) == 0, "%s", error.message);
	unlink(path);
	return config;
}

START_TEST(allow_list_per_profile)
{
	struct sbx_config *config = load_config(
		"network:\n  runner_allow: [\"runner.example:443\"]\n"
		"  user_allow: [\"*.pkg.example\"]\n");
	char extra_entry[] = "extra.example";
	char *extra[] = { extra_entry };
	struct sbx_allowlist list;
	struct sbx_error error = { 0 };

	ck_assert_int_eq(sbx_egress_build(config, SBX_NETWORK_RUNNER, "https://ci.example/", extra,
					  1, &list, &error),
			 0);
	ck_assert_int_eq(sbx_allowlist_match_name(&list, "runner.example", 443), SBX_ALLOW_BY_HOST);
	ck_assert_int_eq(sbx_allowlist_match_name(&list, "ci.example", 443), SBX_ALLOW_BY_HOST);
	ck_assert_int_eq(sbx_allowlist_match_name(&list, "ci.example", 22), SBX_ALLOW_DENIED);
	ck_assert_int_eq(sbx_allowlist_match_name(&list, "extra.example", 80), SBX_ALLOW_BY_HOST);
	ck_assert_int_eq(sbx_allowlist_match_name(&list, "a.pkg.example", 443), SBX_ALLOW_DENIED);
	sbx_allowlist_free(&list);

	ck_assert_int_eq(sbx_egress_build(config, SBX_NETWORK_USER, "https://ci.example/", extra,
					  1, &list, &error),
			 0);
	ck_assert_int_eq(sbx_allowlist_match_name(&list, "a.pkg.example", 443),
			 SBX_ALLOW_BY_WILDCARD);
	ck_assert_int_eq(sbx_allowlist_match_name(&list, "ci.example", 443), SBX_ALLOW_DENIED);
	ck_assert_int_eq(sbx_allowlist_match_name(&list, "runner.example", 443), SBX_ALLOW_DENIED);
	ck_assert_int_eq(sbx_allowlist_match_name(&list, "extra.example", 80), SBX_ALLOW_BY_HOST);
	sbx_allowlist_free(&list);

	config->network.allow_ci_server = 0;
	ck_assert_int_eq(sbx_egress_build(config, SBX_NETWORK_RUNNER, "https://ci.example/", NULL,
					  0, &list, &error),
			 0);
	ck_assert_int_eq(sbx_allowlist_match_name(&list, "ci.example", 443), SBX_ALLOW_DENIED);
	sbx_allowlist_free(&list);
	sbx_config_free(config);
}
END_TEST

static Suite *process_suite(void)
{
	Suite *suite = suite_create("local_process");
	TCase *tc = tcase_create("process");

	tcase_add_test(tc, parse_start_time_with_odd_command_name);
	tcase_add_test(tc, open_verified_checks_identity);
	tcase_add_test(tc, ci_server_entry_from_url);
	tcase_add_test(tc, allow_list_per_profile);
	suite_add_tcase(suite, tc);
	return suite;
}

int main(void)
{
	SRunner *runner = srunner_create(process_suite());
	int failed;

	srunner_run_all(runner, CK_NORMAL);
	failed = srunner_ntests_failed(runner);
	srunner_free(runner);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
