/* SPDX-License-Identifier: MIT */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <json-c/json.h>

#include "util.h"

#include "status.h"

const char *k8s_status_class_name(enum k8s_status_class status_class)
{
	switch (status_class) {
	case K8S_STATUS_OK:
		return "OK";
	case K8S_STATUS_BAD_REQUEST:
		return "BadRequest";
	case K8S_STATUS_UNAUTHORIZED:
		return "Unauthorized";
	case K8S_STATUS_FORBIDDEN:
		return "Forbidden";
	case K8S_STATUS_NOT_FOUND:
		return "NotFound";
	case K8S_STATUS_ALREADY_EXISTS:
		return "AlreadyExists";
	case K8S_STATUS_CONFLICT:
		return "Conflict";
	case K8S_STATUS_GONE:
		return "Gone";
	case K8S_STATUS_INVALID:
		return "Invalid";
	case K8S_STATUS_TOO_MANY_REQUESTS:
		return "TooManyRequests";
	case K8S_STATUS_SERVER_ERROR:
		return "ServerError";
	case K8S_STATUS_TIMEOUT:
		return "Timeout";
	case K8S_STATUS_CONNECTION:
		return "ConnectionError";
	case K8S_STATUS_TLS_VERIFY:
		return "TLSVerifyError";
	}
	return "Unknown";
}

static enum k8s_status_class classify(long code, const char *reason)
{
	/* The reason is more precise than the code where both exist (409 has two meanings,
	 * 500 with reason Timeout is a timeout). */
	if (strcmp(reason, "AlreadyExists") == 0)
		return K8S_STATUS_ALREADY_EXISTS;
	if (strcmp(reason, "Conflict") == 0)
		return K8S_STATUS_CONFLICT;
	if (strcmp(reason, "NotFound") == 0)
		return K8S_STATUS_NOT_FOUND;
	if (strcmp(reason, "Gone") == 0 || strcmp(reason, "Expired") == 0)
		return K8S_STATUS_GONE;
	if (strcmp(reason, "Invalid") == 0)
		return K8S_STATUS_INVALID;
	if (strcmp(reason, "Timeout") == 0 || strcmp(reason, "ServerTimeout") == 0)
		return K8S_STATUS_TIMEOUT;
	if (strcmp(reason, "TooManyRequests") == 0)
		return K8S_STATUS_TOO_MANY_REQUESTS;
	if (strcmp(reason, "Unauthorized") == 0)
		return K8S_STATUS_UNAUTHORIZED;
	if (strcmp(reason, "Forbidden") == 0)
		return K8S_STATUS_FORBIDDEN;

	if (code >= 200 && code < 300)
		return K8S_STATUS_OK;
	switch (code) {
	case 401:
		return K8S_STATUS_UNAUTHORIZED;
	case 403:
		return K8S_STATUS_FORBIDDEN;
	case 404:
		return K8S_STATUS_NOT_FOUND;
	case 408:
	case 504:
		return K8S_STATUS_TIMEOUT;
	case 409:
		return K8S_STATUS_CONFLICT;
	case 410:
		return K8S_STATUS_GONE;
	case 422:
		return K8S_STATUS_INVALID;
	case 429:
		return K8S_STATUS_TOO_MANY_REQUESTS;
	}
	if (code >= 500)
		return K8S_STATUS_SERVER_ERROR;
	if (code == 0)
		return K8S_STATUS_CONNECTION;
	return K8S_STATUS_BAD_REQUEST;
}

int64_t k8s_status_parse_retry_after(const char *value, int64_t now)
{
	struct tm tm = { 0 };
	const char *end;
	int64_t seconds;

	while (*value == ' ')
		value++;
	if (isdigit((unsigned char) *value)) {
		char *stop;

		seconds = strtoll(value, &stop, 10);
		while (*stop == ' ' || *stop == '\r' || *stop == '\n')
			stop++;
		return *stop == '\0' && seconds >= 0 ? seconds : -1;
	}
	/* IMF-fixdate, e.g. "Sun, 06 Nov 1994 08:49:37 GMT". */
	end = strptime(value, "%a, %d %b %Y %H:%M:%S GMT", &tm);
	if (end == NULL)
		return -1;
	seconds = (int64_t) timegm(&tm) - now;
	return seconds > 0 ? seconds : 0;
}

void k8s_status_from_object(struct json_object *object, struct k8s_status *status)
{
	struct json_object *value, *details;
	const char *text;

	if (object == NULL || !json_object_is_type(object, json_type_object))
		return;
	if (json_object_object_get_ex(object, "reason", &value) &&
	    (text = json_object_get_string(value)) != NULL)
		snprintf(status->reason, sizeof(status->reason), "%s", text);
	if (json_object_object_get_ex(object, "message", &value) &&
	    (text = json_object_get_string(value)) != NULL)
		snprintf(status->message, sizeof(status->message), "%s", text);
	if (json_object_object_get_ex(object, "code", &value) &&
	    json_object_is_type(value, json_type_int) && status->http_code == 0)
		status->http_code = (long) json_object_get_int64(value);
	if (json_object_object_get_ex(object, "details", &details) &&
	    json_object_object_get_ex(details, "retryAfterSeconds", &value) &&
	    json_object_is_type(value, json_type_int) && status->retry_after_seconds < 0)
		status->retry_after_seconds = json_object_get_int64(value);
	status->status_class = classify(status->http_code, status->reason);
}

void k8s_status_from_response(long http_code, const char *content_type, const char *body,
			      size_t length, const char *retry_after, struct k8s_status *status)
{
	memset(status, 0, sizeof(*status));
	status->http_code = http_code;
	status->retry_after_seconds = -1;
	if (retry_after != NULL)
		status->retry_after_seconds = k8s_status_parse_retry_after(retry_after, sbx_now());

	/* Only a JSON body is a Status; API Priority and Fairness, proxies and the kubelet send
	 * text or HTML. */
	if (body != NULL && length > 0 && content_type != NULL &&
	    strncasecmp(content_type, "application/json", 16) == 0) {
		struct json_tokener *tokener = json_tokener_new();
		struct json_object *object = NULL;

		if (tokener != NULL && length <= INT32_MAX)
			object = json_tokener_parse_ex(tokener, body, (int) length);
		if (tokener != NULL)
			json_tokener_free(tokener);
		if (object != NULL) {
			struct json_object *kind;

			if (json_object_object_get_ex(object, "kind", &kind) &&
			    json_object_get_string(kind) != NULL &&
			    strcmp(json_object_get_string(kind), "Status") == 0) {
				long code = status->http_code;

				k8s_status_from_object(object, status);
				status->http_code = code;
			}
			json_object_put(object);
		}
	}
	if (status->message[0] == '\0' && body != NULL && length > 0 &&
	    (http_code < 200 || http_code >= 300)) {
		size_t line = 0;

		while (line < length && line < sizeof(status->message) - 1 && body[line] != '\n' &&
		       body[line] != '\r')
			line++;
		memcpy(status->message, body, line);
		status->message[line] = '\0';
	}
	status->status_class = classify(http_code, status->reason);
	if (http_code >= 200 && http_code < 300)
		status->status_class = K8S_STATUS_OK;
}

int k8s_status_retryable(const struct k8s_status *status)
{
	switch (status->status_class) {
	case K8S_STATUS_TOO_MANY_REQUESTS:
	case K8S_STATUS_SERVER_ERROR:
	case K8S_STATUS_TIMEOUT:
	case K8S_STATUS_CONNECTION:
		return 1;
	default:
		return 0;
	}
}

enum sbx_error_class k8s_status_error_class(const struct k8s_status *status)
{
	switch (status->status_class) {
	case K8S_STATUS_NOT_FOUND:
		return SBX_ERROR_NOT_FOUND;
	case K8S_STATUS_BAD_REQUEST:
	case K8S_STATUS_INVALID:
		return SBX_ERROR_INVALID;
	default:
		return SBX_ERROR_SYSTEM;
	}
}
