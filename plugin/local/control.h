/* SPDX-License-Identifier: MIT */
/*
 * The job init's control protocol. The init listens on jobs/<id>/control.sock (SOCK_SEQPACKET,
 * so one datagram is one message); each message is a JSON object with "protocol": "sbx-control",
 * a "version" and a "type". A stage sends "stage-begin" and gets a reply with the stage number
 * and, as SCM_RIGHTS, the egress proxy's listening socket; it sends "stage-end" when its step is
 * over. A connection that closes after "stage-begin" without "stage-end" means the stage's
 * process died, and the init then kills every process in the sandbox except itself.
 *
 * Compatibility: fields are only ever added. A reader takes messages of any version >= 1 and
 * ignores fields it does not know, so an sbx upgrade between two stages of a job keeps working.
 */
#ifndef SBX_LOCAL_CONTROL_H
#define SBX_LOCAL_CONTROL_H

#include <stddef.h>

#include "sbx/executor.h"

#define SBX_CONTROL_VERSION 1
#define SBX_CONTROL_MESSAGE_MAX 4096
/* Name of the socket inside the job directory. */
#define SBX_CONTROL_SOCKET_NAME "control.sock"

enum sbx_control_type {
	SBX_CONTROL_STAGE_BEGIN = 1,
	SBX_CONTROL_STAGE_END = 2,
	SBX_CONTROL_REPLY = 3,
};

struct sbx_control_message {
	int version;
	enum sbx_control_type type;
	/* Stage number: assigned by the init in the reply to stage-begin, sent with stage-end. */
	int stage;
	/* Replies: non-zero on success, else ERROR says why. */
	int ok;
	char error[256];
};

const char *sbx_control_type_name(enum sbx_control_type type);

/* Encodes MESSAGE as JSON into BUF; *LENGTH excludes the NUL. */
int sbx_control_encode(const struct sbx_control_message *message, char *buf, size_t size,
		       size_t *length, struct sbx_error *error);
/* Decodes one message; SBX_ERROR_INVALID names what is wrong. */
int sbx_control_decode(const char *buf, size_t length, struct sbx_control_message *message,
		       struct sbx_error *error);

/* Creates the listening socket at PATH (mode 0600), replacing a stale socket file. */
int sbx_control_listen(const char *path, struct sbx_error *error);
/* Connects to the init's socket at PATH. */
int sbx_control_connect(const char *path, struct sbx_error *error);

/* Sends MESSAGE, with PASS_FD attached when it is >= 0. */
int sbx_control_send(int fd, const struct sbx_control_message *message, int pass_fd,
		     struct sbx_error *error);
/*
 * Receives one message within TIMEOUT_MS (< 0: no limit). A descriptor that came with it is
 * stored in *RECEIVED_FD (close-on-exec) when RECEIVED_FD is not NULL, else closed. A closed
 * connection fails with SBX_ERROR_SYSTEM.
 */
int sbx_control_receive(int fd, struct sbx_control_message *message, int *received_fd,
			int timeout_ms, struct sbx_error *error);

#endif /* SBX_LOCAL_CONTROL_H */
