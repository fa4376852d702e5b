/* SPDX-License-Identifier: MIT */
/*
 * The agent-sandbox backend's pure parts: its configuration section, the choice of warm pool,
 * the sandbox-name-hash, label selectors, and the check of other NetworkPolicies against the
 * job's allow-list.
 */
#include <check.h>
#include <json-c/json.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent_sandbox.h"
#include "config.h"
#include "util.h"

static char temp_dir[PATH_MAX];

static void make_temp_dir(void)
{
	snprintf(temp_dir, sizeof(temp_dir), "/tmp/sbx-test-agent-sandbox-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(temp_dir));
}

static void remove_temp_dir(void)
{
	sbx_remove_tree(temp_dir);
}

/* Loads TEXT; returns the configuration, or NULL with the message in ERROR. */
static struct sbx_config *load(const char *text, struct sbx_error *error)
{
	struct sbx_config *config = NULL;
	char *path;

	ck_assert_int_ge(asprintf(&path, "%s/config.yaml", temp_dir), 0);
	ck_assert(sbx_write_file_atomic(path, text, strlen(text), 0644, 0, error) == 0);
	if (sbx_config_load(path, &config, error) < 0)
		config = NULL;
	free(path);
	return config;
}

static const char full_config[] =
	"backend: agent-sandbox\n"
	"agent_sandbox:\n"
	"  namespace: ci\n"
	"  warm_pools:\n"
	"    \"debian:12\": exact-pool\n"
	"    \"registry.example.com/*\": short-prefix\n"
	"    \"registry.example.com/ci/*\": long-prefix\n"
	"    \"*\": every-pool\n"
	"  allowed_images: [\"direct/*\"]\n"
	"  pod_template:\n"
	"    spec:\n"
	"      containers: [{name: job, command: [sleep, infinity]}]\n"
	"      securityContext: {runAsUser: 1000, runAsNonRoot: true}\n"
	"  labels: {example.com/team: ci}\n"
	"  pod_labels: {sandbox.users.io/ci: \"true\"}\n"
	"  dns:\n"
	"    cidrs: [169.254.20.10/32]\n"
	"  probe:\n"
	"    destination: \"192.0.2.1:80\"\n"
	"    timeout: 7\n"
	"  accepted_policies: [shared-egress]\n"
	"  disruption_protection: shared-pdb\n"
	"  ready_timeout: 42\n";

START_TEST(config_section_parses)
{
	struct sbx_error error = { 0 };
	struct sbx_config *config = load(full_config, &error);
	const struct sbx_agent_sandbox_config *settings;
	struct json_object *user;

	ck_assert_msg(config != NULL, "%s", error.message);
	settings = &config->agent_sandbox;
	ck_assert_str_eq(settings->namespace, "ci");
	ck_assert_uint_eq(settings->warm_pool_count, 4);
	ck_assert_str_eq(settings->warm_pools[1].pattern, "registry.example.com/*");
	ck_assert_str_eq(settings->warm_pools[1].pool, "short-prefix");
	ck_assert_uint_eq(settings->allowed_images.count, 1);
	user = as_json_get(settings->pod_template, "spec.securityContext.runAsUser");
	ck_assert(json_object_is_type(user, json_type_int));
	ck_assert_int_eq(json_object_get_int(user), 1000);
	ck_assert(json_object_get_boolean(
		as_json_get(settings->pod_template, "spec.securityContext.runAsNonRoot")));
	ck_assert_str_eq(settings->labels.keys[0], "example.com/team");
	ck_assert_str_eq(settings->labels.values[0], "ci");
	ck_assert_int_eq(settings->dns.allow, 1);
	ck_assert_str_eq(settings->dns.namespace, "kube-system");
	ck_assert_str_eq(settings->dns.pod_labels.keys[0], "k8s-app");
	ck_assert_str_eq(settings->probe.destination, "192.0.2.1:80");
	ck_assert_int_eq(settings->probe.timeout, 7);
	ck_assert_int_eq(settings->probe.required, 1);
	ck_assert_int_eq(settings->disruption_protection, SBX_DISRUPTION_SHARED);
	ck_assert_int_eq(settings->ready_timeout, 42);
	ck_assert_str_eq(settings->step_dir, "/tmp/sbx");
	ck_assert_int_eq(settings->automount_service_account_token, 0);
	ck_assert_int_eq(as_settings_check(config, &error), 0);
	sbx_config_free(config);
}
END_TEST

static const struct {
	const char *text;
	const char *expected;
} bad_configs[] = {
	{ "agent_sandbox:\n  namespace: CI\n", "invalid name \"CI\"" },
	{ "agent_sandbox:\n  warm_pools: {\"a*b\": pool}\n", "invalid image pattern \"a*b\"" },
	{ "agent_sandbox:\n  warm_pools: {\"debian:12\": Pool_1}\n",
	  "invalid SandboxWarmPool name \"Pool_1\"" },
	{ "agent_sandbox:\n  labels: {\"bad key/x/y\": v}\n", "invalid label key" },
	{ "agent_sandbox:\n  labels: {team: \"-x\"}\n", "invalid label value \"-x\"" },
	{ "agent_sandbox:\n  disruption_protection: always\n",
	  "use none, per-job-pdb or shared-pdb" },
	{ "agent_sandbox:\n  namspace: ci\n", "did you mean \"namespace\"" },
	{ "agent_sandbox:\n  probe: {timeout: 0}\n", "key \"agent_sandbox.probe.timeout\"" },
};

START_TEST(config_rejects_bad_values)
{
	struct sbx_error error = { 0 };
	struct sbx_config *config = load(bad_configs[_i].text, &error);

	ck_assert_ptr_null(config);
	ck_assert_msg(strstr(error.message, bad_configs[_i].expected) != NULL,
		      "expected \"%s\" in \"%s\"", bad_configs[_i].expected, error.message);
}
END_TEST

static const struct {
	const char *text;
	const char *expected;
} refused_settings[] = {
	{ "network:\n  user_allow: [\"*.example.com:443\"]\n",
	  "wildcard entry \"*.example.com:443\" cannot be enforced" },
	{ "agent_sandbox:\n  pod_labels: {example.com/team: ci}\n",
	  "label \"example.com/team\" is outside the allowed domains" },
	{ "agent_sandbox:\n  probe: {destination: \"gitlab.example.com:443\"}\n",
	  "is not an IP address with a port" },
	{ "agent_sandbox:\n  pod_template: {spec: {}}\n", "at least one container" },
	{ "agent_sandbox:\n  allowed_images: [\"*\"]\n", "would let a job run any image" },
	{ "agent_sandbox:\n  allowed_images: [\"reg/*/x\"]\n",
	  "invalid image pattern \"reg/*/x\"" },
};

START_TEST(settings_refused)
{
	struct sbx_error error = { 0 };
	struct sbx_config *config = load(refused_settings[_i].text, &error);

	ck_assert_msg(config != NULL, "%s", error.message);
	ck_assert_int_eq(as_settings_check(config, &error), -1);
	ck_assert_msg(strstr(error.message, refused_settings[_i].expected) != NULL,
		      "expected \"%s\" in \"%s\"", refused_settings[_i].expected, error.message);
	sbx_config_free(config);
}
END_TEST

START_TEST(pool_selection_order)
{
	struct sbx_error error = { 0 };
	struct sbx_config *config = load(full_config, &error);
	const char *pool = "unset";

	ck_assert_msg(config != NULL, "%s", error.message);
	ck_assert_int_eq(as_select_pool(config, "debian:12", &pool, &error), 0);
	ck_assert_str_eq(pool, "exact-pool");
	ck_assert_int_eq(as_select_pool(config, "registry.example.com/ci/node:20", &pool, &error),
			 0);
	ck_assert_str_eq(pool, "long-prefix");
	ck_assert_int_eq(as_select_pool(config, "registry.example.com/x:1", &pool, &error), 0);
	ck_assert_str_eq(pool, "short-prefix");
	ck_assert_int_eq(as_select_pool(config, "direct/app:1", &pool, &error), 0);
	ck_assert_ptr_null(pool);
	ck_assert_int_eq(as_select_pool(config, "alpine:3", &pool, &error), 0);
	ck_assert_str_eq(pool, "every-pool");
	ck_assert_int_eq(as_select_pool(config, NULL, &pool, &error), 0);
	ck_assert_str_eq(pool, "every-pool");
	sbx_config_free(config);

	config = load("agent_sandbox:\n  warm_pools: {\"debian:12\": p}\n", &error);
	ck_assert_msg(config != NULL, "%s", error.message);
	ck_assert_int_eq(as_select_pool(config, "alpine:3", &pool, &error), -1);
	ck_assert_int_eq(error.error_class, SBX_ERROR_BUILD);
	ck_assert(strstr(error.message, "image \"alpine:3\" is not offered") != NULL);
	sbx_config_free(config);
}
END_TEST

START_TEST(name_hash_matches_controller)
{
	char hash[9];

	/* Values of the controller's NameHash (FNV-1a 32-bit). */
	as_name_hash("j42-0123abcd", hash);
	ck_assert_str_eq(hash, "2fc444f6");
	as_name_hash("", hash);
	ck_assert_str_eq(hash, "811c9dc5");
	as_name_hash("ci-pool-x7k2p", hash);
	ck_assert_str_eq(hash, "0f890feb");
}
END_TEST

START_TEST(selectors_match_labels)
{
	struct json_object *labels = json_tokener_parse("{\"app\": \"ci\", \"tier\": \"job\"}");
	static const struct {
		const char *selector;
		int matches;
	} cases[] = {
		{ "{}", 1 },
		{ "{\"matchLabels\": {\"app\": \"ci\"}}", 1 },
		{ "{\"matchLabels\": {\"app\": \"web\"}}", 0 },
		{ "{\"matchExpressions\": [{\"key\": \"tier\", \"operator\": \"In\", "
		  "\"values\": [\"job\", \"x\"]}]}",
		  1 },
		{ "{\"matchExpressions\": [{\"key\": \"tier\", \"operator\": \"NotIn\", "
		  "\"values\": [\"job\"]}]}",
		  0 },
		{ "{\"matchExpressions\": [{\"key\": \"zone\", \"operator\": \"Exists\"}]}", 0 },
		{ "{\"matchExpressions\": [{\"key\": \"zone\", \"operator\": \"DoesNotExist\"}]}", 1 },
	};

	for (size_t i = 0; i < SBX_ARRAY_SIZE(cases); i++) {
		struct json_object *selector = json_tokener_parse(cases[i].selector);

		ck_assert_msg(as_selector_matches(selector, labels) == cases[i].matches, "%s",
			      cases[i].selector);
		json_object_put(selector);
	}
	json_object_put(labels);
}
END_TEST

START_TEST(other_policies_within_allow_list)
{
	struct sbx_allowlist list = { 0 };
	struct as_egress egress = { 0 };
	struct sbx_error error = { 0 };
	static const struct {
		const char *spec;
		int within;
		const char *reason;
	} cases[] = {
		{ "{\"policyTypes\": [\"Ingress\"], \"ingress\": [{}]}", 1, NULL },
		{ "{\"policyTypes\": [\"Egress\"], \"egress\": []}", 1, NULL },
		{ "{\"policyTypes\": [\"Egress\"], \"egress\": [{}]}", 0, "every destination" },
		{ "{\"egress\": [{\"ports\": [{\"protocol\": \"UDP\", \"port\": 53}]}]}", 1, NULL },
		{ "{\"egress\": [{\"to\": [{\"ipBlock\": {\"cidr\": \"10.1.2.0/25\"}}]}]}", 1, NULL },
		{ "{\"egress\": [{\"to\": [{\"ipBlock\": {\"cidr\": \"10.1.0.0/16\"}}]}]}", 0,
		  "10.1.0.0/16" },
		{ "{\"egress\": [{\"to\": [{\"ipBlock\": {\"cidr\": \"198.51.100.7/32\"}}], "
		  "\"ports\": [{\"protocol\": \"TCP\", \"port\": 443}]}]}",
		  1, NULL },
		{ "{\"egress\": [{\"to\": [{\"ipBlock\": {\"cidr\": \"198.51.100.7/32\"}}]}]}", 0,
		  "on every port" },
		{ "{\"egress\": [{\"to\": [{\"podSelector\": {}}]}]}", 0, "selectors" },
	};

	ck_assert_int_eq(sbx_allowlist_add(&list, "10.1.2.0/24", &error), 0);
	ck_assert_int_eq(sbx_allowlist_add(&list, "198.51.100.7:443", &error), 0);
	ck_assert_msg(as_egress_resolve(&list, &egress, &error) == 0, "%s", error.message);
	ck_assert_uint_eq(egress.count, 2);
	for (size_t i = 0; i < SBX_ARRAY_SIZE(cases); i++) {
		struct json_object *policy = json_object_new_object();
		char reason[256] = "";

		json_object_object_add(policy, "spec", json_tokener_parse(cases[i].spec));
		ck_assert_msg(as_netpol_within(policy, &egress, 1, reason, sizeof(reason)) ==
				      cases[i].within,
			      "%s: %s", cases[i].spec, reason);
		if (cases[i].reason != NULL)
			ck_assert_msg(strstr(reason, cases[i].reason) != NULL, "%s: %s",
				      cases[i].spec, reason);
		json_object_put(policy);
	}
	as_egress_clear(&egress);
	sbx_allowlist_free(&list);
}
END_TEST

START_TEST(egress_skips_local_ci_server)
{
	static const char *const urls[] = { "http://127.0.0.1:9/", "http://169.254.169.254/",
					    "https://[::1]:8443/", "http://0.0.0.0:80/" };
	struct sbx_config *config = NULL;
	struct sbx_allowlist list = { 0 };
	struct sbx_error error = { 0 };

	ck_assert_int_eq(sbx_config_load(NULL, &config, &error), 0);
	config->network.allow_ci_server = 1;
	for (size_t i = 0; i < SBX_ARRAY_SIZE(urls); i++) {
		ck_assert_msg(as_egress_allowlist(config, urls[i], &list, &error) == 0, "%s: %s",
			      urls[i], error.message);
		ck_assert_msg(list.count == 0, "%s added %zu entries", urls[i], list.count);
		sbx_allowlist_free(&list);
	}
	ck_assert_int_eq(as_egress_allowlist(config, "https://gitlab-ci-token:t@192.0.2.5:8443/g",
					     &list, &error),
			 0);
	ck_assert_uint_eq(list.count, 1);
	ck_assert_uint_eq(list.entries[0].port, 8443);
	sbx_allowlist_free(&list);
	sbx_config_free(config);
}
END_TEST

static Suite *agent_sandbox_suite(void)
{
	Suite *suite = suite_create("agent_sandbox");
	TCase *config = tcase_create("config");
	TCase *logic = tcase_create("logic");

	tcase_add_checked_fixture(config, make_temp_dir, remove_temp_dir);
	tcase_add_test(config, config_section_parses);
	tcase_add_loop_test(config, config_rejects_bad_values, 0, SBX_ARRAY_SIZE(bad_configs));
	tcase_add_loop_test(config, settings_refused, 0, SBX_ARRAY_SIZE(refused_settings));
	tcase_add_test(config, pool_selection_order);
	suite_add_tcase(suite, config);
	tcase_add_test(logic, name_hash_matches_controller);
	tcase_add_test(logic, selectors_match_labels);
	tcase_add_test(logic, other_policies_within_allow_list);
	tcase_add_test(logic, egress_skips_local_ci_server);
	suite_add_tcase(suite, logic);
	return suite;
}

int main(void)
{
	SRunner *runner = srunner_create(agent_sandbox_suite());
	int failed;

	srunner_run_all(runner, CK_NORMAL);
	failed = srunner_ntests_failed(runner);
	srunner_free(runner);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
