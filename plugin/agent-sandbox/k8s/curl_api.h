/* SPDX-License-Identifier: MIT */
/*
 * libcurl, loaded on first use. Only the REST calls need it. Linking libcurl makes the dynamic
 * loader map and relocate about 30 shared libraries at every process start (its HTTP/2, IDN,
 * LDAP, SSH, RTMP, Kerberos and GnuTLS dependencies). Measured on a 2-core VM, that took about
 * 4.5 ms, against 0.6 ms for a program that needs only libc. A process that only runs a pod exec (every
 * `sbx gitlab run` of a job) does not use libcurl, so rest.c calls it through this table, filled
 * by dlopen() the first time a client sends a request.
 */
#ifndef SBX_K8S_CURL_API_H
#define SBX_K8S_CURL_API_H

#include <curl/curl.h>

#include "sbx/executor.h"

/* The soname of the libcurl the headers belong to (libcurl4-openssl-dev on Debian). */
#define K8S_LIBCURL_SONAME "libcurl.so.4"

struct k8s_curl_api {
	CURLcode (*global_init)(long flags);
	CURL *(*easy_init)(void);
	void (*easy_cleanup)(CURL *handle);
	void (*easy_reset)(CURL *handle);
	CURLcode (*easy_setopt)(CURL *handle, CURLoption option, ...);
	CURLcode (*easy_perform)(CURL *handle);
	CURLcode (*easy_getinfo)(CURL *handle, CURLINFO info, ...);
	const char *(*easy_strerror)(CURLcode code);
	struct curl_slist *(*slist_append)(struct curl_slist *list, const char *string);
	void (*slist_free_all)(struct curl_slist *list);
};

/* Filled by k8s_curl_load(); read only after it succeeded. */
extern struct k8s_curl_api k8s_curl;

/*
 * Loads libcurl and runs curl_global_init() once per process; later calls return the first
 * call's outcome. Thread-safe.
 */
int k8s_curl_load(struct sbx_error *error);

#endif /* SBX_K8S_CURL_API_H */
