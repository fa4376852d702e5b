/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target for the watch event parser. The first input byte picks the chunk sizes, the
 * rest is the stream, so chunk boundaries fall everywhere. Build with libFuzzer:
 *   clang -fsanitize=fuzzer,address -Iplugin/include -Iplugin/common -Iplugin/agent-sandbox \
 *     tests/fuzz/fuzz_watch.c build/libsbxk8s.a build/libsbxcommon.a -ljson-c ...
 * `make check` replays the corpus in tests/fuzz/corpus/watch through tests/fuzz/replay.c.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <json-c/json.h>

#include "error.h"
#include "k8s/watch.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int on_event(void *userdata, const char *type, struct json_object *object,
		    struct sbx_error *error)
{
	size_t *total = userdata;

	*total += strlen(json_object_to_json_string(object));
	if (strcmp(type, "STOP") == 0)
		return 1;
	if (strcmp(type, "FAIL") == 0)
		return sbx_error_set(error, SBX_ERROR_SYSTEM, "failure requested by the input");
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct k8s_watch_parser parser;
	struct sbx_error error;
	size_t total = 0, offset = 1, step;
	uint8_t seed;

	if (size == 0)
		return 0;
	seed = data[0];
	/* A small line limit makes the overflow path reachable. */
	k8s_watch_parser_init(&parser, 512, on_event, &total);
	while (offset < size) {
		step = (size_t) (seed % 37) + 1;
		seed = (uint8_t) (seed * 31 + 7);
		if (step > size - offset)
			step = size - offset;
		if (k8s_watch_parser_feed(&parser, (const char *) data + offset, step, &error) != 0)
			break;
		offset += step;
	}
	(void) k8s_watch_parser_pending(&parser);
	k8s_watch_parser_clear(&parser);
	return 0;
}
