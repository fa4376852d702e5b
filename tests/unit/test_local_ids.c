/* SPDX-License-Identifier: MIT */
/* Id map planning of the local backend: root, subordinate ranges, runner-uid fallback. */
#include <check.h>
#include <json-c/json.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "ids.h"

static char temp_dir[PATH_MAX];
static char subuid_path[PATH_MAX + 16];
static char subgid_path[PATH_MAX + 16];

static void write_text(const char *path, const char *text)
{
	FILE *file = fopen(path, "w");

	ck_assert_ptr_nonnull(file);
	fputs(text, file);
	fclose(file);
}

static void setup(void)
{
	snprintf(temp_dir, sizeof(temp_dir), "/tmp/sbx-test-ids-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(temp_dir));
	snprintf(subuid_path, sizeof(subuid_path), "%s/subuid", temp_dir);
	snprintf(subgid_path, sizeof(subgid_path), "%s/subgid", temp_dir);
}

static void teardown(void)
{
	unlink(subuid_path);
	unlink(subgid_path);
	rmdir(temp_dir);
}

static struct sbx_config *load_defaults(void)
{
	struct sbx_config *config = NULL;
	struct sbx_error error = { 0 };

	ck_assert_int_eq(sbx_config_load(NULL, &config, &error), 0);
	return config;
}

static struct sbx_ids_host unprivileged_host(void)
{
	struct sbx_ids_host host = {
		.euid = 1500,
		.egid = 1600,
		.user_name = "runner",
		.subuid_path = subuid_path,
		.subgid_path = subgid_path,
		.newuidmap_path = "/usr/bin/newuidmap",
		.newgidmap_path = "/usr/bin/newgidmap",
	};
	return host;
}

START_TEST(root_mode_maps_range_at_base)
{
	struct sbx_config *config = load_defaults();
	struct sbx_ids_host host = { .euid = 0, .egid = 0 };
	struct sbx_id_map map;
	struct sbx_error error = { 0 };
	char text[128];

	ck_assert_int_eq(sbx_ids_plan(config, &host, &map, &error), 0);
	ck_assert_int_eq(map.mode, SBX_IDS_ROOT);
	ck_assert_uint_eq(map.uid_count, 1);
	ck_assert_uint_eq(map.uid[0].inside, 0);
	ck_assert_uint_eq(map.uid[0].outside, 1879048192u);
	ck_assert_uint_eq(map.uid[0].count, 65536);
	ck_assert_uint_eq(map.host_uid, 1879048192u + 1000);
	ck_assert_uint_eq(map.host_gid, 1879048192u + 1000);
	ck_assert_int_eq(sbx_ids_format(map.gid, map.gid_count, text, sizeof(text)), 0);
	ck_assert_str_eq(text, "0 1879048192 65536\n");
	sbx_config_free(config);
}
END_TEST

START_TEST(root_mode_refused_without_root)
{
	struct sbx_config *config = load_defaults();
	struct sbx_ids_host host = unprivileged_host();
	struct sbx_id_map map;
	struct sbx_error error = { 0 };

	config->local.mode = SBX_LOCAL_MODE_ROOT;
	ck_assert_int_eq(sbx_ids_plan(config, &host, &map, &error), -1);
	ck_assert_int_eq(error.error_class, SBX_ERROR_INVALID);
	ck_assert_ptr_nonnull(strstr(error.message, "local.mode"));
	sbx_config_free(config);
}
END_TEST

START_TEST(unprivileged_uses_subordinate_range)
{
	struct sbx_config *config = load_defaults();
	struct sbx_ids_host host = unprivileged_host();
	struct sbx_id_map map;
	struct sbx_error error = { 0 };
	char text[128];

	write_text(subuid_path, "# comment\nother:100000:65536\nrunner:200000:65536\n");
	write_text(subgid_path, "1500:300000:70000\n");
	ck_assert_int_eq(sbx_ids_plan(config, &host, &map, &error), 0);
	ck_assert_int_eq(map.mode, SBX_IDS_SUBID);
	ck_assert_int_eq(sbx_ids_format(map.uid, map.uid_count, text, sizeof(text)), 0);
	ck_assert_str_eq(text, "0 1500 1\n1 200000 65536\n");
	/* A range longer than 65536 ids is cut to the range the namespace uses. */
	ck_assert_int_eq(sbx_ids_format(map.gid, map.gid_count, text, sizeof(text)), 0);
	ck_assert_str_eq(text, "0 1600 1\n1 300000 65536\n");
	/* Job uid 1000 is the 1000th subordinate id. */
	ck_assert_uint_eq(map.host_uid, 200000 + 999);
	ck_assert_uint_eq(map.host_gid, 300000 + 999);
	ck_assert_str_eq(map.newuidmap, "/usr/bin/newuidmap");
	sbx_config_free(config);
}
END_TEST

START_TEST(unprivileged_without_range_refused)
{
	struct sbx_config *config = load_defaults();
	struct sbx_ids_host host = unprivileged_host();
	struct sbx_id_map map;
	struct sbx_error error = { 0 };

	write_text(subuid_path, "other:100000:65536\n");
	write_text(subgid_path, "other:100000:65536\n");
	ck_assert_int_eq(sbx_ids_plan(config, &host, &map, &error), -1);
	ck_assert_int_eq(error.error_class, SBX_ERROR_INVALID);
	ck_assert_ptr_nonnull(strstr(error.message, "runner"));
	ck_assert_ptr_nonnull(strstr(error.message, "allow_runner_uid"));
	sbx_config_free(config);
}
END_TEST

START_TEST(unprivileged_without_helpers_refused)
{
	struct sbx_config *config = load_defaults();
	struct sbx_ids_host host = unprivileged_host();
	struct sbx_id_map map;
	struct sbx_error error = { 0 };

	write_text(subuid_path, "runner:200000:65536\n");
	write_text(subgid_path, "runner:200000:65536\n");
	host.newuidmap_path = NULL;
	ck_assert_int_eq(sbx_ids_plan(config, &host, &map, &error), -1);
	ck_assert_ptr_nonnull(strstr(error.message, "uidmap"));
	sbx_config_free(config);
}
END_TEST

START_TEST(runner_uid_only_when_allowed)
{
	struct sbx_config *config = load_defaults();
	struct sbx_ids_host host = unprivileged_host();
	struct sbx_id_map map;
	struct sbx_error error = { 0 };
	char text[128];

	host.subuid_path = "/nonexistent/subuid";
	config->local.allow_runner_uid = 1;
	ck_assert_int_eq(sbx_ids_plan(config, &host, &map, &error), 0);
	ck_assert_int_eq(map.mode, SBX_IDS_RUNNER);
	ck_assert_int_eq(sbx_ids_format(map.uid, map.uid_count, text, sizeof(text)), 0);
	ck_assert_str_eq(text, "1000 1500 1\n");
	ck_assert_uint_eq(map.host_uid, 1500);
	sbx_config_free(config);
}
END_TEST

START_TEST(job_uid_outside_range_refused)
{
	struct sbx_config *config = load_defaults();
	struct sbx_ids_host host = unprivileged_host();
	struct sbx_id_map map;
	struct sbx_error error = { 0 };

	write_text(subuid_path, "runner:200000:500\n");
	write_text(subgid_path, "runner:200000:500\n");
	ck_assert_int_eq(sbx_ids_plan(config, &host, &map, &error), -1);
	ck_assert_ptr_nonnull(strstr(error.message, "local.job_uid"));
	sbx_config_free(config);
}
END_TEST

START_TEST(parse_subid_edge_cases)
{
	uint32_t start = 0, count = 0;

	ck_assert_int_eq(sbx_ids_parse_subid("runner:5:10", "runner", 7, &start, &count), 0);
	ck_assert_uint_eq(start, 5);
	ck_assert_uint_eq(count, 10);
	/* Only the whole name matches, and numeric entries match the uid. */
	ck_assert_int_eq(sbx_ids_parse_subid("runner2:5:10\n", "runner", 7, &start, &count), -1);
	ck_assert_int_eq(sbx_ids_parse_subid("7:9:11\n", "runner", 7, &start, &count), 0);
	ck_assert_uint_eq(start, 9);
	/* Malformed, zero-length and overflowing ranges are skipped. */
	ck_assert_int_eq(sbx_ids_parse_subid("runner:x:10\nrunner:5:0\nrunner:4294967295:2\n",
					     "runner", 7, &start, &count),
			 -1);
	ck_assert_int_eq(sbx_ids_parse_subid("", "runner", 7, &start, &count), -1);
}
END_TEST

START_TEST(json_round_trip)
{
	struct sbx_config *config = load_defaults();
	struct sbx_ids_host host = unprivileged_host();
	struct sbx_id_map map, restored;
	struct sbx_error error = { 0 };
	struct json_object *object;

	write_text(subuid_path, "runner:200000:65536\n");
	write_text(subgid_path, "runner:300000:65536\n");
	ck_assert_int_eq(sbx_ids_plan(config, &host, &map, &error), 0);
	object = sbx_ids_to_json(&map);
	ck_assert_ptr_nonnull(object);
	ck_assert_int_eq(sbx_ids_from_json(object, &restored, &error), 0);
	ck_assert_int_eq(restored.mode, SBX_IDS_SUBID);
	ck_assert_uint_eq(restored.uid_count, 2);
	ck_assert_uint_eq(restored.uid[1].outside, 200000);
	ck_assert_uint_eq(restored.gid[1].outside, 300000);
	ck_assert_uint_eq(restored.host_uid, map.host_uid);
	json_object_put(object);

	object = json_tokener_parse("{\"mode\": \"root\", \"uid_map\": []}");
	ck_assert_int_eq(sbx_ids_from_json(object, &restored, &error), -1);
	json_object_put(object);
	sbx_config_free(config);
}
END_TEST

static Suite *ids_suite(void)
{
	Suite *suite = suite_create("local_ids");
	TCase *tc = tcase_create("ids");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, root_mode_maps_range_at_base);
	tcase_add_test(tc, root_mode_refused_without_root);
	tcase_add_test(tc, unprivileged_uses_subordinate_range);
	tcase_add_test(tc, unprivileged_without_range_refused);
	tcase_add_test(tc, unprivileged_without_helpers_refused);
	tcase_add_test(tc, runner_uid_only_when_allowed);
	tcase_add_test(tc, job_uid_outside_range_refused);
	tcase_add_test(tc, parse_subid_edge_cases);
	tcase_add_test(tc, json_round_trip);
	suite_add_tcase(suite, tc);
	return suite;
}

int main(void)
{
	SRunner *runner = srunner_create(ids_suite());
	int failed;

	srunner_run_all(runner, CK_NORMAL);
	failed = srunner_ntests_failed(runner);
	srunner_free(runner);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
