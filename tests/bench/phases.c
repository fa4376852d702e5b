/* SPDX-License-Identifier: MIT */
/*
 * phases.so: an LD_PRELOAD library that timestamps the phases of one Kubernetes exec, for
 * tests/bench/bench_k8s.py.
 *
 *   SBX_BENCH_PHASES=FILE LD_PRELOAD=phases.so k8s_client_tool ... exec NS POD -- true
 *
 * It wraps a few OpenSSL and libc calls, forwards each to the next definition
 * (dlsym(RTLD_NEXT)) with the same arguments and result, and records CLOCK_MONOTONIC times
 * in nanoseconds. At exit it writes one line "NAME=NS NAME=NS ..." to FILE, 0 for an event
 * that did not happen. A process that made none of the wrapped calls writes nothing, so that
 * tests/bench/measure, which passes LD_PRELOAD on to the client, leaves the client's line:
 *
 *   loaded           the constructor ran: the program and its libraries are loaded
 *   ssl_ctx_new      first SSL_CTX_new(): sbx starts building the exec's TLS context
 *   ssl_ctx_created  that SSL_CTX_new() returned; OpenSSL 3 loads its configuration and
 *                    providers on first use
 *   tcp_connect      first connect() of a TCP socket, after the CA bundle and key are loaded
 *   tls_start        first SSL_connect() call: the TCP connection is up, the handshake starts
 *   tls_done         SSL_connect() returned 1: the handshake is complete
 *   request_sent     first SSL_write_ex() that wrote data: the WebSocket upgrade request
 *   response         first SSL_read_ex() that returned data: the upgrade response arrived
 *   close            first SSL_free(): the exec's connection is done
 *   closed           that SSL_free() returned
 *   exit             the destructor ran
 *
 * Only the first occurrence counts, because the exec of a short command makes one connection;
 * REST calls through libcurl would also pass through SSL_connect.
 */
#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum phase {
	PHASE_LOADED,
	PHASE_SSL_CTX_NEW,
	PHASE_SSL_CTX_CREATED,
	PHASE_TCP_CONNECT,
	PHASE_TLS_START,
	PHASE_TLS_DONE,
	PHASE_REQUEST_SENT,
	PHASE_RESPONSE,
	PHASE_CLOSE,
	PHASE_CLOSED,
	PHASE_EXIT,
	PHASE_COUNT,
};

static const char *const phase_names[PHASE_COUNT] = {
	"loaded", "ssl_ctx_new", "ssl_ctx_created", "tcp_connect", "tls_start", "tls_done",
	"request_sent", "response", "close", "closed", "exit",
};

static long long phase_ns[PHASE_COUNT];

static void mark(enum phase phase)
{
	struct timespec now;

	if (phase_ns[phase] != 0)
		return;
	clock_gettime(CLOCK_MONOTONIC, &now);
	phase_ns[phase] = (long long) now.tv_sec * 1000000000LL + now.tv_nsec;
}

/* Looks up the wrapped function on first use. A missing symbol is fatal, because the program
 * could not have linked against it either. */
static void *next_symbol(const char *name)
{
	void *symbol = dlsym(RTLD_NEXT, name);

	if (symbol == NULL) {
		fprintf(stderr, "phases.so: %s not found: %s\n", name, dlerror());
		abort();
	}
	return symbol;
}

/* Declares next_NAME, the wrapped definition of NAME, with the wrapper's own type. */
#define NEXT(name) \
	static __typeof__(&name) next_##name; \
	if (next_##name == NULL) \
		next_##name = (__typeof__(&name)) next_symbol(#name)

__attribute__((constructor)) static void phases_loaded(void)
{
	mark(PHASE_LOADED);
}

static int wrapped_call_seen(void)
{
	int i;

	for (i = PHASE_LOADED + 1; i < PHASE_EXIT; i++)
		if (phase_ns[i] != 0)
			return 1;
	return 0;
}

__attribute__((destructor)) static void phases_exit(void)
{
	const char *path = getenv("SBX_BENCH_PHASES");
	char line[1024];
	size_t used = 0;
	int fd, i;

	mark(PHASE_EXIT);
	if (path == NULL)
		return;
	if (!wrapped_call_seen())
		return;
	for (i = 0; i < PHASE_COUNT; i++)
		used += (size_t) snprintf(line + used, sizeof(line) - used, "%s%s=%lld",
					  i > 0 ? " " : "", phase_names[i], phase_ns[i]);
	line[used++] = '\n';
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return;
	if (write(fd, line, used) != (ssize_t) used)
		fprintf(stderr, "phases.so: cannot write %s\n", path);
	close(fd);
}

/* The OpenSSL types stay opaque here: pointers pass through unchanged. */

void *SSL_CTX_new(const void *method);
void *SSL_CTX_new(const void *method)
{
	void *context;

	NEXT(SSL_CTX_new);
	mark(PHASE_SSL_CTX_NEW);
	context = next_SSL_CTX_new(method);
	mark(PHASE_SSL_CTX_CREATED);
	return context;
}

int SSL_connect(void *ssl);
int SSL_connect(void *ssl)
{
	int ret;

	NEXT(SSL_connect);
	mark(PHASE_TLS_START);
	ret = next_SSL_connect(ssl);
	if (ret == 1)
		mark(PHASE_TLS_DONE);
	return ret;
}

int SSL_write_ex(void *ssl, const void *buffer, size_t length, size_t *written);
int SSL_write_ex(void *ssl, const void *buffer, size_t length, size_t *written)
{
	int ret;

	NEXT(SSL_write_ex);
	ret = next_SSL_write_ex(ssl, buffer, length, written);
	if (ret == 1)
		mark(PHASE_REQUEST_SENT);
	return ret;
}

int SSL_read_ex(void *ssl, void *buffer, size_t length, size_t *read_bytes);
int SSL_read_ex(void *ssl, void *buffer, size_t length, size_t *read_bytes)
{
	int ret;

	NEXT(SSL_read_ex);
	ret = next_SSL_read_ex(ssl, buffer, length, read_bytes);
	if (ret == 1)
		mark(PHASE_RESPONSE);
	return ret;
}

void SSL_free(void *ssl);
void SSL_free(void *ssl)
{
	NEXT(SSL_free);
	mark(PHASE_CLOSE);
	next_SSL_free(ssl);
	mark(PHASE_CLOSED);
}

int connect(int fd, const struct sockaddr *address, socklen_t length);
int connect(int fd, const struct sockaddr *address, socklen_t length)
{
	NEXT(connect);
	if (address != NULL &&
	    (address->sa_family == AF_INET || address->sa_family == AF_INET6))
		mark(PHASE_TCP_CONNECT);
	return next_connect(fd, address, length);
}
