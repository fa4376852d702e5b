/* SPDX-License-Identifier: MIT */
/* Status bodies into error classes, query encoding and Retry-After parsing. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "k8s/rest.h"
#include "k8s/status.h"

static const char json[] = "application/json";

static const struct {
	long code;
	const char *content_type;
	const char *body;
	const char *retry_after;
	enum k8s_status_class expected;
	const char *reason;
	const char *message;
	int retryable;
	int64_t retry_after_seconds;
} status_cases[] = {
	{ 200, json, "{\"kind\":\"Pod\"}", NULL, K8S_STATUS_OK, "", "", 0, -1 },
	{ 201, json, "{\"kind\":\"Pod\"}", NULL, K8S_STATUS_OK, "", "", 0, -1 },
	{ 404, json,
	  "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\","
	  "\"message\":\"pods \\\"p\\\" not found\",\"reason\":\"NotFound\",\"details\":{\"name\":"
	  "\"p\",\"kind\":\"pods\"},\"code\":404}",
	  NULL, K8S_STATUS_NOT_FOUND, "NotFound", "pods \"p\" not found", 0, -1 },
	{ 409, json,
	  "{\"kind\":\"Status\",\"status\":\"Failure\",\"message\":\"pods \\\"p\\\" already exists\","
	  "\"reason\":\"AlreadyExists\",\"code\":409}",
	  NULL, K8S_STATUS_ALREADY_EXISTS, "AlreadyExists", "pods \"p\" already exists", 0, -1 },
	{ 409, json,
	  "{\"kind\":\"Status\",\"status\":\"Failure\",\"message\":\"Operation cannot be fulfilled\","
	  "\"reason\":\"Conflict\",\"code\":409}",
	  NULL, K8S_STATUS_CONFLICT, "Conflict", "Operation cannot be fulfilled", 0, -1 },
	{ 422, json,
	  "{\"kind\":\"Status\",\"status\":\"Failure\",\"message\":\"Pod \\\"x\\\" is invalid\","
	  "\"reason\":\"Invalid\",\"details\":{\"kind\":\"Pod\",\"causes\":[{\"reason\":"
	  "\"FieldValueInvalid\",\"field\":\"metadata.name\"}]},\"code\":422}",
	  NULL, K8S_STATUS_INVALID, "Invalid", "Pod \"x\" is invalid", 0, -1 },
	{ 403, json,
	  "{\"kind\":\"Status\",\"status\":\"Failure\",\"message\":\"pods is forbidden: User "
	  "\\\"u\\\" cannot list\",\"reason\":\"Forbidden\",\"code\":403}",
	  NULL, K8S_STATUS_FORBIDDEN, "Forbidden", "pods is forbidden: User \"u\" cannot list", 0,
	  -1 },
	{ 401, json,
	  "{\"kind\":\"Status\",\"status\":\"Failure\",\"message\":\"Unauthorized\",\"reason\":"
	  "\"Unauthorized\",\"code\":401}",
	  NULL, K8S_STATUS_UNAUTHORIZED, "Unauthorized", "Unauthorized", 0, -1 },
	{ 410, json,
	  "{\"kind\":\"Status\",\"status\":\"Failure\",\"message\":\"too old resource version: 1 "
	  "(5)\",\"reason\":\"Expired\",\"code\":410}",
	  NULL, K8S_STATUS_GONE, "Expired", "too old resource version: 1 (5)", 0, -1 },
	{ 410, json, "{\"kind\":\"Status\",\"reason\":\"Gone\",\"message\":\"gone\"}", NULL,
	  K8S_STATUS_GONE, "Gone", "gone", 0, -1 },
	/* API Priority and Fairness responds in plain text with a Retry-After header. */
	{ 429, "text/plain; charset=utf-8", "Too many requests, please try again later.\n", "3",
	  K8S_STATUS_TOO_MANY_REQUESTS, "", "Too many requests, please try again later.", 1, 3 },
	{ 429, json,
	  "{\"kind\":\"Status\",\"status\":\"Failure\",\"message\":\"Cannot evict pod\",\"reason\":"
	  "\"TooManyRequests\",\"details\":{\"retryAfterSeconds\":7},\"code\":429}",
	  NULL, K8S_STATUS_TOO_MANY_REQUESTS, "TooManyRequests", "Cannot evict pod", 1, 7 },
	{ 500, json,
	  "{\"kind\":\"Status\",\"status\":\"Failure\",\"message\":\"Internal error occurred: x\","
	  "\"reason\":\"InternalError\",\"code\":500}",
	  NULL, K8S_STATUS_SERVER_ERROR, "InternalError", "Internal error occurred: x", 1, -1 },
	{ 500, json,
	  "{\"kind\":\"Status\",\"status\":\"Failure\",\"message\":\"the server was unable to return "
	  "a response in the time allotted\",\"reason\":\"Timeout\",\"code\":500}",
	  NULL, K8S_STATUS_TIMEOUT, "Timeout",
	  "the server was unable to return a response in the time allotted", 1, -1 },
	{ 503, json,
	  "{\"kind\":\"Status\",\"status\":\"Failure\",\"message\":\"unavailable\",\"reason\":"
	  "\"ServiceUnavailable\",\"details\":{\"retryAfterSeconds\":2},\"code\":503}",
	  "1", K8S_STATUS_SERVER_ERROR, "ServiceUnavailable", "unavailable", 1, 1 },
	{ 502, "text/html", "<html><body>Bad Gateway</body></html>", NULL,
	  K8S_STATUS_SERVER_ERROR, "", "<html><body>Bad Gateway</body></html>", 1, -1 },
	{ 504, NULL, "", NULL, K8S_STATUS_TIMEOUT, "", "", 1, -1 },
	{ 400, json,
	  "{\"kind\":\"Status\",\"status\":\"Failure\",\"message\":\"Upgrade request required\","
	  "\"reason\":\"BadRequest\",\"code\":400}",
	  NULL, K8S_STATUS_BAD_REQUEST, "BadRequest", "Upgrade request required", 0, -1 },
	{ 415, json, "{\"kind\":\"Status\",\"reason\":\"UnsupportedMediaType\",\"message\":\"m\"}",
	  NULL, K8S_STATUS_BAD_REQUEST, "UnsupportedMediaType", "m", 0, -1 },
	/* A JSON body that is not a Status is not read as one. */
	{ 404, json, "{\"kind\":\"Pod\",\"reason\":\"AlreadyExists\"}", NULL,
	  K8S_STATUS_NOT_FOUND, "", "{\"kind\":\"Pod\",\"reason\":\"AlreadyExists\"}", 0, -1 },
	/* A Status in a text body is not trusted either. */
	{ 409, "text/plain", "{\"kind\":\"Status\",\"reason\":\"AlreadyExists\"}", NULL,
	  K8S_STATUS_CONFLICT, "", "{\"kind\":\"Status\",\"reason\":\"AlreadyExists\"}", 0, -1 },
	{ 500, json, "{broken", NULL, K8S_STATUS_SERVER_ERROR, "", "{broken", 1, -1 },
};

START_TEST(test_status_table)
{
	struct k8s_status status;

	k8s_status_from_response(status_cases[_i].code, status_cases[_i].content_type,
				 status_cases[_i].body, strlen(status_cases[_i].body),
				 status_cases[_i].retry_after, &status);
	ck_assert_int_eq(status.status_class, status_cases[_i].expected);
	ck_assert_int_eq(status.http_code, status_cases[_i].code);
	ck_assert_str_eq(status.reason, status_cases[_i].reason);
	ck_assert_str_eq(status.message, status_cases[_i].message);
	ck_assert_int_eq(k8s_status_retryable(&status), status_cases[_i].retryable);
	ck_assert_int_eq(status.retry_after_seconds, status_cases[_i].retry_after_seconds);
}
END_TEST

START_TEST(test_status_error_classes)
{
	struct k8s_status status = { .status_class = K8S_STATUS_NOT_FOUND };

	ck_assert_int_eq(k8s_status_error_class(&status), SBX_ERROR_NOT_FOUND);
	status.status_class = K8S_STATUS_INVALID;
	ck_assert_int_eq(k8s_status_error_class(&status), SBX_ERROR_INVALID);
	status.status_class = K8S_STATUS_BAD_REQUEST;
	ck_assert_int_eq(k8s_status_error_class(&status), SBX_ERROR_INVALID);
	status.status_class = K8S_STATUS_FORBIDDEN;
	ck_assert_int_eq(k8s_status_error_class(&status), SBX_ERROR_SYSTEM);
	status.status_class = K8S_STATUS_CONNECTION;
	ck_assert_int_eq(k8s_status_error_class(&status), SBX_ERROR_SYSTEM);
	ck_assert_int_eq(k8s_status_retryable(&status), 1);
}
END_TEST

START_TEST(test_status_message_truncated)
{
	char body[2048];
	struct k8s_status status;

	memset(body, 'm', sizeof(body) - 1);
	body[sizeof(body) - 1] = '\0';
	k8s_status_from_response(500, "text/plain", body, strlen(body), NULL, &status);
	ck_assert_uint_eq(strlen(status.message), sizeof(status.message) - 1);
}
END_TEST

static const struct {
	const char *value;
	int64_t now;
	int64_t expected;
} retry_after_cases[] = {
	{ "0", 0, 0 },
	{ "120", 0, 120 },
	{ " 5 ", 0, 5 },
	{ "-1", 0, -1 },
	{ "soon", 0, -1 },
	{ "5x", 0, -1 },
	/* IMF-fixdate: 1994-11-06 08:49:37 UTC is 784111777. */
	{ "Sun, 06 Nov 1994 08:49:37 GMT", 784111770, 7 },
	{ "Sun, 06 Nov 1994 08:49:37 GMT", 784111800, 0 },
};

START_TEST(test_retry_after_table)
{
	ck_assert_int_eq(k8s_status_parse_retry_after(retry_after_cases[_i].value,
						      retry_after_cases[_i].now),
			 retry_after_cases[_i].expected);
}
END_TEST

static const struct {
	const char *value;
	const char *expected;
} escape_cases[] = {
	{ "app=web", "app%3Dweb" },
	{ "app=web,tier in (a,b)", "app%3Dweb%2Ctier%20in%20%28a%2Cb%29" },
	{ "!legacy", "%21legacy" },
	{ "env!=prod", "env%21%3Dprod" },
	{ "app.kubernetes.io/name==x", "app.kubernetes.io%2Fname%3D%3Dx" },
	{ "metadata.name=a+b", "metadata.name%3Da%2Bb" },
	{ "a&b#c?d%e", "a%26b%23c%3Fd%25e" },
	{ "unreserved-._~AZaz09", "unreserved-._~AZaz09" },
	{ "\xc3\xa9", "%C3%A9" },
	{ "", "" },
};

START_TEST(test_escape_table)
{
	char *escaped = k8s_rest_escape(escape_cases[_i].value);

	ck_assert_ptr_nonnull(escaped);
	ck_assert_str_eq(escaped, escape_cases[_i].expected);
	free(escaped);
}
END_TEST

START_TEST(test_query_add)
{
	char *query = NULL;

	ck_assert_int_eq(k8s_rest_query_add(&query, "labelSelector", "app=web,tier!=db"), 0);
	ck_assert_str_eq(query, "labelSelector=app%3Dweb%2Ctier%21%3Ddb");
	ck_assert_int_eq(k8s_rest_query_add(&query, "fieldSelector", "metadata.name=p 1"), 0);
	ck_assert_str_eq(query, "labelSelector=app%3Dweb%2Ctier%21%3Ddb&"
				"fieldSelector=metadata.name%3Dp%201");
	free(query);
}
END_TEST

int main(void)
{
	Suite *suite = suite_create("k8s_rest");
	TCase *tc = tcase_create("rest");
	SRunner *runner;
	int failed;

	tcase_add_loop_test(tc, test_status_table, 0,
			    (int) (sizeof(status_cases) / sizeof(status_cases[0])));
	tcase_add_test(tc, test_status_error_classes);
	tcase_add_test(tc, test_status_message_truncated);
	tcase_add_loop_test(tc, test_retry_after_table, 0,
			    (int) (sizeof(retry_after_cases) / sizeof(retry_after_cases[0])));
	tcase_add_loop_test(tc, test_escape_table, 0,
			    (int) (sizeof(escape_cases) / sizeof(escape_cases[0])));
	tcase_add_test(tc, test_query_add);
	suite_add_tcase(suite, tc);
	runner = srunner_create(suite);
	srunner_run_all(runner, CK_NORMAL);
	failed = srunner_ntests_failed(runner);
	srunner_free(runner);
	return failed == 0 ? 0 : 1;
}
