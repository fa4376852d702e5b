/* SPDX-License-Identifier: MIT */
/*
 * The egress proxy's relay: moves the bytes of one admitted connection in both directions,
 * through one buffer per direction. After poll() reports a socket, the relay reads and sends
 * until the kernel would block, and only then polls again.
 */
#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proxy_internal.h"

/*
 * Bytes buffered per direction. Large buffers mean fewer reads, sends and polls, and the relay
 * is CPU-bound. Measured with 256 MiB downloads over loopback on a 2-core VM (direct: 1400-3000
 * MiB/s): 16 KiB buffers relayed about 35% as fast as direct, 256 KiB about 1150 MiB/s, 1 MiB
 * 1500-1700 MiB/s. splice() through a 1 MiB pipe took half the CPU time but reached only
 * 1300-1500 MiB/s. A buffer exists only while its connection is relayed, and its pages count
 * towards the resident set only once data has passed through them. At most CONNECTION_MAX
 * connections (proxy.c) hold two buffers each.
 */
#define RELAY_BUFFER_SIZE (1024 * 1024)
/* Reads and sends per direction between two poll() calls, so that a direction whose peers
 * never block cannot keep the relay from the other direction and from noticing a stop. */
#define PUMP_ROUNDS_MAX 64

_Static_assert(RELAY_BUFFER_SIZE >= HEADER_MAX, "the client's early bytes fit the buffer");

/* Streams bytes between two sockets in one direction. */
struct relay_direction {
	int from;
	int to;
	/* RELAY_BUFFER_SIZE bytes of their own mapping, so that free() cannot keep them in the
	 * heap after the connection ends. */
	char *buffer;
	size_t start;
	size_t end;
	/* No more input: the peer closed, or the body the framer tracks is complete. */
	bool input_done;
	/* Forward the peer's EOF with shutdown(SHUT_WR) once the buffer is empty. */
	bool half_close;
	bool shut_down;
	struct body_framer *framer;
};

/* Maps a failed recv() or send() to 1 (retry), 0 (would block) or -1 (the relay must end). */
static int relay_errno_status(void)
{
	if (errno == EINTR)
		return 1;
	return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
}

static bool relay_wants_input(const struct relay_direction *direction)
{
	return !direction->input_done && direction->end < RELAY_BUFFER_SIZE;
}

/* Reads once into DIRECTION's buffer. Returns 1 after progress, 0 when it would block, -1 when
 * the relay must end. */
static int relay_read(struct relay_direction *direction)
{
	ssize_t n = recv(direction->from, direction->buffer + direction->end,
			 RELAY_BUFFER_SIZE - direction->end, 0);

	if (n < 0)
		return relay_errno_status();
	if (n == 0) {
		direction->input_done = true;
		direction->half_close = true;
		return 1;
	}
	if (direction->framer != NULL) {
		char *data = direction->buffer + direction->end;
		ssize_t body = sbx_proxy_framer_feed(direction->framer, data, (size_t) n);

		if (body < 0)
			return -1;
		/* Bytes after the body would be a second request: they are dropped. */
		n = body;
		if (direction->framer->done)
			direction->input_done = true;
	}
	direction->end += (size_t) n;
	return 1;
}

/* Sends once from DIRECTION's buffer. Returns as relay_read(). */
static int relay_write(struct relay_direction *direction)
{
	ssize_t n = send(direction->to, direction->buffer + direction->start,
			 direction->end - direction->start, MSG_NOSIGNAL);

	if (n < 0)
		return relay_errno_status();
	direction->start += (size_t) n;
	if (direction->start == direction->end)
		direction->start = direction->end = 0;
	return 1;
}

/*
 * Reads and sends DIRECTION's data until neither makes progress (or for PUMP_ROUNDS_MAX
 * rounds), so that one poll() is followed by as much work as the socket buffers allow.
 * Returns 0, or -1 when the relay must end.
 */
static int relay_pump(struct relay_direction *direction)
{
	bool read_blocked = false, write_blocked = false;

	for (int round = 0; round < PUMP_ROUNDS_MAX && (!read_blocked || !write_blocked); round++) {
		int status;

		if (!write_blocked) {
			status = direction->start != direction->end ? relay_write(direction) : 0;
			if (status < 0)
				return -1;
			write_blocked = status == 0;
			/* Room in the buffer lets a blocked read try again. */
			if (status > 0)
				read_blocked = false;
		}
		if (!read_blocked) {
			status = relay_wants_input(direction) ? relay_read(direction) : 0;
			if (status < 0)
				return -1;
			read_blocked = status == 0;
			if (status > 0)
				write_blocked = false;
		}
	}
	return 0;
}

/* True once DIRECTION has nothing more to forward; forwards a half-close on the way. */
static bool relay_finished(struct relay_direction *direction)
{
	if (!direction->input_done || direction->start != direction->end)
		return false;
	if (direction->half_close && !direction->shut_down) {
		shutdown(direction->to, SHUT_WR);
		direction->shut_down = true;
	}
	return true;
}

/*
 * Relays both directions until both are finished, either side fails, or the proxy stops. Each
 * socket is polled only for what is wanted from it, so a peer that hung up cannot make poll()
 * return at once in a loop.
 */
static enum relay_result relay(int stop_fd, struct relay_direction *up,
			       struct relay_direction *down)
{
	for (;;) {
		struct relay_direction *directions[2] = { up, down };
		struct pollfd fds[3];
		bool up_finished = relay_finished(up);
		bool down_finished = relay_finished(down);
		int i, n;

		if (up_finished && down_finished)
			return RELAY_DONE;

		fds[0] = (struct pollfd){ .fd = up->from, .events = 0 };
		fds[1] = (struct pollfd){ .fd = up->to, .events = 0 };
		fds[2] = (struct pollfd){ .fd = stop_fd, .events = POLLIN };
		for (i = 0; i < 2; i++) {
			struct relay_direction *direction = directions[i];
			struct pollfd *from = i == 0 ? &fds[0] : &fds[1];
			struct pollfd *to = i == 0 ? &fds[1] : &fds[0];

			if (relay_wants_input(direction))
				from->events |= POLLIN;
			if (direction->start != direction->end)
				to->events |= POLLOUT;
		}
		for (i = 0; i < 2; i++) {
			if (fds[i].events == 0)
				fds[i].fd = -1;
		}

		n = poll(fds, 3, -1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return RELAY_FAILED;
		if (fds[2].revents != 0)
			return RELAY_STOPPED;

		for (i = 0; i < 2; i++) {
			short from_events = i == 0 ? fds[0].revents : fds[1].revents;
			short to_events = i == 0 ? fds[1].revents : fds[0].revents;

			if (((from_events & (POLLIN | POLLHUP | POLLERR)) ||
			     (to_events & (POLLOUT | POLLHUP | POLLERR))) &&
			    relay_pump(directions[i]) < 0)
				return RELAY_FAILED;
		}
	}
}

static char *relay_buffer_new(void)
{
	void *buffer = mmap(NULL, RELAY_BUFFER_SIZE, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	return buffer == MAP_FAILED ? NULL : buffer;
}

static void relay_buffer_free(char *buffer)
{
	if (buffer != NULL)
		munmap(buffer, RELAY_BUFFER_SIZE);
}

enum relay_result sbx_proxy_relay(int stop_fd, int client_fd, int upstream_fd,
				  const char *initial, size_t initial_length,
				  struct body_framer *framer)
{
	struct relay_direction up = { .from = client_fd, .to = upstream_fd, .framer = framer };
	struct relay_direction down = { .from = upstream_fd, .to = client_fd };
	enum relay_result result = RELAY_FAILED;

	up.buffer = relay_buffer_new();
	down.buffer = relay_buffer_new();
	if (up.buffer == NULL || down.buffer == NULL)
		goto out;

	if (framer != NULL && framer->done) {
		up.input_done = true;
		initial_length = 0;
	}
	if (initial_length > 0) {
		ssize_t body = (ssize_t) initial_length;

		if (framer != NULL) {
			body = sbx_proxy_framer_feed(framer, initial, initial_length);
			if (body < 0)
				goto out;
			up.input_done = framer->done;
		}
		memcpy(up.buffer, initial, (size_t) body);
		up.end = (size_t) body;
	}
	result = relay(stop_fd, &up, &down);
out:
	relay_buffer_free(up.buffer);
	relay_buffer_free(down.buffer);
	return result;
}
