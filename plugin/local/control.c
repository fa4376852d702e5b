/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "cleanup.h"
#include "control.h"
#include "error.h"
#include "util.h"

#define PROTOCOL_NAME "sbx-control"

static const struct {
	enum sbx_control_type type;
	const char *name;
} type_names[] = {
	{ SBX_CONTROL_STAGE_BEGIN, "stage-begin" },
	{ SBX_CONTROL_STAGE_END, "stage-end" },
	{ SBX_CONTROL_REPLY, "reply" },
	{ SBX_CONTROL_STAGE_RUN, "stage-run" },
	{ SBX_CONTROL_STEP_EXIT, "step-exit" },
};

static const struct {
	enum sbx_control_fd_role role;
	const char *name;
} fd_role_names[] = {
	{ SBX_CONTROL_FD_REQUEST, "request" }, { SBX_CONTROL_FD_CGROUP, "cgroup" },
	{ SBX_CONTROL_FD_STDIN, "stdin" },     { SBX_CONTROL_FD_STDOUT, "stdout" },
	{ SBX_CONTROL_FD_STDERR, "stderr" },   { SBX_CONTROL_FD_SCRIPT, "script" },
};

const char *sbx_control_type_name(enum sbx_control_type type)
{
	for (size_t i = 0; i < sizeof(type_names) / sizeof(type_names[0]); i++)
		if (type_names[i].type == type)
			return type_names[i].name;
	return NULL;
}

const char *sbx_control_fd_role_name(enum sbx_control_fd_role role)
{
	for (size_t i = 0; i < sizeof(fd_role_names) / sizeof(fd_role_names[0]); i++)
		if (fd_role_names[i].role == role)
			return fd_role_names[i].name;
	return NULL;
}

/* Adds the fields of the version 2 message types and replies to OBJECT. */
static int encode_step_fields(const struct sbx_control_message *message,
			      struct json_object *object, struct sbx_error *error)
{
	struct json_object *roles;

	if (message->type == SBX_CONTROL_REPLY && message->unsupported)
		json_object_object_add(object, "unsupported", json_object_new_boolean(1));
	if (message->type == SBX_CONTROL_REPLY && message->pid > 0)
		json_object_object_add(object, "pid", json_object_new_int(message->pid));
	if (message->type == SBX_CONTROL_STEP_EXIT) {
		if (message->signal > 0)
			json_object_object_add(object, "signal", json_object_new_int(message->signal));
		else
			json_object_object_add(object, "exit_code",
					       json_object_new_int(message->exit_code));
	}
	if (message->type != SBX_CONTROL_STAGE_RUN)
		return 0;
	if (message->fd_count > SBX_CONTROL_MAX_FDS)
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "control message lists %zu descriptors, more than %d",
				     message->fd_count, SBX_CONTROL_MAX_FDS);
	roles = json_object_new_array();
	for (size_t i = 0; roles != NULL && i < message->fd_count; i++) {
		const char *name = sbx_control_fd_role_name(message->fd_roles[i]);

		if (name == NULL) {
			json_object_put(roles);
			return sbx_error_set(error, SBX_ERROR_INVALID,
					     "control descriptor role %d is unknown",
					     (int) message->fd_roles[i]);
		}
		json_object_array_add(roles, json_object_new_string(name));
	}
	if (roles == NULL)
		return sbx_error_errno(error, ENOMEM, "cannot encode a control message");
	json_object_object_add(object, "fds", roles);
	return 0;
}

int sbx_control_encode(const struct sbx_control_message *message, char *buf, size_t size,
		       size_t *length, struct sbx_error *error)
{
	struct json_object *object = json_object_new_object();
	const char *name = sbx_control_type_name(message->type);
	const char *text;
	size_t text_length;

	if (object == NULL)
		return sbx_error_errno(error, ENOMEM, "cannot encode a control message");
	if (name == NULL) {
		json_object_put(object);
		return sbx_error_set(error, SBX_ERROR_INVALID, "control message type %d is unknown",
				     (int) message->type);
	}
	json_object_object_add(object, "protocol", json_object_new_string(PROTOCOL_NAME));
	json_object_object_add(object, "version", json_object_new_int(SBX_CONTROL_VERSION));
	json_object_object_add(object, "type", json_object_new_string(name));
	if (message->stage > 0)
		json_object_object_add(object, "stage", json_object_new_int(message->stage));
	if (message->type == SBX_CONTROL_REPLY) {
		json_object_object_add(object, "ok", json_object_new_boolean(message->ok));
		if (!message->ok)
			json_object_object_add(object, "error",
					       json_object_new_string(message->error));
	}
	if (encode_step_fields(message, object, error) < 0) {
		json_object_put(object);
		return -1;
	}

	text = json_object_to_json_string_ext(object, JSON_C_TO_STRING_PLAIN);
	text_length = strlen(text);
	if (text_length + 1 > size) {
		json_object_put(object);
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "control message of %zu bytes exceeds the limit of %zu",
				     text_length, size - 1);
	}
	memcpy(buf, text, text_length + 1);
	*length = text_length;
	json_object_put(object);
	return 0;
}

/* Reads the optional integer KEY of OBJECT within [MIN, MAX] into *VALUE; 0 when absent. */
static int decode_int(struct json_object *object, const char *key, int64_t min, int64_t max,
		      int *value, struct sbx_error *error)
{
	struct json_object *field;
	int64_t number;

	if (!json_object_object_get_ex(object, key, &field))
		return 0;
	number = json_object_get_int64(field);
	if (!json_object_is_type(field, json_type_int) || number < min || number > max)
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "control message has an invalid \"%s\"; expected an integer "
				     "from %" PRId64 " to %" PRId64,
				     key, min, max);
	*value = (int) number;
	return 0;
}

static int decode_fd_roles(struct json_object *object, struct sbx_control_message *message,
			   struct sbx_error *error)
{
	struct json_object *roles;
	size_t count;

	if (!json_object_object_get_ex(object, "fds", &roles) ||
	    !json_object_is_type(roles, json_type_array))
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "control message stage-run has no \"fds\" array");
	count = json_object_array_length(roles);
	if (count == 0 || count > SBX_CONTROL_MAX_FDS)
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "control message stage-run lists %zu descriptors; expected 1 "
				     "to %d",
				     count, SBX_CONTROL_MAX_FDS);
	for (size_t i = 0; i < count; i++) {
		const char *name = json_object_get_string(json_object_array_get_idx(roles, i));
		int found = 0;

		for (size_t k = 0; name != NULL && k < SBX_ARRAY_SIZE(fd_role_names); k++) {
			if (strcmp(fd_role_names[k].name, name) == 0) {
				message->fd_roles[i] = fd_role_names[k].role;
				found = 1;
			}
		}
		if (!found)
			return sbx_error_set(error, SBX_ERROR_INVALID,
					     "control message stage-run passes an unknown "
					     "descriptor \"%.64s\"",
					     name != NULL ? name : "(null)");
	}
	message->fd_count = count;
	return 0;
}

/* Decodes the fields that version 2 added; unknown to a version 1 reader, which skips them. */
static int decode_step_fields(struct json_object *object, struct sbx_control_message *message,
			      struct sbx_error *error)
{
	struct json_object *value;
	int has_code, has_signal;

	if (message->type == SBX_CONTROL_REPLY) {
		if (json_object_object_get_ex(object, "unsupported", &value))
			message->unsupported = json_object_get_boolean(value);
		return decode_int(object, "pid", 1, INT32_MAX, &message->pid, error);
	}
	if (message->type == SBX_CONTROL_STAGE_RUN)
		return decode_fd_roles(object, message, error);
	if (message->type != SBX_CONTROL_STEP_EXIT)
		return 0;
	has_code = json_object_object_get_ex(object, "exit_code", NULL);
	has_signal = json_object_object_get_ex(object, "signal", NULL);
	if (has_code == has_signal)
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "control message step-exit needs exactly one of \"exit_code\" "
				     "and \"signal\"");
	if (decode_int(object, "exit_code", 0, 255, &message->exit_code, error) < 0 ||
	    decode_int(object, "signal", 1, 127, &message->signal, error) < 0)
		return -1;
	return 0;
}

int sbx_control_decode(const char *buf, size_t length, struct sbx_control_message *message,
		       struct sbx_error *error)
{
	struct sbx_control_message decoded;
	struct json_tokener *tokener;
	struct json_object *object, *value;
	const char *type;
	int64_t number;
	int found = 0;

	memset(&decoded, 0, sizeof(decoded));
	if (length == 0 || length >= SBX_CONTROL_MESSAGE_MAX)
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "control message of %zu bytes is empty or too long", length);
	tokener = json_tokener_new();
	if (tokener == NULL)
		return sbx_error_errno(error, ENOMEM, "cannot decode a control message");
	object = json_tokener_parse_ex(tokener, buf, (int) length);
	if (object == NULL || json_tokener_get_parse_end(tokener) != length) {
		json_tokener_free(tokener);
		json_object_put(object);
		return sbx_error_set(error, SBX_ERROR_INVALID, "control message is not one JSON value");
	}
	json_tokener_free(tokener);

	if (!json_object_is_type(object, json_type_object) ||
	    !json_object_object_get_ex(object, "protocol", &value) ||
	    !json_object_is_type(value, json_type_string) ||
	    strcmp(json_object_get_string(value), PROTOCOL_NAME) != 0) {
		json_object_put(object);
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "control message lacks \"protocol\": \"" PROTOCOL_NAME "\"");
	}
	if (!json_object_object_get_ex(object, "version", &value) ||
	    !json_object_is_type(value, json_type_int) || json_object_get_int64(value) < 1 ||
	    json_object_get_int64(value) > 1000000) {
		json_object_put(object);
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "control message has no valid \"version\"");
	}
	decoded.version = (int) json_object_get_int64(value);
	if (!json_object_object_get_ex(object, "type", &value) ||
	    !json_object_is_type(value, json_type_string)) {
		json_object_put(object);
		return sbx_error_set(error, SBX_ERROR_INVALID, "control message has no \"type\"");
	}
	type = json_object_get_string(value);
	for (size_t i = 0; i < sizeof(type_names) / sizeof(type_names[0]); i++) {
		if (strcmp(type_names[i].name, type) == 0) {
			decoded.type = type_names[i].type;
			found = 1;
		}
	}
	if (!found) {
		sbx_error_set(error, SBX_ERROR_INVALID, "control message type \"%.64s\" is unknown",
			      type);
		json_object_put(object);
		return -1;
	}

	if (json_object_object_get_ex(object, "stage", &value)) {
		number = json_object_get_int64(value);
		if (!json_object_is_type(value, json_type_int) || number < 1 || number > 1000000) {
			json_object_put(object);
			return sbx_error_set(error, SBX_ERROR_INVALID,
					     "control message has an invalid \"stage\"");
		}
		decoded.stage = (int) number;
	}
	if (decoded.type == SBX_CONTROL_REPLY) {
		if (!json_object_object_get_ex(object, "ok", &value) ||
		    !json_object_is_type(value, json_type_boolean)) {
			json_object_put(object);
			return sbx_error_set(error, SBX_ERROR_INVALID,
					     "control reply has no boolean \"ok\"");
		}
		decoded.ok = json_object_get_boolean(value);
		if (json_object_object_get_ex(object, "error", &value))
			snprintf(decoded.error, sizeof(decoded.error), "%s",
				 json_object_get_string(value));
	}
	if (decode_step_fields(object, &decoded, error) < 0) {
		json_object_put(object);
		return -1;
	}
	json_object_put(object);
	*message = decoded;
	return 0;
}

static int fill_address(const char *path, struct sockaddr_un *address, struct sbx_error *error)
{
	memset(address, 0, sizeof(*address));
	address->sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(address->sun_path))
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "control socket path %s is longer than %zu bytes; use a shorter "
				     "state_dir",
				     path, sizeof(address->sun_path) - 1);
	memcpy(address->sun_path, path, strlen(path) + 1);
	return 0;
}

int sbx_control_listen(const char *path, struct sbx_error *error)
{
	struct sockaddr_un address;
	_cleanup_close_ int fd = -1;
	mode_t old_mask;
	int rc;

	if (fill_address(path, &address, error) < 0)
		return -1;
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return sbx_error_errno(error, errno, "cannot create control socket %s", path);
	if (unlink(path) < 0 && errno != ENOENT)
		return sbx_error_errno(error, errno, "cannot remove stale control socket %s", path);
	/* bind() creates the socket file with the umask applied: only the owner may connect. */
	old_mask = umask(0077);
	rc = bind(fd, (struct sockaddr *) &address, sizeof(address));
	umask(old_mask);
	if (rc < 0)
		return sbx_error_errno(error, errno, "cannot bind control socket %s", path);
	if (listen(fd, 16) < 0)
		return sbx_error_errno(error, errno, "cannot listen on control socket %s", path);
	return steal_fd(&fd);
}

int sbx_control_connect(const char *path, struct sbx_error *error)
{
	struct sockaddr_un address;
	_cleanup_close_ int fd = -1;

	if (fill_address(path, &address, error) < 0)
		return -1;
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return sbx_error_errno(error, errno, "cannot create a socket for %s", path);
	while (connect(fd, (struct sockaddr *) &address, sizeof(address)) < 0) {
		if (errno == EINTR)
			continue;
		return sbx_error_errno(error, errno,
				       "cannot connect to the sandbox's init at %s; the sandbox is "
				       "gone or broken, destroy it and prepare a new one",
				       path);
	}
	return steal_fd(&fd);
}

int sbx_control_send(int fd, const struct sbx_control_message *message, int pass_fd,
		     struct sbx_error *error)
{
	return sbx_control_send_fds(fd, message, &pass_fd, pass_fd >= 0 ? 1 : 0, error);
}

int sbx_control_send_fds(int fd, const struct sbx_control_message *message, const int *fds,
			 size_t count, struct sbx_error *error)
{
	char buf[SBX_CONTROL_MESSAGE_MAX];
	union {
		char buf[CMSG_SPACE(sizeof(int) * SBX_CONTROL_MAX_FDS)];
		struct cmsghdr align;
	} control;
	struct iovec iov;
	struct msghdr header;
	size_t length;
	ssize_t n;

	if (count > SBX_CONTROL_MAX_FDS)
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "cannot pass %zu descriptors in one control message; the "
				     "limit is %d",
				     count, SBX_CONTROL_MAX_FDS);
	if (sbx_control_encode(message, buf, sizeof(buf), &length, error) < 0)
		return -1;
	memset(&header, 0, sizeof(header));
	iov.iov_base = buf;
	iov.iov_len = length;
	header.msg_iov = &iov;
	header.msg_iovlen = 1;
	if (count > 0) {
		struct cmsghdr *cmsg;

		memset(&control, 0, sizeof(control));
		header.msg_control = control.buf;
		header.msg_controllen = CMSG_SPACE(sizeof(int) * count);
		cmsg = CMSG_FIRSTHDR(&header);
		cmsg->cmsg_level = SOL_SOCKET;
		cmsg->cmsg_type = SCM_RIGHTS;
		cmsg->cmsg_len = CMSG_LEN(sizeof(int) * count);
		memcpy(CMSG_DATA(cmsg), fds, sizeof(int) * count);
	}
	do
		n = sendmsg(fd, &header, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return sbx_error_errno(error, errno, "cannot send control message %s",
				       sbx_control_type_name(message->type));
	return 0;
}

static void close_fds(int *fds, size_t count)
{
	for (size_t i = 0; i < count; i++)
		if (fds[i] >= 0)
			close(fds[i]);
}

/* Takes the descriptors of every SCM_RIGHTS message in HEADER: the first MAX into FDS, the
 * rest closed, because a descriptor that no caller keeps would leak. */
static size_t take_fds(struct msghdr *header, int *fds, size_t max)
{
	size_t taken = 0;

	for (struct cmsghdr *cmsg = CMSG_FIRSTHDR(header); cmsg != NULL;
	     cmsg = CMSG_NXTHDR(header, cmsg)) {
		int passed[SBX_CONTROL_MAX_FDS];
		size_t count;

		if (cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS ||
		    cmsg->cmsg_len < CMSG_LEN(sizeof(int)))
			continue;
		count = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		if (count > SBX_CONTROL_MAX_FDS)
			count = SBX_CONTROL_MAX_FDS;
		memcpy(passed, CMSG_DATA(cmsg), count * sizeof(int));
		for (size_t i = 0; i < count; i++) {
			if (taken < max)
				fds[taken++] = passed[i];
			else
				close(passed[i]);
		}
	}
	return taken;
}

int sbx_control_receive(int fd, struct sbx_control_message *message, int *received_fd,
			int timeout_ms, struct sbx_error *error)
{
	int passed = -1;
	size_t count = 0;

	if (sbx_control_receive_fds(fd, message, &passed, received_fd != NULL ? 1 : 0, &count,
				    timeout_ms, error) < 0)
		return -1;
	if (received_fd != NULL)
		*received_fd = count > 0 ? passed : -1;
	return 0;
}

int sbx_control_receive_fds(int fd, struct sbx_control_message *message, int *fds, size_t max,
			    size_t *count, int timeout_ms, struct sbx_error *error)
{
	char buf[SBX_CONTROL_MESSAGE_MAX];
	union {
		char buf[CMSG_SPACE(sizeof(int) * SBX_CONTROL_MAX_FDS)];
		struct cmsghdr align;
	} control;
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	struct iovec iov = { .iov_base = buf, .iov_len = sizeof(buf) - 1 };
	struct msghdr header;
	int passed[SBX_CONTROL_MAX_FDS];
	size_t taken;
	ssize_t n;
	int rc;

	if (max > SBX_CONTROL_MAX_FDS)
		max = SBX_CONTROL_MAX_FDS;
	do
		rc = poll(&pfd, 1, timeout_ms);
	while (rc < 0 && errno == EINTR);
	if (rc < 0)
		return sbx_error_errno(error, errno, "cannot wait for a control message");
	if (rc == 0)
		return sbx_error_set(error, SBX_ERROR_SYSTEM,
				     "the sandbox's init did not answer within %d ms", timeout_ms);

	memset(&header, 0, sizeof(header));
	header.msg_iov = &iov;
	header.msg_iovlen = 1;
	header.msg_control = control.buf;
	header.msg_controllen = sizeof(control.buf);
	do
		n = recvmsg(fd, &header, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return sbx_error_errno(error, errno, "cannot receive a control message");
	taken = take_fds(&header, passed, max);
	if (n == 0) {
		close_fds(passed, taken);
		return sbx_error_set(error, SBX_ERROR_SYSTEM,
				     "the sandbox's init closed the control connection");
	}
	if (header.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
		close_fds(passed, taken);
		return sbx_error_set(error, SBX_ERROR_INVALID, "control message was truncated");
	}
	buf[n] = '\0';
	if (sbx_control_decode(buf, (size_t) n, message, error) < 0) {
		close_fds(passed, taken);
		return -1;
	}
	memcpy(fds, passed, taken * sizeof(int));
	*count = taken;
	return 0;
}
