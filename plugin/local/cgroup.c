/* SPDX-License-Identifier: MIT */
/*
 * Per-job cgroups.
 *
 * Layout of one job with id ID:
 *  - unified host: /sys/fs/cgroup/sbx/ID has the memory, pids and cpu limits and no process
 *    (cgroup v2 forbids processes in a cgroup that enables controllers for its children); the
 *    processes live in the leaves /sys/fs/cgroup/sbx/ID/init and /sys/fs/cgroup/sbx/ID/stage-N.
 *  - hybrid host: the limits live in the v1 hierarchies /sys/fs/cgroup/{memory,pids,cpu}/sbx/ID,
 *    only those whose limit is set, and the processes go straight into those job cgroups (v1
 *    limits are hierarchical, so leaves there would only add directories to remove). The
 *    controller-less cgroup2 at /sys/fs/cgroup/unified tracks the processes:
 *    /sys/fs/cgroup/unified/sbx/ID/<leaf>, where cgroup.kill, cgroup.freeze and cgroup.events
 *    work without any controller.
 *  - legacy host: as hybrid, with the v1 freezer hierarchy in place of the cgroup2 one.
 *
 * The job cgroups sit at the top of each hierarchy, not below the caller's own cgroup, so that
 * restarting (and so killing the cgroup of) the runner service leaves running jobs alone.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>
#include <linux/magic.h>

#include "cgroup.h"
#include "cgroup_internal.h"
#include "cleanup.h"
#include "error.h"
#include "log.h"
#include "util.h"

#define CGROUP_ROOT "/sys/fs/cgroup"
#define CGROUP_PARENT "sbx"

/* The CFS period the cpu limit is expressed in, microseconds (the kernel's default). */
#define CPU_PERIOD_US 100000ULL
/* The kernel rejects a CFS quota below 1 ms. */
#define CPU_QUOTA_MIN_US 1000ULL

/* Maximum size of a control file read at once. 1 MiB of cgroup.procs is about 140000 pids. */
#define PROCS_MAX_BYTES (1024 * 1024)

/* The v1 controllers that carry limits, in the order their paths are recorded. */
struct v1_controller {
	const char *name;
	/* A file the controller creates in every non-root cgroup. */
	const char *probe_file;
};

static const struct v1_controller v1_limit_controllers[] = {
	{ "memory", "memory.limit_in_bytes" },
	{ "pids", "pids.max" },
	{ "cpu", "cpu.cfs_quota_us" },
};

enum sbx_cgroup_layout sbx_cgroup_detect(void)
{
	struct statfs fs;

	if (statfs(CGROUP_ROOT, &fs) < 0)
		return SBX_CGROUP_NONE;
	if (fs.f_type == CGROUP2_SUPER_MAGIC)
		return SBX_CGROUP_UNIFIED;
	if (fs.f_type != TMPFS_MAGIC)
		return SBX_CGROUP_NONE;
	if (statfs(CGROUP_ROOT "/unified", &fs) == 0 && fs.f_type == CGROUP2_SUPER_MAGIC)
		return SBX_CGROUP_HYBRID;
	return SBX_CGROUP_LEGACY;
}

const char *sbx_cgroup_layout_name(enum sbx_cgroup_layout layout)
{
	switch (layout) {
	case SBX_CGROUP_NONE:
		return "none";
	case SBX_CGROUP_UNIFIED:
		return "unified";
	case SBX_CGROUP_HYBRID:
		return "hybrid";
	case SBX_CGROUP_LEGACY:
		return "legacy";
	}
	return "unknown";
}

static int layout_from_name(const char *name, enum sbx_cgroup_layout *layout)
{
	static const enum sbx_cgroup_layout all[] = { SBX_CGROUP_NONE, SBX_CGROUP_UNIFIED,
						      SBX_CGROUP_HYBRID, SBX_CGROUP_LEGACY };

	for (size_t i = 0; i < SBX_ARRAY_SIZE(all); i++) {
		if (strcmp(name, sbx_cgroup_layout_name(all[i])) == 0) {
			*layout = all[i];
			return 0;
		}
	}
	return -1;
}

/* True when the tracking hierarchy of LAYOUT is a cgroup2 one (cgroup.kill, cgroup.events). */
static int tracking_is_v2(enum sbx_cgroup_layout layout)
{
	return layout == SBX_CGROUP_UNIFIED || layout == SBX_CGROUP_HYBRID;
}

/* A leaf name is a single path component of [a-z0-9-], such as "init" or "stage-3". */
static int leaf_valid(const char *leaf)
{
	return sbx_id_valid(leaf);
}

int sbx_cgroup_join_path(char *buf, size_t size, const char *dir, const char *name)
{
	int n = snprintf(buf, size, "%s/%s", dir, name);

	if (n < 0 || (size_t) n >= size) {
		errno = ENAMETOOLONG;
		return -1;
	}
	return 0;
}

/* Writes VALUE to DIR/FILE in one write(), as cgroup control files require. 0 or -1/errno. */
int sbx_cgroup_write_file(const char *dir, const char *file, const char *value)
{
	char path[PATH_MAX];
	_cleanup_close_ int fd = -1;
	size_t length = strlen(value);
	ssize_t n;

	if (sbx_cgroup_join_path(path, sizeof(path), dir, file) < 0)
		return -1;
	fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return -1;
	do
		n = write(fd, value, length);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -1;
	if ((size_t) n != length) {
		errno = EIO;
		return -1;
	}
	return 0;
}

/* Reads DIR/FILE into a NUL-terminated buffer the caller frees. 0 or -1/errno. */
int sbx_cgroup_read_file(const char *dir, const char *file, char **data)
{
	char path[PATH_MAX];
	struct sbx_error error;

	if (sbx_cgroup_join_path(path, sizeof(path), dir, file) < 0)
		return -1;
	errno = 0;
	if (sbx_read_file(path, PROCS_MAX_BYTES, data, NULL, &error) < 0) {
		if (errno == 0)
			errno = EFBIG;
		return -1;
	}
	return 0;
}

/*
 * Fills ERROR for a failed operation on PATH. Permission problems get the fix for CONTROLLER
 * (NULL: the hierarchy in general).
 */
int sbx_cgroup_error(struct sbx_error *error, int errnum, const char *path,
			const char *controller, const char *operation)
{
	switch (errnum) {
	case EACCES:
	case EPERM:
	case EROFS:
		if (controller != NULL)
			return sbx_error_set(error, SBX_ERROR_SYSTEM,
					     "cgroup %s: %s: %s; run sbx as root or delegate the %s controller",
					     path, operation, strerror(errnum), controller);
		return sbx_error_set(error, SBX_ERROR_SYSTEM,
				     "cgroup %s: %s: %s; run sbx as root or delegate the cgroup hierarchy",
				     path, operation, strerror(errnum));
	default:
		return sbx_error_set(error, SBX_ERROR_SYSTEM, "cgroup %s: %s: %s", path, operation,
				     strerror(errnum));
	}
}

/* Returns the value of KEY in a "key value" list such as cgroup.events, or -1. */
long long sbx_cgroup_keyed_value(const char *text, const char *key)
{
	size_t key_length = strlen(key);

	for (const char *line = text; line != NULL && *line != '\0';) {
		const char *next = strchr(line, '\n');

		if (strncmp(line, key, key_length) == 0 && line[key_length] == ' ')
			return strtoll(line + key_length + 1, NULL, 10);
		line = next == NULL ? NULL : next + 1;
	}
	return -1;
}

/* True when WORD appears in the space-separated list TEXT. */
static int word_listed(const char *text, const char *word)
{
	size_t length = strlen(word);

	for (const char *p = text; (p = strstr(p, word)) != NULL; p += length) {
		int starts = p == text || isspace((unsigned char) p[-1]);
		int ends = p[length] == '\0' || isspace((unsigned char) p[length]);

		if (starts && ends)
			return 1;
	}
	return 0;
}

void sbx_cgroup_sleep_ms(int64_t ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000 };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

int64_t sbx_cgroup_remaining_ms(int64_t deadline)
{
	int64_t left = deadline - sbx_monotonic_ms();

	return left < 0 ? 0 : left;
}

/* Removes the "sbx" parent of the job cgroup DIR when no other job uses it. */
static void remove_parent_if_empty(const char *dir)
{
	char parent[PATH_MAX];
	char *slash;

	if (snprintf(parent, sizeof(parent), "%s", dir) >= (int) sizeof(parent))
		return;
	slash = strrchr(parent, '/');
	if (slash == NULL)
		return;
	*slash = '\0';
	if (rmdir(parent) < 0 && errno != ENOENT && errno != ENOTEMPTY && errno != EBUSY &&
	    errno != EEXIST)
		sbx_debug("cgroup %s: cannot remove the directory: %s", parent, strerror(errno));
}

/* ---- creating ---- */

void sbx_cgroup_job_clear(struct sbx_cgroup_job *job)
{
	if (job == NULL)
		return;
	for (size_t i = 0; i < job->path_count; i++) {
		free(job->paths[i]);
		job->paths[i] = NULL;
	}
	job->path_count = 0;
	job->tracking_index = -1;
	job->layout = SBX_CGROUP_NONE;
}

/*
 * Creates BASE/sbx (shared by every job, so it may exist) and BASE/sbx/ID (which must not).
 * Another job's destroy may remove an empty BASE/sbx between the two mkdir calls, hence the
 * retry.
 */
static int make_job_dir(const char *base, const char *id, const char *controller, char **path,
			struct sbx_error *error)
{
	_cleanup_free_ char *parent = NULL;
	_cleanup_free_ char *dir = NULL;

	if (asprintf(&parent, "%s/" CGROUP_PARENT, base) < 0 ||
	    asprintf(&dir, "%s/%s", parent, id) < 0)
		return sbx_error_errno(error, ENOMEM, "cgroup %s", base);

	for (int attempt = 0;; attempt++) {
		int saved;

		if (mkdir(parent, 0755) < 0 && errno != EEXIST)
			return sbx_cgroup_error(error, errno, parent, controller,
					    "cannot create the directory");
		if (mkdir(dir, 0755) == 0)
			break;
		saved = errno;
		if (saved == ENOENT && attempt < 3)
			continue;
		remove_parent_if_empty(dir);
		if (saved == EEXIST)
			return sbx_error_set(error, SBX_ERROR_SYSTEM,
					     "cgroup %s already exists; another sandbox uses the id "
					     "\"%s\" or a failed attempt left it behind: run sbx gc",
					     dir, id);
		return sbx_cgroup_error(error, saved, dir, controller, "cannot create the directory");
	}
	*path = steal_pointer(&dir);
	return 0;
}

/* Writes the limit FILE=VALUE into the job cgroup DIR of CONTROLLER. */
static int write_limit(const char *dir, const char *file, const char *value,
		       const char *controller, struct sbx_error *error)
{
	char path[PATH_MAX];

	if (sbx_cgroup_write_file(dir, file, value) == 0)
		return 0;
	if (sbx_cgroup_join_path(path, sizeof(path), dir, file) < 0)
		return sbx_cgroup_error(error, errno, dir, controller, "cannot write a limit");
	if (errno == ENOENT)
		return sbx_error_set(error, SBX_ERROR_SYSTEM,
				     "cgroup %s: not found; the %s controller is not active there: "
				     "enable it in the kernel or set its limit to 0",
				     path, controller);
	return sbx_cgroup_error(error, errno, path, controller, "cannot write the limit");
}

static int check_cpu_limit(const struct sbx_cgroup_limits *limits, struct sbx_error *error)
{
	uint64_t max_millis = UINT64_MAX / (CPU_PERIOD_US / 1000);

	if (limits->cpu_max_millis == 0)
		return 0;
	if (limits->cpu_max_millis > max_millis ||
	    limits->cpu_max_millis * (CPU_PERIOD_US / 1000) < CPU_QUOTA_MIN_US)
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "cpu limit %" PRIu64 " thousandths of a CPU is out of range; "
				     "use at least %llu (the kernel's minimum quota of 1 ms per "
				     "100 ms), or 0 for no limit",
				     limits->cpu_max_millis, CPU_QUOTA_MIN_US * 1000 / CPU_PERIOD_US);
	return 0;
}

static uint64_t cpu_quota_us(const struct sbx_cgroup_limits *limits)
{
	return limits->cpu_max_millis * (CPU_PERIOD_US / 1000);
}

/* Enables each of the COUNT v2 CONTROLLERS for the children of DIR. */
static int enable_controllers(const char *dir, const char *const *controllers, size_t count,
			      struct sbx_error *error)
{
	for (size_t i = 0; i < count; i++) {
		char value[32];

		snprintf(value, sizeof(value), "+%s", controllers[i]);
		if (sbx_cgroup_write_file(dir, "cgroup.subtree_control", value) == 0)
			continue;
		if (errno == EBUSY)
			return sbx_error_set(error, SBX_ERROR_SYSTEM,
					     "cgroup %s: cannot enable the %s controller for its "
					     "children: it contains processes (cgroup v2 allows "
					     "controllers only below cgroups without processes); "
					     "move them out",
					     dir, controllers[i]);
		return sbx_cgroup_error(error, errno, dir, controllers[i],
				    "cannot write cgroup.subtree_control");
	}
	return 0;
}

/*
 * Sets *BASE to the directory of MOUNT (the hierarchy of CONTROLLER, NULL for cgroup2) that
 * the job cgroups go in. LIMIT_KEY names the setting that makes the hierarchy unnecessary
 * (e.g. "memory_max"), NULL when the job always needs it.
 */
static int job_base(const char *mount, const char *controller, const char *limit_key,
		    enum sbx_cgroup_placement placement, char **base, struct sbx_error *error)
{
	char fix[512];

	if (placement == SBX_CGROUP_AT_TOP) {
		*base = strdup(mount);
		return *base == NULL ? sbx_error_errno(error, ENOMEM, "cgroup %s", mount) : 0;
	}
	snprintf(fix, sizeof(fix),
		 "delegate a cgroup subtree that contains the runner to its user (systemd: "
		 "Delegate=yes on the runner's unit; otherwise chown -R a cgroup to the user and "
		 "start the runner in it)%s%s%s, or set local.require_cgroup: false to run jobs "
		 "without cgroup limits",
		 limit_key != NULL ? ", set local." : "", limit_key != NULL ? limit_key : "",
		 limit_key != NULL ? ": 0" : "");
	return sbx_cgroup_delegated_base(mount, controller, fix, base, error);
}

/* NOTE: the unit tests run on a hybrid host only, so this path and the legacy (freezer) one
 * have not run against a real kernel yet. */
static int create_unified(const char *id, const struct sbx_cgroup_limits *limits,
			  enum sbx_cgroup_placement placement, struct sbx_cgroup_job *job,
			  struct sbx_error *error)
{
	static const char *const wanted[] = { "memory", "pids", "cpu" };
	const uint64_t requested[] = { limits->memory_max, limits->pids_max,
				       limits->cpu_max_millis };
	const char *enabled[SBX_ARRAY_SIZE(wanted)];
	size_t enabled_count = 0;
	_cleanup_free_ char *available = NULL;
	_cleanup_free_ char *dir = NULL;
	_cleanup_free_ char *base = NULL;
	_cleanup_free_ char *parent = NULL;
	char value[64];

	if (job_base(CGROUP_ROOT, NULL, NULL, placement, &base, error) < 0)
		return -1;
	if (sbx_cgroup_read_file(base, "cgroup.controllers", &available) < 0)
		return sbx_cgroup_error(error, errno, base, NULL, "cannot read cgroup.controllers");
	for (size_t i = 0; i < SBX_ARRAY_SIZE(wanted); i++) {
		if (word_listed(available, wanted[i])) {
			enabled[enabled_count++] = wanted[i];
			continue;
		}
		if (requested[i] != 0)
			return sbx_error_set(error, SBX_ERROR_SYSTEM,
					     "cgroup %s does not offer the %s controller "
					     "(cgroup.controllers: \"%.*s\"); enable it in the kernel%s "
					     "or set local.%s_max to 0",
					     base, wanted[i], (int) strcspn(available, "\n"), available,
					     placement == SBX_CGROUP_DELEGATED
						     ? ", delegate it to the runner's user"
						     : "",
					     wanted[i]);
	}

	/* No job process lives in the base or in sbx/, so enabling controllers there is
	 * allowed (a delegated base that contains the runner itself fails with EBUSY). The job
	 * cgroup passes them on to its leaves for per-stage accounting. */
	if (enable_controllers(base, enabled, enabled_count, error) < 0)
		return -1;
	if (make_job_dir(base, id, NULL, &dir, error) < 0)
		return -1;
	job->paths[job->path_count++] = steal_pointer(&dir);
	job->tracking_index = 0;

	if (asprintf(&parent, "%s/" CGROUP_PARENT, base) < 0) {
		parent = NULL;
		return sbx_error_errno(error, ENOMEM, "cgroup %s", base);
	}
	if (enable_controllers(parent, enabled, enabled_count, error) < 0)
		return -1;
	if (limits->memory_max != 0) {
		snprintf(value, sizeof(value), "%" PRIu64, limits->memory_max);
		if (write_limit(job->paths[0], "memory.max", value, "memory", error) < 0)
			return -1;
		/* The limit is for memory alone, so the job may not swap. Without swap
		 * accounting the file does not exist. */
		if (sbx_cgroup_write_file(job->paths[0], "memory.swap.max", "0") < 0 && errno != ENOENT)
			return sbx_cgroup_error(error, errno, job->paths[0], "memory",
					    "cannot write memory.swap.max");
	}
	if (limits->pids_max != 0) {
		snprintf(value, sizeof(value), "%" PRIu64, limits->pids_max);
		if (write_limit(job->paths[0], "pids.max", value, "pids", error) < 0)
			return -1;
	}
	if (limits->cpu_max_millis != 0) {
		snprintf(value, sizeof(value), "%" PRIu64 " %llu", cpu_quota_us(limits),
			 CPU_PERIOD_US);
		if (write_limit(job->paths[0], "cpu.max", value, "cpu", error) < 0)
			return -1;
	}
	return enable_controllers(job->paths[0], enabled, enabled_count, error);
}

static int v1_mounted(const char *base)
{
	struct statfs fs;

	return statfs(base, &fs) == 0 && fs.f_type == CGROUP_SUPER_MAGIC;
}

static int write_v1_limits(const char *dir, size_t controller, const struct sbx_cgroup_limits *limits,
			   struct sbx_error *error)
{
	char value[64];

	switch (controller) {
	case 0:
		if (limits->memory_max == 0)
			return 0;
		snprintf(value, sizeof(value), "%" PRIu64, limits->memory_max);
		if (write_limit(dir, "memory.limit_in_bytes", value, "memory", error) < 0)
			return -1;
		/* With swap accounting, memory plus swap gets the same limit, so the job cannot
		 * swap. The kernel rejects a memsw limit below the memory limit, hence the order. */
		if (sbx_cgroup_write_file(dir, "memory.memsw.limit_in_bytes", value) < 0 && errno != ENOENT)
			return sbx_cgroup_error(error, errno, dir, "memory",
					    "cannot write memory.memsw.limit_in_bytes");
		return 0;
	case 1:
		if (limits->pids_max == 0)
			return 0;
		snprintf(value, sizeof(value), "%" PRIu64, limits->pids_max);
		return write_limit(dir, "pids.max", value, "pids", error);
	case 2:
		if (limits->cpu_max_millis == 0)
			return 0;
		snprintf(value, sizeof(value), "%llu", CPU_PERIOD_US);
		if (write_limit(dir, "cpu.cfs_period_us", value, "cpu", error) < 0)
			return -1;
		snprintf(value, sizeof(value), "%" PRIu64, cpu_quota_us(limits));
		return write_limit(dir, "cpu.cfs_quota_us", value, "cpu", error);
	}
	return 0;
}

static int create_v1(const char *id, enum sbx_cgroup_layout layout,
		     const struct sbx_cgroup_limits *limits, enum sbx_cgroup_placement placement,
		     struct sbx_cgroup_job *job, struct sbx_error *error)
{
	const uint64_t requested[] = { limits->memory_max, limits->pids_max,
				       limits->cpu_max_millis };
	const char *tracking_mount = layout == SBX_CGROUP_HYBRID ? CGROUP_ROOT "/unified" :
								    CGROUP_ROOT "/freezer";
	const char *tracking_controller = layout == SBX_CGROUP_HYBRID ? NULL : "freezer";
	_cleanup_free_ char *dir = NULL;
	_cleanup_free_ char *tracking_base = NULL;

	for (size_t i = 0; i < SBX_ARRAY_SIZE(v1_limit_controllers); i++) {
		const struct v1_controller *controller = &v1_limit_controllers[i];
		_cleanup_free_ char *base = NULL;
		char mount[PATH_MAX];
		char probe[PATH_MAX];
		char key[32];

		/* A hierarchy without a limit for the job is left out: every process that enters
		 * the job writes its pid to the cgroup.procs of each hierarchy, and each write
		 * can wait for an RCU grace period (milliseconds). The tracking hierarchy is
		 * enough to find and kill the job's processes. Nor does an unprivileged runner
		 * need a delegated cgroup there. */
		if (requested[i] == 0)
			continue;
		snprintf(mount, sizeof(mount), CGROUP_ROOT "/%s", controller->name);
		snprintf(key, sizeof(key), "%s_max", controller->name);
		if (!v1_mounted(mount))
			return sbx_error_set(error, SBX_ERROR_SYSTEM,
					     "cgroup %s: the v1 %s controller is not mounted there; "
					     "mount it or set local.%s_max to 0",
					     mount, controller->name, controller->name);
		if (job_base(mount, controller->name, key, placement, &base, error) < 0)
			return -1;
		if (make_job_dir(base, id, controller->name, &dir, error) < 0)
			return -1;
		job->paths[job->path_count++] = steal_pointer(&dir);
		if (sbx_cgroup_join_path(probe, sizeof(probe), job->paths[job->path_count - 1],
			      controller->probe_file) == 0 &&
		    access(probe, F_OK) < 0)
			return sbx_error_set(error, SBX_ERROR_SYSTEM,
					     "cgroup %s: not found; the hierarchy at %s does not "
					     "have the %s controller: mount it there or set "
					     "local.%s_max to 0",
					     probe, mount, controller->name, controller->name);
		if (write_v1_limits(job->paths[job->path_count - 1], i, limits, error) < 0)
			return -1;
	}

	if (layout == SBX_CGROUP_LEGACY && !v1_mounted(tracking_mount))
		return sbx_error_set(error, SBX_ERROR_SYSTEM,
				     "cgroup %s: the v1 freezer controller is not mounted there; "
				     "sbx needs it to kill a job's processes: mount it",
				     tracking_mount);
	if (job_base(tracking_mount, tracking_controller, NULL, placement, &tracking_base,
		     error) < 0)
		return -1;
	if (make_job_dir(tracking_base, id, layout == SBX_CGROUP_LEGACY ? "freezer" : NULL, &dir,
			 error) < 0)
		return -1;
	job->tracking_index = (int) job->path_count;
	job->paths[job->path_count++] = steal_pointer(&dir);
	return 0;
}

int sbx_cgroup_job_create(const char *id, const struct sbx_cgroup_limits *limits,
			  struct sbx_cgroup_job *job, struct sbx_error *error)
{
	return sbx_cgroup_job_create_in(id, limits, SBX_CGROUP_AT_TOP, job, error);
}

int sbx_cgroup_job_create_in(const char *id, const struct sbx_cgroup_limits *limits,
			     enum sbx_cgroup_placement placement, struct sbx_cgroup_job *job,
			     struct sbx_error *error)
{
	struct sbx_cgroup_job created = { .tracking_index = -1 };
	int result;

	if (!sbx_id_valid(id))
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "sandbox id \"%s\" is invalid; use 1 to %d characters of "
				     "[a-z0-9-]",
				     id == NULL ? "(null)" : id, SBX_ID_MAX);
	if (check_cpu_limit(limits, error) < 0)
		return -1;

	created.layout = sbx_cgroup_detect();
	switch (created.layout) {
	case SBX_CGROUP_UNIFIED:
		result = create_unified(id, limits, placement, &created, error);
		break;
	case SBX_CGROUP_HYBRID:
	case SBX_CGROUP_LEGACY:
		result = create_v1(id, created.layout, limits, placement, &created, error);
		break;
	default:
		return sbx_error_set(error, SBX_ERROR_SYSTEM,
				     "no cgroup file system at " CGROUP_ROOT "; mount cgroup2 "
				     "(or the v1 memory, pids, cpu and freezer controllers) there");
	}

	if (result < 0) {
		/* Undo what exists so far; nothing runs in it yet. */
		sbx_cgroup_job_destroy(&created, 1000, NULL);
		sbx_cgroup_job_clear(&created);
		return -1;
	}
	sbx_debug("cgroup: created job %s (%s layout, %zu hierarchies)", id,
		  sbx_cgroup_layout_name(created.layout), created.path_count);
	*job = created;
	return 0;
}

/* ---- processes ---- */

static const char *tracking_path(const struct sbx_cgroup_job *job)
{
	if (job->tracking_index < 0 || (size_t) job->tracking_index >= job->path_count)
		return NULL;
	return job->paths[job->tracking_index];
}

/* Names the hierarchy of the job cgroup DIR (e.g. "memory") for messages, or NULL. */
static const char *hierarchy_name(const char *dir, char *buf, size_t size)
{
	const char *rest = dir + strlen(CGROUP_ROOT "/");
	size_t length;

	if (strncmp(dir, CGROUP_ROOT "/", strlen(CGROUP_ROOT "/")) != 0)
		return NULL;
	length = strcspn(rest, "/");
	if (length == 0 || length >= size || strncmp(rest, CGROUP_PARENT "/", length + 1) == 0)
		return NULL;
	memcpy(buf, rest, length);
	buf[length] = '\0';
	return buf;
}

static int move_pid(const char *dir, pid_t pid, const char *controller, struct sbx_error *error)
{
	char value[32];
	char path[PATH_MAX];

	snprintf(value, sizeof(value), "%d", (int) pid);
	if (sbx_cgroup_write_file(dir, "cgroup.procs", value) == 0)
		return 0;
	if (sbx_cgroup_join_path(path, sizeof(path), dir, "cgroup.procs") < 0)
		return sbx_cgroup_error(error, errno, dir, controller, "cannot move a process");
	if (errno == ESRCH)
		return sbx_error_set(error, SBX_ERROR_SYSTEM,
				     "cgroup %s: cannot move process %d: it has exited", path,
				     (int) pid);
	return sbx_cgroup_error(error, errno, path, controller, "cannot move a process");
}

/* Creates leaf LEAF in the tracking hierarchy of JOB; LEAF_DIR gets its path. */
static int make_leaf(const struct sbx_cgroup_job *job, const char *leaf, char *leaf_dir,
		     size_t size, struct sbx_error *error)
{
	const char *tracking = tracking_path(job);

	if (!leaf_valid(leaf))
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "cgroup leaf \"%s\" is invalid; use a name of [a-z0-9-] such "
				     "as \"init\" or \"stage-1\"",
				     leaf == NULL ? "(null)" : leaf);
	if (tracking == NULL)
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "cgroup job has no tracking hierarchy; create it with "
				     "sbx_cgroup_job_create()");

	if (sbx_cgroup_join_path(leaf_dir, size, tracking, leaf) < 0)
		return sbx_cgroup_error(error, errno, tracking, NULL, "cannot create a leaf");
	if (mkdir(leaf_dir, 0755) < 0 && errno != EEXIST)
		return sbx_cgroup_error(error, errno, leaf_dir, NULL, "cannot create the directory");
	/* An OOM kill in a stage takes the whole stage, not one arbitrary process of it. Only
	 * cgroup v2 with the memory controller has the file. */
	if (job->layout == SBX_CGROUP_UNIFIED && sbx_cgroup_write_file(leaf_dir, "memory.oom.group", "1") < 0 &&
	    errno != ENOENT)
		return sbx_cgroup_error(error, errno, leaf_dir, "memory", "cannot write memory.oom.group");
	return 0;
}

int sbx_cgroup_job_enter(const struct sbx_cgroup_job *job, const char *leaf, pid_t pid,
			 struct sbx_error *error)
{
	char leaf_dir[PATH_MAX];

	if (make_leaf(job, leaf, leaf_dir, sizeof(leaf_dir), error) < 0)
		return -1;
	/* Tracking first, so that a process that entered anything can be found and killed. */
	if (move_pid(leaf_dir, pid, NULL, error) < 0)
		return -1;
	for (size_t i = 0; i < job->path_count; i++) {
		if ((int) i == job->tracking_index)
			continue;
		char name[64];

		if (move_pid(job->paths[i], pid, hierarchy_name(job->paths[i], name, sizeof(name)),
			     error) < 0)
			return -1;
	}
	return 0;
}

int sbx_cgroup_job_can_clone_into(const struct sbx_cgroup_job *job)
{
	return tracking_path(job) != NULL && tracking_is_v2(job->layout);
}

/* Gives OWNER the cgroup.procs file of DIR, unless it has it already. */
static int chown_procs(const char *dir, uid_t owner, struct sbx_error *error)
{
	char path[PATH_MAX];
	struct stat st;

	if (sbx_cgroup_join_path(path, sizeof(path), dir, "cgroup.procs") < 0)
		return sbx_cgroup_error(error, errno, dir, NULL, "cannot change the owner");
	if (stat(path, &st) < 0)
		return sbx_cgroup_error(error, errno, path, NULL, "cannot read the owner");
	if (st.st_uid == owner)
		return 0;
	if (chown(path, owner, (gid_t) -1) < 0)
		return sbx_cgroup_error(error, errno, path, NULL, "cannot change the owner");
	return 0;
}

int sbx_cgroup_leaf_open(const struct sbx_cgroup_job *job, const char *leaf, uid_t owner,
			 int *fd, struct sbx_error *error)
{
	char leaf_dir[PATH_MAX];
	int opened;

	if (!sbx_cgroup_job_can_clone_into(job))
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "cgroup job has no cgroup2 hierarchy to clone into");
	if (make_leaf(job, leaf, leaf_dir, sizeof(leaf_dir), error) < 0)
		return -1;
	/* The clone counts as a write to both files by the cloning process. */
	if (owner != (uid_t) -1 &&
	    (chown_procs(tracking_path(job), owner, error) < 0 ||
	     chown_procs(leaf_dir, owner, error) < 0))
		return -1;
	opened = open(leaf_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (opened < 0)
		return sbx_cgroup_error(error, errno, leaf_dir, NULL, "cannot open the directory");
	*fd = opened;
	return 0;
}

int sbx_cgroup_leaf_kill(const struct sbx_cgroup_job *job, const char *leaf, int timeout_ms,
			 struct sbx_error *error)
{
	const char *tracking = tracking_path(job);
	int64_t deadline = sbx_monotonic_ms() + (timeout_ms < 0 ? 0 : timeout_ms);
	char leaf_dir[PATH_MAX];

	if (!leaf_valid(leaf))
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "cgroup leaf \"%s\" is invalid; use a name of [a-z0-9-]",
				     leaf == NULL ? "(null)" : leaf);
	if (tracking == NULL)
		return sbx_error_set(error, SBX_ERROR_INVALID, "cgroup job has no tracking hierarchy");
	if (sbx_cgroup_join_path(leaf_dir, sizeof(leaf_dir), tracking, leaf) < 0)
		return sbx_cgroup_error(error, errno, tracking, NULL, "cannot kill a leaf");

	if (sbx_cgroup_kill_tracking(leaf_dir, tracking_is_v2(job->layout), deadline, error) < 0)
		return -1;
	return sbx_cgroup_remove_tree(leaf_dir, deadline, error);
}

int sbx_cgroup_leaf_signal(const struct sbx_cgroup_job *job, const char *leaf, int signal_number)
{
	const char *tracking = tracking_path(job);
	char leaf_dir[PATH_MAX];

	if (!leaf_valid(leaf) || tracking == NULL) {
		errno = EINVAL;
		return -1;
	}
	if (sbx_cgroup_join_path(leaf_dir, sizeof(leaf_dir), tracking, leaf) < 0)
		return -1;
	return sbx_cgroup_signal_tree(leaf_dir, signal_number, NULL);
}

int sbx_cgroup_job_destroy(const struct sbx_cgroup_job *job, int timeout_ms,
			   struct sbx_error *error)
{
	int64_t deadline = sbx_monotonic_ms() + (timeout_ms < 0 ? 0 : timeout_ms);
	const char *tracking = tracking_path(job);
	struct sbx_error local;
	int result = 0;

	/* Every step runs even after a failure, so that one stuck hierarchy does not leave the
	 * others behind; the first failure is reported. */
	if (tracking != NULL) {
		if (sbx_cgroup_kill_tracking(tracking, tracking_is_v2(job->layout), deadline, &local) < 0 ||
		    sbx_cgroup_remove_tree(tracking, deadline, &local) < 0) {
			if (result == 0 && error != NULL)
				*error = local;
			result = -1;
		}
	}
	for (size_t i = 0; i < job->path_count; i++) {
		if ((int) i == job->tracking_index)
			continue;
		/* Processes that entered a limit hierarchy but not the tracking one. */
		if (sbx_cgroup_kill_plain(job->paths[i], deadline, &local) < 0 ||
		    sbx_cgroup_remove_tree(job->paths[i], deadline, &local) < 0) {
			if (result == 0 && error != NULL)
				*error = local;
			result = -1;
		}
	}
	for (size_t i = 0; i < job->path_count; i++)
		remove_parent_if_empty(job->paths[i]);
	return result;
}

/* ---- journal ---- */

struct json_object *sbx_cgroup_job_to_json(const struct sbx_cgroup_job *job)
{
	struct json_object *object = json_object_new_object();
	struct json_object *paths = json_object_new_array();

	if (object == NULL || paths == NULL) {
		json_object_put(object);
		json_object_put(paths);
		return NULL;
	}
	json_object_object_add(object, "layout",
			       json_object_new_string(sbx_cgroup_layout_name(job->layout)));
	for (size_t i = 0; i < job->path_count; i++)
		json_object_array_add(paths, json_object_new_string(job->paths[i]));
	json_object_object_add(object, "paths", paths);
	json_object_object_add(object, "tracking_index", json_object_new_int(job->tracking_index));
	return object;
}

/* True for one path component of a cgroup above a job's: systemd's unit names and the like. */
static int parent_component_valid(const char *component, size_t length)
{
	if (length == 0 || (length == 1 && component[0] == '.') ||
	    (length == 2 && component[0] == '.' && component[1] == '.'))
		return 0;
	for (size_t i = 0; i < length; i++) {
		char c = component[i];

		if (!(isalnum((unsigned char) c) || strchr("_.,=@:+-", c) != NULL))
			return 0;
	}
	return 1;
}

/*
 * Accepts only CGROUP_ROOT[/<hierarchy>][/<delegated cgroup>...]/sbx/<id> with the same ID for
 * every path, so that a damaged or edited journal entry cannot make destroy kill or remove
 * other cgroups: every path names a job cgroup, never a hierarchy or one of its parents.
 */
static int journal_path_valid(const char *path, char *id, size_t id_size)
{
	const char *rest, *job_id, *parent;
	size_t parent_length = strlen(CGROUP_PARENT);

	if (strncmp(path, CGROUP_ROOT "/", strlen(CGROUP_ROOT "/")) != 0)
		return 0;
	rest = path + strlen(CGROUP_ROOT "/");
	job_id = strrchr(rest, '/');
	if (job_id == NULL || !sbx_id_valid(job_id + 1))
		return 0;
	parent = job_id - parent_length;
	if (parent < rest || strncmp(parent, CGROUP_PARENT, parent_length) != 0 ||
	    (parent > rest && parent[-1] != '/'))
		return 0;
	for (const char *component = rest; component < parent;) {
		size_t length = strcspn(component, "/");

		if (!parent_component_valid(component, length))
			return 0;
		component += length + 1;
	}
	job_id++;
	if (id[0] == '\0')
		snprintf(id, id_size, "%s", job_id);
	return strcmp(id, job_id) == 0;
}

int sbx_cgroup_job_from_json(struct json_object *object, struct sbx_cgroup_job *job,
			     struct sbx_error *error)
{
	struct sbx_cgroup_job restored = { .tracking_index = -1 };
	struct json_object *layout, *paths, *tracking;
	char id[SBX_ID_MAX + 1] = "";
	size_t count;

	if (!json_object_is_type(object, json_type_object) ||
	    !json_object_object_get_ex(object, "layout", &layout) ||
	    !json_object_is_type(layout, json_type_string) ||
	    !json_object_object_get_ex(object, "paths", &paths) ||
	    !json_object_is_type(paths, json_type_array) ||
	    !json_object_object_get_ex(object, "tracking_index", &tracking) ||
	    !json_object_is_type(tracking, json_type_int))
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "journal cgroup data is invalid: expected an object with "
				     "\"layout\", \"paths\" and \"tracking_index\"; remove the "
				     "cgroups under " CGROUP_ROOT "/*/" CGROUP_PARENT " by hand");
	if (layout_from_name(json_object_get_string(layout), &restored.layout) < 0)
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "journal cgroup data: unknown layout \"%s\"; expected "
				     "unified, hybrid, legacy or none",
				     json_object_get_string(layout));

	count = json_object_array_length(paths);
	if (count > SBX_CGROUP_MAX_PATHS)
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "journal cgroup data: %zu paths, more than the %d allowed",
				     count, SBX_CGROUP_MAX_PATHS);
	for (size_t i = 0; i < count; i++) {
		struct json_object *item = json_object_array_get_idx(paths, i);
		const char *path = json_object_get_string(item);

		if (!json_object_is_type(item, json_type_string) ||
		    !journal_path_valid(path, id, sizeof(id))) {
			sbx_cgroup_job_clear(&restored);
			return sbx_error_set(error, SBX_ERROR_INVALID,
					     "journal cgroup data: path \"%s\" is invalid; expected "
					     CGROUP_ROOT "[/<hierarchy>][/<cgroup>...]/"
					     CGROUP_PARENT "/<id> with one id for every path",
					     path == NULL ? "(null)" : path);
		}
		restored.paths[i] = strdup(path);
		if (restored.paths[i] == NULL) {
			sbx_cgroup_job_clear(&restored);
			return sbx_error_errno(error, ENOMEM, "journal cgroup data");
		}
		restored.path_count = i + 1;
	}

	restored.tracking_index = json_object_get_int(tracking);
	if (restored.tracking_index < -1 || restored.tracking_index >= (int) count) {
		int index = restored.tracking_index;

		sbx_cgroup_job_clear(&restored);
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "journal cgroup data: tracking_index %d is out of range for %zu "
				     "paths",
				     index, count);
	}
	*job = restored;
	return 0;
}
