/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target for the exec channel reader and the status parser. The input is a sequence of
 * pieces: a header byte (low 6 bits: length, bit 6: final piece of the message) and the
 * piece's bytes, so messages split across receive callbacks in any way. Build with libFuzzer
 * as described in fuzz_watch.c; `make check` replays tests/fuzz/corpus/wsframe.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "error.h"
#include "k8s/wsframe.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int on_output(void *userdata, int channel, const void *bytes, size_t length)
{
	size_t *total = userdata;

	*total += length;
	/* Exercise the output failure path on a rare byte value. */
	return length > 0 && ((const uint8_t *) bytes)[0] == 0xee ? -1 : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct k8s_wsframe_reader reader;
	struct sbx_error error;
	size_t offset = 0, total = 0;
	int exit_code;
	char message[128];

	k8s_wsframe_reader_init(&reader, on_output, &total);
	while (offset < size) {
		uint8_t header = data[offset++];
		size_t length = header & 0x3f;
		int final = (header & 0x40) != 0;

		if (length > size - offset)
			length = size - offset;
		if (k8s_wsframe_feed(&reader, data + offset, length, final, &error) < 0)
			break;
		offset += length;
	}
	k8s_wsframe_reader_clear(&reader);

	/* The whole input as a status message, too. */
	(void) k8s_wsframe_parse_status((const char *) data, size, &exit_code, message,
					sizeof(message));
	return 0;
}
