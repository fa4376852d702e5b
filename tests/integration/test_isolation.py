"""Isolation of the local backend, seen from inside a job and from the host.

Egress tests run sbx inside a client network namespace the test creates, joined by a veth pair
to a server namespace with two HTTP servers, so the proxy's upstream connections can reach
nothing but those servers (192.0.2.0/29, created and deleted by the test)."""

import functools
import http.server
import json
import os
import random
import re
import shutil
import subprocess
import tempfile
import threading
import time
import unittest

from harness import gitlab_runner
from harness.support import SbxTestCase, TestNetwork, sleeper, unique_seconds

ALLOWED = "192.0.2.2"
REFUSED = "192.0.2.3"
PORT = 8080


def ready_marker(tag):
    return "echo %s-$((6*7))-ready" % tag, ("%s-42-ready" % tag).encode()


class EgressTest(SbxTestCase):

    def setUp(self):
        super().setUp()
        self.network = TestNetwork().create()
        self.addCleanup(self.network.destroy)
        self.network.serve(ALLOWED, PORT, {"index.html": b"allowed-server-body\n"})
        self.network.serve(REFUSED, PORT, {"index.html": b"refused-server-body\n"})
        self.write_config(network={"allow_ci_server": False,
                                   "user_allow": ["%s/32:%d" % (ALLOWED, PORT)],
                                   "runner_allow": ["%s/32:%d" % (ALLOWED, PORT)]})
        self.settings.wrapper = self.network.client_wrapper()

    def test_servers_reachable_without_sandbox(self):
        # Both servers respond to a direct request from the client namespace, so a refusal
        # inside the sandbox comes from sbx and not from the test network.
        self.assertEqual(self.network.fetch_from_client("http://%s:%d/" % (ALLOWED, PORT)),
                         b"allowed-server-body\n")
        self.assertEqual(self.network.fetch_from_client("http://%s:%d/" % (REFUSED, PORT)),
                         b"refused-server-body\n")

    def test_allowed_and_refused_destinations(self):
        attempt = self.prepared(self.new_job())
        self.run_ok(attempt, "get_sources", ["true"], body=attempt.get_sources_body())
        record = attempt.run_stage("build_script", commands=[
            "env | grep -i '^https\\?_proxy=' | sort",
            "curl -sS -m 10 http://%s:%d/" % (ALLOWED, PORT),
            "curl -sS -m 10 -o /dev/null -w 'plain-refused-%%{http_code}\\n' http://%s:%d/ "
            "|| true" % (REFUSED, PORT),
            "curl -sS -m 10 -p -o /dev/null http://%s:%d/ 2>&1 | sed 's/^/tunnel: /' || true"
            % (REFUSED, PORT),
            "curl -sS -m 5 --noproxy '*' http://%s:%d/ && echo direct-worked "
            "|| echo direct-failed-$?" % (ALLOWED, PORT),
        ])
        self.assertEqual(record.returncode, 0, self.describe([record]))
        stdout = bytes(record.stdout)
        log = bytes(record.output)
        self.assertIn(b"allowed-server-body\n", stdout)
        self.assertNotRegex(stdout, rb"(?m)^refused-server-body$")
        self.assertIn(b"plain-refused-403\n", stdout)
        self.assertRegex(stdout, rb"tunnel: curl: \(56\).*403")
        self.assertIn(b"direct-failed-", stdout)
        self.assertNotRegex(stdout, rb"(?m)^direct-worked$")
        self.assertRegex(stdout, rb"(?m)^http_proxy=http://127\.0\.0\.1:\d+$")
        self.assertRegex(stdout, rb"(?m)^HTTPS_PROXY=http://127\.0\.0\.1:\d+$")
        # The refusal is explained in the job log, naming the destination.
        refusal_lines = [line for line in log.split(b"\n")
                         if REFUSED.encode() in line and b"curl" not in line
                         and b"tunnel" not in line and b"plain-refused" not in line]
        self.assertTrue(refusal_lines, "no refusal line naming %s in the job log:\n%s"
                        % (REFUSED, log.decode(errors="replace")))
        attempt.cleanup()

    def test_runner_and_user_profiles(self):
        # Each list allows one of the two servers, so each stage reaches exactly one.
        self.write_config(network={"allow_ci_server": False,
                                   "runner_allow": ["%s/32:%d" % (ALLOWED, PORT)],
                                   "user_allow": ["%s/32:%d" % (REFUSED, PORT)]})
        attempt = self.prepared(self.new_job())
        self.run_ok(attempt, "get_sources", ["true"], body=attempt.get_sources_body())
        probe = ["curl -sS -m 10 -o /dev/null -w 'code-%%{http_code}\\n' http://%s:%d/ || true"
                 % (address, PORT) for address in (ALLOWED, REFUSED)]
        runner_stage = attempt.run_stage("archive_cache", commands=probe)
        user_stage = attempt.run_stage("build_script", commands=probe)
        self.assertEqual(runner_stage.returncode, 0, self.describe([runner_stage]))
        self.assertEqual(user_stage.returncode, 0, self.describe([user_stage]))
        self.assertEqual(re.findall(rb"code-\d+", bytes(runner_stage.stdout)),
                         [b"code-200", b"code-403"])
        self.assertEqual(re.findall(rb"code-\d+", bytes(user_stage.stdout)),
                         [b"code-403", b"code-200"])
        attempt.cleanup()

    def test_metadata_address_refused(self):
        attempt = self.prepared(self.new_job())
        self.run_ok(attempt, "get_sources", ["true"], body=attempt.get_sources_body())
        record = attempt.run_stage("build_script", commands=[
            "curl -sS -m 10 -D - -o /dev/null http://169.254.169.254/latest/meta-data/ "
            "|| true",
            "curl -sS -m 10 -o /dev/null https://169.254.169.254/ 2>&1 "
            "| sed 's/^/tls: /' || true",
        ])
        self.assertEqual(record.returncode, 0, self.describe([record]))
        stdout = bytes(record.stdout)
        self.assertRegex(stdout, rb"HTTP/1\.[01] 403")
        self.assertIn(b"destination_ip_prohibited", stdout)
        self.assertRegex(stdout, rb"tls: curl: \(56\).*403")
        attempt.cleanup()


class LoopbackServer:
    """An HTTP server on the host's 127.0.0.1, standing in for a host service."""

    def __init__(self):
        handler = functools.partial(http.server.SimpleHTTPRequestHandler,
                                    directory=tempfile.mkdtemp(prefix="sbx-loopback-"))
        self.directory = handler.keywords["directory"]
        with open(os.path.join(self.directory, "index.html"), "w") as f:
            f.write("host-loopback-body\n")
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        shutil.rmtree(self.directory, ignore_errors=True)


class CiServerEgressTest(SbxTestCase):
    """The CI server's implicit allow-list entry, with the proxy in the host's namespace."""

    def setUp(self):
        super().setUp()
        self.loopback = LoopbackServer()
        self.addCleanup(self.loopback.stop)
        self.url = "http://127.0.0.1:%d/" % self.loopback.port
        self.write_config(network={"allow_ci_server": True})

    def probe_runner_stage(self, job):
        attempt = self.prepared_with_sources(job)
        self.addCleanup(attempt.cleanup)
        # --noproxy '': NO_PROXY lists 127.0.0.1, and the request must go through the proxy.
        record = self.run_ok(attempt, "archive_cache", [
            "curl --noproxy '' -sS -m 10 -o /dev/null -w 'code-%%{http_code}\\n' %s || true"
            % self.url])
        return re.findall(rb"code-\d+", bytes(record.stdout))

    def test_variable_cannot_choose_ci_server(self):
        job = self.new_job(variables=[gitlab_runner.Variable("CI_SERVER_URL", self.url)])
        self.assertEqual(self.probe_runner_stage(job), [b"code-403"])

    def test_loopback_ci_server_needs_explicit_entry(self):
        job = self.new_job(server_url=self.url.rstrip("/"))
        self.assertEqual(self.probe_runner_stage(job), [b"code-403"])

    def test_explicit_entry_admits_loopback(self):
        self.write_config(network={"allow_ci_server": True,
                                   "runner_allow": ["127.0.0.1:%d" % self.loopback.port]})
        self.assertEqual(self.probe_runner_stage(self.new_job()), [b"code-200"])


class SandboxIsolationTest(SbxTestCase):

    def setUp(self):
        super().setUp()
        self.attempt = self.prepared(self.new_job())
        self.run_ok(self.attempt, "get_sources", ["true"],
                    body=self.attempt.get_sources_body())
        self.addCleanup(self.attempt.cleanup)

    def run_user(self, commands):
        record = self.attempt.run_stage("build_script", commands=commands)
        return record, bytes(record.stdout)

    def test_host_processes_invisible(self):
        seconds = unique_seconds()
        host_sleeper = subprocess.Popen(["sleep", seconds])
        self.addCleanup(host_sleeper.wait)
        self.addCleanup(host_sleeper.kill)
        record, stdout = self.run_user([
            "for f in /proc/[0-9]*/cmdline; do printf 'proc %s ' \"$f\"; tr '\\0' ' ' < $f; "
            "echo; done 2>/dev/null", "echo count=$(ls -d /proc/[0-9]* | wc -l)",
            "echo pid1=$(tr '\\0' ' ' < /proc/1/cmdline)"])
        self.assertEqual(record.returncode, 0, self.describe([record]))
        self.assertNotIn(seconds.encode(), stdout)
        count = int(re.search(rb"count=(\d+)", stdout).group(1))
        self.assertLess(count, 15, stdout.decode(errors="replace"))
        self.assertNotIn(b"systemd", re.search(rb"pid1=(.*)", stdout).group(1))

    def test_host_files_read_only(self):
        marker = "sbx-it-%d" % os.getpid()
        record, stdout = self.run_user([
            "for p in /etc/%s /usr/%s /var/lib/%s /opt/%s; do "
            "if touch $p 2>/dev/null; then echo wrote-$p; else echo denied-$p; fi; done"
            % (marker, marker, marker, marker)])
        self.assertEqual(record.returncode, 0, self.describe([record]))
        for directory in ("/etc", "/usr", "/var/lib", "/opt"):
            path = "%s/%s" % (directory, marker)
            self.assertIn(("denied-%s\n" % path).encode(), stdout)
            self.assertFalse(os.path.exists(path))

    def test_masked_paths_empty(self):
        paths = ["/root", "/run", self.state_dir]
        if os.path.isdir("/home"):
            paths.append("/home")
        for path in ("/root", "/run"):
            self.assertTrue(os.listdir(path), "precondition: host %s is not empty" % path)
        self.assertTrue(os.listdir(self.state_dir))
        record, stdout = self.run_user([
            "for p in %s; do echo \"entries $p: $(ls -A $p 2>&1 | wc -l)\"; done"
            % " ".join(paths)])
        self.assertEqual(record.returncode, 0, self.describe([record]))
        for path in paths:
            self.assertIn(("entries %s: 0\n" % path).encode(), stdout)

    def test_other_job_and_runner_files_unreadable(self):
        other = self.prepared(self.new_job())
        self.addCleanup(other.cleanup)
        self.run_ok(other, "get_sources", ["true"], body=other.get_sources_body())
        self.run_ok(other, "build_script", ["echo other-secret > other-file"])
        other_id = other.job_env["SBX_SANDBOX_ID"]
        other_files = [p for p in _walk(self.job_dir(other_id)) if p.endswith("/other-file")]
        self.assertEqual(len(other_files), 1, "precondition: the other job's file on the host")
        targets = [other_files[0], self.attempt.response_file, other.response_file]
        record, stdout = self.run_user([
            "for p in %s; do if cat $p >/dev/null 2>&1; then echo read-$p; "
            "else echo unreadable-$p; fi; done" % " ".join(targets)])
        self.assertEqual(record.returncode, 0, self.describe([record]))
        for target in targets:
            self.assertIn(("unreadable-%s\n" % target).encode(), stdout)
        self.assertNotIn(self.attempt.job.token.encode(), stdout)

    def test_no_capabilities(self):
        record, stdout = self.run_user(["grep '^Cap' /proc/self/status",
                                        "echo inside-uid=$(id -u)"])
        self.assertEqual(record.returncode, 0, self.describe([record]))
        self.assertIn(b"CapEff:\t0000000000000000\n", stdout)
        self.assertIn(b"CapPrm:\t0000000000000000\n", stdout)
        self.assertIn(b"CapAmb:\t0000000000000000\n", stdout)
        self.assertRegex(stdout, rb"inside-uid=[1-9]\d*\n")

    def test_seccomp_denials(self):
        record, stdout = self.run_user([
            "unshare -U true 2>&1 && echo unshare-worked || echo unshare-failed",
            "mkdir -p /tmp/mnt",
            "mount -t tmpfs none /tmp/mnt 2>&1 && echo mount-worked || echo mount-failed",
            "/usr/bin/python3 -c 'import ctypes, os; libc = ctypes.CDLL(None, use_errno=True); "
            "r = libc.unshare(0x10000000); print(\"unshare-errno\", ctypes.get_errno() if r "
            "else 0)'"])
        self.assertEqual(record.returncode, 0, self.describe([record]))
        self.assertIn(b"unshare-failed\n", stdout)
        self.assertNotRegex(stdout, rb"(?m)^unshare-worked$")
        self.assertIn(b"mount-failed\n", stdout)
        self.assertIn(b"unshare-errno 1\n", stdout)  # EPERM

    def test_ptrace_works(self):
        # PTRACE_ATTACH to a child, as debuggers do; strace as well when the host has it.
        check = (
            "import ctypes, os, signal, time\n"
            "libc = ctypes.CDLL(None, use_errno=True)\n"
            "libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, "
            "ctypes.c_void_p]\n"
            "pid = os.fork()\n"
            "if pid == 0:\n"
            "    time.sleep(30)\n"
            "    os._exit(0)\n"
            "if libc.ptrace(16, pid, None, None) != 0:\n"
            "    print('attach-errno', ctypes.get_errno())\n"
            "else:\n"
            "    _, status = os.waitpid(pid, 0)\n"
            "    print('attached-stopped', os.WIFSTOPPED(status))\n"
            "    libc.ptrace(17, pid, None, None)\n"
            "os.kill(pid, signal.SIGKILL)\n"
            "os.waitpid(pid, 0)\n")
        commands = ["/usr/bin/python3 -c %s" % gitlab_runner.shell_escape(check).decode()]
        have_strace = os.access("/usr/bin/strace", os.X_OK)
        if have_strace:
            commands.append("strace -f -e trace=execve -o /tmp/trace true && "
                            "grep -c execve /tmp/trace")
        record, stdout = self.run_user(commands)
        self.assertEqual(record.returncode, 0, self.describe([record]))
        self.assertIn(b"attached-stopped True\n", stdout)
        if have_strace:
            self.assertRegex(stdout, rb"(?m)^[1-9]\d*$")

    def test_job_uid_not_runner(self):
        seconds = unique_seconds()
        command, marker = ready_marker("uid")
        record = self.attempt.start_stage("build_script", commands=[
            "echo inside-uid=$(id -u)", command, "sleep " + seconds])
        self.assertTrue(record.wait_output(marker, 60), self.describe([record]))
        needle = sleeper(seconds)
        self.assertTrue(self.wait_until(lambda: gitlab_runner.sandbox_processes(needle), 10))
        pids = gitlab_runner.sandbox_processes(needle)
        self.assertEqual(len(pids), 1, pids)
        with open("/proc/%d/status" % pids[0]) as f:
            status = f.read()
        uids = [int(u) for u in re.search(r"^Uid:\s+(.*)$", status, re.M).group(1).split()]
        gids = [int(g) for g in re.search(r"^Gid:\s+(.*)$", status, re.M).group(1).split()]
        for uid in uids:
            self.assertNotEqual(uid, 0)
            self.assertNotEqual(uid, os.getuid())
        for gid in gids:
            self.assertNotEqual(gid, 0)
        self.assertEqual(re.search(r"^CapEff:\s+(\S+)$", status, re.M).group(1),
                         "0000000000000000")
        os.kill(pids[0], 9)
        record.finished.wait(30)


class LimitsTest(SbxTestCase):
    config_overrides = {"local": {"memory_max": "128M", "pids_max": 64}}

    def setUp(self):
        super().setUp()
        self.attempt = self.prepared(self.new_job())
        self.run_ok(self.attempt, "get_sources", ["true"],
                    body=self.attempt.get_sources_body())
        self.addCleanup(self.attempt.cleanup)

    def test_memory_limit_kills_hog(self):
        small = self.attempt.run_stage("build_script", commands=[
            "/usr/bin/python3 -c 'b = b\"x\" * (32 << 20); print(\"small-ok\")'"])
        self.assertEqual(small.returncode, 0, self.describe([small]))
        self.assertIn(b"small-ok\n", bytes(small.stdout))
        started = time.monotonic()
        hog = self.attempt.run_stage("build_script", commands=[
            "/usr/bin/python3 -c 'b = b\"x\" * (512 << 20); print(\"hog-survived\")'"])
        self.assertLess(time.monotonic() - started, 60)
        self.assertEqual(hog.returncode, 1, self.describe([hog]))
        self.assertNotRegex(bytes(hog.stdout), rb"(?m)^hog-survived$")
        with open(self.attempt.exit_code_file, "rb") as f:
            self.assertEqual(f.read(), b"137\n")  # SIGKILL from the OOM killer

    def test_pids_limit_caps_fork_bomb(self):
        bomb = (
            "import os, time\n"
            "children, error = [], None\n"
            "for _ in range(300):\n"
            "    try:\n"
            "        pid = os.fork()\n"
            "    except OSError as exc:\n"
            "        error = exc.errno\n"
            "        break\n"
            "    if pid == 0:\n"
            "        time.sleep(20)\n"
            "        os._exit(0)\n"
            "    children.append(pid)\n"
            "print('forked', len(children), 'errno', error)\n"
            "for pid in children:\n"
            "    os.kill(pid, 9)\n"
            "    os.waitpid(pid, 0)\n")
        record = self.attempt.run_stage("build_script", commands=[
            "/usr/bin/python3 -c %s" % gitlab_runner.shell_escape(bomb).decode()])
        self.assertEqual(record.returncode, 0, self.describe([record]))
        match = re.search(rb"forked (\d+) errno (\S+)", bytes(record.stdout))
        self.assertIsNotNone(match, self.describe([record]))
        self.assertLess(int(match.group(1)), 64)
        self.assertGreater(int(match.group(1)), 10)
        self.assertEqual(match.group(2), b"11")  # EAGAIN


class CacheIsolationTest(SbxTestCase):
    """The cache a job gets depends on GitLab's job payload, not on variables the job sets."""

    def write_cache(self, job):
        attempt = self.prepared_with_sources(job)
        self.addCleanup(attempt.cleanup)
        self.run_ok(attempt, "build_script", ["echo written > /cache/file"])
        return os.path.join(self.state_dir, "cache")

    def test_variables_cannot_pick_protected_cache(self):
        cache = self.write_cache(self.new_job(project_id=4242, protected=False, variables=[
            gitlab_runner.Variable("CI_COMMIT_REF_PROTECTED", "true"),
            gitlab_runner.Variable("CI_PROJECT_ID", "1"),
            gitlab_runner.Variable("CI_PROJECT_PATH", "victim/project")]))
        self.assertEqual(os.listdir(cache), ["4242"])
        self.assertEqual(os.listdir(os.path.join(cache, "4242")), ["unprotected"])
        self.assertTrue(os.path.exists(os.path.join(cache, "4242", "unprotected", "file")))

    def test_protected_ref_gets_protected_cache(self):
        cache = self.write_cache(self.new_job(project_id=4243, protected=True))
        self.assertTrue(os.path.exists(os.path.join(cache, "4243", "protected", "file")))
        self.assertFalse(os.path.exists(os.path.join(cache, "4243", "unprotected")))

    def test_response_without_protected_field(self):
        # GitLab versions without git_info.protected: the variable alone never counts.
        job = self.new_job(project_id=4244, protected=True)
        full_response = job.response

        def response_without_protected():
            payload = full_response()
            del payload["git_info"]["protected"]
            return payload

        job.response = response_without_protected
        cache = self.write_cache(job)
        self.assertEqual(os.listdir(os.path.join(cache, "4244")), ["unprotected"])


class CachePathKeyTest(SbxTestCase):
    """Cache names from project paths, for hosts of the plugin ABI that pass no project id."""

    def host(self, *args):
        tool = os.path.join(self.build, "tests", "tools", "sbx-local-host")
        return subprocess.run([tool, "--config", self.config_path] + list(args),
                              capture_output=True, timeout=60)

    def prepare(self, project_path):
        sandbox_id = "t-%012x" % random.getrandbits(48)
        result = self.host("prepare", sandbox_id, "--project", project_path)
        self.addCleanup(self.host, "destroy", sandbox_id)
        return sandbox_id, result

    def test_long_paths_with_common_prefix(self):
        prefix = "group/" + "a" * 194
        caches = []
        for suffix in ("/one", "/two"):
            sandbox_id, result = self.prepare(prefix + suffix)
            self.assertEqual(result.returncode, 0, result.stderr.decode(errors="replace"))
            with open(os.path.join(self.job_dir(sandbox_id), "..", "..", "sandboxes",
                                   sandbox_id + ".json")) as f:
                caches.append(json.load(f)["data"]["cache_dir"])
        self.assertNotEqual(caches[0], caches[1])
        for cache in caches:
            self.assertTrue(os.path.isdir(cache), cache)

    def test_long_non_ascii_path_rejected(self):
        _, result = self.prepare("group/" + "\u00e9" * 100)
        # The host tool exits with 200 + the error class, SBX_ERROR_INVALID (5) here.
        self.assertEqual(result.returncode, 205, result.stderr.decode(errors="replace"))
        self.assertIn(b"too long to name a cache directory", result.stderr)
        self.assertIn(b"project id", result.stderr)

    def test_digit_path_never_matches_project_id(self):
        sandbox_id, result = self.prepare("4242")
        self.assertEqual(result.returncode, 0, result.stderr.decode(errors="replace"))
        self.assertEqual(os.listdir(os.path.join(self.state_dir, "cache")), ["_34242"])


class AllowListDoctorTest(SbxTestCase):
    """`sbx doctor` warns about allow-list entries that open loopback or link-local."""

    def doctor_lines(self, runner_allow, user_allow):
        self.write_config(network={"allow_ci_server": False, "runner_allow": runner_allow,
                                   "user_allow": user_allow})
        record = self.sbx_direct(["doctor"])
        return [line for line in bytes(record.stdout + record.stderr).decode().splitlines()
                if "allow-lists" in line]

    def test_wide_entries_named(self):
        lines = self.doctor_lines(["0.0.0.0/0", "127.0.0.0/8", "gitlab.example.com"],
                                  ["::/0", "169.254.0.0/15", "fe80::/9",
                                   "::ffff:127.0.0.0/104"])
        warned = "\n".join(lines)
        for key, entry in [("runner_allow", "0.0.0.0/0"), ("runner_allow", "127.0.0.0/8"),
                           ("user_allow", "::/0"), ("user_allow", "169.254.0.0/15"),
                           ("user_allow", "fe80::/9"), ("user_allow", "::ffff:127.0.0.0/104")]:
            self.assertIn('network.%s entry "%s" allows' % (key, entry), warned)
        self.assertEqual(len(lines), 6, warned)
        self.assertNotIn("gitlab.example.com", warned)

    def test_narrow_entries_pass(self):
        lines = self.doctor_lines(["127.0.0.1:8080", "127.0.0.0/9", "10.0.0.0/8"],
                                  ["169.254.169.254/32", "192.0.2.0/24"])
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("no entry allows every address", lines[0])


def _walk(top):
    for directory, _, files in os.walk(top):
        for name in files:
            yield os.path.join(directory, name)


if __name__ == "__main__":
    unittest.main()
