/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "util.h"

#include "exec_io.h"

/* How often blocked pump threads look at their stop flags. */
#define POLL_SLICE_MS 200

struct k8s_output_chunk {
	struct k8s_output_chunk *next;
	int channel;
	size_t length;
	size_t offset;
	size_t capacity;
	unsigned char data[];
};

/*
 * Written chunks are kept for reuse, up to the queue's MAX bytes in all. Output arrives one
 * TLS record (up to 16 KiB) at a time, and a malloc() and free() for each made the heap grow
 * and shrink, with a page fault for every new page.
 */
#define CHUNK_CAPACITY_MIN (20u << 10)

/* Called with the lock held. */
static struct k8s_output_chunk *chunk_get(struct k8s_output_queue *queue, size_t length)
{
	struct k8s_output_chunk **link = &queue->spare;
	struct k8s_output_chunk *chunk;
	size_t capacity = length > CHUNK_CAPACITY_MIN ? length : CHUNK_CAPACITY_MIN;

	for (chunk = *link; chunk != NULL; link = &chunk->next, chunk = *link) {
		if (chunk->capacity >= length) {
			*link = chunk->next;
			queue->spare_bytes -= chunk->capacity;
			return chunk;
		}
	}
	chunk = malloc(sizeof(*chunk) + capacity);
	if (chunk != NULL)
		chunk->capacity = capacity;
	return chunk;
}

/* Called with the lock held. */
static void chunk_put(struct k8s_output_queue *queue, struct k8s_output_chunk *chunk)
{
	if (queue->spare_bytes + chunk->capacity > queue->max) {
		free(chunk);
		return;
	}
	chunk->next = queue->spare;
	queue->spare = chunk;
	queue->spare_bytes += chunk->capacity;
}

/* Writes all of CHUNK to FD without blocking longer than one poll slice at a time, so an
 * abort is seen even when the reader of FD never reads. */
static int write_chunk(struct k8s_output_queue *queue, int fd, const unsigned char *data,
		       size_t length)
{
	struct stat st;
	size_t piece_max = 65536;

	/* A pipe reported writable has room for at least one page, so writes of that size do
	 * not block. Regular files and sockets take larger writes. */
	if (fstat(fd, &st) == 0 && S_ISFIFO(st.st_mode))
		piece_max = 4096;
	while (length > 0) {
		struct pollfd pfd = { .fd = fd, .events = POLLOUT };
		size_t piece = length < piece_max ? length : piece_max;
		ssize_t n;
		int aborted;

		pthread_mutex_lock(&queue->lock);
		aborted = queue->aborted;
		pthread_mutex_unlock(&queue->lock);
		if (aborted)
			return 0;
		n = poll(&pfd, 1, POLL_SLICE_MS);
		if (n < 0 && errno != EINTR)
			return -1;
		if (n <= 0)
			continue;
		n = write(fd, data, piece);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n < 0)
			return -1;
		data += n;
		length -= (size_t) n;
	}
	return 0;
}

static void *output_thread(void *arg)
{
	struct k8s_output_queue *queue = arg;
	sigset_t pipe_signal;

	/* A closed reader must give EPIPE, not kill the host with SIGPIPE. The signal is
	 * directed at this thread and dropped when it exits. */
	sigemptyset(&pipe_signal);
	sigaddset(&pipe_signal, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &pipe_signal, NULL);

	pthread_mutex_lock(&queue->lock);
	for (;;) {
		struct k8s_output_chunk *chunk;
		int fd, wake = 0;

		while (queue->head == NULL && !queue->closing && !queue->aborted) {
			queue->writer_waiting = 1;
			pthread_cond_wait(&queue->changed, &queue->lock);
			queue->writer_waiting = 0;
		}
		if (queue->aborted || queue->head == NULL)
			break;
		chunk = queue->head;
		fd = queue->fds[chunk->channel];
		pthread_mutex_unlock(&queue->lock);

		if (fd >= 0 && !queue->failed &&
		    write_chunk(queue, fd, chunk->data, chunk->length) < 0) {
			pthread_mutex_lock(&queue->lock);
			queue->failed = 1;
			queue->errnum = errno;
			queue->failed_channel = chunk->channel;
			pthread_mutex_unlock(&queue->lock);
		}

		pthread_mutex_lock(&queue->lock);
		queue->head = chunk->next;
		if (queue->head == NULL)
			queue->tail = NULL;
		queue->queued -= chunk->length;
		queue->written[chunk->channel] += chunk->length;
		if (queue->paused && queue->queued <= queue->max / 4)
			wake = 1;
		if (queue->failed)
			wake = 1;
		/* Only a blocked push() or finish() waits for the writer's progress. */
		if (queue->others_waiting > 0)
			pthread_cond_broadcast(&queue->changed);
		chunk_put(queue, chunk);
		/* Called under the lock, so k8s_output_queue_detach() guarantees no wake-up is
		 * running once it returns; the wake-up only writes to an eventfd. */
		if (wake && queue->wake != NULL)
			queue->wake(queue->wake_userdata);
	}
	pthread_mutex_unlock(&queue->lock);
	return NULL;
}

int k8s_output_queue_start(struct k8s_output_queue *queue, int stdout_fd, int stderr_fd,
			   size_t max, k8s_wake_fn wake, void *wake_userdata,
			   struct sbx_error *error)
{
	int ret;

	memset(queue, 0, sizeof(*queue));
	pthread_mutex_init(&queue->lock, NULL);
	pthread_cond_init(&queue->changed, NULL);
	queue->fds[0] = -1;
	queue->fds[1] = stdout_fd;
	queue->fds[2] = stderr_fd;
	queue->max = max;
	queue->wake = wake;
	queue->wake_userdata = wake_userdata;
	ret = pthread_create(&queue->thread, NULL, output_thread, queue);
	if (ret != 0)
		return sbx_error_errno(error, ret, "exec: cannot start the output thread");
	queue->started = 1;
	return 0;
}

int k8s_output_queue_push(struct k8s_output_queue *queue, int channel, const void *data,
			  size_t length)
{
	struct k8s_output_chunk *chunk;

	if (channel != 1 && channel != 2)
		return 0;

	pthread_mutex_lock(&queue->lock);
	/* The hard bound: wait for the writer rather than grow past MAX. */
	while (queue->queued > 0 && queue->queued + length > queue->max && !queue->failed &&
	       !queue->aborted) {
		pthread_cond_broadcast(&queue->changed);
		queue->others_waiting++;
		pthread_cond_wait(&queue->changed, &queue->lock);
		queue->others_waiting--;
	}
	if (queue->failed || queue->aborted) {
		pthread_mutex_unlock(&queue->lock);
		return -1;
	}
	/* Under the lock: the copy of one record takes about a microsecond. */
	chunk = chunk_get(queue, length);
	if (chunk == NULL) {
		pthread_mutex_unlock(&queue->lock);
		return -1;
	}
	chunk->next = NULL;
	chunk->channel = channel;
	chunk->length = length;
	chunk->offset = 0;
	memcpy(chunk->data, data, length);
	if (queue->tail != NULL)
		queue->tail->next = chunk;
	else
		queue->head = chunk;
	queue->tail = chunk;
	queue->queued += length;
	if (queue->queued > queue->peak)
		queue->peak = queue->queued;
	/* The event loop calls k8s_output_queue_flush() before it waits, so one wake-up of the
	 * writer covers every piece of a turn. Waking it for each TLS record (16 KiB) cost a
	 * context switch per record. Past a quarter of MAX the writer starts at once. */
	if (queue->writer_waiting && queue->queued >= queue->max / 4)
		pthread_cond_broadcast(&queue->changed);
	pthread_mutex_unlock(&queue->lock);
	return 0;
}

void k8s_output_queue_flush(struct k8s_output_queue *queue)
{
	if (!queue->started)
		return;
	pthread_mutex_lock(&queue->lock);
	if (queue->writer_waiting && queue->head != NULL)
		pthread_cond_broadcast(&queue->changed);
	pthread_mutex_unlock(&queue->lock);
}

int k8s_output_queue_should_pause(struct k8s_output_queue *queue)
{
	int result;

	pthread_mutex_lock(&queue->lock);
	result = queue->queued >= queue->max / 2;
	if (result)
		queue->paused = 1;
	pthread_mutex_unlock(&queue->lock);
	return result;
}

int k8s_output_queue_may_resume(struct k8s_output_queue *queue)
{
	int result;

	pthread_mutex_lock(&queue->lock);
	result = queue->paused && queue->queued <= queue->max / 4;
	if (result)
		queue->paused = 0;
	pthread_mutex_unlock(&queue->lock);
	return result;
}

static void drop_all(struct k8s_output_queue *queue)
{
	while (queue->head != NULL) {
		struct k8s_output_chunk *next = queue->head->next;

		free(queue->head);
		queue->head = next;
	}
	queue->tail = NULL;
	queue->queued = 0;
	while (queue->spare != NULL) {
		struct k8s_output_chunk *next = queue->spare->next;

		free(queue->spare);
		queue->spare = next;
	}
	queue->spare_bytes = 0;
}

int k8s_output_queue_finish(struct k8s_output_queue *queue, int64_t deadline_ms,
			    struct sbx_error *error)
{
	int timed_out = 0;

	if (!queue->started)
		return 0;
	pthread_mutex_lock(&queue->lock);
	queue->closing = 1;
	pthread_cond_broadcast(&queue->changed);
	while (queue->head != NULL && !queue->failed) {
		struct timespec until;

		if (deadline_ms != 0 && sbx_monotonic_ms() >= deadline_ms) {
			timed_out = 1;
			queue->aborted = 1;
			pthread_cond_broadcast(&queue->changed);
			break;
		}
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_nsec += POLL_SLICE_MS * 1000000L;
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
		queue->others_waiting++;
		pthread_cond_timedwait(&queue->changed, &queue->lock, &until);
		queue->others_waiting--;
	}
	if (queue->failed) {
		queue->aborted = 1;
		pthread_cond_broadcast(&queue->changed);
	}
	pthread_mutex_unlock(&queue->lock);
	pthread_join(queue->thread, NULL);
	queue->started = 0;
	drop_all(queue);
	pthread_mutex_destroy(&queue->lock);
	pthread_cond_destroy(&queue->changed);

	if (queue->failed)
		return sbx_error_errno(error, queue->errnum, "exec: cannot write the command's %s",
				       queue->failed_channel == 1 ? "stdout" : "stderr");
	if (timed_out)
		return sbx_error_set(error, SBX_ERROR_SYSTEM,
				     "exec: the deadline passed while the command's output was "
				     "still being written");
	return 0;
}

void k8s_output_queue_detach(struct k8s_output_queue *queue)
{
	if (!queue->started)
		return;
	pthread_mutex_lock(&queue->lock);
	queue->wake = NULL;
	pthread_mutex_unlock(&queue->lock);
}

void k8s_output_queue_abort(struct k8s_output_queue *queue)
{
	if (!queue->started)
		return;
	pthread_mutex_lock(&queue->lock);
	queue->aborted = 1;
	pthread_cond_broadcast(&queue->changed);
	pthread_mutex_unlock(&queue->lock);
	pthread_join(queue->thread, NULL);
	queue->started = 0;
	drop_all(queue);
	pthread_mutex_destroy(&queue->lock);
	pthread_cond_destroy(&queue->changed);
}

/* ---- stdin ---- */

static void *stdin_thread(void *arg)
{
	struct k8s_stdin_pump *pump = arg;

	for (;;) {
		struct pollfd pfd = { .fd = pump->fd, .events = POLLIN };
		size_t want;
		ssize_t n;
		int stop;

		pthread_mutex_lock(&pump->lock);
		while (pump->full && !pump->stop)
			pthread_cond_wait(&pump->changed, &pump->lock);
		stop = pump->stop;
		pthread_mutex_unlock(&pump->lock);
		if (stop)
			break;

		want = K8S_STDIN_CHUNK;
		if (pump->limit - pump->total < want)
			want = (size_t) (pump->limit - pump->total);
		if (want == 0) {
			n = 0;
		} else {
			n = poll(&pfd, 1, POLL_SLICE_MS);
			if (n == 0 || (n < 0 && errno == EINTR))
				continue;
			n = read(pump->fd, pump->chunk, want);
			if (n < 0 && (errno == EINTR || errno == EAGAIN))
				continue;
		}

		pthread_mutex_lock(&pump->lock);
		if (n < 0) {
			pump->failed = 1;
			snprintf(pump->failure, sizeof(pump->failure),
				 "exec: cannot read stdin: %s", strerror(errno));
		} else if (n == 0) {
			if (pump->counted && pump->total < pump->limit) {
				pump->failed = 1;
				snprintf(pump->failure, sizeof(pump->failure),
					 "exec: stdin ended after %llu of the %llu bytes announced",
					 (unsigned long long) pump->total,
					 (unsigned long long) pump->limit);
			}
			pump->eof = 1;
		} else {
			pump->chunk_length = (size_t) n;
			pump->total += (uint64_t) n;
			pump->full = 1;
		}
		stop = pump->failed || pump->eof;
		if (pump->wake != NULL)
			pump->wake(pump->wake_userdata);
		pthread_mutex_unlock(&pump->lock);
		if (stop)
			break;
	}
	return NULL;
}

int k8s_stdin_pump_start(struct k8s_stdin_pump *pump, int fd, uint64_t limit, int counted,
			 k8s_wake_fn wake, void *wake_userdata, struct sbx_error *error)
{
	int ret;

	memset(pump, 0, sizeof(*pump));
	pthread_mutex_init(&pump->lock, NULL);
	pthread_cond_init(&pump->changed, NULL);
	pump->fd = fd;
	pump->limit = limit;
	pump->counted = counted;
	pump->wake = wake;
	pump->wake_userdata = wake_userdata;
	ret = pthread_create(&pump->thread, NULL, stdin_thread, pump);
	if (ret != 0)
		return sbx_error_errno(error, ret, "exec: cannot start the stdin thread");
	pump->started = 1;
	return 0;
}

ssize_t k8s_stdin_pump_take(struct k8s_stdin_pump *pump, unsigned char *out, int *eof)
{
	ssize_t result = 0;

	*eof = 0;
	pthread_mutex_lock(&pump->lock);
	if (pump->full) {
		memcpy(out, pump->chunk, pump->chunk_length);
		result = (ssize_t) pump->chunk_length;
		pump->full = 0;
		pthread_cond_broadcast(&pump->changed);
	} else if (pump->failed) {
		result = -1;
	} else if (pump->eof) {
		*eof = 1;
	}
	pthread_mutex_unlock(&pump->lock);
	return result;
}

void k8s_stdin_pump_stop(struct k8s_stdin_pump *pump)
{
	if (!pump->started)
		return;
	pthread_mutex_lock(&pump->lock);
	pump->stop = 1;
	pthread_cond_broadcast(&pump->changed);
	pthread_mutex_unlock(&pump->lock);
	pthread_join(pump->thread, NULL);
	pump->started = 0;
	pthread_mutex_destroy(&pump->lock);
	pthread_cond_destroy(&pump->changed);
}
