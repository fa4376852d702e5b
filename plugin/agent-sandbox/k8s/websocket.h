/* SPDX-License-Identifier: MIT */
/*
 * RFC 6455 client side without I/O: the upgrade request, an incremental parser of the
 * server's handshake response, an incremental frame parser that hands payload slices to a
 * callback, and a frame encoder that masks client frames. The caller owns the socket.
 */
#ifndef SBX_K8S_WEBSOCKET_H
#define SBX_K8S_WEBSOCKET_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "sbx/executor.h"

enum k8s_ws_opcode {
	K8S_WS_CONTINUATION = 0x0,
	K8S_WS_TEXT = 0x1,
	K8S_WS_BINARY = 0x2,
	K8S_WS_CLOSE = 0x8,
	K8S_WS_PING = 0x9,
	K8S_WS_PONG = 0xa,
};

#define K8S_WS_CLOSE_NORMAL 1000
/* Control frames carry at most 125 payload bytes (RFC 6455 section 5.5). */
#define K8S_WS_CONTROL_MAX 125
/* A frame header is 2 bytes, plus 2 or 8 for the extended length, plus 4 for the mask. */
#define K8S_WS_HEADER_MAX 14
/* Sec-WebSocket-Key: base64 of 16 random bytes. */
#define K8S_WS_KEY_LENGTH 24
/* Bound of the server's response head (status line and headers). */
#define K8S_WS_RESPONSE_HEAD_MAX (64u << 10)

/* Fills KEY (K8S_WS_KEY_LENGTH + 1 bytes) with a fresh Sec-WebSocket-Key. */
int k8s_ws_make_key(char *key, struct sbx_error *error);

/* Computes the Sec-WebSocket-Accept value for KEY into ACCEPT (29 bytes with the NUL). */
void k8s_ws_accept_for_key(const char *key, char *accept);

struct k8s_ws_request {
	const char *path; /* path and query, starting with '/' */
	const char *host; /* Host header value: name or [address], with :port when not default */
	const char *key;
	const char *protocols; /* Sec-WebSocket-Protocol, in order of preference */
	const char *authorization; /* full header value, or NULL */
};

/*
 * Builds the upgrade request into a new buffer (*TEXT, *LENGTH; NUL-terminated). MAX bounds
 * the whole request head; a longer one fails with SBX_ERROR_INVALID.
 */
int k8s_ws_build_request(const struct k8s_ws_request *request, size_t max, char **text,
			 size_t *length, struct sbx_error *error);

struct k8s_ws_response {
	char *head; /* the bytes of the head so far, NUL-terminated */
	size_t head_length;
	int complete; /* the empty line after the headers arrived */
	/* Filled once complete: */
	int status_code;
	char reason[64]; /* reason phrase of the status line */
	char protocol[64]; /* Sec-WebSocket-Protocol, "" when absent */
	char accept[64]; /* Sec-WebSocket-Accept, "" when absent */
	char content_type[64];
	int upgrade_websocket; /* Upgrade: websocket */
	int connection_upgrade; /* Connection contains the upgrade token */
	int chunked; /* Transfer-Encoding: chunked */
	int64_t content_length; /* -1 when absent */
};

void k8s_ws_response_init(struct k8s_ws_response *response);
void k8s_ws_response_clear(struct k8s_ws_response *response);

/*
 * Feeds bytes of the server's response and sets *CONSUMED to the bytes that belong to the
 * head. The bytes after them are the first data after the head: frames, or the body of a
 * rejected upgrade. Returns 0, or -1 for a malformed or oversized head.
 */
int k8s_ws_response_feed(struct k8s_ws_response *response, const void *data, size_t length,
			 size_t *consumed, struct sbx_error *error);

/*
 * Checks a complete 101 response against the request: Upgrade, Connection, the accept value
 * for KEY, and a subprotocol that is one of the comma-separated OFFERED.
 */
int k8s_ws_response_check(const struct k8s_ws_response *response, const char *key,
			  const char *offered, struct sbx_error *error);

/*
 * Receives a data frame's payload slices. OPCODE is the message's (text or binary), FINAL is
 * set on the call that ends the message, which may have LENGTH 0. Returns 0 or -1 to stop.
 */
typedef int (*k8s_ws_data_fn)(void *userdata, int opcode, const void *data, size_t length,
			      int final);
/* Receives a whole control frame (close, ping, pong). Returns 0 or -1 to stop. */
typedef int (*k8s_ws_control_fn)(void *userdata, int opcode, const void *data, size_t length);

struct k8s_ws_parser {
	k8s_ws_data_fn on_data;
	k8s_ws_control_fn on_control;
	void *userdata;

	uint8_t header[K8S_WS_HEADER_MAX];
	size_t header_have;
	size_t header_need;
	int opcode; /* of the frame in progress */
	int fin;
	uint64_t remaining; /* payload bytes of the frame in progress still to come */
	int in_frame; /* the header is complete and the payload is being read */
	int message_opcode; /* of the fragmented message in progress, 0 when none */
	uint8_t control[K8S_WS_CONTROL_MAX];
	size_t control_length;

	int closed; /* a close frame arrived; anything after it is an error */
	int close_code; /* 1005 (no status) when the close frame had no code */
	char close_reason[K8S_WS_CONTROL_MAX];
};

void k8s_ws_parser_init(struct k8s_ws_parser *parser, k8s_ws_data_fn on_data,
			k8s_ws_control_fn on_control, void *userdata);

/*
 * Feeds received bytes, split at any boundaries. Returns 0, or -1 for a protocol error or
 * when a callback returned -1. Protocol errors: reserved bits, a masked server frame, an
 * unknown opcode, a long or fragmented control frame, a continuation without a message, a new
 * message inside one, and data after close. After a callback's -1 the error only states that
 * receiving stopped.
 */
int k8s_ws_parser_feed(struct k8s_ws_parser *parser, const void *data, size_t length,
		       struct sbx_error *error);

/* Fills MASK with 4 random bytes; -1 when the random generator fails. */
int k8s_ws_new_mask(uint8_t mask[4]);

/* XORs DATA with MASK, starting at mask position OFFSET % 4. */
void k8s_ws_mask(uint8_t *data, size_t length, const uint8_t mask[4], size_t offset);

/*
 * Writes a masked frame header for a payload of LENGTH bytes into OUT (K8S_WS_HEADER_MAX
 * bytes) and returns its length. MASK is the frame's fresh masking key.
 */
size_t k8s_ws_encode_header(uint8_t *out, int opcode, int fin, uint64_t length,
			    const uint8_t mask[4]);

/*
 * Writes a whole masked frame (header and PAYLOAD) into OUT, which has room for
 * K8S_WS_HEADER_MAX + LENGTH bytes, with a fresh random mask. Returns its length, or 0 when
 * no random bytes could be had.
 */
size_t k8s_ws_encode_frame(uint8_t *out, int opcode, const void *payload, size_t length);

#endif /* SBX_K8S_WEBSOCKET_H */
