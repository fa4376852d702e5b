/* SPDX-License-Identifier: MIT */
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "error.h"

#include "tls.h"

/* Formats the most recent OpenSSL error and empties OpenSSL's error queue. */
static const char *openssl_error(char *buf, size_t size)
{
	unsigned long code = ERR_peek_last_error();

	if (code == 0)
		snprintf(buf, size, "unknown OpenSSL error");
	else
		ERR_error_string_n(code, buf, size);
	ERR_clear_error();
	return buf;
}

int k8s_tls_count_certificates(const char *pem, size_t length)
{
	BIO *bio;
	X509 *cert;
	int count = 0;

	if (pem == NULL || length > INT_MAX)
		return -1;
	bio = BIO_new_mem_buf(pem, (int) length);
	if (bio == NULL)
		return -1;
	while ((cert = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
		X509_free(cert);
		count++;
	}
	/* The loop ends with "no start line" after the last certificate; anything else is a
	 * broken certificate. */
	if (ERR_GET_REASON(ERR_peek_last_error()) != PEM_R_NO_START_LINE)
		count = -1;
	ERR_clear_error();
	BIO_free(bio);
	return count;
}

static EVP_PKEY *read_key(const char *pem, size_t length)
{
	BIO *bio = BIO_new_mem_buf(pem, (int) length);
	EVP_PKEY *key;

	if (bio == NULL)
		return NULL;
	key = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
	BIO_free(bio);
	return key;
}

/* Loads the leaf certificate, its chain and the key into CONTEXT. */
static int use_client_certificate(SSL_CTX *context, const struct k8s_tls_material *material,
				  struct sbx_error *error)
{
	char message[256];
	BIO *bio;
	X509 *cert;
	EVP_PKEY *key;
	int first = 1;

	bio = BIO_new_mem_buf(material->cert_pem, (int) material->cert_pem_length);
	if (bio == NULL)
		return sbx_error_set(error, SBX_ERROR_SYSTEM, "out of memory");
	while ((cert = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
		int ok = first ? SSL_CTX_use_certificate(context, cert)
			       : (int) SSL_CTX_add_extra_chain_cert(context, cert);

		if (first)
			X509_free(cert);
		if (ok != 1) {
			if (!first)
				X509_free(cert);
			BIO_free(bio);
			return sbx_error_set(error, SBX_ERROR_INVALID,
					     "client certificate rejected: %s",
					     openssl_error(message, sizeof(message)));
		}
		first = 0;
	}
	BIO_free(bio);
	ERR_clear_error();
	if (first)
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "the client certificate contains no PEM certificate");

	key = read_key(material->key_pem, material->key_pem_length);
	if (key == NULL)
		return sbx_error_set(error, SBX_ERROR_INVALID, "invalid client key: %s",
				     openssl_error(message, sizeof(message)));
	if (SSL_CTX_use_PrivateKey(context, key) != 1 || SSL_CTX_check_private_key(context) != 1) {
		EVP_PKEY_free(key);
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "the client key does not match the client certificate: %s",
				     openssl_error(message, sizeof(message)));
	}
	EVP_PKEY_free(key);
	return 0;
}

static int load_trust(SSL_CTX *context, const struct k8s_tls_material *material,
		      struct sbx_error *error)
{
	char message[256];
	X509_STORE *store;
	BIO *bio;
	X509 *cert;
	int count = 0;

	if (material->ca_pem == NULL) {
		if (SSL_CTX_set_default_verify_paths(context) != 1)
			return sbx_error_set(error, SBX_ERROR_SYSTEM,
					     "cannot load the system trust store: %s",
					     openssl_error(message, sizeof(message)));
		return 0;
	}

	/* A fresh store, so only the cluster's CA bundle is trusted. */
	store = X509_STORE_new();
	if (store == NULL)
		return sbx_error_set(error, SBX_ERROR_SYSTEM, "out of memory");
	SSL_CTX_set_cert_store(context, store);
	bio = BIO_new_mem_buf(material->ca_pem, (int) material->ca_pem_length);
	if (bio == NULL)
		return sbx_error_set(error, SBX_ERROR_SYSTEM, "out of memory");
	while ((cert = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
		if (X509_STORE_add_cert(store, cert) != 1 &&
		    ERR_GET_REASON(ERR_peek_last_error()) != X509_R_CERT_ALREADY_IN_HASH_TABLE) {
			X509_free(cert);
			BIO_free(bio);
			return sbx_error_set(error, SBX_ERROR_INVALID,
					     "cannot add CA certificate %d: %s", count + 1,
					     openssl_error(message, sizeof(message)));
		}
		X509_free(cert);
		count++;
	}
	BIO_free(bio);
	ERR_clear_error();
	if (count == 0)
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "the certificate authority data contains no PEM certificate");
	return 0;
}

int k8s_tls_context_new(const struct k8s_tls_material *material, struct ssl_ctx_st **result,
			struct sbx_error *error)
{
	char message[256];
	SSL_CTX *context;

	if ((material->ca_pem != NULL && material->ca_pem_length > INT_MAX) ||
	    (material->cert_pem != NULL && material->cert_pem_length > INT_MAX) ||
	    (material->key_pem != NULL && material->key_pem_length > INT_MAX))
		return sbx_error_set(error, SBX_ERROR_INVALID, "TLS material too large");
	context = SSL_CTX_new(TLS_client_method());
	if (context == NULL)
		return sbx_error_set(error, SBX_ERROR_SYSTEM, "cannot create a TLS context: %s",
				     openssl_error(message, sizeof(message)));
	SSL_CTX_set_min_proto_version(context, TLS1_2_VERSION);
	SSL_CTX_set_verify(context, material->insecure ? SSL_VERIFY_NONE : SSL_VERIFY_PEER, NULL);

	if (!material->insecure && load_trust(context, material, error) < 0)
		goto fail;
	if (material->cert_pem != NULL && use_client_certificate(context, material, error) < 0)
		goto fail;
	*result = context;
	return 0;
fail:
	SSL_CTX_free(context);
	return -1;
}

void k8s_tls_context_free(struct ssl_ctx_st *context)
{
	SSL_CTX_free(context);
}

int k8s_tls_check_key_pair(const char *cert_pem, size_t cert_length, const char *key_pem,
			   size_t key_length, struct sbx_error *error)
{
	struct k8s_tls_material material = {
		.cert_pem = cert_pem,
		.cert_pem_length = cert_length,
		.key_pem = key_pem,
		.key_pem_length = key_length,
		.insecure = 1,
	};
	SSL_CTX *context;

	if (k8s_tls_context_new(&material, &context, error) < 0)
		return -1;
	SSL_CTX_free(context);
	return 0;
}
