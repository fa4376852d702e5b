/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "error.h"
#include "log.h"

#include "wsframe.h"

void k8s_wsframe_reader_init(struct k8s_wsframe_reader *reader, k8s_wsframe_output_fn output,
			     void *userdata)
{
	memset(reader, 0, sizeof(*reader));
	reader->output = output;
	reader->userdata = userdata;
	reader->exit_code = -1;
}

void k8s_wsframe_reader_clear(struct k8s_wsframe_reader *reader)
{
	free(reader->status);
	reader->status = NULL;
	reader->status_length = 0;
}

size_t k8s_wsframe_encode(uint8_t channel, const void *data, size_t length, uint8_t *out)
{
	out[0] = channel;
	if (length > 0)
		memcpy(out + 1, data, length);
	return length + 1;
}

static int parse_exit_code(const char *text, int *code)
{
	char *end;
	long value;

	if (text == NULL || text[0] < '0' || text[0] > '9')
		return -1;
	errno = 0;
	value = strtol(text, &end, 10);
	if (errno != 0 || *end != '\0' || value < 0 || value > 255)
		return -1;
	*code = (int) value;
	return 0;
}

int k8s_wsframe_parse_status(const char *json, size_t length, int *exit_code, char *message,
			     size_t message_size)
{
	struct json_tokener *tokener;
	struct json_object *root, *value, *details, *causes;
	const char *status = NULL, *reason = NULL, *text = NULL;
	int ret = -1;
	size_t i;

	tokener = json_tokener_new();
	if (tokener == NULL) {
		snprintf(message, message_size, "out of memory");
		return -1;
	}
	root = length <= INT32_MAX ? json_tokener_parse_ex(tokener, json, (int) length) : NULL;
	json_tokener_free(tokener);
	if (root == NULL || !json_object_is_type(root, json_type_object)) {
		snprintf(message, message_size, "the status channel carried no JSON object");
		goto out;
	}
	if (json_object_object_get_ex(root, "status", &value))
		status = json_object_get_string(value);
	if (json_object_object_get_ex(root, "reason", &value))
		reason = json_object_get_string(value);
	if (json_object_object_get_ex(root, "message", &value))
		text = json_object_get_string(value);

	if (status != NULL && strcmp(status, "Success") == 0) {
		*exit_code = 0;
		ret = 0;
		goto out;
	}
	if (status != NULL && strcmp(status, "Failure") == 0 && reason != NULL &&
	    strcmp(reason, "NonZeroExitCode") == 0) {
		if (!json_object_object_get_ex(root, "details", &details) ||
		    !json_object_object_get_ex(details, "causes", &causes) ||
		    !json_object_is_type(causes, json_type_array))
			causes = NULL;
		/* StatusCause.Type is serialised as "reason": {"reason":"ExitCode","message":"3"}. */
		for (i = 0; causes != NULL && i < json_object_array_length(causes); i++) {
			struct json_object *cause = json_object_array_get_idx(causes, i);
			struct json_object *cause_reason, *cause_message;

			if (json_object_object_get_ex(cause, "reason", &cause_reason) &&
			    json_object_get_string(cause_reason) != NULL &&
			    strcmp(json_object_get_string(cause_reason), "ExitCode") == 0 &&
			    json_object_object_get_ex(cause, "message", &cause_message) &&
			    parse_exit_code(json_object_get_string(cause_message), exit_code) == 0) {
				ret = 0;
				goto out;
			}
		}
		snprintf(message, message_size,
			 "NonZeroExitCode without a valid ExitCode cause: %s",
			 text != NULL ? text : "(no message)");
		goto out;
	}
	snprintf(message, message_size, "%s%s%s", reason != NULL ? reason : "no reason",
		 text != NULL ? ": " : "", text != NULL ? text : "");
out:
	json_object_put(root);
	return ret;
}

static int finish_status(struct k8s_wsframe_reader *reader, struct sbx_error *error)
{
	int code = -1;

	if (k8s_wsframe_parse_status(reader->status != NULL ? reader->status : "",
				     reader->status_length, &code, reader->status_message,
				     sizeof(reader->status_message)) == 0) {
		reader->status_ok = 1;
		reader->exit_code = code;
	} else {
		reader->status_ok = 0;
	}
	reader->have_status = 1;
	free(reader->status);
	reader->status = NULL;
	reader->status_length = 0;
	return 0;
}

static int append_status(struct k8s_wsframe_reader *reader, const uint8_t *data, size_t length,
			 struct sbx_error *error)
{
	char *bigger;

	if (reader->status_length + length > K8S_WSFRAME_STATUS_MAX)
		return sbx_error_set(error, SBX_ERROR_SYSTEM,
				     "exec: the status message is longer than %u bytes",
				     K8S_WSFRAME_STATUS_MAX);
	bigger = realloc(reader->status, reader->status_length + length + 1);
	if (bigger == NULL)
		return sbx_error_errno(error, ENOMEM, "exec status");
	memcpy(bigger + reader->status_length, data, length);
	reader->status = bigger;
	reader->status_length += length;
	reader->status[reader->status_length] = '\0';
	return 0;
}

int k8s_wsframe_feed(struct k8s_wsframe_reader *reader, const void *data, size_t length,
		     int final, struct sbx_error *error)
{
	const uint8_t *bytes = data;

	if (!reader->in_message) {
		if (length == 0) {
			if (final)
				return sbx_error_set(error, SBX_ERROR_SYSTEM,
						     "exec: the server sent an empty message "
						     "without a channel byte");
			return 0;
		}
		/* Only the first piece of a message carries the channel byte. */
		reader->channel = bytes[0];
		reader->in_message = 1;
		bytes++;
		length--;
		if (reader->channel == K8S_CHANNEL_STATUS && reader->have_status)
			return sbx_error_set(error, SBX_ERROR_SYSTEM,
					     "exec: the server sent a second status message");
	}

	switch (reader->channel) {
	case K8S_CHANNEL_STDOUT:
	case K8S_CHANNEL_STDERR:
		/* Empty payloads occur: the server's first message after the upgrade is an empty
		 * one on the first output channel, to signal readiness. */
		if (length > 0 && reader->output(reader->userdata, reader->channel, bytes, length) < 0)
			return sbx_error_set(error, SBX_ERROR_SYSTEM,
					     "exec: cannot pass on the output of channel %d",
					     reader->channel);
		break;
	case K8S_CHANNEL_STATUS:
		if (append_status(reader, bytes, length, error) < 0)
			return -1;
		break;
	default:
		/* Channels the server has no reason to send (stdin, resize, close): ignored. */
		break;
	}

	if (final) {
		if (reader->channel == K8S_CHANNEL_STATUS && finish_status(reader, error) < 0)
			return -1;
		reader->in_message = 0;
	}
	return 0;
}
