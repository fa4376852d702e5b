/* SPDX-License-Identifier: MIT */
/*
 * The two pumps between an exec connection and the host's descriptors, each a thread, so a
 * slow sink or a blocking source never stalls the WebSocket event loop:
 *  - the output queue takes stdout/stderr pieces from the event loop and writes them to their
 *    descriptors in order; its size is bounded, and it signals the event loop when to stop
 *    and restart reading from the socket;
 *  - the stdin pump reads one chunk at a time from a descriptor and waits until the event
 *    loop has sent it before reading the next.
 * WAKE is called from the pump thread when the event loop has something to do (exec.c writes
 * to an eventfd the loop polls).
 */
#ifndef SBX_K8S_EXEC_IO_H
#define SBX_K8S_EXEC_IO_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "sbx/executor.h"

typedef void (*k8s_wake_fn)(void *userdata);

struct k8s_output_chunk;

struct k8s_output_queue {
	pthread_mutex_t lock;
	pthread_cond_t changed;
	pthread_t thread;
	int started;
	int fds[3]; /* indexed by channel; [1] stdout, [2] stderr, -1 discards */
	struct k8s_output_chunk *head;
	struct k8s_output_chunk *tail;
	struct k8s_output_chunk *spare; /* written chunks kept for reuse */
	size_t spare_bytes;
	size_t queued;
	size_t peak;
	size_t max;
	int closing; /* write what is queued, then stop */
	int aborted; /* stop now */
	int failed; /* a write failed; errnum and failed_channel tell which */
	int errnum;
	int failed_channel;
	int paused; /* the event loop stopped reading the socket */
	int writer_waiting; /* the writer thread waits for chunks */
	int others_waiting; /* push() or finish() wait for the writer */
	uint64_t written[3];
	k8s_wake_fn wake;
	void *wake_userdata;
};

int k8s_output_queue_start(struct k8s_output_queue *queue, int stdout_fd, int stderr_fd,
			   size_t max, k8s_wake_fn wake, void *wake_userdata,
			   struct sbx_error *error);
/*
 * Queues a copy of DATA for CHANNEL. Blocks only when the queue is full, which the caller
 * avoids by pausing the socket at the high-water mark. Returns -1 when a write has failed.
 */
int k8s_output_queue_push(struct k8s_output_queue *queue, int channel, const void *data,
			  size_t length);
/* Wakes the writer for what push() queued; the event loop calls it before it waits. */
void k8s_output_queue_flush(struct k8s_output_queue *queue);
/* True when the event loop should stop reading from the socket (half full). */
int k8s_output_queue_should_pause(struct k8s_output_queue *queue);
/* True when a paused event loop may read again (a quarter full or less). */
int k8s_output_queue_may_resume(struct k8s_output_queue *queue);
/* Writes out what is queued and stops the thread. DEADLINE_MS bounds the wait (0: none). */
int k8s_output_queue_finish(struct k8s_output_queue *queue, int64_t deadline_ms,
			    struct sbx_error *error);
/* Stops wake-up calls; none is running when this returns. */
void k8s_output_queue_detach(struct k8s_output_queue *queue);
/* Drops what is queued and stops the thread. */
void k8s_output_queue_abort(struct k8s_output_queue *queue);

/* stdin chunks stay at or below 32 KiB, the size the API server reads in one message. */
#define K8S_STDIN_CHUNK (32u << 10)

struct k8s_stdin_pump {
	pthread_mutex_t lock;
	pthread_cond_t changed;
	pthread_t thread;
	int started;
	int fd;
	uint64_t limit; /* UINT64_MAX: until EOF */
	uint64_t total;
	int counted; /* EOF before LIMIT is an error */
	unsigned char chunk[K8S_STDIN_CHUNK];
	size_t chunk_length;
	int full;
	int eof;
	int failed;
	char failure[256];
	int stop;
	k8s_wake_fn wake;
	void *wake_userdata;
};

int k8s_stdin_pump_start(struct k8s_stdin_pump *pump, int fd, uint64_t limit, int counted,
			 k8s_wake_fn wake, void *wake_userdata, struct sbx_error *error);
/*
 * Takes the pending chunk, if any, into OUT (K8S_STDIN_CHUNK bytes). Returns its length; 0
 * with *EOF set when the source ended; 0 when nothing is ready yet; -1 when reading failed
 * (the message in pump->failure).
 */
ssize_t k8s_stdin_pump_take(struct k8s_stdin_pump *pump, unsigned char *out, int *eof);
void k8s_stdin_pump_stop(struct k8s_stdin_pump *pump);

#endif /* SBX_K8S_EXEC_IO_H */
