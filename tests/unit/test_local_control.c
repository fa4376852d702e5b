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

/* Encodes MESSAGE and decodes it back into *DECODED. */
static void round_trip(const struct sbx_control_message *message,
		       struct sbx_control_message *decoded)
{
	struct sbx_error error = { 0 };
	char buf[SBX_CONTROL_MESSAGE_MAX];
	size_t length;

	ck_assert_int_eq(sbx_control_encode(message, buf, sizeof(buf), &length, &error), 0);
	memset(decoded, 0, sizeof(*decoded));
	ck_assert_int_eq(sbx_control_decode(buf, length, decoded, &error), 0);
}

START_TEST(stage_run_round_trip_keeps_fd_roles)
{
	struct sbx_control_message message = {
		.type = SBX_CONTROL_STAGE_RUN,
		.stage = 3,
		.fd_roles = { SBX_CONTROL_FD_REQUEST, SBX_CONTROL_FD_CGROUP, SBX_CONTROL_FD_STDOUT,
			      SBX_CONTROL_FD_STDERR, SBX_CONTROL_FD_SCRIPT },
		.fd_count = 5,
	};
	struct sbx_control_message decoded;

	round_trip(&message, &decoded);
	ck_assert_int_eq(decoded.type, SBX_CONTROL_STAGE_RUN);
	ck_assert_int_eq(decoded.stage, 3);
	ck_assert_uint_eq(decoded.fd_count, 5);
	ck_assert_int_eq(decoded.fd_roles[0], SBX_CONTROL_FD_REQUEST);
	ck_assert_int_eq(decoded.fd_roles[1], SBX_CONTROL_FD_CGROUP);
	ck_assert_int_eq(decoded.fd_roles[2], SBX_CONTROL_FD_STDOUT);
	ck_assert_int_eq(decoded.fd_roles[3], SBX_CONTROL_FD_STDERR);
	ck_assert_int_eq(decoded.fd_roles[4], SBX_CONTROL_FD_SCRIPT);
}
END_TEST

START_TEST(step_exit_carries_code_or_signal)
{
	struct sbx_control_message code = { .type = SBX_CONTROL_STEP_EXIT, .stage = 2,
					    .exit_code = 42 };
	struct sbx_control_message killed = { .type = SBX_CONTROL_STEP_EXIT, .stage = 2,
					      .signal = 9 };
	struct sbx_control_message decoded;

	round_trip(&code, &decoded);
	ck_assert_int_eq(decoded.exit_code, 42);
	ck_assert_int_eq(decoded.signal, 0);
	round_trip(&killed, &decoded);
	ck_assert_int_eq(decoded.signal, 9);
	ck_assert_int_eq(decoded.exit_code, 0);
}
END_TEST

START_TEST(reply_carries_pid_and_unsupported)
{
	struct sbx_control_message started = { .type = SBX_CONTROL_REPLY, .ok = 1, .stage = 1,
					       .pid = 17 };
	struct sbx_control_message refused = { .type = SBX_CONTROL_REPLY, .stage = 1,
					       .unsupported = 1 };
	struct sbx_control_message decoded;

	round_trip(&started, &decoded);
	ck_assert_int_eq(decoded.ok, 1);
	ck_assert_int_eq(decoded.pid, 17);
	ck_assert_int_eq(decoded.unsupported, 0);
	round_trip(&refused, &decoded);
	ck_assert_int_eq(decoded.ok, 0);
	ck_assert_int_eq(decoded.unsupported, 1);
}
END_TEST

START_TEST(decode_rejects_malformed_step_messages)
{
	/* Both or neither of exit_code and signal. */
	decode_text("{\"protocol\":\"sbx-control\",\"version\":2,\"type\":\"step-exit\","
		    "\"stage\":1,\"exit_code\":1,\"signal\":9}",
		    -1);
	decode_text("{\"protocol\":\"sbx-control\",\"version\":2,\"type\":\"step-exit\","
		    "\"stage\":1}",
		    -1);
	decode_text("{\"protocol\":\"sbx-control\",\"version\":2,\"type\":\"step-exit\","
		    "\"stage\":1,\"exit_code\":256}",
		    -1);
	/* stage-run without descriptors, with an unknown one, with too many. */
	decode_text("{\"protocol\":\"sbx-control\",\"version\":2,\"type\":\"stage-run\","
		    "\"stage\":1}",
		    -1);
	decode_text("{\"protocol\":\"sbx-control\",\"version\":2,\"type\":\"stage-run\","
		    "\"stage\":1,\"fds\":[\"request\",\"tty\"]}",
		    -1);
	decode_text("{\"protocol\":\"sbx-control\",\"version\":2,\"type\":\"stage-run\","
		    "\"stage\":1,\"fds\":[\"stdin\",\"stdin\",\"stdin\",\"stdin\",\"stdin\","
		    "\"stdin\",\"stdin\",\"stdin\",\"stdin\"]}",
		    -1);
}
END_TEST

START_TEST(version_one_reply_means_no_stage_run)
{
	/* What an init of an older sbx sends: exec must then join instead of sending stage-run. */
	struct sbx_control_message message = decode_text(
		"{\"protocol\":\"sbx-control\",\"version\":1,\"type\":\"reply\",\"stage\":1,"
		"\"ok\":true}",
		0);

	ck_assert_int_eq(message.ok, 1);
	ck_assert_int_lt(message.version, SBX_CONTROL_VERSION_STAGE_RUN);
	ck_assert_int_ge(SBX_CONTROL_VERSION, SBX_CONTROL_VERSION_STAGE_RUN);
}
END_TEST

/* True when FD is an open descriptor. */
static int fd_open(int fd)
{
	return fcntl(fd, F_GETFD) >= 0;
}

START_TEST(send_receive_passes_several_descriptors)
{
	struct sbx_control_message message = {
		.type = SBX_CONTROL_STAGE_RUN,
		.stage = 1,
		.fd_roles = { SBX_CONTROL_FD_REQUEST, SBX_CONTROL_FD_STDOUT, SBX_CONTROL_FD_STDERR },
		.fd_count = 3,
	};
	struct sbx_control_message received;
	struct sbx_error error = { 0 };
	int pair[2], pipes[3][2], sent[3], fds[SBX_CONTROL_MAX_FDS];
	size_t count = 0;
	char byte = 0;

	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair), 0);
	for (int i = 0; i < 3; i++) {
		ck_assert_int_eq(pipe2(pipes[i], O_CLOEXEC), 0);
		sent[i] = pipes[i][1];
	}
	ck_assert_int_eq(sbx_control_send_fds(pair[0], &message, sent, 3, &error), 0);
	ck_assert_int_eq(sbx_control_receive_fds(pair[1], &received, fds, SBX_CONTROL_MAX_FDS,
						 &count, 1000, &error),
			 0);
	ck_assert_uint_eq(count, 3);
	ck_assert_uint_eq(received.fd_count, 3);
	/* Each received descriptor is its pipe, in order. */
	for (int i = 0; i < 3; i++) {
		char expected = (char) ('a' + i);

		ck_assert_int_eq(fcntl(fds[i], F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
		ck_assert_int_eq(write(fds[i], &expected, 1), 1);
		ck_assert_int_eq(read(pipes[i][0], &byte, 1), 1);
		ck_assert_int_eq(byte, expected);
		close(fds[i]);
	}

	/* A receiver that keeps one descriptor closes the others: their pipes see EOF. */
	ck_assert_int_eq(sbx_control_send_fds(pair[0], &message, sent, 3, &error), 0);
	for (int i = 0; i < 3; i++)
		close(pipes[i][1]);
	ck_assert_int_eq(sbx_control_receive_fds(pair[1], &received, fds, 1, &count, 1000, &error),
			 0);
	ck_assert_uint_eq(count, 1);
	ck_assert(fd_open(fds[0]));
	ck_assert_int_eq(read(pipes[1][0], &byte, 1), 0);
	ck_assert_int_eq(read(pipes[2][0], &byte, 1), 0);
	close(fds[0]);
	ck_assert_int_eq(read(pipes[0][0], &byte, 1), 0);
	for (int i = 0; i < 3; i++)
		close(pipes[i][0]);
	close(pair[0]);
	close(pair[1]);
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
	tcase_add_test(tc, stage_run_round_trip_keeps_fd_roles);
	tcase_add_test(tc, step_exit_carries_code_or_signal);
	tcase_add_test(tc, reply_carries_pid_and_unsupported);
	tcase_add_test(tc, decode_rejects_malformed_step_messages);
	tcase_add_test(tc, version_one_reply_means_no_stage_run);
	tcase_add_test(tc, send_receive_passes_several_descriptors);
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
