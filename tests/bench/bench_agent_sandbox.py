#!/usr/bin/python3
"""Benchmarks of GitLab jobs on the agent-sandbox backend, against the fake cluster of
tests/cluster started here with --ready-delay 0 and enforced NetworkPolicies.

1. API requests per job on a warm pool hit (per-job NetworkPolicy and PDB), for jobs of 1, 2,
   4 and 8 stages. They come from the fake's request counters and request log, by verb and
   resource, with retries (responses 429 or 5xx) and repeated watches listed.
2. `sbx gitlab prepare` on a warm hit, with the enforcement probe's time taken out through
   sbx's own "checked in N ms" log line. `sbx gitlab run` of a trivial stage against the same
   script run through a plain exec of tests/tools/k8s_client_tool, interleaved. Peak RSS of
   `sbx` during prepare and run.
3. 100 concurrent jobs (config, prepare, 2 stages, cleanup each): all must succeed; jobs per
   second, prepare times, and the fake server's CPU time.

The section is a block of the report between two HTML comments, replaced on every run.
bench.py writes the rest of the page; run-bench.sh passes --keep FILE to put back the block
that bench.py dropped when this benchmark does not run.

Usage: bench_agent_sandbox.py [--quick] BUILD_DIR WORK_DIR REPORT
       bench_agent_sandbox.py --keep BLOCK_FILE REPORT
"""

import argparse
import collections
import datetime
import os
import re
import signal
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

from cluster_support import EXTENSIONS_API, FakeCluster, TestHost  # noqa: E402
from fake_apiserver import ClusterError  # noqa: E402
from harness.gitlab_runner import ExecError, Job, Runner, RunnerSettings, bash_script  # noqa
import machine  # noqa: E402
import stats  # noqa: E402
from benchutil import BenchError, Measurer, command_line, interleaved, say, wall_ms  # noqa

BEGIN = "<!-- begin: agent-sandbox jobs, written by tests/bench/bench_agent_sandbox.py -->"
END = "<!-- end: agent-sandbox jobs -->"
TITLE = "## GitLab jobs on the agent-sandbox backend"

NAMESPACE = "ci"
POOL = "ci-pool"
ALLOWED_HOST = ("allowed", "10.250.7.2", "10.250.7.1")
DENIED_HOST = ("denied", "10.250.7.6", "10.250.7.5")
CLAIMS = EXTENSIONS_API % (NAMESPACE, "sandboxclaims")
POOLS = EXTENSIONS_API % (NAMESPACE, "sandboxwarmpools")
BURST_POOL = "burst"
BURST_PROBE_PERIOD = 10

# Pods of the fake run host binaries on the host's file system. Private tmpfs mounts in each
# pod's mount namespace give it its own /builds, /cache and /tmp, as emptyDir volumes do.
POD_COMMAND = ("mkdir -p /builds /cache && mount -t tmpfs tmpfs /builds && "
               "mount -t tmpfs tmpfs /cache && mount -t tmpfs tmpfs /tmp && "
               "touch /tmp/.pod-ready && exec sleep infinity")

# A GitLab Runner-shaped bash script whose only command is `true`, as in bench.py.
TRIVIAL_BODY = b"echo $'\\x1b[32;1m$ true\\x1b[0;m'\ntrue\n"

TARGET_FIXED_REQUESTS = 8
TARGET_PREPARE_MS = 50.0
TARGET_RUN_OVERHEAD_MS = 10.0
TARGET_PEAK_RSS_MIB = 16.0
CONCURRENT_JOBS = 100

# Repetitions: (full run, --quick).
REPEAT = {
    "request_stages": ((1, 2, 4, 8), (1, 4)),
    "prepares": (10, 4),
    "run_pairs": (40, 10),
    "rss_runs": (5, 2),
    "concurrent_jobs": (CONCURRENT_JOBS, 20),
}


def read_cpu_seconds(pid):
    """Return the user plus system CPU time of process PID (all its threads) and of its reaped
    children in seconds. The fake's children are the `nsenter` of every exec and readiness
    probe and the processes of pods that ended."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    own = int(fields[11]) + int(fields[12])
    children = int(fields[13]) + int(fields[14])
    return own / os.sysconf("SC_CLK_TCK"), children / os.sysconf("SC_CLK_TCK")


def busy_cpu_seconds():
    """Return the CPU time of the whole machine spent outside idle and iowait, in seconds."""
    with open("/proc/stat") as f:
        fields = [int(value) for value in f.readline().split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def logged_ms(text, pattern):
    match = re.search(pattern, text)
    return float(match.group(1)) if match else None


def client_environ():
    """The environment of sbx and the client tool: no proxy variables, because this traffic
    stays on loopback, and no sbx or runner variables of the caller."""
    environ = dict(os.environ)
    for key in list(environ):
        if key.lower() in ("http_proxy", "https_proxy", "all_proxy", "no_proxy") or \
                key.startswith(("CUSTOM_ENV_", "SBX_")) or key == "KUBECONFIG":
            del environ[key]
    return environ


def template_body(name, probe_period):
    return {"apiVersion": "extensions.agents.x-k8s.io/v1beta1", "kind": "SandboxTemplate",
            "metadata": {"name": name},
            "spec": {"networkPolicyManagement": "Unmanaged",
                     "podTemplate": {"spec": {"containers": [{
                         "name": "job", "image": "registry.example.com/ci:1",
                         "command": ["sh", "-c", POD_COMMAND],
                         "readinessProbe": {"exec": {"command": ["test", "-e",
                                                                 "/tmp/.pod-ready"]},
                                            "periodSeconds": probe_period}}]}}}}


def warm_pool_body(name, template, replicas):
    return {"apiVersion": "extensions.agents.x-k8s.io/v1beta1", "kind": "SandboxWarmPool",
            "metadata": {"name": name},
            "spec": {"replicas": replicas, "sandboxTemplateRef": {"name": template}}}


class AgentSandboxBench:
    def __init__(self, build, work_dir, quick):
        self.build = build
        self.work_dir = os.path.join(work_dir, "agent-sandbox")
        self.quick = quick
        self.sbx = os.path.join(build, "sbx")
        self.tool = os.path.join(build, "tests", "tools", "k8s_client_tool")
        self.measure = Measurer(os.path.join(build, "bench", "measure"))
        self.environ = client_environ()
        self.cluster = None
        self.hosts = []
        self.created_dirs = []
        self.config_path = None
        self.config_text = ""
        self.runner = None
        self.load_average = "unknown"
        self.job_ids = iter(range(700000001, 800000000))
        self.verdicts = []
        self.sections = []
        self.notes = []

    def repeat(self, name):
        return REPEAT[name][1 if self.quick else 0]

    def verdict(self, name, value_text, target_text, met):
        self.verdicts.append((name, value_text, target_text, "met" if met else "**not met**"))

    # -- the cluster -------------------------------------------------------------------------

    def start(self):
        for path in (self.sbx, os.path.join(self.build, "sbx-agent-sandbox.so"), self.tool):
            if not os.access(path, os.R_OK):
                raise BenchError("%s is missing; run make bench, which builds it" % path)
        os.makedirs(self.work_dir, mode=0o700)
        with open("/proc/loadavg") as f:
            self.load_average = " ".join(f.read().split()[:3])
        # The pods' mount points must exist on the host, whose file system they share.
        self.created_dirs = [d for d in ("/builds", "/cache") if not os.path.exists(d)]
        for directory in self.created_dirs:
            os.mkdir(directory, 0o755)
        say("agent-sandbox: starting the fake cluster (--ready-delay 0)")
        # run-bench.sh stops the server through STATE_DIR/cluster.json if this script dies.
        self.cluster = FakeCluster(state_dir=os.path.join(self.work_dir, "cluster"),
                                   ready_delay=0, enforce_network_policies=True)
        os.makedirs(self.cluster.state_dir, mode=0o700)
        try:
            self.cluster.start()
            self.cluster.must("POST", "/api/v1/namespaces", {"metadata": {"name": NAMESPACE}})
            for name, period in (("ci", 1), (BURST_POOL, BURST_PROBE_PERIOD)):
                self.cluster.must("POST", EXTENSIONS_API % (NAMESPACE, "sandboxtemplates"),
                                  template_body(name, period))
            self.cluster.must("POST", POOLS, warm_pool_body(POOL, "ci", 2))
            for name, address, node_address in (ALLOWED_HOST, DENIED_HOST):
                host = TestHost(self.cluster, name, address, node_address)
                host.__enter__()
                self.hosts.append(host)
        except (ClusterError, OSError, ValueError, subprocess.CalledProcessError) as error:
            raise BenchError("the fake cluster did not start: %s\n%s"
                             % (error, self.cluster.log_tail()))
        self.config_path = self.write_config("sbx.yaml", POOL)
        self.runner = self.new_runner(self.config_path)

    def new_runner(self, config_path):
        settings = RunnerSettings(self.sbx, environ=dict(self.environ, SBX_CONFIG=config_path),
                                  tmp_root=self.work_dir)
        return Runner(settings)

    def stop(self):
        for host in reversed(self.hosts):
            host.__exit__(None, None, None)
        self.hosts = []
        if self.cluster is not None and self.cluster.process is not None:
            say("agent-sandbox: stopping the fake cluster")
            pid = self.cluster.pid
            try:
                self.cluster.stop(timeout=60)
            except ClusterError as error:
                # stop() killed it, and a killed server leaves its network namespaces.
                say("agent-sandbox: %s; removing its network namespaces" % error)
                listing = subprocess.run(["ip", "netns", "list"], stdout=subprocess.PIPE,
                                         text=True).stdout
                for name in re.findall(r"^(sbxk-%d-\S+)" % pid, listing, re.M):
                    subprocess.run(["ip", "netns", "del", name], stderr=subprocess.DEVNULL)
        for directory in self.created_dirs:
            try:
                os.rmdir(directory)
            except OSError:
                pass
        self.created_dirs = []

    def write_config(self, name, pool, probe_timeout=None):
        """Write the sbx configuration NAME whose warm pool for every image is POOL."""
        path = os.path.join(self.work_dir, name)
        text = (
            "backend: agent-sandbox\n"
            "plugin_dir: %s\n"
            "state_dir: %s/state\n"
            "network:\n"
            "  user_allow: [\"%s:8080\"]\n"
            "agent_sandbox:\n"
            "  kubeconfig: %s\n"
            "  namespace: %s\n"
            "  warm_pools:\n"
            "    \"*\": %s\n"
            "  probe:\n"
            "    destination: \"%s:8080\"\n%s"
            % (self.build, self.work_dir, ALLOWED_HOST[1],
               self.cluster.kubeconfig_for("runner"), NAMESPACE, pool, DENIED_HOST[1],
               "" if probe_timeout is None else "    timeout: %d\n" % probe_timeout))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        if pool == POOL:
            self.config_text = text
        return path

    def wait_pool_ready(self, replicas, timeout=120, pool=POOL):
        def ready():
            body = self.cluster.must("GET", "%s/%s" % (POOLS, pool))
            return (body.get("status") or {}).get("readyReplicas", 0) >= replicas

        self.cluster.wait_for(ready, timeout, interval=0.1,
                              message="%d ready sandboxes in warm pool %s" % (replicas, pool))

    # -- one job -------------------------------------------------------------------------------

    def new_attempt(self, runner=None):
        attempt = (runner or self.runner).new_attempt(Job(job_id=next(self.job_ids),
                                              project_path="bench/project"))
        attempt.config()
        return attempt

    def finish(self, attempt):
        record = attempt.cleanup()
        attempt.remove_temp_dir()
        if record.returncode != 0:
            raise BenchError("sbx gitlab cleanup failed (exit %d): %s"
                             % (record.returncode, bytes(record.output).decode(
                                 errors="replace")[-2000:]))

    def run_job(self, stages):
        """Run config, prepare, STAGES trivial stages and cleanup; returns the prepare's stderr."""
        attempt = self.new_attempt()
        try:
            prepare = attempt.prepare()
            for i in range(stages):
                record = attempt.run_stage("build_script" if i == 0 else "step_%d" % i,
                                           script=bash_script(TRIVIAL_BODY))
                if record.error is not None:
                    raise BenchError("stage %d failed: %s\n%s" % (
                        i + 1, record.error, bytes(record.output).decode(errors="replace")))
        finally:
            self.finish(attempt)
        return bytes(prepare.stderr).decode(errors="replace")

    # -- 1. API requests per job ----------------------------------------------------------------

    def bench_requests(self):
        stage_counts = self.repeat("request_stages")
        say("agent-sandbox 1/3 API requests per job, warm hits, %s stages"
            % ", ".join(map(str, stage_counts)))
        per_job = {}
        for stages in stage_counts:
            self.wait_pool_ready(2)
            self.cluster.reset_requests()
            stderr = self.run_job(stages)
            if "(warm pool hit)" not in stderr:
                raise BenchError("the prepare of a %d-stage job was no warm pool hit:\n%s"
                                 % (stages, stderr[-2000:]))
            counts = self.cluster.request_counts()
            log = self.cluster.request_log()
            per_job[stages] = (counts, log)
        self.report_requests(per_job)

    @staticmethod
    def watch_requests(log):
        return [entry for entry in log if entry["verb"] == "watch" or
                "watch=true" in entry["path"] or "watch=1" in entry["path"]]

    def report_requests(self, per_job):
        stage_counts = sorted(per_job)
        totals = {n: sum(per_job[n][0].values()) for n in stage_counts}
        first, last = stage_counts[0], stage_counts[-1]
        slope = (totals[last] - totals[first]) / (last - first) if last != first else 0.0
        fixed = totals[first] - slope * first
        keys = sorted({key for counts, _ in per_job.values() for key in counts})
        lines = [
            "### 1. API requests per job",
            "",
            "Each job is a warm pool hit with its own NetworkPolicy and PodDisruptionBudget: "
            "`sbx gitlab config`, `prepare`, N trivial stages of `sbx gitlab run` and "
            "`cleanup`, driven by the emulated GitLab Runner of "
            "`tests/integration/harness/gitlab_runner.py`. The fake's counters "
            "(`/_fake/requests`) are reset before the job and read after it, so they hold "
            "every request sbx made, retries and repeated watches included (the emulated "
            "controller and kubelet run inside the server and make none).",
            "",
            "| verb resource | " + " | ".join("%d stage%s" % (n, "" if n == 1 else "s")
                                               for n in stage_counts) + " |",
            "|---|" + "---|" * len(stage_counts),
        ]
        for key in keys:
            lines.append("| `%s` | %s |" % (key, " | ".join(
                str(per_job[n][0].get(key, 0)) for n in stage_counts)))
        lines.append("| **total** | %s |" % " | ".join("**%d**" % totals[n]
                                                     for n in stage_counts))
        lines.append("| total minus one per stage | %s |" % " | ".join(
            str(totals[n] - n) for n in stage_counts))
        retries, watches = [], []
        for n in stage_counts:
            log = per_job[n][1]
            retried = [e for e in log if e["code"] == 429 or e["code"] >= 500]
            retries.append(len(retried))
            watched = collections.Counter((e["resource"], e["name"] or "")
                                          for e in self.watch_requests(log))
            watches.append(sum(count - 1 for count in watched.values()))
        lines += [
            "| of them answered 429 or 5xx (retried) | %s |" % " | ".join(map(str, retries)),
            "| of them watches opened again on the same resource | %s |"
            % " | ".join(map(str, watches)),
            "",
            "Line through the first and the last job: **%.1f + %.1f per stage** requests "
            "(target at most %d + 1 per stage)." % (fixed, slope, TARGET_FIXED_REQUESTS),
            "",
            "Requests of the %d-stage job in the order they arrived, with the time the "
            "server held each (a watch or an exec lasts as long as it is open):" % first,
            "",
            "| # | verb resource | request | status | server ms |",
            "|---|---|---|---|---|",
        ]
        for i, entry in enumerate(sorted(per_job[first][1], key=lambda e: e["time"]), 1):
            path = entry["path"]
            if len(path) > 90:
                path = path[:87] + "..."
            lines.append("| %d | `%s %s` | `%s %s` | %s | %s |" % (
                i, entry["verb"], entry["resource"], entry["method"], path.replace("|", "\\|"),
                entry["code"], entry["ms"]))
        lines.append("")
        self.sections.append("\n".join(lines))
        worst = max(totals[n] - n for n in stage_counts)
        met = all(totals[n] <= TARGET_FIXED_REQUESTS + n for n in stage_counts)
        self.verdict("API requests per warm-hit job with N stages",
                     "%s for N = %s (at most %d + N)" % (
                         ", ".join(str(totals[n]) for n in stage_counts),
                         ", ".join(map(str, stage_counts)), worst),
                     "<= %d + N" % TARGET_FIXED_REQUESTS, met)
        self.request_fit = (fixed, slope)

    # -- 2. prepare and run -----------------------------------------------------------------------

    def measure_prepare(self, attempt, peak_rss=False):
        environ = dict(attempt.environment())
        values = self.measure.run([self.sbx, "gitlab", "prepare"], env=environ,
                                  peak_rss=peak_rss)
        text = values["stderr"]
        if "(warm pool hit)" not in text:
            raise BenchError("the prepare was no warm pool hit:\n%s" % text[-2000:])
        values["probe_ms"] = logged_ms(text, r"NetworkPolicy enforced: .* \(checked in (\d+) ms\)")
        values["ready_ms"] = logged_ms(text, r"ready in (\d+) ms")
        values["prepared_ms"] = logged_ms(text, r"prepared in (\d+) ms")
        pod = re.search(r"Sandbox \S+, pod (\S+), container", text)
        values["pod"] = pod.group(1) if pod else None
        if values["probe_ms"] is None or values["pod"] is None:
            raise BenchError("the prepare logged no probe time or no pod:\n%s" % text[-2000:])
        return values

    def bench_prepare_and_run(self):
        prepares = self.repeat("prepares")
        rss_runs = self.repeat("rss_runs")
        say("agent-sandbox 2/3 %d warm-hit prepares, each with its cleanup" % prepares)
        runs = []
        for i in range(prepares + 1):
            self.wait_pool_ready(2)
            attempt = self.new_attempt()
            try:
                if i == 1:
                    self.cluster.reset_requests()
                    started = time.time()
                values = self.measure_prepare(attempt, peak_rss=i >= prepares + 1 - rss_runs)
                if i == 1:
                    timeline = (started, values, self.cluster.request_log())
            finally:
                self.finish(attempt)
            if i > 0:  # the first is a warm-up
                runs.append(values)
        traced = runs[-rss_runs:]
        untraced = runs[:-rss_runs] or runs

        self.wait_pool_ready(2)
        attempt = self.new_attempt()
        try:
            values = self.measure_prepare(attempt)
            pod = values["pod"]
            script = attempt.write_script(bash_script(TRIVIAL_BODY))
            environ = dict(attempt.environment())
            run_argv = [self.sbx, "gitlab", "run", script, "build_script"]
            tool_argv = [self.tool, "--kubeconfig", self.cluster.kubeconfig_for("runner"),
                         "--stdin-mode", "counted", "--stdin-file", script,
                         "exec", NAMESPACE, pod, "--", "bash"]
            self.check_tool_exec(tool_argv)
            pairs = self.repeat("run_pairs")
            say("agent-sandbox 2/3 sbx gitlab run against a plain exec: %d pairs, then %d "
                "traced runs" % (pairs, rss_runs))
            for _ in range(3):
                self.measure.run(run_argv, env=environ)
                self.measure.run(tool_argv, env=self.environ)
            run_series, tool_series = interleaved(
                pairs, lambda: self.measure.run(run_argv, env=environ),
                lambda: self.measure.run(tool_argv, env=self.environ))
            run_traced = [self.measure.run(run_argv, env=environ, peak_rss=True)
                          for _ in range(rss_runs)]
            self.cluster.reset_requests()
            self.measure.run(run_argv, env=environ)
            run_requests = self.cluster.request_counts()
            forks = ([self.count_forks(run_argv, environ) for _ in range(rss_runs)],
                     [self.count_forks(tool_argv, self.environ) for _ in range(rss_runs)])
        finally:
            self.finish(attempt)
        self.report_prepare_and_run(untraced, traced, run_series, tool_series, run_traced,
                                    run_requests, run_argv, tool_argv)
        self.report_prepare_timeline(*timeline)
        self.report_run_costs(forks)

    def count_forks(self, argv, environ):
        """Return how many processes the machine created while ARGV ran: the "processes"
        counter of /proc/stat, which counts every fork and clone, also inside the pod."""
        def processes():
            with open("/proc/stat") as f:
                for line in f:
                    if line.startswith("processes "):
                        return int(line.split()[1])
            raise BenchError("/proc/stat has no processes line")

        before = processes()
        self.measure.run(argv, env=environ)
        return processes() - before

    def report_prepare_timeline(self, started, values, log):
        """Append the API requests of one prepare, from the start of `sbx gitlab prepare`."""
        entries = sorted(log, key=lambda e: e["time"])
        wall = values["wall_ns"] / 1e6
        lines = [
            "Where one of these prepares (%.0f ms, probe %.0f ms by sbx's log) spends its "
            "time: its API requests in the order they arrived, with the time from the start "
            "of `sbx gitlab prepare` (taken in Python right before `measure` starts it, so "
            "about 1 ms early) and the time the server held each request. The probe runs in "
            "one of the execs. The server logs a request when it ends, and the claim's watch "
            "(from the claim's creation to its Ready event) can be missing here because it "
            "ended after the log was read." % (wall, values["probe_ms"]),
            "",
            "| start ms | verb resource | status | server ms |",
            "|---|---|---|---|",
        ]
        for entry in entries:
            lines.append("| %.1f | `%s %s` | %s | %.1f |" % (
                (entry["time"] - started) * 1000, entry["verb"], entry["resource"],
                entry["code"], entry["ms"]))
        if entries:
            first = (entries[0]["time"] - started) * 1000
            last_end = max((e["time"] - started) * 1000 + e["ms"] for e in entries)
            lines += [
                "",
                "Before the first request: %.1f ms (starting `sbx`, loading the plugin and "
                "configuration, creating the client, connecting and the TLS handshake). After "
                "the last request ended: %.1f ms." % (first, wall - last_end),
            ]
            # From the end of one short request to the start of the next: time on sbx's side.
            gaps = []
            for previous, entry in zip(entries, entries[1:]):
                if previous["verb"] not in ("watch", "create") or previous["resource"] != \
                        "sandboxclaims":
                    gaps.append((entry["time"] - previous["time"]) * 1000 - previous["ms"])
            if gaps:
                lines.append(
                    "Between the end of one request and the start of the next (leaving out "
                    "the wait for the claim to become ready): %s ms, %.1f ms in all, while the "
                    "server held each of these requests for at most %.1f ms."
                    % (", ".join("%.1f" % gap for gap in gaps), sum(gaps),
                       max(e["ms"] for e in entries if e["verb"] not in ("watch",) and
                           e["resource"] != "pods/exec")))
        lines.append("")
        self.sections.append("\n".join(lines))

    def report_run_costs(self, forks):
        run_forks, tool_forks = forks
        lines = [
            "Processes created on the machine during one run (the `processes` counter of "
            "`/proc/stat`, so also the fake server's `nsenter` and everything in the pod), "
            "median of %d: `sbx gitlab run` %.0f, the plain exec %.0f. sbx's exec runs a "
            "shell wrapper in the pod (`plugin/agent-sandbox/step.c`) that stores the script "
            "in `step_dir`, starts it detached with `setsid`, copies its log file while it "
            "runs and waits for the step's runner, its child, so it returns as soon as the "
            "step ends. The counter covers the whole machine, so other work on it adds noise."
            % (len(run_forks), stats.median(run_forks), stats.median(tool_forks)),
            "",
        ]
        self.sections.append("\n".join(lines))

    def check_tool_exec(self, argv):
        result = subprocess.run(argv, env=self.environ, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if result.returncode != 0 or b"$ true" not in result.stdout:
            raise BenchError("%s failed (exit %d): %s%s" % (
                command_line(argv), result.returncode, result.stdout.decode(errors="replace"),
                result.stderr.decode(errors="replace")))

    def display(self, argv):
        shown = []
        for arg in argv:
            arg = arg.replace(self.tool, "k8s_client_tool").replace(self.sbx, "sbx")
            arg = arg.replace(self.cluster.kubeconfig_for("runner"), "$KUBECONFIG")
            arg = re.sub(r"^.*/(script\d*/script)$", r"$TMPDIR/\1", arg)
            shown.append(arg)
        return command_line(shown)

    def report_prepare_and_run(self, untraced, traced, run_series, tool_series, run_traced,
                               run_requests, run_argv, tool_argv):
        wall = wall_ms(untraced)
        probe = [r["probe_ms"] for r in untraced]
        beyond = [w - p for w, p in zip(wall, probe)]
        ready = [r["ready_ms"] for r in untraced if r["ready_ms"] is not None]
        prepare_rss = [r["hwm_kib"] / 1024 for r in traced]
        run_ms, tool_ms = wall_ms(run_series), wall_ms(tool_series)
        differences = [a - b for a, b in zip(run_ms, tool_ms)]
        overhead = stats.median(run_ms) - stats.median(tool_ms)
        run_rss = [r["hwm_kib"] / 1024 for r in run_traced]
        tool_rss = [r["tree_maxrss_kib"] / 1024 for r in tool_series]
        lines = [
            "### 2. Prepare and run on a warm hit",
            "",
            "`sbx gitlab prepare` after `sbx gitlab config`, in the environment GitLab Runner "
            "gives it, timed by `tests/bench/measure` from `fork()` to `wait4()`; before each, "
            "the pool has 2 ready sandboxes, and cleanup follows each. One warm-up prepare, "
            "then %d, and %d more traced for the peak RSS. The enforcement probe connects "
            "from the pod to %s:8080, which the job's NetworkPolicy drops (nftables), so each "
            "attempt waits for its 2 s connect timeout; its time is sbx's own log line "
            "`NetworkPolicy enforced: ... (checked in N ms)`, taken out per run."
            % (len(untraced), len(traced), DENIED_HOST[1]),
            "",
            stats.table_header(),
            stats.table_row("`sbx gitlab prepare`, whole", wall, "ms"),
            stats.table_row("the enforcement probe (sbx's log)", probe, "ms"),
            stats.table_row("**prepare beyond the probe**", beyond, "ms"),
        ]
        if ready:
            lines.append(stats.table_row("claim created to sandbox ready (sbx's \"ready in\")",
                                         ready, "ms"))
        lines += [
            "",
            "A trivial stage: `sbx gitlab run` of the script below against a plain exec of "
            "the same script on stdin of `bash` in the same pod through "
            "`tests/tools/k8s_client_tool` (the client library sbx uses), interleaved, "
            "after 3 warm-up runs of each. The script has GitLab Runner's shape and its only "
            "command is `true`.",
            "",
            "```",
            "sbx:  " + self.display(run_argv),
            "exec: " + self.display(tool_argv),
            "```",
            "",
            stats.table_header(),
            stats.table_row("`sbx gitlab run`", run_ms, "ms"),
            stats.table_row("plain exec, `k8s_client_tool`", tool_ms, "ms"),
            stats.table_row("per-pair difference", differences, "ms"),
            "",
            "Overhead per stage, difference of the medians: **%.1f ms**. One `sbx gitlab run` "
            "made these API requests: %s."
            % (overhead, ", ".join("`%s` %d" % item for item in sorted(run_requests.items()))),
            "",
            stats.table_header(),
            stats.table_row("peak RSS (VmHWM) of `sbx gitlab prepare`", prepare_rss, "MiB"),
            stats.table_row("peak RSS (VmHWM) of `sbx gitlab run`", run_rss, "MiB"),
            stats.table_row("peak RSS of `k8s_client_tool exec` (wait4)", tool_rss, "MiB"),
            "",
        ]
        self.sections.append("\n".join(lines))
        self.prepare_summary = {"beyond": stats.median(beyond), "probe": stats.median(probe),
                                "wall": stats.median(wall), "overhead": overhead,
                                "run_ms": stats.median(run_ms), "tool_ms": stats.median(tool_ms),
                                "run_requests": sum(run_requests.values())}
        self.verdict("`sbx gitlab prepare` on a warm hit beyond the enforcement probe, median",
                     "%.0f ms (probe %.0f ms)" % (stats.median(beyond), stats.median(probe)),
                     "<= %.0f ms" % TARGET_PREPARE_MS, stats.median(beyond) <= TARGET_PREPARE_MS)
        self.verdict("`sbx gitlab run` overhead over a plain exec, trivial stage",
                     "%.1f ms" % overhead, "<= %.0f ms" % TARGET_RUN_OVERHEAD_MS,
                     overhead <= TARGET_RUN_OVERHEAD_MS)
        peak = max(prepare_rss + run_rss)
        self.verdict("peak RSS of `sbx` during prepare and run", "%.1f MiB" % peak,
                     "<= %.0f MiB" % TARGET_PEAK_RSS_MIB, peak <= TARGET_PEAK_RSS_MIB)

    # -- 3. concurrent jobs -----------------------------------------------------------------------

    def concurrent_job(self, runner, result):
        attempt = None
        try:
            attempt = self.new_attempt(runner)
            record = attempt.execute("prepare", attempt.settings.prepare_args)
            result["prepare_s"] = record.end_time - record.start_time
            stderr = bytes(record.stderr).decode(errors="replace")
            result["warm"] = "(warm pool hit)" in stderr
            result["probe_ms"] = logged_ms(stderr, r"NetworkPolicy enforced: .* \(checked in "
                                                   r"(\d+) ms\)")
            result["ready_ms"] = logged_ms(stderr, r"ready in (\d+) ms")
            records = [("prepare", record)]
            if record.error is None:
                for stage in ("get_sources", "build_script"):
                    records.append((stage, attempt.run_stage(
                        stage, script=bash_script(TRIVIAL_BODY))))
                    if records[-1][1].error is not None:
                        break
            stage, record = records[-1]
            if record.error is not None:
                lines = bytes(record.stderr).decode(errors="replace").strip().splitlines()
                raise BenchError("%s: %s: %s" % (stage, record.error,
                                                 lines[-1] if lines else "no stderr"))
            result["ok"] = True
        except (BenchError, ExecError, OSError) as error:
            result["error"] = str(error)
        finally:
            if attempt is not None:
                try:
                    self.finish(attempt)
                except BenchError as error:
                    result["ok"] = False
                    result.setdefault("error", str(error))

    def bench_concurrent(self):
        count = self.repeat("concurrent_jobs")
        say("agent-sandbox 3/3 filling warm pool %s with %d sandboxes" % (BURST_POOL, count))
        runner = self.new_runner(self.write_config("sbx-burst.yaml", BURST_POOL))
        started = time.monotonic()
        self.cluster.must("POST", POOLS, warm_pool_body(BURST_POOL, BURST_POOL, count))
        self.wait_pool_ready(count, timeout=300, pool=BURST_POOL)
        fill_s = time.monotonic() - started
        say("agent-sandbox 3/3 %d concurrent jobs (config, prepare, 2 stages, cleanup)" % count)
        results = [{"ok": False} for _ in range(count)]
        threads = [threading.Thread(target=self.concurrent_job, args=(runner, r), daemon=True)
                   for r in results]
        server_cpu = read_cpu_seconds(self.cluster.pid)
        machine_cpu = busy_cpu_seconds()
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(600)
        elapsed = time.monotonic() - started
        server_cpu = tuple(after - before for after, before in
                           zip(read_cpu_seconds(self.cluster.pid), server_cpu))
        machine_cpu = busy_cpu_seconds() - machine_cpu
        self.report_concurrent(count, results, elapsed, server_cpu, machine_cpu, fill_s)

    def report_concurrent(self, count, results, elapsed, server_cpu, machine_cpu, fill_s):
        succeeded = [r for r in results if r.get("ok")]
        prepare_ms = [r["prepare_s"] * 1000 for r in results if "prepare_s" in r]
        warm = sum(1 for r in results if r.get("warm"))
        failures = collections.Counter(r.get("error", "unfinished").splitlines()[0][:200]
                                       for r in results if not r.get("ok"))
        rate = len(succeeded) / elapsed
        cores = os.cpu_count() or 1
        server_share = 100 * server_cpu[0] / elapsed
        children_share = 100 * server_cpu[1] / elapsed
        machine_share = 100 * machine_cpu / (elapsed * cores)
        lines = [
            "### 3. %d concurrent jobs" % count,
            "",
            "A second warm pool, `%s`, is filled with %d ready sandboxes first (%.0f s); its "
            "template probes readiness every %d s instead of every second, because the fake "
            "runs each probe as an exec. Then %d threads start at once, each running one job "
            "through the emulated runner: `sbx gitlab config`, `prepare`, two trivial stages "
            "(`get_sources`, `build_script`) and `cleanup`, without prepare retries. The "
            "controller refills the pool meanwhile. Prepare times come from the emulated "
            "runner (it polls every 10 ms). The enforcement probe keeps its default timeout "
            "of 15 s: the fake loads the rulesets changed by a burst of NetworkPolicy and pod "
            "changes in one batch, into the selected pods only."
            % (BURST_POOL, count, fill_s, BURST_PROBE_PERIOD, count),
            "",
            "| | |",
            "|---|---|",
            "| jobs succeeded | **%d of %d** (%d warm pool hits) |" % (len(succeeded), count,
                                                                      warm),
            "| wall time, first start to last end | %.1f s |" % elapsed,
            "| jobs per second | **%.2f** |" % rate,
            "| fake server CPU time (its process, all threads) | %.1f s, %.0f%% of one core |"
            % (server_cpu[0], server_share),
            "| CPU time of the fake's reaped children (`nsenter` of execs and probes) | "
            "%.1f s, %.0f%% of one core |" % (server_cpu[1], children_share),
            "| machine busy (all processes, %d cores) | %.0f%% |" % (cores, machine_share),
            "",
        ]
        if prepare_ms:
            lines += [
                "| | median | p25-p75 | p90 | p99 | max | n |",
                "|---|---|---|---|---|---|---|",
            ]
            series = [("`sbx gitlab prepare`", prepare_ms),
                      ("of it, claim to sandbox ready (sbx's \"ready in\")",
                       [r["ready_ms"] for r in results if r.get("ready_ms") is not None]),
                      ("of it, the enforcement probe (sbx's \"checked in\")",
                       [r["probe_ms"] for r in results if r.get("probe_ms") is not None])]
            for label, values in series:
                if values:
                    lines.append("| %s | **%.0f ms** | %.0f-%.0f | %.0f | **%.0f** | %.0f | %d |"
                                 % (label, stats.median(values), stats.quantile(values, 0.25),
                                    stats.quantile(values, 0.75), stats.quantile(values, 0.9),
                                    stats.quantile(values, 0.99), max(values), len(values)))
            lines.append("")
        if failures:
            lines += ["Failures:", ""] + ["- %d x %s" % (n, text.replace("|", "\\|"))
                                          for text, n in failures.most_common(5)] + [""]
        if server_share >= 90:
            lines += ["The fake server, one Python process with one event loop, was busy for "
                      "%.0f%% of the wall time, so it limits this run: the jobs per second "
                      "measure the fake more than sbx." % server_share, ""]
        self.sections.append("\n".join(lines))
        self.concurrent_summary = {"rate": rate, "server_share": server_share,
                                   "machine_share": machine_share,
                                   "p99": stats.quantile(prepare_ms, 0.99) if prepare_ms
                                   else None}
        self.verdict("%d concurrent jobs succeed" % count, "%d of %d" % (len(succeeded), count),
                     "all", len(succeeded) == count)
        if prepare_ms:
            self.verdicts.append(("the same: jobs per second, p99 of prepare",
                                  "%.2f jobs/s, %.1f s" % (rate, stats.quantile(prepare_ms, 0.99)
                                                           / 1000), "(reported)", ""))

    # -- the section ------------------------------------------------------------------------------

    def run(self):
        failures = []
        try:
            self.start()
        except BenchError as error:
            self.stop()
            return [("agent-sandbox benchmarks", str(error))]
        try:
            for name, step in (("API requests per job", self.bench_requests),
                               ("prepare and run", self.bench_prepare_and_run),
                               ("concurrent jobs", self.bench_concurrent)):
                try:
                    step()
                except (BenchError, ClusterError, ExecError, OSError, ValueError,
                        KeyError) as error:
                    say("agent-sandbox %s failed: %s" % (name, error))
                    failures.append((name, str(error)))
        finally:
            self.stop()
        return failures

    def section(self, started, finished, failures, command):
        facts = dict(machine.facts(self.build, HERE))
        lines = [
            BEGIN,
            TITLE,
            "",
            "Measured with `tests/bench/bench_agent_sandbox.py`, run %s, %.0f s%s. Rerun "
            "this section alone with `%s`; `make bench` runs it after the sections above. "
            "The cluster is `tests/cluster/fake-apiserver` on 127.0.0.1 with `--ready-delay "
            "0` and enforced NetworkPolicies, started by the benchmark and stopped at its "
            "end; sbx authenticates as the fake's `runner` identity (a bearer token). Two "
            "network namespaces stand for hosts outside the cluster: %s (on the allow-list) "
            "and %s (the probe's destination)." % (
                started.strftime("%Y-%m-%d %H:%M UTC"), (finished - started).total_seconds(),
                " with BENCH_QUICK=1 (fewer repetitions)" if self.quick else "", command,
                ALLOWED_HOST[1], DENIED_HOST[1]),
            "",
            "| | |",
            "|---|---|",
        ]
        for key in ("CPU", "memory", "kernel", "sbx"):
            lines.append("| %s | %s |" % (key, facts.get(key, "unknown").replace("|", "\\|")))
        lines.append("| load average (1, 5, 15 min) at the start | %s |"
                     % self.load_average)
        lines += [
            "",
            "sbx's configuration (`SBX_CONFIG`):",
            "",
            "```yaml",
            re.sub(r"(kubeconfig: ).*", r"\1$KUBECONFIG",
                   self.config_text.replace(self.work_dir, "$WORK").replace(self.build,
                                                                            "$BUILD")).rstrip(),
            "```",
            "",
            "#### Summary",
            "",
            "| what | measured | target | |",
            "|---|---|---|---|",
        ]
        lines += ["| %s | %s | %s | %s |" % v for v in self.verdicts]
        for name, message in failures:
            lines.append("| %s | not measured: %s | | **failed** |"
                         % (name, message.splitlines()[0].replace("|", "\\|")))
        lines.append("")
        lines += self.sections
        if self.notes:
            lines += ["Notes: " + " ".join(self.notes), ""]
        lines.append(END)
        return "\n".join(lines)


# -- the report ----------------------------------------------------------------------------------

def replace_block(report, block):
    """Write BLOCK into the page REPORT in place of its old block, or at its end."""
    try:
        with open(report) as f:
            text = f.read()
    except FileNotFoundError:
        text = "# sbx benchmarks\n"
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END) + r"\n?", re.S)
    text = pattern.sub("", text).rstrip("\n")
    text += "\n\n" + block.strip("\n") + "\n"
    temporary = report + ".tmp"
    with open(temporary, "w") as f:
        f.write(text)
    os.replace(temporary, report)


def saved_block(report):
    """Return this benchmark's block of the page REPORT, or an empty string."""
    try:
        with open(report) as f:
            text = f.read()
    except FileNotFoundError:
        return ""
    match = re.search(re.escape(BEGIN) + r".*?" + re.escape(END), text, re.S)
    return match.group(0) if match else ""


def main():
    parser = argparse.ArgumentParser(description="Benchmark GitLab jobs on the agent-sandbox "
                                                 "backend against the fake cluster.")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--save", metavar="FILE",
                        help="only copy the block of REPORT to FILE (for --keep)")
    parser.add_argument("--keep", metavar="FILE",
                        help="only put the block saved in FILE back into REPORT")
    parser.add_argument("paths", nargs="+", metavar="BUILD_DIR WORK_DIR REPORT")
    options = parser.parse_args()

    if options.save or options.keep:
        if len(options.paths) != 1:
            parser.error("--save and --keep take one REPORT")
        report = options.paths[0]
        if options.save:
            with open(options.save, "w") as f:
                f.write(saved_block(report))
        else:
            with open(options.keep) as f:
                block = f.read()
            if block:
                replace_block(report, block)
        return 0
    if len(options.paths) != 3:
        parser.error("give BUILD_DIR WORK_DIR REPORT")
    build, work_dir, report = (os.path.abspath(p) for p in options.paths)

    def interrupted(signum, frame):
        raise KeyboardInterrupt("signal %d" % signum)

    signal.signal(signal.SIGTERM, interrupted)
    started = datetime.datetime.now(datetime.timezone.utc)
    bench = AgentSandboxBench(build, work_dir, options.quick)
    failures = bench.run()
    command = "BENCH_ONLY=agent-sandbox%s tests/bench/run-bench.sh build" % (
        " BENCH_QUICK=1" if options.quick else "")
    block = bench.section(started, datetime.datetime.now(datetime.timezone.utc), failures,
                          command)
    replace_block(report, block)
    say("wrote the agent-sandbox section of %s" % report)
    for verdict in bench.verdicts:
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
