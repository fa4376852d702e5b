/* SPDX-License-Identifier: MIT */
/*
 * The egress proxy's HTTP side: parsing the request head, CONNECT targets and absolute-form
 * URLs, building the origin-form head sent upstream, and finding where a request body ends.
 * Nothing here touches a socket.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "allowlist.h"
#include "proxy_internal.h"
#include "util.h"

void sbx_proxy_address_text(const struct sockaddr_storage *address, char *buffer, size_t size)
{
	const struct sockaddr_in *in = (const struct sockaddr_in *) address;
	const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *) address;
	const void *bytes = address->ss_family == AF_INET ? (const void *) &in->sin_addr
							  : (const void *) &in6->sin6_addr;

	if (inet_ntop(address->ss_family, bytes, buffer, (socklen_t) size) == NULL)
		snprintf(buffer, size, "?");
}

/* Parses a port of 1-65535 from the LENGTH bytes at TEXT. */
static int parse_port(const char *text, size_t length, uint16_t *port)
{
	unsigned long value = 0;
	size_t i;

	if (length == 0 || length > 5)
		return -1;
	for (i = 0; i < length; i++) {
		if (text[i] < '0' || text[i] > '9')
			return -1;
		value = value * 10 + (unsigned long) (text[i] - '0');
	}
	if (value < 1 || value > 65535)
		return -1;
	*port = (uint16_t) value;
	return 0;
}

/*
 * Fills DESTINATION from the HOST_LENGTH bytes at HOST (a name, an IPv4 address or a bracketed
 * IPv6 address) and PORT. Returns 0, -1 when HOST is not a valid host at all (a 400), or -2
 * when it is well-formed but no allow-list entry could ever name it (a 403).
 */
static int make_destination(const char *host, size_t host_length, uint16_t port,
			    struct destination *destination)
{
	char text[DISPLAY_MAX];
	struct sockaddr_in *in = (struct sockaddr_in *) &destination->literal_address;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *) &destination->literal_address;

	if (host_length == 0 || host_length >= sizeof(text))
		return -1;
	memcpy(text, host, host_length);
	text[host_length] = '\0';
	destination->port = port;
	memset(&destination->literal_address, 0, sizeof(destination->literal_address));

	if (text[0] == '[') {
		if (text[host_length - 1] != ']')
			return -1;
		text[host_length - 1] = '\0';
		if (inet_pton(AF_INET6, text + 1, &in6->sin6_addr) != 1)
			return -1;
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons(port);
		destination->literal = true;
		sbx_proxy_address_text(&destination->literal_address, destination->host,
				sizeof(destination->host));
		snprintf(destination->display, sizeof(destination->display), "[%s]:%u",
			 destination->host, port);
		return 0;
	}
	if (inet_pton(AF_INET, text, &in->sin_addr) == 1) {
		in->sin_family = AF_INET;
		in->sin_port = htons(port);
		destination->literal = true;
		sbx_proxy_address_text(&destination->literal_address, destination->host,
				sizeof(destination->host));
	} else if (sbx_allow_normalize_host(text, destination->host, sizeof(destination->host)) <
		   0) {
		/* Never echo what the client sent: it is not a valid name. */
		snprintf(destination->display, sizeof(destination->display), "(invalid host):%u",
			 port);
		return -2;
	} else {
		destination->literal = false;
	}
	snprintf(destination->display, sizeof(destination->display), "%s:%u", destination->host,
		 port);
	return 0;
}

/* The end of the request head: the offset after the empty line, or 0 when it is incomplete. */
size_t sbx_proxy_find_head_end(const char *buffer, size_t length)
{
	size_t i;

	for (i = 0; i + 1 < length; i++) {
		if (buffer[i] != '\n')
			continue;
		if (buffer[i + 1] == '\n')
			return i + 2;
		if (buffer[i + 1] == '\r' && i + 2 < length && buffer[i + 2] == '\n')
			return i + 3;
	}
	return 0;
}

static bool is_token_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static bool is_token(const char *text)
{
	if (*text == '\0')
		return false;
	for (; *text != '\0'; text++) {
		if (!is_token_char(*text))
			return false;
	}
	return true;
}

/* True for a request target of visible ASCII only (RFC 9112 section 3.2). */
static bool is_target_text(const char *text)
{
	if (*text == '\0')
		return false;
	for (; *text != '\0'; text++) {
		if ((unsigned char) *text <= 0x20 || (unsigned char) *text >= 0x7f)
			return false;
	}
	return true;
}

static char *trim_spaces(char *text)
{
	size_t length;

	while (*text == ' ' || *text == '\t')
		text++;
	length = strlen(text);
	while (length > 0 && (text[length - 1] == ' ' || text[length - 1] == '\t'))
		text[--length] = '\0';
	return text;
}

/*
 * Splits the NUL-terminated request head in HEAD (modified in place) into REQUEST. Returns 0,
 * -1 for a malformed head (400, with *PROBLEM set) or -2 for too many headers (431).
 */
int sbx_proxy_parse_head(char *head, struct request *request, const char **problem)
{
	char *line, *next, *version, *space;
	bool first = true;

	memset(request, 0, sizeof(*request));
	/* RFC 9112 section 2.2: ignore empty lines before the request line. */
	while (*head == '\r' || *head == '\n')
		head++;

	for (line = head; *line != '\0'; line = next) {
		char *newline = strchr(line, '\n');
		size_t length;

		if (newline == NULL) {
			*problem = "the request head does not end with an empty line";
			return -1;
		}
		*newline = '\0';
		next = newline + 1;
		length = (size_t) (newline - line);
		if (length > 0 && line[length - 1] == '\r')
			line[--length] = '\0';
		if (length == 0)
			break;
		if (memchr(line, '\r', length) != NULL || strlen(line) != length) {
			*problem = "the request head contains a stray CR or NUL byte";
			return -1;
		}

		if (first) {
			first = false;
			space = strchr(line, ' ');
			if (space == NULL)
				goto bad_request_line;
			*space = '\0';
			request->method = line;
			request->target = space + 1;
			space = strchr(request->target, ' ');
			if (space == NULL)
				goto bad_request_line;
			*space = '\0';
			version = space + 1;
			if (!is_token(request->method) || !is_target_text(request->target) ||
			    (strcmp(version, "HTTP/1.1") != 0 && strcmp(version, "HTTP/1.0") != 0))
				goto bad_request_line;
			continue;
		}

		if (line[0] == ' ' || line[0] == '\t') {
			*problem = "folded header lines are not allowed (RFC 9112 section 5.2)";
			return -1;
		}
		if (request->header_count == HEADER_COUNT_MAX)
			return -2;
		space = strchr(line, ':');
		if (space == NULL) {
			*problem = "a header line has no colon";
			return -1;
		}
		*space = '\0';
		if (!is_token(line)) {
			*problem = "a header name is invalid";
			return -1;
		}
		request->headers[request->header_count].name = line;
		request->headers[request->header_count].value = trim_spaces(space + 1);
		request->header_count++;
	}
	if (first) {
		*problem = "the request line is missing";
		return -1;
	}
	return 0;

bad_request_line:
	*problem = "the request line is not METHOD TARGET HTTP/1.x";
	return -1;
}

static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Steps the chunked parser over one byte C. Returns 0, or -1 for invalid framing. */
static int chunk_step(struct body_framer *framer, char c)
{
	int digit;

	switch (framer->state) {
	case CHUNK_SIZE:
		digit = hex_value(c);
		if (digit >= 0) {
			/* 15 hex digits stay below 2^60, far past any real body. */
			if (++framer->digits > 15)
				return -1;
			framer->remaining = framer->remaining * 16 + (uint64_t) digit;
			return 0;
		}
		if (framer->digits == 0)
			return -1;
		if (c == '\r')
			framer->state = CHUNK_SIZE_LF;
		else if (c == ';' || c == ' ' || c == '\t')
			framer->state = CHUNK_EXTENSION;
		else
			return -1;
		return 0;
	case CHUNK_EXTENSION:
		if (c == '\r')
			framer->state = CHUNK_SIZE_LF;
		else if (((unsigned char) c < 0x20 && c != '\t') || c == 0x7f)
			return -1;
		return 0;
	case CHUNK_SIZE_LF:
		if (c != '\n')
			return -1;
		framer->state = framer->remaining == 0 ? CHUNK_TRAILER_START : CHUNK_DATA;
		return 0;
	case CHUNK_DATA_CR:
		if (c != '\r')
			return -1;
		framer->state = CHUNK_DATA_LF;
		return 0;
	case CHUNK_DATA_LF:
		if (c != '\n')
			return -1;
		framer->state = CHUNK_SIZE;
		framer->digits = 0;
		framer->remaining = 0;
		return 0;
	case CHUNK_TRAILER_START:
		framer->state = c == '\r' ? CHUNK_FINAL_LF : CHUNK_TRAILER_LINE;
		return c == '\n' ? -1 : 0;
	case CHUNK_TRAILER_LINE:
		if (c == '\r')
			framer->state = CHUNK_TRAILER_LF;
		return c == '\n' ? -1 : 0;
	case CHUNK_TRAILER_LF:
		if (c != '\n')
			return -1;
		framer->state = CHUNK_TRAILER_START;
		return 0;
	case CHUNK_FINAL_LF:
		if (c != '\n')
			return -1;
		framer->state = CHUNK_DONE;
		framer->done = true;
		return 0;
	case CHUNK_DATA:
	case CHUNK_DONE:
		break;
	}
	return -1;
}

/* Returns how many of the LENGTH bytes at DATA belong to the body, or -1 for bad framing. */
ssize_t sbx_proxy_framer_feed(struct body_framer *framer, const char *data, size_t length)
{
	size_t used = 0;

	if (!framer->chunked) {
		size_t take = framer->remaining < length ? (size_t) framer->remaining : length;

		framer->remaining -= take;
		framer->done = framer->remaining == 0;
		return (ssize_t) take;
	}
	while (used < length && !framer->done) {
		if (framer->state == CHUNK_DATA) {
			size_t take = length - used;

			if (framer->remaining < take)
				take = (size_t) framer->remaining;
			framer->remaining -= take;
			used += take;
			if (framer->remaining == 0)
				framer->state = CHUNK_DATA_CR;
			continue;
		}
		if (chunk_step(framer, data[used]) < 0)
			return -1;
		used++;
	}
	return (ssize_t) used;
}

/* Parses the authority form of a CONNECT target ("host:port", "[v6]:port"). */
int sbx_proxy_parse_connect_target(const char *target, struct destination *destination)
{
	const char *colon;

	if (target[0] == '[') {
		const char *close = strchr(target, ']');

		if (close == NULL || close[1] != ':')
			return -1;
		colon = close + 1;
	} else {
		colon = strrchr(target, ':');
		if (colon == NULL || memchr(target, ':', (size_t) (colon - target)) != NULL)
			return -1;
	}
	if (parse_port(colon + 1, strlen(colon + 1), &destination->port) < 0)
		return -1;
	return make_destination(target, (size_t) (colon - target), destination->port,
				destination);
}

/* Splits an absolute-form http URL into the destination, the Host header value and the
 * origin-form target. Returns 0, -1 for a malformed URL, -2 for an invalid host name. */
int sbx_proxy_parse_http_url(const char *url, struct destination *destination,
			     char *host_header, size_t host_header_size, const char **path)
{
	const char *authority = url + strlen("http://");
	const char *authority_end = authority + strcspn(authority, "/?#");
	const char *port_colon = NULL;
	const char *host_end;
	uint16_t port = 80;
	int status;

	if (memchr(authority, '@', (size_t) (authority_end - authority)) != NULL)
		return -1;
	if (authority[0] == '[') {
		const char *close = memchr(authority, ']', (size_t) (authority_end - authority));

		if (close == NULL)
			return -1;
		host_end = close + 1;
		if (host_end < authority_end) {
			if (*host_end != ':')
				return -1;
			port_colon = host_end;
		}
	} else {
		port_colon = memchr(authority, ':', (size_t) (authority_end - authority));
		host_end = port_colon != NULL ? port_colon : authority_end;
	}
	/* RFC 3986: an empty port after the colon means the scheme's default. */
	if (port_colon != NULL && port_colon + 1 < authority_end &&
	    parse_port(port_colon + 1, (size_t) (authority_end - port_colon - 1), &port) < 0)
		return -1;

	status = make_destination(authority, (size_t) (host_end - authority), port, destination);
	if (status < 0)
		return status;
	if (strchr(destination->host, ':') != NULL)
		snprintf(host_header, host_header_size, "[%s]", destination->host);
	else
		snprintf(host_header, host_header_size, "%s", destination->host);
	if (port != 80) {
		size_t used = strlen(host_header);

		snprintf(host_header + used, host_header_size - used, ":%u", port);
	}
	*path = authority_end;
	return 0;
}

/* True when header NAME is hop-by-hop or only meant for the proxy, or listed in CONNECTION. */
static bool header_dropped(const char *name, const char *connection)
{
	static const char *const dropped[] = {
		"Connection", "Proxy-Connection", "Proxy-Authorization", "Keep-Alive", "TE",
		"Upgrade",    "Host",
	};
	size_t name_length = strlen(name), i;
	const char *p;

	for (i = 0; i < SBX_ARRAY_SIZE(dropped); i++) {
		if (strcasecmp(name, dropped[i]) == 0)
			return true;
	}
	for (p = connection; p != NULL && *p != '\0';) {
		size_t length;

		p += strspn(p, " \t,");
		length = strcspn(p, " \t,");
		if (length == name_length && strncasecmp(p, name, length) == 0)
			return true;
		p += length;
	}
	return false;
}

/*
 * Decides how the request body is framed. Returns 0, or -1 with *PROBLEM for framing the proxy
 * will not forward (both Content-Length and Transfer-Encoding is the classic smuggling vector).
 */
int sbx_proxy_body_framing(const struct request *request, struct body_framer *framer,
			   const char **problem)
{
	const char *length_value = NULL;
	bool chunked = false;
	size_t i;

	memset(framer, 0, sizeof(*framer));
	for (i = 0; i < request->header_count; i++) {
		const struct header *header = &request->headers[i];

		if (strcasecmp(header->name, "Transfer-Encoding") == 0) {
			if (chunked || strcasecmp(header->value, "chunked") != 0) {
				*problem = "only a single \"Transfer-Encoding: chunked\" is supported";
				return -1;
			}
			chunked = true;
		} else if (strcasecmp(header->name, "Content-Length") == 0) {
			if (length_value != NULL && strcmp(length_value, header->value) != 0) {
				*problem = "conflicting Content-Length headers";
				return -1;
			}
			length_value = header->value;
		}
	}
	if (chunked && length_value != NULL) {
		*problem = "both Content-Length and Transfer-Encoding are set";
		return -1;
	}
	if (chunked) {
		framer->chunked = true;
		framer->state = CHUNK_SIZE;
		return 0;
	}
	if (length_value != NULL) {
		int64_t value;

		if (length_value[0] < '0' || length_value[0] > '9' ||
		    sbx_parse_int64(length_value, &value) < 0) {
			*problem = "invalid Content-Length";
			return -1;
		}
		framer->remaining = (uint64_t) value;
	}
	framer->done = framer->remaining == 0;
	return 0;
}

/* Builds the origin-form request head sent upstream into BUFFER of SIZE bytes. */
int sbx_proxy_build_forward_head(const struct request *request, const char *host_header,
				 const char *path, char *buffer, size_t size, size_t *length)
{
	const char *connection = NULL;
	size_t used = 0, i;
	int n;

	for (i = 0; i < request->header_count; i++) {
		if (strcasecmp(request->headers[i].name, "Connection") == 0)
			connection = request->headers[i].value;
	}

	/* The fragment is never sent; a target without a path gets "/". */
	n = snprintf(buffer, size, "%s %s%.*s HTTP/1.1\r\nHost: %s\r\n", request->method,
		     path[0] == '/' ? "" : "/", (int) strcspn(path, "#"), path, host_header);
	if (n < 0 || (size_t) n >= size)
		return -1;
	used = (size_t) n;
	for (i = 0; i < request->header_count; i++) {
		const struct header *header = &request->headers[i];

		if (header_dropped(header->name, connection))
			continue;
		n = snprintf(buffer + used, size - used, "%s: %s\r\n", header->name,
			     header->value);
		if (n < 0 || (size_t) n >= size - used)
			return -1;
		used += (size_t) n;
	}
	/* One request per client connection: keep-alive would let a client switch hosts
	 * on a connection the proxy already checked. */
	n = snprintf(buffer + used, size - used, "Connection: close\r\n\r\n");
	if (n < 0 || (size_t) n >= size - used)
		return -1;
	*length = used + (size_t) n;
	return 0;
}
