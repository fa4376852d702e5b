/* SPDX-License-Identifier: MIT */
/* kubeconfig loading and merging, in-cluster configuration and every credential source. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "error.h"
#include "util.h"
#include "k8s/kubeconfig.h"

static char tmpdir[256];
static char ca_b64[8192];
static char other_b64[8192];
static char cert_b64[8192];
static char key_b64[8192];
static char other_key_b64[8192];

/* ---- fixtures ---- */

static char *bio_string(BIO *bio)
{
	char *data;
	long length = BIO_get_mem_data(bio, &data);
	char *copy = malloc((size_t) length + 1);

	ck_assert_ptr_nonnull(copy);
	memcpy(copy, data, (size_t) length);
	copy[length] = '\0';
	return copy;
}

/* A self-signed EC certificate and its key, PEM. */
static void make_certificate(const char *common_name, char **cert_pem, char **key_pem)
{
	EVP_PKEY *key = EVP_EC_gen("P-256");
	X509 *cert = X509_new();
	X509_NAME *name;
	BIO *bio;

	ck_assert_ptr_nonnull(key);
	X509_set_version(cert, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
	X509_gmtime_adj(X509_getm_notBefore(cert), 0);
	X509_gmtime_adj(X509_getm_notAfter(cert), 3600);
	X509_set_pubkey(cert, key);
	name = X509_get_subject_name(cert);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *) common_name,
				   -1, -1, 0);
	X509_set_issuer_name(cert, name);
	ck_assert_int_gt(X509_sign(cert, key, EVP_sha256()), 0);

	bio = BIO_new(BIO_s_mem());
	PEM_write_bio_X509(bio, cert);
	*cert_pem = bio_string(bio);
	BIO_free(bio);
	bio = BIO_new(BIO_s_mem());
	PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL);
	*key_pem = bio_string(bio);
	BIO_free(bio);
	X509_free(cert);
	EVP_PKEY_free(key);
}

static void base64(const char *text, char *out)
{
	EVP_EncodeBlock((unsigned char *) out, (const unsigned char *) text, (int) strlen(text));
}

static void write_text(const char *name, const char *text)
{
	char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	fputs(text, f);
	fclose(f);
}

/* Writes NAME from TEMPLATE with @CA@, @OTHER@, @CERT@, @KEY@, @OTHERKEY@ and @DIR@
 * replaced. */
static void write_template(const char *name, const char *template)
{
	static const struct {
		const char *placeholder;
		const char *value;
	} substitutions[] = {
		{ "@CA@", ca_b64 },	    { "@OTHER@", other_b64 },
		{ "@CERT@", cert_b64 },	    { "@KEY@", key_b64 },
		{ "@OTHERKEY@", other_key_b64 }, { "@DIR@", tmpdir },
	};
	char out[65536];
	size_t used = 0, i;
	const char *p = template;

	while (*p != '\0') {
		for (i = 0; i < sizeof(substitutions) / sizeof(substitutions[0]); i++) {
			size_t length = strlen(substitutions[i].placeholder);

			if (strncmp(p, substitutions[i].placeholder, length) == 0) {
				size_t value_length = strlen(substitutions[i].value);

				ck_assert_uint_lt(used + value_length, sizeof(out));
				memcpy(out + used, substitutions[i].value, value_length);
				used += value_length;
				p += length;
				break;
			}
		}
		if (i == sizeof(substitutions) / sizeof(substitutions[0]))
			out[used++] = *p++;
		ck_assert_uint_lt(used, sizeof(out));
	}
	out[used] = '\0';
	write_text(name, out);
}

static void setup(void)
{
	char *cert, *key, *other_cert, *other_key;

	snprintf(tmpdir, sizeof(tmpdir), "/tmp/sbx-test-kubeconfig-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(tmpdir));
	make_certificate("cluster-ca", &cert, &key);
	base64(cert, ca_b64);
	base64(cert, cert_b64);
	base64(key, key_b64);
	write_text("ca.crt", cert);
	free(cert);
	free(key);
	make_certificate("other", &other_cert, &other_key);
	base64(other_cert, other_b64);
	base64(other_key, other_key_b64);
	free(other_cert);
	free(other_key);
	unsetenv("KUBECONFIG");
	unsetenv("KUBERNETES_SERVICE_HOST");
	unsetenv("KUBERNETES_SERVICE_PORT");
	unsetenv("XDG_RUNTIME_DIR");
}

static void teardown(void)
{
	sbx_remove_tree(tmpdir);
}

static void set_kubeconfig(const char *names)
{
	char list[2048] = "", copy[512], *saveptr = NULL, *name;

	snprintf(copy, sizeof(copy), "%s", names);
	for (name = strtok_r(copy, ":", &saveptr); name != NULL;
	     name = strtok_r(NULL, ":", &saveptr)) {
		size_t used = strlen(list);

		snprintf(list + used, sizeof(list) - used, "%s%s/%s", used > 0 ? ":" : "", tmpdir,
			 name);
	}
	setenv("KUBECONFIG", list, 1);
}

/* ---- loading and merging, table-driven ---- */

#define CLUSTER(name, server) \
	"- name: " name "\n  cluster:\n    server: " server "\n    certificate-authority-data: @CA@\n"
#define USER_TOKEN(name, token) "- name: " name "\n  user:\n    token: " token "\n"
#define CONTEXT(name, cluster, user, ns) \
	"- name: " name "\n  context:\n    cluster: " cluster "\n    user: " user "\n" ns

struct load_case {
	const char *name;
	const char *files[3]; /* contents of a.yaml, b.yaml, c.yaml (NULL: not written) */
	const char *kubeconfig; /* names joined by ':' */
	const char *context; /* option */
	const char *expect_error; /* substring, or NULL for success */
	const char *expect_context;
	const char *expect_server;
	const char *expect_namespace;
	const char *expect_token;
};

static const struct load_case load_cases[] = {
	{
		.name = "single file with a token",
		.files = { "apiVersion: v1\nkind: Config\ncurrent-context: dev\nclusters:\n" CLUSTER(
			"c1", "https://10.0.0.1:6443") "users:\n" USER_TOKEN("u1", "secret-1")
				   "contexts:\n" CONTEXT("dev", "c1", "u1", "    namespace: ns1\n") },
		.kubeconfig = "a.yaml",
		.expect_context = "dev",
		.expect_server = "https://10.0.0.1:6443",
		.expect_namespace = "ns1",
		.expect_token = "secret-1",
	},
	{
		.name = "first file's current-context and names win",
		.files = {
			"current-context: first\nclusters:\n" CLUSTER("c1", "https://first:1")
			"users:\n" USER_TOKEN("u1", "from-a")
			"contexts:\n" CONTEXT("first", "c1", "u1", ""),
			"current-context: second\nclusters:\n" CLUSTER("c1", "https://second:2")
			CLUSTER("c2", "https://only-b:3")
			"users:\n" USER_TOKEN("u1", "from-b")
			"contexts:\n" CONTEXT("first", "c2", "u1", "") CONTEXT("second", "c2", "u1", ""),
		},
		.kubeconfig = "a.yaml:b.yaml",
		.expect_context = "first",
		.expect_server = "https://first:1",
		.expect_namespace = "default",
		.expect_token = "from-a",
	},
	{
		.name = "context override reaches a later file's entries",
		.files = {
			"current-context: first\nclusters:\n" CLUSTER("c1", "https://first:1")
			"users:\n" USER_TOKEN("u1", "from-a")
			"contexts:\n" CONTEXT("first", "c1", "u1", ""),
			"clusters:\n" CLUSTER("c2", "https://only-b:3")
			"contexts:\n" CONTEXT("second", "c2", "u1", "    namespace: b-ns\n"),
		},
		.kubeconfig = "a.yaml:b.yaml",
		.context = "second",
		.expect_context = "second",
		.expect_server = "https://only-b:3",
		.expect_namespace = "b-ns",
		.expect_token = "from-a",
	},
	{
		.name = "current-context from a later file when the first has none",
		.files = {
			"clusters:\n" CLUSTER("c1", "https://first:1") "users:\n" USER_TOKEN("u1", "t")
			"contexts:\n" CONTEXT("ctx", "c1", "u1", ""),
			"current-context: ctx\n",
		},
		.kubeconfig = "a.yaml:b.yaml",
		.expect_context = "ctx",
		.expect_server = "https://first:1",
		.expect_namespace = "default",
		.expect_token = "t",
	},
	{
		.name = "missing files are skipped",
		.files = { "current-context: x\nclusters:\n" CLUSTER("c", "https://h") "users:\n"
			   USER_TOKEN("u", "t") "contexts:\n" CONTEXT("x", "c", "u", "") },
		.kubeconfig = "missing.yaml:a.yaml",
		.expect_context = "x",
		.expect_server = "https://h:443",
		.expect_namespace = "default",
		.expect_token = "t",
	},
	{
		.name = "all files missing",
		.kubeconfig = "missing1.yaml:missing2.yaml",
		.expect_error = "none of the files in KUBECONFIG",
	},
	{
		.name = "invalid YAML names the file and position",
		.files = { "current-context: x\nclusters: [\n  - {name: c\n" },
		.kubeconfig = "a.yaml",
		.expect_error = "a.yaml:",
	},
	{
		.name = "unknown context lists the known ones",
		.files = { "current-context: nope\nclusters:\n" CLUSTER("c", "https://h")
			   "contexts:\n" CONTEXT("x", "c", "u", "") CONTEXT("y", "c", "u", "") },
		.kubeconfig = "a.yaml",
		.expect_error = "context \"nope\" (from",
	},
	{
		.name = "no current-context",
		.files = { "clusters:\n" CLUSTER("c", "https://h") },
		.kubeconfig = "a.yaml",
		.expect_error = "no current-context is set",
	},
	{
		.name = "missing server names file, context, cluster and key",
		.files = { "current-context: x\nclusters:\n- name: c\n  cluster:\n    "
			   "insecure-skip-tls-verify: true\ncontexts:\n" CONTEXT("x", "c", "u", "") },
		.kubeconfig = "a.yaml",
		.expect_error = "context \"x\": cluster \"c\": missing key \"server\"",
	},
	{
		.name = "unknown user",
		.files = { "current-context: x\nclusters:\n" CLUSTER("c", "https://h")
			   "contexts:\n" CONTEXT("x", "c", "ghost", "") },
		.kubeconfig = "a.yaml",
		.expect_error = "user \"ghost\" not found",
	},
	{
		.name = "bad base64 in certificate-authority-data",
		.files = { "current-context: x\nclusters:\n- name: c\n  cluster:\n    server: "
			   "https://h\n    certificate-authority-data: '!!notbase64'\ncontexts:\n"
			   CONTEXT("x", "c", "u", "") },
		.kubeconfig = "a.yaml",
		.expect_error = "key \"certificate-authority-data\": invalid base64",
	},
	{
		.name = "certificate-authority data that is not PEM",
		.files = { "current-context: x\nclusters:\n- name: c\n  cluster:\n    server: "
			   "https://h\n    certificate-authority-data: aGVsbG8=\ncontexts:\n"
			   CONTEXT("x", "c", "u", "") },
		.kubeconfig = "a.yaml",
		.expect_error = "no PEM certificate found",
	},
	{
		.name = "insecure together with a CA",
		.files = { "current-context: x\nclusters:\n- name: c\n  cluster:\n    server: "
			   "https://h\n    certificate-authority-data: @CA@\n    "
			   "insecure-skip-tls-verify: true\ncontexts:\n" CONTEXT("x", "c", "u", "") },
		.kubeconfig = "a.yaml",
		.expect_error = "remove one of them",
	},
	{
		.name = "invalid boolean",
		.files = { "current-context: x\nclusters:\n- name: c\n  cluster:\n    server: "
			   "https://h\n    insecure-skip-tls-verify: maybe\ncontexts:\n"
			   CONTEXT("x", "c", "u", "") },
		.kubeconfig = "a.yaml",
		.expect_error = "key \"insecure-skip-tls-verify\": invalid boolean \"maybe\"",
	},
	{
		.name = "bad server URL",
		.files = { "current-context: x\nclusters:\n- name: c\n  cluster:\n    server: "
			   "ftp://h\ncontexts:\n" CONTEXT("x", "c", "u", "") },
		.kubeconfig = "a.yaml",
		.expect_error = "key \"server\": server URL \"ftp://h\" has no https://",
	},
	{
		.name = "client certificate without key",
		.files = { "current-context: x\nclusters:\n" CLUSTER("c", "https://h")
			   "users:\n- name: u\n  user:\n    client-certificate-data: @CERT@\n"
			   "contexts:\n" CONTEXT("x", "c", "u", "") },
		.kubeconfig = "a.yaml",
		.expect_error = "key \"client-certificate\" is set without \"client-key\"",
	},
	{
		.name = "client key that does not match",
		.files = { "current-context: x\nclusters:\n" CLUSTER("c", "https://h")
			   "users:\n- name: u\n  user:\n    client-certificate-data: @CERT@\n"
			   "    client-key-data: @OTHERKEY@\ncontexts:\n" CONTEXT("x", "c", "u", "") },
		.kubeconfig = "a.yaml",
		.expect_error = "does not match",
	},
	{
		.name = "basic auth is rejected",
		.files = { "current-context: x\nclusters:\n" CLUSTER("c", "https://h")
			   "users:\n- name: u\n  user:\n    username: a\n    password: b\n"
			   "contexts:\n" CONTEXT("x", "c", "u", "") },
		.kubeconfig = "a.yaml",
		.expect_error = "key \"username\" is not supported",
	},
	{
		.name = "exec together with a token",
		.files = { "current-context: x\nclusters:\n" CLUSTER("c", "https://h")
			   "users:\n- name: u\n  user:\n    token: t\n    exec:\n      apiVersion: "
			   "client.authentication.k8s.io/v1\n      command: x\n"
			   "contexts:\n" CONTEXT("x", "c", "u", "") },
		.kubeconfig = "a.yaml",
		.expect_error = "keys \"exec\" and \"token\" are both set",
	},
	{
		.name = "exec with an old apiVersion",
		.files = { "current-context: x\nclusters:\n" CLUSTER("c", "https://h")
			   "users:\n- name: u\n  user:\n    exec:\n      apiVersion: "
			   "client.authentication.k8s.io/v1alpha1\n      command: x\n"
			   "contexts:\n" CONTEXT("x", "c", "u", "") },
		.kubeconfig = "a.yaml",
		.expect_error = "unsupported value \"client.authentication.k8s.io/v1alpha1\"",
	},
};

START_TEST(test_kubeconfig_load_table)
{
	const struct load_case *c = &load_cases[_i];
	struct k8s_kubeconfig_options options = { .context = c->context };
	struct k8s_config *config = NULL;
	struct k8s_credential credential;
	struct sbx_error error;
	static const char *const names[] = { "a.yaml", "b.yaml", "c.yaml" };
	size_t i;
	int ret;

	for (i = 0; i < 3; i++)
		if (c->files[i] != NULL)
			write_template(names[i], c->files[i]);
	set_kubeconfig(c->kubeconfig);
	sbx_error_clear(&error);
	ret = k8s_kubeconfig_load(&options, &config, &error);
	if (c->expect_error != NULL) {
		ck_assert_msg(ret == -1, "case \"%s\" loaded", c->name);
		ck_assert_msg(strstr(error.message, c->expect_error) != NULL,
			      "case \"%s\": \"%s\" not in \"%s\"", c->name, c->expect_error,
			      error.message);
		ck_assert_int_eq(error.error_class, SBX_ERROR_INVALID);
		return;
	}
	ck_assert_msg(ret == 0, "case \"%s\": %s", c->name, error.message);
	ck_assert_str_eq(config->context, c->expect_context);
	ck_assert_str_eq(config->server.base_url, c->expect_server);
	ck_assert_str_eq(config->namespace, c->expect_namespace);
	ck_assert_int_eq(k8s_credential_get(config, &credential, &error), 0);
	ck_assert_str_eq(credential.token, c->expect_token);
	ck_assert_ptr_nonnull(config->ca_pem);
	ck_assert_ptr_nonnull(strstr(config->ca_pem, "BEGIN CERTIFICATE"));
	k8s_kubeconfig_free(config);
}
END_TEST

START_TEST(test_kubeconfig_explicit_path_no_merge)
{
	struct k8s_kubeconfig_options options = { 0 };
	struct k8s_config *config = NULL;
	struct sbx_error error;
	char path[512];

	write_template("a.yaml", "current-context: x\nclusters:\n" CLUSTER("c", "https://a")
				 "contexts:\n" CONTEXT("x", "c", "u", ""));
	write_template("b.yaml", "users:\n" USER_TOKEN("u", "t"));
	set_kubeconfig("b.yaml");
	snprintf(path, sizeof(path), "%s/a.yaml", tmpdir);
	options.path = path;
	ck_assert_int_eq(k8s_kubeconfig_load(&options, &config, &error), -1);
	ck_assert_ptr_nonnull(strstr(error.message, "user \"u\" not found"));

	/* A path that does not exist is an error, unlike a missing KUBECONFIG entry. */
	snprintf(path, sizeof(path), "%s/none.yaml", tmpdir);
	ck_assert_int_eq(k8s_kubeconfig_load(&options, &config, &error), -1);
	ck_assert_ptr_nonnull(strstr(error.message, "none.yaml"));
}
END_TEST

START_TEST(test_kubeconfig_cluster_fields)
{
	struct k8s_kubeconfig_options options = { .namespace = "override" };
	struct k8s_config *config = NULL;
	struct k8s_credential credential;
	struct sbx_error error;

	/* A relative certificate-authority path is relative to the kubeconfig's directory, and
	 * the client certificate comes from files too. */
	write_template("cert.b64", "@CERT@");
	write_template("a.yaml",
		       "current-context: x\nclusters:\n- name: c\n  cluster:\n    server: "
		       "https://[fd00::1]:8443/k8s/clusters/c-1/\n    certificate-authority: ca.crt\n"
		       "    tls-server-name: kubernetes.default.svc\n    proxy-url: "
		       "http://proxy:3128\nusers:\n- name: u\n  user:\n    client-certificate-data: "
		       "@CERT@\n    client-key-data: @KEY@\ncontexts:\n" CONTEXT("x", "c", "u",
									   "    namespace: ns\n"));
	set_kubeconfig("a.yaml");
	ck_assert_int_eq(k8s_kubeconfig_load(&options, &config, &error), 0);
	ck_assert_str_eq(config->server.host, "fd00::1");
	ck_assert_int_eq(config->server.port, 8443);
	ck_assert_str_eq(config->server.prefix, "/k8s/clusters/c-1");
	ck_assert_str_eq(config->server.base_url, "https://[fd00::1]:8443/k8s/clusters/c-1");
	ck_assert_str_eq(config->tls_server_name, "kubernetes.default.svc");
	ck_assert_str_eq(config->proxy_url, "http://proxy:3128");
	ck_assert_str_eq(config->namespace, "override");
	ck_assert_int_eq(config->insecure_skip_tls_verify, 0);
	ck_assert_ptr_nonnull(strstr(config->ca_pem, "BEGIN CERTIFICATE"));
	ck_assert_int_eq(k8s_credential_get(config, &credential, &error), 0);
	ck_assert_ptr_null(credential.token);
	ck_assert_ptr_nonnull(strstr(credential.client_cert_pem, "BEGIN CERTIFICATE"));
	ck_assert_ptr_nonnull(strstr(credential.client_key_pem, "PRIVATE KEY"));
	k8s_kubeconfig_free(config);
}
END_TEST

START_TEST(test_kubeconfig_insecure)
{
	struct k8s_config *config = NULL;
	struct sbx_error error;

	write_template("a.yaml", "current-context: x\nclusters:\n- name: c\n  cluster:\n    "
				 "server: http://127.0.0.1:8080\n    insecure-skip-tls-verify: "
				 "true\ncontexts:\n- name: x\n  context:\n    cluster: c\n");
	set_kubeconfig("a.yaml");
	ck_assert_int_eq(k8s_kubeconfig_load(NULL, &config, &error), 0);
	ck_assert_int_eq(config->insecure_skip_tls_verify, 1);
	ck_assert_ptr_null(config->ca_pem);
	ck_assert_int_eq(config->server.tls, 0);
	ck_assert_ptr_null(config->user_name);
	k8s_kubeconfig_free(config);
}
END_TEST

/* ---- token files ---- */

START_TEST(test_token_file_reread)
{
	struct k8s_config *config = NULL;
	struct k8s_credential credential;
	struct sbx_error error;
	char path[512];
	struct stat st;
	struct timespec times[2];

	write_text("token", "first-token\n");
	write_template("a.yaml", "current-context: x\nclusters:\n" CLUSTER("c", "https://h")
				 "users:\n- name: u\n  user:\n    tokenFile: token\n"
				 "contexts:\n" CONTEXT("x", "c", "u", ""));
	set_kubeconfig("a.yaml");
	ck_assert_int_eq(k8s_kubeconfig_load(NULL, &config, &error), 0);
	ck_assert_int_eq(k8s_credential_get(config, &credential, &error), 0);
	ck_assert_str_eq(credential.token, "first-token");

	/* A change to the file is seen on the next request. */
	write_text("token", "second-token-longer\n");
	ck_assert_int_eq(k8s_credential_get(config, &credential, &error), 0);
	ck_assert_str_eq(credential.token, "second-token-longer");

	/* Same size and times: not re-read until a 401 invalidates it. */
	snprintf(path, sizeof(path), "%s/token", tmpdir);
	ck_assert_int_eq(stat(path, &st), 0);
	write_text("token", "third--token-longer\n");
	times[0] = st.st_atim;
	times[1] = st.st_mtim;
	ck_assert_int_eq(utimensat(AT_FDCWD, path, times, 0), 0);
	ck_assert_int_eq(k8s_credential_get(config, &credential, &error), 0);
	ck_assert_str_eq(credential.token, "second-token-longer");
	ck_assert_int_eq(k8s_credential_invalidate(config), 1);
	ck_assert_int_eq(k8s_credential_get(config, &credential, &error), 0);
	ck_assert_str_eq(credential.token, "third--token-longer");

	/* An empty token file is an error naming the file. */
	write_text("token", "\n");
	ck_assert_int_eq(k8s_credential_get(config, &credential, &error), -1);
	ck_assert_ptr_nonnull(strstr(error.message, "token"));
	ck_assert_ptr_nonnull(strstr(error.message, "is empty"));
	k8s_kubeconfig_free(config);
}
END_TEST

START_TEST(test_static_token_cannot_refresh)
{
	struct k8s_config *config = NULL;
	struct sbx_error error;

	write_template("a.yaml", "current-context: x\nclusters:\n" CLUSTER("c", "https://h")
				 "users:\n" USER_TOKEN("u", "static") "contexts:\n"
				 CONTEXT("x", "c", "u", ""));
	set_kubeconfig("a.yaml");
	ck_assert_int_eq(k8s_kubeconfig_load(NULL, &config, &error), 0);
	ck_assert_int_eq(k8s_credential_invalidate(config), 0);
	k8s_kubeconfig_free(config);
}
END_TEST

/* ---- in-cluster ---- */

static void make_serviceaccount(const char *version, const char *token)
{
	char dir[512], path[1024], link_tmp[512], target[64], data[512];
	FILE *f;

	snprintf(dir, sizeof(dir), "%s/sa/..%s", tmpdir, version);
	ck_assert_int_eq(sbx_mkdir_p(dir, 0755), 0);
	snprintf(path, sizeof(path), "%s/token", dir);
	f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	fputs(token, f);
	fclose(f);
	/* The kubelet's atomic writer: a new timestamped directory, then ..data swapped. */
	snprintf(target, sizeof(target), "..%s", version);
	snprintf(link_tmp, sizeof(link_tmp), "%s/sa/..data_tmp", tmpdir);
	snprintf(data, sizeof(data), "%s/sa/..data", tmpdir);
	unlink(link_tmp);
	ck_assert_int_eq(symlink(target, link_tmp), 0);
	ck_assert_int_eq(rename(link_tmp, data), 0);
}

START_TEST(test_in_cluster)
{
	struct k8s_in_cluster_options options;
	struct k8s_config *config = NULL;
	struct k8s_credential credential;
	struct sbx_error error;
	char dir[512], path[1024], target[512];

	snprintf(dir, sizeof(dir), "%s/sa", tmpdir);
	options.serviceaccount_dir = dir;
	ck_assert_int_eq(k8s_kubeconfig_in_cluster(&options, &config, &error), -1);
	ck_assert_ptr_nonnull(strstr(error.message, "KUBERNETES_SERVICE_HOST"));

	setenv("KUBERNETES_SERVICE_HOST", "fd00::10", 1);
	setenv("KUBERNETES_SERVICE_PORT", "443", 1);
	make_serviceaccount("2024_01", "token-a");
	snprintf(path, sizeof(path), "%s/token", dir);
	ck_assert_int_eq(symlink("..data/token", path), 0);
	snprintf(path, sizeof(path), "%s/ca.crt", dir);
	snprintf(target, sizeof(target), "%s/ca.crt", tmpdir);
	ck_assert_int_eq(symlink(target, path), 0);

	/* The namespace file is missing: the error names it. */
	ck_assert_int_eq(k8s_kubeconfig_in_cluster(&options, &config, &error), -1);
	ck_assert_ptr_nonnull(strstr(error.message, "/sa/namespace"));

	write_text("sa/namespace", "ci-jobs\n");
	ck_assert_int_eq(k8s_kubeconfig_in_cluster(&options, &config, &error), 0);
	ck_assert_str_eq(config->server.base_url, "https://[fd00::10]:443");
	ck_assert_str_eq(config->namespace, "ci-jobs");
	ck_assert_int_eq(k8s_credential_get(config, &credential, &error), 0);
	ck_assert_str_eq(credential.token, "token-a");

	/* Rotation swaps the ..data symlink: the new token is used. */
	make_serviceaccount("2024_02", "token-b");
	ck_assert_int_eq(k8s_credential_get(config, &credential, &error), 0);
	ck_assert_str_eq(credential.token, "token-b");
	k8s_kubeconfig_free(config);

	/* load_default falls back to in-cluster when no kubeconfig exists. */
	setenv("HOME", tmpdir, 1);
	ck_assert_int_eq(k8s_kubeconfig_load_default(NULL, &options, &config, &error), 0);
	ck_assert_ptr_nonnull(strstr(config->origin, "in-cluster"));
	k8s_kubeconfig_free(config);
}
END_TEST

/* ---- exec credential plugins ---- */

static const char plugin_script[] =
	"#!/bin/sh\n"
	"dir=$(dirname \"$0\")\n"
	"n=$(cat \"$dir/count\" 2>/dev/null || echo 0)\n"
	"n=$((n + 1))\n"
	"echo $n > \"$dir/count\"\n"
	"printf '%s\\n' \"$KUBERNETES_EXEC_INFO\" > \"$dir/info\"\n"
	"printf '%s|%s|%s\\n' \"$1\" \"$2\" \"$PLUGIN_MODE\" > \"$dir/args\"\n"
	"if [ -f \"$dir/fail\" ]; then echo 'login required: run sso-login' >&2; exit 3; fi\n"
	"exp=$(cat \"$dir/expiry\")\n"
	"printf '{\"apiVersion\":\"client.authentication.k8s.io/v1\",\"kind\":\"ExecCredential\","
	"\"status\":{\"token\":\"tok-%s\",\"expirationTimestamp\":\"%s\"}}\\n' \"$n\" \"$exp\"\n";

static void write_expiry(int seconds_from_now)
{
	char text[64];
	time_t when = time(NULL) + seconds_from_now;
	struct tm tm;

	gmtime_r(&when, &tm);
	strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%SZ", &tm);
	write_text("expiry", text);
}

static void write_exec_kubeconfig(void)
{
	char path[512];

	write_text("plugin.sh", plugin_script);
	snprintf(path, sizeof(path), "%s/plugin.sh", tmpdir);
	ck_assert_int_eq(chmod(path, 0755), 0);
	write_template("a.yaml",
		       "current-context: x\nclusters:\n" CLUSTER("c", "https://h:6443")
		       "users:\n- name: u\n  user:\n    exec:\n      apiVersion: "
		       "client.authentication.k8s.io/v1\n      command: ./plugin.sh\n      args: "
		       "[\"get-token\", \"--cluster=c 1\"]\n      env:\n      - name: PLUGIN_MODE\n"
		       "        value: test\n      provideClusterInfo: true\n      installHint: "
		       "install the sso plugin\n      interactiveMode: Never\ncontexts:\n"
		       CONTEXT("x", "c", "u", ""));
	set_kubeconfig("a.yaml");
}

static int read_count(void)
{
	char path[512];
	FILE *f;
	int count = 0;

	snprintf(path, sizeof(path), "%s/count", tmpdir);
	f = fopen(path, "r");
	if (f == NULL)
		return 0;
	if (fscanf(f, "%d", &count) != 1)
		count = -1;
	fclose(f);
	return count;
}

/* Loads the configuration and fetches a credential in a separate process, as two sbx stages
 * would; returns the token it got. */
static void token_in_child(const char *cache_dir, char *token, size_t size)
{
	int fds[2];
	pid_t pid;
	ssize_t n;
	int status;

	ck_assert_int_eq(pipe(fds), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		struct k8s_kubeconfig_options options = { .credential_cache_dir = cache_dir };
		struct k8s_config *config = NULL;
		struct k8s_credential credential;
		struct sbx_error error;

		close(fds[0]);
		if (k8s_kubeconfig_load(&options, &config, &error) < 0 ||
		    k8s_credential_get(config, &credential, &error) < 0) {
			dprintf(fds[1], "error: %s", error.message);
			_exit(1);
		}
		dprintf(fds[1], "%s", credential.token);
		_exit(0);
	}
	close(fds[1]);
	n = read(fds[0], token, size - 1);
	close(fds[0]);
	ck_assert_int_ge(n, 0);
	token[n] = '\0';
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child failed: %s", token);
}

START_TEST(test_exec_plugin_cached_across_processes)
{
	char cache_dir[512], token[256], path[512], text[4096];
	struct stat st;
	FILE *f;

	write_exec_kubeconfig();
	write_expiry(3600);
	snprintf(cache_dir, sizeof(cache_dir), "%s/state/k8s-credentials", tmpdir);

	token_in_child(cache_dir, token, sizeof(token));
	ck_assert_str_eq(token, "tok-1");
	token_in_child(cache_dir, token, sizeof(token));
	ck_assert_str_eq(token, "tok-1");
	ck_assert_int_eq(read_count(), 1);

	/* The cache is private to the user. */
	ck_assert_int_eq(stat(cache_dir, &st), 0);
	ck_assert_int_eq(st.st_mode & 0777, 0700);

	/* The plugin got its arguments, its environment and the cluster information. */
	snprintf(path, sizeof(path), "%s/args", tmpdir);
	f = fopen(path, "r");
	ck_assert_ptr_nonnull(f);
	ck_assert_ptr_nonnull(fgets(text, sizeof(text), f));
	fclose(f);
	ck_assert_str_eq(text, "get-token|--cluster=c 1|test\n");
	snprintf(path, sizeof(path), "%s/info", tmpdir);
	f = fopen(path, "r");
	ck_assert_ptr_nonnull(f);
	ck_assert_ptr_nonnull(fgets(text, sizeof(text), f));
	fclose(f);
	ck_assert_ptr_nonnull(strstr(text, "\"kind\":\"ExecCredential\""));
	ck_assert_ptr_nonnull(strstr(text, "\"interactive\":false"));
	ck_assert_ptr_nonnull(strstr(text, "\"server\":\"https:\\/\\/h:6443\""));
	ck_assert_ptr_nonnull(strstr(text, "\"certificate-authority-data\":\""));
}
END_TEST

START_TEST(test_exec_plugin_rerun_after_expiry)
{
	char cache_dir[512], token[256];

	write_exec_kubeconfig();
	/* Valid for 4 s: with the 2 s refresh margin and whole-second timestamps that leaves
	 * at least 1 s of use, and it counts as expired 3 s later. */
	write_expiry(4);
	snprintf(cache_dir, sizeof(cache_dir), "%s/cache", tmpdir);
	token_in_child(cache_dir, token, sizeof(token));
	ck_assert_str_eq(token, "tok-1");
	token_in_child(cache_dir, token, sizeof(token));
	ck_assert_str_eq(token, "tok-1");
	sleep(3);
	write_expiry(3600);
	token_in_child(cache_dir, token, sizeof(token));
	ck_assert_str_eq(token, "tok-2");
	ck_assert_int_eq(read_count(), 2);
}
END_TEST

START_TEST(test_exec_plugin_invalidate_reruns)
{
	struct k8s_kubeconfig_options options = { 0 };
	struct k8s_config *config = NULL;
	struct k8s_credential credential;
	struct sbx_error error;
	char cache_dir[512], token[256];

	write_exec_kubeconfig();
	write_expiry(3600);
	snprintf(cache_dir, sizeof(cache_dir), "%s/cache", tmpdir);
	options.credential_cache_dir = cache_dir;
	ck_assert_int_eq(k8s_kubeconfig_load(&options, &config, &error), 0);
	ck_assert_int_eq(k8s_credential_get(config, &credential, &error), 0);
	ck_assert_str_eq(credential.token, "tok-1");
	ck_assert_int_eq(k8s_credential_get(config, &credential, &error), 0);
	ck_assert_str_eq(credential.token, "tok-1");
	ck_assert_int_eq(read_count(), 1);

	/* After a 401 the plugin runs again, and the rejected credential leaves the cache. */
	ck_assert_int_eq(k8s_credential_invalidate(config), 1);
	ck_assert_int_eq(k8s_credential_get(config, &credential, &error), 0);
	ck_assert_str_eq(credential.token, "tok-2");
	ck_assert_int_eq(read_count(), 2);
	token_in_child(cache_dir, token, sizeof(token));
	ck_assert_str_eq(token, "tok-2");
	ck_assert_int_eq(read_count(), 2);
	k8s_kubeconfig_free(config);
}
END_TEST

START_TEST(test_exec_plugin_failure)
{
	struct k8s_kubeconfig_options options = { 0 };
	struct k8s_config *config = NULL;
	struct k8s_credential credential;
	struct sbx_error error;

	write_exec_kubeconfig();
	write_text("fail", "");
	ck_assert_int_eq(k8s_kubeconfig_load(&options, &config, &error), 0);
	ck_assert_int_eq(k8s_credential_get(config, &credential, &error), -1);
	ck_assert_ptr_nonnull(strstr(error.message, "exited with status 3"));
	ck_assert_ptr_nonnull(strstr(error.message, "login required: run sso-login"));
	ck_assert_ptr_nonnull(strstr(error.message, "install the sso plugin"));
	ck_assert_ptr_nonnull(strstr(error.message, "context \"x\": user \"u\""));
	k8s_kubeconfig_free(config);
}
END_TEST

static const struct {
	const char *output;
	const char *expect_error;
	const char *expect_token;
} plugin_output_cases[] = {
	{ "{\"apiVersion\":\"client.authentication.k8s.io/v1\",\"kind\":\"ExecCredential\","
	  "\"status\":{\"token\":\"no-expiry\"}}",
	  NULL, "no-expiry" },
	{ "{\"apiVersion\":\"client.authentication.k8s.io/v1beta1\",\"kind\":\"ExecCredential\","
	  "\"status\":{\"token\":\"t\"}}",
	  "expected client.authentication.k8s.io/v1 ExecCredential", NULL },
	{ "{\"apiVersion\":\"client.authentication.k8s.io/v1\",\"kind\":\"ExecCredential\"}",
	  "printed no status", NULL },
	{ "{\"apiVersion\":\"client.authentication.k8s.io/v1\",\"kind\":\"ExecCredential\","
	  "\"status\":{}}",
	  "neither status.token nor", NULL },
	{ "{\"apiVersion\":\"client.authentication.k8s.io/v1\",\"kind\":\"ExecCredential\","
	  "\"status\":{\"token\":\"t\",\"expirationTimestamp\":\"tomorrow\"}}",
	  "invalid status.expirationTimestamp \"tomorrow\"", NULL },
	{ "{\"apiVersion\":\"client.authentication.k8s.io/v1\",\"kind\":\"ExecCredential\","
	  "\"status\":{\"clientCertificateData\":\"x\"}}",
	  "only one of clientCertificateData", NULL },
	{ "not json at all", "did not print an ExecCredential JSON object", NULL },
};

START_TEST(test_exec_plugin_output_table)
{
	struct k8s_config *config = NULL;
	struct k8s_credential credential;
	struct sbx_error error;
	char script[4096], path[512];

	snprintf(script, sizeof(script), "#!/bin/sh\ncat <<'EOF'\n%s\nEOF\n",
		 plugin_output_cases[_i].output);
	write_text("plugin.sh", script);
	snprintf(path, sizeof(path), "%s/plugin.sh", tmpdir);
	ck_assert_int_eq(chmod(path, 0755), 0);
	write_template("a.yaml", "current-context: x\nclusters:\n" CLUSTER("c", "https://h")
				 "users:\n- name: u\n  user:\n    exec:\n      apiVersion: "
				 "client.authentication.k8s.io/v1\n      command: @DIR@/plugin.sh\n"
				 "contexts:\n" CONTEXT("x", "c", "u", ""));
	set_kubeconfig("a.yaml");
	ck_assert_int_eq(k8s_kubeconfig_load(NULL, &config, &error), 0);
	if (plugin_output_cases[_i].expect_error != NULL) {
		ck_assert_int_eq(k8s_credential_get(config, &credential, &error), -1);
		ck_assert_msg(strstr(error.message, plugin_output_cases[_i].expect_error) != NULL,
			      "\"%s\" not in \"%s\"", plugin_output_cases[_i].expect_error,
			      error.message);
	} else {
		ck_assert_int_eq(k8s_credential_get(config, &credential, &error), 0);
		ck_assert_str_eq(credential.token, plugin_output_cases[_i].expect_token);
	}
	k8s_kubeconfig_free(config);
}
END_TEST

START_TEST(test_exec_plugin_missing_command)
{
	struct k8s_config *config = NULL;
	struct k8s_credential credential;
	struct sbx_error error;

	write_template("a.yaml", "current-context: x\nclusters:\n" CLUSTER("c", "https://h")
				 "users:\n- name: u\n  user:\n    exec:\n      apiVersion: "
				 "client.authentication.k8s.io/v1\n      command: "
				 "sbx-no-such-plugin\n      installHint: get it from the vendor\n"
				 "contexts:\n" CONTEXT("x", "c", "u", ""));
	set_kubeconfig("a.yaml");
	ck_assert_int_eq(k8s_kubeconfig_load(NULL, &config, &error), 0);
	ck_assert_int_eq(k8s_credential_get(config, &credential, &error), -1);
	ck_assert_ptr_nonnull(strstr(error.message, "sbx-no-such-plugin"));
	ck_assert_ptr_nonnull(strstr(error.message, "get it from the vendor"));
	k8s_kubeconfig_free(config);
}
END_TEST

/* ---- small parsers ---- */

static const struct {
	const char *url;
	int ok;
	const char *host;
	int port;
	const char *prefix;
} server_cases[] = {
	{ "https://example.com", 1, "example.com", 443, "" },
	{ "http://example.com", 1, "example.com", 80, "" },
	{ "https://10.0.0.1:6443", 1, "10.0.0.1", 6443, "" },
	{ "https://10.0.0.1:6443/", 1, "10.0.0.1", 6443, "" },
	{ "https://h/k8s/clusters/c-x", 1, "h", 443, "/k8s/clusters/c-x" },
	{ "https://[::1]:6443", 1, "::1", 6443, "" },
	{ "https://[::1]", 1, "::1", 443, "" },
	{ "ftp://h", 0, NULL, 0, NULL },
	{ "https://", 0, NULL, 0, NULL },
	{ "https://h:0", 0, NULL, 0, NULL },
	{ "https://h:65536", 0, NULL, 0, NULL },
	{ "https://h:12x", 0, NULL, 0, NULL },
	{ "https://[::1", 0, NULL, 0, NULL },
	{ "https://user@h", 0, NULL, 0, NULL },
	{ "https://h?x=1", 0, NULL, 0, NULL },
};

START_TEST(test_server_url_table)
{
	struct k8s_server server = { 0 };
	struct sbx_error error;
	int ret = k8s_kubeconfig_parse_server(server_cases[_i].url, &server, &error);

	ck_assert_msg((ret == 0) == server_cases[_i].ok, "%s: %s", server_cases[_i].url,
		      ret == 0 ? "accepted" : error.message);
	if (ret == 0) {
		ck_assert_str_eq(server.host, server_cases[_i].host);
		ck_assert_int_eq(server.port, server_cases[_i].port);
		ck_assert_str_eq(server.prefix, server_cases[_i].prefix);
		k8s_server_clear(&server);
	}
}
END_TEST

static const struct {
	const char *text;
	int ok;
	int64_t seconds;
} rfc3339_cases[] = {
	{ "1970-01-01T00:00:00Z", 1, 0 },
	{ "2026-01-01T00:00:00Z", 1, 1767225600 },
	{ "2026-01-01T00:00:00.123456789Z", 1, 1767225600 },
	{ "2026-01-01T01:00:00+01:00", 1, 1767225600 },
	{ "2025-12-31T23:00:00-01:00", 1, 1767225600 },
	{ "2026-01-01 00:00:00Z", 0, 0 },
	{ "2026-01-01T00:00:00", 0, 0 },
	{ "2026-13-01T00:00:00Z", 0, 0 },
	{ "2026-01-01T00:00:00Zjunk", 0, 0 },
	{ "2026-01-01T00:00:00.Z", 0, 0 },
	{ "", 0, 0 },
};

START_TEST(test_rfc3339_table)
{
	int64_t seconds = -1;
	int ret = k8s_parse_rfc3339(rfc3339_cases[_i].text, &seconds);

	ck_assert_msg((ret == 0) == rfc3339_cases[_i].ok, "%s", rfc3339_cases[_i].text);
	if (ret == 0)
		ck_assert_int_eq(seconds, rfc3339_cases[_i].seconds);
}
END_TEST

START_TEST(test_base64_decode)
{
	char *data = NULL;
	size_t length = 0;

	ck_assert_int_eq(k8s_base64_decode("aGVs\nbG8=", &data, &length), 0);
	ck_assert_uint_eq(length, 5);
	ck_assert_str_eq(data, "hello");
	free(data);
	ck_assert_int_eq(k8s_base64_decode("aGVsbA==", &data, &length), 0);
	ck_assert_uint_eq(length, 4);
	free(data);
	ck_assert_int_eq(k8s_base64_decode("aGVsbA=", &data, &length), -1);
	ck_assert_int_eq(k8s_base64_decode("a*==", &data, &length), -1);
}
END_TEST

int main(void)
{
	Suite *suite = suite_create("k8s_kubeconfig");
	TCase *tc = tcase_create("kubeconfig");
	SRunner *runner;
	int failed;

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 30);
	tcase_add_loop_test(tc, test_kubeconfig_load_table, 0,
			    (int) (sizeof(load_cases) / sizeof(load_cases[0])));
	tcase_add_test(tc, test_kubeconfig_explicit_path_no_merge);
	tcase_add_test(tc, test_kubeconfig_cluster_fields);
	tcase_add_test(tc, test_kubeconfig_insecure);
	tcase_add_test(tc, test_token_file_reread);
	tcase_add_test(tc, test_static_token_cannot_refresh);
	tcase_add_test(tc, test_in_cluster);
	tcase_add_test(tc, test_exec_plugin_cached_across_processes);
	tcase_add_test(tc, test_exec_plugin_rerun_after_expiry);
	tcase_add_test(tc, test_exec_plugin_invalidate_reruns);
	tcase_add_test(tc, test_exec_plugin_failure);
	tcase_add_loop_test(tc, test_exec_plugin_output_table, 0,
			    (int) (sizeof(plugin_output_cases) / sizeof(plugin_output_cases[0])));
	tcase_add_test(tc, test_exec_plugin_missing_command);
	tcase_add_loop_test(tc, test_server_url_table, 0,
			    (int) (sizeof(server_cases) / sizeof(server_cases[0])));
	tcase_add_loop_test(tc, test_rfc3339_table, 0,
			    (int) (sizeof(rfc3339_cases) / sizeof(rfc3339_cases[0])));
	tcase_add_test(tc, test_base64_decode);
	suite_add_tcase(suite, tc);
	runner = srunner_create(suite);
	srunner_run_all(runner, CK_NORMAL);
	failed = srunner_ntests_failed(runner);
	srunner_free(runner);
	return failed == 0 ? 0 : 1;
}
