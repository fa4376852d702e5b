/* SPDX-License-Identifier: MIT */
/*
 * The agent-sandbox step wrapper, run here by real shells the way a pod runs it: dash (this
 * machine's /bin/sh) and busybox's ash with busybox's applets first in PATH. The cases: the
 * stored script (exact length, end line, mode 0600) and the exit status, with stdin left open
 * after the script as on a v4 exec stream. A script cut short, a missing installed wrapper and
 * the bootstrap that installs it, a replaced sandbox, a repeated run, attach with an offset,
 * and a step left running by a killed exec. Stop gets its own cases: the grace covers the whole
 * group, the log written after SIGTERM is copied, the stored script is removed, and a stop
 * before the start keeps the step from starting.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent_sandbox.h"
#include "util.h"

#define MARKER "sandbox-marker-1"
#define RUN_TIMEOUT_MS 20000

static const char *const shells[] = { "dash", "busybox" };

static char temp_dir[PATH_MAX];
static char step_dir[PATH_MAX + 16];
static char wrapper_path[PATH_MAX + 64];
static char path_env[PATH_MAX + 64];
static const char *shell_binary;
/* The stop grace, seconds, that start() passes to the wrapper. */
static const char *stop_grace = "1";

struct run {
	pid_t pid;
	int in, out, err;
};

struct result {
	int exit_code;
	char out[8192];
	char err[8192];
};

static void write_file(const char *path, const char *text, size_t length, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, text, length), (ssize_t) length);
	close(fd);
}

static char *read_text(const char *path)
{
	char *text = NULL;
	size_t length;

	if (sbx_read_file(path, 1 << 20, &text, &length, NULL) < 0)
		return NULL;
	return text;
}

static void install_wrapper(void)
{
	size_t length;
	const char *text = as_step_wrapper(&length);

	write_file(wrapper_path, text, length, 0600);
}

/* A step directory as prepare leaves it, and for busybox a directory of its applets that
 * comes first in PATH, so sh, dd, cat, sleep and setsid are all busybox's. */
static void setup_shell(const char *shell)
{
	char name[AS_STEP_WRAPPER_NAME_MAX];

	snprintf(temp_dir, sizeof(temp_dir), "/tmp/sbx-test-step-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(temp_dir));
	snprintf(step_dir, sizeof(step_dir), "%s/steps", temp_dir);
	ck_assert_int_eq(mkdir(step_dir, 0700), 0);
	write_file(strcat(strcpy(wrapper_path, step_dir), "/sandbox"), MARKER, strlen(MARKER),
		   0600);
	as_step_wrapper_name(name);
	snprintf(wrapper_path, sizeof(wrapper_path), "%s/%s", step_dir, name);
	install_wrapper();
	stop_grace = "1";
	if (strcmp(shell, "busybox") == 0) {
		char command[2 * PATH_MAX + 64];

		snprintf(command, sizeof(command), "mkdir %s/bin && busybox --install -s %s/bin",
			 temp_dir, temp_dir);
		ck_assert_msg(system(command) == 0, "busybox is missing: apt-get install busybox");
		snprintf(path_env, sizeof(path_env), "PATH=%s/bin:/usr/bin:/bin", temp_dir);
		shell_binary = "/bin/busybox";
	} else {
		snprintf(path_env, sizeof(path_env), "PATH=/usr/bin:/bin");
		shell_binary = "/bin/dash";
	}
}

static void remove_temp_dir(void)
{
	sbx_remove_tree(temp_dir);
}

/* Starts the wrapper in MODE for STEP with a script of LENGTH bytes, as sbx's exec does. */
static struct run start(int bootstrap, const char *mode, const char *step, size_t length,
			size_t offset)
{
	char length_text[32], offset_text[32], wrapper_length[32];
	size_t wrapper_size;
	const char *argv[16];
	const char *envp[] = { path_env, "LC_ALL=C", NULL };
	int in[2], out[2], err[2];
	struct run run;
	size_t n = 0;

	as_step_wrapper(&wrapper_size);
	snprintf(length_text, sizeof(length_text), "%zu", length);
	snprintf(offset_text, sizeof(offset_text), "%zu", offset);
	snprintf(wrapper_length, sizeof(wrapper_length), "%zu", wrapper_size);
	argv[n++] = "sh";
	argv[n++] = "-c";
	argv[n++] = as_step_launcher(bootstrap);
	argv[n++] = wrapper_path;
	if (bootstrap)
		argv[n++] = wrapper_length;
	argv[n++] = mode;
	argv[n++] = step_dir;
	argv[n++] = step;
	argv[n++] = "sh";
	argv[n++] = length_text;
	argv[n++] = offset_text;
	argv[n++] = MARKER;
	argv[n++] = stop_grace;
	argv[n] = NULL;
	ck_assert_int_eq(pipe2(in, O_CLOEXEC), 0);
	ck_assert_int_eq(pipe2(out, O_CLOEXEC), 0);
	ck_assert_int_eq(pipe2(err, O_CLOEXEC), 0);
	run.pid = fork();
	ck_assert_int_ge(run.pid, 0);
	if (run.pid == 0) {
		dup2(in[0], 0);
		dup2(out[1], 1);
		dup2(err[1], 2);
		execve(shell_binary, (char *const *) argv, (char *const *) envp);
		_exit(127);
	}
	close(in[0]);
	close(out[1]);
	close(err[1]);
	run.in = in[1];
	run.out = out[0];
	run.err = err[0];
	return run;
}

/* A wrapper that rejects the step exits without reading its input, as it may in a pod. */
static void send_input(struct run *run, const void *data, size_t length)
{
	ssize_t written = write(run->in, data, length);

	ck_assert_msg(written == (ssize_t) length || (written < 0 && errno == EPIPE),
		      "writing the wrapper's input: %s", strerror(errno));
}

/* Collects the output until the wrapper exits. Stdin stays open unless CLOSE_INPUT, as on a
 * v4 stream, so a wrapper that reads beyond its input hangs and the test times out. */
static void finish(struct run *run, int close_input, struct result *result)
{
	size_t used[2] = { 0, 0 };
	char *buffers[2] = { result->out, result->err };
	int fds[2] = { run->out, run->err };
	int status, open_count = 2;
	struct timespec started, now;

	if (close_input) {
		close(run->in);
		run->in = -1;
	}
	clock_gettime(CLOCK_MONOTONIC, &started);
	while (open_count > 0) {
		struct pollfd pfd[2];
		int waited;

		for (int i = 0; i < 2; i++)
			pfd[i] = (struct pollfd){ .fd = fds[i], .events = POLLIN };
		clock_gettime(CLOCK_MONOTONIC, &now);
		waited = (int) ((now.tv_sec - started.tv_sec) * 1000 +
				(now.tv_nsec - started.tv_nsec) / 1000000);
		if (waited > RUN_TIMEOUT_MS) {
			kill(run->pid, SIGKILL);
			ck_abort_msg("the wrapper did not end within %d ms", RUN_TIMEOUT_MS);
		}
		if (poll(pfd, 2, RUN_TIMEOUT_MS - waited) < 0 && errno != EINTR)
			ck_abort_msg("poll: %s", strerror(errno));
		for (int i = 0; i < 2; i++) {
			ssize_t got;

			if (fds[i] < 0 || pfd[i].revents == 0)
				continue;
			got = read(fds[i], buffers[i] + used[i], sizeof(result->out) - 1 - used[i]);
			if (got <= 0) {
				close(fds[i]);
				fds[i] = -1;
				open_count--;
				continue;
			}
			used[i] += (size_t) got;
		}
	}
	result->out[used[0]] = '\0';
	result->err[used[1]] = '\0';
	ck_assert_int_eq(waitpid(run->pid, &status, 0), run->pid);
	result->exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	if (run->in >= 0)
		close(run->in);
}

/* Runs a step whose script is SCRIPT, sent as sbx sends it: the script, then the end line. */
static void run_step(const char *step, const char *script, struct result *result)
{
	struct run run = start(0, "run", step, strlen(script), 0);
	char end[128];

	send_input(&run, script, strlen(script));
	snprintf(end, sizeof(end), "sbx-end %s\n", step);
	send_input(&run, end, strlen(end));
	finish(&run, 0, result);
}

static int count_files(const char *suffix)
{
	char command[PATH_MAX + 128], line[64];
	FILE *listing;
	int count = 0;

	snprintf(command, sizeof(command), "ls -A %s | grep -c -- '%s$'", step_dir, suffix);
	listing = popen(command, "re");
	ck_assert_ptr_nonnull(listing);
	if (fgets(line, sizeof(line), listing) != NULL)
		count = atoi(line);
	pclose(listing);
	return count;
}

static int step_file_exists(const char *step, const char *suffix)
{
	char path[PATH_MAX + 128];

	snprintf(path, sizeof(path), "%s/%s%s", step_dir, step, suffix);
	return access(path, F_OK) == 0;
}

/* Waits until the log of STEP contains TEXT. */
static void wait_log(const char *step, const char *text)
{
	char path[PATH_MAX + 128];

	snprintf(path, sizeof(path), "%s/%s.log", step_dir, step);
	for (int i = 0; i < 400; i++) {
		char *log = read_text(path);
		int found = log != NULL && strstr(log, text) != NULL;

		free(log);
		if (found)
			return;
		usleep(25000);
	}
	ck_abort_msg("%s never appeared in %s", text, path);
}

static pid_t step_leader(const char *step)
{
	char path[PATH_MAX + 128];
	char *text;
	pid_t pid;

	snprintf(path, sizeof(path), "%s/%s.pid", step_dir, step);
	text = read_text(path);
	ck_assert_ptr_nonnull(text);
	pid = (pid_t) atoi(text);
	free(text);
	ck_assert_int_gt(pid, 1);
	return pid;
}

/* The process group has no member left, zombies aside. */
static int group_gone(pid_t group)
{
	char command[512];

	snprintf(command, sizeof(command),
		 "for f in /proc/[0-9]*/stat; do read -r l 2>/dev/null < $f || continue; "
		 "set -- ${l##*) }; [ \"$1\" != Z ] && [ \"$3\" = %d ] && exit 1; done; exit 0",
		 (int) group);
	return system(command) == 0;
}

START_TEST(status_and_output_exact)
{
	struct result result;

	setup_shell(shells[_i]);
	run_step("1-a", "echo out-$((6*7)); echo err-$((6*7)) >&2; "
			"stat -c mode-%a \"$0\"; exit 7\n",
		 &result);
	ck_assert_msg(strstr(result.err, "sbx-step: status 7\n") != NULL, "%s", result.err);
	ck_assert_msg(strstr(result.out, "out-42\n") != NULL, "%s", result.out);
	ck_assert_msg(strstr(result.out, "err-42\n") != NULL, "%s", result.out);
	ck_assert_msg(strstr(result.out, "mode-600\n") != NULL, "%s", result.out);
	ck_assert_int_eq(result.exit_code, 0);
	/* The runner removed the stored script; the wrapper stays. */
	ck_assert_int_eq(count_files(".sh"), 1);
	ck_assert(step_file_exists("1-a", ".launched"));
	remove_temp_dir();
}
END_TEST

/* The follow loop wakes when the runner exits, not at its next 50 ms tick: the time from the
 * status file's write to the wrapper's exit stays well under a tick. The fastest of a few runs
 * keeps a busy machine from failing the test. */
START_TEST(short_step_ends_before_first_tick)
{
	long fastest = LONG_MAX;

	setup_shell(shells[_i]);
	for (int i = 0; i < 5; i++) {
		struct timespec ended;
		struct result result;
		struct stat status;
		char step[16], path[PATH_MAX + 64];
		long took;

		snprintf(step, sizeof(step), "2-%d", i);
		run_step(step, "true\n", &result);
		clock_gettime(CLOCK_REALTIME, &ended);
		ck_assert_msg(strstr(result.err, "sbx-step: status 0\n") != NULL, "%s", result.err);
		snprintf(path, sizeof(path), "%s/%s.status", step_dir, step);
		ck_assert_int_eq(stat(path, &status), 0);
		took = (ended.tv_sec - status.st_mtim.tv_sec) * 1000 +
		       (ended.tv_nsec - status.st_mtim.tv_nsec) / 1000000;
		if (took < fastest)
			fastest = took;
	}
	ck_assert_int_lt(fastest, 30);
	remove_temp_dir();
}
END_TEST

START_TEST(repeated_run_attaches)
{
	struct result first, again;
	struct run run;
	char script[PATH_MAX + 64];

	setup_shell(shells[_i]);
	snprintf(script, sizeof(script), "echo once >> %s/count; echo line-$((6*7)); exit 3\n",
		 temp_dir);
	run_step("1-b", script, &first);
	ck_assert_msg(strstr(first.err, "sbx-step: status 3\n") != NULL, "%s", first.err);
	/* The same step again (sbx retries a run whose stream broke): no second start. */
	run_step("1-b", script, &again);
	ck_assert_msg(strstr(again.err, "sbx-step: status 3\n") != NULL, "%s", again.err);
	ck_assert_str_eq(again.out, "line-42\n");
	ck_assert_int_eq(count_files(".sh"), 1);
	/* Attach resumes from an offset. */
	run = start(0, "attach", "1-b", 0, 5);
	finish(&run, 1, &again);
	ck_assert_str_eq(again.out, "42\n");
	ck_assert_msg(strstr(again.err, "sbx-step: status 3\n") != NULL, "%s", again.err);
	{
		char path[PATH_MAX + 32];
		char *count;

		snprintf(path, sizeof(path), "%s/count", temp_dir);
		count = read_text(path);
		ck_assert_ptr_nonnull(count);
		ck_assert_str_eq(count, "once\n");
		free(count);
	}
	remove_temp_dir();
}
END_TEST

START_TEST(truncated_script_never_starts)
{
	char script[PATH_MAX + 64], expected[128];
	struct result result;
	struct run run;
	char path[PATH_MAX + 32];

	setup_shell(shells[_i]);
	snprintf(script, sizeof(script), "echo started > %s/started\nexit 0\n", temp_dir);
	/* The stream ends after part of the script. */
	run = start(0, "run", "1-c", strlen(script), 0);
	send_input(&run, script, 12);
	finish(&run, 1, &result);
	snprintf(expected, sizeof(expected),
		 "sbx-step: error: the script arrived truncated (12 of %zu bytes", strlen(script));
	ck_assert_msg(strstr(result.err, expected) != NULL, "%s", result.err);
	/* The whole script but not the end line. */
	run = start(0, "run", "1-d", strlen(script), 0);
	send_input(&run, script, strlen(script));
	finish(&run, 1, &result);
	snprintf(expected, sizeof(expected),
		 "sbx-step: error: the script arrived truncated (%zu of %zu bytes", strlen(script),
		 strlen(script));
	ck_assert_msg(strstr(result.err, expected) != NULL, "%s", result.err);
	ck_assert(!step_file_exists("1-c", ".launched"));
	ck_assert(!step_file_exists("1-d", ".launched"));
	ck_assert_int_eq(count_files(".sh"), 1);
	snprintf(path, sizeof(path), "%s/started", temp_dir);
	ck_assert_int_ne(access(path, F_OK), 0);
	remove_temp_dir();
}
END_TEST

START_TEST(missing_wrapper_reported_then_bootstrapped)
{
	static const char script[] = "echo boot-$((6*7))\nexit 4\n";
	size_t wrapper_length;
	const char *wrapper = as_step_wrapper(&wrapper_length);
	struct result result;
	struct run run;
	char *installed;

	setup_shell(shells[_i]);
	ck_assert_int_eq(unlink(wrapper_path), 0);
	run_step("1-e", script, &result);
	ck_assert_str_eq(result.err, "sbx-step: no-wrapper\n");
	ck_assert(!step_file_exists("1-e", ".launched"));

	run = start(1, "run", "1-e", sizeof(script) - 1, 0);
	send_input(&run, wrapper, wrapper_length);
	send_input(&run, script, sizeof(script) - 1);
	send_input(&run, "sbx-end 1-e\n", 12);
	finish(&run, 0, &result);
	ck_assert_msg(strstr(result.err, "sbx-step: status 4\n") != NULL, "%s", result.err);
	ck_assert_str_eq(result.out, "boot-42\n");
	/* The bootstrap installed the wrapper for the next steps. */
	installed = read_text(wrapper_path);
	ck_assert_ptr_nonnull(installed);
	ck_assert_str_eq(installed, wrapper);
	free(installed);
	run_step("1-f", "exit 0\n", &result);
	ck_assert_msg(strstr(result.err, "sbx-step: status 0\n") != NULL, "%s", result.err);
	remove_temp_dir();
}
END_TEST

START_TEST(replaced_sandbox_reported)
{
	char path[PATH_MAX + 32];
	struct result result;

	setup_shell(shells[_i]);
	snprintf(path, sizeof(path), "%s/sandbox", step_dir);
	write_file(path, "another", 7, 0600);
	snprintf(path, sizeof(path), "echo never > %s/ran\n", temp_dir);
	run_step("1-g", path, &result);
	ck_assert_str_eq(result.err, "sbx-step: lost-sandbox\n");
	snprintf(path, sizeof(path), "%s/ran", temp_dir);
	ck_assert_int_ne(access(path, F_OK), 0);
	remove_temp_dir();
}
END_TEST

START_TEST(stop_ends_group)
{
	static const char script[] = "sleep 300 & sleep 301 & echo started-$((6*7)); wait\n";
	struct result result, stopped;
	struct run run, stop;
	pid_t leader;

	setup_shell(shells[_i]);
	run = start(0, "run", "1-h", sizeof(script) - 1, 0);
	send_input(&run, script, sizeof(script) - 1);
	send_input(&run, "sbx-end 1-h\n", 12);
	wait_log("1-h", "started-42");
	leader = step_leader("1-h");
	ck_assert(!group_gone(leader));
	stop = start(0, "stop", "1-h", 0, 0);
	finish(&stop, 1, &stopped);
	ck_assert_str_eq(stopped.err, "sbx-step: stopped\n");
	ck_assert(group_gone(leader));
	ck_assert_int_eq(count_files(".sh"), 1);
	/* The runner is in the group too, so no status is written: sbx, which asked for the
	 * stop, reports the cancel or timeout itself. */
	finish(&run, 0, &result);
	ck_assert_msg(strstr(result.err, "sbx-step: lost\n") != NULL, "%s", result.err);
	ck_assert_msg(strstr(result.out, "started-42\n") != NULL, "%s", result.out);
	remove_temp_dir();
}
END_TEST

static long elapsed_ms(const struct timespec *since)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (now.tv_sec - since->tv_sec) * 1000 + (now.tv_nsec - since->tv_nsec) / 1000000;
}

/*
 * The runner, the group's leader, dies of SIGTERM at once, while the step's shell runs its
 * TERM trap for a second: the grace covers the whole group. This process becomes the
 * subreaper of the orphaned shell and never reaps it, as a pod's first process may not, so
 * the ended shell stays a zombie and the stop must not wait for it. Stop also copies the log
 * from the offset it is given, the trap's output included.
 */
START_TEST(stop_grace_covers_group)
{
	/* The marker follows the background sleep, so SIGTERM cannot come before the sleep
	 * exists and miss it (it would then hold the stop for the whole grace). */
	static const char script[] = "trap 'echo got-TERM; sleep 1; echo after-sleep; exit 143' "
				     "TERM; sleep 300 & echo started-$((6*7)); wait\n";
	struct result result, stopped;
	struct run run, stop;
	struct timespec started;
	pid_t leader;
	long took;

	setup_shell(shells[_i]);
	ck_assert_int_eq(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
	stop_grace = "5";
	run = start(0, "run", "1-k", sizeof(script) - 1, 0);
	send_input(&run, script, sizeof(script) - 1);
	send_input(&run, "sbx-end 1-k\n", 12);
	wait_log("1-k", "started-42\n");
	leader = step_leader("1-k");
	ck_assert(step_file_exists("1-k", ".launched"));
	ck_assert_int_eq(count_files(".sh"), 2);

	clock_gettime(CLOCK_MONOTONIC, &started);
	/* sbx forwarded "started-42\n" already, so it requests the log from byte 11. */
	stop = start(0, "stop", "1-k", 0, strlen("started-42\n"));
	finish(&stop, 1, &stopped);
	took = elapsed_ms(&started);
	ck_assert_str_eq(stopped.err, "sbx-step: stopped\n");
	ck_assert_str_eq(stopped.out, "got-TERM\nafter-sleep\n");
	ck_assert_int_ge(took, 1000);
	/* Well under the 5 s grace: the zombie counts as gone. */
	ck_assert_int_lt(took, 3500);
	ck_assert(group_gone(leader));
	ck_assert(step_file_exists("1-k", ".stopped"));
	ck_assert_int_eq(count_files(".sh"), 1);
	finish(&run, 0, &result);
	/* Under CK_FORK=no the tests after this one share the process. */
	ck_assert_int_eq(prctl(PR_SET_CHILD_SUBREAPER, 0), 0);
	remove_temp_dir();
}
END_TEST

/* A group that ignores SIGTERM gets SIGKILL once the grace has passed. */
START_TEST(stop_kills_after_grace)
{
	static const char script[] = "trap '' TERM; echo started-$((6*7)); sleep 303\n";
	struct result result, stopped;
	struct run run, stop;
	struct timespec started;
	pid_t leader;
	long took;

	setup_shell(shells[_i]);
	stop_grace = "2";
	run = start(0, "run", "1-l", sizeof(script) - 1, 0);
	send_input(&run, script, sizeof(script) - 1);
	send_input(&run, "sbx-end 1-l\n", 12);
	wait_log("1-l", "started-42\n");
	leader = step_leader("1-l");
	clock_gettime(CLOCK_MONOTONIC, &started);
	stop = start(0, "stop", "1-l", 0, 0);
	finish(&stop, 1, &stopped);
	took = elapsed_ms(&started);
	ck_assert_str_eq(stopped.err, "sbx-step: stopped\n");
	ck_assert_str_eq(stopped.out, "started-42\n");
	ck_assert_int_ge(took, 2000);
	ck_assert_int_lt(took, 4500);
	ck_assert(group_gone(leader));
	ck_assert_int_eq(count_files(".sh"), 1);
	finish(&run, 0, &result);
	ck_assert_msg(strstr(result.err, "sbx-step: lost\n") != NULL, "%s", result.err);
	remove_temp_dir();
}
END_TEST

/* A stop that arrives before the run started the step (the run exec is still on its way)
 * keeps the step from ever starting. */
START_TEST(stop_before_start_prevents_start)
{
	char script[PATH_MAX + 64], path[PATH_MAX + 32];
	struct result result, stopped;
	struct run stop;

	setup_shell(shells[_i]);
	stop = start(0, "stop", "1-m", 0, 0);
	finish(&stop, 1, &stopped);
	ck_assert_str_eq(stopped.err, "sbx-step: stopped\n");
	ck_assert(step_file_exists("1-m", ".launched"));
	snprintf(script, sizeof(script), "echo started > %s/started\n", temp_dir);
	run_step("1-m", script, &result);
	ck_assert_msg(strstr(result.err, "sbx-step: lost\n") != NULL, "%s", result.err);
	snprintf(path, sizeof(path), "%s/started", temp_dir);
	ck_assert_int_ne(access(path, F_OK), 0);
	ck_assert_int_eq(count_files(".sh"), 1);
	remove_temp_dir();
}
END_TEST

START_TEST(leftover_of_killed_exec_stopped)
{
	static const char script[] = "echo started-$((6*7)); exec sleep 302\n";
	struct result result;
	struct run run;
	pid_t leader;

	setup_shell(shells[_i]);
	run = start(0, "run", "1-i", sizeof(script) - 1, 0);
	send_input(&run, script, sizeof(script) - 1);
	send_input(&run, "sbx-end 1-i\n", 12);
	wait_log("1-i", "started-42");
	leader = step_leader("1-i");
	/* The exec dies (sbx killed, stream gone); the step keeps running. */
	kill(run.pid, SIGKILL);
	finish(&run, 0, &result);
	ck_assert(!group_gone(leader));
	run_step("1-j", "echo next\n", &result);
	ck_assert_msg(strstr(result.err, "sbx-step: leftover 1-i\n") != NULL, "%s", result.err);
	ck_assert_msg(strstr(result.err, "sbx-step: status 0\n") != NULL, "%s", result.err);
	ck_assert(group_gone(leader));
	ck_assert(step_file_exists("1-i", ".stopped"));
	/* Only the installed wrapper is left: the leftover's stored script went with it. */
	ck_assert_int_eq(count_files(".sh"), 1);
	remove_temp_dir();
}
END_TEST

START_TEST(wrapper_fits_its_here_document)
{
	size_t length;
	const char *text = as_step_wrapper(&length);
	char name[AS_STEP_WRAPPER_NAME_MAX];

	/* Prepare installs the wrapper as a here-document ending at this line. */
	ck_assert_ptr_null(strstr(text, "\nSBX_STEP_WRAPPER_END\n"));
	ck_assert_int_eq(text[length - 1], '\n');
	as_step_wrapper_name(name);
	ck_assert_int_eq(strncmp(name, "step-", 5), 0);
	ck_assert_int_eq(strlen(name), strlen("step-12345678.sh"));
}
END_TEST

static Suite *step_suite(void)
{
	Suite *suite = suite_create("agent_sandbox_step");
	TCase *wrapper = tcase_create("wrapper");
	int count = (int) SBX_ARRAY_SIZE(shells);

	tcase_set_timeout(wrapper, 60);
	tcase_add_loop_test(wrapper, status_and_output_exact, 0, count);
	tcase_add_loop_test(wrapper, short_step_ends_before_first_tick, 0, count);
	tcase_add_loop_test(wrapper, repeated_run_attaches, 0, count);
	tcase_add_loop_test(wrapper, truncated_script_never_starts, 0, count);
	tcase_add_loop_test(wrapper, missing_wrapper_reported_then_bootstrapped, 0, count);
	tcase_add_loop_test(wrapper, replaced_sandbox_reported, 0, count);
	tcase_add_loop_test(wrapper, stop_ends_group, 0, count);
	tcase_add_loop_test(wrapper, stop_grace_covers_group, 0, count);
	tcase_add_loop_test(wrapper, stop_kills_after_grace, 0, count);
	tcase_add_loop_test(wrapper, stop_before_start_prevents_start, 0, count);
	tcase_add_loop_test(wrapper, leftover_of_killed_exec_stopped, 0, count);
	tcase_add_test(wrapper, wrapper_fits_its_here_document);
	suite_add_tcase(suite, wrapper);
	return suite;
}

int main(void)
{
	SRunner *runner;
	int failed;

	signal(SIGPIPE, SIG_IGN);
	runner = srunner_create(step_suite());

	srunner_run_all(runner, CK_NORMAL);
	failed = srunner_ntests_failed(runner);
	srunner_free(runner);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
