/* SPDX-License-Identifier: MIT */
/*
 * A fake executor plugin for testing the sbx shim. It makes no sandbox: exec runs the script
 * or argv as a plain child process, so statuses, signals, output and cancellation are real.
 * Every call is recorded as one line in $SBX_FAKE_DIR/calls; the last script and the last
 * extra environment are kept in $SBX_FAKE_DIR/last-script and last-envp (NUL-separated).
 * A sandbox is a file $SBX_FAKE_DIR/sandboxes/<id> of key=value lines (created, deadline,
 * runner, project, pipeline, job), which tests may also write themselves.
 *
 * Behaviour switches (environment):
 *   SBX_FAKE_PREPARE_FAIL=<class>     prepare fails with that enum sbx_error_class
 *   SBX_FAKE_PREPARE_SLEEP_MS=<ms>    prepare sleeps after recording "prepare-start"
 *   SBX_FAKE_EXEC_FAIL=<class>        exec fails with that class
 *   SBX_FAKE_DESTROY_FAIL=<class>     destroy fails with that class
 *   SBX_FAKE_DESTROY_SLEEP_MS=<ms>    destroy sleeps after recording "destroy-start"
 *   SBX_FAKE_LIST_FAIL=<class>        list fails with that class
 *   SBX_FAKE_CHECK=ok|warning|failed  what check() reports
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/pidfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <dirent.h>
#include <unistd.h>

#include "sbx/executor.h"

#define FAKE_STOP_GRACE_MS 2000

struct sbx_executor {
	const struct sbx_host *host;
	char *dir;
};

static int fail(struct sbx_error *error, int error_class, const char *format, ...)
	__attribute__((format(printf, 3, 4)));

static int fail(struct sbx_error *error, int error_class, const char *format, ...)
{
	va_list args;

	error->struct_size = sizeof(*error);
	error->error_class = error_class;
	va_start(args, format);
	vsnprintf(error->message, sizeof(error->message), format, args);
	va_end(args);
	return -1;
}

static void host_log(const struct sbx_executor *executor, enum sbx_log_level level,
		     const char *format, ...) __attribute__((format(printf, 3, 4)));

static void host_log(const struct sbx_executor *executor, enum sbx_log_level level,
		     const char *format, ...)
{
	char line[512];
	va_list args;

	if (executor->host == NULL || executor->host->log == NULL ||
	    (int) level > executor->host->log_level)
		return;
	va_start(args, format);
	vsnprintf(line, sizeof(line), format, args);
	va_end(args);
	executor->host->log(executor->host->log_userdata, level, line);
}

static void record(const struct sbx_executor *executor, const char *format, ...)
	__attribute__((format(printf, 2, 3)));

static void record(const struct sbx_executor *executor, const char *format, ...)
{
	char path[4096], line[2048];
	va_list args;
	int fd, length;

	va_start(args, format);
	length = vsnprintf(line, sizeof(line) - 1, format, args);
	va_end(args);
	if (length < 0)
		return;
	if ((size_t) length > sizeof(line) - 2)
		length = sizeof(line) - 2;
	line[length++] = '\n';
	snprintf(path, sizeof(path), "%s/calls", executor->dir);
	fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (fd < 0)
		return;
	if (write(fd, line, (size_t) length) < 0) {
		/* Best effort: a test that needs the line fails on its absence. */
	}
	close(fd);
}

static int env_int(const char *name, int fallback)
{
	const char *value = getenv(name);

	return value != NULL && value[0] != '\0' ? atoi(value) : fallback;
}

static void sleep_ms(int ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long) (ms % 1000) * 1000000 };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int write_file(const char *path, const void *data, size_t length)
{
	const char *p = data;
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	if (fd < 0)
		return -1;
	while (length > 0) {
		ssize_t n = write(fd, p, length);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			close(fd);
			return -1;
		}
		p += n;
		length -= (size_t) n;
	}
	return close(fd);
}

static void sandbox_path(const struct sbx_executor *executor, const char *id, char *buf,
			 size_t size)
{
	snprintf(buf, size, "%s/sandboxes/%s", executor->dir, id);
}

static int fake_open(const struct sbx_host *host, const struct sbx_open_options *options,
		     struct sbx_executor **executor, struct sbx_error *error)
{
	const char *dir = getenv("SBX_FAKE_DIR");
	struct sbx_executor *opened;
	char path[4096];

	if (dir == NULL || dir[0] != '/')
		return fail(error, SBX_ERROR_INVALID, "SBX_FAKE_DIR is not an absolute path");
	opened = calloc(1, sizeof(*opened));
	if (opened == NULL || (opened->dir = strdup(dir)) == NULL) {
		free(opened);
		return fail(error, SBX_ERROR_SYSTEM, "out of memory");
	}
	opened->host = host;
	snprintf(path, sizeof(path), "%s/sandboxes", dir);
	mkdir(path, 0700);
	record(opened, "open config=%s host_struct=%u",
	       options->config_path != NULL ? options->config_path : "-", host->struct_size);
	*executor = opened;
	return 0;
}

static void fake_close(struct sbx_executor *executor)
{
	if (executor == NULL)
		return;
	record(executor, "close");
	free(executor->dir);
	free(executor);
}

static const char *or_dash(const char *text)
{
	return text != NULL ? text : "-";
}

static int fake_prepare(struct sbx_executor *executor, const struct sbx_job_spec *spec,
			struct sbx_error *error)
{
	const struct sbx_owner *owner = spec->owner;
	int failure = env_int("SBX_FAKE_PREPARE_FAIL", 0);
	int sleep_for = env_int("SBX_FAKE_PREPARE_SLEEP_MS", 0);
	char allow[1024] = "";
	char path[4096], text[2048];
	time_t now = time(NULL);
	int64_t timeout = spec->timeout_seconds > 0 ? spec->timeout_seconds : 3600;
	int length;

	for (const char *const *entry = spec->extra_allow; entry != NULL && *entry != NULL;
	     entry++) {
		size_t used = strlen(allow);

		snprintf(allow + used, sizeof(allow) - used, "%s%s", used > 0 ? "," : "", *entry);
	}
	record(executor, "prepare-start %s pid=%d", spec->id, (int) getpid());
	if (sleep_for > 0)
		sleep_ms(sleep_for);
	record(executor,
	       "prepare %s image=%s project_path=%s protected=%d timeout=%lld server=%s "
	       "owner=%s,%s,%s,%s allow=%s",
	       spec->id, or_dash(spec->image), or_dash(spec->project_path), spec->protected_ref,
	       (long long) spec->timeout_seconds, or_dash(spec->ci_server_url),
	       owner != NULL ? or_dash(owner->runner) : "-",
	       owner != NULL ? or_dash(owner->project) : "-",
	       owner != NULL ? or_dash(owner->pipeline) : "-",
	       owner != NULL ? or_dash(owner->job) : "-", allow[0] != '\0' ? allow : "-");
	if (failure != 0)
		return fail(error, failure, "fake prepare failure for %s", spec->id);

	sandbox_path(executor, spec->id, path, sizeof(path));
	length = snprintf(text, sizeof(text),
			  "created=%lld\ndeadline=%lld\nrunner=%s\nproject=%s\npipeline=%s\njob=%s\n",
			  (long long) now, (long long) (now + timeout),
			  owner != NULL ? or_dash(owner->runner) : "-",
			  owner != NULL ? or_dash(owner->project) : "-",
			  owner != NULL ? or_dash(owner->pipeline) : "-",
			  owner != NULL ? or_dash(owner->job) : "-");
	if (write_file(path, text, (size_t) length) < 0)
		return fail(error, SBX_ERROR_SYSTEM, "cannot write %s: %s", path, strerror(errno));
	host_log(executor, SBX_LOG_INFO, "fake: created sandbox %s", spec->id);
	return 0;
}

static void save_envp(const struct sbx_executor *executor, const char *const *envp)
{
	char path[4096];
	size_t total = 0, used = 0;
	char *buf;

	for (const char *const *e = envp; e != NULL && *e != NULL; e++)
		total += strlen(*e) + 1;
	buf = malloc(total + 1);
	if (buf == NULL)
		return;
	for (const char *const *e = envp; e != NULL && *e != NULL; e++) {
		size_t length = strlen(*e) + 1;

		memcpy(buf + used, *e, length);
		used += length;
	}
	snprintf(path, sizeof(path), "%s/last-envp", executor->dir);
	write_file(path, buf, used);
	free(buf);
}

/* In the forked child: set up descriptors and environment, then exec. Never returns. */
static void exec_child(const struct sbx_exec_spec *spec, int script_fd)
{
	char script_path[64];
	int in = spec->stdin_fd;

	setpgid(0, 0);
	signal(SIGTERM, SIG_DFL);
	signal(SIGINT, SIG_DFL);
	signal(SIGPIPE, SIG_DFL);
	if (script_fd >= 0 && dup2(script_fd, 100) < 0)
		_exit(127);
	if (in < 0)
		in = open("/dev/null", O_RDONLY);
	if (dup2(in, 0) < 0 || dup2(spec->stdout_fd, 1) < 0 || dup2(spec->stderr_fd, 2) < 0)
		_exit(127);
	for (const char *const *e = spec->envp; e != NULL && *e != NULL; e++)
		putenv(strdup(*e));
	if (spec->cwd != NULL && chdir(spec->cwd) < 0)
		_exit(127);
	if (script_fd >= 0) {
		const char *shell = spec->shell != NULL ? spec->shell : "sh";

		snprintf(script_path, sizeof(script_path), "/proc/self/fd/%d", 100);
		execlp(shell, shell, script_path, (char *) NULL);
	} else {
		execvp(spec->argv[0], (char *const *) spec->argv);
	}
	_exit(127);
}

/* Without a pidfd (valgrind 3.19 lacks pidfd_open), poll in slices and check with waitpid. */
#define FAKE_POLL_SLICE_MS 50

/* Returns 1 once PID has ended (and reaped it into *WAIT_STATUS), 0 otherwise. */
static int child_ended(pid_t pid, int pidfd, int *wait_status, int *reaped)
{
	if (*reaped)
		return 1;
	if (pidfd >= 0) {
		struct pollfd pfd = { .fd = pidfd, .events = POLLIN };

		if (poll(&pfd, 1, 0) <= 0)
			return 0;
	}
	if (waitpid(pid, wait_status, WNOHANG) != pid)
		return 0;
	*reaped = 1;
	return 1;
}

static void stop_process_group(pid_t pid, int pidfd, int *wait_status, int *reaped)
{
	kill(-pid, SIGTERM);
	for (int waited = 0; waited < FAKE_STOP_GRACE_MS; waited += 10) {
		if (child_ended(pid, pidfd, wait_status, reaped))
			return;
		sleep_ms(10);
	}
	kill(-pid, SIGKILL);
}

static int fake_exec(struct sbx_executor *executor, const struct sbx_exec_spec *spec,
		     int *exit_status, struct sbx_error *error)
{
	int failure = env_int("SBX_FAKE_EXEC_FAIL", 0);
	char path[4096];
	struct stat st;
	int script_fd = -1, pidfd, wait_status = 0, reaped = 0;
	int64_t deadline_ms = -1;
	pid_t pid;

	record(executor,
	       "exec %s profile=%s shell=%s script_length=%zu argv0=%s cwd=%s stdin=%d stdout=%d "
	       "stderr=%d cancel=%s timeout=%lld pid=%d",
	       spec->id, spec->network_profile == SBX_NETWORK_RUNNER ? "runner" : "user",
	       or_dash(spec->shell), spec->script != NULL ? spec->script_length : 0,
	       spec->argv != NULL ? or_dash(spec->argv[0]) : "-", or_dash(spec->cwd),
	       spec->stdin_fd, spec->stdout_fd, spec->stderr_fd,
	       spec->cancel_fd >= 0 ? "yes" : "no", (long long) spec->timeout_seconds,
	       (int) getpid());
	sandbox_path(executor, spec->id, path, sizeof(path));
	if (stat(path, &st) < 0)
		return fail(error, SBX_ERROR_NOT_FOUND, "sandbox %s not found", spec->id);
	if (failure != 0)
		return fail(error, failure, "fake exec failure in %s", spec->id);
	save_envp(executor, spec->envp);

	if (spec->script != NULL) {
		snprintf(path, sizeof(path), "%s/last-script", executor->dir);
		script_fd = memfd_create("fake-script", MFD_CLOEXEC);
		if (script_fd < 0 ||
		    write_file(path, spec->script, spec->script_length) < 0 ||
		    pwrite(script_fd, spec->script, spec->script_length, 0) !=
			    (ssize_t) spec->script_length)
			return fail(error, SBX_ERROR_SYSTEM, "cannot stage the script");
	} else if (spec->argv == NULL || spec->argv[0] == NULL) {
		return fail(error, SBX_ERROR_INVALID, "neither a script nor an argv");
	}

	pid = fork();
	if (pid < 0) {
		if (script_fd >= 0)
			close(script_fd);
		return fail(error, SBX_ERROR_SYSTEM, "fork: %s", strerror(errno));
	}
	if (pid == 0)
		exec_child(spec, script_fd);
	if (script_fd >= 0)
		close(script_fd);
	pidfd = pidfd_open(pid, 0);
	if (spec->timeout_seconds > 0)
		deadline_ms = now_ms() + spec->timeout_seconds * 1000;

	for (;;) {
		struct pollfd fds[2] = {
			{ .fd = pidfd, .events = POLLIN },
			{ .fd = spec->cancel_fd, .events = POLLIN },
		};
		int wait_ms = -1;
		int ready;

		if (child_ended(pid, pidfd, &wait_status, &reaped))
			break;

		if (deadline_ms >= 0) {
			int64_t now = now_ms();

			wait_ms = now >= deadline_ms ? 0 : (int) (deadline_ms - now);
		}
		if (pidfd < 0 && (wait_ms < 0 || wait_ms > FAKE_POLL_SLICE_MS))
			wait_ms = FAKE_POLL_SLICE_MS;
		ready = poll(fds, spec->cancel_fd >= 0 ? 2 : 1, wait_ms);
		if (ready < 0 && errno == EINTR)
			continue;
		if (ready == 0 && deadline_ms >= 0 && now_ms() >= deadline_ms) {
			stop_process_group(pid, pidfd, &wait_status, &reaped);
			if (!reaped)
				waitpid(pid, &wait_status, 0);
			if (pidfd >= 0)
				close(pidfd);
			record(executor, "exec-timeout %s", spec->id);
			/* The local backend's class and wording: the message names the sandbox. */
			return fail(error, SBX_ERROR_BUILD,
				    "the step in sandbox %s timed out after %lld s", spec->id,
				    (long long) spec->timeout_seconds);
		}
		if (spec->cancel_fd >= 0 && fds[1].revents != 0) {
			stop_process_group(pid, pidfd, &wait_status, &reaped);
			if (!reaped)
				waitpid(pid, &wait_status, 0);
			if (pidfd >= 0)
				close(pidfd);
			record(executor, "exec-cancelled %s", spec->id);
			return fail(error, SBX_ERROR_CANCELLED, "step cancelled");
		}
	}
	if (!reaped)
		waitpid(pid, &wait_status, 0);
	if (pidfd >= 0)
		close(pidfd);
	*exit_status = WIFEXITED(wait_status) ? WEXITSTATUS(wait_status)
					      : 128 + WTERMSIG(wait_status);
	record(executor, "exec-status %s %d", spec->id, *exit_status);
	return 0;
}

static int fake_destroy(struct sbx_executor *executor, const char *id, struct sbx_error *error)
{
	int failure = env_int("SBX_FAKE_DESTROY_FAIL", 0);
	int sleep_for = env_int("SBX_FAKE_DESTROY_SLEEP_MS", 0);
	char path[4096];

	record(executor, "destroy-start %s pid=%d", id, (int) getpid());
	if (sleep_for > 0)
		sleep_ms(sleep_for);
	if (failure != 0)
		return fail(error, failure, "fake destroy failure for %s", id);
	sandbox_path(executor, id, path, sizeof(path));
	if (unlink(path) < 0 && errno != ENOENT)
		return fail(error, SBX_ERROR_SYSTEM, "cannot remove %s: %s", path, strerror(errno));
	record(executor, "destroy %s", id);
	return 0;
}

static void read_field(const char *text, const char *key, char *buf, size_t size)
{
	size_t key_length = strlen(key);
	const char *line = text;

	buf[0] = '\0';
	while (line != NULL && *line != '\0') {
		if (strncmp(line, key, key_length) == 0 && line[key_length] == '=') {
			const char *value = line + key_length + 1;
			size_t length = strcspn(value, "\n");

			if (length >= size)
				length = size - 1;
			memcpy(buf, value, length);
			buf[length] = '\0';
			return;
		}
		line = strchr(line, '\n');
		if (line != NULL)
			line++;
	}
}

static int fake_list(struct sbx_executor *executor, sbx_list_fn callback, void *userdata,
		     struct sbx_error *error)
{
	char path[4096];
	struct dirent *entry;
	DIR *dir;

	record(executor, "list");
	if (env_int("SBX_FAKE_LIST_FAIL", 0) != 0)
		return fail(error, env_int("SBX_FAKE_LIST_FAIL", 0), "fake list failure");
	snprintf(path, sizeof(path), "%s/sandboxes", executor->dir);
	dir = opendir(path);
	if (dir == NULL)
		return fail(error, SBX_ERROR_SYSTEM, "cannot open %s", path);
	while ((entry = readdir(dir)) != NULL) {
		char file[8192], text[2048], created[32], deadline[32];
		char runner[128], project[128], pipeline[128], job[128];
		struct sbx_owner owner = { .struct_size = sizeof(owner) };
		struct sbx_sandbox_info info = { .struct_size = sizeof(info) };
		ssize_t n;
		int fd;

		if (entry->d_name[0] == '.')
			continue;
		snprintf(file, sizeof(file), "%s/%s", path, entry->d_name);
		fd = open(file, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;
		n = read(fd, text, sizeof(text) - 1);
		close(fd);
		text[n > 0 ? n : 0] = '\0';
		read_field(text, "created", created, sizeof(created));
		read_field(text, "deadline", deadline, sizeof(deadline));
		read_field(text, "runner", runner, sizeof(runner));
		read_field(text, "project", project, sizeof(project));
		read_field(text, "pipeline", pipeline, sizeof(pipeline));
		read_field(text, "job", job, sizeof(job));
		owner.runner = runner;
		owner.project = project;
		owner.pipeline = pipeline;
		owner.job = job;
		info.id = entry->d_name;
		info.backend = "local";
		info.state = SBX_SANDBOX_READY;
		info.created = atoll(created);
		info.deadline = atoll(deadline);
		info.owner = &owner;
		if (callback(userdata, &info) != 0)
			break;
	}
	closedir(dir);
	return 0;
}

static int fake_check(struct sbx_executor *executor, sbx_check_fn callback, void *userdata,
		      struct sbx_error *error)
{
	const char *mode = getenv("SBX_FAKE_CHECK");

	record(executor, "check");
	callback(userdata, SBX_CHECK_OK, "fake-state", executor->dir, NULL);
	if (mode != NULL && strcmp(mode, "warning") == 0)
		callback(userdata, SBX_CHECK_WARNING, "fake-warning", "something is odd",
			 "set SBX_FAKE_CHECK=ok");
	if (mode != NULL && strcmp(mode, "failed") == 0) {
		callback(userdata, SBX_CHECK_FAILED, "fake-prerequisite", "missing",
			 "set SBX_FAKE_CHECK=ok");
		return fail(error, SBX_ERROR_SYSTEM, "a prerequisite failed");
	}
	return 0;
}

static const struct sbx_executor_ops fake_ops = {
	.struct_size = sizeof(struct sbx_executor_ops),
	.abi_version = SBX_EXECUTOR_ABI_VERSION,
	.backend_name = "local",
	.backend_version = "fake",
	.open = fake_open,
	.close = fake_close,
	.prepare = fake_prepare,
	.exec = fake_exec,
	.destroy = fake_destroy,
	.list = fake_list,
	.check = fake_check,
};

SBX_EXPORT int sbx_executor_entry(uint32_t host_abi_version, const struct sbx_executor_ops **ops,
				  struct sbx_error *error)
{
	if (host_abi_version != SBX_EXECUTOR_ABI_VERSION)
		return fail(error, SBX_ERROR_ABI, "the fake plugin speaks ABI version %u, not %u",
			    SBX_EXECUTOR_ABI_VERSION, host_abi_version);
	*ops = &fake_ops;
	return 0;
}
