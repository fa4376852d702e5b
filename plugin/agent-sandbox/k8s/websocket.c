/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "error.h"

#include "websocket.h"

/* RFC 6455 section 1.3: the server hashes the key with this GUID appended. */
#define ACCEPT_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

/* ---- handshake ---- */

int k8s_ws_make_key(char *key, struct sbx_error *error)
{
	unsigned char nonce[16];

	if (RAND_bytes(nonce, sizeof(nonce)) != 1)
		return sbx_error_set(error, SBX_ERROR_SYSTEM,
				     "the OpenSSL random generator failed");
	EVP_EncodeBlock((unsigned char *) key, nonce, sizeof(nonce));
	return 0;
}

void k8s_ws_accept_for_key(const char *key, char *accept)
{
	unsigned char digest[EVP_MAX_MD_SIZE];
	unsigned int digest_length = 0;
	char input[K8S_WS_KEY_LENGTH + sizeof(ACCEPT_GUID)];
	int n;

	n = snprintf(input, sizeof(input), "%s%s", key, ACCEPT_GUID);
	if (n < 0 || (size_t) n >= sizeof(input) ||
	    EVP_Digest(input, (size_t) n, digest, &digest_length, EVP_sha1(), NULL) != 1) {
		/* An oversized key never matches: the accept value stays empty. */
		accept[0] = '\0';
		return;
	}
	EVP_EncodeBlock((unsigned char *) accept, digest, (int) digest_length);
}

/* Header values must not end the header early: CR and LF would inject lines. */
static int has_line_break(const char *text)
{
	return text != NULL && strpbrk(text, "\r\n") != NULL;
}

int k8s_ws_build_request(const struct k8s_ws_request *request, size_t max, char **text,
			 size_t *length, struct sbx_error *error)
{
	char *buffer = NULL;
	int n;

	if (has_line_break(request->path) || has_line_break(request->host) ||
	    has_line_break(request->protocols) || has_line_break(request->authorization))
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "a request header value contains a line break; check the "
				     "server URL and the credential");
	n = asprintf(&buffer,
		     "GET %s HTTP/1.1\r\n"
		     "Host: %s\r\n"
		     "User-Agent: sbx/" SBX_VERSION "\r\n"
		     "Upgrade: websocket\r\n"
		     "Connection: Upgrade\r\n"
		     "Sec-WebSocket-Key: %s\r\n"
		     "Sec-WebSocket-Version: 13\r\n"
		     "Sec-WebSocket-Protocol: %s\r\n"
		     "%s%s%s"
		     "\r\n",
		     request->path, request->host, request->key, request->protocols,
		     request->authorization != NULL ? "Authorization: " : "",
		     request->authorization != NULL ? request->authorization : "",
		     request->authorization != NULL ? "\r\n" : "");
	if (n < 0)
		return sbx_error_errno(error, ENOMEM, "WebSocket");
	if ((size_t) n > max) {
		explicit_bzero(buffer, (size_t) n);
		free(buffer);
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "the upgrade request would be %d bytes, over the limit "
				     "of %zu; pass long arguments and scripts on stdin",
				     n, max);
	}
	*text = buffer;
	*length = (size_t) n;
	return 0;
}

void k8s_ws_response_init(struct k8s_ws_response *response)
{
	memset(response, 0, sizeof(*response));
	response->content_length = -1;
}

void k8s_ws_response_clear(struct k8s_ws_response *response)
{
	free(response->head);
	response->head = NULL;
	response->head_length = 0;
}

/* Copies VALUE (LENGTH bytes) into OUT, cut to its size. */
static void copy_value(char *out, size_t size, const char *value, size_t length)
{
	if (length >= size)
		length = size - 1;
	memcpy(out, value, length);
	out[length] = '\0';
}

/* True when the comma-separated LIST contains TOKEN, compared case-insensitively. */
static int list_has_token(const char *list, size_t length, const char *token)
{
	size_t token_length = strlen(token);
	const char *end = list + length;

	while (list < end) {
		const char *comma = memchr(list, ',', (size_t) (end - list));
		const char *item_end = comma != NULL ? comma : end;

		while (list < item_end && (*list == ' ' || *list == '\t'))
			list++;
		while (item_end > list && (item_end[-1] == ' ' || item_end[-1] == '\t'))
			item_end--;
		if ((size_t) (item_end - list) == token_length &&
		    strncasecmp(list, token, token_length) == 0)
			return 1;
		if (comma == NULL)
			break;
		list = comma + 1;
	}
	return 0;
}

static int parse_status_line(struct k8s_ws_response *response, const char *line, size_t length,
			     struct sbx_error *error)
{
	unsigned int code;

	/* "HTTP/1.1 101 Switching Protocols"; the reason phrase may be empty. */
	if (length < 12 || strncmp(line, "HTTP/1.", 7) != 0 || line[8] != ' ' ||
	    line[9] < '1' || line[9] > '5' || line[10] < '0' || line[10] > '9' ||
	    line[11] < '0' || line[11] > '9' || (length > 12 && line[12] != ' '))
		return sbx_error_set(error, SBX_ERROR_SYSTEM,
				     "the server's response starts with \"%.*s\", not an "
				     "HTTP/1.x status line",
				     (int) (length < 64 ? length : 64), line);
	code = (unsigned int) ((line[9] - '0') * 100 + (line[10] - '0') * 10 + (line[11] - '0'));
	response->status_code = (int) code;
	if (length > 13)
		copy_value(response->reason, sizeof(response->reason), line + 13, length - 13);
	return 0;
}

static int parse_header(struct k8s_ws_response *response, const char *line, size_t length,
			struct sbx_error *error)
{
	const char *colon = memchr(line, ':', length);
	const char *value, *end = line + length;
	size_t name_length, value_length;

	if (colon == NULL || colon == line)
		return sbx_error_set(error, SBX_ERROR_SYSTEM,
				     "invalid header line \"%.*s\" in the server's response",
				     (int) (length < 64 ? length : 64), line);
	name_length = (size_t) (colon - line);
	value = colon + 1;
	while (value < end && (*value == ' ' || *value == '\t'))
		value++;
	while (end > value && (end[-1] == ' ' || end[-1] == '\t'))
		end--;
	value_length = (size_t) (end - value);

#define NAME_IS(name) (name_length == strlen(name) && strncasecmp(line, name, name_length) == 0)
	if (NAME_IS("Upgrade")) {
		response->upgrade_websocket = list_has_token(value, value_length, "websocket");
	} else if (NAME_IS("Connection")) {
		response->connection_upgrade = list_has_token(value, value_length, "upgrade");
	} else if (NAME_IS("Sec-WebSocket-Protocol")) {
		copy_value(response->protocol, sizeof(response->protocol), value, value_length);
	} else if (NAME_IS("Sec-WebSocket-Accept")) {
		copy_value(response->accept, sizeof(response->accept), value, value_length);
	} else if (NAME_IS("Content-Type")) {
		copy_value(response->content_type, sizeof(response->content_type), value,
			   value_length);
	} else if (NAME_IS("Transfer-Encoding")) {
		response->chunked = list_has_token(value, value_length, "chunked");
	} else if (NAME_IS("Content-Length")) {
		char number[24];
		char *number_end;
		unsigned long long parsed;

		copy_value(number, sizeof(number), value, value_length);
		errno = 0;
		parsed = strtoull(number, &number_end, 10);
		if (number[0] < '0' || number[0] > '9' || *number_end != '\0' || errno != 0 ||
		    parsed > INT64_MAX)
			return sbx_error_set(error, SBX_ERROR_SYSTEM,
					     "invalid Content-Length \"%s\" in the server's "
					     "response",
					     number);
		response->content_length = (int64_t) parsed;
	}
#undef NAME_IS
	return 0;
}

static int parse_head(struct k8s_ws_response *response, struct sbx_error *error)
{
	const char *line = response->head;
	const char *end = response->head + response->head_length;
	int first = 1;

	while (line < end) {
		const char *newline = memchr(line, '\n', (size_t) (end - line));
		size_t length;

		if (newline == NULL)
			break;
		length = (size_t) (newline - line);
		if (length > 0 && line[length - 1] == '\r')
			length--;
		if (length == 0)
			break;
		if (first) {
			if (parse_status_line(response, line, length, error) < 0)
				return -1;
			first = 0;
		} else if (parse_header(response, line, length, error) < 0) {
			return -1;
		}
		line = newline + 1;
	}
	if (first)
		return sbx_error_set(error, SBX_ERROR_SYSTEM,
				     "the server's response has no status line");
	return 0;
}

/* Finds the end of the head ("\r\n\r\n", or "\n\n" from a lax server) at or after FROM. */
static ssize_t find_head_end(const char *head, size_t length, size_t from)
{
	size_t i;

	for (i = from; i < length; i++) {
		if (head[i] != '\n')
			continue;
		if (i + 1 < length && head[i + 1] == '\n')
			return (ssize_t) (i + 2);
		if (i + 2 < length && head[i + 1] == '\r' && head[i + 2] == '\n')
			return (ssize_t) (i + 3);
	}
	return -1;
}

int k8s_ws_response_feed(struct k8s_ws_response *response, const void *data, size_t length,
			 size_t *consumed, struct sbx_error *error)
{
	size_t old_length = response->head_length;
	size_t take = length;
	size_t from;
	ssize_t end;
	char *bigger;

	if (response->complete) {
		*consumed = 0;
		return 0;
	}
	/* One byte past the bound is enough to tell that the head is too long. */
	if (take > K8S_WS_RESPONSE_HEAD_MAX + 1 - old_length)
		take = K8S_WS_RESPONSE_HEAD_MAX + 1 - old_length;
	bigger = realloc(response->head, old_length + take + 1);
	if (bigger == NULL)
		return sbx_error_errno(error, ENOMEM, "WebSocket");
	response->head = bigger;
	memcpy(response->head + old_length, data, take);
	response->head_length = old_length + take;
	response->head[response->head_length] = '\0';

	/* The terminator may straddle the previous chunk: look back three bytes. */
	from = old_length >= 3 ? old_length - 3 : 0;
	end = find_head_end(response->head, response->head_length, from);
	if (end < 0) {
		if (response->head_length > K8S_WS_RESPONSE_HEAD_MAX)
			return sbx_error_set(error, SBX_ERROR_SYSTEM,
					     "the server's response head is longer than %u "
					     "bytes",
					     K8S_WS_RESPONSE_HEAD_MAX);
		*consumed = take;
		return 0;
	}
	response->head_length = (size_t) end;
	response->head[end] = '\0';
	response->complete = 1;
	*consumed = (size_t) end - old_length;
	return parse_head(response, error);
}

int k8s_ws_response_check(const struct k8s_ws_response *response, const char *key,
			  const char *offered, struct sbx_error *error)
{
	char expected[64];

	if (response->status_code != 101)
		return sbx_error_set(error, SBX_ERROR_SYSTEM,
				     "the server answered HTTP %d, not 101, to the upgrade",
				     response->status_code);
	if (!response->upgrade_websocket || !response->connection_upgrade)
		return sbx_error_set(error, SBX_ERROR_SYSTEM,
				     "the server's 101 response lacks \"Upgrade: websocket\" "
				     "or \"Connection: Upgrade\"");
	k8s_ws_accept_for_key(key, expected);
	if (expected[0] == '\0' || strcmp(response->accept, expected) != 0)
		return sbx_error_set(error, SBX_ERROR_SYSTEM,
				     "invalid Sec-WebSocket-Accept \"%s\" from the server; "
				     "expected \"%s\" (a proxy in between may have answered)",
				     response->accept, expected);
	if (response->protocol[0] == '\0' || strchr(response->protocol, ',') != NULL ||
	    !list_has_token(offered, strlen(offered), response->protocol))
		return sbx_error_set(error, SBX_ERROR_SYSTEM,
				     "the server chose the subprotocol \"%s\"; sbx offered %s",
				     response->protocol, offered);
	return 0;
}

/* ---- frame parser ---- */

void k8s_ws_parser_init(struct k8s_ws_parser *parser, k8s_ws_data_fn on_data,
			k8s_ws_control_fn on_control, void *userdata)
{
	memset(parser, 0, sizeof(*parser));
	parser->on_data = on_data;
	parser->on_control = on_control;
	parser->userdata = userdata;
	parser->header_need = 2;
}

static int protocol_error(struct sbx_error *error, const char *what)
{
	return sbx_error_set(error, SBX_ERROR_SYSTEM, "WebSocket protocol error: %s", what);
}

/* Checks the first two header bytes and works out the header's full length. */
static int check_first_bytes(struct k8s_ws_parser *parser, struct sbx_error *error)
{
	uint8_t b0 = parser->header[0], b1 = parser->header[1];
	int opcode = b0 & 0x0f;
	unsigned int length7 = b1 & 0x7f;

	parser->fin = (b0 & 0x80) != 0;
	parser->opcode = opcode;
	/* No extension is negotiated, so no reserved bit may be set. */
	if (b0 & 0x70)
		return protocol_error(error, "a frame has reserved bits set");
	if (b1 & 0x80)
		return protocol_error(error, "the server sent a masked frame");
	switch (opcode) {
	case K8S_WS_CONTINUATION:
		if (parser->message_opcode == 0)
			return protocol_error(error, "a continuation frame without a message");
		break;
	case K8S_WS_TEXT:
	case K8S_WS_BINARY:
		if (parser->message_opcode != 0)
			return protocol_error(error,
					      "a new message before the end of a fragmented one");
		break;
	case K8S_WS_CLOSE:
	case K8S_WS_PING:
	case K8S_WS_PONG:
		if (!parser->fin)
			return protocol_error(error, "a fragmented control frame");
		if (length7 > K8S_WS_CONTROL_MAX)
			return protocol_error(error, "a control frame longer than 125 bytes");
		break;
	default:
		return protocol_error(error, "a frame with an unknown opcode");
	}
	/* The 7-bit length 126 announces a 16-bit length, 127 a 64-bit one. */
	parser->header_need = 2;
	if (length7 == 126)
		parser->header_need += 2;
	else if (length7 == 127)
		parser->header_need += 8;
	return 0;
}

static int start_payload(struct k8s_ws_parser *parser, struct sbx_error *error)
{
	unsigned int length7 = parser->header[1] & 0x7f;
	uint64_t length = length7;
	size_t i;

	if (length7 == 126) {
		length = (uint64_t) parser->header[2] << 8 | parser->header[3];
	} else if (length7 == 127) {
		length = 0;
		for (i = 2; i < 10; i++)
			length = length << 8 | parser->header[i];
		if (length >> 63)
			return protocol_error(error, "a frame length with the top bit set");
	}
	parser->remaining = length;
	parser->in_frame = 1;
	parser->control_length = 0;
	if (parser->opcode == K8S_WS_TEXT || parser->opcode == K8S_WS_BINARY)
		parser->message_opcode = parser->opcode;
	return 0;
}

static int finish_control(struct k8s_ws_parser *parser, struct sbx_error *error)
{
	if (parser->opcode == K8S_WS_CLOSE) {
		if (parser->control_length == 1)
			return protocol_error(error, "a close frame with a 1-byte payload");
		parser->closed = 1;
		parser->close_code = 1005;
		parser->close_reason[0] = '\0';
		if (parser->control_length >= 2) {
			parser->close_code = parser->control[0] << 8 | parser->control[1];
			copy_value(parser->close_reason, sizeof(parser->close_reason),
				   (const char *) parser->control + 2, parser->control_length - 2);
		}
	}
	if (parser->on_control != NULL &&
	    parser->on_control(parser->userdata, parser->opcode, parser->control,
			       parser->control_length) < 0)
		return sbx_error_set(error, SBX_ERROR_SYSTEM, "receiving stopped");
	return 0;
}

static int end_frame(struct k8s_ws_parser *parser, struct sbx_error *error)
{
	int control = parser->opcode >= K8S_WS_CLOSE;

	parser->in_frame = 0;
	parser->header_have = 0;
	parser->header_need = 2;
	if (control)
		return finish_control(parser, error);
	if (parser->fin)
		parser->message_opcode = 0;
	return 0;
}

int k8s_ws_parser_feed(struct k8s_ws_parser *parser, const void *data, size_t length,
		       struct sbx_error *error)
{
	const uint8_t *bytes = data;

	while (length > 0) {
		if (parser->closed)
			return protocol_error(error, "data after the close frame");

		if (!parser->in_frame) {
			size_t take = parser->header_need - parser->header_have;

			if (take > length)
				take = length;
			memcpy(parser->header + parser->header_have, bytes, take);
			parser->header_have += take;
			bytes += take;
			length -= take;
			if (parser->header_have == 2 && check_first_bytes(parser, error) < 0)
				return -1;
			if (parser->header_have < parser->header_need)
				continue;
			if (start_payload(parser, error) < 0)
				return -1;
			if (parser->remaining > 0)
				continue;
			/* An empty frame: a control frame, or the end of a message. */
			if (parser->opcode < K8S_WS_CLOSE && parser->fin &&
			    parser->on_data(parser->userdata, parser->message_opcode, bytes, 0, 1) <
				    0)
				return sbx_error_set(error, SBX_ERROR_SYSTEM,
						     "receiving stopped");
			if (end_frame(parser, error) < 0)
				return -1;
			continue;
		}

		{
			size_t take = parser->remaining < length ? (size_t) parser->remaining : length;
			int ends = take == parser->remaining;

			if (parser->opcode >= K8S_WS_CLOSE) {
				memcpy(parser->control + parser->control_length, bytes, take);
				parser->control_length += take;
			} else if (parser->on_data(parser->userdata, parser->message_opcode, bytes,
						   take, ends && parser->fin) < 0) {
				return sbx_error_set(error, SBX_ERROR_SYSTEM,
						     "receiving stopped");
			}
			bytes += take;
			length -= take;
			parser->remaining -= take;
			if (ends && end_frame(parser, error) < 0)
				return -1;
		}
	}
	return 0;
}

/* ---- encoder ---- */

int k8s_ws_new_mask(uint8_t mask[4])
{
	return RAND_bytes(mask, 4) == 1 ? 0 : -1;
}

void k8s_ws_mask(uint8_t *data, size_t length, const uint8_t mask[4], size_t offset)
{
	uint8_t pattern[8];
	uint64_t word, mask_word;
	size_t i = 0, j;

	while (i < length && ((uintptr_t) (data + i) & 7) != 0) {
		data[i] ^= mask[(offset + i) & 3];
		i++;
	}
	/* Eight bytes at a time from here: the pattern repeats every four, so it stays in
	 * phase. */
	for (j = 0; j < 8; j++)
		pattern[j] = mask[(offset + i + j) & 3];
	memcpy(&mask_word, pattern, sizeof(mask_word));
	for (; i + 8 <= length; i += 8) {
		memcpy(&word, data + i, sizeof(word));
		word ^= mask_word;
		memcpy(data + i, &word, sizeof(word));
	}
	for (; i < length; i++)
		data[i] ^= mask[(offset + i) & 3];
}

size_t k8s_ws_encode_header(uint8_t *out, int opcode, int fin, uint64_t length,
			    const uint8_t mask[4])
{
	size_t n = 2, i;

	out[0] = (uint8_t) ((fin ? 0x80 : 0) | (opcode & 0x0f));
	if (length < 126) {
		out[1] = (uint8_t) (0x80 | length);
	} else if (length <= 0xffff) {
		out[1] = 0x80 | 126;
		out[2] = (uint8_t) (length >> 8);
		out[3] = (uint8_t) length;
		n = 4;
	} else {
		out[1] = 0x80 | 127;
		for (i = 0; i < 8; i++)
			out[2 + i] = (uint8_t) (length >> (56 - 8 * i));
		n = 10;
	}
	memcpy(out + n, mask, 4);
	return n + 4;
}

size_t k8s_ws_encode_frame(uint8_t *out, int opcode, const void *payload, size_t length)
{
	uint8_t mask[4];
	size_t header;

	if (k8s_ws_new_mask(mask) < 0)
		return 0;
	header = k8s_ws_encode_header(out, opcode, 1, length, mask);
	if (length > 0)
		memcpy(out + header, payload, length);
	k8s_ws_mask(out + header, length, mask, 0);
	return header + length;
}
