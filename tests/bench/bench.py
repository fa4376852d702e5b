#!/usr/bin/python3
"""Measures sbx against baselines run on the same machine in the same run, and writes the report.

Three benchmarks, each interleaving the candidate with its baseline so that drift on a shared,
noisy machine hits both alike:

1. `sbx exec -- /bin/true` against `bwrap --unshare-all --die-with-parent --ro-bind / /
   /bin/true`: wall time per run.
2. `sbx gitlab run SCRIPT build_script` in a prepared sandbox against `bash SCRIPT`, SCRIPT being
   a runner-shaped script whose only command is `true`: the overhead per stage, and the peak
   resident set of the `sbx` process.
3. A download of a large body from an HTTP server in a network namespace this script creates:
   with curl inside `sbx exec` through the egress proxy (plain HTTP and a CONNECT tunnel)
   against the same curl run directly on the host.

Usage: bench.py [--quick] BUILD_DIR WORK_DIR REPORT
(WORK_DIR is an empty directory that run-bench.sh removes; REPORT is the Markdown file to write)
"""

import argparse
import datetime
import json
import os
import platform
import re
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                "integration"))

from harness.gitlab_runner import bash_script  # noqa: E402

import stats  # noqa: E402

MIB = 1024 * 1024
BLOB_PORT = 8080

# Targets: (limit, unit). See docs/benchmarks.md for what each one means.
TARGET_EXEC_RATIO = 1.0
TARGET_RUN_OVERHEAD_MS = 5.0
TARGET_RUN_PEAK_RSS_MIB = 8.0
TARGET_PROXY_THROUGHPUT_RATIO = 0.80


def say(text):
    sys.stderr.write("[bench] %s\n" % text)
    sys.stderr.flush()


class BenchError(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# Running and measuring commands

class Measurer:
    """Runs commands through the `measure` helper, which times fork to wait4 in C."""

    def __init__(self, measure_path):
        self.measure_path = measure_path

    def run(self, argv, env=None, peak_rss=False, stdout_path=None, expect_status=0):
        command = [self.measure_path]
        if peak_rss:
            command.append("--peak-rss")
        if stdout_path is not None:
            command += ["--stdout", stdout_path]
        command += ["--"] + list(argv)
        result = subprocess.run(command, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if result.returncode != 0:
            raise BenchError("measure %s failed (exit %d): %s"
                             % (" ".join(argv), result.returncode,
                                result.stderr.decode(errors="replace").strip()))
        fields = dict(item.split("=", 1) for item in result.stdout.decode().split())
        values = {key: int(value) for key, value in fields.items()}
        if expect_status is not None and values["status"] != expect_status:
            raise BenchError("%s exited with status %d, expected %d; its stderr:\n%s"
                             % (" ".join(argv), values["status"], expect_status,
                                result.stderr.decode(errors="replace").strip()))
        return values


def interleaved(count, first, second):
    """Run FIRST and SECOND COUNT times each, alternating which goes first in each pair."""
    results_first, results_second = [], []
    for i in range(count):
        if i % 2 == 0:
            results_first.append(first())
            results_second.append(second())
        else:
            results_second.append(second())
            results_first.append(first())
    return results_first, results_second


def command_line(argv):
    return " ".join(arg if re.fullmatch(r"[A-Za-z0-9_./:=@%+,-]+", arg)
                    else "'" + arg.replace("'", "'\\''") + "'" for arg in argv)


# ---------------------------------------------------------------------------------------------
# The machine

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


def cgroup_layout():
    """Name the cgroup layout: unified (v2 only), hybrid (v1 plus cgroup2) or legacy (v1)."""
    mounts = read_text("/proc/self/mounts").splitlines()
    by_point = {}
    for line in mounts:
        parts = line.split()
        if len(parts) >= 3:
            by_point[parts[1]] = parts[2]
    if by_point.get("/sys/fs/cgroup") == "cgroup2":
        return "unified (cgroup v2 only)"
    has_v2 = any(fstype == "cgroup2" for fstype in by_point.values())
    controllers = sorted(point.rsplit("/", 1)[1] for point, fstype in by_point.items()
                         if fstype == "cgroup" and point.startswith("/sys/fs/cgroup/"))
    if has_v2:
        return "hybrid (cgroup v1 controllers %s, plus a cgroup2 hierarchy)" % \
            ", ".join(controllers)
    return "legacy (cgroup v1 only)"


def machine_facts(build):
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
    commit = first_line(["git", "-C", os.path.dirname(os.path.abspath(__file__)),
                         "rev-parse", "--short=12", "HEAD"])
    dirty = subprocess.run(["git", "-C", os.path.dirname(os.path.abspath(__file__)),
                            "status", "--porcelain", "--untracked-files=no"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True).stdout
    return [
        ("CPU", "%s, %d cores online" % (cpu, os.cpu_count() or 0)),
        ("virtualization", virtualization),
        ("memory", "%.1f GiB" % (memory_kib / 1024 / 1024)),
        ("kernel", platform.release()),
        ("Debian", read_text("/etc/debian_version").strip() or "unknown"),
        ("cgroups", cgroup_layout()),
        ("sbx", "%s, commit %s%s" % (first_line([os.path.join(build, "sbx"), "--version"]),
                                     commit, " with uncommitted changes" if dirty else "")),
        ("bubblewrap", first_line(["bwrap", "--version"])),
        ("curl", " ".join(first_line(["curl", "--version"]).split()[:2])),
        ("bash", first_line(["bash", "--version"])),
    ]


# ---------------------------------------------------------------------------------------------
# The test host for the download benchmark

def pick_subnet():
    """A 10.x.42.0/29 that no route of this host covers more specifically than the default."""
    for second in range(203, 250):
        base = "10.%d.42" % second
        routes = subprocess.run(["ip", "-o", "route", "show", "to", "match", base + ".2"],
                                stdout=subprocess.PIPE, text=True).stdout
        if all(line.startswith("default") for line in routes.splitlines()):
            return base
    raise BenchError("no free 10.x.42.0/29 subnet for the benchmark's test host")


def run(argv):
    result = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if result.returncode != 0:
        raise BenchError("%s failed: %s" % (command_line(argv), result.stderr.strip()))
    return result.stdout


class TestHost:
    """A network namespace joined to this host by a veth pair, running blob_server.py."""

    def __init__(self, work_dir):
        tag = os.getpid() % 100000
        self.namespace = "sbx-bench-%d" % tag
        self.veth_host = "sbxbh%d" % tag
        self.veth_ns = "sbxbn%d" % tag
        base = pick_subnet()
        self.host_address = base + ".1"
        self.server_address = base + ".2"
        self.server = None
        # run-bench.sh removes these after a crash.
        with open(os.path.join(work_dir, "netns"), "w") as f:
            f.write("%s %s\n" % (self.namespace, self.veth_host))

    def create(self):
        run(["ip", "netns", "add", self.namespace])
        run(["ip", "link", "add", self.veth_host, "type", "veth", "peer", "name", self.veth_ns])
        run(["ip", "link", "set", self.veth_ns, "netns", self.namespace])
        run(["ip", "addr", "add", self.host_address + "/29", "dev", self.veth_host])
        run(["ip", "link", "set", self.veth_host, "up"])
        run(["ip", "-n", self.namespace, "addr", "add", self.server_address + "/29", "dev",
             self.veth_ns])
        run(["ip", "-n", self.namespace, "link", "set", self.veth_ns, "up"])
        run(["ip", "-n", self.namespace, "link", "set", "lo", "up"])

    def serve(self, size):
        server = os.path.join(os.path.dirname(os.path.abspath(__file__)), "blob_server.py")
        self.server = subprocess.Popen(
            ["ip", "netns", "exec", self.namespace, "/usr/bin/python3", server,
             "--bind", self.server_address, "--port", str(BLOB_PORT), "--size", str(size)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        line = self.server.stdout.readline()
        if line.strip() != b"ready":
            raise BenchError("blob_server.py did not start in %s" % self.namespace)

    def destroy(self):
        if self.server is not None:
            self.server.stdin.close()
            try:
                self.server.wait(10)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait()
        subprocess.run(["ip", "link", "del", self.veth_host], stderr=subprocess.DEVNULL)
        subprocess.run(["ip", "netns", "del", self.namespace], stderr=subprocess.DEVNULL)


# ---------------------------------------------------------------------------------------------
# Benchmarks

class Bench:
    def __init__(self, build, work_dir, quick):
        self.build = build
        self.work_dir = work_dir
        self.quick = quick
        self.sbx = os.path.join(build, "sbx")
        self.measure = Measurer(os.path.join(build, "bench", "measure"))
        self.state_dir = os.path.join(work_dir, "state")
        self.config_path = os.path.join(work_dir, "sbx.yaml")
        self.sections = []
        self.verdicts = []
        self.host = None

    def sbx_environ(self):
        environ = dict(os.environ)
        for key in list(environ):
            if key.startswith(("CUSTOM_ENV_", "SBX_")) or key in (
                    "BUILD_FAILURE_EXIT_CODE", "SYSTEM_FAILURE_EXIT_CODE",
                    "BUILD_EXIT_CODE_FILE", "JOB_RESPONSE_FILE"):
                del environ[key]
        environ["SBX_CONFIG"] = self.config_path
        environ["SBX_PLUGIN_DIR"] = self.build
        return environ

    def write_config(self, allow_entry):
        # Written by hand: the file must be plain YAML that sbx's own parser accepts.
        text = ("state_dir: %s\n"
                "network:\n"
                "  allow_ci_server: false\n"
                "  runner_allow: [\"%s\"]\n"
                "  user_allow: [\"%s\"]\n" % (self.state_dir, allow_entry, allow_entry))
        fd = os.open(self.config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return text

    def verdict(self, name, value_text, target_text, met):
        self.verdicts.append((name, value_text, target_text, "met" if met else "**not met**"))

    # -- 1. sbx exec against bwrap ---------------------------------------------------------

    def bench_exec(self):
        pairs = 30 if self.quick else 100
        warmup = 3
        environ = self.sbx_environ()
        sbx_argv = [self.sbx, "exec", "--", "/bin/true"]
        bwrap_argv = ["bwrap", "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/",
                      "/bin/true"]
        say("1/3 sbx exec against bwrap: %d warm-up runs, then %d interleaved pairs"
            % (warmup, pairs))
        for _ in range(warmup):
            self.measure.run(sbx_argv, env=environ)
            self.measure.run(bwrap_argv, env=environ)
        sbx_runs, bwrap_runs = interleaved(
            pairs, lambda: self.measure.run(sbx_argv, env=environ),
            lambda: self.measure.run(bwrap_argv, env=environ))
        sbx_ms = [r["wall_ns"] / 1e6 for r in sbx_runs]
        bwrap_ms = [r["wall_ns"] / 1e6 for r in bwrap_runs]
        ratio = stats.median(sbx_ms) / stats.median(bwrap_ms)
        pair_ratios = [a / b for a, b in zip(sbx_ms, bwrap_ms)]

        lines = [
            "## 1. `sbx exec -- /bin/true` against bubblewrap",
            "",
            "Each run is one process started and reaped by `tests/bench/measure` (wall time "
            "from `fork()` to `wait4()`). %d warm-up runs of each, then %d pairs; the order "
            "within a pair alternates." % (warmup, pairs),
            "",
            "```",
            "sbx:   " + command_line(["sbx"] + sbx_argv[1:]),
            "bwrap: " + command_line(bwrap_argv),
            "```",
            "",
            stats.table_header(),
            stats.table_row("`sbx exec`", sbx_ms, "ms"),
            stats.table_row("`bwrap`", bwrap_ms, "ms"),
            "",
            "Ratio of the medians, sbx / bwrap: **%.2fx**. Per-pair ratio: median %.2fx, "
            "p25-p75 %.2fx-%.2fx." % (ratio, stats.median(pair_ratios),
                                      stats.quantile(pair_ratios, 0.25),
                                      stats.quantile(pair_ratios, 0.75)),
            "",
        ]
        self.sections.append("\n".join(lines))
        self.verdict("`sbx exec -- /bin/true` wall time / bwrap's", "%.2fx" % ratio,
                     "<= %.1fx" % TARGET_EXEC_RATIO, ratio <= TARGET_EXEC_RATIO)

    # -- 2. sbx gitlab run against bash ------------------------------------------------------

    def gitlab_environ(self, temp_dir, job_env=None):
        environ = self.sbx_environ()
        environ.update({
            "TMPDIR": temp_dir,
            "BUILD_FAILURE_EXIT_CODE": "1",
            "SYSTEM_FAILURE_EXIT_CODE": "2",
            "BUILD_EXIT_CODE_FILE": os.path.join(temp_dir, "exit-code"),
            "JOB_RESPONSE_FILE": os.path.join(temp_dir, "response.json"),
            "CUSTOM_ENV_CI_JOB_ID": "4711",
            "CUSTOM_ENV_CI_PROJECT_ID": "42",
            "CUSTOM_ENV_CI_PROJECT_PATH": "bench/project",
            "CUSTOM_ENV_CI_PIPELINE_ID": "77",
            "CUSTOM_ENV_CI_COMMIT_REF_PROTECTED": "false",
            "CUSTOM_ENV_CI_JOB_TIMEOUT": "3600",
            "CUSTOM_ENV_CI_RUNNER_SHORT_TOKEN": "benchrun",
        })
        if job_env:
            environ.update(job_env)
        return environ

    def gitlab_stage(self, name, environ, extra=()):
        result = subprocess.run([self.sbx, "gitlab", name] + list(extra), env=environ,
                                cwd=environ["TMPDIR"], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if result.returncode != 0:
            raise BenchError("sbx gitlab %s failed (exit %d):\n%s%s"
                             % (name, result.returncode,
                                result.stdout.decode(errors="replace"),
                                result.stderr.decode(errors="replace")))
        return result.stdout

    def bench_gitlab_run(self):
        pairs = 60 if self.quick else 200
        rss_runs = 10 if self.quick else 20
        warmup = 5
        temp_dir = os.path.join(self.work_dir, "runner-tmp")
        os.makedirs(temp_dir, mode=0o700)
        environ = self.gitlab_environ(temp_dir)
        say("2/3 sbx gitlab run against bash: config and prepare")
        config_output = self.gitlab_stage("config", environ)
        try:
            job_env = json.loads(config_output).get("job_env") or {}
        except ValueError as error:
            raise BenchError("sbx gitlab config printed no JSON: %s" % error)
        if "SBX_SANDBOX_ID" not in job_env:
            raise BenchError("sbx gitlab config set no SBX_SANDBOX_ID in job_env")
        environ = self.gitlab_environ(temp_dir, job_env)
        try:
            started = time.monotonic()
            self.gitlab_stage("prepare", environ)
            prepare_ms = (time.monotonic() - started) * 1000

            script_dir = os.path.join(temp_dir, "script1")
            os.makedirs(script_dir, mode=0o700)
            script_path = os.path.join(script_dir, "script")
            body = (b"echo $'\\x1b[32;1m$ true\\x1b[0;m'\n"
                    b"true\n")
            with open(script_path, "wb") as f:
                f.write(bash_script(body))
            os.chmod(script_path, 0o700)

            run_argv = [self.sbx, "gitlab", "run", script_path, "build_script"]
            bash_argv = ["bash", script_path]
            say("2/3 sbx gitlab run against bash: %d warm-up runs, %d interleaved pairs, "
                "%d runs traced for the peak RSS" % (warmup, pairs, rss_runs))
            for _ in range(warmup):
                self.measure.run(run_argv, env=environ)
                self.measure.run(bash_argv, env=environ)
            run_runs, bash_runs = interleaved(
                pairs, lambda: self.measure.run(run_argv, env=environ),
                lambda: self.measure.run(bash_argv, env=environ))
            traced = [self.measure.run(run_argv, env=environ, peak_rss=True)
                      for _ in range(rss_runs)]
        finally:
            # Also after a failed prepare, which may have left part of the sandbox.
            say("2/3 cleanup of the benchmark's sandbox")
            cleanup = subprocess.run([self.sbx, "gitlab", "cleanup"], env=environ,
                                     cwd=temp_dir, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            if cleanup.returncode != 0:
                say("sbx gitlab cleanup failed (exit %d): %s"
                    % (cleanup.returncode, cleanup.stderr.decode(errors="replace")))
        leftovers = self.sandbox_leftovers()

        run_ms = [r["wall_ns"] / 1e6 for r in run_runs]
        bash_ms = [r["wall_ns"] / 1e6 for r in bash_runs]
        overhead_ms = [a - b for a, b in zip(run_ms, bash_ms)]
        overhead = stats.median(run_ms) - stats.median(bash_ms)
        hwm_mib = [r["hwm_kib"] / 1024 for r in traced]
        tree_mib = [r["tree_maxrss_kib"] / 1024 for r in run_runs]
        peak = max(hwm_mib)

        lines = [
            "## 2. `sbx gitlab run` of a trivial stage against bash",
            "",
            "A sandbox is prepared once with `sbx gitlab config` and `sbx gitlab prepare`, "
            "given the environment GitLab Runner passes (`TMPDIR`, `BUILD_FAILURE_EXIT_CODE=1`, "
            "`SYSTEM_FAILURE_EXIT_CODE=2`, `BUILD_EXIT_CODE_FILE`, `JOB_RESPONSE_FILE`, "
            "`SBX_SANDBOX_ID` from config's `job_env`, `CUSTOM_ENV_CI_*`), and removed with "
            "`sbx gitlab cleanup` at the end. Prepare took %.0f ms. The script has the shape "
            "of GitLab Runner's bash scripts (errexit, pipefail, the body in a subshell under "
            "`eval`) and its only command is `true`. Both commands get the same environment; "
            "stdout goes to `/dev/null`. %d warm-up runs of each, then %d pairs, order "
            "alternating." % (prepare_ms, warmup, pairs),
            "",
            "```",
            "sbx:  sbx gitlab run $TMPDIR/script1/script build_script",
            "bash: bash $TMPDIR/script1/script",
            "```",
            "",
            stats.table_header(),
            stats.table_row("`sbx gitlab run`", run_ms, "ms"),
            stats.table_row("`bash`", bash_ms, "ms"),
            stats.table_row("per-pair difference", overhead_ms, "ms"),
            "",
            "Overhead, difference of the medians: **%.2f ms**." % overhead,
            "",
            "Peak resident set (VmHWM) of the `sbx` process itself, read at its exit through "
            "ptrace in %d further runs (`measure --peak-rss`): median %.2f MiB, max **%.2f "
            "MiB**. The forked helper that joins the sandbox and the step's own processes are "
            "not in this figure; `wait4()`'s `ru_maxrss`, which covers the largest of `sbx` "
            "and every descendant it reaped, was median %.2f MiB, max %.2f MiB in the timed "
            "runs." % (rss_runs, stats.median(hwm_mib), peak, stats.median(tree_mib),
                       max(tree_mib)),
            "",
        ]
        if leftovers:
            lines += ["Left behind after cleanup: %s." % ", ".join(leftovers), ""]
        self.sections.append("\n".join(lines))
        self.verdict("`sbx gitlab run` overhead over bash, trivial stage",
                     "%.2f ms" % overhead, "<= %.0f ms" % TARGET_RUN_OVERHEAD_MS,
                     overhead <= TARGET_RUN_OVERHEAD_MS)
        self.verdict("peak RSS of the `sbx gitlab run` process", "%.2f MiB" % peak,
                     "<= %.0f MiB" % TARGET_RUN_PEAK_RSS_MIB, peak <= TARGET_RUN_PEAK_RSS_MIB)
        if leftovers:
            raise BenchError("sbx gitlab cleanup left %s behind" % ", ".join(leftovers))

    def sandbox_leftovers(self):
        leftovers = []
        for sub in ("sandboxes", "jobs"):
            path = os.path.join(self.state_dir, sub)
            if os.path.isdir(path) and os.listdir(path):
                leftovers += [os.path.join(sub, name) for name in os.listdir(path)]
        return leftovers

    # -- 3. downloads through the egress proxy -----------------------------------------------

    def curl_argv(self, url, tunnel=False, direct=False):
        argv = ["curl", "-sS", "--fail", "-o", "/dev/null", "-m", "120",
                "-w", "%{http_code} %{size_download} %{time_total}\\n"]
        if direct:
            argv += ["--noproxy", "*"]
        if tunnel:
            argv.append("--proxytunnel")
        return argv + [url]

    def download(self, argv, environ, size):
        result = subprocess.run(argv, env=environ, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if result.returncode != 0:
            raise BenchError("%s failed (exit %d): %s" % (command_line(argv), result.returncode,
                                                          result.stderr.strip()))
        fields = result.stdout.split()
        if len(fields) != 3 or fields[0] != "200" or int(fields[1]) != size:
            raise BenchError("%s: unexpected result %r" % (command_line(argv), result.stdout))
        return size / float(fields[2]) / MIB

    def bench_proxy(self, size):
        rounds = 4 if self.quick else 9
        url = "http://%s:%d/blob" % (self.host.server_address, BLOB_PORT)
        environ = self.sbx_environ()
        sbx_exec = [self.sbx, "exec", "--"]
        modes = [
            ("direct", "curl on the host, no proxy", self.curl_argv(url, direct=True)),
            ("http", "curl in `sbx exec`, plain HTTP through the proxy",
             sbx_exec + self.curl_argv(url)),
            ("connect", "curl in `sbx exec`, CONNECT tunnel through the proxy",
             sbx_exec + self.curl_argv(url, tunnel=True)),
        ]
        say("3/3 %d MiB downloads: 1 warm-up round, then %d rounds of %s"
            % (size // MIB, rounds, ", ".join(m[0] for m in modes)))
        for _, _, argv in modes:
            self.download(argv, environ, size)
        speeds = {name: [] for name, _, _ in modes}
        for i in range(rounds):
            # Rotate the order so that no mode always runs first or last in a round.
            order = modes[i % 3:] + modes[:i % 3]
            for name, _, argv in order:
                speeds[name].append(self.download(argv, environ, size))

        direct = speeds["direct"]
        lines = [
            "## 3. Downloads through the egress proxy",
            "",
            "A network namespace joined to the host by a veth pair runs "
            "`tests/bench/blob_server.py`, which answers every GET at %s with %d MiB from "
            "memory through `sendfile()`. The sbx configuration allows `%s/32:%d` in both "
            "allow-lists. Throughput is curl's own `size_download / time_total`, so sandbox "
            "setup is not in it. Inside the sandbox curl finds the proxy through the "
            "`http_proxy` that sbx sets; the sandbox has no other route out. One warm-up round, "
            "then %d rounds, each running the three in rotating order."
            % (url, size // MIB, self.host.server_address, BLOB_PORT, rounds),
            "",
            "```",
        ]
        for name, _, argv in modes:
            shown = ["sbx"] + argv[1:] if argv[0] == self.sbx else argv
            lines.append("%-8s %s" % (name + ":", command_line(shown)))
        lines += ["```", "", stats.table_header()]
        for name, label, _ in modes:
            lines.append(stats.table_row(label, speeds[name], "MiB/s"))
        lines.append("")
        for name, label, _ in modes[1:]:
            ratio = stats.median(speeds[name]) / stats.median(direct)
            pair = [a / b for a, b in zip(speeds[name], direct)]
            lines.append("- %s: **%.0f%%** of direct (median of per-round ratios %.0f%%, "
                         "p25-p75 %.0f%%-%.0f%%)."
                         % (label, 100 * ratio, 100 * stats.median(pair),
                            100 * stats.quantile(pair, 0.25), 100 * stats.quantile(pair, 0.75)))
            self.verdict("proxy throughput, %s" % ("plain HTTP" if name == "http" else
                                                   "CONNECT tunnel"),
                         "%.0f%% of direct" % (100 * ratio),
                         ">= %.0f%%" % (100 * TARGET_PROXY_THROUGHPUT_RATIO),
                         ratio >= TARGET_PROXY_THROUGHPUT_RATIO)
        lines.append("")
        self.sections.append("\n".join(lines))

    # -- the report --------------------------------------------------------------------------

    def report(self, path, started, finished, config_text, failures):
        facts = machine_facts(self.build)
        out = [
            "# sbx benchmarks",
            "",
            "Written by `make bench` (`tests/bench/run-bench.sh`); every run replaces this "
            "page. Each candidate is measured against a baseline in the same run, interleaved "
            "with it, because the machine is shared and noisy: compare the ratios, not the "
            "absolute times, across runs. Tables give the median, the p25-p75 spread, the "
            "minimum and maximum, and n.",
            "",
            "Run %s, %.0f s%s." % (started.strftime("%Y-%m-%d %H:%M UTC"),
                                    (finished - started).total_seconds(),
                                    " with --quick (fewer repetitions)" if self.quick else ""),
            "",
            "## Machine",
            "",
            "| | |",
            "|---|---|",
        ]
        out += ["| %s | %s |" % (key, value.replace("|", "\\|")) for key, value in facts]
        out += [
            "",
            "sbx runs as root with this configuration (`SBX_CONFIG`), the backend `local`:",
            "",
            "```yaml",
            config_text.replace(self.work_dir, "$WORK").rstrip(),
            "```",
            "",
            "## Summary",
            "",
            "| what | measured | target | |",
            "|---|---|---|---|",
        ]
        out += ["| %s | %s | %s | %s |" % v for v in self.verdicts]
        for failure in failures:
            out.append("| %s | not measured: %s | | **failed** |"
                       % (failure[0], failure[1].splitlines()[0].replace("|", "\\|")))
        out.append("")
        out += self.sections
        out += [
            "## Kubernetes (agent-sandbox backend)",
            "",
            "Not measured yet.",
            "",
        ]
        temporary = path + ".tmp"
        with open(temporary, "w") as f:
            f.write("\n".join(out))
        os.replace(temporary, path)


def main():
    parser = argparse.ArgumentParser(description="Run the sbx benchmarks.")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--download-mib", type=int, default=256,
                        help="size of the download in MiB (default 256)")
    parser.add_argument("build")
    parser.add_argument("work_dir")
    parser.add_argument("report")
    options = parser.parse_args()

    def interrupted(signum, frame):
        raise KeyboardInterrupt("signal %d" % signum)

    signal.signal(signal.SIGTERM, interrupted)

    bench = Bench(os.path.abspath(options.build), os.path.abspath(options.work_dir),
                  options.quick)
    started = datetime.datetime.now(datetime.timezone.utc)
    failures = []
    bench.host = TestHost(bench.work_dir)
    config_text = bench.write_config("%s/32:%d" % (bench.host.server_address, BLOB_PORT))
    try:
        for name, step in (("`sbx exec` against bwrap", bench.bench_exec),
                           ("`sbx gitlab run` against bash", bench.bench_gitlab_run)):
            try:
                step()
            except BenchError as error:
                say("%s failed: %s" % (name, error))
                failures.append((name, str(error)))
        try:
            bench.host.create()
            bench.host.serve(options.download_mib * MIB)
            bench.bench_proxy(options.download_mib * MIB)
        except BenchError as error:
            say("the proxy benchmark failed: %s" % error)
            failures.append(("proxy throughput", str(error)))
    finally:
        bench.host.destroy()
    finished = datetime.datetime.now(datetime.timezone.utc)
    bench.report(options.report, started, finished, config_text, failures)
    say("wrote %s" % options.report)
    for verdict in bench.verdicts:
        say("%s: %s (target %s) %s" % (verdict[0], verdict[1], verdict[2],
                                       verdict[3].replace("*", "")))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
