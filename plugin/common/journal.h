/* SPDX-License-Identifier: MIT */
/*
 * The state journal: one JSON file per sandbox under <state_dir>/sandboxes/<id>.json, written
 * atomically before anything is created and updated as objects come into being, so that cleanup
 * and `sbx gc` can undo a half-done prepare after a crash. Each entry carries a format version;
 * readers accept their own version and older ones, so an sbx upgrade between two stages of a
 * running job does not break it.
 */
#ifndef SBX_JOURNAL_H
#define SBX_JOURNAL_H

#include <stdint.h>
#include <sys/types.h>

#include "sbx/executor.h"

#define SBX_JOURNAL_VERSION 1

struct json_object;

struct sbx_journal {
	char *state_dir; /* <state_dir> */
};

struct sbx_journal_entry {
	int version;
	char id[SBX_ID_MAX + 1];
	char *backend;
	int state; /* enum sbx_sandbox_state */
	int64_t created;
	int64_t deadline;
	char *owner_runner;
	char *owner_project;
	char *owner_pipeline;
	char *owner_job;
	/* Backend-specific data (init pid, cgroup paths, object names), owned by the entry. */
	struct json_object *data;
};

int sbx_journal_open(const char *state_dir, struct sbx_journal *journal, struct sbx_error *error);
void sbx_journal_close(struct sbx_journal *journal);

/*
 * Takes the per-sandbox lock (<state_dir>/locks/<id>.lock, flock). Returns a descriptor to pass
 * to sbx_journal_unlock(), or -1. TIMEOUT_MS < 0 waits forever; on timeout the error names
 * the process that holds it.
 */
int sbx_journal_lock(struct sbx_journal *journal, const char *id, int timeout_ms,
		     struct sbx_error *error);
void sbx_journal_unlock(int lock_fd);

/* Writes ENTRY atomically (mode 0600). A new entry, and one in a state after preparing, is
 * fsync'd; an update of an existing entry while preparing is not. */
int sbx_journal_write(struct sbx_journal *journal, const struct sbx_journal_entry *entry,
		      struct sbx_error *error);
/* Reads the entry for ID; SBX_ERROR_NOT_FOUND when there is none. */
int sbx_journal_read(struct sbx_journal *journal, const char *id, struct sbx_journal_entry *entry,
		     struct sbx_error *error);
/* Removes the entry for ID; removing what is gone succeeds. */
int sbx_journal_remove(struct sbx_journal *journal, const char *id, struct sbx_error *error);
/* Calls CALLBACK for every readable entry; unreadable ones are logged and skipped. */
int sbx_journal_foreach(struct sbx_journal *journal,
			int (*callback)(void *userdata, const struct sbx_journal_entry *entry),
			void *userdata, struct sbx_error *error);

void sbx_journal_entry_init(struct sbx_journal_entry *entry);
void sbx_journal_entry_clear(struct sbx_journal_entry *entry);

/* Per-sandbox working directory <state_dir>/jobs/<id>, created 0700 on demand. */
char *sbx_journal_job_dir(struct sbx_journal *journal, const char *id);

/*
 * Removes the lock file of ID and then releases LOCK_FD, which must hold that lock (destroy
 * calls it last, so lock files do not pile up). A process waiting for the lock at that moment
 * notices that the file it locked is gone and locks the new one instead.
 */
void sbx_journal_unlock_remove(struct sbx_journal *journal, const char *id, int lock_fd);

#endif /* SBX_JOURNAL_H */
