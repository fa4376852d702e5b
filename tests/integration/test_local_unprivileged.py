"""Integration tests of the local backend's unprivileged mode, driven like GitLab Runner does.

Each test creates its own user with a random name, gives it subordinate id ranges and, where
the test needs one, a cgroup subtree in every hierarchy (chown -R, with the runner started in a
leaf of it, as systemd's Delegate=yes would), and runs `sbx gitlab config|prepare|run|cleanup`
as that user through setpriv. Cleanups remove the user, its ranges, its cgroups and its files
even when a test fails. The tests need root to set all that up.
"""
import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import unittest
from http.server import BaseHTTPRequestHandler, HTTPServer

BUILD_DIR = os.path.abspath(os.environ.get("SBX_BUILD_DIR", "build"))
SBX = os.path.join(BUILD_DIR, "sbx")
PLUGIN = os.path.join(BUILD_DIR, "sbx-local.so")
CGROUP_ROOT = "/sys/fs/cgroup"
SETPRIV = shutil.which("setpriv") or "/usr/bin/setpriv"
NEWUIDMAP = shutil.which("newuidmap") or "/usr/bin/newuidmap"
BUILD_FAILURE = 1
SYSTEM_FAILURE = 2
JOB_UID = 1000
MEMORY_MAX = 512 * 1024 * 1024
PIDS_MAX = 200


def cgroup_layout():
    """"unified", "hybrid" or "legacy", detected the way systemd does."""
    if os.path.exists(os.path.join(CGROUP_ROOT, "cgroup.controllers")):
        return "unified"
    if os.path.exists(os.path.join(CGROUP_ROOT, "unified", "cgroup.controllers")):
        return "hybrid"
    return "legacy"


def delegation_mounts():
    """The hierarchies a job with memory and pids limits needs a delegated cgroup in."""
    if cgroup_layout() == "unified":
        return [CGROUP_ROOT]
    return [os.path.join(CGROUP_ROOT, name) for name in ("unified", "memory", "pids")]


def remove_cgroup_tree(path):
    """Removes PATH and every cgroup below it, killing what still runs there."""
    if not os.path.isdir(path):
        return
    for entry in os.listdir(path):
        child = os.path.join(path, entry)
        if os.path.isdir(child):
            remove_cgroup_tree(child)
    for attempt in range(50):
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            kill_file = os.path.join(path, "cgroup.kill")
            if os.path.exists(kill_file):
                with open(kill_file, "w") as kill:
                    kill.write("1")
            time.sleep(0.05)


def processes_with_marker(marker):
    """Host pids of live processes whose command line contains MARKER."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as cmdline:
                if marker.encode() not in cmdline.read():
                    continue
            with open("/proc/%s/stat" % entry) as stat:
                if stat.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                    continue
            found.append(int(entry))
        except OSError:
            pass
    return found


# Runs argv[1:] in a new user namespace that maps every id onto itself and allows no user
# namespace below it (user.max_user_namespaces is per user namespace), as on a kernel where
# the sysctl is 0. Needs root.
LIMITED_USERNS = r"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
ready_read, ready_write = os.pipe()
go_read, go_write = os.pipe()
child = os.fork()
if child == 0:
    if libc.unshare(0x10000000) != 0:  # CLONE_NEWUSER
        os._exit(90)
    os.write(ready_write, b"u")
    os.read(go_read, 1)
    with open("/proc/sys/user/max_user_namespaces", "w") as limit:
        limit.write("0")
    os.execv(sys.argv[1], sys.argv[1:])
os.read(ready_read, 1)
for name in ("uid_map", "gid_map"):
    with open("/proc/%d/%s" % (child, name), "w") as map_file:
        map_file.write("0 0 4294967295")
os.write(go_write, b"g")
status = os.waitpid(child, 0)[1]
sys.exit(os.waitstatus_to_exitcode(status))
"""


def error_lines(stderr):
    """The lines of sbx's stderr that report an error, without GitLab section markers."""
    return [line for line in stderr.decode(errors="replace").splitlines()
            if line.startswith("sbx: ") and "warning" not in line]


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"hello through the proxy"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@unittest.skipUnless(os.geteuid() == 0, "creating users and delegating cgroups needs root")
@unittest.skipUnless(os.path.exists(SBX) and os.path.exists(PLUGIN), "build sbx first")
@unittest.skipUnless(os.path.exists(SETPRIV) and os.path.exists(NEWUIDMAP),
                     "needs setpriv (util-linux) and newuidmap (uidmap)")
@unittest.skipIf(cgroup_layout() == "legacy", "the v1 freezer cannot kill subordinate uids")
class UnprivilegedModeTest(unittest.TestCase):
    def setUp(self):
        self.name = "sbxt-" + secrets.token_hex(4)
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh",
                        "-K", "SUB_UID_COUNT=0", "-K", "SUB_GID_COUNT=0", self.name],
                       check=True, capture_output=True)
        self.addCleanup(self.remove_user)
        entry = pwd.getpwnam(self.name)
        self.uid, self.gid, self.home = entry.pw_uid, entry.pw_gid, entry.pw_dir
        os.chmod(self.home, 0o755)
        self.state_home = os.path.join(self.home, "state")
        self.state = os.path.join(self.state_home, "sbx")
        self.runner_tmp = self.user_dir("runner-tmp")
        self.config = os.path.join(self.home, "config.yaml")
        # A copy the user can run wherever the build directory is; sbx loads the plugin next
        # to itself.
        bin_dir = os.path.join(self.home, "bin")
        os.mkdir(bin_dir, 0o755)
        for path in (SBX, PLUGIN):
            shutil.copy2(path, bin_dir)
        self.sbx_path = os.path.join(bin_dir, "sbx")
        self.cgroups = []
        self.subuid_start = None
        self.write_config()

    # Setting up the runner's user.

    def remove_user(self):
        for path in reversed(self.cgroups):
            remove_cgroup_tree(path)
        if self.subuid_start is not None:
            span = "%d-%d" % (self.subuid_start, self.subuid_start + 65535)
            subprocess.run(["usermod", "--del-subuids", span, "--del-subgids", span,
                            self.name], capture_output=True)
        # userdel removes the user's subordinate ranges and, with -r, its home, including
        # anything a failed test left there under subordinate ids.
        subprocess.run(["userdel", "--remove", self.name], capture_output=True)
        for path in ("/etc/subuid", "/etc/subgid"):
            with open(path) as ranges:
                self.assertNotIn(self.name + ":", ranges.read())

    def user_dir(self, name):
        path = os.path.join(self.home, name)
        os.mkdir(path, 0o700)
        os.chown(path, self.uid, self.gid)
        return path

    def add_subordinate_ranges(self):
        """Gives the user 65536 subordinate uids and gids above every range in use."""
        start = 100000
        for path in ("/etc/subuid", "/etc/subgid"):
            with open(path) as ranges:
                for line in ranges:
                    fields = line.strip().split(":")
                    if len(fields) == 3 and fields[1].isdigit() and fields[2].isdigit():
                        start = max(start, int(fields[1]) + int(fields[2]))
        start = (start + 65535) // 65536 * 65536
        span = "%d-%d" % (start, start + 65535)
        subprocess.run(["usermod", "--add-subuids", span, "--add-subgids", span, self.name],
                       check=True, capture_output=True)
        self.subuid_start = start

    def delegate_cgroups(self):
        """Chowns a new cgroup in every needed hierarchy to the user; returns the leaves the
        runner is started in."""
        leaves = []
        for mount in delegation_mounts():
            path = os.path.join(mount, self.name)
            os.mkdir(path)
            self.cgroups.append(path)
            leaf = os.path.join(path, "runner")
            os.mkdir(leaf)
            for directory, _, files in os.walk(path):
                os.chown(directory, self.uid, self.gid)
                for name in files:
                    os.chown(os.path.join(directory, name), self.uid, self.gid)
            leaves.append(leaf)
        if cgroup_layout() == "unified":
            # The controllers must reach the delegated cgroup for the job's limits.
            with open(os.path.join(CGROUP_ROOT, "cgroup.subtree_control"), "w") as control:
                control.write("+memory +pids")
        self.runner_leaves = leaves
        return leaves

    def write_config(self, extra=""):
        with open(self.config, "w") as config:
            config.write("stop_grace: 1\nlocal:\n  memory_max: %d\n  pids_max: %d\n%s" %
                         (MEMORY_MAX, PIDS_MAX, extra))
        os.chown(self.config, self.uid, self.gid)

    # Running sbx as the user, as GitLab Runner's custom executor does.

    def sbx(self, *args, env=None, timeout=60, in_cgroups=True, background=False, prefix=()):
        """Runs sbx as the user: in its delegated cgroups when there are any, and through the
        command PREFIX when one is given."""
        environment = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": self.home,
            "XDG_STATE_HOME": self.state_home,
            "SBX_CONFIG": self.config,
            "TMPDIR": self.runner_tmp,
            "BUILD_FAILURE_EXIT_CODE": str(BUILD_FAILURE),
            "SYSTEM_FAILURE_EXIT_CODE": str(SYSTEM_FAILURE),
            "CUSTOM_ENV_CI_JOB_ID": "4711",
            "CUSTOM_ENV_CI_PROJECT_PATH": "group/project",
        }
        environment.update(env or {})
        command = list(prefix) + [SETPRIV, "--reuid", self.name, "--regid", self.name,
                                  "--init-groups", self.sbx_path] + list(args)
        leaves = getattr(self, "runner_leaves", []) if in_cgroups else []
        if leaves:
            # Enter the leaves as root, then drop to the user: the runner starts inside its
            # delegated subtree.
            moves = "".join('echo $$ > "%s/cgroup.procs" && ' % leaf for leaf in leaves)
            command = ["/bin/sh", "-c", moves + 'exec "$@"', "sh"] + command
        if background:
            return subprocess.Popen(command, env=environment, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, start_new_session=True)
        return subprocess.run(command, env=environment, capture_output=True, timeout=timeout)

    def gitlab_config(self):
        result = self.sbx("gitlab", "config")
        self.assertEqual(result.returncode, 0, result.stderr)
        return json.loads(result.stdout)["job_env"]["SBX_SANDBOX_ID"]

    def job_env(self, sandbox_id):
        return {"SBX_SANDBOX_ID": sandbox_id,
                "BUILD_EXIT_CODE_FILE": os.path.join(self.runner_tmp, "exit-code")}

    def prepare(self, **kwargs):
        sandbox_id = self.gitlab_config()
        self.addCleanup(self.sbx, "gitlab", "cleanup", env=self.job_env(sandbox_id))
        result = self.sbx("gitlab", "prepare", env=self.job_env(sandbox_id), **kwargs)
        self.assertEqual(result.returncode, 0, result.stderr)
        return sandbox_id

    def write_script(self, body):
        path = os.path.join(self.runner_tmp, "script-" + secrets.token_hex(4))
        with open(path, "w") as script:
            script.write("set -e\n" + body + "\n")
        os.chown(path, self.uid, self.gid)
        return path

    def run_stage(self, sandbox_id, body, stage="build_script", background=False):
        return self.sbx("gitlab", "run", self.write_script(body), stage,
                        env=self.job_env(sandbox_id), background=background)

    def cleanup(self, sandbox_id):
        result = self.sbx("gitlab", "cleanup", env=self.job_env(sandbox_id))
        self.assertEqual(result.returncode, 0, result.stderr)

    def journal(self, sandbox_id):
        with open(os.path.join(self.state, "sandboxes", sandbox_id + ".json")) as entry:
            return json.load(entry)["data"]

    def assert_state_empty(self, sandbox_id):
        """Nothing of SANDBOX_ID is left: no journal entry, job directory or cgroup."""
        self.assertFalse(os.path.exists(os.path.join(self.state, "sandboxes",
                                                     sandbox_id + ".json")))
        self.assertFalse(os.path.exists(os.path.join(self.state, "jobs", sandbox_id)))
        self.assertFalse(os.path.exists(os.path.join(self.state, "locks", sandbox_id + ".lock")))
        for top in self.cgroups:
            for directory, _, _ in os.walk(top):
                self.assertNotIn(sandbox_id, directory)

    # The tests.

    def test_job_runs_as_subordinate_uid(self):
        self.add_subordinate_ranges()
        self.delegate_cgroups()
        marker = "host-marker-" + secrets.token_hex(4)
        host_process = subprocess.Popen([marker, "60"], executable="/bin/sleep")
        self.addCleanup(host_process.wait)
        self.addCleanup(host_process.kill)
        deadline = time.monotonic() + 10
        while not processes_with_marker(marker) and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertEqual(processes_with_marker(marker), [host_process.pid])

        sandbox_id = self.prepare()
        data = self.journal(sandbox_id)
        self.assertTrue(data["job_dir"].startswith(self.state + "/jobs/"))
        self.assertEqual(data["ids"]["mode"], "unprivileged")
        self.assertEqual(data["ids"]["host_uid"], self.subuid_start + JOB_UID - 1)
        # The job cgroups are below the delegated ones and carry the limits.
        paths = data["cgroup"]["paths"]
        self.assertEqual(len(paths), len(self.cgroups))
        for path in paths:
            self.assertTrue(any(path == os.path.join(top, "sbx", sandbox_id)
                                for top in self.cgroups), path)
        for path in paths:
            if os.path.exists(os.path.join(path, "memory.limit_in_bytes")):
                with open(os.path.join(path, "memory.limit_in_bytes")) as limit:
                    self.assertEqual(int(limit.read()), MEMORY_MAX)
            if os.path.exists(os.path.join(path, "memory.max")):
                with open(os.path.join(path, "memory.max")) as limit:
                    self.assertEqual(int(limit.read()), MEMORY_MAX)
            if os.path.exists(os.path.join(path, "pids.max")):
                with open(os.path.join(path, "pids.max")) as limit:
                    self.assertEqual(int(limit.read()), PIDS_MAX)

        result = self.run_stage(sandbox_id, "\n".join([
            "id -u",
            "mkdir -p /builds/tree/locked && echo data > /builds/tree/locked/file",
            "chmod 0500 /builds/tree/locked",
            "touch /usr/sbx-probe-%s 2>/dev/null && echo wrote-usr || echo usr-read-only" % marker,
            "touch /home/probe 2>/dev/null && echo wrote-home || echo home-read-only",
            "cat /proc/[0-9]*/cmdline | tr '\\0' ' '; echo",
            "ls -d /proc/[0-9]* | wc -l",
            "exec -a stage-leftover-%s sleep 300 &" % marker,
            "echo started",
            "echo parent-$PPID",
        ]))
        self.assertEqual(result.returncode, 0, result.stderr)
        lines = result.stdout.decode().splitlines()
        self.assertEqual(lines[0], str(JOB_UID))
        # The init forked the step into the delegated stage leaf itself.
        self.assertIn("parent-1", lines)
        self.assertIn("usr-read-only", lines)
        self.assertIn("home-read-only", lines)
        self.assertFalse(os.path.exists("/usr/sbx-probe-" + marker))
        self.assertNotIn(marker, lines[3])
        self.assertLessEqual(int(lines[4]), 5, lines[3])
        # The stage's cgroup leaf ended what the step left running.
        self.assertEqual(processes_with_marker("stage-leftover-" + marker), [])

        # On the host the job's files belong to the subordinate uid, not to the runner.
        builds = data["builds_dir"]
        owner = os.stat(os.path.join(builds, "tree", "locked", "file")).st_uid
        self.assertEqual(owner, self.subuid_start + JOB_UID - 1)
        self.assertNotEqual(owner, self.uid)

        result = self.run_stage(sandbox_id, "exit 3", stage="after_script")
        self.assertEqual(result.returncode, BUILD_FAILURE, result.stderr)
        with open(os.path.join(self.runner_tmp, "exit-code")) as code:
            self.assertEqual(code.read().strip(), "3")

        self.cleanup(sandbox_id)
        self.assert_state_empty(sandbox_id)
        self.assertFalse(os.path.exists(builds))

    def test_egress_proxy_serves_unprivileged_job(self):
        self.add_subordinate_ranges()
        self.delegate_cgroups()
        server = HTTPServer(("127.0.0.1", 0), _Hello)
        port = server.server_address[1]
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        self.addCleanup(server.server_close)
        self.addCleanup(server.shutdown)
        self.write_config("network:\n  user_allow: [\"127.0.0.1/32:%d\"]\n" % port)

        sandbox_id = self.prepare()
        # NO_PROXY names 127.0.0.1, so curl needs the proxy spelled out to use it.
        curl = "curl -s -o - -w ' %%{http_code}' --noproxy '' -x \"$HTTP_PROXY\" " \
               "http://127.0.0.1:%d/"
        result = self.run_stage(sandbox_id, curl % port)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn(b"hello through the proxy 200", result.stdout)
        result = self.run_stage(sandbox_id, (curl % (port + 1)) + " || true")
        self.assertIn(b"403", result.stdout)
        self.cleanup(sandbox_id)
        self.assert_state_empty(sandbox_id)

    def test_no_subordinate_range_rejected(self):
        self.delegate_cgroups()
        sandbox_id = self.gitlab_config()
        result = self.sbx("gitlab", "prepare", env=self.job_env(sandbox_id))
        self.assertEqual(result.returncode, SYSTEM_FAILURE, result.stderr)
        errors = error_lines(result.stderr)
        self.assertEqual(len(errors), 1, result.stderr)
        self.assertIn("subordinate id range for %s" % self.name, errors[0])
        self.assertIn("/etc/subuid", errors[0])
        self.assertIn("local.allow_runner_uid: true", errors[0])
        self.assert_state_empty(sandbox_id)
        self.assertFalse(os.path.exists(os.path.join(self.state, "cache")))

    def test_allow_runner_uid_runs_as_runner(self):
        self.delegate_cgroups()
        self.write_config("  allow_runner_uid: true\n")
        sandbox_id = self.prepare()
        self.assertEqual(self.journal(sandbox_id)["ids"]["mode"], "runner-uid")
        result = self.run_stage(sandbox_id, "id -u; cat /proc/self/uid_map; "
                                            "echo x > /builds/mine")
        self.assertEqual(result.returncode, 0, result.stderr)
        fields = result.stdout.decode().split()
        self.assertEqual(fields[0], str(JOB_UID))
        self.assertEqual(fields[1:4], [str(JOB_UID), str(self.uid), "1"])
        builds = self.journal(sandbox_id)["builds_dir"]
        self.assertEqual(os.stat(os.path.join(builds, "mine")).st_uid, self.uid)
        self.cleanup(sandbox_id)
        self.assert_state_empty(sandbox_id)

    def test_without_cgroup_rejected(self):
        self.add_subordinate_ranges()
        sandbox_id = self.gitlab_config()
        result = self.sbx("gitlab", "prepare", env=self.job_env(sandbox_id))
        self.assertEqual(result.returncode, SYSTEM_FAILURE, result.stderr)
        errors = error_lines(result.stderr)
        self.assertEqual(len(errors), 1, result.stderr)
        self.assertIn("not delegated to that uid", errors[0])
        self.assertIn(CGROUP_ROOT, errors[0])
        self.assertIn("Delegate=yes", errors[0])
        self.assertIn("local.require_cgroup: false", errors[0])
        self.assert_state_empty(sandbox_id)
        jobs = os.path.join(self.state, "jobs")
        self.assertEqual(os.listdir(jobs) if os.path.exists(jobs) else [], [])
        self.assertFalse(os.path.exists(os.path.join(self.state, "cache")))

    def test_user_namespace_limit_rejected(self):
        self.add_subordinate_ranges()
        self.delegate_cgroups()
        sandbox_id = self.gitlab_config()
        result = self.sbx("gitlab", "prepare", env=self.job_env(sandbox_id),
                          prefix=["/usr/bin/python3", "-c", LIMITED_USERNS])
        self.assertEqual(result.returncode, SYSTEM_FAILURE, result.stderr)
        errors = error_lines(result.stderr)
        self.assertEqual(len(errors), 1, result.stderr)
        self.assertIn("cannot create the job's namespaces", errors[0])
        self.assertIn("user.max_user_namespaces", errors[0])
        self.assertIn("sysctl -w", errors[0])
        # The job cgroups and directory were made before the clone failed; all are gone.
        self.assert_state_empty(sandbox_id)
        self.assertEqual(os.listdir(os.path.join(self.state, "jobs")), [])
        for top in self.cgroups:
            self.assertFalse(os.path.exists(os.path.join(top, "sbx", sandbox_id)))

    def test_without_cgroup_runs_when_allowed(self):
        self.add_subordinate_ranges()
        self.write_config("  require_cgroup: false\n")
        marker = secrets.token_hex(4)
        sandbox_id = self.gitlab_config()
        self.addCleanup(self.sbx, "gitlab", "cleanup", env=self.job_env(sandbox_id))
        result = self.sbx("gitlab", "prepare", env=self.job_env(sandbox_id))
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn(b"runs without a cgroup", result.stderr)
        data = self.journal(sandbox_id)
        self.assertNotIn("cgroup", data)
        self.assertTrue(data["stage_pid_namespace"])

        # The stage has its own pid namespace and /proc: ps works and lists only the stage.
        result = self.run_stage(sandbox_id, "\n".join([
            "ps -e -o pid=,args= > /tmp/ps.txt",
            "cat /tmp/ps.txt",
            "test -d /proc/$$",
            "exec -a stage-leftover-%s sleep 300 &" % marker,
            "mkdir -p /builds/locked && touch /builds/locked/f && chmod 0500 /builds/locked",
        ]))
        self.assertEqual(result.returncode, 0, result.stderr)
        listed = result.stdout.decode().splitlines()
        self.assertLessEqual(len(listed), 4, listed)
        self.assertTrue(any("ps -e" in line for line in listed), listed)
        # The stage's pid namespace died with the step and took the leftover with it.
        self.assertEqual(processes_with_marker("stage-leftover-" + marker), [])

        # A cancelled step that ignores SIGTERM is killed after stop_grace; the sandbox stays.
        runner = self.run_stage(sandbox_id, "trap '' TERM; echo waiting; "
                                            "exec -a stuck-%s sleep 300" % marker,
                                background=True)
        deadline = time.monotonic() + 10
        while not processes_with_marker("stuck-" + marker) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertNotEqual(processes_with_marker("stuck-" + marker), [])
        started = time.monotonic()
        os.kill(runner.pid, signal.SIGTERM)
        runner.communicate(timeout=20)
        self.assertLess(time.monotonic() - started, 10)
        self.assertNotEqual(runner.returncode, 0)
        deadline = time.monotonic() + 5
        while processes_with_marker("stuck-" + marker) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(processes_with_marker("stuck-" + marker), [])

        result = self.run_stage(sandbox_id, "echo still-there", stage="after_script")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn(b"still-there", result.stdout)

        builds = data["builds_dir"]
        self.cleanup(sandbox_id)
        self.assert_state_empty(sandbox_id)
        self.assertFalse(os.path.exists(builds))


if __name__ == "__main__":
    unittest.main()
