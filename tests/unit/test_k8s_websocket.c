/* SPDX-License-Identifier: MIT */
/* The WebSocket client module: handshake, frame parser and encoder, fed with every split. */
#include <check.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "error.h"
#include "k8s/websocket.h"

#define OFFERED "v5.channel.k8s.io, v4.channel.k8s.io"
/* The example key and accept value of RFC 6455 section 1.3. */
#define RFC_KEY "dGhlIHNhbXBsZSBub25jZQ=="
#define RFC_ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

/* ---- handshake ---- */

static char *response_text(const char *accept, const char *upgrade, const char *protocol)
{
	char *text = NULL;

	ck_assert_int_ge(asprintf(&text,
				  "HTTP/1.1 101 Switching Protocols\r\n"
				  "%s"
				  "cOnNeCtIoN: keep-alive, Upgrade\r\n"
				  "Sec-WebSocket-Accept: %s\r\n"
				  "sec-websocket-protocol:   %s  \r\n"
				  "\r\n",
				  upgrade, accept, protocol),
			 0);
	return text;
}

/* Feeds TEXT in two pieces split at CUT. Returns 0 once the head is complete. */
static int feed_split(const char *text, size_t cut, struct k8s_ws_response *response,
		      size_t *first_data, struct sbx_error *error)
{
	size_t length = strlen(text), consumed = 0, total = 0;

	k8s_ws_response_init(response);
	if (k8s_ws_response_feed(response, text, cut, &consumed, error) < 0)
		return -1;
	total = consumed;
	if (!response->complete) {
		if (k8s_ws_response_feed(response, text + cut, length - cut, &consumed, error) < 0)
			return -1;
		total += consumed;
	}
	*first_data = total;
	return response->complete ? 0 : 1;
}

START_TEST(test_accept_rfc_example)
{
	char accept[64];

	k8s_ws_accept_for_key(RFC_KEY, accept);
	ck_assert_str_eq(accept, RFC_ACCEPT);
}
END_TEST

START_TEST(test_response_good_every_split)
{
	_cleanup_free_ char *head = response_text(RFC_ACCEPT, "Upgrade: WebSocket\r\n",
						  "v4.channel.k8s.io");
	_cleanup_free_ char *text = NULL;
	size_t head_length = strlen(head), cut;

	/* Frame bytes follow the head in the same read. */
	ck_assert_int_ge(asprintf(&text, "%s\x82\x01\x01", head), 0);
	for (cut = 0; cut <= strlen(text); cut++) {
		struct k8s_ws_response response;
		struct sbx_error error;
		size_t first_data = 0;

		sbx_error_clear(&error);
		ck_assert_msg(feed_split(text, cut, &response, &first_data, &error) == 0,
			      "cut %zu: %s", cut, error.message);
		ck_assert_uint_eq(first_data, head_length);
		ck_assert_int_eq(response.status_code, 101);
		ck_assert_str_eq(response.reason, "Switching Protocols");
		ck_assert_str_eq(response.protocol, "v4.channel.k8s.io");
		ck_assert_int_eq(k8s_ws_response_check(&response, RFC_KEY, OFFERED, &error), 0);
		k8s_ws_response_clear(&response);
	}
}
END_TEST

START_TEST(test_response_bad_accept)
{
	_cleanup_free_ char *text = response_text("AAAAPLMBiTxaQ9kYGzzhZRbK+xOo=",
						  "Upgrade: websocket\r\n", "v5.channel.k8s.io");
	struct k8s_ws_response response;
	struct sbx_error error;
	size_t first_data;

	ck_assert_int_eq(feed_split(text, 5, &response, &first_data, &error), 0);
	ck_assert_int_eq(k8s_ws_response_check(&response, RFC_KEY, OFFERED, &error), -1);
	ck_assert_ptr_nonnull(strstr(error.message, "Sec-WebSocket-Accept"));
	k8s_ws_response_clear(&response);
}
END_TEST

START_TEST(test_response_missing_upgrade)
{
	_cleanup_free_ char *text = response_text(RFC_ACCEPT, "", "v5.channel.k8s.io");
	struct k8s_ws_response response;
	struct sbx_error error;
	size_t first_data;

	ck_assert_int_eq(feed_split(text, 0, &response, &first_data, &error), 0);
	ck_assert_int_eq(k8s_ws_response_check(&response, RFC_KEY, OFFERED, &error), -1);
	ck_assert_ptr_nonnull(strstr(error.message, "Upgrade: websocket"));
	k8s_ws_response_clear(&response);
}
END_TEST

START_TEST(test_response_unoffered_protocol)
{
	static const char *const protocols[] = { "channel.k8s.io", "v5.channel.k8s.io, v4.channel.k8s.io",
						 "", "v5.channel" };
	size_t i;

	for (i = 0; i < sizeof(protocols) / sizeof(protocols[0]); i++) {
		_cleanup_free_ char *text = response_text(RFC_ACCEPT, "Upgrade: websocket\r\n",
							  protocols[i]);
		struct k8s_ws_response response;
		struct sbx_error error;
		size_t first_data;

		ck_assert_int_eq(feed_split(text, 0, &response, &first_data, &error), 0);
		ck_assert_msg(k8s_ws_response_check(&response, RFC_KEY, OFFERED, &error) == -1,
			      "protocol \"%s\" accepted", protocols[i]);
		ck_assert_ptr_nonnull(strstr(error.message, "subprotocol"));
		k8s_ws_response_clear(&response);
	}
}
END_TEST

START_TEST(test_response_refused_upgrade)
{
	const char *text = "HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\n"
			   "Content-Length: 17\r\n\r\n{\"kind\":\"Status\"}";
	struct k8s_ws_response response;
	struct sbx_error error;
	size_t consumed;

	k8s_ws_response_init(&response);
	ck_assert_int_eq(k8s_ws_response_feed(&response, text, strlen(text), &consumed, &error), 0);
	ck_assert(response.complete);
	ck_assert_int_eq(response.status_code, 403);
	ck_assert_str_eq(response.reason, "Forbidden");
	ck_assert_int_eq(response.content_length, 17);
	ck_assert_str_eq(response.content_type, "application/json");
	ck_assert_str_eq(text + consumed, "{\"kind\":\"Status\"}");
	ck_assert_int_eq(k8s_ws_response_check(&response, RFC_KEY, OFFERED, &error), -1);
	k8s_ws_response_clear(&response);
}
END_TEST

START_TEST(test_response_garbage_and_oversized)
{
	struct k8s_ws_response response;
	struct sbx_error error;
	size_t consumed, sent = 0;
	char filler[4096];
	int ret = 0;

	k8s_ws_response_init(&response);
	ck_assert_int_eq(k8s_ws_response_feed(&response, "SSH-2.0-x\r\n\r\n", 13, &consumed,
					      &error),
			 -1);
	ck_assert_ptr_nonnull(strstr(error.message, "status line"));
	k8s_ws_response_clear(&response);

	/* A head that never ends is cut off at the bound. */
	memset(filler, 'x', sizeof(filler));
	k8s_ws_response_init(&response);
	ret = k8s_ws_response_feed(&response, "HTTP/1.1 101 OK\r\nX: ", 20, &consumed, &error);
	while (ret == 0 && sent <= K8S_WS_RESPONSE_HEAD_MAX) {
		ret = k8s_ws_response_feed(&response, filler, sizeof(filler), &consumed, &error);
		sent += sizeof(filler);
	}
	ck_assert_int_eq(ret, -1);
	ck_assert_ptr_nonnull(strstr(error.message, "longer than"));
	k8s_ws_response_clear(&response);
}
END_TEST

START_TEST(test_request_headers)
{
	struct k8s_ws_request request = {
		.path = "/api/v1/namespaces/ns/pods/p/exec?command=true",
		.host = "[::1]:6443",
		.key = RFC_KEY,
		.protocols = OFFERED,
		.authorization = "Bearer secret",
	};
	_cleanup_free_ char *text = NULL;
	struct sbx_error error;
	size_t length;
	char key[K8S_WS_KEY_LENGTH + 1], other[K8S_WS_KEY_LENGTH + 1];

	ck_assert_int_eq(k8s_ws_build_request(&request, 1 << 20, &text, &length, &error), 0);
	ck_assert_uint_eq(length, strlen(text));
	ck_assert(strncmp(text, "GET /api/v1/namespaces/ns/pods/p/exec?command=true HTTP/1.1\r\n",
			  61) == 0);
	ck_assert_ptr_nonnull(strstr(text, "\r\nHost: [::1]:6443\r\n"));
	ck_assert_ptr_nonnull(strstr(text, "\r\nUpgrade: websocket\r\n"));
	ck_assert_ptr_nonnull(strstr(text, "\r\nConnection: Upgrade\r\n"));
	ck_assert_ptr_nonnull(strstr(text, "\r\nSec-WebSocket-Key: " RFC_KEY "\r\n"));
	ck_assert_ptr_nonnull(strstr(text, "\r\nSec-WebSocket-Version: 13\r\n"));
	ck_assert_ptr_nonnull(strstr(text, "\r\nSec-WebSocket-Protocol: " OFFERED "\r\n"));
	ck_assert_ptr_nonnull(strstr(text, "\r\nAuthorization: Bearer secret\r\n"));
	ck_assert(length >= 4 && strcmp(text + length - 4, "\r\n\r\n") == 0);

	/* Over the bound, and a line break in a value: both rejected. */
	ck_assert_int_eq(k8s_ws_build_request(&request, length - 1, &text, &length, &error), -1);
	ck_assert_int_eq(error.error_class, SBX_ERROR_INVALID);
	ck_assert_ptr_nonnull(strstr(error.message, "stdin"));
	request.authorization = "Bearer a\r\nX-Injected: 1";
	ck_assert_int_eq(k8s_ws_build_request(&request, 1 << 20, &text, &length, &error), -1);

	ck_assert_int_eq(k8s_ws_make_key(key, &error), 0);
	ck_assert_int_eq(k8s_ws_make_key(other, &error), 0);
	ck_assert_uint_eq(strlen(key), K8S_WS_KEY_LENGTH);
	ck_assert_str_eq(key + 22, "==");
	ck_assert_str_ne(key, other);
}
END_TEST

/* ---- frame parser ---- */

struct events {
	char log[8192];
	size_t log_length;
	unsigned char payload[100000];
	size_t payload_length;
	int fail_data;
};

static void log_event(struct events *events, const char *format, ...)
	__attribute__((format(printf, 2, 3)));

static void log_event(struct events *events, const char *format, ...)
{
	va_list args;
	int n;

	va_start(args, format);
	n = vsnprintf(events->log + events->log_length, sizeof(events->log) - events->log_length,
		      format, args);
	va_end(args);
	ck_assert_int_ge(n, 0);
	events->log_length += (size_t) n;
	ck_assert_uint_lt(events->log_length, sizeof(events->log));
}

static int on_data(void *userdata, int opcode, const void *data, size_t length, int final)
{
	struct events *events = userdata;

	if (events->fail_data)
		return -1;
	ck_assert_uint_le(events->payload_length + length, sizeof(events->payload));
	memcpy(events->payload + events->payload_length, data, length);
	events->payload_length += length;
	/* Slices are not logged one by one: the split changes them. Message ends are. */
	if (final)
		log_event(events, "message %d len %zu;", opcode, events->payload_length);
	return 0;
}

static int on_control(void *userdata, int opcode, const void *data, size_t length)
{
	struct events *events = userdata;

	log_event(events, "control %d \"%.*s\";", opcode, (int) length, (const char *) data);
	return 0;
}

/* Appends an unmasked server frame with a payload of LENGTH bytes (pattern i % 251). */
static size_t server_frame(unsigned char *out, int first_byte, uint64_t length,
			   int length_form, const void *payload)
{
	size_t n = 0, i;

	out[n++] = (unsigned char) first_byte;
	if (length_form == 7) {
		out[n++] = (unsigned char) length;
	} else if (length_form == 16) {
		out[n++] = 126;
		out[n++] = (unsigned char) (length >> 8);
		out[n++] = (unsigned char) length;
	} else {
		out[n++] = 127;
		for (i = 0; i < 8; i++)
			out[n++] = (unsigned char) (length >> (56 - 8 * i));
	}
	for (i = 0; i < length; i++)
		out[n + i] = payload != NULL ? ((const unsigned char *) payload)[i]
					     : (unsigned char) (i % 251);
	return n + (size_t) length;
}

/* A fragmented binary message (16-bit length, then a ping, then a 64-bit continuation and an
 * empty final one), a small text message and a close with a code and a reason. */
static size_t build_sequence(unsigned char *out)
{
	size_t n = 0;

	n += server_frame(out + n, 0x02, 300, 16, NULL);
	n += server_frame(out + n, 0x89, 4, 7, "ping");
	/* A 64-bit length form for a short payload: unusual but valid. */
	n += server_frame(out + n, 0x00, 500, 64, NULL);
	n += server_frame(out + n, 0x80, 0, 7, NULL);
	n += server_frame(out + n, 0x81, 2, 7, "hi");
	n += server_frame(out + n, 0x88, 6, 7, "\x03\xe8" "done");
	return n;
}

static void check_sequence(struct k8s_ws_parser *parser, struct events *events)
{
	size_t i;

	ck_assert_str_eq(events->log, "control 9 \"ping\";message 2 len 800;"
				      "message 1 len 802;control 8 \"\x03\xe8" "done\";");
	for (i = 0; i < 300; i++)
		ck_assert_uint_eq(events->payload[i], i % 251);
	for (i = 0; i < 500; i++)
		ck_assert_uint_eq(events->payload[300 + i], i % 251);
	ck_assert(parser->closed);
	ck_assert_int_eq(parser->close_code, 1000);
	ck_assert_str_eq(parser->close_reason, "done");
}

START_TEST(test_parser_every_split)
{
	static unsigned char stream[2048];
	size_t length = build_sequence(stream), cut;

	/* Every cut point; the byte-by-byte test covers many small pieces. */
	for (cut = 0; cut <= length; cut++) {
		static struct events events;
		struct k8s_ws_parser parser;
		struct sbx_error error;

		memset(&events, 0, sizeof(events));
		k8s_ws_parser_init(&parser, on_data, on_control, &events);
		ck_assert_msg(k8s_ws_parser_feed(&parser, stream, cut, &error) == 0, "cut %zu: %s",
			      cut, error.message);
		ck_assert_msg(k8s_ws_parser_feed(&parser, stream + cut, length - cut, &error) == 0,
			      "cut %zu: %s", cut, error.message);
		check_sequence(&parser, &events);
	}
}
END_TEST

START_TEST(test_parser_byte_by_byte)
{
	static unsigned char stream[2048];
	static struct events events;
	size_t length = build_sequence(stream), i;
	struct k8s_ws_parser parser;
	struct sbx_error error;

	memset(&events, 0, sizeof(events));
	k8s_ws_parser_init(&parser, on_data, on_control, &events);
	for (i = 0; i < length; i++)
		ck_assert_int_eq(k8s_ws_parser_feed(&parser, stream + i, 1, &error), 0);
	check_sequence(&parser, &events);
}
END_TEST

START_TEST(test_parser_large_frame)
{
	static unsigned char stream[80000];
	static struct events events;
	size_t length = server_frame(stream, 0x82, 70000, 64, NULL), offset, i;
	struct k8s_ws_parser parser;
	struct sbx_error error;

	memset(&events, 0, sizeof(events));
	k8s_ws_parser_init(&parser, on_data, on_control, &events);
	for (offset = 0; offset < length; offset += 4093) {
		size_t piece = length - offset < 4093 ? length - offset : 4093;

		ck_assert_int_eq(k8s_ws_parser_feed(&parser, stream + offset, piece, &error), 0);
	}
	ck_assert_str_eq(events.log, "message 2 len 70000;");
	for (i = 0; i < 70000; i++)
		ck_assert_uint_eq(events.payload[i], i % 251);
}
END_TEST

static const struct bad_frame {
	const char *name;
	unsigned char bytes[16];
	size_t length;
	const char *message_part;
} bad_frames[] = {
	{ "masked", { 0x82, 0x81, 1, 2, 3, 4, 5 }, 7, "masked" },
	{ "rsv1", { 0xc2, 0x00 }, 2, "reserved bits" },
	{ "rsv3", { 0x92, 0x00 }, 2, "reserved bits" },
	{ "long ping", { 0x89, 126, 0, 126 }, 4, "longer than 125" },
	{ "fragmented ping", { 0x09, 0x00 }, 2, "fragmented control" },
	{ "bare continuation", { 0x80, 0x00 }, 2, "continuation frame without" },
	{ "message inside message", { 0x02, 0x00, 0x82, 0x00 }, 4, "new message" },
	{ "unknown opcode", { 0x83, 0x00 }, 2, "unknown opcode" },
	{ "top length bit", { 0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0 }, 10, "top bit" },
	{ "short close", { 0x88, 0x01, 0x03 }, 3, "1-byte" },
	{ "data after close", { 0x88, 0x00, 0x82, 0x00 }, 4, "after the close" },
};

START_TEST(test_parser_rejects)
{
	const struct bad_frame *bad = &bad_frames[_i];
	static struct events events;
	struct k8s_ws_parser parser;
	struct sbx_error error;
	size_t i;
	int ret = 0;

	memset(&events, 0, sizeof(events));
	sbx_error_clear(&error);
	k8s_ws_parser_init(&parser, on_data, on_control, &events);
	/* Byte by byte, so the checks cannot depend on seeing the whole header at once. */
	for (i = 0; i < bad->length && ret == 0; i++)
		ret = k8s_ws_parser_feed(&parser, bad->bytes + i, 1, &error);
	ck_assert_msg(ret == -1, "%s accepted", bad->name);
	ck_assert_msg(strstr(error.message, bad->message_part) != NULL, "%s: %s", bad->name,
		      error.message);
}
END_TEST

START_TEST(test_parser_callback_failure)
{
	static struct events events;
	unsigned char frame[8] = { 0x82, 0x02, 'o', 'k' };
	struct k8s_ws_parser parser;
	struct sbx_error error;

	memset(&events, 0, sizeof(events));
	events.fail_data = 1;
	k8s_ws_parser_init(&parser, on_data, on_control, &events);
	ck_assert_int_eq(k8s_ws_parser_feed(&parser, frame, 4, &error), -1);
}
END_TEST

/* ---- encoder ---- */

/* Decodes a client frame: checks the mask bit and unmasks into OUT. */
static size_t decode_client_frame(const unsigned char *frame, size_t length, int *opcode,
				  unsigned char *out)
{
	size_t n = 2, i;
	uint64_t payload = frame[1] & 0x7f;
	const unsigned char *mask;

	ck_assert_uint_eq(frame[0] & 0xf0, 0x80);
	ck_assert_uint_eq(frame[1] & 0x80, 0x80);
	*opcode = frame[0] & 0x0f;
	if (payload == 126) {
		payload = (uint64_t) frame[2] << 8 | frame[3];
		n = 4;
	} else if (payload == 127) {
		payload = 0;
		for (i = 0; i < 8; i++)
			payload = payload << 8 | frame[2 + i];
		n = 10;
	}
	mask = frame + n;
	n += 4;
	ck_assert_uint_eq(n + payload, length);
	for (i = 0; i < payload; i++)
		out[i] = frame[n + i] ^ mask[i % 4];
	return (size_t) payload;
}

START_TEST(test_encoder_round_trip)
{
	static const size_t sizes[] = { 0, 1, 7, 125, 126, 1000, 65535, 65536, 100001 };
	static unsigned char payload[100001], frame[100001 + K8S_WS_HEADER_MAX],
		decoded[100001];
	size_t i, s;

	for (i = 0; i < sizeof(payload); i++)
		payload[i] = (unsigned char) (i * 7 + 3);
	for (s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
		int opcode = -1;
		size_t length = k8s_ws_encode_frame(frame, K8S_WS_BINARY, payload, sizes[s]);
		/* 2 bytes, the extended length (0, 2 or 8 bytes) and the 4-byte mask. */
		size_t header = 6;

		if (sizes[s] > 65535)
			header = 14;
		else if (sizes[s] >= 126)
			header = 8;

		ck_assert_uint_eq(length, header + sizes[s]);
		ck_assert_uint_eq(decode_client_frame(frame, length, &opcode, decoded), sizes[s]);
		ck_assert_int_eq(opcode, K8S_WS_BINARY);
		ck_assert_msg(memcmp(decoded, payload, sizes[s]) == 0, "size %zu", sizes[s]);
	}
}
END_TEST

START_TEST(test_mask_offsets_and_alignment)
{
	static const uint8_t mask[4] = { 0x12, 0x34, 0x56, 0x78 };
	unsigned char data[96], expected[96];
	size_t start, length, offset, i;

	/* Every start alignment, length and mask phase against the byte-wise definition. */
	for (start = 0; start < 8; start++)
		for (length = 0; length + start <= sizeof(data); length += 5)
			for (offset = 0; offset < 4; offset++) {
				for (i = 0; i < sizeof(data); i++)
					data[i] = expected[i] = (unsigned char) (i * 13);
				for (i = 0; i < length; i++)
					expected[start + i] ^= mask[(offset + i) % 4];
				k8s_ws_mask(data + start, length, mask, offset);
				ck_assert_msg(memcmp(data, expected, sizeof(data)) == 0,
					      "start %zu length %zu offset %zu", start, length,
					      offset);
			}
}
END_TEST

START_TEST(test_encoder_fresh_masks)
{
	unsigned char first[K8S_WS_HEADER_MAX + 4], second[K8S_WS_HEADER_MAX + 4];

	ck_assert_uint_eq(k8s_ws_encode_frame(first, K8S_WS_PING, "abcd", 4), 10);
	ck_assert_uint_eq(k8s_ws_encode_frame(second, K8S_WS_PING, "abcd", 4), 10);
	/* 2^-32 chance of a false failure. */
	ck_assert(memcmp(first + 2, second + 2, 4) != 0);
}
END_TEST

int main(void)
{
	Suite *suite = suite_create("k8s_websocket");
	TCase *tc = tcase_create("websocket");
	SRunner *runner;
	int failed;

	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_accept_rfc_example);
	tcase_add_test(tc, test_response_good_every_split);
	tcase_add_test(tc, test_response_bad_accept);
	tcase_add_test(tc, test_response_missing_upgrade);
	tcase_add_test(tc, test_response_unoffered_protocol);
	tcase_add_test(tc, test_response_refused_upgrade);
	tcase_add_test(tc, test_response_garbage_and_oversized);
	tcase_add_test(tc, test_request_headers);
	tcase_add_test(tc, test_parser_every_split);
	tcase_add_test(tc, test_parser_byte_by_byte);
	tcase_add_test(tc, test_parser_large_frame);
	tcase_add_loop_test(tc, test_parser_rejects, 0,
			    (int) (sizeof(bad_frames) / sizeof(bad_frames[0])));
	tcase_add_test(tc, test_parser_callback_failure);
	tcase_add_test(tc, test_encoder_round_trip);
	tcase_add_test(tc, test_mask_offsets_and_alignment);
	tcase_add_test(tc, test_encoder_fresh_masks);
	suite_add_tcase(suite, tc);
	runner = srunner_create(suite);
	srunner_run_all(runner, CK_NORMAL);
	failed = srunner_ntests_failed(runner);
	srunner_free(runner);
	return failed == 0 ? 0 : 1;
}
