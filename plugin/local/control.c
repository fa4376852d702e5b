/* SPDX-License-Identifier: MIT */
#include <errno.h>
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

#define PROTOCOL_NAME "sbx-control"

static const struct {
	enum sbx_control_type type;
	const char *name;
} type_names[] = {
	{ SBX_CONTROL_STAGE_BEGIN, "stage-begin" },
	{ SBX_CONTROL_STAGE_END, "stage-end" },
	{ SBX_CONTROL_REPLY, "reply" },
};

const char *sbx_control_type_name(enum sbx_control_type type)
{
	for (size_t i = 0; i < sizeof(type_names) / sizeof(type_names[0]); i++)
		if (type_names[i].type == type)
			return type_names[i].name;
	return NULL;
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
	char buf[SBX_CONTROL_MESSAGE_MAX];
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} control;
	struct iovec iov;
	struct msghdr header;
	size_t length;
	ssize_t n;

	if (sbx_control_encode(message, buf, sizeof(buf), &length, error) < 0)
		return -1;
	memset(&header, 0, sizeof(header));
	iov.iov_base = buf;
	iov.iov_len = length;
	header.msg_iov = &iov;
	header.msg_iovlen = 1;
	if (pass_fd >= 0) {
		struct cmsghdr *cmsg;

		memset(&control, 0, sizeof(control));
		header.msg_control = control.buf;
		header.msg_controllen = sizeof(control.buf);
		cmsg = CMSG_FIRSTHDR(&header);
		cmsg->cmsg_level = SOL_SOCKET;
		cmsg->cmsg_type = SCM_RIGHTS;
		cmsg->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(cmsg), &pass_fd, sizeof(int));
	}
	do
		n = sendmsg(fd, &header, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return sbx_error_errno(error, errno, "cannot send control message %s",
				       sbx_control_type_name(message->type));
	return 0;
}

int sbx_control_receive(int fd, struct sbx_control_message *message, int *received_fd,
			int timeout_ms, struct sbx_error *error)
{
	char buf[SBX_CONTROL_MESSAGE_MAX];
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} control;
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	struct iovec iov = { .iov_base = buf, .iov_len = sizeof(buf) - 1 };
	struct msghdr header;
	struct cmsghdr *cmsg;
	_cleanup_close_ int passed = -1;
	ssize_t n;
	int rc;

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
	for (cmsg = CMSG_FIRSTHDR(&header); cmsg != NULL; cmsg = CMSG_NXTHDR(&header, cmsg)) {
		if (cmsg->cmsg_level == SOL_SOCKET && cmsg->cmsg_type == SCM_RIGHTS &&
		    cmsg->cmsg_len >= CMSG_LEN(sizeof(int))) {
			int fds[4];
			size_t count = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);

			if (count > 4)
				count = 4;
			memcpy(fds, CMSG_DATA(cmsg), count * sizeof(int));
			for (size_t i = 0; i < count; i++) {
				if (passed < 0)
					passed = fds[i];
				else
					close(fds[i]);
			}
		}
	}
	if (n == 0)
		return sbx_error_set(error, SBX_ERROR_SYSTEM,
				     "the sandbox's init closed the control connection");
	if (header.msg_flags & (MSG_TRUNC | MSG_CTRUNC))
		return sbx_error_set(error, SBX_ERROR_INVALID, "control message was truncated");
	buf[n] = '\0';
	if (sbx_control_decode(buf, (size_t) n, message, error) < 0)
		return -1;
	if (received_fd != NULL)
		*received_fd = steal_fd(&passed);
	return 0;
}
