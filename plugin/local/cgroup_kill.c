/* SPDX-License-Identifier: MIT */
/*
 * Killing the processes of a cgroup and removing it. cgroup.kill (cgroup v2, Linux 5.14) kills
 * everything below a cgroup atomically. Older kernels and the v1 freezer need a loop: freeze,
 * SIGKILL each listed process, thaw, until the cgroup is empty.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "cgroup.h"
#include "cgroup_internal.h"
#include "cleanup.h"
#include "error.h"
#include "util.h"

/* Pids signalled per round, which bounds the pidfds open at a time. */
#define SIGNAL_BATCH 128

/* Maximum time of one poll while waiting for a cgroup to empty or freeze, milliseconds. */
#define POLL_STEP_MS 20

static int kill_file_disabled;

void sbx_cgroup_testing_disable_kill_file(int disabled)
{
	kill_file_disabled = disabled;
}

struct pid_list {
	pid_t *pids;
	size_t count;
};

static void pid_list_free(struct pid_list *list)
{
	free(list->pids);
	list->pids = NULL;
	list->count = 0;
}

static int compare_pids(const void *a, const void *b)
{
	pid_t x = *(const pid_t *) a, y = *(const pid_t *) b;

	return x < y ? -1 : x > y;
}

/* Reads DIR/cgroup.procs, sorted. A missing cgroup is an empty list. 0 or -1/errno. */
static int read_procs(const char *dir, struct pid_list *list)
{
	_cleanup_free_ char *data = NULL;
	size_t capacity = 0;
	pid_t *pids = NULL;
	size_t count = 0;
	char *p;

	if (sbx_cgroup_read_file(dir, "cgroup.procs", &data) < 0) {
		if (errno != ENOENT)
			return -1;
		list->pids = NULL;
		list->count = 0;
		return 0;
	}

	for (p = data; *p != '\0';) {
		char *end;
		long value = strtol(p, &end, 10);

		if (end == p) {
			p++;
			continue;
		}
		p = end;
		if (value <= 0 || value > INT_MAX)
			continue;
		if (count == capacity) {
			size_t bigger = capacity == 0 ? 16 : capacity * 2;
			pid_t *grown = realloc(pids, bigger * sizeof(*pids));

			if (grown == NULL) {
				free(pids);
				errno = ENOMEM;
				return -1;
			}
			pids = grown;
			capacity = bigger;
		}
		pids[count++] = (pid_t) value;
	}
	if (count > 1)
		qsort(pids, count, sizeof(*pids), compare_pids);
	list->pids = pids;
	list->count = count;
	return 0;
}

static int pid_listed(const struct pid_list *list, pid_t pid)
{
	return list->count > 0 &&
	       bsearch(&pid, list->pids, list->count, sizeof(pid), compare_pids) != NULL;
}

static int pidfd_open_compat(pid_t pid)
{
#ifdef SYS_pidfd_open
	/* pidfd_open() always returns a close-on-exec descriptor. */
	return (int) syscall(SYS_pidfd_open, pid, 0);
#else
	(void) pid;
	errno = ENOSYS;
	return -1;
#endif
}

static int pidfd_send_signal_compat(int pidfd, int signal_number)
{
#ifdef SYS_pidfd_send_signal
	return (int) syscall(SYS_pidfd_send_signal, pidfd, signal_number, NULL, 0);
#else
	(void) pidfd;
	(void) signal_number;
	errno = ENOSYS;
	return -1;
#endif
}

/*
 * Sends SIGNAL_NUMBER to every process listed in DIR/cgroup.procs. A pid read from the file
 * may exit and be reused before kill(), so each pid is pinned with a pidfd first and signalled
 * only if the file, read again after pinning, still lists it. Kernels without pidfds (before
 * 5.3) get plain kill(). 0 or -1/errno.
 */
static int signal_procs(const char *dir, int signal_number, size_t *signalled)
{
	struct pid_list before = { 0 }, after = { 0 };
	int pidfds[SIGNAL_BATCH];
	int open_errors[SIGNAL_BATCH];
	int result = 0;

	if (read_procs(dir, &before) < 0)
		return -1;

	for (size_t start = 0; start < before.count; start += SIGNAL_BATCH) {
		size_t batch = before.count - start;

		if (batch > SIGNAL_BATCH)
			batch = SIGNAL_BATCH;
		for (size_t i = 0; i < batch; i++) {
			pidfds[i] = pidfd_open_compat(before.pids[start + i]);
			open_errors[i] = pidfds[i] < 0 ? errno : 0;
		}
		if (read_procs(dir, &after) < 0)
			result = -1;
		for (size_t i = 0; i < batch && result == 0; i++) {
			pid_t pid = before.pids[start + i];
			int sent;

			/* ESRCH from pidfd_open(): the process is gone already. */
			if (!pid_listed(&after, pid) || open_errors[i] == ESRCH)
				continue;
			if (pidfds[i] >= 0)
				sent = pidfd_send_signal_compat(pidfds[i], signal_number);
			else
				sent = kill(pid, signal_number);
			if (sent == 0 && signalled != NULL)
				(*signalled)++;
		}
		for (size_t i = 0; i < batch; i++)
			if (pidfds[i] >= 0)
				close(pidfds[i]);
		pid_list_free(&after);
		if (result < 0)
			break;
	}
	pid_list_free(&before);
	return result;
}

/*
 * Calls FN for DIR and every cgroup below it, children first. A directory that vanishes while
 * walking is skipped. Returns the first failure of FN (-1/errno) after visiting everything.
 */
static int walk_cgroup(const char *dir, int (*fn)(const char *dir, void *userdata),
		       void *userdata)
{
	_cleanup_closedir_ DIR *handle = opendir(dir);
	struct dirent *entry;
	int result = 0, saved = 0;

	if (handle == NULL)
		return errno == ENOENT ? 0 : -1;
	while ((entry = readdir(handle)) != NULL) {
		char child[PATH_MAX];

		if (entry->d_type != DT_DIR || strcmp(entry->d_name, ".") == 0 ||
		    strcmp(entry->d_name, "..") == 0)
			continue;
		if (sbx_cgroup_join_path(child, sizeof(child), dir, entry->d_name) < 0 ||
		    walk_cgroup(child, fn, userdata) < 0) {
			if (result == 0)
				saved = errno;
			result = -1;
		}
	}
	if (fn(dir, userdata) < 0) {
		if (result == 0)
			saved = errno;
		result = -1;
	}
	if (result < 0)
		errno = saved;
	return result;
}

struct signal_walk {
	int signal_number;
	size_t signalled;
};

static int signal_walk_fn(const char *dir, void *userdata)
{
	struct signal_walk *walk = userdata;

	return signal_procs(dir, walk->signal_number, &walk->signalled);
}

int sbx_cgroup_signal_tree(const char *dir, int signal_number, size_t *signalled)
{
	struct signal_walk walk = { .signal_number = signal_number };
	int result = walk_cgroup(dir, signal_walk_fn, &walk);

	if (signalled != NULL)
		*signalled = walk.signalled;
	return result;
}

static int count_walk_fn(const char *dir, void *userdata)
{
	struct pid_list list;

	if (read_procs(dir, &list) < 0)
		return -1;
	*(size_t *) userdata += list.count;
	pid_list_free(&list);
	return 0;
}

/* Counts the processes in DIR and below; a missing DIR has none. 0 or -1/errno. */
static int count_tree(const char *dir, size_t *count)
{
	*count = 0;
	return walk_cgroup(dir, count_walk_fn, count);
}

/* ---- waiting for a cgroup to empty or freeze ---- */

/*
 * Waits until the cgroup2 DIR reports "KEY VALUE" in cgroup.events, or DEADLINE passes. The
 * kernel flags the file with POLLPRI when it changes, so this sleeps until a change or a short
 * step. Returns 1 when reached, 0 on timeout, -1/errno on failure. A missing DIR counts as
 * reached, because a removed cgroup has nothing left to wait for.
 */
static int wait_events(const char *dir, const char *key, long long value, int64_t deadline)
{
	char path[PATH_MAX];
	_cleanup_close_ int fd = -1;

	if (sbx_cgroup_join_path(path, sizeof(path), dir, "cgroup.events") < 0)
		return -1;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 1 : -1;

	for (;;) {
		char buf[256];
		ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
		struct pollfd pfd = { .fd = fd, .events = POLLPRI };
		int64_t left;

		if (n < 0 && errno == EINTR)
			continue;
		/* ENODEV: the cgroup was removed while the file was open. */
		if (n < 0)
			return errno == ENODEV ? 1 : -1;
		buf[n] = '\0';
		if (sbx_cgroup_keyed_value(buf, key) == value)
			return 1;
		left = sbx_cgroup_remaining_ms(deadline);
		if (left == 0)
			return 0;
		if (poll(&pfd, 1, (int) (left < POLL_STEP_MS ? left : POLL_STEP_MS)) < 0 &&
		    errno != EINTR)
			return -1;
	}
}

/* Waits until DIR and its descendants list no process. 1, 0 on timeout, or -1/errno. */
static int wait_empty_v1(const char *dir, int64_t deadline)
{
	int64_t step = 1;

	for (;;) {
		size_t count;

		if (count_tree(dir, &count) < 0)
			return -1;
		if (count == 0)
			return 1;
		if (sbx_cgroup_remaining_ms(deadline) == 0)
			return 0;
		sbx_cgroup_sleep_ms(step < sbx_cgroup_remaining_ms(deadline) ? step : sbx_cgroup_remaining_ms(deadline));
		if (step < POLL_STEP_MS)
			step *= 2;
	}
}

/* ---- killing ---- */

/*
 * Freezes DIR (so nothing forks while the pids are read), SIGKILLs every process in it and
 * below, thaws it so the frozen processes can die, until it is empty. The kernel's cgroup.kill
 * does all this atomically since 5.14; this is for older kernels and the v1 freezer.
 */
static int kill_frozen(const char *dir, int v2, int64_t deadline)
{
	const char *freeze_file = v2 ? "cgroup.freeze" : "freezer.state";
	const char *frozen = v2 ? "1" : "FROZEN";
	const char *thawed = v2 ? "0" : "THAWED";

	for (;;) {
		int can_freeze, state;

		if (v2)
			state = wait_events(dir, "populated", 0, sbx_monotonic_ms());
		else
			state = wait_empty_v1(dir, sbx_monotonic_ms());
		if (state != 0)
			return state < 0 ? -1 : 0;
		if (sbx_cgroup_remaining_ms(deadline) == 0) {
			errno = ETIMEDOUT;
			return -1;
		}

		/* Without a freezer (v2 before 5.2) repeated kills still win against forks in
		 * the end, because every round kills the processes it finds. */
		can_freeze = sbx_cgroup_write_file(dir, freeze_file, frozen) == 0;
		if (can_freeze && v2) {
			int64_t freeze_deadline = sbx_monotonic_ms() + 100;

			if (freeze_deadline > deadline)
				freeze_deadline = deadline;
			wait_events(dir, "frozen", 1, freeze_deadline);
		} else if (can_freeze) {
			int64_t freeze_deadline = sbx_monotonic_ms() + 100;
			_cleanup_free_ char *data = NULL;

			/* The v1 freezer reports FREEZING until every task has stopped. */
			while (sbx_cgroup_read_file(dir, "freezer.state", &data) == 0 &&
			       strncmp(data, "FROZEN", 6) != 0 &&
			       sbx_monotonic_ms() < freeze_deadline) {
				free(data);
				data = NULL;
				sbx_cgroup_sleep_ms(1);
			}
		}

		sbx_cgroup_signal_tree(dir, SIGKILL, NULL);
		if (can_freeze)
			sbx_cgroup_write_file(dir, freeze_file, thawed);

		if (v2)
			state = wait_events(dir, "populated", 0,
					    sbx_monotonic_ms() + POLL_STEP_MS < deadline ?
					    sbx_monotonic_ms() + POLL_STEP_MS : deadline);
		else
			state = wait_empty_v1(dir, sbx_monotonic_ms() + POLL_STEP_MS < deadline ?
					      sbx_monotonic_ms() + POLL_STEP_MS : deadline);
		if (state != 0)
			return state < 0 ? -1 : 0;
	}
}

/* Kills every process in the tracking cgroup DIR and below and waits until it is empty. */
int sbx_cgroup_kill_tracking(const char *dir, int v2, int64_t deadline, struct sbx_error *error)
{
	int result;

	if (v2 && !kill_file_disabled) {
		if (sbx_cgroup_write_file(dir, "cgroup.kill", "1") == 0) {
			result = wait_events(dir, "populated", 0, deadline);
			if (result < 0)
				return sbx_cgroup_error(error, errno, dir, NULL,
						    "cannot read cgroup.events");
			if (result == 0)
				goto timed_out;
			return 0;
		}
		if (errno == ENOENT && access(dir, F_OK) < 0)
			return 0;
		/* ENOENT for the file itself: a kernel before 5.14. */
		if (errno != ENOENT)
			return sbx_cgroup_error(error, errno, dir, NULL, "cannot write cgroup.kill");
	}

	if (kill_frozen(dir, v2, deadline) < 0) {
		if (errno == ETIMEDOUT)
			goto timed_out;
		return sbx_cgroup_error(error, errno, dir, v2 ? NULL : "freezer",
				    "cannot kill its processes");
	}
	return 0;

timed_out:
	return sbx_error_set(error, SBX_ERROR_SYSTEM,
			     "cgroup %s: processes still running after the kill timed out; "
			     "look for processes in uninterruptible sleep (state D) and run "
			     "sbx gc later",
			     dir);
}

/* Kills the processes of a v1 limit cgroup (no freezer there) until it is empty. */
int sbx_cgroup_kill_plain(const char *dir, int64_t deadline, struct sbx_error *error)
{
	for (;;) {
		size_t count;

		if (count_tree(dir, &count) < 0)
			return sbx_cgroup_error(error, errno, dir, NULL, "cannot read cgroup.procs");
		if (count == 0)
			return 0;
		if (sbx_cgroup_remaining_ms(deadline) == 0)
			return sbx_error_set(error, SBX_ERROR_SYSTEM,
					     "cgroup %s: %zu processes still running after the kill timed out; "
					     "look for processes in uninterruptible sleep (state D) and run "
					     "sbx gc later",
					     dir, count);
		sbx_cgroup_signal_tree(dir, SIGKILL, NULL);
		sbx_cgroup_sleep_ms(1);
	}
}

/* ---- removing directories ---- */

static int rmdir_walk_fn(const char *dir, void *userdata)
{
	int64_t deadline = *(const int64_t *) userdata;

	/* A cgroup whose last process just exited can stay busy for a moment. */
	for (;;) {
		if (rmdir(dir) == 0 || errno == ENOENT)
			return 0;
		if (errno != EBUSY || sbx_cgroup_remaining_ms(deadline) == 0)
			return -1;
		sbx_cgroup_sleep_ms(1);
	}
}

/* Removes the cgroup DIR and every cgroup below it; a missing DIR is removed already. */
int sbx_cgroup_remove_tree(const char *dir, int64_t deadline, struct sbx_error *error)
{
	if (walk_cgroup(dir, rmdir_walk_fn, &deadline) < 0)
		return sbx_cgroup_error(error, errno, dir, NULL, "cannot remove the directory");
	return 0;
}
