/* SPDX-License-Identifier: MIT */
#include <check.h>
#include <stdint.h>
#include <stdlib.h>

#include "util.h"

#define KIB 1024ULL
#define MIB (1024ULL * KIB)
#define GIB (1024ULL * MIB)
#define TIB (1024ULL * GIB)

static const struct {
	const char *text;
	uint64_t bytes;
} valid_sizes[] = {
	{ "0", 0 },
	{ "1", 1 },
	{ "1048576", MIB },
	{ "1K", KIB },
	{ "1k", KIB },
	{ "512M", 512 * MIB },
	{ "512m", 512 * MIB },
	{ "4G", 4 * GIB },
	{ "4g", 4 * GIB },
	{ "2T", 2 * TIB },
	{ "2t", 2 * TIB },
	/* Every way of writing the optional B or iB, in either case, means the same. */
	{ "4GB", 4 * GIB },
	{ "4Gb", 4 * GIB },
	{ "4gB", 4 * GIB },
	{ "4gb", 4 * GIB },
	{ "4GiB", 4 * GIB },
	{ "4Gib", 4 * GIB },
	{ "4GIB", 4 * GIB },
	{ "4giB", 4 * GIB },
	{ "4gib", 4 * GIB },
	{ "4Gi", 4 * GIB },
	{ "4gi", 4 * GIB },
	{ "4GI", 4 * GIB },
	{ "16777215T", 16777215ULL * TIB },
	{ "18446744073709551615", UINT64_MAX },
};

static const char *const invalid_sizes[] = {
	"",
	"G",
	"-1",
	"+1",
	" 1",
	"1 ",
	"1.5G",
	"12Q",
	"4GG",
	"4GiBB",
	"4GBi",
	"4Gx",
	"4iB",
	"4B",
	"4P",
	"0x10",
	/* 2^24 TiB is 2^64 bytes, one more than uint64_t holds. */
	"16777216T",
	"18446744073709551616",
};

START_TEST(parse_size_valid)
{
	uint64_t bytes = 12345;

	ck_assert_msg(sbx_parse_size(valid_sizes[_i].text, &bytes) == 0, "\"%s\" was rejected",
		      valid_sizes[_i].text);
	ck_assert_msg(bytes == valid_sizes[_i].bytes, "\"%s\" gave %llu bytes, expected %llu",
		      valid_sizes[_i].text, (unsigned long long) bytes,
		      (unsigned long long) valid_sizes[_i].bytes);
}
END_TEST

START_TEST(parse_size_invalid)
{
	uint64_t bytes = 12345;

	ck_assert_msg(sbx_parse_size(invalid_sizes[_i], &bytes) < 0, "\"%s\" was accepted",
		      invalid_sizes[_i]);
	/* A rejected size leaves the output alone. */
	ck_assert_uint_eq(bytes, 12345);
}
END_TEST

START_TEST(parse_size_null)
{
	uint64_t bytes = 12345;

	ck_assert_int_lt(sbx_parse_size(NULL, &bytes), 0);
	ck_assert_uint_eq(bytes, 12345);
}
END_TEST

static Suite *util_suite(void)
{
	Suite *suite = suite_create("util");
	TCase *tc = tcase_create("parse_size");

	tcase_add_loop_test(tc, parse_size_valid, 0, (int) SBX_ARRAY_SIZE(valid_sizes));
	tcase_add_loop_test(tc, parse_size_invalid, 0, (int) SBX_ARRAY_SIZE(invalid_sizes));
	tcase_add_test(tc, parse_size_null);
	suite_add_tcase(suite, tc);
	return suite;
}

int main(void)
{
	SRunner *runner = srunner_create(util_suite());
	int failed;

	srunner_run_all(runner, CK_NORMAL);
	failed = srunner_ntests_failed(runner);
	srunner_free(runner);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
