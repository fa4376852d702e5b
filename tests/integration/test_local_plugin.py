"""Integration tests of sbx-local.so, driven through the plugin ABI by tests/tools/sbx-local-host.

Every test works in a private state directory under /var/lib (visible, read-only, inside the
sandbox unless masked, so the masks are really tested) and destroys what it prepared.
The tests need root, user namespaces and cgroups, as the local backend's root mode does.
"""
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest
from http.server import BaseHTTPRequestHandler, HTTPServer

BUILD_DIR = os.path.abspath(os.environ.get("SBX_BUILD_DIR", "build"))
HOST_TOOL = os.path.join(BUILD_DIR, "tests", "tools", "sbx-local-host")
PLUGIN = os.path.join(BUILD_DIR, "sbx-local.so")
ID_MAP_BASE = 1879048192
JOB_UID = 1000
# Exit status of the host tool for a failed call: 200 + the error class.
ERROR_SYSTEM = 202
ERROR_CANCELLED = 203


def cgroup_dirs(sandbox_id):
    """Every directory named sbx/<id> in the host's cgroup hierarchies."""
    found = []
    root = "/sys/fs/cgroup"
    for entry in os.listdir(root):
        path = os.path.join(root, entry, "sbx", sandbox_id)
        if os.path.isdir(path):
            found.append(path)
    if os.path.isdir(os.path.join(root, "sbx", sandbox_id)):
        found.append(os.path.join(root, "sbx", sandbox_id))
    return found


def process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    try:
        with open("/proc/%d/stat" % pid) as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def namespace_processes(init_pid):
    """Host pids and uids of the live processes in INIT_PID's pid namespace, except the init.

    Other tests (and other sandboxes) may run at the same time with the same mapped uid, so
    the sandbox's processes are told apart by their pid namespace.
    """
    namespace = os.stat("/proc/%d/ns/pid" % init_pid).st_ino
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == init_pid:
            continue
        try:
            if os.stat("/proc/%s/ns/pid" % entry).st_ino != namespace:
                continue
            with open("/proc/%s/status" % entry) as status:
                fields = dict(line.split(":", 1) for line in status if ":" in line)
            if fields["State"].split()[0] in ("Z", "X"):
                continue
            found.append((int(entry), int(fields["Uid"].split()[0])))
        except (OSError, KeyError):
            pass
    return found


class OlderInit(threading.Thread):
    """A control socket in front of a sandbox's real init that acts like an init that cannot
    spawn steps. MODE "version-1" relays every message but marks the replies as protocol
    version 1, like an init of an older sbx. MODE "unsupported" relays everything but
    stage-run, which gets an "unsupported" reply, like an init on a kernel before 5.7. The
    real init keeps serving on its socket, renamed to control.sock.real. Only request and
    reply pairs are relayed, so a step-exit message would never reach exec."""

    def __init__(self, job_dir, mode):
        super().__init__(daemon=True)
        self.mode = mode
        self.stage_runs = 0
        path = os.path.join(job_dir, "control.sock")
        self.upstream_path = path + ".real"
        os.rename(path, self.upstream_path)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.listener.bind(path)
        self.listener.listen(4)

    def stop(self):
        self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self.join(10)

    def run(self):
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            with connection, socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as upstream:
                upstream.connect(self.upstream_path)
                self.relay(connection, upstream)

    def relay(self, connection, upstream):
        while True:
            data, fds, _, _ = socket.recv_fds(connection, 4096, 8)
            if not data:
                return
            message = json.loads(data)
            if message["type"] == "stage-run" and self.mode == "unsupported":
                self.stage_runs += 1
                for fd in fds:
                    os.close(fd)
                connection.send(json.dumps({
                    "protocol": "sbx-control", "version": 2, "type": "reply", "ok": False,
                    "stage": message["stage"], "unsupported": True,
                    "error": "this kernel cannot clone into a cgroup"}).encode())
                continue
            socket.send_fds(upstream, [data], fds)
            for fd in fds:
                os.close(fd)
            data, fds, _, _ = socket.recv_fds(upstream, 4096, 8)
            reply = json.loads(data)
            if self.mode == "version-1":
                reply["version"] = 1
            socket.send_fds(connection, [json.dumps(reply).encode()], fds)
            for fd in fds:
                os.close(fd)


@unittest.skipUnless(os.geteuid() == 0, "the local backend's root mode needs root")
@unittest.skipUnless(os.path.exists(HOST_TOOL) and os.path.exists(PLUGIN),
                     "build sbx-local.so and tests/tools first")
class LocalPluginTest(unittest.TestCase):
    def setUp(self):
        os.makedirs("/var/lib", exist_ok=True)
        self.base = tempfile.mkdtemp(prefix="sbx-local-test-", dir="/var/lib")
        self.state = os.path.join(self.base, "state")
        self.config = os.path.join(self.base, "config.yaml")
        # The runner's temporary directory, which contains the job's secrets in GitLab.
        self.runner_tmp = os.path.join(self.base, "runner-tmp")
        # Readable by everyone, so only the masks keep the job from reading them.
        os.chmod(self.base, 0o755)
        os.mkdir(self.runner_tmp)
        os.chmod(self.runner_tmp, 0o755)
        with open(os.path.join(self.runner_tmp, "response.json"), "w") as secret:
            secret.write('{"token": "secret-job-token"}')
        os.chmod(os.path.join(self.runner_tmp, "response.json"), 0o644)
        self.write_config()
        self.sandboxes = []

    def tearDown(self):
        for sandbox_id in self.sandboxes:
            self.host("destroy", sandbox_id)
        shutil.rmtree(self.base, ignore_errors=True)

    def write_config(self, extra=""):
        with open(self.config, "w") as config:
            config.write("state_dir: %s\nstop_grace: 2\n%s" % (self.state, extra))

    def host(self, *args, stdin=None, timeout=60, check=False):
        env = dict(os.environ, SBX_BUILD_DIR=BUILD_DIR, TMPDIR=self.runner_tmp)
        result = subprocess.run([HOST_TOOL, "--config", self.config] + list(args),
                                input=stdin, capture_output=True, timeout=timeout, env=env)
        if check and result.returncode != 0:
            self.fail("sbx-local-host %s failed with %d: %s" %
                      (" ".join(args), result.returncode, result.stderr.decode(errors="replace")))
        return result

    def prepare(self, *extra):
        sandbox_id = "t-" + secrets.token_hex(6)
        self.sandboxes.append(sandbox_id)
        self.host("prepare", sandbox_id, *extra, check=True)
        return sandbox_id

    def run_script(self, sandbox_id, script, *extra, timeout=60):
        path = os.path.join(self.base, "script-" + secrets.token_hex(4))
        with open(path, "w") as file:
            file.write(script)
        try:
            return self.host("exec", sandbox_id, "--script", path, *extra, timeout=timeout)
        finally:
            os.unlink(path)

    def journal(self, sandbox_id):
        with open(os.path.join(self.state, "sandboxes", sandbox_id + ".json")) as entry:
            return json.load(entry)

    def write_journal(self, sandbox_id, entry):
        path = os.path.join(self.state, "sandboxes", sandbox_id + ".json")
        with open(path, "w") as file:
            json.dump(entry, file)

    def init_pid(self, sandbox_id):
        return self.journal(sandbox_id)["data"]["init"]["pid"]

    def assert_gone(self, sandbox_id, init_pid=None):
        self.assertFalse(os.path.exists(os.path.join(self.state, "sandboxes", sandbox_id + ".json")))
        self.assertFalse(os.path.exists(os.path.join(self.state, "jobs", sandbox_id)))
        self.assertEqual(cgroup_dirs(sandbox_id), [])
        if init_pid is not None:
            self.assertFalse(process_alive(init_pid))

    # Round trip and results.

    def test_prepare_exec_destroy_round_trip(self):
        sandbox_id = self.prepare("--project", "group/project")
        entry = self.journal(sandbox_id)
        self.assertEqual(entry["backend"], "local")
        init_pid = entry["data"]["init"]["pid"]
        self.assertTrue(process_alive(init_pid))
        self.assertNotEqual(cgroup_dirs(sandbox_id), [])

        result = self.host("exec", sandbox_id, "--", "sh", "-c", "echo out; echo err >&2; id -u")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout, b"out\n%d\n" % JOB_UID)
        self.assertIn(b"err\n", result.stderr)

        listing = self.host("list", check=True).stdout.decode()
        self.assertIn("%s local ready" % sandbox_id, listing)

        self.host("destroy", sandbox_id, check=True)
        self.assert_gone(sandbox_id, init_pid)

    def test_exit_codes_and_signals(self):
        sandbox_id = self.prepare()
        cases = [("exit 0", 0), ("exit 7", 7), ("exit 255", 255), ("kill -TERM $$", 143),
                 ("kill -KILL $$", 137)]
        for script, expected in cases:
            with self.subTest(script=script):
                result = self.host("exec", sandbox_id, "--", "sh", "-c", script)
                self.assertEqual(result.returncode, expected, result.stderr)

    def test_missing_command_is_127(self):
        sandbox_id = self.prepare()
        result = self.host("exec", sandbox_id, "--", "no-such-command-here")
        self.assertEqual(result.returncode, 127)
        self.assertIn(b"no-such-command-here", result.stderr)

    def test_script_environment(self):
        sandbox_id = self.prepare()
        script = ('echo "secret=$JOB_SECRET"; echo "cwd=$(pwd)"; '
                  'echo "home=$HOME"; echo "proxy=$HTTPS_PROXY/$http_proxy/$NO_PROXY"; '
                  'echo "path=$PATH"; tr "\\0" " " < /proc/$$/cmdline; echo')
        result = self.run_script(sandbox_id, script, "--env", "JOB_SECRET=s3cr3t", "--cwd", "/tmp")
        self.assertEqual(result.returncode, 0, result.stderr)
        out = result.stdout.decode()
        lines = out.splitlines()
        self.assertIn("secret=s3cr3t", out)
        self.assertIn("cwd=/tmp", out)
        self.assertIn("home=/tmp/home", out)
        self.assertIn("proxy=http://127.0.0.1:3128/http://127.0.0.1:3128/localhost,127.0.0.1,::1",
                      out)
        self.assertIn("path=/.sbx/bin:", out)
        # Neither the script nor a variable reaches the shell's command line.
        self.assertEqual(lines[-1].strip(), "bash /proc/self/fd/3")

    def test_stdin_is_passed(self):
        sandbox_id = self.prepare()
        result = self.host("exec", sandbox_id, "--stdin", "--", "cat", stdin=b"line from host\n")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout, b"line from host\n")
        result = self.host("exec", sandbox_id, "--", "cat")
        self.assertEqual(result.stdout, b"")

    # Isolation.

    def test_host_processes_invisible_and_unsignalable(self):
        sandbox_id = self.prepare()
        sleeper = subprocess.Popen(["sleep", "60"])
        try:
            script = ("ls /proc | grep -c '^[0-9]'; test -e /proc/%d && echo visible; "
                      "kill -0 %d 2>/dev/null && echo signalled; ps -e -o pid= | wc -l"
                      % (sleeper.pid, sleeper.pid))
            result = self.run_script(sandbox_id, script)
            self.assertEqual(result.returncode, 0, result.stderr)
            out = result.stdout.decode()
            self.assertNotIn("visible", out)
            self.assertNotIn("signalled", out)
            # The init, the shell and at most a few helpers: nothing of the host.
            self.assertLessEqual(int(out.split()[0]), 6)
            self.assertIsNone(sleeper.poll())
        finally:
            sleeper.kill()
            sleeper.wait()

    def test_host_root_read_only(self):
        sandbox_id = self.prepare()
        for path in ["/usr/sbx-probe", "/etc/sbx-probe", "/sbx-probe", "/var/sbx-probe",
                     "/dev/sbx-probe", "/.sbx/sbx-probe", self.base + "/sbx-probe"]:
            with self.subTest(path=path):
                result = self.host("exec", sandbox_id, "--", "touch", path)
                self.assertNotEqual(result.returncode, 0)
                self.assertFalse(os.path.exists(path))

    def test_masked_paths_empty(self):
        sandbox_id = self.prepare()
        masked = ["/root", "/home", "/run", "/mnt", "/media", "/var/tmp", self.state,
                  self.runner_tmp, "/sys/fs/cgroup"]
        for path in masked:
            with self.subTest(path=path):
                result = self.host("exec", sandbox_id, "--", "sh", "-c",
                                   "test -d '%s' && ls -A '%s' | wc -l" % (path, path))
                if result.returncode != 0:
                    # Missing on this host: nothing to leak either.
                    self.assertFalse(os.path.exists(path), result.stderr)
                    continue
                self.assertEqual(result.stdout.strip(), b"0")
        result = self.host("exec", sandbox_id, "--", "cat",
                           os.path.join(self.runner_tmp, "response.json"))
        self.assertNotEqual(result.returncode, 0)
        self.assertNotIn(b"secret-job-token", result.stdout)

    def test_writable_directories(self):
        sandbox_id = self.prepare("--project", "group/project")
        result = self.run_script(sandbox_id,
                                 "echo b > /builds/file && echo c > /cache/file && "
                                 "echo t > /tmp/file && echo h > $HOME/file && cat /tmp/file")
        self.assertEqual(result.returncode, 0, result.stderr)
        builds_file = os.path.join(self.state, "jobs", sandbox_id, "builds", "file")
        with open(builds_file) as file:
            self.assertEqual(file.read(), "b\n")
        # The job's files belong to its mapped uid, never to the runner's.
        self.assertEqual(os.stat(builds_file).st_uid, ID_MAP_BASE + JOB_UID)
        cache_file = os.path.join(self.state, "cache", "group_2fproject", "unprotected", "file")
        self.assertTrue(os.path.exists(cache_file))

    def test_no_capabilities_and_job_uid(self):
        sandbox_id = self.prepare()
        result = self.host("exec", sandbox_id, "--", "grep", "^Cap\\|^Uid\\|^NoNewPrivs\\|^Seccomp:",
                           "/proc/self/status")
        self.assertEqual(result.returncode, 0, result.stderr)
        fields = dict(line.split(":", 1) for line in result.stdout.decode().splitlines())
        for name in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"]:
            self.assertEqual(int(fields[name].strip(), 16), 0, name)
        self.assertEqual(fields["Uid"].split()[0], str(JOB_UID))
        self.assertEqual(fields["NoNewPrivs"].strip(), "1")
        self.assertEqual(fields["Seccomp"].strip(), "2")

    def test_step_runs_as_mapped_host_uid(self):
        sandbox_id = self.prepare()
        proc = subprocess.Popen([HOST_TOOL, "--config", self.config, "exec", sandbox_id, "--",
                                 "sleep", "30"], env=dict(os.environ, SBX_BUILD_DIR=BUILD_DIR))
        try:
            processes = self.wait_for_step_processes(sandbox_id, 1)
            self.assertEqual([uid for _, uid in processes], [ID_MAP_BASE + JOB_UID])
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)

    def test_ptrace_inside_sandbox(self):
        sandbox_id = self.prepare()
        result = self.host("exec", sandbox_id, "--", "strace", "-f", "-e", "trace=exit_group",
                           "true")
        if b"No such file" in result.stderr and result.returncode == 127:
            self.skipTest("strace is not installed")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn(b"exit_group(0)", result.stderr)

    def test_other_job_files_unreadable(self):
        first = self.prepare()
        second = self.prepare()
        result = self.host("exec", first, "--", "sh", "-c", "echo private > /builds/secret")
        self.assertEqual(result.returncode, 0, result.stderr)
        first_builds = os.path.join(self.state, "jobs", first, "builds", "secret")
        self.assertTrue(os.path.exists(first_builds))
        result = self.host("exec", second, "--", "cat", first_builds)
        self.assertNotEqual(result.returncode, 0)
        self.assertNotIn(b"private", result.stdout)
        result = self.host("exec", second, "--", "cat", "/builds/secret")
        self.assertNotEqual(result.returncode, 0)

    def test_init_not_reachable_from_step(self):
        sandbox_id = self.prepare()
        result = self.run_script(sandbox_id, "kill -KILL 1; echo rc=$?; ls /proc/1/fd 2>&1 | head -1")
        self.assertIn(b"rc=1", result.stdout)
        self.assertEqual(self.host("exec", sandbox_id, "--", "true").returncode, 0)

    def test_step_is_child_of_init_in_stage_leaf(self):
        # The init forks the step straight into the stage's cgroup leaf: the step's parent is
        # PID 1 of the job, and no descriptor of the init reaches it.
        sandbox_id = self.prepare()
        # The descriptors are read from a child that inherited the shell's: the shell's own
        # list changes while it sets up the pipeline's pipe.
        result = self.host("exec", sandbox_id, "--", "sh", "-c",
                           "echo $PPID; sleep 30 & child=$!; "
                           "ls /proc/$child/fd | tr '\\n' ' '; echo; kill $child; "
                           "grep '^0::' /proc/self/cgroup")
        self.assertEqual(result.returncode, 0, result.stderr)
        lines = result.stdout.decode().splitlines()
        self.assertEqual(lines[0], "1")
        self.assertEqual(lines[1].split(), ["0", "1", "2"])
        self.assertRegex(lines[2], r"^0::/.*/%s/stage-[0-9]+$" % sandbox_id)

    def run_behind_older_init(self, mode):
        """Runs steps through an OlderInit in MODE and checks that exec joined the init."""
        sandbox_id = self.prepare()
        older = OlderInit(self.journal(sandbox_id)["data"]["job_dir"], mode)
        older.start()
        self.addCleanup(older.stop)
        result = self.host("exec", sandbox_id, "--", "sh", "-c",
                           "echo $PPID; grep '^0::' /proc/self/cgroup")
        self.assertEqual(result.returncode, 0, result.stderr)
        lines = result.stdout.decode().splitlines()
        # A joined step's parent is outside the job's pid namespace, so its PPID reads 0.
        self.assertEqual(lines[0], "0")
        self.assertRegex(lines[1], r"^0::/.*/%s/stage-[0-9]+$" % sandbox_id)
        self.assertEqual(self.host("exec", sandbox_id, "--", "sh", "-c", "exit 7").returncode, 7)
        return older

    def test_version_1_init_makes_exec_join(self):
        older = self.run_behind_older_init("version-1")
        self.assertEqual(older.stage_runs, 0)

    def test_unsupported_stage_run_makes_exec_join(self):
        older = self.run_behind_older_init("unsupported")
        self.assertEqual(older.stage_runs, 2)

    # Cancellation and crashes.

    def test_cancel_stops_step_and_keeps_sandbox(self):
        sandbox_id = self.prepare()
        proc = subprocess.Popen([HOST_TOOL, "--config", self.config, "exec", sandbox_id, "--",
                                 "sh", "-c", "sleep 1000 & sleep 1001"],
                                env=dict(os.environ, SBX_BUILD_DIR=BUILD_DIR),
                                stderr=subprocess.PIPE)
        self.wait_for_step_processes(sandbox_id, 3)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
        self.assertEqual(proc.returncode, ERROR_CANCELLED, stderr)
        self.assertLess(time.monotonic() - started, 5)
        self.assertEqual(namespace_processes(self.init_pid(sandbox_id)), [])
        self.assertEqual(self.host("exec", sandbox_id, "--", "true").returncode, 0)

    def wait_for_step_processes(self, sandbox_id, count):
        init_pid = self.init_pid(sandbox_id)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            processes = namespace_processes(init_pid)
            if len(processes) >= count:
                return processes
            time.sleep(0.05)
        self.fail("the step's processes did not start")

    def test_sigkill_of_exec_stops_step_and_keeps_sandbox(self):
        sandbox_id = self.prepare()
        # The background sleep is not a child of the exec process: only the init can stop it.
        proc = subprocess.Popen([HOST_TOOL, "--config", self.config, "exec", sandbox_id, "--",
                                 "sh", "-c", "setsid sleep 1000 & sleep 1001"],
                                env=dict(os.environ, SBX_BUILD_DIR=BUILD_DIR))
        self.wait_for_step_processes(sandbox_id, 3)
        proc.kill()
        proc.wait(timeout=10)
        init_pid = self.init_pid(sandbox_id)
        deadline = time.monotonic() + 5
        while namespace_processes(init_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(namespace_processes(init_pid), [])
        self.assertTrue(process_alive(init_pid))
        result = self.host("exec", sandbox_id, "--", "sh", "-c", "echo alive")
        self.assertEqual(result.stdout, b"alive\n")

    def test_timeout_stops_step(self):
        sandbox_id = self.prepare()
        started = time.monotonic()
        result = self.host("exec", sandbox_id, "--timeout", "1", "--", "sleep", "30")
        self.assertEqual(result.returncode, 201, result.stderr)
        self.assertIn(b"timed out", result.stderr)
        self.assertLess(time.monotonic() - started, 10)

    def test_exec_after_init_death_is_system_failure(self):
        sandbox_id = self.prepare()
        os.kill(self.init_pid(sandbox_id), signal.SIGKILL)
        time.sleep(0.2)
        result = self.host("exec", sandbox_id, "--", "true")
        self.assertEqual(result.returncode, ERROR_SYSTEM, result.stderr)
        self.assertIn("%s local dead" % sandbox_id, self.host("list").stdout.decode())

    # Destroy.

    def test_destroy_twice_and_unknown(self):
        sandbox_id = self.prepare()
        init_pid = self.init_pid(sandbox_id)
        self.assertEqual(self.host("destroy", sandbox_id).returncode, 0)
        self.assertEqual(self.host("destroy", sandbox_id).returncode, 0)
        self.assert_gone(sandbox_id, init_pid)
        self.assertEqual(self.host("destroy", "never-prepared").returncode, 0)

    def test_destroy_half_done_prepare(self):
        # A prepare that died after starting the init leaves the entry in state "preparing".
        sandbox_id = self.prepare()
        init_pid = self.init_pid(sandbox_id)
        entry = self.journal(sandbox_id)
        entry["state"] = "preparing"
        self.write_journal(sandbox_id, entry)
        self.assertEqual(self.host("destroy", sandbox_id).returncode, 0)
        self.assert_gone(sandbox_id, init_pid)

    def test_destroy_prepare_that_died_before_the_init(self):
        sandbox_id = self.prepare()
        entry = self.journal(sandbox_id)
        os.kill(entry["data"]["init"]["pid"], signal.SIGKILL)
        del entry["data"]["init"]
        entry["state"] = "preparing"
        self.write_journal(sandbox_id, entry)
        self.assertEqual(self.host("destroy", sandbox_id).returncode, 0)
        self.assert_gone(sandbox_id)

    def test_destroy_never_kills_reused_pid(self):
        sandbox_id = self.prepare()
        init_pid = self.init_pid(sandbox_id)
        bystander = subprocess.Popen(["sleep", "60"])
        try:
            entry = self.journal(sandbox_id)
            entry["data"]["init"]["pid"] = bystander.pid
            self.write_journal(sandbox_id, entry)
            self.assertEqual(self.host("destroy", sandbox_id).returncode, 0)
            self.assertIsNone(bystander.poll())
        finally:
            bystander.kill()
            bystander.wait()
            os.kill(init_pid, signal.SIGKILL)

    def test_destroy_checks_namespace_of_reused_pid(self):
        # Even a reused pid with the very start time recorded is not the init.
        sandbox_id = self.prepare()
        init_pid = self.init_pid(sandbox_id)
        bystander = subprocess.Popen(["sleep", "60"])
        try:
            with open("/proc/%d/stat" % bystander.pid) as stat:
                start_time = int(stat.read().rsplit(")", 1)[1].split()[19])
            entry = self.journal(sandbox_id)
            entry["data"]["init"]["pid"] = bystander.pid
            entry["data"]["init"]["start_time"] = start_time
            self.write_journal(sandbox_id, entry)
            self.assertEqual(self.host("destroy", sandbox_id).returncode, 0)
            self.assertIsNone(bystander.poll())
        finally:
            bystander.kill()
            bystander.wait()
            os.kill(init_pid, signal.SIGKILL)

    def test_failed_prepare_cleans_up(self):
        self.write_config("local:\n  rootfs: %s/no-such-root\n" % self.base)
        sandbox_id = "t-" + secrets.token_hex(6)
        result = self.host("prepare", sandbox_id)
        self.assertEqual(result.returncode, ERROR_SYSTEM, result.stderr)
        self.assertIn(b"no-such-root", result.stderr)
        self.assert_gone(sandbox_id)

    def test_init_exits_at_deadline(self):
        self.write_config("deadline_margin: 0\n")
        sandbox_id = self.prepare("--timeout", "2")
        init_pid = self.init_pid(sandbox_id)
        self.assertTrue(process_alive(init_pid))
        deadline = time.monotonic() + 10
        while process_alive(init_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertFalse(process_alive(init_pid))
        self.assertIn("%s local dead" % sandbox_id, self.host("list").stdout.decode())

    # Configuration.

    def test_check_reports_prerequisites(self):
        result = self.host("check")
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        lines = result.stdout.decode().splitlines()
        for name in ["user namespaces", "uid mapping", "cgroups", "seccomp", "state directory"]:
            self.assertTrue(any(line.startswith("ok: %s:" % name) for line in lines),
                            "%s not ok in %s" % (name, lines))
        self.assertTrue(any(": gitlab-runner:" in line for line in lines))

    def test_gitlab_runner_binary_exposed(self):
        fake = os.path.join(self.base, "fake-gitlab-runner")
        with open(fake, "w") as file:
            file.write("#!/bin/sh\necho fake runner \"$@\"\n")
        os.chmod(fake, 0o755)
        self.write_config("local:\n  gitlab_runner_path: %s\n" % fake)
        sandbox_id = self.prepare()
        result = self.run_script(sandbox_id, "command -v gitlab-runner; gitlab-runner artifacts")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout, b"/.sbx/bin/gitlab-runner\nfake runner artifacts\n")

    def test_unmapped_image_rejected(self):
        self.write_config("local:\n  unmapped_image: reject\n")
        sandbox_id = "t-" + secrets.token_hex(6)
        result = self.host("prepare", sandbox_id, "--image", "ruby:3.3")
        self.assertEqual(result.returncode, 205, result.stderr)
        self.assertIn(b"ruby:3.3", result.stderr)
        self.assert_gone(sandbox_id)

    def test_unmapped_image_announced(self):
        sandbox_id = "t-" + secrets.token_hex(6)
        self.sandboxes.append(sandbox_id)
        result = self.host("prepare", sandbox_id, "--image", "ruby:3.3")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn(b"\"ruby:3.3\" has no entry in local.images and is ignored", result.stderr)

    # Network.

    def test_loopback_and_proxy_socket(self):
        sandbox_id = self.prepare()
        script = ("ip -o -4 addr show lo | awk '{print $4}'; ip -o link | wc -l; "
                  "python3 -c 'import socket; socket.getaddrinfo(\"localhost\", 80, "
                  "socket.AF_INET, 0, 0, socket.AI_ADDRCONFIG); print(\"addrconfig ok\")'")
        result = self.run_script(sandbox_id, script)
        self.assertEqual(result.returncode, 0, result.stderr)
        out = result.stdout.decode().split()
        self.assertIn("127.0.0.1/8", out)
        self.assertIn("127.0.0.2/8", out)
        self.assertEqual(out[2], "1")  # only lo
        self.assertIn("ok", out)

    def test_proxy_allows_listed_and_refuses_others(self):
        server = HTTPServer(("127.0.0.1", 0), _Hello)
        port = server.server_address[1]
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            sandbox_id = self.prepare("--allow", "127.0.0.1:%d" % port)
            curl = "curl -s -o - -w ' %%{http_code}' --noproxy '' -x http://127.0.0.1:3128 %s"
            result = self.run_script(sandbox_id, curl % ("http://127.0.0.1:%d/" % port))
            self.assertIn(b"hello from host 200", result.stdout, result.stderr)
            result = self.run_script(sandbox_id, curl % ("http://127.0.0.1:%d/" % (port + 1)))
            self.assertIn(b"403", result.stdout)
            with open(os.path.join(self.state, "jobs", sandbox_id, "egress.log")) as log:
                self.assertIn(str(port), log.read())
        finally:
            server.shutdown()
            server.server_close()

    def test_direct_connection_to_host_fails(self):
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        try:
            port = listener.getsockname()[1]
            sandbox_id = self.prepare()
            result = self.run_script(sandbox_id,
                                     "exec 3<>/dev/tcp/127.0.0.1/%d && echo connected" % port)
            self.assertNotIn(b"connected", result.stdout)
        finally:
            listener.close()


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"hello from host"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    unittest.main()
