/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <limits.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cleanup.h"
#include "config.h"
#include "error.h"
#include "ids.h"
#include "util.h"

static const char *find_helper(const char *name)
{
	static const char *const dirs[] = { "/usr/bin", "/bin", "/usr/sbin", "/sbin",
					     "/usr/local/bin" };
	static char found[2][PATH_MAX];
	int slot = strcmp(name, "newuidmap") == 0 ? 0 : 1;

	for (size_t i = 0; i < SBX_ARRAY_SIZE(dirs); i++) {
		snprintf(found[slot], sizeof(found[slot]), "%s/%s", dirs[i], name);
		if (access(found[slot], X_OK) == 0)
			return found[slot];
	}
	return NULL;
}

void sbx_ids_host_detect(struct sbx_ids_host *host)
{
	static char name[256];
	struct passwd pw, *result = NULL;
	char buf[4096];

	memset(host, 0, sizeof(*host));
	host->euid = geteuid();
	host->egid = getegid();
	if (getpwuid_r(host->euid, &pw, buf, sizeof(buf), &result) == 0 && result != NULL) {
		snprintf(name, sizeof(name), "%s", pw.pw_name);
		host->user_name = name;
	}
	host->subuid_path = "/etc/subuid";
	host->subgid_path = "/etc/subgid";
	host->newuidmap_path = find_helper("newuidmap");
	host->newgidmap_path = find_helper("newgidmap");
}

int sbx_ids_parse_subid(const char *content, const char *user_name, uint32_t id, uint32_t *start,
			uint32_t *count)
{
	char id_text[16];
	const char *line = content;

	snprintf(id_text, sizeof(id_text), "%" PRIu32, id);
	while (line != NULL && *line != '\0') {
		const char *end = strchr(line, '\n');
		size_t length = end != NULL ? (size_t) (end - line) : strlen(line);
		char buf[512], *first, *second, *third, *rest;
		unsigned long long parsed_start, parsed_count;

		if (length < sizeof(buf) && length > 0 && line[0] != '#') {
			memcpy(buf, line, length);
			buf[length] = '\0';
			first = buf;
			second = strchr(first, ':');
			third = second != NULL ? strchr(second + 1, ':') : NULL;
			if (third != NULL) {
				*second++ = '\0';
				*third++ = '\0';
				errno = 0;
				parsed_start = strtoull(second, &rest, 10);
				if (errno == 0 && rest != second && *rest == '\0') {
					parsed_count = strtoull(third, &rest, 10);
					if (errno == 0 && rest != third && *rest == '\0' &&
					    parsed_count > 0 && parsed_start <= UINT32_MAX &&
					    parsed_count <= UINT32_MAX - parsed_start &&
					    ((user_name != NULL && strcmp(first, user_name) == 0) ||
					     strcmp(first, id_text) == 0)) {
						*start = (uint32_t) parsed_start;
						*count = (uint32_t) parsed_count;
						return 0;
					}
				}
			}
		}
		line = end != NULL ? end + 1 : NULL;
	}
	return -1;
}

int sbx_ids_format(const struct sbx_id_range *ranges, size_t count, char *buf, size_t size)
{
	size_t used = 0;

	if (size == 0)
		return -1;
	buf[0] = '\0';
	for (size_t i = 0; i < count; i++) {
		int n = snprintf(buf + used, size - used, "%" PRIu32 " %" PRIu32 " %" PRIu32 "\n",
				 ranges[i].inside, ranges[i].outside, ranges[i].count);

		if (n < 0 || (size_t) n >= size - used)
			return -1;
		used += (size_t) n;
	}
	return 0;
}

static int read_subid(const char *path, const char *user_name, uint32_t id, uint32_t *start,
		      uint32_t *count)
{
	_cleanup_free_ char *content = NULL;

	if (path == NULL || sbx_read_file(path, 1 << 20, &content, NULL, NULL) < 0)
		return -1;
	return sbx_ids_parse_subid(content, user_name, id, start, count);
}

static int plan_root(const struct sbx_config *config, struct sbx_id_map *map,
		     struct sbx_error *error)
{
	uint64_t base = config->local.id_map_base;

	/* The whole range must stay clear of uid 0, the runner's own uid in root mode. */
	if (base == 0 || base + SBX_IDS_RANGE - 1 > UINT32_MAX - 1)
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "local.id_map_base %" PRIu64 " is invalid; use a base above 0 "
				     "whose range of %u ids ends below 4294967295 (default "
				     "1879048192)",
				     base, SBX_IDS_RANGE);
	map->mode = SBX_IDS_ROOT;
	map->uid[0] = (struct sbx_id_range){ 0, (uint32_t) base, SBX_IDS_RANGE };
	map->gid[0] = map->uid[0];
	map->uid_count = map->gid_count = 1;
	map->host_uid = (uid_t) (base + map->job_uid);
	map->host_gid = (gid_t) (base + map->job_gid);
	return 0;
}

static int plan_runner(const struct sbx_ids_host *host, struct sbx_id_map *map)
{
	map->mode = SBX_IDS_RUNNER;
	map->uid[0] = (struct sbx_id_range){ map->job_uid, host->euid, 1 };
	map->gid[0] = (struct sbx_id_range){ map->job_gid, host->egid, 1 };
	map->uid_count = map->gid_count = 1;
	map->host_uid = host->euid;
	map->host_gid = host->egid;
	return 0;
}

static int plan_subid(const struct sbx_config *config, const struct sbx_ids_host *host,
		      struct sbx_id_map *map, struct sbx_error *error)
{
	uint32_t uid_start, uid_count, gid_start, gid_count;
	const char *who = host->user_name != NULL ? host->user_name : "the runner's user";
	int have_helpers = host->newuidmap_path != NULL && host->newgidmap_path != NULL;
	int have_uids = read_subid(host->subuid_path, host->user_name, host->euid, &uid_start,
				   &uid_count) == 0;
	int have_gids = read_subid(host->subgid_path, host->user_name, host->euid, &gid_start,
				   &gid_count) == 0;

	if (!have_helpers || !have_uids || !have_gids) {
		if (config->local.allow_runner_uid)
			return plan_runner(host, map);
		if (!have_helpers)
			return sbx_error_set(error, SBX_ERROR_INVALID,
					     "unprivileged mode needs newuidmap and newgidmap to "
					     "give the job its own uid, and they are not installed; "
					     "install the uidmap package, or set "
					     "local.allow_runner_uid: true to run jobs as the "
					     "runner's own uid");
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "unprivileged mode needs a subordinate id range for %s "
				     "(uid %u) in %s and %s, and there is none; add one, e.g. "
				     "`usermod --add-subuids 100000-165535 --add-subgids "
				     "100000-165535 %s`, or set local.allow_runner_uid: true to "
				     "run jobs as the runner's own uid",
				     who, (unsigned) host->euid, host->subuid_path,
				     host->subgid_path, who);
	}

	if (uid_count > SBX_IDS_RANGE)
		uid_count = SBX_IDS_RANGE;
	if (gid_count > SBX_IDS_RANGE)
		gid_count = SBX_IDS_RANGE;
	if (map->job_uid == 0 || map->job_uid > uid_count || map->job_gid == 0 ||
	    map->job_gid > gid_count)
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "local.job_uid %u / local.job_gid %u do not fit the "
				     "subordinate ranges of %s (%" PRIu32 " uids, %" PRIu32
				     " gids); use ids between 1 and the range size, or enlarge the "
				     "ranges in %s and %s",
				     (unsigned) map->job_uid, (unsigned) map->job_gid, who, uid_count,
				     gid_count, host->subuid_path, host->subgid_path);

	map->mode = SBX_IDS_SUBID;
	map->uid[0] = (struct sbx_id_range){ 0, host->euid, 1 };
	map->uid[1] = (struct sbx_id_range){ 1, uid_start, uid_count };
	map->gid[0] = (struct sbx_id_range){ 0, host->egid, 1 };
	map->gid[1] = (struct sbx_id_range){ 1, gid_start, gid_count };
	map->uid_count = map->gid_count = 2;
	map->host_uid = (uid_t) (uid_start + map->job_uid - 1);
	map->host_gid = (gid_t) (gid_start + map->job_gid - 1);
	snprintf(map->newuidmap, sizeof(map->newuidmap), "%s", host->newuidmap_path);
	snprintf(map->newgidmap, sizeof(map->newgidmap), "%s", host->newgidmap_path);
	return 0;
}

int sbx_ids_plan(const struct sbx_config *config, const struct sbx_ids_host *host,
		 struct sbx_id_map *map, struct sbx_error *error)
{
	struct sbx_id_map planned;
	enum sbx_local_mode mode = config->local.mode;
	int rc;

	memset(&planned, 0, sizeof(planned));
	planned.job_uid = config->local.job_uid;
	planned.job_gid = config->local.job_gid;
	if (planned.job_uid >= SBX_IDS_RANGE || planned.job_gid >= SBX_IDS_RANGE)
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "local.job_uid %u / local.job_gid %u is out of range; use ids "
				     "below %u",
				     (unsigned) planned.job_uid, (unsigned) planned.job_gid,
				     SBX_IDS_RANGE);

	if (mode == SBX_LOCAL_MODE_AUTO)
		mode = host->euid == 0 ? SBX_LOCAL_MODE_ROOT : SBX_LOCAL_MODE_UNPRIVILEGED;
	if (mode == SBX_LOCAL_MODE_ROOT) {
		if (host->euid != 0)
			return sbx_error_set(error, SBX_ERROR_INVALID,
					     "local.mode is root but sbx runs as uid %u; run it as "
					     "root or set local.mode: unprivileged",
					     (unsigned) host->euid);
		rc = plan_root(config, &planned, error);
	} else {
		rc = plan_subid(config, host, &planned, error);
	}
	if (rc < 0)
		return -1;
	*map = planned;
	return 0;
}

const char *sbx_ids_mode_name(enum sbx_ids_mode mode)
{
	switch (mode) {
	case SBX_IDS_ROOT:
		return "root";
	case SBX_IDS_SUBID:
		return "unprivileged";
	case SBX_IDS_RUNNER:
		return "runner-uid";
	}
	return "unknown";
}

/* Writes TEXT to /proc/PID/NAME without allocating. */
static int write_proc_file(pid_t pid, const char *name, const char *text, char *message,
			   size_t message_size)
{
	char path[64];
	int fd;
	ssize_t n;
	size_t length = strlen(text);

	snprintf(path, sizeof(path), "/proc/%d/%s", (int) pid, name);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0) {
		snprintf(message, message_size, "cannot open %s: %s", path, strerror(errno));
		return -1;
	}
	n = write(fd, text, length);
	if (n < 0 || (size_t) n != length) {
		snprintf(message, message_size, "cannot write %s: %s", path,
			 n < 0 ? strerror(errno) : "short write");
		close(fd);
		return -1;
	}
	close(fd);
	return 0;
}

/* Runs HELPER PID inside outside count ... (newuidmap's argument form) and waits for it. */
static int run_map_helper(const char *helper, pid_t pid, const struct sbx_id_range *ranges,
			  size_t count, char *message, size_t message_size)
{
	char numbers[1 + 3 * SBX_IDS_MAX_LINES][16];
	char *argv[2 + 3 * SBX_IDS_MAX_LINES + 1];
	char *const envp[] = { NULL };
	size_t argc = 0;
	pid_t child;
	int status;

	argv[argc++] = (char *) helper;
	snprintf(numbers[0], sizeof(numbers[0]), "%d", (int) pid);
	argv[argc++] = numbers[0];
	for (size_t i = 0; i < count; i++) {
		snprintf(numbers[1 + 3 * i], 16, "%" PRIu32, ranges[i].inside);
		snprintf(numbers[2 + 3 * i], 16, "%" PRIu32, ranges[i].outside);
		snprintf(numbers[3 + 3 * i], 16, "%" PRIu32, ranges[i].count);
		argv[argc++] = numbers[1 + 3 * i];
		argv[argc++] = numbers[2 + 3 * i];
		argv[argc++] = numbers[3 + 3 * i];
	}
	argv[argc] = NULL;

	child = fork();
	if (child < 0) {
		snprintf(message, message_size, "cannot start %s: %s", helper, strerror(errno));
		return -1;
	}
	if (child == 0) {
		int null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);

		/* The helper's own messages must not reach the runner's pipes. */
		if (null_fd >= 0) {
			dup2(null_fd, STDIN_FILENO);
			dup2(null_fd, STDOUT_FILENO);
		}
		execve(helper, argv, envp);
		_exit(127);
	}
	while (waitpid(child, &status, 0) < 0) {
		if (errno != EINTR) {
			snprintf(message, message_size, "cannot wait for %s: %s", helper,
				 strerror(errno));
			return -1;
		}
	}
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		snprintf(message, message_size,
			 "%s %d failed (status %d); check the ranges in /etc/subuid and "
			 "/etc/subgid and that %s is setuid root",
			 helper, (int) pid, status, helper);
		return -1;
	}
	return 0;
}

int sbx_ids_apply(const struct sbx_id_map *map, pid_t pid, char *message, size_t message_size)
{
	char text[256];

	switch (map->mode) {
	case SBX_IDS_SUBID:
		if (run_map_helper(map->newuidmap, pid, map->uid, map->uid_count, message,
				   message_size) < 0)
			return -1;
		return run_map_helper(map->newgidmap, pid, map->gid, map->gid_count, message,
				      message_size);
	case SBX_IDS_RUNNER:
		/* An unprivileged writer must deny setgroups before it may write gid_map. */
		if (write_proc_file(pid, "setgroups", "deny", message, message_size) < 0)
			return -1;
		/* fall through */
	case SBX_IDS_ROOT:
		if (sbx_ids_format(map->uid, map->uid_count, text, sizeof(text)) < 0 ||
		    write_proc_file(pid, "uid_map", text, message, message_size) < 0)
			return -1;
		if (sbx_ids_format(map->gid, map->gid_count, text, sizeof(text)) < 0 ||
		    write_proc_file(pid, "gid_map", text, message, message_size) < 0)
			return -1;
		return 0;
	}
	snprintf(message, message_size, "unknown id mapping mode %d", (int) map->mode);
	return -1;
}

static struct json_object *ranges_to_json(const struct sbx_id_range *ranges, size_t count)
{
	struct json_object *array = json_object_new_array();

	for (size_t i = 0; array != NULL && i < count; i++) {
		struct json_object *line = json_object_new_array();

		json_object_array_add(line, json_object_new_int64(ranges[i].inside));
		json_object_array_add(line, json_object_new_int64(ranges[i].outside));
		json_object_array_add(line, json_object_new_int64(ranges[i].count));
		json_object_array_add(array, line);
	}
	return array;
}

struct json_object *sbx_ids_to_json(const struct sbx_id_map *map)
{
	struct json_object *object = json_object_new_object();

	if (object == NULL)
		return NULL;
	json_object_object_add(object, "mode", json_object_new_string(sbx_ids_mode_name(map->mode)));
	json_object_object_add(object, "uid_map", ranges_to_json(map->uid, map->uid_count));
	json_object_object_add(object, "gid_map", ranges_to_json(map->gid, map->gid_count));
	json_object_object_add(object, "job_uid", json_object_new_int64(map->job_uid));
	json_object_object_add(object, "job_gid", json_object_new_int64(map->job_gid));
	json_object_object_add(object, "host_uid", json_object_new_int64(map->host_uid));
	json_object_object_add(object, "host_gid", json_object_new_int64(map->host_gid));
	return object;
}

static int ranges_from_json(struct json_object *array, struct sbx_id_range *ranges,
			    size_t *count)
{
	size_t length;

	if (array == NULL || !json_object_is_type(array, json_type_array))
		return -1;
	length = json_object_array_length(array);
	if (length == 0 || length > SBX_IDS_MAX_LINES)
		return -1;
	for (size_t i = 0; i < length; i++) {
		struct json_object *line = json_object_array_get_idx(array, i);
		int64_t values[3];

		if (!json_object_is_type(line, json_type_array) ||
		    json_object_array_length(line) != 3)
			return -1;
		for (size_t k = 0; k < 3; k++) {
			values[k] = json_object_get_int64(json_object_array_get_idx(line, k));
			if (values[k] < 0 || values[k] > UINT32_MAX)
				return -1;
		}
		ranges[i] = (struct sbx_id_range){ (uint32_t) values[0], (uint32_t) values[1],
						   (uint32_t) values[2] };
	}
	*count = length;
	return 0;
}

int sbx_ids_from_json(struct json_object *object, struct sbx_id_map *map,
		      struct sbx_error *error)
{
	struct sbx_id_map parsed;
	struct json_object *value;
	const char *mode;

	memset(&parsed, 0, sizeof(parsed));
	if (!json_object_object_get_ex(object, "mode", &value))
		goto invalid;
	mode = json_object_get_string(value);
	if (strcmp(mode, "root") == 0)
		parsed.mode = SBX_IDS_ROOT;
	else if (strcmp(mode, "unprivileged") == 0)
		parsed.mode = SBX_IDS_SUBID;
	else if (strcmp(mode, "runner-uid") == 0)
		parsed.mode = SBX_IDS_RUNNER;
	else
		goto invalid;
	if (!json_object_object_get_ex(object, "uid_map", &value) ||
	    ranges_from_json(value, parsed.uid, &parsed.uid_count) < 0)
		goto invalid;
	if (!json_object_object_get_ex(object, "gid_map", &value) ||
	    ranges_from_json(value, parsed.gid, &parsed.gid_count) < 0)
		goto invalid;
	if (json_object_object_get_ex(object, "job_uid", &value))
		parsed.job_uid = (uid_t) json_object_get_int64(value);
	if (json_object_object_get_ex(object, "job_gid", &value))
		parsed.job_gid = (gid_t) json_object_get_int64(value);
	if (json_object_object_get_ex(object, "host_uid", &value))
		parsed.host_uid = (uid_t) json_object_get_int64(value);
	if (json_object_object_get_ex(object, "host_gid", &value))
		parsed.host_gid = (gid_t) json_object_get_int64(value);
	if (parsed.mode == SBX_IDS_SUBID) {
		const char *uid_helper = find_helper("newuidmap");
		const char *gid_helper = find_helper("newgidmap");

		if (uid_helper != NULL)
			snprintf(parsed.newuidmap, sizeof(parsed.newuidmap), "%s", uid_helper);
		if (gid_helper != NULL)
			snprintf(parsed.newgidmap, sizeof(parsed.newgidmap), "%s", gid_helper);
	}
	*map = parsed;
	return 0;

invalid:
	return sbx_error_set(error, SBX_ERROR_SYSTEM,
			     "journal data: invalid id map record; remove the sandbox's files by "
			     "hand");
}

/*
 * Removes PATH from a child in a fresh user namespace that maps the job's ids: the owner of a
 * user namespace holds every capability over the ids mapped in it.
 */
static int remove_in_namespace(const struct sbx_id_map *map, const char *path,
			       struct sbx_error *error)
{
	int to_child[2], to_parent[2];
	char message[256] = "";
	char byte;
	pid_t child;
	int status;

	if (pipe2(to_child, O_CLOEXEC) < 0)
		return sbx_error_errno(error, errno, "cannot remove %s", path);
	if (pipe2(to_parent, O_CLOEXEC) < 0) {
		close(to_child[0]);
		close(to_child[1]);
		return sbx_error_errno(error, errno, "cannot remove %s", path);
	}
	child = fork();
	if (child < 0) {
		int saved = errno;

		close(to_child[0]);
		close(to_child[1]);
		close(to_parent[0]);
		close(to_parent[1]);
		return sbx_error_errno(error, saved, "cannot remove %s", path);
	}
	if (child == 0) {
		close(to_child[1]);
		close(to_parent[0]);
		if (unshare(CLONE_NEWUSER) < 0)
			_exit(2);
		if (write(to_parent[1], "u", 1) != 1)
			_exit(3);
		/* The parent writes the maps, then lets this process go on. */
		if (read(to_child[0], &byte, 1) != 1)
			_exit(3);
		_exit(sbx_remove_tree(path) < 0 ? 1 : 0);
	}

	close(to_child[0]);
	close(to_parent[1]);
	if (read(to_parent[0], &byte, 1) == 1 &&
	    sbx_ids_apply(map, child, message, sizeof(message)) == 0)
		(void) !write(to_child[1], "g", 1);
	close(to_child[1]);
	close(to_parent[0]);
	while (waitpid(child, &status, 0) < 0 && errno == EINTR)
		;
	if (message[0] != '\0')
		return sbx_error_set(error, SBX_ERROR_SYSTEM, "cannot remove %s: %s", path,
				     message);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		return sbx_error_set(error, SBX_ERROR_SYSTEM,
				     "cannot remove %s inside the job's user namespace (status %d); "
				     "remove it as root",
				     path, status);
	return 0;
}

int sbx_ids_remove_tree(const struct sbx_id_map *map, const char *path, struct sbx_error *error)
{
	if (sbx_remove_tree(path) == 0)
		return 0;
	if (map != NULL && map->mode == SBX_IDS_SUBID && (errno == EACCES || errno == EPERM))
		return remove_in_namespace(map, path, error);
	return sbx_error_errno(error, errno, "cannot remove %s", path);
}
