/* SPDX-License-Identifier: MIT */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "journal.h"
#include "log.h"
#include "util.h"

static char temp_dir[PATH_MAX];
static char state_dir[PATH_MAX + 32];

/* Warnings and errors the journal logged, so tests can check that a skipped file was
 * reported. Debug messages go to their own buffer. */
static char logged[8192];
static char logged_debug[8192];

static void capture_log(void *userdata, enum sbx_log_level level, const char *message)
{
	char *buffer = level == SBX_LOG_DEBUG ? logged_debug : logged;
	size_t used = strlen(buffer);

	snprintf(buffer + used, sizeof(logged) - used, "%s\n", message);
}

static void setup(void)
{
	snprintf(temp_dir, sizeof(temp_dir), "/tmp/sbx-test-journal-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(temp_dir));
	/* Below a directory that does not exist yet, so open must create parents. */
	snprintf(state_dir, sizeof(state_dir), "%s/var/lib/sbx", temp_dir);
	logged[0] = '\0';
	logged_debug[0] = '\0';
	sbx_log_set_sink(capture_log, NULL, SBX_LOG_DEBUG);
}

static void teardown(void)
{
	sbx_log_set_sink(NULL, NULL, SBX_LOG_INFO);
	sbx_remove_tree(temp_dir);
}

static void open_journal(struct sbx_journal *journal)
{
	struct sbx_error error = { 0 };

	ck_assert_msg(sbx_journal_open(state_dir, journal, &error) == 0, "%s", error.message);
}

static void fill_entry(struct sbx_journal_entry *entry, const char *id, int64_t created)
{
	sbx_journal_entry_init(entry);
	snprintf(entry->id, sizeof(entry->id), "%s", id);
	entry->backend = strdup("local");
	entry->state = SBX_SANDBOX_READY;
	entry->created = created;
	entry->deadline = created + 10800;
	entry->owner_runner = strdup("runner-1");
	entry->owner_project = strdup("42");
	entry->owner_pipeline = strdup("1001");
	entry->owner_job = strdup("7");
	entry->data = json_object_new_object();
	json_object_object_add(entry->data, "init_pid", json_object_new_int(4242));
	json_object_object_add(entry->data, "cgroup", json_object_new_string("sbx/" "j7-0a1b2c3d"));
}

static void write_entry(struct sbx_journal *journal, const char *id, int64_t created)
{
	struct sbx_journal_entry entry;
	struct sbx_error error = { 0 };

	fill_entry(&entry, id, created);
	ck_assert_msg(sbx_journal_write(journal, &entry, &error) == 0, "%s", error.message);
	sbx_journal_entry_clear(&entry);
}

static char *path_in_state(const char *relative)
{
	char *path;

	ck_assert_int_ge(asprintf(&path, "%s/%s", state_dir, relative), 0);
	return path;
}

static void write_raw(const char *relative, const char *text)
{
	struct sbx_error error = { 0 };
	char *path = path_in_state(relative);

	ck_assert_msg(sbx_write_file_atomic(path, text, strlen(text), 0600, 0, &error) == 0, "%s",
		      error.message);
	free(path);
}

START_TEST(open_creates_private_state_dir)
{
	struct sbx_journal journal;
	struct stat st;
	char *parent;

	open_journal(&journal);
	ck_assert_str_eq(journal.state_dir, state_dir);
	ck_assert_int_eq(stat(state_dir, &st), 0);
	ck_assert(S_ISDIR(st.st_mode));
	ck_assert_uint_eq(st.st_mode & 07777, 0700);

	ck_assert_int_ge(asprintf(&parent, "%s/var/lib", temp_dir), 0);
	ck_assert_int_eq(stat(parent, &st), 0);
	ck_assert_uint_eq(st.st_mode & 0755, 0755);
	free(parent);
	sbx_journal_close(&journal);
}
END_TEST

START_TEST(open_rejects_shared_state_dir)
{
	struct sbx_journal journal;
	struct sbx_error error = { 0 };

	open_journal(&journal);
	sbx_journal_close(&journal);
	ck_assert_int_eq(chmod(state_dir, 0777), 0);
	ck_assert_int_eq(sbx_journal_open(state_dir, &journal, &error), -1);
	ck_assert_ptr_nonnull(strstr(error.message, "writable by other users"));
	ck_assert_ptr_nonnull(strstr(error.message, "chmod 700"));
}
END_TEST

START_TEST(open_rejects_relative_dir)
{
	struct sbx_journal journal;
	struct sbx_error error = { 0 };

	ck_assert_int_eq(sbx_journal_open("var/lib/sbx", &journal, &error), -1);
	ck_assert_int_eq(error.error_class, SBX_ERROR_INVALID);
	ck_assert_ptr_nonnull(strstr(error.message, "not an absolute path"));
}
END_TEST

START_TEST(write_read_remove_round_trip)
{
	struct sbx_journal journal;
	struct sbx_journal_entry entry;
	struct sbx_error error = { 0 };
	struct json_object *field;
	struct stat st;
	char *path;

	open_journal(&journal);
	write_entry(&journal, "j7-0a1b2c3d", 1700000000);

	path = path_in_state("sandboxes/j7-0a1b2c3d.json");
	ck_assert_int_eq(lstat(path, &st), 0);
	ck_assert(S_ISREG(st.st_mode));
	ck_assert_uint_eq(st.st_mode & 07777, 0600);
	free(path);
	path = path_in_state("sandboxes");
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_uint_eq(st.st_mode & 07777, 0700);
	free(path);

	ck_assert_msg(sbx_journal_read(&journal, "j7-0a1b2c3d", &entry, &error) == 0, "%s",
		      error.message);
	ck_assert_int_eq(entry.version, SBX_JOURNAL_VERSION);
	ck_assert_str_eq(entry.id, "j7-0a1b2c3d");
	ck_assert_str_eq(entry.backend, "local");
	ck_assert_int_eq(entry.state, SBX_SANDBOX_READY);
	ck_assert_int_eq(entry.created, 1700000000);
	ck_assert_int_eq(entry.deadline, 1700010800);
	ck_assert_str_eq(entry.owner_runner, "runner-1");
	ck_assert_str_eq(entry.owner_project, "42");
	ck_assert_str_eq(entry.owner_pipeline, "1001");
	ck_assert_str_eq(entry.owner_job, "7");
	ck_assert_ptr_nonnull(entry.data);
	ck_assert(json_object_object_get_ex(entry.data, "init_pid", &field));
	ck_assert_int_eq(json_object_get_int(field), 4242);
	ck_assert(json_object_object_get_ex(entry.data, "cgroup", &field));
	ck_assert_str_eq(json_object_get_string(field), "sbx/j7-0a1b2c3d");
	sbx_journal_entry_clear(&entry);

	ck_assert_int_eq(sbx_journal_remove(&journal, "j7-0a1b2c3d", &error), 0);
	ck_assert_int_eq(sbx_journal_read(&journal, "j7-0a1b2c3d", &entry, &error), -1);
	ck_assert_int_eq(error.error_class, SBX_ERROR_NOT_FOUND);
	/* Removing what is gone succeeds. */
	ck_assert_int_eq(sbx_journal_remove(&journal, "j7-0a1b2c3d", &error), 0);
	sbx_journal_close(&journal);
}
END_TEST

START_TEST(write_replaces_entry_atomically)
{
	struct sbx_journal journal;
	struct sbx_journal_entry entry;
	struct sbx_error error = { 0 };

	open_journal(&journal);
	fill_entry(&entry, "j8-00000001", 100);
	entry.state = SBX_SANDBOX_PREPARING;
	ck_assert_int_eq(sbx_journal_write(&journal, &entry, &error), 0);
	entry.state = SBX_SANDBOX_DEAD;
	free(entry.owner_job);
	entry.owner_job = NULL;
	ck_assert_int_eq(sbx_journal_write(&journal, &entry, &error), 0);
	sbx_journal_entry_clear(&entry);

	ck_assert_int_eq(sbx_journal_read(&journal, "j8-00000001", &entry, &error), 0);
	ck_assert_int_eq(entry.state, SBX_SANDBOX_DEAD);
	ck_assert_ptr_null(entry.owner_job);
	ck_assert_str_eq(entry.owner_runner, "runner-1");
	sbx_journal_entry_clear(&entry);
	sbx_journal_close(&journal);
}
END_TEST

START_TEST(read_written_json_format)
{
	struct sbx_journal journal;
	struct sbx_error error = { 0 };
	struct json_object *root, *field, *owner;
	char *path, *text = NULL;

	open_journal(&journal);
	write_entry(&journal, "x-0123456789ab", 1234);
	path = path_in_state("sandboxes/x-0123456789ab.json");
	ck_assert_int_eq(sbx_read_file(path, 65536, &text, NULL, &error), 0);
	root = json_tokener_parse(text);
	ck_assert_ptr_nonnull(root);
	ck_assert(json_object_object_get_ex(root, "version", &field));
	ck_assert_int_eq(json_object_get_int(field), 1);
	ck_assert(json_object_object_get_ex(root, "id", &field));
	ck_assert_str_eq(json_object_get_string(field), "x-0123456789ab");
	ck_assert(json_object_object_get_ex(root, "state", &field));
	ck_assert_str_eq(json_object_get_string(field), "ready");
	ck_assert(json_object_object_get_ex(root, "created", &field));
	ck_assert_int_eq(json_object_get_int64(field), 1234);
	ck_assert(json_object_object_get_ex(root, "owner", &owner));
	ck_assert(json_object_object_get_ex(owner, "job", &field));
	ck_assert_str_eq(json_object_get_string(field), "7");
	ck_assert(json_object_object_get_ex(root, "data", &field));
	ck_assert(json_object_is_type(field, json_type_object));
	json_object_put(root);
	free(text);
	free(path);
	sbx_journal_close(&journal);
}
END_TEST

START_TEST(read_older_minimal_entry)
{
	struct sbx_journal journal;
	struct sbx_journal_entry entry;
	struct sbx_error error = { 0 };
	char *dir;

	open_journal(&journal);
	dir = path_in_state("sandboxes");
	ck_assert_int_eq(mkdir(dir, 0700), 0);
	free(dir);
	/* No owner and no data: both are optional for readers. */
	write_raw("sandboxes/j9-00000002.json",
		  "{\"version\":1,\"id\":\"j9-00000002\",\"backend\":\"agent-sandbox\","
		  "\"state\":\"preparing\",\"created\":5,\"deadline\":6}");
	ck_assert_msg(sbx_journal_read(&journal, "j9-00000002", &entry, &error) == 0, "%s",
		      error.message);
	ck_assert_str_eq(entry.backend, "agent-sandbox");
	ck_assert_int_eq(entry.state, SBX_SANDBOX_PREPARING);
	ck_assert_ptr_null(entry.owner_runner);
	ck_assert_ptr_nonnull(entry.data);
	ck_assert_int_eq(json_object_object_length(entry.data), 0);
	sbx_journal_entry_clear(&entry);
	sbx_journal_close(&journal);
}
END_TEST

START_TEST(read_newer_version_rejected)
{
	struct sbx_journal journal;
	struct sbx_journal_entry entry;
	struct sbx_error error = { 0 };
	char *dir;

	open_journal(&journal);
	dir = path_in_state("sandboxes");
	ck_assert_int_eq(mkdir(dir, 0700), 0);
	free(dir);
	write_raw("sandboxes/j9-00000003.json",
		  "{\"version\":2,\"written_by\":\"sbx 9.9.9\",\"id\":\"j9-00000003\","
		  "\"layout\":\"changed\"}");
	ck_assert_int_eq(sbx_journal_read(&journal, "j9-00000003", &entry, &error), -1);
	ck_assert_int_eq(error.error_class, SBX_ERROR_INVALID);
	ck_assert_ptr_nonnull(strstr(error.message, "format version 2"));
	ck_assert_ptr_nonnull(strstr(error.message, "written by sbx 9.9.9"));
	ck_assert_ptr_nonnull(strstr(error.message, "reads versions up to 1"));
	sbx_journal_close(&journal);
}
END_TEST

START_TEST(read_corrupt_entries_rejected)
{
	static const struct {
		const char *text;
		const char *expected;
	} cases[] = {
		{ "{\"version\":1,", "the JSON ends early" },
		{ "[1, 2]", "not a JSON object" },
		{ "{\"id\":\"j9-00000004\"}", "\"version\" is missing" },
		{ "{\"version\":1,\"id\":\"j9-99999999\",\"backend\":\"local\",\"state\":\"ready\","
		  "\"created\":1,\"deadline\":2}", "does not match the file name" },
		{ "{\"version\":1,\"id\":\"j9-00000004\",\"backend\":\"local\",\"state\":\"gone\","
		  "\"created\":1,\"deadline\":2}", "\"state\" is not preparing, ready or dead" },
		{ "{\"version\":1,\"id\":\"j9-00000004\",\"backend\":\"local\",\"state\":\"ready\","
		  "\"created\":\"soon\",\"deadline\":2}",
		  "\"created\" is missing or not an integer" },
		{ "{\"version\":1,\"id\":\"j9-00000004\",\"backend\":\"local\",\"state\":\"ready\","
		  "\"created\":1,\"deadline\":2,\"data\":[]}", "\"data\" is not an object" },
		{ "{\"version\":0,\"id\":\"j9-00000004\"}", "\"version\" is below 1" },
	};
	struct sbx_journal journal;
	char *dir;

	open_journal(&journal);
	dir = path_in_state("sandboxes");
	ck_assert_int_eq(mkdir(dir, 0700), 0);
	free(dir);
	for (size_t i = 0; i < SBX_ARRAY_SIZE(cases); i++) {
		struct sbx_journal_entry entry;
		struct sbx_error error = { 0 };

		write_raw("sandboxes/j9-00000004.json", cases[i].text);
		ck_assert_int_eq(sbx_journal_read(&journal, "j9-00000004", &entry, &error), -1);
		ck_assert_msg(strstr(error.message, cases[i].expected) != NULL,
			      "case %zu: expected \"%s\" in \"%s\"", i, cases[i].expected,
			      error.message);
		ck_assert_ptr_nonnull(strstr(error.message, "j9-00000004.json"));
	}
	sbx_journal_close(&journal);
}
END_TEST

START_TEST(invalid_ids_rejected)
{
	static const char *const ids[] = {
		"", "../etc/passwd", "a/b", "..", "-leading-dash", "UPPER", "j7_underscore",
		"j7.json", "1234567890123456789012345678901234567890123456789012345678901234",
	};
	struct sbx_journal journal;
	char *sandboxes;
	struct stat st;

	open_journal(&journal);
	for (size_t i = 0; i < SBX_ARRAY_SIZE(ids); i++) {
		struct sbx_journal_entry entry;
		struct sbx_error error = { 0 };
		char *job_dir;
		int fd;

		/* entry.id cannot hold the over-long id, which the other calls still get. */
		if (strlen(ids[i]) < sizeof(entry.id)) {
			fill_entry(&entry, "placeholder", 1);
			snprintf(entry.id, sizeof(entry.id), "%s", ids[i]);
			ck_assert_msg(sbx_journal_write(&journal, &entry, &error) == -1,
				      "id \"%s\"", ids[i]);
			ck_assert_int_eq(error.error_class, SBX_ERROR_INVALID);
			ck_assert_ptr_nonnull(strstr(error.message, "invalid sandbox id"));
			sbx_journal_entry_clear(&entry);
		}

		error.error_class = SBX_ERROR_NONE;
		ck_assert_int_eq(sbx_journal_read(&journal, ids[i], &entry, &error), -1);
		ck_assert_int_eq(error.error_class, SBX_ERROR_INVALID);
		error.error_class = SBX_ERROR_NONE;
		ck_assert_int_eq(sbx_journal_remove(&journal, ids[i], &error), -1);
		ck_assert_int_eq(error.error_class, SBX_ERROR_INVALID);
		error.error_class = SBX_ERROR_NONE;
		fd = sbx_journal_lock(&journal, ids[i], 0, &error);
		ck_assert_int_eq(fd, -1);
		ck_assert_int_eq(error.error_class, SBX_ERROR_INVALID);
		job_dir = sbx_journal_job_dir(&journal, ids[i]);
		ck_assert_ptr_null(job_dir);
		ck_assert_int_eq(errno, EINVAL);
	}
	/* Nothing was written anywhere for the rejected ids. */
	sandboxes = path_in_state("sandboxes");
	ck_assert_int_eq(stat(sandboxes, &st), -1);
	free(sandboxes);
	sbx_journal_close(&journal);
}
END_TEST

START_TEST(symlinked_entry_not_followed)
{
	struct sbx_journal journal;
	struct sbx_journal_entry entry;
	struct sbx_error error = { 0 };
	char *target, *link_path;

	open_journal(&journal);
	write_entry(&journal, "j1-00000001", 1);
	target = path_in_state("sandboxes/j1-00000001.json");
	link_path = path_in_state("sandboxes/j1-00000002.json");
	ck_assert_int_eq(symlink(target, link_path), 0);
	ck_assert_int_eq(sbx_journal_read(&journal, "j1-00000002", &entry, &error), -1);
	ck_assert_ptr_nonnull(strstr(error.message, "symbolic link"));
	free(target);
	free(link_path);
	sbx_journal_close(&journal);
}
END_TEST

struct collected {
	char ids[8][SBX_ID_MAX + 1];
	int64_t created[8];
	int count;
	int stop_after;
};

static int collect(void *userdata, const struct sbx_journal_entry *entry)
{
	struct collected *collected = userdata;

	if (collected->count < 8) {
		snprintf(collected->ids[collected->count], sizeof(collected->ids[0]), "%s",
			 entry->id);
		collected->created[collected->count] = entry->created;
	}
	collected->count++;
	return collected->stop_after > 0 && collected->count >= collected->stop_after;
}

START_TEST(foreach_skips_corrupt_and_temp_files)
{
	struct sbx_journal journal;
	struct sbx_error error = { 0 };
	struct collected collected = { 0 };

	open_journal(&journal);
	write_entry(&journal, "j3-00000003", 3);
	write_entry(&journal, "j1-00000001", 1);
	write_entry(&journal, "j2-00000002", 2);
	write_raw("sandboxes/j4-00000004.json", "{ not json");
	/* A temporary file that a crash left behind during sbx_write_file_atomic(). */
	write_raw("sandboxes/j5-00000005.json.0123456789abcdef.tmp", "{}");
	write_raw("sandboxes/README", "not an entry");

	ck_assert_int_eq(sbx_journal_foreach(&journal, collect, &collected, &error), 0);
	ck_assert_int_eq(collected.count, 3);
	ck_assert_str_eq(collected.ids[0], "j1-00000001");
	ck_assert_str_eq(collected.ids[1], "j2-00000002");
	ck_assert_str_eq(collected.ids[2], "j3-00000003");
	ck_assert_int_eq(collected.created[2], 3);
	ck_assert_msg(strstr(logged, "j4-00000004.json is corrupt") != NULL, "log: %s", logged);
	ck_assert_msg(strstr(logged, "README") != NULL, "log: %s", logged);
	ck_assert_msg(strstr(logged, ".tmp") == NULL, "log: %s", logged);
	ck_assert_msg(strstr(logged_debug, "j5-00000005.json.0123456789abcdef.tmp") != NULL,
		      "debug log: %s", logged_debug);
	sbx_journal_close(&journal);
}
END_TEST

START_TEST(foreach_stops_on_nonzero_return)
{
	struct sbx_journal journal;
	struct sbx_error error = { 0 };
	struct collected collected = { .stop_after = 2 };

	open_journal(&journal);
	write_entry(&journal, "j1-00000001", 1);
	write_entry(&journal, "j2-00000002", 2);
	write_entry(&journal, "j3-00000003", 3);
	ck_assert_int_eq(sbx_journal_foreach(&journal, collect, &collected, &error), 0);
	ck_assert_int_eq(collected.count, 2);
	sbx_journal_close(&journal);
}
END_TEST

START_TEST(foreach_empty_journal)
{
	struct sbx_journal journal;
	struct sbx_error error = { 0 };
	struct collected collected = { 0 };

	open_journal(&journal);
	ck_assert_int_eq(sbx_journal_foreach(&journal, collect, &collected, &error), 0);
	ck_assert_int_eq(collected.count, 0);
	sbx_journal_close(&journal);
}
END_TEST

/* Forks a child that takes the lock of ID, reports through a pipe and holds it until killed. */
static pid_t fork_lock_holder(struct sbx_journal *journal, const char *id)
{
	int ready[2];
	char byte;
	pid_t pid;

	ck_assert_int_eq(pipe2(ready, O_CLOEXEC), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		struct sbx_error error = { 0 };
		int fd = sbx_journal_lock(journal, id, 1000, &error);

		if (fd < 0)
			_exit(1);
		if (write(ready[1], "x", 1) != 1)
			_exit(2);
		for (;;)
			pause();
	}
	close(ready[1]);
	ck_assert_int_eq(read(ready[0], &byte, 1), 1);
	close(ready[0]);
	return pid;
}

static void stop_child(pid_t pid)
{
	int status;

	kill(pid, SIGKILL);
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
}

START_TEST(lock_contention_times_out)
{
	struct sbx_journal journal;
	struct sbx_error error = { 0 };
	char holder[64];
	int64_t started, elapsed;
	pid_t pid;
	int fd;

	open_journal(&journal);
	pid = fork_lock_holder(&journal, "j5-00000005");

	started = sbx_monotonic_ms();
	fd = sbx_journal_lock(&journal, "j5-00000005", 300, &error);
	elapsed = sbx_monotonic_ms() - started;
	ck_assert_int_eq(fd, -1);
	ck_assert_int_ge(elapsed, 300);
	ck_assert_int_lt(elapsed, 3000);
	snprintf(holder, sizeof(holder), "locked by process %d", (int) pid);
	ck_assert_msg(strstr(error.message, holder) != NULL, "%s", error.message);
	ck_assert_ptr_nonnull(strstr(error.message, "gave up after 300 ms"));

	/* Once the holder is gone the lock is free at once. */
	stop_child(pid);
	fd = sbx_journal_lock(&journal, "j5-00000005", 0, &error);
	ck_assert_msg(fd >= 0, "%s", error.message);
	sbx_journal_unlock(fd);
	sbx_journal_close(&journal);
}
END_TEST

START_TEST(lock_waits_for_release)
{
	struct sbx_journal journal;
	struct sbx_error error = { 0 };
	pid_t pid, killer;
	int fd, status;

	open_journal(&journal);
	pid = fork_lock_holder(&journal, "j6-00000006");
	killer = fork();
	ck_assert_int_ge(killer, 0);
	if (killer == 0) {
		usleep(200 * 1000);
		kill(pid, SIGKILL);
		_exit(0);
	}

	/* Waits forever, which here means until the killer ends the holder. */
	fd = sbx_journal_lock(&journal, "j6-00000006", -1, &error);
	ck_assert_msg(fd >= 0, "%s", error.message);
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFSIGNALED(status));
	ck_assert_int_eq(waitpid(killer, &status, 0), killer);
	sbx_journal_unlock(fd);
	sbx_journal_close(&journal);
}
END_TEST

START_TEST(lock_file_private_and_removable)
{
	struct sbx_journal journal;
	struct sbx_error error = { 0 };
	struct stat st;
	char *path;
	int fd;

	open_journal(&journal);
	fd = sbx_journal_lock(&journal, "j7-00000007", 0, &error);
	ck_assert_msg(fd >= 0, "%s", error.message);
	path = path_in_state("locks/j7-00000007.lock");
	ck_assert_int_eq(lstat(path, &st), 0);
	ck_assert_uint_eq(st.st_mode & 07777, 0600);

	sbx_journal_unlock_remove(&journal, "j7-00000007", fd);
	ck_assert_int_eq(lstat(path, &st), -1);
	ck_assert_int_eq(errno, ENOENT);

	/* The next lock creates the file again. */
	fd = sbx_journal_lock(&journal, "j7-00000007", 0, &error);
	ck_assert_msg(fd >= 0, "%s", error.message);
	ck_assert_int_eq(lstat(path, &st), 0);
	sbx_journal_unlock(fd);
	free(path);
	sbx_journal_close(&journal);
}
END_TEST

/*
 * A waiter that got the lock on a file the holder removed must move on to the file the name
 * now refers to; otherwise it and a later process would both believe they hold the lock.
 */
START_TEST(lock_after_remove_is_exclusive)
{
	struct sbx_journal journal;
	struct sbx_error error = { 0 };
	struct stat held, current;
	int ready[2];
	char byte, *path;
	pid_t pid;
	int fd, status;

	open_journal(&journal);
	ck_assert_int_eq(pipe2(ready, O_CLOEXEC), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		int held_fd = sbx_journal_lock(&journal, "j8-00000008", 1000, &error);

		if (held_fd < 0 || write(ready[1], "x", 1) != 1)
			_exit(1);
		/* Long enough for the parent to be waiting on this file. */
		usleep(300 * 1000);
		sbx_journal_unlock_remove(&journal, "j8-00000008", held_fd);
		_exit(0);
	}
	close(ready[1]);
	ck_assert_int_eq(read(ready[0], &byte, 1), 1);
	close(ready[0]);

	fd = sbx_journal_lock(&journal, "j8-00000008", 5000, &error);
	ck_assert_msg(fd >= 0, "%s", error.message);
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);

	path = path_in_state("locks/j8-00000008.lock");
	ck_assert_int_eq(fstat(fd, &held), 0);
	ck_assert_int_eq(stat(path, &current), 0);
	ck_assert_uint_eq(held.st_ino, current.st_ino);
	ck_assert_int_eq(sbx_journal_lock(&journal, "j8-00000008", 0, &error), -1);
	ck_assert_ptr_nonnull(strstr(error.message, "is locked by process"));
	free(path);
	sbx_journal_unlock(fd);
	sbx_journal_close(&journal);
}
END_TEST

START_TEST(job_dir_created_private)
{
	struct sbx_journal journal;
	struct stat st;
	char *dir, *expected;

	open_journal(&journal);
	dir = sbx_journal_job_dir(&journal, "j9-00000009");
	ck_assert_ptr_nonnull(dir);
	expected = path_in_state("jobs/j9-00000009");
	ck_assert_str_eq(dir, expected);
	ck_assert_int_eq(lstat(dir, &st), 0);
	ck_assert(S_ISDIR(st.st_mode));
	ck_assert_uint_eq(st.st_mode & 07777, 0700);
	free(dir);

	/* A second call returns the same existing directory. */
	dir = sbx_journal_job_dir(&journal, "j9-00000009");
	ck_assert_ptr_nonnull(dir);
	ck_assert_str_eq(dir, expected);
	free(dir);
	free(expected);
	sbx_journal_close(&journal);
}
END_TEST

START_TEST(job_dir_symlink_rejected)
{
	struct sbx_journal journal;
	char *jobs, *link_path;

	open_journal(&journal);
	jobs = path_in_state("jobs");
	ck_assert_int_eq(mkdir(jobs, 0700), 0);
	link_path = path_in_state("jobs/j9-00000010");
	ck_assert_int_eq(symlink(temp_dir, link_path), 0);
	ck_assert_ptr_null(sbx_journal_job_dir(&journal, "j9-00000010"));
	free(jobs);
	free(link_path);
	sbx_journal_close(&journal);
}
END_TEST

static Suite *journal_suite(void)
{
	Suite *suite = suite_create("journal");
	TCase *tc = tcase_create("journal");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, open_creates_private_state_dir);
	tcase_add_test(tc, open_rejects_shared_state_dir);
	tcase_add_test(tc, open_rejects_relative_dir);
	tcase_add_test(tc, write_read_remove_round_trip);
	tcase_add_test(tc, write_replaces_entry_atomically);
	tcase_add_test(tc, read_written_json_format);
	tcase_add_test(tc, read_older_minimal_entry);
	tcase_add_test(tc, read_newer_version_rejected);
	tcase_add_test(tc, read_corrupt_entries_rejected);
	tcase_add_test(tc, invalid_ids_rejected);
	tcase_add_test(tc, symlinked_entry_not_followed);
	tcase_add_test(tc, foreach_skips_corrupt_and_temp_files);
	tcase_add_test(tc, foreach_stops_on_nonzero_return);
	tcase_add_test(tc, foreach_empty_journal);
	tcase_add_test(tc, lock_contention_times_out);
	tcase_add_test(tc, lock_waits_for_release);
	tcase_add_test(tc, lock_file_private_and_removable);
	tcase_add_test(tc, lock_after_remove_is_exclusive);
	tcase_add_test(tc, job_dir_created_private);
	tcase_add_test(tc, job_dir_symlink_rejected);
	suite_add_tcase(suite, tc);
	return suite;
}

int main(void)
{
	SRunner *runner = srunner_create(journal_suite());
	int failed;

	srunner_run_all(runner, CK_NORMAL);
	failed = srunner_ntests_failed(runner);
	srunner_free(runner);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
