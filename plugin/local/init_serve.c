/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <signal.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "control.h"
#include "init_serve.h"
#include "util.h"

struct connection {
	int fd;
	/* Stage number while the peer is between stage-begin and stage-end, else 0. */
	int stage;
};

static void reap_children(void)
{
	int status;

	while (waitpid(-1, &status, WNOHANG) > 0)
		;
}

/*
 * Kills every process of the job except the init. kill(-1) from PID 1 of a pid namespace
 * reaches exactly the processes of that namespace (and of nested ones), never the host's.
 */
static void kill_stage_processes(void)
{
	kill(-1, SIGKILL);
}

static void reply(int fd, int ok, int stage, const char *error_text, int pass_fd)
{
	struct sbx_control_message message;

	memset(&message, 0, sizeof(message));
	message.type = SBX_CONTROL_REPLY;
	message.ok = ok;
	message.stage = stage;
	if (error_text != NULL)
		snprintf(message.error, sizeof(message.error), "%.200s", error_text);
	/* A peer that vanished is noticed by the next poll. */
	sbx_control_send(fd, &message, pass_fd, NULL);
}

/* Handles one message on CONNECTION; returns -1 when the connection is over. */
static int handle_message(struct connection *connection, int proxy_fd, int *stage_counter)
{
	struct sbx_control_message message;
	struct sbx_error error;

	memset(&error, 0, sizeof(error));
	if (sbx_control_receive(connection->fd, &message, NULL, 0, &error) < 0) {
		if (error.error_class == SBX_ERROR_INVALID) {
			reply(connection->fd, 0, 0, error.message, -1);
			return 0;
		}
		return -1;
	}

	switch (message.type) {
	case SBX_CONTROL_STAGE_BEGIN:
		if (connection->stage != 0) {
			reply(connection->fd, 0, connection->stage,
			      "a stage is already running on this connection", -1);
			return 0;
		}
		connection->stage = ++*stage_counter;
		reply(connection->fd, 1, connection->stage, NULL, proxy_fd);
		return 0;
	case SBX_CONTROL_STAGE_END:
		connection->stage = 0;
		reply(connection->fd, 1, message.stage, NULL, -1);
		return 0;
	case SBX_CONTROL_REPLY:
		break;
	}
	reply(connection->fd, 0, 0, "the init accepts only stage-begin and stage-end", -1);
	return 0;
}

static void close_connection(struct connection *connections, size_t *count, size_t index)
{
	/* A stage whose process died without stage-end (e.g. SIGKILL) leaves its step running:
	 * stop it at once, the sandbox stays for the next stage and for cleanup. */
	if (connections[index].stage != 0)
		kill_stage_processes();
	close(connections[index].fd);
	connections[index] = connections[--*count];
}

int sbx_init_serve(int control_fd, int proxy_fd, int64_t deadline)
{
	struct connection connections[SBX_INIT_MAX_CONNECTIONS];
	struct pollfd fds[2 + SBX_INIT_MAX_CONNECTIONS];
	size_t count = 0;
	int stage_counter = 0;
	sigset_t mask;
	int signal_fd;

	/* PID 1 of a namespace gets only signals it handles; a blocked SIGCHLD read through a
	 * signalfd counts as handled. */
	sigemptyset(&mask);
	sigaddset(&mask, SIGCHLD);
	if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
		return 1;
	signal_fd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	if (signal_fd < 0)
		return 1;
	reap_children();

	for (;;) {
		int64_t left_ms = (deadline - sbx_now()) * 1000;
		int rc;

		if (left_ms <= 0)
			return 0;
		fds[0] = (struct pollfd){ .fd = signal_fd, .events = POLLIN };
		fds[1] = (struct pollfd){ .fd = control_fd, .events = POLLIN };
		for (size_t i = 0; i < count; i++)
			fds[2 + i] = (struct pollfd){ .fd = connections[i].fd, .events = POLLIN };
		rc = poll(fds, 2 + count, left_ms > 60000 ? 60000 : (int) left_ms);
		if (rc < 0 && errno != EINTR)
			return 1;
		if (rc <= 0)
			continue;

		if (fds[0].revents & POLLIN) {
			struct signalfd_siginfo info;

			while (read(signal_fd, &info, sizeof(info)) > 0)
				;
			reap_children();
		}
		/* Walk backwards: closing moves the last connection into the freed slot. */
		for (size_t i = count; i-- > 0;) {
			short revents = fds[2 + i].revents;

			if (revents & POLLIN) {
				if (handle_message(&connections[i], proxy_fd, &stage_counter) < 0)
					close_connection(connections, &count, i);
			} else if (revents & (POLLHUP | POLLERR | POLLNVAL)) {
				close_connection(connections, &count, i);
			}
		}
		if (fds[1].revents & POLLIN) {
			int fd = accept4(control_fd, NULL, NULL, SOCK_CLOEXEC);

			if (fd >= 0 && count < SBX_INIT_MAX_CONNECTIONS)
				connections[count++] = (struct connection){ .fd = fd };
			else if (fd >= 0)
				close(fd);
		}
	}
}
