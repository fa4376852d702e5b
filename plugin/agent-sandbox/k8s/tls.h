/* SPDX-License-Identifier: MIT */
/*
 * OpenSSL contexts built from in-memory PEM: the whole CA bundle, a client certificate chain
 * and its key.
 */
#ifndef SBX_K8S_TLS_H
#define SBX_K8S_TLS_H

#include <stddef.h>

#include "sbx/executor.h"

struct ssl_ctx_st;

struct k8s_tls_material {
	const char *ca_pem; /* NULL: the system's default trust store */
	size_t ca_pem_length;
	const char *cert_pem; /* client certificate, then intermediates; NULL for none */
	size_t cert_pem_length;
	const char *key_pem;
	size_t key_pem_length;
	/* Verify nothing (insecure-skip-tls-verify); the caller also skips the name check. */
	int insecure;
};

/* Creates a TLS 1.2+ client context that verifies the peer against MATERIAL's CA bundle. */
int k8s_tls_context_new(const struct k8s_tls_material *material, struct ssl_ctx_st **context,
			struct sbx_error *error);
void k8s_tls_context_free(struct ssl_ctx_st *context);

/* Counts the certificates in a PEM bundle; -1 when one of them does not parse. */
int k8s_tls_count_certificates(const char *pem, size_t length);

/* Checks that CERT and KEY parse and belong together. */
int k8s_tls_check_key_pair(const char *cert_pem, size_t cert_length, const char *key_pem,
			   size_t key_length, struct sbx_error *error);

#endif /* SBX_K8S_TLS_H */
