/* SPDX-License-Identifier: MIT */
/*
 * The egress proxy: one accept thread, one thread per client connection (at most
 * CONNECTION_MAX), all of them waking on one eventfd when the proxy stops. A connection carries
 * one CONNECT tunnel or one plain HTTP request. The proxy checks the requested name against the
 * allow-list, resolves it once on the host, vets every address and connects only to a vetted one.
 * This file serves connections and decides; proxy_http.c parses requests and proxy_relay.c
 * moves the bytes of an admitted connection.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cleanup.h"
#include "error.h"
#include "log.h"
#include "proxy.h"
#include "proxy_internal.h"
#include "util.h"

/* Open client connections; further clients wait in the listen backlog. */
#define CONNECTION_MAX 256
/* A client that has not sent its whole request head by then gets 408. */
#define HEADER_TIMEOUT_MS 30000
#define DEFAULT_CONNECT_TIMEOUT 30
/* Addresses tried per destination, in resolver order. */
#define ADDRESS_MAX 16
/* Refusal notices per proxy run on the step's stderr, so a retry loop cannot flood the job log. */
#define NOTICE_MAX 50
/* Time and bytes spent draining a client before close, so that close() does not reset the
 * connection and discard a response still in flight. */
#define LINGER_MS 2000
#define LINGER_BYTES (256 * 1024)
#define THREAD_STACK_SIZE (256 * 1024)

struct sbx_proxy;

struct connection {
	struct sbx_proxy *proxy;
	pthread_t thread;
	int client_fd;
	bool done;
	struct connection *next;
};

struct sbx_proxy {
	int listen_fd;
	const struct sbx_allowlist *allow;
	int notice_fd;
	int log_fd;
	int connect_timeout;
	/* Readable from the moment sbx_proxy_stop() begins. It is never read, so every poll()
	 * reports it. */
	int stop_fd;
	/* Incremented by each connection thread as it ends, so the accept thread joins it. */
	int reap_fd;
	pthread_t accept_thread;
	pthread_mutex_t lock;
	struct connection *connections;
	size_t connection_count;
	/* Separate from LOCK because a notice write may wait up to a second. */
	pthread_mutex_t notice_lock;
	unsigned notice_count;
};

static int64_t remaining_ms(int64_t deadline)
{
	int64_t left = deadline - sbx_monotonic_ms();

	return left < 0 ? 0 : left;
}

static int poll_timeout(int64_t deadline)
{
	int64_t left;

	if (deadline < 0)
		return -1;
	left = remaining_ms(deadline);
	return left > 60000 ? 60000 : (int) left;
}

static bool stopping(const struct sbx_proxy *proxy)
{
	struct pollfd fd = { .fd = proxy->stop_fd, .events = POLLIN };

	return poll(&fd, 1, 0) > 0;
}

/*
 * Waits until FD reports EVENTS, the proxy stops or DEADLINE (monotonic ms, -1 for none)
 * passes. Returns 1 when FD is ready, 0 on timeout, -1 when stopping.
 */
static int wait_fd(struct sbx_proxy *proxy, int fd, short events, int64_t deadline)
{
	for (;;) {
		struct pollfd fds[2] = {
			{ .fd = fd, .events = events },
			{ .fd = proxy->stop_fd, .events = POLLIN },
		};
		int n = poll(fds, 2, poll_timeout(deadline));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 || fds[1].revents != 0)
			return -1;
		if (fds[0].revents != 0)
			return 1;
		if (deadline >= 0 && remaining_ms(deadline) == 0)
			return 0;
	}
}

/* Sends all of DATA on the non-blocking socket FD. Returns 0, or -1 on error, stop or timeout. */
static int send_all(struct sbx_proxy *proxy, int fd, const char *data, size_t length,
		    int64_t deadline)
{
	while (length > 0) {
		ssize_t n = send(fd, data, length, MSG_NOSIGNAL);

		if (n > 0) {
			data += n;
			length -= (size_t) n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			if (wait_fd(proxy, fd, POLLOUT, deadline) <= 0)
				return -1;
			continue;
		}
		return -1;
	}
	return 0;
}

/*
 * Closes the client connection gracefully: half-closes it and reads what the client still sends
 * for a short while, because closing a socket with unread input resets the connection and can
 * destroy a response the client has not read yet.
 */
static void close_client(struct sbx_proxy *proxy, int fd)
{
	int64_t deadline = sbx_monotonic_ms() + LINGER_MS;
	size_t drained = 0;
	char sink[4096];

	shutdown(fd, SHUT_WR);
	while (drained < LINGER_BYTES) {
		ssize_t n = recv(fd, sink, sizeof(sink), 0);

		if (n > 0) {
			drained += (size_t) n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) &&
		    wait_fd(proxy, fd, POLLIN, deadline) > 0)
			continue;
		break;
	}
	close(fd);
}

/* Replaces every byte outside printable ASCII, and the double quote and backslash, with '?'. */
static void sanitize_text(char *text)
{
	for (; *text != '\0'; text++) {
		unsigned char c = (unsigned char) *text;

		if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\')
			*text = '?';
	}
}

static void format_timestamp(char *buffer, size_t size)
{
	struct timespec now;
	struct tm tm;

	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	strftime(buffer, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Appends one line to the egress log: OUTCOME (allowed, denied, failed) and DETAIL. */
static void log_decision(struct sbx_proxy *proxy, const char *outcome,
			 const struct destination *destination, const char *detail)
{
	char timestamp[32];
	char line[DISPLAY_MAX + 512];
	int length;

	if (proxy->log_fd < 0)
		return;
	format_timestamp(timestamp, sizeof(timestamp));
	length = snprintf(line, sizeof(line), "%s %s %s %s %s\n", timestamp, outcome,
			  destination->kind, destination->display, detail);
	if (length < 0)
		return;
	if ((size_t) length >= sizeof(line)) {
		length = (int) sizeof(line) - 1;
		line[length - 1] = '\n';
	}
	/* O_APPEND makes each single write() land whole at the end, even from several threads. */
	if (sbx_write_all(proxy->log_fd, line, (size_t) length) < 0)
		sbx_warning("egress proxy: writing the egress log failed: %s", strerror(errno));
}

/* Writes LINE to the notice descriptor (the step's stderr), up to NOTICE_MAX lines per run. */
static void write_notice(struct sbx_proxy *proxy, const char *line)
{
	static const char limit_line[] =
		"sbx: egress: further refusals in this step are not shown here\n";
	struct pollfd fd = { .fd = proxy->notice_fd, .events = POLLOUT };
	const char *text = line;
	unsigned count;

	if (proxy->notice_fd < 0)
		return;
	pthread_mutex_lock(&proxy->notice_lock);
	count = proxy->notice_count++;
	if (count > NOTICE_MAX) {
		pthread_mutex_unlock(&proxy->notice_lock);
		return;
	}
	if (count == NOTICE_MAX)
		text = limit_line;
	/* A reader that stopped reading must not block the proxy: give the line up after a
	 * second. The lock keeps notices from interleaving. */
	if (poll(&fd, 1, 1000) > 0 && (fd.revents & POLLOUT))
		sbx_write_all(proxy->notice_fd, text, strlen(text));
	pthread_mutex_unlock(&proxy->notice_lock);
}

/*
 * Sends an error response whose reason phrase is PHRASE (sanitised ASCII) with a Proxy-Status
 * header (RFC 9209) carrying ERROR_TYPE, and the same text as the body.
 */
static void send_error_response(struct sbx_proxy *proxy, int fd, int status,
				const char *phrase, const char *error_type)
{
	char response[2048];
	char text[512];
	int length;

	snprintf(text, sizeof(text), "%s", phrase);
	sanitize_text(text);
	length = snprintf(response, sizeof(response),
			  "HTTP/1.1 %d %s\r\n"
			  "Content-Type: text/plain\r\n"
			  "Content-Length: %zu\r\n"
			  "Connection: close\r\n"
			  "Proxy-Status: sbx; error=%s; details=\"%s\"\r\n"
			  "\r\n"
			  "%s\n",
			  status, text, strlen(text) + 1, error_type, text, text);
	if (length < 0 || (size_t) length >= sizeof(response))
		return;
	send_all(proxy, fd, response, (size_t) length, sbx_monotonic_ms() + 5000);
}

/*
 * Refuses DESTINATION: logs the decision, writes a notice and sends the error response. OUTCOME is
 * "denied" for policy refusals and "failed" for lookups and connects that did not work. DETAIL
 * is a short reason without the destination, e.g. "not in allow-list".
 */
static void refuse(struct sbx_proxy *proxy, int client_fd, const struct destination *destination,
		   int status, const char *error_type, const char *outcome, const char *phrase,
		   const char *detail)
{
	char notice[DISPLAY_MAX + 256];

	/* Log first, so the records exist by the time the client reads the response. */
	log_decision(proxy, outcome, destination, detail);
	snprintf(notice, sizeof(notice), "sbx: egress %s: %s (%s)\n", outcome, destination->display,
		 detail);
	write_notice(proxy, notice);
	send_error_response(proxy, client_fd, status, phrase, error_type);
	sbx_debug("egress proxy: %s %s %s: %s", outcome, destination->kind, destination->display,
		  detail);
}

static void set_port(struct sockaddr_storage *address, uint16_t port)
{
	if (address->ss_family == AF_INET)
		((struct sockaddr_in *) address)->sin_port = htons(port);
	else
		((struct sockaddr_in6 *) address)->sin6_port = htons(port);
}

static socklen_t address_length(const struct sockaddr_storage *address)
{
	return address->ss_family == AF_INET ? sizeof(struct sockaddr_in)
					     : sizeof(struct sockaddr_in6);
}

/* Connects to ADDRESS before DEADLINE. Returns the socket, or -1 with errno (ECANCELED when the
 * proxy stops, ETIMEDOUT at the deadline). */
static int connect_address(struct sbx_proxy *proxy, const struct sockaddr_storage *address,
			   int64_t deadline)
{
	_cleanup_close_ int fd = -1;
	socklen_t length = sizeof(int);
	int status, ready, so_error = 0;

	fd = socket(address->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	do {
		status = connect(fd, (const struct sockaddr *) address, address_length(address));
	} while (status < 0 && errno == EINTR);
	if (status == 0)
		return steal_fd(&fd);
	if (errno != EINPROGRESS)
		return -1;

	ready = wait_fd(proxy, fd, POLLOUT, deadline);
	if (ready < 0) {
		errno = ECANCELED;
		return -1;
	}
	if (ready == 0) {
		errno = ETIMEDOUT;
		return -1;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_error, &length) < 0)
		return -1;
	if (so_error != 0) {
		errno = so_error;
		return -1;
	}
	return steal_fd(&fd);
}

/* Short English text for resolver errors; gai_strerror() may be translated. */
static const char *lookup_error_text(int status)
{
	switch (status) {
	case EAI_NONAME:
		return "name not found";
#ifdef EAI_NODATA
	case EAI_NODATA:
		return "the name has no address";
#endif
	case EAI_AGAIN:
		return "temporary name resolution failure";
	case EAI_FAIL:
		return "name resolution failed";
	case EAI_ADDRFAMILY:
		return "the name has no address of a usable family";
	default:
		return "name resolution failed";
	}
}

/* Short English text for connect errors; strerror() may be translated. */
static const char *connect_error_text(int errnum)
{
	switch (errnum) {
	case ECONNREFUSED:
		return "refused";
	case ETIMEDOUT:
		return "timed out";
	case ENETUNREACH:
		return "failed: network unreachable";
	case EHOSTUNREACH:
		return "failed: host unreachable";
	case ECONNRESET:
		return "failed: connection reset";
	case EADDRNOTAVAIL:
		return "failed: no local address available";
	case EAFNOSUPPORT:
		return "failed: address family not supported";
	default:
		return "failed";
	}
}

/*
 * Collects the addresses of DESTINATION that may be connected to into ADDRESSES. Refuses the
 * request itself (with an error response) and returns -1 when there are none.
 */
static int vet_addresses(struct sbx_proxy *proxy, int client_fd,
			 const struct destination *destination, enum sbx_allow_verdict verdict,
			 struct sockaddr_storage *addresses, size_t *count)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
	struct addrinfo literal = { .ai_socktype = SOCK_STREAM };
	struct addrinfo *result = NULL, *ai;
	char refused_address[INET6_ADDRSTRLEN] = "";
	const char *refused_reason = NULL;
	char phrase[DISPLAY_MAX + 256];
	char detail[DISPLAY_MAX + 128];
	size_t found = 0;
	int status;

	if (destination->literal) {
		literal.ai_family = destination->literal_address.ss_family;
		literal.ai_addrlen = address_length(&destination->literal_address);
		literal.ai_addr = (struct sockaddr *) &destination->literal_address;
		result = &literal;
		goto vet;
	}

	/* NOTE: getaddrinfo() cannot be interrupted, so sbx_proxy_stop() waits for lookups in
	 * progress, bounded by the resolver's timeout and attempts (resolv.conf). */
	status = getaddrinfo(destination->host, NULL, &hints, &result);
	if (status != 0) {
		snprintf(phrase, sizeof(phrase), "sbx egress failed: cannot resolve %s: %s",
			 destination->host, lookup_error_text(status));
		snprintf(detail, sizeof(detail), "cannot resolve: %s", lookup_error_text(status));
		refuse(proxy, client_fd, destination, 502, "dns_error", "failed", phrase, detail);
		return -1;
	}

vet:
	for (ai = result; ai != NULL && found < ADDRESS_MAX; ai = ai->ai_next) {
		struct sockaddr_storage candidate = { 0 };
		const char *reason = NULL;

		if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6) ||
		    ai->ai_addrlen > sizeof(candidate))
			continue;
		memcpy(&candidate, ai->ai_addr, ai->ai_addrlen);
		set_port(&candidate, destination->port);
		if (sbx_allowlist_address_permitted(proxy->allow, verdict,
						    (const struct sockaddr *) &candidate,
						    destination->port, &reason)) {
			addresses[found++] = candidate;
		} else if (refused_reason == NULL) {
			refused_reason = reason;
			sbx_proxy_address_text(&candidate, refused_address, sizeof(refused_address));
		}
	}
	if (!destination->literal)
		freeaddrinfo(result);

	if (found == 0) {
		if (refused_reason == NULL)
			refused_reason = "not an IP address";
		snprintf(phrase, sizeof(phrase), "sbx egress denied: address %s of %s is %s",
			 refused_address, destination->host, refused_reason);
		snprintf(detail, sizeof(detail), "address %s is %s", refused_address,
			 refused_reason);
		refuse(proxy, client_fd, destination, 403, "destination_ip_prohibited", "denied",
		       phrase, detail);
		return -1;
	}
	*count = found;
	return 0;
}

/*
 * Checks DESTINATION against the allow-list and the address rules and connects to it. On
 * success returns the upstream socket and logs the decision. On failure it sends the client a
 * 403, 502 or 504 response, logs, and returns -1.
 */
static int open_upstream(struct sbx_proxy *proxy, int client_fd,
			 const struct destination *destination)
{
	struct sockaddr_storage addresses[ADDRESS_MAX];
	char phrase[DISPLAY_MAX + 256];
	char detail[DISPLAY_MAX + 128];
	char address_text[INET6_ADDRSTRLEN] = "";
	enum sbx_allow_verdict verdict;
	int64_t deadline;
	size_t count = 0, i;
	int last_error = ETIMEDOUT;

	verdict = sbx_allowlist_match_name(proxy->allow, destination->host, destination->port);
	if (verdict == SBX_ALLOW_DENIED) {
		const char *reason = NULL;

		/* An IP literal in a range the address rules reject gets the more precise
		 * reason, so the client learns that the address itself is the problem. */
		if (destination->literal &&
		    !sbx_allowlist_address_permitted(
			    proxy->allow, SBX_ALLOW_BY_WILDCARD,
			    (const struct sockaddr *) &destination->literal_address,
			    destination->port, &reason)) {
			const char *article = strchr("aeiou", reason[0]) != NULL ? "an" : "a";

			snprintf(phrase, sizeof(phrase),
				 "sbx egress denied: %s is %s %s address not in allow-list",
				 destination->display, article, reason);
			snprintf(detail, sizeof(detail), "%s address not in allow-list", reason);
			refuse(proxy, client_fd, destination, 403, "destination_ip_prohibited",
			       "denied", phrase, detail);
			return -1;
		}
		snprintf(phrase, sizeof(phrase), "sbx egress denied: %s not in allow-list",
			 destination->display);
		refuse(proxy, client_fd, destination, 403, "http_request_denied", "denied", phrase,
		       "not in allow-list");
		return -1;
	}

	if (vet_addresses(proxy, client_fd, destination, verdict, addresses, &count) < 0)
		return -1;

	/* The deadline covers every address, so a name with many dead addresses still gets
	 * its response within connect_timeout. */
	deadline = sbx_monotonic_ms() + (int64_t) proxy->connect_timeout * 1000;
	for (i = 0; i < count; i++) {
		int fd;

		sbx_proxy_address_text(&addresses[i], address_text, sizeof(address_text));
		fd = connect_address(proxy, &addresses[i], deadline);
		if (fd >= 0) {
			snprintf(detail, sizeof(detail), "via %s", address_text);
			log_decision(proxy, "allowed", destination, detail);
			return fd;
		}
		if (errno == ECANCELED)
			return -1;
		last_error = errno;
		if (remaining_ms(deadline) == 0) {
			last_error = ETIMEDOUT;
			break;
		}
	}

	if (last_error == ETIMEDOUT) {
		snprintf(phrase, sizeof(phrase),
			 "sbx egress failed: connection to %s timed out after %d s",
			 destination->display, proxy->connect_timeout);
		snprintf(detail, sizeof(detail), "connection timed out after %d s",
			 proxy->connect_timeout);
		refuse(proxy, client_fd, destination, 504, "connection_timeout", "failed", phrase,
		       detail);
		return -1;
	}
	snprintf(phrase, sizeof(phrase), "sbx egress failed: connection to %s (%s) %s",
		 destination->display, address_text, connect_error_text(last_error));
	snprintf(detail, sizeof(detail), "connection to %s %s", address_text,
		 connect_error_text(last_error));
	refuse(proxy, client_fd, destination, 502,
	       last_error == ECONNREFUSED			     ? "connection_refused"
	       : last_error == ENETUNREACH || last_error == EHOSTUNREACH ? "destination_ip_unroutable"
									 : "proxy_internal_error",
	       "failed", phrase, detail);
	return -1;
}

enum head_status {
	HEAD_COMPLETE = 0,
	HEAD_CLOSED = -1, /* the client went away, or the proxy stops */
	HEAD_TOO_LARGE = -2,
	HEAD_TIMEOUT = -3,
};

/* Reads the request head into BUFFER (HEADER_MAX + 1 bytes). *LENGTH gets every byte read,
 * *HEAD_LENGTH the head's own. */
static enum head_status read_head(struct sbx_proxy *proxy, int fd, char *buffer, size_t *length,
				  size_t *head_length)
{
	int64_t deadline = sbx_monotonic_ms() + HEADER_TIMEOUT_MS;
	size_t used = 0;

	for (;;) {
		ssize_t n = recv(fd, buffer + used, HEADER_MAX - used, 0);
		size_t end;

		if (n == 0)
			return HEAD_CLOSED;
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			int ready = wait_fd(proxy, fd, POLLIN, deadline);

			if (ready < 0)
				return HEAD_CLOSED;
			if (ready == 0)
				return HEAD_TIMEOUT;
			continue;
		}
		if (n < 0)
			return HEAD_CLOSED;

		/* The whole buffer is rescanned because the empty line may straddle reads. */
		end = sbx_proxy_find_head_end(buffer, used + (size_t) n);
		used += (size_t) n;
		if (end > 0) {
			buffer[used] = '\0';
			*length = used;
			*head_length = end;
			return HEAD_COMPLETE;
		}
		if (used == HEADER_MAX)
			return HEAD_TOO_LARGE;
	}
}

static void bad_request(struct sbx_proxy *proxy, int fd, const char *problem)
{
	char phrase[256];

	snprintf(phrase, sizeof(phrase), "sbx proxy: bad request: %s", problem);
	send_error_response(proxy, fd, 400, phrase, "http_request_error");
	sbx_debug("egress proxy: bad request: %s", problem);
}

static void refuse_invalid_host(struct sbx_proxy *proxy, int fd,
				const struct destination *destination)
{
	refuse(proxy, fd, destination, 403, "http_request_denied", "denied",
	       "sbx egress denied: the requested host is not a valid host name",
	       "invalid host name");
}

static void handle_connect(struct sbx_proxy *proxy, int client_fd, const struct request *request,
			   const char *early, size_t early_length)
{
	static const char established[] = "HTTP/1.1 200 Connection established\r\n\r\n";
	struct destination destination = { .kind = "CONNECT" };
	_cleanup_close_ int upstream_fd = -1;
	int status;

	status = sbx_proxy_parse_connect_target(request->target, &destination);
	if (status == -1) {
		bad_request(proxy, client_fd,
			    "the CONNECT target is not host:port or [IPv6 address]:port");
		return;
	}
	if (status == -2) {
		refuse_invalid_host(proxy, client_fd, &destination);
		return;
	}

	upstream_fd = open_upstream(proxy, client_fd, &destination);
	if (upstream_fd < 0)
		return;
	if (send_all(proxy, client_fd, established, sizeof(established) - 1,
		     sbx_monotonic_ms() + 10000) < 0)
		return;
	sbx_proxy_relay(proxy->stop_fd, client_fd, upstream_fd, early, early_length, NULL);
}

static void handle_forward(struct sbx_proxy *proxy, int client_fd, const struct request *request,
			   const char *early, size_t early_length)
{
	struct destination destination = { .kind = "HTTP" };
	_cleanup_free_ char *head = NULL;
	_cleanup_close_ int upstream_fd = -1;
	struct body_framer framer;
	char host_header[DISPLAY_MAX];
	const char *problem = NULL;
	const char *path = NULL;
	size_t head_length = 0;
	int status;

	if (request->target[0] == '/' || strcmp(request->target, "*") == 0) {
		bad_request(proxy, client_fd,
			    "origin-form request; this is a proxy, send absolute-form "
			    "(http://host/path) or CONNECT");
		return;
	}
	if (strncasecmp(request->target, "http://", 7) != 0) {
		bad_request(proxy, client_fd,
			    "only http:// URLs are forwarded; use CONNECT for https and other "
			    "protocols");
		return;
	}
	status = sbx_proxy_parse_http_url(request->target, &destination, host_header,
					  sizeof(host_header), &path);
	if (status == -1) {
		bad_request(proxy, client_fd, "the URL has an invalid host, port or user information");
		return;
	}
	if (status == -2) {
		refuse_invalid_host(proxy, client_fd, &destination);
		return;
	}
	if (sbx_proxy_body_framing(request, &framer, &problem) < 0) {
		bad_request(proxy, client_fd, problem);
		return;
	}
	head = malloc(HEADER_MAX + 1024);
	if (head == NULL)
		return;
	if (sbx_proxy_build_forward_head(request, host_header, path, head, HEADER_MAX + 1024,
					 &head_length) < 0) {
		send_error_response(proxy, client_fd, 431,
				    "sbx proxy: request header fields too large",
				    "http_request_error");
		return;
	}

	upstream_fd = open_upstream(proxy, client_fd, &destination);
	if (upstream_fd < 0)
		return;
	if (send_all(proxy, upstream_fd, head, head_length,
		     sbx_monotonic_ms() + (int64_t) proxy->connect_timeout * 1000) < 0)
		return;
	sbx_proxy_relay(proxy->stop_fd, client_fd, upstream_fd, early, early_length, &framer);
}

static void handle_client(struct sbx_proxy *proxy, int client_fd)
{
	_cleanup_free_ char *buffer = malloc(HEADER_MAX + 1);
	struct request request;
	const char *problem = NULL;
	size_t length = 0, head_length = 0;
	char saved;
	int status;

	if (buffer == NULL)
		return;
	switch (read_head(proxy, client_fd, buffer, &length, &head_length)) {
	case HEAD_COMPLETE:
		break;
	case HEAD_TOO_LARGE:
		send_error_response(proxy, client_fd, 431,
				    "sbx proxy: request header fields too large (limit 16 KiB)",
				    "http_request_error");
		return;
	case HEAD_TIMEOUT:
		send_error_response(proxy, client_fd, 408,
				    "sbx proxy: request head not received in time",
				    "http_request_error");
		return;
	case HEAD_CLOSED:
		return;
	}

	/* Bytes after the head (a request body, an early TLS ClientHello) stay in BUFFER after
	 * the head, which sbx_proxy_parse_head() cuts into NUL-terminated strings. */
	saved = buffer[head_length];
	buffer[head_length] = '\0';
	status = sbx_proxy_parse_head(buffer, &request, &problem);
	if (status == -2) {
		send_error_response(proxy, client_fd, 431,
				    "sbx proxy: too many request header fields (limit 100)",
				    "http_request_error");
		return;
	}
	if (status < 0) {
		bad_request(proxy, client_fd, problem);
		return;
	}
	buffer[head_length] = saved;

	if (strcmp(request.method, "CONNECT") == 0)
		handle_connect(proxy, client_fd, &request, buffer + head_length,
			       length - head_length);
	else
		handle_forward(proxy, client_fd, &request, buffer + head_length,
			       length - head_length);
}

static void *connection_main(void *arg)
{
	struct connection *connection = arg;
	struct sbx_proxy *proxy = connection->proxy;

	handle_client(proxy, connection->client_fd);
	if (stopping(proxy))
		close(connection->client_fd);
	else
		close_client(proxy, connection->client_fd);

	pthread_mutex_lock(&proxy->lock);
	connection->client_fd = -1;
	connection->done = true;
	pthread_mutex_unlock(&proxy->lock);
	eventfd_write(proxy->reap_fd, 1);
	return NULL;
}

/* Joins finished connection threads, or every thread when ALL is set. */
static void reap_connections(struct sbx_proxy *proxy, bool all)
{
	struct connection **link;

	pthread_mutex_lock(&proxy->lock);
	link = &proxy->connections;
	while (*link != NULL) {
		struct connection *connection = *link;

		if (!connection->done && !all) {
			link = &connection->next;
			continue;
		}
		*link = connection->next;
		proxy->connection_count--;
		/* A thread that is not done yet needs the lock to finish. */
		pthread_mutex_unlock(&proxy->lock);
		pthread_join(connection->thread, NULL);
		free(connection);
		pthread_mutex_lock(&proxy->lock);
		link = &proxy->connections;
	}
	pthread_mutex_unlock(&proxy->lock);
}

static void start_connection(struct sbx_proxy *proxy, int client_fd)
{
	struct connection *connection = calloc(1, sizeof(*connection));
	pthread_attr_t attributes;
	int status;

	if (connection == NULL) {
		close(client_fd);
		return;
	}
	connection->proxy = proxy;
	connection->client_fd = client_fd;

	pthread_attr_init(&attributes);
	pthread_attr_setstacksize(&attributes, THREAD_STACK_SIZE);
	pthread_mutex_lock(&proxy->lock);
	status = pthread_create(&connection->thread, &attributes, connection_main, connection);
	if (status == 0) {
		connection->next = proxy->connections;
		proxy->connections = connection;
		proxy->connection_count++;
	}
	pthread_mutex_unlock(&proxy->lock);
	pthread_attr_destroy(&attributes);
	if (status != 0) {
		sbx_warning("egress proxy: cannot start a connection thread: %s", strerror(status));
		close(client_fd);
		free(connection);
	}
}

static void *accept_main(void *arg)
{
	struct sbx_proxy *proxy = arg;

	for (;;) {
		struct pollfd fds[3] = {
			{ .fd = proxy->stop_fd, .events = POLLIN },
			{ .fd = proxy->reap_fd, .events = POLLIN },
			{ .fd = proxy->listen_fd, .events = POLLIN },
		};
		size_t open_count;
		int client_fd, n;

		pthread_mutex_lock(&proxy->lock);
		open_count = proxy->connection_count;
		pthread_mutex_unlock(&proxy->lock);
		/* At the limit, new clients wait in the listen backlog until a thread ends. */
		if (open_count >= CONNECTION_MAX)
			fds[2].fd = -1;

		n = poll(fds, 3, -1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 || fds[0].revents != 0)
			break;
		if (fds[1].revents != 0) {
			eventfd_t ignored;

			eventfd_read(proxy->reap_fd, &ignored);
			reap_connections(proxy, false);
		}
		if (fds[2].revents == 0)
			continue;

		client_fd = accept4(proxy->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (client_fd >= 0) {
			start_connection(proxy, client_fd);
			continue;
		}
		if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK ||
		    errno == ECONNABORTED || errno == EPROTO)
			continue;
		if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
			struct pollfd stop = { .fd = proxy->stop_fd, .events = POLLIN };

			/* The pending connection stays queued, so wait instead of spinning. */
			sbx_warning("egress proxy: accepting a connection failed: %s; retrying",
				    strerror(errno));
			if (poll(&stop, 1, 100) > 0)
				break;
			continue;
		}
		sbx_error_log("egress proxy: accepting connections failed: %s; the proxy stops "
			      "serving this step",
			      strerror(errno));
		break;
	}

	/* Connection threads end when sbx_proxy_stop() signals stop_fd (after lookups in flight
	 * return); after a fatal accept error they may also run to their natural end. */
	reap_connections(proxy, true);
	return NULL;
}

static void proxy_free(struct sbx_proxy *proxy)
{
	if (proxy->stop_fd >= 0)
		close(proxy->stop_fd);
	if (proxy->reap_fd >= 0)
		close(proxy->reap_fd);
	if (proxy->log_fd >= 0)
		close(proxy->log_fd);
	pthread_mutex_destroy(&proxy->lock);
	pthread_mutex_destroy(&proxy->notice_lock);
	free(proxy);
}

int sbx_proxy_start(const struct sbx_proxy_options *options, struct sbx_proxy **proxy_out,
		    struct sbx_error *error)
{
	struct sbx_proxy *proxy;
	sigset_t all, saved;
	int flags, status;

	if (options == NULL || options->listen_fd < 0 || options->allow == NULL)
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "egress proxy: a listening socket and an allow-list are "
				     "required");

	proxy = calloc(1, sizeof(*proxy));
	if (proxy == NULL)
		return sbx_error_errno(error, ENOMEM, "egress proxy");
	proxy->listen_fd = options->listen_fd;
	proxy->allow = options->allow;
	proxy->notice_fd = options->notice_fd;
	proxy->connect_timeout =
		options->connect_timeout > 0 ? options->connect_timeout : DEFAULT_CONNECT_TIMEOUT;
	proxy->log_fd = -1;
	proxy->reap_fd = -1;
	pthread_mutex_init(&proxy->lock, NULL);
	pthread_mutex_init(&proxy->notice_lock, NULL);

	proxy->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	proxy->reap_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (proxy->stop_fd < 0 || proxy->reap_fd < 0) {
		sbx_error_errno(error, errno, "egress proxy: eventfd");
		goto fail;
	}
	if (options->log_path != NULL) {
		proxy->log_fd = open(options->log_path,
				     O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY,
				     0600);
		/* An existing log keeps no wider mode than a new one. */
		if (proxy->log_fd < 0 || fchmod(proxy->log_fd, 0600) < 0) {
			sbx_error_errno(error, errno, "egress proxy: cannot open the egress log %s",
					options->log_path);
			goto fail;
		}
	}
	/* The accept thread polls first, but another process sharing the listening socket could
	 * take a connection in between: a non-blocking accept4() then cannot hang the thread and
	 * with it sbx_proxy_stop(). O_NONBLOCK is shared with the job init's copy of the socket,
	 * which never accepts on it. */
	flags = fcntl(proxy->listen_fd, F_GETFL);
	if (flags < 0 || fcntl(proxy->listen_fd, F_SETFL, flags | O_NONBLOCK) < 0) {
		sbx_error_errno(error, errno, "egress proxy: listening socket %d", proxy->listen_fd);
		goto fail;
	}

	/* Proxy threads take no signals: the host's threads handle them, and a peer that goes
	 * away turns into EPIPE instead of a process-wide SIGPIPE. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &saved);
	status = pthread_create(&proxy->accept_thread, NULL, accept_main, proxy);
	pthread_sigmask(SIG_SETMASK, &saved, NULL);
	if (status != 0) {
		sbx_error_errno(error, status, "egress proxy: cannot start the accept thread");
		goto fail;
	}
	sbx_debug("egress proxy: serving on descriptor %d", proxy->listen_fd);
	*proxy_out = proxy;
	return 0;

fail:
	proxy_free(proxy);
	return -1;
}

void sbx_proxy_stop(struct sbx_proxy *proxy)
{
	if (proxy == NULL)
		return;
	eventfd_write(proxy->stop_fd, 1);
	pthread_join(proxy->accept_thread, NULL);
	sbx_debug("egress proxy: stopped");
	proxy_free(proxy);
}
