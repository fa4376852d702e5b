/* SPDX-License-Identifier: MIT */
/*
 * Tests per-job cgroups against the real kernel; they need root. Every job id starts with
 * "ut<pid of the runner>-", and the test case's teardown destroys whatever a failed test left.
 */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cgroup.h"
#include "cgroup_internal.h"
#include "cleanup.h"
#include "error.h"
#include "util.h"

#define KILL_TIMEOUT_MS 5000

static char id_prefix[32];

/* Hierarchies a job can use, for the leftover sweep and the removal checks. */
static const char *const hierarchy_bases[] = {
	"/sys/fs/cgroup",	  "/sys/fs/cgroup/memory",  "/sys/fs/cgroup/pids",
	"/sys/fs/cgroup/cpu",	  "/sys/fs/cgroup/unified", "/sys/fs/cgroup/freezer",
};

static void make_id(char *buf, size_t size, const char *name)
{
	snprintf(buf, size, "%s%s", id_prefix, name);
}

static struct sbx_error new_error(void)
{
	struct sbx_error error = { .struct_size = sizeof(error) };

	return error;
}

static void create_job(const char *name, const struct sbx_cgroup_limits *limits,
		       struct sbx_cgroup_job *job, char *id, size_t id_size)
{
	struct sbx_error error = new_error();

	make_id(id, id_size, name);
	ck_assert_msg(sbx_cgroup_job_create(id, limits, job, &error) == 0, "create %s: %s", id,
		      error.message);
}

static void destroy_job(struct sbx_cgroup_job *job)
{
	struct sbx_error error = new_error();

	ck_assert_msg(sbx_cgroup_job_destroy(job, KILL_TIMEOUT_MS, &error) == 0, "destroy: %s",
		      error.message);
}

/* Returns the directory of the job in the hierarchy whose path contains NEEDLE, or NULL. */
static const char *job_path(const struct sbx_cgroup_job *job, const char *needle)
{
	for (size_t i = 0; i < job->path_count; i++)
		if (strstr(job->paths[i], needle) != NULL)
			return job->paths[i];
	return NULL;
}

static const char *tracking_dir(const struct sbx_cgroup_job *job)
{
	ck_assert_int_ge(job->tracking_index, 0);
	ck_assert_int_lt(job->tracking_index, (int) job->path_count);
	return job->paths[job->tracking_index];
}

/* The job directory that carries the limit of CONTROLLER ("memory", "pids", "cpu"). */
static const char *limit_dir(const struct sbx_cgroup_job *job, const char *controller)
{
	char needle[64];
	const char *dir;

	if (job->layout == SBX_CGROUP_UNIFIED)
		return job->paths[0];
	snprintf(needle, sizeof(needle), "/%s/sbx/", controller);
	dir = job_path(job, needle);
	ck_assert_msg(dir != NULL, "no %s hierarchy in the job", controller);
	return dir;
}

static char *read_text(const char *dir, const char *file)
{
	char path[PATH_MAX];
	char *data = NULL;
	struct sbx_error error = new_error();

	snprintf(path, sizeof(path), "%s/%s", dir, file);
	ck_assert_msg(sbx_read_file(path, 1 << 20, &data, NULL, &error) == 0, "%s", error.message);
	return data;
}

/* Returns the value of KEY in a "key value" file such as memory.oom_control, or -1. */
static long long keyed_value(const char *dir, const char *file, const char *key)
{
	_cleanup_free_ char *text = read_text(dir, file);
	size_t length = strlen(key);

	for (char *line = text; line != NULL && *line != '\0';) {
		char *next = strchr(line, '\n');

		if (strncmp(line, key, length) == 0 && line[length] == ' ')
			return strtoll(line + length + 1, NULL, 10);
		line = next == NULL ? NULL : next + 1;
	}
	return -1;
}

static int exists(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0;
}

/* ---- child processes ---- */

struct child {
	pid_t pid;
	int go_fd; /* write end: one byte releases the child */
	int result_fd; /* read end: what the child reports */
};

/*
 * Forks a child that waits for a byte on the go pipe, then runs BODY with the write end of the
 * result pipe and exits with its return value. The parent moves the child into a cgroup first.
 */
static struct child spawn_waiting(int (*body)(int result_fd))
{
	int go[2], result[2];
	struct child child;
	char byte;

	ck_assert_int_eq(pipe2(go, O_CLOEXEC), 0);
	ck_assert_int_eq(pipe2(result, O_CLOEXEC), 0);
	child.pid = fork();
	ck_assert_int_ge(child.pid, 0);
	if (child.pid == 0) {
		/* Check's SIGTERM and SIGINT handlers forward the signal to the whole test's
		 * process group; a child must die of them itself. */
		signal(SIGTERM, SIG_DFL);
		signal(SIGINT, SIG_DFL);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		close(go[1]);
		close(result[0]);
		if (read(go[0], &byte, 1) != 1)
			_exit(100);
		close(go[0]);
		_exit(body(result[1]));
	}
	close(go[0]);
	close(result[1]);
	child.go_fd = go[1];
	child.result_fd = result[0];
	return child;
}

static void enter_and_release(const struct sbx_cgroup_job *job, const char *leaf,
			      struct child *child)
{
	struct sbx_error error = new_error();

	ck_assert_msg(sbx_cgroup_job_enter(job, leaf, child->pid, &error) == 0, "enter %s: %s",
		      leaf, error.message);
	ck_assert_int_eq(write(child->go_fd, "g", 1), 1);
	close(child->go_fd);
	child->go_fd = -1;
}

static void read_report(struct child *child, void *buf, size_t size)
{
	size_t done = 0;

	while (done < size) {
		ssize_t n = read(child->result_fd, (char *) buf + done, size - done);

		ck_assert_msg(n > 0, "child %d sent %zu of %zu bytes", (int) child->pid, done, size);
		done += (size_t) n;
	}
}

/* Waits for PID, which may still be on its way to being reparented to this subreaper. */
static int reap(pid_t pid)
{
	int64_t deadline = sbx_monotonic_ms() + KILL_TIMEOUT_MS;
	int status;

	for (;;) {
		pid_t got = waitpid(pid, &status, WNOHANG);

		if (got == pid)
			return status;
		ck_assert_msg(got == 0 || errno == ECHILD, "waitpid %d: %s", (int) pid,
			      strerror(errno));
		ck_assert_msg(sbx_monotonic_ms() < deadline, "process %d did not end", (int) pid);
		usleep(1000);
	}
}

static void assert_killed(pid_t pid)
{
	int status = reap(pid);

	ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
		      "process %d ended with wait status 0x%x, not SIGKILL", (int) pid, status);
}

static int __attribute__((unused)) body_pause(int result_fd)
{
	for (;;)
		pause();
	return 0;
}

static int body_report_ready(int result_fd)
{
	char byte = 'r';

	if (write(result_fd, &byte, 1) != 1)
		return 101;
	for (;;)
		pause();
	return 0;
}

/* ---- tests ---- */

/* Determines the layout from /proc/self/mountinfo, independently of statfs(). */
static enum sbx_cgroup_layout layout_from_mountinfo(void)
{
	_cleanup_fclose_ FILE *file = fopen("/proc/self/mountinfo", "re");
	char line[4096];
	char root_type[64] = "", unified_type[64] = "";

	ck_assert_ptr_nonnull(file);
	while (fgets(line, sizeof(line), file) != NULL) {
		char mount_point[PATH_MAX], type[64];
		char *separator = strstr(line, " - ");

		if (separator == NULL || sscanf(line, "%*s %*s %*s %*s %4095s", mount_point) != 1 ||
		    sscanf(separator + 3, "%63s", type) != 1)
			continue;
		/* A later mount on the same point hides the earlier one. */
		if (strcmp(mount_point, "/sys/fs/cgroup") == 0)
			snprintf(root_type, sizeof(root_type), "%s", type);
		if (strcmp(mount_point, "/sys/fs/cgroup/unified") == 0)
			snprintf(unified_type, sizeof(unified_type), "%s", type);
	}
	if (strcmp(root_type, "cgroup2") == 0)
		return SBX_CGROUP_UNIFIED;
	if (strcmp(root_type, "tmpfs") != 0)
		return SBX_CGROUP_NONE;
	return strcmp(unified_type, "cgroup2") == 0 ? SBX_CGROUP_HYBRID : SBX_CGROUP_LEGACY;
}

START_TEST(test_detect_matches_mountinfo)
{
	enum sbx_cgroup_layout expected = layout_from_mountinfo();

	ck_assert_str_eq(sbx_cgroup_layout_name(sbx_cgroup_detect()),
			 sbx_cgroup_layout_name(expected));
	ck_assert_str_eq(sbx_cgroup_layout_name(SBX_CGROUP_HYBRID), "hybrid");
}
END_TEST

/* True when the comma-separated CONTROLLERS of a /proc/PID/cgroup line name CONTROLLER; ""
 * matches only the cgroup2 line, which lists none. */
static int controller_listed(const char *controllers, const char *controller)
{
	size_t length = strlen(controller);

	if (controller[0] == '\0')
		return controllers[0] == '\0';
	for (const char *p = controllers; p != NULL; p = strchr(p, ',')) {
		if (*p == ',')
			p++;
		if (strncmp(p, controller, length) == 0 && (p[length] == ',' || p[length] == '\0'))
			return 1;
	}
	return 0;
}

/* Checks that /proc/PID/cgroup places PID at RELATIVE in the hierarchy named CONTROLLER
 * (a v1 controller name, or "" for cgroup v2). */
static void assert_in_cgroup(pid_t pid, const char *controller, const char *relative)
{
	char path[64], line[1024];
	_cleanup_fclose_ FILE *file = NULL;

	snprintf(path, sizeof(path), "/proc/%d/cgroup", (int) pid);
	file = fopen(path, "re");
	ck_assert_ptr_nonnull(file);
	while (fgets(line, sizeof(line), file) != NULL) {
		char *controllers = strchr(line, ':');
		char *where;

		if (controllers == NULL)
			continue;
		controllers++;
		where = strchr(controllers, ':');
		if (where == NULL)
			continue;
		*where++ = '\0';
		where[strcspn(where, "\n")] = '\0';
		if (!controller_listed(controllers, controller))
			continue;
		ck_assert_msg(strcmp(where, relative) == 0, "process %d is in %s:%s, expected %s",
			      (int) pid, controllers, where, relative);
		return;
	}
	ck_abort_msg("process %d: no \"%s\" hierarchy in %s", (int) pid, controller, path);
}

/* Returns the cgroup of PID in the hierarchy of CONTROLLER, as /proc/PID/cgroup lists it. */
static char *cgroup_of(pid_t pid, const char *controller)
{
	char path[64], line[1024];
	_cleanup_fclose_ FILE *file = NULL;

	snprintf(path, sizeof(path), "/proc/%d/cgroup", (int) pid);
	file = fopen(path, "re");
	ck_assert_ptr_nonnull(file);
	while (fgets(line, sizeof(line), file) != NULL) {
		char *controllers = strchr(line, ':');
		char *where;

		if (controllers == NULL)
			continue;
		controllers++;
		where = strchr(controllers, ':');
		if (where == NULL)
			continue;
		*where++ = '\0';
		where[strcspn(where, "\n")] = '\0';
		if (controller_listed(controllers, controller))
			return strdup(where);
	}
	ck_abort_msg("process %d: no \"%s\" hierarchy in %s", (int) pid, controller, path);
	return NULL;
}

START_TEST(test_create_writes_limits)
{
	struct sbx_cgroup_limits limits = {
		.memory_max = 64 << 20,
		.pids_max = 100,
		.cpu_max_millis = 500,
	};
	struct sbx_cgroup_job job = { 0 };
	char id[64], expected[128];
	_cleanup_free_ char *memory = NULL;
	_cleanup_free_ char *pids = NULL;
	struct child child;
	char byte;

	create_job("limits", &limits, &job, id, sizeof(id));
	if (job.layout == SBX_CGROUP_UNIFIED) {
		_cleanup_free_ char *cpu = read_text(job.paths[0], "cpu.max");

		memory = read_text(job.paths[0], "memory.max");
		ck_assert_str_eq(cpu, "50000 100000\n");
	} else {
		_cleanup_free_ char *quota = read_text(limit_dir(&job, "cpu"), "cpu.cfs_quota_us");
		_cleanup_free_ char *period = read_text(limit_dir(&job, "cpu"),
							"cpu.cfs_period_us");

		memory = read_text(limit_dir(&job, "memory"), "memory.limit_in_bytes");
		ck_assert_str_eq(quota, "50000\n");
		ck_assert_str_eq(period, "100000\n");
	}
	ck_assert_str_eq(memory, "67108864\n");
	pids = read_text(limit_dir(&job, "pids"), "pids.max");
	ck_assert_str_eq(pids, "100\n");

	child = spawn_waiting(body_report_ready);
	enter_and_release(&job, "init", &child);
	read_report(&child, &byte, 1);
	snprintf(expected, sizeof(expected), "/sbx/%s/init", id);
	if (job.layout == SBX_CGROUP_HYBRID || job.layout == SBX_CGROUP_UNIFIED)
		assert_in_cgroup(child.pid, "", expected);
	if (job.layout != SBX_CGROUP_UNIFIED) {
		snprintf(expected, sizeof(expected), "/sbx/%s", id);
		assert_in_cgroup(child.pid, "memory", expected);
		assert_in_cgroup(child.pid, "pids", expected);
		assert_in_cgroup(child.pid, "cpu", expected);
	}

	destroy_job(&job);
	assert_killed(child.pid);
	for (size_t i = 0; i < job.path_count; i++)
		ck_assert_msg(!exists(job.paths[i]), "%s still exists", job.paths[i]);
	/* Removing what is gone succeeds. */
	destroy_job(&job);
	sbx_cgroup_job_clear(&job);
}
END_TEST

/* A v1 hierarchy without a limit costs a cgroup.procs write per process, so the job skips it. */
START_TEST(test_unlimited_hierarchy_skipped)
{
	struct sbx_cgroup_limits limits = { .pids_max = 64 };
	struct sbx_cgroup_job job = { 0 };
	_cleanup_free_ char *own_memory = NULL;
	_cleanup_free_ char *own_cpu = NULL;
	_cleanup_free_ char *child_memory = NULL;
	_cleanup_free_ char *child_cpu = NULL;
	char id[64], expected[128], path[PATH_MAX];
	struct child child;
	char byte;

	create_job("unlimited", &limits, &job, id, sizeof(id));
	if (job.layout == SBX_CGROUP_UNIFIED) {
		/* One cgroup v2 tree carries every controller; there is nothing to skip. */
		ck_assert_uint_eq(job.path_count, 1);
		destroy_job(&job);
		sbx_cgroup_job_clear(&job);
		return;
	}
	/* The pids hierarchy and the tracking one, nothing else. */
	ck_assert_uint_eq(job.path_count, 2);
	ck_assert_ptr_nonnull(job_path(&job, "/pids/sbx/"));
	ck_assert_ptr_null(job_path(&job, "/memory/sbx/"));
	ck_assert_ptr_null(job_path(&job, "/cpu/sbx/"));
	snprintf(path, sizeof(path), "/sys/fs/cgroup/memory/sbx/%s", id);
	ck_assert_msg(!exists(path), "%s exists", path);
	snprintf(path, sizeof(path), "/sys/fs/cgroup/cpu/sbx/%s", id);
	ck_assert_msg(!exists(path), "%s exists", path);

	child = spawn_waiting(body_report_ready);
	enter_and_release(&job, "stage-1", &child);
	read_report(&child, &byte, 1);
	snprintf(expected, sizeof(expected), "/sbx/%s", id);
	assert_in_cgroup(child.pid, "pids", expected);
	if (job.layout == SBX_CGROUP_HYBRID) {
		snprintf(expected, sizeof(expected), "/sbx/%s/stage-1", id);
		assert_in_cgroup(child.pid, "", expected);
	}
	/* The child stays where it was forked in the hierarchies the job does not use. */
	own_memory = cgroup_of(getpid(), "memory");
	own_cpu = cgroup_of(getpid(), "cpu");
	child_memory = cgroup_of(child.pid, "memory");
	child_cpu = cgroup_of(child.pid, "cpu");
	ck_assert_str_eq(child_memory, own_memory);
	ck_assert_str_eq(child_cpu, own_cpu);

	/* The tracking hierarchy alone finds and kills it. */
	destroy_job(&job);
	assert_killed(child.pid);
	for (size_t i = 0; i < job.path_count; i++)
		ck_assert_msg(!exists(job.paths[i]), "%s still exists", job.paths[i]);
	sbx_cgroup_job_clear(&job);
}
END_TEST

static int body_allocate(int result_fd)
{
	/* Four times the limit, touched page by page so that it is really charged. */
	size_t chunk = 1 << 20;

	for (int i = 0; i < 128; i++) {
		char *block = malloc(chunk);

		if (block == NULL)
			return 102;
		memset(block, i + 1, chunk);
	}
	return 0;
}

START_TEST(test_memory_limit_kills)
{
	struct sbx_cgroup_limits limits = { .memory_max = 32 << 20 };
	struct sbx_cgroup_job job = { 0 };
	char id[64];
	struct child child;
	long long kills;

	create_job("memory", &limits, &job, id, sizeof(id));
	child = spawn_waiting(body_allocate);
	enter_and_release(&job, "stage-1", &child);
	assert_killed(child.pid);
	if (job.layout == SBX_CGROUP_UNIFIED)
		kills = keyed_value(limit_dir(&job, "memory"), "memory.events", "oom_kill");
	else
		kills = keyed_value(limit_dir(&job, "memory"), "memory.oom_control", "oom_kill");
	ck_assert_int_ge(kills, 1);
	destroy_job(&job);
	sbx_cgroup_job_clear(&job);
}
END_TEST

struct fork_report {
	int forks;
	int error;
};

static int body_fork_bomb(int result_fd)
{
	struct fork_report report = { 0 };

	for (int i = 0; i < 1000; i++) {
		pid_t pid = fork();

		if (pid == 0) {
			for (;;)
				pause();
		}
		if (pid < 0) {
			report.error = errno;
			break;
		}
		report.forks++;
	}
	if (write(result_fd, &report, sizeof(report)) != (ssize_t) sizeof(report))
		return 103;
	for (;;)
		pause();
	return 0;
}

START_TEST(test_pids_limit_stops_forks)
{
	struct sbx_cgroup_limits limits = { .pids_max = 8 };
	struct sbx_cgroup_job job = { 0 };
	struct fork_report report;
	char id[64];
	struct child child;

	create_job("pids", &limits, &job, id, sizeof(id));
	child = spawn_waiting(body_fork_bomb);
	enter_and_release(&job, "stage-1", &child);
	read_report(&child, &report, sizeof(report));
	/* The forking process itself is one of the 8. */
	ck_assert_int_eq(report.forks, 7);
	ck_assert_int_eq(report.error, EAGAIN);
	destroy_job(&job);
	assert_killed(child.pid);
	sbx_cgroup_job_clear(&job);
}
END_TEST

static int body_busy(int result_fd)
{
	int64_t end = sbx_monotonic_ms() + 400;
	volatile unsigned long counter = 0;

	while (sbx_monotonic_ms() < end)
		counter++;
	return 0;
}

START_TEST(test_cpu_limit_throttles)
{
	struct sbx_cgroup_limits limits = { .cpu_max_millis = 100 };
	struct sbx_cgroup_job job = { 0 };
	char id[64];
	struct child child;
	int status;

	create_job("cpu", &limits, &job, id, sizeof(id));
	child = spawn_waiting(body_busy);
	enter_and_release(&job, "stage-1", &child);
	status = reap(child.pid);
	ck_assert(WIFEXITED(status));
	ck_assert_int_eq(WEXITSTATUS(status), 0);
	/* 400 ms of spinning at 10 ms per 100 ms period is throttled in about four periods. */
	ck_assert_int_ge(keyed_value(limit_dir(&job, "cpu"), "cpu.stat", "nr_throttled"), 2);
	destroy_job(&job);
	sbx_cgroup_job_clear(&job);
}
END_TEST

struct tree_report {
	pid_t worker;
	pid_t daemon;
};

/* Builds a tree: this process, a worker child, and a daemon that left through a double fork
 * and a new session. Reports the worker's and the daemon's pids. */
static int body_tree_with_daemon(int result_fd)
{
	struct tree_report report = { 0 };
	int daemon_pipe[2];
	pid_t middle;

	if (pipe2(daemon_pipe, O_CLOEXEC) < 0)
		return 104;
	middle = fork();
	if (middle == 0) {
		setsid();
		if (fork() == 0) {
			pid_t self = getpid();

			if (write(daemon_pipe[1], &self, sizeof(self)) != (ssize_t) sizeof(self))
				_exit(105);
			for (;;)
				pause();
		}
		_exit(0);
	}
	if (middle < 0 || waitpid(middle, NULL, 0) != middle)
		return 106;
	if (read(daemon_pipe[0], &report.daemon, sizeof(report.daemon)) !=
	    (ssize_t) sizeof(report.daemon))
		return 107;
	report.worker = fork();
	if (report.worker == 0) {
		for (;;)
			pause();
	}
	if (write(result_fd, &report, sizeof(report)) != (ssize_t) sizeof(report))
		return 108;
	for (;;)
		pause();
	return 0;
}

static void check_leaf_kill(const char *name)
{
	struct sbx_cgroup_job job = { 0 };
	struct sbx_cgroup_limits limits = { 0 };
	struct sbx_error error = new_error();
	struct tree_report report;
	char id[64], leaf_path[PATH_MAX];
	struct child init, stage;
	char byte;

	/* Orphans are reparented here, so this process can check how each one ended. */
	ck_assert_int_eq(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
	create_job(name, &limits, &job, id, sizeof(id));
	init = spawn_waiting(body_report_ready);
	enter_and_release(&job, "init", &init);
	read_report(&init, &byte, 1);
	stage = spawn_waiting(body_tree_with_daemon);
	enter_and_release(&job, "stage-1", &stage);
	read_report(&stage, &report, sizeof(report));
	ck_assert_int_gt(report.daemon, 0);
	ck_assert_int_gt(report.worker, 0);

	ck_assert_msg(sbx_cgroup_leaf_kill(&job, "stage-1", KILL_TIMEOUT_MS, &error) == 0,
		      "leaf kill: %s", error.message);
	assert_killed(stage.pid);
	assert_killed(report.worker);
	assert_killed(report.daemon);
	snprintf(leaf_path, sizeof(leaf_path), "%s/stage-1", tracking_dir(&job));
	ck_assert_msg(!exists(leaf_path), "%s still exists", leaf_path);

	/* The init's leaf is untouched. */
	ck_assert_int_eq(waitpid(init.pid, NULL, WNOHANG), 0);
	ck_assert_int_eq(kill(init.pid, 0), 0);
	/* Killing a leaf that is gone succeeds. */
	ck_assert_msg(sbx_cgroup_leaf_kill(&job, "stage-1", KILL_TIMEOUT_MS, &error) == 0,
		      "second leaf kill: %s", error.message);

	destroy_job(&job);
	assert_killed(init.pid);
	sbx_cgroup_job_clear(&job);
}

START_TEST(test_leaf_kill_daemon)
{
	check_leaf_kill("leafkill");
}
END_TEST

START_TEST(test_leaf_kill_without_kill_file)
{
	sbx_cgroup_testing_disable_kill_file(1);
	check_leaf_kill("freezekill");
	sbx_cgroup_testing_disable_kill_file(0);
}
END_TEST

static int body_fork_forever(int result_fd)
{
	char byte = 'r';

	if (write(result_fd, &byte, 1) != 1)
		return 109;
	/* Each generation forks a successor and exits, so pids keep changing under the kill. */
	for (;;) {
		pid_t pid = fork();

		if (pid > 0)
			_exit(0);
		if (pid < 0)
			usleep(1000);
	}
}

START_TEST(test_destroy_kills_forking_tree)
{
	struct sbx_cgroup_job job = { 0 };
	struct sbx_cgroup_limits limits = { .pids_max = 64 };
	char id[64];
	struct child child;
	char byte;
	size_t count = 0;

	ck_assert_int_eq(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
	sbx_cgroup_testing_disable_kill_file(1);
	create_job("forker", &limits, &job, id, sizeof(id));
	child = spawn_waiting(body_fork_forever);
	enter_and_release(&job, "stage-2", &child);
	read_report(&child, &byte, 1);
	usleep(50 * 1000);
	destroy_job(&job);
	sbx_cgroup_testing_disable_kill_file(0);
	for (size_t i = 0; i < job.path_count; i++)
		ck_assert_msg(!exists(job.paths[i]), "%s still exists", job.paths[i]);
	/* Every generation became a child of this subreaper, and every one must end. A killed
	 * process leaves its cgroup before it is reparented, so a last one may still be on its
	 * way here. */
	for (int64_t deadline = sbx_monotonic_ms() + KILL_TIMEOUT_MS;;) {
		pid_t pid = waitpid(-1, NULL, WNOHANG);

		if (pid > 0) {
			count++;
			continue;
		}
		if (pid < 0) {
			ck_assert_int_eq(errno, ECHILD);
			break;
		}
		ck_assert_msg(sbx_monotonic_ms() < deadline, "a forked process is still running");
		usleep(1000);
	}
	ck_assert_uint_gt(count, 0);
	sbx_cgroup_job_clear(&job);
}
END_TEST

static int body_report_then_wait(int result_fd)
{
	return body_report_ready(result_fd);
}

START_TEST(test_leaf_signal_sends_sigterm)
{
	struct sbx_cgroup_job job = { 0 };
	struct sbx_cgroup_limits limits = { 0 };
	char id[64];
	struct child child;
	char byte;
	int status;

	create_job("signal", &limits, &job, id, sizeof(id));
	child = spawn_waiting(body_report_then_wait);
	enter_and_release(&job, "stage-3", &child);
	read_report(&child, &byte, 1);
	ck_assert_int_eq(sbx_cgroup_leaf_signal(&job, "stage-3", SIGTERM), 0);
	status = reap(child.pid);
	ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM,
		      "wait status 0x%x, expected SIGTERM", status);
	/* A leaf that does not exist has no process to signal. */
	ck_assert_int_eq(sbx_cgroup_leaf_signal(&job, "stage-9", SIGTERM), 0);
	destroy_job(&job);
	sbx_cgroup_job_clear(&job);
}
END_TEST

START_TEST(test_destroy_keeps_shared_parent)
{
	struct sbx_cgroup_limits limits = { .pids_max = 10 };
	struct sbx_cgroup_job first = { 0 }, second = { 0 };
	char first_id[64], second_id[64];
	char parent[PATH_MAX];
	char *slash;

	create_job("first", &limits, &first, first_id, sizeof(first_id));
	create_job("second", &limits, &second, second_id, sizeof(second_id));
	destroy_job(&first);
	for (size_t i = 0; i < first.path_count; i++)
		ck_assert_msg(!exists(first.paths[i]), "%s still exists", first.paths[i]);
	for (size_t i = 0; i < second.path_count; i++) {
		ck_assert_msg(exists(second.paths[i]), "%s was removed", second.paths[i]);
		snprintf(parent, sizeof(parent), "%s", second.paths[i]);
		slash = strrchr(parent, '/');
		*slash = '\0';
		ck_assert_msg(exists(parent), "%s was removed", parent);
	}

	destroy_job(&second);
	for (size_t i = 0; i < second.path_count; i++)
		ck_assert_msg(!exists(second.paths[i]), "%s still exists", second.paths[i]);
	destroy_job(&first);
	sbx_cgroup_job_clear(&first);
	sbx_cgroup_job_clear(&second);
}
END_TEST

START_TEST(test_json_round_trip)
{
	struct sbx_cgroup_limits limits = { .memory_max = 16 << 20 };
	struct sbx_cgroup_job job = { 0 }, restored = { 0 };
	struct sbx_error error = new_error();
	struct json_object *object, *parsed;
	char id[64];

	create_job("json", &limits, &job, id, sizeof(id));
	object = sbx_cgroup_job_to_json(&job);
	ck_assert_ptr_nonnull(object);
	parsed = json_tokener_parse(json_object_to_json_string(object));
	ck_assert_ptr_nonnull(parsed);
	ck_assert_msg(sbx_cgroup_job_from_json(parsed, &restored, &error) == 0, "%s",
		      error.message);
	ck_assert_int_eq(restored.layout, job.layout);
	ck_assert_int_eq(restored.tracking_index, job.tracking_index);
	ck_assert_uint_eq(restored.path_count, job.path_count);
	for (size_t i = 0; i < job.path_count; i++)
		ck_assert_str_eq(restored.paths[i], job.paths[i]);

	/* The restored job is enough to destroy everything. */
	destroy_job(&restored);
	for (size_t i = 0; i < job.path_count; i++)
		ck_assert_msg(!exists(job.paths[i]), "%s still exists", job.paths[i]);
	json_object_put(object);
	json_object_put(parsed);
	sbx_cgroup_job_clear(&restored);
	sbx_cgroup_job_clear(&job);
}
END_TEST

static const char *const bad_journal_entries[] = {
	"[]",
	"{\"layout\":\"hybrid\",\"paths\":[]}",
	"{\"layout\":\"sideways\",\"paths\":[],\"tracking_index\":-1}",
	/* A whole hierarchy: destroying it would kill every process on the host. */
	"{\"layout\":\"hybrid\",\"paths\":[\"/sys/fs/cgroup/unified\"],\"tracking_index\":0}",
	"{\"layout\":\"hybrid\",\"paths\":[\"/sys/fs/cgroup/unified/system.slice\"],"
	"\"tracking_index\":0}",
	"{\"layout\":\"hybrid\",\"paths\":[\"/tmp/sbx/j1\"],\"tracking_index\":0}",
	"{\"layout\":\"hybrid\",\"paths\":[\"/sys/fs/cgroup/../../tmp/sbx/j1\"],"
	"\"tracking_index\":0}",
	"{\"layout\":\"hybrid\",\"paths\":[\"/sys/fs/cgroup/unified/sbx/j1/..\"],"
	"\"tracking_index\":0}",
	/* Two different ids. */
	"{\"layout\":\"hybrid\",\"paths\":[\"/sys/fs/cgroup/memory/sbx/j1\","
	"\"/sys/fs/cgroup/unified/sbx/j2\"],\"tracking_index\":1}",
	"{\"layout\":\"hybrid\",\"paths\":[\"/sys/fs/cgroup/unified/sbx/j1\"],"
	"\"tracking_index\":1}",
	"{\"layout\":\"hybrid\",\"paths\":[1],\"tracking_index\":0}",
};

START_TEST(test_json_rejects_bad_entries)
{
	for (size_t i = 0; i < SBX_ARRAY_SIZE(bad_journal_entries); i++) {
		struct json_object *object = json_tokener_parse(bad_journal_entries[i]);
		struct sbx_cgroup_job job = { 0 };
		struct sbx_error error = new_error();

		ck_assert_msg(object != NULL, "entry %zu does not parse", i);
		ck_assert_msg(sbx_cgroup_job_from_json(object, &job, &error) == -1,
			      "entry %zu accepted: %s", i, bad_journal_entries[i]);
		ck_assert_int_eq(error.error_class, SBX_ERROR_INVALID);
		ck_assert_uint_eq(job.path_count, 0);
		json_object_put(object);
	}
}
END_TEST

START_TEST(test_destroy_never_created)
{
	char text[512], id[64];
	struct json_object *object;
	struct sbx_cgroup_job job = { 0 };
	struct sbx_error error = new_error();

	make_id(id, sizeof(id), "ghost");
	snprintf(text, sizeof(text),
		 "{\"layout\":\"hybrid\",\"paths\":[\"/sys/fs/cgroup/memory/sbx/%s\","
		 "\"/sys/fs/cgroup/unified/sbx/%s\"],\"tracking_index\":1}",
		 id, id);
	object = json_tokener_parse(text);
	ck_assert_ptr_nonnull(object);
	ck_assert_msg(sbx_cgroup_job_from_json(object, &job, &error) == 0, "%s", error.message);
	destroy_job(&job);
	json_object_put(object);
	sbx_cgroup_job_clear(&job);
}
END_TEST

START_TEST(test_invalid_names_rejected)
{
	struct sbx_cgroup_limits limits = { 0 };
	struct sbx_cgroup_job job = { 0 };
	struct sbx_error error = new_error();
	char id[64];

	ck_assert_int_eq(sbx_cgroup_job_create("../escape", &limits, &job, &error), -1);
	ck_assert_int_eq(error.error_class, SBX_ERROR_INVALID);
	ck_assert_int_eq(sbx_cgroup_job_create("Upper", &limits, &job, &error), -1);
	ck_assert_int_eq(error.error_class, SBX_ERROR_INVALID);

	limits.cpu_max_millis = 5;
	make_id(id, sizeof(id), "tinycpu");
	ck_assert_int_eq(sbx_cgroup_job_create(id, &limits, &job, &error), -1);
	ck_assert_int_eq(error.error_class, SBX_ERROR_INVALID);
	ck_assert_ptr_nonnull(strstr(error.message, "at least 10"));

	limits.cpu_max_millis = 0;
	create_job("leafname", &limits, &job, id, sizeof(id));
	ck_assert_int_eq(sbx_cgroup_job_enter(&job, "..", getpid(), &error), -1);
	ck_assert_int_eq(error.error_class, SBX_ERROR_INVALID);
	ck_assert_int_eq(sbx_cgroup_job_enter(&job, "a/b", getpid(), &error), -1);
	ck_assert_int_eq(error.error_class, SBX_ERROR_INVALID);
	destroy_job(&job);
	sbx_cgroup_job_clear(&job);
}
END_TEST

START_TEST(test_existing_job_rejected)
{
	struct sbx_cgroup_limits limits = { 0 };
	struct sbx_cgroup_job job = { 0 }, again = { 0 };
	struct sbx_error error = new_error();
	char id[64];

	create_job("twice", &limits, &job, id, sizeof(id));
	ck_assert_int_eq(sbx_cgroup_job_create(id, &limits, &again, &error), -1);
	ck_assert_ptr_nonnull(strstr(error.message, "already exists"));
	ck_assert_uint_eq(again.path_count, 0);
	/* The failed attempt must not have removed the first job's directories. */
	for (size_t i = 0; i < job.path_count; i++)
		ck_assert_msg(exists(job.paths[i]), "%s was removed", job.paths[i]);
	destroy_job(&job);
	sbx_cgroup_job_clear(&job);
}
END_TEST

START_TEST(test_unprivileged_message_names_fix)
{
	struct sbx_cgroup_limits limits = { .memory_max = 16 << 20 };
	struct sbx_cgroup_job job = { 0 };
	char id[64], message[SBX_ERROR_MESSAGE_MAX] = "";
	int fds[2], status;
	pid_t pid;
	ssize_t n;

	/* The shared parents exist, so the failure is on the job's own directory. */
	create_job("holder", &limits, &job, id, sizeof(id));
	ck_assert_int_eq(pipe2(fds, O_CLOEXEC), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		struct sbx_cgroup_job denied = { 0 };
		struct sbx_error error = new_error();
		char denied_id[64];
		int result;

		make_id(denied_id, sizeof(denied_id), "nobody");
		if (setresgid(65534, 65534, 65534) < 0 || setresuid(65534, 65534, 65534) < 0)
			_exit(110);
		result = sbx_cgroup_job_create(denied_id, &limits, &denied, &error);
		if (write(fds[1], error.message, strlen(error.message) + 1) < 0)
			_exit(111);
		_exit(result == -1 ? 0 : 112);
	}
	close(fds[1]);
	n = read(fds[0], message, sizeof(message) - 1);
	close(fds[0]);
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "wait status 0x%x", status);
	ck_assert_int_gt(n, 0);
	ck_assert_msg(strstr(message, "/sbx/") != NULL, "no path in: %s", message);
	ck_assert_msg(strstr(message, "Permission denied") != NULL, "no errno in: %s", message);
	ck_assert_msg(strstr(message, "run sbx as root or delegate the") != NULL, "no fix in: %s",
		      message);
	destroy_job(&job);
	sbx_cgroup_job_clear(&job);
}
END_TEST

/* ---- cleanup after failed tests ---- */

/* Destroys every job whose id starts with this run's prefix, in every hierarchy. */
static void sweep_leftovers(void)
{
	for (size_t b = 0; b < SBX_ARRAY_SIZE(hierarchy_bases); b++) {
		char parent[PATH_MAX];
		_cleanup_closedir_ DIR *dir = NULL;
		struct dirent *entry;

		snprintf(parent, sizeof(parent), "%s/sbx", hierarchy_bases[b]);
		dir = opendir(parent);
		if (dir == NULL)
			continue;
		while ((entry = readdir(dir)) != NULL) {
			struct sbx_cgroup_job job = { .layout = sbx_cgroup_detect(),
						      .tracking_index = -1 };

			if (strncmp(entry->d_name, id_prefix, strlen(id_prefix)) != 0)
				continue;
			for (size_t h = 0; h < SBX_ARRAY_SIZE(hierarchy_bases); h++) {
				char path[PATH_MAX];

				snprintf(path, sizeof(path), "%s/sbx/%s", hierarchy_bases[h],
					 entry->d_name);
				if (!exists(path))
					continue;
				if (strstr(path, "/unified/") != NULL ||
				    strstr(path, "/freezer/") != NULL ||
				    job.layout == SBX_CGROUP_UNIFIED)
					job.tracking_index = (int) job.path_count;
				job.paths[job.path_count++] = strdup(path);
			}
			fprintf(stderr, "test_cgroup: removing leftover job %s\n", entry->d_name);
			sbx_cgroup_job_destroy(&job, KILL_TIMEOUT_MS, NULL);
			sbx_cgroup_job_clear(&job);
		}
	}
}

START_TEST(test_own_path_parses_proc_cgroup)
{
	static const char text[] = "12:cpu,cpuacct:/a.slice/b\n"
				   "4:memory:/process_api/x\n"
				   "1:name=systemd:/user.slice\n"
				   "0::/user.slice/user@1000.service/app.slice\n";
	char path[PATH_MAX];

	ck_assert_int_eq(sbx_cgroup_own_path(text, "cpu", path, sizeof(path)), 0);
	ck_assert_str_eq(path, "/a.slice/b");
	ck_assert_int_eq(sbx_cgroup_own_path(text, "cpuacct", path, sizeof(path)), 0);
	ck_assert_str_eq(path, "/a.slice/b");
	ck_assert_int_eq(sbx_cgroup_own_path(text, "memory", path, sizeof(path)), 0);
	ck_assert_str_eq(path, "/process_api/x");
	ck_assert_int_eq(sbx_cgroup_own_path(text, NULL, path, sizeof(path)), 0);
	ck_assert_str_eq(path, "/user.slice/user@1000.service/app.slice");
	/* "pids" is no line's controller, and "cpuac" only a prefix of one. */
	ck_assert_int_eq(sbx_cgroup_own_path(text, "pids", path, sizeof(path)), -1);
	ck_assert_int_eq(errno, ENOENT);
	ck_assert_int_eq(sbx_cgroup_own_path(text, "cpuac", path, sizeof(path)), -1);
	ck_assert_int_eq(sbx_cgroup_own_path("0::relative\n", NULL, path, sizeof(path)), -1);
	ck_assert_int_eq(errno, EINVAL);
	ck_assert_int_eq(sbx_cgroup_own_path(text, "memory", path, 4), -1);
}
END_TEST

START_TEST(test_json_accepts_delegated_paths)
{
	static const char entry[] =
		"{\"layout\":\"hybrid\",\"paths\":["
		"\"/sys/fs/cgroup/memory/runner.slice/gitlab@x.service/sbx/j1-a\","
		"\"/sys/fs/cgroup/unified/user.slice/user@999.service/sbx/j1-a\"],"
		"\"tracking_index\":1}";
	static const char *const bad[] = {
		/* A parent component ".." would escape the delegated cgroup. */
		"{\"layout\":\"hybrid\",\"paths\":[\"/sys/fs/cgroup/unified/a/../../sbx/j1\"],"
		"\"tracking_index\":0}",
		"{\"layout\":\"hybrid\",\"paths\":[\"/sys/fs/cgroup/unified/a//sbx/j1\"],"
		"\"tracking_index\":0}",
		"{\"layout\":\"hybrid\",\"paths\":[\"/sys/fs/cgroup/unified/asbx/j1\"],"
		"\"tracking_index\":0}",
		"{\"layout\":\"hybrid\",\"paths\":[\"/sys/fs/cgroup/unified/a b/sbx/j1\"],"
		"\"tracking_index\":0}",
	};
	struct json_object *object = json_tokener_parse(entry);
	struct sbx_cgroup_job job = { 0 };
	struct sbx_error error = new_error();

	ck_assert_ptr_nonnull(object);
	ck_assert_msg(sbx_cgroup_job_from_json(object, &job, &error) == 0, "%s", error.message);
	ck_assert_uint_eq(job.path_count, 2);
	ck_assert_str_eq(job.paths[0], "/sys/fs/cgroup/memory/runner.slice/gitlab@x.service/sbx/j1-a");
	sbx_cgroup_job_clear(&job);
	json_object_put(object);
	for (size_t i = 0; i < SBX_ARRAY_SIZE(bad); i++) {
		object = json_tokener_parse(bad[i]);
		ck_assert_ptr_nonnull(object);
		ck_assert_msg(sbx_cgroup_job_from_json(object, &job, &error) == -1, "accepted %s",
			      bad[i]);
		json_object_put(object);
	}
}
END_TEST

/*
 * A user that owns a cgroup subtree and lives in it gets its job cgroups there, with limits.
 * The child runs as uid 65534 in a chowned cgroup of the tracking hierarchy and of the memory
 * hierarchy (or the cgroup2 root's child on a unified host).
 */
START_TEST(test_delegated_create_in_owned_subtree)
{
	struct sbx_cgroup_limits limits = { .memory_max = 32 << 20 };
	enum sbx_cgroup_layout layout = sbx_cgroup_detect();
	const char *mounts[2];
	size_t mount_count = 0;
	char id[64], owned[2][512], leaf[PATH_MAX], expected[PATH_MAX];
	char message[SBX_ERROR_MESSAGE_MAX] = "";
	int fds[2], status;
	pid_t pid;

	if (layout == SBX_CGROUP_UNIFIED) {
		mounts[mount_count++] = "/sys/fs/cgroup";
	} else if (layout == SBX_CGROUP_HYBRID) {
		mounts[mount_count++] = "/sys/fs/cgroup/unified";
		mounts[mount_count++] = "/sys/fs/cgroup/memory";
	} else {
		return;
	}
	make_id(id, sizeof(id), "delegated");
	for (size_t i = 0; i < mount_count; i++) {
		snprintf(owned[i], sizeof(owned[i]), "%s/%s-owner", mounts[i], id);
		ck_assert_int_eq(mkdir(owned[i], 0755), 0);
		snprintf(leaf, sizeof(leaf), "%s/runner", owned[i]);
		ck_assert_int_eq(mkdir(leaf, 0755), 0);
		ck_assert_int_eq(chown(owned[i], 65534, 65534), 0);
		ck_assert_int_eq(chown(leaf, 65534, 65534), 0);
		snprintf(leaf, sizeof(leaf), "%s/cgroup.procs", owned[i]);
		ck_assert_int_eq(chown(leaf, 65534, 65534), 0);
		snprintf(leaf, sizeof(leaf), "%s/runner/cgroup.procs", owned[i]);
		ck_assert_int_eq(chown(leaf, 65534, 65534), 0);
	}
	ck_assert_int_eq(pipe2(fds, O_CLOEXEC), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		struct sbx_cgroup_job job = { 0 };
		struct sbx_error error = new_error();
		char procs[PATH_MAX];
		int result;

		for (size_t i = 0; i < mount_count; i++) {
			snprintf(procs, sizeof(procs), "%s/runner", owned[i]);
			if (sbx_cgroup_write_file(procs, "cgroup.procs", "0") < 0)
				_exit(110);
		}
		if (setresgid(65534, 65534, 65534) < 0 || setresuid(65534, 65534, 65534) < 0)
			_exit(111);
		result = sbx_cgroup_job_create_in(id, &limits, SBX_CGROUP_DELEGATED, &job, &error);
		if (result == 0) {
			/* Report the tracking path, then remove it all again as the user. */
			snprintf(error.message, sizeof(error.message), "%.1000s",
				 job.paths[job.tracking_index]);
			if (sbx_cgroup_job_destroy(&job, 2000, NULL) < 0)
				result = -2;
		}
		if (write(fds[1], error.message, strlen(error.message) + 1) < 0)
			_exit(112);
		_exit(result == 0 ? 0 : 113);
	}
	close(fds[1]);
	ck_assert_int_gt(read(fds[0], message, sizeof(message) - 1), 0);
	close(fds[0]);
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	for (size_t i = 0; i < mount_count; i++) {
		snprintf(leaf, sizeof(leaf), "%s/runner", owned[i]);
		rmdir(leaf);
		rmdir(owned[i]);
	}
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status 0x%x: %s", status,
		      message);
	snprintf(expected, sizeof(expected), "%s/sbx/%s", owned[0], id);
	ck_assert_str_eq(message, expected);
	for (size_t i = 0; i < mount_count; i++)
		ck_assert_msg(!exists(owned[i]), "%s is left", owned[i]);
}
END_TEST

static Suite *cgroup_suite(void)
{
	Suite *suite = suite_create("cgroup");
	TCase *tc = tcase_create("job");

	tcase_set_timeout(tc, 60);
	tcase_add_unchecked_fixture(tc, NULL, sweep_leftovers);
	tcase_add_test(tc, test_detect_matches_mountinfo);
	tcase_add_test(tc, test_create_writes_limits);
	tcase_add_test(tc, test_unlimited_hierarchy_skipped);
	tcase_add_test(tc, test_memory_limit_kills);
	tcase_add_test(tc, test_pids_limit_stops_forks);
	tcase_add_test(tc, test_cpu_limit_throttles);
	tcase_add_test(tc, test_leaf_kill_daemon);
	tcase_add_test(tc, test_leaf_kill_without_kill_file);
	tcase_add_test(tc, test_destroy_kills_forking_tree);
	tcase_add_test(tc, test_leaf_signal_sends_sigterm);
	tcase_add_test(tc, test_destroy_keeps_shared_parent);
	tcase_add_test(tc, test_json_round_trip);
	tcase_add_test(tc, test_json_rejects_bad_entries);
	tcase_add_test(tc, test_destroy_never_created);
	tcase_add_test(tc, test_invalid_names_rejected);
	tcase_add_test(tc, test_existing_job_rejected);
	tcase_add_test(tc, test_unprivileged_message_names_fix);
	tcase_add_test(tc, test_own_path_parses_proc_cgroup);
	tcase_add_test(tc, test_json_accepts_delegated_paths);
	tcase_add_test(tc, test_delegated_create_in_owned_subtree);
	suite_add_tcase(suite, tc);
	return suite;
}

int main(void)
{
	SRunner *runner;
	int failed;

	if (geteuid() != 0) {
		fprintf(stderr, "test_cgroup: needs root to create cgroups\n");
		return EXIT_FAILURE;
	}
	snprintf(id_prefix, sizeof(id_prefix), "ut%d-", (int) getpid());
	runner = srunner_create(cgroup_suite());
	srunner_run_all(runner, CK_NORMAL);
	failed = srunner_ntests_failed(runner);
	srunner_free(runner);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
