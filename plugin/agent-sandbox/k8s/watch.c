/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>

#include "cleanup.h"
#include "error.h"
#include "log.h"
#include "util.h"

#include "watch.h"

#define DEFAULT_TIMEOUT_SECONDS 300
/* How long past timeoutSeconds a silent stream is given before it is dropped and resumed. */
#define STREAM_GRACE_MS 30000
#define RESUME_BACKOFF_BASE_MS 100
#define RESUME_BACKOFF_MAX_MS 5000

/* ---- parser ---- */

void k8s_watch_parser_init(struct k8s_watch_parser *parser, size_t max_line,
			   k8s_watch_event_fn callback, void *userdata)
{
	memset(parser, 0, sizeof(*parser));
	parser->max_line = max_line != 0 ? max_line : K8S_WATCH_DEFAULT_MAX_LINE;
	parser->callback = callback;
	parser->userdata = userdata;
}

void k8s_watch_parser_clear(struct k8s_watch_parser *parser)
{
	free(parser->line);
	parser->line = NULL;
	parser->length = 0;
	parser->capacity = 0;
}

size_t k8s_watch_parser_pending(const struct k8s_watch_parser *parser)
{
	return parser->length;
}

static int blank(const char *text, size_t length)
{
	size_t i;

	for (i = 0; i < length; i++)
		if (text[i] != ' ' && text[i] != '\t' && text[i] != '\r')
			return 0;
	return 1;
}

/* Parses one complete line (without its '\n') and hands the event to the callback. */
static int parse_line(struct k8s_watch_parser *parser, const char *text, size_t length,
		      struct sbx_error *error)
{
	struct json_tokener *tokener;
	struct json_object *event, *type, *object;
	size_t end;
	int ret;

	if (blank(text, length))
		return 0;
	if (length > INT32_MAX)
		return sbx_error_set(error, SBX_ERROR_SYSTEM, "watch event too long");
	tokener = json_tokener_new();
	if (tokener == NULL)
		return sbx_error_errno(error, ENOMEM, "watch");
	event = json_tokener_parse_ex(tokener, text, (int) length);
	end = json_tokener_get_parse_end(tokener);
	if (event == NULL || json_tokener_get_error(tokener) != json_tokener_success ||
	    !blank(text + end, length - end)) {
		json_tokener_free(tokener);
		json_object_put(event);
		return sbx_error_set(error, SBX_ERROR_SYSTEM,
				     "watch: event %" PRIu64 " is not one JSON object per line",
				     parser->events + 1);
	}
	json_tokener_free(tokener);

	if (!json_object_is_type(event, json_type_object) ||
	    !json_object_object_get_ex(event, "type", &type) ||
	    !json_object_is_type(type, json_type_string) ||
	    !json_object_object_get_ex(event, "object", &object) ||
	    !json_object_is_type(object, json_type_object)) {
		json_object_put(event);
		return sbx_error_set(error, SBX_ERROR_SYSTEM,
				     "watch: event %" PRIu64 " lacks a string \"type\" or an "
				     "\"object\"",
				     parser->events + 1);
	}
	parser->events++;
	ret = parser->callback(parser->userdata, json_object_get_string(type), object, error);
	json_object_put(event);
	return ret;
}

static int append_line(struct k8s_watch_parser *parser, const char *data, size_t length,
		       struct sbx_error *error)
{
	if (parser->length + length > parser->max_line)
		return sbx_error_set(error, SBX_ERROR_SYSTEM,
				     "watch: an event is longer than the limit of %zu bytes",
				     parser->max_line);
	if (parser->length + length > parser->capacity) {
		size_t capacity = parser->capacity != 0 ? parser->capacity : 4096;
		char *bigger;

		while (capacity < parser->length + length)
			capacity *= 2;
		if (capacity > parser->max_line)
			capacity = parser->max_line;
		bigger = realloc(parser->line, capacity);
		if (bigger == NULL)
			return sbx_error_errno(error, ENOMEM, "watch");
		parser->line = bigger;
		parser->capacity = capacity;
	}
	memcpy(parser->line + parser->length, data, length);
	parser->length += length;
	return 0;
}

int k8s_watch_parser_feed(struct k8s_watch_parser *parser, const char *data, size_t length,
			  struct sbx_error *error)
{
	while (length > 0) {
		const char *newline = memchr(data, '\n', length);
		size_t part = newline != NULL ? (size_t) (newline - data) : length;
		int ret;

		if (newline == NULL)
			return append_line(parser, data, part, error);

		if (parser->length == 0) {
			/* The whole line is in this chunk: parse it in place. */
			if (part > parser->max_line)
				return sbx_error_set(error, SBX_ERROR_SYSTEM,
						     "watch: an event is longer than the limit of "
						     "%zu bytes",
						     parser->max_line);
			ret = parse_line(parser, data, part, error);
		} else {
			if (append_line(parser, data, part, error) < 0)
				return -1;
			ret = parse_line(parser, parser->line, parser->length, error);
			parser->length = 0;
		}
		if (ret != 0)
			return ret;
		data += part + 1;
		length -= part + 1;
	}
	return 0;
}

/* ---- watch loop ---- */

struct watch_state {
	struct k8s_watch_parser parser;
	const struct k8s_watch_callbacks *callbacks;
	void *userdata;
	char *resource_version;
	uint64_t stream_events;
	int gone; /* an ERROR event with code 410 */
	int stopped; /* the caller's callback returned 1 */
	int failed; /* the parser or the caller's callback failed */
	int error_event; /* an ERROR event other than 410 */
	struct k8s_status event_status;
	struct sbx_error failure;
};

static void take_resource_version(struct watch_state *state, struct json_object *object)
{
	struct json_object *metadata, *value;
	const char *version;
	char *copy;

	if (!json_object_object_get_ex(object, "metadata", &metadata) ||
	    !json_object_object_get_ex(metadata, "resourceVersion", &value) ||
	    !json_object_is_type(value, json_type_string))
		return;
	version = json_object_get_string(value);
	if (version[0] == '\0')
		return;
	copy = strdup(version);
	if (copy == NULL)
		return;
	free(state->resource_version);
	state->resource_version = copy;
}

static int on_event(void *userdata, const char *type, struct json_object *object,
		    struct sbx_error *error)
{
	struct watch_state *state = userdata;
	int ret;

	state->stream_events++;
	if (strcmp(type, "ERROR") == 0) {
		memset(&state->event_status, 0, sizeof(state->event_status));
		state->event_status.retry_after_seconds = -1;
		k8s_status_from_object(object, &state->event_status);
		if (state->event_status.http_code == 410 ||
		    state->event_status.status_class == K8S_STATUS_GONE)
			state->gone = 1;
		else
			state->error_event = 1;
		return 1;
	}
	take_resource_version(state, object);
	if (strcmp(type, "BOOKMARK") == 0)
		return 0;
	ret = state->callbacks->event(state->userdata, type, object, error);
	if (ret > 0)
		state->stopped = 1;
	return ret;
}

static int on_data(void *userdata, const char *data, size_t length)
{
	struct watch_state *state = userdata;
	int ret;

	ret = k8s_watch_parser_feed(&state->parser, data, length, &state->failure);
	if (ret < 0)
		state->failed = 1;
	return ret != 0;
}

static int build_query(const struct k8s_watch_options *options, const char *resource_version,
		       int timeout_seconds, char **query)
{
	char timeout[32];

	*query = strdup("watch=1&allowWatchBookmarks=true");
	if (*query == NULL)
		return -1;
	snprintf(timeout, sizeof(timeout), "%d", timeout_seconds);
	if (k8s_rest_query_add(query, "timeoutSeconds", timeout) < 0)
		return -1;
	if (resource_version != NULL && resource_version[0] != '\0' &&
	    k8s_rest_query_add(query, "resourceVersion", resource_version) < 0)
		return -1;
	if (options->label_selector != NULL &&
	    k8s_rest_query_add(query, "labelSelector", options->label_selector) < 0)
		return -1;
	if (options->field_selector != NULL &&
	    k8s_rest_query_add(query, "fieldSelector", options->field_selector) < 0)
		return -1;
	return 0;
}

static void sleep_until(int64_t delay_ms, int64_t deadline_ms)
{
	int64_t left = deadline_ms - sbx_monotonic_ms();
	struct timespec ts;

	if (delay_ms > left)
		delay_ms = left;
	if (delay_ms <= 0)
		return;
	ts.tv_sec = delay_ms / 1000;
	ts.tv_nsec = (delay_ms % 1000) * 1000000;
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static int64_t resume_delay(int failures)
{
	int64_t delay = RESUME_BACKOFF_BASE_MS;
	char hex[9];

	while (failures-- > 1 && delay < RESUME_BACKOFF_MAX_MS)
		delay *= 2;
	if (delay > RESUME_BACKOFF_MAX_MS)
		delay = RESUME_BACKOFF_MAX_MS;
	if (sbx_random_hex(hex, 4) == 0)
		return delay / 2 + (int64_t) (strtoul(hex, NULL, 16) % (uint64_t) (delay / 2 + 1));
	return delay;
}

int k8s_watch_run(struct k8s_client *client, const struct k8s_watch_options *options,
		  const struct k8s_watch_callbacks *callbacks, void *userdata,
		  char **last_resource_version, struct k8s_status *status,
		  struct sbx_error *error)
{
	struct watch_state state = { .callbacks = callbacks, .userdata = userdata };
	struct k8s_status local;
	int timeout_seconds = options->timeout_seconds > 0 ? options->timeout_seconds
							   : DEFAULT_TIMEOUT_SECONDS;
	int failures = 0, ret = -1;

	if (status == NULL)
		status = &local;
	k8s_watch_parser_init(&state.parser, options->max_line, on_event, &state);
	if (options->resource_version != NULL && options->resource_version[0] != '\0') {
		state.resource_version = strdup(options->resource_version);
		if (state.resource_version == NULL) {
			sbx_error_errno(error, ENOMEM, "watch");
			goto out;
		}
	}

	for (;;) {
		_cleanup_free_ char *query = NULL;
		int64_t now = sbx_monotonic_ms(), stream_deadline;
		int seconds = timeout_seconds, stream;

		if (now >= options->deadline_ms) {
			memset(status, 0, sizeof(*status));
			status->status_class = K8S_STATUS_TIMEOUT;
			status->retry_after_seconds = -1;
			snprintf(status->message, sizeof(status->message), "deadline passed");
			sbx_error_set(error, SBX_ERROR_SYSTEM,
				      "watch %s: the deadline passed (last resourceVersion %s)",
				      options->path,
				      state.resource_version != NULL ? state.resource_version
								     : "none");
			goto out;
		}
		/* Ask the server to end the stream by the deadline; give it some grace to do so
		 * before dropping the connection ourselves. */
		if ((options->deadline_ms - now) / 1000 < seconds)
			seconds = (int) ((options->deadline_ms - now) / 1000) + 1;
		stream_deadline = now + (int64_t) seconds * 1000 + STREAM_GRACE_MS;
		if (stream_deadline > options->deadline_ms)
			stream_deadline = options->deadline_ms;
		if (build_query(options, state.resource_version, seconds, &query) < 0) {
			sbx_error_errno(error, ENOMEM, "watch");
			goto out;
		}

		state.stream_events = 0;
		state.gone = state.error_event = state.stopped = state.failed = 0;
		state.parser.length = 0;
		sbx_error_clear(&state.failure);
		stream = k8s_rest_stream(client, options->path, query, stream_deadline, on_data,
					 &state, status, error);
		if (state.failed) {
			*error = state.failure;
			goto out;
		}
		if (state.stopped) {
			ret = 0;
			goto out;
		}
		if (k8s_watch_parser_pending(&state.parser) > 0)
			sbx_debug("watch %s: the stream ended inside an event (%zu bytes dropped)",
				  options->path, k8s_watch_parser_pending(&state.parser));

		if (state.gone || (stream < 0 && status->status_class == K8S_STATUS_GONE)) {
			char *fresh = NULL;

			if (state.gone)
				*status = state.event_status;
			if (callbacks->relist == NULL) {
				sbx_error_set(error, SBX_ERROR_SYSTEM,
					      "watch %s: resourceVersion %s is too old: %s",
					      options->path,
					      state.resource_version != NULL
						      ? state.resource_version
						      : "(none)",
					      status->message);
				goto out;
			}
			sbx_debug("watch %s: resourceVersion %s expired, listing again",
				  options->path,
				  state.resource_version != NULL ? state.resource_version : "");
			if (callbacks->relist(userdata, &fresh, error) < 0)
				goto out;
			free(state.resource_version);
			state.resource_version = fresh;
			failures = 0;
			continue;
		}
		if (state.error_event) {
			*status = state.event_status;
			if (!k8s_status_retryable(status)) {
				sbx_error_set(error, k8s_status_error_class(status),
					      "watch %s: the server sent an error: %ld %s: %s",
					      options->path, status->http_code, status->reason,
					      status->message);
				goto out;
			}
			failures++;
			sleep_until(resume_delay(failures), options->deadline_ms);
			continue;
		}
		if (stream < 0) {
			/* Our own per-stream deadline is a silent stream, not a failure. */
			int own_timeout = status->status_class == K8S_STATUS_TIMEOUT &&
					  sbx_monotonic_ms() < options->deadline_ms;

			if (!own_timeout && !k8s_status_retryable(status))
				goto out;
			failures++;
			sbx_debug("watch %s: %s; resuming", options->path, error->message);
			sleep_until(resume_delay(failures), options->deadline_ms);
			continue;
		}

		/* The server ended the stream (timeoutSeconds, a restart, a cut connection):
		 * resume from the last resourceVersion. */
		if (state.stream_events > 0) {
			failures = 0;
		} else {
			failures++;
			sleep_until(resume_delay(failures), options->deadline_ms);
		}
	}

out:
	if (ret == 0 && last_resource_version != NULL) {
		*last_resource_version = state.resource_version;
		state.resource_version = NULL;
	}
	free(state.resource_version);
	k8s_watch_parser_clear(&state.parser);
	return ret;
}
