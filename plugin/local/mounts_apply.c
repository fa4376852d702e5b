/* SPDX-License-Identifier: MIT */
/*
 * Applying the mount plan inside the job init. Everything here runs in a freshly cloned process
 * and sticks to system calls and fixed buffers.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "mounts.h"

/* Device nodes a job gets: the list bubblewrap and most container runtimes use. */
static const char *const device_nodes[] = { "null", "zero", "full", "random", "urandom", "tty",
					    NULL };

/* procfs entries that would let uid 0 of the job's namespace change the host. */
static const char *const proc_read_only[] = { "/proc/sys", "/proc/sysrq-trigger", "/proc/irq",
					      "/proc/bus", NULL };

static int failed(char *message, size_t size, const char *format, ...)
	__attribute__((format(printf, 3, 4)));

static int failed(char *message, size_t size, const char *format, ...)
{
	int saved = errno;
	size_t used;
	va_list args;

	va_start(args, format);
	vsnprintf(message, size, format, args);
	va_end(args);
	used = strlen(message);
	if (saved != 0)
		snprintf(message + used, size - used, ": %s", strerror(saved));
	errno = saved;
	return -1;
}

/* Re-mounts every mount below PATH with FLAGS added, keeping the flags the kernel locked. */
static int remount_tree_fallback(const char *path, unsigned long flags)
{
	static char mountinfo[1 << 18];
	size_t prefix_length = strlen(path);
	ssize_t total = 0, n;
	int fd = open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -1;
	while ((n = read(fd, mountinfo + total, sizeof(mountinfo) - 1 - (size_t) total)) > 0)
		total += n;
	close(fd);
	mountinfo[total] = '\0';

	for (char *line = mountinfo; line != NULL && *line != '\0';) {
		char *next = strchr(line, '\n');
		char point[PATH_MAX], *field = line;
		size_t out = 0;
		struct statvfs st;

		if (next != NULL)
			*next++ = '\0';
		/* The mount point is the fifth field; spaces in it are escaped as \040. */
		for (int i = 0; i < 4 && field != NULL; i++) {
			field = strchr(field, ' ');
			if (field != NULL)
				field++;
		}
		for (char *p = field; p != NULL && *p != '\0' && *p != ' ' &&
				      out < sizeof(point) - 1;
		     p++) {
			if (p[0] == '\\' && p[1] >= '0' && p[1] <= '3' && p[2] != '\0' &&
			    p[3] != '\0') {
				point[out++] = (char) (((p[1] - '0') << 6) | ((p[2] - '0') << 3) |
						       (p[3] - '0'));
				p += 3;
			} else {
				point[out++] = *p;
			}
		}
		point[out] = '\0';
		line = next;
		if (strncmp(point, path, prefix_length) != 0 ||
		    (point[prefix_length] != '\0' && point[prefix_length] != '/'))
			continue;
		if (statvfs(point, &st) < 0)
			continue;
		unsigned long current = 0;

		if (st.f_flag & ST_RDONLY)
			current |= MS_RDONLY;
		if (st.f_flag & ST_NOSUID)
			current |= MS_NOSUID;
		if (st.f_flag & ST_NODEV)
			current |= MS_NODEV;
		if (st.f_flag & ST_NOEXEC)
			current |= MS_NOEXEC;
		if (st.f_flag & ST_NOATIME)
			current |= MS_NOATIME;
		if (st.f_flag & ST_NODIRATIME)
			current |= MS_NODIRATIME;
		if (st.f_flag & ST_RELATIME)
			current |= MS_RELATIME;
		if (mount(NULL, point, NULL, MS_REMOUNT | MS_BIND | current | flags, NULL) < 0 &&
		    errno != ENOENT && errno != EACCES)
			return -1;
	}
	return 0;
}

/*
 * Adds ATTRIBUTES (MOUNT_ATTR_*) to the mount at PATH and every mount below it. A plain
 * MS_REMOUNT only changes one mount, which would leave submounts writable. Kernels without
 * mount_setattr (before 5.12) get the same result from a walk of /proc/self/mountinfo.
 */
static int restrict_tree(const char *path, uint64_t attributes)
{
	struct mount_attr attr = { .attr_set = attributes };
	unsigned long flags = 0;

	if (syscall(SYS_mount_setattr, AT_FDCWD, path, AT_RECURSIVE | AT_SYMLINK_NOFOLLOW, &attr,
		    sizeof(attr)) == 0)
		return 0;
	if (errno != ENOSYS)
		return -1;
	if (attributes & MOUNT_ATTR_RDONLY)
		flags |= MS_RDONLY;
	if (attributes & MOUNT_ATTR_NOSUID)
		flags |= MS_NOSUID;
	if (attributes & MOUNT_ATTR_NODEV)
		flags |= MS_NODEV;
	if (attributes & MOUNT_ATTR_NOEXEC)
		flags |= MS_NOEXEC;
	return remount_tree_fallback(path, flags);
}

static int make_mount_point(const char *path, int directory)
{
	int fd;

	if (directory)
		return mkdir(path, 0755) < 0 && errno != EEXIST ? -1 : 0;
	fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0444);
	if (fd < 0)
		return -1;
	close(fd);
	return 0;
}

/* Binds SOURCE onto TARGET (created on the new root's tmpfs) and restricts it. */
static int bind_restricted(const char *source, const char *target, int directory,
			   uint64_t attributes, char *message, size_t size)
{
	errno = 0;
	if (make_mount_point(target, directory) < 0)
		return failed(message, size, "cannot create mount point %s", target);
	/* Non-recursive binds of trees from the host fail in a user namespace, because they
	 * would uncover what locked submounts hide. */
	if (mount(source, target, NULL, MS_BIND | MS_REC, NULL) < 0)
		return failed(message, size, "cannot bind %s onto %s", source, target);
	if (attributes != 0 && restrict_tree(target, attributes) < 0)
		return failed(message, size, "cannot restrict mount %s", target);
	return 0;
}

static int mount_root_entries(const struct sbx_mounts_plan *plan, const char *staging,
			      char *message, size_t size)
{
	char source[PATH_MAX], target[PATH_MAX];

	for (size_t i = 0; i < plan->entry_count; i++) {
		const struct sbx_mounts_entry *entry = &plan->entries[i];

		snprintf(target, sizeof(target), "%s/%s", staging, entry->name);
		snprintf(source, sizeof(source), "/proc/self/fd/%d/%s", plan->root_fd, entry->name);
		errno = 0;
		switch (entry->kind) {
		case SBX_MOUNTS_SYMLINK:
			if (symlink(entry->link_target, target) < 0)
				return failed(message, size, "cannot create symlink %s", target);
			break;
		case SBX_MOUNTS_EMPTY_DIR:
			if (make_mount_point(target, 1) < 0)
				return failed(message, size, "cannot create %s", target);
			break;
		case SBX_MOUNTS_BIND_DIR:
		case SBX_MOUNTS_BIND_FILE:
			if (bind_restricted(source, target, entry->kind == SBX_MOUNTS_BIND_DIR,
					    MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID |
						    MOUNT_ATTR_NODEV,
					    message, size) < 0)
				return -1;
			break;
		}
	}
	return 0;
}

static int mount_dev(const struct sbx_mounts_plan *plan, const char *staging, char *message,
		     size_t size)
{
	static const char *const links[][2] = {
		{ "fd", "/proc/self/fd" },	{ "stdin", "/proc/self/fd/0" },
		{ "stdout", "/proc/self/fd/1" }, { "stderr", "/proc/self/fd/2" },
		{ "ptmx", "pts/ptmx" },
	};
	/* Half of PATH_MAX for /dev, so every name below it fits into PATH. */
	char dev[PATH_MAX / 2], path[PATH_MAX], source[64], options[64];

	snprintf(dev, sizeof(dev), "%s/dev", staging);
	errno = 0;
	if (make_mount_point(dev, 1) < 0 ||
	    mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755,size=1m") < 0)
		return failed(message, size, "cannot mount a tmpfs on /dev");
	for (size_t i = 0; device_nodes[i] != NULL; i++) {
		snprintf(path, sizeof(path), "%s/%s", dev, device_nodes[i]);
		snprintf(source, sizeof(source), "/dev/%s", device_nodes[i]);
		/* No nodev here: a user namespace cannot mknod, so the nodes are host binds. */
		if (bind_restricted(source, path, 0, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC, message,
				    size) < 0)
			return -1;
	}
	for (size_t i = 0; i < sizeof(links) / sizeof(links[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", dev, links[i][0]);
		if (symlink(links[i][1], path) < 0)
			return failed(message, size, "cannot create /dev/%s", links[i][0]);
	}
	snprintf(path, sizeof(path), "%s/pts", dev);
	if (make_mount_point(path, 1) < 0 ||
	    mount("devpts", path, "devpts", MS_NOSUID | MS_NOEXEC,
		  "newinstance,ptmxmode=0666,mode=620") < 0)
		return failed(message, size, "cannot mount devpts on /dev/pts");
	snprintf(path, sizeof(path), "%s/shm", dev);
	snprintf(options, sizeof(options), "mode=1777,size=%" PRIu64, plan->tmp_size);
	if (make_mount_point(path, 1) < 0 ||
	    mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, options) < 0)
		return failed(message, size, "cannot mount a tmpfs on /dev/shm");
	if (mount(NULL, dev, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NOEXEC,
		  NULL) < 0)
		return failed(message, size, "cannot make /dev read-only");
	return 0;
}

static int mount_writable(const struct sbx_mounts_plan *plan, const char *staging, char *message,
			  size_t size)
{
	char path[PATH_MAX], source[64], options[64];
	struct stat st;

	snprintf(path, sizeof(path), "%s/tmp", staging);
	snprintf(options, sizeof(options), "mode=1777,size=%" PRIu64, plan->tmp_size);
	errno = 0;
	if (make_mount_point(path, 1) < 0 ||
	    mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, options) < 0)
		return failed(message, size, "cannot mount a tmpfs of %" PRIu64 " bytes on /tmp",
			      plan->tmp_size);
	snprintf(path, sizeof(path), "%s/tmp/home", staging);
	if (mkdir(path, 0700) < 0 || chown(path, plan->job_uid, plan->job_gid) < 0)
		return failed(message, size, "cannot create /tmp/home");

	/* In unprivileged mode the host cannot give the directories to a subordinate id; the
	 * init, uid 0 of the job's namespace, can. In root mode they already belong to it. */
	if (fstat(plan->builds_fd, &st) == 0 && st.st_uid != plan->job_uid &&
	    fchownat(plan->builds_fd, "", plan->job_uid, plan->job_gid, AT_EMPTY_PATH) < 0)
		return failed(message, size, "cannot give the builds directory to uid %u",
			      (unsigned) plan->job_uid);
	if (fstat(plan->cache_fd, &st) == 0 && st.st_uid != plan->job_uid &&
	    fchownat(plan->cache_fd, "", plan->job_uid, plan->job_gid, AT_EMPTY_PATH) < 0)
		return failed(message, size, "cannot give the cache directory to uid %u",
			      (unsigned) plan->job_uid);

	snprintf(path, sizeof(path), "%s/builds", staging);
	snprintf(source, sizeof(source), "/proc/self/fd/%d", plan->builds_fd);
	if (bind_restricted(source, path, 1, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, message,
			    size) < 0)
		return -1;
	snprintf(path, sizeof(path), "%s/cache", staging);
	snprintf(source, sizeof(source), "/proc/self/fd/%d", plan->cache_fd);
	return bind_restricted(source, path, 1, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, message,
			       size);
}

static int mount_sbx_files(const struct sbx_mounts_plan *plan, const char *staging,
			   char *message, size_t size)
{
	char path[PATH_MAX], source[64];
	struct stat st;

	snprintf(path, sizeof(path), "%s/.sbx", staging);
	errno = 0;
	if (make_mount_point(path, 1) < 0)
		return failed(message, size, "cannot create /.sbx");
	snprintf(path, sizeof(path), "%s/.sbx/bin", staging);
	if (make_mount_point(path, 1) < 0)
		return failed(message, size, "cannot create /.sbx/bin");
	/* The empty file that masked files are covered with. */
	snprintf(path, sizeof(path), "%s/.sbx/empty", staging);
	if (make_mount_point(path, 0) < 0)
		return failed(message, size, "cannot create /.sbx/empty");
	if (plan->runner_fd >= 0) {
		snprintf(path, sizeof(path), "%s/.sbx/bin/gitlab-runner", staging);
		snprintf(source, sizeof(source), "/proc/self/fd/%d", plan->runner_fd);
		if (bind_restricted(source, path, 0, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID |
							     MOUNT_ATTR_NODEV,
				    message, size) < 0)
			return -1;
	}

	for (size_t i = 0; i < SBX_MOUNTS_ETC_FILES; i++) {
		snprintf(path, sizeof(path), "%s/etc/%s", staging, sbx_mounts_etc_names[i]);
		/* A file can only be covered where one exists: the read-only /etc cannot get new
		 * entries. A symlink (e.g. resolv.conf into /run) would lead outside /etc. */
		if (lstat(path, &st) < 0 || !S_ISREG(st.st_mode))
			continue;
		snprintf(source, sizeof(source), "/proc/self/fd/%d", plan->etc_fds[i]);
		if (mount(source, path, NULL, MS_BIND, NULL) < 0 ||
		    restrict_tree(path, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV) < 0)
			return failed(message, size, "cannot bind the generated /etc/%s",
				      sbx_mounts_etc_names[i]);
	}
	return 0;
}

/*
 * In the job init it must happen before pivot_root: the kernel refuses a procfs mount in a
 * user namespace unless a fully visible procfs is already mounted in the mount namespace, and
 * the host's goes away with the old root.
 */
int sbx_mounts_proc(const char *root, char *message, size_t size)
{
	char proc[PATH_MAX / 2], path[PATH_MAX];

	snprintf(proc, sizeof(proc), "%s/proc", root);
	errno = 0;
	if (make_mount_point(proc, 1) < 0 ||
	    mount("proc", proc, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
		return failed(message, size, "cannot mount /proc");
	for (size_t i = 0; proc_read_only[i] != NULL; i++) {
		snprintf(path, sizeof(path), "%s%s", root, proc_read_only[i]);
		if (access(path, F_OK) < 0)
			continue;
		if (mount(path, path, NULL, MS_BIND | MS_REC, NULL) < 0 ||
		    restrict_tree(path, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV |
						MOUNT_ATTR_NOEXEC) < 0)
			return failed(message, size, "cannot make %s read-only", proc_read_only[i]);
	}
	return 0;
}

static int apply_masks(const struct sbx_mounts_plan *plan, char *message, size_t size)
{
	for (size_t i = 0; i < plan->mask_count; i++) {
		const char *path = plan->masks[i];
		struct stat st;

		/* Missing paths need no mask. A symlink is left alone: its target is either
		 * masked on its own (e.g. /var/run -> /run) or not secret. */
		if (lstat(path, &st) < 0 || S_ISLNK(st.st_mode))
			continue;
		errno = 0;
		if (S_ISDIR(st.st_mode)) {
			if (mount("tmpfs", path, "tmpfs",
				  MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0755,size=4k") <
			    0)
				return failed(message, size, "cannot mask %s", path);
		} else {
			if (mount("/.sbx/empty", path, NULL, MS_BIND, NULL) < 0 ||
			    restrict_tree(path, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID |
							MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC) < 0)
				return failed(message, size, "cannot mask %s", path);
		}
	}
	return 0;
}

int sbx_mounts_apply(const struct sbx_mounts_plan *plan, const char *staging, char *message,
		     size_t size)
{
	char path[PATH_MAX];

	/* Nothing mounted here may propagate to the host: systemd makes / shared. */
	errno = 0;
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		return failed(message, size, "cannot make the mount namespace private");
	if (mount("tmpfs", staging, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m") < 0)
		return failed(message, size, "cannot mount the root tmpfs on %s", staging);

	if (mount_root_entries(plan, staging, message, size) < 0 ||
	    mount_dev(plan, staging, message, size) < 0 ||
	    mount_writable(plan, staging, message, size) < 0 ||
	    mount_sbx_files(plan, staging, message, size) < 0)
		return -1;

	snprintf(path, sizeof(path), "%s/sys", staging);
	if (bind_restricted("/sys", path, 1,
			    MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV |
				    MOUNT_ATTR_NOEXEC,
			    message, size) < 0)
		return -1;
	if (sbx_mounts_proc(staging, message, size) < 0)
		return -1;

	/* pivot_root, never chroot: a stage that joins this mount namespace later lands on the
	 * namespace's root, which after a chroot would still be the host's. */
	if (chdir(staging) < 0)
		return failed(message, size, "cannot enter %s", staging);
	if (syscall(SYS_pivot_root, ".", ".") < 0)
		return failed(message, size, "pivot_root failed");
	if (umount2(".", MNT_DETACH) < 0)
		return failed(message, size, "cannot detach the old root");
	if (chdir("/") < 0)
		return failed(message, size, "cannot enter the new root");

	if (apply_masks(plan, message, size) < 0)
		return -1;
	if (mount(NULL, "/", NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL) <
	    0)
		return failed(message, size, "cannot make the root read-only");
	return 0;
}
