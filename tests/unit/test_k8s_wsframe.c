/* SPDX-License-Identifier: MIT */
/* The exec channel layer, fed messages split across receive callbacks in every way. */
#include <check.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "k8s/wsframe.h"

struct captured {
	unsigned char out[2][4096];
	size_t length[2];
	int fail_output;
};

static int capture(void *userdata, int channel, const void *data, size_t length)
{
	struct captured *captured = userdata;
	int index = channel == K8S_CHANNEL_STDOUT ? 0 : 1;

	if (captured->fail_output)
		return -1;
	ck_assert_uint_le(captured->length[index] + length, sizeof(captured->out[index]));
	memcpy(captured->out[index] + captured->length[index], data, length);
	captured->length[index] += length;
	return 0;
}

struct message {
	unsigned char bytes[512];
	size_t length;
};

static void add_message(struct message *messages, size_t *count, uint8_t channel,
			const void *payload, size_t length)
{
	struct message *m = &messages[(*count)++];

	m->length = k8s_wsframe_encode(channel, payload, length, m->bytes);
}

static const char nonzero_status[] =
	"{\"metadata\":{},\"status\":\"Failure\",\"message\":\"command terminated with "
	"non-zero exit code: error executing command [sh -c exit 3], exit code 3\",\"reason\":"
	"\"NonZeroExitCode\",\"details\":{\"causes\":[{\"reason\":\"ExitCode\",\"message\":\"3\"}]}}";

/* The messages of a typical session: ready frame, output on both channels with bytes that
 * look like channel ids, and the status. */
static size_t session_messages(struct message *messages)
{
	static const unsigned char binary[] = { 0x00, 0x01, 0x02, 0x03, 0xff, 0x00, '\n' };
	size_t count = 0;

	add_message(messages, &count, K8S_CHANNEL_STDOUT, NULL, 0);
	add_message(messages, &count, K8S_CHANNEL_STDOUT, "hello ", 6);
	add_message(messages, &count, K8S_CHANNEL_STDERR, "warning\n", 8);
	add_message(messages, &count, K8S_CHANNEL_STDOUT, binary, sizeof(binary));
	add_message(messages, &count, K8S_CHANNEL_STDOUT, "world\n", 6);
	add_message(messages, &count, K8S_CHANNEL_STATUS, nonzero_status,
		    sizeof(nonzero_status) - 1);
	return count;
}

static void check_session_result(const struct captured *captured,
				 const struct k8s_wsframe_reader *reader)
{
	static const unsigned char expected_stdout[] = { 'h', 'e', 'l', 'l', 'o', ' ', 0x00, 0x01,
							 0x02, 0x03, 0xff, 0x00, '\n', 'w', 'o',
							 'r', 'l', 'd', '\n' };

	ck_assert_uint_eq(captured->length[0], sizeof(expected_stdout));
	ck_assert_mem_eq(captured->out[0], expected_stdout, sizeof(expected_stdout));
	ck_assert_uint_eq(captured->length[1], 8);
	ck_assert_mem_eq(captured->out[1], "warning\n", 8);
	ck_assert_int_eq(reader->have_status, 1);
	ck_assert_int_eq(reader->status_ok, 1);
	ck_assert_int_eq(reader->exit_code, 3);
}

START_TEST(test_wsframe_whole_messages)
{
	struct message messages[8];
	size_t count = session_messages(messages), i;
	struct k8s_wsframe_reader reader;
	struct captured captured = { 0 };
	struct sbx_error error;

	k8s_wsframe_reader_init(&reader, capture, &captured);
	for (i = 0; i < count; i++)
		ck_assert_int_eq(k8s_wsframe_feed(&reader, messages[i].bytes, messages[i].length, 1,
						  &error),
				 0);
	check_session_result(&captured, &reader);
	k8s_wsframe_reader_clear(&reader);
}
END_TEST

/* Every message split in two at every position, including an empty first or last piece. */
START_TEST(test_wsframe_split_everywhere)
{
	struct message messages[8];
	size_t count = session_messages(messages), i, split, target;

	for (target = 0; target < count; target++) {
		for (split = 0; split <= messages[target].length; split++) {
			struct k8s_wsframe_reader reader;
			struct captured captured = { 0 };
			struct sbx_error error;

			k8s_wsframe_reader_init(&reader, capture, &captured);
			for (i = 0; i < count; i++) {
				const struct message *m = &messages[i];

				if (i != target) {
					ck_assert_int_eq(k8s_wsframe_feed(&reader, m->bytes,
									  m->length, 1, &error),
							 0);
					continue;
				}
				ck_assert_int_eq(k8s_wsframe_feed(&reader, m->bytes, split, 0,
								  &error),
						 0);
				ck_assert_int_eq(k8s_wsframe_feed(&reader, m->bytes + split,
								  m->length - split, 1, &error),
						 0);
			}
			check_session_result(&captured, &reader);
			k8s_wsframe_reader_clear(&reader);
		}
	}
}
END_TEST

START_TEST(test_wsframe_byte_by_byte)
{
	struct message messages[8];
	size_t count = session_messages(messages), i, j;
	struct k8s_wsframe_reader reader;
	struct captured captured = { 0 };
	struct sbx_error error;

	k8s_wsframe_reader_init(&reader, capture, &captured);
	for (i = 0; i < count; i++)
		for (j = 0; j < messages[i].length; j++)
			ck_assert_int_eq(k8s_wsframe_feed(&reader, messages[i].bytes + j, 1,
							  j + 1 == messages[i].length, &error),
					 0);
	check_session_result(&captured, &reader);
	k8s_wsframe_reader_clear(&reader);
}
END_TEST

START_TEST(test_wsframe_empty_message_rejected)
{
	struct k8s_wsframe_reader reader;
	struct captured captured = { 0 };
	struct sbx_error error;

	k8s_wsframe_reader_init(&reader, capture, &captured);
	ck_assert_int_eq(k8s_wsframe_feed(&reader, "", 0, 1, &error), -1);
	ck_assert_ptr_nonnull(strstr(error.message, "without a channel byte"));
	k8s_wsframe_reader_clear(&reader);
}
END_TEST

START_TEST(test_wsframe_second_status_rejected)
{
	static const char success[] = "\x03{\"metadata\":{},\"status\":\"Success\"}";
	struct k8s_wsframe_reader reader;
	struct captured captured = { 0 };
	struct sbx_error error;

	k8s_wsframe_reader_init(&reader, capture, &captured);
	ck_assert_int_eq(k8s_wsframe_feed(&reader, success, sizeof(success) - 1, 1, &error), 0);
	ck_assert_int_eq(reader.exit_code, 0);
	ck_assert_int_eq(k8s_wsframe_feed(&reader, success, sizeof(success) - 1, 1, &error), -1);
	ck_assert_ptr_nonnull(strstr(error.message, "second status"));
	k8s_wsframe_reader_clear(&reader);
}
END_TEST

START_TEST(test_wsframe_oversized_status_rejected)
{
	struct k8s_wsframe_reader reader;
	struct captured captured = { 0 };
	struct sbx_error error;
	char *big = malloc(K8S_WSFRAME_STATUS_MAX + 2);
	int ret;

	ck_assert_ptr_nonnull(big);
	memset(big, ' ', K8S_WSFRAME_STATUS_MAX + 2);
	big[0] = K8S_CHANNEL_STATUS;
	k8s_wsframe_reader_init(&reader, capture, &captured);
	ret = k8s_wsframe_feed(&reader, big, K8S_WSFRAME_STATUS_MAX / 2, 0, &error);
	ck_assert_int_eq(ret, 0);
	ret = k8s_wsframe_feed(&reader, big + K8S_WSFRAME_STATUS_MAX / 2,
			       K8S_WSFRAME_STATUS_MAX / 2 + 2, 1, &error);
	ck_assert_int_eq(ret, -1);
	ck_assert_ptr_nonnull(strstr(error.message, "longer than"));
	k8s_wsframe_reader_clear(&reader);
	free(big);
}
END_TEST

START_TEST(test_wsframe_output_failure_reported)
{
	struct k8s_wsframe_reader reader;
	struct captured captured = { .fail_output = 1 };
	struct sbx_error error;

	k8s_wsframe_reader_init(&reader, capture, &captured);
	ck_assert_int_eq(k8s_wsframe_feed(&reader, "\x01x", 2, 1, &error), -1);
	k8s_wsframe_reader_clear(&reader);
}
END_TEST

START_TEST(test_wsframe_unknown_channel_ignored)
{
	struct k8s_wsframe_reader reader;
	struct captured captured = { 0 };
	struct sbx_error error;

	k8s_wsframe_reader_init(&reader, capture, &captured);
	ck_assert_int_eq(k8s_wsframe_feed(&reader, "\x07zzz", 4, 1, &error), 0);
	ck_assert_int_eq(k8s_wsframe_feed(&reader, "\x01ok", 3, 1, &error), 0);
	ck_assert_uint_eq(captured.length[0], 2);
	ck_assert_int_eq(reader.have_status, 0);
	k8s_wsframe_reader_clear(&reader);
}
END_TEST

static const struct {
	const char *json;
	int ok;
	int exit_code;
	const char *message_part;
} status_cases[] = {
	{ "{\"metadata\":{},\"status\":\"Success\"}", 1, 0, NULL },
	{ "{\"kind\":\"Status\",\"status\":\"Success\",\"code\":200}", 1, 0, NULL },
	{ "{\"status\":\"Failure\",\"reason\":\"NonZeroExitCode\",\"details\":{\"causes\":"
	  "[{\"reason\":\"ExitCode\",\"message\":\"137\"}]}}",
	  1, 137, NULL },
	{ "{\"status\":\"Failure\",\"reason\":\"NonZeroExitCode\",\"details\":{\"causes\":"
	  "[{\"reason\":\"Other\",\"message\":\"x\"},{\"reason\":\"ExitCode\",\"message\":\"1\"}]}}",
	  1, 1, NULL },
	{ "{\"status\":\"Failure\",\"reason\":\"NonZeroExitCode\",\"message\":\"boom\"}", 0, -1,
	  "without a valid ExitCode" },
	{ "{\"status\":\"Failure\",\"reason\":\"NonZeroExitCode\",\"details\":{\"causes\":"
	  "[{\"reason\":\"ExitCode\",\"message\":\"256\"}]}}",
	  0, -1, "without a valid ExitCode" },
	{ "{\"status\":\"Failure\",\"reason\":\"NonZeroExitCode\",\"details\":{\"causes\":"
	  "[{\"reason\":\"ExitCode\",\"message\":\"-1\"}]}}",
	  0, -1, "without a valid ExitCode" },
	{ "{\"status\":\"Failure\",\"reason\":\"InternalError\",\"message\":\"container not "
	  "found\",\"code\":500}",
	  0, -1, "InternalError: container not found" },
	{ "{\"status\":\"Failure\"}", 0, -1, "no reason" },
	{ "not json", 0, -1, "no JSON object" },
	{ "[1,2]", 0, -1, "no JSON object" },
	{ "", 0, -1, "no JSON object" },
};

START_TEST(test_wsframe_status_table)
{
	int exit_code = -1;
	char message[256] = "";
	int ret;

	ret = k8s_wsframe_parse_status(status_cases[_i].json, strlen(status_cases[_i].json),
				       &exit_code, message, sizeof(message));
	ck_assert_int_eq(ret, status_cases[_i].ok ? 0 : -1);
	if (status_cases[_i].ok)
		ck_assert_int_eq(exit_code, status_cases[_i].exit_code);
	else
		ck_assert_ptr_nonnull(strstr(message, status_cases[_i].message_part));
}
END_TEST

int main(void)
{
	Suite *suite = suite_create("k8s_wsframe");
	TCase *tc = tcase_create("wsframe");
	SRunner *runner;
	int failed;

	tcase_add_test(tc, test_wsframe_whole_messages);
	tcase_add_test(tc, test_wsframe_split_everywhere);
	tcase_add_test(tc, test_wsframe_byte_by_byte);
	tcase_add_test(tc, test_wsframe_empty_message_rejected);
	tcase_add_test(tc, test_wsframe_second_status_rejected);
	tcase_add_test(tc, test_wsframe_oversized_status_rejected);
	tcase_add_test(tc, test_wsframe_output_failure_reported);
	tcase_add_test(tc, test_wsframe_unknown_channel_ignored);
	tcase_add_loop_test(tc, test_wsframe_status_table, 0,
			    (int) (sizeof(status_cases) / sizeof(status_cases[0])));
	suite_add_tcase(suite, tc);
	runner = srunner_create(suite);
	srunner_run_all(runner, CK_NORMAL);
	failed = srunner_ntests_failed(runner);
	srunner_free(runner);
	return failed == 0 ? 0 : 1;
}
