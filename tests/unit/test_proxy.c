/* SPDX-License-Identifier: MIT */
/*
 * The egress proxy against real sockets on loopback: an upstream echo or HTTP server on
 * 127.0.0.1 that records what it receives, and clients that speak to the proxy directly.
 */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "allowlist.h"
#include "error.h"
#include "proxy.h"

#define IO_TIMEOUT_MS 5000
#define RECORD_MAX (64 * 1024)

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Listens on 127.0.0.1, or on ::1 for AF_INET6, at a port the kernel picks. */
static int listen_loopback_family(int family, uint16_t *port, int backlog)
{
	struct sockaddr_storage storage = { 0 };
	struct sockaddr_in *in = (struct sockaddr_in *) &storage;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *) &storage;
	socklen_t length = family == AF_INET ? sizeof(*in) : sizeof(*in6);
	int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);

	ck_assert_int_ge(fd, 0);
	storage.ss_family = (sa_family_t) family;
	if (family == AF_INET)
		in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	else
		in6->sin6_addr = in6addr_loopback;
	ck_assert_int_eq(bind(fd, (struct sockaddr *) &storage, length), 0);
	ck_assert_int_eq(listen(fd, backlog), 0);
	ck_assert_int_eq(getsockname(fd, (struct sockaddr *) &storage, &length), 0);
	*port = ntohs(family == AF_INET ? in->sin_port : in6->sin6_port);
	return fd;
}

static int listen_loopback(uint16_t *port, int backlog)
{
	return listen_loopback_family(AF_INET, port, backlog);
}

static int connect_loopback(uint16_t port)
{
	struct sockaddr_in address = { .sin_family = AF_INET, .sin_port = htons(port) };
	struct timeval timeout = { .tv_sec = IO_TIMEOUT_MS / 1000 };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	ck_assert_int_ge(fd, 0);
	address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(connect(fd, (struct sockaddr *) &address, sizeof(address)), 0);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
	return fd;
}

static void send_text(int fd, const void *data, size_t length)
{
	const char *p = data;

	while (length > 0) {
		ssize_t n = send(fd, p, length, MSG_NOSIGNAL);

		ck_assert_int_gt(n, 0);
		p += n;
		length -= (size_t) n;
	}
}

/* Reads until EOF into a NUL-terminated buffer of at most MAX bytes; fails the test when the
 * receive timeout passes first. */
static char *read_all(int fd, size_t max, size_t *length)
{
	char *buffer = malloc(max + 1);
	size_t used = 0;

	ck_assert_ptr_nonnull(buffer);
	while (used < max) {
		ssize_t n = recv(fd, buffer + used, max - used, 0);

		ck_assert_msg(n >= 0, "no EOF after %zu bytes: %s", used, strerror(errno));
		if (n == 0)
			break;
		used += (size_t) n;
	}
	buffer[used] = '\0';
	if (length != NULL)
		*length = used;
	return buffer;
}

/* Reads a response head up to and including the empty line. */
static char *read_head(int fd)
{
	char *buffer = malloc(RECORD_MAX + 1);
	size_t used = 0;

	ck_assert_ptr_nonnull(buffer);
	while (used < RECORD_MAX) {
		ssize_t n = recv(fd, buffer + used, 1, 0);

		if (n <= 0)
			break;
		used++;
		if (used >= 4 && memcmp(buffer + used - 4, "\r\n\r\n", 4) == 0)
			break;
	}
	buffer[used] = '\0';
	return buffer;
}

/* An upstream server on 127.0.0.1 that serves one connection at a time. */
enum upstream_mode {
	UPSTREAM_ECHO,
	UPSTREAM_HTTP,
};

struct upstream {
	enum upstream_mode mode;
	int listen_fd;
	uint16_t port;
	pthread_t thread;
	pthread_mutex_t lock;
	int accepted;
	/* What the last HTTP client sent, head and body. */
	char received[RECORD_MAX + 1];
	size_t received_length;
};

static void serve_echo(int fd)
{
	char buffer[65536];

	for (;;) {
		ssize_t n = recv(fd, buffer, sizeof(buffer), 0);
		ssize_t sent = 0;

		if (n <= 0)
			break;
		while (sent < n) {
			ssize_t m = send(fd, buffer + sent, (size_t) (n - sent), MSG_NOSIGNAL);

			if (m <= 0)
				return;
			sent += m;
		}
	}
	/* Pass the client's half-close back as EOF. */
	shutdown(fd, SHUT_WR);
}

static void serve_http(struct upstream *upstream, int fd)
{
	static const char response[] = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n"
				       "Connection: close\r\n\r\nhello";
	char buffer[RECORD_MAX + 1];
	size_t used = 0;
	struct pollfd pfd = { .fd = fd, .events = POLLIN };

	/* Record everything until the client pauses for 300 ms: whatever the proxy forwards
	 * for one request arrives in one burst, and anything extra would show. */
	while (used < RECORD_MAX && poll(&pfd, 1, 300) > 0) {
		ssize_t n = recv(fd, buffer + used, RECORD_MAX - used, 0);

		if (n <= 0)
			break;
		used += (size_t) n;
	}
	pthread_mutex_lock(&upstream->lock);
	memcpy(upstream->received, buffer, used);
	upstream->received[used] = '\0';
	upstream->received_length = used;
	pthread_mutex_unlock(&upstream->lock);
	send(fd, response, sizeof(response) - 1, MSG_NOSIGNAL);
	shutdown(fd, SHUT_WR);
}

static void *upstream_main(void *arg)
{
	struct upstream *upstream = arg;

	for (;;) {
		int fd = accept4(upstream->listen_fd, NULL, NULL, SOCK_CLOEXEC);

		if (fd < 0)
			break;
		pthread_mutex_lock(&upstream->lock);
		upstream->accepted++;
		pthread_mutex_unlock(&upstream->lock);
		if (upstream->mode == UPSTREAM_ECHO)
			serve_echo(fd);
		else
			serve_http(upstream, fd);
		close(fd);
	}
	return NULL;
}

static void upstream_start_family(struct upstream *upstream, enum upstream_mode mode,
				  int family)
{
	memset(upstream, 0, sizeof(*upstream));
	upstream->mode = mode;
	pthread_mutex_init(&upstream->lock, NULL);
	upstream->listen_fd = listen_loopback_family(family, &upstream->port, 16);
	ck_assert_int_eq(pthread_create(&upstream->thread, NULL, upstream_main, upstream), 0);
}

static void upstream_start(struct upstream *upstream, enum upstream_mode mode)
{
	upstream_start_family(upstream, mode, AF_INET);
}

static int upstream_accepted(struct upstream *upstream)
{
	int accepted;

	pthread_mutex_lock(&upstream->lock);
	accepted = upstream->accepted;
	pthread_mutex_unlock(&upstream->lock);
	return accepted;
}

static void upstream_stop(struct upstream *upstream)
{
	/* shutdown() on a listening socket makes a blocked accept() return. */
	shutdown(upstream->listen_fd, SHUT_RDWR);
	pthread_join(upstream->thread, NULL);
	close(upstream->listen_fd);
	pthread_mutex_destroy(&upstream->lock);
}

struct fixture {
	struct sbx_allowlist allow;
	int listen_fd;
	uint16_t port;
	int notice[2];
	char directory[64];
	char log_path[128];
	struct sbx_proxy *proxy;
};

static void fixture_start(struct fixture *fixture, const char *entries, int connect_timeout)
{
	struct sbx_proxy_options options = { 0 };
	struct sbx_error error = { 0 };

	memset(fixture, 0, sizeof(*fixture));
	if (entries != NULL) {
		/* ENTRIES is separated by ", "; sbx_allowlist_add() takes one entry per call. */
		char *copy = strdup(entries);
		char *saved = NULL;

		ck_assert_ptr_nonnull(copy);
		for (char *entry = strtok_r(copy, ", ", &saved); entry != NULL;
		     entry = strtok_r(NULL, ", ", &saved))
			ck_assert_msg(sbx_allowlist_add(&fixture->allow, entry, &error) == 0, "%s",
				      error.message);
		free(copy);
	}
	fixture->listen_fd = listen_loopback(&fixture->port, 64);
	ck_assert_int_eq(pipe2(fixture->notice, O_CLOEXEC), 0);
	snprintf(fixture->directory, sizeof(fixture->directory), "/tmp/sbx-test-proxy-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(fixture->directory));
	snprintf(fixture->log_path, sizeof(fixture->log_path), "%s/egress.log",
		 fixture->directory);

	options.listen_fd = fixture->listen_fd;
	options.allow = &fixture->allow;
	options.notice_fd = fixture->notice[1];
	options.log_path = fixture->log_path;
	options.connect_timeout = connect_timeout;
	ck_assert_msg(sbx_proxy_start(&options, &fixture->proxy, &error) == 0, "%s",
		      error.message);
}

static void fixture_stop(struct fixture *fixture)
{
	sbx_proxy_stop(fixture->proxy);
	fixture->proxy = NULL;
	close(fixture->listen_fd);
	close(fixture->notice[0]);
	close(fixture->notice[1]);
	unlink(fixture->log_path);
	rmdir(fixture->directory);
	sbx_allowlist_free(&fixture->allow);
}

/* Reads what the proxy wrote to the notice pipe within TIMEOUT_MS. */
static char *read_notices(struct fixture *fixture, int timeout_ms)
{
	static char buffer[8192];
	struct pollfd pfd = { .fd = fixture->notice[0], .events = POLLIN };
	size_t used = 0;

	while (used < sizeof(buffer) - 1 && poll(&pfd, 1, timeout_ms) > 0) {
		ssize_t n = read(fixture->notice[0], buffer + used, sizeof(buffer) - 1 - used);

		if (n <= 0)
			break;
		used += (size_t) n;
		timeout_ms = 50;
	}
	buffer[used] = '\0';
	return buffer;
}

static char *read_log(struct fixture *fixture)
{
	FILE *file = fopen(fixture->log_path, "re");
	char *buffer = calloc(1, RECORD_MAX + 1);

	ck_assert_ptr_nonnull(buffer);
	if (file != NULL) {
		size_t n = fread(buffer, 1, RECORD_MAX, file);

		buffer[n] = '\0';
		fclose(file);
	}
	return buffer;
}

static bool starts_with(const char *text, const char *prefix)
{
	return strncmp(text, prefix, strlen(prefix)) == 0;
}

static int count_lines(const char *text)
{
	int lines = 0;

	for (; *text != '\0'; text++)
		lines += *text == '\n';
	return lines;
}

/* Sends REQUEST through the proxy and returns the response head. */
static char *proxy_request(struct fixture *fixture, const char *request, int *client_fd)
{
	int fd = connect_loopback(fixture->port);

	send_text(fd, request, strlen(request));
	if (client_fd != NULL) {
		*client_fd = fd;
		return read_head(fd);
	} else {
		char *head = read_head(fd);

		close(fd);
		return head;
	}
}

static char *format(const char *format, ...) __attribute__((format(printf, 1, 2)));
static char *format(const char *format, ...)
{
	va_list args;
	char *text = NULL;

	va_start(args, format);
	ck_assert_int_ge(vasprintf(&text, format, args), 0);
	va_end(args);
	return text;
}

struct sender {
	int fd;
	size_t length;
};

static unsigned char pattern_byte(size_t i)
{
	return (unsigned char) ((i * 31 + i / 4096) & 0xff);
}

static void *send_pattern(void *arg)
{
	struct sender *sender = arg;
	unsigned char chunk[8192];
	size_t sent = 0;

	while (sent < sender->length) {
		size_t length = sender->length - sent < sizeof(chunk) ? sender->length - sent
								      : sizeof(chunk);
		size_t i, done = 0;

		for (i = 0; i < length; i++)
			chunk[i] = pattern_byte(sent + i);
		while (done < length) {
			ssize_t n = send(sender->fd, chunk + done, length - done, MSG_NOSIGNAL);

			if (n <= 0)
				return NULL;
			done += (size_t) n;
		}
		sent += length;
	}
	shutdown(sender->fd, SHUT_WR);
	return NULL;
}

START_TEST(connect_tunnel_carries_data)
{
	struct fixture fixture;
	struct upstream upstream;
	struct sender sender;
	pthread_t thread;
	char *request, *head, *echoed;
	char small[6] = { 0 };
	size_t length = 0, i;
	int fd;

	upstream_start(&upstream, UPSTREAM_ECHO);
	fixture_start(&fixture, "127.0.0.0/8", 5);

	request = format("CONNECT 127.0.0.1:%u HTTP/1.1\r\nHost: 127.0.0.1:%u\r\n\r\n",
			 upstream.port, upstream.port);
	head = proxy_request(&fixture, request, &fd);
	ck_assert_str_eq(head, "HTTP/1.1 200 Connection established\r\n\r\n");

	send_text(fd, "hello", 5);
	ck_assert_int_eq(recv(fd, small, 5, MSG_WAITALL), 5);
	ck_assert_str_eq(small, "hello");

	/* 1 MiB each way at once, then a half-close that must travel to the echo server
	 * and back as EOF. */
	sender.fd = fd;
	sender.length = 1024 * 1024;
	ck_assert_int_eq(pthread_create(&thread, NULL, send_pattern, &sender), 0);
	echoed = read_all(fd, 2 * 1024 * 1024, &length);
	pthread_join(thread, NULL);
	ck_assert_uint_eq(length, 1024 * 1024);
	for (i = 0; i < length; i++) {
		if ((unsigned char) echoed[i] != pattern_byte(i))
			ck_abort_msg("byte %zu differs", i);
	}

	close(fd);
	free(echoed);
	free(head);
	free(request);
	fixture_stop(&fixture);
	upstream_stop(&upstream);
}
END_TEST

START_TEST(connect_early_data_forwarded)
{
	struct fixture fixture;
	struct upstream upstream;
	char *request, *head;
	char echoed[16] = { 0 };
	int fd;

	upstream_start(&upstream, UPSTREAM_ECHO);
	fixture_start(&fixture, "127.0.0.0/8", 5);

	/* A client may send its first bytes (a TLS ClientHello) right after the request. */
	request = format("CONNECT 127.0.0.1:%u HTTP/1.1\r\n\r\nearly-bytes", upstream.port);
	head = proxy_request(&fixture, request, &fd);
	ck_assert_str_eq(head, "HTTP/1.1 200 Connection established\r\n\r\n");
	ck_assert_int_eq(recv(fd, echoed, 11, MSG_WAITALL), 11);
	ck_assert_str_eq(echoed, "early-bytes");

	close(fd);
	free(head);
	free(request);
	fixture_stop(&fixture);
	upstream_stop(&upstream);
}
END_TEST

START_TEST(connect_ipv6_literal_allowed)
{
	struct fixture fixture;
	struct upstream upstream;
	char *request, *head, *log;
	char echoed[4] = { 0 };
	int fd;

	upstream_start_family(&upstream, UPSTREAM_ECHO, AF_INET6);
	fixture_start(&fixture, "[::1]", 5);

	request = format("CONNECT [::1]:%u HTTP/1.1\r\n\r\n", upstream.port);
	head = proxy_request(&fixture, request, &fd);
	ck_assert_str_eq(head, "HTTP/1.1 200 Connection established\r\n\r\n");
	send_text(fd, "v6!", 3);
	ck_assert_int_eq(recv(fd, echoed, 3, MSG_WAITALL), 3);
	ck_assert_str_eq(echoed, "v6!");
	log = read_log(&fixture);
	ck_assert_ptr_nonnull(strstr(log, " allowed CONNECT [::1]:"));
	ck_assert_ptr_nonnull(strstr(log, " via ::1\n"));

	close(fd);
	free(log);
	free(head);
	free(request);
	fixture_stop(&fixture);
	upstream_stop(&upstream);
}
END_TEST

START_TEST(connect_name_not_listed)
{
	struct fixture fixture;
	char *head, *notices, *log, *body;
	int fd;

	fixture_start(&fixture, "allowed.example, *.allowed.example", 5);
	head = proxy_request(&fixture,
			     "CONNECT Evil.Example.:443 HTTP/1.1\r\n"
			     "Proxy-Authorization: Basic c2VjcmV0LXRva2Vu\r\n\r\n",
			     &fd);
	ck_assert_ptr_nonnull(strstr(
		head, "HTTP/1.1 403 sbx egress denied: evil.example:443 not in allow-list\r\n"));
	ck_assert_ptr_nonnull(strstr(head, "\r\nContent-Type: text/plain\r\n"));
	ck_assert_ptr_nonnull(strstr(head, "\r\nConnection: close\r\n"));
	ck_assert_ptr_nonnull(
		strstr(head, "\r\nProxy-Status: sbx; error=http_request_denied; details=\"sbx "
			     "egress denied: evil.example:443 not in allow-list\"\r\n"));
	body = read_all(fd, 4096, NULL);
	ck_assert_str_eq(body, "sbx egress denied: evil.example:443 not in allow-list\n");

	notices = read_notices(&fixture, 2000);
	ck_assert_str_eq(notices, "sbx: egress denied: evil.example:443 (not in allow-list)\n");
	log = read_log(&fixture);
	ck_assert_ptr_nonnull(strstr(log, " denied CONNECT evil.example:443 not in allow-list\n"));
	ck_assert_ptr_null(strstr(log, "c2VjcmV0"));

	close(fd);
	free(body);
	free(log);
	free(head);
	fixture_stop(&fixture);
}
END_TEST

START_TEST(connect_loopback_literal_prohibited)
{
	struct fixture fixture;
	struct upstream upstream;
	char *request, *head, *notices;

	upstream_start(&upstream, UPSTREAM_ECHO);
	fixture_start(&fixture, "*.example.com, localhost.example.com", 5);

	request = format("CONNECT 127.0.0.1:%u HTTP/1.1\r\n\r\n", upstream.port);
	head = proxy_request(&fixture, request, NULL);
	ck_assert_msg(starts_with(head, "HTTP/1.1 403 "), "%s", head);
	ck_assert_ptr_nonnull(strstr(head, "is a loopback address"));
	ck_assert_ptr_nonnull(strstr(head, "error=destination_ip_prohibited"));
	notices = read_notices(&fixture, 2000);
	ck_assert_ptr_nonnull(strstr(notices, "sbx: egress denied: 127.0.0.1:"));
	ck_assert_int_eq(upstream_accepted(&upstream), 0);

	free(head);
	free(request);
	fixture_stop(&fixture);
	upstream_stop(&upstream);
}
END_TEST

START_TEST(connect_ipv6_loopback_literal_prohibited)
{
	struct fixture fixture;
	char *head;

	fixture_start(&fixture, "*.example.com", 5);
	head = proxy_request(&fixture, "CONNECT [::1]:443 HTTP/1.1\r\n\r\n", NULL);
	ck_assert_ptr_nonnull(strstr(
		head,
		"HTTP/1.1 403 sbx egress denied: [::1]:443 is a loopback address not in allow-list"));
	ck_assert_ptr_nonnull(strstr(head, "error=destination_ip_prohibited"));
	free(head);
	fixture_stop(&fixture);
}
END_TEST

/* An exact host entry may resolve to private addresses, never to loopback. */
START_TEST(connect_host_resolving_to_loopback)
{
	struct fixture fixture;
	struct upstream upstream;
	char *request, *head, *log;

	upstream_start(&upstream, UPSTREAM_ECHO);
	fixture_start(&fixture, "localhost", 5);

	request = format("CONNECT localhost:%u HTTP/1.1\r\n\r\n", upstream.port);
	head = proxy_request(&fixture, request, NULL);
	ck_assert_msg(starts_with(head, "HTTP/1.1 403 sbx egress denied: address "), "%s",
		      head);
	ck_assert_ptr_nonnull(strstr(head, " of localhost is loopback\r\n"));
	ck_assert_ptr_nonnull(strstr(head, "error=destination_ip_prohibited"));
	ck_assert_int_eq(upstream_accepted(&upstream), 0);
	log = read_log(&fixture);
	ck_assert_ptr_nonnull(strstr(log, " denied CONNECT localhost:"));

	free(log);
	free(head);
	free(request);
	fixture_stop(&fixture);
	upstream_stop(&upstream);
}
END_TEST

START_TEST(connect_invalid_host_not_echoed)
{
	struct fixture fixture;
	char *head;

	fixture_start(&fixture, "*.example.com", 5);
	head = proxy_request(&fixture, "CONNECT bad_host\x01.example.com:443 HTTP/1.1\r\n\r\n",
			     NULL);
	/* The control byte makes the request line itself invalid. */
	ck_assert_msg(starts_with(head, "HTTP/1.1 400 "), "%s", head);
	free(head);

	head = proxy_request(&fixture, "CONNECT bad_host.example.com:443 HTTP/1.1\r\n\r\n", NULL);
	ck_assert_msg(starts_with(head, "HTTP/1.1 403 sbx egress denied: the requested host is not a "
				    "valid host name\r\n"),
		      "%s", head);
	ck_assert_ptr_null(strstr(head, "bad_host"));
	free(head);

	/* "127.1" is 127.0.0.1 to the resolver; it must not slip past as a name. */
	head = proxy_request(&fixture, "CONNECT 127.1:443 HTTP/1.1\r\n\r\n", NULL);
	ck_assert_msg(starts_with(head, "HTTP/1.1 403 "), "%s", head);
	free(head);
	fixture_stop(&fixture);
}
END_TEST

START_TEST(connect_refused_upstream)
{
	struct fixture fixture;
	char *request, *head, *notices;
	uint16_t port;
	int closed_fd;

	/* A port that was just free and is closed again refuses connections. */
	closed_fd = listen_loopback(&port, 1);
	close(closed_fd);
	fixture_start(&fixture, "127.0.0.0/8", 5);

	request = format("CONNECT 127.0.0.1:%u HTTP/1.1\r\n\r\n", port);
	head = proxy_request(&fixture, request, NULL);
	ck_assert_msg(starts_with(head, "HTTP/1.1 502 sbx egress failed: connection to 127.0.0.1:"),
		      "%s", head);
	ck_assert_ptr_nonnull(strstr(head, "(127.0.0.1) refused\r\n"));
	ck_assert_ptr_nonnull(strstr(head, "error=connection_refused"));
	notices = read_notices(&fixture, 2000);
	ck_assert_ptr_nonnull(strstr(notices, "sbx: egress failed: 127.0.0.1:"));

	free(head);
	free(request);
	fixture_stop(&fixture);
}
END_TEST

/*
 * A listener whose accept queue is full drops new SYNs on Linux, so a connect to it hangs
 * until the proxy's connect timeout.
 */
START_TEST(connect_timeout_upstream)
{
	struct fixture fixture;
	char *request, *head;
	uint16_t port;
	int full_fd, fillers[4], i;
	int64_t started;

	full_fd = listen_loopback(&port, 0);
	for (i = 0; i < 4; i++) {
		int flags;
		struct sockaddr_in address = { .sin_family = AF_INET, .sin_port = htons(port) };

		address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		fillers[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		flags = fcntl(fillers[i], F_GETFL);
		fcntl(fillers[i], F_SETFL, flags | O_NONBLOCK);
		connect(fillers[i], (struct sockaddr *) &address, sizeof(address));
	}
	usleep(100000);
	fixture_start(&fixture, "127.0.0.0/8", 1);

	request = format("CONNECT 127.0.0.1:%u HTTP/1.1\r\n\r\n", port);
	started = now_ms();
	head = proxy_request(&fixture, request, NULL);
	ck_assert_msg(starts_with(head, "HTTP/1.1 504 "), "%s", head);
	ck_assert_ptr_nonnull(strstr(head, "timed out after 1 s"));
	ck_assert_ptr_nonnull(strstr(head, "error=connection_timeout"));
	ck_assert_int_ge(now_ms() - started, 900);
	ck_assert_int_lt(now_ms() - started, 3000);

	for (i = 0; i < 4; i++)
		close(fillers[i]);
	close(full_fd);
	free(head);
	free(request);
	fixture_stop(&fixture);
}
END_TEST

START_TEST(http_get_forwarded)
{
	struct fixture fixture;
	struct upstream upstream;
	char *request, *head, *body, *expected_line, *expected_host, *log;
	int fd;

	upstream_start(&upstream, UPSTREAM_HTTP);
	fixture_start(&fixture, "localhost, 127.0.0.0/8", 5);

	request = format("GET http://LOCALHOST:%u/path/x?token=s3cr3t#fragment HTTP/1.1\r\n"
			 "Host: wrong.example\r\n"
			 "Proxy-Authorization: Basic c2VjcmV0LXRva2Vu\r\n"
			 "Proxy-Connection: keep-alive\r\n"
			 "Connection: keep-alive, X-Hop\r\n"
			 "X-Hop: dropped\r\n"
			 "Keep-Alive: timeout=5\r\n"
			 "X-Kept: yes\r\n"
			 "\r\n",
			 upstream.port);
	head = proxy_request(&fixture, request, &fd);
	ck_assert_msg(starts_with(head, "HTTP/1.1 200 OK\r\n"), "%s", head);
	body = read_all(fd, 4096, NULL);
	ck_assert_str_eq(body, "hello");

	expected_line = format("GET /path/x?token=s3cr3t HTTP/1.1\r\nHost: localhost:%u\r\n",
			       upstream.port);
	pthread_mutex_lock(&upstream.lock);
	ck_assert_msg(strncmp(upstream.received, expected_line, strlen(expected_line)) == 0,
		      "upstream received: %s", upstream.received);
	ck_assert_ptr_null(strcasestr(upstream.received, "Proxy-Authorization"));
	ck_assert_ptr_null(strcasestr(upstream.received, "Proxy-Connection"));
	ck_assert_ptr_null(strcasestr(upstream.received, "keep-alive"));
	ck_assert_ptr_null(strcasestr(upstream.received, "X-Hop"));
	ck_assert_ptr_null(strstr(upstream.received, "wrong.example"));
	ck_assert_ptr_null(strstr(upstream.received, "fragment"));
	ck_assert_ptr_nonnull(strstr(upstream.received, "\r\nX-Kept: yes\r\n"));
	ck_assert_ptr_nonnull(strstr(upstream.received, "\r\nConnection: close\r\n\r\n"));
	expected_host = format("Host: localhost:%u", upstream.port);
	ck_assert_ptr_eq(strstr(upstream.received, "Host:"),
			 strstr(upstream.received, expected_host));
	ck_assert_ptr_null(strstr(strstr(upstream.received, "Host:") + 5, "Host:"));
	pthread_mutex_unlock(&upstream.lock);

	/* The log names host and port only: never the path, the query or credentials. */
	log = read_log(&fixture);
	ck_assert_ptr_nonnull(strstr(log, " allowed HTTP localhost:"));
	ck_assert_ptr_nonnull(strstr(log, " via 127.0.0.1\n"));
	ck_assert_ptr_null(strstr(log, "s3cr3t"));
	ck_assert_ptr_null(strstr(log, "path"));
	ck_assert_ptr_null(strstr(log, "c2VjcmV0"));

	close(fd);
	free(log);
	free(expected_host);
	free(expected_line);
	free(body);
	free(head);
	free(request);
	fixture_stop(&fixture);
	upstream_stop(&upstream);
}
END_TEST

START_TEST(http_body_forwarded_once)
{
	struct fixture fixture;
	struct upstream upstream;
	char *request, *head, *body;
	const char *received_body;
	int fd;

	upstream_start(&upstream, UPSTREAM_HTTP);
	fixture_start(&fixture, "127.0.0.1", 5);

	/* The bytes after the body would be a second request on the same connection. */
	request = format("POST http://127.0.0.1:%u/upload HTTP/1.1\r\n"
			 "Content-Length: 11\r\n\r\n"
			 "hello worldGET http://127.0.0.1:%u/second HTTP/1.1\r\n\r\n",
			 upstream.port, upstream.port);
	head = proxy_request(&fixture, request, &fd);
	ck_assert_msg(starts_with(head, "HTTP/1.1 200 OK\r\n"), "%s", head);
	body = read_all(fd, 4096, NULL);
	ck_assert_str_eq(body, "hello");
	pthread_mutex_lock(&upstream.lock);
	received_body = strstr(upstream.received, "\r\n\r\n");
	ck_assert_ptr_nonnull(received_body);
	ck_assert_str_eq(received_body + 4, "hello world");
	ck_assert_ptr_nonnull(strstr(upstream.received, "\r\nContent-Length: 11\r\n"));
	pthread_mutex_unlock(&upstream.lock);
	ck_assert_int_eq(upstream_accepted(&upstream), 1);

	close(fd);
	free(body);
	free(head);
	free(request);
	fixture_stop(&fixture);
	upstream_stop(&upstream);
}
END_TEST

START_TEST(http_chunked_body_forwarded)
{
	struct fixture fixture;
	struct upstream upstream;
	char *request, *head;
	const char *received_body;
	int fd;

	upstream_start(&upstream, UPSTREAM_HTTP);
	fixture_start(&fixture, "127.0.0.1", 5);

	request = format("PUT http://127.0.0.1:%u/chunks HTTP/1.1\r\n"
			 "Transfer-Encoding: chunked\r\n\r\n"
			 "5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n"
			 "EXTRA",
			 upstream.port);
	head = proxy_request(&fixture, request, &fd);
	ck_assert_msg(starts_with(head, "HTTP/1.1 200 OK\r\n"), "%s", head);
	pthread_mutex_lock(&upstream.lock);
	received_body = strstr(upstream.received, "\r\n\r\n");
	ck_assert_ptr_nonnull(received_body);
	ck_assert_str_eq(received_body + 4,
			 "5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n");
	pthread_mutex_unlock(&upstream.lock);

	close(fd);
	free(head);
	free(request);
	fixture_stop(&fixture);
	upstream_stop(&upstream);
}
END_TEST

START_TEST(http_denied_shows_body)
{
	struct fixture fixture;
	char *head, *body;
	int fd;

	fixture_start(&fixture, "allowed.example", 5);
	head = proxy_request(&fixture,
			     "GET http://denied.example/secret?q=1 HTTP/1.1\r\n"
			     "Host: denied.example\r\n\r\n",
			     &fd);
	ck_assert_msg(starts_with(head, "HTTP/1.1 403 sbx egress denied: denied.example:80 not in "
			      "allow-list\r\n"),
		      "%s", head);
	ck_assert_ptr_nonnull(strstr(head, "\r\nContent-Length: 55\r\n"));
	body = read_all(fd, 4096, NULL);
	ck_assert_str_eq(body, "sbx egress denied: denied.example:80 not in allow-list\n");
	close(fd);
	free(body);
	free(head);
	fixture_stop(&fixture);
}
END_TEST

struct bad_request_case {
	const char *request;
	const char *status;
};

static const struct bad_request_case bad_requests[] = {
	{ "GET /origin-form HTTP/1.1\r\nHost: example.com\r\n\r\n", "HTTP/1.1 400 " },
	{ "OPTIONS * HTTP/1.1\r\n\r\n", "HTTP/1.1 400 " },
	{ "complete garbage\r\n\r\n", "HTTP/1.1 400 " },
	{ "GET http://example.com/ HTTP/2.0\r\n\r\n", "HTTP/1.1 400 " },
	{ "GET https://example.com/ HTTP/1.1\r\n\r\n", "HTTP/1.1 400 " },
	{ "GET http://user:pw@example.com/ HTTP/1.1\r\n\r\n", "HTTP/1.1 400 " },
	{ "GET http://example.com:99999/ HTTP/1.1\r\n\r\n", "HTTP/1.1 400 " },
	{ "GET http:///nohost HTTP/1.1\r\n\r\n", "HTTP/1.1 400 " },
	{ "CONNECT example.com HTTP/1.1\r\n\r\n", "HTTP/1.1 400 " },
	{ "CONNECT example.com:0 HTTP/1.1\r\n\r\n", "HTTP/1.1 400 " },
	{ "CONNECT ::1:443 HTTP/1.1\r\n\r\n", "HTTP/1.1 400 " },
	{ "CONNECT [::1:443 HTTP/1.1\r\n\r\n", "HTTP/1.1 400 " },
	{ "CONNECT [zz::1]:443 HTTP/1.1\r\n\r\n", "HTTP/1.1 400 " },
	{ "CONNECT example.com:443 HTTP/1.1\r\n folded: header\r\n\r\n", "HTTP/1.1 400 " },
	{ "CONNECT example.com:443 HTTP/1.1\r\nno colon\r\n\r\n", "HTTP/1.1 400 " },
	{ "CONNECT example.com:443 HTTP/1.1\r\nBad Name: x\r\n\r\n", "HTTP/1.1 400 " },
	{ "POST http://example.com/ HTTP/1.1\r\nContent-Length: 5\r\n"
	  "Transfer-Encoding: chunked\r\n\r\n",
	  "HTTP/1.1 400 " },
	{ "POST http://example.com/ HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
	  "HTTP/1.1 400 " },
	{ "POST http://example.com/ HTTP/1.1\r\nContent-Length: -5\r\n\r\n", "HTTP/1.1 400 " },
	{ "POST http://example.com/ HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
	  "HTTP/1.1 400 " },
};

START_TEST(malformed_request_rejected)
{
	const struct bad_request_case *c = &bad_requests[_i];
	struct fixture fixture;
	char *head;

	/* Every destination would be allowed: the request form alone must fail. */
	fixture_start(&fixture, "example.com, *.example.com, 0.0.0.0/0, ::/0", 5);
	head = proxy_request(&fixture, c->request, NULL);
	ck_assert_msg(starts_with(head, c->status), "%s-> %s", c->request,
		      head);
	ck_assert_ptr_nonnull(strstr(head, "\r\nConnection: close\r\n"));
	free(head);
	fixture_stop(&fixture);
}
END_TEST

START_TEST(oversized_head_rejected)
{
	struct fixture fixture;
	char *request, *head;
	size_t length = 20000;
	int fd;

	fixture_start(&fixture, "example.com", 5);
	request = malloc(length + 64);
	ck_assert_ptr_nonnull(request);
	strcpy(request, "CONNECT example.com:443 HTTP/1.1\r\nX-Padding: ");
	memset(request + strlen(request), 'a', length);
	request[length] = '\0';
	fd = connect_loopback(fixture.port);
	/* The proxy may answer and close before it has read everything. */
	send(fd, request, strlen(request), MSG_NOSIGNAL);
	head = read_head(fd);
	ck_assert_msg(starts_with(head, "HTTP/1.1 431 "), "%s", head);
	close(fd);
	free(head);
	free(request);
	fixture_stop(&fixture);
}
END_TEST

START_TEST(stop_closes_open_tunnels)
{
	struct fixture fixture;
	struct upstream upstream;
	char *request, *head;
	int tunnels[3], idle_fd, i;
	char byte;
	int64_t started;

	upstream_start(&upstream, UPSTREAM_ECHO);
	fixture_start(&fixture, "127.0.0.0/8", 5);

	/* The echo server serves one connection at a time, so only the first tunnel reaches
	 * it; the others wait in its backlog. Each one holds a proxy thread. */
	request = format("CONNECT 127.0.0.1:%u HTTP/1.1\r\n\r\n", upstream.port);
	for (i = 0; i < 3; i++) {
		head = proxy_request(&fixture, request, &tunnels[i]);
		ck_assert_str_eq(head, "HTTP/1.1 200 Connection established\r\n\r\n");
		free(head);
	}
	/* A client that has not sent its request yet. */
	idle_fd = connect_loopback(fixture.port);

	started = now_ms();
	sbx_proxy_stop(fixture.proxy);
	fixture.proxy = NULL;
	ck_assert_int_lt(now_ms() - started, 1000);

	for (i = 0; i < 3; i++) {
		ck_assert_int_le(recv(tunnels[i], &byte, 1, 0), 0);
		close(tunnels[i]);
	}
	ck_assert_int_le(recv(idle_fd, &byte, 1, 0), 0);
	close(idle_fd);
	free(request);
	fixture_stop(&fixture);
	upstream_stop(&upstream);
}
END_TEST

/* A job that retries a refused destination in a loop gets a bounded number of notices. */
START_TEST(notices_limited_per_run)
{
	struct fixture fixture;
	char *head, *notices, *log;
	int i;

	fixture_start(&fixture, "allowed.example", 5);
	for (i = 0; i < 60; i++) {
		head = proxy_request(&fixture, "CONNECT evil.example:443 HTTP/1.1\r\n\r\n", NULL);
		ck_assert_msg(starts_with(head, "HTTP/1.1 403 "), "%s", head);
		free(head);
	}
	notices = read_notices(&fixture, 2000);
	ck_assert_int_eq(count_lines(notices), 51);
	ck_assert_ptr_nonnull(
		strstr(notices, "sbx: egress: further refusals in this step are not shown here\n"));
	/* The egress log keeps every decision. */
	log = read_log(&fixture);
	ck_assert_int_eq(count_lines(log), 60);
	free(log);
	fixture_stop(&fixture);
}
END_TEST

START_TEST(stop_right_after_start)
{
	struct fixture fixture;
	int64_t started;

	fixture_start(&fixture, NULL, 5);
	started = now_ms();
	fixture_stop(&fixture);
	ck_assert_int_lt(now_ms() - started, 1000);
}
END_TEST

START_TEST(egress_log_lines_and_mode)
{
	struct fixture fixture;
	struct upstream upstream;
	struct stat st;
	char *request, *head, *log;
	int fd;

	upstream_start(&upstream, UPSTREAM_ECHO);
	fixture_start(&fixture, "127.0.0.0/8", 5);

	request = format("CONNECT 127.0.0.1:%u HTTP/1.1\r\n\r\n", upstream.port);
	head = proxy_request(&fixture, request, &fd);
	ck_assert_str_eq(head, "HTTP/1.1 200 Connection established\r\n\r\n");
	close(fd);
	free(head);
	head = proxy_request(&fixture, "CONNECT evil.example:443 HTTP/1.1\r\n\r\n", NULL);
	free(head);
	head = proxy_request(&fixture, "GET /not-a-destination HTTP/1.1\r\n\r\n", NULL);
	free(head);

	log = read_log(&fixture);
	ck_assert_msg(count_lines(log) == 2, "log: %s", log);
	ck_assert_ptr_nonnull(strstr(log, "Z allowed CONNECT 127.0.0.1:"));
	ck_assert_ptr_nonnull(strstr(log, "Z denied CONNECT evil.example:443 not in allow-list\n"));
	ck_assert_int_eq(stat(fixture.log_path, &st), 0);
	ck_assert_int_eq(st.st_mode & 07777, 0600);

	free(log);
	free(request);
	fixture_stop(&fixture);
	upstream_stop(&upstream);
}
END_TEST

START_TEST(start_rejects_bad_options)
{
	struct sbx_proxy_options options = { .listen_fd = -1, .notice_fd = -1 };
	struct sbx_allowlist allow = { 0 };
	struct sbx_error error = { 0 };
	struct sbx_proxy *proxy = NULL;
	uint16_t port;

	ck_assert_int_eq(sbx_proxy_start(&options, &proxy, &error), -1);
	ck_assert_ptr_null(proxy);

	options.listen_fd = listen_loopback(&port, 1);
	options.allow = &allow;
	options.log_path = "/nonexistent-directory/egress.log";
	ck_assert_int_eq(sbx_proxy_start(&options, &proxy, &error), -1);
	ck_assert_ptr_null(proxy);
	ck_assert_ptr_nonnull(strstr(error.message, "/nonexistent-directory/egress.log"));
	close(options.listen_fd);
}
END_TEST

static Suite *proxy_suite(void)
{
	Suite *suite = suite_create("proxy");
	TCase *connect_case = tcase_create("connect");
	TCase *http = tcase_create("http");
	TCase *lifecycle = tcase_create("lifecycle");

	tcase_set_timeout(connect_case, 30);
	tcase_add_test(connect_case, connect_tunnel_carries_data);
	tcase_add_test(connect_case, connect_early_data_forwarded);
	tcase_add_test(connect_case, connect_ipv6_literal_allowed);
	tcase_add_test(connect_case, connect_name_not_listed);
	tcase_add_test(connect_case, connect_loopback_literal_prohibited);
	tcase_add_test(connect_case, connect_ipv6_loopback_literal_prohibited);
	tcase_add_test(connect_case, connect_host_resolving_to_loopback);
	tcase_add_test(connect_case, connect_invalid_host_not_echoed);
	tcase_add_test(connect_case, connect_refused_upstream);
	tcase_add_test(connect_case, connect_timeout_upstream);
	suite_add_tcase(suite, connect_case);

	tcase_set_timeout(http, 30);
	tcase_add_test(http, http_get_forwarded);
	tcase_add_test(http, http_body_forwarded_once);
	tcase_add_test(http, http_chunked_body_forwarded);
	tcase_add_test(http, http_denied_shows_body);
	tcase_add_loop_test(http, malformed_request_rejected, 0,
			    (int) (sizeof(bad_requests) / sizeof(bad_requests[0])));
	tcase_add_test(http, oversized_head_rejected);
	suite_add_tcase(suite, http);

	tcase_set_timeout(lifecycle, 30);
	tcase_add_test(lifecycle, stop_closes_open_tunnels);
	tcase_add_test(lifecycle, notices_limited_per_run);
	tcase_add_test(lifecycle, stop_right_after_start);
	tcase_add_test(lifecycle, egress_log_lines_and_mode);
	tcase_add_test(lifecycle, start_rejects_bad_options);
	suite_add_tcase(suite, lifecycle);
	return suite;
}

int main(void)
{
	SRunner *runner = srunner_create(proxy_suite());
	int failed;

	srunner_run_all(runner, CK_NORMAL);
	failed = srunner_ntests_failed(runner);
	srunner_free(runner);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
