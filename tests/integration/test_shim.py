"""The sbx shim against the stand-in plugin of tests/plugins/fake_plugin.c.

The fake plugin creates no sandbox, but runs each step as a real child process, so exit
statuses, signals, output and cancellation are real. It records every call it gets in
$SBX_FAKE_DIR/calls, which the tests read back. These tests cover the shim's side of the
GitLab custom executor contract: the config JSON, exit codes, BUILD_EXIT_CODE_FILE, SIGTERM,
cleanup, plugin loading errors, and the `exec`, `gc` and `doctor` commands.
"""

import base64
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

BUILD_DIR = os.environ.get("SBX_BUILD_DIR") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "build")
SBX = os.path.join(BUILD_DIR, "sbx")
PLUGINS = os.path.join(BUILD_DIR, "test-plugins")
FAKE_PLUGIN_DIR = os.path.join(PLUGINS, "fake")

SECTION_START = re.compile(
    r"^\x1b\[0Ksection_start:(\d+):prepare_sbx\[collapsed=true\]\r\x1b\[0K.+$", re.M)
SECTION_END = re.compile(r"^\x1b\[0Ksection_end:(\d+):prepare_sbx\r\x1b\[0K$", re.M)

RUNNER_STAGES = ["get_sources", "clear_worktree", "restore_cache", "download_artifacts",
                 "archive_cache", "archive_cache_on_failure", "upload_artifacts_on_success",
                 "upload_artifacts_on_failure", "cleanup_file_variables"]
USER_STAGES = ["prepare_script", "build_script", "step_release", "after_script",
               "some_future_stage"]


def descendants(pid):
    """Returns the pids of every living descendant of PID."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def read_cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as cmdline:
            return cmdline.read()
    except OSError:
        return b""


class ShimTestCase(unittest.TestCase):
    """A temporary directory with the fake plugin's record directory and a config file."""

    build_failure = 1
    system_failure = 2

    def setUp(self):
        for path in (SBX, os.path.join(FAKE_PLUGIN_DIR, "sbx-local.so")):
            self.assertTrue(os.path.exists(path), "%s is missing; run make unit-tests" % path)
        self.tmp = tempfile.mkdtemp(prefix="sbx-shim-test-")
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)
        self.fake_dir = os.path.join(self.tmp, "fake")
        os.mkdir(self.fake_dir)
        self.config = os.path.join(self.tmp, "config.yaml")
        self.write_config("log_level: info\n")
        self.exit_code_file = os.path.join(self.tmp, "build_exit_code")
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "TMPDIR": self.tmp,
            "SBX_CONFIG": self.config,
            "SBX_PLUGIN_DIR": FAKE_PLUGIN_DIR,
            "SBX_FAKE_DIR": self.fake_dir,
            "BUILD_FAILURE_EXIT_CODE": str(self.build_failure),
            "SYSTEM_FAILURE_EXIT_CODE": str(self.system_failure),
            "BUILD_EXIT_CODE_FILE": self.exit_code_file,
            "CUSTOM_ENV_CI_JOB_ID": "4242",
            "JOB_RESPONSE_FILE": os.path.join(self.tmp, "response.json"),
        }
        self.write_response()

    def write_response(self, job_info=None, git_info=None):
        """Writes the runner's response.json (mode 0600, with a job token like GitLab's)."""
        payload = {
            "id": 4242, "token": "glcbt-secret-token",
            "job_info": {"project_id": 7} if job_info is None else job_info,
            "git_info": ({"repo_url": "https://gitlab-ci-token:glcbt-secret-token@"
                                      "gitlab.example.com/group/project.git",
                          "protected": False} if git_info is None else git_info),
        }
        fd = os.open(self.env["JOB_RESPONSE_FILE"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as response:
            json.dump(payload, response)

    def write_config(self, text):
        with open(self.config, "w") as config:
            config.write(text)

    def write_script(self, text, name="script"):
        path = os.path.join(self.tmp, name)
        with open(path, "w" if isinstance(text, str) else "wb") as script:
            script.write(text)
        return path

    def sbx(self, *args, env=None, timeout=30):
        full_env = dict(self.env)
        full_env.update(env or {})
        for key in [k for k, v in full_env.items() if v is None]:
            del full_env[key]
        return subprocess.run([SBX] + list(args), env=full_env, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                              cwd=self.tmp)

    def start_sbx(self, *args, env=None):
        full_env = dict(self.env)
        full_env.update(env or {})
        process = subprocess.Popen([SBX] + list(args), env=full_env, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   cwd=self.tmp, start_new_session=True)
        self.addCleanup(self.reap, process)
        return process

    def reap(self, process):
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()

    def gitlab(self, *args, env=None, timeout=30):
        """Runs `sbx gitlab ARGS` and checks that the runner accepts its exit code."""
        result = self.sbx("gitlab", *args, env=env, timeout=timeout)
        merged = dict(self.env)
        merged.update(env or {})
        allowed = {0, self.code_from(merged, "BUILD_FAILURE_EXIT_CODE", 1),
                   self.code_from(merged, "SYSTEM_FAILURE_EXIT_CODE", 2)}
        self.assertIn(result.returncode, allowed,
                      "sbx gitlab %s exited %d; stderr: %s"
                      % (" ".join(args), result.returncode, result.stderr.decode()))
        return result

    @staticmethod
    def code_from(env, name, fallback):
        value = env.get(name)
        if value is not None and value.isdigit() and 1 <= int(value) <= 255:
            return int(value)
        return fallback

    def calls(self):
        try:
            with open(os.path.join(self.fake_dir, "calls")) as calls:
                return calls.read().splitlines()
        except FileNotFoundError:
            return []

    def calls_starting(self, prefix):
        return [line for line in self.calls() if line.startswith(prefix)]

    def wait_for_call(self, prefix, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.calls_starting(prefix):
                return
            time.sleep(0.02)
        self.fail("the plugin never got %r; calls: %s" % (prefix, self.calls()))

    def assert_one_line(self, stderr, *fragments):
        text = stderr.decode()
        lines = text.splitlines()
        self.assertEqual(len(lines), 1, "expected one line on stderr, got: %r" % text)
        for fragment in fragments:
            self.assertIn(fragment, lines[0])
        self.assertTrue(lines[0].startswith("sbx: "), lines[0])

    def prepare(self, sandbox_id="j4242-0badcafe", env=None):
        extra = {"SBX_SANDBOX_ID": sandbox_id}
        extra.update(env or {})
        result = self.gitlab("prepare", env=extra)
        self.assertEqual(result.returncode, 0, result.stderr.decode())
        return sandbox_id

    def run_stage(self, script_text, stage="build_script", sandbox_id="j4242-0badcafe",
                  env=None):
        script = self.write_script(script_text)
        extra = {"SBX_SANDBOX_ID": sandbox_id}
        extra.update(env or {})
        return self.gitlab("run", script, stage, env=extra)

    def read_exit_code_file(self):
        with open(self.exit_code_file) as code:
            return code.read()


class GitlabConfigTest(ShimTestCase):

    def test_config_prints_only_json(self):
        result = self.gitlab("config")
        self.assertEqual(result.returncode, 0, result.stderr.decode())
        config = json.loads(result.stdout.decode())
        self.assertEqual(config["builds_dir"], "/builds")
        self.assertEqual(config["cache_dir"], "/cache")
        self.assertIs(config["builds_dir_is_shared"], False)
        self.assertRegex(config["hostname"], r"^[A-Za-z0-9._-]+$")
        self.assertEqual(config["driver"]["name"], "sbx")
        self.assertRegex(config["driver"]["version"], r"^\d+\.\d+\.\d+")
        self.assertEqual(config["shell"], "bash")
        self.assertRegex(config["job_env"]["SBX_SANDBOX_ID"], r"^j4242-[0-9a-f]{8}$")

    def test_config_ids_differ_per_call(self):
        ids = set()
        for _ in range(5):
            result = self.gitlab("config")
            ids.add(json.loads(result.stdout)["job_env"]["SBX_SANDBOX_ID"])
        self.assertEqual(len(ids), 5)

    def test_config_non_numeric_job_id(self):
        for job_id in ("abc", "", "12a", "1" * 60):
            result = self.gitlab("config", env={"CUSTOM_ENV_CI_JOB_ID": job_id})
            sandbox_id = json.loads(result.stdout)["job_env"]["SBX_SANDBOX_ID"]
            self.assertRegex(sandbox_id, r"^x-[0-9a-f]{12}$", job_id)

    def test_config_shell_from_config(self):
        self.write_config("shell: sh\n")
        result = self.gitlab("config")
        self.assertEqual(json.loads(result.stdout)["shell"], "sh")

    def test_config_debug_goes_to_stderr(self):
        result = self.gitlab("config", env={"SBX_DEBUG": "1"})
        json.loads(result.stdout)
        self.assertIn(b"sbx: debug:", result.stderr)

    def test_config_warns_about_prefixed_settings(self):
        # config.toml's environment = [...] reaches sbx only with the CUSTOM_ENV_ prefix.
        result = self.gitlab("config", env={"SBX_CONFIG": None,
                                            "CUSTOM_ENV_SBX_CONFIG": self.config,
                                            "CUSTOM_ENV_SBX_DEBUG": "1"})
        self.assertEqual(result.returncode, 0, result.stderr.decode())
        json.loads(result.stdout)
        lines = result.stderr.decode().splitlines()
        self.assertEqual(len(lines), 2, lines)
        self.assertTrue(lines[0].startswith("sbx: warning: CUSTOM_ENV_SBX_CONFIG is set but "
                                            "SBX_CONFIG is not"), lines[0])
        self.assertIn('add "--config", "FILE" before "gitlab" in every *_args', lines[0])
        self.assertTrue(lines[1].startswith("sbx: warning: CUSTOM_ENV_SBX_DEBUG is set but "
                                            "SBX_DEBUG is not"), lines[1])
        self.assertIn('add "--debug" before "gitlab" in every *_args', lines[1])

    def test_config_no_warning_when_settings_apply(self):
        prefixed = {"CUSTOM_ENV_SBX_CONFIG": self.config, "CUSTOM_ENV_SBX_DEBUG": "1"}
        for args, env in (((), {"SBX_DEBUG": "1"}),
                          (("--config", self.config, "--debug"), {"SBX_CONFIG": None})):
            env = dict(prefixed, **env)
            result = self.sbx(*args, "gitlab", "config", env=env)
            self.assertEqual(result.returncode, 0, result.stderr.decode())
            self.assertNotIn(b"warning", result.stderr, args)

    def test_config_option_before_each_stage(self):
        # The docs' config.toml puts "--config", FILE before "gitlab" in every *_args.
        env = {"SBX_CONFIG": None, "SBX_SANDBOX_ID": "j4242-0badcafe"}
        script = self.write_script("echo from-the-script\n")
        outputs = {}
        for args in (("config",), ("prepare",), ("run", script, "build_script"),
                     ("cleanup",)):
            result = self.sbx("--config", self.config, "gitlab", *args, env=env)
            self.assertEqual(result.returncode, 0, "%s: %s" % (args, result.stderr.decode()))
            self.assertNotIn(b"warning", result.stderr, args)
            outputs[args[0]] = result.stdout.decode()
        self.assertEqual(outputs["run"], "from-the-script\n")
        self.assertIn("Destroyed sandbox j4242-0badcafe", outputs["cleanup"])
        opens = self.calls_starting("open ")
        self.assertGreaterEqual(len(opens), 3, self.calls())
        for line in opens:
            self.assertIn("config=%s" % self.config, line.split())

    def test_bad_config_is_system_failure(self):
        self.write_config("no_such_key: 1\n")
        result = self.gitlab("config", env={"SYSTEM_FAILURE_EXIT_CODE": "12"})
        self.assertEqual(result.returncode, 12)
        self.assertEqual(result.stdout, b"")
        self.assert_one_line(result.stderr, self.config, "no_such_key")


class PluginLoadingTest(ShimTestCase):

    def test_missing_plugin_dir_option(self):
        missing = os.path.join(self.tmp, "nowhere")
        result = self.sbx("--plugin-dir", missing, "gitlab", "prepare",
                          env={"SBX_SANDBOX_ID": "j1-00000000"})
        self.assertEqual(result.returncode, self.system_failure)
        self.assert_one_line(result.stderr, missing + "/sbx-local.so", "not found",
                             "--plugin-dir")

    def test_missing_plugin_from_config(self):
        missing = os.path.join(self.tmp, "nowhere")
        self.write_config("plugin_dir: %s\n" % missing)
        result = self.gitlab("prepare", env={"SBX_SANDBOX_ID": "j1-00000000",
                                             "SBX_PLUGIN_DIR": None})
        self.assertEqual(result.returncode, self.system_failure)
        self.assert_one_line(result.stderr, "plugin %s/sbx-local.so not found" % missing,
                             "install it or set plugin_dir in %s" % self.config)
        self.assertEqual(self.calls(), [])

    def test_plugin_refusing_abi_version(self):
        result = self.gitlab("prepare", env={"SBX_SANDBOX_ID": "j1-00000000",
                                             "SBX_PLUGIN_DIR": os.path.join(PLUGINS, "bad-abi")})
        self.assertEqual(result.returncode, self.system_failure)
        self.assert_one_line(result.stderr, "ABI version 1", "ABI version 2",
                             "install matching versions of sbx and its plugins")

    def test_plugin_with_other_abi_table(self):
        result = self.gitlab("run", self.write_script("exit 0\n"), "build_script",
                             env={"SBX_SANDBOX_ID": "j1-00000000",
                                  "SBX_PLUGIN_DIR": os.path.join(PLUGINS, "bad-abi"),
                                  "SBX_FAKE_BAD_ABI_MODE": "table"})
        self.assertEqual(result.returncode, self.system_failure)
        self.assert_one_line(result.stderr, "speaks ABI version 2, this sbx speaks 1",
                             "install matching versions of sbx and its plugins")

    def test_plugin_without_entry(self):
        plugin_dir = os.path.join(PLUGINS, "no-entry")
        result = self.gitlab("cleanup", env={"SBX_SANDBOX_ID": "j1-00000000",
                                             "SBX_PLUGIN_DIR": plugin_dir})
        self.assertEqual(result.returncode, self.system_failure)
        self.assert_one_line(result.stderr, plugin_dir + "/sbx-local.so",
                             "sbx_executor_entry", "SBX_PLUGIN_DIR")


class GitlabPrepareTest(ShimTestCase):

    def test_prepare_passes_job_spec(self):
        self.write_response(git_info={"repo_url": "https://gitlab.example.com/group/project.git",
                                      "protected": True})
        result = self.gitlab("prepare", env={
            "SBX_SANDBOX_ID": "j4242-12345678",
            "CUSTOM_ENV_CI_PROJECT_ID": "7",
            "CUSTOM_ENV_CI_PIPELINE_ID": "99",
            "CUSTOM_ENV_CI_RUNNER_SHORT_TOKEN": "abcd1234",
            "CUSTOM_ENV_CI_JOB_IMAGE": "alpine:3.20",
            "CUSTOM_ENV_CI_PROJECT_PATH": "group/project",
            "CUSTOM_ENV_CI_COMMIT_REF_PROTECTED": "true",
            "CUSTOM_ENV_CI_JOB_TIMEOUT": "600",
            "CUSTOM_ENV_CI_SERVER_URL": "http://127.0.0.1:22",
        })
        self.assertEqual(result.returncode, 0, result.stderr.decode())
        self.assertEqual(self.calls_starting("prepare "), [
            "prepare j4242-12345678 image=alpine:3.20 project_path=- protected=1 "
            "timeout=600 server=https://gitlab.example.com/ owner=abcd1234,7,99,4242 allow=-"])

    def test_prepare_ci_server_from_repo_url(self):
        cases = [
            ("https://gitlab-ci-token:glcbt-secret-token@gitlab.example.com/g/p.git",
             "https://gitlab.example.com/"),
            ("http://user:p@ss@gitlab.example.com:8080/g/p.git", "http://gitlab.example.com:8080/"),
            ("https://[2001:db8::1]:8443/g/p.git", "https://[2001:db8::1]:8443/"),
            ("HTTPS://gitlab.example.com", "HTTPS://gitlab.example.com/"),
            ("ssh://git@gitlab.example.com/g/p.git", "-"),
            ("https://gitlab.example.com%2f@/g/p.git", "-"),
            ("", "-"),
        ]
        for repo_url, server in cases:
            with self.subTest(repo_url=repo_url):
                if os.path.exists(os.path.join(self.fake_dir, "calls")):
                    os.unlink(os.path.join(self.fake_dir, "calls"))
                self.write_response(git_info={"repo_url": repo_url, "protected": False})
                result = self.gitlab("prepare", env={"SBX_SANDBOX_ID": "j4242-12345678",
                                                     "CUSTOM_ENV_CI_SERVER_URL":
                                                     "http://127.0.0.1:22"})
                self.assertEqual(result.returncode, 0, result.stderr.decode())
                self.assertNotIn(b"secret", result.stdout + result.stderr)
                calls = self.calls_starting("prepare ")
                self.assertEqual(len(calls), 1, calls)
                self.assertIn(" server=%s " % server, calls[0])

    def test_prepare_unprotected_and_defaults(self):
        self.gitlab("prepare", env={"SBX_SANDBOX_ID": "j4242-12345678",
                                    "CUSTOM_ENV_CI_COMMIT_REF_PROTECTED": "false",
                                    "CUSTOM_ENV_CI_JOB_TIMEOUT": "soon"})
        self.assertEqual(self.calls_starting("prepare "), [
            "prepare j4242-12345678 image=- project_path=- protected=0 timeout=0 "
            "server=https://gitlab.example.com/ owner=-,7,-,4242 allow=-"])

    def test_prepare_job_timeout_forms(self):
        # (runner_info.timeout, CUSTOM_ENV_CI_JOB_TIMEOUT, timeout passed, warning expected)
        cases = [
            (None, "600", "600", None),
            (None, "-5", "0", "not a positive number"),
            (None, "0", "0", "not a positive number"),
            (None, "12x", "0", "not a positive number"),
            (None, "9223372036854775807", "2147483647", "longer than 2147483647 s"),
            (None, "9223372036854775808", "0", "not a positive number"),
            (3600, "9223372036854775807", "3600", None),
            (9223372036854775807, "60", "2147483647", "longer than 2147483647 s"),
            (-1, "60", "60", None),
        ]
        for response_timeout, variable, passed, warning in cases:
            with self.subTest(response_timeout=response_timeout, variable=variable):
                if os.path.exists(os.path.join(self.fake_dir, "calls")):
                    os.unlink(os.path.join(self.fake_dir, "calls"))
                self.write_response()
                if response_timeout is not None:
                    with open(self.env["JOB_RESPONSE_FILE"]) as f:
                        payload = json.load(f)
                    payload["runner_info"] = {"timeout": response_timeout}
                    with open(self.env["JOB_RESPONSE_FILE"], "w") as f:
                        json.dump(payload, f)
                result = self.gitlab("prepare", env={"SBX_SANDBOX_ID": "j4242-12345678",
                                                     "CUSTOM_ENV_CI_JOB_TIMEOUT": variable})
                self.assertEqual(result.returncode, 0, result.stderr.decode())
                calls = self.calls_starting("prepare ")
                self.assertEqual(len(calls), 1, calls)
                self.assertIn(" timeout=%s " % passed, calls[0])
                if warning is None:
                    self.assertNotIn(b"warning", result.stderr)
                else:
                    self.assertIn(warning, result.stderr.decode())

    def test_prepare_ignores_overridden_variables(self):
        # Job variables override predefined ones: only the response file counts.
        result = self.gitlab("prepare", env={"SBX_SANDBOX_ID": "j4242-12345678",
                                             "CUSTOM_ENV_CI_COMMIT_REF_PROTECTED": "true",
                                             "CUSTOM_ENV_CI_PROJECT_ID": "1",
                                             "CUSTOM_ENV_CI_PROJECT_PATH": "victim/project"})
        self.assertEqual(result.returncode, 0, result.stderr.decode())
        self.assertEqual(self.calls_starting("prepare "), [
            "prepare j4242-12345678 image=- project_path=- protected=0 timeout=0 "
            "server=https://gitlab.example.com/ owner=-,7,-,4242 allow=-"])

    def test_prepare_without_response_file(self):
        os.unlink(self.env["JOB_RESPONSE_FILE"])
        result = self.gitlab("prepare", env={"SBX_SANDBOX_ID": "j4242-12345678",
                                             "CUSTOM_ENV_CI_COMMIT_REF_PROTECTED": "true",
                                             "CUSTOM_ENV_CI_PROJECT_ID": "7"})
        self.assertEqual(result.returncode, 0, result.stderr.decode())
        self.assertRegex(result.stderr.decode(),
                         r"(?m)^sbx: warning: cannot open \S*/response\.json: .*unprotected cache")
        self.assertEqual(self.calls_starting("prepare "), [
            "prepare j4242-12345678 image=- project_path=- protected=0 timeout=0 server=- "
            "owner=-,-,-,4242 allow=-"])

    def test_prepare_never_logs_response_token(self):
        self.write_response(job_info={"project_id": "7"}, git_info={"protected": "true"})
        result = self.gitlab("prepare", env={"SBX_SANDBOX_ID": "j4242-12345678",
                                             "SBX_DEBUG": "1"})
        self.assertEqual(result.returncode, 0, result.stderr.decode())
        self.assertNotIn(b"glcbt-secret-token", result.stdout + result.stderr)
        # Strings where GitLab sends a number and a boolean count as missing.
        self.assertEqual(self.calls_starting("prepare "), [
            "prepare j4242-12345678 image=- project_path=- protected=0 timeout=0 server=- "
            "owner=-,-,-,4242 allow=-"])

    def test_prepare_prints_collapsed_section(self):
        result = self.gitlab("prepare", env={"SBX_SANDBOX_ID": "j4242-12345678"})
        out = result.stdout.decode()
        start = SECTION_START.search(out)
        end = SECTION_END.search(out)
        self.assertIsNotNone(start, out)
        self.assertIsNotNone(end, out)
        self.assertLess(start.end(), end.start())
        self.assertLessEqual(int(start.group(1)), int(end.group(1)))
        body = out[start.end():end.start()]
        self.assertRegex(body, r"(?m)^Sandbox j4242-12345678 \(local backend\) is ready after "
                               r"\d+ ms$")
        # Project members read the job log: no host paths in it.
        self.assertNotIn(PLUGINS, out + result.stderr.decode())

    def test_prepare_without_sandbox_id(self):
        result = self.gitlab("prepare")
        self.assertEqual(result.returncode, self.system_failure)
        self.assert_one_line(result.stderr, "SBX_SANDBOX_ID is not set", "sbx gitlab config")
        self.assertEqual(self.calls(), [])

    def test_prepare_with_invalid_sandbox_id(self):
        result = self.gitlab("prepare", env={"SBX_SANDBOX_ID": "../Bad_ID"})
        self.assertEqual(result.returncode, self.system_failure)
        self.assert_one_line(result.stderr, "SBX_SANDBOX_ID", "../Bad_ID")
        self.assertEqual(self.calls(), [])

    def test_prepare_failure_is_system_failure(self):
        result = self.gitlab("prepare", env={"SBX_SANDBOX_ID": "j4242-12345678",
                                             "SBX_FAKE_PREPARE_FAIL": "2"})
        self.assertEqual(result.returncode, self.system_failure)
        self.assertIn(b"fake prepare failure for j4242-12345678", result.stderr)
        self.assertIsNotNone(SECTION_END.search(result.stdout.decode()))

    def test_sigterm_during_prepare(self):
        process = self.start_sbx("gitlab", "prepare",
                                 env={"SBX_SANDBOX_ID": "j4242-12345678",
                                      "SBX_FAKE_PREPARE_SLEEP_MS": "60000"})
        self.wait_for_call("prepare-start ")
        started = time.monotonic()
        os.killpg(process.pid, signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=10)
        self.assertLess(time.monotonic() - started, 5)
        self.assertEqual(process.returncode, self.system_failure, stderr.decode())
        self.assertIn(b"stopped by", stderr)
        # The plugin call never finished.
        self.assertEqual(self.calls_starting("prepare "), [])

    def test_sigterm_to_sbx_alone_during_prepare(self):
        process = self.start_sbx("gitlab", "prepare",
                                 env={"SBX_SANDBOX_ID": "j4242-12345678",
                                      "SBX_FAKE_PREPARE_SLEEP_MS": "60000"})
        self.wait_for_call("prepare-start ")
        worker = int(self.calls_starting("prepare-start ")[0].split("pid=")[1])
        os.kill(process.pid, signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=10)
        self.assertEqual(process.returncode, self.system_failure, stderr.decode())
        # The process running the plugin's prepare is gone too.
        self.assertFalse(os.path.exists("/proc/%d" % worker)
                         and b"sbx" in read_cmdline(worker))


class GitlabRunTest(ShimTestCase):

    def setUp(self):
        super().setUp()
        self.prepare()

    def test_status_zero(self):
        result = self.run_stage("echo hello from the step\nexit 0\n")
        self.assertEqual(result.returncode, 0, result.stderr.decode())
        self.assertEqual(result.stdout, b"hello from the step\n")
        self.assertFalse(os.path.exists(self.exit_code_file))

    def test_status_one(self):
        result = self.run_stage("exit 1\n")
        self.assertEqual(result.returncode, self.build_failure)
        self.assertEqual(self.read_exit_code_file(), "1\n")

    def test_status_42(self):
        result = self.run_stage("echo failing >&2\nexit 42\n")
        self.assertEqual(result.returncode, self.build_failure)
        self.assertEqual(self.read_exit_code_file(), "42\n")
        self.assertIn(b"failing\n", result.stderr)

    def test_status_from_signal(self):
        result = self.run_stage("kill -KILL $$\n")
        self.assertEqual(result.returncode, self.build_failure)
        self.assertEqual(self.read_exit_code_file(), "137\n")

    def test_stale_exit_code_file_removed(self):
        with open(self.exit_code_file, "w") as stale:
            stale.write("99\n")
        result = self.run_stage("exit 0\n")
        self.assertEqual(result.returncode, 0)
        self.assertFalse(os.path.exists(self.exit_code_file))

    def test_stale_exit_code_file_removed_on_failure(self):
        with open(self.exit_code_file, "w") as stale:
            stale.write("99\n")
        result = self.run_stage("exit 0\n", env={"SBX_FAKE_EXEC_FAIL": "2"})
        self.assertEqual(result.returncode, self.system_failure)
        self.assertFalse(os.path.exists(self.exit_code_file))

    def test_custom_exit_codes(self):
        env = {"BUILD_FAILURE_EXIT_CODE": "11", "SYSTEM_FAILURE_EXIT_CODE": "12"}
        self.assertEqual(self.run_stage("exit 5\n", env=env).returncode, 11)
        self.assertEqual(self.read_exit_code_file(), "5\n")
        env["SBX_FAKE_EXEC_FAIL"] = "2"
        self.assertEqual(self.run_stage("exit 0\n", env=env).returncode, 12)

    def test_exit_code_variables_unset_or_invalid(self):
        for value in (None, "", "abc", "0", "256", "-1"):
            env = {"BUILD_FAILURE_EXIT_CODE": value, "SYSTEM_FAILURE_EXIT_CODE": value}
            self.assertEqual(self.run_stage("exit 3\n", env=env).returncode, 1, value)
            self.assertEqual(self.read_exit_code_file(), "3\n")
            env["SBX_SANDBOX_ID"] = None
            result = self.gitlab("run", self.write_script("exit 0\n"), "build_script", env=env)
            self.assertEqual(result.returncode, 2, value)

    def test_no_exit_code_file_variable(self):
        result = self.run_stage("exit 7\n", env={"BUILD_EXIT_CODE_FILE": None})
        self.assertEqual(result.returncode, self.build_failure)

    def test_plugin_error_is_system_failure(self):
        result = self.run_stage("exit 0\n", env={"SBX_FAKE_EXEC_FAIL": "2"})
        self.assertEqual(result.returncode, self.system_failure)
        self.assert_one_line(result.stderr, "build_script", "fake exec failure")

    def test_unknown_sandbox_is_system_failure(self):
        result = self.run_stage("exit 0\n", sandbox_id="j4242-ffffffff")
        self.assertEqual(result.returncode, self.system_failure)
        self.assert_one_line(result.stderr, "j4242-ffffffff", "not found")

    def test_unreadable_script(self):
        missing = os.path.join(self.tmp, "no-such-script")
        result = self.gitlab("run", missing, "build_script",
                             env={"SBX_SANDBOX_ID": "j4242-0badcafe"})
        self.assertEqual(result.returncode, self.system_failure)
        self.assert_one_line(result.stderr, missing)
        self.assertEqual(self.calls_starting("exec "), [])

    def test_too_few_arguments(self):
        result = self.gitlab("run", "build_script", env={"SBX_SANDBOX_ID": "j4242-0badcafe"})
        self.assertEqual(result.returncode, self.system_failure)
        self.assert_one_line(result.stderr, "script path", "stage")

    def test_run_args_before_script_and_stage(self):
        script = self.write_script("exit 0\n")
        result = self.gitlab("run", "--extra", "arg", script, "get_sources",
                             env={"SBX_SANDBOX_ID": "j4242-0badcafe"})
        self.assertEqual(result.returncode, 0, result.stderr.decode())
        self.assertIn("profile=runner", self.calls_starting("exec ")[0])

    def test_network_profile_per_stage(self):
        for stage in RUNNER_STAGES + USER_STAGES:
            self.assertEqual(self.run_stage("exit 0\n", stage=stage).returncode, 0, stage)
        profiles = [re.search(r"profile=(\w+)", line).group(1)
                    for line in self.calls_starting("exec ")]
        expected = ["runner"] * len(RUNNER_STAGES) + ["user"] * len(USER_STAGES)
        self.assertEqual(profiles, expected)

    def test_exec_spec_descriptors_and_shell(self):
        self.write_config("shell: sh\n")
        self.assertEqual(self.run_stage("exit 0\n").returncode, 0)
        line = self.calls_starting("exec ")[0]
        for field in ("shell=sh", "stdin=-1", "stdout=1", "stderr=2", "cancel=yes",
                      "timeout=0", "argv0=-", "cwd=-"):
            self.assertIn(field, line.split())

    def test_sigterm_during_run(self):
        script = self.write_script("echo started\nsleep 60\necho not reached\n")
        process = self.start_sbx("gitlab", "run", script, "build_script",
                                 env={"SBX_SANDBOX_ID": "j4242-0badcafe"})
        self.assertEqual(process.stdout.readline(), b"started\n")
        started = time.monotonic()
        os.killpg(process.pid, signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=10)
        self.assertLess(time.monotonic() - started, 5)
        self.assertEqual(process.returncode, self.system_failure)
        self.assertNotIn(b"not reached", stdout)
        self.assertEqual(self.calls_starting("exec-cancelled "), ["exec-cancelled j4242-0badcafe"])
        self.assert_one_line(stderr, "build_script", "SIGTERM")
        self.assertFalse(os.path.exists(self.exit_code_file))
        # The sandbox stays for after_script and the upload stages.
        self.assertEqual(self.run_stage("exit 0\n", stage="after_script").returncode, 0)

    def test_cleanup_while_cancelled_run_terminates(self):
        # The step ignores SIGTERM, so the plugin needs its SIGKILL grace to stop it.
        script = self.write_script("trap '' TERM\necho started\nsleep 60\n")
        process = self.start_sbx("gitlab", "run", script, "build_script",
                                 env={"SBX_SANDBOX_ID": "j4242-0badcafe"})
        self.assertEqual(process.stdout.readline(), b"started\n")
        os.killpg(process.pid, signal.SIGTERM)
        result = self.gitlab("cleanup", env={"SBX_SANDBOX_ID": "j4242-0badcafe"})
        self.assertEqual(result.returncode, 0, result.stderr.decode())
        self.assertIsNone(process.poll(), "run ended before cleanup did")
        process.communicate(timeout=10)
        self.assertEqual(process.returncode, self.system_failure)
        self.assertEqual(self.calls_starting("destroy "), ["destroy j4242-0badcafe"])

    def test_large_script_and_environment(self):
        marker = "SECRET-SCRIPT-MARKER-%s" % os.urandom(8).hex()
        big_env = {}
        lines = ["# %s" % marker]
        for i in range(10):
            # 60 KiB each: under the kernel's 128 KiB limit for one string, 600 KiB in total.
            value = base64.b64encode(os.urandom(45 * 1024)).decode()
            self.assertEqual(len(value), 60 * 1024)
            big_env["CUSTOM_ENV_BIG_%d" % i] = value
            lines.append("printf '%%s' \"$CUSTOM_ENV_BIG_%d\" | sha256sum" % i)
        lines.append("sleep 1")
        filler = "# " + "x" * 1021 + "\n"
        header = "\n".join(lines) + "\n"
        script_text = (header + filler * ((10 * 1024 * 1024 - len(header)) // len(filler) + 1))
        self.assertGreaterEqual(len(script_text), 10 * 1024 * 1024)
        script = self.write_script(script_text)
        env = dict(self.env, SBX_SANDBOX_ID="j4242-0badcafe", **big_env)
        process = subprocess.Popen([SBX, "gitlab", "run", script, "build_script"], env=env,
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, start_new_session=True)
        self.addCleanup(self.reap, process)

        # While the step runs, look at the command line of sbx and everything it started.
        seen = 0
        deadline = time.monotonic() + 10
        while process.poll() is None and time.monotonic() < deadline:
            for pid in [process.pid] + descendants(process.pid):
                cmdline = read_cmdline(pid)
                if cmdline:
                    seen += 1
                self.assertNotIn(marker.encode(), cmdline)
                for value in big_env.values():
                    self.assertNotIn(value[:64].encode(), cmdline)
            time.sleep(0.05)
        stdout, stderr = process.communicate(timeout=30)
        self.assertEqual(process.returncode, 0, stderr.decode())
        self.assertGreater(seen, 0)

        with open(os.path.join(self.fake_dir, "last-script")) as received:
            self.assertEqual(received.read(), script_text)
        expected = "".join("%s  -\n" % hashlib.sha256(big_env["CUSTOM_ENV_BIG_%d" % i]
                                                      .encode()).hexdigest()
                           for i in range(10))
        self.assertEqual(stdout.decode(), expected)

    def test_script_over_limit(self):
        path = os.path.join(self.tmp, "huge")
        with open(path, "wb") as huge:
            huge.truncate(64 * 1024 * 1024 + 1)
        result = self.gitlab("run", path, "build_script",
                             env={"SBX_SANDBOX_ID": "j4242-0badcafe"})
        self.assertEqual(result.returncode, self.system_failure)
        self.assert_one_line(result.stderr, path, "limit")


class GitlabCleanupTest(ShimTestCase):

    def test_cleanup_without_sandbox_id(self):
        result = self.gitlab("cleanup")
        self.assertEqual(result.returncode, 0)
        self.assertIn(b"nothing to clean up", result.stdout)
        self.assertEqual(self.calls(), [])

    def test_cleanup_destroys_and_is_idempotent(self):
        sandbox_id = self.prepare()
        self.assertTrue(os.path.exists(os.path.join(self.fake_dir, "sandboxes", sandbox_id)))
        outputs = []
        for _ in range(2):
            result = self.gitlab("cleanup", env={"SBX_SANDBOX_ID": sandbox_id})
            self.assertEqual(result.returncode, 0, result.stderr.decode())
            outputs.append(result.stdout.decode())
        self.assertFalse(os.path.exists(os.path.join(self.fake_dir, "sandboxes", sandbox_id)))
        self.assertEqual(self.calls_starting("destroy "), ["destroy %s" % sandbox_id] * 2)
        self.assertRegex(outputs[0], r"^Destroyed sandbox %s in \d+ ms\n$" % sandbox_id)
        self.assertEqual(outputs[1], "Sandbox %s does not exist (never prepared, or already "
                                     "destroyed): nothing to destroy\n" % sandbox_id)

    def test_cleanup_of_unknown_id(self):
        result = self.gitlab("cleanup", env={"SBX_SANDBOX_ID": "j1-deadbeef"})
        self.assertEqual(result.returncode, 0, result.stderr.decode())
        self.assertIn(b"nothing to destroy", result.stdout)
        self.assertNotIn(b"Destroyed", result.stdout)
        # The lookup only changes the message: destroy still runs, after the list.
        calls = [line.split()[0] for line in self.calls()
                 if line.split()[0] in ("list", "destroy")]
        self.assertEqual(calls, ["list", "destroy"])

    def test_cleanup_when_lookup_fails(self):
        # A failed lookup is no reason to skip destroy, and cleanup reports what destroy did.
        result = self.gitlab("cleanup", env={"SBX_SANDBOX_ID": "j1-deadbeef",
                                             "SBX_FAKE_LIST_FAIL": "2"})
        self.assertEqual(result.returncode, 0, result.stderr.decode())
        self.assertRegex(result.stdout.decode(), r"^Destroyed sandbox j1-deadbeef in \d+ ms\n$")
        self.assertEqual(self.calls_starting("destroy "), ["destroy j1-deadbeef"])

    def test_cleanup_failure_names_sandbox(self):
        result = self.gitlab("cleanup", env={"SBX_SANDBOX_ID": "j4242-0badcafe",
                                             "SBX_FAKE_DESTROY_FAIL": "2"})
        self.assertEqual(result.returncode, self.system_failure)
        self.assert_one_line(result.stderr, "j4242-0badcafe", "fake destroy failure")

    def test_cleanup_bounded_by_cleanup_timeout(self):
        self.write_config("cleanup_timeout: 1\n")
        started = time.monotonic()
        result = self.gitlab("cleanup", env={"SBX_SANDBOX_ID": "j4242-0badcafe",
                                             "SBX_FAKE_DESTROY_SLEEP_MS": "60000"})
        self.assertLess(time.monotonic() - started, 6)
        self.assertEqual(result.returncode, self.system_failure)
        self.assert_one_line(result.stderr, "j4242-0badcafe", "timed out")


class ExecCommandTest(ShimTestCase):

    def test_exec_returns_command_status(self):
        result = self.sbx("exec", "--allow", "example.com:443", "--allow", "10.0.0.0/8",
                          "--image", "alpine:3", "--timeout", "30", "--env", "A=one",
                          "--env", "B", "--", "sh", "-c", 'echo "$A-$B"; exit 7',
                          env={"B": "two"})
        self.assertEqual(result.returncode, 7, result.stderr.decode())
        self.assertEqual(result.stdout, b"one-two\n")
        prepare = self.calls_starting("prepare ")[0]
        self.assertRegex(prepare, r"^prepare x-[0-9a-f]{12} image=alpine:3 ")
        self.assertIn("timeout=30", prepare)
        self.assertIn("allow=example.com:443,10.0.0.0/8", prepare)
        sandbox_id = prepare.split()[1]
        exec_line = self.calls_starting("exec ")[0]
        for field in ("argv0=sh", "stdin=0", "stdout=1", "stderr=2", "timeout=30",
                      "profile=user"):
            self.assertIn(field, exec_line.split())
        with open(os.path.join(self.fake_dir, "last-envp"), "rb") as envp:
            self.assertEqual(envp.read(), b"A=one\0B=two\0")
        self.assertEqual(self.calls_starting("destroy "), ["destroy %s" % sandbox_id])

    def test_exec_unset_env_name(self):
        result = self.sbx("exec", "--env", "NOT_SET_ANYWHERE", "--", "true")
        self.assertEqual(result.returncode, 125)
        self.assert_one_line(result.stderr, "NOT_SET_ANYWHERE")
        self.assertEqual(self.calls(), [])

    def test_exec_prepare_failure(self):
        result = self.sbx("exec", "--", "true", env={"SBX_FAKE_PREPARE_FAIL": "2"})
        self.assertEqual(result.returncode, 125)
        self.assert_one_line(result.stderr, "fake prepare failure")
        self.assertEqual(len(self.calls_starting("destroy ")), 1)

    def test_exec_missing_plugin(self):
        result = self.sbx("exec", "--", "true", env={"SBX_PLUGIN_DIR": self.tmp})
        self.assertEqual(result.returncode, 125)
        self.assert_one_line(result.stderr, "not found")

    def test_exec_sigterm_destroys(self):
        process = self.start_sbx("exec", "--", "sh", "-c", "echo started; sleep 60")
        self.assertEqual(process.stdout.readline(), b"started\n")
        os.killpg(process.pid, signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=10)
        self.assertEqual(process.returncode, 128 + signal.SIGTERM, stderr.decode())
        self.assertEqual(len(self.calls_starting("exec-cancelled ")), 1)
        self.assertEqual(len(self.calls_starting("destroy ")), 1)
        self.assertEqual(os.listdir(os.path.join(self.fake_dir, "sandboxes")), [])

    def test_exec_timeout_names_sandbox_once(self):
        self.write_config("log_level: warning\n")
        result = self.sbx("exec", "--timeout", "1", "--", "sleep", "30")
        self.assertEqual(result.returncode, 125)
        sandbox_id = self.calls_starting("prepare ")[0].split()[1]
        self.assert_one_line(result.stderr, "sleep failed", "timed out after 1 s")
        self.assertEqual(result.stderr.decode().count(sandbox_id), 1, result.stderr.decode())
        self.assertEqual(len(self.calls_starting("exec-timeout ")), 1)
        self.assertEqual(self.calls_starting("destroy "), ["destroy %s" % sandbox_id])

    def test_exec_plugin_error_names_sandbox(self):
        self.write_config("log_level: warning\n")
        result = self.sbx("exec", "--", "true", env={"SBX_FAKE_EXEC_FAIL": "2"})
        self.assertEqual(result.returncode, 125)
        sandbox_id = self.calls_starting("prepare ")[0].split()[1]
        # The fake's message names the sandbox, so sbx does not name it again.
        self.assert_one_line(result.stderr, "cannot run true: fake exec failure in %s"
                             % sandbox_id)
        self.assertEqual(result.stderr.decode().count(sandbox_id), 1, result.stderr.decode())

    def test_exec_help(self):
        result = self.sbx("exec", "--help")
        self.assertEqual(result.returncode, 0)
        for option in (b"--allow", b"--image", b"--timeout SECONDS", b"--cwd", b"--env"):
            self.assertIn(option, result.stdout)


class GcCommandTest(ShimTestCase):

    def add_sandbox(self, sandbox_id, deadline):
        directory = os.path.join(self.fake_dir, "sandboxes")
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, sandbox_id), "w") as entry:
            entry.write("created=1\ndeadline=%d\nrunner=r1\nproject=7\npipeline=8\njob=9\n"
                        % deadline)

    def sandboxes(self):
        return sorted(os.listdir(os.path.join(self.fake_dir, "sandboxes")))

    def test_gc_destroys_only_expired(self):
        now = int(time.time())
        self.add_sandbox("j1-00000001", now - 10)
        self.add_sandbox("j2-00000002", now + 3600)
        self.add_sandbox("j3-00000003", 0)

        result = self.sbx("gc", "--dry-run")
        self.assertEqual(result.returncode, 0, result.stderr.decode())
        self.assertEqual(self.sandboxes(), ["j1-00000001", "j2-00000002", "j3-00000003"])
        self.assertEqual(self.calls_starting("destroy"), [])

        result = self.sbx("gc")
        self.assertEqual(result.returncode, 0, result.stderr.decode())
        self.assertEqual(self.sandboxes(), ["j2-00000002", "j3-00000003"])
        lines = sorted(result.stdout.decode().splitlines(), key=lambda line: line.split()[1])
        self.assertEqual(len(lines), 3)
        self.assertRegex(lines[0], r"^destroyed +j1-00000001 owner runner=r1 project=7 "
                                   r"pipeline=8 job=9 deadline \d{4}-")
        self.assertRegex(lines[1], r"^kept +j2-00000002 ")
        self.assertRegex(lines[2], r"^kept +j3-00000003 ")

    def test_gc_destroy_failure(self):
        self.add_sandbox("j1-00000001", int(time.time()) - 10)
        result = self.sbx("gc", env={"SBX_FAKE_DESTROY_FAIL": "2"})
        self.assertEqual(result.returncode, 1)
        self.assertIn(b"j1-00000001", result.stderr)


class DoctorCommandTest(ShimTestCase):

    def test_doctor_ok(self):
        result = self.sbx("doctor")
        self.assertEqual(result.returncode, 0, result.stdout.decode())
        lines = result.stdout.decode().splitlines()
        self.assertEqual(lines[0], "ok       config: %s" % self.config)
        self.assertRegex(lines[1], r"^ok       plugin: .*fake/sbx-local.so \(backend local "
                                   r"fake, ABI version 1\)$")
        self.assertEqual(lines[2], "ok       fake-state: %s" % self.fake_dir)

    def test_doctor_builtin_defaults(self):
        result = self.sbx("doctor", env={"SBX_CONFIG": None})
        if os.path.exists("/usr/local/etc/sbx/config.yaml"):
            self.skipTest("an installed configuration exists")
        self.assertIn("ok       config: built-in defaults", result.stdout.decode())

    def test_doctor_failed_check(self):
        result = self.sbx("doctor", env={"SBX_FAKE_CHECK": "failed"})
        self.assertEqual(result.returncode, 1)
        out = result.stdout.decode()
        self.assertIn("FAILED   fake-prerequisite: missing\n  fix: set SBX_FAKE_CHECK=ok\n", out)

    def test_doctor_warning_only(self):
        result = self.sbx("doctor", env={"SBX_FAKE_CHECK": "warning"})
        self.assertEqual(result.returncode, 0)
        self.assertIn("warning  fake-warning: something is odd\n", result.stdout.decode())

    def test_doctor_missing_plugin(self):
        result = self.sbx("doctor", env={"SBX_PLUGIN_DIR": self.tmp})
        self.assertEqual(result.returncode, 1)
        # The fix goes on its own line, as for the backend's checks.
        self.assertRegex(result.stdout.decode(),
                         r"(?m)^FAILED   plugin: plugin .* not found\n  fix: check "
                         r"SBX_PLUGIN_DIR")

    def test_doctor_bad_config(self):
        self.write_config("shell: fish\n")
        result = self.sbx("doctor")
        self.assertEqual(result.returncode, 1)
        self.assertRegex(result.stdout.decode(),
                         r"(?m)^FAILED   config: .*key \"shell\": unknown value \"fish\"\n"
                         r"  fix: use bash or sh\n")

    def test_doctor_bad_config_of_other_backend(self):
        # The file selects agent-sandbox: the local backend of the defaults is not checked.
        self.write_config("backend: agent-sandbox\nagent_sandbox:\n  namespace: Not_Valid\n")
        result = self.sbx("doctor")
        self.assertEqual(result.returncode, 1)
        out = result.stdout.decode()
        self.assertRegex(out, r"(?m)^FAILED   config: .*agent_sandbox\.namespace")
        self.assertIn('FAILED   backend: not checked: the configuration selects backend '
                      '"agent-sandbox" but does not load\n', out)
        self.assertNotIn("plugin:", out)
        self.assertNotIn("fake-state", out)

        # A broken file that selects the default backend still gets the plugin checked.
        self.write_config("backend: local\nshell: fish\n")
        out = self.sbx("doctor").stdout.decode()
        self.assertRegex(out, r"(?m)^ok       plugin: ")
        self.assertNotIn("not checked", out)

    def test_doctor_fix_split_outside_quotes(self):
        # "; " inside a quoted key name is part of the value, not the start of the fix.
        self.write_config('"a; b": 1\n')
        result = self.sbx("doctor")
        self.assertEqual(result.returncode, 1)
        self.assertRegex(result.stdout.decode(),
                         r'(?m)^FAILED   config: .*unknown key "a; b"\n  fix: remove it\. '
                         r'See sbx-config\(5\)')

    def test_doctor_missing_config_file(self):
        missing = os.path.join(self.tmp, "missing.yaml")
        result = self.sbx("doctor", env={"SBX_CONFIG": missing})
        self.assertEqual(result.returncode, 1)
        self.assertIn("FAILED   config: config %s: file not found\n  fix: create it (see "
                      "sbx-config(5))" % missing, result.stdout.decode())


class HelpTest(ShimTestCase):

    def test_help_texts(self):
        for args, expected in ((["--help"], b"--plugin-dir DIR"),
                               (["gitlab", "--help"], b"BUILD_FAILURE_EXIT_CODE"),
                               (["gc", "--help"], b"--dry-run"),
                               (["doctor", "--help"], b"FAILED"),
                               (["version"], b"sbx "),
                               (["--version"], b"ABI version 1")):
            result = self.sbx(*args)
            self.assertEqual(result.returncode, 0, args)
            self.assertIn(expected, result.stdout, args)

    def test_unknown_command(self):
        result = self.sbx("frobnicate")
        self.assertEqual(result.returncode, 2)
        self.assert_one_line(result.stderr, "frobnicate")

    def test_unknown_gitlab_stage(self):
        result = self.gitlab("frobnicate", env={"SYSTEM_FAILURE_EXIT_CODE": "12"})
        self.assertEqual(result.returncode, 12)
        self.assert_one_line(result.stderr, "frobnicate")


if __name__ == "__main__":
    unittest.main()
