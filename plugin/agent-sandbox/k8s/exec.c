/* SPDX-License-Identifier: MIT */
/*
 * Pod exec over WebSocket with libwebsockets 4.1. One lws context per call: it carries the
 * OpenSSL context sbx builds (the whole CA bundle, the client certificate from memory), so a
 * credential change between two calls needs nothing special.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libwebsockets.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "cleanup.h"
#include "error.h"
#include "log.h"
#include "util.h"

#include "exec.h"
#include "exec_io.h"
#include "tls.h"
#include "wsframe.h"

#define PROTOCOLS_OFFERED "v5.channel.k8s.io, v4.channel.k8s.io"
#define DEFAULT_PING_INTERVAL_MS 5000
/* client-go fails a stream after 61 s without data or pong; the same here. */
#define DEFAULT_IDLE_TIMEOUT_MS 61000
#define DEFAULT_OUTPUT_QUEUE_MAX (1u << 20)
#define TIMER_INTERVAL_US (200 * LWS_US_PER_MS)
/* Bytes lws hands to one receive callback. */
#define RX_BUFFER_SIZE 65536
/* Request line plus headers: a long exec URL and a bearer token of several KiB must fit. */
#define HEADER_BUFFER_SIZE 32768
/*
 * libwebsockets 4.1 formats the handshake's request line into a 2048-byte buffer
 * (lws_snprintf(p, 2048, "GET %s HTTP/1.1\r\n", path) in its client handshake) and sends a
 * longer one cut short, without " HTTP/1.1": the server then sees no upgrade request and
 * answers 400 "Upgrade request required". Measured with lws 4.1.6 (Debian 12) against a
 * capturing server.
 */
#define REQUEST_LINE_MAX 2047

struct exec_session {
	const struct k8s_exec_options *options;
	struct k8s_exec_result *result;
	struct lws_context *context;
	struct lws *wsi;
	lws_sorted_usec_list_t timer;
	struct k8s_wsframe_reader reader;
	int insecure;
	char *authorization; /* "Bearer ..." or NULL */

	int established;
	int v5;
	int done; /* the service loop may stop */
	int closed; /* the connection is gone */
	int failed; /* FAILURE contains the reason */
	struct sbx_error failure;
	char connect_error[256];
	unsigned int http_status;

	/* stdin */
	int stdin_wanted;
	const unsigned char *stdin_data;
	uint64_t stdin_sent;
	uint64_t stdin_total; /* UINT64_MAX while streaming from a descriptor */
	struct k8s_stdin_pump stdin_pump;
	int stdin_eof; /* the source ended; the close message may follow */
	int stdin_closed; /* [255, 0] sent, or nothing more to send on v4 */
	unsigned char *send_buffer; /* LWS_PRE + 1 + K8S_STDIN_CHUNK */

	/* output */
	struct k8s_output_queue output;
	int rx_paused;

	/* keepalive */
	int64_t last_rx_ms;
	int64_t last_ping_ms;
	int ping_due;
};

static void session_fail(struct exec_session *session, enum sbx_error_class error_class,
			 const char *format, ...) __attribute__((format(printf, 3, 4)));

static void session_fail(struct exec_session *session, enum sbx_error_class error_class,
			 const char *format, ...)
{
	va_list args;

	if (!session->failed) {
		va_start(args, format);
		sbx_error_setv(&session->failure, error_class, format, args);
		va_end(args);
		session->failed = 1;
	}
	session->done = 1;
	/* lws_service() goes on polling after a timer callback; make it return. */
	if (session->context != NULL)
		lws_cancel_service(session->context);
}

static void lws_log_to_sbx(int level, const char *line)
{
	/* lws logs are diagnostics for us, never for the job log. */
	sbx_debug("lws: %s", line);
}

static pthread_once_t lws_log_once = PTHREAD_ONCE_INIT;

static void lws_log_setup(void)
{
	lws_set_log_level(LLL_ERR | LLL_WARN, lws_log_to_sbx);
}

static void wake_event_loop(void *userdata)
{
	struct exec_session *session = userdata;

	lws_cancel_service(session->context);
}

/* ---- the exec URL ---- */

int k8s_exec_build_path(const struct k8s_config *config, const struct k8s_exec_options *options,
			char **result, struct sbx_error *error)
{
	_cleanup_free_ char *query = NULL;
	_cleanup_free_ char *namespace = NULL;
	_cleanup_free_ char *pod = NULL;
	_cleanup_free_ char *script = NULL;
	const char *const *arg;

	if (options->argv == NULL || options->argv[0] == NULL)
		return sbx_error_set(error, SBX_ERROR_INVALID, "exec: empty command");
	namespace = k8s_rest_escape(options->namespace);
	pod = k8s_rest_escape(options->pod);
	if (namespace == NULL || pod == NULL)
		return sbx_error_errno(error, ENOMEM, "exec");

	if (options->stdin_mode == K8S_EXEC_STDIN_COUNTED) {
		/* head stops after exactly N bytes and closes the pipe, so the command reads EOF
		 * even where the protocol cannot close stdin. */
		if (asprintf(&script, "head -c %" PRIu64 " | \"$@\"", options->stdin_length) < 0) {
			script = NULL;
			return sbx_error_errno(error, ENOMEM, "exec");
		}
		if (k8s_rest_query_add(&query, "command", "sh") < 0 ||
		    k8s_rest_query_add(&query, "command", "-c") < 0 ||
		    k8s_rest_query_add(&query, "command", script) < 0 ||
		    k8s_rest_query_add(&query, "command", "sh") < 0)
			return sbx_error_errno(error, ENOMEM, "exec");
	}
	for (arg = options->argv; *arg != NULL; arg++)
		if (k8s_rest_query_add(&query, "command", *arg) < 0)
			return sbx_error_errno(error, ENOMEM, "exec");
	if (options->container != NULL &&
	    k8s_rest_query_add(&query, "container", options->container) < 0)
		return sbx_error_errno(error, ENOMEM, "exec");
	/* Absent booleans are false; an empty value would be true, so flags are explicit. */
	if ((options->stdin_mode != K8S_EXEC_STDIN_NONE &&
	     k8s_rest_query_add(&query, "stdin", "true") < 0) ||
	    k8s_rest_query_add(&query, "stdout", "true") < 0 ||
	    k8s_rest_query_add(&query, "stderr", "true") < 0)
		return sbx_error_errno(error, ENOMEM, "exec");

	if (asprintf(result, "%s/api/v1/namespaces/%s/pods/%s/exec?%s", config->server.prefix,
		     namespace, pod, query) < 0) {
		*result = NULL;
		return sbx_error_errno(error, ENOMEM, "exec");
	}
	return 0;
}

/* Rejects a URL whose request line libwebsockets would cut, before anything is sent. */
static int check_path_length(const struct k8s_exec_options *options, const char *path,
			     struct sbx_error *error)
{
	size_t line = strlen("GET ") + strlen(path) + strlen(" HTTP/1.1\r\n");

	if (line <= REQUEST_LINE_MAX)
		return 0;
	return sbx_error_set(error, SBX_ERROR_INVALID,
			     "exec in pod %s/%s: the command and its arguments make an exec URL of "
			     "%zu bytes, and the WebSocket request line would be %zu bytes; "
			     "libwebsockets sends at most %d, so pass long arguments and scripts "
			     "on stdin",
			     options->namespace, options->pod, strlen(path), line,
			     REQUEST_LINE_MAX);
}

/* ---- sending ---- */

static int stdin_pending(struct exec_session *session)
{
	/* For a descriptor source the writeable callback asks the pump whether a chunk is
	 * ready. */
	return session->stdin_wanted && !session->stdin_closed;
}

static int send_message(struct exec_session *session, struct lws *wsi, uint8_t channel,
			const void *data, size_t length)
{
	unsigned char *message = session->send_buffer + LWS_PRE;
	int n;

	k8s_wsframe_encode(channel, data, length, message);
	n = lws_write(wsi, message, length + 1, LWS_WRITE_BINARY);
	if (n < (int) (length + 1)) {
		session_fail(session, SBX_ERROR_SYSTEM, "exec: sending on channel %u failed",
			     channel);
		return -1;
	}
	return 0;
}

/* One lws_write per writeable callback: ping first, then stdin, then the stdin close. */
static int on_writeable(struct exec_session *session, struct lws *wsi)
{
	if (session->ping_due) {
		session->ping_due = 0;
		session->last_ping_ms = sbx_monotonic_ms();
		if (lws_write(wsi, session->send_buffer + LWS_PRE, 0, LWS_WRITE_PING) < 0) {
			session_fail(session, SBX_ERROR_SYSTEM, "exec: sending a ping failed");
			return -1;
		}
		if (stdin_pending(session))
			lws_callback_on_writable(wsi);
		return 0;
	}
	if (!session->stdin_wanted || session->stdin_closed)
		return 0;

	if (!session->stdin_eof) {
		size_t length = 0;

		if (session->stdin_data != NULL) {
			uint64_t left = session->stdin_total - session->stdin_sent;

			length = left < K8S_STDIN_CHUNK ? (size_t) left : K8S_STDIN_CHUNK;
			if (length == 0) {
				session->stdin_eof = 1;
			} else {
				if (send_message(session, wsi, K8S_CHANNEL_STDIN,
						 session->stdin_data + session->stdin_sent,
						 length) < 0)
					return -1;
				session->stdin_sent += length;
				lws_callback_on_writable(wsi);
				return 0;
			}
		} else {
			unsigned char chunk[K8S_STDIN_CHUNK];
			int eof;
			ssize_t n = k8s_stdin_pump_take(&session->stdin_pump, chunk, &eof);

			if (n < 0) {
				session_fail(session, SBX_ERROR_SYSTEM, "%s",
					     session->stdin_pump.failure);
				return -1;
			}
			if (n > 0) {
				if (send_message(session, wsi, K8S_CHANNEL_STDIN, chunk,
						 (size_t) n) < 0)
					return -1;
				session->stdin_sent += (uint64_t) n;
				/* The next chunk wakes us through the pump. */
				return 0;
			}
			if (!eof)
				return 0;
			session->stdin_eof = 1;
		}
	}

	/* The source is done. v5 closes the channel; on v4 the counted mode's remote head, or
	 * the command itself in the exact mode, already stopped reading. */
	if (session->v5) {
		uint8_t close_stdin = K8S_CHANNEL_STDIN;

		if (send_message(session, wsi, K8S_CHANNEL_CLOSE, &close_stdin, 1) < 0)
			return -1;
		sbx_debug("k8s exec: stdin closed after %" PRIu64 " bytes", session->stdin_sent);
	}
	session->stdin_closed = 1;
	return 0;
}

/* ---- receiving ---- */

static int deliver_output(void *userdata, int channel, const void *data, size_t length)
{
	struct exec_session *session = userdata;

	if (channel == K8S_CHANNEL_STDOUT)
		session->result->stdout_bytes += length;
	else
		session->result->stderr_bytes += length;
	return k8s_output_queue_push(&session->output, channel, data, length);
}

static int on_receive(struct exec_session *session, struct lws *wsi, const void *in,
		      size_t length)
{
	struct sbx_error error;

	session->last_rx_ms = sbx_monotonic_ms();
	if (!session->reader.in_message && !lws_frame_is_binary(wsi)) {
		session_fail(session, SBX_ERROR_SYSTEM,
			     "exec: the server sent a text message on a binary channel protocol");
		return -1;
	}
	sbx_error_clear(&error);
	if (k8s_wsframe_feed(&session->reader, in, length, lws_is_final_fragment(wsi), &error) <
	    0) {
		if (session->output.failed)
			session_fail(session, SBX_ERROR_SYSTEM,
				     "exec: cannot write the command's %s: %s",
				     session->output.failed_channel == 1 ? "stdout" : "stderr",
				     strerror(session->output.errnum));
		else
			session_fail(session, (enum sbx_error_class) error.error_class, "%s",
				     error.message);
		return -1;
	}
	if (session->reader.have_status) {
		/* The status is the last message of the command; the close follows. */
		session->done = 1;
		lws_close_reason(wsi, LWS_CLOSE_STATUS_NORMAL, NULL, 0);
		return -1;
	}
	if (!session->rx_paused && k8s_output_queue_should_pause(&session->output)) {
		session->rx_paused = 1;
		lws_rx_flow_control(wsi, 0);
	}
	return 0;
}

/* ---- connection events ---- */

static int start_stdin(struct exec_session *session, struct sbx_error *error)
{
	const struct k8s_exec_options *options = session->options;

	if (options->stdin_mode == K8S_EXEC_STDIN_NONE)
		return 0;
	session->stdin_wanted = 1;
	if (options->stdin_data != NULL) {
		session->stdin_data = options->stdin_data;
		session->stdin_total = options->stdin_length;
		return 0;
	}
	if (options->stdin_fd < 0)
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "exec: stdin requested without stdin data or descriptor");
	return k8s_stdin_pump_start(&session->stdin_pump, options->stdin_fd,
				    options->stdin_mode != K8S_EXEC_STDIN_STREAM
					    ? options->stdin_length
					    : UINT64_MAX,
				    options->stdin_mode != K8S_EXEC_STDIN_STREAM, wake_event_loop,
				    session, error);
}

static void on_established(struct exec_session *session, struct lws *wsi)
{
	session->established = 1;
	session->last_rx_ms = sbx_monotonic_ms();
	session->last_ping_ms = session->last_rx_ms;
	sbx_debug("k8s exec: connected with %s", session->result->protocol);
	if (!session->v5 && session->options->stdin_mode == K8S_EXEC_STDIN_STREAM) {
		session_fail(session, SBX_ERROR_SYSTEM,
			     "exec: the server speaks only %s, which cannot close stdin; run the "
			     "command with counted stdin or without stdin",
			     session->result->protocol);
		return;
	}
	/* The stdin source is read only now, so a refused upgrade consumes none of it. */
	if (start_stdin(session, &session->failure) < 0) {
		session->failed = 1;
		session->done = 1;
		return;
	}
	if (session->stdin_wanted)
		lws_callback_on_writable(wsi);
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
		    size_t length)
{
	struct exec_session *session = user;

	switch (reason) {
	case LWS_CALLBACK_OPENSSL_PERFORM_SERVER_CERT_VERIFICATION:
		/* Delivered to protocols[0] without the session, which is the context's user. */
		session = lws_context_user(lws_get_context(wsi));
		if (session != NULL && session->insecure)
			X509_STORE_CTX_set_error((X509_STORE_CTX *) user, X509_V_OK);
		return 0;

	case LWS_CALLBACK_CLIENT_APPEND_HANDSHAKE_HEADER: {
		unsigned char **p = (unsigned char **) in, *end = *p + length;

		if (session == NULL || session->authorization == NULL)
			return 0;
		if (lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_AUTHORIZATION,
						 (unsigned char *) session->authorization,
						 (int) strlen(session->authorization), p, end)) {
			session_fail(session, SBX_ERROR_SYSTEM,
				     "exec: the request headers do not fit in %d bytes",
				     HEADER_BUFFER_SIZE);
			return -1;
		}
		return 0;
	}

	case LWS_CALLBACK_CLIENT_FILTER_PRE_ESTABLISH:
		/* The response headers are still attached here and gone later. */
		if (session != NULL &&
		    lws_hdr_copy(wsi, session->result->protocol, sizeof(session->result->protocol),
				 WSI_TOKEN_PROTOCOL) > 0)
			session->v5 = strcmp(session->result->protocol, "v5.channel.k8s.io") == 0;
		if (session != NULL && strcmp(session->result->protocol, "v5.channel.k8s.io") != 0 &&
		    strcmp(session->result->protocol, "v4.channel.k8s.io") != 0) {
			session_fail(session, SBX_ERROR_SYSTEM,
				     "exec: the server chose the subprotocol \"%s\"; sbx needs "
				     "v5.channel.k8s.io or v4.channel.k8s.io",
				     session->result->protocol);
			return -1;
		}
		return 0;

	case LWS_CALLBACK_CLIENT_ESTABLISHED:
		if (session != NULL)
			on_established(session, wsi);
		return session != NULL && session->failed ? -1 : 0;

	case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
		if (session != NULL) {
			snprintf(session->connect_error, sizeof(session->connect_error), "%s",
				 in != NULL ? (const char *) in : "connection failed");
			session->http_status = lws_http_client_http_response(wsi);
			session->closed = 1;
			session->done = 1;
			session->wsi = NULL;
		}
		return 0;

	case LWS_CALLBACK_CLIENT_RECEIVE:
		if (session == NULL || session->done)
			return -1;
		return on_receive(session, wsi, in, length);

	case LWS_CALLBACK_CLIENT_RECEIVE_PONG:
		if (session != NULL)
			session->last_rx_ms = sbx_monotonic_ms();
		return 0;

	case LWS_CALLBACK_CLIENT_WRITEABLE:
		if (session == NULL || session->done)
			return 0;
		return on_writeable(session, wsi);

	case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
		/* A pump thread woke the loop. This arrives at protocols[0] without the session. */
		session = lws_context_user(lws_get_context(wsi));
		if (session == NULL || session->wsi == NULL || !session->established ||
		    session->done)
			return 0;
		if (session->rx_paused && k8s_output_queue_may_resume(&session->output)) {
			session->rx_paused = 0;
			lws_rx_flow_control(session->wsi, 1);
		}
		if (stdin_pending(session))
			lws_callback_on_writable(session->wsi);
		return 0;

	case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
		if (session != NULL && length >= 2) {
			const unsigned char *code = in;

			sbx_debug("k8s exec: the server closed the connection (code %u)",
				  (unsigned) (code[0] << 8 | code[1]));
		}
		return 0;

	case LWS_CALLBACK_CLIENT_CLOSED:
		if (session != NULL) {
			session->closed = 1;
			session->done = 1;
			session->wsi = NULL;
		}
		return 0;

	default:
		return 0;
	}
}

static const struct lws_protocols protocols[] = {
	{ "sbx-k8s-exec", callback, 0, RX_BUFFER_SIZE, 0, NULL, 0 },
	{ NULL, NULL, 0, 0, 0, NULL, 0 },
};

/* ---- timer: deadline, cancellation, keepalive ---- */

static void on_timer(lws_sorted_usec_list_t *sul)
{
	struct exec_session *session = lws_container_of(sul, struct exec_session, timer);
	const struct k8s_exec_options *options = session->options;
	int64_t now = sbx_monotonic_ms();
	int ping_interval = options->ping_interval_ms > 0 ? options->ping_interval_ms
							  : DEFAULT_PING_INTERVAL_MS;
	int idle_timeout = options->idle_timeout_ms > 0 ? options->idle_timeout_ms
							: DEFAULT_IDLE_TIMEOUT_MS;

	if (options->cancel_fd >= 0) {
		struct pollfd pfd = { .fd = options->cancel_fd, .events = POLLIN };

		if (poll(&pfd, 1, 0) > 0) {
			session_fail(session, SBX_ERROR_CANCELLED,
				     "exec in pod %s/%s: cancelled", options->namespace,
				     options->pod);
			return;
		}
	}
	if (options->deadline_ms != 0 && now >= options->deadline_ms) {
		session_fail(session, SBX_ERROR_SYSTEM,
			     "exec in pod %s/%s: the deadline passed before the command ended",
			     options->namespace, options->pod);
		return;
	}
	if (session->established && session->wsi != NULL) {
		/* A paused reader sees no data by choice; that is not idleness. */
		if (!session->rx_paused && now - session->last_rx_ms > idle_timeout) {
			session_fail(session, SBX_ERROR_SYSTEM,
				     "exec in pod %s/%s: no data and no pong for %d ms; the "
				     "connection is considered dead",
				     options->namespace, options->pod, idle_timeout);
			return;
		}
		if (session->rx_paused)
			session->last_rx_ms = now;
		if (now - session->last_ping_ms >= ping_interval) {
			session->ping_due = 1;
			lws_callback_on_writable(session->wsi);
		}
		if (session->output.failed) {
			session_fail(session, SBX_ERROR_SYSTEM, "exec: cannot write the command's %s: %s",
				     session->output.failed_channel == 1 ? "stdout" : "stderr",
				     strerror(session->output.errnum));
			return;
		}
	}
	lws_sul_schedule(session->context, 0, &session->timer, on_timer, TIMER_INTERVAL_US);
}

/* ---- failed upgrades ---- */

/*
 * lws 4.1 gives the HTTP status of a refused upgrade but not the body. The same URL as a plain
 * GET brings the server's Status (authentication, authorisation and the pod lookup come
 * before the upgrade check), which is used when it has the same code.
 */
static void report_failed_upgrade(struct k8s_client *client, struct exec_session *session,
				  const char *path, struct sbx_error *error)
{
	const struct k8s_exec_options *options = session->options;
	const char *query = strchr(path, '?');
	_cleanup_free_ char *bare_path = strndup(path, query != NULL ? (size_t) (query - path)
								 : strlen(path));
	struct k8s_request request = {
		.method = "GET",
		.path = bare_path != NULL ? bare_path + strlen(k8s_client_config(client)->server.prefix)
					  : "",
		.query = query != NULL ? query + 1 : NULL,
		.deadline_ms = sbx_monotonic_ms() + 10000,
		.no_retry = 1,
	};
	struct k8s_response response = { 0 };
	struct k8s_status status;
	struct sbx_error replay_error;

	if (session->http_status == 0) {
		sbx_error_set(error, SBX_ERROR_SYSTEM, "exec in pod %s/%s: %s", options->namespace,
			      options->pod, session->connect_error);
		return;
	}
	sbx_error_clear(&replay_error);
	memset(&status, 0, sizeof(status));
	if (k8s_rest_request(client, &request, &response, &status, &replay_error) == 0)
		status.http_code = response.http_code;
	free(response.body);
	if (status.http_code == (long) session->http_status && status.message[0] != '\0') {
		sbx_error_set(error, k8s_status_error_class(&status),
			      "exec in pod %s/%s: the upgrade failed with HTTP %u %s: %s",
			      options->namespace, options->pod, session->http_status,
			      status.reason[0] != '\0' ? status.reason
						       : k8s_status_class_name(status.status_class),
			      status.message);
		return;
	}
	sbx_error_set(error, session->http_status == 404 ? SBX_ERROR_NOT_FOUND : SBX_ERROR_SYSTEM,
		      "exec in pod %s/%s: the upgrade failed with HTTP %u (%s)%s",
		      options->namespace, options->pod, session->http_status,
		      session->connect_error,
		      session->http_status == 403
			      ? "; a bare 403 means the server accepts neither "
				"v5.channel.k8s.io nor v4.channel.k8s.io, or RBAC lacks get and "
				"create on pods/exec"
			      : "");
}

/* ---- the call ---- */

static int create_context(struct exec_session *session, const struct k8s_config *config,
			  const struct k8s_credential *credential, SSL_CTX **ssl_context,
			  struct sbx_error *error)
{
	struct lws_context_creation_info info;
	_cleanup_free_ char *proxy = NULL;

	memset(&info, 0, sizeof(info));
	info.port = CONTEXT_PORT_NO_LISTEN;
	info.protocols = protocols;
	info.user = session;
	info.pt_serv_buf_size = HEADER_BUFFER_SIZE;
	info.max_http_header_data = HEADER_BUFFER_SIZE;
	info.fd_limit_per_thread = 8;
	info.options = 0;
	if (config->server.tls) {
		struct k8s_tls_material material = {
			.ca_pem = config->ca_pem,
			.ca_pem_length = config->ca_pem_length,
			.cert_pem = credential->client_cert_pem,
			.cert_pem_length = credential->client_cert_pem_length,
			.key_pem = credential->client_key_pem,
			.key_pem_length = credential->client_key_pem_length,
			.insecure = config->insecure_skip_tls_verify,
		};

		if (k8s_tls_context_new(&material, ssl_context, error) < 0)
			return sbx_error_prefix(error, "exec: TLS for %s", config->origin);
		info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
		info.provided_client_ssl_ctx = *ssl_context;
	}
	if (config->proxy_url != NULL) {
		/* lws speaks HTTP CONNECT to host:port; other proxy kinds are not available. */
		if (strncmp(config->proxy_url, "http://", 7) != 0)
			return sbx_error_set(error, SBX_ERROR_INVALID,
					     "%s: proxy-url \"%s\": exec supports only http:// "
					     "proxies",
					     config->origin, config->proxy_url);
		proxy = strdup(config->proxy_url + 7);
		if (proxy == NULL)
			return sbx_error_errno(error, ENOMEM, "exec");
		proxy[strcspn(proxy, "/")] = '\0';
		info.http_proxy_address = proxy;
	}
	/* NOTE: without proxy-url, lws 4.1 still honours the http_proxy environment variable
	 * and has no NO_PROXY support. */
	session->context = lws_create_context(&info);
	if (session->context == NULL)
		return sbx_error_set(error, SBX_ERROR_SYSTEM,
				     "exec: cannot create the libwebsockets context");
	return 0;
}

static int connect_session(struct exec_session *session, const struct k8s_config *config,
			   const char *path, struct sbx_error *error)
{
	struct lws_client_connect_info connect;

	memset(&connect, 0, sizeof(connect));
	connect.context = session->context;
	connect.address = config->server.host;
	connect.port = config->server.port;
	connect.path = path;
	/* lws uses host for the Host header, SNI and the name it verifies. */
	connect.host = config->tls_server_name != NULL ? config->tls_server_name
						       : config->server.host;
	connect.origin = NULL;
	connect.protocol = PROTOCOLS_OFFERED;
	/* Binds our handler whichever subprotocol the server picks. */
	connect.local_protocol_name = protocols[0].name;
	connect.alpn = "http/1.1";
	connect.userdata = session;
	connect.pwsi = &session->wsi;
	if (config->server.tls) {
		connect.ssl_connection = LCCSCF_USE_SSL;
		if (config->insecure_skip_tls_verify)
			connect.ssl_connection |= LCCSCF_ALLOW_SELFSIGNED |
						  LCCSCF_SKIP_SERVER_CERT_HOSTNAME_CHECK |
						  LCCSCF_ALLOW_EXPIRED | LCCSCF_ALLOW_INSECURE;
	}
	if (lws_client_connect_via_info(&connect) == NULL && !session->done)
		return sbx_error_set(error, SBX_ERROR_SYSTEM,
				     "exec: cannot start a connection to %s:%d", config->server.host,
				     config->server.port);
	return 0;
}

static int finish(struct k8s_client *client, struct exec_session *session, const char *path,
		  struct sbx_error *error)
{
	const struct k8s_exec_options *options = session->options;

	if (session->failed) {
		*error = session->failure;
		return -1;
	}
	if (!session->established) {
		report_failed_upgrade(client, session, path, error);
		return -1;
	}
	if (!session->reader.have_status)
		return sbx_error_set(error, SBX_ERROR_SYSTEM,
				     "exec in pod %s/%s: the connection ended before the command's "
				     "status arrived; whether the command ran to its end is unknown",
				     options->namespace, options->pod);
	if (!session->reader.status_ok)
		return sbx_error_set(error, SBX_ERROR_SYSTEM,
				     "exec in pod %s/%s: the command did not run to an exit code: %s",
				     options->namespace, options->pod,
				     session->reader.status_message);
	session->result->exit_code = session->reader.exit_code;
	return 0;
}

/* One attempt; *UNAUTHORIZED is set when the upgrade got a 401. */
static int exec_once(struct k8s_client *client, const struct k8s_exec_options *options,
		     struct k8s_exec_result *result, int *unauthorized, struct sbx_error *error)
{
	struct k8s_config *config = k8s_client_config(client);
	struct exec_session session;
	struct k8s_credential credential;
	_cleanup_free_ char *path = NULL;
	SSL_CTX *ssl_context = NULL;
	int ret = -1, output_started = 0;

	memset(result, 0, sizeof(*result));
	result->exit_code = -1;
	*unauthorized = 0;
	memset(&session, 0, sizeof(session));
	session.options = options;
	session.result = result;
	session.insecure = config->insecure_skip_tls_verify;
	k8s_wsframe_reader_init(&session.reader, deliver_output, &session);
	pthread_once(&lws_log_once, lws_log_setup);

	if (k8s_exec_build_path(config, options, &path, error) < 0 ||
	    check_path_length(options, path, error) < 0)
		return -1;
	if (k8s_credential_get(config, &credential, error) < 0)
		return -1;
	if (credential.token != NULL &&
	    asprintf(&session.authorization, "Bearer %s", credential.token) < 0) {
		session.authorization = NULL;
		return sbx_error_errno(error, ENOMEM, "exec");
	}
	session.send_buffer = malloc(LWS_PRE + 1 + K8S_STDIN_CHUNK);
	if (session.send_buffer == NULL) {
		sbx_error_errno(error, ENOMEM, "exec");
		goto out;
	}
	if (create_context(&session, config, &credential, &ssl_context, error) < 0)
		goto out;
	if (k8s_output_queue_start(&session.output, options->stdout_fd, options->stderr_fd,
				   options->output_queue_max != 0 ? options->output_queue_max
								  : DEFAULT_OUTPUT_QUEUE_MAX,
				   wake_event_loop, &session, error) < 0)
		goto out;
	output_started = 1;

	sbx_debug("k8s exec: GET %s%s (protocols %s)", config->server.base_url,
		  path + strlen(config->server.prefix), PROTOCOLS_OFFERED);
	lws_sul_schedule(session.context, 0, &session.timer, on_timer, TIMER_INTERVAL_US);
	if (connect_session(&session, config, path, error) < 0)
		goto out;
	while (!session.done)
		if (lws_service(session.context, 0) < 0)
			break;

	lws_sul_cancel(&session.timer);
	/* The pumps must not wake a context that is going away. */
	k8s_stdin_pump_stop(&session.stdin_pump);
	k8s_output_queue_detach(&session.output);
	/* Closing the connection here makes lws deliver CLIENT_CLOSED while the session is
	 * still alive. */
	lws_context_destroy(session.context);
	session.context = NULL;

	ret = finish(client, &session, path, error);
	if (ret == 0 || session.failure.error_class != SBX_ERROR_CANCELLED) {
		struct sbx_error output_error;

		/* All output reaches the sinks before the exit code is reported. */
		sbx_error_clear(&output_error);
		result->output_queue_peak = session.output.peak;
		if (k8s_output_queue_finish(&session.output, options->deadline_ms,
					    &output_error) < 0 &&
		    ret == 0) {
			*error = output_error;
			ret = -1;
		}
		output_started = 0;
	}
	*unauthorized = !session.established && session.http_status == 401;

out:
	k8s_stdin_pump_stop(&session.stdin_pump);
	if (output_started)
		k8s_output_queue_detach(&session.output);
	if (session.context != NULL) {
		lws_sul_cancel(&session.timer);
		lws_context_destroy(session.context);
	}
	if (output_started) {
		result->output_queue_peak = session.output.peak;
		k8s_output_queue_abort(&session.output);
	}
	if (ssl_context != NULL)
		k8s_tls_context_free(ssl_context);
	k8s_wsframe_reader_clear(&session.reader);
	free(session.send_buffer);
	if (session.authorization != NULL) {
		explicit_bzero(session.authorization, strlen(session.authorization));
		free(session.authorization);
	}
	return ret;
}

int k8s_exec_run(struct k8s_client *client, const struct k8s_exec_options *options,
		 struct k8s_exec_result *result, struct sbx_error *error)
{
	struct k8s_exec_result local_result;
	int unauthorized = 0;

	if (result == NULL)
		result = &local_result;
	if (exec_once(client, options, result, &unauthorized, error) == 0)
		return 0;
	/* A 401 comes before anything ran: retry once with a refreshed credential, as REST
	 * calls do. */
	if (!unauthorized || !k8s_credential_invalidate(k8s_client_config(client)))
		return -1;
	sbx_debug("k8s exec: 401 from the API server, refreshing the credential");
	return exec_once(client, options, result, &unauthorized, error);
}
