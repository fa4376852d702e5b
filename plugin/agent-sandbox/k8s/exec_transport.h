/* SPDX-License-Identifier: MIT */
/*
 * The byte stream under pod exec: a non-blocking TCP connection, optionally through an
 * http:// proxy (CONNECT), optionally with TLS from OpenSSL. Reads and writes never block.
 * One that cannot go on records the poll events it waits for, because a TLS read may need
 * the socket writable and a TLS write may need it readable.
 */
#ifndef SBX_K8S_EXEC_TRANSPORT_H
#define SBX_K8S_EXEC_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "sbx/executor.h"

struct ssl_st;
struct ssl_ctx_st;

/* Returned by k8s_transport_read() and k8s_transport_write() when they would block. */
#define K8S_TRANSPORT_AGAIN (-2)

struct k8s_transport {
	int fd;
	struct ssl_st *ssl; /* NULL for plain TCP */
	short read_events; /* what the last blocked read waits for: POLLIN or POLLOUT */
	short write_events; /* the same for the last blocked write */
};

struct k8s_transport_target {
	const char *host; /* name or address, IPv6 without brackets */
	int port;
	/* TLS context, NULL for plain TCP. */
	struct ssl_ctx_st *ssl_context;
	/* SNI and the name the certificate must carry; NULL: HOST. */
	const char *server_name;
	int insecure; /* verify neither the chain nor the name */
	const char *proxy_url; /* http://[user:password@]host[:port], or NULL */
	int cancel_fd; /* readable: give up with SBX_ERROR_CANCELLED; -1 for none */
	int64_t until_ms; /* absolute sbx_monotonic_ms() bound of the whole set-up */
};

void k8s_transport_init(struct k8s_transport *transport);

/* Resolves, connects, passes the proxy and completes the TLS handshake. */
int k8s_transport_open(struct k8s_transport *transport, const struct k8s_transport_target *target,
		       struct sbx_error *error);

/* Returns the bytes read, 0 at the end of the stream, K8S_TRANSPORT_AGAIN or -1. */
ssize_t k8s_transport_read(struct k8s_transport *transport, void *buffer, size_t size,
			   struct sbx_error *error);
/* Returns the bytes written (maybe fewer than LENGTH), K8S_TRANSPORT_AGAIN or -1. */
ssize_t k8s_transport_write(struct k8s_transport *transport, const void *data, size_t length,
			    struct sbx_error *error);

/*
 * Waits until FD has one of EVENTS, CANCEL_FD is readable (SBX_ERROR_CANCELLED) or UNTIL_MS
 * passes (SBX_ERROR_SYSTEM naming WHAT). UNTIL_MS 0 waits without a bound.
 */
int k8s_transport_wait(int fd, short events, int cancel_fd, int64_t until_ms, const char *what,
		       struct sbx_error *error);

/* Writes all of DATA, waiting as k8s_transport_wait() does. */
int k8s_transport_write_all(struct k8s_transport *transport, const void *data, size_t length,
			    int cancel_fd, int64_t until_ms, struct sbx_error *error);

/* Closes the connection; sends a TLS close_notify first when it can without waiting. */
void k8s_transport_close(struct k8s_transport *transport);

#endif /* SBX_K8S_EXEC_TRANSPORT_H */
