/* SPDX-License-Identifier: MIT */
/* The job init's control protocol: message coding and descriptor passing over a real socket. */
#include <check.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "control.h"

static struct sbx_control_message decode_text(const char *text, int expected_rc)
{
	struct sbx_control_message message;
	struct sbx_error error = { 0 };

	memset(&message, 0, sizeof(message));
	ck_assert_int_eq(sbx_control_decode(text, strlen(text), &message, &error), expected_rc);
	if (expected_rc < 0)
		ck_assert_int_eq(error.error_class, SBX_ERROR_INVALID);
	return message;
}

START_TEST(encode_decode_round_trip)
{
	struct sbx_control_message message = { .type = SBX_CONTROL_REPLY, .stage = 4, .ok = 0 };
	struct sbx_control_message decoded;
	struct sbx_error error = { 0 };
	char buf[SBX_CONTROL_MESSAGE_MAX];
	size_t length;

	snprintf(message.error, sizeof(message.error), "a \"quoted\" reason");
	ck_assert_int_eq(sbx_control_encode(&message, buf, sizeof(buf), &length, &error), 0);
	ck_assert_uint_eq(length, strlen(buf));
	ck_assert_ptr_nonnull(strstr(buf, "\"protocol\":\"sbx-control\""));
	ck_assert_int_eq(sbx_control_decode(buf, length, &decoded, &error), 0);
	ck_assert_int_eq(decoded.type, SBX_CONTROL_REPLY);
	ck_assert_int_eq(decoded.version, SBX_CONTROL_VERSION);
	ck_assert_int_eq(decoded.stage, 4);
	ck_assert_int_eq(decoded.ok, 0);
	ck_assert_str_eq(decoded.error, "a \"quoted\" reason");
}
END_TEST

START_TEST(decode_accepts_newer_version_with_extra_fields)
{
	struct sbx_control_message message = decode_text(
		"{\"protocol\":\"sbx-control\",\"version\":7,\"type\":\"stage-begin\","
		"\"future\":[1,2]}",
		0);

	ck_assert_int_eq(message.version, 7);
	ck_assert_int_eq(message.type, SBX_CONTROL_STAGE_BEGIN);
}
END_TEST

START_TEST(decode_rejects_malformed)
{
	decode_text("", -1);
	decode_text("not json", -1);
	decode_text("[1]", -1);
	decode_text("{\"version\":1,\"type\":\"stage-begin\"}", -1);
	decode_text("{\"protocol\":\"other\",\"version\":1,\"type\":\"stage-begin\"}", -1);
	decode_text("{\"protocol\":\"sbx-control\",\"version\":0,\"type\":\"stage-begin\"}", -1);
	decode_text("{\"protocol\":\"sbx-control\",\"version\":\"1\",\"type\":\"stage-begin\"}", -1);
	decode_text("{\"protocol\":\"sbx-control\",\"version\":1,\"type\":\"reboot\"}", -1);
	decode_text("{\"protocol\":\"sbx-control\",\"version\":1,\"type\":\"stage-end\","
		    "\"stage\":-3}",
		    -1);
	decode_text("{\"protocol\":\"sbx-control\",\"version\":1,\"type\":\"reply\"}", -1);
	/* Trailing bytes after the object are not one message. */
	decode_text("{\"protocol\":\"sbx-control\",\"version\":1,\"type\":\"stage-begin\"}{}", -1);
}
END_TEST

START_TEST(send_receive_passes_descriptor)
{
	struct sbx_control_message message = { .type = SBX_CONTROL_REPLY, .ok = 1, .stage = 2 };
	struct sbx_control_message received;
	struct sbx_error error = { 0 };
	int pair[2], pipe_fds[2], passed = -1;
	char byte = 0;

	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair), 0);
	ck_assert_int_eq(pipe2(pipe_fds, O_CLOEXEC), 0);
	ck_assert_int_eq(sbx_control_send(pair[0], &message, pipe_fds[1], &error), 0);
	ck_assert_int_eq(sbx_control_receive(pair[1], &received, &passed, 1000, &error), 0);
	ck_assert_int_ge(passed, 0);
	ck_assert_int_ne(passed, pipe_fds[1]);
	ck_assert_int_eq(fcntl(passed, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
	ck_assert_int_eq(received.stage, 2);
	/* The received descriptor is the same pipe. */
	ck_assert_int_eq(write(passed, "x", 1), 1);
	ck_assert_int_eq(read(pipe_fds[0], &byte, 1), 1);
	ck_assert_int_eq(byte, 'x');
	close(passed);
	close(pipe_fds[0]);
	close(pipe_fds[1]);
	close(pair[0]);
	close(pair[1]);
}
END_TEST

START_TEST(receive_times_out_and_sees_close)
{
	struct sbx_control_message received;
	struct sbx_error error = { 0 };
	int pair[2];

	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair), 0);
	ck_assert_int_eq(sbx_control_receive(pair[1], &received, NULL, 50, &error), -1);
	ck_assert_int_eq(error.error_class, SBX_ERROR_SYSTEM);
	ck_assert_ptr_nonnull(strstr(error.message, "did not answer"));
	close(pair[0]);
	ck_assert_int_eq(sbx_control_receive(pair[1], &received, NULL, 1000, &error), -1);
	ck_assert_ptr_nonnull(strstr(error.message, "closed"));
	close(pair[1]);
}
END_TEST

START_TEST(listen_creates_private_socket)
{
	char dir[] = "/tmp/sbx-test-control-XXXXXX";
	char path[PATH_MAX];
	struct sbx_error error = { 0 };
	struct stat st;
	int listen_fd, client_fd, server_fd;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/control.sock", dir);
	/* A stale socket file from a crashed init is replaced. */
	ck_assert_int_eq(close(open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0600)), 0);
	listen_fd = sbx_control_listen(path, &error);
	ck_assert_int_ge(listen_fd, 0);
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert(S_ISSOCK(st.st_mode));
	ck_assert_int_eq(st.st_mode & 0077, 0);
	client_fd = sbx_control_connect(path, &error);
	ck_assert_int_ge(client_fd, 0);
	server_fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
	ck_assert_int_ge(server_fd, 0);
	close(server_fd);
	close(client_fd);
	close(listen_fd);
	unlink(path);
	ck_assert_int_eq(sbx_control_connect(path, &error), -1);
	ck_assert_ptr_nonnull(strstr(error.message, "destroy it"));
	rmdir(dir);
}
END_TEST

static Suite *control_suite(void)
{
	Suite *suite = suite_create("local_control");
	TCase *tc = tcase_create("control");

	tcase_add_test(tc, encode_decode_round_trip);
	tcase_add_test(tc, decode_accepts_newer_version_with_extra_fields);
	tcase_add_test(tc, decode_rejects_malformed);
	tcase_add_test(tc, send_receive_passes_descriptor);
	tcase_add_test(tc, receive_times_out_and_sees_close);
	tcase_add_test(tc, listen_creates_private_socket);
	suite_add_tcase(suite, tc);
	return suite;
}

int main(void)
{
	SRunner *runner = srunner_create(control_suite());
	int failed;

	srunner_run_all(runner, CK_NORMAL);
	failed = srunner_ntests_failed(runner);
	srunner_free(runner);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
