/* SPDX-License-Identifier: MIT */
/*
 * Shared by the egress proxy's files: proxy.c (serving connections, allow-list decisions),
 * proxy_http.c (request parsing and body framing) and proxy_relay.c (moving the bytes).
 */
#ifndef SBX_LOCAL_PROXY_INTERNAL_H
#define SBX_LOCAL_PROXY_INTERNAL_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

/* Largest request head (request line and headers) a client may send; larger ones get 431. */
#define HEADER_MAX 16384
#define HEADER_COUNT_MAX 100
/* Longest "host:port" text: a 253-character name or a bracketed IPv6 address, and a port. */
#define DISPLAY_MAX 300

/* The destination of one request, as checked and logged. */
struct destination {
	/* "CONNECT" or "HTTP": the kind of request, never the client's method or URL. */
	const char *kind;
	/* Normalised host name, or the canonical text of an IP literal. */
	char host[256];
	bool literal;
	struct sockaddr_storage literal_address;
	uint16_t port;
	/* host:port, IPv6 in brackets: the only form of the destination that is logged. */
	char display[DISPLAY_MAX];
};

struct header {
	char *name;
	char *value;
};

struct request {
	char *method;
	char *target;
	struct header headers[HEADER_COUNT_MAX];
	size_t header_count;
};

enum chunk_state {
	CHUNK_SIZE,
	CHUNK_EXTENSION,
	CHUNK_SIZE_LF,
	CHUNK_DATA,
	CHUNK_DATA_CR,
	CHUNK_DATA_LF,
	CHUNK_TRAILER_START,
	CHUNK_TRAILER_LINE,
	CHUNK_TRAILER_LF,
	CHUNK_FINAL_LF,
	CHUNK_DONE,
};

/*
 * Finds where a request body ends (Content-Length or chunked) while it is forwarded verbatim, so
 * that the proxy forwards exactly one request per connection.
 */
struct body_framer {
	bool chunked;
	bool done;
	uint64_t remaining;
	enum chunk_state state;
	unsigned digits;
};

enum relay_result {
	RELAY_DONE = 0,
	RELAY_FAILED = -1,
	RELAY_STOPPED = -2,
};

/* proxy_http.c */
void sbx_proxy_address_text(const struct sockaddr_storage *address, char *buffer, size_t size);
size_t sbx_proxy_find_head_end(const char *buffer, size_t length);
int sbx_proxy_parse_head(char *head, struct request *request, const char **problem);
ssize_t sbx_proxy_framer_feed(struct body_framer *framer, const char *data, size_t length);
int sbx_proxy_parse_connect_target(const char *target, struct destination *destination);
int sbx_proxy_parse_http_url(const char *url, struct destination *destination, char *host_header,
			     size_t host_header_size, const char **path);
int sbx_proxy_body_framing(const struct request *request, struct body_framer *framer,
			   const char **problem);
int sbx_proxy_build_forward_head(const struct request *request, const char *host_header,
				 const char *path, char *buffer, size_t size, size_t *length);

/* proxy_relay.c */
/*
 * Relays CLIENT_FD and UPSTREAM_FD (both non-blocking) until both directions are finished,
 * either side fails, or STOP_FD becomes readable. The INITIAL_LENGTH bytes at INITIAL, which
 * the client sent after its request head, go upstream first. FRAMER, when not NULL, limits
 * what goes upstream to one request body.
 */
enum relay_result sbx_proxy_relay(int stop_fd, int client_fd, int upstream_fd,
				  const char *initial, size_t initial_length,
				  struct body_framer *framer);

#endif /* SBX_LOCAL_PROXY_INTERNAL_H */
