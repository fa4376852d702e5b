/* SPDX-License-Identifier: MIT */
/*
 * Egress allow-lists. Entries are `host`, `*.domain`, an IPv4 or IPv6 address, or a CIDR, each
 * with an optional `:port` (IPv6 in brackets: `[2001:db8::1]:443`, `[2001:db8::/32]:443`); no
 * port means every port. `*.domain` matches names below domain, not domain itself.
 */
#ifndef SBX_ALLOWLIST_H
#define SBX_ALLOWLIST_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "sbx/executor.h"

enum sbx_allow_kind {
	SBX_ALLOW_HOST = 0,
	SBX_ALLOW_WILDCARD = 1,
	SBX_ALLOW_CIDR = 2, /* a single address is a CIDR of full length */
};

struct sbx_allow_entry {
	enum sbx_allow_kind kind;
	char *host; /* lower-case name for HOST; the suffix without "*." for WILDCARD */
	int family; /* AF_INET or AF_INET6 for CIDR */
	unsigned char address[16];
	unsigned prefix_length;
	uint16_t port; /* 0: every port */
};

struct sbx_allowlist {
	struct sbx_allow_entry *entries;
	size_t count;
};

/* Parses one entry; the error names ENTRY and the accepted forms. */
int sbx_allow_entry_parse(const char *text, struct sbx_allow_entry *entry,
			  struct sbx_error *error);
/* Parses one entry (as sbx_allow_entry_parse() does) and appends it to LIST. */
int sbx_allowlist_add(struct sbx_allowlist *list, const char *text, struct sbx_error *error);
void sbx_allowlist_free(struct sbx_allowlist *list);

/*
 * Writes NAME in the form allow-list entries use (lower case, one trailing dot removed) to
 * BUFFER of SIZE bytes. Fails with EINVAL for anything that is not a host name of a-z, 0-9, '-'
 * and '.', including numeric forms such as "127.1" that resolvers read as IPv4 addresses.
 */
int sbx_allow_normalize_host(const char *name, char *buffer, size_t size);

enum sbx_allow_verdict {
	SBX_ALLOW_DENIED = 0,
	/* The name matched an exact host entry: any resolved address may be used. */
	SBX_ALLOW_BY_HOST = 1,
	/* The name matched only a wildcard: resolved addresses must pass the address rules. */
	SBX_ALLOW_BY_WILDCARD = 2,
	/* The destination is an IP literal inside a CIDR entry. */
	SBX_ALLOW_BY_CIDR = 3,
};

/*
 * Decides whether NAME:PORT may be requested. NAME is normalised (lower case, one trailing dot
 * removed); an IP literal matches only CIDR entries.
 */
enum sbx_allow_verdict sbx_allowlist_match_name(const struct sbx_allowlist *list,
						 const char *name, uint16_t port);

/*
 * True when HOST is an IP literal (IPv6 with or without brackets) that the address rules refuse
 * unless an IP or CIDR entry covers it: unspecified, loopback, link-local, multicast, broadcast
 * or reserved. REASON (if not NULL) then gets the range's name, such as "loopback".
 */
bool sbx_allow_literal_is_local(const char *host, const char **reason);

/*
 * Decides whether a resolved ADDRESS may be connected to, given how the name was allowed.
 * Loopback, link-local, unspecified, multicast, broadcast and reserved addresses are refused
 * unless an IP or CIDR entry covers them; after a wildcard match, private ranges (RFC 1918,
 * RFC 6598, fc00::/7) are refused too unless an IP or CIDR entry covers them. IPv4-mapped and NAT64 (64:ff9b::/96)
 * IPv6 addresses are judged as the IPv4 address they carry. Returns 1 when the address is
 * permitted and 0 when not; on refusal REASON (if not NULL) gets a short ASCII reason such as
 * "loopback" or "private".
 */
int sbx_allowlist_address_permitted(const struct sbx_allowlist *list,
				    enum sbx_allow_verdict verdict,
				    const struct sockaddr *address, uint16_t port,
				    const char **reason);

#endif /* SBX_ALLOWLIST_H */
