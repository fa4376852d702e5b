"""Shared pieces of the sbx integration tests: a per-test state dir and config file, the
emulated runner, leftover checks, and test network namespaces with HTTP servers."""

import glob
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

from harness import gitlab_runner

# A sandbox's processes run as host uid id_map_base + job_uid in root mode (default
# 1879048192 + 1000); the tests find them by the unique arguments they start them with.
PIPE_DELAY_MAX = 1.0
ALLOWED_EXIT_CODES = (0, 1, 2)


def unique_seconds():
    """A `sleep` argument no other test run uses, so its process can be found host-wide
    even while other suites run on the same machine."""
    return "%d.%06d" % (random.randint(5000, 9999), random.randint(0, 999999))


def sleeper(seconds):
    """Needle for a `sleep SECONDS` process in /proc/*/cmdline."""
    return b"sleep\x00" + seconds.encode() + b"\x00"


def yaml_scalar(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return '"%s"' % str(value).replace("\\", "\\\\").replace('"', '\\"')


def to_yaml(mapping, indent=0):
    """Render nested dicts, lists and scalars as block YAML (enough for sbx config files)."""
    lines = []
    pad = "  " * indent
    for key, value in mapping.items():
        if isinstance(value, dict):
            lines.append("%s%s:" % (pad, key))
            lines.append(to_yaml(value, indent + 1))
        elif isinstance(value, (list, tuple)):
            if not value:
                lines.append("%s%s: []" % (pad, key))
                continue
            lines.append("%s%s:" % (pad, key))
            for item in value:
                if isinstance(item, dict):
                    first = True
                    for item_key, item_value in item.items():
                        prefix = "- " if first else "  "
                        lines.append("%s  %s%s: %s" % (pad, prefix, item_key,
                                                       yaml_scalar(item_value)))
                        first = False
                else:
                    lines.append("%s  - %s" % (pad, yaml_scalar(item)))
        else:
            lines.append("%s%s: %s" % (pad, key, yaml_scalar(value)))
    return "\n".join(lines)


def merge(base, overrides):
    result = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merge(result[key], value)
        else:
            result[key] = value
    return result


def build_dir():
    build = os.environ.get("SBX_BUILD_DIR")
    if not build:
        raise RuntimeError("SBX_BUILD_DIR is not set; run the tests through tests/run-tests.sh")
    return os.path.abspath(build)


class SbxTestCase(unittest.TestCase):
    """A test with its own state dir and sbx config file (SBX_CONFIG), removed afterwards."""

    config_overrides = {}

    def setUp(self):
        if os.geteuid() != 0:
            self.fail("the sbx integration tests run as root (sbx's root mode, network "
                      "namespaces, cgroups)")
        self.build = build_dir()
        self.sbx = os.path.join(self.build, "sbx")
        if not os.access(self.sbx, os.X_OK):
            self.fail("%s is missing; run make first" % self.sbx)
        # Not under /tmp or /var/tmp: those are masked anyway, and the tests must see that
        # sbx masks its state dir because it is the state dir.
        self.root = tempfile.mkdtemp(prefix="sbx-it-", dir="/var/lib")
        os.chmod(self.root, 0o755)
        self.state_dir = os.path.join(self.root, "state")
        self.config_path = os.path.join(self.root, "config.yaml")
        self.extra_records = []
        self.exempt_records = set()
        self.write_config()
        environ = dict(os.environ)
        environ["SBX_CONFIG"] = self.config_path
        environ["SBX_PLUGIN_DIR"] = self.build
        environ.pop("SBX_DEBUG", None)
        self.settings = gitlab_runner.RunnerSettings(
            self.sbx, environ=environ, graceful_kill_timeout=30, force_kill_timeout=10,
            preparation_retry_interval=0.5, build_finish_timeout=30, stage_retry_delay=0.5)
        self.runner = gitlab_runner.Runner(self.settings)
        self.attempts = []
        self.addCleanup(self._teardown)

    # -- configuration ---------------------------------------------------------------------

    def base_config(self):
        return {
            "state_dir": self.state_dir,
            "default_job_timeout": 3600,
            "deadline_margin": 600,
            "cleanup_timeout": 60,
            "stop_grace": 3,
            "local": {"memory_max": "1G", "pids_max": 512},
            "network": {"allow_ci_server": False},
        }

    def write_config(self, **overrides):
        config = merge(self.base_config(), merge(self.config_overrides, overrides))
        with open(self.config_path, "w") as f:
            f.write(to_yaml(config) + "\n")
        return config

    # -- jobs --------------------------------------------------------------------------------

    def new_job(self, **kwargs):
        return gitlab_runner.Job(**kwargs)

    def new_attempt(self, job, settings=None):
        runner = self.runner if settings is None else gitlab_runner.Runner(settings)
        if settings is not None:
            self.extra_runners.append(runner)
        attempt = runner.new_attempt(job)
        self.attempts.append(attempt)
        return attempt

    @property
    def extra_runners(self):
        if not hasattr(self, "_extra_runners"):
            self._extra_runners = []
        return self._extra_runners

    def prepared(self, job, settings=None):
        """config + prepare a sandbox for JOB; fail the test with the output otherwise."""
        attempt = self.new_attempt(job, settings)
        try:
            attempt.config()
            record = attempt.prepare()
        except gitlab_runner.ExecError as exc:
            self.fail("config/prepare failed: %s\n%s" % (exc, self.describe(attempt.records)))
        self.assertEqual(record.returncode, 0)
        return attempt

    def prepared_with_sources(self, job, settings=None):
        """prepared() plus the get_sources stage, which creates the project dir."""
        attempt = self.prepared(job, settings)
        record = attempt.run_stage("get_sources", body=attempt.get_sources_body())
        self.assertEqual(record.returncode, 0, self.describe([record]))
        return attempt

    def run_ok(self, attempt, stage, commands, **kwargs):
        """Run user COMMANDS as STAGE and assert the stage succeeded."""
        record = attempt.run_stage(stage, commands=commands, **kwargs)
        self.assertEqual(record.returncode, 0, self.describe([record]))
        return record

    def sbx_direct(self, args, env=None, timeout=60, input_bytes=None):
        """Run sbx ARGS outside the harness (gc, doctor, bad input) and return the record."""
        environ = dict(self.settings.environ)
        if env:
            environ.update(env)
        start = time.monotonic()
        process = subprocess.run([self.sbx] + list(args), env=environ, stdin=subprocess.DEVNULL,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                                 cwd="/")
        record = gitlab_runner.ExecRecord("direct", [self.sbx] + list(args),
                                          list(environ.items()), "/")
        record.returncode = process.returncode
        record.stdout += process.stdout
        record.stderr += process.stderr
        record.start_time = start
        record.exit_time = record.end_time = time.monotonic()
        self.extra_records.append(record)
        return record

    @staticmethod
    def describe(records):
        parts = []
        for record in records:
            parts.append("--- %s %s: rc=%r error=%r signals=%r\nstdout:\n%s\nstderr:\n%s" % (
                record.kind, record.stage or "", record.returncode, record.error,
                record.signals, bytes(record.stdout[-4000:]).decode(errors="replace"),
                bytes(record.stderr[-4000:]).decode(errors="replace")))
        return "\n".join(parts)

    # -- state and leftovers ----------------------------------------------------------------

    def sandbox_ids(self):
        return sorted(os.path.basename(p)[:-5]
                      for p in glob.glob(os.path.join(self.state_dir, "sandboxes", "*.json")))

    def job_dir(self, sandbox_id):
        return os.path.join(self.state_dir, "jobs", sandbox_id)

    def cgroup_paths(self, sandbox_id):
        return [p for p in glob.glob("/sys/fs/cgroup/*/sbx/%s" % sandbox_id)
                + glob.glob("/sys/fs/cgroup/sbx/%s" % sandbox_id) if os.path.exists(p)]

    def processes_of(self, sandbox_id):
        """Host pids of live processes whose cgroup path names SANDBOX_ID.

        Zombies are left out: a killed init is reparented to the host's PID 1, which may take
        a while to reap it, and a zombie holds no resources but its pid."""
        pids = []
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open("/proc/%s/cgroup" % name) as f:
                    if "/sbx/%s" % sandbox_id not in f.read():
                        continue
                with open("/proc/%s/stat" % name) as f:
                    if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                        continue
            except (OSError, IndexError):
                continue
            pids.append(int(name))
        return pids

    @staticmethod
    def describe_pids(pids):
        """Status lines and cgroups of PIDS, for failure messages."""
        parts = []
        for pid in pids:
            try:
                with open("/proc/%d/status" % pid) as f:
                    status = [line for line in f.read().split("\n")
                              if line.split(":")[0] in ("Name", "State", "PPid", "Uid")]
                with open("/proc/%d/cgroup" % pid) as f:
                    cgroups = f.read().split()
                parts.append("pid %d: %s %s" % (pid, status, cgroups))
            except OSError as exc:
                parts.append("pid %d: %s" % (pid, exc))
        return "\n".join(parts)

    def assertNoProcesses(self, needle, timeout=0):
        """No host process has NEEDLE in its command line (within TIMEOUT seconds)."""
        self.wait_until(lambda: not gitlab_runner.sandbox_processes(needle), timeout)
        pids = gitlab_runner.sandbox_processes(needle)
        self.assertEqual(pids, [], "processes still running:\n" + self.describe_pids(pids))

    def assertSandboxGone(self, sandbox_id):
        self.assertFalse(os.path.exists(os.path.join(self.state_dir, "sandboxes",
                                                     sandbox_id + ".json")),
                         "journal entry of %s left behind" % sandbox_id)
        self.assertFalse(os.path.exists(self.job_dir(sandbox_id)),
                         "job dir of %s left behind" % sandbox_id)
        self.assertEqual(self.cgroup_paths(sandbox_id), [],
                         "cgroups of %s left behind" % sandbox_id)
        self.assertEqual(self.processes_of(sandbox_id), [],
                         "processes of %s still running" % sandbox_id)

    def assertStateEmpty(self):
        """Nothing of any sandbox left in the state dir (journal, job dirs, locks)."""
        for sub in ("sandboxes", "jobs", "locks"):
            path = os.path.join(self.state_dir, sub)
            entries = sorted(os.listdir(path)) if os.path.isdir(path) else []
            self.assertEqual(entries, [], "%s/ is not empty" % sub)

    def wait_until(self, predicate, timeout, interval=0.1):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate():
                return True
            time.sleep(interval)
        return predicate()

    def all_records(self):
        records = list(self.runner.records) + self.extra_records
        for runner in self.extra_runners:
            records += runner.records
        return records

    def check_records(self):
        """Every exec exited 0, 1 or 2 and its pipes closed right after it exited."""
        for record in self.all_records():
            if id(record) in self.exempt_records or record.dormant:
                continue
            if record.returncode is None:
                continue
            self.assertIn(record.returncode, ALLOWED_EXIT_CODES,
                          "sbx exited with %r\n%s" % (record.returncode,
                                                      self.describe([record])))
            if record.kind != "direct" and record.pipe_delay is not None:
                self.assertLess(record.pipe_delay, PIPE_DELAY_MAX,
                                "%s %s: stdout/stderr stayed open %.1f s after sbx exited"
                                % (record.kind, record.stage or "", record.pipe_delay))

    def _teardown(self):
        failure = None
        try:
            self.check_records()
        except AssertionError as exc:
            failure = exc
        # Destroy whatever a failed test left, through sbx itself, then by force.
        for sandbox_id in self.sandbox_ids():
            environ = dict(self.settings.environ)
            environ["SBX_SANDBOX_ID"] = sandbox_id
            subprocess.run([self.sbx, "gitlab", "cleanup"], env=environ, cwd="/",
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=120)
        for attempt in self.attempts:
            attempt.remove_temp_dir()
        for record in self.all_records():
            if record.pid and record.returncode is None:
                try:
                    os.killpg(record.pid, signal.SIGKILL)
                except OSError:
                    pass
        shutil.rmtree(self.root, ignore_errors=True)
        if failure is not None:
            raise failure


# ---------------------------------------------------------------------------------------------
# Network namespaces made by a test.

def _ip(*args, check=True):
    return subprocess.run(["ip"] + list(args), check=check, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE)


class TestNetwork:
    """Two network namespaces joined by a veth pair: CLIENT (where sbx runs when the test wants
    its proxy's traffic confined) and SERVER (HTTP servers). Addresses: client 192.0.2.1/29,
    server 192.0.2.2/29 and 192.0.2.3/29. Nothing is routed anywhere else."""

    CLIENT_ADDRESS = "192.0.2.1"
    SERVER_ADDRESSES = ("192.0.2.2", "192.0.2.3")

    def __init__(self, client_in_host=False):
        tag = "%06x" % random.randint(0, 0xffffff)
        self.client = None if client_in_host else "sbxc-" + tag
        self.server = "sbxs-" + tag
        self.veth_client = "sbxvc" + tag
        self.veth_server = "sbxvs" + tag
        self.servers = []
        self.directories = []

    def create(self):
        _ip("netns", "add", self.server)
        if self.client:
            _ip("netns", "add", self.client)
        _ip("link", "add", self.veth_client, "type", "veth", "peer", "name", self.veth_server)
        _ip("link", "set", self.veth_server, "netns", self.server)
        if self.client:
            _ip("link", "set", self.veth_client, "netns", self.client)
            _ip("-n", self.client, "addr", "add", self.CLIENT_ADDRESS + "/29", "dev",
                self.veth_client)
            _ip("-n", self.client, "link", "set", self.veth_client, "up")
            _ip("-n", self.client, "link", "set", "lo", "up")
        else:
            _ip("addr", "add", self.CLIENT_ADDRESS + "/29", "dev", self.veth_client)
            _ip("link", "set", self.veth_client, "up")
        for address in self.SERVER_ADDRESSES:
            _ip("-n", self.server, "addr", "add", address + "/29", "dev", self.veth_server)
        _ip("-n", self.server, "link", "set", self.veth_server, "up")
        _ip("-n", self.server, "link", "set", "lo", "up")
        return self

    def client_wrapper(self):
        """argv prefix that runs a program in the client namespace (exec in place)."""
        if not self.client:
            return []
        return ["nsenter", "--net=/run/netns/" + self.client]

    def serve(self, address, port, files):
        """Serve FILES ({relative path: bytes}) over HTTP at ADDRESS:PORT in the server ns."""
        directory = tempfile.mkdtemp(prefix="sbx-it-www-")
        self.directories.append(directory)
        for name, content in files.items():
            path = os.path.join(directory, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(content)
        return self.serve_directory(address, port, directory)

    def serve_directory(self, address, port, directory):
        process = subprocess.Popen(
            ["ip", "netns", "exec", self.server, sys.executable, "-m", "http.server",
             "--bind", address, "--directory", directory, str(port)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.servers.append(process)
        # Wait until it accepts connections.
        for _ in range(100):
            probe = subprocess.run(
                ["ip", "netns", "exec", self.server, sys.executable, "-c",
                 "import socket; socket.create_connection((%r, %d), 1).close()"
                 % (address, port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if probe.returncode == 0:
                return process
            time.sleep(0.1)
        raise RuntimeError("HTTP server on %s:%d in %s did not start" % (address, port,
                                                                         self.server))

    def fetch_from_client(self, url, timeout=5):
        """GET URL from the client side without any proxy; return the body or None."""
        argv = self.client_wrapper() + ["curl", "-sS", "--noproxy", "*", "-m", str(timeout),
                                        url]
        result = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        return result.stdout if result.returncode == 0 else None

    def destroy(self):
        for process in self.servers:
            process.terminate()
        for process in self.servers:
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if not self.client:
            _ip("link", "del", self.veth_client, check=False)
        _ip("netns", "del", self.server, check=False)
        if self.client:
            _ip("netns", "del", self.client, check=False)
        for directory in self.directories:
            shutil.rmtree(directory, ignore_errors=True)
