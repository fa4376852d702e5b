/* SPDX-License-Identifier: MIT */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>

#include "error.h"

#include "curl_api.h"

struct k8s_curl_api k8s_curl;

static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static char load_failure[256];

static void *symbol(void *library, const char *name)
{
	void *address = dlsym(library, name);

	if (address == NULL && load_failure[0] == '\0')
		snprintf(load_failure, sizeof(load_failure), "%s has no symbol %s",
			 K8S_LIBCURL_SONAME, name);
	return address;
}

static void load(void)
{
	struct k8s_curl_api api;
	const char *reason;
	void *library;
	CURLcode code;

	/* Never closed: libcurl keeps global state until the process ends. */
	library = dlopen(K8S_LIBCURL_SONAME, RTLD_NOW | RTLD_LOCAL);
	if (library == NULL) {
		reason = dlerror();
		snprintf(load_failure, sizeof(load_failure), "%s",
			 reason != NULL ? reason : "dlopen failed");
		return;
	}
	api.global_init = symbol(library, "curl_global_init");
	api.easy_init = symbol(library, "curl_easy_init");
	api.easy_cleanup = symbol(library, "curl_easy_cleanup");
	api.easy_reset = symbol(library, "curl_easy_reset");
	api.easy_setopt = symbol(library, "curl_easy_setopt");
	api.easy_perform = symbol(library, "curl_easy_perform");
	api.easy_getinfo = symbol(library, "curl_easy_getinfo");
	api.easy_strerror = symbol(library, "curl_easy_strerror");
	api.slist_append = symbol(library, "curl_slist_append");
	api.slist_free_all = symbol(library, "curl_slist_free_all");
	if (load_failure[0] != '\0')
		return;
	code = api.global_init(CURL_GLOBAL_DEFAULT);
	if (code != CURLE_OK) {
		snprintf(load_failure, sizeof(load_failure), "curl_global_init failed: %s",
			 api.easy_strerror(code));
		return;
	}
	k8s_curl = api;
}

int k8s_curl_load(struct sbx_error *error)
{
	pthread_once(&load_once, load);
	if (load_failure[0] != '\0')
		return sbx_error_set(error, SBX_ERROR_SYSTEM,
				     "cannot load libcurl (%s): %s; install the libcurl4 package "
				     "(libcurl on RPM systems)",
				     K8S_LIBCURL_SONAME, load_failure);
	return 0;
}
