/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target for the WebSocket client module: the handshake response parser, then the frame
 * parser on whatever follows the response head, then the frame parser on the whole input.
 * The first input byte sets the chunk size (1-64 bytes), so both parsers see their input
 * split at arbitrary points. Build with libFuzzer as described in fuzz_watch.c; `make check`
 * replays tests/fuzz/corpus/websocket.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "error.h"
#include "k8s/websocket.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct totals {
	size_t data;
	size_t control;
};

static int on_data(void *userdata, int opcode, const void *bytes, size_t length, int final)
{
	struct totals *totals = userdata;

	totals->data += length;
	/* Exercise the callback failure path on a rare byte value. */
	return length > 0 && ((const uint8_t *) bytes)[0] == 0xee ? -1 : 0;
}

static int on_control(void *userdata, int opcode, const void *bytes, size_t length)
{
	struct totals *totals = userdata;

	totals->control += length;
	return 0;
}

/* Feeds DATA to the frame parser CHUNK bytes at a time until it fails. */
static void feed_frames(const uint8_t *data, size_t size, size_t chunk)
{
	struct k8s_ws_parser parser;
	struct sbx_error error;
	struct totals totals = { 0, 0 };
	size_t offset;

	k8s_ws_parser_init(&parser, on_data, on_control, &totals);
	for (offset = 0; offset < size; offset += chunk) {
		size_t length = size - offset < chunk ? size - offset : chunk;

		if (k8s_ws_parser_feed(&parser, data + offset, length, &error) < 0)
			break;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct k8s_ws_response response;
	struct sbx_error error;
	size_t chunk, offset = 0;

	if (size == 0)
		return 0;
	chunk = (size_t) (data[0] & 0x3f) + 1;
	data++;
	size--;

	k8s_ws_response_init(&response);
	while (offset < size && !response.complete) {
		size_t length = size - offset < chunk ? size - offset : chunk;
		size_t consumed = 0;

		if (k8s_ws_response_feed(&response, data + offset, length, &consumed, &error) < 0) {
			offset = size;
			break;
		}
		offset += consumed;
	}
	if (response.complete) {
		(void) k8s_ws_response_check(&response, "dGhlIHNhbXBsZSBub25jZQ==",
					     "v5.channel.k8s.io, v4.channel.k8s.io", &error);
		feed_frames(data + offset, size - offset, chunk);
	}
	k8s_ws_response_clear(&response);

	feed_frames(data, size, chunk);
	return 0;
}
