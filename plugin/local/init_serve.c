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
#include "init_stage.h"
#include "init_serve.h"
#include "util.h"

struct connection {
	int fd;
	/* Stage number while the peer is between stage-begin and stage-end, else 0. */
	int stage;
	/* The step this init started for the stage (stage-run) until it is reaped, else 0. */
	pid_t step;
};

/* Reaps every child that ended, and reports the end of a step to the stage that ran it. */
static void reap_children(struct connection *connections, size_t count)
{
	pid_t pid;
	int status;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		for (size_t i = 0; i < count; i++) {
			if (connections[i].step != pid)
				continue;
			sbx_init_stage_report_exit(connections[i].fd, connections[i].stage, status);
			connections[i].step = 0;
		}
	}
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

static void close_fds(int *fds, size_t count)
{
	for (size_t i = 0; i < count; i++)
		close(fds[i]);
}

/* Starts the step of stage-run MESSAGE, which passed FDS; replies and closes FDS. */
static void run_step(struct connection *connection, const struct sbx_control_message *message,
		     int *fds, size_t count)
{
	if (connection->stage == 0 || message->stage != connection->stage) {
		close_fds(fds, count);
		reply(connection->fd, 0, connection->stage,
		      "stage-run names no stage begun on this connection", -1);
		return;
	}
	if (connection->step != 0) {
		close_fds(fds, count);
		reply(connection->fd, 0, connection->stage, "the stage's step already runs", -1);
		return;
	}
	connection->step = sbx_init_stage_run(connection->fd, connection->stage, message, fds,
					      count);
}

/* Handles one message on CONNECTION; returns -1 when the connection is over. */
static int handle_message(struct connection *connection, int proxy_fd, int *stage_counter)
{
	struct sbx_control_message message;
	struct sbx_error error;
	int fds[SBX_CONTROL_MAX_FDS];
	size_t count = 0;

	memset(&error, 0, sizeof(error));
	if (sbx_control_receive_fds(connection->fd, &message, fds, SBX_CONTROL_MAX_FDS, &count, 0,
				    &error) < 0) {
		if (error.error_class == SBX_ERROR_INVALID) {
			reply(connection->fd, 0, 0, error.message, -1);
			return 0;
		}
		return -1;
	}
	if (message.type == SBX_CONTROL_STAGE_RUN) {
		run_step(connection, &message, fds, count);
		return 0;
	}
	close_fds(fds, count);

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
		/* exec killed the stage's leaf before stage-end: a step not yet reaped is reaped
		 * without a report. */
		connection->stage = 0;
		connection->step = 0;
		reply(connection->fd, 1, message.stage, NULL, -1);
		return 0;
	case SBX_CONTROL_REPLY:
	case SBX_CONTROL_STAGE_RUN:
	case SBX_CONTROL_STEP_EXIT:
		break;
	}
	reply(connection->fd, 0, 0, "the init accepts only stage-begin, stage-run and stage-end",
	      -1);
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
	reap_children(connections, count);

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
			reap_children(connections, count);
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
