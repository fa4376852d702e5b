/* SPDX-License-Identifier: MIT */
/*
 * The job's seccomp filter. libseccomp compiles the rules into a classic BPF program once, in
 * the parent. The forked child only hands that program to the kernel. That step needs no
 * allocation and no lock, so it is safe even when the parent has other threads.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

/* libseccomp's header. plugin/local must stay off the include path of this file, or the
 * module's own seccomp.h would be found here instead. */
#include <seccomp.h>

#include "cleanup.h"
#include "error.h"
#include "log.h"
#include "seccomp.h"
#include "util.h"

#ifndef CLONE_NEWCGROUP
#define CLONE_NEWCGROUP 0x02000000
#endif

/* Maximum number of instructions the kernel accepts in one filter (BPF_MAXINSNS). */
#define FILTER_MAX_INSTRUCTIONS 4096

struct sbx_seccomp_filter {
	struct sock_fprog program;
};

struct denied_syscall {
	const char *name;
	int errnum;
};

/*
 * System calls the job may not make, close to what Docker's default profile blocks. Most get
 * EPERM. Calls that libc or runtimes probe get ENOSYS, which they treat as "not available".
 * glibc 2.34 and later retries clone3 as clone only on ENOSYS, so EPERM there would break
 * pthread_create() and posix_spawn(). io_uring users fall back to plain system calls too.
 * Names the installed libseccomp does not know are skipped.
 */
static const struct denied_syscall denied_syscalls[] = {
	/* Mounts and root changes. */
	{ "mount", EPERM },
	{ "umount", EPERM },
	{ "umount2", EPERM },
	{ "pivot_root", EPERM },
	{ "chroot", EPERM },
	{ "fsopen", EPERM },
	{ "fsconfig", EPERM },
	{ "fsmount", EPERM },
	{ "fspick", EPERM },
	{ "move_mount", EPERM },
	{ "open_tree", EPERM },
	{ "mount_setattr", EPERM },
	/* Namespaces. clone is filtered by flag in add_clone_rules(). */
	{ "setns", EPERM },
	{ "unshare", EPERM },
	/* clone3 passes its flags in memory, which seccomp cannot inspect. */
	{ "clone3", ENOSYS },
	/* Kernel code and kernel-wide state. */
	{ "kexec_load", EPERM },
	{ "kexec_file_load", EPERM },
	{ "init_module", EPERM },
	{ "finit_module", EPERM },
	{ "delete_module", EPERM },
	{ "bpf", EPERM },
	{ "perf_event_open", EPERM },
	{ "userfaultfd", EPERM },
	/* Keyrings are not namespaced. */
	{ "keyctl", EPERM },
	{ "add_key", EPERM },
	{ "request_key", EPERM },
	/* File handles bypass the mount namespace's view of the file system. */
	{ "open_by_handle_at", EPERM },
	{ "name_to_handle_at", EPERM },
	/* Operations submitted through an io_uring ring are not seen by seccomp. */
	{ "io_uring_setup", ENOSYS },
	{ "io_uring_enter", ENOSYS },
	{ "io_uring_register", ENOSYS },
	/* Host administration. */
	{ "swapon", EPERM },
	{ "swapoff", EPERM },
	{ "reboot", EPERM },
	{ "syslog", EPERM },
	{ "acct", EPERM },
	{ "quotactl", EPERM },
	{ "settimeofday", EPERM },
	{ "stime", EPERM },
	{ "clock_settime", EPERM },
	{ "clock_settime64", EPERM },
	{ "clock_adjtime", EPERM },
	{ "clock_adjtime64", EPERM },
	{ "adjtimex", EPERM },
	{ "iopl", EPERM },
	{ "ioperm", EPERM },
	/* Obsolete calls with a history of kernel bugs. */
	{ "vm86", EPERM },
	{ "vm86old", EPERM },
	{ "uselib", EPERM },
	{ "nfsservctl", EPERM },
	{ "_sysctl", EPERM },
	{ "lookup_dcookie", EPERM },
};

/*
 * clone() flags that create namespaces. CLONE_NEWTIME is missing on purpose: its bit (0x80)
 * lies in clone()'s exit-signal byte, so the kernel accepts it only from unshare() and clone3(),
 * both blocked whole.
 */
static const unsigned long clone_namespace_flags[] = {
	CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWUSER,
	CLONE_NEWPID, CLONE_NEWNET, CLONE_NEWCGROUP,
};

/* ioctl requests that inject input into, or control, the terminal the job was started on. */
static const unsigned long denied_ioctls[] = { TIOCSTI, TIOCLINUX };

static int add_plain_rules(scmp_filter_ctx context, struct sbx_error *error)
{
	for (size_t i = 0; i < SBX_ARRAY_SIZE(denied_syscalls); i++) {
		const struct denied_syscall *denied = &denied_syscalls[i];
		int number = seccomp_syscall_resolve_name(denied->name);
		int result;

		if (number == __NR_SCMP_ERROR) {
			sbx_debug("seccomp: libseccomp does not know the system call %s; not "
				  "filtering it",
				  denied->name);
			continue;
		}
		result = seccomp_rule_add(context, SCMP_ACT_ERRNO(denied->errnum), number, 0);
		if (result < 0)
			return sbx_error_errno(error, -result,
					       "seccomp: cannot add the rule for %s", denied->name);
	}
	return 0;
}

static int add_clone_rules(scmp_filter_ctx context, struct sbx_error *error)
{
	uint32_t native = seccomp_arch_native();
	/* s390 and s390x pass the stack first and the flags second. */
	unsigned flags_argument = native == SCMP_ARCH_S390 || native == SCMP_ARCH_S390X ? 1 : 0;

	for (size_t i = 0; i < SBX_ARRAY_SIZE(clone_namespace_flags); i++) {
		/* One deny rule per bit, matching "flags & bit == bit". The tempting single rule
		 * MASKED_EQ(all bits, 0) matches the flags of an ordinary fork and would block it. */
		struct scmp_arg_cmp compare = {
			.arg = flags_argument,
			.op = SCMP_CMP_MASKED_EQ,
			.datum_a = clone_namespace_flags[i],
			.datum_b = clone_namespace_flags[i],
		};
		int result = seccomp_rule_add(context, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1,
					      compare);

		if (result < 0)
			return sbx_error_errno(error, -result,
					       "seccomp: cannot add the clone rule for flag 0x%lx",
					       clone_namespace_flags[i]);
	}
	return 0;
}

static int add_ioctl_rules(scmp_filter_ctx context, struct sbx_error *error)
{
	for (size_t i = 0; i < SBX_ARRAY_SIZE(denied_ioctls); i++) {
		/* The kernel takes the request as an unsigned int and ignores the upper 32 bits.
		 * Comparing all 64 would let 0x100000000|TIOCSTI pass. */
		int result = seccomp_rule_add(context, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(ioctl), 1,
					      SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffUL,
						      denied_ioctls[i]));

		if (result < 0)
			return sbx_error_errno(error, -result,
					       "seccomp: cannot add the ioctl rule for request 0x%lx",
					       denied_ioctls[i]);
	}
	return 0;
}

/*
 * Address families the job may open sockets of. The network namespace covers these. Other
 * families reach what it does not cover: AF_VSOCK reaches the hypervisor and other guests of a
 * virtual machine host, and AF_BLUETOOTH, AF_ALG, AF_CAN and the rest are kernel code that CI
 * jobs do not need. Docker's default profile denies AF_VSOCK too. Denied families fail with
 * EAFNOSUPPORT, the error of a kernel built without them, which programs already handle.
 */
static bool family_allowed(unsigned long family)
{
	return family == AF_UNIX || family == AF_INET || family == AF_INET6 || family == AF_NETLINK;
}

/*
 * Denies every other family for socket() and socketpair(): one rule per family up to
 * AF_NETLINK, the largest allowed, and one for all above it. The family is an int, so the kernel
 * ignores the upper 32 bits of the register. The rule for larger families compares all 64 bits,
 * which also covers a small family with upper bits set.
 *
 * NOTE: 32-bit x86 programs that create sockets through socketcall() pass the family in memory,
 * which seccomp cannot inspect, so these rules do not reach them.
 */
static int add_socket_rules(scmp_filter_ctx context, struct sbx_error *error)
{
	static const char *const names[] = { "socket", "socketpair" };

	for (size_t n = 0; n < SBX_ARRAY_SIZE(names); n++) {
		int number = seccomp_syscall_resolve_name(names[n]);
		int result;

		if (number == __NR_SCMP_ERROR)
			continue;
		for (unsigned long family = 0; family <= AF_NETLINK; family++) {
			if (family_allowed(family))
				continue;
			result = seccomp_rule_add(context, SCMP_ACT_ERRNO(EAFNOSUPPORT), number, 1,
						  SCMP_A0(SCMP_CMP_MASKED_EQ, 0xffffffffUL, family));
			if (result < 0)
				return sbx_error_errno(error, -result,
						       "seccomp: cannot add the %s rule for address "
						       "family %lu",
						       names[n], family);
		}
		result = seccomp_rule_add(context, SCMP_ACT_ERRNO(EAFNOSUPPORT), number, 1,
					  SCMP_A0(SCMP_CMP_GT, (scmp_datum_t) AF_NETLINK));
		if (result < 0)
			return sbx_error_errno(error, -result,
					       "seccomp: cannot add the %s rule for address families "
					       "above %d",
					       names[n], AF_NETLINK);
	}
	return 0;
}

/* Compiles CONTEXT into a BPF program. libseccomp before 2.6 exports only to a descriptor. */
static int export_program(scmp_filter_ctx context, struct sock_fprog *program,
			  struct sbx_error *error)
{
	_cleanup_close_ int fd = -1;
	_cleanup_free_ struct sock_filter *instructions = NULL;
	struct stat st;
	size_t done = 0;
	int result;

	fd = memfd_create("sbx-seccomp", MFD_CLOEXEC);
	if (fd < 0)
		return sbx_error_errno(error, errno, "seccomp: cannot create a memfd for the filter");
	result = seccomp_export_bpf(context, fd);
	if (result < 0)
		return sbx_error_errno(error, -result, "seccomp: cannot compile the filter");
	if (fstat(fd, &st) < 0)
		return sbx_error_errno(error, errno, "seccomp: cannot read the compiled filter");
	if (st.st_size == 0 || st.st_size % sizeof(struct sock_filter) != 0 ||
	    (size_t) st.st_size / sizeof(struct sock_filter) > FILTER_MAX_INSTRUCTIONS)
		return sbx_error_set(error, SBX_ERROR_SYSTEM,
				     "seccomp: the compiled filter has an invalid size of %lld "
				     "bytes; the kernel accepts at most %d instructions",
				     (long long) st.st_size, FILTER_MAX_INSTRUCTIONS);

	instructions = malloc((size_t) st.st_size);
	if (instructions == NULL)
		return sbx_error_errno(error, ENOMEM, "seccomp: cannot read the compiled filter");
	while (done < (size_t) st.st_size) {
		ssize_t n = pread(fd, (char *) instructions + done, (size_t) st.st_size - done,
				  (off_t) done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return sbx_error_errno(error, n < 0 ? errno : EIO,
					       "seccomp: cannot read the compiled filter");
		done += (size_t) n;
	}

	program->len = (unsigned short) (done / sizeof(struct sock_filter));
	program->filter = steal_pointer(&instructions);
	return 0;
}

int sbx_seccomp_filter_new(struct sbx_seccomp_filter **filter, struct sbx_error *error)
{
	scmp_filter_ctx context;
	struct sbx_seccomp_filter *created;
	int result;

	context = seccomp_init(SCMP_ACT_ALLOW);
	if (context == NULL)
		return sbx_error_set(error, SBX_ERROR_SYSTEM,
				     "seccomp: cannot create a filter; check that libseccomp "
				     "supports this architecture");

	/* A filter covers only the architectures added to it. Without these, a 32-bit binary on
	 * x86_64 would hit the bad-architecture action and be killed. */
	if (seccomp_arch_native() == SCMP_ARCH_X86_64) {
		const uint32_t extra[] = { SCMP_ARCH_X86, SCMP_ARCH_X32 };

		for (size_t i = 0; i < SBX_ARRAY_SIZE(extra); i++) {
			result = seccomp_arch_add(context, extra[i]);
			if (result < 0 && result != -EEXIST) {
				seccomp_release(context);
				return sbx_error_errno(error, -result,
						       "seccomp: cannot add the %s architecture",
						       extra[i] == SCMP_ARCH_X86 ? "x86" : "x32");
			}
		}
	}

	if (add_plain_rules(context, error) < 0 || add_clone_rules(context, error) < 0 ||
	    add_ioctl_rules(context, error) < 0 || add_socket_rules(context, error) < 0) {
		seccomp_release(context);
		return -1;
	}

	created = calloc(1, sizeof(*created));
	if (created == NULL) {
		seccomp_release(context);
		return sbx_error_errno(error, ENOMEM, "seccomp: cannot create a filter");
	}
	result = export_program(context, &created->program, error);
	seccomp_release(context);
	if (result < 0) {
		free(created);
		return -1;
	}
	sbx_debug("seccomp: filter of %u instructions ready", created->program.len);
	*filter = created;
	return 0;
}

void sbx_seccomp_filter_free(struct sbx_seccomp_filter *filter)
{
	if (filter == NULL)
		return;
	free(filter->program.filter);
	free(filter);
}

int sbx_seccomp_filter_apply(struct sbx_seccomp_filter *filter)
{
	if (filter == NULL || filter->program.filter == NULL)
		return -EINVAL;
	/* Without no_new_privs the kernel requires CAP_SYS_ADMIN to load a filter. */
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return -errno;
	if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &filter->program) == 0)
		return 0;
	/* Kernels before 3.17 have no seccomp() system call, only the prctl(). */
	if (errno != ENOSYS)
		return -errno;
	if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &filter->program, 0, 0) < 0)
		return -errno;
	return 0;
}
