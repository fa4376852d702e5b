/* SPDX-License-Identifier: MIT */
/* The local backend's executor handle, shared by its operations. */
#ifndef SBX_LOCAL_LOCAL_H
#define SBX_LOCAL_LOCAL_H

#include "config.h"
#include "journal.h"

#define SBX_LOCAL_BACKEND_NAME "local"

struct sbx_executor {
	struct sbx_config *config;
	struct sbx_journal journal;
	/* <state_dir>/cache unless local.cache_dir names another directory. */
	char *cache_base;
};

#endif /* SBX_LOCAL_LOCAL_H */
