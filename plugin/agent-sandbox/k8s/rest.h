/* SPDX-License-Identifier: MIT */
/*
 * REST calls to the Kubernetes API server over libcurl. A client owns two reusable easy
 * handles (one for requests, one for streams such as watches), so consecutive calls reuse
 * connections. Failures fill a struct k8s_status with the server's Status. Requests that
 * failed for a retryable reason (429, 5xx, connection errors) are retried with jittered
 * exponential backoff until the deadline.
 */
#ifndef SBX_K8S_REST_H
#define SBX_K8S_REST_H

#include <stddef.h>
#include <stdint.h>

#include "sbx/executor.h"

#include "kubeconfig.h"
#include "status.h"

struct json_object;
struct k8s_client;

/* Default bound on one call, retries included, when the caller passes no deadline. */
#define K8S_REST_DEFAULT_TIMEOUT_MS 30000

/* Creates a client for CONFIG, which must outlive it. */
int k8s_client_new(struct k8s_config *config, struct k8s_client **client,
		   struct sbx_error *error);
void k8s_client_free(struct k8s_client *client);
struct k8s_config *k8s_client_config(struct k8s_client *client);

/* Overrides the retry timing (tests): first delay and maximum delay, milliseconds. */
void k8s_client_set_backoff(struct k8s_client *client, int64_t base_ms, int64_t max_ms);

struct k8s_request {
	const char *method; /* "GET", "POST", "PATCH", "DELETE", "PUT" */
	const char *path; /* API path such as /api/v1/namespaces/ns/pods, without the prefix */
	const char *query; /* encoded query without '?', or NULL */
	const char *content_type; /* of BODY; NULL for none */
	const char *body;
	size_t body_length;
	/* Absolute sbx_monotonic_ms() time; 0 means now + K8S_REST_DEFAULT_TIMEOUT_MS. */
	int64_t deadline_ms;
	/* Make one attempt only (a 401 still refreshes the credential once). */
	int no_retry;
};

struct k8s_response {
	long http_code;
	char *body; /* NUL-terminated; the caller frees it */
	size_t length;
};

/*
 * Performs REQUEST. Returns 0 for a 2xx response (RESPONSE filled), -1 otherwise with STATUS
 * (if not NULL) describing the failure and ERROR naming the method, URL and server message.
 */
int k8s_rest_request(struct k8s_client *client, const struct k8s_request *request,
		     struct k8s_response *response, struct k8s_status *status,
		     struct sbx_error *error);

struct k8s_list_options {
	const char *label_selector;
	const char *field_selector;
	const char *resource_version;
	const char *continue_token;
	int64_t limit; /* 0 for no limit */
};

/*
 * The verbs. PATH is the collection path for create and list, the object path otherwise.
 * Each returns the decoded response object in *RESULT (the caller puts it), which may be NULL
 * for the callers that do not need it.
 */
int k8s_rest_get(struct k8s_client *client, const char *path, int64_t deadline_ms,
		 struct json_object **result, struct k8s_status *status, struct sbx_error *error);
int k8s_rest_list(struct k8s_client *client, const char *path,
		  const struct k8s_list_options *options, int64_t deadline_ms,
		  struct json_object **result, struct k8s_status *status, struct sbx_error *error);
int k8s_rest_create(struct k8s_client *client, const char *path, struct json_object *object,
		    int64_t deadline_ms, struct json_object **result, struct k8s_status *status,
		    struct sbx_error *error);
/* JSON merge patch (RFC 7386): null deletes a key, lists are replaced whole. */
int k8s_rest_merge_patch(struct k8s_client *client, const char *path, struct json_object *patch,
			 int64_t deadline_ms, struct json_object **result,
			 struct k8s_status *status, struct sbx_error *error);
/* Server-side apply with fieldManager=sbx; FORCE takes over fields other managers own. */
int k8s_rest_apply(struct k8s_client *client, const char *path, struct json_object *object,
		   int force, int64_t deadline_ms, struct json_object **result,
		   struct k8s_status *status, struct sbx_error *error);
/* PROPAGATION_POLICY is "Foreground", "Background", "Orphan" or NULL for the default. */
int k8s_rest_delete(struct k8s_client *client, const char *path, const char *propagation_policy,
		    int64_t deadline_ms, struct json_object **result, struct k8s_status *status,
		    struct sbx_error *error);

/*
 * Streams the body of a GET to CALLBACK as it arrives (watches). The callback returns 0 to go
 * on or non-zero to stop the transfer. Returns 0 when the server ended a 2xx response, 1 when
 * the callback stopped it, -1 on failure (STATUS and ERROR filled; an HTTP error body is not
 * passed to the callback). Makes one attempt, plus one after a 401 with a refreshed
 * credential.
 */
typedef int (*k8s_rest_stream_fn)(void *userdata, const char *data, size_t length);
int k8s_rest_stream(struct k8s_client *client, const char *path, const char *query,
		    int64_t deadline_ms, k8s_rest_stream_fn callback, void *userdata,
		    struct k8s_status *status, struct sbx_error *error);

/*
 * Percent-encodes VALUE for a query or path component: everything but the unreserved
 * characters A-Z a-z 0-9 - . _ ~ (so '+', '&', '=', ',', '!' and spaces survive Go's query
 * parser). The caller frees the result; NULL when out of memory.
 */
char *k8s_rest_escape(const char *value);

/* Appends "&KEY=escaped VALUE" (no '&' when *QUERY is empty) to the growing *QUERY. */
int k8s_rest_query_add(char **query, const char *key, const char *value);

#endif /* SBX_K8S_REST_H */
