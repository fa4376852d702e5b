"""Benchmarks of sbx's Kubernetes client against the fake cluster of tests/cluster.

The agent-sandbox backend runs every step through pods/exec over a WebSocket, so two numbers
decide its cost: the throughput of a step's output and the fixed cost of one exec. Both are
measured with tests/tools/k8s_client_tool, which drives the same client library as the
plugin, against baselines run in the same run on the same server process:

1. Throughput: `head -c SIZE /dev/zero` in a pod with its stdout through the client to
   /dev/null, against curl fetching the same number of bytes over HTTPS from the same server
   (GET /_fake/blob) and against `kubectl exec` of the same command. The peak resident set of
   the client comes from wait4(), and the server's CPU time from /proc.
2. Round trip: `exec -- true` with connection set-up, against `kubectl exec -- true`, and where
   sbx's time goes, timestamped by the LD_PRELOAD library phases.so.
"""

import json
import os
import shutil
import subprocess
import sys

import stats
from benchutil import BenchError, command_line, interleaved, pair_ratio_text, say, wall_ms

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

from cluster_support import FakeCluster, create_running_pod, sandbox_pod  # noqa: E402
from fake_apiserver import ClusterError  # noqa: E402

MIB = 1024 * 1024
GIB = 1024 * MIB

# kubectl 1.32, called directly. The machine image's `kubectl` is a dispatcher that runs a
# bundled release matching the server's version, which would add its own start to each run.
KUBECTL = "/usr/lib/google-cloud-sdk/bin/kubectl.1.32"

NAMESPACE = "default"
POD = "bench"
SECTION_TITLE = "## Kubernetes (agent-sandbox backend)"

TARGET_THROUGHPUT_VS_CURL = 0.70
TARGET_THROUGHPUT_VS_KUBECTL = 1.0
TARGET_PEAK_RSS_MIB = 16.0
TARGET_ROUND_TRIP_RATIO = 0.3

# Repetitions: (full run, --quick).
REPEAT = {
    "transfer_rounds": (5, 2),
    "round_trip_pairs": (40, 10),
    "phase_runs": (20, 5),
}

# Phases of one exec, from the timestamps of phases.so and measure's fork (see phases.c):
# (label, first event, last event).
PHASES = [
    ("start of the process: fork, exec, loading the libraries", "fork", "loaded"),
    ("kubeconfig, client, credential", "loaded", "ssl_ctx_new"),
    ("TLS context: the first `SSL_CTX_new()`", "ssl_ctx_new", "ssl_ctx_created"),
    ("TLS context: CA bundle, client certificate and key", "ssl_ctx_created", "tcp_connect"),
    ("connect: resolving and the TCP handshake", "tcp_connect", "tls_start"),
    ("TLS handshake (first `SSL_connect` to its success)", "tls_start", "tls_done"),
    ("WebSocket upgrade (request sent to the first bytes of the 101 response)", "tls_done",
     "response"),
    ("the command: the server starts `true` in the pod, stdout and status frames, close",
     "response", "close"),
    ("connection teardown, output queue, exit handlers", "close", "exit"),
    ("process exit and reaping", "exit", "reaped"),
]


def read_cpu_seconds(pid):
    """Return the user plus system CPU time of process PID (all its threads) in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        # The command name may contain spaces; the fields after it are fixed.
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def client_environ():
    """The environment of every client: without proxy variables, because kubectl, curl and
    sbx's REST calls (libcurl) honour them and this traffic stays on loopback."""
    environ = dict(os.environ)
    for key in list(environ):
        if key.lower() in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
            del environ[key]
    environ.pop("KUBECONFIG", None)
    return environ


class K8sBench:
    def __init__(self, build, work_dir, measurer, quick):
        self.build = build
        self.work_dir = os.path.join(work_dir, "k8s")
        self.measure = measurer
        self.quick = quick
        self.tool = os.path.join(build, "tests", "tools", "k8s_client_tool")
        self.phases_library = os.path.join(build, "bench", "phases.so")
        self.cluster = None
        self.throughput = None
        self.round_trip = None
        self.profile = None
        self.failed_transfers = []
        self.connections = {}
        self.environ = client_environ()
        self.verdicts = []
        self.sections = []
        self.notes = []

    def repeat(self, name):
        return REPEAT[name][1 if self.quick else 0]

    def verdict(self, name, value_text, target_text, met):
        self.verdicts.append((name, value_text, target_text, "met" if met else "**not met**"))

    # -- the cluster -------------------------------------------------------------------------

    def start(self):
        for path, hint in ((self.tool, "run make build/tests/tools/k8s_client_tool"),
                           (KUBECTL, "install the Google Cloud SDK's kubectl component, which "
                                     "bundles kubectl.1.32"),
                           (self.phases_library, "run tests/bench/run-bench.sh, which builds it")):
            if not os.access(path, os.X_OK if path != self.phases_library else os.R_OK):
                raise BenchError("%s is missing; %s" % (path, hint))
        os.makedirs(self.work_dir, mode=0o700)
        say("k8s: starting the fake cluster")
        # run-bench.sh stops the server through the pid in STATE_DIR/cluster.json when this
        # script dies without stopping it.
        self.cluster = FakeCluster(state_dir=os.path.join(self.work_dir, "cluster"),
                                   ready_delay=0.05, enforce_network_policies=False)
        os.makedirs(self.cluster.state_dir, mode=0o700)
        try:
            self.cluster.start()
            create_running_pod(self.cluster, NAMESPACE, sandbox_pod(POD))
        except (ClusterError, OSError, ValueError) as error:
            raise BenchError("the fake cluster did not start: %s\n%s"
                             % (error, self.cluster.log_tail()))

    def stop(self):
        if self.cluster is not None and self.cluster.process is not None:
            say("k8s: stopping the fake cluster")
            self.cluster.stop()

    # -- commands ----------------------------------------------------------------------------

    def sbx_argv(self, command, result_path=None):
        argv = [self.tool, "--kubeconfig", self.cluster.kubeconfig, "--timeout-ms", "300000"]
        if result_path is not None:
            # --debug passes the client's debug log to stderr, which a failed transfer's
            # report shows. The client logs no debug line per message.
            argv += ["--debug", "--result", result_path]
        return argv + ["exec", NAMESPACE, POD, "--"] + command

    def kubectl_argv(self, command):
        return [KUBECTL, "--kubeconfig", self.cluster.kubeconfig, "exec", "-n", NAMESPACE, POD,
                "--"] + command

    def curl_argv(self, size):
        files = self.cluster.info["clientCertificates"]["admin"]
        return ["curl", "-sS", "--fail", "-o", "/dev/null", "-m", "300",
                "--cacert", self.cluster.info["caFile"], "--cert", files["cert"],
                "--key", files["key"], "-w", "%{http_code} %{size_download}\\n",
                "%s/_fake/blob?size=%d" % (self.cluster.url, size)]

    def display(self, argv):
        """ARGV as the report shows it: the tool and files by short names."""
        replacements = {self.tool: "k8s_client_tool", self.cluster.kubeconfig: "$KUBECONFIG",
                        self.cluster.info["caFile"]: "$CA",
                        self.cluster.url: "https://127.0.0.1:$PORT"}
        files = self.cluster.info["clientCertificates"]["admin"]
        replacements[files["cert"]] = "$CERT"
        replacements[files["key"]] = "$KEY"
        shown = []
        for arg in argv:
            for old, new in replacements.items():
                arg = arg.replace(old, new)
            shown.append(arg)
        return command_line(shown)

    # -- 1. throughput -----------------------------------------------------------------------

    def transfer(self, kind, size):
        """Run one transfer of SIZE bytes with client KIND; returns its measurements."""
        output_path = os.path.join(self.work_dir, "output")
        result_path = os.path.join(self.work_dir, "result.json")
        command = ["head", "-c", str(size), "/dev/zero"]
        if kind == "sbx":
            argv, stdout_path = self.sbx_argv(command, result_path), "/dev/null"
        elif kind == "curl":
            argv, stdout_path = self.curl_argv(size), output_path
        else:
            argv, stdout_path = self.kubectl_argv(command), "/dev/null"
        server_cpu = read_cpu_seconds(self.cluster.pid)
        values = self.measure.run(argv, env=self.environ, stdout_path=stdout_path)
        values["server_cpu"] = read_cpu_seconds(self.cluster.pid) - server_cpu
        values["mib_s"] = size / MIB / (values["wall_ns"] / 1e9)
        if kind == "sbx":
            with open(result_path) as f:
                result = json.load(f)
            if not result["ok"] or result["exit_code"] != 0 or \
                    result["stdout_bytes"] != size:
                raise BenchError("%s: unexpected result %s" % (command_line(argv), result))
            values["own_maxrss_kib"] = result["maxrss_kb"]
        elif kind == "curl":
            with open(output_path) as f:
                fields = f.read().split()
            if fields != ["200", str(size)]:
                raise BenchError("%s: unexpected result %r" % (command_line(argv), fields))
        # NOTE: kubectl's output goes to /dev/null uncounted; its exit status 0 is the check.
        return values

    def server_log_size(self):
        return os.path.getsize(os.path.join(self.cluster.state_dir, "fake-apiserver.log"))

    def server_log_since(self, offset, lines=8):
        """Return the last LINES lines that the fake server logged after byte OFFSET."""
        with open(os.path.join(self.cluster.state_dir, "fake-apiserver.log"), "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
        return text.splitlines()[-lines:]

    def transfer_or_record(self, kind, size):
        """Run one transfer. A failed one goes to self.failed_transfers with what the client
        and the server logged, and returns None, so that one failure does not end the
        benchmark."""
        offset = self.server_log_size()
        try:
            return self.transfer(kind, size)
        except BenchError as error:
            say("k8s %s transfer of %d MiB failed: %s" % (kind, size // MIB, error))
            self.failed_transfers.append((kind, size, str(error),
                                          self.server_log_since(offset)))
            return None

    def bench_throughput(self):
        rounds = self.repeat("transfer_rounds")
        kinds = [("sbx", GIB), ("curl", GIB), ("kubectl", GIB), ("sbx", 256 * MIB)]
        say("k8s 1/2 throughput: 1 warm-up round, then %d rounds of sbx, curl and kubectl "
            "with 1 GiB and sbx with 256 MiB" % rounds)
        for kind, _ in kinds:
            self.transfer(kind, 16 * MIB)
        runs = {key: [] for key in kinds}
        for i in range(rounds):
            # Rotate the order so that no client always runs first or last in a round.
            for kind, size in kinds[i % 4:] + kinds[:i % 4]:
                values = self.transfer_or_record(kind, size)
                if values is not None:
                    runs[(kind, size)].append(values)
        empty = ["%s with %d MiB" % (kind, size // MIB) for (kind, size), series in runs.items()
                 if not series]
        if empty:
            raise BenchError("every transfer failed for %s: %s" % (
                ", ".join(empty), self.failed_transfers[-1][2]))
        self.report_throughput(runs)
        if shutil.which("perf") is not None:
            say("k8s 1/2 one more 256 MiB sbx transfer under perf record")
            self.profile = self.profile_transfer(256 * MIB)

    def report_throughput(self, runs):
        sbx, curl, kubectl = runs[("sbx", GIB)], runs[("curl", GIB)], runs[("kubectl", GIB)]
        small = runs[("sbx", 256 * MIB)]

        def speeds(series):
            return [r["mib_s"] for r in series]

        def per_gib(series, key):
            return [r[key] * GIB / r["size"] for r in series]

        def rss_mib(series):
            return [r["tree_maxrss_kib"] / 1024 for r in series]

        for series, size in ((sbx, GIB), (curl, GIB), (kubectl, GIB), (small, 256 * MIB)):
            for r in series:
                r["size"] = size
                r["client_cpu"] = r["cpu_us"] / 1e6
                r["server_share"] = 100 * r["server_cpu"] / (r["wall_ns"] / 1e9)
        ratio_curl = stats.median(speeds(sbx)) / stats.median(speeds(curl))
        ratio_kubectl = stats.median(speeds(sbx)) / stats.median(speeds(kubectl))
        peak = max(rss_mib(sbx) + rss_mib(small))
        labels = [(sbx, "sbx exec, 1 GiB"), (curl, "curl, 1 GiB from `/_fake/blob`"),
                  (kubectl, "`kubectl exec`, 1 GiB"), (small, "sbx exec, 256 MiB")]
        command = ["head", "-c", "1073741824", "/dev/zero"]
        lines = [
            "### 1. 1 GiB of stdout through exec",
            "",
            "The pod `%s` runs `sleep 3600`; each client runs the command below in it and "
            "sends its stdout to `/dev/null`. curl fetches the same number of bytes from the "
            "same server process over the same kind of TLS connection, from an endpoint that "
            "writes one 128 KiB chunk of zeros again and again (the exec path reads the "
            "command's stdout in 128 KiB pieces too). Throughput is bytes over the wall time "
            "of the whole command, set-up included, timed by `tests/bench/measure`. The tool "
            "checks sbx's byte count and exit code, curl's `-w` output checks its byte count, "
            "kubectl's exit status is its only check. One warm-up round of 16 MiB each, then "
            "%d rounds, the order rotating." % (POD, len(sbx)),
            "",
            "```",
            "sbx:     " + self.display(self.sbx_argv(command, "$RESULT")),
            "curl:    " + self.display(self.curl_argv(GIB)),
            "kubectl: " + self.display(self.kubectl_argv(command)).replace(KUBECTL,
                                                                           "kubectl.1.32"),
            "```",
            "",
            stats.table_header(),
        ]
        lines += [stats.table_row(label, speeds(series), "MiB/s") for series, label in labels]
        if self.failed_transfers:
            lines += ["", "Failed transfers, left out of the table:", ""]
            for kind, size, message, server_lines in self.failed_transfers:
                lines += ["- %s, %d MiB: %s" % (kind, size // MIB,
                                                 message.strip().splitlines()[-1]),
                          "  The fake server's last log lines:", "", "  ```"]
                lines += ["  " + line for line in server_lines] + ["  ```"]
        lines += [
            "",
            "- sbx / curl: **%.0f%%** (per round: %s)." % (
                100 * ratio_curl, pair_ratio_text(speeds(sbx), speeds(curl))),
            "- sbx / kubectl: **%.2fx** (per round: %s)." % (
                ratio_kubectl, pair_ratio_text(speeds(sbx), speeds(kubectl))),
            "",
            "Peak resident set of the client process (`wait4()`'s `ru_maxrss`; none of the "
            "clients forks), in MiB:",
            "",
            stats.table_header(),
        ]
        lines += [stats.table_row(label, rss_mib(series), "MiB") for series, label in labels]
        own = [r["own_maxrss_kib"] / 1024 for r in sbx + small]
        lines += [
            "",
            "The tool's own `getrusage()` at its end agrees: max %.2f MiB. The exec keeps at "
            "most 1 MiB of output queued (`output_queue_max`), so the peak does not grow with "
            "the size of the output; the rest is code and libraries (libcurl, OpenSSL, "
            "json-c)." % max(own),
            "",
            "CPU time per GiB, user plus system: the client process, and the fake API server "
            "process (all its threads, from `/proc/PID/stat`; the pod's `head` is not in it). "
            "The last column set is the server's CPU time as a share of the transfer's wall "
            "time: near 100% the single-threaded Python server is the bottleneck.",
            "",
            "| | client CPU s/GiB | server CPU s/GiB | server CPU % of wall |",
            "|---|---|---|---|",
        ]
        for series, label in labels:
            lines.append("| %s | %.2f | %.2f | %.0f%% |" % (
                label, stats.median(per_gib(series, "client_cpu")),
                stats.median(per_gib(series, "server_cpu")),
                stats.median([r["server_share"] for r in series])))
        lines.append("")
        self.sections.append("\n".join(lines))
        self.throughput = {"sbx": sbx, "curl": curl, "kubectl": kubectl, "small": small}
        self.verdict("exec stdout throughput, 1 GiB, sbx / curl from the same server",
                     "%.0f%%" % (100 * ratio_curl),
                     ">= %.0f%%" % (100 * TARGET_THROUGHPUT_VS_CURL),
                     ratio_curl >= TARGET_THROUGHPUT_VS_CURL)
        self.verdict("the same, sbx / `kubectl exec`", "%.2fx" % ratio_kubectl,
                     ">= %.1fx" % TARGET_THROUGHPUT_VS_KUBECTL,
                     ratio_kubectl >= TARGET_THROUGHPUT_VS_KUBECTL)
        attempts = sum(len(series) for series in runs.values()) + len(self.failed_transfers)
        self.verdict("transfers that failed", "%d of %d" % (len(self.failed_transfers), attempts),
                     "0", not self.failed_transfers)
        self.verdict("peak RSS of the sbx client, 256 MiB and 1 GiB", "%.2f MiB" % peak,
                     "<= %.0f MiB" % TARGET_PEAK_RSS_MIB, peak <= TARGET_PEAK_RSS_MIB)

    # -- 2. round trip -----------------------------------------------------------------------

    def bench_round_trip(self):
        pairs = self.repeat("round_trip_pairs")
        phase_runs = self.repeat("phase_runs")
        warmup = 3
        sbx_argv = self.sbx_argv(["true"])
        kubectl_argv = self.kubectl_argv(["true"])

        def sbx():
            return self.measure.run(sbx_argv, env=self.environ)

        def kubectl():
            return self.measure.run(kubectl_argv, env=self.environ)

        say("k8s 2/2 exec round trip of true: %d pairs, then %d runs with phase timestamps"
            % (pairs, phase_runs))
        for _ in range(warmup):
            sbx()
            kubectl()
        sbx_runs, kubectl_runs = interleaved(pairs, sbx, kubectl)
        phases = [self.phase_run(sbx_argv) for _ in range(phase_runs)]
        bare = wall_ms([self.measure.run(["/bin/true"], env=self.environ)
                        for _ in range(phase_runs)])
        requests = {"sbx": self.request_census(sbx), "kubectl": self.request_census(kubectl)}
        self.connections = {"sbx": self.connection_count(sbx_argv),
                            "kubectl": self.connection_count(kubectl_argv)}
        self.report_round_trip(sbx_argv, kubectl_argv, warmup, sbx_runs, kubectl_runs, phases,
                               bare, requests)

    def phase_run(self, argv):
        path = os.path.join(self.work_dir, "phases")
        environ = dict(self.environ, LD_PRELOAD=self.phases_library, SBX_BENCH_PHASES=path)
        values = self.measure.run(argv, env=environ)
        with open(path) as f:
            stamps = {key: int(value) for key, value in
                      (item.split("=", 1) for item in f.read().split())}
        os.unlink(path)
        missing = [key for key, value in stamps.items() if value == 0]
        if missing:
            raise BenchError("phases.so recorded no %s in %s; the client no longer makes the "
                             "calls it wraps" % (", ".join(missing), command_line(argv)))
        stamps["fork"] = values["start_ns"]
        stamps["reaped"] = values["start_ns"] + values["wall_ns"]
        return stamps

    def shared_library_count(self):
        output = subprocess.run(["ldd", self.tool], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True).stdout
        return sum(1 for line in output.splitlines() if "=>" in line)

    def connection_count(self, argv):
        """Count the TCP connections ARGV opens to the API server, with strace; None without
        strace or when the run fails."""
        trace = os.path.join(self.work_dir, "connect.trace")
        try:
            result = subprocess.run(["strace", "-f", "-qq", "-e", "trace=connect", "-o", trace] +
                                    argv, env=self.environ, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except FileNotFoundError:
            return None
        if result.returncode != 0:
            return None
        port = "sin_port=htons(%d)" % self.cluster.port
        with open(trace) as f:
            count = sum(1 for line in f if port in line)
        os.unlink(trace)
        return count

    def request_census(self, run):
        """Return the API requests one run of RUN makes, as "verb resource" strings."""
        self.cluster.reset_requests()
        run()
        return ["%s %s" % (entry["verb"], entry["resource"])
                for entry in self.cluster.request_log()]

    def report_round_trip(self, sbx_argv, kubectl_argv, warmup, sbx_runs, kubectl_runs,
                          phases, bare, requests):
        sbx_ms, kubectl_ms = wall_ms(sbx_runs), wall_ms(kubectl_runs)
        ratio = stats.median(sbx_ms) / stats.median(kubectl_ms)
        lines = [
            "### 2. Exec round trip of `true`",
            "",
            "Each run is a new process that loads the kubeconfig, connects, runs `true` in the "
            "pod and exits; wall time from `fork()` to `wait4()`. After %d warm-up runs of "
            "each come %d pairs back to back, the order alternating within each pair."
            % (warmup, len(sbx_ms)),
            "",
            "```",
            "sbx:     " + self.display(sbx_argv),
            "kubectl: " + self.display(kubectl_argv).replace(KUBECTL, "kubectl.1.32"),
            "```",
            "",
            stats.table_header(),
            stats.table_row("sbx exec", sbx_ms, "ms"),
            stats.table_row("`kubectl exec`", kubectl_ms, "ms"),
            stats.table_row("CPU time of sbx exec (user + system)",
                            [r["cpu_us"] / 1000 for r in sbx_runs], "ms"),
            stats.table_row("CPU time of `kubectl exec`",
                            [r["cpu_us"] / 1000 for r in kubectl_runs], "ms"),
            "",
            "Ratio of the medians, sbx / kubectl: **%.2fx** (per pair: %s)."
            % (ratio, pair_ratio_text(sbx_ms, kubectl_ms)),
            "",
            "API requests of one run, from the fake server's request log: sbx %s; kubectl %s."
            % (", ".join("`%s`" % r for r in requests["sbx"]) or "none",
               ", ".join("`%s`" % r for r in requests["kubectl"]) or "none"),
            "",
        ]
        if self.connections and None not in self.connections.values():
            lines += [
                "TCP connections to the API server in one more run, counted with `strace -f -e "
                "trace=connect`: sbx %d, kubectl %d. Each is a TLS connection."
                % (self.connections["sbx"], self.connections["kubectl"]),
                "",
            ]
        totals = [p["reaped"] - p["fork"] for p in phases]
        lines += [
            "Where sbx's time goes, in %d more runs with `tests/bench/phases.so` preloaded. "
            "The library forwards `SSL_CTX_new`, `SSL_connect`, `SSL_read_ex`, `SSL_write_ex`, "
            "`SSL_free` and `connect` unchanged and records when each first happens. Medians of each phase, and its share of the median "
            "total (%.2f ms; the shares need not add up to 100%%):"
            % (len(phases), stats.median(totals) / 1e6),
            "",
            "| phase | median | p25-p75 | share |",
            "|---|---|---|---|",
        ]
        shares = {}
        for label, first, last in PHASES:
            values = [(p[last] - p[first]) / 1e6 for p in phases]
            shares[first] = 100 * stats.median(values) / (stats.median(totals) / 1e6)
            lines.append("| %s | %.2f ms | %.2f-%.2f | %.0f%% |" % (
                label, stats.median(values), stats.quantile(values, 0.25),
                stats.quantile(values, 0.75), shares[first]))
        tls = [(p["tcp_connect"] - p["ssl_ctx_new"] + p["tls_done"] - p["tls_start"]) / 1e6
               for p in phases]
        upgrade = [(p["response"] - p["tls_done"]) / 1e6 for p in phases]
        tls_share = 100 * stats.median(tls) / (stats.median(totals) / 1e6)
        upgrade_share = 100 * stats.median(upgrade) / (stats.median(totals) / 1e6)
        lines += [
            "",
            "For comparison, `measure` runs `/bin/true`, which needs only libc, in a median "
            "%.2f ms (n=%d). Most of the rest of the first phase is the dynamic loader "
            "mapping and relocating the %d shared libraries that `ldd` lists for the tool; "
            "libcurl is not among them, because the client loads it only for its first REST "
            "request." % (stats.median(bare), len(bare), self.shared_library_count()),
            "",
            "TLS (the context and the handshake): median %.2f ms, **%.0f%%** of sbx's time. "
            "The WebSocket upgrade: median %.2f ms, **%.0f%%**."
            % (stats.median(tls), tls_share, stats.median(upgrade), upgrade_share),
            "",
        ]
        self.sections.append("\n".join(lines))
        self.round_trip = {
            "ratio": ratio, "tls_share": tls_share, "upgrade_share": upgrade_share,
            "sbx_requests": len(requests["sbx"]), "kubectl_requests": len(requests["kubectl"]),
            "sbx_rss_mib": stats.median([r["tree_maxrss_kib"] / 1024 for r in sbx_runs]),
            "kubectl_rss_mib": stats.median([r["tree_maxrss_kib"] / 1024 for r in kubectl_runs]),
            "sbx_cpu_ms": stats.median([r["cpu_us"] / 1000 for r in sbx_runs]),
            "kubectl_cpu_ms": stats.median([r["cpu_us"] / 1000 for r in kubectl_runs]),
            "sbx_ms": stats.median(sbx_ms), "kubectl_ms": stats.median(kubectl_ms),
            "start_extra_ms": stats.median([(p["loaded"] - p["fork"]) / 1e6 for p in phases]) -
            stats.median(bare),
            "tls_context_ms": stats.median([(p["tcp_connect"] - p["ssl_ctx_new"]) / 1e6
                                            for p in phases]),
        }
        self.verdict("exec round trip of `true`, sbx / `kubectl exec`", "%.2fx" % ratio,
                     "<= %.1fx" % TARGET_ROUND_TRIP_RATIO, ratio <= TARGET_ROUND_TRIP_RATIO)

    # -- where the client's CPU time goes ---------------------------------------------------

    def profile_transfer(self, size):
        """Sample one sbx transfer of SIZE bytes with perf. Returns [(share %, object)] for the
        objects with at least 1% of the samples, or None when perf fails."""
        data = os.path.join(self.work_dir, "perf.data")
        record = subprocess.run(["perf", "record", "-q", "-o", data, "--"] +
                                self.sbx_argv(["head", "-c", str(size), "/dev/zero"]),
                                env=self.environ, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if record.returncode != 0:
            self.notes.append("`perf record` failed: %s"
                              % record.stderr.decode(errors="replace").strip()[:200])
            return None
        report = subprocess.run(["perf", "report", "-i", data, "--stdio", "--no-children",
                                 "--sort", "dso"], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)
        os.unlink(data)
        shares = []
        for line in report.stdout.splitlines():
            fields = line.split()
            if len(fields) == 2 and fields[0].endswith("%") and not line.startswith("#"):
                share = float(fields[0].rstrip("%"))
                if share >= 1.0:
                    shares.append((share, fields[1]))
        return shares

    # -- the section -------------------------------------------------------------------------

    def run(self):
        """Run both benchmarks; a failure of one is listed and the other still runs."""
        failures = []
        try:
            self.start()
        except BenchError as error:
            self.stop()
            return [("Kubernetes benchmarks", str(error))]
        try:
            for name, step in (("exec throughput", self.bench_throughput),
                               ("exec round trip", self.bench_round_trip)):
                try:
                    step()
                except (BenchError, ClusterError, OSError, ValueError, KeyError) as error:
                    say("k8s %s failed: %s" % (name, error))
                    failures.append((name, str(error)))
        finally:
            self.stop()
        return failures

    def versions(self):
        """Versions of what the Kubernetes benchmarks depend on, as (name, text) rows."""
        def first_line(argv):
            try:
                result = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True)
            except OSError:
                return "not installed"
            return result.stdout.splitlines()[0].strip() if result.stdout else ""

        aiohttp = first_line(["/usr/bin/python3", "-c",
                              "import aiohttp, platform; print('Python %s, aiohttp %s' % "
                              "(platform.python_version(), aiohttp.__version__))"])
        return [
            ("kubectl", first_line([KUBECTL, "version", "--client"])),
            ("fake API server", "tests/cluster/fake-apiserver on %s" % aiohttp),
            ("OpenSSL", first_line(["openssl", "version"])),
            ("curl", " ".join(first_line(["curl", "--version"]).split()[:4])),
        ]

    def analysis(self):
        """Write the paragraphs on where the time goes, from this run's numbers."""
        lines = ["### Where the time goes", ""]
        if self.throughput is not None:
            sbx, curl = self.throughput["sbx"], self.throughput["curl"]
            kubectl = self.throughput["kubectl"]

            def median_of(series, key):
                return stats.median([r[key] for r in series])

            sbx_wall = median_of(sbx, "wall_ns") / 1e9
            lines += [
                "Throughput. A 1 GiB transfer through sbx's client took %.1f s of wall time "
                "and %.1f s of the client's CPU time (its event loop and its output thread); "
                "the server spent %.1f s of CPU time, %.0f%% of the wall time. With kubectl "
                "the same server process spent %.1f s of CPU time on the exec path in %.1f s, "
                "and %.1f s in %.1f s with curl."
                % (sbx_wall, median_of(sbx, "client_cpu"), median_of(sbx, "server_cpu"),
                   median_of(sbx, "server_share"), median_of(kubectl, "server_cpu"),
                   median_of(kubectl, "wall_ns") / 1e9, median_of(curl, "server_cpu"),
                   median_of(curl, "wall_ns") / 1e9),
                "",
            ]
            if median_of(sbx, "server_share") >= 90:
                lines += ["The server is busy for nearly the whole transfer, so this run "
                          "measures the fake server's exec path more than sbx's client.", ""]
            elif median_of(sbx, "client_cpu") >= 0.7 * sbx_wall:
                lines += ["The client computes for most of the transfer while the server "
                          "waits, so the client limits the exec.", ""]
            if self.profile:
                lines += [
                    "`perf record` of one 256 MiB sbx transfer, share of the client's CPU "
                    "samples per object: %s." % ", ".join(
                        "%s %.0f%%" % (name, share) for share, name in self.profile),
                    "",
                ]
            lines += [
                "sbx's exec client reads 256 KiB at a time from OpenSSL and hands each frame's "
                "payload to the output queue as a slice of that buffer; the queue copies it "
                "once and its thread writes it to stdout. The exec path of the fake server "
                "costs more CPU per GiB than its plain HTTPS endpoint (reading the pod's pipe, "
                "copying each chunk into a frame).",
                "",
            ]
            exec_cpu = median_of(kubectl, "server_cpu")
            curl_speed = stats.median([r["mib_s"] for r in curl])
            if exec_cpu > 0:
                ceiling = 1024 / exec_cpu
                lines += [
                    "An upper bound from this run: with kubectl the server spent %.2f s of CPU "
                    "time per GiB on the exec path, so at 100%% of one CPU it can deliver at "
                    "most about %.0f MiB/s through exec, %.0f%% of curl's median."
                    % (exec_cpu, ceiling, 100 * ceiling / curl_speed),
                    "",
                ]
                if ceiling < TARGET_THROUGHPUT_VS_CURL * curl_speed:
                    kubectl_speed = stats.median([r["mib_s"] for r in kubectl])
                    sbx_speed = stats.median([r["mib_s"] for r in sbx])
                    lines += [
                        "So %.0f%% of curl through exec is out of reach with this server "
                        "whatever the client does. Against kubectl, which the same server "
                        "feeds at %.0f MiB/s, sbx's client %s."
                        % (100 * TARGET_THROUGHPUT_VS_CURL, kubectl_speed,
                           "is what falls short" if sbx_speed < kubectl_speed
                           else "keeps up (%.0f MiB/s)" % sbx_speed),
                        "",
                    ]
        if self.round_trip is not None:
            lines += [
                "Round trip. kubectl makes %d API requests per exec (sbx %d), and its process "
                "is a Go program that peaks at %.0f MiB (sbx %.0f MiB) and spends %.0f ms of "
                "CPU time (sbx %.0f ms). Of sbx's own time, TLS takes %.0f%% and the WebSocket "
                "upgrade %.0f%%. The command phase covers the fake server starting `true` "
                "through `nsenter` in the pod's namespaces and sending its status, which both "
                "clients wait for."
                % (self.round_trip["kubectl_requests"], self.round_trip["sbx_requests"],
                   self.round_trip["kubectl_rss_mib"], self.round_trip["sbx_rss_mib"],
                   self.round_trip["kubectl_cpu_ms"], self.round_trip["sbx_cpu_ms"],
                   self.round_trip["tls_share"], self.round_trip["upgrade_share"]),
                "",
            ]
            goal = TARGET_ROUND_TRIP_RATIO * self.round_trip["kubectl_ms"]
            if self.round_trip["sbx_ms"] > goal:
                lines += [
                    "At %.1fx of kubectl's median, sbx would need %.1f ms, %.1f ms less than "
                    "its median. Loading the tool's shared libraries alone takes about %.1f "
                    "ms more than starting a libc-only program, and the first "
                    "`SSL_CTX_new()` with the CA bundle and key about %.1f ms."
                    % (TARGET_ROUND_TRIP_RATIO, goal, self.round_trip["sbx_ms"] - goal,
                       self.round_trip["start_extra_ms"], self.round_trip["tls_context_ms"]),
                    "",
                ]
        return lines

    def section(self, started, finished, commit, failures):
        """Return the report's Kubernetes section as Markdown."""
        lines = [
            SECTION_TITLE,
            "",
            "Measured with `tests/bench/bench_k8s.py` (`BENCH_ONLY=k8s make bench` reruns "
            "this section alone and keeps the rest of the page). Run %s, %.0f s%s, sbx %s. "
            "The candidate is `tests/tools/k8s_client_tool`, the test driver of the client "
            "library that `sbx-agent-sandbox.so` uses for every step. The cluster is "
            "`tests/cluster/fake-apiserver` on 127.0.0.1, started by the benchmark with a "
            "client certificate kubeconfig (the `admin` identity) that all clients use, and "
            "stopped at its end." % (
                started.strftime("%Y-%m-%d %H:%M UTC"), (finished - started).total_seconds(),
                " with BENCH_QUICK=1 (fewer repetitions)" if self.quick else "", commit),
            "",
            "| | |",
            "|---|---|",
        ]
        lines += ["| %s | %s |" % (key, value.replace("|", "\\|"))
                  for key, value in self.versions()]
        lines += [
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
        lines += self.analysis()
        if self.notes:
            lines += ["Notes: " + " ".join(self.notes), ""]
        return "\n".join(lines)
