/* SPDX-License-Identifier: MIT */
/*
 * Pod exec over WebSocket: one connection per call (k8s/exec_transport.c), the RFC 6455
 * client framing of k8s/websocket.c and the channel layer of k8s/wsframe.c, driven by one
 * poll() loop. The pump threads of k8s/exec_io.c wake the loop through an eventfd.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include "cleanup.h"
#include "error.h"
#include "log.h"
#include "util.h"

#include "exec.h"
#include "exec_io.h"
#include "exec_transport.h"
#include "status.h"
#include "tls.h"
#include "websocket.h"
#include "wsframe.h"

#define PROTOCOLS_OFFERED "v5.channel.k8s.io, v4.channel.k8s.io"
#define DEFAULT_PING_INTERVAL_MS 5000
/* client-go fails a stream after 61 s without data or pong; the same here. */
#define DEFAULT_IDLE_TIMEOUT_MS 61000
#define DEFAULT_OUTPUT_QUEUE_MAX (1u << 20)
/* How often the loop looks at its timers when nothing happens. */
#define TIMER_INTERVAL_MS 200
/* Connecting, the proxy, TLS and the upgrade together, unless the deadline comes first. */
#define SETUP_TIMEOUT_MS 30000
/* Bytes asked from the connection per read: large, so 1 GiB of output costs few calls. */
#define READ_BUFFER_SIZE (256u << 10)
/* Reads in a row before the loop looks at the timers and at sending again. */
#define READS_PER_TURN 16
/*
 * The request head's bound. Go's net/http rejects heads over http.DefaultMaxHeaderBytes
 * (1 MiB) by default; a longer exec URL cannot work, so it fails before connecting.
 */
#define REQUEST_HEAD_MAX (1u << 20)
/* The body of a refused upgrade: a Status object, small. */
#define ERROR_BODY_MAX (64u << 10)
#define ERROR_BODY_WAIT_MS 5000
/* One stdin frame: header, channel byte, chunk. */
#define SEND_BUFFER_SIZE (K8S_WS_HEADER_MAX + 1 + K8S_STDIN_CHUNK)

struct exec_session {
	const struct k8s_exec_options *options;
	struct k8s_exec_result *result;
	struct k8s_transport transport;
	int wake_fd; /* eventfd the pump threads write to */
	struct k8s_ws_parser parser;
	struct k8s_wsframe_reader reader;
	unsigned char *read_buffer;
	size_t read_size; /* bytes asked per read, at most READ_BUFFER_SIZE */

	int established;
	int v5;
	int done; /* the loop may stop */
	int peer_closed; /* close frame or end of stream from the server */
	int failed; /* FAILURE contains the reason */
	struct sbx_error failure;
	int http_status; /* of a refused upgrade */

	/* stdin */
	int stdin_wanted;
	const unsigned char *stdin_data;
	uint64_t stdin_sent;
	uint64_t stdin_total;
	struct k8s_stdin_pump stdin_pump;
	int stdin_eof;
	int stdin_closed; /* [255, 0] sent, or nothing more to send on v4 */
	unsigned char *stdin_chunk; /* K8S_STDIN_CHUNK bytes taken from the pump */

	/* the frame being sent */
	unsigned char *send_buffer; /* SEND_BUFFER_SIZE */
	size_t send_length;
	size_t send_offset;
	int pong_due;
	unsigned char pong_payload[K8S_WS_CONTROL_MAX];
	size_t pong_length;
	int ping_due;

	/* output */
	struct k8s_output_queue output;
	int rx_paused;

	/* keepalive */
	int64_t last_rx_ms;
	int64_t last_ping_ms;
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
}

/* Records ERROR as the session's failure, prefixed with the pod. */
static void session_fail_with(struct exec_session *session, const struct sbx_error *error)
{
	session_fail(session, (enum sbx_error_class) error->error_class, "exec in pod %s/%s: %s",
		     session->options->namespace, session->options->pod, error->message);
}

static void wake_event_loop(void *userdata)
{
	struct exec_session *session = userdata;
	uint64_t one = 1;
	ssize_t n;

	/* A full counter already wakes the loop, so EAGAIN needs nothing. */
	n = write(session->wake_fd, &one, sizeof(one));
	(void) n;
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

/* ---- sending ---- */

/* Puts a masked frame with PAYLOAD into the send buffer, which is empty. */
static int queue_frame(struct exec_session *session, int opcode, const void *payload,
		       size_t length)
{
	size_t n = k8s_ws_encode_frame(session->send_buffer, opcode, payload, length);

	if (n == 0) {
		session_fail(session, SBX_ERROR_SYSTEM, "exec: the OpenSSL random generator failed");
		return -1;
	}
	session->send_length = n;
	session->send_offset = 0;
	return 0;
}

/* Puts a binary message [CHANNEL][DATA] into the send buffer, masked in place. */
static int queue_channel_message(struct exec_session *session, uint8_t channel,
				 const void *data, size_t length)
{
	uint8_t mask[4];
	size_t header;

	if (k8s_ws_new_mask(mask) < 0) {
		session_fail(session, SBX_ERROR_SYSTEM, "exec: the OpenSSL random generator failed");
		return -1;
	}
	header = k8s_ws_encode_header(session->send_buffer, K8S_WS_BINARY, 1, 1 + length, mask);
	k8s_wsframe_encode(channel, data, length, session->send_buffer + header);
	k8s_ws_mask(session->send_buffer + header, 1 + length, mask, 0);
	session->send_length = header + 1 + length;
	session->send_offset = 0;
	return 0;
}

/* Fills the empty send buffer: a pong first, then a ping, then stdin, then the stdin close. */
static int fill_send_buffer(struct exec_session *session)
{
	if (session->pong_due) {
		session->pong_due = 0;
		return queue_frame(session, K8S_WS_PONG, session->pong_payload,
				   session->pong_length);
	}
	if (session->ping_due) {
		session->ping_due = 0;
		session->last_ping_ms = sbx_monotonic_ms();
		return queue_frame(session, K8S_WS_PING, NULL, 0);
	}
	if (!session->stdin_wanted || session->stdin_closed)
		return 0;

	if (!session->stdin_eof) {
		if (session->stdin_data != NULL) {
			uint64_t left = session->stdin_total - session->stdin_sent;
			size_t length = left < K8S_STDIN_CHUNK ? (size_t) left : K8S_STDIN_CHUNK;

			if (length > 0) {
				const unsigned char *chunk = session->stdin_data + session->stdin_sent;

				session->stdin_sent += length;
				return queue_channel_message(session, K8S_CHANNEL_STDIN, chunk,
							     length);
			}
			session->stdin_eof = 1;
		} else {
			int eof;
			ssize_t n = k8s_stdin_pump_take(&session->stdin_pump, session->stdin_chunk,
							&eof);

			if (n < 0) {
				session_fail(session, SBX_ERROR_SYSTEM, "%s",
					     session->stdin_pump.failure);
				return -1;
			}
			if (n > 0) {
				session->stdin_sent += (uint64_t) n;
				return queue_channel_message(session, K8S_CHANNEL_STDIN,
							     session->stdin_chunk, (size_t) n);
			}
			/* Nothing ready: the pump wakes the loop with the next chunk. */
			if (!eof)
				return 0;
			session->stdin_eof = 1;
		}
	}

	/* The source is done. v5 closes the channel; on v4 the counted mode's remote head, or
	 * the command itself in the exact mode, already stopped reading. */
	session->stdin_closed = 1;
	if (session->v5) {
		uint8_t close_stdin = K8S_CHANNEL_STDIN;

		sbx_debug("k8s exec: stdin closed after %" PRIu64 " bytes", session->stdin_sent);
		return queue_channel_message(session, K8S_CHANNEL_CLOSE, &close_stdin, 1);
	}
	return 0;
}

/* Sends until the socket is full or nothing is left. */
static int send_pending(struct exec_session *session)
{
	struct sbx_error error;

	for (;;) {
		ssize_t n;

		if (session->send_offset == session->send_length) {
			session->send_offset = session->send_length = 0;
			if (fill_send_buffer(session) < 0)
				return -1;
			if (session->send_length == 0)
				return 0;
		}
		sbx_error_clear(&error);
		n = k8s_transport_write(&session->transport,
					session->send_buffer + session->send_offset,
					session->send_length - session->send_offset, &error);
		if (n == K8S_TRANSPORT_AGAIN)
			return 0;
		if (n < 0) {
			session_fail_with(session, &error);
			return -1;
		}
		session->send_offset += (size_t) n;
	}
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

static void fail_output(struct exec_session *session)
{
	session_fail(session, SBX_ERROR_SYSTEM, "exec: cannot write the command's %s: %s",
		     session->output.failed_channel == 1 ? "stdout" : "stderr",
		     strerror(session->output.errnum));
}

static int on_data(void *userdata, int opcode, const void *data, size_t length, int final)
{
	struct exec_session *session = userdata;
	struct sbx_error error;

	if (opcode != K8S_WS_BINARY) {
		session_fail(session, SBX_ERROR_SYSTEM,
			     "exec: the server sent a text message on a binary channel protocol");
		return -1;
	}
	sbx_error_clear(&error);
	if (k8s_wsframe_feed(&session->reader, data, length, final, &error) < 0) {
		if (session->output.failed)
			fail_output(session);
		else
			session_fail(session, (enum sbx_error_class) error.error_class, "%s",
				     error.message);
		return -1;
	}
	/* The status is the last message of the command: stop reading here. */
	if (session->reader.have_status) {
		session->done = 1;
		return -1;
	}
	return 0;
}

static int on_control(void *userdata, int opcode, const void *data, size_t length)
{
	struct exec_session *session = userdata;

	switch (opcode) {
	case K8S_WS_PING:
		/* RFC 6455 section 5.5.3: the pong echoes the ping's payload. A newer ping
		 * replaces an unanswered one. */
		memcpy(session->pong_payload, data, length);
		session->pong_length = length;
		session->pong_due = 1;
		break;
	case K8S_WS_CLOSE:
		sbx_debug("k8s exec: the server closed the connection (code %d%s%s)",
			  session->parser.close_code, session->parser.close_reason[0] ? ", " : "",
			  session->parser.close_reason);
		session->peer_closed = 1;
		session->done = 1;
		return -1;
	default:
		break;
	}
	return 0;
}

/* Passes LENGTH received bytes to the frame parser. */
static void consume(struct exec_session *session, const void *data, size_t length)
{
	struct sbx_error error;

	session->last_rx_ms = sbx_monotonic_ms();
	sbx_error_clear(&error);
	if (k8s_ws_parser_feed(&session->parser, data, length, &error) < 0 && !session->done)
		session_fail_with(session, &error);
}

/*
 * Reads until the connection has nothing more, the queue is half full, or a turn ends.
 * Returns 1 when the turn ended with data possibly still buffered in OpenSSL, which poll()
 * does not see.
 */
static int receive_pending(struct exec_session *session)
{
	int reads;

	for (reads = 0; !session->done && !session->rx_paused; reads++) {
		struct sbx_error error;
		ssize_t n;

		if (reads == READS_PER_TURN)
			return 1;
		sbx_error_clear(&error);
		n = k8s_transport_read(&session->transport, session->read_buffer,
				       session->read_size, &error);
		if (n == K8S_TRANSPORT_AGAIN)
			return 0;
		if (n < 0) {
			session_fail_with(session, &error);
			return 0;
		}
		if (n == 0) {
			session->peer_closed = 1;
			session->done = 1;
			return 0;
		}
		consume(session, session->read_buffer, (size_t) n);
		if (!session->done && k8s_output_queue_should_pause(&session->output))
			session->rx_paused = 1;
	}
	return 0;
}

/* ---- the event loop ---- */

/* Checks cancellation, the deadline, idleness, the ping timer and output failures. */
static void check_timers(struct exec_session *session, int cancelled)
{
	const struct k8s_exec_options *options = session->options;
	int64_t now = sbx_monotonic_ms();
	int ping_interval = options->ping_interval_ms > 0 ? options->ping_interval_ms
							  : DEFAULT_PING_INTERVAL_MS;
	int idle_timeout = options->idle_timeout_ms > 0 ? options->idle_timeout_ms
							: DEFAULT_IDLE_TIMEOUT_MS;

	if (cancelled) {
		session_fail(session, SBX_ERROR_CANCELLED, "exec in pod %s/%s: cancelled",
			     options->namespace, options->pod);
		return;
	}
	if (options->deadline_ms != 0 && now >= options->deadline_ms) {
		session_fail(session, SBX_ERROR_SYSTEM,
			     "exec in pod %s/%s: the deadline passed before the command ended",
			     options->namespace, options->pod);
		return;
	}
	if (session->output.failed) {
		fail_output(session);
		return;
	}
	/* A paused reader sees no data by choice; that is not idleness. */
	if (session->rx_paused)
		session->last_rx_ms = now;
	if (now - session->last_rx_ms > idle_timeout) {
		session_fail(session, SBX_ERROR_SYSTEM,
			     "exec in pod %s/%s: no data and no pong for %d ms; the connection "
			     "is considered dead",
			     options->namespace, options->pod, idle_timeout);
		return;
	}
	if (now - session->last_ping_ms >= ping_interval)
		session->ping_due = 1;
}

static int poll_timeout(const struct exec_session *session)
{
	int64_t deadline = session->options->deadline_ms;
	int64_t left;

	if (deadline == 0)
		return TIMER_INTERVAL_MS;
	left = deadline - sbx_monotonic_ms();
	if (left < 0)
		return 0;
	return left < TIMER_INTERVAL_MS ? (int) left : TIMER_INTERVAL_MS;
}

static void run_loop(struct exec_session *session)
{
	const struct k8s_exec_options *options = session->options;

	while (!session->done) {
		struct pollfd fds[3];
		int cancelled = 0, busy = 0, n;
		nfds_t count = 0;
		uint64_t counter;

		if (session->rx_paused && k8s_output_queue_may_resume(&session->output))
			session->rx_paused = 0;
		if (send_pending(session) < 0)
			break;
		if (!session->rx_paused)
			busy = receive_pending(session);
		if (session->done)
			break;

		fds[count++] = (struct pollfd){ .fd = session->transport.fd, .events = 0 };
		if (!session->rx_paused)
			fds[0].events |= session->transport.read_events;
		if (session->send_length > session->send_offset)
			fds[0].events |= session->transport.write_events;
		/* Paused with nothing to send: a hang-up must not make poll() return at once
		 * on every turn, so the socket is left out until reading resumes. */
		if (fds[0].events == 0)
			fds[0].fd = -1;
		fds[count++] = (struct pollfd){ .fd = session->wake_fd, .events = POLLIN };
		if (options->cancel_fd >= 0)
			fds[count++] = (struct pollfd){ .fd = options->cancel_fd, .events = POLLIN };
		k8s_output_queue_flush(&session->output);
		n = poll(fds, count, busy ? 0 : poll_timeout(session));
		if (n < 0 && errno != EINTR) {
			session_fail(session, SBX_ERROR_SYSTEM, "exec: poll: %s", strerror(errno));
			break;
		}
		if (n > 0 && (fds[1].revents & POLLIN) &&
		    read(session->wake_fd, &counter, sizeof(counter)) < 0 && errno != EAGAIN) {
			session_fail(session, SBX_ERROR_SYSTEM, "exec: reading the eventfd: %s",
				     strerror(errno));
			break;
		}
		if (n > 0 && count == 3 && fds[2].revents != 0)
			cancelled = 1;
		check_timers(session, cancelled);
	}
}

/* ---- the upgrade ---- */

/*
 * Formats the Host header value: the server's host, bracketed for IPv6, and the port.
 * tls-server-name is only the name for SNI and verification, as in kubectl and in REST.
 */
static char *host_header(const struct k8s_config *config)
{
	const char *name = config->server.host;
	char *text = NULL;

	if (asprintf(&text, strchr(name, ':') != NULL ? "[%s]:%d" : "%s:%d", name,
		     config->server.port) < 0)
		return NULL;
	return text;
}

/* Logs the upgrade request line by line with the Authorization value redacted. */
static void log_request(const char *request)
{
	const char *line = request;

	if (!sbx_log_enabled(SBX_LOG_DEBUG))
		return;
	while (*line != '\0') {
		size_t length = strcspn(line, "\r\n");

		if (length == 0)
			break;
		if (strncasecmp(line, "Authorization:", 14) == 0)
			sbx_debug("k8s exec: > Authorization: <redacted>");
		else
			sbx_debug("k8s exec: > %.*s", (int) length, line);
		line += length;
		line += strspn(line, "\r\n");
	}
}

/* Removes the chunked transfer coding from BODY in place; stops at the first bad size line. */
static size_t dechunk(char *body, size_t length)
{
	size_t in = 0, out = 0;

	while (in < length) {
		char *end;
		unsigned long size = strtoul(body + in, &end, 16);
		char *line_end = memchr(body + in, '\n', length - in);

		if (end == body + in || line_end == NULL)
			break;
		in = (size_t) (line_end - body) + 1;
		if (size == 0 || size > length - in)
			break;
		memmove(body + out, body + in, size);
		out += size;
		in += size;
		if (in < length && body[in] == '\r')
			in++;
		if (in < length && body[in] == '\n')
			in++;
	}
	body[out] = '\0';
	return out;
}

/* True when BODY (LENGTH bytes) is all of the response body RESPONSE announced. */
static int body_complete(const struct k8s_ws_response *response, const char *body,
			 size_t length)
{
	if (response->content_length >= 0)
		return (int64_t) length >= response->content_length;
	/* BODY is NUL-terminated; the last chunk has size 0. */
	if (response->chunked)
		return strncmp(body, "0\r\n", 3) == 0 || strstr(body, "\n0\r\n") != NULL;
	return 0;
}

/*
 * Reads the body of a refused upgrade (FIRST is what came with the head) and reports
 * "HTTP <code> <reason>: <Status message>". Authentication, authorisation and the pod lookup
 * come before the upgrade check, so the body is the API server's Status for them.
 */
static void report_refused_upgrade(struct exec_session *session,
				   const struct k8s_ws_response *response, const void *first,
				   size_t first_length, struct sbx_error *error)
{
	const struct k8s_exec_options *options = session->options;
	int64_t until = sbx_monotonic_ms() + ERROR_BODY_WAIT_MS;
	_cleanup_free_ char *body = malloc(ERROR_BODY_MAX + 1);
	struct k8s_status status;
	size_t length = 0;

	if (options->deadline_ms != 0 && options->deadline_ms < until)
		until = options->deadline_ms;
	session->http_status = response->status_code;
	memset(&status, 0, sizeof(status));
	if (body != NULL) {
		length = first_length < ERROR_BODY_MAX ? first_length : ERROR_BODY_MAX;
		memcpy(body, first, length);
		body[length] = '\0';
		/* Until the announced length, the end of the chunks or the end of the stream. */
		while (length < ERROR_BODY_MAX && !body_complete(response, body, length)) {
			struct sbx_error read_error;
			ssize_t n = k8s_transport_read(&session->transport, body + length,
						       ERROR_BODY_MAX - length, &read_error);

			if (n == K8S_TRANSPORT_AGAIN) {
				if (k8s_transport_wait(session->transport.fd,
						       session->transport.read_events,
						       options->cancel_fd, until, "reading the body",
						       &read_error) < 0)
					break;
				continue;
			}
			if (n <= 0)
				break;
			length += (size_t) n;
			body[length] = '\0';
		}
		if (response->chunked)
			length = dechunk(body, length);
		k8s_status_from_response(response->status_code, response->content_type, body,
					 length, NULL, &status);
	}
	if (status.message[0] != '\0') {
		sbx_error_set(error, k8s_status_error_class(&status),
			      "exec in pod %s/%s: the upgrade failed with HTTP %d %s: %s",
			      options->namespace, options->pod, response->status_code,
			      status.reason[0] != '\0' ? status.reason
						       : k8s_status_class_name(status.status_class),
			      status.message);
		return;
	}
	sbx_error_set(error, response->status_code == 404 ? SBX_ERROR_NOT_FOUND : SBX_ERROR_SYSTEM,
		      "exec in pod %s/%s: the upgrade failed with HTTP %d (%s)%s",
		      options->namespace, options->pod, response->status_code, response->reason,
		      response->status_code == 403
			      ? "; a bare 403 means the server accepts neither "
				"v5.channel.k8s.io nor v4.channel.k8s.io, or RBAC lacks get and "
				"create on pods/exec"
			      : "");
}

/* Builds the upgrade request with a fresh key into *TEXT, before anything is connected. */
static int build_upgrade_request(const struct k8s_config *config, const char *path,
				 const char *authorization, char *key, char **text,
				 size_t *text_length, struct sbx_error *error)
{
	_cleanup_free_ char *host = host_header(config);
	struct k8s_ws_request request = {
		.path = path,
		.host = host,
		.key = key,
		.protocols = PROTOCOLS_OFFERED,
		.authorization = authorization,
	};

	if (host == NULL)
		return sbx_error_errno(error, ENOMEM, "exec");
	if (k8s_ws_make_key(key, error) < 0)
		return -1;
	return k8s_ws_build_request(&request, REQUEST_HEAD_MAX, text, text_length, error);
}

/*
 * Sends the upgrade request TEXT and reads the response. Returns 0 once upgraded, with the
 * bytes that followed the head already passed to the frame parser.
 */
static int upgrade(struct exec_session *session, const char *key, const char *text,
		   size_t text_length, int64_t until, struct sbx_error *error)
{
	const struct k8s_exec_options *options = session->options;
	struct k8s_ws_response response;
	size_t consumed = 0;
	ssize_t n = 0;
	int ret;

	log_request(text);
	ret = k8s_transport_write_all(&session->transport, text, text_length, options->cancel_fd,
				      until, error);
	if (ret < 0)
		return sbx_error_prefix(error, "exec in pod %s/%s: sending the upgrade request",
					options->namespace, options->pod);

	k8s_ws_response_init(&response);
	ret = -1;
	while (!response.complete) {
		n = k8s_transport_read(&session->transport, session->read_buffer,
				       session->read_size, error);
		if (n == K8S_TRANSPORT_AGAIN) {
			if (k8s_transport_wait(session->transport.fd,
					       session->transport.read_events, options->cancel_fd,
					       until, "waiting for the upgrade response", error) < 0)
				goto out;
			continue;
		}
		if (n == 0)
			sbx_error_set(error, SBX_ERROR_SYSTEM,
				      "the server closed the connection before its response");
		if (n <= 0)
			goto out;
		if (k8s_ws_response_feed(&response, session->read_buffer, (size_t) n, &consumed,
					 error) < 0)
			goto out;
	}
	if (response.status_code != 101) {
		report_refused_upgrade(session, &response, session->read_buffer + consumed,
				       (size_t) n - consumed, error);
		k8s_ws_response_clear(&response);
		return -1;
	}
	if (k8s_ws_response_check(&response, key, PROTOCOLS_OFFERED, error) < 0)
		goto out;
	/* The check above limits the protocol to one of the offered names. */
	snprintf(session->result->protocol, sizeof(session->result->protocol), "%.31s",
		 response.protocol);
	session->v5 = strcmp(response.protocol, "v5.channel.k8s.io") == 0;
	session->established = 1;
	session->last_rx_ms = sbx_monotonic_ms();
	session->last_ping_ms = session->last_rx_ms;
	sbx_debug("k8s exec: connected with %s", session->result->protocol);
	ret = 0;
	/* Frames that came in the same read as the head. */
	if ((size_t) n > consumed)
		consume(session, session->read_buffer + consumed, (size_t) n - consumed);
out:
	k8s_ws_response_clear(&response);
	if (ret < 0)
		return sbx_error_prefix(error, "exec in pod %s/%s", options->namespace,
					options->pod);
	return 0;
}

/* ---- the call ---- */

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
	session->stdin_chunk = malloc(K8S_STDIN_CHUNK);
	if (session->stdin_chunk == NULL)
		return sbx_error_errno(error, ENOMEM, "exec");
	return k8s_stdin_pump_start(&session->stdin_pump, options->stdin_fd,
				    options->stdin_mode != K8S_EXEC_STDIN_STREAM
					    ? options->stdin_length
					    : UINT64_MAX,
				    options->stdin_mode != K8S_EXEC_STDIN_STREAM, wake_event_loop,
				    session, error);
}

/* Sends a normal close after the status, once and without waiting. */
static void send_close(struct exec_session *session)
{
	unsigned char code[2] = { K8S_WS_CLOSE_NORMAL >> 8, K8S_WS_CLOSE_NORMAL & 0xff };
	struct sbx_error error;
	size_t length;

	if (session->peer_closed || session->send_offset != session->send_length)
		return;
	length = k8s_ws_encode_frame(session->send_buffer, K8S_WS_CLOSE, code, sizeof(code));
	if (length > 0)
		(void) k8s_transport_write(&session->transport, session->send_buffer, length,
					   &error);
}

static int finish(struct exec_session *session, struct sbx_error *error)
{
	const struct k8s_exec_options *options = session->options;

	if (session->failed) {
		*error = session->failure;
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

/* Frees an upgrade request, which may carry the bearer token, after wiping it. */
static void free_request(char **request)
{
	if (*request == NULL)
		return;
	explicit_bzero(*request, strlen(*request));
	free(*request);
}

/* Connects, upgrades and runs the loop. Returns 0 when the loop ran to its end. */
static int connect_and_run(struct exec_session *session, struct k8s_config *config,
			   const struct k8s_credential *credential, const char *path,
			   const char *authorization, SSL_CTX **ssl_context, struct sbx_error *error)
{
	const struct k8s_exec_options *options = session->options;
	int64_t until = sbx_monotonic_ms() + SETUP_TIMEOUT_MS;
	__attribute__((cleanup(free_request))) char *request = NULL;
	size_t request_length = 0;
	char key[K8S_WS_KEY_LENGTH + 1];
	struct k8s_transport_target target = {
		.host = config->server.host,
		.port = config->server.port,
		.server_name = config->tls_server_name,
		.insecure = config->insecure_skip_tls_verify,
		.proxy_url = config->proxy_url,
		.cancel_fd = options->cancel_fd,
	};

	if (options->deadline_ms != 0 && options->deadline_ms < until)
		until = options->deadline_ms;
	target.until_ms = until;
	/* An oversized request fails here, before connecting. */
	if (build_upgrade_request(config, path, authorization, key, &request, &request_length,
				  error) < 0)
		return sbx_error_prefix(error, "exec in pod %s/%s", options->namespace,
					options->pod);
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
		target.ssl_context = *ssl_context;
	}
	/* NOTE: only proxy-url selects a proxy; the http_proxy, https_proxy and no_proxy
	 * environment variables that libcurl honours for REST calls are not read here. */
	if (k8s_transport_open(&session->transport, &target, error) < 0) {
		if (error != NULL && error->error_class == SBX_ERROR_CANCELLED)
			return sbx_error_set(error, SBX_ERROR_CANCELLED,
					     "exec in pod %s/%s: cancelled", options->namespace,
					     options->pod);
		return sbx_error_prefix(error, "exec in pod %s/%s: %s", options->namespace,
					options->pod, config->server.base_url);
	}
	if (upgrade(session, key, request, request_length, until, error) < 0)
		return -1;
	if (!session->v5 && options->stdin_mode == K8S_EXEC_STDIN_STREAM)
		return sbx_error_set(error, SBX_ERROR_SYSTEM,
				     "exec: the server speaks only %s, which cannot close stdin; run "
				     "the command with counted stdin or without stdin",
				     session->result->protocol);
	/* The stdin source is read only now, so a refused upgrade consumes none of it. */
	if (!session->done && start_stdin(session, error) < 0)
		return -1;
	run_loop(session);
	if (session->reader.have_status)
		send_close(session);
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
	char *authorization = NULL;
	SSL_CTX *ssl_context = NULL;
	int ret = -1, output_started = 0;
	size_t queue_max = options->output_queue_max != 0 ? options->output_queue_max
							  : DEFAULT_OUTPUT_QUEUE_MAX;

	memset(result, 0, sizeof(*result));
	result->exit_code = -1;
	*unauthorized = 0;
	memset(&session, 0, sizeof(session));
	session.options = options;
	session.result = result;
	session.wake_fd = -1;
	k8s_transport_init(&session.transport);
	k8s_wsframe_reader_init(&session.reader, deliver_output, &session);
	k8s_ws_parser_init(&session.parser, on_data, on_control, &session);
	/* A quarter of the queue per read: paused at half full, a queue of 16 KiB or more then
	 * never reaches its bound, so pushing output does not block the loop. */
	session.read_size = queue_max / 4 < READ_BUFFER_SIZE ? queue_max / 4 : READ_BUFFER_SIZE;
	if (session.read_size < 4096)
		session.read_size = 4096;

	if (k8s_exec_build_path(config, options, &path, error) < 0)
		return -1;
	if (k8s_credential_get(config, &credential, error) < 0)
		return -1;
	if (credential.token != NULL && asprintf(&authorization, "Bearer %s", credential.token) < 0) {
		authorization = NULL;
		return sbx_error_errno(error, ENOMEM, "exec");
	}
	session.read_buffer = malloc(session.read_size);
	session.send_buffer = malloc(SEND_BUFFER_SIZE);
	session.wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (session.read_buffer == NULL || session.send_buffer == NULL) {
		sbx_error_errno(error, ENOMEM, "exec");
		goto out;
	}
	if (session.wake_fd < 0) {
		sbx_error_errno(error, errno, "exec: eventfd");
		goto out;
	}
	if (k8s_output_queue_start(&session.output, options->stdout_fd, options->stderr_fd,
				   queue_max, wake_event_loop, &session, error) < 0)
		goto out;
	output_started = 1;

	sbx_debug("k8s exec: GET %s%s (protocols %s)", config->server.base_url,
		  path + strlen(config->server.prefix), PROTOCOLS_OFFERED);
	if (connect_and_run(&session, config, &credential, path, authorization, &ssl_context,
			    error) < 0) {
		*unauthorized = session.http_status == 401;
		goto out;
	}

	/* The pumps must not wake a loop that is gone. */
	k8s_stdin_pump_stop(&session.stdin_pump);
	k8s_output_queue_detach(&session.output);
	k8s_transport_close(&session.transport);

	ret = finish(&session, error);
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

out:
	k8s_stdin_pump_stop(&session.stdin_pump);
	if (output_started)
		k8s_output_queue_detach(&session.output);
	k8s_transport_close(&session.transport);
	if (output_started) {
		result->output_queue_peak = session.output.peak;
		k8s_output_queue_abort(&session.output);
	}
	if (ssl_context != NULL)
		k8s_tls_context_free(ssl_context);
	if (session.wake_fd >= 0)
		close(session.wake_fd);
	k8s_wsframe_reader_clear(&session.reader);
	free(session.read_buffer);
	free(session.send_buffer);
	free(session.stdin_chunk);
	if (authorization != NULL) {
		explicit_bzero(authorization, strlen(authorization));
		free(authorization);
	}
	return ret;
}

/*
 * OpenSSL writes to the socket with write(), so a peer that has gone raises SIGPIPE. The
 * signal is blocked in this thread during the call and a pending one is discarded
 * afterwards, without touching the process's signal dispositions.
 */
static void block_sigpipe(sigset_t *old)
{
	sigset_t pipe_signal;

	sigemptyset(&pipe_signal);
	sigaddset(&pipe_signal, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &pipe_signal, old);
}

static void restore_sigpipe(const sigset_t *old)
{
	sigset_t pipe_signal;
	struct timespec zero = { 0, 0 };

	if (sigismember(old, SIGPIPE))
		return;
	sigemptyset(&pipe_signal);
	sigaddset(&pipe_signal, SIGPIPE);
	while (sigtimedwait(&pipe_signal, NULL, &zero) == SIGPIPE)
		;
	pthread_sigmask(SIG_SETMASK, old, NULL);
}

int k8s_exec_run(struct k8s_client *client, const struct k8s_exec_options *options,
		 struct k8s_exec_result *result, struct sbx_error *error)
{
	struct k8s_exec_result local_result;
	int unauthorized = 0, ret;
	sigset_t old_mask;

	if (result == NULL)
		result = &local_result;
	block_sigpipe(&old_mask);
	ret = exec_once(client, options, result, &unauthorized, error);
	/* A 401 comes before anything ran: retry once with a refreshed credential, as REST
	 * calls do. */
	if (ret < 0 && unauthorized && k8s_credential_invalidate(k8s_client_config(client))) {
		sbx_debug("k8s exec: 401 from the API server, refreshing the credential");
		ret = exec_once(client, options, result, &unauthorized, error);
	}
	restore_sigpipe(&old_mask);
	return ret;
}
