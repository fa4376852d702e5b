/* SPDX-License-Identifier: MIT */
/*
 * `sbx gc`: destroys sandboxes whose deadline has passed. The deadline is the job's creation
 * time plus its timeout plus a margin, so gc never touches a sandbox whose job may still run.
 * That makes it safe to start from a timer while jobs run.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "error.h"
#include "loader.h"
#include "log.h"
#include "shim.h"
#include "util.h"

static const char gc_usage[] =
	"Usage: sbx gc [--dry-run]\n"
	"\n"
	"Destroys every sandbox whose deadline (creation time + job timeout + deadline_margin)\n"
	"has passed, and keeps the others. Prints one line per sandbox. Safe to run from a timer\n"
	"while jobs run.\n"
	"\n"
	"Options:\n"
	"  --dry-run   destroy nothing; print \"expired\" for each sandbox gc would destroy\n"
	"  --help      print this help\n";

struct gc_sandbox {
	char *id;
	char *owner;
	int64_t deadline;
	int32_t state;
};

struct gc_list {
	struct gc_sandbox *items;
	size_t count;
	int failed; /* out of memory while listing */
};

static char *format_owner(const struct sbx_owner *owner)
{
	char *text = NULL;

	if (owner == NULL ||
	    (owner->runner == NULL && owner->project == NULL && owner->pipeline == NULL &&
	     owner->job == NULL))
		return strdup("-");
	if (asprintf(&text, "runner=%s project=%s pipeline=%s job=%s",
		     owner->runner != NULL ? owner->runner : "-",
		     owner->project != NULL ? owner->project : "-",
		     owner->pipeline != NULL ? owner->pipeline : "-",
		     owner->job != NULL ? owner->job : "-") < 0)
		return NULL;
	return text;
}

/* Copies each entry: the plugin's strings live only during the callback, and destroying a
 * sandbox while the plugin walks its journal could disturb the walk. */
static int collect_sandbox(void *userdata, const struct sbx_sandbox_info *info)
{
	struct gc_list *list = userdata;
	struct gc_sandbox *bigger;
	struct gc_sandbox *item;

	if (info->id == NULL)
		return 0;
	bigger = realloc(list->items, (list->count + 1) * sizeof(*bigger));
	if (bigger == NULL) {
		list->failed = 1;
		return 1;
	}
	list->items = bigger;
	item = &list->items[list->count];
	item->id = strdup(info->id);
	item->owner = format_owner(SBX_HAS_FIELD(info, struct sbx_sandbox_info, owner)
					   ? info->owner
					   : NULL);
	item->deadline = info->deadline;
	item->state = info->state;
	if (item->id == NULL || item->owner == NULL) {
		free(item->id);
		free(item->owner);
		list->failed = 1;
		return 1;
	}
	list->count++;
	return 0;
}

static void gc_list_free(struct gc_list *list)
{
	for (size_t i = 0; i < list->count; i++) {
		free(list->items[i].id);
		free(list->items[i].owner);
	}
	free(list->items);
	list->items = NULL;
	list->count = 0;
}

static int run_gc(const struct sbx_cli *cli, int dry_run)
{
	struct sbx_config *config = NULL;
	struct sbx_plugin plugin = { 0 };
	struct sbx_executor *executor = NULL;
	struct gc_list list = { 0 };
	struct sbx_error error;
	int64_t now;
	int status = 1;

	sbx_error_clear(&error);
	if (sbx_shim_load_config(cli, &config, &error) < 0 ||
	    sbx_plugin_load(cli, config, &plugin, &error) < 0 ||
	    sbx_plugin_open(&plugin, &executor, &error) < 0) {
		sbx_error_log("%s", error.message);
		goto out;
	}
	if (plugin.ops->list(executor, collect_sandbox, &list, &error) < 0) {
		sbx_error_log("cannot list sandboxes: %s", error.message);
		goto out;
	}
	if (list.failed) {
		sbx_error_log("cannot list sandboxes: out of memory");
		goto out;
	}

	status = 0;
	now = sbx_now();
	for (size_t i = 0; i < list.count; i++) {
		const struct gc_sandbox *item = &list.items[i];
		char deadline[64];
		const char *verdict;

		sbx_format_time(item->deadline, deadline, sizeof(deadline));
		/* A deadline of 0 means the journal entry has none: keep it rather than guess. */
		if (item->deadline <= 0 || now < item->deadline) {
			verdict = "kept";
		} else if (dry_run) {
			verdict = "expired";
		} else if (plugin.ops->destroy(executor, item->id, &error) < 0) {
			sbx_error_log("cannot destroy sandbox %s: %s", item->id, error.message);
			verdict = "FAILED";
			status = 1;
		} else {
			verdict = "destroyed";
		}
		printf("%-9s %s owner %s deadline %s\n", verdict, item->id, item->owner, deadline);
	}
	if (list.count == 0)
		printf("no sandboxes\n");
	if (fflush(stdout) != 0)
		status = 1;
out:
	gc_list_free(&list);
	if (executor != NULL)
		plugin.ops->close(executor);
	sbx_plugin_unload(&plugin);
	sbx_config_free(config);
	return status;
}

int sbx_command_gc(const struct sbx_cli *cli, int argc, char **argv)
{
	static const struct option long_options[] = {
		{ "dry-run", no_argument, NULL, 'n' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int dry_run = 0;
	int option;

	opterr = 0;
	while ((option = getopt_long(argc, argv, "h", long_options, NULL)) != -1) {
		switch (option) {
		case 'n':
			dry_run = 1;
			break;
		case 'h':
			fputs(gc_usage, stdout);
			return 0;
		default:
			fprintf(stderr, "sbx: unknown option %s; run 'sbx gc --help'\n",
				argv[optind - 1]);
			return SBX_EXIT_USAGE;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "sbx: gc takes no arguments; run 'sbx gc --help'\n");
		return SBX_EXIT_USAGE;
	}
	return run_gc(cli, dry_run);
}
