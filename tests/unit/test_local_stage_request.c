/* SPDX-License-Identifier: MIT */
/* The request a stage-run passes to the init: writing it to a memfd and reading it back. */
#include <check.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "stage_request.h"

/* A memfd holding TEXT, as a peer that writes its own request would pass it. */
static int memfd_with(const char *text)
{
	int fd = memfd_create("test-request", MFD_CLOEXEC);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t) strlen(text));
	return fd;
}

static void assert_rejected(const char *text, const char *expected)
{
	struct sbx_stage_request request;
	struct sbx_error error = { 0 };
	int fd = memfd_with(text);

	memset(&request, 0, sizeof(request));
	ck_assert_int_eq(sbx_stage_request_read(fd, &request, &error), -1);
	ck_assert_int_eq(error.error_class, SBX_ERROR_INVALID);
	ck_assert_msg(strstr(error.message, expected) != NULL, "message \"%s\" lacks \"%s\"",
		      error.message, expected);
	ck_assert_ptr_null(request.argv);
	close(fd);
}

START_TEST(request_round_trip)
{
	char shell[] = "bash", script[] = "/proc/self/fd/3";
	char path[] = "PATH=/usr/bin", secret[] = "SECRET=a \"quoted\"\nline", empty[] = "EMPTY=";
	char cwd[] = "/builds/group/project";
	char *argv[] = { shell, script, NULL };
	char *envp[] = { path, secret, empty, NULL };
	struct sbx_stage_request request = {
		.argv = argv,
		.envp = envp,
		.cwd = cwd,
		.uid = 1000,
		.gid = 1001,
		.set_groups = 1,
		.cap_last = 40,
	};
	struct sbx_stage_request read_back;
	struct sbx_error error = { 0 };
	int fd = -1;

	ck_assert_int_eq(sbx_stage_request_write(&request, &fd, &error), 0);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(fcntl(fd, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
	/* Sealed, so the request cannot change after it was written. */
	ck_assert_int_eq(write(fd, "x", 1), -1);

	ck_assert_int_eq(sbx_stage_request_read(fd, &read_back, &error), 0);
	ck_assert_str_eq(read_back.argv[0], "bash");
	ck_assert_str_eq(read_back.argv[1], "/proc/self/fd/3");
	ck_assert_ptr_null(read_back.argv[2]);
	ck_assert_str_eq(read_back.envp[0], "PATH=/usr/bin");
	ck_assert_str_eq(read_back.envp[1], "SECRET=a \"quoted\"\nline");
	ck_assert_str_eq(read_back.envp[2], "EMPTY=");
	ck_assert_ptr_null(read_back.envp[3]);
	ck_assert_str_eq(read_back.cwd, "/builds/group/project");
	ck_assert_uint_eq(read_back.uid, 1000);
	ck_assert_uint_eq(read_back.gid, 1001);
	ck_assert_int_eq(read_back.set_groups, 1);
	ck_assert_int_eq(read_back.cap_last, 40);
	sbx_stage_request_clear(&read_back);
	close(fd);
}
END_TEST

START_TEST(request_rejects_malformed)
{
	assert_rejected("", "empty");
	assert_rejected("{\"argv\":[\"sh\"]", "JSON");
	assert_rejected("[1,2]", "not a JSON object");
	assert_rejected("{\"argv\":[],\"env\":[],\"cwd\":\"/\",\"uid\":1,\"gid\":1,\"cap_last\":40}",
			"\"argv\"");
	assert_rejected("{\"argv\":[\"\"],\"env\":[],\"cwd\":\"/\",\"uid\":1,\"gid\":1,"
			"\"cap_last\":40}",
			"argv[0] is empty");
	assert_rejected("{\"argv\":[\"sh\"],\"env\":[7],\"cwd\":\"/\",\"uid\":1,\"gid\":1,"
			"\"cap_last\":40}",
			"\"env\"[0]");
	assert_rejected("{\"argv\":[\"sh\"],\"env\":[],\"cwd\":\"builds\",\"uid\":1,\"gid\":1,"
			"\"cap_last\":40}",
			"\"cwd\"");
	assert_rejected("{\"argv\":[\"sh\"],\"env\":[],\"cwd\":\"/\",\"uid\":-1,\"gid\":1,"
			"\"cap_last\":40}",
			"\"uid\"");
	assert_rejected("{\"argv\":[\"sh\"],\"env\":[],\"cwd\":\"/\",\"uid\":1,\"gid\":1,"
			"\"cap_last\":64}",
			"above 63");
}
END_TEST

static Suite *stage_request_suite(void)
{
	Suite *suite = suite_create("local_stage_request");
	TCase *tc = tcase_create("stage_request");

	tcase_add_test(tc, request_round_trip);
	tcase_add_test(tc, request_rejects_malformed);
	suite_add_tcase(suite, tc);
	return suite;
}

int main(void)
{
	SRunner *runner = srunner_create(stage_request_suite());
	int failed;

	srunner_run_all(runner, CK_NORMAL);
	failed = srunner_ntests_failed(runner);
	srunner_free(runner);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
