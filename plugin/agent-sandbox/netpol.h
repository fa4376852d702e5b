/* SPDX-License-Identifier: MIT */
/* The egress allow-list as address blocks, the form a NetworkPolicy can enforce. */
#ifndef SBX_AS_NETPOL_H
#define SBX_AS_NETPOL_H

#include <stddef.h>
#include <stdint.h>

#include "allowlist.h"
#include "sbx/executor.h"

struct as_egress_block {
	int family; /* AF_INET or AF_INET6 */
	unsigned char address[16];
	unsigned prefix_length;
	uint16_t port; /* 0: every port */
};

struct as_egress {
	struct as_egress_block *blocks;
	size_t count;
};

/* Turns LIST into address blocks: CIDRs as they are, host names resolved now. */
int as_egress_resolve(const struct sbx_allowlist *list, struct as_egress *egress,
		      struct sbx_error *error);
void as_egress_clear(struct as_egress *egress);

#endif /* SBX_AS_NETPOL_H */
