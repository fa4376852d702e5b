/* SPDX-License-Identifier: MIT */
/*
 * Kubernetes client configuration: kubeconfig files (merged as kubectl merges $KUBECONFIG),
 * in-cluster service account configuration, and the credentials they lead to (static tokens,
 * token files that the kubelet rotates, client certificates, exec credential plugins).
 */
#ifndef SBX_K8S_KUBECONFIG_H
#define SBX_K8S_KUBECONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "sbx/executor.h"

/* The service account directory a pod gets; tests point the loader elsewhere. */
#define K8S_SERVICEACCOUNT_DIR "/var/run/secrets/kubernetes.io/serviceaccount"

/* The parsed `server` URL. */
struct k8s_server {
	int tls; /* 1 for https, 0 for http */
	char *host; /* name or address, IPv6 without brackets */
	int port;
	char *prefix; /* path prefix without a trailing slash, "" for none */
	char *base_url; /* scheme://host:port plus prefix, IPv6 in brackets */
};

/* An exec credential plugin (client.authentication.k8s.io ExecCredential). */
struct k8s_exec_plugin {
	char *api_version;
	char *command; /* as written in the kubeconfig */
	char *path; /* command resolved against the kubeconfig's directory when it has a '/' */
	char **args; /* NULL-terminated */
	char **env; /* "NAME=value", NULL-terminated */
	char *install_hint;
	int provide_cluster_info;
};

struct k8s_credential_state;

struct k8s_config {
	/* Source of the configuration, for messages: the kubeconfig file list or
	 * "in-cluster configuration (DIR)". */
	char *origin;
	char *context;
	char *cluster_name;
	char *user_name;
	char *server_url;
	struct k8s_server server;
	char *namespace;

	/* Trust anchors, PEM; NULL means the system's default trust store. */
	char *ca_pem;
	size_t ca_pem_length;
	int insecure_skip_tls_verify;
	char *tls_server_name;
	char *proxy_url;

	/* Static client certificate chain and key, PEM. */
	char *client_cert_pem;
	size_t client_cert_pem_length;
	char *client_key_pem;
	size_t client_key_pem_length;

	char *token;
	char *token_file;
	struct k8s_exec_plugin *exec;

	/* Directory (created 0700) where exec plugin credentials are cached between processes;
	 * NULL disables the cache. */
	char *credential_cache_dir;

	struct k8s_credential_state *credential_state;
};

struct k8s_kubeconfig_options {
	/* One kubeconfig file, used alone. NULL: the files in $KUBECONFIG, else
	 * ~/.kube/config. */
	const char *path;
	/* Context to use instead of current-context; NULL for current-context. */
	const char *context;
	/* Namespace to use instead of the context's; NULL for the context's. */
	const char *namespace;
	/* Cache directory for exec plugin credentials; NULL picks $XDG_RUNTIME_DIR/sbx/k8s-
	 * credentials when $XDG_RUNTIME_DIR is set, and no cache otherwise. */
	const char *credential_cache_dir;
};

struct k8s_in_cluster_options {
	/* Directory with token, ca.crt and namespace; NULL for K8S_SERVICEACCOUNT_DIR. */
	const char *serviceaccount_dir;
};

/*
 * Loads the kubeconfig named by OPTIONS->path, or merges the files in $KUBECONFIG
 * (':'-separated; missing files are skipped, the first file to set a value or a named entry
 * wins), or reads ~/.kube/config. Errors name the file, the context and the key.
 */
int k8s_kubeconfig_load(const struct k8s_kubeconfig_options *options, struct k8s_config **config,
			struct sbx_error *error);

/* Loads the in-cluster configuration from KUBERNETES_SERVICE_HOST/PORT and the service
 * account directory. */
int k8s_kubeconfig_in_cluster(const struct k8s_in_cluster_options *options,
			      struct k8s_config **config, struct sbx_error *error);

/* Returns non-zero when KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are both set. */
int k8s_kubeconfig_in_cluster_available(void);

/*
 * Picks the configuration as kubectl does: OPTIONS->path, else $KUBECONFIG, else
 * ~/.kube/config when it exists, else the in-cluster configuration when running in a pod.
 */
int k8s_kubeconfig_load_default(const struct k8s_kubeconfig_options *options,
				const struct k8s_in_cluster_options *in_cluster,
				struct k8s_config **config, struct sbx_error *error);

void k8s_kubeconfig_free(struct k8s_config *config);

/* Parses an https:// or http:// server URL with optional port and path prefix. */
int k8s_kubeconfig_parse_server(const char *url, struct k8s_server *server,
				struct sbx_error *error);
void k8s_server_clear(struct k8s_server *server);

/* Decodes base64 (whitespace ignored) into a NUL-terminated buffer. */
int k8s_base64_decode(const char *text, char **data, size_t *length);

/*
 * The credential to present on the next request. Pointers stay valid until the next call to
 * k8s_credential_get() or k8s_credential_invalidate() on the same configuration.
 */
struct k8s_credential {
	const char *token; /* bearer token, NULL for none */
	const char *client_cert_pem;
	size_t client_cert_pem_length;
	const char *client_key_pem;
	size_t client_key_pem_length;
	/* Changes whenever the certificate or key changes, so TLS contexts can be rebuilt. */
	uint64_t tls_generation;
};

/*
 * Returns the current credential: re-reads the token file when it changed, runs the exec
 * plugin when its credential is missing or expired (using the cross-process cache).
 */
int k8s_credential_get(struct k8s_config *config, struct k8s_credential *credential,
		       struct sbx_error *error);

/*
 * Called after a 401: drops the cached exec credential (also on disk) and re-reads the
 * token file on the next k8s_credential_get(). Returns non-zero when a retry can bring a
 * different credential (a static token cannot change).
 */
int k8s_credential_invalidate(struct k8s_config *config);

void k8s_credential_state_free(struct k8s_credential_state *state);

/* Parses an RFC 3339 timestamp ("2026-01-01T00:00:00Z", fractions and offsets allowed). */
int k8s_parse_rfc3339(const char *text, int64_t *seconds);

#endif /* SBX_K8S_KUBECONFIG_H */
