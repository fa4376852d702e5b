/* SPDX-License-Identifier: MIT */
/* The watch event parser, fed the same stream split at every byte boundary. */
#include <check.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "k8s/watch.h"

/* Events as a server sends them: CRLF, a blank line, a multi-byte UTF-8 name, an event larger
 * than a typical chunk, a bookmark and an ERROR with code 410. */
static const char *const stream_lines[] = {
	"{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"name\":\"a\",\"resourceVersion\":\"11\"}}}\n",
	"{\"type\":\"MODIFIED\",\"object\":{\"metadata\":{\"name\":\"b\\n\",\"resourceVersion\":\"18\"}}}\r\n",
	"\n",
	"{\"type\":\"DELETED\",\"object\":{\"metadata\":{\"name\":\"\xc3\xa9t\xc3\xa9\",\"resourceVersion\":\"25\"}}}\n",
	"{\"type\":\"BOOKMARK\",\"object\":{\"kind\":\"Pod\",\"apiVersion\":\"v1\",\"metadata\":{\"resourceVersion\":\"32\"}}}\n",
	"{\"type\":\"ERROR\",\"object\":{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"too old resource version: 1 (32)\",\"reason\":\"Expired\",\"code\":410}}\n",
};

struct recorded {
	char summary[16][128];
	int count;
	int stop_after; /* 0: never */
	int fail_at; /* 0: never */
};

static int record(void *userdata, const char *type, struct json_object *object,
		  struct sbx_error *error)
{
	struct recorded *recorded = userdata;
	struct json_object *metadata = NULL, *version = NULL;

	ck_assert_int_lt(recorded->count, 16);
	json_object_object_get_ex(object, "metadata", &metadata);
	json_object_object_get_ex(metadata, "resourceVersion", &version);
	snprintf(recorded->summary[recorded->count], sizeof(recorded->summary[0]), "%s %s", type,
		 version != NULL ? json_object_get_string(version) : "-");
	recorded->count++;
	if (recorded->fail_at != 0 && recorded->count == recorded->fail_at)
		return sbx_error_set(error, SBX_ERROR_SYSTEM, "callback failed on purpose");
	if (recorded->stop_after != 0 && recorded->count == recorded->stop_after)
		return 1;
	return 0;
}

static char *whole_stream(size_t *length)
{
	size_t total = 0, i;
	char *stream, *end;

	for (i = 0; i < sizeof(stream_lines) / sizeof(stream_lines[0]); i++)
		total += strlen(stream_lines[i]);
	/* A large event pushes the line buffer past its first size. */
	total += 20000 + 200;
	stream = malloc(total + 1);
	ck_assert_ptr_nonnull(stream);
	stream[0] = '\0';
	for (i = 0; i < 2; i++)
		strcat(stream, stream_lines[i]);
	strcat(stream, "{\"type\":\"MODIFIED\",\"object\":{\"metadata\":{\"resourceVersion\":\"20\","
		       "\"annotations\":{\"big\":\"");
	end = stream + strlen(stream);
	memset(end, 'x', 20000);
	end[20000] = '\0';
	strcat(stream, "\"}}}}\n");
	for (i = 2; i < sizeof(stream_lines) / sizeof(stream_lines[0]); i++)
		strcat(stream, stream_lines[i]);
	*length = strlen(stream);
	return stream;
}

static void check_recorded(const struct recorded *recorded)
{
	static const char *const expected[] = { "ADDED 11", "MODIFIED 18", "MODIFIED 20",
						"DELETED 25", "BOOKMARK 32", "ERROR -" };
	size_t i;

	ck_assert_int_eq(recorded->count, (int) (sizeof(expected) / sizeof(expected[0])));
	for (i = 0; i < sizeof(expected) / sizeof(expected[0]); i++)
		ck_assert_str_eq(recorded->summary[i], expected[i]);
}

START_TEST(test_watch_parser_whole_stream)
{
	struct k8s_watch_parser parser;
	struct recorded recorded = { 0 };
	struct sbx_error error;
	size_t length;
	char *stream = whole_stream(&length);

	k8s_watch_parser_init(&parser, 0, record, &recorded);
	ck_assert_int_eq(k8s_watch_parser_feed(&parser, stream, length, &error), 0);
	check_recorded(&recorded);
	ck_assert_uint_eq(k8s_watch_parser_pending(&parser), 0);
	k8s_watch_parser_clear(&parser);
	free(stream);
}
END_TEST

START_TEST(test_watch_parser_every_split)
{
	size_t length, split;
	char *stream = whole_stream(&length);

	for (split = 0; split <= length; split++) {
		struct k8s_watch_parser parser;
		struct recorded recorded = { 0 };
		struct sbx_error error;

		k8s_watch_parser_init(&parser, 0, record, &recorded);
		ck_assert_int_eq(k8s_watch_parser_feed(&parser, stream, split, &error), 0);
		ck_assert_int_eq(k8s_watch_parser_feed(&parser, stream + split, length - split,
						       &error),
				 0);
		check_recorded(&recorded);
		k8s_watch_parser_clear(&parser);
	}
	free(stream);
}
END_TEST

START_TEST(test_watch_parser_byte_by_byte)
{
	struct k8s_watch_parser parser;
	struct recorded recorded = { 0 };
	struct sbx_error error;
	size_t length, i;
	char *stream = whole_stream(&length);

	k8s_watch_parser_init(&parser, 0, record, &recorded);
	for (i = 0; i < length; i++)
		ck_assert_int_eq(k8s_watch_parser_feed(&parser, stream + i, 1, &error), 0);
	check_recorded(&recorded);
	k8s_watch_parser_clear(&parser);
	free(stream);
}
END_TEST

START_TEST(test_watch_parser_cut_stream_pending)
{
	struct k8s_watch_parser parser;
	struct recorded recorded = { 0 };
	struct sbx_error error;
	const char *line = stream_lines[0];

	k8s_watch_parser_init(&parser, 0, record, &recorded);
	ck_assert_int_eq(k8s_watch_parser_feed(&parser, line, strlen(line) - 5, &error), 0);
	ck_assert_int_eq(recorded.count, 0);
	ck_assert_uint_eq(k8s_watch_parser_pending(&parser), strlen(line) - 5);
	k8s_watch_parser_clear(&parser);
}
END_TEST

START_TEST(test_watch_parser_line_limit)
{
	struct k8s_watch_parser parser;
	struct recorded recorded = { 0 };
	struct sbx_error error;
	const char *line = stream_lines[0];
	size_t length = strlen(line);

	/* The limit applies to a line spread over chunks and to one within a chunk. */
	k8s_watch_parser_init(&parser, length - 2, record, &recorded);
	ck_assert_int_eq(k8s_watch_parser_feed(&parser, line, 10, &error), 0);
	ck_assert_int_eq(k8s_watch_parser_feed(&parser, line + 10, length - 10, &error), -1);
	ck_assert_ptr_nonnull(strstr(error.message, "longer than the limit"));
	k8s_watch_parser_clear(&parser);

	k8s_watch_parser_init(&parser, length - 2, record, &recorded);
	ck_assert_int_eq(k8s_watch_parser_feed(&parser, line, length, &error), -1);
	k8s_watch_parser_clear(&parser);

	k8s_watch_parser_init(&parser, length - 1, record, &recorded);
	ck_assert_int_eq(k8s_watch_parser_feed(&parser, line, length, &error), 0);
	ck_assert_int_eq(recorded.count, 1);
	k8s_watch_parser_clear(&parser);
}
END_TEST

static const char *const bad_lines[] = {
	"{\"type\":\"ADDED\",\"object\":{}\n", /* truncated JSON */
	"{\"type\":\"ADDED\"}\n", /* no object */
	"{\"object\":{}}\n", /* no type */
	"{\"type\":3,\"object\":{}}\n", /* type not a string */
	"[]\n",
	"{\"type\":\"ADDED\",\"object\":{}} {\"type\":\"ADDED\",\"object\":{}}\n", /* two objects */
	"{\"type\":\"ADDED\",\"object\":\"text\"}\n",
};

START_TEST(test_watch_parser_rejects_bad_events)
{
	struct k8s_watch_parser parser;
	struct recorded recorded = { 0 };
	struct sbx_error error;

	k8s_watch_parser_init(&parser, 0, record, &recorded);
	ck_assert_int_eq(k8s_watch_parser_feed(&parser, bad_lines[_i], strlen(bad_lines[_i]),
					       &error),
			 -1);
	ck_assert_int_eq(recorded.count, 0);
	k8s_watch_parser_clear(&parser);
}
END_TEST

START_TEST(test_watch_parser_callback_stop_and_failure)
{
	struct k8s_watch_parser parser;
	struct recorded recorded = { .stop_after = 2 };
	struct sbx_error error;
	size_t length;
	char *stream = whole_stream(&length);

	k8s_watch_parser_init(&parser, 0, record, &recorded);
	ck_assert_int_eq(k8s_watch_parser_feed(&parser, stream, length, &error), 1);
	ck_assert_int_eq(recorded.count, 2);
	k8s_watch_parser_clear(&parser);

	memset(&recorded, 0, sizeof(recorded));
	recorded.fail_at = 3;
	k8s_watch_parser_init(&parser, 0, record, &recorded);
	ck_assert_int_eq(k8s_watch_parser_feed(&parser, stream, length, &error), -1);
	ck_assert_str_eq(error.message, "callback failed on purpose");
	ck_assert_int_eq(recorded.count, 3);
	k8s_watch_parser_clear(&parser);
	free(stream);
}
END_TEST

int main(void)
{
	Suite *suite = suite_create("k8s_watch");
	TCase *tc = tcase_create("parser");
	SRunner *runner;
	int failed;

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_watch_parser_whole_stream);
	tcase_add_test(tc, test_watch_parser_every_split);
	tcase_add_test(tc, test_watch_parser_byte_by_byte);
	tcase_add_test(tc, test_watch_parser_cut_stream_pending);
	tcase_add_test(tc, test_watch_parser_line_limit);
	tcase_add_loop_test(tc, test_watch_parser_rejects_bad_events, 0,
			    (int) (sizeof(bad_lines) / sizeof(bad_lines[0])));
	tcase_add_test(tc, test_watch_parser_callback_stop_and_failure);
	suite_add_tcase(suite, tc);
	runner = srunner_create(suite);
	srunner_run_all(runner, CK_NORMAL);
	failed = srunner_ntests_failed(runner);
	srunner_free(runner);
	return failed == 0 ? 0 : 1;
}
