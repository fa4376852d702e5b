/* SPDX-License-Identifier: MIT */
/* Mount plan construction: root entries, masks, root file system selection, /etc files. */
#include <check.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "mounts.h"
#include "util.h"

static char root[PATH_MAX];

static void setup(void)
{
	char path[PATH_MAX + 32];

	snprintf(root, sizeof(root), "/tmp/sbx-test-mounts-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(root));
	/* A small root file system: directories, a file, symlinks and entries the init makes
	 * itself. */
	const char *dirs[] = { "usr", "etc", "home", "proc", "tmp", "builds", "var", NULL };

	for (size_t i = 0; dirs[i] != NULL; i++) {
		snprintf(path, sizeof(path), "%s/%s", root, dirs[i]);
		ck_assert_int_eq(mkdir(path, 0755), 0);
	}
	snprintf(path, sizeof(path), "%s/bin", root);
	ck_assert_int_eq(symlink("usr/bin", path), 0);
	snprintf(path, sizeof(path), "%s/marker", root);
	ck_assert_int_eq(close(open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0644)), 0);
	snprintf(path, sizeof(path), "%s/fifo", root);
	ck_assert_int_eq(mkfifo(path, 0600), 0);
}

static void teardown(void)
{
	sbx_remove_tree(root);
}

static struct sbx_config *load_config(const char *yaml)
{
	char path[PATH_MAX + 32];
	struct sbx_config *config = NULL;
	struct sbx_error error = { 0 };
	FILE *file;

	snprintf(path, sizeof(path), "%s.yaml", root);
	file = fopen(path, "w");
	ck_assert_ptr_nonnull(file);
	fputs(yaml, file);
	fclose(file);
	ck_assert_msg(sbx_config_load(path, &config, &error) == 0, "%s", error.message);
	unlink(path);
	return config;
}

static const struct sbx_mounts_entry *find_entry(const struct sbx_mounts_plan *plan,
						 const char *name)
{
	for (size_t i = 0; i < plan->entry_count; i++)
		if (strcmp(plan->entries[i].name, name) == 0)
			return &plan->entries[i];
	return NULL;
}

static int has_mask(const struct sbx_mounts_plan *plan, const char *path)
{
	for (size_t i = 0; i < plan->mask_count; i++)
		if (strcmp(plan->masks[i], path) == 0)
			return 1;
	return 0;
}

static struct sbx_mounts_sources sources_for(const char *root_path)
{
	struct sbx_mounts_sources sources = {
		.root_path = root_path,
		.builds_dir = "/b",
		.cache_dir = "/c",
		.etc_dir = "/e",
	};
	return sources;
}

START_TEST(plan_lists_root_entries)
{
	struct sbx_config *config = load_config("local:\n  masked_paths: [/opt/secret/]\n");
	struct sbx_mounts_sources sources = sources_for(root);
	struct sbx_mounts_plan plan;
	struct sbx_error error = { 0 };
	const struct sbx_mounts_entry *entry;

	ck_assert_int_eq(sbx_mounts_plan_build(config, &sources, "/var/lib/sbx", "/srv/cache",
					       "/tmp/runner-tmp", &plan, &error),
			 0);
	ck_assert_ptr_nonnull(entry = find_entry(&plan, "usr"));
	ck_assert_int_eq(entry->kind, SBX_MOUNTS_BIND_DIR);
	ck_assert_ptr_nonnull(entry = find_entry(&plan, "bin"));
	ck_assert_int_eq(entry->kind, SBX_MOUNTS_SYMLINK);
	ck_assert_str_eq(entry->link_target, "usr/bin");
	ck_assert_ptr_nonnull(entry = find_entry(&plan, "marker"));
	ck_assert_int_eq(entry->kind, SBX_MOUNTS_BIND_FILE);
	/* A masked top-level directory is never bound, only its mount point made. */
	ck_assert_ptr_nonnull(entry = find_entry(&plan, "home"));
	ck_assert_int_eq(entry->kind, SBX_MOUNTS_EMPTY_DIR);
	/* What the init mounts itself, and special files, are left out. */
	ck_assert_ptr_null(find_entry(&plan, "proc"));
	ck_assert_ptr_null(find_entry(&plan, "tmp"));
	ck_assert_ptr_null(find_entry(&plan, "builds"));
	ck_assert_ptr_null(find_entry(&plan, "fifo"));
	/* Sorted by name. */
	for (size_t i = 1; i < plan.entry_count; i++)
		ck_assert_int_lt(strcmp(plan.entries[i - 1].name, plan.entries[i].name), 0);

	ck_assert(has_mask(&plan, "/root"));
	ck_assert(has_mask(&plan, "/run"));
	ck_assert(has_mask(&plan, "/sys/fs/cgroup"));
	ck_assert(has_mask(&plan, "/var/lib/sbx"));
	ck_assert(has_mask(&plan, "/srv/cache"));
	ck_assert(has_mask(&plan, "/tmp/runner-tmp"));
	ck_assert(has_mask(&plan, "/opt/secret"));
	ck_assert_int_eq(plan.root_fd, -1);
	ck_assert_str_eq(plan.builds_dir, "/b");
	sbx_mounts_plan_free(&plan);
	sbx_config_free(config);
}
END_TEST

START_TEST(plan_skips_tmp_as_extra_mask_and_dedups)
{
	struct sbx_config *config = load_config("local:\n  masked_paths: [/root, /root/]\n");
	struct sbx_mounts_sources sources = sources_for(root);
	struct sbx_mounts_plan plan;
	struct sbx_error error = { 0 };
	size_t roots = 0;

	/* /tmp is the sandbox's own tmpfs: masking it would hide nothing of the host. */
	ck_assert_int_eq(sbx_mounts_plan_build(config, &sources, NULL, NULL, "/tmp", &plan, &error),
			 0);
	ck_assert(!has_mask(&plan, "/tmp"));
	for (size_t i = 0; i < plan.mask_count; i++)
		roots += strcmp(plan.masks[i], "/root") == 0;
	ck_assert_uint_eq(roots, 1);
	sbx_mounts_plan_free(&plan);
	sbx_config_free(config);
}
END_TEST

START_TEST(plan_rejects_bad_root)
{
	struct sbx_config *config = load_config("shell: bash\n");
	struct sbx_mounts_sources sources = sources_for("/nonexistent/sbx-root");
	struct sbx_mounts_plan plan;
	struct sbx_error error = { 0 };

	ck_assert_int_eq(sbx_mounts_plan_build(config, &sources, NULL, NULL, NULL, &plan, &error),
			 -1);
	ck_assert_ptr_nonnull(strstr(error.message, "/nonexistent/sbx-root"));
	ck_assert_ptr_nonnull(strstr(error.message, "local.rootfs"));
	sbx_config_free(config);
}
END_TEST

START_TEST(select_rootfs_by_image)
{
	char yaml[PATH_MAX * 2];
	struct sbx_config *config;
	struct sbx_error error = { 0 };
	const char *rootfs = NULL;
	int ignored = -1;

	snprintf(yaml, sizeof(yaml),
		 "local:\n  rootfs: /srv/default\n  images:\n    \"debian:12\": %s\n"
		 "    \"alpine*\": /srv/alpine\n  unmapped_image: ignore\n",
		 root);
	config = load_config(yaml);
	ck_assert_int_eq(sbx_mounts_select_rootfs(config, "debian:12", &rootfs, &ignored, &error), 0);
	ck_assert_str_eq(rootfs, root);
	ck_assert_int_eq(ignored, 0);
	ck_assert_int_eq(sbx_mounts_select_rootfs(config, "alpine:3.20", &rootfs, &ignored, &error),
			 0);
	ck_assert_str_eq(rootfs, "/srv/alpine");
	ck_assert_int_eq(sbx_mounts_select_rootfs(config, NULL, &rootfs, &ignored, &error), 0);
	ck_assert_str_eq(rootfs, "/srv/default");
	ck_assert_int_eq(ignored, 0);
	ck_assert_int_eq(sbx_mounts_select_rootfs(config, "ubuntu", &rootfs, &ignored, &error), 0);
	ck_assert_str_eq(rootfs, "/srv/default");
	ck_assert_int_eq(ignored, 1);
	sbx_config_free(config);

	config = load_config("local:\n  unmapped_image: reject\n");
	ck_assert_int_eq(sbx_mounts_select_rootfs(config, "ubuntu", &rootfs, &ignored, &error), -1);
	ck_assert_int_eq(error.error_class, SBX_ERROR_INVALID);
	ck_assert_ptr_nonnull(strstr(error.message, "\"ubuntu\""));
	ck_assert_ptr_nonnull(strstr(error.message, "local.images"));
	sbx_config_free(config);
}
END_TEST

START_TEST(etc_files_generated)
{
	char etc[PATH_MAX + 16], path[PATH_MAX + 32];
	struct sbx_error error = { 0 };
	char *text = NULL;
	struct stat st;

	snprintf(etc, sizeof(etc), "%s/etc-out", root);
	ck_assert_int_eq(sbx_mounts_write_etc(etc, "builder", 1234, 2345, &error), 0);
	snprintf(path, sizeof(path), "%s/passwd", etc);
	ck_assert_int_eq(sbx_read_file(path, 4096, &text, NULL, &error), 0);
	ck_assert_ptr_nonnull(strstr(text, "ci:x:1234:2345:"));
	ck_assert_ptr_nonnull(strstr(text, ":/tmp/home:"));
	free(text);
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_int_eq(st.st_mode & 0777, 0644);
	snprintf(path, sizeof(path), "%s/hosts", etc);
	ck_assert_int_eq(sbx_read_file(path, 4096, &text, NULL, &error), 0);
	ck_assert_ptr_nonnull(strstr(text, "127.0.0.1\tlocalhost"));
	ck_assert_ptr_nonnull(strstr(text, "builder"));
	free(text);
	snprintf(path, sizeof(path), "%s/resolv.conf", etc);
	ck_assert_int_eq(sbx_read_file(path, 4096, &text, NULL, &error), 0);
	ck_assert_ptr_nonnull(strstr(text, "nameserver 127.0.0.1"));
	free(text);
	for (size_t i = 0; i < SBX_MOUNTS_ETC_FILES; i++) {
		snprintf(path, sizeof(path), "%s/%s", etc, sbx_mounts_etc_names[i]);
		ck_assert_int_eq(access(path, R_OK), 0);
	}
}
END_TEST

static Suite *mounts_suite(void)
{
	Suite *suite = suite_create("local_mounts");
	TCase *tc = tcase_create("mounts");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, plan_lists_root_entries);
	tcase_add_test(tc, plan_skips_tmp_as_extra_mask_and_dedups);
	tcase_add_test(tc, plan_rejects_bad_root);
	tcase_add_test(tc, select_rootfs_by_image);
	tcase_add_test(tc, etc_files_generated);
	suite_add_tcase(suite, tc);
	return suite;
}

int main(void)
{
	SRunner *runner = srunner_create(mounts_suite());
	int failed;

	srunner_run_all(runner, CK_NORMAL);
	failed = srunner_ntests_failed(runner);
	srunner_free(runner);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
