/* SPDX-License-Identifier: MIT */
/*
 * The job init's control protocol. The init listens on jobs/<id>/control.sock (SOCK_SEQPACKET,
 * so one datagram is one message); each message is a JSON object with "protocol": "sbx-control",
 * a "version" and a "type". A stage sends "stage-begin" and gets a reply with the stage number
 * and, as SCM_RIGHTS, the egress proxy's listening socket; it sends "stage-end" when its step is
 * over. A connection that closes after "stage-begin" without "stage-end" means the stage's
 * process died, and the init then kills every process in the sandbox except itself.
 *
 * Version 2 adds "stage-run": after stage-begin, sbx passes the step's request (a sealed memfd
 * with its argv, environment, working directory and ids), its standard streams, the script's
 * memfd and a descriptor of the stage's cgroup2 leaf, and the init forks the step straight into
 * that leaf (clone3 with CLONE_INTO_CGROUP), so no process migrates between cgroups. The reply
 * carries the step's pid; a "step-exit" message with its exit code or signal follows when the
 * init reaps it. An init that cannot do this replies with "unsupported": true.
 *
 * Compatibility: fields and types are only ever added. A reader takes messages of any version
 * >= 1 and ignores fields it does not know. The init runs the code of the sbx that prepared the
 * job, so after an sbx upgrade between two stages the init may be older than the stage's sbx:
 * sbx sends stage-run only to an init whose stage-begin reply has version 2 or later, and
 * otherwise (or after "unsupported") starts the step itself by joining the init's namespaces.
 * An older sbx never sends stage-run, and a newer init still serves that path.
 */
#ifndef SBX_LOCAL_CONTROL_H
#define SBX_LOCAL_CONTROL_H

#include <stddef.h>

#include "sbx/executor.h"

#define SBX_CONTROL_VERSION 2
/* First version whose init understands stage-run. */
#define SBX_CONTROL_VERSION_STAGE_RUN 2
#define SBX_CONTROL_MESSAGE_MAX 4096
/* Most descriptors one message carries (stage-run passes six). */
#define SBX_CONTROL_MAX_FDS 8
/* Name of the socket inside the job directory. */
#define SBX_CONTROL_SOCKET_NAME "control.sock"

enum sbx_control_type {
	SBX_CONTROL_STAGE_BEGIN = 1,
	SBX_CONTROL_STAGE_END = 2,
	SBX_CONTROL_REPLY = 3,
	SBX_CONTROL_STAGE_RUN = 4,
	SBX_CONTROL_STEP_EXIT = 5,
};

/* Role of each descriptor passed with stage-run; the message lists them in passing order. */
enum sbx_control_fd_role {
	SBX_CONTROL_FD_REQUEST = 1, /* sealed memfd with the step's request (stage_request.h) */
	SBX_CONTROL_FD_CGROUP = 2, /* directory of the stage's cgroup2 leaf */
	SBX_CONTROL_FD_STDIN = 3, /* absent: the step reads /dev/null */
	SBX_CONTROL_FD_STDOUT = 4,
	SBX_CONTROL_FD_STDERR = 5,
	SBX_CONTROL_FD_SCRIPT = 6, /* sealed memfd with the script; absent for an argv step */
};

struct sbx_control_message {
	int version;
	enum sbx_control_type type;
	/* Stage number: assigned by the init in the reply to stage-begin, sent with stage-end. */
	int stage;
	/* Replies: non-zero on success, else ERROR describes the failure. */
	int ok;
	char error[256];
	/* Reply to stage-run: the init cannot start steps itself; use the joining path. */
	int unsupported;
	/* Reply to stage-run: the step's pid in the job's pid namespace. */
	int pid;
	/* step-exit: the exit code when SIGNAL is 0, else the signal that killed the step. */
	int exit_code;
	int signal;
	/* stage-run: the roles of the passed descriptors, in order. */
	enum sbx_control_fd_role fd_roles[SBX_CONTROL_MAX_FDS];
	size_t fd_count;
};

const char *sbx_control_type_name(enum sbx_control_type type);
const char *sbx_control_fd_role_name(enum sbx_control_fd_role role);

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
/* Sends MESSAGE with the COUNT descriptors FDS (at most SBX_CONTROL_MAX_FDS). */
int sbx_control_send_fds(int fd, const struct sbx_control_message *message, const int *fds,
			 size_t count, struct sbx_error *error);
/*
 * Receives one message within TIMEOUT_MS like sbx_control_receive(), storing up to MAX passed
 * descriptors (close-on-exec) in FDS and their number in *COUNT; any beyond MAX are closed.
 */
int sbx_control_receive_fds(int fd, struct sbx_control_message *message, int *fds, size_t max,
			    size_t *count, int timeout_ms, struct sbx_error *error);
/*
 * Receives one message within TIMEOUT_MS (< 0: no limit). A descriptor that came with it is
 * stored in *RECEIVED_FD (close-on-exec) when RECEIVED_FD is not NULL, else closed. A closed
 * connection fails with SBX_ERROR_SYSTEM.
 */
int sbx_control_receive(int fd, struct sbx_control_message *message, int *received_fd,
			int timeout_ms, struct sbx_error *error);

#endif /* SBX_LOCAL_CONTROL_H */
