/* SPDX-License-Identifier: MIT */
#include <arpa/inet.h>
#include <check.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "allowlist.h"
#include "error.h"

struct parse_case {
	const char *text;
	enum sbx_allow_kind kind;
	const char *host; /* HOST and WILDCARD */
	const char *address; /* CIDR, as inet_ntop writes it */
	unsigned prefix_length;
	uint16_t port;
};

static const struct parse_case valid_cases[] = {
	{ "example.com", SBX_ALLOW_HOST, "example.com", NULL, 0, 0 },
	{ "Example.COM.", SBX_ALLOW_HOST, "example.com", NULL, 0, 0 },
	{ "gitlab.example.com:443", SBX_ALLOW_HOST, "gitlab.example.com", NULL, 0, 443 },
	{ "a-b.c-d.example:65535", SBX_ALLOW_HOST, "a-b.c-d.example", NULL, 0, 65535 },
	{ "xn--bcher-kva.example", SBX_ALLOW_HOST, "xn--bcher-kva.example", NULL, 0, 0 },
	{ "a--b.example", SBX_ALLOW_HOST, "a--b.example", NULL, 0, 0 },
	{ "localhost", SBX_ALLOW_HOST, "localhost", NULL, 0, 0 },
	{ "*.example.com", SBX_ALLOW_WILDCARD, "example.com", NULL, 0, 0 },
	{ "*.Example.com.:8443", SBX_ALLOW_WILDCARD, "example.com", NULL, 0, 8443 },
	{ "192.0.2.1", SBX_ALLOW_CIDR, NULL, "192.0.2.1", 32, 0 },
	{ "192.0.2.1:22", SBX_ALLOW_CIDR, NULL, "192.0.2.1", 32, 22 },
	{ "10.0.0.0/8", SBX_ALLOW_CIDR, NULL, "10.0.0.0", 8, 0 },
	{ "10.0.0.0/8:443", SBX_ALLOW_CIDR, NULL, "10.0.0.0", 8, 443 },
	{ "0.0.0.0/0", SBX_ALLOW_CIDR, NULL, "0.0.0.0", 0, 0 },
	{ "2001:db8::1", SBX_ALLOW_CIDR, NULL, "2001:db8::1", 128, 0 },
	{ "[2001:db8::1]:443", SBX_ALLOW_CIDR, NULL, "2001:db8::1", 128, 443 },
	{ "[2001:DB8::1]", SBX_ALLOW_CIDR, NULL, "2001:db8::1", 128, 0 },
	{ "2001:db8::/32", SBX_ALLOW_CIDR, NULL, "2001:db8::", 32, 0 },
	{ "[2001:db8::/32]:443", SBX_ALLOW_CIDR, NULL, "2001:db8::", 32, 443 },
	{ "::1", SBX_ALLOW_CIDR, NULL, "::1", 128, 0 },
	{ "fe80::/10", SBX_ALLOW_CIDR, NULL, "fe80::", 10, 0 },
	/* An IPv4-mapped range is stored as the IPv4 range it maps. */
	{ "::ffff:10.0.0.0/104", SBX_ALLOW_CIDR, NULL, "10.0.0.0", 8, 0 },
};

struct invalid_case {
	const char *text;
	const char *message_part; /* expected in the error besides the entry itself */
};

static const struct invalid_case invalid_cases[] = {
	{ "", "empty" },
	{ "example.com:0", "invalid port" },
	{ "example.com:65536", "invalid port" },
	{ "example.com:", "invalid port" },
	{ "example.com:https", "invalid port" },
	{ "example.com:+443", "invalid port" },
	{ ":443", "host is missing" },
	{ "exa mple.com", "one entry only" },
	{ "a.example,b.example", "own list item or --allow option" },
	{ "a.example\tb.example", "one entry only" },
	{ "-x", "starts or ends with '-'" },
	{ "x-", "starts or ends with '-'" },
	{ "a.-b.c", "starts or ends with '-'" },
	{ "a-.b.c", "starts or ends with '-'" },
	{ "*.-b.example", "starts or ends with '-'" },
	{ "-x:443", "starts or ends with '-'" },
	{ "http://x.org/", "without a scheme or path" },
	{ "https://gitlab.example.com:443", "without a scheme or path" },
	{ "x.org/", "without a scheme or path" },
	{ "gitlab.example.com/group:443", "without a scheme or path" },
	{ "exa_mple.com", "'_'" },
	{ "a..example.com", "empty label" },
	{ ".example.com", "empty label" },
	{ "example.com..", "empty label" },
	{ "*", "'*' is allowed only" },
	{ "*.", "empty" },
	{ "a.*.example.com", "'*' is allowed only" },
	{ "*example.com", "'*' is allowed only" },
	{ "*.*.example.com", "'*' is allowed only" },
	{ "b\xc3\xbc" "cher.example", "non-ASCII" },
	{ "127.1", "dotted quad" },
	{ "0x7f000001", "dotted quad" },
	{ "host.123", "dotted quad" },
	{ "256.1.1.1", "dotted quad" },
	{ "10.0.0.0/33", "prefix length" },
	{ "10.0.0.0/", "prefix length" },
	{ "10.0.0.0/x", "prefix length" },
	{ "10.0.0.1/8", "10.0.0.0/8" },
	{ "10.0.0.0.0/8", "invalid IPv4 address" },
	{ "2001:db8::/129", "prefix length" },
	{ "2001:db8::1/32", "2001:db8::/32" },
	{ "2001:db8::zz", "invalid IPv6 address" },
	{ "[2001:db8::1", "missing ']'" },
	{ "[2001:db8::1]443", "only :port may follow" },
	{ "[192.0.2.1]:443", "only for IPv6" },
	{ "[example.com]", "only for IPv6" },
	{ "a.example.com\n", "control character" },
	{ "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx.example",
	  "longer than 63" },
};

/* Adds the entries of TEXT, separated by ", ", one sbx_allowlist_add() call each. */
static int add_entries(struct sbx_allowlist *list, const char *text, struct sbx_error *error)
{
	char *copy = strdup(text);
	char *saved = NULL;
	int rc = 0;

	ck_assert_ptr_nonnull(copy);
	for (char *entry = strtok_r(copy, ", ", &saved); entry != NULL && rc == 0;
	     entry = strtok_r(NULL, ", ", &saved))
		rc = sbx_allowlist_add(list, entry, error);
	free(copy);
	return rc;
}

START_TEST(entry_parse_valid_forms)
{
	const struct parse_case *c = &valid_cases[_i];
	struct sbx_allow_entry entry;
	struct sbx_error error = { 0 };

	ck_assert_msg(sbx_allow_entry_parse(c->text, &entry, &error) == 0, "%s: %s", c->text,
		      error.message);
	ck_assert_int_eq(entry.kind, c->kind);
	ck_assert_uint_eq(entry.port, c->port);
	if (c->kind == SBX_ALLOW_CIDR) {
		char shown[INET6_ADDRSTRLEN];

		ck_assert_ptr_null(entry.host);
		ck_assert_ptr_nonnull(inet_ntop(entry.family, entry.address, shown, sizeof(shown)));
		ck_assert_str_eq(shown, c->address);
		ck_assert_uint_eq(entry.prefix_length, c->prefix_length);
	} else {
		ck_assert_str_eq(entry.host, c->host);
	}
	free(entry.host);
}
END_TEST

/* True when TEXT has no bytes that error messages escape. */
static int all_printable(const char *text)
{
	for (; *text != '\0'; text++) {
		if ((unsigned char) *text < 0x20 || (unsigned char) *text >= 0x7f)
			return 0;
	}
	return 1;
}

START_TEST(entry_parse_invalid_forms)
{
	const struct invalid_case *c = &invalid_cases[_i];
	struct sbx_allow_entry entry = { .port = 4242 };
	struct sbx_error error = { 0 };
	char expected_name[512];

	ck_assert_msg(sbx_allow_entry_parse(c->text, &entry, &error) == -1, "%s parsed",
		      c->text);
	ck_assert_int_eq(error.error_class, SBX_ERROR_INVALID);
	/* The output parameter stays untouched on failure. */
	ck_assert_uint_eq(entry.port, 4242);
	ck_assert_msg(strstr(error.message, c->message_part) != NULL, "%s: %s", c->text,
		      error.message);
	ck_assert_msg(strstr(error.message, "*.domain") != NULL, "no accepted forms in: %s",
		      error.message);
	if (all_printable(c->text)) {
		snprintf(expected_name, sizeof(expected_name), "\"%s\"", c->text);
		ck_assert_msg(strstr(error.message, expected_name) != NULL,
			      "entry not named in: %s", error.message);
	}
}
END_TEST

START_TEST(entry_error_escapes_control_bytes)
{
	struct sbx_allow_entry entry;
	struct sbx_error error = { 0 };

	ck_assert_int_eq(sbx_allow_entry_parse("a.example\ncom", &entry, &error), -1);
	ck_assert_ptr_null(strchr(error.message, '\n'));
	ck_assert_ptr_nonnull(strstr(error.message, "\"a.example\\x0acom\""));
}
END_TEST

START_TEST(list_add_several_entries)
{
	struct sbx_allowlist list = { 0 };
	struct sbx_error error = { 0 };

	ck_assert_int_eq(sbx_allowlist_add(&list, "example.com", &error), 0);
	ck_assert_int_eq(sbx_allowlist_add(&list, "*.example.org", &error), 0);
	ck_assert_int_eq(sbx_allowlist_add(&list, "10.0.0.0/8", &error), 0);
	ck_assert_int_eq(sbx_allowlist_add(&list, "[::1]:80", &error), 0);
	ck_assert_uint_eq(list.count, 4);
	ck_assert_int_eq(list.entries[0].kind, SBX_ALLOW_HOST);
	ck_assert_int_eq(list.entries[1].kind, SBX_ALLOW_WILDCARD);
	ck_assert_int_eq(list.entries[2].kind, SBX_ALLOW_CIDR);
	ck_assert_int_eq(list.entries[3].kind, SBX_ALLOW_CIDR);
	ck_assert_uint_eq(list.entries[3].port, 80);
	sbx_allowlist_free(&list);
	ck_assert_uint_eq(list.count, 0);
	ck_assert_ptr_null(list.entries);
}
END_TEST

START_TEST(list_add_takes_one_entry)
{
	struct sbx_allowlist list = { 0 };
	struct sbx_error error = { 0 };

	ck_assert_int_eq(sbx_allowlist_add(&list, "example.com", &error), 0);
	ck_assert_int_eq(sbx_allowlist_add(&list, "a.example,b.example", &error), -1);
	ck_assert_ptr_nonnull(strstr(error.message, "\"a.example,b.example\""));
	ck_assert_ptr_nonnull(strstr(error.message, "one entry only"));
	ck_assert_uint_eq(list.count, 1);
	ck_assert_int_eq(sbx_allowlist_add(&list, " example.org", &error), -1);
	ck_assert_uint_eq(list.count, 1);
	ck_assert_int_eq(sbx_allowlist_add(&list, "", &error), -1);
	ck_assert_ptr_nonnull(strstr(error.message, "empty"));
	ck_assert_uint_eq(list.count, 1);
	sbx_allowlist_free(&list);
}
END_TEST

struct match_case {
	const char *name;
	uint16_t port;
	enum sbx_allow_verdict verdict;
};

static const char *const match_entries =
	"exact.example, *.wild.example, ported.example:8443, *.pwild.example:443, "
	"both.wild.example, 192.0.2.0/24, 198.51.100.7:22, [2001:db8::/32]:443, 2001:db8:1::5";

static const struct match_case match_cases[] = {
	{ "exact.example", 443, SBX_ALLOW_BY_HOST },
	{ "EXACT.Example.", 80, SBX_ALLOW_BY_HOST },
	{ "sub.exact.example", 443, SBX_ALLOW_DENIED },
	{ "exact.example.evil", 443, SBX_ALLOW_DENIED },
	{ "a.wild.example", 443, SBX_ALLOW_BY_WILDCARD },
	{ "a.b.wild.example", 1, SBX_ALLOW_BY_WILDCARD },
	{ "wild.example", 443, SBX_ALLOW_DENIED },
	{ "badwild.example", 443, SBX_ALLOW_DENIED },
	{ ".wild.example", 443, SBX_ALLOW_DENIED },
	/* An exact entry wins over a wildcard that also matches. */
	{ "both.wild.example", 443, SBX_ALLOW_BY_HOST },
	{ "ported.example", 8443, SBX_ALLOW_BY_HOST },
	{ "ported.example", 443, SBX_ALLOW_DENIED },
	{ "x.pwild.example", 443, SBX_ALLOW_BY_WILDCARD },
	{ "x.pwild.example", 80, SBX_ALLOW_DENIED },
	{ "192.0.2.55", 443, SBX_ALLOW_BY_CIDR },
	{ "192.0.3.1", 443, SBX_ALLOW_DENIED },
	{ "198.51.100.7", 22, SBX_ALLOW_BY_CIDR },
	{ "198.51.100.7", 23, SBX_ALLOW_DENIED },
	{ "::ffff:192.0.2.9", 443, SBX_ALLOW_BY_CIDR },
	{ "[::ffff:192.0.2.9]", 443, SBX_ALLOW_BY_CIDR },
	{ "2001:db8:ffff::1", 443, SBX_ALLOW_BY_CIDR },
	{ "[2001:db8::2]", 443, SBX_ALLOW_BY_CIDR },
	{ "2001:db8::2", 80, SBX_ALLOW_DENIED },
	{ "2001:db8:1::5", 80, SBX_ALLOW_BY_CIDR },
	{ "2001:db9::1", 443, SBX_ALLOW_DENIED },
	/* Numeric forms that resolvers read as IPv4 never match names. */
	{ "192.0.2", 443, SBX_ALLOW_DENIED },
	{ "3221225985", 443, SBX_ALLOW_DENIED },
	{ "exact_.example", 443, SBX_ALLOW_DENIED },
	{ "", 443, SBX_ALLOW_DENIED },
	{ "exact.example", 0, SBX_ALLOW_DENIED },
};

START_TEST(match_name_table)
{
	const struct match_case *c = &match_cases[_i];
	struct sbx_allowlist list = { 0 };
	struct sbx_error error = { 0 };

	ck_assert_msg(add_entries(&list, match_entries, &error) == 0, "%s", error.message);
	ck_assert_msg(sbx_allowlist_match_name(&list, c->name, c->port) == c->verdict,
		      "%s:%u: expected verdict %d", c->name, c->port, (int) c->verdict);
	sbx_allowlist_free(&list);
}
END_TEST

START_TEST(match_name_empty_list)
{
	struct sbx_allowlist list = { 0 };

	ck_assert_int_eq(sbx_allowlist_match_name(&list, "example.com", 443), SBX_ALLOW_DENIED);
	ck_assert_int_eq(sbx_allowlist_match_name(&list, "127.0.0.1", 443), SBX_ALLOW_DENIED);
}
END_TEST

struct address_case {
	const char *entries; /* NULL: an empty list */
	enum sbx_allow_verdict verdict;
	const char *address;
	uint16_t port;
	int permitted;
	const char *reason;
};

static const struct address_case address_cases[] = {
	{ NULL, SBX_ALLOW_BY_HOST, "93.184.215.14", 443, 1, NULL },
	{ NULL, SBX_ALLOW_BY_WILDCARD, "93.184.215.14", 443, 1, NULL },
	{ NULL, SBX_ALLOW_DENIED, "93.184.215.14", 443, 0, "not in allow-list" },
	{ NULL, SBX_ALLOW_BY_HOST, "127.0.0.1", 443, 0, "loopback" },
	{ NULL, SBX_ALLOW_BY_HOST, "127.9.8.7", 443, 0, "loopback" },
	{ NULL, SBX_ALLOW_BY_HOST, "::1", 443, 0, "loopback" },
	{ NULL, SBX_ALLOW_BY_HOST, "::ffff:127.0.0.1", 443, 0, "loopback" },
	{ NULL, SBX_ALLOW_BY_HOST, "64:ff9b::7f00:1", 443, 0, "loopback" },
	{ NULL, SBX_ALLOW_BY_HOST, "169.254.169.254", 80, 0, "link-local" },
	{ NULL, SBX_ALLOW_BY_HOST, "::ffff:169.254.169.254", 80, 0, "link-local" },
	{ NULL, SBX_ALLOW_BY_HOST, "fe80::1", 443, 0, "link-local" },
	{ NULL, SBX_ALLOW_BY_HOST, "febf::1", 443, 0, "link-local" },
	{ NULL, SBX_ALLOW_BY_HOST, "0.0.0.0", 443, 0, "unspecified" },
	{ NULL, SBX_ALLOW_BY_HOST, "::", 443, 0, "unspecified" },
	{ NULL, SBX_ALLOW_BY_HOST, "224.0.0.1", 443, 0, "multicast" },
	{ NULL, SBX_ALLOW_BY_HOST, "ff02::1", 443, 0, "multicast" },
	{ NULL, SBX_ALLOW_BY_HOST, "255.255.255.255", 443, 0, "broadcast" },
	{ NULL, SBX_ALLOW_BY_HOST, "240.0.0.1", 443, 0, "reserved" },
	{ NULL, SBX_ALLOW_BY_HOST, "::127.0.0.1", 443, 0, "reserved" },
	/* An exact host (and the CI server) may live on private addresses. */
	{ NULL, SBX_ALLOW_BY_HOST, "10.0.0.5", 443, 1, NULL },
	{ NULL, SBX_ALLOW_BY_HOST, "192.168.1.1", 443, 1, NULL },
	{ NULL, SBX_ALLOW_BY_HOST, "fd00::1", 443, 1, NULL },
	/* A wildcard match may not. */
	{ NULL, SBX_ALLOW_BY_WILDCARD, "10.0.0.5", 443, 0, "private" },
	{ NULL, SBX_ALLOW_BY_WILDCARD, "172.16.0.1", 443, 0, "private" },
	{ NULL, SBX_ALLOW_BY_WILDCARD, "172.31.255.255", 443, 0, "private" },
	{ NULL, SBX_ALLOW_BY_WILDCARD, "172.32.0.1", 443, 1, NULL },
	{ NULL, SBX_ALLOW_BY_WILDCARD, "192.168.0.1", 443, 0, "private" },
	{ NULL, SBX_ALLOW_BY_WILDCARD, "100.64.0.1", 443, 0, "private" },
	{ NULL, SBX_ALLOW_BY_WILDCARD, "100.128.0.1", 443, 1, NULL },
	{ NULL, SBX_ALLOW_BY_WILDCARD, "fd12:3456::1", 443, 0, "private" },
	{ NULL, SBX_ALLOW_BY_WILDCARD, "fc00::1", 443, 0, "private" },
	{ NULL, SBX_ALLOW_BY_WILDCARD, "::ffff:10.1.2.3", 443, 0, "private" },
	{ NULL, SBX_ALLOW_BY_WILDCARD, "2001:db8::1", 443, 1, NULL },
	{ NULL, SBX_ALLOW_BY_WILDCARD, "127.0.0.1", 443, 0, "loopback" },
	/* A CIDR entry lifts the rules for its range and port only. */
	{ "127.0.0.0/8", SBX_ALLOW_BY_HOST, "127.0.0.1", 443, 1, NULL },
	{ "127.0.0.0/8", SBX_ALLOW_BY_HOST, "::ffff:127.0.0.1", 443, 1, NULL },
	{ "127.0.0.1:8080", SBX_ALLOW_BY_HOST, "127.0.0.1", 8080, 1, NULL },
	{ "127.0.0.1:8080", SBX_ALLOW_BY_HOST, "127.0.0.1", 8081, 0, "loopback" },
	{ "169.254.169.254", SBX_ALLOW_BY_WILDCARD, "169.254.169.254", 80, 1, NULL },
	{ "10.0.0.0/8", SBX_ALLOW_BY_WILDCARD, "10.20.30.40", 443, 1, NULL },
	{ "10.0.0.0/8", SBX_ALLOW_BY_WILDCARD, "192.168.0.1", 443, 0, "private" },
	{ "fc00::/7", SBX_ALLOW_BY_WILDCARD, "fd00::1", 443, 1, NULL },
	{ "::1", SBX_ALLOW_BY_CIDR, "::1", 443, 1, NULL },
	{ "fe80::/10", SBX_ALLOW_BY_HOST, "fe80::1", 443, 1, NULL },
	/* A CIDR entry does not widen the verdict for names it does not cover. */
	{ "10.0.0.0/8", SBX_ALLOW_DENIED, "10.0.0.1", 443, 0, "not in allow-list" },
};

static void make_sockaddr(const char *text, uint16_t port, struct sockaddr_storage *storage)
{
	struct sockaddr_in *in = (struct sockaddr_in *) storage;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *) storage;

	memset(storage, 0, sizeof(*storage));
	if (inet_pton(AF_INET, text, &in->sin_addr) == 1) {
		in->sin_family = AF_INET;
		in->sin_port = htons(port);
		return;
	}
	ck_assert_msg(inet_pton(AF_INET6, text, &in6->sin6_addr) == 1, "bad test address %s",
		      text);
	in6->sin6_family = AF_INET6;
	in6->sin6_port = htons(port);
}

START_TEST(address_rules_table)
{
	const struct address_case *c = &address_cases[_i];
	struct sbx_allowlist list = { 0 };
	struct sbx_error error = { 0 };
	struct sockaddr_storage address;
	const char *reason = NULL;
	int permitted;

	if (c->entries != NULL)
		ck_assert_msg(add_entries(&list, c->entries, &error) == 0, "%s",
			      error.message);
	make_sockaddr(c->address, c->port, &address);
	permitted = sbx_allowlist_address_permitted(&list, c->verdict,
						    (struct sockaddr *) &address, c->port, &reason);
	ck_assert_msg(permitted == c->permitted, "%s port %u verdict %d: got %d (%s)",
		      c->address, c->port, (int) c->verdict, permitted,
		      reason != NULL ? reason : "");
	if (c->reason != NULL)
		ck_assert_str_eq(reason, c->reason);
	sbx_allowlist_free(&list);
}
END_TEST

/* A wildcard name that resolves to loopback is refused, judged on what the resolver returns. */
START_TEST(address_rules_resolved_localhost)
{
	struct sbx_allowlist list = { 0 };
	struct sbx_error error = { 0 };
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM };
	struct addrinfo *result = NULL, *ai;
	int checked = 0;

	ck_assert_int_eq(sbx_allowlist_add(&list, "*.example.com", &error), 0);
	ck_assert_int_eq(getaddrinfo("localhost", "443", &hints, &result), 0);
	for (ai = result; ai != NULL; ai = ai->ai_next) {
		const char *reason = NULL;

		ck_assert_int_eq(sbx_allowlist_address_permitted(&list, SBX_ALLOW_BY_WILDCARD,
								 ai->ai_addr, 443, &reason),
				 0);
		ck_assert_str_eq(reason, "loopback");
		checked++;
	}
	freeaddrinfo(result);
	ck_assert_int_gt(checked, 0);
	sbx_allowlist_free(&list);
}
END_TEST

START_TEST(address_rules_other_family)
{
	struct sockaddr address = { .sa_family = AF_UNIX };
	const char *reason = NULL;

	ck_assert_int_eq(
		sbx_allowlist_address_permitted(NULL, SBX_ALLOW_BY_HOST, &address, 80, &reason), 0);
	ck_assert_ptr_nonnull(reason);
}
END_TEST

START_TEST(normalize_host_forms)
{
	char buffer[300];

	ck_assert_int_eq(sbx_allow_normalize_host("GitLab.Example.COM.", buffer, sizeof(buffer)),
			 0);
	ck_assert_str_eq(buffer, "gitlab.example.com");
	ck_assert_int_eq(sbx_allow_normalize_host("a..b", buffer, sizeof(buffer)), -1);
	ck_assert_int_eq(sbx_allow_normalize_host("127.1", buffer, sizeof(buffer)), -1);
	ck_assert_int_eq(sbx_allow_normalize_host("a\"b", buffer, sizeof(buffer)), -1);
	ck_assert_int_eq(sbx_allow_normalize_host("example.com", buffer, 5), -1);
}
END_TEST

START_TEST(literal_is_local_ranges)
{
	static const char *const local[] = { "127.0.0.1", "127.1.2.3",	"0.0.0.0",
					     "169.254.169.254", "224.0.0.1", "::1",
					     "[::1]",	   "fe80::1",	"::ffff:127.0.0.1",
					     "ff02::1",	   "::" };
	static const char *const other[] = { "192.0.2.1", "10.0.0.1", "fd00::1", "2001:db8::1",
					     "gitlab.example.com", "localhost", "127.1", "" };
	const char *reason;

	for (size_t i = 0; i < sizeof(local) / sizeof(local[0]); i++) {
		reason = NULL;
		ck_assert_msg(sbx_allow_literal_is_local(local[i], &reason), "%s", local[i]);
		ck_assert_ptr_nonnull(reason);
	}
	for (size_t i = 0; i < sizeof(other) / sizeof(other[0]); i++)
		ck_assert_msg(!sbx_allow_literal_is_local(other[i], NULL), "%s", other[i]);
	ck_assert(sbx_allow_literal_is_local("169.254.169.254", &reason));
	ck_assert_str_eq(reason, "link-local");
}
END_TEST

static Suite *allowlist_suite(void)
{
	Suite *suite = suite_create("allowlist");
	TCase *parse = tcase_create("parse");
	TCase *match = tcase_create("match");
	TCase *address = tcase_create("address");

	tcase_add_loop_test(parse, entry_parse_valid_forms, 0,
			    (int) (sizeof(valid_cases) / sizeof(valid_cases[0])));
	tcase_add_loop_test(parse, entry_parse_invalid_forms, 0,
			    (int) (sizeof(invalid_cases) / sizeof(invalid_cases[0])));
	tcase_add_test(parse, entry_error_escapes_control_bytes);
	tcase_add_test(parse, list_add_several_entries);
	tcase_add_test(parse, list_add_takes_one_entry);
	tcase_add_test(parse, normalize_host_forms);
	suite_add_tcase(suite, parse);

	tcase_add_loop_test(match, match_name_table, 0,
			    (int) (sizeof(match_cases) / sizeof(match_cases[0])));
	tcase_add_test(match, match_name_empty_list);
	suite_add_tcase(suite, match);

	tcase_add_loop_test(address, address_rules_table, 0,
			    (int) (sizeof(address_cases) / sizeof(address_cases[0])));
	tcase_add_test(address, address_rules_resolved_localhost);
	tcase_add_test(address, address_rules_other_family);
	tcase_add_test(address, literal_is_local_ranges);
	suite_add_tcase(suite, address);
	return suite;
}

int main(void)
{
	SRunner *runner = srunner_create(allowlist_suite());
	int failed;

	srunner_run_all(runner, CK_NORMAL);
	failed = srunner_ntests_failed(runner);
	srunner_free(runner);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
