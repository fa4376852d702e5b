/* SPDX-License-Identifier: MIT */
/*
 * Watches: a list URL streamed with watch=1, one JSON event per line. The parser takes bytes
 * as they arrive (HTTP chunks do not align with events) into a bounded line buffer. The
 * watch loop tracks the resourceVersion (BOOKMARK events included), resumes a stream the
 * server ends, and on 410 Gone (an HTTP status or an ERROR event) calls the caller back to list again.
 */
#ifndef SBX_K8S_WATCH_H
#define SBX_K8S_WATCH_H

#include <stddef.h>
#include <stdint.h>

#include "sbx/executor.h"

#include "rest.h"

struct json_object;

/* Default maximum length of an event line; a Pod with large annotations stays far below. */
#define K8S_WATCH_DEFAULT_MAX_LINE (16u << 20)

/*
 * Called once per complete event line with TYPE ("ADDED", "MODIFIED", "DELETED", "BOOKMARK",
 * "ERROR") and the event's object (borrowed). Returns 0 to go on, 1 to stop, -1 on failure
 * (with ERROR filled).
 */
typedef int (*k8s_watch_event_fn)(void *userdata, const char *type, struct json_object *object,
				  struct sbx_error *error);

struct k8s_watch_parser {
	char *line;
	size_t length;
	size_t capacity;
	size_t max_line;
	k8s_watch_event_fn callback;
	void *userdata;
	/* Events delivered so far. */
	uint64_t events;
};

void k8s_watch_parser_init(struct k8s_watch_parser *parser, size_t max_line,
			   k8s_watch_event_fn callback, void *userdata);
void k8s_watch_parser_clear(struct k8s_watch_parser *parser);

/*
 * Feeds LENGTH bytes. Returns 0 when all were consumed, 1 when the callback asked to stop,
 * -1 when a line is longer than the limit, is not a JSON event, or the callback failed.
 */
int k8s_watch_parser_feed(struct k8s_watch_parser *parser, const char *data, size_t length,
			  struct sbx_error *error);

/* The bytes of an incomplete last line, which a cut stream leaves behind. */
size_t k8s_watch_parser_pending(const struct k8s_watch_parser *parser);

struct k8s_watch_options {
	const char *path; /* collection path, e.g. /api/v1/namespaces/ns/pods */
	const char *label_selector;
	const char *field_selector;
	/* Start after this resourceVersion; NULL or "" starts with synthetic ADDED events. */
	const char *resource_version;
	/* Asked of the server per stream; the watch resumes when a stream ends. 0: 300 s. */
	int timeout_seconds;
	/* Absolute sbx_monotonic_ms() bound of the whole watch. Required. */
	int64_t deadline_ms;
	size_t max_line; /* 0: K8S_WATCH_DEFAULT_MAX_LINE */
};

struct k8s_watch_callbacks {
	/* ADDED, MODIFIED and DELETED events; BOOKMARK and ERROR are handled here. */
	k8s_watch_event_fn event;
	/*
	 * The resourceVersion is too old (410): list again, deliver what changed, and return the
	 * list's resourceVersion in *RESOURCE_VERSION (malloc'd). NULL makes 410 a failure.
	 */
	int (*relist)(void *userdata, char **resource_version, struct sbx_error *error);
};

/*
 * Watches until the event callback returns 1 (returns 0), or fails (-1): deadline passed
 * (status class TIMEOUT), a non-retryable HTTP error, an ERROR event other than 410 that is
 * not retryable, or a callback failure. *LAST_RESOURCE_VERSION (if not NULL) receives the last
 * resourceVersion seen, for a later watch.
 */
int k8s_watch_run(struct k8s_client *client, const struct k8s_watch_options *options,
		  const struct k8s_watch_callbacks *callbacks, void *userdata,
		  char **last_resource_version, struct k8s_status *status,
		  struct sbx_error *error);

#endif /* SBX_K8S_WATCH_H */
