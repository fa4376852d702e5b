"""Facts about the machine for the benchmark report, and probes of host costs sbx pays."""

import os
import platform
import subprocess
import time


def read_text(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def first_line(argv):
    try:
        output = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True).stdout
    except OSError:
        return "not installed"
    return output.splitlines()[0].strip() if output else ""


def mounts_by_point():
    by_point = {}
    for line in read_text("/proc/self/mounts").splitlines():
        parts = line.split()
        if len(parts) >= 4:
            by_point[parts[1]] = (parts[2], parts[3])
    return by_point


def cgroup2_mount():
    """Return the mount point of the cgroup2 hierarchy, or None."""
    for point, (fstype, _) in mounts_by_point().items():
        if fstype == "cgroup2":
            return point
    return None


def cgroup_layout():
    """Name the cgroup layout: unified (v2 only), hybrid (v1 plus cgroup2) or legacy (v1)."""
    by_point = mounts_by_point()
    v2_point = cgroup2_mount()
    favor = ""
    if v2_point is not None:
        favor = ", cgroup2 mounted %s favordynmods" % (
            "with" if "favordynmods" in by_point[v2_point][1].split(",") else "without")
    if by_point.get("/sys/fs/cgroup", ("",))[0] == "cgroup2":
        return "unified (cgroup v2 only%s)" % favor
    controllers = sorted(point.rsplit("/", 1)[1] for point, (fstype, _) in by_point.items()
                         if fstype == "cgroup" and point.startswith("/sys/fs/cgroup/"))
    if v2_point is not None:
        return "hybrid (cgroup v1 controllers %s; cgroup2 at %s%s)" % (
            ", ".join(controllers), v2_point, favor)
    return "legacy (cgroup v1 only)"


def kernel_config(name):
    """Return the value of kernel option NAME from /boot/config-* or /proc/config.gz, or None."""
    text = read_text("/boot/config-" + platform.release())
    if not text:
        result = subprocess.run(["zcat", "/proc/config.gz"], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)
        text = result.stdout
    for line in text.splitlines():
        if line.startswith(name + "="):
            return line.split("=", 1)[1]
        if line == "# %s is not set" % name:
            return "not set"
    return None


def facts(build, source_dir):
    cpu = "unknown"
    for line in read_text("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory_kib = 0
    for line in read_text("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            memory_kib = int(line.split()[1])
    virtualization = ", ".join(
        "%s %s" % (kind, first_line(["systemd-detect-virt", "--" + kind]) or "unknown")
        for kind in ("vm", "container"))
    kernel = platform.release()
    options = ["%s=%s" % (name, kernel_config(name)) for name in
               ("CONFIG_HZ", "CONFIG_CGROUP_FAVOR_DYNMODS") if kernel_config(name) is not None]
    if options:
        kernel += " (%s)" % ", ".join(options)
    commit = first_line(["git", "-C", source_dir, "rev-parse", "--short=12", "HEAD"])
    dirty = subprocess.run(["git", "-C", source_dir, "status", "--porcelain",
                            "--untracked-files=no"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True).stdout
    return [
        ("CPU", "%s, %d cores online" % (cpu, os.cpu_count() or 0)),
        ("virtualization", virtualization),
        ("memory", "%.1f GiB" % (memory_kib / 1024 / 1024)),
        ("kernel", kernel),
        ("Debian", read_text("/etc/debian_version").strip() or "unknown"),
        ("cgroups", cgroup_layout()),
        ("sbx", "%s, commit %s%s" % (first_line([os.path.join(build, "sbx"), "--version"]),
                                     commit, " with uncommitted changes" if dirty else "")),
        ("bubblewrap", first_line(["bwrap", "--version"])),
        ("curl", " ".join(first_line(["curl", "--version"]).split()[:2])),
        ("bash", first_line(["bash", "--version"])),
    ]


def probe_cgroup_migration(idle_gap, count):
    """Time writes of a new process's pid to cgroup.procs of a fresh cgroup2 cgroup.

    Returns (after_idle_ms, back_to_back_ms), two lists of COUNT milliseconds, or None when
    there is no cgroup2 hierarchy. The first list waits IDLE_GAP seconds before each write,
    the second writes right after the previous one.
    """
    root = cgroup2_mount()
    if root is None:
        return None
    path = os.path.join(root, "sbx-bench-probe-%d" % os.getpid())
    os.mkdir(path)
    results = ([], [])
    try:
        for gap, out in ((idle_gap, results[0]), (0, results[1])):
            for _ in range(count):
                child = subprocess.Popen(["sleep", "30"])
                try:
                    time.sleep(gap)
                    started = time.perf_counter()
                    with open(os.path.join(path, "cgroup.procs"), "w") as f:
                        f.write(str(child.pid))
                    out.append((time.perf_counter() - started) * 1000)
                finally:
                    child.kill()
                    child.wait()
    finally:
        os.rmdir(path)
    return results


def probe_fsync(directory, count):
    """Time COUNT small atomic file replacements (write, fsync, rename) in DIRECTORY, in ms."""
    times = []
    path = os.path.join(directory, "fsync-probe")
    for _ in range(count):
        started = time.perf_counter()
        fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, b"x" * 512)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(path + ".tmp", path)
        times.append((time.perf_counter() - started) * 1000)
    os.unlink(path)
    return times


def syscall_census(argv, env, trace_path):
    """Count the system calls of ARGV (and its children) that decide sbx's fixed costs.

    Runs ARGV once under strace. Returns a dict of counts, or None when strace is missing.
    """
    command = ["strace", "-f", "-qq", "-o", trace_path,
               "-e", "trace=fsync,fdatasync,openat,mount,mount_setattr,clone,clone3,fork,vfork"]
    try:
        result = subprocess.run(command + list(argv), env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except FileNotFoundError:
        return None
    if result.returncode != 0:
        return None
    counts = {"fsync": 0, "cgroup.procs": 0, "mount": 0, "process": 0}
    with open(trace_path) as f:
        for line in f:
            call = line.split(None, 1)[1] if " " in line else line
            if call.startswith(("fsync(", "fdatasync(")):
                counts["fsync"] += 1
            elif call.startswith("openat(") and "/cgroup.procs\"" in call and \
                    "O_WRONLY" in call and "= -1" not in call:
                counts["cgroup.procs"] += 1
            elif call.startswith(("mount(", "mount_setattr(")):
                counts["mount"] += 1
            elif call.startswith(("clone(", "clone3(", "fork(", "vfork(")) and \
                    "CLONE_THREAD" not in call:
                counts["process"] += 1
    os.unlink(trace_path)
    return counts
