"""Process helpers shared by the kubelet and exec: parent-death signal, /proc children,
exit codes."""
import ctypes
import os
import signal

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PR_SET_PDEATHSIG = 1

_libc = ctypes.CDLL(None, use_errno=True)


def die_with_parent():
    """preexec_fn: get SIGKILL when the fake server dies, so no pod outlives it."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def child_pids(pid):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as stream:
            return [int(p) for p in stream.read().split()]
    except (FileNotFoundError, ProcessLookupError, ValueError):
        return []


def kill_quietly(pid, sig):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def exit_code(returncode):
    """Map a subprocess return code to a container exit code (128 + signal when killed)."""
    if returncode is None:
        return None
    return 128 - returncode if returncode < 0 else returncode


