/* SPDX-License-Identifier: MIT */
/*
 * Tests the job's seccomp filter against the real kernel. A forked child loads the filter,
 * tries the system calls and reports each result (return value and errno) through a pipe.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "error.h"
#include "seccomp.h"
#include "util.h"

/* Key management constants from <linux/keyctl.h>, which may not be installed. */
#define KEYCTL_GET_KEYRING_ID 0
#define KEY_SPEC_SESSION_KEYRING -3

/* A mount target that does not exist: an unfiltered mount() fails with ENOENT, never mounts. */
#define MISSING_TARGET "/nonexistent-sbx-seccomp-test/target"

struct outcome {
	long ret;
	int err;
};

struct results {
	int applied;
	struct outcome unshare_user;
	struct outcome clone_newnet;
	struct outcome mount;
	struct outcome setns;
	struct outcome clone3;
	struct outcome keyctl;
	struct outcome bpf;
	struct outcome io_uring_setup;
	struct outcome tiocsti;
	struct outcome tiocsti_high_bits;
	struct outcome fionread;
	struct outcome socket_vsock;
	struct outcome socket_vsock_high_bits;
	struct outcome socket_bluetooth;
	struct outcome socket_packet;
	struct outcome socketpair_vsock;
	struct outcome socket_unix;
	struct outcome socket_inet;
	struct outcome socket_inet6;
	struct outcome socket_netlink;
	struct outcome socketpair_unix;
	int fork_status; /* wait status of a forked child that exits 7; -1: fork failed */
	int fork_errno;
	int thread_error; /* pthread_create() result */
	int thread_ran;
	int ptrace_status; /* exit status of a grandchild that calls PTRACE_TRACEME */
	long getpid_matches;
};

static struct outcome record(long ret)
{
	struct outcome outcome = { .ret = ret, .err = ret < 0 ? errno : 0 };

	return outcome;
}

/* Records a socket() result and closes the socket, so only the outcome is kept. */
static struct outcome record_socket(long ret)
{
	struct outcome outcome = record(ret);

	if (ret >= 0)
		close((int) ret);
	return outcome;
}

static void *thread_body(void *arg)
{
	*(int *) arg = 1;
	return NULL;
}

static void run_probes(struct results *r)
{
	int pipe_fds[2];
	int available = -1;
	int ns_fd;
	char c = 'x';
	int pair[2];
	pid_t pid;
	pthread_t thread;

	/* setns() first: after a successful unshare(CLONE_NEWUSER) it would fail for lack of
	 * capabilities in the original user namespace, with or without the filter. */
	ns_fd = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	r->setns = record(setns(ns_fd, CLONE_NEWNET));
	close(ns_fd);
	r->unshare_user = record(unshare(CLONE_NEWUSER));
	/* A raw clone with a namespace flag: the child, if any, exits at once. */
	r->clone_newnet = record(syscall(SYS_clone, CLONE_NEWNET | SIGCHLD, 0, 0, 0, 0));
	if (r->clone_newnet.ret == 0)
		_exit(0);
	if (r->clone_newnet.ret > 0)
		waitpid((pid_t) r->clone_newnet.ret, NULL, 0);
	r->mount = record(mount("none", MISSING_TARGET, "tmpfs", 0, NULL));
	r->clone3 = record(syscall(SYS_clone3, NULL, 0));
	r->keyctl = record(syscall(SYS_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0));
	r->bpf = record(syscall(SYS_bpf, 0, NULL, 0));
	r->io_uring_setup = record(syscall(SYS_io_uring_setup, 1, NULL));

	if (pipe2(pipe_fds, O_CLOEXEC) == 0) {
		r->tiocsti = record(ioctl(pipe_fds[0], TIOCSTI, &c));
		r->tiocsti_high_bits = record(syscall(SYS_ioctl, pipe_fds[0],
						      0xffffffff00000000UL | TIOCSTI, &c));
		r->fionread = record(ioctl(pipe_fds[0], FIONREAD, &available));
		close(pipe_fds[0]);
		close(pipe_fds[1]);
	}

	r->socket_vsock = record_socket(syscall(SYS_socket, AF_VSOCK, SOCK_STREAM, 0));
	r->socket_vsock_high_bits = record_socket(syscall(SYS_socket, 0x100000000L | AF_VSOCK,
							  SOCK_STREAM, 0));
	r->socket_bluetooth = record_socket(socket(AF_BLUETOOTH, SOCK_STREAM, 0));
	r->socket_packet = record_socket(socket(AF_PACKET, SOCK_RAW, 0));
	r->socketpair_vsock = record(socketpair(AF_VSOCK, SOCK_STREAM, 0, pair));
	r->socket_unix = record_socket(socket(AF_UNIX, SOCK_STREAM, 0));
	r->socket_inet = record_socket(socket(AF_INET, SOCK_DGRAM, 0));
	r->socket_inet6 = record_socket(socket(AF_INET6, SOCK_DGRAM, 0));
	r->socket_netlink = record_socket(socket(AF_NETLINK, SOCK_RAW, 0));
	r->socketpair_unix = record(socketpair(AF_UNIX, SOCK_STREAM, 0, pair));

	pid = fork();
	if (pid == 0)
		_exit(7);
	r->fork_errno = pid < 0 ? errno : 0;
	r->fork_status = -1;
	if (pid > 0)
		waitpid(pid, &r->fork_status, 0);

	r->thread_error = pthread_create(&thread, NULL, thread_body, &r->thread_ran);
	if (r->thread_error == 0)
		pthread_join(thread, NULL);

	/* In a grandchild, so that no signal to this process stops it for a tracer. */
	pid = fork();
	if (pid == 0)
		_exit(ptrace(PTRACE_TRACEME, 0, NULL, NULL) == 0 ? 0 : errno);
	r->ptrace_status = -1;
	if (pid > 0)
		waitpid(pid, &r->ptrace_status, 0);

	r->getpid_matches = syscall(SYS_getpid) == getpid();
}

/* Runs the probes in a child, with FILTER loaded first unless it is NULL. */
static void probe_child(struct sbx_seccomp_filter *filter, struct results *results)
{
	int fds[2];
	pid_t pid;
	int status;
	ssize_t n;

	memset(results, 0, sizeof(*results));
	ck_assert_int_eq(pipe2(fds, O_CLOEXEC), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		struct results r = { 0 };

		close(fds[0]);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (filter != NULL)
			r.applied = sbx_seccomp_filter_apply(filter) == 0;
		run_probes(&r);
		_exit(sbx_write_all(fds[1], &r, sizeof(r)) == 0 ? 0 : 1);
	}
	close(fds[1]);
	n = read(fds[0], results, sizeof(*results));
	close(fds[0]);
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		      "probe child ended with wait status 0x%x", status);
	ck_assert_int_eq(n, (ssize_t) sizeof(*results));
}

static struct sbx_seccomp_filter *new_filter(void)
{
	struct sbx_seccomp_filter *filter = NULL;
	struct sbx_error error = { .struct_size = sizeof(error) };

	ck_assert_msg(sbx_seccomp_filter_new(&filter, &error) == 0, "filter: %s", error.message);
	ck_assert_ptr_nonnull(filter);
	return filter;
}

START_TEST(test_filter_denies_namespaces)
{
	struct sbx_seccomp_filter *filter = new_filter();
	struct results r;

	probe_child(filter, &r);
	ck_assert_int_eq(r.applied, 1);
	ck_assert_int_eq(r.unshare_user.ret, -1);
	ck_assert_int_eq(r.unshare_user.err, EPERM);
	ck_assert_int_eq(r.clone_newnet.ret, -1);
	ck_assert_int_eq(r.clone_newnet.err, EPERM);
	ck_assert_int_eq(r.setns.ret, -1);
	ck_assert_int_eq(r.setns.err, EPERM);
	ck_assert_int_eq(r.mount.ret, -1);
	ck_assert_int_eq(r.mount.err, EPERM);
	sbx_seccomp_filter_free(filter);
}
END_TEST

START_TEST(test_filter_denies_kernel_interfaces)
{
	struct sbx_seccomp_filter *filter = new_filter();
	struct results r;

	probe_child(filter, &r);
	ck_assert_int_eq(r.keyctl.ret, -1);
	ck_assert_int_eq(r.keyctl.err, EPERM);
	ck_assert_int_eq(r.bpf.ret, -1);
	ck_assert_int_eq(r.bpf.err, EPERM);
	ck_assert_int_eq(r.io_uring_setup.ret, -1);
	ck_assert_int_eq(r.io_uring_setup.err, ENOSYS);
	ck_assert_int_eq(r.clone3.ret, -1);
	ck_assert_int_eq(r.clone3.err, ENOSYS);
	sbx_seccomp_filter_free(filter);
}
END_TEST

START_TEST(test_filter_denies_tiocsti)
{
	struct sbx_seccomp_filter *filter = new_filter();
	struct results r;

	probe_child(filter, &r);
	ck_assert_int_eq(r.tiocsti.ret, -1);
	ck_assert_int_eq(r.tiocsti.err, EPERM);
	/* The kernel ignores the upper 32 bits of the request, so the filter must too. */
	ck_assert_int_eq(r.tiocsti_high_bits.ret, -1);
	ck_assert_int_eq(r.tiocsti_high_bits.err, EPERM);
	ck_assert_int_eq(r.fionread.ret, 0);
	sbx_seccomp_filter_free(filter);
}
END_TEST

START_TEST(test_filter_denies_other_families)
{
	struct sbx_seccomp_filter *filter = new_filter();
	struct results r;

	probe_child(filter, &r);
	ck_assert_int_eq(r.socket_vsock.ret, -1);
	ck_assert_int_eq(r.socket_vsock.err, EAFNOSUPPORT);
	/* The kernel reads the family as an int, so upper bits must not get past the filter. */
	ck_assert_int_eq(r.socket_vsock_high_bits.ret, -1);
	ck_assert_int_eq(r.socket_vsock_high_bits.err, EAFNOSUPPORT);
	ck_assert_int_eq(r.socket_bluetooth.ret, -1);
	ck_assert_int_eq(r.socket_bluetooth.err, EAFNOSUPPORT);
	ck_assert_int_eq(r.socket_packet.ret, -1);
	ck_assert_int_eq(r.socket_packet.err, EAFNOSUPPORT);
	ck_assert_int_eq(r.socketpair_vsock.ret, -1);
	ck_assert_int_eq(r.socketpair_vsock.err, EAFNOSUPPORT);
	sbx_seccomp_filter_free(filter);
}
END_TEST

START_TEST(test_filter_keeps_ip_unix_netlink)
{
	struct sbx_seccomp_filter *filter = new_filter();
	struct results r;

	probe_child(filter, &r);
	ck_assert_int_ge(r.socket_unix.ret, 0);
	ck_assert_int_ge(r.socket_inet.ret, 0);
	ck_assert_int_ge(r.socket_inet6.ret, 0);
	ck_assert_int_ge(r.socket_netlink.ret, 0);
	ck_assert_int_eq(r.socketpair_unix.ret, 0);
	sbx_seccomp_filter_free(filter);
}
END_TEST

START_TEST(test_filter_keeps_fork_threads_ptrace)
{
	struct sbx_seccomp_filter *filter = new_filter();
	struct results r;

	probe_child(filter, &r);
	ck_assert_int_eq(r.fork_errno, 0);
	ck_assert(WIFEXITED(r.fork_status));
	ck_assert_int_eq(WEXITSTATUS(r.fork_status), 7);
	ck_assert_int_eq(r.thread_error, 0);
	ck_assert_int_eq(r.thread_ran, 1);
	ck_assert(WIFEXITED(r.ptrace_status));
	ck_assert_int_eq(WEXITSTATUS(r.ptrace_status), 0);
	ck_assert_int_eq(r.getpid_matches, 1);
	sbx_seccomp_filter_free(filter);
}
END_TEST

/* Without the filter the same probes get other results, so the filtered checks can fail. */
static int family_available(int family)
{
	int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return 0;
	close(fd);
	return 1;
}

START_TEST(test_probes_without_filter)
{
	struct results r;

	probe_child(NULL, &r);
	ck_assert_int_eq(r.applied, 0);
	ck_assert_int_eq(r.mount.err, ENOENT);
	ck_assert_int_ne(r.clone3.err, ENOSYS);
	ck_assert_int_ne(r.tiocsti.err, EPERM);
	ck_assert_int_ge(r.socket_unix.ret, 0);
	/* On a kernel with vsock the unfiltered probe opens it, so the filtered EAFNOSUPPORT
	 * comes from the filter. */
	if (family_available(AF_VSOCK)) {
		ck_assert_int_ge(r.socket_vsock.ret, 0);
		ck_assert_int_ge(r.socket_vsock_high_bits.ret, 0);
	} else {
		fprintf(stderr, "test_probes_without_filter: no AF_VSOCK in this kernel, vsock "
				"case not run\n");
	}
	if (geteuid() == 0) {
		ck_assert_int_eq(r.unshare_user.ret, 0);
		ck_assert_int_eq(r.setns.ret, 0);
	}
}
END_TEST

#if defined(__x86_64__)
/* Makes an i386 system call from a 64-bit process; returns the raw result (-errno on error). */
static long syscall_i386(long number, long arg1)
{
	long ret;

	__asm__ volatile("int $0x80" : "=a"(ret) : "a"(number), "b"(arg1) : "memory");
	return ret;
}

#define I386_NR_GETPID 20
#define I386_NR_UNSHARE 310

/* Runs BODY in a child and returns its wait status. */
static int run_child(int (*body)(struct sbx_seccomp_filter *), struct sbx_seccomp_filter *filter)
{
	pid_t pid = fork();
	int status;

	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		_exit(body(filter));
	}
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	return status;
}

static int probe_i386_available(struct sbx_seccomp_filter *filter)
{
	return syscall_i386(I386_NR_GETPID, 0) == getpid() ? 0 : 1;
}

static int probe_i386_filtered(struct sbx_seccomp_filter *filter)
{
	long ret;

	if (sbx_seccomp_filter_apply(filter) != 0)
		return 10;
	if (syscall_i386(I386_NR_GETPID, 0) != getpid())
		return 11;
	ret = syscall_i386(I386_NR_UNSHARE, CLONE_NEWUSER);
	if (ret != -EPERM)
		return 12;
	return 0;
}

START_TEST(test_filter_covers_i386)
{
	struct sbx_seccomp_filter *filter = new_filter();
	int status = run_child(probe_i386_available, filter);

	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		/* NOTE: a kernel without IA-32 emulation cannot run this case. */
		fprintf(stderr, "test_filter_covers_i386: no IA-32 emulation, case not run\n");
		sbx_seccomp_filter_free(filter);
		return;
	}
	status = run_child(probe_i386_filtered, filter);
	/* Without the x86 architecture in the filter the child dies of SIGSYS. */
	ck_assert_msg(WIFEXITED(status), "i386 child ended with wait status 0x%x", status);
	ck_assert_int_eq(WEXITSTATUS(status), 0);
	sbx_seccomp_filter_free(filter);
}
END_TEST
#endif

START_TEST(test_apply_null_filter)
{
	ck_assert_int_eq(sbx_seccomp_filter_apply(NULL), -EINVAL);
}
END_TEST

static Suite *seccomp_suite(void)
{
	Suite *suite = suite_create("seccomp");
	TCase *tc = tcase_create("filter");

	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_filter_denies_namespaces);
	tcase_add_test(tc, test_filter_denies_kernel_interfaces);
	tcase_add_test(tc, test_filter_denies_tiocsti);
	tcase_add_test(tc, test_filter_denies_other_families);
	tcase_add_test(tc, test_filter_keeps_ip_unix_netlink);
	tcase_add_test(tc, test_filter_keeps_fork_threads_ptrace);
	tcase_add_test(tc, test_probes_without_filter);
#if defined(__x86_64__)
	tcase_add_test(tc, test_filter_covers_i386);
#endif
	tcase_add_test(tc, test_apply_null_filter);
	suite_add_tcase(suite, tc);
	return suite;
}

int main(void)
{
	SRunner *runner = srunner_create(seccomp_suite());
	int failed;

	srunner_run_all(runner, CK_NORMAL);
	failed = srunner_ntests_failed(runner);
	srunner_free(runner);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
