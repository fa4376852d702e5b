/* SPDX-License-Identifier: MIT */
/*
 * The channel layer of pod exec over WebSocket (v4.channel.k8s.io and v5.channel.k8s.io):
 * each binary message starts with a channel byte. The frame parser (websocket.h) delivers a
 * message as payload slices of its frames and never reassembles it, so the reader keeps the
 * channel of the message in progress and accumulates the status channel until the message
 * ends. Pure functions without I/O, so they can be tested with any fragmentation.
 */
#ifndef SBX_K8S_WSFRAME_H
#define SBX_K8S_WSFRAME_H

#include <stddef.h>
#include <stdint.h>

#include "sbx/executor.h"

enum k8s_channel {
	K8S_CHANNEL_STDIN = 0,
	K8S_CHANNEL_STDOUT = 1,
	K8S_CHANNEL_STDERR = 2,
	K8S_CHANNEL_STATUS = 3, /* metav1.Status JSON, the last message of a command */
	K8S_CHANNEL_RESIZE = 4,
	K8S_CHANNEL_CLOSE = 255, /* v5 only: [255, channel] closes that channel */
};

/* The status message is small JSON; a larger one is a broken server. */
#define K8S_WSFRAME_STATUS_MAX (64u << 10)

/* Receives stdout and stderr payload pieces; returns 0, or -1 to fail the feed. */
typedef int (*k8s_wsframe_output_fn)(void *userdata, int channel, const void *data,
				     size_t length);

struct k8s_wsframe_reader {
	k8s_wsframe_output_fn output;
	void *userdata;
	int in_message; /* a message has started and its final piece has not arrived */
	int channel; /* channel of the message in progress */
	char *status; /* status channel bytes so far */
	size_t status_length;
	/* Set once a complete status message arrived. */
	int have_status;
	int exit_code; /* valid when have_status and status_ok */
	int status_ok; /* the status is Success or NonZeroExitCode */
	char status_message[512]; /* the failure's reason and message otherwise */
};

void k8s_wsframe_reader_init(struct k8s_wsframe_reader *reader, k8s_wsframe_output_fn output,
			     void *userdata);
void k8s_wsframe_reader_clear(struct k8s_wsframe_reader *reader);

/*
 * Feeds one receive callback's bytes. FINAL is non-zero when they end the message. Returns 0,
 * or -1 for a protocol error (empty message without a channel byte, an oversized or second
 * status message) or an output failure.
 */
int k8s_wsframe_feed(struct k8s_wsframe_reader *reader, const void *data, size_t length,
		     int final, struct sbx_error *error);

/*
 * Interprets the status channel's JSON. Success gives exit code 0; Failure with reason
 * NonZeroExitCode gives the code in details.causes[reason=ExitCode].message (0-255). Returns
 * 0 with *EXIT_CODE for those, -1 with MESSAGE filled for every other status (an
 * infrastructure failure, never an exit code).
 */
int k8s_wsframe_parse_status(const char *json, size_t length, int *exit_code, char *message,
			     size_t message_size);

/* Writes [CHANNEL][DATA] into OUT (1 + LENGTH bytes). */
size_t k8s_wsframe_encode(uint8_t channel, const void *data, size_t length, uint8_t *out);

#endif /* SBX_K8S_WSFRAME_H */
