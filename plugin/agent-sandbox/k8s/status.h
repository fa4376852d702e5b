/* SPDX-License-Identifier: MIT */
/*
 * Kubernetes API errors: the HTTP status, the Status object in the body (when there is one)
 * and the class a caller acts on.
 */
#ifndef SBX_K8S_STATUS_H
#define SBX_K8S_STATUS_H

#include <stddef.h>
#include <stdint.h>

#include "sbx/executor.h"

struct json_object;

enum k8s_status_class {
	K8S_STATUS_OK = 0,
	K8S_STATUS_BAD_REQUEST, /* 400 and other 4xx without a class of their own */
	K8S_STATUS_UNAUTHORIZED, /* 401 */
	K8S_STATUS_FORBIDDEN, /* 403 */
	K8S_STATUS_NOT_FOUND, /* 404 */
	K8S_STATUS_ALREADY_EXISTS, /* 409 reason AlreadyExists */
	K8S_STATUS_CONFLICT, /* 409 otherwise */
	K8S_STATUS_GONE, /* 410 (Gone, Expired) */
	K8S_STATUS_INVALID, /* 422 */
	K8S_STATUS_TOO_MANY_REQUESTS, /* 429 */
	K8S_STATUS_SERVER_ERROR, /* 5xx other than timeouts */
	K8S_STATUS_TIMEOUT, /* 504, reasons Timeout and ServerTimeout, and our own deadline */
	K8S_STATUS_CONNECTION, /* no HTTP response: connection, TLS or protocol failure */
	/* No HTTP response: the server's certificate failed verification against the CA. */
	K8S_STATUS_TLS_VERIFY,
};

#define K8S_STATUS_MESSAGE_MAX 512

struct k8s_status {
	enum k8s_status_class status_class;
	long http_code; /* 0 when there was no HTTP response */
	char reason[64]; /* Status.reason, "" when the body had none */
	char message[K8S_STATUS_MESSAGE_MAX]; /* Status.message, or the start of a text body */
	int64_t retry_after_seconds; /* Retry-After or details.retryAfterSeconds; -1 for none */
};

/*
 * Fills STATUS from an HTTP response. BODY is parsed as a Status object only when
 * CONTENT_TYPE is JSON; otherwise its first line becomes the message. RETRY_AFTER is the
 * Retry-After header or NULL.
 */
void k8s_status_from_response(long http_code, const char *content_type, const char *body,
			      size_t length, const char *retry_after, struct k8s_status *status);

/* Fills STATUS from a Status object (a watch ERROR event, or an exec status). */
void k8s_status_from_object(struct json_object *object, struct k8s_status *status);

/* Non-zero for the classes worth retrying: 429, 5xx and connection failures. */
int k8s_status_retryable(const struct k8s_status *status);

const char *k8s_status_class_name(enum k8s_status_class status_class);

/* The sbx error class for an API failure: NOT_FOUND for 404, INVALID for 400 and 422, SYSTEM
 * otherwise. */
enum sbx_error_class k8s_status_error_class(const struct k8s_status *status);

/* Parses a Retry-After value: delay seconds, or an HTTP date. -1 when invalid. */
int64_t k8s_status_parse_retry_after(const char *value, int64_t now);

#endif /* SBX_K8S_STATUS_H */
