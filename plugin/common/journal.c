/* SPDX-License-Identifier: MIT */
/*
 * The state journal. Every path is built from an id that passed sbx_id_valid(), so an id can
 * never name a file outside <state_dir>. Journal files are opened with O_NOFOLLOW: the state
 * directory is 0700, but a symlink planted there must still not redirect a root-run sbx.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "error.h"
#include "journal.h"
#include "log.h"
#include "util.h"

#ifndef SBX_VERSION
#define SBX_VERSION "unknown"
#endif

/* An entry is a few hundred bytes; the cap bounds what a corrupt file can make sbx read. */
#define ENTRY_FILE_MAX (1024 * 1024)

/* How often a lock with a timeout is retried; flock() itself cannot time out. */
#define LOCK_POLL_MS 20

#define SANDBOXES_DIR "sandboxes"
#define LOCKS_DIR "locks"
#define JOBS_DIR "jobs"

static const char *const state_words[] = {
	[SBX_SANDBOX_UNKNOWN] = "unknown",
	[SBX_SANDBOX_PREPARING] = "preparing",
	[SBX_SANDBOX_READY] = "ready",
	[SBX_SANDBOX_DEAD] = "dead",
};

static inline void json_putp(struct json_object **object)
{
	if (*object != NULL)
		json_object_put(*object);
	*object = NULL;
}

#define _cleanup_json_ __attribute__((cleanup(json_putp)))

static int check_id(const char *id, struct sbx_error *error)
{
	if (!sbx_id_valid(id))
		return sbx_error_set(error, SBX_ERROR_INVALID, "invalid sandbox id \"%.*s\"; use 1 "
				     "to %d characters of a-z, 0-9 and '-', not starting with '-'",
				     SBX_ID_MAX + 1, id != NULL ? id : "(null)", SBX_ID_MAX);
	return 0;
}

/*
 * Checks that the directory open as FD belongs to this user and that no other user can write
 * to it, because entries and locks in it decide what sbx kills and removes.
 */
static int check_private_dir(int fd, const char *path, struct sbx_error *error)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		return sbx_error_errno(error, errno, "cannot stat %s", path);
	if (!S_ISDIR(st.st_mode))
		return sbx_error_set(error, SBX_ERROR_SYSTEM, "%s is not a directory; remove it or "
				     "set another state_dir", path);
	if (st.st_uid != geteuid())
		return sbx_error_set(error, SBX_ERROR_SYSTEM, "%s belongs to uid %u, not to this "
				     "user (uid %u); chown it or set another state_dir", path,
				     (unsigned) st.st_uid, (unsigned) geteuid());
	if (st.st_mode & (S_IWGRP | S_IWOTH))
		return sbx_error_set(error, SBX_ERROR_SYSTEM, "%s is writable by other users "
				     "(mode %04o); run chmod 700 %s", path,
				     (unsigned) (st.st_mode & 07777), path);
	return 0;
}

/* Opens <state_dir>/NAME, creating it 0700 when CREATE is set. Returns the descriptor. */
static int open_subdir(struct sbx_journal *journal, const char *name, int create,
		       struct sbx_error *error)
{
	_cleanup_close_ int fd = -1;
	_cleanup_free_ char *path = NULL;

	if (asprintf(&path, "%s/%s", journal->state_dir, name) < 0)
		return sbx_error_errno(error, ENOMEM, "cannot open the state directory");
	if (create && mkdir(path, 0700) < 0 && errno != EEXIST)
		return sbx_error_errno(error, errno, "cannot create %s", path);
	fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT)
		return sbx_error_set(error, SBX_ERROR_NOT_FOUND, "%s does not exist", path);
	if (fd < 0)
		return sbx_error_errno(error, errno, "cannot open %s", path);
	if (check_private_dir(fd, path, error) < 0)
		return -1;
	return steal_fd(&fd);
}

int sbx_journal_open(const char *state_dir, struct sbx_journal *journal, struct sbx_error *error)
{
	_cleanup_free_ char *copy = NULL;
	_cleanup_free_ char *parent = NULL;
	_cleanup_close_ int fd = -1;
	char *slash;

	if (state_dir == NULL || state_dir[0] != '/')
		return sbx_error_set(error, SBX_ERROR_INVALID, "state directory \"%s\" is not an "
				     "absolute path; set state_dir to a path starting with /",
				     state_dir != NULL ? state_dir : "");
	copy = strdup(state_dir);
	parent = strdup(state_dir);
	if (copy == NULL || parent == NULL)
		return sbx_error_errno(error, ENOMEM, "cannot open the state directory");
	/* "/var/lib/sbx/" and "/var/lib/sbx" are the same directory. */
	for (size_t length = strlen(copy); length > 1 && copy[length - 1] == '/'; length--)
		copy[length - 1] = '\0';

	/* Parents are ordinary directories (0755); only the state directory itself is private. */
	strcpy(parent, copy);
	slash = strrchr(parent, '/');
	if (slash != NULL && slash != parent) {
		*slash = '\0';
		if (sbx_mkdir_p(parent, 0755) < 0)
			return sbx_error_errno(error, errno, "cannot create %s", parent);
	}
	if (mkdir(copy, 0700) < 0 && errno != EEXIST)
		return sbx_error_errno(error, errno, "cannot create the state directory %s", copy);
	fd = open(copy, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return sbx_error_errno(error, errno, "cannot open the state directory %s", copy);
	if (check_private_dir(fd, copy, error) < 0)
		return -1;

	journal->state_dir = steal_pointer(&copy);
	return 0;
}

void sbx_journal_close(struct sbx_journal *journal)
{
	if (journal == NULL)
		return;
	free(journal->state_dir);
	journal->state_dir = NULL;
}

void sbx_journal_entry_init(struct sbx_journal_entry *entry)
{
	memset(entry, 0, sizeof(*entry));
	entry->version = SBX_JOURNAL_VERSION;
	entry->state = SBX_SANDBOX_PREPARING;
}

void sbx_journal_entry_clear(struct sbx_journal_entry *entry)
{
	if (entry == NULL)
		return;
	free(entry->backend);
	free(entry->owner_runner);
	free(entry->owner_project);
	free(entry->owner_pipeline);
	free(entry->owner_job);
	if (entry->data != NULL)
		json_object_put(entry->data);
	sbx_journal_entry_init(entry);
}

/* Reads the pid that the lock's holder wrote into the lock file, or 0. */
static long lock_holder(int fd)
{
	char buf[32];
	ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
	char *end;
	long pid;

	if (n <= 0)
		return 0;
	buf[n] = '\0';
	pid = strtol(buf, &end, 10);
	return end != buf && pid > 0 ? pid : 0;
}

/* Waits for an exclusive flock on FD; TIMEOUT_MS < 0 waits forever. 0, or -1 with errno. */
static int flock_with_timeout(int fd, int timeout_ms)
{
	int64_t deadline = sbx_monotonic_ms() + (timeout_ms > 0 ? timeout_ms : 0);

	if (timeout_ms < 0) {
		while (flock(fd, LOCK_EX) < 0)
			if (errno != EINTR)
				return -1;
		return 0;
	}
	for (;;) {
		int64_t left;

		if (flock(fd, LOCK_EX | LOCK_NB) == 0)
			return 0;
		if (errno != EWOULDBLOCK && errno != EINTR)
			return -1;
		left = deadline - sbx_monotonic_ms();
		if (left <= 0) {
			errno = ETIMEDOUT;
			return -1;
		}
		poll(NULL, 0, left < LOCK_POLL_MS ? (int) left : LOCK_POLL_MS);
	}
}

int sbx_journal_lock(struct sbx_journal *journal, const char *id, int timeout_ms,
		     struct sbx_error *error)
{
	_cleanup_close_ int dir_fd = -1;
	char name[SBX_ID_MAX + sizeof(".lock")];
	int64_t started = sbx_monotonic_ms();

	if (check_id(id, error) < 0)
		return -1;
	dir_fd = open_subdir(journal, LOCKS_DIR, 1, error);
	if (dir_fd < 0)
		return -1;
	snprintf(name, sizeof(name), "%s.lock", id);

	/*
	 * sbx_journal_unlock_remove() unlinks the file while holding the lock, so a waiter can
	 * end up holding a lock on a file that is no longer there. It then tries again on the
	 * file the name now refers to.
	 */
	for (;;) {
		_cleanup_close_ int fd = -1;
		struct stat held, current;
		int left = timeout_ms;
		char pid[32];

		if (timeout_ms >= 0) {
			int64_t remaining = timeout_ms - (sbx_monotonic_ms() - started);

			left = remaining > 0 ? (int) remaining : 0;
		}
		fd = openat(dir_fd, name, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (fd < 0)
			return sbx_error_errno(error, errno, "cannot open %s/%s/%s",
					       journal->state_dir, LOCKS_DIR, name);
		if (flock_with_timeout(fd, left) < 0) {
			long holder;

			if (errno != ETIMEDOUT)
				return sbx_error_errno(error, errno, "cannot lock %s/%s/%s",
						       journal->state_dir, LOCKS_DIR, name);
			holder = lock_holder(fd);
			if (holder > 0)
				return sbx_error_set(error, SBX_ERROR_SYSTEM,
						     "sandbox %s is locked by process %ld (another "
						     "sbx prepare, cleanup or gc); gave up after %d "
						     "ms, try again when it has finished", id, holder,
						     timeout_ms);
			return sbx_error_set(error, SBX_ERROR_SYSTEM,
					     "sandbox %s is locked by another process (sbx "
					     "prepare, cleanup or gc); gave up after %d ms, try "
					     "again when it has finished", id, timeout_ms);
		}
		if (fstat(fd, &held) < 0)
			return sbx_error_errno(error, errno, "cannot stat %s/%s/%s",
					       journal->state_dir, LOCKS_DIR, name);
		if (fstatat(dir_fd, name, &current, AT_SYMLINK_NOFOLLOW) < 0 ||
		    current.st_ino != held.st_ino || current.st_dev != held.st_dev)
			continue;

		/* The holder's pid lets a waiter that times out name the process holding the lock. */
		snprintf(pid, sizeof(pid), "%ld\n", (long) getpid());
		if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, strlen(pid), 0) < 0)
			sbx_debug("cannot record the pid in %s/%s/%s: %s", journal->state_dir,
				  LOCKS_DIR, name, strerror(errno));
		return steal_fd(&fd);
	}
}

void sbx_journal_unlock(int lock_fd)
{
	if (lock_fd >= 0)
		close(lock_fd);
}

void sbx_journal_unlock_remove(struct sbx_journal *journal, const char *id, int lock_fd)
{
	_cleanup_free_ char *path = NULL;

	if (sbx_id_valid(id) &&
	    asprintf(&path, "%s/%s/%s.lock", journal->state_dir, LOCKS_DIR, id) >= 0 &&
	    unlink(path) < 0 && errno != ENOENT)
		sbx_warning("cannot remove %s: %s", path, strerror(errno));
	sbx_journal_unlock(lock_fd);
}

static void add_string(struct json_object *object, const char *key, const char *value)
{
	if (value != NULL)
		json_object_object_add(object, key, json_object_new_string(value));
}

static struct json_object *entry_to_json(const struct sbx_journal_entry *entry)
{
	_cleanup_json_ struct json_object *root = json_object_new_object();
	struct json_object *owner;

	if (root == NULL)
		return NULL;
	json_object_object_add(root, "version", json_object_new_int(SBX_JOURNAL_VERSION));
	/* Tells an older sbx that meets this entry which version to use instead. */
	json_object_object_add(root, "written_by", json_object_new_string("sbx " SBX_VERSION));
	json_object_object_add(root, "id", json_object_new_string(entry->id));
	json_object_object_add(root, "backend", json_object_new_string(entry->backend));
	json_object_object_add(root, "state", json_object_new_string(state_words[entry->state]));
	json_object_object_add(root, "created", json_object_new_int64(entry->created));
	json_object_object_add(root, "deadline", json_object_new_int64(entry->deadline));

	owner = json_object_new_object();
	if (owner == NULL)
		return NULL;
	json_object_object_add(root, "owner", owner);
	add_string(owner, "runner", entry->owner_runner);
	add_string(owner, "project", entry->owner_project);
	add_string(owner, "pipeline", entry->owner_pipeline);
	add_string(owner, "job", entry->owner_job);

	if (entry->data != NULL)
		json_object_object_add(root, "data", json_object_get(entry->data));
	else
		json_object_object_add(root, "data", json_object_new_object());
	return steal_pointer(&root);
}

static char *entry_path(struct sbx_journal *journal, const char *id)
{
	char *path = NULL;

	if (asprintf(&path, "%s/%s/%s.json", journal->state_dir, SANDBOXES_DIR, id) < 0)
		return NULL;
	return path;
}

int sbx_journal_write(struct sbx_journal *journal, const struct sbx_journal_entry *entry,
		      struct sbx_error *error)
{
	_cleanup_json_ struct json_object *root = NULL;
	_cleanup_close_ int dir_fd = -1;
	_cleanup_free_ char *path = NULL;
	char name[SBX_ID_MAX + sizeof(".json")];
	unsigned flags = 0;
	const char *text;
	struct stat st;

	if (check_id(entry->id, error) < 0)
		return -1;
	if (entry->backend == NULL || entry->backend[0] == '\0')
		return sbx_error_set(error, SBX_ERROR_INVALID, "journal entry %s has no backend; "
				     "set it before writing", entry->id);
	if (entry->state <= SBX_SANDBOX_UNKNOWN || entry->state > SBX_SANDBOX_DEAD)
		return sbx_error_set(error, SBX_ERROR_INVALID, "journal entry %s has the invalid "
				     "state %d; use preparing, ready or dead", entry->id,
				     entry->state);
	if (entry->data != NULL && !json_object_is_type(entry->data, json_type_object))
		return sbx_error_set(error, SBX_ERROR_INVALID, "journal entry %s: the backend data "
				     "is not a JSON object", entry->id);

	dir_fd = open_subdir(journal, SANDBOXES_DIR, 1, error);
	if (dir_fd < 0)
		return -1;
	root = entry_to_json(entry);
	if (root == NULL)
		return sbx_error_errno(error, ENOMEM, "cannot write journal entry %s", entry->id);
	text = json_object_to_json_string_ext(root, JSON_C_TO_STRING_PRETTY |
						    JSON_C_TO_STRING_NOSLASHESCAPE);
	path = entry_path(journal, entry->id);
	if (text == NULL || path == NULL)
		return sbx_error_errno(error, ENOMEM, "cannot write journal entry %s", entry->id);

	/*
	 * The entry is fsync'd when it is created, before anything of the sandbox exists, so that
	 * a gc after a power loss finds it. It is fsync'd again once it leaves the preparing state,
	 * so that the finished entry is on disk. The updates in between, milliseconds apart, need
	 * no fsync because a crash of sbx leaves them in the page cache.
	 * NOTE: on a file system that may commit a rename before the data, a power loss during
	 * prepare can leave an empty entry, which gc reports as corrupt.
	 */
	snprintf(name, sizeof(name), "%s.json", entry->id);
	if (entry->state != SBX_SANDBOX_PREPARING ||
	    (fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 && errno == ENOENT))
		flags |= SBX_WRITE_DURABLE;
	return sbx_write_file_atomic(path, text, strlen(text), 0600, flags, error);
}

/* Reads the entry file NAME in the directory DIR_FD without following a symlink. */
static int read_entry_file(int dir_fd, const char *name, const char *path, char **data,
			   struct sbx_error *error)
{
	_cleanup_close_ int fd = -1;
	_cleanup_free_ char *buf = NULL;
	size_t used = 0;
	struct stat st;

	fd = openat(dir_fd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT)
		return sbx_error_set(error, SBX_ERROR_NOT_FOUND, "no journal entry %s", path);
	if (fd < 0 && errno == ELOOP)
		return sbx_error_set(error, SBX_ERROR_SYSTEM,
				     "journal entry %s is a symbolic link; remove it", path);
	if (fd < 0)
		return sbx_error_errno(error, errno, "cannot open journal entry %s", path);
	if (fstat(fd, &st) < 0)
		return sbx_error_errno(error, errno, "cannot stat journal entry %s", path);
	if (!S_ISREG(st.st_mode))
		return sbx_error_set(error, SBX_ERROR_SYSTEM, "journal entry %s is not a regular "
				     "file; remove it", path);
	if (st.st_size > ENTRY_FILE_MAX)
		return sbx_error_set(error, SBX_ERROR_SYSTEM, "journal entry %s is larger than %d "
				     "bytes; it is corrupt, remove it", path, ENTRY_FILE_MAX);

	buf = malloc(ENTRY_FILE_MAX + 1);
	if (buf == NULL)
		return sbx_error_errno(error, ENOMEM, "cannot read journal entry %s", path);
	for (;;) {
		ssize_t n = read(fd, buf + used, ENTRY_FILE_MAX + 1 - used);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return sbx_error_errno(error, errno, "cannot read journal entry %s", path);
		if (n == 0)
			break;
		used += (size_t) n;
		if (used > ENTRY_FILE_MAX)
			return sbx_error_set(error, SBX_ERROR_SYSTEM, "journal entry %s is larger "
					     "than %d bytes; it is corrupt, remove it", path,
					     ENTRY_FILE_MAX);
	}
	buf[used] = '\0';
	*data = steal_pointer(&buf);
	return 0;
}

static int corrupt(struct sbx_error *error, const char *path, const char *what)
{
	return sbx_error_set(error, SBX_ERROR_SYSTEM, "journal entry %s is corrupt: %s; remove "
			     "it after making sure nothing of the sandbox is left", path, what);
}

static int get_string(struct json_object *object, const char *key, int required, char **value,
		      const char *path, struct sbx_error *error)
{
	struct json_object *field;
	char message[128];
	char *copy;

	if (!json_object_object_get_ex(object, key, &field) ||
	    json_object_is_type(field, json_type_null)) {
		if (!required)
			return 0;
		snprintf(message, sizeof(message), "\"%s\" is missing", key);
		return corrupt(error, path, message);
	}
	if (!json_object_is_type(field, json_type_string)) {
		snprintf(message, sizeof(message), "\"%s\" is not a string", key);
		return corrupt(error, path, message);
	}
	copy = strdup(json_object_get_string(field));
	if (copy == NULL)
		return sbx_error_errno(error, ENOMEM, "cannot read journal entry %s", path);
	*value = copy;
	return 0;
}

static int get_int64(struct json_object *object, const char *key, int64_t *value,
		     const char *path, struct sbx_error *error)
{
	struct json_object *field;
	char message[128];

	if (!json_object_object_get_ex(object, key, &field) ||
	    !json_object_is_type(field, json_type_int)) {
		snprintf(message, sizeof(message), "\"%s\" is missing or not an integer", key);
		return corrupt(error, path, message);
	}
	*value = json_object_get_int64(field);
	return 0;
}

/* Fills ENTRY from the parsed file ROOT of sandbox ID. */
static int entry_from_json(struct json_object *root, const char *id, const char *path,
			   struct sbx_journal_entry *entry, struct sbx_error *error)
{
	_cleanup_free_ char *file_id = NULL;
	_cleanup_free_ char *state = NULL;
	_cleanup_free_ char *written_by = NULL;
	struct json_object *field, *owner;
	int64_t version;

	if (!json_object_is_type(root, json_type_object))
		return corrupt(error, path, "the top level is not a JSON object");
	if (get_int64(root, "version", &version, path, error) < 0)
		return -1;
	get_string(root, "written_by", 0, &written_by, path, NULL);
	/* A newer format may mean anything; reading it with the old rules could make gc
	 * remove a live sandbox. */
	if (version > SBX_JOURNAL_VERSION)
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "journal entry %s has format version %" PRId64 ", written by "
				     "%s; this sbx (%s) reads versions up to %d; run cleanup and "
				     "gc with that sbx version or a newer one", path, version,
				     written_by ? written_by : "a newer sbx", SBX_VERSION,
				     SBX_JOURNAL_VERSION);
	if (version < 1)
		return corrupt(error, path, "\"version\" is below 1");

	if (get_string(root, "id", 1, &file_id, path, error) < 0)
		return -1;
	/* The id decides which objects cleanup removes; a copied or renamed file must not
	 * make sbx act on another sandbox's objects. */
	if (strcmp(file_id, id) != 0)
		return corrupt(error, path, "its \"id\" does not match the file name");
	if (get_string(root, "backend", 1, &entry->backend, path, error) < 0 ||
	    get_string(root, "state", 1, &state, path, error) < 0 ||
	    get_int64(root, "created", &entry->created, path, error) < 0 ||
	    get_int64(root, "deadline", &entry->deadline, path, error) < 0)
		return -1;
	entry->state = SBX_SANDBOX_UNKNOWN;
	for (int i = SBX_SANDBOX_PREPARING; i <= SBX_SANDBOX_DEAD; i++)
		if (strcmp(state, state_words[i]) == 0)
			entry->state = i;
	if (entry->state == SBX_SANDBOX_UNKNOWN)
		return corrupt(error, path, "\"state\" is not preparing, ready or dead");

	if (json_object_object_get_ex(root, "owner", &owner)) {
		if (!json_object_is_type(owner, json_type_object))
			return corrupt(error, path, "\"owner\" is not an object");
		if (get_string(owner, "runner", 0, &entry->owner_runner, path, error) < 0 ||
		    get_string(owner, "project", 0, &entry->owner_project, path, error) < 0 ||
		    get_string(owner, "pipeline", 0, &entry->owner_pipeline, path, error) < 0 ||
		    get_string(owner, "job", 0, &entry->owner_job, path, error) < 0)
			return -1;
	}

	if (json_object_object_get_ex(root, "data", &field) &&
	    !json_object_is_type(field, json_type_null)) {
		if (!json_object_is_type(field, json_type_object))
			return corrupt(error, path, "\"data\" is not an object");
		entry->data = json_object_get(field);
	} else {
		entry->data = json_object_new_object();
		if (entry->data == NULL)
			return sbx_error_errno(error, ENOMEM, "cannot read journal entry %s", path);
	}
	entry->version = (int) version;
	snprintf(entry->id, sizeof(entry->id), "%s", id);
	return 0;
}

/* Reads and parses the entry of ID from the open sandboxes directory. */
static int read_entry_at(struct sbx_journal *journal, int dir_fd, const char *id,
			 struct sbx_journal_entry *entry, struct sbx_error *error)
{
	_cleanup_json_ struct json_object *root = NULL;
	_cleanup_free_ char *data = NULL;
	_cleanup_free_ char *path = NULL;
	struct sbx_journal_entry parsed;
	char name[SBX_ID_MAX + sizeof(".json")];
	struct json_tokener *tokener;
	enum json_tokener_error parse_error;

	path = entry_path(journal, id);
	if (path == NULL)
		return sbx_error_errno(error, ENOMEM, "cannot read journal entry %s", id);
	snprintf(name, sizeof(name), "%s.json", id);
	if (read_entry_file(dir_fd, name, path, &data, error) < 0)
		return -1;

	tokener = json_tokener_new();
	if (tokener == NULL)
		return sbx_error_errno(error, ENOMEM, "cannot read journal entry %s", path);
	root = json_tokener_parse_ex(tokener, data, (int) strlen(data));
	parse_error = json_tokener_get_error(tokener);
	json_tokener_free(tokener);
	if (root == NULL || parse_error != json_tokener_success)
		return corrupt(error, path, parse_error == json_tokener_continue ?
					    "the JSON ends early" :
					    json_tokener_error_desc(parse_error));

	sbx_journal_entry_init(&parsed);
	if (entry_from_json(root, id, path, &parsed, error) < 0) {
		sbx_journal_entry_clear(&parsed);
		return -1;
	}
	*entry = parsed;
	return 0;
}

int sbx_journal_read(struct sbx_journal *journal, const char *id, struct sbx_journal_entry *entry,
		     struct sbx_error *error)
{
	_cleanup_close_ int dir_fd = -1;

	if (check_id(id, error) < 0)
		return -1;
	dir_fd = open_subdir(journal, SANDBOXES_DIR, 0, error);
	if (dir_fd < 0 && error != NULL && error->error_class == SBX_ERROR_NOT_FOUND)
		return sbx_error_set(error, SBX_ERROR_NOT_FOUND, "no journal entry for sandbox "
				     "%s in %s", id, journal->state_dir);
	if (dir_fd < 0)
		return -1;
	return read_entry_at(journal, dir_fd, id, entry, error);
}

int sbx_journal_remove(struct sbx_journal *journal, const char *id, struct sbx_error *error)
{
	_cleanup_close_ int dir_fd = -1;
	struct sbx_error local_error;
	char name[SBX_ID_MAX + sizeof(".json")];

	if (check_id(id, error) < 0)
		return -1;
	dir_fd = open_subdir(journal, SANDBOXES_DIR, 0, &local_error);
	if (dir_fd < 0 && local_error.error_class == SBX_ERROR_NOT_FOUND)
		return 0;
	if (dir_fd < 0) {
		if (error != NULL)
			*error = local_error;
		return -1;
	}
	snprintf(name, sizeof(name), "%s.json", id);
	if (unlinkat(dir_fd, name, 0) < 0 && errno != ENOENT)
		return sbx_error_errno(error, errno, "cannot remove %s/%s/%s", journal->state_dir,
				       SANDBOXES_DIR, name);
	return 0;
}

static int compare_names(const void *a, const void *b)
{
	return strcmp(*(char *const *) a, *(char *const *) b);
}

static void free_names(char **names, size_t count)
{
	for (size_t i = 0; i < count; i++)
		free(names[i]);
	free(names);
}

/*
 * Lists the ids of the entry files in the sandboxes directory, sorted so `sbx gc` output is
 * stable. Temporary files of sbx_write_file_atomic() ("<id>.json.<hex>.tmp") and names that
 * are no valid id are skipped.
 */
static int list_entry_ids(int dir_fd, const char *path, char ***ids, size_t *count,
			  struct sbx_error *error)
{
	_cleanup_closedir_ DIR *dir = NULL;
	char **names = NULL;
	size_t used = 0;
	struct dirent *dirent;
	int fd;

	fd = dup(dir_fd);
	if (fd < 0)
		return sbx_error_errno(error, errno, "cannot list %s", path);
	dir = fdopendir(fd);
	if (dir == NULL) {
		close(fd);
		return sbx_error_errno(error, errno, "cannot list %s", path);
	}

	while ((errno = 0, dirent = readdir(dir)) != NULL) {
		size_t length = strlen(dirent->d_name);
		char **grown;
		char *id;

		if (dirent->d_name[0] == '.')
			continue;
		if (length > 4 && strcmp(dirent->d_name + length - 4, ".tmp") == 0) {
			/* Left by a crash in the middle of a write; the entry itself is intact. */
			sbx_debug("journal: skipping the temporary file %s/%s", path,
				  dirent->d_name);
			continue;
		}
		if (length <= 5 || strcmp(dirent->d_name + length - 5, ".json") != 0) {
			sbx_warning("journal: skipping %s/%s, which is not a journal entry", path,
				    dirent->d_name);
			continue;
		}
		id = strndup(dirent->d_name, length - 5);
		if (id == NULL)
			goto nomem;
		if (!sbx_id_valid(id)) {
			sbx_warning("journal: skipping %s/%s, whose name is not a valid sandbox id",
				    path, dirent->d_name);
			free(id);
			continue;
		}
		grown = realloc(names, (used + 1) * sizeof(*names));
		if (grown == NULL) {
			free(id);
			goto nomem;
		}
		names = grown;
		names[used++] = id;
	}
	if (errno != 0) {
		int saved = errno;

		free_names(names, used);
		return sbx_error_errno(error, saved, "cannot list %s", path);
	}

	if (used > 0)
		qsort(names, used, sizeof(*names), compare_names);
	*ids = names;
	*count = used;
	return 0;

nomem:
	free_names(names, used);
	return sbx_error_errno(error, ENOMEM, "cannot list %s", path);
}

int sbx_journal_foreach(struct sbx_journal *journal,
			int (*callback)(void *userdata, const struct sbx_journal_entry *entry),
			void *userdata, struct sbx_error *error)
{
	_cleanup_close_ int dir_fd = -1;
	_cleanup_free_ char *path = NULL;
	struct sbx_error local_error;
	char **ids = NULL;
	size_t count = 0;

	dir_fd = open_subdir(journal, SANDBOXES_DIR, 0, &local_error);
	if (dir_fd < 0 && local_error.error_class == SBX_ERROR_NOT_FOUND)
		return 0;
	if (dir_fd < 0) {
		if (error != NULL)
			*error = local_error;
		return -1;
	}
	if (asprintf(&path, "%s/%s", journal->state_dir, SANDBOXES_DIR) < 0)
		return sbx_error_errno(error, ENOMEM, "cannot list the journal");
	if (list_entry_ids(dir_fd, path, &ids, &count, error) < 0)
		return -1;

	for (size_t i = 0; i < count; i++) {
		struct sbx_journal_entry entry;
		struct sbx_error read_error;
		int stop;

		if (read_entry_at(journal, dir_fd, ids[i], &entry, &read_error) < 0) {
			/* Gone between the listing and the read: removed by a concurrent
			 * cleanup, which is not worth a warning. */
			if (read_error.error_class != SBX_ERROR_NOT_FOUND)
				sbx_warning("journal: skipping an entry: %s", read_error.message);
			continue;
		}
		stop = callback(userdata, &entry);
		sbx_journal_entry_clear(&entry);
		if (stop != 0)
			break;
	}
	free_names(ids, count);
	return 0;
}

char *sbx_journal_job_dir(struct sbx_journal *journal, const char *id)
{
	_cleanup_close_ int jobs_fd = -1;
	char *path = NULL;
	struct sbx_error error;
	struct stat st;

	if (!sbx_id_valid(id)) {
		errno = EINVAL;
		return NULL;
	}
	jobs_fd = open_subdir(journal, JOBS_DIR, 1, &error);
	if (jobs_fd < 0) {
		sbx_error_log("%s", error.message);
		errno = EACCES;
		return NULL;
	}
	if (mkdirat(jobs_fd, id, 0700) < 0 && errno != EEXIST)
		return NULL;
	/* An existing entry must be our own directory, not a symlink planted there. */
	if (fstatat(jobs_fd, id, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return NULL;
	if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid()) {
		sbx_error_log("%s/%s/%s is not a directory of this user; remove it",
			      journal->state_dir, JOBS_DIR, id);
		errno = ENOTDIR;
		return NULL;
	}
	if (asprintf(&path, "%s/%s/%s", journal->state_dir, JOBS_DIR, id) < 0)
		return NULL;
	return path;
}
