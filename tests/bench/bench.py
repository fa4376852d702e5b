#!/usr/bin/python3
"""Measures sbx against baselines run on the same machine in the same run, and writes the report.

Three benchmarks of the local backend, each interleaving the candidate with its baseline so
that drift on a shared, noisy machine hits both alike:

1. `sbx exec -- /bin/true` against `bwrap --unshare-all --die-with-parent --ro-bind / /
   /bin/true`: wall time per run.
2. `sbx gitlab run SCRIPT build_script` in a prepared sandbox against `bash SCRIPT`, SCRIPT being
   a runner-shaped script whose only command is `true`: the overhead per stage, and the peak
   resident set of the `sbx` process.
3. A download of a large body from an HTTP server in a network namespace this script creates:
   with curl inside `sbx exec` through the egress proxy (plain HTTP and a CONNECT tunnel)
   against the same curl run directly on the host.

Benchmarks 1 and 2 run twice: once with an idle pause before every run, as CI stages and
one-off commands arrive, and once back to back. The pause matters: moving a process into a
cgroup waits for an RCU grace period unless another move happened moments before.

The Kubernetes client's benchmarks are in bench_k8s.py and fill the report's last section.
--only local or --only k8s runs one part and keeps the other part of the existing report.

Usage: bench.py [--quick] [--download-mib N] [--only all|local|k8s] BUILD_DIR WORK_DIR REPORT
(WORK_DIR is an empty directory that run-bench.sh removes; REPORT is the Markdown file to write)
"""

import argparse
import datetime
import json
import os
import re
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                "integration"))

from harness.gitlab_runner import bash_script  # noqa: E402

import machine  # noqa: E402
from benchutil import (BenchError, Measurer, command_line, interleaved,  # noqa: E402
                       pair_ratio_text, say, wall_ms)
import stats  # noqa: E402
from testhost import BLOB_PORT, TestHost, TestHostError  # noqa: E402
from bench_k8s import SECTION_TITLE, K8sBench  # noqa: E402

MIB = 1024 * 1024

# Seconds of idle time before each run in the "after idle" series. Moving a process between
# cgroups is cheap again only within a few tens of milliseconds of the previous move, and real
# CI stages are seconds apart.
IDLE_GAP = 0.25

TARGET_EXEC_RATIO = 1.0
TARGET_RUN_OVERHEAD_MS = 5.0
TARGET_RUN_PEAK_RSS_MIB = 8.0
TARGET_PROXY_THROUGHPUT_RATIO = 0.80

# Repetitions: (full run, --quick).
REPEAT = {
    "exec_idle_pairs": (60, 15),
    "exec_burst_pairs": (100, 20),
    "run_idle_pairs": (100, 20),
    "run_burst_pairs": (200, 40),
    "run_rss": (20, 5),
    "download_rounds": (9, 3),
    "probe": (10, 4),
}


def logged_ms(runs, pattern):
    """Collect the milliseconds that sbx's own log line PATTERN reports in each run."""
    values = []
    for run in runs:
        match = re.search(pattern, run["stderr"])
        if match:
            values.append(float(match.group(1)))
    return values


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
        self.breakdown = []
        self.verdicts = []
        self.host = None

    def repeat(self, name):
        return REPEAT[name][1 if self.quick else 0]

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
        idle_pairs = self.repeat("exec_idle_pairs")
        burst_pairs = self.repeat("exec_burst_pairs")
        warmup = 3
        environ = self.sbx_environ()
        sbx_argv = [self.sbx, "exec", "--", "/bin/true"]
        bwrap_argv = ["bwrap", "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/",
                      "/bin/true"]

        def sbx():
            return self.measure.run(sbx_argv, env=environ)

        def bwrap():
            return self.measure.run(bwrap_argv, env=environ)

        say("1/3 sbx exec against bwrap: %d pairs after %.2f s idle each, %d pairs back to back"
            % (idle_pairs, IDLE_GAP, burst_pairs))
        for _ in range(warmup):
            sbx()
            bwrap()
        sbx_idle, bwrap_idle = interleaved(idle_pairs, sbx, bwrap, gap=IDLE_GAP)
        sbx_burst, bwrap_burst = interleaved(burst_pairs, sbx, bwrap)

        sbx_idle_ms, bwrap_idle_ms = wall_ms(sbx_idle), wall_ms(bwrap_idle)
        sbx_burst_ms, bwrap_burst_ms = wall_ms(sbx_burst), wall_ms(bwrap_burst)
        ratio_idle = stats.median(sbx_idle_ms) / stats.median(bwrap_idle_ms)
        ratio_burst = stats.median(sbx_burst_ms) / stats.median(bwrap_burst_ms)

        lines = [
            "## 1. `sbx exec -- /bin/true` against bubblewrap",
            "",
            "Each run is one process started and reaped by `tests/bench/measure` (wall time "
            "from `fork()` to `wait4()`). After %d warm-up runs of each come %d pairs with "
            "%.2f s of idle time before every run, then %d pairs back to back. The order "
            "within a pair alternates." % (warmup, idle_pairs, IDLE_GAP, burst_pairs),
            "",
            "```",
            "sbx:   " + command_line(["sbx"] + sbx_argv[1:]),
            "bwrap: " + command_line(bwrap_argv),
            "```",
            "",
            stats.table_header(),
            stats.table_row("`sbx exec`, after idle", sbx_idle_ms, "ms"),
            stats.table_row("`bwrap`, after idle", bwrap_idle_ms, "ms"),
            stats.table_row("`sbx exec`, back to back", sbx_burst_ms, "ms"),
            stats.table_row("`bwrap`, back to back", bwrap_burst_ms, "ms"),
            "",
            "Ratio of the medians, sbx / bwrap: **%.2fx** after idle (per pair: %s), %.2fx "
            "back to back (per pair: %s)."
            % (ratio_idle, pair_ratio_text(sbx_idle_ms, bwrap_idle_ms), ratio_burst,
               pair_ratio_text(sbx_burst_ms, bwrap_burst_ms)),
            "",
        ]
        self.sections.append("\n".join(lines))
        self.verdict("`sbx exec -- /bin/true` wall time / bwrap's, after idle",
                     "%.2fx" % ratio_idle, "<= %.1fx" % TARGET_EXEC_RATIO,
                     ratio_idle <= TARGET_EXEC_RATIO)
        self.verdict("the same, back to back", "%.2fx" % ratio_burst,
                     "<= %.1fx" % TARGET_EXEC_RATIO, ratio_burst <= TARGET_EXEC_RATIO)

        self.exec_breakdown(sbx_idle, environ, sbx_argv)

    def exec_breakdown(self, runs, environ, sbx_argv):
        total = stats.median(wall_ms(runs))
        ready = logged_ms(runs, r"ready in (\d+) ms")
        destroyed = logged_ms(runs, r"destroyed in (\d+) ms")
        rows = ["| | median |", "|---|---|", "| `sbx exec -- /bin/true`, after idle | %.1f ms |"
                % total]
        if len(ready) == len(runs) and len(destroyed) == len(runs):
            rest = total - stats.median(ready) - stats.median(destroyed)
            rows += [
                "| sandbox creation (sbx's own \"ready in\" log line) | %.1f ms |"
                % stats.median(ready),
                "| sandbox removal (sbx's \"destroyed in\" log line) | %.1f ms |"
                % stats.median(destroyed),
                "| the rest: starting `sbx`, loading the plugin and configuration, running "
                "`/bin/true` in the sandbox | %.1f ms |" % rest,
            ]
        census = machine.syscall_census(sbx_argv, environ,
                                        os.path.join(self.work_dir, "census.trace"))
        self.breakdown.append(("sbx exec", rows, census))

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

    def gitlab_stage(self, name, environ):
        result = subprocess.run([self.sbx, "gitlab", name], env=environ,
                                cwd=environ["TMPDIR"], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if result.returncode != 0:
            raise BenchError("sbx gitlab %s failed (exit %d):\n%s%s"
                             % (name, result.returncode,
                                result.stdout.decode(errors="replace"),
                                result.stderr.decode(errors="replace")))
        return result.stdout

    def write_runner_script(self, temp_dir):
        """Write a script shaped like GitLab Runner's bash scripts whose only command is
        `true`, where the runner puts it: <TMPDIR>/script<digits>/script."""
        script_dir = os.path.join(temp_dir, "script1")
        os.makedirs(script_dir, mode=0o700)
        script_path = os.path.join(script_dir, "script")
        body = (b"echo $'\\x1b[32;1m$ true\\x1b[0;m'\n"
                b"true\n")
        fd = os.open(script_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o700)
        with os.fdopen(fd, "wb") as f:
            f.write(bash_script(body))
        return script_path

    def bench_gitlab_run(self):
        temp_dir = os.path.join(self.work_dir, "runner-tmp")
        os.makedirs(temp_dir, mode=0o700)
        environ = self.gitlab_environ(temp_dir)

        say("2/3 sbx gitlab run against bash: config and prepare")
        config_output = self.gitlab_stage("config", environ)
        try:
            job_env = json.loads(config_output).get("job_env") or {}
        except ValueError as error:
            raise BenchError("sbx gitlab config output is not JSON: %s" % error)
        if "SBX_SANDBOX_ID" not in job_env:
            raise BenchError("sbx gitlab config set no SBX_SANDBOX_ID in job_env")

        environ = self.gitlab_environ(temp_dir, job_env)
        try:
            started = time.monotonic()
            self.gitlab_stage("prepare", environ)
            prepare_ms = (time.monotonic() - started) * 1000
            script_path = self.write_runner_script(temp_dir)
            results = self.measure_gitlab_run(environ, script_path)
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
        self.report_gitlab_run(prepare_ms, results, leftovers)
        if leftovers:
            raise BenchError("sbx gitlab cleanup left %s behind" % ", ".join(leftovers))

    def measure_gitlab_run(self, environ, script_path):
        idle_pairs = self.repeat("run_idle_pairs")
        burst_pairs = self.repeat("run_burst_pairs")
        rss_runs = self.repeat("run_rss")
        warmup = 5
        run_argv = [self.sbx, "gitlab", "run", script_path, "build_script"]
        bash_argv = ["bash", script_path]

        def sbx():
            return self.measure.run(run_argv, env=environ)

        def bash():
            return self.measure.run(bash_argv, env=environ)

        say("2/3 sbx gitlab run against bash: %d pairs after %.2f s idle each, %d pairs back "
            "to back, %d runs traced for the peak RSS"
            % (idle_pairs, IDLE_GAP, burst_pairs, rss_runs))
        for _ in range(warmup):
            sbx()
            bash()
        run_idle, bash_idle = interleaved(idle_pairs, sbx, bash, gap=IDLE_GAP)
        run_burst, bash_burst = interleaved(burst_pairs, sbx, bash)
        traced = [self.measure.run(run_argv, env=environ, peak_rss=True)
                  for _ in range(rss_runs)]
        census = machine.syscall_census(run_argv, environ,
                                        os.path.join(self.work_dir, "census.trace"))
        return {"run_idle": run_idle, "bash_idle": bash_idle, "run_burst": run_burst,
                "bash_burst": bash_burst, "traced": traced, "census": census,
                "warmup": warmup}

    def report_gitlab_run(self, prepare_ms, results, leftovers):
        run_idle_ms, bash_idle_ms = wall_ms(results["run_idle"]), wall_ms(results["bash_idle"])
        run_burst_ms = wall_ms(results["run_burst"])
        bash_burst_ms = wall_ms(results["bash_burst"])
        overhead_idle = stats.median(run_idle_ms) - stats.median(bash_idle_ms)
        overhead_burst = stats.median(run_burst_ms) - stats.median(bash_burst_ms)
        hwm_mib = [r["hwm_kib"] / 1024 for r in results["traced"]]
        tree_mib = [r["tree_maxrss_kib"] / 1024 for r in results["run_idle"]]
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
            "stdout goes to `/dev/null`. After %d warm-up runs of each come %d pairs with "
            "%.2f s of idle time before every run, then %d pairs back to back, the order "
            "alternating within each pair."
            % (prepare_ms, results["warmup"], len(run_idle_ms), IDLE_GAP, len(run_burst_ms)),
            "",
            "```",
            "sbx:  sbx gitlab run $TMPDIR/script1/script build_script",
            "bash: bash $TMPDIR/script1/script",
            "```",
            "",
            stats.table_header(),
            stats.table_row("`sbx gitlab run`, after idle", run_idle_ms, "ms"),
            stats.table_row("`bash`, after idle", bash_idle_ms, "ms"),
            stats.table_row("per-pair difference, after idle",
                            [a - b for a, b in zip(run_idle_ms, bash_idle_ms)], "ms"),
            stats.table_row("`sbx gitlab run`, back to back", run_burst_ms, "ms"),
            stats.table_row("`bash`, back to back", bash_burst_ms, "ms"),
            stats.table_row("per-pair difference, back to back",
                            [a - b for a, b in zip(run_burst_ms, bash_burst_ms)], "ms"),
            "",
            "Overhead, difference of the medians: **%.2f ms** after idle, %.2f ms back to back."
            % (overhead_idle, overhead_burst),
            "",
            "Peak resident set (VmHWM) of the `sbx` process itself, read at its exit through "
            "ptrace in %d further runs (`measure --peak-rss`): median %.2f MiB, max **%.2f "
            "MiB**. The forked helper that joins the sandbox and the step's own processes are "
            "not in this figure. `wait4()`'s `ru_maxrss`, which covers the largest of `sbx` "
            "and every descendant it reaped, was median %.2f MiB, max %.2f MiB in the runs "
            "after idle." % (len(hwm_mib), stats.median(hwm_mib), peak, stats.median(tree_mib),
                             max(tree_mib)),
            "",
        ]
        if leftovers:
            lines += ["Left behind after cleanup: %s." % ", ".join(leftovers), ""]
        self.sections.append("\n".join(lines))
        self.verdict("`sbx gitlab run` overhead over bash, trivial stage, after idle",
                     "%.2f ms" % overhead_idle, "<= %.0f ms" % TARGET_RUN_OVERHEAD_MS,
                     overhead_idle <= TARGET_RUN_OVERHEAD_MS)
        self.verdict("the same, back to back", "%.2f ms" % overhead_burst,
                     "<= %.0f ms" % TARGET_RUN_OVERHEAD_MS,
                     overhead_burst <= TARGET_RUN_OVERHEAD_MS)
        self.verdict("peak RSS of the `sbx gitlab run` process", "%.2f MiB" % peak,
                     "<= %.0f MiB" % TARGET_RUN_PEAK_RSS_MIB, peak <= TARGET_RUN_PEAK_RSS_MIB)
        rows = ["| | median |", "|---|---|",
                "| `sbx gitlab run`, after idle | %.1f ms |" % stats.median(run_idle_ms),
                "| `bash` running the same script, after idle | %.1f ms |"
                % stats.median(bash_idle_ms)]
        self.breakdown.append(("sbx gitlab run", rows, results["census"]))

    def sandbox_leftovers(self):
        leftovers = []
        for sub in ("sandboxes", "jobs"):
            path = os.path.join(self.state_dir, sub)
            if os.path.isdir(path):
                leftovers += [os.path.join(sub, name) for name in os.listdir(path)]
        return leftovers

    # -- where the time goes -----------------------------------------------------------------

    def section_breakdown(self):
        count = self.repeat("probe")
        say("host probes: cgroup migration and fsync costs")
        migration = machine.probe_cgroup_migration(IDLE_GAP, count)
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        fsync_ms = machine.probe_fsync(self.state_dir, 2 * count)

        lines = [
            "## Where the time of sbx goes",
            "",
            "Two host costs that sbx pays and bwrap and bash do not, measured here:",
            "",
            stats.table_header(),
        ]
        if migration is not None:
            lines += [
                stats.table_row("moving a process into a cgroup (a write to `cgroup.procs`), "
                                "after %.2f s idle" % IDLE_GAP, migration[0], "ms"),
                stats.table_row("the same, right after another move", migration[1], "ms"),
            ]
        lines += [
            stats.table_row("replacing a small file in the state directory (write, fsync, "
                            "rename)", fsync_ms, "ms"),
            "",
            "A write to `cgroup.procs` takes the kernel's cgroup_threadgroup_rwsem for "
            "writing, which waits for an RCU grace period unless a writer released it moments "
            "before. Hence the gap between the runs after idle and the runs back to back. "
            "Since Linux 6.0 the cgroup2 mount option `favordynmods` trades this wait for "
            "slower forks and exits. `CONFIG_CGROUP_FAVOR_DYNMODS` and the boot option "
            "`cgroup_favordynmods=1` do the same, and the boot option also covers cgroup v1. "
            "A process created in its cgroup2 cgroup with `clone3(CLONE_INTO_CGROUP)` needs "
            "no write at all, but each cgroup v1 hierarchy still needs one.",
            "",
        ]
        for name, rows, census in self.breakdown:
            lines += ["`%s`:" % name, ""] + rows + [""]
            if census is not None:
                lines += [
                    "Counted with strace in one more run of `%s` (all its processes): %d "
                    "writes of a pid to `cgroup.procs`, %d `fsync` calls, %d `mount` and "
                    "`mount_setattr` calls, %d processes forked."
                    % (name, census["cgroup.procs"], census["fsync"], census["mount"],
                       census["process"]),
                    "",
                ]
        self.sections.append("\n".join(lines))

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
        """Run one download; return (MiB/s from curl's own timing, CPU seconds of ARGV)."""
        output_path = os.path.join(self.work_dir, "curl.out")
        values = self.measure.run(argv, env=environ, stdout_path=output_path)
        with open(output_path) as f:
            fields = f.read().split()
        if len(fields) != 3 or fields[0] != "200" or int(fields[1]) != size:
            raise BenchError("%s: unexpected result %r" % (command_line(argv), fields))
        return size / float(fields[2]) / MIB, values["cpu_us"] / 1e6

    def bench_proxy(self, size):
        rounds = self.repeat("download_rounds")
        url = self.host.url()
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
        cpu = {name: [] for name, _, _ in modes}
        for i in range(rounds):
            # Rotate the order so that no mode always runs first or last in a round.
            order = modes[i % 3:] + modes[:i % 3]
            for name, _, argv in order:
                speed, cpu_seconds = self.download(argv, environ, size)
                speeds[name].append(speed)
                cpu[name].append(cpu_seconds * 1000)

        direct = speeds["direct"]
        lines = [
            "## 3. Downloads through the egress proxy",
            "",
            "A network namespace joined to the host by a veth pair runs "
            "`tests/bench/blob_server.py`, which answers every GET at %s with %d MiB from "
            "memory through `sendfile()`. The sbx configuration allows `%s/32:%d` in both "
            "allow-lists. Throughput is curl's own `size_download / time_total`, so sandbox "
            "setup is not in it. Inside the sandbox curl finds the proxy through the "
            "`http_proxy` that sbx sets, and the sandbox has no other route out. One warm-up "
            "round, then %d rounds, each running the three in rotating order."
            % (url, size // MIB, self.host.server_address, BLOB_PORT, rounds),
            "",
            "```",
        ]
        for name, _, argv in modes:
            displayed = ["sbx"] + argv[1:] if argv[0] == self.sbx else argv
            lines.append("%-8s %s" % (name + ":", command_line(displayed)))
        lines += ["```", "", stats.table_header()]
        for name, label, _ in modes:
            lines.append(stats.table_row(label, speeds[name], "MiB/s"))
        lines.append("")
        for name, label, _ in modes[1:]:
            ratio = stats.median(speeds[name]) / stats.median(direct)
            lines.append("- %s: **%.0f%%** of direct (per round: %s)."
                         % (label, 100 * ratio, pair_ratio_text(speeds[name], direct)))
            self.verdict("proxy throughput, %s" % ("plain HTTP" if name == "http" else
                                                   "CONNECT tunnel"),
                         "%.0f%% of direct" % (100 * ratio),
                         ">= %.0f%%" % (100 * TARGET_PROXY_THROUGHPUT_RATIO),
                         ratio >= TARGET_PROXY_THROUGHPUT_RATIO)
        lines += [
            "",
            "CPU time (user + system) of each command and its children, per download; for "
            "`sbx exec` that is curl, the sandbox's setup and removal, and the proxy thread "
            "that relays every byte. The server's CPU time is not included.",
            "",
            stats.table_header(),
        ]
        for name, label, _ in modes:
            lines.append(stats.table_row(label, cpu[name], "ms"))
        lines.append("")
        self.sections.append("\n".join(lines))

    # -- the report --------------------------------------------------------------------------

    def report(self, started, finished, config_text, failures):
        """Return the page down to the Kubernetes section, which bench_k8s.py writes."""
        facts = machine.facts(self.build, os.path.dirname(os.path.abspath(__file__)))
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
                                    " with BENCH_QUICK=1 (fewer repetitions)"
                                    if self.quick else ""),
            "",
            "## Machine",
            "",
            "| | |",
            "|---|---|",
        ]
        out += ["| %s | %s |" % (key, value.replace("|", "\\|")) for key, value in facts]
        out += [
            "",
            "sbx runs as root with this configuration (`SBX_CONFIG`) and the backend `local`:",
            "",
            "```yaml",
            config_text.replace(self.work_dir, "$WORK").rstrip(),
            "```",
            "",
            "## Summary",
            "",
            "The local backend's targets; the Kubernetes section at the end has its own "
            "summary, because `BENCH_ONLY=k8s` reruns that section alone.",
            "",
            "| what | measured | target | |",
            "|---|---|---|---|",
        ]
        out += ["| %s | %s | %s | %s |" % v for v in self.verdicts]
        for name, message in failures:
            out.append("| %s | not measured: %s | | **failed** |"
                       % (name, message.splitlines()[0].replace("|", "\\|")))
        out.append("")
        out += self.sections
        return "\n".join(out)


def split_page(path):
    """Return the page at PATH as (the part before the Kubernetes section, that section), with
    empty strings for what it lacks."""
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return "", ""
    marker = "\n" + SECTION_TITLE + "\n"
    if marker not in text:
        return text, ""
    head, tail = text.split(marker, 1)
    return head + "\n", SECTION_TITLE + "\n" + tail


def write_page(path, text):
    temporary = path + ".tmp"
    with open(temporary, "w") as f:
        f.write(text)
    os.replace(temporary, path)


def commit_text(source_dir):
    commit = machine.first_line(["git", "-C", source_dir, "rev-parse", "--short=12", "HEAD"])
    dirty = subprocess.run(["git", "-C", source_dir, "status", "--porcelain",
                            "--untracked-files=no"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True).stdout
    return "commit %s%s" % (commit, " with uncommitted changes" if dirty else "")


def run_local(bench, options):
    """Run the local backend's benchmarks; returns (config text, failures)."""
    failures = []
    bench.host = TestHost(bench.work_dir)
    config_text = bench.write_config("%s/32:%d" % (bench.host.server_address, BLOB_PORT))
    try:
        for name, step in (("`sbx exec` against bwrap", bench.bench_exec),
                           ("`sbx gitlab run` against bash", bench.bench_gitlab_run)):
            try:
                step()
            except (BenchError, OSError) as error:
                say("%s failed: %s" % (name, error))
                failures.append((name, str(error)))
        try:
            bench.host.create()
            bench.host.serve(options.download_mib * MIB)
            bench.bench_proxy(options.download_mib * MIB)
        except (BenchError, TestHostError, OSError) as error:
            say("the proxy benchmark failed: %s" % error)
            failures.append(("proxy throughput", str(error)))
    finally:
        bench.host.destroy()
    try:
        bench.section_breakdown()
    except OSError as error:
        say("the host probes failed: %s" % error)
        failures.append(("host probes", str(error)))
    return config_text, failures


def main():
    parser = argparse.ArgumentParser(description="Run the sbx benchmarks.")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--download-mib", type=int, default=256,
                        help="size of the download in MiB (default 256)")
    parser.add_argument("--only", choices=("all", "local", "k8s"), default="all",
                        help="run only the local backend's or only the Kubernetes "
                             "benchmarks and keep the other part of the report (default all)")
    parser.add_argument("build")
    parser.add_argument("work_dir")
    parser.add_argument("report")
    options = parser.parse_args()

    def interrupted(signum, frame):
        raise KeyboardInterrupt("signal %d" % signum)

    signal.signal(signal.SIGTERM, interrupted)

    bench = Bench(os.path.abspath(options.build), os.path.abspath(options.work_dir),
                  options.quick)
    source_dir = os.path.dirname(os.path.abspath(__file__))
    old_head, old_k8s = split_page(options.report)
    failures = []
    verdicts = []

    head = old_head
    if options.only in ("all", "local"):
        started = datetime.datetime.now(datetime.timezone.utc)
        config_text, local_failures = run_local(bench, options)
        failures += local_failures
        head = bench.report(started, datetime.datetime.now(datetime.timezone.utc),
                            config_text, local_failures)
        verdicts += bench.verdicts

    k8s_text = old_k8s or SECTION_TITLE + "\n\nNot measured yet.\n"
    if options.only in ("all", "k8s"):
        started = datetime.datetime.now(datetime.timezone.utc)
        k8s = K8sBench(bench.build, bench.work_dir, bench.measure, options.quick)
        k8s_failures = k8s.run()
        failures += k8s_failures
        k8s_text = k8s.section(started, datetime.datetime.now(datetime.timezone.utc),
                               commit_text(source_dir), k8s_failures)
        verdicts += k8s.verdicts
    if not head:
        head = "# sbx benchmarks\n\nThe local backend's benchmarks have not run yet.\n\n"

    write_page(options.report, head.rstrip("\n") + "\n\n" + k8s_text.rstrip("\n") + "\n")
    say("wrote %s" % options.report)
    for verdict in verdicts:
        say("%s: %s (target %s) %s" % (verdict[0], verdict[1], verdict[2],
                                       verdict[3].replace("*", "")))
    for name, message in failures:
        say("%s: not measured: %s" % (name, message.splitlines()[0]))
    return 1 if failures else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt as interrupt:
        say("stopped by %s; what the benchmark created is removed" % interrupt)
        sys.exit(130)
