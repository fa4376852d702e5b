/* SPDX-License-Identifier: MIT */
/*
 * SIGTERM and SIGINT become a readable descriptor (a self-pipe), which the plugin watches as
 * the exec spec's cancel_fd. Every program the plugin starts gets the default actions back,
 * because execve() resets caught signals. An ignored signal would stay ignored, so SIGPIPE
 * gets an empty handler rather than SIG_IGN.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "shim.h"

static int cancel_pipe[2] = { -1, -1 };
static volatile sig_atomic_t first_signal;

static void on_cancel_signal(int signo)
{
	int saved = errno;

	if (first_signal == 0)
		first_signal = signo;
	/* The pipe is non-blocking: once it contains a byte, further signals add nothing. */
	if (write(cancel_pipe[1], "x", 1) < 0) {
		/* EAGAIN: the pipe is already readable. */
	}
	errno = saved;
}

/* A write to a closed pipe then fails with EPIPE instead of killing sbx with a signal, which
 * the runner would report as an unknown exit code. */
static void on_sigpipe(int signo)
{
}

int sbx_signals_install(struct sbx_error *error)
{
	struct sigaction action;

	if (cancel_pipe[0] >= 0)
		return 0;
	if (pipe2(cancel_pipe, O_CLOEXEC | O_NONBLOCK) < 0)
		return sbx_error_errno(error, errno, "cannot create the signal pipe");

	memset(&action, 0, sizeof(action));
	sigemptyset(&action.sa_mask);
	action.sa_flags = SA_RESTART;
	action.sa_handler = on_cancel_signal;
	if (sigaction(SIGTERM, &action, NULL) < 0 || sigaction(SIGINT, &action, NULL) < 0)
		return sbx_error_errno(error, errno, "cannot install the SIGTERM handler");
	action.sa_handler = on_sigpipe;
	if (sigaction(SIGPIPE, &action, NULL) < 0)
		return sbx_error_errno(error, errno, "cannot install the SIGPIPE handler");
	return 0;
}

int sbx_signals_cancel_fd(void)
{
	return cancel_pipe[0];
}

int sbx_signals_received(void)
{
	return first_signal;
}

void sbx_signals_reset_in_child(void)
{
	signal(SIGTERM, SIG_DFL);
	signal(SIGINT, SIG_DFL);
}

const char *sbx_signal_name(int signo)
{
	switch (signo) {
	case SIGTERM:
		return "SIGTERM";
	case SIGINT:
		return "SIGINT";
	case 0:
		return "a signal";
	}
	return strsignal(signo);
}
