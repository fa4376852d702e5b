/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>
#include <json-c/json.h>

#include "cleanup.h"
#include "error.h"
#include "log.h"
#include "util.h"

#include "curl_api.h"
#include "rest.h"

/* Bodies of ordinary responses; a list of a few thousand objects stays far below. */
#define RESPONSE_MAX_BYTES (64u << 20)
/* Error bodies of streams are only read for their Status. */
#define STREAM_ERROR_MAX_BYTES (64u << 10)
#define CONNECT_TIMEOUT_MS 10000
#define MAX_ATTEMPTS 20
/* A Retry-After longer than this is treated as this long: the deadline bounds it anyway. */
#define RETRY_AFTER_MAX_MS 60000

struct k8s_client {
	struct k8s_config *config;
	CURL *handle;
	CURL *stream_handle;
	int64_t backoff_base_ms;
	int64_t backoff_max_ms;
	char user_agent[64];
};

/* State of one transfer: the body and the headers sbx reads. */
struct transfer {
	struct k8s_client *client;
	CURL *handle;
	char *body;
	size_t length;
	size_t max_length;
	int overflow;
	char content_type[128];
	char retry_after[64];
	/* Streams: the callback and whether it stopped the transfer. */
	k8s_rest_stream_fn stream;
	void *stream_userdata;
	int stream_stopped;
	struct curl_slist *headers;
	struct curl_slist *connect_to;
	char curl_error[CURL_ERROR_SIZE];
};

int k8s_client_new(struct k8s_config *config, struct k8s_client **result,
		   struct sbx_error *error)
{
	struct k8s_client *client;

	client = calloc(1, sizeof(*client));
	if (client == NULL)
		return sbx_error_errno(error, ENOMEM, "k8s client");
	client->config = config;
	client->backoff_base_ms = 200;
	client->backoff_max_ms = 5000;
	snprintf(client->user_agent, sizeof(client->user_agent), "sbx/%s", SBX_VERSION);
	*result = client;
	return 0;
}

/* Loads libcurl and creates the two handles on the first request (see curl_api.h). */
static int client_handles(struct k8s_client *client, struct k8s_status *status,
			  struct sbx_error *error)
{
	if (client->handle != NULL)
		return 0;
	memset(status, 0, sizeof(*status));
	status->status_class = K8S_STATUS_CONNECTION;
	status->retry_after_seconds = -1;
	if (k8s_curl_load(error) < 0) {
		snprintf(status->message, sizeof(status->message), "%.*s",
			 (int) sizeof(status->message) - 1, error->message);
		return -1;
	}
	client->handle = k8s_curl.easy_init();
	client->stream_handle = k8s_curl.easy_init();
	if (client->handle == NULL || client->stream_handle == NULL) {
		if (client->handle != NULL)
			k8s_curl.easy_cleanup(client->handle);
		if (client->stream_handle != NULL)
			k8s_curl.easy_cleanup(client->stream_handle);
		client->handle = client->stream_handle = NULL;
		snprintf(status->message, sizeof(status->message), "cannot create a libcurl handle");
		return sbx_error_set(error, SBX_ERROR_SYSTEM, "%s", status->message);
	}
	return 0;
}

void k8s_client_free(struct k8s_client *client)
{
	if (client == NULL)
		return;
	if (client->handle != NULL)
		k8s_curl.easy_cleanup(client->handle);
	if (client->stream_handle != NULL)
		k8s_curl.easy_cleanup(client->stream_handle);
	free(client);
}

struct k8s_config *k8s_client_config(struct k8s_client *client)
{
	return client->config;
}

void k8s_client_set_backoff(struct k8s_client *client, int64_t base_ms, int64_t max_ms)
{
	client->backoff_base_ms = base_ms;
	client->backoff_max_ms = max_ms;
}

/* ---- query encoding ---- */

char *k8s_rest_escape(const char *value)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t length = strlen(value), i, used = 0;
	char *result = malloc(length * 3 + 1);

	if (result == NULL)
		return NULL;
	for (i = 0; i < length; i++) {
		unsigned char c = (unsigned char) value[i];

		if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		    c == '-' || c == '.' || c == '_' || c == '~') {
			result[used++] = (char) c;
		} else {
			result[used++] = '%';
			result[used++] = hex[c >> 4];
			result[used++] = hex[c & 15];
		}
	}
	result[used] = '\0';
	return result;
}

int k8s_rest_query_add(char **query, const char *key, const char *value)
{
	_cleanup_free_ char *escaped = k8s_rest_escape(value);
	char *grown;

	if (escaped == NULL)
		return -1;
	if (asprintf(&grown, "%s%s%s=%s", *query != NULL ? *query : "",
		     *query != NULL && **query != '\0' ? "&" : "", key, escaped) < 0)
		return -1;
	free(*query);
	*query = grown;
	return 0;
}

/* ---- transfers ---- */

static size_t write_body(char *data, size_t size, size_t count, void *userdata)
{
	struct transfer *transfer = userdata;
	size_t length = size * count;
	char *bigger;

	if (transfer->stream != NULL) {
		long code = 0;

		k8s_curl.easy_getinfo(transfer->handle, CURLINFO_RESPONSE_CODE, &code);
		if (code >= 200 && code < 300) {
			if (transfer->stream(transfer->stream_userdata, data, length) != 0) {
				transfer->stream_stopped = 1;
				return 0; /* makes libcurl end the transfer with CURLE_WRITE_ERROR */
			}
			return length;
		}
	}
	if (transfer->length + length > transfer->max_length) {
		/* Keep what fits: an error body is only read for its start. */
		transfer->overflow = 1;
		if (transfer->stream != NULL)
			length = transfer->max_length - transfer->length;
		else
			return 0;
	}
	bigger = realloc(transfer->body, transfer->length + length + 1);
	if (bigger == NULL)
		return 0;
	memcpy(bigger + transfer->length, data, length);
	transfer->body = bigger;
	transfer->length += length;
	transfer->body[transfer->length] = '\0';
	return size * count;
}

static void copy_header_value(const char *line, size_t length, size_t name_length, char *out,
			      size_t out_size)
{
	const char *value = line + name_length;
	size_t value_length = length - name_length;

	while (value_length > 0 && (*value == ' ' || *value == '\t')) {
		value++;
		value_length--;
	}
	while (value_length > 0 && (value[value_length - 1] == '\r' ||
				    value[value_length - 1] == '\n' || value[value_length - 1] == ' '))
		value_length--;
	if (value_length >= out_size)
		value_length = out_size - 1;
	memcpy(out, value, value_length);
	out[value_length] = '\0';
}

static size_t read_header(char *line, size_t size, size_t count, void *userdata)
{
	struct transfer *transfer = userdata;
	size_t length = size * count;

	/* A new status line (after a 100 Continue or a redirect) starts a new header set. */
	if (length >= 5 && strncmp(line, "HTTP/", 5) == 0) {
		transfer->content_type[0] = '\0';
		transfer->retry_after[0] = '\0';
	} else if (length > 13 && strncasecmp(line, "Content-Type:", 13) == 0) {
		copy_header_value(line, length, 13, transfer->content_type,
				  sizeof(transfer->content_type));
	} else if (length > 12 && strncasecmp(line, "Retry-After:", 12) == 0) {
		copy_header_value(line, length, 12, transfer->retry_after,
				  sizeof(transfer->retry_after));
	} else if (length > 8 && strncasecmp(line, "Warning:", 8) == 0) {
		char warning[512];

		copy_header_value(line, length, 8, warning, sizeof(warning));
		sbx_warning("k8s: the API server warns: %s", warning);
	}
	return length;
}

/* Logs the request headers libcurl sends, with the credentials redacted. */
static int debug_headers(CURL *handle, curl_infotype type, char *data, size_t size,
			 void *userdata)
{
	const char *p = data, *end = data + size;

	if (type != CURLINFO_HEADER_OUT)
		return 0;
	while (p < end) {
		const char *eol = memchr(p, '\n', (size_t) (end - p));
		size_t line = (size_t) ((eol != NULL ? eol : end) - p);

		while (line > 0 && (p[line - 1] == '\r' || p[line - 1] == '\n'))
			line--;
		if (line > 14 && strncasecmp(p, "Authorization:", 14) == 0)
			sbx_debug("k8s: > Authorization: <redacted>");
		/* The proxy's credentials, from proxy-url's user part, in a CONNECT request. */
		else if (line > 20 && strncasecmp(p, "Proxy-Authorization:", 20) == 0)
			sbx_debug("k8s: > Proxy-Authorization: <redacted>");
		else if (line > 0)
			sbx_debug("k8s: > %.*s", (int) line, p);
		p = eol != NULL ? eol + 1 : end;
	}
	return 0;
}

/* The URL host: tls-server-name when set (libcurl takes SNI and the name it verifies from
 * the URL, and CURLOPT_CONNECT_TO sends the connection to the real server). */
static int build_url(struct k8s_client *client, const char *path, const char *query, char **url)
{
	const struct k8s_config *config = client->config;
	const struct k8s_server *server = &config->server;
	int ret;

	if (config->tls_server_name != NULL && server->tls)
		ret = asprintf(url, "https://%s:%d%s%s%s%s", config->tls_server_name, server->port,
			       server->prefix, path, query != NULL && query[0] != '\0' ? "?" : "",
			       query != NULL ? query : "");
	else
		ret = asprintf(url, "%s%s%s%s", server->base_url, path,
			       query != NULL && query[0] != '\0' ? "?" : "",
			       query != NULL ? query : "");
	if (ret < 0) {
		*url = NULL;
		return -1;
	}
	return 0;
}

static int append_header(struct curl_slist **headers, const char *format, ...)
	__attribute__((format(printf, 2, 3)));

static int append_header(struct curl_slist **headers, const char *format, ...)
{
	struct curl_slist *grown;
	va_list args;
	char *line;
	int n;

	va_start(args, format);
	n = vasprintf(&line, format, args);
	va_end(args);
	if (n < 0)
		return -1;
	grown = k8s_curl.slist_append(*headers, line);
	explicit_bzero(line, (size_t) n);
	free(line);
	if (grown == NULL)
		return -1;
	*headers = grown;
	return 0;
}

static void free_headers(struct curl_slist *headers)
{
	struct curl_slist *item;

	/* The list contains the bearer token. */
	for (item = headers; item != NULL; item = item->next)
		explicit_bzero(item->data, strlen(item->data));
	k8s_curl.slist_free_all(headers);
}

/* Sets every option of one attempt on HANDLE, which was reset. */
static int setup_transfer(struct k8s_client *client, struct transfer *transfer,
			  const struct k8s_request *request, const char *url,
			  const struct k8s_credential *credential, int64_t remaining_ms,
			  struct sbx_error *error)
{
	const struct k8s_config *config = client->config;
	CURL *h = transfer->handle;
	struct curl_blob blob;

	k8s_curl.easy_reset(h);
	k8s_curl.easy_setopt(h, CURLOPT_URL, url);
	k8s_curl.easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	k8s_curl.easy_setopt(h, CURLOPT_PROTOCOLS_STR, "https,http");
	k8s_curl.easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
	k8s_curl.easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
	k8s_curl.easy_setopt(h, CURLOPT_ERRORBUFFER, transfer->curl_error);
	k8s_curl.easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
			 (long) (remaining_ms < CONNECT_TIMEOUT_MS ? remaining_ms
								   : CONNECT_TIMEOUT_MS));
	k8s_curl.easy_setopt(h, CURLOPT_TIMEOUT_MS, (long) remaining_ms);
	k8s_curl.easy_setopt(h, CURLOPT_WRITEFUNCTION, write_body);
	k8s_curl.easy_setopt(h, CURLOPT_WRITEDATA, transfer);
	k8s_curl.easy_setopt(h, CURLOPT_HEADERFUNCTION, read_header);
	k8s_curl.easy_setopt(h, CURLOPT_HEADERDATA, transfer);
	if (sbx_log_enabled(SBX_LOG_DEBUG)) {
		k8s_curl.easy_setopt(h, CURLOPT_DEBUGFUNCTION, debug_headers);
		k8s_curl.easy_setopt(h, CURLOPT_VERBOSE, 1L);
	}

	if (strcmp(request->method, "GET") != 0)
		k8s_curl.easy_setopt(h, CURLOPT_CUSTOMREQUEST, request->method);
	if (request->body != NULL) {
		k8s_curl.easy_setopt(h, CURLOPT_POSTFIELDS, request->body);
		k8s_curl.easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) request->body_length);
	}

	/* TLS from the kubeconfig, all from memory. */
	if (config->insecure_skip_tls_verify) {
		k8s_curl.easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
		k8s_curl.easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
	} else if (config->ca_pem != NULL) {
		blob.data = config->ca_pem;
		blob.len = config->ca_pem_length;
		blob.flags = CURL_BLOB_COPY;
		k8s_curl.easy_setopt(h, CURLOPT_CAINFO_BLOB, &blob);
	}
	if (credential->client_cert_pem != NULL) {
		blob.data = (void *) credential->client_cert_pem;
		blob.len = credential->client_cert_pem_length;
		blob.flags = CURL_BLOB_COPY;
		k8s_curl.easy_setopt(h, CURLOPT_SSLCERT_BLOB, &blob);
		k8s_curl.easy_setopt(h, CURLOPT_SSLCERTTYPE, "PEM");
		blob.data = (void *) credential->client_key_pem;
		blob.len = credential->client_key_pem_length;
		k8s_curl.easy_setopt(h, CURLOPT_SSLKEY_BLOB, &blob);
		k8s_curl.easy_setopt(h, CURLOPT_SSLKEYTYPE, "PEM");
	}
	if (config->proxy_url != NULL)
		k8s_curl.easy_setopt(h, CURLOPT_PROXY, config->proxy_url);

	if (append_header(&transfer->headers, "Accept: application/json") < 0 ||
	    append_header(&transfer->headers, "User-Agent: %s", client->user_agent) < 0 ||
	    (request->content_type != NULL &&
	     append_header(&transfer->headers, "Content-Type: %s", request->content_type) < 0) ||
	    (credential->token != NULL &&
	     append_header(&transfer->headers, "Authorization: Bearer %s", credential->token) < 0))
		return sbx_error_errno(error, ENOMEM, "k8s request");
	/* Keep the Expect: 100-continue round trip out of small requests. */
	if (request->body != NULL && append_header(&transfer->headers, "Expect:") < 0)
		return sbx_error_errno(error, ENOMEM, "k8s request");
	if (config->tls_server_name != NULL && config->server.tls) {
		const struct k8s_server *server = &config->server;
		int ipv6 = strchr(server->host, ':') != NULL;
		char connect_to[512];

		snprintf(connect_to, sizeof(connect_to), "%s:%d:%s%s%s:%d",
			 config->tls_server_name, server->port, ipv6 ? "[" : "", server->host,
			 ipv6 ? "]" : "", server->port);
		transfer->connect_to = k8s_curl.slist_append(NULL, connect_to);
		if (transfer->connect_to == NULL)
			return sbx_error_errno(error, ENOMEM, "k8s request");
		k8s_curl.easy_setopt(h, CURLOPT_CONNECT_TO, transfer->connect_to);
		/* The Host header names the server, as kubectl sends it. */
		if (append_header(&transfer->headers, "Host: %s%s%s:%d", ipv6 ? "[" : "",
				  server->host, ipv6 ? "]" : "", server->port) < 0)
			return sbx_error_errno(error, ENOMEM, "k8s request");
	}
	k8s_curl.easy_setopt(h, CURLOPT_HTTPHEADER, transfer->headers);
	return 0;
}

static void transfer_reset(struct transfer *transfer)
{
	free(transfer->body);
	transfer->body = NULL;
	transfer->length = 0;
	transfer->overflow = 0;
	transfer->content_type[0] = '\0';
	transfer->retry_after[0] = '\0';
	transfer->stream_stopped = 0;
	transfer->curl_error[0] = '\0';
	if (transfer->handle != NULL) {
		k8s_curl.easy_setopt(transfer->handle, CURLOPT_HTTPHEADER, NULL);
		k8s_curl.easy_setopt(transfer->handle, CURLOPT_CONNECT_TO, NULL);
	}
	free_headers(transfer->headers);
	transfer->headers = NULL;
	k8s_curl.slist_free_all(transfer->connect_to);
	transfer->connect_to = NULL;
}

/* Transport failures worth another attempt; TLS verification and setup errors are not. */
static int curl_code_retryable(CURLcode code)
{
	switch (code) {
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
	case CURLE_COULDNT_CONNECT:
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_PARTIAL_FILE:
	case CURLE_OPERATION_TIMEDOUT:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
		return 1;
	default:
		return 0;
	}
}

/*
 * Performs one attempt. Returns 0 with STATUS filled for any HTTP response, -1 with STATUS
 * (class CONNECTION or TIMEOUT) for a transport failure; *RETRYABLE is set when a transport
 * failure may be retried.
 */
static int perform_once(struct k8s_client *client, struct transfer *transfer,
			const struct k8s_request *request, const char *url, int64_t deadline_ms,
			struct k8s_status *status, int *retryable, struct sbx_error *error)
{
	struct k8s_credential credential;
	int64_t start = sbx_monotonic_ms();
	CURLcode code;
	long http_code = 0;

	*retryable = 0;
	if (k8s_credential_get(client->config, &credential, error) < 0) {
		memset(status, 0, sizeof(*status));
		status->status_class = K8S_STATUS_UNAUTHORIZED;
		status->retry_after_seconds = -1;
		snprintf(status->message, sizeof(status->message), "%.*s",
			 (int) sizeof(status->message) - 1, error->message);
		return -2;
	}
	transfer_reset(transfer);
	if (setup_transfer(client, transfer, request, url, &credential, deadline_ms - start,
			   error) < 0)
		return -2;

	code = k8s_curl.easy_perform(transfer->handle);
	k8s_curl.easy_getinfo(transfer->handle, CURLINFO_RESPONSE_CODE, &http_code);
	if (code != CURLE_OK && !(transfer->stream_stopped && code == CURLE_WRITE_ERROR)) {
		memset(status, 0, sizeof(*status));
		status->retry_after_seconds = -1;
		status->http_code = 0;
		if (code == CURLE_OPERATION_TIMEDOUT)
			status->status_class = K8S_STATUS_TIMEOUT;
		else if (code == CURLE_PEER_FAILED_VERIFICATION)
			status->status_class = K8S_STATUS_TLS_VERIFY;
		else
			status->status_class = K8S_STATUS_CONNECTION;
		if (code == CURLE_WRITE_ERROR && transfer->overflow)
			snprintf(status->message, sizeof(status->message),
				 "the response is larger than %zu bytes", transfer->max_length);
		else
			snprintf(status->message, sizeof(status->message), "%s",
				 transfer->curl_error[0] != '\0' ? transfer->curl_error
								 : k8s_curl.easy_strerror(code));
		*retryable = curl_code_retryable(code);
		if (client->config->proxy_url != NULL) {
			long connect_code = 0;

			/* A proxy that rejects the tunnel (407 for credentials, 403 by policy)
			 * returns the same status on every retry. */
			k8s_curl.easy_getinfo(transfer->handle, CURLINFO_HTTP_CONNECTCODE,
					      &connect_code);
			if (connect_code == 403 || connect_code == 407) {
				*retryable = 0;
				snprintf(status->message, sizeof(status->message),
					 "the proxy answered HTTP %ld to CONNECT; check proxy-url "
					 "and its credentials",
					 connect_code);
			}
		}
		sbx_debug("k8s: %s %s -> %s (%" PRId64 " ms)", request->method, url,
			  status->message, sbx_monotonic_ms() - start);
		/* A stream that had started is ended by the server or the network, not failed
		 * before it began: the caller decides (watches resume). */
		if (transfer->stream != NULL && http_code >= 200 && http_code < 300 &&
		    code != CURLE_OPERATION_TIMEDOUT) {
			k8s_status_from_response(http_code, NULL, NULL, 0, NULL, status);
			snprintf(status->message, sizeof(status->message), "%s",
				 transfer->curl_error[0] != '\0' ? transfer->curl_error
								 : k8s_curl.easy_strerror(code));
			return 0;
		}
		return -1;
	}
	k8s_status_from_response(http_code, transfer->content_type, transfer->body,
				 transfer->length,
				 transfer->retry_after[0] != '\0' ? transfer->retry_after : NULL,
				 status);
	sbx_debug("k8s: %s %s -> %ld (%" PRId64 " ms)", request->method, url, http_code,
		  sbx_monotonic_ms() - start);
	return 0;
}

static int64_t backoff_delay(struct k8s_client *client, int attempt,
			     const struct k8s_status *status)
{
	int64_t delay = client->backoff_base_ms;
	uint32_t random = 0;
	char hex[9];
	int i;

	if (status->retry_after_seconds >= 0) {
		delay = status->retry_after_seconds * 1000;
		return delay > RETRY_AFTER_MAX_MS ? RETRY_AFTER_MAX_MS : delay;
	}
	for (i = 0; i < attempt && delay < client->backoff_max_ms; i++)
		delay *= 2;
	if (delay > client->backoff_max_ms)
		delay = client->backoff_max_ms;
	/* Jitter in [delay/2, delay] spreads the retries of many clients after an outage. */
	if (sbx_random_hex(hex, 4) == 0)
		random = (uint32_t) strtoul(hex, NULL, 16);
	return delay / 2 + (int64_t) (random % (uint32_t) (delay / 2 + 1));
}

static void sleep_ms(int64_t ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000 };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static int fail_with_status(const struct k8s_request *request, const char *url,
			    const struct k8s_status *status, const char *note,
			    struct sbx_error *error)
{
	if (status->http_code != 0)
		return sbx_error_set(error, k8s_status_error_class(status),
				     "k8s %s %s: %ld %s: %s%s", request->method, url,
				     status->http_code,
				     status->reason[0] != '\0'
					     ? status->reason
					     : k8s_status_class_name(status->status_class),
				     status->message[0] != '\0' ? status->message : "(no message)",
				     note);
	return sbx_error_set(error, SBX_ERROR_SYSTEM, "k8s %s %s: %s: %s%s", request->method, url,
			     k8s_status_class_name(status->status_class), status->message, note);
}

static int run_request(struct k8s_client *client, CURL *handle,
		       const struct k8s_request *request, struct transfer *transfer,
		       struct k8s_status *status, struct sbx_error *error)
{
	_cleanup_free_ char *url = NULL;
	int64_t deadline = request->deadline_ms != 0
				   ? request->deadline_ms
				   : sbx_monotonic_ms() + K8S_REST_DEFAULT_TIMEOUT_MS;
	int attempt = 0, refreshed = 0;

	transfer->client = client;
	transfer->handle = handle;
	if (build_url(client, request->path, request->query, &url) < 0)
		return sbx_error_errno(error, ENOMEM, "k8s request");

	for (;;) {
		int64_t now = sbx_monotonic_ms(), delay;
		int retryable, ret;

		if (now >= deadline) {
			memset(status, 0, sizeof(*status));
			status->status_class = K8S_STATUS_TIMEOUT;
			status->retry_after_seconds = -1;
			snprintf(status->message, sizeof(status->message),
				 "deadline passed after %d attempts", attempt);
			return fail_with_status(request, url, status, "", error);
		}
		ret = perform_once(client, transfer, request, url, deadline, status, &retryable,
				   error);
		if (ret == -2)
			return -1;
		if (ret == 0 && status->status_class == K8S_STATUS_OK)
			return 0;
		if (ret == 0 && transfer->stream != NULL && transfer->stream_stopped)
			return 0;

		if (ret == 0 && status->status_class == K8S_STATUS_UNAUTHORIZED && !refreshed &&
		    k8s_credential_invalidate(client->config)) {
			/* Token files rotate and exec credentials expire early: one retry with a
			 * fresh credential. */
			sbx_debug("k8s: 401 from the API server, refreshing the credential");
			refreshed = 1;
			continue;
		}
		if (ret == 0)
			retryable = k8s_status_retryable(status);
		attempt++;
		if (!retryable || request->no_retry || attempt >= MAX_ATTEMPTS)
			return fail_with_status(request, url, status,
						attempt > 1 ? " (after retries)" : "", error);
		delay = backoff_delay(client, attempt - 1, status);
		if (sbx_monotonic_ms() + delay >= deadline)
			return fail_with_status(request, url, status,
						"; the next retry would pass the deadline", error);
		sbx_debug("k8s: %s %s: %s, retrying in %" PRId64 " ms", request->method, url,
			  k8s_status_class_name(status->status_class), delay);
		sleep_ms(delay);
	}
}

int k8s_rest_request(struct k8s_client *client, const struct k8s_request *request,
		     struct k8s_response *response, struct k8s_status *status,
		     struct sbx_error *error)
{
	struct transfer transfer = { .max_length = RESPONSE_MAX_BYTES };
	struct k8s_status local;
	int ret;

	if (status == NULL)
		status = &local;
	if (client_handles(client, status, error) < 0)
		return -1;
	ret = run_request(client, client->handle, request, &transfer, status, error);
	if (ret == 0 && response != NULL) {
		response->http_code = status->http_code;
		response->body = transfer.body != NULL ? transfer.body : strdup("");
		response->length = transfer.length;
		transfer.body = NULL;
		if (response->body == NULL)
			ret = sbx_error_errno(error, ENOMEM, "k8s response");
	}
	transfer_reset(&transfer);
	return ret;
}

int k8s_rest_stream(struct k8s_client *client, const char *path, const char *query,
		    int64_t deadline_ms, k8s_rest_stream_fn callback, void *userdata,
		    struct k8s_status *status, struct sbx_error *error)
{
	struct transfer transfer = {
		.max_length = STREAM_ERROR_MAX_BYTES,
		.stream = callback,
		.stream_userdata = userdata,
	};
	struct k8s_request request = {
		.method = "GET",
		.path = path,
		.query = query,
		.deadline_ms = deadline_ms,
		.no_retry = 1,
	};
	struct k8s_status local;
	int ret;

	if (status == NULL)
		status = &local;
	if (client_handles(client, status, error) < 0)
		return -1;
	ret = run_request(client, client->stream_handle, &request, &transfer, status, error);
	if (ret == 0 && transfer.stream_stopped)
		ret = 1;
	transfer_reset(&transfer);
	return ret;
}

/* ---- verbs ---- */

static int decode_result(const char *method, const char *path, struct k8s_response *response,
			 struct json_object **result, struct sbx_error *error)
{
	struct json_tokener *tokener;
	struct json_object *object;

	if (result == NULL)
		return 0;
	tokener = json_tokener_new();
	if (tokener == NULL)
		return sbx_error_errno(error, ENOMEM, "k8s response");
	object = response->length <= INT32_MAX
			 ? json_tokener_parse_ex(tokener, response->body, (int) response->length)
			 : NULL;
	json_tokener_free(tokener);
	if (object == NULL)
		return sbx_error_set(error, SBX_ERROR_SYSTEM,
				     "k8s %s %s: the response (%ld) is not JSON", method, path,
				     response->http_code);
	*result = object;
	return 0;
}

static int call(struct k8s_client *client, const char *method, const char *path,
		const char *query, const char *content_type, struct json_object *body,
		int64_t deadline_ms, struct json_object **result, struct k8s_status *status,
		struct sbx_error *error)
{
	struct k8s_request request = {
		.method = method,
		.path = path,
		.query = query,
		.content_type = content_type,
		.deadline_ms = deadline_ms,
	};
	struct k8s_response response = { 0 };
	int ret;

	if (body != NULL) {
		size_t length;

		request.body = json_object_to_json_string_length(body, JSON_C_TO_STRING_PLAIN,
								 &length);
		request.body_length = length;
	}
	ret = k8s_rest_request(client, &request, &response, status, error);
	if (ret == 0)
		ret = decode_result(method, path, &response, result, error);
	free(response.body);
	return ret;
}

int k8s_rest_get(struct k8s_client *client, const char *path, int64_t deadline_ms,
		 struct json_object **result, struct k8s_status *status, struct sbx_error *error)
{
	return call(client, "GET", path, NULL, NULL, NULL, deadline_ms, result, status, error);
}

int k8s_rest_list(struct k8s_client *client, const char *path,
		  const struct k8s_list_options *options, int64_t deadline_ms,
		  struct json_object **result, struct k8s_status *status, struct sbx_error *error)
{
	_cleanup_free_ char *query = NULL;
	char limit[32];

	if (options != NULL) {
		if ((options->label_selector != NULL &&
		     k8s_rest_query_add(&query, "labelSelector", options->label_selector) < 0) ||
		    (options->field_selector != NULL &&
		     k8s_rest_query_add(&query, "fieldSelector", options->field_selector) < 0) ||
		    (options->resource_version != NULL &&
		     k8s_rest_query_add(&query, "resourceVersion", options->resource_version) <
			     0) ||
		    (options->continue_token != NULL &&
		     k8s_rest_query_add(&query, "continue", options->continue_token) < 0))
			return sbx_error_errno(error, ENOMEM, "k8s list");
		if (options->limit > 0) {
			snprintf(limit, sizeof(limit), "%" PRId64, options->limit);
			if (k8s_rest_query_add(&query, "limit", limit) < 0)
				return sbx_error_errno(error, ENOMEM, "k8s list");
		}
	}
	return call(client, "GET", path, query, NULL, NULL, deadline_ms, result, status, error);
}

int k8s_rest_create(struct k8s_client *client, const char *path, struct json_object *object,
		    int64_t deadline_ms, struct json_object **result, struct k8s_status *status,
		    struct sbx_error *error)
{
	return call(client, "POST", path, NULL, "application/json", object, deadline_ms, result,
		    status, error);
}

int k8s_rest_merge_patch(struct k8s_client *client, const char *path, struct json_object *patch,
			 int64_t deadline_ms, struct json_object **result,
			 struct k8s_status *status, struct sbx_error *error)
{
	return call(client, "PATCH", path, NULL, "application/merge-patch+json", patch,
		    deadline_ms, result, status, error);
}

int k8s_rest_apply(struct k8s_client *client, const char *path, struct json_object *object,
		   int force, int64_t deadline_ms, struct json_object **result,
		   struct k8s_status *status, struct sbx_error *error)
{
	/* JSON is YAML, so the apply body needs no YAML emitter. */
	return call(client, "PATCH", path, force ? "fieldManager=sbx&force=true" : "fieldManager=sbx",
		    "application/apply-patch+yaml", object, deadline_ms, result, status, error);
}

int k8s_rest_delete(struct k8s_client *client, const char *path, const char *propagation_policy,
		    int64_t deadline_ms, struct json_object **result, struct k8s_status *status,
		    struct sbx_error *error)
{
	_cleanup_free_ char *query = NULL;

	if (propagation_policy != NULL &&
	    k8s_rest_query_add(&query, "propagationPolicy", propagation_policy) < 0)
		return sbx_error_errno(error, ENOMEM, "k8s delete");
	return call(client, "DELETE", path, query, NULL, NULL, deadline_ms, result, status, error);
}
