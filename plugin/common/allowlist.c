/* SPDX-License-Identifier: MIT */
#include <arpa/inet.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "allowlist.h"
#include "cleanup.h"
#include "error.h"

#define ACCEPTED_FORMS                                                                         \
	"use host, *.domain, an IPv4 or IPv6 address, or a CIDR, each with an optional :port " \
	"(1-65535); write IPv6 in brackets when a port follows, e.g. [2001:db8::1]:443 or "    \
	"[2001:db8::/32]:443"

/* Maximum length of an entry: a host name of 253 characters plus ":65535" and some slack. */
#define ENTRY_MAX_LENGTH 300
/* RFC 952 and RFC 1123: a label starts and ends with a letter or digit. */
#define LABEL_HYPHEN_REASON "a label of the name starts or ends with '-'"
/* RFC 1035 limits on names and labels. */
#define NAME_MAX_LENGTH 253
#define LABEL_MAX_LENGTH 63

/* An address in network byte order; IPv4 uses the first 4 bytes. */
struct ip_address {
	int family;
	unsigned char bytes[16];
};

/* Prefix of IPv4-mapped IPv6 addresses (::ffff:0:0/96), RFC 4291 section 2.5.5.2. */
static const unsigned char v4_mapped_prefix[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
/* NAT64 well-known prefix 64:ff9b::/96 (RFC 6052): the last 4 bytes are an IPv4 address. */
static const unsigned char nat64_prefix[12] = { 0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0 };

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static bool host_char_valid(char c)
{
	return (c >= 'a' && c <= 'z') || is_digit(c) || c == '-' || c == '.';
}

/* Copies TEXT into BUFFER with control and non-ASCII bytes as \xNN, for error messages. */
static const char *printable(const char *text, char *buffer, size_t size)
{
	size_t used = 0;

	for (; *text != '\0' && used + 5 < size; text++) {
		unsigned char c = (unsigned char) *text;

		if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\')
			used += (size_t) snprintf(buffer + used, size - used, "\\x%02x", c);
		else
			buffer[used++] = (char) c;
	}
	buffer[used] = '\0';
	return buffer;
}

/*
 * Normalises the LENGTH bytes of NAME into OUT (at least NAME_MAX_LENGTH + 2 bytes): lower case,
 * one trailing dot removed. Returns NULL on success, else a reason that fits a message such as
 * `host name "x": REASON`. REASON_BUFFER contains reasons that need formatting.
 */
static const char *normalize_name(const char *name, size_t length, char *out,
				  char *reason_buffer, size_t reason_size)
{
	size_t label_length = 0, i;

	if (length > 0 && name[length - 1] == '.')
		length--;
	if (length == 0)
		return "the name is empty";
	if (length > NAME_MAX_LENGTH)
		return "the name is longer than 253 characters";

	for (i = 0; i < length; i++) {
		unsigned char c = (unsigned char) name[i];

		if (c >= 0x80)
			return "the name contains non-ASCII characters; write internationalised "
			       "names in punycode (xn--...)";
		if (c >= 'A' && c <= 'Z')
			c = (unsigned char) (c - 'A' + 'a');
		if (!host_char_valid((char) c)) {
			if (c < 0x20 || c == 0x7f)
				snprintf(reason_buffer, reason_size,
					 "the name contains the control character \\x%02x", c);
			else
				snprintf(reason_buffer, reason_size,
					 "the name contains '%c'; host names use only a-z, 0-9, "
					 "'-' and '.'",
					 c);
			return reason_buffer;
		}
		if (c == '.') {
			if (label_length == 0)
				return "the name has an empty label";
			if (out[i - 1] == '-')
				return LABEL_HYPHEN_REASON;
			label_length = 0;
		} else if (c == '-' && label_length == 0) {
			return LABEL_HYPHEN_REASON;
		} else if (++label_length > LABEL_MAX_LENGTH) {
			return "a label of the name is longer than 63 characters";
		}
		out[i] = (char) c;
	}
	out[length] = '\0';
	if (label_length == 0)
		return "the name has an empty label";
	if (out[length - 1] == '-')
		return LABEL_HYPHEN_REASON;
	return NULL;
}

/*
 * True when NAME (normalised) is a number form that the resolver would read as an IPv4 address
 * although it is not in dotted-quad form ("127.1", "0x7f000001", "2130706433"), or whose last
 * label is numeric, which no top-level domain is. Such names never match host entries.
 */
static bool name_is_numeric(const char *name)
{
	const char *last = strrchr(name, '.');
	struct in_addr address;

	last = last == NULL ? name : last + 1;
	if (inet_aton(name, &address) != 0)
		return true;
	for (; *last != '\0'; last++) {
		if (!is_digit(*last))
			return false;
	}
	return true;
}

int sbx_allow_normalize_host(const char *name, char *buffer, size_t size)
{
	char normalized[NAME_MAX_LENGTH + 2];
	char reason[128];
	size_t length = strlen(name);

	if (normalize_name(name, length, normalized, reason, sizeof(reason)) != NULL ||
	    name_is_numeric(normalized) || strlen(normalized) >= size) {
		errno = EINVAL;
		return -1;
	}
	memcpy(buffer, normalized, strlen(normalized) + 1);
	return 0;
}

/* Parses a port of 1-65535 written in decimal without sign or spaces. */
static int parse_port(const char *text, uint16_t *port)
{
	unsigned long value = 0;
	size_t i;

	if (*text == '\0' || strlen(text) > 5)
		return -1;
	for (i = 0; text[i] != '\0'; i++) {
		if (!is_digit(text[i]))
			return -1;
		value = value * 10 + (unsigned long) (text[i] - '0');
	}
	if (value < 1 || value > 65535)
		return -1;
	*port = (uint16_t) value;
	return 0;
}

static size_t address_length(int family)
{
	return family == AF_INET ? 4 : 16;
}

/* True when the first PREFIX_LENGTH bits of A and B are equal. */
static bool prefix_equal(const unsigned char *a, const unsigned char *b, unsigned prefix_length)
{
	unsigned full = prefix_length / 8, rest = prefix_length % 8;
	unsigned char mask;

	if (memcmp(a, b, full) != 0)
		return false;
	if (rest == 0)
		return true;
	mask = (unsigned char) (0xff << (8 - rest));
	return (a[full] & mask) == (b[full] & mask);
}

/* True when bits after PREFIX_LENGTH are set in ADDRESS. */
static bool host_bits_set(const unsigned char *address, size_t length, unsigned prefix_length)
{
	size_t i;

	for (i = 0; i < length; i++) {
		unsigned first_bit = (unsigned) i * 8;
		unsigned char mask;

		if (first_bit + 8 <= prefix_length)
			continue;
		mask = first_bit >= prefix_length ? 0xff
						  : (unsigned char) (0xff >> (prefix_length - first_bit));
		if (address[i] & mask)
			return true;
	}
	return false;
}

static void clear_host_bits(unsigned char *address, size_t length, unsigned prefix_length)
{
	size_t i;

	for (i = 0; i < length; i++) {
		unsigned first_bit = (unsigned) i * 8;

		if (first_bit + 8 <= prefix_length)
			continue;
		if (first_bit >= prefix_length)
			address[i] = 0;
		else
			address[i] &= (unsigned char) (0xff << (8 - (prefix_length - first_bit)));
	}
}

/* Sets ERROR for ENTRY with PROBLEM (a formatted clause) and the accepted forms. */
static int entry_error(struct sbx_error *error, const char *entry, const char *problem)
{
	char shown[ENTRY_MAX_LENGTH * 4 + 8];

	return sbx_error_set(error, SBX_ERROR_INVALID, "allow-list entry \"%s\": %s; %s",
			     printable(entry, shown, sizeof(shown)), problem, ACCEPTED_FORMS);
}

/*
 * Parses ADDRESS_TEXT as an address of FAMILY (AF_INET or AF_INET6), optionally followed by
 * "/prefix", into ENTRY as a CIDR. An IPv4-mapped IPv6 range becomes the IPv4 range it maps.
 */
static int parse_cidr(const char *entry_text, char *address_text, int family,
		      struct sbx_allow_entry *entry, struct sbx_error *error)
{
	char problem[256];
	char *slash = strchr(address_text, '/');
	unsigned max_prefix = family == AF_INET ? 32 : 128;
	unsigned prefix_length = max_prefix;
	const char *family_name = family == AF_INET ? "IPv4" : "IPv6";

	if (slash != NULL) {
		const char *p = slash + 1;

		*slash = '\0';
		if (*p == '\0' || strlen(p) > 3)
			goto bad_prefix;
		prefix_length = 0;
		for (; *p != '\0'; p++) {
			if (!is_digit(*p))
				goto bad_prefix;
			prefix_length = prefix_length * 10 + (unsigned) (*p - '0');
		}
		if (prefix_length > max_prefix)
			goto bad_prefix;
	}
	if (inet_pton(family, address_text, entry->address) != 1) {
		snprintf(problem, sizeof(problem), "invalid %s address", family_name);
		return entry_error(error, entry_text, problem);
	}
	if (host_bits_set(entry->address, address_length(family), prefix_length)) {
		char network[INET6_ADDRSTRLEN];

		clear_host_bits(entry->address, address_length(family), prefix_length);
		inet_ntop(family, entry->address, network, sizeof(network));
		snprintf(problem, sizeof(problem),
			 "the address has bits set after the /%u prefix; write the network "
			 "address %s/%u",
			 prefix_length, network, prefix_length);
		return entry_error(error, entry_text, problem);
	}

	entry->kind = SBX_ALLOW_CIDR;
	entry->family = family;
	entry->prefix_length = prefix_length;
	if (family == AF_INET6 && prefix_length >= 96 &&
	    memcmp(entry->address, v4_mapped_prefix, sizeof(v4_mapped_prefix)) == 0) {
		memmove(entry->address, entry->address + 12, 4);
		memset(entry->address + 4, 0, 12);
		entry->family = AF_INET;
		entry->prefix_length = prefix_length - 96;
	}
	return 0;

bad_prefix:
	snprintf(problem, sizeof(problem), "invalid prefix length after '/'; use 0-%u for %s",
		 max_prefix, family_name);
	return entry_error(error, entry_text, problem);
}

static int parse_name(const char *entry_text, const char *name, struct sbx_allow_entry *entry,
		      struct sbx_error *error)
{
	char normalized[NAME_MAX_LENGTH + 2];
	char reason[128];
	char problem[256];
	const char *failure;
	bool wildcard = false;

	if (strncmp(name, "*.", 2) == 0) {
		wildcard = true;
		name += 2;
	}
	if (strchr(name, '*') != NULL)
		return entry_error(error, entry_text,
				   "'*' is allowed only as the whole first label, as in "
				   "*.example.com");

	failure = normalize_name(name, strlen(name), normalized, reason, sizeof(reason));
	if (failure != NULL) {
		snprintf(problem, sizeof(problem), "invalid host name: %s", failure);
		return entry_error(error, entry_text, problem);
	}
	if (name_is_numeric(normalized))
		return entry_error(error, entry_text,
				   "the name looks like a number or an IPv4 address in a form "
				   "other than dotted quad (a.b.c.d)");

	entry->host = strdup(normalized);
	if (entry->host == NULL)
		return sbx_error_errno(error, ENOMEM, "allow-list entry \"%s\"", normalized);
	entry->kind = wildcard ? SBX_ALLOW_WILDCARD : SBX_ALLOW_HOST;
	return 0;
}

/* True when HOST before its '/' is digits and dots, so the entry is meant as an IPv4 CIDR. */
static bool looks_like_ipv4_prefix(const char *host)
{
	size_t length = strcspn(host, "/");

	return length > 0 && strspn(host, "0123456789.") == length;
}

int sbx_allow_entry_parse(const char *text, struct sbx_allow_entry *entry,
			  struct sbx_error *error)
{
	struct sbx_allow_entry parsed = { 0 };
	char buffer[ENTRY_MAX_LENGTH + 1];
	char *host = buffer;
	char *port_text = NULL;
	size_t length = strlen(text);
	int colons = 0;
	char *p;

	if (length == 0)
		return entry_error(error, text, "the entry is empty");
	/* "a,b" is a mistake in a config list item and in --allow alike; each takes one entry. */
	if (strpbrk(text, ", \t") != NULL)
		return entry_error(error, text,
				   "one entry only, without commas or white space; give each entry "
				   "its own list item or --allow option");
	if (strstr(text, "://") != NULL)
		return entry_error(error, text,
				   "write the host name without a scheme or path, e.g. "
				   "gitlab.example.com:443");
	if (length > ENTRY_MAX_LENGTH)
		return entry_error(error, text, "the entry is longer than 300 characters");
	memcpy(buffer, text, length + 1);
	for (p = buffer; *p != '\0'; p++)
		colons += *p == ':';

	if (buffer[0] == '[') {
		char *close = strchr(buffer, ']');

		if (close == NULL)
			return entry_error(error, text, "missing ']' after the IPv6 address");
		*close = '\0';
		host = buffer + 1;
		if (close[1] == ':')
			port_text = close + 2;
		else if (close[1] != '\0')
			return entry_error(error, text,
					   "unexpected text after ']'; only :port may follow");
		if (strchr(host, ':') == NULL)
			return entry_error(error, text,
					   "brackets are only for IPv6 addresses; write IPv4 "
					   "addresses and names without them");
	} else if (colons == 1) {
		port_text = strchr(buffer, ':');
		*port_text++ = '\0';
	}

	if (port_text != NULL && parse_port(port_text, &parsed.port) < 0)
		return entry_error(error, text, "invalid port; use a number from 1 to 65535");
	if (*host == '\0')
		return entry_error(error, text, "the host is missing before the port");

	if (strchr(host, ':') != NULL) {
		if (parse_cidr(text, host, AF_INET6, &parsed, error) < 0)
			return -1;
	} else if (strchr(host, '/') != NULL && !looks_like_ipv4_prefix(host)) {
		return entry_error(error, text,
				   "write the host name without a scheme or path, e.g. "
				   "gitlab.example.com:443");
	} else if (strchr(host, '/') != NULL || inet_pton(AF_INET, host, parsed.address) == 1) {
		if (parse_cidr(text, host, AF_INET, &parsed, error) < 0)
			return -1;
	} else if (parse_name(text, host, &parsed, error) < 0) {
		return -1;
	}

	*entry = parsed;
	return 0;
}

static void entry_free(struct sbx_allow_entry *entry)
{
	free(entry->host);
	entry->host = NULL;
}

int sbx_allowlist_add(struct sbx_allowlist *list, const char *text, struct sbx_error *error)
{
	struct sbx_allow_entry parsed = { 0 };
	struct sbx_allow_entry *grown;

	if (sbx_allow_entry_parse(text, &parsed, error) < 0)
		return -1;
	grown = realloc(list->entries, (list->count + 1) * sizeof(*grown));
	if (grown == NULL) {
		entry_free(&parsed);
		return sbx_error_errno(error, ENOMEM, "allow-list");
	}
	list->entries = grown;
	list->entries[list->count++] = parsed;
	return 0;
}

void sbx_allowlist_free(struct sbx_allowlist *list)
{
	size_t i;

	if (list == NULL)
		return;
	for (i = 0; i < list->count; i++)
		entry_free(&list->entries[i]);
	free(list->entries);
	list->entries = NULL;
	list->count = 0;
}

/* Judges IPv4-mapped and NAT64 addresses as the IPv4 address they carry. */
static void unmap_address(struct ip_address *address)
{
	if (address->family != AF_INET6)
		return;
	if (memcmp(address->bytes, v4_mapped_prefix, sizeof(v4_mapped_prefix)) != 0 &&
	    memcmp(address->bytes, nat64_prefix, sizeof(nat64_prefix)) != 0)
		return;
	memmove(address->bytes, address->bytes + 12, 4);
	memset(address->bytes + 4, 0, 12);
	address->family = AF_INET;
}

/* Parses an IP literal, IPv6 with or without brackets. */
static int parse_ip_literal(const char *text, struct ip_address *address)
{
	char inner[INET6_ADDRSTRLEN + 1];
	size_t length = strlen(text);

	memset(address, 0, sizeof(*address));
	if (inet_pton(AF_INET, text, address->bytes) == 1) {
		address->family = AF_INET;
		return 0;
	}
	if (length >= 2 && text[0] == '[' && text[length - 1] == ']') {
		if (length - 2 >= sizeof(inner))
			return -1;
		memcpy(inner, text + 1, length - 2);
		inner[length - 2] = '\0';
		text = inner;
	}
	if (inet_pton(AF_INET6, text, address->bytes) == 1) {
		address->family = AF_INET6;
		return 0;
	}
	return -1;
}

static bool entry_port_matches(const struct sbx_allow_entry *entry, uint16_t port)
{
	return entry->port == 0 || entry->port == port;
}

static bool cidr_contains(const struct sbx_allow_entry *entry, const struct ip_address *address)
{
	return entry->kind == SBX_ALLOW_CIDR && entry->family == address->family &&
	       prefix_equal(entry->address, address->bytes, entry->prefix_length);
}

/* True when a CIDR entry of LIST contains ADDRESS (unmapped) for PORT. */
static bool cidr_covers(const struct sbx_allowlist *list, const struct ip_address *address,
			uint16_t port)
{
	size_t i;

	for (i = 0; i < list->count; i++) {
		if (cidr_contains(&list->entries[i], address) &&
		    entry_port_matches(&list->entries[i], port))
			return true;
	}
	return false;
}

enum sbx_allow_verdict sbx_allowlist_match_name(const struct sbx_allowlist *list,
						 const char *name, uint16_t port)
{
	char normalized[NAME_MAX_LENGTH + 2];
	char reason[128];
	struct ip_address address;
	enum sbx_allow_verdict verdict = SBX_ALLOW_DENIED;
	size_t name_length, i;

	if (list == NULL || name == NULL || port == 0)
		return SBX_ALLOW_DENIED;
	if (parse_ip_literal(name, &address) == 0) {
		unmap_address(&address);
		return cidr_covers(list, &address, port) ? SBX_ALLOW_BY_CIDR : SBX_ALLOW_DENIED;
	}
	if (normalize_name(name, strlen(name), normalized, reason, sizeof(reason)) != NULL ||
	    name_is_numeric(normalized))
		return SBX_ALLOW_DENIED;

	name_length = strlen(normalized);
	for (i = 0; i < list->count; i++) {
		const struct sbx_allow_entry *entry = &list->entries[i];
		size_t suffix_length;

		if (entry->host == NULL || !entry_port_matches(entry, port))
			continue;
		if (entry->kind == SBX_ALLOW_HOST && strcmp(entry->host, normalized) == 0)
			return SBX_ALLOW_BY_HOST;
		if (entry->kind != SBX_ALLOW_WILDCARD)
			continue;
		/* "*.example.com" covers "a.example.com" and "a.b.example.com", never
		 * "example.com" or "badexample.com". */
		suffix_length = strlen(entry->host);
		if (name_length > suffix_length + 1 &&
		    normalized[name_length - suffix_length - 1] == '.' &&
		    strcmp(normalized + name_length - suffix_length, entry->host) == 0)
			verdict = SBX_ALLOW_BY_WILDCARD;
	}
	return verdict;
}

struct address_range {
	int family;
	unsigned char bytes[16];
	unsigned prefix_length;
	const char *name;
	/* Refused only when the name matched a wildcard entry. */
	bool private_range;
};

/* Order matters: the first range that contains an address names it. */
static const struct address_range special_ranges[] = {
	{ AF_INET, { 0 }, 8, "unspecified", false },
	{ AF_INET, { 127 }, 8, "loopback", false },
	{ AF_INET, { 169, 254 }, 16, "link-local", false },
	{ AF_INET, { 224 }, 4, "multicast", false },
	{ AF_INET, { 255, 255, 255, 255 }, 32, "broadcast", false },
	{ AF_INET, { 240 }, 4, "reserved", false },
	{ AF_INET, { 10 }, 8, "private", true },
	{ AF_INET, { 172, 16 }, 12, "private", true },
	{ AF_INET, { 192, 168 }, 16, "private", true },
	{ AF_INET, { 100, 64 }, 10, "private", true }, /* RFC 6598 shared address space */
	{ AF_INET6, { 0 }, 128, "unspecified", false },
	{ AF_INET6, { [15] = 1 }, 128, "loopback", false },
	/* The rest of ::/8 (IPv4-compatible and other reserved forms) has no public use. */
	{ AF_INET6, { 0 }, 8, "reserved", false },
	{ AF_INET6, { 0xfe, 0x80 }, 10, "link-local", false },
	{ AF_INET6, { 0xff }, 8, "multicast", false },
	{ AF_INET6, { 0xfc }, 7, "private", true },
	/* Deprecated site-local addresses (RFC 3879) are private in practice. */
	{ AF_INET6, { 0xfe, 0xc0 }, 10, "private", true },
};

static const struct address_range *find_special_range(const struct ip_address *address)
{
	size_t i;

	for (i = 0; i < sizeof(special_ranges) / sizeof(special_ranges[0]); i++) {
		const struct address_range *range = &special_ranges[i];

		if (range->family == address->family &&
		    prefix_equal(range->bytes, address->bytes, range->prefix_length))
			return range;
	}
	return NULL;
}

bool sbx_allow_literal_is_local(const char *host, const char **reason)
{
	const struct address_range *range;
	struct ip_address address;

	if (host == NULL || parse_ip_literal(host, &address) < 0)
		return false;
	unmap_address(&address);
	range = find_special_range(&address);
	if (range == NULL || range->private_range)
		return false;
	if (reason != NULL)
		*reason = range->name;
	return true;
}

int sbx_allowlist_address_permitted(const struct sbx_allowlist *list,
				    enum sbx_allow_verdict verdict,
				    const struct sockaddr *address, uint16_t port,
				    const char **reason)
{
	const struct address_range *range;
	struct ip_address ip = { 0 };

	if (verdict == SBX_ALLOW_DENIED) {
		if (reason != NULL)
			*reason = "not in allow-list";
		return 0;
	}
	if (address->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *) (const void *) address;

		ip.family = AF_INET;
		memcpy(ip.bytes, &in->sin_addr, 4);
	} else if (address->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 =
			(const struct sockaddr_in6 *) (const void *) address;

		ip.family = AF_INET6;
		memcpy(ip.bytes, &in6->sin6_addr, 16);
	} else {
		if (reason != NULL)
			*reason = "not an IP address";
		return 0;
	}
	unmap_address(&ip);

	if (list != NULL && cidr_covers(list, &ip, port))
		return 1;
	range = find_special_range(&ip);
	if (range == NULL || (range->private_range && verdict != SBX_ALLOW_BY_WILDCARD))
		return 1;
	if (reason != NULL)
		*reason = range->name;
	return 0;
}
