/* SPDX-License-Identifier: MIT */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "config.h"
#include "egress.h"
#include "error.h"
#include "log.h"

int sbx_egress_ci_server_entry(const char *url, char *entry, size_t size,
			       struct sbx_error *error)
{
	const char *scheme_end, *host, *host_end, *port = NULL;
	size_t scheme_length, host_length, port_length = 0;
	const char *default_port;

	scheme_end = url != NULL ? strstr(url, "://") : NULL;
	if (scheme_end == NULL)
		goto invalid;
	scheme_length = (size_t) (scheme_end - url);
	if (scheme_length == 5 && strncasecmp(url, "https", 5) == 0)
		default_port = "443";
	else if (scheme_length == 4 && strncasecmp(url, "http", 4) == 0)
		default_port = "80";
	else
		goto invalid;

	host = scheme_end + 3;
	/* Credentials in the URL would end before '@'; a CI server URL never has them. */
	if (host[0] == '[') {
		host_end = strchr(host, ']');
		if (host_end == NULL)
			goto invalid;
		host_end++;
	} else {
		host_end = host + strcspn(host, ":/?#");
	}
	host_length = (size_t) (host_end - host);
	if (host_length == 0 || memchr(host, '@', host_length) != NULL)
		goto invalid;
	if (*host_end == ':') {
		port = host_end + 1;
		port_length = strspn(port, "0123456789");
		if (port_length == 0 || port_length > 5 ||
		    (port[port_length] != '\0' && strchr("/?#", port[port_length]) == NULL))
			goto invalid;
	} else if (*host_end != '\0' && strchr("/?#", *host_end) == NULL) {
		goto invalid;
	}
	if (port == NULL) {
		port = default_port;
		port_length = strlen(default_port);
	}
	if ((size_t) snprintf(entry, size, "%.*s:%.*s", (int) host_length, host, (int) port_length,
			      port) >= size)
		goto invalid;
	return 0;

invalid:
	return sbx_error_set(error, SBX_ERROR_INVALID,
			     "CI server URL \"%.200s\" is invalid; expected http(s)://host[:port]/...",
			     url != NULL ? url : "(null)");
}

/*
 * True when the "host:port" ENTRY of the CI server names a loopback, link-local, unspecified or
 * multicast address. The CI server's entry is implicit, and an address entry admits those ranges,
 * so only an explicit network.runner_allow entry may open them. A host name needs no check: the
 * proxy refuses such addresses behind a name unless an IP or CIDR entry covers them.
 */
static bool ci_server_entry_is_local(const char *entry)
{
	char host[300];
	const char *reason = NULL;
	const char *colon = strrchr(entry, ':');
	size_t length = colon != NULL ? (size_t) (colon - entry) : strlen(entry);

	if (length >= sizeof(host))
		return false;
	memcpy(host, entry, length);
	host[length] = '\0';
	if (!sbx_allow_literal_is_local(host, &reason))
		return false;
	sbx_debug("the CI server's address %s is %s, so runner stages reach it only through an "
		  "explicit network.runner_allow entry",
		  entry, reason);
	return true;
}

static int add_all(struct sbx_allowlist *list, const struct sbx_string_list *entries,
		   const char *key, struct sbx_error *error)
{
	for (size_t i = 0; i < entries->count; i++)
		if (sbx_allowlist_add(list, entries->items[i], error) < 0)
			return sbx_error_prefix(error, "%s", key);
	return 0;
}

int sbx_egress_build(const struct sbx_config *config, enum sbx_network_profile profile,
		     const char *ci_server_url, char *const *extra, size_t extra_count,
		     struct sbx_allowlist *list, struct sbx_error *error)
{
	struct sbx_allowlist built = { 0 };
	char entry[300];

	if (profile == SBX_NETWORK_RUNNER) {
		if (add_all(&built, &config->network.runner_allow, "network.runner_allow", error) < 0)
			goto fail;
		if (config->network.allow_ci_server && ci_server_url != NULL &&
		    ci_server_url[0] != '\0') {
			if (sbx_egress_ci_server_entry(ci_server_url, entry, sizeof(entry), error) < 0)
				goto fail;
			if (!ci_server_entry_is_local(entry) &&
			    sbx_allowlist_add(&built, entry, error) < 0)
				goto fail;
		}
	} else if (add_all(&built, &config->network.user_allow, "network.user_allow", error) < 0) {
		goto fail;
	}
	for (size_t i = 0; i < extra_count; i++)
		if (sbx_allowlist_add(&built, extra[i], error) < 0)
			goto fail;
	*list = built;
	return 0;

fail:
	sbx_allowlist_free(&built);
	return -1;
}
